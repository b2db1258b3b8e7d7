#!/usr/bin/env bash
# icrctl against the real icr-broker daemon on a loopback port: publish the
# example events, resend them (nothing new stored), tail a durable
# subscription with acks, read history, check status, and check that bad
# input fails with a clear message and exit code 1 and stores nothing.
set -euo pipefail
BROKER_BIN="$1"
CTL="$2"
EXAMPLES="$3"
work=$(mktemp -d)
pid=0
trap 'if [ "$pid" -gt 0 ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Escalations off: the example referrals are from 2025, long past their
# deadlines, and this test counts positions exactly.
"$BROKER_BIN" --data-dir "$work/data" --listen 127.0.0.1:0 --mllp-listen 127.0.0.1:0 \
  --fhir-listen 127.0.0.1:0 --escalations off 2> "$work/broker.log" &
pid=$!
for _ in $(seq 100); do grep -q "(port " "$work/broker.log" && break; sleep 0.05; done
port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/broker.log")
[ -n "$port" ] || fail "broker did not start: $(cat "$work/broker.log")"
ctl() { "$CTL" --broker "127.0.0.1:$port" "$@"; }

# Publish 14 example events, then the referral (already among them: a
# duplicate, so nothing new is stored).
ctl publish --file "$EXAMPLES/events.jsonl" > "$work/pub1.jsonl"
[ "$(wc -l < "$work/pub1.jsonl")" -eq 14 ] || fail "expected 14 results"
grep -q '"duplicate":true' "$work/pub1.jsonl" && fail "first publish reported duplicates"
ctl publish --file "$EXAMPLES/discharge-referral.json" > "$work/pub2.jsonl"
grep -q '"duplicate":true' "$work/pub2.jsonl" || fail "the example referral was stored twice"
last=$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["lastPosition"])')
[ "$last" = "14" ] || fail "last position $last, expected 14"

# A resend stores nothing new and says so.
ctl publish --batch 5 --file "$EXAMPLES/events.jsonl" > "$work/pub3.jsonl"
[ "$(grep -c '"duplicate":true' "$work/pub3.jsonl")" -eq 14 ] || fail "resend not deduplicated"
last=$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["lastPosition"])')
[ "$last" = "14" ] || fail "resend stored new events (last position $last)"

# A durable subscriber reads everything in order and acks; a second run
# resumes after its cursor and so sees nothing old.
timeout 20 "$CTL" --broker "127.0.0.1:$port" tail --name ccc-hsct --from earliest --count 14 \
  > "$work/tail1.jsonl"
[ "$(wc -l < "$work/tail1.jsonl")" -eq 14 ] || fail "tail did not print 14 events"
python3 - "$work/tail1.jsonl" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
positions = [int(e["position"]) for e in events]
assert sorted(positions) == list(range(1, 15)), positions
by_person = {}
for e in events:
    by_person.setdefault(e["nhsNumber"], []).append(int(e["position"]))
for nhs, seq in by_person.items():
    assert seq == sorted(seq), (nhs, seq)  # per-person store order
PY
ctl publish --file - > /dev/null <<'JSON'
{"sourceSystemId":"uhcw-epr","sourceOrganisation":"RKB","careSetting":"ACUTE","sourceMessageId":"icrctl-e2e-new","nhsNumber":"9990000018","occurredAt":"2026-01-05T10:00:00Z","admission":{"encounterId":"E1"}}
JSON
timeout 20 "$CTL" --broker "127.0.0.1:$port" tail --name ccc-hsct --count 1 > "$work/tail2.jsonl"
grep -q '"sourceMessageId":"icrctl-e2e-new"' "$work/tail2.jsonl" || fail "durable resume did not deliver the new event"
ctl subscriptions --json | grep -q '"cursor":"15"' || fail "cursor not at 15: $(ctl subscriptions --json)"

# Filtered ephemeral tail.
timeout 20 "$CTL" --broker "127.0.0.1:$port" tail --from earliest --type DISCHARGE_REFERRAL --count 1 \
  > "$work/tail3.jsonl"
grep -q '"dischargeReferral"' "$work/tail3.jsonl" || fail "type filter"

# History of one person, as JSON lines and as a table.
ctl --json history 9997654323 > "$work/hist.jsonl"
[ "$(wc -l < "$work/hist.jsonl")" -ge 2 ] || fail "history too short"
ctl history 9997654323 > "$work/hist.txt"
head -1 "$work/hist.txt" | grep -qi "position" || fail "history table has no header"

# Bad input: exit 1, the rule named, nothing stored.
set +e
ctl publish --file - > /dev/null 2> "$work/err.txt" <<'JSON'
{"sourceSystemId":"uhcw-epr","sourceOrganisation":"RKB","careSetting":"ACUTE","sourceMessageId":"bad-1","nhsNumber":"9990000019","occurredAt":"2026-01-05T10:00:00Z","admission":{"encounterId":"E1"}}
JSON
code=$?
set -e
[ "$code" -eq 1 ] || fail "bad publish exit code $code"
grep -q "Modulus 11" "$work/err.txt" || fail "error does not name the rule: $(cat "$work/err.txt")"
last=$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["lastPosition"])')
[ "$last" = "15" ] || fail "bad event stored (last position $last)"

# flow and simulate: Coventry's 2022/23 table published exactly, read back
# through Workflow/GetFlowMetrics; then a simulated stream is accepted whole.
ctl simulate --scenario coventry-2022 > "$work/scenario.txt"
grep -q ": 880 events published (0 duplicates)" "$work/scenario.txt" || fail "scenario: $(cat "$work/scenario.txt")"
ctl --json flow --from 2022-05-23 --to 2022-06-26 --place coventry > "$work/flow1.json"
python3 - "$work/flow1.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
pw = {p["pathway"]: p for p in m["pathways"]}
assert len(pw) == 4, pw
assert pw["PATHWAY_1"]["minutesReferralToBrokerage"] == {"count": 20, "mean": 31, "median": 31}, pw
assert pw["PATHWAY_2"]["minutesReferralToBrokerage"]["mean"] == 34, pw
assert pw["PATHWAY_1"]["daysBrokerageToOffer"]["count"] == 20, pw
assert pw["PATHWAY_1"]["daysBrokerageToOffer"].get("mean", 0) == 0, pw
assert pw["PATHWAY_2"]["daysBrokerageToOffer"]["mean"] == 1, pw
assert pw["PATHWAY_1"]["daysOfferToDischarge"]["mean"] == 2, pw
assert pw["PATHWAY_2"]["daysOfferToDischarge"]["mean"] == 3, pw
PY
ctl flow --from 2022-06-27 --to 2022-07-31 > "$work/flow2.txt"
grep -q "^pathway 1  *20  *20  *29.0 / 29.0 (20)  *0.00 / 0.00 (20)  *2.00 / 2.00 (20)" "$work/flow2.txt" \
  || fail "flow table: $(cat "$work/flow2.txt")"
ctl simulate --days 2 --seed 5 --admissions-per-day 100 > "$work/sim.txt"
grep -Eq " [1-9][0-9,]* events published \(0 duplicates\)" "$work/sim.txt" \
  || fail "simulate: $(cat "$work/sim.txt")"
set +e
ctl flow --from 2022-06-27 --to 2022-06-01 > /dev/null 2> "$work/err3.txt"
code=$?
set -e
[ "$code" -eq 2 ] || fail "flow with --to before --from: exit code $code"

# No broker: exit 1 with the next step to take.
set +e
"$CTL" --broker 127.0.0.1:1 --timeout 2 status > /dev/null 2> "$work/err2.txt"
code=$?
set -e
[ "$code" -eq 1 ] || fail "unreachable broker exit code $code"
grep -q "is icr-broker running" "$work/err2.txt" || fail "no next step: $(cat "$work/err2.txt")"

kill -TERM "$pid"; wait "$pid"; pid=0
echo "icrctl_e2e_test: 1 passed, 0 failed"
