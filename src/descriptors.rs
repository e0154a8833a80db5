//! The daemon's open files: how many it may hold, and a descriptor table
//! sized before the threads start.
//!
//! A burst of first reads holds two descriptors for every download waiting
//! for the committer (its bytes and the copy being served), besides the
//! sockets and the files readers have open. Many systems start programs
//! with a soft limit of 1024 open files under a much higher hard limit, so
//! the daemon raises its soft limit to the hard one, as programs that need
//! many descriptors are expected to.
//!
//! The kernel grows a process's descriptor table by doubling it, and while
//! other threads share the table each growth waits for an RCU grace period
//! (`expand_fdtable`), during which every thread that opens a file waits
//! too: 10 to 30 ms each on the test VM, five times over in a burst of 1500
//! first reads. Growing it once before any thread starts costs nothing of
//! the kind; the table never shrinks.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors the table is grown to hold at start (or the soft limit, if
/// lower): room for a burst whose downloads fill the memory they may wait
/// in for the committer (64 MiB of textures of 12 KB), with the sockets and
/// the readers' open files beside them. 128 KiB of table.
const TABLE_AT_START: u64 = 16384;

/// The most the soft limit is raised to, whatever the hard limit says
/// (`fs.nr_open` refuses more by default anyway).
const HIGHEST_SOFT_LIMIT: u64 = 1 << 20;

/// Raises the soft limit on open files to the hard one and grows the
/// descriptor table. Call while the process has one thread.
pub fn prepare() {
    raise_open_file_limit();
    grow_table(open_file_limit().min(TABLE_AT_START));
}

/// The soft limit on open files (no limit counts as the highest we raise to).
pub fn open_file_limit() -> u64 {
    getrlimit(Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        .min(HIGHEST_SOFT_LIMIT)
}

fn raise_open_file_limit() {
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(HIGHEST_SOFT_LIMIT);
    if limit.current.is_some_and(|current| current < wanted) {
        let raised = Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("cannot raise the limit on open files to {wanted}: {e}");
        }
    }
}

/// Makes the table hold `descriptors` by taking the highest of them for a
/// moment.
fn grow_table(descriptors: u64) {
    let Some(highest) = descriptors
        .checked_sub(1)
        .and_then(|d| i32::try_from(d).ok())
    else {
        return;
    };
    // SAFETY: duplicates stdin (a descriptor of this process, or EBADF if
    // closed) to a number of our choosing and closes that duplicate at once;
    // no other code holds it.
    unsafe {
        let taken = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, highest);
        if taken >= 0 {
            libc::close(taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn the_table_holds_what_was_asked_and_no_descriptor_is_left_open() {
        let wanted = open_file_limit().min(TABLE_AT_START * 2);
        grow_table(wanted);
        assert!(table_size() >= wanted, "{} < {wanted}", table_size());
        // SAFETY: asks about a descriptor number; opens nothing.
        let still_open = unsafe { libc::fcntl(wanted as i32 - 1, libc::F_GETFD) } >= 0;
        assert!(
            !still_open,
            "the descriptor taken to grow the table is closed"
        );
    }
}
