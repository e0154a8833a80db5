//! Directory listings: the children of a directory from the current view
//! of its tag, and the entries handed to the kernel (with attributes, for
//! readdirplus, so `ls -l` and `find` need no lookup per entry).

use std::sync::Arc;

use super::attr::Entry;
use super::core::{FsCore, LATEST};
use super::error::{FsError, Result};
use super::inodes::{CONTROL_DIR, NodeKey, STATS_FILE};
use super::listing::{DirEntry, Listing, split_offset};
use crate::dataset::Kind;

/// A size the kernel refuses in an entry (above `i64::MAX`, see
/// `fuse_valid_size` in Linux's `fs/fuse/fuse_i.h`).
pub const REFUSED_SIZE: u64 = u64::MAX;

impl<B: Send + Sync + 'static> FsCore<B> {
    /// The children of directory `ino` for a read from `offset`, loading
    /// its catalog if needed: from the start, the current listing; further
    /// on, the listing the offset was handed out from, so that one pass over
    /// a directory never mixes two versions of it (`ESTALE` when that
    /// listing is gone and the directory changed since).
    pub fn listing(&self, ino: u64, offset: u64) -> Result<Arc<Listing>> {
        let (stamp, _) = split_offset(offset);
        if stamp != 0 {
            if let Some(listing) = self.listings.stamped(ino, stamp) {
                return Ok(listing);
            }
        }
        let listing = self.current_listing(ino)?;
        if stamp != 0 && listing.stamp != stamp {
            return Err(FsError::ListingChanged);
        }
        Ok(listing)
    }

    fn current_listing(&self, ino: u64) -> Result<Arc<Listing>> {
        let key = self.inodes.key(ino).ok_or(FsError::StaleInode)?;
        let tag = match &key.tag {
            Some(name) => Some(self.dataset.tag(name)?),
            None => None,
        };
        let current = tag.as_ref().map(|t| t.listing_version());
        if let Some(listing) = self.listings.recent(ino, current) {
            return Ok(listing);
        }
        let (children, version) = match &tag {
            Some(tag) => {
                let (children, version) = tag
                    .list(&key.path)
                    .map_err(|e| FsError::from(e).on_inode())?;
                (children, Some(version))
            }
            None if key.path.is_empty() => (
                std::iter::once((CONTROL_DIR.to_string(), Kind::Dir))
                    .chain(
                        self.dataset
                            .latest()?
                            .map(|_| (LATEST.to_string(), Kind::Symlink)),
                    )
                    .chain(
                        self.dataset
                            .tag_names()?
                            .into_iter()
                            .filter(|n| n != LATEST)
                            .map(|n| (n, Kind::Dir)),
                    )
                    .collect(),
                None,
            ),
            None if *key.path == *CONTROL_DIR => {
                ([(STATS_FILE, Kind::File)].into_iter().collect(), None)
            }
            None => return Err(crate::dataset::Error::NotDir.into()),
        };
        let parent = key
            .parent()
            .and_then(|(p, _)| self.inodes.ino_of(&p))
            .unwrap_or(ino);
        let listing = Arc::new(Listing::new(key, ino, parent, children, version));
        self.listings.keep(listing.clone());
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
        let stamp = listing.stamp;
        let (_, start) = split_offset(offset);
        for index in start as usize..total {
            let next = super::listing::offset(stamp, index as u64 + 1);
            let (name, kind, key) = match index {
                0 => (".", Kind::Dir, None),
                1 => ("..", Kind::Dir, None),
                i => {
                    let (name, kind) = listing.children.get(i - 2).expect("within the listing");
                    (name, kind, Some(listing.key.child(name)))
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
                    let entry = plus.then(|| Entry::placeholder(ino, kind, self.mounted_at));
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
                        .unwrap_or_else(|| super::listing::unassigned_ino(&key));
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
        match self.counted_entry(key, |key| crate::wait::quick(|| self.stat(key))) {
            Ok(entry) => entry,
            _ if kind == Kind::File => self.placeholder(key),
            _ => Entry::placeholder(self.inodes.lookup(key), kind, self.mounted_at),
        }
    }

    /// An entry for a file whose size is not known yet. A placeholder's
    /// size is no size for the kernel to trust: it applies an entry's
    /// attributes even with no time to live. Where the kernel holds no
    /// inode of that number, it takes the placeholder (size 0) and the
    /// file is marked first as one whose size the kernel may hold wrong,
    /// so that its opens read past the page cache (a page-cache read would
    /// end at the placeholder's size, were the reply that corrects it
    /// crossed by an invalidation). Where the kernel may hold the inode,
    /// with files of it open, the placeholder would change their size
    /// under them: the entry gets a size the kernel refuses, so that it
    /// lists the name without taking the entry (it creates or updates no
    /// inode, and forgets the lookup at once, one more request) and looks
    /// the name up before any use. In no-open mode every read goes
    /// through the page cache, so every placeholder is refused.
    fn placeholder(&self, key: &NodeKey) -> Entry {
        let no_open = self.no_open();
        if !no_open {
            self.files.give_placeholder(self.inodes.number(key));
        }
        let (ino, held) = self.inodes.lookup_held(key);
        let mut entry = Entry::placeholder(ino, Kind::File, self.mounted_at);
        if held || no_open {
            entry.attr.size = REFUSED_SIZE;
        }
        entry
    }
}
