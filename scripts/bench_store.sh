#!/usr/bin/env bash
# scripts/bench_store.sh [RUNS]: the store's database under four processes
# (benches/store.rs), RUNS times (default 3) on this tree and as many on a
# baseline commit, by default the last one that kept the cache index and
# file records in the hand-written shared logs (BASELINE=<commit> to pick
# another). Both run the same workload; only the store differs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=${1:-3}
deleted=$(git rev-list -1 HEAD -- src/store/log.rs)
baseline=${BASELINE:-${deleted}^}
work=$(mktemp -d)
cleanup() {
    git worktree remove --force "$work/baseline" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git worktree add --detach "$work/baseline" "$baseline" >/dev/null 2>&1
for version in current baseline; do
    dir=$root
    [ "$version" = baseline ] && dir=$work/baseline
    echo "== $version ($(git -C "$dir" rev-parse --short HEAD)$([ "$version" = current ] && ! git diff --quiet && echo ', with uncommitted changes'))"
    for run in $(seq "$runs"); do
        echo "-- run $run"
        (cd "$dir" && CARGO_TARGET_DIR=$root/target BENCH_DIR=$work cargo bench --quiet --bench store 2>/dev/null)
    done
done
