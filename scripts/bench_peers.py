#!/usr/bin/env python3
"""matvisfs beside its peer, Hugging Face's hf-mount (its FUSE binary,
built by the user), both mounting the same release of the project's test
server in the Hub's layout with the Hub API beside it, on loopback.

Run through scripts/bench_peers.sh. Every round runs each phase for both,
taking turns (matvisfs first in even rounds, hf-mount first in odd ones):

- cold, 16 readers: a new mount on an empty cache, every small texture
  read whole by 16 threads;
- cold, 1 reader: the same with one thread;
- warm: the same files read again in that mount (16 readers);
- new mount, warm cache: a new mount over the cache the cold read filled,
  every file read (16 readers);
- find: `find` of the tag in a new mount over the warm cache.

Every read checks each file's bytes against the served file's digest; the
server's own request log counts each phase's requests. Prints a table of
medians (matvisfs / hf-mount), then every sample.
"""

import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchlib import (
    BIN, READALL, SAMPLE_MATERIALS, SAMPLE_PX, SERVE, TAG, ForegroundMount, Mount, drop_caches,
    fmt_seconds,
    generate, median, mounted, sample_files, work_dir,
)

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
HF_MOUNT = os.environ.get("HF_MOUNT", "")
DELAY_MS = int(os.environ.get("DELAY_MS", "0"))
REPO = "gerchowl/mat-vis"
PEERS = ("matvisfs", "hf-mount")
PHASES = ("cold16", "cold1", "warm", "remount", "find")
PHASE_NAMES = {
    "cold16": "cold, empty cache, 16 readers",
    "cold1": "cold, empty cache, 1 reader",
    "warm": "warm, same mount, 16 readers",
    "remount": "new mount over the warm cache, 16 readers",
    "find": "`find` of the tag, new mount over the warm cache",
}


class HubServer:
    """The test server (examples/serve) in the Hub's layout, with its request
    log: each `requests()` is what it served since the last one."""

    def __init__(self, root: Path):
        self.process = subprocess.Popen(
            [str(SERVE), str(root), str(DELAY_MS)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )
        self.process.stdout.readline()
        self.hub_base = self.process.stdout.readline().strip()
        # http://127.0.0.1:PORT, where the Hub API is.
        self.endpoint = self.hub_base.split("/datasets/")[0]

    def requests(self):
        """(method, status, logged path) of each request since the last call."""
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        out = []
        for line in self.process.stdout:
            if line == "\n":
                return out
            method, status, path = line.rstrip("\n").split(" ", 2)
            out.append((method, int(status), path))
        raise SystemExit("the test server ended")

    def stop(self):
        self.process.kill()
        self.process.wait()


# Every hf-mount daemon started, for the cleanup to end whatever is left.
DAEMONS = []


class HfMount(ForegroundMount):
    """hf-mount's FUSE daemon in the foreground (`hf-mount-fuse repo ...`)
    for the duration of a `with` block, mounting the tag read-only."""

    def __init__(self, binary: str, endpoint: str, cache: Path, mountpoint: Path, log: Path):
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [binary, "--hub-endpoint", endpoint, "--cache-dir", str(cache), "--read-only",
                 "repo", f"datasets/{REPO}", str(mountpoint), "--revision", TAG],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                # Its own caches (xet's among them) under the cache
                # directory, which the benchmark removes, not in $HOME.
                env={**{k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")},
                     "HF_HOME": str(cache / "hf-home"), "XDG_CACHE_HOME": str(cache / "xdg-cache")},
            )
        DAEMONS.append(self.process)
        self.pid = self.process.pid
        self.wait_mounted(60, f"hf-mount did not mount (see {log})")



def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def read_checked(paths, threads, expected):
    """Seconds for `readall` to read every path; every file's bytes must
    be the served file's (`expected`: sha256 by path, in order)."""
    out = subprocess.run([str(READALL), str(threads), "--digests"],
                         input="\n".join(str(p) for p in paths), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"readall failed: {out.stderr[:2000]}")
    lines = out.stdout.splitlines()
    seconds = float(lines[0].split()[0])
    wrong = [path for line, want in zip(lines[1:], expected)
             for digest, path in [line.split(" ", 1)] if digest != want]
    if len(lines) - 1 != len(expected) or wrong:
        raise SystemExit(f"{len(wrong)} files read with other bytes than served, e.g. {wrong[:3]}")
    return seconds


class Peer:
    """How to mount one of the two and where the tag's files are in it."""

    def __init__(self, name, server, work, rel):
        self.name, self.server, self.work, self.rel = name, server, work, rel
        self.mnt = work / f"mnt-{name}"

    def mount(self, cache: Path):
        if self.name == "matvisfs":
            return Mount(self.server.hub_base, cache, self.mnt)
        return HfMount(HF_MOUNT, self.server.endpoint, cache, self.mnt,
                       self.work / "hf-mount.log")

    def tag_root(self):
        # matvisfs shows every tag under its mountpoint; hf-mount mounts one revision.
        return self.mnt / TAG if self.name == "matvisfs" else self.mnt

    def paths(self):
        return [self.tag_root() / r for r in self.rel]


def kind(method, status, path):
    """What a logged request was: `GET 302 resolve`, `GET 200 cdn`, `GET 200 api/tree`..."""
    if path.startswith("api/"):
        what = "/".join(path.split("/")[:2])
    elif path.startswith("cdn/"):
        what = "cdn"
    else:
        what = "resolve"
    return f"{method} {status} {what}"


def one_round(peer, round_no, expected, samples, requests, peaks, lines, kinds):
    files = len(peer.rel)
    cache = peer.work / f"cache-{peer.name}-{round_no}"

    def record(phase, seconds):
        samples[peer.name][phase].append(seconds)
        served = peer.server.requests()
        requests[peer.name][phase].append(len(served) / files)
        counts = {}
        for r in served:
            counts[kind(*r)] = counts.get(kind(*r), 0) + 1
        kinds[peer.name][phase] = counts

    for phase, threads in (("cold16", 16), ("cold1", 1)):
        shutil.rmtree(cache, ignore_errors=True)
        drop_caches()
        peer.server.requests()
        with peer.mount(cache) as m:
            record(phase, read_checked(peer.paths(), threads, expected))
            if phase == "cold1":
                peer.server.requests()
                record("warm", read_checked(peer.paths(), 16, expected))
            peaks[peer.name].append(peak_rss_mib(m.pid))
    drop_caches()
    peer.server.requests()
    with peer.mount(cache) as m:
        record("remount", read_checked(peer.paths(), 16, expected))
        peaks[peer.name].append(peak_rss_mib(m.pid))
    drop_caches()
    peer.server.requests()
    with peer.mount(cache) as m:
        started = time.perf_counter()
        out = subprocess.run(["find", str(peer.tag_root())], capture_output=True, check=True)
        record("find", time.perf_counter() - started)
        lines[peer.name] = out.stdout.count(b"\n")
        peaks[peer.name].append(peak_rss_mib(m.pid))
    shutil.rmtree(cache, ignore_errors=True)


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}" if theirs else ""


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark mounts and drops the page cache")
    if not HF_MOUNT or not os.access(HF_MOUNT, os.X_OK):
        raise SystemExit("set HF_MOUNT to hf-mount's FUSE binary (hf-mount-fuse)")
    # SIGINT and SIGTERM end the run through the cleanup below (SIGINT too
    # when started with it ignored, as a shell's background job is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    work = work_dir("matvisfs-peers-")
    server = None
    try:
        started, load_before = time.perf_counter(), os.getloadavg()
        data = work / "sample"
        generate(data, "sample", SAMPLE_MATERIALS, SAMPLE_PX)
        rel = sample_files(data)
        expected = [hashlib.sha256((data / TAG / r).read_bytes()).hexdigest() for r in rel]
        server = HubServer(data)
        samples = {p: {ph: [] for ph in PHASES} for p in PEERS}
        requests = {p: {ph: [] for ph in PHASES} for p in PEERS}
        peaks = {p: [] for p in PEERS}
        lines = {}
        kinds = {p: {} for p in PEERS}
        peers = [Peer(name, server, work, rel) for name in PEERS]
        for round_no in range(ROUNDS):
            order = peers if round_no % 2 == 0 else peers[::-1]
            for peer in order:
                one_round(peer, round_no, expected, samples, requests, peaks, lines, kinds)
        load_after = os.getloadavg()
        print(f"\n`HF_MOUNT=... scripts/bench_peers.sh {ROUNDS}`: {os.cpu_count()} cores "
              f"({platform.processor() or platform.machine()}), kernel {os.uname().release}, "
              f"{len(rel)} small textures, test server in the Hub's layout on loopback"
              f"{f' (+{DELAY_MS} ms a request)' if DELAY_MS else ''}, medians of {ROUNDS} "
              f"rounds, {time.perf_counter() - started:.0f} s in all; load average "
              f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
        print("| phase | matvisfs | hf-mount | matvisfs / hf-mount "
              "| requests a file, matvisfs | requests a file, hf-mount |")
        print("|---|---|---|---|---|---|")
        for phase in PHASES:
            ours, theirs = median(samples["matvisfs"][phase]), median(samples["hf-mount"][phase])
            print(f"| {PHASE_NAMES[phase]} | {fmt_seconds(ours)} | {fmt_seconds(theirs)} "
                  f"| {ratio(ours, theirs)} | {median(requests['matvisfs'][phase]):.2f} "
                  f"| {median(requests['hf-mount'][phase]):.2f} |")
        ours, theirs = max(peaks["matvisfs"]), max(peaks["hf-mount"])
        print(f"| daemon's peak RSS (highest of every mount) | {ours:.0f} MiB | {theirs:.0f} MiB "
              f"| {ratio(ours, theirs)} | | |")
        print(f"\nEvery byte read was the served file's own. `find` printed {lines['matvisfs']} "
              f"lines in matvisfs (its tree adds MaterialX and USD documents, scalar/, auto/ "
              f"and best/) and {lines['hf-mount']} in hf-mount (the repository's files).")
        print(f"\nRequests of the last round, by kind ({len(rel)} files):")
        for peer in PEERS:
            for phase in PHASES:
                counts = sorted(kinds[peer][phase].items(), key=lambda kv: -kv[1])
                print(f"- {peer}, {phase}: " + (", ".join(f"{n} {k}" for k, n in counts) or "none"))
        print("\nSamples (seconds):")
        for peer in PEERS:
            for phase in PHASES:
                values = ", ".join(f"{s:.3f}" for s in samples[peer][phase])
                print(f"- {peer}, {phase}: {values}")
    finally:
        cleanup(work, server)


def cleanup(work, server):
    """Ends every daemon, mount and server the run started and removes its
    work directory, uninterrupted by a second Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # First the daemons, so that none is still mounting when the mounts go.
    for process in DAEMONS:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for mnt in work.glob("mnt-*"):
        if mounted(mnt):
            subprocess.run([str(BIN), "unmount", str(mnt)], stderr=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, check=False)
        if mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], stderr=subprocess.DEVNULL, check=False)
    if server:
        server.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every mount, daemon and file of the run is gone")
