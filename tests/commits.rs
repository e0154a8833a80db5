//! Revisions named by their commit, which can never change: the commit a
//! tag resolves to is shown in stats.json, and `<mnt>/<commit>/` (or
//! `--tag <commit>`) mounts that exact revision with no revalidation. A
//! plain mirror names no commits, and says so.

mod common;

use std::fs;

use common::{Mount, Served, TAG, read, walk};
use matvisfs_testkit::devserver::ServerOptions;

fn stats(mount: &Mount) -> serde_json::Value {
    serde_json::from_slice(&read(&mount.path.join(".matvisfs/stats.json")).unwrap()).unwrap()
}

/// The commit the test server names for the served tag.
fn commit_of(served: &Served) -> String {
    let manifest = &served.release.files["release-manifest.json"];
    matvisfs_sample::sha256_hex(manifest)[..40].to_string()
}

#[test]
fn a_tag_shows_its_commit_and_a_commit_mounts_that_revision_without_revalidation() {
    let served = Served::small();
    let commit = commit_of(&served);
    let cache = tempfile::tempdir().unwrap();
    common::warm(
        &served.base_url(),
        cache.path(),
        &["ambientcg/1k/Rock064/color.png"],
    );
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    read(&mount.tag_path("ambientcg/512/Rock064/color.png")).unwrap();
    let stats = stats(&mount);
    assert_eq!(stats["tags"][TAG]["commit"], commit.as_str(), "{stats:#}");

    // The same revision by its commit: the same tree and bytes.
    served.server.clear_requests();
    let pinned = mount.path.join(&commit);
    assert_eq!(walk(&pinned), walk(&mount.path.join(TAG)));
    let path = "ambientcg/512/Wood051/normal.png";
    assert_eq!(
        read(&pinned.join(path)).unwrap(),
        served.release.files[path]
    );
    let stats = self::stats(&mount);
    assert_eq!(stats["tags"][&commit]["revalidation"], "pinned");
    // Fetched once, never asked again: it cannot change.
    let manifest = format!("{commit}/release-manifest.json");
    let asked: Vec<_> = served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path == manifest)
        .collect();
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert!(!asked[0].conditional);

    // A second session over the same cache: not even one request for it.
    drop(mount);
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--tag")
        .arg(&commit)
        .start();
    assert_eq!(
        read(&mount.path.join(&commit).join(path)).unwrap(),
        served.release.files[path]
    );
    let documents: Vec<_> = served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&commit) && r.path.ends_with(".json"))
        .collect();
    assert!(documents.is_empty(), "{documents:#?}");
}

#[test]
fn a_plain_mirror_names_no_commit() {
    let served = Served::small();
    served.server.set_options(ServerOptions {
        commits: false,
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&served.base_url()).start();
    read(&mount.tag_path("ambientcg/512/Rock064/color.png")).unwrap();
    let stats = stats(&mount);
    assert!(stats["tags"][TAG]["commit"].is_null(), "{stats:#}");
    let commit = commit_of(&served);
    let error = fs::metadata(mount.path.join(&commit)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
    let refused = Mount::builder(&served.base_url())
        .arg("--tag")
        .arg(&commit)
        .try_start();
    assert!(refused.is_err());
}
