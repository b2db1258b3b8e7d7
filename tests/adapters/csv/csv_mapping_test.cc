// Mapping files: every supported event type from its fixture export, the
// content-hash message ids, load-time errors that name the key, the
// malformed-input suite (each bad row gives its exact error and no event),
// broker rejections turned back into columns, and the error report.
#include "adapters/csv/csv_mapping.h"

#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "adapters/csv/csv_import.h"

#ifndef ICR_CSV_FIXTURES
#error "ICR_CSV_FIXTURES must name tests/adapters/csv/fixtures"
#endif

namespace icr::adapters::csv {
namespace {

using google::protobuf::util::TimeUtil;
using icr::v1::CareEvent;

std::string Fixture(const std::string& name) { return std::string(ICR_CSV_FIXTURES) + "/" + name; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Mapped {
  Status open;
  std::vector<CsvEventSource::Row> rows;
  std::vector<std::string> header;
  std::vector<const CsvEventSource::Row*> ok() const {
    std::vector<const CsvEventSource::Row*> out;
    for (const auto& r : rows) {
      if (r.ok) out.push_back(&r);
    }
    return out;
  }
  const CsvEventSource::Row& Row(uint64_t n) const {
    for (const auto& r : rows) {
      if (r.record.row == n) return r;
    }
    static const CsvEventSource::Row kNone;
    ADD_FAILURE() << "no row " << n;
    return kNone;
  }
};

Mapped MapText(const Mapping& mapping, const std::string& csv) {
  Mapped m;
  std::istringstream in(csv);
  CsvEventSource source;
  m.open = source.Open(&in, mapping);
  if (!m.open.ok()) return m;
  m.header = source.header();
  CsvEventSource::Row row;
  while (source.Next(&row)) m.rows.push_back(row);
  return m;
}

Mapping LoadMapping(const std::string& name) {
  Mapping mapping;
  Status s = Mapping::Load(Fixture(name), &mapping);
  EXPECT_TRUE(s.ok()) << s.message();
  return mapping;
}

Mapped MapFixture(const std::string& mapping, const std::string& csv) {
  return MapText(LoadMapping(mapping), ReadFile(Fixture(csv)));
}

std::string Iso(const google::protobuf::Timestamp& t) { return TimeUtil::ToString(t); }

void ExpectDate(const icr::v1::Date& d, int y, int m, int day) {
  EXPECT_EQ(d.year(), y);
  EXPECT_EQ(d.month(), m);
  EXPECT_EQ(d.day(), day);
}

void ExpectEnvelope(const CareEvent& e) {
  EXPECT_EQ(e.source_system_id(), "ccc-care-director");
  EXPECT_EQ(e.source_organisation(), "CCC");
  EXPECT_EQ(e.care_setting(), icr::v1::SOCIAL_CARE);
  EXPECT_EQ(e.priority(), icr::v1::BULK);
  EXPECT_FALSE(e.source_message_id().empty());
}

// ---------------------------------------------------------------------------
// The six social care event types, from their fixture exports
// ---------------------------------------------------------------------------

TEST(CsvMapping, CarePackageStartFromCareDirectorExport) {
  Mapped m = MapFixture("care_packages.mapping.json", "care_packages.csv");
  ASSERT_TRUE(m.open.ok()) << m.open.message();
  ASSERT_EQ(m.rows.size(), 22u);
  EXPECT_EQ(m.header.front(), "Person ID");  // the BOM is not part of it
  EXPECT_EQ(m.ok().size(), 21u);

  const CareEvent& e = m.Row(2).event;
  ExpectEnvelope(e);
  EXPECT_EQ(e.nhs_number(), "999 000 0018");                // the broker normalises the spaces
  EXPECT_EQ(Iso(e.occurred_at()), "2025-01-01T09:00:00Z");  // GMT in January
  ASSERT_EQ(e.payload_case(), CareEvent::kCarePackageStart);
  const auto& p = e.care_package_start();
  EXPECT_EQ(p.package_id(), "PKG-230100");
  EXPECT_EQ(p.service_type(), icr::v1::HOME_SUPPORT);
  EXPECT_EQ(p.provider(), "VNA12");
  ExpectDate(p.start_date(), 2025, 1, 1);
  EXPECT_DOUBLE_EQ(p.hours_per_week(), 14);
  EXPECT_EQ(e.source_message_id().rfind("csv:", 0), 0u);
  EXPECT_EQ(e.source_message_id().size(), 36u);

  // Row 5 holds a quoted line break, so row 6 starts on line 7.
  EXPECT_TRUE(m.Row(5).ok);
  EXPECT_EQ(m.Row(6).record.line, 7u);
  EXPECT_EQ(Iso(m.Row(6).event.occurred_at()), "2025-05-05T12:28:00Z");  // BST
  EXPECT_EQ(m.Row(8).event.care_package_start().service_type(), icr::v1::DEMENTIA_RESIDENTIAL);
  EXPECT_EQ(m.Row(8).event.care_package_start().hours_per_week(), 0);  // empty cell: unset
  EXPECT_DOUBLE_EQ(m.Row(4).event.care_package_start().hours_per_week(), 7.5);

  const auto& bad = m.Row(13);
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(RowError(13, bad.problem),
            "row 13, column 'Start Date': '31/02/2026' is not a valid date (format %d/%m/%Y)");
  EXPECT_EQ(bad.event.ByteSizeLong(), 0u);
  // Row 18's NHS number fails Modulus 11: the broker, not the mapping, says so.
  EXPECT_TRUE(m.Row(18).ok);

  std::set<std::string> ids;
  for (const auto* r : m.ok()) ids.insert(r->event.source_message_id());
  EXPECT_EQ(ids.size(), 21u);
}

TEST(CsvMapping, CareActAssessmentsWithIdColumn) {
  Mapped m = MapFixture("assessments.mapping.json", "assessments.csv");
  ASSERT_TRUE(m.open.ok()) << m.open.message();
  ASSERT_EQ(m.rows.size(), 10u);
  EXPECT_EQ(m.ok().size(), 8u);
  const CareEvent& e = m.Row(2).event;
  ExpectEnvelope(e);
  EXPECT_EQ(e.source_message_id(), "caa:CAA-88100");
  EXPECT_EQ(e.nhs_number(), "9990000247");
  EXPECT_EQ(e.addressee().organisation(), "CCC");
  EXPECT_EQ(e.addressee().team_code(), "HSCT-UHCW");
  EXPECT_EQ(Iso(e.occurred_at()), "2025-01-01T00:00:00Z");  // midnight, GMT
  EXPECT_EQ(e.care_act_assessment().assessment_id(), "CAA-88100");
  EXPECT_EQ(e.care_act_assessment().outcome(), "eligible");
  ExpectDate(e.care_act_assessment().assessed_on(), 2025, 1, 1);
  EXPECT_EQ(m.Row(3).event.care_act_assessment().outcome(), "not eligible");
  EXPECT_EQ(Iso(m.Row(5).event.occurred_at()), "2025-04-09T23:00:00Z");  // midnight BST

  EXPECT_EQ(RowError(6, m.Row(6).problem),
            "row 6, column 'Completed Date': '2025-05-13' is not a valid date (format %d/%m/%Y)");
  EXPECT_EQ(RowError(9, m.Row(9).problem),
            "row 9, column 'Assessment ID': is empty, but care_act_assessment.assessment_id is "
            "required");
}

TEST(CsvMapping, CarePackageEnd) {
  Mapped m = MapFixture("care_package_ends.mapping.json", "care_package_ends.csv");
  ASSERT_TRUE(m.open.ok()) << m.open.message();
  ASSERT_EQ(m.ok().size(), 4u);
  const CareEvent& e = m.Row(3).event;
  ExpectEnvelope(e);
  ASSERT_EQ(e.payload_case(), CareEvent::kCarePackageEnd);
  EXPECT_EQ(e.care_package_end().package_id(), "PKG-230102");
  ExpectDate(e.care_package_end().end_date(), 2025, 11, 2);
  EXPECT_EQ(e.care_package_end().reason(), "Needs met - no longer eligible");
  EXPECT_EQ(Iso(e.occurred_at()), "2025-11-03T09:12:00Z");
}

TEST(CsvMapping, ReablementStartAndEndFromOneExport) {
  Mapped starts = MapFixture("reablement_starts.mapping.json", "reablement.csv");
  Mapped ends = MapFixture("reablement_ends.mapping.json", "reablement.csv");
  ASSERT_TRUE(starts.open.ok()) << starts.open.message();
  ASSERT_TRUE(ends.open.ok()) << ends.open.message();
  ASSERT_EQ(starts.ok().size(), 4u);
  ASSERT_EQ(ends.ok().size(), 4u);
  const CareEvent& s = starts.Row(2).event;
  ExpectEnvelope(s);
  EXPECT_EQ(s.source_message_id(), "reablement-start:RB-2025-0041");
  EXPECT_EQ(s.reablement_start().episode_id(), "RB-2025-0041");
  ExpectDate(s.reablement_start().start_date(), 2025, 8, 1);
  EXPECT_EQ(s.reablement_start().provider(), "Coventry Reablement Service");
  ExpectDate(starts.Row(4).event.reablement_start().start_date(), 2025, 8, 6);  // 06-Aug-2025
  const CareEvent& e = ends.Row(3).event;
  EXPECT_EQ(e.source_message_id(), "reablement-end:RB-2025-0042");
  ExpectDate(e.reablement_end().end_date(), 2025, 9, 12);
  EXPECT_EQ(e.reablement_end().outcome(), "ongoing package");
}

TEST(CsvMapping, DemographicsUpdateTabSeparated) {
  Mapped m = MapFixture("demographics.mapping.json", "demographics.tsv");
  ASSERT_TRUE(m.open.ok()) << m.open.message();
  ASSERT_EQ(m.ok().size(), 4u);
  const CareEvent& e = m.Row(2).event;
  ExpectEnvelope(e);
  const auto& d = e.demographics_update();
  EXPECT_EQ(d.family_name(), "Abbott");
  ASSERT_EQ(d.given_names_size(), 2);
  EXPECT_EQ(d.given_names(0), "Margaret");
  EXPECT_EQ(d.given_names(1), "Rose");
  ExpectDate(d.birth_date(), 1938, 4, 12);
  EXPECT_EQ(d.gender(), "female");
  EXPECT_EQ(d.postcode(), "CV1 2GT");
  EXPECT_EQ(d.place(), icr::v1::COVENTRY);
  EXPECT_EQ(d.local_authority(), "Coventry");                            // a constant
  EXPECT_EQ(Iso(e.occurred_at()), "2025-06-02T09:15:00Z");               // +01:00 given
  EXPECT_EQ(Iso(m.Row(3).event.occurred_at()), "2025-06-03T08:00:00Z");  // Z
  EXPECT_EQ(Iso(m.Row(4).event.occurred_at()), "2025-06-04T13:30:00Z");  // local, BST
  EXPECT_EQ(Iso(m.Row(5).event.occurred_at()), "2025-11-03T09:00:00Z");  // local, GMT
  EXPECT_EQ(m.Row(4).event.demographics_update().place(), icr::v1::WARWICKSHIRE_NORTH);
  EXPECT_EQ(m.Row(5).event.demographics_update().gender(), "unknown");
}

TEST(CsvMapping, GpRegistrationWithDefault) {
  Mapped m = MapFixture("gp_registrations.mapping.json", "gp_registrations.csv");
  ASSERT_TRUE(m.open.ok()) << m.open.message();
  ASSERT_EQ(m.ok().size(), 3u);
  const CareEvent& e = m.Row(2).event;
  ExpectEnvelope(e);
  EXPECT_EQ(e.gp_registration().practice(), "M86001");
  ExpectDate(e.gp_registration().registered_on(), 2025, 3, 14);
  // An empty "Registered": no registered_on; occurred_at takes the default.
  const CareEvent& blank = m.Row(4).event;
  EXPECT_FALSE(blank.gp_registration().has_registered_on());
  EXPECT_EQ(Iso(blank.occurred_at()), "2025-01-01T00:00:00Z");
}

// ---------------------------------------------------------------------------
// Message ids
// ---------------------------------------------------------------------------

const char* kPackagesHeader =
    "NHS Number,Package ID,Service,Start Date,Hours,Provider,Updated,Notes\n";

const char* kPackagesMapping = R"({
  "event_type": "CARE_PACKAGE_START",
  "constants": {"source_system_id": "ccc-care-director", "source_organisation": "CCC",
                "care_setting": "SOCIAL_CARE"},
  "fields": {
    "nhs_number": "NHS Number",
    "occurred_at": {"column": "Updated", "format": "%d/%m/%Y %H:%M"},
    "care_package_start.package_id": "Package ID",
    "care_package_start.service_type": {"column": "Service",
        "values": {"Home care": "HOME_SUPPORT", "Residential": "RESIDENTIAL"}},
    "care_package_start.start_date": {"column": "Start Date", "format": "%d/%m/%Y"},
    "care_package_start.hours_per_week": "Hours",
    "care_package_start.provider": "Provider"
  }
})";

Mapping PackagesMapping() {
  Mapping m;
  Status s = Mapping::Parse(kPackagesMapping, &m);
  EXPECT_TRUE(s.ok()) << s.message();
  return m;
}

const char* kGoodRow = "9990000018,PKG-1,Home care,01/03/2025,10,VNA12,01/03/2025 09:00,note\n";
const char* kGoodRow2 = "9990000026,PKG-2,Residential,02/03/2025,,VNB07,02/03/2025 10:00,\n";

std::string IdOf(const std::string& row) {
  Mapped m = MapText(PackagesMapping(), std::string(kPackagesHeader) + row);
  EXPECT_TRUE(m.open.ok());
  EXPECT_EQ(m.rows.size(), 1u);
  EXPECT_TRUE(m.rows.at(0).ok) << m.rows.at(0).problem;
  return m.rows.at(0).event.source_message_id();
}

TEST(CsvMessageId, ContentHashIsStableAndCoversOnlyMappedCells) {
  const std::string id = IdOf(kGoodRow);
  EXPECT_EQ(IdOf(kGoodRow), id);
  // Unmapped column edited, spaces around cells, another row order: same id.
  EXPECT_EQ(IdOf("9990000018,PKG-1,Home care,01/03/2025,10,VNA12,01/03/2025 09:00,other\n"), id);
  EXPECT_EQ(IdOf(" 9990000018 ,PKG-1, Home care,01/03/2025,10 ,VNA12,01/03/2025 09:00,note\n"), id);
  // A mapped cell edited: a new message.
  EXPECT_NE(IdOf("9990000018,PKG-1,Home care,01/03/2025,12,VNA12,01/03/2025 09:00,note\n"), id);
  EXPECT_NE(IdOf("9990000018,PKG-1,Home care,01/03/2025,10,VNA13,01/03/2025 09:00,note\n"), id);
  // Cells do not run into each other: "ab","c" differs from "a","bc".
  EXPECT_NE(IdOf("9990000018,PKG-1,Home care,01/03/2025,10,VNA12,01/03/2025 09:00,\n"),
            IdOf("9990000018,PKG-,Home care,01/03/2025,10,1VNA12,01/03/2025 09:00,\n"));
}

TEST(CsvMessageId, SameRowUnderAnotherEventTypeGetsAnotherId) {
  Mapping end;
  ASSERT_TRUE(Mapping::Parse(R"({
    "event_type": "CARE_PACKAGE_END",
    "constants": {"source_system_id": "x", "source_organisation": "CCC", "care_setting": "SOCIAL_CARE"},
    "fields": {"nhs_number": "NHS Number", "occurred_at": {"column": "Updated", "format": "%d/%m/%Y %H:%M"},
               "care_package_end.package_id": "Package ID",
               "care_package_end.end_date": {"column": "Start Date", "format": "%d/%m/%Y"}}})",
                             &end)
                  .ok());
  Mapped m = MapText(end, std::string(kPackagesHeader) + kGoodRow);
  ASSERT_TRUE(m.rows.at(0).ok) << m.rows.at(0).problem;
  EXPECT_NE(m.rows.at(0).event.source_message_id(), IdOf(kGoodRow));
}

TEST(CsvMessageId, IdColumnAndPrefix) {
  Mapping m;
  std::string json = kPackagesMapping;
  json.insert(json.find("\"constants\""), "\"message_id\": \"Package ID\",\n");
  ASSERT_TRUE(Mapping::Parse(json, &m).ok());
  Mapped out = MapText(m, std::string(kPackagesHeader) + kGoodRow);
  EXPECT_EQ(out.rows.at(0).event.source_message_id(), "care_package_start:PKG-1");
  json = kPackagesMapping;
  json.insert(json.find("\"constants\""),
              "\"message_id\": {\"column\": \"Package ID\", \"prefix\": \"cd-\"},\n");
  ASSERT_TRUE(Mapping::Parse(json, &m).ok());
  out = MapText(m, std::string(kPackagesHeader) + kGoodRow);
  EXPECT_EQ(out.rows.at(0).event.source_message_id(), "cd-PKG-1");
}

// ---------------------------------------------------------------------------
// Load-time errors name the key
// ---------------------------------------------------------------------------

struct LoadCase {
  const char* name;
  std::string json;
  const char* expected;
};

std::string WithFields(const std::string& extra_fields, const std::string& extra_top = "") {
  return R"({"event_type": "CARE_PACKAGE_START", )" + extra_top +
         R"("constants": {"source_system_id": "s", "source_organisation": "CCC", "care_setting": "SOCIAL_CARE"},
     "fields": {"nhs_number": "NHS", "occurred_at": "When", "care_package_start.package_id": "Id",
                "care_package_start.service_type": "Service", "care_package_start.start_date": "Start")" +
         extra_fields + "}}";
}

TEST(CsvMappingLoad, ErrorsNameTheKey) {
  const std::vector<LoadCase> cases = {
      {"valid", WithFields(""), ""},
      {"not json", "{\"event_type\": ", "the mapping file is not valid JSON: "},
      {"not an object", "[1,2]", "must hold one JSON object"},
      {"unknown top key", WithFields("", R"("fomat": 1, )"),
       "unknown key \"fomat\" (known: event_type, fields"},
      {"no event type", R"({"fields": {}})", "event_type: is required"},
      {"bad event type", R"({"event_type": "CARE_PACKAGE", "fields": {}})",
       "event_type: \"CARE_PACKAGE\" is not an EventType (valid: DEMOGRAPHICS_UPDATE"},
      {"no fields", R"({"event_type": "GP_REGISTRATION"})", "fields: is required"},
      {"unknown path", WithFields(R"(, "care_package_start.hours_per_wek": "H")"),
       "fields.care_package_start.hours_per_wek: CarePackageStart has no field \"hours_per_wek\" "
       "(fields: package_id, service_type, provider, start_date, hours_per_week)"},
      {"unknown top field", WithFields(R"(, "nhs": "H")"),
       "fields.nhs: CareEvent has no field \"nhs\""},
      {"other payload", WithFields(R"(, "care_package_end.reason": "R")"),
       "fields.care_package_end.reason: belongs to CARE_PACKAGE_END events, but this mapping makes "
       "CARE_PACKAGE_START events"},
      {"broker assigned", WithFields(R"(, "position": "P")"),
       "fields.position: is assigned by the broker"},
      {"message id path", WithFields(R"(, "source_message_id": "P")"),
       "fields.source_message_id: is set by the importer: use \"message_id\""},
      {"priority", WithFields(R"(, "priority": "P")"), "fields.priority: cannot be mapped"},
      {"message path", WithFields(R"(, "addressee": "A")"),
       "fields.addressee: is a TeamRef message: map its fields, e.g. \"addressee.organisation\""},
      {"through a scalar", WithFields(R"(, "nhs_number.x": "A")"),
       "fields.nhs_number.x: \"nhs_number\" is a string field"},
      {"empty path part", WithFields(R"(, "addressee..team_code": "A")"), "is not a field path"},
      {"no column", WithFields(R"(, "care_package_start.provider": {"format": "x"})"),
       "fields.care_package_start.provider: needs \"column\""},
      {"empty column", WithFields(R"(, "care_package_start.provider": " ")"),
       "fields.care_package_start.provider: the column name is empty"},
      {"format on string",
       WithFields(R"(, "care_package_start.provider": {"column": "P", "format": "%d/%m/%Y"})"),
       "fields.care_package_start.provider.format: only dates and times take a format"},
      {"bad format",
       R"({"event_type": "GP_REGISTRATION", "constants": {"source_system_id": "s", "source_organisation": "CCC", "care_setting": "SOCIAL_CARE"},
          "fields": {"nhs_number": "N", "occurred_at": "W", "gp_registration.practice": "P",
                     "gp_registration.registered_on": {"column": "R", "format": "%d/%m/%y"}}})",
       "fields.gp_registration.registered_on.format: \"%d/%m/%y\" has the unknown directive %y"},
      {"bad timezone", WithFields("", R"("timezone": "Europe/Paris", )"),
       "timezone: must be \"Europe/London\" (the default) or \"UTC\""},
      {"bad enum value",
       WithFields("").replace(WithFields("").find("\"Service\""), 9,
                              R"({"column": "Service", "values": {"Home care": "HOME_SUPORT"}})"),
       "fields.care_package_start.service_type.values.Home care: 'HOME_SUPORT' is not a "
       "ServiceType (valid: HOME_SUPPORT"},
      {"values twice",
       WithFields("").replace(
           WithFields("").find("\"Service\""), 9,
           R"({"column": "Service", "values": {"A": "NURSING", "a": "NURSING"}})"),
       "values.a: is listed twice"},
      {"bad default",
       WithFields(R"(, "care_package_start.hours_per_week": {"column": "H", "default": "lots"})"),
       "fields.care_package_start.hours_per_week.default: 'lots' is not a number"},
      {"separator on single",
       WithFields(R"(, "care_package_start.provider": {"column": "P", "separator": ";"})"),
       "fields.care_package_start.provider.separator: only list (repeated) fields take a "
       "separator"},
      {"unknown field key",
       WithFields(R"(, "care_package_start.provider": {"column": "P", "fromat": "x"})"),
       "fields.care_package_start.provider: unknown key \"fromat\""},
      {"bad constant",
       R"({"event_type": "GP_REGISTRATION", "constants": {"source_system_id": "s", "source_organisation": "CCC", "care_setting": "SOCIAL"},
          "fields": {"nhs_number": "N", "occurred_at": "W", "gp_registration.practice": "P"}})",
       "constants.care_setting: 'SOCIAL' is not a CareSetting (valid: GP, ACUTE"},
      {"constant and field",
       WithFields(R"(, "care_package_start.provider": "P")")
           .replace(WithFields("").find("\"care_setting\""), 0,
                    R"("care_package_start.provider": "X", )"),
       "constants.care_package_start.provider: is also in \"fields\""},
      {"required unset",
       R"({"event_type": "CARE_PACKAGE_START", "constants": {"source_system_id": "s", "source_organisation": "CCC", "care_setting": "SOCIAL_CARE"},
          "fields": {"nhs_number": "N", "occurred_at": "W", "care_package_start.package_id": "P",
                     "care_package_start.start_date": "S"}})",
       "the mapping does not set care_package_start.service_type, which CARE_PACKAGE_START events "
       "must have"},
      {"required envelope unset",
       R"({"event_type": "GP_REGISTRATION", "constants": {"source_system_id": "s", "care_setting": "SOCIAL_CARE"},
          "fields": {"nhs_number": "N", "occurred_at": "W", "gp_registration.practice": "P"}})",
       "the mapping does not set source_organisation, which every event must have"},
      {"nested required unset", WithFields(R"(, "addressee.organisation": "Org")"),
       "the mapping does not set addressee.team_code"},
      {"duplicate key", WithFields(R"(, "nhs_number": "Other")"),
       "the key \"nhs_number\" appears twice"},
      {"bad delimiter", WithFields("", R"("delimiter": "\"", )"),
       "delimiter: must be one character"},
      {"bad message id", WithFields("", R"("message_id": 5, )"),
       "message_id: must be a column name"},
      {"bad id prefix",
       WithFields("", R"("message_id": {"column": "Id", "prefix": "caf\u00e9"}, )"),
       "message_id.prefix: must be at most 64 printable ASCII characters"},
  };
  for (const LoadCase& c : cases) {
    Mapping m;
    Status s = Mapping::Parse(c.json, &m);
    if (std::string(c.expected).empty()) {
      EXPECT_TRUE(s.ok()) << c.name << ": " << s.message();
      continue;
    }
    EXPECT_FALSE(s.ok()) << c.name;
    EXPECT_NE(s.message().find(c.expected), std::string::npos)
        << c.name << "\n  got:      " << s.message() << "\n  expected: " << c.expected;
  }
}

TEST(CsvMappingLoad, EverySupportedFixtureLoads) {
  for (const char* name :
       {"care_packages.mapping.json", "care_package_ends.mapping.json", "assessments.mapping.json",
        "reablement_starts.mapping.json", "reablement_ends.mapping.json",
        "demographics.mapping.json", "gp_registrations.mapping.json"}) {
    Mapping m;
    Status s = Mapping::Load(Fixture(name), &m);
    EXPECT_TRUE(s.ok()) << name << ": " << s.message();
  }
  Mapping m;
  Status s = Mapping::Load(Fixture("no-such.mapping.json"), &m);
  EXPECT_NE(s.message().find("cannot open the mapping file"), std::string::npos);
}

TEST(CsvMappingBind, MissingAndAmbiguousColumns) {
  Mapped m = MapText(PackagesMapping(), "NHS Number,Package ID,Service,Start Date,Hours,Updated\n");
  ASSERT_FALSE(m.open.ok());
  EXPECT_EQ(m.open.message(),
            "fields.care_package_start.provider: the column 'Provider' is not in the file's header "
            "(columns: 'NHS Number', 'Package ID', 'Service', 'Start Date', 'Hours', 'Updated')");
  m = MapText(PackagesMapping(),
              "NHS Number,Package ID,Service,Start Date,Hours,Provider,Updated,hours \n");
  ASSERT_FALSE(m.open.ok());
  EXPECT_NE(m.open.message().find("fields.care_package_start.hours_per_week: the column 'Hours' "
                                  "appears 2 times in the header (columns 5 and 8)"),
            std::string::npos)
      << m.open.message();
  // Names match ignoring case and surrounding spaces.
  m = MapText(PackagesMapping(),
              " nhs number ,PACKAGE ID,service,start date,hours,provider,updated\n");
  EXPECT_TRUE(m.open.ok()) << m.open.message();
  m = MapText(PackagesMapping(), "");
  EXPECT_EQ(m.open.message(), "the file is empty: it needs a header row naming the columns");
  m = MapText(PackagesMapping(), "NHS Number,\"Package ID\"x\n");
  EXPECT_NE(m.open.message().find("row 1, column 2: unexpected 'x' after the closing quote"),
            std::string::npos)
      << m.open.message();
}

// ---------------------------------------------------------------------------
// The malformed-input suite: one bad row between good ones; each gives its
// exact error, names the row, and makes no event.
// ---------------------------------------------------------------------------

struct BadRow {
  const char* name;
  std::string text;        // the bad record(s), with their line ending
  std::string expected;    // a substring of RowError(3, problem)
  bool good_after = true;  // a good row after it is still read
};

std::string Cells(const std::string& nhs, const std::string& id, const std::string& service,
                  const std::string& start, const std::string& hours, const std::string& provider,
                  const std::string& updated) {
  return nhs + "," + id + "," + service + "," + start + "," + hours + "," + provider + "," +
         updated + ",\n";
}

std::string Row(std::string start = "01/03/2025", std::string hours = "10",
                std::string updated = "01/03/2025 09:00", std::string service = "Home care",
                std::string provider = "VNA12", std::string id = "PKG-9",
                std::string nhs = "9990000034") {
  return Cells(nhs, id, service, start, hours, provider, updated);
}

TEST(CsvMalformed, EachBadRowIsRejectedWithItsError) {
  const std::string big_field(64 * 1024 + 1, 'x');
  std::string big_record;
  for (int i = 0; i < 20; ++i) big_record += std::string(60000, 'y') + ",";
  big_record += "\n";
  std::string wide;
  for (int i = 0; i < 600; ++i) wide += "c,";
  wide += "\n";
  const std::vector<BadRow> cases = {
      {"impossible date", Row("31/02/2025"),
       "row 3, column 'Start Date': '31/02/2025' is not a valid date (format %d/%m/%Y)"},
      {"US date", Row("03/31/2025"), "column 'Start Date': '03/31/2025' is not a valid date"},
      {"ISO date in a UK column", Row("2025-03-01"),
       "column 'Start Date': '2025-03-01' is not a valid date (format %d/%m/%Y)"},
      {"two-digit year", Row("01/03/25"), "'01/03/25' is not a valid date"},
      {"year before 1900", Row("01/03/1899"),
       "row 3, column 'Start Date': '01/03/1899' is in year 1899, outside the supported years "
       "1900..2200"},
      {"29 February, no leap year", Row("29/02/2025"), "'29/02/2025' is not a valid date"},
      {"time in a date column", Row("01/03/2025 10:00"), "'01/03/2025 10:00' is not a valid date"},
      {"empty required date", Row(""),
       "row 3, column 'Start Date': is empty, but care_package_start.start_date is required"},
      {"blank required date", Row("   "), "column 'Start Date': is empty"},
      {"empty package id", Row("01/03/2025", "10", "01/03/2025 09:00", "Home care", "VNA12", ""),
       "column 'Package ID': is empty, but care_package_start.package_id is required"},
      {"empty NHS number",
       Row("01/03/2025", "10", "01/03/2025 09:00", "Home care", "VNA12", "PKG-9", ""),
       "row 3, column 'NHS Number': is empty, but nhs_number is required"},
      {"unknown service", Row("01/03/2025", "10", "01/03/2025 09:00", "Day care"),
       "column 'Service': 'Day care' is not one of the values the mapping lists ('Home care', "
       "'Residential')"},
      {"hours in words", Row("01/03/2025", "ten"), "column 'Hours': 'ten' is not a number"},
      {"hours with exponent", Row("01/03/2025", "1e3"), "'1e3' is not a number"},
      {"hours with decimal comma", Row("01/03/2025", "\"10,5\""), "'10,5' is not a number"},
      {"hours nan", Row("01/03/2025", "nan"), "'nan' is not a number"},
      {"hours inf", Row("01/03/2025", "inf"), "'inf' is not a number"},
      {"hours dash", Row("01/03/2025", "-"), "'-' is not a number"},
      {"hours with control byte", Row("01/03/2025", "1\x01"), "'1?' is not a number"},
      {"hours with line break", Row("01/03/2025", "\"1\n0\""), "'1?0' is not a number"},
      {"long cell is shortened", Row("01/03/2025", std::string(100, 'z')),
       "'" + std::string(60, 'z') + "...' is not a number"},
      {"hour 25", Row("01/03/2025", "10", "01/03/2025 25:00"),
       "row 3, column 'Updated': '01/03/2025 25:00' is not a valid date and time (format "
       "%d/%m/%Y %H:%M)"},
      {"no time", Row("01/03/2025", "10", "01/03/2025"),
       "'01/03/2025' is not a valid date and time"},
      {"31 April", Row("01/03/2025", "10", "31/04/2025 10:00"),
       "'31/04/2025 10:00' is not a valid date and time"},
      {"two problems", Row("31/02/2025", "ten"),
       "row 3, column 'Start Date': '31/02/2025' is not a valid date (format %d/%m/%Y); column "
       "'Hours': 'ten' is not a number"},
      {"Windows-1252 text", Row("01/03/2025", "10", "01/03/2025 09:00", "Home care", "Caf\xE9"),
       "column 'Provider': is not valid UTF-8 text (save the export as UTF-8)"},
      {"too few fields", "9990000034,PKG-9,Home care,01/03/2025,10,VNA12\n",
       "row 3: has 6 fields, but the header has 8 columns"},
      {"too many fields", "9990000034,PKG-9,Home care,01/03/2025,10,VNA12,01/03/2025 09:00,,x\n",
       "row 3: has 9 fields, but the header has 8 columns"},
      {"unquoted comma", Row("01/03/2025", "10", "01/03/2025 09:00", "Home care", "Allied, Cov"),
       "row 3: has 9 fields, but the header has 8 columns (a field holding the delimiter or a line "
       "break must be in quotes)"},
      {"stray quote", Row("01/03/2025", "10", "01/03/2025 09:00", "Home care", "The \"Limes\""),
       "row 3, column 'Provider': unexpected '\"' inside an unquoted field"},
      {"text after closing quote",
       Row("01/03/2025", "10", "01/03/2025 09:00", "Home care", "\"Limes\" Ltd"),
       "row 3, column 'Provider': unexpected ' ' after the closing quote"},
      {"field over 64 KiB", Row("01/03/2025", "10", "01/03/2025 09:00", "Home care", big_field),
       "row 3, column 'Provider': field is longer than the limit of 65,536 bytes"},
      {"record over 1 MiB", big_record,
       "row 3, column 18: record is longer than the limit of "
       "1,048,576 bytes"},
      {"over 512 fields", wide, "row 3: more than 512 fields (the limit)"},
      {"unclosed quote", "9990000034,\"PKG-9,Home care\n",
       "row 3, column 'Package ID': quoted "
       "field not closed (the quote opened on "
       "line 3 runs to the end of the input)",
       false},
  };
  ASSERT_GE(cases.size(), 30u);
  const Mapping mapping = PackagesMapping();
  for (const BadRow& c : cases) {
    const std::string csv =
        std::string(kPackagesHeader) + kGoodRow + c.text + (c.good_after ? kGoodRow2 : "");
    Mapped m = MapText(mapping, csv);
    ASSERT_TRUE(m.open.ok()) << c.name << ": " << m.open.message();
    ASSERT_EQ(m.rows.size(), c.good_after ? 3u : 2u) << c.name;
    EXPECT_TRUE(m.rows[0].ok) << c.name;
    const auto& bad = m.rows[1];
    EXPECT_EQ(bad.record.row, 3u) << c.name;
    EXPECT_FALSE(bad.ok) << c.name;
    EXPECT_EQ(bad.event.ByteSizeLong(), 0u) << c.name << ": a rejected row made an event";
    const std::string message = RowError(bad.record.row, bad.problem);
    EXPECT_NE(message.find(c.expected), std::string::npos)
        << c.name << "\n  got:      " << message << "\n  expected: " << c.expected;
    if (c.good_after) {
      EXPECT_TRUE(m.rows[2].ok) << c.name << ": " << m.rows[2].problem;
      EXPECT_EQ(m.rows[2].event.care_package_start().package_id(), "PKG-2") << c.name;
    }
  }
}

// ---------------------------------------------------------------------------
// Broker rejections and the error report
// ---------------------------------------------------------------------------

TEST(CsvBrokerRejection, ParseAndNameTheColumn) {
  size_t index = 99;
  std::string detail;
  ASSERT_TRUE(ParseBrokerRejection("events[3].nhs_number: check digit is wrong", &index, &detail));
  EXPECT_EQ(index, 3u);
  EXPECT_EQ(detail, "nhs_number: check digit is wrong");
  ASSERT_TRUE(ParseBrokerRejection("events[12]: 300000 bytes exceeds the limit", &index, &detail));
  EXPECT_EQ(index, 12u);
  EXPECT_EQ(detail, "300000 bytes exceeds the limit");
  EXPECT_FALSE(ParseBrokerRejection("event.nhs_number: x", &index, &detail));
  EXPECT_FALSE(ParseBrokerRejection("events: 10001 events exceeds the limit", &index, &detail));
  EXPECT_FALSE(ParseBrokerRejection("events[x]: y", &index, &detail));
  EXPECT_FALSE(ParseBrokerRejection("events[3", &index, &detail));

  RowMapper mapper;
  ASSERT_TRUE(PackagesMapping()
                  .Bind({"NHS Number", "Package ID", "Service", "Start Date", "Hours", "Provider",
                         "Updated"},
                        &mapper)
                  .ok());
  EXPECT_EQ(BrokerRejectionReason(mapper, "nhs_number: 9990000019 fails the Modulus 11 check"),
            "column 'NHS Number': rejected by the broker: nhs_number: 9990000019 fails the "
            "Modulus 11 check");
  EXPECT_EQ(BrokerRejectionReason(mapper, "care_package_start.start_date.year: is outside"),
            "column 'Start Date': rejected by the broker: care_package_start.start_date.year: is "
            "outside");
  EXPECT_EQ(BrokerRejectionReason(mapper, "source_organisation: must be 3..10 characters"),
            "rejected by the broker: source_organisation: must be 3..10 characters");
}

TEST(CsvErrorReport, HoldsRowReasonAndTheRowAsItWas) {
  std::ostringstream out;
  const std::vector<std::string> header = {"NHS Number", "Notes"};
  ErrorReport report(&out, header);
  CsvRecord parsed;
  parsed.row = 7;
  parsed.fields = {"9990000018", "say \"hi\", twice"};
  report.Add(parsed, "column 'NHS Number': rejected by the broker: nhs_number: bad");
  CsvRecord malformed;
  malformed.row = 9;
  malformed.raw = "99900,\"open";
  report.Add(malformed, "column 'Notes': quoted field not closed");
  EXPECT_EQ(report.rows(), 2u);
  EXPECT_EQ(out.str(),
            "row,reason,NHS Number,Notes\r\n"
            "7,column 'NHS Number': rejected by the broker: nhs_number: bad,9990000018,\"say "
            "\"\"hi\"\", twice\"\r\n"
            "9,column 'Notes': quoted field not closed,\"99900,\"\"open\"\r\n");
}

TEST(CsvErrorReport, FixedReportImportsWithTheSameMappingAndTheSameIds) {
  const Mapping mapping = LoadMapping("care_packages.mapping.json");
  const std::string original = ReadFile(Fixture("care_packages.csv"));
  Mapped m = MapText(mapping, original);
  ASSERT_TRUE(m.open.ok());
  std::ostringstream out;
  ErrorReport report(&out, m.header);
  for (const auto& r : m.rows) {
    if (!r.ok) report.Add(r.record, r.problem);
  }
  // Fix the date in the report, and the same row in the original.
  std::string fixed_report = out.str();
  fixed_report.replace(fixed_report.rfind("31/02/2026"), 10,
                       "28/02/2026");  // the cell, not the reason
  std::string fixed_original = original;
  fixed_original.replace(fixed_original.find("31/02/2026"), 10, "28/02/2026");
  Mapped again = MapText(mapping, fixed_report);
  ASSERT_TRUE(again.open.ok()) << again.open.message();
  ASSERT_EQ(again.rows.size(), 1u);
  ASSERT_TRUE(again.rows[0].ok) << again.rows[0].problem;
  Mapped whole = MapText(mapping, fixed_original);
  EXPECT_EQ(again.rows[0].event.source_message_id(), whole.Row(13).event.source_message_id());
  EXPECT_EQ(again.rows[0].event.care_package_start().package_id(), "PKG-230111");
}

}  // namespace
}  // namespace icr::adapters::csv
