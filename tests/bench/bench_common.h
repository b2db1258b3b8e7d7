// Pieces shared by the benchmark programs (icr_publish_bench,
// icr_broker_bench, ...): clock, exact percentiles, "median [min-max]"
// formatting, CPU accounting, the Zipf NHS-number sampler, the ~1 KB event
// builder and a gRPC channel per caller. Header-only; everything inline.
#pragma once

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "icr/v1/broker.grpc.pb.h"
#include "tests/support/test_support.h"

namespace icr::bench {

// ---------------------------------------------------------------------------
// Clock, statistics
// ---------------------------------------------------------------------------

inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void SleepUntilNs(int64_t t) {
  std::this_thread::sleep_until(
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(t)));
}

// Latency summary in microseconds (exact: every sample is kept and sorted).
struct Summary {
  size_t n = 0;
  double p50 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

inline double Percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  if (rank == 0) rank = 1;
  return static_cast<double>(sorted[std::min(rank, sorted.size()) - 1]) / 1000.0;
}

// Sorts `ns` (nanoseconds) and summarises it in microseconds.
inline Summary Summarise(std::vector<int64_t>* ns) {
  Summary s;
  std::sort(ns->begin(), ns->end());
  s.n = ns->size();
  if (ns->empty()) return s;
  s.p50 = Percentile(*ns, 0.50);
  s.p99 = Percentile(*ns, 0.99);
  s.p999 = Percentile(*ns, 0.999);
  s.max = static_cast<double>(ns->back()) / 1000.0;
  double sum = 0;
  for (int64_t v : *ns) sum += static_cast<double>(v);
  s.mean = sum / static_cast<double>(ns->size()) / 1000.0;
  return s;
}

inline nlohmann::json ToJson(const Summary& s) {
  return {{"n", s.n}, {"p50_us", s.p50}, {"p99_us", s.p99}, {"p999_us", s.p999},
          {"max_us", s.max}, {"mean_us", s.mean}};
}

inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

inline std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// "median [min-max]" of a field over repeated runs.
inline std::string Spread(const std::vector<double>& v, const char* f) {
  if (v.empty()) return "-";
  if (v.size() == 1) return Fmt(f, v[0]);
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return Fmt(f, Median(v)) + " [" + Fmt(f, *lo) + "-" + Fmt(f, *hi) + "]";
}

// ---------------------------------------------------------------------------
// CPU and machine
// ---------------------------------------------------------------------------

// CPU seconds (user + system) of this process, and of another by pid.
inline double SelfCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

inline std::optional<double> PidCpuSeconds(int pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
  size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (rest >> field); ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Busy CPU seconds of the whole machine (all processes), from /proc/stat.
inline double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double v[8] = {};
  in >> cpu;
  for (double& x : v) in >> x;
  // user nice system idle iowait irq softirq steal
  return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The machine is shared and noisy: how busy were its cores with work other
// than ours (this process, and the external broker when its pid is known)?
class ForeignLoad {
 public:
  explicit ForeignLoad(int broker_pid) : pid_(broker_pid) {}
  void Start() {
    t0_ = NowNs();
    busy0_ = MachineBusySeconds();
    ours0_ = Ours();
  }
  // Average cores used by other processes since Start().
  double Stop() const {
    const double wall = static_cast<double>(NowNs() - t0_) / 1e9;
    const double other = (MachineBusySeconds() - busy0_) - (Ours() - ours0_);
    return wall > 0 ? std::max(0.0, other / wall) : 0;
  }

 private:
  double Ours() const { return SelfCpuSeconds() + PidCpuSeconds(pid_).value_or(0); }
  int pid_;
  int64_t t0_ = 0;
  double busy0_ = 0, ours0_ = 0;
};

inline std::string LoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// Output of a shell command, trailing newlines removed.
inline std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  }
  return "";
}

// The CPUs this thread may run on, e.g. "0,1".
inline std::string AffinityList() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return "";
  std::string out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    if (!out.empty()) out += ',';
    out += std::to_string(c);
  }
  return out;
}

inline std::string UtcNow() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// ---------------------------------------------------------------------------
// Workload: NHS numbers (Zipf or uniform), ~1 KB events, unique message ids
// ---------------------------------------------------------------------------

class Zipf {
 public:
  Zipf(size_t n, double s) : cdf_(n) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
      sum += 1.0 / std::pow(static_cast<double>(i + 1), s);
      cdf_[i] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }
  size_t operator()(std::mt19937_64& rng) const {
    double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    size_t i = static_cast<size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
    return std::min(i, cdf_.size() - 1);
  }
  // Share of draws that hit the most frequent `k` numbers.
  double TopShare(size_t k) const { return k == 0 ? 0 : cdf_[std::min(k, cdf_.size()) - 1]; }

 private:
  std::vector<double> cdf_;
};

struct Workload {
  std::vector<std::string> nhs;  // rank -> NHS number (shuffled: hot numbers spread out)
  std::unique_ptr<Zipf> zipf;    // null: NHS numbers drawn uniformly
  icr::v1::CareEvent tmpl;       // a padded event; ids are set per event
  bool referral = true;          // tmpl is a discharge referral
  std::string run_id;            // part of every source_message_id
  size_t event_size = 0;         // serialized size of a typical event

  size_t Draw(std::mt19937_64& rng) const {
    if (zipf) return (*zipf)(rng);
    return std::uniform_int_distribution<size_t>(0, nhs.size() - 1)(rng);
  }
  // Sets the per-event fields of `e` (a copy of tmpl).
  void Fill(icr::v1::CareEvent* e, std::mt19937_64& rng, const char* msg_id, size_t len) const {
    e->set_nhs_number(nhs[Draw(rng)]);
    e->set_source_message_id(msg_id, len);
    if (referral) {
      e->mutable_discharge_referral()->set_referral_id(msg_id, len);
    } else {
      e->mutable_care_act_assessment()->set_assessment_id(msg_id, len);
    }
  }
};

struct WorkloadOptions {
  uint64_t patients = 100000;  // the first `patients` test-range NHS numbers
  double zipf_s = 1.1;         // <= 0: uniform
  size_t event_bytes = 1024;   // serialized size to pad to
  // true: every event a new URGENT discharge referral (the workflow's worst
  // case); false: a Care Act assessment (summary update only).
  bool referral = true;
  icr::v1::Priority priority = icr::v1::PRIORITY_UNSPECIFIED;  // unset: the builder's
  std::string run_prefix = "ib";  // source_message_id prefix
};

inline Workload MakeWorkload(const WorkloadOptions& o) {
  Workload w;
  std::mt19937_64 seed_rng(std::random_device{}());
  char run[16];
  std::snprintf(run, sizeof run, "%08llx",
                static_cast<unsigned long long>(seed_rng() & 0xffffffffULL));
  w.run_id = o.run_prefix + "-" + run;
  w.nhs.reserve(o.patients);
  for (uint64_t i = 0; i < o.patients; ++i) w.nhs.push_back(icr::testing::TestNhsNumber(i));
  std::mt19937_64 shuffle_rng(42);
  std::shuffle(w.nhs.begin(), w.nhs.end(), shuffle_rng);
  if (o.zipf_s > 0) w.zipf = std::make_unique<Zipf>(w.nhs.size(), o.zipf_s);

  // A typical id (as long as the closed-loop ones) to size the padding.
  const std::string id = w.run_id + "-stream-16-15-0000000000";
  w.tmpl = icr::testing::ReferralEvent(w.nhs[0], id);
  w.tmpl.mutable_discharge_referral()->set_referral_id(id);
  w.referral = o.referral;
  if (!w.referral) {
    // The same envelope, but an assessment: free text in its outcome.
    w.tmpl.clear_addressee();
    w.tmpl.set_priority(icr::v1::ROUTINE);
    auto* a = w.tmpl.mutable_care_act_assessment();
    a->set_assessment_id(id);
  }
  if (o.priority != icr::v1::PRIORITY_UNSPECIFIED) w.tmpl.set_priority(o.priority);
  // Both pad with free text: the referral's needs summary or the
  // assessment's outcome note.
  std::string* padded = w.referral
                            ? w.tmpl.mutable_discharge_referral()->mutable_needs()->mutable_summary()
                            : w.tmpl.mutable_care_act_assessment()->mutable_outcome();
  const size_t size = w.tmpl.ByteSizeLong();
  if (size < o.event_bytes) {
    // Realistic-looking free text rather than one repeated byte.
    static const char* kWords[] = {"Lives alone;", "stairs at home;", "needs two carers;",
                                   "family visit daily;", "key safe fitted;",
                                   "walking frame;", "catheter care;", "medication prompts;"};
    std::string text = *padded;
    const size_t base = padded->size();
    for (size_t k = 0; text.size() < base + (o.event_bytes - size); ++k) {
      text += ' ';
      text += kWords[k % 8];
    }
    text.resize(std::min<size_t>(text.size(), 4000));  // the broker's string limit
    *padded = text;
    // Length prefixes may have grown by a byte or two: trim to the target.
    while (w.tmpl.ByteSizeLong() > o.event_bytes && !padded->empty()) padded->pop_back();
  }
  w.event_size = w.tmpl.ByteSizeLong();
  return w;
}

// ---------------------------------------------------------------------------
// gRPC helpers
// ---------------------------------------------------------------------------

// Each caller gets its own channel and TCP connection: a distinct channel
// argument keeps gRPC from sharing one subchannel between channels.
inline std::shared_ptr<grpc::Channel> NewChannel(const std::string& address, int id) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("icr.bench.channel", id);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return channel;
}

inline std::atomic<int> g_channel_ids{1};

inline int64_t Micros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

}  // namespace icr::bench
