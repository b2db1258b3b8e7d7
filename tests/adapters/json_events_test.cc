// Tests for adapters/json: ParseEvent, the limits, ReadEvents (JSON Lines,
// one object, arrays), EventToJson, and the example files in docs/examples.
#include "adapters/json/json_events.h"

#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace icr::adapters::json {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::google::protobuf::util::TimeUtil;

// Appends the Modulus 11 check digit to nine digits: weights 10..2, check =
// 11 - (sum mod 11), 11 -> 0; 10 means no valid number has these digits.
std::optional<std::string> WithCheckDigit(const std::string& nine) {
  int sum = 0;
  for (int i = 0; i < 9; ++i) sum += (nine[i] - '0') * (10 - i);
  int check = 11 - sum % 11;
  if (check == 11) check = 0;
  if (check == 10) return std::nullopt;
  return nine + static_cast<char>('0' + check);
}

bool IsValidNhsNumber(const std::string& n) {
  if (n.size() != 10 || n.find_first_not_of("0123456789") != std::string::npos) return false;
  auto with_check = WithCheckDigit(n.substr(0, 9));
  return with_check && *with_check == n;
}

bool InTestRange(const std::string& n) { return n.size() == 10 && n.rfind("999", 0) == 0; }

// The k-th (0-based) valid NHS number in the test range 999 000 0000 upwards.
std::string TestNhsNumber(int k) {
  for (long prefix = 999000000;; ++prefix) {
    auto n = WithCheckDigit(std::to_string(prefix));
    if (n && k-- == 0) return *n;
  }
}

std::string DischargeReferralJson(const std::string& nhs, const std::string& message_id = "msg-1") {
  return R"({"sourceSystemId":"uhcw-epr","sourceOrganisation":"RKB","careSetting":"ACUTE",)"
         R"("sourceMessageId":")" +
         message_id + R"(","nhsNumber":")" + nhs +
         R"(","occurredAt":"2024-05-01T09:30:00Z","priority":"URGENT",)"
         R"("addressee":{"organisation":"CCC","teamCode":"HSCT-UHCW"},)"
         R"("dischargeReferral":{"referralId":"REF-1","pathway":"PATHWAY_1",)"
         R"("referrer":{"organisation":"RKB","teamCode":"WARD-32"},)"
         R"("needs":{"dementia":true,"carersPerCall":2,"summary":"Needs help with washing"},)"
         R"("expectedDischargeDate":{"year":2024,"month":5,"day":3},"place":"COVENTRY"}})";
}

std::string Nested(int depth) {
  // {"a":[[...]]} with `depth` levels in total.
  std::string s = R"({"a":)";
  for (int i = 1; i < depth; ++i) s += "[";
  for (int i = 1; i < depth; ++i) s += "]";
  return s + "}";
}

struct Collected {
  std::vector<icr::v1::CareEvent> events;
  std::vector<size_t> lines;
};

Status ReadAll(const std::string& text, Collected* c) {
  std::istringstream in(text);
  return ReadEvents(in, [c](icr::v1::CareEvent&& e, size_t line) {
    c->events.push_back(std::move(e));
    c->lines.push_back(line);
    return Status::Ok();
  });
}

TEST(NhsNumberHelperTest, KnownValues) {
  EXPECT_TRUE(IsValidNhsNumber("9990000018"));
  EXPECT_FALSE(IsValidNhsNumber("9990000019"));
  EXPECT_EQ(TestNhsNumber(0), "9990000018");
  EXPECT_FALSE(WithCheckDigit("999123456").has_value());  // check digit would be 10
}

TEST(ParseEventTest, ValidDischargeReferral) {
  const std::string nhs = TestNhsNumber(0);
  ASSERT_TRUE(IsValidNhsNumber(nhs));
  icr::v1::CareEvent e;
  Status s = ParseEvent(DischargeReferralJson(nhs), &e);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(e.source_system_id(), "uhcw-epr");
  EXPECT_EQ(e.source_organisation(), "RKB");
  EXPECT_EQ(e.care_setting(), icr::v1::ACUTE);
  EXPECT_EQ(e.source_message_id(), "msg-1");
  EXPECT_EQ(e.nhs_number(), nhs);
  EXPECT_EQ(e.occurred_at().seconds(), TimeUtil::TimestampToSeconds(
                                           [] {
                                             google::protobuf::Timestamp t;
                                             TimeUtil::FromString("2024-05-01T09:30:00Z", &t);
                                             return t;
                                           }()));
  EXPECT_EQ(e.priority(), icr::v1::URGENT);
  EXPECT_EQ(e.addressee().organisation(), "CCC");
  EXPECT_EQ(e.addressee().team_code(), "HSCT-UHCW");
  ASSERT_EQ(e.payload_case(), icr::v1::CareEvent::kDischargeReferral);
  const auto& r = e.discharge_referral();
  EXPECT_EQ(r.referral_id(), "REF-1");
  EXPECT_EQ(r.pathway(), icr::v1::PATHWAY_1);
  EXPECT_EQ(r.referrer().team_code(), "WARD-32");
  EXPECT_TRUE(r.needs().dementia());
  EXPECT_EQ(r.needs().carers_per_call(), 2);
  EXPECT_EQ(r.expected_discharge_date().day(), 3);
  EXPECT_EQ(r.place(), icr::v1::COVENTRY);
  // The payload case is the event type's number.
  EXPECT_EQ(static_cast<int>(e.payload_case()), icr::v1::DISCHARGE_REFERRAL);
}

TEST(ParseEventTest, AcceptsOriginalFieldNames) {
  icr::v1::CareEvent e;
  Status s = ParseEvent(R"({"source_system_id":"gp-1","nhs_number":"9990000018",)"
                        R"("gp_registration":{"practice":"M86001"}})",
                        &e);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(e.source_system_id(), "gp-1");
  EXPECT_EQ(e.gp_registration().practice(), "M86001");
}

TEST(ParseEventTest, UnknownFieldRejectedWithItsName) {
  icr::v1::CareEvent e;
  std::string json = DischargeReferralJson(TestNhsNumber(0));
  json.insert(1, R"("nhsNumbr":"9990000018",)");
  Status s = ParseEvent(json, &e);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("nhsNumbr"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().rfind("invalid JSON event: ", 0), 0u) << s.message();
}

TEST(ParseEventTest, UnknownNestedFieldRejected) {
  icr::v1::CareEvent e;
  Status s = ParseEvent(R"({"dischargeReferral":{"referralId":"R","pathwy":"PATHWAY_1"}})", &e);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("pathwy"), std::string::npos) << s.message();
}

TEST(ParseEventTest, BadEnumNameRejected) {
  icr::v1::CareEvent e;
  std::string json = DischargeReferralJson(TestNhsNumber(0));
  json.replace(json.find("\"ACUTE\""), 7, "\"HOSPITAL\"");
  Status s = ParseEvent(json, &e);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("HOSPITAL"), std::string::npos) << s.message();
}

TEST(ParseEventTest, BadTimestampRejected) {
  icr::v1::CareEvent e;
  Status s = ParseEvent(R"({"occurredAt":"1 May 2024"})", &e);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("invalid JSON event"), std::string::npos);
}

TEST(ParseEventTest, SyntaxErrorAndEmptyInputRejected) {
  icr::v1::CareEvent e;
  EXPECT_FALSE(ParseEvent(R"({"nhsNumber":)", &e).ok());
  Status s = ParseEvent("  ", &e);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("empty"), std::string::npos);
}

TEST(LimitsTest, Depth33RejectedDepth32Accepted) {
  icr::v1::CareEvent e;
  Status s33 = ParseEvent(Nested(33), &e);
  ASSERT_FALSE(s33.ok());
  EXPECT_NE(s33.message().find("33"), std::string::npos) << s33.message();
  EXPECT_NE(s33.message().find("32"), std::string::npos) << s33.message();
  EXPECT_NE(s33.message().find("deep"), std::string::npos) << s33.message();

  EXPECT_TRUE(CheckJsonLimits(Nested(32)).ok());
  // Depth 32 passes the limit and reaches protobuf (which rejects the unknown
  // field "a", not the depth).
  Status s32 = ParseEvent(Nested(32), &e);
  ASSERT_FALSE(s32.ok());
  EXPECT_EQ(s32.message().find("deep"), std::string::npos) << s32.message();
  EXPECT_NE(s32.message().find("invalid JSON event"), std::string::npos) << s32.message();
}

TEST(LimitsTest, BracketsInsideStringsDoNotCount) {
  std::string json = R"({"sourceMessageId":")" + std::string(100, '[') + R"(\"]"})";
  EXPECT_TRUE(CheckJsonLimits(json).ok());
  icr::v1::CareEvent e;
  Status s = ParseEvent(json, &e);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(e.source_message_id(), std::string(100, '[') + "\"]");
}

TEST(LimitsTest, OverOneMebibyteRejected) {
  std::string json = DischargeReferralJson(TestNhsNumber(0));
  const std::string marker = "Needs help with washing";
  json.replace(json.find(marker), marker.size(), std::string(size_t{1} << 20, 'x'));
  icr::v1::CareEvent e;
  Status s = ParseEvent(json, &e);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("1 MiB"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1,048,576"), std::string::npos) << s.message();
  // The actual size is named.
  std::string size = std::to_string(json.size());
  EXPECT_NE(s.message().find(size.substr(size.size() - 3)), std::string::npos) << s.message();

  // Just under the limit is fine (and parses).
  std::string small = DischargeReferralJson(TestNhsNumber(0));
  small.replace(small.find(marker), marker.size(),
                std::string((size_t{1} << 20) - small.size() + marker.size(), 'y'));
  ASSERT_EQ(small.size(), size_t{1} << 20);
  EXPECT_TRUE(ParseEvent(small, &e).ok());
}

TEST(ReadEventsTest, JsonLinesWithBlankLines) {
  const std::string a = DischargeReferralJson(TestNhsNumber(0), "m1");
  const std::string b = DischargeReferralJson(TestNhsNumber(1), "m2");
  Collected c;
  Status s = ReadAll(a + "\n\n   \n" + b + "\r\n", &c);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(c.events.size(), 2u);
  EXPECT_EQ(c.lines, (std::vector<size_t>{1, 4}));
  EXPECT_EQ(c.events[1].source_message_id(), "m2");
  EXPECT_EQ(c.events[1].nhs_number(), TestNhsNumber(1));
}

TEST(ReadEventsTest, BadLineTwoReportsLineTwo) {
  const std::string good = DischargeReferralJson(TestNhsNumber(0));
  std::string bad = good;
  bad.replace(bad.find("\"URGENT\""), 8, "\"VERY_URGENT\"");
  Collected c;
  Status s = ReadAll(good + "\n" + bad + "\n" + good + "\n", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 2u);
  EXPECT_EQ(s.message().rfind("line 2: invalid JSON event: ", 0), 0u) << s.message();
  EXPECT_NE(s.message().find("VERY_URGENT"), std::string::npos) << s.message();
  EXPECT_EQ(c.events.size(), 1u);  // line 1 was delivered, line 3 was not
}

TEST(ReadEventsTest, UnterminatedLineDoesNotSwallowTheFile) {
  Collected c;
  Status s = ReadAll(DischargeReferralJson(TestNhsNumber(0)) + "\n" +
                         R"({"nhsNumber":"9990000018)" + "\n" +
                         DischargeReferralJson(TestNhsNumber(1)) + "\n",
                     &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 2u) << s.message();
}

TEST(ReadEventsTest, UnclosedObjectAtEnd) {
  Collected c;
  Status s = ReadAll("\n{\"nhsNumber\":\"9990000018\",\n \"priority\":\"URGENT\"\n", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 2u);
  EXPECT_NE(s.message().find("not closed"), std::string::npos) << s.message();
}

TEST(ReadEventsTest, GarbageBetweenObjects) {
  Collected c;
  Status s = ReadAll(DischargeReferralJson(TestNhsNumber(0)) + ",\n", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 1u);
  EXPECT_NE(s.message().find("','"), std::string::npos) << s.message();
}

TEST(ReadEventsTest, HostileDepthInStream) {
  Collected c;
  Status s = ReadAll("{\"a\":" + std::string(1000000, '[') + "\n", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("limit of 32"), std::string::npos) << s.message();
}

TEST(ReadEventsTest, OversizedLineInStream) {
  Collected c;
  std::string big = R"({"sourceMessageId":")" + std::string(2'000'000, 'z') + R"("})";
  Status s = ReadAll(DischargeReferralJson(TestNhsNumber(0)) + "\n" + big + "\n", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 2u);
  EXPECT_NE(s.message().find("2,000,022 bytes"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1 MiB"), std::string::npos) << s.message();
}

TEST(ReadEventsTest, SinglePrettyPrintedObject) {
  icr::v1::CareEvent e;
  ASSERT_TRUE(ParseEvent(DischargeReferralJson(TestNhsNumber(2)), &e).ok());
  Collected c;
  Status s = ReadAll("\xEF\xBB\xBF" + EventToJson(e, /*pretty=*/true) + "\n", &c);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(c.events.size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(c.events[0], e));
}

TEST(ReadEventsTest, ArrayForm) {
  const std::string a = DischargeReferralJson(TestNhsNumber(0), "a1");
  const std::string b = DischargeReferralJson(TestNhsNumber(1), "a2");
  Collected c;
  Status s = ReadAll("\n  [\n  " + a + ",\n\n  " + b + "\n]\n", &c);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(c.events.size(), 2u);
  EXPECT_EQ(c.events[0].source_message_id(), "a1");
  EXPECT_EQ(c.events[1].source_message_id(), "a2");
  EXPECT_EQ(c.lines, (std::vector<size_t>{3, 5}));

  Collected empty;
  EXPECT_TRUE(ReadAll("[]", &empty).ok());
  EXPECT_TRUE(empty.events.empty());
}

TEST(ReadEventsTest, ArrayErrors) {
  const std::string a = DischargeReferralJson(TestNhsNumber(0));
  Collected c;
  Status s = ReadAll("[\n" + a + ",\n42\n]", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 3u);
  EXPECT_NE(s.message().find("array element 2"), std::string::npos) << s.message();

  Collected c2;
  std::string bad = a;
  bad.insert(1, R"("colour":"blue",)");
  s = ReadAll("[" + a + ",\n" + bad + "]", &c2);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 2u);
  EXPECT_NE(s.message().find("colour"), std::string::npos) << s.message();

  Collected c3;
  s = ReadAll("[\n" + a + ",\n{\"a\": tru}\n]", &c3);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.line(), 3u) << s.message();
  EXPECT_NE(s.message().find("invalid JSON array"), std::string::npos) << s.message();

  Collected c4;
  s = ReadAll("[" + Nested(32) + "]", &c4);  // 33 with the array: one event of depth 32
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().find("deep"), std::string::npos) << s.message();
  s = ReadAll("[" + Nested(33) + "]", &c4);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("limit of 32"), std::string::npos) << s.message();
}

TEST(ReadEventsTest, SinkErrorStopsAndIsReturned) {
  const std::string a = DischargeReferralJson(TestNhsNumber(0));
  std::istringstream in(a + "\n" + a + "\n" + a + "\n");
  int calls = 0;
  Status s = ReadEvents(in, [&calls](icr::v1::CareEvent&&, size_t line) {
    ++calls;
    return line == 2 ? Status::Error("broker said no", line) : Status::Ok();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "broker said no");
  EXPECT_EQ(calls, 2);
}

TEST(ReadEventsTest, EmptyInput) {
  Collected c;
  EXPECT_TRUE(ReadAll("", &c).ok());
  EXPECT_TRUE(ReadAll(" \n\n", &c).ok());
  EXPECT_TRUE(c.events.empty());
}

TEST(EventToJsonTest, RoundTrip) {
  icr::v1::CareEvent e;
  ASSERT_TRUE(ParseEvent(DischargeReferralJson(TestNhsNumber(3)), &e).ok());
  e.set_position(18446744073709551615ull);
  e.set_event_id("6f1c1d2e-2b7a-4d0c-9a53-0c6a3f2b9e11");
  e.set_event_type(icr::v1::DISCHARGE_REFERRAL);
  *e.mutable_recorded_at() = TimeUtil::NanosecondsToTimestamp(1714555800123456789);

  for (bool pretty : {false, true}) {
    const std::string json = EventToJson(e, pretty);
    EXPECT_EQ(json.find('\n') != std::string::npos, pretty);
    EXPECT_NE(json.find("\"nhsNumber\""), std::string::npos);  // lowerCamelCase
    EXPECT_EQ(json.find("nhs_number"), std::string::npos);
    EXPECT_NE(json.find("\"DISCHARGE_REFERRAL\""), std::string::npos);  // enum by name
    icr::v1::CareEvent back;
    Status s = ParseEvent(json, &back);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_TRUE(MessageDifferencer::Equals(back, e)) << json;
  }
  // Defaults are omitted.
  icr::v1::CareEvent empty;
  EXPECT_EQ(EventToJson(empty), "{}");
}

// --- The example files in docs/examples -------------------------------------

std::string ExamplePath(const std::string& name) {
  return std::string(ICR_SOURCE_DIR) + "/docs/examples/" + name;
}

void ExpectPublishable(const icr::v1::CareEvent& e, size_t line) {
  SCOPED_TRACE("line " + std::to_string(line));
  EXPECT_TRUE(IsValidNhsNumber(e.nhs_number())) << e.nhs_number();
  EXPECT_TRUE(InTestRange(e.nhs_number())) << e.nhs_number();
  EXPECT_FALSE(e.source_system_id().empty());
  EXPECT_FALSE(e.source_organisation().empty());
  EXPECT_NE(e.care_setting(), icr::v1::CARE_SETTING_UNSPECIFIED);
  EXPECT_FALSE(e.source_message_id().empty());
  EXPECT_TRUE(e.has_occurred_at());
  EXPECT_NE(e.payload_case(), icr::v1::CareEvent::PAYLOAD_NOT_SET);
  // Broker-assigned fields are left to the broker.
  EXPECT_TRUE(e.event_id().empty());
  EXPECT_EQ(e.position(), 0u);
  EXPECT_FALSE(e.has_recorded_at());
}

TEST(ExamplesTest, DischargeReferralFileParses) {
  std::ifstream in(ExamplePath("discharge-referral.json"));
  ASSERT_TRUE(in) << ExamplePath("discharge-referral.json");
  Collected c;
  std::stringstream text;
  text << in.rdbuf();
  Status s = ReadAll(text.str(), &c);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(c.events.size(), 1u);
  const auto& e = c.events[0];
  ExpectPublishable(e, 1);
  EXPECT_EQ(e.source_organisation(), "RKB");
  EXPECT_EQ(e.priority(), icr::v1::URGENT);
  EXPECT_EQ(e.addressee().organisation(), "CCC");
  EXPECT_EQ(e.addressee().team_code(), "HSCT-UHCW");
  ASSERT_TRUE(e.has_discharge_referral());
  EXPECT_EQ(e.discharge_referral().pathway(), icr::v1::PATHWAY_1);
  EXPECT_FALSE(e.discharge_referral().referral_id().empty());
  EXPECT_TRUE(e.discharge_referral().has_referrer());
}

TEST(ExamplesTest, EventsJsonlParses) {
  std::ifstream in(ExamplePath("events.jsonl"));
  ASSERT_TRUE(in) << ExamplePath("events.jsonl");
  std::set<std::string> patients, message_ids;
  std::set<int> types;
  size_t n = 0;
  Status s = ReadEvents(in, [&](icr::v1::CareEvent&& e, size_t line) {
    ++n;
    EXPECT_EQ(line, n) << "one event per line, no blank lines";
    ExpectPublishable(e, line);
    patients.insert(e.nhs_number());
    EXPECT_TRUE(message_ids.insert(e.source_system_id() + "/" + e.source_message_id()).second)
        << "duplicate idempotency key on line " << line;
    types.insert(static_cast<int>(e.payload_case()));
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_GE(n, 10u);
  EXPECT_EQ(patients.size(), 3u);
  EXPECT_GE(types.size(), 6u);
}

}  // namespace
}  // namespace icr::adapters::json
