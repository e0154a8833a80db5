//! Backing files for FUSE passthrough (Linux 6.9+), registered on the
//! session's `/dev/fuse` by matvisfs itself, so that an open answered over
//! `/dev/fuse` (by fuser) and one answered over an io_uring queue can pass
//! an inode through to the same registration: the kernel accepts only one
//! backing file per inode while any of its opens is passed through.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use fuser::{BackingId, FileHandle, FopenFlags, ReplyOpen};
use rustix::ioctl::{Opcode, Setter, opcode};

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const BACKING_CLOSE: Opcode = opcode::write::<u32>(229, 2);

/// The session's `/dev/fuse`, once the session exists: registrations go
/// through it from either transport.
#[derive(Clone, Default)]
pub struct SessionDevice(Arc<OnceLock<Arc<OwnedFd>>>);

impl SessionDevice {
    /// Keeps a duplicate of the session's `/dev/fuse`.
    pub fn set(&self, fuse: BorrowedFd<'_>) -> io::Result<Arc<OwnedFd>> {
        let fuse = Arc::new(fuse.try_clone_to_owned()?);
        Ok(self.0.get_or_init(|| fuse).clone())
    }

    /// Registers `file` as a backing file of this session.
    pub(super) fn register(&self, file: &File) -> io::Result<Backing> {
        let fuse = self
            .0
            .get()
            .ok_or_else(|| io::Error::other("the session has not started"))?;
        Ok(Backing {
            id: BackingId::create_raw(fuse.as_fd(), file)?,
            fuse: fuse.clone(),
        })
    }
}

/// A registered backing file; closed when the core lets go of it (the
/// inode's last passed-through open released).
#[derive(Debug)]
pub struct Backing {
    fuse: Arc<OwnedFd>,
    id: u32,
}

impl Backing {
    /// The id an open's reply names.
    pub(super) fn id(&self) -> u32 {
        self.id
    }

    /// Answers `reply` passed through to this backing file, which stays
    /// registered: fuser's `BackingId` borrowed for the reply is handed back
    /// unclosed.
    pub(super) fn reply_open(&self, reply: ReplyOpen, fh: FileHandle, flags: FopenFlags) {
        // SAFETY: the id is registered on this session and is closed only
        // by `self`'s drop, after `into_raw` took it back from the wrapper.
        let wrapped = unsafe { reply.wrap_backing(self.id) };
        reply.opened_passthrough(fh, flags, &wrapped);
        let _ = wrapped.into_raw();
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: the ioctl takes a pointer to one u32, which `Setter` passes.
        let closed = unsafe {
            rustix::ioctl::ioctl(&*self.fuse, Setter::<BACKING_CLOSE, u32>::new(self.id))
        };
        if let Err(e) = closed {
            // The session is gone, and the registration with it.
            tracing::debug!(id = self.id, "closing a backing file: {e}");
        }
    }
}
