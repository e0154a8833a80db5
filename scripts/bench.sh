#!/usr/bin/env bash
# Benchmark matvisfs against curl and local disk on a generated release
# served by nginx on loopback; prints a table of medians.
#   scripts/bench.sh [RUNS]      (env: MATERIALS, PX, FILES)
# Needs root, nginx and curl (apt-get install -y nginx-light curl fuse3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin matvisfs --example generate
exec python3 scripts/bench.py "$@"
