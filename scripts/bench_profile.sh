#!/usr/bin/env bash
# Where matvisfs's time goes per file (see docs/benchmarks.md): cold reads
# with 16 readers and warm reads with one, under the kernel's fuse
# tracepoints, perf (CPU by part of the daemon) and strace (system calls).
#   scripts/bench_profile.sh [RUNS]     (untraced runs per scenario, default 3)
#   env: MATERIALS, PX (the small textures, as scripts/bench.sh)
# Needs root, perf (linux-perf), strace, nginx and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin matvisfs --example generate --example readall
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
export PYTHONDONTWRITEBYTECODE=1
exec python3 scripts/bench_profile.py "$@"
