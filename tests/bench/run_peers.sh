#!/usr/bin/env bash
# Runs icr_peer_bench (W1 closed-loop durable publish, W2 open-loop publish ->
# subscriber latency) against this broker and its peers in one run, each server
# started here on loopback with its own temporary data directory and config on
# a non-default port, pinned to one core (taskset) while the load generator is
# pinned to the other; then prints markdown tables with each peer beside ours
# and the ratio ours/peer. Installs nothing; every server it starts is stopped
# on exit (trap).
#
#   tests/bench/run_peers.sh BUILD_DIR [--systems icr,redis,rabbitmq,nats[,icr-relaxed]]
#                            [--out DIR] [icr_peer_bench options...]
#   e.g. tests/bench/run_peers.sh build-peers --seconds 10 --repeat 3 --publishers 1,4,16,64
#
# Durability tiers: icr (--durability sync), Redis (appendonly yes, appendfsync
# always) and RabbitMQ (quorum queue, publisher confirms) acknowledge after
# fsync (tier A). NATS 2.9 JetStream has no per-message fsync (tier B);
# icr-relaxed (our --durability relaxed, fsync about every 100 ms) is its
# like-for-like comparison when selected.
#
# Servers (not installed by this script or by deploy/install-deps.sh):
#   apt-get install -y redis-server rabbitmq-server nats-server
# Environment: SERVER_CPUS (default 0), BENCH_CPUS (default 1), ICR_PORT
# (50699), REDIS_PORT (6479), RABBIT_PORT (5682), RABBIT_DIST_PORT (25682),
# EPMD_PORT (4379), NATS_PORT (4322), KEEP=1 keeps the data directories,
# RT=1 runs servers and load generator under SCHED_FIFO (chrt -f 10): on a
# machine shared with CPU-bound jobs (compilers), a thread woken from fsync
# otherwise waits up to a scheduler tick (4 ms) for its core. It takes the
# cores from other users' jobs: only on a machine you may monopolise.
set -euo pipefail

build=${1:?usage: $0 BUILD_DIR [--systems LIST] [--out DIR] [icr_peer_bench options...]}
shift
systems="icr,redis,rabbitmq,nats"
out=""
bench_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --systems) systems=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) bench_args+=("$1"); shift ;;
  esac
done

bench_bin="$build/tests/bench/icr_peer_bench"
broker_bin="$build/broker/cmd/icr-broker"
server_cpus=${SERVER_CPUS:-0}
bench_cpus=${BENCH_CPUS:-1}
icr_port=${ICR_PORT:-50699}
redis_port=${REDIS_PORT:-6479}
rabbit_port=${RABBIT_PORT:-5682}
rabbit_dist_port=${RABBIT_DIST_PORT:-25682}
epmd_port=${EPMD_PORT:-4379}
nats_port=${NATS_PORT:-4322}
rabbit_bin=/usr/lib/rabbitmq/bin/rabbitmq-server  # the real script, not the su wrapper
rt=()
if [[ "${RT:-0}" == 1 ]]; then rt=(chrt -f 10); fi

IFS=',' read -r -a sel <<< "$systems"

# --- Preconditions ------------------------------------------------------------
[[ -x "$bench_bin" ]] || { echo "run_peers: $bench_bin not built (ninja -C $build icr_peer_bench icr-broker)" >&2; exit 1; }
[[ -x "$broker_bin" ]] || { echo "run_peers: $broker_bin not built" >&2; exit 1; }
command -v taskset > /dev/null || { echo "run_peers: taskset missing (apt-get install -y util-linux)" >&2; exit 1; }
command -v python3 > /dev/null || { echo "run_peers: python3 missing (apt-get install -y python3)" >&2; exit 1; }
compiled=$("$bench_bin" --list-systems)
missing_pkgs=()
for s in "${sel[@]}"; do
  case "$s" in
    icr | icr-relaxed) ;;
    redis) command -v redis-server > /dev/null || missing_pkgs+=(redis-server) ;;
    rabbitmq) [[ -x "$rabbit_bin" ]] || missing_pkgs+=(rabbitmq-server) ;;
    nats) command -v nats-server > /dev/null || missing_pkgs+=(nats-server) ;;
    *) echo "run_peers: unknown system '$s' (icr, icr-relaxed, redis, rabbitmq, nats)" >&2; exit 2 ;;
  esac
  base=${s%-relaxed}
  if ! grep -qx "$base" <<< "$compiled"; then
    echo "run_peers: $bench_bin was built without $base support:" \
      "apt-get install -y libhiredis-dev librabbitmq-dev libnats-dev, re-run cmake, rebuild" >&2
    exit 1
  fi
done
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
  echo "run_peers: servers missing; install them with:" >&2
  echo "  apt-get install -y ${missing_pkgs[*]}" >&2
  echo "  (then make sure the package did not start system services: service redis-server stop; service rabbitmq-server stop)" >&2
  exit 1
fi
# System services of the same programs would share the cores: say so.
for p in redis-server beam.smp nats-server; do
  if pids=$(pgrep -x "$p" 2> /dev/null); then
    echo "run_peers: WARNING: $p already running (pids $(echo $pids)), e.g. a system service;" \
      "it shares the cores and disturbs the numbers (service redis-server stop / service rabbitmq-server stop)" >&2
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/icr-peers-XXXXXX")
if [[ -z "$out" ]]; then out="$work/results"; fi
mkdir -p "$out"

# --- Server life cycle -------------------------------------------------------
server_pid=""   # the process measured (CPU, RSS)
stop_pids=()    # processes to stop for the current system
epmd_started=""

wait_port() {  # port seconds pid
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; then return 0; fi
    if ! kill -0 "$3" 2> /dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

stop_servers() {
  local p i
  for p in "${stop_pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${stop_pids[@]}"; do
    for ((i = 0; i < 300; i++)); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
    wait "$p" 2> /dev/null || true
  done
  stop_pids=()
  if [[ -n "$epmd_started" ]]; then
    ERL_EPMD_PORT=$epmd_port epmd -kill > /dev/null 2>&1 || true
    epmd_started=""
  fi
}

cleanup() {
  stop_servers
  if [[ "${KEEP:-0}" != 1 ]]; then
    find "$work" -mindepth 1 -maxdepth 1 ! -name results -exec rm -rf {} +
    rmdir "$work" 2> /dev/null || true  # empty when --out was elsewhere
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_icr() {  # durability
  local dir="$work/icr-$1" flags=()
  mkdir -p "$dir"
  local help
  help=$("$broker_bin" --help 2>&1 || true)
  for f in --mllp-listen --fhir-listen; do
    if grep -q -- "$f" <<< "$help"; then flags+=("$f" off); fi
  done
  if grep -q -- "--escalations" <<< "$help"; then flags+=(--escalations off); fi
  "${rt[@]}" taskset -c "$server_cpus" "$broker_bin" --data-dir "$dir/data" --listen "127.0.0.1:$icr_port" \
    --durability "$1" "${flags[@]}" > "$dir/broker.log" 2>&1 &
  server_pid=$!
  stop_pids=("$server_pid")
  local i
  for ((i = 0; i < 200; i++)); do
    if grep -q "ready" "$dir/broker.log" 2> /dev/null; then return 0; fi
    kill -0 "$server_pid" 2> /dev/null || break
    sleep 0.1
  done
  cat "$dir/broker.log" >&2
  return 1
}

start_redis() {
  local dir="$work/redis"
  mkdir -p "$dir"
  cat > "$dir/redis.conf" << EOF
bind 127.0.0.1
port $redis_port
protected-mode yes
daemonize no
dir $dir
logfile $dir/redis.log
appendonly yes
appendfsync always
save ""
EOF
  "${rt[@]}" taskset -c "$server_cpus" redis-server "$dir/redis.conf" > /dev/null 2>&1 &
  server_pid=$!
  stop_pids=("$server_pid")
  wait_port "$redis_port" 20 "$server_pid" || { cat "$dir/redis.log" >&2; return 1; }
}

start_nats() {
  local dir="$work/nats"
  mkdir -p "$dir/js"
  cat > "$dir/nats.conf" << EOF
listen: 127.0.0.1:$nats_port
jetstream {
  store_dir: "$dir/js"
}
EOF
  "${rt[@]}" taskset -c "$server_cpus" nats-server -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
  server_pid=$!
  stop_pids=("$server_pid")
  wait_port "$nats_port" 20 "$server_pid" || { cat "$dir/nats.log" >&2; return 1; }
}

start_rabbitmq() {
  local dir="$work/rabbitmq"
  mkdir -p "$dir/mnesia" "$dir/log" "$dir/home"
  cat > "$dir/rabbitmq.conf" << EOF
listeners.tcp.default = 127.0.0.1:$rabbit_port
log.console = false
log.file.level = warning
EOF
  echo "[]." > "$dir/enabled_plugins"  # no management plugin
  # Our own epmd on our own port, so a system Erlang node is never touched.
  ERL_EPMD_PORT=$epmd_port taskset -c "$server_cpus" epmd -daemon
  epmd_started=1
  env HOME="$dir/home" ERL_EPMD_PORT="$epmd_port" \
    RABBITMQ_NODENAME="icrbench@localhost" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$rabbit_port" \
    RABBITMQ_DIST_PORT="$rabbit_dist_port" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
    "${rt[@]}" taskset -c "$server_cpus" "$rabbit_bin" > "$dir/stdout.log" 2>&1 &
  local script_pid=$!
  stop_pids=("$script_pid")
  if ! wait_port "$rabbit_port" 90 "$script_pid"; then
    tail -20 "$dir/stdout.log" "$dir"/log/*.log >&2 2> /dev/null || true
    return 1
  fi
  # The Erlang VM (beam.smp) is what does the work: measure it.
  local i
  server_pid=""
  for ((i = 0; i < 50; i++)); do
    if [[ -s "$dir/rabbitmq.pid" ]]; then server_pid=$(cat "$dir/rabbitmq.pid"); break; fi
    sleep 0.1
  done
  if [[ -z "$server_pid" ]]; then
    server_pid=$(ps -o pid=,comm= --ppid "$script_pid" | awk '$2 ~ /beam/ {print $1; exit}')
  fi
  [[ -n "$server_pid" ]] || { echo "run_peers: cannot find RabbitMQ's beam.smp" >&2; return 1; }
  stop_pids=("$server_pid" "$script_pid")
}

version_of() {
  dpkg-query -W -f='${Version}' "$1" 2> /dev/null || echo "?"
}

# --- Run -----------------------------------------------------------------------
echo "run_peers: servers pinned to cpus $server_cpus, load generator (icr_peer_bench) pinned to cpus $bench_cpus (taskset)${rt[*]:+, all under SCHED_FIFO (${rt[*]})}"
echo "run_peers: systems $systems; results in $out"
echo "run_peers: packages: redis-server $(version_of redis-server), rabbitmq-server $(version_of rabbitmq-server), nats-server $(version_of nats-server), erlang-base $(version_of erlang-base)"
echo "run_peers: commit $(git -C "$(dirname "$0")" rev-parse HEAD 2> /dev/null || echo unknown)$(git -C "$(dirname "$0")" status --porcelain --untracked-files=no 2> /dev/null | grep -q . && echo ' (work tree has uncommitted changes)'), $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
failed=0
for s in "${sel[@]}"; do
  echo
  echo "=== $s ==="
  args=()
  case "$s" in
    icr) start_icr sync; args=(--system icr --port "$icr_port") ;;
    icr-relaxed) start_icr relaxed; args=(--system icr --label icr-relaxed --port "$icr_port") ;;
    redis) start_redis; args=(--system redis --port "$redis_port") ;;
    rabbitmq) start_rabbitmq; args=(--system rabbitmq --port "$rabbit_port") ;;
    nats) start_nats; args=(--system nats --port "$nats_port") ;;
  esac
  echo "server pid $server_pid on cpus $(taskset -pc "$server_pid" | sed 's/.*: //')"
  if ! "${rt[@]}" taskset -c "$bench_cpus" "$bench_bin" "${args[@]}" --server-pid "$server_pid" \
    --json "$out/$s.json" "${bench_args[@]}" 2>&1 | tee "$out/$s.txt"; then
    echo "run_peers: $s FAILED (see above)" >&2
    failed=1
  fi
  stop_servers
done

# --- Side by side --------------------------------------------------------------
echo
python3 - "$out" "$systems" << 'PY'
import json, os, statistics, sys

out, systems = sys.argv[1], sys.argv[2].split(",")
res = {}
for s in systems:
    p = os.path.join(out, s + ".json")
    if os.path.exists(p):
        with open(p) as f:
            res[s] = json.load(f)
names = {"icr": "ours", "icr-relaxed": "ours relaxed (tier B)", "redis": "Redis",
         "rabbitmq": "RabbitMQ", "nats": "NATS (tier B)"}
peers = [s for s in systems if s in res and not s.startswith("icr")]
if "icr" not in res:
    print("(no result for our broker: no side-by-side table)")
    sys.exit(0)

def med(v):
    return statistics.median(v) if v else None

def spread(v, fmt="{:,.0f}"):
    if not v:
        return "-"
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(med(v))} [{fmt.format(min(v))}-{fmt.format(max(v))}]"

def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"

def w1(s, mode, pub, key):
    rows = [r for r in res[s]["w1"] if r["mode"] == mode and r["publishers"] == pub]
    return [key(r) for r in rows if key(r) is not None]

def base_for(peer):
    # NATS is tier B: compare with our relaxed mode when it was measured.
    return "icr-relaxed" if peer == "nats" and "icr-relaxed" in res else "icr"

cfg = res["icr"]["config"]
print(f"### W1: durable publish, closed loop ({cfg['seconds']:g} s measured after {cfg['warmup']:g} s "
      f"warm-up, {cfg['repeat']} rounds, median [min-max]; window {cfg['window']} when pipelined)")
print()
print("Ratio = ours / peer (throughput: above 1 means ours is faster; latency, CPU, memory: "
      "below 1 means ours is lower)." + (" NATS (tier B) is compared with ours relaxed." if "icr-relaxed" in res else ""))
ev = lambda r: r["events_per_s"]
for mode in res["icr"]["config"]["modes"]:
    print()
    print(f"**{mode}** ({'one event per request, one in flight' if mode == 'unary' else 'pipelined, window %d per connection' % cfg['window']}): events/s")
    print()
    cols = [s for s in systems if s in res]
    hdr = "| publishers | " + " | ".join(names.get(s, s) for s in cols) + " | " + \
          " | ".join(f"ours/{names.get(p, p).split(' ')[0]}" for p in peers) + " |"
    print(hdr)
    print("|" + "---|" * (1 + len(cols) + len(peers)))
    for pub in cfg["publishers"]:
        cells = [spread(w1(s, mode, pub, ev)) for s in cols]
        rats = [ratio(med(w1(base_for(p), mode, pub, ev)), med(w1(p, mode, pub, ev))) for p in peers]
        print(f"| {pub} | " + " | ".join(cells) + " | " + " | ".join(rats) + " |")
    print()
    print(f"**{mode}**: ack latency p50 / p99 / p99.9 (ms, medians of rounds) and ratio ours/peer of p99")
    print()
    print("| publishers | " + " | ".join(names.get(s, s) for s in cols) + " | " +
          " | ".join(f"p99 ours/{names.get(p, p).split(' ')[0]}" for p in peers) + " |")
    print("|" + "---|" * (1 + len(cols) + len(peers)))
    for pub in cfg["publishers"]:
        cells = []
        for s in cols:
            a = [med(w1(s, mode, pub, lambda r, k=k: r["ack_latency"][k])) for k in ("p50_us", "p99_us", "p999_us")]
            cells.append(" / ".join("-" if x is None else f"{x / 1000:.2f}" for x in a))
        p99 = lambda s: med(w1(s, mode, pub, lambda r: r["ack_latency"]["p99_us"]))
        rats = [ratio(p99(base_for(p)), p99(p)) for p in peers]
        print(f"| {pub} | " + " | ".join(cells) + " | " + " | ".join(rats) + " |")
    print()
    print(f"**{mode}**: server CPU per event (us, from /proc/PID/stat) and server RSS at the end of the round (MiB)")
    print()
    print("| publishers | " + " | ".join(names.get(s, s) for s in cols) + " | " +
          " | ".join(f"CPU ours/{names.get(p, p).split(' ')[0]}" for p in peers) + " |")
    print("|" + "---|" * (1 + len(cols) + len(peers)))
    for pub in cfg["publishers"]:
        cpu = lambda s: med(w1(s, mode, pub, lambda r: r.get("server_cpu_us_per_event")))
        rss = lambda s: med(w1(s, mode, pub, lambda r: r.get("server_rss_mib")))
        cells = [("-" if cpu(s) is None else f"{cpu(s):.1f}") + " us, " +
                 ("-" if rss(s) is None else f"{rss(s):.0f} MiB") for s in cols]
        rats = [ratio(cpu(base_for(p)), cpu(p)) for p in peers]
        print(f"| {pub} | " + " | ".join(cells) + " | " + " | ".join(rats) + " |")

if res["icr"]["w2"]:
    print()
    print(f"### W2: publish -> subscriber latency, open loop ({cfg['latency_connections']} publisher "
          f"connections, window {cfg['window']}; latency from the schedule; {cfg['seconds']:g} s per rate, "
          f"{cfg['repeat']} rounds)")
    print()
    print("p50 / p99 / p99.9 in ms (medians of rounds); received/expected summed over rounds; "
          "ratio ours/peer of p50 and p99 (below 1: ours lower)")
    print()
    cols = [s for s in systems if s in res]
    print("| offered rate | " + " | ".join(names.get(s, s) for s in cols) + " | " +
          " | ".join(f"ours/{names.get(p, p).split(' ')[0]} p50, p99" for p in peers) + " |")
    print("|" + "---|" * (1 + len(cols) + len(peers)))
    for rate in cfg["rates"]:
        def rows(s):
            return [r for r in res[s]["w2"] if r["offered_rate"] == rate]
        def q(s, k):
            return med([r["publish_to_subscriber"][k] for r in rows(s) if r["publish_to_subscriber"]["n"]])
        cells = []
        for s in cols:
            a = [q(s, k) for k in ("p50_us", "p99_us", "p999_us")]
            rec = sum(r["received"] for r in rows(s))
            exp = sum(r["expected"] for r in rows(s))
            cells.append(" / ".join("-" if x is None else f"{x / 1000:.2f}" for x in a) +
                         (f" ({rec:,}/{exp:,})" if rec != exp else ""))
        rats = [f"{ratio(q(base_for(p), 'p50_us'), q(p, 'p50_us'))}, {ratio(q(base_for(p), 'p99_us'), q(p, 'p99_us'))}" for p in peers]
        print(f"| {rate:,.0f}/s | " + " | ".join(cells) + " | " + " | ".join(rats) + " |")

print()
others = []
for s in res:
    for r in res[s]["w1"] + res[s]["w2"]:
        others.append(r["other_load_cores"])
if others:
    print(f"Load from other processes during measured rounds (cores): median {statistics.median(others):.2f}, "
          f"max {max(others):.2f} (above about 0.2 a round is disturbed).")
bad = [s for s in res if not res[s].get("ok")]
if bad:
    print(f"Runs with errors or empty scenarios: {', '.join(bad)} (see their .txt logs).")
PY
exit $failed
