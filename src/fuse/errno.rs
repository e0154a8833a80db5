//! The one mapping from errors to errno, and the one log line per failed
//! operation (at the level the error carries, repeats of the same message
//! held back for a while).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fuser::Errno;
use parking_lot::Mutex;
use tracing::Level;

use crate::dataset::Error;
use crate::fs::FsError;

/// Whether a call on a path under a FUSE mount failed because no process
/// serves the mount any more: `ENOTCONN` once the kernel has ended the
/// connection, and, for a request made while it was ending it, the
/// `ECONNABORTED` or `ECANCELED` of the requests it ends (over io_uring the
/// ending runs after the killed process is gone, as the rings are torn
/// down).
pub fn is_dead_mount(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
    )
}

pub fn errno(error: &FsError) -> Errno {
    match error {
        FsError::ReadOnly => Errno::EROFS,
        FsError::StaleInode
        | FsError::VersionOpen
        | FsError::LookUpAgain
        | FsError::ListingChanged => Errno::ESTALE,
        FsError::UnknownHandle => Errno::EBADF,
        // Never sent: the open is answered once resumed.
        FsError::WaitsForRelease { .. } => Errno::ESTALE,
        FsError::Dataset(error) => match error {
            Error::NotFound => Errno::ENOENT,
            Error::NotDir => Errno::ENOTDIR,
            Error::IsDir => Errno::EISDIR,
            Error::Changed { .. } => Errno::ESTALE,
            Error::Offline { .. }
            | Error::Fetch { .. }
            | Error::Refused { .. }
            | Error::TierIncomplete { .. }
            | Error::Cache(_) => Errno::EIO,
            // Never sent: such an operation goes to a worker thread.
            Error::WouldBlock(_) => Errno::EAGAIN,
        },
    }
}

fn level(error: &FsError) -> Option<Level> {
    match error {
        FsError::ReadOnly
        | FsError::StaleInode
        | FsError::LookUpAgain
        | FsError::WaitsForRelease { .. } => None,
        FsError::VersionOpen | FsError::ListingChanged => Some(Level::INFO),
        FsError::UnknownHandle => Some(Level::WARN),
        FsError::Dataset(error) => error.level(),
    }
}

/// The same message is logged at most once in this long.
const REPEAT_AFTER: Duration = Duration::from_secs(10);
/// Distinct messages remembered at most.
const REMEMBERED: usize = 1024;

/// Logs failed operations, holding back repeats.
#[derive(Default)]
pub struct FailureLog {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl FailureLog {
    pub fn failed(&self, op: &str, what: &str, error: &FsError) {
        let Some(level) = level(error) else {
            return;
        };
        let message = error.to_string();
        let held_back = {
            let mut seen = self.seen.lock();
            if seen.len() >= REMEMBERED {
                seen.retain(|_, (at, _)| at.elapsed() < REPEAT_AFTER);
            }
            match seen.get_mut(&message) {
                Some((at, count)) if at.elapsed() < REPEAT_AFTER => {
                    *count += 1;
                    return;
                }
                Some((at, count)) => {
                    *at = Instant::now();
                    std::mem::take(count)
                }
                None => {
                    seen.insert(message.clone(), (Instant::now(), 0));
                    0
                }
            }
        };
        let repeats = match held_back {
            0 => String::new(),
            n => format!(" ({n} more like it not logged)"),
        };
        match level {
            Level::ERROR => tracing::error!(op, path = what, "{message}{repeats}"),
            Level::WARN => tracing::warn!(op, path = what, "{message}{repeats}"),
            Level::INFO => tracing::info!(op, path = what, "{message}{repeats}"),
            _ => tracing::debug!(op, path = what, "{message}{repeats}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_errno() {
        let cases = [
            (FsError::ReadOnly, Errno::EROFS),
            (FsError::StaleInode, Errno::ESTALE),
            (FsError::VersionOpen, Errno::ESTALE),
            (FsError::LookUpAgain, Errno::ESTALE),
            (FsError::ListingChanged, Errno::ESTALE),
            (Error::NotFound.into(), Errno::ENOENT),
            (Error::IsDir.into(), Errno::EISDIR),
            (Error::Changed { path: "p".into() }.into(), Errno::ESTALE),
            (Error::refused("u", "why").into(), Errno::EIO),
        ];
        for (error, expected) in cases {
            assert_eq!(errno(&error), expected, "{error:?}");
        }
    }

    #[test]
    fn repeats_are_counted_not_logged() {
        let log = FailureLog::default();
        let error: FsError = Error::refused("u", "why").into();
        for _ in 0..5 {
            log.failed("read", "a", &error);
        }
        let seen = log.seen.lock();
        assert_eq!(seen.get(&error.to_string()).map(|(_, n)| *n), Some(4));
    }
}
