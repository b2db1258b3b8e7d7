// Publish and subscribe scopes: whether a principal may publish an event,
// and whether an event is within what a principal may receive
// (docs/governance.md, "Scopes"). The broker checks CheckPublish after
// validating an event and before storing it, and InSubscribeScope before
// delivering an event, on top of the subscriber's own filter.
//
// Pure functions of their arguments; safe from any thread.
#pragma once

#include <functional>
#include <string>

#include "broker/governance/policy.h"
#include "icr/v1/events.pb.h"

namespace icr::broker::governance {

// "" if `principal` may publish `event`, else the reason, e.g.
// "principal 'gp-system' may not publish as organisation 'RKB' (policy
// allows: M12345)" or "principal 'x' may not publish DISCHARGE_REFERRAL
// (policy allows: ADMISSION, DISCHARGE)".
//
// The event type must be allowed (publish.all_types or in
// publish.event_types), and the event's source_organisation (compared
// upper-case) must be one the principal may publish as: any if
// publish.all_source_organisations, else those in
// publish.source_organisations, or, when that is empty, the principal's own
// organisation. The type is the payload case (event_type when no payload is
// set).
// REQUIRES: the event has passed validation (source_organisation
// normalised to upper case).
std::string CheckPublish(const Principal& principal, const icr::v1::CareEvent& event);

// Whether the person an event is about has a care relationship with an
// organisation (e.g. from the care summary).
using RelationshipFn =
    std::function<bool(const std::string& nhs_number, const std::string& organisation)>;

// Whether `event` is within what `principal` may receive. With
// s = principal.subscribe and ORG(x) = x upper-cased, true exactly when all
// three hold:
//   1. type:  s.all_types, or event.event_type (the payload case when
//             event_type is unset) is in s.event_types;
//   2. place: s.places is empty, or event.place is in s.places (an event
//             with no Place is then outside the scope);
//   3. addressee: s.addressed_to is empty, or any of
//        a. event.addressee is set and matches an entry of s.addressed_to:
//           an entry "ORG" matches any team of that organisation
//           (ORG(addressee.organisation) == "ORG"); an entry "ORG/TEAM"
//           matches that team exactly (ORG(addressee.organisation) == "ORG"
//           and addressee.team_code == "TEAM");
//        b. s.own_organisation and ORG(event.source_organisation) ==
//           principal.organisation;
//        c. s.care_relationship and related(event.nhs_number,
//           principal.organisation).
// `related` is called only in case c, after a and b failed; it may be empty
// when s.care_relationship is false.
bool InSubscribeScope(const Principal& principal, const icr::v1::CareEvent& event,
                      const RelationshipFn& related);

}  // namespace icr::broker::governance
