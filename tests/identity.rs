//! Which bytes belong to a path, through real mounts: a catalog hash proves
//! only its own tier's file, no read ever mixes two versions of a file,
//! empty files are never textures, and a change found by one operation is
//! seen by the next one, listings included.

mod common;

use std::fs;
use std::io::Read;

use common::{KTX2_MAGIC, Mount, PNG_MAGIC, Served, TAG, clear_cache, read, texture_like};
use matvisfs_sample::{Release, ReleaseSpec};

fn stats(mount: &Mount) -> serde_json::Value {
    serde_json::from_slice(&read(&mount.path.join(".matvisfs/stats.json")).unwrap()).unwrap()
}

#[test]
fn a_catalog_hash_proves_only_the_file_of_its_own_tier() {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let baked = "ambientcg/1k/Rock064/color.png";
    // Derived tiers' files with exactly the size of their 1k twin: the
    // catalog's hash for the 1k file says nothing about them.
    let size = release.files[baked].len();
    let twin_png = "ambientcg/512/Rock064/color.png";
    let twin_ktx = "ambientcg/ktx2-512/Rock064/color.ktx2";
    release.replace_texture(twin_png, texture_like(PNG_MAGIC, size, 1));
    release.replace_texture(twin_ktx, texture_like(KTX2_MAGIC, size, 2));
    let served = Served::new(release);
    for baked_first in [true, false] {
        let mount = Mount::builder(&served.base_url()).start();
        if baked_first {
            assert_eq!(
                read(&mount.tag_path(baked)).unwrap(),
                served.release.files[baked]
            );
        }
        for twin in [twin_png, twin_ktx] {
            assert_eq!(
                read(&mount.tag_path(twin)).unwrap(),
                served.release.files[twin],
                "{twin} (the baked file read first: {baked_first})"
            );
        }
    }
}

/// Reads `path` in two pieces around `between`, returning the whole.
fn read_around(
    path: &std::path::Path,
    first: usize,
    between: impl FnOnce(),
) -> std::io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut bytes = vec![0u8; first];
    file.read_exact(&mut bytes)?;
    between();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A reader is half-way through a file when its cached copy goes (`cache
/// clear`, or a cap smaller than the file) and the server replaces it with
/// other bytes of the same size; a second reader reads it whole meanwhile.
/// Each reader gets one whole version, or an error; never a mix.
fn no_read_mixes_two_versions(args: &[&str], clear: bool) {
    let path = "ambientcg/512/Wood051/normal.png";
    let old = texture_like(PNG_MAGIC, 3 << 20, 7);
    let new = texture_like(PNG_MAGIC, 3 << 20, 9);
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    release.replace_texture(path, old.clone());
    let mut served = Served::new(release);
    let mut builder = Mount::builder(&served.base_url());
    for arg in args {
        builder = builder.arg(arg);
    }
    let mount = builder.start();
    let mut second = None;
    let first = read_around(&mount.tag_path(path), 1 << 20, || {
        if clear {
            clear_cache(&mount);
        }
        let mut replaced = served.release.clone();
        replaced.replace_texture(path, new.clone());
        served.republish(replaced);
        second = Some(read(&mount.tag_path(path)));
    });
    let whole = |bytes: &[u8]| bytes == old.as_slice() || bytes == new.as_slice();
    if let Ok(bytes) = &first {
        assert!(whole(bytes), "the first reader got a mix of two versions");
    }
    if let Some(Ok(bytes)) = &second {
        assert!(whole(bytes), "the second reader got a mix of two versions");
    }
    // A reader that starts now gets one whole version too.
    if let Ok(bytes) = read(&mount.tag_path(path)) {
        assert!(whole(&bytes), "a later reader got a mix of two versions");
    }
}

#[test]
fn no_read_mixes_two_versions_when_the_cache_is_cleared() {
    no_read_mixes_two_versions(&[], true);
}

#[test]
fn no_read_mixes_two_versions_when_the_cache_is_cleared_without_passthrough() {
    no_read_mixes_two_versions(&["--no-passthrough"], true);
}

#[test]
fn no_read_mixes_two_versions_when_the_file_is_larger_than_the_cap() {
    no_read_mixes_two_versions(&["--cache-max-size", "1MB"], false);
}

#[test]
fn an_empty_file_is_never_a_texture_and_its_size_is_not_remembered() {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let path = "ambientcg/512/Metal032/ao.png";
    let good = release.files[path].clone();
    release.replace_texture(path, Vec::new());
    let mut served = Served::new(release);
    let cache = tempfile::tempdir().unwrap();
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        let errno = |e: std::io::Error| e.raw_os_error();
        assert_eq!(
            fs::metadata(mount.tag_path(path)).map_err(errno).err(),
            Some(Some(libc::EIO)),
            "a size of 0 is refused"
        );
        assert_eq!(
            read(&mount.tag_path(path)).map_err(errno).err(),
            Some(Some(libc::EIO))
        );
        // A file of the baked tier (its size from the catalog) read as an
        // empty body: refused too, and not kept.
        let baked = "ambientcg/1k/Metal032/ao.png";
        let mut emptied = served.release.clone();
        emptied.files.insert(baked.into(), Vec::new());
        served.republish(emptied);
        assert_eq!(
            read(&mount.tag_path(baked)).map_err(errno).err(),
            Some(Some(libc::EIO))
        );
    }
    // Fixed on the server: the next session asks again and serves it.
    let mut fixed = served.release.clone();
    fixed.replace_texture(path, good.clone());
    served.republish(fixed);
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        good.len() as u64
    );
    assert_eq!(read(&mount.tag_path(path)).unwrap(), good);
}

#[test]
fn a_listing_follows_a_change_found_by_an_open_at_once() {
    let served_release = Release::generate(&ReleaseSpec::small(TAG));
    let mut served = Served::new(served_release.clone());
    let cache = tempfile::tempdir().unwrap();
    common::warm(
        &served.base_url(),
        cache.path(),
        &["ambientcg/1k/Rock064/color.png"],
    );
    // The server gains a material after the cache was filled.
    let mut spec = ReleaseSpec::small(TAG);
    spec.sources[0].materials.push("Tiles099".into());
    served.republish(Release::generate(&spec));

    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    let tier = mount.tag_path("ambientcg/512");
    let names = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&tier)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    // Before any open, the cached catalog is served (no request).
    assert!(!names().contains(&"Tiles099".to_string()));
    common::walk(&mount.path.join(TAG));
    // Opens from several threads: the first revalidates and finds the change.
    std::thread::scope(|scope| {
        for material in ["Rock064", "Metal032", "Wood051", "Rock064"] {
            let path = mount.tag_path(&format!("ambientcg/1k/{material}/color.png"));
            scope.spawn(move || drop(fs::File::open(path).unwrap()));
        }
    });
    // The listing the kernel kept is gone: the new material is there at once.
    assert!(names().contains(&"Tiles099".to_string()), "{:?}", names());
    assert!(
        common::walk(&mount.path.join(TAG))
            .contains(&"ambientcg/1k/Tiles099/color.png".to_string())
    );
    // And the change is described.
    let stats = stats(&mount);
    let changes = stats["tags"][TAG]["changes"].as_array().unwrap().clone();
    let catalog = changes
        .iter()
        .find(|c| c["found_in"] == "ambientcg.json")
        .unwrap_or_else(|| panic!("{changes:#?}"));
    assert_eq!(catalog["materials"]["added"], 1);
    assert_eq!(catalog["materials"]["removed"], 0);
    assert!(
        catalog["examples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("Tiles099"))
    );
}

#[test]
fn opens_served_from_the_cache_count_as_hits() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let paths: Vec<String> = served.release.textures().map(|(p, _)| p.clone()).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    common::warm(&served.base_url(), cache.path(), &refs);
    for passthrough in [true, false] {
        let mut builder = Mount::builder(&served.base_url()).cache(cache.path());
        if !passthrough {
            builder = builder.arg("--no-passthrough");
        }
        let mount = builder.start();
        for (path, bytes) in served.release.textures() {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
        }
        let stats = stats(&mount);
        assert_eq!(stats["cache"]["hits"], paths.len(), "{stats}");
        assert_eq!(stats["cache"]["misses"], 0, "{stats}");
    }
}

/// A mapping of `path` as a program makes it: `fstat`, then `mmap` of that
/// size, read whole in a child process (a page the kernel cannot fill is
/// `SIGBUS`). `None` when the child failed or was killed.
fn mapped(path: &std::path::Path) -> Option<Vec<u8>> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let script = "import mmap, os, sys\n\
                  fd = os.open(sys.argv[1], os.O_RDONLY)\n\
                  m = mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)\n\
                  open(sys.argv[2], 'wb').write(m[:])\n";
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(out.path())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("python3 runs");
    status.success().then(|| fs::read(out.path()).unwrap())
}

/// On a plain mirror (no digest), a file replaced by a smaller one after a
/// `stat` gave the kernel its old size: a program that maps it with that
/// size gets one whole version or an error, never the new bytes padded with
/// zeros to the old size. Both within one page: the kernel retries a failed
/// read of a mapping's page at once, and the retry must fail too.
#[test]
fn a_mapping_of_a_file_that_shrank_is_never_padded() {
    let path = "ambientcg/512/Rock064/color.png";
    let old = texture_like(PNG_MAGIC, 1997, 3);
    let new = texture_like(PNG_MAGIC, 685, 4);
    let (_served, mount) = common::replaced_after_stat(path, &old, &new);
    if let Some(bytes) = mapped(&mount.tag_path(path)) {
        assert!(
            bytes == old || bytes == new,
            "mapped {} bytes (the new version has {}{})",
            bytes.len(),
            new.len(),
            if bytes.starts_with(&new) {
                ", followed by zeros"
            } else {
                ""
            }
        );
    }
    // Once the kernel has the new size, the file reads whole (once the
    // mapping's release arrived).
    assert_eq!(common::read_once_released(&mount.tag_path(path)), new);
}
