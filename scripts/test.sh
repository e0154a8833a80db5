#!/usr/bin/env bash
# Every check: formatting, lints, unit tests, and the tests that really
# mount (as root, with /dev/fuse, fusermount3 and nginx; .ci/run installs
# them). The tests get a temporary directory of their own (TMPDIR), which
# must be empty when they end; fails if they left a file there or a mount.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

tests_tmp=$(mktemp -d "${TMPDIR:-/tmp}/matvisfs-tests.XXXXXX")
# Mounts of the suite's own, under its directory (a user's own matvisfs
# mounts elsewhere are none of its business).
suite_mounts() { awk -v dir="$tests_tmp/" 'index($2, dir) == 1 { print $2 }' /proc/mounts; }
cleanup() {
    # Detached first: a removal never reaches into a mount.
    for mount in $(suite_mounts); do umount -l "$mount" 2>/dev/null || true; done
    rm -rf --one-file-system "$tests_tmp"
}
trap cleanup EXIT

TMPDIR=$tests_tmp cargo test --all-targets --locked

failed=no
left=$(suite_mounts)
if [ -n "$left" ]; then
    echo "$left" >&2
    echo "the tests left the mounts above behind" >&2
    failed=yes
fi
if [ -n "$(find "$tests_tmp" -mindepth 1 -print -quit)" ]; then
    find "$tests_tmp" -mindepth 1 -maxdepth 3 >&2
    echo "the tests left the files above in their TMPDIR" >&2
    failed=yes
fi
[ $failed = no ]
