#!/usr/bin/env python3
"""Warm reads (page cache hot) of the sample through three mounts of one
cache: over /dev/fuse with passthrough, over /dev/fuse without it, and over
FUSE's io_uring transport (`--io-uring`, the fuse module's `enable_uring`
set only while it mounts); the three take turns in every round, and each
round's ratio is given, since figures on a shared machine move between
rounds. Root, nginx and the release binaries (`scripts/bench.sh` builds
them; or `cargo build --release --bin matvisfs --example generate
--example serve --example readall`).
    python3 scripts/bench_uring.py [ROUNDS]   (default 7)
"""
import os
import shutil
import statistics
import subprocess
import sys

from benchlib import (
    TAG, SAMPLE_MATERIALS, SAMPLE_PX, Mount, Nginx, generate, read_all, sample_files,
    uring_mount, work_dir,
)

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
if os.geteuid() != 0:
    raise SystemExit("run as root: the benchmark mounts and sets enable_uring")
work = work_dir("matvisfs-bench-uring-")
nginx = None
try:
    data = work / "sample"
    generate(data, "sample", SAMPLE_MATERIALS, SAMPLE_PX)
    rel = sample_files(data)
    total = sum((data / TAG / r).stat().st_size for r in rel)
    nginx = Nginx(work, {"sample": data})
    base = nginx.base("sample")
    cache = work / "cache"
    mounts = {"dev-fuse": work / "mnt-a", "dev-fuse-no-pt": work / "mnt-b",
              "uring": work / "mnt-c"}
    load = [os.getloadavg()[0]]
    with Mount(base, cache, mounts["dev-fuse"]) as a:
        read_all([mounts["dev-fuse"] / TAG / r for r in rel], 16, total)
        a.wait_durable()
        with Mount(base, cache, mounts["dev-fuse-no-pt"], "--no-passthrough"), \
                uring_mount(base, cache, mounts["uring"]) as ring:
            if not ring:
                raise SystemExit("this kernel has no FUSE over io_uring")
            paths = {k: [m / TAG / r for r in rel] for k, m in mounts.items()}
            before = ring.stats()["fuse"]["ring_requests"]
            for parallel in (16, 1):
                for k in paths:
                    read_all(paths[k], parallel, total)
                samples = {k: [] for k in paths}
                for _ in range(ROUNDS):
                    for k in paths:
                        read_all(paths[k], parallel, total)
                        samples[k].append(read_all(paths[k], parallel, total))
                load.append(os.getloadavg()[0])
                med = {k: statistics.median(v) for k, v in samples.items()}
                us = {k: med[k] / len(rel) * 1e6 for k in med}
                ratios = [s_np / s_u for s_np, s_u in zip(samples["dev-fuse-no-pt"], samples["uring"])]
                ratios_pt = [s / s_u for s, s_u in zip(samples["dev-fuse"], samples["uring"])]
                print(f"{parallel} readers, {len(rel)} files, {ROUNDS} rounds: µs a file (median): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in us.items()))
                print(f"  per round, /dev/fuse no-passthrough time / io_uring time: "
                      + " ".join(f"{r:.2f}" for r in ratios) + f"  median {statistics.median(ratios):.2f}")
                print(f"  per round, /dev/fuse passthrough time / io_uring time: "
                      + " ".join(f"{r:.2f}" for r in ratios_pt) + f"  median {statistics.median(ratios_pt):.2f}")
            after = ring.stats()["fuse"]["ring_requests"]
            print(f"ring requests during the rounds: {after - before}")
    print("load average (1 min) at start and after each part:", " ".join(f"{l:.1f}" for l in load))
finally:
    for m in work.glob("mnt*"):
        subprocess.run(["umount", "-l", str(m)], stderr=subprocess.DEVNULL, check=False)
    if nginx:
        nginx.stop()
    shutil.rmtree(work, ignore_errors=True)
