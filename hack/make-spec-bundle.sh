#!/usr/bin/env bash
# Builds the benchmarks' `runc spec` bundle: hack/make-bundle.sh's busybox rootfs under runc's
# own starter config (devpts, shm, mqueue, sysfs, masked and read-only paths), with terminal
# false (runc would otherwise allocate a pty we don't) and the command /bin/true.
# Usage: hack/make-spec-bundle.sh DIR   (runc on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: make-spec-bundle.sh DIR}
hack/make-bundle.sh "$dir" /bin/true >/dev/null
rm "$dir/config.json"
runc spec --bundle "$dir"
python3 - "$dir/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["terminal"] = False
config["process"]["args"] = ["/bin/true"]
json.dump(config, open(path, "w"), indent=2)
PY
