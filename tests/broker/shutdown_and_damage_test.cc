// What happens at the edges of a broker's life, through the real binary or a
// real in-process broker on real RocksDB directories:
// - SIGTERM under load drains in-flight publishes and acknowledgements,
//   closes subscriber streams with a status they resume from, and exits 0;
// - a write-ahead log damaged before its end stops the broker from starting
//   until the operator accepts the loss (--accept-wal-damage);
// - a subscription cursor past the end of the log is moved back (new events
//   are not skipped); an unreadable cursor is DATA_LOSS with the next step.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "icr/v1/state.pb.h"
#include "store/store.h"
#include "tests/support/broker_process.h"
#include "tests/support/test_support.h"

#ifndef ICR_BROKER_BINARY
#error "ICR_BROKER_BINARY must name the icr-broker executable"
#endif

namespace icr {
namespace {

namespace fs = std::filesystem;
using icr::testing::AdmissionEvent;
using icr::testing::BrokerProcess;
using icr::testing::Context;
using icr::testing::RunProgram;
using icr::testing::TempDir;
using icr::testing::TestBroker;
using icr::testing::TestNhsNumber;
using namespace std::chrono_literals;

std::unique_ptr<v1::Broker::Stub> StubFor(const std::string& address) {
  return v1::Broker::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

v1::GetStatusResponse GetStatus(v1::Broker::Stub* stub) {
  v1::GetStatusResponse status;
  auto ctx = Context();
  EXPECT_TRUE(stub->GetStatus(ctx.get(), {}, &status).ok());
  return status;
}

uint64_t PublishOne(v1::Broker::Stub* stub, const v1::CareEvent& e) {
  v1::PublishRequest req;
  *req.mutable_event() = e;
  v1::PublishResponse resp;
  auto ctx = Context();
  grpc::Status s = stub->Publish(ctx.get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return s.ok() ? resp.position() : 0;
}

// The whole log in position order: position -> source message id.
std::map<uint64_t, std::string> ReadLog(v1::Broker::Stub* stub) {
  const uint64_t last = GetStatus(stub).last_position();
  std::map<uint64_t, std::string> log;
  if (last == 0) return log;
  v1::SubscribeRequest req;
  req.mutable_start()->set_earliest(true);
  req.set_position_order(true);
  auto ctx = Context(60s);
  auto reader = stub->Subscribe(ctx.get(), req);
  v1::SubscribeResponse r;
  while (log.size() < last && reader->Read(&r)) {
    if (r.has_event()) log[r.event().position()] = r.event().source_message_id();
  }
  ctx->TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();
  return log;
}

std::string LargestWal(const std::string& db) {
  std::string wal;
  for (const auto& entry : fs::directory_iterator(db)) {
    const std::string name = entry.path().string();
    if (name.size() < 4 || name.substr(name.size() - 4) != ".log") continue;
    if (wal.empty() || fs::file_size(name) > fs::file_size(wal)) wal = name;
  }
  return wal;
}

TEST(ShutdownTest, SigtermDrainsPublishesAndAcksAndClosesStreamsSoTheyResume) {
  TempDir dir;
  const std::string db = dir.path() + "/db";
  auto broker = std::make_unique<BrokerProcess>(ICR_BROKER_BINARY, db,
                                                dir.path() + "/broker.log");
  const std::string address = broker->address();

  std::mutex mu;
  std::map<uint64_t, std::string> published;            // acknowledged: position -> message
  std::map<std::string, int> publish_failures;          // "CODE: message" -> count
  std::vector<v1::CareEvent> unanswered;                // cancelled: outcome unknown
  std::atomic<bool> stop{false};
  std::atomic<int64_t> sequence{0};
  std::vector<std::thread> publishers;
  for (int t = 0; t < 4; ++t) {
    publishers.emplace_back([&] {
      auto stub = StubFor(address);
      while (!stop) {
        const int64_t n = sequence++;
        v1::PublishRequest req;
        *req.mutable_event() = AdmissionEvent(TestNhsNumber(n % 41), "term-" + std::to_string(n));
        v1::PublishResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + 10s);
        grpc::Status s = stub->Publish(&ctx, req, &resp);
        std::lock_guard<std::mutex> lock(mu);
        if (s.ok()) {
          published[resp.position()] = req.event().source_message_id();
        } else {
          ++publish_failures[std::to_string(s.error_code()) + ": " + s.error_message()];
          if (s.error_code() == grpc::StatusCode::CANCELLED) unanswered.push_back(req.event());
          if (stop) break;
        }
        if (!s.ok()) std::this_thread::sleep_for(10ms);
      }
    });
  }

  // A durable subscriber reading and acknowledging as it goes.
  std::set<uint64_t> received;
  uint64_t acked_cursor = 0;  // the cursor the last successful Ack reported
  grpc::Status stream_end;
  std::thread subscriber([&] {
    auto stub = StubFor(address);
    v1::SubscribeRequest req;
    req.set_subscription("drain-team");
    req.mutable_start()->set_earliest(true);
    req.set_max_in_flight(200);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 60s);
    auto reader = stub->Subscribe(&ctx, req);
    v1::SubscribeResponse r;
    std::vector<uint64_t> pending;
    while (reader->Read(&r)) {
      if (!r.has_event()) continue;
      received.insert(r.event().position());
      pending.push_back(r.event().position());
      if (pending.size() < 20) continue;
      v1::AckRequest ack;
      ack.set_subscription("drain-team");
      for (uint64_t p : pending) ack.add_positions(p);
      v1::AckResponse resp;
      grpc::ClientContext actx;
      actx.set_deadline(std::chrono::system_clock::now() + 10s);
      if (stub->Ack(&actx, ack, &resp).ok()) acked_cursor = std::max(acked_cursor, resp.cursor());
      pending.clear();
    }
    stream_end = reader->Finish();
  });

  // Under load: at least 100 publishes acknowledged (a slow machine, ASan),
  // at least 800 ms in.
  const auto load_from = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - load_from < 30s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (published.size() >= 100 && std::chrono::steady_clock::now() - load_from >= 800ms) {
        break;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  const auto t0 = std::chrono::steady_clock::now();
  broker->SendTerm();
  const int wait_status = broker->Wait();
  const auto took = std::chrono::steady_clock::now() - t0;
  stop = true;
  for (auto& p : publishers) p.join();
  subscriber.join();

  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) << wait_status;
  // Well inside the 5 s grace period: nothing held the drain.
  EXPECT_LT(took, 5s) << broker->Log();
  const std::string log = broker->Log();
  EXPECT_NE(log.find("SIGTERM received, shutting down"), std::string::npos) << log;
  EXPECT_NE(log.find("calls drained in"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped cleanly"), std::string::npos) << log;
  // The stream was closed with a status a client retries on, saying so.
  EXPECT_EQ(stream_end.error_code(), grpc::StatusCode::UNAVAILABLE)
      << stream_end.error_message();
  EXPECT_NE(stream_end.error_message().find("reconnect to resume from your cursor"),
            std::string::npos)
      << stream_end.error_message();
  // A publish got its acknowledgement, or UNAVAILABLE (not stored; retry),
  // or (a call racing gRPC's own shutdown, at most one per publisher)
  // CANCELLED: outcome unknown, resolved by resending it (below).
  for (const auto& [what, count] : publish_failures) {
    std::printf("publish refused during shutdown, %d x %s\n", count, what.c_str());
    const bool unavailable =
        what.rfind(std::to_string(grpc::StatusCode::UNAVAILABLE) + ":", 0) == 0;
    const bool cancelled = what.rfind(std::to_string(grpc::StatusCode::CANCELLED) + ":", 0) == 0;
    EXPECT_TRUE(unavailable || cancelled) << "not retryable: " << what;
  }
  EXPECT_LE(unanswered.size(), publishers.size());
  ASSERT_GT(published.size(), 100u) << "too little load to prove anything";
  ASSERT_GT(acked_cursor, 0u);

  // Restart: everything acknowledged is there, the acknowledgements too.
  broker = std::make_unique<BrokerProcess>(ICR_BROKER_BINARY, db, dir.path() + "/broker2.log");
  auto stub = StubFor(broker->address());
  // What was left unanswered is resent with its message id: stored once.
  for (const auto& e : unanswered) {
    const uint64_t position = PublishOne(stub.get(), e);
    ASSERT_GT(position, 0u);
    published[position] = e.source_message_id();
  }
  auto log_now = ReadLog(stub.get());
  std::set<std::string> messages;
  for (const auto& [position, message] : log_now) {
    EXPECT_TRUE(messages.insert(message).second) << message << " stored twice";
  }
  for (const auto& [position, message] : published) {
    auto it = log_now.find(position);
    ASSERT_NE(it, log_now.end()) << "acknowledged publish lost at position " << position;
    EXPECT_EQ(it->second, message);
  }
  v1::ListSubscriptionsResponse subs;
  {
    auto ctx = Context();
    ASSERT_TRUE(stub->ListSubscriptions(ctx.get(), {}, &subs).ok());
  }
  ASSERT_EQ(subs.subscriptions_size(), 1);
  const uint64_t cursor = subs.subscriptions(0).cursor();
  EXPECT_GE(cursor, acked_cursor) << "an acknowledged Ack was not kept";
  // Resuming: no gap (every event was received before or comes now) and
  // nothing at or below the cursor again.
  const uint64_t last = log_now.empty() ? 0 : log_now.rbegin()->first;
  std::set<uint64_t> resumed;
  if (cursor < last) {
    v1::SubscribeRequest req;
    req.set_subscription("drain-team");
    auto ctx = Context(60s);
    auto reader = stub->Subscribe(ctx.get(), req);
    v1::SubscribeResponse r;
    while (resumed.size() < last - cursor && reader->Read(&r)) {
      if (r.has_event()) resumed.insert(r.event().position());
    }
    ctx->TryCancel();
    while (reader->Read(&r)) {
    }
    reader->Finish();
  }
  ASSERT_FALSE(resumed.empty() && cursor < last);
  if (!resumed.empty()) {
    EXPECT_GT(*resumed.begin(), cursor);
  }
  for (uint64_t p = 1; p <= last; ++p) {
    ASSERT_TRUE(received.count(p) || resumed.count(p)) << "position " << p << " never delivered";
  }
  std::printf("shutdown in %lld ms under load: %zu publishes acknowledged, cursor %llu of %llu\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
              published.size(), static_cast<unsigned long long>(cursor),
              static_cast<unsigned long long>(last));
  stub.reset();
  broker->Terminate();
}

TEST(DamageTest, AWalDamagedInTheMiddleStopsTheBrokerUntilTheLossIsAccepted) {
  TempDir dir;
  const std::string db = dir.path() + "/db";
  {
    BrokerProcess broker(ICR_BROKER_BINARY, db, dir.path() + "/first.log");
    auto stub = StubFor(broker.address());
    for (int i = 0; i < 40; ++i) {
      ASSERT_EQ(PublishOne(stub.get(), AdmissionEvent(TestNhsNumber(i % 7),
                                                     "wal-" + std::to_string(i))),
                static_cast<uint64_t>(i + 1));
    }
    stub.reset();
    broker.Terminate();
  }
  const std::string wal = LargestWal(db);
  ASSERT_FALSE(wal.empty());
  const uintmax_t size = fs::file_size(wal);
  ASSERT_TRUE(icr::testing::FlipByte(wal, size / 2));

  // Refused, with the reason and both ways on.
  auto run = RunProgram({ICR_BROKER_BINARY, "--data-dir", db, "--listen", "127.0.0.1:0",
                         "--mllp-listen", "off", "--fhir-listen", "off"},
                        dir.path());
  ASSERT_TRUE(run.start_error.empty()) << run.start_error;
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("cannot start: CORRUPTION: the write-ahead log in " + db +
                         " is damaged before its end"),
            std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("Restore the directory from a backup"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("--accept-wal-damage"), std::string::npos) << run.err;
  EXPECT_EQ(fs::file_size(wal), size) << "the refused start changed the log";

  // Accepted: the intact part is served, the alert names what was kept.
  uint64_t kept = 0;
  {
    BrokerProcess broker(ICR_BROKER_BINARY, db, dir.path() + "/accepted.log",
                         {"--accept-wal-damage"});
    auto stub = StubFor(broker.address());
    kept = GetStatus(stub.get()).last_position();
    EXPECT_GT(kept, 3u);
    EXPECT_LT(kept, 40u);
    EXPECT_NE(broker.Log().find("ALERT: the write-ahead log in " + db +
                                " was damaged; opened with --accept-wal-damage: kept positions "
                                "1-" + std::to_string(kept)),
              std::string::npos)
        << broker.Log();
    auto log = ReadLog(stub.get());
    ASSERT_EQ(log.size(), kept);
    for (uint64_t p = 1; p <= kept; ++p) EXPECT_EQ(log[p], "wal-" + std::to_string(p - 1));
    EXPECT_EQ(PublishOne(stub.get(), AdmissionEvent(TestNhsNumber(1), "after")), kept + 1);
    stub.reset();
    broker.Terminate();
  }
  // The damage is behind it: a plain start works, no alert.
  BrokerProcess broker(ICR_BROKER_BINARY, db, dir.path() + "/plain.log");
  auto stub = StubFor(broker.address());
  EXPECT_EQ(GetStatus(stub.get()).last_position(), kept + 1);
  EXPECT_EQ(broker.Log().find("ALERT"), std::string::npos) << broker.Log();
  stub.reset();
  broker.Terminate();
}

// Writes a subscription record straight into a store directory, as a damaged
// or older broker might have left it.
void PutSubscriptionRecord(const std::string& db, const std::string& name,
                           const std::string& bytes) {
  store::StoreOptions options;
  options.data_dir = db;
  std::unique_ptr<store::EventStore> store;
  ASSERT_TRUE(store::OpenRocksDbStore(options, &store).ok());
  ASSERT_TRUE(store->PutSubscription(name, bytes, true).ok());
}

TEST(DamageTest, ACursorPastTheEndOfTheLogIsMovedBackSoNewEventsAreNotSkipped) {
  TempDir dir;
  v1::internal::SubscriptionState state;
  state.set_name("placements");
  state.set_cursor(1000);  // the log lost its tail: it is empty now
  state.add_acked_ahead(1002);
  ASSERT_NO_FATAL_FAILURE(
      PutSubscriptionRecord(dir.path(), "placements", state.SerializeAsString()));

  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(PublishOne(stub.get(), AdmissionEvent(TestNhsNumber(i), "new-" + std::to_string(i))),
              static_cast<uint64_t>(i + 1));
  }
  v1::SubscribeRequest req;
  req.set_subscription("placements");
  auto ctx = Context(20s);
  auto reader = stub->Subscribe(ctx.get(), req);
  std::vector<uint64_t> got;
  v1::SubscribeResponse r;
  while (got.size() < 3 && reader->Read(&r)) {
    if (r.has_event()) got.push_back(r.event().position());
  }
  EXPECT_EQ(got, (std::vector<uint64_t>{1, 2, 3})) << "new events were skipped";
  ctx->TryCancel();
  while (reader->Read(&r)) {
  }
  reader->Finish();
}

TEST(DamageTest, DamagedCursorTablesDoNotKeepTheBrokerDown) {
  TempDir dir;
  {
    store::StoreOptions options;
    options.data_dir = dir.path();
    std::unique_ptr<store::EventStore> store;
    ASSERT_TRUE(store::OpenRocksDbStore(options, &store).ok());
    v1::internal::SubscriptionState state;
    for (int i = 0; i < 200; ++i) {
      state.set_name("team-" + std::to_string(i));
      ASSERT_TRUE(store->PutSubscription(state.name(), state.SerializeAsString(), true).ok());
    }
    store.reset();
    ASSERT_TRUE(store::OpenRocksDbStore(options, &store).ok());  // flushed to a table file
  }
  // Damage the data blocks of the cursors' table file only (its properties
  // name the column family).
  int damaged_files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    const std::string path = entry.path().string();
    if (path.size() < 4 || path.substr(path.size() - 4) != ".sst") continue;
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    if (bytes.find("cursors") == std::string::npos) continue;
    for (uint64_t off = 100; off + 2048 < bytes.size(); off += 512) {
      ASSERT_TRUE(icr::testing::FlipByte(path, off));
    }
    ++damaged_files;
  }
  ASSERT_EQ(damaged_files, 1);
  TestBroker broker(dir.path());  // starts: throws otherwise
  auto stub = broker.NewStub();
  EXPECT_EQ(PublishOne(stub.get(), AdmissionEvent(TestNhsNumber(1), "still-serving")), 1u);
  size_t data_loss = 0;
  for (int i = 0; i < 200; i += 20) {
    v1::SubscribeRequest req;
    req.set_subscription("team-" + std::to_string(i));
    auto ctx = Context();
    auto reader = stub->Subscribe(ctx.get(), req);
    v1::SubscribeResponse r;
    if (reader->Read(&r)) {  // an intact cursor: its stream opened
      ctx->TryCancel();
      while (reader->Read(&r)) {
      }
      reader->Finish();
      continue;
    }
    grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
    ++data_loss;
  }
  EXPECT_GT(data_loss, 0u);
}

TEST(DamageTest, AnUnreadableCursorIsDataLossWithTheNextStep) {
  TempDir dir;
  ASSERT_NO_FATAL_FAILURE(
      PutSubscriptionRecord(dir.path(), "brokerage", std::string("\xff\xff\xff\xff", 4)));
  TestBroker broker(dir.path());
  auto stub = broker.NewStub();
  v1::SubscribeRequest req;
  req.set_subscription("brokerage");
  auto ctx = Context();
  auto reader = stub->Subscribe(ctx.get(), req);
  v1::SubscribeResponse r;
  EXPECT_FALSE(reader->Read(&r));
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(s.error_message(),
            "subscription 'brokerage': its stored state (cursor) cannot be read; the events are "
            "intact. Delete it (icrctl delete-subscription brokerage) and subscribe again from a "
            "known position or time");
}

}  // namespace
}  // namespace icr
