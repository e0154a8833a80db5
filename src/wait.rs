//! Whether the current thread may wait. The threads that read requests from
//! the kernel first try every operation in *quick* mode: the same code runs,
//! and the first step that would wait (a request to the server, a document
//! read from disk, another thread's download) stops it with
//! [`WouldBlock`]. The adapter then runs it again in the normal mode, on
//! the same thread while enough others stay free, else on a worker thread.
//! One code path, two budgets.
//!
//! What holds the rule is the other end: every request leaves for the
//! server through [`must_not_be_quick`], which in debug builds (every test,
//! the mounted test binary included) panics when a quick-mode thread got
//! that far, naming the request in the panic message, and the request
//! fails (`EIO`): a missing [`may_block`] is found by any test that drives
//! the path, not by reading the code.

use std::cell::Cell;
use std::sync::mpsc;
use std::time::{Duration, Instant};

thread_local! {
    static QUICK: Cell<bool> = const { Cell::new(false) };
    static ASKED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's `key` set to `value`, put back as it was
/// afterwards, even when `f` panics.
fn with_set<V: Copy + 'static, T>(
    key: &'static std::thread::LocalKey<Cell<V>>,
    value: V,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore<V: Copy + 'static>(&'static std::thread::LocalKey<Cell<V>>, V);
    impl<V: Copy + 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            self.0.with(|cell| cell.set(self.1));
        }
    }
    let _restore = Restore(key, key.with(|cell| cell.replace(value)));
    f()
}

/// Runs `f` on behalf of work asked for at `asked` (a kernel request that
/// waited in a queue for a thread), which [`waited_since_asked`] tells.
pub fn asked_at<T>(asked: Instant, f: impl FnOnce() -> T) -> T {
    with_set(&ASKED, Some(asked), f)
}

/// How long ago the work this thread does was asked for, when it waited
/// in a queue (see [`asked_at`]).
pub fn waited_since_asked() -> Option<Duration> {
    ASKED.with(Cell::get).map(|asked| asked.elapsed())
}

/// The operation must wait for something, which quick mode does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operation must wait (for the network or the disk)")]
pub struct WouldBlock;

/// Runs `f` in quick mode on this thread.
pub fn quick<T>(f: impl FnOnce() -> T) -> T {
    with_set(&QUICK, true, f)
}

/// Runs `f` in quick mode, as [`quick`], catching a panic (`None`): on a
/// thread that reads kernel requests a panic would end the mount's
/// session, or leave an io_uring queue unserved; the request fails instead
/// (the panic is still reported by the panic hook).
pub fn quick_unless_panicked<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| quick(f))).ok()
}

/// Whether this thread is in quick mode.
pub fn is_quick() -> bool {
    QUICK.with(Cell::get)
}

/// Called before every step that may wait: fails in quick mode.
pub fn may_block() -> Result<(), WouldBlock> {
    if is_quick() { Err(WouldBlock) } else { Ok(()) }
}

/// Called where a wait begins whatever the mode (a request leaves for the
/// server): in quick mode a [`may_block`] should have stopped the caller
/// before it. Debug builds panic, naming `what`; release builds go on, as
/// the operation would merely be slow.
#[track_caller]
pub fn must_not_be_quick(what: impl FnOnce() -> String) {
    if cfg!(debug_assertions) && is_quick() {
        panic!(
            "{} was reached in quick mode: a may_block() check is missing on its path",
            what()
        );
    }
}

/// Runs `work` on this thread; if it has not returned after `after`,
/// `notice` runs (on another thread), once: a long wait says what it is
/// waiting for while it waits.
pub fn noticed_after<T>(
    after: Duration,
    notice: impl FnOnce() + Send,
    work: impl FnOnce() -> T,
) -> T {
    let (done, finished) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if finished.recv_timeout(after) == Err(mpsc::RecvTimeoutError::Timeout) {
                notice();
            }
        });
        let out = work();
        drop(done);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_comes_only_when_the_work_takes_longer() {
        let noticed = std::sync::atomic::AtomicUsize::new(0);
        let count = || {
            noticed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        };
        assert_eq!(noticed_after(Duration::from_secs(60), count, || 7), 7);
        assert_eq!(noticed.load(std::sync::atomic::Ordering::SeqCst), 0);
        noticed_after(Duration::from_millis(1), count, || {
            std::thread::sleep(Duration::from_millis(200))
        });
        assert_eq!(noticed.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn quick_mode_is_scoped_to_the_call_and_the_thread() {
        assert_eq!(may_block(), Ok(()));
        let inside = quick(|| {
            let here = may_block();
            let other_thread = std::thread::spawn(may_block).join().unwrap();
            (here, other_thread, quick(is_quick))
        });
        assert_eq!(inside, (Err(WouldBlock), Ok(()), true));
        assert_eq!(may_block(), Ok(()));
        // Restored even when the closure panics.
        let _ = std::panic::catch_unwind(|| quick(|| panic!("boom")));
        assert!(!is_quick());
    }

    #[test]
    fn a_panic_in_quick_mode_is_caught_and_the_mode_restored() {
        assert_eq!(quick_unless_panicked(may_block), Some(Err(WouldBlock)));
        let caught: Option<()> = quick_unless_panicked(|| panic!("boom"));
        assert_eq!(caught, None);
        assert!(!is_quick());
    }

    #[test]
    fn a_blocking_step_reached_in_quick_mode_is_a_bug_in_debug_builds() {
        must_not_be_quick(|| "a request".into());
        let reached = std::panic::catch_unwind(|| quick(|| must_not_be_quick(|| "GET x".into())));
        let message = *reached.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.starts_with("GET x was reached in quick mode"),
            "{message}"
        );
    }
}
