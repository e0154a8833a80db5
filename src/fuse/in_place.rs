//! The threads reading `/dev/fuse` that run a request waiting on the
//! network themselves ([`InPlace`]), and running the session so that they
//! never keep the process alive past the connection's end ([`run`]).
//!
//! fuser's `Session::run` returns once each of its threads has left its
//! loop, which a thread waiting on the server does only when that request
//! ends: within `--timeout` an attempt, with its retries. After the kernel
//! has ended the connection (`umount -f`, `abort` under
//! `/sys/fs/fuse/connections`) no answer can reach it any more. So while
//! threads wait in place, the connection is checked each second (a poll of
//! `/dev/fuse` that returns at once); once it is gone, the session has
//! ended whatever those threads still wait on, and the process's exit ends
//! them. With no thread waiting in place, nothing is checked and no thread
//! wakes: waiting on `/dev/fuse` itself would wake at every request.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fuser::{Filesystem, Session};
use parking_lot::{Condvar, Mutex};
use rustix::event::{PollFd, PollFlags, Timespec};

/// How often the connection is checked while threads wait in place.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How many of the threads reading `/dev/fuse` may wait on a request of
/// their own (a download, a HEAD) instead of handing it to a worker: the
/// hand-off costs two thread switches a request, 4% to 12% of a cold read's
/// time on two busy cores. The rest stay free for answers from memory
/// (cached reads, lookups, releases), so a hung server never holds up
/// those.
pub(crate) struct InPlace {
    waiting: AtomicUsize,
    most: usize,
    /// The watch sleeps until a thread waits in place: the first to do so
    /// wakes it.
    watch_sleeps: AtomicBool,
    /// How the session ended, once fuser's `Session::run` returned.
    ended: Mutex<Option<io::Result<()>>>,
    changed: Condvar,
}

/// Reading threads kept free of waits: a quarter, and at least one.
fn kept_free(threads: usize) -> usize {
    (threads / 4).max(1)
}

impl InPlace {
    pub(crate) fn new(threads: usize) -> Self {
        InPlace {
            waiting: AtomicUsize::new(0),
            most: threads.saturating_sub(kept_free(threads)),
            watch_sleeps: AtomicBool::new(false),
            ended: Mutex::new(None),
            changed: Condvar::new(),
        }
    }

    /// Takes a place for one wait, given back when the guard drops; `None`
    /// when as many threads wait already.
    pub(crate) fn take(&self) -> Option<InPlaceGuard<'_>> {
        let before = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |waiting| {
                (waiting < self.most).then_some(waiting + 1)
            })
            .ok()?;
        // Sequentially consistent with the watch's store then load: either
        // it sees this wait, or this sees it asleep.
        if before == 0 && self.watch_sleeps.load(Ordering::SeqCst) {
            let _ended = self.ended.lock();
            self.changed.notify_all();
        }
        Some(InPlaceGuard(&self.waiting))
    }

    /// Records how the session ended, for [`InPlace::watch`].
    pub(crate) fn session_ended(&self, result: io::Result<()>) {
        *self.ended.lock() = Some(result);
        self.changed.notify_all();
    }

    /// Returns how the session ended, or `Ok` once `connection_ended` says
    /// the kernel ended the connection while threads waited in place (it
    /// is asked each [`CHECK_EVERY`] while some do, never otherwise).
    fn watch(&self, mut connection_ended: impl FnMut() -> bool) -> io::Result<()> {
        let mut ended = self.ended.lock();
        loop {
            if let Some(result) = ended.take() {
                return result;
            }
            if self.waiting.load(Ordering::SeqCst) == 0 {
                self.watch_sleeps.store(true, Ordering::SeqCst);
                if self.waiting.load(Ordering::SeqCst) == 0 {
                    self.changed.wait(&mut ended);
                }
                self.watch_sleeps.store(false, Ordering::SeqCst);
                if ended.is_some() {
                    continue;
                }
            }
            // A whole period before it may sleep again: threads that wait
            // in place one after the other, each for a few milliseconds,
            // wake it once a period, not once a wait.
            self.changed.wait_for(&mut ended, CHECK_EVERY);
            if ended.is_none() && connection_ended() {
                tracing::info!(
                    "the kernel ended the connection; requests still waiting on the server are dropped"
                );
                return Ok(());
            }
        }
    }
}

pub(crate) struct InPlaceGuard<'a>(&'a AtomicUsize);

impl Drop for InPlaceGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `session` until it ends (see the module's doc): `fuse` is a
/// duplicate of its `/dev/fuse`, `in_place` the waits of its filesystem.
pub fn run<FS: Filesystem + Send + Sync + 'static>(
    session: Session<FS>,
    fuse: Arc<OwnedFd>,
    in_place: Arc<InPlace>,
) -> io::Result<()> {
    let running = in_place.clone();
    std::thread::Builder::new()
        .name("session".into())
        .spawn(move || {
            // A panic ends the session with an error rather than leaving
            // the watch asleep for good.
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.run()))
                .unwrap_or_else(|_| Err(io::Error::other("the FUSE session panicked")));
            running.session_ended(ended)
        })?;
    in_place.watch(|| connection_ended(fuse.as_fd()))
}

/// Whether the kernel has ended the connection of `fuse`: it then polls as
/// an error. A poll that returns at once joins no wait queue.
fn connection_ended(fuse: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fuse, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&Timespec::default())) {
        Ok(_) => fds[0].revents().contains(PollFlags::ERR),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_quarter_of_the_reading_threads_never_wait_in_place() {
        for (threads, most) in [(1, 0), (2, 1), (4, 3), (16, 12), (64, 48)] {
            let in_place = InPlace::new(threads);
            let taken: Vec<_> = std::iter::from_fn(|| in_place.take())
                .take(threads)
                .collect();
            assert_eq!(taken.len(), most, "{threads} threads");
            drop(taken);
            assert_eq!(in_place.waiting.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn a_place_given_back_can_be_taken_again_even_after_a_panic() {
        let in_place = InPlace::new(2);
        let first = in_place.take().expect("one of two threads may wait");
        assert!(in_place.take().is_none(), "the other stays free");
        drop(first);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _waiting = in_place.take().expect("given back");
            panic!("the request failed");
        }));
        assert!(panicked.is_err());
        assert!(in_place.take().is_some(), "given back by the panic too");
    }

    #[test]
    fn the_watch_returns_how_the_session_ended() {
        let in_place = Arc::new(InPlace::new(4));
        let ending = in_place.clone();
        let session = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ending.session_ended(Err(io::Error::other("gone")));
        });
        let result = in_place.watch(|| panic!("no thread waited in place"));
        assert_eq!(result.unwrap_err().to_string(), "gone");
        session.join().unwrap();
    }

    #[test]
    fn the_watch_checks_the_connection_only_while_threads_wait_in_place() {
        let in_place = Arc::new(InPlace::new(4));
        let checks = Arc::new(AtomicUsize::new(0));
        let watching = {
            let (in_place, checks) = (in_place.clone(), checks.clone());
            std::thread::spawn(move || {
                in_place.watch(|| checks.fetch_add(1, Ordering::SeqCst) >= 1)
            })
        };
        // Two periods with no wait: not one check.
        std::thread::sleep(CHECK_EVERY * 2 + Duration::from_millis(200));
        assert_eq!(checks.load(Ordering::SeqCst), 0);
        // A thread waits in place: the watch wakes, checks each period, and
        // ends at the second check, which finds the connection gone, though
        // the session has not ended.
        let _waiting = in_place.take().unwrap();
        let woken = Instant::now();
        watching.join().unwrap().unwrap();
        assert_eq!(checks.load(Ordering::SeqCst), 2);
        assert!(woken.elapsed() >= CHECK_EVERY, "checked only each period");
    }
}
