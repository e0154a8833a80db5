//! Opens parked until open files of another version of their file are
//! released (see [`super::KernelFiles::bind`]). A parked open holds no
//! thread: the front end keeps its reply aside with a [`Resume`], which
//! runs when the old open files' last release comes, or at the open's
//! deadline; the open is then decided again from the start. Each open is
//! known by its kernel request (`unique`), which the front end passes at
//! each attempt, so that its wait goes on where it stopped.
//!
//! Locks, in the order they are taken: the slots' `live`, then `opens`
//! here, then a slot's state. A resume runs with none of them held.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The most slots an open waits for in turn: slots of yet other versions
/// may come and go while it waits; then it fails as one that found them.
pub(super) const RELEASE_ROUNDS: usize = 4;

/// What an open may still wait for the release of open files of another
/// version of its file, kept while it is parked.
#[derive(Clone, Copy)]
pub struct ReleaseWait {
    /// The kernel request of the open, by which its front end resumes it.
    pub(super) request: u64,
    /// Set when it first finds open files of another version: the work of
    /// the open before it (a tag's revalidation, a fetch) is not counted.
    pub(super) deadline: Option<Instant>,
    pub(super) rounds: usize,
    /// Counted as an open that waited.
    pub(super) counted: bool,
    /// Its wait reached its deadline with the old open files still open.
    pub(super) outlasted: bool,
}

impl ReleaseWait {
    pub(super) fn start(request: u64) -> Self {
        ReleaseWait {
            request,
            deadline: None,
            rounds: RELEASE_ROUNDS,
            counted: false,
            outlasted: false,
        }
    }

    /// Whether it waited to its deadline in vain: the open fails at once,
    /// before anything it would do again (a revalidation of its tag that
    /// came due meanwhile, which may wait on the server).
    pub fn outlasted(&self) -> bool {
        self.outlasted
    }

    /// Takes one of its rounds; false when none is left.
    pub(super) fn take_round(&mut self) -> bool {
        let left = self.rounds > 0;
        self.rounds = self.rounds.saturating_sub(1);
        left
    }
}

/// What runs a parked open again: the front end's, holding its reply.
pub type Resume = Box<dyn FnOnce() + Send>;

/// The most opens waiting at once. Each holds a few hundred bytes and a
/// kernel request (over io_uring, a ring entry, for which its queue
/// registers another, up to 1024 a queue); past this an open fails at
/// once, as it did before it could wait.
pub const MOST_PARKED: usize = 512;

/// How long the deadline thread stays once no open waits: a burst of
/// changed files does not start one for each wait.
const TIMER_IDLE: Duration = Duration::from_secs(10);

/// What opens wait beside: the open files of one version of a file (the
/// slots' `Slot`), known here by identity alone.
pub trait Outlasting: Send + Sync + 'static {
    /// An open waiting for its last release reached its deadline.
    fn mark_outlasted(&self);
}

/// An open parked until `slot` is released.
struct Parked<S> {
    slot: Arc<S>,
    deadline: Instant,
    wait: ReleaseWait,
    /// The front end's, once given.
    resume: Option<Resume>,
}

struct Shared<S> {
    opens: Mutex<Opens<S>>,
    /// Told when an open is parked.
    parked: Condvar,
    /// Records held, waiting or between attempts: an open looks for its
    /// own only when there is one.
    records: AtomicUsize,
    waited: AtomicU64,
}

struct Opens<S> {
    /// Opens waiting for their slot's release.
    waiting: HashMap<u64, Parked<S>>,
    /// The waits of opens released or past their deadline, until their
    /// next attempt takes them; and of attempts that must go on where
    /// they may wait.
    between_attempts: HashMap<u64, ReleaseWait>,
    /// The thread that resumes opens at their deadline is running.
    timer: bool,
}

impl<S> Opens<S> {
    /// Ends the wait of the waiting opens `which` picks (`outlasted`: at
    /// their deadline), giving back their resumes, to run once the lock is
    /// let go.
    fn make_due(&mut self, which: impl Fn(&Parked<S>) -> bool, outlasted: bool) -> Vec<Resume> {
        let due: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, parked)| which(parked))
            .map(|(request, _)| *request)
            .collect();
        let mut resumes = Vec::new();
        for request in due {
            let mut parked = self.waiting.remove(&request).expect("waiting");
            parked.wait.outlasted = outlasted;
            self.between_attempts.insert(request, parked.wait);
            resumes.extend(parked.resume);
        }
        resumes
    }
}

thread_local! {
    /// Resumes met while this thread runs others (a resumed open that
    /// releases a slot of its own, one parked again and due at once): run
    /// after them, not inside them.
    static LATER: RefCell<Option<Vec<Resume>>> = const { RefCell::new(None) };
}

/// Runs each resume, one's panic stopping none of the others (each holds
/// a reply that must be answered). Resumes run by a resume are queued and
/// run once it returns, so that no chain of them deepens the stack.
pub fn run_all(resumes: Vec<Resume>) {
    let running = LATER.with(|later| match &mut *later.borrow_mut() {
        Some(queued) => {
            queued.extend(resumes);
            None
        }
        none => {
            *none = Some(Vec::new());
            Some(resumes)
        }
    });
    let Some(mut next) = running else {
        return;
    };
    // Bounded: each resume answers or parks one open.
    loop {
        for resume in next {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(resume));
        }
        next = LATER.with(|later| {
            let mut later = later.borrow_mut();
            let queued = std::mem::take(later.as_mut().expect("running"));
            if queued.is_empty() {
                *later = None;
            }
            queued
        });
        if next.is_empty() {
            return;
        }
    }
}

pub struct Parking<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Default for Parking<S> {
    fn default() -> Self {
        Parking {
            shared: Arc::new(Shared {
                opens: Mutex::new(Opens {
                    waiting: HashMap::new(),
                    between_attempts: HashMap::new(),
                    timer: false,
                }),
                parked: Condvar::new(),
                records: AtomicUsize::new(0),
                waited: AtomicU64::new(0),
            }),
        }
    }
}

impl<S: Outlasting> Parking<S> {
    /// Starts the thread that keeps the deadlines unless it runs; false if
    /// it cannot be started. Called before the slots' lock is taken, so
    /// that a thread is seldom started under it.
    pub fn start_timer(&self) -> bool {
        let mut opens = self.shared.opens.lock();
        self.start_timer_locked(&mut opens)
    }

    /// Parks the open of `wait` until `slot` is released, or `deadline`;
    /// false if it cannot be (too many waiting, no thread for the
    /// deadlines): it fails at once then.
    pub fn park(&self, slot: Arc<S>, deadline: Instant, mut wait: ReleaseWait) -> bool {
        let mut opens = self.shared.opens.lock();
        if opens.waiting.len() >= MOST_PARKED || !self.start_timer_locked(&mut opens) {
            return false;
        }
        if !std::mem::replace(&mut wait.counted, true) {
            self.shared.waited.fetch_add(1, Ordering::Relaxed);
        }
        let parked = Parked {
            slot,
            deadline,
            wait,
            resume: None,
        };
        // An attempt takes its wait back first: it is held nowhere else.
        debug_assert!(!opens.between_attempts.contains_key(&wait.request));
        if opens.waiting.insert(wait.request, parked).is_none() {
            self.shared.records.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.parked.notify_one();
        true
    }

    /// The resume of the open parked as `request`: run now if its wait is
    /// over (its slot released, its deadline passed, or not parked at all).
    pub fn resume_with(&self, request: u64, resume: Resume) {
        let mut opens = self.shared.opens.lock();
        match opens.waiting.get_mut(&request) {
            Some(parked) => {
                debug_assert!(
                    parked.resume.is_none(),
                    "a second resume for request {request}"
                );
                parked.resume = Some(resume);
            }
            None => {
                drop(opens);
                run_all(vec![resume]);
            }
        }
    }

    /// Takes back the wait of the open `request` for its next attempt,
    /// once resumed; none for a new open.
    pub fn take_wait(&self, request: u64) -> Option<ReleaseWait> {
        // Every open asks: a lock only while some open waits.
        if self.shared.records.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut opens = self.shared.opens.lock();
        // The front end asks again only once resumed: an open still
        // waiting would have its resume, and with it the reply, dropped.
        debug_assert!(
            !opens.waiting.contains_key(&request),
            "request {request} asked again while parked"
        );
        let wait = opens.between_attempts.remove(&request)?;
        self.shared.records.fetch_sub(1, Ordering::Relaxed);
        Some(wait)
    }

    /// Keeps the wait of an attempt that stopped where it would wait (in
    /// quick mode) for the attempt that goes on.
    pub fn give_back(&self, wait: ReleaseWait) {
        let mut opens = self.shared.opens.lock();
        if opens.between_attempts.insert(wait.request, wait).is_none() {
            self.shared.records.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `slot`'s last open was released: the opens parked on it are due;
    /// their resumes, to [`run_all`] once the caller's locks are let go.
    #[must_use]
    pub fn released(&self, slot: &Arc<S>) -> Vec<Resume> {
        self.shared
            .opens
            .lock()
            .make_due(|parked| Arc::ptr_eq(&parked.slot, slot), false)
    }

    /// Opens waiting now, and all that waited.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.opens.lock().waiting.len() as u64,
            self.shared.waited.load(Ordering::Relaxed),
        )
    }

    fn start_timer_locked(&self, opens: &mut Opens<S>) -> bool {
        if opens.timer {
            return true;
        }
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("release-waits".into())
            .spawn(move || Self::resume_at_deadlines(&shared));
        match started {
            Ok(_) => {
                opens.timer = true;
                true
            }
            Err(e) => {
                tracing::warn!("cannot start the thread of opens waiting for a release: {e}");
                false
            }
        }
    }

    /// Resumes each parked open whose deadline passed with its slot still
    /// open, the slot marked as waited out (the next opens beside it fail
    /// at once); ends once no open has waited for [`TIMER_IDLE`].
    fn resume_at_deadlines(shared: &Shared<S>) {
        // Whatever ends the thread, a panic too, the next park starts
        // another.
        struct Ended<'a, S>(&'a Shared<S>);
        impl<S> Drop for Ended<'_, S> {
            fn drop(&mut self) {
                self.0.opens.lock().timer = false;
            }
        }
        let mut opens = shared.opens.lock();
        let ended = Ended(shared);
        loop {
            let now = Instant::now();
            let due = opens.make_due(
                |parked| {
                    let late = parked.deadline <= now;
                    if late {
                        parked.slot.mark_outlasted();
                    }
                    late
                },
                true,
            );
            if !due.is_empty() {
                drop(opens);
                run_all(due);
                opens = shared.opens.lock();
                continue;
            }
            let next = opens.waiting.values().map(|parked| parked.deadline).min();
            match next {
                Some(next) => {
                    shared.parked.wait_until(&mut opens, next);
                }
                None => {
                    if shared.parked.wait_for(&mut opens, TIMER_IDLE).timed_out()
                        && opens.waiting.is_empty()
                    {
                        opens.timer = false;
                        drop(opens);
                        std::mem::forget(ended);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_run_by_a_resume_run_after_it_and_a_panic_stops_none() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = |what: &'static str| {
            let order = order.clone();
            move || order.lock().push(what)
        };
        let (outer_start, outer_end, nested, last) =
            (log("outer"), log("outer done"), log("nested"), log("last"));
        run_all(vec![
            Box::new(|| panic!("a resume that panics")),
            Box::new(move || {
                outer_start();
                run_all(vec![Box::new(nested)]);
                outer_end();
            }),
            Box::new(last),
        ]);
        assert_eq!(*order.lock(), ["outer", "outer done", "last", "nested"]);
        // Done: the next run starts afresh.
        run_all(vec![Box::new(log("again"))]);
        assert_eq!(order.lock().last(), Some(&"again"));
    }
}
