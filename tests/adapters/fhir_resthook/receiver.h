// A FHIR notification receiver for the rest-hook tests: a real HTTP/1.1
// server (Boost.Beast, 127.0.0.1, OS-chosen port) that records every POST and
// can be told to answer 500, to answer late, or to refuse connections.
#pragma once

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace icr::testing {

class Receiver {
 public:
  struct Request {
    std::string target;
    std::string body;
    nlohmann::json json;  // the parsed body (null if it was not JSON)
    std::vector<std::pair<std::string, std::string>> headers;
    unsigned answered = 0;  // status answered at once (0: answered late, see `late`)
    bool late = false;      // answered after a DelayNext delay
    std::chrono::steady_clock::time_point at;
    std::string Header(const std::string& name) const {
      for (const auto& [k, v] : headers) {
        if (beast_iequals(k, name)) return v;
      }
      return {};
    }
    static bool beast_iequals(const std::string& a, const std::string& b) {
      return boost::beast::iequals(a, b);
    }
  };

  Receiver() : acceptor_(io_) {
    Listen(0);
    thread_ = std::thread([this] { io_.run(); });
  }

  ~Receiver() {
    boost::asio::post(io_, [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
      CloseConnections();
    });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  int port() const { return port_; }
  std::string url(const std::string& path = "/fhir/notify") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  // The next n requests are answered with `status`.
  void FailNext(int n, unsigned status = 500) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_next_ = n;
    fail_status_ = status;
  }
  void FailAlways(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_always_ = on;
  }
  // The next n requests are answered after `delay`.
  void DelayNext(int n, std::chrono::milliseconds delay) {
    std::lock_guard<std::mutex> lock(mu_);
    delay_next_ = n;
    delay_ = delay;
  }
  // Closes the listening socket and every open connection: connects are
  // refused until Accept().
  void Refuse() {
    RunOnIo([this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
      CloseConnections();
    });
  }
  void Accept() {
    RunOnIo([this] { Listen(port_); });
  }

  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // Requests answered 2xx.
  std::vector<Request> accepted() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Request> out;
    for (const auto& r : requests_) {
      if (r.answered >= 200 && r.answered < 300) out.push_back(r);
    }
    return out;
  }
  // Waits until pred(requests) holds; false after `timeout`.
  bool WaitFor(const std::function<bool(const std::vector<Request>&)>& pred,
               std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(requests_); });
  }
  bool WaitForAccepted(size_t n, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    return WaitFor(
        [n](const std::vector<Request>& all) {
          size_t k = 0;
          for (const auto& r : all) k += (r.answered >= 200 && r.answered < 300);
          return k >= n;
        },
        timeout);
  }

 private:
  using tcp = boost::asio::ip::tcp;

  struct Conn : std::enable_shared_from_this<Conn> {
    explicit Conn(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
    tcp::socket socket;
    boost::beast::flat_buffer buffer;
    boost::beast::http::request<boost::beast::http::string_body> req;
    boost::beast::http::response<boost::beast::http::string_body> res;
    boost::asio::steady_timer timer;
  };

  void RunOnIo(std::function<void()> fn) {
    std::promise<void> done;
    boost::asio::post(io_, [&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  void Listen(int port) {
    tcp::endpoint ep(boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port));
    acceptor_.open(ep.protocol());
    acceptor_.set_option(boost::asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    DoAccept();
  }

  void DoAccept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;  // closed
      auto conn = std::make_shared<Conn>(std::move(socket));
      conns_.insert(conn);
      DoRead(conn);
      DoAccept();
    });
  }

  void CloseConnections() {
    for (const auto& weak : conns_) {
      if (auto c = weak.lock()) {
        boost::system::error_code ec;
        c->socket.shutdown(tcp::socket::shutdown_both, ec);
        c->socket.close(ec);
        c->timer.cancel();
      }
    }
    conns_.clear();
  }

  void DoRead(std::shared_ptr<Conn> c) {
    c->req = {};
    boost::beast::http::async_read(
        c->socket, c->buffer, c->req, [this, c](boost::system::error_code ec, std::size_t) {
          if (ec) return;
          OnRequest(c);
        });
  }

  void OnRequest(std::shared_ptr<Conn> c) {
    unsigned status = 200;
    std::chrono::milliseconds delay(0);
    size_t index;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (fail_next_ > 0) {
        --fail_next_;
        status = fail_status_;
      } else if (fail_always_) {
        status = 500;
      }
      if (delay_next_ > 0) {
        --delay_next_;
        delay = delay_;
      }
      Request r;
      r.target = std::string(c->req.target());
      r.body = c->req.body();
      r.json = nlohmann::json::parse(r.body, nullptr, false);
      for (const auto& f : c->req) {
        r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      }
      r.at = std::chrono::steady_clock::now();
      r.late = delay.count() > 0;
      index = requests_.size();
      requests_.push_back(std::move(r));
    }
    auto respond = [this, c, status, index, late = delay.count() > 0] {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!late) requests_[index].answered = status;
      }
      cv_.notify_all();
      c->res = {};
      c->res.version(11);
      c->res.result(status);
      c->res.set(boost::beast::http::field::content_type, "application/json");
      c->res.body() = status < 300 ? "" : "{\"resourceType\":\"OperationOutcome\"}";
      c->res.keep_alive(c->req.keep_alive());
      c->res.prepare_payload();
      boost::beast::http::async_write(c->socket, c->res,
                                      [this, c](boost::system::error_code ec, std::size_t) {
                                        if (ec) return;
                                        if (!c->res.keep_alive()) {
                                          boost::system::error_code ignored;
                                          c->socket.shutdown(tcp::socket::shutdown_send, ignored);
                                          return;
                                        }
                                        DoRead(c);
                                      });
    };
    cv_.notify_all();
    if (delay.count() == 0) return respond();
    c->timer.expires_after(delay);
    c->timer.async_wait([respond](boost::system::error_code ec) {
      if (!ec) respond();
    });
  }

  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      io_.get_executor()};
  tcp::acceptor acceptor_;
  std::set<std::weak_ptr<Conn>, std::owner_less<std::weak_ptr<Conn>>> conns_;
  int port_ = 0;
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Request> requests_;
  int fail_next_ = 0;
  unsigned fail_status_ = 500;
  bool fail_always_ = false;
  int delay_next_ = 0;
  std::chrono::milliseconds delay_{0};
};

}  // namespace icr::testing
