// libFuzzer target for the FHIR inbound path: JSON bytes -> strict parse
// (nesting depth, duplicate keys) -> mapping to CareEvents -> the broker's
// ingest validation -> the OperationOutcome, exactly as FhirServer runs them
// (less the socket and the store). Properties checked beyond "no crash, hang,
// leak or sanitizer report":
//  - a request is either refused with at least one issue, or yields events;
//    a single resource without issues yields at least one event;
//  - every mapped event has the envelope the broker requires filled in
//    (source system and organisation, message id, NHS number, a payload);
//  - a broker validation message about an event maps back to an issue that
//    names a FHIR element or a header;
//  - every OperationOutcome produced is valid JSON.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "adapters/fhir/fhir_mapping.h"
#include "adapters/fhir/operation_outcome.h"
#include "broker/validation.h"

using namespace icr::adapters::fhir;

namespace {

constexpr int64_t kNowMicros = 1763812800LL * 1000000;  // 2025-11-22T12:00:00Z

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property failed: %s\n", what);
    std::abort();
  }
}

void CheckOutcome(const std::vector<OutcomeIssue>& issues) {
  const std::string text = OperationOutcomeJson(issues);
  Check(nlohmann::json::accept(text), "the OperationOutcome is valid JSON");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  RequestContext context;
  context.source_system = "fuzz-epr";
  context.source_organisation = "RKB";
  context.now_micros = kNowMicros;

  // POST /fhir/r4 first; a single resource is then posted to its own type's
  // endpoint, as a sender would.
  MappedRequest request = MapRequest(body, "", context);
  const std::string type = request.resource_type;
  if (type == "Patient" || type == "Encounter" || type == "ServiceRequest" || type == "Task") {
    request = MapRequest(body, type, context);
  }
  const auto issues = request.AllIssues();
  CheckOutcome(issues);

  std::vector<const MappedEvent*> events;
  for (const auto& entry : request.entries) {
    Check(entry.issues.empty() || entry.events.empty(), "an entry with issues has no events");
    for (const auto& m : entry.events) events.push_back(&m);
  }
  if (issues.empty()) {
    Check(!events.empty(), "a request without issues yields events");
  }
  for (const MappedEvent* m : events) {
    const auto& e = m->event;
    Check(!e.source_message_id().empty(), "every event has a source message id");
    Check(!e.nhs_number().empty(), "every event has an NHS number");
    Check(e.payload_case() != icr::v1::CareEvent::PAYLOAD_NOT_SET, "every event has a payload");
    Check(!m->resource_expression.empty(), "every event names its resource");
  }
  if (!issues.empty()) return 0;

  // What the broker's ingest would say, mapped back to the FHIR element.
  const bool batch = events.size() > 1 || request.kind != RequestKind::kResource;
  for (size_t i = 0; i < events.size(); ++i) {
    icr::v1::CareEvent copy = events[i]->event;
    const std::string problem = icr::broker::ValidateAndNormaliseEvent(
        &copy, kNowMicros, icr::broker::ValidationOptions{},
        batch ? "events[" + std::to_string(i) + "]" : "event");
    if (problem.empty()) continue;
    OutcomeIssue issue = IssueFromBrokerError(problem, events);
    Check(!issue.expression.empty() || issue.diagnostics.find(" header: ") != std::string::npos,
          "a broker problem names a FHIR element or a header");
    Check(issue.diagnostics.find(problem) != std::string::npos,
          "the broker's text is kept in diagnostics");
    CheckOutcome({issue});
    break;
  }
  return 0;
}
