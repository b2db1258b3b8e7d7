// The store under injected faults, on a real RocksDB directory through
// FaultFs (tests/support/fault_fs.h):
//  - a full disk: publishes are refused with RESOURCE_EXHAUSTED and nothing
//    half-written, reads go on, and writing resumes by itself once space
//    returns;
//  - power cuts: everything written but not synced is dropped, the store is
//    reopened, and every acknowledged event must be there, byte for byte,
//    with dense positions, no event stored twice and each person's index in
//    log order. ICR_POWER_CUT_CYCLES sets the number of cycles (default 12;
//    docs/reliability.md gives the long run).
#include <gtest/gtest.h>
#include <rocksdb/env.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "store/store.h"
#include "tests/support/fault_fs.h"
#include "tests/support/test_support.h"

namespace icr::store {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::FaultFs;
using icr::testing::TempDir;
using icr::testing::TestNhsNumber;
using icr::v1::CareEvent;
using namespace std::chrono_literals;

struct Outcome {
  Status status;
  std::vector<AppendResult> results;
};

Outcome AppendSync(EventStore* store, std::vector<CareEvent> events) {
  std::promise<Outcome> done;
  store->AppendAsync(std::move(events), [&](const Status& s, std::vector<AppendResult> r) {
    done.set_value({s, std::move(r)});
  });
  return done.get_future().get();
}

// A test-range admission with a unique message id.
CareEvent Event(const std::string& id, uint64_t person) {
  return AdmissionEvent(TestNhsNumber(person), id);
}

class FaultTest : public ::testing::Test {
 protected:
  void Open(Durability durability = Durability::kSync) {
    store_.reset();
    StoreOptions o;
    o.data_dir = dir_.path() + "/db";
    o.durability = durability;
    o.env = env_.get();
    Status s = OpenRocksDbStore(o, &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::vector<EventPtr> ReadAll() {
    std::vector<EventPtr> all;
    Status s = store_->ReadFrom(1, 1u << 30, &all);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return all;
  }

  TempDir dir_;
  std::shared_ptr<FaultFs> fs_ = std::make_shared<FaultFs>();
  std::unique_ptr<rocksdb::Env> env_ = rocksdb::NewCompositeEnv(fs_);
  std::unique_ptr<EventStore> store_;
};

TEST_F(FaultTest, AFullDiskRefusesPublishesKeepsReadsAndResumesWhenSpaceReturns) {
  Open();
  std::vector<CareEvent> first;
  for (int i = 0; i < 100; ++i) first.push_back(Event("before-" + std::to_string(i), i % 7));
  Outcome o = AppendSync(store_.get(), first);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();

  fs_->SetFull(true);
  for (int attempt = 0; attempt < 3; ++attempt) {
    o = AppendSync(store_.get(), {Event("refused-" + std::to_string(attempt), 1),
                                  Event("refused-b-" + std::to_string(attempt), 2)});
    EXPECT_EQ(o.status.code(), StatusCode::kResourceExhausted) << o.status.ToString();
    EXPECT_NE(o.status.message().find("full"), std::string::npos) << o.status.message();
    EXPECT_NE(o.status.message().find("nothing stored"), std::string::npos) << o.status.message();
    EXPECT_TRUE(o.results.empty());
  }
  EXPECT_GT(fs_->refused_appends(), 0u);
  EXPECT_FALSE(store_->Stats().write_error.empty());
  // Reads go on, and show nothing of the refused calls.
  EXPECT_EQ(store_->LastPosition(), 100u);
  EXPECT_EQ(ReadAll().size(), 100u);
  std::vector<EventPtr> person;
  ASSERT_TRUE(store_->ReadPatient(TestNhsNumber(1), 0, 1000, &person).ok());
  EXPECT_EQ(person.size(), 15u);  // i % 7 == 1 for i < 100

  // Space returns: with no restart, publishes succeed again (the store
  // retries at most every 200 ms, so a client's retry gets through).
  fs_->SetFull(false);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  do {
    o = AppendSync(store_.get(), {Event("after", 3)});
    if (o.status.ok()) break;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.results[0].position, 101u) << "positions stay dense";
  EXPECT_TRUE(store_->Stats().write_error.empty());
  EXPECT_EQ(store_->Stats().write_recoveries, 1u);

  // After a restart: the 101 acknowledged events, none of the refused ones
  // (sending one again stores it as new, not as a duplicate).
  store_.reset();
  Open();
  auto all = ReadAll();
  ASSERT_EQ(all.size(), 101u);
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i]->position, i + 1);
  EXPECT_EQ(all.back()->event.source_message_id(), "after");
  o = AppendSync(store_.get(), {Event("refused-0", 1)});
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_FALSE(o.results[0].duplicate) << "a refused event was stored after all";
  EXPECT_EQ(o.results[0].position, 102u);
}

// What a client was told about one acknowledged event.
struct Acked {
  uint64_t position;
  std::string event_id;
  std::string message_id;
  std::string nhs;
};

// Publishes from `threads` clients until told to stop; returns what was
// acknowledged.
class Load {
 public:
  Load(EventStore* store, int cycle, int threads, uint64_t seed) {
    for (int t = 0; t < threads; ++t) {
      workers_.emplace_back([this, store, cycle, t, seed] {
        std::mt19937_64 rng(seed + static_cast<uint64_t>(t));
        for (int k = 0; !stop_.load(); ++k) {
          std::vector<CareEvent> batch;
          const int n = 1 + static_cast<int>(rng() % 20);
          for (int i = 0; i < n; ++i) {
            batch.push_back(Event("c" + std::to_string(cycle) + "-t" + std::to_string(t) + "-" +
                                      std::to_string(k) + "-" + std::to_string(i),
                                  rng() % 300));
          }
          std::vector<CareEvent> sent = batch;
          Outcome o = AppendSync(store, std::move(batch));
          if (!o.status.ok()) {
            std::this_thread::sleep_for(1ms);  // the power is off: keep trying until stopped
            continue;
          }
          std::lock_guard<std::mutex> lock(mu_);
          for (size_t i = 0; i < o.results.size(); ++i) {
            acked_.push_back({o.results[i].position, o.results[i].event_id,
                              sent[i].source_message_id(), sent[i].nhs_number()});
          }
        }
      });
    }
  }
  std::vector<Acked> Stop() {
    stop_ = true;
    for (auto& w : workers_) w.join();
    return acked_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::vector<Acked> acked_;
};

// The store after a restart holds every acknowledged event and is
// consistent: dense positions, each message stored once, each person's
// index listing exactly their events in log order.
void CheckConsistent(EventStore* store, const std::vector<Acked>& acked, const std::string& when) {
  std::vector<EventPtr> all;
  ASSERT_TRUE(store->ReadFrom(1, 1u << 30, &all).ok());
  ASSERT_EQ(all.size(), store->LastPosition()) << when;
  std::set<std::string> message_ids;
  std::map<std::string, std::vector<uint64_t>> by_person;
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i]->position, i + 1) << when << ": positions not dense";
    ASSERT_TRUE(message_ids.insert(all[i]->event.source_message_id()).second)
        << when << ": " << all[i]->event.source_message_id() << " stored twice";
    by_person[all[i]->event.nhs_number()].push_back(all[i]->position);
  }
  for (const Acked& a : acked) {
    ASSERT_LE(a.position, all.size()) << when << ": acknowledged position " << a.position
                                      << " lost (log ends at " << all.size() << ")";
    const auto& e = all[a.position - 1]->event;
    ASSERT_EQ(e.event_id(), a.event_id) << when << ": position " << a.position << " changed";
    ASSERT_EQ(e.source_message_id(), a.message_id) << when;
  }
  for (const auto& [nhs, positions] : by_person) {
    std::vector<EventPtr> page;
    ASSERT_TRUE(store->ReadPatient(nhs, 0, 1u << 20, &page).ok());
    std::vector<uint64_t> indexed;
    for (const auto& e : page) indexed.push_back(e->position);
    ASSERT_EQ(indexed, positions) << when << ": the person index disagrees with the log";
  }
}

TEST_F(FaultTest, PowerCutsLoseNoAcknowledgedEvent) {
  int cycles = 12;
  if (const char* env = std::getenv("ICR_POWER_CUT_CYCLES")) cycles = std::atoi(env);
  std::vector<Acked> acked;  // everything acknowledged so far, over all cycles
  std::mt19937_64 rng(20261122);
  uint64_t dropped_total = 0;
  int cycles_with_drops = 0;
  // A slow disk: a cut often falls between a group's WAL write and its sync.
  fs_->SetSyncDelay(std::chrono::microseconds(1500));
  for (int cycle = 0; cycle < cycles; ++cycle) {
    fs_->PowerOn();
    Open();
    CheckConsistent(store_.get(), acked, "after power cut " + std::to_string(cycle));
    Load load(store_.get(), cycle, 3, rng());
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 200));
    fs_->PowerCut();
    dropped_total += fs_->dropped_bytes();
    cycles_with_drops += fs_->dropped_bytes() > 0 ? 1 : 0;
    std::vector<Acked> now = load.Stop();
    acked.insert(acked.end(), now.begin(), now.end());
    store_.reset();  // closing writes nothing: the power is off
  }
  fs_->PowerOn();
  Open();
  CheckConsistent(store_.get(), acked, "after the last power cut");
  EXPECT_GT(acked.size(), 100u) << "the load did not get going";
  // Most cuts must have had written-but-unsynced data to drop, or the test
  // proves little.
  EXPECT_GE(cycles_with_drops, cycles / 4) << "power cuts rarely found unsynced data";
  std::printf("power cuts: %d (%d dropped unsynced data, %llu bytes in all), acknowledged "
              "events checked: %zu\n",
              cycles, cycles_with_drops, static_cast<unsigned long long>(dropped_total),
              acked.size());
}

// The check above can fail: with relaxed durability (the WAL synced about
// every 100 ms), a power cut right after writing loses recent events, as
// documented. If FaultFs did not drop unsynced data, nothing would be lost.
TEST_F(FaultTest, APowerCutDropsWhatWasNotSynced) {
  Open(Durability::kRelaxed);
  // The background sync (every 100 ms) now first waits 2 s, so the cut below
  // always comes before it, however slowly this thread runs.
  fs_->SetSyncDelay(std::chrono::seconds(2));
  std::vector<CareEvent> events;
  for (int i = 0; i < 200; ++i) events.push_back(Event("relaxed-" + std::to_string(i), i));
  Outcome o = AppendSync(store_.get(), events);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  fs_->PowerCut();  // at once: before the background sync
  fs_->SetSyncDelay(std::chrono::microseconds(0));
  EXPECT_GT(fs_->dropped_bytes(), 0u);
  store_.reset();
  fs_->PowerOn();
  Open(Durability::kRelaxed);
  EXPECT_LT(store_->LastPosition(), 200u) << "the unsynced WAL tail survived the power cut";
  CheckConsistent(store_.get(), {}, "relaxed");
}

}  // namespace
}  // namespace icr::store
