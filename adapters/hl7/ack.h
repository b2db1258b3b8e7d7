// Original-mode HL7 v2 acknowledgements (ACK) and the decision of which one a
// message gets.
//
//   MSH|^~\&|<orig MSH-5>|<orig MSH-6>|<orig MSH-3>|<orig MSH-4>|<now>||ACK^A01^ACK|<new id>|P|2.4
//   MSA|AE|<orig MSH-10>|<first error text, at most 80 characters>
//   ERR|PID^1^3^102&Data type error&HL70357|PID^1^3^1|102^Data type error^HL70357|E||||PID-3 ...
//
// The ACK uses the sender's own separators (MSH-1, MSH-2; the standard ones
// when the sender's include '+' or '.', which the ACK writes literally) and
// version (MSH-12). ERR-1 (the v2.3/2.4 location) and ERR-2 (ERL, v2.5) both name
// the segment, its sequence and the field; ERR-3 is the table 0357 code;
// ERR-4 the severity E; ERR-8 the text. A message whose MSH could not be
// read gets an ACK with the standard separators, version 2.5.1 and an empty
// MSA-2.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "adapters/hl7/adt_mapping.h"
#include "adapters/hl7/er7.h"
#include "adapters/hl7/hl7_error.h"
#include "store/status.h"

namespace icr::adapters::hl7 {

struct AckParams {
  // MSH-10 of the ACK (callers make it unique, e.g. NewAckControlId()).
  std::string control_id;
  // MSH-7 of the ACK, seconds since the Unix epoch (written in UTC, +0000).
  int64_t now_seconds = 0;
  // MSH-3 / MSH-4 of the ACK when the original MSH-5 / MSH-6 are empty.
  std::string application = "ICR-BROKER";
  std::string facility;
};

// Builds the ACK for `original` (fully or partly parsed, or empty).
std::string BuildAck(const Er7Message& original, AckCode code, const std::vector<Hl7Error>& errors,
                     const AckParams& params);

// The error an unparseable message is rejected with (ERR-3 100 for structure,
// 102 for data type problems).
Hl7Error ErrorFromParse(const Er7Error& e);

// The ACK for the outcome of Ingest::Publish of `mapped`'s events: AA when
// OK (duplicates included), AE naming the field for INVALID_ARGUMENT, AR with
// ERR-3 207 and the policy's reason for PERMISSION_DENIED / UNAUTHENTICATED
// (the sender is refused, not the content), AE with ERR-3 207 asking the
// sender to retry for any other failure.
std::string AckForPublish(const Er7Message& original, const MappingResult& mapped,
                          const icr::store::Status& status, const AckParams& params);

// MSA-1 of AckForPublish for `status`.
AckCode AckCodeForPublish(const icr::store::Status& status);

// Everything but the publish: parse `frame`, map it and, when it cannot be
// published, the AR/AE. Returns true with `*mapped` filled (events ready)
// when it should be published; false with `*ack` set otherwise.
bool PrepareMessage(std::string_view frame, const Er7Limits& limits,
                    const MappingOptions& options, const AckParams& params, Er7Message* msg,
                    MappingResult* mapped, std::string* ack);

// A fresh ACK control id: "ICR" + seconds + a per-process counter, at most 20
// characters (the v2.3 limit of MSH-10).
std::string NewAckControlId();

// MSA-1 and MSA-2 and the ERR-3 codes of an ACK, for tests and clients.
struct ParsedAck {
  std::string msa1;
  std::string msa2;
  std::vector<int> err_codes;
  std::vector<std::string> err_texts;   // ERR-8
  std::vector<std::string> err_fields;  // ERR-2.1 + "-" + ERR-2.3, e.g. "PID-3"
};
bool ParseAck(std::string_view ack, ParsedAck* out);

}  // namespace icr::adapters::hl7
