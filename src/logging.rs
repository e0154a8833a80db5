//! Log output: stderr in the foreground, a file in the background.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// How much a mount logs by default: revalidation outcomes and changes.
pub const MOUNT_LEVEL: u8 = 1;

/// The filter for a level (0 warnings, 1 info, 2 debug, 3 trace);
/// `MATVISFS_LOG` replaces it when set.
fn filter(level: u8) -> EnvFilter {
    if let Ok(spec) = std::env::var("MATVISFS_LOG") {
        if let Ok(filter) = EnvFilter::try_new(spec) {
            return filter;
        }
    }
    EnvFilter::new(match level {
        0 => "warn",
        1 => "matvisfs=info,fuser=warn,warn",
        2 => "matvisfs=debug,fuser=info,info",
        _ => "matvisfs=trace,fuser=debug,debug",
    })
}

pub fn to_stderr(level: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk, a closed pipe) must
        // cost only the log: reporting that failure goes through
        // eprintln!, which panics, and a panic ends the mount.
        .log_internal_errors(false)
        .try_init();
}

/// Logs to the file at `path`, which is never opened through a symbolic
/// link: one in its place is removed when `in_cache` (nothing outside the
/// cache is written), else refused.
pub fn to_file(level: u8, path: &Path, in_cache: bool) -> Result<(), String> {
    let opened = match CappedLog::open(path.to_path_buf(), LOG_CAP) {
        Err(e) if in_cache && e.raw_os_error() == Some(libc::ELOOP) => {
            std::fs::remove_file(path).and_then(|()| CappedLog::open(path.to_path_buf(), LOG_CAP))
        }
        opened => opened,
    };
    let log = opened.map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .log_internal_errors(false)
        .try_init();
    Ok(())
}

/// A background mount's log grows to at most this, then starts afresh with
/// the previous one kept beside it (`<file>.1`).
const LOG_CAP: u64 = 16 << 20;

/// A log file of bounded size: a long-lived mount never fills the disk.
struct CappedLog {
    path: PathBuf,
    file: File,
    written: u64,
    cap: u64,
}

impl CappedLog {
    fn open(path: PathBuf, cap: u64) -> io::Result<CappedLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let written = file.metadata()?.len();
        Ok(CappedLog {
            path,
            file,
            written,
            cap,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, old)?;
        *self = CappedLog::open(self.path.clone(), self.cap)?;
        Ok(())
    }
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.cap {
            // A log that cannot rotate keeps going in the same file.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_cap_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        let mut log = CappedLog::open(path.clone(), 100).unwrap();
        for i in 0..30 {
            writeln!(log, "line {i:02} of the log").unwrap();
        }
        let now = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("m.log.1")).unwrap();
        assert!(now.len() <= 100 && old.len() <= 100, "{now:?} {old:?}");
        assert!(now.ends_with("line 29 of the log\n"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn the_log_is_never_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("notes.txt");
        std::fs::write(&outside, "mine\n").unwrap();
        let path = dir.path().join("m.log");
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        let open = |path: &Path| CappedLog::open(path.to_path_buf(), 100);
        assert_eq!(
            open(&path).err().and_then(|e| e.raw_os_error()),
            Some(libc::ELOOP)
        );
        // Rotation renames the link itself, and the new log is a file.
        std::fs::remove_file(&path).unwrap();
        let mut log = open(&path).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("m.log.1")).unwrap();
        for i in 0..30 {
            writeln!(log, "line {i:02} of the log").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "mine\n");
    }

    #[test]
    fn a_log_file_given_as_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("notes.txt");
        std::fs::write(&outside, "mine\n").unwrap();
        let path = dir.path().join("m.log");
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        assert!(to_file(1, &path, false).is_err());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "mine\n");
    }
}
