// Tests of the RocksDB event store (store/store.h, store/rocksdb_store.cc),
// each on a real RocksDB directory under a fresh temp dir.
//
// The crash tests re-execute this binary (fork + exec of /proc/self/exe with
// --gtest_filter=CrashChild.Run and ICR_STORE_CHILD_* in the environment) so
// the child starts from a clean process: a plain fork of a process that has
// RocksDB's background threads running is not safe.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/store.h"

namespace icr::store {
namespace {

namespace fs = std::filesystem;
using icr::v1::CareEvent;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

// `count` NHS numbers from the test range 999 000 0000 - 999 999 9999 that
// pass Modulus 11, ascending.
std::vector<std::string> TestNhsNumbers(size_t count) {
  std::vector<std::string> out;
  for (uint64_t base = 999000000; base <= 999999999 && out.size() < count; ++base) {
    const std::string digits = std::to_string(base);
    int sum = 0;
    for (int i = 0; i < 9; ++i) sum += (digits[i] - '0') * (10 - i);
    int check = 11 - sum % 11;
    if (check == 11) check = 0;
    if (check == 10) continue;  // no valid number with this stem
    out.push_back(digits + static_cast<char>('0' + check));
  }
  return out;
}

CareEvent MakeEvent(const std::string& message_id, const std::string& nhs,
                    const std::string& system = "uhcw-epr") {
  CareEvent e;
  e.set_source_system_id(system);
  e.set_source_organisation("RKB");
  e.set_care_setting(icr::v1::ACUTE);
  e.set_source_message_id(message_id);
  e.set_nhs_number(nhs);
  e.mutable_occurred_at()->set_seconds(1700000000);
  e.set_priority(icr::v1::ROUTINE);
  e.set_event_type(icr::v1::ADMISSION);
  e.mutable_admission()->set_encounter_id("enc-" + message_id);
  e.mutable_admission()->mutable_location()->set_site("RKB01");
  e.mutable_admission()->mutable_location()->set_ward("Ward 10");
  return e;
}

int64_t Micros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

struct AppendOutcome {
  Status status;
  std::vector<AppendResult> results;
};

AppendOutcome AppendSync(EventStore* store, std::vector<CareEvent> events) {
  auto promise = std::make_shared<std::promise<AppendOutcome>>();
  auto future = promise->get_future();
  store->AppendAsync(std::move(events), [promise](const Status& s, std::vector<AppendResult> r) {
    promise->set_value(AppendOutcome{s, std::move(r)});
  });
  return future.get();
}

bool IsUuidV4(const std::string& s) {
  static const std::regex kUuid(
      "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  return std::regex_match(s, kUuid);
}

std::string MakeTempDir() {
  std::string templ = (fs::temp_directory_path() / "icr_store_test_XXXXXX").string();
  char* made = mkdtemp(templ.data());
  return made == nullptr ? std::string() : std::string(made);
}

// ---------------------------------------------------------------------------
// Child processes (crash and lock tests)
// ---------------------------------------------------------------------------

constexpr char kChildModeEnv[] = "ICR_STORE_CHILD_MODE";
constexpr char kChildDirEnv[] = "ICR_STORE_CHILD_DIR";
constexpr char kChildFdEnv[] = "ICR_STORE_CHILD_FD";
constexpr char kChildCountEnv[] = "ICR_STORE_CHILD_COUNT";

void WriteLine(int fd, const std::string& line) {
  std::string s = line + "\n";  // < PIPE_BUF: one atomic write
  ssize_t ignored = write(fd, s.data(), s.size());
  (void)ignored;
}

// Runs only when started by SpawnChild.
//  append_exit: appends COUNT events one call at a time, reporting each
//    acknowledged message id, then _exit(0) without Close.
//  append_forever: 4 threads append until killed, reporting each ack.
//  hold: opens the store, reports "ready", waits to be killed.
TEST(CrashChild, Run) {
  const char* mode = getenv(kChildModeEnv);
  if (mode == nullptr) GTEST_SKIP() << "only runs as a child of the crash tests";
  const std::string dir = getenv(kChildDirEnv);
  const int fd = atoi(getenv(kChildFdEnv));
  const int count = atoi(getenv(kChildCountEnv));
  StoreOptions options;
  options.data_dir = dir;
  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(options, &store);
  if (!s.ok()) {
    WriteLine(fd, "error " + s.ToString());
    _exit(2);
  }
  const std::vector<std::string> nhs = TestNhsNumbers(20);
  if (std::string(mode) == "hold") {
    WriteLine(fd, "ready");
    for (;;) pause();
  }
  if (std::string(mode) == "append_exit") {
    for (int i = 0; i < count; ++i) {
      const std::string id = "exit-" + std::to_string(i);
      AppendOutcome o = AppendSync(store.get(), {MakeEvent(id, nhs[i % nhs.size()])});
      if (!o.status.ok()) _exit(3);
      WriteLine(fd, id);
    }
    _exit(0);  // no Close, no destructors: like a crash right after the acks
  }
  // append_forever
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0;; ++i) {
        const std::string id = "kill-" + std::to_string(t) + "-" + std::to_string(i);
        std::vector<CareEvent> batch = {MakeEvent(id, nhs[(t * 7 + i) % nhs.size()])};
        if (i % 5 == 0) batch.push_back(MakeEvent(id + "-b", nhs[i % nhs.size()]));
        AppendOutcome o = AppendSync(store.get(), std::move(batch));
        if (!o.status.ok()) _exit(3);
        WriteLine(fd, id);
        if (i % 5 == 0) WriteLine(fd, id + "-b");
      }
    });
  }
  for (auto& th : threads) th.join();
}

struct Child {
  pid_t pid = -1;
  int fd = -1;  // read end of the child's report pipe
  std::string buffered;

  // Next line from the child; false at EOF.
  bool ReadLine(std::string* line) {
    for (;;) {
      const size_t nl = buffered.find('\n');
      if (nl != std::string::npos) {
        *line = buffered.substr(0, nl);
        buffered.erase(0, nl + 1);
        return true;
      }
      char buf[4096];
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) return false;
      buffered.append(buf, static_cast<size_t>(n));
    }
  }

  // SIGKILLs (if still running) and reaps the child; returns its wait status.
  int KillAndWait() {
    if (pid > 0) kill(pid, SIGKILL);
    return Wait();
  }
  int Wait() {
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    pid = -1;
    if (fd >= 0) close(fd);
    fd = -1;
    return status;
  }
};

Child SpawnChild(const std::string& mode, const std::string& dir, int count) {
  int fds[2];
  Child child;
  if (pipe(fds) != 0) return child;
  // Everything the child needs is prepared before fork: after it, the child
  // only calls async-signal-safe functions until exec.
  const std::string env_strings[] = {std::string(kChildModeEnv) + "=" + mode,
                                     std::string(kChildDirEnv) + "=" + dir,
                                     std::string(kChildFdEnv) + "=" + std::to_string(fds[1]),
                                     std::string(kChildCountEnv) + "=" + std::to_string(count)};
  std::vector<char*> envp;
  for (const std::string& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const char* argv[] = {"icr_store_rocksdb_store_test", "--gtest_filter=CrashChild.Run", nullptr};
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDOUT_FILENO);
    execve("/proc/self/exe", const_cast<char* const*>(argv), envp.data());
    _exit(127);
  }
  close(fds[1]);
  child.pid = pid;
  child.fd = fds[0];
  return child;
}

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir();
    ASSERT_FALSE(root_.empty());
    options_.data_dir = root_ + "/db";
    nhs_ = TestNhsNumbers(50);
    ASSERT_EQ(nhs_.size(), 50u);
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  void OpenStore() {
    store_.reset();
    Status s = OpenRocksDbStore(options_, &store_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::vector<EventPtr> ReadAll() {
    std::vector<EventPtr> all;
    Status s = store_->ReadFrom(1, 1u << 30, &all);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return all;
  }

  std::string root_;
  StoreOptions options_;
  std::vector<std::string> nhs_;
  std::unique_ptr<EventStore> store_;
};

// ---------------------------------------------------------------------------
// Append
// ---------------------------------------------------------------------------

TEST_F(StoreTest, AppendAssignsDensePositionsTimesAndUuids) {
  OpenStore();
  EXPECT_EQ(store_->LastPosition(), 0u);
  std::vector<AppendResult> acked;
  for (int i = 0; i < 10; ++i) {
    AppendOutcome o = AppendSync(store_.get(), {MakeEvent("m" + std::to_string(i), nhs_[i])});
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    ASSERT_EQ(o.results.size(), 1u);
    acked.push_back(o.results[0]);
  }
  std::vector<CareEvent> five;
  for (int i = 10; i < 15; ++i) five.push_back(MakeEvent("m" + std::to_string(i), nhs_[i]));
  AppendOutcome o = AppendSync(store_.get(), five);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  ASSERT_EQ(o.results.size(), 5u);
  acked.insert(acked.end(), o.results.begin(), o.results.end());

  std::set<std::string> ids;
  for (size_t i = 0; i < acked.size(); ++i) {
    EXPECT_EQ(acked[i].position, i + 1);
    EXPECT_FALSE(acked[i].duplicate);
    EXPECT_TRUE(IsUuidV4(acked[i].event_id)) << acked[i].event_id;
    ids.insert(acked[i].event_id);
    if (i > 0) {
      EXPECT_GE(acked[i].recorded_at_micros, acked[i - 1].recorded_at_micros);
    }
  }
  EXPECT_EQ(ids.size(), acked.size());
  EXPECT_EQ(store_->LastPosition(), 15u);

  std::vector<EventPtr> all = ReadAll();
  ASSERT_EQ(all.size(), 15u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i]->position, i + 1);
    EXPECT_EQ(all[i]->event.position(), i + 1);
    EXPECT_EQ(all[i]->event.event_id(), acked[i].event_id);
    EXPECT_EQ(Micros(all[i]->event.recorded_at()), acked[i].recorded_at_micros);
    EXPECT_EQ(all[i]->event.source_message_id(), "m" + std::to_string(i));
    EXPECT_EQ(all[i]->event.nhs_number(), nhs_[i]);
    EXPECT_EQ(all[i]->event.admission().encounter_id(), "enc-m" + std::to_string(i));
  }

  // Paged reads and Get.
  std::vector<EventPtr> page;
  ASSERT_TRUE(store_->ReadFrom(14, 10, &page).ok());
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0]->position, 14u);
  ASSERT_TRUE(store_->ReadFrom(3, 4, &page).ok());
  ASSERT_EQ(page.size(), 4u);
  EXPECT_EQ(page.back()->position, 6u);
  ASSERT_TRUE(store_->ReadFrom(16, 10, &page).ok());
  EXPECT_TRUE(page.empty());
  EventPtr one;
  ASSERT_TRUE(store_->Get(7, &one).ok());
  EXPECT_EQ(one->event.event_id(), acked[6].event_id);
  EXPECT_EQ(store_->Get(16, &one).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Get(0, &one).code(), StatusCode::kNotFound);

  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.last_position, 15u);
  EXPECT_EQ(stats.appended_events, 15u);
  EXPECT_EQ(stats.duplicate_events, 0u);
  EXPECT_GE(stats.write_batches, 1u);
}

TEST_F(StoreTest, EmptyAppendSucceedsWithNoResults) {
  OpenStore();
  AppendOutcome o = AppendSync(store_.get(), {});
  EXPECT_TRUE(o.status.ok());
  EXPECT_TRUE(o.results.empty());
  EXPECT_EQ(store_->LastPosition(), 0u);
}

TEST_F(StoreTest, DuplicatesWithinAndAcrossCallsStoreNothingNew) {
  OpenStore();
  AppendOutcome first = AppendSync(
      store_.get(), {MakeEvent("a", nhs_[0]), MakeEvent("b", nhs_[1]), MakeEvent("a", nhs_[0])});
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  ASSERT_EQ(first.results.size(), 3u);
  EXPECT_EQ(first.results[0].position, 1u);
  EXPECT_FALSE(first.results[0].duplicate);
  EXPECT_EQ(first.results[1].position, 2u);
  EXPECT_TRUE(first.results[2].duplicate);
  EXPECT_EQ(first.results[2].position, 1u);
  EXPECT_EQ(first.results[2].event_id, first.results[0].event_id);
  EXPECT_EQ(first.results[2].recorded_at_micros, first.results[0].recorded_at_micros);

  AppendOutcome second =
      AppendSync(store_.get(), {MakeEvent("b", nhs_[1]), MakeEvent("c", nhs_[2])});
  ASSERT_TRUE(second.status.ok());
  ASSERT_EQ(second.results.size(), 2u);
  EXPECT_TRUE(second.results[0].duplicate);
  EXPECT_EQ(second.results[0].position, 2u);
  EXPECT_EQ(second.results[0].event_id, first.results[1].event_id);
  EXPECT_EQ(second.results[0].recorded_at_micros, first.results[1].recorded_at_micros);
  EXPECT_FALSE(second.results[1].duplicate);
  EXPECT_EQ(second.results[1].position, 3u);

  // Only duplicates: nothing written.
  const uint64_t batches = store_->Stats().write_batches;
  AppendOutcome third = AppendSync(store_.get(), {MakeEvent("c", nhs_[2])});
  ASSERT_TRUE(third.status.ok());
  EXPECT_TRUE(third.results[0].duplicate);
  EXPECT_EQ(third.results[0].position, 3u);
  EXPECT_EQ(store_->Stats().write_batches, batches);

  // Same message id from another system is a different event.
  AppendOutcome other = AppendSync(store_.get(), {MakeEvent("a", nhs_[0], "swft-pas")});
  ASSERT_TRUE(other.status.ok());
  EXPECT_FALSE(other.results[0].duplicate);
  EXPECT_EQ(other.results[0].position, 4u);

  EXPECT_EQ(store_->LastPosition(), 4u);
  EXPECT_EQ(ReadAll().size(), 4u);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.appended_events, 4u);
  EXPECT_EQ(stats.duplicate_events, 3u);

  // Still a duplicate after a reopen, "however long after".
  store_->Close();
  OpenStore();
  AppendOutcome later = AppendSync(store_.get(), {MakeEvent("a", nhs_[0])});
  ASSERT_TRUE(later.status.ok());
  EXPECT_TRUE(later.results[0].duplicate);
  EXPECT_EQ(later.results[0].position, 1u);
  EXPECT_EQ(later.results[0].event_id, first.results[0].event_id);
  EXPECT_EQ(later.results[0].recorded_at_micros, first.results[0].recorded_at_micros);
  EXPECT_EQ(store_->LastPosition(), 4u);
}

TEST_F(StoreTest, RejectsWhenQueueWouldOverflow) {
  options_.max_queued_events = 5;
  OpenStore();
  std::vector<CareEvent> six;
  for (int i = 0; i < 6; ++i) six.push_back(MakeEvent("q" + std::to_string(i), nhs_[i]));
  AppendOutcome o = AppendSync(store_.get(), six);
  EXPECT_EQ(o.status.code(), StatusCode::kResourceExhausted) << o.status.ToString();
  EXPECT_TRUE(o.results.empty());
  EXPECT_EQ(store_->LastPosition(), 0u);
  six.pop_back();
  EXPECT_TRUE(AppendSync(store_.get(), six).status.ok());
  EXPECT_EQ(store_->LastPosition(), 5u);
}

TEST_F(StoreTest, CallLargerThanBatchLimitIsNotSplit) {
  options_.max_batch_events = 4;
  OpenStore();
  std::vector<CareEvent> ten;
  for (int i = 0; i < 10; ++i) ten.push_back(MakeEvent("big" + std::to_string(i), nhs_[i]));
  AppendOutcome o = AppendSync(store_.get(), ten);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  ASSERT_EQ(o.results.size(), 10u);
  EXPECT_EQ(o.results.back().position, 10u);
  EXPECT_EQ(store_->Stats().write_batches, 1u);
}

// Appends calls without waiting and records where each landed: the position
// of its first event, by that event's message id.
class OrderedAppends {
 public:
  explicit OrderedAppends(EventStore* store) : store_(store) {}
  void Add(std::vector<CareEvent> events, uint64_t origin) {
    const std::string id = events.front().source_message_id();
    ++pending_;
    store_->AppendOrdered(std::move(events), origin,
                          [this, id](const Status& s, std::vector<AppendResult> r) {
                            EXPECT_TRUE(s.ok()) << s.ToString();
                            std::lock_guard<std::mutex> lock(mu_);
                            if (!r.empty()) position_[id] = r[0].position;
                            --pending_;
                          });
  }
  // Waits for every call's answer; then the positions by message id.
  std::map<std::string, uint64_t> Wait() {
    while (pending_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::lock_guard<std::mutex> lock(mu_);
    return position_;
  }

 private:
  EventStore* const store_;
  std::mutex mu_;
  std::map<std::string, uint64_t> position_;
  std::atomic<int> pending_{0};
};

CareEvent WithPriority(CareEvent e, icr::v1::Priority p) {
  e.set_priority(p);
  return e;
}

TEST_F(StoreTest, UrgentCallsOvertakeQueuedBulkButNotTheirOwnStreamsCallsAboutThePerson) {
  // Small routine groups, so 300 queued bulk calls take many synced writes.
  options_.max_routine_batch_events = 2;
  options_.bulk_share = 1.0;
  OpenStore();
  OrderedAppends appends(store_.get());
  auto append = [&](CareEvent e, uint64_t origin) { appends.Add({std::move(e)}, origin); };
  auto with_priority = WithPriority;
  // Stream 7 loads 150 bulk events about others, one about person 0, then
  // 150 more.
  for (int i = 0; i < 300; ++i) {
    if (i == 150) append(with_priority(MakeEvent("bulk-p0", nhs_[0]), icr::v1::BULK), 7);
    append(with_priority(MakeEvent("bulk" + std::to_string(i), nhs_[1 + i % 9]), icr::v1::BULK),
           7);
  }
  // Urgent: stream 7 about person 0 (must stay behind its bulk-p0), an
  // independent call about person 0, and stream 7 about a person it has
  // nothing queued for.
  append(with_priority(MakeEvent("urgent-own-p0", nhs_[0]), icr::v1::URGENT), 7);
  append(with_priority(MakeEvent("urgent-other-p0", nhs_[0]), icr::v1::URGENT), 0);
  append(with_priority(MakeEvent("urgent-own-p10", nhs_[10]), icr::v1::URGENT), 7);
  std::map<std::string, uint64_t> position = appends.Wait();

  ASSERT_EQ(position.size(), 304u);
  EXPECT_GT(position["urgent-own-p0"], position["bulk-p0"]) << "stream order broken";
  // The others were written ahead of the queued bulk load, bulk-p0 included
  // (concurrent clients have no order between them).
  EXPECT_LT(position["urgent-other-p0"], position["bulk-p0"]);
  EXPECT_LT(position["urgent-own-p10"], position["bulk-p0"]);
}

// Holds the writer thread inside Apply for events whose message id starts
// with "gate", until the test opens that gate.
class GateMachine : public StateMachine {
 public:
  Status Apply(CareEvent* event, StateTxn*) override {
    const std::string& id = event->source_message_id();
    if (id.rfind("gate", 0) != 0) return Status::Ok();
    std::unique_lock<std::mutex> lock(mu_);
    entered_.insert(id);
    cv_.notify_all();
    cv_.wait(lock, [&] { return all_open_ || open_.count(id) > 0; });
    return Status::Ok();
  }
  bool Fold(std::string_view, const std::string* existing, const std::vector<std::string_view>&,
            std::string* out) const override {
    *out = existing ? *existing : std::string();
    return true;
  }
  void AwaitEntered(const std::string& id) {
    std::unique_lock<std::mutex> lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(20), [&] { return entered_.count(id) > 0; }))
        << id << " never reached the writer";
  }
  void Open(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    open_.insert(id);
    cv_.notify_all();
  }
  // Opens every gate, now and later: a test that fails half-way must not
  // leave the store's writer (and so its Close) waiting forever.
  void OpenAll() {
    std::lock_guard<std::mutex> lock(mu_);
    all_open_ = true;
    cv_.notify_all();
  }
  struct OpenAllOnExit {
    std::shared_ptr<GateMachine> gate;
    ~OpenAllOnExit() { gate->OpenAll(); }
  };

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> entered_, open_;
  bool all_open_ = false;
};

TEST_F(StoreTest, AnUrgentCallArrivingMidGroupClosesTheGroupAtTheNextCallBoundary) {
  auto gate = std::make_shared<GateMachine>();
  GateMachine::OpenAllOnExit open_gates_at_exit{gate};
  options_.state_machine = gate;
  options_.bulk_share = 1.0;
  OpenStore();
  OrderedAppends appends(store_.get());
  auto append = [&](std::vector<CareEvent> events, uint64_t origin) {
    appends.Add(std::move(events), origin);
  };
  auto bulk = [&](const std::string& prefix, int n) {
    std::vector<CareEvent> events;
    for (int i = 0; i < n; ++i) {
      // Only the first event of a call carries a gate id.
      events.push_back(
          MakeEvent(i == 0 ? prefix : "m" + std::to_string(i) + "-" + prefix, nhs_[i % 10]));
      events.back().set_priority(icr::v1::BULK);
    }
    return events;
  };
  // The writer is held on a first call, while two bulk calls queue behind it
  // (they then make one group), then held again inside the first of them.
  append(bulk("gate-hold", 1), 0);
  gate->AwaitEntered("gate-hold");
  append(bulk("gate-a", 50), 5);
  append(bulk("b", 50), 5);
  gate->Open("gate-hold");
  gate->AwaitEntered("gate-a");
  // An urgent referral arrives while the group of a and b is being built.
  CareEvent urgent = MakeEvent("urgent", nhs_[3]);
  urgent.set_priority(icr::v1::URGENT);
  append({urgent}, 0);
  gate->Open("gate-a");
  std::map<std::string, uint64_t> position = appends.Wait();

  ASSERT_EQ(position.size(), 4u);
  EXPECT_LT(position["gate-a"], position["urgent"]) << "a call is never split";
  EXPECT_LT(position["urgent"], position["b"]) << "the urgent call waited for the whole group";
  EXPECT_EQ(position["b"], position["urgent"] + 1) << "b was stored whole, after the urgent call";
  EXPECT_EQ(store_->Stats().groups_cut, 1u);
  EXPECT_EQ(store_->LastPosition(), 102u);
  // b kept its own order and content.
  auto all = ReadAll();
  ASSERT_EQ(all.size(), 102u);
  EXPECT_EQ(all[position["b"] - 1]->event.source_message_id(), "b");
  EXPECT_EQ(all.back()->event.source_message_id(), "m49-b");
}

TEST_F(StoreTest, AGroupIsNotCutWhenTheWaitingUrgentCallIsFromTheSameStream) {
  auto gate = std::make_shared<GateMachine>();
  GateMachine::OpenAllOnExit open_gates_at_exit{gate};
  options_.state_machine = gate;
  options_.bulk_share = 1.0;
  OpenStore();
  OrderedAppends appends(store_.get());
  auto append = [&](CareEvent e, uint64_t origin) { appends.Add({std::move(e)}, origin); };
  auto with_priority = WithPriority;
  append(with_priority(MakeEvent("gate-hold", nhs_[0]), icr::v1::BULK), 0);
  gate->AwaitEntered("gate-hold");
  append(with_priority(MakeEvent("gate-a", nhs_[1]), icr::v1::BULK), 9);
  append(with_priority(MakeEvent("b-p2", nhs_[2]), icr::v1::BULK), 9);
  gate->Open("gate-hold");
  gate->AwaitEntered("gate-a");
  // Stream 9's urgent call about person 2 was let past the queue because
  // b-p2 had already been taken into the group: cutting the group would put
  // it ahead of b-p2, against its stream's order.
  append(with_priority(MakeEvent("urgent-p2", nhs_[2]), icr::v1::URGENT), 9);
  gate->Open("gate-a");
  std::map<std::string, uint64_t> position = appends.Wait();
  ASSERT_EQ(position.size(), 4u);
  EXPECT_LT(position["b-p2"], position["urgent-p2"]) << "stream order broken";
  EXPECT_EQ(store_->Stats().groups_cut, 0u);
}

TEST_F(StoreTest, RejectsMalformedNhsNumberWithoutStoring) {
  OpenStore();
  AppendOutcome o =
      AppendSync(store_.get(), {MakeEvent("ok", nhs_[0]), MakeEvent("bad", "999000001")});
  EXPECT_EQ(o.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->LastPosition(), 0u);
}

// ---------------------------------------------------------------------------
// Durability and recovery
// ---------------------------------------------------------------------------

TEST_F(StoreTest, ReopenAfterCloseKeepsEverything) {
  OpenStore();
  for (int i = 0; i < 10; ++i) {
    std::vector<CareEvent> batch;
    for (int j = 0; j < 10; ++j) {
      const int n = i * 10 + j;
      batch.push_back(MakeEvent("r" + std::to_string(n), nhs_[n % nhs_.size()]));
    }
    ASSERT_TRUE(AppendSync(store_.get(), batch).status.ok());
  }
  std::vector<std::string> before;
  for (const EventPtr& e : ReadAll()) before.push_back(e->event.SerializeAsString());
  ASSERT_EQ(before.size(), 100u);
  const int64_t last_recorded = [&] {
    EventPtr e;
    EXPECT_TRUE(store_->Get(100, &e).ok());
    return Micros(e->event.recorded_at());
  }();
  store_->Close();
  store_->Close();  // idempotent

  OpenStore();
  EXPECT_EQ(store_->LastPosition(), 100u);
  std::vector<std::string> after;
  for (const EventPtr& e : ReadAll()) after.push_back(e->event.SerializeAsString());
  EXPECT_EQ(after, before);

  AppendOutcome o = AppendSync(store_.get(), {MakeEvent("r-new", nhs_[3])});
  ASSERT_TRUE(o.status.ok());
  EXPECT_EQ(o.results[0].position, 101u);
  EXPECT_GE(o.results[0].recorded_at_micros, last_recorded);
}

TEST_F(StoreTest, ReopenWithoutCloseKeepsAcknowledgedEvents) {
  fs::create_directories(options_.data_dir);
  Child child = SpawnChild("append_exit", options_.data_dir, 200);
  ASSERT_GT(child.pid, 0);
  std::vector<std::string> acked;
  std::string line;
  while (child.ReadLine(&line)) acked.push_back(line);
  const int status = child.Wait();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_EQ(acked.size(), 200u);

  OpenStore();
  EXPECT_EQ(store_->LastPosition(), 200u);
  std::vector<EventPtr> all = ReadAll();
  ASSERT_EQ(all.size(), 200u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i]->position, i + 1);
    EXPECT_EQ(all[i]->event.source_message_id(), acked[i]);
  }
  AppendOutcome o = AppendSync(store_.get(), {MakeEvent("exit-7", nhs_[0])});
  ASSERT_TRUE(o.status.ok());
  EXPECT_TRUE(o.results[0].duplicate);
  EXPECT_EQ(o.results[0].position, 8u);
}

TEST_F(StoreTest, KillDuringAppendsLosesNoAcknowledgedEvent) {
  fs::create_directories(options_.data_dir);
  std::set<std::string> acked;
  // Kill -9 cycles on the same directory, each after a different number of
  // acknowledgements.
  for (int cycle = 0; cycle < 8; ++cycle) {
    Child child = SpawnChild("append_forever", options_.data_dir, 0);
    ASSERT_GT(child.pid, 0);
    std::string line;
    size_t this_cycle = 0;
    const size_t kill_after = 50 + (static_cast<size_t>(cycle) * 173) % 600;
    while (this_cycle < kill_after && child.ReadLine(&line)) {
      ASSERT_EQ(line.rfind("kill-", 0), 0u) << line;
      acked.insert(line + "#" + std::to_string(cycle));
      ++this_cycle;
    }
    const int status = child.KillAndWait();
    ASSERT_TRUE(WIFSIGNALED(status)) << "child ended early, status " << status;
    ASSERT_GT(this_cycle, 0u);

    // Every acknowledged event is there, positions are dense and per-patient
    // order is position order.
    OpenStore();
    std::vector<EventPtr> all = ReadAll();
    ASSERT_EQ(all.size(), store_->LastPosition());
    std::set<std::string> stored_ids;
    for (size_t i = 0; i < all.size(); ++i) {
      ASSERT_EQ(all[i]->position, i + 1);
      stored_ids.insert(all[i]->event.source_message_id());
    }
    EXPECT_EQ(stored_ids.size(), all.size()) << "an idempotency key was stored twice";
    for (const std::string& a : acked) {
      const std::string id = a.substr(0, a.find('#'));
      // Message ids repeat across cycles (the child restarts its counters):
      // those resends must have been answered as duplicates, so the id is
      // present exactly once.
      EXPECT_TRUE(stored_ids.count(id)) << "acknowledged event lost: " << a;
    }
    for (const std::string& n : TestNhsNumbers(20)) {
      std::vector<EventPtr> mine;
      ASSERT_TRUE(store_->ReadPatient(n, 0, 1u << 20, &mine).ok());
      for (size_t i = 1; i < mine.size(); ++i) {
        ASSERT_LT(mine[i - 1]->position, mine[i]->position);
      }
    }
    store_.reset();
  }
}

TEST_F(StoreTest, RelaxedDurabilityStoresAndReopens) {
  options_.durability = Durability::kRelaxed;
  OpenStore();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        AppendSync(store_.get(), {MakeEvent("x" + std::to_string(i), nhs_[i])}).status.ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a background sync
  ASSERT_TRUE(AppendSync(store_.get(), {MakeEvent("x-last", nhs_[0])}).status.ok());
  store_->Close();
  OpenStore();
  EXPECT_EQ(store_->LastPosition(), 21u);
  EXPECT_EQ(ReadAll().size(), 21u);
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

TEST_F(StoreTest, ReadPatientReturnsOnlyThatPersonInOrderWithPaging) {
  OpenStore();
  const std::string alice = nhs_[0], bob = nhs_[1], carol = nhs_[2];
  std::vector<uint64_t> alice_positions;
  for (int i = 0; i < 30; ++i) {
    const std::string& who = i % 3 == 0 ? alice : (i % 3 == 1 ? bob : carol);
    AppendOutcome o = AppendSync(store_.get(), {MakeEvent("p" + std::to_string(i), who)});
    ASSERT_TRUE(o.status.ok());
    if (who == alice) alice_positions.push_back(o.results[0].position);
  }
  std::vector<EventPtr> got;
  ASSERT_TRUE(store_->ReadPatient(alice, 0, 100, &got).ok());
  ASSERT_EQ(got.size(), alice_positions.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i]->position, alice_positions[i]);
    EXPECT_EQ(got[i]->event.nhs_number(), alice);
  }

  // Paging with `after`.
  std::vector<uint64_t> paged;
  uint64_t after = 0;
  for (;;) {
    std::vector<EventPtr> page;
    ASSERT_TRUE(store_->ReadPatient(alice, after, 4, &page).ok());
    if (page.empty()) break;
    EXPECT_LE(page.size(), 4u);
    for (const EventPtr& e : page) paged.push_back(e->position);
    after = page.back()->position;
  }
  EXPECT_EQ(paged, alice_positions);

  // `after` between positions.
  ASSERT_TRUE(store_->ReadPatient(alice, alice_positions[2] - 1, 1, &got).ok());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->position, alice_positions[2]);

  // Someone with no events; a malformed number.
  ASSERT_TRUE(store_->ReadPatient(nhs_[40], 0, 100, &got).ok());
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(store_->ReadPatient("12345", 0, 100, &got).code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, FindPositionAtTime) {
  OpenStore();
  uint64_t position = 0;
  ASSERT_TRUE(store_->FindPositionAtTime(0, &position).ok());
  EXPECT_EQ(position, 1u);  // empty: LastPosition()+1

  std::vector<AppendResult> acked;
  for (int g = 0; g < 12; ++g) {
    std::vector<CareEvent> batch;
    for (int j = 0; j <= g % 3; ++j) {
      batch.push_back(MakeEvent("t" + std::to_string(g) + "-" + std::to_string(j), nhs_[g]));
    }
    AppendOutcome o = AppendSync(store_.get(), batch);
    ASSERT_TRUE(o.status.ok());
    acked.insert(acked.end(), o.results.begin(), o.results.end());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const uint64_t last = store_->LastPosition();
  ASSERT_EQ(last, acked.size());

  for (const AppendResult& r : acked) {
    ASSERT_TRUE(store_->FindPositionAtTime(r.recorded_at_micros, &position).ok());
    // The first position with this recorded_at.
    uint64_t expected = r.position;
    while (expected > 1 && acked[expected - 2].recorded_at_micros >= r.recorded_at_micros) {
      --expected;
    }
    EXPECT_EQ(position, expected);
    // Just after it: the first position of a later time.
    ASSERT_TRUE(store_->FindPositionAtTime(r.recorded_at_micros + 1, &position).ok());
    uint64_t next = r.position + 1;
    while (next <= last && acked[next - 1].recorded_at_micros == r.recorded_at_micros) ++next;
    EXPECT_EQ(position, next);
  }
  ASSERT_TRUE(store_->FindPositionAtTime(0, &position).ok());
  EXPECT_EQ(position, 1u);
  ASSERT_TRUE(
      store_->FindPositionAtTime(acked.back().recorded_at_micros + 1000000, &position).ok());
  EXPECT_EQ(position, last + 1);
}

// ---------------------------------------------------------------------------
// Concurrency, group commit and the commit listener
// ---------------------------------------------------------------------------

TEST_F(StoreTest, ConcurrentAppendsShareSyncsAndKeepOrder) {
  OpenStore();
  std::mutex listener_mu;
  std::vector<uint64_t> published;
  store_->SetCommitListener([&](const std::vector<EventPtr>& committed) {
    std::lock_guard lk(listener_mu);
    for (const EventPtr& e : committed) published.push_back(e->position);
  });

  constexpr int kThreads = 8;
  constexpr int kPerThread = 500;
  std::vector<std::vector<AppendResult>> per_thread(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = "c" + std::to_string(t) + "-" + std::to_string(i);
        AppendOutcome o =
            AppendSync(store_.get(), {MakeEvent(id, nhs_[(t * kPerThread + i) % nhs_.size()])});
        if (!o.status.ok() || o.results.size() != 1 || o.results[0].duplicate) {
          ++failures;
          continue;
        }
        per_thread[t].push_back(o.results[0]);
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);

  constexpr uint64_t kTotal = kThreads * kPerThread;
  std::set<uint64_t> positions;
  std::set<std::string> ids;
  for (const auto& results : per_thread) {
    for (size_t i = 0; i < results.size(); ++i) {
      positions.insert(results[i].position);
      ids.insert(results[i].event_id);
      if (i > 0) {
        EXPECT_LT(results[i - 1].position, results[i].position);
      }
    }
  }
  EXPECT_EQ(positions.size(), kTotal);
  EXPECT_EQ(*positions.begin(), 1u);
  EXPECT_EQ(*positions.rbegin(), kTotal);
  EXPECT_EQ(ids.size(), kTotal);
  EXPECT_EQ(store_->LastPosition(), kTotal);

  std::vector<EventPtr> all = ReadAll();
  ASSERT_EQ(all.size(), kTotal);
  std::map<std::string, std::vector<uint64_t>> by_patient;
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i]->position, i + 1);
    if (i > 0) {
      EXPECT_GE(Micros(all[i]->event.recorded_at()), Micros(all[i - 1]->event.recorded_at()));
    }
    by_patient[all[i]->event.nhs_number()].push_back(all[i]->position);
  }
  EXPECT_EQ(by_patient.size(), nhs_.size());
  for (const auto& [nhs, expected] : by_patient) {
    std::vector<EventPtr> mine;
    ASSERT_TRUE(store_->ReadPatient(nhs, 0, 1u << 20, &mine).ok());
    std::vector<uint64_t> got;
    for (const EventPtr& e : mine) got.push_back(e->position);
    EXPECT_EQ(got, expected) << nhs;
  }

  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.appended_events, kTotal);
  EXPECT_LT(stats.write_batches, kTotal) << "no group commit happened";
  std::cout << "[ info ] " << kTotal << " events in " << stats.write_batches << " write batches\n";

  std::lock_guard lk(listener_mu);
  ASSERT_EQ(published.size(), kTotal);
  for (size_t i = 0; i < published.size(); ++i) EXPECT_EQ(published[i], i + 1);
}

TEST_F(StoreTest, CommitListenerSeesEachNewEventOnceInOrder) {
  OpenStore();
  std::mutex mu;
  std::vector<EventPtr> seen;
  uint64_t last_seen_at_listener = 0;
  store_->SetCommitListener([&](const std::vector<EventPtr>& committed) {
    std::lock_guard lk(mu);
    for (const EventPtr& e : committed) seen.push_back(e);
    last_seen_at_listener = store_->LastPosition();  // already published
  });
  ASSERT_TRUE(AppendSync(store_.get(), {MakeEvent("l1", nhs_[0]), MakeEvent("l2", nhs_[1]),
                                        MakeEvent("l1", nhs_[0])})
                  .status.ok());
  ASSERT_TRUE(AppendSync(store_.get(), {MakeEvent("l2", nhs_[1])}).status.ok());  // duplicate
  // Concurrent calls, some resends.
  std::vector<std::future<AppendOutcome>> futures;
  for (int i = 0; i < 40; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] {
      return AppendSync(store_.get(), {MakeEvent("l" + std::to_string(3 + i / 2), nhs_[i])});
    }));
  }
  for (auto& f : futures) ASSERT_TRUE(f.get().status.ok());

  std::lock_guard lk(mu);
  ASSERT_EQ(seen.size(), 2u + 20u);
  EXPECT_EQ(store_->LastPosition(), seen.size());
  std::set<std::string> keys;
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i]->position, i + 1);
    EXPECT_EQ(seen[i]->event.position(), i + 1);
    EXPECT_TRUE(IsUuidV4(seen[i]->event.event_id()));
    keys.insert(seen[i]->event.source_message_id());
  }
  EXPECT_EQ(keys.size(), seen.size());
  EXPECT_EQ(last_seen_at_listener, seen.size());
}

// ---------------------------------------------------------------------------
// Subscriptions and parked events
// ---------------------------------------------------------------------------

TEST_F(StoreTest, SubscriptionAndParkedRecordsRoundTrip) {
  OpenStore();
  std::string value;
  EXPECT_EQ(store_->GetSubscription("ward-feed", &value).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->PutSubscription("ward-feed", "cursor=0", true).ok());
  ASSERT_TRUE(store_->PutSubscription("ward-feed-2", "cursor=5", false).ok());
  ASSERT_TRUE(store_->PutSubscription("brokerage", std::string("bin\0ary", 7), true).ok());
  ASSERT_TRUE(store_->GetSubscription("ward-feed", &value).ok());
  EXPECT_EQ(value, "cursor=0");
  ASSERT_TRUE(store_->PutSubscription("ward-feed", "cursor=9", true).ok());
  ASSERT_TRUE(store_->GetSubscription("ward-feed", &value).ok());
  EXPECT_EQ(value, "cursor=9");

  // Parked: the subscription value is written together with the entry.
  ASSERT_TRUE(store_->PutParked("ward-feed", 256, "p256", "cursor=256").ok());
  ASSERT_TRUE(store_->PutParked("ward-feed", 3, "p3", "cursor=300").ok());
  ASSERT_TRUE(store_->PutParked("ward-feed", 70000, "p70000", "cursor=70000").ok());
  ASSERT_TRUE(store_->PutParked("ward-feed-2", 1, "other", "cursor=7").ok());
  ASSERT_TRUE(store_->GetSubscription("ward-feed", &value).ok());
  EXPECT_EQ(value, "cursor=70000");

  std::vector<std::pair<uint64_t, std::string>> parked;
  ASSERT_TRUE(store_->ListParked("ward-feed", 100, &parked).ok());
  ASSERT_EQ(parked.size(), 3u);
  EXPECT_EQ(parked[0], std::make_pair(uint64_t{3}, std::string("p3")));
  EXPECT_EQ(parked[1], std::make_pair(uint64_t{256}, std::string("p256")));
  EXPECT_EQ(parked[2], std::make_pair(uint64_t{70000}, std::string("p70000")));
  ASSERT_TRUE(store_->ListParked("ward-feed", 2, &parked).ok());
  EXPECT_EQ(parked.size(), 2u);

  ASSERT_TRUE(store_->DeleteParked("ward-feed", 256).ok());
  ASSERT_TRUE(store_->ListParked("ward-feed", 100, &parked).ok());
  ASSERT_EQ(parked.size(), 2u);
  EXPECT_EQ(parked[1].first, 70000u);

  std::vector<std::pair<std::string, std::string>> subs;
  ASSERT_TRUE(store_->ListSubscriptions(&subs).ok());
  ASSERT_EQ(subs.size(), 3u);
  EXPECT_EQ(subs[0].first, "brokerage");
  EXPECT_EQ(subs[0].second, std::string("bin\0ary", 7));
  EXPECT_EQ(subs[1].first, "ward-feed");
  EXPECT_EQ(subs[2].first, "ward-feed-2");

  // Everything survives a reopen.
  store_->Close();
  OpenStore();
  ASSERT_TRUE(store_->ListParked("ward-feed", 100, &parked).ok());
  EXPECT_EQ(parked.size(), 2u);
  ASSERT_TRUE(store_->ListSubscriptions(&subs).ok());
  EXPECT_EQ(subs.size(), 3u);

  // Deleting removes the record and its parked entries, not a longer name's.
  ASSERT_TRUE(store_->DeleteSubscription("ward-feed").ok());
  EXPECT_EQ(store_->GetSubscription("ward-feed", &value).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->ListParked("ward-feed", 100, &parked).ok());
  EXPECT_TRUE(parked.empty());
  ASSERT_TRUE(store_->ListParked("ward-feed-2", 100, &parked).ok());
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].second, "other");
  ASSERT_TRUE(store_->GetSubscription("ward-feed-2", &value).ok());
  ASSERT_TRUE(store_->DeleteSubscription("never-existed").ok());

  store_->Close();
  OpenStore();
  ASSERT_TRUE(store_->ListSubscriptions(&subs).ok());
  ASSERT_EQ(subs.size(), 2u);
  ASSERT_TRUE(store_->ListParked("ward-feed", 100, &parked).ok());
  EXPECT_TRUE(parked.empty());
}

// ---------------------------------------------------------------------------
// Opening and closing
// ---------------------------------------------------------------------------

TEST_F(StoreTest, OpeningADirectoryAlreadyOpenFailsClearly) {
  OpenStore();
  std::unique_ptr<EventStore> second;
  Status s = OpenRocksDbStore(options_, &second);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find(options_.data_dir), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("LOCK held"), std::string::npos) << s.ToString();
  EXPECT_EQ(second, nullptr);
  // The first store is unaffected.
  EXPECT_TRUE(AppendSync(store_.get(), {MakeEvent("still", nhs_[0])}).status.ok());
}

TEST_F(StoreTest, OpeningADirectoryOfAnotherProcessFailsClearly) {
  fs::create_directories(options_.data_dir);
  Child child = SpawnChild("hold", options_.data_dir, 0);
  ASSERT_GT(child.pid, 0);
  std::string line;
  ASSERT_TRUE(child.ReadLine(&line));
  ASSERT_EQ(line, "ready");
  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(options_, &store);
  child.KillAndWait();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("in use by another icr-broker process"), std::string::npos)
      << s.ToString();
  EXPECT_NE(s.message().find(options_.data_dir), std::string::npos) << s.ToString();
  // Once the other process is gone the directory opens.
  OpenStore();
}

TEST_F(StoreTest, OpeningARegularFileFailsClearly) {
  const std::string file = root_ + "/not-a-dir";
  std::ofstream(file) << "hello";
  options_.data_dir = file;
  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(options_, &store);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a directory"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(file), std::string::npos) << s.ToString();
  EXPECT_EQ(store, nullptr);

  options_.data_dir = file + "/db";  // below a file
  s = OpenRocksDbStore(options_, &store);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(file), std::string::npos) << s.ToString();
}

TEST_F(StoreTest, RefusesUnknownSchemaVersion) {
  OpenStore();
  ASSERT_TRUE(AppendSync(store_.get(), {MakeEvent("s1", nhs_[0])}).status.ok());
  store_.reset();
  {
    // Plant version "3" the way a future broker would.
    std::vector<std::string> names;
    ASSERT_TRUE(
        rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), options_.data_dir, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& n : names) descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(
        rocksdb::DB::Open(rocksdb::DBOptions(), options_.data_dir, descriptors, &handles, &raw)
            .ok());
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), "schema_version", "3").ok());
    for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
    delete raw;
  }
  std::unique_ptr<EventStore> store;
  Status s = OpenRocksDbStore(options_, &store);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("schema version '3'"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(options_.data_dir), std::string::npos) << s.ToString();
}

TEST_F(StoreTest, AppendAfterCloseIsAborted) {
  OpenStore();
  ASSERT_TRUE(AppendSync(store_.get(), {MakeEvent("before", nhs_[0])}).status.ok());
  store_->Close();
  AppendOutcome o = AppendSync(store_.get(), {MakeEvent("after", nhs_[0])});
  EXPECT_EQ(o.status.code(), StatusCode::kAborted) << o.status.ToString();
  std::vector<EventPtr> out;
  EXPECT_EQ(store_->ReadFrom(1, 10, &out).code(), StatusCode::kAborted);
  std::string value;
  EXPECT_EQ(store_->GetSubscription("x", &value).code(), StatusCode::kAborted);
}

TEST_F(StoreTest, CloseCompletesQueuedAppends) {
  OpenStore();
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  for (int i = 0; i < 200; ++i) {
    store_->AppendAsync({MakeEvent("cq" + std::to_string(i), nhs_[i % nhs_.size()])},
                        [&](const Status& s, std::vector<AppendResult>) {
                          if (s.ok()) ++ok;
                          ++done;
                        });
  }
  store_->Close();
  EXPECT_EQ(done.load(), 200);
  EXPECT_EQ(ok.load(), 200);
  OpenStore();
  EXPECT_EQ(store_->LastPosition(), 200u);
}

}  // namespace
}  // namespace icr::store
