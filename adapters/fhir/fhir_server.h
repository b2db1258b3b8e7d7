// FhirServer: the FHIR R4 inbound endpoint. An HTTP/1.1 server (Boost.Beast,
// its own io_context and threads) that turns POSTed FHIR JSON into
// CareEvents (fhir_mapping.h) and publishes them through broker::Ingest, the
// broker's one ingest path (validation, idempotency, durable append).
//
//   icr::adapters::fhir::FhirOptions options;
//   options.listen = "127.0.0.1:8080";
//   std::unique_ptr<icr::adapters::fhir::FhirServer> fhir;
//   auto s = icr::adapters::fhir::FhirServer::Start(options, broker->ingest(), &fhir);
//   ...
//   fhir->Stop();  // before the broker shuts down
//
// Endpoints (docs/adapters/fhir.md has the profile, mapping tables and
// examples):
//   POST /fhir/r4/Patient | Encounter | ServiceRequest | Task   one resource
//   POST /fhir/r4                          a message, transaction or batch Bundle
//   GET  /fhir/r4/metadata                 CapabilityStatement
// A success is answered only after every event is durable: 201 Created
// (Location, ETag and X-ICR-Position headers) for a resource, 200 OK with a
// transaction-response or batch-response Bundle for a Bundle, and 200 OK with
// the original position for a resend. Errors carry an OperationOutcome:
// 400 (JSON, depth, duplicate keys, mapping, broker validation), 404, 405,
// 401 / 403 (the policy refuses the caller),
// 413 (body over max_body_bytes), 415 (XML or other media types), 503 with
// Retry-After (store unavailable), 500.
//
// TLS: with tls_certificate_file and tls_private_key_file set the endpoint
// serves HTTPS (TLS 1.2+); with tls_client_ca_file too, only clients with a
// certificate signed by that CA complete the handshake (mutual TLS), and
// their certificate's subject is the caller's identity (broker/identity.h)
// handed to Ingest::Publish. When the policy refuses the caller: 403
// (forbidden) or 401 (login), each with an OperationOutcome giving why.
//
// Thread-safety: Start, port and Stop may be called from any thread; Stop is
// idempotent and the destructor calls it. The Ingest must outlive Stop().
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "icr/v1/events.pb.h"
#include "store/status.h"

namespace icr::broker {
class Ingest;
}  // namespace icr::broker

namespace icr::adapters::fhir {

class RestHookManager;

struct FhirOptions {
  // host:port to listen on (IPv4, or [IPv6]); port 0 picks a free port (see
  // FhirServer::port). Default: 127.0.0.1:8080.
  std::string listen = "127.0.0.1:8080";
  // Largest request body; larger ones get 413. Default: 1 MiB.
  size_t max_body_bytes = size_t{1} << 20;
  // Deepest JSON nesting ({} is depth 1); deeper bodies get 400 before any
  // DOM is built. Default: 32.
  int max_json_depth = 32;
  // Care setting of senders that do not send X-ICR-Care-Setting.
  // Default: ACUTE.
  icr::v1::CareSetting default_care_setting = icr::v1::ACUTE;
  // I/O threads. Default: 2.
  int threads = 2;
  // Longest wait for a whole request (headers and body) on a connection,
  // idle keep-alive time included; then the connection is closed.
  // Default: 30,000 ms.
  int read_timeout_ms = 30000;
  // Longest time to write a response. Default: 30,000 ms.
  int write_timeout_ms = 30000;
  // On Stop, how long requests being processed may take to be answered.
  // Default: 30,000 ms.
  int drain_timeout_ms = 30000;
  // Retry-After on 503 answers, in seconds. Default: 5.
  int retry_after_seconds = 5;
  // Connections beyond this are closed at once. Default: 1,024.
  size_t max_connections = 1024;
  // Rest-hook subscriptions (POST /fhir/r4/Subscription, DELETE
  // /fhir/r4/Subscription/<id>); nullptr: those endpoints answer 501.
  // Must outlive the server's Stop(). Default: nullptr.
  RestHookManager* resthooks = nullptr;
  // TLS: both set = HTTPS (TLS 1.2+) with this PEM certificate chain and
  // key. Default: empty (plain HTTP).
  std::string tls_certificate_file;
  std::string tls_private_key_file;
  // With TLS: PEM CA bundle; when set, clients must present a certificate
  // signed by it (mutual TLS). Default: empty (no client certificates).
  std::string tls_client_ca_file;
};

class FhirServer {
 public:
  // Binds, starts the threads and begins accepting. kInvalidArgument for bad
  // options, kUnavailable when the address cannot be bound.
  // REQUIRES: ingest != nullptr; out != nullptr.
  static store::Status Start(const FhirOptions& options, broker::Ingest* ingest,
                             std::unique_ptr<FhirServer>* out);

  ~FhirServer();
  FhirServer(const FhirServer&) = delete;
  FhirServer& operator=(const FhirServer&) = delete;

  // The bound port.
  int port() const;

  // Stops accepting, closes idle connections, waits (up to
  // drain_timeout_ms) until requests being processed are answered, then
  // stops the threads. Idempotent.
  // REQUIRES: not called on one of the server's own threads.
  void Stop();

  struct Core;  // implementation; public only for the .cc file's helpers

 private:
  explicit FhirServer(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;
};

}  // namespace icr::adapters::fhir
