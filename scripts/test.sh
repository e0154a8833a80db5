#!/usr/bin/env bash
# Every check: formatting, lints, unit tests, and the tests that really
# mount (as root, with /dev/fuse, fusermount3 and nginx; .ci/run installs
# them). Fails if a test left a mount behind.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
if grep -s '^matvisfs /tmp/' /proc/mounts; then
    echo "the tests left the mounts above behind" >&2
    exit 1
fi
