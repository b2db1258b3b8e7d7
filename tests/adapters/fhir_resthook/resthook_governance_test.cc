// Rest-hook subscriptions under information governance (docs/governance.md,
// docs/adapters/fhir-subscriptions.md "Owner, scope and audit"), through the
// real path: a broker with mutual TLS and a policy file, certificates from
// deploy/make-test-pki.sh, the FHIR server over HTTPS with client
// certificates creating and deleting rest-hooks, the RestHookManager with
// the broker's AccessControl, a real HTTP receiver (receiver.h), and the
// audit trail read back with Governance.WhoSaw.
//
//  - A rest-hook created by a principal whose scope excludes some events
//    receives exactly the in-scope ones, minimised to its profile (no
//    safeguarding detail for a profile without SAFEGUARDING), and the audit
//    trail has one DELIVERED record per delivered event position, channel
//    "fhir-resthook", naming the owner, the rest-hook, purpose and legal
//    basis; nothing is audited for the events left out.
//  - A create by a certificate the policy does not know is 401 "login"; a
//    DELETE by another principal is 403 "forbidden" and the rest-hook stays.
//  - A definition stored before rest-hooks had owners is not resumed by a
//    broker that does not allow development callers.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "adapters/fhir/fhir_server.h"
#include "adapters/fhir/resthook.h"
#include "broker/broker.h"
#include "broker/ingest.h"
#include "icr/v1/broker.grpc.pb.h"
#include "icr/v1/governance.grpc.pb.h"
#include "tests/adapters/fhir_resthook/receiver.h"
#include "tests/support/http_reply.h"
#include "tests/support/test_support.h"

namespace icr::adapters::fhir {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using icr::testing::Receiver;
using Json = nlohmann::json;
using v1::CareEvent;
using namespace std::chrono_literals;

constexpr char kTopic[] = "http://example.org/fhir/SubscriptionTopic/care-event";
constexpr char kLegalBasis[] = "UK GDPR 6(1)(e), 9(2)(h)";

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Pki {
 public:
  static const Pki& Get() {
    static Pki* pki = new Pki();  // lives to the end of the program
    return *pki;
  }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }

 private:
  Pki() {
    const std::string cmd = "bash '" + std::string(ICR_SOURCE_DIR) +
                            "/deploy/make-test-pki.sh' '" + dir_.path() +
                            "' hospital-epr:RKB cov-brokerage:COV01 icr-operator:QWU "
                            "stranger:RKB > '" + dir_.path() + "/make.log' 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "make-test-pki.sh failed: " << ReadText(dir_.path() + "/make.log");
    }
  }
  icr::testing::TempDir dir_;
};

// cov-brokerage receives Coventry placement requests only, without
// safeguarding detail; hospital-epr publishes and receives everything.
constexpr char kPolicy[] = R"yaml(
profiles:
  BROKERAGE:
    fields: [placement_request.request_id, placement_request.service_type,
             placement_request.place, placement_request.start_date,
             placement_request.needs, placement_request.contact]
    summary: [location, open_referral, care_package]
    sensitive: []
principals:
  - id: hospital-epr
    organisation: RKB
    role: EPR
    profile: FULL
    publish: { event_types: ["*"], source_organisations: [RKB] }
    subscribe: { event_types: ["*"] }
    purposes: [DIRECT_CARE]
  - id: cov-brokerage
    organisation: COV01
    role: BROKERAGE
    profile: BROKERAGE
    subscribe: { event_types: [PLACEMENT_REQUEST], places: [COVENTRY] }
    purposes: [DIRECT_CARE]
    legal_basis: "UK GDPR 6(1)(e), 9(2)(h)"
  - id: icr-operator
    organisation: QWU
    role: OPERATOR
    profile: FULL
    queries: [audit, subscriptions, status]
retention:
  default: 8y
  review: 30d
)yaml";

std::shared_ptr<grpc::Channel> ChannelFor(int port, const std::string& cn) {
  const Pki& pki = Pki::Get();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadText(pki.Path("ca.pem"));
  o.pem_cert_chain = ReadText(pki.Path(cn + ".pem"));
  o.pem_private_key = ReadText(pki.Path(cn + ".key"));
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::SslCredentials(o),
                                   args);
}

// One HTTPS request with the client certificate of `client`.
std::string Https(int port, const std::string& client, http::verb method,
                  const std::string& target, const std::string& body,
                  icr::testing::HttpReply* reply) {
  const Pki& pki = Pki::Get();
  asio::io_context io;
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(pki.Path("ca.pem"));
  ctx.set_verify_mode(ssl::verify_peer);
  ctx.use_certificate_chain_file(pki.Path(client + ".pem"));
  ctx.use_private_key_file(pki.Path(client + ".key"), ssl::context::pem);
  beast::ssl_stream<beast::tcp_stream> stream(io, ctx);
  SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
  stream.set_verify_callback(ssl::host_name_verification("localhost"));
  beast::error_code ec;
  beast::get_lowest_layer(stream).socket().connect(
      tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return "connect: " + ec.message();
  timeval tv{5, 0};
  setsockopt(beast::get_lowest_layer(stream).socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO,
             &tv, sizeof tv);
  stream.handshake(ssl::stream_base::client, ec);
  if (ec) return "handshake: " + ec.message();
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "localhost");
  req.set(http::field::content_type, "application/fhir+json");
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req, ec);
  if (ec) return "write: " + ec.message();
  beast::flat_buffer buffer;
  icr::testing::ReadHttpReply(stream, buffer, reply);
  return reply->error;
}

std::string SubscriptionJson(const std::string& id, const std::string& endpoint) {
  Json j = {{"resourceType", "Subscription"},
            {"id", id},
            {"status", "requested"},
            {"criteria", kTopic},
            {"channel",
             {{"type", "rest-hook"},
              {"endpoint", endpoint},
              {"payload", "application/fhir+json"},
              {"_payload",
               {{"extension",
                 Json::array({{{"url",
                                "http://hl7.org/fhir/uv/subscriptions-backport/"
                                "StructureDefinition/backport-payload-content"},
                               {"valueCode", "full-resource"}}})}}},
              {"extension",
               Json::array({{{"url",
                              "http://hl7.org/fhir/uv/subscriptions-backport/"
                              "StructureDefinition/backport-heartbeat-period"},
                             {"valueUnsignedInt", 0}},
                            {{"url",
                              "http://hl7.org/fhir/uv/subscriptions-backport/"
                              "StructureDefinition/backport-max-count"},
                             {"valuePositiveInt", 3}}})}}}};
  return j.dump();
}

std::string Base64Decode(const std::string& in) {
  static const std::string k =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t v = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    size_t d = k.find(c);
    if (d == std::string::npos) return "<bad base64>";
    v = (v << 6) | static_cast<uint32_t>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((v >> bits) & 0xff);
    }
  }
  return out;
}

// The events of every accepted event-notification, in order.
std::vector<CareEvent> NotifiedEvents(const std::vector<Receiver::Request>& requests) {
  std::vector<CareEvent> out;
  for (const auto& r : requests) {
    if (r.answered < 200 || r.answered >= 300 || !r.json.is_object()) continue;
    const Json& entries = r.json.at("entry");
    for (size_t i = 1; i < entries.size(); ++i) {
      CareEvent e;
      EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(
                      Base64Decode(entries[i].at("resource").at("data").get<std::string>()), &e)
                      .ok());
      out.push_back(e);
    }
  }
  return out;
}

CareEvent PlacementRequest(const std::string& nhs, const std::string& id, v1::Place place) {
  CareEvent e = icr::testing::AdmissionEvent(nhs, id);
  e.set_source_organisation("RKB");
  e.clear_admission();
  auto* r = e.mutable_placement_request();
  r->set_request_id("PR-" + id);
  r->set_service_type(v1::RESIDENTIAL);
  r->set_place(place);
  r->mutable_start_date()->set_year(2026);
  r->mutable_start_date()->set_month(12);
  r->mutable_start_date()->set_day(1);
  r->mutable_needs()->set_dementia(true);
  r->mutable_needs()->set_summary("Needs help with washing and dressing.");
  r->mutable_needs()->set_safeguarding_detail("Concern about financial abuse by a relative.");
  r->set_contact("Ward 33 ext 4471");
  return e;
}

class RestHookGovernanceTest : public ::testing::Test {
 protected:
  void StartBroker() {
    const Pki& pki = Pki::Get();
    WriteText(dir_.path() + "/policy.yaml", kPolicy);
    broker::BrokerOptions options = icr::testing::TestBrokerOptions(dir_.path() + "/data");
    options.tls.certificate_file = pki.Path("server.pem");
    options.tls.private_key_file = pki.Path("server.key");
    options.tls.client_ca_file = pki.Path("ca.pem");
    options.policy_file = dir_.path() + "/policy.yaml";
    options.escalation.enabled = false;
    options.shutdown_grace_ms = 500;
    store::Status s = broker::BrokerServer::Start(options, &broker_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void StartAdapters() {
    const Pki& pki = Pki::Get();
    RestHookOptions hook_options;
    hook_options.initial_backoff_ms = 50;
    hook_options.max_backoff_ms = 200;
    hook_options.heartbeat_unit_ms = 10;
    store::Status s = RestHookManager::Start(broker_->hub(), broker_->store(),
                                             broker_->ingest()->access(), hook_options, &hooks_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    FhirOptions o;
    o.listen = "127.0.0.1:0";
    o.read_timeout_ms = 5000;
    o.drain_timeout_ms = 2000;
    o.tls_certificate_file = pki.Path("server.pem");
    o.tls_private_key_file = pki.Path("server.key");
    o.tls_client_ca_file = pki.Path("ca.pem");
    o.resthooks = hooks_.get();
    s = FhirServer::Start(o, broker_->ingest(), &fhir_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void TearDown() override {
    if (fhir_) fhir_->Stop();
    if (hooks_) hooks_->Stop();
    if (broker_) broker_->Shutdown();
  }

  static void WriteText(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
  }

  icr::testing::HttpReply Request(const std::string& client, http::verb method,
                                  const std::string& target, const std::string& body = "") {
    icr::testing::HttpReply reply;
    std::string error = Https(fhir_->port(), client, method, target, body, &reply);
    EXPECT_EQ(error, "") << client << " " << target;
    return reply;
  }

  void Publish(std::vector<CareEvent> events) {
    auto stub = v1::Broker::NewStub(ChannelFor(broker_->port(), "hospital-epr"));
    v1::PublishBatchRequest req;
    for (auto& e : events) *req.add_events() = std::move(e);
    v1::PublishBatchResponse resp;
    auto ctx = icr::testing::Context();
    grpc::Status s = stub->PublishBatch(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  std::vector<v1::AuditRecord> WhoSaw(const std::string& nhs) {
    auto gov = v1::Governance::NewStub(ChannelFor(broker_->port(), "icr-operator"));
    v1::WhoSawRequest req;
    req.set_nhs_number(nhs);
    req.set_page_size(1000);
    v1::WhoSawResponse resp;
    auto ctx = icr::testing::Context();
    grpc::Status s = gov->WhoSaw(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.records().begin(), resp.records().end()};
  }

  icr::testing::TempDir dir_;
  Receiver receiver_;
  std::unique_ptr<broker::BrokerServer> broker_;
  std::unique_ptr<RestHookManager> hooks_;
  std::unique_ptr<FhirServer> fhir_;
};

TEST_F(RestHookGovernanceTest, OwnersScopeProfileAndAuditApplyToEveryDelivery) {
  StartBroker();
  StartAdapters();

  // Identified by its certificate: a CN the policy does not know is 401.
  icr::testing::HttpReply reply = Request("stranger", http::verb::post, "/fhir/r4/Subscription",
                                          SubscriptionJson("stranger-hook", receiver_.url()));
  EXPECT_EQ(reply.status, 401) << reply.body;
  EXPECT_NE(reply.body.find("\"code\":\"login\""), std::string::npos) << reply.body;
  RestHookSubscription def;
  EXPECT_EQ(hooks_->Get("stranger-hook", &def).code(), store::StatusCode::kNotFound);

  // cov-brokerage's rest-hook, every event type in its filter: the policy
  // narrows it.
  reply = Request("cov-brokerage", http::verb::post, "/fhir/r4/Subscription",
                  SubscriptionJson("cov-hook", receiver_.url()));
  ASSERT_EQ(reply.status, 201) << reply.body;
  ASSERT_TRUE(hooks_->Get("cov-hook", &def).ok());
  EXPECT_EQ(def.owner, "cov-brokerage");
  EXPECT_EQ(def.purpose, v1::DIRECT_CARE);
  EXPECT_EQ(def.legal_basis, kLegalBasis);

  // Another principal may not delete it (hospital-epr has no
  // "subscriptions" query); it stays.
  reply = Request("hospital-epr", http::verb::delete_, "/fhir/r4/Subscription/cov-hook");
  EXPECT_EQ(reply.status, 403) << reply.body;
  EXPECT_NE(reply.body.find("\"code\":\"forbidden\""), std::string::npos) << reply.body;
  EXPECT_NE(reply.body.find("belongs to principal 'cov-brokerage'"), std::string::npos)
      << reply.body;
  ASSERT_TRUE(hooks_->Get("cov-hook", &def).ok());

  // In scope: Coventry placement requests. Out of scope: other Places,
  // other event types. The last event is in scope, so once it has arrived
  // every earlier one has been decided (position order).
  const std::vector<std::string> nhs = {
      icr::testing::TestNhsNumber(1), icr::testing::TestNhsNumber(2),
      icr::testing::TestNhsNumber(3), icr::testing::TestNhsNumber(4)};
  std::vector<CareEvent> events = {
      PlacementRequest(nhs[0], "in-1", v1::COVENTRY),
      PlacementRequest(nhs[1], "out-place-1", v1::SOUTH_WARWICKSHIRE),
      icr::testing::AdmissionEvent(nhs[2], "out-type-1"),
      PlacementRequest(nhs[0], "in-2", v1::COVENTRY),
      PlacementRequest(nhs[3], "out-place-2", v1::WARWICKSHIRE_NORTH),
      PlacementRequest(nhs[1], "in-3", v1::COVENTRY),
      icr::testing::AdmissionEvent(nhs[3], "out-type-2"),
      PlacementRequest(nhs[0], "in-4", v1::COVENTRY),
  };
  for (auto& e : events) e.set_source_organisation("RKB");
  const uint64_t before = broker_->store()->LastPosition();
  Publish(events);
  std::map<uint64_t, std::string> in_scope;  // position -> NHS number
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].has_placement_request() &&
        events[i].placement_request().place() == v1::COVENTRY) {
      in_scope[before + 1 + i] = events[i].nhs_number();
    }
  }
  ASSERT_EQ(in_scope.size(), 4u);
  const uint64_t last = before + events.size();
  ASSERT_TRUE(receiver_.WaitFor(
      [&](const std::vector<Receiver::Request>& all) {
        for (const CareEvent& e : NotifiedEvents(all)) {
          if (e.position() == last) return true;
        }
        return false;
      },
      10s))
      << "the last (in-scope) event was not notified";

  // Exactly the in-scope events, each once, minimised.
  std::vector<CareEvent> got = NotifiedEvents(receiver_.requests());
  std::map<uint64_t, int> seen;
  for (const CareEvent& e : got) {
    ++seen[e.position()];
    EXPECT_TRUE(in_scope.count(e.position())) << "out of scope: " << e.ShortDebugString();
    ASSERT_TRUE(e.has_placement_request()) << e.ShortDebugString();
    EXPECT_TRUE(e.placement_request().needs().safeguarding_detail().empty())
        << "a BROKERAGE profile got safeguarding detail: " << e.ShortDebugString();
    EXPECT_TRUE(e.placement_request().needs().dementia()) << "the profile keeps needs";
    EXPECT_EQ(e.placement_request().contact(), "Ward 33 ext 4471");
  }
  for (const auto& [position, person] : in_scope) {
    EXPECT_EQ(seen[position], 1) << "position " << position;
  }

  // The audit trail: one DELIVERED fhir-resthook record entry per delivered
  // position, as cov-brokerage, and nothing for the events left out.
  std::map<uint64_t, int> audited;
  for (const std::string& person : nhs) {
    for (const v1::AuditRecord& r : WhoSaw(person)) {
      if (r.action() != v1::DELIVERED || r.channel() != "fhir-resthook") continue;
      EXPECT_EQ(r.principal(), "cov-brokerage");
      EXPECT_EQ(r.role(), "BROKERAGE");
      EXPECT_EQ(r.organisation(), "COV01");
      EXPECT_EQ(r.detail(), "rest-hook cov-hook");
      EXPECT_EQ(r.purpose(), v1::DIRECT_CARE);
      EXPECT_EQ(r.legal_basis(), kLegalBasis);
      EXPECT_EQ(r.nhs_number(), person);
      EXPECT_EQ(r.positions_size(), r.event_ids_size());
      for (uint64_t p : r.positions()) {
        ++audited[p];
        EXPECT_EQ(in_scope.count(p) ? in_scope.at(p) : "(out of scope)", person)
            << "position " << p;
      }
    }
  }
  EXPECT_EQ(audited.size(), in_scope.size());
  for (const auto& [position, person] : in_scope) {
    EXPECT_EQ(audited[position], 1) << "position " << position;
  }

  // The owner deletes it.
  reply = Request("cov-brokerage", http::verb::delete_, "/fhir/r4/Subscription/cov-hook");
  EXPECT_EQ(reply.status, 204) << reply.body;
  EXPECT_EQ(hooks_->Get("cov-hook", &def).code(), store::StatusCode::kNotFound);
}

TEST_F(RestHookGovernanceTest, AnOwnerNoLongerInThePolicyIsSentNothing) {
  StartBroker();
  StartAdapters();
  icr::testing::HttpReply reply = Request("cov-brokerage", http::verb::post,
                                          "/fhir/r4/Subscription",
                                          SubscriptionJson("cov-hook", receiver_.url()));
  ASSERT_EQ(reply.status, 201) << reply.body;
  // The policy loses cov-brokerage.
  std::string policy = kPolicy;
  const size_t from = policy.find("  - id: cov-brokerage");
  const size_t to = policy.find("  - id: icr-operator");
  policy.erase(from, to - from);
  WriteText(dir_.path() + "/policy.yaml", policy);
  ASSERT_TRUE(broker_->ReloadPolicy().ok());

  Publish({PlacementRequest(icr::testing::TestNhsNumber(5), "gone-1", v1::COVENTRY)});
  bool reported = false;
  for (int i = 0; i < 100 && !reported; ++i) {
    for (const RestHookStatus& st : hooks_->List()) {
      if (st.name == "cov-hook" && st.status == "error" &&
          st.last_error.find("not a principal of the policy") != std::string::npos) {
        reported = true;
      }
    }
    if (!reported) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(reported);
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(receiver_.requests().empty()) << receiver_.requests().front().body;
  for (const v1::AuditRecord& r : WhoSaw(icr::testing::TestNhsNumber(5))) {
    EXPECT_NE(r.channel(), "fhir-resthook") << r.ShortDebugString();
  }
}

TEST_F(RestHookGovernanceTest, ADefinitionWithoutAnOwnerIsNotResumedInProduction) {
  StartBroker();
  // As stored before rest-hooks had owners.
  Json j = {{"format", "icr-resthook-1"},
            {"name", "legacy"},
            {"endpoint", receiver_.url()},
            {"headers", Json::array()},
            {"filter", Json::object()},
            {"topic_url", kTopic},
            {"heartbeat_seconds", 0},
            {"max_attempts", 8},
            {"timeout_ms", 1000},
            {"max_events_per_notification", 1},
            {"content", "full-resource"},
            {"events_since_subscription_start", 0}};
  ASSERT_TRUE(broker_->store()->PutSubscription("resthook:legacy", "v1" + j.dump(), true).ok());
  StartAdapters();
  std::vector<RestHookStatus> all = hooks_->List();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].status, "off");
  EXPECT_NE(all[0].last_error.find("no owner"), std::string::npos) << all[0].last_error;
  Publish({PlacementRequest(icr::testing::TestNhsNumber(6), "legacy-1", v1::COVENTRY)});
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(receiver_.requests().empty());
  // An operator (the "subscriptions" query) may delete it.
  icr::testing::HttpReply reply =
      Request("icr-operator", http::verb::delete_, "/fhir/r4/Subscription/legacy");
  EXPECT_EQ(reply.status, 204) << reply.body;
}

}  // namespace
}  // namespace icr::adapters::fhir
