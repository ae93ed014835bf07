#!/usr/bin/env bash
# Pull + unpack from a registry on loopback, two images, in one run: the supervisor (cold
# cache; its report's pull_ms + unpack_ms, and the whole boot), containerd (`ctr image pull`,
# which unpacks into the overlayfs snapshotter, through a private containerd started afresh on
# a new root for each run, its start not timed), and `skopeo copy` + `umoci unpack`.
# Images: "one-layer" is busybox plus a copy of the host's /usr/share and /usr/lib/python3 in
# one layer (many small files, as real bootstrap images have); "multi-layer" is six layers of
# mixed sizes (busybox, python, 32 MiB of random bytes, docs, one small file, zoneinfo).
# Usage: hack/bench-pull.sh [RUNS]   (as root; default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
[ "$(id -u)" = 0 ] || { echo "bench-pull.sh: run as root" >&2; exit 1; }
runs=${1:-3}
hack/install-deps.sh
hack/build.sh
bin=$PWD/target/release

work=$(mktemp -d /tmp/bootstrap-pull-bench.XXXXXX)
registry_pid=
containerd_pid=
stop_containerd() {
  if [ -n "$containerd_pid" ]; then
    kill "$containerd_pid" 2>/dev/null || true
    wait "$containerd_pid" 2>/dev/null || true
    containerd_pid=
  fi
}
cleanup() {
  stop_containerd
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi
  unmount_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
cat > "$work/registry.yml" <<YAML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/storage } }
http: { addr: "$host" }
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done

hack/make-bundle.sh "$work/bundle" /bin/true >/dev/null
# build NAME LAYER... : an image of one layer per LAYER, a directory whose contents are copied
# into the root (busybox into the first one's); pushed as bench/NAME:v1.
build() {
  local name=$1 layout=$work/layout-$1 layer
  shift
  echo "bench-pull.sh: building $name" >&2
  umoci init --layout "$layout"
  umoci new --image "$layout:latest"
  for layer in "$@"; do
    rm -rf "$work/unpacked"
    umoci unpack --image "$layout:latest" "$work/unpacked" >/dev/null
    [ "$layer" != "$1" ] || cp -a "$work/bundle/rootfs/." "$work/unpacked/rootfs/"
    cp -a "$layer/." "$work/unpacked/rootfs/"
    umoci repack --image "$layout:latest" "$work/unpacked"
  done
  rm -rf "$work/unpacked"
  umoci config --image "$layout:latest" --config.cmd /bin/true --os linux --architecture amd64
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$host/bench/$name:v1"
  echo "$name: $# layer(s), $(du -sh "$layout/blobs" | cut -f1) compressed"
}
# part DIR PATH... : DIR holding a copy of each host PATH at the same place.
part() {
  local dir=$1 path
  shift
  for path in "$@"; do
    mkdir -p "$dir$(dirname "$path")"
    cp -a "$path" "$dir$(dirname "$path")/"
  done
}
part "$work/p-one" /usr/share /usr/lib/python3
part "$work/p-python" /usr/lib/python3
mkdir -p "$work/p-busybox" "$work/p-random/opt" "$work/p-small/etc"
head -c $((32 << 20)) /dev/urandom > "$work/p-random/opt/blob"
part "$work/p-docs" /usr/share/doc
echo "bench" > "$work/p-small/etc/bench-release"
part "$work/p-zoneinfo" /usr/share/zoneinfo
images=(one-layer multi-layer)
sizes=$(
  build one-layer "$work/p-one"
  build multi-layer "$work/p-busybox" "$work/p-python" "$work/p-random" "$work/p-docs" "$work/p-small" "$work/p-zoneinfo"
)
rm -rf "$work"/p-* "$work/bundle"

mkdir -p "$work/mnt" "$work/run"
mount -t tmpfs tmpfs "$work/run"
printf '[registries."%s"]\ninsecure = true\n' "$host" > "$work/registries.toml"
chmod 600 "$work/registries.toml"

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# supervisor IMAGE STATE-DIR: one boot; prints pull_ms + unpack_ms of its report.
supervisor() {
  printf '[settings.bootstrap-containers.bench]\nsource = "%s/bench/%s:v1"\nmode = "always"\nessential = true\n' \
    "$host" "$1" > "$work/settings.toml"
  rm -rf "$work/run/"*
  "$bin/bootstrap-supervisor" run --settings "$work/settings.toml" \
    --registry-config "$work/registries.toml" --state-dir "$2" --run-dir "$work/run" \
    --host-mount-area "$work/mnt" --shared-dirs "" >/dev/null 2>"$work/supervisor.err" \
    || { cat "$work/supervisor.err" >&2; exit 1; }
  python3 -c 'import json,sys; i=json.load(open(sys.argv[1]))["containers"][0]["image"]; print(i["pull_ms"] + i["unpack_ms"])' "$work/run/report.json"
}
# start_containerd ROOT: a private containerd on a new root, ready.
start_containerd() {
  containerd config default |
    sed -e "s#root = \"/var/lib/containerd\"#root = \"$1\"#" \
        -e "s#state = \"/run/containerd\"#state = \"$work/ctd-state\"#" \
        -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$work/containerd.sock\"#" \
        -e "s#path = \"/opt/containerd\"#path = \"$work/opt\"#" \
        -e 's#disabled_plugins = \[\]#disabled_plugins = ["io.containerd.grpc.v1.cri"]#' > "$work/containerd.toml"
  unshare --mount --propagation private \
    sh -c "mount -t tmpfs tmpfs /run && exec containerd --config $work/containerd.toml" >"$work/containerd.log" 2>&1 &
  containerd_pid=$!
  for _ in $(seq 100); do ctr version >/dev/null 2>&1 && return; sleep 0.1; done
  echo "bench-pull.sh: containerd did not start: $(cat "$work/containerd.log")" >&2
  exit 1
}
ctr() { command ctr --address "$work/containerd.sock" -n benchpull "$@"; }

for image in "${images[@]}"; do
  declare -a ours=() boot=() containerd=() skopeo=()
  for ((i = 0; i < runs; i++)); do
    drop_caches
    t0=$(now); ours+=("$(supervisor "$image" "$work/state")"); t1=$(now)
    boot+=("$(ms "$t0" "$t1")")
    rm -rf "$work/state"

    start_containerd "$work/ctd-root"
    drop_caches
    t0=$(now)
    ctr image pull --plain-http "$host/bench/$image:v1" >/dev/null
    t1=$(now)
    containerd+=("$(ms "$t0" "$t1")")
    stop_containerd
    unmount_under "$work/ctd-root"
    rm -rf "$work/ctd-root" "$work/ctd-state"

    drop_caches
    t0=$(now)
    skopeo copy --quiet --src-tls-verify=false "docker://$host/bench/$image:v1" "oci:$work/pulled:v1"
    umoci unpack --image "$work/pulled:v1" "$work/theirs" >/dev/null
    t1=$(now)
    skopeo+=("$(ms "$t0" "$t1")")
    rm -rf "$work/pulled" "$work/theirs"
  done
  o=$(printf '%s\n' "${ours[@]}" | median)
  b=$(printf '%s\n' "${boot[@]}" | median)
  c=$(printf '%s\n' "${containerd[@]}" | median)
  s=$(printf '%s\n' "${skopeo[@]}" | median)
  echo "$sizes" | grep "^$image:"
  echo "  medians of $runs runs, cold caches"
  printf '  supervisor pull + unpack (report)   %6d ms  %.2fx containerd  (%s)\n' "$o" "$(awk -v o="$o" -v c="$c" 'BEGIN { print o / c }')" "${ours[*]}"
  printf '  containerd ctr image pull           %6d ms  (%s)\n' "$c" "${containerd[*]}"
  printf '  skopeo copy + umoci unpack          %6d ms\n' "$s"
  printf '  supervisor whole boot (pull..run)   %6d ms\n' "$b"
done
