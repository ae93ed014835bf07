#!/usr/bin/env bash
# Median wall time of `ctr run --rm` of a trivial container through a private containerd, with
# bootstrap-runc (as hack/install.sh installs it, its mount unit mounted: read-only, no
# re-exec; and the plain binary) and with runc as the runc shim's binary: same image, same run,
# alternating.
# Usage: hack/bench-containerd.sh [RUNS]   (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
[ "$(id -u)" = 0 ] || { echo "bench-containerd.sh: run as root" >&2; exit 1; }
runs=${1:-30}
hack/install-deps.sh
hack/build.sh
ours=$PWD/target/release/bootstrap-runc

work=$(mktemp -d /tmp/bootstrap-runc-bench-ctd.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  unmount_under "$work"
  for d in /sys/fs/cgroup/*/benchctd; do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/host/mnt"
# Before containerd's private mount namespace is made, so that it has the mount.
BIN_DIR=$(dirname "$ours") hack/install.sh --now "$work/installed" >/dev/null
installed=$work/installed/bin/bootstrap-runc
printf 'host-root = "%s"\nhost-mount-area = "%s"\n' "$work/host" "$work/host/mnt" > "$work/policy.toml"
containerd config default |
  sed -e "s#root = \"/var/lib/containerd\"#root = \"$work/root\"#" \
      -e "s#state = \"/run/containerd\"#state = \"$work/state\"#" \
      -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$work/containerd.sock\"#" \
      -e "s#path = \"/opt/containerd\"#path = \"$work/opt\"#" \
      -e 's#disabled_plugins = \[\]#disabled_plugins = ["io.containerd.grpc.v1.cri"]#' > "$work/config.toml"
BOOTSTRAP_RUNC_POLICY=$work/policy.toml unshare --mount --propagation private \
  sh -c "mount -t tmpfs tmpfs /run && exec containerd --config $work/config.toml" >"$work/containerd.log" 2>&1 &
pid=$!
ctr() { nsenter --mount="/proc/$pid/ns/mnt" ctr --address "$work/containerd.sock" -n benchctd "$@"; }
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done

hack/make-bundle.sh "$work/bb" true
(cd "$work" && umoci init --layout img && umoci new --image img:latest &&
  umoci unpack --image img:latest ub >/dev/null && cp -a bb/rootfs/. ub/rootfs/ &&
  umoci repack --image img:latest ub && umoci config --image img:latest --os linux --architecture amd64 &&
  tar -C img -cf busybox.tar .)
ctr images import --base-name local/busybox "$work/busybox.tar" >/dev/null

time_us() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "bench-containerd.sh: failed: $*" >&2; exit 1; }
  end=$(date +%s%N)
  echo $(( (end - start) / 1000 ))
}
run_with() { time_us ctr run --rm --runc-binary "$1" local/busybox:latest bench true; }
for _ in 1 2 3; do
  run_with "$installed" >/dev/null; run_with "$ours" >/dev/null; run_with "$(command -v runc)" >/dev/null
done
: > "$work/installed.us"; : > "$work/ours.us"; : > "$work/runc.us"
for ((i = 0; i < runs; i++)); do
  run_with "$installed" >> "$work/installed.us"
  run_with "$ours" >> "$work/ours.us"
  run_with "$(command -v runc)" >> "$work/runc.us"
done
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
awk -v i="$(median "$work/installed.us")" -v o="$(median "$work/ours.us")" \
  -v r="$(median "$work/runc.us")" -v n="$runs" 'BEGIN {
  printf "ctr run --rm of true through containerd, %d runs each (median wall time)\n", n
  printf "  bootstrap-runc, installed read-only  %7.2f ms  %5.2fx runc\n", i / 1000, i / r
  printf "  bootstrap-runc, plain binary         %7.2f ms  %5.2fx runc\n", o / 1000, o / r
  printf "  runc                                 %7.2f ms\n", r / 1000
}'
