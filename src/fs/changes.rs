//! What the kernel must forget after a change on the server.

use super::core::FsCore;
use super::inodes::NodeKey;
use super::kernel::Invalidation;
use crate::dataset::{Change, Kind};

impl FsCore {
    /// The kernel caches to drop after a change on the server: for one file,
    /// its attributes; for a tag, removed names, every directory's listing
    /// and attributes, and every file's attributes (its size may differ; its
    /// pages are never shared with another version, see `slots`).
    pub fn invalidations(&self, change: &Change) -> Vec<Invalidation> {
        let tag = change.tag.as_str();
        if let Some(file) = &change.file {
            let key = NodeKey {
                tag: Some(tag.into()),
                path: file.as_str().into(),
            };
            return self
                .inodes
                .ino_of(&key)
                .map(Invalidation::Attributes)
                .into_iter()
                .collect();
        }
        let Some(loaded) = self.dataset.loaded(tag) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (ino, key) in self.inodes.under_tag(tag) {
            if key.path.is_empty() {
                out.push(Invalidation::Inode(ino));
                continue;
            }
            match loaded.kind_now(&key.path) {
                Some(None) => {
                    if let Some((parent, name)) = key.parent() {
                        if let Some(parent) = self.inodes.ino_of(&parent) {
                            out.push(Invalidation::Entry {
                                parent,
                                name: name.to_string(),
                            });
                        }
                    }
                }
                Some(Some(Kind::File | Kind::Symlink)) => out.push(Invalidation::Attributes(ino)),
                // A directory, or not known without loading a catalog.
                Some(Some(Kind::Dir)) | None => out.push(Invalidation::Inode(ino)),
            }
        }
        out
    }
}
