#!/bin/sh
# Runs a command as if the CPU's L1 data cache had WAYS ways and SIZE
# (e.g. 12 48K): a private mount namespace in which
# /sys/devices/system/cpu is a directory describing one CPU with that
# cache (where the `gemm` crate reads the geometry it sizes its blocks
# by). Needs root (unshare -m, mount); leaves nothing behind.
#
#   kernels/tests/with-fake-l1-cache.sh 12 48K cargo test ...
set -eu
[ $# -ge 3 ] || { echo "usage: $0 WAYS SIZE COMMAND..." >&2; exit 2; }
ways=$1 size=$2
shift 2
if [ "$(id -u)" != 0 ]; then
    echo "with-fake-l1-cache: needs root (a mount namespace); not run" >&2
    exit 1
fi
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
# cache INDEX LEVEL TYPE SIZE WAYS
cache() {
    d="$fake/cpu0/cache/index$1"
    mkdir -p "$d"
    echo "$2" > "$d/level"
    echo "$3" > "$d/type"
    echo "$4" > "$d/size"
    echo "$5" > "$d/ways_of_associativity"
    echo 64 > "$d/coherency_line_size"
    echo 0 > "$d/shared_cpu_list"
}
cache 0 1 Data "$size" "$ways"
cache 1 1 Instruction 32K 8
cache 2 2 Unified 2048K 16
cache 3 3 Unified 32768K 16
cp /sys/devices/system/cpu/online "$fake/online" 2>/dev/null || true
# The command's arguments travel as the inner shell's positional ones.
unshare -m sh -c 'mount --bind "$0" /sys/devices/system/cpu && exec "$@"' "$fake" "$@"
