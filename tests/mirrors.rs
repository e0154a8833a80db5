//! Real mounts of mirrors: a mirror in the Hub's layout is not the Hub, so
//! it is read at full speed and its missing API is asked once; any server
//! that asks to slow down (a 429's `Retry-After`, an exhausted `RateLimit`
//! quota) is waited for, and a wait longer than allowed fails at once
//! instead of hanging.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Mount, Served, TAG, read};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::{Fault, FaultRule, ServerOptions};

const REPO: &str = "gerchowl/mat-vis";
const READERS: usize = 16;

/// A release with `materials` materials in `ambientcg` (four textures each
/// in its `512` tier, whose sizes no catalog gives: each needs a lookup).
fn served(materials: usize) -> Served {
    let mut spec = ReleaseSpec::small(TAG);
    spec.sources[0].materials = (0..materials).map(|i| format!("Mat{i:03}")).collect();
    Served::new(Release::generate(&spec))
}

fn tier_textures(served: &Served) -> Vec<(String, Vec<u8>)> {
    served
        .release
        .textures()
        .filter(|(path, _)| path.starts_with("ambientcg/512/"))
        .map(|(path, bytes)| (path.to_string(), bytes.clone()))
        .collect()
}

/// Reads every file with `READERS` threads, checking the bytes; returns
/// how long that took.
fn read_all(mount: &Mount, files: &[(String, Vec<u8>)]) -> Duration {
    let paths: Vec<(PathBuf, &Vec<u8>)> = files
        .iter()
        .map(|(path, bytes)| (mount.tag_path(path), bytes))
        .collect();
    let began = Instant::now();
    std::thread::scope(|scope| {
        for chunk in paths.chunks(paths.len().div_ceil(READERS)) {
            scope.spawn(move || {
                for (path, bytes) in chunk {
                    assert_eq!(&read(path).unwrap(), *bytes, "{}", path.display());
                }
            });
        }
    });
    began.elapsed()
}

fn api_requests(served: &Served) -> usize {
    served
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("api/"))
        .count()
}

#[test]
fn a_mirror_in_the_hubs_layout_reads_as_fast_as_a_plain_one_and_is_asked_for_its_api_once() {
    // 480 files: a HEAD and a GET each, well past the burst the Hub's
    // budget allows (750 requests, then one every 0.13 s), so pacing the
    // mirror like the Hub would take 20 s or more.
    let served = served(120);
    served.server.set_options(ServerOptions {
        hub_api: false,
        ..ServerOptions::default()
    });
    let files = tier_textures(&served);
    assert_eq!(files.len(), 480);
    let plain = served.base_url();
    let hub_layout = served.server.hub_base_url(REPO);

    // Interleaved rounds, each on a new mount with an empty cache; the best
    // of each base is compared, so that load from other processes on the
    // shared machine (single runs vary by 1.8x under it) does not decide
    // the ratio: pacing costs 20x or more, the API probe one request.
    let mut best = [Duration::MAX; 2];
    for _round in 0..5 {
        for (i, base) in [&plain, &hub_layout].into_iter().enumerate() {
            served.server.clear_requests();
            let mount = Mount::builder(base).start();
            let took = read_all(&mount, &files);
            eprintln!("{base}: {took:?}");
            best[i] = best[i].min(took);
            let api = api_requests(&served);
            assert!(api <= 1, "{base}: the API was asked {api} times");
        }
    }
    let ratio = best[1].as_secs_f64() / best[0].as_secs_f64();
    eprintln!(
        "plain {:?}, Hub layout {:?}: ratio {ratio:.2}",
        best[0], best[1]
    );
    assert!(
        ratio <= 1.5,
        "the Hub-layout mirror took {:?}, the plain one {:?} (ratio {ratio:.2})",
        best[1],
        best[0]
    );
}

#[test]
fn concurrent_first_lookups_ask_a_server_without_the_api_once() {
    let served = served(40);
    served.server.set_options(ServerOptions {
        hub_api: false,
        ..ServerOptions::default()
    });
    let files = tier_textures(&served);
    let mount = Mount::builder(&served.server.hub_base_url(REPO)).start();
    // No listing of the root first: the sizes' lookups are the first API
    // users, 16 at a time.
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| mount.tag_path(p)).collect();
    std::thread::scope(|scope| {
        for chunk in paths.chunks(paths.len().div_ceil(READERS)) {
            scope.spawn(move || {
                for path in chunk {
                    assert!(std::fs::metadata(path).unwrap().len() > 0);
                }
            });
        }
    });
    let api: Vec<String> = served
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("api/"))
        .map(|r| format!("{} {} {}", r.method, r.status, r.path))
        .collect();
    assert_eq!(api, ["GET 404 api/refs"]);
    std::fs::read_dir(&mount.path).unwrap().count();
    assert_eq!(api_requests(&served), 1, "the root listing asked nothing");
}

#[test]
fn an_exhausted_ratelimit_quota_pauses_that_host_until_its_reset() {
    let served = served(3);
    let files = tier_textures(&served);
    let (a, b, c) = (&files[0], &files[1], &files[2]);
    let mount = Mount::builder(&served.base_url())
        .arg("--retry-max-wait")
        .arg("5")
        .start();
    // A's size answer says the quota is used up for 2 s (the Hub's form).
    served.server.inject(
        FaultRule::new(
            &a.0,
            Fault::Headers(vec![("RateLimit".into(), "\"resolvers\";r=0;t=2".into())]),
        )
        .times(1),
    );
    let began = Instant::now();
    assert_eq!(&read(&mount.tag_path(&a.0)).unwrap(), &a.1);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "the download after the exhausted quota waited only {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The reset has passed: the next file goes at once.
    let began = Instant::now();
    assert_eq!(&read(&mount.tag_path(&b.0)).unwrap(), &b.1);
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );

    // A reset beyond --retry-max-wait: requests fail at once, none is
    // sent, for as long as that wait.
    drop(mount);
    let mount = Mount::builder(&served.base_url())
        .arg("--retry-max-wait")
        .arg("3")
        .start();
    assert_eq!(
        &read(&mount.tag_path(&a.0)).unwrap(),
        &a.1,
        "before the pause"
    );
    served.server.inject(
        FaultRule::new(
            &c.0,
            Fault::Headers(vec![(
                "RateLimit".into(),
                "limit=100, remaining=0, reset=30".into(),
            )]),
        )
        .times(1),
    );
    let size = std::fs::metadata(mount.tag_path(&c.0)).unwrap().len();
    assert_eq!(size, c.1.len() as u64);
    served.server.clear_requests();
    let began = Instant::now();
    let error = read(&mount.tag_path(&c.0)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        served.server.requests().len(),
        0,
        "nothing sent during the pause"
    );
    assert_eq!(
        &read(&mount.tag_path(&a.0)).unwrap(),
        &a.1,
        "cached reads go on"
    );
}

#[test]
fn a_429_with_retry_after_on_a_mirror_holds_back_its_other_requests() {
    let served = served(3);
    let files = tier_textures(&served);
    let (a, b) = (files[0].clone(), files[1].clone());
    let mount = Mount::builder(&served.base_url()).start();
    served.server.inject(
        FaultRule::new(
            &a.0,
            Fault::Status {
                code: 429,
                retry_after: Some(2),
            },
        )
        .times(1),
    );
    let first = {
        let path = mount.tag_path(&a.0);
        std::thread::spawn(move || {
            let began = Instant::now();
            (read(&path).unwrap(), began.elapsed())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served.server.requests().iter().any(|r| r.status == 429) {
        assert!(Instant::now() < deadline, "no 429 was sent");
        std::thread::sleep(Duration::from_millis(10));
    }
    let asked_at = Instant::now();
    assert_eq!(&read(&mount.tag_path(&b.0)).unwrap(), &b.1);
    let waited = asked_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "another file of the same host went after {waited:?}"
    );
    let (bytes, took) = first.join().unwrap();
    assert_eq!(bytes, a.1);
    assert!(took >= Duration::from_millis(1900), "{took:?}");
}

#[test]
fn a_429_asking_for_a_day_holds_the_host_back_for_the_longest_wait_only() {
    let served = served(3);
    let files = tier_textures(&served);
    let (a, b) = (files[0].clone(), files[1].clone());
    let mount = Mount::builder(&served.base_url())
        .arg("--retry-max-wait")
        .arg("1")
        .start();
    served.server.inject(
        FaultRule::new(
            &a.0,
            Fault::Status {
                code: 429,
                retry_after: Some(100_000),
            },
        )
        .times(1),
    );
    let began = Instant::now();
    let error = read(&mount.tag_path(&a.0)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert!(served.server.requests().iter().any(|r| r.status == 429));
    // The server has recovered; once --retry-max-wait has passed, the host
    // is asked again (reads meanwhile may fail at once).
    let deadline = began + Duration::from_secs(10);
    let read_b = loop {
        match read(&mount.tag_path(&b.0)) {
            Ok(bytes) => break bytes,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                assert!(
                    Instant::now() < deadline,
                    "the host is still held back after {:?}",
                    began.elapsed()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(read_b, b.1);
    assert_eq!(&read(&mount.tag_path(&a.0)).unwrap(), &a.1);
}

/// A plain mirror: no redirect names a size, no API lists one.
fn plain_mirror(ignore_range: bool) -> ServerOptions {
    ServerOptions {
        lfs_redirects: false,
        commits: false,
        hub_api: false,
        ignore_range,
        ..ServerOptions::default()
    }
}

/// Requests with `method` for the textures of the `ambientcg/512` tier.
fn tier_requests(served: &Served, method: &str) -> usize {
    let tier = format!("{TAG}/ambientcg/512/");
    served
        .server
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path.starts_with(&tier))
        .filter(|r| r.path.ends_with(".png") || r.path.ends_with(".ktx2"))
        .count()
}

fn bytes_downloaded(mount: &Mount) -> u64 {
    mount.stats()["bytes"]["downloaded"].as_u64().unwrap()
}

#[test]
fn on_a_plain_mirror_a_small_files_size_and_bytes_come_in_one_request() {
    for ignore_range in [false, true] {
        let served = served(4);
        served.server.set_options(plain_mirror(ignore_range));
        let files = tier_textures(&served);
        assert!(files.iter().all(|(_, bytes)| bytes.len() < 64 * 1024));
        let mount = Mount::builder(&served.base_url()).start();
        for (path, bytes) in &files {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
        // The tier's first file: a HEAD for its size, a GET for its bytes;
        // every other file: one GET of its first 64 KiB, which is all of it.
        assert_eq!(
            tier_requests(&served, "HEAD"),
            1,
            "ignore_range {ignore_range}"
        );
        assert_eq!(
            tier_requests(&served, "GET"),
            files.len(),
            "ignore_range {ignore_range}"
        );
        assert_eq!(
            mount.stats()["cache"]["misses"].as_u64(),
            Some(files.len() as u64)
        );
    }
}

#[test]
fn on_a_plain_mirror_a_stat_of_a_large_file_keeps_none_of_it_and_its_tier_goes_back_to_heads() {
    for ignore_range in [false, true] {
        let mut served = served(4);
        let files = tier_textures(&served);
        let (small, large) = (&files[0].0, [&files[1].0, &files[2].0]);
        let mut release = served.release.clone();
        for (seed, path) in large.iter().enumerate() {
            let magic = if path.ends_with(".ktx2") {
                common::KTX2_MAGIC
            } else {
                common::PNG_MAGIC
            };
            let bytes = common::texture_like(magic, 300_000, seed as u8);
            release.files.insert(path.to_string(), bytes);
        }
        served.republish(release);
        served.server.set_options(plain_mirror(ignore_range));
        let mount = Mount::builder(&served.base_url()).start();
        assert_eq!(read(&mount.tag_path(small)).unwrap(), files[0].1);
        let before = bytes_downloaded(&mount);
        for path in large {
            let size = std::fs::metadata(mount.tag_path(path)).unwrap().len();
            assert_eq!(size, 300_000, "{path}, ignore_range {ignore_range}");
        }
        assert_eq!(
            bytes_downloaded(&mount),
            before,
            "a stat keeps no byte of a large file (ignore_range {ignore_range})"
        );
        // The first large file was asked for its first bytes; the tier's
        // sizes come from HEADs after it.
        assert_eq!(served.count("GET", large[0]), 1);
        assert_eq!(served.count("HEAD", large[0]), 0);
        assert_eq!(served.count("GET", large[1]), 0);
        assert_eq!(served.count("HEAD", large[1]), 1);
        for path in large {
            assert_eq!(
                read(&mount.tag_path(path)).unwrap(),
                served.release.files[path.as_str()],
                "{path}"
            );
        }
    }
}
