//! Directory listings. Reading a directory needs no open handle (the kernel
//! can skip opendir/releasedir round trips), and with readdirplus each entry
//! carries its attributes, so `ls -l` and `find` need no lookup per entry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// Listings kept at most, and entries in all of them at most.
const KEPT: usize = 256;
const KEPT_ENTRIES: usize = 4 << 20;

/// A directory's children at one moment.
pub struct Listing {
    pub key: NodeKey,
    pub ino: u64,
    pub parent: u64,
    pub children: Entries,
    /// The generation of the tag's view it was built from; a listing of an
    /// older version is never handed out again.
    pub generation: Option<u64>,
    pub taken: Instant,
}

/// One entry handed to the kernel.
pub struct DirEntry<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub ino: u64,
    /// Attributes, for readdirplus.
    pub entry: Option<Entry>,
}

/// Listings kept for the kernel's successive reads of a directory.
#[derive(Default)]
pub struct Listings(Mutex<HashMap<u64, Arc<Listing>>>);

impl Listings {
    /// The kept listing of `ino`, when still the current one.
    pub fn recent(&self, ino: u64, generation: Option<u64>) -> Option<Arc<Listing>> {
        self.0
            .lock()
            .get(&ino)
            .filter(|l| {
                l.generation == generation && (generation.is_some() || l.taken.elapsed() < REUSE)
            })
            .cloned()
    }

    pub fn keep(&self, listing: Arc<Listing>) {
        let mut listings = self.0.lock();
        let entries: usize = listings.values().map(|l| l.children.len()).sum();
        if listings.len() >= KEPT || entries + listing.children.len() > KEPT_ENTRIES {
            listings.clear();
        }
        listings.insert(listing.ino, listing);
    }
}

/// An inode number for an entry the kernel has not looked up: stable for
/// the name, and apart from the numbers handed out (high bit set).
pub fn unassigned_ino(key: &NodeKey) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish() | (1 << 63)
}
