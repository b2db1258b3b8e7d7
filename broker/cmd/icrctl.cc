// icrctl: the command-line client of an ICR broker.
//
//   icrctl publish [--file F] [--batch N]     send events (JSON Lines / object / array)
//   icrctl import --mapping M data.csv         bulk import of a CSV export (BULK lane)
//   icrctl tail [--name N] [filters]          print matching events as JSON lines
//   icrctl history <nhs-number>               a person's stored events
//   icrctl flow --from D --to D [--place P]   discharge flow metrics (Workflow/GetFlowMetrics)
//   icrctl simulate [--seed N] [--days D]     publish a simulated Coventry & Warwickshire stream
//   icrctl status | subscriptions | parked | replay | delete-subscription
//   icrctl whoami                             who the broker takes us to be (Governance)
//   icrctl policy reload                      re-read the broker's policy file
//   icrctl audit verify | who-saw <nhs>       the audit hash chain; subject access
//   icrctl retention review | purge           retention review and purge
//   icrctl legal-hold set <nhs> --reason R | lift <nhs>
//   icrctl completion bash                    a bash completion script
//
// Global --tls-ca/--tls-cert/--tls-key (env ICR_TLS_CA/_CERT/_KEY) connect
// over TLS, with a client certificate for mutual TLS (the principal).
//
// Exit status: 0 success, 1 a request or input failed, 2 a usage error;
// `audit verify`: 0 intact, 1 broken, 2 the check could not run.
// Every failure prints what failed and the next step to take. docs/icrctl.md
// documents every command with examples.
//
// Threads: main runs the command; a signal thread turns SIGINT/SIGTERM into a
// clean cancellation; `publish --batch` and `import` read acknowledgements on a second
// thread and `tail` acknowledges on a third. `simulate` publishes from main.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/time_util.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "adapters/csv/csv_import.h"
#include "adapters/json/json_events.h"
#include "broker/civil_time.h"
#include "broker/timestamp.h"
#include "broker/workflow/metrics.h"
#include "broker/workflow/simulator.h"
#include "icr/v1/broker.grpc.pb.h"
#include "icr/v1/broker.pb.h"
#include "icr/v1/events.pb.h"
#include "icr/v1/governance.grpc.pb.h"
#include "icr/v1/governance_types.pb.h"
#include "icr/v1/workflow.grpc.pb.h"

#ifndef ICR_VERSION
#define ICR_VERSION "dev"
#endif

namespace icr::ctl {
namespace {

namespace jsonio = icr::adapters::json;
using google::protobuf::util::TimeUtil;
using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr const char* kDefaultBroker = "127.0.0.1:50051";

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

struct GlobalOptions {
  std::string broker = kDefaultBroker;  // host:port; env ICR_BROKER
  double timeout_s = 10;                // per request
  bool json = false;                    // JSON lines instead of tables
  // TLS (docs/icrctl.md): file names, env ICR_TLS_CA / ICR_TLS_CERT /
  // ICR_TLS_KEY. Empty tls_ca: plaintext.
  std::string tls_ca, tls_cert, tls_key;
  // Their PEM contents, read by LoadTlsFiles before any request.
  std::string tls_ca_pem, tls_cert_pem, tls_key_pem;
  bool tls() const { return !tls_ca.empty(); }
  bool client_certificate() const { return !tls_cert.empty(); }
};

struct PublishOptions {
  std::string file;  // empty or "-": stdin
  size_t batch = 1;  // > 1: PublishStream with this many events per request
};

struct TailOptions {
  std::string name;
  std::string from = "latest";
  std::vector<std::string> types, settings, orgs, addressees, nhs, priorities;
  uint64_t count = 0;  // 0: no limit
  bool no_ack = false;
  bool heartbeats = false;
  std::string purpose;      // empty: the broker's default, DIRECT_CARE
  std::string legal_basis;  // empty: the principal's default from the policy
};

struct HistoryOptions {
  std::string nhs;
  std::vector<std::string> types;
  std::string from, to;
  uint64_t limit = 0;  // 0: all
  std::string purpose;  // empty: DIRECT_CARE
};

struct SubscriptionOptions {
  std::string name;
  uint32_t limit = 100;
  std::vector<uint64_t> positions;
};

// ---------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------

void Err(const std::string& line) { std::cerr << "icrctl: " << line << std::endl; }

// Writes one line to stdout and flushes it. False when stdout is gone (a
// closed pipe): the caller stops.
std::atomic<int> stdout_errno{0};  // errno of the failed write (errno is per thread)

bool Out(const std::string& line) {
  if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size() ||
      std::fputc('\n', stdout) == EOF || std::fflush(stdout) != 0) {
    stdout_errno = errno;
    return false;
  }
  return true;
}

int StdoutFailed() {
  const int e = stdout_errno.load();
  if (e == EPIPE) return kExitOk;  // e.g. `icrctl tail | head -3` with SIGPIPE ignored
  Err(std::string("cannot write to standard output: ") + std::strerror(e));
  return kExitFailure;
}

std::string WithCommas(uint64_t n) {
  std::string d = std::to_string(n), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(d[i]);
  }
  return out;
}

std::string Pad(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

// RFC 3339 to the second, for tables ("-" when unset).
std::string TimeString(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  google::protobuf::Timestamp whole;
  whole.set_seconds(t.seconds());
  return TimeUtil::ToString(whole);
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// ---------------------------------------------------------------------------
// gRPC errors: what failed, and the next step
// ---------------------------------------------------------------------------

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

std::string StatusText(const grpc::Status& s) {
  std::string text = CodeName(s.error_code());
  if (!s.error_message().empty()) text += ": " + s.error_message();
  return text;
}

// The next step for a failed request. `what` names the request ("publish").
std::string Advice(const grpc::Status& s, const GlobalOptions& g, const std::string& what) {
  const std::string& at = g.broker;
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE: {
      const std::string& m = s.error_message();
      const bool not_reached = m.empty() || m.find("connect") != std::string::npos ||
                               m.find("DNS") != std::string::npos ||
                               m.find("resolve") != std::string::npos;
      if (g.tls() && (m.find("andshake") != std::string::npos ||
                      m.find("SSL") != std::string::npos ||
                      m.find("TLS") != std::string::npos ||
                      m.find("ertificate") != std::string::npos)) {
        return "the TLS handshake with the broker at " + at + " failed: check that it "
               "listens with TLS, that --tls-ca (" + g.tls_ca + ") is the CA that signed its "
               "certificate, and that its certificate names the host in --broker" +
               (g.client_certificate() ? std::string()
                                       : "; a broker that requires client certificates needs "
                                         "--tls-cert and --tls-key for your principal");
      }
      // A listener that closes the connection at once: TLS on one side only,
      // or a client certificate that the broker requires or refuses.
      if (m.find("Socket closed") != std::string::npos ||
          m.find("Connection reset") != std::string::npos) {
        if (!g.tls()) {
          return "the broker at " + at + " closed the connection: if it listens with TLS, "
                 "connect with --tls-ca FILE, and --tls-cert/--tls-key for your principal "
                 "(or ICR_TLS_CA, ICR_TLS_CERT, ICR_TLS_KEY; docs/icrctl.md)";
        }
        if (!g.client_certificate()) {
          return "the broker at " + at + " closed the TLS connection: it probably requires a "
                 "client certificate; connect with --tls-cert and --tls-key for your principal "
                 "(or ICR_TLS_CERT, ICR_TLS_KEY)";
        }
        return "the broker at " + at + " closed the TLS connection: it may not trust the CA "
               "that signed " + g.tls_cert + ", or the certificate has expired; check it with "
               "`openssl x509 -in " + g.tls_cert + " -noout -issuer -enddate`";
      }
      if (!not_reached) {
        return "the broker at " + at + " is unavailable for now (it may be restarting or "
               "shutting down): run the command again in a moment, or check `icrctl status`";
      }
      return "cannot reach the broker at " + at +
             ": is icr-broker running? Start it with deploy/run.sh or set --broker "
             "(or ICR_BROKER) to its host:port";
    }
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "the broker at " + at + " did not answer within " +
             std::to_string(static_cast<int>(g.timeout_s)) +
             " s: it may be overloaded or stuck; check `icrctl status`, or retry with a "
             "larger --timeout";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "the broker rejected the " + what + " request as invalid: fix the field it names "
             "and retry (docs/api.md lists the rules)";
    case grpc::StatusCode::NOT_FOUND:
      return "the broker has no such record: check the name with `icrctl subscriptions`";
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ABORTED:
      return "the request conflicts with the broker's current state: read the reason above, "
             "then retry";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "the broker is out of capacity (disk, queue or message size): retry later, use "
             "a smaller --batch, or see the broker's log";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "the broker at " + at + " does not offer this call: is it an older icr-broker, "
             "or another gRPC server? Check --broker and `icrctl status`";
    case grpc::StatusCode::UNAUTHENTICATED:
      if (!g.client_certificate()) {
        return "the broker does not know who you are: connect with --tls-ca, --tls-cert and "
               "--tls-key (or ICR_TLS_CA, ICR_TLS_CERT, ICR_TLS_KEY) for your principal's "
               "client certificate (docs/icrctl.md, docs/governance.md)";
      }
      return "the broker does not accept the certificate in " + g.tls_cert +
             " as a principal of its policy: its CN must be a principal's id and its O that "
             "principal's organisation; ask the broker's operator (docs/governance.md)";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "the policy does not grant this to your principal (`icrctl whoami` shows what "
             "it grants); ask the broker's operator to change the policy "
             "(docs/governance.md)";
    case grpc::StatusCode::CANCELLED:
      return "the request was cancelled before it finished; retry it";
    default:
      return "the broker failed internally: retry, and if it persists report it with the "
             "broker's log";
  }
}

int ReportRpcFailure(const std::string& what, const grpc::Status& s, const GlobalOptions& g) {
  Err(what + " failed: " + StatusText(s));
  Err(Advice(s, g, what));
  return kExitFailure;
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

// Reads one PEM file named by `option`; false with a message naming the file
// when it cannot be read or holds no PEM block of `kind` ("CERTIFICATE",
// "PRIVATE KEY").
bool ReadPem(const std::string& option, const std::string& path, const std::string& kind,
             std::string* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = option + ": cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    *error = option + ": cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  const size_t begin = text.find("-----BEGIN ");
  const size_t line_end = begin == std::string::npos ? begin : text.find("-----", begin + 11);
  if (begin == std::string::npos || line_end == std::string::npos ||
      text.substr(begin, line_end - begin).find(kind) == std::string::npos) {
    *error = option + ": " + path + " is not a PEM file with a " + kind + " (\"-----BEGIN ..." +
             kind + "-----\")";
    return false;
  }
  *out = std::move(text);
  return true;
}

// Checks the TLS options and reads their files into `g`; false with a
// message on a usage error.
bool LoadTlsFiles(GlobalOptions* g, std::string* error) {
  if (g->tls_cert.empty() != g->tls_key.empty()) {
    *error = g->tls_cert.empty()
                 ? "--tls-key " + g->tls_key + " needs --tls-cert, the client certificate it "
                   "belongs to"
                 : "--tls-cert " + g->tls_cert + " needs --tls-key, its private key";
    return false;
  }
  if (g->tls_ca.empty()) {
    if (!g->tls_cert.empty()) {
      *error = "--tls-cert/--tls-key need --tls-ca, the CA certificate that signed the "
               "broker's certificate (e.g. ca.pem from deploy/make-test-pki.sh)";
      return false;
    }
    return true;
  }
  if (!ReadPem("--tls-ca", g->tls_ca, "CERTIFICATE", &g->tls_ca_pem, error)) return false;
  if (g->tls_cert.empty()) return true;
  return ReadPem("--tls-cert", g->tls_cert, "CERTIFICATE", &g->tls_cert_pem, error) &&
         ReadPem("--tls-key", g->tls_key, "PRIVATE KEY", &g->tls_key_pem, error);
}

// REQUIRES: LoadTlsFiles succeeded.
std::shared_ptr<grpc::Channel> MakeChannel(const GlobalOptions& g) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // history pages and parked lists may be large
  args.SetMaxSendMessageSize(-1);     // the broker enforces its own limit
  if (!g.tls()) {
    return grpc::CreateCustomChannel(g.broker, grpc::InsecureChannelCredentials(), args);
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = g.tls_ca_pem;
  ssl.pem_cert_chain = g.tls_cert_pem;    // empty: no client certificate
  ssl.pem_private_key = g.tls_key_pem;
  return grpc::CreateCustomChannel(g.broker, grpc::SslCredentials(ssl), args);
}

void SetDeadline(grpc::ClientContext* ctx, const GlobalOptions& g) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000)));
}

// ---------------------------------------------------------------------------
// Signals: SIGINT/SIGTERM are blocked in every thread and taken by one
// watcher thread, which runs the current cancel hook (or exits).
// ---------------------------------------------------------------------------

class SignalWatcher {
 public:
  static SignalWatcher& Get() {
    static SignalWatcher* w = new SignalWatcher();  // lives until exit
    return *w;
  }
  // REQUIRES: called in main before any other thread starts.
  void Start() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([this, set] {
      std::optional<Clock::time_point> first;
      while (true) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        {
          // Held while the hook runs, so SetHook waits for it to finish.
          std::lock_guard<std::mutex> running(run_mu_);
          std::function<void()> hook;
          {
            std::lock_guard<std::mutex> lock(mu_);
            hook = hook_;
          }
          if (!first && hook) {
            first = Clock::now();
            interrupted_ = true;
            hook();
            continue;
          }
        }
        // A copy of the first signal (e.g. sent to the process and to its
        // group, as `timeout` does) must not cut the clean stop short.
        if (first && Clock::now() - *first < std::chrono::seconds(1)) continue;
        static const char kMsg[] = "\nicrctl: interrupted\n";
        (void)!write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
        _exit(128 + sig);
      }
    }).detach();
  }
  // Runs on the first SIGINT/SIGTERM instead of exiting; another one more
  // than a second later exits at once.
  // Waits for a hook that is running, so what the old hook captured may be
  // destroyed once this returns.
  void SetHook(std::function<void()> hook) {
    std::lock_guard<std::mutex> running(run_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    hook_ = std::move(hook);
  }
  bool interrupted() const { return interrupted_; }

 private:
  std::mutex run_mu_;  // held while a hook runs
  std::mutex mu_;
  std::function<void()> hook_;
  std::atomic<bool> interrupted_{false};
};

// ---------------------------------------------------------------------------
// Parsing command-line values (usage errors return a message)
// ---------------------------------------------------------------------------

template <typename Enum>
bool ParseEnumName(const google::protobuf::EnumDescriptor* d, std::string name,
                   const std::string& option, Enum* out, std::string* error) {
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::replace(name.begin(), name.end(), '-', '_');
  const google::protobuf::EnumValueDescriptor* v = d->FindValueByName(name);
  if (v != nullptr && v->number() != 0) {
    *out = static_cast<Enum>(v->number());
    return true;
  }
  std::vector<std::string> valid;
  for (int i = 0; i < d->value_count(); ++i) {
    if (d->value(i)->number() != 0) valid.push_back(d->value(i)->name());
  }
  *error = option + ": unknown " + d->name() + " \"" + name + "\"; valid values: " +
           Join(valid, ", ");
  return false;
}

// Accepts "999 000 0018", "999-000-0018" or "9990000018"; checks Modulus 11.
bool NormaliseNhsNumber(const std::string& in, std::string* out, std::string* error) {
  std::string n;
  for (char c : in) {
    if (c == ' ' || c == '-') continue;
    n.push_back(c);
  }
  if (n.size() != 10 || n.find_first_not_of("0123456789") != std::string::npos) {
    *error = "\"" + in + "\" is not an NHS number: it must have 10 digits";
    return false;
  }
  int sum = 0;
  for (int i = 0; i < 9; ++i) sum += (n[i] - '0') * (10 - i);
  int check = 11 - sum % 11;
  if (check == 11) check = 0;
  if (check == 10 || check != n[9] - '0') {
    *error = "\"" + in + "\" is not a valid NHS number: its check digit (Modulus 11) is wrong";
    return false;
  }
  *out = n;
  return true;
}

// RFC 3339 ("2025-03-10T10:42:00Z", "...+01:00") or a date ("2025-03-10",
// midnight UTC).
bool ParseTime(const std::string& in, google::protobuf::Timestamp* out) {
  std::string s = in;
  if (s.size() == 10 && s[4] == '-' && s[7] == '-') s += "T00:00:00Z";
  return TimeUtil::FromString(s, out);
}

bool ParseTimeOption(const std::string& option, const std::string& value,
                     google::protobuf::Timestamp* out, std::string* error) {
  if (ParseTime(value, out)) return true;
  *error = option + ": \"" + value +
           "\" is not a time: use RFC 3339 such as 2025-03-10T09:00:00Z or a date such as "
           "2025-03-10";
  return false;
}

int UsageError(const std::string& message) {
  Err(message);
  Err("see `icrctl <command> --help`");
  return kExitUsage;
}

std::string EventTypeName(const icr::v1::CareEvent& e) {
  int type = e.event_type() != 0 ? e.event_type() : static_cast<int>(e.payload_case());
  const auto* v = icr::v1::EventType_descriptor()->FindValueByNumber(type);
  return v ? v->name() : std::to_string(type);
}

// ---------------------------------------------------------------------------
// publish
// ---------------------------------------------------------------------------

// Progress on stderr for long inputs: "published 12,345 of 100,000 (8,123/s)".
class Progress {
 public:
  Progress(bool enabled, uint64_t total) : enabled_(enabled), total_(total) {}
  ~Progress() { Finish(); }
  void Update(uint64_t done) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (now - last_ < std::chrono::milliseconds(200) && done != total_) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const uint64_t rate = secs > 0 ? static_cast<uint64_t>(done / secs) : 0;
    std::fprintf(stderr, "\rpublished %s of %s events (%s/s)   ", WithCommas(done).c_str(),
                 WithCommas(total_).c_str(), WithCommas(rate).c_str());
    std::fflush(stderr);
    shown_ = true;
  }
  void Finish() {
    if (shown_) std::fputc('\n', stderr);
    shown_ = false;
  }

 private:
  bool enabled_;
  uint64_t total_;
  bool shown_ = false;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_{};
};

struct PublishTally {
  uint64_t stored = 0;      // acknowledged, including duplicates
  uint64_t duplicates = 0;  // of which already stored before
  uint64_t after_failure = 0;  // stored after the first rejected request (in flight)
};

bool PrintPublishResult(const icr::v1::PublishResponse& r, const std::string& source_message_id) {
  nlohmann::ordered_json line = {{"position", r.position()},
                         {"eventId", r.event_id()},
                         {"duplicate", r.duplicate()},
                         {"sourceMessageId", source_message_id}};
  return Out(line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

void ReportPublishFailure(size_t line, const std::string& source_message_id,
                          const grpc::Status& s, const GlobalOptions& g,
                          const PublishTally& tally, const std::string& extra = "") {
  Err("publish failed for line " + std::to_string(line) + " (sourceMessageId " +
      source_message_id + "): " + StatusText(s) + extra);
  Err(Advice(s, g, "publish"));
  std::string stored = WithCommas(tally.stored) + " event(s) were stored before it (" +
                       WithCommas(tally.duplicates) + " of them duplicates)";
  if (tally.after_failure > 0) {
    stored += ", and " + WithCommas(tally.after_failure) +
              " event(s) after it that were already sent were stored too";
  }
  Err(stored + "; resending the whole input is safe: the broker recognises events it "
      "already has by (sourceSystemId, sourceMessageId)");
}

// A gRPC-level stop reason carried out of ReadEvents' sink.
constexpr const char* kStopped = "stopped";

int PublishUnary(icr::v1::Broker::Stub* stub, const GlobalOptions& g, std::istream& in,
                 Progress* progress) {
  PublishTally tally;
  bool stdout_failed = false;
  jsonio::Status s = jsonio::ReadEvents(in, [&](icr::v1::CareEvent&& event, size_t line) {
    icr::v1::PublishRequest request;
    *request.mutable_event() = std::move(event);
    icr::v1::PublishResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, g);
    grpc::Status st = stub->Publish(&ctx, request, &response);
    if (!st.ok()) {
      progress->Finish();
      ReportPublishFailure(line, request.event().source_message_id(), st, g, tally);
      return jsonio::Status::Error(kStopped);
    }
    ++tally.stored;
    if (response.duplicate()) ++tally.duplicates;
    if (!PrintPublishResult(response, request.event().source_message_id())) {
      stdout_failed = true;
      return jsonio::Status::Error(kStopped);
    }
    progress->Update(tally.stored);
    return jsonio::Status::Ok();
  });
  progress->Finish();
  if (stdout_failed) return StdoutFailed();
  if (!s.ok()) {
    if (s.message() != kStopped) {
      Err("cannot read events: " + s.message());
      Err(WithCommas(tally.stored) + " event(s) were stored; fix the input and resend it "
          "(resending is safe)");
    }
    return kExitFailure;
  }
  return kExitOk;
}

// PublishStream: batches of `batch` events, up to kWindow requests awaiting
// acknowledgement; acknowledgements are read on a second thread.
int PublishStreaming(icr::v1::Broker::Stub* stub, const GlobalOptions& g, size_t batch,
                     std::istream& in, Progress* progress) {
  constexpr size_t kWindow = 4;
  struct Pending {
    uint64_t request_id;
    std::vector<size_t> lines;
    std::vector<std::string> message_ids;
  };
  struct Failure {
    size_t line = 0;
    std::string message_id;
    grpc::Status status;
    std::string extra;
  };

  grpc::ClientContext ctx;
  auto stream = stub->PublishStream(&ctx);

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> pending;
  std::optional<Failure> failure;  // the first rejected request
  bool reader_done = false;
  bool stdout_failed = false;
  bool timed_out = false;
  PublishTally tally;
  Clock::time_point last_progress = Clock::now();
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000));

  std::thread reader([&] {
    icr::v1::PublishStreamResponse response;
    while (stream->Read(&response)) {
      std::unique_lock<std::mutex> lock(mu);
      last_progress = Clock::now();
      if (pending.empty() || pending.front().request_id != response.request_id()) {
        if (!failure) {
          failure = Failure{0, "?", grpc::Status(grpc::StatusCode::INTERNAL,
                                                 "the broker acknowledged request " +
                                                     std::to_string(response.request_id()) +
                                                     ", which was not the next one sent"),
                            ""};
        }
        ctx.TryCancel();
        break;
      }
      Pending p = std::move(pending.front());
      pending.pop_front();
      if (response.code() != 0) {
        if (!failure) {
          // The broker names the bad event as "events[i]: ..." (0-based).
          size_t index = 0;
          const std::string& m = response.message();
          if (m.rfind("events[", 0) == 0) index = std::strtoul(m.c_str() + 7, nullptr, 10);
          if (index >= p.lines.size()) index = 0;
          failure = Failure{p.lines[index], p.message_ids[index],
                            grpc::Status(static_cast<grpc::StatusCode>(response.code()), m),
                            p.lines.size() > 1
                                ? " (nothing from its batch of " + std::to_string(p.lines.size()) +
                                      " events, lines " + std::to_string(p.lines.front()) + "-" +
                                      std::to_string(p.lines.back()) + ", was stored)"
                                : ""};
        }
      } else {
        for (int i = 0; i < response.results_size(); ++i) {
          const auto& r = response.results(i);
          if (failure) {
            ++tally.after_failure;  // sent before the failure was known
          } else {
            ++tally.stored;
            if (r.duplicate()) ++tally.duplicates;
          }
          const std::string& id = i < static_cast<int>(p.message_ids.size()) ? p.message_ids[i] : "";
          if (!stdout_failed && !PrintPublishResult(r, id)) {
            stdout_failed = true;
            ctx.TryCancel();
          }
        }
        progress->Update(tally.stored);
      }
      cv.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu);
    reader_done = true;
    cv.notify_all();
  });

  // Waits until `ready` or the stream stops; cancels when the broker is
  // silent for longer than --timeout while requests are outstanding.
  auto wait_for = [&](std::unique_lock<std::mutex>& lock, const std::function<bool()>& ready) {
    while (!ready() && !reader_done) {
      cv.wait_for(lock, std::chrono::milliseconds(100));
      if (!pending.empty() && Clock::now() - last_progress > timeout && !timed_out) {
        timed_out = true;
        ctx.TryCancel();
      }
    }
  };

  uint64_t next_id = 1;
  icr::v1::PublishStreamRequest request;
  Pending building;
  bool write_failed = false;
  auto send = [&]() -> bool {
    if (request.events_size() == 0) return true;
    request.set_request_id(next_id);
    building.request_id = next_id++;
    {
      std::unique_lock<std::mutex> lock(mu);
      wait_for(lock, [&] { return pending.size() < kWindow || failure.has_value(); });
      if (failure || reader_done || timed_out) return false;
      if (pending.empty()) last_progress = Clock::now();
      pending.push_back(std::move(building));
    }
    building = Pending{};
    if (!stream->Write(request)) {
      write_failed = true;
      return false;
    }
    request.clear_events();
    return true;
  };

  jsonio::Status s = jsonio::ReadEvents(in, [&](icr::v1::CareEvent&& event, size_t line) {
    building.lines.push_back(line);
    building.message_ids.push_back(event.source_message_id());
    *request.add_events() = std::move(event);
    if (request.events_size() >= static_cast<int>(batch) && !send()) {
      return jsonio::Status::Error(kStopped);
    }
    return jsonio::Status::Ok();
  });
  const bool input_ok = s.ok();
  if (input_ok) send();
  if (!write_failed) stream->WritesDone();
  {
    std::unique_lock<std::mutex> lock(mu);
    wait_for(lock, [&] { return pending.empty(); });
  }
  {
    // The broker ends the stream after our WritesDone; do not wait forever.
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, timeout, [&] { return reader_done; })) ctx.TryCancel();
  }
  reader.join();
  grpc::Status finish = stream->Finish();
  progress->Finish();

  if (stdout_failed) return StdoutFailed();
  if (failure) {
    ReportPublishFailure(failure->line, failure->message_id, failure->status, g, tally,
                         failure->extra);
    return kExitFailure;
  }
  if (timed_out || !finish.ok() || !pending.empty() || write_failed) {
    grpc::Status st = timed_out ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                               "no acknowledgement within --timeout")
                      : !finish.ok() ? finish
                                     : grpc::Status(grpc::StatusCode::UNKNOWN,
                                                    "the broker ended the stream early");
    size_t line = 0;
    std::string id = "?";
    if (!pending.empty() && !pending.front().lines.empty()) {
      line = pending.front().lines.front();
      id = pending.front().message_ids.front();
    } else if (!building.lines.empty()) {
      line = building.lines.front();
      id = building.message_ids.front();
    }
    ReportPublishFailure(line, id, st, g, tally,
                         pending.empty() ? "" : " (and any later events: not acknowledged)");
    return kExitFailure;
  }
  if (!input_ok) {
    Err("cannot read events: " + s.message());
    Err(WithCommas(tally.stored) + " event(s) were stored; fix the input and resend it "
        "(resending is safe)");
    return kExitFailure;
  }
  return kExitOk;
}

int RunPublish(const GlobalOptions& g, const PublishOptions& p) {
  const bool from_stdin = p.file.empty() || p.file == "-";
  std::ifstream file;
  std::istream* in = &std::cin;
  uint64_t total = 0;
  if (!from_stdin) {
    file.open(p.file, std::ios::binary);
    if (!file) {
      return UsageError("cannot open " + p.file + ": " + std::strerror(errno));
    }
    // Check the whole file first, so a bad line sends nothing.
    jsonio::Status s = jsonio::ReadEvents(file, [&total](icr::v1::CareEvent&&, size_t) {
      ++total;
      return jsonio::Status::Ok();
    });
    if (!s.ok()) {
      Err(p.file + ": " + s.message());
      Err("nothing was published; fix the input and run the command again");
      return kExitFailure;
    }
    file.clear();
    file.seekg(0);
    in = &file;
  } else if (isatty(STDIN_FILENO)) {
    Err("reading events from standard input (JSON Lines; end with Ctrl-D); use --file to "
        "read a file");
  }
  Progress progress(!from_stdin && total > 1000 && isatty(STDERR_FILENO), total);
  SignalWatcher::Get().SetHook(nullptr);  // Ctrl-C: stop at once; acknowledged events stay stored
  auto stub = icr::v1::Broker::NewStub(MakeChannel(g));
  return p.batch > 1 ? PublishStreaming(stub.get(), g, p.batch, *in, &progress)
                     : PublishUnary(stub.get(), g, *in, &progress);
}

// ---------------------------------------------------------------------------
// import (docs/adapters/csv.md)
// ---------------------------------------------------------------------------

namespace csvio = icr::adapters::csv;

struct ImportOptions {
  std::string format = "csv";
  std::string mapping;
  std::string file;    // "-": stdin
  size_t batch = 500;  // events per PublishStream request
  std::string errors;  // default: <file>.errors.csv
  bool dry_run = false;
  bool progress = false;  // also when stderr is not a terminal
};

// What an import did; also the --json summary.
struct ImportCounts {
  uint64_t read = 0;        // data rows read (header and blank lines excluded)
  uint64_t valid = 0;       // mapped without a problem (sent, or would be with --dry-run)
  uint64_t stored = 0;      // new events stored
  uint64_t duplicates = 0;  // rows the broker already had (a re-run, or a repeated row)
  uint64_t rejected_mapping = 0;
  uint64_t rejected_broker = 0;
  uint64_t rejected() const { return rejected_mapping + rejected_broker; }
};

// The counts as the reading and the acknowledging threads update them.
struct ImportTally {
  std::atomic<uint64_t> read{0}, valid{0}, stored{0}, duplicates{0}, rejected_mapping{0},
      rejected_broker{0};
  ImportCounts Get() const {
    ImportCounts c;
    c.read = read;
    c.valid = valid;
    c.stored = stored;
    c.duplicates = duplicates;
    c.rejected_mapping = rejected_mapping;
    c.rejected_broker = rejected_broker;
    return c;
  }
};

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), s < 10 ? "%.2f" : "%.1f", s);
  return buf;
}

std::string Eta(double s) {
  const uint64_t t = static_cast<uint64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%llu:%02llu:%02llu", static_cast<unsigned long long>(t / 3600),
                  static_cast<unsigned long long>(t / 60 % 60),
                  static_cast<unsigned long long>(t % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llu:%02llu", static_cast<unsigned long long>(t / 60),
                  static_cast<unsigned long long>(t % 60));
  }
  return buf;
}

std::string Mebibytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / 1048576.0);
  return buf;
}

// One progress line on stderr for long operations: on a terminal it is
// redrawn in place (at most every 200 ms); elsewhere a new line is printed
// at most every second.
class StatusLine {
 public:
  StatusLine(bool enabled, bool tty) : enabled_(enabled), tty_(tty) {}
  ~StatusLine() { Finish(); }
  // True when a new line is due (always with `force`); the caller then
  // builds it and calls Show.
  bool Due(bool force) {
    if (!enabled_) return false;
    const auto now = Clock::now();
    const auto every = tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(1000);
    if (!force && now - last_ < every) return false;
    last_ = now;
    return true;
  }
  // Seconds since the operation started.
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void Show(const std::string& line) {
    if (tty_) {
      std::fprintf(stderr, "\r%s   ", line.c_str());
      shown_ = true;
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }
  void Finish() {
    if (shown_) std::fputc('\n', stderr);
    shown_ = false;
  }

 private:
  bool enabled_;
  bool tty_;
  bool shown_ = false;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_{};
};

// "importing: 45,000 rows, 44,500 stored, 12 rejected, 12,345 rows/s, 43% of
// 12.0 MiB, ETA 0:07". On a terminal one line is redrawn; with --progress
// elsewhere a line is printed every second.
class ImportProgress {
 public:
  ImportProgress(bool enabled, bool tty, uint64_t file_bytes)
      : line_(enabled, tty), file_bytes_(file_bytes) {}
  void Update(const ImportCounts& t, uint64_t bytes, bool force = false) {
    if (!line_.Due(force)) return;
    const double secs = line_.Seconds();
    std::string line = "importing: " + WithCommas(t.read) + " rows, " +
                       WithCommas(t.stored + t.duplicates) + " stored, " +
                       WithCommas(t.rejected()) + " rejected, " +
                       WithCommas(secs > 0 ? static_cast<uint64_t>(t.read / secs) : 0) + " rows/s";
    if (file_bytes_ > 0) {
      const double fraction = std::min(1.0, static_cast<double>(bytes) / file_bytes_);
      line += ", " + std::to_string(static_cast<int>(fraction * 100)) + "% of " +
              Mebibytes(file_bytes_);
      if (fraction > 0 && secs > 0.5) line += ", ETA " + Eta(secs * (1 - fraction) / fraction);
    }
    line_.Show(line);
  }
  void Finish() { line_.Finish(); }

 private:
  StatusLine line_;
  uint64_t file_bytes_;
};

// A PublishStream request and the rows its events came from (kept to resend
// it without a rejected row and to report that row).
struct ImportBatch {
  uint64_t request_id = 0;
  icr::v1::PublishStreamRequest request;
  std::vector<csvio::CsvRecord> records;  // one per event, same order
};

// Sends rows in batches on one PublishStream, up to kWindow requests in
// flight; acknowledgements are read on a second thread. A batch the broker
// rejects for one event ("events[i]: ...") is sent again without that event
// (the broker stores a request all or none, and recognises what it already
// has, so resending is safe); the row goes to the error report.
class ImportSender {
 public:
  static constexpr size_t kWindow = 4;

  ImportSender(icr::v1::Broker::Stub* stub, const GlobalOptions& g, const csvio::RowMapper& mapper,
               csvio::ErrorReport* report, std::mutex* report_mu, ImportTally* tally)
      : g_(g),
        mapper_(mapper),
        report_(report),
        report_mu_(report_mu),
        tally_(tally),
        timeout_(std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000))) {
    stream_ = stub->PublishStream(&ctx_);
    reader_ = std::thread([this] { ReadLoop(); });
  }
  ~ImportSender() {
    if (reader_.joinable()) {
      ctx_.TryCancel();
      reader_.join();
    }
  }
  ImportSender(const ImportSender&) = delete;
  ImportSender& operator=(const ImportSender&) = delete;

  // Queues a batch and sends what is queued, waiting for room in the window.
  // False once the import cannot go on (see failure()).
  bool Send(std::unique_ptr<ImportBatch> batch) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      outgoing_.push_back(std::move(batch));
    }
    return Pump();
  }

  // Sends what is left (resends included), waits for every acknowledgement
  // and closes the stream. False when the import failed.
  bool Finish() {
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        WaitLocked(lock, [&] { return !outgoing_.empty() || pending_.empty(); });
        if (failed_) break;
        if (outgoing_.empty()) break;
      }
      if (!Pump()) break;
    }
    if (!write_failed_) stream_->WritesDone();
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, timeout_, [&] { return reader_done_; })) ctx_.TryCancel();
    }
    reader_.join();
    grpc::Status finish = stream_->Finish();
    std::lock_guard<std::mutex> lock(mu_);
    if (!failed_ && (!pending_.empty() || !outgoing_.empty() || write_failed_ || !finish.ok())) {
      Fail(!finish.ok() ? finish
                        : grpc::Status(grpc::StatusCode::UNKNOWN,
                                       "the broker ended the stream "
                                       "before acknowledging every "
                                       "request"));
    }
    return !failed_;
  }

  // Stops after the requests in flight (Ctrl-C).
  void Cancel() { ctx_.TryCancel(); }

  const grpc::Status& failure() const { return failure_; }
  // The first row of the earliest batch not acknowledged, for the message.
  uint64_t failure_row() const { return failure_row_; }

 private:
  template <typename Ready>
  void WaitLocked(std::unique_lock<std::mutex>& lock, Ready ready) {
    while (!ready() && !failed_ && !reader_done_) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      if (!pending_.empty() && Clock::now() - last_progress_ > timeout_ && !failed_) {
        Fail(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "no acknowledgement within --timeout"));
        ctx_.TryCancel();
      }
    }
  }

  bool Pump() {
    while (true) {
      std::shared_ptr<ImportBatch> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (outgoing_.empty()) return !failed_;
        WaitLocked(lock, [&] { return pending_.size() < kWindow; });
        if (failed_) return false;
        if (reader_done_) {
          Fail(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream to the broker closed"));
          return false;
        }
        batch = std::move(outgoing_.front());
        outgoing_.pop_front();
        batch->request_id = next_id_++;
        batch->request.set_request_id(batch->request_id);
        if (pending_.empty()) last_progress_ = Clock::now();
        pending_.push_back(batch);
      }
      if (!stream_->Write(batch->request)) {
        std::lock_guard<std::mutex> lock(mu_);
        write_failed_ = true;
        Fail(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream to the broker broke"));
        return false;
      }
    }
  }

  // REQUIRES: mu_ held.
  void Fail(grpc::Status status) {
    if (failed_) return;
    failed_ = true;
    failure_ = std::move(status);
    if (!pending_.empty() && !pending_.front()->records.empty()) {
      failure_row_ = pending_.front()->records.front().row;
    } else if (!outgoing_.empty() && !outgoing_.front()->records.empty()) {
      failure_row_ = outgoing_.front()->records.front().row;
    }
    cv_.notify_all();
  }

  void ReadLoop() {
    icr::v1::PublishStreamResponse response;
    while (stream_->Read(&response)) {
      std::lock_guard<std::mutex> lock(mu_);
      last_progress_ = Clock::now();
      if (pending_.empty() || pending_.front()->request_id != response.request_id()) {
        Fail(grpc::Status(grpc::StatusCode::INTERNAL, "the broker acknowledged request " +
                                                          std::to_string(response.request_id()) +
                                                          ", which was not the next one sent"));
        ctx_.TryCancel();
        break;
      }
      std::shared_ptr<ImportBatch> batch = pending_.front();
      if (response.code() == 0) {
        if (response.results_size() != batch->request.events_size()) {
          Fail(grpc::Status(grpc::StatusCode::INTERNAL,
                            "the broker acknowledged " + std::to_string(response.results_size()) +
                                " of " + std::to_string(batch->request.events_size()) +
                                " events of a request"));
          ctx_.TryCancel();
          break;
        }
        pending_.pop_front();
        for (const auto& r : response.results()) {
          if (r.duplicate()) {
            ++tally_->duplicates;
          } else {
            ++tally_->stored;
          }
        }
        cv_.notify_all();
        continue;
      }
      size_t index = 0;
      std::string detail;
      if (response.code() != static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT) ||
          !csvio::ParseBrokerRejection(response.message(), &index, &detail) ||
          index >= batch->records.size()) {
        Fail(grpc::Status(static_cast<grpc::StatusCode>(response.code()), response.message()));
        ctx_.TryCancel();
        break;
      }
      pending_.pop_front();
      {
        std::lock_guard<std::mutex> report_lock(*report_mu_);
        report_->Add(batch->records[index], csvio::BrokerRejectionReason(mapper_, detail));
      }
      ++tally_->rejected_broker;
      batch->records.erase(batch->records.begin() + static_cast<std::ptrdiff_t>(index));
      batch->request.mutable_events()->DeleteSubrange(static_cast<int>(index), 1);
      // Resend the rest first: it was read before anything still queued.
      if (!batch->records.empty()) outgoing_.push_front(std::move(batch));
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    reader_done_ = true;
    cv_.notify_all();
  }

  const GlobalOptions& g_;
  const csvio::RowMapper& mapper_;
  csvio::ErrorReport* report_;
  std::mutex* report_mu_;
  ImportTally* tally_;
  const std::chrono::milliseconds timeout_;

  grpc::ClientContext ctx_;
  std::unique_ptr<
      grpc::ClientReaderWriter<icr::v1::PublishStreamRequest, icr::v1::PublishStreamResponse>>
      stream_;
  std::thread reader_;

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ImportBatch>> outgoing_;  // to send; resends go first
  std::deque<std::shared_ptr<ImportBatch>> pending_;   // sent, not acknowledged
  uint64_t next_id_ = 1;
  bool reader_done_ = false;
  bool write_failed_ = false;
  bool failed_ = false;
  grpc::Status failure_;
  uint64_t failure_row_ = 0;
  Clock::time_point last_progress_ = Clock::now();
};

int RunImport(const GlobalOptions& g, const ImportOptions& o) {
  const auto start = Clock::now();
  csvio::Mapping mapping;
  if (csvio::Status s = csvio::Mapping::Load(o.mapping, &mapping); !s.ok()) {
    Err("mapping " + s.message());
    Err("nothing was imported; fix the mapping file (docs/adapters/csv.md describes it)");
    return kExitUsage;
  }
  const bool from_stdin = o.file == "-";
  if (from_stdin && o.errors.empty()) {
    return UsageError("reading from standard input: give --errors FILE for the error report");
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  uint64_t file_bytes = 0;
  if (!from_stdin) {
    file.open(o.file, std::ios::binary);
    if (!file) return UsageError("cannot open " + o.file + ": " + std::strerror(errno));
    struct stat st {};
    if (stat(o.file.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      file_bytes = static_cast<uint64_t>(st.st_size);
    }
    in = &file;
  }
  csvio::CsvEventSource source;
  if (csvio::Status s = source.Open(in, mapping); !s.ok()) {
    Err((from_stdin ? std::string("standard input") : o.file) + ": " + s.message());
    Err("nothing was imported; the file's header row and the mapping (" + o.mapping +
        ") must agree");
    return kExitUsage;
  }
  const std::string errors_path = o.errors.empty() ? o.file + ".errors.csv" : o.errors;
  {
    std::error_code ec;
    if (!from_stdin &&
        (errors_path == o.file || std::filesystem::equivalent(o.file, errors_path, ec))) {
      return UsageError("--errors " + errors_path +
                        " is the input file; give the error report "
                        "another name");
    }
  }
  std::ofstream errors_file(errors_path, std::ios::binary | std::ios::trunc);
  if (!errors_file) {
    return UsageError("cannot write the error report " + errors_path + ": " + std::strerror(errno) +
                      " (choose another place with --errors)");
  }
  std::mutex report_mu;
  csvio::ErrorReport report(&errors_file, source.header(), source.delimiter());

  ImportTally tally;
  const bool tty = isatty(STDERR_FILENO) != 0;
  ImportProgress progress(tty || o.progress, tty, file_bytes);

  std::atomic<bool> stop{false};
  std::unique_ptr<ImportSender> sender;
  auto stub = o.dry_run ? nullptr : icr::v1::Broker::NewStub(MakeChannel(g));
  if (!o.dry_run) {
    sender =
        std::make_unique<ImportSender>(stub.get(), g, source.mapper(), &report, &report_mu, &tally);
  }
  // Ctrl-C: stop reading, let the requests in flight finish, then summarise;
  // a second Ctrl-C (a second later) exits at once.
  SignalWatcher::Get().SetHook([&stop] { stop = true; });

  bool ok = true;
  uint64_t last_row = 1;  // the header
  auto batch = std::make_unique<ImportBatch>();
  csvio::CsvEventSource::Row row;
  while (!stop && source.Next(&row)) {
    ++tally.read;
    last_row = row.record.row;
    if (!row.ok) {
      {
        std::lock_guard<std::mutex> lock(report_mu);
        report.Add(row.record, row.problem);
      }
      ++tally.rejected_mapping;
    } else {
      ++tally.valid;
      if (sender) {
        *batch->request.add_events() = std::move(row.event);
        batch->records.push_back(std::move(row.record));
        if (batch->records.size() >= o.batch) {
          if (!sender->Send(std::move(batch))) {
            ok = false;
            break;
          }
          batch = std::make_unique<ImportBatch>();
        }
      }
    }
    if ((tally.read & 63) == 0) progress.Update(tally.Get(), source.bytes_consumed());
  }
  // Rows already read are sent even after Ctrl-C.
  if (ok && sender && !batch->records.empty()) ok = sender->Send(std::move(batch));
  if (sender) {
    if (!ok) sender->Cancel();
    ok = sender->Finish() && ok;
  }
  const ImportCounts t = tally.Get();
  progress.Update(t, source.bytes_consumed(), /*force=*/true);
  progress.Finish();
  SignalWatcher::Get().SetHook(nullptr);
  const bool read_failed = source.stream_failed();

  errors_file.flush();
  const bool report_ok = static_cast<bool>(errors_file);
  errors_file.close();
  if (report.rows() == 0) std::remove(errors_path.c_str());

  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const double rate = secs > 0 ? t.read / secs : 0;
  const uint64_t unconfirmed =
      o.dry_run ? 0 : t.read - std::min(t.read, t.stored + t.duplicates + t.rejected());
  const std::string name = from_stdin ? std::string("standard input") : o.file;

  if (g.json) {
    nlohmann::ordered_json j = {{"file", name},
                                {"dryRun", o.dry_run},
                                {"rowsRead", t.read},
                                {"stored", t.stored},
                                {"duplicates", t.duplicates},
                                {"rejected", t.rejected()},
                                {"rejectedByMapping", t.rejected_mapping},
                                {"rejectedByBroker", t.rejected_broker}};
    if (o.dry_run) j["valid"] = t.valid;
    j["notConfirmed"] = unconfirmed;
    j["elapsedSeconds"] = std::round(secs * 1000) / 1000;
    j["rowsPerSecond"] = std::round(rate * 10) / 10;
    j["errorReport"] = report.rows() > 0 ? nlohmann::ordered_json(errors_path) : nullptr;
    j["interrupted"] = stop.load();
    if (!Out(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace))) {
      return StdoutFailed();
    }
  } else {
    std::string line =
        (o.dry_run ? "dry run of " : "imported ") + name + ": " + WithCommas(t.read) +
        " rows read, " +
        (o.dry_run
             ? WithCommas(t.valid) + " valid (nothing sent)"
             : WithCommas(t.stored) + " stored, " + WithCommas(t.duplicates) + " duplicates") +
        ", " + WithCommas(t.rejected()) + " rejected" +
        (unconfirmed > 0 ? ", " + WithCommas(unconfirmed) + " not confirmed" : "") + ", " +
        Seconds(secs) + " s, " + WithCommas(static_cast<uint64_t>(rate)) + " rows/s";
    if (!Out(line)) return StdoutFailed();
  }
  if (!report_ok) Err("could not write the whole error report " + errors_path);
  if (report.rows() > 0) {
    Err(WithCommas(report.rows()) + " rejected row(s) are in " + errors_path +
        " (row, reason, then the row as it was); fix them there and import that file with "
        "the same mapping");
  }
  if (read_failed) Err("reading " + name + " failed after row " + std::to_string(last_row));
  if (stop) {
    Err("interrupted: rows after row " + std::to_string(last_row) +
        " were not read; import the file again to finish (rows already stored are recognised)");
  }
  if (sender && !sender->failure().ok()) {
    const grpc::Status& f = sender->failure();
    Err("import stopped" +
        (sender->failure_row() ? " at row " + std::to_string(sender->failure_row()) : "") + ": " +
        StatusText(f));
    Err(Advice(f, g, "import"));
    Err("rows acknowledged before it stay stored; importing the file again is safe: the broker "
        "recognises rows it already has");
    return kExitFailure;
  }
  return t.rejected() > 0 || stop || !report_ok || read_failed ? kExitFailure : kExitOk;
}

// ---------------------------------------------------------------------------
// tail
// ---------------------------------------------------------------------------

// Acknowledges positions of a durable subscription on its own thread, as soon
// as they are added; positions added while an Ack call is in flight go
// together in the next call. Acking promptly matters: the broker holds a
// person's next event until the previous one is acknowledged.
class Acker {
 public:
  Acker(icr::v1::Broker::Stub* stub, const GlobalOptions& g, std::string subscription)
      : stub_(stub), g_(g), subscription_(std::move(subscription)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Acker() { Stop(); }
  Acker(const Acker&) = delete;
  Acker& operator=(const Acker&) = delete;

  void Add(uint64_t position) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(position);
    cv_.notify_one();
  }
  // Sends what is queued and ends the thread.
  // Sends what is queued and stops. Safe from two threads at once (the
  // signal hook and the main thread): each returns only once all is sent.
  void Stop() {
    std::lock_guard<std::mutex> stop(stop_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (!queue_.empty()) {
        std::vector<uint64_t> batch;
        batch.swap(queue_);
        lock.unlock();
        Send(batch);
        lock.lock();
      }
      if (stopping_ && queue_.empty()) return;
    }
  }
  void Send(const std::vector<uint64_t>& positions) {
    icr::v1::AckRequest request;
    request.set_subscription(subscription_);
    for (uint64_t p : positions) request.add_positions(p);
    icr::v1::AckResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, g_);
    grpc::Status st = stub_->Ack(&ctx, request, &response);
    if (!st.ok() && !warned_) {
      warned_ = true;
      Err("ack failed for subscription " + subscription_ + ": " + StatusText(st) +
          "; unacknowledged events will be delivered again after the ack timeout");
    }
  }

  icr::v1::Broker::Stub* stub_;
  const GlobalOptions& g_;
  const std::string subscription_;
  std::mutex stop_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> queue_;
  bool stopping_ = false;
  bool warned_ = false;
  std::thread thread_;
};

// Builds the SubscribeRequest from the options; false with a message on a
// usage error.
bool BuildSubscribeRequest(const TailOptions& t, icr::v1::SubscribeRequest* r, std::string* error) {
  r->set_subscription(t.name);
  r->set_heartbeat_ms(15000);  // sent explicitly: in proto3 an unset 0 reads as "off"
  // Several events per message when a backlog is ready (catching up from
  // earliest); at the tail each still comes at once. Output is the same.
  r->set_max_batch(256);
  auto* f = r->mutable_filter();
  for (const auto& name : t.types) {
    icr::v1::EventType v;
    if (!ParseEnumName(icr::v1::EventType_descriptor(), name, "--type", &v, error)) return false;
    f->add_event_types(v);
  }
  for (const auto& name : t.settings) {
    icr::v1::CareSetting v;
    if (!ParseEnumName(icr::v1::CareSetting_descriptor(), name, "--setting", &v, error)) {
      return false;
    }
    f->add_care_settings(v);
  }
  for (const auto& name : t.priorities) {
    icr::v1::Priority v;
    if (!ParseEnumName(icr::v1::Priority_descriptor(), name, "--priority", &v, error)) {
      return false;
    }
    f->add_priorities(v);
  }
  for (const auto& org : t.orgs) f->add_source_organisations(org);
  if (!t.purpose.empty()) {
    icr::v1::Purpose purpose;
    if (!ParseEnumName(icr::v1::Purpose_descriptor(), t.purpose, "--purpose", &purpose, error)) {
      return false;
    }
    r->set_purpose(purpose);
  }
  r->set_legal_basis(t.legal_basis);
  for (const auto& a : t.addressees) {
    const size_t slash = a.find('/');
    auto* team = f->add_addressees();
    team->set_organisation(a.substr(0, slash));
    if (slash != std::string::npos) team->set_team_code(a.substr(slash + 1));
    if (team->organisation().empty()) {
      *error = "--addressee: \"" + a + "\" has no organisation; use ORG or ORG/TEAM, e.g. "
               "CCC/HSCT-UHCW";
      return false;
    }
  }
  for (const auto& n : t.nhs) {
    std::string normal;
    if (!NormaliseNhsNumber(n, &normal, error)) {
      *error = "--nhs: " + *error;
      return false;
    }
    f->add_nhs_numbers(normal);
  }
  auto* start = r->mutable_start();
  const std::string& from = t.from;
  if (from == "latest") {
    start->set_latest(true);
  } else if (from == "earliest") {
    start->set_earliest(true);
  } else if (!from.empty() && from.find_first_not_of("0123456789") == std::string::npos) {
    start->set_position(std::strtoull(from.c_str(), nullptr, 10));
  } else if (!ParseTime(from, start->mutable_time())) {
    *error = "--from: \"" + from +
             "\" is not latest, earliest, a position or a time (RFC 3339 such as "
             "2025-03-10T09:00:00Z, or a date such as 2025-03-10)";
    return false;
  }
  return true;
}

int RunTail(const GlobalOptions& g, const TailOptions& t) {
  icr::v1::SubscribeRequest request;
  std::string error;
  if (!BuildSubscribeRequest(t, &request, &error)) return UsageError(error);

  auto stub = icr::v1::Broker::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;  // no deadline: the stream is long-lived
  std::atomic<bool> done{false};
  std::unique_ptr<Acker> acker;
  const bool durable = !t.name.empty();
  if (durable && !t.no_ack) acker = std::make_unique<Acker>(stub.get(), g, t.name);
  // Ctrl-C / SIGTERM (the hook runs on the signal watcher's thread): first
  // acknowledge what was printed, while the stream is still connected, then
  // close the stream.
  SignalWatcher::Get().SetHook([&ctx, &done, &acker] {
    done = true;
    if (acker) acker->Stop();
    ctx.TryCancel();
  });

  auto reader = stub->Subscribe(&ctx, request);
  icr::v1::SubscribeResponse response;
  uint64_t events = 0;
  bool stdout_failed = false;
  // Prints one event; false when tail should stop (stdout failed, or --count
  // reached). Events of a batch past --count are not acknowledged, so a
  // durable subscription delivers them again next time.
  auto print = [&](const icr::v1::CareEvent& event) {
    if (!Out(jsonio::EventToJson(event))) {
      stdout_failed = true;
      return false;
    }
    if (acker) acker->Add(event.position());
    return !(t.count > 0 && ++events >= t.count);
  };
  while (reader->Read(&response)) {
    if (response.has_event()) {
      if (!print(response.event())) break;
    } else if (response.has_batch()) {
      bool go_on = true;
      for (const auto& b : response.batch().events()) {
        if (!(go_on = print(b.event()))) break;
      }
      if (!go_on) break;
    } else if (response.has_heartbeat() && t.heartbeats) {
      if (!Out(jsonio::EventToJson(response))) {
        stdout_failed = true;
        break;
      }
    }
  }
  const bool stopped_by_us = done || stdout_failed || (t.count > 0 && events >= t.count);
  if (stopped_by_us) {
    // Acknowledge what was printed while the stream is still connected (the
    // broker takes acks only from a connected subscription), then close it.
    if (acker) acker->Stop();
    ctx.TryCancel();
  }
  grpc::Status st = reader->Finish();
  SignalWatcher::Get().SetHook(nullptr);
  if (acker) acker->Stop();  // acknowledge everything printed
  if (stdout_failed) return StdoutFailed();
  if (stopped_by_us || SignalWatcher::Get().interrupted()) return kExitOk;
  if (st.ok()) {
    Err("the broker ended the subscription (it may be shutting down)" +
        std::string(durable ? "; run the same command again to resume from its cursor" : ""));
    return kExitOk;
  }
  ReportRpcFailure("subscribe", st, g);
  if (durable && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    Err("durable subscription " + t.name + " resumes from its cursor when you run the same "
        "command again");
  }
  return kExitFailure;
}

// ---------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------

int RunHistory(const GlobalOptions& g, const HistoryOptions& h) {
  icr::v1::GetPatientHistoryRequest request;
  std::string error;
  std::string nhs;
  if (!NormaliseNhsNumber(h.nhs, &nhs, &error)) return UsageError(error);
  request.set_nhs_number(nhs);
  for (const auto& name : h.types) {
    icr::v1::EventType v;
    if (!ParseEnumName(icr::v1::EventType_descriptor(), name, "--type", &v, &error)) {
      return UsageError(error);
    }
    request.add_event_types(v);
  }
  if (!h.from.empty() && !ParseTimeOption("--from", h.from, request.mutable_from(), &error)) {
    return UsageError(error);
  }
  if (!h.to.empty() && !ParseTimeOption("--to", h.to, request.mutable_to(), &error)) {
    return UsageError(error);
  }
  if (!h.purpose.empty()) {
    icr::v1::Purpose purpose;
    if (!ParseEnumName(icr::v1::Purpose_descriptor(), h.purpose, "--purpose", &purpose, &error)) {
      return UsageError(error);
    }
    request.set_purpose(purpose);
  }

  auto stub = icr::v1::Broker::NewStub(MakeChannel(g));
  uint64_t shown = 0;
  bool header = false;
  while (true) {
    uint64_t want = 1000;
    if (h.limit > 0) want = std::min<uint64_t>(want, h.limit - shown);
    request.set_page_size(static_cast<uint32_t>(want));
    icr::v1::GetPatientHistoryResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, g);
    grpc::Status st = stub->GetPatientHistory(&ctx, request, &response);
    if (!st.ok()) return ReportRpcFailure("history for " + nhs, st, g);
    for (const auto& e : response.events()) {
      if (h.limit > 0 && shown >= h.limit) break;
      ++shown;
      std::string line;
      if (g.json) {
        line = jsonio::EventToJson(e);
      } else {
        if (!header) {
          header = true;
          if (!Out(Pad("POSITION", 11) + Pad("OCCURRED AT", 22) + Pad("TYPE", 29) +
                   Pad("SOURCE ORG", 12) + "PRIORITY")) {
            return StdoutFailed();
          }
        }
        const auto* prio = icr::v1::Priority_descriptor()->FindValueByNumber(e.priority());
        line = Pad(std::to_string(e.position()), 11) + Pad(TimeString(e.occurred_at()), 22) +
               Pad(EventTypeName(e), 29) + Pad(e.source_organisation(), 12) +
               (e.priority() == 0 || !prio ? "ROUTINE" : prio->name());
      }
      if (!Out(line)) return StdoutFailed();
    }
    if (response.next_page_token().empty() || (h.limit > 0 && shown >= h.limit)) break;
    request.set_page_token(response.next_page_token());
  }
  if (shown == 0 && !g.json) {
    Err("no stored events for NHS number " + nhs +
        (request.event_types_size() || request.has_from() || request.has_to()
             ? " match these filters"
             : ""));
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------
// status (GetStatus + grpc.health.v1.Health/Check)
// ---------------------------------------------------------------------------

// grpc.health.v1 is not shipped for C++ clients in Debian, so the Check call
// goes through a generic stub with the two tiny messages encoded by hand:
// HealthCheckRequest {string service = 1;} and HealthCheckResponse
// {ServingStatus status = 1;}.
std::string HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const GlobalOptions& g,
                        const std::string& service, grpc::Status* rpc_status) {
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes.push_back(0x0A);  // field 1, length-delimited
    request_bytes.push_back(static_cast<char>(service.size()));  // services names are short
    request_bytes += service;
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  *rpc_status = done.get_future().get();
  if (!rpc_status->ok()) return "";
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  int status = 0;  // UNKNOWN when absent
  for (size_t i = 0; i + 1 < bytes.size();) {
    const unsigned char tag = static_cast<unsigned char>(bytes[i++]);
    if (tag != 0x08) break;  // only field 1 (varint) is expected
    status = static_cast<unsigned char>(bytes[i]) & 0x7F;
    break;
  }
  static const char* kNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  return status >= 0 && status < 4 ? kNames[status] : "UNKNOWN";
}

int RunStatus(const GlobalOptions& g) {
  auto channel = MakeChannel(g);
  auto stub = icr::v1::Broker::NewStub(channel);
  icr::v1::GetStatusResponse status;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->GetStatus(&ctx, icr::v1::GetStatusRequest(), &status);
  if (!st.ok()) return ReportRpcFailure("status", st, g);

  grpc::Status health_rpc;
  std::string health = HealthCheck(channel, g, "icr.v1.Broker", &health_rpc);
  if (health_rpc.error_code() == grpc::StatusCode::NOT_FOUND) {
    health = HealthCheck(channel, g, "", &health_rpc);
  }
  if (!health_rpc.ok()) {
    health = health_rpc.error_code() == grpc::StatusCode::UNIMPLEMENTED
                 ? "not offered"
                 : std::string("check failed: ") + StatusText(health_rpc);
  }

  if (g.json) {
    nlohmann::json j = nlohmann::json::parse(jsonio::EventToJson(status), nullptr, false);
    if (j.is_discarded()) j = nlohmann::json::object();
    j["broker"] = g.broker;
    j["health"] = health;
    if (!Out(j.dump())) return StdoutFailed();
  } else {
    std::string started = TimeString(status.started_at());
    if (status.has_started_at()) {
      const int64_t up = std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                     .count() -
                 status.started_at().seconds());
      started += " (up " + std::to_string(up / 86400) + "d " + std::to_string(up % 86400 / 3600) +
                 "h " + std::to_string(up % 3600 / 60) + "m)";
    }
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"broker", g.broker},
        {"health", health},
        {"version", status.version()},
        {"durability", status.durability()},
        {"data dir", status.data_dir()},
        {"started at", started},
        {"last position", WithCommas(status.last_position())},
        {"events stored", WithCommas(status.events_stored())},
        {"subscriptions", std::to_string(status.durable_subscriptions()) + " durable, " +
                              std::to_string(status.subscriptions_connected()) + " connected"},
    };
    for (const auto& [k, v] : rows) {
      if (!Out(Pad(k, 16) + v)) return StdoutFailed();
    }
    if (!status.store_write_error().empty()) {
      if (!Out(Pad("writes", 16) + "REFUSED: " + status.store_write_error())) return StdoutFailed();
    }
  }
  if (!status.store_write_error().empty()) {
    Err("the broker refuses publishes (reads go on): " + status.store_write_error() +
        (status.store_write_error_permanent()
             ? "\nfix the disk holding its data directory, then restart the broker"
             : "\nfree space on the disk holding its data directory; it resumes by itself"));
    return kExitFailure;
  }
  if (health == "NOT_SERVING") {
    Err("the broker reports NOT_SERVING: it is starting up or shutting down; see its log");
    return kExitFailure;
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------
// subscriptions, parked, replay, delete-subscription
// ---------------------------------------------------------------------------

std::string DescribeFilter(const icr::v1::EventFilter& f) {
  std::vector<std::string> parts;
  auto enum_list = [](const google::protobuf::EnumDescriptor* d, const auto& values) {
    std::vector<std::string> names;
    for (int v : values) {
      const auto* ev = d->FindValueByNumber(v);
      names.push_back(ev ? ev->name() : std::to_string(v));
    }
    return Join(names, ",");
  };
  if (f.event_types_size()) {
    parts.push_back("type=" + enum_list(icr::v1::EventType_descriptor(), f.event_types()));
  }
  if (f.care_settings_size()) {
    parts.push_back("setting=" + enum_list(icr::v1::CareSetting_descriptor(), f.care_settings()));
  }
  if (f.priorities_size()) {
    parts.push_back("priority=" + enum_list(icr::v1::Priority_descriptor(), f.priorities()));
  }
  if (f.source_organisations_size()) {
    parts.push_back("org=" + Join(std::vector<std::string>(f.source_organisations().begin(),
                                                           f.source_organisations().end()),
                                  ","));
  }
  if (f.addressees_size()) {
    std::vector<std::string> a;
    for (const auto& t : f.addressees()) {
      a.push_back(t.organisation() + (t.team_code().empty() ? "" : "/" + t.team_code()));
    }
    parts.push_back("addressee=" + Join(a, ","));
  }
  if (f.nhs_numbers_size()) parts.push_back("nhs=" + std::to_string(f.nhs_numbers_size()) + " numbers");
  return parts.empty() ? "all events" : Join(parts, " ");
}

int RunSubscriptions(const GlobalOptions& g) {
  auto stub = icr::v1::Broker::NewStub(MakeChannel(g));
  icr::v1::ListSubscriptionsResponse response;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->ListSubscriptions(&ctx, icr::v1::ListSubscriptionsRequest(), &response);
  if (!st.ok()) return ReportRpcFailure("list subscriptions", st, g);
  if (g.json) {
    for (const auto& s : response.subscriptions()) {
      if (!Out(jsonio::EventToJson(s))) return StdoutFailed();
    }
    return kExitOk;
  }
  if (response.subscriptions_size() == 0) {
    Err("no durable subscriptions; `icrctl tail --name NAME` creates one");
    return kExitOk;
  }
  size_t name_width = 6;
  for (const auto& s : response.subscriptions()) name_width = std::max(name_width, s.name().size() + 2);
  if (!Out(Pad("NAME", name_width) + Pad("CURSOR", 12) + Pad("LAG", 10) + Pad("CONNECTED", 11) +
           Pad("IN-FLIGHT", 11) + Pad("PARKED", 8) + Pad("CREATED", 22) + "FILTER")) {
    return StdoutFailed();
  }
  for (const auto& s : response.subscriptions()) {
    if (!Out(Pad(s.name(), name_width) + Pad(std::to_string(s.cursor()), 12) +
             Pad(std::to_string(s.lag()), 10) + Pad(s.connected() ? "yes" : "no", 11) +
             Pad(std::to_string(s.in_flight()), 11) + Pad(std::to_string(s.parked()), 8) +
             Pad(TimeString(s.created_at()), 22) + DescribeFilter(s.filter()))) {
      return StdoutFailed();
    }
  }
  return kExitOk;
}

int RunParked(const GlobalOptions& g, const SubscriptionOptions& o) {
  auto stub = icr::v1::Broker::NewStub(MakeChannel(g));
  icr::v1::ListParkedRequest request;
  request.set_subscription(o.name);
  request.set_limit(o.limit);
  icr::v1::ListParkedResponse response;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->ListParked(&ctx, request, &response);
  if (!st.ok()) return ReportRpcFailure("list parked events of " + o.name, st, g);
  if (g.json) {
    for (const auto& p : response.parked()) {
      if (!Out(jsonio::EventToJson(p))) return StdoutFailed();
    }
    return kExitOk;
  }
  if (response.parked_size() == 0) {
    Err("subscription " + o.name + " has no parked events");
    return kExitOk;
  }
  if (!Out(Pad("POSITION", 11) + Pad("ATTEMPTS", 10) + Pad("PARKED AT", 22) + Pad("TYPE", 29) +
           Pad("NHS NUMBER", 12) + "SOURCE MESSAGE ID")) {
    return StdoutFailed();
  }
  for (const auto& p : response.parked()) {
    const auto& e = p.event();
    if (!Out(Pad(std::to_string(e.position()), 11) + Pad(std::to_string(p.attempts()), 10) +
             Pad(TimeString(p.parked_at()), 22) + Pad(EventTypeName(e), 29) +
             Pad(e.nhs_number(), 12) + e.source_message_id())) {
      return StdoutFailed();
    }
  }
  if (static_cast<uint32_t>(response.parked_size()) >= o.limit) {
    Err("showing the oldest " + std::to_string(o.limit) + "; use --limit (at most 1000) for more");
  }
  Err("put them back for delivery with `icrctl replay " + o.name + " [positions...]`");
  return kExitOk;
}

int RunReplay(const GlobalOptions& g, const SubscriptionOptions& o) {
  auto stub = icr::v1::Broker::NewStub(MakeChannel(g));
  icr::v1::ReplayParkedRequest request;
  request.set_subscription(o.name);
  for (uint64_t p : o.positions) request.add_positions(p);
  icr::v1::ReplayParkedResponse response;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->ReplayParked(&ctx, request, &response);
  if (!st.ok()) return ReportRpcFailure("replay parked events of " + o.name, st, g);
  std::string text = response.replayed() == 0
                         ? "subscription " + o.name + " had no parked events to replay" +
                               (o.positions.empty() ? "" : " at those positions")
                         : "replayed " + std::to_string(response.replayed()) +
                               " parked event(s) of subscription " + o.name +
                               "; they will be delivered again";
  const bool ok = g.json ? Out(nlohmann::json{{"subscription", o.name},
                                              {"replayed", response.replayed()}}
                                   .dump())
                         : Out(text);
  return ok ? kExitOk : StdoutFailed();
}

int RunDeleteSubscription(const GlobalOptions& g, const SubscriptionOptions& o) {
  auto stub = icr::v1::Broker::NewStub(MakeChannel(g));
  icr::v1::DeleteSubscriptionRequest request;
  request.set_subscription(o.name);
  icr::v1::DeleteSubscriptionResponse response;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->DeleteSubscription(&ctx, request, &response);
  if (!st.ok()) return ReportRpcFailure("delete subscription " + o.name, st, g);
  const bool ok = g.json ? Out(nlohmann::json{{"deleted", o.name}}.dump())
                         : Out("deleted subscription " + o.name);
  return ok ? kExitOk : StdoutFailed();
}

// ---------------------------------------------------------------------------
// flow (icr.v1.Workflow/GetFlowMetrics) and simulate
// ---------------------------------------------------------------------------

namespace wf = icr::broker::workflow;

constexpr int64_t kMicrosPerDay = 86400LL * 1000000;

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "YYYY-MM-DD" (a UK date) to days since 1970-01-01.
bool ParseUkDate(const std::string& option, const std::string& value, int64_t* day,
                 std::string* error) {
  int y = 0, m = 0, d = 0;
  char tail = 0;
  if (value.size() != 10 || value[4] != '-' || value[7] != '-' ||
      std::sscanf(value.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 ||
      !icr::civil::IsValidDate(y, m, d) || y < 1900 || y > 2199) {
    *error = option + ": \"" + value + "\" is not a date: use YYYY-MM-DD, e.g. 2022-05-23";
    return false;
  }
  icr::v1::Date date;
  date.set_year(y);
  date.set_month(m);
  date.set_day(d);
  *day = wf::DayFromDate(date);
  return true;
}

// "2022-05-23" for a day since 1970-01-01.
std::string DayString(int64_t day) {
  const icr::v1::Date d = wf::DateFromDay(day);
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d", d.year(), d.month(), d.day());
  return buf;
}

// "2022-05-23 14:05" in UK local time ("-" when unset).
std::string UkTimeString(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const int64_t micros = icr::broker::ToMicros(t);
  const int minute = wf::UkLocalMinuteOfDay(micros);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s %02d:%02d", DayString(wf::UkLocalDay(micros)).c_str(),
                minute / 60, minute % 60);
  return buf;
}

// "coventry", "warwickshire-north", ... as --place takes them.
std::string PlaceOptionName(int place) {
  const auto* v = icr::v1::Place_descriptor()->FindValueByNumber(place);
  if (v == nullptr || place == 0) return "-";
  std::string name = v->name();
  for (char& c : name) c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

const char* const kPlaceChoices = "coventry, rugby, warwickshire-north, south-warwickshire";

bool ParsePlace(const std::string& value, icr::v1::Place* place, std::string* error) {
  if (ParseEnumName(icr::v1::Place_descriptor(), value, "--place", place, error)) return true;
  *error = "--place: unknown Place \"" + value + "\"; valid values: " + kPlaceChoices +
           " (leave it out for all four)";
  return false;
}

std::string Fixed(double v, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

// "31.0 / 31.0 (20)": mean / median (count); "-" when nothing was counted.
std::string StatCell(const icr::v1::DurationStat& s, int decimals) {
  if (s.count() == 0) return "-";
  return Fixed(s.mean(), decimals) + " / " + Fixed(s.median(), decimals) + " (" +
         WithCommas(s.count()) + ")";
}

std::string NhsSpaced(const std::string& n) {
  if (n.size() != 10) return n;
  return n.substr(0, 3) + " " + n.substr(3, 3) + " " + n.substr(6);
}

struct FlowOptions {
  std::string from, to;  // UK dates, both inclusive
  std::string place;     // empty: all Places
  uint32_t top = 20;     // awaiting-discharge rows shown
};

int RunFlow(const GlobalOptions& g, const FlowOptions& f) {
  std::string error;
  int64_t from_day = 0, to_day = 0;
  if (!ParseUkDate("--from", f.from, &from_day, &error)) return UsageError(error);
  if (!ParseUkDate("--to", f.to, &to_day, &error)) return UsageError(error);
  if (to_day < from_day) {
    return UsageError("--to " + f.to + " is before --from " + f.from +
                      " (--to is inclusive: --from 2022-05-23 --to 2022-05-23 is one day)");
  }
  icr::v1::Place place = icr::v1::PLACE_UNSPECIFIED;
  if (!f.place.empty() && !ParsePlace(f.place, &place, &error)) return UsageError(error);

  icr::v1::GetFlowMetricsRequest request;
  icr::broker::SetTimestamp(request.mutable_from(), wf::UkLocalMidnightMicros(from_day));
  icr::broker::SetTimestamp(request.mutable_to(), wf::UkLocalMidnightMicros(to_day + 1));
  request.set_place(place);
  auto stub = icr::v1::Workflow::NewStub(MakeChannel(g));
  icr::v1::FlowMetrics m;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->GetFlowMetrics(&ctx, request, &m);
  if (!st.ok()) return ReportRpcFailure("flow metrics", st, g);

  if (g.json) return Out(jsonio::EventToJson(m)) ? kExitOk : StdoutFailed();

  std::vector<std::string> lines;
  lines.push_back("Flow " + DayString(from_day) + " to " + DayString(to_day) +
                  " (UK dates, inclusive), " +
                  (place == icr::v1::PLACE_UNSPECIFIED ? std::string("all Places")
                                                       : PlaceOptionName(place)) +
                  "; computed " + UkTimeString(m.computed_at()));
  lines.push_back("Cells: mean / median (referrals counted); - where none. Days are UK calendar "
                  "days (same day = 0).");
  lines.push_back("");
  const size_t w0 = 11, w1 = 11, w2 = 12, w3 = 23, w4 = 23;
  lines.push_back(Pad("PATHWAY", w0) + Pad("REFERRALS", w1) + Pad("DISCHARGES", w2) +
                  Pad("REFERRAL->BROKERAGE", w3) + Pad("BROKERAGE->OFFER", w4) +
                  Pad("OFFER->DISCHARGE", w4) + "REFERRAL->DISCHARGE");
  lines.push_back(Pad("", w0 + w1 + w2) + Pad("minutes", w3) + Pad("days", w4) + Pad("days", w4) +
                  "days");
  uint32_t weekend = 0, weekday = 0;
  for (const auto& p : m.pathways()) {
    const int n = static_cast<int>(p.pathway()) - static_cast<int>(icr::v1::PATHWAY_0);
    weekend += p.weekend_discharges();
    weekday += p.weekday_discharges();
    lines.push_back(Pad("pathway " + std::to_string(n), w0) + Pad(WithCommas(p.referrals()), w1) +
                    Pad(WithCommas(p.discharges()), w2) +
                    Pad(StatCell(p.minutes_referral_to_brokerage(), 1), w3) +
                    Pad(StatCell(p.days_brokerage_to_offer(), 2), w4) +
                    Pad(StatCell(p.days_offer_to_discharge(), 2), w4) +
                    StatCell(p.days_referral_to_discharge(), 2));
  }
  lines.push_back("");
  const double ratio = m.weekend_to_weekday_ratio();
  lines.push_back(Pad("weekend/weekday", 20) +
                  (weekday == 0 ? std::string("- (no weekday discharges)")
                                : Fixed(ratio, 2) + " per day (HICM target: at least 0.60" +
                                      (ratio < 0.6 ? "; below it)" : "; met)")) +
                  "; " + WithCommas(weekend) + " weekend and " + WithCommas(weekday) +
                  " weekday discharges");
  lines.push_back(Pad("open escalations", 20) + WithCommas(m.open_escalations()));
  const int waiting = m.awaiting_discharge_size();
  lines.push_back(Pad("awaiting discharge", 20) + WithCommas(static_cast<uint64_t>(waiting)) +
                  (waiting == 0 ? "" : " medically optimised, not discharged (longest wait first)"));
  if (waiting > 0) {
    lines.push_back("");
    size_t id_width = 12;
    const int shown = std::min<int>(waiting, static_cast<int>(f.top));
    for (int i = 0; i < shown; ++i) {
      id_width = std::max(id_width, m.awaiting_discharge(i).referral_id().size() + 2);
    }
    lines.push_back(Pad("NHS NUMBER", 14) + Pad("REFERRAL", id_width) + Pad("PATHWAY", 9) +
                    Pad("PLACE", 20) + Pad("STATUS", 24) + Pad("OPTIMISED (UK)", 18) +
                    "WAITING");
    for (int i = 0; i < shown; ++i) {
      const auto& a = m.awaiting_discharge(i);
      const int n = static_cast<int>(a.pathway()) - static_cast<int>(icr::v1::PATHWAY_0);
      lines.push_back(Pad(NhsSpaced(a.nhs_number()), 14) + Pad(a.referral_id(), id_width) +
                      Pad(n >= 0 && n <= 3 ? std::to_string(n) : "-", 9) +
                      Pad(PlaceOptionName(a.place()), 20) +
                      Pad(icr::v1::ReferralStatus_Name(a.status()), 24) +
                      Pad(a.has_medically_optimised_at() ? UkTimeString(a.medically_optimised_at())
                                                         : "(ready date)",
                          18) +
                      Fixed(a.hours_waiting(), 1) + " h");
    }
    if (waiting > shown) {
      lines.push_back("... and " + WithCommas(static_cast<uint64_t>(waiting - shown)) +
                      " more (--top N shows more; --json prints all)");
    }
  }
  for (const auto& line : lines) {
    if (!Out(line)) return StdoutFailed();
  }
  return kExitOk;
}

struct SimulateOptions {
  uint64_t seed = 1;
  int days = 1;
  std::string start;            // YYYY-MM-DD (UK midnight) or RFC 3339; default by rate
  std::string rate = "fast";    // fast | realtime
  double admissions_per_day = 260;
  bool dry_run = false;
  size_t batch = 500;
  bool progress = false;
  std::string scenario;         // "coventry-2022": the exact table instead of a simulation
};

// "simulating: day 3 of 7 (2025-03-04 10:00), 12,345 events published,
// 8,123 events/s, ETA 0:12" on stderr; redrawn on a terminal, a line a
// second with --progress elsewhere.
class SimulateProgress {
 public:
  SimulateProgress(bool enabled, bool tty, bool realtime, const std::string& verb)
      : line_(enabled, tty), realtime_(realtime), verb_(verb) {}
  void Update(int64_t sim_micros, int64_t start, int64_t stop, int days, uint64_t events,
              bool force = false) {
    if (!line_.Due(force)) return;
    const double secs = line_.Seconds();
    const int64_t day =
        std::min<int64_t>(days, std::max<int64_t>(1, (sim_micros - start) / kMicrosPerDay + 1));
    google::protobuf::Timestamp t;
    icr::broker::SetTimestamp(&t, sim_micros);
    std::string line = "simulating: day " + std::to_string(day) + " of " + std::to_string(days) +
                       " (" + UkTimeString(t) + "), " + WithCommas(events) + " events " + verb_ +
                       ", " + WithCommas(secs > 0 ? static_cast<uint64_t>(events / secs) : 0) +
                       " events/s";
    double eta = -1;
    if (realtime_) {
      eta = std::max<double>(0, static_cast<double>(stop - NowMicros()) / 1e6);
    } else if (stop > start && sim_micros > start && secs > 0.5) {
      const double fraction =
          std::min(1.0, static_cast<double>(sim_micros - start) / static_cast<double>(stop - start));
      eta = secs * (1 - fraction) / fraction;
    }
    if (eta >= 0) line += ", ETA " + Eta(eta);
    line_.Show(line);
  }
  void Finish() { line_.Finish(); }

 private:
  StatusLine line_;
  bool realtime_;
  std::string verb_;
};

// Publishes (or prints) a fixed list of events in batches; for --scenario.
int PublishScenario(const GlobalOptions& g, const SimulateOptions& o,
                    const std::vector<icr::v1::CareEvent>& events) {
  const auto began = Clock::now();
  uint64_t stored = 0, duplicates = 0;
  auto stub = o.dry_run ? nullptr : icr::v1::Broker::NewStub(MakeChannel(g));
  for (size_t i = 0; i < events.size(); i += o.batch) {
    if (o.dry_run) {
      for (size_t j = i; j < std::min(events.size(), i + o.batch); ++j) {
        if (!Out(jsonio::EventToJson(events[j]))) return StdoutFailed();
      }
      continue;
    }
    icr::v1::PublishBatchRequest batch;
    for (size_t j = i; j < std::min(events.size(), i + o.batch); ++j) *batch.add_events() = events[j];
    icr::v1::PublishBatchResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, g);
    grpc::Status st = stub->PublishBatch(&ctx, batch, &response);
    if (!st.ok()) {
      Err("simulate --scenario " + o.scenario + ": publish failed for the batch from event " +
          WithCommas(i + 1) + ": " + StatusText(st));
      Err(Advice(st, g, "publish"));
      Err(WithCommas(stored + duplicates) + " event(s) were stored before it; running the same "
          "command again is safe (the broker recognises events it already has)");
      return kExitFailure;
    }
    for (const auto& r : response.results()) (r.duplicate() ? duplicates : stored) += 1;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - began).count();
  const std::string line = "scenario " + o.scenario + ": " + WithCommas(events.size()) +
                           " events " +
                           (o.dry_run ? std::string("written")
                                      : "published (" + WithCommas(duplicates) + " duplicates)") +
                           ", " + Seconds(secs) + " s; see them with `icrctl flow --from "
                           "2022-05-23 --to 2022-06-26 --place coventry` (and 2022-06-27 to "
                           "2022-07-31)";
  if (o.dry_run) {
    Err(line);
    return kExitOk;
  }
  if (g.json) {
    nlohmann::ordered_json j = {{"scenario", o.scenario},
                                {"events", events.size()},
                                {"stored", stored},
                                {"duplicates", duplicates}};
    return Out(j.dump()) ? kExitOk : StdoutFailed();
  }
  return Out(line) ? kExitOk : StdoutFailed();
}

int RunSimulate(const GlobalOptions& g, const SimulateOptions& o) {
  if (!o.scenario.empty()) {
    // Coventry's 2022/23 table (domain.md section 3.3), 20 referrals per
    // pathway and period, seeded by --seed.
    wf::FlowScenario scenario = wf::CoventryTable2022Scenario(20);
    scenario.seed = o.seed;
    return PublishScenario(g, o, wf::BuildFlowScenario(scenario));
  }
  const bool realtime = o.rate == "realtime";
  const int64_t now = NowMicros() / 1000000 * 1000000;  // whole seconds: --start can repeat it
  int64_t start = 0;
  if (!o.start.empty()) {
    int64_t day = 0;
    std::string error;
    google::protobuf::Timestamp t;
    if (ParseUkDate("--start", o.start, &day, &error)) {
      start = wf::UkLocalMidnightMicros(day);
    } else if (o.start.size() > 10 && ParseTime(o.start, &t)) {
      start = icr::broker::ToMicros(t);
    } else {
      return UsageError("--start: \"" + o.start +
                        "\" is not a date or time: use YYYY-MM-DD (UK midnight) or RFC 3339 "
                        "such as 2025-03-10T09:00:00Z");
    }
  } else {
    start = realtime ? now : now - o.days * kMicrosPerDay;
  }
  int64_t stop = start + o.days * kMicrosPerDay;
  if (!realtime) {
    if (start >= now) {
      return UsageError("--start " + o.start +
                        " is not in the past: with --rate fast every event must have happened "
                        "already (the broker refuses occurred_at more than 5 minutes ahead); "
                        "give an earlier --start, or use --rate realtime");
    }
    if (stop > now) {
      Err("the simulation ends now: events after " + UkTimeString([&] {
            google::protobuf::Timestamp t;
            icr::broker::SetTimestamp(&t, now);
            return t;
          }()) + " (UK) are not generated; use --rate realtime to go on in real time");
      stop = now;
    }
  }

  wf::SimulationOptions so;
  so.seed = o.seed;
  so.start_micros = start;
  so.days = o.days;
  so.admissions_per_day = o.admissions_per_day;
  so.stop_micros = stop;
  wf::Simulator sim(so);

  google::protobuf::Timestamp start_ts;
  icr::broker::SetTimestamp(&start_ts, start);
  const std::string start_text = TimeUtil::ToString(start_ts);
  const std::string rerun = "icrctl simulate --seed " + std::to_string(o.seed) + " --days " +
                            std::to_string(o.days) + " --start " + start_text +
                            (o.admissions_per_day != 260
                                 ? " --admissions-per-day " + Fixed(o.admissions_per_day, 0)
                                 : std::string()) +
                            (realtime ? " --rate realtime" : "");

  std::atomic<bool> stop_flag{false};
  SignalWatcher::Get().SetHook([&stop_flag] { stop_flag = true; });
  const bool tty = isatty(STDERR_FILENO) != 0;
  SimulateProgress progress(tty || o.progress, tty, realtime, o.dry_run ? "written" : "published");
  auto stub = o.dry_run ? nullptr : icr::v1::Broker::NewStub(MakeChannel(g));
  const auto began = Clock::now();

  uint64_t sent = 0, stored = 0, duplicates = 0;
  icr::v1::PublishBatchRequest batch;
  bool failed = false, stdout_failed = false;
  int64_t last_at = start;

  // Sends the queued events as one PublishBatch (stored all or none).
  auto flush = [&]() -> bool {
    if (batch.events_size() == 0) return true;
    icr::v1::PublishBatchResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, g);
    grpc::Status st = stub->PublishBatch(&ctx, batch, &response);
    if (!st.ok()) {
      progress.Finish();
      size_t index = 0;
      const std::string& m = st.error_message();
      if (m.rfind("events[", 0) == 0) index = std::strtoul(m.c_str() + 7, nullptr, 10);
      if (index >= static_cast<size_t>(batch.events_size())) index = 0;
      const icr::v1::CareEvent& e = batch.events(static_cast<int>(index));
      Err("simulate: publish failed for event " + WithCommas(sent + index + 1) + " (" +
          EventTypeName(e) + ", sourceMessageId " + e.source_message_id() + ", NHS number " +
          e.nhs_number() + "): " + StatusText(st));
      Err(Advice(st, g, "publish"));
      Err(WithCommas(stored + duplicates) + " event(s) were stored before it; its batch of " +
          WithCommas(static_cast<uint64_t>(batch.events_size())) +
          " was not (a batch is stored all or none). Resend the same events with `" + rerun +
          "`: the broker recognises those it already has");
      failed = true;
      return false;
    }
    for (const auto& r : response.results()) {
      if (r.duplicate()) {
        ++duplicates;
      } else {
        ++stored;
      }
    }
    sent += static_cast<uint64_t>(batch.events_size());
    batch.clear_events();
    return true;
  };

  icr::v1::CareEvent e;
  uint64_t produced = 0;
  while (!stop_flag && sim.Next(&e)) {
    const int64_t due = icr::broker::ToMicros(e.occurred_at());
    last_at = due;
    if (realtime && due > NowMicros()) {
      // Nothing more is due yet: send what is, then wait for this event.
      if (!o.dry_run && !flush()) break;
      while (!stop_flag && due > NowMicros()) {
        const int64_t wait = std::min<int64_t>(due - NowMicros(), 200000);
        std::this_thread::sleep_for(std::chrono::microseconds(std::max<int64_t>(wait, 1000)));
        progress.Update(std::min(NowMicros(), due), start, stop, o.days, o.dry_run ? produced : sent);
      }
      if (stop_flag) break;
    }
    ++produced;
    if (o.dry_run) {
      if (!Out(jsonio::EventToJson(e))) {
        stdout_failed = true;
        break;
      }
      ++sent;
    } else {
      *batch.add_events() = e;
      if (batch.events_size() >= static_cast<int>(o.batch) && !flush()) break;
    }
    progress.Update(due, start, stop, o.days, sent);
  }
  // Events already generated are sent even after Ctrl-C.
  if (!failed && !stdout_failed && !o.dry_run) flush();
  progress.Update(last_at, start, stop, o.days, sent, /*force=*/true);
  progress.Finish();
  SignalWatcher::Get().SetHook(nullptr);
  if (stdout_failed) return StdoutFailed();

  const wf::SimulationStats& s = sim.stats();
  const double secs = std::chrono::duration<double>(Clock::now() - began).count();
  const double rate = secs > 0 ? sent / secs : 0;
  const bool interrupted = stop_flag.load();
  if (g.json && !o.dry_run) {
    nlohmann::ordered_json j = {{"seed", o.seed},
                                {"start", start_text},
                                {"days", o.days},
                                {"rate", o.rate},
                                {"admissions", s.admissions},
                                {"referrals", s.referrals},
                                {"referralsByPathway", s.referrals_by_pathway},
                                {"offers", s.offers},
                                {"declines", s.declines},
                                {"withdrawals", s.withdrawals},
                                {"discharges", s.discharges},
                                {"events", sent},
                                {"stored", stored},
                                {"duplicates", duplicates},
                                {"elapsedSeconds", std::round(secs * 1000) / 1000},
                                {"eventsPerSecond", std::round(rate * 10) / 10},
                                {"interrupted", interrupted},
                                {"failed", failed}};
    if (!Out(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace))) {
      return StdoutFailed();
    }
  } else {
    std::string line =
        std::string(o.dry_run ? "simulated (dry run) " : "simulated ") + std::to_string(o.days) +
        (o.days == 1 ? " day" : " days") + " from " + start_text + " (seed " +
        std::to_string(o.seed) + "): " + WithCommas(s.admissions) + " admissions, " +
        WithCommas(s.referrals) + " referrals (pathway 0/1/2/3: " +
        WithCommas(s.referrals_by_pathway[0]) + "/" + WithCommas(s.referrals_by_pathway[1]) + "/" +
        WithCommas(s.referrals_by_pathway[2]) + "/" + WithCommas(s.referrals_by_pathway[3]) +
        "), " + WithCommas(s.discharges) + " discharges, " + WithCommas(sent) + " events " +
        (o.dry_run ? "written" : "published (" + WithCommas(duplicates) + " duplicates)") + ", " +
        Seconds(secs) + " s, " + WithCommas(static_cast<uint64_t>(rate)) + " events/s";
    // With --dry-run stdout carries the events: the summary goes to stderr.
    if (o.dry_run) {
      Err(line);
    } else if (!Out(line)) {
      return StdoutFailed();
    }
  }
  if (interrupted && !failed) {
    Err("interrupted: the simulation stopped at " + UkTimeString([&] {
          google::protobuf::Timestamp t;
          icr::broker::SetTimestamp(&t, last_at);
          return t;
        }()) + " (UK); generated events up to then were " +
        (o.dry_run ? "written" : "sent"));
  }
  return failed ? kExitFailure : kExitOk;
}

// ---------------------------------------------------------------------------
// Governance: whoami, policy reload, audit, retention, legal-hold
// (icr.v1.Governance; docs/governance.md)
// ---------------------------------------------------------------------------

// `audit verify` exits as diff and cmp do: 0 intact, 1 broken, 2 the check
// could not run (a usage error, or the request failed).
constexpr int kExitVerifyBroken = 1;
constexpr int kExitVerifyNotRun = 2;

std::string EnumValueName(const google::protobuf::EnumDescriptor* d, int value) {
  if (value == 0) return "-";
  const auto* v = d->FindValueByNumber(value);
  return v ? v->name() : std::to_string(value);
}

std::string Hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// Event type names, or "all event types" when the list holds every one.
template <typename Repeated>
std::string EventTypeList(const Repeated& types) {
  if (types.empty()) return "none";
  int all = 0;
  const auto* d = icr::v1::EventType_descriptor();
  for (int i = 0; i < d->value_count(); ++i) all += d->value(i)->number() != 0;
  if (types.size() >= all) return "all event types";
  std::vector<std::string> names;
  for (int t : types) names.push_back(EnumValueName(d, t));
  return Join(names, ", ");
}

// "name  value" rows; a long value wraps at commas onto indented lines.
bool PrintRows(const std::vector<std::pair<std::string, std::string>>& rows, size_t width = 16) {
  constexpr size_t kLine = 100;
  for (const auto& [key, value] : rows) {
    std::string line = Pad(key, width);
    size_t start = 0;
    while (value.size() - start > kLine - width) {
      size_t cut = value.rfind(", ", start + kLine - width);
      if (cut == std::string::npos || cut <= start) break;
      if (!Out(line + value.substr(start, cut + 1 - start))) return false;
      line = std::string(width, ' ');
      start = cut + 2;
    }
    if (!Out(line + value.substr(start))) return false;
  }
  return true;
}

// ----- whoami -----

int RunWhoAmI(const GlobalOptions& g) {
  auto stub = icr::v1::Governance::NewStub(MakeChannel(g));
  icr::v1::WhoAmIResponse r;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->WhoAmI(&ctx, icr::v1::WhoAmIRequest(), &r);
  if (!st.ok()) return ReportRpcFailure("whoami", st, g);
  auto names = [](const google::protobuf::EnumDescriptor* d, const auto& values) {
    std::vector<std::string> out;
    for (int v : values) out.push_back(EnumValueName(d, v));
    return out;
  };
  const std::vector<std::string> purposes = names(icr::v1::Purpose_descriptor(), r.purposes());
  const std::vector<std::string> queries(r.queries().begin(), r.queries().end());
  const std::vector<std::string> orgs(r.publish_source_organisations().begin(),
                                      r.publish_source_organisations().end());
  if (g.json) {
    // Built by hand so that every field is present, false and 0 included.
    nlohmann::ordered_json j = {
        {"broker", g.broker},
        {"principal", r.principal()},
        {"organisation", r.organisation()},
        {"role", r.role()},
        {"profile", r.profile()},
        {"authenticated", r.authenticated()},
        {"publishEventTypes", names(icr::v1::EventType_descriptor(), r.publish_event_types())},
        {"publishSourceOrganisations", orgs},
        {"subscribeEventTypes",
         names(icr::v1::EventType_descriptor(), r.subscribe_event_types())},
        {"purposes", purposes},
        {"queries", queries},
        {"policyVersion", r.policy_version()}};
    return Out(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace))
               ? kExitOk
               : StdoutFailed();
  }
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"broker", g.broker},
      {"principal", r.principal()},
      {"organisation", r.organisation()},
      {"role", r.role()},
      {"profile", r.profile().empty() ? "-" : r.profile()},
      {"authenticated", r.authenticated()
                            ? "yes (client certificate)"
                            : "no (no client certificate: the development profile)"},
      {"publishes", EventTypeList(r.publish_event_types())},
      {"publishes for", r.publish_event_types().empty() || orgs.empty() ? "-"
                        : orgs == std::vector<std::string>{"*"} ? "any organisation"
                                                                : Join(orgs, ", ")},
      {"receives", EventTypeList(r.subscribe_event_types())},
      {"purposes", purposes.empty() ? "none" : Join(purposes, ", ")},
      {"queries", queries.empty() ? "none" : Join(queries, ", ")},
      {"policy version", std::to_string(r.policy_version()) +
                             (r.authenticated() ? "" : " (the built-in development policy)")},
  };
  return PrintRows(rows) ? kExitOk : StdoutFailed();
}

// ----- policy reload -----

int RunPolicyReload(const GlobalOptions& g) {
  auto stub = icr::v1::Governance::NewStub(MakeChannel(g));
  icr::v1::ReloadPolicyResponse r;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->ReloadPolicy(&ctx, icr::v1::ReloadPolicyRequest(), &r);
  if (!st.ok()) {
    Err("policy reload failed: " + StatusText(st));
    const std::string& m = st.error_message();
    if (st.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      Err("the broker was started without --policy (the development profile's built-in "
          "policy), so there is no file to reload; restart it with --policy FILE to use one "
          "(docs/governance.md)");
    } else if (m.find("policy file") != std::string::npos ||
               st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      Err("the broker keeps the policy it had; fix the policy file where the message above "
          "says (file:line and key), then run `icrctl policy reload` again");
    } else {
      Err(Advice(st, g, "policy reload"));
    }
    return kExitFailure;
  }
  if (g.json) {
    nlohmann::ordered_json j = {{"policyVersion", r.policy_version()},
                                {"principals", r.principals()},
                                {"profiles", r.profiles()}};
    return Out(j.dump()) ? kExitOk : StdoutFailed();
  }
  return Out("policy reloaded: version " + std::to_string(r.policy_version()) + ", " +
             std::to_string(r.principals()) + " principal(s), " + std::to_string(r.profiles()) +
             " profile(s)")
             ? kExitOk
             : StdoutFailed();
}

// ----- audit verify -----

int RunAuditVerify(const GlobalOptions& g, bool progress) {
  auto stub = icr::v1::Governance::NewStub(MakeChannel(g));
  // No deadline: a long trail takes a while. Ctrl-C cancels the stream.
  grpc::ClientContext ctx;
  SignalWatcher::Get().SetHook([&ctx] { ctx.TryCancel(); });
  const bool tty = isatty(STDERR_FILENO) != 0;
  StatusLine line(tty || progress, tty);
  auto reader = stub->VerifyAudit(&ctx, icr::v1::VerifyAuditRequest());
  icr::v1::VerifyAuditProgress p;
  std::optional<icr::v1::VerifyAuditProgress> result;
  while (reader->Read(&p)) {
    if (p.done()) {
      result = p;
      continue;
    }
    if (!line.Due(false)) continue;
    const double secs = line.Seconds();
    std::string text = "verifying the audit trail: " + WithCommas(p.checked()) + " of " +
                       WithCommas(p.total()) + " records";
    if (p.total() > 0) {
      const double fraction = std::min(1.0, static_cast<double>(p.checked()) / p.total());
      text += " (" + std::to_string(static_cast<int>(fraction * 100)) + "%";
      if (fraction > 0 && secs > 0.5) text += ", ETA " + Eta(secs * (1 - fraction) / fraction);
      text += ")";
    }
    line.Show(text);
  }
  grpc::Status st = reader->Finish();
  line.Finish();
  SignalWatcher::Get().SetHook(nullptr);
  if (SignalWatcher::Get().interrupted()) {
    Err("interrupted: the audit trail was not checked to the end");
    return kExitVerifyNotRun;
  }
  if (!st.ok()) {
    ReportRpcFailure("audit verify", st, g);
    return kExitVerifyNotRun;
  }
  if (!result) {
    Err("audit verify failed: the broker ended the stream without a result; retry, and if it "
        "persists report it with the broker's log");
    return kExitVerifyNotRun;
  }
  const std::string head = result->head_hash().empty() ? "-" : Hex(result->head_hash());
  if (g.json) {
    nlohmann::ordered_json j = {{"intact", result->intact()}, {"records", result->checked()}};
    if (result->intact()) {
      j["headHash"] = head;
    } else {
      j["firstBadSequence"] = result->first_bad_sequence();
      j["problem"] = result->problem();
    }
    if (!Out(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace))) {
      return StdoutFailed();
    }
  } else if (result->intact()) {
    if (!Out("audit trail intact: " + WithCommas(result->checked()) + " records, head " + head)) {
      return StdoutFailed();
    }
  } else {
    // The problem often starts with "record S: " itself.
    const std::string at = "record " + std::to_string(result->first_bad_sequence()) + ": ";
    std::string problem = result->problem();
    if (problem.rfind(at, 0) == 0) problem.erase(0, at.size());
    if (!Out("audit trail BROKEN at " + at + problem)) return StdoutFailed();
  }
  if (result->intact()) return kExitOk;
  Err("records before " + std::to_string(result->first_bad_sequence()) +
      " link up; from it on the trail was edited, reordered or cut short. Keep the broker's "
      "data directory as it is (a copy is evidence) and tell your information governance "
      "lead (docs/governance.md, the audit trail)");
  return kExitVerifyBroken;
}

// ----- audit who-saw -----

// "3 (12,15,20)": how many events, and their positions (the first few).
std::string EventsCell(const icr::v1::AuditRecord& r) {
  const int n = std::max(r.positions_size(), r.event_ids_size());
  if (n == 0) return "-";
  std::string cell = std::to_string(n);
  if (r.positions_size() == 0) return cell;
  constexpr int kShown = 5;
  std::vector<std::string> shown;
  for (int i = 0; i < r.positions_size() && i < kShown; ++i) {
    shown.push_back(std::to_string(r.positions(i)));
  }
  return cell + " (" + Join(shown, ",") + (r.positions_size() > kShown ? ",..." : "") + ")";
}

int RunWhoSaw(const GlobalOptions& g, const std::string& nhs_in) {
  std::string nhs, error;
  if (!NormaliseNhsNumber(nhs_in, &nhs, &error)) return UsageError(error);
  auto stub = icr::v1::Governance::NewStub(MakeChannel(g));
  icr::v1::WhoSawRequest request;
  request.set_nhs_number(nhs);
  request.set_page_size(1000);
  std::vector<icr::v1::AuditRecord> records;  // for the table (its widths)
  uint64_t count = 0;
  while (true) {
    icr::v1::WhoSawResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, g);
    grpc::Status st = stub->WhoSaw(&ctx, request, &response);
    if (!st.ok()) return ReportRpcFailure("audit who-saw " + nhs, st, g);
    for (auto& r : *response.mutable_records()) {
      ++count;
      if (g.json) {
        if (!Out(jsonio::EventToJson(r))) return StdoutFailed();
      } else {
        records.push_back(std::move(r));
      }
    }
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  if (count == 0) {
    if (!g.json) {
      Err("no audit records about NHS number " + NhsSpaced(nhs) +
          ": the broker has shown nobody this person's events");
    }
    return kExitOk;
  }
  if (g.json) return kExitOk;
  size_t seq_w = 5, principal_w = 11, role_w = 6, org_w = 5, action_w = 8, purpose_w = 9,
         events_w = 8;
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : records) {
    rows.push_back({std::to_string(r.sequence()), TimeString(r.at()),
                    r.principal().empty() ? "-" : r.principal(), r.role().empty() ? "-" : r.role(),
                    r.organisation().empty() ? "-" : r.organisation(),
                    EnumValueName(icr::v1::AuditAction_descriptor(), r.action()),
                    EnumValueName(icr::v1::Purpose_descriptor(), r.purpose()), EventsCell(r),
                    r.detail().empty() ? "-" : r.detail()});
    const auto& c = rows.back();
    seq_w = std::max(seq_w, c[0].size() + 2);
    principal_w = std::max(principal_w, c[2].size() + 2);
    role_w = std::max(role_w, c[3].size() + 2);
    org_w = std::max(org_w, c[4].size() + 2);
    action_w = std::max(action_w, c[5].size() + 2);
    purpose_w = std::max(purpose_w, c[6].size() + 2);
    events_w = std::max(events_w, c[7].size() + 2);
  }
  if (!Out(Pad("SEQ", seq_w) + Pad("AT (UTC)", 22) + Pad("PRINCIPAL", principal_w) +
           Pad("ROLE", role_w) + Pad("ORG", org_w) + Pad("ACTION", action_w) +
           Pad("PURPOSE", purpose_w) + Pad("EVENTS", events_w) + "DETAIL")) {
    return StdoutFailed();
  }
  for (const auto& c : rows) {
    if (!Out(Pad(c[0], seq_w) + Pad(c[1], 22) + Pad(c[2], principal_w) + Pad(c[3], role_w) +
             Pad(c[4], org_w) + Pad(c[5], action_w) + Pad(c[6], purpose_w) +
             Pad(c[7], events_w) + c[8])) {
      return StdoutFailed();
    }
  }
  Err(WithCommas(count) + " audit record(s) about NHS number " + NhsSpaced(nhs) +
      "; --json prints every field (event ids, legal basis, channel)");
  return kExitOk;
}

// ----- retention review, purge -----

struct RetentionOptions {
  std::string as_of;  // empty: now
};

int RunRetention(const GlobalOptions& g, const RetentionOptions& o, bool purge) {
  google::protobuf::Timestamp as_of;
  std::string error;
  if (!o.as_of.empty() && !ParseTimeOption("--as-of", o.as_of, &as_of, &error)) {
    return UsageError(error);
  }
  auto stub = icr::v1::Governance::NewStub(MakeChannel(g));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  const std::string when = o.as_of.empty() ? "now" : TimeString(as_of);
  std::vector<std::pair<std::string, uint64_t>> counts;  // JSON name, value
  std::vector<std::pair<std::string, std::string>> rows;
  if (!purge) {
    icr::v1::ReviewRetentionRequest request;
    if (!o.as_of.empty()) *request.mutable_as_of() = as_of;
    icr::v1::ReviewRetentionResponse r;
    grpc::Status st = stub->ReviewRetention(&ctx, request, &r);
    if (!st.ok()) return ReportRpcFailure("retention review", st, g);
    counts = {{"scanned", r.scanned()},
              {"newlyFlagged", r.newly_flagged()},
              {"flagged", r.flagged()},
              {"onHold", r.on_hold()}};
    rows = {{"as of", when},
            {"events scanned", WithCommas(r.scanned())},
            {"newly flagged", WithCommas(r.newly_flagged())},
            {"flagged in all", WithCommas(r.flagged()) + " (awaiting purge)"},
            {"on legal hold", WithCommas(r.on_hold()) + " (expired, kept)"}};
    if (r.flagged() > 0 && !g.json) {
      Err("flagged events are replaced by metadata stubs by `icrctl retention purge` once the "
          "review period has passed; place a legal hold (`icrctl legal-hold set`) on anyone "
          "whose events must be kept");
    }
  } else {
    icr::v1::PurgeRetentionRequest request;
    if (!o.as_of.empty()) *request.mutable_as_of() = as_of;
    icr::v1::PurgeRetentionResponse r;
    grpc::Status st = stub->PurgeRetention(&ctx, request, &r);
    if (!st.ok()) return ReportRpcFailure("retention purge", st, g);
    counts = {{"purged", r.purged()},
              {"held", r.held()},
              {"awaitingReview", r.awaiting_review()}};
    rows = {{"as of", when},
            {"purged", WithCommas(r.purged()) + " (replaced by metadata stubs)"},
            {"on legal hold", WithCommas(r.held()) + " (flagged, kept)"},
            {"awaiting review", WithCommas(r.awaiting_review()) + " (review period not over)"}};
  }
  if (g.json) {
    nlohmann::ordered_json j;
    if (!o.as_of.empty()) j["asOf"] = TimeString(as_of);
    for (const auto& [k, v] : counts) j[k] = v;
    return Out(j.dump()) ? kExitOk : StdoutFailed();
  }
  return PrintRows(rows) ? kExitOk : StdoutFailed();
}

// ----- legal-hold set, lift -----

struct LegalHoldOptions {
  std::string nhs;
  std::string reason;
};

int RunLegalHold(const GlobalOptions& g, const LegalHoldOptions& o, bool hold) {
  std::string nhs, error;
  if (!NormaliseNhsNumber(o.nhs, &nhs, &error)) return UsageError(error);
  if (hold && o.reason.find_first_not_of(" \t\r\n") == std::string::npos) {
    return UsageError("legal-hold set: --reason TEXT is required: say why the events must be "
                      "kept (e.g. a case or claim reference); it goes into the audit trail");
  }
  auto stub = icr::v1::Governance::NewStub(MakeChannel(g));
  icr::v1::SetLegalHoldRequest request;
  request.set_nhs_number(nhs);
  request.set_hold(hold);
  if (hold) request.set_reason(o.reason);
  icr::v1::SetLegalHoldResponse response;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g);
  grpc::Status st = stub->SetLegalHold(&ctx, request, &response);
  if (!st.ok()) {
    return ReportRpcFailure(std::string(hold ? "legal-hold set " : "legal-hold lift ") + nhs, st,
                            g);
  }
  if (g.json) {
    nlohmann::ordered_json j = {{"nhsNumber", nhs}, {"hold", hold}};
    if (hold) j["reason"] = o.reason;
    return Out(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace))
               ? kExitOk
               : StdoutFailed();
  }
  return Out(hold ? "legal hold placed on " + NhsSpaced(nhs) + ": " + o.reason +
                        " (retention purge keeps this person's events until it is lifted)"
                  : "legal hold lifted from " + NhsSpaced(nhs))
             ? kExitOk
             : StdoutFailed();
}

// ---------------------------------------------------------------------------
// completion bash
// ---------------------------------------------------------------------------

std::string EnumWords(const google::protobuf::EnumDescriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->value_count(); ++i) {
    if (d->value(i)->number() != 0) names.push_back(d->value(i)->name());
  }
  return Join(names, " ");
}

std::vector<std::string> OptionWords(const CLI::App* app) {
  std::vector<std::string> words;
  for (const CLI::Option* opt : app->get_options()) {
    if (opt == app->get_help_ptr() && app->get_parent() != nullptr) continue;  // global has it
    for (const auto& l : opt->get_lnames()) words.push_back("--" + l);
    for (const auto& s : opt->get_snames()) words.push_back("-" + s);
  }
  return words;
}

// Commands with sub-commands (policy, audit, retention, legal-hold) complete
// their sub-commands, then each sub-command's options.
std::string BashCompletion(const CLI::App& app) {
  std::vector<std::string> commands;
  std::string per_command, groups;
  for (const CLI::App* sub : app.get_subcommands({})) {
    std::vector<std::string> names = {sub->get_name()};
    for (const auto& a : sub->get_aliases()) names.push_back(a);
    for (const auto& n : names) commands.push_back(n);
    const std::vector<const CLI::App*> children = sub->get_subcommands({});
    if (children.empty()) {
      std::vector<std::string> patterns;
      for (const auto& n : names) patterns.push_back("\"" + n + "/\"");
      std::string words = Join(OptionWords(sub), " ");
      per_command += "    " + Join(patterns, "|") + ") words=\"" +
                     (sub->get_name() == "completion" ? std::string("bash") : words + " $global") +
                     "\" ;;\n";
      continue;
    }
    std::vector<std::string> child_names;
    for (const CLI::App* child : children) {
      child_names.push_back(child->get_name());
      per_command += "    \"" + sub->get_name() + "/" + child->get_name() + "\") words=\"" +
                     Join(OptionWords(child), " ") + " $global\" ;;\n";
    }
    per_command += "    \"" + sub->get_name() + "/\") words=\"" + Join(child_names, " ") + "\" ;;\n";
    groups += "          " + sub->get_name() + ") subs=\"" + Join(child_names, " ") + "\" ;;\n";
  }
  const std::string global = Join(OptionWords(&app), " ");
  std::string s;
  s += "# bash completion for icrctl. Install:\n";
  s += "#   icrctl completion bash > ~/.local/share/bash-completion/completions/icrctl\n";
  s += "# or for this shell only:  source <(icrctl completion bash)\n";
  s += "_icrctl() {\n";
  s += "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n";
  s += "  local commands=\"" + Join(commands, " ") + "\"\n";
  s += "  local global=\"" + global + "\"\n";
  s += "  local cmd=\"\" sub=\"\" subs=\"\" i w words\n";
  s += "  for ((i = 1; i < COMP_CWORD; i++)); do\n";
  s += "    w=\"${COMP_WORDS[i]}\"\n";
  s += "    if [[ -z \"$cmd\" ]]; then\n";
  s += "      case \" $commands \" in *\" $w \"*)\n";
  s += "        cmd=\"$w\"\n";
  s += "        case \"$cmd\" in\n";
  s += groups;
  s += "        esac ;;\n";
  s += "      esac\n";
  s += "    elif [[ -n \"$subs\" && -z \"$sub\" ]]; then\n";
  s += "      case \" $subs \" in *\" $w \"*) sub=\"$w\" ;; esac\n";
  s += "    fi\n";
  s += "  done\n";
  s += "  case \"$prev\" in\n";
  s += "    --type) COMPREPLY=($(compgen -W \"" + EnumWords(icr::v1::EventType_descriptor()) +
       "\" -- \"$cur\")); return ;;\n";
  s += "    --setting) COMPREPLY=($(compgen -W \"" + EnumWords(icr::v1::CareSetting_descriptor()) +
       "\" -- \"$cur\")); return ;;\n";
  s += "    --priority) COMPREPLY=($(compgen -W \"" + EnumWords(icr::v1::Priority_descriptor()) +
       "\" -- \"$cur\")); return ;;\n";
  s += "    --purpose) COMPREPLY=($(compgen -W \"" + EnumWords(icr::v1::Purpose_descriptor()) +
       "\" -- \"$cur\")); return ;;\n";
  s += "    --file|-f|--mapping|--errors|--tls-ca|--tls-cert|--tls-key) "
       "COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n";
  s += "    --format) COMPREPLY=($(compgen -W \"csv\" -- \"$cur\")); return ;;\n";
  s += "    --rate) COMPREPLY=($(compgen -W \"fast realtime\" -- \"$cur\")); return ;;\n";
  s += "    --scenario) COMPREPLY=($(compgen -W \"coventry-2022\" -- \"$cur\")); return ;;\n";
  s += "    --place) COMPREPLY=($(compgen -W \"coventry rugby warwickshire-north "
       "south-warwickshire\" -- \"$cur\")); return ;;\n";
  s += "    --from) [[ \"$cmd\" == tail || \"$cmd\" == subscribe ]] && "
       "COMPREPLY=($(compgen -W \"latest earliest\" -- \"$cur\")); return ;;\n";
  s += "    --broker|--timeout|--batch|--name|--org|--addressee|--nhs|--count|--to|--limit|"
       "--top|--seed|--days|--start|--admissions-per-day|--as-of|--reason|--legal-basis) "
       "return ;;\n";
  s += "  esac\n";
  s += "  case \"$cmd/$sub\" in\n";
  s += "    \"/\") words=\"$commands $global\" ;;\n";
  s += per_command;
  s += "    *) words=\"$global\" ;;\n";
  s += "  esac\n";
  s += "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n";
  s += "}\n";
  s += "complete -F _icrctl icrctl\n";
  return s;
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

int Main(int argc, char** argv) {
  // gRPC's own error log lines (e.g. "Handshake failed ...") repeat what
  // icrctl reports with the next step; GRPC_VERBOSITY set by the user wins.
  setenv("GRPC_VERBOSITY", "NONE", /*overwrite=*/0);
  GlobalOptions g;
  if (const char* env = std::getenv("ICR_BROKER"); env != nullptr && *env != '\0') g.broker = env;
  if (const char* env = std::getenv("ICR_TLS_CA"); env != nullptr && *env != '\0') g.tls_ca = env;
  if (const char* env = std::getenv("ICR_TLS_CERT"); env != nullptr && *env != '\0') {
    g.tls_cert = env;
  }
  if (const char* env = std::getenv("ICR_TLS_KEY"); env != nullptr && *env != '\0') g.tls_key = env;

  CLI::App app{"icrctl: command-line client of the ICR care-event broker", "icrctl"};
  app.set_version_flag("--version", std::string("icrctl ") + ICR_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the command
  app.add_option("--broker", g.broker,
                 "Broker address host:port (default 127.0.0.1:50051; env ICR_BROKER sets the "
                 "default)")
      ->type_name("HOST:PORT");
  app.add_option("--timeout", g.timeout_s, "Seconds to wait for each request (default 10)")
      ->check(CLI::Range(0.1, 86400.0))
      ->type_name("SECONDS");
  app.add_flag("--json", g.json, "Print JSON lines instead of tables");
  app.add_option("--tls-ca", g.tls_ca,
                 "Connect over TLS, trusting the broker's certificate if this PEM CA "
                 "certificate signed it (env ICR_TLS_CA)")
      ->type_name("FILE");
  app.add_option("--tls-cert", g.tls_cert,
                 "PEM client certificate for mutual TLS: its CN is your principal in the "
                 "broker's policy (env ICR_TLS_CERT; needs --tls-ca and --tls-key)")
      ->type_name("FILE");
  app.add_option("--tls-key", g.tls_key, "PEM private key of --tls-cert (env ICR_TLS_KEY)")
      ->type_name("FILE");

  PublishOptions p;
  auto* publish = app.add_subcommand(
      "publish", "Publish events from a file or stdin: JSON Lines, one JSON object, or a JSON "
                 "array. Prints one JSON line per event stored");
  publish->add_option("--file,-f", p.file, "Read events from this file (default: stdin; - for "
                                           "stdin)")
      ->type_name("FILE");
  publish->add_option("--batch", p.batch,
                      "Send N events per PublishStream request (each request is stored "
                      "atomically); 1 = one Publish call per event")
      ->check(CLI::Range(size_t{1}, size_t{10000}))
      ->type_name("N");

  ImportOptions im;
  auto* import_cmd = app.add_subcommand(
      "import",
      "Import a CSV export (care packages, assessments, ...) as BULK events, as a "
      "mapping file says; rejected rows go to an error report (docs/adapters/csv.md)");
  import_cmd->add_option("data", im.file, "The CSV file, with a header row (- for stdin)")
      ->required()
      ->type_name("FILE.csv");
  import_cmd->add_option("--format", im.format, "Input format: csv (the only one for now)")
      ->check(CLI::IsMember({"csv"}))
      ->type_name("csv");
  import_cmd
      ->add_option("--mapping", im.mapping,
                   "Mapping file (JSON): event type, column for "
                   "each field, constants, date formats")
      ->required()
      ->type_name("FILE");
  import_cmd
      ->add_option("--batch", im.batch,
                   "Events per PublishStream request (default 500; "
                   "each request is stored atomically, 4 in flight)")
      ->check(CLI::Range(size_t{1}, size_t{10000}))
      ->type_name("N");
  import_cmd
      ->add_option("--errors", im.errors,
                   "Error report to write (default: DATA.errors.csv; "
                   "removed when no row is rejected)")
      ->type_name("FILE");
  import_cmd->add_flag("--dry-run", im.dry_run,
                       "Read and map every row, write the error report, "
                       "send nothing");
  import_cmd->add_flag("--progress", im.progress,
                       "Show progress on stderr even when it is not a "
                       "terminal (a line a second)");

  TailOptions t;
  auto* tail = app.add_subcommand("tail", "Subscribe and print matching events as JSON lines "
                                          "until Ctrl-C (or --count)");
  tail->alias("subscribe");
  tail->add_option("--name", t.name, "Durable subscription name: the broker keeps a cursor; "
                                     "printed events are acknowledged")
      ->type_name("NAME");
  tail->add_option("--from", t.from,
                   "Where to start: latest (default), earliest, a position, or an RFC 3339 time "
                   "(ignored when the durable subscription exists: it resumes from its cursor)")
      ->type_name("latest|earliest|POSITION|TIME");
  auto multi = [](CLI::Option* o) { return o->delimiter(',')->allow_extra_args(false); };
  multi(tail->add_option("--type", t.types, "Only these event types, e.g. DISCHARGE_REFERRAL "
                                            "(repeat or comma-separate)"))
      ->type_name("TYPE");
  multi(tail->add_option("--setting", t.settings, "Only from these care settings, e.g. ACUTE"))
      ->type_name("SETTING");
  multi(tail->add_option("--org", t.orgs, "Only from these source organisations (ODS codes)"))
      ->type_name("ODS");
  multi(tail->add_option("--addressee", t.addressees,
                         "Only events addressed to ORG or ORG/TEAM, e.g. CCC/HSCT-UHCW"))
      ->type_name("ORG[/TEAM]");
  multi(tail->add_option("--nhs", t.nhs, "Only events about these NHS numbers"))
      ->type_name("NHS_NUMBER");
  multi(tail->add_option("--priority", t.priorities, "Only these priorities: URGENT, ROUTINE, "
                                                     "BULK"))
      ->type_name("PRIORITY");
  tail->add_option("--count", t.count, "Exit after N events")->type_name("N");
  tail->add_flag("--no-ack", t.no_ack, "Durable subscriptions: do not acknowledge (events "
                                       "will be delivered again)");
  tail->add_flag("--heartbeats", t.heartbeats, "Also print heartbeats as {\"heartbeat\":...}");
  tail->add_option("--purpose", t.purpose,
                   "Why you receive the events (audited with every delivery): DIRECT_CARE "
                   "(default), SERVICE_PLANNING, RESEARCH or SERVICE_EVALUATION; beyond direct "
                   "care, people with a sharing objection or national data opt-out are left out")
      ->type_name("PURPOSE");
  tail->add_option("--legal-basis", t.legal_basis,
                   "The legal basis for --purpose, e.g. \"UK GDPR 6(1)(e), 9(2)(h)\" "
                   "(default: your principal's, from the policy)")
      ->type_name("TEXT");

  HistoryOptions h;
  auto* history = app.add_subcommand("history", "A person's stored events, oldest first");
  history->add_option("nhs-number", h.nhs, "NHS number (10 digits, spaces allowed)")
      ->required();
  multi(history->add_option("--type", h.types, "Only these event types (repeatable)"))
      ->type_name("TYPE");
  history->add_option("--from", h.from, "Only events that occurred at or after this time "
                                        "(RFC 3339 or YYYY-MM-DD)")
      ->type_name("TIME");
  history->add_option("--to", h.to, "Only events that occurred before this time")
      ->type_name("TIME");
  history->add_option("--limit", h.limit, "At most N events (default: all)")->type_name("N");
  history->add_option("--purpose", h.purpose,
                      "Why you read the history (audited): DIRECT_CARE (default), "
                      "SERVICE_PLANNING, RESEARCH or SERVICE_EVALUATION; beyond direct care it "
                      "is refused for a person with a sharing objection or national data opt-out")
      ->type_name("PURPOSE");

  FlowOptions fl;
  auto* flow = app.add_subcommand(
      "flow", "Discharge flow metrics per pathway over a period (Workflow/GetFlowMetrics): "
              "minutes to brokerage, days to an offer and to discharge, weekend ratio, people "
              "waiting, open escalations");
  flow->add_option("--from", fl.from, "First UK date of the period")
      ->required()
      ->type_name("YYYY-MM-DD");
  flow->add_option("--to", fl.to, "Last UK date of the period (inclusive)")
      ->required()
      ->type_name("YYYY-MM-DD");
  flow->add_option("--place", fl.place,
                   "Only this Place: coventry, rugby, warwickshire-north or south-warwickshire "
                   "(default: all)")
      ->type_name("PLACE");
  flow->add_option("--top", fl.top, "Awaiting-discharge rows shown in the table (default 20)")
      ->check(CLI::Range(0u, 100000u))
      ->type_name("N");

  SimulateOptions sm;
  auto* simulate = app.add_subcommand(
      "simulate", "Publish a simulated Coventry & Warwickshire event stream (admissions, "
                  "discharge referrals on pathways 0-3, brokerage, discharges), seeded and "
                  "repeatable; test-range NHS numbers only");
  simulate->add_option("--seed", sm.seed, "Seed of every random choice (default 1)")
      ->type_name("N");
  simulate->add_option("--days", sm.days, "Days of admissions (default 1)")
      ->check(CLI::Range(1, 3650))
      ->type_name("D");
  simulate->add_option("--start", sm.start,
                       "Start: a UK date (its midnight) or an RFC 3339 time (default: now minus "
                       "--days with --rate fast, now with --rate realtime)")
      ->type_name("YYYY-MM-DD|TIME");
  simulate->add_option("--rate", sm.rate,
                       "fast: publish as fast as the broker takes it (all events in the past); "
                       "realtime: publish each event at its occurred_at (default fast)")
      ->check(CLI::IsMember({"fast", "realtime"}))
      ->type_name("fast|realtime");
  simulate->add_option("--admissions-per-day", sm.admissions_per_day,
                       "Mean admissions a day over the four sites (default 260)")
      ->check(CLI::Range(1.0, 100000.0))
      ->type_name("N");
  simulate->add_option("--batch", sm.batch,
                       "Events per PublishBatch request (default 500; each is stored all or "
                       "none)")
      ->check(CLI::Range(size_t{1}, size_t{10000}))
      ->type_name("N");
  simulate->add_option("--scenario", sm.scenario,
                       "Instead of a simulation, publish the exact Coventry 2022/23 flow table "
                       "(23/05-26/06 and 27/06-31/07/2022, pathways 1 and 2; docs/icrctl.md)")
      ->check(CLI::IsMember({"coventry-2022"}))
      ->type_name("coventry-2022");
  simulate->add_flag("--dry-run", sm.dry_run,
                     "Print the events as JSON Lines on stdout instead of publishing them");
  simulate->add_flag("--progress", sm.progress,
                     "Show progress on stderr even when it is not a terminal (a line a second)");

  auto* status = app.add_subcommand("status", "Broker health, version, positions and counts");
  auto* subscriptions = app.add_subcommand("subscriptions", "Durable subscriptions: cursor, "
                                                            "lag, parked events");

  SubscriptionOptions o;
  auto* parked = app.add_subcommand("parked", "Parked events of a durable subscription, "
                                              "oldest first");
  parked->add_option("name", o.name, "Subscription name")->required();
  parked->add_option("--limit", o.limit, "At most N (default 100, at most 1000)")
      ->check(CLI::Range(1u, 1000u))
      ->type_name("N");
  auto* replay = app.add_subcommand("replay", "Put parked events back for delivery");
  replay->add_option("name", o.name, "Subscription name")->required();
  replay->add_option("positions", o.positions, "Positions to replay (default: all parked)");
  auto* del = app.add_subcommand("delete-subscription",
                                 "Delete a durable subscription and its cursor");
  del->add_option("name", o.name, "Subscription name")->required();

  // Information governance (icr.v1.Governance; docs/governance.md).
  auto* whoami = app.add_subcommand(
      "whoami", "Who the broker takes you to be (principal, organisation, role, minimisation "
                "profile) and what its policy grants you: event types, purposes, queries");
  auto* policy = app.add_subcommand("policy", "The broker's access policy: policy reload");
  policy->require_subcommand(1);
  auto* policy_reload = policy->add_subcommand(
      "reload", "Make the broker re-read its policy file (as SIGHUP does). A policy with an "
                "error is refused, naming file:line and key, and the old one stays in force");
  auto* audit = app.add_subcommand(
      "audit", "The audit trail: audit verify (its hash chain), audit who-saw (subject access)");
  audit->require_subcommand(1);
  bool verify_progress = false;
  auto* audit_verify = audit->add_subcommand(
      "verify", "Check the audit trail's hash chain from the first record to the head. Exit "
                "0: intact; 1: broken (the first bad record is named); 2: could not check");
  audit_verify->add_flag("--progress", verify_progress,
                         "Show progress on stderr even when it is not a terminal (a line a "
                         "second)");
  std::string who_saw_nhs;
  auto* who_saw = audit->add_subcommand(
      "who-saw", "Every audit record about one person, oldest first: who was shown or touched "
                 "their events, when, in which role and organisation, for what purpose, and "
                 "what was refused. This answers a subject access request (UK GDPR Article 15) "
                 "for the broker's part");
  who_saw->add_option("nhs-number", who_saw_nhs, "NHS number (10 digits, spaces allowed)")
      ->required();
  RetentionOptions ro;
  auto* retention = app.add_subcommand(
      "retention", "Retention of events (docs/governance.md): retention review, retention purge");
  retention->require_subcommand(1);
  auto* retention_review = retention->add_subcommand(
      "review", "Flag events past their retention period for review (audited) and print the "
                "counts");
  retention_review->add_option("--as-of", ro.as_of,
                               "Judge expiry at this time instead of now (RFC 3339 or "
                               "YYYY-MM-DD)")
      ->type_name("TIME");
  auto* retention_purge = retention->add_subcommand(
      "purge", "Replace flagged events whose review period has passed by metadata stubs, "
               "except for people under legal hold (audited); print the counts");
  retention_purge->add_option("--as-of", ro.as_of,
                              "Judge the review period at this time instead of now")
      ->type_name("TIME");
  LegalHoldOptions lh;
  auto* legal_hold = app.add_subcommand(
      "legal-hold", "Keep a person's events from retention purge: legal-hold set, legal-hold "
                    "lift (both audited)");
  legal_hold->require_subcommand(1);
  auto* hold_set = legal_hold->add_subcommand(
      "set", "Place a legal hold on a person's events: retention purge keeps them until lifted");
  hold_set->add_option("nhs-number", lh.nhs, "NHS number (10 digits, spaces allowed)")
      ->required();
  hold_set->add_option("--reason", lh.reason,
                       "Why the events must be kept, e.g. a case or claim reference "
                       "(required; recorded in the audit trail)")
      ->type_name("TEXT");
  auto* hold_lift = legal_hold->add_subcommand("lift", "Lift a person's legal hold");
  hold_lift->add_option("nhs-number", lh.nhs, "NHS number (10 digits, spaces allowed)")
      ->required();

  std::string shell;
  auto* completion = app.add_subcommand("completion", "Print a shell completion script");
  completion->add_option("shell", shell, "Shell: bash")
      ->required()
      ->check(CLI::IsMember({"bash"}));

  app.footer(
      "Examples:\n"
      "  icrctl publish --file docs/examples/events.jsonl\n"
      "  icrctl import --mapping care-packages.mapping.json care-packages.csv\n"
      "  icrctl tail --type DISCHARGE_REFERRAL --addressee CCC/HSCT-UHCW --from earliest\n"
      "  icrctl history 9997654323\n"
      "  icrctl flow --from 2022-05-23 --to 2022-06-26 --place coventry\n"
      "  icrctl simulate --seed 7 --days 3\n"
      "  icrctl status\n"
      "  icrctl whoami\n"
      "  icrctl audit who-saw 9990000018\n"
      "  icrctl --tls-ca ca.pem --tls-cert icr-operator.pem --tls-key icr-operator.key "
      "audit verify\n"
      "Exit status: 0 success, 1 a request or input failed, 2 a usage error;\n"
      "audit verify: 0 intact, 1 broken, 2 the check could not run.\n"
      "Docs: docs/icrctl.md");

  try {
    app.parse(argc, argv);
  } catch (const CLI::RequiredError& e) {
    // "icrctl bogus": say the command is unknown rather than "required".
    const std::vector<std::string> rest = app.remaining();
    if (app.get_subcommands().empty() && !rest.empty() && rest.front()[0] != '-') {
      Err("unknown command \"" + rest.front() + "\"; run `icrctl --help` to list the commands");
      return kExitUsage;
    }
    // "icrctl audit" without verify or who-saw.
    for (const CLI::App* group : {policy, audit, retention, legal_hold}) {
      if (!group->parsed() || !group->get_subcommands().empty()) continue;
      std::vector<std::string> names;
      for (const CLI::App* c : group->get_subcommands({})) names.push_back(c->get_name());
      const std::string given = !rest.empty() && rest.front()[0] != '-'
                                    ? "unknown command \"" + rest.front() + "\"; "
                                    : "";
      Err(group->get_name() + ": " + given + "give one of its commands: " + Join(names, ", ") +
          "; see `icrctl " + group->get_name() + " --help`");
      return kExitUsage;
    }
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (completion->parsed()) {
    std::cout << BashCompletion(app);
    return kExitOk;
  }
  if (g.broker.empty()) return UsageError("--broker: give the broker's host:port");
  if (std::string error; !LoadTlsFiles(&g, &error)) return UsageError(error);

  SignalWatcher::Get().Start();
  if (publish->parsed()) return RunPublish(g, p);
  if (import_cmd->parsed()) return RunImport(g, im);
  if (tail->parsed()) return RunTail(g, t);
  if (history->parsed()) return RunHistory(g, h);
  if (flow->parsed()) return RunFlow(g, fl);
  if (simulate->parsed()) return RunSimulate(g, sm);
  if (status->parsed()) return RunStatus(g);
  if (subscriptions->parsed()) return RunSubscriptions(g);
  if (parked->parsed()) return RunParked(g, o);
  if (replay->parsed()) return RunReplay(g, o);
  if (del->parsed()) return RunDeleteSubscription(g, o);
  if (whoami->parsed()) return RunWhoAmI(g);
  if (policy_reload->parsed()) return RunPolicyReload(g);
  if (audit_verify->parsed()) return RunAuditVerify(g, verify_progress);
  if (who_saw->parsed()) return RunWhoSaw(g, who_saw_nhs);
  if (retention_review->parsed()) return RunRetention(g, ro, /*purge=*/false);
  if (retention_purge->parsed()) return RunRetention(g, ro, /*purge=*/true);
  if (hold_set->parsed()) return RunLegalHold(g, lh, /*hold=*/true);
  if (hold_lift->parsed()) return RunLegalHold(g, lh, /*hold=*/false);
  return UsageError("no command given");
}

}  // namespace
}  // namespace icr::ctl

int main(int argc, char** argv) { return icr::ctl::Main(argc, argv); }
