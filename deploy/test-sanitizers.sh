#!/usr/bin/env bash
# The test suite under sanitizers (deploy/test.sh runs this after the main
# suite; ICR_SANITIZERS=0 skips it):
#   1. ASan+UBSan: every ctest test (less the fuzz smoke, which has its own
#      ASan+UBSan build, and the benchmarks) in build-asan. Any report fails
#      the run: UBSan is built not to recover, ASan stops at its first error.
#   2. TSan: the concurrent core without gRPC, in build-tsan: the store's
#      group-commit writer (many callers, one writer thread, RocksDB's
#      background threads, power cuts mid-write), the audit trail's chain
#      (concurrent appends, its sync thread), the delivery engine, the routing
#      index and policy reloads under readers. gRPC and Abseil come from Debian uninstrumented: a test
#      through gRPC gets thousands of reports from inside them (measured:
#      3,429 in broker_e2e_test, all in absl GraphCycles and gRPC's event
#      engine), and suppressing by gRPC frames would hide our own races in
#      reactor callbacks too. Those tests run under ASan only.
# Usage: deploy/test-sanitizers.sh [asan|tsan]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${ICR_JOBS:-2}"
which="${1:-both}"
common=(-G Ninja -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1"
        -DICR_BUILD_TESTS=ON -DICR_BUILD_BENCHMARKS=OFF)

if [ "$which" = both ] || [ "$which" = asan ]; then
  dir="${ICR_ASAN_BUILD_DIR:-build-asan}"
  echo "== ASan+UBSan: building $dir"
  cmake -S . -B "$dir" "${common[@]}" -DICR_SANITIZE=ON -DICR_TSAN=OFF >/dev/null
  cmake --build "$dir" -j"$JOBS"
  echo "== ASan+UBSan: running the suite"
  ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"${ICR_TEST_JOBS:-2}" -LE fuzz
fi

if [ "$which" = both ] || [ "$which" = tsan ]; then
  dir="${ICR_TSAN_BUILD_DIR:-build-tsan}"
  tests=(icr_store_keys_test icr_store_rocksdb_store_test icr_store_fault_test
         icr_store_corruption_test icr_store_audit_test delivery_test routing_test
         governance_policy_test)
  echo "== TSan: building $dir (${tests[*]})"
  cmake -S . -B "$dir" "${common[@]}" -DICR_SANITIZE=OFF -DICR_TSAN=ON >/dev/null
  cmake --build "$dir" -j"$JOBS" --target "${tests[@]}"
  echo "== TSan: running the concurrent core"
  regex="^($(IFS='|'; echo "${tests[*]}"))\$"
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1" \
    ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"${ICR_TEST_JOBS:-2}" -R "$regex"
fi
