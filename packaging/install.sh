#!/usr/bin/env bash
# Installs bootstrap-runc from a built tree: the release tarball unpacked, or the tree that
# `hack/package.sh tree` assembles (hack/install.sh, the .deb, the .rpm and the sysext image all
# install through this script, so they hold the same files).
# Usage: [DESTDIR=dir] install.sh [--now] [PREFIX]
#   PREFIX: default /usr/local; as root for system prefixes. --now also mounts the read-only
#   install at once, as `systemctl enable --now` of its mount unit would; not with DESTDIR.
#   DESTDIR stages the files under another root (a package, a guest image): the units and the
#   containerd example still name PREFIX. ZSH_COMPLETIONS: where zsh's completion goes under
#   PREFIX (default share/zsh/site-functions; Debian's is share/zsh/vendor-completions).
# What it installs:
#   PREFIX/lib/bootstrap-runc/bootstrap-runc        the runtime; runc -> bootstrap-runc beside
#                                                   it (the containerd shim's runc)
#   PREFIX/lib/bootstrap-runc/bootstrap-supervisor  the supervisor (its runtime processes are
#                                                   forks of it: protected as installed too)
#   PREFIX/bin/bootstrap-runc, PREFIX/bin/bootstrap-supervisor -> ../lib/bootstrap-runc/...
#   PREFIX/bin/containerd-shim-bootstrap-v1         (--runtime io.containerd.bootstrap.v1)
#   PREFIX/lib/systemd/system/                      bootstrap-containers.{service,target}, the
#     drop-ins for kubelet, ecs and containerd, and the mount unit that makes
#     PREFIX/lib/bootstrap-runc read-only (bootstrap-runc.mount.in); PREFIX/share/bootstrap-runc/empty
#     is that mount's second, empty lower layer
#   PREFIX/share/man/man8/*.8.gz, bash, zsh and fish completions
#   PREFIX/share/doc/bootstrap-runc/                README.md, docs/, examples/ (settings,
#                                                   policy, supervisor.env, containerd)
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
now=
if [ "${1:-}" = --now ]; then
  now=1
  shift
fi
prefix=${1:-/usr/local}
dest=${DESTDIR:-}
zsh_dir=${ZSH_COMPLETIONS:-share/zsh/site-functions}
[ -z "$now" ] || [ -z "$dest" ] || { echo "install.sh: --now mounts on this host, not under DESTDIR" >&2; exit 2; }
case $prefix in
  /*) prefix=$(realpath -m "$prefix") ;; # as systemd names the mount unit: no //, /./, /../
  *) echo "install.sh: PREFIX must be absolute: $prefix" >&2; exit 2 ;;
esac
for file in bin/bootstrap-runc bin/bootstrap-supervisor man/man8/bootstrap-runc.8; do
  [ -e "$src/$file" ] || { echo "install.sh: $src is not a built tree: no $file" >&2; exit 1; }
done
lib=$prefix/lib/bootstrap-runc
empty=$prefix/share/bootstrap-runc/empty
units=$prefix/lib/systemd/system
doc=$prefix/share/doc/bootstrap-runc
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
install -D -m 0755 "$src/bin/bootstrap-runc" "$src/bin/bootstrap-supervisor" -t "$dest$lib"
ln -sfn bootstrap-runc "$dest$lib/runc"
# The overlay's second, empty lower layer: whatever it held would appear beside the runtime.
install -d -m 0755 "$dest$empty" "$dest$prefix/bin"
[ -z "$(ls -A "$dest$empty")" ] || { echo "install.sh: $dest$empty is not empty" >&2; exit 1; }
for binary in bootstrap-runc bootstrap-supervisor; do
  ln -sfn "../lib/bootstrap-runc/$binary" "$dest$prefix/bin/$binary"
done
install -D -m 0755 "$src/packaging/containerd/containerd-shim-bootstrap-v1" "$dest$prefix/bin/containerd-shim-bootstrap-v1"

rewrite() { # the units and examples name /usr/local and its mount unit; installed, they name PREFIX
  sed -e "s#/usr/local/#$prefix/#g" -e "s#usr-local-lib-bootstrap\\\\x2drunc\\.mount#${mount_unit//\\/\\\\}#g" "$@"
}
for unit in bootstrap-containers.service bootstrap-containers.target bootstrap-report-node.service; do
  rewrite "$src/packaging/systemd/$unit" | install -D -m 0644 /dev/stdin "$dest$units/$unit"
done
rewrite "$src/packaging/systemd/bootstrap-runc.mount.in" | install -D -m 0644 /dev/stdin "$dest$units/$mount_unit"
for dropin in "$src"/packaging/systemd/*.service.d; do
  install -D -m 0644 "$dropin/10-bootstrap-containers.conf" "$dest$units/$(basename "$dropin")/10-bootstrap-containers.conf"
done

install -d -m 0755 "$dest$prefix/share/man/man8"
for page in "$src"/man/man8/*.8 "$src/packaging/containerd/containerd-shim-bootstrap-v1.8"; do
  gz=$dest$prefix/share/man/man8/${page##*/}.gz
  gzip -9n <"$page" >"$gz"
  chmod 0644 "$gz"
done
for binary in bootstrap-runc bootstrap-supervisor; do
  install -D -m 0644 "$src/completions/bash/$binary" "$dest$prefix/share/bash-completion/completions/$binary"
  install -D -m 0644 "$src/completions/zsh/_$binary" "$dest$prefix/$zsh_dir/_$binary"
  install -D -m 0644 "$src/completions/fish/$binary.fish" "$dest$prefix/share/fish/vendor_completions.d/$binary.fish"
done

install -D -m 0644 "$src/README.md" "$dest$doc/README.md"
for page in "$src"/docs/*.md; do # the pages README.md links to
  install -D -m 0644 "$page" "$dest$doc/docs/$(basename "$page")"
done
for example in "$src"/packaging/examples/*; do
  rewrite "$example" | install -D -m 0644 /dev/stdin "$dest$doc/examples/$(basename "$example")"
done
for example in config.toml runtimeclass.yaml; do
  rewrite "$src/packaging/containerd/$example" | install -D -m 0644 /dev/stdin "$dest$doc/examples/containerd/$example"
done
echo "installed into $dest$prefix; enable with: systemctl enable --now '$mount_unit';" \
  "systemctl enable bootstrap-containers.service bootstrap-containers.target"
