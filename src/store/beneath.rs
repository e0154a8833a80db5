//! Directories of the cache, held open by descriptor. Every path below one
//! is resolved beneath it without following a symbolic link at any depth
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and every
//! change is an `*at` call on the directory that holds the name, which never
//! follows its last component: a link planted anywhere in the cache never
//! leads a read, a write or a removal outside it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);
const PRIVATE: Mode = Mode::RWXU;

/// An open directory of the cache.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// For messages only: nothing is opened by it.
    path: PathBuf,
}

fn is_symlink_refusal(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ELOOP)
}

/// What a name in a directory is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    fn of(file_type: FileType) -> Kind {
        match file_type {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

impl Dir {
    /// Opens `path` itself (already canonical: no link in it) as a directory.
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Writes out everything pending on this directory's filesystem.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.fd)?)
    }

    fn open_beneath(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let fd = rustix::fs::openat2(&self.fd, rel, flags | OFlags::CLOEXEC, mode, BENEATH)
            .map_err(io::Error::from);
        if let Err(e) = &fd {
            if is_symlink_refusal(e) {
                tracing::warn!(
                    path = %self.path.join(rel).display(),
                    "a symbolic link inside the cache: not followed"
                );
            }
        }
        fd
    }

    /// An existing directory below this one (`rel` may have several parts).
    pub fn open_dir(&self, rel: &str) -> io::Result<Dir> {
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// The directory `name` in this one, made (mode 0700) if missing. A link
    /// or a file in its place is not the cache's: it is removed (the link
    /// itself, never what it points to) and a directory made instead.
    pub fn dir(&self, name: &str) -> io::Result<Dir> {
        for attempt in 0..2 {
            match rustix::fs::mkdirat(&self.fd, name, PRIVATE) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match self.open_dir(name) {
                Err(e)
                    if attempt == 0
                        && matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) =>
                {
                    tracing::warn!(
                        path = %self.path.join(name).display(),
                        "not a directory of the cache (a symbolic link or a file): removed"
                    );
                    self.remove(name)?;
                }
                other => return other,
            }
        }
        unreachable!("the second attempt returns")
    }

    /// A file below this directory, opened for reading.
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a file", self.path.join(rel).display()),
            ));
        }
        Ok(file)
    }

    pub fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut self.open_file(rel)?, &mut bytes)?;
        Ok(bytes)
    }

    /// Removes the name `name` of this directory (a link is removed, not
    /// followed); one already gone is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// What `name` is and its size, without following it.
    pub fn kind_of(&self, name: &str) -> Option<(Kind, u64, SystemTime)> {
        let stat = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let modified = UNIX_EPOCH + std::time::Duration::from_secs(stat.st_mtime.max(0) as u64);
        Some((
            Kind::of(FileType::from_raw_mode(stat.st_mode)),
            stat.st_size as u64,
            modified,
        ))
    }

    /// The names in this directory and what they are.
    pub fn entries(&self) -> io::Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        // A descriptor of its own: reading moves its position.
        let fd = self.open_beneath(".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let Some(name) = name.to_str() else {
                // Never written by matvisfs; not a digest.
                out.push((name.to_string_lossy().into_owned(), Kind::Other));
                continue;
            };
            let kind = match Kind::of(entry.file_type()) {
                Kind::Other => self.kind_of(name).map_or(Kind::Other, |(kind, ..)| kind),
                kind => kind,
            };
            out.push((name.to_string(), kind));
        }
        Ok(out)
    }

    /// A file of this directory's filesystem with no name yet (`O_TMPFILE`):
    /// nothing to clean up if it is never linked. Fails on a filesystem
    /// without such files (`EOPNOTSUPP`).
    pub fn create_anonymous(&self) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        Ok(File::from(fd))
    }

    /// Gives `file`, made by [`Dir::create_anonymous`] in this directory,
    /// the name `name`, replacing what is there (a link there is replaced,
    /// not followed).
    pub fn link_anonymous(&self, file: &File, name: &str) -> io::Result<()> {
        use rustix::io::Errno;
        for attempt in 0..2 {
            // By descriptor where allowed (root), else by its /proc name,
            // which is the descriptor itself too.
            let linked = match rustix::fs::linkat(file, "", &self.fd, name, AtFlags::EMPTY_PATH) {
                Err(Errno::NOENT | Errno::PERM) => rustix::fs::linkat(
                    rustix::fs::CWD,
                    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file)),
                    &self.fd,
                    name,
                    AtFlags::SYMLINK_FOLLOW,
                ),
                other => other,
            };
            match linked {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST) if attempt == 0 => self.remove(name)?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::from(io::ErrorKind::AlreadyExists))
    }

    /// A new file in this directory (the cache's `tmp/`), removed when
    /// dropped unless it was moved into place.
    pub fn create_temp(self: &Arc<Dir>, prefix: &str) -> io::Result<TempFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let name = format!(
                "{prefix}{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            );
            let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
            match self.open_beneath(&name, flags, Mode::RUSR | Mode::WUSR) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dir: self.clone(),
                        name,
                        file: File::from(fd),
                        kept: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A file being written in the cache's `tmp/`.
#[derive(Debug)]
pub struct TempFile {
    dir: Arc<Dir>,
    name: String,
    file: File,
    kept: bool,
}

impl TempFile {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Its name in the directory it was made in.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A read-only descriptor of the same file, valid after it is moved.
    pub fn reopen(&self) -> io::Result<File> {
        self.dir.open_file(&self.name)
    }

    /// Moves the file to `name` in `target`, replacing what is there (a
    /// link there is replaced, not followed).
    pub fn persist(self, target: &Dir, name: &str) -> io::Result<()> {
        self.persist_or_return(target, name).map_err(|(_, e)| e)
    }

    /// [`TempFile::persist`], giving the file back when it failed.
    pub fn persist_or_return(
        mut self,
        target: &Dir,
        name: &str,
    ) -> Result<(), (TempFile, io::Error)> {
        match rustix::fs::renameat(&self.dir.fd, &self.name, &target.fd, name) {
            Ok(()) => {
                self.kept = true;
                Ok(())
            }
            Err(e) => Err((self, e.into())),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// Writes `bytes` to `name` in `target` through a synced temporary file in
/// `tmp`, renamed into place.
pub fn write_atomically(tmp: &Arc<Dir>, target: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut temp = tmp.create_temp(".tmp-")?;
    io::Write::write_all(temp.file_mut(), bytes)?;
    temp.file().sync_all()?;
    temp.persist(target, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_link_is_followed_at_any_depth_and_links_are_removed_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("note"), b"mine").unwrap();
        let root_path = base.path().join("root");
        std::fs::create_dir_all(root_path.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, root_path.join("a/linked")).unwrap();
        let root = Dir::open_root(&root_path).unwrap();
        let refused = |e: io::Error| e.raw_os_error() == Some(libc::ELOOP);
        assert!(refused(root.open_file("a/linked/note").unwrap_err()));
        assert!(refused(root.open_dir("a/linked").unwrap_err()));
        assert!(root.open_dir("../outside").is_err());
        let a = root.open_dir("a").unwrap();
        assert_eq!(
            a.entries().unwrap(),
            [("linked".to_string(), Kind::Symlink)]
        );
        // Taken back as a directory of the cache: the link goes, not its target.
        let made = a.dir("linked").unwrap();
        assert!(made.entries().unwrap().is_empty());
        assert_eq!(std::fs::read(outside.join("note")).unwrap(), b"mine");

        let tmp = Arc::new(root.dir("tmp").unwrap());
        write_atomically(&tmp, &made, "state", b"x").unwrap();
        assert_eq!(made.read("state").unwrap(), b"x");
        assert!(
            tmp.entries().unwrap().is_empty(),
            "the temporary file moved"
        );
        drop(tmp.create_temp("dl-").unwrap());
        assert!(
            tmp.entries().unwrap().is_empty(),
            "a dropped one is removed"
        );
    }
}
