//! Opens parked until open files of another version of their file are
//! released (see [`super::KernelFiles::bind`]). A parked open holds no
//! thread: the front end keeps its reply aside with a [`Resume`], which
//! runs when the old open files' last release comes, or at the open's
//! deadline; the open is then decided again from the start. Each open is
//! known by its kernel request (`unique`), which the front end passes at
//! each attempt, so that its wait goes on where it stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::ReleaseWait;
use super::slots::Slot;

/// What runs a parked open again: the front end's, holding its reply.
pub type Resume = Box<dyn FnOnce() + Send>;

/// The most opens parked at once. Each holds only a few hundred bytes and
/// a kernel request (over io_uring, a ring entry, of which a queue has at
/// most 1024); past this an open fails at once, as it did before it could
/// wait.
pub const MOST_PARKED: usize = 512;

/// An open parked until `slot` is released.
struct Parked {
    slot: Arc<Slot>,
    wait: ReleaseWait,
    state: State,
}

enum State {
    /// Not released yet: the front end's resume, once given.
    Waiting(Option<Resume>),
    /// Released, or its deadline passed: its resume has run, or runs as
    /// soon as it is given.
    Due,
}

#[derive(Default)]
struct Shared {
    opens: Mutex<Opens>,
    /// Told when an open with a deadline is parked.
    parked: Condvar,
    waited: AtomicU64,
}

#[derive(Default)]
struct Opens {
    by_request: HashMap<u64, Parked>,
    /// The thread that resumes opens at their deadline is running.
    timer: bool,
}

#[derive(Default)]
pub struct Parking {
    shared: Arc<Shared>,
}

impl Parking {
    /// Parks the open of `wait` until `slot` is released, or its
    /// deadline; false if it cannot be (no room, no thread for the
    /// deadlines): it fails at once then.
    pub fn park(&self, slot: Arc<Slot>, mut wait: ReleaseWait) -> bool {
        let mut opens = self.shared.opens.lock();
        if opens.by_request.len() >= MOST_PARKED || !self.start_timer(&mut opens) {
            return false;
        }
        if !std::mem::replace(&mut wait.counted, true) {
            self.shared.waited.fetch_add(1, Ordering::Relaxed);
        }
        let request = wait.request;
        let parked = Parked {
            slot,
            wait,
            state: State::Waiting(None),
        };
        if let Some(Parked {
            state: State::Waiting(Some(resume)),
            ..
        }) = opens.by_request.insert(request, parked)
        {
            // Cannot happen: a request is parked again only once resumed.
            drop(opens);
            resume();
            return true;
        }
        self.shared.parked.notify_one();
        true
    }

    /// The resume of the open parked as `request`: run now if it is due
    /// (its slot released, its deadline passed, or not parked at all).
    pub fn resume_with(&self, request: u64, resume: Resume) {
        let mut opens = self.shared.opens.lock();
        match opens.by_request.get_mut(&request) {
            Some(Parked {
                state: State::Waiting(waiting),
                ..
            }) => *waiting = Some(resume),
            _ => {
                drop(opens);
                resume();
            }
        }
    }

    /// The wait of the open `request`, taken back by its next attempt once
    /// resumed; none for a new open.
    pub fn resumed(&self, request: u64) -> Option<ReleaseWait> {
        let parked = self.shared.opens.lock().by_request.remove(&request)?;
        Some(parked.wait)
    }

    /// `slot`'s last open was released: the opens parked on it are due;
    /// their resumes, to run once the caller's locks are let go.
    #[must_use]
    pub fn released(&self, slot: &Arc<Slot>) -> Vec<Resume> {
        Self::make_due(&mut self.shared.opens.lock(), |parked| {
            Arc::ptr_eq(&parked.slot, slot)
        })
    }

    /// Opens parked now (released ones not yet attempted again included),
    /// and all that were parked.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.opens.lock().by_request.len() as u64,
            self.shared.waited.load(Ordering::Relaxed),
        )
    }

    /// Marks due the waiting opens `which` picks, giving back the resumes
    /// to run once the lock is let go.
    fn make_due(opens: &mut Opens, which: impl Fn(&Parked) -> bool) -> Vec<Resume> {
        let mut due = Vec::new();
        for parked in opens.by_request.values_mut() {
            if matches!(parked.state, State::Waiting(_)) && which(parked) {
                if let State::Waiting(Some(resume)) =
                    std::mem::replace(&mut parked.state, State::Due)
                {
                    due.push(resume);
                }
            }
        }
        due
    }

    /// Starts the thread that resumes opens at their deadline, unless it
    /// runs; false if it cannot be started.
    fn start_timer(&self, opens: &mut Opens) -> bool {
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
    /// at once); ends once none waits.
    fn resume_at_deadlines(shared: &Shared) {
        let mut opens = shared.opens.lock();
        loop {
            let now = Instant::now();
            let outlasted = |parked: &Parked| parked.wait.deadline.is_none_or(|d| d <= now);
            let due = Self::make_due(&mut opens, |parked| {
                let late = outlasted(parked);
                if late {
                    parked.slot.outlasted_wait();
                }
                late
            });
            if !due.is_empty() {
                drop(opens);
                due.into_iter().for_each(|resume| resume());
                opens = shared.opens.lock();
                continue;
            }
            let next = opens
                .by_request
                .values()
                .filter(|parked| matches!(parked.state, State::Waiting(_)))
                .filter_map(|parked| parked.wait.deadline)
                .min();
            match next {
                Some(next) => {
                    shared.parked.wait_until(&mut opens, next);
                }
                None => {
                    opens.timer = false;
                    return;
                }
            }
        }
    }
}
