//! Directory listings. Reading a directory needs no open handle (the kernel
//! can skip opendir/releasedir round trips), and with readdirplus each entry
//! carries its attributes, so `ls -l` and `find` need no lookup per entry.
//! The offsets handed to the kernel carry a stamp of the listing they index
//! (a digest of its entries), so that the kernel's successive reads of one
//! directory stream all come from one listing, even when the tag changes
//! between them, and go on in a listing built again only when the directory
//! is the same.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::attr::Entry;
use super::inodes::NodeKey;
use crate::dataset::{Entries, Kind};

/// How long a listing outside any tag (the root, whose tags appear as they
/// are looked up) is reused for the kernel's successive reads of it. A
/// tag's listings are reused for as long as the tag's version is the same:
/// a directory of a million entries is read in hundreds of calls, and must
/// not be built again for each.
const REUSE: Duration = Duration::from_secs(1);
/// Listings kept at most, and entries in all of them at most: a pass over
/// one directory must find its listing again after a walk of the whole tag
/// has listed every other directory meanwhile (as one does after a new
/// version), so the count is far above a tag's directories, and memory is
/// bounded by the entries.
const KEPT: usize = 65_536;
const KEPT_ENTRIES: usize = 4 << 20;

/// A directory's children at one moment.
pub struct Listing {
    pub key: NodeKey,
    pub ino: u64,
    pub parent: u64,
    pub children: Entries,
    /// The version of the tag's tree it was built from (its generation,
    /// and the files found absent in it); a new pass never begins in a
    /// listing of an older version.
    pub version: Option<u64>,
    /// What its offsets carry: a digest of its entries (0 outside any
    /// tag). The kernel keeps a directory's entries with their offsets for
    /// as long as it likes, and asks to go on from one of them after the
    /// listing is dropped: a listing built again goes on from it only when
    /// its entries are the same.
    pub stamp: u64,
    pub taken: Instant,
}

impl Listing {
    pub fn new(
        key: NodeKey,
        ino: u64,
        parent: u64,
        children: Entries,
        version: Option<u64>,
    ) -> Listing {
        let stamp = match version {
            None => 0,
            Some(_) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                children.hash(&mut hasher);
                hasher.finish() % 0xFFFF_FFFF + 1
            }
        };
        Listing {
            key,
            ino,
            parent,
            children,
            version,
            stamp,
            taken: Instant::now(),
        }
    }
}

/// One entry handed to the kernel.
pub struct DirEntry<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub ino: u64,
    /// Attributes, for readdirplus.
    pub entry: Option<Entry>,
}

/// Bits of a directory offset that index the listing; the bits above hold
/// the listing's stamp. Offsets stay below 2^63 (a positive `off_t`).
const INDEX_BITS: u32 = 31;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// The offset of entry `index` of a listing stamped `stamp`.
pub fn offset(stamp: u64, index: u64) -> u64 {
    debug_assert!(index <= INDEX_MASK && stamp <= 0xFFFF_FFFF);
    (stamp << INDEX_BITS) | index
}

/// The stamp and the entry index an offset names.
pub fn split_offset(offset: u64) -> (u64, u64) {
    (offset >> INDEX_BITS, offset & INDEX_MASK)
}

/// Listings kept for the kernel's successive reads of a directory: the
/// current one of each directory, and older ones still being read, least
/// recently used dropped first.
pub struct Listings(Mutex<Kept>);

struct Kept {
    by_stamp: LruCache<(u64, u64), Arc<Listing>>,
    /// The stamp of each directory's newest listing kept, and the version
    /// it was built from.
    newest: HashMap<u64, (Option<u64>, u64)>,
    entries: usize,
    /// The root's newest listing, however long ago: what the kernel may
    /// still hold of the root.
    root: Option<Arc<Listing>>,
}

impl Kept {
    fn dropped(&mut self, (ino, stamp): (u64, u64), listing: &Listing) {
        self.entries -= listing.children.len();
        if self.newest.get(&ino).is_some_and(|&(_, s)| s == stamp) {
            self.newest.remove(&ino);
        }
    }
}

impl Default for Listings {
    fn default() -> Self {
        Listings(Mutex::new(Kept {
            by_stamp: LruCache::new(NonZeroUsize::new(KEPT).expect("not zero")),
            newest: HashMap::new(),
            entries: 0,
            root: None,
        }))
    }
}

impl Listings {
    /// The kept listing of `ino` for `version`, when there is one (a
    /// listing outside any tag only for a moment).
    pub fn recent(&self, ino: u64, version: Option<u64>) -> Option<Arc<Listing>> {
        let mut kept = self.0.lock();
        let &(built_for, stamp) = kept.newest.get(&ino)?;
        if built_for != version {
            return None;
        }
        kept.by_stamp
            .get(&(ino, stamp))
            .filter(|l| version.is_some() || l.taken.elapsed() < REUSE)
            .cloned()
    }

    /// The kept listing of `ino` stamped `stamp`.
    pub fn stamped(&self, ino: u64, stamp: u64) -> Option<Arc<Listing>> {
        self.0.lock().by_stamp.get(&(ino, stamp)).cloned()
    }

    /// Whether the root's listing handed to the kernel last lacks `name`
    /// (a tag first looked up); it is dropped then, so that the next read
    /// of the root builds it again. The kernel keeps what it was handed
    /// until told.
    pub fn root_lacks(&self, name: &str) -> bool {
        let mut kept = self.0.lock();
        let lacks = kept
            .root
            .as_ref()
            .is_some_and(|l| !l.children.iter().any(|(n, _)| n == name));
        if lacks {
            let root = kept.root.take().expect("just seen");
            let key = (root.ino, root.stamp);
            if let Some(old) = kept.by_stamp.pop(&key) {
                kept.dropped(key, &old);
            }
        }
        lacks
    }

    /// Drops every listing, as a long walk of other directories would.
    #[cfg(test)]
    pub fn forget_all(&self) {
        let mut kept = self.0.lock();
        kept.by_stamp.clear();
        kept.newest.clear();
        kept.entries = 0;
    }

    pub fn keep(&self, listing: Arc<Listing>) {
        let mut kept = self.0.lock();
        let key = (listing.ino, listing.stamp);
        let newest = (listing.version, listing.stamp);
        if listing.key == NodeKey::root() {
            kept.root = Some(listing.clone());
        }
        kept.entries += listing.children.len();
        if let Some((old_key, old)) = kept.by_stamp.push(key, listing) {
            kept.dropped(old_key, &old);
        }
        kept.newest.insert(key.0, newest);
        while kept.entries > KEPT_ENTRIES && kept.by_stamp.len() > 1 {
            let Some((old_key, old)) = kept.by_stamp.pop_lru() else {
                break;
            };
            kept.dropped(old_key, &old);
        }
    }
}

/// An inode number for an entry the kernel has not looked up: stable for
/// the name, and apart from the numbers handed out (high bit set).
pub fn unassigned_ino(key: &NodeKey) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish() | (1 << 63)
}
