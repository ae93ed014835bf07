#!/usr/bin/env bash
# Builds bootstrap-runc and runs a bootstrap container from a busybox bundle, then shows from
# the host what it did. The host's real / is the (read-only) host root; a scratch directory
# stands in for the mount area so the demo leaves the real /mnt alone.
# Usage: hack/demo.sh   (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
hack/install-deps.sh
cargo build --release --quiet
bin=$PWD/target/release/bootstrap-runc

demo=$(mktemp -d /tmp/bootstrap-runc-demo.XXXXXX)
cleanup() {
  "$bin" --root "$demo/state" delete --force demo >/dev/null 2>&1 || true
  grep -o " $demo[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT
mkdir -p "$demo/mnt"

hack/make-bundle.sh "$demo/bundle" sh -c '
  echo "== inside the bootstrap container"
  grep CapEff /proc/self/status
  echo "host os: $(head -n1 /.bottlerocket/rootfs/etc/os-release)"
  touch /.bottlerocket/rootfs/etc/demo 2>&1 | sed "s/^/host root write refused: /"
  echo "written by a bootstrap container" > /.bottlerocket/rootfs/mnt/hello.txt
  mkdir -p /.bottlerocket/rootfs/mnt/scratch
  mount -t tmpfs -o size=1m scratch /.bottlerocket/rootfs/mnt/scratch
  echo "mounted a tmpfs at /.bottlerocket/rootfs/mnt/scratch"
'

echo "== bootstrap-runc run (host mount area: $demo/mnt)"
"$bin" --root "$demo/state" --host-mount-area "$demo/mnt" run --bundle "$demo/bundle" demo
echo "exit code: $?"
echo "== on the host"
echo "$demo/mnt/hello.txt: $(cat "$demo/mnt/hello.txt")"
grep " $demo/mnt/scratch " /proc/self/mountinfo | awk '{print "mount left on the host by the container: " $5 " (" $9 ")"}'
