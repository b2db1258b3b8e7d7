// hl7_test_server: a broker (RocksDB in a temp dir, gRPC on a free port) and
// the MLLP listener on a free loopback port, for tests with MLLP clients we
// did not write (tests/adapters/hl7/node). Prints "MLLP_PORT=<port>" on one
// line, then serves until standard input is closed, then prints how many
// events were stored ("STORED=<n>") and exits.
#include <cstdio>
#include <iostream>
#include <string>

#include "tests/adapters/hl7/hl7_test_util.h"

int main() {
  try {
    icr::adapters::hl7::testing::Hl7Broker broker;
    std::printf("MLLP_PORT=%d\n", broker.mllp_port());
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
    }
    const uint64_t stored = broker.last_position();
    broker.Shutdown();
    std::printf("STORED=%llu\n", static_cast<unsigned long long>(stored));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hl7_test_server: %s\n", e.what());
    return 1;
  }
}
