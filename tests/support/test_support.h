// Helpers shared by the tests and benchmarks: temporary directories, NHS
// numbers from the test range, realistic events, and a broker started on a
// free loopback port.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "broker/broker.h"
#include "icr/v1/broker.grpc.pb.h"
#include "icr/v1/workflow.grpc.pb.h"

namespace icr::testing {

// A fresh directory under $TMPDIR, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The n-th Modulus 11 valid NHS number of the test range 999 000 0000 -
// 999 999 9999 (n = 0, 1, 2, ...; skips stems whose check digit is 10).
std::string TestNhsNumber(uint64_t n);

// A valid ROUTINE admission event for `nhs`, with the given message id.
icr::v1::CareEvent AdmissionEvent(const std::string& nhs, const std::string& message_id);
// A valid URGENT pathway-1 discharge referral addressed to CCC/HSCT-UHCW.
icr::v1::CareEvent ReferralEvent(const std::string& nhs, const std::string& message_id);

// What a program run by RunProgram did.
struct ProgramRun {
  int exit_code = -1;      // 128 + signal if it was killed
  std::string out, err;    // its standard output and error
  std::string start_error; // non-empty if it could not be started
};

// Runs `argv` (argv[0] a path) with standard input from /dev/null, its
// standard output and error in files under `dir`, and waits for it (at most
// 120 s: then it is killed and start_error says so).
ProgramRun RunProgram(const std::vector<std::string>& argv, const std::string& dir);

// Flips one byte (XOR 0x5a) at `offset` of the file at `path`, as disk damage
// would; false if the file cannot be read and written there.
bool FlipByte(const std::string& path, uint64_t offset);

// One unary call of `method` ("/package.Service/Method") carrying `bytes` as
// they are, on `channel` (no generated stub: bytes a stub could not produce,
// or a service Debian ships no C++ client for). Waits for the answer; the
// response bytes go to *response if given.
grpc::Status GenericUnaryCall(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& method, const std::string& bytes,
                              grpc::ClientContext* ctx, std::string* response = nullptr);

// Options for a broker on 127.0.0.1 with an OS-chosen port over `data_dir`.
icr::broker::BrokerOptions TestBrokerOptions(const std::string& data_dir);

// A client context whose deadline is `timeout` from now.
std::unique_ptr<grpc::ClientContext> Context(
    std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A broker on 127.0.0.1 with an OS-chosen port over `data_dir`.
class TestBroker {
 public:
  explicit TestBroker(const std::string& data_dir,
                      icr::store::Durability durability = icr::store::Durability::kSync);
  // REQUIRES: options.listen_address has port 0 (see TestBrokerOptions).
  explicit TestBroker(const icr::broker::BrokerOptions& options);
  ~TestBroker();
  int port() const { return server_->port(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port()); }
  std::unique_ptr<icr::v1::Broker::Stub> NewStub() const;
  std::unique_ptr<icr::v1::Workflow::Stub> NewWorkflowStub() const;
  void Shutdown();

 private:
  std::unique_ptr<icr::broker::BrokerServer> server_;
};

}  // namespace icr::testing
