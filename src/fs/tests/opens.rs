//! Each open decided once by the core: the version it is bound to, the
//! size the kernel holds, and how the kernel reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Errno, Harness, Session, TAG, errno, publish_a_catalog_change, small, texture_gets};
use crate::digest::Sha256Digest;
use crate::fs::ReadMode;

/// A texture whose catalog names its bytes, and a texture of another
/// source, read to make the mount revalidate the tag.
const PATH: &str = "ambientcg/512/Wood051/ao.png";

fn other_source(release: &matvisfs_sample::Release) -> String {
    release
        .textures()
        .find(|(p, _)| p.starts_with("gpuopen/"))
        .unwrap()
        .0
        .clone()
}

/// A texture of `PATH`'s source in another material: a change of their
/// catalog begins a version in which `PATH` is proven again.
const SAME_SOURCE: &str = "ambientcg/1k/Metal032/color.png";

#[test]
fn an_open_is_decided_with_its_version_size_and_pages_and_a_changed_file_gets_a_new_decision() {
    let mut release = small();
    let h = Harness::new(&release);
    let other = SAME_SOURCE;
    h.warm(&[PATH, other]);
    let s = h.session();
    let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
    let old = release.files[PATH].clone();

    let first = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!(first.version, Some(Sha256Digest::of(&old)));
    assert_eq!(first.size, Some(old.len() as u64));
    // The kernel holds no pages of it yet.
    assert!(matches!(
        first.mode,
        ReadMode::PageCache { keep_pages: false }
    ));
    assert_eq!(
        s.core.read(first.fh, 0, old.len() as u32, 0).unwrap().bytes,
        old
    );
    s.core.release(first.fh);

    // The same version again: the pages the first open filled are kept.
    let again = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!((again.version, again.size), (first.version, first.size));
    assert!(matches!(
        again.mode,
        ReadMode::PageCache { keep_pages: true }
    ));
    s.core.release(again.fh);

    // The server's copy changes; the mount revalidates the tag.
    let bigger = matvisfs_sample::images::png("republished", "ao", 32);
    release.replace_texture(PATH, bigger.clone());
    publish_a_catalog_change(&h, &s, &mut release, other);

    // A new decision: not the old version (the new one is not cached yet,
    // so its first read binds it), read past the page cache, since the
    // size of a version not known yet may not be the one the kernel holds.
    s.kernel.dropped.lock().clear();
    let changed = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert_ne!(changed.version, first.version);
    assert_ne!(changed.size, first.size);
    assert!(matches!(changed.mode, ReadMode::Direct));
    // The old size the kernel holds is dropped at the open, the version's
    // not known yet: `stat` of the open file asks the mount.
    assert!(s.kernel.dropped.lock().contains(&ino));
    assert_eq!(s.core.getattr(ino).unwrap().attr.size, bigger.len() as u64);
    s.kernel.dropped.lock().clear();
    let read = s.core.read(changed.fh, 0, bigger.len() as u32, 0).unwrap();
    assert_eq!(read.bytes, bigger);
    // Given two sizes, the kernel may hold the old one even though the new
    // one was given last (replies reordered): the read that found the
    // version drops it, so that `stat` shows the version's.
    assert!(s.kernel.dropped.lock().contains(&ino));
    s.core.release(changed.fh);

    // The next open is bound to the new version. The kernel was given two
    // sizes for the file this session, and may hold either (a reply that
    // gives it the new one is dropped when an invalidation crosses it):
    // its reads too reach the mount.
    let after = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!(after.version, Some(Sha256Digest::of(&bigger)));
    assert_eq!(after.size, Some(bigger.len() as u64));
    assert!(matches!(after.mode, ReadMode::Direct));
    s.core.release(after.fh);
}

#[test]
fn an_open_of_kept_pages_reads_its_own_version_once_they_are_gone_after_a_change() {
    let mut release = small();
    let h = Harness::new(&release);
    let other = other_source(&release);
    let evicted = release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/512/") && p.as_str() != PATH)
        .unwrap()
        .0
        .clone();
    h.warm(&[PATH, &evicted, &other]);
    let s = h.session();
    let mut kept = Vec::new();
    for path in [PATH, evicted.as_str()] {
        let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
        let bytes = release.files[path].clone();
        let first = s.core.open(ino, libc::O_RDONLY).unwrap();
        s.core.read(first.fh, 0, bytes.len() as u32, 0).unwrap();
        s.core.release(first.fh);
        // Its pages kept: the open holds no cached file.
        let open = s.core.open(ino, libc::O_RDONLY).unwrap();
        assert!(matches!(
            open.mode,
            ReadMode::PageCache { keep_pages: true }
        ));
        kept.push((open, bytes));
    }
    // Both change on the server, and the mount sees it.
    for (i, path) in [PATH, evicted.as_str()].into_iter().enumerate() {
        let new = matvisfs_sample::images::png("changed", "ao", 40 + i as u32);
        release.replace_texture(path, new);
    }
    publish_a_catalog_change(&h, &s, &mut release, &other);
    h.remote.clear_log();
    // The pages reclaimed, a read reaches the mount: the open's own version,
    // from the cache.
    let (open, old) = &kept[0];
    let read = s.core.read(open.fh, 0, old.len() as u32, 0).unwrap();
    assert_eq!(&read.bytes, old);
    assert_eq!(texture_gets(&h.remote), 0);
    // With its cached copy gone too, no byte of it is at hand: stale,
    // never the new version's.
    let (open, old) = &kept[1];
    s.core
        .dataset
        .context()
        .content
        .remove(&[Sha256Digest::of(old)]);
    let read = s.core.read(open.fh, 0, old.len() as u32, 0);
    assert!(
        matches!(read, Err(ref e) if errno(e.clone()) == Errno::ESTALE),
        "{read:?}"
    );
    for (open, _) in kept {
        s.core.release(open.fh);
    }
}

#[test]
fn the_pages_of_an_inode_the_kernel_forgot_are_not_counted_on() {
    let release = small();
    let h = Harness::new(&release);
    h.warm(&[PATH]);
    let s = h.session();
    let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
    let bytes = &release.files[PATH];
    let first = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!(
        &s.core
            .read(first.fh, 0, bytes.len() as u32, 0)
            .unwrap()
            .bytes,
        bytes
    );
    s.core.release(first.fh);
    // Evicted (memory pressure, `drop_caches`): its pages went with it.
    s.core.forget(ino, 1);
    let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
    let next = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert!(matches!(
        next.mode,
        ReadMode::PageCache { keep_pages: false }
    ));
    s.core.release(next.fh);
}

#[test]
fn the_statistics_are_read_past_the_page_cache() {
    let h = Harness::new(&small());
    let s = h.session();
    let ino = s.ino(".matvisfs/stats.json").unwrap();
    let open = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert!(matches!(open.mode, ReadMode::Direct));
    assert!(
        !s.core
            .read(open.fh, 0, 1 << 20, 0)
            .unwrap()
            .bytes
            .is_empty()
    );
    s.core.release(open.fh);
}

#[test]
fn a_cached_file_is_passed_through_once_registered_and_every_open_of_it_shares_the_backing() {
    let h = Harness::new(&small());
    h.warm(&[PATH]);
    let s = h.session_of::<u32>(false, &[TAG]);
    s.core.set_passthrough(true);
    let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
    let registered = AtomicUsize::new(0);
    let register = |_: &std::fs::File| {
        registered.fetch_add(1, Ordering::Relaxed);
        Ok(7)
    };
    let first = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, register)
        .unwrap();
    let second = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, register)
        .unwrap();
    let (ReadMode::Passthrough(a), ReadMode::Passthrough(b)) = (&first.mode, &second.mode) else {
        panic!("both passed through: {:?}, {:?}", first.mode, second.mode);
    };
    assert!(Arc::ptr_eq(a, b) && **a == 7);
    assert_eq!(registered.load(Ordering::Relaxed), 1);
    s.core.release(first.fh);
    s.core.release(second.fh);
    // The last passthrough open gone, the kernel dropped its reference to
    // the backing file but not the registration: the next open of the same
    // bytes is passed through to it.
    let third = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, register)
        .unwrap();
    assert!(matches!(&third.mode, ReadMode::Passthrough(c) if Arc::ptr_eq(a, c)));
    assert_eq!(registered.load(Ordering::Relaxed), 1);
    s.core.release(third.fh);
    // Once the kernel forgets the inode, the registration goes with it.
    s.core.forget(ino, 1);
    let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
    let fourth = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, register)
        .unwrap();
    assert!(matches!(fourth.mode, ReadMode::Passthrough(_)));
    assert_eq!(registered.load(Ordering::Relaxed), 2);
    s.core.release(fourth.fh);
}

#[test]
fn a_backing_file_the_front_end_cannot_register_leaves_the_open_on_the_page_cache() {
    let release = small();
    let h = Harness::new(&release);
    h.warm(&[PATH]);
    let s = h.session_of::<u32>(false, &[TAG]);
    s.core.set_passthrough(true);
    let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
    let tried = AtomicUsize::new(0);
    let refuse = |_: &std::fs::File| {
        tried.fetch_add(1, Ordering::Relaxed);
        Err(std::io::ErrorKind::PermissionDenied.into())
    };
    // The open stands, read through the page cache, bytes and all.
    let open = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, refuse)
        .unwrap();
    assert!(matches!(open.mode, ReadMode::PageCache { .. }));
    let bytes = &release.files[PATH];
    let read = s.core.read(open.fh, 0, bytes.len() as u32, 0).unwrap();
    assert_eq!(&read.bytes, bytes);
    s.core.release(open.fh);
    // Passthrough is withdrawn: no open asks again.
    let next = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, refuse)
        .unwrap();
    assert!(matches!(
        next.mode,
        ReadMode::PageCache { keep_pages: true }
    ));
    assert_eq!(tried.load(Ordering::Relaxed), 1);
    s.core.release(next.fh);
}

/// A session that gave the kernel a file's size, after which the server
/// published a larger version, whose digest the catalog names, and the
/// mount revalidated: the file's inode and its new bytes.
fn republished_after_its_size_was_given() -> (Harness, Session, u64, Vec<u8>) {
    const BAKED: &str = "ambientcg/1k/Rock064/color.png";
    let mut release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let ino = s.ino(&format!("{TAG}/{BAKED}")).unwrap();
    let old = release.files[BAKED].clone();
    assert_eq!(s.core.getattr(ino).unwrap().attr.size, old.len() as u64);

    let bigger = matvisfs_sample::images::png("republished", "color", 32);
    assert_ne!(bigger.len(), old.len());
    release.replace_texture(BAKED, bigger.clone());
    h.publish(&release);
    s.core.dataset.refresh(None);
    (h, s, ino, bigger)
}

/// The kernel was told a file's old size, and the new version's bytes are
/// known at open (the catalog's hash): the kernel is told again, but its
/// answer may be dropped when an invalidation crosses it, and a page-cache
/// read would end at the old size. The open reads past the page cache,
/// whole, and so do later ones: the kernel was given two sizes for the file
/// this session, and may hold either.
#[test]
fn an_open_whose_size_the_kernel_may_not_hold_reads_past_the_page_cache() {
    let (_h, s, ino, bigger) = republished_after_its_size_was_given();

    let open = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!(open.version, Some(Sha256Digest::of(&bigger)));
    assert!(matches!(open.mode, ReadMode::Direct));
    let mut bytes = Vec::new();
    loop {
        let read = s.core.read(open.fh, bytes.len() as u64, 4096, 0).unwrap();
        if read.bytes.is_empty() {
            break;
        }
        bytes.extend(read.bytes);
    }
    assert_eq!(bytes, bigger);
    s.core.release(open.fh);

    // Once given the new size, the kernel may still hold the old one (the
    // reply dropped): later opens too are read past the page cache.
    assert_eq!(s.core.getattr(ino).unwrap().attr.size, bigger.len() as u64);
    let again = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert!(matches!(again.mode, ReadMode::Direct));
    s.core.release(again.fh);
}

/// Two replies computed one after the other can reach the kernel in the
/// other order (each is taken when it arrives, no invalidation between
/// them): the kernel can hold a size given before the one given last. An
/// open of a file given more than one size drops the kernel's attributes,
/// so that `stat` of the open file shows its version's size, even when the
/// size given last was that one (over io_uring, `fstat` right after an open
/// showed the old size while the reads returned the new version whole).
#[test]
fn an_open_of_a_file_given_two_sizes_drops_the_size_the_kernel_holds() {
    let (_h, s, ino, bigger) = republished_after_its_size_was_given();
    // The new size given last; the reply with the old one may land after.
    assert_eq!(s.core.getattr(ino).unwrap().attr.size, bigger.len() as u64);
    s.kernel.dropped.lock().clear();

    for _ in 0..2 {
        let open = s.core.open(ino, libc::O_RDONLY).unwrap();
        assert_eq!(open.size, Some(bigger.len() as u64));
        assert!(
            s.kernel.dropped.lock().remove(&ino),
            "the kernel's size is dropped before the open returns"
        );
        assert_eq!(s.core.getattr(ino).unwrap().attr.size, bigger.len() as u64);
        s.core.release(open.fh);
    }

    // A file given one size all session keeps it across opens.
    let same = "ambientcg/512/Wood051/ao.png";
    let same_ino = s.ino(&format!("{TAG}/{same}")).unwrap();
    s.core.getattr(same_ino).unwrap();
    let open = s.core.open(same_ino, libc::O_RDONLY).unwrap();
    assert!(!s.kernel.dropped.lock().contains(&same_ino));
    s.core.release(open.fh);
}

/// A PNG larger than a download held in memory.
fn large_png() -> Vec<u8> {
    let mut bytes = matvisfs_sample::images::png("large", "ao", 4);
    bytes.resize(crate::store::STAGED_FILE_LIMIT as usize + 4321, 7);
    bytes
}

#[test]
fn a_large_file_not_cached_is_fetched_at_its_open_where_it_can_be_passed_through() {
    let mut release = small();
    let large = large_png();
    release.replace_texture(PATH, large.clone());
    let register = |_: &std::fs::File| Ok(7);
    // Fetched at the open only where it is passed through: not without
    // passthrough, nor for an `O_DIRECT` open.
    for (passthrough, flags, fetched) in [
        (true, libc::O_RDONLY, true),
        (false, libc::O_RDONLY, false),
        (true, libc::O_RDONLY | libc::O_DIRECT, false),
    ] {
        let h = Harness::new(&release);
        let s = h.session_of::<u32>(false, &[TAG]);
        s.core.set_passthrough(passthrough);
        let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
        let open = s.core.open_as_front_end(ino, flags, register).unwrap();
        let case = format!("passthrough {passthrough}, flags {flags:#o}");
        assert_eq!(open.version, Some(Sha256Digest::of(&large)), "{case}");
        assert_eq!(open.size, Some(large.len() as u64), "{case}");
        assert_eq!(
            matches!(open.mode, ReadMode::Passthrough(_)),
            fetched,
            "{case}: {:?}",
            open.mode
        );
        assert_eq!(h.remote.count("GET", PATH), usize::from(fetched), "{case}");
        assert_eq!(
            s.core.stats_json()["cache"]["opens_fetched"],
            u64::from(fetched),
            "{case}"
        );
        let read = s.core.read(open.fh, 0, large.len() as u32, 0).unwrap();
        assert!(read.bytes == large, "{case}");
        assert_eq!(
            h.remote.count("GET", PATH),
            1,
            "{case}: one download either way"
        );
        s.core.release(open.fh);
    }
}

#[test]
fn an_open_whose_fetch_fails_fails_as_its_read_would_have() {
    let mut release = small();
    release.replace_texture(PATH, large_png());
    let h = Harness::new(&release);
    let s = h.session_of::<u32>(false, &[TAG]);
    s.core.set_passthrough(true);
    let ino = s.ino(&format!("{TAG}/{PATH}")).unwrap();
    // The revalidation first, so that the failure is the download's.
    s.core.getattr(ino).unwrap();
    s.core.dataset().tag(TAG).unwrap().revalidate().unwrap();
    h.remote
        .fail_next(PATH, crate::remote::FetchError::Status(500));
    let failed = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, |_| Ok(7))
        .unwrap_err();
    assert_eq!(super::errno(failed), fuser::Errno::EIO);
    // Nothing is left of it: the next open fetches, and is passed through.
    let open = s
        .core
        .open_as_front_end(ino, libc::O_RDONLY, |_| Ok(7))
        .unwrap();
    assert!(matches!(open.mode, ReadMode::Passthrough(_)));
    s.core.release(open.fh);
}

#[test]
fn an_open_that_waited_for_another_versions_release_is_bound_to_the_tag_as_it_is_then() {
    // In the tier whose catalog names its bytes: each open is bound to
    // the version the tag names at the open.
    let path = "ambientcg/1k/Rock064/color.png";
    let mut release = small();
    let h = Harness::new(&release);
    h.warm(&[path, SAME_SOURCE]);
    let s = h.session();
    let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
    let old = s.core.open(ino, libc::O_RDONLY).unwrap();
    let mut republish = |name: &str, size: u32| {
        let bytes = matvisfs_sample::images::png(name, "color", size);
        release.replace_texture(path, bytes.clone());
        h.publish(&release);
        s.core.dataset.refresh(None);
        s.read(&format!("{TAG}/{SAME_SOURCE}")).unwrap();
        bytes
    };
    let second = republish("second", 32);
    assert_eq!(s.changes.lock().len(), 1, "the tag was revalidated");

    // An open of the second version waits for the old open's release...
    let opening = {
        let core = s.core.clone();
        std::thread::spawn(move || core.open(ino, libc::O_RDONLY))
    };
    let waiting = || s.core.stats_json()["opens"]["waiting_for_release"].clone();
    let started = std::time::Instant::now();
    while waiting() != 1 {
        assert!(!opening.is_finished(), "it did not wait");
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        std::thread::yield_now();
    }
    // ... meanwhile the tag moves on to a third.
    let third = republish("third", 48);
    assert_ne!(second, third);
    assert_eq!(s.changes.lock().len(), 2, "the tag was revalidated");
    s.core.release(old.fh);
    let opened = opening.join().unwrap().unwrap();
    assert_eq!(opened.version, Some(Sha256Digest::of(&third)));
    let read = s.core.read(opened.fh, 0, third.len() as u32, 0).unwrap();
    assert_eq!(read.bytes, third);
    s.core.release(opened.fh);
    let opens = &s.core.stats_json()["opens"];
    assert_eq!(opens["waited_for_release"], 1, "{opens}");
    assert_eq!(opens["waiting_for_release"], 0, "{opens}");
}
