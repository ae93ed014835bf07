#!/usr/bin/env bash
# The one build that the demo, the benchmarks, hack/install.sh and the tests share: the release
# profile with every target, so dependencies resolve with the test targets' features too and
# `cargo test --release` afterwards compiles nothing again (and the other way round).
# Usage: hack/build.sh   (binaries in ${CARGO_TARGET_DIR:-target}/release/)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo build --release --all-targets --quiet
