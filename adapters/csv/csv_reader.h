// CSV adapter, part 1: a streaming RFC 4180 reader and a matching writer.
//
// The reader accepts what RFC 4180 describes and what spreadsheet and case
// system exports actually produce:
//   * fields separated by a delimiter (default ','), records by CRLF, LF or a
//     lone CR; the last record may lack a line terminator;
//   * quoted fields ("...") holding delimiters, quotes written twice ("") and
//     line breaks, which are kept as they are in the file;
//   * an optional UTF-8 byte-order mark at the very start;
//   * blank lines, which are skipped (they still count as rows, so row
//     numbers match what a spreadsheet shows).
// Rows are numbered from 1 with the header as row 1: "row 17" is the 17th
// record of the file, as a spreadsheet numbers it. One record may span
// several physical lines (a quoted line break); CsvRecord::line says where
// it starts.
//
// Memory is bounded by CsvLimits whatever the input: the reader holds one
// record at a time and never recurses. A malformed record (a stray quote, a
// field, record or column count over a limit) is reported as an error naming
// its row and column, the reader skips to the end of that record, and the
// next call goes on with the following record. An unclosed quote runs to
// the end of the input (RFC 4180 gives no way to tell where it should have
// ended); its error says on which line it began.
//
// Thread-safety: a CsvReader is used by one thread at a time. The free
// functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace icr::adapters::csv {

// The result of an adapter call: OK, or an error with a complete,
// human-readable message ("row 17, column 'Start date': ...").
class Status {
 public:
  Status() = default;  // OK
  static Status Ok() { return Status(); }
  // REQUIRES: message is not empty.
  static Status Error(std::string message, uint64_t row = 0) {
    Status s;
    s.ok_ = false;
    s.row_ = row;
    s.message_ = std::move(message);
    return s;
  }

  bool ok() const { return ok_; }
  const std::string& message() const { return message_; }  // empty when ok
  uint64_t row() const { return row_; }                    // 0: not about one row

 private:
  bool ok_ = true;
  uint64_t row_ = 0;
  std::string message_;
};

// Limits that bound the reader's memory on any input.
struct CsvLimits {
  // Longest field, in bytes after quotes are removed. Default: 64 KiB.
  size_t max_field_bytes = size_t{64} << 10;
  // Most fields in one record. Default: 512.
  size_t max_columns = 512;
  // Longest record, in bytes as it is in the file (quoted line breaks
  // included, line terminator excluded). Default: 1 MiB.
  size_t max_record_bytes = size_t{1} << 20;
  // Field delimiter. Default: ','. REQUIRES: not '"', '\r' or '\n'.
  char delimiter = ',';
};

// One record as read.
struct CsvRecord {
  std::vector<std::string> fields;  // quotes removed, "" undoubled
  uint64_t row = 0;                 // 1-based record number; the header is row 1
  uint64_t line = 0;                // 1-based physical line on which the record starts
  // The record's bytes as they are in the file, without its line
  // terminator. For a malformed record, at most max_field_bytes of it.
  std::string raw;
};

class CsvReader {
 public:
  enum class Result {
    kRecord,  // *record holds the next record
    kError,   // the record at record->row was malformed: *error says why;
              // record->raw holds (the start of) its text, record->fields is
              // empty. The reader has skipped it; call Next again.
    kEnd,     // no more records (or the stream failed: see stream_failed())
  };

  // REQUIRES: in != nullptr and outlives the reader.
  explicit CsvReader(std::istream* in, const CsvLimits& limits = {});
  CsvReader(const CsvReader&) = delete;
  CsvReader& operator=(const CsvReader&) = delete;

  // REQUIRES: record != nullptr, error != nullptr.
  Result Next(CsvRecord* record, std::string* error);

  // Names used for columns in error messages ("column 'Start date'"), in
  // order; columns without a name are called by number ("column 3").
  void SetColumnNames(std::vector<std::string> names) { column_names_ = std::move(names); }

  // Bytes of input consumed so far, BOM included (for progress and ETA).
  uint64_t bytes_consumed() const { return consumed_; }
  // True when the stream reported a read error (not end of file).
  bool stream_failed() const { return stream_failed_; }

 private:
  int Get();   // next byte (0..255) or -1 at the end
  int Peek();  // the same without consuming it
  bool Fill();
  std::string ColumnName(size_t index) const;  // "column 'X'" or "column 3"
  // Consumes the rest of a malformed record. `quoted`: inside a quoted
  // field; `field_start`: the next byte starts a field.
  void SkipRecord(bool quoted, bool field_start, CsvRecord* record);
  void KeepRaw(CsvRecord* record, int c);

  std::istream* in_;
  CsvLimits limits_;
  std::vector<std::string> column_names_;
  std::string buffer_;
  size_t pos_ = 0;
  size_t len_ = 0;
  bool eof_ = false;
  bool stream_failed_ = false;
  bool started_ = false;  // the BOM check has run
  uint64_t consumed_ = 0;
  uint64_t row_ = 0;
  uint64_t line_ = 1;
};

// Writes one record in RFC 4180 form, with CRLF line endings as the RFC
// says. A field is quoted when it holds the delimiter, a quote, CR or LF, or
// starts or ends with a space.
std::string FormatCsvRecord(const std::vector<std::string>& fields, char delimiter = ',');

// Whether `s` is valid UTF-8 (no overlong forms, no surrogates, at most
// U+10FFFF): protobuf string fields must be.
bool IsValidUtf8(std::string_view s);

}  // namespace icr::adapters::csv
