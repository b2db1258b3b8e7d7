#!/usr/bin/env bash
# icrctl against the real icr-broker daemon on a loopback port: publish the
# example events, resend them (nothing new stored), tail a durable
# subscription with acks, read history, check status, and check that bad
# input fails with a clear message and exit code 1 and stores nothing.
# Information governance: whoami, audit who-saw / verify, legal holds,
# retention, policy reload, purposes, TLS option errors and completion in the
# development profile; then a second daemon with mutual TLS and the sample
# policy (certificates from deploy/make-test-pki.sh).
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
for _ in $(seq 100); do grep -qs "(port " "$work/broker.log" && break; sleep 0.05; done
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

# --- Information governance (docs/governance.md). In the development profile
# every caller is the principal local-developer with every query.
ctl whoami > "$work/whoami.txt"
grep -q "^principal  *local-developer$" "$work/whoami.txt" || fail "whoami: $(cat "$work/whoami.txt")"
grep -q "^authenticated  *no " "$work/whoami.txt" || fail "whoami authenticated: $(cat "$work/whoami.txt")"
ctl --json whoami | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["principal"] == "local-developer" and j["authenticated"] is False, j
assert "audit" in j["queries"] and "DIRECT_CARE" in j["purposes"], j'

# The history reads above were audited: a subject access request finds them,
# as a table and as JSON lines.
ctl audit who-saw 9997654323 > "$work/whosaw.txt"
head -1 "$work/whosaw.txt" | grep -q "^SEQ .*PRINCIPAL .*ACTION .*PURPOSE" || fail "who-saw header: $(cat "$work/whosaw.txt")"
grep -q "local-developer .*HISTORY_READ  *DIRECT_CARE" "$work/whosaw.txt" || fail "who-saw: $(cat "$work/whosaw.txt")"
ctl history 9997654323 --purpose service-evaluation > /dev/null
ctl --json audit who-saw "999 765 4323" > "$work/whosaw.jsonl"
python3 - "$work/whosaw.jsonl" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1])]
reads = [r for r in records if r["action"] == "HISTORY_READ"]
assert len(reads) >= 3, records  # --json history, history, --purpose SERVICE_EVALUATION
assert all(r["principal"] == "local-developer" and r["nhsNumber"] == "9997654323" for r in reads), reads
assert reads[-1]["purpose"] == "SERVICE_EVALUATION", reads[-1]
assert all(r.get("positions") for r in reads), reads
seqs = [int(r["sequence"]) for r in records]
assert seqs == sorted(seqs), seqs  # oldest first
PY
set +e
ctl history 9997654323 --purpose marketing > /dev/null 2> "$work/err-purpose.txt"
code=$?
set -e
[ "$code" -eq 2 ] || fail "history --purpose marketing: exit code $code"
grep -q "SERVICE_PLANNING" "$work/err-purpose.txt" || fail "no valid purposes listed: $(cat "$work/err-purpose.txt")"

# A delivery for research is audited with its purpose and legal basis.
timeout 20 "$CTL" --broker "127.0.0.1:$port" tail --from earliest --nhs 9990000018 --count 1 \
  --purpose RESEARCH --legal-basis "e2e test basis" > "$work/tail-research.jsonl"
grep -q '"sourceMessageId":"icrctl-e2e-new"' "$work/tail-research.jsonl" || fail "tail --purpose RESEARCH: $(cat "$work/tail-research.jsonl")"
ctl --json audit who-saw 9990000018 | python3 -c '
import json, sys
records = [json.loads(l) for l in sys.stdin]
assert any(r["action"] == "DELIVERED" and r.get("purpose") == "RESEARCH"
           and r.get("legalBasis") == "e2e test basis" for r in records), records'

# The hash chain is intact (exit 0).
ctl audit verify > "$work/verify.txt" 2> "$work/verify.err"
grep -Eq "^audit trail intact: [0-9,]+ records, head [0-9a-f]{64}$" "$work/verify.txt" \
  || fail "audit verify: $(cat "$work/verify.txt" "$work/verify.err")"
[ ! -s "$work/verify.err" ] || fail "audit verify printed progress when stderr is not a terminal"
ctl --json audit verify | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["intact"] is True and j["records"] > 0 and len(j["headHash"]) == 64, j'

# Legal hold: a reason is required; placing and lifting are audited.
set +e
ctl legal-hold set 9990000026 > /dev/null 2> "$work/err-hold.txt"
code=$?
set -e
[ "$code" -eq 2 ] || fail "legal-hold set without --reason: exit code $code"
grep -q -- "--reason TEXT is required" "$work/err-hold.txt" || fail "legal-hold: $(cat "$work/err-hold.txt")"
ctl legal-hold set "999 000 0026" --reason "claim TEST-1" > "$work/hold.txt"
grep -q "legal hold placed on 999 000 0026: claim TEST-1" "$work/hold.txt" || fail "hold: $(cat "$work/hold.txt")"
ctl legal-hold lift 9990000026 > /dev/null
ctl audit who-saw 9990000026 > "$work/whosaw-hold.txt"
grep -q "LEGAL_HOLD_SET .*placed: claim TEST-1" "$work/whosaw-hold.txt" || fail "who-saw hold: $(cat "$work/whosaw-hold.txt")"
grep -q "LEGAL_HOLD_SET .*lifted" "$work/whosaw-hold.txt" || fail "who-saw lift: $(cat "$work/whosaw-hold.txt")"
ctl audit who-saw 9990000034 > "$work/whosaw-none.txt" 2> "$work/whosaw-none.err"
[ ! -s "$work/whosaw-none.txt" ] && grep -q "no audit records" "$work/whosaw-none.err" \
  || fail "who-saw of nobody: $(cat "$work/whosaw-none.txt" "$work/whosaw-none.err")"

# Retention review and purge run and print their counts (nothing is due now).
ctl retention review > "$work/review.txt"
grep -Eq "^events scanned  +[0-9,]+$" "$work/review.txt" || fail "retention review: $(cat "$work/review.txt")"
ctl --json retention review --as-of 2026-01-01 | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["scanned"] >= 15 and "newlyFlagged" in j and "onHold" in j, j'
ctl --json retention purge | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["purged"] == 0, j'

# policy reload: the development profile has no policy file to reload.
set +e
ctl policy reload > /dev/null 2> "$work/err-reload.txt"
code=$?
set -e
[ "$code" -eq 1 ] || fail "policy reload in development: exit code $code"
grep -q "FAILED_PRECONDITION: the policy was not loaded from a file" "$work/err-reload.txt" \
  || fail "policy reload: $(cat "$work/err-reload.txt")"
grep -q "started without --policy" "$work/err-reload.txt" || fail "policy reload hint: $(cat "$work/err-reload.txt")"

# Usage errors: a group without its command; TLS files that cannot be read
# (from the option and from the environment); a certificate without its key.
set +e
ctl audit > /dev/null 2> "$work/err-audit.txt"; code=$?
set -e
[ "$code" -eq 2 ] && grep -q "verify, who-saw" "$work/err-audit.txt" || fail "bare audit ($code): $(cat "$work/err-audit.txt")"
set +e
ctl --tls-ca /nonexistent/ca.pem whoami > /dev/null 2> "$work/err-tls.txt"; code=$?
set -e
[ "$code" -eq 2 ] || fail "--tls-ca /nonexistent: exit code $code"
grep -q -- "--tls-ca: cannot read /nonexistent/ca.pem: No such file or directory" "$work/err-tls.txt" \
  || fail "--tls-ca error: $(cat "$work/err-tls.txt")"
set +e
ICR_TLS_CA=/nonexistent/env-ca.pem ctl audit verify > /dev/null 2> "$work/err-tls2.txt"; code=$?
set -e
[ "$code" -eq 2 ] && grep -q "/nonexistent/env-ca.pem" "$work/err-tls2.txt" || fail "ICR_TLS_CA ($code): $(cat "$work/err-tls2.txt")"
set +e
ctl --tls-ca "$EXAMPLES/events.jsonl" whoami > /dev/null 2> "$work/err-tls3.txt"; code=$?
set -e
[ "$code" -eq 2 ] && grep -q "is not a PEM file" "$work/err-tls3.txt" || fail "--tls-ca not PEM ($code): $(cat "$work/err-tls3.txt")"
set +e
ctl --tls-ca /nonexistent/ca.pem --tls-cert /nonexistent/c.pem whoami > /dev/null 2> "$work/err-tls4.txt"; code=$?
set -e
[ "$code" -eq 2 ] && grep -q -- "--tls-cert /nonexistent/c.pem needs --tls-key" "$work/err-tls4.txt" \
  || fail "--tls-cert without --tls-key ($code): $(cat "$work/err-tls4.txt")"

# Shell completion knows the new commands and their sub-commands.
ctl completion bash > "$work/completion.bash"
bash -n "$work/completion.bash" || fail "completion script does not parse"
complete_words() {  # complete_words WORD... : what completes after them
  bash -c 'source "$1"; shift; COMP_WORDS=(icrctl "$@" ""); COMP_CWORD=$(($# + 1)); _icrctl; echo "${COMPREPLY[*]}"' \
    _ "$work/completion.bash" "$@"
}
for c in whoami policy audit retention legal-hold; do
  complete_words | grep -qw -- "$c" || fail "completion lacks $c"
done
[ "$(complete_words audit)" = "verify who-saw" ] || fail "completion of audit: $(complete_words audit)"
complete_words audit verify | grep -qw -- "--progress" || fail "completion of audit verify"
complete_words legal-hold set | grep -qw -- "--reason" || fail "completion of legal-hold set"
complete_words tail --purpose | grep -qw RESEARCH || fail "completion of --purpose"

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

# --- Mutual TLS with a policy (docs/governance.md): a second daemon that
# knows its callers by their client certificates.
{
  repo=$(cd "$(dirname "$0")/../.." && pwd)
  pki="$work/pki"
  "$repo/deploy/make-test-pki.sh" "$pki" icr-operator:QWU uhcw-epr:RKB > /dev/null
  cp "$repo/deploy/policy/coventry-warwickshire.yaml" "$work/policy.yaml"
  "$BROKER_BIN" --data-dir "$work/data2" --listen 127.0.0.1:0 --mllp-listen 127.0.0.1:0 \
    --fhir-listen 127.0.0.1:0 --escalations off --tls-cert "$pki/server.pem" \
    --tls-key "$pki/server.key" --tls-client-ca "$pki/ca.pem" --policy "$work/policy.yaml" \
    2> "$work/broker2.log" &
  pid2=$!
  trap 'for p in "$pid" "${pid2:-0}"; do if [ "$p" -gt 0 ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi; done; rm -rf "$work"' EXIT
  for _ in $(seq 100); do grep -qs "(port " "$work/broker2.log" && break; sleep 0.05; done
  port2=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/broker2.log")
  [ -n "$port2" ] || fail "mTLS broker did not start: $(cat "$work/broker2.log")"
  as() {  # as PRINCIPAL icrctl-args...
    local who="$1"; shift
    "$CTL" --broker "127.0.0.1:$port2" --tls-ca "$pki/ca.pem" --tls-cert "$pki/$who.pem" \
      --tls-key "$pki/$who.key" "$@"
  }

  as icr-operator whoami > "$work/m-whoami.txt"
  grep -q "^principal  *icr-operator$" "$work/m-whoami.txt" && grep -q "^organisation  *QWU$" "$work/m-whoami.txt" \
    && grep -q "^authenticated  *yes" "$work/m-whoami.txt" || fail "mTLS whoami: $(cat "$work/m-whoami.txt")"
  ICR_TLS_CA="$pki/ca.pem" ICR_TLS_CERT="$pki/uhcw-epr.pem" ICR_TLS_KEY="$pki/uhcw-epr.key" \
    "$CTL" --broker "127.0.0.1:$port2" --json whoami | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["principal"] == "uhcw-epr" and j["organisation"] == "RKB" and j["authenticated"] is True, j
assert j["purposes"] == ["DIRECT_CARE"] and "audit" not in j["queries"], j'

  # The EPR publishes and reads a person's history; research is refused.
  as uhcw-epr publish --file - > /dev/null <<'JSON'
{"sourceSystemId":"uhcw-epr","sourceOrganisation":"RKB","careSetting":"ACUTE","sourceMessageId":"icrctl-mtls-1","nhsNumber":"9990000034","occurredAt":"2026-01-05T10:00:00Z","admission":{"encounterId":"E9"}}
JSON
  # (Its history is limited to what the policy lets it receive; the read is
  # audited either way.)
  as uhcw-epr history 9990000034 > /dev/null 2>&1 || fail "mTLS history"
  set +e
  as uhcw-epr history 9990000034 --purpose RESEARCH > /dev/null 2> "$work/m-err1.txt"; code=$?
  set -e
  [ "$code" -eq 1 ] && grep -q "PERMISSION_DENIED" "$work/m-err1.txt" && grep -q "policy does not grant" "$work/m-err1.txt" \
    || fail "mTLS history for RESEARCH ($code): $(cat "$work/m-err1.txt")"
  set +e
  as uhcw-epr audit verify > /dev/null 2> "$work/m-err2.txt"; code=$?
  set -e
  [ "$code" -eq 2 ] && grep -q "PERMISSION_DENIED" "$work/m-err2.txt" || fail "mTLS audit verify by the EPR ($code): $(cat "$work/m-err2.txt")"

  # The operator answers the subject access request and checks the chain.
  as icr-operator audit who-saw 9990000034 > "$work/m-whosaw.txt"
  grep -q "uhcw-epr  *EPR_SYSTEM  *RKB  *HISTORY_READ  *DIRECT_CARE" "$work/m-whosaw.txt" || fail "mTLS who-saw: $(cat "$work/m-whosaw.txt")"
  as icr-operator audit verify | grep -q "^audit trail intact: " || fail "mTLS audit verify"

  # policy reload: a good file is taken, a bad one refused with file:line.
  as icr-operator policy reload > "$work/m-reload.txt"
  grep -Eq "^policy reloaded: version [0-9]+, [0-9]+ principal\(s\), [0-9]+ profile\(s\)$" "$work/m-reload.txt" \
    || fail "mTLS policy reload: $(cat "$work/m-reload.txt")"
  cp "$work/policy.yaml" "$work/policy.good"
  printf 'no_such_section: 1\n' >> "$work/policy.yaml"
  set +e
  as icr-operator policy reload > /dev/null 2> "$work/m-err3.txt"; code=$?
  set -e
  [ "$code" -eq 1 ] && grep -q "policy.yaml:[0-9]" "$work/m-err3.txt" && grep -q "keeps the policy it had" "$work/m-err3.txt" \
    || fail "mTLS bad policy reload ($code): $(cat "$work/m-err3.txt")"
  cp "$work/policy.good" "$work/policy.yaml"

  # Refusals: no client certificate, plaintext to a TLS broker, TLS to a
  # plaintext one.
  set +e
  "$CTL" --broker "127.0.0.1:$port2" --tls-ca "$pki/ca.pem" whoami > /dev/null 2> "$work/m-err4.txt"; code=$?
  set -e
  [ "$code" -eq 1 ] && grep -q -- "--tls-cert and --tls-key" "$work/m-err4.txt" || fail "mTLS without a certificate ($code): $(cat "$work/m-err4.txt")"
  set +e
  "$CTL" --broker "127.0.0.1:$port2" --timeout 3 whoami > /dev/null 2> "$work/m-err5.txt"; code=$?
  set -e
  [ "$code" -eq 1 ] && grep -q "if it listens with TLS, connect with --tls-ca" "$work/m-err5.txt" \
    || fail "plaintext to the TLS broker ($code): $(cat "$work/m-err5.txt")"
  set +e
  "$CTL" --broker "127.0.0.1:$port" --timeout 3 --tls-ca "$pki/ca.pem" --tls-cert "$pki/icr-operator.pem" \
    --tls-key "$pki/icr-operator.key" whoami > /dev/null 2> "$work/m-err6.txt"; code=$?
  set -e
  [ "$code" -eq 1 ] && grep -q "TLS handshake with the broker at 127.0.0.1:$port failed" "$work/m-err6.txt" \
    && ! grep -q "^E[0-9]" "$work/m-err6.txt" || fail "TLS to the plaintext broker ($code): $(cat "$work/m-err6.txt")"

  # A certificate the CA signed for a principal of another organisation.
  set +e
  as wrong-org whoami > /dev/null 2> "$work/m-err7.txt"; code=$?
  set -e
  [ "$code" -eq 1 ] && grep -q "UNAUTHENTICATED" "$work/m-err7.txt" \
    && grep -q "does not accept the certificate in $pki/wrong-org.pem" "$work/m-err7.txt" \
    || fail "wrong-org certificate ($code): $(cat "$work/m-err7.txt")"

  kill -TERM "$pid2"; wait "$pid2"; pid2=0
}

kill -TERM "$pid"; wait "$pid"; pid=0
echo "icrctl_e2e_test: 1 passed, 0 failed (development profile and mutual TLS)"
