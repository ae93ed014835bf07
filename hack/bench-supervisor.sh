#!/usr/bin/env bash
# Wall time and peak memory (VmHWM) of the supervisor running N containers of /bin/true and N
# of `sleep 1` through bootstrap-runc, and its overhead over the longest container; then the
# fan-out against N raw `bootstrap-runc run` and N `runc run` of /bin/true in parallel
# (xargs -P N): median wall times of REPS rounds, alternating, and the ratios.
# Usage: hack/bench-supervisor.sh [N] [REPS]   (as root; default 32 and 7)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
[ "$(id -u)" = 0 ] || { echo "bench-supervisor.sh: run as root" >&2; exit 1; }
n=${1:-32}
reps=${2:-7}
hack/install-deps.sh
hack/build.sh
bin=$PWD/target/release

work=$(mktemp -d /tmp/bootstrap-supervisor-bench.XXXXXX)
cleanup() {
  unmount_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/run"
mount -t tmpfs tmpfs "$work/run"   # the run dir is a tmpfs on a real host
hack/make-bundle.sh "$work/true" /bin/true >/dev/null
hack/make-bundle.sh "$work/sleep" sleep 1 >/dev/null

bench() { # name bundle
  local settings=$work/$1.toml pid hwm=0 sample start end
  for ((i = 0; i < n; i++)); do
    printf '[settings.bootstrap-containers.bench-%s-%d]\nsource = "%s"\nmode = "always"\n' "$1" "$i" "$2"
  done > "$settings"
  rm -rf "$work/run/"*
  start=$(date +%s%N)
  "$bin/bootstrap-supervisor" run --settings "$settings" --runtime "$bin/bootstrap-runc" \
    --state-dir "$work/state" --run-dir "$work/run" --host-mount-area "$work/mnt" --shared-dirs "" >/dev/null 2>&1 &
  pid=$!
  while [ -e "/proc/$pid/status" ]; do
    sample=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    hwm=${sample:-$hwm}
    sleep 0.01
  done
  wait "$pid" || { echo "bench-supervisor.sh: the supervisor failed on $1" >&2; exit 1; }
  end=$(date +%s%N)
  awk -v ms="$(( (end - start) / 1000000 ))" -v kb="$hwm" -v name="$1" -v n="$n" -v longest="$3" 'BEGIN {
    printf "%2d x %-6s wall %6d ms  overhead over the longest container %5d ms  supervisor peak RSS %5.1f MiB\n",
      n, name, ms, ms - longest, kb / 1024 }'
}
bench true "$work/true" 0
bench sleep "$work/sleep" 1000

# Fan-out: the supervisor against N raw runs of each runtime, in parallel, same bundle.
for ((i = 0; i < n; i++)); do
  printf '[settings.bootstrap-containers.fan-%d]\nsource = "%s"\nmode = "always"\n' "$i" "$work/true"
done > "$work/fan.toml"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fan_supervisor() {
  rm -rf "$work/run/"*
  "$bin/bootstrap-supervisor" run --settings "$work/fan.toml" --runtime "$bin/bootstrap-runc" \
    --state-dir "$work/state" --run-dir "$work/run" --host-mount-area "$work/mnt" --shared-dirs "" >/dev/null 2>&1
}
fan_ours() {
  seq "$n" | xargs -P "$n" -I{} "$bin/bootstrap-runc" --root "$work/run/raw" \
    --host-mount-area "$work/mnt" --shared-dirs "" run --bundle "$work/true" raw-{} >/dev/null 2>&1
}
fan_runc() {
  seq "$n" | xargs -P "$n" -I{} runc --root "$work/run/runc" run --bundle "$work/true" runc-{} >/dev/null 2>&1
}
: > "$work/fan-supervisor"; : > "$work/fan-ours"; : > "$work/fan-runc"
for ((r = 0; r < reps; r++)); do
  for what in supervisor ours runc; do
    start=$(now_ms)
    "fan_$what" || { echo "bench-supervisor.sh: fan-out $what failed" >&2; exit 1; }
    echo $(( $(now_ms) - start )) >> "$work/fan-$what"
  done
done
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
awk -v s="$(median "$work/fan-supervisor")" -v o="$(median "$work/fan-ours")" \
  -v r="$(median "$work/fan-runc")" -v n="$n" -v reps="$reps" 'BEGIN {
  printf "%d x /bin/true at once, median of %d rounds:\n", n, reps
  printf "  supervisor %6.0f ms | %d parallel bootstrap-runc run %6.0f ms | %d parallel runc run %6.0f ms\n", s, n, o, n, r
  printf "  supervisor / parallel bootstrap-runc %4.2fx, supervisor / parallel runc %4.2fx\n", s / o, s / r
}'
