//! When the cache's disk refuses writes (full, most often): the cache is
//! still read, and what must be written is kept in memory instead —
//! documents for the session, downloads while an open file holds them,
//! within a budget. That the disk refuses is said once in the log when it
//! begins, and once when it ends (a file kept again).

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// The most bytes of downloads held in memory at once while the disk
/// refuses them: a few of the largest textures (a 4k PNG is 20 to 60 MB),
/// small beside what a renderer holds of them anyway.
pub const UNCACHED_MEMORY: u64 = 256 << 20;

/// Whether the cache's disk takes writes, as the last ones found.
#[derive(Debug, Default)]
pub struct DiskRoom {
    refusing: AtomicBool,
    /// A write failed for want of a descriptor since a file was last kept
    /// (said once).
    out_of_descriptors: AtomicBool,
}

/// Whether a write failed for want of a descriptor, not of room: the
/// process (or the system) has too many files open.
pub fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

impl DiskRoom {
    /// A write to the cache failed; said when it is the first since the
    /// cache was last written. Running out of descriptors says nothing of
    /// the disk: it is logged, and the next writes are tried as before.
    pub fn refused(&self, what: &str, error: &io::Error) {
        if is_out_of_descriptors(error) {
            if self.out_of_descriptors.swap(true, Ordering::Relaxed) {
                tracing::debug!("cannot write {what} to the cache: {error}");
            } else {
                tracing::warn!(
                    "cannot write {what} to the cache: {error} (the limit on open files is too \
                     low for this many readers; see docs/reliability.md, Open files)"
                );
            }
            return;
        }
        if self.refusing.swap(true, Ordering::Relaxed) {
            tracing::debug!("cannot write {what} to the cache: {error}");
        } else {
            tracing::warn!(
                "cannot write {what} to the cache ({error}): it is still read, and what it \
                 cannot take is served from the network and memory, uncached, until it can be \
                 written again"
            );
        }
    }

    /// Whether the last write to the cache was refused.
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// A file was kept: said when it ends a run of refusals.
    pub fn accepted(&self) {
        self.out_of_descriptors.store(false, Ordering::Relaxed);
        if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!("the cache can be written again: downloads are kept again");
        }
    }
}

/// An anonymous file in memory, never on any disk.
pub fn memory_file(name: &CStr) -> io::Result<File> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(File::from(fd))
}

/// Bytes of downloads held in memory: those being written, and those
/// served while any open file still holds them.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    state: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    writing: u64,
    served: Vec<(Weak<File>, u64)>,
}

impl Held {
    fn total(&mut self) -> u64 {
        self.served.retain(|(file, _)| file.strong_count() > 0);
        self.writing + self.served.iter().map(|(_, size)| size).sum::<u64>()
    }
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            state: Mutex::new(Held::default()),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        self.state.lock().total()
    }

    /// Takes `bytes` more for a download being written; refused (with what
    /// is held) past the limit.
    fn take(&self, bytes: u64) -> Result<(), u64> {
        let mut state = self.state.lock();
        let held = state.total();
        if held + bytes > self.limit {
            return Err(held);
        }
        state.writing += bytes;
        Ok(())
    }

    fn give_back(&self, bytes: u64) {
        let mut state = self.state.lock();
        state.writing = state.writing.saturating_sub(bytes);
    }

    /// What a written download took is held from now on as long as `file`.
    fn serve(&self, file: &Arc<File>, bytes: u64) {
        let mut state = self.state.lock();
        state.writing = state.writing.saturating_sub(bytes);
        state.served.push((Arc::downgrade(file), bytes));
    }
}

/// A download written to memory, within the budget.
#[derive(Debug)]
pub struct MemoryFile {
    file: Option<File>,
    budget: Arc<MemoryBudget>,
    size: u64,
}

impl MemoryFile {
    pub fn new(budget: Arc<MemoryBudget>) -> io::Result<Self> {
        Ok(MemoryFile {
            file: Some(memory_file(c"matvisfs-download")?),
            budget,
            size: 0,
        })
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("held until served")
    }

    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let more = chunk.len() as u64;
        if let Err(held) = self.budget.take(more) {
            return Err(io::Error::other(format!(
                "its disk refuses writes, and {} more bytes would take the downloads held in \
                 memory meanwhile past {} MiB ({} MiB held)",
                more,
                self.budget.limit() >> 20,
                held >> 20
            )));
        }
        self.size += more;
        self.file().write_all(chunk)
    }

    /// The budget's limit.
    pub fn limit(&self) -> u64 {
        self.budget.limit()
    }

    /// Whether a body of `size` bytes in all would fit now.
    pub fn fits(&self, size: u64) -> bool {
        self.budget.in_use().saturating_sub(self.size) + size <= self.budget.limit()
    }

    /// Empties it, for a download that starts over.
    pub fn clear(&mut self) -> io::Result<()> {
        self.budget.give_back(self.size);
        self.size = 0;
        self.file().set_len(0)?;
        io::Seek::rewind(&mut self.file())?;
        Ok(())
    }

    /// A read-only view of the bytes: `pread` only, its offset is shared.
    pub fn reader(&self) -> io::Result<File> {
        self.file().try_clone()
    }

    /// The bytes, to be served: held in the budget while the file lives.
    pub fn into_served(mut self) -> Arc<File> {
        let file = Arc::new(self.file.take().expect("held until served"));
        self.budget.serve(&file, self.size);
        file
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.budget.give_back(self.size);
        }
    }
}

/// A small filesystem of its own, for tests of a full disk.
#[cfg(test)]
pub mod full_disk {
    use std::ffi::CString;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    /// A 2 MiB tmpfs mounted over a directory; unmounted when dropped,
    /// however the test ends.
    pub struct FullDisk {
        path: PathBuf,
    }

    fn c_path(path: &Path) -> CString {
        CString::new(path.as_os_str().as_bytes()).unwrap()
    }

    impl FullDisk {
        /// Mounted over `path` (mode 0700, as a cache directory must be)
        /// and filled up.
        pub fn over(path: &Path) -> FullDisk {
            let target = c_path(path);
            // SAFETY: valid C strings that outlive the call.
            let mounted = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"size=2m,mode=0700".as_ptr().cast(),
                )
            };
            assert_eq!(mounted, 0, "{}", std::io::Error::last_os_error());
            let disk = FullDisk {
                path: path.to_path_buf(),
            };
            disk.fill();
            disk
        }

        fn filler(&self) -> PathBuf {
            self.path.join("filler")
        }

        /// Writes until the disk takes no more.
        pub fn fill(&self) {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.filler())
                .unwrap();
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..1000 {
                if let Err(e) = file.write_all(&chunk) {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    return;
                }
            }
            panic!("the disk never filled");
        }

        /// Leaves `bytes` of room (a whole number of pages).
        pub fn leave(&self, bytes: u64) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(self.filler())
                .unwrap();
            let len = file.metadata().unwrap().len();
            file.set_len(len.saturating_sub(bytes)).unwrap();
        }

        /// Room again: the filler goes.
        pub fn empty(&self) {
            std::fs::remove_file(self.filler()).unwrap();
        }
    }

    impl Drop for FullDisk {
        fn drop(&mut self) {
            let target = c_path(&self.path);
            // SAFETY: a valid C string; detached even if something is open.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_full_disk_refuses_writes_until_one_is_kept_and_running_out_of_descriptors_does_not() {
        let room = DiskRoom::default();
        room.refused("a download", &io::Error::from_raw_os_error(libc::EMFILE));
        room.refused("a download", &io::Error::from_raw_os_error(libc::ENFILE));
        assert!(
            !room.is_refusing(),
            "the disk has room: descriptors ran out"
        );
        room.refused("a download", &io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(room.is_refusing());
        room.accepted();
        assert!(!room.is_refusing());
    }

    #[test]
    fn the_budget_holds_what_is_written_and_served_until_the_file_goes() {
        let budget = Arc::new(MemoryBudget::new(100));
        let mut first = MemoryFile::new(budget.clone()).unwrap();
        first.write(&[1; 60]).unwrap();
        let mut second = MemoryFile::new(budget.clone()).unwrap();
        assert!(second.write(&[2; 41]).is_err(), "past the limit");
        assert!(second.fits(40) && !second.fits(41));
        second.write(&[2; 40]).unwrap();
        assert_eq!(budget.in_use(), 100);
        drop(second);
        assert_eq!(budget.in_use(), 60, "an abandoned download gives it back");
        let served = first.into_served();
        let mut bytes = [0u8; 60];
        served.read_exact_at(&mut bytes, 0).unwrap();
        assert_eq!(bytes, [1; 60]);
        assert_eq!(budget.in_use(), 60, "held while the file is");
        let other = served.clone();
        drop(served);
        assert_eq!(budget.in_use(), 60);
        drop(other);
        assert_eq!(budget.in_use(), 0);
        let mut third = MemoryFile::new(budget.clone()).unwrap();
        third.write(&[3; 100]).unwrap();
        third.clear().unwrap();
        assert_eq!(budget.in_use(), 0);
        third.write(&[4; 5]).unwrap();
        let mut read = [0u8; 5];
        third.reader().unwrap().read_exact_at(&mut read, 0).unwrap();
        assert_eq!(read, [4; 5]);
    }
}
