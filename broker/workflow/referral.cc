#include "broker/workflow/referral.h"

#include <algorithm>
#include <initializer_list>

namespace icr::broker::workflow {
namespace {

using icr::v1::CareEvent;
using icr::v1::Referral;
using icr::v1::ReferralStatus;

bool In(ReferralStatus s, std::initializer_list<ReferralStatus> set) {
  return std::find(set.begin(), set.end(), s) != set.end();
}

std::string Names(std::initializer_list<ReferralStatus> set) {
  std::string out;
  size_t i = 0;
  for (ReferralStatus s : set) {
    if (i > 0) out += (i + 1 == set.size()) ? " or " : ", ";
    out += StatusName(s);
    ++i;
  }
  return out;
}

// "referral REF-1 is WITHDRAWN; <what> is allowed only from <allowed>".
std::string NotFrom(const Referral& r, const std::string& what,
                    std::initializer_list<ReferralStatus> allowed) {
  return "referral " + r.referral_id() + " is " + StatusName(r.status()) + "; " + what +
         " is allowed only from " + Names(allowed);
}

std::string Unknown(const std::string& referral_id, const std::string& what) {
  return "referral " + referral_id + " does not exist; " + what +
         " needs an existing referral (publish its DISCHARGE_REFERRAL first)";
}

// Escalations that no longer apply once the referral has moved on.
void PruneEscalations(Referral* r) {
  auto* open = r->mutable_open_escalations();
  const ReferralStatus s = r->status();
  auto still_applies = [&](int kind) {
    switch (kind) {
      case icr::v1::NO_MANAGEMENT_PLAN:
        return s == icr::v1::CREATED;
      case icr::v1::NOT_FORWARDED_TO_BROKERAGE:
        return In(s, {icr::v1::CREATED, icr::v1::ACCEPTED});
      case icr::v1::NO_OFFER:
        return In(s, {icr::v1::FORWARDED_TO_BROKERAGE, icr::v1::PLACEMENT_REQUESTED});
      case icr::v1::D2A_OVER_SIX_WEEKS:
        return r->in_d2a();
      default:
        return false;
    }
  };
  open->erase(std::remove_if(open->begin(), open->end(),
                             [&](int kind) { return !still_applies(kind); }),
              open->end());
}

std::string Create(const CareEvent& e, const Referral* current, Referral* next) {
  const auto& p = e.discharge_referral();
  if (current != nullptr) {
    return "referral " + p.referral_id() + " already exists (" + StatusName(current->status()) +
           ", from " + current->source_organisation() +
           "); a new referral needs a new referral_id";
  }
  next->Clear();
  next->set_referral_id(p.referral_id());
  next->set_nhs_number(e.nhs_number());
  next->set_status(icr::v1::CREATED);
  next->set_pathway(p.pathway());
  *next->mutable_referrer() = p.referrer();
  if (e.has_addressee()) *next->mutable_addressee() = e.addressee();
  if (p.has_needs()) *next->mutable_needs() = p.needs();
  if (p.has_expected_discharge_date()) {
    *next->mutable_expected_discharge_date() = p.expected_discharge_date();
  }
  if (p.has_discharge_ready_date()) *next->mutable_discharge_ready_date() = p.discharge_ready_date();
  next->set_place(p.place() != icr::v1::PLACE_UNSPECIFIED ? p.place() : e.place());
  next->set_encounter_id(p.encounter_id());
  next->set_source_organisation(e.source_organisation());
  *next->mutable_created_at() = e.occurred_at();
  return {};
}

std::string StatusChange(const CareEvent& e, const Referral& cur, Referral* next) {
  const auto& p = e.referral_status_change();
  const ReferralStatus to = p.status();
  const std::string what = "a change to " + StatusName(to);
  if (!IsOpen(cur.status())) {
    return "referral " + cur.referral_id() + " is " + StatusName(cur.status()) +
           " (closed); " + what + " is not allowed";
  }
  const bool new_pathway = p.pathway() != icr::v1::DISCHARGE_PATHWAY_UNSPECIFIED &&
                           p.pathway() != cur.pathway();
  if (to == cur.status()) {
    if (!new_pathway) {
      return "referral " + cur.referral_id() + " is already " + StatusName(to) +
             " on this pathway; to change the pathway set referral_status_change.pathway to a "
             "different pathway";
    }
  } else {
    switch (to) {
      case icr::v1::ACCEPTED:
        if (cur.status() != icr::v1::CREATED) return NotFrom(cur, what, {icr::v1::CREATED});
        *next->mutable_accepted_at() = e.occurred_at();
        break;
      case icr::v1::FORWARDED_TO_BROKERAGE:
        if (cur.status() != icr::v1::ACCEPTED) return NotFrom(cur, what, {icr::v1::ACCEPTED});
        *next->mutable_forwarded_at() = e.occurred_at();
        *next->mutable_offer_window_started_at() = e.occurred_at();
        break;
      case icr::v1::SERVICE_CONFIRMED:
        if (cur.status() != icr::v1::OFFER_ACCEPTED) {
          return NotFrom(cur, what, {icr::v1::OFFER_ACCEPTED});
        }
        *next->mutable_service_confirmed_at() = e.occurred_at();
        break;
      case icr::v1::DISCHARGED: {
        const auto pathway = new_pathway ? p.pathway() : cur.pathway();
        if (pathway == icr::v1::PATHWAY_0) {
          if (!In(cur.status(), {icr::v1::CREATED, icr::v1::ACCEPTED, icr::v1::SERVICE_CONFIRMED})) {
            return NotFrom(cur, what + " on PATHWAY_0",
                           {icr::v1::CREATED, icr::v1::ACCEPTED, icr::v1::SERVICE_CONFIRMED});
          }
        } else if (cur.status() != icr::v1::SERVICE_CONFIRMED) {
          return NotFrom(cur, what, {icr::v1::SERVICE_CONFIRMED});
        }
        *next->mutable_discharged_at() = e.occurred_at();
        next->set_in_d2a(pathway != icr::v1::PATHWAY_0);
        break;
      }
      case icr::v1::WITHDRAWN:
        *next->mutable_withdrawn_at() = e.occurred_at();
        next->set_withdrawn_reason(p.reason());
        break;
      case icr::v1::CREATED:
        return "referral " + cur.referral_id() +
               " is " + StatusName(cur.status()) +
               "; CREATED is set only by a DISCHARGE_REFERRAL event";
      case icr::v1::PLACEMENT_REQUESTED:
        return "referral " + cur.referral_id() + " is " + StatusName(cur.status()) +
               "; PLACEMENT_REQUESTED is set by a PLACEMENT_REQUEST event naming the referral, "
               "not by a status change";
      case icr::v1::OFFER_MADE:
        return "referral " + cur.referral_id() + " is " + StatusName(cur.status()) +
               "; OFFER_MADE is set by a PLACEMENT_OFFER event, not by a status change";
      case icr::v1::OFFER_ACCEPTED:
        return "referral " + cur.referral_id() + " is " + StatusName(cur.status()) +
               "; OFFER_ACCEPTED is set by a PLACEMENT_ACCEPTANCE event, not by a status change";
      default:
        return "referral_status_change.status: " + StatusName(to) + " is not a referral state";
    }
    next->set_status(to);
  }
  if (new_pathway) next->set_pathway(p.pathway());
  return {};
}

std::string Request(const CareEvent& e, const Referral& cur, Referral* next) {
  const auto& p = e.placement_request();
  const std::string what = "a placement request (PLACEMENT_REQUESTED)";
  if (cur.status() != icr::v1::FORWARDED_TO_BROKERAGE) {
    std::string why = NotFrom(cur, what, {icr::v1::FORWARDED_TO_BROKERAGE});
    if (In(cur.status(), {icr::v1::PLACEMENT_REQUESTED, icr::v1::OFFER_MADE})) {
      why += " (placement request " + cur.request_id() +
             " is open: cancel it with PLACEMENT_CANCELLATION first)";
    }
    return why;
  }
  next->set_status(icr::v1::PLACEMENT_REQUESTED);
  next->set_request_id(p.request_id());
  next->set_service_type(p.service_type());
  next->clear_offer_id();
  next->clear_provider();
  if (next->place() == icr::v1::PLACE_UNSPECIFIED) next->set_place(p.place());
  *next->mutable_placement_requested_at() = e.occurred_at();
  return {};
}

std::string Offer(const CareEvent& e, const Referral& cur, Referral* next) {
  const auto& p = e.placement_offer();
  if (cur.status() != icr::v1::PLACEMENT_REQUESTED) {
    return NotFrom(cur, "a placement offer (OFFER_MADE)", {icr::v1::PLACEMENT_REQUESTED});
  }
  if (p.request_id() != cur.request_id()) {
    return "referral " + cur.referral_id() + " is waiting on placement request " +
           cur.request_id() + ", not request " + p.request_id();
  }
  next->set_status(icr::v1::OFFER_MADE);
  next->set_offer_id(p.offer_id());
  next->set_provider(p.provider());
  *next->mutable_offer_made_at() = e.occurred_at();
  return {};
}

std::string OfferAnswer(const CareEvent& e, const Referral& cur, Referral* next) {
  const bool accept = e.payload_case() == CareEvent::kPlacementAcceptance;
  const std::string& offer_id =
      accept ? e.placement_acceptance().offer_id() : e.placement_decline().offer_id();
  const std::string what = accept ? "accepting an offer (OFFER_ACCEPTED)"
                                  : "declining an offer (back to PLACEMENT_REQUESTED)";
  if (cur.status() != icr::v1::OFFER_MADE) return NotFrom(cur, what, {icr::v1::OFFER_MADE});
  if (offer_id != cur.offer_id()) {
    return "referral " + cur.referral_id() + " is waiting on offer " + cur.offer_id() +
           ", not offer " + offer_id;
  }
  if (accept) {
    next->set_status(icr::v1::OFFER_ACCEPTED);
    *next->mutable_offer_accepted_at() = e.occurred_at();
  } else {
    next->set_status(icr::v1::PLACEMENT_REQUESTED);
    next->set_offers_declined(cur.offers_declined() + 1);
    next->clear_offer_id();
    next->clear_provider();
    next->clear_offer_made_at();
    *next->mutable_offer_window_started_at() = e.occurred_at();
  }
  return {};
}

std::string Cancel(const CareEvent& e, const Referral& cur, Referral* next) {
  const std::initializer_list<ReferralStatus> allowed = {
      icr::v1::PLACEMENT_REQUESTED, icr::v1::OFFER_MADE, icr::v1::OFFER_ACCEPTED};
  if (!In(cur.status(), allowed)) {
    return NotFrom(cur, "cancelling the placement request (back to FORWARDED_TO_BROKERAGE)",
                   allowed);
  }
  const std::string& request_id = e.placement_cancellation().request_id();
  if (request_id != cur.request_id()) {
    return "referral " + cur.referral_id() + " has placement request " + cur.request_id() +
           " open, not request " + request_id;
  }
  next->set_status(icr::v1::FORWARDED_TO_BROKERAGE);
  *next->mutable_offer_window_started_at() = e.occurred_at();  // brokerage starts again
  next->clear_request_id();
  next->clear_service_type();
  next->clear_offer_id();
  next->clear_provider();
  next->clear_placement_requested_at();
  next->clear_offer_made_at();
  next->clear_offer_accepted_at();
  return {};
}

std::string MedicallyOptimised(const CareEvent& e, const Referral& cur, Referral* next) {
  if (!IsOpen(cur.status())) {
    return "referral " + cur.referral_id() + " is " + StatusName(cur.status()) +
           " (closed); medically optimised applies to open referrals";
  }
  *next->mutable_medically_optimised_at() = e.occurred_at();
  *next->mutable_discharge_ready_date() = e.medically_optimised().discharge_ready_date();
  return {};
}

std::string Escalate(const CareEvent& e, const Referral& cur, Referral* next) {
  if (!IsOpen(cur.status()) && !cur.in_d2a()) {
    return "referral " + cur.referral_id() + " is " + StatusName(cur.status()) +
           " (closed); nothing to escalate";
  }
  const int kind = e.escalation().kind();
  auto& open = *next->mutable_open_escalations();
  if (std::find(open.begin(), open.end(), kind) == open.end()) open.Add(kind);
  return {};
}

std::string D2aEnd(const Referral& cur, Referral* next) {
  if (!cur.in_d2a()) return "referral " + cur.referral_id() + " is not in D2A capacity";
  next->set_in_d2a(false);
  return {};
}

}  // namespace

bool IsOpen(ReferralStatus status) {
  return status != icr::v1::DISCHARGED && status != icr::v1::WITHDRAWN &&
         status != icr::v1::REFERRAL_STATUS_UNSPECIFIED;
}

std::string StatusName(ReferralStatus status) {
  const std::string& name = icr::v1::ReferralStatus_Name(status);
  return name.empty() ? "status " + std::to_string(static_cast<int>(status)) : name;
}

std::string ApplyReferralEvent(const CareEvent& e, const Referral* current, Referral* next) {
  std::string problem;
  if (e.payload_case() == CareEvent::kDischargeReferral) {
    problem = Create(e, current, next);
  } else {
    std::string id = current != nullptr ? current->referral_id() : std::string();
    if (current == nullptr) {
      switch (e.payload_case()) {
        case CareEvent::kReferralStatusChange:
          return Unknown(e.referral_status_change().referral_id(),
                         "a change to " + StatusName(e.referral_status_change().status()));
        case CareEvent::kPlacementRequest:
          return Unknown(e.placement_request().referral_id(), "a placement request");
        case CareEvent::kEscalation:
          return Unknown(e.escalation().referral_id(), "an escalation");
        default:
          return "no referral for this " + icr::v1::EventType_Name(e.event_type()) + " event";
      }
    }
    *next = *current;
    switch (e.payload_case()) {
      case CareEvent::kReferralStatusChange:
        problem = StatusChange(e, *current, next);
        break;
      case CareEvent::kPlacementRequest:
        problem = Request(e, *current, next);
        break;
      case CareEvent::kPlacementOffer:
        problem = Offer(e, *current, next);
        break;
      case CareEvent::kPlacementAcceptance:
      case CareEvent::kPlacementDecline:
        problem = OfferAnswer(e, *current, next);
        break;
      case CareEvent::kPlacementCancellation:
        problem = Cancel(e, *current, next);
        break;
      case CareEvent::kMedicallyOptimised:
        problem = MedicallyOptimised(e, *current, next);
        break;
      case CareEvent::kEscalation:
        problem = Escalate(e, *current, next);
        break;
      case CareEvent::kReablementEnd:
      case CareEvent::kCarePackageEnd:
        problem = D2aEnd(*current, next);
        break;
      default:
        return icr::v1::EventType_Name(e.event_type()) + " does not change a referral";
    }
  }
  if (!problem.empty()) return problem;
  next->set_version((current != nullptr ? current->version() : 0) + 1);
  next->set_last_position(e.position());
  *next->mutable_updated_at() = e.occurred_at();
  PruneEscalations(next);
  return {};
}

}  // namespace icr::broker::workflow
