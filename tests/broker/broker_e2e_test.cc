// End-to-end tests: a real broker over a real RocksDB directory, driven
// through real gRPC channels on loopback.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <thread>

#include "broker/service.h"
#include "broker/workflow_service.h"
#include "tests/support/test_support.h"

namespace icr {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::ReferralEvent;
using icr::testing::TempDir;
using icr::testing::TestBroker;
using icr::testing::TestNhsNumber;
using namespace std::chrono_literals;

using icr::testing::Context;

v1::PublishResponse MustPublish(v1::Broker::Stub* stub, const v1::CareEvent& e) {
  v1::PublishRequest req;
  *req.mutable_event() = e;
  v1::PublishResponse resp;
  auto ctx = Context();
  grpc::Status s = stub->Publish(ctx.get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  return resp;
}

// A subscriber stream read on the test thread.
struct Subscriber {
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader;

  Subscriber(v1::Broker::Stub* stub, const v1::SubscribeRequest& req,
             std::chrono::milliseconds timeout = 30s)
      : ctx(Context(timeout)) {
    reader = stub->Subscribe(ctx.get(), req);
  }
  // The next event (heartbeats skipped), or nullopt when the stream ends.
  std::optional<v1::SubscribeResponse> Next() {
    v1::SubscribeResponse r;
    while (reader->Read(&r)) {
      if (r.has_event()) return r;
    }
    return std::nullopt;
  }
  void Cancel() {
    ctx->TryCancel();
    v1::SubscribeResponse r;
    while (reader->Read(&r)) {
    }
    reader->Finish();
  }
};

v1::SubscribeRequest FromEarliest(const std::string& name = "") {
  v1::SubscribeRequest req;
  req.set_subscription(name);
  req.mutable_start()->set_earliest(true);
  return req;
}

uint64_t Ack(v1::Broker::Stub* stub, const std::string& name, std::vector<uint64_t> positions) {
  v1::AckRequest req;
  req.set_subscription(name);
  for (auto p : positions) req.add_positions(p);
  v1::AckResponse resp;
  auto ctx = Context();
  grpc::Status s = stub->Ack(ctx.get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.cursor();
}

uint64_t LastPosition(v1::Broker::Stub* stub) {
  v1::GetStatusResponse st;
  auto ctx = Context();
  EXPECT_TRUE(stub->GetStatus(ctx.get(), {}, &st).ok());
  return st.last_position();
}

TEST(BrokerE2ETest, PublishThenSubscribeFromEarliestAndLive) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  auto r1 = MustPublish(stub.get(), ReferralEvent(TestNhsNumber(0), "m1"));
  auto r2 = MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(1), "m2"));
  EXPECT_EQ(r1.position(), 1u);
  EXPECT_EQ(r2.position(), 2u);
  EXPECT_EQ(r1.event_id().size(), 36u);
  EXPECT_FALSE(r1.duplicate());

  Subscriber sub(stub.get(), FromEarliest());
  auto e1 = sub.Next();
  ASSERT_TRUE(e1);
  EXPECT_EQ(e1->event().position(), 1u);
  EXPECT_EQ(e1->event().event_id(), r1.event_id());
  EXPECT_EQ(e1->event().event_type(), v1::DISCHARGE_REFERRAL);
  EXPECT_EQ(e1->event().discharge_referral().referrer().team_code(), "WARD-33");
  EXPECT_EQ(e1->event().nhs_number(), TestNhsNumber(0));
  auto e2 = sub.Next();
  ASSERT_TRUE(e2);
  EXPECT_EQ(e2->event().position(), 2u);

  // Live: published after the subscriber caught up.
  auto r3 = MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(2), "m3"));
  auto e3 = sub.Next();
  ASSERT_TRUE(e3);
  EXPECT_EQ(e3->event().position(), r3.position());
  EXPECT_EQ(e3->event().source_message_id(), "m3");
  sub.Cancel();
}

TEST(BrokerE2ETest, FiltersSelectEvents) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  v1::SubscribeRequest req = FromEarliest();
  req.mutable_filter()->add_event_types(v1::DISCHARGE_REFERRAL);
  auto* addressee = req.mutable_filter()->add_addressees();
  addressee->set_organisation("CCC");
  MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(0), "a1"));
  MustPublish(stub.get(), ReferralEvent(TestNhsNumber(0), "r1"));
  auto other_team = ReferralEvent(TestNhsNumber(1), "r2");
  other_team.mutable_addressee()->set_organisation("WCC");
  MustPublish(stub.get(), other_team);
  MustPublish(stub.get(), ReferralEvent(TestNhsNumber(2), "r3"));
  Subscriber sub(stub.get(), req);
  auto a = sub.Next();
  auto b = sub.Next();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->event().source_message_id(), "r1");
  EXPECT_EQ(b->event().source_message_id(), "r3");
  sub.Cancel();
}

TEST(BrokerE2ETest, ResendReturnsOriginalPositionAndStoresNothingNew) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  auto first = MustPublish(stub.get(), ReferralEvent(TestNhsNumber(0), "msg-42"));
  MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(1), "other"));
  auto again = MustPublish(stub.get(), ReferralEvent(TestNhsNumber(0), "msg-42"));
  EXPECT_TRUE(again.duplicate());
  EXPECT_EQ(again.position(), first.position());
  EXPECT_EQ(again.event_id(), first.event_id());
  EXPECT_EQ(LastPosition(stub.get()), 2u);

  // The same message id from another source system is a different message.
  auto other_source = ReferralEvent(TestNhsNumber(0), "msg-42");
  other_source.set_source_system_id("geh-epr");
  other_source.mutable_discharge_referral()->set_referral_id("GEH-msg-42");
  auto third = MustPublish(stub.get(), other_source);
  EXPECT_FALSE(third.duplicate());
  EXPECT_EQ(third.position(), 3u);
}

TEST(BrokerE2ETest, BadInputIsRejectedWithFieldAndRuleAndNothingIsStored) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  Subscriber live(stub.get(), v1::SubscribeRequest{}, 3s);

  v1::PublishRequest req;
  *req.mutable_event() = ReferralEvent("9990000019", "bad-1");
  v1::PublishResponse resp;
  auto ctx = Context();
  grpc::Status s = stub->Publish(ctx.get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "event.nhs_number: fails the Modulus 11 check (check digit should be 8, got 9)");

  v1::PublishBatchRequest batch;
  *batch.add_events() = AdmissionEvent(TestNhsNumber(0), "b0");
  *batch.add_events() = AdmissionEvent(TestNhsNumber(1), "b1");
  auto bad = AdmissionEvent(TestNhsNumber(2), "b2");
  bad.mutable_admission()->clear_encounter_id();
  *batch.add_events() = bad;
  v1::PublishBatchResponse batch_resp;
  auto ctx2 = Context();
  s = stub->PublishBatch(ctx2.get(), batch, &batch_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "events[2].admission.encounter_id: is required (nothing in this batch was stored)");

  EXPECT_EQ(LastPosition(stub.get()), 0u);
  v1::GetPatientHistoryRequest hreq;
  hreq.set_nhs_number(TestNhsNumber(0));
  v1::GetPatientHistoryResponse hresp;
  auto ctx3 = Context();
  ASSERT_TRUE(stub->GetPatientHistory(ctx3.get(), hreq, &hresp).ok());
  EXPECT_EQ(hresp.events_size(), 0);
  // Nothing was delivered: the live stream ends at its deadline with no event.
  EXPECT_FALSE(live.Next());
}

// Hostile-client limits, each at the limit and one past it: calls open at
// once on one connection, and the request size.
TEST(BrokerE2ETest, AConnectionGetsAtMostItsStreamLimitAndRequestsAtMostTheSizeLimit) {
  TempDir dir;
  auto options = icr::testing::TestBrokerOptions(dir.path());
  options.max_streams_per_connection = 3;
  options.max_receive_message_bytes = 64 * 1024;
  TestBroker broker(options);
  // A channel with its own connection (channels share connections by default).
  auto own_connection = [&] {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(broker.address(), grpc::InsecureChannelCredentials(), args);
  };
  auto status_channel = own_connection();
  auto connected = [&] {
    auto other = v1::Broker::NewStub(status_channel);
    v1::GetStatusResponse status;
    auto ctx = Context();
    EXPECT_TRUE(other->GetStatus(ctx.get(), {}, &status).ok());
    return status.subscriptions_connected();
  };
  auto wait_connected = [&](uint32_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (connected() != n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    return connected();
  };

  // One connection: 3 streams open (the limit).
  auto stub = v1::Broker::NewStub(own_connection());
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>>> readers;
  v1::SubscribeRequest req;  // ephemeral, from now on
  for (int i = 0; i < 3; ++i) {
    contexts.push_back(Context(60s));
    readers.push_back(stub->Subscribe(contexts.back().get(), req));
  }
  ASSERT_EQ(wait_connected(3), 3u);
  // The fourth call on the same connection waits in the client; it never
  // reaches the broker before its deadline.
  {
    v1::GetStatusResponse status;
    auto ctx = Context(1500ms);
    grpc::Status s = stub->GetStatus(ctx.get(), {}, &status);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  }
  EXPECT_EQ(connected(), 3u);
  // When one stream ends, the connection takes a new call again.
  contexts[0]->TryCancel();
  v1::SubscribeResponse r;
  while (readers[0]->Read(&r)) {
  }
  readers[0]->Finish();
  {
    v1::GetStatusResponse status;
    auto ctx = Context(10s);
    EXPECT_TRUE(stub->GetStatus(ctx.get(), {}, &status).ok());
  }
  for (size_t i = 1; i < contexts.size(); ++i) {
    contexts[i]->TryCancel();
    while (readers[i]->Read(&r)) {
    }
    readers[i]->Finish();
  }

  // Request size: a PublishBatch of exactly 64 KiB is taken; one byte more
  // is refused by gRPC with RESOURCE_EXHAUSTED and nothing is stored.
  auto sized_batch = [](size_t bytes, const std::string& prefix) {
    v1::PublishBatchRequest batch;
    for (int i = 0; batch.ByteSizeLong() + 3000 < bytes; ++i) {
      *batch.add_events() = AdmissionEvent(TestNhsNumber(i), prefix + std::to_string(i));
    }
    auto* last = batch.add_events();
    *last = AdmissionEvent(TestNhsNumber(999), prefix + "last");
    last->mutable_admission()->set_admission_method("");
    // Pad one field until the request is exactly `bytes` long.
    std::string* pad = last->mutable_admission()->mutable_admission_method();
    while (batch.ByteSizeLong() < bytes) {
      pad->append(std::min<size_t>(bytes - batch.ByteSizeLong(), 100), 'x');
      // A length prefix that grows a byte can overshoot: step back.
      while (batch.ByteSizeLong() > bytes) pad->pop_back();
    }
    return batch;
  };
  const uint64_t before = [&] {
    v1::GetStatusResponse status;
    auto ctx = Context();
    EXPECT_TRUE(stub->GetStatus(ctx.get(), {}, &status).ok());
    return status.last_position();
  }();
  v1::PublishBatchRequest at_limit = sized_batch(64 * 1024, "size-ok-");
  ASSERT_EQ(at_limit.ByteSizeLong(), 64u * 1024);
  v1::PublishBatchResponse resp;
  {
    auto ctx = Context();
    grpc::Status s = stub->PublishBatch(ctx.get(), at_limit, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  v1::PublishBatchRequest past = sized_batch(64 * 1024 + 1, "size-over-");
  ASSERT_EQ(past.ByteSizeLong(), 64u * 1024 + 1);
  {
    auto ctx = Context();
    grpc::Status s = stub->PublishBatch(ctx.get(), past, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  }
  v1::GetStatusResponse status;
  auto ctx = Context();
  ASSERT_TRUE(stub->GetStatus(ctx.get(), {}, &status).ok());
  EXPECT_EQ(status.last_position(), before + static_cast<uint64_t>(at_limit.events_size()))
      << "the refused request stored something";
}

// Keepalive enforcement: a client may ping at most every
// min_client_ping_interval_ms while it has a call open. One that keeps to it
// keeps its connection; one that pings more often is sent GOAWAY
// (too_many_pings) after 5 strikes, and its open stream ends UNAVAILABLE.
// (gRPC's C++ client will not ping more than once a second, so the limit is
// 2 s here: the polite client pings every 2.5 s, the rude one every second.)
TEST(BrokerE2ETest, AClientPingingTooOftenIsDisconnectedAndOneKeepingTheLimitIsNot) {
  TempDir dir;
  auto options = icr::testing::TestBrokerOptions(dir.path());
  options.min_client_ping_interval_ms = 2000;
  TestBroker broker(options);
  // A subscriber stream (no heartbeats: data would reset the strikes) on a
  // connection of its own that pings every `ping_ms`, for `hold`: whether
  // it ended before, and how.
  auto hold_stream = [&](int ping_ms, std::chrono::milliseconds hold) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ping_ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // the client's own brake off
    args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, ping_ms);
    auto stub = v1::Broker::NewStub(
        grpc::CreateCustomChannel(broker.address(), grpc::InsecureChannelCredentials(), args));
    v1::SubscribeRequest req;
    req.set_heartbeat_ms(3600000);
    auto ctx = Context(hold + 10s);
    auto reader = stub->Subscribe(ctx.get(), req);
    std::promise<grpc::Status> ended;
    std::thread read([&] {
      v1::SubscribeResponse r;
      while (reader->Read(&r)) {
      }
      ended.set_value(reader->Finish());
    });
    auto done = ended.get_future();
    const bool ended_early = done.wait_for(hold) == std::future_status::ready;
    if (!ended_early) ctx->TryCancel();
    grpc::Status s = done.get();
    read.join();
    return std::make_pair(ended_early, s);
  };
  // The rude client needs 7 pings (6 strikes); on a loaded machine its
  // timer slips, so it gets up to 30 s.
  auto polite = std::async(std::launch::async, hold_stream, 2500, 9000ms);
  auto rude = std::async(std::launch::async, hold_stream, 1000, 30000ms);
  auto [polite_ended, polite_status] = polite.get();
  auto [rude_ended, rude_status] = rude.get();
  // Three pings 2.5 s apart: not disconnected.
  EXPECT_FALSE(polite_ended) << polite_status.error_code() << " " << polite_status.error_message();
  // A ping a second: strikes from the second ping on, GOAWAY after 5.
  ASSERT_TRUE(rude_ended) << "a client pinging every second was not disconnected";
  EXPECT_EQ(rude_status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << rude_status.error_message();
  // The broker serves everyone else as before.
  auto stub = broker.NewStub();
  v1::GetStatusResponse status;
  auto ctx = Context();
  EXPECT_TRUE(stub->GetStatus(ctx.get(), {}, &status).ok());
}

TEST(BrokerE2ETest, DurableCursorResumesAfterBrokerRestart) {
  TempDir dir;
  const std::string name = "ccc-brokerage";
  {
    TestBroker broker(dir.path());
    auto stub = broker.NewStub();
    for (int i = 0; i < 5; ++i) {
      MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(i), "m" + std::to_string(i)));
    }
    Subscriber sub(stub.get(), FromEarliest(name));
    std::vector<uint64_t> got;
    for (int i = 0; i < 5; ++i) {
      auto e = sub.Next();
      ASSERT_TRUE(e);
      got.push_back(e->event().position());
    }
    EXPECT_EQ(got, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
    EXPECT_EQ(Ack(stub.get(), name, {1, 2, 3}), 3u);
    sub.Cancel();
  }
  {
    TestBroker broker(dir.path());  // same data directory
    auto stub = broker.NewStub();
    EXPECT_EQ(LastPosition(stub.get()), 5u);
    MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(10), "m10"));
    // Start is ignored for an existing durable subscription: it resumes
    // after its cursor, redelivering what was never acknowledged.
    v1::SubscribeRequest req;
    req.set_subscription(name);
    Subscriber sub(stub.get(), req);
    std::vector<uint64_t> got;
    for (int i = 0; i < 3; ++i) {
      auto e = sub.Next();
      ASSERT_TRUE(e);
      got.push_back(e->event().position());
    }
    EXPECT_EQ(got, (std::vector<uint64_t>{4, 5, 6}));
    EXPECT_EQ(Ack(stub.get(), name, {4, 5, 6}), 6u);

    v1::ListSubscriptionsResponse list;
    auto ctx = Context();
    ASSERT_TRUE(stub->ListSubscriptions(ctx.get(), {}, &list).ok());
    ASSERT_EQ(list.subscriptions_size(), 1);
    EXPECT_EQ(list.subscriptions(0).cursor(), 6u);
    EXPECT_TRUE(list.subscriptions(0).connected());
    sub.Cancel();
  }
}

TEST(BrokerE2ETest, SecondStreamOnTheSameDurableSubscriptionIsRefused) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(0), "m0"));
  Subscriber first(stub.get(), FromEarliest("team-a"));
  ASSERT_TRUE(first.Next());
  v1::SubscribeRequest narrower = FromEarliest("team-a");
  narrower.mutable_filter()->add_event_types(v1::DISCHARGE_REFERRAL);
  Subscriber second(stub.get(), narrower);
  EXPECT_FALSE(second.Next());
  grpc::Status s = second.reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("already has a connected stream"), std::string::npos);
  // The refused request changed nothing of the connected subscription.
  v1::ListSubscriptionsResponse list;
  auto ctx = Context();
  ASSERT_TRUE(stub->ListSubscriptions(ctx.get(), {}, &list).ok());
  ASSERT_EQ(list.subscriptions_size(), 1);
  EXPECT_EQ(list.subscriptions(0).filter().event_types_size(), 0);
  first.Cancel();
}

TEST(BrokerE2ETest, UnacknowledgedEventsAreRedeliveredThenParkedAndReplayable) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  const std::string name = "slow-team";
  MustPublish(stub.get(), ReferralEvent(TestNhsNumber(0), "r0"));
  v1::SubscribeRequest req = FromEarliest(name);
  req.set_ack_timeout_ms(1000);
  req.set_max_attempts(2);
  Subscriber sub(stub.get(), req);
  auto d1 = sub.Next();
  ASSERT_TRUE(d1);
  EXPECT_EQ(d1->delivery_attempt(), 1u);
  auto d2 = sub.Next();  // after the ack timeout
  ASSERT_TRUE(d2);
  EXPECT_EQ(d2->event().position(), 1u);
  EXPECT_EQ(d2->delivery_attempt(), 2u);

  // After the second timeout it is parked and the cursor passes it.
  v1::ListParkedResponse parked;
  for (int i = 0; i < 50 && parked.parked_size() == 0; ++i) {
    std::this_thread::sleep_for(100ms);
    v1::ListParkedRequest lreq;
    lreq.set_subscription(name);
    auto ctx = Context();
    ASSERT_TRUE(stub->ListParked(ctx.get(), lreq, &parked).ok());
  }
  ASSERT_EQ(parked.parked_size(), 1);
  EXPECT_EQ(parked.parked(0).event().position(), 1u);
  EXPECT_EQ(parked.parked(0).attempts(), 2u);

  // A later event for the same person flows once the first is parked.
  MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(0), "a1"));
  auto d3 = sub.Next();
  ASSERT_TRUE(d3);
  EXPECT_EQ(d3->event().position(), 2u);
  EXPECT_EQ(Ack(stub.get(), name, {2}), 2u);

  v1::ReplayParkedRequest rreq;
  rreq.set_subscription(name);
  v1::ReplayParkedResponse rresp;
  auto ctx = Context();
  ASSERT_TRUE(stub->ReplayParked(ctx.get(), rreq, &rresp).ok());
  EXPECT_EQ(rresp.replayed(), 1u);
  auto d4 = sub.Next();
  ASSERT_TRUE(d4);
  EXPECT_EQ(d4->event().position(), 1u);
  EXPECT_EQ(d4->delivery_attempt(), 1u);
  Ack(stub.get(), name, {1});
  v1::ListParkedRequest lreq;
  lreq.set_subscription(name);
  auto ctx2 = Context();
  parked.Clear();
  ASSERT_TRUE(stub->ListParked(ctx2.get(), lreq, &parked).ok());
  EXPECT_EQ(parked.parked_size(), 0);
  sub.Cancel();
}

TEST(BrokerE2ETest, LaterEventsOfAPersonWaitForTheUnacknowledgedOne) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  const std::string alice = TestNhsNumber(0), bob = TestNhsNumber(1);
  MustPublish(stub.get(), AdmissionEvent(alice, "a1"));  // 1
  MustPublish(stub.get(), AdmissionEvent(alice, "a2"));  // 2
  MustPublish(stub.get(), AdmissionEvent(bob, "b1"));    // 3
  Subscriber sub(stub.get(), FromEarliest("ordered"));
  auto first = sub.Next();
  auto second = sub.Next();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->event().position(), 1u);
  EXPECT_EQ(second->event().position(), 3u);  // Bob's flows past Alice's held one
  EXPECT_EQ(Ack(stub.get(), "ordered", {3}), 0u);  // cursor stays below 1
  EXPECT_EQ(Ack(stub.get(), "ordered", {1}), 1u);
  auto third = sub.Next();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->event().position(), 2u);
  EXPECT_EQ(Ack(stub.get(), "ordered", {2}), 3u);
  sub.Cancel();
}

TEST(BrokerE2ETest, PerPatientOrderHoldsWithManyConcurrentPublishers) {
  TempDir dir;
  TestBroker broker(dir.path());
  constexpr int kThreads = 8, kPerThread = 150, kPatients = 20;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = broker.NewStub();
      for (int i = 0; i < kPerThread; ++i) {
        auto e = AdmissionEvent(TestNhsNumber((t * 7 + i) % kPatients),
                                "t" + std::to_string(t) + "-" + std::to_string(i));
        v1::PublishRequest req;
        *req.mutable_event() = e;
        v1::PublishResponse resp;
        auto ctx = Context();
        if (!stub->Publish(ctx.get(), req, &resp).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  auto stub = broker.NewStub();
  ASSERT_EQ(LastPosition(stub.get()), static_cast<uint64_t>(kThreads * kPerThread));

  // A durable subscriber acking as it goes sees each person's events in the
  // order of that person's stored history.
  Subscriber sub(stub.get(), FromEarliest("order-check"));
  std::map<std::string, std::vector<uint64_t>> seen;
  std::set<uint64_t> all;
  while (all.size() < static_cast<size_t>(kThreads * kPerThread)) {
    auto e = sub.Next();
    ASSERT_TRUE(e);
    seen[e->event().nhs_number()].push_back(e->event().position());
    all.insert(e->event().position());
    Ack(stub.get(), "order-check", {e->event().position()});
  }
  sub.Cancel();
  for (int p = 0; p < kPatients; ++p) {
    const std::string nhs = TestNhsNumber(p);
    std::vector<uint64_t> history;
    v1::GetPatientHistoryRequest req;
    req.set_nhs_number(nhs);
    req.set_page_size(1000);
    v1::GetPatientHistoryResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(stub->GetPatientHistory(ctx.get(), req, &resp).ok());
    for (const auto& e : resp.events()) history.push_back(e.position());
    EXPECT_TRUE(std::is_sorted(history.begin(), history.end()));
    EXPECT_EQ(seen[nhs], history) << nhs;
  }
}

TEST(BrokerE2ETest, PublishStreamAcknowledgesEachRequestInOrder) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  auto ctx = Context();
  auto stream = stub->PublishStream(ctx.get());
  v1::PublishStreamRequest req;
  req.set_request_id(1);
  for (int i = 0; i < 5; ++i) {
    *req.add_events() = AdmissionEvent(TestNhsNumber(i), "s" + std::to_string(i));
  }
  ASSERT_TRUE(stream->Write(req));
  req.Clear();
  req.set_request_id(2);
  *req.add_events() = AdmissionEvent("12345", "bad");
  ASSERT_TRUE(stream->Write(req));
  req.Clear();
  req.set_request_id(3);
  *req.add_events() = ReferralEvent(TestNhsNumber(0), "s0");  // a resend of request 1's first
  *req.add_events() = ReferralEvent(TestNhsNumber(0), "s9");
  ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();

  v1::PublishStreamResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.request_id(), 1u);
  EXPECT_EQ(resp.code(), 0);
  ASSERT_EQ(resp.results_size(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(resp.results(i).position(), static_cast<uint64_t>(i + 1));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.request_id(), 2u);
  EXPECT_EQ(resp.code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(resp.message(),
            "events[0].nhs_number: must be exactly 10 digits (got 5 characters)");
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.request_id(), 3u);
  ASSERT_EQ(resp.results_size(), 2);
  EXPECT_TRUE(resp.results(0).duplicate());
  EXPECT_EQ(resp.results(0).position(), 1u);
  EXPECT_EQ(resp.results(1).position(), 6u);
  EXPECT_FALSE(stream->Read(&resp));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(BrokerE2ETest, PatientHistoryPagesAndFilters) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  const std::string nhs = TestNhsNumber(3);
  v1::PublishBatchRequest batch;
  for (int i = 0; i < 250; ++i) {
    *batch.add_events() = i % 10 == 0 ? ReferralEvent(nhs, "h" + std::to_string(i))
                                       : AdmissionEvent(nhs, "h" + std::to_string(i));
    *batch.add_events() = AdmissionEvent(TestNhsNumber(4), "x" + std::to_string(i));
  }
  v1::PublishBatchResponse bresp;
  auto bctx = Context();
  ASSERT_TRUE(stub->PublishBatch(bctx.get(), batch, &bresp).ok());
  ASSERT_EQ(bresp.results_size(), 500);

  std::vector<uint64_t> positions;
  std::string token;
  int pages = 0;
  do {
    v1::GetPatientHistoryRequest req;
    req.set_nhs_number(nhs);
    req.set_page_size(100);
    req.set_page_token(token);
    v1::GetPatientHistoryResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(stub->GetPatientHistory(ctx.get(), req, &resp).ok());
    for (const auto& e : resp.events()) {
      EXPECT_EQ(e.nhs_number(), nhs);
      positions.push_back(e.position());
    }
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(positions.size(), 250u);
  EXPECT_EQ(pages, 3);
  EXPECT_TRUE(std::is_sorted(positions.begin(), positions.end()));

  v1::GetPatientHistoryRequest req;
  req.set_nhs_number(nhs);
  req.add_event_types(v1::DISCHARGE_REFERRAL);
  v1::GetPatientHistoryResponse resp;
  auto ctx = Context();
  ASSERT_TRUE(stub->GetPatientHistory(ctx.get(), req, &resp).ok());
  EXPECT_EQ(resp.events_size(), 25);
  EXPECT_EQ(resp.next_page_token(), "");
  // A page that is exactly full has no next page when nothing else matches.
  req.set_page_size(25);
  auto ctx_full = Context();
  ASSERT_TRUE(stub->GetPatientHistory(ctx_full.get(), req, &resp).ok());
  EXPECT_EQ(resp.events_size(), 25);
  EXPECT_EQ(resp.next_page_token(), "");
  req.set_page_size(24);
  auto ctx_more = Context();
  ASSERT_TRUE(stub->GetPatientHistory(ctx_more.get(), req, &resp).ok());
  EXPECT_NE(resp.next_page_token(), "");

  req.set_nhs_number("9990000019");
  auto ctx2 = Context();
  grpc::Status s = stub->GetPatientHistory(ctx2.get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "nhs_number: fails the Modulus 11 check (check digit should be 8, got 9)");
}

TEST(BrokerE2ETest, SubscribeFromTimeStartsAtTheFirstEventRecordedThen) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(0), "before"));
  std::this_thread::sleep_for(20ms);
  auto mark = std::chrono::system_clock::now().time_since_epoch();
  std::this_thread::sleep_for(20ms);
  auto after = MustPublish(stub.get(), AdmissionEvent(TestNhsNumber(0), "after"));
  v1::SubscribeRequest req;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(mark).count();
  req.mutable_start()->mutable_time()->set_seconds(us / 1000000);
  req.mutable_start()->mutable_time()->set_nanos((us % 1000000) * 1000);
  Subscriber sub(stub.get(), req);
  auto e = sub.Next();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->event().position(), after.position());
  sub.Cancel();
}

// BrokerService lists its methods by hand (several are raw); a method left
// out would silently be a synchronous one, served by no thread.
TEST(BrokerE2ETest, EveryBrokerAndWorkflowMethodUsesTheCallbackApi) {
  broker::BrokerService service{broker::ServiceConfig{}};
  EXPECT_FALSE(service.has_synchronous_methods());
  broker::WorkflowService workflow(nullptr);
  EXPECT_FALSE(workflow.has_synchronous_methods());
}

TEST(BrokerE2ETest, HealthServiceReportsServing) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto channel = grpc::CreateChannel(broker.address(), grpc::InsecureChannelCredentials());
  // grpc.health.v1.HealthCheckRequest{service: "icr.v1.Broker"}, hand-encoded
  // (Debian ships no C++ health client).
  const std::string service = "icr.v1.Broker";
  std::string request = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  grpc::ClientContext ctx;
  std::string response;
  grpc::Status status = icr::testing::GenericUnaryCall(channel, "/grpc.health.v1.Health/Check",
                                                       request, &ctx, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response, std::string("\x08\x01", 2));  // status: SERVING
}

}  // namespace
}  // namespace icr
