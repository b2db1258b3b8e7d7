#include "broker/workflow/state_machine.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <set>
#include <unordered_set>
#include <utility>
#include <vector>

#include "broker/timestamp.h"
#include "broker/workflow/referral.h"
#include "broker/workflow/summary.h"
#include "store/keys.h"

namespace icr::broker::workflow {
namespace keys {

std::string Key(std::string_view prefix, std::string_view id) {
  std::string k;
  k.reserve(prefix.size() + id.size());
  k.append(prefix);
  k.append(id);
  return k;
}

std::string TeamKey(const icr::v1::TeamRef& team) {
  std::string k(kTeam);
  k += team.organisation();
  k.push_back('\0');
  k += team.team_code();
  return k;
}

std::string DeadlineKey(int64_t due_micros, std::string_view referral_id,
                        icr::v1::EscalationKind kind) {
  std::string k(kDeadline);
  store::keys::AppendPosition(static_cast<uint64_t>(std::max<int64_t>(due_micros, 0)), &k);
  k.append(referral_id);
  k.push_back('\0');
  k.push_back(static_cast<char>(kind));
  return k;
}

bool ParseDeadlineKey(std::string_view key, int64_t* due_micros, std::string* referral_id,
                      icr::v1::EscalationKind* kind) {
  const size_t head = kDeadline.size() + store::keys::kPositionLength;
  if (key.size() < head + 2 || key.substr(0, kDeadline.size()) != kDeadline) return false;
  uint64_t due = 0;
  if (!store::keys::DecodePosition(key.substr(kDeadline.size(), store::keys::kPositionLength),
                                   &due)) {
    return false;
  }
  if (key[key.size() - 2] != '\0') return false;
  const int k = static_cast<unsigned char>(key.back());
  if (!icr::v1::EscalationKind_IsValid(k)) return false;
  *due_micros = static_cast<int64_t>(due);
  referral_id->assign(key.substr(head, key.size() - 2 - head));
  *kind = static_cast<icr::v1::EscalationKind>(k);
  return true;
}

}  // namespace keys

namespace {

using icr::v1::CareEvent;
using icr::v1::Referral;
using store::Status;

bool IsWorkflowType(CareEvent::PayloadCase c) {
  switch (c) {
    case CareEvent::kDischargeReferral:
    case CareEvent::kReferralStatusChange:
    case CareEvent::kPlacementRequest:
    case CareEvent::kPlacementOffer:
    case CareEvent::kPlacementAcceptance:
    case CareEvent::kPlacementDecline:
    case CareEvent::kPlacementCancellation:
    case CareEvent::kEscalation:
      return true;
    default:
      return false;
  }
}

bool Escalated(const Referral& r, icr::v1::EscalationKind kind) {
  return std::find(r.open_escalations().begin(), r.open_escalations().end(), kind) !=
         r.open_escalations().end();
}

using Deadline = std::pair<int64_t, icr::v1::EscalationKind>;

// The deadlines a referral in this state is waiting on (none once raised).
std::vector<Deadline> DeadlinesFor(const Referral& r, const WorkflowOptions& o) {
  std::vector<Deadline> out;
  constexpr int64_t kMicros = 1000000;
  const auto s = r.status();
  if (s == icr::v1::CREATED && !Escalated(r, icr::v1::NO_MANAGEMENT_PLAN)) {
    out.emplace_back(ToMicros(r.created_at()) + o.management_plan_seconds * kMicros,
                     icr::v1::NO_MANAGEMENT_PLAN);
  }
  if ((s == icr::v1::CREATED || s == icr::v1::ACCEPTED) && r.pathway() != icr::v1::PATHWAY_0 &&
      !Escalated(r, icr::v1::NOT_FORWARDED_TO_BROKERAGE)) {
    out.emplace_back(ToMicros(r.created_at()) + o.forward_to_brokerage_seconds * kMicros,
                     icr::v1::NOT_FORWARDED_TO_BROKERAGE);
  }
  const int pw = r.pathway() - icr::v1::PATHWAY_0;  // 0..3
  if ((s == icr::v1::FORWARDED_TO_BROKERAGE || s == icr::v1::PLACEMENT_REQUESTED) && pw >= 1 &&
      pw <= 3 && o.offer_seconds[pw] > 0 && !Escalated(r, icr::v1::NO_OFFER)) {
    // A declined offer or a cancelled request starts a fresh window.
    const int64_t from = r.has_offer_window_started_at() ? ToMicros(r.offer_window_started_at())
                                                         : ToMicros(r.forwarded_at());
    out.emplace_back(from + o.offer_seconds[pw] * kMicros, icr::v1::NO_OFFER);
  }
  if (r.in_d2a() && !Escalated(r, icr::v1::D2A_OVER_SIX_WEEKS)) {
    out.emplace_back(ToMicros(r.discharged_at()) + o.d2a_max_seconds * kMicros,
                     icr::v1::D2A_OVER_SIX_WEEKS);
  }
  return out;
}

class WorkflowStateMachine final : public store::StateMachine {
 public:
  explicit WorkflowStateMachine(const WorkflowOptions& options) : options_(options) {}

  Status Recover(const ScanFn& scan) override {
    retired_.clear();
    return scan(std::string(keys::kMerged), [this](std::string_view key, std::string_view) {
      retired_.emplace(key.substr(keys::kMerged.size()));
      return true;
    });
  }

  Status Apply(CareEvent* event, store::StateTxn* txn) override {
    Status s = ApplySummary(event, txn);
    if (!s.ok()) return s;
    return ApplyWorkflow(event, txn);
  }

  bool Fold(std::string_view key, const std::string* existing,
            const std::vector<std::string_view>& operands, std::string* out) const override {
    if (key.substr(0, keys::kSummary.size()) != keys::kSummary) return false;
    icr::v1::CareSummary summary;
    if (existing != nullptr && !summary.ParseFromString(*existing)) return false;
    for (std::string_view op : operands) {
      if (op.empty()) return false;
      const std::string_view body = op.substr(1);
      if (op[0] == 'E') {
        CareEvent e;
        if (!e.ParseFromArray(body.data(), static_cast<int>(body.size()))) return false;
        ApplyEventToSummary(e, &summary);
      } else if (op[0] == 'S') {
        icr::v1::CareSummary retired;
        if (!retired.ParseFromArray(body.data(), static_cast<int>(body.size()))) return false;
        AbsorbRetiredSummary(retired, &summary);
      } else {
        return false;
      }
    }
    out->clear();
    google::protobuf::io::StringOutputStream stream(out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    return summary.SerializeToCodedStream(&coded);
  }

 private:
  // The number a person's state lives under: the survivor after a merge.
  Status Resolve(store::StateTxn* txn, const std::string& nhs, std::string* survivor) {
    if (!MaybeRetired(nhs)) {
      *survivor = nhs;
      return Status::Ok();
    }
    std::string value;
    Status s = txn->Get(keys::Key(keys::kMerged, nhs), &value);
    if (s.ok()) {
      *survivor = value;
      return Status::Ok();
    }
    if (s.code() != store::StatusCode::kNotFound) return s;
    *survivor = nhs;
    return Status::Ok();
  }

  Status ApplySummary(CareEvent* event, store::StateTxn* txn) {
    std::string survivor;
    Status s = Resolve(txn, event->nhs_number(), &survivor);
    if (!s.ok()) return s;
    if (event->payload_case() == CareEvent::kNhsNumberMerge) {
      if (survivor != event->nhs_number()) {
        return Status::FailedPrecondition(
            "nhs_number " + event->nhs_number() + " was itself merged into " + survivor +
            "; publish the merge with the surviving number " + survivor);
      }
      const std::string& retired = event->nhs_number_merge().retired_nhs_number();
      std::string already;
      s = txn->Get(keys::Key(keys::kMerged, retired), &already);
      if (s.ok()) {
        if (already == survivor) {
          return Status::FailedPrecondition("nhs_number " + retired + " is already merged into " +
                                            survivor);
        }
        return Status::FailedPrecondition("nhs_number " + retired + " was already merged into " +
                                          already + "; it cannot be merged again");
      }
      if (s.code() != store::StatusCode::kNotFound) return s;
      // The retired person's summary joins the survivor's; numbers merged
      // into the retired one follow it.
      std::string retired_summary_bytes;
      s = txn->Get(keys::Key(keys::kSummary, retired), &retired_summary_bytes);
      if (s.ok()) {
        icr::v1::CareSummary retired_summary;
        if (!retired_summary.ParseFromString(retired_summary_bytes)) {
          return Status::Corruption("the stored care summary of " + retired +
                                    " could not be parsed; nothing of the merge was stored");
        }
        for (const std::string& older : retired_summary.retired_nhs_numbers()) {
          txn->Put(keys::Key(keys::kMerged, older), survivor);
          NoteRetired(older);
        }
        txn->Accumulate(keys::Key(keys::kSummary, survivor), "S" + retired_summary_bytes);
        txn->Delete(keys::Key(keys::kSummary, retired));
      } else if (s.code() != store::StatusCode::kNotFound) {
        return s;
      }
      txn->Put(keys::Key(keys::kMerged, retired), survivor);
      NoteRetired(retired);
      // The person's referral is whichever of the two is still live (open,
      // or the person is in D2A capacity after it), else the newer.
      std::string chosen;
      s = LiveReferralOf(txn, survivor, retired, &chosen);
      if (!s.ok()) return s;
      if (!chosen.empty()) txn->Put(keys::Key(keys::kPerson, survivor), chosen);
    }
    txn->Accumulate(keys::Key(keys::kSummary, survivor), SummaryOperand(*event));
    return Status::Ok();
  }

  // 'E' + the parts of the event the summary fold reads: the envelope's
  // bookkeeping fields and the payload of the types it summarises (for
  // referrals and placement requests only the needs flags, not their free
  // text). A few hundred bytes instead of the whole event.
  static std::string SummaryOperand(const CareEvent& e) {
    CareEvent slim;
    slim.set_source_system_id(e.source_system_id());
    slim.set_source_organisation(e.source_organisation());
    slim.set_care_setting(e.care_setting());
    slim.set_nhs_number(e.nhs_number());
    slim.set_position(e.position());
    slim.set_event_type(e.event_type());
    *slim.mutable_occurred_at() = e.occurred_at();
    *slim.mutable_recorded_at() = e.recorded_at();
    switch (e.payload_case()) {
      case CareEvent::kDischargeReferral:
        *slim.mutable_discharge_referral()->mutable_needs() = e.discharge_referral().needs();
        slim.mutable_discharge_referral()->mutable_needs()->clear_summary();
        break;
      case CareEvent::kPlacementRequest:
        *slim.mutable_placement_request()->mutable_needs() = e.placement_request().needs();
        slim.mutable_placement_request()->mutable_needs()->clear_summary();
        break;
      case CareEvent::kDemographicsUpdate:
      case CareEvent::kAdmission:
      case CareEvent::kTransfer:
      case CareEvent::kDischarge:
      case CareEvent::kMedicallyOptimised:
      case CareEvent::kExpectedDischargeDateSet:
      case CareEvent::kCarePackageStart:
      case CareEvent::kCarePackageEnd:
      case CareEvent::kGpRegistration:
      case CareEvent::kCareSummaryContribution:
      case CareEvent::kDeathNotification:
      case CareEvent::kNhsNumberMerge:
      case CareEvent::kEncounterCancellation:
      case CareEvent::kSharingObjection:
      case CareEvent::kNationalDataOptOut:
        slim = e;  // the fold reads these payloads; small apart from rare free text
        break;
      default:
        break;  // bookkeeping only
    }
    std::string out("E");
    slim.AppendToString(&out);
    return out;
  }

  // Of the newest referrals of two numbers being merged, the one that is
  // live (open or in D2A), else the one created later; "" if neither has one.
  Status LiveReferralOf(store::StateTxn* txn, const std::string& a, const std::string& b,
                        std::string* chosen) {
    struct Candidate {
      std::string id;
      Referral r;
    };
    std::vector<Candidate> found;
    for (const std::string& nhs : {a, b}) {
      std::string id;
      Status s = txn->Get(keys::Key(keys::kPerson, nhs), &id);
      if (s.code() == store::StatusCode::kNotFound) continue;
      if (!s.ok()) return s;
      std::string bytes;
      s = txn->Get(keys::Key(keys::kReferral, id), &bytes);
      if (s.code() == store::StatusCode::kNotFound) continue;
      if (!s.ok()) return s;
      Candidate c{id, {}};
      if (!c.r.ParseFromString(bytes)) return Corrupt(id);
      found.push_back(std::move(c));
    }
    chosen->clear();
    const Candidate* best = nullptr;
    for (const Candidate& c : found) {
      auto rank = [](const Candidate& x) {
        return std::make_pair(IsOpen(x.r.status()) || x.r.in_d2a(), ToMicros(x.r.created_at()));
      };
      if (best == nullptr || rank(c) > rank(*best)) best = &c;
    }
    if (best != nullptr) *chosen = best->id;
    return Status::Ok();
  }

  // Finds the referral an event concerns. Sets *referral_id to "" when the
  // event is not part of a referral's lifecycle (nothing more to do).
  Status FindReferral(CareEvent* e, store::StateTxn* txn, std::string* referral_id) {
    referral_id->clear();
    std::string value;
    auto lookup = [&](std::string_view prefix, const std::string& id, const char* what,
                      const char* publish_first) -> Status {
      Status s = txn->Get(keys::Key(prefix, id), &value);
      if (s.code() == store::StatusCode::kNotFound) {
        return Status::FailedPrecondition(std::string(what) + " " + id +
                                          " does not exist; publish its " + publish_first +
                                          " first");
      }
      if (!s.ok()) return s;
      *referral_id = value;
      return Status::Ok();
    };
    switch (e->payload_case()) {
      case CareEvent::kDischargeReferral:
        *referral_id = e->discharge_referral().referral_id();
        return Status::Ok();
      case CareEvent::kReferralStatusChange:
        *referral_id = e->referral_status_change().referral_id();
        return Status::Ok();
      case CareEvent::kEscalation:
        *referral_id = e->escalation().referral_id();
        return Status::Ok();
      case CareEvent::kPlacementRequest: {
        const auto& p = e->placement_request();
        Status s = txn->Get(keys::Key(keys::kRequest, p.request_id()), &value);
        if (s.ok()) {
          return Status::FailedPrecondition("placement request " + p.request_id() +
                                            " already exists; a new request needs a new "
                                            "request_id");
        }
        if (s.code() != store::StatusCode::kNotFound) return s;
        if (p.referral_id().empty()) {
          txn->Put(keys::Key(keys::kRequest, p.request_id()), "");
          if (e->place() == icr::v1::PLACE_UNSPECIFIED) e->set_place(p.place());
          return Status::Ok();
        }
        *referral_id = p.referral_id();
        return Status::Ok();
      }
      case CareEvent::kPlacementOffer: {
        const auto& p = e->placement_offer();
        Status s = txn->Get(keys::Key(keys::kOffer, p.offer_id()), &value);
        if (s.ok()) {
          return Status::FailedPrecondition("placement offer " + p.offer_id() +
                                            " already exists; a new offer needs a new offer_id");
        }
        if (s.code() != store::StatusCode::kNotFound) return s;
        s = lookup(keys::kRequest, p.request_id(), "placement request", "PLACEMENT_REQUEST");
        if (s.ok() && referral_id->empty()) txn->Put(keys::Key(keys::kOffer, p.offer_id()), "");
        return s;
      }
      case CareEvent::kPlacementAcceptance:
        return lookup(keys::kOffer, e->placement_acceptance().offer_id(), "placement offer",
                      "PLACEMENT_OFFER");
      case CareEvent::kPlacementDecline:
        return lookup(keys::kOffer, e->placement_decline().offer_id(), "placement offer",
                      "PLACEMENT_OFFER");
      case CareEvent::kPlacementCancellation:
        return lookup(keys::kRequest, e->placement_cancellation().request_id(),
                      "placement request", "PLACEMENT_REQUEST");
      case CareEvent::kMedicallyOptimised:
      case CareEvent::kReablementEnd:
      case CareEvent::kCarePackageEnd: {
        // These touch the person's newest referral when it is affected.
        std::string survivor;
        Status s = Resolve(txn, e->nhs_number(), &survivor);
        if (!s.ok()) return s;
        s = txn->Get(keys::Key(keys::kPerson, survivor), &value);
        if (s.code() == store::StatusCode::kNotFound) return Status::Ok();
        if (!s.ok()) return s;
        std::string bytes;
        s = txn->Get(keys::Key(keys::kReferral, value), &bytes);
        if (s.code() == store::StatusCode::kNotFound) return Status::Ok();
        if (!s.ok()) return s;
        Referral r;
        if (!r.ParseFromString(bytes)) return Corrupt(value);
        // Medically optimised applies to the referral of the same stay (or
        // one that names no encounter).
        const bool applies =
            e->payload_case() == CareEvent::kMedicallyOptimised
                ? IsOpen(r.status()) &&
                      (r.encounter_id().empty() ||
                       r.encounter_id() == e->medically_optimised().encounter_id())
                : r.in_d2a();
        if (applies) *referral_id = value;
        return Status::Ok();
      }
      default:
        return Status::Ok();
    }
  }

  // next.deadlines = what `next` waits on. A wait that goes on keeps the due
  // time it started with (limits changed since do not move it); new waits
  // get the current limits.
  void SetDeadlines(const Referral& current, bool exists, Referral* next) const {
    next->clear_deadlines();
    // What the current state waits on, computed with today's limits.
    const std::vector<Deadline> current_due =
        exists ? DeadlinesFor(current, options_) : std::vector<Deadline>();
    for (const Deadline& d : DeadlinesFor(*next, options_)) {
      int64_t due = d.first;
      // Same kind, same basis (the computed due is unchanged with the
      // current limits): the wait goes on, keep its stored due.
      const bool same_basis = std::find(current_due.begin(), current_due.end(), d) !=
                              current_due.end();
      if (same_basis) {
        for (const icr::v1::PendingDeadline& old : current.deadlines()) {
          if (old.kind() == d.second) due = ToMicros(old.due());
        }
      }
      auto* p = next->add_deadlines();
      p->set_kind(d.second);
      SetTimestamp(p->mutable_due(), due);
    }
  }

  static Status Corrupt(const std::string& referral_id) {
    return Status::Corruption("the stored state of referral " + referral_id +
                              " could not be parsed");
  }

  Status ApplyWorkflow(CareEvent* e, store::StateTxn* txn) {
    if (IsWorkflowType(e->payload_case())) e->set_priority(icr::v1::URGENT);
    std::string id;
    Status s = FindReferral(e, txn, &id);
    if (!s.ok() || id.empty()) {
      if (s.ok() && e->has_expected_version()) {
        return Status::FailedPrecondition(
            "expected_version is set but this event changes no referral (it applies to "
            "discharge referrals, their status changes and placement events)");
      }
      return s;
    }
    const std::string rkey = keys::Key(keys::kReferral, id);
    std::string bytes;
    Referral current;
    bool exists = false;
    s = txn->Get(rkey, &bytes);
    if (s.ok()) {
      if (!current.ParseFromString(bytes)) return Corrupt(id);
      exists = true;
    } else if (s.code() != store::StatusCode::kNotFound) {
      return s;
    }
    if (exists && e->payload_case() != CareEvent::kDischargeReferral) {
      // Events about a referral must be about its person (after merges).
      std::string event_person, referral_person;
      s = Resolve(txn, e->nhs_number(), &event_person);
      if (s.ok()) s = Resolve(txn, current.nhs_number(), &referral_person);
      if (!s.ok()) return s;
      if (event_person != referral_person) {
        return Status::FailedPrecondition("referral " + id + " is about NHS number " +
                                          current.nhs_number() + ", not " + e->nhs_number() +
                                          "; check the event's nhs_number");
      }
    }
    if (e->has_expected_version()) {
      const uint64_t have = exists ? current.version() : 0;
      if (e->expected_version() != have) {
        return Status::Conflict(
            "referral " + id + (exists ? " is at version " + std::to_string(have)
                                       : std::string(" does not exist (version 0)")) +
            ", but the event expected version " + std::to_string(e->expected_version()) +
            "; re-read the referral (GetReferral) and retry");
      }
    }
    if (e->payload_case() == CareEvent::kEscalation && exists) {
      // Only the deadline the referral is waiting on now, once it has
      // passed: the timer may race a state change, and deadlines kept from
      // before a change of limits no longer apply. Refused ones are dropped
      // by the timer.
      const int64_t deadline = ToMicros(e->escalation().deadline());
      const bool still_due = std::any_of(
          current.deadlines().begin(), current.deadlines().end(),
          [&](const icr::v1::PendingDeadline& d) {
            return d.kind() == e->escalation().kind() && ToMicros(d.due()) == deadline;
          });
      if (!still_due || deadline > ToMicros(e->recorded_at())) {
        return Status::FailedPrecondition("escalation " +
                                          icr::v1::EscalationKind_Name(e->escalation().kind()) +
                                          " of referral " + id + " is no longer due (" +
                                          StatusName(current.status()) + ")");
      }
    }
    Referral next;
    std::string problem = ApplyReferralEvent(*e, exists ? &current : nullptr, &next);
    if (!problem.empty()) return Status::FailedPrecondition(problem);

    // Broker-assigned routing: the event carries the referral's Place and
    // version; offers and status changes go back to the referring team.
    if (e->place() == icr::v1::PLACE_UNSPECIFIED) e->set_place(next.place());
    e->set_referral_version(next.version());
    if ((e->payload_case() == CareEvent::kPlacementOffer ||
         e->payload_case() == CareEvent::kReferralStatusChange) &&
        !e->has_addressee()) {
      *e->mutable_addressee() = next.referrer();  // back to the referring ward
    }
    if (e->payload_case() == CareEvent::kEscalation && !e->has_addressee() &&
        next.has_addressee()) {
      *e->mutable_addressee() = next.addressee();
    }

    if (e->payload_case() == CareEvent::kDischargeReferral) next.set_created_position(e->position());
    SetDeadlines(current, exists, &next);
    // The needs' free text stays in the creating event (see created_position):
    // every later transition then rewrites a few hundred bytes, not kilobytes.
    std::string out;
    if (next.needs().summary().empty()) {
      next.SerializeToString(&out);
    } else {
      Referral stored = next;
      stored.mutable_needs()->clear_summary();
      stored.SerializeToString(&out);
    }
    txn->Put(rkey, out);
    if (IsOpen(next.status())) {
      if (!exists || !IsOpen(current.status())) txn->Put(keys::Key(keys::kOpen, id), "");
    } else if (exists && IsOpen(current.status())) {
      txn->Delete(keys::Key(keys::kOpen, id));
    }
    switch (e->payload_case()) {
      case CareEvent::kDischargeReferral: {
        std::string survivor;
        s = Resolve(txn, e->nhs_number(), &survivor);
        if (!s.ok()) return s;
        txn->Put(keys::Key(keys::kPerson, survivor), id);
        break;
      }
      case CareEvent::kPlacementRequest:
        txn->Put(keys::Key(keys::kRequest, e->placement_request().request_id()), id);
        break;
      case CareEvent::kPlacementOffer:
        txn->Put(keys::Key(keys::kOffer, e->placement_offer().offer_id()), id);
        break;
      default:
        break;
    }
    // Deadlines follow the state: remove those no longer waited on, add new.
    // The ones removed are the ones stored with the referral, so keys armed
    // under other limits (the daemon's --deadline-* flags) go too.
    std::set<std::string> before;
    if (exists) {
      for (const icr::v1::PendingDeadline& d : current.deadlines()) {
        before.insert(keys::DeadlineKey(ToMicros(d.due()), id, d.kind()));
      }
    }
    std::set<std::string> after;
    for (const icr::v1::PendingDeadline& d : next.deadlines()) {
      after.insert(keys::DeadlineKey(ToMicros(d.due()), id, d.kind()));
    }
    for (const std::string& k : before) {
      if (!after.count(k)) txn->Delete(k);
    }
    for (const icr::v1::PendingDeadline& d : next.deadlines()) {
      const std::string k = keys::DeadlineKey(ToMicros(d.due()), id, d.kind());
      if (before.count(k)) continue;
      txn->Put(k, "");
      if (options_.on_deadline_armed) options_.on_deadline_armed(ToMicros(d.due()));
    }
    return Status::Ok();
  }

  // A superset of the retired numbers, so the writer reads m/ only for
  // numbers that may have been merged: loaded by Recover, added to by
  // merges. A number noted by a merge whose call then fails stays in it
  // harmlessly (the read answers "not merged"). Writer thread only.
  bool MaybeRetired(const std::string& nhs) {
    return retired_.count(nhs) > 0;
  }
  void NoteRetired(const std::string& nhs) { retired_.insert(nhs); }

  const WorkflowOptions options_;
  std::unordered_set<std::string> retired_;
};

}  // namespace

std::shared_ptr<store::StateMachine> NewWorkflowStateMachine(const WorkflowOptions& options) {
  return std::make_shared<WorkflowStateMachine>(options);
}

}  // namespace icr::broker::workflow
