#!/usr/bin/env bash
# icr-broker's command line and config file: a good config starts the broker
# with its settings; a misspelt key or a bad value is refused, naming it.
set -euo pipefail
BIN="$1"
work=$(mktemp -d)
trap 'if [ "$pid" -gt 0 ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
pid=0

cat > "$work/good.toml" <<TOML
data-dir = "$work/data"
listen = "127.0.0.1:0"
mllp-listen = "127.0.0.1:0"
fhir-listen = "off"
durability = "relaxed"
TOML
"$BIN" --config "$work/good.toml" 2> "$work/log" &
pid=$!
for _ in $(seq 50); do grep -q "ready" "$work/log" && break; sleep 0.1; done
grep -q "durability relaxed" "$work/log" || { echo "FAIL: config not applied"; cat "$work/log"; exit 1; }
grep -q "data in $work/data" "$work/log" || { echo "FAIL: data dir not applied"; exit 1; }
grep -q "HL7 MLLP on port" "$work/log" || { echo "FAIL: MLLP listener not started"; exit 1; }
grep -q "FHIR R4 on port" "$work/log" && { echo "FAIL: fhir-listen = off not applied"; exit 1; }
kill -TERM "$pid"
wait "$pid" || { echo "FAIL: SIGTERM did not stop cleanly"; cat "$work/log"; exit 1; }
grep -q "stopped cleanly" "$work/log" || { echo "FAIL: no clean stop"; exit 1; }

printf 'durabilty = "relaxed"\n' > "$work/bad.toml"
if "$BIN" --config "$work/bad.toml" --data-dir "$work/d2" --mllp-listen off --fhir-listen off 2> "$work/err"; then
  echo "FAIL: misspelt key accepted"; exit 1
fi
grep -q "durabilty" "$work/err" || { echo "FAIL: error does not name the key"; cat "$work/err"; exit 1; }

if "$BIN" --durability fast --data-dir "$work/d3" --mllp-listen off --fhir-listen off 2> "$work/err"; then
  echo "FAIL: bad durability accepted"; exit 1
fi
grep -q "fast not in" "$work/err" || { echo "FAIL: error does not name the value"; exit 1; }

# A data directory that is a file is refused with a clear message.
touch "$work/file"
if "$BIN" --data-dir "$work/file" --listen 127.0.0.1:0 --mllp-listen off --fhir-listen off 2> "$work/err"; then
  echo "FAIL: a file accepted as data dir"; exit 1
fi
grep -q "not a directory" "$work/err" || { echo "FAIL: unclear error"; cat "$work/err"; exit 1; }
# A second broker on a port in use fails cleanly, saying why (not a crash).
"$BIN" --data-dir "$work/d4" --listen 127.0.0.1:0 --mllp-listen off --fhir-listen off 2> "$work/first.log" &
pid=$!
for _ in $(seq 100); do grep -q "(port " "$work/first.log" && break; sleep 0.05; done
used=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/first.log")
set +e
"$BIN" --data-dir "$work/d5" --listen "127.0.0.1:$used" --mllp-listen off --fhir-listen off 2> "$work/err"
code=$?
set -e
[ "$code" -eq 1 ] || { echo "FAIL: port in use: exit $code"; cat "$work/err"; exit 1; }
grep -q "cannot listen on 127.0.0.1:$used" "$work/err" || { echo "FAIL: unclear error"; cat "$work/err"; exit 1; }
kill -TERM "$pid"; wait "$pid"
echo "daemon_cli_test: 1 passed, 0 failed"
