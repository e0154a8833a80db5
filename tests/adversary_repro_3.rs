//! Found by the adversary (seed 1, sessions 6 and 7, 1585 violations): a
//! zero-byte upload of a baked-tier (1k) file whose catalog lists its
//! hash truthfully (`"size": 0`, the sha256 of nothing). The size comes
//! from the catalog, with no request, and is not refused as too small for
//! a texture: `stat` shows 0 bytes and every read returns nothing (the
//! kernel, holding size 0, never asks matvisfs). With the size from a HEAD
//! the same upload is refused (`tests/identity.rs`). Allowed: `EIO`.
//!
//! `cargo test --test adversary_repro_3 -- --ignored`

mod common;

use std::fs;

use common::{Mount, Served, TAG, read};
use matvisfs_sample::{Release, ReleaseSpec};

#[test]
#[ignore = "product bug found by the adversary: a zero size from the catalog is served"]
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
