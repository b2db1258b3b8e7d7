// The care summary fold (broker/workflow/summary.h): every rule of
// ApplyEventToSummary and AbsorbRetiredSummary, a realistic hospital stay,
// determinism, and what the summary must never carry (safeguarding detail,
// mental health detention, the caller-composed fields).
#include "broker/workflow/summary.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace icr::broker::workflow {
namespace {

using ::google::protobuf::TextFormat;
using ::google::protobuf::util::MessageDifferencer;

// Modulus 11 valid numbers of the test range.
constexpr char kNhs[] = "9990000018";
constexpr char kRetiredNhs[] = "9990000026";
constexpr char kOtherNhs[] = "9990000034";

// 2024-03-01T00:00:00Z. Event n happens n hours later and is recorded 2 s
// after that, so every timestamp in an expectation follows from a position.
constexpr int64_t kT0 = 1709251200;
int64_t OccurredSeconds(uint64_t position) { return kT0 + static_cast<int64_t>(position) * 3600; }
std::string At(uint64_t position) {
  return "{ seconds: " + std::to_string(OccurredSeconds(position)) + " }";
}
std::string RecordedAt(uint64_t position) {
  return "{ seconds: " + std::to_string(OccurredSeconds(position) + 2) + " }";
}

struct Source {
  const char* system;
  const char* organisation;
  v1::CareSetting setting;
};
constexpr Source kEpr{"uhcw-epr", "RKB", v1::ACUTE};
constexpr Source kGp{"emis-m86012", "M86012", v1::GP};
constexpr Source kCouncil{"coventry-lcs", "CCC", v1::SOCIAL_CARE};
constexpr Source kMentalHealth{"cwpt-rio", "RYG", v1::MENTAL_HEALTH};
constexpr Source kOtherTrust{"swft-pas", "RJC", v1::ACUTE};

// A committed event: the envelope as the broker stores it (position,
// recorded_at and event_type filled in) around `payload`, in text format.
v1::CareEvent Event(uint64_t position, const std::string& payload, const Source& source = kEpr) {
  v1::CareEvent e;
  e.set_event_id("evt-" + std::to_string(position));
  e.set_position(position);
  e.set_source_system_id(source.system);
  e.set_source_organisation(source.organisation);
  e.set_care_setting(source.setting);
  e.set_source_message_id("msg-" + std::to_string(position));
  e.set_nhs_number(kNhs);
  e.mutable_occurred_at()->set_seconds(OccurredSeconds(position));
  e.mutable_recorded_at()->set_seconds(OccurredSeconds(position) + 2);
  e.set_priority(v1::ROUTINE);
  EXPECT_TRUE(TextFormat::MergeFromString(payload, &e)) << payload;
  e.set_event_type(static_cast<v1::EventType>(e.payload_case()));
  return e;
}

v1::CareSummary Summary(const std::string& text) {
  v1::CareSummary s;
  EXPECT_TRUE(TextFormat::ParseFromString(text, &s)) << text;
  return s;
}

v1::CareSummary Fold(const std::vector<v1::CareEvent>& events, v1::CareSummary s = {}) {
  for (const v1::CareEvent& e : events) ApplyEventToSummary(e, &s);
  return s;
}

// `before` with only the bookkeeping of `events` applied: the same envelopes
// without a payload. SummaryTest.EventWithoutPayloadIsBookkeepingOnly pins
// down what that bookkeeping is.
v1::CareSummary Bookkept(v1::CareSummary before, const std::vector<v1::CareEvent>& events) {
  for (v1::CareEvent e : events) {
    e.clear_payload();
    ApplyEventToSummary(e, &before);
  }
  return before;
}
v1::CareSummary Bookkept(const v1::CareSummary& before, const v1::CareEvent& event) {
  return Bookkept(before, std::vector<v1::CareEvent>{event});
}

// Strict: a present-but-empty sub-message differs from an absent one.
::testing::AssertionResult SameSummary(const v1::CareSummary& want, const v1::CareSummary& got) {
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  if (differencer.Compare(want, got)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << diff << "got:\n" << got.DebugString();
}

std::string DeterministicBytes(const v1::CareSummary& s) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.SetSerializationDeterministic(true);
    s.SerializeToCodedStream(&out);
  }
  return bytes;
}

const char kAdmitE1[] =
    R"(admission { encounter_id: "ENC-1" location { site: "RKB01" ward: "AMU" } })";

// ---------------------------------------------------------------------------
// Bookkeeping (every event)
// ---------------------------------------------------------------------------

TEST(SummaryTest, EventWithoutPayloadIsBookkeepingOnly) {
  v1::CareSummary s = Fold({Event(5, "")});
  EXPECT_TRUE(SameSummary(Summary(R"(
    nhs_number: "9990000018"
    last_updates { source_system_id: "uhcw-epr" source_organisation: "RKB" care_setting: ACUTE
                   position: 5 recorded_at )" +
                                  RecordedAt(5) + R"( }
    last_position: 5
    events: 1)"),
                          s));
}

TEST(SummaryTest, KeepsItsNhsNumberAndTheHighestPosition) {
  v1::CareSummary s;
  s.set_nhs_number(kOtherNhs);
  s = Fold({Event(9, R"(ed_attendance { attendance_id: "ED-1" })"),
            Event(4, R"(ed_attendance { attendance_id: "ED-2" })")},
           s);
  EXPECT_EQ(s.nhs_number(), kOtherNhs);
  EXPECT_EQ(s.events(), 2u);
  EXPECT_EQ(s.last_position(), 9u);
  // An older position never rolls the source's entry back.
  ASSERT_EQ(s.last_updates_size(), 1);
  EXPECT_EQ(s.last_updates(0).position(), 9u);
  EXPECT_EQ(s.last_updates(0).recorded_at().seconds(), OccurredSeconds(9) + 2);
}

TEST(SummaryTest, LastUpdatesHoldOneEntryPerSourceSortedById) {
  const Source epr_moved{"uhcw-epr", "RKB", v1::COMMUNITY};
  v1::CareSummary s = Fold(
      {Event(1, "", kEpr), Event(2, "", kGp), Event(3, "", kCouncil), Event(4, "", epr_moved)});
  EXPECT_TRUE(SameSummary(Summary(R"(
    nhs_number: "9990000018"
    last_updates { source_system_id: "coventry-lcs" source_organisation: "CCC"
                   care_setting: SOCIAL_CARE position: 3 recorded_at )" +
                                  RecordedAt(3) + R"( }
    last_updates { source_system_id: "emis-m86012" source_organisation: "M86012"
                   care_setting: GP position: 2 recorded_at )" +
                                  RecordedAt(2) + R"( }
    last_updates { source_system_id: "uhcw-epr" source_organisation: "RKB"
                   care_setting: COMMUNITY position: 4 recorded_at )" +
                                  RecordedAt(4) + R"( }
    last_position: 4
    events: 4)"),
                          s));
}

// ---------------------------------------------------------------------------
// Demographics, GP
// ---------------------------------------------------------------------------

TEST(SummaryTest, DemographicsMergeNonEmptyFields) {
  v1::CareSummary s = Fold({
      Event(1, R"(demographics_update {
        family_name: "Smith" given_names: "Ann" given_names: "Marie"
        birth_date { year: 1938 month: 2 day: 14 } gender: "female" postcode: "CV2 2DX"
        place: COVENTRY local_authority: "Coventry" commissioner: "B2M3M" })"),
      Event(2, R"(demographics_update { family_name: "Jones" given_names: "Annie"
                                        postcode: "CV21 3AA" place: RUGBY })"),
      Event(3, R"(demographics_update { })"),
  });
  v1::DemographicsUpdate want;
  ASSERT_TRUE(TextFormat::ParseFromString(R"(
    family_name: "Jones" given_names: "Annie" birth_date { year: 1938 month: 2 day: 14 }
    gender: "female" postcode: "CV21 3AA" place: RUGBY local_authority: "Coventry"
    commissioner: "B2M3M")",
                                          &want));
  EXPECT_TRUE(MessageDifferencer::Equals(want, s.demographics())) << s.demographics().DebugString();
}

TEST(SummaryTest, GpRegistrationSetsThePractice) {
  v1::CareSummary s = Fold({Event(1, R"(gp_registration { practice: "M86012" })", kGp)});
  EXPECT_EQ(s.registered_gp_practice(), "M86012");
  s = Fold({Event(2, R"(gp_registration { practice: "M86020" })", kGp)}, s);
  EXPECT_EQ(s.registered_gp_practice(), "M86020");
}

// ---------------------------------------------------------------------------
// Hospital stay: admission, transfer, dates, discharge
// ---------------------------------------------------------------------------

TEST(SummaryTest, AdmissionReplacesLocationAndOpensAFreshEpisode) {
  // Left over from an earlier stay elsewhere: must not leak into the new one.
  v1::CareSummary s = Summary(R"(
    location { kind: IN_CARE_HOME organisation: "VLX12" location { ward: "Old" } }
    open_episode { encounter_id: "OLD" organisation: "RJC"
                   expected_discharge_date { year: 2024 month: 1 day: 2 }
                   discharge_ready_date { year: 2024 month: 1 day: 1 } })");
  s = Fold({Event(1, R"(admission { encounter_id: "ENC-2" location { site: "RKB01" ward: "AMU" }
                                    admission_method: "emergency" })")},
           s);
  EXPECT_TRUE(SameSummary(Bookkept(Summary(R"(
    location { kind: IN_HOSPITAL organisation: "RKB" location { site: "RKB01" ward: "AMU" }
               since )" + At(1) + R"( }
    open_episode { encounter_id: "ENC-2" organisation: "RKB" admitted_at )" +
                                           At(1) + " }"),
                                   Event(1, "")),
                          s));
}

TEST(SummaryTest, TransferMovesThePersonWithinTheOpenEpisode) {
  v1::CareSummary s = Fold({Event(1, kAdmitE1), Event(2, R"(transfer {
    encounter_id: "ENC-1" from { site: "RKB01" ward: "AMU" } to { site: "RKB01" ward: "Ward 32" } })")});
  EXPECT_EQ(s.location().kind(), v1::CurrentLocation::IN_HOSPITAL);
  EXPECT_EQ(s.location().organisation(), "RKB");
  EXPECT_EQ(s.location().location().ward(), "Ward 32");
  EXPECT_EQ(s.location().since().seconds(), OccurredSeconds(2));
  EXPECT_EQ(s.open_episode().encounter_id(), "ENC-1");
  EXPECT_EQ(s.open_episode().admitted_at().seconds(), OccurredSeconds(1));
}

TEST(SummaryTest, TransferWithNoOpenEpisodeMovesButOpensNone) {
  v1::CareSummary s =
      Fold({Event(1, R"(transfer { encounter_id: "ENC-9" to { site: "RKB01" ward: "Ward 4" } })")});
  EXPECT_EQ(s.location().kind(), v1::CurrentLocation::IN_HOSPITAL);
  EXPECT_EQ(s.location().organisation(), "RKB");
  EXPECT_EQ(s.location().location().ward(), "Ward 4");
  EXPECT_FALSE(s.has_open_episode());
}

TEST(SummaryTest, EventsForAnotherEncounterThanTheOpenOneAreStale) {
  // Admitted to RJC as ENC-7; late messages about RKB's ENC-1 must not move her.
  const v1::CareSummary admitted = Fold(
      {Event(1, R"(admission { encounter_id: "ENC-7" location { ward: "W1" } })", kOtherTrust)});
  v1::CareSummary s = admitted;
  for (const v1::CareEvent& e : {
           Event(2, R"(transfer { encounter_id: "ENC-1" to { ward: "Ward 32" } })"),
           Event(3, R"(medically_optimised { encounter_id: "ENC-1"
                         discharge_ready_date { year: 2024 month: 3 day: 8 } })"),
           Event(4, R"(expected_discharge_date_set { encounter_id: "ENC-1"
                         expected_discharge_date { year: 2024 month: 3 day: 9 } })"),
           Event(5, R"(discharge { encounter_id: "ENC-1" destination: USUAL_RESIDENCE })"),
           Event(6, R"(encounter_cancellation { encounter_id: "ENC-1"
                         cancelled_event_type: ADMISSION })"),
       }) {
    const v1::CareSummary want = Bookkept(s, e);
    ApplyEventToSummary(e, &s);
    EXPECT_TRUE(SameSummary(want, s)) << e.DebugString();
  }
  EXPECT_EQ(s.open_episode().encounter_id(), "ENC-7");
  EXPECT_EQ(s.location().organisation(), "RJC");
  EXPECT_EQ(s.events(), 6u);
}

TEST(SummaryTest, DatesAreSetOnTheOpenEpisode) {
  const std::vector<v1::CareEvent> events = {
      Event(1, kAdmitE1),
      Event(2, R"(expected_discharge_date_set { encounter_id: "ENC-1"
                    expected_discharge_date { year: 2024 month: 3 day: 10 } })"),
      Event(3, R"(medically_optimised { encounter_id: "ENC-1"
                    discharge_ready_date { year: 2024 month: 3 day: 8 } })"),
      Event(4, R"(expected_discharge_date_set { encounter_id: "ENC-1"
                    expected_discharge_date { year: 2024 month: 3 day: 12 } })"),
  };
  EXPECT_TRUE(SameSummary(Bookkept(Summary(R"(
    location { kind: IN_HOSPITAL organisation: "RKB" location { site: "RKB01" ward: "AMU" }
               since )" + At(1) + R"( }
    open_episode { encounter_id: "ENC-1" organisation: "RKB" admitted_at )" +
                                           At(1) + R"(
                   expected_discharge_date { year: 2024 month: 3 day: 12 }
                   discharge_ready_date { year: 2024 month: 3 day: 8 } })"),
                                   events),
                          Fold(events)));
}

TEST(SummaryTest, DatesWithNoOpenEpisodeOpenOne) {
  v1::CareSummary s = Fold({Event(1, R"(medically_optimised { encounter_id: "ENC-3"
                                          discharge_ready_date { year: 2024 month: 3 day: 8 } })")});
  EXPECT_TRUE(s.has_open_episode());
  EXPECT_EQ(s.open_episode().encounter_id(), "ENC-3");
  EXPECT_EQ(s.open_episode().organisation(), "RKB");
  EXPECT_EQ(s.open_episode().discharge_ready_date().day(), 8);
  EXPECT_FALSE(s.open_episode().has_admitted_at());  // not known without the admission
  EXPECT_FALSE(s.has_location());                    // only movements move the person

  s = Fold({Event(1, R"(expected_discharge_date_set { encounter_id: "ENC-4"
                          expected_discharge_date { year: 2024 month: 3 day: 11 } })")});
  EXPECT_EQ(s.open_episode().encounter_id(), "ENC-4");
  EXPECT_EQ(s.open_episode().expected_discharge_date().day(), 11);
  EXPECT_FALSE(s.open_episode().has_discharge_ready_date());
}

TEST(SummaryTest, DischargeClosesTheEpisodeAndMapsTheDestination) {
  const std::map<v1::DischargeDestination, v1::CurrentLocation::Kind> kWant = {
      {v1::DISCHARGE_DESTINATION_UNSPECIFIED, v1::CurrentLocation::OTHER},
      {v1::USUAL_RESIDENCE, v1::CurrentLocation::AT_HOME},
      {v1::USUAL_RESIDENCE_WITH_SUPPORT, v1::CurrentLocation::AT_HOME},
      {v1::CARE_HOME_RESIDENTIAL, v1::CurrentLocation::IN_CARE_HOME},
      {v1::CARE_HOME_NURSING, v1::CurrentLocation::IN_CARE_HOME},
      {v1::STEP_DOWN_BED_DESTINATION, v1::CurrentLocation::IN_STEP_DOWN_BED},
      {v1::OTHER_HOSPITAL, v1::CurrentLocation::OTHER},
      {v1::HOSPICE, v1::CurrentLocation::OTHER},
      {v1::DIED, v1::CurrentLocation::DECEASED},
      {v1::SELF_DISCHARGE, v1::CurrentLocation::OTHER},
      {v1::OTHER_DESTINATION, v1::CurrentLocation::OTHER},
  };
  // Every destination the proto defines is covered.
  ASSERT_EQ(kWant.size(),
            static_cast<size_t>(v1::DischargeDestination_descriptor()->value_count()));
  for (const auto& [destination, kind] : kWant) {
    v1::CareEvent discharge = Event(2, R"(discharge { encounter_id: "ENC-1" pathway: PATHWAY_3 })");
    discharge.mutable_discharge()->set_destination(destination);
    if (kind == v1::CurrentLocation::IN_CARE_HOME) {
      discharge.mutable_discharge()->set_destination_organisation("VLX12");
    }
    const v1::CareSummary s = Fold({Event(1, kAdmitE1), discharge});
    const std::string name = v1::DischargeDestination_Name(destination);
    EXPECT_FALSE(s.has_open_episode()) << name;
    EXPECT_EQ(s.location().kind(), kind) << name;
    EXPECT_EQ(s.location().organisation(), kind == v1::CurrentLocation::IN_CARE_HOME ? "VLX12" : "")
        << name;
    EXPECT_FALSE(s.location().has_location()) << name << ": the ward must not survive";
    EXPECT_EQ(s.location().since().seconds(), OccurredSeconds(2)) << name;
  }
}

TEST(SummaryTest, DischargeWithNoOpenEpisodeStillMovesThePerson) {
  const v1::CareSummary s =
      Fold({Event(1, R"(discharge { encounter_id: "ENC-1" destination: STEP_DOWN_BED_DESTINATION
                         destination_organisation: "RKB90" })")});
  EXPECT_EQ(s.location().kind(), v1::CurrentLocation::IN_STEP_DOWN_BED);
  EXPECT_EQ(s.location().organisation(), "RKB90");
  EXPECT_FALSE(s.has_open_episode());
}

// ---------------------------------------------------------------------------
// Flags, packages, contributions
// ---------------------------------------------------------------------------

TEST(SummaryTest, NeedsSetFlagsWhichAreNeverCleared) {
  v1::CareSummary s = Fold({Event(1, R"(discharge_referral {
    referral_id: "REF-1" pathway: PATHWAY_1 referrer { organisation: "RKB" team_code: "DIS" }
    needs { chc_eligible: true telecare: true carers_per_call: 2 } })")});
  EXPECT_FALSE(s.has_flags()) << "needs that are not flags must not add an empty CareFlags";

  s = Fold({Event(2, R"(discharge_referral {
              referral_id: "REF-1" pathway: PATHWAY_1 referrer { organisation: "RKB" team_code: "DIS" }
              needs { dementia: true } })"),
            Event(3, R"(placement_request {
              request_id: "PR-1" service_type: HOME_SUPPORT place: COVENTRY
              start_date { year: 2024 month: 3 day: 9 } hours_per_week: 14 calls_per_day: 2
              needs { end_of_life: true section_117: true } })",
                  kCouncil),
            // Later traffic without those needs does not clear them.
            Event(4, R"(discharge_referral {
              referral_id: "REF-2" pathway: PATHWAY_0 referrer { organisation: "RKB" team_code: "DIS" }
              needs { } })"),
            Event(5, R"(placement_request { request_id: "PR-2" service_type: RESIDENTIAL
                                            place: COVENTRY })",
                  kCouncil)},
           s);
  EXPECT_TRUE(s.flags().dementia());
  EXPECT_TRUE(s.flags().end_of_life());
  EXPECT_TRUE(s.flags().section_117());
  EXPECT_FALSE(s.flags().safeguarding());
  EXPECT_FALSE(s.has_open_referral()) << "the caller composes open_referral";
}

TEST(SummaryTest, TheLatestObjectionAndOptOutEventDecideTheirFlags) {
  v1::CareSummary s = Fold({Event(1, R"(sharing_objection { reason: "no planning use" })"),
                            Event(2, R"(national_data_opt_out { opted_out: true })")});
  EXPECT_TRUE(s.flags().sharing_objection());
  EXPECT_TRUE(s.flags().national_data_opt_out());
  s = Fold({Event(3, R"(sharing_objection { withdrawn: true })"),
            Event(4, R"(national_data_opt_out { opted_out: false })")},
           s);
  EXPECT_FALSE(s.flags().sharing_objection());
  EXPECT_FALSE(s.flags().national_data_opt_out());
  s = Fold({Event(5, R"(sharing_objection { })")}, s);
  EXPECT_TRUE(s.flags().sharing_objection()) << "an objection made again stands again";
}

TEST(AbsorbRetiredSummaryTest, AnObjectionUnderEitherNumberStandsForThePerson) {
  v1::CareSummary retired = Fold({Event(1, R"(sharing_objection { })")});
  retired.set_nhs_number("9990000026");
  v1::CareSummary survivor = Fold({Event(2, R"(gp_registration { practice: "M86012" })")});
  AbsorbRetiredSummary(retired, &survivor);
  EXPECT_TRUE(survivor.flags().sharing_objection());
  EXPECT_FALSE(survivor.flags().national_data_opt_out());
}

TEST(SummaryTest, CarePackageStartsAndEndsByPackageId) {
  v1::CareSummary s = Fold({Event(1, R"(care_package_start {
    package_id: "PKG-1" service_type: HOME_SUPPORT provider: "1-234567890"
    start_date { year: 2024 month: 3 day: 9 } hours_per_week: 10.5 })",
                                  kCouncil)});
  v1::CarePackageSummary want;
  ASSERT_TRUE(TextFormat::ParseFromString(R"(
    package_id: "PKG-1" service_type: HOME_SUPPORT provider: "1-234567890"
    start_date { year: 2024 month: 3 day: 9 } hours_per_week: 10.5)",
                                          &want));
  EXPECT_TRUE(MessageDifferencer::Equals(want, s.care_package())) << s.care_package().DebugString();

  // Ending another package leaves this one.
  s = Fold({Event(2, R"(care_package_end { package_id: "PKG-0"
                          end_date { year: 2024 month: 3 day: 10 } })",
                  kCouncil)},
           s);
  EXPECT_EQ(s.care_package().package_id(), "PKG-1");

  // A new package replaces the old one wholesale.
  s = Fold({Event(3, R"(care_package_start { package_id: "PKG-2" service_type: RESIDENTIAL
                          start_date { year: 2024 month: 4 day: 1 } })",
                  kCouncil)},
           s);
  EXPECT_EQ(s.care_package().package_id(), "PKG-2");
  EXPECT_EQ(s.care_package().provider(), "");
  EXPECT_EQ(s.care_package().hours_per_week(), 0.0);

  s = Fold({Event(4, R"(care_package_end { package_id: "PKG-2"
                          end_date { year: 2024 month: 5 day: 1 } })",
                  kCouncil)},
           s);
  EXPECT_FALSE(s.has_care_package());
}

TEST(SummaryTest, ContributionUnionsAllergiesBySystemAndCode) {
  const v1::CareSummary s = Fold({
      Event(1, R"(care_summary_contribution {
        allergies { system: "http://snomed.info/sct" code: "91936005" display: "Allergy to penicillin" }
        allergies { system: "http://snomed.info/sct" code: "91936005" display: "duplicate in one message" }
        problems { system: "http://snomed.info/sct" code: "52448006" display: "Dementia" }
        medications { code: "39732311000001104" } })",
            kGp),
      Event(2, R"(care_summary_contribution {
        allergies { system: "http://snomed.info/sct" code: "91936005" display: "Penicillin allergy" }
        allergies { system: "local" code: "91936005" display: "same code, other system" }
        allergies { system: "http://snomed.info/sct" code: "294505008" display: "Allergy to amoxicillin" } })"),
  });
  ASSERT_EQ(s.allergies_size(), 3);
  EXPECT_EQ(s.allergies(0).display(), "Allergy to penicillin");  // first seen is kept
  EXPECT_EQ(s.allergies(1).system(), "local");
  EXPECT_EQ(s.allergies(2).code(), "294505008");
  // Problems and medications have no place in the summary.
  EXPECT_EQ(s.DebugString().find("52448006"), std::string::npos);
  EXPECT_EQ(s.DebugString().find("39732311000001104"), std::string::npos);
}

TEST(SummaryTest, ContributionUnionsAlertsCaseInsensitivelyKeepingTheFirstSpelling) {
  const v1::CareSummary s = Fold({
      Event(1, R"(care_summary_contribution { alerts: "Falls risk" alerts: "Lives alone" })", kGp),
      Event(2, R"(care_summary_contribution { alerts: "FALLS RISK" alerts: " falls  risk "
                                              alerts: "" alerts: "   " alerts: "Hard of hearing" })"),
  });
  EXPECT_EQ(std::vector<std::string>(s.alerts().begin(), s.alerts().end()),
            (std::vector<std::string>{"Falls risk", "Lives alone", "Hard of hearing"}));
  EXPECT_FALSE(s.has_flags());
}

TEST(SummaryTest, AlertsNamingAFlagSetIt) {
  const v1::CareSummary s = Fold({Event(1, R"(care_summary_contribution {
    alerts: "Dementia" alerts: "End of life" alerts: "end_of_life" alerts: "SECTION_117"
    alerts: "Section 117" alerts: "Dementia screening due" })")});
  EXPECT_TRUE(s.flags().dementia());
  EXPECT_TRUE(s.flags().end_of_life());
  EXPECT_TRUE(s.flags().section_117());
  EXPECT_FALSE(s.flags().safeguarding());
  // Only exact names set a flag; spellings of one alert are kept once.
  EXPECT_EQ(std::vector<std::string>(s.alerts().begin(), s.alerts().end()),
            (std::vector<std::string>{"Dementia", "End of life", "SECTION_117",
                                      "Dementia screening due"}));
  const v1::CareSummary screening_only =
      Fold({Event(1, R"(care_summary_contribution { alerts: "Dementia screening due" })")});
  EXPECT_FALSE(screening_only.flags().dementia());
}

TEST(SummaryTest, SafeguardingAlertSetsTheFlagAndIsWithheld) {
  const v1::CareSummary s = Fold({Event(1, R"(care_summary_contribution {
    alerts: "Safeguarding concern - see record" alerts: "SAFEGUARDING: DoLS in place"
    alerts: "Adult safe-guarding referral made" alerts: "Falls risk" })",
                                        kCouncil)});
  EXPECT_TRUE(s.flags().safeguarding());
  EXPECT_FALSE(s.flags().dementia());
  EXPECT_EQ(std::vector<std::string>(s.alerts().begin(), s.alerts().end()),
            std::vector<std::string>{"Falls risk"});
  const std::string bytes = s.SerializeAsString();
  for (const char* detail : {"concern", "DoLS", "referral made", "afeguard", "AFEGUARD"}) {
    EXPECT_EQ(bytes.find(detail), std::string::npos) << detail;
  }
}

// ---------------------------------------------------------------------------
// Sensitive and bookkeeping-only types
// ---------------------------------------------------------------------------

TEST(SummaryTest, MentalHealthEpisodeStartCopiesNothingSensitive) {
  const v1::CareSummary before = Fold({Event(1, kAdmitE1)});
  const v1::CareEvent start = Event(2, R"(mental_health_episode_start {
    episode_id: "MH-1" team: "Crisis Resolution Home Treatment" detained: true })",
                                    kMentalHealth);
  v1::CareSummary s = before;
  ApplyEventToSummary(start, &s);
  EXPECT_TRUE(SameSummary(Bookkept(before, start), s));
  const std::string text = s.DebugString();
  EXPECT_EQ(text.find("MH-1"), std::string::npos);
  EXPECT_EQ(text.find("Crisis"), std::string::npos);
  EXPECT_EQ(text.find("detain"), std::string::npos);
}

// The payload types with a rule. Every other type must be bookkeeping only.
const std::set<int> kTypesWithRules = {
    v1::DEMOGRAPHICS_UPDATE, v1::ADMISSION,           v1::TRANSFER,
    v1::DISCHARGE,           v1::MEDICALLY_OPTIMISED, v1::EXPECTED_DISCHARGE_DATE_SET,
    v1::DISCHARGE_REFERRAL,  v1::PLACEMENT_REQUEST,   v1::CARE_PACKAGE_START,
    v1::CARE_PACKAGE_END,    v1::GP_REGISTRATION,     v1::CARE_SUMMARY_CONTRIBUTION,
    v1::DEATH_NOTIFICATION,  v1::NHS_NUMBER_MERGE,    v1::ENCOUNTER_CANCELLATION,
    v1::SHARING_OBJECTION,   v1::NATIONAL_DATA_OPT_OUT,
};

// A realistic payload for each type without a rule, naming the open
// encounter where there is one, so that "ignored" is not an accident of
// empty fields.
const std::map<int, std::string> kBookkeepingOnly = {
    {v1::ED_ATTENDANCE,
     R"(ed_attendance { attendance_id: "ED-1" site: "RKB01" disposal: "admitted" })"},
    {v1::REFERRAL_STATUS_CHANGE,
     R"(referral_status_change { referral_id: "REF-1" status: DISCHARGED pathway: PATHWAY_1 })"},
    {v1::PLACEMENT_OFFER,
     R"(placement_offer { offer_id: "OF-1" request_id: "PR-1" provider: "VLX12"
                          start_date { year: 2024 month: 3 day: 9 } })"},
    {v1::PLACEMENT_ACCEPTANCE, R"(placement_acceptance { offer_id: "OF-1" request_id: "PR-1" })"},
    {v1::PLACEMENT_DECLINE, R"(placement_decline { offer_id: "OF-1" reason: "too far" })"},
    {v1::PLACEMENT_CANCELLATION, R"(placement_cancellation { request_id: "PR-1" })"},
    {v1::CARE_ACT_ASSESSMENT,
     R"(care_act_assessment { assessment_id: "CAA-1" outcome: "eligible"
                              assessed_on { year: 2024 month: 3 day: 5 } })"},
    {v1::REABLEMENT_START,
     R"(reablement_start { episode_id: "RB-1" start_date { year: 2024 month: 3 day: 9 }
                           provider: "1-234567890" })"},
    {v1::REABLEMENT_END,
     R"(reablement_end { episode_id: "RB-1" end_date { year: 2024 month: 4 day: 9 }
                         outcome: "independent" })"},
    {v1::MENTAL_HEALTH_EPISODE_START,
     R"(mental_health_episode_start { episode_id: "MH-1" team: "CRHT" detained: true })"},
    {v1::MENTAL_HEALTH_EPISODE_END,
     R"(mental_health_episode_end { episode_id: "MH-1" outcome: "discharged" })"},
    {v1::PRE_ADMISSION,
     R"(pre_admission { encounter_id: "ENC-1" location { ward: "Ward 9" }
                        expected_admission_date { year: 2024 month: 4 day: 1 } })"},
    {v1::ENCOUNTER_UPDATE,
     R"(encounter_update { encounter_id: "ENC-1" location { ward: "Ward 9" } patient_class: "I" })"},
    {v1::ESCALATION,
     R"(escalation { referral_id: "REF-1" kind: NO_OFFER deadline { seconds: 1709300000 } })"},
};

TEST(SummaryTest, EveryPayloadTypeIsEitherRuledOrBookkeepingOnly) {
  const auto* payload = v1::CareEvent::descriptor()->FindOneofByName("payload");
  ASSERT_NE(payload, nullptr);
  EXPECT_EQ(payload->field_count(), 31);
  for (int i = 0; i < payload->field_count(); ++i) {
    const int number = payload->field(i)->number();
    EXPECT_NE(kTypesWithRules.count(number) + kBookkeepingOnly.count(number), 0u)
        << payload->field(i)->name() << " has neither a rule nor a bookkeeping-only test";
  }
}

TEST(SummaryTest, TypesWithoutARuleAreBookkeepingOnly) {
  const v1::CareSummary before = Fold({
      Event(1, R"(gp_registration { practice: "M86012" })", kGp),
      Event(2, kAdmitE1),
      Event(3, R"(care_package_start { package_id: "PKG-1" service_type: HOME_SUPPORT
                                       start_date { year: 2024 month: 1 day: 1 } })",
            kCouncil),
  });
  for (const auto& [type, payload] : kBookkeepingOnly) {
    const v1::CareEvent e = Event(10, payload, kMentalHealth);
    ASSERT_EQ(e.event_type(), type) << payload;
    v1::CareSummary s = before;
    ApplyEventToSummary(e, &s);
    EXPECT_TRUE(SameSummary(Bookkept(before, e), s)) << v1::EventType_Name(e.event_type());
  }
}

TEST(SummaryTest, NeverTouchesOpenReferralOrRequestedNumber) {
  v1::CareSummary s = Summary(R"(
    nhs_number: "9990000018" requested_nhs_number: "9990000026"
    open_referral { referral_id: "REF-1" status: ACCEPTED nhs_number: "9990000018" })");
  const v1::CareSummary composed = s;
  // One event of every payload type, each with an empty payload (the rules
  // must cope with that too) and then the realistic ones.
  const auto* payload = v1::CareEvent::descriptor()->FindOneofByName("payload");
  uint64_t position = 1;
  for (int i = 0; i < payload->field_count(); ++i) {
    v1::CareEvent e = Event(position++, "");
    e.GetReflection()->MutableMessage(&e, payload->field(i));
    e.set_event_type(static_cast<v1::EventType>(e.payload_case()));
    ApplyEventToSummary(e, &s);
  }
  for (const auto& [type, text] : kBookkeepingOnly)
    ApplyEventToSummary(Event(position++, text), &s);
  EXPECT_EQ(s.requested_nhs_number(), composed.requested_nhs_number());
  EXPECT_TRUE(MessageDifferencer::Equals(s.open_referral(), composed.open_referral()));
  EXPECT_EQ(s.events(), position - 1);
}

// ---------------------------------------------------------------------------
// Death, cancellations, merges
// ---------------------------------------------------------------------------

TEST(SummaryTest, DeathNotificationRecordsDeathAndClosesTheEpisode) {
  const std::vector<v1::CareEvent> events = {
      Event(1, kAdmitE1),
      Event(2, R"(death_notification { date_of_death { year: 2024 month: 3 day: 1 }
                                       place_of_death: "RKB01" })"),
  };
  EXPECT_TRUE(SameSummary(Bookkept(Summary(R"(
    location { kind: DECEASED since )" + At(2) +
                                           R"( }
    date_of_death { year: 2024 month: 3 day: 1 })"),
                                   events),
                          Fold(events)));
}

TEST(SummaryTest, AfterDeathLateMovementsDoNotMoveThePerson) {
  const std::vector<v1::CareEvent> events = {
      Event(1, kAdmitE1),
      Event(2, R"(death_notification { date_of_death { year: 2024 month: 3 day: 1 } })"),
      // Keyed late by the ward: must not show the person at home.
      Event(3, R"(discharge { encounter_id: "E1" destination: USUAL_RESIDENCE })"),
      Event(4, R"(admission { encounter_id: "E2" })"),
  };
  v1::CareSummary s = Fold(events);
  EXPECT_EQ(s.location().kind(), v1::CurrentLocation::DECEASED);
  EXPECT_EQ(s.location().since().seconds(), events[1].occurred_at().seconds());
  EXPECT_FALSE(s.has_open_episode());
  EXPECT_EQ(s.events(), 4u);  // still counted and bookkept
  EXPECT_EQ(s.last_position(), 4u);
}

TEST(SummaryTest, CancelledAdmissionLeavesWhereaboutsUnknown) {
  const std::vector<v1::CareEvent> events = {
      Event(1, kAdmitE1),
      Event(2, R"(encounter_cancellation { encounter_id: "ENC-1" cancelled_event_type: ADMISSION
                                           reason: "entered in error" })"),
  };
  const v1::CareSummary s = Fold(events);
  EXPECT_EQ(s.location().kind(), v1::CurrentLocation::KIND_UNKNOWN);
  // Nothing but the bookkeeping of the two events remains.
  EXPECT_TRUE(SameSummary(Bookkept(v1::CareSummary(), events), s));
}

TEST(SummaryTest, CancelledDischargePutsThePersonBackInHospital) {
  const v1::CareSummary home = Fold({
      Event(1, kAdmitE1),
      Event(2, R"(discharge { encounter_id: "ENC-1" destination: USUAL_RESIDENCE })"),
  });
  ASSERT_EQ(home.location().kind(), v1::CurrentLocation::AT_HOME);
  const v1::CareEvent cancel = Event(
      3, R"(encounter_cancellation { encounter_id: "ENC-1" cancelled_event_type: DISCHARGE })");
  // Back on no particular ward; the admission time went with the discharge.
  EXPECT_TRUE(SameSummary(Bookkept(Summary(R"(
    location { kind: IN_HOSPITAL organisation: "RKB" since )" +
                                           At(3) + R"( }
    open_episode { encounter_id: "ENC-1" organisation: "RKB" })"),
                                   {Event(1, ""), Event(2, ""), cancel}),
                          Fold({cancel}, home)));

  // Cancelling a discharge while the person is still in hospital changes nothing.
  const v1::CareSummary in_hospital = Fold({Event(1, kAdmitE1)});
  EXPECT_TRUE(SameSummary(Bookkept(in_hospital, cancel), Fold({cancel}, in_hospital)));
}

TEST(SummaryTest, CancelledTransferIsBookkeepingOnly) {
  const v1::CareSummary moved = Fold({
      Event(1, kAdmitE1),
      Event(2, R"(transfer { encounter_id: "ENC-1" to { ward: "Ward 32" } })"),
  });
  const v1::CareEvent cancel = Event(
      3, R"(encounter_cancellation { encounter_id: "ENC-1" cancelled_event_type: TRANSFER })");
  EXPECT_TRUE(SameSummary(Bookkept(moved, cancel), Fold({cancel}, moved)));
}

TEST(SummaryTest, NhsNumberMergeRecordsEachRetiredNumberOnceInOrder) {
  const v1::CareSummary s = Fold({
      Event(1, R"(nhs_number_merge { retired_nhs_number: "9990000034" })"),
      Event(2, R"(nhs_number_merge { retired_nhs_number: "9990000026" })"),
      Event(3, R"(nhs_number_merge { retired_nhs_number: "9990000034" })"),
      Event(4, R"(nhs_number_merge { retired_nhs_number: "9990000018" })"),  // its own number
  });
  EXPECT_EQ(
      std::vector<std::string>(s.retired_nhs_numbers().begin(), s.retired_nhs_numbers().end()),
      (std::vector<std::string>{kRetiredNhs, kOtherNhs}));
  EXPECT_EQ(s.events(), 4u);
}

// ---------------------------------------------------------------------------
// A realistic stay, determinism
// ---------------------------------------------------------------------------

// GP registration, emergency admission, ward move, medically optimised,
// referral with dementia needs, a GP contribution with an allergy and a
// safeguarding alert, and discharge to a residential care home.
std::vector<v1::CareEvent> RealisticStay() {
  return {
      Event(
          1,
          R"(gp_registration { practice: "M86012" registered_on { year: 2019 month: 5 day: 1 } })",
          kGp),
      Event(2, R"(admission { encounter_id: "ENC-1" location { site: "RKB01" ward: "AMU" }
                              attending { professional_id: "GMC1234567" name: "Dr A Patel" }
                              admission_method: "emergency" })"),
      Event(3, R"(transfer { encounter_id: "ENC-1" from { site: "RKB01" ward: "AMU" }
                             to { site: "RKB01" ward: "Ward 32" bed: "12" } })"),
      Event(4, R"(medically_optimised { encounter_id: "ENC-1"
                                        discharge_ready_date { year: 2024 month: 3 day: 8 } })"),
      Event(5, R"(discharge_referral {
        referral_id: "REF-1" pathway: PATHWAY_3 referrer { organisation: "RKB" team_code: "DIS-UHCW" }
        needs { dementia: true carers_per_call: 2 summary: "Needs 24h supervision" }
        encounter_id: "ENC-1" place: COVENTRY })"),
      Event(6, R"(care_summary_contribution {
        allergies { system: "http://snomed.info/sct" code: "91936005" display: "Allergy to penicillin" }
        alerts: "Safeguarding concern - see record" alerts: "Falls risk" })",
            kGp),
      Event(7, R"(discharge { encounter_id: "ENC-1" destination: CARE_HOME_RESIDENTIAL
                              pathway: PATHWAY_3 destination_organisation: "VLX12" })"),
  };
}

TEST(SummaryTest, RealisticStayEndsInACareHome) {
  const std::vector<v1::CareEvent> events = RealisticStay();

  // Just before discharge: on Ward 32, medically optimised, flagged.
  const v1::CareSummary before_discharge =
      Fold(std::vector<v1::CareEvent>(events.begin(), events.end() - 1));
  EXPECT_TRUE(SameSummary(Summary(R"(
    nhs_number: "9990000018"
    registered_gp_practice: "M86012"
    location { kind: IN_HOSPITAL organisation: "RKB"
               location { site: "RKB01" ward: "Ward 32" bed: "12" } since )" +
                                  At(3) + R"( }
    open_episode { encounter_id: "ENC-1" organisation: "RKB" admitted_at )" +
                                  At(2) + R"(
                   discharge_ready_date { year: 2024 month: 3 day: 8 } }
    flags { dementia: true safeguarding: true }
    allergies { system: "http://snomed.info/sct" code: "91936005" display: "Allergy to penicillin" }
    alerts: "Falls risk"
    last_updates { source_system_id: "emis-m86012" source_organisation: "M86012" care_setting: GP
                   position: 6 recorded_at )" +
                                  RecordedAt(6) + R"( }
    last_updates { source_system_id: "uhcw-epr" source_organisation: "RKB" care_setting: ACUTE
                   position: 5 recorded_at )" +
                                  RecordedAt(5) + R"( }
    last_position: 6
    events: 6)"),
                          before_discharge));

  EXPECT_TRUE(SameSummary(Summary(R"(
    nhs_number: "9990000018"
    registered_gp_practice: "M86012"
    location { kind: IN_CARE_HOME organisation: "VLX12" since )" +
                                  At(7) + R"( }
    flags { dementia: true safeguarding: true }
    allergies { system: "http://snomed.info/sct" code: "91936005" display: "Allergy to penicillin" }
    alerts: "Falls risk"
    last_updates { source_system_id: "emis-m86012" source_organisation: "M86012" care_setting: GP
                   position: 6 recorded_at )" +
                                  RecordedAt(6) + R"( }
    last_updates { source_system_id: "uhcw-epr" source_organisation: "RKB" care_setting: ACUTE
                   position: 7 recorded_at )" +
                                  RecordedAt(7) + R"( }
    last_position: 7
    events: 7)"),
                          Fold(events)));
}

TEST(SummaryTest, FoldIsDeterministic) {
  std::vector<v1::CareEvent> events = RealisticStay();
  for (const auto& [type, text] : kBookkeepingOnly) {
    events.push_back(Event(events.size() + 1, text, kMentalHealth));
  }
  events.push_back(
      Event(events.size() + 1, R"(nhs_number_merge { retired_nhs_number: "9990000034" })"));
  events.push_back(
      Event(events.size() + 1, R"(nhs_number_merge { retired_nhs_number: "9990000026" })"));
  const v1::CareSummary first = Fold(events);
  const v1::CareSummary second = Fold(events);
  EXPECT_FALSE(DeterministicBytes(first).empty());
  EXPECT_EQ(DeterministicBytes(first), DeterministicBytes(second));
  EXPECT_TRUE(MessageDifferencer::Equals(first, second));

  // Folding through a serialized checkpoint (as a store would) changes nothing.
  v1::CareSummary checkpoint;
  const auto half = events.begin() + events.size() / 2;
  ASSERT_TRUE(checkpoint.ParseFromString(
      DeterministicBytes(Fold(std::vector<v1::CareEvent>(events.begin(), half)))));
  EXPECT_EQ(DeterministicBytes(Fold(std::vector<v1::CareEvent>(half, events.end()), checkpoint)),
            DeterministicBytes(first));
}

// ---------------------------------------------------------------------------
// AbsorbRetiredSummary
// ---------------------------------------------------------------------------

TEST(AbsorbRetiredSummaryTest, FillsGapsUnionsListsAndKeepsTheSurvivorsValues) {
  v1::CareSummary survivor = Summary(R"(
    nhs_number: "9990000018"
    requested_nhs_number: "9990000018"
    demographics { family_name: "Smith" place: COVENTRY }
    location { kind: AT_HOME since { seconds: 1709000000 } }
    open_referral { referral_id: "REF-S" }
    flags { dementia: true }
    allergies { system: "http://snomed.info/sct" code: "91936005" display: "Allergy to penicillin" }
    alerts: "Falls risk"
    last_updates { source_system_id: "emis-m86012" position: 3 }
    last_updates { source_system_id: "uhcw-epr" position: 10 }
    last_position: 10
    events: 5)");
  const v1::CareSummary retired = Summary(R"(
    nhs_number: "9990000026"
    requested_nhs_number: "9990000026"
    retired_nhs_numbers: "9990000034"
    retired_nhs_numbers: "9990000018"
    demographics { family_name: "Smyth" given_names: "Ann" postcode: "CV2 2DX" place: RUGBY }
    registered_gp_practice: "M86012"
    location { kind: IN_HOSPITAL organisation: "RJC" }
    open_episode { encounter_id: "ENC-R" organisation: "RJC" }
    open_referral { referral_id: "REF-R" }
    care_package { package_id: "PKG-R" service_type: HOME_SUPPORT hours_per_week: 7 }
    flags { end_of_life: true safeguarding: true }
    allergies { system: "http://snomed.info/sct" code: "91936005" display: "Penicillin" }
    allergies { system: "http://snomed.info/sct" code: "294505008" display: "Allergy to amoxicillin" }
    alerts: "FALLS RISK"
    alerts: "Lives alone"
    last_updates { source_system_id: "cwpt-rio" position: 4 }
    last_updates { source_system_id: "emis-m86012" position: 7 }
    last_updates { source_system_id: "uhcw-epr" position: 8 }
    date_of_death { year: 2024 month: 3 day: 20 }
    last_position: 8
    events: 3)");
  AbsorbRetiredSummary(retired, &survivor);
  EXPECT_TRUE(SameSummary(Summary(R"(
    nhs_number: "9990000018"
    requested_nhs_number: "9990000018"
    retired_nhs_numbers: "9990000026"
    retired_nhs_numbers: "9990000034"
    demographics { family_name: "Smith" given_names: "Ann" postcode: "CV2 2DX" place: COVENTRY }
    registered_gp_practice: "M86012"
    location { kind: AT_HOME since { seconds: 1709000000 } }
    open_referral { referral_id: "REF-S" }
    care_package { package_id: "PKG-R" service_type: HOME_SUPPORT hours_per_week: 7 }
    flags { dementia: true end_of_life: true safeguarding: true }
    allergies { system: "http://snomed.info/sct" code: "91936005" display: "Allergy to penicillin" }
    allergies { system: "http://snomed.info/sct" code: "294505008" display: "Allergy to amoxicillin" }
    alerts: "Falls risk"
    alerts: "Lives alone"
    last_updates { source_system_id: "cwpt-rio" position: 4 }
    last_updates { source_system_id: "emis-m86012" position: 7 }
    last_updates { source_system_id: "uhcw-epr" position: 10 }
    date_of_death { year: 2024 month: 3 day: 20 }
    last_position: 10
    events: 8)"),
                          survivor));
}

TEST(AbsorbRetiredSummaryTest, TakesWhereaboutsOnlyAsAPair) {
  const v1::CareSummary retired = Summary(R"(
    nhs_number: "9990000026"
    location { kind: IN_HOSPITAL organisation: "RJC" location { ward: "W1" } }
    open_episode { encounter_id: "ENC-R" organisation: "RJC" })");

  // Whereabouts unknown: the retired record's are taken whole.
  v1::CareSummary unknown = Summary(R"(nhs_number: "9990000018")");
  AbsorbRetiredSummary(retired, &unknown);
  EXPECT_TRUE(MessageDifferencer::Equals(unknown.location(), retired.location()));
  EXPECT_TRUE(MessageDifferencer::Equals(unknown.open_episode(), retired.open_episode()));

  // An open episode (even with no known location) is knowledge: keep it and
  // take neither half of the retired pair.
  v1::CareSummary episode_only = Summary(R"(
    nhs_number: "9990000018" open_episode { encounter_id: "ENC-S" organisation: "RKB" })");
  AbsorbRetiredSummary(retired, &episode_only);
  EXPECT_FALSE(episode_only.has_location());
  EXPECT_EQ(episode_only.open_episode().encounter_id(), "ENC-S");
}

TEST(AbsorbRetiredSummaryTest, IntoAnEmptySurvivorGivesTheRetiredSummaryUnderTheNewNumber) {
  const v1::CareSummary retired = [] {
    v1::CareSummary s;
    for (v1::CareEvent e : RealisticStay()) {
      e.set_nhs_number(kRetiredNhs);
      ApplyEventToSummary(e, &s);
    }
    return s;
  }();
  v1::CareSummary survivor;
  survivor.set_nhs_number(kNhs);
  AbsorbRetiredSummary(retired, &survivor);

  v1::CareSummary want = retired;
  want.set_nhs_number(kNhs);
  want.add_retired_nhs_numbers(kRetiredNhs);
  EXPECT_TRUE(SameSummary(want, survivor));
}

TEST(AbsorbRetiredSummaryTest, MergeEventThenAbsorbCountsEverythingOnce) {
  // The caller's order on NHS_NUMBER_MERGE: fold the event, absorb the summary.
  v1::CareSummary retired;
  for (v1::CareEvent e : RealisticStay()) {
    e.set_nhs_number(kRetiredNhs);
    ApplyEventToSummary(e, &retired);
  }
  ApplyEventToSummary(Event(8, R"(nhs_number_merge { retired_nhs_number: "9990000034" })"),
                      &retired);  // the retired number had itself absorbed one
  v1::CareSummary survivor =
      Fold({Event(9, R"(gp_registration { practice: "M86020" })", kGp),
            Event(10, R"(nhs_number_merge { retired_nhs_number: "9990000026" })")});
  AbsorbRetiredSummary(retired, &survivor);

  EXPECT_EQ(survivor.nhs_number(), kNhs);
  EXPECT_EQ(std::vector<std::string>(survivor.retired_nhs_numbers().begin(),
                                     survivor.retired_nhs_numbers().end()),
            (std::vector<std::string>{kRetiredNhs, kOtherNhs}));
  EXPECT_EQ(survivor.events(), 2u + 8u);
  EXPECT_EQ(survivor.last_position(), 10u);
  EXPECT_EQ(survivor.registered_gp_practice(), "M86020");  // the survivor's own
  EXPECT_EQ(survivor.location().kind(), v1::CurrentLocation::IN_CARE_HOME);
  EXPECT_TRUE(survivor.flags().dementia());
  EXPECT_TRUE(survivor.flags().safeguarding());
  ASSERT_EQ(survivor.last_updates_size(), 2);
  EXPECT_EQ(survivor.last_updates(0).source_system_id(), "emis-m86012");
  EXPECT_EQ(survivor.last_updates(0).position(), 9u);
  EXPECT_EQ(survivor.last_updates(1).source_system_id(), "uhcw-epr");
  EXPECT_EQ(survivor.last_updates(1).position(), 10u);
}

TEST(AbsorbRetiredSummaryTest, NeverCopiesSafeguardingDetail) {
  // A summary from elsewhere (an older build, a hand-made fixture) that
  // carries detail the fold would have withheld.
  const v1::CareSummary retired = Summary(R"(
    nhs_number: "9990000026" alerts: "Safeguarding: see record" alerts: "Lives alone")");
  v1::CareSummary survivor = Summary(R"(nhs_number: "9990000018")");
  AbsorbRetiredSummary(retired, &survivor);
  EXPECT_TRUE(survivor.flags().safeguarding());
  EXPECT_EQ(std::vector<std::string>(survivor.alerts().begin(), survivor.alerts().end()),
            std::vector<std::string>{"Lives alone"});
}

}  // namespace
}  // namespace icr::broker::workflow
