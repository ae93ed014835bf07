#!/usr/bin/env bash
# Median wall time of `run` of /bin/true: bootstrap-runc against runc, same busybox bundle,
# same run, alternating so both see the same machine. Usage: hack/bench.sh [RUNS]  (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }
runs=${1:-100}
hack/install-deps.sh
cargo build --release --quiet
ours=$PWD/target/release/bootstrap-runc

work=$(mktemp -d /tmp/bootstrap-runc-bench.XXXXXX)
cleanup() {
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
hack/make-bundle.sh "$work/bundle" /bin/true
mkdir -p "$work/state" "$work/mnt"
# State roots on a tmpfs, as /run is on a real host.
mount -t tmpfs tmpfs "$work/state"

time_us() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "bench.sh: failed: $*" >&2; exit 1; }
  end=$(date +%s%N)
  echo $(( (end - start) / 1000 ))
}
run_ours() { time_us "$ours" --root "$work/state/ours" --host-mount-area "$work/mnt" --shared-dirs "" run --bundle "$work/bundle" bench; }
run_runc() { time_us runc --root "$work/state/runc" run --bundle "$work/bundle" bench; }

for _ in 1 2 3 4 5; do run_ours >/dev/null; run_runc >/dev/null; done
: > "$work/ours"; : > "$work/runc"
for ((i = 0; i < runs; i++)); do
  run_ours >> "$work/ours"
  run_runc >> "$work/runc"
done
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
m_ours=$(median "$work/ours")
m_runc=$(median "$work/runc")
awk -v o="$m_ours" -v r="$m_runc" -v n="$runs" 'BEGIN {
  printf "run /bin/true, %d runs each (median wall time)\n", n
  printf "  bootstrap-runc  %7.2f ms\n", o / 1000
  printf "  runc            %7.2f ms\n", r / 1000
  printf "  ratio           %7.2fx  (bootstrap-runc / runc)\n", o / r
}'
