// SubscriptionEngine rules, on a real RocksDB store: per-person hold, the
// in-flight window, the cursor never passing an unacknowledged event,
// redelivery, parking and replay.
#include "broker/delivery.h"

#include <gtest/gtest.h>

#include <future>
#include <set>
#include <thread>

#include "broker/hub.h"
#include "tests/support/test_support.h"

namespace icr::broker {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::TempDir;
using icr::testing::TestNhsNumber;

class DeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::StoreOptions options;
    options.data_dir = dir_.path();
    ASSERT_TRUE(store::OpenRocksDbStore(options, &store_).ok());
    hub_ = std::make_unique<Hub>(store_.get());
  }

  // Appends one event per NHS number index, in order; returns positions.
  std::vector<uint64_t> Append(const std::vector<int>& people) {
    std::vector<v1::CareEvent> events;
    for (int p : people) events.push_back(Admission(p));
    return AppendEvents(std::move(events));
  }

  v1::CareEvent Admission(int person) {
    auto e = AdmissionEvent(TestNhsNumber(person), "m" + std::to_string(next_id_++));
    e.set_event_type(v1::ADMISSION);
    return e;
  }

  std::vector<uint64_t> AppendEvents(std::vector<v1::CareEvent> events) {
    std::promise<std::vector<store::AppendResult>> done;
    store_->AppendAsync(std::move(events),
                        [&](const store::Status& s, std::vector<store::AppendResult> r) {
                          EXPECT_TRUE(s.ok()) << s.ToString();
                          done.set_value(std::move(r));
                        });
    std::vector<uint64_t> positions;
    for (const auto& r : done.get_future().get()) positions.push_back(r.position);
    return positions;
  }

  // The subscription "team" as stored.
  void StoredState(v1::internal::SubscriptionState* state) {
    std::string bytes;
    ASSERT_TRUE(store_->GetSubscription("team", &bytes).ok());
    ASSERT_TRUE(state->ParseFromString(bytes));
  }

  std::unique_ptr<SubscriptionEngine> Durable(uint32_t max_in_flight = 100,
                                              uint32_t max_attempts = 3) {
    v1::internal::SubscriptionState state;
    state.set_name("team");
    state.set_ack_timeout_ms(1000);
    state.set_max_attempts(max_attempts);
    state.set_max_in_flight(max_in_flight);
    return std::make_unique<SubscriptionEngine>(hub_.get(), store_.get(), state);
  }

  // Everything the engine will send now, as (position, attempt).
  std::vector<std::pair<uint64_t, uint32_t>> Drain(SubscriptionEngine* engine, int64_t now) {
    std::vector<std::pair<uint64_t, uint32_t>> out;
    for (;;) {
      std::optional<Delivery> d;
      EXPECT_TRUE(engine->Next(now, &d).ok());
      if (!d) return out;
      out.emplace_back(d->event->position, d->attempt);
    }
  }

  TempDir dir_;
  std::unique_ptr<store::EventStore> store_;
  std::unique_ptr<Hub> hub_;
  int next_id_ = 0;
};

using Sent = std::vector<std::pair<uint64_t, uint32_t>>;

TEST_F(DeliveryTest, HoldsAPersonsLaterEventsUntilTheFirstIsAcknowledged) {
  Append({0, 0, 1, 0, 2});  // positions 1..5; person 0 at 1, 2, 4
  auto engine = Durable();
  EXPECT_EQ(Drain(engine.get(), 0), (Sent{{1, 1}, {3, 1}, {5, 1}}));
  auto outcome = engine->Ack({3, 5});
  EXPECT_EQ(outcome.cursor, 0u);  // 1 is still unacknowledged
  outcome = engine->Ack({1});
  EXPECT_EQ(outcome.cursor, 1u);  // 2 is now in flight
  EXPECT_EQ(Drain(engine.get(), 0), (Sent{{2, 1}}));
  EXPECT_EQ(engine->Ack({2}).cursor, 3u);
  EXPECT_EQ(Drain(engine.get(), 0), (Sent{{4, 1}}));
  EXPECT_EQ(engine->Ack({4}).cursor, 5u);
  EXPECT_EQ(engine->Ack({4, 99}).unknown_positions, (std::vector<uint64_t>{4, 99}));
}

TEST_F(DeliveryTest, WindowBoundsWhatIsReadAhead) {
  std::vector<int> people;
  for (int i = 0; i < 50; ++i) people.push_back(i);
  Append(people);
  auto engine = Durable(/*max_in_flight=*/10);
  EXPECT_EQ(Drain(engine.get(), 0).size(), 10u);
  EXPECT_EQ(engine->in_flight(), 10u);
  engine->Ack({1, 2, 3});
  auto more = Drain(engine.get(), 0);
  EXPECT_EQ(more, (Sent{{11, 1}, {12, 1}, {13, 1}}));
  EXPECT_EQ(engine->cursor(), 3u);
}

TEST_F(DeliveryTest, RedeliversAfterTimeoutThenParksAndLetsThePersonMoveOn) {
  Append({0, 0});
  auto engine = Durable(100, /*max_attempts=*/2);
  const int64_t t0 = 1'000'000'000;
  EXPECT_EQ(Drain(engine.get(), t0), (Sent{{1, 1}}));
  ASSERT_TRUE(engine->Tick(t0 + 999'000).ok());
  EXPECT_TRUE(Drain(engine.get(), t0 + 999'000).empty());  // not yet timed out
  ASSERT_TRUE(engine->Tick(t0 + 1'000'000).ok());
  EXPECT_EQ(Drain(engine.get(), t0 + 1'000'000), (Sent{{1, 2}}));
  ASSERT_TRUE(engine->Tick(t0 + 2'000'000).ok());  // second timeout: parked
  EXPECT_EQ(Drain(engine.get(), t0 + 2'000'000), (Sent{{2, 1}}));
  EXPECT_EQ(engine->cursor(), 1u);

  std::vector<std::pair<uint64_t, std::string>> parked;
  ASSERT_TRUE(store_->ListParked("team", 10, &parked).ok());
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].first, 1u);

  // The cursor and parked record survive: a new engine resumes after 1.
  engine->Ack({2});
  ASSERT_TRUE(engine->Persist(true).ok());
  v1::internal::SubscriptionState state;
  ASSERT_NO_FATAL_FAILURE(StoredState(&state));
  EXPECT_EQ(state.cursor(), 2u);

  uint32_t count = 0;
  ASSERT_TRUE(engine->ReplayParked({}, &count).ok());
  EXPECT_EQ(count, 1u);
  EXPECT_EQ(Drain(engine.get(), t0 + 3'000'000), (Sent{{1, 1}}));
  EXPECT_EQ(engine->cursor(), 2u);  // replay does not move the cursor back
  engine->Ack({1});
  parked.clear();
  ASSERT_TRUE(store_->ListParked("team", 10, &parked).ok());
  EXPECT_TRUE(parked.empty());
}

TEST_F(DeliveryTest, AnEventParkedAboveTheCursorIsNotDeliveredAgainAfterReconnect) {
  Append({0, 1});  // 1: person 0, 2: person 1
  auto engine = Durable(100, /*max_attempts=*/1);
  const int64_t t0 = 1'000'000'000;
  EXPECT_EQ(Drain(engine.get(), t0), (Sent{{1, 1}, {2, 1}}));
  // Position 1 is acknowledged late; 2 times out first and is parked while 1
  // is still in flight, so the cursor stays at 0, below the parked event.
  ASSERT_TRUE(engine->ParkNow(2, t0).ok());
  EXPECT_EQ(engine->cursor(), 0u);
  ASSERT_TRUE(engine->Persist(true).ok());
  v1::internal::SubscriptionState state;
  ASSERT_NO_FATAL_FAILURE(StoredState(&state));
  engine.reset();  // the subscriber disconnects

  SubscriptionEngine again(hub_.get(), store_.get(), state);
  // Position 1 comes again (never acknowledged); parked position 2 does not.
  EXPECT_EQ(Drain(&again, t0), (Sent{{1, 1}}));
  EXPECT_EQ(again.Ack({1}).cursor, 2u);
  Append({1});
  EXPECT_EQ(Drain(&again, t0), (Sent{{3, 1}}));
}

TEST_F(DeliveryTest, ParksAtMost64PerTickSoOneStreamCannotStallTheHub) {
  std::vector<int> people;
  for (int i = 0; i < 150; ++i) people.push_back(i);
  Append(people);
  auto engine = Durable(/*max_in_flight=*/1000, /*max_attempts=*/1);
  const int64_t t0 = 1'000'000'000;
  ASSERT_EQ(Drain(engine.get(), t0).size(), 150u);
  auto parked_count = [&] {
    std::vector<std::pair<uint64_t, std::string>> parked;
    EXPECT_TRUE(store_->ListParked("team", 1000, &parked).ok());
    return parked.size();
  };
  ASSERT_TRUE(engine->Tick(t0 + 1'000'000).ok());
  EXPECT_EQ(parked_count(), 64u);
  EXPECT_EQ(engine->cursor(), 64u);
  ASSERT_TRUE(engine->Tick(t0 + 1'050'000).ok());
  EXPECT_EQ(parked_count(), 128u);
  ASSERT_TRUE(engine->Tick(t0 + 1'100'000).ok());
  EXPECT_EQ(parked_count(), 150u);
  EXPECT_EQ(engine->cursor(), 150u);
  EXPECT_EQ(engine->in_flight(), 0u);
}

// ParkNow: the hook owners with their own retry policy (FHIR rest-hooks)
// park through; they never call Tick.
std::vector<uint64_t> Positions(const Sent& sent) {
  std::vector<uint64_t> out;
  for (const auto& [position, attempt] : sent) out.push_back(position);
  return out;
}

TEST_F(DeliveryTest, ParkNowParksADeliveredEventMovesTheCursorAndReleasesThePerson) {
  Append({0, 0, 1});
  auto engine = Durable();
  EXPECT_EQ(Positions(Drain(engine.get(), 0)), (std::vector<uint64_t>{1, 3}));  // 2 held behind 1
  EXPECT_EQ(engine->ParkNow(2, 1000, 5).code(), store::StatusCode::kNotFound);  // held, not sent
  ASSERT_TRUE(engine->ParkNow(1, 1000, 5).ok());
  EXPECT_EQ(engine->cursor(), 1u);
  EXPECT_EQ(Positions(Drain(engine.get(), 0)), (std::vector<uint64_t>{2}));
  std::vector<std::pair<uint64_t, std::string>> parked;
  ASSERT_TRUE(store_->ListParked("team", 10, &parked).ok());
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].first, 1u);
  v1::internal::ParkedRecord record;
  ASSERT_TRUE(record.ParseFromString(parked[0].second));
  EXPECT_EQ(record.attempts(), 5u);
  // The cursor moved with the parked record, in the same write.
  v1::internal::SubscriptionState state;
  ASSERT_NO_FATAL_FAILURE(StoredState(&state));
  EXPECT_EQ(state.cursor(), 1u);
  // Parked already: nothing to park.
  EXPECT_EQ(engine->ParkNow(1, 2000).code(), store::StatusCode::kNotFound);
  engine->Ack({2, 3});
  EXPECT_EQ(engine->cursor(), 3u);
}

TEST_F(DeliveryTest, ParkNowSendsAReplayedEventBackToParked) {
  Append({0});
  auto engine = Durable();
  EXPECT_EQ(Positions(Drain(engine.get(), 0)), (std::vector<uint64_t>{1}));
  ASSERT_TRUE(engine->ParkNow(1, 1000).ok());
  uint32_t count = 0;
  ASSERT_TRUE(engine->ReplayParked({}, &count).ok());
  EXPECT_EQ(count, 1u);
  EXPECT_EQ(Positions(Drain(engine.get(), 0)), (std::vector<uint64_t>{1}));
  ASSERT_TRUE(engine->ParkNow(1, 2000, 3).ok());
  EXPECT_EQ(engine->in_flight(), 0u);
  std::vector<std::pair<uint64_t, std::string>> parked;
  ASSERT_TRUE(store_->ListParked("team", 10, &parked).ok());
  ASSERT_EQ(parked.size(), 1u);
  v1::internal::ParkedRecord record;
  ASSERT_TRUE(record.ParseFromString(parked[0].second));
  EXPECT_EQ(record.attempts(), 3u);
  EXPECT_FALSE(record.replay_requested());
}

TEST_F(DeliveryTest, ParkNowOnAnEphemeralEngineHasNothingToPark) {
  Append({0});
  SubscriptionEngine engine(hub_.get(), CompiledFilter(), 1);
  EXPECT_EQ(Positions(Drain(&engine, 0)), (std::vector<uint64_t>{1}));
  EXPECT_EQ(engine.ParkNow(1, 0).code(), store::StatusCode::kFailedPrecondition);
}

TEST_F(DeliveryTest, EphemeralDeliversMatchingEventsInOrderFromItsStart) {
  Append({0, 1, 2, 3});
  v1::EventFilter filter;
  filter.add_nhs_numbers(TestNhsNumber(2));
  filter.add_nhs_numbers(TestNhsNumber(3));
  SubscriptionEngine engine(hub_.get(), CompiledFilter(filter), /*start=*/1);
  EXPECT_EQ(Drain(&engine, 0), (Sent{{3, 1}, {4, 1}}));
  Append({3});
  EXPECT_EQ(Drain(&engine, 0), (Sent{{5, 1}}));
}

TEST_F(DeliveryTest, ReadsOlderPositionsFromTheStoreWhenTheRingHasMovedOn) {
  // A tiny ring: catch-up must come from RocksDB.
  Hub small(store_.get(), /*ring_capacity=*/4);
  store_->SetCommitListener([&](const std::vector<store::EventPtr>& c) { small.OnCommit(c); });
  std::vector<int> people;
  for (int i = 0; i < 20; ++i) people.push_back(i);
  Append(people);
  SubscriptionEngine engine(&small, CompiledFilter(), 1);
  auto sent = Drain(&engine, 0);
  ASSERT_EQ(sent.size(), 20u);
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(sent[i].first, i + 1);
}

// A source that commits one more event (and waits until the hub has routed
// it) right after a read first finds the end of the log: the moment between
// an engine's last read and its Follow.
class RacingSource : public EventSource {
 public:
  RacingSource(Hub* hub, std::function<void()> on_end) : hub_(hub), on_end_(std::move(on_end)) {}
  store::Status Read(uint64_t from, size_t max, std::vector<store::EventPtr>* out) override {
    store::Status s = hub_->Read(from, max, out);
    if (s.ok() && out->empty() && !fired_) {
      fired_ = true;
      on_end_();
    }
    return s;
  }
  bool Follow(const std::shared_ptr<Follower>& f) override { return hub_->Follow(f); }
  void Unfollow(const Follower* f) override { hub_->Unfollow(f); }
  uint64_t RoutedThrough() const override { return hub_->RoutedThrough(); }

 private:
  Hub* hub_;
  std::function<void()> on_end_;
  bool fired_ = false;
};

TEST_F(DeliveryTest, AnEventCommittedJustBeforeFollowingTheTailIsNotLost) {
  store_->SetCommitListener([&](const std::vector<store::EventPtr>& c) { hub_->OnCommit(c); });
  hub_->Start();
  Append({0, 1});
  RacingSource source(hub_.get(), [&] {
    uint64_t p = Append({2}).front();
    while (hub_->RoutedThrough() < p) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  SubscriptionEngine engine(&source, CompiledFilter(), 1);
  engine.SetWaker([] {});
  EXPECT_EQ(Positions(Drain(&engine, 0)), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(engine.following());
  hub_->Stop();
}

// --- Priority lanes ----------------------------------------------------------

class LaneTest : public DeliveryTest {
 protected:
  // Appends one event per (person, priority), in order; returns positions.
  // `bulk` BULK events, one person each (0, 1, ...), then one URGENT event
  // about person 100; returns its position.
  uint64_t AppendBacklogThenUrgent(int bulk) {
    std::vector<std::pair<int, v1::Priority>> events;
    for (int i = 0; i < bulk; ++i) events.push_back({i, v1::BULK});
    AppendWith(events);
    return AppendWith({{100, v1::URGENT}}).front();
  }

  std::vector<uint64_t> AppendWith(const std::vector<std::pair<int, v1::Priority>>& events) {
    std::vector<v1::CareEvent> batch;
    for (const auto& [person, priority] : events) {
      batch.push_back(Admission(person));
      batch.back().set_priority(priority);
    }
    return AppendEvents(std::move(batch));
  }
};

TEST_F(LaneTest, UrgentFirstThenRoutineThenBulkAndAPersonsEventsStayInOrder) {
  // 1: p0 BULK, 2: p1 BULK, 3: p2 URGENT, 4: p0 URGENT, 5: p3 ROUTINE.
  AppendWith({{0, v1::BULK}, {1, v1::BULK}, {2, v1::URGENT}, {0, v1::URGENT}, {3, v1::ROUTINE}});
  auto engine = Durable();
  // p0's urgent event lifts its bulk event 1 into the urgent lane (p0's
  // order is kept); 4 waits for 1's acknowledgement.
  EXPECT_EQ(Positions(Drain(engine.get(), 0)), (std::vector<uint64_t>{1, 3, 5, 2}));
  engine->Ack({1});
  EXPECT_EQ(Positions(Drain(engine.get(), 0)), (std::vector<uint64_t>{4}));
  EXPECT_EQ(engine->Ack({2, 3, 4, 5}).cursor, 5u);
}

TEST_F(LaneTest, EphemeralGetsUrgentFirstOrTheExactLogWhenAskedForPositionOrder) {
  AppendWith({{0, v1::BULK}, {1, v1::ROUTINE}, {2, v1::URGENT}, {3, v1::BULK}, {4, v1::URGENT}});
  SubscriptionEngine lanes(hub_.get(), CompiledFilter(), 1);
  EXPECT_EQ(Positions(Drain(&lanes, 0)), (std::vector<uint64_t>{3, 5, 2, 1, 4}));
  SubscriptionEngine ordered(hub_.get(), CompiledFilter(), 1);
  ordered.DisableLanes();
  EXPECT_EQ(Positions(Drain(&ordered, 0)), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}

TEST_F(LaneTest, UrgentEventsAreSentAheadOfABacklogWithTheirPersonsEarlierEvents) {
  // 1..100: BULK, one person each (person 5 at position 6).
  std::vector<std::pair<int, v1::Priority>> bulk;
  for (int i = 0; i < 100; ++i) bulk.push_back({i, v1::BULK});
  AppendWith(bulk);
  // 101: a new person, URGENT; 102: person 5 again, URGENT; 103: person 50
  // (bulk at 51, beyond the window), URGENT.
  AppendWith({{200, v1::URGENT}, {5, v1::URGENT}, {50, v1::URGENT}});
  auto engine = Durable(/*max_in_flight=*/10);
  // Window: 1..10. Sent ahead: 101, 102, and 51 with 103 (person 50's order
  // kept). Person 5's 102 waits for 6, which is in the window.
  EXPECT_EQ(Positions(Drain(engine.get(), 0)),
            (std::vector<uint64_t>{6, 51, 101, 1, 2, 3, 4, 5, 7, 8, 9, 10}));
  EXPECT_EQ(engine->sent_ahead(), 4u);
  engine->Ack({6, 51});
  EXPECT_EQ(Positions(Drain(engine.get(), 0)), (std::vector<uint64_t>{102, 103}));

  // Acknowledge everything as it comes: every event exactly once.
  std::set<uint64_t> seen = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 51, 101, 102, 103};
  std::vector<uint64_t> ack(seen.begin(), seen.end());
  for (int round = 0; round < 200 && !ack.empty(); ++round) {
    engine->Ack(ack);
    ack.clear();
    for (uint64_t p : Positions(Drain(engine.get(), 0))) {
      EXPECT_TRUE(seen.insert(p).second) << "sent twice: " << p;
      ack.push_back(p);
    }
  }
  EXPECT_EQ(seen.size(), 103u);
  EXPECT_EQ(engine->cursor(), 103u);
}

TEST_F(LaneTest, EventsAcknowledgedAheadAreNotSentAgainAfterAReconnect) {
  ASSERT_EQ(AppendBacklogThenUrgent(50), 51u);
  {
    auto engine = Durable(/*max_in_flight=*/10);
    auto first = Positions(Drain(engine.get(), 0));
    ASSERT_EQ(first.front(), 51u);
    engine->Ack({51, 1});
    ASSERT_TRUE(engine->Persist(true).ok());
    EXPECT_EQ(engine->cursor(), 1u);
  }
  v1::internal::SubscriptionState state;
  ASSERT_NO_FATAL_FAILURE(StoredState(&state));
  EXPECT_EQ(state.cursor(), 1u);
  ASSERT_EQ(state.acked_ahead_size(), 1);
  EXPECT_EQ(state.acked_ahead(0), 51u);

  SubscriptionEngine again(hub_.get(), store_.get(), state);
  std::set<uint64_t> seen;
  std::vector<uint64_t> ack;
  for (int round = 0; round < 100; ++round) {
    again.Ack(ack);
    ack = Positions(Drain(&again, 0));
    if (ack.empty()) break;
    for (uint64_t p : ack) EXPECT_TRUE(seen.insert(p).second) << "sent twice: " << p;
  }
  EXPECT_EQ(seen.size(), 49u);  // 2..50
  EXPECT_FALSE(seen.count(51));
  EXPECT_FALSE(seen.count(1));
  EXPECT_EQ(again.cursor(), 51u);
}

TEST_F(LaneTest, AnEventAcknowledgedAheadStaysRememberedAfterTheReaderPassesIt) {
  ASSERT_EQ(AppendBacklogThenUrgent(60), 61u);
  {
    auto engine = Durable(/*max_in_flight=*/10);
    // Acknowledge everything but position 1, so the cursor stays at 0 while
    // the reader passes 61.
    std::vector<uint64_t> ack;
    for (int round = 0; round < 50; ++round) {
      engine->Ack(ack);
      ack.clear();
      for (uint64_t p : Positions(Drain(engine.get(), 0))) {
        if (p != 1) ack.push_back(p);
      }
      if (ack.empty()) break;
    }
    EXPECT_EQ(engine->cursor(), 0u);
    ASSERT_TRUE(engine->Persist(true).ok());
  }
  v1::internal::SubscriptionState state;
  ASSERT_NO_FATAL_FAILURE(StoredState(&state));
  SubscriptionEngine again(hub_.get(), store_.get(), state);
  // Only 1 and what the cursor could not pass come again; 61 never does.
  auto sent = Positions(Drain(&again, 0));
  EXPECT_EQ(std::count(sent.begin(), sent.end(), 61u), 0) << "61 was delivered again";
  EXPECT_EQ(std::count(sent.begin(), sent.end(), 1u), 1);
}

}  // namespace
}  // namespace icr::broker
