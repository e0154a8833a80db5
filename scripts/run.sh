#!/usr/bin/env bash
# Installs matvisfs and mounts the mat-vis dataset.
#
#   scripts/run.sh [MOUNTPOINT] [FLAGS...]          mount release v2026.04.2 (default ./mat-vis)
#   scripts/run.sh --demo [MOUNTPOINT] [FLAGS...]   no network needed: a generated sample,
#                                                   read from a local copy (default ./mat-vis-demo)
#   scripts/run.sh --install-system                 install only, and copy the binary to
#                                                   /usr/local/bin (sudo), where mount(8) finds
#                                                   the type fuse.matvisfs (see docs/long-lived.md)
#
# FLAGS go to `matvisfs mount` / `matvisfs demo` (see `matvisfs mount --help`);
# the mountpoint may be left out and the flags given alone.
# The binary goes to $MATVISFS_PREFIX/bin (default ~/.local/bin).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${MATVISFS_PREFIX:-$HOME/.local}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v cargo >/dev/null; then
    echo "matvisfs is built with Rust; install it from https://rustup.rs and run this again." >&2
    exit 1
fi
if ! command -v fusermount3 >/dev/null && command -v apt-get >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3
fi
cargo install --quiet --locked --path "$repo" --root "$prefix"
bin="$prefix/bin/matvisfs"

if [ "${1:-}" = "--install-system" ]; then
    as_root install -m 0755 "$bin" /usr/local/bin/matvisfs
    echo "installed /usr/local/bin/matvisfs: /etc/fstab and systemd can mount the type fuse.matvisfs"
    exit 0
fi

demo=no
if [ "${1:-}" = "--demo" ]; then
    demo=yes
    shift
fi
# A first argument that is a flag is not a mountpoint.
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    mountpoint=$1
    shift
elif [ $demo = yes ]; then
    mountpoint=./mat-vis-demo
else
    mountpoint=./mat-vis
fi

if [ $demo = yes ]; then
    exec "$bin" demo "$mountpoint" "$@"
fi
mkdir -p "$mountpoint"
"$bin" mount "$mountpoint" "$@"
echo "mat-vis is mounted at $mountpoint:  ls $mountpoint/v2026.04.2"
echo "Unmount with:  $bin unmount $mountpoint"
