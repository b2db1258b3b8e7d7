#include "broker/governance/scope.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace icr::broker::governance {

namespace {

std::string Upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

int TypeOf(const icr::v1::CareEvent& event) {
  return event.payload_case() != icr::v1::CareEvent::PAYLOAD_NOT_SET
             ? static_cast<int>(event.payload_case())
             : static_cast<int>(event.event_type());
}

// event_type first, the payload case only when it is unset (a purged stub
// keeps event_type and loses its payload).
int StoredTypeOf(const icr::v1::CareEvent& event) {
  return event.event_type() != icr::v1::EVENT_TYPE_UNSPECIFIED
             ? static_cast<int>(event.event_type())
             : static_cast<int>(event.payload_case());
}

std::string TypeName(int type) {
  const auto* value = icr::v1::EventType_descriptor()->FindValueByNumber(type);
  return value != nullptr ? value->name() : std::to_string(type);
}

template <typename Set, typename Name>
std::string Allowed(const Set& set, Name name) {
  if (set.empty()) return "none";
  std::string out;
  for (const auto& item : set) {
    if (!out.empty()) out += ", ";
    out += name(item);
  }
  return out;
}

}  // namespace

std::string CheckPublish(const Principal& principal, const icr::v1::CareEvent& event) {
  const int type = TypeOf(event);
  if (!principal.publish.all_types && !principal.publish.event_types.count(type)) {
    return "principal '" + principal.id + "' may not publish " + TypeName(type) +
           " (policy allows: " + Allowed(principal.publish.event_types, TypeName) + ")";
  }
  if (principal.publish.all_source_organisations) return "";
  const std::string org = Upper(event.source_organisation());
  const std::set<std::string> own = {principal.organisation};
  const std::set<std::string>& allowed =
      principal.publish.source_organisations.empty() ? own : principal.publish.source_organisations;
  if (!allowed.count(org)) {
    return "principal '" + principal.id + "' may not publish as organisation '" + org +
           "' (policy allows: " + Allowed(allowed, [](const std::string& s) { return s; }) + ")";
  }
  return "";
}

bool InSubscribeScope(const Principal& principal, const icr::v1::CareEvent& event,
                      const RelationshipFn& related) {
  const SubscribeScope& s = principal.subscribe;
  if (!s.all_types && !s.event_types.count(StoredTypeOf(event))) return false;
  if (!s.places.empty() && !s.places.count(static_cast<int>(event.place()))) return false;
  if (s.addressed_to.empty()) return true;

  if (event.has_addressee()) {
    const std::string org = Upper(event.addressee().organisation());
    if (s.addressed_to.count(org) ||
        s.addressed_to.count(org + "/" + event.addressee().team_code())) {
      return true;
    }
  }
  if (s.own_organisation && Upper(event.source_organisation()) == principal.organisation) {
    return true;
  }
  return s.care_relationship && related && related(event.nhs_number(), principal.organisation);
}

}  // namespace icr::broker::governance
