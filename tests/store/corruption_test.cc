// Damaged files on a real RocksDB directory: the store never serves corrupt
// data. A flipped byte inside a table file (SST) is caught by its block
// checksum and reported as kCorruption naming the data directory (the gRPC
// layer maps it to DATA_LOSS), on open or on read; a WAL cut short (a torn
// last write) recovers to a consistent earlier state with dense positions; a
// WAL damaged in the middle refuses to open (acknowledged events may follow
// the damage) unless the operator accepts the loss; a damaged cursor is
// reported, never read as missing.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "store/store.h"
#include "tests/support/test_support.h"

namespace icr::store {
namespace {

namespace fs = std::filesystem;
using icr::testing::AdmissionEvent;
using icr::testing::TempDir;
using icr::testing::TestNhsNumber;
using icr::v1::CareEvent;

Status Append(EventStore* store, std::vector<CareEvent> events) {
  std::promise<Status> done;
  store->AppendAsync(std::move(events),
                     [&](const Status& s, std::vector<AppendResult>) { done.set_value(s); });
  return done.get_future().get();
}

std::vector<std::string> FilesEndingWith(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().string();
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(),
                                                     suffix) == 0) {
      out.push_back(name);
    }
  }
  return out;
}

class CorruptionTest : public ::testing::Test {
 protected:
  StoreOptions Options() {
    StoreOptions o;
    o.data_dir = dir_.path() + "/db";
    return o;
  }
  // Stores `count` events about 50 people, then closes and reopens once, so
  // they are flushed from the recovered WAL into table files.
  void StoreAndFlush(int count) {
    std::unique_ptr<EventStore> store;
    ASSERT_TRUE(OpenRocksDbStore(Options(), &store).ok());
    for (int i = 0; i < count; i += 100) {
      std::vector<CareEvent> batch;
      for (int j = i; j < std::min(count, i + 100); ++j) {
        CareEvent e = AdmissionEvent(TestNhsNumber(j % 50), "m-" + std::to_string(j));
        e.mutable_admission()->set_admission_method(std::string(900, 'a' + j % 26));
        batch.push_back(std::move(e));
      }
      ASSERT_TRUE(Append(store.get(), std::move(batch)).ok());
    }
    store.reset();
    ASSERT_TRUE(OpenRocksDbStore(Options(), &store).ok());  // recovery flushes the WAL
    store.reset();
  }
  TempDir dir_;
};

TEST_F(CorruptionTest, AFlippedByteInATableFileIsReportedNeverServed) {
  StoreAndFlush(3000);
  auto tables = FilesEndingWith(dir_.path() + "/db", ".sst");
  ASSERT_FALSE(tables.empty()) << "nothing was flushed to table files";
  // Damage the largest table (the events), in its data blocks (the first
  // half of the file; index and footer are at the end).
  std::string largest;
  uintmax_t largest_size = 0;
  for (const auto& t : tables) {
    if (fs::file_size(t) > largest_size) largest_size = fs::file_size(t), largest = t;
  }
  ASSERT_GT(largest_size, 100000u);
  for (uint64_t off = 4096; off < largest_size / 2; off += 16384) ASSERT_TRUE(icr::testing::FlipByte(largest, off));

  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(Options(), &store);
  if (!s.ok()) {
    // Refusing to open is allowed, with a clear reason.
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
    EXPECT_NE(s.message().find(dir_.path()), std::string::npos) << s.message();
    return;
  }
  std::vector<EventPtr> all;
  s = store->ReadFrom(1, 1u << 20, &all);
  ASSERT_FALSE(s.ok()) << "a damaged table was read without an error";
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.message();
  EXPECT_TRUE(all.empty()) << "events were returned with the error";
  // Per-person reads hit the same blocks: errors, never altered events.
  size_t errors = 0, served = 0;
  for (int p = 0; p < 50; ++p) {
    std::vector<EventPtr> page;
    Status r = store->ReadPatient(TestNhsNumber(p), 0, 1000, &page);
    if (!r.ok()) {
      ++errors;
      EXPECT_EQ(r.code(), StatusCode::kCorruption) << r.ToString();
      continue;
    }
    for (const auto& e : page) {
      ++served;
      const int j = std::stoi(e->event.source_message_id().substr(2));
      ASSERT_EQ(e->event.admission().admission_method(), std::string(900, 'a' + j % 26))
          << "a corrupt event was served";
    }
  }
  EXPECT_GT(errors, 0u);
  std::printf("damaged table: %zu of 50 people's reads refused, %zu intact events served\n",
              errors, served);
}

// Stores 20 events that stay in the WAL only (closed without a flush) and
// returns the WAL's path.
std::string TwentyEventsInTheWal(const StoreOptions& options, const std::string& db) {
  {
    std::unique_ptr<EventStore> store;
    EXPECT_TRUE(OpenRocksDbStore(options, &store).ok());
    for (int i = 0; i < 20; ++i) {
      EXPECT_TRUE(Append(store.get(), {AdmissionEvent(TestNhsNumber(i % 5),
                                                      "w-" + std::to_string(i))})
                      .ok());
    }
  }
  std::string wal;
  for (const auto& l : FilesEndingWith(db, ".log")) {
    if (wal.empty() || fs::file_size(l) > fs::file_size(wal)) wal = l;
  }
  return wal;
}

// The store holds exactly the first `last` of TwentyEventsInTheWal's
// events at positions 1..last, and a new event goes to last + 1.
void ExpectAPrefixThatGoesOn(EventStore* store, uint64_t last) {
  std::vector<EventPtr> all;
  ASSERT_TRUE(store->ReadFrom(1, 100, &all).ok());
  ASSERT_EQ(all.size(), last);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i]->position, i + 1);
    EXPECT_EQ(all[i]->event.source_message_id(), "w-" + std::to_string(i));
  }
  ASSERT_TRUE(Append(store, {AdmissionEvent(TestNhsNumber(1), "after")}).ok());
  EXPECT_EQ(store->LastPosition(), last + 1);
}

TEST_F(CorruptionTest, AWalCutShortRecoversToAConsistentEarlierState) {
  const std::string wal = TwentyEventsInTheWal(Options(), dir_.path() + "/db");
  ASSERT_FALSE(wal.empty());
  const uintmax_t size = fs::file_size(wal);
  ASSERT_GT(size, 300u);
  fs::resize_file(wal, size - 150);  // the last write torn

  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(Options(), &store);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const uint64_t last = store->LastPosition();
  EXPECT_LT(last, 20u) << "the torn record was not dropped";
  EXPECT_GT(last, 10u) << "far more than the torn record was dropped";
  ExpectAPrefixThatGoesOn(store.get(), last);
}

TEST_F(CorruptionTest, AByteFlippedInTheMiddleOfTheWalRefusesToOpenUnlessTheLossIsAccepted) {
  const std::string wal = TwentyEventsInTheWal(Options(), dir_.path() + "/db");
  ASSERT_FALSE(wal.empty());
  const uintmax_t size = fs::file_size(wal);
  ASSERT_GT(size, 1000u);
  // Damage a record in the middle: the acknowledged records after it must
  // not be dropped without a word.
  ASSERT_TRUE(icr::testing::FlipByte(wal, size / 2));

  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(Options(), &store);
  ASSERT_FALSE(s.ok()) << "a WAL damaged in the middle was recovered silently";
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
  EXPECT_NE(s.message().find("write-ahead log"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(dir_.path()), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--accept-wal-damage"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("backup"), std::string::npos) << s.message();
  std::printf("refused: %s\n", s.ToString().c_str());
  // Refusing changed nothing: a second refusal says the same.
  Status again = OpenRocksDbStore(Options(), &store);
  EXPECT_EQ(again.ToString(), s.ToString());
  ASSERT_EQ(fs::file_size(wal), size) << "the refused open changed the damaged log";

  // The operator accepts the loss: everything before the damage is kept,
  // positions stay dense, and the store goes on.
  StoreOptions accept = Options();
  accept.accept_wal_damage = true;
  s = OpenRocksDbStore(accept, &store);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const uint64_t last = store->LastPosition();
  EXPECT_LT(last, 20u);
  EXPECT_GT(last, 3u) << "far more than the damaged record was dropped";
  ExpectAPrefixThatGoesOn(store.get(), last);
  // The damage is behind it: a plain open works again.
  store.reset();
  ASSERT_TRUE(OpenRocksDbStore(Options(), &store).ok());
  EXPECT_EQ(store->LastPosition(), last + 1);
}

TEST_F(CorruptionTest, ADamagedSubscriptionCursorIsReportedNeverReadAsMissing) {
  // Cursors only (no events), flushed into table files by a reopen.
  {
    std::unique_ptr<EventStore> store;
    ASSERT_TRUE(OpenRocksDbStore(Options(), &store).ok());
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(store->PutSubscription("team-" + std::to_string(i),
                                         std::string(200, 'c'), true)
                      .ok());
    }
    store.reset();
    ASSERT_TRUE(OpenRocksDbStore(Options(), &store).ok());
  }
  // Damage the cursors' table file only (its properties block names the
  // column family): data blocks come first, the index and footer last.
  int damaged_files = 0;
  for (const auto& t : FilesEndingWith(dir_.path() + "/db", ".sst")) {
    std::ifstream in(t, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    if (bytes.find("cursors") == std::string::npos) continue;
    for (uint64_t off = 100; off + 2048 < bytes.size(); off += 512) {
      ASSERT_TRUE(icr::testing::FlipByte(t, off));
    }
    ++damaged_files;
  }
  ASSERT_EQ(damaged_files, 1);
  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(Options(), &store);
  ASSERT_TRUE(s.ok()) << "damaged cursors kept the store from opening: " << s.ToString();
  size_t damaged = 0;
  for (int i = 0; i < 200; ++i) {
    std::string value;
    Status r = store->GetSubscription("team-" + std::to_string(i), &value);
    // A damaged cursor must never look like a missing one: that would
    // restart the subscription from its start option, skipping or
    // repeating events.
    ASSERT_NE(r.code(), StatusCode::kNotFound) << "team-" << i << ": " << r.ToString();
    if (!r.ok()) {
      ++damaged;
      EXPECT_EQ(r.code(), StatusCode::kCorruption) << r.ToString();
      EXPECT_NE(r.message().find("team-" + std::to_string(i)), std::string::npos)
          << r.message();
    } else {
      EXPECT_EQ(value, std::string(200, 'c')) << "a damaged cursor was served";
    }
  }
  EXPECT_GT(damaged, 0u);
  std::vector<std::pair<std::string, std::string>> all;
  Status l = store->ListSubscriptions(&all);
  EXPECT_EQ(l.code(), StatusCode::kCorruption) << l.ToString();
  EXPECT_TRUE(all.empty());
}

}  // namespace
}  // namespace icr::store
