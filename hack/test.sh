#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests that drive the real binary
# (real namespaces, mounts and cgroups: run as root).
# Usage: hack/test.sh                      the whole suite
#        hack/test.sh [cargo test args...] what they select, e.g. --test integration boot::
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: the tests create namespaces and mounts; run as root" >&2; exit 1; }
hack/install-deps.sh
# The boot tests' Debian root (integration/boot.rs): debootstrapped once (~90 s), then cached.
hack/boot-root.sh build >/dev/null
# The report-node tests' API server (integration/node_report.rs): built once (~4 min), then cached.
hack/kube-apiserver.sh build >/dev/null
if [ $# -gt 0 ]; then
  exec timeout 1800 cargo test --release --no-fail-fast "$@"
fi

# The same build as hack/build.sh (release, every target): after it, nothing is compiled again.
built=$(cargo test --release --no-run 2>&1 | tee /dev/stderr)
integration=$(sed -n 's/^ *Executable integration\/main.rs (\(.*\))$/\1/p' <<<"$built")
[ -x "$integration" ] || { echo "test.sh: no integration test binary in cargo's output" >&2; exit 1; }
# The integration areas (integration/main.rs) one after another, the tests of each in
# parallel: areas that start daemons, boot guests or time races never overlap. Every area
# runs whatever failed before it; the summary names the failures. The areas run the binary
# built above, so an edit made meanwhile is never compiled into the middle of a run.
deadline=$((SECONDS + 1800))
failed=()
step() {
  local name=$1; shift
  timeout $((deadline > SECONDS ? deadline - SECONDS : 1)) "$@" || failed+=("$name")
}
step unit cargo test --release --lib --bins
step doc cargo test --release --doc
mapfile -t areas < <(sed -n 's/^mod \([a-z_]*\);$/\1/p' integration/main.rs | grep -vx common)
for area in "${areas[@]}"; do
  echo "test.sh: $area" >&2
  step "$area" "$integration" "$area::"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: every test passed" >&2
