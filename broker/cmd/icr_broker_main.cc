// icr-broker: the daemon. Flags, or a config file (--config, TOML-style
// key = value lines using the long flag names), choose the data directory,
// listen address and durability. SIGTERM or SIGINT shuts down gracefully.
//
// Listener security (docs/security-tls.md): --tls-cert/--tls-key/
// --tls-client-ca serve every listener (gRPC, MLLP, FHIR) over mutual TLS,
// unless an adapter has its own --mllp-tls-* / --fhir-tls-* files.
// --production requires mutual TLS on every enabled listener; without it a
// plaintext listener is allowed only on a loopback address.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include <vector>

#include "adapters/fhir/fhir_server.h"
#include "adapters/fhir/resthook.h"
#include "adapters/hl7/mllp_server.h"
#include "broker/broker.h"
#include "broker/ingest.h"
#include "broker/tls.h"

namespace {

// One listener's security settings, for the start-up checks.
struct Listener {
  std::string name;         // "gRPC", "MLLP", "FHIR"
  std::string listen_flag;  // "--listen"
  std::string listen;
  icr::broker::TlsOptions tls;
  icr::broker::TlsOptionNames names;  // the flags its files came from
};

// The adapter's own TLS files when any of its --<prefix>-tls-* flags is
// given, else the global --tls-* ones.
Listener Resolve(std::string name, std::string listen_flag, std::string listen,
                 const std::string& prefix, const icr::broker::TlsOptions& own,
                 const icr::broker::TlsOptions& global) {
  Listener l{std::move(name), std::move(listen_flag), std::move(listen), global, {}};
  if (!own.certificate_file.empty() || !own.private_key_file.empty() ||
      !own.client_ca_file.empty()) {
    l.tls = own;
    l.names.certificate = "--" + prefix + "-tls-cert";
    l.names.private_key = "--" + prefix + "-tls-key";
    l.names.client_ca = "--" + prefix + "-tls-client-ca";
  }
  return l;
}

// Empty when the listeners may start under the profile; else why not.
std::string CheckListeners(const std::vector<Listener>& listeners, bool production,
                           bool have_policy, bool* any_plaintext) {
  *any_plaintext = false;
  for (const Listener& l : listeners) {
    const std::string which =
        "the " + l.name + " listener (" + l.listen_flag + " " + l.listen + ")";
    if (production) {
      const char* missing = nullptr;
      const std::string* flag = nullptr;
      if (l.tls.certificate_file.empty()) {
        missing = "certificate", flag = &l.names.certificate;
      } else if (l.tls.private_key_file.empty()) {
        missing = "private key", flag = &l.names.private_key;
      } else if (l.tls.client_ca_file.empty()) {
        missing = "client CA", flag = &l.names.client_ca;
      }
      if (missing != nullptr) {
        return "--production requires mutual TLS (client certificates) on every listener: " +
               which + " has no " + missing + "; give " + *flag;
      }
    }
    icr::broker::TlsFiles files;
    icr::store::Status s = icr::broker::LoadTlsFiles(l.tls, l.names, &files);
    if (!s.ok()) return l.name + " listener: " + s.message();
    if (!l.tls.enabled()) {
      *any_plaintext = true;
      if (!icr::broker::IsLoopbackListenAddress(l.listen)) {
        return which +
               " would be plaintext: plaintext listeners must be on loopback; give "
               "--tls-cert/--tls-key/--tls-client-ca, or listen on 127.0.0.1";
      }
    } else if (!l.tls.mutual() && !icr::broker::IsLoopbackListenAddress(l.listen)) {
      // Without client certificates every caller is the development
      // principal, which may do everything: never off loopback.
      return which +
             " has TLS without client certificates: its callers could not be identified, so it "
             "must be on loopback; give " + l.names.client_ca + ", or listen on 127.0.0.1";
    }
  }
  for (const Listener& l : listeners) {
    if (l.tls.mutual() && !have_policy) {
      return "the " + l.name + " listener (" + l.listen_flag + " " + l.listen +
             ") asks for client certificates (" + l.names.client_ca +
             "), which identify principals of a policy: give --policy FILE "
             "(docs/governance.md has a sample)";
    }
  }
  return {};
}

const char* SecurityNote(const icr::broker::TlsOptions& tls) {
  return tls.mutual() ? " with mutual TLS" : tls.enabled() ? " with TLS" : "";
}

}  // namespace

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
               "Production profile: refuse NHS numbers from the 999 test range, and require "
               "mutual TLS (--tls-cert, --tls-key, --tls-client-ca) on every listener");
  app.add_option("--policy", options.policy_file,
                 "Information governance policy (YAML): principals, scopes, minimisation "
                 "profiles, retention (docs/governance.md). Required with client certificates; "
                 "re-read on SIGHUP or `icrctl policy reload`. Default: none, every caller is "
                 "'local-developer'")
      ->envname("ICR_POLICY")
      ->check(CLI::ExistingFile);
  icr::broker::TlsOptions tls;
  app.add_option("--tls-cert", tls.certificate_file,
                 "PEM certificate chain of every listener (gRPC, MLLP, FHIR; an adapter's own "
                 "--mllp-tls-* / --fhir-tls-* take precedence): turns TLS on, with --tls-key")
      ->envname("ICR_TLS_CERT");
  app.add_option("--tls-key", tls.private_key_file, "PEM private key of --tls-cert")
      ->envname("ICR_TLS_KEY");
  app.add_option("--tls-client-ca", tls.client_ca_file,
                 "PEM CA bundle: clients must present a certificate signed by it (mutual TLS); "
                 "its subject (CN = principal, O = ODS code) is the caller's identity")
      ->envname("ICR_TLS_CLIENT_CA");
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
  icr::broker::TlsOptions mllp_tls;
  app.add_option("--mllp-tls-cert", mllp_tls.certificate_file,
                 "MLLP: PEM certificate chain (turns TLS on, with --mllp-tls-key); any "
                 "--mllp-tls-* replaces the --tls-* files for MLLP. Default: --tls-cert");
  app.add_option("--mllp-tls-key", mllp_tls.private_key_file,
                 "MLLP: PEM private key. Default: --tls-key");
  app.add_option("--mllp-tls-client-ca", mllp_tls.client_ca_file,
                 "MLLP: PEM CA bundle; clients must then present a certificate (mutual TLS). "
                 "Default: --tls-client-ca");
  app.add_option("--fhir-listen", fhir.listen,
                 "FHIR R4 HTTP listen address host:port, or 'off'")
      ->capture_default_str()
      ->envname("ICR_FHIR_LISTEN");
  icr::broker::TlsOptions fhir_tls;
  app.add_option("--fhir-tls-cert", fhir_tls.certificate_file,
                 "FHIR: PEM certificate chain (HTTPS, with --fhir-tls-key); any --fhir-tls-* "
                 "replaces the --tls-* files for FHIR. Default: --tls-cert");
  app.add_option("--fhir-tls-key", fhir_tls.private_key_file,
                 "FHIR: PEM private key. Default: --tls-key");
  app.add_option("--fhir-tls-client-ca", fhir_tls.client_ca_file,
                 "FHIR: PEM CA bundle; clients must then present a certificate (mutual TLS). "
                 "Default: --tls-client-ca");
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
  options.production = production;

  // Listener security: every enabled listener under the profile's rules,
  // and its files readable and matching, before anything starts.
  std::vector<Listener> listeners;
  listeners.push_back(Resolve("gRPC", "--listen", options.listen_address, "", {}, tls));
  if (mllp.listen != "off") {
    listeners.push_back(Resolve("MLLP", "--mllp-listen", mllp.listen, "mllp", mllp_tls, tls));
  }
  if (fhir.listen != "off") {
    listeners.push_back(Resolve("FHIR", "--fhir-listen", fhir.listen, "fhir", fhir_tls, tls));
  }
  bool any_plaintext = false;
  if (std::string problem =
          CheckListeners(listeners, production, !options.policy_file.empty(), &any_plaintext);
      !problem.empty()) {
    std::fprintf(stderr, "icr-broker: cannot start: %s\n", problem.c_str());
    return 1;
  }
  options.tls = listeners[0].tls;
  const icr::broker::TlsOptions mllp_effective =
      Resolve("MLLP", "", "", "mllp", mllp_tls, tls).tls;
  mllp.tls_certificate_file = mllp_effective.certificate_file;
  mllp.tls_private_key_file = mllp_effective.private_key_file;
  mllp.tls_client_ca_file = mllp_effective.client_ca_file;
  const icr::broker::TlsOptions fhir_effective =
      Resolve("FHIR", "", "", "fhir", fhir_tls, tls).tls;
  fhir.tls_certificate_file = fhir_effective.certificate_file;
  fhir.tls_private_key_file = fhir_effective.private_key_file;
  fhir.tls_client_ca_file = fhir_effective.client_ca_file;
  if (any_plaintext) {
    std::fprintf(stderr,
                 "WARNING: development profile: plaintext on loopback, no client certificates; "
                 "every caller acts as principal 'local-developer'\n");
  }

  // A closed log pipe or peer socket must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  // Block the stop signals in every thread; this one waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
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
  // Rest-hooks are scoped to, minimised for and audited as their owners.
  s = icr::adapters::fhir::RestHookManager::Start(server->hub(), server->store(),
                                                  server->ingest()->access(), {}, &resthooks);
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
                SecurityNote(mllp_effective);
  }
  if (fhir_server) {
    adapters += ", FHIR R4 on port " + std::to_string(fhir_server->port()) +
                SecurityNote(fhir_effective);
  }
  std::fprintf(stderr,
               "icr-broker %s ready: gRPC on %s (port %d)%s%s, data in %s, durability %s%s\n",
               ICR_VERSION, options.listen_address.c_str(), server->port(),
               SecurityNote(options.tls), adapters.c_str(), options.data_dir.c_str(),
               durability.c_str(),
               production      ? ", production profile (mutual TLS)"
               : any_plaintext ? ", development profile (plaintext, loopback)"
                               : ", development profile");
  int signal_number = 0;
  for (;;) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    // SIGHUP: re-read the policy; a bad one is refused and the old one stays.
    icr::store::Status reloaded = server->ReloadPolicy();
    if (reloaded.ok()) {
      std::fprintf(stderr, "icr-broker: SIGHUP: policy reloaded from %s\n",
                   options.policy_file.c_str());
    } else {
      std::fprintf(stderr, "icr-broker: SIGHUP: policy NOT reloaded, the old one stays: %s\n",
                   reloaded.ToString().c_str());
    }
  }
  std::fprintf(stderr, "icr-broker: %s received, shutting down\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  stop_all();
  std::fprintf(stderr, "icr-broker: stopped cleanly\n");
  return 0;
}
