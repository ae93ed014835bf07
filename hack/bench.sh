#!/usr/bin/env bash
# bootstrap-runc against runc, same bundles, same run, A/B alternating (hack/bench.py): median
# wall and CPU time and both ratios, for
#   run /bin/true on a `runc spec` config with terminal false (devpts, shm, mqueue, sysfs,
#     masked and read-only paths), the headline row;
#   run /bin/true on the lean bundle of hack/make-bundle.sh;
#   create, start and delete on the runc spec config, each timed alone;
#   run /bin/true on the runc spec config with bootstrap-runc installed by hack/install.sh and
#     its mount unit mounted (read-only: the runtime starts protected, without its re-exec);
#   run /bin/true with ~500 more mounts on the host (the recursive clone of the host root
#     grows with them), made in a private mount namespace so the host never sees them.
# Usage: hack/bench.sh [RUNS]  (as root; default 60 runs of each, after 5 to warm up)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }
runs=${1:-60}
hack/install-deps.sh
hack/build.sh
ours=${CARGO_TARGET_DIR:-$PWD/target}/release/bootstrap-runc

work=$(mktemp -d /tmp/bootstrap-runc-bench.XXXXXX)
cleanup() {
  unmount_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT
hack/make-bundle.sh "$work/lean" /bin/true
mkdir -p "$work/state" "$work/mnt" "$work/many"
hack/make-spec-bundle.sh "$work/spec"
# State roots on a tmpfs, as /run is on a real host.
mount -t tmpfs tmpfs "$work/state"

BIN_DIR=$(dirname "$ours") hack/install.sh --now "$work/installed" >/dev/null

python3 hack/bench.py "$runs" "$ours" "$work" run-spec run-installed run-lean lifecycle
# shellcheck disable=SC2016 # the inner shell expands it
unshare --mount --propagation private sh -c '
  for i in $(seq 500); do mkdir "$2/many/$i" && mount -t tmpfs -o size=4k many "$2/many/$i"; done
  echo "(with $(wc -l </proc/self/mountinfo) mounts)"
  exec python3 hack/bench.py "$1" "$3" "$2" run-mounts' sh "$runs" "$work" "$ours"
