// Rest-hook subscriptions end to end: a real broker (RocksDB store, hub,
// gRPC service), the RestHookManager, and a real HTTP receiver
// (receiver.h). Clocks are shortened through RestHookOptions.
#include "adapters/fhir/resthook.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <future>

#include "broker/broker.h"
#include "broker/hub.h"
#include "broker/ingest.h"
#include "icr/v1/state.pb.h"
#include "tests/adapters/fhir_resthook/receiver.h"
#include "tests/support/test_support.h"

namespace icr::adapters::fhir {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::Receiver;
using icr::testing::ReferralEvent;
using icr::testing::TempDir;
using icr::testing::TestNhsNumber;
using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr char kTopic[] = "http://example.org/fhir/SubscriptionTopic/care-event";

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

// One notification Bundle, read the way a receiver would.
struct Notification {
  std::string type, status, subscription, topic;
  uint64_t events_since_start = 0;
  std::vector<uint64_t> event_numbers;
  std::vector<std::string> focus;
  std::vector<v1::CareEvent> events;  // decoded Binary payloads
};

Notification Read(const Json& bundle) {
  Notification n;
  EXPECT_EQ(bundle.value("resourceType", ""), "Bundle");
  EXPECT_EQ(bundle.value("type", ""), "history");
  const Json& entries = bundle.at("entry");
  const Json& params = entries.at(0).at("resource");
  EXPECT_EQ(params.value("resourceType", ""), "Parameters");
  EXPECT_EQ(params.at("meta").at("profile").at(0), kBackportStatusProfile);
  for (const Json& p : params.at("parameter")) {
    const std::string name = p.at("name");
    if (name == "subscription") n.subscription = p.at("valueReference").at("reference");
    if (name == "topic") n.topic = p.at("valueCanonical");
    if (name == "status") n.status = p.at("valueCode");
    if (name == "type") n.type = p.at("valueCode");
    if (name == "events-since-subscription-start") {
      n.events_since_start = std::stoull(p.at("valueString").get<std::string>());
    }
    if (name == "notification-event") {
      for (const Json& part : p.at("part")) {
        if (part.at("name") == "event-number") {
          n.event_numbers.push_back(std::stoull(part.at("valueString").get<std::string>()));
        }
        if (part.at("name") == "focus") n.focus.push_back(part.at("valueReference").at("reference"));
      }
    }
  }
  for (size_t i = 1; i < entries.size(); ++i) {
    const Json& r = entries[i].at("resource");
    EXPECT_EQ(r.value("resourceType", ""), "Binary");
    EXPECT_EQ(r.value("contentType", ""), "application/json");
    EXPECT_EQ(entries[i].value("fullUrl", ""), n.focus.at(i - 1));
    v1::CareEvent e;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(
                    Base64Decode(r.at("data").get<std::string>()), &e)
                    .ok());
    n.events.push_back(e);
  }
  return n;
}

std::vector<Notification> Notifications(const std::vector<Receiver::Request>& requests,
                                        const std::string& type = "event-notification") {
  std::vector<Notification> out;
  for (const auto& r : requests) {
    Notification n = Read(r.json);
    if (n.type == type) out.push_back(std::move(n));
  }
  return out;
}

class RestHookTest : public ::testing::Test {
 protected:
  void SetUp() override { StartBroker(); }

  void TearDown() override {
    if (manager_) manager_->Stop();
    manager_.reset();
    if (server_) server_->Shutdown();
  }

  void StartBroker() {
    broker::BrokerOptions options;
    options.data_dir = dir_.path();
    options.listen_address = "127.0.0.1:0";
    options.shutdown_grace_ms = 500;
    ASSERT_TRUE(broker::BrokerServer::Start(options, &server_).ok());
  }

  void StartManager() {
    ASSERT_TRUE(RestHookManager::Start(server_->hub(), server_->store(), options_, &manager_).ok());
  }

  RestHookSubscription Sub(const std::string& name) {
    RestHookSubscription sub;
    sub.name = name;
    sub.endpoint = receiver_.url();
    sub.topic_url = kTopic;
    sub.heartbeat_seconds = 0;
    sub.timeout_ms = 1000;
    sub.headers = {{"Authorization", "Bearer test-token"}};
    return sub;
  }

  uint64_t Publish(v1::CareEvent event) {
    std::promise<uint64_t> done;
    server_->ingest()->Publish({std::move(event)}, false,
                               [&](const store::Status& s, std::vector<store::AppendResult> r) {
                                 EXPECT_TRUE(s.ok()) << s.ToString();
                                 done.set_value(s.ok() ? r[0].position : 0);
                               });
    return done.get_future().get();
  }

  uint64_t Admission(int person) {
    return Publish(AdmissionEvent(TestNhsNumber(person), "adm-" + std::to_string(next_id_++)));
  }
  uint64_t Referral(int person) {
    return Publish(ReferralEvent(TestNhsNumber(person), "ref-" + std::to_string(next_id_++)));
  }

  std::vector<std::pair<uint64_t, std::string>> Parked(const std::string& name) {
    std::vector<std::pair<uint64_t, std::string>> parked;
    EXPECT_TRUE(server_->store()->ListParked(name, 100, &parked).ok());
    return parked;
  }

  RestHookStatus Status(const std::string& name) {
    for (auto& s : manager_->List()) {
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no rest-hook " << name;
    return {};
  }

  bool WaitForStatus(const std::string& name, const std::string& status,
                     std::chrono::milliseconds timeout = 5000ms) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (Status(name).status == status) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  TempDir dir_;
  Receiver receiver_;
  std::unique_ptr<broker::BrokerServer> server_;
  std::unique_ptr<RestHookManager> manager_;
  RestHookOptions options_ = [] {
    RestHookOptions o;
    o.initial_backoff_ms = 40;
    o.max_backoff_ms = 400;
    o.heartbeat_unit_ms = 1000;
    o.subscription_base_url = "http://icr.test/fhir/r4/";
    return o;
  }();
  int next_id_ = 0;
};

TEST_F(RestHookTest, NotifiesInPositionOrderWithEventNumbersAndTheEventAsBinary) {
  StartManager();
  ASSERT_TRUE(manager_->Create(Sub("ward-feed")).ok());
  std::vector<uint64_t> positions = {Admission(0), Admission(1), Admission(0), Referral(2),
                                     Admission(0)};
  ASSERT_TRUE(receiver_.WaitForAccepted(5));
  auto requests = receiver_.requests();
  ASSERT_EQ(requests.size(), 5u);
  auto notes = Notifications(requests);
  ASSERT_EQ(notes.size(), 5u);
  for (size_t i = 0; i < notes.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(notes[i].subscription, "http://icr.test/fhir/r4/Subscription/ward-feed");
    EXPECT_EQ(notes[i].topic, kTopic);
    EXPECT_EQ(notes[i].status, "active");
    EXPECT_EQ(notes[i].events_since_start, i + 1);
    ASSERT_EQ(notes[i].event_numbers, std::vector<uint64_t>{positions[i]});
    ASSERT_EQ(notes[i].events.size(), 1u);
    store::EventPtr stored;
    ASSERT_TRUE(server_->store()->Get(positions[i], &stored).ok());
    EXPECT_EQ(notes[i].events[0].SerializeAsString(), stored->event.SerializeAsString());
    EXPECT_EQ(notes[i].focus[0], "urn:uuid:" + stored->event.event_id());
    EXPECT_EQ(requests[i].target, "/fhir/notify");
    EXPECT_EQ(requests[i].Header("Content-Type"), "application/fhir+json");
    EXPECT_EQ(requests[i].Header("Authorization"), "Bearer test-token");
  }
  // The receiver has answered; the manager books the answer just after.
  auto until = std::chrono::steady_clock::now() + 2s;
  while (Status("ward-feed").cursor != positions.back() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  auto status = Status("ward-feed");
  EXPECT_EQ(status.cursor, positions.back());
  EXPECT_EQ(status.status, "active");
  EXPECT_EQ(status.events_since_subscription_start, 5u);
}

TEST_F(RestHookTest, DeliversOnlyWhatTheFilterMatchesAndBatchesUpToMaxCount) {
  // Events stored before the subscription: delivered from start_position.
  std::vector<uint64_t> referrals;
  Admission(0);
  referrals.push_back(Referral(1));
  Admission(2);
  referrals.push_back(Referral(3));
  referrals.push_back(Referral(4));
  Admission(5);
  referrals.push_back(Referral(6));
  StartManager();
  auto sub = Sub("hsct-referrals");
  sub.filter.add_event_types(v1::DISCHARGE_REFERRAL);
  auto* team = sub.filter.add_addressees();
  team->set_organisation("CCC");
  team->set_team_code("HSCT-UHCW");
  sub.max_events_per_notification = 3;
  sub.start_position = 1;
  ASSERT_TRUE(manager_->Create(sub).ok());
  ASSERT_TRUE(receiver_.WaitFor([](const auto& all) {
    size_t events = 0;
    for (const auto& r : all) events += Read(r.json).event_numbers.size();
    return events >= 4;
  }));
  std::this_thread::sleep_for(100ms);  // nothing more arrives
  auto notes = Notifications(receiver_.requests());
  std::vector<uint64_t> numbers;
  for (const auto& n : notes) {
    EXPECT_LE(n.event_numbers.size(), 3u);
    EXPECT_EQ(n.events.size(), n.event_numbers.size());
    for (const auto& e : n.events) EXPECT_EQ(e.event_type(), v1::DISCHARGE_REFERRAL);
    numbers.insert(numbers.end(), n.event_numbers.begin(), n.event_numbers.end());
  }
  EXPECT_EQ(numbers, referrals);
  EXPECT_EQ(notes.size(), 2u);  // 3 + 1
  EXPECT_EQ(notes.back().events_since_start, 4u);
}

TEST_F(RestHookTest, RetriesWithBackoffAfterFailuresWithoutLossOrReordering) {
  StartManager();
  ASSERT_TRUE(manager_->Create(Sub("retry")).ok());
  receiver_.FailNext(3);
  std::vector<uint64_t> positions = {Admission(0), Admission(0), Admission(1)};
  ASSERT_TRUE(receiver_.WaitForAccepted(3));
  auto requests = receiver_.requests();
  ASSERT_EQ(requests.size(), 6u);
  // Three failed POSTs of the first event, each later than the last by at
  // least the backoff (40, 80, 160 ms, less 20% jitter).
  std::vector<uint64_t> numbers;
  for (const auto& r : requests) numbers.push_back(Read(r.json).event_numbers.at(0));
  EXPECT_EQ(numbers, (std::vector<uint64_t>{positions[0], positions[0], positions[0],
                                            positions[0], positions[1], positions[2]}));
  EXPECT_GE(requests[1].at - requests[0].at, 32ms);
  EXPECT_GE(requests[2].at - requests[1].at, 64ms);
  EXPECT_GE(requests[3].at - requests[2].at, 128ms);
  // Retries say "error" (the subscription's status then); the success after
  // them and the rest say "active"; the count does not move on retries.
  EXPECT_EQ(Read(requests[0].json).status, "active");
  EXPECT_EQ(Read(requests[1].json).status, "error");
  EXPECT_EQ(Read(requests[3].json).status, "error");
  EXPECT_EQ(Read(requests[4].json).status, "active");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Read(requests[i].json).events_since_start, 1u);
  EXPECT_EQ(Read(requests[5].json).events_since_start, 3u);
  EXPECT_EQ(Status("retry").status, "active");
  EXPECT_TRUE(Parked("retry").empty());
}

TEST_F(RestHookTest, ShowsErrorWhileFailingAndActiveAfterRecovery) {
  StartManager();
  ASSERT_TRUE(manager_->Create(Sub("flaky")).ok());
  receiver_.FailAlways(true);
  uint64_t p = Admission(0);
  ASSERT_TRUE(WaitForStatus("flaky", "error"));
  auto status = Status("flaky");
  EXPECT_GE(status.failed_attempts, 1u);
  EXPECT_EQ(status.in_flight, 1u);
  EXPECT_NE(status.last_error.find("HTTP 500"), std::string::npos) << status.last_error;
  receiver_.FailAlways(false);
  ASSERT_TRUE(receiver_.WaitForAccepted(1));
  EXPECT_EQ(Read(receiver_.accepted()[0].json).event_numbers.at(0), p);
  ASSERT_TRUE(WaitForStatus("flaky", "active"));
}

TEST_F(RestHookTest, TimeoutsAndRefusedConnectionsAreFailuresToo) {
  StartManager();
  auto sub = Sub("slow");
  sub.timeout_ms = 200;
  ASSERT_TRUE(manager_->Create(sub).ok());
  receiver_.DelayNext(1, 600ms);
  uint64_t p1 = Admission(0);
  ASSERT_TRUE(receiver_.WaitForAccepted(1));
  auto requests = receiver_.requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_TRUE(requests[0].late);
  EXPECT_EQ(Read(receiver_.accepted()[0].json).event_numbers.at(0), p1);

  receiver_.Refuse();
  uint64_t p2 = Admission(1);
  ASSERT_TRUE(WaitForStatus("slow", "error"));
  std::string error = Status("slow").last_error;
  EXPECT_FALSE(error.empty());
  receiver_.Accept();
  ASSERT_TRUE(receiver_.WaitForAccepted(2));
  EXPECT_EQ(Read(receiver_.accepted()[1].json).event_numbers.at(0), p2);
  EXPECT_TRUE(Parked("slow").empty());
}

TEST_F(RestHookTest, ParksAfterMaxAttemptsAndTheNextEventFlows) {
  StartManager();
  auto sub = Sub("parking");
  sub.max_attempts = 3;
  ASSERT_TRUE(manager_->Create(sub).ok());
  receiver_.FailAlways(true);
  uint64_t doomed = Admission(0);
  uint64_t same_person = Admission(0);  // held behind the doomed one
  ASSERT_TRUE(receiver_.WaitFor([](const auto& all) { return all.size() >= 3; }));
  // Parked after the third failure, then the same person's next event goes.
  auto until = std::chrono::steady_clock::now() + 3s;
  while (Parked("parking").empty() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  auto parked = Parked("parking");
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].first, doomed);
  v1::internal::ParkedRecord record;
  ASSERT_TRUE(record.ParseFromString(parked[0].second));
  EXPECT_EQ(record.attempts(), 3u);

  receiver_.FailAlways(false);
  ASSERT_TRUE(receiver_.WaitForAccepted(1));
  auto requests = receiver_.requests();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Read(requests[i].json).event_numbers.at(0), doomed);
  auto delivered = Read(receiver_.accepted()[0].json);
  EXPECT_EQ(delivered.event_numbers.at(0), same_person);
  // The parked event counts: the receiver sees the count jump by 2 for one
  // event, so it knows one was given up on.
  EXPECT_EQ(delivered.events_since_start, 2u);
  ASSERT_TRUE(WaitForStatus("parking", "active"));

  // An operator's ReplayParked (gRPC) reaches the rest-hook through the hub.
  auto stub = v1::Broker::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::ReplayParkedRequest req;
  req.set_subscription("parking");
  v1::ReplayParkedResponse resp;
  ASSERT_TRUE(stub->ReplayParked(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.replayed(), 1u);
  ASSERT_TRUE(receiver_.WaitForAccepted(2));
  EXPECT_EQ(Read(receiver_.accepted()[1].json).event_numbers.at(0), doomed);
  until = std::chrono::steady_clock::now() + 2s;
  while (!Parked("parking").empty() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(Parked("parking").empty());
}

TEST_F(RestHookTest, HeartbeatsAfterSilenceCarryTheCountUnchanged) {
  options_.heartbeat_unit_ms = 50;  // heartbeat_seconds 3 -> 150 ms
  StartManager();
  auto sub = Sub("beat");
  sub.heartbeat_seconds = 3;
  ASSERT_TRUE(manager_->Create(sub).ok());
  ASSERT_TRUE(receiver_.WaitFor([](const auto& all) { return all.size() >= 2; }));
  auto beats = Notifications(receiver_.requests(), "heartbeat");
  ASSERT_GE(beats.size(), 2u);
  EXPECT_EQ(beats[0].events_since_start, 0u);
  EXPECT_TRUE(beats[0].event_numbers.empty());
  EXPECT_EQ(beats[0].status, "active");
  auto r = receiver_.requests();
  EXPECT_GE(r[1].at - r[0].at, 140ms);

  uint64_t p = Admission(0);
  ASSERT_TRUE(receiver_.WaitFor([](const auto& all) {
    bool event = false;
    for (const auto& r : all) {
      Notification n = Read(r.json);
      if (n.type == "event-notification") event = true;
      if (event && n.type == "heartbeat") return true;
    }
    return false;
  }));
  auto events = Notifications(receiver_.requests());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].event_numbers.at(0), p);
  EXPECT_EQ(Notifications(receiver_.requests(), "heartbeat").back().events_since_start, 1u);
}

TEST_F(RestHookTest, RestartResumesFromTheCursorAndRedeliversWhatWasNotAcknowledged) {
  options_.initial_backoff_ms = 5000;  // the failing event stays pending until Stop
  StartManager();
  auto sub = Sub("durable");
  sub.filter.add_event_types(v1::ADMISSION);
  ASSERT_TRUE(manager_->Create(sub).ok());
  uint64_t p1 = Admission(0), p2 = Admission(1);
  ASSERT_TRUE(receiver_.WaitForAccepted(2));
  receiver_.FailAlways(true);
  uint64_t p3 = Admission(2);
  ASSERT_TRUE(receiver_.WaitFor([](const auto& all) { return all.size() >= 3; }));
  ASSERT_TRUE(WaitForStatus("durable", "error"));
  manager_->Stop();
  manager_.reset();

  // A full broker restart over the same data directory.
  server_->Shutdown();
  server_.reset();
  StartBroker();
  std::string bytes;
  ASSERT_TRUE(server_->store()->GetSubscription("durable", &bytes).ok());
  v1::internal::SubscriptionState state;
  ASSERT_TRUE(state.ParseFromString(bytes));
  EXPECT_EQ(state.cursor(), p2);

  receiver_.FailAlways(false);
  uint64_t p4 = Referral(3);  // filtered out, after restart too
  uint64_t p5 = Admission(4);
  StartManager();
  RestHookSubscription loaded;
  ASSERT_TRUE(manager_->Get("durable", &loaded).ok());
  EXPECT_EQ(loaded.endpoint, sub.endpoint);
  EXPECT_EQ(loaded.headers, sub.headers);
  EXPECT_EQ(loaded.filter.event_types_size(), 1);
  ASSERT_TRUE(receiver_.WaitForAccepted(4));
  std::this_thread::sleep_for(100ms);
  std::vector<uint64_t> numbers;
  std::vector<uint64_t> counts;
  for (const auto& r : receiver_.accepted()) {
    auto n = Read(r.json);
    numbers.push_back(n.event_numbers.at(0));
    counts.push_back(n.events_since_start);
  }
  EXPECT_EQ(numbers, (std::vector<uint64_t>{p1, p2, p3, p5}));
  EXPECT_EQ(counts, (std::vector<uint64_t>{1, 2, 3, 4}));
  (void)p4;
}

TEST_F(RestHookTest, StopAbandonsAnInFlightPostWhichComesAgainAfterRestart) {
  StartManager();
  auto sub = Sub("inflight");
  sub.timeout_ms = 5000;
  ASSERT_TRUE(manager_->Create(sub).ok());
  receiver_.DelayNext(1, 3000ms);
  uint64_t p = Admission(0);
  ASSERT_TRUE(receiver_.WaitFor([](const auto& all) { return all.size() >= 1; }));
  auto t0 = std::chrono::steady_clock::now();
  manager_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1000ms);  // does not wait for the answer
  manager_.reset();
  StartManager();
  ASSERT_TRUE(receiver_.WaitForAccepted(1));
  auto n = Read(receiver_.accepted()[0].json);
  EXPECT_EQ(n.event_numbers.at(0), p);
  EXPECT_EQ(n.events_since_start, 1u);
}

TEST_F(RestHookTest, HoldsItsNameAgainstGrpcSubscribers) {
  StartManager();
  ASSERT_TRUE(manager_->Create(Sub("taken")).ok());
  auto stub = v1::Broker::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  std::string record;
  ASSERT_TRUE(server_->store()->GetSubscription("resthook:taken", &record).ok());
  for (const std::string name : {"taken", "resthook:taken"}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::SubscribeRequest req;
    req.set_subscription(name);
    auto reader = stub->Subscribe(&ctx, req);
    v1::SubscribeResponse resp;
    EXPECT_FALSE(reader->Read(&resp));
    grpc::Status s = reader->Finish();
    // The durable name: claimed by the rest-hook. The definition record: its
    // "resthook:" prefix is reserved, so it is refused before anything is
    // read or written.
    EXPECT_EQ(s.error_code(), name == "taken" ? grpc::StatusCode::FAILED_PRECONDITION
                                              : grpc::StatusCode::INVALID_ARGUMENT)
        << name << ": " << s.error_message();
    if (name != "taken") {
      EXPECT_NE(s.error_message().find("hold FHIR rest-hook definitions"), std::string::npos);
    }
  }
  std::string after;
  ASSERT_TRUE(server_->store()->GetSubscription("resthook:taken", &after).ok());
  EXPECT_EQ(after, record);
  {
    grpc::ClientContext ctx;
    v1::DeleteSubscriptionRequest req;
    req.set_subscription("taken");
    v1::DeleteSubscriptionResponse resp;
    EXPECT_EQ(stub->DeleteSubscription(&ctx, req, &resp).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    // Listed as a connected durable subscription; the definition record is
    // not mistaken for one.
    grpc::ClientContext ctx;
    v1::ListSubscriptionsResponse resp;
    ASSERT_TRUE(stub->ListSubscriptions(&ctx, v1::ListSubscriptionsRequest(), &resp).ok());
    ASSERT_EQ(resp.subscriptions_size(), 1);
    EXPECT_EQ(resp.subscriptions(0).name(), "taken");
    EXPECT_TRUE(resp.subscriptions(0).connected());
  }
  {
    // Acks over gRPC do not acknowledge rest-hook deliveries.
    grpc::ClientContext ctx;
    v1::AckRequest req;
    req.set_subscription("taken");
    req.add_positions(1);
    v1::AckResponse resp;
    ASSERT_TRUE(stub->Ack(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.unknown_positions_size(), 1);
  }
}

TEST_F(RestHookTest, CreateValidatesNamesTheFieldAndRefusesTakenNames) {
  StartManager();
  auto check = [&](RestHookSubscription sub, const std::string& prefix) {
    store::Status s = manager_->Create(sub);
    EXPECT_EQ(s.code(), store::StatusCode::kInvalidArgument) << prefix;
    EXPECT_EQ(s.message().rfind(prefix, 0), 0u) << s.message();
  };
  auto sub = Sub("x");
  sub.endpoint = "https://receiver.example/notify";
  check(sub, "endpoint: https is not supported");
  sub = Sub("x");
  sub.endpoint = "http://:80/notify";
  check(sub, "endpoint: has no host");
  sub = Sub("x");
  sub.endpoint = "http://host:99999/";
  check(sub, "endpoint: port");
  sub = Sub("bad name");
  check(sub, "name: ");
  sub = Sub("resthook:x");
  check(sub, "name: ");
  sub = Sub("x");
  sub.filter.add_nhs_numbers("9990000019");
  check(sub, "filter.nhs_numbers[0]: ");
  sub = Sub("x");
  sub.headers = {{"X-Evil", "a\r\nHost: other"}};
  check(sub, "headers[0]: value contains a control character");
  sub = Sub("x");
  sub.topic_url.clear();
  check(sub, "topic_url: is required");
  sub = Sub("x");
  sub.max_attempts = 0;
  check(sub, "max_attempts: ");
  sub = Sub("x");
  sub.timeout_ms = 10;
  check(sub, "timeout_ms: ");
  EXPECT_TRUE(manager_->List().empty());

  // A gRPC subscriber's durable subscription keeps its name.
  v1::internal::SubscriptionState state;
  state.set_name("grpc-team");
  ASSERT_TRUE(server_->store()->PutSubscription("grpc-team", state.SerializeAsString(), true).ok());
  EXPECT_EQ(manager_->Create(Sub("grpc-team")).code(), store::StatusCode::kFailedPrecondition);
  state.set_name("resthook:odd");  // a gRPC name that would collide with the record
  ASSERT_TRUE(
      server_->store()->PutSubscription("resthook:odd", state.SerializeAsString(), true).ok());
  EXPECT_EQ(manager_->Create(Sub("odd")).code(), store::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(manager_->Create(Sub("mine")).ok());
  EXPECT_EQ(manager_->Create(Sub("mine")).code(), store::StatusCode::kFailedPrecondition);

  // Delete removes the definition and the cursor; the name is free again.
  ASSERT_TRUE(manager_->Delete("mine").ok());
  std::string bytes;
  EXPECT_EQ(server_->store()->GetSubscription("mine", &bytes).code(),
            store::StatusCode::kNotFound);
  EXPECT_EQ(server_->store()->GetSubscription("resthook:mine", &bytes).code(),
            store::StatusCode::kNotFound);
  EXPECT_EQ(manager_->Delete("mine").code(), store::StatusCode::kNotFound);
  EXPECT_EQ(server_->hub()->FindDurable("mine"), nullptr);
  ASSERT_TRUE(manager_->Create(Sub("mine")).ok());
}

}  // namespace
}  // namespace icr::adapters::fhir
