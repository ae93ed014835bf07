#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests that drive the real binary
# (real namespaces, mounts and cgroups: run as root). Usage: hack/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: the tests create namespaces and mounts; run as root" >&2; exit 1; }
hack/install-deps.sh
# The boot tests' Debian root (integration/boot.rs): debootstrapped once (~90 s), then cached.
hack/boot-root.sh build >/dev/null
# The same build as hack/build.sh (release, every target): after it, nothing is compiled again.
# --no-fail-fast: one run shows every failing test binary, not only the first.
exec timeout 1800 cargo test --release --no-fail-fast "$@"
