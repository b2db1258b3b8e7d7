// TLS and mutual TLS on every listener, over real loopback connections, with
// certificates from deploy/make-test-pki.sh made into a temporary directory:
//   - gRPC: BuildServerCredentials on a test-only service that records the
//     caller's identity (IdentityFromAuthContext), then the real BrokerServer;
//   - HL7 MLLP inside TLS, and FHIR over HTTPS, with client certificates;
//   - the daemon's start-up checks (--production, plaintext off loopback, a
//     key that does not match its certificate).
// Good certificates get through with their subject as the identity; no
// certificate, an expired one and one from an unknown CA are refused at the
// handshake, before anything is read or stored.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "adapters/fhir/fhir_server.h"
#include "adapters/hl7/ack.h"
#include "adapters/hl7/mllp_server.h"
#include "broker/broker.h"
#include "broker/identity.h"
#include "broker/tls.h"
#include "icr/v1/broker.grpc.pb.h"
#include "tests/support/broker_process.h"
#include "tests/support/http_reply.h"
#include "tests/support/test_support.h"

#ifndef ICR_SOURCE_DIR
#error "ICR_SOURCE_DIR must name the source tree (for deploy/make-test-pki.sh)"
#endif
#ifndef ICR_BROKER_BINARY
#error "ICR_BROKER_BINARY must name the icr-broker executable"
#endif

namespace icr::broker {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The test PKI, made once per test program.
class Pki {
 public:
  static const Pki& Get() {
    static Pki* pki = new Pki();  // lives to the end of the program
    return *pki;
  }
  const std::string& dir() const { return dir_.path(); }
  std::string Path(const std::string& name) const { return dir() + "/" + name; }
  std::string Pem(const std::string& name) const { return ReadText(Path(name)); }

 private:
  Pki() {
    const std::string cmd = "bash '" + std::string(ICR_SOURCE_DIR) + "/deploy/make-test-pki.sh' '" +
                            dir_.path() + "' > '" + dir_.path() + "/make.log' 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "make-test-pki.sh failed: " << ReadText(dir_.path() + "/make.log");
    }
  }
  icr::testing::TempDir dir_;
};

// The sample policy; its principals are make-test-pki.sh's default ones.
std::string PolicyFile() {
  return std::string(ICR_SOURCE_DIR) + "/deploy/policy/coventry-warwickshire.yaml";
}

TlsOptions ServerTls(bool mutual = true) {
  const Pki& pki = Pki::Get();
  TlsOptions tls;
  tls.certificate_file = pki.Path("server.pem");
  tls.private_key_file = pki.Path("server.key");
  if (mutual) tls.client_ca_file = pki.Path("ca.pem");
  return tls;
}

// ---------------------------------------------------------------------------
// gRPC: credentials and identities, on a test-only service.

// icr.v1.Broker with only GetStatus, which records who called.
class IdentityRecorder final : public icr::v1::Broker::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext* context, const icr::v1::GetStatusRequest*,
                         icr::v1::GetStatusResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = IdentityFromAuthContext(*context->auth_context(), context->peer());
    ++calls_;
    return grpc::Status::OK;
  }
  PeerIdentity last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  PeerIdentity last_;
  int calls_ = 0;
};

// A client certificate by name ("uhcw-epr" -> uhcw-epr.pem/.key); "" = none.
std::shared_ptr<grpc::Channel> TlsChannel(int port, const std::string& client,
                                          const std::string& root = "ca.pem") {
  const Pki& pki = Pki::Get();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = pki.Pem(root);
  if (!client.empty()) {
    o.pem_cert_chain = pki.Pem(client + ".pem");
    o.pem_private_key = pki.Pem(client + ".key");
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::SslCredentials(o),
                                   args);
}

grpc::Status CallGetStatus(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = icr::v1::Broker::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  icr::v1::GetStatusRequest req;
  icr::v1::GetStatusResponse resp;
  return stub->GetStatus(&ctx, req, &resp);
}

class GrpcTlsTest : public ::testing::Test {
 protected:
  void Start(const TlsOptions& tls) {
    std::shared_ptr<grpc::ServerCredentials> credentials;
    store::Status s = BuildServerCredentials(tls, &credentials);
    ASSERT_TRUE(s.ok()) << s.ToString();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }

  IdentityRecorder service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(GrpcTlsTest, AValidClientCertificateIsTheCallersIdentity) {
  Start(ServerTls());
  grpc::Status s = CallGetStatus(TlsChannel(port_, "uhcw-epr"));
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  PeerIdentity id = service_.last();
  EXPECT_TRUE(id.authenticated);
  EXPECT_EQ(id.common_name, "uhcw-epr");
  EXPECT_EQ(id.organisation, "RKB");
  EXPECT_EQ(id.organisational_unit, "");
  EXPECT_EQ(id.channel, "grpc");
  EXPECT_NE(id.peer.find("127.0.0.1"), std::string::npos) << id.peer;

  // The subject as issued, whatever the CN claims: wrong-org says
  // cov-brokerage but belongs to RKB (the policy must look at both).
  ASSERT_TRUE(CallGetStatus(TlsChannel(port_, "wrong-org")).ok());
  id = service_.last();
  EXPECT_EQ(id.common_name, "cov-brokerage");
  EXPECT_EQ(id.organisation, "RKB");
}

TEST_F(GrpcTlsTest, NoExpiredOrUnknownCaCertificateIsRefusedAtTheHandshake) {
  Start(ServerTls());
  for (const char* client : {"", "expired", "rogue-client"}) {
    grpc::Status s = CallGetStatus(TlsChannel(port_, client));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << "client certificate '" << client << "': " << s.error_message();
  }
  EXPECT_EQ(service_.calls(), 0);
  // A plaintext client on the TLS port gets nowhere either.
  grpc::Status s = CallGetStatus(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(GrpcTlsTest, ServerOnlyTlsLetsCallersInUnauthenticated) {
  Start(ServerTls(/*mutual=*/false));
  ASSERT_TRUE(CallGetStatus(TlsChannel(port_, "")).ok());
  EXPECT_FALSE(service_.last().authenticated);
  // A certificate offered to a listener without a client CA proves nothing.
  ASSERT_TRUE(CallGetStatus(TlsChannel(port_, "uhcw-epr")).ok());
  EXPECT_FALSE(service_.last().authenticated);
  EXPECT_EQ(service_.last().common_name, "");
}

TEST_F(GrpcTlsTest, OptionalClientCertificates) {
  TlsOptions tls = ServerTls();
  tls.require_client_certificate = false;
  Start(tls);
  ASSERT_TRUE(CallGetStatus(TlsChannel(port_, "")).ok());
  EXPECT_FALSE(service_.last().authenticated);
  ASSERT_TRUE(CallGetStatus(TlsChannel(port_, "cov-brokerage")).ok());
  EXPECT_TRUE(service_.last().authenticated);
  EXPECT_EQ(service_.last().organisation, "COV01");
  // Verified when offered: an unknown CA's certificate is still refused.
  EXPECT_FALSE(CallGetStatus(TlsChannel(port_, "rogue-client")).ok());
}

TEST_F(GrpcTlsTest, PlaintextCallersAreUnauthenticated) {
  Start(TlsOptions());
  ASSERT_TRUE(CallGetStatus(grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                                grpc::InsecureChannelCredentials()))
                  .ok());
  PeerIdentity id = service_.last();
  EXPECT_FALSE(id.authenticated);
  EXPECT_EQ(id.channel, "grpc");
  EXPECT_EQ(id.common_name, "");
}

TEST(TlsFilesTest, BadFilesAreClearStartUpErrors) {
  const Pki& pki = Pki::Get();
  std::shared_ptr<grpc::ServerCredentials> credentials;
  TlsOptions tls = ServerTls();
  tls.certificate_file = pki.Path("missing.pem");
  store::Status s = BuildServerCredentials(tls, &credentials);
  EXPECT_EQ(s.code(), store::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "cannot read --tls-cert " + pki.Path("missing.pem") + ": No such file or directory");

  tls = ServerTls();
  tls.private_key_file = pki.Path("uhcw-epr.key");
  s = BuildServerCredentials(tls, &credentials);
  EXPECT_EQ(s.code(), store::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--tls-key " + pki.Path("uhcw-epr.key") +
                             " does not match the certificate in --tls-cert " +
                             pki.Path("server.pem")),
            std::string::npos)
      << s.message();

  tls = ServerTls();
  tls.client_ca_file = pki.Path("server.key");  // not a certificate
  s = BuildServerCredentials(tls, &credentials);
  EXPECT_NE(s.message().find("--tls-client-ca " + pki.Path("server.key")), std::string::npos)
      << s.message();

  tls = TlsOptions();
  tls.certificate_file = pki.Path("server.pem");
  s = BuildServerCredentials(tls, &credentials);
  EXPECT_EQ(s.message(), "--tls-cert needs --tls-key");

  TlsOptionNames names;
  names.client_ca = "--mllp-tls-client-ca";
  names.certificate = "--mllp-tls-cert";
  tls = TlsOptions();
  tls.client_ca_file = pki.Path("ca.pem");
  TlsFiles files;
  s = LoadTlsFiles(tls, names, &files);
  EXPECT_NE(s.message().find("--mllp-tls-client-ca needs --mllp-tls-cert"), std::string::npos)
      << s.message();
}

TEST(TlsFilesTest, LoopbackAddresses) {
  for (const char* a : {"127.0.0.1:50051", "127.1.2.3:0", "localhost:8080", "[::1]:2575",
                        "ipv4:127.0.0.1:1", "unix:/tmp/icr.sock", "LOCALHOST:1"}) {
    EXPECT_TRUE(IsLoopbackListenAddress(a)) << a;
  }
  for (const char* a : {"0.0.0.0:50051", "[::]:2575", ":50051", "*:2575", "10.0.0.1:1",
                        "broker.example.nhs.uk:443", "128.0.0.1:1", "[::2]:1"}) {
    EXPECT_FALSE(IsLoopbackListenAddress(a)) << a;
  }
}

TEST(IdentityTest, SubjectOfACertificate) {
  const Pki& pki = Pki::Get();
  // An OU as well, from a principal made with cn:ORG:OU.
  icr::testing::TempDir extra;
  const std::string cmd = "bash '" + std::string(ICR_SOURCE_DIR) + "/deploy/make-test-pki.sh' '" +
                          extra.path() + "' ward-system:RKB:Ward\\ 33 > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string pem = ReadText(extra.path() + "/ward-system.pem");
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(cert, nullptr);
  PeerIdentity id = IdentityFromCertificate(cert, "10.1.2.3:4567", "mllp");
  X509_free(cert);
  EXPECT_TRUE(id.authenticated);
  EXPECT_EQ(id.common_name, "ward-system");
  EXPECT_EQ(id.organisation, "RKB");
  EXPECT_EQ(id.organisational_unit, "Ward 33");
  EXPECT_EQ(id.peer, "10.1.2.3:4567");
  EXPECT_EQ(id.channel, "mllp");

  id = IdentityFromCertificate(nullptr, "p", "fhir");
  EXPECT_FALSE(id.authenticated);
  EXPECT_EQ(id.channel, "fhir");
  (void)pki;
}

// ---------------------------------------------------------------------------
// The real broker: gRPC with mutual TLS, and its adapters.

class BrokerTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BrokerOptions options = icr::testing::TestBrokerOptions(dir_.path());
    options.tls = ServerTls();
    options.policy_file = PolicyFile();  // client certificates name its principals
    options.shutdown_grace_ms = 1000;
    store::Status s = BrokerServer::Start(options, &broker_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void TearDown() override {
    if (fhir_) fhir_->Stop();
    if (mllp_) mllp_->Stop();
    if (broker_) broker_->Shutdown();
  }

  icr::testing::TempDir dir_;
  std::unique_ptr<BrokerServer> broker_;
  std::unique_ptr<adapters::hl7::MllpServer> mllp_;
  std::unique_ptr<adapters::fhir::FhirServer> fhir_;
};

TEST_F(BrokerTlsTest, GetStatusNeedsAClientCertificate) {
  grpc::Status s = CallGetStatus(TlsChannel(broker_->port(), "icr-operator"));
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = CallGetStatus(TlsChannel(broker_->port(), ""));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  s = CallGetStatus(grpc::CreateChannel("127.0.0.1:" + std::to_string(broker_->port()),
                                        grpc::InsecureChannelCredentials()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST(BrokerTlsStartTest, AKeyThatDoesNotMatchIsRefusedBeforeTheStoreOpens) {
  icr::testing::TempDir dir;
  BrokerOptions options = icr::testing::TestBrokerOptions(dir.path() + "/data");
  options.tls = ServerTls();
  options.policy_file = PolicyFile();
  options.tls.private_key_file = Pki::Get().Path("cov-brokerage.key");
  std::unique_ptr<BrokerServer> broker;
  store::Status s = BrokerServer::Start(options, &broker);
  EXPECT_EQ(s.code(), store::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("does not match"), std::string::npos) << s.message();
}

// A TLS client context trusting the test CA, with a client certificate
// (by name; "" = none).
std::unique_ptr<ssl::context> ClientContext(const std::string& client) {
  const Pki& pki = Pki::Get();
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  ctx->load_verify_file(pki.Path("ca.pem"));
  ctx->set_verify_mode(ssl::verify_peer);
  if (!client.empty()) {
    ctx->use_certificate_chain_file(pki.Path(client + ".pem"));
    ctx->use_private_key_file(pki.Path(client + ".key"), ssl::context::pem);
  }
  return ctx;
}

// Connects and shakes hands; then sends `bytes` and reads until `until`
// appears, the peer closes or 5 s pass. Returns what was read ("" when the
// server refused the client: under TLS 1.3 the client's handshake ends
// before the server has checked its certificate, so the refusal shows as the
// first read failing).
std::string TlsExchange(int port, const std::string& client, const std::string& bytes,
                        const std::string& until, std::string* error) {
  asio::io_context io;
  auto ctx = ClientContext(client);
  ssl::stream<tcp::socket> stream(io, *ctx);
  SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
  stream.set_verify_callback(ssl::host_name_verification("localhost"));
  boost::system::error_code ec;
  stream.lowest_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) {
    *error = "connect: " + ec.message();
    return {};
  }
  timeval tv{5, 0};
  setsockopt(stream.lowest_layer().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  stream.handshake(ssl::stream_base::client, ec);
  if (ec) {
    *error = "handshake: " + ec.message();
    return {};
  }
  asio::write(stream, asio::buffer(bytes), ec);
  std::string got;
  char buf[4096];
  while (!ec && got.find(until) == std::string::npos) {
    size_t n = stream.read_some(asio::buffer(buf), ec);
    got.append(buf, n);
  }
  if (ec) *error = "read: " + ec.message();
  return got;
}

std::string AdmitMessage(const std::string& control_id) {
  return "MSH|^~\\&|UHCW-EPR|RKB|ICR-BROKER|QWU|20250610093000+0100||ADT^A01^ADT_A01|" +
         control_id +
         "|P|2.4\r"
         "EVN|A01|20250610093000+0100\r"
         "PID|1||9990000018^^^NHS^NH~RKB1234567^^^RKB^MR||JONES^Margaret^Ann^^Mrs^^L||19400312|F\r"
         "PV1|1|I|Ward 33^Bay 2^Bed 4^RKB01|21|||C1234567^Smith^Jane^^^Dr|||300|||||||||"
         "SP-2025-0001^^^RKB^VN|||||||||||||||||||||||||20250610091500+0100\r";
}

TEST_F(BrokerTlsTest, MllpInsideMutualTls) {
  const Pki& pki = Pki::Get();
  adapters::hl7::MllpOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_certificate_file = pki.Path("server.pem");
  o.tls_private_key_file = pki.Path("server.key");
  o.tls_client_ca_file = pki.Path("ca.pem");
  ASSERT_TRUE(adapters::hl7::MllpServer::Start(o, broker_->ingest(), &mllp_).ok());

  std::string error;
  std::string got = TlsExchange(mllp_->port(), "uhcw-epr", "\x0b" + AdmitMessage("TLS-1") + "\x1c\r",
                                "\x1c\r", &error);
  ASSERT_NE(got.find("\x1c\r"), std::string::npos) << error;
  adapters::hl7::ParsedAck ack;
  ASSERT_TRUE(adapters::hl7::ParseAck(got.substr(1, got.find('\x1c') - 1), &ack)) << got;
  EXPECT_EQ(ack.msa1, "AA") << got;
  EXPECT_EQ(ack.msa2, "TLS-1");
  const uint64_t stored = broker_->store()->LastPosition();
  EXPECT_GT(stored, 0u);

  int n = 0;
  for (const char* client : {"", "expired", "rogue-client"}) {
    error.clear();
    got = TlsExchange(mllp_->port(), client,
                      "\x0b" + AdmitMessage("TLS-BAD-" + std::to_string(++n)) + "\x1c\r", "\x1c\r",
                      &error);
    EXPECT_EQ(got, "") << "client certificate '" << client << "' got an answer";
    EXPECT_FALSE(error.empty());
  }
  EXPECT_EQ(broker_->store()->LastPosition(), stored) << "a refused client stored something";
  EXPECT_EQ(mllp_->stats().messages, 1u);

  // Through the handshake, refused by the policy: AR, ERR-3 207, the reason.
  struct Case {
    const char* client;
    const char* text;
  };
  for (const Case& c : {Case{"wrong-org", "not authenticated: "},
                        Case{"cov-brokerage", "not permitted: "}}) {
    error.clear();
    got = TlsExchange(mllp_->port(), c.client,
                      "\x0b" + AdmitMessage(std::string("TLS-") + c.client) + "\x1c\r", "\x1c\r",
                      &error);
    ASSERT_NE(got.find("\x1c\r"), std::string::npos) << c.client << ": " << error;
    ASSERT_TRUE(adapters::hl7::ParseAck(got.substr(1, got.find('\x1c') - 1), &ack)) << got;
    EXPECT_EQ(ack.msa1, "AR") << c.client << ": " << got;
    ASSERT_EQ(ack.err_codes.size(), 1u) << got;
    EXPECT_EQ(ack.err_codes[0], 207);
    EXPECT_EQ(ack.err_texts[0].rfind(c.text, 0), 0u) << ack.err_texts[0];
  }
  EXPECT_EQ(broker_->store()->LastPosition(), stored) << "a refused sender stored something";
}

std::string HttpsPost(int port, const std::string& client, const std::string& target,
                      const std::string& body, icr::testing::HttpReply* reply) {
  asio::io_context io;
  auto ctx = ClientContext(client);
  beast::ssl_stream<beast::tcp_stream> stream(io, *ctx);
  SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
  stream.set_verify_callback(ssl::host_name_verification("localhost"));
  beast::error_code ec;
  beast::get_lowest_layer(stream).expires_after(5s);
  beast::get_lowest_layer(stream).socket().connect(
      tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return "connect: " + ec.message();
  timeval tv{5, 0};
  setsockopt(beast::get_lowest_layer(stream).socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO,
             &tv, sizeof tv);
  stream.handshake(ssl::stream_base::client, ec);
  if (ec) return "handshake: " + ec.message();
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, "localhost");
  req.set(http::field::content_type, "application/fhir+json");
  req.set("X-ICR-Source-System", "uhcw-epr");
  req.set("X-ICR-Source-Organisation", "RKB");
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req, ec);
  if (ec) return "write: " + ec.message();
  beast::flat_buffer buffer;
  icr::testing::ReadHttpReply(stream, buffer, reply);
  return reply->error;
}

TEST_F(BrokerTlsTest, FhirOverHttpsWithMutualTls) {
  const Pki& pki = Pki::Get();
  adapters::fhir::FhirOptions o;
  o.listen = "127.0.0.1:0";
  o.read_timeout_ms = 5000;
  o.drain_timeout_ms = 2000;
  o.tls_certificate_file = pki.Path("server.pem");
  o.tls_private_key_file = pki.Path("server.key");
  o.tls_client_ca_file = pki.Path("ca.pem");
  ASSERT_TRUE(adapters::fhir::FhirServer::Start(o, broker_->ingest(), &fhir_).ok());
  // An admission: uhcw-epr may publish it, cov-brokerage may not.
  const std::string patient = ReadText(std::string(ICR_SOURCE_DIR) +
                                       "/tests/adapters/fhir/fixtures/encounter-admission.json");

  icr::testing::HttpReply reply;
  std::string error = HttpsPost(fhir_->port(), "uhcw-epr", "/fhir/r4/Encounter", patient, &reply);
  ASSERT_EQ(error, "");
  EXPECT_EQ(reply.status, 201) << reply.body;
  const uint64_t stored = broker_->store()->LastPosition();
  EXPECT_GT(stored, 0u);

  for (const char* client : {"", "expired", "rogue-client"}) {
    icr::testing::HttpReply refused;
    error = HttpsPost(fhir_->port(), client, "/fhir/r4/Encounter", patient, &refused);
    EXPECT_EQ(refused.status, 0) << "client certificate '" << client << "': " << refused.body;
    EXPECT_NE(error, "");
  }
  // Through the handshake, refused by the policy: 401 login / 403 forbidden.
  struct Case {
    const char* client;
    int status;
    const char* code;
  };
  for (const Case& c : {Case{"wrong-org", 401, "login"}, Case{"cov-brokerage", 403, "forbidden"}}) {
    icr::testing::HttpReply refused;
    error = HttpsPost(fhir_->port(), c.client, "/fhir/r4/Encounter", patient, &refused);
    ASSERT_EQ(error, "") << c.client;
    EXPECT_EQ(refused.status, c.status) << c.client << ": " << refused.body;
    EXPECT_NE(refused.body.find("\"code\":\"" + std::string(c.code) + "\""), std::string::npos)
        << refused.body;
    EXPECT_NE(refused.body.find("nothing was stored"), std::string::npos) << refused.body;
  }
  // Plain HTTP on the HTTPS port: no answer.
  {
    asio::io_context io;
    beast::tcp_stream plain(io);
    plain.expires_after(5s);
    plain.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), fhir_->port()));
    http::request<http::string_body> req{http::verb::get, "/fhir/r4/metadata", 11};
    req.set(http::field::host, "localhost");
    beast::error_code ec;
    http::write(plain, req, ec);
    beast::flat_buffer buffer;
    icr::testing::HttpReply r;
    icr::testing::ReadHttpReply(plain, buffer, &r);
    EXPECT_EQ(r.status, 0);
  }
  EXPECT_EQ(broker_->store()->LastPosition(), stored);
}

TEST(FhirTlsStartTest, BadFilesAreRefusedNamingThem) {
  const Pki& pki = Pki::Get();
  icr::testing::TempDir dir;
  std::unique_ptr<BrokerServer> broker;
  ASSERT_TRUE(BrokerServer::Start(icr::testing::TestBrokerOptions(dir.path()), &broker).ok());
  adapters::fhir::FhirOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_certificate_file = pki.Path("server.pem");
  o.tls_private_key_file = pki.Path("wrong-org.key");
  std::unique_ptr<adapters::fhir::FhirServer> fhir;
  store::Status s = adapters::fhir::FhirServer::Start(o, broker->ingest(), &fhir);
  EXPECT_EQ(s.code(), store::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(pki.Path("wrong-org.key")), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("does not match"), std::string::npos) << s.message();
  broker->Shutdown();
}

// ---------------------------------------------------------------------------
// The daemon's profiles.

class DaemonTlsTest : public ::testing::Test {
 protected:
  // "--policy FILE" for a daemon with client certificates (which need a
  // policy), when this build of the daemon has the flag.
  std::vector<std::string> PolicyArgs() { return {"--policy", PolicyFile()}; }
  icr::testing::ProgramRun Run(std::vector<std::string> args) {
    args.insert(args.begin(), {ICR_BROKER_BINARY, "--data-dir", dir_.path() + "/data"});
    return icr::testing::RunProgram(args, dir_.path());
  }
  icr::testing::TempDir dir_;
};

TEST_F(DaemonTlsTest, ProductionWithoutMutualTlsIsRefusedNamingTheFlag) {
  auto run = Run({"--production", "--listen", "127.0.0.1:0", "--mllp-listen", "off",
                  "--fhir-listen", "off"});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("--production requires mutual TLS"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("give --tls-cert"), std::string::npos) << run.err;

  const Pki& pki = Pki::Get();
  run = Run({"--production", "--listen", "127.0.0.1:0", "--mllp-listen", "127.0.0.1:0",
             "--fhir-listen", "off", "--tls-cert", pki.Path("server.pem"), "--tls-key",
             pki.Path("server.key"), "--mllp-tls-cert", pki.Path("server.pem"), "--mllp-tls-key",
             pki.Path("server.key"), "--tls-client-ca", pki.Path("ca.pem")});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("MLLP listener (--mllp-listen 127.0.0.1:0) has no client CA; give "
                         "--mllp-tls-client-ca"),
            std::string::npos)
      << run.err;
}

TEST_F(DaemonTlsTest, PlaintextOffLoopbackIsRefused) {
  auto run = Run({"--listen", "0.0.0.0:0", "--mllp-listen", "off", "--fhir-listen", "off"});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("plaintext listeners must be on loopback; give "
                         "--tls-cert/--tls-key/--tls-client-ca, or listen on 127.0.0.1"),
            std::string::npos)
      << run.err;
  run = Run({"--listen", "127.0.0.1:0", "--mllp-listen", "off", "--fhir-listen", "[::]:0"});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("FHIR listener (--fhir-listen [::]:0)"), std::string::npos) << run.err;
}

TEST_F(DaemonTlsTest, TlsWithoutClientCertificatesOffLoopbackOrCertificatesWithoutAPolicyAreRefused) {
  const Pki& pki = Pki::Get();
  // Without client certificates every caller would be the development
  // principal: never off loopback.
  auto run = Run({"--listen", "0.0.0.0:0", "--mllp-listen", "off", "--fhir-listen", "off",
                  "--tls-cert", pki.Path("server.pem"), "--tls-key", pki.Path("server.key")});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("has TLS without client certificates: its callers could not be "
                         "identified, so it must be on loopback; give --tls-client-ca"),
            std::string::npos)
      << run.err;
  // Client certificates name principals of a policy, on any listener.
  run = Run({"--listen", "127.0.0.1:0", "--fhir-listen", "off", "--mllp-listen", "127.0.0.1:0",
             "--mllp-tls-cert", pki.Path("server.pem"), "--mllp-tls-key", pki.Path("server.key"),
             "--mllp-tls-client-ca", pki.Path("ca.pem")});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("asks for client certificates (--mllp-tls-client-ca), which identify "
                         "principals of a policy: give --policy FILE"),
            std::string::npos)
      << run.err;
}

TEST_F(DaemonTlsTest, AKeyThatDoesNotMatchIsRefusedNamingTheFiles) {
  const Pki& pki = Pki::Get();
  auto run = Run({"--listen", "127.0.0.1:0", "--mllp-listen", "off", "--fhir-listen", "off",
                  "--tls-cert", pki.Path("server.pem"), "--tls-key", pki.Path("uhcw-epr.key")});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("--tls-key " + pki.Path("uhcw-epr.key") +
                         " does not match the certificate in --tls-cert " + pki.Path("server.pem")),
            std::string::npos)
      << run.err;
  run = Run({"--listen", "127.0.0.1:0", "--mllp-listen", "off", "--fhir-listen", "off",
             "--tls-cert", pki.Path("nope.pem"), "--tls-key", pki.Path("server.key")});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("cannot read --tls-cert " + pki.Path("nope.pem") +
                         ": No such file or directory"),
            std::string::npos)
      << run.err;
}

TEST_F(DaemonTlsTest, DevelopmentProfileWarnsLoudly) {
  icr::testing::BrokerProcess broker(ICR_BROKER_BINARY, dir_.path() + "/data",
                                     dir_.path() + "/broker.log");
  EXPECT_NE(broker.Log().find("WARNING: development profile: plaintext on loopback, no client "
                              "certificates; every caller acts as principal 'local-developer'"),
            std::string::npos)
      << broker.Log();
  broker.Terminate();
}

TEST_F(DaemonTlsTest, ProductionWithMutualTlsOnEveryListenerStarts) {
  const Pki& pki = Pki::Get();
  std::vector<std::string> args = {"--production",    "--tls-cert",
                                   pki.Path("server.pem"), "--tls-key",
                                   pki.Path("server.key"), "--tls-client-ca",
                                   pki.Path("ca.pem")};
  const std::vector<std::string> policy = PolicyArgs();
  args.insert(args.end(), policy.begin(), policy.end());
  icr::testing::BrokerProcess broker(ICR_BROKER_BINARY, dir_.path() + "/data",
                                     dir_.path() + "/broker.log", args);
  const std::string log = broker.Log();
  EXPECT_EQ(log.find("WARNING"), std::string::npos) << log;
  EXPECT_NE(log.find("production profile"), std::string::npos) << log;
  EXPECT_NE(log.find("HL7 MLLP on port"), std::string::npos) << log;
  const int port = std::stoi(log.substr(log.find("(port ") + 6));
  EXPECT_TRUE(CallGetStatus(TlsChannel(port, "icr-operator")).ok());
  EXPECT_FALSE(CallGetStatus(TlsChannel(port, "")).ok());
  broker.Terminate();
}

}  // namespace
}  // namespace icr::broker
