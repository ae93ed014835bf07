#!/usr/bin/env bash
# Installs the Debian packages the build, the demo, the tests and the benchmark need.
# Usage: hack/install-deps.sh   (as root; does nothing when everything is present)
set -euo pipefail

packages=(
  libseccomp-dev pkg-config   # libcontainer links libseccomp
  libssl-dev                  # registry pulls: TLS through OpenSSL (native-tls)
  busybox-static              # rootfs of demo and test bundles
  runc python3                # the benchmark: its baseline, and its timing (hack/bench.py)
  containerd umoci            # containerd integration tests: a private containerd, local images
  strace                      # fault-injection tests: SIGKILL at syscall boundaries
  gcc libc6-dev               # seccomp tests: a static syscall probe (integration/probe)
  docker-registry skopeo      # registry tests: a real registry on loopback, images pushed to it
  apache2-utils openssl       # registry tests: htpasswd for basic auth, a private CA for TLS
  prometheus-node-exporter    # metrics tests: node_exporter's textfile collector, started by the test
  prometheus                  # metrics tests: promtool check metrics
  protobuf-compiler           # CRI tests: protoc for the CRI client's generated code
  shellcheck                  # CI: the scripts are shellcheck-clean
  dpkg-dev lintian rpm squashfs-tools  # hack/package.sh: the .deb (dpkg-shlibdeps), the .rpm, the sysext image
  etcd-server curl            # report-node tests: etcd for kube-apiserver (hack/kube-apiserver.sh), admin requests
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "install-deps: cargo (Rust toolchain) is required" >&2; exit 1; }
