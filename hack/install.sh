#!/usr/bin/env bash
# Builds bootstrap-runc and installs it from this checkout. Fleets install the packages
# hack/package.sh builds instead (docs/install.md).
# Usage: [DESTDIR=dir] [BIN_DIR=dir] hack/install.sh [--now] [PREFIX]
#   The arguments and what is installed where: packaging/install.sh, which this runs on the
#   tree `hack/package.sh tree` assembles. BIN_DIR=dir installs already built binaries (the
#   tests do); without it, this builds them.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hack/package.sh tree "$work/tree"
"$work/tree/install.sh" "$@"
