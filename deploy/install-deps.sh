#!/usr/bin/env bash
# Installs the Debian 12 packages ICR Broker builds and tests with.
# Idempotent and non-interactive: does nothing when everything is present.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git python3
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libboost-dev libboost-system-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libyaml-cpp-dev
  clang-14 libclang-rt-14-dev libfuzzer-14-dev
  libasan8 libubsan1 libtsan2
  openssl libssl-dev curl
  # Optional: client libraries of the peers icr_peer_bench compares with
  # (Redis, RabbitMQ, NATS). Clients only: the servers are installed by hand
  # for a benchmark run (tests/bench/run_peers.sh prints the apt-get command).
  libhiredis-dev librabbitmq-dev libnats-dev
)
# Test clients from npm (a real MLLP client) need node and npm; a machine
# that already has them (e.g. from nodesource) keeps its own.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
