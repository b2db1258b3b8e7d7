// The malformed-input suite: one broker (RocksDB in a temporary directory,
// gRPC, the HL7 v2 MLLP listener and the FHIR R4 endpoint, all on free
// loopback ports) driven only through its real ways in:
//
//   - gRPC: Publish, PublishBatch, PublishStream, Subscribe and the other
//     Broker RPCs, over a real channel;
//   - HL7 v2 over MLLP: a real TCP connection per case, ACKs parsed;
//   - FHIR R4: a real HTTP/1.1 connection per case, OperationOutcomes parsed;
//   - CSV: the real `icrctl import` binary (ICRCTL_BINARY), spawned against
//     the broker's gRPC address.
//
// Every case is a row of a table. For each bad input the suite checks
//   (1) the exact status code / ACK code / HTTP status / exit status,
//   (2) the message, pinned to the text the code produces (it names the
//       field and the rule),
//   (3) that nothing was stored: GetStatus.last_position and the number of
//       durable subscriptions are unchanged,
//   (4) that nothing was delivered: a live subscriber (Subscribe with
//       position_order, opened before the first case) saw nothing new; at the
//       end it must have received exactly the events of the few valid control
//       cases (inputs exactly at a limit), in order.
// No timing is asserted.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "adapters/csv/csv_reader.h"
#include "adapters/fhir/fhir_server.h"
#include "adapters/hl7/er7.h"
#include "adapters/hl7/mllp_server.h"
#include "broker/broker.h"
#include "broker/nhs_number.h"
#include "tests/adapters/hl7/hl7_test_util.h"
#include "tests/support/http_reply.h"
#include "tests/support/test_support.h"

#ifndef ICRCTL_BINARY
#error "ICRCTL_BINARY must name the icrctl binary"
#endif


namespace icr {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using v1::CareEvent;
namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

// ---------------------------------------------------------------------------
// Expected messages
// ---------------------------------------------------------------------------

// A message expected word for word or, only where a part varies from run to
// run (the seconds in "is 3600 s in the future"), as a regular expression.
struct Msg {
  enum Kind { kExact, kRegex };
  Kind kind = kExact;
  std::string text;
  Msg(const char* t) : text(t) {}             // NOLINT: implicit on purpose, for the tables
  Msg(std::string t) : text(std::move(t)) {}  // NOLINT
  Msg(Kind k, std::string t) : kind(k), text(std::move(t)) {}
};

// `s` with the regular expression metacharacters escaped.
std::string Esc(const std::string& s) {
  static const std::string kMeta = R"(\^$.|?*+()[]{})";
  std::string out;
  for (char c : s) {
    if (kMeta.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

// "<before>is <n> s in the future (at most 300 s allowed: check the
// sender's clock)<after>": the broker's clock-skew rule.
Msg Future(const std::string& before, const std::string& after = "") {
  return Msg(Msg::kRegex, Esc(before) + "is [0-9]+ s in the future " +
                              Esc("(at most 300 s allowed: check the sender's clock)") +
                              Esc(after));
}

::testing::AssertionResult Matches(const Msg& m, const std::string& actual) {
  bool ok = false;
  switch (m.kind) {
    case Msg::kExact:
      ok = actual == m.text;
      break;
    case Msg::kRegex:
      ok = std::regex_match(actual, std::regex(m.text));
      break;
  }
  if (ok) return ::testing::AssertionSuccess();
  static const char* kKinds[] = {"exactly", "matching"};
  return ::testing::AssertionFailure() << "message was\n  [" << actual << "]\nexpected "
                                       << kKinds[m.kind] << "\n  [" << m.text << "]";
}

std::string Repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

// `s` with its ASCII digits written as full-width digits (U+FF10..U+FF19,
// three bytes of UTF-8 each), as some keyboards and forms type them.
std::string FullWidth(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c >= '0' && c <= '9') {
      out += "\xEF\xBC";
      out += static_cast<char>(0x90 + (c - '0'));
    } else {
      out += c;
    }
  }
  return out;
}

// Replaces the first occurrence of `from` in `s` (which must be there).
std::string Replace(std::string s, const std::string& from, const std::string& to) {
  const size_t p = s.find(from);
  if (p == std::string::npos) throw std::runtime_error("no '" + from + "' in the input");
  return s.replace(p, from.size(), to);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

// ---------------------------------------------------------------------------
// The broker and its three listeners, and a live subscriber
// ---------------------------------------------------------------------------

// An ephemeral subscriber (position_order, from the earliest position) read
// on its own thread.
class LiveSubscriber {
 public:
  void Start(v1::Broker::Stub* stub) {
    v1::SubscribeRequest req;
    req.set_position_order(true);
    req.mutable_start()->set_earliest(true);
    reader_ = stub->Subscribe(&ctx_, req);
    thread_ = std::thread([this] {
      v1::SubscribeResponse r;
      while (reader_->Read(&r)) {
        if (!r.has_event()) continue;  // heartbeats
        std::lock_guard<std::mutex> lock(mu_);
        events_.push_back(r.event());
        cv_.notify_all();
      }
      grpc::Status s = reader_->Finish();
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
      end_status_ = s;
      cv_.notify_all();
    });
  }
  void Stop() {
    ctx_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.size();
  }
  bool ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }
  // Waits until `n` events have arrived.
  bool WaitFor(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n || ended_; }) &&
           events_.size() >= n;
  }
  std::vector<CareEvent> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  std::string end_status() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::to_string(end_status_.error_code()) + " " + end_status_.error_message();
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<CareEvent> events_;
  bool ended_ = false;
  grpc::Status end_status_;
};

// What must not change after a bad input.
struct Snapshot {
  uint64_t last_position = 0;
  uint32_t durable_subscriptions = 0;
  size_t delivered = 0;
};

// An event a valid control case must have stored (and the subscriber must
// have received), in position order.
struct ExpectedEvent {
  uint64_t position;
  std::string nhs_number;
  v1::EventType type;
  std::string control;  // the control case's name
};

// --- Minimal clients ---------------------------------------------------------

// The HL7 tests' blocking MLLP client.
using icr::adapters::hl7::testing::MllpClient;

using Headers = std::vector<std::pair<std::string, std::string>>;

using icr::testing::HttpReply;

// Sends what `send` writes on a fresh connection to `port`, then reads and
// parses the answer.
template <typename Send>
HttpReply Exchange(int port, Send send) {
  HttpReply reply;
  net::io_context ioc;
  net::ip::tcp::socket socket(ioc);
  beast::error_code ec;
  socket.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
  if (ec) {
    reply.error = "connect: " + ec.message();
    return reply;
  }
  send(socket, ec);  // a refused body may be cut short: still read the answer
  beast::flat_buffer buffer;
  icr::testing::ReadHttpReply(socket, buffer, &reply);
  return reply;
}

// One HTTP/1.1 exchange on a fresh connection.
HttpReply HttpCall(int port, http::verb method, const std::string& target, const std::string& body,
                   const Headers& headers) {
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  if (method == http::verb::post || !body.empty()) req.prepare_payload();
  return Exchange(port, [&](net::ip::tcp::socket& socket, beast::error_code& ec) {
    http::write(socket, req, ec);
  });
}

// Raw bytes on a fresh connection (malformed HTTP); the answer, parsed.
HttpReply HttpRaw(int port, const std::string& bytes) {
  return Exchange(port, [&](net::ip::tcp::socket& socket, beast::error_code& ec) {
    net::write(socket, net::buffer(bytes), ec);
  });
}

using CtlRun = icr::testing::ProgramRun;

// Runs the real icrctl with `args`; its output is kept in files in `dir`.
CtlRun Icrctl(const std::vector<std::string>& args, const std::string& dir) {
  std::vector<std::string> argv = {ICRCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  CtlRun run = icr::testing::RunProgram(argv, dir);
  if (!run.start_error.empty()) ADD_FAILURE() << run.start_error;
  return run;
}

// The records of a CSV file (the error report), through the adapter's reader.
std::vector<std::vector<std::string>> ReadCsvFile(const std::string& path, char delimiter) {
  std::ifstream in(path, std::ios::binary);
  adapters::csv::CsvLimits limits;
  limits.delimiter = delimiter;
  adapters::csv::CsvReader reader(&in, limits);
  std::vector<std::vector<std::string>> out;
  adapters::csv::CsvRecord record;
  std::string error;
  while (true) {
    const auto r = reader.Next(&record, &error);
    if (r == adapters::csv::CsvReader::Result::kEnd) break;
    if (r != adapters::csv::CsvReader::Result::kRecord) {
      ADD_FAILURE() << path << ": " << error;
      break;
    }
    out.push_back(record.fields);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Case tables: the types
// ---------------------------------------------------------------------------

struct GrpcCase {
  std::string name;
  std::function<grpc::Status()> call;
  grpc::StatusCode code;
  Msg message;
};

struct Hl7Case {
  std::string name;
  std::string message;  // the frame's content
  std::string msa1;     // AE or AR
  std::string msa2;     // the echoed MSH-10 ("" when MSH could not be read)
  int err3;             // HL7 table 0357
  std::string err2;     // ERR-2 as written, e.g. "PID^1^3^1" ("" when no location)
  Msg text;             // ERR-8, decoded
  bool closes = false;  // the listener closes the connection after the ACK
};

enum class H {
  kAll,
  kNoSystem,
  kNoOrg,
  kBadSystem,
  kBadOrg,
  kBadSetting,
  kXml,
  kText,
  kNoType,
  kLatin1,
  kJsonPlain,
  kHugeHeader,
  kRaw
};

struct FhirCase {
  std::string name;
  std::string target;
  std::string body;
  int status;
  std::string code;        // issue.code
  std::string expression;  // issue.expression[0]; "" = the issue has none
  Msg diagnostics;
  H headers = H::kAll;
  http::verb method = http::verb::post;
  size_t issues = 1;  // how many issues the OperationOutcome holds
  // H::kRaw: `body` is the whole request as bytes (malformed HTTP).
};

struct CsvCase {
  std::string name;
  std::string content;  // the file
  int exit_code;        // 1: the row is rejected; 2: the file is refused before anything is sent
  std::string row;      // exit 1: the error report's row column
  Msg reason;  // exit 1: its reason; exit 2: the first stderr line after "icrctl: <file>: "
  bool assessments = false;  // the second mapping (';' separated, message id from a column)
};

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

class MalformedInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker::BrokerOptions options = testing::TestBrokerOptions(data_.path());
    auto s = broker::BrokerServer::Start(options, &broker_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    adapters::hl7::MllpOptions mllp;
    mllp.listen = "127.0.0.1:0";
    s = adapters::hl7::MllpServer::Start(mllp, broker_->ingest(), &mllp_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    adapters::fhir::FhirOptions fhir;
    fhir.listen = "127.0.0.1:0";
    s = adapters::fhir::FhirServer::Start(fhir, broker_->ingest(), &fhir_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    address_ = "127.0.0.1:" + std::to_string(broker_->port());
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    stub_ = v1::Broker::NewStub(channel_);
    workflow_ = v1::Workflow::NewStub(channel_);
    subscriber_.Start(stub_.get());
    // The subscriber is connected before the first case.
    uint32_t connected = 0;
    for (int i = 0; i < 500 && connected == 0; ++i) {
      v1::GetStatusResponse st;
      auto ctx = testing::Context();
      ASSERT_TRUE(stub_->GetStatus(ctx.get(), {}, &st).ok());
      connected = st.subscriptions_connected();
      if (connected == 0) std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(connected, 1u) << "the live subscriber did not connect";
    ASSERT_EQ(Snap().last_position, 0u);
  }

  void TearDown() override {
    subscriber_.Stop();
    if (fhir_) fhir_->Stop();
    if (mllp_) mllp_->Stop();
    if (broker_) broker_->Shutdown();
  }

  Snapshot Snap() {
    Snapshot snap;
    v1::GetStatusResponse st;
    auto ctx = testing::Context();
    grpc::Status s = stub_->GetStatus(ctx.get(), {}, &st);
    EXPECT_TRUE(s.ok()) << s.error_message();
    snap.last_position = st.last_position();
    snap.durable_subscriptions = st.durable_subscriptions();
    snap.delivered = subscriber_.count();
    return snap;
  }

  // (3) and (4) for a bad input.
  void ExpectNothingStoredOrDelivered(const Snapshot& before) {
    const Snapshot after = Snap();
    EXPECT_EQ(after.last_position, before.last_position) << "something was stored";
    EXPECT_EQ(after.durable_subscriptions, before.durable_subscriptions)
        << "a subscription was stored";
    EXPECT_EQ(after.delivered, before.delivered) << "something was delivered";
    EXPECT_EQ(after.delivered, expected_.size());
  }

  // A valid control case stored `events` (nhs, type) at the next positions;
  // the subscriber must receive them.
  void ExpectControlStored(const Snapshot& before, const std::string& name,
                           const std::vector<std::pair<std::string, v1::EventType>>& events) {
    const Snapshot after = Snap();
    ASSERT_EQ(after.last_position, before.last_position + events.size()) << name;
    for (size_t i = 0; i < events.size(); ++i) {
      expected_.push_back({before.last_position + 1 + i, events[i].first, events[i].second, name});
    }
    EXPECT_TRUE(subscriber_.WaitFor(expected_.size(), 10s))
        << name << ": the subscriber did not receive the control's events (" << subscriber_.count()
        << " of " << expected_.size() << ")";
    ++controls_;
  }

  // --- gRPC calls ------------------------------------------------------------

  grpc::Status Publish(const CareEvent& e) {
    v1::PublishRequest req;
    *req.mutable_event() = e;
    v1::PublishResponse resp;
    auto ctx = testing::Context();
    return stub_->Publish(ctx.get(), req, &resp);
  }

  // A Publish whose request is `bytes` as they are (not necessarily a valid
  // PublishRequest), through a generic stub.
  grpc::Status PublishBytes(const std::string& bytes) {
    auto ctx = testing::Context();
    return testing::GenericUnaryCall(channel_, "/icr.v1.Broker/Publish", bytes, ctx.get());
  }

  grpc::Status Batch(const std::vector<CareEvent>& events) {
    v1::PublishBatchRequest req;
    for (const auto& e : events) *req.add_events() = e;
    v1::PublishBatchResponse resp;
    auto ctx = testing::Context(30s);
    return stub_->PublishBatch(ctx.get(), req, &resp);
  }

  // One PublishStream request; its answer's code and message as a Status.
  grpc::Status Stream(const std::vector<CareEvent>& events) {
    auto ctx = testing::Context(30s);
    auto stream = stub_->PublishStream(ctx.get());
    v1::PublishStreamRequest req;
    req.set_request_id(7001);
    for (const auto& e : events) *req.add_events() = e;
    if (!stream->Write(req)) return {grpc::StatusCode::UNKNOWN, "PublishStream: write failed"};
    stream->WritesDone();
    v1::PublishStreamResponse resp, extra;
    const bool got = stream->Read(&resp);
    const bool more = got && stream->Read(&extra);
    grpc::Status fin = stream->Finish();
    if (!got) {
      return {grpc::StatusCode::UNKNOWN, "PublishStream: no answer: " + fin.error_message()};
    }
    if (more) return {grpc::StatusCode::UNKNOWN, "PublishStream: two answers to one request"};
    if (!fin.ok()) return {grpc::StatusCode::UNKNOWN, "PublishStream ended " + fin.error_message()};
    if (resp.request_id() != 7001) return {grpc::StatusCode::UNKNOWN, "PublishStream: wrong id"};
    if (resp.code() != 0 && resp.results_size() != 0) {
      return {grpc::StatusCode::UNKNOWN, "PublishStream: an error answer with results"};
    }
    return {static_cast<grpc::StatusCode>(resp.code()), resp.message()};
  }

  // A Subscribe that should be refused: its final status.
  grpc::Status Subscribe(const v1::SubscribeRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 3s);
    auto reader = stub_->Subscribe(&ctx, req);
    v1::SubscribeResponse r;
    if (reader->Read(&r)) {
      ctx.TryCancel();
      while (reader->Read(&r)) {
      }
      reader->Finish();
      return {grpc::StatusCode::OK, "the subscription was accepted and sent a message"};
    }
    return reader->Finish();
  }

  // --- running the tables ---------------------------------------------------------

  void RunGrpc(const std::vector<GrpcCase>& cases);
  void RunHl7(const std::vector<Hl7Case>& cases);
  void RunFhir(const std::vector<FhirCase>& cases);
  void RunCsv(const std::vector<CsvCase>& cases);

  std::vector<GrpcCase> GrpcCases();
  std::vector<Hl7Case> Hl7Cases();
  std::vector<FhirCase> FhirCases();
  std::vector<CsvCase> CsvCases();

  void GrpcControls();
  void Hl7Controls();
  void FhirControls();
  void CsvControls();

  std::string WorkFile(const std::string& name) { return work_.path() + "/" + name; }

  testing::TempDir data_;
  testing::TempDir work_;
  std::unique_ptr<broker::BrokerServer> broker_;
  std::unique_ptr<adapters::hl7::MllpServer> mllp_;
  std::unique_ptr<adapters::fhir::FhirServer> fhir_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Broker::Stub> stub_;
  std::unique_ptr<v1::Workflow::Stub> workflow_;
  LiveSubscriber subscriber_;
  std::vector<ExpectedEvent> expected_;
  int controls_ = 0;
  int csv_seq_ = 0;
};

// ---------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------

constexpr char kOds[] = "' is not an ODS code (3 to 10 letters and digits, e.g. RKB)";
constexpr char kCareSettings[] =
    "GP, ACUTE, COMMUNITY, MENTAL_HEALTH, SOCIAL_CARE, CARE_PROVIDER, AMBULANCE";
constexpr char kPriorities[] = "URGENT, ROUTINE, BULK";
constexpr char kPlaces[] = "COVENTRY, RUGBY, WARWICKSHIRE_NORTH, SOUTH_WARWICKSHIRE";
constexpr char kPathways[] = "PATHWAY_0, PATHWAY_1, PATHWAY_2, PATHWAY_3";
constexpr char kDestinations[] =
    "USUAL_RESIDENCE, USUAL_RESIDENCE_WITH_SUPPORT, CARE_HOME_RESIDENTIAL, CARE_HOME_NURSING, "
    "STEP_DOWN_BED_DESTINATION, OTHER_HOSPITAL, HOSPICE, DIED, SELF_DISCHARGE, OTHER_DESTINATION";
constexpr char kServiceTypes[] =
    "HOME_SUPPORT, RESIDENTIAL, NURSING, DEMENTIA_RESIDENTIAL, STEP_DOWN_BED, HOUSING_WITH_CARE";
constexpr char kReferralStatuses[] =
    "CREATED, ACCEPTED, FORWARDED_TO_BROKERAGE, PLACEMENT_REQUESTED, OFFER_MADE, OFFER_ACCEPTED, "
    "SERVICE_CONFIRMED, DISCHARGED, WITHDRAWN";
constexpr char kEscalationKinds[] =
    "NO_MANAGEMENT_PLAN, NOT_FORWARDED_TO_BROKERAGE, NO_OFFER, D2A_OVER_SIX_WEEKS";
constexpr char kEventTypes[] =
    "DEMOGRAPHICS_UPDATE, ADMISSION, TRANSFER, DISCHARGE, ED_ATTENDANCE, MEDICALLY_OPTIMISED, "
    "EXPECTED_DISCHARGE_DATE_SET, DISCHARGE_REFERRAL, REFERRAL_STATUS_CHANGE, PLACEMENT_REQUEST, "
    "PLACEMENT_OFFER, PLACEMENT_ACCEPTANCE, PLACEMENT_DECLINE, PLACEMENT_CANCELLATION, "
    "CARE_PACKAGE_START, CARE_PACKAGE_END, CARE_ACT_ASSESSMENT, REABLEMENT_START, REABLEMENT_END, "
    "MENTAL_HEALTH_EPISODE_START, MENTAL_HEALTH_EPISODE_END, GP_REGISTRATION, "
    "CARE_SUMMARY_CONTRIBUTION, DEATH_NOTIFICATION, NHS_NUMBER_MERGE, PRE_ADMISSION, "
    "ENCOUNTER_UPDATE, ENCOUNTER_CANCELLATION, ESCALATION, SHARING_OBJECTION, "
    "NATIONAL_DATA_OPT_OUT";
constexpr char kSubName[] = "' must be 1..128 characters of A-Z a-z 0-9 . _ : -";
constexpr char kMod11[] = "fails the Modulus 11 check (check digit should be 8, got 9)";

// A valid admission about test-range person `n`, with message id "mal-<id>".
CareEvent Adm(const std::string& id, uint64_t n = 700) {
  return testing::AdmissionEvent(testing::TestNhsNumber(n), "mal-" + id);
}
// A valid urgent discharge referral.
CareEvent Ref(const std::string& id, uint64_t n = 701) {
  return testing::ReferralEvent(testing::TestNhsNumber(n), "mal-" + id);
}
// A valid envelope with no payload.
CareEvent Env(const std::string& id) {
  CareEvent e = Adm(id);
  e.clear_admission();
  return e;
}
CareEvent With(CareEvent e, const std::function<void(CareEvent&)>& change) {
  change(e);
  return e;
}
void SetDate(v1::Date* d, int y, int m, int day) {
  d->set_year(y);
  d->set_month(m);
  d->set_day(day);
}
int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
// A valid HOME_SUPPORT placement request (no referral).
CareEvent Placement(const std::string& id) {
  return With(Env(id), [&](CareEvent& e) {
    e.set_source_organisation("CCC");
    e.set_care_setting(v1::SOCIAL_CARE);
    auto* p = e.mutable_placement_request();
    p->set_request_id("PR-" + id);
    p->set_service_type(v1::HOME_SUPPORT);
    p->set_place(v1::COVENTRY);
    SetDate(p->mutable_start_date(), 2026, 3, 2);
    p->set_hours_per_week(14);
    p->set_calls_per_day(2);
  });
}

std::vector<GrpcCase> MalformedInputTest::GrpcCases() {
  const auto INVALID = grpc::StatusCode::INVALID_ARGUMENT;
  std::vector<GrpcCase> cases;
  const std::string kUtf8 = "; string fields must hold UTF-8 text";
  // An event published alone: paths start with "event".
  auto P = [&](const std::string& name, CareEvent e, Msg msg,
               grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT) {
    cases.push_back({"Publish: " + name, [this, e] { return Publish(e); }, code, std::move(msg)});
  };
  auto nhs = [](const std::string& v) { return [v](CareEvent& e) { e.set_nhs_number(v); }; };

  // --- NHS numbers -------------------------------------------------------------------
  P("NHS number missing", With(Adm("n1"), nhs("")), "event.nhs_number: is required (10 digits)");
  P("NHS number of separators only", With(Adm("n2"), nhs(" - - ")),
    "event.nhs_number: is required (10 digits)");
  P("NHS number of 9 digits", With(Adm("n3"), nhs("999000001")),
    "event.nhs_number: must be exactly 10 digits (got 9 characters)");
  P("NHS number of 11 digits", With(Adm("n4"), nhs("99900000180")),
    "event.nhs_number: must be exactly 10 digits (got 11 characters)");
  P("NHS number of 9 digits after stripping spaces", With(Adm("n5"), nhs("999 000 001")),
    "event.nhs_number: must be exactly 10 digits (got 9 characters)");
  P("NHS number with a trailing letter", With(Adm("n6"), nhs("999000001X")),
    "event.nhs_number: must contain digits only (character 10 is not a digit)");
  P("NHS number with a leading letter", With(Adm("n7"), nhs("A990000018")),
    "event.nhs_number: must contain digits only (character 1 is not a digit)");
  P("NHS number with dots", With(Adm("n8"), nhs("999.000.0018")),
    "event.nhs_number: must be exactly 10 digits (got 12 characters)");
  P("NHS number with tabs in wrong places", With(Adm("n9"), nhs("999\t000\t0018")),
    "event.nhs_number: must be exactly 10 digits (got 12 characters)");
  P("NHS number with a tab instead of a digit", With(Adm("n10"), nhs("999000001\t")),
    "event.nhs_number: must contain digits only (character 10 is not a digit)");
  P("NHS number with a NUL byte", With(Adm("n11"), nhs(std::string("999000001\0", 10))),
    "event.nhs_number: must contain digits only (character 10 is not a digit)");
  P("NHS number whose stem gives check digit 10", With(Adm("n12"), nhs("9990000000")),
    "event.nhs_number: fails the Modulus 11 check (its first nine digits give check digit 10)");
  P("NHS number spaced, its stem gives check digit 10", With(Adm("n13"), nhs("999 000 0141")),
    "event.nhs_number: fails the Modulus 11 check (its first nine digits give check digit 10)");
  P("NHS number with a wrong check digit", With(Adm("n14"), nhs("9990000019")),
    std::string("event.nhs_number: ") + kMod11);
  P("NHS number with a wrong check digit, spaced", With(Adm("n15"), nhs("999 000 0027")),
    "event.nhs_number: fails the Modulus 11 check (check digit should be 6, got 7)");
  P("NHS number with two digits swapped", With(Adm("n16"), nhs("9990000081")),
    "event.nhs_number: fails the Modulus 11 check (check digit should be 5, got 1)");
  P("NHS number in full-width digits (10 characters, 30 bytes)",
    With(Adm("n17"), nhs(FullWidth("9990000018"))),
    "event.nhs_number: must contain ASCII digits 0-9 only (character 1 is U+FF19, a full-width "
    "digit; retype the number with 0-9)");
  P("NHS number with one full-width digit", With(Adm("n18"), nhs("999000001" + FullWidth("8"))),
    "event.nhs_number: must contain ASCII digits 0-9 only (character 10 is U+FF18, a full-width "
    "digit; retype the number with 0-9)");
  P("NHS number with an accented letter (10 characters, 11 bytes)",
    With(Adm("n19"), nhs("999000001\xC3\xA9")),
    "event.nhs_number: must contain digits only (character 10 is not a digit)");

  // --- source_system_id ----------------------------------------------------------------
  const std::string kSystemRule =
      "event.source_system_id: must be 1..64 characters of A-Z a-z 0-9 . _ : -";
  P("source_system_id missing", With(Adm("s1"), [](CareEvent& e) { e.clear_source_system_id(); }),
    "event.source_system_id: is required");
  P("source_system_id of 65 characters",
    With(Adm("s2"), [](CareEvent& e) { e.set_source_system_id(std::string(65, 's')); }),
    kSystemRule);
  P("source_system_id with a space",
    With(Adm("s3"), [](CareEvent& e) { e.set_source_system_id("uhcw epr"); }), kSystemRule);
  P("source_system_id with a slash",
    With(Adm("s4"), [](CareEvent& e) { e.set_source_system_id("uhcw/epr"); }), kSystemRule);
  P("source_system_id not ASCII",
    With(Adm("s5"),
         [](CareEvent& e) {
           e.set_source_system_id(
               "\xC3\xBC"
               "hcw-epr");
         }),
    kSystemRule);

  // --- source_message_id ---------------------------------------------------------------
  const std::string kIdRule = "event.source_message_id: must be 1..128 printable ASCII characters";
  P("source_message_id missing", With(Adm("m1"), [](CareEvent& e) { e.clear_source_message_id(); }),
    "event.source_message_id: is required (the idempotency key of this message)");
  P("source_message_id of 129 characters",
    With(Adm("m2"), [](CareEvent& e) { e.set_source_message_id(std::string(129, 'm')); }), kIdRule);
  P("source_message_id with a tab",
    With(Adm("m3"), [](CareEvent& e) { e.set_source_message_id("msg\t3"); }), kIdRule);
  P("source_message_id not ASCII",
    With(Adm("m4"), [](CareEvent& e) { e.set_source_message_id("caf\xC3\xA9"); }), kIdRule);
  P("source_message_id with DEL",
    With(Adm("m5"), [](CareEvent& e) { e.set_source_message_id("msg\x7f"); }), kIdRule);

  // --- source_organisation -------------------------------------------------------------
  auto org = [](const std::string& v) {
    return [v](CareEvent& e) { e.set_source_organisation(v); };
  };
  P("source_organisation missing", With(Adm("o1"), org("")),
    "event.source_organisation: is required");
  P("source_organisation of 2 characters", With(Adm("o2"), org("RK")),
    std::string("event.source_organisation: 'RK") + kOds);
  P("source_organisation with a hyphen", With(Adm("o3"), org("RKB-01")),
    std::string("event.source_organisation: 'RKB-01") + kOds);
  P("source_organisation of 11 characters", With(Adm("o4"), org("ABCDEFGHIJK")),
    std::string("event.source_organisation: 'ABCDEFGHIJK") + kOds);
  P("source_organisation with a space (shown upper-cased)", With(Adm("o5"), org("rk b")),
    std::string("event.source_organisation: 'RK B") + kOds);
  P("source_organisation of 50 characters (shown cut to 32)",
    With(Adm("o6"), org(std::string(50, 'q'))),
    "event.source_organisation: '" + std::string(32, 'Q') + kOds);

  // --- enums -------------------------------------------------------------------------------
  P("care_setting missing", With(Adm("c1"), [](CareEvent& e) { e.clear_care_setting(); }),
    std::string("event.care_setting: is required (one of ") + kCareSettings + ")");
  P("care_setting unknown (8)",
    With(Adm("c2"), [](CareEvent& e) { e.set_care_setting(static_cast<v1::CareSetting>(8)); }),
    std::string("event.care_setting: 8 is not a known CareSetting (one of ") + kCareSettings + ")");
  P("care_setting negative",
    With(Adm("c3"), [](CareEvent& e) { e.set_care_setting(static_cast<v1::CareSetting>(-1)); }),
    std::string("event.care_setting: -1 is not a known CareSetting (one of ") + kCareSettings +
        ")");
  P("priority unknown (9)",
    With(Adm("c4"), [](CareEvent& e) { e.set_priority(static_cast<v1::Priority>(9)); }),
    std::string("event.priority: 9 is not a known Priority (one of ") + kPriorities + ")");
  P("priority unknown (4)",
    With(Adm("c5"), [](CareEvent& e) { e.set_priority(static_cast<v1::Priority>(4)); }),
    std::string("event.priority: 4 is not a known Priority (one of ") + kPriorities + ")");
  P("envelope place unknown (7)",
    With(Adm("c6"), [](CareEvent& e) { e.set_place(static_cast<v1::Place>(7)); }),
    std::string("event.place: 7 is not a known Place (one of ") + kPlaces + ")");
  P("discharge destination unknown (11)",
    With(Env("c7"),
         [](CareEvent& e) {
           e.mutable_discharge()->set_encounter_id("ENC-c7");
           e.mutable_discharge()->set_destination(static_cast<v1::DischargeDestination>(11));
         }),
    std::string("event.discharge.destination: 11 is not a known DischargeDestination (one of ") +
        kDestinations + ")");
  P("discharge pathway unknown (9), not required",
    With(Env("c8"),
         [](CareEvent& e) {
           e.mutable_discharge()->set_encounter_id("ENC-c8");
           e.mutable_discharge()->set_destination(v1::USUAL_RESIDENCE);
           e.mutable_discharge()->set_pathway(static_cast<v1::DischargePathway>(9));
         }),
    std::string("event.discharge.pathway: 9 is not a known DischargePathway (one of ") + kPathways +
        ")");
  P("placement service_type unknown (7)",
    With(Placement("c9"),
         [](CareEvent& e) {
           e.mutable_placement_request()->set_service_type(static_cast<v1::ServiceType>(7));
         }),
    std::string("event.placement_request.service_type: 7 is not a known ServiceType (one of ") +
        kServiceTypes + ")");
  P("referral status unknown (10)",
    With(Env("c10"),
         [](CareEvent& e) {
           e.mutable_referral_status_change()->set_referral_id("REF-c10");
           e.mutable_referral_status_change()->set_status(static_cast<v1::ReferralStatus>(10));
         }),
    std::string("event.referral_status_change.status: 10 is not a known ReferralStatus (one of ") +
        kReferralStatuses + ")");
  P("cancelled_event_type unknown (999)",
    With(Env("c11"),
         [](CareEvent& e) {
           e.mutable_encounter_cancellation()->set_encounter_id("ENC-c11");
           e.mutable_encounter_cancellation()->set_cancelled_event_type(
               static_cast<v1::EventType>(999));
         }),
    std::string("event.encounter_cancellation.cancelled_event_type: 999 is not a known EventType "
                "(one of ") +
        kEventTypes + ")");

  // --- occurred_at and other timestamps --------------------------------------------------
  auto occurred = [](int64_t s, int32_t n = 0) {
    return [s, n](CareEvent& e) {
      e.mutable_occurred_at()->set_seconds(s);
      e.mutable_occurred_at()->set_nanos(n);
    };
  };
  P("occurred_at missing", With(Adm("t1"), [](CareEvent& e) { e.clear_occurred_at(); }),
    "event.occurred_at: is required");
  P("occurred_at an hour ahead", With(Adm("t2"), occurred(NowSeconds() + 3600)),
    Future("event.occurred_at: "));
  P("occurred_at 400 s ahead", With(Adm("t3"), occurred(NowSeconds() + 400)),
    Future("event.occurred_at: "));
  P("occurred_at in 2200", With(Adm("t4"), occurred(7258118400)), Future("event.occurred_at: "));
  P("occurred_at at the largest seconds",
    With(Adm("t5"), occurred(std::numeric_limits<int64_t>::max())), Future("event.occurred_at: "));
  P("occurred_at negative nanos", With(Adm("t6"), occurred(NowSeconds() - 60, -1)),
    "event.occurred_at: nanos must be in 0..999999999");
  P("occurred_at nanos of a whole second", With(Adm("t7"), occurred(NowSeconds() - 60, 1000000000)),
    "event.occurred_at: nanos must be in 0..999999999");
  P("occurred_at one second before 1900", With(Adm("t8"), occurred(-2208988801)),
    "event.occurred_at: must be between 1900-01-01 and 2200-01-01");
  P("occurred_at at the smallest seconds",
    With(Adm("t9"), occurred(std::numeric_limits<int64_t>::min())),
    "event.occurred_at: must be between 1900-01-01 and 2200-01-01");
  auto escalation = [](const std::string& id) {
    return With(Env(id), [&](CareEvent& e) {
      auto* x = e.mutable_escalation();
      x->set_referral_id("REF-" + id);
      x->set_kind(v1::NO_MANAGEMENT_PLAN);
      x->mutable_deadline()->set_seconds(NowSeconds() - 3600);
    });
  };
  P("escalation deadline in 2200",
    With(escalation("t10"),
         [](CareEvent& e) { e.mutable_escalation()->mutable_deadline()->set_seconds(7258118400); }),
    "event.escalation.deadline: must be between 1900-01-01 and 2200-01-01");
  P("escalation deadline with nanos over a second",
    With(escalation("t11"),
         [](CareEvent& e) { e.mutable_escalation()->mutable_deadline()->set_nanos(2000000000); }),
    "event.escalation.deadline: nanos must be in 0..999999999");

  // --- dates ----------------------------------------------------------------------------------
  auto edd = [](const std::string& id, int y, int m, int d) {
    return With(Env(id), [=](CareEvent& e) {
      e.mutable_expected_discharge_date_set()->set_encounter_id("ENC-" + id);
      SetDate(e.mutable_expected_discharge_date_set()->mutable_expected_discharge_date(), y, m, d);
    });
  };
  const std::string kEdd = "event.expected_discharge_date_set.expected_discharge_date: ";
  P("date month 13", edd("d1", 2026, 13, 1), kEdd + "month 13 is outside 1..12");
  P("date month 0", edd("d2", 2026, 0, 1), kEdd + "month 0 is outside 1..12");
  P("date 30 February", edd("d3", 2026, 2, 30), kEdd + "day 30 is not a day of month 2 (1..28)");
  P("date 29 February 2100 (not a leap year)", edd("d4", 2100, 2, 29),
    kEdd + "day 29 is not a day of month 2 (1..28)");
  P("date 31 April", edd("d5", 2026, 4, 31), kEdd + "day 31 is not a day of month 4 (1..30)");
  P("date day 0", edd("d6", 2026, 4, 0), kEdd + "day 0 is not a day of month 4 (1..30)");
  P("date day negative", edd("d7", 2026, 1, -1), kEdd + "day -1 is not a day of month 1 (1..31)");
  P("date year 1899", edd("d8", 1899, 12, 31), kEdd + "year 1899 is outside 1900..2200");
  P("date year 2201", edd("d9", 2201, 1, 1), kEdd + "year 2201 is outside 1900..2200");
  P("date present but empty ({})",
    With(Env("d10"),
         [](CareEvent& e) {
           e.mutable_medically_optimised()->set_encounter_id("ENC-d10");
           e.mutable_medically_optimised()->mutable_discharge_ready_date();
         }),
    "event.medically_optimised.discharge_ready_date: year 0 is outside 1900..2200");
  P("optional date invalid (demographics birth_date)",
    With(Env("d11"),
         [](CareEvent& e) {
           SetDate(e.mutable_demographics_update()->mutable_birth_date(), 1950, 2, 29);
         }),
    "event.demographics_update.birth_date: day 29 is not a day of month 2 (1..28)");

  // --- addressee -------------------------------------------------------------------------------
  P("addressee organisation not an ODS code",
    With(Ref("a1"), [](CareEvent& e) { e.mutable_addressee()->set_organisation("C C"); }),
    std::string("event.addressee.organisation: 'C C") + kOds);
  P("addressee without team_code",
    With(Ref("a2"), [](CareEvent& e) { e.mutable_addressee()->clear_team_code(); }),
    "event.addressee.team_code: is required");
  P("addressee without organisation",
    With(Ref("a3"), [](CareEvent& e) { e.mutable_addressee()->clear_organisation(); }),
    "event.addressee.organisation: is required");

  // --- payloads: required fields -------------------------------------------------------------
  P("no payload", Env("p1"),
    "event.payload: exactly one payload is required (for example discharge_referral; see "
    "EventType)");
  P("admission without encounter_id",
    With(Adm("p2"), [](CareEvent& e) { e.mutable_admission()->clear_encounter_id(); }),
    "event.admission.encounter_id: is required");
  P("transfer without to",
    With(Env("p3"), [](CareEvent& e) { e.mutable_transfer()->set_encounter_id("ENC-p3"); }),
    "event.transfer.to: is required");
  P("discharge without destination",
    With(Env("p4"), [](CareEvent& e) { e.mutable_discharge()->set_encounter_id("ENC-p4"); }),
    std::string("event.discharge.destination: is required (one of ") + kDestinations + ")");
  P("ED attendance without attendance_id",
    With(Env("p5"), [](CareEvent& e) { e.mutable_ed_attendance()->set_site("RKB01"); }),
    "event.ed_attendance.attendance_id: is required");
  P("ED chief complaint without code",
    With(Env("p6"),
         [](CareEvent& e) {
           e.mutable_ed_attendance()->set_attendance_id("ED-p6");
           e.mutable_ed_attendance()->mutable_chief_complaint()->set_display("Fall");
         }),
    "event.ed_attendance.chief_complaint.code: is required");
  P("medically optimised without date",
    With(Env("p7"),
         [](CareEvent& e) { e.mutable_medically_optimised()->set_encounter_id("ENC-p7"); }),
    "event.medically_optimised.discharge_ready_date: is required");
  P("discharge referral without referral_id",
    With(Ref("p8"), [](CareEvent& e) { e.mutable_discharge_referral()->clear_referral_id(); }),
    "event.discharge_referral.referral_id: is required");
  P("discharge referral without pathway",
    With(Ref("p9"), [](CareEvent& e) { e.mutable_discharge_referral()->clear_pathway(); }),
    std::string("event.discharge_referral.pathway: is required (one of ") + kPathways + ")");
  P("discharge referral without referrer",
    With(Ref("p10"), [](CareEvent& e) { e.mutable_discharge_referral()->clear_referrer(); }),
    "event.discharge_referral.referrer: is required");
  P("discharge referral referrer without team_code",
    With(Ref("p11"),
         [](CareEvent& e) {
           e.mutable_discharge_referral()->mutable_referrer()->clear_team_code();
         }),
    "event.discharge_referral.referrer.team_code: is required");
  P("referral status change without status",
    With(Env("p12"),
         [](CareEvent& e) { e.mutable_referral_status_change()->set_referral_id("REF-p12"); }),
    std::string("event.referral_status_change.status: is required (one of ") + kReferralStatuses +
        ")");
  P("placement request without place",
    With(Placement("p13"), [](CareEvent& e) { e.mutable_placement_request()->clear_place(); }),
    std::string("event.placement_request.place: is required (one of ") + kPlaces + ")");
  P("placement request without service_type",
    With(Placement("p14"),
         [](CareEvent& e) { e.mutable_placement_request()->clear_service_type(); }),
    std::string("event.placement_request.service_type: is required (one of ") + kServiceTypes +
        ")");
  P("placement request without start_date",
    With(Placement("p15"), [](CareEvent& e) { e.mutable_placement_request()->clear_start_date(); }),
    "event.placement_request.start_date: is required");
  P("placement offer without provider",
    With(Env("p16"),
         [](CareEvent& e) {
           e.mutable_placement_offer()->set_offer_id("OF-p16");
           e.mutable_placement_offer()->set_request_id("PR-p16");
         }),
    "event.placement_offer.provider: is required");
  P("placement acceptance without offer_id",
    With(Env("p17"),
         [](CareEvent& e) { e.mutable_placement_acceptance()->set_request_id("PR-1"); }),
    "event.placement_acceptance.offer_id: is required");
  P("placement cancellation without request_id",
    With(Env("p18"), [](CareEvent& e) { e.mutable_placement_cancellation()->set_reason("x"); }),
    "event.placement_cancellation.request_id: is required");
  P("care package start without start_date",
    With(Env("p19"),
         [](CareEvent& e) {
           e.mutable_care_package_start()->set_package_id("PKG-p19");
           e.mutable_care_package_start()->set_service_type(v1::RESIDENTIAL);
         }),
    "event.care_package_start.start_date: is required");
  P("care package end without end_date",
    With(Env("p20"), [](CareEvent& e) { e.mutable_care_package_end()->set_package_id("PKG-p20"); }),
    "event.care_package_end.end_date: is required");
  P("reablement start without episode_id",
    With(Env("p21"),
         [](CareEvent& e) {
           SetDate(e.mutable_reablement_start()->mutable_start_date(), 2026, 1, 5);
         }),
    "event.reablement_start.episode_id: is required");
  P("mental health episode end without episode_id",
    With(Env("p22"), [](CareEvent& e) { e.mutable_mental_health_episode_end()->set_outcome("x"); }),
    "event.mental_health_episode_end.episode_id: is required");
  P("GP registration without practice",
    With(Env("p23"), [](CareEvent& e) { e.mutable_gp_registration(); }),
    "event.gp_registration.practice: is required");
  P("death notification without date",
    With(Env("p24"),
         [](CareEvent& e) { e.mutable_death_notification()->set_place_of_death("home"); }),
    "event.death_notification.date_of_death: is required");
  P("NHS number merge without retired number",
    With(Env("p25"), [](CareEvent& e) { e.mutable_nhs_number_merge(); }),
    "event.nhs_number_merge.retired_nhs_number: is required");
  P("encounter cancellation without cancelled_event_type",
    With(Env("p26"),
         [](CareEvent& e) { e.mutable_encounter_cancellation()->set_encounter_id("ENC-p26"); }),
    std::string("event.encounter_cancellation.cancelled_event_type: is required (one of ") +
        kEventTypes + ")");
  P("escalation without kind",
    With(escalation("p27"), [](CareEvent& e) { e.mutable_escalation()->clear_kind(); }),
    std::string("event.escalation.kind: is required (one of ") + kEscalationKinds + ")");
  P("care summary problem without code",
    With(Env("p28"),
         [](CareEvent& e) {
           e.mutable_care_summary_contribution()->add_problems()->set_code("230690007");
           e.mutable_care_summary_contribution()->add_problems()->set_display("Stroke");
         }),
    "event.care_summary_contribution.problems[1].code: is required");

  // --- payload rules -------------------------------------------------------------------------
  P("home support with 0 hours",
    With(Placement("r1"),
         [](CareEvent& e) { e.mutable_placement_request()->set_hours_per_week(0); }),
    "event.placement_request.hours_per_week: must be more than 0 and at most 168 for "
    "HOME_SUPPORT");
  P("home support with 168.5 hours",
    With(Placement("r2"),
         [](CareEvent& e) { e.mutable_placement_request()->set_hours_per_week(168.5); }),
    "event.placement_request.hours_per_week: must be more than 0 and at most 168 for "
    "HOME_SUPPORT");
  P("home support hours NaN",
    With(Placement("r3"),
         [](CareEvent& e) {
           e.mutable_placement_request()->set_hours_per_week(
               std::numeric_limits<double>::quiet_NaN());
         }),
    "event.placement_request.hours_per_week: must be a finite number");
  P("home support hours infinite",
    With(Placement("r4"),
         [](CareEvent& e) {
           e.mutable_placement_request()->set_hours_per_week(
               std::numeric_limits<double>::infinity());
         }),
    "event.placement_request.hours_per_week: must be a finite number");
  P("home support with 0 calls a day",
    With(Placement("r5"),
         [](CareEvent& e) { e.mutable_placement_request()->set_calls_per_day(0); }),
    "event.placement_request.calls_per_day: must be 1..8 for HOME_SUPPORT");
  P("home support with 9 calls a day",
    With(Placement("r6"),
         [](CareEvent& e) { e.mutable_placement_request()->set_calls_per_day(9); }),
    "event.placement_request.calls_per_day: must be 1..8 for HOME_SUPPORT");
  P("placement needs 5 carers per call",
    With(Placement("r7"),
         [](CareEvent& e) {
           e.mutable_placement_request()->mutable_needs()->set_carers_per_call(5);
         }),
    "event.placement_request.needs.carers_per_call: must be 0..4");
  P("referral needs -1 carers per call",
    With(Ref("r8"),
         [](CareEvent& e) {
           e.mutable_discharge_referral()->mutable_needs()->set_carers_per_call(-1);
         }),
    "event.discharge_referral.needs.carers_per_call: must be 0..4");
  P("referrer organisation not an ODS code",
    With(Ref("r9"),
         [](CareEvent& e) {
           e.mutable_discharge_referral()->mutable_referrer()->set_organisation("Ward 33");
         }),
    std::string("event.discharge_referral.referrer.organisation: 'WARD 33") + kOds);
  P("care package hours NaN",
    With(Env("r10"),
         [](CareEvent& e) {
           auto* c = e.mutable_care_package_start();
           c->set_package_id("PKG-r10");
           c->set_service_type(v1::HOME_SUPPORT);
           SetDate(c->mutable_start_date(), 2026, 1, 5);
           c->set_hours_per_week(-std::numeric_limits<double>::quiet_NaN());
         }),
    "event.care_package_start.hours_per_week: must be a finite number");
  P("care package hours beyond 10^12",
    With(Env("r11"),
         [](CareEvent& e) {
           auto* c = e.mutable_care_package_start();
           c->set_package_id("PKG-r11");
           c->set_service_type(v1::HOME_SUPPORT);
           SetDate(c->mutable_start_date(), 2026, 1, 5);
           c->set_hours_per_week(2e12);
         }),
    "event.care_package_start.hours_per_week: must be a finite number");
  P("GP practice not an ODS code",
    With(Env("r12"), [](CareEvent& e) { e.mutable_gp_registration()->set_practice("12"); }),
    std::string("event.gp_registration.practice: '12") + kOds);
  P("merge retired number invalid",
    With(Env("r13"),
         [](CareEvent& e) { e.mutable_nhs_number_merge()->set_retired_nhs_number("9990000019"); }),
    std::string("event.nhs_number_merge.retired_nhs_number: ") + kMod11);
  P("merge retired number of 9 digits",
    With(Env("r14"),
         [](CareEvent& e) { e.mutable_nhs_number_merge()->set_retired_nhs_number("999 000 001"); }),
    "event.nhs_number_merge.retired_nhs_number: must be exactly 10 digits (got 9 characters)");
  P("merge into itself (spaced)",
    With(Env("r15"),
         [](CareEvent& e) {
           e.mutable_nhs_number_merge()->set_retired_nhs_number(e.nhs_number().substr(0, 3) + " " +
                                                                e.nhs_number().substr(3));
         }),
    "event.nhs_number_merge.retired_nhs_number: must differ from nhs_number (the surviving "
    "number)");
  P("cancellation of a referral",
    With(Env("r16"),
         [](CareEvent& e) {
           e.mutable_encounter_cancellation()->set_encounter_id("ENC-r16");
           e.mutable_encounter_cancellation()->set_cancelled_event_type(v1::DISCHARGE_REFERRAL);
         }),
    "event.encounter_cancellation.cancelled_event_type: must be ADMISSION, TRANSFER or DISCHARGE");
  P("escalation from a publisher", escalation("r17"),
    "event.escalation: escalations are raised by the broker itself (source_system_id "
    "\"icr-broker\"); publish the referral's state changes instead");

  // --- strings: size and control characters --------------------------------------------------
  P("free text of 4001 bytes",
    With(Ref("l1"),
         [](CareEvent& e) {
           e.mutable_discharge_referral()->mutable_needs()->set_summary(std::string(4001, 'x'));
         }),
    "event.discharge_referral.needs.summary: 4001 bytes exceeds the limit of 4000 bytes");
  P("free text of 2001 two-byte characters (4002 bytes)",
    With(Ref("l2"),
         [](CareEvent& e) {
           e.mutable_discharge_referral()->mutable_needs()->set_summary(Repeat("\xC3\xA9", 2001));
         }),
    "event.discharge_referral.needs.summary: 4002 bytes exceeds the limit of 4000 bytes");
  P("encounter id of 4001 bytes",
    With(Adm("l3"),
         [](CareEvent& e) { e.mutable_admission()->set_encounter_id(std::string(4001, 'E')); }),
    "event.admission.encounter_id: 4001 bytes exceeds the limit of 4000 bytes");
  P("nested ward of 100000 bytes",
    With(Adm("l4"),
         [](CareEvent& e) {
           e.mutable_admission()->mutable_location()->set_ward(std::string(100000, 'W'));
         }),
    "event.admission.location.ward: 100000 bytes exceeds the limit of 4000 bytes");
  P("list element of 4001 bytes",
    With(Env("l5"),
         [](CareEvent& e) {
           e.mutable_care_summary_contribution()->add_alerts("dementia");
           e.mutable_care_summary_contribution()->add_alerts(std::string(4001, 'a'));
         }),
    "event.care_summary_contribution.alerts[1]: 4001 bytes exceeds the limit of 4000 bytes");
  P("addressee team code of 4001 bytes",
    With(Ref("l6"),
         [](CareEvent& e) { e.mutable_addressee()->set_team_code(std::string(4001, 'T')); }),
    "event.addressee.team_code: 4001 bytes exceeds the limit of 4000 bytes");
  P("control character 0x01",
    With(Adm("l7"),
         [](CareEvent& e) { e.mutable_admission()->set_admission_method("emer\x01gency"); }),
    "event.admission.admission_method: contains a control character (0x01)");
  P("NUL byte in text",
    With(Adm("l8"),
         [](CareEvent& e) {
           e.mutable_admission()->set_admission_method(std::string("emer\0gency", 10));
         }),
    "event.admission.admission_method: contains a control character (0x00)");
  P("escape character in a nested field",
    With(Adm("l9"),
         [](CareEvent& e) {
           e.mutable_admission()->mutable_location()->set_ward("Ward \x1b[31m33");
         }),
    "event.admission.location.ward: contains a control character (0x1b)");
  P("control character in a list element",
    With(Env("l10"),
         [](CareEvent& e) {
           e.mutable_care_summary_contribution()->add_alerts("ok");
           e.mutable_care_summary_contribution()->add_alerts("bell\x07");
         }),
    "event.care_summary_contribution.alerts[1]: contains a control character (0x07)");
  P("unit separator in a given name",
    With(Env("l11"),
         [](CareEvent& e) { e.mutable_demographics_update()->add_given_names("Ann\x1f"); }),
    "event.demographics_update.given_names[0]: contains a control character (0x1f)");
  // --- strings that are not UTF-8 (the broker parses the request, not gRPC) ----------------------
  P("NHS number not UTF-8", With(Adm("u1"), nhs("999000001\xFF")),
    "event.nhs_number: is not valid UTF-8 (byte 10 is 0xFF)" + kUtf8);
  P("Latin-1 text in a nested field",
    With(Ref("u2"),
         [](CareEvent& e) {
           e.mutable_discharge_referral()->mutable_needs()->set_summary("Lives in a caf\xE9 flat");
         }),
    "event.discharge_referral.needs.summary: is not valid UTF-8 (byte 15 is 0xE9)" + kUtf8);
  P("invalid UTF-8 in a list element",
    With(Env("u3"),
         [](CareEvent& e) {
           e.mutable_care_summary_contribution()->add_alerts("dementia");
           e.mutable_care_summary_contribution()->add_alerts("falls \xC3\x28risk)");
         }),
    "event.care_summary_contribution.alerts[1]: is not valid UTF-8 (byte 7 is 0xC3)" + kUtf8);
  P("UTF-16 surrogate encoded as UTF-8 in the message id",
    With(Adm("u4"), [](CareEvent& e) { e.set_source_message_id("msg-\xED\xA0\x80"); }),
    "event.source_message_id: is not valid UTF-8 (byte 5 is 0xED)" + kUtf8);
  {
    // Not a PublishRequest at all: its last byte is missing.
    v1::PublishRequest req;
    *req.mutable_event() = Adm("u5");
    std::string bytes = req.SerializeAsString();
    bytes.pop_back();
    cases.push_back({"Publish: request cut short (not valid protobuf)",
                     [this, bytes] { return PublishBytes(bytes); }, INVALID,
                     "request: not a valid icr.v1.PublishRequest (its protobuf encoding cannot be "
                     "parsed)"});
  }
  {
    // An event over 256 KiB: 70 alerts of 4,000 bytes.
    CareEvent big = With(Env("l12"), [](CareEvent& e) {
      for (int i = 0; i < 70; ++i)
        e.mutable_care_summary_contribution()->add_alerts(std::string(4000, 'b'));
    });
    CareEvent sized = big;
    sized.set_event_type(v1::CARE_SUMMARY_CONTRIBUTION);  // as the broker sizes it
    P("event of more than 256 KiB", big,
      "event: " + std::to_string(sized.ByteSizeLong()) +
          " bytes exceeds the limit of 262144 bytes per event");
  }

  // --- workflow rules (nothing stored, FAILED_PRECONDITION) ----------------------------------
  const auto FAILED = grpc::StatusCode::FAILED_PRECONDITION;
  P("expected_version on an admission",
    With(Adm("w1"), [](CareEvent& e) { e.set_expected_version(1); }),
    "expected_version is set but this event changes no referral (it applies to discharge "
    "referrals, their status changes and placement events)",
    FAILED);
  P("status change of an unknown referral",
    With(Env("w2"),
         [](CareEvent& e) {
           e.mutable_referral_status_change()->set_referral_id("REF-NONE-w2");
           e.mutable_referral_status_change()->set_status(v1::ACCEPTED);
         }),
    "referral REF-NONE-w2 does not exist; a change to ACCEPTED needs an existing referral "
    "(publish its DISCHARGE_REFERRAL first)",
    FAILED);
  P("offer answering an unknown request",
    With(Env("w3"),
         [](CareEvent& e) {
           e.mutable_placement_offer()->set_offer_id("OF-w3");
           e.mutable_placement_offer()->set_request_id("PR-NONE-w3");
           e.mutable_placement_offer()->set_provider("VNA12");
         }),
    "placement request PR-NONE-w3 does not exist; publish its PLACEMENT_REQUEST first", FAILED);
  P("placement request naming an unknown referral",
    With(Placement("w4"),
         [](CareEvent& e) { e.mutable_placement_request()->set_referral_id("REF-NONE-w4"); }),
    "referral REF-NONE-w4 does not exist; a placement request needs an existing referral "
    "(publish its DISCHARGE_REFERRAL first)",
    FAILED);

  // --- Publish without an event -----------------------------------------------------------------
  cases.push_back({"Publish: no event",
                   [this] {
                     v1::PublishRequest req;
                     v1::PublishResponse resp;
                     auto ctx = testing::Context();
                     return stub_->Publish(ctx.get(), req, &resp);
                   },
                   INVALID, "event: is required"});
  {
    // Over the broker's gRPC receive limit (16 MiB): refused by gRPC itself.
    const CareEvent huge = With(Adm("g1"), [](CareEvent& e) {
      e.mutable_admission()->set_admission_method(std::string(17 << 20, 'x'));
    });
    v1::PublishRequest req;
    *req.mutable_event() = huge;
    cases.push_back({"Publish: message over the 16 MiB gRPC limit",
                     [this, huge] { return Publish(huge); }, grpc::StatusCode::RESOURCE_EXHAUSTED,
                     "Received message larger than max (" + std::to_string(req.ByteSizeLong()) +
                         " vs. 16777216)"});
  }

  // --- PublishBatch ---------------------------------------------------------------------------
  const std::string kNothing = " (nothing in this batch was stored)";
  auto B = [&](const std::string& name, std::vector<CareEvent> events, Msg msg) {
    cases.push_back({"PublishBatch: " + name, [this, events] { return Batch(events); }, INVALID,
                     std::move(msg)});
  };
  auto good = [](const std::string& prefix, int n, uint64_t first_person) {
    std::vector<CareEvent> out;
    for (int i = 0; i < n; ++i) out.push_back(Adm(prefix + std::to_string(i), first_person + i));
    return out;
  };
  B("no events", {}, "events: at least one event is required" + kNothing);
  {
    std::vector<CareEvent> many;
    for (int i = 0; i < 10001; ++i) many.push_back(Adm("b2-" + std::to_string(i), 800));
    B("10001 events", many,
      "events: 10001 events exceeds the limit of 10000 per request" + kNothing);
  }
  {
    auto v = good("b3-", 3, 810);
    v[2].set_nhs_number("9990000019");
    B("last of 3 has a wrong check digit", v,
      std::string("events[2].nhs_number: ") + kMod11 + kNothing);
  }
  {
    auto v = good("b4-", 5, 820);
    v[0].clear_source_message_id();
    B("first of 5 without message id", v,
      "events[0].source_message_id: is required (the idempotency key of this message)" + kNothing);
  }
  {
    auto v = good("b5-", 100, 830);
    v[57].mutable_admission()->clear_encounter_id();
    B("one of 100 without encounter id", v,
      "events[57].admission.encounter_id: is required" + kNothing);
  }
  {
    auto v = good("b6-", 10, 940);
    v[3].set_source_organisation("R");
    v[8].set_nhs_number("1");
    B("two bad events: the first is named", v,
      std::string("events[3].source_organisation: 'R") + kOds + kNothing);
  }
  {
    auto v = good("b7-", 4, 960);
    v.push_back(Env("b7-payload"));
    B("last without payload", v,
      "events[4].payload: exactly one payload is required (for example discharge_referral; see "
      "EventType)" +
          kNothing);
  }
  {
    auto v = good("b8-", 2, 970);
    v.insert(v.begin() + 1, With(Ref("b8-ref"), [](CareEvent& e) {
               e.mutable_discharge_referral()->mutable_needs()->set_summary(std::string(4001, 's'));
             }));
    B("referral with oversized text between good events", v,
      "events[1].discharge_referral.needs.summary: 4001 bytes exceeds the limit of 4000 bytes" +
          kNothing);
  }
  {
    auto v = good("b9-", 3, 980);
    v[1].mutable_occurred_at()->set_seconds(NowSeconds() + 7200);
    B("middle one from the future", v, Future("events[1].occurred_at: ", kNothing));
  }
  {
    std::vector<CareEvent> v;
    for (int i = 0; i < 10000; ++i) v.push_back(Adm("b10-" + std::to_string(i), 990));
    v.back().set_care_setting(static_cast<v1::CareSetting>(99));
    B("10000 events, the last bad", v,
      std::string("events[9999].care_setting: 99 is not a known CareSetting (one of ") +
          kCareSettings + ")" + kNothing);
  }
  {
    auto v = good("b12-", 3, 1030);
    v[2].set_source_system_id("uhcw-\xE9pr");
    B("third event's source system not UTF-8", v,
      "events[2].source_system_id: is not valid UTF-8 (byte 6 is 0xE9)" + kUtf8 + kNothing);
  }
  {
    auto v = good("b11-", 2, 995);
    v.push_back(escalation("b11-esc"));
    B("with an escalation", v,
      "events[2].escalation: escalations are raised by the broker itself (source_system_id "
      "\"icr-broker\"); publish the referral's state changes instead" +
          kNothing);
  }

  // --- PublishStream ----------------------------------------------------------------------------
  auto S = [&](const std::string& name, std::vector<CareEvent> events, Msg msg) {
    cases.push_back({"PublishStream: " + name, [this, events] { return Stream(events); }, INVALID,
                     std::move(msg)});
  };
  S("request without events", {}, "events: at least one event is required");
  {
    std::vector<CareEvent> many;
    for (int i = 0; i < 10001; ++i) many.push_back(Adm("st2-" + std::to_string(i), 800));
    S("10001 events", many, "events: 10001 events exceeds the limit of 10000 per request");
  }
  S("one bad NHS number", {With(Adm("st3"), nhs("9990000019"))},
    std::string("events[0].nhs_number: ") + kMod11);
  {
    auto v = good("st4-", 3, 1000);
    v[1].set_source_system_id("bad system");
    S("middle of 3 with a bad source system", v,
      "events[1].source_system_id: must be 1..64 characters of A-Z a-z 0-9 . _ : -");
  }
  {
    auto v = good("st5-", 50, 1010);
    v[49].mutable_admission()->mutable_location()->set_site(std::string(4001, 'S'));
    S("last of 50 with a 4001-byte site", v,
      "events[49].admission.location.site: 4001 bytes exceeds the limit of 4000 bytes");
  }
  S("date out of range", {edd("st6", 2026, 2, 29)},
    "events[0].expected_discharge_date_set.expected_discharge_date: day 29 is not a day of month "
    "2 (1..28)");
  S("unknown priority",
    {With(Adm("st7"), [](CareEvent& e) { e.set_priority(static_cast<v1::Priority>(-5)); })},
    std::string("events[0].priority: -5 is not a known Priority (one of ") + kPriorities + ")");
  S("no payload", {Env("st8")},
    "events[0].payload: exactly one payload is required (for example discharge_referral; see "
    "EventType)");
  {
    auto v = good("st9-", 2, 1040);
    v[1].mutable_admission()->mutable_location()->set_ward("Ward \xFF");
    S("second event's ward not UTF-8", v,
      "events[1].admission.location.ward: is not valid UTF-8 (byte 6 is 0xFF)" + kUtf8);
  }
  // A request that does not parse is answered in its place, and the stream
  // goes on: the next request is read and answered too.
  {
    v1::PublishStreamRequest bad, next;
    bad.set_request_id(7101);
    *bad.add_events() = With(Adm("st10"), nhs("\xC0\xAF"));  // an overlong '/'
    next.set_request_id(7102);
    *next.add_events() = With(Adm("st11"), nhs("9990000019"));
    cases.push_back(
        {"PublishStream: a request that does not parse, then another request",
         [this, bad, next] {
           auto ctx = testing::Context(30s);
           auto stream = stub_->PublishStream(ctx.get());
           if (!stream->Write(bad) || !stream->Write(next)) {
             return grpc::Status(grpc::StatusCode::UNKNOWN, "PublishStream: write failed");
           }
           stream->WritesDone();
           v1::PublishStreamResponse first, second;
           const bool got = stream->Read(&first) && stream->Read(&second);
           grpc::Status fin = stream->Finish();
           if (!got || !fin.ok()) {
             return grpc::Status(grpc::StatusCode::UNKNOWN,
                                 "PublishStream: two answers expected: " + fin.error_message());
           }
           if (first.request_id() != 7101 || second.request_id() != 7102 ||
               second.code() != grpc::StatusCode::INVALID_ARGUMENT ||
               second.message() != std::string("events[0].nhs_number: ") + kMod11) {
             return grpc::Status(grpc::StatusCode::UNKNOWN,
                                 "PublishStream: unexpected answers: " + first.ShortDebugString() +
                                     " / " + second.ShortDebugString());
           }
           return grpc::Status(static_cast<grpc::StatusCode>(first.code()), first.message());
         },
         INVALID, "events[0].nhs_number: is not valid UTF-8 (byte 1 is 0xC0)" + kUtf8});
  }

  // --- Subscribe
  // -----------------------------------------------------------------------------------
  auto Sub = [&](const std::string& name, const std::function<void(v1::SubscribeRequest&)>& set,
                 Msg msg, grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT) {
    v1::SubscribeRequest req;
    set(req);
    cases.push_back(
        {"Subscribe: " + name, [this, req] { return Subscribe(req); }, code, std::move(msg)});
  };
  Sub(
      "start time far past year 9999",
      [](auto& r) {
        r.mutable_start()->mutable_time()->set_seconds(std::numeric_limits<int64_t>::max());
      },
      "start.time: must be a valid timestamp (years 1 to 9999, nanos 0..999999999)");
  Sub(
      "start time with negative nanos",
      [](auto& r) { r.mutable_start()->mutable_time()->set_nanos(-5); },
      "start.time: must be a valid timestamp (years 1 to 9999, nanos 0..999999999)");
  Sub(
      "group without a name", [](auto& r) { r.set_group(true); },
      "group: a consumer group shares a durable subscription; set subscription to its name");
  Sub(
      "filter NHS number with a wrong check digit",
      [](auto& r) { r.mutable_filter()->add_nhs_numbers("9990000019"); },
      std::string("filter.nhs_numbers[0]: ") + kMod11);
  Sub(
      "second filter NHS number of 5 digits",
      [](auto& r) {
        r.mutable_filter()->add_nhs_numbers("999 000 0018");
        r.mutable_filter()->add_nhs_numbers("12345");
      },
      "filter.nhs_numbers[1]: must be exactly 10 digits (got 5 characters)");
  Sub(
      "filter NHS number empty", [](auto& r) { r.mutable_filter()->add_nhs_numbers(""); },
      "filter.nhs_numbers[0]: is required (10 digits)");
  Sub(
      "filter NHS number with a letter",
      [](auto& r) { r.mutable_filter()->add_nhs_numbers("99900O0018"); },
      "filter.nhs_numbers[0]: must contain digits only (character 6 is not a digit)");
  Sub(
      "filter NHS number with check digit 10",
      [](auto& r) { r.mutable_filter()->add_nhs_numbers("9990000001"); },
      "filter.nhs_numbers[0]: fails the Modulus 11 check (its first nine digits give check digit "
      "10)");
  Sub(
      "filter source organisation not ODS",
      [](auto& r) {
        r.mutable_filter()->add_source_organisations("RKB");
        r.mutable_filter()->add_source_organisations("r!");
      },
      std::string("filter.source_organisations[1]: 'R!") + kOds);
  Sub(
      "filter addressee without organisation",
      [](auto& r) { r.mutable_filter()->add_addressees()->set_team_code("HSCT-UHCW"); },
      std::string("filter.addressees[0].organisation: '") + kOds);
  Sub(
      "filter event type 0",
      [](auto& r) { r.mutable_filter()->add_event_types(v1::EVENT_TYPE_UNSPECIFIED); },
      "filter.event_types[0]: 0 is not a known EventType");
  Sub(
      "filter event type 99",
      [](auto& r) {
        r.mutable_filter()->add_event_types(v1::ADMISSION);
        r.mutable_filter()->add_event_types(static_cast<v1::EventType>(99));
      },
      "filter.event_types[1]: 99 is not a known EventType");
  Sub(
      "filter care setting 0",
      [](auto& r) { r.mutable_filter()->add_care_settings(v1::CARE_SETTING_UNSPECIFIED); },
      "filter.care_settings[0]: 0 is not a known CareSetting");
  Sub(
      "filter care setting 42",
      [](auto& r) { r.mutable_filter()->add_care_settings(static_cast<v1::CareSetting>(42)); },
      "filter.care_settings[0]: 42 is not a known CareSetting");
  Sub(
      "filter priority 7",
      [](auto& r) { r.mutable_filter()->add_priorities(static_cast<v1::Priority>(7)); },
      "filter.priorities[0]: 7 is not a known Priority");
  Sub(
      "filter team organisation not ODS",
      [](auto& r) {
        r.mutable_filter()->mutable_team()->set_organisation("X");
        r.mutable_filter()->mutable_team()->set_team_code("T");
      },
      std::string("filter.team.organisation: 'X") + kOds);
  Sub(
      "filter team without team code",
      [](auto& r) { r.mutable_filter()->mutable_team()->set_organisation("CCC"); },
      "filter.team.team_code: is required (the registered team's code)");
  Sub(
      "care relationship without a team",
      [](auto& r) { r.mutable_filter()->set_care_relationship(true); },
      "filter.care_relationship: needs filter.team (whose care relationships to follow)");
  Sub(
      "filter team not registered",
      [](auto& r) {
        r.mutable_filter()->mutable_team()->set_organisation("ccc");
        r.mutable_filter()->mutable_team()->set_team_code("NO-SUCH-TEAM");
      },
      "team CCC/NO-SUCH-TEAM is not registered (register it with icr.v1.Workflow/RegisterTeam)",
      grpc::StatusCode::NOT_FOUND);
  Sub(
      "ack_timeout_ms 999", [](auto& r) { r.set_ack_timeout_ms(999); },
      "ack_timeout_ms: 999 is outside 1000..3600000");
  Sub(
      "ack_timeout_ms 3600001", [](auto& r) { r.set_ack_timeout_ms(3600001); },
      "ack_timeout_ms: 3600001 is outside 1000..3600000");
  Sub(
      "max_attempts 101", [](auto& r) { r.set_max_attempts(101); },
      "max_attempts: 101 is outside 1..100");
  Sub(
      "max_in_flight 10001", [](auto& r) { r.set_max_in_flight(10001); },
      "max_in_flight: 10001 is outside 1..10000");
  Sub(
      "heartbeat_ms 99", [](auto& r) { r.set_heartbeat_ms(99); },
      "heartbeat_ms: 99 is outside 100..3600000");
  Sub(
      "heartbeat_ms 3600001", [](auto& r) { r.set_heartbeat_ms(3600001); },
      "heartbeat_ms: 3600001 is outside 100..3600000");
  Sub(
      "max_batch 1001", [](auto& r) { r.set_max_batch(1001); },
      "max_batch: 1001 is outside 1..1000");
  Sub(
      "max_batch 4294967295", [](auto& r) { r.set_max_batch(4294967295u); },
      "max_batch: 4294967295 is outside 1..1000");
  Sub(
      "max_batch with summary_changes",
      [](auto& r) {
        r.set_max_batch(2);
        r.set_summary_changes(true);
      },
      "max_batch: batches carry events; with summary_changes each summary is sent on its own "
      "(leave max_batch unset)");
  Sub(
      "start position 0", [](auto& r) { r.mutable_start()->set_position(0); },
      "start.position: positions start at 1");
  Sub(
      "durable, start position 0 (nothing created)",
      [](auto& r) {
        r.set_subscription("mal-durable-1");
        r.mutable_start()->set_position(0);
      },
      "start.position: positions start at 1");
  Sub(
      "durable, bad filter (nothing created)",
      [](auto& r) {
        r.set_subscription("mal-durable-2");
        r.mutable_filter()->add_priorities(static_cast<v1::Priority>(0));
      },
      "filter.priorities[0]: 0 is not a known Priority");
  Sub(
      "durable, max_in_flight 0x7fffffff (nothing created)",
      [](auto& r) {
        r.set_subscription("mal-durable-3");
        r.set_max_in_flight(0x7fffffff);
      },
      "max_in_flight: 2147483647 is outside 1..10000");
  Sub(
      "name with a space", [](auto& r) { r.set_subscription("discharge team"); },
      std::string("subscription: 'discharge team") + kSubName);
  Sub(
      "name with a slash", [](auto& r) { r.set_subscription("ccc/hsct"); },
      std::string("subscription: 'ccc/hsct") + kSubName);
  Sub(
      "name not ASCII", [](auto& r) { r.set_subscription("na\xC3\xAFve"); },
      std::string("subscription: 'na\xC3\xAFve") + kSubName);
  Sub(
      "name of 129 characters", [](auto& r) { r.set_subscription(std::string(129, 'n')); },
      "subscription: '" + std::string(129, 'n') + kSubName);
  Sub(
      "name of 200 characters (shown cut to 140)",
      [](auto& r) { r.set_subscription(std::string(200, 'n')); },
      "subscription: '" + std::string(140, 'n') + kSubName);
  Sub(
      "name not UTF-8", [](auto& r) { r.set_subscription("na\xEFve"); },
      "subscription: is not valid UTF-8 (byte 3 is 0xEF)" + kUtf8);
  Sub(
      "name reserved for rest-hooks", [](auto& r) { r.set_subscription("resthook:mine"); },
      "subscription: names starting with 'resthook:' hold FHIR rest-hook definitions and cannot "
      "be subscribed to");

  // --- Other Broker RPCs
  // ------------------------------------------------------------------------------
  auto U = [&](const std::string& name, std::function<grpc::Status()> call, grpc::StatusCode code,
               Msg msg) {
    cases.push_back({name, std::move(call), code, std::move(msg)});
  };
  auto ack = [this](const std::string& name) {
    return [this, name] {
      v1::AckRequest req;
      req.set_subscription(name);
      req.add_positions(1);
      v1::AckResponse resp;
      auto ctx = testing::Context();
      return stub_->Ack(ctx.get(), req, &resp);
    };
  };
  auto list_parked = [this](const std::string& name, uint32_t limit) {
    return [this, name, limit] {
      v1::ListParkedRequest req;
      req.set_subscription(name);
      req.set_limit(limit);
      v1::ListParkedResponse resp;
      auto ctx = testing::Context();
      return stub_->ListParked(ctx.get(), req, &resp);
    };
  };
  auto replay = [this](const std::string& name) {
    return [this, name] {
      v1::ReplayParkedRequest req;
      req.set_subscription(name);
      v1::ReplayParkedResponse resp;
      auto ctx = testing::Context();
      return stub_->ReplayParked(ctx.get(), req, &resp);
    };
  };
  auto del = [this](const std::string& name) {
    return [this, name] {
      v1::DeleteSubscriptionRequest req;
      req.set_subscription(name);
      v1::DeleteSubscriptionResponse resp;
      auto ctx = testing::Context();
      return stub_->DeleteSubscription(ctx.get(), req, &resp);
    };
  };
  auto history = [this](const std::string& nhs_number, uint32_t page_size,
                        const std::string& token) {
    return [this, nhs_number, page_size, token] {
      v1::GetPatientHistoryRequest req;
      req.set_nhs_number(nhs_number);
      req.set_page_size(page_size);
      req.set_page_token(token);
      v1::GetPatientHistoryResponse resp;
      auto ctx = testing::Context();
      return stub_->GetPatientHistory(ctx.get(), req, &resp);
    };
  };
  const auto NOT_FOUND = grpc::StatusCode::NOT_FOUND;
  U("Ack: empty name", ack(""), INVALID, std::string("subscription: '") + kSubName);
  U("Ack: name with a space", ack("my sub"), INVALID,
    std::string("subscription: 'my sub") + kSubName);
  U("Ack: unknown subscription", ack("mal-no-such"), NOT_FOUND,
    "subscription 'mal-no-such' does not exist");
  U("ListParked: empty name", list_parked("", 10), INVALID,
    std::string("subscription: '") + kSubName);
  U("ListParked: limit 1001", list_parked("mal-no-such", 1001), INVALID,
    "limit: 1001 exceeds the limit of 1000");
  U("ListParked: unknown subscription", list_parked("mal-no-such", 10), NOT_FOUND,
    "subscription 'mal-no-such' does not exist");
  U("ReplayParked: name with a question mark", replay("what?"), INVALID,
    std::string("subscription: 'what?") + kSubName);
  U("ReplayParked: unknown subscription", replay("mal-no-such"), NOT_FOUND,
    "subscription 'mal-no-such' does not exist");
  U("DeleteSubscription: name of 129 characters", del(std::string(129, 'd')), INVALID,
    "subscription: '" + std::string(129, 'd') + kSubName);
  U("DeleteSubscription: unknown subscription", del("mal-no-such"), NOT_FOUND,
    "subscription 'mal-no-such' does not exist");
  U("GetPatientHistory: wrong check digit", history("9990000019", 0, ""), INVALID,
    std::string("nhs_number: ") + kMod11);
  U("GetPatientHistory: no NHS number", history("", 0, ""), INVALID,
    "nhs_number: is required (10 digits)");
  U("GetPatientHistory: NHS number with letters", history("ABCDEFGHIJ", 0, ""), INVALID,
    "nhs_number: must contain digits only (character 1 is not a digit)");
  U("GetPatientHistory: page size 1001", history("9990000018", 1001, ""), INVALID,
    "page_size: 1001 exceeds the limit of 1000");
  U("GetPatientHistory: page token not a number", history("9990000018", 0, "abc"), INVALID,
    "page_token: not a token from a previous response");
  U("GetPatientHistory: page token 0", history("9990000018", 0, "0"), INVALID,
    "page_token: not a token from a previous response");
  U("GetPatientHistory: page token with a suffix", history("9990000018", 0, "12x"), INVALID,
    "page_token: not a token from a previous response");
  for (const std::string token : {"-1", " 5", "+1", "99999999999999999999"}) {
    U("GetPatientHistory: page token '" + token + "'", history("9990000018", 0, token), INVALID,
      "page_token: not a token from a previous response");
  }
  auto history_from = [this](int64_t seconds, int32_t nanos) {
    return [this, seconds, nanos] {
      v1::GetPatientHistoryRequest req;
      req.set_nhs_number("9990000018");
      req.mutable_from()->set_seconds(seconds);
      req.mutable_from()->set_nanos(nanos);
      v1::GetPatientHistoryResponse resp;
      auto ctx = testing::Context();
      return stub_->GetPatientHistory(ctx.get(), req, &resp);
    };
  };
  U("GetPatientHistory: from far past year 9999",
    history_from(std::numeric_limits<int64_t>::max(), 0), INVALID,
    "from: must be a valid timestamp (years 1 to 9999, nanos 0..999999999)");
  U("GetPatientHistory: from with negative nanos", history_from(0, -1), INVALID,
    "from: must be a valid timestamp (years 1 to 9999, nanos 0..999999999)");

  // --- Workflow RPCs
  // -------------------------------------------------------------------------------------
  auto register_team = [this](const std::function<void(v1::Team&)>& set) {
    return [this, set] {
      v1::RegisterTeamRequest req;
      auto* t = req.mutable_team();
      t->mutable_ref()->set_organisation("CCC");
      t->mutable_ref()->set_team_code("MAL-TEAM");
      t->set_role(v1::ROLE_DISCHARGE);
      set(*t);
      v1::Team resp;
      auto ctx = testing::Context();
      return workflow_->RegisterTeam(ctx.get(), req, &resp);
    };
  };
  U("RegisterTeam: organisation not ODS",
    register_team([](v1::Team& t) { t.mutable_ref()->set_organisation("C!C"); }), INVALID,
    std::string("team.ref.organisation: 'C!C") + kOds);
  U("RegisterTeam: team code with a space",
    register_team([](v1::Team& t) { t.mutable_ref()->set_team_code("HSCT UHCW"); }), INVALID,
    "team.ref.team_code: must be 1..64 characters of A-Z a-z 0-9 - _ . (e.g. HSCT-UHCW)");
  U("RegisterTeam: no role", register_team([](v1::Team& t) { t.clear_role(); }), INVALID,
    "team.role: is required (ROLE_DISCHARGE, ROLE_SOCIAL_CARE, ROLE_BROKERAGE, ROLE_PROVIDER, "
    "ROLE_GP_PRACTICE or ROLE_COMMUNITY)");
  U("RegisterTeam: brokerage without place",
    register_team([](v1::Team& t) { t.set_role(v1::ROLE_BROKERAGE); }), INVALID,
    "team.place: is required for ROLE_BROKERAGE teams (placement requests are routed by Place)");
  U(
      "GetReferral: no referral id",
      [this] {
        v1::GetReferralRequest req;
        v1::Referral resp;
        auto ctx = testing::Context();
        return workflow_->GetReferral(ctx.get(), req, &resp);
      },
      INVALID, "referral_id: is required");
  U(
      "GetCareSummary: wrong check digit",
      [this] {
        v1::GetCareSummaryRequest req;
        req.set_nhs_number("999-000-0019");
        v1::CareSummary resp;
        auto ctx = testing::Context();
        return workflow_->GetCareSummary(ctx.get(), req, &resp);
      },
      INVALID, std::string("nhs_number: ") + kMod11);
  return cases;
}

void MalformedInputTest::RunGrpc(const std::vector<GrpcCase>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE("gRPC case: " + c.name);
    const Snapshot before = Snap();
    grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_TRUE(Matches(c.message, s.error_message()));
    ExpectNothingStoredOrDelivered(before);
  }
}

// Inputs exactly at a limit, and the spellings the broker normalises: stored.
void MalformedInputTest::GrpcControls() {
  struct Control {
    std::string name;
    CareEvent event;
  };
  const std::vector<Control> controls = {
      {"free text of exactly 4000 bytes",
       With(Ref("ok-1", 1100),
            [](CareEvent& e) {
              e.mutable_discharge_referral()->mutable_needs()->set_summary(std::string(4000, 'x'));
            })},
      {"2000 two-byte characters (4000 bytes)", With(Adm("ok-2", 1101),
                                                     [](CareEvent& e) {
                                                       e.mutable_admission()->set_admission_method(
                                                           Repeat("\xC3\xA9", 2000));
                                                     })},
      {"source_system_id of 64 and source_message_id of 128 characters",
       With(Adm("ok-3", 1102),
            [](CareEvent& e) {
              e.set_source_system_id(std::string(64, 'S'));
              e.set_source_message_id(std::string(128, '~'));
            })},
      {"NHS number with spaces and hyphens; tab, LF and CR in text",
       With(Adm("ok-4", 1103),
            [](CareEvent& e) {
              e.set_nhs_number(e.nhs_number().substr(0, 3) + " " + e.nhs_number().substr(3, 3) +
                               "-" + e.nhs_number().substr(6));
              e.mutable_admission()->set_admission_method("emergency\t(via ED)\r\n");
            })},
  };
  for (const auto& c : controls) {
    SCOPED_TRACE("gRPC control: " + c.name);
    const Snapshot before = Snap();
    grpc::Status s = Publish(c.event);
    ASSERT_TRUE(s.ok()) << s.error_message();
    // The payload's field number is its EventType.
    ExpectControlStored(before, "gRPC: " + c.name,
                        {{broker::NormaliseNhsNumber(c.event.nhs_number()),
                          static_cast<v1::EventType>(c.event.payload_case())}});
  }
}

// ---------------------------------------------------------------------------
// HL7 v2 over MLLP
// ---------------------------------------------------------------------------

// ADT messages written like the fixtures in tests/adapters/hl7/fixtures.
std::string A01() {
  return "MSH|^~\\&|UHCW-EPR|RKB|ICR-BROKER|QWU|20250610093000+0100||ADT^A01^ADT_A01|A01-0001|P|"
         "2.4|||AL|NE|GBR|UNICODE UTF-8\r"
         "EVN|A01|20250610093000+0100||||20250610091500+0100\r"
         "PID|1||9990000018^^^NHS^NH~RKB1234567^^^RKB^MR||JONES^Margaret^Ann^^Mrs^^L||19400312|F|||"
         "12 Acacia Avenue^^Coventry^West Midlands^CV2 2DX^GBR^H||024 7600 0000^PRN^PH\r"
         "PD1|||Forest Medical Centre^^^^^^^^^M85011|G1234567^Patel^Amit^^^Dr\r"
         "PV1|1|I|Ward 33^Bay 2^Bed 4^RKB01^^^Main Building|21|||C1234567^Smith^Jane^^^Dr|||300|||"
         "||||||SP-2025-0001^^^RKB^VN|||||||||||||||||||||||||20250610091500+0100\r";
}
std::string A02(const std::string& id = "A02-0001", const std::string& nhs = "9990000026") {
  return "MSH|^~\\&|UHCW-EPR|RKB|ICR-BROKER|QWU|20250611141000+0100||ADT^A02^ADT_A02|" + id +
         "|P|2.4\r"
         "EVN|A02|20250611141000+0100||||20250611140500+0100\r"
         "PID|1||" +
         nhs +
         "^^^NHS^NH||BROWN^Arthur^^^Mr||19380704|M\r"
         "PV1|1|I|Ward 10^^Bed 2^RKB01|||AMU^^Bed 12^RKB01|C7654321^Khan^Sara^^^Dr||||||||||||"
         "SP-2025-0002^^^RKB^VN\r";
}
std::string A03() {
  return "MSH|^~\\&|UHCW-EPR|RKB|ICR-BROKER|QWU|20250614110000+0100||ADT^A03^ADT_A03|A03-0001|P|"
         "2.5.1\r"
         "EVN|A03|20250614110000+0100\r"
         "PID|1||9990000034^^^NHS^NH||TAYLOR^Edith^^^Mrs||19320215|F\r"
         "PV1|1|I|Ward 33^Bay 1^Bed "
         "1^RKB01||||||||||||||||SP-2025-0003^^^RKB^VN|||||||||||||||||54|"
         "VM1AB|||||||20250601080000+0100|20250614103000+0100\r";
}
std::string A05() {
  return "MSH|^~\\&|UHCW-EPR|RKB|ICR-BROKER|QWU|20250616090000+0100||ADT^A05^ADT_A05|A05-0001|P|"
         "2.5\r"
         "EVN|A05|20250616090000+0100\r"
         "PID|1||9990000050^^^NHS^NH||EVANS^Rhys^^^Mr||19601001|M\r"
         "PV1|1|P|Day Surgery^^^RKB01|11|||||||||||||||SP-2025-0005^^^RKB^VN\r"
         "PV2||||||||20250701\r";
}
std::string A11() {
  return "MSH|^~\\&|UHCW-EPR|RKB|ICR-BROKER|QWU|20250618083000+0100||ADT^A11^ADT_A09|A11-0001|P|"
         "2.4\r"
         "EVN|A11|20250618083000+0100||O\r"
         "PID|1||9990000077^^^NHS^NH||HALL^George^^^Mr\r"
         "PV1|1|I|Ward 33^^^RKB01||||||||||||||||SP-2025-0007^^^RKB^VN\r";
}
std::string A28() {
  return "MSH|^~\\&|CWPT-RIO|RYG|ICR-BROKER|QWU|20250619120000+0100||ADT^A28^ADT_A05|A28-0001|P|"
         "2.5\r"
         "EVN|A28|20250619120000+0100\r"
         "PID|1||RYG000123^^^RYG^MR~999 000 "
         "0107^^^NHS^NH||PATEL^Priya^Devi^^Ms^^L~PATEL^Pri^^^^^N||"
         "19850505|F|||Flat 2^1 High Street^Rugby^Warwickshire^CV21 2AA^GBR^H\r"
         "PD1|||Rugby Surgery^^Y02345\r";
}
std::string A40() {
  return "MSH|^~\\&|UHCW-PAS|RKB|ICR-BROKER|QWU|20250621150000+0100||ADT^A40^ADT_A39|A40-0001|P|"
         "2.3.1\r"
         "EVN|A40|20250621150000+0100\r"
         "PID|1||9990000123^^^NHS^NH||MORRIS^Ruth^^^Mrs||19500202|F\r"
         "MRG|9990000131^^^NHS^NH\r";
}

// `message` padded with an NTE segment to exactly `size` bytes.
std::string PadTo(const std::string& message, size_t size) {
  const std::string head = message + "NTE|1||";
  return head + std::string(size - head.size() - 1, 'y') + "\r";
}

const char* Hl7CodeText(int code) {
  switch (code) {
    case 100:
      return "Segment sequence error";
    case 101:
      return "Required field missing";
    case 102:
      return "Data type error";
    case 103:
      return "Table value not found";
    case 200:
      return "Unsupported message type";
    case 201:
      return "Unsupported event code";
    case 203:
      return "Unsupported version id";
  }
  return "Application internal error";
}

std::vector<Hl7Case> MalformedInputTest::Hl7Cases() {
  const std::string a02 = A02();
  const std::string kTriggers = "(supported: A01 A02 A03 A04 A05 A08 A11 A12 A13 A28 A31 A40)";
  const std::string kVersions = "(2.3, 2.3.1, 2.4, 2.5 or 2.5.1)";
  const std::string kDtm = " is not an HL7 date/time (YYYYMMDDHHMMSS[.SSSS][+ZZZZ])";
  const std::string kEvn6 = "||||20250611140500+0100";
  auto evn6 = [&](const std::string& v) { return Replace(a02, kEvn6, "||||" + v); };
  std::string many_segments = a02;
  for (int i = 0; i < 1000; ++i) many_segments += "NTE|" + std::to_string(i) + "\r";
  std::string many_fields = a02 + "ZXX";
  for (int i = 0; i < 300; ++i) many_fields += "|f";
  many_fields += "\r";
  // A ward value filling a message of exactly 1 MiB (the frame limit).
  std::string huge_ward;
  {
    const std::string probe = Replace(a02, "Ward 10^", "@^");
    huge_ward = Replace(a02, "Ward 10^", std::string((1 << 20) - (probe.size() - 1), 'W') + "^");
  }
  const std::string kSize = " bytes exceeds the limit of 262144 bytes per event";
  const std::string kTooLarge = "message: the care event mapped from this message is too large: ";

  std::vector<Hl7Case> c = {
      // --- not parseable: AR ---------------------------------------------------------------
      {"empty message", "", "AR", "", 100, "", "message: empty message"},
      {"only blank lines", "\r\n \t\r", "AR", "", 100, "", "message: empty message"},
      {"XML instead of ER7",
       "<?xml version=\"1.0\"?><ADT_A01 xmlns=\"urn:hl7-org:v2xml\"><MSH/></ADT_A01>", "AR", "",
       100, "", "message: XML-encoded HL7 is not supported: send ER7 (pipe-delimited) HL7 v2"},
      {"nHapi crash input MSHH0", "MSHH0\r", "AR", "", 102, "MSH^1^1^1",
       "MSH-1: field separator 'H' must be a printable punctuation character (usually '|')"},
      {"nHapi crash input MSH|^|||||||^A|||2.2\\r^AA", "MSH|^|||||||^A|||2.2\r^AA", "AR", "", 102,
       "MSH^1^2^1",
       "MSH-2: encoding characters '^' must be 4 characters (component, repetition, escape, "
       "subcomponent; usually ^~\\&), or 5 with the v2.7 truncation character"},
      {"MSH alone", "MSH", "AR", "", 100, "MSH^1^1^1", "MSH-1: the field separator is missing"},
      {"MSH then CR", "MSH\r", "AR", "", 100, "MSH^1^1^1", "MSH-1: the field separator is missing"},
      {"space as field separator", Replace(a02, "MSH|^~\\&|", "MSH ^~\\& "), "AR", "", 102,
       "MSH^1^1^1",
       "MSH-1: field separator ' ' must be a printable punctuation character (usually '|')"},
      {"digit as field separator", Replace(a02, "MSH|^~\\&|", "MSH1^~\\&1"), "AR", "", 102,
       "MSH^1^1^1",
       "MSH-1: field separator '1' must be a printable punctuation character (usually '|')"},
      {"bad MSH-2: an encoding character twice", Replace(a02, "MSH|^~\\&|", "MSH|^~^&|"), "AR", "",
       102, "MSH^1^2^1",
       "MSH-2: encoding character '^' is used twice (the separators must all differ)"},
      {"bad MSH-2: three encoding characters", Replace(a02, "MSH|^~\\&|", "MSH|^~\\|"), "AR", "",
       102, "MSH^1^2^1",
       "MSH-2: encoding characters '^~\\' must be 4 characters (component, repetition, escape, "
       "subcomponent; usually ^~\\&), or 5 with the v2.7 truncation character"},
      {"bad MSH-2: six encoding characters", Replace(a02, "MSH|^~\\&|", "MSH|^~\\&#!|"), "AR", "",
       102, "MSH^1^2^1",
       "MSH-2: encoding characters '^~\\&#!' must be 4 characters (component, repetition, "
       "escape, subcomponent; usually ^~\\&), or 5 with the v2.7 truncation character"},
      {"bad MSH-2: a letter", Replace(a02, "MSH|^~\\&|", "MSH|^~\\A|"), "AR", "", 102, "MSH^1^2^1",
       "MSH-2: encoding character 'A' must be a printable punctuation character"},
      {"bad MSH-2: the field separator again", Replace(a02, "MSH|^~\\&|", "MSH|^~\\||"), "AR", "",
       102, "MSH^1^2^1",
       "MSH-2: encoding characters '^~\\' must be 4 characters (component, repetition, escape, "
       "subcomponent; usually ^~\\&), or 5 with the v2.7 truncation character"},
      {"PID before MSH", "PID|1||9990000018^^^NHS^NH\r" + a02, "AR", "", 100, "",
       "segment 1: a message must start with an MSH segment (got 'PID')"},
      {"batch header", "BHS|^~\\&|UHCW\r" + a02, "AR", "", 100, "BHS^1",
       "segment 1 (BHS): batches (BHS/FHS) are not supported: send one message per MLLP frame"},
      {"second MSH in one frame", a02 + A01(), "AR", "A02-0001", 100, "MSH^2",
       "segment 5 (MSH): a second MSH segment starts a second message, but an MLLP frame "
       "carries one message: send each message in its own frame"},
      {"lower-case segment name", a02 + "nte|1|x\r", "AR", "A02-0001", 100, "nte^1",
       "segment 5 (nte): 'nte|1|x' does not start with a segment name (3 characters: A-Z then "
       "A-Z or 0-9)"},
      {"four-letter segment name", a02 + "NTEX|1|x\r", "AR", "A02-0001", 100, "NTE^1",
       "segment 5 (NTE): the segment name must be followed by the field separator '|'"},
      {"two-letter segment", a02 + "NT\r", "AR", "A02-0001", 100, "",
       "segment 5 (NT): 'NT' does not start with a segment name (3 characters: A-Z then A-Z or "
       "0-9)"},
      {"LF inside a field value", Replace(a02, "BROWN^Arthur", "BROWN\nArthur"), "AR", "A02-0001",
       100, "Art^1",
       "segment 4 (Art): 'Arthur^^^Mr|...' does not start with a segment name (3 characters: A-Z "
       "then A-Z or 0-9)"},
      {"unknown escape", Replace(a02, "BROWN^Arthur", "BROWN\\Q\\^Arthur"), "AR", "A02-0001", 102,
       "PID^1^5^1",
       "PID-5: unknown escape sequence \\Q\\ (known: F S T R E X H N C M Z and formatting "
       "commands)"},
      {"unterminated escape", Replace(a02, "BROWN^Arthur", "BROWN\\F^Arthur"), "AR", "A02-0001",
       102, "PID^1^5^1",
       "PID-5: unterminated escape sequence (escape character '\\' at offset 5 has no closing "
       "'\\')"},
      {"escape at the end of a field", Replace(a02, "|M\r", "|M\\\r"), "AR", "A02-0001", 102,
       "PID^1^8^1",
       "PID-8: unterminated escape sequence (escape character '\\' at offset 1 has no closing "
       "'\\')"},
      {"odd hex escape", Replace(a02, "BROWN^Arthur", "BROWN\\X4\\^Arthur"), "AR", "A02-0001", 102,
       "PID^1^5^1", "PID-5: escape sequence \\X4\\ must be X followed by pairs of hex digits"},
      {"non-hex escape", Replace(a02, "BROWN^Arthur", "BROWN\\XZZ\\^Arthur"), "AR", "A02-0001", 102,
       "PID^1^5^1", "PID-5: escape sequence \\XZZ\\ must be X followed by pairs of hex digits"},
      {"empty escape", Replace(a02, "BROWN^Arthur", "BROWN\\\\^Arthur"), "AR", "A02-0001", 102,
       "PID^1^5^1", "PID-5: empty escape sequence \\\\"},
      {"character set escape without hex", Replace(a02, "BROWN^Arthur", "BROWN\\C\\^Arthur"), "AR",
       "A02-0001", 102, "PID^1^5^1", "PID-5: escape sequence \\C\\ must be followed by hex digits"},
      {"101 repetitions", Replace(a02, "9990000026^^^NHS^NH", std::string(100, '~')), "AR",
       "A02-0001", 102, "PID^1^3^1", "PID-3: more than 100 repetitions"},
      {"1004 segments", many_segments, "AR", "A02-0001", 100, "",
       "message: more than 1000 segments"},
      {"301 fields in a segment", many_fields, "AR", "A02-0001", 102, "ZXX^1",
       "segment 5 (ZXX): more than 256 fields"},
      {"frame of 1 MiB + 1 byte", PadTo(a02, (1 << 20) + 1), "AR", "A02-0001", 102, "",
       "message: the MLLP frame exceeds the limit of 1048576 bytes; nothing was stored and the "
       "connection will be closed",
       /*closes=*/true},
      // --- unsupported: AR ---------------------------------------------------------------------
      {"version missing", Replace(a02, "|P|2.4\r", "|P|\r"), "AR", "A02-0001", 101, "MSH^1^12^1",
       "MSH-12: version id is required " + kVersions},
      {"version 2.2", Replace(a02, "|P|2.4\r", "|P|2.2\r"), "AR", "A02-0001", 203, "MSH^1^12^1",
       "MSH-12: version '2.2' is not supported " + kVersions},
      {"version 2.6", Replace(a02, "|P|2.4\r", "|P|2.6\r"), "AR", "A02-0001", 203, "MSH^1^12^1",
       "MSH-12: version '2.6' is not supported " + kVersions},
      {"version 2.5.2", Replace(a02, "|P|2.4\r", "|P|2.5.2\r"), "AR", "A02-0001", 203, "MSH^1^12^1",
       "MSH-12: version '2.5.2' is not supported " + kVersions},
      {"message type missing", Replace(a02, "ADT^A02^ADT_A02", ""), "AR", "A02-0001", 101,
       "MSH^1^9^1^1", "MSH-9: message type is required (e.g. ADT^A01)"},
      {"message type ORU", Replace(a02, "ADT^A02^ADT_A02", "ORU^R01^ORU_R01"), "AR", "A02-0001",
       200, "MSH^1^9^1^1", "MSH-9: message type 'ORU' is not supported (ADT only)"},
      {"message type ACK", Replace(a02, "ADT^A02^ADT_A02", "ACK^A02^ACK"), "AR", "A02-0001", 200,
       "MSH^1^9^1^1", "MSH-9: message type 'ACK' is not supported (ADT only)"},
      {"trigger A99", Replace(a02, "ADT^A02^ADT_A02", "ADT^A99^ADT_A01"), "AR", "A02-0001", 201,
       "MSH^1^9^1^2", "MSH-9: trigger event 'A99' is not supported " + kTriggers},
      {"trigger A34 (old merge)", Replace(a02, "ADT^A02^ADT_A02", "ADT^A34^ADT_A30"), "AR",
       "A02-0001", 201, "MSH^1^9^1^2", "MSH-9: trigger event 'A34' is not supported " + kTriggers},
      {"trigger missing", Replace(Replace(a02, "ADT^A02^ADT_A02", "ADT"), "EVN|A02|", "EVN||"),
       "AR", "A02-0001", 101, "MSH^1^9^1^2", "MSH-9: trigger event is required (e.g. ADT^A01)"},
      {"control id missing", Replace(a02, "|A02-0001|", "||"), "AR", "", 101, "MSH^1^10^1",
       "MSH-10: message control id is required (it is the idempotency key of the message)"},
      // --- content errors: AE ------------------------------------------------------------------
      {"control id of 121 characters", A02(std::string(121, 'C')), "AE", std::string(121, 'C'), 102,
       "MSH^1^10^1", "MSH-10: message control id is 121 characters (at most 120)"},
      {"control id with a control character", A02("A02\\X01\\0001"), "AE",
       std::string("A02\x01") + "0001", 102, "MSH^1^10^1",
       "MSH-10 (source_message_id): must be 1..128 printable ASCII characters"},
      {"sending application missing", Replace(a02, "|UHCW-EPR|RKB|", "||RKB|"), "AE", "A02-0001",
       101, "MSH^1^3^1", "MSH-3: sending application is required (it becomes source_system_id)"},
      {"sending application blank", Replace(a02, "|UHCW-EPR|RKB|", "|   |RKB|"), "AE", "A02-0001",
       101, "MSH^1^3^1", "MSH-3: sending application is required (it becomes source_system_id)"},
      {"sending facility missing", Replace(a02, "|UHCW-EPR|RKB|", "|UHCW-EPR||"), "AE", "A02-0001",
       101, "MSH^1^4^1",
       "MSH-4: sending facility is required: the ODS code of the sending organisation, e.g. RKB"},
      {"sending facility not an ODS code", Replace(a02, "|UHCW-EPR|RKB|", "|UHCW-EPR|R-K-B|"), "AE",
       "A02-0001", 102, "MSH^1^4^1",
       "MSH-4 (source_organisation): 'R-K-B' is not an ODS code (3 to 10 letters and digits, "
       "e.g. RKB)"},
      {"PID missing",
       Replace(a02, "PID|1||9990000026^^^NHS^NH||BROWN^Arthur^^^Mr||19380704|M\r", ""), "AE",
       "A02-0001", 100, "PID^1", "PID: segment is required (the patient) but is missing"},
      {"PV1 missing on A02", a02.substr(0, a02.find("PV1|")), "AE", "A02-0001", 100, "PV1^1",
       "PV1: segment is required for ADT^A02 but is missing"},
      {"PV1 missing on A11", A11().substr(0, A11().find("PV1|")), "AE", "A11-0001", 100, "PV1^1",
       "PV1: segment is required for ADT^A11 but is missing"},
      {"PID-3 without an NHS number", Replace(a02, "9990000026^^^NHS^NH", "RKB555^^^RKB^MR"), "AE",
       "A02-0001", 101, "PID^1^3^1",
       "PID-3: no NHS number: PID-3 needs a repetition with identifier type code NH (CX.5) or "
       "assigning authority NHS (CX.4), e.g. 9990000018^^^NHS^NH"},
      {"PID-3 NHS identifier without a value", Replace(a02, "9990000026^^^NHS^NH", "^^^NHS^NH"),
       "AE", "A02-0001", 101, "PID^1^3^1",
       "PID-3: no NHS number: PID-3 needs a repetition with identifier type code NH (CX.5) or "
       "assigning authority NHS (CX.4), e.g. 9990000018^^^NHS^NH"},
      {"NHS number with a wrong check digit", A02("A02-0001", "9990000019"), "AE", "A02-0001", 102,
       "PID^1^3^1", std::string("PID-3 (nhs_number): ") + kMod11},
      {"NHS number wrong in the second repetition",
       Replace(a02, "9990000026^^^NHS^NH", "RKB555^^^RKB^MR~9990000019^^^NHS^NH"), "AE", "A02-0001",
       102, "PID^1^3^2", std::string("PID-3 (nhs_number): ") + kMod11},
      {"NHS number by OID with a wrong check digit",
       Replace(a02, "9990000026^^^NHS^NH", "9990000019^^^&2.16.840.1.113883.2.1.4.1&ISO"), "AE",
       "A02-0001", 102, "PID^1^3^1", std::string("PID-3 (nhs_number): ") + kMod11},
      {"NHS number whose stem gives check digit 10", A02("A02-0001", "9990000000"), "AE",
       "A02-0001", 102, "PID^1^3^1",
       "PID-3 (nhs_number): fails the Modulus 11 check (its first nine digits give check digit "
       "10)"},
      {"NHS number of 9 digits", A02("A02-0001", "999000002"), "AE", "A02-0001", 102, "PID^1^3^1",
       "PID-3 (nhs_number): must be exactly 10 digits (got 9 characters)"},
      {"NHS number with letters", A02("A02-0001", "99900000AB"), "AE", "A02-0001", 102, "PID^1^3^1",
       "PID-3 (nhs_number): must contain digits only (character 9 is not a digit)"},
      {"NHS number in full-width digits", A02("A02-0001", FullWidth("9990000026")), "AE",
       "A02-0001", 102, "PID^1^3^1",
       "PID-3 (nhs_number): must contain ASCII digits 0-9 only (character 1 is U+FF19, a "
       "full-width digit; retype the number with 0-9)"},
      {"NHS number spaced in wrong places, wrong check digit", A02("A02-0001", "99 900 000 19"),
       "AE", "A02-0001", 102, "PID^1^3^1", std::string("PID-3 (nhs_number): ") + kMod11},
      {"NHS number in PID-2 with a wrong check digit",
       Replace(a02, "PID|1||9990000026^^^NHS^NH|", "PID|1|9990000019^^^NHS^NH||"), "AE", "A02-0001",
       102, "PID^1^2^1", std::string("PID-2 (nhs_number): ") + kMod11},
      {"visit number missing", Replace(a02, "SP-2025-0002^^^RKB^VN", ""), "AE", "A02-0001", 101,
       "PV1^1^19^1", "PV1-19 (transfer.encounter_id): is required"},
      {"A02 without PV1-3", Replace(a02, "Ward 10^^Bed 2^RKB01", ""), "AE", "A02-0001", 101,
       "PV1^1^3^1", "PV1-3 (transfer.to): is required"},
      {"EVN-6 with dashes", evn6("2025-06-11"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6: '2025-06-11'" + kDtm},
      {"EVN-6 with 13 digits", evn6("2025061114050"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6: '2025061114050'" + kDtm},
      {"EVN-6 with 5 fraction digits", evn6("20250611140500.12345+0100"), "AE", "A02-0001", 102,
       "EVN^1^6^1", "EVN-6: '20250611140500.12345+0100'" + kDtm},
      {"EVN-6 offset +2400", evn6("20250611140500+2400"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6: '20250611140500+2400': time zone offset out of range"},
      {"EVN-6 month 13", evn6("20251311140500+0100"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6: '20251311140500+0100': month 13 is not 1..12"},
      {"EVN-6 30 February", evn6("20250230140500+0100"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6: '20250230140500+0100': day 30 is not a day of month 2"},
      {"EVN-6 hour 25", evn6("20250611250500+0100"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6: '20250611250500+0100': time of day out of range"},
      {"EVN-6 year 0000", evn6("00000611140500+0100"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6: '00000611140500+0100': year 0000 is not a year"},
      {"EVN-6 year 1850", evn6("18500611140500+0100"), "AE", "A02-0001", 102, "EVN^1^6^1",
       "EVN-6 (occurred_at): must be between 1900-01-01 and 2200-01-01"},
      {"EVN-6 in the future", evn6("20990101000000+0000"), "AE", "A02-0001", 102, "EVN^1^6^1",
       Future("EVN-6 (occurred_at): ")},
      {"MSH-7 not a time (no EVN)",
       Replace(Replace(A40(), "EVN|A40|20250621150000+0100\r", ""), "20250621150000+0100",
               "yesterday"),
       "AE", "A40-0001", 102, "MSH^1^7^1", "MSH-7: 'yesterday'" + kDtm},
      {"no time anywhere",
       Replace(Replace(A40(), "EVN|A40|20250621150000+0100\r", ""), "20250621150000+0100", ""),
       "AE", "A40-0001", 101, "MSH^1^7^1",
       "MSH-7: date/time of message is required (or EVN-6 / EVN-2)"},
      {"A03 without discharge disposition", Replace(A03(), "|54|VM1AB|", "||VM1AB|"), "AE",
       "A03-0001", 101, "PV1^1^36^1",
       "PV1-36: discharge disposition is required on A03 (it becomes discharge.destination; e.g. "
       "19 = usual place of residence)"},
      {"A03 disposition 98", Replace(A03(), "|54|VM1AB|", "|98|VM1AB|"), "AE", "A03-0001", 103,
       "PV1^1^36^1",
       "PV1-36: discharge disposition 98 means the spell has not finished: not valid on a "
       "discharge (A03)"},
      {"A03 disposition unknown", Replace(A03(), "|54|VM1AB|", "|ZZ|VM1AB|"), "AE", "A03-0001", 103,
       "PV1^1^36^1",
       "PV1-36: discharge disposition 'ZZ' is not a known code (NHS Data Dictionary discharge "
       "destination, e.g. 19 usual place of residence, 54 or 85 care home, 79 died; or a "
       "DischargeDestination name such as CARE_HOME_NURSING)"},
      {"A03 disposition from HL7 table 0112", Replace(A03(), "|54|VM1AB|", "|01|VM1AB|"), "AE",
       "A03-0001", 103, "PV1^1^36^1",
       "PV1-36: discharge disposition '01' is not a known code (NHS Data Dictionary discharge "
       "destination, e.g. 19 usual place of residence, 54 or 85 care home, 79 died; or a "
       "DischargeDestination name such as CARE_HOME_NURSING)"},
      {"A03 discharged-to not an ODS code",
       Replace(A03(), "|54|VM1AB|", "|54|Sunny View Care Home|"), "AE", "A03-0001", 102,
       "PV1^1^37^1",
       "PV1-37: discharged-to location 'SUNNY VIEW CARE HOME' is not an ODS code (3 to 10 "
       "letters and digits, e.g. VM1AB for a care home)"},
      {"A28 impossible date of birth", Replace(A28(), "19850505", "19851332"), "AE", "A28-0001",
       102, "PID^1^7^1", "PID-7: date of birth: '19851332' is not an HL7 date (YYYYMMDD)"},
      {"A28 date of birth before 1900", Replace(A28(), "19850505", "18500505"), "AE", "A28-0001",
       102, "PID^1^7^1", "PID-7 (demographics_update.birth_date): year 1850 is outside 1900..2200"},
      {"A28 unknown sex", Replace(A28(), "|19850505|F|", "|19850505|X|"), "AE", "A28-0001", 103,
       "PID^1^8^1",
       "PID-8: administrative sex 'X' is not a known code (HL7 table 0001: M F O U A N)"},
      {"A40 without MRG", A40().substr(0, A40().find("MRG|")), "AE", "A40-0001", 100, "MRG^1",
       "MRG: segment is required for ADT^A40 but is missing"},
      {"A40 MRG-1 without an NHS number",
       Replace(A40(), "MRG|9990000131^^^NHS^NH", "MRG|X1^^^RKB^MR"), "AE", "A40-0001", 101,
       "MRG^1^1^1",
       "MRG-1: no retired NHS number (a repetition with identifier type code NH or assigning "
       "authority NHS, e.g. 9990000026^^^NHS^NH)"},
      {"A40 merge into itself", Replace(A40(), "MRG|9990000131", "MRG|999 000 0123"), "AE",
       "A40-0001", 102, "MRG^1^1^1",
       "MRG-1 (nhs_number_merge.retired_nhs_number): must differ from nhs_number (the surviving "
       "number)"},
      {"A40 retired number with a wrong check digit",
       Replace(A40(), "MRG|9990000131", "MRG|9990000132"), "AE", "A40-0001", 102, "MRG^1^1^1",
       "MRG-1 (nhs_number_merge.retired_nhs_number): fails the Modulus 11 check (check digit "
       "should be 1, got 2)"},
      {"A40 with two PID/MRG groups",
       A40() + "PID|2||9990000158^^^NHS^NH\rMRG|9990000166^^^NHS^NH\r", "AE", "A40-0001", 100,
       "PID^1",
       "PID: A40 with more than one PID/MRG group is not supported: send one merge per message"},
      {"A01 practice not an ODS code",
       Replace(A01(), "Forest Medical Centre^^^^^^^^^M85011", "Forest Surgery"), "AE", "A01-0001",
       102, "PD1^1^3^1",
       "PD1-3 (gp_registration.practice): 'FOREST SURGERY' is not an ODS code (3 to 10 letters "
       "and digits, e.g. RKB)"},
      {"A05 impossible expected admission date",
       Replace(A05(), "PV2||||||||20250701", "PV2||||||||20250732"), "AE", "A05-0001", 102,
       "PV2^1^8^1", "PV2-8: expected admission date: '20250732' is not an HL7 date (YYYYMMDD)"},
      {"control character in the ward", Replace(a02, "Ward 10^", "Ward\\X01\\10^"), "AE",
       "A02-0001", 102, "PV1^1^3^1",
       "PV1-3 (transfer.to.ward): contains a control character (0x01)"},
      // A Latin-1 sender (MSH-18 8859/1): the byte 0xE9 is not UTF-8 text.
      {"Latin-1 byte in the ward", Replace(a02, "Ward 10^", "Ward 10 Caf\xE9^"), "AE",
       "A02-0001", 102, "PV1^1^3^1",
       "PV1-3 (transfer.to.ward): is not valid UTF-8 (byte 12 is 0xE9); string fields must "
       "hold UTF-8 text"},
      {"ward of 4001 bytes", Replace(a02, "Ward 10^", std::string(4001, 'W') + "^"), "AE",
       "A02-0001", 102, "PV1^1^3^1",
       "PV1-3 (transfer.to.ward): 4001 bytes exceeds the limit of 4000 bytes"},
      {"ward of 300000 bytes", Replace(a02, "Ward 10^", std::string(300000, 'W') + "^"), "AE",
       "A02-0001", 102, "", kTooLarge + "300114" + kSize},
      {"ward filling a 1 MiB message", huge_ward, "AE", "A02-0001", 102, "",
       kTooLarge + "1048393" + kSize},
      // --- not MLLP at all: no ACK, the connection is closed
      // --------------------------------------
      {"HL7 without MLLP framing", a02, "", "", 0, "", ""},
  };
  return c;
}

void MalformedInputTest::RunHl7(const std::vector<Hl7Case>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE("HL7 case: " + c.name);
    const Snapshot before = Snap();
    MllpClient client(mllp_->port());
    if (c.msa1.empty()) {
      client.SendRaw(c.message);  // the listener may close before it has read everything
      EXPECT_EQ(client.ReadFrame(1000), "") << "an ACK to bytes outside a frame";
      EXPECT_TRUE(client.WaitClosed()) << "the connection stayed open";
      ExpectNothingStoredOrDelivered(before);
      continue;
    }
    ASSERT_TRUE(client.SendRaw("\x0b" + c.message + "\x1c\r"));
    const std::string ack = client.ReadFrame();
    ASSERT_FALSE(ack.empty()) << "no ACK";
    adapters::hl7::Er7Message m;
    const adapters::hl7::Er7Error pe = adapters::hl7::ParseEr7(ack, {}, &m);
    ASSERT_TRUE(pe.ok()) << pe.ToString() << "\n" << ack;
    const int msa = m.FindSegment("MSA");
    ASSERT_GE(msa, 0) << ack;
    EXPECT_EQ(m.GetAt(msa, 1), c.msa1) << ack;
    EXPECT_EQ(m.GetAt(msa, 2), c.msa2) << ack;
    ASSERT_EQ(m.CountSegments("ERR"), 1) << ack;
    const int err = m.FindSegment("ERR");
    EXPECT_EQ(m.GetAt(err, 3, 1, 1), std::to_string(c.err3)) << ack;
    EXPECT_EQ(m.GetAt(err, 3, 1, 2), Hl7CodeText(c.err3)) << ack;
    EXPECT_EQ(m.GetAt(err, 3, 1, 3), "HL70357");
    EXPECT_EQ(std::string(m.RawField(err, 2)), c.err2) << "ERR-2 in " << ack;
    EXPECT_EQ(m.GetAt(err, 4), "E");
    const std::string text = m.GetAt(err, 8);
    EXPECT_TRUE(Matches(c.text, text)) << "(ERR-8)";
    EXPECT_EQ(m.GetAt(msa, 3), text.substr(0, 80)) << "MSA-3 is ERR-8's first 80 characters";
    if (c.closes) {
      EXPECT_TRUE(client.WaitClosed()) << "the connection stayed open";
    }
    ExpectNothingStoredOrDelivered(before);
  }
}

// Documented as accepted: LF and CRLF segment ends, a ward of exactly 4,000
// bytes, and a message of exactly 1 MiB (the frame limit).
void MalformedInputTest::Hl7Controls() {
  struct Control {
    std::string name;
    std::string message;
    std::string nhs;
  };
  auto lf = [](std::string s) {
    for (char& ch : s) {
      if (ch == '\r') ch = '\n';
    }
    return s;
  };
  auto crlf = [](const std::string& s) {
    std::string out;
    for (char ch : s) {
      if (ch == '\r') {
        out += "\r\n";
      } else {
        out += ch;
      }
    }
    return out;
  };
  const std::string n1 = testing::TestNhsNumber(1200), n2 = testing::TestNhsNumber(1201),
                    n3 = testing::TestNhsNumber(1202), n4 = testing::TestNhsNumber(1203);
  const std::vector<Control> controls = {
      {"segments ending with LF", lf(A02("OK-LF", n1)), n1},
      {"segments ending with CRLF", crlf(A02("OK-CRLF", n2)), n2},
      {"ward of exactly 4000 bytes",
       Replace(A02("OK-4000", n3), "Ward 10^", std::string(4000, 'W') + "^"), n3},
      {"message of exactly 1 MiB", PadTo(A02("OK-1MIB", n4), 1 << 20), n4},
  };
  for (const auto& c : controls) {
    SCOPED_TRACE("HL7 control: " + c.name);
    const Snapshot before = Snap();
    MllpClient client(mllp_->port());
    ASSERT_TRUE(client.SendRaw("\x0b" + c.message + "\x1c\r"));
    const std::string ack = client.ReadFrame();
    adapters::hl7::Er7Message m;
    ASSERT_TRUE(adapters::hl7::ParseEr7(ack, {}, &m).ok()) << ack;
    const int msa = m.FindSegment("MSA");
    ASSERT_GE(msa, 0) << ack;
    ASSERT_EQ(m.GetAt(msa, 1), "AA") << ack;
    ExpectControlStored(before, "HL7: " + c.name, {{c.nhs, v1::TRANSFER}});
  }
}

// ---------------------------------------------------------------------------
// FHIR R4 over HTTP
// ---------------------------------------------------------------------------

constexpr char kNhsSystem[] = "https://fhir.nhs.uk/Id/nhs-number";
const std::string kNhsWhere = "identifier.where(system='https://fhir.nhs.uk/Id/nhs-number')";
const std::string kExt = "https://icr-broker.example/fhir/StructureDefinition/";

json PatientJson(const std::string& id, const std::string& nhs) {
  return {{"resourceType", "Patient"},
          {"id", id},
          {"meta", {{"versionId", "1"}}},
          {"identifier", json::array({{{"system", kNhsSystem}, {"value", nhs}}})},
          {"name", json::array({{{"family", "Case"}, {"given", {"Test"}}}})},
          {"gender", "female"},
          {"birthDate", "1950-01-01"}};
}

json EncounterJson() {
  return {{"resourceType", "Encounter"},
          {"id", "mal-enc"},
          {"identifier", json::array({{{"value", "MAL-SPELL"}}})},
          {"status", "in-progress"},
          {"subject", {{"identifier", {{"system", kNhsSystem}, {"value", "9990000212"}}}}},
          {"period", {{"start", "2025-11-01T10:00:00Z"}}}};
}

json ReferralJson() {
  return json::parse(R"({
  "resourceType": "ServiceRequest",
  "id": "mal-sr-1",
  "meta": { "versionId": "1" },
  "identifier": [ { "system": "https://uhcw.example.nhs.uk/Id/discharge-referral", "value": "MAL-REF-1" } ],
  "status": "active",
  "intent": "order",
  "priority": "urgent",
  "category": [ { "coding": [ { "system": "https://icr-broker.example/fhir/CodeSystem/discharge-pathway", "code": "pathway-1" } ] } ],
  "code": { "coding": [ { "system": "https://icr-broker.example/fhir/CodeSystem/request-type", "code": "discharge-referral" } ] },
  "subject": { "identifier": { "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000220" } },
  "occurrenceDateTime": "2025-11-21",
  "requester": { "identifier": { "system": "https://icr-broker.example/fhir/Id/team-code", "value": "WARD-33",
      "assigner": { "identifier": { "system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RKB" } } } },
  "performer": [ { "identifier": { "system": "https://icr-broker.example/fhir/Id/team-code", "value": "HSCT-UHCW",
      "assigner": { "identifier": { "system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "CCC" } } } } ],
  "extension": [
    { "url": "https://icr-broker.example/fhir/StructureDefinition/care-needs",
      "extension": [ { "url": "dementia", "valueBoolean": true }, { "url": "carers-per-call", "valueInteger": 2 },
                     { "url": "summary", "valueString": "Needs help washing and dressing." } ] },
    { "url": "https://icr-broker.example/fhir/StructureDefinition/place",
      "valueCoding": { "system": "https://icr-broker.example/fhir/CodeSystem/place", "code": "coventry" } }
  ]
})");
}

json TaskJson() {
  return json::parse(R"({
  "resourceType": "Task",
  "id": "mal-task-1",
  "status": "accepted",
  "intent": "order",
  "focus": { "identifier": { "system": "https://uhcw.example.nhs.uk/Id/discharge-referral", "value": "MAL-REF-1" } },
  "for": { "identifier": { "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000220" } },
  "businessStatus": { "coding": [ { "system": "https://icr-broker.example/fhir/CodeSystem/referral-status", "code": "accepted" } ] }
})");
}

json TransactionJson() {
  return json::parse(R"({
  "resourceType": "Bundle",
  "identifier": { "system": "https://swft.example.nhs.uk/Id/transaction", "value": "MAL-TX-1" },
  "type": "transaction",
  "entry": [
    { "fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
      "resource": { "resourceType": "Patient", "id": "mal-tx-pat",
        "identifier": [ { "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000239" } ],
        "name": [ { "use": "official", "family": "Sample", "given": ["Harold"] } ] },
      "request": { "method": "PUT", "url": "Patient/mal-tx-pat" } },
    { "fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000002",
      "resource": { "resourceType": "Encounter",
        "identifier": [ { "system": "https://swft.example.nhs.uk/Id/spell", "value": "MAL-SPELL-301" } ],
        "status": "in-progress", "subject": { "reference": "Patient/mal-tx-pat" },
        "period": { "start": "2025-11-14T10:02:00+00:00" } },
      "request": { "method": "POST", "url": "Encounter" } },
    { "fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000003",
      "resource": { "resourceType": "Encounter",
        "identifier": [ { "system": "https://swft.example.nhs.uk/Id/spell", "value": "MAL-SPELL-302" } ],
        "status": "planned", "subject": { "reference": "Patient/mal-tx-pat" } },
      "request": { "method": "POST", "url": "Encounter" } }
  ]
})");
}

std::string Dump(json j, const std::function<void(json&)>& change) {
  change(j);
  return j.dump();
}

// A body nested `depth` deep ({} is depth 1), padded with spaces to `size`.
std::string DeepPatient(const std::string& id, const std::string& nhs, int depth, size_t size = 0) {
  std::string text = PatientJson(id, nhs).dump();
  text = text.substr(0, text.size() - 1) + ",\"zz\":" + std::string(depth - 1, '[') +
         std::string(depth - 1, ']') + "}";
  if (text.size() < size) text += std::string(size - text.size(), ' ');
  return text;
}

Headers HeadersFor(H h) {
  Headers out;
  switch (h) {
    case H::kXml:
      out.emplace_back("Content-Type", "application/fhir+xml");
      break;
    case H::kText:
      out.emplace_back("Content-Type", "text/plain");
      break;
    case H::kNoType:
      break;
    case H::kLatin1:
      out.emplace_back("Content-Type", "application/fhir+json; charset=ISO-8859-1");
      break;
    case H::kJsonPlain:
      out.emplace_back("Content-Type", "application/json; charset=utf-8");
      break;
    default:
      out.emplace_back("Content-Type", "application/fhir+json");
      break;
  }
  if (h != H::kNoSystem) {
    out.emplace_back("X-ICR-Source-System", h == H::kBadSystem ? "uhcw epr!" : "uhcw-epr");
  }
  if (h != H::kNoOrg) {
    out.emplace_back("X-ICR-Source-Organisation", h == H::kBadOrg ? "not an ods!" : "RKB");
  }
  if (h == H::kBadSetting) out.emplace_back("X-ICR-Care-Setting", "HOSPITAL");
  if (h == H::kHugeHeader) out.emplace_back("X-Padding", std::string(17 * 1024, 'p'));
  return out;
}

std::vector<FhirCase> MalformedInputTest::FhirCases() {
  const std::string kPatient = "/fhir/r4/Patient", kEncounter = "/fhir/r4/Encounter",
                    kSr = "/fhir/r4/ServiceRequest", kTask = "/fhir/r4/Task", kBase = "/fhir/r4";
  const json pat = PatientJson("mal-pat", "9990000204");
  const std::string pat_text = pat.dump();
  const json enc = EncounterJson();
  const json sr = ReferralJson();
  const json task = TaskJson();
  const json tx = TransactionJson();
  const std::string nhs_value = "Patient." + kNhsWhere + ".value";
  auto nhs = [](const std::string& v) { return [v](json& j) { j["identifier"][0]["value"] = v; }; };
  std::string dup_nested = pat_text;
  {
    const std::string needle = "\"system\":\"https://fhir.nhs.uk/Id/nhs-number\"";
    dup_nested.replace(dup_nested.find(needle), needle.size(),
                       needle + ",\"value\":\"9990000204\"");
  }
  return {
      // --- JSON ------------------------------------------------------------------------
      {"empty body", kPatient, "", 400, "structure", "",
       "invalid JSON: parse error at line 1, column 1: syntax error while parsing value - "
       "unexpected end of input; expected '[', '{', or a literal"},
      {"truncated JSON", kPatient, pat_text.substr(0, 40), 400, "structure", "",
       "invalid JSON: parse error at line 1, column 41: syntax error while parsing value - "
       "invalid string: missing closing quote; last read: '\"fema'"},
      {"trailing comma", kPatient, R"({"resourceType":"Patient",})", 400, "structure", "",
       "invalid JSON: parse error at line 1, column 27: syntax error while parsing object key - "
       "unexpected '}'; expected string literal"},
      {"single quotes", kPatient, "{'resourceType':'Patient'}", 400, "structure", "",
       "invalid JSON: parse error at line 1, column 2: syntax error while parsing object key - "
       "invalid literal; last read: '{''; expected string literal"},
      {"NaN", kPatient, R"({"resourceType":"Patient","x":NaN})", 400, "structure", "",
       "invalid JSON: parse error at line 1, column 31: syntax error while parsing value - "
       "invalid literal; last read: '\"x\":N'"},
      {"comment", kPatient, "/* c */ " + pat_text, 400, "structure", "",
       "invalid JSON: parse error at line 1, column 1: syntax error while parsing value - invalid "
       "literal; last read: '/'"},
      {"invalid UTF-8", kPatient, "{\"resourceType\":\"Patient\",\"id\":\"\xC3\x28\"}", 400,
       "structure", "",
       "invalid JSON: parse error at line 1, column 34: syntax error while parsing value - "
       "invalid string: ill-formed UTF-8 byte; last read: '\"\xEF\xBF\xBD('"},
      {"lone surrogate", kPatient, R"({"resourceType":"Patient","id":"\ud800"})", 400, "structure",
       "",
       "invalid JSON: parse error at line 1, column 39: syntax error while parsing value - "
       "invalid string: surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF; last read: "
       "'\"\\ud800\"'"},
      {"number overflow", kPatient, R"({"resourceType":"Patient","x":1e999})", 400, "structure", "",
       "invalid JSON: number overflow parsing '1e999'"},
      {"XML body labelled JSON", kPatient, "<Patient xmlns=\"http://hl7.org/fhir\"/>", 400,
       "structure", "",
       "invalid JSON: parse error at line 1, column 1: syntax error while parsing value - invalid "
       "literal; last read: '<'"},
      {"array instead of an object", kPatient, "[" + pat_text + "]", 400, "structure", "",
       "the body must be a JSON object (a FHIR resource), not an array"},
      {"null", kPatient, "null", 400, "structure", "",
       "the body must be a JSON object (a FHIR resource), not null"},
      {"duplicate resourceType", kPatient, R"({"resourceType":"Patient","resourceType":"Task"})",
       400, "structure", "",
       "duplicate JSON key 'resourceType' in $ (each key may appear once in an object)"},
      {"duplicate key in identifier[0]", kPatient, dup_nested, 400, "structure", "",
       "duplicate JSON key 'value' in $.identifier[0] (each key may appear once in an object)"},
      {"nested 33 deep", kPatient, DeepPatient("mal-deep", "9990000204", 33), 400, "too-long", "",
       "JSON nests objects and arrays more than 32 deep (at $.zz" + Repeat("[0]", 30) +
           "); the limit protects the broker's stack and memory"},
      {"nested 100000 deep", kPatient, std::string(100000, '[') + std::string(100000, ']'), 400,
       "too-long", "",
       "JSON nests objects and arrays more than 32 deep (at $" + Repeat("[0]", 31) +
           "); the limit protects the broker's stack and memory"},
      // --- resourceType and endpoint ---------------------------------------------------------
      {"no resourceType", kPatient, Dump(pat, [](json& j) { j.erase("resourceType"); }), 400,
       "required", "Resource.resourceType",
       "Resource.resourceType: is required; every FHIR resource names its type"},
      {"resourceType a number", kPatient, Dump(pat, [](json& j) { j["resourceType"] = 5; }), 400,
       "structure", "Resource.resourceType",
       "Resource.resourceType: must be a string (FHIR JSON), not a number"},
      {"Encounter posted to /Patient", kPatient, enc.dump(), 400, "invalid",
       "Resource.resourceType",
       "Resource.resourceType: 'Encounter' cannot be posted to /fhir/r4/Patient (expected "
       "Patient)"},
      {"Observation posted to the base", kBase,
       R"({"resourceType":"Observation","status":"final"})", 400, "not-supported",
       "Resource.resourceType",
       "Resource.resourceType: 'Observation' is not supported (Patient, Encounter, "
       "ServiceRequest, Task, or a Bundle of them)"},
      {"Patient posted to the base", kBase, pat_text, 400, "invalid", "Resource.resourceType",
       "Resource.resourceType: 'Patient' must be posted to /fhir/r4/Patient (POST /fhir/r4 takes "
       "a Bundle)"},
      // --- Patient -------------------------------------------------------------------------------
      {"Patient without id", kPatient, Dump(pat, [](json& j) { j.erase("id"); }), 400, "required",
       "Patient.id",
       "Patient.id: is required; the broker uses id (with meta.versionId) as the idempotency key "
       "of the message, so that a resend stores nothing new"},
      {"Patient without identifier", kPatient, Dump(pat, [](json& j) { j.erase("identifier"); }),
       400, "required", "Patient." + kNhsWhere,
       "Patient." + kNhsWhere + ": is required; the Patient's NHS number (identifier with system " +
           kNhsSystem + ")"},
      {"NHS number under another system", kPatient,
       Dump(pat,
            [](json& j) { j["identifier"][0]["system"] = "https://fhir.nhs.uk/Id/nhs-numbr"; }),
       400, "required", "Patient." + kNhsWhere,
       "Patient." + kNhsWhere + ": is required; the Patient's NHS number (identifier with system " +
           kNhsSystem + ")"},
      {"NHS identifier without value", kPatient,
       Dump(pat, [](json& j) { j["identifier"][0].erase("value"); }), 400, "required", nhs_value,
       nhs_value + ": is required; the NHS number identifier has no value"},
      {"NHS number with a wrong check digit", kPatient, Dump(pat, nhs("9990000019")), 400, "value",
       nhs_value, std::string("event.nhs_number: ") + kMod11},
      {"NHS number of 9 digits", kPatient, Dump(pat, nhs("999000020")), 400, "value", nhs_value,
       "event.nhs_number: must be exactly 10 digits (got 9 characters)"},
      {"NHS number with letters", kPatient, Dump(pat, nhs("99900002O4")), 400, "value", nhs_value,
       "event.nhs_number: must contain digits only (character 9 is not a digit)"},
      {"NHS number whose stem gives check digit 10", kPatient, Dump(pat, nhs("999 000 0283")), 400,
       "value", nhs_value,
       "event.nhs_number: fails the Modulus 11 check (its first nine digits give check digit 10)"},
      {"NHS number in full-width digits", kPatient, Dump(pat, nhs(FullWidth("9990000204"))), 400,
       "value", nhs_value,
       "event.nhs_number: must contain ASCII digits 0-9 only (character 1 is U+FF19, a "
       "full-width digit; retype the number with 0-9)"},
      {"NHS identifier value a JSON number (one issue)", kPatient,
       Dump(pat, [](json& j) { j["identifier"][0]["value"] = 9990000204LL; }), 400, "structure",
       "Patient.identifier[0].value",
       "Patient.identifier[0].value: must be a string (FHIR JSON), not a number"},
      {"identifier not an array", kPatient,
       Dump(pat, [](json& j) { j["identifier"] = j["identifier"][0]; }), 400, "structure",
       "Patient.identifier", "Patient.identifier: must be an array (FHIR JSON), not an object"},
      {"gender null", kPatient, Dump(pat, [](json& j) { j["gender"] = nullptr; }), 400, "structure",
       "Patient.gender", "Patient.gender: null is not a FHIR value (leave the element out)"},
      {"gender F", kPatient, Dump(pat, [](json& j) { j["gender"] = "F"; }), 400, "value",
       "Patient.gender",
       "Patient.gender: 'F' is not an administrative gender (male, female, other, unknown)"},
      {"birthDate partial", kPatient, Dump(pat, [](json& j) { j["birthDate"] = "1950"; }), 400,
       "value", "Patient.birthDate", "Patient.birthDate: '1950' must be a full date YYYY-MM-DD"},
      {"birthDate 30 February", kPatient, Dump(pat, [](json& j) { j["birthDate"] = "1950-02-30"; }),
       400, "value", "Patient.birthDate",
       "Patient.birthDate: '1950-02-30' is a date that does not exist (day 30 is not a day of "
       "month 2 in 1950: 1..28)"},
      {"birthDate 29 February 1900 (not a leap year)", kPatient,
       Dump(pat, [](json& j) { j["birthDate"] = "1900-02-29"; }), 400, "value", "Patient.birthDate",
       "Patient.birthDate: '1900-02-29' is a date that does not exist (day 29 is not a day of "
       "month 2 in 1900: 1..28)"},
      {"birthDate month 13", kPatient, Dump(pat, [](json& j) { j["birthDate"] = "1950-13-01"; }),
       400, "value", "Patient.birthDate",
       "Patient.birthDate: '1950-13-01' is a date that does not exist (month 13 is outside "
       "1..12)"},
      {"birthDate before 1900", kPatient, Dump(pat, [](json& j) { j["birthDate"] = "1850-01-01"; }),
       400, "value", "Patient.birthDate",
       "event.demographics_update.birth_date: year 1850 is outside 1900..2200"},
      {"control character in family", kPatient,
       Dump(pat, [](json& j) { j["name"][0]["family"] = "Ca\x01se"; }), 400, "value",
       "Patient.name[0].family",
       "event.demographics_update.family_name: contains a control character (0x01)"},
      {"family of 4001 bytes", kPatient,
       Dump(pat, [](json& j) { j["name"][0]["family"] = std::string(4001, 'f'); }), 400, "too-long",
       "Patient.name[0].family",
       "event.demographics_update.family_name: 4001 bytes exceeds the limit of 4000 bytes"},
      {"id of 130 characters", kPatient,
       Dump(pat, [](json& j) { j["id"] = std::string(130, 'a'); }), 400, "value", "Patient.id",
       "event.source_message_id: must be 1..128 printable ASCII characters"},
      {"lastUpdated in the future", kPatient,
       Dump(pat, [](json& j) { j["meta"]["lastUpdated"] = "2099-01-01T00:00:00Z"; }), 400, "value",
       "Patient.meta.lastUpdated", Future("event.occurred_at: ")},
      // --- Encounter
      // ------------------------------------------------------------------------------
      {"Encounter without status", kEncounter, Dump(enc, [](json& j) { j.erase("status"); }), 400,
       "required", "Encounter.status",
       "Encounter.status: is required; one of planned, in-progress, finished, entered-in-error"},
      {"Encounter status arrived", kEncounter, Dump(enc, [](json& j) { j["status"] = "arrived"; }),
       400, "not-supported", "Encounter.status",
       "Encounter.status: 'arrived' is not mapped to a care event (accepted: planned -> "
       "PreAdmission, in-progress -> Admission, finished -> Discharge, entered-in-error -> "
       "EncounterCancellation)"},
      {"Encounter without subject", kEncounter, Dump(enc, [](json& j) { j.erase("subject"); }), 400,
       "required", "Encounter.subject." + kNhsWhere,
       "Encounter.subject." + kNhsWhere +
           ": is required; the person's NHS number as a logical reference (Encounter.subject."
           "identifier with system " +
           kNhsSystem + ")"},
      {"Encounter subject NHS number a JSON number (one issue)", kEncounter,
       Dump(enc, [](json& j) { j["subject"]["identifier"]["value"] = 9990000212LL; }), 400,
       "structure", "Encounter.subject.identifier.value",
       "Encounter.subject.identifier.value: must be a string (FHIR JSON), not a number"},
      {"start on 31 April", kEncounter,
       Dump(enc, [](json& j) { j["period"]["start"] = "2025-04-31T10:00:00Z"; }), 400, "value",
       "Encounter.period.start",
       "Encounter.period.start: '2025-04-31T10:00:00Z' is a date that does not exist (day 31 is "
       "not a day of month 4 in 2025: 1..30)"},
      {"Encounter subject NHS number wrong", kEncounter,
       Dump(enc, [](json& j) { j["subject"]["identifier"]["value"] = "9990000213"; }), 400, "value",
       "Encounter.subject.identifier.value",
       "event.nhs_number: fails the Modulus 11 check (check digit should be 2, got 3)"},
      {"in-progress Encounter with an end", kEncounter,
       Dump(enc, [](json& j) { j["period"]["end"] = "2025-11-02T10:00:00Z"; }), 400, "invalid",
       "Encounter.period.end",
       "Encounter.period.end: an in-progress encounter has no end; send status 'finished' with "
       "the discharge disposition to record a discharge"},
      {"start without a time zone", kEncounter,
       Dump(enc, [](json& j) { j["period"]["start"] = "2025-11-01T10:00:00"; }), 400, "value",
       "Encounter.period.start",
       "Encounter.period.start: '2025-11-01T10:00:00' must be a FHIR dateTime with at least a "
       "full date (YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss with Z or an offset)"},
      {"start in the future", kEncounter,
       Dump(enc, [](json& j) { j["period"]["start"] = "2099-01-01T00:00:00Z"; }), 400, "value",
       "Encounter.period.start", Future("event.occurred_at: ")},
      {"finished without a disposition", kEncounter,
       Dump(enc,
            [](json& j) {
              j["status"] = "finished";
              j["period"]["end"] = "2025-11-02T10:00:00Z";
            }),
       400, "required", "Encounter.hospitalization.dischargeDisposition",
       "Encounter.hospitalization.dischargeDisposition: is required; a finished encounter is a "
       "discharge and needs its destination"},
      // --- ServiceRequest and Task
      // -----------------------------------------------------------------
      {"unsupported request type", kSr,
       Dump(sr, [](json& j) { j["code"]["coding"][0]["code"] = "home-visit"; }), 400,
       "not-supported",
       "ServiceRequest.code.coding.where(system='https://icr-broker.example/fhir/CodeSystem/"
       "request-type').code",
       "ServiceRequest.code.coding.where(system='https://icr-broker.example/fhir/CodeSystem/"
       "request-type').code: 'home-visit' is not supported (discharge-referral or "
       "placement-request)"},
      {"referral without pathway", kSr, Dump(sr, [](json& j) { j.erase("category"); }), 400,
       "required",
       "ServiceRequest.category.coding.where(system='https://icr-broker.example/fhir/CodeSystem/"
       "discharge-pathway')",
       "event.discharge_referral.pathway: is required (one of PATHWAY_0, PATHWAY_1, PATHWAY_2, "
       "PATHWAY_3)"},
      {"seven carers per call", kSr,
       Dump(sr, [](json& j) { j["extension"][0]["extension"][1]["valueInteger"] = 7; }), 400,
       "value", "ServiceRequest.extension('" + kExt + "care-needs')",
       "event.discharge_referral.needs.carers_per_call: must be 0..4"},
      {"care needs summary of 4001 bytes", kSr,
       Dump(sr,
            [](json& j) {
              j["extension"][0]["extension"][2]["valueString"] = std::string(4001, 's');
            }),
       400, "too-long", "ServiceRequest.extension('" + kExt + "care-needs')",
       "event.discharge_referral.needs.summary: 4001 bytes exceeds the limit of 4000 bytes"},
      {"referral subject NHS number wrong", kSr,
       Dump(sr, [](json& j) { j["subject"]["identifier"]["value"] = "9990000221"; }), 400, "value",
       "ServiceRequest.subject.identifier.value",
       "event.nhs_number: fails the Modulus 11 check (check digit should be 0, got 1)"},
      {"Task without focus", kTask, Dump(task, [](json& j) { j.erase("focus"); }), 400, "required",
       "Task.focus",
       "Task.focus: is required; the discharge referral (ServiceRequest) whose status changed, as "
       "focus.identifier.value or a reference"},
      {"Task with an unknown business status", kTask,
       Dump(task, [](json& j) { j["businessStatus"]["coding"][0]["code"] = "lost"; }), 400, "value",
       "Task.businessStatus.coding[0].code",
       "Task.businessStatus.coding[0].code: 'lost' is not a code of "
       "https://icr-broker.example/fhir/CodeSystem/referral-status (one of created, accepted, "
       "forwarded-to-brokerage, placement-requested, offer-made, offer-accepted, "
       "service-confirmed, discharged, withdrawn)"},
      // --- Bundles
      // -----------------------------------------------------------------------------------
      {"document Bundle", kBase, Dump(tx, [](json& j) { j["type"] = "document"; }), 400,
       "not-supported", "Bundle.type",
       "Bundle.type: 'document' is not accepted (message, transaction or batch)"},
      {"Bundle without entries", kBase, Dump(tx, [](json& j) { j.erase("entry"); }), 400,
       "required", "Bundle.entry", "Bundle.entry: is required; at least one entry"},
      {"Bundle with an empty entry list", kBase,
       Dump(tx, [](json& j) { j["entry"] = json::array(); }), 400, "required", "Bundle.entry",
       "Bundle.entry: is required; at least one entry"},
      {"Bundle without identifier", kBase, Dump(tx, [](json& j) { j.erase("identifier"); }), 400,
       "required", "Bundle.identifier",
       "Bundle.identifier: is required; Bundle.identifier.value (or MessageHeader.id / Bundle.id) "
       "is the idempotency key of the message, so that a resend stores nothing new"},
      {"transaction with a wrong NHS number in entry 0", kBase,
       Dump(tx,
            [](json& j) { j["entry"][0]["resource"]["identifier"][0]["value"] = "9990000238"; }),
       400, "value", "Bundle.entry[0].resource." + kNhsWhere + ".value",
       "events[0].nhs_number: fails the Modulus 11 check (check digit should be 9, got 8)"},
      {"transaction with one unmappable entry", kBase,
       Dump(tx, [](json& j) { j["entry"][2]["resource"].erase("status"); }), 400, "required",
       "Bundle.entry[2].resource.status",
       "Bundle.entry[2].resource.status: is required; one of planned, in-progress, finished, "
       "entered-in-error"},
      {"transaction entry in the future", kBase,
       Dump(tx,
            [](json& j) { j["entry"][1]["resource"]["period"]["start"] = "2099-01-01T00:00:00Z"; }),
       400, "value", "Bundle.entry[1].resource.period.start", Future("events[1].occurred_at: ")},
      // --- media types and headers -------------------------------------------------------------
      {"XML media type", kPatient, "<Patient xmlns=\"http://hl7.org/fhir\"/>", 415, "not-supported",
       "",
       "Content-Type header: application/fhir+xml: XML is not accepted; send FHIR JSON "
       "(application/fhir+json)",
       H::kXml},
      {"text/plain", kPatient, pat_text, 415, "not-supported", "",
       "Content-Type header: text/plain is not accepted; send FHIR JSON (application/fhir+json "
       "or application/json)",
       H::kText},
      {"no Content-Type", kPatient, pat_text, 415, "not-supported", "",
       "Content-Type header: is required (application/fhir+json)", H::kNoType},
      {"Latin-1 charset", kPatient, pat_text, 415, "not-supported", "",
       "Content-Type header: charset iso-8859-1 is not accepted (UTF-8 only)", H::kLatin1},
      {"no X-ICR-Source-System", kPatient, pat_text, 400, "required", "",
       "X-ICR-Source-System header: is required (the sending system's id, 1..64 characters of "
       "A-Z a-z 0-9 . _ : -, e.g. uhcw-epr)",
       H::kNoSystem},
      {"bad X-ICR-Source-System", kPatient, pat_text, 400, "value", "",
       "X-ICR-Source-System header: event.source_system_id: must be 1..64 characters of A-Z a-z "
       "0-9 . _ : -",
       H::kBadSystem},
      {"no X-ICR-Source-Organisation", kPatient, pat_text, 400, "required", "",
       "X-ICR-Source-Organisation header: is required (the sending organisation's ODS code, e.g. "
       "RKB)",
       H::kNoOrg},
      {"bad X-ICR-Source-Organisation", kPatient, pat_text, 400, "value", "",
       std::string("X-ICR-Source-Organisation header: event.source_organisation: 'NOT AN ODS!") +
           kOds,
       H::kBadOrg},
      {"bad X-ICR-Care-Setting", kPatient, pat_text, 400, "value", "",
       "X-ICR-Care-Setting header: 'HOSPITAL' is not a care setting (GP, ACUTE, COMMUNITY, "
       "MENTAL_HEALTH, SOCIAL_CARE, CARE_PROVIDER, AMBULANCE)",
       H::kBadSetting},
      // --- paths, methods, size
      // -----------------------------------------------------------------------
      {"unknown resource path", "/fhir/r4/Observation", pat_text, 404, "not-found", "",
       "no endpoint at /fhir/r4/Observation (POST /fhir/r4/Patient, /Encounter, /ServiceRequest, "
       "/Task, POST /fhir/r4 with a Bundle, GET /fhir/r4/metadata)"},
      {"GET on a type", kPatient, "", 405, "not-supported", "",
       "method not allowed here (allowed: POST)", H::kAll, http::verb::get},
      {"request headers over 16 KiB", kPatient, pat_text, 431, "too-long", "",
       "the request headers are larger than 16384 bytes", H::kHugeHeader},
      {"Content-Length not a number", "",
       "POST /fhir/r4/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
       "Content-Length: ten\r\n\r\n{}",
       400, "structure", "", "malformed HTTP request: bad Content-Length", H::kRaw},
      {"request line with four parts", "",
       "PO ST /fhir/r4/Patient HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400,
       "structure", "", "malformed HTTP request: bad version", H::kRaw},
      {"bad chunk size", "",
       "POST /fhir/r4/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
       "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
       400, "structure", "", "malformed HTTP request: bad chunk", H::kRaw},
      {"HTTP version 9.9", "",
       "POST /fhir/r4/Patient HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400, "structure",
       "", "malformed HTTP request: bad version", H::kRaw},
      {"body of 1 MiB + 1 byte", kPatient, DeepPatient("mal-big", "9990000204", 3, (1 << 20) + 1),
       413, "too-long", "",
       "the request body is larger than the limit of 1048576 bytes; send fewer resources per "
       "request"},
  };
}

void MalformedInputTest::RunFhir(const std::vector<FhirCase>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE("FHIR case: " + c.name);
    const Snapshot before = Snap();
    const HttpReply r = c.headers == H::kRaw ? HttpRaw(fhir_->port(), c.body)
                                             : HttpCall(fhir_->port(), c.method, c.target, c.body,
                                                        HeadersFor(c.headers));
    ASSERT_EQ(r.status, c.status) << r.error << " " << r.body.substr(0, 2000);
    EXPECT_EQ(r.headers.count("content-type") ? r.headers.at("content-type") : "",
              "application/fhir+json; charset=utf-8");
    const json o = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(o.is_object() && o.value("resourceType", "") == "OperationOutcome" &&
                o.contains("issue") && o["issue"].is_array())
        << r.body.substr(0, 2000);
    EXPECT_EQ(o["issue"].size(), c.issues) << o.dump(1);
    const json* found = nullptr;
    for (const auto& i : o["issue"]) {
      const std::string expr =
          i.contains("expression") ? i["expression"][0].get<std::string>() : std::string();
      if (i.value("code", "") == c.code && expr == c.expression) {
        found = &i;
        break;
      }
    }
    ASSERT_NE(found, nullptr) << "no issue with code " << c.code << " and expression ["
                              << c.expression << "] in " << o.dump(1);
    EXPECT_EQ(found->value("severity", ""), "error");
    EXPECT_TRUE(Matches(c.diagnostics, found->value("diagnostics", ""))) << o.dump(1);
    ExpectNothingStoredOrDelivered(before);
  }
}

// At the limits: a 4,000-byte family name (sent as application/json), and a
// body of exactly 1 MiB nested exactly 32 deep. Both stored.
void MalformedInputTest::FhirControls() {
  struct Control {
    std::string name;
    std::string body;
    std::string nhs;
    H headers;
  };
  const std::string n1 = testing::TestNhsNumber(1400), n2 = testing::TestNhsNumber(1401);
  const std::vector<Control> controls = {
      {"family of exactly 4000 bytes",
       Dump(PatientJson("mal-ok-1", n1),
            [](json& j) { j["name"][0]["family"] = std::string(4000, 'f'); }),
       n1, H::kJsonPlain},
      {"body of exactly 1 MiB nested 32 deep", DeepPatient("mal-ok-2", n2, 32, 1 << 20), n2,
       H::kAll},
  };
  for (const auto& c : controls) {
    SCOPED_TRACE("FHIR control: " + c.name);
    const Snapshot before = Snap();
    const HttpReply r = HttpCall(fhir_->port(), http::verb::post, "/fhir/r4/Patient", c.body,
                                 HeadersFor(c.headers));
    ASSERT_EQ(r.status, 201) << r.error << " " << r.body.substr(0, 2000);
    ExpectControlStored(before, "FHIR: " + c.name, {{c.nhs, v1::DEMOGRAPHICS_UPDATE}});
  }
}

// ---------------------------------------------------------------------------
// CSV import (icrctl import)
// ---------------------------------------------------------------------------

// A care packages export and its mapping (as in docs/adapters/csv.md).
constexpr char kPackagesMapping[] = R"({
  "description": "malformed-input suite: one CARE_PACKAGE_START per row",
  "event_type": "CARE_PACKAGE_START",
  "constants": {"source_system_id": "ccc-care-director", "source_organisation": "CCC",
                "care_setting": "SOCIAL_CARE"},
  "fields": {
    "nhs_number": "NHS Number",
    "occurred_at": {"column": "Last Updated", "format": "%d/%m/%Y %H:%M"},
    "care_package_start.package_id": "Package ID",
    "care_package_start.service_type": {"column": "Service Type",
      "values": {"Home Care": "HOME_SUPPORT", "Residential": "RESIDENTIAL", "Nursing": "NURSING"}},
    "care_package_start.provider": "Provider Code",
    "care_package_start.start_date": {"column": "Start Date", "format": "%d/%m/%Y"},
    "care_package_start.hours_per_week": "Planned Hours Per Week"
  }
})";
constexpr char kPackagesHeader[] =
    "NHS Number,Package ID,Service Type,Provider Code,Start Date,Planned Hours Per Week,"
    "Last Updated\r\n";

// An assessments export: ';' separated, the assessment id is the message id.
constexpr char kAssessmentsMapping[] = R"({
  "event_type": "CARE_ACT_ASSESSMENT",
  "delimiter": ";",
  "message_id": {"column": "Assessment ID", "prefix": "caa:"},
  "constants": {"source_system_id": "ccc-care-director", "source_organisation": "CCC",
                "care_setting": "SOCIAL_CARE"},
  "fields": {
    "nhs_number": "NHS Number",
    "occurred_at": {"column": "Assessed On", "format": "%d/%m/%Y"},
    "care_act_assessment.assessment_id": "Assessment ID",
    "care_act_assessment.outcome": "Outcome"
  }
})";
constexpr char kAssessmentsHeader[] = "NHS Number;Assessment ID;Assessed On;Outcome\n";

struct PackageRow {
  std::string nhs = "999 000 0247";
  std::string package = "PKG-1";
  std::string service = "Home Care";
  std::string provider = "VNA12";
  std::string start = "01/01/2025";
  std::string hours = "14";
  std::string updated = "01/01/2025 09:00";
  std::string Line() const {
    return nhs + "," + package + "," + service + "," + provider + "," + start + "," + hours + "," +
           updated + "\r\n";
  }
};
std::string Packages(const std::function<void(PackageRow&)>& change) {
  PackageRow r;
  change(r);
  return kPackagesHeader + r.Line();
}

std::vector<CsvCase> MalformedInputTest::CsvCases() {
  const std::string kBroker = "rejected by the broker: ";
  const std::string kColumns =
      "(columns: 'NHS Number', 'Package ID', 'Service Type', 'Provider Code', 'Start Date', "
      "'Planned Hours Per Week', 'Last Updated')";
  std::string wide_row = kPackagesHeader;
  for (int i = 0; i < 600; ++i) wide_row += (i ? "," : "") + std::string("x");
  wide_row += "\r\n";
  return {
      // --- the file or its header: exit 2, nothing sent ------------------------------------------
      {"empty file", "", 2, "", "the file is empty: it needs a header row naming the columns"},
      {"only blank lines", "\r\n\n\r\n", 2, "",
       "the file is empty: it needs a header row naming the columns"},
      {"only a byte-order mark", "\xEF\xBB\xBF", 2, "",
       "the file is empty: it needs a header row naming the columns"},
      {"header without a mapped column",
       "NHS Number,Package ID,Service Type,Start Date,Planned Hours Per Week,Last Updated\r\n", 2,
       "",
       "fields.care_package_start.provider: the column 'Provider Code' is not in the file's header "
       "(columns: 'NHS Number', 'Package ID', 'Service Type', 'Start Date', 'Planned Hours Per "
       "Week', 'Last Updated')"},
      {"header with a renamed column",
       Replace(kPackagesHeader, "NHS Number", "NHS No") + PackageRow().Line(), 2, "",
       "fields.nhs_number: the column 'NHS Number' is not in the file's header (columns: 'NHS No', "
       "'Package ID', 'Service Type', 'Provider Code', 'Start Date', 'Planned Hours Per Week', "
       "'Last Updated')"},
      {"header with a column twice",
       Replace(kPackagesHeader, "Last Updated", "Last Updated,Provider Code"), 2, "",
       "fields.care_package_start.provider: the column 'Provider Code' appears 2 times in the "
       "header (columns 4 and 8): rename one in the export"},
      {"header with an unclosed quote",
       Replace(kPackagesHeader, "Package ID", "\"Package ID") + PackageRow().Line(), 2, "",
       "row 1, column 2: quoted field not closed (the quote opened on line 1 runs to the end of "
       "the input) (in the header row)"},
      {"header with a stray quote", Replace(kPackagesHeader, "Package ID", "Package \"ID\""), 2, "",
       "row 1, column 2: unexpected '\"' inside an unquoted field (quote the whole field and write "
       "each quote in it twice) (in the header row)"},
      {"';' file read with the ',' mapping",
       std::string("NHS Number;Package ID;Service Type;Provider Code;Start Date;Planned Hours Per "
                   "Week;Last Updated\r\n"),
       2, "",
       "fields.care_package_start.hours_per_week: the column 'Planned Hours Per Week' is not in "
       "the file's header (columns: 'NHS Number;Package ID;Service Type;Provider Code;Start "
       "Date;Planned Hours Per Week;Last Updated')"},
      // --- one bad row: exit 1, the row is in the error report -----------------------------------
      {"row with 8 fields", Packages([](PackageRow& r) { r.updated += ",extra"; }), 1, "2",
       "has 8 fields, but the header has 7 columns (a field holding the delimiter or a line break "
       "must be in quotes)"},
      {"row with 6 fields",
       kPackagesHeader + std::string("999 000 0247,PKG-1,Home Care,VNA12,01/01/2025,14\r\n"), 1,
       "2",
       "has 6 fields, but the header has 7 columns (a field holding the delimiter or a line break "
       "must be in quotes)"},
      {"row with 1 field", kPackagesHeader + std::string("just text\r\n"), 1, "2",
       "has 1 field, but the header has 7 columns (a field holding the delimiter or a line break "
       "must be in quotes)"},
      {"row after blank lines (row number counts them)",
       kPackagesHeader + std::string("\r\n\r\n") +
           Replace(PackageRow().Line(), "01/01/2025,", "31/02/2026,"),
       1, "4", "column 'Start Date': '31/02/2026' is not a valid date (format %d/%m/%Y)"},
      {"impossible start date", Packages([](PackageRow& r) { r.start = "31/02/2026"; }), 1, "2",
       "column 'Start Date': '31/02/2026' is not a valid date (format %d/%m/%Y)"},
      {"ISO start date", Packages([](PackageRow& r) { r.start = "2026-01-05"; }), 1, "2",
       "column 'Start Date': '2026-01-05' is not a valid date (format %d/%m/%Y)"},
      {"two-digit year", Packages([](PackageRow& r) { r.start = "05/01/26"; }), 1, "2",
       "column 'Start Date': '05/01/26' is not a valid date (format %d/%m/%Y)"},
      {"start date in 1899", Packages([](PackageRow& r) { r.start = "31/12/1899"; }), 1, "2",
       "column 'Start Date': '31/12/1899' is in year 1899, outside the supported years "
       "1900..2200"},
      {"updated in 2201", Packages([](PackageRow& r) { r.updated = "01/01/2201 09:00"; }), 1, "2",
       "column 'Last Updated': '01/01/2201 09:00' is in year 2201, outside the supported years "
       "1900..2200"},
      {"hour 25", Packages([](PackageRow& r) { r.updated = "01/03/2025 25:00"; }), 1, "2",
       "column 'Last Updated': '01/03/2025 25:00' is not a valid date and time (format %d/%m/%Y "
       "%H:%M)"},
      {"updated in the future", Packages([](PackageRow& r) { r.updated = "01/01/2099 09:00"; }), 1,
       "2", Future("column 'Last Updated': " + kBroker + "occurred_at: ")},
      {"NHS number with a wrong check digit",
       Packages([](PackageRow& r) { r.nhs = "999 000 0019"; }), 1, "2",
       "column 'NHS Number': " + kBroker + "nhs_number: " + kMod11},
      {"NHS number of 9 digits", Packages([](PackageRow& r) { r.nhs = "999 000 024"; }), 1, "2",
       "column 'NHS Number': " + kBroker +
           "nhs_number: must be exactly 10 digits (got 9 characters)"},
      {"NHS number with letters", Packages([](PackageRow& r) { r.nhs = "NHS9990000247"; }), 1, "2",
       "column 'NHS Number': " + kBroker +
           "nhs_number: must be exactly 10 digits (got 13 characters)"},
      {"NHS number in full-width digits",
       Packages([](PackageRow& r) { r.nhs = FullWidth("999 000 0247"); }), 1, "2",
       "column 'NHS Number': " + kBroker +
           "nhs_number: must contain ASCII digits 0-9 only (character 1 is U+FF19, a full-width "
           "digit; retype the number with 0-9)"},
      {"NHS number with a letter O", Packages([](PackageRow& r) { r.nhs = "999 OOO 0247"; }), 1,
       "2",
       "column 'NHS Number': " + kBroker +
           "nhs_number: must contain digits only (character 4 is not a digit)"},
      {"NHS number whose stem gives check digit 10",
       Packages([](PackageRow& r) { r.nhs = "999-000-0141"; }), 1, "2",
       "column 'NHS Number': " + kBroker +
           "nhs_number: fails the Modulus 11 check (its first nine digits give check digit 10)"},
      {"NHS number empty", Packages([](PackageRow& r) { r.nhs = "  "; }), 1, "2",
       "column 'NHS Number': is empty, but nhs_number is required"},
      {"package id empty", Packages([](PackageRow& r) { r.package = ""; }), 1, "2",
       "column 'Package ID': is empty, but care_package_start.package_id is required"},
      {"unclosed quote", Packages([](PackageRow& r) { r.provider = "\"VNA12"; }), 1, "2",
       "column 'Provider Code': quoted field not closed (the quote opened on line 2 runs to the "
       "end of the input)"},
      {"quote inside an unquoted field", Packages([](PackageRow& r) { r.provider = "VN\"A12"; }), 1,
       "2",
       "column 'Provider Code': unexpected '\"' inside an unquoted field (quote the whole field "
       "and write each quote in it twice)"},
      {"text after a closing quote", Packages([](PackageRow& r) { r.provider = "\"VNA\"12"; }), 1,
       "2",
       "column 'Provider Code': unexpected '1' after the closing quote of a quoted field (write "
       "each quote inside a quoted field twice)"},
      {"service type not in the value list",
       Packages([](PackageRow& r) { r.service = "Day care"; }), 1, "2",
       "column 'Service Type': 'Day care' is not one of the values the mapping lists ('Home "
       "Care', 'Nursing', 'Residential')"},
      {"hours in words", Packages([](PackageRow& r) { r.hours = "ten"; }), 1, "2",
       "column 'Planned Hours Per Week': 'ten' is not a number"},
      {"hours NaN", Packages([](PackageRow& r) { r.hours = "nan"; }), 1, "2",
       "column 'Planned Hours Per Week': 'nan' is not a number"},
      {"hours with an exponent", Packages([](PackageRow& r) { r.hours = "1e3"; }), 1, "2",
       "column 'Planned Hours Per Week': '1e3' is not a number"},
      {"two bad columns in one row", Packages([](PackageRow& r) {
         r.hours = "ten";
         r.start = "31/02/2026";
       }),
       1, "2",
       "column 'Start Date': '31/02/2026' is not a valid date (format %d/%m/%Y); column 'Planned "
       "Hours Per Week': 'ten' is not a number"},
      {"provider code of 4001 bytes",
       Packages([](PackageRow& r) { r.provider = std::string(4001, 'V'); }), 1, "2",
       "column 'Provider Code': " + kBroker +
           "care_package_start.provider: 4001 bytes exceeds the limit of 4000 bytes"},
      {"provider code not UTF-8", Packages([](PackageRow& r) { r.provider = "Caf\xE9"; }), 1, "2",
       "column 'Provider Code': is not valid UTF-8 text (save the export as UTF-8)"},
      {"control character in the package id", Packages([](PackageRow& r) {
         r.package =
             "PKG\x01"
             "1";
       }),
       1, "2",
       "column 'Package ID': " + kBroker +
           "care_package_start.package_id: contains a control character (0x01)"},
      {"field over 64 KiB", Packages([](PackageRow& r) { r.provider = std::string(70000, 'V'); }),
       1, "2", "column 'Provider Code': field is longer than the limit of 65,536 bytes"},
      {"row of 600 fields", wide_row, 1, "2", "more than 512 fields (the limit)"},
      // --- the assessments mapping
      // ------------------------------------------------------------------
      {"assessment id empty",
       std::string(kAssessmentsHeader) + "999 000 0255;;03/03/2025;eligible\n", 1, "2",
       "column 'Assessment ID': is empty, but care_act_assessment.assessment_id is required", true},
      {"assessment id not ASCII",
       std::string(kAssessmentsHeader) + "999 000 0255;CAA-\xC3\xA9;03/03/2025;eligible\n", 1, "2",
       "column 'Assessment ID': 'CAA-\xC3\xA9' cannot be a message id (at most 124 printable ASCII "
       "characters)",
       true},
      {"assessment id too long for a message id",
       std::string(kAssessmentsHeader) + "999 000 0255;" + std::string(125, 'A') +
           ";03/03/2025;eligible\n",
       1, "2",
       "column 'Assessment ID': '" + std::string(60, 'A') +
           "...' cannot be a message id (at most 124 printable ASCII characters)",
       true},
      {"assessments file with ',' separators",
       std::string(
           "NHS Number,Assessment ID,Assessed On,Outcome\n999 000 0255,CAA-1,03/03/2025,x\n"),
       2, "",
       "fields.care_act_assessment.assessment_id: the column 'Assessment ID' is not in the file's "
       "header (columns: 'NHS Number,Assessment ID,Assessed On,Outcome')",
       true},
  };
}

void MalformedInputTest::RunCsv(const std::vector<CsvCase>& cases) {
  const std::string packages = WorkFile("packages.mapping.json");
  const std::string assessments = WorkFile("assessments.mapping.json");
  WriteFile(packages, kPackagesMapping);
  WriteFile(assessments, kAssessmentsMapping);
  for (const auto& c : cases) {
    SCOPED_TRACE("CSV case: " + c.name);
    const Snapshot before = Snap();
    const std::string csv = WorkFile("case-" + std::to_string(++csv_seq_) + ".csv");
    WriteFile(csv, c.content);
    const CtlRun run = Icrctl({"--broker", address_, "--timeout", "20", "import", "--mapping",
                               c.assessments ? assessments : packages, csv},
                              work_.path());
    EXPECT_EQ(run.exit_code, c.exit_code) << run.out << run.err;
    if (c.exit_code == 2) {
      const std::string first = run.err.substr(0, run.err.find('\n'));
      const std::string head = "icrctl: " + csv + ": ";
      ASSERT_EQ(first.rfind(head, 0), 0u) << run.err;
      EXPECT_TRUE(Matches(c.reason, first.substr(head.size()))) << run.err;
      EXPECT_NE(run.err.find("nothing was imported"), std::string::npos) << run.err;
      EXPECT_EQ(std::ifstream(csv + ".errors.csv").good(), false) << "an error report was written";
    } else {
      const std::string summary =
          "imported " + csv + ": 1 rows read, 0 stored, 0 duplicates, 1 rejected, ";
      EXPECT_EQ(run.out.rfind(summary, 0), 0u) << run.out << run.err;
      // The report uses the file's delimiter.
      const auto report = ReadCsvFile(csv + ".errors.csv", c.assessments ? ';' : ',');
      ASSERT_EQ(report.size(), 2u) << ReadFile(csv + ".errors.csv");
      ASSERT_GE(report[0].size(), 2u) << ReadFile(csv + ".errors.csv");
      ASSERT_GE(report[1].size(), 2u) << ReadFile(csv + ".errors.csv");
      EXPECT_EQ(report[0][0], "row");
      EXPECT_EQ(report[0][1], "reason");
      EXPECT_EQ(report[1][0], c.row);
      EXPECT_TRUE(Matches(c.reason, report[1][1])) << "(the error report's reason)";
    }
    ExpectNothingStoredOrDelivered(before);
  }
}

// One valid row with each mapping: stored.
void MalformedInputTest::CsvControls() {
  struct Control {
    std::string name;
    std::string content;
    bool assessments;
    std::string nhs;
    v1::EventType type;
  };
  const std::string n1 = testing::TestNhsNumber(1500), n2 = testing::TestNhsNumber(1501);
  const std::vector<Control> controls = {
      {"a valid care package row (provider code of 4000 bytes)", Packages([&](PackageRow& r) {
         r.nhs = n1;
         r.provider = std::string(4000, 'V');
       }),
       false, n1, v1::CARE_PACKAGE_START},
      {"a valid assessment row (message id of 124 characters)",
       std::string(kAssessmentsHeader) + n2 + ";" + std::string(124, 'A') +
           ";03/03/2025;eligible\n",
       true, n2, v1::CARE_ACT_ASSESSMENT},
  };
  for (const auto& c : controls) {
    SCOPED_TRACE("CSV control: " + c.name);
    const Snapshot before = Snap();
    const std::string csv = WorkFile("control-" + std::to_string(++csv_seq_) + ".csv");
    WriteFile(csv, c.content);
    const CtlRun run = Icrctl(
        {"--broker", address_, "--timeout", "20", "import", "--mapping",
         WorkFile(c.assessments ? "assessments.mapping.json" : "packages.mapping.json"), csv},
        work_.path());
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    EXPECT_EQ(
        run.out.rfind("imported " + csv + ": 1 rows read, 1 stored, 0 duplicates, 0 rejected", 0),
        0u)
        << run.out;
    ExpectControlStored(before, "CSV: " + c.name, {{c.nhs, c.type}});
  }
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

TEST_F(MalformedInputTest, EveryBadInputIsRefusedByRuleAndNothingIsStoredOrDelivered) {
  const auto grpc_cases = GrpcCases();
  RunGrpc(grpc_cases);
  GrpcControls();

  const auto hl7_cases = Hl7Cases();
  RunHl7(hl7_cases);
  Hl7Controls();

  const auto fhir_cases = FhirCases();
  RunFhir(fhir_cases);
  FhirControls();

  const auto csv_cases = CsvCases();
  RunCsv(csv_cases);
  CsvControls();

  // (4) The live subscriber received exactly the control cases' events, in
  // position order, and nothing else.
  const Snapshot end = Snap();
  EXPECT_EQ(end.last_position, expected_.size());
  EXPECT_FALSE(subscriber_.ended())
      << "the live subscriber's stream ended: " << subscriber_.end_status();
  const auto received = subscriber_.events();
  ASSERT_EQ(received.size(), expected_.size());
  for (size_t i = 0; i < received.size(); ++i) {
    SCOPED_TRACE("delivered event " + std::to_string(i + 1) + " (" + expected_[i].control + ")");
    EXPECT_EQ(received[i].position(), expected_[i].position);
    EXPECT_EQ(received[i].nhs_number(), expected_[i].nhs_number);
    EXPECT_EQ(received[i].event_type(), expected_[i].type);
  }

  const size_t total = grpc_cases.size() + hl7_cases.size() + fhir_cases.size() + csv_cases.size();
  EXPECT_GE(total, 200u);
  std::printf(
      "malformed inputs: gRPC %zu, HL7 %zu, FHIR %zu, CSV %zu (%zu in all); valid controls: %d "
      "(%zu events stored and delivered)\n",
      grpc_cases.size(), hl7_cases.size(), fhir_cases.size(), csv_cases.size(), total, controls_,
      expected_.size());
}

}  // namespace
}  // namespace icr
