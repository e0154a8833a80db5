//! Revisions named by their commit, which can never change: the commit a
//! tag resolves to is shown in stats.json, and `<mnt>/<commit>/` (or
//! `--tag <commit>`) mounts that exact revision with no revalidation. A
//! plain mirror names no commits, and says so. A tag's version is its
//! commit where the server names one: a texture replaced alone moves it,
//! and the next session proves again what the catalogs do not.

mod common;

use std::fs;

use common::{Mount, PNG_MAGIC, Served, TAG, errno, names, read, texture_like, walk};
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

/// A mount of `served`'s revision by its commit alone (`--commits-only`),
/// with `args` besides, and that commit.
fn mount_commits_only(served: &Served, args: &[&str]) -> (Mount, String) {
    let commit = commit_of(served);
    let mut builder = Mount::builder(&served.base_url())
        .arg("--commits-only")
        .arg("--tag")
        .arg(&commit);
    for arg in args {
        builder = builder.arg(arg);
    }
    (builder.start(), commit)
}

/// `--commits-only`: the revisions named by commit alone, which can never
/// change, read without opens in the daemon (FUSE's no-open mode) whether
/// cached or not; a tag name is no revision of the mount, and asks nothing.
#[test]
fn a_mount_of_commits_only_is_read_without_opens_and_serves_no_tag_name() {
    let served = Served::small();
    let address = common::metrics_address();
    let (mount, commit) = mount_commits_only(&served, &["--metrics", &address]);
    let textures: Vec<(&String, &Vec<u8>)> = served.release.textures().take(6).collect();
    // Cold (each downloaded at its first read), then warm.
    for _ in 0..3 {
        for (path, bytes) in &textures {
            assert_eq!(
                &read(&mount.path.join(&commit).join(path)).unwrap(),
                *bytes,
                "{path}"
            );
        }
    }
    // The first open alone, refused, which puts the kernel in no-open mode.
    assert_eq!(common::operations(&address, "open"), 1);
    assert_eq!(common::operations(&address, "release"), 0);
    assert!(common::operations(&address, "read") > 0);

    // Only the commit is listed (no `latest`, no release); a tag name is
    // absent, and not asked of the server.
    assert_eq!(names(&mount.path), [".matvisfs", commit.as_str()]);
    served.server.clear_requests();
    assert_eq!(
        errno(fs::metadata(mount.path.join(TAG))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno(fs::metadata(mount.path.join("latest"))),
        Some(libc::ENOENT)
    );
    assert!(served.server.requests().is_empty());
    let stats = stats(&mount);
    let tags: Vec<&String> = stats["tags"].as_object().unwrap().keys().collect();
    assert_eq!(tags, [&commit]);
    assert_eq!(stats["tags"][&commit]["revalidation"], "pinned");

    // `refresh` of a tag name fails and says why; of the commit, nothing
    // to do.
    let refresh = |tag: &str| {
        std::process::Command::new(common::BIN)
            .args(["refresh"])
            .arg(&mount.path)
            .args(["--tag", tag])
            .output()
            .unwrap()
    };
    let refused = refresh(TAG);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("commits-only"));
    assert_eq!(refresh(&commit).status.code(), Some(0));
}

/// A tag name cannot be mounted with `--commits-only`, named or by default.
#[test]
fn commits_only_refuses_a_tag_name() {
    let served = Served::small();
    for args in [vec!["--tag", TAG], vec![]] {
        let mut builder = Mount::builder(&served.base_url()).arg("--commits-only");
        for arg in args {
            builder = builder.arg(arg);
        }
        let error = builder.try_start().map(|_| ()).unwrap_err();
        assert!(
            error.contains("--commits-only") && error.contains(TAG),
            "{error}"
        );
    }
    assert!(served.server.requests().is_empty());
}

/// Without opens, the inode is what binds a reader to a version: a file
/// found absent changes the documents generated beside it, which get new
/// inodes. The old ones are stale from then on, read before or not (never
/// the old document once the change was seen, never part of the new one),
/// and the name leads to the new document, which no longer names the file.
#[test]
fn without_opens_a_document_that_changes_is_a_new_file_and_the_old_one_stale() {
    let missing = "ambientcg/512/Rock064/normal.png";
    let mut spec = matvisfs_sample::ReleaseSpec::small(TAG);
    spec.quirks.unpublished = vec![missing.into()];
    let served = Served::new(matvisfs_sample::Release::generate(&spec));
    let (mount, commit) = mount_commits_only(&served, &[]);
    let dir = mount.path.join(&commit).join("ambientcg/512/Rock064");
    let mtlx = dir.join("Rock064.mtlx");
    let held = fs::File::open(&mtlx).unwrap();
    let mut before = String::new();
    std::io::Read::read_to_string(&mut &held, &mut before).unwrap();
    assert!(before.contains("normal.png"), "{before}");
    let unread = fs::File::open(dir.join("Rock064.usda")).unwrap();

    assert_eq!(
        errno(fs::metadata(mount.path.join(&commit).join(missing))),
        Some(libc::ENOENT)
    );
    let mut buffer = vec![0; before.len()];
    assert_eq!(
        errno(std::os::unix::fs::FileExt::read_exact_at(
            &held,
            &mut buffer,
            0
        )),
        Some(libc::ESTALE)
    );
    assert_eq!(
        errno(std::io::Read::read(&mut &unread, &mut buffer)),
        Some(libc::ESTALE)
    );
    let after = String::from_utf8(common::read_once_released(&mtlx)).unwrap();
    assert!(
        !after.contains("normal.png") && after.contains("color.png"),
        "{after}"
    );
    assert_eq!(fs::metadata(&mtlx).unwrap().len(), after.len() as u64);
    let usda = String::from_utf8(common::read_once_released(&dir.join("Rock064.usda"))).unwrap();
    assert!(!usda.contains("normal.png") && usda.contains("color.png"));
    // The textures beside them did not change.
    for name in ["color.png", "ao.png"] {
        let path = format!("ambientcg/512/Rock064/{name}");
        assert_eq!(
            read(&dir.join(name)).unwrap(),
            served.release.files[&path],
            "{path}"
        );
    }
}

/// Without opens, a file found changed by its own first read (a server
/// answering other bytes for a commit's path than the size the mount gave)
/// is dropped from the kernel once that read is answered: the read fails,
/// the name leads to the server's new bytes, whole.
#[test]
fn without_opens_a_file_found_changed_by_its_own_read_is_read_new_by_name() {
    let served = Served::small();
    let (mount, commit) = mount_commits_only(&served, &[]);
    let path = "ambientcg/512/Rock064/color.png";
    let file = mount.path.join(&commit).join(path);
    let given = fs::metadata(&file).unwrap().len();
    assert_eq!(given, served.release.files[path].len() as u64);
    let new = matvisfs_sample::images::png("changed", "color", 48);
    assert_ne!(new.len() as u64, given);
    fs::write(served.dir.path().join(TAG).join(path), &new).unwrap();
    let open = fs::File::open(&file).unwrap();
    let mut buffer = Vec::new();
    assert_eq!(
        errno(std::io::Read::read_to_end(&mut &open, &mut buffer)),
        Some(libc::ESTALE),
        "{} bytes read",
        buffer.len()
    );
    assert_eq!(common::read_once_released(&file), new);
    assert_eq!(fs::metadata(&file).unwrap().len(), new.len() as u64);
}

/// A branch or tag named like a commit (40 hex digits, which git allows)
/// can move: a server that resolves the name to another commit shows that
/// it is no commit, and it is not served as one (which would never be
/// revalidated), with `--commits-only` or without.
#[test]
fn a_ref_named_like_a_commit_is_not_served_as_a_commit() {
    let served = Served::small();
    let name = "ab".repeat(20);
    let release = matvisfs_sample::Release::generate(&matvisfs_sample::ReleaseSpec::small(&name));
    release.write_to(served.dir.path()).unwrap();
    let error = Mount::builder(&served.base_url())
        .arg("--commits-only")
        .arg("--tag")
        .arg(&name)
        .try_start()
        .map(|_| ())
        .unwrap_err();
    assert!(
        error.contains(&name) && error.contains("named like a commit"),
        "{error}"
    );
    let mount = Mount::builder(&served.base_url()).start();
    assert!(fs::metadata(mount.path.join(&name)).is_err());
    assert!(fs::metadata(mount.tag_path("ambientcg")).unwrap().is_dir());
}
