#!/usr/bin/env bash
# Configures and builds ICR Broker into ./build (RelWithDebInfo, Ninja, -j2).
# Usage: deploy/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${ICR_BUILD_DIR:-build}"
JOBS="${ICR_JOBS:-2}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${ICR_BUILD_TYPE:-RelWithDebInfo}" \
  -DICR_BUILD_TESTS=ON "$@"
cmake --build "$BUILD_DIR" -j"$JOBS"
