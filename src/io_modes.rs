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

use crate::digest::Sha256Digest;

/// How the kernel reads one open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through the page cache, by reads sent to the daemon.
    Caching,
    /// Every read sent to the daemon (`FOPEN_DIRECT_IO`): allowed beside
    /// caching opens, not beside passthrough ones.
    Direct,
    /// Straight from the backing file.
    Passthrough,
}

/// The content an open would pass through: the cached file's inode number,
/// and its digest when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    pub file_ino: u64,
    pub digest: Option<Sha256Digest>,
}

/// How to answer an open.
#[derive(Debug)]
pub enum Decision<Id> {
    /// Pass through to the backing file already registered for the inode.
    Reuse(Arc<Id>),
    /// Pass through to the new content: register it as a backing file.
    Register,
    /// Read through the daemon (caching or direct, as the open asked).
    Ordinary,
    /// The inode is passed through to other bytes still (the file changed
    /// on the server while it was open): the kernel allows no other open.
    Stale,
}

struct Backing<Id> {
    content: Content,
    id: Arc<Id>,
}

struct InodeOpens<Id> {
    caching: usize,
    passthrough: usize,
    backing: Option<Backing<Id>>,
}

impl<Id> Default for InodeOpens<Id> {
    fn default() -> Self {
        InodeOpens {
            caching: 0,
            passthrough: 0,
            backing: None,
        }
    }
}

/// The open files of every inode, by mode.
pub struct IoModes<Id> {
    handles: HashMap<u64, (u64, Mode)>,
    inodes: HashMap<u64, InodeOpens<Id>>,
}

impl<Id> Default for IoModes<Id> {
    fn default() -> Self {
        IoModes {
            handles: HashMap::new(),
            inodes: HashMap::new(),
        }
    }
}

impl<Id> IoModes<Id> {
    /// How to open `ino`. `content`: what could be passed through (None
    /// when the bytes are not cached, or passthrough is off); `digest`: the
    /// bytes the open is for, when known.
    pub fn decide(
        &self,
        ino: u64,
        content: Option<Content>,
        digest: Option<Sha256Digest>,
    ) -> Decision<Id> {
        let opens = self.inodes.get(&ino);
        if let Some(backing) = opens.and_then(|o| o.backing.as_ref()) {
            let same_file = content.is_some_and(|c| c.file_ino == backing.content.file_ino);
            let same_bytes = digest.is_some() && digest == backing.content.digest;
            return if same_file || same_bytes {
                Decision::Reuse(backing.id.clone())
            } else {
                Decision::Stale
            };
        }
        match content {
            Some(_) if opens.is_none_or(|o| o.caching == 0) => Decision::Register,
            _ => Decision::Ordinary,
        }
    }

    /// Records an open answered in `mode`; a passthrough open that
    /// registered a backing file gives it with its content.
    pub fn opened(
        &mut self,
        fh: u64,
        ino: u64,
        mode: Mode,
        registered: Option<(Content, Arc<Id>)>,
    ) {
        let opens = self.inodes.entry(ino).or_default();
        match mode {
            Mode::Caching => opens.caching += 1,
            Mode::Direct => {}
            Mode::Passthrough => opens.passthrough += 1,
        }
        if let Some((content, id)) = registered {
            opens.backing = Some(Backing { content, id });
        }
        self.handles.insert(fh, (ino, mode));
    }

    /// The kernel released `fh`.
    pub fn released(&mut self, fh: u64) {
        let Some((ino, mode)) = self.handles.remove(&fh) else {
            return;
        };
        let Some(opens) = self.inodes.get_mut(&ino) else {
            return;
        };
        match mode {
            Mode::Caching => opens.caching = opens.caching.saturating_sub(1),
            Mode::Direct => {}
            Mode::Passthrough => {
                opens.passthrough = opens.passthrough.saturating_sub(1);
                if opens.passthrough == 0 {
                    // The kernel dropped the backing file with its last open.
                    opens.backing = None;
                }
            }
        }
        if opens.caching == 0 && opens.passthrough == 0 {
            self.inodes.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(file_ino: u64, bytes: &[u8]) -> Content {
        Content {
            file_ino,
            digest: Some(Sha256Digest::of(bytes)),
        }
    }

    #[test]
    fn no_passthrough_while_a_caching_open_of_the_inode_is_live() {
        let mut modes = IoModes::<u32>::default();
        let cached = content(7, b"bytes");
        assert!(matches!(
            modes.decide(1, Some(cached), cached.digest),
            Decision::Register
        ));
        // Opened before the bytes were cached: the page cache reads it.
        modes.opened(10, 1, Mode::Caching, None);
        assert!(matches!(
            modes.decide(1, Some(cached), cached.digest),
            Decision::Ordinary
        ));
        // Other inodes are not concerned.
        assert!(matches!(
            modes.decide(2, Some(cached), None),
            Decision::Register
        ));
        // A direct open does not hold the inode.
        modes.opened(11, 1, Mode::Direct, None);
        modes.released(10);
        assert!(matches!(
            modes.decide(1, Some(cached), cached.digest),
            Decision::Register
        ));
    }

    #[test]
    fn every_open_of_a_passed_through_inode_is_passed_through_to_the_same_file() {
        let mut modes = IoModes::<u32>::default();
        let cached = content(7, b"bytes");
        modes.opened(10, 1, Mode::Passthrough, Some((cached, Arc::new(99))));
        // The same file, or the same bytes no longer cached (evicted while
        // open): the live backing file serves them.
        assert!(
            matches!(modes.decide(1, Some(cached), cached.digest), Decision::Reuse(id) if *id == 99)
        );
        assert!(matches!(modes.decide(1, None, cached.digest), Decision::Reuse(id) if *id == 99));
        // Other bytes (the file changed on the server), or unknown ones: no
        // open the kernel would accept serves them.
        let changed = content(8, b"changed");
        assert!(matches!(
            modes.decide(1, Some(changed), changed.digest),
            Decision::Stale
        ));
        assert!(matches!(modes.decide(1, None, None), Decision::Stale));
        modes.opened(11, 1, Mode::Passthrough, None);
        modes.released(10);
        assert!(matches!(
            modes.decide(1, None, cached.digest),
            Decision::Reuse(_)
        ));
        // The last passthrough open gone, the kernel dropped the backing file.
        modes.released(11);
        assert!(matches!(
            modes.decide(1, Some(changed), changed.digest),
            Decision::Register
        ));
        assert!(matches!(modes.decide(1, None, None), Decision::Ordinary));
    }

    #[test]
    fn releases_of_unknown_or_repeated_handles_are_harmless() {
        let mut modes = IoModes::<u32>::default();
        modes.released(5);
        modes.opened(10, 1, Mode::Caching, None);
        modes.released(10);
        modes.released(10);
        assert!(modes.inodes.is_empty() && modes.handles.is_empty());
    }
}
