// FHIR server end to end: a real broker in process (RocksDB in a temporary
// directory), FhirServer on a free loopback port, a small Beast HTTP client
// here, and the broker's gRPC API to check what was (not) stored.
#include "adapters/fhir/fhir_server.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "adapters/fhir/fhir_mapping.h"
#include "broker/broker.h"
#include "broker/ingest.h"
#include "tests/support/http_reply.h"
#include "tests/support/test_support.h"

namespace icr::adapters::fhir {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr char kNhsWhere[] = "identifier.where(system='https://fhir.nhs.uk/Id/nhs-number')";

std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(ICR_SOURCE_DIR) + "/tests/adapters/fhir/fixtures/" + name);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using Headers = std::vector<std::pair<std::string, std::string>>;

const Headers& DefaultHeaders() {
  static const Headers h = {{"Content-Type", "application/fhir+json"},
                            {"X-ICR-Source-System", "uhcw-epr"},
                            {"X-ICR-Source-Organisation", "RKB"}};
  return h;
}

struct HttpReply : icr::testing::HttpReply {
  json Json() const { return json::parse(body, nullptr, false); }
};

// A keep-alive HTTP/1.1 connection to the server.
class HttpClient {
 public:
  explicit HttpClient(int port) : socket_(ioc_) {
    beast::error_code ec;
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
    connect_error_ = ec.message();
    connected_ = !ec;
  }

  bool connected() const { return connected_; }

  HttpReply Send(http::verb method, const std::string& target, const std::string& body,
                 const Headers& headers = DefaultHeaders()) {
    HttpReply reply;
    if (!connected_) {
      reply.error = "connect: " + connect_error_;
      return reply;
    }
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    if (method == http::verb::post || !body.empty()) req.prepare_payload();
    beast::error_code ec;
    http::write(socket_, req, ec);
    // A refused body may be cut short by the server's answer: still read it.
    icr::testing::ReadHttpReply(socket_, buffer_, &reply);
    return reply;
  }

  HttpReply Post(const std::string& target, const std::string& body,
                 const Headers& headers = DefaultHeaders()) {
    return Send(http::verb::post, target, body, headers);
  }

 private:
  net::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  bool connected_ = false;
  std::string connect_error_;
};

// An issue of an OperationOutcome body matching code, expression (exact,
// unless empty) and a diagnostics substring.
::testing::AssertionResult HasIssue(const json& outcome, const std::string& code,
                                    const std::string& expression, const std::string& text) {
  if (!outcome.is_object() || outcome.value("resourceType", "") != "OperationOutcome" ||
      !outcome.contains("issue")) {
    return ::testing::AssertionFailure() << "not an OperationOutcome: " << outcome.dump();
  }
  for (const auto& i : outcome["issue"]) {
    std::string expr = i.contains("expression") ? i["expression"][0].get<std::string>() : "";
    if (i.value("code", "") == code && (expression.empty() || expr == expression) &&
        i.value("diagnostics", "").find(text) != std::string::npos) {
      return ::testing::AssertionSuccess();
    }
  }
  return ::testing::AssertionFailure() << "no issue code=" << code << " expression=[" << expression
                                       << "] text='" << text << "' in " << outcome.dump(1);
}

// A broker (in process, real RocksDB), the FHIR server on a free port and a
// gRPC stub onto the broker.
class FhirServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServers(FhirOptions{}); }

  void StartServers(FhirOptions fhir_options) {
    broker::BrokerOptions options;
    options.data_dir = dir_.path();
    options.listen_address = "127.0.0.1:0";
    options.shutdown_grace_ms = 1000;
    auto s = broker::BrokerServer::Start(options, &broker_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    fhir_options.listen = "127.0.0.1:0";
    s = FhirServer::Start(fhir_options, broker_->ingest(), &fhir_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_GT(fhir_->port(), 0);
    stub_ = icr::v1::Broker::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(broker_->port()), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (fhir_) fhir_->Stop();
    if (broker_) broker_->Shutdown();
  }

  HttpReply Post(const std::string& target, const std::string& body,
                 const Headers& headers = DefaultHeaders()) {
    HttpClient client(fhir_->port());
    return client.Post(target, body, headers);
  }

  std::vector<icr::v1::CareEvent> History(const std::string& nhs) {
    icr::v1::GetPatientHistoryRequest req;
    req.set_nhs_number(nhs);
    req.set_page_size(1000);
    icr::v1::GetPatientHistoryResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    auto s = stub_->GetPatientHistory(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.events().begin(), resp.events().end()};
  }

  uint64_t LastPosition() {
    icr::v1::GetStatusRequest req;
    icr::v1::GetStatusResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    auto s = stub_->GetStatus(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.last_position();
  }

  icr::testing::TempDir dir_;
  std::unique_ptr<broker::BrokerServer> broker_;
  std::unique_ptr<FhirServer> fhir_;
  std::unique_ptr<icr::v1::Broker::Stub> stub_;
};

TEST_F(FhirServerTest, MetadataIsACapabilityStatement) {
  HttpClient client(fhir_->port());
  HttpReply r = client.Send(http::verb::get, "/fhir/r4/metadata", "");
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_EQ(r.Header("content-type"), "application/fhir+json; charset=utf-8");
  json cs = r.Json();
  EXPECT_EQ(cs["resourceType"], "CapabilityStatement");
  EXPECT_EQ(cs["fhirVersion"], "4.0.1");
  std::vector<std::string> types;
  for (const auto& res : cs["rest"][0]["resource"]) types.push_back(res["type"]);
  EXPECT_EQ(types, (std::vector<std::string>{"Patient", "Encounter", "ServiceRequest", "Task"}));
}

// Every single-resource fixture: 201 with its position, stored (seen through
// gRPC), and a resend answered 200 with the same position, storing nothing.
TEST_F(FhirServerTest, EachFixtureIsStoredOnceAndAResendReturnsItsPosition) {
  struct Case {
    const char* fixture;
    const char* type;
    const char* nhs;
    std::vector<icr::v1::EventType> events;
  };
  const Case cases[] = {
      {"patient.json",
       "Patient",
       "9990000018",
       {icr::v1::DEMOGRAPHICS_UPDATE, icr::v1::GP_REGISTRATION}},
      {"encounter-admission.json", "Encounter", "9990000026", {icr::v1::ADMISSION}},
      {"encounter-discharge.json", "Encounter", "9990000026", {icr::v1::DISCHARGE}},
      {"encounter-entered-in-error.json",
       "Encounter",
       "9990000026",
       {icr::v1::ENCOUNTER_CANCELLATION}},
      {"encounter-planned.json", "Encounter", "9990000034", {icr::v1::PRE_ADMISSION}},
      {"servicerequest-discharge-referral.json",
       "ServiceRequest",
       "9990000042",
       {icr::v1::DISCHARGE_REFERRAL}},
      // The referral's lifecycle in order (the broker refuses illegal
      // transitions): accepted, forwarded, placement requested, cancelled.
      {"task-accepted.json", "Task", "9990000042", {icr::v1::REFERRAL_STATUS_CHANGE}},
      {"task-status.json", "Task", "9990000042", {icr::v1::REFERRAL_STATUS_CHANGE}},
      {"servicerequest-placement-request.json",
       "ServiceRequest",
       "9990000042",
       {icr::v1::PLACEMENT_REQUEST}},
      {"servicerequest-revoked.json",
       "ServiceRequest",
       "9990000042",
       {icr::v1::PLACEMENT_CANCELLATION}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.fixture);
    const uint64_t before = LastPosition();
    HttpReply r = Post(std::string("/fhir/r4/") + c.type, Fixture(c.fixture));
    ASSERT_EQ(r.status, 201) << r.error << r.body;
    const std::string position = r.Header("x-icr-position");
    ASSERT_FALSE(position.empty());
    EXPECT_EQ(std::stoull(position), before + 1);
    EXPECT_EQ(r.Header("etag"), "W/\"" + position + "\"");
    EXPECT_EQ(r.Header("location"),
              std::string("/fhir/r4/") + c.type + "/" + r.Header("x-icr-event-id"));
    json outcome = r.Json();
    EXPECT_TRUE(HasIssue(outcome, "informational", c.type, "at position " + position));
    EXPECT_EQ(LastPosition(), before + c.events.size());

    // Stored, with the envelope from the headers.
    auto history = History(c.nhs);
    std::vector<icr::v1::EventType> stored;
    for (const auto& e : history) {
      if (e.position() > before) stored.push_back(e.event_type());
      if (e.position() == std::stoull(position)) {
        EXPECT_EQ(e.source_system_id(), "uhcw-epr");
        EXPECT_EQ(e.source_organisation(), "RKB");
        EXPECT_EQ(e.event_id(), r.Header("x-icr-event-id"));
      }
    }
    EXPECT_EQ(stored, c.events);

    // A resend: 200, the original position, nothing new.
    HttpReply again = Post(std::string("/fhir/r4/") + c.type, Fixture(c.fixture));
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_EQ(again.Header("x-icr-position"), position);
    EXPECT_EQ(again.Header("x-icr-event-id"), r.Header("x-icr-event-id"));
    EXPECT_TRUE(HasIssue(again.Json(), "informational", "", "nothing new stored"));
    EXPECT_EQ(LastPosition(), before + c.events.size());
  }
}

TEST_F(FhirServerTest, MessageBundleIsStoredWithTheMessageHeadersIdentity) {
  Headers headers = {{"Content-Type", "application/fhir+json; fhirVersion=4.0; charset=UTF-8"}};
  HttpReply r = Post("/fhir/r4", Fixture("bundle-message.json"), headers);
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  json b = r.Json();
  EXPECT_EQ(b["resourceType"], "Bundle");
  EXPECT_EQ(b["type"], "transaction-response");
  ASSERT_EQ(b["entry"].size(), 4u);
  EXPECT_EQ(b["entry"][0]["response"]["status"], "200 OK");  // the MessageHeader
  const json& focus = b["entry"][1]["response"];
  EXPECT_EQ(focus["status"], "201 Created");
  const std::string etag = focus["etag"];
  const json& ext = focus["extension"][0];
  EXPECT_EQ(ext["url"], kBrokerEventExtension);
  const std::string position = ext["extension"][1]["valueString"];
  EXPECT_EQ(etag, "W/\"" + position + "\"");
  EXPECT_EQ(focus["location"],
            "Encounter/" + ext["extension"][0]["valueString"].get<std::string>());

  auto history = History("9990000050");
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].event_type(), icr::v1::ADMISSION);
  EXPECT_EQ(history[0].source_system_id(), "urn:icr:geh-epr");
  EXPECT_EQ(history[0].source_organisation(), "RLT");
  EXPECT_EQ(std::to_string(history[0].position()), position);

  const uint64_t last = LastPosition();
  HttpReply again = Post("/fhir/r4", Fixture("bundle-message.json"), headers);
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.Json()["entry"][1]["response"]["status"], "200 OK");
  EXPECT_EQ(again.Json()["entry"][1]["response"]["etag"], etag);
  EXPECT_EQ(LastPosition(), last);
}

TEST_F(FhirServerTest, TransactionBundleIsStoredWhole) {
  const uint64_t before = LastPosition();
  HttpReply r = Post("/fhir/r4", Fixture("bundle-transaction.json"));
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  json b = r.Json();
  EXPECT_EQ(b["type"], "transaction-response");
  ASSERT_EQ(b["entry"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b["entry"][i]["response"]["status"], "201 Created");
    EXPECT_EQ(b["entry"][i]["response"]["etag"], "W/\"" + std::to_string(before + 1 + i) + "\"");
  }
  EXPECT_EQ(b["entry"][0]["fullUrl"], "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001");
  auto history = History("9990000069");
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].event_type(), icr::v1::DEMOGRAPHICS_UPDATE);
  EXPECT_EQ(history[1].event_type(), icr::v1::ADMISSION);
  EXPECT_EQ(history[2].event_type(), icr::v1::DISCHARGE_REFERRAL);
  EXPECT_EQ(history[2].priority(), icr::v1::URGENT);

  HttpReply again = Post("/fhir/r4", Fixture("bundle-transaction.json"));
  ASSERT_EQ(again.status, 200);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(again.Json()["entry"][i]["response"]["status"], "200 OK");
  EXPECT_EQ(LastPosition(), before + 3);
}

TEST_F(FhirServerTest, TransactionWithOneBadEntryStoresNothing) {
  const uint64_t before = LastPosition();
  HttpReply r = Post("/fhir/r4", Fixture("bundle-transaction-bad-entry.json"));
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(HasIssue(r.Json(), "value", "Bundle.entry[1].resource.subject.identifier.value",
                       "events[1].nhs_number: fails the Modulus 11 check"));
  EXPECT_TRUE(History("9990000085").empty());  // the good entry was not stored either
  EXPECT_EQ(LastPosition(), before);
}

TEST_F(FhirServerTest, BatchBundleAnswersEachEntry) {
  // The batch's Task accepts referral REF-4401: create it first.
  json referral = json::parse(Fixture("servicerequest-discharge-referral.json"));
  referral["identifier"][0]["value"] = "REF-4401";
  referral["subject"]["identifier"]["value"] = "9990000077";
  ASSERT_EQ(Post("/fhir/r4/ServiceRequest", referral.dump()).status, 201);
  json b = json::parse(Fixture("bundle-batch.json"));
  b["entry"][1]["resource"]["subject"]["identifier"]["value"] = "9990000019";
  HttpReply r = Post("/fhir/r4", b.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json resp = r.Json();
  EXPECT_EQ(resp["type"], "batch-response");
  EXPECT_EQ(resp["entry"][0]["response"]["status"], "201 Created");
  EXPECT_EQ(resp["entry"][1]["response"]["status"], "400 Bad Request");
  EXPECT_TRUE(HasIssue(resp["entry"][1]["response"]["outcome"], "value",
                       "Bundle.entry[1].resource.subject.identifier.value", "Modulus 11"));
  auto history = History("9990000077");
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].event_type(), icr::v1::DISCHARGE_REFERRAL);
  EXPECT_EQ(history[1].event_type(), icr::v1::REFERRAL_STATUS_CHANGE);
}

// A Patient body nested exactly `depth` deep, padded with spaces to `size`.
std::string PatientBody(int depth, size_t size = 0) {
  json p = json::parse(Fixture("patient.json"));
  p["id"] = "depth-" + std::to_string(depth) + "-" + std::to_string(size);
  std::string text = p.dump();
  std::string deep = std::string(depth - 1, '[') + std::string(depth - 1, ']');
  text = text.substr(0, text.size() - 1) + R"(,"zz":)" + deep + "}";
  if (text.size() < size) text += std::string(size - text.size(), ' ');
  return text;
}

TEST_F(FhirServerTest, LimitsAtAndJustOverTheEdge) {
  EXPECT_EQ(Post("/fhir/r4/Patient", PatientBody(32)).status, 201);
  const uint64_t before = LastPosition();
  HttpReply deep = Post("/fhir/r4/Patient", PatientBody(33));
  ASSERT_EQ(deep.status, 400);
  EXPECT_TRUE(HasIssue(deep.Json(), "too-long", "", "more than 32 deep"));

  const size_t limit = FhirOptions{}.max_body_bytes;
  EXPECT_EQ(Post("/fhir/r4/Patient", PatientBody(3, limit)).status, 201);
  HttpReply big = Post("/fhir/r4/Patient", PatientBody(3, limit + 1));
  ASSERT_EQ(big.status, 413) << big.error;
  EXPECT_TRUE(HasIssue(big.Json(), "too-long", "", "larger than the limit of 1048576 bytes"));
  EXPECT_EQ(LastPosition(), before + 2);  // the at-limit Patient's two events
}

TEST_F(FhirServerTest, KeepAliveServesManyRequestsOnOneConnection) {
  HttpClient client(fhir_->port());
  for (int i = 0; i < 5; ++i) {
    json p = json::parse(Fixture("patient.json"));
    p["id"] = "keepalive-" + std::to_string(i);
    p.erase("generalPractitioner");
    HttpReply r = client.Post("/fhir/r4/Patient", p.dump());
    ASSERT_EQ(r.status, 201) << r.error;
    EXPECT_NE(r.Header("connection"), "close");
  }
  // Errors keep the connection too.
  EXPECT_EQ(client.Post("/fhir/r4/Patient", "{").status, 400);
  EXPECT_EQ(client.Send(http::verb::get, "/fhir/r4/metadata", "").status, 200);
}

// The malformed-input suite: every case is rejected with the status, issue
// code and element named, and nothing is stored.
TEST_F(FhirServerTest, MalformedInputIsRejectedAndNothingIsStored) {
  const std::string kNhs = "9990000093";
  auto nhs_ident = [&](const std::string& v) {
    return json::array({{{"system", kNhsNumberSystem}, {"value", v}}});
  };
  const json patient = {{"resourceType", "Patient"},
                        {"id", "bad-pat"},
                        {"meta", {{"versionId", "1"}}},
                        {"identifier", nhs_ident(kNhs)},
                        {"name", json::array({{{"family", "Case"}, {"given", {"Test"}}}})},
                        {"gender", "female"},
                        {"birthDate", "1950-01-01"}};
  const json encounter = {
      {"resourceType", "Encounter"},
      {"id", "bad-enc"},
      {"identifier", json::array({{{"value", "BAD-SPELL"}}})},
      {"status", "in-progress"},
      {"subject", {{"identifier", {{"system", kNhsNumberSystem}, {"value", kNhs}}}}},
      {"period", {{"start", "2025-11-01T10:00:00Z"}}}};
  json referral = json::parse(Fixture("servicerequest-discharge-referral.json"));
  referral["subject"]["identifier"]["value"] = kNhs;
  json placement = json::parse(Fixture("servicerequest-placement-request.json"));
  placement["subject"]["identifier"]["value"] = kNhs;
  json task = json::parse(Fixture("task-status.json"));
  task["for"]["identifier"]["value"] = kNhs;
  json transaction = json::parse(Fixture("bundle-transaction.json"));
  transaction["entry"][0]["resource"]["identifier"][0]["value"] = kNhs;
  json message = json::parse(Fixture("bundle-message.json"));
  message["entry"][2]["resource"]["identifier"][0]["value"] = kNhs;
  auto with = [](json j, const std::function<void(json&)>& change) {
    change(j);
    return j.dump();
  };
  const std::string ext = "https://icr-broker.example/fhir/StructureDefinition/";
  const std::string kPatient = "/fhir/r4/Patient", kEncounter = "/fhir/r4/Encounter",
                    kSr = "/fhir/r4/ServiceRequest", kTask = "/fhir/r4/Task", kBase = "/fhir/r4";
  enum class H {
    kAll,
    kNoSystem,
    kNoOrg,
    kNone,
    kBadSystem,
    kBadOrg,
    kBadCareSetting,
    kXml,
    kXmlPlain,
    kText,
    kNoType,
    kLatin1
  };
  struct Case {
    std::string name;
    std::string target;
    std::string body;
    int status;
    std::string code;
    std::string expression;  // exact; "" = not checked
    std::string text;        // in diagnostics
    H headers = H::kAll;
    http::verb method = http::verb::post;
  };
  const std::string pat = patient.dump();
  // A duplicate key inside identifier[0].
  std::string dup_nested = pat;
  {
    const std::string needle = "\"value\":\"" + kNhs + "\"";
    dup_nested.replace(dup_nested.find(needle), needle.size(),
                       needle + ",\"value\":\"9990000107\"");
  }
  std::vector<Case> cases = {
      // JSON itself
      {"empty body", kPatient, "", 400, "structure", "", "invalid JSON"},
      {"whitespace only", kPatient, " \n\t ", 400, "structure", "", "invalid JSON"},
      {"truncated", kPatient, pat.substr(0, pat.size() / 2), 400, "structure", "", "invalid JSON"},
      {"array", kPatient, "[]", 400, "structure", "", "JSON object"},
      {"null", kPatient, "null", 400, "structure", "", "JSON object"},
      {"string", kPatient, "\"Patient\"", 400, "structure", "", "JSON object"},
      {"trailing text", kPatient, pat + " x", 400, "structure", "", "invalid JSON"},
      {"trailing comma", kPatient, R"({"resourceType":"Patient",})", 400, "structure", "",
       "invalid JSON"},
      {"single quotes", kPatient, "{'resourceType':'Patient'}", 400, "structure", "",
       "invalid JSON"},
      {"comment", kPatient, "/* c */ " + pat, 400, "structure", "", "invalid JSON"},
      {"invalid UTF-8", kPatient, "{\"resourceType\":\"Patient\",\"id\":\"\xC3\x28\"}", 400,
       "structure", "", "invalid JSON"},
      {"lone surrogate", kPatient, R"({"resourceType":"Patient","id":"\ud800"})", 400, "structure",
       "", "surrogate"},
      {"NaN", kPatient, R"({"resourceType":"Patient","x":NaN})", 400, "structure", "",
       "invalid JSON"},
      {"number overflow", kPatient, R"({"resourceType":"Patient","x":1e999})", 400, "structure", "",
       "number overflow"},
      {"duplicate resourceType", kPatient, R"({"resourceType":"Patient","resourceType":"Patient"})",
       400, "structure", "", "duplicate JSON key 'resourceType' in $"},
      {"duplicate nested key", kPatient, dup_nested, 400, "structure", "",
       "duplicate JSON key 'value' in $.identifier[0]"},
      {"depth 33", kPatient, PatientBody(33), 400, "too-long", "", "more than 32 deep"},
      {"depth 600", kPatient, std::string(600, '[') + std::string(600, ']'), 400, "too-long", "",
       "more than 32 deep"},
      // resourceType and endpoint
      {"no resourceType", kPatient, with(patient, [](json& j) { j.erase("resourceType"); }), 400,
       "required", "Resource.resourceType", ""},
      {"resourceType not a string", kPatient, with(patient, [](json& j) { j["resourceType"] = 5; }),
       400, "structure", "Resource.resourceType", "must be a string"},
      {"Encounter posted to Patient", kPatient, encounter.dump(), 400, "invalid",
       "Resource.resourceType", "/fhir/r4/Patient"},
      {"unknown resourceType", kBase, R"({"resourceType":"Observation","status":"final"})", 400,
       "not-supported", "Resource.resourceType", "'Observation'"},
      {"resource posted to the base", kBase, pat, 400, "invalid", "Resource.resourceType",
       "takes a Bundle"},
      // Patient
      {"no id", kPatient, with(patient, [](json& j) { j.erase("id"); }), 400, "required",
       "Patient.id", "idempotency key"},
      {"no NHS number", kPatient, with(patient, [](json& j) { j.erase("identifier"); }), 400,
       "required", std::string("Patient.") + kNhsWhere, ""},
      {"NHS identifier without value", kPatient,
       with(patient, [](json& j) { j["identifier"][0].erase("value"); }), 400, "required",
       std::string("Patient.") + kNhsWhere + ".value", ""},
      {"NHS number fails Modulus 11", kPatient,
       with(patient, [](json& j) { j["identifier"][0]["value"] = "9990000019"; }), 400, "value",
       std::string("Patient.") + kNhsWhere + ".value", "event.nhs_number: fails the Modulus 11"},
      {"NHS number of 9 digits", kPatient,
       with(patient, [](json& j) { j["identifier"][0]["value"] = "999000001"; }), 400, "value",
       std::string("Patient.") + kNhsWhere + ".value", "10 digits"},
      {"NHS number with letters", kPatient,
       with(patient, [](json& j) { j["identifier"][0]["value"] = "99900000AB"; }), 400, "value",
       std::string("Patient.") + kNhsWhere + ".value", "event.nhs_number"},
      {"identifier not an array", kPatient,
       with(patient, [&](json& j) { j["identifier"] = nhs_ident(kNhs)[0]; }), 400, "structure",
       "Patient.identifier", "must be an array"},
      {"null gender", kPatient, with(patient, [](json& j) { j["gender"] = nullptr; }), 400,
       "structure", "Patient.gender", "null"},
      {"bad gender", kPatient, with(patient, [](json& j) { j["gender"] = "F"; }), 400, "value",
       "Patient.gender", "'F'"},
      {"partial birthDate", kPatient, with(patient, [](json& j) { j["birthDate"] = "1950"; }), 400,
       "value", "Patient.birthDate", "full date"},
      {"impossible birthDate", kPatient,
       with(patient, [](json& j) { j["birthDate"] = "1950-02-30"; }), 400, "value",
       "Patient.birthDate",
       "Patient.birthDate: '1950-02-30' is a date that does not exist (day 30 is not a day of "
       "month 2 in 1950: 1..28)"},
      {"birthDate a number", kPatient, with(patient, [](json& j) { j["birthDate"] = 1950; }), 400,
       "structure", "Patient.birthDate", "must be a string"},
      {"birthDate before 1900", kPatient,
       with(patient, [](json& j) { j["birthDate"] = "1850-01-01"; }), 400, "value",
       "Patient.birthDate", "outside 1900..2200"},
      {"given not an array", kPatient,
       with(patient, [](json& j) { j["name"][0]["given"] = "Test"; }), 400, "structure",
       "Patient.name[0].given", "must be an array"},
      {"control character in family", kPatient,
       with(patient, [](json& j) { j["name"][0]["family"] = "Ca\x01se"; }), 400, "value",
       "Patient.name[0].family", "control character"},
      {"id too long for a message id", kPatient,
       with(patient, [](json& j) { j["id"] = std::string(130, 'a'); }), 400, "value", "Patient.id",
       "source_message_id"},
      // Encounter
      {"encounter without status", kEncounter, with(encounter, [](json& j) { j.erase("status"); }),
       400, "required", "Encounter.status", ""},
      {"encounter status arrived", kEncounter,
       with(encounter, [](json& j) { j["status"] = "arrived"; }), 400, "not-supported",
       "Encounter.status", "'arrived'"},
      {"encounter without subject", kEncounter,
       with(encounter, [](json& j) { j.erase("subject"); }), 400, "required",
       std::string("Encounter.subject.") + kNhsWhere, ""},
      {"encounter subject not resolvable", kEncounter,
       with(encounter,
            [](json& j) {
              j["subject"] = {{"reference", "Patient/p9"}};
            }),
       400, "required", std::string("Encounter.subject.") + kNhsWhere, "does not resolve"},
      {"finished without disposition", kEncounter,
       with(encounter,
            [](json& j) {
              j["status"] = "finished";
              j["period"]["end"] = "2025-11-02T10:00:00Z";
            }),
       400, "required", "Encounter.hospitalization.dischargeDisposition", ""},
      {"unknown destination code", kEncounter,
       with(encounter,
            [](json& j) {
              j["status"] = "finished";
              j["hospitalization"]["dischargeDisposition"]["coding"] =
                  json::array({{{"system", kDischargeDestinationSystem}, {"code", "moon"}}});
            }),
       400, "value", "Encounter.hospitalization.dischargeDisposition.coding[0].code", "'moon'"},
      {"in-progress with an end", kEncounter,
       with(encounter, [](json& j) { j["period"]["end"] = "2025-11-02T10:00:00Z"; }), 400,
       "invalid", "Encounter.period.end", ""},
      {"start without time zone", kEncounter,
       with(encounter, [](json& j) { j["period"]["start"] = "2025-11-01T10:00:00"; }), 400, "value",
       "Encounter.period.start", "dateTime"},
      {"start in the future", kEncounter,
       with(encounter, [](json& j) { j["period"]["start"] = "2099-01-01T00:00:00Z"; }), 400,
       "value", "Encounter.period.start", "in the future"},
      {"encounter without identifier or id", kBase,
       with(transaction, [](json& j) { j["entry"][1]["resource"].erase("identifier"); }), 400,
       "required", "Bundle.entry[1].resource.identifier", "encounter (spell) id"},
      // ServiceRequest
      {"no request type", kSr, with(referral, [](json& j) { j["code"]["coding"].erase(0); }), 400,
       "required",
       std::string("ServiceRequest.code.coding.where(system='") + kRequestTypeSystem + "')", ""},
      {"unsupported request type", kSr,
       with(referral, [](json& j) { j["code"]["coding"][0]["code"] = "home-visit"; }), 400,
       "not-supported", "", "'home-visit'"},
      {"referral without pathway", kSr, with(referral, [](json& j) { j.erase("category"); }), 400,
       "required",
       std::string("ServiceRequest.category.coding.where(system='") + kDischargePathwaySystem +
           "')",
       "discharge_referral.pathway: is required"},
      {"unknown pathway", kSr,
       with(referral, [](json& j) { j["category"][0]["coding"][0]["code"] = "pathway-9"; }), 400,
       "value", "ServiceRequest.category[0].coding[0].code", "'pathway-9'"},
      {"referral without requester", kSr, with(referral, [](json& j) { j.erase("requester"); }),
       400, "required",
       std::string("ServiceRequest.requester.identifier.where(system='") + kTeamCodeSystem + "')",
       ""},
      {"placement without place", kSr, with(placement, [](json& j) { j["extension"].erase(0); }),
       400, "required", "ServiceRequest.extension('" + ext + "place')",
       "placement_request.place: is required"},
      {"home support without calls per day", kSr,
       with(placement, [](json& j) { j["extension"].erase(1); }), 400, "value",
       "ServiceRequest.extension('" + ext + "calls-per-day').valueInteger", "1..8"},
      {"hours per week over 168", kSr,
       with(placement, [](json& j) { j["quantityQuantity"]["value"] = 200; }), 400, "value",
       "ServiceRequest.quantityQuantity.value", "at most 168"},
      {"quantity not hours per week", kSr,
       with(placement, [](json& j) { j["quantityQuantity"]["code"] = "h/d"; }), 400, "value",
       "ServiceRequest.quantityQuantity.code", "h/wk"},
      {"placement without start date", kSr,
       with(placement, [](json& j) { j.erase("occurrenceDateTime"); }), 400, "required",
       "ServiceRequest.occurrence", "start_date: is required"},
      {"draft service request", kSr, with(referral, [](json& j) { j["status"] = "draft"; }), 400,
       "not-supported", "ServiceRequest.status", "'draft'"},
      {"misspelt care need", kSr,
       with(referral, [](json& j) { j["extension"][0]["extension"][0]["url"] = "dementai"; }), 400,
       "value", "", "'dementai' is not a care need"},
      {"seven carers per call", kSr,
       with(referral, [](json& j) { j["extension"][0]["extension"][2]["valueInteger"] = 7; }), 400,
       "value", "ServiceRequest.extension('" + ext + "care-needs')", "must be 0..4"},
      {"summary over 4000 bytes", kSr,
       with(referral,
            [](json& j) {
              j["extension"][0]["extension"][3]["valueString"] = std::string(5000, 'x');
            }),
       400, "too-long", "ServiceRequest.extension('" + ext + "care-needs')", "exceeds the limit"},
      // Task
      {"task without focus", kTask, with(task, [](json& j) { j.erase("focus"); }), 400, "required",
       "Task.focus", ""},
      {"draft task without business status", kTask,
       with(task,
            [](json& j) {
              j.erase("businessStatus");
              j["status"] = "draft";
            }),
       400, "not-supported", "Task.status", "businessStatus"},
      {"unknown business status", kTask,
       with(task, [](json& j) { j["businessStatus"]["coding"][0]["code"] = "lost"; }), 400, "value",
       "Task.businessStatus.coding[0].code", "'lost'"},
      // Bundles
      {"document bundle", kBase, with(transaction, [](json& j) { j["type"] = "document"; }), 400,
       "not-supported", "Bundle.type", "'document'"},
      {"bundle without entries", kBase, with(transaction, [](json& j) { j.erase("entry"); }), 400,
       "required", "Bundle.entry", ""},
      {"message without MessageHeader first", kBase,
       with(message, [](json& j) { std::swap(j["entry"][0], j["entry"][1]); }), 400, "structure",
       "Bundle.entry[0].resource", "MessageHeader"},
      {"message without source and no header", kBase,
       with(message, [](json& j) { j["entry"][0]["resource"].erase("source"); }), 400, "required",
       "Bundle.entry[0].resource.source.endpoint", "X-ICR-Source-System", H::kNoSystem},
      {"transaction entry DELETE", kBase,
       with(transaction, [](json& j) { j["entry"][1]["request"]["method"] = "DELETE"; }), 400,
       "not-supported", "Bundle.entry[1].request.method", "'DELETE'"},
      {"transaction entry Observation", kBase,
       with(transaction,
            [](json& j) { j["entry"][1]["resource"]["resourceType"] = "Observation"; }),
       400, "not-supported", "Bundle.entry[1].resource.resourceType", "'Observation'"},
      {"bundle without identifier", kBase,
       with(transaction, [](json& j) { j.erase("identifier"); }), 400, "required",
       "Bundle.identifier", "idempotency key"},
      {"transaction with a bad NHS number", kBase,
       with(transaction,
            [](json& j) { j["entry"][0]["resource"]["identifier"][0]["value"] = "9990000019"; }),
       400, "value", std::string("Bundle.entry[0].resource.") + kNhsWhere + ".value",
       "events[0].nhs_number"},
      {"transaction with one unmappable entry", kBase,
       with(transaction, [](json& j) { j["entry"][2]["resource"].erase("status"); }), 400,
       "required", "Bundle.entry[2].resource.status", ""},
      // Media types and headers
      {"XML", kPatient, "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"x\"/></Patient>", 415,
       "not-supported", "", "XML is not accepted", H::kXml},
      {"XML as application/xml", kPatient, "<Patient/>", 415, "not-supported", "",
       "XML is not accepted", H::kXmlPlain},
      {"text/plain", kPatient, pat, 415, "not-supported", "", "text/plain", H::kText},
      {"no Content-Type", kPatient, pat, 415, "not-supported", "", "Content-Type header",
       H::kNoType},
      {"Latin-1 charset", kPatient, pat, 415, "not-supported", "", "charset iso-8859-1",
       H::kLatin1},
      {"XML body labelled JSON", kPatient, "<Patient/>", 400, "structure", "", "invalid JSON"},
      {"no X-ICR-Source-System", kPatient, pat, 400, "required", "", "X-ICR-Source-System header",
       H::kNoSystem},
      {"bad X-ICR-Source-System", kPatient, pat, 400, "value", "",
       "X-ICR-Source-System header: event.source_system_id", H::kBadSystem},
      {"no X-ICR-Source-Organisation", kPatient, pat, 400, "required", "",
       "X-ICR-Source-Organisation header", H::kNoOrg},
      {"bad X-ICR-Source-Organisation", kPatient, pat, 400, "value", "",
       "X-ICR-Source-Organisation header: event.source_organisation", H::kBadOrg},
      {"no identity headers", kPatient, pat, 400, "required", "", "X-ICR-Source-System", H::kNone},
      {"bad X-ICR-Care-Setting", kPatient, pat, 400, "value", "", "X-ICR-Care-Setting",
       H::kBadCareSetting},
      // Paths and methods
      {"unknown resource path", "/fhir/r4/Observation", pat, 404, "not-found", "", "no endpoint"},
      {"other FHIR version", "/fhir/r3/Patient", pat, 404, "not-found", "", "no endpoint"},
      {"instance path", "/fhir/r4/Patient/bad-pat", pat, 404, "not-found", "", "no endpoint"},
      {"GET a type", kPatient, "", 405, "not-supported", "", "allowed: POST", H::kAll,
       http::verb::get},
      {"PUT a type", kPatient, pat, 405, "not-supported", "", "allowed: POST", H::kAll,
       http::verb::put},
      {"POST metadata", "/fhir/r4/metadata", pat, 405, "not-supported", "", "allowed: GET"},
      {"body over the limit", kPatient, std::string(FhirOptions{}.max_body_bytes + 1, ' '), 413,
       "too-long", "", "larger than the limit"},
  };
  ASSERT_GE(cases.size(), 40u);

  auto headers_for = [](H h) {
    Headers out;
    const std::string json_type = "application/fhir+json";
    auto add = [&](const char* k, const std::string& v) { out.emplace_back(k, v); };
    switch (h) {
      case H::kXml:
        add("Content-Type", "application/fhir+xml");
        break;
      case H::kXmlPlain:
        add("Content-Type", "application/xml");
        break;
      case H::kText:
        add("Content-Type", "text/plain");
        break;
      case H::kNoType:
        break;
      case H::kLatin1:
        add("Content-Type", "application/fhir+json; charset=ISO-8859-1");
        break;
      default:
        add("Content-Type", json_type);
        break;
    }
    if (h != H::kNoSystem && h != H::kNone) {
      add("X-ICR-Source-System", h == H::kBadSystem ? "uhcw epr!" : "uhcw-epr");
    }
    if (h != H::kNoOrg && h != H::kNone) {
      add("X-ICR-Source-Organisation", h == H::kBadOrg ? "not an ods!" : "RKB");
    }
    if (h == H::kBadCareSetting) add("X-ICR-Care-Setting", "HOSPITAL");
    return out;
  };

  const uint64_t before = LastPosition();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto t0 = std::chrono::steady_clock::now();
    HttpClient client(fhir_->port());
    HttpReply r = client.Send(c.method, c.target, c.body, headers_for(c.headers));
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(r.status, c.status) << r.error << " " << r.body.substr(0, 2000);
    EXPECT_EQ(r.Header("content-type"), "application/fhir+json; charset=utf-8");
    EXPECT_TRUE(HasIssue(r.Json(), c.code, c.expression, c.text));
    EXPECT_LT(elapsed, 2s);  // rejected promptly
    EXPECT_EQ(LastPosition(), before) << "something was stored";
  }
  EXPECT_TRUE(History(kNhs).empty());
}

// curl, as in docs/adapters/fhir.md.
TEST_F(FhirServerTest, CurlWorks) {
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl not installed";
  const std::string cmd = "curl -sS -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:" +
                          std::to_string(fhir_->port()) +
                          "/fhir/r4/Encounter -H 'Content-Type: application/fhir+json' "
                          "-H 'X-ICR-Source-System: uhcw-epr' -H 'X-ICR-Source-Organisation: RKB' "
                          "--data-binary @" +
                          std::string(ICR_SOURCE_DIR) +
                          "/tests/adapters/fhir/fixtures/encounter-admission.json";
  auto run = [](const std::string& c) {
    std::string out;
    FILE* p = popen(c.c_str(), "r");
    if (p == nullptr) return out;
    char buf[256];
    while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
    pclose(p);
    return out;
  };
  EXPECT_EQ(run(cmd), "201");
  EXPECT_EQ(run(cmd), "200");  // a resend
  EXPECT_EQ(History("9990000026").size(), 1u);
}

// --- With a store we control ------------------------------------------------------

// An EventStore whose appends fail with UNAVAILABLE, or succeed after a delay.
class FakeStore : public store::EventStore {
 public:
  explicit FakeStore(std::chrono::milliseconds delay, bool fail = false)
      : delay_(delay), fail_(fail) {}
  ~FakeStore() override {
    for (auto& t : threads_) t.join();
  }

  void AppendAsync(std::vector<icr::v1::CareEvent> events, store::AppendCallback done) override {
    ++appends_;
    if (fail_) {
      done(store::Status::Unavailable("injected: WAL sync failed"), {});
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    threads_.emplace_back([this, n = events.size(), done = std::move(done)] {
      std::this_thread::sleep_for(delay_);
      std::vector<store::AppendResult> results;
      for (size_t i = 0; i < n; ++i) {
        store::AppendResult r;
        r.position = ++last_;
        r.event_id = "event-" + std::to_string(r.position);
        results.push_back(r);
      }
      done(store::Status::Ok(), std::move(results));
    });
  }
  int appends() const { return appends_; }

  void SetCommitListener(store::CommitListener) override {}
  uint64_t LastPosition() const override { return last_; }
  store::Status ReadFrom(uint64_t, size_t, std::vector<store::EventPtr>*) override { return {}; }
  store::Status Get(uint64_t, store::EventPtr*) override { return store::Status::NotFound("x"); }
  store::Status ReadPatient(const std::string&, uint64_t, size_t,
                            std::vector<store::EventPtr>*) override {
    return {};
  }
  store::Status FindPositionAtTime(int64_t, uint64_t*) override { return {}; }
  store::Status PutSubscription(const std::string&, const std::string&, bool) override {
    return {};
  }
  store::Status GetSubscription(const std::string&, std::string*) override {
    return store::Status::NotFound("x");
  }
  store::Status DeleteSubscription(const std::string&) override { return {}; }
  store::Status ListSubscriptions(std::vector<std::pair<std::string, std::string>>*) override {
    return {};
  }
  store::Status PutParked(const std::string&, uint64_t, const std::string&,
                          const std::string&) override {
    return {};
  }
  store::Status DeleteParked(const std::string&, uint64_t) override { return {}; }
  store::Status ListParked(const std::string&, size_t,
                           std::vector<std::pair<uint64_t, std::string>>*) override {
    return {};
  }
  store::Status GetState(const std::string&, std::string*) override {
    return store::Status::NotFound("no state in this fake");
  }
  store::Status ScanState(const std::string&,
                   const std::function<bool(std::string_view, std::string_view)>&) override {
    return store::Status::Ok();
  }
  store::Status PutState(const std::string&, const std::string&) override {
    return store::Status::Unavailable("this fake store keeps no state");
  }
  store::StoreStats Stats() const override { return {}; }
  void Close() override {}

 private:
  std::chrono::milliseconds delay_;
  bool fail_;
  std::atomic<int> appends_{0};
  std::atomic<uint64_t> last_{0};
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

std::unique_ptr<FhirServer> StartOn(broker::Ingest* ingest, FhirOptions options = {}) {
  options.listen = "127.0.0.1:0";
  std::unique_ptr<FhirServer> server;
  auto s = FhirServer::Start(options, ingest, &server);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return server;
}

TEST(FhirServerStoreTest, UnavailableStoreIs503WithRetryAfter) {
  FakeStore store(0ms, /*fail=*/true);
  broker::Ingest ingest(&store, {});
  auto server = StartOn(&ingest);
  HttpClient client(server->port());
  HttpReply r = client.Post("/fhir/r4/Encounter", Fixture("encounter-admission.json"));
  ASSERT_EQ(r.status, 503) << r.error << r.body;
  EXPECT_EQ(r.Header("retry-after"), "5");
  EXPECT_TRUE(HasIssue(r.Json(), "transient", "", "injected: WAL sync failed"));
  EXPECT_EQ(store.appends(), 1);
  server->Stop();
}

TEST(FhirServerStoreTest, StopAnswersRequestsInFlightThenRefusesConnections) {
  FakeStore store(500ms);
  broker::Ingest ingest(&store, {});
  auto server = StartOn(&ingest);
  const int port = server->port();
  HttpClient idle(port);  // an idle keep-alive connection must not hold Stop up
  ASSERT_TRUE(idle.connected());
  HttpReply reply;
  std::thread client([&] {
    HttpClient c(port);
    reply = c.Post("/fhir/r4/Encounter", Fixture("encounter-admission.json"));
  });
  while (store.appends() == 0) std::this_thread::sleep_for(5ms);
  const auto t0 = std::chrono::steady_clock::now();
  server->Stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  client.join();
  EXPECT_EQ(reply.status, 201) << reply.error;  // answered, not dropped
  EXPECT_EQ(reply.Header("connection"), "close");
  EXPECT_EQ(reply.Header("x-icr-position"), "1");
  EXPECT_LT(took, 5s);
  HttpClient late(port);
  EXPECT_FALSE(late.connected() && late.Post("/fhir/r4/Patient", "{}").status != 0);
  server->Stop();  // idempotent
}

TEST(FhirServerStoreTest, StartRefusesBadAddresses) {
  FakeStore store(0ms);
  broker::Ingest ingest(&store, {});
  std::unique_ptr<FhirServer> server;
  FhirOptions options;
  options.listen = "no-port";
  EXPECT_EQ(FhirServer::Start(options, &ingest, &server).code(),
            store::StatusCode::kInvalidArgument);
  auto first = StartOn(&ingest);
  options.listen = "127.0.0.1:" + std::to_string(first->port());
  auto s = FhirServer::Start(options, &ingest, &server);
  EXPECT_EQ(s.code(), store::StatusCode::kUnavailable) << s.ToString();
}

}  // namespace
}  // namespace icr::adapters::fhir
