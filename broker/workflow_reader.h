// Reads of the workflow state that the state machine
// (broker/workflow/state_machine.h) keeps in the store: referrals, teams,
// merged NHS numbers and the composed care summary. Shared by the Workflow
// gRPC service, patient history, team routing and the escalation timer.
//
// Thread-safety: stateless functions over a thread-safe store.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "icr/v1/workflow.pb.h"
#include "store/store.h"

namespace icr::broker {

// The surviving number for `nhs` (itself when never merged).
store::Status ResolveNhsNumber(store::EventStore* store, const std::string& nhs,
                               std::string* survivor);

// The care summary of `nhs` (or of its survivor, with requested_nhs_number
// set), with the person's open referral composed in. kNotFound when the
// broker has no event about the person.
store::Status ReadCareSummary(store::EventStore* store, const std::string& nhs,
                              icr::v1::CareSummary* summary);

store::Status ReadReferral(store::EventStore* store, const std::string& referral_id,
                           icr::v1::Referral* referral);  // kNotFound

// Visits every stored referral (open and closed, without needs.summary)
// until `visit` returns false. Corruption if a record cannot be parsed.
store::Status ScanReferrals(store::EventStore* store,
                            const std::function<bool(icr::v1::Referral&&)>& visit);

// The numbers whose events are one person's history: the survivor of `nhs`
// and the numbers merged into it. Reads only the merge and summary records.
store::Status ReadPersonNumbers(store::EventStore* store, const std::string& nhs,
                                std::string* survivor, std::vector<std::string>* retired);

// Fills in needs.summary, which the stored record leaves in the creating
// event (Referral.created_position).
store::Status FillReferralNeeds(store::EventStore* store, icr::v1::Referral* referral);

store::Status ReadTeam(store::EventStore* store, const icr::v1::TeamRef& ref,
                       icr::v1::Team* team);  // kNotFound

store::Status ListAllTeams(store::EventStore* store, std::vector<icr::v1::Team>* teams);

// Whether `team` has a care relationship with the person: their registered
// GP practice, the hospital or care home caring for them now, or the
// referrer or addressee of their open referral.
bool HasCareRelationship(store::EventStore* store, const std::string& nhs,
                         const icr::v1::TeamRef& team);

// The same at the level of an organisation (any of its teams): the policy's
// care_relationship scope (broker/governance/scope.h).
bool HasCareRelationshipWithOrganisation(store::EventStore* store, const std::string& nhs,
                                         const std::string& organisation);

// "ORG/TEAM", for messages.
std::string TeamName(const icr::v1::TeamRef& ref);

}  // namespace icr::broker
