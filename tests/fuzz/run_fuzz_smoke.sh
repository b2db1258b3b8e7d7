#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz/CMakeLists.txt) with clang-14 and
# libFuzzer + ASan + UBSan into build-fuzz, then runs each target for a
# bounded time from its seed corpus. Fails on any crash, leak, timeout
# (hang), OOM or sanitizer report.
#
#   tests/fuzz/run_fuzz_smoke.sh                 # every target, 20 s each
#   FUZZ_SECONDS=300 tests/fuzz/run_fuzz_smoke.sh hl7_fuzz
#
# Environment: FUZZ_SECONDS (default 20), FUZZ_BUILD_DIR (default
# <repo>/build-fuzz), FUZZ_JOBS (build parallelism, default 2),
# FUZZ_TIMEOUT (seconds one input may take, default 10).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
per_input_timeout=${FUZZ_TIMEOUT:-10}
jobs=${FUZZ_JOBS:-2}

cxx=$(command -v clang++-14 || true)
if [ -z "$cxx" ]; then
  echo "FAIL: clang++-14 is not installed; the fuzz targets need it" >&2
  echo "      (apt-get install clang-14 libclang-rt-14-dev libfuzzer-14-dev)" >&2
  exit 1
fi
if ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "FAIL: libFuzzer for clang-14 is missing (apt-get install libclang-rt-14-dev libfuzzer-14-dev)" >&2
  exit 1
fi

mkdir -p "$build"
cmake -S "$root/tests/fuzz" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log" >&2; echo "FAIL: cmake configure of tests/fuzz" >&2; exit 1; }
ninja -C "$build" -j "$jobs" "$@"  # only the named targets, if any

status=0
ran=0
while IFS='|' read -r name binary corpus dict max_len; do
  [ -n "$name" ] || continue
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  ran=$((ran + 1))
  work="$build/run/$name"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  args=(-max_total_time="$seconds" -max_len="$max_len" -timeout="$per_input_timeout"
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/")
  [ -n "$dict" ] && args+=(-dict="$dict")
  echo "== $name: ${seconds}s, max_len $max_len, timeout ${per_input_timeout}s"
  # New inputs go to the scratch corpus (first directory); the seeds stay read-only.
  if "$binary" "${args[@]}" "$work/corpus" ${corpus:+"$corpus"} >"$work/log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    rate=$(grep -o 'exec/s: [0-9]*' "$work/log" | tail -1 | awk '{print $2}')
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | awk '{print $2}')
    echo "   ok: ${runs:-?} runs, ${rate:-?} exec/s, coverage ${cov:-?} edges"
  else
    status=1
    echo "   FAIL: $name found a problem; log $work/log, reproducer(s):" >&2
    ls "$work/artifacts" >&2 || true
    grep -E "ERROR|SUMMARY|runtime error|property failed" "$work/log" | head -20 >&2 || true
  fi
done <"$build/fuzz_targets.txt"

if [ "$ran" -eq 0 ]; then
  echo "FAIL: no fuzz target ran (names: $*)" >&2
  exit 1
fi
exit "$status"
