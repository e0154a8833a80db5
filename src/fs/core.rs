//! The operations the kernel asks for, as plain functions: where a path
//! becomes an inode (lookup), its attributes, opens bound to one version
//! of a file, and reads. Each runs the same way on the kernel's threads
//! (in quick mode, see `crate::wait`) and on a worker.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};

use super::attr::{Entry, file_size};
use super::error::{FsError, Result};
use super::handles::{Handle, Handles, OpenFile};
use super::inodes::{CONTROL_DIR, InodeTable, NodeKey, ROOT_INO, STATS_FILE};
use super::kernel::{Invalidation, Invalidations, Kernel};
use super::kernel_files::{
    Bound, Joined, KernelFiles, NoBacking, Open, ReadMode, ReleaseWait, Resume, Slot,
};
use super::listing::Listings;
use crate::dataset::{Change, Dataset, Kind, Opened, Stat, Tag};
use crate::stats::Stats;
use crate::store::Blob;

/// A handle just bound, before the kernel is told how to read it.
enum Binding {
    File {
        fh: u64,
        slot: Arc<Slot>,
        /// The open's bytes were made by the mount: never passed through.
        in_memory: bool,
        /// The kernel may hold another size than the version's: its reads
        /// must reach the mount.
        direct: bool,
        /// Opened with `O_DIRECT`.
        o_direct: bool,
        /// Bound to the version the kernel already reads by itself, its
        /// cached bytes not opened (see [`FsCore::hold_cached`]).
        unopened: bool,
    },
    /// The statistics: a snapshot whose size changes from one open to the
    /// next.
    Snapshot(u64),
}

/// The longest an open waits for its file's bytes (see
/// [`FsCore::fetches_at_open`]): the kernel lets no signal, not even
/// `SIGKILL`, end an open the mount is answering (matvisfs declines
/// `INTERRUPT`). Past it the open is answered as one of a file not cached,
/// and its first read joins the download.
const FETCH_AT_OPEN_WAIT: Duration = Duration::from_secs(2);

/// The open of `path`, after its bytes were fetched for it: bound to
/// whatever version the tag names now (another than `opened`'s when the
/// tag changed meanwhile), with the bytes fetched when they are that
/// version's (the cache may have evicted them already). A fetch that fails
/// fails the open, as it would have failed its first read; one that takes
/// longer than [`FETCH_AT_OPEN_WAIT`] leaves the open as it was.
fn fetched_for_open(tag: &Arc<Tag>, path: &str, opened: Opened, stats: &Stats) -> Result<Opened> {
    crate::wait::may_block()?;
    let fetched = match tag.content_within(path, opened.blob(), FETCH_AT_OPEN_WAIT) {
        None => return Ok(opened),
        Some(Ok(fetched)) => Some(fetched),
        Some(Err(crate::dataset::Error::Changed { .. })) => None,
        Some(Err(e)) => return Err(FsError::from(e).on_inode()),
    };
    let now = tag
        .open_as_now(path, None)
        .map_err(|e| FsError::from(e).on_inode())?;
    Stats::add(&stats.opens_fetched, 1);
    Ok(match (now, fetched) {
        (Opened::Proven(blob), Some(fetched)) if blob == fetched.blob => Opened::AtHand(fetched),
        (now, _) => now,
    })
}

/// At the root: a link to the newest release the mount knows.
pub(super) const LATEST: &str = "latest";

fn stats_path() -> String {
    format!("{CONTROL_DIR}/{STATS_FILE}")
}

/// Bytes read.
#[derive(Debug, Clone)]
pub struct ReadReply {
    pub bytes: Vec<u8>,
}

/// The core of a mount. `B`: how its front end names a file it hands to
/// the kernel to read by itself (FUSE passthrough); [`NoBacking`] for one
/// that never does.
pub struct FsCore<B = NoBacking> {
    pub(super) dataset: Arc<Dataset>,
    pub(super) inodes: InodeTable,
    handles: Handles,
    /// Each file as the kernel holds it: the one owner of what the kernel
    /// is told of a file and how it reads it.
    pub(super) files: KernelFiles<B>,
    pub(super) mounted_at: SystemTime,
    pub(super) listings: Listings,
    kernel: OnceLock<Arc<dyn Kernel>>,
    /// FUSE's no-open mode: the kernel sends no open or release, and keeps
    /// each file's pages across opens. Each inode read is bound to one
    /// version by an open of our own, from its first read until the kernel
    /// forgets the inode (and its pages with it).
    no_open: AtomicBool,
    implicit_opens: Mutex<HashMap<u64, u64>>,
}

thread_local! {
    /// The inode a read in no-open mode on this thread is for (0: none).
    static READING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as reading an inode for as long as it lives.
struct Reading(u64);

impl Reading {
    fn start(ino: u64) -> Reading {
        Reading(READING.replace(ino))
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        READING.set(self.0);
    }
}

/// Whether this thread is answering a read of `ino` in no-open mode: the
/// kernel holds the pages that read fills locked until it is answered, so
/// dropping them cannot be waited for on this thread.
pub(super) fn reading(ino: u64) -> bool {
    READING.get() == ino
}

/// In no-open mode the statistics are padded with spaces to a multiple of
/// this: their size stays the same from one read to the next, so a read
/// of the file (one request) is of one snapshot, never of two.
const STATS_PADDING: usize = 64 * 1024;

impl<B: Send + Sync + 'static> FsCore<B> {
    /// The core of a mount; changes the dataset finds are passed to the
    /// kernel set with [`FsCore::set_kernel`].
    pub fn new(dataset: Arc<Dataset>) -> Arc<Self> {
        let files = KernelFiles::new(dataset.context().content.cap());
        let core = Arc::new(FsCore {
            dataset,
            inodes: InodeTable::default(),
            handles: Handles::default(),
            files,
            mounted_at: SystemTime::now(),
            listings: Listings::default(),
            kernel: OnceLock::new(),
            no_open: AtomicBool::new(false),
            implicit_opens: Mutex::new(HashMap::new()),
        });
        let weak: Weak<FsCore<B>> = Arc::downgrade(&core);
        core.dataset.context().on_change(move |change| {
            if let Some(core) = weak.upgrade() {
                core.changed(&change);
            }
        });
        core
    }

    pub fn set_kernel(&self, kernel: Arc<dyn Kernel>) {
        let _ = self.kernel.set(kernel);
    }

    /// Cached files may be handed to the kernel to read by itself (the
    /// front end can register them, see [`FsCore::open_with_backing`]).
    pub fn set_passthrough(&self, on: bool) {
        self.files.set_passthrough(on);
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    fn tell_kernel(&self, invalidations: Vec<Invalidation>) {
        if invalidations.is_empty() {
            return;
        }
        if let Some(kernel) = self.kernel.get() {
            kernel.invalidate(invalidations);
        }
    }

    fn changed(&self, change: &Change) {
        let invalidations = match self.gone(change) {
            Some(gone) => gone,
            None => self.invalidations(change),
        };
        tracing::debug!(
            ?change,
            now = invalidations.now.len(),
            later = invalidations.later.len(),
            "invalidating kernel caches"
        );
        self.tell_kernel_all(invalidations);
    }

    fn tell_kernel_all(&self, invalidations: Invalidations) {
        self.tell_kernel(invalidations.now);
        if let (Some(kernel), false) = (self.kernel.get(), invalidations.later.is_empty()) {
            kernel.invalidate_later(invalidations.later);
        }
    }

    /// In no-open mode, `ino` is found to be another file than the kernel
    /// was told: it is retired as a changed file is (see `file_changed`).
    fn changed_without_opens(&self, ino: u64) {
        let Some(key) = self.inodes.key(ino) else {
            return;
        };
        let mut invalidations = Invalidations::default();
        self.file_changed(ino, &key, &mut invalidations);
        self.tell_kernel_all(invalidations);
    }

    pub(super) fn stat(&self, key: &NodeKey) -> Result<Stat> {
        let dir = Stat {
            kind: Kind::Dir,
            size: 0,
            mtime: self.mounted_at,
        };
        match &key.tag {
            Some(tag) if key.path.is_empty() && **tag == *LATEST => match self.dataset.latest()? {
                Some(target) => Ok(Stat {
                    kind: Kind::Symlink,
                    size: target.len() as u64,
                    mtime: self.mounted_at,
                }),
                None => Ok(self.dataset.tag(tag)?.stat("")?),
            },
            Some(tag) => Ok(self.dataset.tag(tag)?.stat(&key.path)?),
            None if key.path.is_empty() || *key.path == *CONTROL_DIR => Ok(dir),
            None if *key.path == *stats_path() => Ok(Stat {
                kind: Kind::File,
                size: self.render_stats().len() as u64,
                mtime: SystemTime::now(),
            }),
            None => Err(crate::dataset::Error::NotFound.into()),
        }
    }

    /// The session's statistics, as `.matvisfs/stats.json` shows them.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut stats = self.dataset.stats_json(self.mounted_at);
        let (waiting, waited) = self.files.release_waits();
        stats["opens"] = serde_json::json!({
            "waiting_for_release": waiting,
            "waited_for_release": waited,
        });
        stats
    }

    fn render_stats(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(&self.stats_json()).expect("serializable");
        bytes.push(b'\n');
        if self.no_open() {
            bytes.resize(bytes.len().div_ceil(STATS_PADDING) * STATS_PADDING, b' ');
        }
        bytes
    }

    /// Serves files in FUSE's no-open mode from now on (see
    /// [`FsCore::read_inode`]).
    pub fn set_no_open(&self) {
        self.no_open.store(true, Ordering::Relaxed);
    }

    /// Whether files are served in FUSE's no-open mode, where the kernel
    /// reads every file through its page cache.
    pub(super) fn no_open(&self) -> bool {
        self.no_open.load(Ordering::Relaxed)
    }

    /// A read in no-open mode, where the kernel names only the inode: the
    /// inode's own open binds it to one version, as long as the kernel may
    /// hold pages of it. `flags`: those of the reader's open, as for
    /// [`FsCore::read`].
    pub fn read_inode(&self, ino: u64, offset: u64, size: u32, flags: i32) -> Result<ReadReply> {
        let _reading = Reading::start(ino);
        let known = self.implicit_opens.lock().get(&ino).copied();
        let fh = match known {
            Some(fh) => fh,
            None if self.inodes.is_retired(ino) => return Err(FsError::StaleInode),
            None => {
                // Not an open of the kernel's: how it reads is not decided.
                let binding = self.bind(ino, libc::O_RDONLY, None)?;
                let (opened, volatile) = match binding {
                    // The kernel holds (or may hold) another size for the
                    // inode than its version's, and reads its page cache
                    // up to that size: a file that changed between the
                    // size given and this first read. The inode is stale;
                    // its name leads to a new one, of the version's size.
                    Binding::File {
                        fh,
                        direct: true,
                        ref slot,
                        ..
                    } if slot.size().is_some() => {
                        self.release(fh);
                        self.changed_without_opens(ino);
                        return Err(FsError::StaleInode);
                    }
                    Binding::File { fh, .. } => (fh, false),
                    Binding::Snapshot(fh) => (fh, true),
                };
                let mut opens = self.implicit_opens.lock();
                match opens.get(&ino) {
                    // Another read opened it meanwhile.
                    Some(&fh) => {
                        drop(opens);
                        self.release(opened);
                        fh
                    }
                    // Found changed meanwhile (see `FsCore::retire`).
                    None if self.inodes.is_retired(ino) => {
                        drop(opens);
                        self.release(opened);
                        return Err(FsError::StaleInode);
                    }
                    None if volatile => {
                        // The statistics: a snapshot for this read alone.
                        drop(opens);
                        let read = self.read(opened, offset, size, flags);
                        self.release(opened);
                        return read;
                    }
                    None => {
                        opens.insert(ino, opened);
                        opened
                    }
                }
            }
        };
        match self.read(fh, offset, size, flags) {
            // Its binding ended since it was looked up: found changed.
            Err(FsError::UnknownHandle) => Err(FsError::StaleInode),
            read => read,
        }
    }

    /// In no-open mode, gives the path of `ino` (a file found changed) a
    /// new inode and ends `ino`'s binding to a version: from now on its
    /// reads fail with `ESTALE` (see `file_changed`). False when it was
    /// retired already.
    pub(super) fn retire(&self, ino: u64) -> bool {
        // Under the bindings' lock, so that no read binds it after this.
        let mut opens = self.implicit_opens.lock();
        if !self.inodes.retire(ino) {
            return false;
        }
        let bound = opens.remove(&ino);
        drop(opens);
        if let Some(fh) = bound {
            self.release(fh);
        }
        true
    }

    /// The path of an inode, for messages.
    pub fn describe(&self, ino: u64) -> String {
        match self.inodes.key(ino) {
            Some(NodeKey {
                tag: Some(tag),
                path,
            }) if path.is_empty() => tag.to_string(),
            Some(NodeKey {
                tag: Some(tag),
                path,
            }) => format!("{tag}/{path}"),
            Some(NodeKey { tag: None, path }) => format!("/{path}"),
            None => format!("inode {ino}"),
        }
    }

    fn key(&self, ino: u64) -> Result<NodeKey> {
        self.inodes.key(ino).ok_or(FsError::StaleInode)
    }

    /// Where a path becomes an inode.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Entry> {
        let key = self.key(parent)?.child(name);
        let entry = self.counted_entry(&key, |key| self.stat(key))?;
        if parent == ROOT_INO && key.tag.is_some() {
            self.found_at_root(name);
        }
        Ok(entry)
    }

    /// A tag found by name (a release or a commit first looked up) that
    /// the root's listing, as the kernel keeps it, may lack: the kernel
    /// drops that listing and reads the root again (it keeps a listing of
    /// a directory with no open until told, and the root's time never
    /// changes).
    fn found_at_root(&self, name: &str) {
        // Before the lookup is answered: an `ls` just after it lists the
        // tag. Safe from within a lookup in the root (the kernel drops a
        // directory's listing without its lock).
        if self.listings.root_lacks(name) {
            self.tell_kernel(vec![Invalidation::Inode(ROOT_INO)]);
        }
    }

    /// The entry of `key` with what `stat_of` finds of it, its inode
    /// counted as one more kernel reference. A change found by another
    /// thread between the stat and the numbering retires the path's inode
    /// without opens (see `file_changed`): the path's new inode would be
    /// handed the old version's size, and its first read would be stale
    /// (see [`FsCore::read_inode`]). The stat is taken again then, a few
    /// times at most (a change is rare; a path that changes each time is
    /// left to that first read).
    pub(super) fn counted_entry(
        &self,
        key: &NodeKey,
        mut stat_of: impl FnMut(&NodeKey) -> Result<Stat>,
    ) -> Result<Entry> {
        const TRIES: usize = 4;
        for _ in 1..TRIES {
            let retirements = self.inodes.retirements();
            let stat = stat_of(key)?;
            if let Some(ino) = self.inodes.lookup_unless_retired_since(key, retirements) {
                return Ok(self.entry_for(ino, key, stat));
            }
        }
        let stat = stat_of(key)?;
        Ok(self.entry_for(self.inodes.lookup(key), key, stat))
    }

    /// What the kernel is told of `ino`: the size [`KernelFiles`] gives
    /// it (the open version's while files of it are open).
    pub(super) fn entry_for(&self, ino: u64, key: &NodeKey, mut stat: Stat) -> Entry {
        if let Some(size) = self.files.report_size(ino, file_size(&stat)) {
            stat.size = size;
        }
        Entry::new(ino, key, stat)
    }

    pub fn forget(&self, ino: u64, count: u64) {
        if self.inodes.forget(ino, count) == 0 {
            self.files.forgotten(ino);
            let implicit = self.implicit_opens.lock().remove(&ino);
            if let Some(fh) = implicit {
                self.release(fh);
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Entry> {
        let key = self.key(ino)?;
        if self.inodes.is_retired(ino) {
            return Err(FsError::StaleInode);
        }
        let stat = self.stat(&key).map_err(FsError::on_inode)?;
        Ok(self.entry_for(ino, &key, stat))
    }

    /// An open of `ino`, decided once: the version it is bound to, the
    /// size the kernel holds, and how the kernel reads it. `register`
    /// hands a cached file to the kernel to read by itself, when the core
    /// passes the open through (see [`FsCore::set_passthrough`]); when it
    /// fails, the open reads the page cache. A front end answers with the
    /// decision as it is. `request`: the kernel request's own number, by
    /// which an open parked until another version's open files are
    /// released ([`FsError::WaitsForRelease`]) is resumed, with
    /// [`FsCore::resume_when_released`], and asked again.
    pub fn open_with_backing(
        &self,
        ino: u64,
        flags: i32,
        request: u64,
        register: impl FnOnce(&File) -> io::Result<B>,
    ) -> Result<Open<B>> {
        let (fh, slot, in_memory, direct, o_direct, unopened) =
            match self.bind(ino, flags, Some(request))? {
                Binding::File {
                    fh,
                    slot,
                    in_memory,
                    direct,
                    o_direct,
                    unopened,
                } => (fh, slot, in_memory, direct, o_direct, unopened),
                // The statistics: never cached by the kernel.
                Binding::Snapshot(fh) => {
                    return Ok(Open {
                        fh,
                        version: None,
                        size: None,
                        mode: ReadMode::Direct,
                    });
                }
            };
        match self
            .files
            .admit(fh, &slot, in_memory, direct, o_direct, register)
        {
            Ok(mode) => {
                // An `O_DIRECT` open reads past the pages kept.
                let from_the_kernel = match mode {
                    ReadMode::Passthrough(_) => true,
                    ReadMode::PageCache { keep_pages } => keep_pages && !o_direct,
                    ReadMode::Direct => false,
                };
                if unopened && !from_the_kernel {
                    self.hold_cached(fh, &slot);
                }
                Ok(Open {
                    fh,
                    version: slot.version(),
                    size: slot.size(),
                    mode,
                })
            }
            Err(e) => {
                self.release(fh);
                Err(e)
            }
        }
    }

    /// What answers the open parked as kernel request `request` (see
    /// [`FsCore::open_with_backing`]) once it may be asked again: it runs
    /// on the thread of the release that ends the wait, on the thread that
    /// keeps the deadlines at the open's deadline, or at once when the
    /// open is due already; with no lock of the core held.
    pub fn resume_when_released(&self, request: u64, resume: Resume) {
        self.files.resume_when_released(request, resume);
    }

    /// A handle of `ino` bound to one version. `request`: the kernel
    /// request of an open the front end releases (not the kernel's
    /// implicit ones), which beside files of another version may be parked
    /// until their release.
    fn bind(&self, ino: u64, flags: i32, request: Option<u64>) -> Result<Binding> {
        // Taken back first, whatever the attempt ends in; kept for the
        // attempt that goes on where this one would wait (quick mode).
        let mut wait = request.map(|request| self.files.take_release_wait(request));
        let bound = self.bind_waiting(ino, flags, &mut wait);
        if let (Err(e), Some(wait)) = (&bound, wait) {
            if e.is_would_block() {
                self.files.give_back_release_wait(wait);
            }
        }
        bound
    }

    /// [`FsCore::bind`] with the open's wait for the release of another
    /// version's open files, if it may wait.
    fn bind_waiting(
        &self,
        ino: u64,
        flags: i32,
        wait: &mut Option<ReleaseWait>,
    ) -> Result<Binding> {
        if wait.as_ref().is_some_and(ReleaseWait::outlasted) {
            return Err(FsError::VersionOpen);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        let key = self.key(ino)?;
        let Some(tag_name) = &key.tag else {
            if *key.path != *stats_path() {
                return Err(crate::dataset::Error::IsDir.into());
            }
            let fh = self.handles.insert(Handle::Snapshot(self.render_stats()));
            return Ok(Binding::Snapshot(fh));
        };
        let tag = self.dataset.tag(tag_name)?;
        // Each time open files of another version are released while it
        // waits, the open is decided again (the tag may have moved); the
        // wait bounds how many times.
        let (slot, opened, unopened) = loop {
            let held = self.files.version_held(ino);
            let mut opened = tag
                .open(&key.path, held)
                .map_err(|e| FsError::from(e).on_inode())?;
            let version_held = held.is_some() && opened.version() == held;
            let unopened = version_held && opened.content().is_none();
            if !version_held && self.fetches_at_open(ino, &opened, flags) {
                opened = fetched_for_open(&tag, &key.path, opened, &self.dataset.context().stats)?;
            }
            let bound = self.files.bind(ino, &opened, wait.as_mut(), |version| {
                tag.content(&key.path, Some(version))
                    .map(Opened::AtHand)
                    .map_err(FsError::from)
            });
            if let Err(FsError::LookUpAgain) = bound {
                // Dropped before the open fails: the retry's permission
                // check asks for them, which gives the kernel the file's
                // size where no lookup is made (a reopen through a
                // descriptor's link in /proc).
                self.tell_kernel(vec![Invalidation::Attributes(ino)]);
            }
            let joined = bound?;
            match joined {
                Joined::Bound(slot) => break (slot, opened, unopened),
                Joined::Released => continue,
            }
        };
        // The kernel may hold another size than this version's: one it was
        // given for another version, whose replacement it may have dropped
        // (an invalidation crossing the reply), and a page-cache read ends
        // at the size the kernel holds. Such an open's reads reach the
        // mount, which ends them at the version's size.
        let size_unsure = self.files.size_unsure(ino, opened.size());
        if size_unsure {
            // `stat` must show this version's size (or, when it is not
            // known yet, the size the mount knows now, which its first read
            // confirms). The size given last may be it and the kernel still
            // hold another: two replies can reach it in the other order
            // than they were made.
            self.tell_kernel(vec![Invalidation::Attributes(ino)]);
        }
        let o_direct = flags & libc::O_DIRECT != 0;
        let direct = o_direct || size_unsure;
        let fh = self.handles.insert(Handle::File(OpenFile {
            tag,
            path: key.path.clone(),
            slot: slot.clone(),
            direct,
        }));
        Ok(Binding::File {
            fh,
            slot,
            in_memory: opened.in_memory(),
            direct: size_unsure,
            o_direct,
            unopened,
        })
    }

    /// Binds an open whose bytes were left unopened, since the kernel held
    /// them, to its cached bytes after all: it was decided to read through
    /// the mount (`O_DIRECT`, a size the kernel may not hold, an open of
    /// the page cache beside it), and an open read by the mount holds its
    /// version's bytes from the start, as any open of cached bytes does, so
    /// that it reads them whole even if the cache drops them and the file
    /// changes meanwhile.
    fn hold_cached(&self, fh: u64, slot: &Slot) {
        let (Some(digest), Some(size)) = (slot.version(), slot.size()) else {
            return;
        };
        let Some(handle) = self.handles.get(fh) else {
            return;
        };
        if let Handle::File(file) = &*handle {
            if let Some(open) = file.tag.cached(&file.path, Blob { digest, size }) {
                let _ = slot.bind(&open);
            }
        }
    }

    /// Whether an open fetches its file's bytes before it is answered, so
    /// that the kernel reads them by itself (passthrough) rather than
    /// through the mount: a file not cached, larger than a download held
    /// in memory (so its download is a file on the disk), opened where
    /// cached files are passed through. The first read would wait for the
    /// whole file anyway, since no byte is served before the file is
    /// verified; what the open saves is every read after it.
    fn fetches_at_open(&self, ino: u64, opened: &Opened, flags: i32) -> bool {
        if opened.content().is_some()
            || flags & libc::O_DIRECT != 0
            || self.no_open()
            || !self.files.passes_through()
        {
            return false;
        }
        // Before the version is proven, the size the kernel was given.
        let size = opened.size().or_else(|| self.files.reported_size(ino));
        // Beside open files of the inode, the kernel would not pass it
        // through (they read the page cache), or it would be stale (they
        // are of another version).
        size.is_some_and(|size| size > crate::store::STAGED_FILE_LIMIT) && !self.files.is_open(ino)
    }

    /// Where a symbolic link points.
    pub fn readlink(&self, ino: u64) -> Result<String> {
        let key = self.key(ino)?;
        match &key.tag {
            Some(tag) if key.path.is_empty() && **tag == *LATEST => self
                .dataset
                .latest()?
                .ok_or(crate::dataset::Error::NotFound.into()),
            Some(tag) => Ok(self
                .dataset
                .tag(tag)?
                .link(&key.path)
                .map_err(|e| FsError::from(e).on_inode())?),
            None => Err(crate::dataset::Error::NotFound.into()),
        }
    }

    pub fn release(&self, fh: u64) {
        if let Some(handle) = self.handles.remove(fh) {
            if let Handle::File(file) = &*handle {
                self.files.release(fh, &file.slot);
            }
        }
    }

    /// The bytes of an open file: those of its slot, fetched by its first
    /// read when they were not known at open.
    fn content(&self, file: &OpenFile) -> Result<Arc<File>> {
        let slot = &file.slot;
        let expected = match slot.for_read()? {
            Bound::Content(content) => return Ok(content),
            Bound::Fetch(expected) => expected,
        };
        let fetched = file
            .tag
            .content_of(&file.path, expected)
            .map_err(|e| FsError::from(e).on_inode());
        let open = match fetched {
            Ok(open) => open,
            Err(e) => {
                if matches!(e, FsError::Dataset(crate::dataset::Error::Changed { .. })) {
                    slot.make_stale();
                } else if !e.is_would_block() {
                    slot.failed(&e);
                }
                return Err(e);
            }
        };
        let content = slot.bind(&open)?;
        let size = open.blob.size;
        // A read past the page cache ends at the version's end whatever size
        // the kernel holds, but a shared mapping of the open reads the page
        // cache up to that size: where this read found the version and the
        // kernel surely holds another size, it fails as a page-cache one
        // would. (An open whose version was known was told its size.)
        let unsure = match file.direct {
            false => self.files.size_unsure(slot.ino, Some(size)),
            true => expected.is_none() && self.files.holds_other_size(slot.ino, size),
        };
        if unsure {
            self.stale_size(slot)?;
        }
        if file.direct && expected.is_none() && self.files.size_unsure(slot.ino, Some(size)) {
            // The kernel may hold another size (see `bind`): `stat` must
            // show the one this read found.
            self.tell_kernel(vec![Invalidation::Attributes(slot.ino)]);
        }
        Ok(content)
    }

    /// A slot bound by a read holds bytes whose size the kernel may not
    /// hold: the page cache would cut them short or pad them (a page of a
    /// mapping filled past the new end), so the read fails, and so does
    /// every later read of the slot (the kernel retries a failed page read
    /// at once); the kernel is told the new size for the next open.
    fn stale_size(&self, slot: &Slot) -> Result<()> {
        slot.make_stale();
        self.tell_kernel(vec![Invalidation::Attributes(slot.ino)]);
        Err(FsError::VersionOpen)
    }

    /// A read of `fh`, made with the reader's open `flags` as they are now:
    /// `O_DIRECT` may have been set since the open (`fcntl`), and then the
    /// read is past the page cache whatever the open was.
    pub fn read(&self, fh: u64, offset: u64, size: u32, flags: i32) -> Result<ReadReply> {
        let handle = self.handles.get(fh).ok_or(FsError::UnknownHandle)?;
        let file = match &*handle {
            Handle::File(file) => file,
            Handle::Snapshot(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                return Ok(ReadReply {
                    bytes: bytes[start..end].to_vec(),
                });
            }
        };
        let content = self.content(file)?;
        let past_page_cache = flags & libc::O_DIRECT != 0;
        if !file.direct {
            self.check_read_within_size(&file.slot, offset, size, past_page_cache)?;
        }
        let bytes = self.read_from(&content, offset, size)?;
        // A read past the page cache fills no page of it.
        if let (Some(version), false) = (file.slot.version(), past_page_cache) {
            self.files.read(fh, version);
        }
        Ok(ReadReply { bytes })
    }

    /// The page cache reads no page past the one that holds the last byte
    /// of the size the kernel holds: a read beyond the last page of the
    /// slot's version shows that the kernel holds a larger size (a reply
    /// it dropped for an invalidation that crossed it, which the mount
    /// cannot see), and the pages past the end would be served as zeros.
    /// It fails like a read that found a size the kernel does not hold.
    /// Unless the reader's open reads past the page cache (`O_DIRECT`, set
    /// at open or since) and the kernel surely holds the version's size:
    /// the kernel sizes such reads up to a multiple of its largest request,
    /// past the last page. (Its flags are also those of a mapping's page
    /// reads, so they alone cannot tell.)
    fn check_read_within_size(
        &self,
        slot: &Slot,
        offset: u64,
        size: u32,
        past_page_cache: bool,
    ) -> Result<()> {
        let Some(bound) = slot.size() else {
            return Ok(());
        };
        let page = rustix::param::page_size() as u64;
        let last_page_end = bound.div_ceil(page) * page;
        if offset.saturating_add(size as u64) <= last_page_end.max(page) {
            return Ok(());
        }
        if past_page_cache && !self.files.size_unsure(slot.ino, Some(bound)) {
            return Ok(());
        }
        tracing::debug!(
            ino = slot.ino,
            offset,
            size,
            bound,
            "a read past the version's last page: the kernel holds another size"
        );
        slot.make_stale();
        self.tell_kernel(vec![Invalidation::Attributes(slot.ino)]);
        Err(FsError::VersionOpen)
    }

    fn read_from(&self, content: &File, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match content.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(crate::dataset::Error::cache(e).into()),
            }
        }
        buf.truncate(filled);
        Stats::add(&self.dataset.context().stats.bytes_served, filled as u64);
        Ok(buf)
    }
}
