//! Helpers for tests that really mount: a served fixture release and a
//! mount guard that always unmounts, even when the test fails.

#![allow(dead_code)]

pub mod nginx;
pub mod python;
pub mod tunnel;
pub mod uring;
pub mod watchdog;

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::DevServer;

pub const TAG: &str = "v2026.04.2";
pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
pub const KTX2_MAGIC: &[u8] = b"\xabKTX 20\xbb\r\n\x1a\n";
pub const BIN: &str = env!("CARGO_BIN_EXE_matvisfs");

/// A release written to disk and served by the dev server.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub server: DevServer,
    pub release: Release,
}

impl Served {
    pub fn new(release: Release) -> Self {
        let dir = tempfile::tempdir().unwrap();
        release.write_to(dir.path()).unwrap();
        let server = DevServer::start(dir.path()).unwrap();
        Served {
            dir,
            server,
            release,
        }
    }

    /// `release` served as a plain mirror: no redirects, no digest.
    pub fn plain_mirror(release: Release) -> Self {
        let served = Self::new(release);
        served
            .server
            .set_options(matvisfs_testkit::devserver::ServerOptions {
                lfs_redirects: false,
                ..Default::default()
            });
        served
    }

    pub fn small() -> Self {
        Self::new(Release::generate(&ReleaseSpec::small(TAG)))
    }

    /// Rewrites the release on disk (the server reads files per request),
    /// as one new commit of it.
    pub fn republish(&mut self, release: Release) {
        release.write_to(self.dir.path()).unwrap();
        self.server.commit(&release.tag);
        self.release = release;
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Requests to the resolve endpoint for `<TAG>/<path>`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let full = format!("{TAG}/{path}");
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path == full)
            .count()
    }

    /// Texture downloads: GETs answered with a body, from the resolve
    /// endpoint or the CDN (a redirect is not a download).
    pub fn texture_gets(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && matches!(r.status, 200 | 206))
            .filter(|r| r.path.ends_with(".png") || r.path.ends_with(".ktx2"))
            .count()
    }

    /// A cache holding the first `count` textures (all: `usize::MAX`), by
    /// a mount that read them and is gone, and those textures.
    pub fn warmed_cache(&self, count: usize) -> (tempfile::TempDir, Vec<(&String, &Vec<u8>)>) {
        let cache = tempfile::tempdir().unwrap();
        let textures: Vec<_> = self.release.textures().take(count).collect();
        let paths: Vec<&str> = textures.iter().map(|(p, _)| p.as_str()).collect();
        warm(&self.base_url(), cache.path(), &paths);
        (cache, textures)
    }

    /// From now on every download hangs: the CDN takes each request and
    /// never answers.
    pub fn hang_downloads(&self) {
        self.server
            .inject(matvisfs_testkit::devserver::FaultRule::new(
                "cdn/",
                matvisfs_testkit::devserver::Fault::Hang,
            ));
    }
}

/// `matvisfs mount` in the background, as a user would run it.
pub fn background_mount(mountpoint: &Path, base_url: &str, cache: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("mount")
        .arg(mountpoint)
        .args(["--base-url", base_url, "--backoff-base", "0.01"])
        .arg("--cache-dir")
        .arg(cache);
    command
}

pub fn is_mounted(path: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// A `matvisfs mount --foreground` child; dropping it unmounts and reaps it.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub cache: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

pub struct MountBuilder {
    base_url: Option<String>,
    cache: Option<PathBuf>,
    timeout: u64,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    open_files: Option<(u64, u64)>,
}

/// Makes `command` start with these soft and hard limits on open files.
pub fn limit_open_files(command: &mut Command, soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit is async-signal-safe, and `limit` is a copy owned
    // by the closure.
    unsafe {
        command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
}

/// `MATVISFS_TEST_EXTRA_ARGS`: flags added to every mount a test makes
/// (split on whitespace), to run a test file over another setup, e.g.
/// `--io-uring` with the fuse module's `enable_uring` set around the run.
fn extra_args() -> Vec<String> {
    std::env::var("MATVISFS_TEST_EXTRA_ARGS")
        .map(|args| args.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

impl MountBuilder {
    /// Where the daemon's stderr goes (a file in the mount's own
    /// temporary directory unless set).
    pub fn log_file(mut self, path: &Path) -> Self {
        self.log = Some(path.to_path_buf());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// No `--base-url`: the dataset is named otherwise (`--repo`).
    pub fn no_base_url(mut self) -> Self {
        self.base_url = None;
        self
    }

    pub fn cache(mut self, cache: &Path) -> Self {
        self.cache = Some(cache.to_path_buf());
        self
    }

    /// One kernel thread, so four download workers, and no retries: a few
    /// hung downloads take every worker.
    pub fn few_workers(self) -> Self {
        self.arg("--threads").arg("1").arg("--retries").arg("0")
    }

    /// Starts the daemon with these soft and hard limits on open files.
    pub fn open_file_limit(mut self, soft: u64, hard: u64) -> Self {
        self.open_files = Some((soft, hard));
        self
    }

    /// `--timeout` (5 s unless set).
    pub fn timeout(mut self, seconds: u64) -> Self {
        self.timeout = seconds;
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn start(self) -> Mount {
        self.try_start()
            .unwrap_or_else(|e| panic!("mount failed: {e}"))
    }

    pub fn try_start(self) -> Result<Mount, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        let cache = self.cache.unwrap_or_else(|| dir.path().join("cache"));
        let log = self.log.unwrap_or_else(|| dir.path().join("stderr.log"));
        let mut command = Command::new(BIN);
        if let Some((soft, hard)) = self.open_files {
            limit_open_files(&mut command, soft, hard);
        }
        let child = command
            .arg("mount")
            .arg(&path)
            .arg("--foreground")
            .args(self.base_url.iter().flat_map(|url| ["--base-url", url]))
            .arg("--cache-dir")
            .arg(&cache)
            .args([
                "--timeout",
                &self.timeout.to_string(),
                "--backoff-base",
                "0.05",
                "-v",
            ])
            .args(&self.args)
            .args(extra_args())
            .env_remove("MAT_VIS_HF_BASE")
            .env_remove("MAT_VIS_DATASET")
            .env_remove("MAT_VIS_HF_DATASET")
            .env_remove("MAT_VIS_TAG")
            .env_remove("MATVISFS_CACHE_DIR")
            .env_remove("MATVISFS_LOG")
            .env_remove("HF_TOKEN")
            .env_remove("HF_ENDPOINT")
            .env_remove("MATVISFS_HF_LIMITS")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut mount = Mount {
            dir,
            path,
            cache,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&mount.path) {
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                mount.child = None;
                return Err(format!("exited with {status}: {}", mount.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("not mounted after 30 s: {}", mount.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        watchdog::track(&mount.path);
        Ok(mount)
    }
}

impl Mount {
    pub fn builder(base_url: &str) -> MountBuilder {
        MountBuilder {
            base_url: Some(base_url.to_string()),
            cache: None,
            timeout: 5,
            args: Vec::new(),
            env: Vec::new(),
            log: None,
            open_files: None,
        }
    }

    /// `<mountpoint>/<TAG>/<rel>`
    pub fn tag_path(&self, rel: &str) -> PathBuf {
        self.path.join(TAG).join(rel)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits for the process to exit by itself (after an unmount or a
    /// signal); returns whether it exited successfully.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<bool> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status.success());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end by itself, successfully, leaving
    /// nothing mounted.
    pub fn expect_clean_exit(&mut self) {
        let exit = self.wait_exit(Duration::from_secs(10));
        assert_eq!(exit, Some(true), "{}", self.log());
        assert!(!is_mounted(&self.path));
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: sending a signal has no memory effects.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// The session's counters, `<mnt>/.matvisfs/stats.json`.
    pub fn stats(&self) -> serde_json::Value {
        let bytes = read(&self.path.join(".matvisfs/stats.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

/// Removes the control socket a daemon killed at `mountpoint` left behind
/// (one that exits by itself removes its own); called once its process is
/// gone.
pub fn remove_control_socket(mountpoint: &Path) {
    // Canonical without looking through the mount: its parent's path, and
    // its own name.
    let (Some(parent), Some(name)) = (mountpoint.parent(), mountpoint.file_name()) else {
        return;
    };
    let Ok(parent) = fs::canonicalize(parent) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    matvisfs::control::remove_socket(&matvisfs::control::socket_path(uid, &parent.join(name)));
}

fn force_unmount(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the daemon saw explains most failures.
            eprintln!("--- matvisfs log ---\n{}--- end of log ---", self.log());
        }
        if is_mounted(&self.path) {
            let _ = Command::new(BIN)
                .arg("unmount")
                .arg(&self.path)
                .stderr(Stdio::null())
                .status();
            if is_mounted(&self.path) {
                force_unmount(&self.path);
            }
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.path) {
            force_unmount(&self.path);
        }
        remove_control_socket(&self.path);
        watchdog::untrack(&self.path);
    }
}

/// A mount made by `matvisfs mount` in the background (see
/// [`background_mount`]): unmounted when dropped if it is still there.
pub struct Unmounts(pub PathBuf);

impl Unmounts {
    pub fn new(mountpoint: &Path) -> Unmounts {
        watchdog::track(mountpoint);
        Unmounts(mountpoint.to_path_buf())
    }
}

impl Drop for Unmounts {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new(BIN)
                .arg("unmount")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
        }
        if is_mounted(&self.0) {
            force_unmount(&self.0);
        }
        remove_control_socket(&self.0);
        watchdog::untrack(&self.0);
    }
}

/// `matvisfs unmount`, as a user runs it.
pub fn unmount(mountpoint: &Path) -> std::process::ExitStatus {
    Command::new(BIN)
        .arg("unmount")
        .arg(mountpoint)
        .status()
        .unwrap()
}

/// Processes whose command line is a `mount` of exactly `mountpoint`:
/// the daemon serving it, in the foreground or the background.
pub fn serving_processes(mountpoint: &Path) -> Vec<u32> {
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.contains(&b"mount".as_slice()) && args.contains(&wanted)
        })
        .collect()
}

/// Polls `condition` every 10 ms until it holds; fails the test, naming
/// `what`, if it does not within `limit`.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    watchdog::doing(format!("waiting for {what}"));
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names (sha256 in hex) of the texture objects in a cache.
pub fn stored_objects(cache: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in fs::read_dir(cache.join("objects")).into_iter().flatten() {
        let Ok(prefix) = prefix else { continue };
        let prefix_name = prefix.file_name().to_string_lossy().into_owned();
        for object in fs::read_dir(prefix.path()).into_iter().flatten() {
            let Ok(object) = object else { continue };
            names.push(format!(
                "{prefix_name}{}",
                object.file_name().to_string_lossy()
            ));
        }
    }
    names.sort();
    names
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Mounts over `cache` just long enough to read `paths` (relative to the
/// tag) into it.
pub fn warm(base_url: &str, cache: &Path, paths: &[&str]) {
    let mount = Mount::builder(base_url).cache(cache).start();
    for path in paths {
        read(&mount.tag_path(path)).unwrap();
    }
}

/// The kernel's release, and whether it can pass FUSE reads through to a
/// backing file: Linux 6.9 and later, built with `CONFIG_FUSE_PASSTHROUGH`
/// (taken as given when the build configuration cannot be read), for root.
pub fn kernel_passthrough() -> (String, bool) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = release.trim().to_string();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let built_with = fs::read_to_string(format!("/boot/config-{release}")).map_or(true, |config| {
        config.lines().any(|l| l == "CONFIG_FUSE_PASSTHROUGH=y")
    });
    // SAFETY: a plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    (release, version >= (6, 9) && built_with && root)
}

/// Reads a whole file, with its error if any.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads `path` whole by a new open, once the opens of the version before
/// are released: the kernel sends a release after the last `close` (or
/// `munmap`) returns, and until it arrives a new open of another version
/// is `ESTALE`. Without opens (FUSE's no-open mode), once the kernel took
/// the drop of a changed file's name: until then the name leads to the
/// old inode, which is `ESTALE`.
pub fn read_once_released(path: &Path) -> Vec<u8> {
    for _ in 0..500 {
        match read(path) {
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            result => return result.unwrap(),
        }
    }
    panic!("{} still stale after 10 s", path.display());
}

/// Opens a file with `O_DIRECT`.
pub fn open_direct(path: &Path) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

/// Reads an open file whole, `chunk` bytes a read into a buffer at an odd
/// address (as any FUSE file allows; a passed-through `O_DIRECT` open would
/// follow the cache's filesystem's rules instead).
pub fn read_at_odd_address(file: &fs::File, chunk: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut got = Vec::new();
    let mut buffer = vec![0u8; chunk + 1];
    loop {
        match file.read_at(&mut buffer[1..], got.len() as u64).unwrap() {
            0 => return got,
            n => got.extend_from_slice(&buffer[1..1 + n]),
        }
    }
}

/// Whether a path of a tag's tree (as [`walk`] gives it) is one the mount
/// generates rather than one of the server's files.
pub fn is_generated(path: &str) -> bool {
    let mut parts = path.trim_end_matches('/').split('/');
    let in_extra_dir = parts
        .nth(1)
        .is_some_and(|tier| ["scalar", "auto", "best"].contains(&tier));
    in_extra_dir || path.ends_with(".mtlx") || path.ends_with(".usda")
}

/// A walked tree split into what the mount generates and the server's
/// files, a directory holding generated entries only (a scalar-only
/// source's) counted with the generated ones.
pub fn split_generated(tree: Vec<String>) -> (Vec<String>, Vec<String>) {
    let (mut generated, served): (Vec<String>, Vec<String>) =
        tree.into_iter().partition(|p| is_generated(p));
    let files: Vec<String> = served
        .iter()
        .filter(|p| !p.ends_with('/'))
        .cloned()
        .collect();
    let (only_generated, served): (Vec<String>, Vec<String>) = served.into_iter().partition(|p| {
        p.ends_with('/')
            && !files.iter().any(|f| f.starts_with(p.as_str()))
            && generated.iter().any(|g| g.starts_with(p.as_str()))
    });
    generated.extend(only_generated);
    (generated, served)
}

/// Every path under `root`, directories with a trailing `/`, relative.
pub fn walk(root: &Path) -> Vec<String> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{relative}/"));
                visit(root, &path, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    visit(root, root, &mut out);
    out.sort();
    out
}

/// A small tmpfs (mode 0700), unmounted when dropped, even when the test
/// fails.
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    pub fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "cannot mount a tmpfs");
        watchdog::track(dir.path());
        Tmpfs(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Writes until it takes no more.
    pub fn fill(&self) {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..100_000 {
            if let Err(e) = std::io::Write::write_all(&mut file, &chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return;
            }
        }
        panic!("the tmpfs never filled");
    }

    /// Room again: what `fill` wrote goes.
    pub fn empty(&self) {
        fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        watchdog::untrack(self.0.path());
    }
}

/// A memory figure of `/proc/PID/status` (`VmHWM`, `RssAnon`...), in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of a process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM")
}

/// `release` served with its first `count` PNG textures made `len` bytes
/// each (at least 16), all different, and their paths.
pub fn served_with_pngs_of(
    mut release: Release,
    count: usize,
    len: usize,
) -> (Served, Vec<String>) {
    let paths: Vec<String> = release
        .textures()
        .map(|(path, _)| path.clone())
        .filter(|path| path.ends_with(".png"))
        .take(count)
        .collect();
    assert_eq!(paths.len(), count, "enough textures");
    for (index, path) in paths.iter().enumerate() {
        let mut bytes = texture_like(PNG_MAGIC, len, index as u8);
        // Each its own bytes, however many: no two share a download.
        let stamp = PNG_MAGIC.len()..PNG_MAGIC.len() + 8;
        bytes[stamp].copy_from_slice(&(index as u64).to_le_bytes());
        release.replace_texture(path, bytes);
    }
    (Served::new(release), paths)
}

/// Every one of `paths` shows `len` bytes in `mount` (sizes are exact
/// before the first read).
pub fn assert_sizes(mount: &Mount, paths: &[String], len: usize) {
    for path in paths {
        assert_eq!(
            fs::metadata(mount.tag_path(path)).unwrap().len(),
            len as u64,
            "{path}"
        );
    }
}

/// Anonymous memory a process holds, in bytes (`RssAnon`).
pub fn anonymous_rss(pid: u32) -> u64 {
    status_bytes(pid, "RssAnon").expect("RssAnon in /proc status")
}

/// Bytes that pass as a texture of `magic` and are `len` long.
pub fn texture_like(magic: &[u8], len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    let mut x = seed as u32 | 1;
    while bytes.len() < len {
        // A little xorshift: bytes that do not repeat or compress.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    bytes
}

/// `matvisfs cache clear` on the mount's cache, while it is mounted.
pub fn clear_cache(mount: &Mount) {
    let status = Command::new(BIN)
        .args(["cache", "clear", "--cache-dir"])
        .arg(&mount.cache)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A plain mirror (no redirects, no digest) of the small release with
/// `old` at `path`, mounted: the session's revalidation done and `old`'s
/// size given to the kernel by a `stat`; then the server replaces the file
/// with `new`, manifest and catalog untouched.
pub fn replaced_after_stat(path: &str, old: &[u8], new: &[u8]) -> (Served, Mount) {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    release.replace_texture(path, old.to_vec());
    let mut served = Served::plain_mirror(release);
    let mount = Mount::builder(&served.base_url()).start();
    read(&mount.tag_path("ambientcg/1k/Metal032/color.png")).unwrap();
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        old.len() as u64
    );
    let mut replaced = served.release.clone();
    replaced.files.insert(path.into(), new.to_vec());
    served.republish(replaced);
    (served, mount)
}

/// A loopback address no one listens on, for `--metrics`.
pub fn metrics_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The count of one kernel operation in a `--metrics` scrape.
pub fn operations(address: &str, opcode: &str) -> u64 {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
    let name = format!("matvisfs_fuse_operation_duration_seconds_count{{opcode=\"{opcode}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&name))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

/// The names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The errno of a failed call; `None` when it succeeded.
pub fn errno<T>(result: std::io::Result<T>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

/// `matvisfs refresh` of the mount, which must succeed.
pub fn refresh(mount: &Mount) {
    let refreshed = Command::new(BIN)
        .arg("refresh")
        .arg(&mount.path)
        .status()
        .unwrap();
    assert!(refreshed.success());
}

/// `count` PNG textures of the tier the catalog proves by hash, held open
/// (read whole) by `mount`, then changed on the server and the mount
/// refreshed: the held files, their paths and their new bytes.
fn hold_then_change(
    served: &mut Served,
    mount: &Mount,
    count: usize,
) -> (Vec<fs::File>, Vec<String>, Vec<Vec<u8>>) {
    let paths: Vec<String> = served
        .release
        .textures()
        .map(|(path, _)| path.to_string())
        .filter(|path| path.contains("/1k/") && path.ends_with(".png"))
        .take(count)
        .collect();
    assert_eq!(paths.len(), count);
    let held = paths
        .iter()
        .map(|path| {
            let file = fs::File::open(mount.tag_path(path)).unwrap();
            std::io::Read::read_to_end(&mut &file, &mut Vec::new()).unwrap();
            file
        })
        .collect();
    let mut release = served.release.clone();
    let new = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let bytes = matvisfs_sample::images::png("republished", path, 40 + i as u32);
            release.replace_texture(path, bytes.clone());
            bytes
        })
        .collect();
    served.republish(release);
    refresh(mount);
    (held, paths, new)
}

/// The first read of `file`, of up to 1 MiB, as a C reader makes it: with
/// no `fstat` before it (which `read_to_end` makes, and which would have
/// the kernel ask for the file's size first).
pub fn first_read(file: &fs::File) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0; 1 << 20];
    let n = std::io::Read::read(&mut &*file, &mut buffer)?;
    buffer.truncate(n);
    Ok(buffer)
}

/// An open that waits for the old version's release while the file changes
/// once more reads the newest version whole, in a tier the catalog does
/// not prove by hash (the open cannot know that version's size when it is
/// decided again), though the kernel still holds the size of the version
/// held open. `args`: the mount's own.
pub fn waited_through_a_second_change(args: &[&str]) {
    let mut served = Served::small();
    let path = "ambientcg/512/Wood051/ao.png";
    let mut builder = Mount::builder(&served.base_url());
    for arg in args {
        builder = builder.arg(arg);
    }
    let mount = builder.start();
    let held = fs::File::open(mount.tag_path(path)).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut bytes).unwrap();
    assert!(bytes == served.release.files[path]);
    let change = |served: &mut Served, seed: u32| {
        let mut release = served.release.clone();
        let new = matvisfs_sample::images::png("republished", "ao", seed);
        release.replace_texture(path, new.clone());
        served.republish(release);
        refresh(&mount);
        new
    };
    let first = change(&mut served, 40);
    // The kernel is given the size of the version held open.
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        bytes.len() as u64
    );
    let opens = || mount.stats()["opens"].clone();
    let opening = {
        let file = mount.tag_path(path);
        std::thread::spawn(move || {
            let opened = fs::File::open(file)?;
            Ok::<_, std::io::Error>(first_read(&opened))
        })
    };
    wait_for("the open to wait", Duration::from_secs(30), || {
        opening.is_finished() || opens()["waiting_for_release"] == 1
    });
    let newest = change(&mut served, 90);
    assert_ne!(newest.len(), first.len());
    assert_ne!(newest.len(), bytes.len());
    drop(held);
    // Closed within its wait, unless the machine is slow enough to delay
    // the close past it: then the open fails with `ESTALE`, as documented
    // (a read of an open that succeeded must not).
    match opening.join().unwrap() {
        Ok(read) => {
            let reopened = read.expect("an open that succeeded reads");
            assert!(reopened == newest, "{} bytes", reopened.len());
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
            assert_eq!(opens()["waiting_for_release"], 0, "{}", opens());
        }
    }
    assert!(read(&mount.tag_path(path)).unwrap() == newest);
}

/// Eight files of a mount with one thread reading kernel requests (and
/// `args`) are held open, changed on the server, and opened again, each
/// by its own thread: all eight opens wait at once for the old version's
/// release (they hold no thread), a read that downloads goes on
/// meanwhile, and once the held files are closed each open reads its new
/// version whole.
pub fn reopened_while_held(args: &[&str]) {
    let mut served = Served::small();
    let unrelated = "ambientcg/512/Rock064/color.png";
    let mut builder = Mount::builder(&served.base_url()).arg("--threads").arg("1");
    for arg in args {
        builder = builder.arg(arg);
    }
    let mount = builder.start();
    let (held, paths, new) = hold_then_change(&mut served, &mount, 8);

    let opened_at = Instant::now();
    let opening: Vec<_> = paths
        .iter()
        .map(|path| {
            let file = mount.tag_path(path);
            std::thread::spawn(move || read(&file))
        })
        .collect();
    let opens = || mount.stats()["opens"].clone();
    // All eight wait at once, unless the machine is slow enough that the
    // first one's second ends before the last one starts waiting.
    let mut most = 0;
    wait_for("eight opens to wait", Duration::from_secs(30), || {
        most = most.max(opens()["waiting_for_release"].as_u64().unwrap());
        most == 8 || opened_at.elapsed() > Duration::from_millis(900)
    });
    assert!(
        most == 8 || (most > 2 && opened_at.elapsed() > Duration::from_millis(900)),
        "{most} opens waited at once"
    );
    // A read that needs a download, while they wait.
    assert_eq!(
        read(&mount.tag_path(unrelated)).unwrap(),
        served.release.files[unrelated]
    );
    drop(held);
    // Closed within the opens' wait (a second from their start) unless the
    // machine is slow enough to delay the closes: then `ESTALE` is their
    // documented answer.
    let closed_in_time = opened_at.elapsed() < Duration::from_millis(500);
    for ((path, opened), new) in paths.iter().zip(opening).zip(&new) {
        match opened.join().unwrap() {
            Ok(bytes) => assert!(bytes == *new, "{path}: {} bytes", bytes.len()),
            Err(e) => {
                assert!(!closed_in_time, "{path}: {e}");
                assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{path}: {e}");
            }
        }
    }
    assert_eq!(opens()["waited_for_release"], 8, "{}", opens());
    assert_eq!(opens()["waiting_for_release"], 0, "{}", opens());
}

/// Two files of a mount with one thread reading kernel requests (and
/// `args`) are held open and changed on the server; then every download
/// hangs, and readers of uncached files take every download worker. An
/// open of each changed file waits for the held one's release; both are
/// answered from memory before any hung reader ends: the first once its
/// old version is closed, the second with `ESTALE` at its deadline.
pub fn parked_opens_wait_for_no_hung_download(args: &[&str]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut served = Served::small();
    let mut builder = Mount::builder(&served.base_url()).few_workers().timeout(6);
    for arg in args {
        builder = builder.arg(arg);
    }
    let mount = builder.start();
    let (held, changed, _) = hold_then_change(&mut served, &mount, 2);
    served.hang_downloads();
    let uncached: Vec<String> = served
        .release
        .textures()
        .map(|(path, _)| path.to_string())
        .filter(|path| !path.contains("/1k/"))
        .take(8)
        .collect();
    let finished = AtomicUsize::new(0);
    let opens = || mount.stats()["opens"].clone();
    std::thread::scope(|scope| {
        for path in &uncached {
            let (finished, mount) = (&finished, &mount);
            scope.spawn(move || {
                let result = read(&mount.tag_path(path));
                finished.fetch_add(1, Ordering::SeqCst);
                assert!(result.is_err(), "{path} read despite a hung server");
            });
        }
        // The four download workers each hold a hung download.
        wait_for("4 hung downloads", Duration::from_secs(20), || {
            let requests = served.server.requests();
            requests
                .iter()
                .filter(|r| r.path.starts_with("cdn/"))
                .count()
                >= 4
        });
        let mut held = held.into_iter();
        for (i, path) in changed.iter().enumerate() {
            let opening = scope.spawn(|| fs::File::open(mount.tag_path(path)));
            wait_for("the open to wait", Duration::from_secs(20), || {
                opening.is_finished() || opens()["waiting_for_release"] == 1
            });
            let old = held.next().unwrap();
            let opened = match i {
                // Its old version closed: the open goes on.
                0 => {
                    drop(old);
                    opening.join().unwrap()
                }
                // Held to its deadline: `ESTALE`.
                _ => {
                    let opened = opening.join().unwrap();
                    drop(old);
                    opened
                }
            };
            assert_eq!(
                finished.load(Ordering::SeqCst),
                0,
                "{path}: the open waited for hung downloads"
            );
            match (i, opened) {
                (0, opened) => drop(opened.expect("the new version")),
                (_, Err(e)) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{path}: {e}"),
                (_, Ok(_)) => panic!("{path}: opened beside its held old version"),
            }
        }
        assert_eq!(opens()["waited_for_release"], 2, "{}", opens());
        assert_eq!(opens()["waiting_for_release"], 0, "{}", opens());
    });
}
