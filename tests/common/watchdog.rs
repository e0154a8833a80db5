//! A time limit on a test that mounts: past it the test fails, saying what
//! it was doing, instead of hanging the suite; its mounts are ended so that
//! blocked readers return and nothing stays mounted.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;

#[derive(Default)]
struct Watch {
    doing: Mutex<String>,
    mounts: Mutex<Vec<PathBuf>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Watch>>> = const { RefCell::new(None) };
}

fn with_current(f: impl FnOnce(&Watch)) {
    CURRENT.with(|current| {
        if let Some(watch) = current.borrow().as_ref() {
            f(watch)
        }
    });
}

/// Says what the watched test does now: the failure names it if the limit
/// passes meanwhile. Does nothing outside [`bounded`].
pub fn doing(what: impl Into<String>) {
    let what = what.into();
    with_current(|watch| *watch.doing.lock() = what);
}

/// Mounts made by the watched test, ended if it runs out of time.
pub fn track(mountpoint: &Path) {
    with_current(|watch| watch.mounts.lock().push(mountpoint.to_path_buf()));
}

pub fn untrack(mountpoint: &Path) {
    with_current(|watch| watch.mounts.lock().retain(|p| p != mountpoint));
}

/// Runs `body` on a thread of its own and returns its result, or re-raises
/// its panic. If it has not finished after `limit`, the processes serving
/// its mounts are killed (the kernel then fails every request still
/// waiting on them), the mounts are detached, and the test fails.
pub fn bounded<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let watch = Arc::new(Watch::default());
    let (done, finished) = mpsc::channel();
    let name = std::thread::current()
        .name()
        .unwrap_or("watched")
        .to_string();
    let runner = {
        let watch = watch.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                CURRENT.with(|current| *current.borrow_mut() = Some(watch));
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                let _ = done.send(outcome);
            })
            .unwrap()
    };
    let outcome = match finished.recv_timeout(limit) {
        Ok(outcome) => outcome,
        Err(_) => {
            let doing = watch.doing.lock().clone();
            let mounts = watch.mounts.lock().clone();
            for mountpoint in &mounts {
                end_mount(mountpoint);
            }
            // Its readers fail now; let it unwind and clean up.
            let after = finished.recv_timeout(Duration::from_secs(20));
            panic!(
                "no result after {limit:?}, while {doing}; ended its mounts {mounts:?}; {}",
                match after {
                    Ok(Ok(_)) => "it then finished".to_string(),
                    Ok(Err(panic)) => format!("it then failed: {}", super::panic_message(&*panic)),
                    Err(_) => "it is still stuck".to_string(),
                }
            );
        }
    };
    let _ = runner.join();
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Kills the processes serving `mountpoint` and detaches it.
fn end_mount(mountpoint: &Path) {
    for pid in super::serving_processes(mountpoint) {
        // SAFETY: sending a signal has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    if let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    super::remove_control_socket(mountpoint);
}
