//! The fuse module's `enable_uring`, set for a test and put back as it was
//! found when the test ends, passes or fails (it only affects new mounts).

use std::fs::File;
use std::sync::{Mutex, MutexGuard};

const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// Tests of one process that set the parameter run one at a time.
static SETTING: Mutex<()> = Mutex::new(());

/// `enable_uring` held at one value; Drop puts back what was found.
pub struct UringSetting {
    found: String,
    /// An exclusive `flock` on the parameter itself: test binaries run at
    /// the same time set and put it back one at a time too, so none puts
    /// back a value another one set.
    _locked: File,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl UringSetting {
    /// Sets `enable_uring` to `on`; `None` where this kernel has no FUSE
    /// over io_uring (no such parameter), or it cannot be set (not root).
    pub fn set(on: bool) -> Option<UringSetting> {
        let guard = SETTING.lock().unwrap_or_else(|e| e.into_inner());
        let locked = File::open(PARAMETER).ok()?;
        // Waits for another holder's Drop to put the parameter back.
        rustix::fs::flock(&locked, rustix::fs::FlockOperation::LockExclusive).ok()?;
        let found = std::fs::read_to_string(PARAMETER).ok()?;
        std::fs::write(PARAMETER, if on { "Y" } else { "N" }).ok()?;
        Some(UringSetting {
            found: found.trim().to_string(),
            _locked: locked,
            _one_at_a_time: guard,
        })
    }
}

impl Drop for UringSetting {
    fn drop(&mut self) {
        // Before the lock is let go (the fields drop after this).
        if let Err(e) = std::fs::write(PARAMETER, &self.found) {
            eprintln!("could not put {PARAMETER} back to {}: {e}", self.found);
        }
    }
}
