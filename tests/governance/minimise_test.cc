// Data minimisation: profile field paths, sensitive categories, care
// summaries, the full profile, and a property test over random events.
#include "broker/governance/minimise.h"

#include <gmock/gmock.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <random>

namespace icr::broker::governance {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::string Bytes(const Message& m) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  m.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

// The BROKERAGE profile of the brief and the sample policy.
Profile Brokerage() {
  Profile p;
  p.name = "BROKERAGE";
  p.fields = {"placement_request.request_id",
              "placement_request.referral_id",
              "placement_request.service_type",
              "placement_request.place",
              "placement_request.start_date",
              "placement_request.hours_per_week",
              "placement_request.calls_per_day",
              "placement_request.needs",
              "placement_request.contact",
              "placement_acceptance",
              "placement_decline",
              "placement_cancellation",
              "placement_offer",
              "escalation"};
  p.summary_fields = {"location", "open_referral", "care_package"};
  return p;
}

Profile Full() {
  Profile p;
  p.name = "FULL";
  p.all_fields = true;
  p.all_summary = true;
  p.sensitive = {icr::v1::SAFEGUARDING, icr::v1::SEXUAL_HEALTH, icr::v1::MENTAL_HEALTH_DETENTION};
  return p;
}

Profile AllFieldsWith(std::set<int> sensitive) {
  Profile p;
  p.all_fields = true;
  p.all_summary = true;
  p.sensitive = std::move(sensitive);
  return p;
}

icr::v1::CareEvent Envelope(icr::v1::EventType type) {
  icr::v1::CareEvent e;
  e.set_event_id("6f1c2a7e-0000-4000-8000-000000000001");
  e.set_position(42);
  e.set_source_system_id("uhcw-epr");
  e.set_source_organisation("RKB");
  e.set_care_setting(icr::v1::ACUTE);
  e.set_source_message_id("msg-1");
  e.set_nhs_number("9990000018");
  e.mutable_occurred_at()->set_seconds(1767225600);
  e.mutable_recorded_at()->set_seconds(1767225601);
  e.set_priority(icr::v1::URGENT);
  e.mutable_addressee()->set_organisation("COV01");
  e.mutable_addressee()->set_team_code("BROKERAGE");
  e.set_event_type(type);
  e.set_place(icr::v1::COVENTRY);
  return e;
}

icr::v1::Code MakeCode(const std::string& code, icr::v1::SensitiveCategory sensitivity) {
  icr::v1::Code c;
  c.set_system("http://snomed.info/sct");
  c.set_code(code);
  c.set_display("display " + code);
  c.set_sensitivity(sensitivity);
  return c;
}

icr::v1::CareEvent PlacementRequest() {
  icr::v1::CareEvent e = Envelope(icr::v1::PLACEMENT_REQUEST);
  auto* r = e.mutable_placement_request();
  r->set_request_id("COV-REQ-1");
  r->set_referral_id("RKB-2026-000123");
  r->set_service_type(icr::v1::HOME_SUPPORT);
  r->set_place(icr::v1::COVENTRY);
  r->mutable_start_date()->set_year(2026);
  r->mutable_start_date()->set_month(1);
  r->mutable_start_date()->set_day(5);
  r->set_hours_per_week(14);
  r->set_calls_per_day(4);
  r->mutable_needs()->set_dementia(true);
  r->mutable_needs()->set_non_weight_bearing(true);
  r->mutable_needs()->set_carers_per_call(2);
  r->mutable_needs()->set_summary("Needs two carers for transfers.");
  r->mutable_needs()->set_safeguarding_detail("Concern about financial abuse by a relative.");
  r->set_contact("Ward 30, ext 2468");
  return e;
}

TEST(MinimiseTest, BrokerageOnAPlacementRequest) {
  const icr::v1::CareEvent original = PlacementRequest();
  icr::v1::CareEvent event = original;
  MinimiseEvent(Brokerage(), &event);

  // The safeguarding detail goes, although placement_request.needs is
  // allowed: SAFEGUARDING is not.
  EXPECT_EQ(event.placement_request().needs().safeguarding_detail(), "");
  // The needs flags, the free-text summary and the contact stay.
  EXPECT_TRUE(event.placement_request().needs().dementia());
  EXPECT_TRUE(event.placement_request().needs().non_weight_bearing());
  EXPECT_EQ(event.placement_request().needs().carers_per_call(), 2);
  EXPECT_EQ(event.placement_request().needs().summary(), "Needs two carers for transfers.");
  EXPECT_EQ(event.placement_request().contact(), "Ward 30, ext 2468");
  EXPECT_EQ(event.placement_request().request_id(), "COV-REQ-1");
  EXPECT_EQ(event.placement_request().hours_per_week(), 14);

  // Exactly that one item.
  icr::v1::CareEvent expected = original;
  expected.mutable_placement_request()->mutable_needs()->clear_safeguarding_detail();
  EXPECT_TRUE(MessageDifferencer::Equals(event, expected)) << event.DebugString();
  EXPECT_THAT(RemovedPaths(Brokerage(), original),
              ElementsAre("placement_request.needs.safeguarding_detail"));
}

TEST(MinimiseTest, PathsBelowAMessageKeepOnlyThoseFields) {
  Profile p;
  p.fields = {"placement_request.request_id", "placement_request.needs.dementia",
              "placement_request.start_date.year"};
  icr::v1::CareEvent event = PlacementRequest();
  EXPECT_THAT(
      RemovedPaths(p, event),
      ElementsAre("placement_request.referral_id", "placement_request.service_type",
                  "placement_request.place", "placement_request.start_date.month",
                  "placement_request.start_date.day", "placement_request.hours_per_week",
                  "placement_request.calls_per_day", "placement_request.needs.non_weight_bearing",
                  "placement_request.needs.carers_per_call", "placement_request.needs.summary",
                  "placement_request.needs.safeguarding_detail", "placement_request.contact"));
  MinimiseEvent(p, &event);
  icr::v1::PlacementRequest expected;
  expected.set_request_id("COV-REQ-1");
  expected.mutable_needs()->set_dementia(true);
  expected.mutable_start_date()->set_year(2026);
  EXPECT_TRUE(MessageDifferencer::Equals(event.placement_request(), expected))
      << event.DebugString();
}

TEST(MinimiseTest, APayloadTheProfileDoesNotMentionIsCleared) {
  // A discharge referral and a care summary contribution (diagnoses) are not
  // for brokerage: the envelope stays, so the recipient knows what happened.
  icr::v1::CareEvent event = Envelope(icr::v1::CARE_SUMMARY_CONTRIBUTION);
  *event.mutable_care_summary_contribution()->add_problems() =
      MakeCode("52448006", icr::v1::SENSITIVE_CATEGORY_UNSPECIFIED);
  event.mutable_care_summary_contribution()->add_alerts("dementia");
  icr::v1::CareEvent envelope = event;
  envelope.clear_payload();

  EXPECT_THAT(RemovedPaths(Brokerage(), event), ElementsAre("care_summary_contribution"));
  MinimiseEvent(Brokerage(), &event);
  EXPECT_EQ(event.payload_case(), icr::v1::CareEvent::PAYLOAD_NOT_SET);
  EXPECT_EQ(event.event_type(), icr::v1::CARE_SUMMARY_CONTRIBUTION);
  EXPECT_TRUE(MessageDifferencer::Equals(event, envelope));

  icr::v1::CareEvent referral = Envelope(icr::v1::DISCHARGE_REFERRAL);
  referral.mutable_discharge_referral()->set_referral_id("RKB-2026-000123");
  referral.mutable_discharge_referral()->mutable_needs()->set_safeguarding_detail("detail");
  MinimiseEvent(Brokerage(), &referral);
  EXPECT_FALSE(referral.has_discharge_referral());
  EXPECT_EQ(referral.nhs_number(), "9990000018");
  EXPECT_EQ(referral.addressee().team_code(), "BROKERAGE");
}

TEST(MinimiseTest, SensitiveCodesAreRemovedFromRepeatedAndSingularFields) {
  icr::v1::CareEvent event = Envelope(icr::v1::CARE_SUMMARY_CONTRIBUTION);
  auto* c = event.mutable_care_summary_contribution();
  *c->add_problems() = MakeCode("p0", icr::v1::SENSITIVE_CATEGORY_UNSPECIFIED);
  *c->add_problems() = MakeCode("p1", icr::v1::SEXUAL_HEALTH);
  *c->add_problems() = MakeCode("p2", icr::v1::SENSITIVE_CATEGORY_UNSPECIFIED);
  *c->add_problems() = MakeCode("p3", icr::v1::MENTAL_HEALTH_DETENTION);
  *c->add_medications() = MakeCode("m0", icr::v1::SEXUAL_HEALTH);
  *c->add_allergies() = MakeCode("a0", icr::v1::SAFEGUARDING);
  *c->add_allergies() = MakeCode("a1", icr::v1::SENSITIVE_CATEGORY_UNSPECIFIED);

  // Every field, but only SAFEGUARDING among the sensitive categories.
  const Profile p = AllFieldsWith({icr::v1::SAFEGUARDING});
  EXPECT_THAT(RemovedPaths(p, event), ElementsAre("care_summary_contribution.problems[1]",
                                                  "care_summary_contribution.problems[3]",
                                                  "care_summary_contribution.medications[0]"));
  MinimiseEvent(p, &event);
  ASSERT_EQ(c->problems_size(), 2);
  EXPECT_EQ(c->problems(0).code(), "p0");  // order kept
  EXPECT_EQ(c->problems(1).code(), "p2");
  EXPECT_EQ(c->medications_size(), 0);
  ASSERT_EQ(c->allergies_size(), 2);
  EXPECT_EQ(c->allergies(0).code(), "a0");

  // With nothing sensitive allowed, the safeguarding allergy goes too.
  MinimiseEvent(AllFieldsWith({}), &event);
  ASSERT_EQ(c->allergies_size(), 1);
  EXPECT_EQ(c->allergies(0).code(), "a1");

  // A singular Code.
  icr::v1::CareEvent ed = Envelope(icr::v1::ED_ATTENDANCE);
  ed.mutable_ed_attendance()->set_attendance_id("ED-1");
  *ed.mutable_ed_attendance()->mutable_chief_complaint() = MakeCode("c1", icr::v1::SEXUAL_HEALTH);
  EXPECT_THAT(RemovedPaths(AllFieldsWith({icr::v1::SAFEGUARDING}), ed),
              ElementsAre("ed_attendance.chief_complaint"));
  icr::v1::CareEvent kept = ed;
  MinimiseEvent(AllFieldsWith({icr::v1::SEXUAL_HEALTH}), &kept);
  EXPECT_TRUE(MessageDifferencer::Equals(kept, ed));
  MinimiseEvent(AllFieldsWith({icr::v1::SAFEGUARDING}), &ed);
  EXPECT_FALSE(ed.ed_attendance().has_chief_complaint());
  EXPECT_EQ(ed.ed_attendance().attendance_id(), "ED-1");

  // A sensitivity value this build does not know: withheld.
  icr::v1::CareEvent future = Envelope(icr::v1::ED_ATTENDANCE);
  future.mutable_ed_attendance()->mutable_chief_complaint()->set_code("x");
  future.mutable_ed_attendance()->mutable_chief_complaint()->set_sensitivity(
      static_cast<icr::v1::SensitiveCategory>(9));
  MinimiseEvent(AllFieldsWith({icr::v1::SAFEGUARDING, icr::v1::SEXUAL_HEALTH}), &future);
  EXPECT_FALSE(future.ed_attendance().has_chief_complaint());
}

TEST(MinimiseTest, SafeguardingAlerts) {
  icr::v1::CareEvent event = Envelope(icr::v1::CARE_SUMMARY_CONTRIBUTION);
  auto* c = event.mutable_care_summary_contribution();
  for (const char* alert : {"dementia", "Safe-guarding concern", "SAFEGUARDING_ADULT",
                            "safe guarding", "end of life", "Safeguard"}) {
    c->add_alerts(alert);
  }
  icr::v1::CareEvent allowed = event;
  MinimiseEvent(AllFieldsWith({icr::v1::SAFEGUARDING}), &allowed);
  EXPECT_TRUE(MessageDifferencer::Equals(allowed, event));

  MinimiseEvent(AllFieldsWith({icr::v1::SEXUAL_HEALTH}), &event);
  EXPECT_THAT(c->alerts(), ElementsAre("dementia", "end of life", "Safeguard"));
}

TEST(MinimiseTest, DetentionIsRemovedUnlessAllowed) {
  icr::v1::CareEvent event = Envelope(icr::v1::MENTAL_HEALTH_EPISODE_START);
  event.mutable_mental_health_episode_start()->set_episode_id("MH-1");
  event.mutable_mental_health_episode_start()->set_team("Crisis team");
  event.mutable_mental_health_episode_start()->set_detained(true);

  icr::v1::CareEvent allowed = event;
  MinimiseEvent(AllFieldsWith({icr::v1::MENTAL_HEALTH_DETENTION}), &allowed);
  EXPECT_TRUE(allowed.mental_health_episode_start().detained());

  EXPECT_THAT(RemovedPaths(AllFieldsWith({icr::v1::SAFEGUARDING}), event),
              ElementsAre("mental_health_episode_start.detained"));
  MinimiseEvent(AllFieldsWith({icr::v1::SAFEGUARDING}), &event);
  EXPECT_FALSE(event.mental_health_episode_start().detained());
  EXPECT_EQ(event.mental_health_episode_start().episode_id(), "MH-1");
  EXPECT_EQ(event.mental_health_episode_start().team(), "Crisis team");
}

icr::v1::CareSummary FullSummary() {
  icr::v1::CareSummary s;
  s.set_nhs_number("9990000018");
  s.set_requested_nhs_number("9990000026");
  s.add_retired_nhs_numbers("9990000026");
  s.mutable_demographics()->set_family_name("Testpatient");
  s.set_registered_gp_practice("M84001");
  s.mutable_location()->set_kind(icr::v1::CurrentLocation::IN_HOSPITAL);
  s.mutable_location()->set_organisation("RKB");
  s.mutable_open_episode()->set_encounter_id("ENC-1");
  s.mutable_open_referral()->set_referral_id("RKB-2026-000123");
  s.mutable_open_referral()->mutable_needs()->set_dementia(true);
  s.mutable_open_referral()->mutable_needs()->set_safeguarding_detail("detail");
  s.mutable_care_package()->set_package_id("PKG-1");
  s.mutable_flags()->set_dementia(true);
  s.mutable_flags()->set_safeguarding(true);
  s.mutable_flags()->set_sharing_objection(true);
  *s.add_allergies() = MakeCode("penicillin", icr::v1::SENSITIVE_CATEGORY_UNSPECIFIED);
  *s.add_allergies() = MakeCode("latex", icr::v1::SEXUAL_HEALTH);
  s.add_alerts("dementia");
  s.add_alerts("Safeguarding: adult at risk");
  s.add_last_updates()->set_source_system_id("uhcw-epr");
  s.mutable_date_of_death()->set_year(2026);
  s.set_last_position(99);
  s.set_events(7);
  return s;
}

TEST(MinimiseSummaryTest, KeepsTheProfilesFieldsAndTheIdentity) {
  icr::v1::CareSummary s = FullSummary();
  MinimiseSummary(Brokerage(), &s);

  icr::v1::CareSummary expected;
  expected.set_nhs_number("9990000018");
  expected.set_requested_nhs_number("9990000026");
  expected.add_retired_nhs_numbers("9990000026");
  *expected.mutable_location() = FullSummary().location();
  *expected.mutable_open_referral() = FullSummary().open_referral();
  expected.mutable_open_referral()->mutable_needs()->clear_safeguarding_detail();
  expected.mutable_care_package()->set_package_id("PKG-1");
  expected.set_last_position(99);
  expected.set_events(7);
  EXPECT_TRUE(MessageDifferencer::Equals(s, expected)) << s.DebugString();
}

TEST(MinimiseSummaryTest, RemovesSensitiveItemsFromAllowedFields) {
  Profile p;
  p.summary_fields = {"flags", "allergies", "alerts"};
  icr::v1::CareSummary s = FullSummary();
  MinimiseSummary(p, &s);
  EXPECT_FALSE(s.flags().safeguarding());
  EXPECT_TRUE(s.flags().dementia());
  EXPECT_TRUE(s.flags().sharing_objection());
  ASSERT_EQ(s.allergies_size(), 1);
  EXPECT_EQ(s.allergies(0).code(), "penicillin");
  EXPECT_THAT(s.alerts(), ElementsAre("dementia"));
  EXPECT_FALSE(s.has_demographics());
  EXPECT_FALSE(s.has_open_referral());

  // SAFEGUARDING allowed: the flag and the alert stay, the sexual health
  // allergy does not.
  p.sensitive = {icr::v1::SAFEGUARDING};
  s = FullSummary();
  MinimiseSummary(p, &s);
  EXPECT_TRUE(s.flags().safeguarding());
  EXPECT_EQ(s.alerts_size(), 2);
  EXPECT_EQ(s.allergies_size(), 1);

  // All summary fields, nothing sensitive.
  s = FullSummary();
  MinimiseSummary(AllFieldsWith({}), &s);
  EXPECT_TRUE(s.has_demographics());
  EXPECT_EQ(s.registered_gp_practice(), "M84001");
  EXPECT_EQ(s.open_referral().needs().safeguarding_detail(), "");
  EXPECT_FALSE(s.flags().safeguarding());
}

// ---------------------------------------------------------------------------
// Random events, filled by reflection with a fixed seed.
// ---------------------------------------------------------------------------

class RandomFiller {
 public:
  explicit RandomFiller(uint32_t seed) : rng_(seed) {}

  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int Below(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  std::string String() {
    static const char* const kPool[] = {"dementia", "Safe-guarding concern", "end of life",
                                        "RKB",      "SAFEGUARDING",          "falls risk"};
    if (Chance(0.5)) return kPool[Below(std::size(kPool))];
    std::string s;
    for (int i = Below(12) + 1; i > 0; --i) s += static_cast<char>('a' + Below(26));
    return s;
  }

  void Fill(Message* m, int depth) {
    const Descriptor* d = m->GetDescriptor();
    const Reflection* r = m->GetReflection();
    const auto* payload = icr::v1::CareEvent::descriptor()->FindOneofByName("payload");
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->containing_oneof() == payload || !Chance(0.7)) continue;
      const int n = f->is_repeated() ? Below(4) : 1;
      for (int k = 0; k < n; ++k) Set(m, r, f, depth);
    }
  }

  void Event(icr::v1::CareEvent* event) {
    Fill(event, 0);
    const auto* payload = icr::v1::CareEvent::descriptor()->FindOneofByName("payload");
    const FieldDescriptor* f = payload->field(Below(payload->field_count()));
    Fill(event->GetReflection()->MutableMessage(event, f), 1);
    event->set_event_type(static_cast<icr::v1::EventType>(f->number()));
  }

 private:
  void Set(Message* m, const Reflection* r, const FieldDescriptor* f, int depth) {
    const bool rep = f->is_repeated();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: {
        const int32_t v = Below(1000) + 1;
        rep ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_INT64: {
        const int64_t v = Below(1 << 30) + 1;
        rep ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_UINT32: {
        const uint32_t v = Below(1000) + 1;
        rep ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_UINT64: {
        const uint64_t v = Below(1 << 30) + 1;
        rep ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_DOUBLE: {
        const double v = Below(1000) / 4.0 + 0.25;
        rep ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_FLOAT: {
        const float v = Below(1000) / 4.0f + 0.25f;
        rep ? r->AddFloat(m, f, v) : r->SetFloat(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_BOOL:
        rep ? r->AddBool(m, f, true) : r->SetBool(m, f, true);
        break;
      case FieldDescriptor::CPPTYPE_STRING: {
        const std::string v = String();
        rep ? r->AddString(m, f, v) : r->SetString(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        const auto* e = f->enum_type();
        const int v = e->value(Below(e->value_count()))->number();
        rep ? r->AddEnumValue(m, f, v) : r->SetEnumValue(m, f, v);
        break;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        if (depth < 6) Fill(rep ? r->AddMessage(m, f) : r->MutableMessage(m, f), depth + 1);
        break;
    }
  }

  std::mt19937 rng_;
};

// Every field path below the payloads ("placement_request.needs.dementia").
void AllPaths(const Descriptor* d, const std::string& prefix, int depth,
              std::vector<std::string>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string path = prefix.empty() ? f->name() : prefix + "." + f->name();
    out->push_back(path);
    if (f->message_type() != nullptr && depth < 4)
      AllPaths(f->message_type(), path, depth + 1, out);
  }
}

std::vector<std::string> PayloadPaths() {
  std::vector<std::string> paths;
  const auto* payload = icr::v1::CareEvent::descriptor()->FindOneofByName("payload");
  for (int i = 0; i < payload->field_count(); ++i) {
    const FieldDescriptor* f = payload->field(i);
    paths.push_back(f->name());
    AllPaths(f->message_type(), f->name(), 1, &paths);
  }
  return paths;
}

Profile RandomProfile(RandomFiller& random, const std::vector<std::string>& paths) {
  Profile p;
  p.all_fields = random.Chance(0.1);
  const double density = random.Chance(0.5) ? 0.02 : 0.3;
  for (const std::string& path : paths) {
    if (random.Chance(density)) p.fields.insert(path);
  }
  for (int c : {icr::v1::SAFEGUARDING, icr::v1::SEXUAL_HEALTH, icr::v1::MENTAL_HEALTH_DETENTION}) {
    if (random.Chance(0.5)) p.sensitive.insert(c);
  }
  return p;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Whether a field at `path` may be present after minimisation: it is under
// an allowed path, or a message on the way to one.
bool MayBePresent(const Profile& p, const std::string& path, bool is_message) {
  if (p.all_fields) return true;
  for (const std::string& allowed : p.fields) {
    if (path == allowed || StartsWith(path, allowed + ".")) return true;
    if (is_message && StartsWith(allowed, path + ".")) return true;
  }
  return false;
}

// Records each problem with the minimised message `m` (at `path`).
void CheckMinimised(const Profile& p, const Message& m, const std::string& path,
                    std::vector<std::string>* problems) {
  const Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  if (!r->GetUnknownFields(m).empty()) problems->push_back(path + ": unknown fields");
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  const bool safeguarding = p.sensitive.count(icr::v1::SAFEGUARDING);
  for (const FieldDescriptor* f : fields) {
    const std::string child = path + "." + f->name();
    if (!MayBePresent(p, child, f->message_type() != nullptr)) {
      problems->push_back(child + " is outside the profile");
    }
    if (!safeguarding && d == icr::v1::CareNeeds::descriptor() &&
        f->name() == "safeguarding_detail") {
      problems->push_back(child + " (SAFEGUARDING)");
    }
    if (!p.sensitive.count(icr::v1::MENTAL_HEALTH_DETENTION) &&
        d == icr::v1::MentalHealthEpisodeStart::descriptor() && f->name() == "detained") {
      problems->push_back(child + " (MENTAL_HEALTH_DETENTION)");
    }
    if (!safeguarding && d == icr::v1::CareSummaryContribution::descriptor() &&
        f->name() == "alerts") {
      for (int i = 0; i < r->FieldSize(m, f); ++i) {
        std::string a = r->GetRepeatedString(m, f, i);
        std::erase_if(a, [](char c) { return c == '-' || c == ' ' || c == '_'; });
        std::transform(a.begin(), a.end(), a.begin(), ::tolower);
        if (a.find("safeguarding") != std::string::npos) problems->push_back(child + " alert");
      }
    }
    if (f->message_type() == nullptr) continue;
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      const Message& sub = f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f);
      if (f->message_type() == icr::v1::Code::descriptor()) {
        const int s = static_cast<const icr::v1::Code&>(sub).sensitivity();
        if (s != 0 && !p.sensitive.count(s)) problems->push_back(child + " sensitive code");
      }
      CheckMinimised(p, sub, child, problems);
    }
  }
}

TEST(MinimisePropertyTest, NothingOutsideTheProfileSurvivesAndMinimisingIsIdempotent) {
  RandomFiller random(20260101);
  const std::vector<std::string> paths = PayloadPaths();
  int payloads_kept = 0, payloads_cleared = 0, changed = 0;
  for (int i = 0; i < 1000; ++i) {
    SCOPED_TRACE("event " + std::to_string(i));
    const Profile profile = RandomProfile(random, paths);
    icr::v1::CareEvent original;
    random.Event(&original);

    icr::v1::CareEvent event = original;
    MinimiseEvent(profile, &event);

    // The envelope is untouched.
    icr::v1::CareEvent envelope_before = original, envelope_after = event;
    envelope_before.clear_payload();
    envelope_after.clear_payload();
    ASSERT_EQ(Bytes(envelope_before), Bytes(envelope_after));

    // Nothing outside the profile, nothing sensitive it does not allow.
    std::vector<std::string> problems;
    const auto* payload = icr::v1::CareEvent::descriptor()->FindOneofByName("payload");
    const FieldDescriptor* kept = event.GetReflection()->GetOneofFieldDescriptor(event, payload);
    if (kept != nullptr) {
      ++payloads_kept;
      if (!MayBePresent(profile, kept->name(), true)) problems.push_back(kept->name());
      CheckMinimised(profile, event.GetReflection()->GetMessage(event, kept), kept->name(),
                     &problems);
    } else {
      ++payloads_cleared;
    }
    ASSERT_THAT(problems, IsEmpty()) << original.DebugString() << "\n->\n" << event.DebugString();

    // Idempotent; RemovedPaths agrees with what changed.
    icr::v1::CareEvent again = event;
    MinimiseEvent(profile, &again);
    ASSERT_EQ(Bytes(again), Bytes(event));
    ASSERT_THAT(RemovedPaths(profile, event), IsEmpty());
    const bool same = Bytes(event) == Bytes(original);
    changed += !same;
    ASSERT_EQ(RemovedPaths(profile, original).empty(), same);
  }
  // The generator exercised both outcomes.
  EXPECT_GT(payloads_kept, 100);
  EXPECT_GT(payloads_cleared, 100);
  EXPECT_GT(changed, 300);
}

TEST(MinimisePropertyTest, TheFullProfileIsANoOpByteForByte) {
  RandomFiller random(7);
  const Profile full = Full();
  ASSERT_TRUE(full.full());
  for (int i = 0; i < 200; ++i) {
    icr::v1::CareEvent original;
    random.Event(&original);
    icr::v1::CareEvent event = original;
    MinimiseEvent(full, &event);
    ASSERT_EQ(Bytes(event), Bytes(original));
    ASSERT_THAT(RemovedPaths(full, original), IsEmpty());
  }
  const icr::v1::CareEvent request = PlacementRequest();
  icr::v1::CareEvent event = request;
  MinimiseEvent(full, &event);
  EXPECT_EQ(Bytes(event), Bytes(request));

  icr::v1::CareSummary summary = FullSummary();
  MinimiseSummary(full, &summary);
  EXPECT_EQ(Bytes(summary), Bytes(FullSummary()));
}

TEST(MinimisePropertyTest, UnknownFieldsAreDroppedUnlessTheProfileIsFull) {
  icr::v1::CareEvent event = PlacementRequest();
  // Field 131 of CareEvent: a payload from a newer schema.
  event.GetReflection()->MutableUnknownFields(&event)->AddLengthDelimited(131, "newer");
  event.mutable_placement_request()
      ->GetReflection()
      ->MutableUnknownFields(event.mutable_placement_request())
      ->AddVarint(99, 1);
  icr::v1::CareEvent full = event;
  MinimiseEvent(Full(), &full);
  EXPECT_EQ(Bytes(full), Bytes(event));

  MinimiseEvent(AllFieldsWith({icr::v1::SAFEGUARDING}), &event);
  EXPECT_TRUE(event.GetReflection()->GetUnknownFields(event).empty());
  EXPECT_TRUE(event.placement_request()
                  .GetReflection()
                  ->GetUnknownFields(event.placement_request())
                  .empty());
}

}  // namespace
}  // namespace icr::broker::governance
