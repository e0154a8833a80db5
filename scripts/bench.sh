#!/usr/bin/env bash
# Benchmark matvisfs against curl, the reference Python client and local
# disk on generated releases served on loopback; prints a table of medians.
#   scripts/bench.sh [RUNS]
#   env: MATERIALS, PX, FILES (case 1-2), LARGE (case 4), BIG_MB (case 3),
#        DELAY_MS (latency added by the test server), REFCLIENT_PYTHON,
#        CASES (groups to run: cold,warm,tree,hub; default all),
#        CACHE_ROOT (where cold-read caches go, e.g. /dev/shm; default: the work dir)
# Needs root, nginx, curl and fuse3 (apt-get install -y nginx-light curl fuse3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin matvisfs --example generate --example serve
venv=target/bench-venv
if [ -z "${REFCLIENT_PYTHON:-}" ] && [ ! -x "$venv/bin/python" ]; then
    # The reference client from PyPI, for case 1.
    python3 -m venv "$venv.tmp" && "$venv.tmp/bin/pip" install -q mat-vis-client==0.6.4 \
        && mv "$venv.tmp" "$venv" \
        || { rm -rf "$venv.tmp"; echo "no reference client (needs python3-venv and PyPI)" >&2; }
fi
exec python3 scripts/bench.py "$@"
