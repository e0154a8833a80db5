//! The version each open file is bound to. The kernel keeps one page cache
//! (or one passthrough backing file) per inode, shared by all its open
//! files, so every open of an inode that overlaps another is bound to the
//! same version: a *slot*, alive from the first open to the last release.
//! A slot is bound at its first open when the version is known then, else
//! by its first read. An open that finds a different version while a slot
//! is alive cannot share the kernel's caches with it, and the old slot is
//! marked stale: its reads that reach the daemon fail (`ESTALE`). The open
//! may wait for the old slot's last release (see [`Slots::wait_left`]),
//! and fails (`ESTALE`) if it does not come. No open ever sees two versions.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::dataset::Opened;
use crate::digest::Sha256Digest;
use crate::fs::error::FsError;
use crate::store::{Blob, OpenBlob};

/// The most opens that wait for a release at once (see
/// [`Slots::wait_left`]): each takes a thread for up to a second, one that
/// reads kernel requests or downloads; more would hold up the reads, and
/// with them the very closes they wait for (a program that reads one more
/// file before it closes the old one, the kernel's releases queued behind
/// its reads). The others fail at once, as an open beside open files of
/// another version did before it could wait.
const MOST_WAITING: u64 = 2;

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
    /// An open waited for its last release to the end, in vain, and none of
    /// its opens was released since: the next opens do not wait (the
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
    /// Told each time a slot's last open is released.
    left: Condvar,
    /// Opens waiting now in [`Slots::wait_left`], and all that did.
    waiting: AtomicU64,
    waited: AtomicU64,
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

    /// Whether an open may wait for `slot`'s last release now (see
    /// [`Slots::wait_left`]).
    pub fn may_wait(&self, slot: &Slot) -> bool {
        let _live = self.live.lock();
        self.may_wait_locked(slot)
    }

    /// [`Slots::may_wait`], `live` held: no open waited `slot` out in
    /// vain, and fewer than [`MOST_WAITING`] opens wait.
    fn may_wait_locked(&self, slot: &Slot) -> bool {
        !slot.state.lock().outlasted_wait && self.waiting.load(Ordering::Relaxed) < MOST_WAITING
    }

    /// Waits until `slot`'s last open is released, at most until
    /// `deadline`; whether it was. The kernel sends a release a moment
    /// after the last `close` returns, so a program that closes a file and
    /// opens it again may find its own old open still there. `counted`:
    /// whether the open was counted as one that waited, done at its first
    /// wait.
    pub fn wait_left(&self, slot: &Arc<Slot>, deadline: Instant, counted: &mut bool) -> bool {
        let alive = |live: &HashMap<u64, (Arc<Slot>, usize)>| {
            live.get(&slot.ino)
                .is_some_and(|(current, _)| Arc::ptr_eq(current, slot))
        };
        let mut live = self.live.lock();
        if !alive(&live) {
            return true;
        }
        // Waited out in vain, enough opens waiting, or the open's own
        // budget spent by earlier rounds: it fails at once.
        if !self.may_wait_locked(slot) || Instant::now() >= deadline {
            return false;
        }
        if !std::mem::replace(counted, true) {
            self.waited.fetch_add(1, Ordering::Relaxed);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        while alive(&live) && !self.left.wait_until(&mut live, deadline).timed_out() {}
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let left = !alive(&live);
        if !left {
            slot.state.lock().outlasted_wait = true;
        }
        left
    }

    /// Opens waiting for another version's release now, and all that did.
    pub fn waits(&self) -> (u64, u64) {
        (
            self.waiting.load(Ordering::Relaxed),
            self.waited.load(Ordering::Relaxed),
        )
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

    /// An open of `slot` was released.
    pub fn leave(&self, slot: &Arc<Slot>) {
        let mut live = self.live.lock();
        if let Some((current, opens)) = live.get_mut(&slot.ino) {
            if Arc::ptr_eq(current, slot) {
                *opens -= 1;
                if *opens == 0 {
                    live.remove(&slot.ino);
                    self.left.notify_all();
                } else {
                    // Its programs are closing it: an open may wait again.
                    current.state.lock().outlasted_wait = false;
                }
            }
        }
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
        slots.leave(&a);
        assert!(matches!(slots.join(1, &opened(Some("b"))), Join::Stale(_)));
        slots.leave(&again);
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
        slots.leave(&a);
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

    /// Waits `slot` out on another thread until `slots` says it waits,
    /// then releases `last`; whether the wait saw it go.
    fn wait_while_released(slots: &Arc<Slots>, slot: &Arc<Slot>, last: Arc<Slot>) -> bool {
        let (waiting_before, _) = slots.waits();
        let releasing = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                while slots.waits().0 == waiting_before
                    && started.elapsed() < Duration::from_secs(60)
                {
                    std::thread::yield_now();
                }
                slots.leave(&last);
            })
        };
        let left = slots.wait_left(slot, Instant::now() + Duration::from_secs(60), &mut false);
        releasing.join().unwrap();
        left
    }

    #[test]
    fn an_open_of_another_version_may_wait_for_the_old_ones_last_release() {
        let slots = Arc::new(Slots::default());
        let a = bound(slots.join(1, &opened(Some("a"))));
        let again = bound(slots.join(1, &opened(Some("a"))));
        let Join::Stale(old) = slots.join(1, &opened(Some("b"))) else {
            panic!("another version is open");
        };
        // Not released in time: the wait ends at its deadline.
        let soon = Instant::now() + Duration::from_millis(30);
        let mut counted = false;
        assert!(!slots.wait_left(&old, soon, &mut counted));
        assert!(Instant::now() >= soon);
        assert_eq!(slots.waits(), (0, 1));
        // Held open that long: the next open does not wait for it, nor an
        // open whose own budget is spent.
        assert!(!slots.wait_left(&old, Instant::now() + Duration::from_secs(60), &mut false));
        assert!(!slots.wait_left(&old, Instant::now(), &mut false));
        assert_eq!(slots.waits(), (0, 1));
        // One release of two is not the last, but its programs are closing
        // it: an open waits again, for the last.
        slots.leave(&a);
        assert!(wait_while_released(&slots, &old, again));
        assert_eq!(slots.waits(), (0, 2));
        let b = bound(slots.join(1, &opened(Some("b"))));
        assert_eq!(b.version(), Some(Sha256Digest::of(b"b")));
        // A slot already gone is not waited for, nor counted.
        assert!(slots.wait_left(&old, Instant::now(), &mut false));
        assert_eq!(slots.waits(), (0, 2));
        // An open is counted once, however many slots it waits for.
        let Join::Stale(old) = slots.join(1, &opened(Some("c"))) else {
            panic!("another version is open");
        };
        let mut counted = true;
        let soon = Instant::now() + Duration::from_millis(1);
        assert!(!slots.wait_left(&old, soon, &mut counted));
        assert_eq!(slots.waits(), (0, 2));
    }

    #[test]
    fn only_a_few_opens_wait_at_once() {
        let slots = Arc::new(Slots::default());
        let olds: Vec<_> = (1..=3)
            .map(|ino| {
                let a = bound(slots.join(ino, &opened(Some("a"))));
                let Join::Stale(old) = slots.join(ino, &opened(Some("b"))) else {
                    panic!("another version is open");
                };
                (a, old)
            })
            .collect();
        let waiters: Vec<_> = olds[..2]
            .iter()
            .map(|(_, old)| {
                let (slots, old) = (slots.clone(), old.clone());
                std::thread::spawn(move || {
                    slots.wait_left(&old, Instant::now() + Duration::from_secs(60), &mut false)
                })
            })
            .collect();
        let started = Instant::now();
        while slots.waits().0 < MOST_WAITING && started.elapsed() < Duration::from_secs(60) {
            std::thread::yield_now();
        }
        // A third open fails at once, and its slot is not marked as waited out.
        let (_, third) = &olds[2];
        assert!(!slots.may_wait(third));
        assert!(!slots.wait_left(third, Instant::now() + Duration::from_secs(60), &mut false));
        assert_eq!(slots.waits(), (MOST_WAITING, MOST_WAITING));
        for (a, _) in &olds[..2] {
            slots.leave(a);
        }
        for waiter in waiters {
            assert!(waiter.join().unwrap());
        }
        assert!(slots.may_wait(third));
    }
}
