//! The product bugs the adversary (`tests/adversary.rs`) found, each made
//! deterministic: every test failed on the code before its fix, but for
//! the larger-version counterpart of the last, kept beside it.

mod common;

use common::{Mount, PNG_MAGIC, Served, TAG, read, texture_like};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::{Fault, FaultRule, ServerOptions};
use std::fs;
use std::io::Read;
use std::time::Duration;

// Found by the adversary (seed 20260420 sessions 0 and 1, a plain mirror,
// `--no-passthrough`): a reader half-way through a file gets end-of-file
// early, a silent prefix of the version it opened (1753088 of 1777572
// bytes; 40960 of 2449633), after the server replaced the file with a
// smaller one and the mount learned the new size. The kernel is given the
// new size for the inode while the old version is still open, and the
// reader's next read lies past it. Allowed: the whole old version, or an
// error.
//
// Deterministic here: the old version is open and half read when another
// catalog's change begins a new version of the tag, so the kernel asks
// for the file's attributes again and gets the new, smaller size. With
// passthrough or without.
fn a_reader_is_not_cut_short_by_a_smaller_new_version(args: &[&str]) {
    let path = "ambientcg/512/Wood051/normal.png";
    let gpuopen = "gpuopen/1k/0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01/color.png";
    let old = texture_like(PNG_MAGIC, 3 << 20, 7);
    let new = texture_like(PNG_MAGIC, 16 << 10, 9);
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    release.replace_texture(path, old.clone());
    let mut served = Served::new(release);
    let cache = tempfile::tempdir().unwrap();
    common::warm(&served.base_url(), cache.path(), &[gpuopen]);
    let mut builder = Mount::builder(&served.base_url()).cache(cache.path());
    for arg in args {
        builder = builder.arg(arg);
    }
    let mount = builder.start();
    let mut file = fs::File::open(mount.tag_path(path)).unwrap();
    let mut first = vec![0u8; 1 << 20];
    file.read_exact(&mut first).unwrap();
    // The file is replaced by a smaller one; another catalog changes.
    let mut replaced = served.release.clone();
    replaced.replace_texture(path, new.clone());
    let mut catalog = replaced.json("gpuopen.json");
    for entry in catalog.as_array_mut().unwrap() {
        entry["upstream"]["revision"] = 2.into();
    }
    replaced.set_json("gpuopen.json", &catalog);
    served.republish(replaced);
    // The first open of a gpuopen file finds its catalog changed.
    read(&mount.tag_path(gpuopen)).unwrap();
    // The first reader goes on.
    let rest = file.read_to_end(&mut first);
    if rest.is_ok() {
        assert!(
            first == old,
            "the first reader got {} bytes of the {} of the version it opened, then end-of-file \
             (the new version has {})",
            first.len(),
            old.len(),
            new.len()
        );
    }
}

#[test]
fn a_reader_is_not_cut_short_by_a_smaller_new_version_without_passthrough() {
    a_reader_is_not_cut_short_by_a_smaller_new_version(&["--no-passthrough"]);
}

#[test]
fn a_reader_is_not_cut_short_by_a_smaller_new_version_with_passthrough() {
    a_reader_is_not_cut_short_by_a_smaller_new_version(&[]);
}

// Found by the adversary (seed 20260420 session 2; seed 2 session 6,
// with the kernel's requests logged): a read of a texture returns zero
// bytes. The daemon's log shows, for the file's inode: LOOKUP, OPEN,
// GETATTR, READ (waiting for the download); meanwhile a revalidation
// finds another catalog changed (a new version of the tag: sizes not
// known again yet), and a READDIRPLUS of the file's directory answers its
// entry with the placeholder attributes of an unknown size, size 0; the
// kernel applies them to the inode it already has, and when the download
// arrives the read ends at the new end-of-file, 0. Allowed: the file's
// bytes, or an error; never an empty texture.
//
// Deterministic here: the download is held back by the server while the
// listing happens.
#[test]
fn a_listing_during_a_read_never_makes_it_empty() {
    let path = "ambientcg/512/Rock064/color.png";
    let mut served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    // Cached catalogs, and nothing of the file.
    common::warm(
        &served.base_url(),
        cache.path(),
        &[
            "ambientcg/1k/Metal032/color.png",
            "gpuopen/1k/0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01/color.png",
        ],
    );
    // Both catalogs change on the server (the same files).
    let mut changed = served.release.clone();
    for catalog in ["ambientcg.json", "gpuopen.json"] {
        let mut value = changed.json(catalog);
        for entry in value.as_array_mut().unwrap() {
            entry["upstream"]["revision"] = 2.into();
        }
        changed.set_json(catalog, &value);
    }
    served.republish(changed);
    let expected = served.release.files[path].clone();
    served.server.inject(FaultRule::new(
        &format!("cdn/{TAG}/{path}"),
        Fault::Delay(Duration::from_millis(1500)),
    ));

    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    std::thread::scope(|scope| {
        // Opens the file (the ambientcg catalog's change is found), gets
        // its size, and waits in its first read for the download.
        let reader = scope.spawn(|| read(&mount.tag_path(path)));
        std::thread::sleep(Duration::from_millis(700));
        // Another version of the tag (the gpuopen catalog changed), then a
        // listing of the file's directory while the read waits.
        read(&mount.tag_path("gpuopen/1k/0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01/color.png")).unwrap();
        let listed = fs::read_dir(mount.tag_path("ambientcg/512/Rock064"))
            .unwrap()
            .count();
        assert!(listed > 0);
        let bytes = reader.join().unwrap();
        assert!(
            bytes.as_ref().map_or(true, |b| *b == expected),
            "the read returned {:?} bytes, the file has {}",
            bytes.as_ref().map(Vec::len),
            expected.len()
        );
    });
}

// Found by the adversary (seed 1, sessions 6 and 7, 1585 violations): a
// zero-byte upload of a baked-tier (1k) file whose catalog lists its
// hash truthfully (`"size": 0`, the sha256 of nothing). The size comes
// from the catalog, with no request, and is not refused as too small for
// a texture: `stat` shows 0 bytes and every read returns nothing (the
// kernel, holding size 0, never asks matvisfs). With the size from a HEAD
// the same upload is refused (`tests/identity.rs`). Allowed: `EIO`.
#[test]
fn a_zero_size_in_the_catalog_is_never_a_texture() {
    let path = "ambientcg/1k/Rock064/normal.png";
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    // The upload is empty, and the catalog says so (its hash follows).
    release.replace_texture(path, Vec::new());
    let catalog = release.json("ambientcg.json");
    let entry = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "Rock064")
        .unwrap();
    assert_eq!(entry["texture_hashes"]["normal"]["size"], 0);
    let served = Served::new(release);
    let mount = Mount::builder(&served.base_url()).start();
    let errno = |e: std::io::Error| e.raw_os_error();
    let size = fs::metadata(mount.tag_path(path)).map(|m| m.len());
    let bytes = read(&mount.tag_path(path));
    assert!(
        !matches!(size, Ok(0)),
        "stat shows a texture of 0 bytes (read gave {:?})",
        bytes.as_ref().map(Vec::len).map_err(|e| e.raw_os_error())
    );
    assert_eq!(bytes.map_err(errno).err(), Some(Some(libc::EIO)));
}

// Found by the adversary (seed 6, session 0, a plain mirror): a file
// replaced on the server by a smaller one mid-session, with its manifest
// and catalog untouched, after a `stat` gave the kernel its old size. The
// read that downloads the new bytes returns the new version followed by
// bytes of no version: here up to the old size (the kernel pads the short
// reply up to the size it holds); in the adversary's seed 11 up to the end
// of the kernel's first read, 128 KiB. Then a reread of the same open
// file returns the new version alone. (A larger new version is handled: the
// same sequence reads it whole or fails.) docs/caching.md promises
// `ESTALE` for the read that finds a size change ("the kernel holds the old
// size and would cut the new bytes short"); with Hugging Face redirects the
// digest in `X-Linked-Etag` catches it, a plain mirror sends none. Allowed:
// either whole version, or an error.
fn a_new_version_of_another_size_is_read_whole(old_len: usize, new_len: usize) {
    let path = "ambientcg/512/Rock064/color.png";
    let old = texture_like(PNG_MAGIC, old_len, 3);
    let new = texture_like(PNG_MAGIC, new_len, 4);
    let (_served, mount) = common::replaced_after_stat(path, &old, &new);
    let bytes = read(&mount.tag_path(path));
    if let Ok(bytes) = &bytes {
        let padding = bytes.len().saturating_sub(new.len());
        assert!(
            *bytes == old || *bytes == new,
            "read {} bytes: the new version is {} bytes{}",
            bytes.len(),
            new.len(),
            if bytes.starts_with(&new) {
                format!(", followed by {padding} bytes of no version")
            } else {
                String::new()
            }
        );
    }
}

#[test]
fn a_smaller_new_version_is_never_padded_to_the_old_size() {
    a_new_version_of_another_size_is_read_whole(14333, 11546);
}

#[test]
fn a_larger_new_version_is_never_cut_at_the_old_size() {
    a_new_version_of_another_size_is_read_whole(11546, 14333);
}

// Found by the adversary (seed 20260420, a session on the Hub's layout
// with `matvisfs refresh`): a `stat` made a HEAD, whose redirect (to the
// CDN address of the bytes then) was remembered for the download that
// usually follows; the texture was then replaced alone, the commit moved,
// and the refresh began a new version, in which the Hub's tree listing of
// the new commit gave the file's size: no HEAD again. The first read of the
// new version went to the remembered address and served the bytes the
// server had replaced. A redirect seen before a new version began is no
// longer followed.
#[test]
fn a_redirect_seen_before_a_new_version_does_not_serve_it() {
    let mut served = Served::small();
    // As the Hub's: an old redirect still leads to the old bytes.
    served.server.set_options(ServerOptions {
        cdn_keeps_objects: true,
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&served.server.hub_base_url("gerchowl/mat-vis")).start();
    let path = "ambientcg/512/Wood051/ao.png";
    // The tree listing fails once: the size comes from a HEAD, its
    // redirect kept.
    served.server.inject(
        FaultRule::new(
            "api/",
            Fault::Status {
                code: 500,
                retry_after: None,
            },
        )
        .times(1),
    );
    let old = served.release.files[path].clone();
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        old.len() as u64
    );
    assert!(served.server.count("HEAD", path) >= 1);
    let mut release = served.release.clone();
    let new = texture_like(PNG_MAGIC, old.len() + 4096, 3);
    release.files.insert(path.into(), new.clone());
    served.republish(release);
    let refreshed = std::process::Command::new(common::BIN)
        .arg("refresh")
        .arg(&mount.path)
        .status()
        .unwrap();
    assert!(refreshed.success());
    assert_eq!(read(&mount.tag_path(path)).unwrap(), new);
}
