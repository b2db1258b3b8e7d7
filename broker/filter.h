// CompiledFilter: an EventFilter turned into hash sets, so matching one event
// costs a few lookups whatever the filter's size.
//
// Immutable after construction; Match is safe from any thread.
#pragma once

#include <string>
#include <unordered_set>

#include "icr/v1/broker.pb.h"

namespace icr::broker {

class CompiledFilter {
 public:
  CompiledFilter() = default;  // matches everything
  // REQUIRES: ValidateFilter(filter) is empty.
  explicit CompiledFilter(const icr::v1::EventFilter& filter);

  bool Match(const icr::v1::CareEvent& event) const;

 private:
  std::unordered_set<int> event_types_;
  std::unordered_set<int> care_settings_;
  std::unordered_set<int> priorities_;
  std::unordered_set<std::string> source_organisations_;
  std::unordered_set<std::string> nhs_numbers_;
  std::unordered_set<std::string> addressee_orgs_;   // any team of the organisation
  std::unordered_set<std::string> addressee_teams_;  // "ORG/TEAM"
};

}  // namespace icr::broker
