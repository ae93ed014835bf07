#!/usr/bin/env bash
# A real kube-apiserver for the node-report tests (integration/node_report.rs): no Debian package
# ships one, Debian 12 ships its source. Built once per machine and cached outside the clone,
# as hack/boot-root.sh caches the boot root.
#   hack/kube-apiserver.sh build   build it if it is not cached; prints the binary's path
#   hack/kube-apiserver.sh path    prints where the binary is (built or not)
# Cached in $BOOT_ROOT_CACHE (default /var/cache/bootstrap-runc) under a hash of the recipe
# below, built in a temp dir and renamed, so a half-built binary is never used.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${BOOT_ROOT_CACHE:-/var/cache/bootstrap-runc}

# The recipe, in DIR: Debian 12's kubernetes source with Debian's reflect2, then the build.
recipe() {
  local dir=$1
  (cd "$dir" && apt-get source -qq kubernetes >/dev/null 2>&1)
  local src
  src=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*')
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -a /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/"
  (cd "$src" && CGO_ENABLED=0 GOPROXY=off make WHAT=cmd/kube-apiserver >"$dir/build.log" 2>&1) ||
    { tail -n 30 "$dir/build.log" >&2; return 1; }
  mkdir -p "$dir/out"
  install -m 0755 "$src/_output/bin/kube-apiserver" "$dir/out/kube-apiserver"
}
hash=$(declare -f recipe | sha256sum | cut -c1-16)
binary=$cache/kube-apiserver-$hash/kube-apiserver

build() {
  [ "$(id -u)" = 0 ] || { echo "kube-apiserver.sh: apt-get needs root" >&2; exit 1; }
  mkdir -p "$cache"
  exec 9>"$cache/.kube-apiserver.lock"
  flock 9 # one build at a time; a waiting caller then finds it built
  if [ -x "$binary" ]; then
    echo "$binary"
    return
  fi
  local sources=/etc/apt/sources.list.d/bootstrap-runc-debian-src.sources
  if [ ! -e "$sources" ]; then
    cat >"$sources" <<'SRC'
# Added by bootstrap-runc's hack/kube-apiserver.sh: Debian 12's kubernetes source.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends dpkg-dev golang-go rsync \
    golang-github-modern-go-reflect2-dev >/dev/null
  # What a killed build left (we hold the lock: no build is running).
  rm -rf --one-file-system "$cache"/.kube-build-*
  build_dir=$(mktemp -d "$cache/.kube-build-XXXXXX")
  trap 'rm -rf --one-file-system "$build_dir"' EXIT
  echo "kube-apiserver.sh: building kube-apiserver 1.20 from Debian's source (about 6 minutes)" >&2
  local started=$SECONDS
  recipe "$build_dir"
  for old in "$cache"/kube-apiserver-*; do
    [ "$old" = "$(dirname "$binary")" ] || [ ! -d "$old" ] || rm -rf --one-file-system "$old"
  done
  mv -T "$build_dir/out" "$(dirname "$binary")"
  echo "kube-apiserver.sh: built in $((SECONDS - started)) s" >&2
  echo "$binary"
}

{
  case ${1:-} in
    build) build ;;
    path) echo "$binary" ;;
    *) echo "usage: hack/kube-apiserver.sh build | path" >&2; exit 2 ;;
  esac
  exit
}
