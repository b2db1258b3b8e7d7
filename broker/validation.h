// Ingest validation: the rules every event must pass before anything is
// written, whichever way it came in (gRPC, HL7, FHIR, CSV).
//
// A failure names the field (its path in the proto, e.g.
// "event.discharge_referral.referrer.team_code") and the rule it broke, so a
// sender can fix the message without reading our code. Required fields are
// the ones marked [(icr.v1.required) = true] in proto/icr/v1/events.proto.
//
// Pure functions over their arguments; safe from any thread.
#pragma once

#include <cstdint>
#include <string>

#include "icr/v1/broker.pb.h"
#include "icr/v1/events.pb.h"

namespace icr::broker {

struct ValidationOptions {
  // Largest serialized event. Default: 256 KiB.
  size_t max_event_bytes = 256 * 1024;
  // Longest string field (free text included). Default: 4,000 bytes.
  size_t max_string_bytes = 4000;
  // How far occurred_at may be ahead of the broker's clock. Default: 300 s.
  int64_t max_future_skew_seconds = 300;
  // Production profile: refuse the 999 test range. Default: false.
  bool reject_test_nhs_numbers = false;
};

// Checks `event` and, when it passes, normalises it for storage: clears the
// broker-assigned fields (event_id, position, recorded_at), sets event_type
// from the payload, upper-cases ODS codes and stores PRIORITY_UNSPECIFIED as
// ROUTINE. Returns "" when valid, else "<field path>: <problem>". `path` is
// the prefix used in messages ("event", or "events[3]" in a batch).
std::string ValidateAndNormaliseEvent(icr::v1::CareEvent* event, int64_t now_micros,
                                      const ValidationOptions& options,
                                      const std::string& path = "event");

// The source_system_id of events the broker raises itself (escalations).
inline constexpr char kBrokerSourceSystem[] = "icr-broker";

// Upper-cases an ODS code and checks its shape: 3..10 of [A-Z0-9] ("" when
// valid, else "<path>: ...").
std::string OdsCodeProblem(std::string* code, const std::string& path);

// Checks a subscription filter ("" when valid).
std::string ValidateFilter(const icr::v1::EventFilter& filter);

// Checks a durable subscription name ("" when valid): 1..128 characters of
// [A-Za-z0-9._:-].
std::string ValidateSubscriptionName(const std::string& name);

}  // namespace icr::broker
