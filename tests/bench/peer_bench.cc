// icr_peer_bench: the same harness driving this broker and its peers side by
// side (docs/benchmarks.md, "Peers side by side (W1, W2)"; method in the
// benchmark guide):
//
//   icr     this broker over gRPC, out of process (icr.v1 stubs)
//   redis   Redis 7 Streams, XADD (hiredis); server: appendonly yes,
//           appendfsync always (tier A: reply after fsync)
//   rabbitmq RabbitMQ quorum queue, publisher confirms (rabbitmq-c); tier A
//   nats    NATS JetStream, file storage (nats.c); tier B: NATS 2.9 does not
//           fsync per message, the ack only means "written to the OS"
//
// Every system gets the same events: ~1 KB serialized icr.v1.CareEvent (the
// bytes our broker receives are the body the peers store), NHS numbers drawn
// Zipf-skewed over test-range numbers (999xxxxxxx) and used as the routing
// key (Redis field, RabbitMQ routing key, NATS subject token), one TCP
// connection per publisher, unique source_message_ids.
//
// W1, durable publish, closed loop, per publisher count:
//   unary      one event per request, one in flight (our Publish, XADD,
//              publish + wait for its confirm, js_Publish)
//   pipelined  --window events in flight per connection, one event per
//              message (our PublishStream, Redis pipelining, RabbitMQ
//              confirms with a window, NATS async publish)
//   events/s, ack latency (send -> its ack) p50/p99/p99.9, server CPU per
//   event (/proc/PID/stat utime+stime of --server-pid), server RSS.
// W2, publish -> subscriber latency, open loop at fixed offered rates: event
//   i is due at t0 + i/rate and carries that time in its source_message_id;
//   latency = receive time - scheduled time (no coordinated omission).
//   Subscriber: our Subscribe (ephemeral, latest), XREAD BLOCK, basic.consume
//   on the quorum queue (no-ack), JetStream push consumer (deliver new, ack
//   none).
//
// The servers are started by tests/bench/run_peers.sh (pinned with taskset).
// `--broker-bin` makes this program start icr-broker itself (the ctest smoke).
//
//   icr_peer_bench --system icr --broker-bin build/broker/cmd/icr-broker --smoke
//   icr_peer_bench --system redis --port 6479 --server-pid PID --json r.json
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <latch>
#include <map>
#include <mutex>
#include <unordered_map>

#include "tests/bench/bench_common.h"

#if ICR_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif
#if ICR_HAVE_RABBITMQ
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif
#if ICR_HAVE_NATS
#include <nats/nats.h>
#endif

namespace {

using namespace icr::bench;  // NOLINT: the shared benchmark pieces
using icr::v1::CareEvent;
using json = nlohmann::json;

// Names the peers use for their stream / queue.
constexpr const char* kRedisStream = "icr-events";
constexpr const char* kRabbitExchange = "icr.events";
constexpr const char* kRabbitQueue = "icr-events";
constexpr const char* kNatsStream = "ICR_EVENTS";
constexpr const char* kNatsSubjectPrefix = "icr.events.";

struct Config {
  std::string system;
  std::string label;  // name in the report (default: system)
  std::string host = "127.0.0.1";
  int port = 0;       // 0: the system's default of run_peers.sh
  int server_pid = 0;
  std::string broker_bin;  // icr only: start this icr-broker ourselves
  std::string broker_durability = "sync";
  std::vector<std::string> workloads = {"w1", "w2"};
  std::vector<std::string> modes = {"unary", "pipelined"};
  std::vector<int> publishers = {1, 4, 16, 64};
  int window = 64;
  int icr_batch = 1;  // our pipelined mode: events per PublishStream request
  std::vector<double> rates = {1000, 5000, 10000};
  int latency_connections = 4;
  double seconds = 10;
  double warmup = 1;
  int repeat = 3;
  uint64_t patients = 100000;
  double zipf_s = 1.1;
  size_t event_bytes = 1024;
  std::string event_type = "assessment";
  std::string json_path;
  std::string commit;
  bool smoke = false;
};

// ---------------------------------------------------------------------------
// The interface every system implements
// ---------------------------------------------------------------------------

// One connection that publishes. Send() may buffer until Flush(); Poll()
// returns the tokens of acknowledged (durably stored) messages.
class Publisher {
 public:
  virtual ~Publisher() = default;
  virtual bool Send(const CareEvent& e, uint64_t token) = 0;
  virtual bool Flush() { return true; }
  // Appends acknowledged tokens; with `block`, waits (at most 10 s) for one.
  virtual bool Poll(bool block, std::vector<uint64_t>* acked) = 0;
  const std::string& error() const { return error_; }

 protected:
  bool Fail(const std::string& what) {
    if (error_.empty()) error_ = what;
    return false;
  }
  std::string error_;
};

// One subscriber connection; Run() calls `on` with each event's
// source_message_id and its receive time until Stop().
class Subscriber {
 public:
  using OnEvent = std::function<void(const std::string& id, int64_t recv_ns)>;
  virtual ~Subscriber() = default;
  virtual void Run(const OnEvent& on) = 0;
  virtual void Stop() { stop_.store(true); }
  const std::string& error() const { return error_; }

 protected:
  std::atomic<bool> stop_{false};
  std::string error_;
};

class System {
 public:
  virtual ~System() = default;
  virtual std::string Name() const = 0;
  // Creates the stream / queue if needed.
  virtual bool Setup(std::string* err) = 0;
  // Between scenarios: drops what the last one stored (peers), so no
  // scenario pays for another's backlog. Our broker keeps its log.
  virtual bool Reset(std::string* err) = 0;
  virtual std::unique_ptr<Publisher> NewPublisher(bool pipelined, int window,
                                                  std::string* err) = 0;
  virtual std::unique_ptr<Subscriber> NewSubscriber(std::string* err) = 0;
  virtual std::string Describe() const = 0;
};

std::string IdOf(const std::string& body) {
  CareEvent e;
  if (!e.ParseFromString(body)) return {};
  return e.source_message_id();
}

// ---------------------------------------------------------------------------
// icr: this broker over gRPC
// ---------------------------------------------------------------------------

class IcrPublisher : public Publisher {
 public:
  // batch > 1 (pipelined only): events are sent `batch` to a request, the
  // broker's natural way to pipeline (--icr-batch).
  IcrPublisher(const std::string& address, bool pipelined, int batch)
      : stub_(icr::v1::Broker::NewStub(NewChannel(address, g_channel_ids++))),
        pipelined_(pipelined),
        batch_(std::max(1, batch)) {
    if (!pipelined_) return;
    stream_ = stub_->PublishStream(&ctx_);
    reader_ = std::thread([this] {
      icr::v1::PublishStreamResponse resp;
      while (stream_->Read(&resp)) {
        std::lock_guard<std::mutex> lock(mu_);
        if (resp.code() != 0) {
          Fail("PublishStream: " + std::to_string(resp.code()) + " " + resp.message());
        } else {
          auto it = batches_.find(resp.request_id());
          if (it != batches_.end()) {
            acks_.insert(acks_.end(), it->second.begin(), it->second.end());
            batches_.erase(it);
          }
        }
        cv_.notify_one();
      }
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
      cv_.notify_one();
    });
  }
  ~IcrPublisher() override {
    if (!pipelined_) return;
    stream_->WritesDone();
    {
      // Whatever is still in flight after the driver's drain: give up on it.
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::seconds(2), [&] { return broken_; })) {
        ctx_.TryCancel();
      }
    }
    reader_.join();
    stream_->Finish();
  }
  bool Send(const CareEvent& e, uint64_t token) override {
    if (!pipelined_) {
      icr::v1::PublishRequest req;
      *req.mutable_event() = e;
      icr::v1::PublishResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      grpc::Status st = stub_->Publish(&ctx, req, &resp);
      if (!st.ok()) {
        return Fail("Publish: " + std::to_string(st.error_code()) + " " + st.error_message());
      }
      acks_.push_back(token);
      return true;
    }
    *req_.add_events() = e;
    pending_tokens_.push_back(token);
    if (req_.events_size() < batch_) return true;
    return Flush();
  }
  // Sends the request being filled (one event, or a batch).
  bool Flush() {
    if (req_.events_size() == 0) return true;
    const uint64_t id = ++next_request_;
    req_.set_request_id(id);
    {
      std::lock_guard<std::mutex> lock(mu_);
      batches_[id] = std::move(pending_tokens_);
    }
    pending_tokens_.clear();
    const bool ok = stream_->Write(req_);
    req_.clear_events();
    if (!ok) {
      std::lock_guard<std::mutex> lock(mu_);
      return Fail("PublishStream: write failed (stream closed)");
    }
    return true;
  }
  bool Poll(bool block, std::vector<uint64_t>* acked) override {
    if (!pipelined_) {
      acked->insert(acked->end(), acks_.begin(), acks_.end());
      acks_.clear();
      return error_.empty();
    }
    // A partial batch goes out when the driver waits for acknowledgements.
    if (block && !Flush()) return false;
    std::unique_lock<std::mutex> lock(mu_);
    if (block && acks_.empty() && !broken_ &&
        !cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !acks_.empty() || broken_; })) {
      return Fail("PublishStream: no acknowledgement in 10 s");
    }
    acked->insert(acked->end(), acks_.begin(), acks_.end());
    acks_.clear();
    if (broken_ && block && acked->empty()) return Fail("PublishStream: stream ended");
    return error_.empty();
  }

 private:
  std::unique_ptr<icr::v1::Broker::Stub> stub_;
  const bool pipelined_;
  const int batch_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<icr::v1::PublishStreamRequest,
                                           icr::v1::PublishStreamResponse>>
      stream_;
  icr::v1::PublishStreamRequest req_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> acks_;
  std::vector<uint64_t> pending_tokens_;             // of the request being filled
  std::map<uint64_t, std::vector<uint64_t>> batches_;  // request id -> tokens
  uint64_t next_request_ = 0;
  bool broken_ = false;
};

class IcrSubscriber : public Subscriber {
 public:
  explicit IcrSubscriber(const std::string& address)
      : stub_(icr::v1::Broker::NewStub(NewChannel(address, g_channel_ids++))) {
    icr::v1::SubscribeRequest req;
    req.mutable_start()->set_latest(true);
    sub_ = stub_->Subscribe(&ctx_, req);
  }
  void Run(const OnEvent& on) override {
    icr::v1::SubscribeResponse resp;
    while (sub_->Read(&resp)) {
      const int64_t t = NowNs();
      if (resp.has_event()) on(resp.event().source_message_id(), t);
    }
    grpc::Status st = sub_->Finish();
    if (!stop_.load() && !st.ok()) error_ = "Subscribe: " + st.error_message();
  }
  void Stop() override {
    stop_.store(true);
    ctx_.TryCancel();
  }

 private:
  std::unique_ptr<icr::v1::Broker::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<icr::v1::SubscribeResponse>> sub_;
};

class IcrSystem : public System {
 public:
  IcrSystem(std::string address, int batch) : address_(std::move(address)), batch_(batch) {}
  std::string Name() const override { return "icr"; }
  bool Setup(std::string* err) override {
    auto stub = icr::v1::Broker::NewStub(NewChannel(address_, g_channel_ids++));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    icr::v1::GetStatusResponse status;
    grpc::Status st = stub->GetStatus(&ctx, icr::v1::GetStatusRequest(), &status);
    if (!st.ok()) {
      *err = "the broker at " + address_ + " does not answer GetStatus: " + st.error_message();
      return false;
    }
    describe_ = "icr-broker " + status.version() + " at " + address_ + ", durability " +
                status.durability() + " (gRPC, Publish / PublishStream / Subscribe)";
    return true;
  }
  bool Reset(std::string*) override { return true; }
  std::unique_ptr<Publisher> NewPublisher(bool pipelined, int, std::string*) override {
    return std::make_unique<IcrPublisher>(address_, pipelined, batch_);
  }
  std::unique_ptr<Subscriber> NewSubscriber(std::string*) override {
    return std::make_unique<IcrSubscriber>(address_);
  }
  std::string Describe() const override { return describe_; }

 private:
  std::string address_;
  const int batch_;
  std::string describe_;
};

// ---------------------------------------------------------------------------
// redis: Streams, XADD, hiredis (synchronous context, pipelining by hand)
// ---------------------------------------------------------------------------
#if ICR_HAVE_HIREDIS

redisContext* RedisConnect(const std::string& host, int port, std::string* err) {
  timeval tv{10, 0};
  redisContext* c = redisConnectWithTimeout(host.c_str(), port, tv);
  if (c == nullptr || c->err) {
    *err = "redis connect " + host + ":" + std::to_string(port) + ": " +
           (c ? c->errstr : "out of memory");
    if (c) redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, tv);  // no call blocks forever
  return c;
}

// One command, its reply checked (not an error).
bool RedisCommand(redisContext* c, std::initializer_list<std::string> args, std::string* err) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (r == nullptr) {
    *err = std::string("redis: ") + c->errstr;
    return false;
  }
  const bool ok = r->type != REDIS_REPLY_ERROR;
  if (!ok) *err = std::string("redis: ") + r->str;
  freeReplyObject(r);
  return ok;
}

class RedisPublisher : public Publisher {
 public:
  explicit RedisPublisher(redisContext* c) : c_(c) {}
  ~RedisPublisher() override { redisFree(c_); }
  bool Send(const CareEvent& e, uint64_t token) override {
    e.SerializeToString(&body_);
    const char* argv[] = {"XADD", kRedisStream, "*", "nhs", e.nhs_number().data(), "ev",
                          body_.data()};
    const size_t lens[] = {4, std::strlen(kRedisStream), 1, 3, e.nhs_number().size(), 2,
                           body_.size()};
    if (redisAppendCommandArgv(c_, 7, argv, lens) != REDIS_OK) {
      return Fail(std::string("redis append: ") + c_->errstr);
    }
    pending_.push_back(token);  // Redis replies in order
    return true;
  }
  bool Flush() override {
    int done = 0;
    while (!done) {
      if (redisBufferWrite(c_, &done) != REDIS_OK) {
        return Fail(std::string("redis write: ") + c_->errstr);
      }
    }
    return true;
  }
  bool Poll(bool block, std::vector<uint64_t>* acked) override {
    size_t got = 0;
    auto take = [&](void* reply) {
      auto* r = static_cast<redisReply*>(reply);
      const bool ok = r->type != REDIS_REPLY_ERROR;
      if (!ok) Fail(std::string("XADD: ") + r->str);
      freeReplyObject(r);
      if (!pending_.empty()) {
        if (ok) acked->push_back(pending_.front());
        pending_.pop_front();
      }
      ++got;
      return ok;
    };
    void* reply = nullptr;
    // Replies already read.
    if (redisGetReplyFromReader(c_, &reply) != REDIS_OK) {
      return Fail(std::string("redis read: ") + c_->errstr);
    }
    if (reply == nullptr && !pending_.empty()) {
      if (block) {
        // Writes what is buffered, then reads until one reply is complete.
        if (redisGetReply(c_, &reply) != REDIS_OK) {
          return Fail(std::string("redis: ") + c_->errstr);
        }
      } else {
        pollfd p{c_->fd, POLLIN, 0};
        if (::poll(&p, 1, 0) > 0) {
          if (redisBufferRead(c_) != REDIS_OK) {
            return Fail(std::string("redis read: ") + c_->errstr);
          }
          if (redisGetReplyFromReader(c_, &reply) != REDIS_OK) {
            return Fail(std::string("redis read: ") + c_->errstr);
          }
        }
      }
    }
    while (reply != nullptr) {
      take(reply);
      reply = nullptr;
      if (redisGetReplyFromReader(c_, &reply) != REDIS_OK) {
        return Fail(std::string("redis read: ") + c_->errstr);
      }
    }
    return error_.empty();
  }

 private:
  redisContext* c_;
  std::string body_;
  std::deque<uint64_t> pending_;
};

class RedisSubscriber : public Subscriber {
 public:
  explicit RedisSubscriber(redisContext* c) : c_(c) {}
  ~RedisSubscriber() override { redisFree(c_); }
  void Run(const OnEvent& on) override {
    std::string last = "$";  // only until the first entry: then its id
    while (!stop_.load()) {
      const char* argv[] = {"XREAD", "COUNT", "1000", "BLOCK", "100", "STREAMS",
                            kRedisStream, last.c_str()};
      auto* r = static_cast<redisReply*>(redisCommandArgv(c_, 8, argv, nullptr));
      const int64_t t = NowNs();
      if (r == nullptr) {
        error_ = std::string("XREAD: ") + c_->errstr;
        return;
      }
      if (r->type == REDIS_REPLY_ERROR) {
        error_ = std::string("XREAD: ") + r->str;
        freeReplyObject(r);
        return;
      }
      // [[stream, [[id, [field, value, ...]], ...]]]
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
        redisReply* entries = r->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; ++i) {
          redisReply* entry = entries->element[i];
          if (entry->elements != 2) continue;
          last.assign(entry->element[0]->str, entry->element[0]->len);
          redisReply* fields = entry->element[1];
          for (size_t f = 0; f + 1 < fields->elements; f += 2) {
            if (std::strcmp(fields->element[f]->str, "ev") == 0) {
              on(IdOf(std::string(fields->element[f + 1]->str, fields->element[f + 1]->len)), t);
            }
          }
        }
      }
      freeReplyObject(r);
    }
  }

 private:
  redisContext* c_;
};

class RedisSystem : public System {
 public:
  RedisSystem(std::string host, int port) : host_(std::move(host)), port_(port) {}
  std::string Name() const override { return "redis"; }
  bool Setup(std::string* err) override {
    redisContext* c = RedisConnect(host_, port_, err);
    if (!c) return false;
    auto* r = static_cast<redisReply*>(redisCommand(c, "CONFIG GET append*"));
    std::string cfg;
    if (r && r->type == REDIS_REPLY_ARRAY) {
      for (size_t i = 0; i + 1 < r->elements; i += 2) {
        cfg += std::string(r->element[i]->str) + "=" + r->element[i + 1]->str + " ";
      }
    }
    if (r) freeReplyObject(r);
    r = static_cast<redisReply*>(redisCommand(c, "INFO server"));
    std::string version = "?";
    if (r && r->type == REDIS_REPLY_STRING) {
      const char* v = std::strstr(r->str, "redis_version:");
      if (v) version = std::string(v + 14, std::strcspn(v + 14, "\r\n"));
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    describe_ = "Redis " + version + " at " + host_ + ":" + std::to_string(port_) + " (" + cfg +
                "), XADD " + kRedisStream + " (hiredis " + std::to_string(HIREDIS_MAJOR) + "." +
                std::to_string(HIREDIS_MINOR) + ")";
    if (cfg.find("appendfsync=always") == std::string::npos ||
        cfg.find("appendonly=yes") == std::string::npos) {
      describe_ += " WARNING: not appendonly yes + appendfsync always";
    }
    return Reset(err);
  }
  bool Reset(std::string* err) override {
    redisContext* c = RedisConnect(host_, port_, err);
    if (!c) return false;
    const bool ok = RedisCommand(c, {"DEL", kRedisStream}, err);
    redisFree(c);
    return ok;
  }
  std::unique_ptr<Publisher> NewPublisher(bool, int, std::string* err) override {
    redisContext* c = RedisConnect(host_, port_, err);
    if (!c) return nullptr;
    return std::make_unique<RedisPublisher>(c);
  }
  std::unique_ptr<Subscriber> NewSubscriber(std::string* err) override {
    redisContext* c = RedisConnect(host_, port_, err);
    if (!c) return nullptr;
    return std::make_unique<RedisSubscriber>(c);
  }
  std::string Describe() const override { return describe_; }

 private:
  std::string host_;
  int port_;
  std::string describe_;
};
#endif  // ICR_HAVE_HIREDIS

// ---------------------------------------------------------------------------
// rabbitmq: quorum queue behind a topic exchange, publisher confirms
// ---------------------------------------------------------------------------
#if ICR_HAVE_RABBITMQ

std::string AmqpError(const char* what, const amqp_rpc_reply_t& r) {
  std::string s = what;
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return s + ": ok";
    case AMQP_RESPONSE_NONE:
      return s + ": missing RPC reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return s + ": " + amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
        return s + ": connection closed: " +
               std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len);
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
        return s + ": channel closed: " +
               std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len);
      }
      return s + ": server exception";
  }
  return s;
}

// A logged-in connection with channel 1 open.
amqp_connection_state_t AmqpConnect(const std::string& host, int port, std::string* err) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* sock = amqp_tcp_socket_new(conn);
  if (!sock || amqp_socket_open(sock, host.c_str(), port) != AMQP_STATUS_OK) {
    *err = "rabbitmq connect " + host + ":" + std::to_string(port) + " failed";
    amqp_destroy_connection(conn);
    return nullptr;
  }
  amqp_rpc_reply_t r =
      amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    *err = AmqpError("rabbitmq login", r);
    amqp_destroy_connection(conn);
    return nullptr;
  }
  amqp_channel_open(conn, 1);
  r = amqp_get_rpc_reply(conn);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    *err = AmqpError("rabbitmq channel.open", r);
    amqp_destroy_connection(conn);
    return nullptr;
  }
  return conn;
}

void AmqpClose(amqp_connection_state_t conn) {
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

class RabbitPublisher : public Publisher {
 public:
  explicit RabbitPublisher(amqp_connection_state_t conn) : conn_(conn) {
    props_._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props_.delivery_mode = 2;  // persistent
    props_.content_type = amqp_cstring_bytes("application/x-protobuf");
  }
  ~RabbitPublisher() override { AmqpClose(conn_); }
  bool Send(const CareEvent& e, uint64_t token) override {
    e.SerializeToString(&body_);
    amqp_bytes_t body{body_.size(), body_.data()};
    amqp_bytes_t key{e.nhs_number().size(), const_cast<char*>(e.nhs_number().data())};
    int rc = amqp_basic_publish(conn_, 1, amqp_cstring_bytes(kRabbitExchange), key, 0, 0,
                                &props_, body);
    if (rc != AMQP_STATUS_OK) return Fail(std::string("basic.publish: ") + amqp_error_string2(rc));
    pending_.push_back({++tag_, token});  // delivery tags count from 1 per channel
    return true;
  }
  bool Poll(bool block, std::vector<uint64_t>* acked) override {
    const size_t before = acked->size();
    while (!pending_.empty()) {
      amqp_frame_t frame;
      timeval zero{0, 0}, ten{10, 0};
      const bool wait = block && acked->size() == before;
      int rc = amqp_simple_wait_frame_noblock(conn_, &frame, wait ? &ten : &zero);
      if (rc == AMQP_STATUS_TIMEOUT) {
        if (wait) return Fail("rabbitmq: no confirm in 10 s");
        break;
      }
      if (rc != AMQP_STATUS_OK) return Fail(std::string("rabbitmq: ") + amqp_error_string2(rc));
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      const amqp_method_number_t id = frame.payload.method.id;
      if (id == AMQP_BASIC_ACK_METHOD) {
        auto* a = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        Confirm(a->delivery_tag, a->multiple, acked);
      } else if (id == AMQP_BASIC_NACK_METHOD) {
        return Fail("rabbitmq: basic.nack");
      } else if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD) {
        return Fail("rabbitmq: channel or connection closed by the server");
      }
    }
    amqp_maybe_release_buffers(conn_);
    return error_.empty();
  }

 private:
  void Confirm(uint64_t tag, bool multiple, std::vector<uint64_t>* acked) {
    if (multiple) {
      while (!pending_.empty() && pending_.front().first <= tag) {
        acked->push_back(pending_.front().second);
        pending_.pop_front();
      }
      return;
    }
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->first == tag) {
        acked->push_back(it->second);
        pending_.erase(it);
        return;
      }
    }
  }

  amqp_connection_state_t conn_;
  amqp_basic_properties_t props_{};
  std::string body_;
  uint64_t tag_ = 0;
  std::deque<std::pair<uint64_t, uint64_t>> pending_;  // delivery tag, token
};

class RabbitSubscriber : public Subscriber {
 public:
  explicit RabbitSubscriber(amqp_connection_state_t conn) : conn_(conn) {}
  ~RabbitSubscriber() override { AmqpClose(conn_); }
  bool Consume(std::string* err) {
    amqp_basic_consume(conn_, 1, amqp_cstring_bytes(kRabbitQueue), amqp_empty_bytes, 0,
                       /*no_ack=*/1, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      *err = AmqpError("basic.consume", r);
      return false;
    }
    return true;
  }
  void Run(const OnEvent& on) override {
    while (!stop_.load()) {
      amqp_envelope_t env;
      timeval tv{0, 100000};
      amqp_maybe_release_buffers(conn_);
      amqp_rpc_reply_t r = amqp_consume_message(conn_, &env, &tv, 0);
      const int64_t t = NowNs();
      if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
          r.library_error == AMQP_STATUS_TIMEOUT) {
        continue;
      }
      if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        error_ = AmqpError("basic.consume", r);
        return;
      }
      on(IdOf(std::string(static_cast<char*>(env.message.body.bytes), env.message.body.len)), t);
      amqp_destroy_envelope(&env);
    }
  }

 private:
  amqp_connection_state_t conn_;
};

class RabbitSystem : public System {
 public:
  RabbitSystem(std::string host, int port) : host_(std::move(host)), port_(port) {}
  std::string Name() const override { return "rabbitmq"; }
  bool Setup(std::string* err) override {
    amqp_connection_state_t c = AmqpConnect(host_, port_, err);
    if (!c) return false;
    std::string version = "?";
    const amqp_table_t* props = amqp_get_server_properties(c);
    for (int i = 0; props && i < props->num_entries; ++i) {
      const amqp_table_entry_t& e = props->entries[i];
      if (std::string(static_cast<char*>(e.key.bytes), e.key.len) == "version" &&
          e.value.kind == AMQP_FIELD_KIND_UTF8) {
        version.assign(static_cast<char*>(e.value.value.bytes.bytes), e.value.value.bytes.len);
      }
    }
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(kRabbitExchange), amqp_cstring_bytes("topic"),
                          0, /*durable=*/1, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    bool ok = r.reply_type == AMQP_RESPONSE_NORMAL;
    if (!ok) *err = AmqpError("exchange.declare", r);
    if (ok) {
      amqp_table_entry_t arg;
      arg.key = amqp_cstring_bytes("x-queue-type");
      arg.value.kind = AMQP_FIELD_KIND_UTF8;
      arg.value.value.bytes = amqp_cstring_bytes("quorum");
      amqp_table_t args{1, &arg};
      amqp_queue_declare(c, 1, amqp_cstring_bytes(kRabbitQueue), 0, /*durable=*/1, 0, 0, args);
      r = amqp_get_rpc_reply(c);
      ok = r.reply_type == AMQP_RESPONSE_NORMAL;
      if (!ok) *err = AmqpError("queue.declare (quorum)", r);
    }
    if (ok) {
      amqp_queue_bind(c, 1, amqp_cstring_bytes(kRabbitQueue), amqp_cstring_bytes(kRabbitExchange),
                      amqp_cstring_bytes("#"), amqp_empty_table);
      r = amqp_get_rpc_reply(c);
      ok = r.reply_type == AMQP_RESPONSE_NORMAL;
      if (!ok) *err = AmqpError("queue.bind", r);
    }
    AmqpClose(c);
    describe_ = "RabbitMQ " + version + " at " + host_ + ":" + std::to_string(port_) +
                ", quorum queue " + kRabbitQueue + " bound to topic exchange " + kRabbitExchange +
                ", persistent messages, publisher confirms (rabbitmq-c " + AMQP_VERSION_STRING +
                ")";
    return ok && Reset(err);
  }
  bool Reset(std::string* err) override {
    amqp_connection_state_t c = AmqpConnect(host_, port_, err);
    if (!c) return false;
    amqp_queue_purge(c, 1, amqp_cstring_bytes(kRabbitQueue));
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    const bool ok = r.reply_type == AMQP_RESPONSE_NORMAL;
    if (!ok) *err = AmqpError("queue.purge", r);
    AmqpClose(c);
    return ok;
  }
  std::unique_ptr<Publisher> NewPublisher(bool, int, std::string* err) override {
    amqp_connection_state_t c = AmqpConnect(host_, port_, err);
    if (!c) return nullptr;
    amqp_confirm_select(c, 1);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      *err = AmqpError("confirm.select", r);
      AmqpClose(c);
      return nullptr;
    }
    return std::make_unique<RabbitPublisher>(c);
  }
  std::unique_ptr<Subscriber> NewSubscriber(std::string* err) override {
    amqp_connection_state_t c = AmqpConnect(host_, port_, err);
    if (!c) return nullptr;
    auto sub = std::make_unique<RabbitSubscriber>(c);
    if (!sub->Consume(err)) return nullptr;
    return sub;
  }
  std::string Describe() const override { return describe_; }

 private:
  std::string host_;
  int port_;
  std::string describe_;
};
#endif  // ICR_HAVE_RABBITMQ

// ---------------------------------------------------------------------------
// nats: JetStream, file storage
// ---------------------------------------------------------------------------
#if ICR_HAVE_NATS

std::string NatsError(const char* what, natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string out = std::string(what) + ": " + natsStatus_GetText(s);
  if (jerr != 0) out += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  const char* last = nats_GetLastError(nullptr);
  if (last && *last) out += std::string(" - ") + last;
  return out;
}

natsConnection* NatsConnect(const std::string& url, bool send_asap, std::string* err) {
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
  // Write each publish at once instead of waiting for the flusher thread
  // (lower latency; the pipelined mode keeps the library's coalescing).
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, send_asap);
  if (s == NATS_OK) s = natsOptions_SetMaxPendingMsgs(opts, 1 << 20);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    *err = NatsError(("nats connect " + url).c_str(), s);
    return nullptr;
  }
  return nc;
}

class NatsPublisher : public Publisher {
 public:
  NatsPublisher(natsConnection* nc, bool pipelined, int window)
      : nc_(nc), pipelined_(pipelined) {
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = 10000;
    if (pipelined_) {
      o.PublishAsync.MaxPending = window + 1;  // the driver keeps at most `window`
      o.PublishAsync.AckHandler = &NatsPublisher::OnAck;
      o.PublishAsync.AckHandlerClosure = this;
    }
    natsStatus s = natsConnection_JetStream(&js_, nc_, &o);
    if (s != NATS_OK) Fail(NatsError("JetStream context", s));
  }
  ~NatsPublisher() override {
    if (js_) {
      if (pipelined_) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 2000;
        js_PublishAsyncComplete(js_, &po);
      }
      jsCtx_Destroy(js_);
    }
    natsConnection_Destroy(nc_);
  }
  bool Send(const CareEvent& e, uint64_t token) override {
    if (!js_) return false;
    e.SerializeToString(&body_);
    subject_.assign(kNatsSubjectPrefix).append(e.nhs_number());
    if (!pipelined_) {
      jsErrCode jerr = static_cast<jsErrCode>(0);
      jsPubAck* pa = nullptr;
      natsStatus s = js_Publish(&pa, js_, subject_.c_str(), body_.data(),
                                static_cast<int>(body_.size()), nullptr, &jerr);
      jsPubAck_Destroy(pa);
      if (s != NATS_OK) return Fail(NatsError("js_Publish", s, jerr));
      sync_acks_.push_back(token);
      return true;
    }
    natsMsg* msg = nullptr;
    natsStatus s = natsMsg_Create(&msg, subject_.c_str(), nullptr, body_.data(),
                                  static_cast<int>(body_.size()));
    if (s != NATS_OK) return Fail(NatsError("natsMsg_Create", s));
    {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_[msg] = token;
    }
    natsMsg* keep = msg;
    s = js_PublishMsgAsync(js_, &msg, nullptr);
    if (s != NATS_OK) {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_.erase(keep);
      natsMsg_Destroy(msg);
      return Fail(NatsError("js_PublishMsgAsync", s));
    }
    return true;
  }
  bool Poll(bool block, std::vector<uint64_t>* acked) override {
    if (!pipelined_) {
      acked->insert(acked->end(), sync_acks_.begin(), sync_acks_.end());
      sync_acks_.clear();
      return error_.empty();
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (block && acks_.empty() && async_error_.empty() &&
        !cv_.wait_for(lock, std::chrono::seconds(10),
                      [&] { return !acks_.empty() || !async_error_.empty(); })) {
      return Fail("nats: no publish ack in 10 s");
    }
    acked->insert(acked->end(), acks_.begin(), acks_.end());
    acks_.clear();
    if (!async_error_.empty()) return Fail(async_error_);
    return true;
  }

 private:
  static void OnAck(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<NatsPublisher*>(closure);
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      auto it = self->tokens_.find(msg);
      if (it != self->tokens_.end()) {
        if (pa != nullptr) {
          self->acks_.push_back(it->second);
        } else if (self->async_error_.empty()) {
          self->async_error_ = NatsError("js async publish", pae ? pae->Err : NATS_ERR,
                                         pae ? pae->ErrCode : static_cast<jsErrCode>(0));
        }
        self->tokens_.erase(it);
      }
      self->cv_.notify_one();
    }
    natsMsg_Destroy(msg);
  }

  natsConnection* nc_;
  jsCtx* js_ = nullptr;
  const bool pipelined_;
  std::string body_, subject_;
  std::vector<uint64_t> sync_acks_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<natsMsg*, uint64_t> tokens_;
  std::vector<uint64_t> acks_;
  std::string async_error_;
};

class NatsSubscriber : public Subscriber {
 public:
  NatsSubscriber(natsConnection* nc, jsCtx* js, natsSubscription* sub)
      : nc_(nc), js_(js), sub_(sub) {}
  ~NatsSubscriber() override {
    natsSubscription_Unsubscribe(sub_);
    natsSubscription_Destroy(sub_);
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
  }
  void Run(const OnEvent& on) override {
    while (!stop_.load()) {
      natsMsg* msg = nullptr;
      natsStatus s = natsSubscription_NextMsg(&msg, sub_, 100);
      const int64_t t = NowNs();
      if (s == NATS_TIMEOUT) continue;
      if (s != NATS_OK) {
        error_ = NatsError("NextMsg", s);
        return;
      }
      on(IdOf(std::string(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)))),
         t);
      natsMsg_Destroy(msg);
    }
  }

 private:
  natsConnection* nc_;
  jsCtx* js_;
  natsSubscription* sub_;
};

class NatsSystem : public System {
 public:
  NatsSystem(const std::string& host, int port)
      : url_("nats://" + host + ":" + std::to_string(port)) {}
  std::string Name() const override { return "nats"; }
  bool Setup(std::string* err) override {
    natsConnection* nc = NatsConnect(url_, true, err);
    if (!nc) return false;
    jsCtx* js = nullptr;
    natsStatus s = natsConnection_JetStream(&js, nc, nullptr);
    jsErrCode jerr = static_cast<jsErrCode>(0);
    bool ok = s == NATS_OK;
    if (!ok) *err = NatsError("JetStream context", s);
    if (ok) {
      jsStreamConfig sc;
      jsStreamConfig_Init(&sc);
      const std::string subjects = std::string(kNatsSubjectPrefix) + ">";
      const char* subj[] = {subjects.c_str()};
      sc.Name = kNatsStream;
      sc.Subjects = subj;
      sc.SubjectsLen = 1;
      sc.Storage = js_FileStorage;
      jsStreamInfo* si = nullptr;
      s = js_AddStream(&si, js, &sc, nullptr, &jerr);
      if (s != NATS_OK && jerr == JSStreamNameExistErr) s = NATS_OK;  // rerun
      jsStreamInfo_Destroy(si);
      ok = s == NATS_OK;
      if (!ok) *err = NatsError("js_AddStream", s, jerr);
    }
    if (js) jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    describe_ = "NATS JetStream at " + url_ + ", stream " + kNatsStream + " (" +
                kNatsSubjectPrefix + ">), file storage; TIER B: NATS 2.9 does not fsync per "
                "message, its ack means written to the OS, not to disk (nats.c " +
                NATS_VERSION_STRING + ")";
    return ok && Reset(err);
  }
  bool Reset(std::string* err) override {
    natsConnection* nc = NatsConnect(url_, true, err);
    if (!nc) return false;
    jsCtx* js = nullptr;
    natsStatus s = natsConnection_JetStream(&js, nc, nullptr);
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (s == NATS_OK) s = js_PurgeStream(js, kNatsStream, nullptr, &jerr);
    if (s != NATS_OK) *err = NatsError("js_PurgeStream", s, jerr);
    if (js) jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return s == NATS_OK;
  }
  std::unique_ptr<Publisher> NewPublisher(bool pipelined, int window, std::string* err) override {
    natsConnection* nc = NatsConnect(url_, !pipelined, err);
    if (!nc) return nullptr;
    auto p = std::make_unique<NatsPublisher>(nc, pipelined, window);
    if (!p->error().empty()) {
      *err = p->error();
      return nullptr;
    }
    return p;
  }
  std::unique_ptr<Subscriber> NewSubscriber(std::string* err) override {
    natsConnection* nc = NatsConnect(url_, true, err);
    if (!nc) return nullptr;
    jsCtx* js = nullptr;
    natsStatus s = natsConnection_JetStream(&js, nc, nullptr);
    natsSubscription* sub = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (s == NATS_OK) {
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = kNatsStream;
      so.Config.DeliverPolicy = js_DeliverNew;
      so.Config.AckPolicy = js_AckNone;
      const std::string subjects = std::string(kNatsSubjectPrefix) + ">";
      s = js_SubscribeSync(&sub, js, subjects.c_str(), nullptr, &so, &jerr);
    }
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub, 1 << 20, 1 << 30);
    if (s != NATS_OK) {
      *err = NatsError("js_SubscribeSync", s, jerr);
      if (sub) natsSubscription_Destroy(sub);
      if (js) jsCtx_Destroy(js);
      natsConnection_Destroy(nc);
      return nullptr;
    }
    return std::make_unique<NatsSubscriber>(nc, js, sub);
  }
  std::string Describe() const override { return describe_; }

 private:
  std::string url_;
  std::string describe_;
};
#endif  // ICR_HAVE_NATS

std::vector<std::string> CompiledSystems() {
  std::vector<std::string> s = {"icr"};
#if ICR_HAVE_HIREDIS
  s.push_back("redis");
#endif
#if ICR_HAVE_RABBITMQ
  s.push_back("rabbitmq");
#endif
#if ICR_HAVE_NATS
  s.push_back("nats");
#endif
  return s;
}

// ---------------------------------------------------------------------------
// Server process figures
// ---------------------------------------------------------------------------

// Resident set of a process in MiB (VmRSS), or -1.
double RssMiB(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

// icr-broker started by this program (--broker-bin): a free port, a fresh
// data directory, stopped with SIGTERM.
class ChildBroker {
 public:
  bool Start(const std::string& bin, const std::string& durability, std::string* err) {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      *err = "no free port";
      if (s >= 0) ::close(s);
      return false;
    }
    port_ = ntohs(addr.sin_port);
    ::close(s);  // a race with other programs is possible but unlikely
    const std::string listen = "127.0.0.1:" + std::to_string(port_);
    const std::string data = dir_.path() + "/data";
    const std::string log = dir_.path() + "/broker.log";
    std::vector<std::string> args = {bin, "--data-dir", data, "--listen", listen,
                                     "--durability", durability};
    // Only the gRPC listener: the other front doors would take fixed ports.
    const std::string help = Shell("'" + bin + "' --help 2>&1");
    for (const char* flag : {"--mllp-listen", "--fhir-listen"}) {
      if (help.find(flag) != std::string::npos) args.insert(args.end(), {flag, "off"});
    }
    if (help.find("--escalations") != std::string::npos) {
      args.insert(args.end(), {"--escalations", "off"});
    }
    pid_ = ::fork();
    if (pid_ < 0) {
      *err = "fork failed";
      return false;
    }
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      int fd = ::open(log.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      _exit(127);
    }
    // Ready when GetStatus answers (at most 20 s).
    auto stub = icr::v1::Broker::NewStub(grpc::CreateChannel(listen, grpc::InsecureChannelCredentials()));
    for (int i = 0; i < 200; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        *err = "icr-broker exited at start-up: " + Shell("tail -5 '" + log + "'");
        return false;
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
      icr::v1::GetStatusResponse resp;
      if (stub->GetStatus(&ctx, icr::v1::GetStatusRequest(), &resp).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    *err = "icr-broker did not answer within 20 s";
    return false;
  }
  ~ChildBroker() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 100 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (::waitpid(pid_, &status, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
  }
  int pid() const { return pid_; }
  int port() const { return port_; }

 private:
  icr::testing::TempDir dir_;
  int pid_ = -1;
  int port_ = 0;
};

// ---------------------------------------------------------------------------
// W1: closed loop
// ---------------------------------------------------------------------------

struct W1Result {
  std::string mode;
  int publishers = 0;
  int round = 0;
  double seconds = 0;
  uint64_t events = 0, errors = 0;
  std::string first_error;
  double events_per_s = 0;
  Summary ack;
  double server_cpu_us_per_event = -1;  // -1: no server pid
  double client_cpu_us_per_event = 0;
  double server_rss_mib = -1;
  double other_load_cores = 0;
};

size_t FormatId(char* buf, size_t cap, const std::string& run, const char* tag, int pub,
                uint64_t seq) {
  int n = std::snprintf(buf, cap, "%s-%s-%02d-%010llu", run.c_str(), tag, pub % 100,
                        static_cast<unsigned long long>(seq));
  return static_cast<size_t>(std::min<int>(n, static_cast<int>(cap) - 1));
}

class Bench {
 public:
  Bench(const Config& cfg, const Workload& wl, System* sys) : cfg_(cfg), wl_(wl), sys_(sys) {}

  W1Result RunClosed(const std::string& mode, int publishers, int round);

  struct W2Result {
    double rate = 0;
    int round = 0;
    uint64_t expected = 0, received = 0, late_sends = 0, errors = 0;
    double max_send_lag_us = 0;
    Summary e2e;
    double server_cpu_us_per_event = -1;
    double server_rss_mib = -1;
    double other_load_cores = 0;
    std::string first_error;
  };
  W2Result RunOpen(double rate, int round, int index);

 private:
  const Config& cfg_;
  const Workload& wl_;
  System* sys_;
};

struct PubStats {
  std::vector<int64_t> latency_ns;
  uint64_t events = 0, errors = 0;
  std::string first_error;
  void Error(const std::string& e) {
    ++errors;
    if (first_error.empty()) first_error = e;
  }
};

W1Result Bench::RunClosed(const std::string& mode, int publishers, int round) {
  const bool pipelined = mode == "pipelined";
  const int window = pipelined ? std::max(1, cfg_.window) : 1;
  const std::string tag = std::string(pipelined ? "p" : "u") + std::to_string(publishers) + "r" +
                          std::to_string(round);
  std::latch ready(publishers);
  std::latch start(1);
  std::atomic<int64_t> measure_start{0}, measure_end{0};
  std::vector<PubStats> stats(static_cast<size_t>(publishers));
  std::vector<std::thread> threads;
  for (int p = 0; p < publishers; ++p) {
    threads.emplace_back([&, p] {
      PubStats& st = stats[static_cast<size_t>(p)];
      std::string err;
      std::unique_ptr<Publisher> pub = sys_->NewPublisher(pipelined, window, &err);
      ready.count_down();
      start.wait();
      if (!pub) {
        st.Error(err);
        return;
      }
      std::mt19937_64 rng(std::random_device{}() + static_cast<uint64_t>(p));
      CareEvent e = wl_.tmpl;
      char id[128];
      std::unordered_map<uint64_t, int64_t> sent;
      std::vector<uint64_t> acked;
      uint64_t token = 0;
      bool ok = true;
      auto collect = [&](int64_t t1) {
        for (uint64_t a : acked) {
          auto it = sent.find(a);
          if (it == sent.end()) continue;
          if (t1 >= measure_start.load() && t1 < measure_end.load()) {
            st.latency_ns.push_back(t1 - it->second);
            ++st.events;
          }
          sent.erase(it);
        }
        acked.clear();
      };
      while (ok && NowNs() < measure_end.load()) {
        while (static_cast<int>(sent.size()) < window) {
          wl_.Fill(&e, rng, id, FormatId(id, sizeof id, wl_.run_id, tag.c_str(), p, token));
          sent[token] = NowNs();
          if (!pub->Send(e, token)) {
            ok = false;
            break;
          }
          ++token;
        }
        if (!ok || !pub->Flush() || !pub->Poll(true, &acked)) {
          ok = false;
          break;
        }
        collect(NowNs());
      }
      // Drain what is in flight (not counted: after the window).
      const int64_t give_up = NowNs() + 3'000'000'000LL;
      while (ok && !sent.empty() && NowNs() < give_up) {
        if (!pub->Poll(true, &acked)) break;
        collect(NowNs());
      }
      if (!pub->error().empty()) st.Error(pub->error());
    });
  }
  ready.wait();
  measure_start = NowNs() + static_cast<int64_t>(cfg_.warmup * 1e9);
  measure_end = measure_start.load() + static_cast<int64_t>(cfg_.seconds * 1e9);
  start.count_down();
  SleepUntilNs(measure_start);
  ForeignLoad foreign(cfg_.server_pid);
  foreign.Start();
  const double cpu0 = SelfCpuSeconds();
  const auto scpu0 = PidCpuSeconds(cfg_.server_pid);
  SleepUntilNs(measure_end);
  const double cpu1 = SelfCpuSeconds();
  const auto scpu1 = PidCpuSeconds(cfg_.server_pid);
  const double other = foreign.Stop();
  W1Result r;
  r.server_rss_mib = RssMiB(cfg_.server_pid);
  for (auto& t : threads) t.join();

  r.mode = mode;
  r.publishers = publishers;
  r.round = round;
  r.seconds = static_cast<double>(measure_end - measure_start) / 1e9;
  r.other_load_cores = other;
  std::vector<int64_t> lat;
  for (auto& s : stats) {
    r.events += s.events;
    r.errors += s.errors;
    if (r.first_error.empty()) r.first_error = s.first_error;
    lat.insert(lat.end(), s.latency_ns.begin(), s.latency_ns.end());
  }
  r.events_per_s = static_cast<double>(r.events) / r.seconds;
  r.ack = Summarise(&lat);
  if (r.events) {
    r.client_cpu_us_per_event = (cpu1 - cpu0) * 1e6 / static_cast<double>(r.events);
    if (scpu0 && scpu1) {
      r.server_cpu_us_per_event = (*scpu1 - *scpu0) * 1e6 / static_cast<double>(r.events);
    }
  }
  return r;
}

// ---------------------------------------------------------------------------
// W2: open loop publish -> subscriber
// ---------------------------------------------------------------------------

Bench::W2Result Bench::RunOpen(double rate, int round, int index) {
  W2Result r;
  r.rate = rate;
  r.round = round;
  // Ids: <run>-L<index>r<round>-<conn 2>-<event 10>-<scheduled ns 19>; probes: ...-probe-<n>.
  const std::string prefix =
      wl_.run_id + "-L" + std::to_string(index) + "r" + std::to_string(round) + "-";
  const uint64_t total = static_cast<uint64_t>(std::llround(rate * (cfg_.warmup + cfg_.seconds)));
  const uint64_t warm = static_cast<uint64_t>(std::llround(rate * cfg_.warmup));
  r.expected = total - warm;

  std::string err;
  std::unique_ptr<Subscriber> sub = sys_->NewSubscriber(&err);
  if (!sub) {
    r.first_error = "subscriber: " + err;
    r.errors = 1;
    return r;
  }
  std::atomic<bool> probe_seen{false};
  std::atomic<uint64_t> received{0};
  std::vector<int64_t> e2e;
  e2e.reserve(r.expected);
  std::vector<uint8_t> seen(total, 0);
  std::thread subscriber([&] {
    sub->Run([&](const std::string& id, int64_t t) {
      if (id.compare(0, prefix.size(), prefix) != 0) return;
      if (id.compare(prefix.size(), 6, "probe-") == 0) {
        probe_seen.store(true);
        return;
      }
      if (id.size() < prefix.size() + 31) return;
      const uint64_t i = std::strtoull(id.c_str() + id.size() - 30, nullptr, 10);
      const int64_t scheduled = std::strtoll(id.c_str() + id.size() - 19, nullptr, 10);
      if (i >= total || seen[i]) return;
      seen[i] = 1;
      if (i >= warm) {
        e2e.push_back(t - scheduled);
        received.fetch_add(1);
      }
    });
  });

  // Probe until the subscription is live.
  {
    std::unique_ptr<Publisher> probe = sys_->NewPublisher(false, 1, &err);
    std::mt19937_64 rng(1);
    CareEvent e = wl_.tmpl;
    std::vector<uint64_t> acked;
    const int64_t give_up = NowNs() + 10'000'000'000LL;
    for (int n = 0; probe && !probe_seen.load() && NowNs() < give_up; ++n) {
      const std::string id = prefix + "probe-" + std::to_string(n);
      wl_.Fill(&e, rng, id.data(), id.size());
      if (!probe->Send(e, static_cast<uint64_t>(n)) || !probe->Flush() ||
          !probe->Poll(true, &acked)) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!probe_seen.load()) {
      r.first_error = "the subscriber never saw a probe event" +
                      (probe ? (probe->error().empty() ? "" : ": " + probe->error())
                             : ": " + err);
    }
  }

  const int k_conns = std::max(1, cfg_.latency_connections);
  const double period_ns = 1e9 / rate;
  std::vector<uint64_t> late(static_cast<size_t>(k_conns), 0);
  std::vector<int64_t> max_lag(static_cast<size_t>(k_conns), 0);
  std::vector<std::string> errors(static_cast<size_t>(k_conns));
  std::latch ready(k_conns);
  std::latch start(1);
  int64_t t0 = 0;
  std::vector<std::thread> pubs;
  for (int k = 0; k < k_conns && r.first_error.empty(); ++k) {
    pubs.emplace_back([&, k] {
      prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake on time, not 50 us late
      std::string perr;
      std::unique_ptr<Publisher> pub = sys_->NewPublisher(true, cfg_.window, &perr);
      ready.count_down();
      start.wait();
      if (!pub) {
        errors[static_cast<size_t>(k)] = perr;
        return;
      }
      std::mt19937_64 rng(std::random_device{}() + static_cast<uint64_t>(k));
      CareEvent e = wl_.tmpl;
      char id[192];
      std::vector<uint64_t> acked;
      size_t inflight = 0;
      bool ok = true;
      for (uint64_t i = static_cast<uint64_t>(k); ok && i < total;
           i += static_cast<uint64_t>(k_conns)) {
        const int64_t due = t0 + static_cast<int64_t>(static_cast<double>(i) * period_ns);
        SleepUntilNs(due);
        while (ok && static_cast<int>(inflight) >= cfg_.window) {
          ok = pub->Poll(true, &acked);
          inflight -= std::min(inflight, acked.size());
          acked.clear();
        }
        const int64_t now = NowNs();
        if (i >= warm) {
          const int64_t lag = now - due;
          if (lag > 1'000'000) ++late[static_cast<size_t>(k)];
          max_lag[static_cast<size_t>(k)] = std::max(max_lag[static_cast<size_t>(k)], lag);
        }
        int n = std::snprintf(id, sizeof id, "%s%02d-%010llu-%019lld", prefix.c_str(), k,
                              static_cast<unsigned long long>(i), static_cast<long long>(due));
        wl_.Fill(&e, rng, id, static_cast<size_t>(n));
        ok = ok && pub->Send(e, i) && pub->Flush();
        ++inflight;
        ok = ok && pub->Poll(false, &acked);
        inflight -= std::min(inflight, acked.size());
        acked.clear();
      }
      const int64_t give_up = NowNs() + 5'000'000'000LL;
      while (ok && inflight > 0 && NowNs() < give_up) {
        ok = pub->Poll(true, &acked);
        inflight -= std::min(inflight, acked.size());
        acked.clear();
      }
      if (!pub->error().empty()) errors[static_cast<size_t>(k)] = pub->error();
    });
  }
  if (!pubs.empty()) {
    ready.wait();
    t0 = NowNs() + 20'000'000;
    const int64_t measure_start = t0 + static_cast<int64_t>(cfg_.warmup * 1e9);
    start.count_down();
    SleepUntilNs(measure_start);
    ForeignLoad foreign(cfg_.server_pid);
    foreign.Start();
    const auto scpu0 = PidCpuSeconds(cfg_.server_pid);
    for (auto& t : pubs) t.join();
    const auto scpu1 = PidCpuSeconds(cfg_.server_pid);
    r.other_load_cores = foreign.Stop();
    r.server_rss_mib = RssMiB(cfg_.server_pid);
    if (scpu0 && scpu1 && r.expected) {
      r.server_cpu_us_per_event = (*scpu1 - *scpu0) * 1e6 / static_cast<double>(r.expected);
    }
  }
  // Wait for the subscriber to receive everything (at most 5 s).
  const int64_t give_up = NowNs() + 5'000'000'000LL;
  while (r.first_error.empty() && received.load() < r.expected && NowNs() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  sub->Stop();
  subscriber.join();
  if (r.first_error.empty() && !sub->error().empty()) r.first_error = sub->error();
  for (size_t k = 0; k < late.size(); ++k) {
    r.late_sends += late[k];
    r.max_send_lag_us = std::max(r.max_send_lag_us, static_cast<double>(max_lag[k]) / 1000.0);
    if (!errors[k].empty()) {
      ++r.errors;
      if (r.first_error.empty()) r.first_error = errors[k];
    }
  }
  r.received = received.load();
  r.e2e = Summarise(&e2e);
  return r;
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

json ToJson(const W1Result& r) {
  json j = {{"mode", r.mode},
            {"publishers", r.publishers},
            {"round", r.round},
            {"seconds", r.seconds},
            {"events", r.events},
            {"events_per_s", r.events_per_s},
            {"ack_latency", icr::bench::ToJson(r.ack)},
            {"client_cpu_us_per_event", r.client_cpu_us_per_event},
            {"other_load_cores", r.other_load_cores},
            {"errors", r.errors}};
  if (r.server_cpu_us_per_event >= 0) j["server_cpu_us_per_event"] = r.server_cpu_us_per_event;
  if (r.server_rss_mib >= 0) j["server_rss_mib"] = r.server_rss_mib;
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

json ToJson(const Bench::W2Result& r) {
  json j = {{"offered_rate", r.rate},
            {"round", r.round},
            {"expected", r.expected},
            {"received", r.received},
            {"missing", r.expected - std::min(r.expected, r.received)},
            {"late_sends_over_1ms", r.late_sends},
            {"max_send_lag_us", r.max_send_lag_us},
            {"publish_to_subscriber", icr::bench::ToJson(r.e2e)},
            {"other_load_cores", r.other_load_cores},
            {"errors", r.errors}};
  if (r.server_cpu_us_per_event >= 0) j["server_cpu_us_per_event"] = r.server_cpu_us_per_event;
  if (r.server_rss_mib >= 0) j["server_rss_mib"] = r.server_rss_mib;
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

int DefaultPort(const std::string& system) {
  if (system == "redis") return 6479;
  if (system == "rabbitmq") return 5682;
  if (system == "nats") return 4322;
  return 50699;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  bool list = false;
  CLI::App app{"icr_peer_bench: this broker and its peers (Redis Streams, RabbitMQ quorum "
               "queues, NATS JetStream) driven by one harness"};
  app.add_option("--system", cfg.system, "icr, redis, rabbitmq or nats");
  app.add_flag("--list-systems", list, "print the systems this build can drive and exit");
  app.add_option("--label", cfg.label, "name of this run in the report (default: the system)");
  app.add_option("--host", cfg.host, "server address")->capture_default_str();
  app.add_option("--port", cfg.port,
                 "server port (default: redis 6479, rabbitmq 5682, nats 4322, icr 50699)");
  app.add_option("--server-pid", cfg.server_pid,
                 "pid of the server process: its CPU per event and resident memory");
  app.add_option("--broker-bin", cfg.broker_bin,
                 "icr only: start this icr-broker on a free loopback port over a fresh "
                 "directory (instead of --host/--port)");
  app.add_option("--broker-durability", cfg.broker_durability,
                 "durability of the icr-broker started with --broker-bin")
      ->check(CLI::IsMember({"sync", "relaxed"}))
      ->capture_default_str();
  app.add_option("--workload", cfg.workloads, "w1 (closed-loop publish), w2 (open-loop latency)")
      ->delimiter(',')
      ->check(CLI::IsMember({"w1", "w2"}))
      ->capture_default_str();
  app.add_option("--modes", cfg.modes, "W1 modes: unary (one in flight), pipelined (--window)")
      ->delimiter(',')
      ->check(CLI::IsMember({"unary", "pipelined"}))
      ->capture_default_str();
  app.add_option("--publishers", cfg.publishers, "W1 publisher (connection) counts")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--icr-batch", cfg.icr_batch,
                 "our pipelined mode: events per PublishStream request (1: one per message)")
      ->capture_default_str();
  app.add_option("--window", cfg.window, "events in flight per connection, pipelined")
      ->capture_default_str();
  app.add_option("--rates", cfg.rates, "W2 offered rates, events/s")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--latency-connections", cfg.latency_connections,
                 "W2 publisher connections (each pipelined, --window)")
      ->capture_default_str();
  app.add_option("--seconds", cfg.seconds, "measured seconds per scenario")->capture_default_str();
  app.add_option("--warmup", cfg.warmup, "warm-up seconds per scenario")->capture_default_str();
  app.add_option("--repeat", cfg.repeat, "rounds (median [min-max])")->capture_default_str();
  app.add_option("--patients", cfg.patients, "how many test-range NHS numbers")
      ->capture_default_str();
  app.add_option("--zipf", cfg.zipf_s, "Zipf exponent of the NHS number draw")
      ->capture_default_str();
  app.add_option("--event-bytes", cfg.event_bytes, "serialized event size")->capture_default_str();
  app.add_option("--event-type", cfg.event_type,
                 "assessment (our broker updates the person's summary) or referral (every "
                 "event a new discharge referral: our worst case); the peers only store bytes")
      ->check(CLI::IsMember({"assessment", "referral"}))
      ->capture_default_str();
  app.add_option("--json", cfg.json_path, "write every number to this JSON file");
  app.add_option("--commit", cfg.commit, "git commit to record (default: git rev-parse)");
  app.add_flag("--smoke", cfg.smoke,
               "a few seconds with small numbers (CI keeps the program working; the numbers "
               "mean nothing); fails if nothing is acknowledged or received");
  CLI11_PARSE(app, argc, argv);

  const auto compiled = CompiledSystems();
  if (list) {
    for (const auto& s : compiled) std::printf("%s\n", s.c_str());
    return 0;
  }
  if (std::find(compiled.begin(), compiled.end(), cfg.system) == compiled.end()) {
    std::fprintf(stderr,
                 "icr_peer_bench: --system %s is not available in this build (built: icr%s%s%s). "
                 "Peers need their client library at configure time: apt-get install "
                 "libhiredis-dev librabbitmq-dev libnats-dev, then re-run cmake.\n",
                 cfg.system.c_str(), compiled.size() > 1 ? " " : "",
                 compiled.size() > 1 ? compiled[1].c_str() : "",
                 compiled.size() > 2 ? " ..." : "");
    return 2;
  }
  if (cfg.smoke) {
    cfg.seconds = 0.5;
    cfg.warmup = 0.2;
    cfg.publishers = {1, 2};
    cfg.rates = {500};
    cfg.repeat = 1;
    cfg.patients = 1000;
    cfg.window = 16;
    cfg.latency_connections = 2;
  }
  if (cfg.seconds <= 0 || cfg.warmup < 0 || cfg.repeat < 1 || cfg.window < 1 ||
      cfg.patients == 0 || cfg.latency_connections < 1) {
    std::fprintf(stderr, "icr_peer_bench: invalid options\n");
    return 2;
  }
  for (double r : cfg.rates) {
    if (r <= 0) {
      std::fprintf(stderr, "icr_peer_bench: --rates must be positive\n");
      return 2;
    }
  }
  if (cfg.label.empty()) cfg.label = cfg.system;
  if (cfg.port == 0) cfg.port = DefaultPort(cfg.system);
  std::string commit = cfg.commit;
  if (commit.empty()) commit = Shell("git -C '" ICR_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null");
  if (commit.empty()) commit = "unknown";

  std::unique_ptr<ChildBroker> child;
  if (!cfg.broker_bin.empty()) {
    if (cfg.system != "icr") {
      std::fprintf(stderr, "icr_peer_bench: --broker-bin is for --system icr\n");
      return 2;
    }
    child = std::make_unique<ChildBroker>();
    std::string err;
    if (!child->Start(cfg.broker_bin, cfg.broker_durability, &err)) {
      std::fprintf(stderr, "icr_peer_bench: %s\n", err.c_str());
      return 1;
    }
    cfg.host = "127.0.0.1";
    cfg.port = child->port();
    cfg.server_pid = child->pid();
  }

  WorkloadOptions wo;
  wo.patients = cfg.patients;
  wo.zipf_s = cfg.zipf_s;
  wo.event_bytes = cfg.event_bytes;
  wo.referral = cfg.event_type == "referral";
  wo.run_prefix = "pb";
  const Workload wl = MakeWorkload(wo);

  std::unique_ptr<System> sys;
  if (cfg.system == "icr") {
    sys = std::make_unique<IcrSystem>(cfg.host + ":" + std::to_string(cfg.port), cfg.icr_batch);
  }
#if ICR_HAVE_HIREDIS
  if (cfg.system == "redis") sys = std::make_unique<RedisSystem>(cfg.host, cfg.port);
#endif
#if ICR_HAVE_RABBITMQ
  if (cfg.system == "rabbitmq") sys = std::make_unique<RabbitSystem>(cfg.host, cfg.port);
#endif
#if ICR_HAVE_NATS
  if (cfg.system == "nats") sys = std::make_unique<NatsSystem>(cfg.host, cfg.port);
#endif
  {
    std::string err;
    if (!sys->Setup(&err)) {
      std::fprintf(stderr, "icr_peer_bench: %s: %s\n", cfg.system.c_str(), err.c_str());
      return 1;
    }
  }
  const bool w1 = std::find(cfg.workloads.begin(), cfg.workloads.end(), "w1") != cfg.workloads.end();
  const bool w2 = std::find(cfg.workloads.begin(), cfg.workloads.end(), "w2") != cfg.workloads.end();

  std::printf("icr_peer_bench  %s  commit %s  %s\n", cfg.label.c_str(), commit.c_str(),
              UtcNow().c_str());
  std::printf("system: %s\n", sys->Describe().c_str());
  std::printf("server pid %d; load generator on cpus %s; machine %u cores (%s), load average %s\n",
              cfg.server_pid, AffinityList().c_str(), std::thread::hardware_concurrency(),
              CpuModel().c_str(), LoadAvg().c_str());
  std::printf("workload: %zu-byte serialized CareEvent (%s), NHS numbers Zipf s=%.2f over %llu "
              "test numbers as the routing key, one connection per publisher, window %d, "
              "warm-up %.1f s, measured %.1f s, %d round(s)\n\n",
              wl.event_size, cfg.event_type.c_str(), cfg.zipf_s,
              static_cast<unsigned long long>(cfg.patients), cfg.window, cfg.warmup, cfg.seconds,
              cfg.repeat);
  std::fflush(stdout);

  Bench bench(cfg, wl, sys.get());
  std::vector<W1Result> w1r;
  std::vector<Bench::W2Result> w2r;
  bool failed = false;
  for (int round = 1; round <= cfg.repeat; ++round) {
    if (w1) {
      for (const auto& mode : cfg.modes) {
        for (int p : cfg.publishers) {
          if (p < 1) continue;
          std::string err;
          if (!sys->Reset(&err)) {
            std::fprintf(stderr, "icr_peer_bench: reset: %s\n", err.c_str());
            failed = true;
          }
          W1Result r = bench.RunClosed(mode, p, round);
          std::fprintf(stderr,
                       "[%s round %d] w1 %-9s %2d pub %9.0f events/s  ack p50 %.0f p99 %.0f "
                       "p99.9 %.0f us  server %.1f us CPU/event, RSS %.0f MiB  other %.2f%s%s\n",
                       cfg.label.c_str(), round, mode.c_str(), p, r.events_per_s, r.ack.p50,
                       r.ack.p99, r.ack.p999, r.server_cpu_us_per_event, r.server_rss_mib,
                       r.other_load_cores, r.errors ? "  ERRORS: " : "", r.first_error.c_str());
          if (r.events == 0 || r.errors > 0) failed = true;
          w1r.push_back(std::move(r));
        }
      }
    }
    if (w2) {
      for (size_t i = 0; i < cfg.rates.size(); ++i) {
        std::string err;
        if (!sys->Reset(&err)) {
          std::fprintf(stderr, "icr_peer_bench: reset: %s\n", err.c_str());
          failed = true;
        }
        auto r = bench.RunOpen(cfg.rates[i], round, static_cast<int>(i));
        std::fprintf(stderr,
                     "[%s round %d] w2 %.0f/s: e2e p50 %.0f p99 %.0f p99.9 %.0f max %.0f us, "
                     "received %llu/%llu, late sends %llu, other %.2f%s%s\n",
                     cfg.label.c_str(), round, r.rate, r.e2e.p50, r.e2e.p99, r.e2e.p999,
                     r.e2e.max, static_cast<unsigned long long>(r.received),
                     static_cast<unsigned long long>(r.expected),
                     static_cast<unsigned long long>(r.late_sends), r.other_load_cores,
                     r.first_error.empty() ? "" : "  ERROR: ", r.first_error.c_str());
        if (r.received == 0 || r.errors > 0 || !r.first_error.empty()) failed = true;
        w2r.push_back(std::move(r));
      }
    }
  }

  // Tables of this system (median [min-max] of rounds); run_peers.sh puts
  // the systems side by side from the JSON files.
  if (w1) {
    std::printf("W1 durable publish, closed loop: %s%s\n", cfg.label.c_str(),
                cfg.repeat > 1 ? " (median [min-max] of rounds)" : "");
    std::printf("%-9s %4s %24s %18s %18s %18s %10s %10s %8s %6s\n", "mode", "pub", "events/s",
                "ack p50 us", "ack p99 us", "ack p99.9 us", "srv us/ev", "cli us/ev", "RSS MiB",
                "other");
    for (const auto& mode : cfg.modes) {
      for (int p : cfg.publishers) {
        std::vector<double> eps, p50, p99, p999, scpu, ccpu, rss, other;
        for (const auto& r : w1r) {
          if (r.mode != mode || r.publishers != p) continue;
          eps.push_back(r.events_per_s);
          p50.push_back(r.ack.p50);
          p99.push_back(r.ack.p99);
          p999.push_back(r.ack.p999);
          scpu.push_back(r.server_cpu_us_per_event);
          ccpu.push_back(r.client_cpu_us_per_event);
          rss.push_back(r.server_rss_mib);
          other.push_back(r.other_load_cores);
        }
        if (eps.empty()) continue;
        std::printf("%-9s %4d %24s %18s %18s %18s %10s %10s %8s %6s\n", mode.c_str(), p,
                    Spread(eps, "%.0f").c_str(), Spread(p50, "%.0f").c_str(),
                    Spread(p99, "%.0f").c_str(), Spread(p999, "%.0f").c_str(),
                    Fmt("%.1f", Median(scpu)).c_str(), Fmt("%.1f", Median(ccpu)).c_str(),
                    Fmt("%.0f", Median(rss)).c_str(),
                    Fmt("%.2f", *std::max_element(other.begin(), other.end())).c_str());
      }
    }
    std::printf("\n");
  }
  if (w2) {
    std::printf("W2 publish -> subscriber, open loop (from the schedule): %s\n",
                cfg.label.c_str());
    std::printf("%8s %18s %18s %18s %18s %16s %9s %6s\n", "rate/s", "p50 us", "p99 us",
                "p99.9 us", "max us", "received", "late>1ms", "other");
    for (double rate : cfg.rates) {
      std::vector<double> p50, p99, p999, mx, other;
      uint64_t rec = 0, exp = 0, late = 0;
      for (const auto& r : w2r) {
        if (r.rate != rate) continue;
        p50.push_back(r.e2e.p50);
        p99.push_back(r.e2e.p99);
        p999.push_back(r.e2e.p999);
        mx.push_back(r.e2e.max);
        other.push_back(r.other_load_cores);
        rec += r.received;
        exp += r.expected;
        late += r.late_sends;
      }
      if (p50.empty()) continue;
      std::printf("%8.0f %18s %18s %18s %18s %16s %9llu %6s\n", rate, Spread(p50, "%.0f").c_str(),
                  Spread(p99, "%.0f").c_str(), Spread(p999, "%.0f").c_str(),
                  Spread(mx, "%.0f").c_str(),
                  (std::to_string(rec) + "/" + std::to_string(exp)).c_str(),
                  static_cast<unsigned long long>(late),
                  Fmt("%.2f", *std::max_element(other.begin(), other.end())).c_str());
    }
    std::printf("\n");
  }

  json report;
  report["program"] = "icr_peer_bench";
  report["label"] = cfg.label;
  report["system"] = cfg.system;
  report["describe"] = sys->Describe();
  report["tier"] = cfg.system == "nats" || cfg.broker_durability == "relaxed" ? "B" : "A";
  report["date"] = UtcNow();
  report["commit"] = commit;
  report["machine"] = {{"cores", std::thread::hardware_concurrency()},
                       {"cpu_model", CpuModel()},
                       {"load_generator_cpus", AffinityList()},
                       {"load_average_at_end", LoadAvg()}};
  report["config"] = {{"seconds", cfg.seconds},       {"warmup", cfg.warmup},
                      {"repeat", cfg.repeat},         {"window", cfg.window},
                      {"publishers", cfg.publishers}, {"modes", cfg.modes},
                      {"rates", cfg.rates},           {"latency_connections", cfg.latency_connections},
                      {"patients", cfg.patients},     {"zipf_s", cfg.zipf_s},
                      {"event_bytes", wl.event_size}, {"event_type", cfg.event_type},
                      {"smoke", cfg.smoke},           {"server_pid", cfg.server_pid}};
  json j1 = json::array(), j2 = json::array();
  for (const auto& r : w1r) j1.push_back(ToJson(r));
  for (const auto& r : w2r) j2.push_back(ToJson(r));
  report["w1"] = j1;
  report["w2"] = j2;
  report["ok"] = !failed;
  if (!cfg.json_path.empty()) {
    std::ofstream out(cfg.json_path);
    out << report.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "icr_peer_bench: cannot write %s\n", cfg.json_path.c_str());
      failed = true;
    }
  }
  sys.reset();
  child.reset();
  if (failed) std::fprintf(stderr, "icr_peer_bench: FAILED (errors or empty scenarios above)\n");
  return failed ? 1 : 0;
}
