// CSV reader and writer. See csv_reader.h for the contract.
//
// One loop over the bytes with a four-state machine (field start, unquoted,
// quoted, quote seen inside quotes); nothing recurses, and every buffer is
// bounded by CsvLimits.
#include "adapters/csv/csv_reader.h"

#include <cstdio>

namespace icr::adapters::csv {
namespace {

constexpr size_t kChunkBytes = size_t{64} << 10;

std::string WithCommas(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// 'x' for a printable byte, else its value ("byte 0x07").
std::string ShowByte(int c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
  char buf[16];
  std::snprintf(buf, sizeof(buf), "byte 0x%02X", c & 0xff);
  return buf;
}

}  // namespace

CsvReader::CsvReader(std::istream* in, const CsvLimits& limits) : in_(in), limits_(limits) {}

bool CsvReader::Fill() {
  if (eof_) return false;
  if (buffer_.size() != kChunkBytes) buffer_.resize(kChunkBytes);
  in_->read(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
  len_ = static_cast<size_t>(in_->gcount());
  pos_ = 0;
  if (len_ == 0) {
    eof_ = true;
    if (in_->bad()) stream_failed_ = true;
    return false;
  }
  return true;
}

int CsvReader::Peek() {
  if (pos_ == len_ && !Fill()) return -1;
  return static_cast<unsigned char>(buffer_[pos_]);
}

int CsvReader::Get() {
  if (pos_ == len_ && !Fill()) return -1;
  ++consumed_;
  return static_cast<unsigned char>(buffer_[pos_++]);
}

std::string CsvReader::ColumnName(size_t index) const {
  if (index < column_names_.size() && !column_names_[index].empty()) {
    return "column '" + column_names_[index] + "'";
  }
  return "column " + std::to_string(index + 1);
}

void CsvReader::KeepRaw(CsvRecord* record, int c) {
  if (record->raw.size() < limits_.max_record_bytes) record->raw.push_back(static_cast<char>(c));
}

void CsvReader::SkipRecord(bool quoted, bool field_start, CsvRecord* record) {
  while (true) {
    const int c = Get();
    if (c < 0) return;
    if (quoted) {
      if (c == '"') {
        if (Peek() == '"') {
          Get();
        } else {
          quoted = false;
        }
      } else if (c == '\n' || (c == '\r' && Peek() != '\n')) {
        ++line_;
      }
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && Peek() == '\n') Get();
      ++line_;
      return;
    } else if (c == limits_.delimiter) {
      field_start = true;
    } else {
      if (c == '"' && field_start) quoted = true;
      field_start = false;
    }
    if (record->raw.size() < limits_.max_field_bytes) record->raw.push_back(static_cast<char>(c));
  }
}

CsvReader::Result CsvReader::Next(CsvRecord* record, std::string* error) {
  record->fields.clear();
  record->raw.clear();
  error->clear();
  if (!started_) {
    started_ = true;
    if (Peek() == 0xEF && len_ - pos_ >= 3 &&
        static_cast<unsigned char>(buffer_[pos_ + 1]) == 0xBB &&
        static_cast<unsigned char>(buffer_[pos_ + 2]) == 0xBF) {
      pos_ += 3;
      consumed_ += 3;
    }
  }
  // Blank lines count as rows but yield nothing.
  while (true) {
    const int c = Peek();
    if (c < 0) return Result::kEnd;
    ++row_;
    record->row = row_;
    record->line = line_;
    if (c != '\n' && c != '\r') break;
    Get();
    if (c == '\r' && Peek() == '\n') Get();
    ++line_;
  }

  enum class State { kFieldStart, kUnquoted, kQuoted, kQuoteSeen };
  State state = State::kFieldStart;
  uint64_t quote_line = 0;
  size_t record_bytes = 0;
  const char delim = limits_.delimiter;
  record->fields.emplace_back();
  std::string* field = &record->fields.back();

  auto fail = [&](std::string message, bool quoted, bool field_start = false) {
    *error = "row " + std::to_string(record->row) + ", " + message;
    record->fields.clear();
    SkipRecord(quoted, field_start, record);
    if (record->raw.size() > limits_.max_field_bytes) {
      record->raw.resize(limits_.max_field_bytes);
    }
    return Result::kError;
  };
  auto field_too_long = [&]() {
    return ColumnName(record->fields.size() - 1) + ": field is longer than the limit of " +
           WithCommas(limits_.max_field_bytes) + " bytes";
  };

  auto too_many_columns = [&]() {
    *error = "row " + std::to_string(record->row) + ": more than " +
             WithCommas(limits_.max_columns) + " fields (the limit)";
    record->fields.clear();
    // The next byte starts a field: a quote there opens one.
    const int next = Peek();
    if (next == '"') {
      Get();
      KeepRaw(record, next);
      SkipRecord(true, false, record);
    } else {
      SkipRecord(false, true, record);
    }
    if (record->raw.size() > limits_.max_field_bytes) record->raw.resize(limits_.max_field_bytes);
    return Result::kError;
  };

  while (true) {
    const int c = Get();
    if (c < 0) {
      if (state == State::kQuoted) {
        *error = "row " + std::to_string(record->row) + ", " +
                 ColumnName(record->fields.size() - 1) +
                 ": quoted field not closed (the quote opened on line " +
                 std::to_string(quote_line) + " runs to the end of the input)";
        record->fields.clear();
        if (record->raw.size() > limits_.max_field_bytes)
          record->raw.resize(limits_.max_field_bytes);
        return Result::kError;
      }
      return Result::kRecord;
    }
    if ((c == '\n' || c == '\r') && state != State::kQuoted) {
      if (c == '\r' && Peek() == '\n') Get();
      ++line_;
      return Result::kRecord;
    }
    if (++record_bytes > limits_.max_record_bytes) {
      return fail(ColumnName(record->fields.size() - 1) + ": record is longer than the limit of " +
                      WithCommas(limits_.max_record_bytes) + " bytes",
                  state == State::kQuoted, state == State::kFieldStart);
    }
    KeepRaw(record, c);
    switch (state) {
      case State::kFieldStart:
      case State::kUnquoted:
        if (c == delim) {
          if (record->fields.size() >= limits_.max_columns) return too_many_columns();
          record->fields.emplace_back();
          field = &record->fields.back();
          state = State::kFieldStart;
        } else if (c == '"') {
          if (state == State::kFieldStart) {
            state = State::kQuoted;
            quote_line = line_;
          } else {
            return fail(ColumnName(record->fields.size() - 1) +
                            ": unexpected '\"' inside an unquoted field (quote the whole field "
                            "and write each quote in it twice)",
                        false);
          }
        } else {
          if (field->size() >= limits_.max_field_bytes) return fail(field_too_long(), false);
          field->push_back(static_cast<char>(c));
          state = State::kUnquoted;
        }
        break;
      case State::kQuoted:
        if (c == '"') {
          state = State::kQuoteSeen;
        } else {
          if (c == '\n' || (c == '\r' && Peek() != '\n')) ++line_;
          if (field->size() >= limits_.max_field_bytes) return fail(field_too_long(), true);
          field->push_back(static_cast<char>(c));
        }
        break;
      case State::kQuoteSeen:
        if (c == '"') {
          if (field->size() >= limits_.max_field_bytes) return fail(field_too_long(), true);
          field->push_back('"');
          state = State::kQuoted;
        } else if (c == delim) {
          if (record->fields.size() >= limits_.max_columns) return too_many_columns();
          record->fields.emplace_back();
          field = &record->fields.back();
          state = State::kFieldStart;
        } else {
          return fail(ColumnName(record->fields.size() - 1) + ": unexpected " + ShowByte(c) +
                          " after the closing quote of a quoted field (write each quote inside "
                          "a quoted field twice)",
                      false);
        }
        break;
    }
  }
}

std::string FormatCsvRecord(const std::vector<std::string>& fields, char delimiter) {
  std::string out;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) out.push_back(delimiter);
    const std::string& f = fields[i];
    // A field starting with a byte-order mark is quoted too: written first in
    // a file, the reader would take the mark for the file's own and drop it.
    const bool quote = f.find_first_of(std::string("\"\r\n") + delimiter) != std::string::npos ||
                       (!f.empty() && (f.front() == ' ' || f.back() == ' ')) ||
                       f.rfind("\xEF\xBB\xBF", 0) == 0;
    if (!quote) {
      out += f;
      continue;
    }
    out.push_back('"');
    for (char c : f) {
      if (c == '"') out.push_back('"');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out += "\r\n";
  return out;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace icr::adapters::csv
