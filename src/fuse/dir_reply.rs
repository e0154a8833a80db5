//! Directory replies: the two kinds the kernel asks for, which fuser does
//! not unify, and a node's kind as the kernel names it.

use fuser::{Errno, FileType, ReplyDirectory, ReplyDirectoryPlus};

use crate::dataset::Kind;

/// The two kinds of directory reply, which fuser does not unify.
pub(super) trait DirReply: Send + 'static {
    fn ok(self);
    fn error(self, errno: Errno);
}

impl DirReply for ReplyDirectory {
    fn ok(self) {
        ReplyDirectory::ok(self)
    }
    fn error(self, errno: Errno) {
        ReplyDirectory::error(self, errno)
    }
}

impl DirReply for ReplyDirectoryPlus {
    fn ok(self) {
        ReplyDirectoryPlus::ok(self)
    }
    fn error(self, errno: Errno) {
        ReplyDirectoryPlus::error(self, errno)
    }
}

pub(super) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}
