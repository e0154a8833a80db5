#!/usr/bin/env python3
"""matvisfs benchmark: generated releases served on loopback, read through
matvisfs and through what users would otherwise use, in the same run.

Run through scripts/bench.sh, which builds the binaries and the reference
client's venv first. Needs root (mounting, dropping the page cache), nginx
and curl. Prints one table of medians over RUNS runs, with each case's
target and whether this run met it.
"""

import json
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
SERVE = ROOT / "target/release/examples/serve"
REFCLIENT = ROOT / "scripts/bench_refclient.py"
TAG = "v2026.04.2"

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
MATERIALS = int(os.environ.get("MATERIALS", "100"))
PX = int(os.environ.get("PX", "128"))
FILES = int(os.environ.get("FILES", "500"))
LARGE = int(os.environ.get("LARGE", "3000"))
BIG_MB = int(os.environ.get("BIG_MB", "64"))
DELAY_MS = int(os.environ.get("DELAY_MS", "20"))
VENV_PYTHON = Path(os.environ.get("REFCLIENT_PYTHON", ROOT / "target/bench-venv/bin/python"))
OPENS = 1000
# Groups of cases to run: cold (1), warm (2, 3, 5), tree (4, 6), hub (7).
GROUPS = os.environ.get("CASES", "cold,warm,tree,hub").split(",")
# Where the cold-read mounts keep their caches (default: the work directory);
# e.g. /dev/shm to take the disk out of the figures.
CACHE_ROOT = os.environ.get("CACHE_ROOT")


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, **kw)


def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on port {port}")


class Nginx:
    """Serves each dataset directory at /<name>/resolve/, with an access log
    to count requests."""

    def __init__(self, work: Path, roots: dict):
        self.port = free_port()
        self.work = work
        locations = "\n".join(
            f"        location /{name}/resolve/ {{ alias {root}/; }}" for name, root in roots.items()
        )
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
    keepalive_requests 1000000;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
{locations}
    }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        run(nginx, "-e", work / "nginx-error.log", "-p", work, "-c", conf)
        wait_for_port(self.port)

    def base(self, name):
        return f"http://127.0.0.1:{self.port}/{name}/resolve"

    def request_count(self):
        log = self.work / "access.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def requests_since(self, count):
        log = self.work / "access.log"
        return log.read_text().splitlines()[count:] if log.exists() else []

    def stop(self):
        pid = self.work / "nginx.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), 15)


class DelayServer:
    """The project's test server on one dataset, adding latency to every
    request, like a far-away Hugging Face."""

    def __init__(self, root: Path, delay_ms: int):
        self.process = subprocess.Popen(
            [str(SERVE), str(root), str(delay_ms)], stdout=subprocess.PIPE, text=True
        )
        self.base = self.process.stdout.readline().strip()
        # The same release in the Hub's layout, with its API.
        self.hub_base = self.process.stdout.readline().strip()

    def stop(self):
        self.process.kill()
        self.process.wait()


class Mount:
    """A background matvisfs mount for the duration of a `with` block."""

    def __init__(self, base: str, cache: Path, mountpoint: Path, *flags):
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        run(BIN, "mount", mountpoint, "--base-url", base, "--cache-dir", cache, *flags)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run([str(BIN), "unmount", str(self.mountpoint)], check=False)

    def daemon_pid(self):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"matvisfs") and str(self.mountpoint).encode() in argv:
                return int(proc.name)
        return None

    def peak_rss_mib(self):
        pid = self.daemon_pid()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def passthrough(self, cache: Path):
        log = cache / "matvisfs.log"
        text = log.read_text() if log.exists() else ""
        return "passed through to the kernel" in text


def parallel_command(command, args, parallel):
    """Runs `command` over `args` with `parallel` processes (xargs, 16 args
    per process); returns seconds."""
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-0", "-P", str(parallel), "-n", "16", *command],
        input=b"\0".join(str(a).encode() for a in args),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def read_all(paths, parallel):
    return parallel_command(["cat"], paths, parallel)


def curl_all(urls, parallel):
    return parallel_command(["curl", "-sf", "-L", "-o", "/dev/null"], urls, parallel)


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def sequential_mb_per_s(path: Path, size: int):
    seconds = timed(lambda: run("dd", f"if={path}", "of=/dev/null", "bs=1M", stderr=subprocess.DEVNULL))
    return size / seconds / 1e6


class Table:
    def __init__(self):
        self.rows = []
        self.notes = []

    def add(self, case, ours, baseline_name, theirs, unit="s", target=None, higher_is_better=False):
        """`ours`/`theirs`: samples. The ratio is matvisfs's speed relative
        to the baseline (above 1: matvisfs is faster)."""
        a = statistics.median(ours)
        b = statistics.median(theirs) if theirs else None
        ratio = None
        if b is not None:
            ratio = a / b if higher_is_better else b / a
        met = ""
        if target is not None and ratio is not None:
            met = "yes" if target(ratio) else "**no**"
        self.rows.append((case, fmt(a, unit), baseline_name, fmt(b, unit) if b is not None else "",
                          f"{ratio:.2f}x" if ratio is not None else "", target.__doc__ if target else "", met))

    def value(self, case, text, target="", met=""):
        self.rows.append((case, text, "", "", "", target, met))

    def print(self, header):
        print(header)
        print("| case | matvisfs | baseline | baseline | speed vs baseline | target | met |")
        print("|---|---|---|---|---|---|---|")
        for row in self.rows:
            print("| " + " | ".join(row) + " |")
        for note in self.notes:
            print(f"- {note}")


def fmt(value, unit):
    if unit == "s":
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"
    return f"{value:.0f} {unit}"


def at_least(x):
    def check(ratio):
        return ratio >= x - 1e-9
    check.__doc__ = f">= {x}x"
    return check


def at_most_times_slower(x):
    def check(ratio):
        return ratio >= 1 / x - 1e-9
    check.__doc__ = f"<= {x}x the time"
    return check


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark mounts and drops the page cache")
    work = Path(tempfile.mkdtemp(prefix="matvisfs-bench-"))
    try:
        bench(work)
    finally:
        subprocess.run(["umount", "-l", str(work / "mnt")], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)


def generate(directory: Path, *args):
    run(GENERATE, directory, TAG, *args, stdout=subprocess.DEVNULL)


def bench(work: Path):
    started = time.perf_counter()
    roots = {"sample": work / "sample", "large": work / "large", "big": work / "big"}
    generate(roots["sample"], "sample", MATERIALS, PX)
    generate(roots["large"], "large", LARGE)
    generate(roots["big"], "big", BIG_MB)
    nginx = Nginx(work, roots)
    delayed = DelayServer(roots["sample"], DELAY_MS)
    table = Table()
    try:
        if "cold" in GROUPS:
            cold_reads(work, roots["sample"], nginx, delayed, table)
        if "warm" in GROUPS:
            warm_reads(work, roots, nginx, table)
        if "tree" in GROUPS:
            tree_walks(work, roots["large"], nginx, table)
        if "hub" in GROUPS:
            hub_sizes(work, roots["sample"], delayed, table)
    finally:
        delayed.stop()
        nginx.stop()
    table.print(
        f"\nmatvisfs benchmark, medians of {RUNS} runs, "
        f"{os.cpu_count()} cores, kernel {os.uname().release}, "
        f"{time.perf_counter() - started:.0f} s in all\n"
    )


def sample_files(data: Path):
    rel = sorted(str(p.relative_to(data / TAG)) for p in (data / TAG / "ambientcg").rglob("*.png"))
    step = max(1, len(rel) // FILES)
    return rel[::step][:FILES]


def reference_client(base, rel, cache: Path, parallel):
    """Seconds for the reference client to fetch `rel`, or None without it."""
    if not VENV_PYTHON.exists():
        return None
    lines = "\n".join(" ".join(r.removesuffix(".png").split("/")) for r in rel)
    out = subprocess.run(
        [str(VENV_PYTHON), str(REFCLIENT), TAG, str(cache), str(parallel)],
        input=lines, capture_output=True, text=True, check=True,
        env={**os.environ, "MAT_VIS_HF_BASE": base},
    )
    seconds, _ = out.stdout.split()
    return float(seconds)


def cold_reads(work, data, nginx, delayed, table):
    rel = sample_files(data)
    total_mb = sum((data / TAG / r).stat().st_size for r in rel) / 1e6
    mnt = work / "mnt"
    servers = [("nginx", nginx.base("sample")), (f"+{DELAY_MS} ms", delayed.base)]
    n = 0
    for server, base in servers:
        urls = [f"{base}/{TAG}/{r}" for r in rel]
        for parallel in (1, 16):
            ours, curl, ref = [], [], []
            for _ in range(RUNS):
                n += 1
                cache = Path(CACHE_ROOT or work) / f"matvisfs-bench-cold-{os.getpid()}-{n}"
                with Mount(base, cache, mnt):
                    ours.append(read_all([mnt / TAG / r for r in rel], parallel))
                if CACHE_ROOT:
                    shutil.rmtree(cache, ignore_errors=True)
                curl.append(curl_all(urls, parallel))
                seconds = reference_client(base, rel, work / f"ref-{n}", parallel)
                if seconds is not None:
                    ref.append(seconds)
            case = f"1. cold read, {len(rel)} files ({total_mb:.0f} MB), {parallel} reader(s), {server}"
            table.add(case, ours, "curl", curl,
                      target=at_least(0.8) if parallel == 16 else None)
            if ref:
                table.add(case, ours, "mat-vis-client", ref,
                          target=at_least(5) if parallel == 16 else None)
    if not VENV_PYTHON.exists():
        table.notes.append(f"reference client not measured: no {VENV_PYTHON} (scripts/bench.sh makes it)")


def warm_reads(work, roots, nginx, table):
    data = roots["sample"]
    rel = sample_files(data)
    mnt = work / "mnt"
    cache = work / "warm"
    local = data / TAG
    with Mount(nginx.base("sample"), cache, mnt) as m:
        paths = [mnt / TAG / r for r in rel]
        read_all(paths, 16)
        for dropped in (True, False):
            ours, theirs = [], []
            if not dropped:
                read_all(paths, 1)
                read_all([local / r for r in rel], 1)
            for _ in range(RUNS):
                if dropped:
                    drop_caches()
                ours.append(read_all(paths, 1))
                if dropped:
                    drop_caches()
                theirs.append(read_all([local / r for r in rel], 1))
            state = "page cache dropped" if dropped else "page cache hot"
            table.add(f"2. warm read, {len(rel)} files, {state}", ours, "local disk", theirs,
                      target=at_least(0.9))
        passthrough = m.passthrough(cache)

    before = nginx.request_count()
    with Mount(nginx.base("sample"), cache, mnt):
        for i in range(OPENS):
            with open(mnt / TAG / rel[i % len(rel)], "rb"):
                pass
    session = nginx.requests_since(before)
    manifests = sum("release-manifest.json" in line for line in session)
    table.value(f"5. requests for {OPENS} opens in one session",
                f"{len(session)} ({manifests} for the manifest)", "1 manifest request",
                "yes" if manifests == 1 else "**no**")

    big_rel = "ambientcg/8k/Huge001/noise.png"
    big_local = roots["big"] / TAG / big_rel
    size = big_local.stat().st_size
    with Mount(nginx.base("big"), work / "big-cache", mnt):
        big = mnt / TAG / big_rel
        run("cat", big, stdout=subprocess.DEVNULL)
        for dropped in (True, False):
            ours, theirs = [], []
            if not dropped:
                run("cat", big, big_local, stdout=subprocess.DEVNULL)
            for _ in range(RUNS):
                if dropped:
                    drop_caches()
                ours.append(sequential_mb_per_s(big, size))
                if dropped:
                    drop_caches()
                theirs.append(sequential_mb_per_s(big_local, size))
            state = "page cache dropped" if dropped else "page cache hot"
            table.add(f"3. {size / 1e6:.0f} MB sequential read, {state}", ours, "local disk", theirs,
                      unit="MB/s", target=at_least(0.9), higher_is_better=True)
    table.notes.append(
        "warm reads went through FUSE passthrough" if passthrough
        else "warm reads went through matvisfs (no FUSE passthrough on this kernel)"
    )


def tree_walks(work, data, nginx, table):
    mnt = work / "mnt"
    local = data / TAG
    files = sum(1 for p in local.rglob("*") if p.is_file())
    walks = {
        "find": lambda root: run("find", root, stdout=subprocess.DEVNULL),
        "ls -lR": lambda root: run("ls", "-lR", root, stdout=subprocess.DEVNULL),
    }
    peak = 0.0
    for name, walk in walks.items():
        walk(local)
        theirs = [timed(lambda: walk(local)) for _ in range(RUNS)]
        drop_caches()
        local_cold = timed(lambda: walk(local))
        # A new cache; a new mount on that cache; the same walk again in
        # that mount (the kernel has the tree cached by then).
        states = {"empty cache": ([], []), "next mount": ([], []), "again in the mount": ([], [])}
        for i in range(RUNS):
            cache = work / f"tree-{name}-{i}"
            for state in ("empty cache", "next mount"):
                before = nginx.request_count()
                with Mount(nginx.base("large"), cache, mnt) as m:
                    states[state][0].append(timed(lambda: walk(mnt / TAG)))
                    states[state][1].append(len(nginx.requests_since(before)))
                    if state == "next mount":
                        before = nginx.request_count()
                        states["again in the mount"][0].append(timed(lambda: walk(mnt / TAG)))
                        states["again in the mount"][1].append(len(nginx.requests_since(before)))
                    peak = max(peak, m.peak_rss_mib())
        for state, (ours, requests) in states.items():
            target = None if name == "ls -lR" and state == "empty cache" else at_most_times_slower(3)
            table.add(f"4. {name}, {files} files, {state} ({statistics.median(requests):.0f} requests)",
                      ours, "local tree", theirs, target=target)
        table.notes.append(f"{name} of the local tree with the page cache dropped: {fmt(local_cold, 's')}")
    table.value("6. daemon peak RSS over case 4", f"{peak:.0f} MiB", "<= 64 MiB",
                "yes" if peak <= 64 else "**no**")


def session_requests(mnt: Path):
    """Requests of the mount's session by kind, from its statistics."""
    stats = json.loads((mnt / ".matvisfs/stats.json").read_text())
    return {kind: sum(by_status.values()) for kind, by_status in stats["requests"].items()}


def hub_sizes(work, data, delayed, table):
    """7. `ls -lR` of one tier from an empty cache on a Hub-like server with
    latency: sizes from the Hub API's tree listing vs one HEAD per file."""
    tier = "ambientcg/1k"
    files = sum(1 for _ in (data / TAG / tier).rglob("*.png"))
    mnt = work / "mnt"
    samples = {}
    for label, flags in (("api", ()), ("head", ("--no-hf-api",))):
        times, requests = [], []
        for i in range(RUNS):
            with Mount(delayed.hub_base, work / f"hub-{label}-{i}", mnt, *flags):
                times.append(timed(lambda: run("ls", "-lR", mnt / TAG / tier, stdout=subprocess.DEVNULL)))
                counts = session_requests(mnt)
                requests.append((counts.get("api", 0), counts.get("size", 0)))
        samples[label] = (times, requests)
    (api_times, api_requests), (head_times, head_requests) = samples["api"], samples["head"]
    api_calls, api_heads = api_requests[0]
    table.add(f"7. ls -lR of one tier ({files} files), empty cache, +{DELAY_MS} ms, Hugging Face layout: "
              f"Hub API ({api_calls} API calls, {api_heads} HEADs)",
              api_times, f"HEAD per file, --no-hf-api ({head_requests[0][1]} HEADs)", head_times)


if __name__ == "__main__":
    main()
