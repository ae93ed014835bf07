#!/usr/bin/env bash
# Pull + unpack of one image from a registry on loopback: the supervisor (cold cache, then a
# warm-cache boot) against `skopeo copy` + `umoci unpack` of the same image, in one run.
# The image is busybox plus a copy of the host's /usr/share and /usr/lib/python3 (many small
# files, as real bootstrap images have). Usage: hack/bench-pull.sh [RUNS]   (as root; default 3)
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
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi
  unmount_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YAML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/storage } }
http: { addr: "127.0.0.1:$port" }
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done

echo "bench-pull.sh: building the image (busybox + /usr/share + /usr/lib/python3)" >&2
hack/make-bundle.sh "$work/bundle" /bin/true >/dev/null
layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:latest"
umoci unpack --image "$layout:latest" "$work/unpacked" >/dev/null
cp -a "$work/bundle/rootfs/." "$work/unpacked/rootfs/"
mkdir -p "$work/unpacked/rootfs/usr/lib"
cp -a /usr/share "$work/unpacked/rootfs/usr/"
cp -a /usr/lib/python3* "$work/unpacked/rootfs/usr/lib/" 2>/dev/null || true
umoci repack --image "$layout:latest" "$work/unpacked"
umoci config --image "$layout:latest" --config.cmd /bin/true
rm -rf "$work/unpacked" "$work/bundle"
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://127.0.0.1:$port/bench/image:v1"
size=$(du -sh "$layout/blobs" | cut -f1)
echo "bench-pull.sh: image pushed ($size compressed)" >&2

mkdir -p "$work/mnt" "$work/run"
mount -t tmpfs tmpfs "$work/run"
printf '[registries."127.0.0.1:%s"]\ninsecure = true\n' "$port" > "$work/registries.toml"
chmod 600 "$work/registries.toml"
printf '[settings.bootstrap-containers.bench]\nsource = "127.0.0.1:%s/bench/image:v1"\nmode = "always"\nessential = true\n' "$port" > "$work/settings.toml"

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
supervisor() { # state-dir
  rm -rf "$work/run/"*
  "$bin/bootstrap-supervisor" run --settings "$work/settings.toml" --runtime "$bin/bootstrap-runc" \
    --registry-config "$work/registries.toml" --state-dir "$1" --run-dir "$work/run" \
    --host-mount-area "$work/mnt" --shared-dirs "" >/dev/null 2>"$work/supervisor.err" \
    || { cat "$work/supervisor.err" >&2; exit 1; }
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -a ours warm theirs
for ((i = 0; i < runs; i++)); do
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); supervisor "$work/state-$i"; t1=$(now)
  ours+=("$(ms "$t0" "$t1")")
  split=$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1]))["containers"][0]["image"]; print("pull %d ms, unpack %d ms" % (i["pull_ms"], i["unpack_ms"]))' "$work/run/report.json")
  t0=$(now); supervisor "$work/state-$i"; t1=$(now)
  warm+=("$(ms "$t0" "$t1")")
  rm -rf "$work/state-$i"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now)
  skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/bench/image:v1" "oci:$work/pulled:v1"
  umoci unpack --image "$work/pulled:v1" "$work/theirs" >/dev/null
  t1=$(now)
  theirs+=("$(ms "$t0" "$t1")")
  rm -rf "$work/pulled" "$work/theirs"
done
o=$(printf '%s\n' "${ours[@]}" | median)
w=$(printf '%s\n' "${warm[@]}" | median)
t=$(printf '%s\n' "${theirs[@]}" | median)
echo "image: $size compressed, medians of $runs runs"
printf 'supervisor, cold cache (pull + unpack + run):  %6d ms\n' "$o"
echo "  last cold run's report: $split"
printf 'skopeo copy + umoci unpack (no run):           %6d ms\n' "$t"
printf 'supervisor, warm cache (tag resolved, run):     %6d ms\n' "$w"
awk -v o="$o" -v t="$t" -v w="$w" 'BEGIN { printf "ratio cold/skopeo+umoci: %.2fx   warm/cold: %.2fx\n", o / t, w / o }'
