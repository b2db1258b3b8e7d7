#include "broker/validation.h"

#include <gtest/gtest.h>

#include "broker/hub.h"
#include "tests/support/test_support.h"

namespace icr::broker {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::ReferralEvent;

std::string Check(icr::v1::CareEvent e, ValidationOptions options = {}) {
  return ValidateAndNormaliseEvent(&e, NowMicros(), options);
}

TEST(ValidationTest, AcceptsValidEventsAndNormalises) {
  auto e = ReferralEvent("9990000018", "m1");
  e.set_position(99);
  e.set_event_id("publisher-chosen");
  e.set_priority(icr::v1::PRIORITY_UNSPECIFIED);
  e.set_source_organisation("rkb");
  e.mutable_purged_at()->set_seconds(1);  // a publisher cannot make a stub
  ASSERT_EQ(ValidateAndNormaliseEvent(&e, NowMicros(), {}), "");
  EXPECT_FALSE(e.has_purged_at());
  EXPECT_EQ(e.position(), 0u);
  EXPECT_EQ(e.event_id(), "");
  EXPECT_EQ(e.event_type(), icr::v1::DISCHARGE_REFERRAL);
  EXPECT_EQ(e.priority(), icr::v1::ROUTINE);
  EXPECT_EQ(e.source_organisation(), "RKB");
  EXPECT_EQ(Check(AdmissionEvent("9990000026", "m2")), "");
}

TEST(ValidationTest, NhsNumberErrorsNameTheFieldAndRule) {
  EXPECT_EQ(Check(AdmissionEvent("9990000019", "m")),
            "event.nhs_number: fails the Modulus 11 check (check digit should be 8, got 9)");
  EXPECT_EQ(Check(AdmissionEvent("", "m")), "event.nhs_number: is required (10 digits)");
  ValidationOptions production;
  production.reject_test_nhs_numbers = true;
  EXPECT_NE(Check(AdmissionEvent("9990000018", "m"), production).find("test range"),
            std::string::npos);
}

TEST(ValidationTest, EnvelopeRules) {
  auto e = AdmissionEvent("9990000018", "m");
  e.clear_source_message_id();
  EXPECT_EQ(Check(e), "event.source_message_id: is required (the idempotency key of this message)");
  e = AdmissionEvent("9990000018", "m");
  e.set_source_system_id("bad system!");
  EXPECT_EQ(Check(e), "event.source_system_id: must be 1..64 characters of A-Z a-z 0-9 . _ : -");
  e = AdmissionEvent("9990000018", "m");
  e.set_source_organisation("R!");
  EXPECT_EQ(Check(e),
            "event.source_organisation: 'R!' is not an ODS code (3 to 10 letters and digits, e.g. "
            "RKB)");
  e = AdmissionEvent("9990000018", "m");
  e.clear_care_setting();
  EXPECT_EQ(Check(e).rfind("event.care_setting: is required (one of GP, ACUTE", 0), 0u);
  e = AdmissionEvent("9990000018", "m");
  e.set_care_setting(static_cast<icr::v1::CareSetting>(42));
  EXPECT_EQ(Check(e).rfind("event.care_setting: 42 is not a known CareSetting", 0), 0u);
  e = AdmissionEvent("9990000018", "m");
  e.clear_occurred_at();
  EXPECT_EQ(Check(e), "event.occurred_at: is required");
  e = AdmissionEvent("9990000018", "m");
  e.mutable_occurred_at()->set_seconds(NowMicros() / 1000000 + 3600);
  EXPECT_NE(Check(e).find("event.occurred_at: is 3600 s in the future"), std::string::npos);
  e = AdmissionEvent("9990000018", "m");
  e.clear_admission();
  EXPECT_EQ(Check(e).rfind("event.payload: exactly one payload is required", 0), 0u);
}

TEST(ValidationTest, RequiredPayloadFieldsFromTheProto) {
  auto e = ReferralEvent("9990000018", "m");
  e.mutable_discharge_referral()->clear_referral_id();
  EXPECT_EQ(Check(e), "event.discharge_referral.referral_id: is required");
  e = ReferralEvent("9990000018", "m");
  e.mutable_discharge_referral()->mutable_referrer()->clear_team_code();
  EXPECT_EQ(Check(e), "event.discharge_referral.referrer.team_code: is required");
  e = ReferralEvent("9990000018", "m");
  e.mutable_discharge_referral()->clear_pathway();
  EXPECT_EQ(Check(e).rfind("event.discharge_referral.pathway: is required (one of PATHWAY_0", 0),
            0u);
  e = AdmissionEvent("9990000018", "m");
  e.mutable_addressee()->set_organisation("CCC");
  EXPECT_EQ(Check(e), "event.addressee.team_code: is required");
}

TEST(ValidationTest, DatesAndSizes) {
  auto e = ReferralEvent("9990000018", "m");
  e.mutable_discharge_referral()->mutable_discharge_ready_date()->set_day(31);  // 31 November
  EXPECT_EQ(Check(e),
            "event.discharge_referral.discharge_ready_date: day 31 is not a day of month 11 "
            "(1..30)");
  e = ReferralEvent("9990000018", "m");
  e.mutable_discharge_referral()->mutable_needs()->set_summary(std::string(4001, 'x'));
  EXPECT_EQ(Check(e),
            "event.discharge_referral.needs.summary: 4001 bytes exceeds the limit of 4000 bytes");
  e = ReferralEvent("9990000018", "m");
  ValidationOptions small;
  small.max_event_bytes = 100;
  EXPECT_NE(Check(e, small).find("exceeds the limit of 100 bytes per event"), std::string::npos);
}

TEST(ValidationTest, PayloadSpecificRules) {
  auto e = AdmissionEvent("9990000018", "m");
  auto* p = e.mutable_placement_request();
  p->set_request_id("PR1");
  p->set_service_type(icr::v1::HOME_SUPPORT);
  p->set_place(icr::v1::RUGBY);
  p->mutable_start_date()->set_year(2026);
  p->mutable_start_date()->set_month(12);
  p->mutable_start_date()->set_day(1);
  p->set_calls_per_day(4);
  EXPECT_EQ(Check(e),
            "event.placement_request.hours_per_week: must be more than 0 and at most 168 for "
            "HOME_SUPPORT");
  p->set_hours_per_week(14);
  EXPECT_EQ(Check(e), "");

  e = AdmissionEvent("9990000018", "m");
  e.mutable_nhs_number_merge()->set_retired_nhs_number("9990000018");
  EXPECT_EQ(Check(e),
            "event.nhs_number_merge.retired_nhs_number: must differ from nhs_number (the "
            "surviving number)");
  e.mutable_nhs_number_merge()->set_retired_nhs_number("9990000019");
  EXPECT_NE(Check(e).find("retired_nhs_number: fails the Modulus 11 check"), std::string::npos);
  e.mutable_nhs_number_merge()->set_retired_nhs_number("9990000026");
  EXPECT_EQ(Check(e), "");
}

TEST(ValidationTest, FilterAndSubscriptionName) {
  icr::v1::EventFilter f;
  f.add_nhs_numbers("9990000019");
  EXPECT_NE(ValidateFilter(f).find("filter.nhs_numbers[0]: fails the Modulus 11"),
            std::string::npos);
  f.Clear();
  f.add_event_types(icr::v1::DISCHARGE_REFERRAL);
  EXPECT_EQ(ValidateFilter(f), "");
  EXPECT_EQ(ValidateSubscriptionName("ccc-brokerage"), "");
  EXPECT_NE(ValidateSubscriptionName("bad name"), "");
  EXPECT_NE(ValidateSubscriptionName(std::string("a\0b", 3)), "");
}

}  // namespace
}  // namespace icr::broker
