//! A file of JSON lines that several processes append to at once.
//!
//! Appends hold a shared `flock` on a companion `.lock` file and are single
//! `write` calls in append mode, so lines from different processes never
//! interleave. Rewriting (compaction) holds the exclusive lock and renames a
//! new file into place; appenders notice the new inode and reopen, readers
//! start over. A torn line (a crash mid-write, or a partial line from a
//! crashed writer) is skipped, and the next append starts on a fresh line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::write_atomically;

struct Handle {
    file: File,
    ino: u64,
}

pub struct SharedLog {
    path: PathBuf,
    lock: PathBuf,
    /// Held by a process that reads, decides and writes as one step.
    serial: PathBuf,
    handle: Mutex<Option<Handle>>,
    /// Bytes of the current file already handed to [`SharedLog::read_new`].
    read: Mutex<(u64, u64)>,
}

/// Holds an `flock` until dropped.
pub struct Locked(File);

impl Locked {
    fn take(path: &Path, exclusive: bool) -> io::Result<Locked> {
        let file = super::no_follow()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: a valid descriptor owned by `file`.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Locked(file));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl SharedLog {
    pub fn new(path: PathBuf) -> Self {
        let with_suffix = |suffix: &str| {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        };
        SharedLog {
            lock: with_suffix(".lock"),
            serial: with_suffix(".serial.lock"),
            path,
            handle: Mutex::new(None),
            read: Mutex::new((0, 0)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    fn current_ino(&self) -> Option<u64> {
        std::fs::metadata(&self.path).ok().map(|m| m.ino())
    }

    /// Held, no other thread or process holds its own: for a read, decide,
    /// write sequence. Appends do not wait for it.
    pub fn serial_lock(&self) -> io::Result<Locked> {
        Locked::take(&self.serial, true)
    }

    /// Appends one line (without its newline).
    pub fn append(&self, line: &str) -> io::Result<()> {
        self.append_all(std::iter::once(line.to_string()))
    }

    /// Appends lines in one write.
    pub fn append_all(&self, lines: impl IntoIterator<Item = String>) -> io::Result<()> {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let _lock = match Locked::take(&self.lock, false) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                Locked::take(&self.lock, false)?
            }
            other => other?,
        };
        let mut handle = self.handle.lock();
        let stale = match (&*handle, self.current_ino()) {
            (Some(h), Some(ino)) => h.ino != ino,
            _ => true,
        };
        if stale {
            let file = super::no_follow()
                .read(true)
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?;
            let ino = file.metadata()?.ino();
            *handle = Some(Handle { file, ino });
        }
        let file = &mut handle.as_mut().expect("opened above").file;
        let len = file.metadata()?.len();
        let mut last = [0u8; 1];
        if len > 0 && file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
            bytes.insert(0, b'\n');
        }
        file.write_all(&bytes)
    }

    /// Feeds every complete line written since the last call to `apply`.
    /// Returns true when the file was replaced since, in which case all its
    /// lines are fed again and the caller should start from scratch.
    pub fn read_new(&self, mut apply: impl FnMut(&str)) -> io::Result<bool> {
        if !self.exists() {
            return Ok(false);
        }
        let _lock = Locked::take(&self.lock, false)?;
        let mut read = self.read.lock();
        let mut file = match super::open_no_follow(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let ino = file.metadata()?.ino();
        let restarted = read.0 != ino;
        if restarted {
            *read = (ino, 0);
        }
        file.seek(SeekFrom::Start(read.1))?;
        // Line by line: a log of a full tag is tens of megabytes.
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            // A last line without its newline may still be being written.
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            read.1 += n as u64;
            if line.len() > 1 {
                apply(&String::from_utf8_lossy(&line[..line.len() - 1]));
            }
        }
        Ok(restarted)
    }

    /// Replaces the whole file with `lines`, atomically, while no process
    /// appends.
    pub fn rewrite(&self, lines: impl IntoIterator<Item = String>) -> io::Result<()> {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let _lock = Locked::take(&self.lock, true)?;
        write_atomically(&self.path, &bytes)?;
        *self.handle.lock() = None;
        if let Some(ino) = self.current_ino() {
            *self.read.lock() = (ino, bytes.len() as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(log: &SharedLog) -> Vec<String> {
        let mut out = Vec::new();
        log.read_new(|l| out.push(l.to_string())).unwrap();
        out
    }

    #[test]
    fn appends_are_read_once_and_a_rewrite_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let log = SharedLog::new(dir.path().join("x.log"));
        assert!(lines(&log).is_empty());
        log.append("a").unwrap();
        log.append_all(["b".to_string(), "c".to_string()]).unwrap();
        assert_eq!(lines(&log), ["a", "b", "c"]);
        log.append("d").unwrap();
        assert_eq!(lines(&log), ["d"]);
        // Another process's view: rewrite, then appends continue in the new file.
        let other = SharedLog::new(dir.path().join("x.log"));
        other.rewrite(["z".to_string()]).unwrap();
        log.append("e").unwrap();
        let mut seen = Vec::new();
        assert!(
            log.read_new(|l| seen.push(l.to_string())).unwrap(),
            "the file was replaced"
        );
        assert_eq!(seen, ["z", "e"]);
    }

    #[test]
    fn a_torn_line_does_not_swallow_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, b"good\n{\"torn").unwrap();
        let log = SharedLog::new(path.clone());
        log.append("next").unwrap();
        assert_eq!(lines(&log), ["good", "{\"torn", "next"]);
    }

    #[test]
    fn concurrent_appenders_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::thread::scope(|s| {
            for t in 0..8 {
                let path = path.clone();
                s.spawn(move || {
                    let log = SharedLog::new(path);
                    for i in 0..200 {
                        log.append(&format!("{t}-{i}-{}", "x".repeat(100))).unwrap();
                    }
                });
            }
        });
        let all = lines(&SharedLog::new(path));
        assert_eq!(all.len(), 1600);
        assert!(all.iter().all(|l| l.len() > 100 && l.ends_with('x')));
    }
}
