// CSV adapter, part 4: a whole file to events, the error report, and the
// broker's rejections turned back into rows and columns. `icrctl import`
// (broker/cmd/icrctl.cc) drives these and does the network part.
//
//   CsvEventSource source;
//   Status s = source.Open(&file, mapping);       // reads the header, binds
//   CsvEventSource::Row row;
//   while (source.Next(&row)) {
//     if (row.ok) send(row.event); else report.Add(row.record, row.problem);
//   }
//
// Memory is constant in the file's size: one record at a time (CsvLimits).
// Thread-safety: one thread per CsvEventSource / ErrorReport.
#pragma once

#include <cstdint>
#include <istream>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/csv/csv_mapping.h"
#include "adapters/csv/csv_reader.h"
#include "icr/v1/events.pb.h"

namespace icr::adapters::csv {

class CsvEventSource {
 public:
  struct Row {
    CsvRecord record;  // as read; malformed: fields empty, raw set
    bool ok = false;
    icr::v1::CareEvent event;  // when ok
    std::string problem;       // when !ok, without the row number
  };

  CsvEventSource() = default;
  CsvEventSource(const CsvEventSource&) = delete;
  CsvEventSource& operator=(const CsvEventSource&) = delete;

  // Reads the header row (row 1) and binds `mapping` to it. Errors: an
  // empty file, a malformed header, a mapped column missing from it.
  // The mapping's delimiter overrides limits.delimiter.
  // REQUIRES: in != nullptr and outlives this object.
  Status Open(std::istream* in, const Mapping& mapping, const CsvLimits& limits = {});

  // The next data row, mapped or rejected. False at the end of the input.
  // REQUIRES: Open succeeded; row != nullptr.
  bool Next(Row* row);

  const RowMapper& mapper() const { return mapper_; }
  const std::vector<std::string>& header() const { return mapper_.header(); }
  char delimiter() const { return delimiter_; }
  uint64_t bytes_consumed() const { return reader_ ? reader_->bytes_consumed() : 0; }
  bool stream_failed() const { return reader_ && reader_->stream_failed(); }

 private:
  std::unique_ptr<CsvReader> reader_;
  RowMapper mapper_;
  char delimiter_ = ',';
};

// The error report: a CSV file with the columns `row` (the row number in the
// imported file), `reason`, then the imported file's own columns holding the
// rejected row as it was. A row that could not be split into fields (a stray
// quote, a limit) has its text, as it was in the file, in the first of the
// file's columns. Rows are written as they are rejected, so the report is
// not in row order when the broker rejected some. With the same mapping the
// report can be imported as it is once the rows are fixed: the mapping
// ignores the extra columns.
class ErrorReport {
 public:
  // Writes the header row. REQUIRES: out != nullptr and outlives this.
  ErrorReport(std::ostream* out, const std::vector<std::string>& header, char delimiter = ',');
  ErrorReport(const ErrorReport&) = delete;
  ErrorReport& operator=(const ErrorReport&) = delete;

  void Add(const CsvRecord& record, const std::string& reason);
  uint64_t rows() const { return rows_; }

 private:
  std::ostream* out_;
  char delimiter_;
  uint64_t rows_ = 0;
};

// The broker names a bad event of a batch as "events[3].nhs_number: <why>".
// Splits that into 3 and "nhs_number: <why>" (the field path may be empty:
// "events[3]: <why>"). False when the message names no event.
bool ParseBrokerRejection(std::string_view message, size_t* index, std::string* detail);

// The reason written for a row the broker rejected, naming the column the
// field came from when it came from one:
// "column 'NHS Number': rejected by the broker: nhs_number: <why>".
std::string BrokerRejectionReason(const RowMapper& mapper, const std::string& detail);

}  // namespace icr::adapters::csv
