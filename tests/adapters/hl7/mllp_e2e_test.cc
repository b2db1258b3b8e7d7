// End to end over real TCP: a broker (RocksDB, gRPC) with the MLLP listener
// on free loopback ports, and a small MLLP client. Every fixture is stored
// and acknowledged; resends store nothing new; bad input is answered with
// AE/AR naming the field and stores nothing.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <cstdlib>
#include <thread>

#include "adapters/hl7/ack.h"
#include "broker/ingest.h"
#include "tests/adapters/hl7/hl7_test_util.h"

namespace icr::adapters::hl7 {
namespace {

using testing::Fixture;
using testing::Hl7Broker;
using testing::MllpClient;
using testing::Replace;

ParsedAck MustParseAck(const std::string& ack) {
  ParsedAck p;
  EXPECT_TRUE(ParseAck(ack, &p)) << "not an ACK: '" << ack << "'";
  return p;
}

struct FixtureCase {
  const char* file;
  const char* nhs;
  icr::v1::EventType type;
  size_t events;  // 2 when PD1-3 adds a GpRegistration
};

const FixtureCase kFixtures[] = {
    {"a01_admit.hl7", "9990000018", icr::v1::ADMISSION, 2},
    {"a02_transfer.hl7", "9990000026", icr::v1::TRANSFER, 1},
    {"a03_discharge.hl7", "9990000034", icr::v1::DISCHARGE, 1},
    {"a04_ed_attendance.hl7", "9990000042", icr::v1::ED_ATTENDANCE, 1},
    {"a05_pre_admit.hl7", "9990000050", icr::v1::PRE_ADMISSION, 1},
    {"a08_update.hl7", "9990000069", icr::v1::ENCOUNTER_UPDATE, 1},
    {"a11_cancel_admit.hl7", "9990000077", icr::v1::ENCOUNTER_CANCELLATION, 1},
    {"a12_cancel_transfer.hl7", "9990000085", icr::v1::ENCOUNTER_CANCELLATION, 1},
    {"a13_cancel_discharge.hl7", "9990000093", icr::v1::ENCOUNTER_CANCELLATION, 1},
    {"a28_person_add.hl7", "9990000107", icr::v1::DEMOGRAPHICS_UPDATE, 2},
    {"a31_person_update.hl7", "9990000115", icr::v1::DEMOGRAPHICS_UPDATE, 1},
    {"a40_merge.hl7", "9990000123", icr::v1::NHS_NUMBER_MERGE, 1},
};

TEST(MllpE2eTest, EveryFixtureIsStoredAndAResendStoresNothing) {
  Hl7Broker b;
  MllpClient client(b.mllp_port());
  for (const auto& f : kFixtures) {
    SCOPED_TRACE(f.file);
    const std::string msg = Fixture(f.file);
    const uint64_t before = b.last_position();
    ParsedAck ack = MustParseAck(client.Call(msg));
    EXPECT_EQ(ack.msa1, "AA") << (ack.err_texts.empty() ? "" : ack.err_texts[0]);
    Er7Message m;
    ASSERT_TRUE(ParseEr7(msg, {}, &m).ok());
    EXPECT_EQ(ack.msa2, m.Get("MSH", 10));
    EXPECT_EQ(b.last_position(), before + f.events);

    auto history = b.History(f.nhs);
    ASSERT_EQ(history.size(), f.events);
    EXPECT_EQ(history[0].event_type(), f.type);
    EXPECT_EQ(history[0].source_message_id(), m.Get("MSH", 10));
    EXPECT_EQ(history[0].care_setting(), icr::v1::ACUTE);
    if (f.events == 2) {
      EXPECT_EQ(history[1].event_type(), icr::v1::GP_REGISTRATION);
    }

    // The same MSH-10 again: AA, nothing new.
    ack = MustParseAck(client.Call(msg));
    EXPECT_EQ(ack.msa1, "AA");
    EXPECT_EQ(b.last_position(), before + f.events);
    EXPECT_EQ(b.History(f.nhs).size(), f.events);
  }
  auto stats = b.mllp()->stats();
  EXPECT_EQ(stats.acks_aa, 2 * std::size(kFixtures));
  EXPECT_EQ(stats.duplicates, std::size(kFixtures));
}

TEST(MllpE2eTest, BadNhsNumberIsAeNamingPid3AndNothingIsStored) {
  Hl7Broker b;
  MllpClient client(b.mllp_port());
  std::string msg = Replace(Fixture("a02_transfer.hl7"), "9990000026", "9990000019");
  ParsedAck ack = MustParseAck(client.Call(msg));
  EXPECT_EQ(ack.msa1, "AE");
  EXPECT_EQ(ack.msa2, "A02-0001");
  ASSERT_EQ(ack.err_codes.size(), 1u);
  EXPECT_EQ(ack.err_codes[0], 102);
  EXPECT_EQ(ack.err_fields[0], "PID-3");
  EXPECT_NE(ack.err_texts[0].find("PID-3"), std::string::npos) << ack.err_texts[0];
  EXPECT_NE(ack.err_texts[0].find("Modulus 11"), std::string::npos) << ack.err_texts[0];
  EXPECT_EQ(b.last_position(), 0u);
}

TEST(MllpE2eTest, UnsupportedTriggerAndMalformedMshAreAr) {
  Hl7Broker b;
  MllpClient client(b.mllp_port());
  ParsedAck ack =
      MustParseAck(client.Call(Replace(Fixture("a01_admit.hl7"), "ADT^A01^", "ADT^A99^")));
  EXPECT_EQ(ack.msa1, "AR");
  EXPECT_EQ(ack.err_codes[0], 201);
  EXPECT_EQ(ack.msa2, "A01-0001");
  ack = MustParseAck(client.Call("MSH|^|||||||^A|||2.2\r^AA"));
  EXPECT_EQ(ack.msa1, "AR");
  EXPECT_EQ(ack.err_fields[0], "MSH-2");
  EXPECT_EQ(b.last_position(), 0u);
  // The connection is still usable afterwards.
  ack = MustParseAck(client.Call(Fixture("a02_transfer.hl7")));
  EXPECT_EQ(ack.msa1, "AA");
}

TEST(MllpE2eTest, LfAndCrLfTerminatedMessagesAreAccepted) {
  Hl7Broker b;
  MllpClient client(b.mllp_port());
  std::string lf = Fixture("a02_transfer.hl7"), crlf;
  for (char& c : lf) {
    if (c == '\r') c = '\n';
  }
  EXPECT_EQ(MustParseAck(client.Call(lf)).msa1, "AA");
  for (char c : Fixture("a03_discharge.hl7")) {
    if (c == '\r') {
      crlf += "\r\n";
    } else {
      crlf += c;
    }
  }
  EXPECT_EQ(MustParseAck(client.Call(crlf)).msa1, "AA");
  EXPECT_EQ(b.last_position(), 2u);
}

TEST(MllpE2eTest, OversizeFrameIsArThenClosed) {
  MllpOptions o;
  o.max_message_bytes = 4096;
  Hl7Broker b(o);
  MllpClient client(b.mllp_port());
  std::string big = Fixture("a02_transfer.hl7") + "NTE|1||" + std::string(8000, 'x') + "\r";
  ASSERT_TRUE(client.Send(big));
  ParsedAck ack = MustParseAck(client.ReadFrame());
  EXPECT_EQ(ack.msa1, "AR");
  EXPECT_EQ(ack.msa2, "A02-0001");
  EXPECT_EQ(ack.err_codes[0], 102);
  EXPECT_NE(ack.err_texts[0].find("4096"), std::string::npos);
  EXPECT_TRUE(client.WaitClosed());
  EXPECT_EQ(b.last_position(), 0u);
  // Exactly at the limit is fine.
  MllpClient again(b.mllp_port());
  std::string msg = Fixture("a02_transfer.hl7");
  msg += "NTE|1||";
  msg += std::string(4096 - msg.size() - 1, 'y') + "\r";
  ASSERT_EQ(msg.size(), 4096u);
  EXPECT_EQ(MustParseAck(again.Call(msg)).msa1, "AA");
}

TEST(MllpE2eTest, PipelinedFramesAreAnsweredInOrder) {
  Hl7Broker b;
  MllpClient client(b.mllp_port());
  std::string batch;
  const char* files[] = {"a01_admit.hl7", "a02_transfer.hl7", "a03_discharge.hl7"};
  for (const char* f : files) batch += "\x0b" + Fixture(f) + "\x1c\r\n";
  ASSERT_TRUE(client.SendRaw(batch));
  EXPECT_EQ(MustParseAck(client.ReadFrame()).msa2, "A01-0001");
  EXPECT_EQ(MustParseAck(client.ReadFrame()).msa2, "A02-0001");
  EXPECT_EQ(MustParseAck(client.ReadFrame()).msa2, "A03-0001");
  EXPECT_EQ(b.last_position(), 4u);
}

TEST(MllpE2eTest, FramesSplitAcrossWritesAreReassembled) {
  Hl7Broker b;
  MllpClient client(b.mllp_port());
  std::string framed = "\x0b" + Fixture("a05_pre_admit.hl7") + "\x1c\r";
  for (char c : framed) {
    ASSERT_TRUE(client.SendRaw(std::string(1, c)));
  }
  EXPECT_EQ(MustParseAck(client.ReadFrame()).msa1, "AA");
}

TEST(MllpE2eTest, GarbageOutsideAFrameClosesTheConnection) {
  Hl7Broker b;
  MllpClient client(b.mllp_port());
  ASSERT_TRUE(client.SendRaw(Fixture("a02_transfer.hl7")));  // no MLLP framing
  EXPECT_EQ(client.ReadFrame(2000), "");
  EXPECT_TRUE(client.WaitClosed());
  EXPECT_EQ(b.last_position(), 0u);
}

TEST(MllpE2eTest, IdleConnectionsAreClosed) {
  MllpOptions o;
  o.idle_timeout_seconds = 1;
  Hl7Broker b(o);
  MllpClient client(b.mllp_port());
  EXPECT_EQ(MustParseAck(client.Call(Fixture("a02_transfer.hl7"))).msa1, "AA");
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(client.WaitClosed(5000));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
}

TEST(MllpE2eTest, ConcurrentConnections) {
  Hl7Broker b(MllpOptions{}, icr::store::Durability::kSync);
  constexpr int kConnections = 8, kPerConnection = 10;
  std::atomic<int> aa{0};
  std::vector<std::thread> threads;
  const std::string a01 = Fixture("a01_admit.hl7");
  for (int c = 0; c < kConnections; ++c) {
    threads.emplace_back([&, c] {
      MllpClient client(b.mllp_port());
      for (int i = 0; i < kPerConnection; ++i) {
        const int n = c * kPerConnection + i;
        std::string msg = Replace(a01, "A01-0001", "CONC-" + std::to_string(n));
        msg = Replace(msg, "9990000018", icr::testing::TestNhsNumber(100 + n));
        ParsedAck ack;
        if (ParseAck(client.Call(msg), &ack) && ack.msa1 == "AA" &&
            ack.msa2 == "CONC-" + std::to_string(n)) {
          ++aa;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(aa.load(), kConnections * kPerConnection);
  EXPECT_EQ(b.last_position(), static_cast<uint64_t>(2 * kConnections * kPerConnection));
  EXPECT_EQ(b.History(icr::testing::TestNhsNumber(100 + 37)).size(), 2u);
}

TEST(MllpE2eTest, StopClosesIdleConnectionsPromptly) {
  Hl7Broker b;
  MllpClient c1(b.mllp_port()), c2(b.mllp_port());
  EXPECT_EQ(MustParseAck(c1.Call(Fixture("a02_transfer.hl7"))).msa1, "AA");
  auto start = std::chrono::steady_clock::now();
  b.mllp()->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(c1.WaitClosed(2000));
  EXPECT_TRUE(c2.WaitClosed(2000));
  b.mllp()->Stop();  // idempotent
}

TEST(MllpE2eTest, StartRejectsBadOptions) {
  icr::testing::TempDir dir;
  std::unique_ptr<MllpServer> s;
  MllpOptions o;
  o.listen = "nonsense";
  icr::broker::Ingest ingest(nullptr, {});
  EXPECT_EQ(MllpServer::Start(o, &ingest, &s).code(), icr::store::StatusCode::kInvalidArgument);
  o.listen = "127.0.0.1:0";
  o.tls_certificate_file = "/nonexistent.pem";
  EXPECT_EQ(MllpServer::Start(o, &ingest, &s).code(), icr::store::StatusCode::kInvalidArgument);
  o.tls_private_key_file = "/nonexistent.key";
  auto st = MllpServer::Start(o, &ingest, &s);
  EXPECT_EQ(st.code(), icr::store::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("/nonexistent.pem"), std::string::npos) << st.message();
}

// A store whose writes always fail, to see the AE 207 "retry" path.
class FailingStore : public icr::store::EventStore {
 public:
  using Status = icr::store::Status;
  void AppendAsync(std::vector<icr::v1::CareEvent>, icr::store::AppendCallback done) override {
    done(Status::Unavailable("simulated I/O error"), {});
  }
  void SetCommitListener(icr::store::CommitListener) override {}
  uint64_t LastPosition() const override { return 0; }
  Status ReadFrom(uint64_t, size_t, std::vector<icr::store::EventPtr>*) override { return {}; }
  Status Get(uint64_t, icr::store::EventPtr*) override { return Status::NotFound(""); }
  Status ReadPatient(const std::string&, uint64_t, size_t,
                     std::vector<icr::store::EventPtr>*) override {
    return {};
  }
  Status FindPositionAtTime(int64_t, uint64_t*) override { return {}; }
  Status PutSubscription(const std::string&, const std::string&, bool) override { return {}; }
  Status GetSubscription(const std::string&, std::string*) override {
    return Status::NotFound("");
  }
  Status DeleteSubscription(const std::string&) override { return {}; }
  Status ListSubscriptions(std::vector<std::pair<std::string, std::string>>*) override {
    return {};
  }
  Status PutParked(const std::string&, uint64_t, const std::string&,
                   const std::string&) override {
    return {};
  }
  Status DeleteParked(const std::string&, uint64_t) override { return {}; }
  Status ListParked(const std::string&, size_t,
                    std::vector<std::pair<uint64_t, std::string>>*) override {
    return {};
  }
  icr::store::Status GetState(const std::string&, std::string*) override {
    return icr::store::Status::NotFound("no state in this fake");
  }
  icr::store::Status ScanState(const std::string&,
                   const std::function<bool(std::string_view, std::string_view)>&) override {
    return icr::store::Status::Ok();
  }
  icr::store::Status PutState(const std::string&, const std::string&) override {
    return icr::store::Status::Unavailable("this fake store keeps no state");
  }
  icr::store::StoreStats Stats() const override { return {}; }
  void Close() override {}
};

TEST(MllpE2eTest, StoreFailureIsAe207AskingForARetry) {
  FailingStore store;
  icr::broker::Ingest ingest(&store, {});
  MllpOptions o;
  o.listen = "127.0.0.1:0";
  std::unique_ptr<MllpServer> server;
  ASSERT_TRUE(MllpServer::Start(o, &ingest, &server).ok());
  MllpClient client(server->port());
  ParsedAck ack = MustParseAck(client.Call(Fixture("a02_transfer.hl7")));
  EXPECT_EQ(ack.msa1, "AE");
  EXPECT_EQ(ack.err_codes[0], 207);
  EXPECT_NE(ack.err_texts[0].find("resend"), std::string::npos);
  server->Stop();
}

// TLS: a self-signed certificate made with the openssl command.
TEST(MllpE2eTest, TlsListener) {
  icr::testing::TempDir dir;
  const std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                          "-keyout " + key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl is needed for this test";
  MllpOptions o;
  o.tls_certificate_file = cert;
  o.tls_private_key_file = key;
  Hl7Broker b(o);

  namespace asio = boost::asio;
  asio::io_context io;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(cert);
  ctx.set_verify_mode(asio::ssl::verify_peer);
  asio::ssl::stream<asio::ip::tcp::socket> stream(io, ctx);
  stream.next_layer().connect({asio::ip::make_address("127.0.0.1"),
                               static_cast<unsigned short>(b.mllp_port())});
  stream.handshake(asio::ssl::stream_base::client);
  const std::string framed = "\x0b" + Fixture("a02_transfer.hl7") + "\x1c\r";
  asio::write(stream, asio::buffer(framed));
  asio::streambuf reply;
  asio::read_until(stream, reply, "\x1c\r");
  std::string ack(asio::buffers_begin(reply.data()), asio::buffers_end(reply.data()));
  ASSERT_GE(ack.size(), 3u);
  ack = ack.substr(1, ack.find('\x1c') - 1);
  EXPECT_EQ(MustParseAck(ack).msa1, "AA");
  EXPECT_EQ(b.last_position(), 1u);

  // A plaintext client on the TLS port gets nothing stored.
  MllpClient plain(b.mllp_port());
  plain.Send(Fixture("a03_discharge.hl7"));
  EXPECT_EQ(plain.ReadFrame(2000), "");
  EXPECT_EQ(b.last_position(), 1u);
}

// --- The malformed-input suite ---------------------------------------------

struct BadCase {
  std::string name;
  std::string input;
  std::string msa1;
  int err3;
  std::string text;  // expected in ERR-8
};

std::vector<BadCase> BadCases() {
  const std::string a01 = Fixture("a01_admit.hl7");
  const std::string a02 = Fixture("a02_transfer.hl7");
  const std::string a03 = Fixture("a03_discharge.hl7");
  const std::string a05 = Fixture("a05_pre_admit.hl7");
  const std::string a28 = Fixture("a28_person_add.hl7");
  const std::string a40 = Fixture("a40_merge.hl7");
  const std::string msh = a02.substr(0, a02.find('\r') + 1);
  std::string many_segments = a02;
  for (int i = 0; i < 1000; ++i) many_segments += "NTE|" + std::to_string(i) + "\r";
  std::string many_fields = a02 + "ZXX";
  for (int i = 0; i < 300; ++i) many_fields += "|f";
  many_fields += "\r";
  return {
      {"empty", "", "AR", 100, "empty message"},
      {"blank lines", "\r\n\r\n", "AR", 100, "empty message"},
      {"xml", "<?xml version=\"1.0\"?><ADT_A01 xmlns=\"urn:hl7-org:v2xml\"/>", "AR", 100, "XML"},
      {"nhapi MSHH0", "MSHH0\r", "AR", 102, "MSH-1"},
      {"nhapi hang", "MSH|^|||||||^A|||2.2\r^AA", "AR", 102, "MSH-2"},
      {"MSH alone", "MSH", "AR", 100, "field separator is missing"},
      {"MSH then CR", "MSH\r", "AR", 100, "field separator is missing"},
      {"PID first", "PID|1||9990000018^^^NHS^NH\r" + a02, "AR", 100, "must start with an MSH"},
      {"batch", "BHS|^~\\&|UHCW\r" + a02, "AR", 100, "batch"},
      {"two MSH", a02 + msh, "AR", 100, "an MLLP frame carries one message"},
      {"lower-case segment", a02 + "nte|1|x\r", "AR", 100, "segment name"},
      {"long segment name", a02 + "NTEX|1|x\r", "AR", 100, "followed by the field separator"},
      {"short segment", a02 + "NT\r", "AR", 100, "segment name"},
      {"duplicate encoding char", Replace(a02, "MSH|^~\\&|", "MSH|^~^&|"), "AR", 102,
       "used twice"},
      {"three encoding chars", Replace(a02, "MSH|^~\\&|", "MSH|^~\\|"), "AR", 102,
       "encoding characters"},
      {"letter as separator", Replace(a02, "MSH|^~\\&|", "MSHA^~\\&A"), "AR", 102,
       "field separator"},
      {"unknown escape", Replace(a02, "BROWN^Arthur", "BROWN\\Q\\^Arthur"), "AR", 102,
       "PID-5: unknown escape"},
      {"unterminated escape", Replace(a02, "BROWN^Arthur", "BROWN\\F^Arthur"), "AR", 102,
       "PID-5: unterminated escape"},
      {"odd hex escape", Replace(a02, "BROWN^Arthur", "BROWN\\X4\\^Arthur"), "AR", 102,
       "hex digits"},
      {"too many repetitions", Replace(a02, "9990000026^^^NHS^NH", std::string(200, '~')), "AR",
       102, "PID-3: more than 100 repetitions"},
      {"too many segments", many_segments, "AR", 100, "more than 1000 segments"},
      {"too many fields", many_fields, "AR", 102, "more than 256 fields"},
      {"unsupported trigger", Replace(a01, "ADT^A01^", "ADT^A99^"), "AR", 201,
       "MSH-9: trigger event 'A99' is not supported"},
      {"unsupported message type", Replace(a01, "ADT^A01^ADT_A01", "ORU^R01"), "AR", 200,
       "'ORU' is not supported"},
      {"version 2.2", Replace(a01, "|P|2.4|", "|P|2.2|"), "AR", 203, "MSH-12"},
      {"version 2.6", Replace(a01, "|P|2.4|", "|P|2.6|"), "AR", 203, "'2.6' is not supported"},
      {"version missing", Replace(a01, "|P|2.4|", "|P||"), "AR", 101, "MSH-12"},
      {"message type missing", Replace(a01, "ADT^A01^ADT_A01", ""), "AR", 101, "MSH-9"},
      {"trigger missing", Replace(Replace(a01, "ADT^A01^ADT_A01", "ADT"), "EVN|A01|", "EVN||"),
       "AR", 101, "trigger event is required"},
      {"control id missing", Replace(a01, "|A01-0001|", "||"), "AR", 101, "MSH-10"},
      {"control id too long", Replace(a01, "|A01-0001|", "|" + std::string(121, 'C') + "|"),
       "AE", 102, "MSH-10: message control id is 121 characters"},
      {"sending application missing", Replace(a01, "|UHCW-EPR|RKB|", "||RKB|"), "AE", 101,
       "MSH-3"},
      {"sending facility missing", Replace(a01, "|UHCW-EPR|RKB|", "|UHCW-EPR||"), "AE", 101,
       "MSH-4"},
      {"sending facility not ODS", Replace(a01, "|UHCW-EPR|RKB|", "|UHCW-EPR|R-K-B|"), "AE", 102,
       "MSH-4 (source_organisation): 'R-K-B' is not an ODS code"},
      {"PID missing", Replace(a02, "PID|1||9990000026^^^NHS^NH||BROWN^Arthur^^^Mr||19380704|M\r",
                              ""),
       "AE", 100, "PID: segment is required"},
      {"PV1 missing", a02.substr(0, a02.find("PV1|")), "AE", 100, "PV1: segment is required"},
      {"no NHS number", Replace(a02, "9990000026^^^NHS^NH", "RKB555^^^RKB^MR"), "AE", 101,
       "PID-3: no NHS number"},
      {"NHS number fails Modulus 11", Replace(a02, "9990000026", "9990000019"), "AE", 102,
       "PID-3 (nhs_number): fails the Modulus 11 check"},
      {"NHS number 9 digits", Replace(a02, "9990000026", "999000002"), "AE", 102,
       "PID-3 (nhs_number): must be exactly 10 digits"},
      {"NHS number with letters", Replace(a02, "9990000026", "99900000AB"), "AE", 102,
       "PID-3 (nhs_number)"},
      {"visit number missing", Replace(a01, "SP-2025-0001^^^RKB^VN", ""), "AE", 101,
       "PV1-19 (admission.encounter_id): is required"},
      {"bad EVN-6", Replace(a01, "||||20250610091500+0100", "||||2025-06-10"), "AE", 102,
       "EVN-6: '2025-06-10' is not an HL7 date/time"},
      {"EVN-6 in the future", Replace(a01, "||||20250610091500+0100", "||||20990101000000+0000"),
       "AE", 102, "EVN-6 (occurred_at): is"},
      {"bad MSH-7", Replace(Replace(a40, "EVN|A40|20250621150000+0100\r", ""),
                            "20250621150000+0100", "yesterday"),
       "AE", 102, "MSH-7: 'yesterday'"},
      {"discharge without disposition", Replace(a03, "|54|VM1AB|", "||VM1AB|"), "AE", 101,
       "PV1-36: discharge disposition is required"},
      {"unknown disposition", Replace(a03, "|54|VM1AB|", "|ZZ|VM1AB|"), "AE", 103,
       "PV1-36: discharge disposition 'ZZ' is not a known code"},
      {"discharged-to not ODS", Replace(a03, "|54|VM1AB|", "|54|Sunny View Care Home|"), "AE",
       102, "PV1-37"},
      {"transfer without location", Replace(a02, "Ward 10^^Bed 2^RKB01", ""), "AE", 101,
       "PV1-3 (transfer.to): is required"},
      {"bad birth date", Replace(a28, "19850505", "19851332"), "AE", 102, "PID-7: date of birth"},
      {"bad sex code", Replace(a28, "|19850505|F|", "|19850505|X|"), "AE", 103,
       "PID-8: administrative sex 'X'"},
      {"merge without MRG", a40.substr(0, a40.find("MRG|")), "AE", 100,
       "MRG: segment is required"},
      {"merge without retired NHS number", Replace(a40, "MRG|9990000131^^^NHS^NH", "MRG|X^^^RKB^MR"),
       "AE", 101, "MRG-1: no retired NHS number"},
      {"merge into itself", Replace(a40, "MRG|9990000131", "MRG|9990000123"), "AE", 102,
       "MRG-1 (nhs_number_merge.retired_nhs_number): must differ"},
      {"merge retired invalid", Replace(a40, "MRG|9990000131", "MRG|9990000132"), "AE", 102,
       "MRG-1 (nhs_number_merge.retired_nhs_number): fails the Modulus 11"},
      {"two merge groups", a40 + "PID|2||9990000158^^^NHS^NH\rMRG|9990000166^^^NHS^NH\r", "AE",
       100, "more than one PID/MRG group"},
      {"practice not ODS", Replace(a01, "Forest Medical Centre^^^^^^^^^M85011", "Forest Surgery"),
       "AE", 102, "PD1-3 (gp_registration.practice)"},
      {"control character", Replace(a02, "Ward 10^", "Ward\\X01\\10^"), "AE", 102,
       "PV1-3 (transfer.to.ward): contains a control character"},
      {"field over 4000 bytes", Replace(a02, "Ward 10^", std::string(5000, 'W') + "^"), "AE", 102,
       "PV1-3 (transfer.to.ward): 5000 bytes exceeds the limit"},
      {"bad expected admission date", Replace(a05, "PV2||||||||20250701", "PV2||||||||20250732"),
       "AE", 102, "PV2-8"},
  };
}

TEST(MllpE2eTest, MalformedInputSuite) {
  Hl7Broker b;
  const auto cases = BadCases();
  ASSERT_GE(cases.size(), 40u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    MllpClient client(b.mllp_port());
    auto start = std::chrono::steady_clock::now();
    std::string raw = client.Call(c.input);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1000));
    ParsedAck ack = MustParseAck(raw);
    EXPECT_EQ(ack.msa1, c.msa1) << raw;
    ASSERT_EQ(ack.err_codes.size(), 1u) << raw;
    EXPECT_EQ(ack.err_codes[0], c.err3) << raw;
    EXPECT_NE(ack.err_texts[0].find(c.text), std::string::npos)
        << "ERR-8 was: " << ack.err_texts[0];
    EXPECT_EQ(b.last_position(), 0u) << "something was stored";
  }
  EXPECT_EQ(b.mllp()->stats().acks_aa, 0u);
}

}  // namespace
}  // namespace icr::adapters::hl7
