#!/usr/bin/env bash
# Runs node-hl7-client (npm, pinned) against hl7_test_server: three fixtures
# must get AA, an invalid NHS number AE naming PID-3, a resend AA, and exactly
# the expected number of events must be stored.
#
#   run_node_client_test.sh <path to hl7_test_server> <fixtures dir> [work dir]
#
# Installs the client with `npm ci` into the work dir (default: a directory
# beside the server binary) the first time. Without node/npm or registry
# access this test FAILS (it never skips silently): install them with
# `apt-get install nodejs npm`.
set -euo pipefail

server=${1:?usage: run_node_client_test.sh SERVER FIXTURES [WORKDIR]}
fixtures=${2:?usage: run_node_client_test.sh SERVER FIXTURES [WORKDIR]}
here=$(cd "$(dirname "$0")" && pwd)
work=${3:-$(dirname "$server")/hl7_node_client}
expected_stored=4  # A01 (+ its GP registration), A02, A03; the AE and the resend store nothing

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "FAIL: $tool is not installed (apt-get install nodejs npm); this test needs it" >&2
    exit 1
  fi
done

mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here/send_fixtures.js" "$work/"
if [ ! -d "$work/node_modules/node-hl7-client" ] ||
   ! cmp -s "$here/package-lock.json" "$work/node_modules/.package-lock.json.installed"; then
  echo "installing node-hl7-client with npm ci in $work"
  if ! (cd "$work" && timeout 90 npm ci --no-audit --no-fund --loglevel=error); then
    echo "FAIL: npm ci could not install node-hl7-client (no registry access?)" >&2
    exit 1
  fi
  cp "$here/package-lock.json" "$work/node_modules/.package-lock.json.installed"
fi

fifo="$work/server.stdin"
rm -f "$fifo"
mkfifo "$fifo"
"$server" <"$fifo" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
exec 3>"$fifo"  # the server runs until this is closed
cleanup() {
  exec 3>&- 2>/dev/null || true
  if kill -0 "$server_pid" 2>/dev/null; then
    sleep 2
    kill "$server_pid" 2>/dev/null || true
  fi
  rm -f "$fifo"
}
trap cleanup EXIT

port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^MLLP_PORT=//p' "$work/server.out" 2>/dev/null || true)
  [ -n "$port" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "FAIL: hl7_test_server did not start" >&2
  cat "$work/server.err" >&2 || true
  exit 1
fi
echo "hl7_test_server listening for MLLP on port $port"

status=0
(cd "$work" && timeout 60 node send_fixtures.js "$port" "$fixtures") || status=$?

exec 3>&-
wait "$server_pid" || { echo "FAIL: hl7_test_server exited with an error" >&2; status=1; }
stored=$(sed -n 's/^STORED=//p' "$work/server.out")
if [ "$stored" != "$expected_stored" ]; then
  echo "FAIL: $stored events stored, expected $expected_stored" >&2
  status=1
fi
if [ "$status" -eq 0 ]; then
  echo "node-hl7-client test passed ($stored events stored)"
fi
exit "$status"
