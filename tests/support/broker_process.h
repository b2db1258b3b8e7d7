// The real icr-broker binary as a child process, for tests of what only a
// process shows: kill -9, SIGTERM, start-up refusals. Its stderr goes to a
// log file, read until it reports its gRPC port.
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern "C" char** environ;

namespace icr::testing {

class BrokerProcess {
 public:
  // Starts `binary` on `data_dir` with loopback ports picked by the kernel
  // (gRPC, MLLP, FHIR) and `extra` arguments. Throws if it does not report
  // its port within 6 s (the log says why).
  BrokerProcess(const std::string& binary, const std::string& data_dir,
                const std::string& log_path, std::vector<std::string> extra = {})
      : log_path_(log_path) {
    std::vector<std::string> args = {binary,        "--data-dir",   data_dir,
                                     "--listen",    "127.0.0.1:0",  "--mllp-listen",
                                     "127.0.0.1:0", "--fhir-listen", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // posix_spawn, not fork: the test process has gRPC threads, and a forked
    // child may only call async-signal-safe functions.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    const int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error("cannot start " + binary + ": " + std::strerror(rc));
    }
    using namespace std::chrono_literals;
    for (int i = 0; i < 300 && port_ == 0; ++i) {
      std::this_thread::sleep_for(20ms);
      std::string out = Log();
      auto at = out.find("(port ");
      if (at != std::string::npos) port_ = std::stoi(out.substr(at + 6));
    }
    if (port_ == 0) {
      Kill9();
      throw std::runtime_error("broker did not start: " + Log());
    }
  }
  ~BrokerProcess() {
    if (pid_ > 0) Kill9();
  }
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;

  std::string Log() const {
    std::ifstream in(log_path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  void Kill9() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // Sends SIGTERM without waiting.
  void SendTerm() {
    if (pid_ > 0) kill(pid_, SIGTERM);
  }

  // Waits up to `limit` for the process to end: its wait status; -1 (and a
  // test failure, the process killed) if it did not end in time.
  int Wait(std::chrono::seconds limit = std::chrono::seconds(60)) {
    if (pid_ <= 0) return -1;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the broker did not exit within " << limit.count() << " s: " << Log();
        Kill9();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return status;
  }

  // SIGTERM, then waits: it must exit with status 0.
  void Terminate() {
    SendTerm();
    const int status = Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return pid_; }

  // A line of /proc/<pid>/status ("VmRSS", "VmHWM"), in KiB; 0 if unknown.
  long StatusKb(const std::string& key) const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(key + ":", 0) == 0) return std::atol(line.c_str() + key.size() + 1);
    }
    return 0;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_path_;
};

}  // namespace icr::testing
