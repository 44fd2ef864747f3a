#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds in release (numeric code is far too slow in debug),
# then runs every XCTest, including the ones that start the binary and mpirun (2, 3 and 4 ranks).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --no-run
swift build -c release --build-tests
# XCTest only (the suite has no Swift Testing tests): its summary is the last line CI reads.
swift test -c release --skip-build --disable-swift-testing "$@"
