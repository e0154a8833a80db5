//! Files a catalog names that the server does not have, through the core:
//! found by a 404 or a complete tree listing, then absent for the rest of
//! the tag's version in the session; never by a failure of the network.

use fuser::Errno;

use super::{Harness, TAG, errno, name, parent};
use crate::dataset::{Change, Kind};
use crate::fs::Invalidation;
use crate::fs::inodes::NodeKey;
use crate::remote::FetchError;
use matvisfs_sample::{Quirks, Release, ReleaseSpec};

/// The small release with a 512 file of Rock064 never published and an
/// `opacity` channel gpuopen names but never uploaded.
fn with_missing() -> Release {
    let mut spec = ReleaseSpec::small(TAG);
    spec.quirks = Quirks {
        unpublished: vec![MISSING.into()],
        unuploaded_channels: vec![("gpuopen".into(), "opacity".into())],
        ..Quirks::default()
    };
    Release::generate(&spec)
}

const MISSING: &str = "ambientcg/512/Rock064/normal.png";
const UUID: &str = "0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01";

fn names(s: &super::Session, path: &str) -> Vec<String> {
    s.list(path).unwrap().into_iter().map(|(n, _)| n).collect()
}

fn missing_count(s: &super::Session) -> u64 {
    let stats = s.core.dataset().stats_json(std::time::SystemTime::now());
    stats["tags"][TAG]["missing"]["count"].as_u64().unwrap()
}

#[test]
fn a_404_makes_a_file_enoent_gone_from_listings_and_documents_for_the_session() {
    let release = with_missing();
    let mut h = Harness::new(&release);
    h.raw = false;
    let s = h.session();
    let dir = format!("{TAG}/{}", parent(MISSING));
    assert!(names(&s, &dir).contains(&"normal.png".to_string()));
    let mtlx = format!("{dir}/Rock064.mtlx");
    let before = String::from_utf8(s.read(&mtlx).unwrap()).unwrap();
    assert!(before.contains("normal.png"));
    let mtlx_ino = s.ino(&mtlx).unwrap();

    // The stat asks the server (HEAD), which has no such file.
    let path = format!("{TAG}/{MISSING}");
    assert_eq!(errno(s.size(&path).unwrap_err()), Errno::ENOENT);
    assert_eq!(h.remote.count("HEAD", MISSING), 1);
    assert_eq!(
        names(&s, &dir),
        [
            "Rock064.mtlx",
            "Rock064.usda",
            "ao.png",
            "color.png",
            "roughness.png"
        ]
    );
    let change = Change {
        tag: TAG.into(),
        file: Some(MISSING.into()),
    };
    assert!(s.changes.lock().contains(&change));
    // The kernel drops the directory's listing and its documents' sizes,
    // and the name without waiting.
    let gone = s.core.gone(&change).unwrap();
    let dir_ino = s.ino(&dir).unwrap();
    assert!(gone.now.contains(&Invalidation::Inode(dir_ino)));
    assert!(gone.now.contains(&Invalidation::Attributes(mtlx_ino)));
    assert_eq!(
        gone.later,
        [Invalidation::Entry {
            parent: dir_ino,
            name: name(MISSING).into()
        }]
    );
    // A new version of the generated document, without the file.
    let after = String::from_utf8(s.read(&mtlx).unwrap()).unwrap();
    assert!(!after.contains("normal.png") && after.contains("color.png"));
    assert_eq!(s.size(&mtlx).unwrap(), after.len() as u64);
    let usda = String::from_utf8(s.read(&format!("{dir}/Rock064.usda")).unwrap()).unwrap();
    assert!(!usda.contains("normal.png") && usda.contains("color.png"));

    // Known for the session: no second request, in any form.
    assert_eq!(errno(s.read(&path).unwrap_err()), Errno::ENOENT);
    assert_eq!(h.remote.count("HEAD", MISSING), 1);
    assert_eq!(h.remote.count("GET", MISSING), 0);
    assert_eq!(missing_count(&s), 1);

    // A channel never uploaded: the same.
    let opacity = format!("gpuopen/1k/{UUID}/opacity.png");
    assert_eq!(
        errno(s.read(&format!("{TAG}/{opacity}")).unwrap_err()),
        Errno::ENOENT
    );
    assert_eq!(h.remote.count("HEAD", &opacity), 1);
    let material = format!("{TAG}/gpuopen/1k/{UUID}");
    assert!(!names(&s, &material).contains(&"opacity.png".into()));
    // A download answered 404 too: a file whose size the catalog gave,
    // gone from the server after its open. The open file is stale (as any
    // inode whose path went), the name is gone.
    let color = format!("gpuopen/1k/{UUID}/color.png");
    let ino = s.ino(&format!("{TAG}/{color}")).unwrap();
    let opened = s.core.open(ino, libc::O_RDONLY).unwrap();
    h.remote.remove(TAG, &color);
    assert_eq!(
        errno(s.core.read(opened.fh, 0, 4096, 0).unwrap_err()),
        Errno::ESTALE
    );
    s.core.release(opened.fh);
    assert_eq!(h.remote.count("GET", &color), 1);
    assert_eq!(
        errno(s.read(&format!("{TAG}/{color}")).unwrap_err()),
        Errno::ENOENT
    );
    assert!(!names(&s, &material).contains(&"color.png".into()));
    assert_eq!(missing_count(&s), 3);

    // Not kept on disk: the next session asks again, and sees a file the
    // server gained meanwhile.
    h.remote.put(
        TAG,
        MISSING,
        release.files["ambientcg/1k/Rock064/normal.png"].clone(),
    );
    let s = h.session();
    assert!(s.size(&path).unwrap() > 0);
    assert!(names(&s, &dir).contains(&"normal.png".to_string()));
    assert_eq!(missing_count(&s), 0);
}

/// Reads `ino` whole as the kernel's page cache does in no-open mode: by
/// inode, a page at a time, until a short page.
fn read_inode(s: &super::Session, ino: u64) -> Result<Vec<u8>, crate::fs::FsError> {
    let mut out = Vec::new();
    loop {
        let chunk = s.core.read_inode(ino, out.len() as u64, 4096, 0)?;
        out.extend_from_slice(&chunk.bytes);
        if chunk.bytes.len() < 4096 {
            return Ok(out);
        }
    }
}

/// A session without opens (FUSE's no-open mode) over the release with a
/// file missing, its documents generated, and the missing file's directory
/// and the `.mtlx` there.
fn without_opens() -> (Harness, super::Session, String, String) {
    let mut h = Harness::new(&with_missing());
    h.raw = false;
    let s = h.session();
    s.core.set_no_open();
    let dir = format!("{TAG}/{}", parent(MISSING));
    let mtlx = format!("{dir}/Rock064.mtlx");
    (h, s, dir, mtlx)
}

/// Without opens (FUSE's no-open mode) an inode is bound to a version by
/// its first read until the kernel forgets it: a generated document that
/// changes gets a new inode, the name is dropped so that the kernel looks
/// it up again, and the old inode is dropped with its pages and stale
/// from then on, read or not. Textures beside it, unchanged, keep theirs.
#[test]
fn without_opens_a_document_that_changes_gets_a_new_inode_and_the_old_one_is_stale() {
    let (_h, s, dir, mtlx) = without_opens();
    let usda = format!("{dir}/Rock064.usda");
    let color = format!("{dir}/color.png");
    let (mtlx_ino, usda_ino, color_ino) = (
        s.ino(&mtlx).unwrap(),
        s.ino(&usda).unwrap(),
        s.ino(&color).unwrap(),
    );
    let before = read_inode(&s, mtlx_ino).unwrap();
    assert!(String::from_utf8_lossy(&before).contains("normal.png"));
    let before_size = s.core.getattr(mtlx_ino).unwrap().attr.size;
    assert_eq!(before_size, before.len() as u64);

    assert_eq!(
        errno(s.size(&format!("{TAG}/{MISSING}")).unwrap_err()),
        Errno::ENOENT
    );
    let change = Change {
        tag: TAG.into(),
        file: Some(MISSING.into()),
    };
    assert!(s.changes.lock().contains(&change));
    let sent = s.kernel.sent.lock().clone();
    let dir_ino = s.ino(&dir).unwrap();
    // The documents' old inodes go with their pages, before their names
    // (the kernel looks them up again).
    for (name, ino) in [("Rock064.mtlx", mtlx_ino), ("Rock064.usda", usda_ino)] {
        let entry = Invalidation::Entry {
            parent: dir_ino,
            name: name.into(),
        };
        let position = |i: &Invalidation| sent.iter().position(|s| s == i);
        assert!(
            position(&Invalidation::Inode(ino)) < position(&entry) && position(&entry).is_some(),
            "{sent:?}"
        );
    }
    assert!(sent.contains(&Invalidation::Inode(dir_ino)));
    assert!(sent.contains(&Invalidation::Attributes(color_ino)));

    // The old inodes, read before or not: neither version, rather than the
    // old one after the change was seen or the new one under the size the
    // kernel holds.
    for ino in [mtlx_ino, usda_ino] {
        assert_eq!(errno(read_inode(&s, ino).unwrap_err()), Errno::ESTALE);
        assert_eq!(errno(s.core.getattr(ino).unwrap_err()), Errno::ESTALE);
    }
    assert_ne!(before_size, 0);

    // The name now: a new inode, of the new document.
    let new_ino = s.ino(&mtlx).unwrap();
    assert_ne!(new_ino, mtlx_ino);
    let after = read_inode(&s, new_ino).unwrap();
    let text = String::from_utf8_lossy(&after);
    assert!(!text.contains("normal.png") && text.contains("color.png"));
    assert_eq!(
        s.core.getattr(new_ino).unwrap().attr.size,
        after.len() as u64
    );
    let usda_now = read_inode(&s, s.ino(&usda).unwrap()).unwrap();
    assert!(!String::from_utf8_lossy(&usda_now).contains("normal.png"));

    // A texture beside them did not change: the same inode, read as ever.
    assert_eq!(s.ino(&color).unwrap(), color_ino);
    assert_eq!(
        read_inode(&s, color_ino).unwrap(),
        with_missing().files[&color[TAG.len() + 1..]]
    );

    // Forgotten, the old inode is gone for good; the new one is read on.
    s.core.forget(mtlx_ino, u64::MAX);
    assert_eq!(errno(read_inode(&s, mtlx_ino).unwrap_err()), Errno::ESTALE);
    assert_eq!(read_inode(&s, new_ino).unwrap(), after);
}

/// Without opens, a file found changed by a read of its own inode (a new
/// download whose bytes are not the ones recorded) is dropped from the
/// kernel just after that read: the kernel holds the pages the read fills
/// locked until it is answered, so waiting for it to drop them would stall
/// the read. The old inode is stale, the name leads to the new bytes.
#[test]
fn without_opens_a_file_found_changed_by_its_own_read_is_dropped_after_it() {
    let release = super::small();
    let h = Harness::new(&release);
    let s = h.session();
    s.core.set_no_open();
    let path = "ambientcg/512/Rock064/color.png";
    let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
    let old = release.files[path].clone();
    assert_eq!(read_inode(&s, ino).unwrap(), old);
    // The kernel forgets the inode; the server answers other bytes for the
    // path, and the cached copy is gone.
    s.core.forget(ino, u64::MAX);
    let new = matvisfs_sample::images::png("changed", "color", 48);
    assert_ne!(new.len(), old.len());
    h.remote.put(TAG, path, new.clone());
    // Once the first download is written (in the background), it goes.
    let content = &s.core.dataset().context().content;
    content.flush();
    content.remove(&[crate::digest::Sha256Digest::of(&old)]);
    s.kernel.sent.lock().clear();
    let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
    let first = s.core.read_inode(ino, 0, 4096, 0);
    assert!(
        matches!(&first, Err(e) if errno(e.clone()) == Errno::ESTALE),
        "{first:?}"
    );
    assert!(
        s.kernel.later.lock().contains(&Invalidation::Inode(ino)),
        "{:?}",
        s.kernel.sent.lock()
    );
    let fresh = s.ino(&format!("{TAG}/{path}")).unwrap();
    assert_ne!(fresh, ino);
    assert_eq!(read_inode(&s, fresh).unwrap(), new);
    assert_eq!(errno(read_inode(&s, ino).unwrap_err()), Errno::ESTALE);
}

/// Without opens, a lookup whose stat crosses a change found by another
/// thread (a texture beside the document found missing) takes the stat
/// again: the entry it hands out is the path's new inode with the new
/// document's size, whose first read is whole, not `ESTALE`.
#[test]
fn without_opens_a_lookup_across_a_change_gives_the_new_inode_its_own_size() {
    let (_h, s, _dir, mtlx) = without_opens();
    let old_ino = s.ino(&mtlx).unwrap();
    let old = read_inode(&s, old_ino).unwrap();
    let key = mtlx
        .split('/')
        .fold(NodeKey::root(), |key, part| key.child(part));
    let mut stats_taken = 0;
    let entry = s
        .core
        .counted_entry(&key, |key| {
            let stat = s.core.stat(key);
            stats_taken += 1;
            if stats_taken == 1 {
                // Another thread finds a texture missing meanwhile.
                assert_eq!(
                    errno(s.size(&format!("{TAG}/{MISSING}")).unwrap_err()),
                    Errno::ENOENT
                );
            }
            stat
        })
        .unwrap();
    assert_ne!(entry.attr.ino, old_ino);
    let new = read_inode(&s, entry.attr.ino).unwrap();
    assert_ne!(new, old);
    assert_eq!(entry.attr.size, new.len() as u64);
    assert_eq!(errno(read_inode(&s, old_ino).unwrap_err()), Errno::ESTALE);
    assert_eq!(stats_taken, 2);
}

/// Without opens, the kernel reads an inode's page cache up to the size it
/// holds. An inode whose first read finds a version of another size than
/// the kernel was given (a document changed between a lookup's size and
/// the inode it named, the change found by another thread) is stale, not
/// read padded or cut to the old size; its name leads to a new inode.
/// Found by a break-it run: a `.mtlx` read as 2,151 bytes with NULs, the
/// size of the version before.
#[test]
fn without_opens_a_first_read_of_another_size_than_given_is_stale() {
    let (_h, s, dir, mtlx) = without_opens();
    let ino = s.ino(&mtlx).unwrap();
    let size = s.core.getattr(ino).unwrap().attr.size;
    // The kernel holds the size of another version (the reply that gave
    // it crossed the change).
    s.core.files.report_size(ino, Some(size + 100));
    s.kernel.sent.lock().clear();
    assert_eq!(errno(read_inode(&s, ino).unwrap_err()), Errno::ESTALE);
    let dir_ino = s.ino(&dir).unwrap();
    assert!(
        s.kernel.later.lock().contains(&Invalidation::Entry {
            parent: dir_ino,
            name: "Rock064.mtlx".into()
        }),
        "{:?}",
        s.kernel.sent.lock()
    );
    assert_eq!(errno(read_inode(&s, ino).unwrap_err()), Errno::ESTALE);
    let fresh = s.ino(&mtlx).unwrap();
    assert_ne!(fresh, ino);
    let bytes = read_inode(&s, fresh).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert!(String::from_utf8_lossy(&bytes).ends_with("</materialx>\n"));
}

#[test]
fn a_network_failure_is_eio_and_never_makes_a_file_absent() {
    let release = with_missing();
    let h = Harness::new(&release);
    let s = h.session();
    let present = "ambientcg/512/Rock064/color.png";
    for error in [
        FetchError::Network("connection refused".into()),
        FetchError::Status(503),
        FetchError::Status(403),
    ] {
        h.remote.fail_next(present, error);
        assert_eq!(
            errno(s.size(&format!("{TAG}/{present}")).unwrap_err()),
            Errno::EIO
        );
    }
    assert_eq!(missing_count(&s), 0);
    assert!(names(&s, &format!("{TAG}/{}", parent(present))).contains(&"color.png".into()));
    assert_eq!(
        s.read(&format!("{TAG}/{present}")).unwrap(),
        release.files[present]
    );
}

#[test]
fn a_complete_tree_listing_proves_absence_without_a_request_and_a_cut_one_does_not() {
    let release = with_missing();
    for cut in [false, true] {
        let h = Harness::new(&release);
        h.remote.enable_hub(&[TAG]);
        if cut {
            h.remote.cut_tree_listings();
        }
        let s = h.session();
        // The size of a sibling lists the material's directory.
        let sibling = format!("{TAG}/ambientcg/512/Rock064/color.png");
        assert!(s.size(&sibling).unwrap() > 0);
        let listed = names(&s, &format!("{TAG}/{}", parent(MISSING)));
        let path = format!("{TAG}/{MISSING}");
        assert_eq!(errno(s.size(&path).unwrap_err()), Errno::ENOENT);
        if cut {
            // Cut short, the listing proves nothing: a HEAD did.
            assert!(listed.contains(&"normal.png".to_string()));
            assert_eq!(h.remote.count("HEAD", MISSING), 1);
        } else {
            assert!(!listed.contains(&"normal.png".to_string()), "{listed:?}");
            assert_eq!(h.remote.count("HEAD", MISSING), 0);
        }
        assert_eq!(missing_count(&s), 1);
        let kinds = s.list(&format!("{TAG}/{}", parent(MISSING))).unwrap();
        assert!(kinds.iter().all(|(_, kind)| *kind == Kind::File));
    }
}

#[test]
fn a_map_the_manifest_implies_but_the_server_lacks_leaves_the_tree_as_it_was() {
    // Bakes before the `mtlx` key: every source's map is looked for.
    let mut spec = ReleaseSpec::small(TAG);
    spec.quirks.no_mtlx_key = true;
    let release = Release::generate(&spec);
    let mut h = Harness::new(&release);
    h.raw = false;
    let s = h.session();
    // Listing a material needs to know whether its source has a map.
    assert_eq!(
        names(&s, &format!("{TAG}/ambientcg/1k/Rock064")),
        [
            "Rock064.mtlx",
            "Rock064.usda",
            "ao.png",
            "color.png",
            "normal.png",
            "roughness.png"
        ]
    );
    assert_eq!(h.remote.count("GET", "ambientcg-mtlx.json"), 1);
    assert_eq!(
        errno(s.size(&format!("{TAG}/ambientcg-mtlx.json")).unwrap_err()),
        Errno::ENOENT
    );
    assert_eq!(h.remote.count("GET", "ambientcg-mtlx.json"), 1);
    // gpuopen has one: its upstream documents, and its name in the tag.
    let root = names(&s, TAG);
    assert!(!root.contains(&"gpuopen-mtlx.json".to_string()), "{root:?}");
    let material = names(&s, &format!("{TAG}/gpuopen/1k/{UUID}"));
    assert!(
        material.contains(&format!("{UUID}.upstream.mtlx")),
        "{material:?}"
    );
    let root = names(&s, TAG);
    assert!(root.contains(&"gpuopen-mtlx.json".to_string()), "{root:?}");
    assert!(
        !root.contains(&"ambientcg-mtlx.json".to_string()),
        "{root:?}"
    );
    assert_eq!(missing_count(&s), 1);
}
