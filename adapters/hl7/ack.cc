#include "adapters/hl7/ack.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace icr::adapters::hl7 {
namespace {

std::string FormatTime(int64_t seconds) {
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d%02d%02d%02d%02d%02d+0000", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string Truncate(std::string s, size_t max) {
  if (s.size() > max) s.resize(max);
  return s;
}

// A raw field written with delimiters `from`, rewritten for delimiters `to`
// (separators mapped, escape sequences re-spelt, other characters escaped as
// needed). Formatting and character-set escapes are dropped.
std::string Reencode(std::string_view raw, const Er7Delimiters& from, const Er7Delimiters& to) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == from.escape) {
      size_t j = raw.find(from.escape, i + 1);
      if (j == std::string_view::npos) break;
      std::string_view seq = raw.substr(i + 1, j - i - 1);
      if (seq == "F" || seq == "S" || seq == "T" || seq == "R" || seq == "E" ||
          (!seq.empty() && seq[0] == 'X')) {
        out += to.escape;
        out.append(seq);
        out += to.escape;
      }
      i = j;
    } else if (c == from.component) {
      out += to.component;
    } else if (c == from.repetition) {
      out += to.repetition;
    } else if (c == from.subcomponent) {
      out += to.subcomponent;
    } else {
      out += Er7Escape(std::string_view(&c, 1), to);
    }
  }
  return out;
}

std::string ErrSegment(const Hl7Error& e, const Er7Delimiters& d) {
  const char f = d.field, c = d.component, s = d.subcomponent;
  const std::string code = std::to_string(e.code);
  const std::string code_text(Hl7ErrorCodeText(e.code));
  std::string out = "ERR";
  out += f;
  // ERR-1 (ELD, v2.3/2.4): segment^sequence^field^code&text&HL70357
  if (!e.segment.empty()) {
    out += Er7Escape(e.segment, d);
    out += c;
    out += std::to_string(e.segment_sequence);
    out += c;
    if (e.field > 0) out += std::to_string(e.field);
  } else {
    out += c;
    out += c;
  }
  out += c;
  out += code + s + code_text + s + "HL70357";
  out += f;
  // ERR-2 (ERL, v2.5): segment^sequence^field^repetition^component
  if (!e.segment.empty()) {
    out += Er7Escape(e.segment, d);
    out += c;
    out += std::to_string(e.segment_sequence);
    if (e.field > 0) {
      out += c;
      out += std::to_string(e.field);
      out += c;
      out += std::to_string(e.repetition > 0 ? e.repetition : 1);
      if (e.component > 0) {
        out += c;
        out += std::to_string(e.component);
      }
    }
  }
  out += f;
  // ERR-3 (CWE): code^text^HL70357; ERR-4 severity; ERR-8 user message.
  out += code + c + code_text + c + "HL70357";
  out += f;
  out += 'E';
  out += f;
  out += f;
  out += f;
  out += f;
  out += Er7Escape(Truncate(e.text, 1000), d);
  return out;
}

}  // namespace

std::string BuildAck(const Er7Message& original, AckCode code, const std::vector<Hl7Error>& errors,
                     const AckParams& params) {
  const bool has = original.has_msh();
  const Er7Delimiters from = has ? original.delimiters() : Er7Delimiters{};
  // The ACK uses the sender's separators, unless one of them is a character
  // the ACK must write literally ('+' in MSH-7, '.' in versions): then the
  // standard ones, with the copied fields re-encoded.
  bool standard = false;
  for (char c : {from.field, from.component, from.repetition, from.escape, from.subcomponent}) {
    standard = standard || c == '+' || c == '.';
  }
  const Er7Delimiters d = standard ? Er7Delimiters{} : from;
  const char f = d.field;
  std::string encoding = has && !standard ? std::string(original.RawField(0, 2)) : std::string();
  if (encoding.size() < 4) {
    encoding = {d.component, d.repetition, d.escape, d.subcomponent};
  }
  auto raw = [&](int field) -> std::string {
    if (!has) return {};
    std::string_view r = original.RawField(0, field);
    if (r.size() > 200) return {};  // not worth echoing; the fallback is used
    return standard ? Reencode(r, from, d) : std::string(r);
  };
  auto raw_or = [&](int field, const std::string& fallback) {
    std::string r = raw(field);
    return r.empty() ? Er7Escape(fallback, d) : r;
  };

  std::string trigger = has ? original.GetAt(0, 9, 1, 2) : std::string();
  std::string clean_trigger;
  for (char ch : trigger) {
    if ((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) clean_trigger += ch;
  }
  clean_trigger = Truncate(clean_trigger, 3);
  std::string version = raw(12);
  if (version.empty() || version.size() > 40) version = "2.5.1";
  std::string processing = raw(11);
  if (processing.empty() || processing.size() > 10) processing = "P";

  std::string out = "MSH";
  out += f;
  out += encoding;
  out += f;
  out += raw_or(5, params.application);  // MSH-3 = original MSH-5
  out += f;
  out += raw_or(6, params.facility);  // MSH-4 = original MSH-6
  out += f;
  out += raw(3);  // MSH-5 = original MSH-3
  out += f;
  out += raw(4);  // MSH-6 = original MSH-4
  out += f;
  out += FormatTime(params.now_seconds);  // MSH-7
  out += f;                               // MSH-8
  out += f;
  out += "ACK";  // MSH-9
  if (!clean_trigger.empty()) {
    out += d.component;
    out += clean_trigger;
    out += d.component;
    out += "ACK";
  }
  out += f;
  out += Er7Escape(params.control_id, d);  // MSH-10
  out += f;
  out += processing;  // MSH-11
  out += f;
  out += version;  // MSH-12
  out += '\r';

  out += "MSA";
  out += f;
  out += AckCodeName(code);
  out += f;
  out += raw(10);
  if (code != AckCode::kAA && !errors.empty()) {
    out += f;
    out += Er7Escape(Truncate(errors.front().text, 80), d);  // MSA-3 (v2.3/2.4 readers)
  }
  out += '\r';
  for (const Hl7Error& e : errors) {
    out += ErrSegment(e, d);
    out += '\r';
  }
  return out;
}

Hl7Error ErrorFromParse(const Er7Error& e) {
  Hl7Error out;
  out.code = e.kind == Er7ErrorKind::kDataType ? kErrDataType : kErrSegmentSequence;
  if (!e.segment.empty() && e.segment.size() == 3) {
    out.segment = e.segment;
    out.segment_sequence = e.occurrence > 0 ? e.occurrence : 1;
    out.field = e.field;
    out.repetition = e.field > 0 ? 1 : 0;
  }
  out.text = e.ToString();
  return out;
}

std::string AckForPublish(const Er7Message& original, const MappingResult& mapped,
                          const icr::store::Status& status, const AckParams& params) {
  if (status.ok()) return BuildAck(original, AckCode::kAA, {}, params);
  if (status.code() == icr::store::StatusCode::kInvalidArgument) {
    return BuildAck(original, AckCode::kAE, {ErrorFromValidation(status.message(), mapped)},
                    params);
  }
  Hl7Error e;
  e.code = kErrInternal;
  if (status.code() == icr::store::StatusCode::kPermissionDenied ||
      status.code() == icr::store::StatusCode::kUnauthenticated) {
    // Refused for who sent it, not for what it says: AR (table 0008
    // "rejected"); table 0357 has no authorisation code, so 207, the catch-all
    // of the rejection codes, with the policy's reason.
    e.text = std::string(status.code() == icr::store::StatusCode::kPermissionDenied
                             ? "not permitted: "
                             : "not authenticated: ") +
             status.message();
    if (e.text.find("nothing was stored") == std::string::npos) e.text += "; nothing was stored";
    e.text += "; resending will not help until the sender's certificate or the policy changes";
    return BuildAck(original, AckCode::kAR, {e}, params);
  }
  if (status.code() == icr::store::StatusCode::kFailedPrecondition ||
      status.code() == icr::store::StatusCode::kConflict) {
    // A workflow rule refused it (e.g. an illegal referral transition).
    e.text = status.message() + ": nothing was stored; resending the same message will not help";
    return BuildAck(original, AckCode::kAE, {e}, params);
  }
  e.text = "the broker could not store the message now (" + status.ToString() +
           "): nothing was stored; resend the same message (same MSH-10) later";
  return BuildAck(original, AckCode::kAE, {e}, params);
}

AckCode AckCodeForPublish(const icr::store::Status& status) {
  if (status.ok()) return AckCode::kAA;
  if (status.code() == icr::store::StatusCode::kPermissionDenied ||
      status.code() == icr::store::StatusCode::kUnauthenticated) {
    return AckCode::kAR;
  }
  return AckCode::kAE;
}

bool PrepareMessage(std::string_view frame, const Er7Limits& limits,
                    const MappingOptions& options, const AckParams& params, Er7Message* msg,
                    MappingResult* mapped, std::string* ack) {
  Er7Error pe = ParseEr7(frame, limits, msg);
  if (!pe.ok()) {
    *ack = BuildAck(*msg, AckCode::kAR, {ErrorFromParse(pe)}, params);
    return false;
  }
  *mapped = MapAdt(*msg, options);
  if (mapped->ack != AckCode::kAA) {
    *ack = BuildAck(*msg, mapped->ack, mapped->errors, params);
    return false;
  }
  return true;
}

std::string NewAckControlId() {
  static std::atomic<uint64_t> counter{0};
  const uint64_t n = counter.fetch_add(1, std::memory_order_relaxed) % 1000000;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "ICR%010lld%06llu", static_cast<long long>(now % 10000000000LL),
                static_cast<unsigned long long>(n));
  return buf;
}

bool ParseAck(std::string_view ack, ParsedAck* out) {
  *out = ParsedAck();
  Er7Message m;
  if (!ParseEr7(ack, Er7Limits{}, &m).ok()) return false;
  int msa = m.FindSegment("MSA");
  if (msa < 0) return false;
  out->msa1 = m.GetAt(msa, 1);
  out->msa2 = m.GetAt(msa, 2);
  for (int i = 1;; ++i) {
    int err = m.FindSegment("ERR", i);
    if (err < 0) break;
    out->err_codes.push_back(std::atoi(m.GetAt(err, 3, 1, 1).c_str()));
    out->err_texts.push_back(m.GetAt(err, 8));
    std::string seg = m.GetAt(err, 2, 1, 1), field = m.GetAt(err, 2, 1, 3);
    out->err_fields.push_back(seg.empty() ? "" : field.empty() ? seg : seg + "-" + field);
  }
  return true;
}

}  // namespace icr::adapters::hl7
