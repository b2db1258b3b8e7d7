// Data minimisation: what a recipient sees of an event or a care summary,
// given its principal's profile (policy.h, docs/governance.md
// "Minimisation"). Applied to every event delivered or read and every care
// summary disclosed, after the scope checks (scope.h).
//
// Sensitive items (withheld unless the profile allows their category, even
// inside fields the profile keeps):
//   SAFEGUARDING: CareNeeds.safeguarding_detail wherever CareNeeds appears;
//     CareFlags.safeguarding; entries of CareSummaryContribution.alerts and
//     CareSummary.alerts that mention safeguarding (case-insensitive,
//     ignoring spaces, underscores and hyphens: "Safe-guarding concern");
//     any icr.v1.Code whose sensitivity is SAFEGUARDING.
//   SEXUAL_HEALTH: any Code whose sensitivity is SEXUAL_HEALTH.
//   MENTAL_HEALTH_DETENTION: MentalHealthEpisodeStart.detained, and any Code
//     whose sensitivity is MENTAL_HEALTH_DETENTION.
// A Code with a sensitivity value this build does not know is withheld
// from every profile that does not allow all three categories. Codes are
// found by reflection at any depth (singular or repeated), so fields added
// later are covered. Unknown fields (from a newer schema) cannot be
// classified and are dropped by every profile that removes anything.
//
// Pure functions of their arguments; safe from any thread on distinct
// messages.
#pragma once

#include <string>
#include <vector>

#include "broker/governance/policy.h"
#include "icr/v1/events.pb.h"
#include "icr/v1/workflow.pb.h"

namespace icr::broker::governance {

// Removes from `event` every payload field outside the profile and every
// sensitive item whose category the profile does not allow. The envelope
// (every CareEvent field outside the payload oneof) is always kept. A
// payload the profile does not mention at all is cleared (the event keeps
// event_type, so the recipient knows what happened). A profile path keeps
// that field whole ("placement_request.needs"); a path below a message
// keeps the message with only the fields named below it. No-op for a
// full() profile. Idempotent.
void MinimiseEvent(const Profile& profile, icr::v1::CareEvent* event);

// Keeps only the profile's summary fields (plus nhs_number,
// requested_nhs_number, retired_nhs_numbers, last_position and events,
// which are always kept), and removes sensitive items: flags.safeguarding
// unless SAFEGUARDING is allowed, alerts mentioning safeguarding likewise,
// Codes (allergies) whose sensitivity is not allowed, and
// open_referral.needs.safeguarding_detail. No-op for a full() profile.
void MinimiseSummary(const Profile& profile, icr::v1::CareSummary* summary);

// What MinimiseEvent would remove, as paths in the order it removes them:
// "placement_request.needs.safeguarding_detail", a whole payload
// ("discharge_referral"), or an element of a repeated field
// ("care_summary_contribution.allergies[1]", its index before removal).
// Unknown fields are not listed. For tests and audit detail.
std::vector<std::string> RemovedPaths(const Profile& profile, const icr::v1::CareEvent& event);

}  // namespace icr::broker::governance
