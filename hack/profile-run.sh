#!/usr/bin/env bash
# Where the milliseconds of one `bootstrap-runc run /bin/true` go (runc spec config, terminal
# false, the default policy): each run is traced at a few landmark syscalls only
# (strace --seccomp-bpf: the others run untraced), and the median time of each phase between
# landmarks is printed. Tracing adds a little to every phase; the bench (hack/bench.sh) has the
# untraced totals.
# Usage: hack/profile-run.sh [RUNS]   (as root; default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
[ "$(id -u)" = 0 ] || { echo "profile-run.sh: run as root" >&2; exit 1; }
runs=${1:-30}
hack/install-deps.sh
hack/build.sh
ours=${CARGO_TARGET_DIR:-$PWD/target}/release/bootstrap-runc

work=$(mktemp -d /tmp/bootstrap-runc-profile.XXXXXX)
cleanup() {
  unmount_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/state" "$work/traces" "$work/mnt"
hack/make-spec-bundle.sh "$work/spec"
mount -t tmpfs tmpfs "$work/state"
# As hack/bench.py: the host root is read, but the mount area and shared directories are ours.
ours=("$ours" --root "$work/state" --host-mount-area "$work/mnt" --shared-dirs "")
"${ours[@]}" run --bundle "$work/spec" warm  # the seccomp filter compiled
for i in $(seq "$runs"); do
  strace -f --seccomp-bpf -ttt -o "$work/traces/$i" \
    -e trace=execve,execveat,clone3,fsopen,unshare,pivot_root,seccomp,setns,exit_group \
    "${ours[@]}" run --bundle "$work/spec" "p$i"
done
python3 - "$work/traces" <<'PY'
import os, statistics, sys

# (phase, landmark that ends it): a landmark is the first line, after the previous one, that
# starts with this syscall (and, for some, comes from the container's init).
LANDMARKS = [
    ("start, flags, binary protection: overlay made", "execveat("),
    ("re-exec; policy, derived bundle, seccomp filter, cgroup claim, libcontainer builder", "clone3("),
    ("libcontainer intermediate: cgroups (libcgroups), namespaces", "unshare(CLONE_NEWPID"),
    ("init cloned, joins its namespaces", "unshare(CLONE_NEWNS"),
    ("init: rootfs mounts, devices, pivot_root", "pivot_root("),
    ("init: capabilities, hostname, seccomp filter loaded", "seccomp("),
    ("host mounts attached, start", "execve(\"/bin/true\""),
    ("/bin/true runs", "+++ exited"),
    ("delete, exit", "EOF"),
]

phases = {name: [] for name, _ in LANDMARKS}
totals = []
for name in os.listdir(sys.argv[1]):
    lines = open(os.path.join(sys.argv[1], name)).read().splitlines()
    events = []
    for line in lines:
        pid, stamp, call = line.split(None, 2)
        events.append((int(pid), float(stamp), call))
    start = events[0][1]
    main_pid = events[0][0]
    index, previous = 0, start
    for phase, landmark in LANDMARKS:
        if landmark == "EOF":
            end = events[-1][1]
        else:
            while index < len(events):
                pid, stamp, call = events[index]
                index += 1
                exited_init = landmark == "+++ exited" and pid != main_pid
                if call.startswith(landmark) and (landmark != "+++ exited" or exited_init):
                    if landmark == "clone3(" and pid != main_pid:
                        continue
                    break
            else:
                sys.exit(f"trace {name}: no {landmark!r}")
            end = stamp
        phases[phase].append((end - previous) * 1000)
        previous = end
    totals.append((events[-1][1] - start) * 1000)

print(f"bootstrap-runc run /bin/true, traced at landmarks, {len(totals)} runs, median ms per phase:")
for phase, _ in LANDMARKS:
    print(f"  {statistics.median(phases[phase]):6.2f}  {phase}")
print(f"  {statistics.median(totals):6.2f}  total (traced)")
PY
