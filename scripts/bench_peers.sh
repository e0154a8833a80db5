#!/usr/bin/env bash
# matvisfs beside Hugging Face's hf-mount, both mounting the same release of
# the test server in the Hub's layout on loopback; prints a table of medians
# with the ratio matvisfs / hf-mount (see docs/benchmarks.md, "Against
# hf-mount").
#   HF_MOUNT=/path/to/hf-mount-fuse scripts/bench_peers.sh [ROUNDS]   (default 10)
#   env: MATERIALS, PX (the small textures), DELAY_MS (latency the test server adds)
# HF_MOUNT is hf-mount's FUSE binary, built by you (`cargo build --release
# --features fuse` in its repository gives target/release/hf-mount-fuse).
# Needs root and fuse3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${HF_MOUNT:-}" ]; then
    echo "set HF_MOUNT to hf-mount's FUSE binary (hf-mount-fuse)" >&2
    exit 2
fi
# `hf-mount` itself starts daemons that keep pid and log files in ~/.hf-mount:
# the benchmark runs the foreground FUSE binary beside it.
if [ "$(basename "$HF_MOUNT")" = hf-mount ] && [ -x "$(dirname "$HF_MOUNT")/hf-mount-fuse" ]; then
    HF_MOUNT="$(dirname "$HF_MOUNT")/hf-mount-fuse"
fi
HF_MOUNT="$(realpath "$HF_MOUNT")"
export HF_MOUNT
cargo build --release --locked --quiet --bin matvisfs --example generate --example serve \
    --example readall
export PYTHONDONTWRITEBYTECODE=1
exec python3 scripts/bench_peers.py "$@"
