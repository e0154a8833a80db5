//! The reliability matrix: every fault a server, a network, a disk or a
//! signal can throw at a mount, what the user should see, and what they do
//! see. One test per row (`cargo test --test fault_matrix <row>` runs one),
//! each under a time limit that fails it instead of hanging; every row
//! writes its line of the table, which `scripts/fault-suite.sh` collects.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::watchdog::{self, doing};
use common::{
    BIN, Mount, Served, TAG, Unmounts, background_mount, is_mounted, panic_message, peak_rss, read,
    stored_objects, wait_for, warm,
};
use matvisfs_sample::{Release, ReleaseSpec, sha256_hex};
use matvisfs_testkit::devserver::{DevServer, Fault, FaultRule, ServerOptions};

/// `--timeout` of the mounts below.
const TIMEOUT: u64 = 2;
/// `--retries` of the mounts below, unless a row needs more.
const RETRIES: u32 = 1;
/// A row still running after this long has hung: it fails.
const ROW_LIMIT: Duration = Duration::from_secs(60);

/// The documented bound on a failing read: every attempt may take the full
/// timeout, plus backoffs (50 ms doubling) and slack for a loaded machine.
fn error_bound() -> Duration {
    Duration::from_secs(TIMEOUT * (RETRIES as u64 + 1) + 3)
}

/// What a row saw, for the table's last two columns.
struct Observed {
    text: String,
    time_to_error: Option<Duration>,
}

fn observed(text: impl Into<String>) -> Observed {
    Observed {
        text: text.into(),
        time_to_error: None,
    }
}

fn failed_after(text: impl Into<String>, took: Duration) -> Observed {
    Observed {
        text: text.into(),
        time_to_error: Some(took),
    }
}

/// Runs one row under the watchdog and writes its line of the table, also
/// when it fails: to stdout, and to `$FAULT_MATRIX_ROWS/<order>.md` when
/// that is set (`scripts/fault-suite.sh` puts the lines together in order).
fn row(
    order: u32,
    fault: &str,
    expected: &str,
    limit: Duration,
    body: impl FnOnce() -> Observed + Send + 'static,
) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        watchdog::bounded(limit, body)
    }));
    let (text, time) = match &outcome {
        Ok(seen) => (
            seen.text.clone(),
            seen.time_to_error
                .map_or("-".into(), |t| format!("{:.2} s", t.as_secs_f64())),
        ),
        Err(panic) => {
            let why = panic_message(&**panic);
            let words: Vec<&str> = why.split_whitespace().collect();
            let short: String = words.join(" ").chars().take(300).collect();
            (format!("FAILED: {short}"), "-".into())
        }
    };
    let line = format!(
        "| {fault} | {expected} | {} | {time} |",
        text.replace('\n', " ").replace('|', "/")
    );
    println!("{line}");
    if let Some(dir) = std::env::var_os("FAULT_MATRIX_ROWS") {
        let file = Path::new(&dir).join(format!("{order:02}.md"));
        fs::write(file, format!("{line}\n")).unwrap();
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn mount(served: &Served, extra: &[&str]) -> Mount {
    mount_retrying(served, RETRIES, extra)
}

fn mount_retrying(served: &Served, retries: u32, extra: &[&str]) -> Mount {
    doing("mounting");
    let mut builder = Mount::builder(&served.base_url())
        .timeout(TIMEOUT)
        .arg("--retries")
        .arg(&retries.to_string());
    for arg in extra {
        builder = builder.arg(arg);
    }
    builder.start()
}

/// Reads a file and says how it went and how long it took.
fn timed_read(path: &Path) -> (std::io::Result<Vec<u8>>, Duration) {
    doing(format!("reading {}", path.display()));
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

fn assert_eio(result: &std::io::Result<Vec<u8>>, m: &Mount) {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => panic!("expected EIO, got {}; log:\n{}", errno(other), m.log()),
    }
}

/// A read that failed is answered with the same error for a moment on an
/// open file that the kernel has not released yet: reads again until one
/// succeeds.
fn read_until_ok(path: &Path) -> Vec<u8> {
    let mut bytes = None;
    wait_for(
        &format!("a successful read of {}", path.display()),
        Duration::from_secs(10),
        || {
            bytes = read(path).ok();
            bytes.is_some()
        },
    );
    bytes.unwrap()
}

/// The `index`th texture of the release.
fn a_texture(served: &Served, index: usize) -> (String, Vec<u8>) {
    let (path, bytes) = served.release.textures().nth(index).unwrap();
    (path.clone(), bytes.clone())
}

/// The CDN path the resolve endpoint redirects `path` to.
fn cdn(path: &str) -> String {
    format!("cdn/{TAG}/{path}")
}

/// Downloads of `path` the server saw (attempts, whatever their outcome).
fn cdn_gets(served: &Served, path: &str) -> usize {
    served.server.count("GET", &cdn(path))
}

/// Every request to the CDN.
fn all_cdn_requests(server: &DevServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("cdn/"))
        .count()
}

fn texture_requests(m: &Mount, outcome: &str) -> u64 {
    m.stats()["requests"]["texture"][outcome]
        .as_u64()
        .unwrap_or(0)
}

fn bytes_downloaded(m: &Mount) -> u64 {
    m.stats()["bytes"]["downloaded"].as_u64().unwrap()
}

#[test]
fn server_down_at_mount_nothing_cached() {
    row(
        1,
        "server down at mount, nothing cached",
        "mount exits 1 at once, naming the tag and URL",
        ROW_LIMIT,
        || {
            let mut served = Served::small();
            served.server.stop();
            let dir = tempfile::tempdir().unwrap();
            let mountpoint = dir.path().join("mnt");
            fs::create_dir(&mountpoint).unwrap();
            let _unmounts = Unmounts::new(&mountpoint);
            doing("mounting while the server is down");
            let started = Instant::now();
            let output =
                background_mount(&mountpoint, &served.base_url(), &dir.path().join("cache"))
                    .args(["--timeout", &TIMEOUT.to_string()])
                    .args(["--retries", &RETRIES.to_string()])
                    .output()
                    .unwrap();
            let took = started.elapsed();
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            assert_eq!(output.status.code(), Some(1), "{stderr}");
            let url = format!("{}/{TAG}/release-manifest.json", served.base_url());
            assert!(stderr.contains(TAG) && stderr.contains(&url), "{stderr}");
            assert!(!is_mounted(&mountpoint));
            assert!(took < error_bound(), "{took:?}");
            let port = format!(":{}", served.server.addr().port());
            failed_after(
                format!(
                    "exit 1: {}",
                    stderr
                        .trim_start_matches("matvisfs: ")
                        .replace(&port, ":PORT")
                ),
                took,
            )
        },
    );
}

#[test]
fn server_down_at_mount_manifest_cached() {
    row(
        2,
        "server down at mount, manifest cached",
        "mounts; cached files read; others EIO fast",
        ROW_LIMIT,
        || {
            let mut served = Served::small();
            let cache = tempfile::tempdir().unwrap();
            let (cached, bytes) = a_texture(&served, 0);
            let (other, _) = a_texture(&served, 1);
            doing("filling the cache");
            warm(&served.base_url(), cache.path(), &[&cached]);
            served.server.stop();
            doing("mounting while the server is down");
            let m = Mount::builder(&served.base_url())
                .cache(cache.path())
                .timeout(TIMEOUT)
                .arg("--retries")
                .arg(&RETRIES.to_string())
                .start();
            assert_eq!(read(&m.tag_path(&cached)).unwrap(), bytes);
            let (result, took) = timed_read(&m.tag_path(&other));
            assert_eio(&result, &m);
            // Refused connections, not timeouts.
            assert!(took < Duration::from_secs(TIMEOUT), "{took:?}");
            let stats = m.stats();
            assert_eq!(stats["cache"]["hits"], 1, "{stats}");
            assert_eq!(stats["tags"][TAG]["revalidation"], "offline", "{stats}");
            failed_after(
                format!(
                    "mounted; cached read ok (1 cache hit); uncached {}; the tag is \"offline\" in stats.json",
                    errno(&result)
                ),
                took,
            )
        },
    );
}

#[test]
fn server_dies_mid_session_and_comes_back() {
    row(
        3,
        "server dies mid-session, comes back",
        "EIO fast while down; reads recover without remount",
        ROW_LIMIT,
        || {
            let mut served = Served::small();
            let m = mount(&served, &[]);
            let (first, bytes) = a_texture(&served, 0);
            let (second, second_bytes) = a_texture(&served, 1);
            read(&m.tag_path(&first)).unwrap();
            fs::metadata(m.tag_path(&second)).unwrap();
            served.server.stop();
            let (result, took) = timed_read(&m.tag_path(&second));
            assert_eio(&result, &m);
            assert!(took < Duration::from_secs(TIMEOUT), "{took:?}");
            assert_eq!(
                read(&m.tag_path(&first)).unwrap(),
                bytes,
                "cached while down"
            );
            served.server.restart().unwrap();
            assert_eq!(read_until_ok(&m.tag_path(&second)), second_bytes);
            assert_eq!(cdn_gets(&served, &second), 1, "one download once back");
            failed_after(
                format!(
                    "while down: {}; cached ok; back: correct bytes",
                    errno(&result)
                ),
                took,
            )
        },
    );
}

/// Reads a file while `fault` holds up every download of it, checking that
/// a cached file reads at once meanwhile.
fn fails_within_bound(fault: Fault) -> Observed {
    let served = Served::small();
    let m = mount(&served, &[]);
    let (slow, _) = a_texture(&served, 2);
    let (cached, cached_bytes) = a_texture(&served, 3);
    read(&m.tag_path(&cached)).unwrap();
    fs::metadata(m.tag_path(&slow)).unwrap();
    served.server.inject(FaultRule::new(&cdn(&slow), fault));
    let (result, took, other_took) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let started = Instant::now();
            (read(&m.tag_path(&slow)), started.elapsed())
        });
        wait_for("the download to reach the server", error_bound(), || {
            cdn_gets(&served, &slow) >= 1
        });
        let (other, other_took) = timed_read(&m.tag_path(&cached));
        let meanwhile = !reader.is_finished();
        assert_eq!(other.unwrap(), cached_bytes);
        assert!(
            other_took < Duration::from_secs(1),
            "a cached read waited {other_took:?}"
        );
        assert!(meanwhile, "the faulty read had ended before the cached one");
        doing("waiting for the faulty read to fail");
        let (result, took) = reader.join().unwrap();
        (result, took, other_took)
    });
    assert_eio(&result, &m);
    assert!(took < error_bound(), "{took:?}");
    let attempts = cdn_gets(&served, &slow);
    assert_eq!(attempts, RETRIES as usize + 1, "every attempt was made");
    failed_after(
        format!(
            "{} after {:.1} s ({attempts} attempts); a cached read meanwhile took {} ms",
            errno(&result),
            took.as_secs_f64(),
            other_took.as_millis()
        ),
        took,
    )
}

#[test]
fn accepts_connections_never_answers() {
    row(
        4,
        "accepts connections, never answers",
        "EIO within the bound; cached reads go on meanwhile",
        ROW_LIMIT,
        || fails_within_bound(Fault::Hang),
    );
}

#[test]
fn headers_then_stalls_mid_body() {
    row(
        5,
        "headers, then stalls mid-body",
        "EIO within the bound",
        ROW_LIMIT,
        || fails_within_bound(Fault::StallBody),
    );
}

#[test]
fn trickles_one_byte_a_second() {
    row(
        6,
        "trickles one byte a second",
        "EIO within the bound",
        ROW_LIMIT,
        || fails_within_bound(Fault::Trickle(Duration::from_secs(1))),
    );
}

/// The fault hits the first `times` downloads of a file; with `retries`,
/// the read still returns the right bytes, after `times + 1` attempts.
fn recovers_from(fault: Fault, times: u32, retries: u32) -> (usize, Duration) {
    let served = Served::small();
    let m = mount_retrying(&served, retries, &[]);
    let (path, bytes) = a_texture(&served, 4);
    fs::metadata(m.tag_path(&path)).unwrap();
    served
        .server
        .inject(FaultRule::new(&cdn(&path), fault).times(times));
    let (result, took) = timed_read(&m.tag_path(&path));
    assert_eq!(result.unwrap(), bytes);
    let attempts = cdn_gets(&served, &path);
    assert_eq!(attempts, times as usize + 1);
    assert_eq!(texture_requests(&m, "200"), 1, "{}", m.stats());
    (attempts, took)
}

#[test]
fn connection_reset_mid_body_once() {
    row(
        7,
        "connection reset mid-body (once)",
        "retried: correct bytes",
        ROW_LIMIT,
        || {
            let (attempts, took) = recovers_from(Fault::ResetBody, 1, RETRIES);
            observed(format!(
                "correct bytes after {attempts} attempts ({:.2} s)",
                took.as_secs_f64()
            ))
        },
    );
}

#[test]
fn body_shorter_than_content_length_once() {
    row(
        8,
        "body shorter than Content-Length (once)",
        "retried: correct bytes",
        ROW_LIMIT,
        || {
            let (attempts, took) = recovers_from(Fault::ShortBody, 1, RETRIES);
            observed(format!(
                "correct bytes after {attempts} attempts ({:.2} s)",
                took.as_secs_f64()
            ))
        },
    );
}

#[test]
fn body_longer_than_content_length() {
    row(
        9,
        "body longer than Content-Length",
        "correct bytes; the next request works",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &[]);
            let (path, bytes) = a_texture(&served, 5);
            let (next, next_bytes) = a_texture(&served, 6);
            fs::metadata(m.tag_path(&path)).unwrap();
            fs::metadata(m.tag_path(&next)).unwrap();
            served
                .server
                .inject(FaultRule::new(&cdn(&path), Fault::LongBody).times(1));
            assert_eq!(read(&m.tag_path(&path)).unwrap(), bytes);
            assert_eq!(read(&m.tag_path(&next)).unwrap(), next_bytes);
            assert_eq!(cdn_gets(&served, &path), 1);
            assert_eq!(cdn_gets(&served, &next), 1, "the next file in one request");
            observed("correct bytes; the next file too, in one request each")
        },
    );
}

#[test]
fn storm_of_500s() {
    row(
        10,
        "500 storm",
        "EIO at once, no retry; recovers when it ends",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &[]);
            let paths: Vec<(String, Vec<u8>)> = (0..6).map(|i| a_texture(&served, i)).collect();
            for (path, _) in &paths {
                fs::metadata(m.tag_path(path)).unwrap();
            }
            let status = Fault::Status {
                code: 500,
                retry_after: None,
            };
            served.server.inject(FaultRule::new("cdn/", status));
            doing("reading during the storm");
            let started = Instant::now();
            for (path, _) in &paths {
                assert_eio(&read(&m.tag_path(path)), &m);
            }
            let took = started.elapsed();
            let attempts: usize = paths.iter().map(|(p, _)| cdn_gets(&served, p)).sum();
            assert_eq!(attempts, paths.len(), "a 500 is not retried");
            assert_eq!(texture_requests(&m, "5xx"), paths.len() as u64);
            served.server.clear_faults();
            for (path, bytes) in &paths {
                assert_eq!(&read_until_ok(&m.tag_path(path)), bytes);
            }
            failed_after(
                format!(
                    "{} reads: EIO each, 1 request each, {:.2} s in all; then correct bytes",
                    paths.len(),
                    took.as_secs_f64()
                ),
                took / paths.len() as u32,
            )
        },
    );
}

#[test]
fn too_many_requests_with_retry_after() {
    row(
        11,
        "429 with Retry-After: 1",
        "waits as asked, then correct bytes",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &[]);
            let (path, bytes) = a_texture(&served, 7);
            fs::metadata(m.tag_path(&path)).unwrap();
            let status = Fault::Status {
                code: 429,
                retry_after: Some(1),
            };
            served
                .server
                .inject(FaultRule::new(&cdn(&path), status).times(1));
            let (result, took) = timed_read(&m.tag_path(&path));
            assert_eq!(result.unwrap(), bytes);
            assert_eq!(cdn_gets(&served, &path), 2);
            assert!(
                took >= Duration::from_secs(1),
                "Retry-After was not honoured: {took:?}"
            );
            observed(format!(
                "correct bytes after 2 attempts, {:.2} s",
                took.as_secs_f64()
            ))
        },
    );
}

#[test]
fn unavailable_twice() {
    row(
        12,
        "503 twice",
        "retried with backoff: correct bytes",
        ROW_LIMIT,
        || {
            let status = Fault::Status {
                code: 503,
                retry_after: None,
            };
            // Two retries, the mounts' backoff: 50 ms, then 100 ms.
            let (attempts, took) = recovers_from(status, 2, 2);
            assert!(took >= Duration::from_millis(150), "no backoff: {took:?}");
            observed(format!(
                "correct bytes after {attempts} attempts ({:.2} s, backoff 0.05 + 0.1 s)",
                took.as_secs_f64()
            ))
        },
    );
}

#[test]
fn redirect_loop() {
    row(
        13,
        "redirect loop",
        "EIO (too many redirects)",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &[]);
            let (path, _) = a_texture(&served, 8);
            fs::metadata(m.tag_path(&path)).unwrap();
            served
                .server
                .inject(FaultRule::new(&cdn(&path), Fault::RedirectLoop));
            let (result, took) = timed_read(&m.tag_path(&path));
            assert_eio(&result, &m);
            let hops = cdn_gets(&served, &path);
            assert!((2..=21).contains(&hops), "followed {hops} redirects");
            assert_eq!(texture_requests(&m, "error"), 1, "not retried");
            failed_after(
                format!(
                    "{} after following {hops} redirects, not retried",
                    errno(&result)
                ),
                took,
            )
        },
    );
}

#[test]
fn redirect_to_another_host() {
    row(
        14,
        "redirect to another host",
        "followed: correct bytes",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let cdn_server = DevServer::start(served.dir.path()).unwrap();
            let other_host = format!("http://localhost:{}", cdn_server.addr().port());
            served.server.set_options(ServerOptions {
                cdn_base: Some(other_host),
                ..ServerOptions::default()
            });
            let m = mount(&served, &[]);
            let (path, bytes) = a_texture(&served, 9);
            assert_eq!(read(&m.tag_path(&path)).unwrap(), bytes);
            assert_eq!(
                cdn_server.count("GET", &cdn(&path)),
                1,
                "fetched from the other host"
            );
            assert_eq!(cdn_gets(&served, &path), 0);
            observed("followed to http://localhost:PORT: correct bytes")
        },
    );
}

/// The CDN answers every download of `path` with `fault`: the read fails,
/// nothing is kept, and the next read after the fault downloads the real
/// bytes again.
fn refused(served: &Served, m: &Mount, path: &str, fault: Fault) -> Observed {
    fs::metadata(m.tag_path(path)).unwrap();
    // On every attempt: a retry must not get the real bytes by luck.
    served.server.inject(FaultRule::new(&cdn(path), fault));
    let (result, took) = timed_read(&m.tag_path(path));
    assert_eio(&result, m);
    let attempts = cdn_gets(served, path);
    served.server.clear_faults();
    assert_eq!(stored_objects(&m.cache), Vec::<String>::new(), "kept");
    assert_eq!(
        &read_until_ok(&m.tag_path(path)),
        &served.release.files[path]
    );
    assert_eq!(
        cdn_gets(served, path),
        attempts + 1,
        "the next read downloaded the file again"
    );
    failed_after(
        format!(
            "{} ({attempts} attempt(s)); nothing kept: the next read downloads the real bytes",
            errno(&result)
        ),
        took,
    )
}

#[test]
fn html_error_page_with_200() {
    row(
        15,
        "HTML error page with 200",
        "EIO; nothing cached",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &[]);
            let (path, _) = a_texture(&served, 10);
            let page = b"<html><body>Service error</body></html>".to_vec();
            refused(&served, &m, &path, Fault::Replace(page))
        },
    );
}

#[test]
fn bytes_differ_from_x_linked_etag() {
    row(
        16,
        "bytes differ from X-Linked-Etag",
        "EIO; nothing cached",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &[]);
            let (path, mut bytes) = a_texture(&served, 11);
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            refused(&served, &m, &path, Fault::Replace(bytes))
        },
    );
}

#[test]
fn bytes_differ_from_the_catalog_sha256() {
    row(
        17,
        "bytes differ from the catalog's sha256",
        "EIO; nothing cached",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &[]);
            // A baked-tier file replaced on the server by bytes of the same
            // size that the catalog does not vouch for; the server's own
            // X-Linked-Etag follows the new bytes, so only the catalog's
            // sha256 can refuse them.
            let path = "ambientcg/1k/Metal032/roughness.png";
            let original = &served.release.files[path];
            let on_disk = served.dir.path().join(TAG).join(path);
            let mut bytes = original.clone();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            fs::write(&on_disk, &bytes).unwrap();
            fs::metadata(m.tag_path(path)).unwrap();
            let (result, took) = timed_read(&m.tag_path(path));
            assert_eio(&result, &m);
            let attempts = cdn_gets(&served, path);
            assert!(attempts >= 1, "the bytes were downloaded");
            assert_eq!(stored_objects(&m.cache), Vec::<String>::new(), "kept");
            fs::write(&on_disk, original).unwrap();
            assert_eq!(&read_until_ok(&m.tag_path(path)), original);
            assert_eq!(cdn_gets(&served, path), attempts + 1);
            failed_after(
                format!(
                    "{} ({attempts} attempt(s)); nothing kept: once the server is fixed, the next read downloads it",
                    errno(&result)
                ),
                took,
            )
        },
    );
}

#[test]
fn declared_size_above_max_file_size() {
    row(
        18,
        "declared size above --max-file-size",
        "EIO before the body; nothing cached",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let m = mount(&served, &["--max-file-size", "100B"]);
            let (path, bytes) = a_texture(&served, 12);
            assert!(bytes.len() > 100);
            // Its catalog loaded first: only the texture counts below.
            let _ = fs::metadata(m.tag_path(&path));
            let before = bytes_downloaded(&m);
            let (result, took) = timed_read(&m.tag_path(&path));
            assert_eio(&result, &m);
            let body = bytes_downloaded(&m) - before;
            assert_eq!(body, 0, "bytes of the body were downloaded");
            assert_eq!(stored_objects(&m.cache), Vec::<String>::new(), "kept");
            failed_after(
                format!(
                    "{}; 0 bytes of the body downloaded, nothing cached",
                    errno(&result)
                ),
                took,
            )
        },
    );
}

#[test]
fn undeclared_size_above_max_file_size() {
    row(
        19,
        "undeclared size above --max-file-size",
        "EIO once past the cap; nothing cached",
        ROW_LIMIT,
        || {
            let served = Served::small();
            // Plain files (no X-Linked-Size) sent chunked: no length is declared.
            served.server.set_options(ServerOptions {
                lfs_redirects: false,
                ..ServerOptions::default()
            });
            let m = mount(&served, &["--max-file-size", "100B"]);
            let (path, bytes) = a_texture(&served, 13);
            fs::metadata(m.tag_path(&path)).unwrap();
            served
                .server
                .inject(FaultRule::new(&format!("{TAG}/{path}"), Fault::Chunked));
            let before = bytes_downloaded(&m);
            let (result, took) = timed_read(&m.tag_path(&path));
            assert_eio(&result, &m);
            let body = bytes_downloaded(&m) - before;
            assert!(body <= bytes.len() as u64, "{body} bytes downloaded");
            assert_eq!(stored_objects(&m.cache), Vec::<String>::new(), "kept");
            failed_after(
                format!(
                    "{}; {body} bytes downloaded, nothing cached",
                    errno(&result)
                ),
                took,
            )
        },
    );
}

fn verify_clean(cache: &Path) {
    doing("verifying the cache");
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

#[test]
fn sigkill_during_downloads_then_remount() {
    row(
        20,
        "SIGKILL during downloads, then remount",
        "no partial or wrong file; verify clean",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let textures = served.release.textures().count();
            let distinct: std::collections::HashSet<String> = served
                .release
                .textures()
                .map(|(_, b)| sha256_hex(b))
                .collect();
            assert_eq!(distinct.len(), textures, "every texture is its own object");
            let cache = tempfile::tempdir().unwrap();
            // The first downloads complete; every later one stops mid-body.
            let completed = 4;
            served.server.inject(
                FaultRule::new("cdn/", Fault::Delay(Duration::ZERO)).times(completed as u32),
            );
            served
                .server
                .inject(FaultRule::new("cdn/", Fault::StallBody));
            {
                let mut m = Mount::builder(&served.base_url())
                    .cache(cache.path())
                    .timeout(TIMEOUT)
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
                    wait_for(
                        "the first downloads stored and later ones cut off mid-body",
                        Duration::from_secs(20),
                        || {
                            stored_objects(cache.path()).len() == completed
                                && all_cdn_requests(&served.server) > completed
                        },
                    );
                    doing("killing the mount");
                    m.signal(libc::SIGKILL);
                });
                m.wait_exit(Duration::from_secs(10));
            }
            verify_clean(cache.path());
            // Requests the killed mount had sent are logged before the count.
            served.server.settle();
            served.server.clear_faults();
            served.server.clear_requests();
            let m = Mount::builder(&served.base_url())
                .cache(cache.path())
                .start();
            doing("reading everything after the remount");
            for (path, bytes) in served.release.textures() {
                assert_eq!(&read(&m.tag_path(path)).unwrap(), bytes, "{path}");
            }
            assert_eq!(
                served.texture_gets(),
                textures - completed,
                "the downloads stored before the kill were kept"
            );
            observed(format!(
                "killed with {completed} files stored and the rest mid-body; verify: 0 corrupt; \
                 the remount serves every file byte-exact, downloading only the {} missing",
                textures - completed
            ))
        },
    );
}

#[test]
fn mountpoint_left_dead_by_a_killed_mount() {
    row(
        21,
        "mountpoint left dead by a killed mount",
        "mount explains and recovers",
        ROW_LIMIT,
        || {
            let served = Served::small();
            let mut first = Mount::builder(&served.base_url()).start();
            first.signal(libc::SIGKILL);
            first.wait_exit(Duration::from_secs(10));
            // ENOTCONN; over io_uring, while the kernel is still ending the
            // connection (the rings are torn down after the process is
            // gone), the ECONNABORTED or ECANCELED of the ended request.
            let dead = fs::metadata(&first.path).unwrap_err().raw_os_error();
            assert!(
                matches!(
                    dead,
                    Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
                ),
                "{dead:?}"
            );
            doing("mounting over the dead mountpoint");
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
            assert_eq!(
                read(&first.tag_path("release-manifest.json")).unwrap(),
                served.release.files["release-manifest.json"]
            );
            observed("explained, detached lazily, mounted again")
        },
    );
}

#[test]
fn cache_on_a_full_filesystem() {
    row(
        22,
        "cache on a full filesystem",
        "correct bytes, uncached once it is full; index consistent",
        ROW_LIMIT,
        || {
            let mut spec = ReleaseSpec::small(TAG);
            spec.base_px = 128;
            let served = Served::new(Release::generate(&spec));
            let total: usize = served.release.textures().map(|(_, b)| b.len()).sum();
            let disk = common::Tmpfs::new("128k");
            assert!(total > 3 * 128 * 1024, "the release must not fit: {total}");
            let cache = disk.path().join("cache");
            let mut read_back = 0;
            let uncached = {
                let m = Mount::builder(&served.base_url()).cache(&cache).start();
                for (path, bytes) in served.release.textures() {
                    let read = timed_read(&m.tag_path(path)).0;
                    assert_eq!(read.as_ref().ok(), Some(bytes), "{path}: {read:?}");
                    read_back += 1;
                }
                let stats = m.stats();
                stats["cache"]["uncached_reads"].as_u64().unwrap()
            };
            let kept = common::stored_objects(&cache).len();
            assert!(kept > 0 && uncached > 0, "kept {kept}, uncached {uncached}");
            verify_clean(&cache);
            observed(format!(
                "{read_back} reads byte-exact: {kept} kept, {uncached} served uncached from \
                 memory; verify: 0 corrupt"
            ))
        },
    );
}

/// Starts slow downloads, then ends the mount with `stop` while they are
/// in flight; every reader must return with the right bytes or an error,
/// and the process exit.
fn ends_while_reading(stop: impl FnOnce(&mut Mount)) -> Observed {
    let served = Served::small();
    let mut m = mount(&served, &[]);
    let files: Vec<(PathBuf, String, Vec<u8>)> = served
        .release
        .textures()
        .take(4)
        .map(|(p, b)| (m.tag_path(p), p.clone(), b.clone()))
        .collect();
    for (path, _, _) in &files {
        fs::metadata(path).unwrap();
    }
    served.server.inject(FaultRule::new(
        "cdn/",
        Fault::Delay(Duration::from_millis(1500)),
    ));
    let started = Instant::now();
    let outcomes: Vec<String> = std::thread::scope(|scope| {
        let readers: Vec<_> = files
            .iter()
            .map(|(path, _, bytes)| {
                scope.spawn(move || {
                    let result = read(path);
                    if let Ok(read) = &result {
                        assert_eq!(read, bytes, "{}", path.display());
                    }
                    errno(&result)
                })
            })
            .collect();
        wait_for("every download in flight", Duration::from_secs(20), || {
            files.iter().all(|(_, p, _)| cdn_gets(&served, p) >= 1)
        });
        doing("ending the mount while the reads are in flight");
        stop(&mut m);
        doing("waiting for the readers");
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    doing("waiting for the process to exit");
    let exited = m.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    assert_eq!(exited, Some(true), "{}", m.log());
    assert!(!is_mounted(&m.path));
    observed(format!(
        "exited cleanly after {:.1} s; readers got: {}",
        took.as_secs_f64(),
        outcomes.join(", ")
    ))
}

#[test]
fn sigterm_while_reads_are_in_flight() {
    row(
        23,
        "SIGTERM while reads are in flight",
        "clean exit within the grace; no hung reader",
        ROW_LIMIT,
        || ends_while_reading(|m| m.signal(libc::SIGTERM)),
    );
}

#[test]
fn lazy_unmount_while_reads_are_in_flight() {
    row(
        24,
        "unmount --lazy while reads are in flight",
        "clean exit; no hung reader",
        ROW_LIMIT,
        || {
            ends_while_reading(|m| {
                let status = Command::new(BIN)
                    .arg("unmount")
                    .arg("--lazy")
                    .arg(&m.path)
                    .status()
                    .unwrap();
                assert!(status.success());
            })
        },
    );
}

#[test]
fn never_answers_at_the_first_open_of_a_cached_tag() {
    row(
        26,
        "accepts connections, never answers, at the first open of a cached tag (`--timeout 30`)",
        "cached files served once the revalidation is given up (10 s at most); then at once",
        ROW_LIMIT,
        hung_at_revalidation,
    );
}

/// The session's first open waits for a revalidation that the server
/// never answers: it is given up after `CHECK_PATIENCE`, whatever
/// `--timeout`, with no retry, and the cached copy is served.
fn hung_at_revalidation() -> Observed {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let (first, first_bytes) = a_texture(&served, 2);
    let (second, second_bytes) = a_texture(&served, 3);
    warm(&served.base_url(), cache.path(), &[&first, &second]);
    served.server.clear_requests();
    served.server.inject(FaultRule::new("", Fault::Hang));
    doing("mounting over the cache");
    let m = Mount::builder(&served.base_url())
        .cache(cache.path())
        .timeout(30)
        .start();
    let (result, took) = timed_read(&m.tag_path(&first));
    assert_eq!(result.unwrap(), first_bytes);
    assert!(
        took < Duration::from_secs(20),
        "the first open waited {took:?}"
    );
    let (result, then) = timed_read(&m.tag_path(&second));
    assert_eq!(result.unwrap(), second_bytes);
    assert!(
        then < Duration::from_secs(1),
        "the next open waited {then:?}"
    );
    let manifest_gets = served
        .server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("release-manifest.json"))
        .count();
    assert_eq!(manifest_gets, 1, "one revalidation, not retried");
    assert_eq!(m.stats()["tags"][TAG]["revalidation"], "offline");
    observed(format!(
        "the first open served the cached file after {:.1} s (1 manifest request), the next one after {} ms; the tag is \"offline\" in stats.json",
        took.as_secs_f64(),
        then.as_millis()
    ))
}

#[test]
fn readers_on_two_tags_with_faults_injected() {
    row(
        25,
        "32 readers, 2 tags, faults injected",
        "no deadlock; every read exact; memory bounded",
        Duration::from_secs(120),
        stress,
    );
}

fn stress() -> Observed {
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
    let m = mount(
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
    doing("caching half of the files");
    for (path, _) in files.iter().step_by(2) {
        read(path).unwrap();
    }
    let (good, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(8);
    doing("reading from 32 threads while faults are injected");
    std::thread::scope(|scope| {
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
            for fault in faults.iter().cycle() {
                if Instant::now() >= deadline {
                    break;
                }
                let seen = all_cdn_requests(&served.server);
                served.server.clear_faults();
                served
                    .server
                    .inject(FaultRule::new("cdn/", fault.clone()).times(3));
                // The next fault once this one has had its three requests.
                while all_cdn_requests(&served.server) < seen + 3 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            served.server.clear_faults();
        });
        for t in 0..32 {
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
            });
        }
    });
    let peak = peak_rss(m.pid().unwrap()).unwrap();
    assert!(peak < 256 << 20, "the daemon peaked at {peak} bytes");
    let good = good.into_inner();
    assert!(good > 100, "only {good} successful reads");
    let downloads = all_cdn_requests(&served.server);
    assert!(
        downloads > 100,
        "only {downloads} downloads: the faults had little to hit"
    );
    observed(format!(
        "{good} reads byte-exact, {} EIO, {downloads} downloads, no deadlock; daemon peak RSS {} MiB",
        failed.into_inner(),
        peak >> 20
    ))
}

/// Not a row: the watchdog itself. A read that would hang for a minute
/// fails its test after the limit, and leaves nothing mounted.
#[test]
fn a_hung_row_fails_at_its_limit_and_leaves_no_mount() {
    let mountpoint = std::sync::Arc::new(parking_lot::Mutex::new(None));
    let seen = mountpoint.clone();
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        watchdog::bounded(Duration::from_secs(3), move || {
            let served = Served::small();
            let m = Mount::builder(&served.base_url()).timeout(60).start();
            *seen.lock() = Some(m.path.clone());
            let (path, _) = a_texture(&served, 2);
            served.server.inject(FaultRule::new("cdn/", Fault::Hang));
            timed_read(&m.tag_path(&path)).0.is_ok()
        })
    }));
    let why = panic_message(&*outcome.expect_err("a hung body must fail"));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(why.contains("while reading"), "{why}");
    let mountpoint = mountpoint.lock().clone().unwrap();
    assert!(!is_mounted(&mountpoint));
}
