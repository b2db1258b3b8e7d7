// SubscriptionEngine::ParkNow, the engine hook rest-hooks park through (they
// run their own retry policy and never call Tick), on a real RocksDB store.
#include <gtest/gtest.h>

#include <future>

#include "broker/delivery.h"
#include "broker/hub.h"
#include "tests/support/test_support.h"

namespace icr::broker {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::TempDir;
using icr::testing::TestNhsNumber;

class ParkNowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::StoreOptions options;
    options.data_dir = dir_.path();
    ASSERT_TRUE(store::OpenRocksDbStore(options, &store_).ok());
    hub_ = std::make_unique<Hub>(store_.get());
  }

  void Append(const std::vector<int>& people) {
    std::vector<v1::CareEvent> events;
    for (int p : people) {
      auto e = AdmissionEvent(TestNhsNumber(p), "m" + std::to_string(next_id_++));
      e.set_event_type(v1::ADMISSION);
      events.push_back(e);
    }
    std::promise<void> done;
    store_->AppendAsync(std::move(events), [&](const store::Status& s, auto) {
      EXPECT_TRUE(s.ok());
      done.set_value();
    });
    done.get_future().wait();
  }

  std::unique_ptr<SubscriptionEngine> Durable() {
    v1::internal::SubscriptionState state;
    state.set_name("hook");
    state.set_ack_timeout_ms(3600000);
    state.set_max_attempts(8);
    state.set_max_in_flight(100);
    return std::make_unique<SubscriptionEngine>(hub_.get(), store_.get(), state);
  }

  std::vector<uint64_t> Drain(SubscriptionEngine* engine) {
    std::vector<uint64_t> out;
    for (;;) {
      std::optional<Delivery> d;
      EXPECT_TRUE(engine->Next(0, &d).ok());
      if (!d) return out;
      out.push_back(d->event->position);
    }
  }

  std::vector<std::pair<uint64_t, std::string>> Parked() {
    std::vector<std::pair<uint64_t, std::string>> parked;
    EXPECT_TRUE(store_->ListParked("hook", 10, &parked).ok());
    return parked;
  }

  TempDir dir_;
  std::unique_ptr<store::EventStore> store_;
  std::unique_ptr<Hub> hub_;
  int next_id_ = 0;
};

TEST_F(ParkNowTest, ParksADeliveredEventMovesTheCursorAndReleasesThePerson) {
  Append({0, 0, 1});
  auto engine = Durable();
  EXPECT_EQ(Drain(engine.get()), (std::vector<uint64_t>{1, 3}));  // 2 is held behind 1
  EXPECT_EQ(engine->ParkNow(2, 1000, 5).code(), store::StatusCode::kNotFound);  // held, not sent
  ASSERT_TRUE(engine->ParkNow(1, 1000, 5).ok());
  EXPECT_EQ(engine->cursor(), 1u);
  EXPECT_EQ(Drain(engine.get()), (std::vector<uint64_t>{2}));
  auto parked = Parked();
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].first, 1u);
  v1::internal::ParkedRecord record;
  ASSERT_TRUE(record.ParseFromString(parked[0].second));
  EXPECT_EQ(record.attempts(), 5u);
  // The cursor moved with the parked record, in the same write.
  std::string bytes;
  ASSERT_TRUE(store_->GetSubscription("hook", &bytes).ok());
  v1::internal::SubscriptionState state;
  ASSERT_TRUE(state.ParseFromString(bytes));
  EXPECT_EQ(state.cursor(), 1u);
  // Parked already: nothing to park.
  EXPECT_EQ(engine->ParkNow(1, 2000).code(), store::StatusCode::kNotFound);
  engine->Ack({2, 3});
  EXPECT_EQ(engine->cursor(), 3u);
}

TEST_F(ParkNowTest, AReplayedEventGoesBackToParked) {
  Append({0});
  auto engine = Durable();
  EXPECT_EQ(Drain(engine.get()), (std::vector<uint64_t>{1}));
  ASSERT_TRUE(engine->ParkNow(1, 1000).ok());
  uint32_t count = 0;
  ASSERT_TRUE(engine->ReplayParked({}, &count).ok());
  EXPECT_EQ(count, 1u);
  EXPECT_EQ(Drain(engine.get()), (std::vector<uint64_t>{1}));
  ASSERT_TRUE(engine->ParkNow(1, 2000, 3).ok());
  EXPECT_EQ(engine->in_flight(), 0u);
  auto parked = Parked();
  ASSERT_EQ(parked.size(), 1u);
  v1::internal::ParkedRecord record;
  ASSERT_TRUE(record.ParseFromString(parked[0].second));
  EXPECT_EQ(record.attempts(), 3u);
  EXPECT_FALSE(record.replay_requested());
}

TEST_F(ParkNowTest, EphemeralEnginesHaveNothingToPark) {
  Append({0});
  SubscriptionEngine engine(hub_.get(), CompiledFilter(), 1);
  EXPECT_EQ(Drain(&engine), (std::vector<uint64_t>{1}));
  EXPECT_EQ(engine.ParkNow(1, 0).code(), store::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace icr::broker
