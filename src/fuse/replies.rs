//! Replies to the kernel: attributes as the kernel wants them, how each
//! open file is read (page cache, kept pages, passthrough), and the one log
//! line of a failed operation.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::{
    FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyData,
    ReplyEntry, ReplyOpen,
};

use super::Inner;
use super::errno::errno;
use super::io_modes::Decision;
use crate::dataset::Kind;
use crate::fs::{Attr, Entry, FsError, OpenReply, ReadReply};

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
            blocks: attr.size.div_ceil(512),
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
        (ino, fh, result): (u64, u64, Result<ReadReply, FsError>),
        reply: ReplyData,
    ) {
        match result {
            Ok(read) => {
                if let Some(version) = read.version {
                    self.io_modes.lock().read_caching(fh, version);
                }
                reply.data(&read.bytes)
            }
            Err(e) => {
                self.failed("read", ino, &e);
                reply.error(errno(&e))
            }
        }
    }

    pub(super) fn send_open(
        &self,
        (ino, result): (u64, Result<OpenReply, FsError>),
        reply: ReplyOpen,
    ) {
        let opened = match result {
            Ok(opened) => opened,
            Err(e) => {
                self.failed("open", ino, &e);
                return reply.error(errno(&e));
            }
        };
        let fh = opened.fh;
        if opened.volatile {
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        }
        // The cached file that could be passed through, by its inode number.
        let cached = opened
            .content
            .as_ref()
            .filter(|_| self.passthrough.load(Ordering::Relaxed))
            .and_then(|file| Some((file, file.metadata().ok()?.ino())));
        // Decided and recorded under one lock: concurrent opens of an inode
        // agree on its mode.
        let mut modes = self.io_modes.lock();
        match modes.decide(ino, cached.map(|(_, i)| i), opened.version) {
            Decision::Reuse(id) => {
                modes.reused(fh, ino);
                // The kernel refuses page-cache flags on a passthrough open.
                return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
            }
            Decision::Register => {
                let (file, file_ino) = cached.expect("a cached file to register");
                match reply.open_backing(file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        modes.registered(fh, ino, file_ino, opened.version, id.clone());
                        return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                    }
                    Err(e) => {
                        self.passthrough.store(false, Ordering::Relaxed);
                        tracing::info!(
                            "FUSE passthrough is not available ({e}); cached files are read through matvisfs"
                        );
                    }
                }
            }
            Decision::Stale => {
                drop(modes);
                let e = FsError::VersionOpen;
                self.failed("open", ino, &e);
                self.core.release(fh);
                return reply.error(errno(&e));
            }
            Decision::Ordinary => {}
        }
        let flags = if modes.may_keep_pages(ino, opened.version) {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        modes.opened_caching(fh, ino, opened.version);
        reply.opened(FileHandle(fh), flags);
    }

    pub(super) fn release(&self, fh: u64) {
        self.io_modes.lock().released(fh);
        self.core.release(fh);
    }
}
