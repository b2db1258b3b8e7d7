// The workflow's store::StateMachine: derives referrals, placement indexes,
// escalation deadlines and per-person care summaries from events, in the
// same atomic write as each event (docs/workflow.md).
//
//   store::StoreOptions options;
//   options.state_machine = workflow::NewWorkflowStateMachine(workflow_options);
//
// Keys of the `state` column family (all written only here, except teams):
//   r/<referral_id>                      -> Referral
//   o/<referral_id>                      -> "" while the referral is open
//   q/<request_id>                       -> referral_id ("" for a request without one)
//   f/<offer_id>                         -> referral_id ("" likewise)
//   p/<nhs_number>                       -> the person's newest referral_id
//   s/<nhs_number>                       -> CareSummary (accumulated: 'E'+event, 'S'+summary)
//   m/<retired nhs_number>               -> surviving nhs_number
//   d/<BE64 due micros><referral_id>\0<kind> -> "" (escalation deadlines)
//   t/<organisation>\0<team_code>        -> Team (RegisterTeam, outside events)
//
// Thread-safety: Apply runs on the store's writer thread only; Fold from any
// thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "icr/v1/workflow.pb.h"
#include "store/store.h"

namespace icr::broker::workflow {

// Deadlines that raise an Escalation (seconds after the milestone).
struct WorkflowOptions {
  // Referral accepted (a management plan) within 24 hours of the referral.
  int64_t management_plan_seconds = 24 * 3600;
  // Forwarded to brokerage within this long of the referral. Default: 60 min
  // (Coventry averaged about 30, domain.md section 3.3).
  int64_t forward_to_brokerage_seconds = 60 * 60;
  // An offer within this long of forwarding to brokerage, per pathway
  // (index 1..3; PATHWAY_0 needs no brokerage). Defaults: 1, 2 and 3 days.
  int64_t offer_seconds[4] = {0, 1 * 86400, 2 * 86400, 3 * 86400};
  // Nobody in D2A capacity beyond 6 weeks of the initial placement.
  int64_t d2a_max_seconds = 42 * 86400;
  // Told the due time (micros since the epoch) of each deadline the state
  // machine arms, so a timer can wake for it. Runs on the store's writer
  // thread before the write is durable (it may still roll back): it must be
  // cheap, must not block, and a spurious call must be harmless.
  std::function<void(int64_t due_micros)> on_deadline_armed;
};

std::shared_ptr<store::StateMachine> NewWorkflowStateMachine(const WorkflowOptions& options);

namespace keys {
inline constexpr std::string_view kReferral = "r/";
inline constexpr std::string_view kOpen = "o/";
inline constexpr std::string_view kRequest = "q/";
inline constexpr std::string_view kOffer = "f/";
inline constexpr std::string_view kPerson = "p/";
inline constexpr std::string_view kSummary = "s/";
inline constexpr std::string_view kMerged = "m/";
inline constexpr std::string_view kDeadline = "d/";
inline constexpr std::string_view kTeam = "t/";

std::string Key(std::string_view prefix, std::string_view id);
std::string TeamKey(const icr::v1::TeamRef& team);
std::string DeadlineKey(int64_t due_micros, std::string_view referral_id,
                        icr::v1::EscalationKind kind);
bool ParseDeadlineKey(std::string_view key, int64_t* due_micros, std::string* referral_id,
                      icr::v1::EscalationKind* kind);
}  // namespace keys

}  // namespace icr::broker::workflow
