//! Each file as the kernel holds it, with one owner: the version its open
//! files are bound to (`slots`), the size the kernel was told, how each
//! open is read (`io_modes`: page cache, kept pages, passthrough) and the
//! version of the pages the kernel keeps. The core decides each open here
//! once, as an [`Open`]; a front end obeys the decision and has no state
//! of its own with which to refuse or change it.

mod io_modes;
mod parking;
mod slots;

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::dataset::Opened;
use crate::digest::Sha256Digest;
use crate::fs::error::FsError;
use io_modes::{Decision, IoModes};
pub use parking::{ReleaseWait, Resume};
pub use slots::{Bound, Slot};
use slots::{Join, Park, Settled, Slots};

/// How the kernel reads an open file.
#[derive(Debug)]
pub enum ReadMode<B> {
    /// Every read comes to the daemon, past the page cache: content whose
    /// size changes as it is read (the statistics).
    Direct,
    /// Through the kernel's page cache, filled with the open's version.
    /// `keep_pages`: the pages it already holds are of that version, and
    /// may be kept; otherwise the kernel drops them at the open.
    PageCache { keep_pages: bool },
    /// Passed through to this backing file: the cached bytes of the
    /// open's version, which the kernel reads by itself.
    Passthrough(Arc<B>),
}

/// An open as the core decided it, once: what a front end answers with.
///
/// A front end without opens (NFS) would give out a file handle carrying
/// `version`, and bind each request made with it to that version (as the
/// inode of FUSE's no-open mode is bound by its first read, see
/// `FsCore::read_inode`), with the same rules: a handle of another version
/// than the one being served is stale, never served other bytes.
#[derive(Debug)]
pub struct Open<B> {
    pub fh: u64,
    /// The version the open is bound to, when known at open (otherwise its
    /// first read binds it).
    pub version: Option<Sha256Digest>,
    /// The size of that version, the one the kernel is given while the
    /// open lives, when known.
    pub size: Option<u64>,
    pub mode: ReadMode<B>,
}

/// The backing file of a front end that has none: no open is ever passed
/// through.
#[derive(Debug)]
pub enum NoBacking {}

/// The most bytes of cached files kept registered for passthrough past
/// their inode's last open.
const KEPT_REGISTRATION_BYTES: u64 = 256 << 20;

/// How an open was bound.
pub enum Joined {
    Bound(Arc<Slot>),
    /// Open files of another version were released while it waited: it
    /// must be decided again.
    Released,
}

/// The longest an open waits for the release of open files of another
/// version of its file, in all (see [`KernelFiles::bind`]): the kernel
/// sends a release a moment after the last `close` returns, later on a
/// busy machine, and lets no signal end an open the mount answers.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// No size reported (a directory, or not yet known).
const NO_SIZE: u64 = u64::MAX;

pub struct KernelFiles<B> {
    slots: Slots,
    modes: Mutex<IoModes<B>>,
    /// The sizes given to the kernel, to tell when its copy is stale.
    given: Mutex<Given>,
    /// Whether cached files may be handed to the kernel to read by itself:
    /// offered by the front end, withdrawn when it fails to register one.
    passthrough: AtomicBool,
}

impl<B> KernelFiles<B> {
    /// `cache_cap`: the cap on the cache's content (0: none), an eighth of
    /// which, at most 256 MiB, registrations kept for passthrough may hold.
    pub fn new(cache_cap: u64) -> Self {
        let kept_bytes = match cache_cap {
            0 => KEPT_REGISTRATION_BYTES,
            cap => (cap / 8).min(KEPT_REGISTRATION_BYTES),
        };
        KernelFiles {
            slots: Slots::default(),
            modes: Mutex::new(IoModes::new(kept_bytes)),
            given: Mutex::new(Given::default()),
            passthrough: AtomicBool::new(false),
        }
    }

    /// Cached files may be passed through from now on (`on`), or not.
    pub fn set_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
    }

    /// The version whose bytes the kernel reads for `ino` by itself (pages
    /// it kept, or the backing file of opens still open): an open of that
    /// version needs no bytes at hand, unless one of its reads reaches the
    /// daemon (pages reclaimed), which fetches them then.
    pub fn version_held(&self, ino: u64) -> Option<Sha256Digest> {
        self.modes.lock().version_held(ino)
    }

    /// Whether files of `ino` are open.
    pub fn is_open(&self, ino: u64) -> bool {
        self.slots.is_open(ino)
    }

    /// Whether cached files may be passed through now.
    pub fn passes_through(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// Takes the wait of the open made by kernel request `request`: where
    /// it stopped, when it was parked and is resumed; else a new one.
    pub fn take_release_wait(&self, request: u64) -> ReleaseWait {
        self.slots
            .take_wait(request)
            .unwrap_or_else(|| ReleaseWait::start(request))
    }

    /// Keeps `wait` for the next attempt of its open, this one having
    /// stopped where it would wait (quick mode): its deadline, rounds and
    /// count go on.
    pub fn give_back_release_wait(&self, wait: ReleaseWait) {
        if wait.deadline.is_some() {
            self.slots.give_back_wait(wait);
        }
    }

    /// What answers the open parked as `request` once it is due (see
    /// [`KernelFiles::bind`]): at once, if it is already.
    pub fn resume_when_released(&self, request: u64, resume: Resume) {
        self.slots.resume_with(request, resume);
    }

    /// Binds a new open of `ino`, whose version the dataset gave as
    /// `opened`, to the inode's slot. Beside a bound slot whose version
    /// the open cannot vouch for yet, `settle` fetches the open's bytes of
    /// that version (no lock is held meanwhile): they must be the same.
    /// Beside open files of another version, the open fails, unless it may
    /// `wait` for their release (the front end releases its opens; the
    /// kernel's implicit ones are not): then it is parked, holding no
    /// thread ([`FsError::WaitsForRelease`]), and its front end resumes it
    /// with [`KernelFiles::resume_when_released`]; once they are released
    /// (or at its deadline), it is decided again from the start, the tag
    /// may have moved meanwhile ([`Joined::Released`] when they were
    /// released while it was being decided).
    pub fn bind(
        &self,
        ino: u64,
        opened: &Opened,
        wait: Option<&mut ReleaseWait>,
        settle: impl FnOnce(Sha256Digest) -> Result<Opened, FsError>,
    ) -> Result<Joined, FsError> {
        // The kernel was last given the size of a version open then, and
        // closed since, not the file's: a first read of a version whose
        // size is not known yet would find another size and fail. The
        // kernel retries an open that fails so after looking the file up
        // again, which gives it the file's size (see `FsError::LookUpAgain`).
        if wait.is_some()
            && opened.size().is_none()
            && self.given.lock().of_open_version(ino)
            && !self.slots.is_open(ino)
        {
            return Err(FsError::LookUpAgain);
        }
        let old = match self.slots.join(ino, opened) {
            Join::Bound(slot) => return Ok(Joined::Bound(slot)),
            Join::Stale(old) => old,
            Join::Settle(slot, version) => {
                match self.slots.join_settled(ino, &slot, settle(version))? {
                    Settled::Bound(slot) => return Ok(Joined::Bound(slot)),
                    Settled::Stale(old) => old,
                    Settled::Gone(e) => {
                        return match wait.is_some_and(ReleaseWait::take_round) {
                            true => Ok(Joined::Released),
                            false => Err(e),
                        };
                    }
                }
            }
        };
        let Some(wait) = wait else {
            return Err(FsError::VersionOpen);
        };
        if !wait.take_round() {
            return Err(FsError::VersionOpen);
        }
        let deadline = *wait
            .deadline
            .get_or_insert_with(|| Instant::now() + RELEASE_WAIT);
        if Instant::now() >= deadline {
            return Err(FsError::VersionOpen);
        }
        match self.slots.park(&old, deadline, *wait) {
            Park::Parked => Err(FsError::WaitsForRelease {
                request: wait.request,
            }),
            Park::Released => Ok(Joined::Released),
            Park::Refused => Err(FsError::VersionOpen),
        }
    }

    /// Opens parked for another version's release now, and all that were.
    pub fn release_waits(&self) -> (u64, u64) {
        self.slots.waits()
    }

    /// How the kernel reads the open `fh` of `slot`, decided against the
    /// inode's other opens and recorded until [`KernelFiles::release`].
    /// Its bytes are passed through when they are a cached file
    /// (`in_memory`: the open's own bytes were made by the mount, never
    /// passed through) and no open of the inode reads the page cache:
    /// `register` hands the file to the kernel, and when that fails the
    /// open reads the page cache, and so does every later one. An error:
    /// the kernel allows no open of the inode now (still passed through to
    /// other bytes); the open must be released. `size_unsure`: the kernel
    /// may hold another size than the version's, so an open that is not
    /// passed through reads past the page cache.
    pub fn admit(
        &self,
        fh: u64,
        slot: &Slot,
        in_memory: bool,
        size_unsure: bool,
        o_direct: bool,
        register: impl FnOnce(&File) -> io::Result<B>,
    ) -> Result<ReadMode<B>, FsError> {
        let (ino, version) = (slot.ino, slot.version());
        // An `O_DIRECT` open is not passed through unless the kernel insists
        // (the inode's other opens are): the backing file would be read
        // with `O_DIRECT` too, under its filesystem's alignment rules, where
        // a FUSE file has none.
        let passable = !in_memory && !slot.in_memory() && !o_direct && self.passes_through();
        let cached = match slot.for_read() {
            Ok(Bound::Content(file)) if passable => {
                file.metadata().ok().map(|m| (file, m.ino(), m.len()))
            }
            _ => None,
        };
        // Decided and recorded under one lock: concurrent opens of an inode
        // agree on its mode.
        let mut modes = self.modes.lock();
        match modes.decide(ino, passable, cached.as_ref().map(|(_, i, _)| *i), version) {
            Decision::Reuse(id) => {
                modes.reused(fh, ino);
                return Ok(ReadMode::Passthrough(id));
            }
            Decision::Register => {
                let (file, file_ino, size) = cached.expect("a cached file to register");
                match register(&file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        modes.registered(fh, ino, file_ino, version, size, id.clone());
                        return Ok(ReadMode::Passthrough(id));
                    }
                    Err(e) => {
                        self.set_passthrough(false);
                        tracing::info!(
                            "FUSE passthrough is not available ({e}); cached files are read through matvisfs"
                        );
                    }
                }
            }
            Decision::Stale => return Err(FsError::VersionOpen),
            Decision::Ordinary => {}
        }
        // The kernel may hold another size than the version's (it was
        // told, and may have dropped the answer): reads past the page cache,
        // which a wrong size cannot end early.
        if size_unsure {
            modes.opened_direct(fh, ino);
            return Ok(ReadMode::Direct);
        }
        let keep_pages = modes.opened_caching(fh, ino, version);
        Ok(ReadMode::PageCache { keep_pages })
    }

    /// A read of the open `fh` returned bytes of `version`: the pages a
    /// page-cache open holds are of it.
    pub fn read(&self, fh: u64, version: Sha256Digest) {
        self.modes.lock().read_caching(fh, version);
    }

    /// The open `fh` of `slot` was released.
    pub fn release(&self, fh: u64, slot: &Arc<Slot>) {
        self.modes.lock().released(fh);
        parking::run_all(self.slots.leave(slot));
    }

    /// The kernel has no inode for `ino` any more (its last lookup was
    /// forgotten), so no pages of it. The sizes given stay: a lookup that
    /// crossed the forget may have given the kernel a new inode with one.
    pub fn forgotten(&self, ino: u64) {
        self.modes.lock().forgotten(ino);
    }

    /// The size to give the kernel for `ino`, recorded as given: while
    /// files of it are open, the size of the version they are bound to
    /// (the kernel has one page cache per inode), else `current` (`None`:
    /// not a file).
    pub fn report_size(&self, ino: u64, current: Option<u64>) -> Option<u64> {
        let open_version = self.slots.live_size(ino);
        let size = current.map(|current| open_version.unwrap_or(current));
        let mut given = self.given.lock();
        given.set(ino, size);
        given.set_of_open_version(ino, size.is_some() && size != current);
        size
    }

    /// The size last given to the kernel for `ino`.
    pub fn reported_size(&self, ino: u64) -> Option<u64> {
        self.given.lock().size(ino)
    }

    /// Whether the kernel holds another size for `ino` than `size`, the
    /// size of the version an open was bound to: then it must ask again
    /// before its next read.
    pub fn holds_other_size(&self, ino: u64, size: u64) -> bool {
        self.reported_size(ino).is_some_and(|held| held != size)
    }

    /// Whether the kernel may hold another size for `ino` than `size`, the
    /// size of an open's version (`None`: not known yet, so it may be any):
    /// it was given another one last, or more than one this session.
    pub fn size_unsure(&self, ino: u64, size: Option<u64>) -> bool {
        let Some(size) = size else {
            return true;
        };
        let given = self.given.lock();
        given.resized(ino) || given.size(ino).is_some_and(|held| held != size)
    }

    /// The kernel is about to be given a size that is not the file's (a
    /// listing's placeholder for a size not known yet): from now on it may
    /// hold any size for `ino`. Called before the placeholder is counted,
    /// so that no open decided after the kernel takes it trusts its size.
    pub fn give_placeholder(&self, ino: u64) {
        self.given.lock().mark_resized(ino);
    }
}

/// The sizes given to the kernel this session, dense by inode number, like
/// the inode table, whose numbers are the only ones given here.
#[derive(Default)]
struct Given {
    /// The size last given for each inode.
    sizes: Vec<u64>,
    /// A bit for each inode given more than one size this session: the
    /// kernel may hold any of them (a reply that gives it a new one is
    /// dropped when an invalidation crosses it), whatever was given last.
    resized: Vec<u64>,
    /// A bit for each inode whose size given last was that of a version
    /// open then, which is not the file's as the mount knew it.
    of_open_version: Vec<u64>,
}

impl Given {
    fn size(&self, ino: u64) -> Option<u64> {
        let size = *self.sizes.get(usize::try_from(ino).ok()?)?;
        (size != NO_SIZE).then_some(size)
    }

    fn resized(&self, ino: u64) -> bool {
        bit(&self.resized, ino)
    }

    fn mark_resized(&mut self, ino: u64) {
        set_bit(&mut self.resized, ino, true);
    }

    fn of_open_version(&self, ino: u64) -> bool {
        bit(&self.of_open_version, ino)
    }

    fn set_of_open_version(&mut self, ino: u64, of_open_version: bool) {
        set_bit(&mut self.of_open_version, ino, of_open_version);
    }

    fn set(&mut self, ino: u64, size: Option<u64>) {
        let Ok(index) = usize::try_from(ino) else {
            return;
        };
        if self.sizes.len() <= index {
            self.sizes.resize(index + 1, NO_SIZE);
        }
        let given = size.unwrap_or(NO_SIZE);
        let last = self.sizes[index];
        // A file's size, then another, or no file there (which forgets the
        // size, not that one was given): the kernel may hold either.
        if last != NO_SIZE && last != given {
            self.mark_resized(ino);
        }
        self.sizes[index] = given;
    }
}

fn bit(bits: &[u64], ino: u64) -> bool {
    let Ok(index) = usize::try_from(ino) else {
        return false;
    };
    bits.get(index / 64)
        .is_some_and(|word| word & (1 << (index % 64)) != 0)
}

fn set_bit(bits: &mut Vec<u64>, ino: u64, value: bool) {
    let Ok(index) = usize::try_from(ino) else {
        return;
    };
    if bits.len() <= index / 64 {
        if !value {
            return;
        }
        bits.resize(index / 64 + 1, 0);
    }
    match value {
        true => bits[index / 64] |= 1 << (index % 64),
        false => bits[index / 64] &= !(1 << (index % 64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(version: &str, size: u64) -> Opened {
        Opened::Proven(crate::store::Blob {
            digest: Sha256Digest::of(version.as_bytes()),
            size,
        })
    }

    fn unused(_: Sha256Digest) -> Result<Opened, FsError> {
        unreachable!("no open to settle")
    }

    #[test]
    fn the_kernel_is_told_the_open_versions_size_until_its_last_open_closes() {
        let files = KernelFiles::<NoBacking>::new(1 << 30);
        assert_eq!(files.report_size(5, Some(3)), Some(3));
        assert_eq!(files.reported_size(5), Some(3));
        let Joined::Bound(slot) = files.bind(5, &opened("a", 3), None, unused).unwrap() else {
            panic!("nothing else is open");
        };
        // The server's copy grew: the kernel keeps the open version's size.
        assert_eq!(files.report_size(5, Some(9)), Some(3));
        assert!(files.holds_other_size(5, 9) && !files.holds_other_size(5, 3));
        files.release(1, &slot);
        assert!(!files.size_unsure(5, Some(3)) && files.size_unsure(5, None));
        assert_eq!(files.report_size(5, Some(9)), Some(9));
        assert_eq!(files.reported_size(5), Some(9));
        // Given two sizes: the kernel may hold either, from now on.
        assert!(files.size_unsure(5, Some(9)));
        assert!(!files.size_unsure(7, Some(1)));
        // Not a file: no size.
        assert_eq!(files.report_size(6, None), None);
        assert_eq!(files.reported_size(6), None);
        // A file, then none there, then a file again: two sizes given.
        assert_eq!(files.report_size(8, Some(2)), Some(2));
        assert_eq!(files.report_size(8, None), None);
        assert_eq!(files.report_size(8, Some(5)), Some(5));
        assert!(files.size_unsure(8, Some(5)));
        // A placeholder: whatever size is given later, the kernel may hold
        // the placeholder's (inodes far apart, each its own).
        files.give_placeholder(130);
        assert_eq!(files.report_size(130, Some(4)), Some(4));
        assert!(files.size_unsure(130, Some(4)));
        assert_eq!(files.report_size(129, Some(4)), Some(4));
        assert!(!files.size_unsure(129, Some(4)) && !files.size_unsure(131, Some(4)));
    }

    #[test]
    fn an_open_is_parked_from_its_first_wait_and_implicit_opens_never_wait() {
        let files = KernelFiles::<NoBacking>::new(1 << 30);
        let Joined::Bound(old) = files.bind(5, &opened("a", 3), None, unused).unwrap() else {
            panic!("nothing else is open");
        };
        // The kernel's implicit opens are never released: no wait.
        assert!(matches!(
            files.bind(5, &opened("b", 3), None, unused),
            Err(FsError::VersionOpen)
        ));
        assert_eq!(files.release_waits(), (0, 0));
        // An open whose work before its wait (a tag's revalidation, a
        // fetch) took longer than the whole wait still waits: parked.
        let mut late = files.take_release_wait(11);
        std::thread::sleep(RELEASE_WAIT + Duration::from_millis(100));
        assert!(matches!(
            files.bind(5, &opened("b", 3), Some(&mut late), unused),
            Err(FsError::WaitsForRelease { request: 11 })
        ));
        assert_eq!(files.release_waits(), (1, 1));
        let (resume, resumed) = std::sync::mpsc::channel();
        files.resume_when_released(
            11,
            Box::new(move || {
                let _ = resume.send(());
            }),
        );
        // Resumed on the thread of the release.
        files.release(1, &old);
        resumed.try_recv().expect("resumed by the release");
        let mut again = files.take_release_wait(11);
        assert!(again.counted && again.deadline.is_some());
        assert_eq!(files.release_waits(), (0, 1));
        assert!(matches!(
            files.bind(5, &opened("b", 3), Some(&mut again), unused),
            Ok(Joined::Bound(_))
        ));
    }

    #[test]
    fn a_resumed_open_that_stops_where_it_would_wait_keeps_its_wait() {
        let files = KernelFiles::<NoBacking>::new(1 << 30);
        let Joined::Bound(old) = files.bind(5, &opened("a", 3), None, unused).unwrap() else {
            panic!("nothing else is open");
        };
        let mut wait = files.take_release_wait(12);
        assert!(matches!(
            files.bind(5, &opened("b", 3), Some(&mut wait), unused),
            Err(FsError::WaitsForRelease { request: 12 })
        ));
        files.release(1, &old);
        let resumed = files.take_release_wait(12);
        assert!(resumed.counted && resumed.rounds == parking::RELEASE_ROUNDS - 1);
        // Its quick attempt stops before it binds (a revalidation to make):
        // the attempt that goes on keeps the wait.
        files.give_back_release_wait(resumed);
        let again = files.take_release_wait(12);
        assert_eq!(
            (again.deadline, again.rounds, again.counted),
            (resumed.deadline, resumed.rounds, true)
        );
        assert_eq!(files.release_waits(), (0, 1));
        // A new open's wait, never parked, is kept nowhere.
        files.give_back_release_wait(files.take_release_wait(13));
        assert!(files.take_release_wait(13).deadline.is_none());
        assert_eq!(files.slots.take_wait(13).map(|w| w.request), None);
    }

    #[test]
    fn an_open_of_unknown_size_after_the_kernel_was_given_a_closed_versions_size_looks_it_up_again()
    {
        let files = KernelFiles::<NoBacking>::new(1 << 30);
        assert_eq!(files.report_size(5, Some(3)), Some(3));
        let Joined::Bound(old) = files.bind(5, &opened("a", 3), None, unused).unwrap() else {
            panic!("nothing else is open");
        };
        // The file changed to 9 bytes while version "a" is open: the kernel
        // is given 3.
        assert_eq!(files.report_size(5, Some(9)), Some(3));
        // Still open: the open, whose bytes are found to be another
        // version's, waits for it.
        let mut wait = files.take_release_wait(21);
        assert!(matches!(
            files.bind(5, &Opened::Unproven, Some(&mut wait), |_| Ok(opened(
                "b", 9
            ))),
            Err(FsError::WaitsForRelease { request: 21 })
        ));
        files.resume_when_released(21, Box::new(|| {}));
        files.release(1, &old);
        // Closed: an open whose version's size is not known fails so that
        // the kernel looks the file up again; one whose size is known, or
        // the kernel's implicit one (never retried), goes on.
        let mut wait = files.take_release_wait(21);
        assert!(matches!(
            files.bind(5, &Opened::Unproven, Some(&mut wait), unused),
            Err(FsError::LookUpAgain)
        ));
        let mut other = files.take_release_wait(22);
        let Joined::Bound(known) = files
            .bind(5, &opened("b", 9), Some(&mut other), unused)
            .unwrap()
        else {
            panic!("nothing else is open");
        };
        files.release(2, &known);
        let Joined::Bound(implicit) = files.bind(5, &Opened::Unproven, None, unused).unwrap()
        else {
            panic!("nothing else is open");
        };
        files.release(3, &implicit);
        // Given the file's size (the lookup of the kernel's retry): bound.
        assert_eq!(files.report_size(5, Some(9)), Some(9));
        let mut retried = files.take_release_wait(23);
        assert!(matches!(
            files.bind(5, &Opened::Unproven, Some(&mut retried), unused),
            Ok(Joined::Bound(_))
        ));
        // The same size for the open version and the file: no lookup.
        assert_eq!(files.report_size(7, Some(4)), Some(4));
        let Joined::Bound(same) = files.bind(7, &opened("c", 4), None, unused).unwrap() else {
            panic!("nothing else is open");
        };
        assert_eq!(files.report_size(7, Some(4)), Some(4));
        files.release(4, &same);
        let mut wait = files.take_release_wait(24);
        assert!(matches!(
            files.bind(7, &Opened::Unproven, Some(&mut wait), unused),
            Ok(Joined::Bound(_))
        ));
    }

    #[test]
    fn an_open_settled_as_changed_once_the_slot_went_is_decided_again_when_it_may_wait() {
        let files = KernelFiles::<NoBacking>::new(1 << 30);
        let changed = || {
            Err(FsError::Dataset(crate::dataset::Error::Changed {
                path: "ambientcg/512/Rock064/color.png".into(),
            }))
        };
        for may_wait in [false, true] {
            let Joined::Bound(slot) = files.bind(5, &opened("a", 3), None, unused).unwrap() else {
                panic!("nothing else is open");
            };
            let mut wait = files.take_release_wait(3);
            // Released while the open's bytes were fetched, found changed.
            let bound = files.bind(5, &Opened::Unproven, may_wait.then_some(&mut wait), |_| {
                files.release(1, &slot);
                changed()
            });
            match may_wait {
                true => assert!(matches!(bound, Ok(Joined::Released))),
                false => assert!(matches!(
                    bound,
                    Err(FsError::Dataset(crate::dataset::Error::Changed { .. }))
                )),
            }
            assert!(!files.is_open(5));
        }
    }
}
