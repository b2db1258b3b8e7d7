// FhirServer: HTTP/1.1 on Boost.Beast; see fhir_server.h.
//
// One Session per connection, on its own strand. A request is read whole
// (headers, then the body up to max_body_bytes, under one read timeout),
// routed, mapped (fhir_mapping.h) and published through broker::Ingest. The
// Ingest callback runs on the store's writer thread (or inline for a
// validation failure); it only posts the answer back to the session's
// strand, so the writer thread never waits for a client.
//
// Stop: close the acceptor, close connections that are waiting for a request,
// let the ones processing a request answer it (then close), wait for all
// sessions to end (up to drain_timeout_ms), stop the threads.
#include "adapters/fhir/fhir_server.h"

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "adapters/fhir/fhir_mapping.h"
#include "adapters/fhir/operation_outcome.h"
#include "adapters/fhir/resthook.h"
#include "broker/access.h"
#include "broker/identity.h"
#include "broker/ingest.h"
#include "broker/tls.h"

#ifndef ICR_VERSION
#define ICR_VERSION "dev"
#endif

namespace icr::adapters::fhir {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

using Response = http::response<http::string_body>;
using std::chrono::milliseconds;

constexpr char kFhirJson[] = "application/fhir+json; charset=utf-8";
constexpr size_t kHeaderLimit = 16 * 1024;
// After an error answer that closes the connection, unread request bytes
// are read and dropped for this long (at most kLingerBytes), so the close
// does not reset the connection before the client has read the answer.
constexpr milliseconds kLinger{1000};
constexpr size_t kLingerBytes = size_t{8} << 20;

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view View(beast::string_view s) { return {s.data(), s.size()}; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

OutcomeIssue Issue(IssueType code, std::string diagnostics, std::string expression = "") {
  OutcomeIssue i;
  i.severity = IssueSeverity::kError;
  i.code = code;
  i.diagnostics = std::move(diagnostics);
  i.expression = std::move(expression);
  return i;
}

// Empty when the Content-Type is FHIR JSON (application/fhir+json or
// application/json, charset utf-8 if given); else why not.
std::string MediaTypeProblem(std::string_view content_type) {
  if (Trim(content_type).empty()) {
    return "Content-Type header: is required (application/fhir+json)";
  }
  std::string_view rest = content_type;
  std::string type = Lower(Trim(rest.substr(0, rest.find(';'))));
  if (type.find("xml") != std::string::npos) {
    return "Content-Type header: " + type +
           ": XML is not accepted; send FHIR JSON (application/fhir+json)";
  }
  if (type != "application/fhir+json" && type != "application/json") {
    return "Content-Type header: " + type +
           " is not accepted; send FHIR JSON (application/fhir+json or application/json)";
  }
  while (rest.find(';') != std::string_view::npos) {
    rest = rest.substr(rest.find(';') + 1);
    std::string param = Lower(Trim(rest.substr(0, rest.find(';'))));
    if (param.rfind("charset=", 0) == 0) {
      std::string charset = param.substr(8);
      if (charset.size() >= 2 && charset.front() == '"' && charset.back() == '"') {
        charset = charset.substr(1, charset.size() - 2);
      }
      if (charset != "utf-8" && charset != "utf8") {
        return "Content-Type header: charset " + charset + " is not accepted (UTF-8 only)";
      }
    }
  }
  return {};
}

std::string EventTypeName(const icr::v1::CareEvent& e) {
  return icr::v1::EventType_Name(static_cast<icr::v1::EventType>(e.payload_case()));
}

// "YYYY-MM-DD" of today (UTC).
std::string Today() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

std::string CapabilityStatementJson() {
  using nlohmann::json;
  json resources = json::array();
  for (const char* type : {"Patient", "Encounter", "ServiceRequest", "Task"}) {
    resources.push_back({{"type", type},
                         {"interaction", json::array({{{"code", "create"}}})},
                         {"documentation", std::string("POST /fhir/r4/") + type +
                                               "; mapped to care events (docs/adapters/fhir.md)"}});
  }
  json cs = {
      {"resourceType", "CapabilityStatement"},
      {"status", "active"},
      {"date", Today()},
      {"publisher", "ICR Broker"},
      {"kind", "instance"},
      {"software", {{"name", "ICR Broker"}, {"version", ICR_VERSION}}},
      {"implementation",
       {{"description",
         "ICR Broker FHIR R4 inbound adapter: records care events from Patient, Encounter, "
         "ServiceRequest and Task (create only; no read or search)"}}},
      {"fhirVersion", "4.0.1"},
      {"format", json::array({"application/fhir+json", "application/json"})},
      {"rest",
       json::array(
           {{{"mode", "server"},
             {"documentation",
              "Headers X-ICR-Source-System and X-ICR-Source-Organisation identify the "
              "sender (a message Bundle's MessageHeader may supply them instead); "
              "X-ICR-Care-Setting is optional. A resend of the same resource version "
              "or Bundle stores nothing new and is answered 200 with the original "
              "position."},
             {"resource", resources},
             {"interaction", json::array({{{"code", "transaction"}}, {{"code", "batch"}}})}}})},
      {"messaging",
       json::array({{{"documentation",
                      "Message Bundles (Bundle.type = message, MessageHeader first) POSTed to "
                      "/fhir/r4 are stored atomically; the answer is a transaction-response "
                      "Bundle."}}})},
  };
  return cs.dump();
}

// A connection's byte stream: plain TCP, or TLS over it. Either way it is the
// AsyncReadStream / AsyncWriteStream Beast's HTTP functions need, with the
// TCP stream's timeouts (which also bound the TLS handshake).
class FhirStream {
 public:
  using executor_type = beast::tcp_stream::executor_type;
  using TlsStream = beast::ssl_stream<beast::tcp_stream>;

  // `tls`: nullptr for plain HTTP.
  FhirStream(tcp::socket socket, net::ssl::context* tls) {
    if (tls != nullptr) {
      tls_.emplace(std::move(socket), *tls);
    } else {
      plain_.emplace(std::move(socket));
    }
  }

  executor_type get_executor() { return lowest().get_executor(); }
  beast::tcp_stream& lowest() { return tls_ ? tls_->next_layer() : *plain_; }
  TlsStream* tls() { return tls_ ? &*tls_ : nullptr; }
  tcp::socket& socket() { return lowest().socket(); }
  void expires_after(milliseconds d) { lowest().expires_after(d); }
  void expires_never() { lowest().expires_never(); }
  void close() { lowest().close(); }

  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_read_some(buffers, std::forward<Handler>(handler));
    }
  }

  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

 private:
  std::optional<beast::tcp_stream> plain_;
  std::optional<TlsStream> tls_;
};

std::string PeerAddress(const tcp::socket& socket) {
  beast::error_code ec;
  const tcp::endpoint remote = socket.remote_endpoint(ec);
  if (ec) return {};
  const std::string address = remote.address().to_string();
  return (remote.address().is_v6() ? "[" + address + "]" : address) + ":" +
         std::to_string(remote.port());
}

struct PublishOutcome {
  store::Status status;
  std::vector<store::AppendResult> results;
};

}  // namespace

class FhirHttpSession;

struct FhirServer::Core {
  FhirOptions options;
  broker::Ingest* ingest = nullptr;
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer accept_retry{ioc};
  std::vector<std::thread> threads;
  int port = 0;
  std::string capability;
  std::unique_ptr<net::ssl::context> tls;  // nullptr: plain HTTP

  std::mutex mu;
  std::condition_variable cv;
  std::map<FhirHttpSession*, std::weak_ptr<FhirHttpSession>> sessions;  // guarded by mu
  bool stopping = false;                                                // guarded by mu
  bool stopped = false;  // I/O threads stopped; guarded by mu
};

using Core = FhirServer::Core;

// One connection (see the file comment).
class FhirHttpSession : public std::enable_shared_from_this<FhirHttpSession> {
 public:
  FhirHttpSession(tcp::socket socket, std::shared_ptr<Core> core)
      : core_(std::move(core)),
        identity_(broker::IdentityFromCertificate(nullptr, PeerAddress(socket), "fhir")),
        stream_(std::move(socket), core_->tls.get()) {}

  ~FhirHttpSession() {
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->sessions.erase(this);
    core_->cv.notify_all();
  }

  FhirHttpSession(const FhirHttpSession&) = delete;
  FhirHttpSession& operator=(const FhirHttpSession&) = delete;

  void Start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (self->stream_.tls() == nullptr) return self->ReadRequest();
      self->Handshake();
    });
  }

  // The server is stopping: close now if waiting for a request, else after
  // answering the one in progress.
  void RequestStop() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      self->stop_requested_ = true;
      if (self->reading_) self->Close();
    });
  }

  // Only when no I/O thread runs: end pending operations.
  void ForceClose() {
    beast::error_code ec;
    stream_.socket().close(ec);
  }

 private:
  const FhirOptions& options() const { return core_->options; }

  // TLS: the handshake (client certificate verified by OpenSSL when the
  // listener has a client CA), under the read timeout; then the identity.
  void Handshake() {
    reading_ = true;  // Stop closes a connection still shaking hands
    stream_.expires_after(milliseconds(options().read_timeout_ms));
    stream_.tls()->async_handshake(
        net::ssl::stream_base::server, [self = shared_from_this()](beast::error_code ec) {
          self->reading_ = false;
          if (ec) return self->Close();
          SSL* ssl = self->stream_.tls()->native_handle();
          X509* cert = SSL_get0_peer_certificate(ssl);
          if (cert != nullptr && SSL_get_verify_result(ssl) == X509_V_OK &&
              !self->options().tls_client_ca_file.empty()) {
            self->identity_ = broker::IdentityFromCertificate(cert, self->identity_.peer, "fhir");
          }
          self->ReadRequest();
        });
  }

  void ReadRequest() {
    if (stop_requested_) return Close();
    parser_.emplace();
    parser_->body_limit(options().max_body_bytes);
    parser_->header_limit(kHeaderLimit);
    reading_ = true;
    stream_.expires_after(milliseconds(options().read_timeout_ms));
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&FhirHttpSession::OnHeader, shared_from_this()));
  }

  void OnHeader(beast::error_code ec, size_t) {
    if (ec) return OnReadError(ec);
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                     req.version());
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code ec, size_t) {
                          if (ec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&FhirHttpSession::OnBody, shared_from_this()));
  }

  void OnBody(beast::error_code ec, size_t) {
    if (ec) return OnReadError(ec);
    reading_ = false;
    stream_.expires_never();
    Handle();
  }

  void OnReadError(beast::error_code ec) {
    reading_ = false;
    keep_alive_ = false;
    version_ = parser_ && parser_->is_header_done() ? parser_->get().version() : 11;
    if (ec == http::error::body_limit) {
      return Fail(http::status::payload_too_large,
                  {Issue(IssueType::kTooLong, "the request body is larger than the limit of " +
                                                  std::to_string(options().max_body_bytes) +
                                                  " bytes; send fewer resources per request")});
    }
    if (ec == http::error::header_limit) {
      return Fail(http::status::request_header_fields_too_large,
                  {Issue(IssueType::kTooLong, "the request headers are larger than " +
                                                  std::to_string(kHeaderLimit) + " bytes")});
    }
    const bool transport =
        ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == http::error::partial_message ||
        ec.category() != http::make_error_code(http::error::bad_method).category();
    if (transport) return Close();
    Fail(http::status::bad_request,
         {Issue(IssueType::kStructure, "malformed HTTP request: " + ec.message())});
  }

  // --- routing ----------------------------------------------------------------

  void Handle() {
    const auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    std::string_view target(req.target().data(), req.target().size());
    std::string_view path = target.substr(0, target.find('?'));
    const bool is_post = req.method() == http::verb::post;

    if (path == "/fhir/r4/metadata") {
      if (req.method() != http::verb::get) return MethodNotAllowed("GET");
      Response res{http::status::ok, version_};
      res.set(http::field::content_type, kFhirJson);
      res.body() = core_->capability;
      return Send(std::move(res));
    }
    if (path == "/fhir/r4/Subscription" || path.rfind("/fhir/r4/Subscription/", 0) == 0) {
      return HandleSubscription(req, path);
    }
    std::string endpoint_type;
    if (path == "/fhir/r4" || path == "/fhir/r4/") {
      endpoint_type = "";
    } else if (path.rfind("/fhir/r4/", 0) == 0 &&
               (path.substr(9) == "Patient" || path.substr(9) == "Encounter" ||
                path.substr(9) == "ServiceRequest" || path.substr(9) == "Task")) {
      endpoint_type = std::string(path.substr(9));
    } else {
      return Fail(http::status::not_found,
                  {Issue(IssueType::kNotFound,
                         "no endpoint at " + std::string(path.substr(0, 200)) +
                             " (POST /fhir/r4/Patient, /Encounter, /ServiceRequest, /Task, "
                             "POST /fhir/r4 with a Bundle, GET /fhir/r4/metadata)")});
    }
    if (!is_post) return MethodNotAllowed("POST");
    if (auto problem = MediaTypeProblem(View(req[http::field::content_type])); !problem.empty()) {
      return Fail(http::status::unsupported_media_type,
                  {Issue(IssueType::kNotSupported, std::move(problem))});
    }

    RequestContext context;
    context.source_system = std::string(Trim(View(req["X-ICR-Source-System"])));
    context.source_organisation = std::string(Trim(View(req["X-ICR-Source-Organisation"])));
    context.care_setting = options().default_care_setting;
    context.now_micros = NowMicros();
    context.max_json_depth = options().max_json_depth;
    if (std::string_view cs = Trim(View(req["X-ICR-Care-Setting"])); !cs.empty()) {
      std::string upper(cs);
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      icr::v1::CareSetting setting;
      if (!icr::v1::CareSetting_Parse(upper, &setting) ||
          setting == icr::v1::CARE_SETTING_UNSPECIFIED) {
        return Fail(http::status::bad_request,
                    {Issue(IssueType::kValue,
                           "X-ICR-Care-Setting header: '" + std::string(cs.substr(0, 40)) +
                               "' is not a care setting (GP, ACUTE, COMMUNITY, MENTAL_HEALTH, "
                               "SOCIAL_CARE, CARE_PROVIDER, AMBULANCE)")});
      }
      context.care_setting = setting;
    }

    auto mapped = std::make_shared<MappedRequest>(MapRequest(req.body(), endpoint_type, context));
    parser_.reset();  // the body is no longer needed
    Publish(std::move(mapped));
  }

  void MethodNotAllowed(const char* allow) {
    Response res =
        Outcome(http::status::method_not_allowed,
                {Issue(IssueType::kNotSupported,
                       std::string("method not allowed here (allowed: ") + allow + ")")});
    res.set(http::field::allow, allow);
    Send(std::move(res));
  }

  // --- publishing ---------------------------------------------------------------

  void Publish(std::shared_ptr<MappedRequest> mapped) {
    const bool any_entry_issue =
        std::any_of(mapped->entries.begin(), mapped->entries.end(),
                    [](const MappedEntry& e) { return !e.issues.empty(); });
    if (!mapped->issues.empty() || (mapped->kind != RequestKind::kBatch && any_entry_issue)) {
      return Fail(http::status::bad_request, mapped->AllIssues());
    }
    if (mapped->kind == RequestKind::kBatch) return PublishBatchEntries(std::move(mapped));

    // One resource, a message or a transaction: one atomic Publish.
    std::vector<icr::v1::CareEvent> events;
    std::vector<const MappedEvent*> refs;
    for (const auto& entry : mapped->entries) {
      for (const auto& m : entry.events) {
        events.push_back(m.event);
        refs.push_back(&m);
      }
    }
    const bool batch = mapped->kind != RequestKind::kResource || events.size() > 1;
    core_->ingest->Publish(
        std::move(events), batch,
        [self = shared_from_this(), mapped, refs](const store::Status& s,
                                                  std::vector<store::AppendResult> results) {
          auto outcome = std::make_shared<PublishOutcome>(PublishOutcome{s, std::move(results)});
          self->Deliver(
              [self, mapped, refs, outcome] { self->OnPublished(*mapped, refs, *outcome); });
        },
        /*origin=*/0, &identity_);  // the callback's `self` keeps identity_ alive
  }

  // A batch: each entry on its own (its events still atomically), answered
  // when all have finished.
  void PublishBatchEntries(std::shared_ptr<MappedRequest> mapped) {
    struct Run {
      std::mutex mu;
      size_t pending = 1;  // +1 until every Publish has been started
      std::vector<std::optional<PublishOutcome>> outcomes;
    };
    auto run = std::make_shared<Run>();
    run->outcomes.resize(mapped->entries.size());
    auto finish_one = [self = shared_from_this(), mapped, run] {
      std::lock_guard<std::mutex> lock(run->mu);
      if (--run->pending != 0) return;
      self->Deliver([self, mapped, run] { self->OnBatchPublished(*mapped, run->outcomes); });
    };
    for (size_t i = 0; i < mapped->entries.size(); ++i) {
      const MappedEntry& entry = mapped->entries[i];
      if (!entry.issues.empty() || entry.events.empty()) continue;
      std::vector<icr::v1::CareEvent> events;
      std::vector<const MappedEvent*> refs;
      for (const auto& m : entry.events) {
        events.push_back(m.event);
        refs.push_back(&m);
      }
      {
        std::lock_guard<std::mutex> lock(run->mu);
        ++run->pending;
      }
      const bool batch = events.size() > 1;
      core_->ingest->Publish(
          std::move(events), batch,
          [run, i, finish_one](const store::Status& s, std::vector<store::AppendResult> results) {
            {
              std::lock_guard<std::mutex> lock(run->mu);
              run->outcomes[i] = PublishOutcome{s, std::move(results)};
            }
            finish_one();
          },
          /*origin=*/0, &identity_);  // finish_one holds `self`, so identity_ lives
    }
    finish_one();
  }

  // Runs `fn` on this session's strand, unless the I/O threads have stopped
  // (then the answer is dropped: the client sees the connection close and
  // resends, which stores nothing twice).
  template <typename Fn>
  void Deliver(Fn&& fn) {
    std::lock_guard<std::mutex> lock(core_->mu);
    if (core_->stopped) return;
    net::post(stream_.get_executor(), std::forward<Fn>(fn));
  }

  // An error from Ingest as (HTTP status, issue).
  std::pair<http::status, OutcomeIssue> StoreError(const store::Status& s,
                                                   const std::vector<const MappedEvent*>& refs) {
    using store::StatusCode;
    switch (s.code()) {
      case StatusCode::kInvalidArgument:
        return {http::status::bad_request, IssueFromBrokerError(s.message(), refs)};
      case StatusCode::kFailedPrecondition:
      case StatusCode::kConflict:
        // The event breaks the workflow (an illegal referral transition) or
        // raced another update: nothing stored, resending unchanged will not help.
        return {s.code() == StatusCode::kConflict ? http::status::precondition_failed
                                                  : http::status::conflict,
                Issue(IssueType::kProcessing, s.message() + "; nothing was stored")};
      case StatusCode::kPermissionDenied:
      case StatusCode::kUnauthenticated: {
        // The policy refused the caller (its certificate), not the content.
        const bool denied = s.code() == StatusCode::kPermissionDenied;
        std::string text = (denied ? "not permitted: " : "not authenticated: ") + s.message();
        if (text.find("nothing was stored") == std::string::npos) text += "; nothing was stored";
        return {denied ? http::status::forbidden : http::status::unauthorized,
                Issue(denied ? IssueType::kForbidden : IssueType::kLogin, std::move(text))};
      }
      case StatusCode::kUnavailable:
      case StatusCode::kResourceExhausted:
      case StatusCode::kAborted:
        return {http::status::service_unavailable,
                Issue(IssueType::kTransient,
                      "the broker cannot store events now (" + s.message() +
                          "); nothing was stored. Resend the same request after Retry-After "
                          "seconds: a resend never stores anything twice")};
      default:
        return {http::status::internal_server_error,
                Issue(IssueType::kException, "the broker could not store the events: " +
                                                 s.ToString() + "; nothing was stored")};
    }
  }

  void OnPublished(const MappedRequest& mapped, const std::vector<const MappedEvent*>& refs,
                   const PublishOutcome& outcome) {
    if (!outcome.status.ok()) {
      auto [status, issue] = StoreError(outcome.status, refs);
      return Fail(status, {std::move(issue)});
    }
    if (mapped.kind == RequestKind::kResource) {
      return Send(ResourceCreated(mapped.resource_type, refs, outcome.results));
    }
    // Split the results back over the entries, in order.
    std::vector<std::optional<PublishOutcome>> per_entry(mapped.entries.size());
    size_t next = 0;
    for (size_t i = 0; i < mapped.entries.size(); ++i) {
      const size_t n = mapped.entries[i].events.size();
      if (n == 0) continue;
      PublishOutcome o;
      for (size_t k = 0; k < n && next < outcome.results.size(); ++k) {
        o.results.push_back(outcome.results[next++]);
      }
      per_entry[i] = std::move(o);
    }
    Send(BundleResponse(mapped, per_entry, "transaction-response"));
  }

  void OnBatchPublished(const MappedRequest& mapped,
                        const std::vector<std::optional<PublishOutcome>>& outcomes) {
    Send(BundleResponse(mapped, outcomes, "batch-response"));
  }

  // 201 (anything new) or 200 (a resend) for one resource.
  Response ResourceCreated(const std::string& type, const std::vector<const MappedEvent*>& refs,
                           const std::vector<store::AppendResult>& results) {
    bool any_new = false;
    std::vector<OutcomeIssue> info;
    for (size_t i = 0; i < results.size() && i < refs.size(); ++i) {
      const auto& r = results[i];
      any_new |= !r.duplicate;
      OutcomeIssue issue;
      issue.severity = IssueSeverity::kInformation;
      issue.code = IssueType::kInformational;
      issue.expression = type;
      const std::string what = EventTypeName(refs[i]->event);
      issue.diagnostics = r.duplicate ? what + " was stored before as event " + r.event_id +
                                            " at position " + std::to_string(r.position) +
                                            " (a resend: nothing new stored)"
                                      : what + " stored as event " + r.event_id + " at position " +
                                            std::to_string(r.position);
      info.push_back(std::move(issue));
    }
    Response res{any_new ? http::status::created : http::status::ok, version_};
    res.set(http::field::content_type, kFhirJson);
    if (!results.empty()) {
      const auto& first = results.front();
      res.set(http::field::location, "/fhir/r4/" + type + "/" + first.event_id);
      res.set(http::field::etag, "W/\"" + std::to_string(first.position) + "\"");
      res.set("X-ICR-Position", std::to_string(first.position));
      res.set("X-ICR-Event-Id", first.event_id);
    }
    res.body() = OperationOutcomeJson(info);
    return res;
  }

  Response BundleResponse(const MappedRequest& mapped,
                          const std::vector<std::optional<PublishOutcome>>& outcomes,
                          const char* bundle_type) {
    using nlohmann::json;
    json entries = json::array();
    for (size_t i = 0; i < mapped.entries.size(); ++i) {
      const MappedEntry& entry = mapped.entries[i];
      json response;
      if (!entry.issues.empty()) {
        response["status"] = "400 Bad Request";
        response["outcome"] = json::parse(OperationOutcomeJson(entry.issues));
      } else if (i < outcomes.size() && outcomes[i] && !outcomes[i]->status.ok()) {
        std::vector<const MappedEvent*> refs;
        for (const auto& m : entry.events) refs.push_back(&m);
        auto [status, issue] = StoreError(outcomes[i]->status, refs);
        response["status"] = std::to_string(static_cast<int>(status)) + " " +
                             std::string(http::obsolete_reason(status));
        response["outcome"] = json::parse(OperationOutcomeJson({issue}));
      } else if (i < outcomes.size() && outcomes[i] && !outcomes[i]->results.empty()) {
        const auto& results = outcomes[i]->results;
        bool any_new = false;
        json extensions = json::array();
        for (size_t k = 0; k < results.size(); ++k) {
          any_new |= !results[k].duplicate;
          json sub = json::array(
              {{{"url", "eventId"}, {"valueString", results[k].event_id}},
               {{"url", "position"}, {"valueString", std::to_string(results[k].position)}},
               {{"url", "duplicate"}, {"valueBoolean", results[k].duplicate}}});
          if (k < entry.events.size()) {
            sub.push_back(
                {{"url", "eventType"}, {"valueCode", EventTypeName(entry.events[k].event)}});
          }
          extensions.push_back({{"url", kBrokerEventExtension}, {"extension", std::move(sub)}});
        }
        response["status"] = any_new ? "201 Created" : "200 OK";
        response["location"] = entry.resource_type + "/" + results.front().event_id;
        response["etag"] = "W/\"" + std::to_string(results.front().position) + "\"";
        response["extension"] = std::move(extensions);
      } else {
        response["status"] = "200 OK";  // a message's header or supporting resource
      }
      json e = {{"response", std::move(response)}};
      if (!entry.full_url.empty()) e["fullUrl"] = entry.full_url;
      entries.push_back(std::move(e));
    }
    json bundle = {
        {"resourceType", "Bundle"}, {"type", bundle_type}, {"entry", std::move(entries)}};
    Response res{http::status::ok, version_};
    res.set(http::field::content_type, kFhirJson);
    res.body() = bundle.dump(-1, ' ', false, json::error_handler_t::replace);
    return res;
  }

  // --- rest-hook subscriptions ---------------------------------------------------

  // A refusal of the policy (kUnauthenticated: 401 "login";
  // kPermissionDenied: 403 "forbidden"), already audited.
  void FailDenied(const store::Status& s) {
    const bool denied = s.code() == store::StatusCode::kPermissionDenied;
    Fail(denied ? http::status::forbidden : http::status::unauthorized,
         {Issue(denied ? IssueType::kForbidden : IssueType::kLogin,
                (denied ? "not permitted: " : "not authenticated: ") + s.message())});
  }

  // POST /fhir/r4/Subscription creates a rest-hook from a backport-style
  // Subscription, owned by the caller's principal (its scope, profile and
  // audit identity; purpose DIRECT_CARE); DELETE /fhir/r4/Subscription/<id>
  // removes it (its owner, or a principal with the "subscriptions" query).
  template <class Request>
  void HandleSubscription(const Request& req, std::string_view path) {
    RestHookManager* hooks = options().resthooks;
    if (hooks == nullptr) {
      return Fail(http::status::not_implemented,
                  {Issue(IssueType::kNotSupported,
                         "rest-hook subscriptions are not enabled on this endpoint")});
    }
    const std::string id(path.size() > 22 ? path.substr(22) : std::string_view());
    const bool is_delete = req.method() == http::verb::delete_;
    if (is_delete ? id.empty() : (req.method() != http::verb::post || !id.empty())) {
      return MethodNotAllowed(id.empty() ? "POST" : "DELETE");
    }
    // Who asks: the connection's certificate, under the policy in force.
    broker::AccessControl* access = core_->ingest->access();
    broker::Caller caller;
    if (access != nullptr) {
      if (store::Status s = access->Identify(identity_, &caller); !s.ok()) return FailDenied(s);
    }
    if (is_delete) {
      if (access != nullptr) {
        RestHookSubscription existing;
        store::Status got = hooks->Get(id, &existing);
        if (!got.ok() && got.code() != store::StatusCode::kNotFound) {
          // Whose it is cannot be told: nothing is deleted.
          return Fail(http::status::service_unavailable,
                      {Issue(IssueType::kTransient, got.message())});
        }
        if (got.ok() && existing.owner != caller.principal->id &&
            !caller.principal->HasQuery("subscriptions")) {
          return FailDenied(access->Deny(
              caller, "",
              store::Status::PermissionDenied(
                  "rest-hook subscription '" + id + "' belongs to principal '" +
                  (existing.owner.empty() ? std::string("(none)") : existing.owner) +
                  "'; only its owner or a principal with the 'subscriptions' query may "
                  "delete it")));
        }
      }
      store::Status s = hooks->Delete(id);
      if (s.code() == store::StatusCode::kNotFound) {
        return Fail(http::status::not_found,
                    {Issue(IssueType::kNotFound, "no rest-hook subscription '" + id + "'")});
      }
      if (!s.ok()) {
        return Fail(http::status::service_unavailable, {Issue(IssueType::kTransient, s.message())});
      }
      Response res{http::status::no_content, version_};
      return Send(std::move(res));
    }
    if (auto problem = MediaTypeProblem(View(req[http::field::content_type])); !problem.empty()) {
      return Fail(http::status::unsupported_media_type,
                  {Issue(IssueType::kNotSupported, std::move(problem))});
    }
    RestHookSubscription sub;
    std::string expression;
    store::Status s = SubscriptionFromFhirJson(req.body(), &sub, &expression);
    if (s.ok() && access != nullptr) {
      // Rest-hooks are for direct care; the principal's legal basis.
      sub.owner = caller.principal->id;
      sub.purpose = icr::v1::DIRECT_CARE;
      sub.legal_basis.clear();
      if (store::Status p = access->CheckPurpose(caller, &sub.purpose, &sub.legal_basis);
          !p.ok()) {
        if (p.code() == store::StatusCode::kPermissionDenied) return FailDenied(p);
        s = p;
      }
    }
    if (s.ok()) {
      if (sub.name.empty()) sub.name = "fhir-" + std::to_string(NowMicros());
      s = hooks->Create(sub);
    }
    if (s.code() == store::StatusCode::kInvalidArgument) {
      return Fail(http::status::bad_request,
                  {Issue(IssueType::kValue, s.message(), expression)});
    }
    if (s.code() == store::StatusCode::kFailedPrecondition) {
      return Fail(http::status::conflict, {Issue(IssueType::kProcessing, s.message(), "Subscription.id")});
    }
    if (!s.ok()) {
      return Fail(http::status::service_unavailable, {Issue(IssueType::kTransient, s.message())});
    }
    OutcomeIssue info = Issue(IssueType::kInformational,
                              "rest-hook subscription '" + sub.name +
                                  "' created; notifications go to " + sub.endpoint);
    info.severity = IssueSeverity::kInformation;
    Response res = Outcome(http::status::created, {info});
    res.set(http::field::location, "/fhir/r4/Subscription/" + sub.name);
    return Send(std::move(res));
  }

  // --- answering ----------------------------------------------------------------

  Response Outcome(http::status status, const std::vector<OutcomeIssue>& issues) {
    Response res{status, version_};
    res.set(http::field::content_type, kFhirJson);
    res.body() = OperationOutcomeJson(issues);
    return res;
  }

  void Fail(http::status status, const std::vector<OutcomeIssue>& issues) {
    Response res = Outcome(status, issues);
    if (status == http::status::service_unavailable) {
      res.set(http::field::retry_after, std::to_string(options().retry_after_seconds));
    }
    Send(std::move(res));
  }

  void Send(Response res) {
    res.set(http::field::server, "icr-broker-fhir/" ICR_VERSION);
    res.keep_alive(keep_alive_ && !stop_requested_);
    res.prepare_payload();
    response_ = std::make_shared<Response>(std::move(res));
    stream_.expires_after(milliseconds(options().write_timeout_ms));
    http::async_write(stream_, *response_,
                      beast::bind_front_handler(&FhirHttpSession::OnWrite, shared_from_this()));
  }

  void OnWrite(beast::error_code ec, size_t) {
    const bool keep = response_ && response_->keep_alive();
    response_.reset();
    if (ec) return Close();
    if (!keep) return Linger();
    ReadRequest();
  }

  // Half-close, then drop what the client still sends for a moment, so it
  // reads our answer instead of a connection reset.
  void Linger() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    stream_.expires_after(kLinger);
    LingerRead();
  }

  void LingerRead() {
    stream_.lowest().async_read_some(net::buffer(discard_),
                                  [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->lingered_ += n;
                              if (ec || self->lingered_ > kLingerBytes) return self->Close();
                              self->LingerRead();
                            });
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  // core_ owns the io_context the socket uses: declared first, destroyed last.
  std::shared_ptr<Core> core_;
  // Who is at the other end (set before the first request; then read-only).
  broker::PeerIdentity identity_;
  FhirStream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Response> response_;
  std::array<char, 16384> discard_{};
  size_t lingered_ = 0;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool reading_ = false;
  bool stop_requested_ = false;
};

namespace {

void Accept(const std::shared_ptr<Core>& core) {
  core->acceptor.async_accept(
      net::make_strand(core->ioc), [core](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !core->acceptor.is_open()) return;
        if (ec) {
          // E.g. out of file descriptors: retry shortly instead of spinning.
          core->accept_retry.expires_after(milliseconds(100));
          core->accept_retry.async_wait([core](beast::error_code wec) {
            if (!wec) net::post(core->acceptor.get_executor(), [core] { Accept(core); });
          });
          return;
        }
        std::shared_ptr<FhirHttpSession> session;
        {
          std::lock_guard<std::mutex> lock(core->mu);
          if (core->stopping) return;  // the socket closes as it goes out of scope
          if (core->sessions.size() < core->options.max_connections) {
            session = std::make_shared<FhirHttpSession>(std::move(socket), core);
            core->sessions[session.get()] = session;
          }
        }
        if (session) session->Start();
        Accept(core);
      });
}

// The HTTPS context for `options` (nullptr when TLS is off). The files are
// checked first (broker/tls.h) so that a missing file or a key that does not
// match the certificate is a start-up error naming them.
store::Status MakeTlsContext(const FhirOptions& options, std::unique_ptr<net::ssl::context>* out) {
  broker::TlsOptions tls;
  tls.certificate_file = options.tls_certificate_file;
  tls.private_key_file = options.tls_private_key_file;
  tls.client_ca_file = options.tls_client_ca_file;
  broker::TlsOptionNames names;
  names.certificate = "fhir TLS certificate";
  names.private_key = "fhir TLS private key";
  names.client_ca = "fhir TLS client CA";
  broker::TlsFiles files;
  store::Status s = broker::LoadTlsFiles(tls, names, &files);
  if (!s.ok() || !tls.enabled()) return s;
  auto ctx = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                   net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                   net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
  beast::error_code ec;
  ctx->use_certificate_chain(net::buffer(files.certificate_chain), ec);
  if (!ec) ctx->use_private_key(net::buffer(files.private_key), net::ssl::context::pem, ec);
  if (!ec && !files.client_ca.empty()) {
    ctx->load_verify_file(options.tls_client_ca_file, ec);  // every CA of the bundle
    if (!ec) ctx->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  }
  if (ec) {
    return store::Status::InvalidArgument("fhir TLS: " + options.tls_certificate_file + ": " +
                                          ec.message());
  }
  *out = std::move(ctx);
  return {};
}

// "host:port" or "[v6]:port".
bool SplitListen(const std::string& listen, std::string* host, int* port) {
  std::string port_text;
  if (!listen.empty() && listen[0] == '[') {
    const size_t close = listen.find("]:");
    if (close == std::string::npos) return false;
    *host = listen.substr(1, close - 1);
    port_text = listen.substr(close + 2);
  } else {
    const size_t colon = listen.rfind(':');
    if (colon == std::string::npos) return false;
    *host = listen.substr(0, colon);
    port_text = listen.substr(colon + 1);
  }
  if (host->empty() || port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  *port = std::stoi(port_text);
  return *port <= 65535;
}

}  // namespace

FhirServer::FhirServer(std::shared_ptr<Core> core) : core_(std::move(core)) {}

FhirServer::~FhirServer() { Stop(); }

int FhirServer::port() const { return core_->port; }

store::Status FhirServer::Start(const FhirOptions& options, broker::Ingest* ingest,
                                std::unique_ptr<FhirServer>* out) {
  std::string host;
  int port = 0;
  if (!SplitListen(options.listen, &host, &port)) {
    return store::Status::InvalidArgument("fhir listen address '" + options.listen +
                                          "' is not host:port (e.g. 127.0.0.1:8080)");
  }
  if (options.max_body_bytes == 0 || options.max_json_depth < 1 || options.threads < 1 ||
      options.read_timeout_ms < 1 || options.write_timeout_ms < 1 || options.max_connections < 1) {
    return store::Status::InvalidArgument(
        "fhir options: max_body_bytes, max_json_depth, threads, timeouts and max_connections "
        "must be positive");
  }
  auto core = std::make_shared<Core>();
  core->options = options;
  core->ingest = ingest;
  core->capability = CapabilityStatementJson();
  if (store::Status s = MakeTlsContext(options, &core->tls); !s.ok()) return s;

  beast::error_code ec;
  tcp::endpoint endpoint;
  auto address = net::ip::make_address(host, ec);
  if (ec) {
    tcp::resolver resolver(core->ioc);
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec || results.empty()) {
      return store::Status::InvalidArgument("fhir listen host '" + host +
                                            "' cannot be resolved: " + ec.message());
    }
    endpoint = results.begin()->endpoint();
  } else {
    endpoint = tcp::endpoint(address, static_cast<unsigned short>(port));
  }
  auto fail = [&](const char* what) {
    return store::Status::Unavailable("fhir: cannot " + std::string(what) + " " + options.listen +
                                      ": " + ec.message() +
                                      " (set the FHIR listen address to another host:port)");
  };
  core->acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail("open");
  core->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  core->acceptor.bind(endpoint, ec);
  if (ec) return fail("bind");
  core->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen on");
  core->port = core->acceptor.local_endpoint().port();

  core->work.emplace(net::make_work_guard(core->ioc));
  Accept(core);
  for (int i = 0; i < options.threads; ++i) {
    core->threads.emplace_back([raw = core.get()] { raw->ioc.run(); });
  }
  out->reset(new FhirServer(std::move(core)));
  return {};
}

void FhirServer::Stop() {
  const std::shared_ptr<Core>& core = core_;
  std::vector<std::shared_ptr<FhirHttpSession>> live;
  {
    std::lock_guard<std::mutex> lock(core->mu);
    if (core->stopping) return;
    core->stopping = true;
    for (auto& [raw, weak] : core->sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  net::post(core->acceptor.get_executor(), [core] {
    beast::error_code ec;
    core->acceptor.close(ec);
    core->accept_retry.cancel();
  });
  for (auto& s : live) s->RequestStop();
  live.clear();
  {
    std::unique_lock<std::mutex> lock(core->mu);
    core->cv.wait_for(lock, milliseconds(core->options.drain_timeout_ms),
                      [&] { return core->sessions.empty(); });
    core->stopped = true;
  }
  core->work.reset();
  core->ioc.stop();
  for (auto& t : core->threads) t.join();
  core->threads.clear();
  // Sessions left after the drain timeout: end their operations (no I/O
  // thread runs now) and let their handlers release them.
  {
    std::lock_guard<std::mutex> lock(core->mu);
    for (auto& [raw, weak] : core->sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->ForceClose();
  live.clear();
  core->ioc.restart();
  core->ioc.poll();
}

}  // namespace icr::adapters::fhir
