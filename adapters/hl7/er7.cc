#include "adapters/hl7/er7.h"

#include "broker/civil_time.h"

#include <algorithm>
#include <limits>

namespace icr::adapters::hl7 {
namespace {

bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHex(char c) { return IsDigit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); }
int HexValue(char c) {
  if (IsDigit(c)) return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return c - 'a' + 10;
}
// Printable ASCII that is neither a letter, a digit nor a space.
bool IsPunct(char c) {
  return c > 0x20 && c < 0x7f && !IsDigit(c) && !IsUpper(c) && !(c >= 'a' && c <= 'z');
}

std::string Printable(std::string_view s, size_t max = 24) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char* k = "0123456789ABCDEF";
      out += "\\x";
      out += k[c >> 4];
      out += k[c & 15];
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string CharName(char c) { return "'" + Printable(std::string_view(&c, 1)) + "'"; }

// The n-th (1-based) piece of `s` split on `sep`; empty when there is none.
std::string_view NthPiece(std::string_view s, char sep, int n) {
  if (n < 1) return {};
  size_t start = 0;
  for (int i = 1; i < n; ++i) {
    size_t p = s.find(sep, start);
    if (p == std::string_view::npos) return {};
    start = p + 1;
  }
  size_t end = s.find(sep, start);
  return s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
}

Er7Error MakeError(Er7ErrorKind kind, std::string segment, int segment_index, int field,
                   std::string problem) {
  Er7Error e;
  e.kind = kind;
  e.segment = std::move(segment);
  e.segment_index = segment_index;
  e.occurrence = e.segment.empty() ? 0 : 1;
  e.field = field;
  e.problem = std::move(problem);
  return e;
}

// Checks the body of one escape sequence (between the escape characters).
std::string EscapeProblem(std::string_view seq, char esc) {
  const std::string shown = std::string(1, esc) + Printable(seq, 16) + std::string(1, esc);
  if (seq.empty()) return "empty escape sequence " + shown;
  if (seq.size() == 1 && std::string_view("FSTREHN").find(seq[0]) != std::string_view::npos) {
    return {};
  }
  switch (seq[0]) {
    case 'X': {
      std::string_view hex = seq.substr(1);
      if (hex.empty() || hex.size() % 2 != 0 || !std::all_of(hex.begin(), hex.end(), IsHex)) {
        return "escape sequence " + shown + " must be X followed by pairs of hex digits";
      }
      return {};
    }
    case 'C':  // character set switch \Cxxyy\ (dropped)
    case 'M':  // multi-byte character set switch \Mxxyyzz\ (dropped)
      if (seq.size() < 2 || !std::all_of(seq.begin() + 1, seq.end(), IsHex)) {
        return "escape sequence " + shown + " must be followed by hex digits";
      }
      return {};
    case 'Z':  // locally defined (dropped)
    case '.':  // formatting command, e.g. \.br\ (dropped)
      return {};
    default:
      return "unknown escape sequence " + shown +
             " (known: F S T R E X H N C M Z and formatting commands)";
  }
}

// Checks one field's escape sequences and repetition count.
std::string FieldProblem(std::string_view f, const Er7Delimiters& d, size_t max_reps) {
  size_t reps = 1;
  for (size_t i = 0; i < f.size(); ++i) {
    const char c = f[i];
    if (c == d.repetition) {
      if (++reps > max_reps) {
        return "more than " + std::to_string(max_reps) + " repetitions";
      }
    } else if (c == d.escape) {
      size_t j = i + 1;
      while (j < f.size() && f[j] != d.escape) {
        if (f[j] == d.component || f[j] == d.repetition || f[j] == d.subcomponent) break;
        ++j;
      }
      if (j >= f.size() || f[j] != d.escape) {
        return "unterminated escape sequence (escape character " + CharName(d.escape) +
               " at offset " + std::to_string(i) + " has no closing " + CharName(d.escape) + ")";
      }
      if (auto p = EscapeProblem(f.substr(i + 1, j - i - 1), d.escape); !p.empty()) return p;
      i = j;
    }
  }
  return {};
}

using civil::DaysFromCivil;
using civil::DaysInMonth;

int ParseDigits(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

}  // namespace

std::string Er7Error::ToString() const {
  if (!segment.empty() && field > 0) return segment + "-" + std::to_string(field) + ": " + problem;
  if (segment_index > 0) {
    return "segment " + std::to_string(segment_index) +
           (segment.empty() ? "" : " (" + Printable(segment, 8) + ")") + ": " + problem;
  }
  return "message: " + problem;
}

std::string_view Er7Message::SegmentName(size_t index) const {
  return index < segments_.size() ? View(segments_[index].name) : std::string_view();
}

int Er7Message::FindSegment(std::string_view name, int occurrence) const {
  int seen = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    if (View(segments_[i].name) == name && ++seen == occurrence) return static_cast<int>(i);
  }
  return -1;
}

int Er7Message::CountSegments(std::string_view name) const {
  int n = 0;
  for (const auto& s : segments_) n += View(s.name) == name;
  return n;
}

std::string_view Er7Message::RawField(size_t index, int field) const {
  if (index >= segments_.size() || field < 1) return {};
  const auto& fields = segments_[index].fields;
  if (static_cast<size_t>(field) > fields.size()) return {};
  return View(fields[field - 1]);
}

int Er7Message::FieldCount(size_t index) const {
  return index < segments_.size() ? static_cast<int>(segments_[index].fields.size()) : 0;
}

int Er7Message::RepetitionCount(size_t index, int field) const {
  std::string_view raw = RawField(index, field);
  if (raw.empty()) return 0;
  if (index == 0 && field <= 2) return 1;
  return 1 + static_cast<int>(std::count(raw.begin(), raw.end(), delimiters_.repetition));
}

std::string Er7Message::GetAt(size_t index, int field, int rep, int comp, int sub) const {
  std::string_view raw = RawField(index, field);
  if (index == 0 && field <= 2) {  // MSH-1 and MSH-2 are not split or decoded
    return rep == 1 && comp == 1 && sub == 1 ? std::string(raw) : std::string();
  }
  std::string_view piece = NthPiece(raw, delimiters_.repetition, rep);
  piece = NthPiece(piece, delimiters_.component, comp);
  piece = NthPiece(piece, delimiters_.subcomponent, sub);
  if (piece == "\"\"") return {};  // HL7's explicit null
  return Unescape(piece);
}

std::string Er7Message::Get(std::string_view segment, int field, int rep, int comp,
                            int sub) const {
  int index = FindSegment(segment);
  if (index < 0) return {};
  return GetAt(static_cast<size_t>(index), field, rep, comp, sub);
}

std::string Er7Message::Unescape(std::string_view text) const {
  const Er7Delimiters& d = delimiters_;
  if (text.find(d.escape) == std::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != d.escape) {
      out += text[i];
      continue;
    }
    size_t j = text.find(d.escape, i + 1);
    if (j == std::string_view::npos) {  // unterminated: keep the rest as it is
      out.append(text.substr(i));
      break;
    }
    std::string_view seq = text.substr(i + 1, j - i - 1);
    if (seq == "F") {
      out += d.field;
    } else if (seq == "S") {
      out += d.component;
    } else if (seq == "T") {
      out += d.subcomponent;
    } else if (seq == "R") {
      out += d.repetition;
    } else if (seq == "E") {
      out += d.escape;
    } else if (!seq.empty() && seq[0] == 'X') {
      for (size_t k = 1; k + 1 < seq.size(); k += 2) {
        if (IsHex(seq[k]) && IsHex(seq[k + 1])) {
          out += static_cast<char>(HexValue(seq[k]) * 16 + HexValue(seq[k + 1]));
        }
      }
    }  // \H\ \N\ \Cxxyy\ \Mxxyyzz\ \Zxx\ \.br\ ...: dropped
    i = j;
  }
  return out;
}

Er7Error ParseEr7(std::string_view input, const Er7Limits& limits, Er7Message* out) {
  *out = Er7Message();
  using K = Er7ErrorKind;
  const size_t max_bytes =
      std::min<size_t>(limits.max_message_bytes, std::numeric_limits<int32_t>::max());
  if (input.size() > max_bytes) {
    return MakeError(K::kDataType, "", 0, 0,
                     std::to_string(input.size()) + " bytes exceeds the limit of " +
                         std::to_string(max_bytes) + " bytes per message");
  }
  if (input.substr(0, 3) == "\xEF\xBB\xBF") input.remove_prefix(3);
  while (!input.empty() && (input[0] == '\r' || input[0] == '\n' || input[0] == ' ' ||
                            input[0] == '\t')) {
    input.remove_prefix(1);
  }
  if (input.empty()) return MakeError(K::kStructure, "", 0, 0, "empty message");
  if (input[0] == '<') {
    return MakeError(K::kStructure, "", 0, 0,
                     "XML-encoded HL7 is not supported: send ER7 (pipe-delimited) HL7 v2");
  }
  if (input.substr(0, 3) == "BHS" || input.substr(0, 3) == "FHS") {
    return MakeError(K::kStructure, std::string(input.substr(0, 3)), 1, 0,
                     "batches (BHS/FHS) are not supported: send one message per MLLP frame");
  }
  if (input.size() < 3 || input.substr(0, 3) != "MSH") {
    return MakeError(K::kStructure, "", 1, 0,
                     "a message must start with an MSH segment (got '" +
                         Printable(input.substr(0, 3)) + "')");
  }
  if (input.size() < 4 || input[3] == '\r' || input[3] == '\n') {
    return MakeError(K::kStructure, "MSH", 1, 1, "the field separator is missing");
  }
  Er7Delimiters d;
  d.field = input[3];
  if (!IsPunct(d.field)) {
    return MakeError(K::kDataType, "MSH", 1, 1,
                     "field separator " + CharName(d.field) +
                         " must be a printable punctuation character (usually '|')");
  }
  size_t enc_end = 4;
  while (enc_end < input.size() && input[enc_end] != d.field && input[enc_end] != '\r' &&
         input[enc_end] != '\n') {
    ++enc_end;
  }
  std::string_view enc = input.substr(4, enc_end - 4);
  if (enc.size() < 4 || enc.size() > 5) {
    return MakeError(K::kDataType, "MSH", 1, 2,
                     "encoding characters '" + Printable(enc, 8) +
                         "' must be 4 characters (component, repetition, escape, subcomponent; "
                         "usually ^~\\&), or 5 with the v2.7 truncation character");
  }
  std::string all(1, d.field);
  for (char c : enc) {
    if (!IsPunct(c)) {
      return MakeError(K::kDataType, "MSH", 1, 2,
                       "encoding character " + CharName(c) +
                           " must be a printable punctuation character");
    }
    if (all.find(c) != std::string::npos) {
      return MakeError(K::kDataType, "MSH", 1, 2,
                       "encoding character " + CharName(c) +
                           " is used twice (the separators must all differ)");
    }
    all += c;
  }
  d.component = enc[0];
  d.repetition = enc[1];
  d.escape = enc[2];
  d.subcomponent = enc[3];

  out->text_.assign(input);
  out->delimiters_ = d;
  const std::string_view text = out->text_;
  const size_t n = text.size();
  using Span = Er7Message::Span;
  auto span = [](size_t b, size_t e) {
    return Span{static_cast<uint32_t>(b), static_cast<uint32_t>(e - b)};
  };

  size_t pos = 0;
  int seg_no = 0;
  std::vector<Er7Message::Segment> segments;
  // An error in the segment being read (not yet in `segments`): keeps the
  // segments read so far and says which occurrence of its name it is.
  auto segment_error = [&](Er7ErrorKind kind, std::string name, int field, std::string problem) {
    Er7Error e = MakeError(kind, name, seg_no, field, std::move(problem));
    if (!name.empty()) {
      for (const auto& seg : segments) {
        if (text.substr(seg.name.begin, seg.name.size) == name) ++e.occurrence;
      }
    }
    out->segments_ = std::move(segments);
    return e;
  };
  while (pos < n) {
    size_t end = pos;
    while (end < n && text[end] != '\r' && text[end] != '\n') ++end;
    if (end == pos) {
      ++pos;
      continue;
    }
    ++seg_no;
    std::string_view line = text.substr(pos, end - pos);
    if (segments.size() >= limits.max_segments) {
      out->segments_ = std::move(segments);
      return MakeError(K::kStructure, "", 0, 0,
                       "more than " + std::to_string(limits.max_segments) + " segments");
    }
    std::string name(line.substr(0, 3));
    if (line.size() < 3 || !IsUpper(name[0]) || !(IsUpper(name[1]) || IsDigit(name[1])) ||
        !(IsUpper(name[2]) || IsDigit(name[2]))) {
      return segment_error(K::kStructure, std::string(line.substr(0, 3)), 0,
                           "'" + Printable(line, 12) +
                               "' does not start with a segment name (3 characters: A-Z then "
                               "A-Z or 0-9)");
    }
    if (line.size() > 3 && line[3] != d.field) {
      return segment_error(K::kStructure, name, 0,
                           "the segment name must be followed by the field separator " +
                               CharName(d.field));
    }
    if (seg_no > 1) {
      if (name == "MSH") {
        return segment_error(K::kStructure, name, 0,
                             "a second MSH segment starts a second message, but an MLLP frame "
                             "carries one message: send each message in its own frame");
      }
      if (name == "BHS" || name == "BTS" || name == "FHS" || name == "FTS") {
        return segment_error(K::kStructure, name, 0,
                             "batch segments are not supported: send one message per MLLP "
                             "frame");
      }
    }
    Er7Message::Segment seg;
    seg.name = span(pos, pos + 3);
    size_t f = pos + 4;  // first character after name and separator
    if (seg_no == 1) {
      seg.fields.push_back(span(pos + 3, pos + 4));  // MSH-1: the separator itself
    }
    if (line.size() > 3) {
      while (true) {
        size_t fe = f;
        while (fe < end && text[fe] != d.field) ++fe;
        if (seg.fields.size() >= limits.max_fields_per_segment) {
          return segment_error(K::kDataType, name, 0,
                               "more than " + std::to_string(limits.max_fields_per_segment) +
                                   " fields");
        }
        seg.fields.push_back(span(f, fe));
        if (fe >= end) break;
        f = fe + 1;
      }
    }
    for (size_t i = 0; i < seg.fields.size(); ++i) {
      const int field_no = static_cast<int>(i) + 1;
      if (seg_no == 1 && field_no <= 2) continue;
      std::string_view fv = text.substr(seg.fields[i].begin, seg.fields[i].size);
      if (auto p = FieldProblem(fv, d, limits.max_repetitions); !p.empty()) {
        return segment_error(K::kDataType, name, field_no, p);
      }
    }
    segments.push_back(std::move(seg));
    pos = end;
  }
  out->segments_ = std::move(segments);
  return {};
}

std::string Er7Escape(std::string_view text, const Er7Delimiters& d) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == d.escape) {
      out += d.escape;
      out += 'E';
      out += d.escape;
    } else if (c == d.field) {
      out += d.escape;
      out += 'F';
      out += d.escape;
    } else if (c == d.component) {
      out += d.escape;
      out += 'S';
      out += d.escape;
    } else if (c == d.repetition) {
      out += d.escape;
      out += 'R';
      out += d.escape;
    } else if (c == d.subcomponent) {
      out += d.escape;
      out += 'T';
      out += d.escape;
    } else if (c == '\r') {
      out += d.escape;
      out += "X0D";
      out += d.escape;
    } else if (c == '\n') {
      out += d.escape;
      out += "X0A";
      out += d.escape;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string ParseHl7Timestamp(std::string_view text, bool assume_london, int64_t* seconds,
                              int32_t* nanos) {
  const std::string shown = "'" + Printable(text, 32) + "'";
  const std::string bad = shown + " is not an HL7 date/time (YYYYMMDDHHMMSS[.SSSS][+ZZZZ])";
  size_t i = 0;
  while (i < text.size() && IsDigit(text[i])) ++i;
  const size_t digits = i;
  if (digits != 4 && digits != 6 && digits != 8 && digits != 10 && digits != 12 && digits != 14) {
    return bad;
  }
  int32_t frac_nanos = 0;
  if (i < text.size() && text[i] == '.') {
    if (digits != 14) return bad;
    size_t j = ++i;
    while (i < text.size() && IsDigit(text[i])) ++i;
    const size_t frac_digits = i - j;
    if (frac_digits < 1 || frac_digits > 4) return bad;
    frac_nanos = ParseDigits(text.substr(j, frac_digits));
    for (size_t k = frac_digits; k < 9; ++k) frac_nanos *= 10;
  }
  bool has_offset = false;
  int64_t offset_seconds = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
    const bool negative = text[i] == '-';
    std::string_view z = text.substr(i + 1);
    if (z.size() != 4 || !std::all_of(z.begin(), z.end(), IsDigit)) return bad;
    const int hh = ParseDigits(z.substr(0, 2)), mm = ParseDigits(z.substr(2, 2));
    if (hh > 14 || mm > 59) return shown + ": time zone offset out of range";
    offset_seconds = (negative ? -1 : 1) * (hh * 3600 + mm * 60);
    has_offset = true;
    i = text.size();
  }
  if (i != text.size()) return bad;
  const int year = ParseDigits(text.substr(0, 4));
  const int month = digits >= 6 ? ParseDigits(text.substr(4, 2)) : 1;
  const int day = digits >= 8 ? ParseDigits(text.substr(6, 2)) : 1;
  const int hour = digits >= 10 ? ParseDigits(text.substr(8, 2)) : 0;
  const int minute = digits >= 12 ? ParseDigits(text.substr(10, 2)) : 0;
  const int second = digits >= 14 ? ParseDigits(text.substr(12, 2)) : 0;
  if (year < 1) return shown + ": year 0000 is not a year";
  if (month < 1 || month > 12) return shown + ": month " + std::to_string(month) + " is not 1..12";
  if (day < 1 || day > DaysInMonth(year, month)) {
    return shown + ": day " + std::to_string(day) + " is not a day of month " +
           std::to_string(month);
  }
  if (hour > 23 || minute > 59 || second > 59) return shown + ": time of day out of range";
  int64_t t = DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
  if (has_offset) {
    t -= offset_seconds;
  } else if (assume_london) {
    t = civil::LondonLocalToUtc(t, year);
  }
  *seconds = t;
  *nanos = frac_nanos;
  return {};
}

std::string ParseHl7Date(std::string_view text, int* year, int* month, int* day) {
  const std::string bad = "'" + Printable(text, 32) + "' is not an HL7 date (YYYYMMDD)";
  if (text.size() < 8 || !std::all_of(text.begin(), text.begin() + 8, IsDigit)) return bad;
  if (text.size() > 8) {
    int64_t s;
    int32_t n;
    if (!ParseHl7Timestamp(text, false, &s, &n).empty()) return bad;
  }
  const int y = ParseDigits(text.substr(0, 4)), m = ParseDigits(text.substr(4, 2)),
            dd = ParseDigits(text.substr(6, 2));
  if (y < 1 || m < 1 || m > 12 || dd < 1 || dd > DaysInMonth(y, m)) return bad;
  *year = y;
  *month = m;
  *day = dd;
  return {};
}

}  // namespace icr::adapters::hl7
