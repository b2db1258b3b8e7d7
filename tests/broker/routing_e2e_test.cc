// Latency-critical routing end to end: a real broker over a real RocksDB
// directory, real gRPC subscriber streams on loopback.
//  - An urgent discharge referral overtakes a backlog of bulk events.
//  - A subscriber that stops reading is cut off after the write timeout,
//    the others carry on, and it resumes from its cursor with nothing lost.
//  - A subscriber at the tail that falls behind (its follower queue
//    overflows) reads the log again and loses nothing.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <climits>
#include <map>
#include <mutex>
#include <chrono>
#include <set>
#include <thread>

#include "tests/support/test_support.h"

namespace icr {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::Context;
using icr::testing::ReferralEvent;
using icr::testing::TempDir;
using icr::testing::TestBroker;
using icr::testing::TestBrokerOptions;
using icr::testing::TestNhsNumber;
using namespace std::chrono_literals;

// Publishes `events` in batches of 500; returns their positions.
std::vector<uint64_t> PublishAll(v1::Broker::Stub* stub, const std::vector<v1::CareEvent>& events) {
  std::vector<uint64_t> positions;
  for (size_t i = 0; i < events.size(); i += 500) {
    v1::PublishBatchRequest req;
    for (size_t j = i; j < std::min(events.size(), i + 500); ++j) *req.add_events() = events[j];
    v1::PublishBatchResponse resp;
    auto ctx = Context(60s);
    grpc::Status s = stub->PublishBatch(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& r : resp.results()) positions.push_back(r.position());
  }
  return positions;
}

std::vector<v1::CareEvent> Admissions(int count, v1::Priority priority, int first_person = 0) {
  std::vector<v1::CareEvent> events;
  for (int i = 0; i < count; ++i) {
    auto e = AdmissionEvent(TestNhsNumber(first_person + i % 5000),
                            "adm-" + std::to_string(first_person) + "-" + std::to_string(i));
    e.set_priority(priority);
    events.push_back(std::move(e));
  }
  return events;
}

v1::GetStatusResponse Status(v1::Broker::Stub* stub) {
  v1::GetStatusResponse status;
  auto ctx = Context();
  EXPECT_TRUE(stub->GetStatus(ctx.get(), {}, &status).ok());
  return status;
}

void Ack(v1::Broker::Stub* stub, const std::string& name, const std::vector<uint64_t>& positions) {
  v1::AckRequest req;
  req.set_subscription(name);
  for (auto p : positions) req.add_positions(p);
  v1::AckResponse resp;
  auto ctx = Context();
  grpc::Status s = stub->Ack(ctx.get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// Opens a stream and reads its first message, retrying while the broker
// answers UNAVAILABLE (a consumer group being set up or closing), as clients
// do. False, with a test failure, on any other outcome.
bool ConnectRetrying(v1::Broker::Stub* stub, const v1::SubscribeRequest& req,
                     std::chrono::seconds timeout, std::unique_ptr<grpc::ClientContext>* ctx,
                     std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>>* reader,
                     v1::SubscribeResponse* first) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    *ctx = Context(timeout);
    *reader = stub->Subscribe(ctx->get(), req);
    if ((*reader)->Read(first)) return true;
    grpc::Status st = (*reader)->Finish();
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) {
      ADD_FAILURE() << "Subscribe: " << st.error_code() << " " << st.error_message();
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  ADD_FAILURE() << "Subscribe still UNAVAILABLE after 100 attempts";
  return false;
}

// Reads a durable subscription, acknowledging every `ack_every` events, until
// `count` distinct events arrived; returns them in delivery order.
std::vector<v1::CareEvent> ReadAndAck(v1::Broker::Stub* stub, const std::string& name,
                                      size_t count, uint32_t max_in_flight = 100,
                                      size_t ack_every = 50) {
  v1::SubscribeRequest req;
  req.set_subscription(name);
  req.mutable_start()->set_earliest(true);
  req.set_max_in_flight(max_in_flight);
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader;
  std::vector<v1::CareEvent> got;
  std::set<uint64_t> seen;
  std::vector<uint64_t> pending;
  v1::SubscribeResponse r;
  // A previous stream of the subscription may still be closing.
  if (!ConnectRetrying(stub, req, 120s, &ctx, &reader, &r)) return got;
  bool first = true;
  while (seen.size() < count && (first || reader->Read(&r))) {
    first = false;
    if (!r.has_event()) continue;
    if (seen.insert(r.event().position()).second) got.push_back(r.event());
    pending.push_back(r.event().position());
    if (pending.size() >= ack_every || seen.size() == count) {
      Ack(stub, name, pending);
      pending.clear();
    }
  }
  ctx->TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();
  return got;
}

TEST(RoutingE2ETest, UrgentReferralsOvertakeABulkBacklogAndKeepEachPersonsOrder) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  // A nightly bulk load: 20,000 events about 5,000 people (0..4999).
  auto bulk = PublishAll(stub.get(), Admissions(20000, v1::BULK));
  ASSERT_EQ(bulk.size(), 20000u);
  // Then two urgent referrals: one about a new person, one about person 17,
  // whose bulk admissions sit deep in the backlog.
  auto fresh = ReferralEvent(TestNhsNumber(9000), "ref-fresh");
  auto known = ReferralEvent(TestNhsNumber(17), "ref-known");
  auto urgent = PublishAll(stub.get(), {fresh, known});
  ASSERT_EQ(urgent.size(), 2u);

  // The discharge team subscribes from the beginning, 100 in flight, and
  // acknowledges every 5 events.
  auto got = ReadAndAck(stub.get(), "discharge-team", 20002, 100, 5);
  ASSERT_EQ(got.size(), 20002u) << "every event delivered exactly once";
  // Person 17's earlier events, then its referral, come first (urgent lane;
  // the person's order kept), the new person's referral right after.
  std::vector<uint64_t> person17;
  for (uint64_t p = 1; p <= 20000; ++p) {
    if ((p - 1) % 5000 == 17) person17.push_back(p);
  }
  ASSERT_EQ(person17.size(), 4u);
  size_t index_known = 0, index_fresh = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].position() == urgent[1]) index_known = i;
    if (got[i].position() == urgent[0]) index_fresh = i;
  }
  EXPECT_LT(index_fresh, 10u) << "the urgent referral waited behind the backlog";
  // Person 17's referral follows its 4 earlier events, each sent when the
  // one before was acknowledged (one in flight per person), so behind at
  // most a window (100) of events already in flight each time: far ahead of
  // the 20,000 of the backlog.
  EXPECT_LT(index_known, 5u * 100u) << "the urgent referral waited behind the backlog";
  // Person 17: store order, whatever the lane.
  std::vector<uint64_t> order17;
  for (const auto& e : got) {
    if (e.nhs_number() == TestNhsNumber(17)) order17.push_back(e.position());
  }
  std::vector<uint64_t> want17 = person17;
  want17.push_back(urgent[1]);
  EXPECT_EQ(order17, want17);

  // Everything acknowledged: the cursor passed the events acknowledged
  // ahead of it too.
  auto status = Status(stub.get());
  v1::ListSubscriptionsResponse subs;
  {
    auto ctx = Context();
    ASSERT_TRUE(stub->ListSubscriptions(ctx.get(), {}, &subs).ok());
  }
  ASSERT_EQ(subs.subscriptions_size(), 1);
  EXPECT_EQ(subs.subscriptions(0).cursor(), status.last_position());
  EXPECT_EQ(subs.subscriptions(0).lag(), 0u);
}

TEST(RoutingE2ETest, ASubscriberThatStopsReadingIsCutOffAndResumesWithNothingLost) {
  TempDir dir;
  auto options = TestBrokerOptions(dir.path());
  options.subscriber_write_timeout_ms = 1000;
  TestBroker broker(options);
  auto stub = broker.NewStub();

  // The slow subscriber opens its stream and never reads.
  v1::SubscribeRequest slow_req;
  slow_req.set_subscription("slow-team");
  slow_req.mutable_start()->set_earliest(true);
  slow_req.set_max_in_flight(10000);
  auto slow_ctx = Context(120s);
  auto slow = stub->Subscribe(slow_ctx.get(), slow_req);

  // Meanwhile a healthy subscriber reads everything: 12,000 referrals of
  // about 4 KB, more than the slow one's window (10,000) lets the transport
  // buffer, so its stream blocks.
  constexpr size_t kEvents = 12000;
  std::atomic<size_t> fast_count{0};
  std::thread fast([&] {
    auto fast_stub = broker.NewStub();
    fast_count = ReadAndAck(fast_stub.get(), "fast-team", kEvents, 1000).size();
  });
  std::vector<v1::CareEvent> referrals;
  for (size_t i = 0; i < kEvents; ++i) {
    auto e = ReferralEvent(TestNhsNumber(i), "big-" + std::to_string(i));
    std::string needs;
    while (needs.size() < 3900) needs += "Needs help washing, dressing and with meals. ";
    e.mutable_discharge_referral()->mutable_needs()->set_summary(needs);
    referrals.push_back(std::move(e));
  }
  auto positions = PublishAll(stub.get(), referrals);
  ASSERT_EQ(positions.size(), kEvents);
  fast.join();
  EXPECT_EQ(fast_count.load(), kEvents) << "the healthy subscriber was held up";

  // The slow one is cut off within the timeout (plus a tick).
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (Status(stub.get()).subscribers_cut_off() == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(Status(stub.get()).subscribers_cut_off(), 1u);
  // What reached its buffers before the cut-off can still be read; then the
  // stream ends.
  v1::SubscribeResponse r;
  size_t buffered = 0;
  while (slow->Read(&r)) buffered += r.has_event() ? 1 : 0;
  EXPECT_LT(buffered, kEvents);
  EXPECT_FALSE(slow->Finish().ok());

  // It reconnects and gets everything it never acknowledged: all of it.
  auto again = ReadAndAck(stub.get(), "slow-team", kEvents, 1000);
  std::set<uint64_t> got;
  for (const auto& e : again) got.insert(e.position());
  ASSERT_EQ(got.size(), kEvents);
  EXPECT_EQ(*got.begin(), positions.front());
  EXPECT_EQ(*got.rbegin(), positions.back());
}

TEST(RoutingE2ETest, ASubscriberThatFallsBehindAtTheTailReadsTheLogAndLosesNothing) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  v1::SubscribeRequest req;  // ephemeral, from now on
  auto ctx = Context(120s);
  auto reader = stub->Subscribe(ctx.get(), req);
  // Wait until it follows the tail (matched through the routing index).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (Status(stub.get()).subscriptions_following() == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(Status(stub.get()).subscriptions_following(), 1u);

  // 20,000 events while it does not read: far more than its tail queue
  // (1,024) and the transport's buffers hold.
  constexpr size_t kEvents = 20000;
  auto positions = PublishAll(stub.get(), Admissions(kEvents, v1::ROUTINE));
  ASSERT_EQ(positions.size(), kEvents);

  // Now it reads: every event, in position order (one lane), none twice.
  v1::SubscribeResponse r;
  uint64_t expected = positions.front();
  size_t count = 0;
  while (count < kEvents && reader->Read(&r)) {
    if (!r.has_event()) continue;
    ASSERT_EQ(r.event().position(), expected);
    ++expected;
    ++count;
  }
  EXPECT_EQ(count, kEvents);
  // Caught up, it follows the tail again.
  deadline = std::chrono::steady_clock::now() + 10s;
  while (Status(stub.get()).subscriptions_following() == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(Status(stub.get()).subscriptions_following(), 1u);
  ctx->TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();
}

TEST(RoutingE2ETest, BatchedDeliveryPacksWhatIsReadyAndLosesNothing) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  // Refused: out of range, and with summaries.
  for (auto [max_batch, summaries] : {std::pair{1001u, false}, std::pair{8u, true}}) {
    v1::SubscribeRequest bad;
    bad.set_max_batch(max_batch);
    bad.set_summary_changes(summaries);
    auto ctx = Context();
    auto reader = stub->Subscribe(ctx.get(), bad);
    v1::SubscribeResponse r;
    EXPECT_FALSE(reader->Read(&r));
    grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("max_batch"), std::string::npos) << st.error_message();
  }

  // A backlog of 3,000 events, a third of them referrals of about 4 KB,
  // read by a durable subscriber in batches of up to 1,000 that acknowledges
  // each batch.
  constexpr size_t kEvents = 3000;
  auto events = Admissions(kEvents, v1::ROUTINE);
  std::string needs;
  while (needs.size() < 3900) needs += "Needs help washing, dressing and with meals. ";
  for (size_t i = 1000; i < 2000; ++i) {
    events[i] = ReferralEvent(TestNhsNumber(i % 5000), "big-" + std::to_string(i));
    events[i].mutable_discharge_referral()->mutable_needs()->set_summary(needs);
  }
  auto positions = PublishAll(stub.get(), events);
  ASSERT_EQ(positions.size(), kEvents);

  v1::SubscribeRequest req;
  req.set_subscription("batched");
  req.mutable_start()->set_earliest(true);
  req.set_position_order(true);
  req.set_max_batch(1000);
  req.set_max_in_flight(10000);
  auto ctx = Context(60s);
  auto reader = stub->Subscribe(ctx.get(), req);
  v1::SubscribeResponse r;
  uint64_t expected = positions.front();
  size_t count = 0, messages = 0, largest = 0, cut_by_size = 0;
  while (count < kEvents && reader->Read(&r)) {
    if (r.has_heartbeat()) continue;
    ASSERT_TRUE(r.has_batch()) << "with max_batch set, events come in batches";
    ++messages;
    ASSERT_GE(r.batch().events_size(), 1);
    ASSERT_LE(r.batch().events_size(), 1000);
    ASSERT_LE(r.ByteSizeLong(), (1u << 20) + 64 * 1024) << "a batch past the size limit";
    if (r.ByteSizeLong() > 900 * 1024) ++cut_by_size;
    largest = std::max<size_t>(largest, r.batch().events_size());
    std::vector<uint64_t> acks;
    for (const auto& b : r.batch().events()) {
      ASSERT_EQ(b.event().position(), expected) << "a gap or a duplicate";
      EXPECT_EQ(b.delivery_attempt(), 1u);
      EXPECT_EQ(b.event().source_message_id(),
                events[expected - positions.front()].source_message_id());
      acks.push_back(b.event().position());
      ++expected;
      ++count;
    }
    Ack(stub.get(), "batched", acks);
  }
  EXPECT_EQ(count, kEvents);
  EXPECT_GE(largest, 100u) << "a backlog fills batches";
  EXPECT_GE(cut_by_size, 2u) << "4 MB of referrals must be split at the size limit";
  EXPECT_LT(messages, kEvents / 10);
  ctx->TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();

  // At the tail, an event is sent at once, alone (nothing waits for a batch).
  v1::SubscribeRequest tail;
  tail.set_max_batch(1000);
  // The durable stream just closed may still be counted as following.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (Status(stub.get()).subscriptions_following() != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ctx = Context(30s);
  reader = stub->Subscribe(ctx.get(), tail);
  deadline = std::chrono::steady_clock::now() + 10s;
  while (Status(stub.get()).subscriptions_following() == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(Status(stub.get()).subscriptions_following(), 1u);
  auto one = PublishAll(stub.get(), Admissions(1, v1::URGENT, 7000));
  ASSERT_EQ(one.size(), 1u);
  do {
    ASSERT_TRUE(reader->Read(&r));
  } while (r.has_heartbeat());
  ASSERT_EQ(r.batch().events_size(), 1);
  EXPECT_EQ(r.batch().events(0).event().position(), one.front());
  ctx->TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();
}

TEST(RoutingE2ETest, AConsumerGroupSharesTheWorkKeepsEachPersonsOrderAndSurvivesAMemberLeaving) {
  TempDir dir;
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  // 3,000 events about 300 people, 10 each.
  std::vector<v1::CareEvent> events;
  for (int i = 0; i < 3000; ++i) {
    events.push_back(AdmissionEvent(TestNhsNumber(i % 300), "grp-" + std::to_string(i)));
  }
  auto positions = PublishAll(stub.get(), events);
  ASSERT_EQ(positions.size(), 3000u);

  std::mutex mu;
  std::vector<std::pair<uint64_t, std::string>> log;  // (position, NHS number), as received
  std::set<uint64_t> acked;
  std::map<int, size_t> received_by;
  std::map<int, grpc::ClientContext*> contexts_in_use;
  auto member = [&](int index, size_t leave_after) {
    auto member_stub = broker.NewStub();
    v1::SubscribeRequest req;
    req.set_subscription("brokerage-workers");
    req.set_group(true);
    req.mutable_start()->set_earliest(true);
    req.set_max_in_flight(60);
    v1::SubscribeResponse r;
    // Members starting together: all but the first may be told UNAVAILABLE
    // while the first sets the subscription up.
    std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader;
    std::unique_ptr<grpc::ClientContext> attempt_ctx;
    if (!ConnectRetrying(member_stub.get(), req, 120s, &attempt_ctx, &reader, &r)) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      contexts_in_use[index] = attempt_ctx.get();
    }
    size_t count = 0;
    bool first = true;
    while (first || reader->Read(&r)) {
      first = false;
      if (!r.has_event()) continue;
      {
        std::lock_guard<std::mutex> lock(mu);
        log.emplace_back(r.event().position(), r.event().nhs_number());
        ++received_by[index];
      }
      if (++count == leave_after) break;  // leaves without acknowledging this one
      Ack(member_stub.get(), "brokerage-workers", {r.event().position()});
      std::lock_guard<std::mutex> lock(mu);
      acked.insert(r.event().position());
      if (acked.size() == positions.size()) break;
    }
    attempt_ctx->TryCancel();
    while (reader->Read(&r)) {
    }
    reader->Finish();
    std::lock_guard<std::mutex> lock(mu);
    contexts_in_use.erase(index);
  };
  // Member 2 leaves after 150 events, with its last one unacknowledged.
  std::thread m0(member, 0, SIZE_MAX);
  std::thread m1(member, 1, SIZE_MAX);
  std::thread m2(member, 2, 150);
  m2.join();
  auto deadline = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (acked.size() == positions.size()) break;
    }
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the group did not finish the work";
    std::this_thread::sleep_for(20ms);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [i, c] : contexts_in_use) c->TryCancel();
  }
  m0.join();
  m1.join();

  // The work was shared, and the leaver's unacknowledged event went to
  // another member.
  EXPECT_GT(received_by[0], 0u);
  EXPECT_GT(received_by[1], 0u);
  EXPECT_EQ(received_by[2], 150u);
  EXPECT_EQ(acked.size(), 3000u);
  // Per person: never a later event before an earlier one (a repeat of the
  // same position after the member left is allowed).
  std::map<std::string, uint64_t> last;
  for (const auto& [position, nhs] : log) {
    EXPECT_GE(position, last[nhs]) << "person " << nhs << " out of order";
    last[nhs] = position;
  }
  // Nothing left over: the group's cursor is at the end.
  v1::ListSubscriptionsResponse subs;
  auto ctx = Context();
  ASSERT_TRUE(stub->ListSubscriptions(ctx.get(), {}, &subs).ok());
  ASSERT_EQ(subs.subscriptions_size(), 1);
  EXPECT_EQ(subs.subscriptions(0).cursor(), positions.back());

  // A second group stream with another filter, or a plain stream, is refused
  // while the group is connected.
  v1::SubscribeRequest req;
  req.set_subscription("brokerage-workers");
  req.set_group(true);
  req.set_heartbeat_ms(100);  // its first heartbeat says it is connected
  std::unique_ptr<grpc::ClientContext> holder_ctx;
  std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> holder;
  v1::SubscribeResponse r;
  // The members' streams may still be closing.
  ASSERT_TRUE(ConnectRetrying(stub.get(), req, 30s, &holder_ctx, &holder, &r));
  {
    auto plain_ctx = Context();
    v1::SubscribeRequest plain;
    plain.set_subscription("brokerage-workers");
    auto reader = stub->Subscribe(plain_ctx.get(), plain);
    while (reader->Read(&r)) {
    }
    grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(st.error_message().find("group"), std::string::npos) << st.error_message();
  }
  {
    auto other_ctx = Context();
    v1::SubscribeRequest other = req;
    other.mutable_filter()->add_event_types(v1::DISCHARGE);
    auto reader = stub->Subscribe(other_ctx.get(), other);
    while (reader->Read(&r)) {
    }
    grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(st.error_message().find("same filter"), std::string::npos) << st.error_message();
  }
  holder_ctx->TryCancel();
  while (holder->Read(&r)) {
  }
  holder->Finish();
}

}  // namespace
}  // namespace icr
