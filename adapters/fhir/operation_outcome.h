// OperationOutcome: how the FHIR adapter tells a sender what happened.
//
// Every error answer (4xx, 5xx) carries an OperationOutcome whose issues say
// what is wrong (issue.code, a FHIR IssueType), where (issue.expression, a
// FHIRPath-like location such as
// "Patient.identifier.where(system='https://fhir.nhs.uk/Id/nhs-number').value")
// and why (issue.diagnostics, human-readable, keeping the broker's own text
// for broker validation failures). Successful single-resource creates carry
// an information-severity OperationOutcome stating the stored positions.
//
// Pure functions; safe from any thread.
#pragma once

#include <string>
#include <vector>

namespace icr::adapters::fhir {

enum class IssueSeverity { kFatal, kError, kWarning, kInformation };

// The FHIR R4 IssueType codes the adapter uses.
enum class IssueType {
  kInvalid,        // "invalid": content is not valid for this endpoint
  kStructure,      // "structure": not JSON, duplicate key, wrong JSON type
  kRequired,       // "required": a required element or header is missing
  kValue,          // "value": an element's value is not acceptable
  kNotSupported,   // "not-supported": resource type, status, media type
  kTooLong,        // "too-long": body size or nesting depth over the limit
  kProcessing,     // "processing": a rule across elements failed
  kNotFound,       // "not-found": unknown path
  kTransient,      // "transient": try again later (store unavailable)
  kException,      // "exception": an internal error
  kInformational,  // "informational": success details
  kForbidden,      // "forbidden": the policy does not allow the caller this
  kLogin,          // "login": the caller has no identity the policy knows
};

const char* IssueSeverityCode(IssueSeverity severity);
const char* IssueTypeCode(IssueType type);

struct OutcomeIssue {
  IssueSeverity severity = IssueSeverity::kError;
  IssueType code = IssueType::kInvalid;
  // FHIRPath-like location of the element, e.g. "Encounter.status"; empty
  // when the problem is not in the body (a header, the whole request).
  std::string expression;
  // Human-readable explanation.
  std::string diagnostics;
};

// An OperationOutcome resource with these issues, as compact JSON text.
// Strings are emitted as valid UTF-8 (invalid sequences replaced).
std::string OperationOutcomeJson(const std::vector<OutcomeIssue>& issues);

}  // namespace icr::adapters::fhir
