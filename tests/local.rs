//! A local copy of the dataset mounted through a `file://` base URL: the
//! same tree, bytes and sizes as from a server, the next session revalidates
//! from the files' own metadata, and a replaced file is seen as a change.

mod common;

use std::fs;
use std::path::Path;

use common::{Mount, TAG, read, walk};
use matvisfs_sample::{MANIFEST_FILE, Release, ReleaseSpec};
use serde_json::Value;

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn stats(mount: &Mount) -> Value {
    serde_json::from_slice(&read(&mount.path.join(".matvisfs/stats.json")).unwrap()).unwrap()
}

fn requests(stats: &Value, kind: &str, status: &str) -> u64 {
    stats["requests"][kind][status].as_u64().unwrap_or(0)
}

/// Writes `bytes` beside `path` and renames them over it, as rsync does,
/// keeping its modification time (rsync -t): only the inode tells.
fn replace(path: &Path, bytes: &[u8]) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let aside = path.with_extension("partial");
    fs::write(&aside, bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&aside)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&aside, path).unwrap();
}

#[test]
fn a_local_copy_mounts_with_the_tree_bytes_and_sizes_of_the_release() {
    let copy = tempfile::tempdir().unwrap();
    let release = Release::generate(&ReleaseSpec::small(TAG));
    release.write_to(copy.path()).unwrap();
    let mount = Mount::builder(&file_url(copy.path())).arg("--raw").start();
    let expected: Vec<String> = release.expected_tree().into_iter().collect();
    assert_eq!(walk(&mount.path.join(TAG)), expected);
    for (path, bytes) in release.textures() {
        let size = fs::metadata(mount.tag_path(path)).unwrap().len();
        assert_eq!(size, bytes.len() as u64, "{path}");
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert_eq!(
        read(&mount.tag_path(MANIFEST_FILE)).unwrap(),
        release.files[MANIFEST_FILE]
    );
    let stats = stats(&mount);
    let textures = release.textures().count() as u64;
    assert_eq!(requests(&stats, "texture", "200"), textures, "{stats:#}");
    assert!(
        stats["bytes"]["downloaded"].as_u64().unwrap() > 0,
        "{stats:#}"
    );
}

#[test]
fn the_next_session_revalidates_and_sees_a_replaced_file() {
    let copy = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    release.write_to(copy.path()).unwrap();
    // Outside the tier the catalog's hashes describe: only the file changes.
    let changed = "ambientcg/512/Wood051/ao.png";
    let unchanged = "ambientcg/512/Rock064/ao.png";
    {
        let mount = Mount::builder(&file_url(copy.path()))
            .cache(cache.path())
            .start();
        for path in [changed, unchanged] {
            assert_eq!(read(&mount.tag_path(path)).unwrap(), release.files[path]);
        }
    }

    // Unchanged: one conditional manifest request answered "not modified",
    // and the cached bytes served with no other request.
    {
        let mount = Mount::builder(&file_url(copy.path()))
            .cache(cache.path())
            .start();
        assert_eq!(
            read(&mount.tag_path(unchanged)).unwrap(),
            release.files[unchanged]
        );
        let stats = stats(&mount);
        assert_eq!(requests(&stats, "manifest", "304"), 1, "{stats:#}");
        assert_eq!(requests(&stats, "manifest", "200"), 0, "{stats:#}");
        assert!(stats["requests"].get("texture").is_none(), "{stats:#}");
    }

    // Republished in place: the texture replaced by a rename (other bytes of
    // the same size), and the manifest with it (a new tier), as a new release
    // of the same tag would be.
    let mut republished = release.files[changed].clone();
    let middle = republished.len() / 2;
    republished[middle] ^= 0xff;
    release.files.insert(changed.into(), republished.clone());
    let mut manifest = release.json(MANIFEST_FILE);
    manifest["sources"]["ambientcg"]["tiers"]["2k"] = serde_json::json!({"complete": true});
    release.set_json(MANIFEST_FILE, &manifest);
    let revision = copy.path().join(TAG);
    replace(&revision.join(changed), &republished);
    replace(&revision.join(MANIFEST_FILE), &release.files[MANIFEST_FILE]);

    let mount = Mount::builder(&file_url(copy.path()))
        .cache(cache.path())
        .start();
    assert_eq!(read(&mount.tag_path(changed)).unwrap(), republished);
    assert_eq!(
        read(&mount.tag_path(unchanged)).unwrap(),
        release.files[unchanged]
    );
    assert!(mount.tag_path("ambientcg/2k").is_dir(), "the new manifest");
    let stats = stats(&mount);
    assert_eq!(requests(&stats, "manifest", "200"), 1, "{stats:#}");
    // One texture request: the replaced file downloaded again; the other
    // is served from the cache.
    assert_eq!(
        stats["requests"]["texture"],
        serde_json::json!({"200": 1}),
        "{stats:#}"
    );
}

#[test]
fn a_missing_directory_or_a_link_out_of_the_copy_is_refused() {
    let copy = tempfile::tempdir().unwrap();
    let missing = Mount::builder(&file_url(&copy.path().join("missing"))).try_start();
    assert!(missing.is_err());

    let outside = tempfile::tempdir().unwrap();
    let release = Release::generate(&ReleaseSpec::small(TAG));
    release.write_to(outside.path()).unwrap();
    release.write_to(copy.path()).unwrap();
    let linked = "ambientcg/1k/Rock064/color.png";
    let target = outside.path().join(TAG).join(linked);
    fs::remove_file(copy.path().join(TAG).join(linked)).unwrap();
    std::os::unix::fs::symlink(&target, copy.path().join(TAG).join(linked)).unwrap();
    let mount = Mount::builder(&file_url(copy.path())).start();
    let error = read(&mount.tag_path(linked)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    let other = "ambientcg/1k/Wood051/color.png";
    assert_eq!(read(&mount.tag_path(other)).unwrap(), release.files[other]);
}
