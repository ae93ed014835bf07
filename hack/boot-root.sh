#!/usr/bin/env bash
# The boot tests' guest: a minimal Debian with systemd, booted with systemd-nspawn
# (integration/boot.rs).
#
#   hack/boot-root.sh build          debootstrap the pristine root if it is not cached; prints
#                                    its path. Cached in $BOOT_ROOT_CACHE (default
#                                    /var/cache/bootstrap-runc) under a hash of the build step
#                                    below, so editing it rebuilds the root; built in a temp dir
#                                    and renamed, so a half-built root is never used.
#   hack/boot-root.sh path           prints where the root for this script is (built or not).
#   hack/boot-root.sh install DIR    installs into DIR (a copy or overlay of the root, never the
#                                    cached root itself): our binaries ($BIN_DIR, default
#                                    target/release) and units through hack/install.sh, then
#                                    the harness below, and enables our units.
#   hack/boot-root.sh harness DIR    only the test harness: the stand-in orchestrator and the
#                                    units that record each boot (the package tests install
#                                    the product themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

suite=bookworm
mirror=${BOOT_ROOT_MIRROR:-http://deb.debian.org/debian}
cache=${BOOT_ROOT_CACHE:-/var/cache/bootstrap-runc}
build() {
  [ "$(id -u)" = 0 ] || { echo "boot-root.sh: debootstrap needs root" >&2; exit 1; }
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9 # one build at a time; a waiting caller then finds the root built
  if [ -e "$root/.complete" ]; then
    echo "$root"
    return
  fi
  local missing=()
  for p in debootstrap systemd-container; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "boot-root.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # What a killed build left (we hold the lock: no build is running).
  rm -rf --one-file-system "$cache"/.build-*
  local tmp
  tmp=$(mktemp -d "$cache/.build-XXXXXX")
  trap 'rm -rf --one-file-system "$tmp"' EXIT
  echo "boot-root.sh: debootstrapping $suite into $tmp (about a minute)" >&2
  local started=$SECONDS
  # libseccomp2: bootstrap-runc links it (systemd pulls it in too).
  debootstrap --variant=minbase --include=systemd,systemd-sysv,libseccomp2 \
    "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; rm -f "$tmp.log"; exit 1; }
  rm -f "$tmp.log"
  echo "boot-root.sh: debootstrap took $((SECONDS - started)) s" >&2

  echo boot-test >"$tmp/etc/hostname"
  # Each test writes its own machine-id (its journal's directory name).
  rm -f "$tmp/etc/machine-id" "$tmp/var/lib/dbus/machine-id"
  # Persistent journal: the tests read it after the guest powered off.
  mkdir -p "$tmp/var/log/journal" "$tmp/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=persistent\n' >"$tmp/etc/systemd/journald.conf.d/boot-test.conf"
  # Nobody logs in: no gettys (nspawn's console is read-only); nothing else slows the boot.
  for unit in console-getty.service getty@.service getty.target systemd-timesyncd.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sfn /dev/null "$tmp/etc/systemd/system/$unit"
  done
  ln -sfn /lib/systemd/system/multi-user.target "$tmp/etc/systemd/system/default.target"
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb
  touch "$tmp/.complete"

  # Roots of older versions of this script are never used again.
  for old in "$cache"/boot-root-*; do
    [ "$old" = "$root" ] || [ ! -d "$old" ] || rm -rf --one-file-system "$old"
  done
  mv -T "$tmp" "$root"
  trap - EXIT
  echo "$root"
}

# The cache key: what goes into the pristine root (the build function and the suite), not the
# per-test install below, so that editing the harness units does not re-run debootstrap.
hash=$({ echo "$suite"; declare -f build; } | sha256sum | cut -c1-16)
root=$cache/boot-root-$hash

install_into() {
  local dir=${1:?usage: boot-root.sh install DIR}
  harness_into "$dir"
  DESTDIR=$dir BIN_DIR=${BIN_DIR:-target/release} hack/install.sh /usr/local >/dev/null
  systemctl --root="$dir" --quiet enable bootstrap-containers.service bootstrap-containers.target \
    'usr-local-lib-bootstrap\x2drunc.mount'
}

harness_into() {
  local dir=${1:?usage: boot-root.sh harness DIR}
  [ -d "$dir/etc/systemd" ] || { echo "boot-root.sh: $dir is not a copy of the boot root" >&2; exit 1; }
  [ "$(realpath "$dir")" != "$(realpath -m "$root")" ] ||
    { echo "boot-root.sh: refusing to install into the cached root itself" >&2; exit 1; }
  mkdir -p "$dir/var/lib/boot-test" "$dir/usr/local/lib/boot-test"

  # The stand-in orchestrator: kubelet.service, so that our kubelet drop-in orders it. Per boot
  # it appends to /var/lib/boot-test/orchestrator: the boot id, when systemd and this unit
  # started (CLOCK_MONOTONIC, us) and the supervisor unit's state at that moment.
  cat >"$dir/usr/local/lib/boot-test/orchestrator.sh" <<'SH'
#!/bin/sh
show() { systemctl show -P "$@"; }
echo "$(cat /proc/sys/kernel/random/boot_id) $(show UserspaceTimestampMonotonic)" \
  "$(show InactiveExitTimestampMonotonic kubelet.service)" \
  "$(show ActiveState bootstrap-containers.service)/$(show SubState bootstrap-containers.service)/$(show ExecMainStatus bootstrap-containers.service)" \
  >>/var/lib/boot-test/orchestrator
SH
  cat >"$dir/etc/systemd/system/kubelet.service" <<'UNIT'
[Unit]
Description=Stand-in orchestrator (boot tests)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/boot-test/orchestrator.sh

[Install]
WantedBy=multi-user.target
UNIT

  # nspawn mounts the cgroup v1 controllers read-only in a guest without a user namespace (as
  # bind mounts); a real host's are writable, and bootstrap-runc makes the containers' cgroups
  # there.
  cat >"$dir/etc/systemd/system/boot-test-cgroups.service" <<'UNIT'
[Unit]
Description=Writable cgroup v1 controllers (boot tests)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target bootstrap-containers.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for m in $(findmnt -rn -t cgroup -o TARGET); do mount -o remount,bind,rw "$m"; done'

[Install]
WantedBy=sysinit.target
UNIT

  # When the boot is over (no job left): run the test's hook, if any, in the running guest
  # (/var/lib/boot-test/hook, its output and exit code beside it), append the boot id, the
  # system state and the failed units to /var/lib/boot-test/boots, then power off, which ends
  # systemd-nspawn. Type=exec: the unit's own start job must not keep the boot from finishing.
  cat >"$dir/usr/local/lib/boot-test/finish.sh" <<'SH'
#!/bin/sh
# is-system-running --wait needs D-Bus, which this root has not: poll.
while state=$(systemctl is-system-running); [ "$state" = initializing ] || [ "$state" = starting ]; do
  sleep 0.05
done
if [ -x /var/lib/boot-test/hook ]; then
  /var/lib/boot-test/hook >/var/lib/boot-test/hook.out 2>&1
  echo $? >/var/lib/boot-test/hook.rc
fi
failed=$(systemctl list-units --state=failed --plain --no-legend | cut -d" " -f1 | tr "\n" " ")
echo "$(cat /proc/sys/kernel/random/boot_id) $state $failed" >>/var/lib/boot-test/boots
sync
systemctl poweroff --no-block
SH
  cat >"$dir/etc/systemd/system/boot-test-finish.service" <<'UNIT'
[Unit]
Description=Record the boot's outcome and power off (boot tests)
After=multi-user.target

[Service]
Type=exec
ExecStart=/usr/local/lib/boot-test/finish.sh

[Install]
WantedBy=multi-user.target
UNIT
  chmod 0755 "$dir"/usr/local/lib/boot-test/*.sh

  systemctl --root="$dir" --quiet enable kubelet.service boot-test-cgroups.service boot-test-finish.service
}

# In braces: bash reads all of it before running it, so editing this file meanwhile is safe.
{
  case ${1:-} in
    build) build ;;
    path) echo "$root" ;;
    install) install_into "${2:-}" ;;
    harness) harness_into "${2:-}" ;;
    *) echo "usage: hack/boot-root.sh build | path | install DIR | harness DIR" >&2; exit 2 ;;
  esac
  exit
}
