#include "adapters/fhir/resthook.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "adapters/fhir/resthook_fhir.h"
#include "broker/access.h"
#include "broker/delivery.h"
#include "broker/hub.h"
#include "broker/timestamp.h"
#include "broker/validation.h"
#include "icr/v1/state.pb.h"

namespace icr::adapters::fhir {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;
using store::Status;

constexpr uint32_t kEngineAckTimeoutMs = 3600000;  // we drive retries; the engine never times out
constexpr size_t kMaxResponseBodyBytes = 1 << 20;
constexpr char kRecordFormat[] = "icr-resthook-1";
// Stored values start with "v1": 'v' is a protobuf tag with wire type 6,
// which no protobuf parser accepts, so code that lists the cursors column
// family and parses SubscriptionState (gRPC ListSubscriptions) skips
// rest-hook definitions instead of misreading them.
constexpr char kRecordMagic[] = "v1";
// The audit channel of rest-hook deliveries.
constexpr char kAuditChannel[] = "fhir-resthook";
// Who owns a definition stored before rest-hooks had owners, when the broker
// allows development callers.
constexpr char kDevelopmentPrincipal[] = "local-developer";

std::string RecordName(const std::string& name) { return kRestHookRecordPrefix + name; }

// ---------------------------------------------------------------------------
// The stored definition
// ---------------------------------------------------------------------------

std::string EncodeRecord(const RestHookSubscription& def, uint64_t events_since_start) {
  Json j;
  j["format"] = kRecordFormat;
  j["name"] = def.name;
  j["endpoint"] = def.endpoint;
  Json headers = Json::array();
  for (const auto& [k, v] : def.headers) headers.push_back(Json::array({k, v}));
  j["headers"] = headers;
  std::string filter;
  (void)google::protobuf::util::MessageToJsonString(def.filter, &filter);
  j["filter"] = Json::parse(filter.empty() ? "{}" : filter);
  j["topic_url"] = def.topic_url;
  j["heartbeat_seconds"] = def.heartbeat_seconds;
  j["max_attempts"] = def.max_attempts;
  j["timeout_ms"] = def.timeout_ms;
  j["max_events_per_notification"] = def.max_events_per_notification;
  j["content"] = def.content;
  j["events_since_subscription_start"] = events_since_start;
  j["owner"] = def.owner;
  j["purpose"] = icr::v1::Purpose_Name(def.purpose);
  j["legal_basis"] = def.legal_basis;
  return kRecordMagic + j.dump();
}

Status DecodeRecord(const std::string& bytes, RestHookSubscription* def,
                    uint64_t* events_since_start) {
  const size_t magic = sizeof(kRecordMagic) - 1;
  if (bytes.compare(0, magic, kRecordMagic) != 0) {
    return Status::Corruption("rest-hook record: unknown format");
  }
  try {
    Json j = Json::parse(bytes.substr(magic));
    if (j.value("format", "") != kRecordFormat) {
      return Status::Corruption("rest-hook record: unknown format");
    }
    def->name = j.at("name").get<std::string>();
    def->endpoint = j.at("endpoint").get<std::string>();
    def->headers.clear();
    for (const auto& h : j.at("headers")) {
      def->headers.emplace_back(h.at(0).get<std::string>(), h.at(1).get<std::string>());
    }
    def->filter.Clear();
    if (!google::protobuf::util::JsonStringToMessage(j.at("filter").dump(), &def->filter).ok()) {
      return Status::Corruption("rest-hook record: filter cannot be read");
    }
    def->topic_url = j.at("topic_url").get<std::string>();
    def->heartbeat_seconds = j.at("heartbeat_seconds").get<uint32_t>();
    def->max_attempts = j.at("max_attempts").get<uint32_t>();
    def->timeout_ms = j.at("timeout_ms").get<uint32_t>();
    def->max_events_per_notification = j.at("max_events_per_notification").get<uint32_t>();
    def->content = j.at("content").get<std::string>();
    *events_since_start = j.at("events_since_subscription_start").get<uint64_t>();
    // Absent from definitions stored before rest-hooks had owners.
    def->owner = j.value("owner", "");
    def->purpose = icr::v1::DIRECT_CARE;
    if (const std::string purpose = j.value("purpose", ""); !purpose.empty()) {
      icr::v1::Purpose parsed;
      if (!icr::v1::Purpose_Parse(purpose, &parsed) || parsed == icr::v1::PURPOSE_UNSPECIFIED) {
        return Status::Corruption("rest-hook record: purpose '" + purpose + "' is not known");
      }
      def->purpose = parsed;
    }
    def->legal_basis = j.value("legal_basis", "");
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("rest-hook record: ") + e.what());
  }
  return {};
}

uint32_t EngineWindow(const RestHookSubscription& def) {
  return std::min<uint32_t>(10000, std::max<uint32_t>(100, 2 * def.max_events_per_notification));
}

// ---------------------------------------------------------------------------
// One rest-hook: a hub session driving a durable engine over HTTP
// ---------------------------------------------------------------------------

class RestHookSession final : public broker::Session,
                              public std::enable_shared_from_this<RestHookSession> {
 public:
  RestHookSession(asio::io_context& io, broker::Hub* hub, store::EventStore* store,
                  broker::AccessControl* access, const RestHookOptions& options,
                  RestHookSubscription def, Endpoint url, uint64_t events_since_start)
      : io_(io),
        hub_(hub),
        store_(store),
        access_(access),
        options_(options),
        def_(std::move(def)),
        url_(std::move(url)),
        events_since_start_snapshot_(events_since_start),
        events_since_start_(events_since_start),
        resolver_(io),
        stream_(io),
        deadline_timer_(io),
        retry_timer_(io),
        heartbeat_timer_(io),
        rng_(std::random_device{}()) {}

  // A definition that could not be started (shown by List as "off").
  static std::shared_ptr<RestHookSession> Off(asio::io_context& io, broker::Hub* hub,
                                              store::EventStore* store,
                                              const RestHookOptions& options,
                                              RestHookSubscription def, std::string why) {
    auto s = std::make_shared<RestHookSession>(io, hub, store, nullptr, options, std::move(def),
                                               Endpoint{}, 0);
    s->stopped_ = true;
    s->status_ = "off";
    s->last_error_ = std::move(why);
    return s;
  }

  const RestHookSubscription& def() const { return def_; }

  // Claims the names in the hub; false if another holder has either.
  bool Claim() {
    auto self = shared_from_this();
    if (!hub_->ClaimDurable(def_.name, self)) return false;
    if (!hub_->ClaimDurable(RecordName(def_.name), self)) {
      hub_->ReleaseDurable(def_.name, this);
      return false;
    }
    return true;
  }

  void ReleaseClaims() {
    hub_->ReleaseDurable(def_.name, this);
    hub_->ReleaseDurable(RecordName(def_.name), this);
  }

  // REQUIRES: Claim() succeeded.
  void Begin(std::unique_ptr<broker::SubscriptionEngine> engine) {
    // Notifications keep position order: FHIR clients commonly take an
    // eventNumber lower than the last one seen for a replay and drop it, so
    // priority lanes would lose urgent events there (docs/adapters/
    // fhir-subscriptions.md).
    engine->DisableLanes();
    // Only what the owner may receive under the policy in force.
    if (access_ != nullptr) {
      scope_ = access_->SubscribeScope(def_.owner, def_.purpose);
      engine->SetScope(scope_);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      engine_ = std::move(engine);
      status_ = "active";
    }
    hub_->Add(shared_from_this());
    asio::post(io_, [self = shared_from_this()] {
      self->ArmHeartbeat();
      self->Pump();
    });
  }

  // Stops delivery for good: on the io thread (or with it stopped).
  void StopOnIo() {
    bool started;
    {
      std::lock_guard<std::mutex> lock(mu_);
      started = engine_ != nullptr;
      if (engine_ && !persisted_at_stop_) {
        engine_->Persist(true);
        persisted_at_stop_ = true;
      }
      stopped_ = true;
      status_ = "off";
    }
    boost::system::error_code ec;
    deadline_timer_.cancel();
    retry_timer_.cancel();
    heartbeat_timer_.cancel();
    resolver_.cancel();
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    connected_ = false;
    if (started) {
      hub_->Remove(this);
      ReleaseClaims();
    }
  }

  RestHookStatus Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    RestHookStatus s;
    s.name = def_.name;
    s.endpoint = def_.endpoint;
    s.status = status_;
    s.cursor = engine_ ? engine_->cursor() : 0;
    s.events_since_subscription_start = events_since_start_snapshot_;
    s.failed_attempts = failed_snapshot_;
    s.in_flight = in_flight_snapshot_;
    s.last_error = last_error_;
    s.last_success_micros = last_success_micros_;
    return s;
  }

  // --- broker::Session (hub and gRPC threads) ---

  void Wake() override {
    if (wake_pending_.exchange(true)) return;
    asio::post(io_, [self = shared_from_this()] {
      self->wake_pending_ = false;
      self->Pump();
    });
  }

  void Tick(int64_t) override {}  // our own timers drive retries and heartbeats

  void Shutdown() override {
    // The hub is stopping (the broker shuts down): persist now, while the
    // store is open; the io thread drops the connection.
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
      if (engine_ && !persisted_at_stop_) {
        engine_->Persist(true);
        persisted_at_stop_ = true;
      }
    }
    asio::post(io_, [self = shared_from_this()] { self->StopOnIo(); });
  }

  broker::AckOutcome Ack(const std::vector<uint64_t>& positions) override {
    // Only the receiver's 2xx acknowledges a rest-hook's events.
    std::lock_guard<std::mutex> lock(mu_);
    broker::AckOutcome outcome;
    outcome.cursor = engine_ ? engine_->cursor() : 0;
    outcome.unknown_positions = positions;
    return outcome;
  }

  Status Replay(const std::vector<uint64_t>& positions, uint32_t* count) override {
    Status s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!engine_ || stopped_) return Status::FailedPrecondition("rest-hook is stopped");
      s = engine_->ReplayParked(positions, count);
    }
    Wake();
    return s;
  }

  uint32_t InFlight() override {
    std::lock_guard<std::mutex> lock(mu_);
    return engine_ ? static_cast<uint32_t>(engine_->in_flight()) : 0;
  }

 private:
  using Done = std::function<void(bool ok, std::string error)>;

  bool Stopped() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopped_;
  }

  std::string SubscriptionReference() const {
    return options_.subscription_base_url + "Subscription/" + def_.name;
  }

  // --- delivery (io thread) ---

  void Pump() {
    if (posting_ || !batch_.empty() || Stopped()) return;
    if (!OwnerPresent()) {
      ScheduleRetry(Backoff(++held_), [this] { Pump(); });
      return;
    }
    Status s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      const int64_t now = broker::NowMicros();
      while (batch_.size() < def_.max_events_per_notification) {
        std::optional<broker::Delivery> d;
        s = engine_->Next(now, &d);
        if (!s.ok() || !d) break;
        batch_.push_back(d->event);
      }
      if (!s.ok() && batch_.empty()) {
        status_ = "error";
        last_error_ = "reading events: " + s.ToString();
      }
      in_flight_snapshot_ = static_cast<uint32_t>(batch_.size());
    }
    if (batch_.empty()) {
      if (!s.ok()) ScheduleRetry(options_.initial_backoff_ms, [this] { Pump(); });
      return;
    }
    SendBatch();
  }

  void SendBatch() {
    std::vector<store::EventPtr> shown = batch_;
    if (access_ != nullptr) {
      // The owner of the policy in force now decides: whether anything is
      // sent, which of the pending events (the policy may have been
      // reloaded since they were taken), and what is shown of them; the
      // audit record is written before the POST.
      std::shared_ptr<const broker::governance::Policy> keep;
      const broker::governance::Principal* owner = access_->Current(def_.owner, &keep);
      if (owner == nullptr) {
        OwnerGone();
        ScheduleRetry(Backoff(++held_), [this] { SendBatch(); });
        return;
      }
      if (!DropOutOfScope()) return;  // none left: Pump() ran
      std::string problem = AuditBatch(*owner);
      if (!problem.empty()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          status_ = "error";
          last_error_ = std::move(problem);
        }
        ScheduleRetry(Backoff(++held_), [this] { SendBatch(); });
        return;
      }
      held_ = 0;
      shown.clear();
      for (const auto& e : batch_) shown.push_back(broker::MinimisedFor(owner, e));
    }
    std::string body;
    std::string status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      status = status_;
    }
    NotificationInfo info;
    info.subscription_reference = SubscriptionReference();
    info.topic_url = def_.topic_url;
    info.status = status == "error" ? "error" : "active";
    info.type = "event-notification";
    info.events_since_subscription_start = events_since_start_ + batch_.size();
    info.content = def_.content;
    info.now_micros = broker::NowMicros();
    body = BuildNotificationBundle(info, shown);
    Post(std::move(body), [this](bool ok, std::string error) { OnBatchDone(ok, std::move(error)); });
  }

  void OnBatchDone(bool ok, std::string error) {
    if (Stopped()) return;
    const int64_t now = broker::NowMicros();
    if (ok) {
      std::vector<uint64_t> positions;
      for (const auto& e : batch_) positions.push_back(e->position);
      events_since_start_ += batch_.size();
      // The count first: a crash before the cursor is written redelivers the
      // events with a higher count (a visible jump), never a repeated one.
      PersistRecord();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopped_) return;  // the store may be closing: the cursor was persisted
        engine_->Ack(positions);
        status_ = "active";
        last_success_micros_ = now;
        events_since_start_snapshot_ = events_since_start_;
        failed_snapshot_ = 0;
        in_flight_snapshot_ = 0;
      }
      batch_.clear();
      failures_ = 0;
      ArmHeartbeat();
      Pump();
      return;
    }
    ++failures_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      status_ = "error";
      last_error_ = std::move(error);
      failed_snapshot_ = failures_;
    }
    ArmHeartbeat();
    if (failures_ >= def_.max_attempts) {
      ParkBatch();
      return;
    }
    ScheduleRetry(Backoff(failures_), [this] { SendBatch(); });
  }

  // --- governance (io thread) ---

  // Whether the owner is a principal of the policy in force (always without
  // an AccessControl); if not, status "error" saying so. Clears that error
  // once the owner is back.
  bool OwnerPresent() {
    if (access_ == nullptr) return true;
    std::shared_ptr<const broker::governance::Policy> keep;
    if (access_->Current(def_.owner, &keep) == nullptr) {
      OwnerGone();
      return false;
    }
    if (owner_gone_) {
      owner_gone_ = false;
      held_ = 0;
      std::lock_guard<std::mutex> lock(mu_);
      if (status_ == "error") {
        status_ = "active";
        last_error_.clear();
      }
    }
    return true;
  }

  void OwnerGone() {
    owner_gone_ = true;
    std::lock_guard<std::mutex> lock(mu_);
    status_ = "error";
    last_error_ = "owner '" + def_.owner +
                  "' is not a principal of the policy in force: nothing is sent (events wait "
                  "in flight) until the policy has it again, or delete this rest-hook";
  }

  // Acknowledges (without sending) the pending events the owner may no
  // longer receive. False when none is left (Pump() has run).
  bool DropOutOfScope() {
    std::vector<store::EventPtr> keep;
    std::vector<uint64_t> dropped;
    for (const auto& e : batch_) {
      if (scope_ && !scope_(e->event)) {
        dropped.push_back(e->position);
      } else {
        keep.push_back(e);
      }
    }
    if (dropped.empty()) return true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return false;
      engine_->Ack(dropped);
      in_flight_snapshot_ = static_cast<uint32_t>(keep.size());
    }
    batch_ = std::move(keep);
    if (!batch_.empty()) return true;
    failures_ = 0;
    Pump();
    return false;
  }

  // Audits the disclosure of batch_ to `owner` (DELIVERED, one record per
  // person). "" when written, else why nothing may be sent.
  std::string AuditBatch(const broker::governance::Principal& owner) {
    std::vector<icr::v1::AuditRecord> records;
    std::map<std::string, size_t> by_person;
    for (const auto& e : batch_) {
      const icr::v1::CareEvent& event = e->event;
      auto [it, added] = by_person.emplace(event.nhs_number(), records.size());
      if (added) {
        icr::v1::AuditRecord& r = records.emplace_back();
        r.set_principal(owner.id);
        r.set_role(owner.role);
        r.set_organisation(owner.organisation);
        r.set_channel(kAuditChannel);
        r.set_action(icr::v1::DELIVERED);
        r.set_nhs_number(event.nhs_number());
        r.set_purpose(def_.purpose);
        r.set_legal_basis(def_.legal_basis);
        r.set_detail("rest-hook " + def_.name);
      }
      icr::v1::AuditRecord& r = records[it->second];
      r.add_event_ids(event.event_id());
      r.add_positions(e->position);
    }
    Status s = access_->Audit(std::move(records));
    if (s.ok()) return {};
    return "audit: " + s.message();
  }

  // Parks what is left of the batch; on a store error tries again later.
  void ParkBatch() {
    const int64_t now = broker::NowMicros();
    Status failed;
    size_t parked = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      std::vector<store::EventPtr> left;
      for (const auto& e : batch_) {
        Status s = engine_->ParkNow(e->position, now, failures_);
        if (s.ok() || s.code() == store::StatusCode::kNotFound) {
          ++parked;
        } else {
          failed = s;
          left.push_back(e);
        }
      }
      batch_ = std::move(left);
      if (!failed.ok()) last_error_ = "parking: " + failed.ToString();
    }
    events_since_start_ += parked;
    PersistRecord();
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_since_start_snapshot_ = events_since_start_;
      in_flight_snapshot_ = static_cast<uint32_t>(batch_.size());
    }
    if (!failed.ok()) {
      ScheduleRetry(options_.initial_backoff_ms, [this] { ParkBatch(); });
      return;
    }
    failures_ = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      failed_snapshot_ = 0;
    }
    Pump();
  }

  void PersistRecord() {
    if (Stopped()) return;
    Status s = store_->PutSubscription(RecordName(def_.name),
                                       EncodeRecord(def_, events_since_start_), false);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      last_error_ = "saving the rest-hook record: " + s.ToString();
    }
  }

  uint32_t Backoff(uint32_t failures) {
    double ms = options_.initial_backoff_ms;
    for (uint32_t i = 1; i < failures && ms < options_.max_backoff_ms; ++i) ms *= 2;
    ms = std::min<double>(ms, options_.max_backoff_ms);
    const double jitter = std::clamp(options_.jitter, 0.0, 0.5);
    std::uniform_real_distribution<double> spread(1.0 - jitter, 1.0 + jitter);
    return static_cast<uint32_t>(std::max(1.0, ms * spread(rng_)));
  }

  void ScheduleRetry(uint32_t ms, std::function<void()> what) {
    retry_timer_.expires_after(std::chrono::milliseconds(ms));
    retry_timer_.async_wait(
        [self = shared_from_this(), what = std::move(what)](boost::system::error_code ec) {
          if (ec || self->Stopped()) return;
          what();
        });
  }

  // --- heartbeats (io thread) ---

  uint64_t HeartbeatMs() const {
    return static_cast<uint64_t>(def_.heartbeat_seconds) * options_.heartbeat_unit_ms;
  }

  void ArmHeartbeat() {
    if (HeartbeatMs() == 0) return;
    heartbeat_timer_.expires_after(std::chrono::milliseconds(HeartbeatMs()));
    heartbeat_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->Stopped()) return;
      self->OnHeartbeatDue();
    });
  }

  void OnHeartbeatDue() {
    if (posting_ || !batch_.empty() || !OwnerPresent()) {
      // A notification is pending (that is our sign of life), or the owner
      // is gone (nothing is sent).
      ArmHeartbeat();
      return;
    }
    NotificationInfo info;
    info.subscription_reference = SubscriptionReference();
    info.topic_url = def_.topic_url;
    {
      std::lock_guard<std::mutex> lock(mu_);
      info.status = status_ == "error" ? "error" : "active";
    }
    info.type = "heartbeat";
    info.events_since_subscription_start = events_since_start_;
    info.content = def_.content;
    info.now_micros = broker::NowMicros();
    Post(BuildNotificationBundle(info, {}), [this](bool ok, std::string error) {
      if (Stopped()) return;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (ok) {
          status_ = "active";
          last_success_micros_ = broker::NowMicros();
        } else {
          status_ = "error";
          last_error_ = "heartbeat: " + error;
        }
      }
      ArmHeartbeat();
      Pump();
    });
  }

  // --- HTTP (io thread): one request at a time on a kept-alive connection ---

  void Post(std::string body, Done done) {
    posting_ = true;
    done_ = std::move(done);
    ++post_id_;
    stale_retry_used_ = false;
    req_ = {};
    req_.method(http::verb::post);
    req_.target(url_.target);
    req_.version(11);
    req_.set(http::field::host, url_.host_header);
    req_.set(http::field::user_agent, "icr-broker-resthook/1");
    req_.set(http::field::content_type, "application/fhir+json");
    req_.set(http::field::accept, "application/fhir+json, application/json;q=0.9, */*;q=0.1");
    for (const auto& [k, v] : def_.headers) req_.insert(k, v);
    req_.body() = std::move(body);
    req_.keep_alive(true);
    req_.prepare_payload();
    StartDeadline();
    if (connected_) {
      Write(/*reused=*/true);
    } else {
      Connect();
    }
  }

  void StartDeadline() {
    deadline_timer_.expires_after(std::chrono::milliseconds(def_.timeout_ms));
    deadline_timer_.async_wait(
        [self = shared_from_this(), id = post_id_](boost::system::error_code ec) {
          if (ec || id != self->post_id_ || !self->posting_) return;
          self->timed_out_ = true;
          boost::system::error_code ignored;
          self->resolver_.cancel();
          self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
          self->stream_.close();
          self->connected_ = false;
        });
    timed_out_ = false;
  }

  void Connect() {
    resolver_.async_resolve(
        url_.host, std::to_string(url_.port),
        [self = shared_from_this(), id = post_id_](boost::system::error_code ec,
                                                   tcp::resolver::results_type results) {
          if (id != self->post_id_) return;
          if (ec) return self->Finish(false, "resolving " + self->url_.host + ": ", ec);
          self->stream_.async_connect(
              results, [self, id](boost::system::error_code ec, const tcp::endpoint&) {
                if (id != self->post_id_) return;
                if (ec) return self->Finish(false, "connecting: ", ec);
                self->connected_ = true;
                self->buffer_.consume(self->buffer_.size());
                self->Write(/*reused=*/false);
              });
        });
  }

  static bool StaleConnectionError(const boost::system::error_code& ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == http::error::partial_message;
  }

  void Write(bool reused) {
    http::async_write(stream_, req_,
                      [self = shared_from_this(), id = post_id_, reused](
                          boost::system::error_code ec, std::size_t) {
                        if (id != self->post_id_) return;
                        if (ec) return self->ConnectionFailed(reused, "sending: ", ec);
                        self->Read(reused);
                      });
  }

  void Read(bool reused) {
    parser_.emplace();
    parser_->body_limit(kMaxResponseBodyBytes);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this(), id = post_id_, reused](
                         boost::system::error_code ec, std::size_t) {
                       if (id != self->post_id_) return;
                       if (ec) return self->ConnectionFailed(reused, "reading the answer: ", ec);
                       const unsigned code = self->parser_->get().result_int();
                       const bool keep = self->parser_->get().keep_alive();
                       if (!keep) self->CloseConnection();
                       if (code >= 200 && code < 300) return self->Finish(true, "", {});
                       std::string body = self->parser_->get().body().substr(0, 200);
                       self->Finish(false,
                                    "HTTP " + std::to_string(code) +
                                        (body.empty() ? std::string() : ": " + body),
                                    {});
                     });
  }

  // A kept-alive connection the receiver closed meanwhile fails on first
  // use: that is not the receiver refusing the notification, so reconnect
  // once and send again without counting a failed attempt.
  void ConnectionFailed(bool reused, const std::string& what, boost::system::error_code ec) {
    CloseConnection();
    if (reused && !timed_out_ && !stale_retry_used_ && StaleConnectionError(ec)) {
      stale_retry_used_ = true;
      Connect();
      return;
    }
    Finish(false, what, ec);
  }

  void CloseConnection() {
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    connected_ = false;
  }

  void Finish(bool ok, const std::string& what, boost::system::error_code ec) {
    deadline_timer_.cancel();
    std::string error = what;
    if (timed_out_) {
      error = "no answer within " + std::to_string(def_.timeout_ms) + " ms";
      CloseConnection();
    } else if (ec) {
      error += ec.message();
      CloseConnection();
    }
    posting_ = false;
    ++post_id_;  // late completions of this request are ignored
    Done done = std::move(done_);
    done_ = nullptr;
    if (done) done(ok, std::move(error));
  }

  asio::io_context& io_;
  broker::Hub* hub_;
  store::EventStore* store_;
  broker::AccessControl* const access_;  // nullptr: no policy
  const RestHookOptions options_;
  const RestHookSubscription def_;
  const Endpoint url_;
  broker::CompiledFilter::ScopeFn scope_;  // set by Begin (with access_)

  // Guarded by mu_ (read by other threads).
  std::mutex mu_;
  std::unique_ptr<broker::SubscriptionEngine> engine_;
  bool stopped_ = false;
  bool persisted_at_stop_ = false;
  std::string status_ = "active";
  std::string last_error_;
  int64_t last_success_micros_ = 0;
  uint64_t events_since_start_snapshot_ = 0;
  uint32_t failed_snapshot_ = 0;
  uint32_t in_flight_snapshot_ = 0;

  std::atomic<bool> wake_pending_{false};

  // io thread only.
  uint64_t events_since_start_;
  std::vector<store::EventPtr> batch_;  // the pending notification's events
  uint32_t failures_ = 0;               // failed POSTs of batch_
  uint32_t held_ = 0;                   // sends held back (owner gone, audit failed)
  bool owner_gone_ = false;
  bool posting_ = false;
  bool connected_ = false;
  bool timed_out_ = false;
  bool stale_retry_used_ = false;
  uint64_t post_id_ = 0;
  Done done_;
  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  std::optional<http::response_parser<http::string_body>> parser_;
  asio::steady_timer deadline_timer_;
  asio::steady_timer retry_timer_;
  asio::steady_timer heartbeat_timer_;
  std::mt19937_64 rng_;

  friend class RestHookManagerImpl;
};

// ---------------------------------------------------------------------------
// The manager
// ---------------------------------------------------------------------------

class RestHookManagerImpl final : public RestHookManager {
 public:
  RestHookManagerImpl(broker::Hub* hub, store::EventStore* store, broker::AccessControl* access,
                      RestHookOptions options)
      : hub_(hub),
        store_(store),
        access_(access),
        options_(std::move(options)),
        work_(io_.get_executor()) {}

  ~RestHookManagerImpl() override { Stop(); }

  void StartThread() {
    thread_ = std::thread([this] { io_.run(); });
  }

  // Resumes every stored rest-hook.
  Status Load() {
    std::vector<std::pair<std::string, std::string>> all;
    Status s = store_->ListSubscriptions(&all);
    if (!s.ok()) return s;
    const std::string prefix = kRestHookRecordPrefix;
    for (const auto& [key, value] : all) {
      if (key.compare(0, prefix.size(), prefix) != 0) continue;
      RestHookSubscription def;
      uint64_t count = 0;
      Status d = DecodeRecord(value, &def, &count);
      if (!d.ok()) {
        def.name = key.substr(prefix.size());
        std::lock_guard<std::mutex> lock(mu_);
        sessions_[def.name] = RestHookSession::Off(io_, hub_, store_, options_, def,
                                                   "stored definition: " + d.ToString());
        continue;
      }
      if (access_ != nullptr && def.owner.empty()) {
        // Stored before rest-hooks had owners.
        if (access_->allow_development()) {
          def.owner = kDevelopmentPrincipal;
          std::fprintf(stderr,
                       "icr-resthook: rest-hook '%s' was stored without an owner; it is owned by "
                       "'%s' (the development profile)\n",
                       def.name.c_str(), kDevelopmentPrincipal);
        } else {
          std::fprintf(stderr,
                       "icr-resthook: ALERT: rest-hook '%s' was stored before rest-hooks had "
                       "owners and is not resumed (nothing is sent to %s): delete it (DELETE "
                       "/fhir/r4/Subscription/%s, as a principal with the 'subscriptions' "
                       "query) and let its subscriber create it again with its own client "
                       "certificate\n",
                       def.name.c_str(), def.endpoint.c_str(), def.name.c_str());
          std::lock_guard<std::mutex> lock(mu_);
          sessions_[def.name] = RestHookSession::Off(
              io_, hub_, store_, options_, def,
              "no owner: stored before rest-hooks had owners; delete it and create it again "
              "with the subscriber's client certificate");
          continue;
        }
      }
      Endpoint url;
      std::string problem = ParseEndpoint(def.endpoint, &url);
      if (!problem.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        sessions_[def.name] =
            RestHookSession::Off(io_, hub_, store_, options_, def, "endpoint: " + problem);
        continue;
      }
      auto session = std::make_shared<RestHookSession>(io_, hub_, store_, access_, options_, def,
                                                       url, count);
      if (!session->Claim()) {
        std::lock_guard<std::mutex> lock(mu_);
        sessions_[def.name] = RestHookSession::Off(
            io_, hub_, store_, options_, def,
            "the name is held by a connected gRPC stream; restart the manager after it closes");
        continue;
      }
      icr::v1::internal::SubscriptionState state;
      std::string bytes;
      Status got = store_->GetSubscription(def.name, &bytes);
      if (got.ok() && !state.ParseFromString(bytes)) {
        got = Status::Corruption("stored state cannot be read");
      }
      if (got.code() == store::StatusCode::kNotFound) {
        // Deleted behind our back (gRPC DeleteSubscription while we were
        // down): start again from now.
        state.set_name(def.name);
        state.set_cursor(store_->LastPosition());
        broker::SetTimestamp(state.mutable_created_at(), broker::NowMicros());
        got = Status();
      }
      if (!got.ok()) {
        session->ReleaseClaims();
        std::lock_guard<std::mutex> lock(mu_);
        sessions_[def.name] = RestHookSession::Off(io_, hub_, store_, options_, def,
                                                   "subscription state: " + got.ToString());
        continue;
      }
      ConfigureState(def, &state);
      s = store_->PutSubscription(def.name, state.SerializeAsString(), true);
      if (!s.ok()) {
        session->ReleaseClaims();
        return s;
      }
      session->Begin(
          std::make_unique<broker::SubscriptionEngine>(hub_, store_, std::move(state)));
      std::lock_guard<std::mutex> lock(mu_);
      sessions_[def.name] = session;
    }
    return {};
  }

  Status Create(const RestHookSubscription& sub) override {
    if (auto p = ValidateRestHook(sub); !p.empty()) return Status::InvalidArgument(p);
    if (access_ != nullptr) {
      std::shared_ptr<const broker::governance::Policy> keep;
      if (sub.owner.empty()) {
        return Status::InvalidArgument("owner: is required (the creating caller's principal)");
      }
      if (access_->Current(sub.owner, &keep) == nullptr) {
        return Status::InvalidArgument("owner: '" + sub.owner +
                                       "' is not a principal of the policy in force");
      }
    }
    Endpoint url;
    ParseEndpoint(sub.endpoint, &url);
    const RestHookSubscription& def = sub;

    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return Status::Aborted("the rest-hook manager is stopped");
    if (sessions_.count(def.name)) {
      return Status::FailedPrecondition("name: rest-hook subscription '" + def.name +
                                        "' already exists");
    }
    std::string bytes;
    Status got = store_->GetSubscription(def.name, &bytes);
    if (got.ok()) {
      return Status::FailedPrecondition(
          "name: a durable subscription named '" + def.name +
          "' already exists (a gRPC subscriber's); choose another name");
    }
    if (got.code() != store::StatusCode::kNotFound) return got;
    got = store_->GetSubscription(RecordName(def.name), &bytes);
    if (got.ok()) {
      return Status::FailedPrecondition("name: a durable subscription named '" +
                                        RecordName(def.name) +
                                        "' exists (a gRPC subscriber's); choose another name");
    }
    if (got.code() != store::StatusCode::kNotFound) return got;

    auto session =
        std::make_shared<RestHookSession>(io_, hub_, store_, access_, options_, def, url, 0);
    if (!session->Claim()) {
      return Status::FailedPrecondition("name: '" + def.name +
                                        "' is held by a connected gRPC stream");
    }
    icr::v1::internal::SubscriptionState state;
    state.set_name(def.name);
    const uint64_t first =
        def.start_position != 0 ? def.start_position : store_->LastPosition() + 1;
    state.set_cursor(first - 1);
    broker::SetTimestamp(state.mutable_created_at(), broker::NowMicros());
    ConfigureState(def, &state);
    // The definition first: a crash before the state is written leaves a
    // definition that Start completes, never a nameless cursor.
    Status s = store_->PutSubscription(RecordName(def.name), EncodeRecord(def, 0), true);
    if (s.ok()) s = store_->PutSubscription(def.name, state.SerializeAsString(), true);
    if (!s.ok()) {
      store_->DeleteSubscription(RecordName(def.name));
      session->ReleaseClaims();
      return s;
    }
    session->Begin(std::make_unique<broker::SubscriptionEngine>(hub_, store_, std::move(state)));
    sessions_[def.name] = session;
    return {};
  }

  Status Delete(const std::string& name) override {
    std::shared_ptr<RestHookSession> session;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return Status::Aborted("the rest-hook manager is stopped");
      auto it = sessions_.find(name);
      if (it == sessions_.end()) {
        return Status::NotFound("rest-hook subscription '" + name + "' does not exist");
      }
      session = it->second;
      sessions_.erase(it);
    }
    StopSessions({session});
    Status s = store_->DeleteSubscription(name);
    if (s.code() == store::StatusCode::kNotFound) s = Status();
    Status r = store_->DeleteSubscription(RecordName(name));
    if (r.code() == store::StatusCode::kNotFound) r = Status();
    return s.ok() ? r : s;
  }

  std::vector<RestHookStatus> List() override {
    std::vector<std::shared_ptr<RestHookSession>> sessions;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, s] : sessions_) sessions.push_back(s);
    }
    std::vector<RestHookStatus> out;
    for (const auto& s : sessions) out.push_back(s->Snapshot());
    return out;
  }

  Status Get(const std::string& name, RestHookSubscription* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(name);
    if (it == sessions_.end()) {
      return Status::NotFound("rest-hook subscription '" + name + "' does not exist");
    }
    *out = it->second->def();
    return {};
  }

  void Stop() override {
    std::vector<std::shared_ptr<RestHookSession>> sessions;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
      for (const auto& [name, s] : sessions_) sessions.push_back(s);
    }
    StopSessions(sessions);
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static void ConfigureState(const RestHookSubscription& def,
                             icr::v1::internal::SubscriptionState* state) {
    *state->mutable_filter() = def.filter;
    state->set_ack_timeout_ms(kEngineAckTimeoutMs);
    state->set_max_attempts(def.max_attempts);
    state->set_max_in_flight(EngineWindow(def));
    // gRPC ListSubscriptions, ListParked, ReplayParked and
    // DeleteSubscription apply the owner's rights to the rest-hook too.
    state->set_owner(def.owner);
    state->set_purpose(def.purpose);
    state->set_legal_basis(def.legal_basis);
  }

  // Runs StopOnIo for each on the io thread and waits.
  void StopSessions(const std::vector<std::shared_ptr<RestHookSession>>& sessions) {
    if (sessions.empty()) return;
    auto done = std::make_shared<std::promise<void>>();
    auto future = done->get_future();
    asio::post(io_, [sessions, done] {
      for (const auto& s : sessions) s->StopOnIo();
      done->set_value();
    });
    if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      std::fprintf(stderr, "icr-resthook: io thread did not answer within 10 s at stop\n");
    }
  }

  broker::Hub* hub_;
  store::EventStore* store_;
  broker::AccessControl* const access_;
  const RestHookOptions options_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::mutex mu_;
  bool stopped_ = false;
  std::map<std::string, std::shared_ptr<RestHookSession>> sessions_;
};

}  // namespace

Status RestHookManager::Start(broker::Hub* hub, store::EventStore* store,
                              std::unique_ptr<RestHookManager>* out) {
  return Start(hub, store, RestHookOptions(), out);
}

Status RestHookManager::Start(broker::Hub* hub, store::EventStore* store,
                              const RestHookOptions& options,
                              std::unique_ptr<RestHookManager>* out) {
  return Start(hub, store, nullptr, options, out);
}

Status RestHookManager::Start(broker::Hub* hub, store::EventStore* store,
                              broker::AccessControl* access, const RestHookOptions& options,
                              std::unique_ptr<RestHookManager>* out) {
  auto manager = std::make_unique<RestHookManagerImpl>(hub, store, access, options);
  manager->StartThread();
  Status s = manager->Load();
  if (!s.ok()) {
    manager->Stop();
    return s;
  }
  *out = std::move(manager);
  return {};
}

std::string ValidateRestHook(const RestHookSubscription& sub) {
  if (auto p = broker::ValidateSubscriptionName(sub.name); !p.empty()) {
    return "name" + p.substr(p.find(':'));
  }
  if (sub.name.rfind(kRestHookRecordPrefix, 0) == 0) {
    return "name: '" + sub.name + "' must not start with \"" + kRestHookRecordPrefix +
           "\" (reserved)";
  }
  Endpoint url;
  if (auto p = ParseEndpoint(sub.endpoint, &url); !p.empty()) return "endpoint: " + p;
  if (sub.headers.size() > 32) return "headers: more than 32";
  for (size_t i = 0; i < sub.headers.size(); ++i) {
    if (auto p = HeaderProblem(sub.headers[i].first, sub.headers[i].second); !p.empty()) {
      return "headers[" + std::to_string(i) + "]: " + p;
    }
  }
  if (auto p = broker::ValidateFilter(sub.filter); !p.empty()) return p;
  if (sub.topic_url.empty()) {
    return "topic_url: is required (the SubscriptionTopic canonical URL, echoed as 'topic')";
  }
  if (sub.topic_url.size() > 1024) return "topic_url: longer than 1,024 characters";
  for (unsigned char c : sub.topic_url) {
    if (c <= 0x20 || c >= 0x7f) return "topic_url: must be a URL without spaces";
  }
  if (sub.heartbeat_seconds > 86400) {
    return "heartbeat_seconds: " + std::to_string(sub.heartbeat_seconds) +
           " is outside 0..86400 (0: no heartbeats)";
  }
  if (sub.max_attempts < 1 || sub.max_attempts > 100) {
    return "max_attempts: " + std::to_string(sub.max_attempts) + " is outside 1..100";
  }
  if (sub.timeout_ms < 100 || sub.timeout_ms > 60000) {
    return "timeout_ms: " + std::to_string(sub.timeout_ms) + " is outside 100..60000";
  }
  if (sub.max_events_per_notification < 1 || sub.max_events_per_notification > 1000) {
    return "max_events_per_notification: " + std::to_string(sub.max_events_per_notification) +
           " is outside 1..1000";
  }
  if (sub.content != "full-resource" && sub.content != "id-only" && sub.content != "empty") {
    return "content: '" + sub.content + "' is not one of full-resource, id-only, empty";
  }
  return {};
}

}  // namespace icr::adapters::fhir
