#!/usr/bin/env python3
"""Times the reference client (mat-vis-client) fetching textures, for
scripts/bench.py. Runs inside the venv that holds the client; the base URL
comes from MAT_VIS_HF_BASE, read by the client at import.

    bench_refclient.py <TAG> <CACHE_DIR> <PARALLEL> < lines of "source tier material channel"

Prints "<seconds> <bytes>". The manifest is loaded before timing starts, as
matvisfs loads it at mount.
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mat_vis_client import MatVisClient


def main():
    tag, cache_dir, parallel = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    wanted = [line.split() for line in sys.stdin if line.strip()]
    client = MatVisClient(tag=tag, cache_dir=cache_dir)
    client.manifest  # noqa: B018 -- loads it

    def fetch(item):
        source, tier, material, channel = item
        return len(client.fetch_texture(source, material, channel, tier))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        total = sum(pool.map(fetch, wanted))
    print(f"{time.perf_counter() - started:.6f} {total}")


if __name__ == "__main__":
    main()
