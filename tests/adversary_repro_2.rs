//! Found by the adversary (seed 20260420 session 2; seed 2 session 6,
//! with the kernel's requests logged): a read of a texture returns zero
//! bytes. The daemon's log shows, for the file's inode: LOOKUP, OPEN,
//! GETATTR, READ (waiting for the download); meanwhile a revalidation
//! finds another catalog changed (a new version of the tag: sizes not
//! known again yet), and a READDIRPLUS of the file's directory answers its
//! entry with the placeholder attributes of an unknown size, size 0; the
//! kernel applies them to the inode it already has, and when the download
//! arrives the read ends at the new end-of-file, 0. Allowed: the file's
//! bytes, or an error; never an empty texture.
//!
//! Deterministic here: the download is held back by the server while the
//! listing happens.
//!
//! `cargo test --test adversary_repro_2 -- --ignored`

mod common;

use std::fs;
use std::time::Duration;

use common::{Mount, Served, TAG, read};
use matvisfs_testkit::devserver::{Fault, FaultRule};

#[test]
#[ignore = "product bug found by the adversary: a listing during a read makes it empty"]
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
