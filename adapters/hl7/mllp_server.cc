#include "adapters/hl7/mllp_server.h"

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "adapters/hl7/ack.h"
#include "broker/identity.h"
#include "broker/ingest.h"

namespace icr::adapters::hl7 {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr char kStartBlock = 0x0B;
constexpr char kEndBlock = 0x1C;
constexpr int kDrainSeconds = 2;  // after an AR for an oversize frame, before closing

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class Connection;

}  // namespace

class MllpServer::Impl {
 public:
  Impl(const MllpOptions& options, broker::Ingest* ingest)
      : options_(options), ingest_(ingest), acceptor_(io_), accept_retry_(io_) {
    limits_.max_message_bytes = options.max_message_bytes;
    mapping_.care_setting = options.care_setting;
    mapping_.assume_london_time = options.assume_london_time;
  }

  store::Status Start();
  void Stop();
  void Accept();
  void Remove(Connection* c);
  void PublishStarted() {
    std::lock_guard<std::mutex> lock(mu_);
    ++in_flight_;
  }
  void PublishDone() {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    cv_.notify_all();
  }

  const MllpOptions options_;
  broker::Ingest* const ingest_;
  Er7Limits limits_;
  MappingOptions mapping_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_retry_;
  std::unique_ptr<asio::ssl::context> tls_;
  std::thread thread_;
  int port_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::shared_ptr<Connection>> conns_;  // guarded by mu_
  int in_flight_ = 0;                            // publishes awaiting the store; mu_
  bool stopped_ = false;                         // mu_

  std::atomic<uint64_t> accepted_{0}, messages_{0}, aa_{0}, ae_{0}, ar_{0}, duplicates_{0};
};

namespace {

// One client connection. All its handlers run on its strand (the socket's
// executor); the store's completion is posted there.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(MllpServer::Impl* server, tcp::socket socket)
      : server_(server), ex_(socket.get_executor()), timer_(ex_) {
    error_code ec;
    const tcp::endpoint remote = socket.remote_endpoint(ec);
    std::string peer;
    if (!ec) {
      peer = remote.address().is_v6() ? "[" + remote.address().to_string() + "]"
                                       : remote.address().to_string();
      peer += ":" + std::to_string(remote.port());
    }
    // Unauthenticated until a TLS handshake verifies a client certificate.
    identity_ = broker::IdentityFromCertificate(nullptr, std::move(peer), "mllp");
    if (server->tls_) {
      tls_ = std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(socket), *server->tls_);
    } else {
      plain_.emplace(std::move(socket));
    }
  }

  const asio::any_io_executor& executor() const { return ex_; }

  void Start() {
    if (tls_) {
      ArmTimer(server_->options_.idle_timeout_seconds);
      tls_->async_handshake(asio::ssl::stream_base::server,
                            [self = shared_from_this()](const error_code& ec) {
                              self->CancelTimer();
                              if (ec) return self->Close();
                              self->IdentifyPeer();
                              self->ReadMore();
                            });
    } else {
      ReadMore();
    }
  }

  // Stop after the message in flight, if any (runs on the strand).
  void RequestStop() {
    stop_requested_ = true;
    if (!busy_) Close();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    CancelTimer();
    error_code ec;
    Lowest().shutdown(tcp::socket::shutdown_both, ec);
    Lowest().close(ec);
    server_->Remove(this);
  }

 private:
  tcp::socket& Lowest() { return tls_ ? tls_->next_layer() : *plain_; }

  // After the TLS handshake: the client certificate's subject, when the
  // listener verified one (mutual TLS).
  void IdentifyPeer() {
    SSL* ssl = tls_->native_handle();
    X509* cert = SSL_get0_peer_certificate(ssl);
    if (cert != nullptr && SSL_get_verify_result(ssl) == X509_V_OK &&
        !server_->options_.tls_client_ca_file.empty()) {
      identity_ = broker::IdentityFromCertificate(cert, identity_.peer, "mllp");
    }
  }

  template <typename Handler>
  void AsyncRead(Handler&& h) {
    if (tls_) {
      tls_->async_read_some(asio::buffer(read_buf_), std::forward<Handler>(h));
    } else {
      plain_->async_read_some(asio::buffer(read_buf_), std::forward<Handler>(h));
    }
  }

  template <typename Handler>
  void AsyncWrite(Handler&& h) {
    if (tls_) {
      asio::async_write(*tls_, asio::buffer(write_buf_), std::forward<Handler>(h));
    } else {
      asio::async_write(*plain_, asio::buffer(write_buf_), std::forward<Handler>(h));
    }
  }

  void ArmTimer(int seconds) {
    const uint64_t gen = ++timer_gen_;
    timer_.expires_after(std::chrono::seconds(seconds));
    timer_.async_wait([self = shared_from_this(), gen](const error_code& ec) {
      if (ec || gen != self->timer_gen_) return;
      self->Close();
    });
  }

  void CancelTimer() {
    ++timer_gen_;
    timer_.cancel();
  }

  void ReadMore() {
    if (closed_) return;
    ArmTimer(server_->options_.idle_timeout_seconds);
    AsyncRead([self = shared_from_this()](const error_code& ec, size_t n) {
      self->CancelTimer();
      if (ec) return self->Close();
      self->pending_.append(self->read_buf_.data(), n);
      self->ProcessPending();
    });
  }

  // Consumes buffered bytes until a frame is complete (then handles it and
  // returns) or the buffer is empty (then reads more).
  void ProcessPending() {
    if (closed_) return;
    const size_t max = server_->options_.max_message_bytes;
    while (pos_ < pending_.size()) {
      if (!in_frame_) {
        const char c = pending_[pos_++];
        if (c == kStartBlock) {
          in_frame_ = true;
          frame_.clear();
        } else if (c != '\r' && c != '\n' && c != ' ' && c != '\t') {
          return Close();  // not MLLP
        }
        continue;
      }
      const size_t stop = pending_.find_first_of(std::string_view("\x0b\x1c", 2), pos_);
      const size_t end = stop == std::string::npos ? pending_.size() : stop;
      frame_.append(pending_, pos_, end - pos_);
      pos_ = end;
      if (frame_.size() > max) return RejectOversize();
      if (stop == std::string::npos) break;
      ++pos_;
      if (pending_[stop] == kStartBlock) {  // a new start block: the old frame is dropped
        frame_.clear();
        continue;
      }
      in_frame_ = false;
      pending_.erase(0, pos_);
      pos_ = 0;
      return HandleFrame();
    }
    pending_.clear();
    pos_ = 0;
    if (stop_requested_ && !busy_) return Close();
    ReadMore();
  }

  void HandleFrame() {
    busy_ = true;
    server_->messages_.fetch_add(1, std::memory_order_relaxed);
    AckParams params;
    params.control_id = NewAckControlId();
    params.now_seconds = NowSeconds();
    params.application = server_->options_.ack_application;
    auto msg = std::make_shared<Er7Message>();
    auto mapped = std::make_shared<MappingResult>();
    std::string ack;
    const bool publish = PrepareMessage(frame_, server_->limits_, server_->mapping_, params,
                                        msg.get(), mapped.get(), &ack);
    frame_.clear();
    frame_.shrink_to_fit();
    if (!publish) {
      return WriteAck(std::move(ack), mapped->ack == AckCode::kAA ? AckCode::kAR : mapped->ack,
                      false);
    }
    std::vector<icr::v1::CareEvent> events = std::move(mapped->events);
    mapped->events.clear();
    server_->PublishStarted();
    MllpServer::Impl* server = server_;
    server_->ingest_->Publish(
        std::move(events), /*batch=*/true,
        [self = shared_from_this(), msg, mapped, params, server](
            const store::Status& status, std::vector<store::AppendResult> results) mutable {
          bool duplicate = status.ok() && !results.empty();
          for (const auto& r : results) duplicate = duplicate && r.duplicate;
          // Hand everything to the strand; keep no reference here once posted.
          asio::any_io_executor ex = self->executor();
          asio::post(ex, [self = std::move(self), msg = std::move(msg),
                          mapped = std::move(mapped), params = std::move(params), status,
                          duplicate]() {
            if (duplicate) self->server_->duplicates_.fetch_add(1, std::memory_order_relaxed);
            self->WriteAck(AckForPublish(*msg, *mapped, status, params),
                           AckCodeForPublish(status), false);
          });
          server->PublishDone();
        },
        /*origin=*/0, &identity_);  // the callback's `self` keeps identity_ alive
  }

  void RejectOversize() {
    busy_ = true;
    in_frame_ = false;
    server_->messages_.fetch_add(1, std::memory_order_relaxed);
    // Read the MSH (first line) so the AR can name the sender and MSA-2.
    const size_t eol = frame_.find_first_of("\r\n");
    Er7Message msh;
    ParseEr7(std::string_view(frame_).substr(0, eol == std::string::npos ? 4096 : eol),
             server_->limits_, &msh);
    Hl7Error e;
    e.code = kErrDataType;
    e.text = "message: the MLLP frame exceeds the limit of " +
             std::to_string(server_->options_.max_message_bytes) +
             " bytes; nothing was stored and the connection will be closed";
    AckParams params;
    params.control_id = NewAckControlId();
    params.now_seconds = NowSeconds();
    params.application = server_->options_.ack_application;
    frame_.clear();
    frame_.shrink_to_fit();
    pending_.clear();
    pos_ = 0;
    WriteAck(BuildAck(msh, AckCode::kAR, {e}, params), AckCode::kAR, true);
  }

  void WriteAck(std::string ack, AckCode code, bool close_after) {
    auto& counter = code == AckCode::kAA   ? server_->aa_
                    : code == AckCode::kAE ? server_->ae_
                                           : server_->ar_;
    counter.fetch_add(1, std::memory_order_relaxed);
    if (closed_) return;
    write_buf_.clear();
    write_buf_ += kStartBlock;
    write_buf_ += ack;
    write_buf_ += kEndBlock;
    write_buf_ += '\r';
    ArmTimer(server_->options_.idle_timeout_seconds);
    AsyncWrite([self = shared_from_this(), close_after](const error_code& ec, size_t) {
      self->CancelTimer();
      if (ec) return self->Close();
      if (close_after) return self->Drain();
      self->busy_ = false;
      if (self->stop_requested_) return self->Close();
      self->ProcessPending();
    });
  }

  // Half-closes and discards input for a moment, so the peer reads the AR
  // before the connection goes (closing with unread input would reset it).
  void Drain() {
    if (closed_) return;
    error_code ec;
    Lowest().shutdown(tcp::socket::shutdown_send, ec);
    ArmTimer(kDrainSeconds);
    DrainRead();
  }

  void DrainRead() {
    Lowest().async_read_some(asio::buffer(read_buf_),
                             [self = shared_from_this()](const error_code& ec, size_t) {
                               if (ec) return self->Close();
                               self->DrainRead();
                             });
  }

  MllpServer::Impl* const server_;
  broker::PeerIdentity identity_;  // set before the first read; then read-only
  asio::any_io_executor ex_;
  std::optional<tcp::socket> plain_;
  std::unique_ptr<asio::ssl::stream<tcp::socket>> tls_;
  asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  std::array<char, 16384> read_buf_;
  std::string pending_;
  size_t pos_ = 0;
  std::string frame_;
  std::string write_buf_;
  bool in_frame_ = false;
  bool busy_ = false;  // a frame is being handled (publish or ACK write)
  bool stop_requested_ = false;
  bool closed_ = false;
};

bool SplitHostPort(const std::string& listen, std::string* host, std::string* port) {
  if (!listen.empty() && listen[0] == '[') {
    size_t close = listen.find("]:");
    if (close == std::string::npos) return false;
    *host = listen.substr(1, close - 1);
    *port = listen.substr(close + 2);
  } else {
    size_t colon = listen.rfind(':');
    if (colon == std::string::npos) return false;
    *host = listen.substr(0, colon);
    *port = listen.substr(colon + 1);
  }
  if (host->empty() || *host == "*") *host = "0.0.0.0";
  if (port->empty() || port->size() > 5) return false;
  for (char c : *port) {
    if (c < '0' || c > '9') return false;
  }
  return std::stoi(*port) <= 65535;
}

}  // namespace

store::Status MllpServer::Impl::Start() {
  std::string host, port;
  if (!SplitHostPort(options_.listen, &host, &port)) {
    return store::Status::InvalidArgument("mllp listen: '" + options_.listen +
                                          "' is not host:port (e.g. 0.0.0.0:2575)");
  }
  if (options_.max_message_bytes < 64) {
    return store::Status::InvalidArgument("mllp max_message_bytes: must be at least 64");
  }
  if (options_.idle_timeout_seconds < 1) {
    return store::Status::InvalidArgument("mllp idle_timeout_seconds: must be at least 1");
  }
  if (options_.tls_certificate_file.empty() != options_.tls_private_key_file.empty()) {
    return store::Status::InvalidArgument(
        "mllp TLS: set both the certificate file and the private key file, or neither");
  }
  if (!options_.tls_certificate_file.empty()) {
    tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
    error_code ec;
    tls_->use_certificate_chain_file(options_.tls_certificate_file, ec);
    if (ec) {
      return store::Status::InvalidArgument("mllp TLS certificate '" +
                                            options_.tls_certificate_file + "': " + ec.message());
    }
    tls_->use_private_key_file(options_.tls_private_key_file, asio::ssl::context::pem, ec);
    if (ec) {
      return store::Status::InvalidArgument("mllp TLS private key '" +
                                            options_.tls_private_key_file + "': " + ec.message());
    }
    if (!options_.tls_client_ca_file.empty()) {
      tls_->load_verify_file(options_.tls_client_ca_file, ec);
      if (ec) {
        return store::Status::InvalidArgument("mllp TLS client CA '" +
                                              options_.tls_client_ca_file + "': " + ec.message());
      }
      tls_->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    }
  }
  error_code ec;
  tcp::resolver resolver(io_);
  auto results = resolver.resolve(host, port, tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return store::Status::InvalidArgument("mllp listen: cannot resolve '" + host +
                                          "': " + ec.message());
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return store::Status::Unavailable("mllp: cannot listen on " + options_.listen + ": " +
                                      ec.message());
  }
  port_ = acceptor_.local_endpoint().port();
  work_.emplace(io_.get_executor());
  Accept();
  thread_ = std::thread([this] {
    try {
      io_.run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "icr-broker: MLLP listener stopped: %s\n", e.what());
    }
  });
  return store::Status::Ok();
}

void MllpServer::Impl::Accept() {
  acceptor_.async_accept(asio::make_strand(io_), [this](const error_code& ec, tcp::socket s) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      // e.g. too many open files: try again shortly rather than spin.
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](const error_code& e) {
        if (!e && acceptor_.is_open()) Accept();
      });
      return;
    }
    std::shared_ptr<Connection> c;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stopped_ && conns_.size() < static_cast<size_t>(options_.max_connections)) {
        c = std::make_shared<Connection>(this, std::move(s));
        conns_.insert(c);
      }
    }
    if (c) {
      accepted_.fetch_add(1, std::memory_order_relaxed);
      asio::post(c->executor(), [c] { c->Start(); });
    } else {
      error_code ignored;
      s.close(ignored);
    }
    Accept();
  });
}

void MllpServer::Impl::Remove(Connection* c) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = conns_.begin(); it != conns_.end(); ++it) {
    if (it->get() == c) {
      conns_.erase(it);
      break;
    }
  }
  cv_.notify_all();
}

void MllpServer::Impl::Stop() {
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    conns.assign(conns_.begin(), conns_.end());
  }
  if (!thread_.joinable()) return;  // never started
  asio::post(io_, [this] {
    error_code ec;
    acceptor_.close(ec);
    accept_retry_.cancel();
  });
  for (auto& c : conns) asio::post(c->executor(), [c] { c->RequestStop(); });
  conns.clear();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(options_.stop_grace_ms),
                 [this] { return conns_.empty() && in_flight_ == 0; });
    conns.assign(conns_.begin(), conns_.end());
  }
  for (auto& c : conns) asio::post(c->executor(), [c] { c->Close(); });
  conns.clear();
  {
    // The store answers every publish; wait for those answers so that no
    // callback runs after the server is gone.
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return conns_.empty() && in_flight_ == 0; });
  }
  work_.reset();
  thread_.join();
}

store::Status MllpServer::Start(const MllpOptions& options, broker::Ingest* ingest,
                                std::unique_ptr<MllpServer>* out) {
  if (ingest == nullptr) return store::Status::InvalidArgument("mllp: ingest is required");
  auto impl = std::make_shared<Impl>(options, ingest);
  store::Status s = impl->Start();
  if (!s.ok()) return s;
  out->reset(new MllpServer(std::move(impl)));
  return store::Status::Ok();
}

MllpServer::MllpServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

MllpServer::~MllpServer() { Stop(); }

int MllpServer::port() const { return impl_->port_; }

void MllpServer::Stop() { impl_->Stop(); }

MllpStats MllpServer::stats() const {
  MllpStats s;
  s.connections_accepted = impl_->accepted_.load();
  s.messages = impl_->messages_.load();
  s.acks_aa = impl_->aa_.load();
  s.acks_ae = impl_->ae_.load();
  s.acks_ar = impl_->ar_.load();
  s.duplicates = impl_->duplicates_.load();
  return s;
}

}  // namespace icr::adapters::hl7
