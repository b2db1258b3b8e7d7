// HL7 acknowledgement codes and error descriptions shared by the mapping
// (which finds problems) and the ACK builder (which reports them).
//
// Plain values; safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace icr::adapters::hl7 {

// MSA-1 in original-mode acknowledgement.
enum class AckCode {
  kAA,  // accepted: the events are durable (or were already)
  kAE,  // error in content: fix the message and resend
  kAR,  // rejected: unsupported type, trigger or version, or not parseable
};

inline std::string_view AckCodeName(AckCode c) {
  switch (c) {
    case AckCode::kAA:
      return "AA";
    case AckCode::kAE:
      return "AE";
    case AckCode::kAR:
      return "AR";
  }
  return "AR";
}

// HL7 table 0357 (message error condition codes) used by this adapter.
inline constexpr int kErrSegmentSequence = 100;
inline constexpr int kErrRequiredFieldMissing = 101;
inline constexpr int kErrDataType = 102;
inline constexpr int kErrTableValueNotFound = 103;
inline constexpr int kErrUnsupportedMessageType = 200;
inline constexpr int kErrUnsupportedEventCode = 201;
inline constexpr int kErrUnsupportedVersion = 203;
inline constexpr int kErrInternal = 207;

inline std::string_view Hl7ErrorCodeText(int code) {
  switch (code) {
    case 100:
      return "Segment sequence error";
    case 101:
      return "Required field missing";
    case 102:
      return "Data type error";
    case 103:
      return "Table value not found";
    case 200:
      return "Unsupported message type";
    case 201:
      return "Unsupported event code";
    case 203:
      return "Unsupported version id";
    default:
      return "Application internal error";
  }
}

// One problem, as reported in an ERR segment.
struct Hl7Error {
  int code = kErrInternal;   // ERR-3 (table 0357)
  std::string segment;       // ERR-2.1, e.g. "PID"; "" when no location applies
  int segment_sequence = 0;  // ERR-2.2: which occurrence of the segment (1-based)
  int field = 0;             // ERR-2.3: HL7 field position; 0 when the whole segment
  int repetition = 0;        // ERR-2.4; 0 when not known
  int component = 0;         // ERR-2.5; 0 when not known
  std::string text;          // ERR-8: names the segment, field and problem
};

}  // namespace icr::adapters::hl7
