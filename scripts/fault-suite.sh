#!/usr/bin/env bash
# Runs the reliability matrix (tests/fault_matrix.rs, one test per row)
# against real mounts and prints its table: fault, expected, observed, time
# to error, in the matrix's order, from the line each row writes (failed
# rows too). Arguments go to the test binary: `scripts/fault-suite.sh 503`
# runs the rows whose name contains 503. Exits non-zero if any row fails.
# Needs root and /dev/fuse, like the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
rows=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$rows" "$log"' EXIT
FAULT_MATRIX_ROWS="$rows" cargo test --release --locked --test fault_matrix -- "$@" >"$log" 2>&1
status=$?
echo "| fault | expected | observed | time to error |"
echo "|---|---|---|---|"
cat "$rows"/*.md 2>/dev/null
if [ "$status" -ne 0 ]; then
    echo
    # libtest's summary: each failed test's output, then their names.
    sed -n '/^failures:$/,$p' "$log" | tail -n 60
    # No row ran at all (a build error, say): the end of the log.
    compgen -G "$rows/*.md" >/dev/null || tail -n 40 "$log"
fi
exit "$status"
