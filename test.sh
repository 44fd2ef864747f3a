#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds in release (numeric code is far too slow in debug),
# then runs every XCTest, including the ones that start the binary (and, later, mpirun).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --no-run
swift build -c release --build-tests
swift test -c release --skip-build "$@"
