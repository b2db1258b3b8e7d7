#!/usr/bin/env bash
# Set-up command 2: install what is missing, build, and run every test
# through ctest; then the suite again under ASan+UBSan and the concurrent
# core under TSan (deploy/test-sanitizers.sh; ICR_SANITIZERS=0 skips that).
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
BUILD_DIR="${ICR_BUILD_DIR:-build}"
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 600 -j"${ICR_TEST_JOBS:-2}" "$@"
if [ "${ICR_SANITIZERS:-1}" != 0 ]; then
  deploy/test-sanitizers.sh
fi
