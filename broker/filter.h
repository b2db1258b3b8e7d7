// CompiledFilter: an EventFilter turned into hash sets, so matching one event
// costs a few lookups whatever the filter's size.
//
// Immutable after construction; Match is safe from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "icr/v1/broker.pb.h"
#include "icr/v1/workflow.pb.h"

namespace icr::broker {

class CompiledFilter {
 public:
  CompiledFilter() = default;  // matches everything
  // REQUIRES: ValidateFilter(filter) is empty.
  explicit CompiledFilter(const icr::v1::EventFilter& filter);

  bool Match(const icr::v1::CareEvent& event) const;
  // Match without the access scope.
  bool MatchConditions(const icr::v1::CareEvent& event) const;

  // Whether the person an event is about has a care relationship with a
  // team (reads the care summary; called on the hub's thread).
  using RelationshipFn =
      std::function<bool(const icr::v1::CareEvent& event, const icr::v1::TeamRef& team)>;

  // Team routing (EventFilter.team): from now on an event must also be
  // routed to `team` (docs/workflow.md, "Routing"). `related` is used when
  // the filter asks for care_relationship.
  void SetTeam(const icr::v1::Team& team, RelationshipFn related);

  // The caller's access scope (broker/access.h): from now on an event must
  // also satisfy `scope`, whatever else matches (the policy's subscribe
  // scope, and objections for purposes beyond direct care). It may read the
  // store; it is called on the hub's thread and the stream's.
  using ScopeFn = std::function<bool(const icr::v1::CareEvent& event)>;
  void SetScope(ScopeFn scope) { scope_ = std::make_shared<const ScopeFn>(std::move(scope)); }

  // True if the event is routed to the team, whatever the other conditions.
  static bool RoutedToTeam(const icr::v1::CareEvent& event, const icr::v1::Team& team);

  // Subscription index (broker/routing.h). RoutingKeys: keys such that every
  // event this filter matches has at least one of them among its
  // EventRoutingKeys; empty when the filter must see every event. They come
  // from the most selective condition the filter has.
  std::vector<std::string> RoutingKeys() const;
  static void EventRoutingKeys(const icr::v1::CareEvent& event, std::vector<std::string>* out);

 private:
  struct TeamRoute {
    icr::v1::Team team;
    bool care_relationship = false;
    RelationshipFn related;
  };
  std::shared_ptr<const TeamRoute> team_;
  std::shared_ptr<const ScopeFn> scope_;
  bool care_relationship_ = false;
  std::unordered_set<int> event_types_;
  std::unordered_set<int> care_settings_;
  std::unordered_set<int> priorities_;
  std::unordered_set<std::string> source_organisations_;
  std::unordered_set<std::string> nhs_numbers_;
  std::unordered_set<std::string> addressee_orgs_;   // any team of the organisation
  std::unordered_set<std::string> addressee_teams_;  // "ORG/TEAM"
};

}  // namespace icr::broker
