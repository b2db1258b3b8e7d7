// icr_publish_bench: the durable-publish benchmark (docs/benchmarks.md, W1
// and W2 of the benchmark guide).
//
//  1. Calibrates the machine: 1 KB append + fdatasync in the data directory's
//     file system, a raw TCP loopback ping-pong and a gRPC unary round trip
//     (GetStatus) to the broker under test.
//  2. Starts a broker in-process over a fresh temporary directory (durability
//     sync), or uses an external one (--broker host:port).
//  3. Closed loop, durable publish: unary Publish, PublishStream with one
//     event per request, PublishStream with batches; each publisher has its
//     own thread(s) and its own channel (its own TCP connection). Reports
//     events/s, ack latency p50/p99/p99.9 (request sent -> its ack), group
//     commits seen and CPU per event.
//  4. Open loop, publish -> subscriber latency at fixed offered rates: event i
//     is due at t0 + i/rate, carries its scheduled time (steady clock, ns) in
//     its source_message_id, and its latency is receive time - scheduled time,
//     so a stalled publisher cannot hide latency (no coordinated omission).
//
// Events are ~1 KB discharge referrals (needs.summary padded), NHS numbers
// drawn Zipf-skewed over a set of test-range numbers, every
// source_message_id unique (a random run id is part of it).
//
// Group commits are counted from the acks: the store stamps every event of
// one synced write batch with the same recorded_at, so the number of distinct
// recorded_at values among the acks is the number of fsyncs that served them.
//
//   icr_publish_bench                      # full run, in-process broker
//   icr_publish_bench --broker 127.0.0.1:50599 --broker-pid $(pidof icr-broker)
//   icr_publish_bench --smoke              # ~10 s, for CI
//   icr_publish_bench --only batch-1,stream-16 --repeat 3 --json out.json
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <semaphore>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "icr/v1/broker.grpc.pb.h"
#include "tests/bench/bench_common.h"
#include "tests/support/test_support.h"

namespace {

using icr::v1::CareEvent;
using json = nlohmann::json;
using namespace icr::bench;  // NOLINT: the shared benchmark helpers

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
  std::string broker;        // empty: in-process
  int broker_pid = 0;        // external broker: its pid, for its CPU per event
  std::string data_dir;      // fdatasync calibration directory (external broker)
  double seconds = 5.0;
  double warmup = 1.0;
  uint64_t patients = 100000;
  double zipf_s = 1.1;
  size_t event_bytes = 1024;
  // referral: every event a new discharge referral (creates a referral,
  // indexes and two escalation deadlines, and updates the summary: the
  // workflow's worst case). assessment: a Care Act assessment (updates only
  // the person's summary), like most traffic.
  std::string event_type = "referral";
  std::vector<double> rates = {1000, 5000};
  std::vector<int> unary_publishers = {1, 16};
  std::vector<int> stream_publishers = {1, 16};
  std::vector<int> batch_publishers = {1, 4};
  int stream_window = 64;
  int batch_size = 256;
  int batch_window = 4;
  int latency_streams = 4;
  int calibration_samples = 2000;
  int repeat = 1;
  std::vector<std::string> only;  // scenario ids; empty: all
  bool skip_calibration = false;
  std::string durability = "sync";  // in-process broker only
  std::string json_path;
  std::string commit;
  bool smoke = false;
};

// ---------------------------------------------------------------------------
// Workload: NHS numbers (Zipf), ~1 KB events, unique message ids
// (Zipf, Workload and the event builder are in bench_common.h)
// ---------------------------------------------------------------------------

Workload MakeWorkload(const Config& cfg) {
  WorkloadOptions o;
  o.patients = cfg.patients;
  o.zipf_s = cfg.zipf_s;
  o.event_bytes = cfg.event_bytes;
  o.referral = cfg.event_type == "referral";
  o.run_prefix = "ib";
  return icr::bench::MakeWorkload(o);
}

// ---------------------------------------------------------------------------
// Calibration
// ---------------------------------------------------------------------------

struct Calibration {
  Summary fsync, tcp_rtt, grpc_rtt;
  std::string fsync_dir;
  std::string error;
};

Summary CalibrateFsync(const std::string& dir, int samples, std::string* error) {
  const std::string path = dir + "/icr-bench-fsync-calibration";
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "cannot open " + path + ": " + std::strerror(errno);
    return {};
  }
  std::string block(1024, 'x');
  std::vector<int64_t> ns;
  ns.reserve(samples);
  for (int i = -20; i < samples; ++i) {  // 20 unrecorded warm-up appends
    int64_t t0 = NowNs();
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size()) ||
        ::fdatasync(fd) != 0) {
      *error = "write/fdatasync on " + path + " failed: " + std::strerror(errno);
      break;
    }
    if (i >= 0) ns.push_back(NowNs() - t0);
  }
  ::close(fd);
  ::unlink(path.c_str());
  return Summarise(&ns);
}

// 64-byte ping-pong over TCP loopback (TCP_NODELAY), echo on a thread.
Summary CalibrateTcp(int samples) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (listener >= 0) ::close(listener);
    return {};
  }
  const int total = samples + 100;
  auto full_io = [](int fd, char* buf, size_t n, bool send) {
    size_t done = 0;
    while (done < n) {
      ssize_t r = send ? ::send(fd, buf + done, n - done, MSG_NOSIGNAL)
                       : ::recv(fd, buf + done, n - done, 0);
      if (r <= 0) return false;
      done += static_cast<size_t>(r);
    }
    return true;
  };
  std::thread echo([&] {
    int fd = ::accept(listener, nullptr, nullptr);
    if (fd < 0) return;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[64];
    for (int i = 0; i < total; ++i) {
      if (!full_io(fd, buf, sizeof buf, false) || !full_io(fd, buf, sizeof buf, true)) break;
    }
    ::close(fd);
  });
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  std::vector<int64_t> ns;
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[64] = {};
    for (int i = 0; i < total; ++i) {
      int64_t t0 = NowNs();
      if (!full_io(fd, buf, sizeof buf, true) || !full_io(fd, buf, sizeof buf, false)) break;
      if (i >= 100) ns.push_back(NowNs() - t0);
    }
  }
  if (fd >= 0) ::close(fd);
  ::shutdown(listener, SHUT_RDWR);  // unblocks accept() if we never connected
  echo.join();
  ::close(listener);
  return Summarise(&ns);
}

Summary CalibrateGrpc(const std::string& address, int samples) {
  auto stub = icr::v1::Broker::NewStub(NewChannel(address, g_channel_ids++));
  std::vector<int64_t> ns;
  ns.reserve(samples);
  for (int i = -100; i < samples; ++i) {
    grpc::ClientContext ctx;
    icr::v1::GetStatusRequest req;
    icr::v1::GetStatusResponse resp;
    int64_t t0 = NowNs();
    if (!stub->GetStatus(&ctx, req, &resp).ok()) break;
    if (i >= 0) ns.push_back(NowNs() - t0);
  }
  return Summarise(&ns);
}

// ---------------------------------------------------------------------------
// Closed-loop publish scenarios
// ---------------------------------------------------------------------------

enum class Api { kUnary, kStream };

struct Scenario {
  std::string id;      // e.g. "stream-16"
  std::string label;   // human-readable
  Api api = Api::kUnary;
  int publishers = 1;
  int batch = 1;       // events per request
  int window = 1;      // requests in flight per publisher
};

// Atomics: set by the runner, read by publisher and ack-reader threads.
struct Window {
  std::atomic<int64_t> measure_start{0};
  std::atomic<int64_t> measure_end{0};
};

// One publisher's measurements inside the window.
struct PubStats {
  std::vector<int64_t> latency_ns;   // per request acked in the window
  std::vector<int64_t> recorded_us;  // recorded_at of each such request's events
  uint64_t events = 0;
  uint64_t requests = 0;
  uint64_t errors = 0;
  std::string first_error;

  void OnAck(const Window& w, int64_t sent, int64_t acked, int events_acked,
             int64_t recorded_micros) {
    if (acked < w.measure_start || acked >= w.measure_end) return;
    latency_ns.push_back(acked - sent);
    recorded_us.push_back(recorded_micros);
    events += static_cast<uint64_t>(events_acked);
    ++requests;
  }
  void OnError(const std::string& what) {
    ++errors;
    if (first_error.empty()) first_error = what;
  }
};

struct ScenarioResult {
  Scenario sc;
  int round = 0;
  double seconds = 0;
  uint64_t events = 0, requests = 0, errors = 0;
  std::string first_error;
  double events_per_s = 0;
  Summary ack;
  uint64_t commits = 0;            // distinct recorded_at among the acks
  double events_per_commit = 0;
  double cpu_us_per_event = 0;     // this process (broker too when in-process)
  std::optional<double> broker_cpu_us_per_event;
  double other_load_cores = 0;     // other processes on the machine meanwhile
};

class Bench {
 public:
  Bench(const Config& cfg, const Workload& wl, std::string address)
      : cfg_(cfg), wl_(wl), address_(std::move(address)) {}

  ScenarioResult RunClosed(const Scenario& sc, int round);

  struct LatencyResult {
    double rate = 0;
    int round = 0;
    uint64_t expected = 0, received = 0, late_sends = 0, errors = 0;
    double max_send_lag_us = 0;
    Summary e2e;   // receive - scheduled
    Summary ack;   // ack - send (publisher side, context)
    double other_load_cores = 0;
    std::string first_error;
  };
  LatencyResult RunLatency(double rate, int round, int scenario_index);

 private:
  void UnaryPublisher(const Scenario& sc, int index, std::latch* ready, std::latch* start,
                      const Window* w, PubStats* stats);
  void StreamPublisher(const Scenario& sc, int index, std::latch* ready, std::latch* start,
                       const Window* w, PubStats* stats);

  const Config& cfg_;
  const Workload& wl_;
  const std::string address_;
};

// Message ids: <run>-<scenario tag>-<publisher>-<sequence>, fixed width.
size_t FormatId(char* buf, size_t cap, const std::string& run, const char* tag, int pub,
                uint64_t seq) {
  int n = std::snprintf(buf, cap, "%s-%s-%02d-%010llu", run.c_str(), tag, pub % 100,
                        static_cast<unsigned long long>(seq));
  return static_cast<size_t>(std::min<int>(n, static_cast<int>(cap) - 1));
}

void Bench::UnaryPublisher(const Scenario& sc, int index, std::latch* ready, std::latch* start,
                           const Window* w, PubStats* stats) {
  auto stub = icr::v1::Broker::NewStub(NewChannel(address_, g_channel_ids++));
  std::mt19937_64 rng(std::random_device{}() + static_cast<uint64_t>(index));
  icr::v1::PublishRequest req;
  *req.mutable_event() = wl_.tmpl;
  icr::v1::PublishResponse resp;
  char id[128];
  ready->count_down();
  start->wait();
  for (uint64_t seq = 0;; ++seq) {
    wl_.Fill(req.mutable_event(), rng, id,
             FormatId(id, sizeof id, wl_.run_id, sc.id.c_str(), index, seq));
    grpc::ClientContext ctx;
    const int64_t t0 = NowNs();
    if (t0 >= w->measure_end) break;
    grpc::Status st = stub->Publish(&ctx, req, &resp);
    const int64_t t1 = NowNs();
    if (!st.ok()) {
      stats->OnError("Publish: " + std::to_string(st.error_code()) + " " + st.error_message());
      if (stats->errors > 100) break;
      continue;
    }
    stats->OnAck(*w, t0, t1, 1, Micros(resp.recorded_at()));
  }
}

void Bench::StreamPublisher(const Scenario& sc, int index, std::latch* ready, std::latch* start,
                            const Window* w, PubStats* stats) {
  auto stub = icr::v1::Broker::NewStub(NewChannel(address_, g_channel_ids++));
  std::mt19937_64 rng(std::random_device{}() + static_cast<uint64_t>(index));
  grpc::ClientContext ctx;
  auto stream = stub->PublishStream(&ctx);
  const int window = sc.window;
  std::vector<std::atomic<int64_t>> sent(static_cast<size_t>(window));
  std::counting_semaphore<1 << 20> slots(window);
  std::atomic<bool> broken{false};
  std::mutex stats_mu;  // reader records, writer records write errors

  std::thread reader([&] {
    icr::v1::PublishStreamResponse resp;
    while (stream->Read(&resp)) {
      const int64_t t1 = NowNs();
      const int64_t t0 = sent[resp.request_id() % static_cast<uint64_t>(window)].load(
          std::memory_order_acquire);
      {
        std::lock_guard<std::mutex> lock(stats_mu);
        if (resp.code() != 0) {
          stats->OnError("PublishStream: " + std::to_string(resp.code()) + " " + resp.message());
        } else if (resp.results_size() > 0) {
          stats->OnAck(*w, t0, t1, resp.results_size(), Micros(resp.results(0).recorded_at()));
        }
      }
      slots.release();
    }
    broken.store(true);
    slots.release(window);  // unblock the writer if the stream ended early
  });

  icr::v1::PublishStreamRequest req;
  for (int i = 0; i < sc.batch; ++i) *req.add_events() = wl_.tmpl;
  char id[128];
  ready->count_down();
  start->wait();
  uint64_t seq = 0;
  for (uint64_t request_id = 0;; ++request_id) {
    slots.acquire();
    if (broken.load() || NowNs() >= w->measure_end) break;
    for (int i = 0; i < sc.batch; ++i) {
      wl_.Fill(req.mutable_events(i), rng, id,
               FormatId(id, sizeof id, wl_.run_id, sc.id.c_str(), index, seq++));
    }
    req.set_request_id(request_id);
    const int64_t t0 = NowNs();
    sent[request_id % static_cast<uint64_t>(window)].store(t0, std::memory_order_release);
    if (!stream->Write(req)) break;
  }
  stream->WritesDone();
  reader.join();
  grpc::Status st = stream->Finish();
  if (!st.ok()) {
    std::lock_guard<std::mutex> lock(stats_mu);
    stats->OnError("PublishStream finished: " + std::to_string(st.error_code()) + " " +
                   st.error_message());
  }
}

ScenarioResult Bench::RunClosed(const Scenario& sc, int round) {
  std::latch ready(sc.publishers);
  std::latch start(1);
  Window w;
  std::vector<PubStats> stats(static_cast<size_t>(sc.publishers));
  std::vector<std::thread> threads;
  for (int p = 0; p < sc.publishers; ++p) {
    threads.emplace_back([&, p] {
      if (sc.api == Api::kUnary) {
        UnaryPublisher(sc, p, &ready, &start, &w, &stats[static_cast<size_t>(p)]);
      } else {
        StreamPublisher(sc, p, &ready, &start, &w, &stats[static_cast<size_t>(p)]);
      }
    });
  }
  ready.wait();
  const int64_t now = NowNs();
  w.measure_start = now + static_cast<int64_t>(cfg_.warmup * 1e9);
  w.measure_end = w.measure_start.load() + static_cast<int64_t>(cfg_.seconds * 1e9);
  start.count_down();

  SleepUntilNs(w.measure_start);
  ForeignLoad foreign(cfg_.broker_pid);
  foreign.Start();
  const double cpu0 = SelfCpuSeconds();
  const auto bcpu0 = PidCpuSeconds(cfg_.broker_pid);
  SleepUntilNs(w.measure_end);
  const double cpu1 = SelfCpuSeconds();
  const auto bcpu1 = PidCpuSeconds(cfg_.broker_pid);
  const double other_load = foreign.Stop();
  for (auto& t : threads) t.join();

  ScenarioResult r;
  r.sc = sc;
  r.round = round;
  r.seconds = static_cast<double>(w.measure_end - w.measure_start) / 1e9;
  r.other_load_cores = other_load;
  std::vector<int64_t> lat, rec;
  for (auto& s : stats) {
    r.events += s.events;
    r.requests += s.requests;
    r.errors += s.errors;
    if (r.first_error.empty()) r.first_error = s.first_error;
    lat.insert(lat.end(), s.latency_ns.begin(), s.latency_ns.end());
    rec.insert(rec.end(), s.recorded_us.begin(), s.recorded_us.end());
  }
  r.events_per_s = static_cast<double>(r.events) / r.seconds;
  r.ack = Summarise(&lat);
  std::sort(rec.begin(), rec.end());
  r.commits = static_cast<uint64_t>(std::unique(rec.begin(), rec.end()) - rec.begin());
  r.events_per_commit = r.commits ? static_cast<double>(r.events) / r.commits : 0;
  if (r.events) {
    r.cpu_us_per_event = (cpu1 - cpu0) * 1e6 / static_cast<double>(r.events);
    if (bcpu0 && bcpu1) {
      r.broker_cpu_us_per_event = (*bcpu1 - *bcpu0) * 1e6 / static_cast<double>(r.events);
    }
  }
  return r;
}

// ---------------------------------------------------------------------------
// Open-loop publish -> subscriber latency
// ---------------------------------------------------------------------------

Bench::LatencyResult Bench::RunLatency(double rate, int round, int scenario_index) {
  LatencyResult r;
  r.rate = rate;
  r.round = round;
  // Ids: <run>-L<k>-<publisher>-<index 10>-<scheduled ns 19>; probes: <run>-L<k>-probe-<n>.
  char tag_buf[32];
  std::snprintf(tag_buf, sizeof tag_buf, "L%d", scenario_index);
  const std::string tag = tag_buf;
  const std::string prefix = wl_.run_id + "-" + tag + "-";

  const uint64_t total = static_cast<uint64_t>(std::llround(rate * (cfg_.warmup + cfg_.seconds)));
  const uint64_t warm = static_cast<uint64_t>(std::llround(rate * cfg_.warmup));
  r.expected = total - warm;

  // Subscriber: ephemeral, from latest, everything.
  auto sub_stub = icr::v1::Broker::NewStub(NewChannel(address_, g_channel_ids++));
  grpc::ClientContext sub_ctx;
  icr::v1::SubscribeRequest sub_req;
  sub_req.mutable_start()->set_latest(true);
  auto sub = sub_stub->Subscribe(&sub_ctx, sub_req);
  std::atomic<bool> probe_seen{false};
  std::atomic<uint64_t> received{0};
  std::vector<int64_t> e2e_ns;
  e2e_ns.reserve(r.expected);
  std::vector<uint8_t> seen(total, 0);
  std::thread subscriber([&] {
    icr::v1::SubscribeResponse resp;
    while (sub->Read(&resp)) {
      const int64_t t = NowNs();
      if (!resp.has_event()) continue;
      const std::string& id = resp.event().source_message_id();
      if (id.compare(0, prefix.size(), prefix) != 0) continue;
      if (id.compare(prefix.size(), 6, "probe-") == 0) {
        probe_seen.store(true);
        continue;
      }
      // Fixed-width tail: -<index 10>-<scheduled 19>.
      if (id.size() < 31) continue;
      const uint64_t index = std::strtoull(id.c_str() + id.size() - 30, nullptr, 10);
      const int64_t scheduled = std::strtoll(id.c_str() + id.size() - 19, nullptr, 10);
      if (index >= total || seen[index]) continue;
      seen[index] = 1;
      if (index >= warm) {
        e2e_ns.push_back(t - scheduled);
        received.fetch_add(1);
      }
    }
  });

  // Probe until the subscription is live (events before that are not seen).
  {
    auto stub = icr::v1::Broker::NewStub(NewChannel(address_, g_channel_ids++));
    std::mt19937_64 rng(1);
    icr::v1::PublishRequest req;
    *req.mutable_event() = wl_.tmpl;
    const int64_t give_up = NowNs() + 10'000'000'000LL;
    for (int n = 0; !probe_seen.load() && NowNs() < give_up; ++n) {
      const std::string id = prefix + "probe-" + std::to_string(n);
      wl_.Fill(req.mutable_event(), rng, id.data(), id.size());
      grpc::ClientContext ctx;
      icr::v1::PublishResponse resp;
      stub->Publish(&ctx, req, &resp);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!probe_seen.load()) r.first_error = "the subscriber never saw a probe event";
  }

  // Publishers: K streams; stream k sends events i = k, k+K, ... at their due
  // time (sleeping until then), one event per request.
  const int k_streams = std::max(1, cfg_.latency_streams);
  const double period_ns = 1e9 / rate;
  std::vector<PubStats> stats(static_cast<size_t>(k_streams));
  std::vector<uint64_t> late(static_cast<size_t>(k_streams), 0);
  std::vector<int64_t> max_lag(static_cast<size_t>(k_streams), 0);
  std::latch ready(k_streams);
  std::latch start(1);
  int64_t t0 = 0;
  Window w;  // acks are recorded for measured events (by send time, see below)
  std::vector<std::thread> pubs;
  for (int k = 0; k < k_streams; ++k) {
    pubs.emplace_back([&, k] {
      prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake on time, not 50 us late
      auto stub = icr::v1::Broker::NewStub(NewChannel(address_, g_channel_ids++));
      std::mt19937_64 rng(std::random_device{}() + static_cast<uint64_t>(k));
      grpc::ClientContext ctx;
      auto stream = stub->PublishStream(&ctx);
      const int window = cfg_.stream_window;
      std::vector<std::atomic<int64_t>> sent(static_cast<size_t>(window));
      std::counting_semaphore<1 << 20> slots(window);
      std::atomic<bool> broken{false};
      std::mutex mu;
      PubStats& st = stats[static_cast<size_t>(k)];
      std::thread reader([&] {
        icr::v1::PublishStreamResponse resp;
        while (stream->Read(&resp)) {
          const int64_t t1 = NowNs();
          const int64_t ts = sent[resp.request_id() % static_cast<uint64_t>(window)].load(
              std::memory_order_acquire);
          {
            std::lock_guard<std::mutex> lock(mu);
            if (resp.code() != 0) {
              st.OnError("PublishStream: " + std::to_string(resp.code()) + " " + resp.message());
            } else if (ts >= w.measure_start) {
              st.latency_ns.push_back(t1 - ts);
            }
          }
          slots.release();
        }
        broken.store(true);
        slots.release(window);
      });
      icr::v1::PublishStreamRequest req;
      *req.add_events() = wl_.tmpl;
      char id[160];
      ready.count_down();
      start.wait();
      uint64_t request_id = 0;
      for (uint64_t i = static_cast<uint64_t>(k); i < total; i += static_cast<uint64_t>(k_streams)) {
        const int64_t due = t0 + static_cast<int64_t>(static_cast<double>(i) * period_ns);
        SleepUntilNs(due);
        slots.acquire();
        if (broken.load()) break;
        const int64_t now = NowNs();
        if (i >= warm) {
          const int64_t lag = now - due;
          if (lag > 1'000'000) ++late[static_cast<size_t>(k)];
          max_lag[static_cast<size_t>(k)] = std::max(max_lag[static_cast<size_t>(k)], lag);
        }
        int n = std::snprintf(id, sizeof id, "%s%02d-%010llu-%019lld", prefix.c_str(), k,
                              static_cast<unsigned long long>(i), static_cast<long long>(due));
        wl_.Fill(req.mutable_events(0), rng, id, static_cast<size_t>(n));
        req.set_request_id(request_id);
        sent[request_id % static_cast<uint64_t>(window)].store(now, std::memory_order_release);
        ++request_id;
        if (!stream->Write(req)) break;
      }
      stream->WritesDone();
      reader.join();
      grpc::Status s = stream->Finish();
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        st.OnError("PublishStream finished: " + s.error_message());
      }
    });
  }
  ready.wait();
  t0 = NowNs() + 20'000'000;  // 20 ms from now
  w.measure_start = t0 + static_cast<int64_t>(cfg_.warmup * 1e9);
  w.measure_end = INT64_MAX;
  start.count_down();
  SleepUntilNs(w.measure_start);
  ForeignLoad foreign(cfg_.broker_pid);
  foreign.Start();
  for (auto& t : pubs) t.join();
  r.other_load_cores = foreign.Stop();

  // Wait for the subscriber to receive what was acknowledged (at most 5 s).
  const int64_t give_up = NowNs() + 5'000'000'000LL;
  while (received.load() < r.expected && NowNs() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  sub_ctx.TryCancel();
  subscriber.join();
  sub->Finish();

  r.received = received.load();
  r.e2e = Summarise(&e2e_ns);
  std::vector<int64_t> ack;
  for (size_t k = 0; k < stats.size(); ++k) {
    r.errors += stats[k].errors;
    if (r.first_error.empty()) r.first_error = stats[k].first_error;
    ack.insert(ack.end(), stats[k].latency_ns.begin(), stats[k].latency_ns.end());
    r.late_sends += late[k];
    r.max_send_lag_us = std::max(r.max_send_lag_us, static_cast<double>(max_lag[k]) / 1000.0);
  }
  r.ack = Summarise(&ack);
  return r;
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

json ToJson(const ScenarioResult& r) {
  json j = {{"id", r.sc.id},
            {"label", r.sc.label},
            {"round", r.round},
            {"api", r.sc.api == Api::kUnary ? "Publish" : "PublishStream"},
            {"publishers", r.sc.publishers},
            {"events_per_request", r.sc.batch},
            {"window", r.sc.window},
            {"seconds", r.seconds},
            {"events", r.events},
            {"requests", r.requests},
            {"events_per_s", r.events_per_s},
            {"ack_latency", ToJson(r.ack)},
            {"group_commits", r.commits},
            {"events_per_group_commit", r.events_per_commit},
            {"cpu_us_per_event_process", r.cpu_us_per_event},
            {"other_load_cores", r.other_load_cores},
            {"errors", r.errors}};
  if (r.broker_cpu_us_per_event) j["cpu_us_per_event_broker"] = *r.broker_cpu_us_per_event;
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

json ToJson(const Bench::LatencyResult& r) {
  json j = {{"offered_rate", r.rate},
            {"round", r.round},
            {"expected", r.expected},
            {"received", r.received},
            {"missing", r.expected - std::min(r.expected, r.received)},
            {"late_sends_over_1ms", r.late_sends},
            {"max_send_lag_us", r.max_send_lag_us},
            {"publish_to_subscriber", ToJson(r.e2e)},
            {"publish_ack", ToJson(r.ack)},
            {"other_load_cores", r.other_load_cores},
            {"errors", r.errors}};
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

bool Selected(const Config& cfg, const std::string& id) {
  if (cfg.only.empty()) return true;
  for (const auto& o : cfg.only) {
    if (o == id || (o == "latency" && id.rfind("latency", 0) == 0) ||
        (id.rfind(o + "-", 0) == 0 && o.find('-') == std::string::npos)) {
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"icr_publish_bench: durable publish throughput and latency of the ICR broker"};
  app.add_option("--broker", cfg.broker,
                 "host:port of a running broker (default: start one in-process over a fresh "
                 "temporary directory, durability sync)");
  app.add_option("--broker-pid", cfg.broker_pid,
                 "pid of the external broker, to report its CPU seconds per event");
  app.add_option("--data-dir", cfg.data_dir,
                 "directory for the fdatasync calibration (default: the in-process broker's "
                 "data directory, or $TMPDIR); use the external broker's file system");
  app.add_option("--durability", cfg.durability,
                 "in-process broker durability; relaxed (fsync about every 100 ms) is for "
                 "diagnosis only: it shows what is not fsync")
      ->check(CLI::IsMember({"sync", "relaxed"}))
      ->capture_default_str();
  app.add_option("--seconds", cfg.seconds, "measured seconds per scenario")->capture_default_str();
  app.add_option("--warmup", cfg.warmup, "warm-up seconds per scenario")->capture_default_str();
  app.add_option("--patients", cfg.patients, "how many test-range NHS numbers")
      ->capture_default_str();
  app.add_option("--zipf", cfg.zipf_s, "Zipf exponent of the NHS number draw")
      ->capture_default_str();
  app.add_option("--event-bytes", cfg.event_bytes, "serialized event size to pad to")
      ->capture_default_str();
  app.add_option("--event-type", cfg.event_type,
                 "referral: each event a new discharge referral (the workflow's worst case); "
                 "assessment: a Care Act assessment (summary update only)")
      ->check(CLI::IsMember({"referral", "assessment"}))
      ->capture_default_str();
  app.add_option("--rates", cfg.rates, "offered rates (events/s) of the latency test")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--unary-publishers", cfg.unary_publishers, "publisher counts, unary Publish")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--stream-publishers", cfg.stream_publishers,
                 "publisher counts, PublishStream one event per request")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--batch-publishers", cfg.batch_publishers,
                 "publisher counts, PublishStream batched")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--stream-window", cfg.stream_window, "requests in flight per stream")
      ->capture_default_str();
  app.add_option("--batch-size", cfg.batch_size, "events per batched request")
      ->capture_default_str();
  app.add_option("--batch-window", cfg.batch_window, "batched requests in flight per stream")
      ->capture_default_str();
  app.add_option("--latency-streams", cfg.latency_streams,
                 "publisher streams of the latency test")
      ->capture_default_str();
  app.add_option("--calibration-samples", cfg.calibration_samples, "samples per calibration")
      ->capture_default_str();
  app.add_flag("--skip-calibration", cfg.skip_calibration, "do not calibrate");
  app.add_option("--repeat", cfg.repeat, "rounds of all selected scenarios (median and spread)")
      ->capture_default_str();
  app.add_option("--only", cfg.only,
                 "scenario ids or families to run: unary, stream, batch, latency, or e.g. "
                 "unary-16,batch-4,latency-5000")
      ->delimiter(',');
  app.add_option("--json", cfg.json_path, "write every number to this JSON file");
  app.add_option("--commit", cfg.commit, "git commit to record (default: git rev-parse)");
  app.add_flag("--smoke", cfg.smoke,
               "every scenario for ~0.3 s with small numbers (CI keeps the program working; "
               "the numbers mean nothing)");
  CLI11_PARSE(app, argc, argv);

  if (cfg.smoke) {
    cfg.seconds = 0.3;
    cfg.warmup = 0.1;
    cfg.patients = 1000;
    cfg.calibration_samples = 100;
    cfg.rates = {500};
    cfg.repeat = 1;
  }
  if (cfg.seconds <= 0 || cfg.warmup < 0 || cfg.patients == 0 || cfg.stream_window < 1 ||
      cfg.batch_size < 1 || cfg.batch_size > 10000 || cfg.batch_window < 1 || cfg.repeat < 1) {
    std::fprintf(stderr, "icr_publish_bench: invalid options\n");
    return 2;
  }
  for (double r : cfg.rates) {
    if (r <= 0) {
      std::fprintf(stderr, "icr_publish_bench: --rates must be positive\n");
      return 2;
    }
  }

  std::string commit = cfg.commit;
  bool dirty = false;
  if (commit.empty()) {
    commit = Shell("git -C '" ICR_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null");
    dirty = !Shell("git -C '" ICR_SOURCE_DIR
                   "' status --porcelain --untracked-files=no 2>/dev/null")
                 .empty();
  }
  if (commit.empty()) commit = "unknown";

  std::fprintf(stderr, "icr_publish_bench: preparing %llu NHS numbers...\n",
               static_cast<unsigned long long>(cfg.patients));
  const Workload wl = MakeWorkload(cfg);

  // The broker under test.
  std::unique_ptr<icr::testing::TempDir> temp;
  std::unique_ptr<icr::testing::TestBroker> broker;
  std::string address = cfg.broker;
  std::string data_dir = cfg.data_dir;
  if (address.empty()) {
    temp = std::make_unique<icr::testing::TempDir>();
    broker = std::make_unique<icr::testing::TestBroker>(
        temp->path(), cfg.durability == "sync" ? icr::store::Durability::kSync
                                               : icr::store::Durability::kRelaxed);
    address = broker->address();
    if (data_dir.empty()) data_dir = temp->path();
  } else if (data_dir.empty()) {
    data_dir = std::filesystem::temp_directory_path().string();
  }

  // What the broker says about itself (durability, version).
  std::string broker_durability = "unknown", broker_version = "unknown";
  {
    auto stub = icr::v1::Broker::NewStub(NewChannel(address, g_channel_ids++));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    icr::v1::GetStatusResponse status;
    grpc::Status st = stub->GetStatus(&ctx, icr::v1::GetStatusRequest(), &status);
    if (!st.ok()) {
      std::fprintf(stderr, "icr_publish_bench: the broker at %s does not answer GetStatus: %s\n",
                   address.c_str(), st.error_message().c_str());
      return 1;
    }
    broker_durability = status.durability();
    broker_version = status.version();
  }
  const std::string cpus = AffinityList();
  std::printf("icr_publish_bench  commit %s%s  %s\n", commit.c_str(), dirty ? " (dirty)" : "",
              UtcNow().c_str());
  std::printf("machine: %u cores (%s), affinity cpus %s, kernel %s, load average %s\n",
              std::thread::hardware_concurrency(), CpuModel().c_str(), cpus.c_str(),
              Shell("uname -r").c_str(), LoadAvg().c_str());
  std::printf("broker: %s%s, version %s, durability %s\n",
              cfg.broker.empty() ? "in-process at " : "external at ", address.c_str(),
              broker_version.c_str(), broker_durability.c_str());
  std::printf("workload: %zu-byte events (discharge referrals), NHS numbers Zipf s=%.2f over %llu "
              "test numbers (top 1%% get %.0f%% of events), warm-up %.1f s, measured %.1f s\n\n",
              wl.event_size, cfg.zipf_s, static_cast<unsigned long long>(cfg.patients),
              wl.zipf->TopShare(std::max<size_t>(1, cfg.patients / 100)) * 100, cfg.warmup,
              cfg.seconds);
  std::fflush(stdout);

  json report;
  report["program"] = "icr_publish_bench";
  report["date"] = UtcNow();
  report["commit"] = commit;
  report["dirty"] = dirty;
  report["machine"] = {{"cores", std::thread::hardware_concurrency()},
                       {"cpu_model", CpuModel()},
                       {"affinity_cpus", cpus},
                       {"load_average_at_start", LoadAvg()},
                       {"kernel", Shell("uname -r")}};
  report["broker"] = {{"mode", cfg.broker.empty() ? "in-process" : "external"},
                      {"address", address},
                      {"version", broker_version},
                      {"durability", broker_durability}};
  report["config"] = {{"seconds", cfg.seconds},
                      {"warmup", cfg.warmup},
                      {"patients", cfg.patients},
                      {"zipf_s", cfg.zipf_s},
                      {"event_bytes", wl.event_size},
                      {"rates", cfg.rates},
                      {"stream_window", cfg.stream_window},
                      {"batch_size", cfg.batch_size},
                      {"batch_window", cfg.batch_window},
                      {"latency_streams", cfg.latency_streams},
                      {"repeat", cfg.repeat},
                      {"smoke", cfg.smoke}};
  bool failed = false;

  // 1. Calibration.
  if (!cfg.skip_calibration) {
    std::string error;
    ForeignLoad foreign(cfg.broker_pid);
    foreign.Start();
    Summary fs = CalibrateFsync(data_dir, cfg.calibration_samples, &error);
    const double fsync_other_load = foreign.Stop();
    Summary tcp = CalibrateTcp(cfg.calibration_samples);
    Summary rpc = CalibrateGrpc(address, cfg.calibration_samples);
    std::printf("calibration (%d samples each)                 p50 us   p99 us\n",
                cfg.calibration_samples);
    std::printf("  1 KB append + fdatasync (%s)  %8.1f %8.1f  (other load %.2f cores)%s\n",
                data_dir.c_str(), fs.p50, fs.p99, fsync_other_load,
                error.empty() ? "" : ("  ERROR " + error).c_str());
    std::printf("  TCP loopback ping-pong, 64 B               %8.1f %8.1f\n", tcp.p50, tcp.p99);
    std::printf("  gRPC unary GetStatus round trip            %8.1f %8.1f\n\n", rpc.p50, rpc.p99);
    std::fflush(stdout);
    report["calibration"] = {{"fdatasync_1k_append", ToJson(fs)},
                             {"fdatasync_dir", data_dir},
                             {"fdatasync_other_load_cores", fsync_other_load},
                             {"tcp_loopback_rtt_64b", ToJson(tcp)},
                             {"grpc_getstatus_rtt", ToJson(rpc)}};
    if (!error.empty()) report["calibration"]["error"] = error;
    if (fs.n == 0 || rpc.n == 0) failed = true;
  }

  // 2. Scenarios.
  std::vector<Scenario> scenarios;
  for (int p : cfg.unary_publishers) {
    scenarios.push_back({"unary-" + std::to_string(p),
                         "Publish (unary), " + std::to_string(p) + " pub", Api::kUnary,
                         p, 1, 1});
  }
  for (int p : cfg.stream_publishers) {
    scenarios.push_back({"stream-" + std::to_string(p),
                         "PublishStream 1 ev/req, window " + std::to_string(cfg.stream_window) +
                             ", " + std::to_string(p) + " pub",
                         Api::kStream, p, 1, cfg.stream_window});
  }
  for (int p : cfg.batch_publishers) {
    scenarios.push_back({"batch-" + std::to_string(p),
                         "PublishStream " + std::to_string(cfg.batch_size) +
                             " ev/req, window " + std::to_string(cfg.batch_window) + ", " +
                             std::to_string(p) + " pub",
                         Api::kStream, p, cfg.batch_size, cfg.batch_window});
  }
  std::erase_if(scenarios, [&](const Scenario& s) { return !Selected(cfg, s.id) || s.publishers < 1; });
  std::vector<double> rates;
  for (double r : cfg.rates) {
    if (Selected(cfg, "latency-" + Fmt("%.0f", r))) rates.push_back(r);
  }

  Bench bench(cfg, wl, address);
  std::vector<ScenarioResult> results;
  std::vector<Bench::LatencyResult> latencies;
  for (int round = 1; round <= cfg.repeat; ++round) {
    for (const Scenario& sc : scenarios) {
      std::fprintf(stderr, "[round %d] %s ...\n", round, sc.label.c_str());
      ScenarioResult r = bench.RunClosed(sc, round);
      std::fprintf(stderr,
                   "[round %d] %-10s %10.0f events/s  ack p50 %.0f us p99 %.0f us p99.9 %.0f us  "
                   "%.1f events/commit  %.1f us CPU/event  other load %.2f cores%s%s\n",
                   round, sc.id.c_str(), r.events_per_s, r.ack.p50, r.ack.p99, r.ack.p999,
                   r.events_per_commit, r.cpu_us_per_event, r.other_load_cores, r.errors ? "  ERRORS: " : "",
                   r.first_error.c_str());
      if (r.events == 0 || r.errors > 0) failed = true;
      results.push_back(std::move(r));
    }
    for (size_t i = 0; i < rates.size(); ++i) {
      std::fprintf(stderr, "[round %d] latency at %.0f events/s ...\n", round, rates[i]);
      auto r = bench.RunLatency(rates[i], round, static_cast<int>(i));
      std::fprintf(stderr,
                   "[round %d] latency %.0f/s: p50 %.0f us p99 %.0f us p99.9 %.0f us max %.0f us, "
                   "received %llu/%llu, late sends %llu, other load %.2f cores%s%s\n",
                   round, r.rate, r.e2e.p50, r.e2e.p99, r.e2e.p999, r.e2e.max,
                   static_cast<unsigned long long>(r.received),
                   static_cast<unsigned long long>(r.expected),
                   static_cast<unsigned long long>(r.late_sends), r.other_load_cores,
                   r.errors ? "  ERRORS: " : "",
                   r.first_error.c_str());
      if (r.received == 0 || r.errors > 0 || !r.first_error.empty()) failed = true;
      latencies.push_back(std::move(r));
    }
  }

  // 3. Tables (median [min-max] over rounds when --repeat > 1).
  if (!scenarios.empty()) {
    std::printf("durable publish, closed loop%s\n",
                cfg.repeat > 1 ? " (median [min-max] of rounds)" : "");
    std::printf("%-10s %-38s %24s %20s %20s %20s %9s %9s %6s\n", "id", "scenario", "events/s",
                "ack p50 us", "ack p99 us", "ack p99.9 us", "ev/commit", "cpu us/ev", "other");
    for (const Scenario& sc : scenarios) {
      std::vector<double> eps, p50, p99, p999, epc, cpu, other;
      for (const auto& r : results) {
        if (r.sc.id != sc.id) continue;
        eps.push_back(r.events_per_s);
        p50.push_back(r.ack.p50);
        p99.push_back(r.ack.p99);
        p999.push_back(r.ack.p999);
        epc.push_back(r.events_per_commit);
        cpu.push_back(r.broker_cpu_us_per_event ? *r.broker_cpu_us_per_event : r.cpu_us_per_event);
        other.push_back(r.other_load_cores);
      }
      std::printf("%-10s %-38s %24s %20s %20s %20s %9s %9s %6s\n", sc.id.c_str(),
                  sc.label.c_str(), Spread(eps, "%.0f").c_str(), Spread(p50, "%.0f").c_str(),
                  Spread(p99, "%.0f").c_str(), Spread(p999, "%.0f").c_str(),
                  Fmt("%.1f", Median(epc)).c_str(), Fmt("%.1f", Median(cpu)).c_str(),
                  Fmt("%.2f", *std::max_element(other.begin(), other.end())).c_str());
    }
    std::printf("(other: most cores used by OTHER processes during a round; > 0.2 means the "
                "numbers are disturbed)\n");
    std::printf("(cpu us/ev: %s)\n\n", cfg.broker_pid > 0
                                           ? "the external broker process only"
                                           : (cfg.broker.empty()
                                                  ? "whole process: broker AND load generator"
                                                  : "the load generator only"));
  }
  if (!rates.empty()) {
    std::printf("publish -> subscriber latency, open loop (from the schedule)%s\n",
                cfg.repeat > 1 ? " (median [min-max] of rounds)" : "");
    std::printf("%10s %20s %20s %20s %20s %14s %10s %18s %6s\n", "rate/s", "p50 us", "p99 us",
                "p99.9 us", "max us", "received", "late>1ms", "max send lag us", "other");
    for (double rate : rates) {
      std::vector<double> p50, p99, p999, mx, lag, other;
      uint64_t rec = 0, exp = 0, late = 0;
      for (const auto& r : latencies) {
        if (r.rate != rate) continue;
        p50.push_back(r.e2e.p50);
        p99.push_back(r.e2e.p99);
        p999.push_back(r.e2e.p999);
        mx.push_back(r.e2e.max);
        lag.push_back(r.max_send_lag_us);
        other.push_back(r.other_load_cores);
        rec += r.received;
        exp += r.expected;
        late += r.late_sends;
      }
      std::printf("%10.0f %20s %20s %20s %20s %14s %10llu %18s %6s\n", rate,
                  Spread(p50, "%.0f").c_str(), Spread(p99, "%.0f").c_str(),
                  Spread(p999, "%.0f").c_str(), Spread(mx, "%.0f").c_str(),
                  (std::to_string(rec) + "/" + std::to_string(exp)).c_str(),
                  static_cast<unsigned long long>(late), Spread(lag, "%.0f").c_str(),
                  Fmt("%.2f", *std::max_element(other.begin(), other.end())).c_str());
    }
    std::printf("\n");
  }

  json js = json::array();
  for (const auto& r : results) js.push_back(ToJson(r));
  report["publish"] = js;
  json jl = json::array();
  for (const auto& r : latencies) jl.push_back(ToJson(r));
  report["latency"] = jl;
  report["machine"]["load_average_at_end"] = LoadAvg();
  report["ok"] = !failed;
  if (!cfg.json_path.empty()) {
    std::ofstream out(cfg.json_path);
    out << report.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "icr_publish_bench: cannot write %s\n", cfg.json_path.c_str());
      failed = true;
    }
  }
  broker.reset();
  if (failed) std::fprintf(stderr, "icr_publish_bench: FAILED (errors or empty scenarios above)\n");
  return failed ? 1 : 0;
}
