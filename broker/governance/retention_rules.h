// RetentionRules: how long events of each type are kept before review
// (docs/governance.md, "Retention"). Read from the policy file's
// `retention:` section (policy.h); applied by the retention sweep
// (retention.h).
#pragma once

#include <cstdint>
#include <map>

namespace icr::broker::governance {

struct RetentionRules {
  // Retention per icr.v1.EventType value, in seconds after occurred_at.
  std::map<int, int64_t> seconds_by_type;
  // For types not listed. Default: 8 years (Records Management Code of
  // Practice, adult health and social care records).
  int64_t default_seconds = int64_t{8} * 365 * 86400 + 2 * 86400;
  // After an event is flagged, how long before it may be purged (the
  // review period). Default: 30 days.
  int64_t review_seconds = int64_t{30} * 86400;

  int64_t SecondsFor(int event_type) const {
    auto it = seconds_by_type.find(event_type);
    return it == seconds_by_type.end() ? default_seconds : it->second;
  }
};

}  // namespace icr::broker::governance
