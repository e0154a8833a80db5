//! The kernel's rule for FUSE passthrough (Linux 6.9+): the open files of
//! one inode are either read through the page cache ("caching" opens) or
//! all passed through to one backing file, never both at once. An open that
//! breaks the rule fails in the kernel with EIO, so every open is decided
//! here against what is still open.
//!
//! "Still open" is what the daemon has opened and not yet seen released. It
//! covers what the kernel has open: the kernel drops an open's mode before
//! it sends RELEASE (which may come late, after readahead replies).

use std::collections::HashMap;
use std::sync::Arc;

use lru::LruCache;

use crate::digest::Sha256Digest;

/// At most this many backing files stay registered past their inode's
/// last open (each holds its cached file open: an inode of the cache's
/// filesystem and a kernel file).
const KEPT_REGISTRATIONS: usize = 4096;

/// How to answer an open.
#[derive(Debug)]
pub enum Decision<Id> {
    /// Pass through to the backing file already registered for the inode
    /// (by its open files, or kept from earlier ones).
    Reuse(Arc<Id>),
    /// Pass through to the cached file offered: register it as a backing file.
    Register,
    /// Read through the daemon (page cache or direct, as the open asked):
    /// the bytes are not cached, a caching open is live, or the kernel
    /// holds the version's pages, which cost an open less than registering
    /// a backing file.
    Ordinary,
    /// The inode is passed through to other bytes still (the file changed
    /// on the server while it was open): the kernel allows no other open.
    Stale,
}

/// The backing file an inode is passed through to, while it has such opens.
struct Backing<Id> {
    file_ino: u64,
    digest: Option<Sha256Digest>,
    size: u64,
    id: Arc<Id>,
    opens: usize,
}

impl<Id> Backing<Id> {
    /// Whether it holds the bytes an open is for: the same version, or
    /// where a version is not known, the same cached file (which the
    /// registration holds open, so its inode number is not reused).
    fn serves(&self, cached_file: Option<u64>, digest: Option<Sha256Digest>) -> bool {
        match (digest, self.digest) {
            (Some(wanted), Some(held)) => wanted == held,
            _ => cached_file == Some(self.file_ino),
        }
    }
}

struct InodeOpens<Id> {
    caching: usize,
    backing: Option<Backing<Id>>,
}

/// How a recorded open is read.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `kept`: opened to read the pages the kernel held.
    Caching {
        kept: bool,
    },
    /// Past the page cache (`FOPEN_DIRECT_IO`). The kernel lets it beside
    /// caching opens, but a shared mapping of it puts the inode in its
    /// caching mode, so it counts as one of those; and the pages such a
    /// mapping reads are of its own version.
    Direct,
    Passthrough,
}

/// The open files of every inode that constrain further opens, and the
/// version of the pages the kernel may keep for each inode.
pub struct IoModes<Id> {
    handles: HashMap<u64, (u64, Mode)>,
    inodes: HashMap<u64, InodeOpens<Id>>,
    /// The version whose pages an inode's page cache holds (they outlive
    /// the opens that read them): a later open of that version may keep
    /// them, and reads them rather than a backing file; an open of any
    /// other version must not keep them.
    paged: HashMap<u64, Sha256Digest>,
    /// Backing files still registered after the last open of their inode
    /// closed (the kernel dropped the inode's reference, not the
    /// registration): a later open of the same bytes is passed through
    /// without opening nor registering anything. Kept until the kernel
    /// forgets the inode, an open of another version, or the bounds.
    kept: LruCache<u64, Backing<Id>>,
    kept_bytes: u64,
    /// The most bytes of kept registrations: the space of a cached file
    /// evicted while registered is freed only once the registration goes.
    kept_bytes_bound: u64,
}

impl<Id> IoModes<Id> {
    /// Keeping at most `kept_bytes_bound` bytes of registrations past their
    /// inode's last open.
    pub fn new(kept_bytes_bound: u64) -> Self {
        IoModes {
            handles: HashMap::new(),
            inodes: HashMap::new(),
            paged: HashMap::new(),
            kept: LruCache::unbounded(),
            kept_bytes: 0,
            kept_bytes_bound,
        }
    }

    /// How to open `ino`: `passable` whether the open may be passed
    /// through at all (passthrough on, bytes not made in memory, not
    /// `O_DIRECT`); `cached_file` the inode number of the cached file at
    /// hand to pass through, if any; `digest` the bytes the open is for,
    /// when known. A registration kept for other bytes goes.
    pub fn decide(
        &mut self,
        ino: u64,
        passable: bool,
        cached_file: Option<u64>,
        digest: Option<Sha256Digest>,
    ) -> Decision<Id> {
        let opens = self.inodes.get(&ino);
        if let Some(backing) = opens.and_then(|o| o.backing.as_ref()) {
            return match backing.serves(cached_file, digest) {
                true => Decision::Reuse(backing.id.clone()),
                false => Decision::Stale,
            };
        }
        let caching = opens.is_some_and(|o| o.caching > 0);
        let kept = self.kept.peek(&ino);
        match kept.map(|kept| (kept.serves(cached_file, digest), kept.id.clone())) {
            Some((true, id)) if passable && !caching => return Decision::Reuse(id),
            Some((false, _)) => drop(self.take_kept(ino)),
            Some((true, _)) | None => {}
        }
        match cached_file {
            Some(_) if passable && !caching && !self.may_keep_pages(ino, digest) => {
                Decision::Register
            }
            _ => Decision::Ordinary,
        }
    }

    /// The version whose bytes the kernel reads for `ino` without the
    /// daemon: the backing file its open files are passed through to
    /// (`None` when that version is not known), else a registration kept,
    /// else the pages it kept.
    pub fn version_held(&self, ino: u64) -> Option<Sha256Digest> {
        if let Some(backing) = self.inodes.get(&ino).and_then(|o| o.backing.as_ref()) {
            return backing.digest;
        }
        match self.kept.peek(&ino) {
            Some(kept) if kept.digest.is_some() => kept.digest,
            _ => self.paged.get(&ino).copied(),
        }
    }

    /// Whether an open of `version` may keep the pages the kernel holds
    /// for `ino`.
    fn may_keep_pages(&self, ino: u64, version: Option<Sha256Digest>) -> bool {
        version.is_some() && self.paged.get(&ino) == version.as_ref()
    }

    /// Records an open read through the page cache, bound to `version`
    /// (`None`: not known until its first read), and returns whether it
    /// keeps the pages the kernel holds. Without kept pages, the kernel
    /// dropped the inode's pages when it opened it, and the pages are
    /// counted on again once a read fills them ([`IoModes::read_caching`]):
    /// an open that reads nothing through the page cache (`O_DIRECT`, a
    /// read that failed) leaves none to keep.
    pub fn opened_caching(&mut self, fh: u64, ino: u64, version: Option<Sha256Digest>) -> bool {
        let kept = self.may_keep_pages(ino, version);
        self.inode(ino).caching += 1;
        self.handles.insert(fh, (ino, Mode::Caching { kept }));
        if !kept {
            self.paged.remove(&ino);
        }
        kept
    }

    /// Records an open read past the page cache ([`Mode::Direct`]). The
    /// inode's pages are no longer counted on: a mapping of this open may
    /// fill them with its version, not known yet.
    pub fn opened_direct(&mut self, fh: u64, ino: u64) {
        self.inode(ino).caching += 1;
        self.handles.insert(fh, (ino, Mode::Direct));
        self.paged.remove(&ino);
    }

    /// A read through the page cache returned bytes of `version`. Through
    /// an open that kept the pages, it shows some of them gone (reclaimed
    /// under memory pressure): they are no longer counted on, and the
    /// inode's next open of cached bytes is passed through, which reads
    /// nothing through the daemon.
    pub fn read_caching(&mut self, fh: u64, version: Sha256Digest) {
        match self.handles.get(&fh) {
            Some((ino, Mode::Caching { kept: false })) => {
                self.paged.insert(*ino, version);
            }
            Some((ino, Mode::Caching { kept: true })) => {
                self.paged.remove(ino);
            }
            _ => {}
        }
    }

    /// Records an open passed through to the inode's registered backing
    /// file ([`Decision::Reuse`]): live, or kept from earlier opens.
    pub fn reused(&mut self, fh: u64, ino: u64) {
        let kept = self.take_kept(ino);
        let opens = self.inode(ino);
        match (opens.backing.as_mut(), kept) {
            (Some(backing), _) => backing.opens += 1,
            (None, Some(kept)) => opens.backing = Some(Backing { opens: 1, ..kept }),
            (None, None) => return,
        }
        self.handles.insert(fh, (ino, Mode::Passthrough));
    }

    /// Records an open passed through to a newly registered backing file,
    /// of `size` bytes.
    pub fn registered(
        &mut self,
        fh: u64,
        ino: u64,
        cached_file: u64,
        digest: Option<Sha256Digest>,
        size: u64,
        id: Arc<Id>,
    ) {
        self.take_kept(ino);
        self.inode(ino).backing = Some(Backing {
            file_ino: cached_file,
            digest,
            size,
            id,
            opens: 1,
        });
        self.handles.insert(fh, (ino, Mode::Passthrough));
    }

    /// The kernel dropped its inode for `ino`, and the pages with it; a
    /// registration kept for it would serve no inode.
    pub fn forgotten(&mut self, ino: u64) {
        self.paged.remove(&ino);
        self.take_kept(ino);
    }

    /// Keeps the registration of `ino`'s last passthrough open, within
    /// the bounds (the least recently used go first).
    fn keep(&mut self, ino: u64, backing: Backing<Id>) {
        self.kept_bytes += backing.size;
        if let Some((_, replaced)) = self.kept.push(ino, backing) {
            self.kept_bytes -= replaced.size;
        }
        while self.kept.len() > KEPT_REGISTRATIONS || self.kept_bytes > self.kept_bytes_bound {
            let Some((_, gone)) = self.kept.pop_lru() else {
                break;
            };
            self.kept_bytes -= gone.size;
        }
    }

    /// The registration kept for `ino`, no longer kept (dropped, unless
    /// the caller keeps it: its last reference closes it).
    fn take_kept(&mut self, ino: u64) -> Option<Backing<Id>> {
        let kept = self.kept.pop(&ino)?;
        self.kept_bytes -= kept.size;
        Some(kept)
    }

    fn inode(&mut self, ino: u64) -> &mut InodeOpens<Id> {
        self.inodes.entry(ino).or_insert_with(|| InodeOpens {
            caching: 0,
            backing: None,
        })
    }

    /// The kernel released `fh`.
    pub fn released(&mut self, fh: u64) {
        let Some((ino, mode)) = self.handles.remove(&fh) else {
            return;
        };
        let Some(opens) = self.inodes.get_mut(&ino) else {
            return;
        };
        let mut last = None;
        match mode {
            Mode::Caching { .. } | Mode::Direct => opens.caching = opens.caching.saturating_sub(1),
            Mode::Passthrough => {
                if let Some(backing) = opens.backing.as_mut() {
                    backing.opens = backing.opens.saturating_sub(1);
                    if backing.opens == 0 {
                        // The kernel dropped the inode's reference to the
                        // backing file with its last open; the registration
                        // stays until closed.
                        last = opens.backing.take();
                    }
                }
            }
        }
        if opens.caching == 0 && opens.backing.is_none() {
            self.inodes.remove(&ino);
        }
        if let Some(backing) = last {
            self.keep(ino, backing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_kept_only_for_the_version_that_filled_them() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let (a, b) = (digest(b"a"), digest(b"b"));
        assert!(!modes.may_keep_pages(1, a));
        // Opened, nothing read: no pages to keep.
        modes.opened_caching(9, 1, a);
        modes.released(9);
        assert!(!modes.may_keep_pages(1, a));
        modes.opened_caching(10, 1, a);
        modes.read_caching(10, a.unwrap());
        modes.released(10);
        assert!(modes.may_keep_pages(1, a));
        assert!(!modes.may_keep_pages(1, b) && !modes.may_keep_pages(1, None));
        // Opened before its version was known: no pages are kept until a
        // read says what they are.
        modes.opened_caching(11, 1, None);
        assert!(!modes.may_keep_pages(1, a));
        modes.read_caching(11, b.unwrap());
        modes.released(11);
        assert!(modes.may_keep_pages(1, b));
    }

    const BOUND: u64 = 1 << 20;

    fn digest(bytes: &[u8]) -> Option<Sha256Digest> {
        Some(Sha256Digest::of(bytes))
    }

    #[test]
    fn kept_pages_are_read_rather_than_a_backing_file_until_some_are_found_gone() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let (a, b) = (digest(b"a"), digest(b"b"));
        // Read first through the page cache (its bytes were not cached).
        assert!(!modes.opened_caching(10, 1, None));
        modes.read_caching(10, a.unwrap());
        modes.released(10);
        // Cached since: an open of that version reads the pages kept.
        assert!(matches!(
            modes.decide(1, true, Some(7), a),
            Decision::Ordinary
        ));
        assert!(modes.opened_caching(11, 1, a));
        modes.released(11);
        // Another version is passed through; the pages still hold `a`.
        assert!(matches!(
            modes.decide(1, true, Some(8), b),
            Decision::Register
        ));
        assert!(matches!(
            modes.decide(1, true, Some(7), a),
            Decision::Ordinary
        ));
        // A read reached the daemon through an open that kept the pages:
        // some were gone, and the next open passes the cached file through.
        assert!(modes.opened_caching(12, 1, a));
        modes.read_caching(12, a.unwrap());
        modes.released(12);
        assert!(matches!(
            modes.decide(1, true, Some(7), a),
            Decision::Register
        ));
        // An open that did not keep them fills them: counted on again.
        assert!(!modes.opened_caching(13, 1, a));
        modes.read_caching(13, a.unwrap());
        modes.released(13);
        assert!(matches!(
            modes.decide(1, true, Some(7), a),
            Decision::Ordinary
        ));
    }

    #[test]
    fn no_passthrough_while_an_open_past_the_page_cache_is_live_and_its_pages_are_not_kept() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let a = digest(b"a");
        modes.opened_caching(10, 1, a);
        modes.read_caching(10, a.unwrap());
        modes.released(10);
        // An open past the page cache (its version not known yet) may be
        // mapped, which puts the inode in the kernel's caching mode.
        modes.opened_direct(11, 1);
        assert!(matches!(
            modes.decide(1, true, Some(7), a),
            Decision::Ordinary
        ));
        modes.released(11);
        // Its mapping may have filled pages of another version.
        assert!(!modes.opened_caching(12, 1, a));
        modes.released(12);
        modes.opened_direct(13, 1);
        modes.released(13);
        assert!(matches!(
            modes.decide(1, true, Some(7), None),
            Decision::Register
        ));
        assert!(modes.inodes.is_empty() && modes.handles.is_empty());
    }

    #[test]
    fn pages_are_not_counted_on_once_the_kernel_forgot_the_inode() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let a = digest(b"a");
        modes.opened_caching(10, 1, a);
        modes.opened_caching(11, 2, a);
        modes.read_caching(10, a.unwrap());
        modes.read_caching(11, a.unwrap());
        modes.released(10);
        modes.released(11);
        modes.forgotten(1);
        assert!(matches!(
            modes.decide(1, true, Some(7), a),
            Decision::Register
        ));
        assert!(matches!(
            modes.decide(2, true, Some(7), a),
            Decision::Ordinary
        ));
        assert_eq!(modes.paged.len(), 1);
    }

    #[test]
    fn no_passthrough_while_a_caching_open_of_the_inode_is_live() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let bytes = digest(b"bytes");
        assert!(matches!(
            modes.decide(1, true, Some(7), bytes),
            Decision::Register
        ));
        // Opened before the bytes were cached: the page cache reads it.
        modes.opened_caching(10, 1, None);
        assert!(matches!(
            modes.decide(1, true, Some(7), bytes),
            Decision::Ordinary
        ));
        // Other inodes are not concerned.
        assert!(matches!(
            modes.decide(2, true, Some(7), None),
            Decision::Register
        ));
        modes.released(10);
        assert!(matches!(
            modes.decide(1, true, Some(7), bytes),
            Decision::Register
        ));
    }

    #[test]
    fn every_open_of_a_passed_through_inode_is_passed_through_to_the_same_file() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let bytes = digest(b"bytes");
        modes.registered(10, 1, 7, bytes, 5, Arc::new(99));
        // The same file, or the same bytes no longer cached (evicted while
        // open): the live backing file serves them.
        assert!(matches!(modes.decide(1, true, Some(7), bytes), Decision::Reuse(id) if *id == 99));
        assert!(matches!(modes.decide(1, true, None, bytes), Decision::Reuse(id) if *id == 99));
        // Other bytes (the file changed on the server), or unknown ones: no
        // open the kernel would accept serves them.
        let changed = digest(b"changed");
        assert!(matches!(
            modes.decide(1, true, Some(8), changed),
            Decision::Stale
        ));
        assert!(matches!(modes.decide(1, true, None, None), Decision::Stale));
        modes.reused(11, 1);
        modes.released(10);
        assert!(matches!(
            modes.decide(1, true, None, bytes),
            Decision::Reuse(_)
        ));
        // The last passthrough open gone, the kernel dropped the backing file.
        modes.released(11);
        assert!(matches!(
            modes.decide(1, true, Some(8), changed),
            Decision::Register
        ));
        assert!(matches!(
            modes.decide(1, true, None, None),
            Decision::Ordinary
        ));
    }

    #[test]
    fn a_registration_outlives_the_last_open_for_the_same_bytes_only() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let (a, b) = (digest(b"a"), digest(b"b"));
        modes.registered(10, 1, 7, a, 5, Arc::new(99));
        modes.released(10);
        assert_eq!(modes.version_held(1), a);
        // The same bytes, whether at hand or not: the kept registration.
        assert!(matches!(modes.decide(1, true, None, a), Decision::Reuse(id) if *id == 99));
        modes.reused(11, 1);
        assert!(matches!(modes.decide(1, true, None, a), Decision::Reuse(id) if *id == 99));
        modes.released(11);
        // Not for an open that may not be passed through (O_DIRECT), nor
        // beside an open of the page cache; kept for later all the same.
        assert!(matches!(
            modes.decide(1, false, None, a),
            Decision::Ordinary
        ));
        modes.opened_direct(12, 1);
        assert!(matches!(
            modes.decide(1, true, Some(7), a),
            Decision::Ordinary
        ));
        modes.released(12);
        assert!(matches!(modes.decide(1, true, None, a), Decision::Reuse(_)));
        // Another version: the registration goes.
        assert!(matches!(
            modes.decide(1, true, Some(8), b),
            Decision::Register
        ));
        assert!(modes.kept.is_empty() && modes.kept_bytes == 0);
        assert!(matches!(modes.decide(1, true, None, a), Decision::Ordinary));
        // And with the inode, once the kernel forgets it.
        modes.registered(13, 2, 7, a, 5, Arc::new(98));
        modes.released(13);
        modes.forgotten(2);
        assert_eq!(modes.version_held(2), None);
        assert!(matches!(
            modes.decide(2, true, Some(7), a),
            Decision::Register
        ));
    }

    #[test]
    fn kept_registrations_are_bounded_in_number_and_bytes() {
        let mut modes = IoModes::<u32>::new(BOUND);
        let a = digest(b"a");
        let count = KEPT_REGISTRATIONS as u64 + 10;
        for ino in 1..=count {
            modes.registered(ino, ino, ino, a, 1, Arc::new(0));
            modes.released(ino);
        }
        assert_eq!(modes.kept.len(), KEPT_REGISTRATIONS);
        // The least recently used went.
        assert_eq!(modes.version_held(1), None);
        assert_eq!(modes.version_held(count), a);
        let big = BOUND / 2 + 1;
        modes.registered(1, 1, 1, a, big, Arc::new(0));
        modes.released(1);
        modes.registered(2, 2, 2, a, big, Arc::new(0));
        modes.released(2);
        assert!(modes.kept_bytes <= BOUND);
        assert_eq!((modes.version_held(1), modes.version_held(2)), (None, a));
    }

    #[test]
    fn releases_of_unknown_or_repeated_handles_are_harmless() {
        let mut modes = IoModes::<u32>::new(BOUND);
        modes.released(5);
        modes.opened_caching(10, 1, None);
        modes.released(10);
        modes.released(10);
        assert!(modes.inodes.is_empty() && modes.handles.is_empty());
    }
}
