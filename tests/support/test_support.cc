#include "tests/support/test_support.h"

#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <spawn.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "broker/nhs_number.h"

extern char** environ;

namespace icr::testing {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "icr-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TestNhsNumber(uint64_t n) {
  // The n-th stem from 999000000 that has a check digit (1 in 11 has none).
  static std::mutex mu;
  static std::vector<uint32_t> stems;
  std::lock_guard<std::mutex> lock(mu);
  uint32_t stem = stems.empty() ? 999000000 - 1 : stems.back();
  while (stems.size() <= n) {
    ++stem;
    if (stem > 999999999) throw std::runtime_error("test NHS number range exhausted");
    if (icr::broker::NhsCheckDigit(std::to_string(stem))) stems.push_back(stem);
  }
  std::string nine = std::to_string(stems[n]);
  return nine + std::to_string(*icr::broker::NhsCheckDigit(nine));
}

namespace {
void Now(google::protobuf::Timestamp* t) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  t->set_seconds(std::chrono::duration_cast<std::chrono::seconds>(now).count() - 60);
}

// The envelope both builders share: UHCW's EPR, a minute ago.
icr::v1::CareEvent UhcwEnvelope(const std::string& nhs, const std::string& message_id,
                                icr::v1::Priority priority) {
  icr::v1::CareEvent e;
  e.set_source_system_id("uhcw-epr");
  e.set_source_organisation("RKB");
  e.set_care_setting(icr::v1::ACUTE);
  e.set_source_message_id(message_id);
  e.set_nhs_number(nhs);
  Now(e.mutable_occurred_at());
  e.set_priority(priority);
  return e;
}
}  // namespace

icr::v1::CareEvent AdmissionEvent(const std::string& nhs, const std::string& message_id) {
  icr::v1::CareEvent e = UhcwEnvelope(nhs, message_id, icr::v1::ROUTINE);
  auto* a = e.mutable_admission();
  a->set_encounter_id("ENC-" + message_id);
  a->mutable_location()->set_site("RKB01");
  a->mutable_location()->set_ward("Ward 33");
  a->set_admission_method("emergency");
  return e;
}

icr::v1::CareEvent ReferralEvent(const std::string& nhs, const std::string& message_id) {
  icr::v1::CareEvent e = UhcwEnvelope(nhs, message_id, icr::v1::URGENT);
  e.mutable_addressee()->set_organisation("CCC");
  e.mutable_addressee()->set_team_code("HSCT-UHCW");
  auto* r = e.mutable_discharge_referral();
  r->set_referral_id("REF-" + message_id);
  r->set_pathway(icr::v1::PATHWAY_1);
  r->mutable_referrer()->set_organisation("RKB");
  r->mutable_referrer()->set_team_code("WARD-33");
  r->mutable_needs()->set_carers_per_call(2);
  r->mutable_needs()->set_summary("Needs help washing and dressing; lives alone.");
  r->set_place(icr::v1::COVENTRY);
  auto* d = r->mutable_discharge_ready_date();
  d->set_year(2026);
  d->set_month(11);
  d->set_day(23);
  return e;
}

std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

icr::broker::BrokerOptions TestBrokerOptions(const std::string& data_dir) {
  icr::broker::BrokerOptions options;
  options.data_dir = data_dir;
  options.listen_address = "127.0.0.1:0";
  options.shutdown_grace_ms = 1000;
  return options;
}

TestBroker::TestBroker(const std::string& data_dir, icr::store::Durability durability) {
  icr::broker::BrokerOptions options = TestBrokerOptions(data_dir);
  options.durability = durability;
  auto s = icr::broker::BrokerServer::Start(options, &server_);
  if (!s.ok()) throw std::runtime_error("broker did not start: " + s.ToString());
}

TestBroker::TestBroker(const icr::broker::BrokerOptions& options) {
  auto s = icr::broker::BrokerServer::Start(options, &server_);
  if (!s.ok()) throw std::runtime_error("broker did not start: " + s.ToString());
}

TestBroker::~TestBroker() { Shutdown(); }

void TestBroker::Shutdown() {
  if (server_) server_->Shutdown();
}

std::unique_ptr<icr::v1::Workflow::Stub> TestBroker::NewWorkflowStub() const {
  return icr::v1::Workflow::NewStub(
      grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
}

std::unique_ptr<icr::v1::Broker::Stub> TestBroker::NewStub() const {
  return icr::v1::Broker::NewStub(
      grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
}

namespace {
std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

grpc::Status GenericUnaryCall(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& method, const std::string& bytes,
                              grpc::ClientContext* ctx, std::string* response) {
  grpc::GenericStub generic(channel);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer in(&slice, 1), out;
  std::promise<grpc::Status> done;
  generic.UnaryCall(ctx, method, grpc::StubOptions(), &in, &out,
                    [&done](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  if (response != nullptr) {
    response->clear();
    std::vector<grpc::Slice> slices;
    if (status.ok() && out.Dump(&slices).ok()) {
      for (const auto& sl : slices) response->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
  }
  return status;
}

bool FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  if (!f.good()) return false;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  return f.good();
}

ProgramRun RunProgram(const std::vector<std::string>& args, const std::string& dir) {
  ProgramRun run;
  if (args.empty()) {
    run.start_error = "no program given";
    return run;
  }
  const std::string out_path = dir + "/program.out", err_path = dir + "/program.err";
  std::vector<std::string> argv_s = args;
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    run.start_error = std::string("cannot start ") + argv[0] + ": " + std::strerror(rc);
    return run;
  }
  // A program that does not end (a daemon that should have refused to
  // start) is killed after 120 s: exit code 128 + 9, and start_error says so.
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      run.start_error = std::string(argv[0]) + " did not end within 120 s; killed";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  run.out = ReadWholeFile(out_path);
  run.err = ReadWholeFile(err_path);
  return run;
}

}  // namespace icr::testing
