#!/usr/bin/env bash
# Builds bootstrap-runc and bootstrap-supervisor and boots a demo: a settings file with two
# busybox bootstrap containers, run by the supervisor through bootstrap-runc, then shows what
# they did on the host. The host's real / is the (read-only) host root; a scratch directory
# stands in for the mount area, so the demo leaves the real /mnt alone.
# Usage: hack/demo.sh   (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
hack/install-deps.sh
hack/build.sh
bin=$PWD/target/release

demo=$(mktemp -d /tmp/bootstrap-containers-demo.XXXXXX)
cleanup() {
  unmount_under "$demo"
  rm -rf "$demo"
}
trap cleanup EXIT
mkdir -p "$demo/mnt"

# Like the Bottlerocket workshop: one container prepares the "ephemeral disk" area...
hack/make-bundle.sh "$demo/disk-setup" sh -c '
  grep CapEff /proc/self/status
  touch /.bottlerocket/rootfs/etc/demo 2>&1 | sed "s/^/host root stays read-only: /"
  mkdir -p /.bottlerocket/rootfs/mnt/scratch
  mount -t tmpfs -o size=1m scratch /.bottlerocket/rootfs/mnt/scratch
  echo "written by a bootstrap container" > /.bottlerocket/rootfs/mnt/scratch/hello.txt
  echo "mounted a tmpfs at /.bottlerocket/rootfs/mnt/scratch"
' >/dev/null
# ...and an essential one checks its user-data before the orchestrator may start.
# shellcheck disable=SC2016 # the container's shell expands it
hack/make-bundle.sh "$demo/check" sh -c '
  echo "user-data is $(wc -c < /.bottlerocket/bootstrap-containers/current/user-data) bytes"
  grep -q "cluster=demo" /.bottlerocket/bootstrap-containers/current/user-data
' >/dev/null

cat > "$demo/settings.toml" <<TOML
# Bottlerocket's settings shape; see docs/supervisor.md
[settings.bootstrap-containers.disk-setup]
source = "$demo/disk-setup"
mode = "once"
essential = false

[settings.bootstrap-containers.check]
source = "$demo/check"
mode = "always"
essential = true
user-data = "$(printf 'cluster=demo\n' | base64)"
depends-on = ["disk-setup"]
TOML
# A drop-in, as cloud-init's write_files would add it. No source: the user-data runs as a
# script, on the host's own tools.
mkdir -p "$demo/settings.d"
# shellcheck disable=SC2016 # the script's shell expands it
cat > "$demo/settings.d/50-host-script.toml" <<TOML
[settings.bootstrap-containers.host-script]
mode = "always"
user-data = "$(printf '#!/bin/sh\necho "source-less: user-data run as a script, with the host tools, e.g. $(command -v mount)"\n' | base64 -w0)"
TOML

echo "== bootstrap-supervisor plan"
"$bin/bootstrap-supervisor" plan --settings "$demo/settings.toml"
echo
echo "== bootstrap-supervisor run"
set +e
"$bin/bootstrap-supervisor" run --settings "$demo/settings.toml" --runtime "$bin/bootstrap-runc" \
  --state-dir "$demo/state" --run-dir "$demo/run" --host-mount-area "$demo/mnt" --shared-dirs "" \
  --metrics-file "$demo/bootstrap-containers.prom"
code=$?
set -e
echo "exit code: $code ($( [ $code = 0 ] && echo 'boot goes on' || echo 'boot halts'))"
echo
echo "== on the host"
echo "$demo/mnt/scratch/hello.txt: $(cat "$demo/mnt/scratch/hello.txt")"
grep " $demo/mnt/scratch " /proc/self/mountinfo | awk '{print "mount left by the container: " $5 " (" $9 ")"}'
echo "disk-setup mode after the run: $(grep -A2 'disk-setup\]' "$demo/settings.toml" | grep mode)"
echo "report: $(wc -c < "$demo/run/report.json") bytes of JSON in the run directory"
echo
echo "== bootstrap-supervisor status (this boot's record)"
"$bin/bootstrap-supervisor" status --state-dir "$demo/state" || true
echo
echo "== bootstrap-supervisor logs check"
"$bin/bootstrap-supervisor" logs check --state-dir "$demo/state"
echo
echo "== metrics (node_exporter textfile format)"
grep -v '^#' "$demo/bootstrap-containers.prom"
