// Hostile clients against the real icr-broker binary, where memory can be
// measured: a storm of large requests on many connections at once. gRPC's
// ResourceQuota (--grpc-memory-mb) must hold the broker's memory, and every
// call must end with an answer (processed, or shed with a status a client
// retries on); afterwards the broker serves as before.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "tests/support/broker_process.h"
#include "tests/support/test_support.h"

#ifndef ICR_BROKER_BINARY
#error "ICR_BROKER_BINARY must name the icr-broker executable"
#endif

namespace icr {
namespace {

using icr::testing::AdmissionEvent;
using icr::testing::BrokerProcess;
using icr::testing::Context;
using icr::testing::TempDir;
using icr::testing::TestNhsNumber;
using namespace std::chrono_literals;

struct Storm {
  long baseline_kb = 0;  // RSS before
  long peak_kb = 0;      // VmHWM after
  std::map<grpc::StatusCode, int> codes;
  std::map<grpc::StatusCode, std::string> messages;  // one per code
  std::string log;
};

// `clients` connections each send one `bytes`-byte Publish request at once
// (bytes that are not a valid request, so the broker answers as soon as it
// has read one); the broker runs with --grpc-memory-mb `quota_mb`.
Storm RunStorm(const std::string& dir, int quota_mb, int clients, size_t bytes) {
  BrokerProcess broker(ICR_BROKER_BINARY, dir + "/db-" + std::to_string(quota_mb),
                       dir + "/broker-" + std::to_string(quota_mb) + ".log",
                       {"--grpc-memory-mb", std::to_string(quota_mb)});
  Storm out;
  out.baseline_kb = broker.StatusKb("VmRSS");
  const std::string payload(bytes, '\xff');
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetMaxSendMessageSize(-1);
      auto channel =
          grpc::CreateCustomChannel(broker.address(), grpc::InsecureChannelCredentials(), args);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 60s);
      const grpc::Status status =
          icr::testing::GenericUnaryCall(channel, "/icr.v1.Broker/Publish", payload, &ctx);
      std::lock_guard<std::mutex> count(mu);
      ++out.codes[status.error_code()];
      out.messages[status.error_code()] = status.error_message().substr(0, 120);
    });
  }
  for (auto& t : threads) t.join();
  out.peak_kb = broker.StatusKb("VmHWM");
  // Still serving.
  auto stub = v1::Broker::NewStub(
      grpc::CreateChannel(broker.address(), grpc::InsecureChannelCredentials()));
  v1::PublishRequest req;
  *req.mutable_event() = AdmissionEvent(TestNhsNumber(1), "after-storm-" + std::to_string(quota_mb));
  v1::PublishResponse resp;
  auto ctx = Context();
  grpc::Status s = stub->Publish(ctx.get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  stub.reset();
  broker.Terminate();
  out.log = broker.Log();
  return out;
}

TEST(HostileClientsTest, AStormOfLargeRequestsIsHeldByTheMemoryQuota) {
  TempDir dir;
  constexpr int kClients = 48;
  constexpr size_t kBytes = 8u << 20;  // 384 MiB in flight in all
  const Storm wide = RunStorm(dir.path(), 4096, kClients, kBytes);
  const Storm tight = RunStorm(dir.path(), 64, kClients, kBytes);
  for (const Storm* s : {&wide, &tight}) {
    std::printf("quota %s: RSS %ld KiB before, peak %ld KiB;",
                s == &wide ? "4096 MiB" : "64 MiB", s->baseline_kb, s->peak_kb);
    for (const auto& [code, n] : s->codes) {
      std::printf(" code %d x %d (\"%s\")", code, n, s->messages.at(code).c_str());
    }
    std::printf("\n");
    int answered = 0;
    for (const auto& [code, n] : s->codes) {
      answered += n;
      // Read and refused by rule, or shed by gRPC: never a hang (the 60 s
      // deadline) and never an internal error.
      EXPECT_TRUE(code == grpc::StatusCode::INVALID_ARGUMENT ||
                  code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                  code == grpc::StatusCode::CANCELLED || code == grpc::StatusCode::UNAVAILABLE)
          << "code " << code << " x " << n;
    }
    EXPECT_EQ(answered, kClients);
  }
  // Every request was read with room to spare; the tight quota held memory
  // well below that.
  ASSERT_EQ(wide.codes.count(grpc::StatusCode::INVALID_ARGUMENT), 1u);
  EXPECT_EQ(wide.codes.at(grpc::StatusCode::INVALID_ARGUMENT), kClients);
#ifdef __SANITIZE_ADDRESS__
  // Under ASan freed memory is held in quarantine and counted in RSS: the
  // product's memory cannot be measured there (the normal build checks it).
  std::printf("ASan build: memory comparison skipped\n");
#else
  // Measured: 0.35-0.43 of the wide run's growth; 2/3 leaves room for a
  // loaded machine, where fewer of the wide run's requests overlap.
  EXPECT_LT(tight.peak_kb - tight.baseline_kb, (wide.peak_kb - wide.baseline_kb) * 2 / 3)
      << "the 64 MiB quota did not hold memory down";
#endif
}

}  // namespace
}  // namespace icr
