// BrokerServer: the ICR broker daemon as a library. Opens the store, starts
// the hub and the gRPC service (with grpc.health.v1 and reflection) on the
// configured address, and stops them in order.
//
//   icr::broker::BrokerOptions options;
//   options.data_dir = "./data";
//   std::unique_ptr<icr::broker::BrokerServer> server;
//   auto status = icr::broker::BrokerServer::Start(options, &server);
//   ...
//   server->Shutdown();  // stop accepting, drain, close streams, close store
//
// Thread-safety: Start, Shutdown and Wait may be called from any thread;
// Shutdown is idempotent.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "broker/escalation_timer.h"
#include "broker/tls.h"
#include "broker/validation.h"
#include "broker/workflow/state_machine.h"
#include "store/status.h"
#include "store/store.h"

namespace icr::broker {

class Ingest;
class Hub;

struct BrokerOptions {
  // RocksDB directory. Default: "./data".
  std::string data_dir = "./data";
  // gRPC listen address; port 0 picks a free port (see BrokerServer::port).
  // Default: 127.0.0.1:50051.
  std::string listen_address = "127.0.0.1:50051";
  // TLS on the gRPC listener (mutual TLS with a client CA): callers'
  // identities come from their certificates (broker/identity.h). Default:
  // plaintext (the daemon allows it only on loopback; docs/security-tls.md).
  TlsOptions tls;
  // The information governance policy (docs/governance.md): principals,
  // their scopes and minimisation profiles, retention. Reloaded by
  // BrokerServer::ReloadPolicy (SIGHUP, icrctl policy reload). Default:
  // empty, the development policy (every caller is 'local-developer'); a
  // policy is required with client certificates.
  std::string policy_file;
  // Production profile: TLS with client certificates on every listener, the
  // 999 test range of NHS numbers refused, no development principal.
  // Default: false (development).
  bool production = false;
  // The RocksDB Env the store uses (store::StoreOptions::env), for tests
  // that inject disk faults. Default: nullptr, the default Env.
  rocksdb::Env* store_env = nullptr;
  // Default: sync (acknowledge after WAL fsync).
  store::Durability durability = store::Durability::kSync;
  // Open a data directory whose write-ahead log is damaged before its end,
  // keeping what precedes the damage (store::StoreOptions). Default: false,
  // refuse to start and say so.
  bool accept_wal_damage = false;
  // Ingest rules.
  ValidationOptions validation;
  // Largest gRPC message accepted. Default: 16 MiB.
  int max_receive_message_bytes = 16 << 20;
  // Most calls (streams) open at once on one client connection (HTTP/2
  // SETTINGS_MAX_CONCURRENT_STREAMS): a client's further calls wait in its
  // own queue until one ends, so one connection cannot tie up the broker.
  // Default: 1,000.
  int max_streams_per_connection = 1000;
  // Memory gRPC may use for buffers across all connections (a
  // grpc::ResourceQuota); past it, new data is refused rather than the
  // broker growing without bound. Default: 2 GiB.
  size_t grpc_memory_bytes = size_t{2} << 30;
  // Keepalive enforcement: a client may ping at most this often while it has
  // calls open (with none open, gRPC allows one ping in 2 hours). A client
  // that pings faster gets 5 strikes, then GOAWAY (ENHANCE_YOUR_CALM,
  // "too_many_pings") and its calls end with UNAVAILABLE. Default: 10,000 ms.
  int min_client_ping_interval_ms = 10000;
  // Grace period for in-flight RPCs on shutdown. Default: 5,000 ms.
  int shutdown_grace_ms = 5000;
  // A subscriber stream whose write has waited this long (the subscriber
  // stopped reading) is cut off; it resumes from its cursor on reconnect.
  // 0: never. Default: 30,000 ms.
  uint32_t subscriber_write_timeout_ms = 30000;
  // The urgent lane's protection against bulk loads (store::StoreOptions):
  // the most of the writer's time BULK groups may take, and the largest
  // group without urgent events. Defaults: 0.3 and 512.
  double bulk_share = 0.3;
  size_t routine_batch_events = 512;
  // Discharge workflow deadlines (docs/workflow.md, "Timers").
  workflow::WorkflowOptions workflow;
  EscalationTimerOptions escalation;
};

class BrokerServer {
 public:
  static store::Status Start(const BrokerOptions& options, std::unique_ptr<BrokerServer>* out);

  virtual ~BrokerServer() = default;
  // The bound gRPC port.
  virtual int port() const = 0;
  // The ingest path, for in-process adapters (HL7 v2, FHIR) started beside
  // the gRPC service; valid until Shutdown returns.
  virtual Ingest* ingest() = 0;
  // The store and hub, for in-process delivery (e.g. FHIR rest-hook
  // notifications); valid until Shutdown returns.
  virtual store::EventStore* store() = 0;
  virtual Hub* hub() = 0;
  // Re-reads the policy file; a policy that does not load is refused with
  // the reason and the old one stays in force.
  virtual store::Status ReloadPolicy() = 0;
  // Blocks until Shutdown has finished.
  virtual void Wait() = 0;
  // Stops accepting, answers in-flight publishes, closes subscriber streams
  // with UNAVAILABLE (clients resume from their cursors) and closes the store.
  virtual void Shutdown() = 0;
};

}  // namespace icr::broker
