// FHIR mapping unit tests: each fixture resource and Bundle type mapped to
// CareEvents (checked field by field and against the broker's own ingest
// validation), the strict JSON parser, and broker errors mapped back to FHIR
// expressions.
#include "adapters/fhir/fhir_mapping.h"

#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "adapters/fhir/fhir_json.h"
#include "broker/validation.h"

namespace icr::adapters::fhir {
namespace {

using nlohmann::json;

constexpr char kNhsWhere[] = "identifier.where(system='https://fhir.nhs.uk/Id/nhs-number')";

std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(ICR_SOURCE_DIR) + "/tests/adapters/fhir/fixtures/" + name);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t Micros(const char* rfc3339) {
  google::protobuf::Timestamp t;
  EXPECT_TRUE(google::protobuf::util::TimeUtil::FromString(rfc3339, &t)) << rfc3339;
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

int64_t Seconds(const char* rfc3339) { return Micros(rfc3339) / 1000000; }

RequestContext Context() {
  RequestContext c;
  c.source_system = "uhcw-epr";
  c.source_organisation = "RKB";
  c.care_setting = icr::v1::ACUTE;
  c.now_micros = Micros("2025-11-22T12:00:00Z");
  return c;
}

// All events of a request, in order.
std::vector<const MappedEvent*> Events(const MappedRequest& r) {
  std::vector<const MappedEvent*> out;
  for (const auto& e : r.entries) {
    for (const auto& m : e.events) out.push_back(&m);
  }
  return out;
}

std::string Describe(const std::vector<OutcomeIssue>& issues) {
  std::string out;
  for (const auto& i : issues) {
    out += std::string(IssueTypeCode(i.code)) + " [" + i.expression + "] " + i.diagnostics + "\n";
  }
  return out;
}

// Maps and expects success; every event must also pass the broker's ingest
// validation (as of the request's receipt time).
MappedRequest MapOk(const std::string& body, const std::string& endpoint,
                    const RequestContext& ctx = Context()) {
  MappedRequest r = MapRequest(body, endpoint, ctx);
  EXPECT_TRUE(r.AllIssues().empty()) << Describe(r.AllIssues());
  for (const auto* m : Events(r)) {
    icr::v1::CareEvent copy = m->event;
    EXPECT_EQ(broker::ValidateAndNormaliseEvent(&copy, ctx.now_micros, broker::ValidationOptions{}),
              "")
        << m->event.DebugString();
  }
  return r;
}

// Maps and expects an issue with this code whose expression is `expression`
// (when not empty) and whose diagnostics contain `text`.
void ExpectIssue(const MappedRequest& r, IssueType code, const std::string& expression,
                 const std::string& text = "") {
  auto issues = r.AllIssues();
  for (const auto& i : issues) {
    if (i.code == code && (expression.empty() || i.expression == expression) &&
        i.diagnostics.find(text) != std::string::npos) {
      return;
    }
  }
  ADD_FAILURE() << "no " << IssueTypeCode(code) << " issue at [" << expression << "] with '" << text
                << "'; got:\n"
                << Describe(issues);
}

// The issue the broker's validation of the request's events gives, mapped back.
OutcomeIssue BrokerIssue(const MappedRequest& r, const RequestContext& ctx = Context()) {
  auto events = Events(r);
  const bool batch = events.size() > 1 || r.kind != RequestKind::kResource;
  for (size_t i = 0; i < events.size(); ++i) {
    icr::v1::CareEvent copy = events[i]->event;
    std::string p =
        broker::ValidateAndNormaliseEvent(&copy, ctx.now_micros, broker::ValidationOptions{},
                                          batch ? "events[" + std::to_string(i) + "]" : "event");
    if (!p.empty()) return IssueFromBrokerError(p, events);
  }
  ADD_FAILURE() << "the broker accepted every event";
  return {};
}

json Parse(const std::string& text) { return json::parse(text); }

// --- Patient -----------------------------------------------------------------

TEST(FhirMappingTest, PatientMapsToDemographicsAndGpRegistration) {
  MappedRequest r = MapOk(Fixture("patient.json"), "Patient");
  ASSERT_EQ(r.kind, RequestKind::kResource);
  ASSERT_EQ(r.entries.size(), 1u);
  ASSERT_EQ(r.entries[0].events.size(), 2u);
  const auto& d = r.entries[0].events[0].event;
  EXPECT_EQ(d.source_system_id(), "uhcw-epr");
  EXPECT_EQ(d.source_organisation(), "RKB");
  EXPECT_EQ(d.care_setting(), icr::v1::ACUTE);
  EXPECT_EQ(d.nhs_number(), "9990000018");
  EXPECT_EQ(d.source_message_id(), "uhcw-pat-1001/3#demographics-update");
  EXPECT_EQ(d.occurred_at().seconds(), Seconds("2025-11-10T09:12:00Z"));
  EXPECT_EQ(d.priority(), icr::v1::ROUTINE);
  ASSERT_TRUE(d.has_demographics_update());
  const auto& du = d.demographics_update();
  EXPECT_EQ(du.family_name(), "Shaw");  // the official name, not the usual one
  ASSERT_EQ(du.given_names_size(), 2);
  EXPECT_EQ(du.given_names(0), "Margaret");
  EXPECT_EQ(du.given_names(1), "Ann");
  EXPECT_EQ(du.birth_date().year(), 1938);
  EXPECT_EQ(du.birth_date().month(), 4);
  EXPECT_EQ(du.birth_date().day(), 17);
  EXPECT_EQ(du.gender(), "female");
  EXPECT_EQ(du.postcode(), "CV3 4AB");  // the home address
  const auto& g = r.entries[0].events[1].event;
  EXPECT_EQ(g.source_message_id(), "uhcw-pat-1001/3#gp-registration");
  ASSERT_TRUE(g.has_gp_registration());
  EXPECT_EQ(g.gp_registration().practice(), "M86001");
  EXPECT_EQ(g.nhs_number(), "9990000018");
}

TEST(FhirMappingTest, PatientWithoutGpOrVersionGivesOneEventKeyedById) {
  json p = Parse(Fixture("patient.json"));
  p.erase("generalPractitioner");
  p["meta"].erase("versionId");
  MappedRequest r = MapOk(p.dump(), "Patient");
  ASSERT_EQ(Events(r).size(), 1u);
  // Without versionId, lastUpdated tells versions apart.
  EXPECT_EQ(Events(r)[0]->event.source_message_id(),
            "uhcw-pat-1001/2025-11-10T09:12:00Z#demographics-update");
}

TEST(FhirMappingTest, PatientProblemsNameTheElement) {
  json p = Parse(Fixture("patient.json"));
  p["identifier"].erase(0);
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kRequired,
              std::string("Patient.") + kNhsWhere);

  p = Parse(Fixture("patient.json"));
  p["identifier"][0].erase("value");
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kRequired,
              std::string("Patient.") + kNhsWhere + ".value");

  p = Parse(Fixture("patient.json"));
  p["gender"] = "F";
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kValue, "Patient.gender");

  p = Parse(Fixture("patient.json"));
  p["birthDate"] = "1938";
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kValue, "Patient.birthDate",
              "full date");

  // A full date that does not exist is not called "not a full date".
  p = Parse(Fixture("patient.json"));
  p["birthDate"] = "1950-02-30";
  {
    MappedRequest r = MapRequest(p.dump(), "Patient", Context());
    ASSERT_EQ(r.AllIssues().size(), 1u) << Describe(r.AllIssues());
    ExpectIssue(r, IssueType::kValue, "Patient.birthDate",
                "Patient.birthDate: '1950-02-30' is a date that does not exist (day 30 is not a "
                "day of month 2 in 1950: 1..28)");
  }
  p["birthDate"] = "2000-02-29";  // a leap year
  MapOk(p.dump(), "Patient");
  p["birthDate"] = "1950-00-10";
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kValue, "Patient.birthDate",
              "Patient.birthDate: '1950-00-10' is a date that does not exist (month 0 is outside "
              "1..12)");

  // An NHS number sent as a JSON number: one issue, its type (not also "has
  // no value").
  p = Parse(Fixture("patient.json"));
  p["identifier"][0]["value"] = 9990000018LL;
  {
    MappedRequest r = MapRequest(p.dump(), "Patient", Context());
    ASSERT_EQ(r.AllIssues().size(), 1u) << Describe(r.AllIssues());
    ExpectIssue(r, IssueType::kStructure, "Patient.identifier[0].value",
                "Patient.identifier[0].value: must be a string (FHIR JSON), not a number");
  }
  // An empty value is still a missing one.
  p["identifier"][0]["value"] = "";
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kRequired,
              std::string("Patient.") + kNhsWhere + ".value", "has no value");

  p = Parse(Fixture("patient.json"));
  p["name"][1]["given"] = "Margaret";
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kStructure,
              "Patient.name[1].given", "array");

  p = Parse(Fixture("patient.json"));
  p.erase("id");
  ExpectIssue(MapRequest(p.dump(), "Patient", Context()), IssueType::kRequired, "Patient.id");
}

TEST(FhirMappingTest, BrokerErrorsMapBackToTheElement) {
  json p = Parse(Fixture("patient.json"));
  p["identifier"][0]["value"] = "9990000019";  // fails Modulus 11
  MappedRequest r = MapRequest(p.dump(), "Patient", Context());
  ASSERT_TRUE(r.AllIssues().empty()) << Describe(r.AllIssues());  // the broker decides
  OutcomeIssue i = BrokerIssue(r);
  EXPECT_EQ(i.code, IssueType::kValue);
  EXPECT_EQ(i.expression, std::string("Patient.") + kNhsWhere + ".value");
  EXPECT_NE(i.diagnostics.find("events[0].nhs_number: fails the Modulus 11 check"),
            std::string::npos)
      << i.diagnostics;

  // About the whole request, not one event: no element to name.
  i = IssueFromBrokerError("events: 10001 events exceeds the limit of 10000 per request",
                           Events(r));
  EXPECT_EQ(i.code, IssueType::kTooLong);
  EXPECT_EQ(i.expression, "");

  RequestContext ctx = Context();
  ctx.source_system = "uhcw epr!";
  r = MapRequest(Fixture("encounter-admission.json"), "Encounter", ctx);
  i = BrokerIssue(r, ctx);
  EXPECT_EQ(i.expression, "");
  EXPECT_EQ(i.diagnostics.rfind("X-ICR-Source-System header: event.source_system_id", 0), 0u)
      << i.diagnostics;

  json e = Parse(Fixture("encounter-admission.json"));
  e["participant"][0]["individual"]["display"] = "Dr \x01";
  r = MapRequest(e.dump(), "Encounter", Context());
  i = BrokerIssue(r);
  EXPECT_EQ(i.expression, "Encounter.participant[0].individual");
  EXPECT_NE(i.diagnostics.find("control character"), std::string::npos);

  json s = Parse(Fixture("servicerequest-placement-request.json"));
  s["extension"].erase(0);  // the place
  r = MapRequest(s.dump(), "ServiceRequest", Context());
  i = BrokerIssue(r);
  EXPECT_EQ(i.code, IssueType::kRequired);
  EXPECT_EQ(
      i.expression,
      "ServiceRequest.extension('https://icr-broker.example/fhir/StructureDefinition/place')");

  s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s["extension"][0]["extension"][3]["valueString"] = std::string(4001, 'x');
  r = MapRequest(s.dump(), "ServiceRequest", Context());
  i = BrokerIssue(r);
  EXPECT_EQ(i.code, IssueType::kTooLong);
  EXPECT_EQ(i.expression,
            "ServiceRequest.extension('https://icr-broker.example/fhir/StructureDefinition/"
            "care-needs')");
}

// --- Encounter ---------------------------------------------------------------

TEST(FhirMappingTest, InProgressEncounterIsAnAdmission) {
  MappedRequest r = MapOk(Fixture("encounter-admission.json"), "Encounter");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  EXPECT_EQ(e.nhs_number(), "9990000026");
  EXPECT_EQ(e.source_message_id(), "uhcw-enc-5001/1#admission");
  EXPECT_EQ(e.occurred_at().seconds(), Seconds("2025-11-12T13:40:00Z"));  // period.start
  ASSERT_TRUE(e.has_admission());
  EXPECT_EQ(e.admission().encounter_id(), "SPELL-5001");
  EXPECT_EQ(e.admission().location().site(), "RKB01");
  EXPECT_EQ(e.admission().location().ward(), "Ward 33");
  EXPECT_EQ(e.admission().attending().professional_id(), "C1234567");
  EXPECT_EQ(e.admission().attending().name(), "Dr Jane Example");
  EXPECT_EQ(e.admission().admission_method(), "emergency");
}

TEST(FhirMappingTest, FinishedEncounterIsADischarge) {
  MappedRequest r = MapOk(Fixture("encounter-discharge.json"), "Encounter");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  EXPECT_EQ(e.source_message_id(), "uhcw-enc-5001/4#discharge");
  EXPECT_EQ(e.occurred_at().seconds(), Seconds("2025-11-18T15:55:00Z"));  // period.end
  ASSERT_TRUE(e.has_discharge());
  EXPECT_EQ(e.discharge().encounter_id(), "SPELL-5001");
  EXPECT_EQ(e.discharge().destination(), icr::v1::USUAL_RESIDENCE);
  EXPECT_EQ(e.discharge().pathway(), icr::v1::PATHWAY_1);
}

TEST(FhirMappingTest, DischargeDestinationCodeSystems) {
  struct Case {
    const char* system;
    const char* code;
    icr::v1::DischargeDestination want;
  };
  const Case cases[] = {
      {kDischargeDestinationSystem, "usual-residence-with-support",
       icr::v1::USUAL_RESIDENCE_WITH_SUPPORT},
      {kDischargeDestinationSystem, "step-down-bed", icr::v1::STEP_DOWN_BED_DESTINATION},
      {kUkCoreDischargeDestinationSystem, "54", icr::v1::CARE_HOME_NURSING},
      {kUkCoreDischargeDestinationSystem, "79", icr::v1::DIED},
      {kUkCoreDischargeDestinationSystem, "88", icr::v1::HOSPICE},
      {kHl7DischargeDispositionSystem, "snf", icr::v1::CARE_HOME_NURSING},
      {kHl7DischargeDispositionSystem, "aadvice", icr::v1::SELF_DISCHARGE},
      {kHl7DischargeDispositionSystem, "home", icr::v1::USUAL_RESIDENCE},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.system) + "|" + c.code);
    json e = Parse(Fixture("encounter-discharge.json"));
    e["hospitalization"]["dischargeDisposition"]["coding"] =
        json::array({{{"system", c.system}, {"code", c.code}}});
    MappedRequest r = MapOk(e.dump(), "Encounter");
    ASSERT_EQ(Events(r).size(), 1u);
    EXPECT_EQ(Events(r)[0]->event.discharge().destination(), c.want);
  }
  json e = Parse(Fixture("encounter-discharge.json"));
  e["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] = "98";
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kValue,
              "Encounter.hospitalization.dischargeDisposition.coding[0].code", "not discharged");
  e["hospitalization"]["dischargeDisposition"]["coding"][0]["system"] = "http://example.org/x";
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kRequired,
              "Encounter.hospitalization.dischargeDisposition.coding");
  e.erase("hospitalization");
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kRequired,
              "Encounter.hospitalization.dischargeDisposition");
}

TEST(FhirMappingTest, PlannedEncounterIsAPreAdmission) {
  MappedRequest r = MapOk(Fixture("encounter-planned.json"), "Encounter");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  EXPECT_EQ(e.nhs_number(), "9990000034");
  // No time of its own: the time of receipt.
  EXPECT_EQ(e.occurred_at().seconds(), Seconds("2025-11-22T12:00:00Z"));
  ASSERT_TRUE(e.has_pre_admission());
  EXPECT_EQ(e.pre_admission().encounter_id(), "BOOK-7001");
  EXPECT_EQ(e.pre_admission().expected_admission_date().year(), 2025);
  EXPECT_EQ(e.pre_admission().expected_admission_date().month(), 12);
  EXPECT_EQ(e.pre_admission().expected_admission_date().day(), 3);
  EXPECT_EQ(e.pre_admission().location().ward(), "Day Surgery Unit");
  EXPECT_EQ(e.pre_admission().admission_method(), "elective");
}

TEST(FhirMappingTest, EnteredInErrorEncounterCancelsTheAdmission) {
  MappedRequest r = MapOk(Fixture("encounter-entered-in-error.json"), "Encounter");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  ASSERT_TRUE(e.has_encounter_cancellation());
  EXPECT_EQ(e.encounter_cancellation().encounter_id(), "SPELL-5002");
  EXPECT_EQ(e.encounter_cancellation().cancelled_event_type(), icr::v1::ADMISSION);
  EXPECT_EQ(e.source_message_id(), "uhcw-enc-5002/2#encounter-cancellation");
}

TEST(FhirMappingTest, EncounterProblems) {
  json e = Parse(Fixture("encounter-admission.json"));
  e["status"] = "arrived";
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kNotSupported,
              "Encounter.status", "'arrived'");
  e["status"] = "in-progress";
  e["period"]["end"] = "2025-11-13T10:00:00Z";
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kInvalid,
              "Encounter.period.end");
  e = Parse(Fixture("encounter-admission.json"));
  e["period"]["start"] = "2025-11-12T13:40:00";  // no zone
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kValue,
              "Encounter.period.start", "dateTime");
  e["period"]["start"] = "2025-02-29";
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kValue,
              "Encounter.period.start");
  e = Parse(Fixture("encounter-admission.json"));
  e["subject"] = {{"reference", "Patient/123"}};
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kRequired,
              std::string("Encounter.subject.") + kNhsWhere, "does not resolve");
  e.erase("subject");
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kRequired,
              std::string("Encounter.subject.") + kNhsWhere);
  e = Parse(Fixture("encounter-admission.json"));
  e.erase("status");
  ExpectIssue(MapRequest(e.dump(), "Encounter", Context()), IssueType::kRequired,
              "Encounter.status");
}

TEST(FhirMappingTest, TimesWithOffsetsAreInstants) {
  json e = Parse(Fixture("encounter-admission.json"));
  e["period"]["start"] = "2025-06-12T14:40:00.250+01:00";
  MappedRequest r = MapOk(e.dump(), "Encounter");
  ASSERT_EQ(Events(r).size(), 1u);
  EXPECT_EQ(Events(r)[0]->event.occurred_at().seconds(), Seconds("2025-06-12T13:40:00Z"));
  EXPECT_EQ(Events(r)[0]->event.occurred_at().nanos(), 250000000);
}

TEST(FhirMappingTest, ContainedPatientResolves) {
  json e = Parse(Fixture("encounter-admission.json"));
  e["subject"] = {{"reference", "#p1"}};
  e["contained"] = json::array(
      {{{"resourceType", "Patient"},
        {"id", "p1"},
        {"identifier", json::array({{{"system", kNhsNumberSystem}, {"value", "9990000107"}}})}}});
  MappedRequest r = MapOk(e.dump(), "Encounter");
  ASSERT_EQ(Events(r).size(), 1u);
  EXPECT_EQ(Events(r)[0]->event.nhs_number(), "9990000107");
}

// --- ServiceRequest -------------------------------------------------------------

TEST(FhirMappingTest, ServiceRequestIsADischargeReferral) {
  MappedRequest r = MapOk(Fixture("servicerequest-discharge-referral.json"), "ServiceRequest");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  EXPECT_EQ(e.nhs_number(), "9990000042");
  EXPECT_EQ(e.priority(), icr::v1::URGENT);
  EXPECT_EQ(e.occurred_at().seconds(), Seconds("2025-11-17T09:45:00Z"));  // authoredOn
  EXPECT_EQ(e.addressee().organisation(), "CCC");
  EXPECT_EQ(e.addressee().team_code(), "HSCT-UHCW");
  ASSERT_TRUE(e.has_discharge_referral());
  const auto& d = e.discharge_referral();
  EXPECT_EQ(d.referral_id(), "REF-9001");
  EXPECT_EQ(d.pathway(), icr::v1::PATHWAY_1);
  EXPECT_EQ(d.referrer().organisation(), "RKB");
  EXPECT_EQ(d.referrer().team_code(), "WARD-33");
  EXPECT_TRUE(d.needs().dementia());
  EXPECT_TRUE(d.needs().safety_between_calls());
  EXPECT_FALSE(d.needs().end_of_life());
  EXPECT_EQ(d.needs().carers_per_call(), 2);
  EXPECT_EQ(d.needs().summary(), "Needs help washing and dressing; lives alone.");
  EXPECT_EQ(d.expected_discharge_date().day(), 22);
  EXPECT_EQ(d.discharge_ready_date().day(), 21);
  EXPECT_EQ(d.encounter_id(), "SPELL-6001");
  EXPECT_EQ(d.place(), icr::v1::COVENTRY);
}

TEST(FhirMappingTest, ServiceRequestIsAPlacementRequest) {
  MappedRequest r = MapOk(Fixture("servicerequest-placement-request.json"), "ServiceRequest");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  EXPECT_EQ(e.priority(), icr::v1::URGENT);  // no priority: urgent lane
  ASSERT_TRUE(e.has_placement_request());
  const auto& p = e.placement_request();
  EXPECT_EQ(p.request_id(), "PR-9101");
  EXPECT_EQ(p.referral_id(), "REF-9001");
  EXPECT_EQ(p.service_type(), icr::v1::HOME_SUPPORT);
  EXPECT_EQ(p.place(), icr::v1::COVENTRY);
  EXPECT_EQ(p.start_date().year(), 2025);
  EXPECT_EQ(p.start_date().month(), 11);
  EXPECT_EQ(p.start_date().day(), 24);
  EXPECT_DOUBLE_EQ(p.hours_per_week(), 14);
  EXPECT_EQ(p.calls_per_day(), 4);
  EXPECT_EQ(p.contact(), "Ward 33 ext 24033");
  EXPECT_EQ(p.needs().carers_per_call(), 2);
  EXPECT_TRUE(p.needs().equipment_needed());
  EXPECT_EQ(p.needs().summary(), "Double-handed calls; hoist in place.");  // from note
}

TEST(FhirMappingTest, RevokedServiceRequestsWithdraw) {
  MappedRequest r = MapOk(Fixture("servicerequest-revoked.json"), "ServiceRequest");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  ASSERT_TRUE(e.has_placement_cancellation());
  EXPECT_EQ(e.placement_cancellation().request_id(), "PR-9101");
  EXPECT_EQ(e.placement_cancellation().reason(), "Family will provide care for the first week.");

  json s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s["status"] = "revoked";
  s["meta"]["versionId"] = "2";
  r = MapOk(s.dump(), "ServiceRequest");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& w = Events(r)[0]->event;
  ASSERT_TRUE(w.has_referral_status_change());
  EXPECT_EQ(w.referral_status_change().referral_id(), "REF-9001");
  EXPECT_EQ(w.referral_status_change().status(), icr::v1::WITHDRAWN);
  EXPECT_EQ(w.source_message_id(), "uhcw-sr-9001/2#referral-status-change-withdrawn");
}

TEST(FhirMappingTest, ServiceRequestProblems) {
  const std::string kind =
      "ServiceRequest.code.coding.where(system='" + std::string(kRequestTypeSystem) + "')";
  json s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s["code"]["coding"].erase(0);
  ExpectIssue(MapRequest(s.dump(), "ServiceRequest", Context()), IssueType::kRequired, kind);
  s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s["code"]["coding"][0]["code"] = "home-visit";
  ExpectIssue(MapRequest(s.dump(), "ServiceRequest", Context()), IssueType::kNotSupported,
              kind + ".code");
  s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s["category"][0]["coding"][0]["code"] = "pathway-9";
  ExpectIssue(MapRequest(s.dump(), "ServiceRequest", Context()), IssueType::kValue,
              "ServiceRequest.category[0].coding[0].code", "pathway-0");
  s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s.erase("requester");
  ExpectIssue(
      MapRequest(s.dump(), "ServiceRequest", Context()), IssueType::kRequired,
      "ServiceRequest.requester.identifier.where(system='" + std::string(kTeamCodeSystem) + "')");
  s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s["extension"][0]["extension"][0]["url"] = "dementai";
  ExpectIssue(MapRequest(s.dump(), "ServiceRequest", Context()), IssueType::kValue, "",
              "'dementai' is not a care need");
  s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s["status"] = "draft";
  ExpectIssue(MapRequest(s.dump(), "ServiceRequest", Context()), IssueType::kNotSupported,
              "ServiceRequest.status");
  s = Parse(Fixture("servicerequest-placement-request.json"));
  s["quantityQuantity"]["code"] = "h/d";
  ExpectIssue(MapRequest(s.dump(), "ServiceRequest", Context()), IssueType::kValue,
              "ServiceRequest.quantityQuantity.code");
  // Extensions are read once per extension the profile knows; a problem with
  // one is still reported once.
  s = Parse(Fixture("servicerequest-placement-request.json"));
  s["extension"].push_back({{"valueString", "no url"}});
  MappedRequest r = MapRequest(s.dump(), "ServiceRequest", Context());
  ExpectIssue(r, IssueType::kRequired, "ServiceRequest.extension[4].url");
  EXPECT_EQ(r.AllIssues().size(), 1u) << Describe(r.AllIssues());
  // A referral without pathway maps, and the broker names the category.
  s = Parse(Fixture("servicerequest-discharge-referral.json"));
  s.erase("category");
  OutcomeIssue i = BrokerIssue(MapRequest(s.dump(), "ServiceRequest", Context()));
  EXPECT_EQ(i.code, IssueType::kRequired);
  EXPECT_EQ(i.expression, "ServiceRequest.category.coding.where(system='" +
                              std::string(kDischargePathwaySystem) + "')");
}

// --- Task ----------------------------------------------------------------------

TEST(FhirMappingTest, TaskIsAReferralStatusChange) {
  MappedRequest r = MapOk(Fixture("task-status.json"), "Task");
  ASSERT_EQ(Events(r).size(), 1u);
  const auto& e = Events(r)[0]->event;
  EXPECT_EQ(e.source_message_id(), "ccc-task-3001/2#referral-status-change-forwarded-to-brokerage");
  EXPECT_EQ(e.occurred_at().seconds(), Seconds("2025-11-17T15:10:00Z"));  // lastModified
  EXPECT_EQ(e.addressee().organisation(), "CCC");
  EXPECT_EQ(e.addressee().team_code(), "BROKERAGE");
  ASSERT_TRUE(e.has_referral_status_change());
  EXPECT_EQ(e.referral_status_change().referral_id(), "REF-9001");
  EXPECT_EQ(e.referral_status_change().status(), icr::v1::FORWARDED_TO_BROKERAGE);
  EXPECT_EQ(e.referral_status_change().reason(), "Package of care needed: 4 calls a day");
}

TEST(FhirMappingTest, TaskStatusTable) {
  const std::pair<const char*, icr::v1::ReferralStatus> cases[] = {
      {"requested", icr::v1::CREATED},   {"received", icr::v1::CREATED},
      {"accepted", icr::v1::ACCEPTED},   {"rejected", icr::v1::WITHDRAWN},
      {"cancelled", icr::v1::WITHDRAWN}, {"completed", icr::v1::DISCHARGED},
  };
  for (const auto& [status, want] : cases) {
    SCOPED_TRACE(status);
    json t = Parse(Fixture("task-status.json"));
    t.erase("businessStatus");
    t["status"] = status;
    MappedRequest r = MapOk(t.dump(), "Task");
    ASSERT_EQ(Events(r).size(), 1u);
    EXPECT_EQ(Events(r)[0]->event.referral_status_change().status(), want);
  }
  json t = Parse(Fixture("task-status.json"));
  t.erase("businessStatus");
  ExpectIssue(MapRequest(t.dump(), "Task", Context()), IssueType::kNotSupported, "Task.status",
              "businessStatus");
  t = Parse(Fixture("task-status.json"));
  t["businessStatus"]["coding"][0]["code"] = "lost";
  ExpectIssue(MapRequest(t.dump(), "Task", Context()), IssueType::kValue,
              "Task.businessStatus.coding[0].code");
  t = Parse(Fixture("task-status.json"));
  t.erase("focus");
  ExpectIssue(MapRequest(t.dump(), "Task", Context()), IssueType::kRequired, "Task.focus");
}

// --- Bundles -------------------------------------------------------------------

TEST(FhirMappingTest, MessageBundleMapsItsFocusWithTheHeadersIdentity) {
  RequestContext ctx = Context();
  ctx.source_system.clear();
  ctx.source_organisation.clear();
  MappedRequest r = MapOk(Fixture("bundle-message.json"), "", ctx);
  ASSERT_EQ(r.kind, RequestKind::kMessage);
  ASSERT_EQ(r.entries.size(), 4u);
  EXPECT_EQ(r.entries[0].resource_type, "MessageHeader");
  EXPECT_TRUE(r.entries[0].events.empty());
  EXPECT_TRUE(r.entries[2].events.empty());  // the Patient supports the focus
  EXPECT_TRUE(r.entries[3].events.empty());  // Organization: ignored
  ASSERT_EQ(r.entries[1].events.size(), 1u);
  const auto& e = r.entries[1].events[0].event;
  EXPECT_EQ(e.source_system_id(), "urn:icr:geh-epr");
  EXPECT_EQ(e.source_organisation(), "RLT");
  EXPECT_EQ(e.nhs_number(), "9990000050");  // via the Patient's fullUrl
  EXPECT_EQ(e.source_message_id(), "GEH-MSG-000042#1#admission");
  EXPECT_EQ(e.admission().encounter_id(), "GEH-SPELL-88");
  EXPECT_EQ(e.admission().location().site(), "RLT01");

  // Headers, when sent, name the sender instead.
  r = MapOk(Fixture("bundle-message.json"), "");
  EXPECT_EQ(r.entries[1].events[0].event.source_system_id(), "uhcw-epr");
  EXPECT_EQ(r.entries[1].events[0].event.source_organisation(), "RKB");
}

TEST(FhirMappingTest, MessageBundleWithoutFocusMapsEverySupportedResource) {
  json b = Parse(Fixture("bundle-message.json"));
  b["entry"][0]["resource"].erase("focus");
  MappedRequest r = MapOk(b.dump(), "");
  EXPECT_EQ(r.entries[1].events.size(), 1u);
  EXPECT_EQ(r.entries[2].events.size(), 1u);  // the Patient now too
  EXPECT_TRUE(r.entries[3].events.empty());
}

TEST(FhirMappingTest, TransactionBundleResolvesReferences) {
  MappedRequest r = MapOk(Fixture("bundle-transaction.json"), "");
  ASSERT_EQ(r.kind, RequestKind::kTransaction);
  ASSERT_EQ(r.entries.size(), 3u);
  ASSERT_EQ(Events(r).size(), 3u);
  const auto& p = r.entries[0].events[0].event;
  EXPECT_EQ(p.source_message_id(), "SWFT-TX-2025-1114-0007#0#demographics-update");
  EXPECT_EQ(p.demographics_update().postcode(), "CV37 6AA");
  const auto& a = r.entries[1].events[0].event;
  EXPECT_EQ(a.nhs_number(), "9990000069");  // "Patient/swft-pat-77"
  EXPECT_EQ(a.occurred_at().seconds(), Seconds("2025-11-14T10:02:00Z"));
  const auto& d = r.entries[2].events[0].event;
  EXPECT_EQ(d.nhs_number(), "9990000069");                             // the Patient's fullUrl
  EXPECT_EQ(d.discharge_referral().encounter_id(), "SWFT-SPELL-301");  // the Encounter entry
  EXPECT_EQ(d.discharge_referral().pathway(), icr::v1::PATHWAY_2);
  EXPECT_EQ(d.discharge_referral().referrer().organisation(), "RKB");  // the sender
  EXPECT_EQ(d.discharge_referral().place(), icr::v1::SOUTH_WARWICKSHIRE);
}

TEST(FhirMappingTest, BatchBundleMapsEachEntry) {
  MappedRequest r = MapOk(Fixture("bundle-batch.json"), "");
  ASSERT_EQ(r.kind, RequestKind::kBatch);
  ASSERT_EQ(Events(r).size(), 2u);
  EXPECT_EQ(r.entries[0].events[0].event.referral_status_change().referral_id(), "REF-4401");
  EXPECT_EQ(r.entries[0].events[0].event.referral_status_change().status(), icr::v1::ACCEPTED);
  EXPECT_EQ(r.entries[0].events[0].event.source_message_id(),
            "rugby-batch-5#0#referral-status-change-accepted");
  EXPECT_EQ(r.entries[1].events[0].event.discharge().destination(), icr::v1::CARE_HOME_NURSING);
  EXPECT_EQ(r.entries[1].events[0].event.discharge().destination_organisation(), "VM1AB");
}

TEST(FhirMappingTest, TransactionWithABadNhsNumberNamesTheEntry) {
  MappedRequest r = MapRequest(Fixture("bundle-transaction-bad-entry.json"), "", Context());
  ASSERT_TRUE(r.AllIssues().empty()) << Describe(r.AllIssues());
  OutcomeIssue i = BrokerIssue(r);
  EXPECT_EQ(i.expression, "Bundle.entry[1].resource.subject.identifier.value");
  EXPECT_NE(i.diagnostics.find("events[1].nhs_number: fails the Modulus 11 check"),
            std::string::npos)
      << i.diagnostics;
}

TEST(FhirMappingTest, BundleProblems) {
  json b = Parse(Fixture("bundle-transaction.json"));
  b["type"] = "document";
  ExpectIssue(MapRequest(b.dump(), "", Context()), IssueType::kNotSupported, "Bundle.type");
  b = Parse(Fixture("bundle-transaction.json"));
  b.erase("identifier");
  ExpectIssue(MapRequest(b.dump(), "", Context()), IssueType::kRequired, "Bundle.identifier");
  b = Parse(Fixture("bundle-transaction.json"));
  b["entry"][1]["request"]["method"] = "DELETE";
  ExpectIssue(MapRequest(b.dump(), "", Context()), IssueType::kNotSupported,
              "Bundle.entry[1].request.method");
  b = Parse(Fixture("bundle-transaction.json"));
  b["entry"][1]["resource"]["resourceType"] = "Observation";
  ExpectIssue(MapRequest(b.dump(), "", Context()), IssueType::kNotSupported,
              "Bundle.entry[1].resource.resourceType");
  b = Parse(Fixture("bundle-message.json"));
  std::swap(b["entry"][0], b["entry"][1]);
  ExpectIssue(MapRequest(b.dump(), "", Context()), IssueType::kStructure,
              "Bundle.entry[0].resource", "MessageHeader");
  b = Parse(Fixture("bundle-message.json"));
  b["entry"][0]["resource"]["focus"][0]["reference"] = "urn:uuid:nowhere";
  ExpectIssue(MapRequest(b.dump(), "", Context()), IssueType::kInvalid,
              "Bundle.entry[0].resource.focus[0]");
  b = Parse(Fixture("bundle-message.json"));
  b["entry"][0]["resource"].erase("source");
  RequestContext no_headers = Context();
  no_headers.source_system.clear();
  ExpectIssue(MapRequest(b.dump(), "", no_headers), IssueType::kRequired,
              "Bundle.entry[0].resource.source.endpoint", "X-ICR-Source-System");
  b = Parse(Fixture("bundle-transaction.json"));
  b["entry"] = json::array();
  ExpectIssue(MapRequest(b.dump(), "", Context()), IssueType::kRequired, "Bundle.entry");
}

// --- Request-level checks and the strict JSON parser ------------------------------

TEST(FhirMappingTest, RequestLevelProblems) {
  ExpectIssue(MapRequest("[]", "Patient", Context()), IssueType::kStructure, "", "JSON object");
  ExpectIssue(MapRequest(R"({"id":"x"})", "Patient", Context()), IssueType::kRequired,
              "Resource.resourceType");
  ExpectIssue(MapRequest(Fixture("encounter-admission.json"), "Patient", Context()),
              IssueType::kInvalid, "Resource.resourceType", "/fhir/r4/Patient");
  ExpectIssue(MapRequest(Fixture("patient.json"), "", Context()), IssueType::kInvalid,
              "Resource.resourceType", "takes a Bundle");
  ExpectIssue(MapRequest(R"({"resourceType":"Observation"})", "", Context()),
              IssueType::kNotSupported, "Resource.resourceType");
  RequestContext ctx = Context();
  ctx.source_system.clear();
  ctx.source_organisation.clear();
  MappedRequest r = MapRequest(Fixture("patient.json"), "Patient", ctx);
  ExpectIssue(r, IssueType::kRequired, "", "X-ICR-Source-System header");
  ExpectIssue(r, IssueType::kRequired, "", "X-ICR-Source-Organisation header");
}

// A Patient body nested exactly `depth` deep.
std::string PatientAtDepth(int depth) {
  json p = Parse(Fixture("patient.json"));
  std::string text = p.dump();
  std::string deep = std::string(depth - 1, '[') + std::string(depth - 1, ']');
  return text.substr(0, text.size() - 1) + R"(,"zz":)" + deep + "}";
}

TEST(FhirMappingTest, DepthLimit) {
  MapOk(PatientAtDepth(32), "Patient");
  MappedRequest r = MapRequest(PatientAtDepth(33), "Patient", Context());
  ExpectIssue(r, IssueType::kTooLong, "", "more than 32 deep");
  ExpectIssue(MapRequest(std::string(100000, '['), "Patient", Context()), IssueType::kTooLong, "");
  RequestContext ctx = Context();
  ctx.max_json_depth = 40;
  MapOk(PatientAtDepth(40), "Patient", ctx);
}

TEST(FhirMappingTest, DuplicateKeysAreRefused) {
  std::string body = Fixture("patient.json");
  body.insert(body.find("\"gender\""), R"("gender": "male", )");
  ExpectIssue(MapRequest(body, "Patient", Context()), IssueType::kStructure, "",
              "duplicate JSON key 'gender' in $");
}

TEST(StrictJsonTest, ParsesAndRefuses) {
  json out;
  JsonProblem problem;
  ASSERT_TRUE(ParseStrictJson(R"({"a":[1,{"b":true}],"c":null,"d":1.5e3})", 3, &out, &problem));
  EXPECT_EQ(out["a"][1]["b"], true);
  EXPECT_EQ(out["d"], 1500.0);
  EXPECT_FALSE(ParseStrictJson(R"({"a":[1,{"b":true}]})", 2, &out, &problem));
  EXPECT_EQ(problem.code, "too-long");
  EXPECT_NE(problem.message.find("at $.a"), std::string::npos) << problem.message;
  EXPECT_FALSE(ParseStrictJson(R"({"a":[1,{"b":1,"b":2}]})", 10, &out, &problem));
  EXPECT_EQ(problem.code, "structure");
  EXPECT_NE(problem.message.find("duplicate JSON key 'b' in $.a[1]"), std::string::npos)
      << problem.message;
  // The same key in sibling objects is fine.
  EXPECT_TRUE(ParseStrictJson(R"([{"b":1},{"b":2}])", 10, &out, &problem));
  for (const char* bad : {"", "{", "{} x", "{'a':1}", "[1,]", "NaN", "1e999", "\"\\ud800\"",
                          "\"\xff\"", "// c\n{}"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(ParseStrictJson(bad, 32, &out, &problem));
    EXPECT_EQ(problem.code, "structure");
    EXPECT_EQ(problem.message.rfind("invalid JSON", 0), 0u) << problem.message;
  }
}

}  // namespace
}  // namespace icr::adapters::fhir
