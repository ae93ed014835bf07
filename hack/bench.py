#!/usr/bin/env python3
"""bootstrap-runc against runc, same bundle, same run, A/B alternating: median wall time and
median CPU time (user + system of the command and every process it waited for, from wait4's
rusage) of each, and both ratios. Called by hack/bench.sh, which builds, makes the bundles and,
for the mounts row, a private mount namespace; see there for the rows.

Usage: bench.py RUNS OURS WORK ROW...
  ROW: run-spec | run-lean | lifecycle | run-mounts | run-installed
  run-installed runs WORK/installed/bin/bootstrap-runc instead of OURS: hack/install.sh's
  layout with its mount unit mounted (bench.sh makes it).
"""

import os
import statistics
import subprocess
import sys
import time

RUNS, OURS, WORK = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ROWS = sys.argv[4:]


def runtime(name, row):
    """The command line prefix of a runtime, each with its own state root."""
    if name == "ours":
        ours = f"{WORK}/installed/bin/bootstrap-runc" if row == "run-installed" else OURS
        return [ours, "--root", f"{WORK}/state/ours", "--host-mount-area", f"{WORK}/mnt",
                "--shared-dirs", ""]
    return ["runc", "--root", f"{WORK}/state/runc"]


def timed(argv):
    """(wall seconds, CPU seconds) of one command; exits on a failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace")
        sys.exit(f"bench.py: failed: {' '.join(argv)}\n{err}")
    proc.stderr.close()
    proc.returncode = 0
    return wall, usage.ru_utime + usage.ru_stime


def steps(row, name, bundle):
    """The timed steps of one iteration of `row`: (label, argv)."""
    rt = runtime(name, row)
    cid = f"bench-{row}"
    if row == "lifecycle":
        return [("create", rt + ["create", "--bundle", bundle, cid]),
                ("start", rt + ["start", cid]),
                # start returns once the process runs; /bin/true is gone by the delete, which
                # waits for nothing else.
                ("delete", rt + ["delete", "--force", cid])]
    return [("run", rt + ["run", "--bundle", bundle, cid])]


BUNDLES = {"run-spec": "spec", "run-lean": "lean", "lifecycle": "spec", "run-mounts": "spec",
           "run-installed": "spec"}
TITLES = {
    "run-spec": "run /bin/true, runc spec config (terminal false)",
    "run-lean": "run /bin/true, lean bundle (hack/make-bundle.sh)",
    "lifecycle": "runc spec config, each step alone",
    "run-mounts": "run /bin/true, runc spec config, ~500 more host mounts",
    "run-installed": "run /bin/true, runc spec config, bootstrap-runc installed read-only "
                     "(hack/install.sh's mount unit: no re-exec)",
}


def bench(row):
    bundle = f"{WORK}/{BUNDLES[row]}"
    results = {}  # (label, runtime) -> [(wall, cpu)]
    for i in range(RUNS + 5):
        for name in ("ours", "runc") if i % 2 == 0 else ("runc", "ours"):
            for label, argv in steps(row, name, bundle):
                measured = timed(argv)
                if i >= 5:  # the first five warm caches up
                    results.setdefault((label, name), []).append(measured)
    print(f"{TITLES[row]}, {RUNS} runs each, medians:")
    for label in dict.fromkeys(label for label, _ in results):
        ours = results[(label, "ours")]
        runc = results[(label, "runc")]
        med = [statistics.median(v[k] for v in series) * 1000
               for series in (ours, runc) for k in (0, 1)]
        print(f"  {label:<7} bootstrap-runc {med[0]:6.2f} ms wall {med[1]:6.2f} ms CPU | "
              f"runc {med[2]:6.2f} ms wall {med[3]:6.2f} ms CPU | "
              f"ratio {med[0] / med[2]:4.2f}x wall {med[1] / med[3]:4.2f}x CPU")


for row in ROWS:
    bench(row)
