// Retention sweep (docs/governance.md, "Retention"): flags events past their
// retention period for review, purges flagged events after the review
// period by replacing them with metadata stubs (EventStore::ReplaceWithStub),
// and keeps legal holds, which stop a person's events being purged. Every
// step is audited (EventStore::AppendAudit).
//
// Durable state, in the store's state keys (EventStore::PutState):
//   "retention/flag/" + 20-digit zero-padded position -> flagged_at, micros
//                                                        since the epoch, as
//                                                        decimal text
//   "retention/hold/" + nhs_number                     -> the hold's reason
// The EventStore interface has no way to delete a state key, so an EMPTY
// value means "no key": a purged event's flag and a lifted hold are written
// empty.
//
// Depends only on store/store.h and the protos. Functions are stateless; a
// sweep and a hold change may run concurrently (a hold placed during a purge
// is seen by the events the purge has not reached yet). Run one sweep at a
// time. Any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "broker/governance/retention_rules.h"
#include "icr/v1/governance_types.pb.h"
#include "store/status.h"
#include "store/store.h"

namespace icr::broker::governance {

inline constexpr char kRetentionFlagPrefix[] = "retention/flag/";
inline constexpr char kRetentionHoldPrefix[] = "retention/hold/";

// "retention/flag/" + position zero-padded to 20 digits (key order is
// position order).
std::string RetentionFlagKey(uint64_t position);
// "retention/hold/" + nhs_number.
std::string LegalHoldKey(const std::string& nhs_number);

struct RetentionReport {
  uint64_t scanned = 0;          // ReviewRetention: events read
  uint64_t newly_flagged = 0;    // ReviewRetention: flagged by this review
  uint64_t flagged = 0;          // ReviewRetention: past retention and flagged (new or earlier)
  uint64_t on_hold = 0;          // ReviewRetention: of those, people under a legal hold
  uint64_t purged = 0;           // PurgeRetention: replaced by stubs
  uint64_t held = 0;             // PurgeRetention: flagged, not purged: legal hold
  uint64_t awaiting_review = 0;  // PurgeRetention: flagged, review period not over
  // Positions newly flagged (review) or purged (purge) per NHS number, in
  // position order; people in NHS number order.
  std::vector<std::pair<std::string, std::vector<uint64_t>>> by_person;
};

// Flags every event whose occurred_at + rules.SecondsFor(event_type) <=
// now_micros and that is not yet flagged or purged. Events of people under a
// legal hold are flagged too (counted in on_hold): the hold stops the purge,
// not the review. Reads the whole log in pages (EventStore::ReadFrom);
// `progress` (may be empty) is called every 10,000 events with (events
// scanned, the log's last position when the review started). Appends one
// RETENTION_FLAGGED audit record per person newly flagged (event ids and
// positions), with principal, role, organisation and channel from `who`.
// Not OK: the review stopped there; what was flagged before is kept and
// audited (unless the audit write is what failed). Resets *report.
store::Status ReviewRetention(store::EventStore* store, const RetentionRules& rules,
                              int64_t now_micros, const icr::v1::AuditRecord& who,
                              const std::function<void(uint64_t, uint64_t)>& progress,
                              RetentionReport* report);

// Purges flagged events whose flag is at least rules.review_seconds old and
// whose person is not under a legal hold: the event is replaced by a stub
// that keeps the envelope (event_id, position, source_system_id,
// source_organisation, care_setting, source_message_id, nhs_number,
// occurred_at, recorded_at, priority, event_type, place, referral_version)
// with purged_at = now_micros, and its flag is cleared. Appends one
// RETENTION_PURGED audit record per person (event ids and positions). Held
// events are counted in `held`, those still in review in
// `awaiting_review`. Irreversible. Not OK: the purge stopped there; what was
// purged before is audited (unless the audit write is what failed). Resets
// *report.
store::Status PurgeRetention(store::EventStore* store, const RetentionRules& rules,
                             int64_t now_micros, const icr::v1::AuditRecord& who,
                             RetentionReport* report);

// Places (hold = true; `reason` required, else kInvalidArgument) or lifts a
// legal hold on a person's events. nhs_number: 10 digits (kInvalidArgument
// otherwise). Audited as LEGAL_HOLD_SET with detail "placed: <reason>" or
// "lifted"; if the audit write fails the hold is put back as it was and the
// error returned.
store::Status SetLegalHold(store::EventStore* store, const std::string& nhs_number, bool hold,
                           const std::string& reason, const icr::v1::AuditRecord& who);

// True if the person is under a legal hold. A failed read answers true: when
// in doubt, do not purge.
bool OnLegalHold(store::EventStore* store, const std::string& nhs_number);

}  // namespace icr::broker::governance
