//! Directory listings. Reading a directory needs no open handle (the kernel
//! can skip opendir/releasedir round trips), and with readdirplus each entry
//! carries its attributes, so `ls -l` and `find` need no lookup per entry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};


use parking_lot::Mutex;

use super::core::{Attr, Entry, FsCore};
use super::error::{FsError, Result};
use super::inodes::{CONTROL_DIR, NodeKey, STATS_FILE};
use crate::dataset::Kind;

/// How long a listing is reused for the kernel's successive reads of it.
const REUSE: Duration = Duration::from_secs(1);
/// Listings kept at most (they are short-lived).
const KEPT: usize = 256;

/// A directory's children at one moment.
pub struct Listing {
    key: NodeKey,
    ino: u64,
    parent: u64,
    children: Vec<(String, Kind)>,
    /// The generation of the tag's view it was built from; a listing of an
    /// older version is never handed out again.
    generation: Option<u64>,
    taken: Instant,
}

/// One entry handed to the kernel.
pub struct DirEntry<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub ino: u64,
    /// Attributes, for readdirplus.
    pub entry: Option<Entry>,
}

#[derive(Default)]
pub struct Listings(Mutex<HashMap<u64, Arc<Listing>>>);

/// An inode number for an entry the kernel has not looked up: stable for
/// the name, and apart from the numbers handed out (high bit set).
fn unassigned_ino(key: &NodeKey) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish() | (1 << 63)
}

impl FsCore {
    /// The children of directory `ino`, loading its catalog if needed.
    pub fn listing(&self, ino: u64) -> Result<Arc<Listing>> {
        let key = self.inodes.key(ino).ok_or(FsError::StaleInode)?;
        let tag = match &key.tag {
            Some(name) => Some(self.dataset.tag(name)?),
            None => None,
        };
        let current = tag.as_ref().map(|t| t.generation());
        if let Some(listing) = self
            .listings
            .0
            .lock()
            .get(&ino)
            .filter(|l| l.taken.elapsed() < REUSE && l.generation == current)
        {
            return Ok(listing.clone());
        }
        let (children, generation) = match &tag {
            Some(tag) => {
                let (children, generation) = tag.list(&key.path).map_err(|e| FsError::from(e).on_inode())?;
                (children, Some(generation))
            }
            None if key.path.is_empty() => (
                std::iter::once((CONTROL_DIR.to_string(), Kind::Dir))
                    .chain(self.dataset.tag_names()?.into_iter().map(|n| (n, Kind::Dir)))
                    .collect(),
                None,
            ),
            None if *key.path == *CONTROL_DIR => (vec![(STATS_FILE.to_string(), Kind::File)], None),
            None => return Err(crate::dataset::Error::NotDir.into()),
        };
        let parent = key
            .parent()
            .and_then(|(p, _)| self.inodes.ino_of(&p))
            .unwrap_or(ino);
        let listing = Arc::new(Listing {
            key,
            ino,
            parent,
            children,
            generation,
            taken: Instant::now(),
        });
        let mut listings = self.listings.0.lock();
        if listings.len() >= KEPT {
            listings.clear();
        }
        listings.insert(ino, listing.clone());
        Ok(listing)
    }

    /// Feeds entries from `offset` to `add` until it refuses one (the
    /// kernel's buffer is full); `add` gets the offset of the next entry.
    /// With `plus`, entries carry attributes: known ones with the usual time
    /// to live, others (a size not fetched yet) with none, so that the
    /// kernel looks them up before use. Every such entry counts as a lookup.
    pub fn fill(
        &self,
        listing: &Listing,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(DirEntry<'_>, u64) -> bool,
    ) {
        let total = listing.children.len() + 2;
        for index in offset as usize..total {
            let next = index as u64 + 1;
            let (name, kind, key) = match index {
                0 => (".", Kind::Dir, None),
                1 => ("..", Kind::Dir, None),
                i => {
                    let (name, kind) = &listing.children[i - 2];
                    (name.as_str(), *kind, Some(listing.key.child(name)))
                }
            };
            let refused = match key {
                // The kernel keeps no entry for "." and "..".
                None => {
                    let ino = if index == 0 {
                        listing.ino
                    } else {
                        listing.parent
                    };
                    let entry = plus.then(|| placeholder(ino, kind, self.mounted_at));
                    add(
                        DirEntry {
                            name,
                            kind,
                            ino,
                            entry,
                        },
                        next,
                    )
                }
                Some(key) if plus => {
                    let entry = self.plus_entry(&key, kind);
                    let ino = entry.attr.ino;
                    let refused = add(
                        DirEntry {
                            name,
                            kind,
                            ino,
                            entry: Some(entry),
                        },
                        next,
                    );
                    if refused {
                        self.inodes.forget(ino, 1);
                    }
                    refused
                }
                Some(key) => {
                    let ino = self
                        .inodes
                        .ino_of(&key)
                        .unwrap_or_else(|| unassigned_ino(&key));
                    add(
                        DirEntry {
                            name,
                            kind,
                            ino,
                            entry: None,
                        },
                        next,
                    )
                }
            };
            if refused {
                break;
            }
        }
    }

    /// Attributes for readdirplus, from memory only.
    fn plus_entry(&self, key: &NodeKey, kind: Kind) -> Entry {
        match crate::wait::quick(|| self.stat(key)) {
            Ok(stat) => {
                let ino = self.inodes.lookup(key, Self::file_size(&stat));
                Self::entry(ino, key, stat)
            }
            _ => placeholder(self.inodes.lookup(key, None), kind, self.mounted_at),
        }
    }
}

/// Attributes the kernel must not trust: looked up again before any use.
fn placeholder(ino: u64, kind: Kind, mtime: std::time::SystemTime) -> Entry {
    Entry {
        attr: Attr {
            ino,
            kind,
            size: 0,
            mtime,
        },
        ttl: Duration::ZERO,
    }
}
