// libFuzzer target for the CSV import path: the RFC 4180 reader, a fixed
// mapping (two, chosen by the first byte), the row mapping by reflection and
// the error report, as `icrctl import` runs them (less the network).
//
// Input: byte 0 selects the setup (bit 0: mapping A, placement requests,
// ',' and content-hash ids / mapping B, demographics, ';' and an id column;
// bit 1: small limits, so the limit paths run often); the rest is the file.
// Properties checked beyond "no crash, hang or leak":
//  - every row is either an event or a problem, never both; a rejected row
//    makes no event, and its error starts "row N";
//  - row numbers increase; the reader consumes the whole input;
//  - a mapped event has the mapping's payload, priority BULK, a message id
//    of 1..128 printable ASCII characters, and survives serialize + parse
//    (so its strings are valid UTF-8);
//  - the error report reads back as CSV: one record per rejected row with
//    its row number and reason; a parsed record written by FormatCsvRecord
//    reads back as the same fields.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>

#include "adapters/csv/csv_import.h"
#include "adapters/csv/csv_mapping.h"
#include "adapters/csv/csv_reader.h"

using namespace icr::adapters::csv;

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property failed: %s\n", what);
    std::abort();
  }
}

const char* kMappingA = R"({
  "event_type": "PLACEMENT_REQUEST",
  "constants": {"source_system_id": "ccc-care-director", "source_organisation": "CCC",
                "care_setting": "SOCIAL_CARE", "addressee.organisation": "CCC",
                "addressee.team_code": "BROKERAGE"},
  "fields": {
    "nhs_number": "NHS",
    "occurred_at": {"column": "Updated",
                    "format": ["%d/%m/%Y %H:%M", "%d-%b-%Y %I:%M %p", "%Y-%m-%dT%H:%M:%S.%f%z"]},
    "placement_request.request_id": "Request",
    "placement_request.service_type": {"column": "Service",
        "values": {"Home care": "HOME_SUPPORT", "Residential": "RESIDENTIAL", "Nursing": "NURSING"}},
    "placement_request.place": "Place",
    "placement_request.start_date": {"column": "Start", "format": "%d/%m/%Y"},
    "placement_request.hours_per_week": "Hours",
    "placement_request.calls_per_day": {"column": "Calls", "default": "1"},
    "placement_request.needs.dementia": "Dementia",
    "placement_request.needs.carers_per_call": "Carers",
    "placement_request.contact": "Contact"
  }
})";

const char* kMappingB = R"({
  "event_type": "DEMOGRAPHICS_UPDATE",
  "delimiter": ";",
  "timezone": "UTC",
  "message_id": {"column": "Id", "prefix": "demo:"},
  "constants": {"source_system_id": "ccc-care-director", "source_organisation": "CCC",
                "care_setting": "SOCIAL_CARE"},
  "fields": {
    "nhs_number": "NHS",
    "occurred_at": {"column": "When", "timezone": "Europe/London"},
    "demographics_update.family_name": "Surname",
    "demographics_update.given_names": {"column": "Forenames", "separator": " "},
    "demographics_update.birth_date": "Born",
    "demographics_update.gender": {"column": "Sex", "values": {"M": "male", "F": "female"}},
    "demographics_update.place": "Place"
  }
})";

const Mapping& GetMapping(bool b) {
  static const Mapping* mappings = [] {
    auto* m = new Mapping[2];
    Check(Mapping::Parse(kMappingA, &m[0]).ok(), "mapping A loads");
    Check(Mapping::Parse(kMappingB, &m[1]).ok(), "mapping B loads");
    return m;
  }();
  return mappings[b ? 1 : 0];
}

bool PrintableId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t setup = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool b = setup & 1;
  const Mapping& mapping = GetMapping(b);
  CsvLimits limits;
  if (setup & 2) {
    limits.max_field_bytes = 64;
    limits.max_columns = 12;
    limits.max_record_bytes = 512;
  }

  std::istringstream in(text);
  CsvEventSource source;
  Status s = source.Open(&in, mapping, limits);
  if (!s.ok()) {
    Check(!s.message().empty(), "an Open error has a message");
    return 0;
  }
  std::ostringstream report_text;
  ErrorReport report(&report_text, source.header(), source.delimiter());
  std::vector<std::pair<uint64_t, std::string>> rejected;
  CsvEventSource::Row row;
  uint64_t last_row = 1;
  while (source.Next(&row)) {
    Check(row.record.row > last_row, "row numbers increase");
    last_row = row.record.row;
    if (row.ok) {
      Check(row.problem.empty(), "an event has no problem");
      const icr::v1::CareEvent& e = row.event;
      Check(e.payload_case() == (b ? icr::v1::CareEvent::kDemographicsUpdate
                                   : icr::v1::CareEvent::kPlacementRequest),
            "the mapping's payload");
      Check(e.priority() == icr::v1::BULK, "priority BULK");
      Check(PrintableId(e.source_message_id()), "message id of printable ASCII");
      std::string bytes;
      Check(e.SerializeToString(&bytes), "serializes");
      icr::v1::CareEvent back;
      Check(back.ParseFromString(bytes), "parses back (valid UTF-8)");
      // A parsed record written out reads back as the same fields.
      std::istringstream again(FormatCsvRecord(row.record.fields, source.delimiter()));
      CsvLimits relaxed;
      relaxed.delimiter = source.delimiter();
      relaxed.max_record_bytes = size_t{8} << 20;
      CsvReader reader(&again, relaxed);
      CsvRecord copy;
      std::string error;
      Check(reader.Next(&copy, &error) == CsvReader::Result::kRecord, "written record reads");
      if (copy.fields != row.record.fields) {
        auto show = [](const std::vector<std::string>& fields) {
          for (const auto& f : fields) {
            std::fprintf(stderr, "  [");
            for (unsigned char c : f) {
              if (c >= 0x20 && c < 0x7f) std::fputc(c, stderr);
              else std::fprintf(stderr, "\\x%02x", c);
            }
            std::fprintf(stderr, "]\n");
          }
        };
        std::fprintf(stderr, "read:\n");
        show(row.record.fields);
        std::fprintf(stderr, "written and read back:\n");
        show(copy.fields);
      }
      Check(copy.fields == row.record.fields, "written record round-trips");
    } else {
      Check(!row.problem.empty(), "a rejected row has a problem");
      Check(row.event.ByteSizeLong() == 0, "a rejected row makes no event");
      const std::string message = RowError(row.record.row, row.problem);
      Check(message.rfind("row " + std::to_string(row.record.row), 0) == 0, "error names the row");
      report.Add(row.record, row.problem);
      rejected.emplace_back(row.record.row, row.problem);
    }
  }
  Check(source.bytes_consumed() == text.size(), "the whole input is read");

  // The error report reads back: header, then one record per rejected row.
  std::istringstream report_in(report_text.str());
  CsvLimits relaxed;
  relaxed.delimiter = source.delimiter();
  relaxed.max_columns = 1 << 20;
  relaxed.max_field_bytes = size_t{16} << 20;
  relaxed.max_record_bytes = size_t{64} << 20;
  CsvReader reader(&report_in, relaxed);
  CsvRecord record;
  std::string error;
  Check(reader.Next(&record, &error) == CsvReader::Result::kRecord, "report header");
  size_t n = 0;
  while (true) {
    const CsvReader::Result r = reader.Next(&record, &error);
    if (r == CsvReader::Result::kEnd) break;
    Check(r == CsvReader::Result::kRecord, "report rows parse");
    Check(n < rejected.size(), "no extra report rows");
    Check(record.fields.size() >= 2, "report row has row and reason");
    Check(record.fields[0] == std::to_string(rejected[n].first), "report row number");
    Check(record.fields[1] == rejected[n].second, "report reason");
    ++n;
  }
  Check(n == rejected.size(), "one report row per rejected row");
  return 0;
}
