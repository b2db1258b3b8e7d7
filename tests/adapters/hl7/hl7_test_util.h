// Helpers for the HL7 adapter tests: fixtures, a broker with an MLLP
// listener on free loopback ports, and a small blocking MLLP client.
#pragma once

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>

#include "adapters/hl7/mllp_server.h"
#include "broker/broker.h"
#include "icr/v1/broker.grpc.pb.h"
#include "tests/support/test_support.h"

namespace icr::adapters::hl7::testing {

// A fixture file from tests/adapters/hl7/fixtures, with its LF line ends
// turned into HL7's CR.
inline std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(ICR_HL7_FIXTURES) + "/" + name, std::ios::binary);
  if (!in) throw std::runtime_error("missing fixture " + name);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  for (char& c : s) {
    if (c == '\n') c = '\r';
  }
  return s;
}

// Replaces the first occurrence of `from` in `s` by `to`.
inline std::string Replace(std::string s, const std::string& from, const std::string& to) {
  size_t p = s.find(from);
  if (p == std::string::npos) throw std::runtime_error("no '" + from + "' in message");
  return s.replace(p, from.size(), to);
}

// A broker (gRPC on a free port, RocksDB in a temp dir) with an MLLP
// listener on another free port.
class Hl7Broker {
 public:
  explicit Hl7Broker(MllpOptions mllp = {},
                     icr::store::Durability durability = icr::store::Durability::kSync) {
    icr::broker::BrokerOptions options;
    options.data_dir = dir_.path();
    options.listen_address = "127.0.0.1:0";
    options.durability = durability;
    options.shutdown_grace_ms = 1000;
    auto s = icr::broker::BrokerServer::Start(options, &broker_);
    if (!s.ok()) throw std::runtime_error("broker did not start: " + s.ToString());
    mllp.listen = "127.0.0.1:0";
    s = MllpServer::Start(mllp, broker_->ingest(), &mllp_);
    if (!s.ok()) throw std::runtime_error("MLLP listener did not start: " + s.ToString());
  }
  ~Hl7Broker() { Shutdown(); }

  void Shutdown() {
    if (mllp_) mllp_->Stop();
    if (broker_) broker_->Shutdown();
  }

  int mllp_port() const { return mllp_->port(); }
  MllpServer* mllp() { return mllp_.get(); }
  icr::broker::BrokerServer* broker() { return broker_.get(); }
  uint64_t last_position() { return broker_->store()->LastPosition(); }
  std::unique_ptr<icr::v1::Broker::Stub> NewStub() const {
    return icr::v1::Broker::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(broker_->port()), grpc::InsecureChannelCredentials()));
  }
  // A person's stored events through the gRPC API.
  std::vector<icr::v1::CareEvent> History(const std::string& nhs) {
    auto stub = NewStub();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    icr::v1::GetPatientHistoryRequest req;
    req.set_nhs_number(nhs);
    icr::v1::GetPatientHistoryResponse resp;
    grpc::Status s = stub->GetPatientHistory(&ctx, req, &resp);
    if (!s.ok()) throw std::runtime_error("GetPatientHistory: " + s.error_message());
    return {resp.events().begin(), resp.events().end()};
  }

 private:
  icr::testing::TempDir dir_;
  std::unique_ptr<icr::broker::BrokerServer> broker_;
  std::unique_ptr<MllpServer> mllp_;
};

// A blocking MLLP client over a plain socket, with timeouts.
class MllpClient {
 public:
  explicit MllpClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect failed");
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~MllpClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  MllpClient(const MllpClient&) = delete;
  MllpClient& operator=(const MllpClient&) = delete;

  // Writes raw bytes; false if the peer has gone.
  bool SendRaw(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  bool Send(const std::string& message) { return SendRaw("\x0b" + message + "\x1c\r"); }

  // The next frame's content; "" on timeout or when the peer closed (see closed()).
  std::string ReadFrame(int timeout_ms = 10000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      size_t start = buf_.find('\x0b');
      if (start != std::string::npos) {
        size_t end = buf_.find("\x1c\r", start);
        if (end != std::string::npos) {
          std::string frame = buf_.substr(start + 1, end - start - 1);
          buf_.erase(0, end + 2);
          return frame;
        }
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) return {};
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return {};
      char tmp[65536];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) {
        closed_ = true;
        return {};
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

  // Sends a message and returns its ACK ("" if none came).
  std::string Call(const std::string& message, int timeout_ms = 10000) {
    if (!Send(message)) return {};
    return ReadFrame(timeout_ms);
  }

  // True once the peer has closed the connection (waits up to timeout_ms).
  bool WaitClosed(int timeout_ms = 5000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!closed_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      char tmp[65536];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) closed_ = true;
    }
    return true;
  }

 private:
  int fd_ = -1;
  std::string buf_;
  bool closed_ = false;
};

}  // namespace icr::adapters::hl7::testing
