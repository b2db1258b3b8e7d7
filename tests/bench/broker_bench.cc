// icr_broker_bench: workloads W3-W7 of the benchmark guide against the
// icr-broker DAEMON (its own process, loopback, durability sync), which this
// program starts, stops and kill -9s itself over its own data directories.
//
//   W3 fan-out: N ephemeral Subscribe streams, an open-loop publisher at a
//      fixed rate; deliveries/s, publish -> delivery latency from the
//      schedule (no coordinated omission), slowest subscriber's lag.
//   W4 urgent lane: URGENT discharge referrals at a fixed open-loop rate,
//      idle and while a BULK backfill runs at full speed (PublishBatch);
//      urgent ack and publish -> delivery latency, and the ratio.
//   W5 per-patient history: a store of --events events (loaded once, kept
//      with --keep-data), then GetPatientHistory pages of 100 events, cold
//      (daemon restarted, its files evicted from the page cache) and warm,
//      alone and under a concurrent write load.
//   W6 kill -9 at full load: every acknowledged (position, event id) is
//      recorded, the daemon is killed, restarted (time to ready) and every
//      acknowledged event is read back (lost must be 0).
//   W7 idle Subscribe streams: daemon RSS before and after, KB per stream.
//   catchup: one subscriber reads the history store from position 1, one
//      event per message and in batches (SubscribeRequest.max_batch).
//   slowsub: N subscribers (default 50) at a fixed open-loop rate, on a fresh
//      daemon each phase: baseline, then the same plus one subscriber on its
//      own connection that reads one message and never reads again; the
//      others' publish -> delivery latency in both phases and the p99 ratio
//      (target <= 1.10), when the daemon cut the stuck one off
//      (--subscriber-write-timeout-ms, GetStatus.subscribers_cut_off), RSS.
//
// The daemon is pinned to CPU 0 and this load generator to CPU 1
// (sched_setaffinity; --broker-cpu, --bench-cpu, --no-pin).
//
//   icr_broker_bench --workload w3,w4 --json out.json
//   icr_broker_bench --workload w5,w6 --events 10000000 --keep-data /work/w5store
//   icr_broker_bench --workload slowsub --repeat 3
//   icr_broker_bench --smoke            # every workload, tiny sizes (CI)
#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <semaphore>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "icr/v1/broker.grpc.pb.h"
#include "tests/bench/bench_common.h"
#include "tests/support/test_support.h"

namespace {

using namespace icr::bench;  // NOLINT: the shared benchmark helpers
using icr::v1::CareEvent;
using json = nlohmann::json;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
  std::vector<std::string> workloads = {"w3", "w4", "w5", "w6", "w7", "catchup", "slowsub"};
  std::string broker_bin = ICR_BROKER_BIN;
  int broker_cpu = 0;
  int bench_cpu = 1;
  bool no_pin = false;
  std::string json_path;
  int repeat = 1;
  bool smoke = false;
  size_t event_bytes = 1024;
  uint64_t patients = 100000;  // W3/W4 NHS numbers (Zipf)
  double zipf_s = 1.1;
  // W3
  std::vector<int> w3_subscribers = {1, 10, 100, 1000};
  double w3_rate = 1000;
  double w3_seconds = 10;
  double warmup = 1;
  int max_channels = 100;  // W3/W7: streams share channels beyond this many
  double drain_seconds = 60;
  // W4
  double w4_rate = 50;
  double w4_seconds = 20;
  int w4_bulk_threads = 4;
  int batch = 256;
  // W5/W6
  uint64_t events = 10000000;
  uint64_t history_patients = 0;  // 0: events / 200
  std::string keep_data;
  std::string load_durability = "relaxed";  // the loader phase only (set-up, not measured)
  int load_threads = 4;
  int w5_cold_reads = 1000;
  int w5_warm_reads = 5000;
  int w5_write_threads = 2;
  // W6
  double w6_load_seconds = 5;
  int w6_threads = 4;
  // W7
  std::vector<int> w7_streams = {1000, 5000, 10000};
  int w7_streams_per_channel = 100;
  // catchup: a subscriber reading the history store from position 1
  uint64_t catchup_events = 1000000;
  std::vector<int> catchup_batches = {1, 256};
  // slowsub: N subscribers, then the same N plus one that stops reading
  int slowsub_subscribers = 50;
  double slowsub_rate = 2000;
  double slowsub_seconds = 10;
  int slowsub_write_timeout_ms = 5000;  // the daemon's --subscriber-write-timeout-ms, both phases
  // The same in both phases. About 4 MB of events reach a stuck client's
  // transport before the daemon's write to it waits: at 2,000 x 1 KB/s its
  // window is full after ~2 s, then the write timeout runs.
  size_t slowsub_event_bytes = 1024;
};

bool g_failed = false;
void Fail(const std::string& what) {
  g_failed = true;
  std::fprintf(stderr, "icr_broker_bench: CHECK FAILED: %s\n", what.c_str());
}

std::string Num(double v) {  // 12345.6 -> "12,346"
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  std::string s = buf, out;
  size_t start = (s[0] == '-') ? 1 : 0;
  for (size_t i = 0; i < s.size(); ++i) {
    out += s[i];
    size_t rest = s.size() - i - 1;
    if (i >= start && rest > 0 && rest % 3 == 0) out += ',';
  }
  return out;
}

// A markdown table whose rows may be measured over several rounds: each cell
// prints "median [min-max]" of its rounds.
class Table {
 public:
  Table(std::string title, std::vector<std::string> columns, std::vector<std::string> formats)
      : title_(std::move(title)), columns_(std::move(columns)), formats_(std::move(formats)) {}
  void Add(const std::string& key, const std::vector<double>& values) {
    auto it = std::find_if(rows_.begin(), rows_.end(), [&](auto& r) { return r.first == key; });
    if (it == rows_.end()) {
      rows_.push_back({key, std::vector<std::vector<double>>(values.size())});
      it = rows_.end() - 1;
    }
    for (size_t i = 0; i < values.size() && i < it->second.size(); ++i) {
      it->second[i].push_back(values[i]);
    }
  }
  void Print() const {
    std::printf("\n### %s\n\n|", title_.c_str());
    for (const auto& c : columns_) std::printf(" %s |", c.c_str());
    std::printf("\n|");
    for (size_t i = 0; i < columns_.size(); ++i) std::printf("---|");
    std::printf("\n");
    for (const auto& [key, cells] : rows_) {
      std::printf("| %s |", key.c_str());
      for (size_t i = 0; i < cells.size(); ++i) {
        const std::string& f = formats_[std::min(i, formats_.size() - 1)];
        std::vector<double> v;  // NaN: no value in that round ("-" if none has one)
        for (double x : cells[i]) {
          if (!std::isnan(x)) v.push_back(x);
        }
        if (v.empty()) {
          std::printf(" - |");
        } else if (f == "num") {
          if (v.size() == 1) {
            std::printf(" %s |", Num(v[0]).c_str());
          } else {
            auto [lo, hi] = std::minmax_element(v.begin(), v.end());
            std::printf(" %s [%s-%s] |", Num(Median(v)).c_str(), Num(*lo).c_str(),
                        Num(*hi).c_str());
          }
        } else {
          std::printf(" %s |", Spread(v, f.c_str()).c_str());
        }
      }
      std::printf("\n");
    }
    std::fflush(stdout);
  }

 private:
  std::string title_;
  std::vector<std::string> columns_, formats_;
  std::vector<std::pair<std::string, std::vector<std::vector<double>>>> rows_;
};

// ---------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------

std::string ReadFileFrom(const std::string& path, size_t offset) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<icr::v1::GetStatusResponse> GetStatus(icr::v1::Broker::Stub* stub,
                                                    int timeout_ms = 5000) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  icr::v1::GetStatusResponse resp;
  if (!stub->GetStatus(&ctx, icr::v1::GetStatusRequest(), &resp).ok()) return std::nullopt;
  return resp;
}

class Daemon {
 public:
  Daemon(const Config& cfg, std::string data_dir, std::string log_path,
         std::string durability = "sync")
      : cfg_(cfg),
        data_dir_(std::move(data_dir)),
        log_path_(std::move(log_path)),
        durability_(std::move(durability)) {
    // Pass the adapter/escalation switches only if this build has them.
    const std::string& help = Help(cfg);
    for (const char* flag : {"--mllp-listen", "--fhir-listen", "--escalations"}) {
      if (help.find(flag) != std::string::npos) {
        extra_.push_back(flag);
        extra_.push_back("off");
      }
    }
  }
  ~Daemon() { Stop(); }

  // Another command-line flag for the daemon, from the next Start() on.
  // False (and not added) if this build of icr-broker does not have it.
  bool AddFlag(const std::string& flag, const std::string& value) {
    if (Help(cfg_).find(flag + " ") == std::string::npos) return false;
    extra_.push_back(flag);
    extra_.push_back(value);
    return true;
  }

  // Starts the daemon; returns when GetStatus answers. ready_ms(): spawn ->
  // first GetStatus answer; log_ready_ms(): spawn -> its "ready" log line.
  bool Start(std::string* error, double timeout_s = 600) {
    fs::create_directories(data_dir_);
    struct stat st {};
    const size_t offset = ::stat(log_path_.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
    std::vector<std::string> args = {cfg_.broker_bin, "--data-dir",   data_dir_, "--listen",
                                     "127.0.0.1:0",   "--durability", durability_};
    args.insert(args.end(), extra_.begin(), extra_.end());
    const int64_t t0 = NowNs();
    pid_ = ::fork();
    if (pid_ == 0) {
      if (!cfg_.no_pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cfg_.broker_cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
      }
      int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(log, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    if (pid_ < 0) {
      *error = "fork failed";
      return false;
    }
    // Wait for "ready ... (port N)".
    int port = 0;
    const int64_t give_up = t0 + static_cast<int64_t>(timeout_s * 1e9);
    while (port == 0) {
      const std::string log = ReadFileFrom(log_path_, offset);
      size_t r = log.find(" ready: gRPC on ");
      if (r != std::string::npos) {
        size_t p = log.find("(port ", r);
        if (p != std::string::npos) port = std::atoi(log.c_str() + p + 6);
        log_ready_ms_ = static_cast<double>(NowNs() - t0) / 1e6;
        if (port > 0) break;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        *error = "icr-broker exited during start-up: " + log;
        return false;
      }
      if (NowNs() > give_up) {
        *error = "icr-broker not ready after " + Fmt("%.0f", timeout_s) + " s";
        Kill9();
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    address_ = "127.0.0.1:" + std::to_string(port);
    auto stub = icr::v1::Broker::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    while (!GetStatus(stub.get(), 1000)) {
      if (NowNs() > give_up) {
        *error = "icr-broker does not answer GetStatus";
        Kill9();
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ready_ms_ = static_cast<double>(NowNs() - t0) / 1e6;
    return true;
  }

  // SIGTERM, then SIGKILL after 20 s.
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const int64_t give_up = NowNs() + 20'000'000'000LL;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (NowNs() > give_up) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
  }

  void Kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // VmRSS in KiB (0 if unknown).
  long RssKb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    }
    return 0;
  }

  int pid() const { return pid_; }
  const std::string& address() const { return address_; }
  const std::string& data_dir() const { return data_dir_; }
  double ready_ms() const { return ready_ms_; }
  double log_ready_ms() const { return log_ready_ms_; }
  std::unique_ptr<icr::v1::Broker::Stub> Stub() const {
    return icr::v1::Broker::NewStub(NewChannel(address_, g_channel_ids++));
  }

 private:
  static const std::string& Help(const Config& cfg) {
    static const std::string help = Shell("'" + cfg.broker_bin + "' --help 2>&1");
    return help;
  }

  const Config& cfg_;
  std::string data_dir_, log_path_, durability_, address_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  double ready_ms_ = 0, log_ready_ms_ = 0;
};

// Drops the page-cache pages of every file under `dir` (after syncing it),
// so the next reads come from the disk. Returns the bytes covered.
uint64_t EvictPageCache(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec || !it->is_regular_file(ec)) continue;
    int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    bytes += it->file_size(ec);
    ::close(fd);
  }
  return bytes;
}

uint64_t DirBytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!ec && it->is_regular_file(ec)) bytes += it->file_size(ec);
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// Subscribers (callback API: no thread per stream)
// ---------------------------------------------------------------------------

// A Subscribe call's reactor that keeps how the call ended: Await() waits
// for OnDone, status() is what it got.
class SubscribeReactor : public grpc::ClientReadReactor<icr::v1::SubscribeResponse> {
 public:
  void OnDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = s;
    done_ = true;
    cv_.notify_all();
  }

  bool Await(int timeout_ms = 10000) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return done_; });
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  grpc::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
};

// An ephemeral (or filtered) Subscribe stream. Events whose source_message_id
// starts with `prefix` end "-<index 10>-<scheduled ns 19>"; "probe-" ones
// only say the stream is live. Counts and latencies are kept per stream.
class SubReactor : public SubscribeReactor {
 public:
  SubReactor(std::string prefix, uint64_t total, uint64_t warm, bool record,
             std::string other_prefix = "")
      : prefix_(std::move(prefix)),
        other_prefix_(std::move(other_prefix)),
        total_(total),
        warm_(warm),
        record_(record),
        seen_(total, 0) {}

  // Before Begin(): also keep each latency sample's scheduled time
  // (scheduled_ns()[i] belongs to latency_ns()[i]).
  void KeepSchedule() { keep_schedule_ = true; }

  void Begin(icr::v1::Broker::Stub* stub, const icr::v1::SubscribeRequest& req) {
    req_ = req;
    stub->async()->Subscribe(&ctx_, &req_, this);
    StartRead(&resp_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const int64_t t = NowNs();
    if (resp_.has_event()) {
      const std::string& id = resp_.event().source_message_id();
      if (id.compare(0, prefix_.size(), prefix_) == 0) {
        if (id.compare(prefix_.size(), 6, "probe-") == 0) {
          probe_seen_.store(true, std::memory_order_release);
        } else if (id.size() >= prefix_.size() + 31) {
          const uint64_t index = std::strtoull(id.c_str() + id.size() - 30, nullptr, 10);
          const int64_t scheduled = std::strtoll(id.c_str() + id.size() - 19, nullptr, 10);
          if (index < total_ && !seen_[index]) {
            seen_[index] = 1;
            if (record_ && index >= warm_) {
              latency_ns_.push_back(t - scheduled);
              if (keep_schedule_) scheduled_ns_.push_back(scheduled);
            }
            delivered_.fetch_add(1, std::memory_order_relaxed);
          }
        }
      } else if (!other_prefix_.empty() &&
                 id.compare(0, other_prefix_.size(), other_prefix_) == 0) {
        other_.fetch_add(1, std::memory_order_relaxed);
      }
    } else if (resp_.has_heartbeat()) {
      heartbeats_.fetch_add(1, std::memory_order_relaxed);
    }
    StartRead(&resp_);
  }

  void Cancel() { ctx_.TryCancel(); }
  bool probe_seen() const { return probe_seen_.load(std::memory_order_acquire); }
  uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }
  uint64_t other() const { return other_.load(std::memory_order_relaxed); }
  // Only after Await().
  std::vector<int64_t>& latency_ns() { return latency_ns_; }
  const std::vector<int64_t>& scheduled_ns() const { return scheduled_ns_; }

 private:
  grpc::ClientContext ctx_;
  icr::v1::SubscribeRequest req_;
  icr::v1::SubscribeResponse resp_;
  const std::string prefix_, other_prefix_;
  const uint64_t total_, warm_;
  const bool record_;
  bool keep_schedule_ = false;
  std::vector<uint8_t> seen_;
  std::vector<int64_t> latency_ns_, scheduled_ns_;
  std::atomic<bool> probe_seen_{false};
  std::atomic<uint64_t> delivered_{0}, other_{0}, heartbeats_{0};
};

// A subscriber that gets stuck: it reads its first message, then never reads
// again, so its transport's flow-control window fills, the daemon's write to
// it waits and, after --subscriber-write-timeout-ms, the daemon cuts it off.
// A hold keeps OnDone back until Release(), which reads what the transport
// had buffered for it (when it was cut off) and lets the call end.
class StuckReactor : public SubscribeReactor {
 public:
  void Begin(icr::v1::Broker::Stub* stub, const icr::v1::SubscribeRequest& req) {
    req_ = req;
    stub->async()->Subscribe(&ctx_, &req_, this);
    AddHold();  // no OnDone before Release(): reads may be started from outside
    StartRead(&resp_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!draining_.load(std::memory_order_acquire)) {
      // The first message: from now on it does not read.
      if (ok) stopped_ns_.store(NowNs(), std::memory_order_release);
      first_ok_.store(ok, std::memory_order_release);
      first_done_.store(true, std::memory_order_release);
      return;
    }
    if (!ok) return;
    if (resp_.has_event()) buffered_.fetch_add(1, std::memory_order_relaxed);
    StartRead(&resp_);
  }

  // Ends the stuck state: reads (and counts) whatever is buffered until the
  // stream ends. cancel: cancel the call first (it was not cut off).
  void Release(bool cancel) {
    if (cancel) ctx_.TryCancel();
    if (first_done_.load(std::memory_order_acquire) && first_ok_.load(std::memory_order_acquire)) {
      draining_.store(true, std::memory_order_release);
      StartRead(&resp_);
    } else if (!first_done_.load(std::memory_order_acquire)) {
      ctx_.TryCancel();  // the first read is still outstanding: end it
    }
    RemoveHold();
  }
  bool first_done() const { return first_done_.load(std::memory_order_acquire); }
  bool first_ok() const { return first_ok_.load(std::memory_order_acquire); }
  // When it stopped reading (its first message arrived); 0 if it never got one.
  int64_t stopped_ns() const { return stopped_ns_.load(std::memory_order_acquire); }
  // Events read after Release(): what the transport had taken for it.
  uint64_t buffered() const { return buffered_.load(std::memory_order_relaxed); }

 private:
  grpc::ClientContext ctx_;
  icr::v1::SubscribeRequest req_;
  icr::v1::SubscribeResponse resp_;
  std::atomic<bool> draining_{false}, first_done_{false}, first_ok_{false};
  std::atomic<int64_t> stopped_ns_{0};
  std::atomic<uint64_t> buffered_{0};
};

// Publishes "<prefix>probe-<n>" events until every subscriber saw one.
bool WaitForProbes(const std::string& address, const Workload& wl, const std::string& prefix,
                   const std::vector<SubReactor*>& subs, double timeout_s = 30) {
  auto stub = icr::v1::Broker::NewStub(NewChannel(address, g_channel_ids++));
  std::mt19937_64 rng(1);
  icr::v1::PublishRequest req;
  *req.mutable_event() = wl.tmpl;
  const int64_t give_up = NowNs() + static_cast<int64_t>(timeout_s * 1e9);
  for (int n = 0; NowNs() < give_up; ++n) {
    bool all = true;
    for (auto* s : subs) all = all && s->probe_seen();
    if (all) return true;
    const std::string id = prefix + "probe-" + std::to_string(n);
    wl.Fill(req.mutable_event(), rng, id.data(), id.size());
    grpc::ClientContext ctx;
    icr::v1::PublishResponse resp;
    stub->Publish(&ctx, req, &resp);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// ---------------------------------------------------------------------------
// Open-loop publisher: event i is due at t0 + i / rate
// ---------------------------------------------------------------------------

struct OpenLoopResult {
  uint64_t acked = 0, errors = 0, late_sends = 0;
  double max_send_lag_us = 0;
  std::vector<int64_t> ack_ns;  // ack time - scheduled time, measured events
  std::string first_error;
};

// `streams` PublishStream streams, one event per request, window 64; stream
// k sends events k, k + streams, ... at their due time. Ids:
// <prefix><k 2>-<index 10>-<scheduled ns 19>. Returns when all are acked.
OpenLoopResult RunOpenLoop(const std::string& address, const Workload& wl,
                           const std::string& prefix, double rate, uint64_t total, uint64_t warm,
                           int streams, int64_t t0) {
  const double period_ns = 1e9 / rate;
  const int window = 64;
  std::vector<OpenLoopResult> parts(static_cast<size_t>(streams));
  std::vector<std::thread> threads;
  for (int k = 0; k < streams; ++k) {
    threads.emplace_back([&, k] {
      prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake on time
      OpenLoopResult& r = parts[static_cast<size_t>(k)];
      auto stub = icr::v1::Broker::NewStub(NewChannel(address, g_channel_ids++));
      std::mt19937_64 rng(std::random_device{}() + static_cast<uint64_t>(k));
      grpc::ClientContext ctx;
      auto stream = stub->PublishStream(&ctx);
      std::vector<std::atomic<uint64_t>> slot_index(static_cast<size_t>(window));
      std::counting_semaphore<1 << 20> slots(window);
      std::atomic<bool> broken{false};
      std::mutex mu;
      std::thread reader([&] {
        icr::v1::PublishStreamResponse resp;
        while (stream->Read(&resp)) {
          const int64_t t1 = NowNs();
          const uint64_t i = slot_index[resp.request_id() % window].load(std::memory_order_acquire);
          {
            std::lock_guard<std::mutex> lock(mu);
            if (resp.code() != 0) {
              ++r.errors;
              if (r.first_error.empty()) r.first_error = resp.message();
            } else {
              ++r.acked;
              if (i >= warm) {
                r.ack_ns.push_back(t1 - (t0 + static_cast<int64_t>(static_cast<double>(i) * period_ns)));
              }
            }
          }
          slots.release();
        }
        broken.store(true);
        slots.release(window);
      });
      icr::v1::PublishStreamRequest req;
      *req.add_events() = wl.tmpl;
      char id[192];
      uint64_t request_id = 0;
      for (uint64_t i = static_cast<uint64_t>(k); i < total; i += static_cast<uint64_t>(streams)) {
        const int64_t due = t0 + static_cast<int64_t>(static_cast<double>(i) * period_ns);
        SleepUntilNs(due);
        slots.acquire();
        if (broken.load()) break;
        const int64_t now = NowNs();
        if (i >= warm) {
          const int64_t lag = now - due;
          if (lag > 1'000'000) ++r.late_sends;
          r.max_send_lag_us = std::max(r.max_send_lag_us, static_cast<double>(lag) / 1000.0);
        }
        int n = std::snprintf(id, sizeof id, "%s%02d-%010llu-%019lld", prefix.c_str(), k,
                              static_cast<unsigned long long>(i), static_cast<long long>(due));
        wl.Fill(req.mutable_events(0), rng, id, static_cast<size_t>(n));
        req.set_request_id(request_id);
        slot_index[request_id % window].store(i, std::memory_order_release);
        ++request_id;
        if (!stream->Write(req)) break;
      }
      stream->WritesDone();
      reader.join();
      grpc::Status s = stream->Finish();
      if (!s.ok()) {
        ++r.errors;
        if (r.first_error.empty()) r.first_error = "PublishStream: " + s.error_message();
      }
    });
  }
  for (auto& t : threads) t.join();
  OpenLoopResult all;
  for (auto& p : parts) {
    all.acked += p.acked;
    all.errors += p.errors;
    all.late_sends += p.late_sends;
    all.max_send_lag_us = std::max(all.max_send_lag_us, p.max_send_lag_us);
    all.ack_ns.insert(all.ack_ns.end(), p.ack_ns.begin(), p.ack_ns.end());
    if (all.first_error.empty()) all.first_error = p.first_error;
  }
  return all;
}

// ---------------------------------------------------------------------------
// Bulk loader: threads x PublishBatch(batch) as fast as acks come back
// ---------------------------------------------------------------------------

struct Ack {
  uint64_t position;
  std::string event_id;
};

class BulkLoader {
 public:
  // limit: stop after about this many events (0: until Stop()).
  BulkLoader(const std::string& address, const Workload& wl, std::string tag, int threads,
             int batch, uint64_t limit, bool record)
      : wl_(wl), tag_(std::move(tag)), batch_(batch), limit_(limit), record_(record),
        acks_(static_cast<size_t>(threads)) {
    for (int k = 0; k < threads; ++k) {
      threads_.emplace_back([this, address, k] { Run(address, k); });
    }
  }
  ~BulkLoader() { Join(); }
  void Stop() { stop_.store(true); }
  void Join() {
    stop_.store(true);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  uint64_t acked() const { return acked_.load(); }
  uint64_t errors() const { return errors_.load(); }
  std::string first_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }
  // Only after Join().
  std::vector<std::vector<Ack>>& acks() { return acks_; }

 private:
  void Run(const std::string& address, int k) {
    auto stub = icr::v1::Broker::NewStub(NewChannel(address, g_channel_ids++));
    std::mt19937_64 rng(std::random_device{}() + static_cast<uint64_t>(k) * 7919);
    icr::v1::PublishBatchRequest req;
    for (int i = 0; i < batch_; ++i) *req.add_events() = wl_.tmpl;
    char id[160];
    uint64_t seq = 0;
    while (!stop_.load()) {
      if (limit_ && claimed_.fetch_add(static_cast<uint64_t>(batch_)) >= limit_) break;
      for (int i = 0; i < batch_; ++i) {
        int n = std::snprintf(id, sizeof id, "%s-%s-%02d-%010llu", wl_.run_id.c_str(),
                              tag_.c_str(), k, static_cast<unsigned long long>(seq++));
        wl_.Fill(req.mutable_events(i), rng, id, static_cast<size_t>(n));
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      icr::v1::PublishBatchResponse resp;
      grpc::Status st = stub->PublishBatch(&ctx, req, &resp);
      if (!st.ok()) {
        errors_.fetch_add(1);
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (first_error_.empty()) {
            first_error_ = "PublishBatch: " + std::to_string(st.error_code()) + " " +
                           st.error_message();
          }
        }
        if (stop_.load() || errors_.load() > 100) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      if (record_) {
        for (const auto& r : resp.results()) {
          acks_[static_cast<size_t>(k)].push_back({r.position(), r.event_id()});
        }
      }
      acked_.fetch_add(static_cast<uint64_t>(resp.results_size()));
    }
  }

  const Workload& wl_;
  const std::string tag_;
  const int batch_;
  const uint64_t limit_;
  const bool record_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> acked_{0}, errors_{0}, claimed_{0};
  std::mutex mu_;
  std::string first_error_;
  std::vector<std::vector<Ack>> acks_;
  std::vector<std::thread> threads_;
};

// A fresh data directory for one daemon: under --keep-data's parent for the
// history store, otherwise a TempDir.
struct Scratch {
  std::unique_ptr<icr::testing::TempDir> temp;
  std::string dir;
  Scratch() : temp(std::make_unique<icr::testing::TempDir>()), dir(temp->path()) {}
};

std::string Tag(const std::string& w, int round, int variant) {
  return w + "r" + std::to_string(round) + "v" + std::to_string(variant);
}

// ---------------------------------------------------------------------------
// W3: fan-out
// ---------------------------------------------------------------------------

// One fan-out measurement (W3, slowsub), once every subscriber has seen a
// probe: the open-loop schedule starts 20 ms from now (t0), --warmup seconds
// of warm-up, then `seconds` measured ([ws, we): deliveries, the daemon's CPU
// and other load sampled at both ends). After publishing (all acked, t_end):
// the slowest subscriber's lag, then up to --drain-seconds for every one to
// have all that was acked (drain_ms).
struct FanOutRun {
  int64_t t0 = 0, ws = 0, we = 0, t_end = 0;
  uint64_t d_ws = 0, d_we = 0;  // deliveries, all subscribers, at ws and we
  double bcpu0 = 0, bcpu1 = 0;  // the daemon's CPU seconds at ws and we
  double other = 0;             // other load in the window (ForeignLoad), cores
  OpenLoopResult pub;
  uint64_t lag_end = 0;  // events the slowest subscriber was behind at t_end
  double drain_ms = 0;

  double window_s() const { return static_cast<double>(we - ws) / 1e9; }
  double deliveries_per_s() const { return static_cast<double>(d_we - d_ws) / window_s(); }
  double broker_cores() const { return (bcpu1 - bcpu0) / window_s(); }
  // Did the publisher keep to its schedule? (A saturated load generator
  // sends late; latency is from the schedule, so that shows as latency.)
  double achieved_rate() const {
    return static_cast<double>(pub.acked) / (static_cast<double>(t_end - t0) / 1e9);
  }
};

FanOutRun MeasureFanOut(const Config& cfg, const Daemon& d, const Workload& wl,
                        const std::string& prefix, double rate, double seconds, uint64_t total,
                        uint64_t warm, const std::vector<SubReactor*>& subs) {
  FanOutRun m;
  auto sum = [&] {
    uint64_t s = 0;
    for (auto* p : subs) s += p->delivered();
    return s;
  };
  m.t0 = NowNs() + 20'000'000;
  m.ws = m.t0 + static_cast<int64_t>(cfg.warmup * 1e9);
  m.we = m.ws + static_cast<int64_t>(seconds * 1e9);
  std::thread sampler([&] {
    SleepUntilNs(m.ws);
    m.d_ws = sum();
    m.bcpu0 = PidCpuSeconds(d.pid()).value_or(0);
    ForeignLoad fl(d.pid());
    fl.Start();
    SleepUntilNs(m.we);
    m.d_we = sum();
    m.bcpu1 = PidCpuSeconds(d.pid()).value_or(0);
    m.other = fl.Stop();
  });
  m.pub = RunOpenLoop(d.address(), wl, prefix, rate, total, warm, 4, m.t0);
  sampler.join();
  m.t_end = NowNs();
  // Lag at the end of publishing (all acked), then drain.
  uint64_t min_delivered = UINT64_MAX;
  for (auto* p : subs) min_delivered = std::min(min_delivered, p->delivered());
  m.lag_end = m.pub.acked > min_delivered ? m.pub.acked - min_delivered : 0;
  const int64_t drain_give_up = m.t_end + static_cast<int64_t>(cfg.drain_seconds * 1e9);
  uint64_t min_now = min_delivered;
  while (min_now < m.pub.acked && NowNs() < drain_give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    min_now = UINT64_MAX;
    for (auto* p : subs) min_now = std::min(min_now, p->delivered());
  }
  m.drain_ms = static_cast<double>(NowNs() - m.t_end) / 1e6;
  return m;
}

json RunW3(const Config& cfg, const Workload& wl, int round, Table* table) {
  json out = json::array();
  for (size_t v = 0; v < cfg.w3_subscribers.size(); ++v) {
    const int n = cfg.w3_subscribers[v];
    Scratch scratch;
    Daemon d(cfg, scratch.dir + "/data", scratch.dir + "/broker.log");
    std::string err;
    if (!d.Start(&err)) {
      Fail("W3: " + err);
      continue;
    }
    const int channels = std::min(n, cfg.max_channels);
    std::fprintf(stderr, "[W3 round %d] %d subscribers on %d channels, %.0f events/s for %.0f s...\n",
                 round, n, channels, cfg.w3_rate, cfg.w3_seconds);
    std::vector<std::unique_ptr<icr::v1::Broker::Stub>> stubs;
    for (int c = 0; c < channels; ++c) stubs.push_back(d.Stub());
    const std::string prefix = wl.run_id + "-" + Tag("w3", round, static_cast<int>(v)) + "-";
    const uint64_t total = static_cast<uint64_t>(std::llround(cfg.w3_rate * (cfg.warmup + cfg.w3_seconds)));
    const uint64_t warm = static_cast<uint64_t>(std::llround(cfg.w3_rate * cfg.warmup));
    std::vector<std::unique_ptr<SubReactor>> subs;
    std::vector<SubReactor*> raw;
    icr::v1::SubscribeRequest req;
    req.mutable_start()->set_latest(true);
    for (int i = 0; i < n; ++i) {
      subs.push_back(std::make_unique<SubReactor>(prefix, total, warm, true));
      raw.push_back(subs.back().get());
      subs.back()->Begin(stubs[static_cast<size_t>(i % channels)].get(), req);
    }
    json r = {{"subscribers", n}, {"channels", channels}, {"round", round},
              {"rate", cfg.w3_rate}, {"seconds", cfg.w3_seconds}};
    if (!WaitForProbes(d.address(), wl, prefix, raw, 60)) {
      Fail("W3: not every subscriber saw a probe event");
    }
    FanOutRun m = MeasureFanOut(cfg, d, wl, prefix, cfg.w3_rate, cfg.w3_seconds, total, warm, raw);
    OpenLoopResult& pub = m.pub;
    const long rss = d.RssKb();
    for (auto* p : raw) p->Cancel();
    std::vector<int64_t> lat;
    uint64_t missing = 0;
    for (auto* p : raw) {
      p->Await();
      lat.insert(lat.end(), p->latency_ns().begin(), p->latency_ns().end());
      missing += pub.acked > p->delivered() ? pub.acked - p->delivered() : 0;
    }
    d.Stop();
    Summary e2e = Summarise(&lat);
    Summary ack = Summarise(&pub.ack_ns);
    const double dps = m.deliveries_per_s();
    const double offered = cfg.w3_rate * n;
    const double cores = m.broker_cores();
    const double achieved = m.achieved_rate();
    r.update({{"events_published", total}, {"events_acked", pub.acked},
              {"achieved_publish_rate", achieved}, {"max_send_lag_us", pub.max_send_lag_us},
              {"publish_errors", pub.errors}, {"late_sends_over_1ms", pub.late_sends},
              {"deliveries_per_s", dps}, {"offered_deliveries_per_s", offered},
              {"publish_to_delivery", ToJson(e2e)}, {"publish_ack_from_schedule", ToJson(ack)},
              {"slowest_lag_events_at_end", m.lag_end}, {"drain_ms", m.drain_ms},
              {"missing_after_drain", missing}, {"broker_cores", cores},
              {"broker_rss_kb", rss}, {"other_load_cores", m.other}});
    if (!pub.first_error.empty()) r["first_error"] = pub.first_error;
    std::fprintf(stderr,
                 "[W3 round %d] %d subs: %.0f deliveries/s of %.0f offered, e2e p50 %.0f p99 %.0f "
                 "p99.9 %.0f us, slowest lag %llu events, drain %.0f ms, missing %llu, broker %.2f "
                 "cores, other %.2f\n",
                 round, n, dps, offered, e2e.p50, e2e.p99, e2e.p999,
                 static_cast<unsigned long long>(m.lag_end), m.drain_ms,
                 static_cast<unsigned long long>(missing), cores, m.other);
    const std::string key = std::to_string(n) + " (" + std::to_string(channels) + " ch)";
    table->Add(key, {offered, dps, achieved, static_cast<double>(pub.late_sends),
                     pub.max_send_lag_us / 1000, e2e.p50 / 1000, e2e.p99 / 1000, e2e.p999 / 1000,
                     e2e.max / 1000, static_cast<double>(m.lag_end), m.drain_ms,
                     static_cast<double>(missing), cores, m.other});
    if (pub.acked == 0 || dps <= 0 || e2e.n == 0) Fail("W3: nothing delivered with " + key);
    if (pub.errors) Fail("W3: publish errors: " + pub.first_error);
    if (cfg.smoke && missing) Fail("W3: " + std::to_string(missing) + " deliveries missing");
    out.push_back(r);
  }
  return out;
}

// ---------------------------------------------------------------------------
// W4: urgent lane under bulk backfill
// ---------------------------------------------------------------------------

json RunW4(const Config& cfg, int round, Table* table) {
  WorkloadOptions uo;
  uo.patients = cfg.patients;
  uo.zipf_s = cfg.zipf_s;
  uo.event_bytes = cfg.event_bytes;
  uo.referral = true;  // URGENT discharge referrals
  uo.run_prefix = "bbu";
  const Workload urgent = MakeWorkload(uo);
  WorkloadOptions bo = uo;
  bo.referral = false;  // Care Act assessments, BULK
  bo.priority = icr::v1::BULK;
  bo.run_prefix = "bbb";
  const Workload bulk = MakeWorkload(bo);

  Scratch scratch;
  Daemon d(cfg, scratch.dir + "/data", scratch.dir + "/broker.log");
  std::string err;
  if (!d.Start(&err)) {
    Fail("W4: " + err);
    return {};
  }
  json out = json::object();
  std::map<std::string, std::pair<Summary, Summary>> p99s;  // phase -> ack, e2e urgent sub
  for (int phase = 0; phase < 2; ++phase) {
    const bool with_bulk = phase == 1;
    const std::string name = with_bulk ? "during bulk" : "idle";
    std::fprintf(stderr, "[W4 round %d] urgent %.0f/s for %.0f s, %s...\n", round, cfg.w4_rate,
                 cfg.w4_seconds, name.c_str());
    const std::string prefix = urgent.run_id + "-" + Tag("w4", round, phase) + "-";
    const uint64_t total = static_cast<uint64_t>(std::llround(cfg.w4_rate * (cfg.warmup + cfg.w4_seconds)));
    const uint64_t warm = static_cast<uint64_t>(std::llround(cfg.w4_rate * cfg.warmup));
    auto stub_all = d.Stub();
    auto stub_urgent = d.Stub();
    SubReactor all(prefix, total, warm, true, bulk.run_id);
    SubReactor only_urgent(prefix, total, warm, true);
    icr::v1::SubscribeRequest req;
    req.mutable_start()->set_latest(true);
    const auto status0 = GetStatus(stub_all.get());
    all.Begin(stub_all.get(), req);
    req.mutable_filter()->add_priorities(icr::v1::URGENT);
    only_urgent.Begin(stub_urgent.get(), req);
    if (!WaitForProbes(d.address(), urgent, prefix, {&all, &only_urgent})) {
      Fail("W4: subscribers never saw a probe");
    }
    std::unique_ptr<BulkLoader> loader;
    if (with_bulk) {
      loader = std::make_unique<BulkLoader>(d.address(), bulk, Tag("w4b", round, phase),
                                            cfg.w4_bulk_threads, cfg.batch, 0, false);
      std::this_thread::sleep_for(std::chrono::seconds(cfg.smoke ? 1 : 2));  // bulk at speed
    }
    const int64_t t0 = NowNs() + 20'000'000;
    const int64_t ws = t0 + static_cast<int64_t>(cfg.warmup * 1e9);
    uint64_t bulk0 = 0, bulk1 = 0, bdel0 = 0, bdel1 = 0;
    double bcpu0 = 0, bcpu1 = 0, other = 0;
    int64_t we = 0;
    std::thread sampler([&] {
      SleepUntilNs(ws);
      bulk0 = loader ? loader->acked() : 0;
      bdel0 = all.other();
      bcpu0 = PidCpuSeconds(d.pid()).value_or(0);
      ForeignLoad fl(d.pid());
      fl.Start();
      SleepUntilNs(ws + static_cast<int64_t>(cfg.w4_seconds * 1e9));
      we = NowNs();
      bulk1 = loader ? loader->acked() : 0;
      bdel1 = all.other();
      bcpu1 = PidCpuSeconds(d.pid()).value_or(0);
      other = fl.Stop();
    });
    OpenLoopResult pub = RunOpenLoop(d.address(), urgent, prefix, cfg.w4_rate, total, warm, 2, t0);
    sampler.join();
    std::string bulk_error;
    uint64_t bulk_errors = 0;
    if (loader) {
      loader->Join();
      bulk_errors = loader->errors();
      bulk_error = loader->first_error();
    }
    // Drain: urgent events to both subscribers (bulk to `all` may lag behind).
    const int64_t give_up = NowNs() + static_cast<int64_t>(cfg.drain_seconds * 1e9);
    while ((only_urgent.delivered() < pub.acked || all.delivered() < pub.acked) &&
           NowNs() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    all.Cancel();
    only_urgent.Cancel();
    all.Await();
    only_urgent.Await();
    const double window_s = static_cast<double>(we - ws) / 1e9;
    Summary ack = Summarise(&pub.ack_ns);
    Summary e2e_u = Summarise(&only_urgent.latency_ns());
    Summary e2e_a = Summarise(&all.latency_ns());
    const double bulk_rate = static_cast<double>(bulk1 - bulk0) / window_s;
    const double bulk_del = static_cast<double>(bdel1 - bdel0) / window_s;
    const double cores = (bcpu1 - bcpu0) / window_s;
    // Write groups in the phase, and how many were closed early for an
    // urgent publish.
    const auto status1 = GetStatus(stub_all.get());
    uint64_t groups = 0, groups_cut = 0;
    if (status0 && status1) {
      groups = status1->write_groups() - status0->write_groups();
      groups_cut = status1->write_groups_cut() - status0->write_groups_cut();
    }
    json r = {{"phase", name}, {"round", round}, {"urgent_rate", cfg.w4_rate},
              {"write_groups", groups}, {"write_groups_cut", groups_cut},
              {"urgent_expected", total}, {"urgent_acked", pub.acked},
              {"urgent_publish_errors", pub.errors},
              {"urgent_ack_from_schedule", ToJson(ack)},
              {"urgent_e2e_urgent_only_subscriber", ToJson(e2e_u)},
              {"urgent_e2e_all_events_subscriber", ToJson(e2e_a)},
              {"urgent_delivered_urgent_sub", only_urgent.delivered()},
              {"urgent_delivered_all_sub", all.delivered()},
              {"late_sends_over_1ms", pub.late_sends},
              {"bulk_events_per_s", bulk_rate}, {"bulk_delivered_per_s_all_sub", bulk_del},
              {"bulk_errors", bulk_errors}, {"broker_cores", cores}, {"other_load_cores", other}};
    if (!pub.first_error.empty()) r["first_error"] = pub.first_error;
    if (!bulk_error.empty()) r["bulk_first_error"] = bulk_error;
    out[with_bulk ? "bulk" : "idle"] = r;
    p99s[name] = {ack, e2e_u};
    std::fprintf(stderr,
                 "[W4 round %d] %s: urgent ack p50 %.0f p99 %.0f us; e2e (urgent sub) p50 %.0f p99 "
                 "%.0f us; e2e (all sub) p50 %.0f p99 %.0f us; bulk %.0f/s (delivered %.0f/s), "
                 "broker %.2f cores, other %.2f; %llu write groups, %llu cut short for urgent\n",
                 round, name.c_str(), ack.p50, ack.p99, e2e_u.p50, e2e_u.p99, e2e_a.p50, e2e_a.p99,
                 bulk_rate, bulk_del, cores, other, static_cast<unsigned long long>(groups),
                 static_cast<unsigned long long>(groups_cut));
    table->Add(name, {ack.p50 / 1000, ack.p99 / 1000, e2e_u.p50 / 1000, e2e_u.p99 / 1000,
                      e2e_a.p50 / 1000, e2e_a.p99 / 1000,
                      static_cast<double>(only_urgent.delivered()), static_cast<double>(total),
                      bulk_rate, bulk_del, cores, other});
    if (pub.errors) Fail("W4: urgent publish errors: " + pub.first_error);
    if (only_urgent.delivered() < pub.acked || pub.acked < total) {
      Fail("W4 " + name + ": urgent delivered " + std::to_string(only_urgent.delivered()) + " of " +
           std::to_string(total));
    }
    if (with_bulk && (bulk_rate <= 0 || bulk_errors)) Fail("W4: bulk loader " + bulk_error);
  }
  d.Stop();
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0; };
  const auto& idle = p99s["idle"];
  const auto& busy = p99s["during bulk"];
  out["ratio_ack_p99"] = ratio(busy.first.p99, idle.first.p99);
  out["ratio_e2e_p99"] = ratio(busy.second.p99, idle.second.p99);
  out["ratio_ack_p50"] = ratio(busy.first.p50, idle.first.p50);
  out["ratio_e2e_p50"] = ratio(busy.second.p50, idle.second.p50);
  table->Add("ratio bulk/idle", {ratio(busy.first.p50, idle.first.p50),
                                 ratio(busy.first.p99, idle.first.p99),
                                 ratio(busy.second.p50, idle.second.p50),
                                 ratio(busy.second.p99, idle.second.p99)});
  std::fprintf(stderr, "[W4 round %d] p99 ratio during bulk / idle: ack %.2fx, e2e %.2fx (target <= 1.2x)\n",
               round, out["ratio_ack_p99"].get<double>(), out["ratio_e2e_p99"].get<double>());
  out["round"] = round;
  return out;
}

// ---------------------------------------------------------------------------
// History store (W5, W6): --events events over events/200 patients
// ---------------------------------------------------------------------------

struct HistoryStore {
  std::unique_ptr<icr::testing::TempDir> temp;  // when not --keep-data
  std::string root;                             // data in root/data, log root/broker.log
  uint64_t patients = 0;
  uint64_t stored = 0;
  double load_seconds = 0;
  uint64_t loaded_now = 0;
  bool reused = false;
  std::unique_ptr<Workload> wl;  // uniform over the patients, assessments
};

std::string MetaPath(const std::string& root) { return root + "/icr-bench-history.json"; }

// Opens (or loads) the history store; leaves the daemon running in *d.
bool PrepareHistory(const Config& cfg, HistoryStore* hs, std::unique_ptr<Daemon>* d, json* info) {
  if (!hs->root.empty()) {  // already prepared in this run
    *d = std::make_unique<Daemon>(cfg, hs->root + "/data", hs->root + "/broker.log");
    std::string err;
    if (!(*d)->Start(&err)) {
      Fail("history store: " + err);
      return false;
    }
    return true;
  }
  if (cfg.keep_data.empty()) {
    hs->temp = std::make_unique<icr::testing::TempDir>();
    hs->root = hs->temp->path();
  } else {
    hs->root = cfg.keep_data;
    fs::create_directories(hs->root);
  }
  hs->patients = cfg.history_patients ? cfg.history_patients : std::max<uint64_t>(1, cfg.events / 200);
  {
    std::ifstream in(MetaPath(hs->root));
    if (in) {
      json meta = json::parse(in, nullptr, false);
      if (!meta.is_discarded() && meta.contains("patients")) {
        hs->patients = meta["patients"].get<uint64_t>();
        hs->reused = true;
      }
    }
  }
  {
    std::ofstream out(MetaPath(hs->root));
    out << json({{"patients", hs->patients}, {"events_target", cfg.events}}).dump(2) << "\n";
  }
  WorkloadOptions o;
  o.patients = hs->patients;
  o.zipf_s = 0;  // uniform: a typical patient has events / patients events
  o.event_bytes = cfg.event_bytes;
  o.referral = false;
  o.run_prefix = "bbh";
  hs->wl = std::make_unique<Workload>(MakeWorkload(o));

  // Loading is set-up, not a measurement: by default the daemon loads with
  // durability relaxed (fsync about every 100 ms; on a disk shared with
  // other fsync-heavy work a sync load can take far longer), then it is
  // restarted with durability sync for every measurement.
  *d = std::make_unique<Daemon>(cfg, hs->root + "/data", hs->root + "/broker.log",
                                cfg.load_durability);
  std::string err;
  if (!(*d)->Start(&err)) {
    Fail("history store: " + err);
    return false;
  }
  auto stub = (*d)->Stub();
  auto st = GetStatus(stub.get());
  const uint64_t have = st ? st->events_stored() : 0;
  if (have < cfg.events) {
    const uint64_t need = cfg.events - have;
    std::fprintf(stderr,
                 "[load] %llu events stored; loading %llu more (%zu-byte assessments, uniform over "
                 "%llu patients, %d x PublishBatch(%d), daemon durability %s) into %s\n",
                 static_cast<unsigned long long>(have), static_cast<unsigned long long>(need),
                 hs->wl->event_size, static_cast<unsigned long long>(hs->patients),
                 cfg.load_threads, cfg.batch, cfg.load_durability.c_str(), hs->root.c_str());
    const int64_t t0 = NowNs();
    BulkLoader loader((*d)->address(), *hs->wl, "load", cfg.load_threads, cfg.batch, need, false);
    int64_t last = t0;
    uint64_t last_n = 0;
    while (loader.acked() < need && loader.errors() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(cfg.smoke ? 200 : 5000));
      const int64_t now = NowNs();
      const uint64_t n = loader.acked();
      const double rate = static_cast<double>(n - last_n) / (static_cast<double>(now - last) / 1e9);
      const double avg = static_cast<double>(n) / (static_cast<double>(now - t0) / 1e9);
      const double eta = avg > 0 ? static_cast<double>(need - std::min(need, n)) / avg : 0;
      std::fprintf(stderr, "[load] %s / %s events (%.0f%%), %s/s now, %s/s average, ETA %.0f s\n",
                   Num(static_cast<double>(n)).c_str(), Num(static_cast<double>(need)).c_str(),
                   100.0 * static_cast<double>(n) / static_cast<double>(need), Num(rate).c_str(),
                   Num(avg).c_str(), eta);
      last = now;
      last_n = n;
    }
    loader.Join();
    if (loader.errors()) Fail("load: " + loader.first_error());
    hs->load_seconds = static_cast<double>(NowNs() - t0) / 1e9;
    hs->loaded_now = loader.acked();
    std::fprintf(stderr, "[load] %s events in %.1f s (%s/s)\n",
                 Num(static_cast<double>(hs->loaded_now)).c_str(), hs->load_seconds,
                 Num(static_cast<double>(hs->loaded_now) / hs->load_seconds).c_str());
  } else {
    std::fprintf(stderr, "[load] reusing %s: %llu events stored, %llu patients\n",
                 hs->root.c_str(), static_cast<unsigned long long>(have),
                 static_cast<unsigned long long>(hs->patients));
  }
  // Measurements run against a daemon with durability sync.
  (*d)->Stop();
  *d = std::make_unique<Daemon>(cfg, hs->root + "/data", hs->root + "/broker.log");
  if (!(*d)->Start(&err)) {
    Fail("history store: " + err);
    return false;
  }
  stub = (*d)->Stub();
  st = GetStatus(stub.get());
  hs->stored = st ? st->events_stored() : 0;
  if (!st || st->durability() != "sync") Fail("history store: the daemon is not durability sync");
  (*info)["history_store"] = {{"dir", hs->root}, {"events_stored", hs->stored},
                              {"patients", hs->patients},
                              {"events_per_patient", static_cast<double>(hs->stored) /
                                                         static_cast<double>(hs->patients)},
                              {"loaded_now", hs->loaded_now}, {"load_seconds", hs->load_seconds},
                              {"load_durability", cfg.load_durability},
                              {"load_events_per_s", hs->load_seconds > 0
                                                        ? static_cast<double>(hs->loaded_now) /
                                                              hs->load_seconds
                                                        : 0},
                              {"disk_bytes", DirBytes(hs->root + "/data")}};
  if (hs->stored < cfg.events) Fail("history store holds fewer events than --events");
  return true;
}

// ---------------------------------------------------------------------------
// W5: per-patient history reads
// ---------------------------------------------------------------------------

struct ReadResult {
  std::vector<int64_t> ns;
  uint64_t errors = 0, short_pages = 0, empty_pages = 0, events = 0;
  std::string first_error;
};

// One GetPatientHistory(page 100) per entry of `who`.
ReadResult ReadHistories(icr::v1::Broker::Stub* stub, const Workload& wl,
                         const std::vector<size_t>& who) {
  ReadResult r;
  r.ns.reserve(who.size());
  icr::v1::GetPatientHistoryRequest req;
  req.set_page_size(100);
  for (size_t i : who) {
    req.set_nhs_number(wl.nhs[i]);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    icr::v1::GetPatientHistoryResponse resp;
    const int64_t t0 = NowNs();
    grpc::Status st = stub->GetPatientHistory(&ctx, req, &resp);
    const int64_t t1 = NowNs();
    if (!st.ok()) {
      ++r.errors;
      if (r.first_error.empty()) r.first_error = st.error_message();
      continue;
    }
    r.ns.push_back(t1 - t0);
    r.events += static_cast<uint64_t>(resp.events_size());
    if (resp.events_size() == 0) ++r.empty_pages;
    if (resp.events_size() < 100) ++r.short_pages;
    if (resp.events_size() > 0 && resp.events(0).nhs_number() != wl.nhs[i]) {
      ++r.errors;
      if (r.first_error.empty()) r.first_error = "history of another patient returned";
    }
  }
  return r;
}

json RunW5(const Config& cfg, HistoryStore* hs, int round, Table* table, json* info) {
  std::unique_ptr<Daemon> d;
  if (!PrepareHistory(cfg, hs, &d, info)) return {};
  const Workload& wl = *hs->wl;
  std::mt19937_64 rng(12345 + static_cast<uint64_t>(round));
  auto pick = [&](size_t count, std::set<size_t>* avoid) {
    std::vector<size_t> out;
    std::set<size_t> chosen;
    count = std::min<size_t>(count, wl.nhs.size() - avoid->size());
    while (out.size() < count) {
      size_t i = std::uniform_int_distribution<size_t>(0, wl.nhs.size() - 1)(rng);
      if (avoid->count(i) || !chosen.insert(i).second) continue;
      out.push_back(i);
    }
    avoid->insert(out.begin(), out.end());
    return out;
  };
  std::set<size_t> used;
  const std::vector<size_t> cold_set = pick(static_cast<size_t>(cfg.w5_cold_reads), &used);
  const std::vector<size_t> cold_set2 = pick(static_cast<size_t>(cfg.w5_cold_reads), &used);
  std::vector<size_t> warm_seq;
  for (int i = 0; i < cfg.w5_warm_reads; ++i) warm_seq.push_back(cold_set[static_cast<size_t>(i) % cold_set.size()]);
  std::shuffle(warm_seq.begin(), warm_seq.end(), rng);

  json out = json::array();
  auto restart_cold = [&](double* ready_ms, uint64_t* evicted) {
    d->Stop();
    *evicted = EvictPageCache(hs->root + "/data");
    std::string err;
    if (!d->Start(&err)) {
      Fail("W5 restart: " + err);
      return false;
    }
    *ready_ms = d->ready_ms();
    return true;
  };
  auto record = [&](const std::string& name, ReadResult& rr, double write_rate, double extra) {
    Summary s = Summarise(&rr.ns);
    json r = {{"phase", name}, {"round", round}, {"reads", s.n}, {"latency", ToJson(s)},
              {"errors", rr.errors}, {"short_pages", rr.short_pages},
              {"empty_pages", rr.empty_pages},
              {"events_per_page", s.n ? static_cast<double>(rr.events) / static_cast<double>(s.n) : 0},
              {"concurrent_write_events_per_s", write_rate}};
    if (!rr.first_error.empty()) r["first_error"] = rr.first_error;
    if (extra >= 0) r["restart_ready_ms"] = extra;
    std::fprintf(stderr,
                 "[W5 round %d] %s: %zu reads, p50 %.0f us p99 %.0f us p99.9 %.0f us max %.0f us, "
                 "%.1f events/page, %llu short, writes %.0f/s\n",
                 round, name.c_str(), s.n, s.p50, s.p99, s.p999, s.max,
                 s.n ? static_cast<double>(rr.events) / static_cast<double>(s.n) : 0.0,
                 static_cast<unsigned long long>(rr.short_pages), write_rate);
    table->Add(name, {static_cast<double>(s.n), s.p50 / 1000, s.p99 / 1000, s.p999 / 1000,
                      s.max / 1000,
                      s.n ? static_cast<double>(rr.events) / static_cast<double>(s.n) : 0,
                      write_rate});
    if (rr.errors || s.n == 0 || rr.empty_pages) {
      Fail("W5 " + name + ": " + std::to_string(rr.errors) + " errors, " +
           std::to_string(rr.empty_pages) + " empty pages " + rr.first_error);
    }
    out.push_back(r);
  };

  // 1. Cold, alone.
  double ready_ms = 0;
  uint64_t evicted = 0;
  if (!restart_cold(&ready_ms, &evicted)) return out;
  std::fprintf(stderr, "[W5 round %d] restarted (ready in %.0f ms), %s bytes evicted from the page cache\n",
               round, ready_ms, Num(static_cast<double>(evicted)).c_str());
  {
    auto stub = d->Stub();
    ReadResult rr = ReadHistories(stub.get(), wl, cold_set);
    record("cold, alone", rr, 0, ready_ms);
    // 2. Warm, alone (the same patients again, now cached).
    ReadResult wr = ReadHistories(stub.get(), wl, warm_seq);
    record("warm, alone", wr, 0, -1);
  }
  // 3. Warm, under write load.
  auto under_load = [&](const std::string& name, const std::vector<size_t>& who) {
    auto stub = d->Stub();
    BulkLoader writer(d->address(), wl, Tag("w5w", round, static_cast<int>(out.size())),
                      cfg.w5_write_threads, cfg.batch, 0, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(cfg.smoke ? 300 : 1000));
    const uint64_t a0 = writer.acked();
    const int64_t t0 = NowNs();
    ReadResult rr = ReadHistories(stub.get(), wl, who);
    const double rate = static_cast<double>(writer.acked() - a0) / (static_cast<double>(NowNs() - t0) / 1e9);
    writer.Join();
    if (writer.errors()) Fail("W5 writer: " + writer.first_error());
    if (rate <= 0) Fail("W5: the concurrent writer stored nothing");
    record(name, rr, rate, -1);
  };
  under_load("warm, under write load", warm_seq);
  // 4. Cold, under write load (other patients, after another restart).
  if (!restart_cold(&ready_ms, &evicted)) return out;
  under_load("cold, under write load", cold_set2);
  d->Stop();
  return out;
}

// ---------------------------------------------------------------------------
// W6: kill -9 at full load, restart, verify
// ---------------------------------------------------------------------------

json RunW6(const Config& cfg, HistoryStore* hs, int round, Table* table, json* info) {
  std::unique_ptr<Daemon> d;
  if (!PrepareHistory(cfg, hs, &d, info)) return {};
  auto stub = d->Stub();
  auto st0 = GetStatus(stub.get());
  const uint64_t before = st0 ? st0->last_position() : 0;
  std::fprintf(stderr, "[W6 round %d] %llu events stored; publishing at full speed for %.1f s, then kill -9\n",
               round, static_cast<unsigned long long>(before), cfg.w6_load_seconds);
  BulkLoader loader(d->address(), *hs->wl, Tag("w6", round, 0), cfg.w6_threads, cfg.batch, 0, true);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(cfg.w6_load_seconds * 1000)));
  const uint64_t acked_at_kill = loader.acked();
  const double bcpu = PidCpuSeconds(d->pid()).value_or(0);
  d->Kill9();
  loader.Join();  // in-flight batches fail: they were never acknowledged
  std::vector<Ack> acks;
  for (auto& v : loader.acks()) acks.insert(acks.end(), v.begin(), v.end());
  std::sort(acks.begin(), acks.end(), [](const Ack& a, const Ack& b) { return a.position < b.position; });
  const double load_rate = static_cast<double>(acks.size()) / cfg.w6_load_seconds;

  // Restart: time to ready.
  std::string err;
  if (!d->Start(&err)) {
    Fail("W6 restart after kill -9: " + err);
    return {};
  }
  const double ready_ms = d->ready_ms(), log_ready_ms = d->log_ready_ms();
  std::fprintf(stderr, "[W6 round %d] %zu events acknowledged before kill -9; ready again in %.0f ms\n",
               round, acks.size(), ready_ms);
  // Verify: read the log from the first acknowledged position through the last.
  uint64_t lost = 0, mismatched = 0, seen = 0;
  uint64_t last_position = 0;
  std::string verify_error;
  if (!acks.empty()) {
    stub = d->Stub();
    auto st = GetStatus(stub.get());
    last_position = st ? st->last_position() : 0;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(600));
    icr::v1::SubscribeRequest req;
    req.mutable_start()->set_position(acks.front().position);
    req.set_heartbeat_ms(1000);
    auto reader = stub->Subscribe(&ctx, req);
    icr::v1::SubscribeResponse resp;
    size_t next = 0;
    const uint64_t last_acked = acks.back().position;
    const int64_t give_up = NowNs() + 600'000'000'000LL;
    uint64_t max_seen = 0;
    while (next < acks.size() && reader->Read(&resp)) {
      if (resp.has_heartbeat()) {
        // The log ends before the last acknowledged position: the rest are lost.
        if (resp.heartbeat().last_position() < last_acked && max_seen >= resp.heartbeat().last_position()) break;
        if (NowNs() > give_up) break;
        continue;
      }
      if (!resp.has_event()) continue;
      const uint64_t pos = resp.event().position();
      max_seen = std::max(max_seen, pos);
      ++seen;
      while (next < acks.size() && acks[next].position < pos) {
        ++lost;  // acknowledged but not in the log
        ++next;
      }
      if (next < acks.size() && acks[next].position == pos) {
        if (resp.event().event_id() != acks[next].event_id) ++mismatched;
        ++next;
      }
    }
    lost += acks.size() - next;
    ctx.TryCancel();
    reader->Finish();
  }
  // A clean restart for comparison.
  d->Stop();
  double clean_ms = 0;
  if (d->Start(&err)) {
    clean_ms = d->ready_ms();
    d->Stop();
  } else {
    Fail("W6 clean restart: " + err);
  }
  json r = {{"round", round}, {"events_stored_before", before},
            {"load_seconds", cfg.w6_load_seconds}, {"publish_threads", cfg.w6_threads},
            {"batch", cfg.batch}, {"acked_events", acks.size()},
            {"acked_at_kill_sample", acked_at_kill}, {"load_events_per_s", load_rate},
            {"broker_cpu_seconds_at_kill", bcpu},
            {"ready_ms_after_kill9", ready_ms}, {"log_ready_ms_after_kill9", log_ready_ms},
            {"ready_ms_clean_restart", clean_ms}, {"last_position_after_restart", last_position},
            {"events_read_back", seen}, {"acked_lost", lost}, {"acked_mismatched_id", mismatched},
            {"load_errors_after_kill", loader.errors()}};
  std::fprintf(stderr,
               "[W6 round %d] ready after kill -9 %.0f ms (log line %.0f ms), clean restart %.0f ms; "
               "%zu acknowledged, %llu lost, %llu with another event id\n",
               round, ready_ms, log_ready_ms, clean_ms, acks.size(),
               static_cast<unsigned long long>(lost), static_cast<unsigned long long>(mismatched));
  table->Add("kill -9 at full load", {static_cast<double>(before), load_rate,
                                      static_cast<double>(acks.size()), ready_ms, clean_ms,
                                      static_cast<double>(lost + mismatched)});
  if (acks.empty()) Fail("W6: nothing was acknowledged before the kill");
  if (lost || mismatched) {
    Fail("W6: " + std::to_string(lost) + " acknowledged events lost, " +
         std::to_string(mismatched) + " with a different event id");
  }
  return r;
}

// ---------------------------------------------------------------------------
// catchup: one subscriber reading a backlog from disk, one event per message
// versus batches (SubscribeRequest.max_batch)
// ---------------------------------------------------------------------------

json RunCatchup(const Config& cfg, HistoryStore* hs, int round, Table* table, json* info) {
  std::unique_ptr<Daemon> d;
  if (!PrepareHistory(cfg, hs, &d, info)) return {};
  auto stub = d->Stub();
  auto st = GetStatus(stub.get());
  const uint64_t total = std::min<uint64_t>(cfg.catchup_events, st ? st->last_position() : 0);
  if (total == 0) {
    Fail("catchup: the history store is empty");
    return {};
  }
  // Reads positions 1..total in position order; events/s and broker CPU.
  auto read = [&](uint32_t max_batch, double* seconds, double* cpu, uint64_t* messages) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1200));
    icr::v1::SubscribeRequest req;
    req.mutable_start()->set_position(1);
    req.set_position_order(true);
    req.set_heartbeat_ms(1000);
    req.set_max_batch(max_batch);
    const double cpu0 = PidCpuSeconds(d->pid()).value_or(0);
    const int64_t t0 = NowNs();
    auto reader = stub->Subscribe(&ctx, req);
    icr::v1::SubscribeResponse resp;
    uint64_t next = 1;
    *messages = 0;
    auto check = [&](const CareEvent& e) {
      if (e.position() != next) {
        Fail("catchup: position " + std::to_string(e.position()) + " where " +
             std::to_string(next) + " was due");
      }
      next = e.position() + 1;
    };
    while (next <= total && reader->Read(&resp)) {
      if (resp.has_event()) {
        ++*messages;
        check(resp.event());
      } else if (resp.has_batch()) {
        ++*messages;
        for (const auto& b : resp.batch().events()) check(b.event());
      }
    }
    *seconds = static_cast<double>(NowNs() - t0) / 1e9;
    *cpu = PidCpuSeconds(d->pid()).value_or(0) - cpu0;
    ctx.TryCancel();
    reader->Finish();
    if (next <= total) Fail("catchup: the stream ended at position " + std::to_string(next));
  };
  double seconds = 0, cpu = 0;
  uint64_t messages = 0;
  read(256, &seconds, &cpu, &messages);  // warm the page and block caches (not reported)
  json r = {{"round", round}, {"events", total}, {"runs", json::array()}};
  for (int b : cfg.catchup_batches) {
    read(static_cast<uint32_t>(b), &seconds, &cpu, &messages);
    const double rate = static_cast<double>(total) / seconds;
    std::fprintf(stderr, "[catchup round %d] max_batch %d: %llu events in %.2f s (%.0f/s), "
                 "%llu messages, broker %.1f us CPU per event\n",
                 round, b, static_cast<unsigned long long>(total), seconds, rate,
                 static_cast<unsigned long long>(messages), cpu * 1e6 / static_cast<double>(total));
    r["runs"].push_back({{"max_batch", b}, {"seconds", seconds}, {"events_per_s", rate},
                         {"messages", messages}, {"broker_cpu_seconds", cpu}});
    table->Add(std::to_string(b), {static_cast<double>(total), rate,
                                   static_cast<double>(messages),
                                   cpu * 1e6 / static_cast<double>(total)});
  }
  d->Stop();
  return r;
}

// ---------------------------------------------------------------------------
// W7: idle subscriber streams
// ---------------------------------------------------------------------------

json RunW7(const Config& cfg, int round, Table* table) {
  json out = json::array();
  for (int n : cfg.w7_streams) {
    Scratch scratch;
    Daemon d(cfg, scratch.dir + "/data", scratch.dir + "/broker.log");
    std::string err;
    if (!d.Start(&err)) {
      Fail("W7: " + err);
      continue;
    }
    const int per = std::max(1, cfg.w7_streams_per_channel);
    const int channels = (n + per - 1) / per;
    std::vector<std::unique_ptr<icr::v1::Broker::Stub>> stubs;
    for (int c = 0; c < channels; ++c) {
      stubs.push_back(d.Stub());
      GetStatus(stubs.back().get());  // the connection is up before "before"
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const long before = d.RssKb();
    std::vector<std::unique_ptr<SubReactor>> subs;
    icr::v1::SubscribeRequest req;
    req.mutable_start()->set_latest(true);
    req.set_heartbeat_ms(3600000);  // idle: no heartbeats in the test
    const int64_t t0 = NowNs();
    for (int i = 0; i < n; ++i) {
      subs.push_back(std::make_unique<SubReactor>("-", 0, 0, false));
      subs.back()->Begin(stubs[static_cast<size_t>(i / per)].get(), req);
    }
    auto stub = d.Stub();
    uint32_t connected = 0;
    const int64_t give_up = NowNs() + 120'000'000'000LL;
    while (NowNs() < give_up) {
      auto st = GetStatus(stub.get());
      connected = st ? st->subscriptions_connected() : 0;
      if (connected >= static_cast<uint32_t>(n)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const double open_ms = static_cast<double>(NowNs() - t0) / 1e6;
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const long after = d.RssKb();
    uint64_t ended = 0;
    for (auto& s : subs) ended += s->done() ? 1 : 0;
    const double per_stream = n ? static_cast<double>(after - before) / n : 0;
    for (auto& s : subs) s->Cancel();
    for (auto& s : subs) s->Await();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const long after_close = d.RssKb();
    d.Stop();
    json r = {{"round", round}, {"streams", n}, {"channels", channels},
              {"streams_per_channel", per}, {"connected", connected},
              {"rss_before_kb", before}, {"rss_after_kb", after},
              {"rss_after_close_kb", after_close}, {"kb_per_stream", per_stream},
              {"open_ms", open_ms}, {"streams_ended_early", ended}};
    std::fprintf(stderr,
                 "[W7 round %d] %d idle streams on %d channels: RSS %ld -> %ld KiB (%.1f KiB per "
                 "stream), %u connected, opened in %.0f ms; after closing %ld KiB\n",
                 round, n, channels, before, after, per_stream, connected, open_ms, after_close);
    table->Add(std::to_string(n), {static_cast<double>(channels), static_cast<double>(connected),
                                   before / 1024.0, after / 1024.0, per_stream,
                                   after_close / 1024.0});
    if (connected < static_cast<uint32_t>(n) || ended) {
      Fail("W7: " + std::to_string(connected) + " of " + std::to_string(n) +
           " streams connected, " + std::to_string(ended) + " ended early");
    }
    if (before <= 0 || after <= 0) Fail("W7: RSS not readable");
    out.push_back(r);
  }
  return out;
}

// ---------------------------------------------------------------------------
// slowsub: one subscriber stops reading while the others go on
// ---------------------------------------------------------------------------

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct SlowsubPhase {
  json j;             // everything measured
  Summary e2e;        // the normal subscribers, measured window
  Summary e2e_stuck;  // events scheduled while the stuck one was connected (with_slow)
  bool ran = false;
};

// One phase on a fresh daemon (--subscriber-write-timeout-ms set in both):
// N normal subscribers (as W3) and, with_slow, one more on its own
// connection that reads one message and then never again.
SlowsubPhase RunSlowsubPhase(const Config& cfg, const Workload& wl, int round, bool with_slow,
                             Table* table) {
  SlowsubPhase out;
  const std::string name = with_slow ? "with a stuck subscriber" : "baseline";
  const int n = cfg.slowsub_subscribers;
  Scratch scratch;
  Daemon d(cfg, scratch.dir + "/data", scratch.dir + "/broker.log");
  if (!d.AddFlag("--subscriber-write-timeout-ms", std::to_string(cfg.slowsub_write_timeout_ms))) {
    Fail("slowsub: " + cfg.broker_bin + " has no --subscriber-write-timeout-ms");
    return out;
  }
  std::string err;
  if (!d.Start(&err)) {
    Fail("slowsub: " + err);
    return out;
  }
  const int channels = std::min(n, cfg.max_channels);
  std::fprintf(stderr,
               "[slowsub round %d] %s: %d subscribers on %d channels%s, %.0f events/s of %zu "
               "bytes for %.0f s, write timeout %d ms...\n",
               round, name.c_str(), n, channels, with_slow ? " + 1 stuck on its own" : "",
               cfg.slowsub_rate, wl.event_size, cfg.slowsub_seconds, cfg.slowsub_write_timeout_ms);
  std::vector<std::unique_ptr<icr::v1::Broker::Stub>> stubs;
  for (int c = 0; c < channels; ++c) stubs.push_back(d.Stub());
  auto status_stub = d.Stub();
  const std::string prefix = wl.run_id + "-" + Tag("ss", round, with_slow ? 1 : 0) + "-";
  const uint64_t total =
      static_cast<uint64_t>(std::llround(cfg.slowsub_rate * (cfg.warmup + cfg.slowsub_seconds)));
  const uint64_t warm = static_cast<uint64_t>(std::llround(cfg.slowsub_rate * cfg.warmup));
  icr::v1::SubscribeRequest req;
  req.mutable_start()->set_latest(true);
  // The stuck subscriber first (it then gets the first probe as its one
  // message), on a channel of its own: its own TCP connection
  // (GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, see NewChannel), so its full
  // flow-control window is its alone.
  std::unique_ptr<icr::v1::Broker::Stub> slow_stub;
  std::unique_ptr<StuckReactor> slow;
  if (with_slow) {
    slow_stub = icr::v1::Broker::NewStub(NewChannel(d.address(), g_channel_ids++));
    slow = std::make_unique<StuckReactor>();
    slow->Begin(slow_stub.get(), req);
  }
  std::vector<std::unique_ptr<SubReactor>> subs;
  std::vector<SubReactor*> raw;
  for (int i = 0; i < n; ++i) {
    subs.push_back(std::make_unique<SubReactor>(prefix, total, warm, true));
    subs.back()->KeepSchedule();
    raw.push_back(subs.back().get());
    subs.back()->Begin(stubs[static_cast<size_t>(i % channels)].get(), req);
  }
  if (!WaitForProbes(d.address(), wl, prefix, raw, 60)) {
    Fail("slowsub " + name + ": not every subscriber saw a probe event");
  }
  if (slow) {
    const int64_t give_up = NowNs() + 10'000'000'000LL;
    while (!slow->first_done() && NowNs() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!slow->first_ok()) Fail("slowsub: the stuck subscriber never got its first message");
  }
  const auto status0 = GetStatus(status_stub.get());
  const uint32_t connected = status0 ? status0->subscriptions_connected() : 0;
  if (connected != static_cast<uint32_t>(n + (with_slow ? 1 : 0))) {
    Fail("slowsub " + name + ": " + std::to_string(connected) + " subscriptions connected");
  }

  // Poller (both phases alike, 20 Hz): GetStatus.subscribers_cut_off and the
  // daemon's RSS.
  std::atomic<bool> poll_stop{false};
  std::atomic<int64_t> cut_ns{0};
  std::atomic<uint64_t> cut_count{0};
  long rss_peak = 0, rss_at_cut = 0;
  const long rss_start = d.RssKb();
  std::thread poller([&] {
    while (!poll_stop.load()) {
      const auto st = GetStatus(status_stub.get(), 2000);
      const int64_t t = NowNs();
      const long rss = d.RssKb();
      rss_peak = std::max(rss_peak, rss);
      if (st && st->subscribers_cut_off() > cut_count.load()) {
        if (cut_count.load() == 0) {
          rss_at_cut = rss;
          cut_ns.store(t);
        }
        cut_count.store(st->subscribers_cut_off());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });

  FanOutRun m = MeasureFanOut(cfg, d, wl, prefix, cfg.slowsub_rate, cfg.slowsub_seconds, total,
                              warm, raw);
  OpenLoopResult& pub = m.pub;
  // Not cut off yet: give the daemon the write timeout (and a little) after
  // the last event, in case its write was still waiting.
  if (slow && cut_ns.load() == 0) {
    const int64_t give_up = m.t_end +
                            static_cast<int64_t>(cfg.slowsub_write_timeout_ms) * 1'000'000 +
                            2'000'000'000LL;
    while (cut_ns.load() == 0 && NowNs() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(120));  // one more poll
  poll_stop.store(true);
  poller.join();
  const long rss_end = d.RssKb();
  uint64_t ended_early = 0;
  for (auto* p : raw) ended_early += p->done() ? 1 : 0;
  for (auto* p : raw) p->Cancel();
  std::vector<int64_t> lat, lat_stuck, lat_after;
  uint64_t missing = 0, delivered = 0;
  const int64_t cut = cut_ns.load();
  for (auto* p : raw) {
    p->Await();
    const auto& l = p->latency_ns();
    const auto& sch = p->scheduled_ns();
    lat.insert(lat.end(), l.begin(), l.end());
    if (slow) {
      for (size_t i = 0; i < l.size() && i < sch.size(); ++i) {
        (cut == 0 || sch[i] < cut ? lat_stuck : lat_after).push_back(l[i]);
      }
    }
    delivered += p->delivered();
    missing += pub.acked > p->delivered() ? pub.acked - p->delivered() : 0;
  }
  json slow_j;
  double cut_after_stop_s = kNaN, buffered = kNaN, full_after_stop_s = kNaN;
  if (slow) {
    slow->Release(cut == 0);
    if (!slow->Await()) Fail("slowsub: the stuck subscriber's call did not end");
    const grpc::Status st = slow->status();
    const int64_t stopped = slow->stopped_ns();
    slow_j = {{"stopped_reading_at_s_before_schedule",
               stopped ? json(static_cast<double>(m.t0 - stopped) / 1e9) : json(nullptr)},
              {"cut_off", cut != 0},
              {"end_status", std::to_string(st.error_code()) + " " + st.error_message()}};
    if (cut != 0 && stopped != 0) {
      cut_after_stop_s = static_cast<double>(cut - stopped) / 1e9;
      buffered = static_cast<double>(slow->buffered());
      // Its window was full (the daemon's write started to wait) about when
      // the buffered events had been published; the timeout runs from there.
      full_after_stop_s = static_cast<double>(m.t0 - stopped) / 1e9 + buffered / cfg.slowsub_rate;
      slow_j.update({{"cut_off_s_after_it_stopped_reading", cut_after_stop_s},
                     {"est_window_full_s_after_it_stopped_reading", full_after_stop_s},
                     {"est_cut_off_s_after_window_full", cut_after_stop_s - full_after_stop_s},
                     {"cut_off_s_after_schedule_start", static_cast<double>(cut - m.t0) / 1e9},
                     {"cut_off_within_measured_window", cut <= m.we},
                     {"cut_off_before_publishing_ended", cut <= m.t_end},
                     {"events_buffered_for_it", slow->buffered()},
                     {"bytes_buffered_for_it", slow->buffered() * wl.event_size},
                     {"rss_at_cut_off_kb", rss_at_cut}});
    }
  }
  d.Stop();

  Summary e2e = Summarise(&lat);
  Summary ack = Summarise(&pub.ack_ns);
  const double dps = m.deliveries_per_s();
  const double cores = m.broker_cores();
  const double achieved = m.achieved_rate();
  const uint64_t cuts = cut_count.load();
  json r = {{"phase", name}, {"round", round}, {"subscribers", n}, {"channels", channels},
            {"stuck_subscriber", with_slow}, {"rate", cfg.slowsub_rate},
            {"seconds", cfg.slowsub_seconds}, {"event_bytes", wl.event_size},
            {"subscriber_write_timeout_ms", cfg.slowsub_write_timeout_ms},
            {"subscriptions_connected", connected},
            {"events_published", total}, {"events_acked", pub.acked},
            {"achieved_publish_rate", achieved}, {"max_send_lag_us", pub.max_send_lag_us},
            {"publish_errors", pub.errors}, {"late_sends_over_1ms", pub.late_sends},
            {"deliveries_per_s", dps}, {"offered_deliveries_per_s", cfg.slowsub_rate * n},
            {"delivered", delivered}, {"expected", pub.acked * static_cast<uint64_t>(n)},
            {"publish_to_delivery", ToJson(e2e)}, {"publish_ack_from_schedule", ToJson(ack)},
            {"slowest_lag_events_at_end", m.lag_end}, {"drain_ms", m.drain_ms},
            {"missing_after_drain", missing}, {"normal_streams_ended_early", ended_early},
            {"subscribers_cut_off", cuts}, {"broker_cores", cores},
            {"broker_rss_kb_start", rss_start}, {"broker_rss_kb_peak", rss_peak},
            {"broker_rss_kb_end", rss_end}, {"other_load_cores", m.other}};
  if (slow) {
    Summary stuck = Summarise(&lat_stuck);
    Summary after = Summarise(&lat_after);
    r["publish_to_delivery_while_stuck_connected"] = ToJson(stuck);
    r["publish_to_delivery_after_cut_off"] = ToJson(after);
    r["stuck"] = slow_j;
    out.e2e_stuck = stuck;
  }
  if (!pub.first_error.empty()) r["first_error"] = pub.first_error;
  std::fprintf(stderr,
               "[slowsub round %d] %s: %s of %s deliveries (%.0f/s), e2e p50 %.0f p99 %.0f p99.9 "
               "%.0f us, missing %llu, %llu cut off%s, RSS %ld/%ld/%ld KiB (start/peak/end), "
               "broker %.2f cores, other %.2f\n",
               round, name.c_str(), Num(static_cast<double>(delivered)).c_str(),
               Num(static_cast<double>(pub.acked * static_cast<uint64_t>(n))).c_str(), dps, e2e.p50,
               e2e.p99, e2e.p999, static_cast<unsigned long long>(missing),
               static_cast<unsigned long long>(cuts),
               !slow         ? ""
               : cut == 0    ? " (the stuck one NOT cut off)"
                             : Fmt(" (the stuck one %.2f s after it stopped reading)",
                                   cut_after_stop_s).c_str(),
               rss_start, rss_peak, rss_end, cores, m.other);
  if (slow && cut != 0) {
    std::fprintf(stderr,
                 "[slowsub round %d] the stuck subscriber: %.0f events (%s bytes) were buffered "
                 "for it (window full ~%.2f s after it stopped reading, cut off ~%.2f s later); "
                 "cut off %.2f s after the schedule started (%s the measured window); "
                 "others' e2e p99 while it was connected %.0f us, after %.0f us\n",
                 round, buffered, Num(buffered * static_cast<double>(wl.event_size)).c_str(),
                 full_after_stop_s, cut_after_stop_s - full_after_stop_s,
                 static_cast<double>(cut - m.t0) / 1e9, cut <= m.we ? "within" : "after",
                 out.e2e_stuck.p99, Summarise(&lat_after).p99);
  }
  table->Add(name, {static_cast<double>(delivered),
                    static_cast<double>(pub.acked * static_cast<uint64_t>(n)),
                    static_cast<double>(missing), e2e.p50 / 1000, e2e.p99 / 1000,
                    e2e.p999 / 1000, e2e.max / 1000,
                    slow ? out.e2e_stuck.p99 / 1000 : kNaN, static_cast<double>(cuts),
                    cut_after_stop_s, buffered, rss_peak / 1024.0, rss_end / 1024.0, cores,
                    m.other});
  if (pub.acked == 0 || e2e.n == 0) Fail("slowsub " + name + ": nothing delivered");
  if (pub.errors) Fail("slowsub " + name + ": publish errors: " + pub.first_error);
  if (ended_early) {
    Fail("slowsub " + name + ": " + std::to_string(ended_early) + " reading subscribers' streams ended");
  }
  if (cuts > (with_slow ? 1u : 0u)) {
    Fail("slowsub " + name + ": " + std::to_string(cuts) + " streams cut off (" +
         (with_slow ? "only the stuck one should be" : "none should be") + ")");
  }
  if (cfg.smoke && missing) Fail("slowsub " + name + ": " + std::to_string(missing) + " deliveries missing");
  if (cfg.smoke && with_slow && cut == 0) Fail("slowsub: the stuck subscriber was not cut off");
  out.j = r;
  out.e2e = e2e;
  out.ran = true;
  return out;
}

// Both phases, each on a fresh daemon; odd rounds run the baseline first,
// even rounds the stuck phase first (a drift of the machine then does not
// always favour the same phase).
json RunSlowsub(const Config& cfg, const Workload& wl, int round, Table* table) {
  json out = json::object();
  const bool slow_first = round % 2 == 0;
  SlowsubPhase base, stuck;
  for (int k = 0; k < 2; ++k) {
    const bool with_slow = (k == 0) == slow_first;
    (with_slow ? stuck : base) = RunSlowsubPhase(cfg, wl, round, with_slow, table);
  }
  out["round"] = round;
  out["order"] = slow_first ? "stuck, baseline" : "baseline, stuck";
  if (base.ran) out["baseline"] = base.j;
  if (stuck.ran) out["with_stuck"] = stuck.j;
  if (!base.ran || !stuck.ran) return out;
  auto ratio = [](double a, double b) { return b > 0 ? a / b : kNaN; };
  out["ratio_p50"] = ratio(stuck.e2e.p50, base.e2e.p50);
  out["ratio_p99"] = ratio(stuck.e2e.p99, base.e2e.p99);
  out["ratio_p999"] = ratio(stuck.e2e.p999, base.e2e.p999);
  out["ratio_p99_while_stuck_connected"] = ratio(stuck.e2e_stuck.p99, base.e2e.p99);
  table->Add("ratio stuck / baseline",
             {kNaN, kNaN, kNaN, ratio(stuck.e2e.p50, base.e2e.p50),
              ratio(stuck.e2e.p99, base.e2e.p99), ratio(stuck.e2e.p999, base.e2e.p999), kNaN,
              ratio(stuck.e2e_stuck.p99, base.e2e.p99)});
  std::fprintf(stderr,
               "[slowsub round %d] others' p99 with a stuck subscriber / baseline: %.2fx (while it "
               "was connected: %.2fx; target <= 1.10x)\n",
               round, out["ratio_p99"].get<double>(),
               out["ratio_p99_while_stuck_connected"].get<double>());
  return out;
}

bool Has(const Config& cfg, const std::string& w) {
  return std::find(cfg.workloads.begin(), cfg.workloads.end(), w) != cfg.workloads.end();
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"icr_broker_bench: workloads W3-W7 (fan-out, urgent lane, history reads, kill -9 "
               "recovery, idle streams), catch-up and a stuck subscriber against the icr-broker "
               "daemon"};
  app.add_option("--workload", cfg.workloads, "w3,w4,w5,w6,w7,catchup,slowsub (comma list)")
      ->delimiter(',')
      ->check(CLI::IsMember({"w3", "w4", "w5", "w6", "w7", "catchup", "slowsub"}))
      ->capture_default_str();
  app.add_option("--broker-bin", cfg.broker_bin, "the icr-broker executable")->capture_default_str();
  app.add_option("--broker-cpu", cfg.broker_cpu, "CPU the daemon is pinned to")->capture_default_str();
  app.add_option("--bench-cpu", cfg.bench_cpu, "CPU this load generator is pinned to")
      ->capture_default_str();
  app.add_flag("--no-pin", cfg.no_pin, "do not pin daemon and load generator");
  app.add_option("--json", cfg.json_path, "write every number to this JSON file");
  app.add_option("--repeat", cfg.repeat, "rounds of each workload (tables: median [min-max])")
      ->capture_default_str();
  app.add_flag("--smoke", cfg.smoke, "every workload with tiny sizes (CI; numbers meaningless)");
  app.add_option("--event-bytes", cfg.event_bytes, "serialized event size")->capture_default_str();
  app.add_option("--patients", cfg.patients, "W3/W4: test-range NHS numbers (Zipf)")
      ->capture_default_str();
  app.add_option("--zipf", cfg.zipf_s, "W3/W4: Zipf exponent")->capture_default_str();
  app.add_option("--warmup", cfg.warmup, "W3/W4/slowsub: warm-up seconds (not measured)")
      ->capture_default_str();
  app.add_option("--w3-subscribers", cfg.w3_subscribers, "W3 subscriber counts")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--w3-rate", cfg.w3_rate, "W3 offered publish rate, events/s")->capture_default_str();
  app.add_option("--w3-seconds", cfg.w3_seconds, "W3 measured seconds")->capture_default_str();
  app.add_option("--max-channels", cfg.max_channels,
                 "W3/slowsub: subscribers beyond this many share channels")
      ->capture_default_str();
  app.add_option("--drain-seconds", cfg.drain_seconds,
                 "W3/W4/slowsub: longest wait for subscribers to catch up after publishing")
      ->capture_default_str();
  app.add_option("--w4-rate", cfg.w4_rate, "W4 urgent events/s (open loop)")->capture_default_str();
  app.add_option("--w4-seconds", cfg.w4_seconds, "W4 measured seconds per phase")
      ->capture_default_str();
  app.add_option("--w4-bulk-threads", cfg.w4_bulk_threads, "W4 bulk PublishBatch calls in flight")
      ->capture_default_str();
  app.add_option("--batch", cfg.batch, "events per PublishBatch (bulk, load, W6)")
      ->capture_default_str();
  app.add_option("--events", cfg.events, "W5/W6 events in the history store")->capture_default_str();
  app.add_option("--history-patients", cfg.history_patients,
                 "W5/W6 patients (default events / 200)");
  app.add_option("--keep-data", cfg.keep_data,
                 "W5/W6: keep the history store in this directory (reused by later runs; the "
                 "loader only tops it up to --events)");
  app.add_option("--load-durability", cfg.load_durability,
                 "W5/W6 loader phase only (set-up): relaxed (default) or sync; every "
                 "measurement runs with durability sync")
      ->check(CLI::IsMember({"sync", "relaxed"}))
      ->capture_default_str();
  app.add_option("--load-threads", cfg.load_threads, "loader PublishBatch calls in flight")
      ->capture_default_str();
  app.add_option("--w5-cold-reads", cfg.w5_cold_reads, "W5 distinct patients read cold")
      ->capture_default_str();
  app.add_option("--w5-warm-reads", cfg.w5_warm_reads, "W5 warm reads")->capture_default_str();
  app.add_option("--w5-write-threads", cfg.w5_write_threads,
                 "W5 concurrent writer PublishBatch calls in flight")
      ->capture_default_str();
  app.add_option("--w6-load-seconds", cfg.w6_load_seconds, "W6 seconds of full load before kill -9")
      ->capture_default_str();
  app.add_option("--w6-threads", cfg.w6_threads, "W6 PublishBatch calls in flight")
      ->capture_default_str();
  app.add_option("--w7-streams", cfg.w7_streams, "W7 idle stream counts")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--w7-streams-per-channel", cfg.w7_streams_per_channel,
                 "W7 streams multiplexed on one channel")
      ->capture_default_str();
  app.add_option("--catchup-events", cfg.catchup_events,
                 "catchup: events read from position 1 (at most what the history store holds)")
      ->capture_default_str();
  app.add_option("--catchup-batches", cfg.catchup_batches,
                 "catchup: SubscribeRequest.max_batch values compared")
      ->delimiter(',')
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--slowsub-subscribers", cfg.slowsub_subscribers,
                 "slowsub: normal subscribers (the stuck one comes on top)")
      ->capture_default_str();
  app.add_option("--slowsub-rate", cfg.slowsub_rate, "slowsub offered publish rate, events/s")
      ->capture_default_str();
  app.add_option("--slowsub-seconds", cfg.slowsub_seconds, "slowsub measured seconds per phase")
      ->capture_default_str();
  app.add_option("--slowsub-write-timeout-ms", cfg.slowsub_write_timeout_ms,
                 "slowsub: the daemon's --subscriber-write-timeout-ms (both phases)")
      ->check(CLI::Range(1, 3600000))
      ->capture_default_str();
  app.add_option("--slowsub-event-bytes", cfg.slowsub_event_bytes,
                 "slowsub: serialized event size, both phases (the stuck stream's flow-control "
                 "window fills sooner with larger events; the padding stops near 4 KB)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (cfg.smoke) {
    cfg.w3_subscribers = {10};
    cfg.w3_seconds = 2;
    cfg.w3_rate = 500;
    cfg.warmup = 0.5;
    cfg.w4_seconds = 2;
    cfg.w4_rate = 50;
    cfg.w4_bulk_threads = 2;
    cfg.events = 20000;
    cfg.patients = 1000;
    cfg.w5_cold_reads = 50;
    cfg.w5_warm_reads = 200;
    cfg.w6_load_seconds = 1.5;
    cfg.w7_streams = {100};
    cfg.catchup_events = 20000;
    cfg.drain_seconds = 10;
    cfg.repeat = 1;
    cfg.slowsub_subscribers = 5;
    cfg.slowsub_rate = 1000;
    cfg.slowsub_seconds = 3;
    cfg.slowsub_event_bytes = 4096;  // the stuck window (~4 MB) full after ~1 s
    cfg.slowsub_write_timeout_ms = 1000;
  }
  if (cfg.repeat < 1 || cfg.batch < 1 || cfg.batch > 10000 || cfg.w3_rate <= 0 ||
      cfg.w4_rate <= 0 || cfg.events == 0 || cfg.max_channels < 1 ||
      cfg.slowsub_subscribers < 1 || cfg.slowsub_rate <= 0 || cfg.slowsub_seconds <= 0) {
    std::fprintf(stderr, "icr_broker_bench: invalid options\n");
    return 2;
  }
  if (::access(cfg.broker_bin.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "icr_broker_bench: %s is not executable (--broker-bin)\n",
                 cfg.broker_bin.c_str());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  // Enough descriptors for many channels (the daemon inherits the limit).
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores < 2) cfg.no_pin = true;
  if (!cfg.no_pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cfg.bench_cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      std::fprintf(stderr, "icr_broker_bench: cannot pin to CPU %d; not pinning\n", cfg.bench_cpu);
      cfg.no_pin = true;
    }
  }

  std::string commit = Shell("git -C '" ICR_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null");
  const bool dirty = !Shell("git -C '" ICR_SOURCE_DIR
                            "' status --porcelain --untracked-files=no 2>/dev/null")
                          .empty();
  if (commit.empty()) commit = "unknown";
  const std::string version = Shell("'" + cfg.broker_bin + "' --version 2>&1");
  std::printf("# icr_broker_bench  commit %s%s  %s\n\n", commit.c_str(), dirty ? " (dirty)" : "",
              UtcNow().c_str());
  std::printf("machine: %u cores (%s), kernel %s, load average %s\n", cores, CpuModel().c_str(),
              Shell("uname -r").c_str(), LoadAvg().c_str());
  std::printf("daemon: %s (%s), durability sync, loopback; %s\n", cfg.broker_bin.c_str(),
              version.c_str(),
              cfg.no_pin ? "NOT pinned"
                         : ("daemon pinned to CPU " + std::to_string(cfg.broker_cpu) +
                            ", load generator to CPU " + std::to_string(cfg.bench_cpu))
                               .c_str());
  std::fflush(stdout);

  json report;
  report["program"] = "icr_broker_bench";
  report["date"] = UtcNow();
  report["commit"] = commit;
  report["dirty"] = dirty;
  report["smoke"] = cfg.smoke;
  report["machine"] = {{"cores", cores}, {"cpu_model", CpuModel()},
                       {"load_average_at_start", LoadAvg()}, {"kernel", Shell("uname -r")}};
  report["pinning"] = cfg.no_pin ? json("none")
                                 : json({{"daemon_cpu", cfg.broker_cpu}, {"bench_cpu", cfg.bench_cpu}});
  report["broker"] = {{"bin", cfg.broker_bin}, {"version", version}, {"durability", "sync"}};

  WorkloadOptions wo;
  wo.patients = cfg.patients;
  wo.zipf_s = cfg.zipf_s;
  wo.event_bytes = cfg.event_bytes;
  wo.referral = false;  // W3: Care Act assessments (ordinary traffic), ROUTINE
  wo.run_prefix = "bb3";
  std::unique_ptr<Workload> w3wl;
  if (Has(cfg, "w3")) w3wl = std::make_unique<Workload>(MakeWorkload(wo));
  // slowsub: W3's events (ROUTINE Care Act assessments), padded to
  // --slowsub-event-bytes in both phases.
  std::unique_ptr<Workload> sswl;
  if (Has(cfg, "slowsub")) {
    WorkloadOptions so = wo;
    so.event_bytes = cfg.slowsub_event_bytes;
    so.run_prefix = "bbs";
    sswl = std::make_unique<Workload>(MakeWorkload(so));
  }

  Table t3("W3 fan-out: " + Fmt("%.0f", cfg.w3_rate) + " events/s offered, " +
               std::to_string(cfg.event_bytes) + "-byte events, ephemeral subscribers (latency in ms)",
           {"subscribers (channels)", "offered deliveries/s", "deliveries/s",
            "publisher achieved events/s", "sends > 1 ms late", "max send lag", "e2e p50",
            "e2e p99", "e2e p99.9", "e2e max", "slowest lag at end (events)", "drain ms",
            "missing", "broker cores", "other"},
           {"num", "num", "num", "num", "%.1f", "%.2f", "%.2f", "%.2f", "%.1f", "num", "num", "num",
            "%.2f", "%.2f"});
  Table t4("W4 urgent referrals at " + Fmt("%.0f", cfg.w4_rate) +
               "/s, idle vs during BULK backfill (latency in ms, from the schedule)",
           {"phase", "ack p50", "ack p99", "e2e p50 (URGENT sub)", "e2e p99 (URGENT sub)",
            "e2e p50 (all-events sub)", "e2e p99 (all-events sub)", "urgent delivered",
            "urgent sent", "bulk acked/s", "bulk delivered/s", "broker cores", "other"},
           {"%.2f", "%.2f", "%.2f", "%.2f", "%.2f", "%.2f", "num", "num", "num", "num", "%.2f",
            "%.2f"});
  Table t5("W5 GetPatientHistory, page of 100 events (latency in ms)",
           {"phase", "reads", "p50", "p99", "p99.9", "max", "events/page", "concurrent writes/s"},
           {"num", "%.3f", "%.3f", "%.3f", "%.2f", "%.1f", "num"});
  Table t6("W6 kill -9 at full load, restart",
           {"scenario", "events stored before", "load events/s", "acknowledged", "ready ms after kill -9",
            "ready ms after clean stop", "acknowledged lost"},
           {"num", "num", "num", "num", "num", "num"});
  Table t7("W7 idle Subscribe streams (" + std::to_string(cfg.w7_streams_per_channel) +
               " per channel)",
           {"streams", "channels", "connected", "RSS before MiB", "RSS after MiB", "KiB per stream",
            "RSS after closing MiB"},
           {"num", "num", "%.1f", "%.1f", "%.1f", "%.1f"});

  Table tc("Catch-up: one subscriber reads the history store from position 1, position order",
           {"max_batch", "events", "events/s", "messages", "broker us CPU per event"},
           {"num", "num", "num", "%.1f"});

  Table tss("slowsub: " + std::to_string(cfg.slowsub_subscribers) + " subscribers at " +
                Fmt("%.0f", cfg.slowsub_rate) + " events/s of " +
                std::to_string(sswl ? sswl->event_size : cfg.slowsub_event_bytes) +
                " bytes, without and with one stuck subscriber (write timeout " +
                std::to_string(cfg.slowsub_write_timeout_ms) +
                " ms; latency of the others in ms, from the schedule)",
            {"phase", "delivered (others)", "expected", "missing", "e2e p50", "e2e p99",
             "e2e p99.9", "e2e max", "e2e p99 while the stuck one was connected",
             "streams cut off", "cut off s after it stopped reading",
             "events buffered for it", "RSS peak MiB", "RSS end MiB", "broker cores", "other"},
            {"num", "num", "num", "%.2f", "%.2f", "%.2f", "%.1f", "%.2f", "num", "%.2f", "num",
             "%.1f", "%.1f", "%.2f", "%.2f"});

  HistoryStore hs;
  json info = json::object();
  for (int round = 1; round <= cfg.repeat; ++round) {
    if (Has(cfg, "w3")) report["w3"].push_back(RunW3(cfg, *w3wl, round, &t3));
    if (Has(cfg, "w4")) report["w4"].push_back(RunW4(cfg, round, &t4));
    if (Has(cfg, "w5")) report["w5"].push_back(RunW5(cfg, &hs, round, &t5, &info));
    if (Has(cfg, "w6")) report["w6"].push_back(RunW6(cfg, &hs, round, &t6, &info));
    if (Has(cfg, "w7")) report["w7"].push_back(RunW7(cfg, round, &t7));
    if (Has(cfg, "catchup")) report["catchup"].push_back(RunCatchup(cfg, &hs, round, &tc, &info));
    if (Has(cfg, "slowsub")) report["slowsub"].push_back(RunSlowsub(cfg, *sswl, round, &tss));
  }
  if (info.contains("history_store")) report["history_store"] = info["history_store"];

  if (Has(cfg, "w3")) {
    t3.Print();
    std::printf("\nSubscribers: one channel each up to %d, beyond that %d channels shared "
                "round-robin. Target: 100 subscribers x 1,000 events/s, e2e p99 <= 10 ms.\n",
                cfg.max_channels, cfg.max_channels);
  }
  if (Has(cfg, "w4")) {
    t4.Print();
    std::printf("\nTarget: urgent p99 during bulk within 1.2x of idle (last row: ratios of "
                "ack p50, ack p99, e2e p50, e2e p99).\n");
  }
  if (Has(cfg, "w5") && report.contains("history_store")) {
    const json& h = report["history_store"];
    t5.Print();
    std::printf("\nStore: %s events, %s patients (%.0f events per patient on average), %.1f GB "
                "on disk. Cold = daemon restarted and its files evicted from the page cache. "
                "Target p99 <= 1 ms.\n",
                Num(h["events_stored"].get<double>()).c_str(),
                Num(h["patients"].get<double>()).c_str(), h["events_per_patient"].get<double>(),
                h["disk_bytes"].get<double>() / 1e9);
  }
  if (Has(cfg, "w6")) {
    t6.Print();
    std::printf("\nTarget: ready <= 5 s with 10 M events stored; acknowledged lost must be 0.\n");
  }
  if (Has(cfg, "w7")) {
    t7.Print();
    std::printf("\nTarget: <= 50 KiB per idle stream.\n");
  }
  if (Has(cfg, "catchup")) tc.Print();
  if (Has(cfg, "slowsub")) {
    tss.Print();
    std::printf("\nEach phase on a fresh daemon; the stuck subscriber (own connection) reads one "
                "message and never again. Target: the others' p99 with it <= 1.10x baseline "
                "(last row: ratios; odd rounds ran the baseline first, even rounds the stuck "
                "phase).\n");
  }
  report["machine"]["load_average_at_end"] = LoadAvg();
  report["ok"] = !g_failed;
  if (!cfg.json_path.empty()) {
    std::ofstream out(cfg.json_path);
    out << report.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "icr_broker_bench: cannot write %s\n", cfg.json_path.c_str());
      g_failed = true;
    }
  }
  if (g_failed) std::fprintf(stderr, "icr_broker_bench: FAILED (see CHECK FAILED above)\n");
  return g_failed ? 1 : 0;
}
