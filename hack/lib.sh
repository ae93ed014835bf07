# shellcheck shell=bash
# Sourced by the hack/ scripts: what several of them share.

# Unmounts every mount at or under $1 in this mount namespace, deepest first (lazily: a
# script's cleanup must not fail on a busy mount).
unmount_under() {
  awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
