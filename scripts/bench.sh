#!/usr/bin/env bash
# Benchmark matvisfs against the wire (one curl process), rclone's FUSE
# mount, local disk and the reference Python client, on generated releases
# served on loopback; prints a table of medians (see docs/benchmarks.md).
#   scripts/bench.sh [RUNS]          (default 3; about 12 minutes on 2 cores)
#   env: CASES (groups: cold,latency,warm,big,tree,memory,hub,before; default all),
#        BEFORE (an earlier build's binary: case 10 compares this build with it),
#        MATERIALS, PX (the small textures), LARGE (materials of the full-size
#        tag), BIG_MB (case 5), HOSTILE (catalog sizes of case 7, comma-separated),
#        DELAY_MS (latency the test server adds), REFCLIENT_PYTHON,
#        CACHE_ROOT (where the mounts' caches go, e.g. /dev/shm; default: the work dir)
# Needs root, nginx, curl, rclone and fuse3; gcc and libfuse3-dev for the
# classic FUSE baseline (libfuse's passthrough_ll example, built at run time)
# (apt-get install -y nginx-light curl rclone fuse3 gcc libfuse3-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin matvisfs --example generate --example serve \
    --example readall
venv=target/bench-venv
if [ -z "${REFCLIENT_PYTHON:-}" ] && [ ! -x "$venv/bin/python" ]; then
    # The reference client from PyPI, for case 1.
    python3 -m venv "$venv.tmp" && "$venv.tmp/bin/pip" install -q mat-vis-client==0.6.4 \
        && mv "$venv.tmp" "$venv" \
        || { rm -rf "$venv.tmp"; echo "no reference client (needs python3-venv and PyPI)" >&2; }
fi
export PYTHONDONTWRITEBYTECODE=1
exec python3 scripts/bench.py "$@"
