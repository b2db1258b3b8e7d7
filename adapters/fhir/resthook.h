// FHIR R4 rest-hook subscriptions: the broker's durable subscriptions
// delivered as FHIR Subscriptions R5 Backport ("subscription-status-r4")
// notification Bundles, POSTed over HTTP to the subscriber's endpoint.
//
//   std::unique_ptr<RestHookManager> hooks;
//   auto s = RestHookManager::Start(server->hub(), server->store(),
//                                   server->ingest()->access(), {}, &hooks);
//   RestHookSubscription sub;
//   sub.name = "ccc-hsct-uhcw";
//   sub.owner = "ccc-hsct";           // the creating caller's principal
//   sub.endpoint = "http://10.1.2.3:8080/fhir/notify";
//   sub.topic_url = "http://example.org/SubscriptionTopic/care-event";
//   sub.filter.add_event_types(icr::v1::DISCHARGE_REFERRAL);
//   s = hooks->Create(sub);           // durable: survives restarts
//   ...
//   hooks->Stop();                    // before the broker (hub, store) stops
//
// Each rest-hook is a durable subscription of the broker: its cursor, parked
// events and filter live in the store under its name like a gRPC
// subscriber's (gRPC ListSubscriptions, ListParked and ReplayParked see it),
// and the hub gives the name to the rest-hook alone, so no gRPC stream can
// consume it while the manager runs. Its definition (endpoint, headers, ...)
// is stored beside it under "resthook:" + name.
//
// Delivery: one POST in flight per subscription, events in position order
// (per person strictly, as the engine holds a person's later events until
// the earlier one is acknowledged or parked). A 2xx answer acknowledges the
// notification's events and the cursor moves on; anything else (non-2xx,
// timeout, connection error) is retried with exponential backoff and jitter;
// after max_attempts failed POSTs the events are parked (ListParked) and the
// next ones flow. Heartbeats are POSTed after heartbeat_seconds of silence.
// See docs/adapters/fhir-subscriptions.md for what a receiver gets.
//
// Governance (docs/governance.md), when the manager has the broker's
// AccessControl: every rest-hook belongs to the principal that created it
// (`owner`). Its engine applies the owner's subscribe scope under the policy
// in force (AccessControl::SubscribeScope) on top of the filter; each
// notification's events are minimised to the owner's current profile, and
// before each POST the batch is audited DELIVERED (one record per person,
// channel "fhir-resthook", detail "rest-hook <name>", the rest-hook's
// purpose and legal basis). When that audit write fails nothing is POSTed:
// the events stay in flight and are tried again with backoff (never parked
// for it). When the owner is no longer in the policy nothing at all is
// POSTed (not even heartbeats) and the status is "error". A definition
// stored before rest-hooks had owners is owned by "local-developer" when
// the broker allows development callers; otherwise it is not resumed (an
// ALERT line on stderr, status "off").
//
// Thread-safety: every RestHookManager method may be called from any thread.
// HTTP runs on the manager's own thread (one io_context); the hub's thread
// only posts work to it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "icr/v1/broker.pb.h"
#include "icr/v1/governance_types.pb.h"
#include "store/status.h"
#include "store/store.h"

namespace icr::broker {
class AccessControl;
class Hub;
}  // namespace icr::broker

namespace icr::adapters::fhir {

// The profile of the Parameters resource that opens every notification.
inline constexpr char kBackportStatusProfile[] =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4";
// The prefix of the store record holding a rest-hook's definition.
inline constexpr char kRestHookRecordPrefix[] = "resthook:";

struct RestHookSubscription {
  // Durable subscription name: 1..128 characters of [A-Za-z0-9._:-], not
  // starting with "resthook:".
  std::string name;
  // http://host[:port]/path[?query]. https is not supported (terminate TLS
  // in a local proxy).
  std::string endpoint;
  // Extra request headers, e.g. {"Authorization", "Bearer ..."}. Host,
  // Content-Type, Content-Length, Transfer-Encoding and Connection are ours.
  std::vector<std::pair<std::string, std::string>> headers;
  // Which events (validated as a gRPC subscription filter).
  icr::v1::EventFilter filter;
  // Required: the SubscriptionTopic canonical URL, echoed as "topic".
  std::string topic_url;
  // POST a heartbeat after this long without a notification; 0: never.
  // At most 86,400.
  uint32_t heartbeat_seconds = 60;
  // Failed POSTs of one notification before its events are parked. 1..100.
  uint32_t max_attempts = 8;
  // Whole-request timeout (connect, send, answer). 100..60,000.
  uint32_t timeout_ms = 5000;
  // Events per notification Bundle (backport maxCount). 1..1,000.
  uint32_t max_events_per_notification = 1;
  // Backport payload content: "full-resource" (each event as a Binary
  // holding its proto3 JSON), "id-only" (notification-event focus only) or
  // "empty" (event numbers and timestamps only).
  std::string content = "full-resource";
  // Only when the subscription is created: the first position to deliver;
  // 0 (default) means events stored from now on.
  uint64_t start_position = 0;
  // The principal that created it (its scope, profile and audit identity);
  // required when the manager has an AccessControl. "" only without one.
  std::string owner;
  // Declared with the creation (FHIR: DIRECT_CARE) and recorded on every
  // delivery's audit record; legal_basis "" -> none recorded.
  icr::v1::Purpose purpose = icr::v1::DIRECT_CARE;
  std::string legal_basis;
};

struct RestHookStatus {
  std::string name;
  std::string endpoint;
  // "active"; "error" from a failed POST (or audit write, or an owner no
  // longer in the policy) until the next successful one; "off" when the
  // stored definition could not be resumed.
  std::string status;
  uint64_t cursor = 0;  // every matching event at or below was delivered or parked
  // Events notified or parked since the subscription was created.
  uint64_t events_since_subscription_start = 0;
  uint32_t failed_attempts = 0;  // failed POSTs of the notification now pending
  uint32_t in_flight = 0;        // events of the notification now pending
  std::string last_error;        // of the last failed POST, audit write or check
  int64_t last_success_micros = 0;
};

// Knobs for the whole manager. The defaults are the production values;
// tests shorten the clocks.
struct RestHookOptions {
  // Retry backoff: initial * 2^(failures-1), capped, then +-jitter.
  uint32_t initial_backoff_ms = 1000;
  uint32_t max_backoff_ms = 300000;
  double jitter = 0.2;  // fraction, 0..0.5
  // Length of one heartbeat "second" (tests: a few ms).
  uint32_t heartbeat_unit_ms = 1000;
  // Prefixed to "Subscription/<name>" in notifications, e.g.
  // "https://icr.example.org/fhir/r4/"; empty: a relative reference.
  std::string subscription_base_url;
};

class RestHookManager {
 public:
  // Starts the manager's thread and resumes every stored rest-hook from its
  // cursor. `hub`, `store` and `access` must outlive the manager (or its
  // Stop()). `access`: the broker's access control (Ingest::access()); with
  // it every rest-hook is scoped to, minimised for and audited as its owner
  // (see above). nullptr: no policy, nothing scoped or audited (tests).
  static store::Status Start(broker::Hub* hub, store::EventStore* store,
                             broker::AccessControl* access, const RestHookOptions& options,
                             std::unique_ptr<RestHookManager>* out);
  // Without an AccessControl.
  static store::Status Start(broker::Hub* hub, store::EventStore* store,
                             std::unique_ptr<RestHookManager>* out);
  static store::Status Start(broker::Hub* hub, store::EventStore* store,
                             const RestHookOptions& options,
                             std::unique_ptr<RestHookManager>* out);

  virtual ~RestHookManager() = default;

  // Validates, stores and starts a new rest-hook. kInvalidArgument naming the
  // field ("endpoint: ...", "filter.nhs_numbers[0]: ..."); kFailedPrecondition
  // when the name is taken (by a rest-hook or a gRPC durable subscription).
  // With an AccessControl, "owner: ..." (kInvalidArgument) when the owner is
  // empty or not a principal of the policy in force; the caller (the FHIR
  // server) has identified the owner and checked its purpose.
  virtual store::Status Create(const RestHookSubscription& subscription) = 0;
  // Stops a rest-hook and deletes it with its cursor and parked events.
  // kNotFound when there is no such rest-hook.
  virtual store::Status Delete(const std::string& name) = 0;
  virtual std::vector<RestHookStatus> List() = 0;
  // The stored definition of one rest-hook; kNotFound.
  virtual store::Status Get(const std::string& name, RestHookSubscription* out) = 0;
  // Abandons in-flight POSTs (their events are redelivered after a
  // restart), persists cursors, releases the names and stops the thread.
  // Idempotent; the destructor calls it.
  virtual void Stop() = 0;
};

// Checks a definition as Create does ("" when valid, else
// "<field>: <problem>").
std::string ValidateRestHook(const RestHookSubscription& subscription);

// Parses a FHIR R4 Subscription resource in the R5 Backport style into a
// definition (see docs/adapters/fhir-subscriptions.md for the elements read).
// On kInvalidArgument *error_expression holds the element's FHIRPath-like
// location, e.g. "Subscription.channel.endpoint", and the message says why.
// The name comes from Subscription.id (left empty when absent: the caller
// assigns one). The result still has to pass Create's validation.
store::Status SubscriptionFromFhirJson(std::string_view json, RestHookSubscription* out,
                                       std::string* error_expression);

// A criteria string "CareEvent?event-type=...&addressee=..." as a filter
// (added to *out); the rules are in docs/adapters/fhir-subscriptions.md.
// "" when valid, else the problem.
std::string FilterFromCriteria(std::string_view criteria, icr::v1::EventFilter* out);

}  // namespace icr::adapters::fhir
