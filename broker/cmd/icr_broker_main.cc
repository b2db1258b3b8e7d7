// icr-broker: the daemon. Flags, or a config file (--config, TOML-style
// key = value lines using the long flag names), choose the data directory,
// listen address and durability. SIGTERM or SIGINT shuts down gracefully.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "broker/broker.h"

int main(int argc, char** argv) {
  icr::broker::BrokerOptions options;
  std::string durability = "sync";
  bool production = false;

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
  app.add_flag("--production", production,
               "Production profile: refuse NHS numbers from the 999 test range");
  app.add_option("--max-event-bytes", options.validation.max_event_bytes,
                 "Largest serialized event accepted")
      ->capture_default_str();
  app.add_option("--shutdown-grace-ms", options.shutdown_grace_ms,
                 "How long in-flight calls may take to finish on shutdown")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

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
  std::fprintf(stderr,
               "icr-broker %s ready: gRPC on %s (port %d), data in %s, durability %s%s\n",
               ICR_VERSION, options.listen_address.c_str(), server->port(),
               options.data_dir.c_str(), durability.c_str(),
               production ? ", production profile" : ", development profile (plaintext, loopback)");
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "icr-broker: %s received, shutting down\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  server->Shutdown();
  std::fprintf(stderr, "icr-broker: stopped cleanly\n");
  return 0;
}
