// OperationOutcome JSON; see operation_outcome.h.
#include "adapters/fhir/operation_outcome.h"

#include <nlohmann/json.hpp>

namespace icr::adapters::fhir {

const char* IssueSeverityCode(IssueSeverity severity) {
  switch (severity) {
    case IssueSeverity::kFatal:
      return "fatal";
    case IssueSeverity::kError:
      return "error";
    case IssueSeverity::kWarning:
      return "warning";
    case IssueSeverity::kInformation:
      return "information";
  }
  return "error";
}

const char* IssueTypeCode(IssueType type) {
  switch (type) {
    case IssueType::kInvalid:
      return "invalid";
    case IssueType::kStructure:
      return "structure";
    case IssueType::kRequired:
      return "required";
    case IssueType::kValue:
      return "value";
    case IssueType::kNotSupported:
      return "not-supported";
    case IssueType::kTooLong:
      return "too-long";
    case IssueType::kProcessing:
      return "processing";
    case IssueType::kNotFound:
      return "not-found";
    case IssueType::kTransient:
      return "transient";
    case IssueType::kException:
      return "exception";
    case IssueType::kInformational:
      return "informational";
    case IssueType::kForbidden:
      return "forbidden";
    case IssueType::kLogin:
      return "login";
  }
  return "invalid";
}

std::string OperationOutcomeJson(const std::vector<OutcomeIssue>& issues) {
  nlohmann::json outcome = {{"resourceType", "OperationOutcome"}};
  nlohmann::json& list = outcome["issue"] = nlohmann::json::array();
  for (const auto& i : issues) {
    nlohmann::json issue = {{"severity", IssueSeverityCode(i.severity)},
                            {"code", IssueTypeCode(i.code)}};
    if (!i.diagnostics.empty()) issue["diagnostics"] = i.diagnostics;
    if (!i.expression.empty()) issue["expression"] = nlohmann::json::array({i.expression});
    list.push_back(std::move(issue));
  }
  if (list.empty()) {  // OperationOutcome.issue is 1..*
    list.push_back({{"severity", "information"}, {"code", "informational"}});
  }
  return outcome.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace icr::adapters::fhir
