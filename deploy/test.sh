#!/usr/bin/env bash
# Set-up command 2: install what is missing, build, and run every test
# through ctest. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
BUILD_DIR="${ICR_BUILD_DIR:-build}"
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 600 -j"${ICR_TEST_JOBS:-2}" "$@"
