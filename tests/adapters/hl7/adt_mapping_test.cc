// ADT mapping per trigger (one fixture each), header checks, validation
// errors mapped back to HL7 fields, and the ACKs built from them.
#include "adapters/hl7/adt_mapping.h"

#include <gtest/gtest.h>

#include "adapters/hl7/ack.h"
#include "broker/validation.h"
#include "tests/adapters/hl7/hl7_test_util.h"

namespace icr::adapters::hl7 {
namespace {

using testing::Fixture;
using testing::Replace;

MappingResult Map(const std::string& text, MappingOptions options = {}) {
  Er7Message m;
  Er7Error e = ParseEr7(text, {}, &m);
  EXPECT_TRUE(e.ok()) << e.ToString();
  return MapAdt(m, options);
}

// Maps and validates as the broker will; returns the events.
std::vector<icr::v1::CareEvent> MapValid(const std::string& text) {
  MappingResult r = Map(text);
  EXPECT_EQ(r.ack, AckCode::kAA) << (r.errors.empty() ? "" : r.errors[0].text);
  for (size_t i = 0; i < r.events.size(); ++i) {
    std::string p = icr::broker::ValidateAndNormaliseEvent(
        &r.events[i], 2000000000LL * 1000000, icr::broker::ValidationOptions{},
        "events[" + std::to_string(i) + "]");
    EXPECT_EQ(p, "") << r.events[i].DebugString();
  }
  return r.events;
}

TEST(AdtMappingTest, A01AdmissionWithGpRegistration) {
  auto events = MapValid(Fixture("a01_admit.hl7"));
  ASSERT_EQ(events.size(), 2u);
  const auto& e = events[0];
  EXPECT_EQ(e.source_system_id(), "UHCW-EPR");
  EXPECT_EQ(e.source_organisation(), "RKB");
  EXPECT_EQ(e.source_message_id(), "A01-0001");
  EXPECT_EQ(e.nhs_number(), "9990000018");
  EXPECT_EQ(e.care_setting(), icr::v1::ACUTE);
  EXPECT_EQ(e.priority(), icr::v1::ROUTINE);
  EXPECT_EQ(e.occurred_at().seconds(), 1749543300);  // EVN-6 2025-06-10 09:15 BST
  ASSERT_TRUE(e.has_admission());
  EXPECT_EQ(e.admission().encounter_id(), "SP-2025-0001");
  EXPECT_EQ(e.admission().location().site(), "RKB01");
  EXPECT_EQ(e.admission().location().ward(), "Ward 33");
  EXPECT_EQ(e.admission().location().bed(), "Bay 2/Bed 4");
  EXPECT_EQ(e.admission().attending().professional_id(), "C1234567");
  EXPECT_EQ(e.admission().attending().name(), "Dr Jane Smith");
  EXPECT_EQ(e.admission().admission_method(), "emergency");
  const auto& g = events[1];
  ASSERT_TRUE(g.has_gp_registration());
  EXPECT_EQ(g.gp_registration().practice(), "M85011");
  EXPECT_EQ(g.source_message_id(), "A01-0001:PD1");
  EXPECT_EQ(g.nhs_number(), "9990000018");
}

TEST(AdtMappingTest, A01OccurredAtFallsBackToPv144ThenEvn2ThenMsh7) {
  std::string text = Fixture("a01_admit.hl7");
  text = Replace(text, "||||20250610091500+0100\r", "\r");  // drop EVN-6
  MappingResult r = Map(text);
  EXPECT_EQ(r.occurred_at_field, "PV1-44");
  text = Replace(text, "|20250610091500+0100\r", "|\r");  // drop PV1-44
  r = Map(text);
  EXPECT_EQ(r.occurred_at_field, "EVN-2");
  text = Replace(text, "EVN|A01|20250610093000+0100", "EVN|A01|");
  r = Map(text);
  EXPECT_EQ(r.occurred_at_field, "MSH-7");
  EXPECT_EQ(r.events[0].occurred_at().seconds(), 1749544200);
}

TEST(AdtMappingTest, A02Transfer) {
  auto events = MapValid(Fixture("a02_transfer.hl7"));
  ASSERT_EQ(events.size(), 1u);
  const auto& t = events[0].transfer();
  EXPECT_EQ(events[0].nhs_number(), "9990000026");
  EXPECT_EQ(t.encounter_id(), "SP-2025-0002");
  EXPECT_EQ(t.from().ward(), "AMU");
  EXPECT_EQ(t.from().bed(), "Bed 12");
  EXPECT_EQ(t.to().ward(), "Ward 10");
  EXPECT_EQ(t.to().site(), "RKB01");
}

TEST(AdtMappingTest, A03DischargeToACareHome) {
  auto events = MapValid(Fixture("a03_discharge.hl7"));
  ASSERT_EQ(events.size(), 1u);
  const auto& d = events[0].discharge();
  EXPECT_EQ(d.encounter_id(), "SP-2025-0003");
  EXPECT_EQ(d.destination(), icr::v1::CARE_HOME_NURSING);
  EXPECT_EQ(d.destination_organisation(), "VM1AB");
  EXPECT_EQ(events[0].occurred_at().seconds(), 1749893400);  // PV1-45 10:30 BST
  EXPECT_EQ(events[0].priority(), icr::v1::ROUTINE);
}

TEST(AdtMappingTest, DischargeDispositionTable) {
  EXPECT_EQ(DischargeDestinationFromCode("19"), icr::v1::USUAL_RESIDENCE);
  EXPECT_EQ(DischargeDestinationFromCode("51"), icr::v1::OTHER_HOSPITAL);
  EXPECT_EQ(DischargeDestinationFromCode("54"), icr::v1::CARE_HOME_NURSING);
  EXPECT_EQ(DischargeDestinationFromCode("65"), icr::v1::CARE_HOME_RESIDENTIAL);
  EXPECT_EQ(DischargeDestinationFromCode("79"), icr::v1::DIED);
  EXPECT_EQ(DischargeDestinationFromCode("88"), icr::v1::HOSPICE);
  EXPECT_EQ(DischargeDestinationFromCode(" 99 "), icr::v1::OTHER_DESTINATION);
  EXPECT_EQ(DischargeDestinationFromCode("step_down_bed_destination"),
            icr::v1::STEP_DOWN_BED_DESTINATION);
  EXPECT_EQ(DischargeDestinationFromCode("USUAL_RESIDENCE_WITH_SUPPORT"),
            icr::v1::USUAL_RESIDENCE_WITH_SUPPORT);
  EXPECT_EQ(DischargeDestinationFromCode("01"), icr::v1::DISCHARGE_DESTINATION_UNSPECIFIED);
  EXPECT_EQ(DischargeDestinationFromCode("DISCHARGE_DESTINATION_UNSPECIFIED"),
            icr::v1::DISCHARGE_DESTINATION_UNSPECIFIED);
}

TEST(AdtMappingTest, A03Problems) {
  const std::string text = Fixture("a03_discharge.hl7");
  MappingResult r = Map(Replace(text, "|54|VM1AB|", "||VM1AB|"));
  ASSERT_EQ(r.ack, AckCode::kAE);
  EXPECT_EQ(r.errors[0].code, kErrRequiredFieldMissing);
  EXPECT_EQ(r.errors[0].segment, "PV1");
  EXPECT_EQ(r.errors[0].field, 36);
  r = Map(Replace(text, "|54|VM1AB|", "|01|VM1AB|"));
  EXPECT_EQ(r.errors[0].code, kErrTableValueNotFound);
  EXPECT_NE(r.errors[0].text.find("PV1-36"), std::string::npos);
  r = Map(Replace(text, "|54|VM1AB|", "|98|VM1AB|"));
  EXPECT_NE(r.errors[0].text.find("not finished"), std::string::npos);
  r = Map(Replace(text, "|54|VM1AB|", "|54|Sunny View|"));
  EXPECT_EQ(r.errors[0].field, 37);
  EXPECT_EQ(r.errors[0].code, kErrDataType);
  EXPECT_TRUE(r.events.empty());
}

TEST(AdtMappingTest, A04EdAttendance) {
  auto events = MapValid(Fixture("a04_ed_attendance.hl7"));
  ASSERT_EQ(events.size(), 1u);
  const auto& ed = events[0].ed_attendance();
  EXPECT_EQ(ed.attendance_id(), "ED-2025-0044");
  EXPECT_EQ(ed.site(), "RKB01");
  EXPECT_EQ(ed.chief_complaint().code(), "161898004");
  EXPECT_EQ(ed.chief_complaint().display(), "Fall & head injury");
  EXPECT_EQ(ed.chief_complaint().system(), "http://snomed.info/sct");
  EXPECT_EQ(events[0].source_system_id(), "UHCW-ED");
  // v2.3 time without offset, in June: BST.
  EXPECT_EQ(events[0].occurred_at().seconds(), 1749949200);
}

TEST(AdtMappingTest, A04OutsideEdIsAnEncounterUpdate) {
  auto events = MapValid(Replace(Fixture("a04_ed_attendance.hl7"), "PV1|1|E|", "PV1|1|O|"));
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_encounter_update());
  EXPECT_EQ(events[0].encounter_update().patient_class(), "O");
  EXPECT_EQ(events[0].encounter_update().location().ward(), "A&E Majors");
}

TEST(AdtMappingTest, A05PreAdmission) {
  auto events = MapValid(Fixture("a05_pre_admit.hl7"));
  ASSERT_EQ(events.size(), 1u);
  const auto& p = events[0].pre_admission();
  EXPECT_EQ(p.encounter_id(), "SP-2025-0005");
  EXPECT_EQ(p.expected_admission_date().year(), 2025);
  EXPECT_EQ(p.expected_admission_date().month(), 7);
  EXPECT_EQ(p.expected_admission_date().day(), 1);
  EXPECT_EQ(p.admission_method(), "elective");
  EXPECT_EQ(p.location().ward(), "Day Surgery");
}

TEST(AdtMappingTest, A08WithVisitIsAnEncounterUpdateElseDemographics) {
  auto events = MapValid(Fixture("a08_update.hl7"));
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_encounter_update());
  EXPECT_EQ(events[0].encounter_update().encounter_id(), "SP-2025-0006");
  EXPECT_EQ(events[0].encounter_update().patient_class(), "I");
  EXPECT_EQ(events[0].encounter_update().attending().name(), "Dr Chidi Okafor");
  EXPECT_EQ(events[0].encounter_update().location().bed(), "Side Room 1");

  events = MapValid(Replace(Fixture("a08_update.hl7"), "SP-2025-0006^^^RKB^VN", ""));
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_demographics_update());
  EXPECT_EQ(events[0].demographics_update().family_name(), "GREEN");
}

TEST(AdtMappingTest, CancellationsA11A12A13) {
  struct Case {
    const char* file;
    icr::v1::EventType type;
    const char* encounter;
  } cases[] = {{"a11_cancel_admit.hl7", icr::v1::ADMISSION, "SP-2025-0007"},
               {"a12_cancel_transfer.hl7", icr::v1::TRANSFER, "SP-2025-0008"},
               {"a13_cancel_discharge.hl7", icr::v1::DISCHARGE, "SP-2025-0009"}};
  for (const auto& c : cases) {
    auto events = MapValid(Fixture(c.file));
    ASSERT_EQ(events.size(), 1u) << c.file;
    ASSERT_TRUE(events[0].has_encounter_cancellation()) << c.file;
    EXPECT_EQ(events[0].encounter_cancellation().cancelled_event_type(), c.type);
    EXPECT_EQ(events[0].encounter_cancellation().encounter_id(), c.encounter);
  }
  auto events = MapValid(Fixture("a11_cancel_admit.hl7"));
  EXPECT_EQ(events[0].encounter_cancellation().reason(), "O");
}

TEST(AdtMappingTest, A28PersonAdd) {
  auto events = MapValid(Fixture("a28_person_add.hl7"));
  ASSERT_EQ(events.size(), 2u);
  const auto& d = events[0].demographics_update();
  EXPECT_EQ(events[0].nhs_number(), "9990000107");  // second repetition, spaces removed
  EXPECT_EQ(events[0].source_organisation(), "RYG");
  EXPECT_EQ(d.family_name(), "PATEL");
  ASSERT_EQ(d.given_names_size(), 2);
  EXPECT_EQ(d.given_names(0), "Priya");
  EXPECT_EQ(d.given_names(1), "Devi");
  EXPECT_EQ(d.birth_date().year(), 1985);
  EXPECT_EQ(d.gender(), "female");
  EXPECT_EQ(d.postcode(), "CV21 2AA");
  EXPECT_EQ(events[1].gp_registration().practice(), "Y02345");
}

TEST(AdtMappingTest, A31PersonUpdateWithNhsNumberInPid2) {
  auto events = MapValid(Fixture("a31_person_update.hl7"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].nhs_number(), "9990000115");
  const auto& d = events[0].demographics_update();
  EXPECT_EQ(d.family_name(), "O'NEILL");
  EXPECT_EQ(d.gender(), "male");
  EXPECT_EQ(d.postcode(), "CV32 4AA");
}

TEST(AdtMappingTest, A40Merge) {
  auto events = MapValid(Fixture("a40_merge.hl7"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].nhs_number(), "9990000123");
  EXPECT_EQ(events[0].nhs_number_merge().retired_nhs_number(), "9990000131");
}

TEST(AdtMappingTest, HeaderRejections) {
  const std::string a01 = Fixture("a01_admit.hl7");
  MappingResult r = Map(Replace(a01, "ADT^A01^ADT_A01", "ADT^A99^ADT_A01"));
  EXPECT_EQ(r.ack, AckCode::kAR);
  EXPECT_EQ(r.errors[0].code, kErrUnsupportedEventCode);
  EXPECT_EQ(r.trigger, "A99");
  r = Map(Replace(a01, "ADT^A01^ADT_A01", "ORU^R01"));
  EXPECT_EQ(r.errors[0].code, kErrUnsupportedMessageType);
  r = Map(Replace(a01, "|P|2.4|", "|P|2.6|"));
  EXPECT_EQ(r.errors[0].code, kErrUnsupportedVersion);
  r = Map(Replace(a01, "|A01-0001|", "||"));
  EXPECT_EQ(r.ack, AckCode::kAR);
  EXPECT_EQ(r.errors[0].field, 10);
  r = Map(Replace(a01, "|UHCW-EPR|RKB|", "||RKB|"));
  EXPECT_EQ(r.ack, AckCode::kAE);
  EXPECT_EQ(r.errors[0].field, 3);
  // MSH-9.2 empty: the trigger comes from EVN-1 (v2.3 style).
  r = Map(Replace(a01, "ADT^A01^ADT_A01", "ADT"));
  EXPECT_EQ(r.ack, AckCode::kAA);
  EXPECT_EQ(r.trigger, "A01");
}

TEST(AdtMappingTest, SourceSystemIsSanitised) {
  auto events = MapValid(Replace(Fixture("a02_transfer.hl7"), "|UHCW-EPR|", "|UHCW EPR/Live^x|"));
  EXPECT_EQ(events[0].source_system_id(), "UHCW-EPR-Live");
}

TEST(AdtMappingTest, NoNhsNumber) {
  MappingResult r = Map(Replace(Fixture("a02_transfer.hl7"), "9990000026^^^NHS^NH", "X1^^^RKB^MR"));
  ASSERT_EQ(r.ack, AckCode::kAE);
  EXPECT_EQ(r.errors[0].segment, "PID");
  EXPECT_EQ(r.errors[0].field, 3);
  EXPECT_NE(r.errors[0].text.find("no NHS number"), std::string::npos);
}

TEST(AdtMappingTest, ValidationErrorsMapBackToFields) {
  MappingResult r;
  r.nhs_number_field = "PID-3";
  r.nhs_number_repetition = 2;
  r.occurred_at_field = "EVN-6";
  Hl7Error e = ErrorFromValidation(
      "events[0].nhs_number: fails the Modulus 11 check (check digit should be 8, got 9)", r);
  EXPECT_EQ(e.segment, "PID");
  EXPECT_EQ(e.field, 3);
  EXPECT_EQ(e.repetition, 2);
  EXPECT_EQ(e.code, kErrDataType);
  EXPECT_NE(e.text.find("PID-3"), std::string::npos);
  EXPECT_NE(e.text.find("Modulus 11"), std::string::npos);

  e = ErrorFromValidation("events[0].occurred_at: is 3600 s in the future", r);
  EXPECT_EQ(e.segment, "EVN");
  EXPECT_EQ(e.field, 6);
  e = ErrorFromValidation("events[1].gp_registration.practice: 'X' is not an ODS code", r);
  EXPECT_EQ(e.segment, "PD1");
  EXPECT_EQ(e.field, 3);
  e = ErrorFromValidation("events[0].admission.encounter_id: is required", r);
  EXPECT_EQ(e.segment, "PV1");
  EXPECT_EQ(e.field, 19);
  EXPECT_EQ(e.code, kErrRequiredFieldMissing);
  e = ErrorFromValidation("events[0].transfer.to: is required", r);
  EXPECT_EQ(e.field, 3);
  e = ErrorFromValidation("events[0].transfer.from.ward: contains a control character (0x01)", r);
  EXPECT_EQ(e.field, 6);
  e = ErrorFromValidation("events[0].source_organisation: 'R!' is not an ODS code", r);
  EXPECT_EQ(e.segment, "MSH");
  EXPECT_EQ(e.field, 4);
  e = ErrorFromValidation("events[0].nhs_number_merge.retired_nhs_number: must differ", r);
  EXPECT_EQ(e.segment, "MRG");
  e = ErrorFromValidation("events: something else", r);
  EXPECT_EQ(e.segment, "");
  EXPECT_EQ(e.text, "events: something else");
  // A whole event too large: no HL7 field, and not the broker's "events[0]".
  e = ErrorFromValidation("events[0]: 300114 bytes exceeds the limit of 262144 bytes per event", r);
  EXPECT_EQ(e.segment, "");
  EXPECT_EQ(e.code, kErrDataType);
  EXPECT_EQ(e.text,
            "message: the care event mapped from this message is too large: 300114 bytes "
            "exceeds the limit of 262144 bytes per event");
  // A field with no known HL7 source is named by its care event field.
  e = ErrorFromValidation("events[0].care_package_start.hours_per_week: must be a finite number",
                          r);
  EXPECT_EQ(e.segment, "");
  EXPECT_EQ(e.text,
            "message (care event field care_package_start.hours_per_week): must be a finite "
            "number");
}

TEST(AckTest, AaSwapsSenderAndReceiver) {
  Er7Message m;
  ASSERT_TRUE(ParseEr7(Fixture("a01_admit.hl7"), {}, &m).ok());
  AckParams p;
  p.control_id = "ACK1";
  p.now_seconds = 1749544200;
  std::string ack = BuildAck(m, AckCode::kAA, {}, p);
  EXPECT_EQ(ack,
            "MSH|^~\\&|ICR-BROKER|QWU|UHCW-EPR|RKB|20250610083000+0000||ACK^A01^ACK|ACK1|P|2.4\r"
            "MSA|AA|A01-0001\r");
}

TEST(AckTest, AeCarriesErrWithLocationCodeAndText) {
  Er7Message m;
  ASSERT_TRUE(ParseEr7(Fixture("a01_admit.hl7"), {}, &m).ok());
  Hl7Error e;
  e.code = kErrDataType;
  e.segment = "PID";
  e.segment_sequence = 1;
  e.field = 3;
  e.repetition = 1;
  e.text = "PID-3 (nhs_number): fails | the check";
  AckParams p;
  p.control_id = "ACK2";
  std::string ack = BuildAck(m, AckCode::kAE, {e}, p);
  EXPECT_NE(ack.find("MSA|AE|A01-0001|PID-3 (nhs_number): fails \\F\\ the check\r"),
            std::string::npos)
      << ack;
  EXPECT_NE(ack.find("ERR|PID^1^3^102&Data type error&HL70357|PID^1^3^1|102^Data type "
                     "error^HL70357|E||||PID-3 (nhs_number): fails \\F\\ the check\r"),
            std::string::npos)
      << ack;
  ParsedAck parsed;
  ASSERT_TRUE(ParseAck(ack, &parsed));
  EXPECT_EQ(parsed.msa1, "AE");
  EXPECT_EQ(parsed.msa2, "A01-0001");
  ASSERT_EQ(parsed.err_codes.size(), 1u);
  EXPECT_EQ(parsed.err_codes[0], 102);
  EXPECT_EQ(parsed.err_fields[0], "PID-3");
  EXPECT_EQ(parsed.err_texts[0], "PID-3 (nhs_number): fails | the check");
}

TEST(AckTest, AckUsesTheSendersSeparators) {
  Er7Message m;
  ASSERT_TRUE(ParseEr7("MSH$~#!&$APP$RKB$RCV$FAC$20250101$$ADT~A01$X1$P$2.4\r", {}, &m).ok());
  AckParams p;
  p.control_id = "C";
  std::string ack = BuildAck(m, AckCode::kAA, {}, p);
  EXPECT_EQ(ack.substr(0, 29), "MSH$~#!&$RCV$FAC$APP$RKB$1970");
  EXPECT_NE(ack.find("$ACK~A01~ACK$C$P$2.4\r"), std::string::npos) << ack;
  ParsedAck parsed;
  ASSERT_TRUE(ParseAck(ack, &parsed));
  EXPECT_EQ(parsed.msa1, "AA");
  EXPECT_EQ(parsed.msa2, "X1");
}

TEST(AckTest, SeparatorsThatClashWithTheAcksOwnTextFallBackToStandard) {
  // '+' (in MSH-7's offset) and '.' (in versions) cannot be separators of
  // the ACK: it is written with |^~\& and the copied fields re-encoded.
  Er7Message m;
  ASSERT_TRUE(
      ParseEr7("MSH|^~+&|APP^X+F+Y|RKB|||20250101||ADT^A01|ID+T+1|P|2.4\r", {}, &m).ok());
  AckParams p;
  p.control_id = "C";
  p.now_seconds = 1749544200;
  std::string ack = BuildAck(m, AckCode::kAA, {}, p);
  EXPECT_EQ(ack.substr(0, 9), "MSH|^~\\&|");
  EXPECT_NE(ack.find("|APP^X\\F\\Y|RKB|"), std::string::npos) << ack;
  ParsedAck parsed;
  ASSERT_TRUE(ParseAck(ack, &parsed)) << ack;
  EXPECT_EQ(parsed.msa2, "ID&1");
}

TEST(AckTest, UnreadableMessageGetsADefaultAck) {
  Er7Message m;
  Er7Error e = ParseEr7("MSHH0\r", {}, &m);
  ASSERT_FALSE(e.ok());
  AckParams p;
  p.control_id = "C";
  std::string ack = BuildAck(m, AckCode::kAR, {ErrorFromParse(e)}, p);
  ParsedAck parsed;
  ASSERT_TRUE(ParseAck(ack, &parsed)) << ack;
  EXPECT_EQ(parsed.msa1, "AR");
  EXPECT_EQ(parsed.msa2, "");
  EXPECT_EQ(parsed.err_codes[0], 102);
  EXPECT_NE(ack.find("|2.5.1\r"), std::string::npos);
}

TEST(AckTest, ASecondMshIsLocatedAtTheSecondMsh) {
  const std::string a01 = Fixture("a01_admit.hl7");
  Er7Message m;
  Er7Error e = ParseEr7(a01 + a01, {}, &m);
  ASSERT_FALSE(e.ok());
  Hl7Error h = ErrorFromParse(e);
  EXPECT_EQ(h.code, kErrSegmentSequence);
  EXPECT_EQ(h.segment, "MSH");
  EXPECT_EQ(h.segment_sequence, 2);
  EXPECT_NE(h.text.find("an MLLP frame carries one message"), std::string::npos) << h.text;
  AckParams p;
  p.control_id = "C";
  const std::string ack = BuildAck(m, AckCode::kAR, {h}, p);
  EXPECT_NE(ack.find("|MSH^2|100^Segment sequence error^HL70357|"), std::string::npos) << ack;
}

TEST(AckTest, StoreFailureAsksForARetry) {
  Er7Message m;
  ASSERT_TRUE(ParseEr7(Fixture("a02_transfer.hl7"), {}, &m).ok());
  MappingResult r = MapAdt(m, {});
  AckParams p;
  p.control_id = "C";
  std::string ack =
      AckForPublish(m, r, icr::store::Status::Unavailable("disk full"), p);
  ParsedAck parsed;
  ASSERT_TRUE(ParseAck(ack, &parsed));
  EXPECT_EQ(parsed.msa1, "AE");
  EXPECT_EQ(parsed.err_codes[0], 207);
  EXPECT_NE(parsed.err_texts[0].find("resend"), std::string::npos);
  ack = AckForPublish(m, r, icr::store::Status::Ok(), p);
  ASSERT_TRUE(ParseAck(ack, &parsed));
  EXPECT_EQ(parsed.msa1, "AA");
}

TEST(AckTest, ControlIdsAreShortAndDistinct) {
  std::string a = NewAckControlId(), b = NewAckControlId();
  EXPECT_NE(a, b);
  EXPECT_LE(a.size(), 20u);
}

}  // namespace
}  // namespace icr::adapters::hl7
