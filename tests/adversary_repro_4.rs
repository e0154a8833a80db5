//! Found by the adversary (seed 6, session 0, a plain mirror): a file
//! replaced on the server by a smaller one mid-session, with its manifest
//! and catalog untouched, after a `stat` gave the kernel its old size. The
//! read that downloads the new bytes returns the new version followed by
//! bytes of no version: here up to the old size (the kernel pads the short
//! reply up to the size it holds); in the adversary's seed 11 up to the end
//! of the kernel's first read, 128 KiB. Then a reread of the same open
//! file returns the new version alone. (A larger new version is handled: the
//! same sequence reads it whole or fails.) The README promises `ESTALE` for the
//! read that finds a size change ("the kernel holds the old size and would
//! cut the new bytes short"); with Hugging Face redirects the digest in
//! `X-Linked-Etag` catches it, a plain mirror sends none. Allowed: either
//! whole version, or an error.
//!
//! `cargo test --test adversary_repro_4 -- --ignored`

mod common;

use std::fs;

use common::{Mount, Served, TAG, read};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::ServerOptions;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn texture_like(len: usize, seed: u32) -> Vec<u8> {
    let mut bytes = PNG_MAGIC.to_vec();
    let mut x = seed | 1;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    bytes
}

fn a_new_version_of_another_size_is_read_whole(old_len: usize, new_len: usize) {
    let path = "ambientcg/512/Rock064/color.png";
    let old = texture_like(old_len, 3);
    let new = texture_like(new_len, 4);
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    release.replace_texture(path, old.clone());
    let mut served = Served::new(release);
    // A plain mirror: no redirects, no digest.
    served.server.set_options(ServerOptions {
        lfs_redirects: false,
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&served.base_url()).start();
    // The session's revalidation, then the file's old size to the kernel.
    read(&mount.tag_path("ambientcg/1k/Metal032/color.png")).unwrap();
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        old.len() as u64
    );
    // Replaced by a smaller file, manifest and catalog untouched.
    let mut replaced = served.release.clone();
    replaced.files.insert(path.into(), new.clone());
    served.republish(replaced);
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
#[ignore = "product bug found by the adversary: a smaller new version padded to the old size"]
fn a_smaller_new_version_is_never_padded_to_the_old_size() {
    a_new_version_of_another_size_is_read_whole(14333, 11546);
}
