//! The fuse module's `enable_uring`, set for a test and put back as it was
//! found when the test ends, passes or fails (it only affects new mounts).

use std::sync::{Mutex, MutexGuard};

const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// Tests that set the parameter run one at a time.
static SETTING: Mutex<()> = Mutex::new(());

/// `enable_uring` held at one value; Drop puts back what was found.
pub struct UringSetting {
    found: String,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl UringSetting {
    /// Sets `enable_uring` to `on`; `None` where this kernel has no FUSE
    /// over io_uring (no such parameter), or it cannot be set (not root).
    pub fn set(on: bool) -> Option<UringSetting> {
        let guard = SETTING.lock().unwrap_or_else(|e| e.into_inner());
        let found = std::fs::read_to_string(PARAMETER).ok()?;
        std::fs::write(PARAMETER, if on { "Y" } else { "N" }).ok()?;
        Some(UringSetting {
            found: found.trim().to_string(),
            _one_at_a_time: guard,
        })
    }
}

impl Drop for UringSetting {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(PARAMETER, &self.found) {
            eprintln!("could not put {PARAMETER} back to {}: {e}", self.found);
        }
    }
}
