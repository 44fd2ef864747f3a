#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, then
#  1. a ThreadSanitizer build runs the tests where threads share memory (the two-thread tower exchange, the batch
#     prefetcher's background thread, and the data-parallel allreduce's progress thread under mpirun, with an
#     instrumented alexnet-mpi);
#  2. the release build (numeric code is far too slow in debug) runs every XCTest, including the ones that start the
#     binary and mpirun (2, 3 and 4 ranks).
# Extra arguments go to the release `swift test` (e.g. --filter AlexNetTests.RunGuardTests).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --no-run

# 1. ThreadSanitizer (a debug build of its own, in .build-tsan).
swift build --sanitize=thread --build-tests --scratch-path .build-tsan
TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
  swift test --sanitize=thread --scratch-path .build-tsan --skip-build --disable-swift-testing \
  --filter 'AlexNetTests\.(ThreadTowerExchangeTests|ProgressThreadTests|PrefetchTests/testErrorOnTheBackgroundThread)'

# 2. Everything, from the release build. XCTest only (the suite has no Swift Testing tests): its summary is the last
# line CI reads.
swift build -c release --build-tests
swift test -c release --skip-build --disable-swift-testing "$@"
