//! Replies to the kernel: attributes as the kernel wants them, opens as
//! the core decided them (page cache, kept pages, passthrough), and the one
//! log line of a failed operation.

use fuser::{
    FileAttr, FileHandle, FileType, Generation, INodeNo, ReplyAttr, ReplyData, ReplyEntry,
    ReplyOpen,
};

use super::Inner;
use super::answers::open_flags;
use super::backing::Backing;
use super::errno::errno;
use crate::dataset::Kind;
use crate::fs::{Attr, Entry, FsError, Open, ReadMode, ReadReply};

impl Inner {
    pub(super) fn attr(&self, attr: &Attr) -> FileAttr {
        let (kind, perm, nlink) = match attr.kind {
            Kind::Dir => (FileType::Directory, 0o555, 2),
            Kind::File => (FileType::RegularFile, 0o444, 1),
            Kind::Symlink => (FileType::Symlink, 0o777, 1),
        };
        FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: attr.size.div_ceil(512).min(i64::MAX as u64),
            atime: attr.mtime,
            mtime: attr.mtime,
            ctime: attr.mtime,
            crtime: attr.mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The one log line of a failed operation on `ino`.
    pub(super) fn failed(&self, op: &str, ino: u64, error: &FsError) {
        self.failures.failed(op, &self.core.describe(ino), error);
    }

    pub(super) fn send_entry(
        &self,
        parent: u64,
        name: &str,
        result: Result<Entry, FsError>,
        reply: ReplyEntry,
    ) {
        match result {
            Ok(entry) => reply.entry(&entry.ttl, &self.attr(&entry.attr), Generation(0)),
            Err(e) => {
                self.failures.failed(
                    "lookup",
                    &format!("{}/{name}", self.core.describe(parent)),
                    &e,
                );
                reply.error(errno(&e))
            }
        }
    }

    pub(super) fn send_attr(&self, (ino, result): (u64, Result<Entry, FsError>), reply: ReplyAttr) {
        match result {
            Ok(entry) => reply.attr(&entry.ttl, &self.attr(&entry.attr)),
            Err(e) => {
                self.failed("getattr", ino, &e);
                reply.error(errno(&e))
            }
        }
    }

    pub(super) fn send_data(
        &self,
        (ino, result): (u64, Result<ReadReply, FsError>),
        reply: ReplyData,
    ) {
        match result {
            Ok(read) => reply.data(&read.bytes),
            Err(e) => {
                self.failed("read", ino, &e);
                reply.error(errno(&e))
            }
        }
    }

    /// Answers an open as the core decided it.
    pub(super) fn send_open(
        &self,
        (ino, result): (u64, Result<Open<Backing>, FsError>),
        reply: ReplyOpen,
    ) {
        let open = match result {
            Ok(open) => open,
            Err(e) => {
                self.failed("open", ino, &e);
                return reply.error(errno(&e));
            }
        };
        tracing::debug!(
            fh = open.fh,
            version = ?open.version,
            size = ?open.size,
            mode = ?open.mode,
            "opened"
        );
        let fh = FileHandle(open.fh);
        let flags = open_flags(&open.mode);
        match open.mode {
            ReadMode::Passthrough(backing) => backing.reply_open(reply, fh, flags),
            _ => reply.opened(fh, flags),
        }
    }

    pub(super) fn release(&self, fh: u64) {
        self.core.release(fh);
    }
}
