// The discharge referral lifecycle as a pure fold: which events may move a
// referral from which state, and what each one records (docs/workflow.md has
// the state diagram).
//
//   CREATED --accept--> ACCEPTED --forward--> FORWARDED_TO_BROKERAGE
//     --PlacementRequest--> PLACEMENT_REQUESTED --PlacementOffer--> OFFER_MADE
//     --PlacementAcceptance--> OFFER_ACCEPTED --confirm--> SERVICE_CONFIRMED
//     --discharge--> DISCHARGED
//   OFFER_MADE --PlacementDecline--> PLACEMENT_REQUESTED
//   PLACEMENT_REQUESTED/OFFER_MADE/OFFER_ACCEPTED --PlacementCancellation-->
//     FORWARDED_TO_BROKERAGE
//   any open state --withdraw--> WITHDRAWN
//   any open state --ReferralStatusChange(same status, new pathway)--> pathway changed
//   PATHWAY_0 (no new support): CREATED/ACCEPTED/SERVICE_CONFIRMED --discharge-->
//     DISCHARGED
//   MEDICALLY_OPTIMISED (same encounter), and ESCALATION, update an open
//   referral without changing its state; REABLEMENT_END / CARE_PACKAGE_END
//   end the person's D2A capacity.
//
//   std::string problem = ApplyReferralEvent(event, current_or_null, &next);
//   if (!problem.empty()) -> FAILED_PRECONDITION(problem), nothing stored
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "icr/v1/events.pb.h"
#include "icr/v1/workflow.pb.h"

namespace icr::broker::workflow {

// True for the states a referral can still leave (not DISCHARGED/WITHDRAWN).
bool IsOpen(icr::v1::ReferralStatus status);

// The state an event would move a referral to, for messages ("OFFER_MADE").
std::string StatusName(icr::v1::ReferralStatus status);

// Applies a workflow event (DISCHARGE_REFERRAL, REFERRAL_STATUS_CHANGE,
// PLACEMENT_REQUEST with a referral, PLACEMENT_OFFER, PLACEMENT_ACCEPTANCE,
// PLACEMENT_DECLINE, PLACEMENT_CANCELLATION, MEDICALLY_OPTIMISED) to the
// referral it concerns. `current` is null when the referral does not exist.
// On success returns "" and sets `*next` (version + 1, last_position,
// milestone timestamps from the event's occurred_at). Otherwise returns why
// the transition is illegal, naming the current and attempted state, e.g.
// "referral REF-1 is WITHDRAWN; a placement offer (OFFER_MADE) is allowed only
// from PLACEMENT_REQUESTED".
std::string ApplyReferralEvent(const icr::v1::CareEvent& event, const icr::v1::Referral* current,
                               icr::v1::Referral* next);

}  // namespace icr::broker::workflow
