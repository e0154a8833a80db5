//! Real mounts against a server that fails: down, flaky, wrong, or serving
//! bad documents.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{Mount, Served, TAG, background_mount, read, walk};
use matvisfs::devserver::{Fault, FaultRule};
use matvisfs::fixture::{Release, ReleaseSpec};

/// With `--retries 3`, `--backoff-base 0.05` and a refused connection the
/// worst case is a few hundred milliseconds; this bound only says "no hang".
const FAIL_FAST: Duration = Duration::from_secs(5);

#[test]
fn with_the_server_down_cached_files_read_and_uncached_fail_fast() {
    let mut served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let cached = "ambientcg/512/Rock064/color.png";
    let sized = "ambientcg/512/Rock064/normal.png";
    let unknown = "ambientcg/512/Metal032/ao.png";
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        read(&mount.tag_path(cached)).unwrap();
        fs::metadata(mount.tag_path(sized)).unwrap();
    }
    served.server.stop();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    let started = Instant::now();
    assert_eq!(
        read(&mount.tag_path(cached)).unwrap(),
        served.release.files[cached]
    );
    // Listing works from the cached manifest and catalog (gpuopen's catalog
    // was never fetched, so only ambientcg can be listed).
    assert!(walk(&mount.tag_path("ambientcg")).contains(&"512/Rock064/".to_string()));
    for path in [sized, unknown] {
        let began = Instant::now();
        let err = read(&mount.tag_path(path)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{path}: {err}");
        assert!(
            began.elapsed() < FAIL_FAST,
            "{path} took {:?}",
            began.elapsed()
        );
    }
    assert!(started.elapsed() < 3 * FAIL_FAST);
    assert!(mount.log().contains("cannot revalidate"), "{}", mount.log());

    // The server comes back: the same mount recovers without a remount.
    served.server.restart().unwrap();
    assert_eq!(
        read(&mount.tag_path(unknown)).unwrap(),
        served.release.files[unknown]
    );
}

#[test]
fn offline_mode_sends_no_request_at_all() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let cached = "ambientcg/1k/Wood051/color.png";
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        read(&mount.tag_path(cached)).unwrap();
    }
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--offline")
        .start();
    assert_eq!(
        read(&mount.tag_path(cached)).unwrap(),
        served.release.files[cached]
    );
    let err = read(&mount.tag_path("ambientcg/1k/Wood051/ao.png")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        served.server.requests().is_empty(),
        "{:#?}",
        served.server.requests()
    );
}

#[test]
fn a_pinned_tag_that_cannot_be_loaded_fails_the_mount_naming_it() {
    let mut served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let base_url = served.base_url();
    let mount = |tag: &str| {
        background_mount(&mountpoint, &base_url, &dir.path().join("cache"))
            .args(["--tag", tag])
            .output()
            .unwrap()
    };
    let output = mount("v2030.01.1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("v2030.01.1")
            && stderr.contains("/resolve/v2030.01.1/release-manifest.json"),
        "{stderr}"
    );

    served.server.stop();
    let output = mount(TAG);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(TAG) && stderr.contains("cannot connect"),
        "{stderr}"
    );
    assert!(!common::is_mounted(&mountpoint));
}

#[test]
fn transient_errors_are_retried_honouring_retry_after() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let path = "ambientcg/1k/Metal032/color.png";
    served.server.inject(
        FaultRule::new(
            path,
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        )
        .times(2),
    );
    assert_eq!(
        read(&mount.tag_path(path)).unwrap(),
        served.release.files[path]
    );
    let other = "ambientcg/1k/Metal032/normal.png";
    fs::metadata(mount.tag_path(other)).unwrap();
    served.server.inject(
        FaultRule::new(
            other,
            Fault::Status {
                code: 429,
                retry_after: Some(1),
            },
        )
        .times(1),
    );
    let began = Instant::now();
    assert_eq!(
        read(&mount.tag_path(other)).unwrap(),
        served.release.files[other]
    );
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    // A 404 or a 500 is not retried.
    let missing = "ambientcg/1k/Metal032/ao.png";
    fs::metadata(mount.tag_path(missing)).unwrap();
    served.server.inject(FaultRule::new(
        missing,
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    ));
    assert_eq!(
        read(&mount.tag_path(missing)).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(served.server.count("GET", missing), 1, "{}", mount.log());
}

#[test]
fn broken_bodies_and_wrong_bytes_are_never_served() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let html = "gpuopen/1k/0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01/color.png";
    fs::metadata(mount.tag_path(html)).unwrap();
    served.server.inject(FaultRule::new(
        &format!("cdn/{TAG}/{html}"),
        Fault::Replace(b"<html>error</html>".to_vec()),
    ));
    assert_eq!(
        read(&mount.tag_path(html)).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    served.server.clear_faults();
    assert_eq!(
        read(&mount.tag_path(html)).unwrap(),
        served.release.files[html],
        "nothing bad was cached"
    );

    let cut = "gpuopen/1k/0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01/normal.png";
    for fault in [Fault::ShortBody, Fault::ResetBody] {
        served
            .server
            .inject(FaultRule::new(&format!("cdn/{TAG}/{cut}"), fault).times(1));
    }
    // Two broken attempts, then a good one, all within one read.
    assert_eq!(
        read(&mount.tag_path(cut)).unwrap(),
        served.release.files[cut]
    );
}

#[test]
fn an_incomplete_tier_is_refused_with_a_log_line() {
    let mut spec = ReleaseSpec::small(TAG);
    spec.incomplete_tiers = vec!["ambientcg/ktx2-512".into()];
    let served = Served::new(Release::generate(&spec));
    let mount = Mount::builder(&served.base_url()).start();
    let path = mount.tag_path("ambientcg/ktx2-512/Rock064/color.ktx2");
    assert!(fs::metadata(&path).is_ok(), "listed and sized");
    assert_eq!(read(&path).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(
        mount.log().contains("ambientcg/ktx2-512") && mount.log().contains("not marked complete")
    );
    assert_eq!(served.texture_gets(), 0);
}

#[test]
fn bad_catalogs_are_survived() {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let mut catalog = release.json("ambientcg.json");
    let entries = catalog.as_array_mut().unwrap();
    for id in [
        "../../../etc",
        "a/b",
        "..",
        ".",
        "",
        "nul\u{0}",
        "\u{1b}[2J",
    ] {
        entries.push(serde_json::json!({"id": id, "maps": ["color"], "available_tiers": ["1k"]}));
    }
    entries.push(
        serde_json::json!({"id": "x".repeat(300), "maps": ["color"], "available_tiers": ["1k"]}),
    );
    entries.push(serde_json::json!({"id": "Odd", "maps": ["../x", "color", 7], "available_tiers": ["1k", "/"], "new_field": {}}));
    release.set_json("ambientcg.json", &catalog);
    release
        .files
        .insert("gpuopen.json".into(), b"{ this is not json".to_vec());
    let served = Served::new(release);
    let mount = Mount::builder(&served.base_url()).start();
    let names: Vec<String> = fs::read_dir(mount.tag_path("ambientcg/1k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["Metal032", "Odd", "Rock064", "Wood051"]);
    let odd: Vec<_> = fs::read_dir(mount.tag_path("ambientcg/1k/Odd"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(odd, ["color.png"]);
    // A catalog that is not JSON: that source fails, the rest works.
    assert_eq!(
        fs::read_dir(mount.tag_path("gpuopen/1k"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    assert!(read(&mount.tag_path("ambientcg/1k/Rock064/color.png")).is_ok());
    assert!(mount.log().contains("skipped"), "{}", mount.log());
    // Nothing was written outside the cache directory.
    assert!(!mount.cache.join("../etc").exists());
}

#[test]
fn a_corrupt_manifest_for_a_new_tag_fails_the_mount_clearly() {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    release.files.insert(
        "release-manifest.json".into(),
        br#"{"schema_version": 9, "sources": {}}"#.to_vec(),
    );
    let served = Served::new(release);
    let err = Mount::builder(&served.base_url())
        .try_start()
        .err()
        .expect("must not mount");
    assert!(
        err.contains("schema_version 9") && err.contains(TAG),
        "{err}"
    );
}

#[test]
fn a_server_that_never_answers_costs_a_bounded_wait() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url())
        .timeout(1)
        .arg("--retries")
        .arg("1")
        .start();
    let path = "ambientcg/1k/Rock064/roughness.png";
    fs::metadata(mount.tag_path(path)).unwrap();
    served
        .server
        .inject(FaultRule::new(&format!("cdn/{TAG}/{path}"), Fault::Hang));
    let began = Instant::now();
    assert_eq!(
        read(&mount.tag_path(path)).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    // Two attempts of at most one second each, plus a short backoff.
    assert!(began.elapsed() < FAIL_FAST, "took {:?}", began.elapsed());
    // Other files are not blocked meanwhile.
    assert!(read(&mount.tag_path("ambientcg/1k/Rock064/color.png")).is_ok());
}
