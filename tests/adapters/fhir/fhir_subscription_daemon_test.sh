#!/usr/bin/env bash
# FHIR rest-hook subscriptions through the real daemon: POST a backport
# Subscription to icr-broker's FHIR endpoint, publish a matching referral over
# gRPC (icrctl), and check the receiver gets a subscription-status-r4
# notification carrying the event's position; then DELETE it. Also: a bad
# Subscription is refused naming the element.
set -euo pipefail
BROKER_BIN="$1"
CTL="$2"
EXAMPLES="$3"
work=$(mktemp -d)
pid=0
rpid=0
cleanup() {
  if [ "$rpid" -gt 0 ]; then kill "$rpid" 2>/dev/null || true; fi
  if [ "$pid" -gt 0 ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$work/broker.log" ] && cat "$work/broker.log"; exit 1; }

# A receiver that stores every POSTed body.
cat > "$work/receiver.py" <<'PY'
import http.server, sys, os
out = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n = len(os.listdir(out))
        with open(os.path.join(out, "%04d.json" % n), "wb") as f:
            f.write(body)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
mkdir -p "$work/got"
python3 "$work/receiver.py" "$work/got" > "$work/rport" &
rpid=$!
for _ in $(seq 50); do [ -s "$work/rport" ] && break; sleep 0.05; done
rport=$(cat "$work/rport")

"$BROKER_BIN" --data-dir "$work/data" --listen 127.0.0.1:0 --mllp-listen off \
  --fhir-listen 127.0.0.1:0 2> "$work/broker.log" &
pid=$!
for _ in $(seq 100); do grep -q "ready" "$work/broker.log" && break; sleep 0.05; done
gport=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/broker.log")
fport=$(sed -n 's/.*FHIR R4 on port \([0-9]*\).*/\1/p' "$work/broker.log")
[ -n "$gport" ] && [ -n "$fport" ] || fail "broker did not start"

cat > "$work/sub.json" <<JSON
{"resourceType":"Subscription","id":"ccc-hsct-referrals","status":"requested",
 "criteria":"http://example.org/fhir/SubscriptionTopic/care-event",
 "_criteria":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
   "valueString":"CareEvent?event-type=DISCHARGE_REFERRAL"}]},
 "channel":{"type":"rest-hook","endpoint":"http://127.0.0.1:$rport/notify",
   "payload":"application/fhir+json",
   "_payload":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content","valueCode":"full-resource"}]}}}
JSON
code=$(curl -s -o "$work/create.json" -D "$work/create.h" -w '%{http_code}' \
  -H 'Content-Type: application/fhir+json' --data-binary @"$work/sub.json" \
  "http://127.0.0.1:$fport/fhir/r4/Subscription")
[ "$code" = 201 ] || fail "create: HTTP $code $(cat "$work/create.json")"
grep -qi '^location: /fhir/r4/Subscription/ccc-hsct-referrals' "$work/create.h" || fail "no Location"

# An admission (filtered out) then the referral (delivered).
"$CTL" --broker "127.0.0.1:$gport" publish --file "$EXAMPLES/discharge-referral.json" > "$work/pub.json"
pos=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["position"])' "$work/pub.json")
for _ in $(seq 100); do ls "$work/got" | grep -q json && break; sleep 0.05; done
python3 - "$work/got" "$pos" <<'PY'
import json, os, sys
d, pos = sys.argv[1], sys.argv[2]
bodies = [json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d))]
notes = [b for b in bodies
         if any(p.get("name") == "type" and p.get("valueCode") == "event-notification"
                for p in b["entry"][0]["resource"]["parameter"])]
assert notes, "no event-notification received: %r" % bodies
params = notes[0]["entry"][0]["resource"]["parameter"]
events = [p for p in params if p["name"] == "notification-event"]
numbers = [pp["valueString"] for e in events for pp in e["part"] if pp["name"] == "event-number"]
assert numbers == [pos], (numbers, pos)
PY

# A Subscription without an endpoint is refused, naming the element.
code=$(curl -s -o "$work/bad.json" -w '%{http_code}' -H 'Content-Type: application/fhir+json' \
  --data-binary '{"resourceType":"Subscription","criteria":"http://example.org/t","channel":{"type":"rest-hook"}}' \
  "http://127.0.0.1:$fport/fhir/r4/Subscription")
[ "$code" = 400 ] || fail "bad subscription: HTTP $code"
grep -q 'Subscription.channel.endpoint' "$work/bad.json" || fail "no expression: $(cat "$work/bad.json")"

code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:$fport/fhir/r4/Subscription/ccc-hsct-referrals")
[ "$code" = 204 ] || fail "delete: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:$fport/fhir/r4/Subscription/ccc-hsct-referrals")
[ "$code" = 404 ] || fail "second delete: HTTP $code"

kill -TERM "$pid"; wait "$pid"; pid=0
echo "fhir_subscription_daemon_test: 1 passed, 0 failed"
