#!/usr/bin/env bash
# Runs icr_publish_bench against a separate icr-broker process, the broker
# pinned to one core and the load generator to the other (taskset), so the two
# do not compete for a CPU. On a 2-core machine this gives the broker exactly
# ONE core: its figures are a per-core figure, not the machine's.
#
#   tests/bench/run_external_pinned.sh BUILD_DIR [icr_publish_bench options...]
#   e.g. tests/bench/run_external_pinned.sh build-bench --repeat 3 --json /tmp/ext.json
#
# Environment: BROKER_CPUS (default 0), BENCH_CPUS (default 1), PORT (default
# 50599), DATA_DIR (default: a fresh directory under $TMPDIR, removed after).
set -euo pipefail

build=${1:?usage: $0 BUILD_DIR [bench options...]}
shift
broker_bin="$build/broker/cmd/icr-broker"
bench_bin="$build/tests/bench/icr_publish_bench"
broker_cpus=${BROKER_CPUS:-0}
bench_cpus=${BENCH_CPUS:-1}
port=${PORT:-50599}
made_dir=""
if [[ -z "${DATA_DIR:-}" ]]; then
  DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/icr-bench-broker-XXXXXX")
  made_dir=$DATA_DIR
fi

taskset -c "$broker_cpus" "$broker_bin" --data-dir "$DATA_DIR/data" \
  --listen "127.0.0.1:$port" --durability sync 2> "$DATA_DIR/broker.log" &
broker_pid=$!
cleanup() {
  kill -TERM "$broker_pid" 2> /dev/null || true
  wait "$broker_pid" 2> /dev/null || true
  if [[ -n "$made_dir" ]]; then rm -rf "$made_dir"; fi
}
trap cleanup EXIT

for _ in $(seq 100); do
  if grep -q "ready" "$DATA_DIR/broker.log" 2> /dev/null; then break; fi
  if ! kill -0 "$broker_pid" 2> /dev/null; then
    cat "$DATA_DIR/broker.log" >&2
    exit 1
  fi
  sleep 0.1
done

echo "broker pid $broker_pid pinned to cpus $broker_cpus; load generator pinned to cpus $bench_cpus"
taskset -c "$bench_cpus" "$bench_bin" --broker "127.0.0.1:$port" --broker-pid "$broker_pid" \
  --data-dir "$DATA_DIR" "$@"
