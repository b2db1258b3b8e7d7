#include "broker/governance/retention.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <string_view>
#include <system_error>

#include "store/timestamp.h"

namespace icr::broker::governance {
namespace {

using store::Status;
using store::StatusCode;

constexpr size_t kPageEvents = 1000;
constexpr uint64_t kProgressEvery = 10000;
// Audit records are appended at least this often during a purge, so a
// failure later on loses none of what was already done.
constexpr size_t kAuditEveryPurged = 1000;
constexpr int64_t kMicrosPerSecond = 1000000;

// a + seconds * 1e6, saturating at the int64 range.
int64_t AddSeconds(int64_t micros, int64_t seconds) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  if (seconds > kMax / kMicrosPerSecond) return kMax;
  if (seconds < kMin / kMicrosPerSecond) return kMin;
  const int64_t delta = seconds * kMicrosPerSecond;
  if (delta > 0 && micros > kMax - delta) return kMax;
  if (delta < 0 && micros < kMin - delta) return kMin;
  return micros + delta;
}

bool ParseInt64(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return ec == std::errc() && ptr == end;
}

bool ParseUint64(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return ec == std::errc() && ptr == end;
}

// The people under a legal hold (non-empty hold values).
Status LoadHolds(store::EventStore* store, std::set<std::string>* holds) {
  holds->clear();
  const std::string prefix = kRetentionHoldPrefix;
  return store->ScanState(prefix, [&](std::string_view key, std::string_view value) {
    if (!value.empty()) holds->emplace(key.substr(prefix.size()));
    return true;
  });
}

// An audit record of `action` by `who` about one person's events.
icr::v1::AuditRecord PersonRecord(const icr::v1::AuditRecord& who, icr::v1::AuditAction action,
                                  const std::string& nhs_number) {
  icr::v1::AuditRecord r;
  r.set_principal(who.principal());
  r.set_role(who.role());
  r.set_organisation(who.organisation());
  r.set_channel(who.channel());
  r.set_nhs_number(nhs_number);
  r.set_action(action);
  return r;
}

// Per-person event ids and positions gathered for audit records, and for
// the report's by_person (all of the sweep).
class PersonLedger {
 public:
  void Add(const std::string& nhs_number, uint64_t position, const std::string& event_id) {
    Pending& p = pending_[nhs_number];
    p.positions.push_back(position);
    p.event_ids.push_back(event_id);
    all_[nhs_number].push_back(position);
    ++pending_events_;
  }
  size_t pending_events() const { return pending_events_; }

  // Appends one record per person pending, then forgets them.
  Status Flush(store::EventStore* store, const icr::v1::AuditRecord& who,
               icr::v1::AuditAction action, const std::string& detail) {
    if (pending_.empty()) return Status::Ok();
    std::vector<icr::v1::AuditRecord> records;
    records.reserve(pending_.size());
    for (auto& [nhs_number, p] : pending_) {
      icr::v1::AuditRecord r = PersonRecord(who, action, nhs_number);
      for (std::string& id : p.event_ids) r.add_event_ids(std::move(id));
      for (uint64_t position : p.positions) r.add_positions(position);
      r.set_detail(detail);
      records.push_back(std::move(r));
    }
    Status s = store->AppendAudit(&records);
    if (!s.ok()) {
      return Status(s.code(), "auditing the retention sweep failed: " + s.message());
    }
    pending_.clear();
    pending_events_ = 0;
    return Status::Ok();
  }

  void Report(RetentionReport* report) const { report->by_person.assign(all_.begin(), all_.end()); }

 private:
  struct Pending {
    std::vector<uint64_t> positions;
    std::vector<std::string> event_ids;
  };
  std::map<std::string, Pending> pending_;
  std::map<std::string, std::vector<uint64_t>> all_;
  size_t pending_events_ = 0;
};

// Ends a sweep: audits what is pending, even after a failure (what was done
// must be recorded), and returns the first failure.
Status Finish(Status s, PersonLedger* ledger, store::EventStore* store,
              const icr::v1::AuditRecord& who, icr::v1::AuditAction action,
              const std::string& detail, RetentionReport* report) {
  Status audit = ledger->Flush(store, who, action, detail);
  ledger->Report(report);
  return s.ok() ? audit : s;
}

// The metadata stub that retention leaves in place of `event`.
icr::v1::CareEvent MakeStub(const icr::v1::CareEvent& event, int64_t now_micros) {
  icr::v1::CareEvent stub;
  stub.set_event_id(event.event_id());
  stub.set_position(event.position());
  stub.set_source_system_id(event.source_system_id());
  stub.set_source_organisation(event.source_organisation());
  stub.set_care_setting(event.care_setting());
  stub.set_source_message_id(event.source_message_id());
  stub.set_nhs_number(event.nhs_number());
  if (event.has_occurred_at()) *stub.mutable_occurred_at() = event.occurred_at();
  if (event.has_recorded_at()) *stub.mutable_recorded_at() = event.recorded_at();
  stub.set_priority(event.priority());
  stub.set_event_type(event.event_type());
  stub.set_place(event.place());
  stub.set_referral_version(event.referral_version());
  store::SetTimestamp(stub.mutable_purged_at(), now_micros);
  return stub;
}

bool ValidNhsNumberShape(const std::string& nhs_number) {
  return nhs_number.size() == 10 && std::all_of(nhs_number.begin(), nhs_number.end(),
                                                [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::string RetentionFlagKey(uint64_t position) {
  char digits[21];
  std::snprintf(digits, sizeof(digits), "%020llu", static_cast<unsigned long long>(position));
  return std::string(kRetentionFlagPrefix) + digits;
}

std::string LegalHoldKey(const std::string& nhs_number) {
  return std::string(kRetentionHoldPrefix) + nhs_number;
}

Status ReviewRetention(store::EventStore* store, const RetentionRules& rules, int64_t now_micros,
                       const icr::v1::AuditRecord& who,
                       const std::function<void(uint64_t, uint64_t)>& progress,
                       RetentionReport* report) {
  *report = RetentionReport();
  std::set<std::string> holds;
  Status s = LoadHolds(store, &holds);
  if (!s.ok()) return s;
  const uint64_t last = store->LastPosition();
  const std::string flagged_at = std::to_string(now_micros);
  PersonLedger ledger;
  const std::string detail = "flagged for retention review";

  std::vector<store::EventPtr> page;
  for (uint64_t from = 1;; from = page.back()->position + 1) {
    s = store->ReadFrom(from, kPageEvents, &page);
    if (!s.ok() || page.empty()) break;
    for (const store::EventPtr& stored : page) {
      const icr::v1::CareEvent& event = stored->event;
      ++report->scanned;
      if (progress && report->scanned % kProgressEvery == 0) progress(report->scanned, last);
      if (event.has_purged_at()) continue;
      const int64_t due =
          AddSeconds(store::ToMicros(event.occurred_at()), rules.SecondsFor(event.event_type()));
      if (due > now_micros) continue;
      if (holds.count(event.nhs_number()) != 0) ++report->on_hold;
      const std::string key = RetentionFlagKey(stored->position);
      std::string value;
      s = store->GetState(key, &value);
      if (s.ok() && !value.empty()) {
        ++report->flagged;  // flagged by an earlier review
        continue;
      }
      if (!s.ok() && s.code() != StatusCode::kNotFound) break;
      s = store->PutState(key, flagged_at);
      if (!s.ok()) break;
      ++report->flagged;
      ++report->newly_flagged;
      ledger.Add(event.nhs_number(), stored->position, event.event_id());
    }
    if (!s.ok()) break;
  }
  return Finish(s, &ledger, store, who, icr::v1::RETENTION_FLAGGED, detail, report);
}

Status PurgeRetention(store::EventStore* store, const RetentionRules& rules, int64_t now_micros,
                      const icr::v1::AuditRecord& who, RetentionReport* report) {
  *report = RetentionReport();
  const std::string detail = "purged after retention review: metadata stubs kept";
  // The flags first (the scan holds the store's read lock: no writes from
  // inside it), in position order.
  std::vector<std::pair<uint64_t, int64_t>> flags;  // position, flagged_at
  const std::string prefix = kRetentionFlagPrefix;
  Status bad;
  Status s = store->ScanState(prefix, [&](std::string_view key, std::string_view value) {
    if (value.empty()) return true;  // cleared (purged)
    uint64_t position = 0;
    int64_t flagged_at = 0;
    if (!ParseUint64(key.substr(prefix.size()), &position) || !ParseInt64(value, &flagged_at)) {
      bad = Status::Corruption("retention flag '" + std::string(key) + "' is malformed");
      return false;
    }
    flags.emplace_back(position, flagged_at);
    return true;
  });
  if (s.ok()) s = bad;
  if (!s.ok()) return s;

  PersonLedger ledger;
  for (const auto& [position, flagged_at] : flags) {
    if (AddSeconds(flagged_at, rules.review_seconds) > now_micros) {
      ++report->awaiting_review;
      continue;
    }
    store::EventPtr stored;
    s = store->Get(position, &stored);
    if (!s.ok()) break;
    const icr::v1::CareEvent& event = stored->event;
    // Looked up per event: a hold placed while the purge runs stops it for
    // the events not reached yet.
    if (OnLegalHold(store, event.nhs_number())) {
      ++report->held;
      continue;
    }
    if (!event.has_purged_at()) {
      s = store->ReplaceWithStub(position, MakeStub(event, now_micros));
      if (!s.ok()) break;
      ++report->purged;
      ledger.Add(event.nhs_number(), position, event.event_id());
    }
    s = store->PutState(RetentionFlagKey(position), std::string());  // cleared
    if (!s.ok()) break;
    if (ledger.pending_events() >= kAuditEveryPurged) {
      s = ledger.Flush(store, who, icr::v1::RETENTION_PURGED, detail);
      if (!s.ok()) break;
    }
  }
  return Finish(s, &ledger, store, who, icr::v1::RETENTION_PURGED, detail, report);
}

Status SetLegalHold(store::EventStore* store, const std::string& nhs_number, bool hold,
                    const std::string& reason, const icr::v1::AuditRecord& who) {
  if (!ValidNhsNumberShape(nhs_number)) {
    return Status::InvalidArgument("nhs_number must be 10 digits");
  }
  if (hold && reason.empty()) {
    return Status::InvalidArgument("a legal hold needs a reason");
  }
  const std::string key = LegalHoldKey(nhs_number);
  std::string previous;
  Status s = store->GetState(key, &previous);
  if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  s = store->PutState(key, hold ? reason : std::string());
  if (!s.ok()) return s;
  std::vector<icr::v1::AuditRecord> records(1,
                                            PersonRecord(who, icr::v1::LEGAL_HOLD_SET, nhs_number));
  records[0].set_detail(hold ? "placed: " + reason : std::string("lifted"));
  s = store->AppendAudit(&records);
  if (!s.ok()) {
    // Unaudited, so undone (best effort: the store is likely failing).
    store->PutState(key, previous);
    return Status(s.code(), std::string(hold ? "placing" : "lifting") +
                                " the legal hold could not be audited, so it was not " +
                                (hold ? "placed" : "lifted") + ": " + s.message());
  }
  return Status::Ok();
}

bool OnLegalHold(store::EventStore* store, const std::string& nhs_number) {
  std::string reason;
  Status s = store->GetState(LegalHoldKey(nhs_number), &reason);
  if (s.code() == StatusCode::kNotFound) return false;
  if (!s.ok()) return true;
  return !reason.empty();
}

}  // namespace icr::broker::governance
