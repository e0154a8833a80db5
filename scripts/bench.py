#!/usr/bin/env python3
"""matvisfs benchmark: a generated release served by nginx on loopback, read
through matvisfs and through the usual alternatives, in the same run.

Run through scripts/bench.sh (which builds the binaries first). Needs root
(mounting, dropping the page cache), nginx and curl. Prints one table of
medians over RUNS runs.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/matvisfs"
GENERATE = ROOT / "target/release/examples/generate"
TAG = "v2026.04.2"
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
MATERIALS = int(os.environ.get("MATERIALS", "100"))
PX = int(os.environ.get("PX", "128"))
FILES = int(os.environ.get("FILES", "500"))
OPENS = 1000


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, **kw)


def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, data: Path, work: Path):
        self.port = free_port()
        self.work = work
        conf = work / "nginx.conf"
        conf.write_text(f"""
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
worker_processes 2;
events {{ worker_connections 1024; }}
http {{
    access_log {work}/access.log;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    server {{ listen 127.0.0.1:{self.port}; location /resolve/ {{ alias {data}/; }} }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        run(nginx, "-e", work / "nginx-error.log", "-p", work, "-c", conf)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("nginx did not start")

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}/resolve"

    def requests(self):
        log = self.work / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop(self):
        pid = self.work / "nginx.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), 15)


class Mount:
    def __init__(self, base: str, cache: Path, mountpoint: Path):
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        run(BIN, "mount", mountpoint, "--base-url", base, "--cache-dir", cache)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run([str(BIN), "unmount", str(self.mountpoint)], check=False)


def read_all(paths, parallel):
    """cat the files with `parallel` readers; returns seconds."""
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-0", "-P", str(parallel), "-n", "16", "cat"],
        input=b"\0".join(str(p).encode() for p in paths),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def curl_all(urls, parallel):
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-0", "-P", str(parallel), "-n", "16", "curl", "-sf", "-L"],
        input=b"\0".join(u.encode() for u in urls),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark mounts and drops the page cache")
    work = Path(tempfile.mkdtemp(prefix="matvisfs-bench-"))
    try:
        bench(work)
    finally:
        subprocess.run(["umount", "-l", str(work / "mnt")], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path):
    data = work / "data"
    run(GENERATE, data, TAG, MATERIALS, PX, stdout=subprocess.DEVNULL)
    nginx = Nginx(data, work)
    try:
        rel = sorted(
            str(p.relative_to(data / TAG))
            for p in (data / TAG / "ambientcg").rglob("*.png")
        )[:FILES]
        total_bytes = sum((data / TAG / r).stat().st_size for r in rel)
        urls = [f"{nginx.base}/{TAG}/{r}" for r in rel]
        local = work / "local"
        shutil.copytree(data / TAG, local)
        mnt = work / "mnt"
        rows = []

        for parallel in (1, 16):
            ours, theirs = [], []
            for i in range(RUNS):
                cache = work / f"cold-{parallel}-{i}"
                with Mount(nginx.base, cache, mnt):
                    paths = [mnt / TAG / r for r in rel]
                    ours.append(read_all(paths, parallel))
                theirs.append(curl_all(urls, parallel))
            rows.append((f"cold read, {len(rel)} files, {parallel} reader(s)", ours, theirs, "curl"))

        warm_cache = work / "cold-1-0"
        ours, theirs = [], []
        with Mount(nginx.base, warm_cache, mnt):
            paths = [mnt / TAG / r for r in rel]
            for _ in range(RUNS):
                drop_caches()
                ours.append(read_all(paths, 1))
                drop_caches()
                theirs.append(read_all([local / r for r in rel], 1))
        rows.append((f"warm read, {len(rel)} files", ours, theirs, "local disk"))

        ours, theirs, cold_requests = [], [], 0
        for i in range(RUNS):
            cache = work / f"list-{i}"
            before = len(nginx.requests())
            with Mount(nginx.base, cache, mnt):
                ours.append(timed(lambda: run("ls", "-lR", mnt / TAG, stdout=subprocess.DEVNULL)))
            cold_requests = len(nginx.requests()) - before
            theirs.append(timed(lambda: run("ls", "-lR", local, stdout=subprocess.DEVNULL)))
        rows.append(("ls -lR of the tag, empty cache", ours, theirs, "local tree"))
        ours, warm_requests = [], 0
        for _ in range(RUNS):
            before = len(nginx.requests())
            with Mount(nginx.base, work / "list-0", mnt):
                ours.append(timed(lambda: run("ls", "-lR", mnt / TAG, stdout=subprocess.DEVNULL)))
            warm_requests = len(nginx.requests()) - before
        rows.append(("ls -lR of the tag, sizes cached", ours, theirs, "local tree"))

        before = len(nginx.requests())
        with Mount(nginx.base, warm_cache, mnt):
            paths = [mnt / TAG / r for r in rel]
            for i in range(OPENS):
                with open(paths[i % len(paths)], "rb"):
                    pass
        session = nginx.requests()[before:]
        manifest_requests = sum("release-manifest.json" in line for line in session)

        print(f"\nmatvisfs benchmark: {len(rel)} PNG files ({total_bytes / 1e6:.1f} MB) of a generated release "
              f"({MATERIALS} materials/source, {PX}px at 1k), nginx on loopback, medians of {RUNS} runs\n")
        print("| case | matvisfs | baseline | baseline time | matvisfs speed vs baseline |")
        print("|---|---|---|---|---|")
        for name, ours, theirs, baseline in rows:
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"| {name} | {a * 1000:.0f} ms | {baseline} | {b * 1000:.0f} ms | {b / a:.2f}x |")
        print(f"\nrequests for ls -lR: {cold_requests} with an empty cache, {warm_requests} with sizes cached")
        print(f"requests for {OPENS} opens in one session: {len(session)} in all, {manifest_requests} for the manifest")
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
