// Whole-file import helpers. See csv_import.h for the contract.
#include "adapters/csv/csv_import.h"

#include <cctype>

namespace icr::adapters::csv {
namespace {

// "row 5, column 'X': why" -> "column 'X': why"; "row 5: why" -> "why".
std::string WithoutRow(const std::string& message) {
  if (message.rfind("row ", 0) != 0) return message;
  size_t i = 4;
  while (i < message.size() && std::isdigit(static_cast<unsigned char>(message[i]))) ++i;
  if (message.compare(i, 2, ", ") == 0 || message.compare(i, 2, ": ") == 0) {
    return message.substr(i + 2);
  }
  return message;
}

}  // namespace

Status CsvEventSource::Open(std::istream* in, const Mapping& mapping, const CsvLimits& limits) {
  CsvLimits l = limits;
  l.delimiter = mapping.delimiter();
  delimiter_ = l.delimiter;
  reader_ = std::make_unique<CsvReader>(in, l);
  CsvRecord header;
  std::string error;
  switch (reader_->Next(&header, &error)) {
    case CsvReader::Result::kEnd:
      if (reader_->stream_failed()) return Status::Error("cannot read the file");
      return Status::Error("the file is empty: it needs a header row naming the columns");
    case CsvReader::Result::kError:
      return Status::Error(error + " (in the header row)", header.row);
    case CsvReader::Result::kRecord:
      break;
  }
  std::vector<std::string> names;
  for (const std::string& f : header.fields) {
    size_t b = 0, e = f.size();
    while (b < e && (f[b] == ' ' || f[b] == '\t')) ++b;
    while (e > b && (f[e - 1] == ' ' || f[e - 1] == '\t')) --e;
    names.push_back(f.substr(b, e - b));
  }
  if (Status s = mapping.Bind(header.fields, &mapper_); !s.ok()) return s;
  reader_->SetColumnNames(std::move(names));
  return Status::Ok();
}

bool CsvEventSource::Next(Row* row) {
  std::string error;
  switch (reader_->Next(&row->record, &error)) {
    case CsvReader::Result::kEnd:
      return false;
    case CsvReader::Result::kError:
      row->ok = false;
      row->event.Clear();
      row->problem = WithoutRow(error);
      return true;
    case CsvReader::Result::kRecord:
      break;
  }
  row->problem = mapper_.Map(row->record, &row->event);
  row->ok = row->problem.empty();
  return true;
}

ErrorReport::ErrorReport(std::ostream* out, const std::vector<std::string>& header, char delimiter)
    : out_(out), delimiter_(delimiter) {
  std::vector<std::string> fields = {"row", "reason"};
  fields.insert(fields.end(), header.begin(), header.end());
  *out_ << FormatCsvRecord(fields, delimiter_);
}

void ErrorReport::Add(const CsvRecord& record, const std::string& reason) {
  std::vector<std::string> fields = {std::to_string(record.row), reason};
  if (record.fields.empty()) {
    fields.push_back(record.raw);
  } else {
    fields.insert(fields.end(), record.fields.begin(), record.fields.end());
  }
  *out_ << FormatCsvRecord(fields, delimiter_);
  ++rows_;
}

bool ParseBrokerRejection(std::string_view message, size_t* index, std::string* detail) {
  constexpr std::string_view kPrefix = "events[";
  if (message.substr(0, kPrefix.size()) != kPrefix) return false;
  size_t i = kPrefix.size();
  size_t value = 0;
  const size_t digits_start = i;
  while (i < message.size() && std::isdigit(static_cast<unsigned char>(message[i])) &&
         i - digits_start < 9) {
    value = value * 10 + static_cast<size_t>(message[i] - '0');
    ++i;
  }
  if (i == digits_start || i >= message.size() || message[i] != ']') return false;
  ++i;
  if (i < message.size() && message[i] == '.') ++i;
  *index = value;
  *detail = std::string(message.substr(i));
  if (detail->rfind(": ", 0) == 0) *detail = detail->substr(2);
  return true;
}

std::string BrokerRejectionReason(const RowMapper& mapper, const std::string& detail) {
  const size_t colon = detail.find(": ");
  const std::string path = colon == std::string::npos ? std::string() : detail.substr(0, colon);
  const std::string column = path.empty() ? std::string() : mapper.ColumnFor(path);
  std::string reason = "rejected by the broker: " + detail;
  if (!column.empty()) reason = "column '" + column + "': " + reason;
  return reason;
}

}  // namespace icr::adapters::csv
