#!/usr/bin/env bash
# Installs matvisfs and mounts the mat-vis dataset.
#
#   scripts/run.sh [MOUNTPOINT] [FLAGS...]          mount release v2026.04.2 (default ./mat-vis)
#   scripts/run.sh --demo [MOUNTPOINT] [FLAGS...]   no network needed: a generated sample,
#                                                   read from a local copy (default ./mat-vis-demo)
#   scripts/run.sh --help                           this, and the flags of `matvisfs mount`
#   scripts/run.sh --install-system                 install only, and copy the binary to
#                                                   /usr/local/bin (sudo), where mount(8) finds
#                                                   the type fuse.matvisfs (see docs/long-lived.md)
#
# FLAGS go to `matvisfs mount` / `matvisfs demo` (see `matvisfs mount --help`);
# the mountpoint may be left out and the flags given alone.
# The binary goes to $MATVISFS_PREFIX/bin (default ~/.local/bin); the first
# build takes a few minutes (see README.md), later runs only check it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${MATVISFS_PREFIX:-$HOME/.local}
bin="$prefix/bin/matvisfs"

demo=no
if [ "${1:-}" = "--demo" ]; then
    demo=yes
    shift
fi
command=mount
[ $demo = yes ] && command=demo

for arg in "$@"; do
    if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then
        sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0"
        if [ -x "$bin" ]; then
            echo
            "$bin" "$command" --help
        else
            echo "Once installed, \`$bin $command --help\` lists every flag."
        fi
        exit 0
    fi
done

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v cargo >/dev/null; then
    echo "matvisfs is built with Rust; install it from https://rustup.rs and run this again." >&2
    exit 1
fi
if ! command -v fusermount3 >/dev/null && command -v apt-get >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3
fi
# On a terminal the build shows its progress; the first one takes minutes.
if [ -t 2 ]; then
    if [ ! -x "$bin" ]; then
        echo "Building matvisfs: the first build takes about 5 minutes on 2 cores (6 CPU-minutes)..." >&2
    fi
    cargo install --locked --path "$repo" --root "$prefix"
else
    cargo install --quiet --locked --path "$repo" --root "$prefix"
fi

if [ "${1:-}" = "--install-system" ]; then
    as_root install -m 0755 "$bin" /usr/local/bin/matvisfs
    echo "installed /usr/local/bin/matvisfs: /etc/fstab and systemd can mount the type fuse.matvisfs"
    exit 0
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
created=no
if [ ! -e "$mountpoint" ]; then
    mkdir -p "$mountpoint"
    created=yes
fi
if ! "$bin" mount "$mountpoint" "$@"; then
    # Nothing left behind: the directory made for the mount goes with it.
    if [ $created = yes ]; then
        rmdir "$mountpoint" 2>/dev/null || true
    fi
    exit 1
fi
echo "mat-vis is mounted at $mountpoint:  ls $mountpoint/v2026.04.2"
echo "Unmount with:  $bin unmount $mountpoint"
