// CSV adapter, part 3: mapping files, and rows to CareEvents.
//
// A mapping file (JSON; docs/adapters/csv.md has the full format) says which
// event type every row of a file makes, which column fills which CareEvent
// field, constants for the rest, and how to read dates, times and coded
// values:
//
//   {
//     "event_type": "CARE_PACKAGE_START",
//     "constants": {"source_system_id": "ccc-care-director",
//                   "source_organisation": "CCC", "care_setting": "SOCIAL_CARE"},
//     "fields": {
//       "nhs_number": "NHS Number",
//       "occurred_at": {"column": "Last Updated", "format": "%d/%m/%Y %H:%M"},
//       "care_package_start.package_id": "Package ID",
//       "care_package_start.service_type": {"column": "Service",
//                                           "values": {"Home care": "HOME_SUPPORT"}},
//       "care_package_start.start_date": {"column": "Start Date", "format": "%d/%m/%Y"}
//     }
//   }
//
// Field paths are resolved against icr.v1.CareEvent by protobuf reflection,
// so any event type and any scalar, enum, Date or Timestamp field (at any
// depth through singular messages) can be mapped. Every problem in the file
// (unknown key or path, a path outside the event type's payload, a bad
// format, enum value or constant, a required field left unset) is an error
// at load time that names the key; a column missing from the header is an
// error at Bind time naming the key and the column.
//
// Every event made has priority BULK. Its source_message_id is
//   "<prefix><cell>" when "message_id" names a column (default prefix: the
//     payload's field name and ':', e.g. "care_package_start:PKG-1001"), else
//   "csv:" + 32 hex digits of SHA-256 over the event type and the trimmed
//     cells of the mapped columns (by field path): the same row always gives
//     the same id, so importing a file again stores nothing twice; a row
//     whose mapped cells were edited is a new message.
//
// Thread-safety: a Mapping and a RowMapper are immutable once made; Map may
// be called from any number of threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/csv/csv_reader.h"
#include "icr/v1/events.pb.h"

namespace icr::adapters::csv {

struct MappingData;  // the parsed file (csv_mapping.cc)
class RowMapper;

class Mapping {
 public:
  Mapping();
  ~Mapping();
  Mapping(const Mapping&);
  Mapping& operator=(const Mapping&);

  // Parses a mapping file's text. On error the message names the key, e.g.
  // "fields.care_package_start.hours_per_wek: CarePackageStart has no field
  // \"hours_per_wek\" (fields: package_id, ...)". REQUIRES: out != nullptr.
  static Status Parse(std::string_view json_text, Mapping* out);
  // Reads and parses the file at `path` (at most 1 MiB).
  static Status Load(const std::string& path, Mapping* out);

  icr::v1::EventType event_type() const;
  // The CSV field delimiter the file asks for ("delimiter"; default ',').
  char delimiter() const;
  // The mapped columns, as named in the file, in field-path order.
  std::vector<std::string> columns() const;

  // Finds each mapped column in `header` (names compared without leading or
  // trailing spaces and ignoring case). Errors name the mapping key and list
  // the header's columns. REQUIRES: a parsed mapping; out != nullptr.
  Status Bind(const std::vector<std::string>& header, RowMapper* out) const;

 private:
  friend class RowMapper;
  std::shared_ptr<const MappingData> data_;
};

class RowMapper {
 public:
  RowMapper();
  ~RowMapper();
  RowMapper(const RowMapper&);
  RowMapper& operator=(const RowMapper&);

  // Makes the event of one record into *event (cleared first). Returns ""
  // on success, else every problem found, without the row number, e.g.
  // "column 'Start Date': '31/02/2026' is not a valid date (format
  // %d/%m/%Y)"; several are joined by "; ". Does not apply the broker's
  // ingest rules (NHS number check digit, ODS code form, dates in the
  // future): the broker does, and names the field.
  // REQUIRES: bound (Mapping::Bind succeeded); event != nullptr.
  std::string Map(const CsvRecord& record, icr::v1::CareEvent* event) const;

  // The header column a field path comes from ("nhs_number",
  // "care_package_start.start_date.day" -> the column of
  // care_package_start.start_date), or "" when no column fills it.
  std::string ColumnFor(std::string_view field_path) const;

  const std::vector<std::string>& header() const { return header_; }

 private:
  friend class Mapping;
  std::shared_ptr<const MappingData> data_;
  std::vector<std::string> header_;
  std::vector<size_t> column_index_;      // per field rule
  std::vector<std::string> column_name_;  // per field rule: the header's spelling
  size_t id_column_ = 0;
  bool has_id_column_ = false;
};

// "row 17, column 'Start Date': ..." from a row number and Map's problem.
std::string RowError(uint64_t row, const std::string& problem);

}  // namespace icr::adapters::csv
