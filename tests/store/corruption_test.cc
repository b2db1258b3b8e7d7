// Damaged files on a real RocksDB directory: the store never serves corrupt
// data. A flipped byte inside a table file (SST) is caught by its block
// checksum and reported as kCorruption naming the data directory (the gRPC
// layer maps it to DATA_LOSS), on open or on read; a WAL cut short (a torn
// last write) recovers to a consistent earlier state with dense positions.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
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

// Flips one byte at `offset` of `path`.
void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  ASSERT_TRUE(f.good()) << path;
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
  for (uint64_t off = 4096; off < largest_size / 2; off += 16384) FlipByte(largest, off);

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

TEST_F(CorruptionTest, AWalCutShortRecoversToAConsistentEarlierState) {
  // Events written and closed without a flush stay in the WAL only.
  {
    std::unique_ptr<EventStore> store;
    ASSERT_TRUE(OpenRocksDbStore(Options(), &store).ok());
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(Append(store.get(), {AdmissionEvent(TestNhsNumber(i % 5),
                                                      "w-" + std::to_string(i))})
                      .ok());
    }
  }
  auto logs = FilesEndingWith(dir_.path() + "/db", ".log");
  ASSERT_FALSE(logs.empty());
  std::string wal;
  for (const auto& l : logs) {
    if (wal.empty() || fs::file_size(l) > fs::file_size(wal)) wal = l;
  }
  const uintmax_t size = fs::file_size(wal);
  ASSERT_GT(size, 300u);
  fs::resize_file(wal, size - 150);  // the last write torn

  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(Options(), &store);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const uint64_t last = store->LastPosition();
  EXPECT_LT(last, 20u) << "the torn record was not dropped";
  EXPECT_GT(last, 10u) << "far more than the torn record was dropped";
  std::vector<EventPtr> all;
  ASSERT_TRUE(store->ReadFrom(1, 100, &all).ok());
  ASSERT_EQ(all.size(), last);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i]->position, i + 1);
    EXPECT_EQ(all[i]->event.source_message_id(), "w-" + std::to_string(i));
  }
  // The store goes on from there: positions stay dense.
  ASSERT_TRUE(Append(store.get(), {AdmissionEvent(TestNhsNumber(1), "after")}).ok());
  EXPECT_EQ(store->LastPosition(), last + 1);
}

}  // namespace
}  // namespace icr::store
