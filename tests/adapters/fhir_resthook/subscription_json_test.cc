// The FHIR side of rest-hooks without a network: backport Subscription
// resources in, notification Bundles out, endpoint and header rules.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "adapters/fhir/resthook.h"
#include "adapters/fhir/resthook_fhir.h"
#include "icr/v1/state.pb.h"
#include "tests/support/test_support.h"

namespace icr::adapters::fhir {
namespace {

using Json = nlohmann::json;
using icr::testing::TestNhsNumber;

// A Subscription as an integrator would POST it (R4 + backport IG).
constexpr char kSubscription[] = R"({
  "resourceType": "Subscription",
  "id": "ccc-hsct-uhcw-referrals",
  "meta": {
    "profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"]
  },
  "status": "requested",
  "reason": "Discharge referrals for the UHCW hospital social care team",
  "criteria": "http://example.org/fhir/SubscriptionTopic/care-event",
  "_criteria": {
    "extension": [{
      "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria",
      "valueString": "CareEvent?event-type=DISCHARGE_REFERRAL,referral-status-change&addressee=CCC%7CHSCT-UHCW&nhs-number=https://fhir.nhs.uk/Id/nhs-number|999 000 0018&priority=URGENT"
    }]
  },
  "channel": {
    "extension": [
      {"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
       "valueUnsignedInt": 120},
      {"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout",
       "valueUnsignedInt": 10},
      {"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count",
       "valuePositiveInt": 20},
      {"url": "http://example.org/some-other-extension", "valueString": "ignored"}
    ],
    "type": "rest-hook",
    "endpoint": "http://social-care.example:8080/fhir/r4/notify?tenant=ccc",
    "payload": "application/fhir+json",
    "_payload": {
      "extension": [{
        "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
        "valueCode": "id-only"
      }]
    },
    "header": ["Authorization: Bearer abc.def", "X-Tenant:ccc"]
  }
})";

TEST(SubscriptionFromFhirJson, ReadsABackportSubscription) {
  RestHookSubscription sub;
  std::string where;
  store::Status s = SubscriptionFromFhirJson(kSubscription, &sub, &where);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(where, "");
  EXPECT_EQ(sub.name, "ccc-hsct-uhcw-referrals");
  EXPECT_EQ(sub.topic_url, "http://example.org/fhir/SubscriptionTopic/care-event");
  EXPECT_EQ(sub.endpoint, "http://social-care.example:8080/fhir/r4/notify?tenant=ccc");
  EXPECT_EQ(sub.heartbeat_seconds, 120u);
  EXPECT_EQ(sub.timeout_ms, 10000u);
  EXPECT_EQ(sub.max_events_per_notification, 20u);
  EXPECT_EQ(sub.content, "id-only");
  using Headers = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(sub.headers, (Headers{{"Authorization", "Bearer abc.def"}, {"X-Tenant", "ccc"}}));
  ASSERT_EQ(sub.filter.event_types_size(), 2);
  EXPECT_EQ(sub.filter.event_types(0), v1::DISCHARGE_REFERRAL);
  EXPECT_EQ(sub.filter.event_types(1), v1::REFERRAL_STATUS_CHANGE);
  ASSERT_EQ(sub.filter.addressees_size(), 1);
  EXPECT_EQ(sub.filter.addressees(0).organisation(), "CCC");
  EXPECT_EQ(sub.filter.addressees(0).team_code(), "HSCT-UHCW");
  ASSERT_EQ(sub.filter.nhs_numbers_size(), 1);
  EXPECT_EQ(sub.filter.nhs_numbers(0), "9990000018");
  ASSERT_EQ(sub.filter.priorities_size(), 1);
  EXPECT_EQ(sub.filter.priorities(0), v1::URGENT);
  EXPECT_EQ(ValidateRestHook(sub), "");
}

TEST(SubscriptionFromFhirJson, PayloadDefaults) {
  Json j = Json::parse(kSubscription);
  j["channel"].erase("_payload");
  RestHookSubscription sub;
  std::string where;
  ASSERT_TRUE(SubscriptionFromFhirJson(j.dump(), &sub, &where).ok());
  EXPECT_EQ(sub.content, "full-resource");
  j["channel"].erase("payload");
  ASSERT_TRUE(SubscriptionFromFhirJson(j.dump(), &sub, &where).ok());
  EXPECT_EQ(sub.content, "empty");  // R4: no payload element, no payload
  j.erase("id");
  j.erase("_criteria");
  ASSERT_TRUE(SubscriptionFromFhirJson(j.dump(), &sub, &where).ok());
  EXPECT_EQ(sub.name, "");  // the caller assigns one
  EXPECT_EQ(sub.filter.ByteSizeLong(), 0u);  // every event
}

// Each case: a change to the good Subscription, the element named, and a
// fragment of the message.
struct BadCase {
  const char* title;
  std::function<void(Json&)> change;
  const char* expression;
  const char* message;
};

TEST(SubscriptionFromFhirJson, RejectsBadSubscriptionsNamingTheElement) {
  const std::string kExt = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
  std::vector<BadCase> cases = {
      {"resource type", [](Json& j) { j["resourceType"] = "Patient"; },
       "Subscription.resourceType", "must be \"Subscription\""},
      {"id", [](Json& j) { j["id"] = "has space"; }, "Subscription.id", "1..128 characters"},
      {"status off", [](Json& j) { j["status"] = "off"; }, "Subscription.status", "'off'"},
      {"end", [](Json& j) { j["end"] = "2030-01-01T00:00:00Z"; }, "Subscription.end",
       "not supported"},
      {"no criteria", [](Json& j) { j.erase("criteria"); }, "Subscription.criteria",
       "is required"},
      {"classic criteria", [](Json& j) { j["criteria"] = "CareEvent?event-type=ADMISSION"; },
       "Subscription.criteria", "backport-filter-criteria"},
      {"criteria number", [](Json& j) { j["criteria"] = 5; }, "Subscription.criteria",
       "must be a string"},
      {"filter type",
       [](Json& j) {
         j["_criteria"]["extension"][0]["valueString"] = "Encounter?status=finished";
       },
       "Subscription._criteria.extension[0].valueString", "must be 'CareEvent?"},
      {"filter event type",
       [](Json& j) { j["_criteria"]["extension"][0]["valueString"] = "CareEvent?event-type=LUNCH"; },
       "Subscription._criteria.extension[0].valueString", "'LUNCH' is not an event type"},
      {"filter parameter",
       [](Json& j) { j["_criteria"]["extension"][0]["valueString"] = "CareEvent?colour=red"; },
       "Subscription._criteria.extension[0].valueString", "unknown parameter 'colour'"},
      {"filter nhs number",
       [](Json& j) {
         j["_criteria"]["extension"][0]["valueString"] = "CareEvent?nhs-number=9990000019";
       },
       "Subscription._criteria.extension[0].valueString", "filter.nhs_numbers[0]"},
      {"filter ods",
       [](Json& j) { j["_criteria"]["extension"][0]["valueString"] = "CareEvent?addressee=c"; },
       "Subscription._criteria.extension[0].valueString", "filter.addressees[0].organisation"},
      {"no channel", [](Json& j) { j.erase("channel"); }, "Subscription.channel", "is required"},
      {"channel type", [](Json& j) { j["channel"]["type"] = "websocket"; },
       "Subscription.channel.type", "only rest-hook"},
      {"no endpoint", [](Json& j) { j["channel"].erase("endpoint"); },
       "Subscription.channel.endpoint", "is required"},
      {"https endpoint", [](Json& j) { j["channel"]["endpoint"] = "https://x.example/n"; },
       "Subscription.channel.endpoint", "https is not supported"},
      {"endpoint credentials", [](Json& j) { j["channel"]["endpoint"] = "http://u:p@x/n"; },
       "Subscription.channel.endpoint", "user information"},
      {"xml payload", [](Json& j) { j["channel"]["payload"] = "application/fhir+xml"; },
       "Subscription.channel.payload", "not supported"},
      {"content code",
       [](Json& j) { j["channel"]["_payload"]["extension"][0]["valueCode"] = "everything"; },
       "Subscription.channel._payload.extension[0].valueCode", "'everything'"},
      {"header format", [](Json& j) { j["channel"]["header"][1] = "no colon"; },
       "Subscription.channel.header[1]", "'Name: value'"},
      {"header ours", [](Json& j) { j["channel"]["header"][0] = "Host: evil.example"; },
       "Subscription.channel.header[0]", "set by the broker"},
      {"header injection",
       [](Json& j) { j["channel"]["header"][0] = "X-A: b\r\nX-Injected: c"; },
       "Subscription.channel.header[0]", "control character"},
      {"heartbeat type",
       [](Json& j) { j["channel"]["extension"][0]["valueUnsignedInt"] = "60"; },
       "Subscription.channel.extension[0].valueUnsignedInt", "non-negative integer"},
      {"heartbeat range",
       [](Json& j) { j["channel"]["extension"][0]["valueUnsignedInt"] = 100000; },
       "Subscription.channel.extension[0].valueUnsignedInt", "0..86400"},
      {"timeout range", [](Json& j) { j["channel"]["extension"][1]["valueUnsignedInt"] = 0; },
       "Subscription.channel.extension[1].valueUnsignedInt", "1..60"},
      {"max count missing value",
       [](Json& j) { j["channel"]["extension"][2].erase("valuePositiveInt"); },
       "Subscription.channel.extension[2].valuePositiveInt", "is required"},
      {"extension without url", [](Json& j) { j["channel"]["extension"][3].erase("url"); },
       "Subscription.channel.extension[3].url", "is required"},
      {"modifier extension",
       [](Json& j) { j["modifierExtension"] = Json::array({{{"url", "http://x"}}}); },
       "Subscription.modifierExtension", "not supported"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.title);
    Json j = Json::parse(kSubscription);
    c.change(j);
    RestHookSubscription sub;
    sub.name = "untouched";
    std::string where;
    store::Status s = SubscriptionFromFhirJson(j.dump(), &sub, &where);
    EXPECT_EQ(s.code(), store::StatusCode::kInvalidArgument);
    EXPECT_EQ(where, c.expression);
    EXPECT_NE(s.message().find(c.message), std::string::npos) << s.message();
    EXPECT_EQ(s.message().rfind(std::string(c.expression) + ": ", 0), 0u) << s.message();
    EXPECT_EQ(sub.name, "untouched");  // nothing written on failure
  }
}

TEST(SubscriptionFromFhirJson, RejectsNonJsonAndHostileInput) {
  RestHookSubscription sub;
  std::string where;
  EXPECT_EQ(SubscriptionFromFhirJson("<Subscription/>", &sub, &where).code(),
            store::StatusCode::kInvalidArgument);
  EXPECT_EQ(where, "Subscription");
  std::string deep(10000, '[');
  EXPECT_NE(SubscriptionFromFhirJson(deep, &sub, &where).message().find("nested"),
            std::string::npos);
  std::string big = "{\"resourceType\":\"Subscription\",\"reason\":\"" + std::string(70000, 'x') +
                    "\"}";
  EXPECT_NE(SubscriptionFromFhirJson(big, &sub, &where).message().find("64 KiB"),
            std::string::npos);
}

TEST(FilterFromCriteria, ParsesEveryParameter) {
  v1::EventFilter f;
  EXPECT_EQ(FilterFromCriteria("CareEvent", &f), "");
  EXPECT_EQ(f.ByteSizeLong(), 0u);
  EXPECT_EQ(FilterFromCriteria("CareEvent?care-setting=acute,SOCIAL_CARE&source-organisation=rkb"
                               "&addressee=CCC&nhs-number=" +
                                   TestNhsNumber(3),
                               &f),
            "");
  ASSERT_EQ(f.care_settings_size(), 2);
  EXPECT_EQ(f.care_settings(0), v1::ACUTE);
  EXPECT_EQ(f.care_settings(1), v1::SOCIAL_CARE);
  EXPECT_EQ(f.source_organisations(0), "RKB");
  EXPECT_EQ(f.addressees(0).organisation(), "CCC");
  EXPECT_EQ(f.addressees(0).team_code(), "");
  EXPECT_EQ(f.nhs_numbers(0), TestNhsNumber(3));
  v1::EventFilter g;
  EXPECT_NE(FilterFromCriteria("CareEvent?event-type=", &g).find("has no value"),
            std::string::npos);
  EXPECT_NE(FilterFromCriteria("CareEvent?event-type=ADMISSION,,DISCHARGE", &g).find("empty"),
            std::string::npos);
  EXPECT_NE(FilterFromCriteria("CareEvent?addressee=CCC%ZZ", &g).find("percent"),
            std::string::npos);
  EXPECT_NE(FilterFromCriteria("CareEvent?nhs-number=urn:x|9990000018", &g).find("system"),
            std::string::npos);
  EXPECT_NE(FilterFromCriteria("CareEvent?event-type=EVENT_TYPE_UNSPECIFIED", &g)
                .find("not an event type"),
            std::string::npos);
}

TEST(ParseEndpoint, SplitsHttpUrls) {
  Endpoint e;
  ASSERT_EQ(ParseEndpoint("http://127.0.0.1:8080/a/b?x=1", &e), "");
  EXPECT_EQ(e.host, "127.0.0.1");
  EXPECT_EQ(e.port, 8080);
  EXPECT_EQ(e.target, "/a/b?x=1");
  EXPECT_EQ(e.host_header, "127.0.0.1:8080");
  ASSERT_EQ(ParseEndpoint("HTTP://receiver.example", &e), "");
  EXPECT_EQ(e.port, 80);
  EXPECT_EQ(e.target, "/");
  EXPECT_EQ(e.host_header, "receiver.example");
  ASSERT_EQ(ParseEndpoint("http://[::1]:9000?q", &e), "");
  EXPECT_EQ(e.host, "::1");
  EXPECT_EQ(e.target, "/?q");
  EXPECT_EQ(e.host_header, "[::1]:9000");
  EXPECT_NE(ParseEndpoint("", &e), "");
  EXPECT_NE(ParseEndpoint("ftp://x/", &e), "");
  EXPECT_NE(ParseEndpoint("http://x/a b", &e), "");
  EXPECT_NE(ParseEndpoint("http://x/#frag", &e), "");
  EXPECT_NE(ParseEndpoint("http://x:/", &e), "");
  EXPECT_NE(ParseEndpoint("http://x:0/", &e), "");
  EXPECT_NE(ParseEndpoint("http://x:8a/", &e), "");
  EXPECT_NE(ParseEndpoint("http://[::1/", &e), "");
  EXPECT_NE(ParseEndpoint("http://a%2fb/", &e), "");
}

TEST(NotificationBundle, FollowsTheBackportShape) {
  auto stored = std::make_shared<store::StoredEvent>();
  stored->position = 42;
  stored->event = icr::testing::ReferralEvent(TestNhsNumber(0), "m1");
  stored->event.set_position(42);
  stored->event.set_event_id("3f2c9a4e-8a1b-4c6d-9e0f-1a2b3c4d5e6f");
  stored->event.mutable_recorded_at()->set_seconds(1795000000);
  stored->event.mutable_recorded_at()->set_nanos(123456789);
  NotificationInfo info;
  info.subscription_reference = "Subscription/ccc";
  info.topic_url = "http://example.org/topic";
  info.events_since_subscription_start = 7;
  info.now_micros = 1795000001000000;
  Json b = Json::parse(BuildNotificationBundle(info, {stored}));
  EXPECT_EQ(b["resourceType"], "Bundle");
  EXPECT_EQ(b["type"], "history");
  EXPECT_EQ(b["timestamp"], "2026-11-18T11:06:41.000Z");
  ASSERT_EQ(b["entry"].size(), 2u);
  const Json& p = b["entry"][0];
  EXPECT_EQ(p["request"]["url"], "Subscription/ccc/$status");
  const Json& params = p["resource"]["parameter"];
  EXPECT_EQ(params[0], Json::parse(R"({"name":"subscription",
                                        "valueReference":{"reference":"Subscription/ccc"}})"));
  EXPECT_EQ(params[1], Json::parse(R"({"name":"topic","valueCanonical":"http://example.org/topic"})"));
  EXPECT_EQ(params[2], Json::parse(R"({"name":"status","valueCode":"active"})"));
  EXPECT_EQ(params[3], Json::parse(R"({"name":"type","valueCode":"event-notification"})"));
  EXPECT_EQ(params[4],
            Json::parse(R"({"name":"events-since-subscription-start","valueString":"7"})"));
  EXPECT_EQ(params[5], Json::parse(R"({"name":"notification-event","part":[
      {"name":"event-number","valueString":"42"},
      {"name":"timestamp","valueInstant":"2026-11-18T11:06:40.123Z"},
      {"name":"focus","valueReference":{"reference":"urn:uuid:3f2c9a4e-8a1b-4c6d-9e0f-1a2b3c4d5e6f",
                                        "type":"Binary"}}]})"));
  const Json& binary = b["entry"][1];
  EXPECT_EQ(binary["fullUrl"], "urn:uuid:3f2c9a4e-8a1b-4c6d-9e0f-1a2b3c4d5e6f");
  EXPECT_EQ(binary["resource"]["resourceType"], "Binary");
  EXPECT_EQ(binary["resource"]["contentType"], "application/json");
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(stored->event, &json).ok());
  EXPECT_EQ(binary["resource"]["data"], Base64Encode(json));

  info.content = "id-only";
  b = Json::parse(BuildNotificationBundle(info, {stored}));
  ASSERT_EQ(b["entry"].size(), 2u);
  EXPECT_FALSE(b["entry"][1].contains("resource"));
  info.content = "empty";
  b = Json::parse(BuildNotificationBundle(info, {stored}));
  ASSERT_EQ(b["entry"].size(), 1u);
  EXPECT_EQ(b["entry"][0]["resource"]["parameter"][5]["part"].size(), 2u);  // no focus

  info.type = "heartbeat";
  info.content = "full-resource";
  b = Json::parse(BuildNotificationBundle(info, {}));
  ASSERT_EQ(b["entry"].size(), 1u);
  EXPECT_EQ(b["entry"][0]["resource"]["parameter"].size(), 5u);
}

TEST(Base64, KnownVectors) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode(std::string("\xff\xfe", 2)), "//4=");
}

TEST(RestHookRecord, IsNotMistakenForASubscriptionState) {
  // The stored definition starts with "v1": protobuf refuses it, so code that
  // lists the cursors column family and parses SubscriptionState skips it.
  v1::internal::SubscriptionState state;
  EXPECT_FALSE(state.ParseFromString("v1{\"format\":\"icr-resthook-1\",\"name\":\"x\"}"));
}

}  // namespace
}  // namespace icr::adapters::fhir
