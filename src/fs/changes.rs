//! What the kernel must forget after a change on the server, or after a
//! file was found absent there.

use super::core::FsCore;
use super::inodes::NodeKey;
use super::kernel::Invalidation;
use crate::dataset::{Change, Kind};

impl<B: Send + Sync + 'static> FsCore<B> {
    /// The kernel caches to drop after a change on the server: for one file,
    /// its attributes; for a tag, removed names, every directory's listing
    /// and attributes, and every file's attributes (its size may differ; its
    /// pages are never shared with another version, see `kernel_files`).
    pub fn invalidations(&self, change: &Change) -> Vec<Invalidation> {
        let tag = change.tag.as_str();
        if let Some(file) = &change.file {
            let key = NodeKey {
                tag: Some(tag.into()),
                path: file.as_str().into(),
            };
            // A file the kernel has no inode for may be missing from a
            // listing it kept (a map found on the server): that listing goes.
            return match self.inodes.ino_of(&key) {
                Some(ino) => vec![Invalidation::Attributes(ino)],
                None => key
                    .parent()
                    .and_then(|(parent, _)| self.inodes.ino_of(&parent))
                    .map(Invalidation::Inode)
                    .into_iter()
                    .collect(),
            };
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

/// What the kernel must drop for a file found absent on the server: at
/// once, the file's attributes, its directory's listing and the
/// attributes of the directory's other entries (the documents generated
/// there no longer name it); and its name, which is sent without waiting,
/// since the kernel takes the directory's lock for it, which a lookup in
/// that directory (the very one that found the file absent, perhaps)
/// holds until it is answered.
pub struct Gone {
    pub now: Vec<Invalidation>,
    pub later: Vec<Invalidation>,
}

impl<B: Send + Sync + 'static> FsCore<B> {
    /// The invalidations for `change` when it is a file now absent from its
    /// tag's tree; `None` for any other change.
    pub fn gone(&self, change: &Change) -> Option<Gone> {
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
            return Some(Gone {
                now,
                later: Vec::new(),
            });
        };
        now.push(Invalidation::Inode(parent));
        for (sibling, _) in tag.entries_now(&dir.path).iter().flat_map(|e| e.iter()) {
            now.extend(
                self.inodes
                    .ino_of(&dir.child(sibling))
                    .map(Invalidation::Attributes),
            );
        }
        Some(Gone {
            now,
            later: vec![Invalidation::Entry {
                parent,
                name: name.to_string(),
            }],
        })
    }
}
