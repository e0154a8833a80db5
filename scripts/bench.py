#!/usr/bin/env python3
"""matvisfs benchmark: generated releases served on loopback, read through
matvisfs and, in the same run, through the strongest alternatives: the
wire (one curl process, N parallel transfers over kept-alive connections),
rclone's FUSE mount of the same mirror, the same files on local disk, and
the reference client.

Run through scripts/bench.sh, which builds the binaries and the reference
client's venv first. Prints one table of medians over RUNS runs, with each
case's goal and whether this run met it, then every sample.
"""

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import (
    BIN, TAG, SAMPLE_MATERIALS, SAMPLE_PX, ROOT, DelayServer, Mount, Nginx, PassthroughLl, Rclone,
    clear_cache, uring_mount,
    curl_all, drop_caches, fmt_seconds, generate, median, read_all, sample_files, timed,
    traffic, work_dir,
)

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
LARGE = int(os.environ.get("LARGE", "3000"))
BIG_MB = int(os.environ.get("BIG_MB", "256"))
DELAY_MS = int(os.environ.get("DELAY_MS", "20"))
HOSTILE = [int(n) for n in os.environ.get("HOSTILE", "100000,1000000").split(",") if n]
VENV_PYTHON = Path(os.environ.get("REFCLIENT_PYTHON", ROOT / "target/bench-venv/bin/python"))
REFCLIENT = ROOT / "scripts/bench_refclient.py"
# Groups of cases: cold (1, 2), latency (3), warm (4), big (5), tree (6),
# memory (7), hub (8, 9), and with BEFORE (an earlier build of matvisfs)
# set, before (10).
GROUPS = os.environ.get("CASES", "cold,latency,warm,big,tree,memory,hub,before").split(",")
BEFORE = os.environ.get("BEFORE")
# Where the mounts keep their caches (default: the work directory, on the
# disk the benchmark runs from); e.g. /dev/shm to take the disk out.
CACHE_ROOT = os.environ.get("CACHE_ROOT")
MIB = 1 << 20


class Table:
    """One row per case: the baseline, matvisfs against it, the goal, and
    the peers against the same baseline."""

    COLUMNS = ("case", "baseline", "its time", "matvisfs", "vs baseline", "goal", "met",
               "rclone mount", "vs baseline", "mat-vis-client", "vs baseline")

    def __init__(self):
        self.rows = []
        self.notes = []
        self.samples = []

    def timing(self, case, baseline_name, baseline, ours, goal=None, rclone=None, ref=None,
               unit="s"):
        """Samples in seconds (unit "s": lower is better) or MB/s (higher
        is better); ratios are speed relative to the baseline."""
        base = median(baseline)

        def cell(samples):
            if not samples:
                return "", "", None
            value = median(samples)
            ratio = value / base if unit == "MB/s" else base / value
            return fmt(value, unit), f"{ratio:.2f}x", ratio

        ours_text, ours_ratio, ratio = cell(ours)
        met = "" if goal is None else ("yes" if ratio >= goal - 1e-9 else "**no**")
        self.rows.append((case, baseline_name, fmt(base, unit), ours_text, ours_ratio,
                          f">= {goal}x" if goal is not None else "", met,
                          *cell(rclone)[:2], *cell(ref)[:2]))
        for name, samples in (("baseline", baseline), ("matvisfs", ours), ("rclone", rclone),
                              ("mat-vis-client", ref)):
            if samples:
                self.samples.append((case, name, ", ".join(fmt(s, unit) for s in samples)))

    def value(self, case, baseline_name, baseline_text, ours_text, goal_text="", met=""):
        self.rows.append((case, baseline_name, baseline_text, ours_text, "", goal_text, met,
                          "", "", "", ""))

    def print(self, header):
        print(header)
        print("| " + " | ".join(self.COLUMNS) + " |")
        print("|" + "---|" * len(self.COLUMNS))
        for row in self.rows:
            print("| " + " | ".join(row) + " |")
        print()
        for note in self.notes:
            print(f"- {note}")
        print("\nSamples, in run order:\n")
        for case, name, samples in self.samples:
            print(f"- {case}, {name}: {samples}")


def fmt(value, unit):
    return fmt_seconds(value) if unit == "s" else f"{value:.0f} {unit}"


def per_file(counts, files):
    return ", ".join(f"{n / files:.2f} {kind}" for kind, n in sorted(counts.items()) if n)


def counted(counts):
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark mounts and drops the page cache")
    work = work_dir("matvisfs-bench-")
    try:
        bench(work)
    finally:
        for mnt in work.glob("mnt*"):
            subprocess.run(["umount", "-l", str(mnt)], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)


def cache_dir(work, name):
    return Path(CACHE_ROOT or work) / f"matvisfs-bench-{os.getpid()}-{name}"


def bench(work: Path):
    started = time.perf_counter()
    load_before = os.getloadavg()
    roots = {"sample": work / "sample"}
    generate(roots["sample"], "sample", SAMPLE_MATERIALS, SAMPLE_PX)
    if "big" in GROUPS:
        roots["big"] = work / "big"
        generate(roots["big"], "big", BIG_MB)
    if "tree" in GROUPS:
        roots["large"] = work / "large"
        generate(roots["large"], "large", LARGE)
    if "memory" in GROUPS:
        for n in HOSTILE:
            roots[f"hostile{n}"] = work / f"hostile{n}"
            generate(roots[f"hostile{n}"], "hostile", n)
    nginx = Nginx(work, roots)
    delayed = DelayServer(roots["sample"], DELAY_MS)
    table = Table()
    failure = None
    try:
        if "cold" in GROUPS:
            cold_reads(work, roots["sample"], nginx, table)
        if "latency" in GROUPS:
            latency_reads(work, roots["sample"], delayed, table)
        if "warm" in GROUPS:
            warm_reads(work, roots["sample"], nginx, table)
        if "big" in GROUPS:
            big_read(work, roots["big"], nginx, table)
        if "tree" in GROUPS:
            tree_walks(work, roots["large"], nginx, table)
        if "memory" in GROUPS:
            hostile_catalogs(work, roots, nginx, table)
        if "hub" in GROUPS:
            hub_sizes(work, roots["sample"], delayed, table)
            hub_dedup(work, roots["sample"], delayed, table)
        if "before" in GROUPS and BEFORE:
            against_earlier_build(work, roots["sample"], nginx, table)
    except Exception as e:
        # The cases measured so far are still printed.
        failure = e
        table.notes.append(f"the run stopped early: {e!r}")
    finally:
        delayed.stop()
        nginx.stop()
    load_after = os.getloadavg()
    command = f"scripts/bench.sh {RUNS}" + (f" (CASES={','.join(GROUPS)})" if "CASES" in os.environ else "")
    table.print(
        f"\n`{command}`: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"kernel {os.uname().release}, caches on {filesystem(Path(CACHE_ROOT or work))}, "
        f"medians of {RUNS} runs, "
        f"{time.perf_counter() - started:.0f} s in all; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n"
    )
    if failure:
        raise SystemExit(f"benchmark failed: {failure!r}")


def filesystem(path: Path):
    """The type of the filesystem holding `path`, and whether ext4 keeps a
    journal there (without one, creating files just after deleting many
    costs more: see docs/benchmarks.md, "Where the time goes")."""
    best = ("", "?", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, target, kind = line.split()[:3]
        if (str(path.resolve()) + "/").startswith(target.rstrip("/") + "/") \
                and len(target) >= len(best[0]):
            best = (target, kind, device)
    target, kind, device = best
    if kind == "ext4":
        journal = Path(f"/proc/fs/jbd2/{Path(device).name}-8").exists()
        return f"ext4 ({'with' if journal else 'without'} a journal)"
    return kind


def small_files(data):
    rel = sample_files(data)
    return rel, sum((data / TAG / r).stat().st_size for r in rel)


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


def cold_session(base, cache, mnt, paths, parallel, total, nginx=None):
    """One session's cold read: (seconds, requests by kind, nginx traffic,
    seconds until the downloads were durable)."""
    with Mount(base, cache, mnt) as m:
        mark = nginx.mark() if nginx else 0
        seconds = read_all(paths, parallel, total)
        durable = m.wait_durable()
        requests = m.requests()
        seen = traffic(nginx.since(mark)) if nginx else None
    return seconds, requests, seen, durable


def cold_reads(work, data, nginx, table):
    """Cases 1 and 2: an empty cache (sizes unknown: a HEAD and a GET per
    file), then the next session after `matvisfs cache clear` (sizes
    known: a GET per file), against one curl process and rclone."""
    rel, total = small_files(data)
    base = nginx.base("sample")
    urls = [f"{base}/{TAG}/{r}" for r in rel]
    mnt = work / "mnt"
    paths = [mnt / TAG / r for r in rel]
    for parallel in (16, 1):
        curl, unknown, known, rclone = [], [], [], []
        seen = {}
        for i in range(RUNS):
            mark = nginx.mark()
            curl.append(curl_all(urls, parallel, work))
            seen["curl"] = traffic(nginx.since(mark))
            cache = cache_dir(work, f"cold-{parallel}-{i}")
            seconds, requests, seen["unknown"], durable = cold_session(
                base, cache, mnt, paths, parallel, total, nginx)
            unknown.append(seconds)
            seen["unknown requests"], seen["unknown durable"] = requests, durable
            clear_cache(cache)
            seconds, requests, seen["known"], durable = cold_session(
                base, cache, mnt, paths, parallel, total, nginx)
            known.append(seconds)
            seen["known requests"], seen["known durable"] = requests, durable
            mark = nginx.mark()
            with Rclone(base + "/", work / f"rclone-cold-{parallel}-{i}", mnt):
                rclone.append(read_all(paths, parallel, total))
            seen["rclone"] = traffic(nginx.since(mark))
        ref = reference_client(base, rel, work / f"ref-{parallel}", parallel)
        readers = f"{parallel} reader{'s' if parallel > 1 else ''}"
        wire = f"curl --parallel-max {parallel}"
        files = f"{len(rel)} files ({total / 1e6:.1f} MB)"
        table.timing(f"1. cold, empty cache (sizes unknown), {files}, {readers}", wire, curl,
                     unknown, goal=0.4 if parallel == 16 else None, rclone=rclone,
                     ref=[ref] if ref else None)
        table.timing(f"2. cold, next session after `cache clear` (sizes known), {readers}",
                     wire, curl, known, goal=0.5 if parallel == 16 else None)
        n = len(rel)
        table.notes.append(
            f"cold, {readers}, last run: curl sent {seen['curl']['requests'] / n:.2f} requests a file "
            f"over {seen['curl']['connections']} connection(s); matvisfs with an empty cache "
            f"{per_file(seen['unknown']['methods'], n)} a file over {seen['unknown']['connections']} "
            f"connections (its statistics: {counted(seen['unknown requests'])}), durable "
            f"{fmt_seconds(seen['unknown durable'])} after the last read; after `cache clear` "
            f"{per_file(seen['known']['methods'], n)} over {seen['known']['connections']} connections, "
            f"durable {fmt_seconds(seen['known durable'])} after; rclone "
            f"{per_file(seen['rclone']['methods'], n)} over {seen['rclone']['connections']} connections"
        )
    if not VENV_PYTHON.exists():
        table.notes.append(f"reference client not measured: no {VENV_PYTHON} (scripts/bench.sh makes it)")
    else:
        table.notes.append("the reference client ran once per reader count, on an empty cache "
                           "of its own")


def latency_reads(work, data, delayed, table):
    """Case 3: the same files from the test server adding DELAY_MS to every
    request, in Hugging Face's layout (each texture a 302 to its CDN path,
    which curl follows with -L: two requests a file, as matvisfs sends)."""
    rel, total = small_files(data)
    urls = [f"{delayed.base}/{TAG}/{r}" for r in rel]
    mnt = work / "mnt"
    paths = [mnt / TAG / r for r in rel]
    parallel = 16
    curl, unknown, known = [], [], []
    for i in range(RUNS):
        curl.append(curl_all(urls, parallel, work))
        cache = cache_dir(work, f"latency-{i}")
        unknown.append(cold_session(delayed.base, cache, mnt, paths, parallel, total)[0])
        clear_cache(cache)
        known.append(cold_session(delayed.base, cache, mnt, paths, parallel, total)[0])
    wire = f"curl -L --parallel-max {parallel}"
    table.timing(f"3. cold, +{DELAY_MS} ms a request, empty cache (sizes unknown), 16 readers",
                 wire, curl, unknown, goal=0.95)
    table.timing(f"3. cold, +{DELAY_MS} ms a request, after `cache clear` (sizes known), 16 readers",
                 wire, curl, known, goal=0.95)
    table.notes.append(
        f"case 3: the test server (crates/testkit) with {DELAY_MS} ms before every answer; it has "
        "no directory listings, so rclone is not measured there")


def warm_reads(work, data, nginx, table):
    """Case 4: the files read again in the mount that read them (page cache
    hot, then dropped before each run), against local disk, rclone and
    libfuse's passthrough_ll over the same files; and in an offline mount
    of the same cache, where no file can change and the kernel reads files
    without opening them in the daemon (FUSE's no-open mode), and in a
    mount of the release by its commit alone (`--commits-only`, from the
    test server, which names commits as the Hub does), in the same mode;
    and, where
    the kernel has it, in a mount of the same cache over FUSE's io_uring
    transport, against the mount over /dev/fuse and passthrough_ll."""
    rel, total = small_files(data)
    mnt, rmnt, omnt, pmnt = work / "mnt", work / "mnt-rclone", work / "mnt-offline", work / "mnt-ll"
    umnt, cmnt = work / "mnt-uring", work / "mnt-commits"
    base = nginx.base("sample")
    # The test server names a revision's commit by its manifest's hash.
    commit = hashlib.sha256((data / TAG / "release-manifest.json").read_bytes()).hexdigest()[:40]
    commit_paths = [cmnt / commit / r for r in rel]
    local = [data / TAG / r for r in rel]
    ours_paths = [mnt / TAG / r for r in rel]
    rclone_paths = [rmnt / TAG / r for r in rel]
    offline_paths = [omnt / TAG / r for r in rel]
    ll_paths = [pmnt / TAG / r for r in rel]
    cache = cache_dir(work, "warm")
    ll = PassthroughLl.start(work, data, pmnt)
    hub_like = DelayServer(data, 0)
    try:
        with Mount(base, cache, mnt) as m, Rclone(base + "/", work / "rclone-warm", rmnt):
            read_all(ours_paths, 16, total)
            m.wait_durable()
            read_all(rclone_paths, 16, total)
            mark = nginx.mark()
            with Mount(base, cache, omnt, "--offline"), \
                    Mount(hub_like.base, cache, cmnt, "--commits-only", "--tag", commit), \
                    uring_mount(base, cache, umnt) as ring:
                read_all(commit_paths, 16, total)
                readers = {"local": local, "ours": ours_paths, "rclone": rclone_paths,
                           "offline": offline_paths, "commits": commit_paths}
                if ll:
                    readers["ll"] = ll_paths
                if ring:
                    readers["uring"] = [umnt / TAG / r for r in rel]
                for parallel in (16, 1):
                    for dropped in (False, True):
                        samples = {name: [] for name in readers}
                        for _ in range(RUNS):
                            for name, paths in readers.items():
                                if dropped:
                                    drop_caches()
                                else:
                                    read_all(paths, parallel, total)
                                samples[name].append(read_all(paths, parallel, total))
                        state = "page cache dropped" if dropped else "page cache hot"
                        who = f"{parallel} reader{'s' if parallel > 1 else ''}"
                        table.timing(f"4. warm, {who}, {state}", "local disk", samples["local"],
                                     samples["ours"], goal=0.8 if parallel == 16 else 0.7,
                                     rclone=samples["rclone"])
                        if ll:
                            table.timing(f"4. warm, {who}, {state}: against classic FUSE",
                                         "libfuse passthrough_ll", samples["ll"],
                                         samples["ours"],
                                         goal=None if dropped else (0.9 if parallel == 16 else 1.5))
                        table.timing(f"4. warm, {who}, {state}: offline mount (no-open mode)",
                                     "local disk", samples["local"], samples["offline"],
                                     goal=None if dropped else 0.7)
                        table.timing(f"4. warm, {who}, {state}: mount of a commit, "
                                     "`--commits-only` (no-open mode)", "local disk",
                                     samples["local"], samples["commits"],
                                     goal=None if dropped else 0.7)
                        if ring and ll:
                            table.timing(f"4. warm, {who}, {state}: over io_uring, against "
                                         "classic FUSE", "libfuse passthrough_ll",
                                         samples["ll"], samples["uring"],
                                         goal=None if dropped else (0.9 if parallel == 16 else 1.5))
                        if ring:
                            table.timing(f"4. warm, {who}, {state}: over io_uring, against "
                                         "/dev/fuse", "matvisfs over /dev/fuse",
                                         samples["ours"], samples["uring"])
                # The reader of earlier versions of this benchmark (and of issue 13's
                # figures): a cat process per 16 files.
                samples = {"local": [], "ours": []}
                for _ in range(RUNS):
                    for name, paths in (("local", local), ("ours", ours_paths)):
                        samples[name].append(xargs_cat(paths, 16))
                table.timing("4. warm, 16 readers, page cache hot, read by `xargs -P 16 -n 16 cat`",
                             "local disk", samples["local"], samples["ours"], goal=0.8)
                python_reads(table, local, ours_paths, offline_paths)
                if ring:
                    ring_requests = ring.stats()["fuse"]["ring_requests"]
            requests = traffic(nginx.since(mark))["requests"]
            passthrough = m.passthrough()
    finally:
        hub_like.stop()
        if ll:
            ll.__exit__()
    table.notes.append(
        "warm reads went through FUSE passthrough" if passthrough
        else "warm reads went through matvisfs (no FUSE passthrough on this kernel)")
    table.notes.append(f"warm reads, all mounts together: {requests} requests to the server")
    if ring:
        table.notes.append(f"the io_uring mount answered {ring_requests} kernel requests over its "
                           "rings (enable_uring set only while it mounted)")
    else:
        table.notes.append("io_uring not measured: this kernel has no FUSE over io_uring")
    if ll:
        table.notes.append("classic FUSE: libfuse's passthrough_ll example (libfuse3-dev), built "
                           "at benchmark time, `-o cache=always`, over the local directory")
    else:
        table.notes.append("passthrough_ll not measured: needs gcc, pkg-config and libfuse3-dev's "
                           "examples")


PYTHON_READER = """
import sys, time
paths = sys.stdin.read().split()
started = time.perf_counter()
for path in paths:
    with open(path, "rb") as f:
        f.read()
print(time.perf_counter() - started)
"""


def python_reads(table, local, ours, offline):
    """One Python process reading every file with open().read(): open()
    asks whether the file is a terminal (an ioctl), which on a FUSE mount
    reaches the daemon."""
    samples = {"local": [], "ours": [], "offline": []}
    for _ in range(RUNS):
        for name, paths in (("local", local), ("ours", ours), ("offline", offline)):
            out = subprocess.run([sys.executable, "-c", PYTHON_READER],
                                 input="\n".join(str(p) for p in paths), capture_output=True,
                                 text=True, check=True)
            samples[name].append(float(out.stdout))
    table.timing("4. warm, Python `open().read()`, 1 reader, page cache hot", "local disk",
                 samples["local"], samples["ours"])
    table.timing("4. warm, Python `open().read()`, 1 reader, page cache hot: offline mount "
                 "(no-open mode)", "local disk", samples["local"], samples["offline"])


def xargs_cat(paths, parallel):
    """Seconds for `xargs -P parallel -n 16 cat` over the paths."""
    started = time.perf_counter()
    subprocess.run(["xargs", "-0", "-P", str(parallel), "-n", "16", "cat"],
                   input=b"\0".join(str(p).encode() for p in paths),
                   stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def big_read(work, data, nginx, table):
    """Case 5: one big texture, cold: bandwidth, not requests."""
    rel = "ambientcg/8k/Huge001/noise.png"
    size = (data / TAG / rel).stat().st_size
    base = nginx.base("big")
    mnt = work / "mnt"
    mb = size / 1e6
    curl, ours, rclone = [], [], []
    for i in range(RUNS):
        curl.append(mb / curl_all([f"{base}/{TAG}/{rel}"], 1, work))
        cache = cache_dir(work, f"big-{i}")
        ours.append(mb / cold_session(base, cache, mnt, [mnt / TAG / rel], 1, size)[0])
        shutil.rmtree(cache, ignore_errors=True)
        rcache = work / f"rclone-big-{i}"
        with Rclone(base + "/", rcache, mnt):
            rclone.append(mb / read_all([mnt / TAG / rel], 1, size))
        shutil.rmtree(rcache, ignore_errors=True)
    table.timing(f"5. one {mb:.0f} MB file, cold", "curl", curl, ours, goal=0.6,
                 rclone=rclone, unit="MB/s")
    # No byte is served before the whole file is verified: one core's
    # SHA-256 of it (OpenSSL's; matvisfs's sha2 is no faster) bounds
    # the ratio to curl however fast the rest is.
    body = (data / TAG / rel).read_bytes()
    hashing = min(timed(lambda: hashlib.sha256(body).digest()) for _ in range(3))
    wire = mb / median(curl)
    table.notes.append(
        f"case 5: SHA-256 of the {mb:.0f} MB on one core takes {hashing * 1000:.0f} ms "
        f"({mb / hashing:.0f} MB/s), curl's whole transfer {wire * 1000:.0f} ms: verified "
        f"before its first byte is served, the file cannot come faster than "
        f"{wire / hashing:.2f}x of curl, before FUSE carries a byte")


def walk_command(name, root):
    return ["find", str(root)] if name == "find" else ["ls", "-lR", str(root)]


def walk(name, root):
    """Seconds for the walk, and the lines it printed."""
    started = time.perf_counter()
    out = subprocess.run(walk_command(name, root), capture_output=True)
    if out.returncode != 0:
        errors = out.stderr.decode(errors="replace").splitlines()
        lines = out.stdout.count(b"\n")
        raise RuntimeError(f"{name} {root} exited with {out.returncode} after {lines} lines; "
                           f"{len(errors)} errors, the first: {errors[:5]}")
    return time.perf_counter() - started, out.stdout.count(b"\n")


def tree_walks(work, data, nginx, table):
    """Case 6: `find` and `ls -lR` of a full-size tag on a new mount whose
    cache holds the catalogs and every size (a first session learnt them),
    against the local tree and a new rclone mount on a warm cache."""
    mnt = work / "mnt"
    local = data / TAG
    base = nginx.base("large")
    cache = cache_dir(work, "tree")
    with Mount(base, cache, mnt) as m:
        # Sizes from a HEAD each, 8 at a time.
        files = subprocess.run(["find", str(mnt / TAG), "-type", "f", "-print0"],
                               capture_output=True, check=True).stdout
        subprocess.run(["xargs", "-0", "-P", "8", "-n", "512", "stat", "-c", "%s"],
                       input=files, stdout=subprocess.DEVNULL, check=True)
        first_session_peak = m.memory_mib()[0]
    table.notes.append(f"full-size tag: the daemon's peak RSS over its first session (`find`, then "
                       f"a `stat` of every file from an empty cache) was {first_session_peak:.0f} MiB")
    rcache = work / "rclone-tree"
    for name in ("find", "ls -lR"):
        walk(name, local)
        theirs = [walk(name, local)[0] for _ in range(RUNS)]
        lines = {"local": walk(name, local)[1]}
        ours, again, requests = [], [], []
        for _ in range(RUNS):
            with Mount(base, cache, mnt):
                mark = nginx.mark()
                seconds, lines["matvisfs"] = walk(name, mnt / TAG)
                ours.append(seconds)
                again.append(walk(name, mnt / TAG)[0])
                requests.append(len(nginx.since(mark)))
        mark = nginx.mark()
        with Rclone(base + "/", rcache, mnt):
            seconds, lines["rclone"] = walk(name, mnt / TAG)
        rclone_requests = traffic(nginx.since(mark))
        table.timing(f"6. {name} of a full-size tag, new mount, warm cache", "local tree",
                     theirs, ours, rclone=[seconds])
        table.timing(f"6. {name}, again in the same mount", "local tree", theirs, again)
        table.notes.append(
            f"{name}: lines printed: local tree {lines['local']}, matvisfs {lines['matvisfs']} "
            f"(its tree adds MaterialX and USD documents, scalar/, auto/ and best/), rclone "
            f"{lines['rclone']}; requests: matvisfs {max(requests)} per walk, rclone "
            f"{counted(rclone_requests['methods'])} (one walk: rclone keeps no listing across "
            "mounts, and sends a HEAD for every file it lists)")


def against_earlier_build(work, data, nginx, table):
    """Case 10: this build against an earlier one (BEFORE, the path of its
    binary), the two taking turns in every run: a cold read, warm reads in
    the same mount (16 readers, then 1), and `find` on a new mount of the
    warm cache (`ls -l` would stat the files the sample's catalog names
    and the server lacks, and fail)."""
    rel, total = small_files(data)
    base = nginx.base("sample")
    builds = {"before": Path(BEFORE), "this": BIN}
    measures = ("cold, empty cache, 16 readers", "warm, 16 readers, page cache hot",
                "warm, 1 reader, page cache hot", "find, new mount, warm cache")
    samples = {m: {b: [] for b in builds} for m in measures}
    for i in range(RUNS):
        # Each build goes first in every other run: on a shared VM the
        # second of two goes slower (a run of one build against itself,
        # always in the same order, gave it 0.84x to 0.93x).
        for name, binary in sorted(builds.items(), reverse=i % 2 == 1):
            mnt = work / f"mnt-{name}"
            cache = cache_dir(work, f"before-{name}-{i}")
            paths = [mnt / TAG / r for r in rel]
            with Mount(base, cache, mnt, binary=binary) as m:
                samples[measures[0]][name].append(read_all(paths, 16, total))
                m.wait_durable()
                read_all(paths, 16, total)
                samples[measures[1]][name].append(read_all(paths, 16, total))
                samples[measures[2]][name].append(read_all(paths, 1, total))
            with Mount(base, cache, mnt, binary=binary):
                samples[measures[3]][name].append(walk("find", mnt / TAG)[0])
    for measure in measures:
        table.timing(f"10. {measure}: this build against an earlier one", "earlier build",
                     samples[measure]["before"], samples[measure]["this"])
    table.notes.append(f"earlier build: {BEFORE}")


def kernel_slab_mib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile_catalogs(work, roots, nginx, table):
    """Case 7: the daemon's peak memory with huge catalogs (one tier, two
    channels a material), after one `ls` of the tier and after `find` of
    the tag."""
    mnt = work / "mnt"
    for n in HOSTILE:
        name = f"hostile{n}"
        catalog = (roots[name] / TAG / "hostile.json").stat().st_size
        limit = 2 * catalog / MIB + 64
        slab = kernel_slab_mib()
        with Mount(nginx.base(name), cache_dir(work, name), mnt) as m:
            ls = timed(lambda: subprocess.run(["ls", str(mnt / TAG / "hostile/1k")],
                                              stdout=subprocess.DEVNULL, check=True))
            after_ls = m.memory_mib()[0]
            find = walk("find", mnt / TAG)
            after_find = m.memory_mib()[0]
            slab = kernel_slab_mib() - slab
        for label, peak, seconds in (("`ls` of the tier", after_ls, ls),
                                     ("`find` of the tag", after_find, find[0])):
            table.value(f"7. memory, catalog of {n} materials ({catalog / 1e6:.0f} MB), "
                        f"after {label} ({fmt_seconds(seconds)})", "", "",
                        f"{peak:.0f} MiB peak RSS", f"<= {limit:.0f} MiB",
                        "yes" if peak <= limit else "**no**")
        table.notes.append(f"catalog of {n} materials: `find` printed {find[1]} lines; the "
                           f"kernel's slab memory grew by {slab:.0f} MiB meanwhile (its inodes "
                           "and dentries of the mount, and whatever else ran)")


def hub_sizes(work, data, delayed, table):
    """Case 8: `ls -lR` of one tier from an empty cache on the test server
    in the Hub's layout (with its API, and DELAY_MS of latency): sizes from
    the Hub API's tree listing against one HEAD per file."""
    # Not the 1k tier, whose sizes the catalog gives.
    tier = "ambientcg/512"
    files = sum(1 for _ in (data / TAG / tier).rglob("*.png"))
    mnt = work / "mnt"
    samples = {}
    for label, flags in (("api", ()), ("head", ("--no-hf-api",))):
        times, requests = [], []
        for i in range(RUNS):
            with Mount(delayed.hub_base, cache_dir(work, f"hub-{label}-{i}"), mnt, *flags) as m:
                times.append(timed(lambda: subprocess.run(
                    ["ls", "-lR", str(mnt / TAG / tier)], stdout=subprocess.DEVNULL, check=True)))
                counts = m.requests()
                requests.append((counts.get("api", 0), counts.get("size", 0)))
        samples[label] = (times, requests)
    (api_times, api_requests), (head_times, head_requests) = samples["api"], samples["head"]
    table.timing(f"8. ls -lR of one tier ({files} files), empty cache, +{DELAY_MS} ms, Hub layout: "
                 f"sizes from the Hub API ({api_requests[0][0]} API calls, {api_requests[0][1]} HEADs)",
                 f"HEAD per file, --no-hf-api ({head_requests[0][1]} HEADs)", head_times, api_times)


def hub_dedup(work, data, delayed, table):
    """Case 9: a second tag whose files are the bytes of a cached one (a new
    release where little changed), one tier read whole with 16 readers,
    +DELAY_MS, Hub layout. What it costs to serve the cached bytes: the
    Hub's own listing of the commit trusted (no request per file), one HEAD
    per file asking the path's own digest first (a mirror in the Hub's
    layout), or an empty cache (every file downloaded)."""
    other = "v2026.05.0-rc1"
    if not (data / other).exists():
        shutil.copytree(data / TAG, data / other)
    tier = "ambientcg/512"
    rel = sorted(str(p.relative_to(data / TAG)) for p in (data / TAG / tier).rglob("*.png"))
    origin = delayed.hub_base.split("/datasets/")[0]
    mnt = work / "mnt"
    modes = (
        ("trusted", True, ("--hf-endpoint", origin, "--hf-limits", "off")),
        ("head", True, ()),
        ("download", False, ()),
    )
    samples = {label: ([], []) for label, _, _ in modes}
    for i in range(RUNS):
        for label, warm, flags in modes:
            with Mount(delayed.hub_base, cache_dir(work, f"dedup-{label}-{i}"), mnt,
                       *flags) as m:
                if warm:
                    read_all([mnt / TAG / p for p in rel], 16)
                before = m.requests()
                samples[label][0].append(read_all([mnt / other / p for p in rel], 16))
                after = m.requests()
                samples[label][1].append({k: after.get(k, 0) - before.get(k, 0)
                                          for k in ("texture", "size", "api")})
    download = samples["download"][0]
    for label, name in (("trusted", "9a. the Hub's own listing of the commit trusted"),
                        ("head", "9b. a mirror's listing checked by one HEAD per file")):
        counts = samples[label][1][0]
        table.timing(f"{name}: a second tag with the cached bytes, {len(rel)} files, 16 readers, "
                     f"+{DELAY_MS} ms ({counts['texture']} GETs, {counts['size']} HEADs, "
                     f"{counts['api']} API calls)",
                     "empty cache, every file downloaded", download, samples[label][0])


if __name__ == "__main__":
    main()
