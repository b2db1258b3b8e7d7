// Publish and subscribe scopes (scope.h).
#include "broker/governance/scope.h"

#include <gtest/gtest.h>

#include <vector>

namespace icr::broker::governance {
namespace {

icr::v1::CareEvent Event(icr::v1::EventType type, const std::string& source) {
  icr::v1::CareEvent event;
  event.set_source_organisation(source);
  event.set_nhs_number("9990000018");
  event.GetReflection()->MutableMessage(&event,
                                        icr::v1::CareEvent::descriptor()->FindFieldByNumber(type));
  event.set_event_type(type);
  return event;
}

Principal GpSystem() {
  Principal p;
  p.id = "gp-system";
  p.organisation = "M12345";
  p.publish.event_types = {icr::v1::GP_REGISTRATION, icr::v1::CARE_SUMMARY_CONTRIBUTION};
  return p;
}

TEST(CheckPublishTest, EventTypes) {
  const Principal p = GpSystem();
  EXPECT_EQ(CheckPublish(p, Event(icr::v1::GP_REGISTRATION, "M12345")), "");
  EXPECT_EQ(CheckPublish(p, Event(icr::v1::DISCHARGE_REFERRAL, "M12345")),
            "principal 'gp-system' may not publish DISCHARGE_REFERRAL (policy allows: "
            "GP_REGISTRATION, CARE_SUMMARY_CONTRIBUTION)");

  Principal none = p;
  none.publish.event_types.clear();
  EXPECT_EQ(CheckPublish(none, Event(icr::v1::GP_REGISTRATION, "M12345")),
            "principal 'gp-system' may not publish GP_REGISTRATION (policy allows: none)");

  Principal all = none;
  all.publish.all_types = true;
  EXPECT_EQ(CheckPublish(all, Event(icr::v1::ESCALATION, "M12345")), "");

  // The payload decides the type, not a stale event_type.
  icr::v1::CareEvent event = Event(icr::v1::DISCHARGE_REFERRAL, "M12345");
  event.set_event_type(icr::v1::GP_REGISTRATION);
  EXPECT_NE(CheckPublish(p, event), "");
}

TEST(CheckPublishTest, SourceOrganisations) {
  Principal p = GpSystem();
  // Empty: its own organisation only.
  EXPECT_EQ(CheckPublish(p, Event(icr::v1::GP_REGISTRATION, "RKB")),
            "principal 'gp-system' may not publish as organisation 'RKB' (policy allows: M12345)");
  EXPECT_EQ(CheckPublish(p, Event(icr::v1::GP_REGISTRATION, "m12345")), "") << "upper-cased";

  // Listed: exactly those.
  p.publish.source_organisations = {"M12345", "M67890"};
  EXPECT_EQ(CheckPublish(p, Event(icr::v1::GP_REGISTRATION, "M67890")), "");
  EXPECT_EQ(CheckPublish(p, Event(icr::v1::GP_REGISTRATION, "RKB")),
            "principal 'gp-system' may not publish as organisation 'RKB' (policy allows: "
            "M12345, M67890)");
  p.publish.source_organisations = {"M67890"};
  EXPECT_NE(CheckPublish(p, Event(icr::v1::GP_REGISTRATION, "M12345")), "");

  // "*": any.
  p.publish.all_source_organisations = true;
  EXPECT_EQ(CheckPublish(p, Event(icr::v1::GP_REGISTRATION, "RKB")), "");
}

Principal Brokerage() {
  Principal p;
  p.id = "cov-brokerage";
  p.organisation = "COV01";
  p.subscribe.event_types = {icr::v1::PLACEMENT_REQUEST, icr::v1::ESCALATION};
  return p;
}

TEST(InSubscribeScopeTest, TypesAndPlaces) {
  Principal p = Brokerage();
  icr::v1::CareEvent request = Event(icr::v1::PLACEMENT_REQUEST, "RKB");
  EXPECT_TRUE(InSubscribeScope(p, request, nullptr));
  EXPECT_FALSE(InSubscribeScope(p, Event(icr::v1::DISCHARGE_REFERRAL, "RKB"), nullptr));

  // A purged stub has no payload but keeps event_type.
  icr::v1::CareEvent stub = request;
  stub.clear_payload();
  EXPECT_TRUE(InSubscribeScope(p, stub, nullptr));

  p.subscribe.places = {icr::v1::COVENTRY};
  EXPECT_FALSE(InSubscribeScope(p, request, nullptr)) << "no Place: outside a Place scope";
  request.set_place(icr::v1::RUGBY);
  EXPECT_FALSE(InSubscribeScope(p, request, nullptr));
  request.set_place(icr::v1::COVENTRY);
  EXPECT_TRUE(InSubscribeScope(p, request, nullptr));

  Principal all;
  all.subscribe.all_types = true;
  EXPECT_TRUE(InSubscribeScope(all, Event(icr::v1::DEATH_NOTIFICATION, "M12345"), nullptr));
  Principal nothing;
  EXPECT_FALSE(InSubscribeScope(nothing, request, nullptr));
}

TEST(InSubscribeScopeTest, Addressees) {
  Principal p = Brokerage();
  p.subscribe.addressed_to = {"VN4X2", "COV01/BROKERAGE"};
  icr::v1::CareEvent event = Event(icr::v1::PLACEMENT_REQUEST, "RKB");
  EXPECT_FALSE(InSubscribeScope(p, event, nullptr)) << "no addressee";

  auto* to = event.mutable_addressee();
  to->set_organisation("VN4X2");
  to->set_team_code("ANY-TEAM");
  EXPECT_TRUE(InSubscribeScope(p, event, nullptr)) << "\"ORG\": any team";
  to->set_organisation("vn4x2");
  EXPECT_TRUE(InSubscribeScope(p, event, nullptr)) << "organisation compared upper-case";

  to->set_organisation("COV01");
  to->set_team_code("BROKERAGE");
  EXPECT_TRUE(InSubscribeScope(p, event, nullptr)) << "\"ORG/TEAM\": exact";
  to->set_team_code("HSCT");
  EXPECT_FALSE(InSubscribeScope(p, event, nullptr));
  to->set_team_code("brokerage");
  EXPECT_FALSE(InSubscribeScope(p, event, nullptr)) << "team codes compared exactly";
}

TEST(InSubscribeScopeTest, OwnOrganisationAndCareRelationship) {
  Principal p = Brokerage();
  p.subscribe.addressed_to = {"COV01/BROKERAGE"};
  icr::v1::CareEvent event = Event(icr::v1::PLACEMENT_REQUEST, "cov01");
  event.mutable_addressee()->set_organisation("RKB");
  event.mutable_addressee()->set_team_code("WARD-30");

  std::vector<std::pair<std::string, std::string>> calls;
  const RelationshipFn related = [&](const std::string& nhs, const std::string& org) {
    calls.emplace_back(nhs, org);
    return nhs == "9990000018";
  };

  EXPECT_FALSE(InSubscribeScope(p, event, related));
  EXPECT_TRUE(calls.empty()) << "related is only asked with care_relationship";

  p.subscribe.own_organisation = true;
  EXPECT_TRUE(InSubscribeScope(p, event, related));
  event.set_source_organisation("RKB");
  EXPECT_FALSE(InSubscribeScope(p, event, related));

  p.subscribe.care_relationship = true;
  EXPECT_TRUE(InSubscribeScope(p, event, related));
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0], std::make_pair(std::string("9990000018"), std::string("COV01")));
  event.set_nhs_number("9990000026");
  EXPECT_FALSE(InSubscribeScope(p, event, related));

  // The addressee condition does not widen the type or Place conditions.
  event.set_nhs_number("9990000018");
  EXPECT_FALSE(InSubscribeScope(p, Event(icr::v1::ADMISSION, "COV01"), related));
  p.subscribe.places = {icr::v1::RUGBY};
  EXPECT_FALSE(InSubscribeScope(p, event, related));
}

}  // namespace
}  // namespace icr::broker::governance
