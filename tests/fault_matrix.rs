//! The reliability matrix: every fault a server, a network, a disk or a
//! signal can throw at a mount, what the user should see, and what they do
//! see. Each row is checked; `scripts/fault-suite.sh` prints the table.

mod common;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BIN, Mount, Served, TAG, background_mount, is_mounted, peak_rss, read, warm};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::{DevServer, Fault, FaultRule, ServerOptions};

/// `--timeout` of the mounts below.
const TIMEOUT: u64 = 2;
/// `--retries` of the mounts below.
const RETRIES: u32 = 1;

/// The documented bound on a failing read: every attempt may take the full
/// timeout, plus backoffs (50 ms doubling) and slack for a loaded machine.
fn error_bound() -> Duration {
    Duration::from_secs(TIMEOUT * (RETRIES as u64 + 1) + 3)
}

fn mount(served: &Served) -> Mount {
    mount_with(served, &[])
}

fn mount_with(served: &Served, extra: &[&str]) -> Mount {
    let mut builder = Mount::builder(&served.base_url())
        .timeout(TIMEOUT)
        .arg("--retries")
        .arg(&RETRIES.to_string());
    for arg in extra {
        builder = builder.arg(arg);
    }
    builder.start()
}

/// Reads a file and says how it went and how long it took.
fn timed_read(path: &Path) -> (std::io::Result<Vec<u8>>, Duration) {
    let started = Instant::now();
    let result = read(path);
    (result, started.elapsed())
}

fn errno(result: &std::io::Result<Vec<u8>>) -> String {
    match result {
        Ok(bytes) => format!("{} bytes", bytes.len()),
        Err(e) => match e.raw_os_error() {
            Some(libc::EIO) => "EIO".into(),
            Some(libc::ENOTCONN) => "ENOTCONN".into(),
            _ => e.to_string(),
        },
    }
}

/// The first texture of the release, on the CDN path the resolve endpoint
/// redirects to.
fn a_texture(served: &Served, index: usize) -> (String, Vec<u8>) {
    let (path, bytes) = served.release.textures().nth(index).unwrap();
    (path.clone(), bytes.clone())
}

fn cdn(path: &str) -> String {
    format!("cdn/{TAG}/{path}")
}

struct Row {
    fault: &'static str,
    expected: &'static str,
    observed: String,
    time_to_error: Option<Duration>,
    passed: bool,
}

type Scenario = fn() -> (String, Option<Duration>);

fn scenarios() -> Vec<(&'static str, &'static str, Scenario)> {
    vec![
        (
            "server down at mount, nothing cached",
            "mount exits 1 at once, naming the tag and URL",
            down_at_mount_uncached,
        ),
        (
            "server down at mount, manifest cached",
            "mounts; cached files read; others EIO fast",
            down_at_mount_cached,
        ),
        (
            "server dies mid-session, comes back",
            "EIO fast while down; reads recover without remount",
            dies_and_returns,
        ),
        (
            "accepts connections, never answers",
            "EIO within the bound; cached reads go on meanwhile",
            never_answers,
        ),
        (
            "headers, then stalls mid-body",
            "EIO within the bound",
            stalls_mid_body,
        ),
        (
            "trickles one byte a second",
            "EIO within the bound",
            trickles,
        ),
        (
            "connection reset mid-body (once)",
            "retried: correct bytes",
            reset_mid_body,
        ),
        (
            "body shorter than Content-Length (once)",
            "retried: correct bytes",
            short_body,
        ),
        (
            "body longer than Content-Length",
            "correct bytes; the next request works",
            long_body,
        ),
        (
            "500 storm",
            "EIO at once, no retry; recovers when it ends",
            storm_500,
        ),
        (
            "429 with Retry-After: 1",
            "waits as asked, then correct bytes",
            too_many_requests,
        ),
        (
            "503 twice",
            "retried with backoff: correct bytes",
            unavailable_twice,
        ),
        ("redirect loop", "EIO (too many redirects)", redirect_loop),
        (
            "redirect to another host",
            "followed: correct bytes",
            redirect_elsewhere,
        ),
        (
            "HTML error page with 200",
            "EIO; nothing cached",
            html_with_200,
        ),
        (
            "bytes differ from X-Linked-Etag",
            "EIO; nothing cached",
            wrong_linked_sha,
        ),
        (
            "bytes differ from the catalog's sha256",
            "EIO; nothing cached",
            wrong_catalog_sha,
        ),
        (
            "declared size above --max-file-size",
            "EIO before the body; nothing cached",
            declared_too_big,
        ),
        (
            "undeclared size above --max-file-size",
            "EIO once past the cap; nothing cached",
            actual_too_big,
        ),
        (
            "SIGKILL during downloads, then remount",
            "no partial or wrong file; verify clean",
            killed_during_downloads,
        ),
        (
            "mountpoint left dead by a killed mount",
            "mount explains and recovers",
            dead_mountpoint,
        ),
        (
            "cache on a full filesystem",
            "correct bytes or EIO; index consistent",
            full_disk,
        ),
        (
            "SIGTERM while reads are in flight",
            "clean exit within the grace; no hung reader",
            sigterm_in_flight,
        ),
        (
            "unmount --lazy while reads are in flight",
            "clean exit; no hung reader",
            lazy_unmount_in_flight,
        ),
        (
            "32 readers, 2 tags, faults injected",
            "no deadlock; every read exact; memory bounded",
            stress,
        ),
    ]
}

#[test]
fn fault_matrix() {
    let scenarios = scenarios();
    let next = AtomicUsize::new(0);
    let rows = parking_lot::Mutex::new(Vec::new());
    // A few at a time: enough to be quick, few enough that timing holds.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while let Some(&(fault, expected, run)) =
                    scenarios.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    let outcome = catch_unwind(AssertUnwindSafe(run));
                    let row = match outcome {
                        Ok((observed, time_to_error)) => Row {
                            fault,
                            expected,
                            observed,
                            time_to_error,
                            passed: true,
                        },
                        Err(panic) => {
                            let why = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Row {
                                fault,
                                expected,
                                observed: format!("FAILED: {why}"),
                                time_to_error: None,
                                passed: false,
                            }
                        }
                    };
                    rows.lock().push(row);
                }
            });
        }
    });
    let mut rows = rows.into_inner();
    rows.sort_by_key(|r| scenarios.iter().position(|s| s.0 == r.fault));
    println!("\n| fault | expected | observed | time to error |\n|---|---|---|---|");
    for row in &rows {
        let time = row
            .time_to_error
            .map_or("-".to_string(), |t| format!("{:.2} s", t.as_secs_f64()));
        let observed = row.observed.replace('\n', " ").replace('|', "/");
        println!(
            "| {} | {} | {} | {} |",
            row.fault, row.expected, observed, time
        );
    }
    let failed: Vec<&str> = rows.iter().filter(|r| !r.passed).map(|r| r.fault).collect();
    assert!(failed.is_empty(), "failed rows: {failed:?}");
}

fn down_at_mount_uncached() -> (String, Option<Duration>) {
    let mut served = Served::small();
    served.server.stop();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let started = Instant::now();
    let output = background_mount(&mountpoint, &served.base_url(), &dir.path().join("cache"))
        .args(["--timeout", "2", "--retries", "1"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(TAG) && stderr.contains("/release-manifest.json"),
        "{stderr}"
    );
    assert!(!is_mounted(&mountpoint));
    assert!(took < error_bound(), "{took:?}");
    (
        format!("exit 1: {}", stderr.trim_start_matches("matvisfs: ")),
        Some(took),
    )
}

fn down_at_mount_cached() -> (String, Option<Duration>) {
    let mut served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let (cached, bytes) = a_texture(&served, 0);
    let (other, _) = a_texture(&served, 1);
    warm(&served.base_url(), cache.path(), &[&cached]);
    served.server.stop();
    let m = Mount::builder(&served.base_url())
        .cache(cache.path())
        .timeout(TIMEOUT)
        .start();
    assert_eq!(read(&m.tag_path(&cached)).unwrap(), bytes);
    let (result, took) = timed_read(&m.tag_path(&other));
    assert_eq!(result.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(took < error_bound());
    (
        format!("mounted; cached read ok; uncached {}", errno(&result)),
        Some(took),
    )
}

fn dies_and_returns() -> (String, Option<Duration>) {
    let mut served = Served::small();
    let m = mount(&served);
    let (first, bytes) = a_texture(&served, 0);
    let (second, second_bytes) = a_texture(&served, 1);
    read(&m.tag_path(&first)).unwrap();
    fs::metadata(m.tag_path(&second)).unwrap();
    served.server.stop();
    let (result, took) = timed_read(&m.tag_path(&second));
    assert_eq!(result.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(
        read(&m.tag_path(&first)).unwrap(),
        bytes,
        "cached while down"
    );
    served.server.restart().unwrap();
    assert_eq!(
        read(&m.tag_path(&second)).unwrap(),
        second_bytes,
        "recovered"
    );
    (
        format!(
            "while down: {}; cached ok; back: correct bytes",
            errno(&result)
        ),
        Some(took),
    )
}

/// Reads `path` while `fault` is injected on its CDN request, checking that
/// a cached file still reads quickly meanwhile.
fn fails_within_bound(fault: Fault) -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let (slow, _) = a_texture(&served, 2);
    let (cached, cached_bytes) = a_texture(&served, 3);
    read(&m.tag_path(&cached)).unwrap();
    fs::metadata(m.tag_path(&slow)).unwrap();
    served.server.inject(FaultRule::new(&cdn(&slow), fault));
    let meanwhile = std::thread::scope(|scope| {
        let reader = scope.spawn(|| timed_read(&m.tag_path(&slow)));
        std::thread::sleep(Duration::from_millis(300));
        let (other, other_took) = timed_read(&m.tag_path(&cached));
        assert_eq!(other.unwrap(), cached_bytes);
        assert!(
            other_took < Duration::from_secs(1),
            "a cached read waited {other_took:?}"
        );
        let (result, took) = reader.join().unwrap();
        assert_eq!(
            result.as_ref().unwrap_err().raw_os_error(),
            Some(libc::EIO),
            "{}",
            m.log()
        );
        assert!(took < error_bound(), "{took:?}");
        (result, took, other_took)
    });
    let (result, took, other_took) = meanwhile;
    (
        format!(
            "{} after {:.1} s; a cached read meanwhile took {} ms",
            errno(&result),
            took.as_secs_f64(),
            other_took.as_millis()
        ),
        Some(took),
    )
}

fn never_answers() -> (String, Option<Duration>) {
    fails_within_bound(Fault::Hang)
}

fn stalls_mid_body() -> (String, Option<Duration>) {
    fails_within_bound(Fault::StallBody)
}

fn trickles() -> (String, Option<Duration>) {
    fails_within_bound(Fault::Trickle(Duration::from_secs(1)))
}

/// The fault hits the first `times` requests; the read still returns the
/// right bytes.
fn recovers_from(fault: Fault, times: u32) -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let (path, bytes) = a_texture(&served, 4);
    fs::metadata(m.tag_path(&path)).unwrap();
    served
        .server
        .inject(FaultRule::new(&cdn(&path), fault).times(times));
    let (result, took) = timed_read(&m.tag_path(&path));
    assert_eq!(result.unwrap(), bytes);
    let attempts = served.server.count("GET", &cdn(&path));
    assert_eq!(attempts, times as usize + 1);
    (
        format!(
            "correct bytes after {attempts} attempts ({:.2} s)",
            took.as_secs_f64()
        ),
        None,
    )
}

fn reset_mid_body() -> (String, Option<Duration>) {
    recovers_from(Fault::ResetBody, 1)
}

fn short_body() -> (String, Option<Duration>) {
    recovers_from(Fault::ShortBody, 1)
}

fn long_body() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let (path, bytes) = a_texture(&served, 5);
    let (next, next_bytes) = a_texture(&served, 6);
    fs::metadata(m.tag_path(&path)).unwrap();
    served
        .server
        .inject(FaultRule::new(&cdn(&path), Fault::LongBody).times(1));
    assert_eq!(read(&m.tag_path(&path)).unwrap(), bytes);
    assert_eq!(read(&m.tag_path(&next)).unwrap(), next_bytes);
    ("correct bytes; the next file too".into(), None)
}

fn storm_500() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let paths: Vec<(String, Vec<u8>)> = (0..6).map(|i| a_texture(&served, i)).collect();
    for (path, _) in &paths {
        fs::metadata(m.tag_path(path)).unwrap();
    }
    served.server.inject(FaultRule::new(
        "cdn/",
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    ));
    let started = Instant::now();
    for (path, _) in &paths {
        assert_eq!(
            read(&m.tag_path(path)).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
    }
    let took = started.elapsed();
    let attempts: usize = paths
        .iter()
        .map(|(p, _)| served.server.count("GET", &cdn(p)))
        .sum();
    assert_eq!(attempts, paths.len(), "a 500 is not retried");
    served.server.clear_faults();
    std::thread::sleep(Duration::from_millis(1100)); // past the failure memory of open files
    for (path, bytes) in &paths {
        assert_eq!(&read(&m.tag_path(path)).unwrap(), bytes);
    }
    (
        format!(
            "{} reads: EIO each, 1 request each, {:.2} s in all; then correct bytes",
            paths.len(),
            took.as_secs_f64()
        ),
        Some(took / paths.len() as u32),
    )
}

fn too_many_requests() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let (path, bytes) = a_texture(&served, 7);
    fs::metadata(m.tag_path(&path)).unwrap();
    served.server.inject(
        FaultRule::new(
            &cdn(&path),
            Fault::Status {
                code: 429,
                retry_after: Some(1),
            },
        )
        .times(1),
    );
    let (result, took) = timed_read(&m.tag_path(&path));
    assert_eq!(result.unwrap(), bytes);
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After was not honoured: {took:?}"
    );
    (
        format!("correct bytes after {:.2} s", took.as_secs_f64()),
        None,
    )
}

fn unavailable_twice() -> (String, Option<Duration>) {
    recovers_from(
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        1,
    )
}

fn redirect_loop() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let (path, _) = a_texture(&served, 8);
    fs::metadata(m.tag_path(&path)).unwrap();
    served
        .server
        .inject(FaultRule::new(&cdn(&path), Fault::RedirectLoop));
    let (result, took) = timed_read(&m.tag_path(&path));
    assert_eq!(result.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(m.log().contains("too many redirects"), "{}", m.log());
    (
        format!("{} (too many redirects)", errno(&result)),
        Some(took),
    )
}

fn redirect_elsewhere() -> (String, Option<Duration>) {
    let served = Served::small();
    let cdn_server = DevServer::start(served.dir.path()).unwrap();
    let other_host = format!("http://localhost:{}", cdn_server.addr().port());
    served.server.set_options(ServerOptions {
        cdn_base: Some(other_host.clone()),
        ..ServerOptions::default()
    });
    let m = mount(&served);
    let (path, bytes) = a_texture(&served, 9);
    assert_eq!(read(&m.tag_path(&path)).unwrap(), bytes);
    assert_eq!(
        cdn_server.count("GET", &cdn(&path)),
        1,
        "fetched from the other host"
    );
    assert_eq!(served.server.count("GET", &cdn(&path)), 0);
    (format!("followed to {other_host}: correct bytes"), None)
}

/// The CDN answers with `bytes`; the read must fail and nothing be kept.
fn refused(path: &str, fault: Fault, served: &Served, m: &Mount) -> (String, Option<Duration>) {
    fs::metadata(m.tag_path(path)).unwrap();
    // On every attempt: a retry must not get the real bytes by luck.
    served.server.inject(FaultRule::new(&cdn(path), fault));
    let (result, took) = timed_read(&m.tag_path(path));
    assert_eq!(result.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    served.server.clear_faults();
    std::thread::sleep(Duration::from_millis(1100)); // past the failure memory of open files
    // Nothing bad was kept: the next read downloads the real bytes.
    assert_eq!(
        &read(&m.tag_path(path)).unwrap(),
        &served.release.files[path]
    );
    (
        format!("{}; then correct bytes on the next read", errno(&result)),
        Some(took),
    )
}

fn html_with_200() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let (path, _) = a_texture(&served, 10);
    refused(
        &path,
        Fault::Replace(b"<html><body>Service error</body></html>".to_vec()),
        &served,
        &m,
    )
}

fn wrong_linked_sha() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    let (path, mut bytes) = a_texture(&served, 11);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    refused(&path, Fault::Replace(bytes), &served, &m)
}

fn wrong_catalog_sha() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount(&served);
    // A baked-tier file replaced on the server by bytes of the same size
    // that the catalog does not vouch for (its X-Linked-Etag follows).
    let path = "ambientcg/1k/Metal032/roughness.png";
    let on_disk = served.dir.path().join(TAG).join(path);
    let mut bytes = fs::read(&on_disk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&on_disk, &bytes).unwrap();
    fs::metadata(m.tag_path(path)).unwrap();
    let (result, took) = timed_read(&m.tag_path(path));
    assert_eq!(result.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(m.log().contains("catalog"), "{}", m.log());
    fs::write(&on_disk, &served.release.files[path]).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        &read(&m.tag_path(path)).unwrap(),
        &served.release.files[path]
    );
    (
        format!(
            "{} (sha256 differs from the catalog); nothing kept",
            errno(&result)
        ),
        Some(took),
    )
}

fn declared_too_big() -> (String, Option<Duration>) {
    let served = Served::small();
    let m = mount_with(&served, &["--max-file-size", "100B"]);
    let (path, _) = a_texture(&served, 12);
    let (result, took) = timed_read(&m.tag_path(&path));
    assert_eq!(result.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(m.log().contains("--max-file-size"), "{}", m.log());
    let body_bytes: usize = served
        .server
        .requests()
        .iter()
        .filter(|r| r.path == cdn(&path) && r.status == 200)
        .count();
    assert!(body_bytes <= 1);
    assert_eq!(
        fs::read_dir(m.cache.join("objects")).unwrap().count(),
        0,
        "nothing cached"
    );
    (format!("{}; nothing cached", errno(&result)), Some(took))
}

fn actual_too_big() -> (String, Option<Duration>) {
    let served = Served::small();
    // Plain files (no X-Linked-Size) sent chunked: no length is declared.
    served.server.set_options(ServerOptions {
        lfs_redirects: false,
        ..ServerOptions::default()
    });
    let m = mount_with(&served, &["--max-file-size", "100B"]);
    let (path, _) = a_texture(&served, 13);
    fs::metadata(m.tag_path(&path)).unwrap();
    served
        .server
        .inject(FaultRule::new(&format!("{TAG}/{path}"), Fault::Chunked));
    let (result, took) = timed_read(&m.tag_path(&path));
    assert_eq!(result.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(m.log().contains("--max-file-size"), "{}", m.log());
    assert_eq!(
        fs::read_dir(m.cache.join("objects")).unwrap().count(),
        0,
        "nothing cached"
    );
    (format!("{}; nothing cached", errno(&result)), Some(took))
}

fn verify_clean(cache: &Path) {
    let output = Command::new(BIN)
        .args(["cache", "verify", "--cache-dir"])
        .arg(cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(": 0 corrupt"),
        "{stdout}"
    );
}

fn killed_during_downloads() -> (String, Option<Duration>) {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    served.server.inject(FaultRule::new(
        "cdn/",
        Fault::Trickle(Duration::from_millis(5)),
    ));
    {
        let mut m = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        let paths: Vec<PathBuf> = served
            .release
            .textures()
            .map(|(p, _)| m.tag_path(p))
            .collect();
        std::thread::scope(|scope| {
            for path in &paths {
                scope.spawn(move || drop(read(path)));
            }
            std::thread::sleep(Duration::from_millis(500));
            m.signal(libc::SIGKILL);
        });
        m.wait_exit(Duration::from_secs(10));
    }
    verify_clean(cache.path());
    served.server.clear_faults();
    let m = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&m.tag_path(path)).unwrap(), bytes, "{path}");
    }
    (
        "verify: 0 corrupt; remount serves every file byte-exact".into(),
        None,
    )
}

fn dead_mountpoint() -> (String, Option<Duration>) {
    let served = Served::small();
    let mut first = Mount::builder(&served.base_url()).start();
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    assert_eq!(
        fs::metadata(&first.path).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    let output = background_mount(
        &first.path,
        &served.base_url(),
        &first.dir.path().join("cache"),
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.contains("Transport endpoint is not connected"),
        "{stderr}"
    );
    assert!(read(&first.tag_path("release-manifest.json")).is_ok());
    ("explained, detached lazily, mounted again".into(), None)
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "cannot mount a tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

fn full_disk() -> (String, Option<Duration>) {
    let mut spec = ReleaseSpec::small(TAG);
    spec.base_px = 128;
    let served = Served::new(Release::generate(&spec));
    let total: usize = served.release.textures().map(|(_, b)| b.len()).sum();
    let disk = Tmpfs::new("128k");
    assert!(total > 3 * 128 * 1024, "the release must not fit: {total}");
    let cache = disk.0.path().join("cache");
    let (mut ok, mut eio) = (0, 0);
    {
        let m = Mount::builder(&served.base_url()).cache(&cache).start();
        for (path, bytes) in served.release.textures() {
            match read(&m.tag_path(path)) {
                Ok(read) => {
                    assert_eq!(&read, bytes, "{path}");
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{path}: {e}");
                    eio += 1;
                }
            }
        }
    }
    assert!(ok > 0 && eio > 0, "ok {ok}, eio {eio}");
    verify_clean(&cache);
    (
        format!("{ok} reads byte-exact, {eio} EIO; verify: 0 corrupt"),
        None,
    )
}

/// Starts slow downloads, then ends the mount with `stop`; every reader
/// must return and the process exit.
fn ends_while_reading(stop: impl FnOnce(&mut Mount)) -> (String, Option<Duration>) {
    let served = Served::small();
    let mut m = mount(&served);
    let paths: Vec<PathBuf> = served
        .release
        .textures()
        .take(4)
        .map(|(p, _)| m.tag_path(p))
        .collect();
    for path in &paths {
        fs::metadata(path).unwrap();
    }
    served.server.inject(FaultRule::new(
        "cdn/",
        Fault::Delay(Duration::from_millis(1500)),
    ));
    let started = Instant::now();
    let outcomes: Vec<String> = std::thread::scope(|scope| {
        let readers: Vec<_> = paths
            .iter()
            .map(|p| scope.spawn(move || errno(&read(p))))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        stop(&mut m);
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let exited = m.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    assert_eq!(exited, Some(true), "{}", m.log());
    assert!(!is_mounted(&m.path));
    (
        format!(
            "exited cleanly after {:.1} s; readers got: {}",
            took.as_secs_f64(),
            outcomes.join(", ")
        ),
        None,
    )
}

fn sigterm_in_flight() -> (String, Option<Duration>) {
    ends_while_reading(|m| m.signal(libc::SIGTERM))
}

fn lazy_unmount_in_flight() -> (String, Option<Duration>) {
    ends_while_reading(|m| {
        let status = Command::new(BIN)
            .arg("unmount")
            .arg("--lazy")
            .arg(&m.path)
            .status()
            .unwrap();
        assert!(status.success());
    })
}

fn stress() -> (String, Option<Duration>) {
    let served = Served::small();
    let other = Release::generate(&ReleaseSpec::small("v2026.05.0-rc1"));
    other.write_to(served.dir.path()).unwrap();
    // A cap of a third of the content: evictions keep downloads (and so
    // the injected faults) going all along.
    let total: usize = [&served.release, &other]
        .iter()
        .flat_map(|r| r.textures())
        .map(|(_, b)| b.len())
        .sum();
    let cap = (total / 3).to_string();
    let m = mount_with(
        &served,
        &[
            "--tag",
            TAG,
            "--tag",
            "v2026.05.0-rc1",
            "--cache-max-size",
            &cap,
        ],
    );
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for release in [&served.release, &other] {
        for (path, bytes) in release.textures() {
            files.push((m.path.join(&release.tag).join(path), bytes.clone()));
        }
    }
    // Half of them cached before the storm starts.
    for (path, _) in files.iter().step_by(2) {
        read(path).unwrap();
    }
    let stop = AtomicBool::new(false);
    let (good, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(8);
    std::thread::scope(|scope| {
        let watchdog = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                assert!(
                    Instant::now() < deadline + Duration::from_secs(60),
                    "deadlock: readers stuck"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        scope.spawn(|| {
            let faults = [
                Fault::Status {
                    code: 503,
                    retry_after: None,
                },
                Fault::Status {
                    code: 500,
                    retry_after: None,
                },
                Fault::Delay(Duration::from_millis(300)),
                Fault::ResetBody,
                Fault::ShortBody,
            ];
            let mut i = 0;
            while Instant::now() < deadline {
                served.server.clear_faults();
                served
                    .server
                    .inject(FaultRule::new("cdn/", faults[i % faults.len()].clone()).times(3));
                i += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            served.server.clear_faults();
        });
        let readers: Vec<_> = (0..32)
            .map(|t| {
                let (files, good, failed) = (&files, &good, &failed);
                scope.spawn(move || {
                    let mut n: usize = t * 7;
                    while Instant::now() < deadline {
                        n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        let (path, bytes) = &files[n % files.len()];
                        match read(path) {
                            Ok(read) => {
                                assert_eq!(&read, bytes, "{}", path.display());
                                good.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        watchdog.join().unwrap();
    });
    let peak = peak_rss(m.pid().unwrap()).unwrap();
    assert!(peak < 256 << 20, "the daemon peaked at {peak} bytes");
    let good = good.into_inner();
    assert!(good > 100, "only {good} successful reads");
    let downloads = served
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("cdn/"))
        .count();
    assert!(
        downloads > 100,
        "only {downloads} downloads: the faults had little to hit"
    );
    (
        format!(
            "{good} reads byte-exact, {} EIO, {downloads} downloads, no deadlock; daemon peak RSS {} MiB",
            failed.into_inner(),
            peak >> 20
        ),
        None,
    )
}
