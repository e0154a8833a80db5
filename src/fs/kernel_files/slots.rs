//! The version each open file is bound to. The kernel keeps one page cache
//! (or one passthrough backing file) per inode, shared by all its open
//! files, so every open of an inode that overlaps another is bound to the
//! same version: a *slot*, alive from the first open to the last release.
//! A slot is bound at its first open when the version is known then, else
//! by its first read. An open that finds a different version while a slot
//! is alive cannot share the kernel's caches with it, and the old slot is
//! marked stale: its reads that reach the daemon fail (`ESTALE`). The open
//! may be parked until the old slot's last release (see [`Slots::park`]),
//! and fails (`ESTALE`) if it does not come. No open ever sees two versions.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::parking::{Outlasting, Parking, ReleaseWait, Resume};
use crate::dataset::Opened;
use crate::digest::Sha256Digest;
use crate::fs::error::FsError;
use crate::store::{Blob, OpenBlob};

/// A failed read is answered with the same error this long: the kernel
/// retries a failed page read at once, which would otherwise ask the
/// server twice.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

pub struct Slot {
    pub ino: u64,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    version: Option<Sha256Digest>,
    /// The size of that version, once known.
    size: Option<u64>,
    content: Option<Arc<File>>,
    /// That content is held in memory, not a file on disk.
    in_memory: bool,
    stale: bool,
    /// An open parked for its last release to the end, in vain, and none of
    /// its opens was released since: the next opens are not parked (the
    /// kernel itself opens again once after `ESTALE`).
    outlasted_wait: bool,
    failure: Option<(Instant, FsError)>,
}

impl SlotState {
    /// The version bound, and its size.
    fn blob(&self) -> Option<Blob> {
        let (digest, size) = self.version.zip(self.size)?;
        Some(Blob { digest, size })
    }
}

/// What a read of a slot can use now.
pub enum Bound {
    Content(Arc<File>),
    /// Fetch the bytes, which must be of this version when it is given.
    Fetch(Option<Blob>),
}

impl Slot {
    fn new(ino: u64, opened: &Opened) -> Arc<Slot> {
        Arc::new(Slot {
            ino,
            state: Mutex::new(SlotState {
                version: opened.version(),
                size: opened.size(),
                content: opened.content().map(|o| o.file.clone()),
                in_memory: opened.in_memory(),
                ..SlotState::default()
            }),
        })
    }

    pub fn version(&self) -> Option<Sha256Digest> {
        self.state.lock().version
    }

    /// The size of its version, once known.
    pub fn size(&self) -> Option<u64> {
        self.state.lock().size
    }

    /// Whether its bytes are held in memory (never passed through).
    pub fn in_memory(&self) -> bool {
        self.state.lock().in_memory
    }

    /// What a read needs, or why it fails at once.
    pub fn for_read(&self) -> Result<Bound, FsError> {
        let state = self.state.lock();
        if state.stale {
            return Err(FsError::VersionOpen);
        }
        if let Some(content) = &state.content {
            return Ok(Bound::Content(content.clone()));
        }
        if let Some((at, error)) = &state.failure {
            if at.elapsed() < FAILURE_MEMORY {
                return Err(error.clone());
            }
        }
        Ok(Bound::Fetch(state.blob()))
    }

    /// Binds the slot to bytes fetched for a read. Another read may have
    /// bound it meanwhile: its bytes win, and different ones make it stale.
    pub fn bind(&self, open: &OpenBlob) -> Result<Arc<File>, FsError> {
        let mut state = self.state.lock();
        let digest = open.blob.digest;
        if state.stale || state.version.is_some_and(|v| v != digest) {
            state.stale = true;
            return Err(FsError::VersionOpen);
        }
        state.version = Some(digest);
        state.size = Some(open.blob.size);
        if state.content.is_none() {
            state.content = Some(open.file.clone());
            state.in_memory = open.in_memory;
        }
        Ok(state.content.clone().expect("bound"))
    }

    pub fn failed(&self, error: &FsError) {
        self.state.lock().failure = Some((Instant::now(), error.clone()));
    }

    pub fn make_stale(&self) {
        self.state.lock().stale = true;
    }
}

impl Outlasting for Slot {
    fn mark_outlasted(&self) {
        self.state.lock().outlasted_wait = true;
    }
}

/// Whether an open was parked beside a slot.
pub enum Park {
    Parked,
    /// The slot was released already: the open must be decided again.
    Released,
    /// It may not wait: waited out in vain, or too many parked.
    Refused,
}

/// How a new open relates to the open files of its inode.
pub enum Join {
    /// Bound to the inode's slot (new or shared).
    Bound(Arc<Slot>),
    /// A slot of this version is alive, and the open's own version is not
    /// known yet: the caller must settle it (`Slots::join_settled`).
    Settle(Arc<Slot>, Sha256Digest),
    /// The inode's open files are bound to another version, or stale
    /// (another open found another version): this slot, stale now.
    Stale(Arc<Slot>),
}

/// How an open settled beside a bound slot relates to it.
pub enum Settled {
    Bound(Arc<Slot>),
    /// Its bytes are another version than this slot's, now stale.
    Stale(Arc<Slot>),
    /// The slot was released meanwhile, and the server's bytes were found
    /// changed: the open must be decided again.
    Gone(FsError),
}

#[derive(Default)]
pub struct Slots {
    live: Mutex<HashMap<u64, (Arc<Slot>, usize)>>,
    /// Opens parked until a slot's last release.
    parking: Parking<Slot>,
}

impl Slots {
    /// Binds a new open of `ino`, whose version the dataset gave as
    /// `opened`, to the inode's slot.
    pub fn join(&self, ino: u64, opened: &Opened) -> Join {
        let mut live = self.live.lock();
        let Some((slot, opens)) = live.get_mut(&ino) else {
            let slot = Slot::new(ino, opened);
            live.insert(ino, (slot.clone(), 1));
            return Join::Bound(slot);
        };
        let mut state = slot.state.lock();
        if state.stale {
            return Join::Stale(slot.clone());
        }
        match (state.version, opened.version()) {
            (Some(v), Some(w)) if v != w => {
                state.stale = true;
                Join::Stale(slot.clone())
            }
            (Some(v), None) => Join::Settle(slot.clone(), v),
            (_, version) => {
                if state.version.is_none() && version.is_some() {
                    state.version = version;
                    state.size = opened.size();
                }
                if state.content.is_none() {
                    state.content = opened.content().map(|o| o.file.clone());
                    state.in_memory = opened.in_memory();
                }
                drop(state);
                *opens += 1;
                Join::Bound(slot.clone())
            }
        }
    }

    /// Joins `slot` once the open's bytes were settled as `settled` (the
    /// slot's version, or an error).
    pub fn join_settled(
        &self,
        ino: u64,
        slot: &Arc<Slot>,
        settled: Result<Opened, FsError>,
    ) -> Result<Settled, FsError> {
        let mut live = self.live.lock();
        match live.get_mut(&ino) {
            Some((current, opens)) if Arc::ptr_eq(current, slot) => match settled {
                Ok(opened) if opened.version() == current.version() => {
                    *opens += 1;
                    Ok(Settled::Bound(current.clone()))
                }
                Ok(_) => {
                    current.make_stale();
                    Ok(Settled::Stale(current.clone()))
                }
                // The server's bytes are not the slot's: its version is over.
                Err(FsError::Dataset(crate::dataset::Error::Changed { .. })) => {
                    current.make_stale();
                    Ok(Settled::Stale(current.clone()))
                }
                Err(e) => Err(e),
            },
            // The slot closed meanwhile, or another replaced it: start over.
            _ => {
                drop(live);
                let settled = match settled {
                    Ok(settled) => settled,
                    Err(e @ FsError::Dataset(crate::dataset::Error::Changed { .. })) => {
                        return Ok(Settled::Gone(e));
                    }
                    Err(e) => return Err(e),
                };
                match self.join(ino, &settled) {
                    Join::Bound(slot) => Ok(Settled::Bound(slot)),
                    Join::Stale(old) => Ok(Settled::Stale(old)),
                    Join::Settle(..) => Err(FsError::VersionOpen),
                }
            }
        }
    }

    /// Parks the open of `wait` until `slot`'s last open is released, or
    /// `deadline` passes: the kernel sends a release a moment after the
    /// last `close` returns, so a program that closes a file and opens it
    /// again may find its own old open still there. Its front end gives
    /// [`Slots::resume_with`] what answers it then.
    pub fn park(&self, slot: &Arc<Slot>, deadline: Instant, wait: ReleaseWait) -> Park {
        if !self.parking.start_timer() {
            return Park::Refused;
        }
        // Under the lock a release takes: none comes between the check
        // and the parking.
        let live = self.live.lock();
        let alive = live
            .get(&slot.ino)
            .is_some_and(|(current, _)| Arc::ptr_eq(current, slot));
        if !alive {
            return Park::Released;
        }
        let outlasted = slot.state.lock().outlasted_wait;
        if outlasted || !self.parking.park(slot.clone(), deadline, wait) {
            return Park::Refused;
        }
        Park::Parked
    }

    /// What answers the open parked as `request` once it is due.
    pub fn resume_with(&self, request: u64, resume: Resume) {
        self.parking.resume_with(request, resume);
    }

    /// Keeps the wait of an attempt that stopped where it would wait.
    pub fn give_back_wait(&self, wait: ReleaseWait) {
        self.parking.give_back(wait);
    }

    /// Takes back the wait of a parked open for its next attempt.
    pub fn take_wait(&self, request: u64) -> Option<ReleaseWait> {
        self.parking.take_wait(request)
    }

    /// Opens waiting now, and all that waited.
    pub fn waits(&self) -> (u64, u64) {
        self.parking.counts()
    }

    /// The size of the version the open files of `ino` are bound to, while
    /// there are any: what the kernel must be told, so that it neither cuts
    /// their bytes short nor pads them. A stale slot too: no other version
    /// opens until it closes, and its pages still in the kernel are read
    /// with that size.
    pub fn live_size(&self, ino: u64) -> Option<u64> {
        let live = self.live.lock();
        let (slot, _) = live.get(&ino)?;
        slot.state.lock().size
    }

    /// Whether files of `ino` are open.
    pub fn is_open(&self, ino: u64) -> bool {
        self.live.lock().contains_key(&ino)
    }

    /// An open of `slot` was released; the resumes of the opens parked
    /// until its last release, once it is, to run.
    #[must_use]
    pub fn leave(&self, slot: &Arc<Slot>) -> Vec<Resume> {
        let mut live = self.live.lock();
        let Some((current, opens)) = live.get_mut(&slot.ino) else {
            return Vec::new();
        };
        if !Arc::ptr_eq(current, slot) {
            return Vec::new();
        }
        *opens -= 1;
        if *opens > 0 {
            // Its programs are closing it: an open may wait again.
            current.state.lock().outlasted_wait = false;
            return Vec::new();
        }
        live.remove(&slot.ino);
        self.parking.released(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(version: Option<&str>) -> Opened {
        match version {
            Some(v) => Opened::Proven(crate::store::Blob {
                digest: Sha256Digest::of(v.as_bytes()),
                size: v.len() as u64,
            }),
            None => Opened::Unproven,
        }
    }

    fn bound(join: Join) -> Arc<Slot> {
        match join {
            Join::Bound(slot) => slot,
            _ => panic!("not bound"),
        }
    }

    fn file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    fn fetched(bytes: &[u8], in_memory: bool) -> OpenBlob {
        OpenBlob {
            blob: crate::store::Blob {
                digest: Sha256Digest::of(bytes),
                size: bytes.len() as u64,
            },
            file: file(),
            in_memory,
        }
    }

    #[test]
    fn opens_of_one_inode_share_one_version() {
        let slots = Slots::default();
        let a = bound(slots.join(1, &opened(Some("a"))));
        let again = bound(slots.join(1, &opened(Some("a"))));
        assert!(Arc::ptr_eq(&a, &again));
        // Another version while the first is open: refused, and the open
        // files of the old one learn it at their next read.
        assert!(matches!(slots.join(1, &opened(Some("b"))), Join::Stale(_)));
        assert!(matches!(a.for_read(), Err(FsError::VersionOpen)));
        assert!(slots.leave(&a).is_empty());
        assert!(matches!(slots.join(1, &opened(Some("b"))), Join::Stale(_)));
        assert!(slots.leave(&again).is_empty());
        // All closed: the next open starts afresh.
        let b = bound(slots.join(1, &opened(Some("b"))));
        assert!(b.for_read().is_ok());
    }

    #[test]
    fn a_slot_bound_by_its_first_read_binds_every_open_of_it() {
        let slots = Slots::default();
        let first = bound(slots.join(1, &opened(None)));
        let second = bound(slots.join(1, &opened(None)));
        assert!(matches!(first.for_read(), Ok(Bound::Fetch(None))));
        let content = first.bind(&fetched(b"x", true)).unwrap();
        // The second open reads what the first bound, not a download of its own.
        match second.for_read() {
            Ok(Bound::Content(f)) => assert!(Arc::ptr_eq(&f, &content)),
            _ => panic!("not bound"),
        }
        // Bytes held in memory are never passed through, by any open.
        assert!(first.in_memory() && second.in_memory());
        // Other bytes fetched for it later (a concurrent read that raced)
        // make it stale.
        assert!(second.bind(&fetched(b"y", false)).is_err());
        assert!(matches!(first.for_read(), Err(FsError::VersionOpen)));
    }

    #[test]
    fn the_kernel_is_given_an_open_versions_size_until_it_closes_even_when_stale() {
        let slots = Slots::default();
        let a = bound(slots.join(1, &opened(Some("aaa"))));
        assert_eq!(slots.live_size(1), Some(3));
        // A newer version is met: refused, the old one marked stale, and its
        // pages in the kernel still read with its size.
        assert!(matches!(slots.join(1, &opened(Some("b"))), Join::Stale(_)));
        assert_eq!(slots.live_size(1), Some(3));
        assert!(slots.leave(&a).is_empty());
        assert_eq!(slots.live_size(1), None);
    }

    #[test]
    fn an_open_of_unknown_version_beside_a_bound_slot_must_be_settled() {
        let slots = Slots::default();
        let a = bound(slots.join(1, &opened(Some("a"))));
        let Join::Settle(slot, version) = slots.join(1, &opened(None)) else {
            panic!("must be settled");
        };
        assert_eq!(version, Sha256Digest::of(b"a"));
        let Ok(Settled::Bound(joined)) = slots.join_settled(1, &slot, Ok(opened(Some("a")))) else {
            panic!("not joined");
        };
        assert!(Arc::ptr_eq(&joined, &a));
        let Join::Settle(slot, _) = slots.join(1, &opened(None)) else {
            panic!("must be settled");
        };
        let Ok(Settled::Stale(old)) = slots.join_settled(1, &slot, Ok(opened(Some("b")))) else {
            panic!("another version");
        };
        assert!(Arc::ptr_eq(&old, &a));
        assert!(matches!(a.for_read(), Err(FsError::VersionOpen)));
    }

    /// Parks a new open, `request`, beside `old` until `after` from now.
    fn park(slots: &Slots, old: &Arc<Slot>, request: u64, after: Duration) -> Park {
        slots.park(old, Instant::now() + after, ReleaseWait::start(request))
    }

    /// A resume that counts its runs in `resumed`.
    fn counting(resumed: &Arc<std::sync::atomic::AtomicUsize>) -> Resume {
        let resumed = resumed.clone();
        Box::new(move || {
            resumed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    }

    #[test]
    fn an_open_of_another_version_is_parked_until_the_old_ones_last_release() {
        let slots = Slots::default();
        let a = bound(slots.join(1, &opened(Some("a"))));
        let again = bound(slots.join(1, &opened(Some("a"))));
        let Join::Stale(old) = slots.join(1, &opened(Some("b"))) else {
            panic!("another version is open");
        };
        let resumed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runs = || resumed.load(std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            park(&slots, &old, 7, Duration::from_secs(60)),
            Park::Parked
        ));
        assert_eq!(slots.waits(), (1, 1));
        slots.resume_with(7, counting(&resumed));
        // One release of two is not the last.
        assert!(slots.leave(&a).is_empty());
        assert_eq!(runs(), 0);
        slots.leave(&again).into_iter().for_each(|resume| resume());
        assert_eq!(runs(), 1);
        // Its next attempt takes its wait back, counted already.
        let taken = slots.take_wait(7).expect("parked");
        assert!(taken.counted && taken.request == 7 && !taken.outlasted());
        assert_eq!(slots.waits(), (0, 1));
        assert!(slots.take_wait(7).is_none());
        // A slot released already is not parked on: decided again.
        assert!(matches!(
            park(&slots, &old, 8, Duration::from_secs(60)),
            Park::Released
        ));
        assert_eq!(slots.waits(), (0, 1));
        // Released before its front end gave the resume: it runs as given.
        let b = bound(slots.join(1, &opened(Some("b"))));
        let Join::Stale(old) = slots.join(1, &opened(Some("c"))) else {
            panic!("another version is open");
        };
        assert!(matches!(
            park(&slots, &old, 9, Duration::from_secs(60)),
            Park::Parked
        ));
        assert!(slots.leave(&b).is_empty(), "no resume given yet");
        slots.resume_with(9, counting(&resumed));
        assert_eq!(runs(), 2);
        assert_eq!(slots.take_wait(9).map(|w| w.counted), Some(true));
        assert_eq!(slots.waits(), (0, 2));
    }

    #[test]
    fn a_parked_open_is_resumed_at_its_deadline_and_the_next_is_not_parked() {
        let slots = Slots::default();
        let a = bound(slots.join(1, &opened(Some("a"))));
        let again = bound(slots.join(1, &opened(Some("a"))));
        let Join::Stale(old) = slots.join(1, &opened(Some("b"))) else {
            panic!("another version is open");
        };
        let (resume, resumed) = std::sync::mpsc::channel();
        let started = Instant::now();
        assert!(matches!(
            park(&slots, &old, 1, Duration::from_millis(30)),
            Park::Parked
        ));
        slots.resume_with(
            1,
            Box::new(move || {
                let _ = resume.send(Instant::now());
            }),
        );
        let at = resumed.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(at >= started + Duration::from_millis(30));
        let waited_out = slots.take_wait(1).expect("parked");
        assert!(waited_out.counted && waited_out.outlasted());
        // Held open past an open's wait: the next is refused at once.
        assert!(matches!(
            park(&slots, &old, 2, Duration::from_secs(60)),
            Park::Refused
        ));
        // Its programs are closing it: an open may wait again.
        assert!(slots.leave(&a).is_empty());
        assert!(matches!(
            park(&slots, &old, 3, Duration::from_secs(60)),
            Park::Parked
        ));
        assert_eq!(slots.leave(&again).len(), 0, "no resume given yet");
        assert!(slots.take_wait(3).is_some());
        assert_eq!(slots.waits(), (0, 2));
    }

    #[test]
    fn many_opens_are_parked_at_once_holding_no_thread_up_to_a_bound() {
        let slots = Slots::default();
        let resumed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut holders = Vec::new();
        for ino in 0..super::super::parking::MOST_PARKED as u64 + 1 {
            let held = bound(slots.join(ino, &opened(Some("a"))));
            let Join::Stale(old) = slots.join(ino, &opened(Some("b"))) else {
                panic!("another version is open");
            };
            let parked = park(&slots, &old, ino, Duration::from_secs(60));
            if (ino as usize) < super::super::parking::MOST_PARKED {
                assert!(matches!(parked, Park::Parked), "{ino}");
                slots.resume_with(ino, counting(&resumed));
            } else {
                assert!(matches!(parked, Park::Refused), "past the bound");
            }
            holders.push(held);
        }
        let most = super::super::parking::MOST_PARKED as u64;
        assert_eq!(slots.waits(), (most, most));
        for held in &holders {
            slots.leave(held).into_iter().for_each(|resume| resume());
        }
        assert_eq!(
            resumed.load(std::sync::atomic::Ordering::SeqCst),
            super::super::parking::MOST_PARKED
        );
    }
}
