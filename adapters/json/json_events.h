// JSON adapter: CareEvents to and from protobuf JSON (the proto3 JSON mapping).
//
// Input accepted by ParseEvent: one JSON object in the proto3 JSON mapping of
// icr.v1.CareEvent: field names in lowerCamelCase or as in the .proto file,
// enum values by name ("DISCHARGE_REFERRAL"), Timestamps in RFC 3339
// ("2024-05-01T09:30:00Z"), 64-bit integers as numbers or strings. Unknown
// fields are rejected. Before protobuf sees the text, size and nesting depth
// are checked (JsonLimits), so hostile input cannot exhaust memory or stack.
//
// Input accepted by ReadEvents, decided by the first non-blank character:
//   '['       a JSON array of event objects (read whole; see max_array_bytes);
//   otherwise a stream of event objects: JSON Lines (one object per line) or
//             one or more objects that may span lines (a pretty-printed file).
// Every error says where: "line 3: invalid JSON event: <protobuf's reason>".
//
// Errors are values (Status below); nothing here throws.
// Thread-safety: all functions are reentrant; they share no mutable state.
#pragma once

#include <cstddef>
#include <functional>
#include <istream>
#include <string>
#include <string_view>
#include <utility>

#include "icr/v1/events.pb.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace icr::adapters::json {

// The result of an adapter call: OK, or an error with a complete,
// human-readable message. When the error comes from a position in a stream,
// line() is its 1-based line and message() already starts with "line N: ".
class Status {
 public:
  Status() = default;  // OK
  static Status Ok() { return Status(); }
  // REQUIRES: message is not empty.
  static Status Error(std::string message, size_t line = 0) {
    Status s;
    s.ok_ = false;
    s.line_ = line;
    s.message_ = std::move(message);
    return s;
  }

  bool ok() const { return ok_; }
  const std::string& message() const { return message_; }  // empty when ok
  size_t line() const { return line_; }                    // 0: not from a stream

 private:
  bool ok_ = true;
  size_t line_ = 0;
  std::string message_;
};

// Limits applied before any text reaches protobuf or nlohmann::json.
struct JsonLimits {
  // Largest single event, in bytes of JSON text. Default: 1 MiB.
  size_t max_event_bytes = size_t{1} << 20;
  // Deepest nesting of objects and arrays in one event ({} is depth 1).
  // Default: 32.
  int max_depth = 32;
  // Largest whole input in the JSON-array form, which is read into memory at
  // once (JSON Lines input is streamed and has no total limit).
  // Default: 64 MiB.
  size_t max_array_bytes = size_t{64} << 20;
};

// Checks size and nesting depth of one event's JSON text without parsing it
// (brackets inside strings are ignored). Returns OK or an error naming the
// size or depth found and the limit.
Status CheckJsonLimits(std::string_view json, const JsonLimits& limits = {});

// Parses one CareEvent from JSON text into *out (cleared first). On error the
// message names the problem, e.g. "invalid JSON event: Cannot find field:
// nhsNumbr in message icr.v1.CareEvent"; *out is then unspecified.
// Does not apply the broker's ingest rules (NHS number check, required
// fields): the broker does that.
// REQUIRES: out != nullptr.
Status ParseEvent(std::string_view json, icr::v1::CareEvent* out,
                  const JsonLimits& limits = {});

// Receives each event read, with the 1-based line on which its JSON starts.
// Returning an error stops ReadEvents, which then returns that Status as is.
using EventSink = std::function<Status(icr::v1::CareEvent&& event, size_t line)>;

// Reads events from `in` (format in the file comment) and passes each to
// `sink`, in input order. Stops at the first bad event, without passing it
// on, and returns an error with its line; events before it were passed on.
// Empty or all-blank input is OK and yields no events. A UTF-8 byte-order
// mark at the start is skipped.
Status ReadEvents(std::istream& in, const EventSink& sink, const JsonLimits& limits = {});

// Prints any message (CareEvent, PublishResponse, ...) in the proto3 JSON
// mapping: lowerCamelCase names, enums by name, default values omitted.
// pretty: indented over several lines; otherwise one line with no trailing
// newline (a JSON Lines record). Returns "" only if protobuf cannot print the
// message, which does not happen for icr.v1 messages.
std::string EventToJson(const google::protobuf::Message& message, bool pretty = false);

}  // namespace icr::adapters::json
