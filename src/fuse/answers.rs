//! What the kernel is answered where the core has nothing to decide, and
//! which core call a read or an open is: one place for both transports
//! (`/dev/fuse` through fuser, and the io_uring ring).

use std::sync::atomic::Ordering;

use fuser::{AccessFlags, Errno, FileHandle, FopenFlags};

use super::Inner;
use crate::fs::{FsError, ReadMode, ReadReply};

/// Nothing to flush on a read-only filesystem: ENOSYS tells the kernel to
/// stop sending FLUSH on every close.
pub(super) const FLUSH: Errno = Errno::ENOSYS;

/// ENOSYS makes the kernel stop asking for extended attributes for the
/// rest of the mount, which saves round trips on every `ls -l`.
pub(super) const XATTR: Errno = Errno::ENOSYS;

/// Programs ask terminals questions of every file they open (`isatty`): no
/// file here is a terminal.
pub(super) const IOCTL: Errno = Errno::ENOTTY;

/// The numbers `statfs` shows: no blocks, no inodes, 4 KiB blocks, names
/// of up to 255 bytes.
pub(super) struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

pub(super) const STATFS: Statfs = Statfs {
    blocks: 0,
    bfree: 0,
    bavail: 0,
    files: 0,
    ffree: 0,
    bsize: 4096,
    namelen: 255,
    frsize: 4096,
};

/// The open flags of a file read as the core decided (a passthrough open
/// takes none: the kernel refuses page-cache flags on it).
pub(super) fn open_flags<B>(mode: &ReadMode<B>) -> FopenFlags {
    match mode {
        ReadMode::Direct => FopenFlags::FOPEN_DIRECT_IO,
        ReadMode::PageCache { keep_pages: true } => FopenFlags::FOPEN_KEEP_CACHE,
        ReadMode::PageCache { keep_pages: false } | ReadMode::Passthrough(_) => FopenFlags::empty(),
    }
}

impl Inner {
    /// Nothing here may be written.
    pub(super) fn access(&self, mask: AccessFlags) -> Result<(), Errno> {
        match mask.contains(AccessFlags::W_OK) {
            true => Err(Errno::EROFS),
            false => Ok(()),
        }
    }

    /// Directories are read without a handle: where the kernel allows, it
    /// skips this call (and releasedir) from now on.
    pub(super) fn opendir(&self) -> Result<FileHandle, Errno> {
        match self.no_opendir.load(Ordering::Relaxed) {
            true => Err(Errno::ENOSYS),
            false => Ok(FileHandle(0)),
        }
    }

    /// In no-open mode the first open is refused, after which the kernel
    /// sends no open from now on: reads name the inode.
    pub(super) fn open_refused(&self) -> Option<Errno> {
        self.no_open.then_some(Errno::ENOSYS)
    }

    /// A read of `fh` (or, in no-open mode, of the inode itself), made
    /// through an open with `flags`.
    pub(super) fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        flags: i32,
    ) -> Result<ReadReply, FsError> {
        match self.no_open && fh == 0 {
            true => self.core.read_inode(ino, offset, size, flags),
            false => self.core.read(fh, offset, size, flags),
        }
    }
}
