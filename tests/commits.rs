//! Revisions named by their commit, which can never change: the commit a
//! tag resolves to is shown in stats.json, and `<mnt>/<commit>/` (or
//! `--tag <commit>`) mounts that exact revision with no revalidation. A
//! plain mirror names no commits, and says so. A tag's version is its
//! commit where the server names one: a texture replaced alone moves it,
//! and the next session proves again what the catalogs do not.

mod common;

use std::fs;

use common::{Mount, PNG_MAGIC, Served, TAG, read, texture_like, walk};
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

/// A release whose one derived-tier texture was replaced alone (the
/// manifest and catalogs untouched), served as the Hub would: a new commit.
fn replace_one_texture(served: &mut Served, path: &str) -> Vec<u8> {
    let old = &served.release.files[path];
    let new = texture_like(PNG_MAGIC, old.len() + 7, 3);
    let mut release = served.release.clone();
    release.replace_texture(path, new.clone());
    served.republish(release);
    new
}

#[test]
fn a_texture_replaced_alone_moves_the_commit_and_the_next_session_serves_it() {
    let mut served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let path = "ambientcg/512/Rock064/color.png";
    let kept = "ambientcg/512/Wood051/normal.png";
    common::warm(&served.base_url(), cache.path(), &[path, kept]);
    let before = served.server.commit_of(TAG).unwrap();
    let new = replace_one_texture(&mut served, path);
    let after = served.server.commit_of(TAG).unwrap();
    assert_ne!(before, after);

    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert_eq!(read(&mount.tag_path(path)).unwrap(), new, "the new bytes");
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        new.len() as u64
    );
    assert_eq!(
        read(&mount.tag_path(kept)).unwrap(),
        served.release.files[kept]
    );
    let stats = stats(&mount);
    let tag = &stats["tags"][TAG];
    assert_eq!(tag["revalidation"], "changed", "{stats:#}");
    assert_eq!(tag["commit"], after.as_str());
    assert!(
        tag["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["commit"] == after.as_str()),
        "{stats:#}"
    );
    // The unchanged file was proven again by one conditional request, not
    // downloaded.
    assert_eq!(served.texture_gets(), 1, "{:#?}", served.server.requests());
}

/// A cache filled from a server that names no commit holds bytes of no
/// known commit: the first commit named is a new version, in which they
/// are proven again (a texture replaced alone meanwhile, which the mirror
/// could not show, is then served new).
#[test]
fn bytes_cached_where_no_commit_was_named_are_proven_again_at_the_first_commit() {
    let mut served = Served::small();
    served.server.set_options(ServerOptions {
        commits: false,
        ..ServerOptions::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let path = "ambientcg/512/Rock064/color.png";
    let kept = "ambientcg/512/Wood051/normal.png";
    common::warm(&served.base_url(), cache.path(), &[path, kept]);
    let new = replace_one_texture(&mut served, path);
    served.server.set_options(ServerOptions::default());

    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert_eq!(read(&mount.tag_path(path)).unwrap(), new, "the new bytes");
    assert_eq!(
        read(&mount.tag_path(kept)).unwrap(),
        served.release.files[kept]
    );
    let stats = stats(&mount);
    assert_eq!(stats["tags"][TAG]["revalidation"], "changed", "{stats:#}");
    assert_eq!(
        stats["tags"][TAG]["commit"],
        served.server.commit_of(TAG).unwrap().as_str()
    );
    // The unchanged file was proven again by one conditional request.
    assert_eq!(served.texture_gets(), 1, "{:#?}", served.server.requests());
}

#[test]
fn an_unchanged_commit_costs_no_request_per_file() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let paths = [
        "ambientcg/512/Rock064/color.png",
        "ambientcg/512/Wood051/normal.png",
    ];
    common::warm(&served.base_url(), cache.path(), &paths);
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    for path in paths {
        assert_eq!(
            read(&mount.tag_path(path)).unwrap(),
            served.release.files[path]
        );
    }
    let asked: Vec<String> = served
        .server
        .requests()
        .into_iter()
        .map(|r| format!("{} {} {}", r.method, r.status, r.path))
        .collect();
    assert_eq!(
        asked,
        [
            format!("GET 304 {TAG}/release-manifest.json"),
            format!("GET 304 {TAG}/ambientcg.json")
        ],
        "only the revalidations of the manifest and of the textures' catalog"
    );
    assert_eq!(stats(&mount)["tags"][TAG]["revalidation"], "unchanged");
}

#[test]
fn on_the_hub_a_moved_commit_is_proven_again_by_its_listing_not_per_file() {
    const REPO: &str = "gerchowl/mat-vis";
    let mut served = Served::small();
    let base = served.server.hub_base_url(REPO);
    let hub = format!("http://{}", served.server.addr());
    let cache = tempfile::tempdir().unwrap();
    let tier: Vec<String> = served
        .release
        .textures()
        .map(|(p, _)| p.clone())
        .filter(|p| p.starts_with("ambientcg/512/"))
        .collect();
    let mount = |cache: &std::path::Path| {
        Mount::builder(&base)
            .cache(cache)
            .env("HF_ENDPOINT", &hub)
            .arg("--hf-limits")
            .arg("off")
            .start()
    };
    let first = mount(cache.path());
    for path in &tier {
        read(&first.tag_path(path)).unwrap();
    }
    drop(first);
    let changed = tier[0].clone();
    let new = replace_one_texture(&mut served, &changed);

    served.server.clear_requests();
    let second = mount(cache.path());
    for path in &tier {
        let expected = if *path == changed {
            &new
        } else {
            &served.release.files[path]
        };
        assert_eq!(&read(&second.tag_path(path)).unwrap(), expected, "{path}");
    }
    let requests = served.server.requests();
    let per_file: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with(".png") && !r.path.starts_with("api/"))
        .map(|r| format!("{} {} {}", r.method, r.status, r.path))
        .collect();
    // The changed file is downloaded (its redirect and the CDN); nothing
    // else is asked per file.
    assert!(
        per_file.iter().all(|r| r.contains(&changed)),
        "{per_file:#?}"
    );
    let listings = requests
        .iter()
        .filter(|r| r.path.starts_with("api/tree/"))
        .count();
    assert!(
        (1..=3).contains(&listings),
        "{listings} listings for {} files",
        tier.len()
    );
}
