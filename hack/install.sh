#!/usr/bin/env bash
# Builds and installs bootstrap-runc, bootstrap-supervisor, the containerd shim wrapper and the
# systemd units.
# Usage: [DESTDIR=dir] hack/install.sh [--now] [PREFIX]
#   (PREFIX: default /usr/local; as root for system prefixes. --now also mounts the read-only
#   install at once, as `systemctl enable --now` of its mount unit would; not with DESTDIR.)
#   PREFIX/lib/bootstrap-runc/bootstrap-runc      the runtime; runc -> bootstrap-runc beside it
#                                                 (the shim's runc)
#   PREFIX/lib/bootstrap-runc/bootstrap-supervisor  the supervisor (its runtime processes are
#                                                 forks of it: protected as installed too)
#   PREFIX/bin/bootstrap-runc, PREFIX/bin/bootstrap-supervisor -> ../lib/bootstrap-runc/...
#   PREFIX/bin/containerd-shim-bootstrap-v1       (--runtime io.containerd.bootstrap.v1)
#   PREFIX/lib/systemd/system/bootstrap-containers.{service,target}, drop-ins for kubelet, ecs
#     and containerd (on systemd's search path for PREFIX=/usr/local), and the mount unit that
#     makes PREFIX/lib/bootstrap-runc read-only (packaging/systemd/bootstrap-runc.mount.in)
# DESTDIR stages the files under another root (a guest image): the units still name PREFIX.
set -euo pipefail
cd "$(dirname "$0")/.."
now=
if [ "${1:-}" = --now ]; then
  now=1
  shift
fi
prefix=${1:-/usr/local}
prefix=${prefix%/}
dest=${DESTDIR:-}
[ -z "$now" ] || [ -z "$dest" ] || { echo "install.sh: --now mounts on this host, not under DESTDIR" >&2; exit 2; }
# BIN_DIR=dir installs already built binaries (the tests do).
bin_dir=${BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  hack/install-deps.sh
  hack/build.sh
  bin_dir=target/release
fi
case $prefix in
  /*) prefix=$(realpath -m "$prefix") ;; # as systemd names the mount unit: no //, /./, /../
  *) echo "install.sh: PREFIX must be absolute: $prefix" >&2; exit 2 ;;
esac
lib=$prefix/lib/bootstrap-runc
empty=$prefix/share/bootstrap-runc/empty
units=$prefix/lib/systemd/system
if command -v systemd-escape >/dev/null; then
  mount_unit=$(systemd-escape --path --suffix=mount "$lib")
else # the same escaping, for the paths it is simple on
  [[ $lib =~ ^/[A-Za-z0-9_][A-Za-z0-9/_.-]*$ ]] ||
    { echo "install.sh: PREFIX needs systemd-escape (systemd) for its characters: $prefix" >&2; exit 2; }
  mount_unit=$(printf %s "${lib#/}" | sed -e 's/-/\\x2d/g' -e 's#/#-#g').mount
fi

# A mounted read-only install is replaced underneath and mounted again, also when the install
# fails. Lazily unmounted: runtimes still running keep the binary they started from. With
# --now, the install is mounted when done.
remount() {
  if [ -d /run/systemd/system ] && systemctl daemon-reload 2>/dev/null &&
    systemctl cat "$mount_unit" >/dev/null 2>&1; then
    systemctl restart "$mount_unit"
  else
    mount -t overlay overlay -o "$(sed -n 's/^Options=//p' "$units/$mount_unit")" "$lib"
  fi
}
if [ -z "$dest" ] && mountpoint -q "$lib"; then
  while mountpoint -q "$lib"; do umount -l "$lib"; done
  trap remount EXIT
elif [ -n "$now" ]; then
  trap '[ $? != 0 ] || remount' EXIT
fi
install -D -m 0755 "$bin_dir/bootstrap-runc" "$bin_dir/bootstrap-supervisor" -t "$dest$lib"
ln -sfn bootstrap-runc "$dest$lib/runc"
# The overlay's second, empty lower layer: whatever it held would appear beside the runtime.
install -d -m 0755 "$dest$empty" "$dest$prefix/bin"
[ -z "$(ls -A "$dest$empty")" ] || { echo "install.sh: $dest$empty is not empty" >&2; exit 1; }
for binary in bootstrap-runc bootstrap-supervisor; do
  ln -sfn "../lib/bootstrap-runc/$binary" "$dest$prefix/bin/$binary"
done
install -D -m 0755 packaging/containerd/containerd-shim-bootstrap-v1 "$dest$prefix/bin/containerd-shim-bootstrap-v1"

rewrite() { # the units name /usr/local and its mount unit; installed, they name PREFIX
  sed -e "s#/usr/local/#$prefix/#g" -e "s#usr-local-lib-bootstrap\\\\x2drunc\\.mount#${mount_unit//\\/\\\\}#g" "$@"
}
for unit in bootstrap-containers.service bootstrap-containers.target; do
  rewrite "packaging/systemd/$unit" | install -D -m 0644 /dev/stdin "$dest$units/$unit"
done
rewrite packaging/systemd/bootstrap-runc.mount.in | install -D -m 0644 /dev/stdin "$dest$units/$mount_unit"
for dropin in packaging/systemd/*.service.d; do
  install -D -m 0644 "$dropin/10-bootstrap-containers.conf" "$dest$units/$(basename "$dropin")/10-bootstrap-containers.conf"
done
install -D -m 0644 README.md "$dest$prefix/share/doc/bootstrap-runc/README.md"
for doc in docs/*.md; do # the pages README.md links to
  install -D -m 0644 "$doc" "$dest$prefix/share/doc/bootstrap-runc/$doc"
done
echo "installed into $dest$prefix; enable with: systemctl enable --now '$mount_unit';" \
  "systemctl enable bootstrap-containers.service bootstrap-containers.target"
