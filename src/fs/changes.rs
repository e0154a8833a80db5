//! What the kernel must forget after a change on the server, or after a
//! file was found absent there.

use super::core::FsCore;
use super::inodes::NodeKey;
use super::kernel::{Invalidation, Invalidations};
use crate::dataset::{Change, Kind};

impl<B: Send + Sync + 'static> FsCore<B> {
    /// The kernel caches to drop after a change on the server: for one file,
    /// its attributes; for a tag, removed names (and their attributes),
    /// every directory's listing and attributes, and every file's
    /// attributes (its size may differ; its pages are never shared with
    /// another version, see `kernel_files`).
    pub fn invalidations(&self, change: &Change) -> Invalidations {
        let tag = change.tag.as_str();
        if let Some(file) = &change.file {
            let key = NodeKey {
                tag: Some(tag.into()),
                path: file.as_str().into(),
            };
            let mut out = Invalidations::default();
            match self.inodes.ino_of(&key) {
                Some(ino) => self.file_changed(ino, &key, &mut out),
                // A file the kernel has no inode for may be missing from a
                // listing it kept (a map found on the server): that
                // listing goes.
                None => out.now.extend(
                    key.parent()
                        .and_then(|(parent, _)| self.inodes.ino_of(&parent))
                        .map(Invalidation::Inode),
                ),
            }
            return out;
        }
        let Some(loaded) = self.dataset.loaded(tag) else {
            return Invalidations::default();
        };
        let mut out = Invalidations::default();
        for (ino, key) in self.inodes.under_tag(tag) {
            if key.path.is_empty() {
                out.now.push(Invalidation::Inode(ino));
                continue;
            }
            match loaded.kind_now(&key.path) {
                Some(None) => {
                    out.now.push(Invalidation::Attributes(ino));
                    if let Some((parent, name)) = key.parent() {
                        if let Some(parent) = self.inodes.ino_of(&parent) {
                            out.later.push(Invalidation::Entry {
                                parent,
                                name: name.to_string(),
                            });
                        }
                    }
                }
                Some(Some(Kind::File)) => self.file_changed(ino, &key, &mut out),
                Some(Some(Kind::Symlink)) => out.now.push(Invalidation::Attributes(ino)),
                // A directory, or not known without loading a catalog.
                Some(Some(Kind::Dir)) | None => out.now.push(Invalidation::Inode(ino)),
            }
        }
        out
    }
}

impl<B: Send + Sync + 'static> FsCore<B> {
    /// The invalidations for `change` when it is a file now absent from its
    /// tag's tree (`None` for any other change): at once, the file's
    /// attributes, its directory's listing and the attributes of the
    /// directory's other entries (the documents generated there no longer
    /// name it); its name later (the lookup that found the file absent,
    /// perhaps, holds the directory).
    pub fn gone(&self, change: &Change) -> Option<Invalidations> {
        let file = change.file.as_deref()?;
        let tag = self.dataset.loaded(&change.tag)?;
        if tag.kind_now(file) != Some(None) {
            return None;
        }
        let key = NodeKey {
            tag: Some(change.tag.as_str().into()),
            path: file.into(),
        };
        let (dir, name) = key.parent()?;
        let mut now: Vec<Invalidation> = self
            .inodes
            .ino_of(&key)
            .map(Invalidation::Attributes)
            .into_iter()
            .collect();
        let Some(parent) = self.inodes.ino_of(&dir) else {
            return Some(Invalidations {
                now,
                later: Vec::new(),
            });
        };
        now.push(Invalidation::Inode(parent));
        let mut out = Invalidations {
            now,
            later: vec![Invalidation::Entry {
                parent,
                name: name.to_string(),
            }],
        };
        for (sibling, _) in tag.entries_now(&dir.path).iter().flat_map(|e| e.iter()) {
            let key = dir.child(sibling);
            let Some(ino) = self.inodes.ino_of(&key) else {
                continue;
            };
            match tag.is_generated_now(&key.path) {
                true => self.file_changed(ino, &key, &mut out),
                false => out.now.push(Invalidation::Attributes(ino)),
            }
        }
        Some(out)
    }

    /// `ino`, the file at `key`, may now be other bytes. Its open files
    /// keep their version, and the kernel is told to ask its size again.
    /// Without opens (FUSE's no-open mode) nothing binds a reader to a
    /// version but the inode itself: the path gets a new inode, which the
    /// kernel learns at its next lookup of the name (dropped for that),
    /// and the old one is dropped with its pages now and fails every read
    /// and `stat` with `ESTALE` from then on, as open files of an old
    /// version do: no reader gets another version under the inode it
    /// began with, and none gets the old one once the change was seen.
    pub(super) fn file_changed(&self, ino: u64, key: &NodeKey, out: &mut Invalidations) {
        if !self.no_open() {
            out.now.push(Invalidation::Attributes(ino));
            return;
        }
        let parent = key
            .parent()
            .and_then(|(dir, name)| Some((self.inodes.ino_of(&dir)?, name)));
        if !self.retire(ino) {
            return;
        }
        // Found by a read of the inode itself, whose pages the kernel holds
        // locked until it is answered: they go just after it.
        match super::core::reading(ino) {
            true => out.later.push(Invalidation::Inode(ino)),
            false => out.now.push(Invalidation::Inode(ino)),
        }
        if let Some((parent, name)) = parent {
            out.later.push(Invalidation::Entry {
                parent,
                name: name.to_string(),
            });
        }
    }
}
