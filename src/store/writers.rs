//! Who moved which objects into place. Every store that writes objects
//! (one per process, or several in one) holds a lock file in `tmp/`
//! (`writer-<pid>-<n>-<ns>`) for its whole life, and its marks of unsynced
//! objects name that file.
//! The kernel drops the lock when the process ends, however it ends, so a
//! process opening the cache tells a live writer from a dead one by trying
//! its lock: a live writer's marks are its own to settle; only a dead
//! one's are checked. A process id would not do: ids are reused, and one
//! process may hold several stores.
//!
//! A lock file also holds the limit its store keeps the cache under (`cap
//! <bytes>`, 0 for none; `inspects` for a store that enforces none of its
//! own): `cache status` shows the limits of the live ones.
//!
//! A dead writer's lock is taken by the process that checks its objects,
//! which makes it look alive to a third; so checks happen under one more
//! lock, `tmp/.recovery`, held while writers are tried and their objects
//! checked: under it, a writer's lock held means a live writer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::beneath::Dir;

const RECOVERY_LOCK: &str = ".recovery";
const PREFIX: &str = "writer-";
/// A lock file being made: not a writer's yet.
const NEW_PREFIX: &str = ".writer-";
/// A lock file's record of its store's limit.
const CAP: &str = "cap";
const INSPECTS: &str = "inspects";

/// The lock files, in the cache's `tmp/`.
#[derive(Debug, Clone)]
pub struct Writers {
    dir: Arc<Dir>,
}

/// This store's identity: its lock file, held (by an open file description,
/// so neither a fork nor another store of the process shares it) until
/// the store ends. Dropping it removes the file: marks still naming it are
/// then a dead writer's.
#[derive(Debug)]
pub struct WriterLock {
    dir: Arc<Dir>,
    name: String,
    _file: File,
}

/// Whether a writer named in a mark may still sync its objects.
pub enum Liveness {
    Alive,
    /// Ended: its objects are for the caller to check. Holds the writer's
    /// lock (when its file is still there) until [`Released::remove`].
    Dead(Option<Released>),
}

/// A dead writer's lock file, locked by the process checking its objects.
pub struct Released {
    dir: Arc<Dir>,
    name: String,
    _file: File,
}

/// Held while writers are tried and dead ones' objects checked.
pub struct RecoveryGuard {
    _file: File,
}

fn try_lock(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Names of writers' lock files: nothing else is opened from a name a
/// mark holds, and `tmp/`'s clean-up leaves them to [`Writers::dead`].
pub fn is_lock_name(name: &str) -> bool {
    name == RECOVERY_LOCK || is_writer_name(name)
}

fn is_writer_name(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    })
}

impl Writers {
    pub fn new(dir: Arc<Dir>) -> Self {
        Writers { dir }
    }

    /// A new writer's lock: made and locked under another name, then
    /// renamed, so that no process ever finds it unlocked while its writer
    /// lives.
    pub fn take(&self, limit: Option<u64>) -> io::Result<WriterLock> {
        let temp = self.dir.create_temp(NEW_PREFIX)?;
        if !try_lock(temp.file())? {
            return Err(io::Error::other("a new lock file is locked already"));
        }
        let record = match limit {
            Some(cap) => format!("{CAP} {cap}\n"),
            None => format!("{INSPECTS}\n"),
        };
        temp.file().write_all(record.as_bytes())?;
        // The same open file description: the lock stays with it.
        let file = temp.file().try_clone()?;
        let name = temp.name()[1..].to_string();
        temp.persist(&self.dir, &name)?;
        Ok(WriterLock {
            dir: self.dir.clone(),
            name,
            _file: file,
        })
    }

    /// Waits until no other process is checking dead writers' objects,
    /// and keeps others from starting until the guard is dropped.
    pub fn recovery(&self) -> io::Result<RecoveryGuard> {
        let flags = OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.dir, RECOVERY_LOCK, flags, Mode::RUSR | Mode::WUSR)?;
        let file = File::from(fd);
        rustix::fs::flock(&file, FlockOperation::LockExclusive)?;
        Ok(RecoveryGuard { _file: file })
    }

    /// Whether the writer `name` lives; only meaningful under
    /// [`Writers::recovery`]. A name this module would not make, or whose
    /// file is gone, is a dead writer's.
    pub fn probe(&self, name: &str) -> io::Result<Liveness> {
        if !is_writer_name(name) {
            return Ok(Liveness::Dead(None));
        }
        let file = match self.dir.open_file(name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Liveness::Dead(None)),
            Err(e) => return Err(e),
        };
        Ok(match try_lock(&file)? {
            true => Liveness::Dead(Some(Released {
                dir: self.dir.clone(),
                name: name.to_string(),
                _file: file,
            })),
            false => Liveness::Alive,
        })
    }

    /// The limits that the live stores other than `own` keep the cache
    /// under (0: none), each store's once; stores that enforce none of
    /// their own are left out, and so are those whose record is not read.
    pub fn live_limits(&self, own: Option<&str>) -> io::Result<Vec<u64>> {
        let _recovery = self.recovery()?;
        let mut limits = Vec::new();
        for (name, _) in self.dir.entries()? {
            if !is_writer_name(&name) || Some(name.as_str()) == own {
                continue;
            }
            // A dead writer's lock is let go at once, untouched.
            let Ok(Liveness::Alive) = self.probe(&name) else {
                continue;
            };
            let mut record = String::new();
            let read = self
                .dir
                .open_file(&name)
                .and_then(|file| file.take(64).read_to_string(&mut record));
            let limit = record
                .strip_prefix(CAP)
                .and_then(|rest| rest.trim().parse().ok());
            // Not pushed: gone meanwhile, or a store that enforces none.
            if let (Ok(_), Some(limit)) = (read, limit) {
                limits.push(limit);
            }
        }
        Ok(limits)
    }

    /// Lock files of dead writers (under [`Writers::recovery`]), except
    /// `own`'s.
    pub fn dead(&self, own: Option<&str>) -> Vec<Released> {
        let names = self.dir.entries().unwrap_or_default();
        names
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| is_writer_name(name) && Some(name.as_str()) != own)
            .filter_map(|name| match self.probe(&name) {
                Ok(Liveness::Dead(released)) => released,
                _ => None,
            })
            .collect()
    }
}

impl WriterLock {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The store's orderly end.
impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = self.dir.remove(&self.name);
    }
}

impl Released {
    /// Removes the dead writer's file, once its marks are dealt with.
    pub fn remove(self) {
        if let Err(e) = self.dir.remove(&self.name) {
            tracing::debug!(name = self.name, "cannot remove a dead writer's lock: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writers() -> (tempfile::TempDir, Writers) {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open_root(dir.path()).unwrap();
        let writers = Writers::new(Arc::new(root.dir("tmp").unwrap()));
        (dir, writers)
    }

    fn names(dir: &tempfile::TempDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_writer_is_alive_while_its_lock_is_held_even_in_the_same_process() {
        let (dir, writers) = writers();
        let first = writers.take(Some(0)).unwrap();
        let second = writers.take(Some(0)).unwrap();
        assert_ne!(first.name(), second.name());
        assert!(is_lock_name(first.name()), "{}", first.name());
        let mut both = vec![first.name().to_string(), second.name().to_string()];
        both.sort();
        assert_eq!(names(&dir), both, "nothing else is left");
        let _recovery = writers.recovery().unwrap();
        assert!(matches!(
            writers.probe(first.name()).unwrap(),
            Liveness::Alive
        ));
        assert!(writers.dead(Some(second.name())).is_empty());
        let name = first.name().to_string();
        drop(first);
        // An orderly end removes the file: marks naming it are orphans.
        assert!(matches!(
            writers.probe(&name).unwrap(),
            Liveness::Dead(None)
        ));
        assert_eq!(names(&dir), [".recovery", second.name()]);
    }

    #[test]
    fn the_live_writers_limits_are_read_from_their_locks() {
        let (dir, writers) = writers();
        let own = writers.take(Some(7)).unwrap();
        let mount = writers.take(Some(5_000_000_000)).unwrap();
        let unlimited = writers.take(Some(0)).unwrap();
        let _inspecting = writers.take(None).unwrap();
        // A killed writer's record: not a live one's limit.
        std::fs::write(dir.path().join("tmp").join("writer-1-2-3"), b"cap 9\n").unwrap();
        let mut limits = writers.live_limits(Some(own.name())).unwrap();
        limits.sort_unstable();
        assert_eq!(limits, [0, 5_000_000_000]);
        drop((mount, unlimited));
        assert!(writers.live_limits(Some(own.name())).unwrap().is_empty());
        // Left as it was: the dead writer's file is for a store's check.
        assert!(dir.path().join("tmp").join("writer-1-2-3").exists());
    }

    #[test]
    fn a_lock_file_left_unlocked_is_a_dead_writers_and_names_are_checked() {
        let (dir, writers) = writers();
        let own = writers.take(None).unwrap();
        // What a killed process leaves: its file, no lock on it.
        let left = dir.path().join("tmp").join("writer-1-2-3");
        std::fs::write(&left, b"").unwrap();
        let _recovery = writers.recovery().unwrap();
        let dead = writers.dead(Some(own.name()));
        assert_eq!(dead.len(), 1);
        // Held by this check: a third process would wait for the recovery lock.
        for released in dead {
            released.remove();
        }
        assert!(!left.exists());
        for name in ["../x", "writer-", "writer-1/2", ".writer-1", "other"] {
            assert!(!is_lock_name(name), "{name}");
            assert!(matches!(writers.probe(name).unwrap(), Liveness::Dead(None)));
        }
        assert!(dir.path().join("tmp").join(own.name()).exists());
    }
}
