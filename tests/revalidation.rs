//! Revalidation through real mounts: one manifest request per tag per
//! session, 304 on an unchanged tag, and a changed tag seen and announced.

mod common;

use std::fs;

use common::{Mount, Served, TAG, read};
use matvisfs_sample::images;
use matvisfs_testkit::devserver::{LoggedRequest, ServerOptions, Validators};

const MANIFEST: &str = "release-manifest.json";

fn open_everything_from_threads(mount: &Mount, served: &Served, threads: usize) {
    let paths: Vec<_> = served
        .release
        .textures()
        .map(|(p, _)| mount.tag_path(p))
        .collect();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let paths = &paths;
            scope.spawn(move || {
                for path in paths.iter().skip(t % paths.len()) {
                    drop(fs::File::open(path).unwrap());
                }
            });
        }
    });
}

#[test]
fn many_opens_from_many_threads_make_one_manifest_request_per_session() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        open_everything_from_threads(&mount, &served, 16);
        // Not cached before: the fetch at mount was this session's check.
        assert_eq!(served.count("GET", MANIFEST), 1);
    }
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert_eq!(
        served.count("GET", MANIFEST),
        0,
        "a cached tag mounts without the network"
    );
    open_everything_from_threads(&mount, &served, 16);
    let manifest: Vec<_> = served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path == format!("{TAG}/{MANIFEST}"))
        .collect();
    assert_eq!(manifest.len(), 1, "{manifest:#?}");
    assert!(manifest[0].conditional);
    assert_eq!(manifest[0].status, 304);
    let stats = mount.stats();
    assert_eq!(stats["tags"][TAG]["revalidation"], "unchanged", "{stats}");
    assert_eq!(stats["requests"]["manifest"], serde_json::json!({"304": 1}));
}

#[test]
fn a_mutated_tag_is_seen_by_the_next_session_and_stale_bytes_are_not_served() {
    let mut served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let changed = "ambientcg/1k/Rock064/color.png";
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        assert_eq!(
            read(&mount.tag_path(changed)).unwrap(),
            served.release.files[changed]
        );
    }
    // Republished under the same tag: a texture (bigger now), its catalog
    // hash and the manifest change.
    let mut release = served.release.clone();
    let replacement = images::png("republished", "color", 24);
    assert_ne!(replacement.len(), release.files[changed].len());
    release.replace_texture(changed, replacement.clone());
    let mut manifest = release.json(MANIFEST);
    manifest["sources"]["ambientcg"]["tiers"]["2k"] = serde_json::json!({"complete": true});
    release.set_json(MANIFEST, &manifest);
    served.republish(release);

    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    // The kernel learns the old size first (cached records), then the open
    // finds the change: the read must still return every new byte.
    let old_size = fs::metadata(mount.tag_path(changed)).unwrap().len();
    assert_ne!(old_size, replacement.len() as u64);
    assert_eq!(read(&mount.tag_path(changed)).unwrap(), replacement);
    assert_eq!(
        fs::metadata(mount.tag_path(changed)).unwrap().len(),
        replacement.len() as u64
    );
    assert!(
        mount.tag_path("ambientcg/2k").is_dir(),
        "the new manifest is in use"
    );
    assert_eq!(
        read(&mount.tag_path(MANIFEST)).unwrap(),
        served.release.files[MANIFEST]
    );
    let stats = mount.stats();
    assert_eq!(stats["tags"][TAG]["revalidation"], "changed", "{stats}");
}

#[test]
fn a_file_changed_during_a_session_is_never_cut_to_its_old_size() {
    let mut served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    // Outside the tier the catalog's hashes describe, so only the file
    // changes: the manifest and the catalog stay the same.
    let path = "ambientcg/512/Wood051/ao.png";
    let old_size = fs::metadata(mount.tag_path(path)).unwrap().len();
    let mut release = served.release.clone();
    let bigger = images::png("republished", "ao", 32);
    assert!(bigger.len() as u64 > old_size);
    release.files.insert(path.into(), bigger.clone());
    served.republish(release);

    // The kernel holds the old size: that read fails ("stale file handle")
    // rather than return part of the new file.
    let error = read(&mount.tag_path(path)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ESTALE), "{error}");
    let downloads = served.texture_gets();
    assert_eq!(read(&mount.tag_path(path)).unwrap(), bigger);
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        bigger.len() as u64
    );
    assert_eq!(served.texture_gets(), downloads, "the new bytes were kept");
    // The change is announced, and described.
    let stats: serde_json::Value =
        serde_json::from_slice(&read(&mount.path.join(".matvisfs/stats.json")).unwrap()).unwrap();
    let changes = stats["tags"][TAG]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0]["found_in"], path);
    assert_eq!(changes[0]["files"]["changed"], 1);
    assert_eq!(stats["tags"][TAG]["changes_found"], 1);
}

/// The small release, served with only `validators`.
fn served_with(validators: Validators) -> Served {
    let served = Served::small();
    served.server.set_options(ServerOptions {
        validators,
        ..ServerOptions::default()
    });
    served
}

/// Mounts `served` twice over one cache, `between` the two sessions, and
/// opens `path` in the second; returns it with its manifest requests.
fn second_session(
    served: &mut Served,
    path: &str,
    between: impl FnOnce(&mut Served),
) -> (Mount, Vec<LoggedRequest>) {
    let cache = tempfile::tempdir().unwrap();
    drop(
        Mount::builder(&served.base_url())
            .cache(cache.path())
            .start(),
    );
    between(served);
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    read(&mount.tag_path(path)).unwrap();
    let requests = served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(MANIFEST))
        .collect();
    (mount, requests)
}

/// The second session's manifest requests with a server sending only
/// `validators`, and what its statistics say of the tag.
fn second_session_manifest_requests(
    validators: Validators,
    path: &str,
) -> (Vec<LoggedRequest>, serde_json::Value) {
    let (mount, requests) = second_session(&mut served_with(validators), path, |_| {});
    (requests, mount.stats()["tags"][TAG].clone())
}

#[test]
fn a_server_without_validators_is_asked_unconditionally_next_time() {
    let (manifest, tag) =
        second_session_manifest_requests(Validators::None, "ambientcg/1k/Rock064/ao.png");
    assert_eq!(manifest.len(), 1);
    assert!(
        !manifest[0].conditional && manifest[0].status == 200,
        "{manifest:?}"
    );
    // Same bytes: no change is announced.
    assert_eq!(tag["revalidation"], "unchanged", "{tag}");
    assert_eq!(tag["changes"], serde_json::json!([]), "{tag}");
    assert_eq!(tag["changes_found"], 0, "{tag}");
}

/// Sets the served manifest's modification time `age` ago.
fn age_manifest(served: &Served, age: std::time::Duration) {
    let path = served.dir.path().join(TAG).join(MANIFEST);
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[test]
fn a_server_with_only_an_old_last_modified_gets_if_modified_since() {
    let mut served = served_with(Validators::DateOnly);
    age_manifest(&served, std::time::Duration::from_secs(3600));
    let (_mount, manifest) = second_session(&mut served, MANIFEST, |_| {});
    assert_eq!(manifest.len(), 1);
    assert!(
        manifest[0].conditional && manifest[0].status == 304,
        "{manifest:?}"
    );
}

/// A file rewritten within a second keeps its Last-Modified: a date that
/// recent proves nothing, and the next session asks unconditionally and
/// sees the new manifest.
#[test]
fn a_recent_last_modified_is_not_trusted_to_prove_a_copy_unchanged() {
    let mut served = served_with(Validators::DateOnly);
    let rewrite = |served: &mut Served| {
        let path = served.dir.path().join(TAG).join(MANIFEST);
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        let mut release = served.release.clone();
        let mut manifest = release.json(MANIFEST);
        manifest["sources"]["ambientcg"]["tiers"]["256"] = serde_json::json!({"complete": true});
        release.set_json(MANIFEST, &manifest);
        served.republish(release);
        // Rewritten with the same modification time, as within one second.
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    };
    let (mount, requests) = second_session(&mut served, "ambientcg/1k/Rock064/ao.png", rewrite);
    assert!(
        requests.len() == 1 && !requests[0].conditional && requests[0].status == 200,
        "{requests:?}"
    );
    assert!(mount.tag_path("ambientcg/256").is_dir());
    assert_eq!(mount.stats()["tags"][TAG]["revalidation"], "changed");
}

#[test]
fn a_tag_looked_up_by_name_is_loaded_once_and_a_missing_one_remembered() {
    let served = Served::small();
    let other =
        matvisfs_sample::Release::generate(&matvisfs_sample::ReleaseSpec::small("v2026.05.0-rc1"));
    other.write_to(served.dir.path()).unwrap();
    let mount = Mount::builder(&served.base_url()).start();
    let root_lists = |name: &str| {
        fs::read_dir(&mount.path)
            .unwrap()
            .any(|e| e.unwrap().file_name() == name)
    };
    // Listed before it was looked up: the kernel keeps that listing until
    // the mount tells it the root changed.
    assert!(root_lists(TAG) && !root_lists("v2026.05.0-rc1"));
    let rc = mount
        .path
        .join("v2026.05.0-rc1/ambientcg/1k/Rock064/color.png");
    assert_eq!(
        read(&rc).unwrap(),
        other.files["ambientcg/1k/Rock064/color.png"]
    );
    assert!(root_lists("v2026.05.0-rc1"));
    for _ in 0..3 {
        assert!(fs::metadata(mount.path.join("v2099.01.1")).is_err());
    }
    assert_eq!(
        served
            .server
            .count("GET", "v2099.01.1/release-manifest.json"),
        1
    );
    assert!(fs::metadata(mount.path.join(".Trash")).is_err());
    assert!(
        !served
            .server
            .requests()
            .iter()
            .any(|r| r.path.contains("Trash"))
    );
}

/// A catalog of one source replaced (on a plain mirror, which names no
/// commit) begins a new version of the tag in which the files of the other
/// sources are as they were: what a session proved of them stays proven,
/// offline (served, not `EIO`) and online (read again without a request).
#[test]
fn files_proven_before_another_sources_catalog_changed_stay_proven_offline_and_online() {
    let served = Served::plain_mirror(matvisfs_sample::Release::generate(
        &matvisfs_sample::ReleaseSpec::small(TAG),
    ));
    served.server.set_options(ServerOptions {
        lfs_redirects: false,
        commits: false,
        ..Default::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let ambientcg: Vec<(&String, &Vec<u8>)> = served
        .release
        .textures()
        .filter(|(p, _)| p.starts_with("ambientcg/"))
        .collect();
    assert!(!ambientcg.is_empty());
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        for (path, bytes) in served.release.textures() {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
        // gpuopen's catalog alone is republished; the refresh finds it.
        let catalog = served.dir.path().join(TAG).join("gpuopen.json");
        let mut bytes = fs::read(&catalog).unwrap();
        bytes.push(b'\n');
        fs::write(&catalog, bytes).unwrap();
        let generation = mount.stats()["tags"][TAG]["generation"].as_u64().unwrap();
        let refresh = std::process::Command::new(common::BIN)
            .arg("refresh")
            .arg(&mount.path)
            .output()
            .unwrap();
        assert_eq!(refresh.status.code(), Some(0));
        assert!(mount.stats()["tags"][TAG]["generation"].as_u64().unwrap() > generation);
    }
    {
        let offline = Mount::builder(&served.base_url())
            .cache(cache.path())
            .arg("--offline")
            .start();
        for (path, bytes) in &ambientcg {
            assert_eq!(&read(&offline.tag_path(path)).unwrap(), *bytes, "{path}");
        }
    }
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    for (path, bytes) in &ambientcg {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), *bytes, "{path}");
    }
    let asked: Vec<LoggedRequest> = served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&format!("{TAG}/ambientcg/")))
        .collect();
    assert!(asked.is_empty(), "{asked:#?}");
}
