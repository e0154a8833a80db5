#!/usr/bin/env bash
# The adversarial test of the mount's first promise, run long:
#   scripts/adversary.sh [SECONDS] [SEED]
# SECONDS of load (default 600) over as many mount sessions as fit, SEED
# (default: new each run, printed) drives every choice. Builds release and
# prints the summary; exits 1 with the violations and the events that show
# them. As root, with /dev/fuse and fusermount3.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600}
seed=${2:-$(( $(date +%s) % 1000000007 ))}
echo "adversary: ${duration} s, seed ${seed}"
cargo build --release --locked
MATVISFS_ADVERSARY_SECONDS=$duration MATVISFS_ADVERSARY_SEED=$seed \
    cargo test --release --locked --test adversary -- --nocapture --test-threads 1
