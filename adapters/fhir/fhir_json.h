// Strict JSON for the FHIR adapter: nlohmann's SAX parser driving a DOM
// builder that refuses hostile or ambiguous input while it reads.
//
//  - Nesting depth: every object and array counts one level ({} alone is
//    depth 1). Opening a container deeper than the limit stops the parse at
//    once, before anything deeper is read or built (google/fhir's recursive
//    parser overflowed its stack on ~500 levels; nlohmann's SAX parser does
//    not recurse, and this builder never holds more than `max_depth` levels).
//  - Duplicate keys in one object are an error (nlohmann's DOM parser would
//    silently keep the last one, so two readers could see different values).
//  - Anything else nlohmann's strict RFC 8259 parser refuses (trailing text,
//    bad UTF-8, bad escapes, numbers out of range) is an error.
//
// Internal to icr_adapter_fhir (it exposes nlohmann::json, a private
// dependency). Nothing here throws except std::bad_alloc.
// Thread-safety: reentrant; no shared state.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace icr::adapters::fhir {

struct JsonProblem {
  // "too-long" (nesting too deep) or "structure" (not valid JSON, duplicate
  // key): the FHIR IssueType to report.
  std::string code;
  // What and where, e.g. "duplicate JSON key 'birthDate' in $ (keys must be
  // unique)"; paths are JSONPath-like ($.name[0].given).
  std::string message;
};

// Parses `text` (one JSON value) into *out. Returns false and fills *problem
// when the text is refused; *out is then unspecified.
// REQUIRES: max_depth >= 1, out and problem not null.
bool ParseStrictJson(std::string_view text, int max_depth, nlohmann::json* out,
                     JsonProblem* problem);

}  // namespace icr::adapters::fhir
