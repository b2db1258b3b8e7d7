// Policy: who may connect to the broker and what each caller may do
// (docs/governance.md). A principal is named by its client certificate's CN
// and must belong to the organisation in the certificate's O; the policy
// grants it event types to publish (and the organisations it may publish
// as), the events it may receive, the purposes it may declare, the queries
// it may make, and the minimisation profile applied to everything it reads
// (minimise.h). The policy also carries the retention rules.
//
// The policy file is YAML:
//
//   profiles:                      # minimisation profiles, by name
//     FULL:                        # built in unless the file defines it
//       fields: ["*"]
//       summary: ["*"]
//       sensitive: [SAFEGUARDING, SEXUAL_HEALTH, MENTAL_HEALTH_DETENTION]
//     BROKERAGE:
//       # Payload fields the profile keeps: "*" (all), a payload
//       # ("placement_acceptance": all of it), or a path into one
//       # ("placement_request.needs", "placement_request.needs.dementia").
//       # The first component is a CareEvent payload field name, the others
//       # fields of the nested messages. A payload not mentioned is cleared
//       # (the event keeps its envelope and event_type).
//       fields: [placement_request.request_id, placement_request.needs, placement_offer]
//       # Top-level CareSummary fields kept: "*" or names ("location",
//       # "open_referral", "care_package", "flags", ...). nhs_number,
//       # requested_nhs_number, retired_nhs_numbers, last_position and
//       # events are always kept.
//       summary: [location, open_referral, care_package]
//       # SensitiveCategory names the profile may see ("*": all three);
//       # sensitive items are withheld otherwise, even inside kept fields.
//       sensitive: []
//     NONE: {}                     # keeps nothing (e.g. operators)
//   principals:
//     - id: cov-brokerage          # Required: the certificate CN, 1..64 of [a-z0-9-]
//       organisation: "COV01"      # Required: ODS code ([A-Z0-9]{3,10}), = certificate O
//       role: BROKERAGE            # free text, recorded in audit
//       profile: BROKERAGE         # Required: a profile name
//       publish:                   # absent: may publish nothing
//         event_types: [PLACEMENT_OFFER, PLACEMENT_CANCELLATION]   # EventType names or "*"
//         source_organisations: [COV01]   # ODS codes or "*"; absent/empty: own organisation only
//       subscribe:                 # absent: may receive nothing
//         event_types: [PLACEMENT_REQUEST, ESCALATION]   # EventType names or "*"
//         places: [COVENTRY]       # Place names; absent/empty: any Place
//         addressed_to: ["COV01", "COV01/BROKERAGE"]   # "ORG" or "ORG/TEAM"; absent: no condition
//         own_organisation: false  # also its own organisation's events (needs addressed_to)
//         care_relationship: false # also people in its care (needs addressed_to)
//       purposes: [DIRECT_CARE]    # Purpose names or "*"; absent: [DIRECT_CARE]
//       legal_basis: "UK GDPR 6(1)(e), 9(2)(h)"   # default for its reads, audited
//       queries: [care_summary, referrals]   # or "*"; see kQueryNames
//       max_connections: 8         # 0 or absent: no limit
//   retention:                     # absent: RetentionRules defaults
//     default: 8y                  # durations: <n>y (365 days), d, h, m, s
//     review: 30d
//     types: { DEMOGRAPHICS_UPDATE: 8y, ED_ATTENDANCE: 8y }
//
// A built-in FULL profile (every field, every summary field, every sensitive
// category) exists unless the file defines its own FULL. Event types,
// Places, Purposes and sensitive categories use the icr.v1 enum names.
// Unknown keys, duplicate keys or principal ids, unknown names and bad
// values are errors naming the file, the line and the key path; a policy
// that has one is not loaded at all.
//
// Thread-safety: a Policy is immutable once built; share it through
// shared_ptr<const Policy> and read it from any thread. PolicyHolder swaps
// the policy in force on reload (readers keep the snapshot they took).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "broker/governance/retention_rules.h"
#include "store/status.h"

namespace icr::broker::governance {

// The queries a principal may be granted (Principal::queries).
inline constexpr std::string_view kQueryNames[] = {
    "patient_history", "care_summary", "referrals", "flow_metrics", "teams",
    "subscriptions",   "status",       "audit",     "retention",    "policy"};

// A minimisation profile: what a recipient may see of events and care
// summaries (minimise.h).
struct Profile {
  std::string name;
  bool all_fields = false;  // "*": every payload field
  // Allowed payload paths, e.g. "placement_request",
  // "placement_request.needs.dementia".
  std::set<std::string> fields;
  std::set<int> sensitive;   // icr.v1.SensitiveCategory values allowed
  bool all_summary = false;  // "*": every CareSummary field
  // Allowed top-level CareSummary fields, e.g. "location", "open_referral",
  // "flags".
  std::set<std::string> summary_fields;
  // Nothing is ever removed: all fields, all summary fields, all three
  // sensitive categories.
  bool full() const;
};

// What a principal may publish (scope.h, CheckPublish).
struct PublishScope {
  bool all_types = false;
  std::set<int> event_types;  // icr.v1.EventType values
  // ODS codes it may publish as; empty = only its own organisation.
  std::set<std::string> source_organisations;
  // "*" in source_organisations: any organisation (the development policy).
  bool all_source_organisations = false;
};

// What a principal may receive (scope.h, InSubscribeScope).
struct SubscribeScope {
  bool all_types = false;
  std::set<int> event_types;  // icr.v1.EventType values
  std::set<int> places;       // icr.v1.Place values; empty: any Place
  // "ORG" or "ORG/TEAM"; empty: no addressee condition.
  std::set<std::string> addressed_to;
  // With addressed_to: also events its own organisation published.
  bool own_organisation = false;
  // With addressed_to: also events about people with a care relationship to
  // its organisation.
  bool care_relationship = false;
};

struct Principal {
  std::string id;                          // the certificate's CN
  std::string organisation;                // ODS code; must equal the certificate's O
  std::string role;                        // free text for audit, e.g. "BROKERAGE"
  std::shared_ptr<const Profile> profile;  // never null in a parsed policy
  PublishScope publish;
  SubscribeScope subscribe;
  std::set<int> purposes;  // icr.v1.Purpose values it may declare; default {DIRECT_CARE}
  std::string default_legal_basis;
  std::set<std::string> queries;  // names from kQueryNames
  uint32_t max_connections = 0;   // 0: no limit
  bool HasQuery(std::string_view q) const;
};

class Policy {
 public:
  // Parses YAML text; `source` names it in errors. Errors are
  // kInvalidArgument naming the source, the line and the key path, e.g.
  // "policy.yaml:14: principals[2].subscribe.places[0]: 'LONDON' is not a
  // Place (COVENTRY, RUGBY, WARWICKSHIRE_NORTH, SOUTH_WARWICKSHIRE)".
  // On error *out is left untouched.
  static store::Status Parse(std::string_view yaml, const std::string& source,
                             std::shared_ptr<const Policy>* out);
  // Reads and parses a file; `path` is the source in errors. A missing file
  // is kNotFound, an unreadable one kUnavailable, both naming the path.
  static store::Status Load(const std::string& path, std::shared_ptr<const Policy>* out);
  // The development policy: one principal "local-developer" (organisation
  // "DEV", role "DEVELOPER") that may publish every event type as any
  // organisation, receive every event, declare every purpose and make every
  // query, with profile FULL. Used when the broker runs without TLS on
  // loopback. source() is "<development>".
  static std::shared_ptr<const Policy> Development();

  // nullptr if no principal has this id.
  const Principal* Find(std::string_view id) const;
  const RetentionRules& retention() const { return retention_; }
  size_t principal_count() const { return principals_.size(); }
  size_t profile_count() const { return profiles_.size(); }
  const std::string& source() const { return source_; }

  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

 private:
  Policy() = default;
  friend class PolicyParser;

  std::string source_;
  std::map<std::string, std::shared_ptr<const Profile>> profiles_;
  std::map<std::string, Principal, std::less<>> principals_;
  RetentionRules retention_;
};

// Thread-safe holder of the policy in force: readers take a shared_ptr
// snapshot; Reload() re-reads the file and swaps only if it parses (returns
// the error otherwise and keeps the old one). All methods are safe from any
// thread; concurrent Reload()s are serialised.
class PolicyHolder {
 public:
  // REQUIRES: initial != nullptr. path "" = not reloadable (Reload returns
  // kFailedPrecondition).
  explicit PolicyHolder(std::shared_ptr<const Policy> initial, std::string path = "");

  PolicyHolder(const PolicyHolder&) = delete;
  PolicyHolder& operator=(const PolicyHolder&) = delete;

  std::shared_ptr<const Policy> Get() const;
  store::Status Reload();
  // 1, then +1 per successful reload.
  uint64_t version() const;
  const std::string& path() const { return path_; }

 private:
  const std::string path_;
  std::mutex reload_mu_;   // serialises Reload (held while reading the file)
  mutable std::mutex mu_;  // guards policy_ and version_
  std::shared_ptr<const Policy> policy_;
  uint64_t version_ = 1;
};

}  // namespace icr::broker::governance
