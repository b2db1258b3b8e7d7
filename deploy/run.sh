#!/usr/bin/env bash
# Set-up command 1: install what is missing, build, and start the broker on the
# embedded default (RocksDB in ./data, gRPC on 127.0.0.1:50051).
# Extra arguments go to icr-broker, e.g. deploy/run.sh --listen 127.0.0.1:50052
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
BUILD_DIR="${ICR_BUILD_DIR:-build}"
echo "run: starting icr-broker (Ctrl-C stops it cleanly); try: $BUILD_DIR/broker/cmd/icrctl status"
exec "$BUILD_DIR/broker/cmd/icr-broker" --data-dir "${ICR_DATA_DIR:-./data}" "$@"
