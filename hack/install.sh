#!/usr/bin/env bash
# Builds and installs bootstrap-runc and its containerd shim wrapper.
# Usage: hack/install.sh [PREFIX]   (default /usr/local; as root for system prefixes)
#   PREFIX/bin/bootstrap-runc
#   PREFIX/bin/containerd-shim-bootstrap-v1     (--runtime io.containerd.bootstrap.v1)
#   PREFIX/lib/bootstrap-runc/runc -> ../../bin/bootstrap-runc   (the shim's runc)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
# BIN=path installs an already built binary (the tests do).
bin=${BIN:-}
if [ -z "$bin" ]; then
  hack/install-deps.sh
  cargo build --release --quiet
  bin=target/release/bootstrap-runc
fi
install -D -m 0755 "$bin" "$prefix/bin/bootstrap-runc"
install -D -m 0755 packaging/containerd/containerd-shim-bootstrap-v1 "$prefix/bin/containerd-shim-bootstrap-v1"
mkdir -p "$prefix/lib/bootstrap-runc"
ln -sfn ../../bin/bootstrap-runc "$prefix/lib/bootstrap-runc/runc"
echo "installed bootstrap-runc into $prefix"
