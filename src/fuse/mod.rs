//! The fuser adapter: each kernel request becomes one call into
//! [`FsCore`], tried first in quick mode on the thread that read it (see
//! `crate::wait`). One that must wait is run again on that same thread
//! while a quarter of the threads stay free for answers from memory
//! ([`InPlace`]), else handed with its reply to a worker pool; downloads
//! and metadata have separate pools, so hung downloads never hold up a
//! lookup. Kernel concerns live here: the errno of each error
//! ([`errno`]), and the flags of each open as the core decided it (page
//! cache, kept or not, or passthrough of cached files on Linux 6.9+); the
//! adapter registers the backing files the core asks for, and keeps no
//! state of its own about open files.

mod errno;
pub use backing::{Backing, SessionDevice};
pub(crate) use errno::{errno, is_dead_mount};
pub(crate) use in_place::InPlace;
pub use in_place::run;
mod answers;
mod backing;
mod dir_reply;
mod in_place;
mod replies;
mod uring;

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::debug_span;

use crate::fs::{FsCore, FsError, Listing};
use crate::stats::Latency;
use crate::wait;
use crate::workers::Workers;
use dir_reply::{DirReply, file_type};
use errno::FailureLog;

/// Readahead the kernel may do on our files.
const MAX_BACKGROUND: u16 = 64;
const MAX_READAHEAD: u32 = 1 << 20;
/// Filesystems the cache may sit on below a passthrough file (overlayfs in
/// a container is one level).
const PASSTHROUGH_STACK_DEPTH: u32 = 2;

/// Run once when the kernel ends the session (the filesystem was unmounted).
type OnDestroy = Box<dyn FnOnce() + Send + Sync>;

pub struct FuseAdapter(Arc<Inner>, Option<OnDestroy>, Option<RingRequest>);

/// FUSE over io_uring, asked for: entries a queue, and the rings set up
/// at `FUSE_INIT` once the kernel has agreed to it.
struct RingRequest {
    depth: usize,
    rings: PendingRings,
}

/// Rings set up at `FUSE_INIT` (fuser answers it before the session is
/// handed over), to be started on the session's `/dev/fuse` (see
/// [`FuseAdapter::with_io_uring`]).
#[derive(Clone, Default)]
pub struct PendingRings(Arc<parking_lot::Mutex<Option<ReadyRings>>>);

/// Rings set up, and what they answer with.
type ReadyRings = (uring::Rings, Arc<Inner>);

impl PendingRings {
    /// Starts the rings on a duplicate of the session's `/dev/fuse`, where
    /// the kernel agreed to them: it holds every request back until then.
    pub fn start(&self, fuse: BorrowedFd<'_>) -> io::Result<()> {
        if let Some((rings, inner)) = self.0.lock().take() {
            rings.start(inner.device.set(fuse)?, inner);
        }
        Ok(())
    }
}

struct Inner {
    core: Arc<FsCore<Backing>>,
    /// The session's `/dev/fuse`, on which backing files are registered.
    device: SessionDevice,
    /// Opens and reads: may wait for a whole download.
    content_workers: Arc<Workers>,
    /// Lookups, attributes and listings: may wait for a HEAD or a catalog.
    metadata_workers: Arc<Workers>,
    /// Requests that wait on the thread that read them.
    in_place: Arc<InPlace>,
    uid: u32,
    gid: u32,
    /// Cached files are to be passed through, where the kernel allows.
    passthrough: bool,
    /// FUSE's no-open mode (a mount where no file can change): the first
    /// open is answered ENOSYS, after which the kernel sends no open,
    /// flush or release and keeps each file's pages.
    no_open: bool,
    /// The kernel reads directories without opendir.
    no_opendir: AtomicBool,
    failures: FailureLog,
    /// Where operations are timed (`--metrics`); `None`: not timed.
    latency: Option<Latency>,
}

/// Times one operation from its request to its reply.
pub(crate) struct Timer(Option<(Instant, &'static str)>);

impl Inner {
    fn timer(&self, op: &'static str) -> Timer {
        Timer(self.latency.as_ref().map(|_| (Instant::now(), op)))
    }
}

impl Timer {
    fn finish(self, latency: &Option<Latency>) {
        if let (Some((started, op)), Some(latency)) = (self.0, latency) {
            latency
                .fuse
                .get_or_create(&[("opcode", op)])
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

impl FuseAdapter {
    /// `threads`: the threads fuser reads `/dev/fuse` with; requests that
    /// wait on the network beyond what they take go to two pools of four
    /// times as many threads.
    pub fn new(core: Arc<FsCore<Backing>>, threads: usize, passthrough: bool) -> Self {
        let workers = threads.max(1) * 4;
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let latency = core.dataset().context().stats.latency().cloned();
        FuseAdapter(
            Arc::new(Inner {
                core,
                device: SessionDevice::default(),
                content_workers: Workers::new("content", workers),
                metadata_workers: Workers::new("metadata", workers),
                in_place: Arc::new(InPlace::new(threads)),
                uid,
                gid,
                passthrough,
                no_open: false,
                no_opendir: AtomicBool::new(false),
                failures: FailureLog::default(),
                latency,
            }),
            None,
            None,
        )
    }

    /// Asks the kernel for FUSE over io_uring at `FUSE_INIT`; where it is
    /// not offered (the fuse module's `enable_uring` unset, or a kernel
    /// before 6.14) requests go through `/dev/fuse`. The rings returned
    /// must be started once the session is set up.
    ///
    /// A request handed to a worker holds its ring entry until answered,
    /// and the kernel queues a CPU's requests behind its queue's entries:
    /// each queue gets `answered_here` entries beyond as many as both
    /// worker pools run at once, so that requests waiting on the network
    /// (a hung server) leave room for those answered from memory until
    /// that many wait on one CPU; past it, that CPU's requests wait too.
    pub fn with_io_uring(mut self, answered_here: usize) -> (Self, PendingRings) {
        let rings = PendingRings::default();
        let depth = answered_here
            + self.0.content_workers.max_threads()
            + self.0.metadata_workers.max_threads();
        self.2 = Some(RingRequest {
            depth,
            rings: rings.clone(),
        });
        (self, rings)
    }

    /// Serves files in FUSE's no-open mode: only for a mount in which no
    /// file can change (offline), since no open binds a file to a version
    /// there; each inode is bound to one from its first read until the
    /// kernel forgets it. Reads that miss the kernel's page cache come to
    /// the daemon (no passthrough).
    pub fn without_opens(mut self) -> Self {
        let inner = Arc::get_mut(&mut self.0).expect("set before the session starts");
        inner.no_open = true;
        inner.core.set_no_open();
        self
    }

    /// Where the session's `/dev/fuse` is to be given once the session
    /// exists, before it runs: passthrough registers backing files on it.
    pub fn session_device(&self) -> SessionDevice {
        self.0.device.clone()
    }

    /// The requests waiting on the thread that read them, which
    /// [`run`] watches.
    pub fn waits_in_place(&self) -> Arc<InPlace> {
        self.0.in_place.clone()
    }

    /// What to do once the kernel ends the session.
    pub fn on_destroy(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.1 = Some(Box::new(f));
        self
    }

    /// Runs `op` in quick mode here; when it must wait, runs it again here
    /// if [`InPlace`] allows, else on a worker of `pool`, in the caller's
    /// span. `send` replies either way; `op` may use the reply before (an
    /// open registers a backing file). `name`: the operation, as the
    /// latency histogram labels it. Only fuser's threads, which read
    /// `/dev/fuse`, call it; the io_uring queues' threads never wait.
    fn answer<R: Send + 'static, T: Send + 'static>(
        &self,
        name: &'static str,
        pool: Pool,
        reply: R,
        op: impl Fn(&Inner, &R) -> Result<T, FsError> + Send + 'static,
        send: impl FnOnce(&Inner, Result<T, FsError>, R) + Send + 'static,
    ) {
        let timer = self.0.timer(name);
        let send = move |inner: &Inner, result, reply| {
            send(inner, result, reply);
            timer.finish(&inner.latency);
        };
        let Some(quick) = wait::quick_unless_panicked(|| op(&self.0, &reply)) else {
            // The reply's drop answers EIO.
            return;
        };
        match quick {
            Err(e) if e.is_would_block() => {
                if let Some(_waiting) = self.0.in_place.take() {
                    // A panic fails the request (the reply's drop answers
                    // EIO), not the session.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let result = op(&self.0, &reply);
                        send_or_park(&self.0, pool, result, op, send, reply)
                    }));
                    return;
                }
                let inner = self.0.clone();
                let span = tracing::Span::current();
                inner.workers(pool).clone().spawn(move || {
                    let _entered = span.enter();
                    let result = op(&inner, &reply);
                    send_or_park(&inner, pool, result, op, send, reply);
                });
            }
            // A panic while replying must not end the session either; the
            // reply's drop answers EIO.
            result => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    send_or_park(&self.0, pool, result, op, send, reply)
                }));
            }
        }
    }

    /// Answers a readdir or readdirplus: `add` fills `reply` from the
    /// directory's listing.
    fn list<R: DirReply>(
        &self,
        name: &'static str,
        ino: INodeNo,
        offset: u64,
        reply: R,
        add: impl FnOnce(&Inner, &Listing, &mut R) + Send + 'static,
    ) {
        self.answer(
            name,
            Pool::Metadata,
            reply,
            move |inner, _| inner.core.listing(ino.0, offset),
            move |inner, listing, mut reply| match listing {
                Ok(listing) => {
                    add(inner, &listing, &mut reply);
                    reply.ok();
                }
                Err(e) => {
                    inner.failed("readdir", ino.0, &e);
                    reply.error(errno(&e))
                }
            },
        );
    }
}

#[derive(Clone, Copy)]
enum Pool {
    Content,
    Metadata,
}

impl Inner {
    fn workers(&self, pool: Pool) -> &Arc<Workers> {
        match pool {
            Pool::Content => &self.content_workers,
            Pool::Metadata => &self.metadata_workers,
        }
    }
}

/// Sends `result`, unless the operation was parked (an open waiting for
/// the release of another version's open files): then its reply is kept
/// aside until it is resumed, and the operation asked again as a new
/// request is, quick first, on the thread that resumes it (a release's, or
/// the one keeping the deadlines: an answer from memory, such as `ESTALE`
/// at the deadline, waits for no worker that downloads may all hold), then
/// on a worker if it must wait.
fn send_or_park<R: Send + 'static, T: Send + 'static>(
    inner: &Arc<Inner>,
    pool: Pool,
    result: Result<T, FsError>,
    op: impl Fn(&Inner, &R) -> Result<T, FsError> + Send + 'static,
    send: impl FnOnce(&Inner, Result<T, FsError>, R) + Send + 'static,
    reply: R,
) {
    let Err(FsError::WaitsForRelease { request }) = result else {
        return send(inner, result, reply);
    };
    let resumed = inner.clone();
    let span = tracing::Span::current();
    inner.core.resume_when_released(
        request,
        Box::new(move || {
            let _entered = span.clone().entered();
            // A panic fails the request: the reply's drop answers EIO.
            let Some(quick) = wait::quick_unless_panicked(|| op(&resumed, &reply)) else {
                return;
            };
            if !quick.as_ref().is_err_and(FsError::is_would_block) {
                return send_or_park(&resumed, pool, quick, op, send, reply);
            }
            resumed.workers(pool).clone().spawn(move || {
                let _entered = span.enter();
                let result = op(&resumed, &reply);
                send_or_park(&resumed, pool, result, op, send, reply);
            })
        }),
    );
}

impl FuseAdapter {
    /// At `FUSE_INIT`: asks for FUSE over io_uring where it was asked for
    /// and the kernel offers it, and sets the rings up; whether it did.
    fn set_up_rings(&mut self, config: &mut KernelConfig) -> bool {
        let Some(request) = &self.2 else {
            return false;
        };
        if !config
            .capabilities()
            .contains(InitFlags::FUSE_OVER_IO_URING)
        {
            let why = match uring::enabled_in_kernel() {
                Some(false) => "the fuse module's enable_uring is off",
                Some(true) => "it is not offered on this mount",
                None => "this kernel has none",
            };
            tracing::info!("--io-uring: {why}; requests go through /dev/fuse");
            return false;
        }
        // Every ring entry must hold the largest request or reply (the
        // readahead asked for, at most what the kernel allows, is smaller).
        const _: () = assert!(MAX_READAHEAD <= uring::MAX_PAYLOAD);
        if config.set_max_write(uring::MAX_PAYLOAD).is_err() {
            return false;
        }
        let Some(rings) = uring::prepare(request.depth) else {
            return false;
        };
        if config
            .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
            .is_err()
        {
            return false;
        }
        *request.rings.0.lock() = Some((rings, self.0.clone()));
        true
    }
}

impl Filesystem for FuseAdapter {
    fn destroy(&mut self) {
        if let Some(f) = self.1.take() {
            f();
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_readahead(MAX_READAHEAD);
        // The kernel's default of 16 background requests (readahead, async
        // reads, releases) and congestion at 12 makes 16 readers' first
        // reads queue behind each other.
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND / 4 * 3);
        // Listings with attributes, without opendir round trips, several at
        // once in one directory: what `ls -l` and `find` need. Each is
        // optional; older kernels simply do without. With "auto", a listing
        // nobody looks into (a plain `ls`) goes on without attributes after
        // its first part, and so without an inode per entry.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // The kernel checks a file's attributes before reading its pages and
        // a directory's mtime before using the listing it kept: after a
        // change on the server, both are dropped once the attributes are.
        let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        // A file opened past the page cache (its size in the kernel unsure)
        // can still be mapped shared, through the page cache (Linux 6.6).
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // A read past the page cache that does not wait in its caller
        // (io_uring, aio) is completed when its answers come, at the size
        // they give. Without it the kernel answers it in place without
        // moving the file position it kept, and io_uring, which reads the
        // rest of a regular file's short read again from that position,
        // got the file's first bytes over and over.
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        let no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        self.0.no_opendir.store(no_opendir, Ordering::Relaxed);
        self.set_up_rings(config);
        let passthrough = self.0.passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(PASSTHROUGH_STACK_DEPTH).is_ok();
        self.0.core.set_passthrough(passthrough);
        if passthrough {
            tracing::info!(
                "reads of cached files are passed through to the kernel (FUSE passthrough)"
            );
        } else {
            tracing::info!(
                "FUSE passthrough is off (--no-passthrough, or the kernel offers none): \
                 cached files are read through matvisfs"
            );
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _span = debug_span!("lookup", parent = parent.0, ?name, pid = req.pid()).entered();
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(Errno::ENOENT);
        };
        let parent = parent.0;
        let logged = name.clone();
        self.answer(
            "lookup",
            Pool::Metadata,
            reply,
            move |inner, _| inner.core.lookup(parent, &name),
            move |inner, result, reply| inner.send_entry(parent, &logged, result, reply),
        );
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _span = debug_span!("readlink", ino = ino.0, pid = req.pid()).entered();
        let ino = ino.0;
        self.answer(
            "readlink",
            Pool::Metadata,
            reply,
            move |inner, _| inner.core.readlink(ino),
            move |inner, result, reply| match result {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => {
                    inner.failed("readlink", ino, &e);
                    reply.error(errno(&e))
                }
            },
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = debug_span!("getattr", ino = ino.0, pid = req.pid()).entered();
        let ino = ino.0;
        self.answer(
            "getattr",
            Pool::Metadata,
            reply,
            move |inner, _| inner.core.getattr(ino),
            move |inner, result, reply| inner.send_attr((ino, result), reply),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _: &Request, _: INodeNo, _: &OsStr, _: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: INodeNo,
        _: &OsStr,
        _: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _: &Request, _: INodeNo, _: INodeNo, _: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: u32,
        _: u32,
        _: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if let Some(errno) = self.0.open_refused() {
            // Counted as over io_uring, where every request is.
            self.0.timer("open").finish(&self.0.latency);
            return reply.error(errno);
        }
        let _span = debug_span!("open", ino = ino.0, pid = req.pid()).entered();
        let (ino, unique) = (ino.0, req.unique().0);
        self.answer(
            "open",
            Pool::Content,
            reply,
            move |inner, _| {
                inner
                    .core
                    .open_with_backing(ino, flags.0, unique, |file| inner.device.register(file))
            },
            move |inner, result, reply| inner.send_open((ino, result), reply),
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = debug_span!("read", ino = ino.0, offset, size, pid = req.pid()).entered();
        let (ino, fh, flags) = (ino.0, fh.0, flags.0);
        self.answer(
            "read",
            Pool::Content,
            reply,
            move |inner, _| inner.read(ino, fh, offset, size, flags),
            move |inner, result, reply| inner.send_data((ino, result), reply),
        );
    }

    fn write(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.error(answers::FLUSH);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let timer = self.0.timer("release");
        self.0.release(fh.0);
        reply.ok();
        timer.finish(&self.0.latency);
    }

    fn fsync(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.opendir() {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.list(
            "readdir",
            ino,
            offset,
            reply,
            move |inner, listing, reply| {
                inner.core.fill(listing, offset, false, |entry, next| {
                    reply.add(INodeNo(entry.ino), next, file_type(entry.kind), entry.name)
                });
            },
        );
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.list(
            "readdirplus",
            ino,
            offset,
            reply,
            move |inner, listing, reply| {
                inner.core.fill(listing, offset, true, |entry, next| {
                    let plus = entry.entry.expect("readdirplus entries carry attributes");
                    reply.add(
                        INodeNo(entry.ino),
                        next,
                        entry.name,
                        &plus.ttl,
                        &inner.attr(&plus.attr),
                        Generation(0),
                    )
                });
            },
        );
    }

    fn releasedir(&self, _: &Request, _: INodeNo, _: FileHandle, _: OpenFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = answers::STATFS;
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn setxattr(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: &[u8],
        _: i32,
        _: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn getxattr(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, reply: ReplyXattr) {
        reply.error(answers::XATTR);
    }

    fn listxattr(&self, _: &Request, _: INodeNo, _: u32, reply: ReplyXattr) {
        reply.error(answers::XATTR);
    }

    fn removexattr(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn ioctl(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: IoctlFlags,
        _: u32,
        _: &[u8],
        _: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(answers::IOCTL);
    }

    fn access(&self, _: &Request, _: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.0.access(mask) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }
}
