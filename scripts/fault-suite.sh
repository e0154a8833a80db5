#!/usr/bin/env bash
# Runs the reliability matrix (tests/fault_matrix.rs) against real mounts and
# prints its table: fault, expected, observed, time to error. Exits non-zero
# if any row fails. Needs root and /dev/fuse, like the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --locked --test fault_matrix -- --nocapture >"$log" 2>&1
status=$?
grep '^|' "$log"
if [ "$status" -ne 0 ]; then
    echo
    tail -n 40 "$log"
fi
exit "$status"
