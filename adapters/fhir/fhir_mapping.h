// FHIR R4 JSON -> CareEvents: the mapping behind the FHIR endpoint.
//
// Accepts one Patient, Encounter, ServiceRequest or Task (POST
// /fhir/r4/<Type>), or a Bundle of type message, transaction or batch
// (POST /fhir/r4). The profile (which elements are read, which code systems
// and extensions are understood, how statuses become event types) is
// documented in docs/adapters/fhir.md; the constants below are its systems.
// Elements the profile does not read are ignored. Elements it reads must
// have the right JSON type and an accepted value, else the request gets an
// issue naming the element with a FHIRPath-like expression.
//
// The JSON is parsed strictly first (fhir_json.h): nesting deeper than
// RequestContext::max_json_depth and duplicate object keys are refused
// before any DOM is built beyond the limit.
//
// Mapping fills every envelope field the broker requires (source system and
// organisation from headers or the MessageHeader, care setting, source
// message id, NHS number, occurred_at, priority) but does not apply the
// broker's ingest rules: broker::Ingest does that, and IssueFromBrokerError
// turns its message back into the FHIR element it came from.
//
// Pure functions; nothing throws (except std::bad_alloc). Safe from any
// thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/fhir/operation_outcome.h"
#include "icr/v1/events.pb.h"

namespace icr::adapters::fhir {

// --- Systems of UK Core and the NHS ------------------------------------------
inline constexpr char kNhsNumberSystem[] = "https://fhir.nhs.uk/Id/nhs-number";
inline constexpr char kOdsOrganisationSystem[] = "https://fhir.nhs.uk/Id/ods-organization-code";
inline constexpr char kOdsSiteSystem[] = "https://fhir.nhs.uk/Id/ods-site-code";
inline constexpr char kUkCoreAdmissionMethodExtension[] =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AdmissionMethod";
inline constexpr char kUkCoreDischargeDestinationSystem[] =
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-DischargeDestinationEngland";
inline constexpr char kHl7DischargeDispositionSystem[] =
    "http://terminology.hl7.org/CodeSystem/discharge-disposition";
inline constexpr char kHl7ParticipationTypeSystem[] =
    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";

// --- The broker's own profile (illustrative URLs under icr-broker.example) ----
#define ICR_FHIR_BASE "https://icr-broker.example/fhir"
inline constexpr char kRequestTypeSystem[] = ICR_FHIR_BASE "/CodeSystem/request-type";
inline constexpr char kDischargePathwaySystem[] = ICR_FHIR_BASE "/CodeSystem/discharge-pathway";
inline constexpr char kServiceTypeSystem[] = ICR_FHIR_BASE "/CodeSystem/service-type";
inline constexpr char kPlaceSystem[] = ICR_FHIR_BASE "/CodeSystem/place";
inline constexpr char kReferralStatusSystem[] = ICR_FHIR_BASE "/CodeSystem/referral-status";
inline constexpr char kDischargeDestinationSystem[] =
    ICR_FHIR_BASE "/CodeSystem/discharge-destination";
inline constexpr char kTeamCodeSystem[] = ICR_FHIR_BASE "/Id/team-code";
inline constexpr char kPlaceExtension[] = ICR_FHIR_BASE "/StructureDefinition/place";
inline constexpr char kCareNeedsExtension[] = ICR_FHIR_BASE "/StructureDefinition/care-needs";
inline constexpr char kCallsPerDayExtension[] = ICR_FHIR_BASE "/StructureDefinition/calls-per-day";
inline constexpr char kExpectedDischargeDateExtension[] =
    ICR_FHIR_BASE "/StructureDefinition/expected-discharge-date";
inline constexpr char kWardContactExtension[] = ICR_FHIR_BASE "/StructureDefinition/ward-contact";
inline constexpr char kDischargePathwayExtension[] =
    ICR_FHIR_BASE "/StructureDefinition/discharge-pathway";
// On transaction/batch-response entries: the stored event's id and position.
inline constexpr char kBrokerEventExtension[] = ICR_FHIR_BASE "/StructureDefinition/broker-event";
#undef ICR_FHIR_BASE

// What the HTTP layer knows about a request.
struct RequestContext {
  // X-ICR-Source-System / X-ICR-Source-Organisation headers; "" when not
  // sent. Required, except that a message Bundle's MessageHeader
  // (source.endpoint, sender) supplies what the headers leave out.
  std::string source_system;
  std::string source_organisation;
  // The sender's care setting (X-ICR-Care-Setting, else the server default).
  icr::v1::CareSetting care_setting = icr::v1::ACUTE;
  // Receipt time, microseconds since the Unix epoch: occurred_at of a
  // resource that carries no time of its own.
  int64_t now_micros = 0;
  // Deepest nesting of JSON objects and arrays ({} is depth 1). Default: 32.
  int max_json_depth = 32;
};

// Where a CareEvent field's value came from, so a broker validation message
// about the field can name the FHIR element (or header) instead.
struct FieldOrigin {
  std::string field;       // CareEvent path below the event, e.g. "admission.location"
  std::string expression;  // FHIRPath-like, e.g. "Encounter.location[0].location"
  std::string header;      // or the HTTP header, e.g. "X-ICR-Source-System"
};

struct MappedEvent {
  icr::v1::CareEvent event;
  // The resource it came from: "Patient", or "Bundle.entry[2].resource".
  std::string resource_expression;
  std::vector<FieldOrigin> origins;
};

// One resource of the request: the body's resource, or one Bundle entry.
struct MappedEntry {
  int index = -1;                    // Bundle.entry index; -1 for a single resource
  std::string resource_type;         // "Patient", ..., "MessageHeader"
  std::string full_url;              // Bundle.entry.fullUrl, if any
  std::vector<MappedEvent> events;   // what it maps to; empty for a message's
                                     // header and supporting resources
  std::vector<OutcomeIssue> issues;  // why it cannot be mapped (errors)
};

enum class RequestKind { kResource, kMessage, kTransaction, kBatch };

struct MappedRequest {
  RequestKind kind = RequestKind::kResource;
  // The body's resourceType ("Bundle" for bundles); "" when unreadable.
  std::string resource_type;
  // One entry for a single resource; one per Bundle.entry, in order.
  std::vector<MappedEntry> entries;
  // Problems with the request as a whole (JSON, resourceType, headers,
  // Bundle structure). When not empty, `entries` may be incomplete.
  std::vector<OutcomeIssue> issues;

  // All issues of the request and its entries, request-level first.
  std::vector<OutcomeIssue> AllIssues() const;
};

// Maps a request body. `endpoint_type` is the resource type of the path
// (POST /fhir/r4/Patient -> "Patient"), or "" for POST /fhir/r4 (a Bundle).
MappedRequest MapRequest(std::string_view body, std::string_view endpoint_type,
                         const RequestContext& context);

// Turns a broker::Ingest INVALID_ARGUMENT message about the events of one
// Publish call ("event.nhs_number: ..." or "events[3].admission...: ...")
// into an issue: expression = the FHIR element (or header) the field came
// from, diagnostics = the broker's message, code = required | too-long |
// value. `call_events` are the call's events in the order published.
OutcomeIssue IssueFromBrokerError(const std::string& message,
                                  const std::vector<const MappedEvent*>& call_events);

}  // namespace icr::adapters::fhir
