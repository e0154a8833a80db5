//! Real mounts against a server that publishes something wrong: bad
//! documents, incomplete tiers, missing tags; and offline mode. (Network and
//! server faults are in the fault matrix.)

mod common;

use std::fs;

use common::{Mount, Served, TAG, background_mount, read, warm};
use matvisfs_sample::{Release, ReleaseSpec};

#[test]
fn offline_mode_sends_no_request_at_all() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let cached = "ambientcg/1k/Wood051/color.png";
    warm(&served.base_url(), cache.path(), &[cached]);
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

/// (A server that is down at mount time is a row of the fault matrix.)
#[test]
fn a_pinned_tag_missing_on_the_server_fails_the_mount_naming_it() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let output = background_mount(&mountpoint, &served.base_url(), &dir.path().join("cache"))
        .args(["--tag", "v2030.01.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("v2030.01.1")
            && stderr.contains("/resolve/v2030.01.1/release-manifest.json"),
        "{stderr}"
    );
    assert!(stderr.contains("404"), "{stderr}");
    assert!(!common::is_mounted(&mountpoint));
}

#[test]
fn an_incomplete_tier_is_refused_without_a_download() {
    let mut spec = ReleaseSpec::small(TAG);
    spec.incomplete_tiers = vec!["ambientcg/ktx2-512".into()];
    let served = Served::new(Release::generate(&spec));
    let mount = Mount::builder(&served.base_url()).start();
    let path = mount.tag_path("ambientcg/ktx2-512/Rock064/color.ktx2");
    assert!(fs::metadata(&path).is_ok(), "listed and sized");
    assert_eq!(read(&path).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(served.texture_gets(), 0);
    let stats = mount.stats();
    assert_eq!(
        stats["requests"]["tier_check"],
        serde_json::json!({"404": 1}),
        "{stats}"
    );
    // The refusal is the tier's: the same material in a complete tier reads.
    let complete = "ambientcg/512/Rock064/color.png";
    assert_eq!(
        read(&mount.tag_path(complete)).unwrap(),
        served.release.files[complete]
    );
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
    // Its one good channel, and the documents made for it.
    assert_eq!(odd, ["Odd.mtlx", "Odd.usda", "color.png"]);
    // A catalog that is not JSON: that source fails, the rest works.
    // Directories are opened without a round trip, so the error may surface
    // at opendir or at the first getdents.
    let listing = fs::read_dir(mount.tag_path("gpuopen/1k"))
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
    assert_eq!(listing.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(read(&mount.tag_path("ambientcg/1k/Rock064/color.png")).is_ok());
    // Nothing was written outside the cache directory.
    assert!(!mount.cache.join("../etc").exists());
}

/// `[[[...]]]`, `depth` deep: valid JSON that Python's `json` reads (up to
/// its own limit), which serde_json does not read into a tree past 128.
fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// JSON text `doc` (an array or an object) with `entries` added at its end.
fn with_entries(doc: &[u8], entries: &[String]) -> Vec<u8> {
    let text = String::from_utf8(doc.to_vec()).unwrap();
    let text = text.trim_end();
    let (body, close) = text.split_at(text.len() - 1);
    format!("{body}, {}{close}", entries.join(", ")).into_bytes()
}

#[test]
fn an_entry_nested_too_deep_costs_that_entry_only() {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let catalog = with_entries(
        &release.files["ambientcg.json"],
        &[
            format!(
                r#"{{"id": "Deep130", "maps": ["color"], "available_tiers": ["1k"], "x": {}}}"#,
                nested(130)
            ),
            nested(1_000_000),
        ],
    );
    release.files.insert("ambientcg.json".into(), catalog);
    let manifest = with_entries(
        &release.files["release-manifest.json"],
        &[format!(r#""unknown_field": {}"#, nested(130))],
    );
    release
        .files
        .insert("release-manifest.json".into(), manifest);
    let served = Served::new(release);
    let mount = Mount::builder(&served.base_url()).start();
    let mut names: Vec<String> = fs::read_dir(mount.tag_path("ambientcg/1k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Metal032", "Rock064", "Wood051"], "{}", mount.log());
    for (path, bytes) in served.release.textures() {
        if path.starts_with("ambientcg/") {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
    }
    // The server's catalog is still served as it is.
    assert_eq!(
        read(&mount.tag_path("ambientcg.json")).unwrap(),
        served.release.files["ambientcg.json"]
    );
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
