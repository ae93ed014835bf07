#!/usr/bin/env bash
# Builds and installs bootstrap-runc, bootstrap-supervisor, the containerd shim wrapper and the
# systemd units.
# Usage: hack/install.sh [PREFIX]   (default /usr/local; as root for system prefixes)
#   PREFIX/bin/bootstrap-runc, PREFIX/bin/bootstrap-supervisor
#   PREFIX/bin/containerd-shim-bootstrap-v1       (--runtime io.containerd.bootstrap.v1)
#   PREFIX/lib/bootstrap-runc/runc -> ../../bin/bootstrap-runc   (the shim's runc)
#   PREFIX/lib/systemd/system/bootstrap-containers.{service,target} and drop-ins for
#     kubelet, ecs and containerd (on systemd's search path for PREFIX=/usr/local)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
# BIN_DIR=dir installs already built binaries (the tests do).
bin_dir=${BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  hack/install-deps.sh
  hack/build.sh
  bin_dir=target/release
fi
for binary in bootstrap-runc bootstrap-supervisor; do
  install -D -m 0755 "$bin_dir/$binary" "$prefix/bin/$binary"
done
install -D -m 0755 packaging/containerd/containerd-shim-bootstrap-v1 "$prefix/bin/containerd-shim-bootstrap-v1"
mkdir -p "$prefix/lib/bootstrap-runc"
ln -sfn ../../bin/bootstrap-runc "$prefix/lib/bootstrap-runc/runc"

units=$prefix/lib/systemd/system
for unit in bootstrap-containers.service bootstrap-containers.target; do
  sed -e "s#/usr/local/bin/#$prefix/bin/#" -e "s#/usr/local/share/#$prefix/share/#" \
    "packaging/systemd/$unit" | install -D -m 0644 /dev/stdin "$units/$unit"
done
for dropin in packaging/systemd/*.service.d; do
  install -D -m 0644 "$dropin/10-bootstrap-containers.conf" "$units/$(basename "$dropin")/10-bootstrap-containers.conf"
done
install -D -m 0644 README.md "$prefix/share/doc/bootstrap-runc/README.md"
echo "installed into $prefix; enable with: systemctl enable bootstrap-containers.service bootstrap-containers.target"
