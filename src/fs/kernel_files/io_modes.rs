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

/// How to answer an open.
#[derive(Debug)]
pub enum Decision<Id> {
    /// Pass through to the backing file already registered for the inode.
    Reuse(Arc<Id>),
    /// Pass through to the cached file offered: register it as a backing file.
    Register,
    /// Read by the mount.
    Ordinary,
    /// The inode is passed through to other bytes still (the file changed
    /// on the server while it was open): the kernel allows no other open.
    Stale,
}

/// The backing file an inode is passed through to, while it has such opens.
struct Backing<Id> {
    file_ino: u64,
    digest: Option<Sha256Digest>,
    id: Arc<Id>,
    opens: usize,
}

struct InodeOpens<Id> {
    direct: usize,
    backing: Option<Backing<Id>>,
}

/// How a recorded open is read.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// By the mount (`FOPEN_DIRECT_IO`). The kernel lets such an open
    /// beside a passthrough one, until a program maps it shared
    /// (`FUSE_DIRECT_IO_ALLOW_MMAP`): that puts the inode in caching mode
    /// until the open is released, and a passthrough open would then fail
    /// in the kernel. The mount does not see mappings, so no open of an
    /// inode is passed through while one of it is read by the mount.
    Direct,
    Passthrough,
}

/// The open files of every inode that constrain further opens.
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
    /// How to open `ino`: `cached_file` is the inode number of the cached
    /// file that could be passed through (None when the bytes are not
    /// cached, or passthrough is off); `digest` the bytes the open is for,
    /// when known.
    pub fn decide(
        &self,
        ino: u64,
        cached_file: Option<u64>,
        digest: Option<Sha256Digest>,
    ) -> Decision<Id> {
        let opens = self.inodes.get(&ino);
        if let Some(backing) = opens.and_then(|o| o.backing.as_ref()) {
            let same_file = cached_file == Some(backing.file_ino);
            let same_bytes = digest.is_some() && digest == backing.digest;
            return if same_file || same_bytes {
                Decision::Reuse(backing.id.clone())
            } else {
                Decision::Stale
            };
        }
        match cached_file {
            Some(_) if opens.is_none_or(|o| o.direct == 0) => Decision::Register,
            _ => Decision::Ordinary,
        }
    }

    /// Records an open read by the mount.
    pub fn opened_direct(&mut self, fh: u64, ino: u64) {
        self.inode(ino).direct += 1;
        self.handles.insert(fh, (ino, Mode::Direct));
    }

    /// Records an open passed through to the inode's registered backing
    /// file ([`Decision::Reuse`]).
    pub fn reused(&mut self, fh: u64, ino: u64) {
        if let Some(backing) = self.inode(ino).backing.as_mut() {
            backing.opens += 1;
            self.handles.insert(fh, (ino, Mode::Passthrough));
        }
    }

    /// Records an open passed through to a newly registered backing file.
    pub fn registered(
        &mut self,
        fh: u64,
        ino: u64,
        cached_file: u64,
        digest: Option<Sha256Digest>,
        id: Arc<Id>,
    ) {
        self.inode(ino).backing = Some(Backing {
            file_ino: cached_file,
            digest,
            id,
            opens: 1,
        });
        self.handles.insert(fh, (ino, Mode::Passthrough));
    }

    fn inode(&mut self, ino: u64) -> &mut InodeOpens<Id> {
        self.inodes.entry(ino).or_insert_with(|| InodeOpens {
            direct: 0,
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
        match mode {
            Mode::Direct => opens.direct = opens.direct.saturating_sub(1),
            Mode::Passthrough => {
                if let Some(backing) = opens.backing.as_mut() {
                    backing.opens = backing.opens.saturating_sub(1);
                    if backing.opens == 0 {
                        // The kernel dropped the backing file with its last open.
                        opens.backing = None;
                    }
                }
            }
        }
        if opens.direct == 0 && opens.backing.is_none() {
            self.inodes.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> Option<Sha256Digest> {
        Some(Sha256Digest::of(bytes))
    }

    #[test]
    fn no_passthrough_while_an_open_of_the_inode_is_read_by_the_mount() {
        let mut modes = IoModes::<u32>::default();
        let bytes = digest(b"bytes");
        assert!(matches!(
            modes.decide(1, Some(7), bytes),
            Decision::Register
        ));
        // Opened before the bytes were cached: the mount reads it (and a
        // program may map it shared).
        modes.opened_direct(10, 1);
        assert!(matches!(
            modes.decide(1, Some(7), bytes),
            Decision::Ordinary
        ));
        // Other inodes are not concerned.
        assert!(matches!(modes.decide(2, Some(7), None), Decision::Register));
        modes.released(10);
        assert!(matches!(
            modes.decide(1, Some(7), bytes),
            Decision::Register
        ));
    }

    #[test]
    fn every_open_of_a_passed_through_inode_is_passed_through_to_the_same_file() {
        let mut modes = IoModes::<u32>::default();
        let bytes = digest(b"bytes");
        modes.registered(10, 1, 7, bytes, Arc::new(99));
        // The same file, or the same bytes no longer cached (evicted while
        // open): the live backing file serves them.
        assert!(matches!(modes.decide(1, Some(7), bytes), Decision::Reuse(id) if *id == 99));
        assert!(matches!(modes.decide(1, None, bytes), Decision::Reuse(id) if *id == 99));
        // Other bytes (the file changed on the server), or unknown ones: no
        // open the kernel would accept serves them.
        let changed = digest(b"changed");
        assert!(matches!(modes.decide(1, Some(8), changed), Decision::Stale));
        assert!(matches!(modes.decide(1, None, None), Decision::Stale));
        modes.reused(11, 1);
        modes.released(10);
        assert!(matches!(modes.decide(1, None, bytes), Decision::Reuse(_)));
        // The last passthrough open gone, the kernel dropped the backing file.
        modes.released(11);
        assert!(matches!(
            modes.decide(1, Some(8), changed),
            Decision::Register
        ));
        assert!(matches!(modes.decide(1, None, None), Decision::Ordinary));
    }

    #[test]
    fn releases_of_unknown_or_repeated_handles_are_harmless() {
        let mut modes = IoModes::<u32>::default();
        modes.released(5);
        modes.opened_direct(10, 1);
        modes.released(10);
        modes.released(10);
        assert!(modes.inodes.is_empty() && modes.handles.is_empty());
    }
}
