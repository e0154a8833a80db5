"""What scripts/bench.py and scripts/bench_profile.py share: the generated
data sets, the servers (nginx on loopback, the project's test server with
added latency), mounts (matvisfs, rclone) and the readers (one process
reading with N threads, one curl process with N parallel transfers).

Needs root (mounting, dropping the page cache), nginx, curl and rclone.
"""

import contextlib
import fcntl
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/matvisfs"
EXAMPLES = ROOT / "target/release/examples"
GENERATE = EXAMPLES / "generate"
SERVE = EXAMPLES / "serve"
READALL = EXAMPLES / "readall"
TAG = "v2026.04.2"

# The small textures of cases 1-4: every PNG of source ambientcg of the
# sample release with 95 materials at a base edge of 196 px (tiers 1k, 512
# and 256: 196, 98 and 49 px; 5 channels): 1425 files, 31.8 MB.
SAMPLE_MATERIALS = int(os.environ.get("MATERIALS", "95"))
SAMPLE_PX = int(os.environ.get("PX", "196"))


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


def generate(directory: Path, *args):
    run(GENERATE, directory, TAG, *args, stdout=subprocess.DEVNULL)


def sample_files(data: Path):
    """Paths (relative to the tag) of the small textures."""
    return sorted(str(p.relative_to(data / TAG)) for p in (data / TAG / "ambientcg").rglob("*.png"))


def mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def wait_gone(pid, seconds=60):
    """Waits for a process to end (a daemon finishing its writes)."""
    deadline = time.monotonic() + seconds
    while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


class Nginx:
    """Serves each data set at /<name>/resolve/ as a plain mirror, with
    directory listings (for rclone) and an access log that names each
    request's connection."""

    def __init__(self, work: Path, roots: dict):
        self.port = free_port()
        self.work = work
        self.log = work / "access.log"
        locations = "\n".join(
            f"        location /{name}/resolve/ {{ alias {root}/; autoindex on; }}"
            for name, root in roots.items()
        )
        conf = work / "nginx.conf"
        conf.write_text(f"""
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
worker_processes 2;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$connection $request_method $status $body_bytes_sent $uri';
    access_log {self.log} bench;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
{locations}
    }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        run(nginx, "-e", work / "nginx-error.log", "-p", work, "-c", conf)
        wait_for_port(self.port)

    def base(self, name):
        return f"http://127.0.0.1:{self.port}/{name}/resolve"

    def mark(self):
        return self.log.stat().st_size if self.log.exists() else 0

    def since(self, mark):
        """Requests logged since `mark`: (connection, method, status, uri)."""
        with open(self.log, "rb") as log:
            log.seek(mark)
            lines = log.read().decode().splitlines()
        return [tuple(line.split(" ", 4)) for line in lines if line]

    def stop(self):
        pid = self.work / "nginx.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), 15)


def traffic(requests):
    """A summary of logged requests: count by method, distinct connections."""
    methods = {}
    for r in requests:
        methods[r[1]] = methods.get(r[1], 0) + 1
    return {"requests": len(requests), "methods": methods,
            "connections": len({r[0] for r in requests})}


class DelayServer:
    """The project's test server on one data set, in the Hugging Face layout
    (textures answer 302 to its CDN path with X-Linked-Size), adding
    latency to every request, like a far-away Hugging Face."""

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
    """A background matvisfs mount for the duration of a `with` block; the
    exit waits until the daemon has ended (its writes done)."""

    def __init__(self, base: str, cache: Path, mountpoint: Path, *flags, binary: Path = BIN):
        self.mountpoint = mountpoint
        self.cache = cache
        self.binary = binary
        mountpoint.mkdir(parents=True, exist_ok=True)
        run(binary, "mount", mountpoint, "--base-url", base, "--cache-dir", cache, *flags)
        self.pid = self.daemon_pid()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run([str(self.binary), "unmount", str(self.mountpoint)], check=False)
        if mounted(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        wait_gone(self.pid)

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

    def memory_mib(self):
        """(peak, current) resident MiB of the daemon."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmHWM"], values["VmRSS"]

    def stats(self):
        return json.loads((self.mountpoint / ".matvisfs/stats.json").read_text())

    def requests(self):
        """Requests of the session by kind (`size`, `texture`...), from its statistics."""
        return {kind: sum(by_status.values()) for kind, by_status in self.stats()["requests"].items()}

    def wait_durable(self, seconds=60):
        """Seconds until every download served is durable (cache.pending 0)."""
        started = time.perf_counter()
        while self.stats()["cache"]["pending"] and time.perf_counter() - started < seconds:
            time.sleep(0.002)
        return time.perf_counter() - started

    def passthrough(self):
        log = self.cache / "matvisfs.log"
        return "passed through to the kernel" in (log.read_text() if log.exists() else "")


URING_PARAMETER = Path("/sys/module/fuse/parameters/enable_uring")


def uring_mount(base: str, cache: Path, mountpoint: Path, *flags):
    """A matvisfs mount with `--io-uring`, the fuse module's `enable_uring`
    set only while it mounts (it counts at a mount's start) and put back as
    found; for a `with` block, which gets None where the kernel has no FUSE
    over io_uring."""
    if not URING_PARAMETER.exists():
        return contextlib.nullcontext(None)
    # An exclusive lock on the parameter itself, as the tests take: two
    # processes that set it at once would otherwise put back each other's.
    with open(URING_PARAMETER) as locked:
        fcntl.flock(locked, fcntl.LOCK_EX)
        found = URING_PARAMETER.read_text().strip()
        URING_PARAMETER.write_text("Y")
        try:
            return Mount(base, cache, mountpoint, "--io-uring", *flags)
        finally:
            URING_PARAMETER.write_text(found)


def clear_cache(cache: Path):
    """`matvisfs cache clear`: content goes, remembered sizes stay."""
    run(BIN, "cache", "clear", "--cache-dir", cache, stdout=subprocess.DEVNULL)


class ForegroundMount:
    """A FUSE daemon run in the foreground (`self.process`) for the duration
    of a `with` block: unmounted, then waited for (killed if it lingers)."""

    def wait_mounted(self, seconds, why):
        deadline = time.monotonic() + seconds
        while not mounted(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(why)
            time.sleep(0.01)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=False,
                       stderr=subprocess.DEVNULL)
        if mounted(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Rclone(ForegroundMount):
    """rclone's FUSE mount of a plain mirror (`rclone mount :http:`), with
    a full VFS cache in `cache`, for the duration of a `with` block."""

    def __init__(self, url: str, cache: Path, mountpoint: Path):
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["rclone", "mount", ":http:", str(mountpoint), "--http-url", url, "--read-only",
             "--vfs-cache-mode", "full", "--cache-dir", str(cache), "--config", "/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.wait_mounted(30, "rclone mount did not come up")



class PassthroughLl:
    """libfuse's passthrough_ll example (Debian's libfuse3-dev), built at
    benchmark time into `work` and mounted over `source` with
    `-o cache=always`: the classic FUSE baseline, every open, flush and
    release a round trip to its daemon, warm reads from the page cache.
    Not available (None from `start`) without gcc, pkg-config or the
    example."""

    SOURCE = Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")

    @classmethod
    def start(cls, work: Path, source: Path, mountpoint: Path):
        binary = work / "passthrough_ll"
        if not binary.exists():
            if not cls.SOURCE.exists() or not shutil.which("gcc"):
                return None
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"],
                                   capture_output=True, text=True)
            if flags.returncode != 0:
                return None
            built = subprocess.run(["gcc", "-O2", "-o", str(binary), str(cls.SOURCE),
                                    *flags.stdout.split()], capture_output=True)
            if built.returncode != 0:
                return None
        mountpoint.mkdir(parents=True, exist_ok=True)
        run(binary, "-o", f"source={source}", "-o", "cache=always", mountpoint)
        return cls(mountpoint)

    def __init__(self, mountpoint: Path):
        self.mountpoint = mountpoint

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=False,
                       stderr=subprocess.DEVNULL)
        if mounted(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)


def read_all(paths, threads, expected_bytes=None):
    """Seconds for `readall` to read every path whole with `threads` threads."""
    out = subprocess.run(
        [str(READALL), str(threads)], input="\n".join(str(p) for p in paths),
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"readall failed: {out.stderr[:2000]}")
    seconds, files, total = out.stdout.split()
    if expected_bytes is not None and int(total) != expected_bytes:
        raise SystemExit(f"read {total} bytes, expected {expected_bytes}")
    return float(seconds)


def curl_all(urls, parallel, work: Path):
    """Seconds for one curl process to fetch every URL to /dev/null, at
    most `parallel` at a time over kept-alive connections."""
    config = work / f"curl-{os.getpid()}.conf"
    config.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
    started = time.perf_counter()
    out = subprocess.run(["curl", "-s", "--fail", "-L", "--parallel", "--parallel-max",
                          str(parallel), "-K", str(config)], capture_output=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"curl failed ({out.returncode}): {out.stderr[-2000:]}")
    return seconds


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(samples):
    return statistics.median(samples)


def fmt_seconds(value):
    if value is None:
        return ""
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.0f} ms"


def work_dir(prefix):
    return Path(tempfile.mkdtemp(prefix=prefix))
