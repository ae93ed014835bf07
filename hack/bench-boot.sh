#!/usr/bin/env bash
# Boot time to the orchestrator: from systemd's start to the stand-in kubelet.service's start in
# an nspawn guest (integration/boot.rs), with no settings (the unit is skipped) and with 0, 1
# and 8 bootstrap containers of `true`. Prints RUNS rounds (default 3), one boot each; never
# asserted.
# Usage: hack/bench-boot.sh [RUNS]   (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
[ "$(id -u)" = 0 ] || { echo "bench-boot.sh: booting a guest needs root" >&2; exit 1; }
hack/boot-root.sh build >/dev/null
cargo build --release --quiet --test integration
for ((i = 1; i <= runs; i++)); do
  echo "run $i"
  # One test at a time: nothing else competes for the 2 cores.
  cargo test --release --quiet --test integration boot::boot_time_to_the_orchestrator -- --exact --nocapture \
    --test-threads=1 2>&1 | grep '^boot time'
done
