// JSON adapter implementation. See json_events.h for the contract.
//
// The bracket scanners below never recurse: they count depth outside strings,
// so the limits are enforced before protobuf's or nlohmann's parsers run.
#include "adapters/json/json_events.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/stringpiece.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <streambuf>
#include <vector>

namespace icr::adapters::json {
namespace {

constexpr int kEof = std::char_traits<char>::eof();

// 1048576 -> "1,048,576".
std::string WithCommas(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  const size_t len = digits.size();
  for (size_t i = 0; i < len; ++i) {
    if (i > 0 && (len - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// 1048576 -> "1 MiB"; other sizes as bytes.
std::string HumanBytes(uint64_t n) {
  if (n >= (uint64_t{1} << 20) && n % (uint64_t{1} << 20) == 0) {
    return std::to_string(n >> 20) + " MiB";
  }
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n >> 10) + " KiB";
  return WithCommas(n) + " bytes";
}

std::string SizeError(uint64_t size, uint64_t limit) {
  return "JSON event is " + WithCommas(size) + " bytes, more than the limit of " +
         WithCommas(limit) + " bytes (" + HumanBytes(limit) +
         ") per event; shorten its free-text fields";
}

std::string DepthError(int depth, int limit, bool at_least) {
  return "JSON event nests objects and arrays " + std::string(at_least ? "at least " : "") +
         std::to_string(depth) + " deep, more than the limit of " + std::to_string(limit);
}

std::string LinePrefix(size_t line) { return "line " + std::to_string(line) + ": "; }

Status LineError(size_t line, const std::string& message) {
  return Status::Error(LinePrefix(line) + message, line);
}

bool IsJsonSpace(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string DescribeChar(int c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
  char buf[16];
  snprintf(buf, sizeof(buf), "byte 0x%02X", static_cast<unsigned>(c) & 0xFFu);
  return buf;
}

// Character source over a streambuf that counts lines (1-based).
class LineCountingReader {
 public:
  explicit LineCountingReader(std::streambuf* sb) : sb_(sb) {}

  int Peek() { return sb_->sgetc(); }
  int Get() {
    int c = sb_->sbumpc();
    if (c == '\n') ++line_;
    return c;
  }
  // Skips JSON whitespace; returns the next character without consuming it.
  int SkipSpace() {
    int c = Peek();
    while (c != kEof && IsJsonSpace(c)) {
      Get();
      c = Peek();
    }
    return c;
  }
  void SkipByteOrderMark() {
    if (Peek() != 0xEF) return;
    Get();
    if (Peek() == 0xBB) Get();
    if (Peek() == 0xBF) Get();
  }
  size_t line() const { return line_; }

 private:
  std::streambuf* sb_;
  size_t line_ = 1;
};

// Follows JSON string literals byte by byte, so the scanners below can ignore
// brackets and commas inside strings.
struct JsonStringState {
  bool in_string = false;
  bool escape = false;
  // One byte inside a string (REQUIRES in_string); an unescaped quote ends it.
  void Inside(int c) {
    if (escape) {
      escape = false;
    } else if (c == '\\') {
      escape = true;
    } else if (c == '"') {
      in_string = false;
    }
  }
};

// One object of the object-stream form: its text, or why it could not be read.
Status ReadOneObject(LineCountingReader& r, const JsonLimits& limits, std::string* text,
                     size_t start_line) {
  text->clear();
  uint64_t size = 0;
  int depth = 0;
  JsonStringState str;
  bool too_big = false;
  while (true) {
    const int c = r.Get();
    if (c == kEof) {
      return LineError(start_line,
                       "unexpected end of input: the JSON object starting on this line is "
                       "not closed");
    }
    ++size;
    if (!too_big) {
      if (size > limits.max_event_bytes) {
        // Keep scanning to report the real size, but stop storing.
        too_big = true;
        std::string().swap(*text);
      } else {
        text->push_back(static_cast<char>(c));
      }
    }
    if (str.in_string) {
      if (c == '\n' && !str.escape) {
        return LineError(r.line() - 1,
                         "a JSON string is not closed before the end of the line (JSON "
                         "strings cannot contain line breaks; write them as \\n)");
      }
      str.Inside(c);
      continue;
    }
    if (c == '"') {
      str.in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limits.max_depth) {
        return LineError(start_line, DepthError(depth, limits.max_depth, true));
      }
    } else if (c == '}' || c == ']') {
      if (--depth == 0) break;
    }
  }
  if (too_big) return LineError(start_line, SizeError(size, limits.max_event_bytes));
  return Status::Ok();
}

// The object-stream form: JSON Lines or one or more (possibly multi-line)
// objects.
Status ReadObjectStream(LineCountingReader& r, const EventSink& sink, const JsonLimits& limits) {
  std::string text;
  while (true) {
    const int c = r.SkipSpace();
    if (c == kEof) return Status::Ok();
    const size_t start_line = r.line();
    if (c != '{') {
      return LineError(start_line,
                       "expected a JSON object starting with '{' but found " + DescribeChar(c) +
                           "; input must be JSON Lines (one event object per line), one "
                           "JSON event object, or a JSON array of event objects");
    }
    Status s = ReadOneObject(r, limits, &text, start_line);
    if (!s.ok()) return s;
    icr::v1::CareEvent event;
    s = ParseEvent(text, &event, limits);
    if (!s.ok()) return LineError(start_line, s.message());
    s = sink(std::move(event), start_line);
    if (!s.ok()) return s;
  }
}

size_t LineAtOffset(const std::string& text, size_t offset) {
  offset = std::min(offset, text.size());
  return 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + offset, '\n'));
}

// Scans the array form for depth (the array adds one level) and records the
// line on which each top-level element starts.
Status ScanArray(const std::string& text, const JsonLimits& limits,
                 std::vector<size_t>* element_lines) {
  size_t line = 1;
  int depth = 0;
  JsonStringState str;
  bool expecting_element = false;
  for (char ch : text) {
    const int c = static_cast<unsigned char>(ch);
    if (c == '\n') ++line;
    if (str.in_string) {
      str.Inside(c);
      continue;
    }
    if (depth == 1 && expecting_element && !IsJsonSpace(c) && c != ']') {
      element_lines->push_back(line);
      expecting_element = false;
    }
    if (c == '"') {
      str.in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
      if (depth == 1) expecting_element = true;
      if (depth > limits.max_depth + 1) {
        return LineError(line, DepthError(depth - 1, limits.max_depth, true) +
                                   " (in array element " +
                                   std::to_string(element_lines->size()) + ")");
      }
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expecting_element = true;
    }
  }
  return Status::Ok();
}

std::string NlohmannReason(const std::exception& e) {
  // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
  std::string what = e.what();
  if (!what.empty() && what[0] == '[') {
    const size_t end = what.find("] ");
    if (end != std::string::npos) what.erase(0, end + 2);
  }
  return what;
}

const char* JsonTypeName(const nlohmann::json& j) { return j.type_name(); }

// Makes protobuf's reason one line and, for a bad enum name, lists the valid
// names: `(care_setting): invalid value "HOSPITAL" for type
// type.googleapis.com/icr.v1.CareSetting` gets "; valid values: GP, ACUTE, ...".
std::string ExplainProtobufError(std::string_view reason) {
  std::string out;
  bool space = false;
  for (char c : reason) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  if (!out.empty() && out.back() == '^') {  // protobuf's caret under the error
    out.pop_back();
    while (!out.empty() && out.back() == ' ') out.pop_back();
  }
  static constexpr std::string_view kTypePrefix = "for type type.googleapis.com/";
  const size_t at = out.find(kTypePrefix);
  if (at != std::string::npos) {
    const std::string type_name = out.substr(at + kTypePrefix.size());
    const google::protobuf::EnumDescriptor* e =
        google::protobuf::DescriptorPool::generated_pool()->FindEnumTypeByName(type_name);
    if (e != nullptr) {
      std::string names;
      for (int i = 0; i < e->value_count(); ++i) {
        const std::string& name = e->value(i)->name();
        if (e->value(i)->number() == 0) continue;  // *_UNSPECIFIED: not a useful choice
        if (!names.empty()) names += ", ";
        names += name;
      }
      out += "; valid values: " + names;
    }
  }
  return out;
}

// The array form: the whole input is one JSON array of event objects.
Status ReadArray(LineCountingReader& r, std::streambuf* sb, const JsonLimits& limits,
                 const EventSink& sink) {
  // The reader has only skipped whitespace and a byte-order mark; the '[' is
  // still unread, so read the rest of the stream in chunks.
  const size_t first_line = r.line();
  std::string text(first_line - 1, '\n');  // keep line numbers right
  const size_t max_total = limits.max_array_bytes;
  char chunk[1 << 16];
  while (true) {
    const std::streamsize n = sb->sgetn(chunk, sizeof(chunk));
    if (n <= 0) break;
    text.append(chunk, static_cast<size_t>(n));
    if (text.size() > max_total + first_line) {
      return LineError(first_line, "the JSON array input is more than " +
                                       HumanBytes(max_total) +
                                       ", the limit for the array form; write one event per "
                                       "line instead (JSON Lines has no total limit)");
    }
  }
  std::vector<size_t> element_lines;
  Status s = ScanArray(text, limits, &element_lines);
  if (!s.ok()) return s;

  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    const size_t line = LineAtOffset(text, e.byte > 0 ? e.byte - 1 : 0);
    return LineError(line, "invalid JSON array: " + NlohmannReason(e));
  } catch (const std::exception& e) {
    return LineError(first_line, "invalid JSON array: " + NlohmannReason(e));
  }
  std::string().swap(text);
  if (!doc.is_array()) {
    return LineError(first_line, "expected a JSON array of event objects");
  }

  icr::v1::CareEvent event;
  for (size_t i = 0; i < doc.size(); ++i) {
    const size_t line = i < element_lines.size() ? element_lines[i] : first_line;
    const std::string where = "array element " + std::to_string(i + 1) + ": ";
    nlohmann::json& element = doc[i];
    if (!element.is_object()) {
      return LineError(line, where + "expected an event object but found a JSON " +
                                 JsonTypeName(element));
    }
    std::string element_text;
    try {
      element_text = element.dump();
    } catch (const std::exception& e) {
      return LineError(line, where + "cannot re-encode the element: " + NlohmannReason(e));
    }
    element = nullptr;  // free memory as we go
    s = ParseEvent(element_text, &event, limits);
    if (!s.ok()) return LineError(line, where + s.message());
    s = sink(std::move(event), line);
    if (!s.ok()) return s;
    event.Clear();
  }
  return Status::Ok();
}

}  // namespace

Status CheckJsonLimits(std::string_view json, const JsonLimits& limits) {
  if (json.size() > limits.max_event_bytes) {
    return Status::Error(SizeError(json.size(), limits.max_event_bytes));
  }
  int depth = 0;
  int max_depth = 0;
  JsonStringState str;
  for (char c : json) {
    if (str.in_string) {
      str.Inside(c);
      continue;
    }
    if (c == '"') {
      str.in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  if (max_depth > limits.max_depth) {
    return Status::Error(DepthError(max_depth, limits.max_depth, false));
  }
  return Status::Ok();
}

Status ParseEvent(std::string_view json, icr::v1::CareEvent* out, const JsonLimits& limits) {
  Status s = CheckJsonLimits(json, limits);
  if (!s.ok()) return s;
  out->Clear();
  if (json.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return Status::Error("invalid JSON event: the input is empty");
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  options.case_insensitive_enum_parsing = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), out, options);
  if (!status.ok()) {
    return Status::Error("invalid JSON event: " +
                         ExplainProtobufError({status.message().data(), status.message().size()}));
  }
  return Status::Ok();
}

Status ReadEvents(std::istream& in, const EventSink& sink, const JsonLimits& limits) {
  std::streambuf* sb = in.rdbuf();
  if (sb == nullptr) return Status::Error("cannot read events: the input stream has no buffer");
  LineCountingReader reader(sb);
  reader.SkipByteOrderMark();
  const int first = reader.SkipSpace();
  if (first == kEof) return Status::Ok();
  if (first == '[') return ReadArray(reader, sb, limits, sink);
  return ReadObjectStream(reader, sink, limits);
}

std::string EventToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.always_print_primitive_fields = false;
  options.always_print_enums_as_ints = false;
  options.preserve_proto_field_names = false;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace icr::adapters::json
