// ER7: the pipe-delimited encoding of HL7 v2 messages, parsed without
// recursion and within fixed limits.
//
//   Er7Message msg;
//   Er7Error e = ParseEr7(bytes, Er7Limits{}, &msg);
//   if (!e.ok()) { ... e.ToString() is e.g. "PID-3: unterminated escape sequence" }
//   std::string nhs = msg.Get("PID", 3, /*rep=*/1, /*comp=*/1);
//
// What is accepted:
//  - The first segment is MSH. MSH-1 (the character after "MSH") is the field
//    separator, MSH-2 the encoding characters: component, repetition, escape,
//    subcomponent and, from v2.7, an optional truncation character (accepted,
//    then treated as ordinary data). All must be distinct printable ASCII
//    punctuation.
//  - Segments end with CR; LF and CRLF are tolerated and empty lines skipped.
//    A UTF-8 byte order mark and blank lines before MSH are skipped.
//  - Segment names are three characters, [A-Z][A-Z0-9][A-Z0-9]. One message
//    per input: a second MSH, or a BHS/FHS batch, is an error.
//  - Escape sequences \F\ \S\ \T\ \R\ \E\ and \Xhh..\ are decoded by Get();
//    the formatting and character-set sequences (\H\ \N\ \.br\ \Cxxyy\ and
//    \Mxxyyzz\ \Zxx\ and the like) are accepted and dropped; anything else (an unknown
//    letter, an unterminated sequence, odd or non-hex \X digits) is an error
//    found at parse time, so Get() never fails.
//  - XML-encoded HL7 (input starting with '<') is refused with its own error.
//
// Positions are HL7's, 1-based: field n of a segment is the n-th after the
// segment name, so MSH-1 is the field separator itself, MSH-2 the encoding
// characters (both returned raw) and MSH-3 the sending application.
//
// Limits (Er7Limits) bound memory and time: message bytes, segments, fields
// per segment, repetitions per field. Every step is a loop over the input;
// nothing recurses.
//
// Thread-safety: an Er7Message is immutable after ParseEr7; const methods may
// be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace icr::adapters::hl7 {

struct Er7Limits {
  // Largest message in bytes. Default: 1 MiB.
  size_t max_message_bytes = 1 << 20;
  // Most segments in one message. Default: 1,000.
  size_t max_segments = 1000;
  // Most fields in one segment. Default: 256.
  size_t max_fields_per_segment = 256;
  // Most repetitions of one field. Default: 100.
  size_t max_repetitions = 100;
};

// What kind of problem a parse error is, so that an ACK can choose its HL7
// error code (table 0357): kStructure -> 100, kDataType -> 102.
enum class Er7ErrorKind { kNone, kStructure, kDataType };

// A parse error: where and what. ok() when there was none.
struct Er7Error {
  Er7ErrorKind kind = Er7ErrorKind::kNone;
  std::string segment;      // "PID"; "" when the problem is the whole message
  int segment_index = 0;    // 1-based position of the segment in the message; 0: none
  int occurrence = 0;       // which segment of that name it is (1-based, ERR-2.2); 0: none
  int field = 0;            // 1-based HL7 field position; 0: the segment itself
  std::string problem;      // e.g. "unterminated escape sequence"

  bool ok() const { return kind == Er7ErrorKind::kNone; }
  // "PID-3: <problem>", "segment 4 (ZZ!): <problem>" or "message: <problem>".
  std::string ToString() const;
};

// The separators a message declared in MSH-1 and MSH-2.
struct Er7Delimiters {
  char field = '|';
  char component = '^';
  char repetition = '~';
  char escape = '\\';
  char subcomponent = '&';
};

class Er7Message {
 public:
  Er7Message() = default;

  const Er7Delimiters& delimiters() const { return delimiters_; }
  // Number of segments parsed.
  size_t segment_count() const { return segments_.size(); }
  // The name of segment `index` (0-based).
  std::string_view SegmentName(size_t index) const;
  // Index of the `occurrence`-th (1-based) segment named `name`, or -1.
  int FindSegment(std::string_view name, int occurrence = 1) const;
  // How many segments are named `name`.
  int CountSegments(std::string_view name) const;
  // True when an MSH segment was parsed (also after a later parse error, so
  // that an ACK can still name the sender and the control id).
  bool has_msh() const { return !segments_.empty(); }

  // The decoded value at segment-field~rep^comp&sub of the first segment
  // named `segment` (all positions 1-based). Empty when absent. MSH-1 and
  // MSH-2 are returned raw.
  std::string Get(std::string_view segment, int field, int rep = 1, int comp = 1,
                  int sub = 1) const;
  // The same for segment number `index` (0-based).
  std::string GetAt(size_t index, int field, int rep = 1, int comp = 1, int sub = 1) const;
  // The raw (still escaped) text of a whole field; empty when absent.
  std::string_view RawField(size_t index, int field) const;
  // Number of repetitions of a field (0 when empty or absent).
  int RepetitionCount(size_t index, int field) const;
  // Number of fields in segment `index` (MSH counts MSH-1 and MSH-2).
  int FieldCount(size_t index) const;

  // Decodes the escape sequences of `text` with this message's delimiters.
  // Unknown sequences are dropped (ParseEr7 has already refused them).
  std::string Unescape(std::string_view text) const;

 private:
  friend Er7Error ParseEr7(std::string_view input, const Er7Limits& limits, Er7Message* out);

  struct Span {
    uint32_t begin = 0;
    uint32_t size = 0;
  };
  struct Segment {
    Span name;
    std::vector<Span> fields;  // fields[i] is field i+1
  };

  std::string_view View(Span s) const { return std::string_view(text_).substr(s.begin, s.size); }

  std::string text_;
  Er7Delimiters delimiters_;
  std::vector<Segment> segments_;
};

// Parses `input` into `out` (replacing its contents). On error `out` keeps the
// segments parsed before the failing one (at least MSH when MSH itself was
// readable; see has_msh()).
Er7Error ParseEr7(std::string_view input, const Er7Limits& limits, Er7Message* out);

// Escapes `text` for use as one component with delimiters `d`: the five
// delimiters become \F\ \S\ \R\ \E\ \T\, CR and LF become \X0D\ \X0A\, other
// control characters a space.
std::string Er7Escape(std::string_view text, const Er7Delimiters& d);

// HL7 date/time (DTM/TS): YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ].
// A value with an offset is exact. One without is local time in
// Europe/London when `assume_london` (GMT, or BST from 01:00 UTC on the last
// Sunday of March to 01:00 UTC on the last Sunday of October; for a repeated
// hour the earlier, BST reading is taken), else UTC. Returns "" on success,
// else the problem (e.g. "'2024133' is not an HL7 date/time").
std::string ParseHl7Timestamp(std::string_view text, bool assume_london, int64_t* seconds,
                              int32_t* nanos);

// HL7 date (DT, or the date part of a DTM): YYYYMMDD exactly, or a DTM whose
// first 8 digits are taken. Returns "" on success, else the problem.
std::string ParseHl7Date(std::string_view text, int* year, int* month, int* day);

}  // namespace icr::adapters::hl7
