#!/usr/bin/env bash
# Fuzzes the settings parser, the policy function and the layer unpacker with cargo-fuzz, each
# for a bounded time. Seeds come from the hostile corpus (integration/hostile/); a crash is
# saved under fuzz/regressions/<target>/, where integration/hostile.rs replays it in CI (fix
# the bug, keep the input). Not part of CI: it needs a nightly toolchain and minutes per target.
#
# Usage: sudo hack/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(settings policy unpack)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
rustup toolchain list | grep -q nightly || { echo "fuzz.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "fuzz.sh: the unpacker target sets owners and device nodes; run as root" >&2; exit 1; }

# The fuzz build is its own workspace with its own target dir (fuzz/target); release with
# debug assertions, as cargo-fuzz builds by default with -O.
for t in "${targets[@]}"; do nice -n 10 cargo +nightly fuzz build -O --debug-assertions "$t"; done
bin="fuzz/target/x86_64-unknown-linux-gnu/release"

seeds() {
  case "$1" in
    settings) echo integration/hostile/settings ;;
    policy) echo integration/hostile/configs ;;
    unpack) echo integration/hostile/layers ;;
  esac
}

status=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "fuzz/regressions/$t"
  cp -n "$(seeds "$t")"/* "$corpus"/ 2>/dev/null || true
  log="fuzz/artifacts/$t.log"
  run=("$bin/$t" "$corpus" -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=4096
       -artifact_prefix="$PWD/$artifacts/" -print_final_stats=1)
  if [ "$t" = unpack ]; then
    # A layer that escaped would write to the host: give the fuzzer a private mount namespace
    # whose root is read-only (but for fuzz/, its corpus and artifacts) and whose /tmp (the
    # sandboxes checks.rs makes) is a fresh tmpfs.
    unshare --mount --propagation private sh -c '
      mount --bind fuzz fuzz &&
      mount -t tmpfs fuzz-tmp /tmp &&
      mount -o remount,bind,ro / &&
      exec "$@"' sh "${run[@]}" >"$log" 2>&1 || status=1
  else
    "${run[@]}" >"$log" 2>&1 || status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz.sh: $t: $runs executions in ${seconds}s (log: $log)"
  for crash in "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-*; do
    [ -e "$crash" ] || continue
    cp "$crash" "fuzz/regressions/$t/"
    echo "fuzz.sh: $t: saved $(basename "$crash") to fuzz/regressions/$t/; reproduce with: cargo +nightly fuzz run $t $crash" >&2
    status=1
  done
done
exit $status
