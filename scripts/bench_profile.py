#!/usr/bin/env python3
"""Where matvisfs's time goes, per file, for the small textures of
scripts/bench.py: cold reads with 16 readers (an empty cache, then the
next session after `matvisfs cache clear`) and warm reads with one reader.

Run through scripts/bench_profile.sh (root; needs perf from linux-perf,
strace, nginx, curl). For each scenario:

- untraced runs: wall time, and CPU seconds of the daemon, nginx and the
  reader (from /proc and the reader's rusage), against curl for cold reads
  and local disk for warm ones;
- one run with the kernel's fuse tracepoints (fuse_request_send/_end):
  requests a file by opcode and the time from the kernel sending each to
  the daemon's reply;
- one run with `perf record --call-graph dwarf` on the daemon: its CPU by
  part (SQLite, fsync, rename, temp files, SHA-256, HTTP, FUSE...), the
  sampled shares scaled to the untraced daemon CPU;
- one run with `strace -f -y` on the daemon: system calls a file by kind,
  and SQLite's write transactions (commit frames in the WAL) and pages;
- for warm reads, `perf trace -s` on the reader: what its open, read and
  close cost, against the same on local disk.

Prints markdown tables.
"""

import codecs
import collections
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchlib import (
    TAG, SAMPLE_MATERIALS, SAMPLE_PX, READALL, Mount, Nginx, clear_cache, cpu_seconds,
    curl_all, generate, median, read_all, sample_files, traffic, work_dir,
)

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
PERF_HZ = 1999

# Parts of the daemon's CPU, by the frames of a sample's call chain: the
# first rule any frame matches names the part.
PARTS = [
    ("SQLite (index transaction, record batches, WAL)", r"^sqlite3"),
    ("fsync of the new object", r"^__x64_sys_(fsync|fdatasync)$"),
    ("mkdir of objects/xx (EEXIST)", r"^__x64_sys_mkdirat$"),
    ("rename into objects/", r"^__x64_sys_renameat2?$"),
    ("temp file: create in tmp/", r"create_temp"),
    ("SHA-256", r"^sha2::"),
    ("temp file: write", r"^__x64_sys_(write|pwrite64)$"),
    ("cached file: open, check, passthrough", r"ObjectStore::open|::reopen|__x64_sys_openat2$|"
     r"__x64_sys_(pread64|ioctl)$|open_backing|check_file_magic"),
    ("FUSE: /dev/fuse and fuser", r"^fuser::|^fuse_dev_|^matvisfs::fuse::"),
    ("HTTP client (reqwest, hyper, tokio, sockets)",
     r"reqwest|hyper|^tokio|^mio::|^h2::|HttpRemote|stream_body|^tcp_|"
     r"^__x64_sys_(recvfrom|sendto|epoll_wait|writev|readv)$"),
    ("tree, records, statistics", r"^matvisfs::(dataset|fs|store::records|format|stats)"),
    ("locks, wake-ups, scheduling", r"futex|sched_yield|parking_lot|schedule"),
]
PART_RULES = [(name, re.compile(pattern)) for name, pattern in PARTS]


def children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def nginx_workers(nginx):
    return children(int((nginx.work / "nginx.pid").read_text()))


def cpu_of(pids):
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Tracer:
    """A tracing command run while a block reads; stopped with SIGINT."""

    def __init__(self, command):
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        self.process.wait()


def fuse_requests(data_file, connection, files):
    """{opcode: (per file, mean µs from the kernel's send to the reply,
    most in flight at once)}."""
    out = subprocess.run(["perf", "script", "-i", str(data_file), "-F", "time,event,trace"],
                         capture_output=True, text=True).stdout
    pattern = re.compile(r"\s*([\d.]+):\s+fuse:(fuse_request_\w+):\s+connection (\d+) req (\d+)"
                         r"(?: opcode \d+ \((\w+)\))?")
    sent, latencies = {}, collections.defaultdict(list)
    in_flight, most = collections.Counter(), collections.Counter()
    for line in out.splitlines():
        m = pattern.match(line)
        if not m or int(m.group(3)) != connection:
            continue
        at, event, _, unique, opcode = m.groups()
        if event == "fuse_request_send":
            op = opcode.removeprefix("FUSE_").lower()
            sent[unique] = (float(at), op)
            in_flight[op] += 1
            most[op] = max(most[op], in_flight[op])
        elif unique in sent:
            started, op = sent.pop(unique)
            in_flight[op] -= 1
            latencies[op].append(float(at) - started)
    return {op: (len(v) / files, sum(v) / len(v) * 1e6, most[op]) for op, v in latencies.items()}


def cpu_parts(data_file, files, cpu):
    """(parts, thread groups): µs a file each, the sampled shares of the
    daemon's CPU scaled to `cpu` seconds."""
    out = subprocess.run(["perf", "script", "-i", str(data_file), "--no-inline",
                          "-F", "comm,tid,ip,sym"], capture_output=True, text=True).stdout
    parts, threads = collections.Counter(), collections.Counter()
    for sample in out.split("\n\n"):
        lines = sample.strip("\n").splitlines()
        if not lines:
            continue
        comm = lines[0].strip().rsplit(None, 1)[0]
        frames = [f.strip().split(None, 1)[1] for f in lines[1:] if len(f.strip().split(None, 1)) == 2]
        part = next((name for name, rule in PART_RULES if any(rule.search(f) for f in frames)),
                    "other")
        parts[part] += 1
        threads[re.sub(r"-\d+$", "", comm)] += 1
    total = sum(parts.values()) or 1
    scale = cpu / total / files * 1e6
    return ({p: n * scale for p, n in parts.items()},
            {t: n * scale for t, n in threads.items()}, total)


def unescape(text):
    return codecs.escape_decode(text.encode())[0]


def syscall_kinds(log: Path, files):
    """System calls a file by kind, from `strace -f -y -x -s 24`, and
    SQLite's commits and pages (frames written to the WAL; a commit frame
    carries the database size)."""
    kinds = collections.Counter()
    call = re.compile(r'^(\d+)\s+(\w+)\((?:(\d+)<([^>]*)>)?(.*)')
    resumed = re.compile(r'^(\d+)\s+<\.\.\. (\w+) resumed>(.*)')
    failed = re.compile(r"\) += -1 ")
    # A call another thread interrupted in the log ends on a later line of
    # its own thread; a call that never ended (a thread still waiting when
    # tracing stopped) or failed did no work and is not counted.
    waiting = {}
    ended = []
    for line in log.read_text(errors="replace").splitlines():
        if m := resumed.match(line):
            pid, name, tail = m.groups()
            if pid in waiting and waiting[pid][0] == name:
                name, path, rest = waiting.pop(pid)
                ended.append((name, path, rest + tail))
            continue
        if m := call.match(line):
            pid, name, _, path, rest = m.groups()
            if rest.endswith("<unfinished ...>"):
                waiting[pid] = (name, path or "", rest)
            else:
                ended.append((name, path or "", rest))
    for name, path, rest in ended:
        if failed.search(rest):
            continue
        if name == "pwrite64" and path.endswith("-wal"):
            header = re.match(r', "((?:[^"\\]|\\.)*)"(?:\.\.\.)?, (\d+)', rest)
            if header and int(header.group(2)) == 24:
                frame = unescape(header.group(1))
                kinds["SQLite: pages written to the WAL"] += 1
                if len(frame) >= 8 and int.from_bytes(frame[4:8], "big"):
                    kinds["SQLite: write transactions (commit frames)"] += 1
            continue
        if name in ("fcntl", "pread64", "pwrite64", "fsync", "fdatasync") and "cache.db" in path:
            kinds[f"SQLite: {name} ({'locks' if name == 'fcntl' else 'database'})"] += 1
            continue
        if path.endswith("/tmp") and name == "openat2":
            kinds["openat2 in tmp/ (O_CREAT: temp files; else reopen)"] += 1
        elif name in ("fsync", "fdatasync"):
            kinds[f"{name} of a file outside the database"] += 1
        elif name in ("renameat", "renameat2", "mkdirat", "statx", "getpid", "clone3"):
            kinds[name] += 1
        elif name == "openat2":
            what = "a directory" if "O_DIRECTORY" in rest else "a file"
            kinds[f"openat2 of {what} outside tmp/"] += 1
        elif path == "/dev/fuse" or path.startswith("/dev/fuse"):
            kinds[f"/dev/fuse {name}"] += 1
        elif name in ("write", "pwrite64") and "/tmp/" in path:
            kinds["write to the temp file"] += 1
        elif path.startswith(("TCP", "socket")) or name in ("recvfrom", "sendto"):
            kinds[f"socket {name}"] += 1
        elif name in ("futex", "sched_yield"):
            kinds[name] += 1
        else:
            kinds[f"{name} (other)"] += 1
    return {k: n / files for k, n in kinds.items()}


def reader_syscalls(paths, threads, log: Path):
    """Mean µs and calls a file of the reader's openat, read and close,
    from `perf trace -s`."""
    subprocess.run(["perf", "trace", "-s", "-o", str(log), "--", str(READALL), str(threads)],
                   input="\n".join(str(p) for p in paths), capture_output=True, text=True,
                   check=True)
    totals = collections.defaultdict(lambda: [0, 0.0])
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[0] in ("openat", "read", "close", "statx", "fstat", "newfstatat"):
            totals[parts[0]][0] += int(parts[1])
            totals[parts[0]][1] += float(parts[3])
    return {name: (calls / len(paths), ms * 1000 / calls) for name, (calls, ms) in totals.items()
            if calls}


def print_table(title, header, rows):
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def cold(work, data, nginx, clear_first):
    """A cold read with 16 readers: untraced runs against curl, then one
    traced run per tool."""
    rel = sample_files(data)
    files = len(rel)
    total = sum((data / TAG / r).stat().st_size for r in rel)
    base = nginx.base("sample")
    mnt = work / "mnt"
    paths = [mnt / TAG / r for r in rel]
    urls = [f"{base}/{TAG}/{r}" for r in rel]
    counter = iter(range(1000))

    def session(tool=None):
        """One cold session; `tool(mount)` starts a tracer, or None."""
        cache = work / f"cache-{'known' if clear_first else 'unknown'}-{next(counter)}"
        if clear_first:
            with Mount(base, cache, mnt):
                read_all(paths, 16, total)
            clear_cache(cache)
        with Mount(base, cache, mnt) as m:
            tracer = tool(m) if tool else None
            workers = nginx_workers(nginx)
            before = (cpu_seconds(m.pid), cpu_of(workers), children_cpu(), nginx.mark())
            seconds = read_all(paths, 16, total)
            m.wait_durable()
            after = (cpu_seconds(m.pid), cpu_of(workers), children_cpu())
            if tracer:
                tracer.stop()
            requests = traffic(nginx.since(before[3]))
            return (seconds, after[0] - before[0], after[1] - before[1], after[2] - before[2],
                    requests, m)

    runs = [session() for _ in range(RUNS)]
    curl = []
    for _ in range(RUNS):
        workers = nginx_workers(nginx)
        before = (cpu_of(workers), children_cpu(), nginx.mark())
        seconds = curl_all(urls, 16, work)
        curl.append((seconds, cpu_of(workers) - before[0], children_cpu() - before[1],
                     traffic(nginx.since(before[2]))))
    us = lambda seconds: f"{seconds / files * 1e6:.0f}"
    wall, daemon, web, reader = (median([r[i] for r in runs]) for i in range(4))
    curl_wall, curl_web, curl_cpu = (median([c[i] for c in curl]) for i in range(3))
    name = "after `cache clear` (sizes known)" if clear_first else "empty cache (sizes unknown)"
    print_table(
        f"#### Cold, {name}, 16 readers: µs a file ({files} files, medians of {RUNS} untraced runs)",
        ("", "matvisfs", "curl --parallel-max 16"),
        [("wall time a file", us(wall), us(curl_wall)),
         ("CPU: matvisfs daemon / curl", us(daemon), us(curl_cpu)),
         ("CPU: nginx", us(web), us(curl_web)),
         ("CPU: the reader (readall, 16 threads)", us(reader), "-"),
         ("CPU in all, over 2 cores", us((daemon + web + reader) / 2), us((curl_cpu + curl_web) / 2)),
         ("requests a file (nginx log)",
          ", ".join(f"{n / files:.2f} {k}" for k, n in sorted(runs[-1][4]["methods"].items())),
          ", ".join(f"{n / files:.2f} {k}" for k, n in sorted(curl[-1][3]["methods"].items()))),
         ("TCP connections (nginx log)", runs[-1][4]["connections"], curl[-1][3]["connections"])])

    connection = {}
    fuse_log = work / "fuse.data"

    def fuse_tool(m):
        connection["id"] = os.minor(os.stat(mnt).st_dev)
        return Tracer(["perf", "record", "--no-buildid-cache", "-a", "-e", "fuse:fuse_request_send",
                       "-e", "fuse:fuse_request_end", "-o", str(fuse_log)])

    traced = session(fuse_tool)
    fuse = fuse_requests(fuse_log, connection["id"], files)
    print_table(f"FUSE requests a file (fuse tracepoints; this run {traced[0]:.2f} s)",
                ("request", "a file", "mean µs, kernel send to reply", "most in flight"),
                [(op, f"{n:.2f}", f"{lat:.0f}", most) for op, (n, lat, most) in
                 sorted(fuse.items(), key=lambda x: -x[1][0])])

    cpu_log = work / "cpu.data"
    traced = session(lambda m: Tracer(["perf", "record", "--no-buildid-cache", "-p", str(m.pid), "--call-graph",
                                       "dwarf,8192", "-F", str(PERF_HZ), "-e", "cpu-clock",
                                       "-o", str(cpu_log)]))
    parts, threads, samples = cpu_parts(cpu_log, files, daemon)
    print_table(f"Daemon CPU by part: µs a file (perf, {samples} samples at {PERF_HZ} Hz with "
                f"dwarf call chains, shares scaled to the untraced {us(daemon)} µs)",
                ("part", "µs a file", "share"),
                [(p, f"{v:.0f}", f"{v / (daemon / files * 1e6) * 100:.0f}%")
                 for p, v in sorted(parts.items(), key=lambda x: -x[1])])
    print_table("Daemon CPU by thread group: µs a file (same samples)",
                ("threads", "µs a file"),
                [(t, f"{v:.0f}") for t, v in sorted(threads.items(), key=lambda x: -x[1])])

    strace_log = work / "strace.txt"
    traced = session(lambda m: Tracer(["strace", "-f", "-y", "-qq", "-x", "-s", "24",
                                       "-o", str(strace_log), "-p", str(m.pid)]))
    kinds = syscall_kinds(strace_log, files)
    print_table("Daemon system calls a file (strace -f -y)", ("system call", "a file"),
                [(k, f"{v:.2f}") for k, v in sorted(kinds.items(), key=lambda x: -x[1])])


def warm(work, data, nginx):
    """Warm reads with one reader, page cache hot: the reader's open, read
    and close through the mount against local disk, and what the daemon
    does for each."""
    rel = sample_files(data)
    files = len(rel)
    total = sum((data / TAG / r).stat().st_size for r in rel)
    mnt = work / "mnt"
    paths = [mnt / TAG / r for r in rel]
    local = [data / TAG / r for r in rel]
    with Mount(nginx.base("sample"), work / "cache-warm", mnt) as m:
        read_all(paths, 16, total)
        m.wait_durable()
        read_all(local, 1, total)
        ours, theirs, daemon = [], [], []
        for _ in range(RUNS):
            read_all(paths, 1, total)
            cpu = cpu_seconds(m.pid)
            ours.append(read_all(paths, 1, total))
            daemon.append(cpu_seconds(m.pid) - cpu)
            theirs.append(read_all(local, 1, total))
        fuse_log = work / "fuse-warm.data"
        tracer = Tracer(["perf", "record", "--no-buildid-cache", "-a", "-e", "fuse:fuse_request_send",
                         "-e", "fuse:fuse_request_end", "-o", str(fuse_log)])
        read_all(paths, 1, total)
        tracer.stop()
        fuse = fuse_requests(fuse_log, os.minor(os.stat(mnt).st_dev), files)
        ours_calls = reader_syscalls(paths, 1, work / "trace-ours.txt")
        theirs_calls = reader_syscalls(local, 1, work / "trace-local.txt")
        cpu_log = work / "cpu-warm.data"
        tracer = Tracer(["perf", "record", "--no-buildid-cache", "-p", str(m.pid), "--call-graph", "dwarf,8192",
                         "-F", str(PERF_HZ), "-e", "cpu-clock", "-o", str(cpu_log)])
        for _ in range(3):
            read_all(paths, 1, total)
        tracer.stop()
        parts, threads, samples = cpu_parts(cpu_log, files * 3, median(daemon) * 3)
        passthrough = m.passthrough()
    us = lambda s: f"{s / files * 1e6:.0f}"
    print_table(f"#### Warm, 1 reader, page cache hot: µs a file ({files} files, medians of "
                f"{RUNS} runs; reads {'passed through' if passthrough else 'through matvisfs'})",
                ("", "matvisfs", "local disk"),
                [("wall time a file", us(median(ours)), us(median(theirs))),
                 ("CPU: matvisfs daemon", us(median(daemon)), "-")]
                + [(f"reader's {name} (perf trace): calls a file, mean µs",
                    f"{ours_calls.get(name, (0, 0))[0]:.2f}, {ours_calls.get(name, (0, 0))[1]:.1f}",
                    f"{theirs_calls.get(name, (0, 0))[0]:.2f}, {theirs_calls.get(name, (0, 0))[1]:.1f}")
                   for name in ("openat", "read", "close")])
    print_table("FUSE requests a file, warm (fuse tracepoints)",
                ("request", "a file", "mean µs, kernel send to reply"),
                [(op, f"{n:.2f}", f"{lat:.0f}") for op, (n, lat, _) in
                 sorted(fuse.items(), key=lambda x: -x[1][0])])
    print_table(f"Daemon CPU by part, warm: µs a file ({samples} samples)",
                ("part", "µs a file"),
                [(p, f"{v:.0f}") for p, v in sorted(parts.items(), key=lambda x: -x[1])])


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: perf, strace and mounts")
    work = work_dir("matvisfs-profile-")
    data = work / "sample"
    generate(data, "sample", SAMPLE_MATERIALS, SAMPLE_PX)
    nginx = Nginx(work, {"sample": data})
    started = time.perf_counter()
    try:
        print(f"`scripts/bench_profile.sh {RUNS}`: {os.cpu_count()} cores, kernel "
              f"{os.uname().release}, load average {os.getloadavg()[0]:.1f} at the start")
        cold(work, data, nginx, clear_first=False)
        cold(work, data, nginx, clear_first=True)
        warm(work, data, nginx)
        print(f"\n{time.perf_counter() - started:.0f} s in all; load average "
              f"{os.getloadavg()[0]:.1f} at the end")
    finally:
        nginx.stop()
        subprocess.run(["umount", "-l", str(work / "mnt")], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
