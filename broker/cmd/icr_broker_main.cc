// icr-broker: the daemon. Flags, or a config file (--config, TOML-style
// key = value lines using the long flag names), choose the data directory,
// listen address and durability. SIGTERM or SIGINT shuts down gracefully.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include <vector>

#include "adapters/fhir/fhir_server.h"
#include "adapters/fhir/resthook.h"
#include "adapters/hl7/mllp_server.h"
#include "broker/broker.h"

int main(int argc, char** argv) {
  icr::broker::BrokerOptions options;
  std::string durability = "sync";
  bool production = false;
  icr::adapters::hl7::MllpOptions mllp;
  icr::adapters::fhir::FhirOptions fhir;

  CLI::App app{"icr-broker: integrated care record message broker (gRPC icr.v1.Broker)"};
  app.set_version_flag("--version", std::string(ICR_VERSION));
  app.set_config("--config", "", "Read options from a TOML file (keys are the long option names)");
  app.allow_config_extras(false);  // a misspelt key is an error, not ignored
  app.add_option("--data-dir", options.data_dir, "RocksDB data directory")
      ->capture_default_str()
      ->envname("ICR_DATA_DIR");
  app.add_option("--listen", options.listen_address, "gRPC listen address host:port")
      ->capture_default_str()
      ->envname("ICR_LISTEN");
  app.add_option("--durability", durability,
                 "sync: acknowledge after fsync (default); relaxed: fsync about every 100 ms")
      ->check(CLI::IsMember({"sync", "relaxed"}))
      ->capture_default_str()
      ->envname("ICR_DURABILITY");
  app.add_flag("--accept-wal-damage", options.accept_wal_damage,
               "Start on a data directory whose write-ahead log is damaged before its end: keep "
               "the events before the damage and lose what follows (copy the directory aside "
               "first; without this flag the broker refuses to start and says why)");
  app.add_flag("--production", production,
               "Production profile: refuse NHS numbers from the 999 test range");
  app.add_option("--max-event-bytes", options.validation.max_event_bytes,
                 "Largest serialized event accepted")
      ->capture_default_str();
  app.add_option("--max-streams-per-connection", options.max_streams_per_connection,
                 "most calls open at once on one client connection (more wait in the client)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  size_t grpc_memory_mb = options.grpc_memory_bytes >> 20;
  app.add_option("--grpc-memory-mb", grpc_memory_mb,
                 "memory gRPC may use for buffers across all connections, MiB")
      ->check(CLI::Range(64, 1 << 20))
      ->capture_default_str();
  app.add_option("--min-client-ping-interval-ms", options.min_client_ping_interval_ms,
                 "keepalive enforcement: clients pinging more often (5 strikes) are sent GOAWAY")
      ->check(CLI::Range(100, 3600000))
      ->capture_default_str();
  app.add_option("--shutdown-grace-ms", options.shutdown_grace_ms,
                 "How long in-flight calls may take to finish on shutdown")
      ->capture_default_str();
  app.add_option("--subscriber-write-timeout-ms", options.subscriber_write_timeout_ms,
                 "cut off a subscriber stream whose write has waited this long (it stopped "
                 "reading); it resumes from its cursor. 0: never")
      ->capture_default_str();
  app.add_option("--bulk-share", options.bulk_share,
                 "most of the store writer's time BULK events may take (0..1]; the rest is "
                 "kept for urgent and routine traffic during bulk loads")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  app.add_option("--routine-batch-events", options.routine_batch_events,
                 "largest write group without urgent events (smaller: urgent publishes wait "
                 "less during bulk loads; larger: faster bulk loads)")
      ->check(CLI::Range(1, 8192))
      ->capture_default_str();
  app.add_option("--mllp-listen", mllp.listen,
                 "HL7 v2 over MLLP listen address host:port, or 'off'")
      ->capture_default_str()
      ->envname("ICR_MLLP_LISTEN");
  std::string mllp_care_setting = "ACUTE";
  app.add_option("--mllp-care-setting", mllp_care_setting,
                 "care_setting of events received over MLLP")
      ->check(CLI::IsMember({"GP", "ACUTE", "COMMUNITY", "MENTAL_HEALTH", "SOCIAL_CARE",
                             "CARE_PROVIDER", "AMBULANCE"}))
      ->capture_default_str();
  app.add_option("--mllp-tls-cert", mllp.tls_certificate_file,
                 "MLLP: PEM certificate chain (turns TLS on, with --mllp-tls-key)");
  app.add_option("--mllp-tls-key", mllp.tls_private_key_file, "MLLP: PEM private key");
  app.add_option("--mllp-tls-client-ca", mllp.tls_client_ca_file,
                 "MLLP: PEM CA bundle; clients must then present a certificate (mutual TLS)");
  app.add_option("--fhir-listen", fhir.listen,
                 "FHIR R4 HTTP listen address host:port, or 'off'")
      ->capture_default_str()
      ->envname("ICR_FHIR_LISTEN");
  std::string escalations = "on";
  app.add_option("--escalations", escalations,
                 "Raise Escalation events when workflow deadlines pass (off: e.g. while "
                 "importing history)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str()
      ->envname("ICR_ESCALATIONS");
  app.add_option("--escalation-organisation", options.escalation.organisation,
                 "ODS code escalations are published under (the ICB's)")
      ->check([](const std::string& value) {
        std::string code = value;  // validation upper-cases it on ingest too
        return icr::broker::OdsCodeProblem(&code, "--escalation-organisation");
      })
      ->capture_default_str();
  double management_plan_hours = 24;
  app.add_option("--deadline-management-plan-hours", management_plan_hours,
                 "Escalate a referral not accepted within this many hours")
      ->check(CLI::Range(0.01, 24.0 * 365))
      ->capture_default_str();
  double forward_minutes = 60;
  app.add_option("--deadline-forward-minutes", forward_minutes,
                 "Escalate a referral not forwarded to brokerage within this many minutes")
      ->check(CLI::Range(1.0, 60.0 * 24 * 365))
      ->capture_default_str();
  std::vector<double> offer_days = {1, 2, 3};
  app.add_option("--deadline-offer-days", offer_days,
                 "Escalate when brokerage makes no offer within these days (pathways 1, 2, 3)")
      ->expected(3)
      ->check(CLI::Range(0.001, 365.0))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.grpc_memory_bytes = grpc_memory_mb << 20;
  options.escalation.enabled = escalations == "on";
  options.workflow.management_plan_seconds = static_cast<int64_t>(management_plan_hours * 3600);
  options.workflow.forward_to_brokerage_seconds = static_cast<int64_t>(forward_minutes * 60);
  for (int i = 0; i < 3; ++i) {
    options.workflow.offer_seconds[i + 1] = static_cast<int64_t>(offer_days[i] * 86400);
  }

  options.durability = durability == "sync" ? icr::store::Durability::kSync
                                            : icr::store::Durability::kRelaxed;
  options.validation.reject_test_nhs_numbers = production;

  // A closed log pipe or peer socket must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  // Block the stop signals in every thread; this one waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<icr::broker::BrokerServer> server;
  icr::store::Status s = icr::broker::BrokerServer::Start(options, &server);
  if (!s.ok()) {
    std::fprintf(stderr, "icr-broker: cannot start: %s\n", s.ToString().c_str());
    return 1;
  }
  // Adapters: the same ingest path as gRPC; rest-hook delivery rides the hub.
  std::unique_ptr<icr::adapters::fhir::RestHookManager> resthooks;
  std::unique_ptr<icr::adapters::hl7::MllpServer> mllp_server;
  std::unique_ptr<icr::adapters::fhir::FhirServer> fhir_server;
  auto stop_all = [&] {
    if (fhir_server) fhir_server->Stop();
    if (mllp_server) mllp_server->Stop();
    if (resthooks) resthooks->Stop();
    server->Shutdown();
  };
  s = icr::adapters::fhir::RestHookManager::Start(server->hub(), server->store(), &resthooks);
  icr::v1::CareSetting_Parse(mllp_care_setting, &mllp.care_setting);
  if (s.ok() && mllp.listen != "off") {
    s = icr::adapters::hl7::MllpServer::Start(mllp, server->ingest(), &mllp_server);
    if (!s.ok()) s = icr::store::Status(s.code(), "MLLP listener: " + s.message());
  }
  if (s.ok() && fhir.listen != "off") {
    fhir.resthooks = resthooks.get();
    s = icr::adapters::fhir::FhirServer::Start(fhir, server->ingest(), &fhir_server);
    if (!s.ok()) s = icr::store::Status(s.code(), "FHIR listener: " + s.message());
  }
  if (!s.ok()) {
    std::fprintf(stderr, "icr-broker: cannot start: %s\n", s.ToString().c_str());
    stop_all();
    return 1;
  }
  std::string adapters;
  if (mllp_server) {
    adapters += ", HL7 MLLP on port " + std::to_string(mllp_server->port()) +
                (mllp.tls_certificate_file.empty() ? "" : " (TLS)");
  }
  if (fhir_server) adapters += ", FHIR R4 on port " + std::to_string(fhir_server->port());
  std::fprintf(stderr,
               "icr-broker %s ready: gRPC on %s (port %d)%s, data in %s, durability %s%s\n",
               ICR_VERSION, options.listen_address.c_str(), server->port(), adapters.c_str(),
               options.data_dir.c_str(), durability.c_str(),
               production ? ", production profile" : ", development profile (plaintext, loopback)");
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "icr-broker: %s received, shutting down\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  stop_all();
  std::fprintf(stderr, "icr-broker: stopped cleanly\n");
  return 0;
}
