//! `file://` base URLs: a copy of the dataset in a local (or NFS) directory
//! laid out `<root>/<revision>/<path>`, read like a server would answer.
//!
//! A file's validator is built from its size, modification time (ns) and
//! inode, so a file replaced by a rename (rsync, `cp` to a temporary name)
//! or rewritten in place is seen as changed. Paths never leave the root:
//! `..` and empty components are refused, and a symlink may point anywhere
//! inside the root but not outside it (checked on the opened file itself,
//! so a link swapped in between check and open cannot escape).

use std::fs::{File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use url::Url;

use super::{
    Answer, BodySink, FetchError, GetOutcome, Remote, RemoteMeta, Request, Server, Validators,
};
use crate::format::{Location, Slice};

/// How often a read starts over when the file changes under it.
const CHANGED_WHILE_READ_ATTEMPTS: usize = 3;
const CHUNK: usize = 256 * 1024;

/// Whether a base URL names a local directory.
pub fn is_file_url(base: &str) -> bool {
    Url::parse(base).is_ok_and(|url| url.scheme() == "file")
}

pub struct LocalRemote {
    /// Canonical: opened files are checked to lie below it.
    root: PathBuf,
    /// The base URL as given, for messages.
    base: String,
}

/// The version of a file its validator stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    size: u64,
    mtime_ns: i128,
    ino: u64,
}

impl Version {
    fn of(meta: &Metadata) -> Self {
        Version {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ino: meta.ino(),
        }
    }

    fn etag(&self) -> String {
        format!("\"{:x}-{:x}-{:x}\"", self.size, self.mtime_ns, self.ino)
    }

    fn meta(&self, size: u64) -> RemoteMeta {
        RemoteMeta {
            etag: Some(self.etag()),
            last_modified: None,
            size: Some(size),
            sha256: None,
            commit: None,
        }
    }

    fn matches(&self, validators: &Validators) -> bool {
        validators.etag.as_deref() == Some(self.etag().as_str())
    }
}

impl LocalRemote {
    /// `base` is a `file://` URL of an existing directory.
    pub fn new(base: &str) -> Result<Self, String> {
        let url = Url::parse(base).map_err(|e| format!("invalid base URL {base:?}: {e}"))?;
        let dir = match url.scheme() {
            "file" => url.to_file_path().map_err(|()| {
                format!("base URL {base:?}: a file:// URL needs an absolute path and no host")
            })?,
            _ => return Err(format!("base URL {base:?} is not a file:// URL")),
        };
        let root = dir
            .canonicalize()
            .map_err(|e| format!("base URL {base:?}: {}: {e}", dir.display()))?;
        if !root.is_dir() {
            return Err(format!(
                "base URL {base:?}: {} is not a directory",
                root.display()
            ));
        }
        Ok(LocalRemote {
            root,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `<root>/<tag>/<path>`, refusing components that could leave it.
    fn file_path(&self, tag: &str, file: &Location) -> Result<PathBuf, FetchError> {
        let path = match file {
            Location::Revision(path) => path,
            Location::Absolute(url) => {
                return Err(FetchError::Rejected(format!(
                    "{url} is not in the local copy {}: a file:// base URL reads the revision's own files only",
                    self.base
                )));
            }
        };
        let mut full = self.root.join(component(tag)?);
        for part in path.split('/') {
            full.push(component(part)?);
        }
        Ok(full)
    }

    /// Opens a regular file below the root, with the version it has now.
    fn open(&self, tag: &str, file: &Location) -> Result<(File, Version), FetchError> {
        let full = self.file_path(tag, file)?;
        crate::wait::must_not_be_quick(|| format!("a read of {}", full.display()));
        let opened_file = OpenOptions::new()
            .read(true)
            // A FIFO planted in the copy must not block the open.
            .custom_flags(libc::O_NONBLOCK)
            .open(&full)
            .map_err(|e| read_error(&full, &e))?;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", opened_file.as_raw_fd()))
            .map_err(|e| FetchError::Rejected(format!("cannot check where {file} leads: {e}")))?;
        if !opened.starts_with(&self.root) {
            return Err(FetchError::Rejected(format!(
                "{} leads to {}, outside {}",
                full.display(),
                opened.display(),
                self.root.display()
            )));
        }
        let meta = opened_file.metadata().map_err(|e| read_error(&full, &e))?;
        if meta.is_dir() {
            return Err(FetchError::NotFound);
        }
        if !meta.is_file() {
            return Err(FetchError::Rejected(format!(
                "{} is not a regular file",
                full.display()
            )));
        }
        Ok((opened_file, Version::of(&meta)))
    }

    /// Runs `read` over one version of the file: when the file changed
    /// while it was read (whether the read failed or not), the sink is reset
    /// and the read starts over.
    fn read_one_version(
        &self,
        tag: &str,
        location: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
        read: impl Fn(&File, Version, &mut dyn BodySink) -> Result<u64, FetchError>,
    ) -> Result<GetOutcome, FetchError> {
        for _ in 0..CHANGED_WHILE_READ_ATTEMPTS {
            let (file, version) = self.open(tag, location)?;
            if version.matches(validators) {
                return Ok(GetOutcome::NotModified(RemoteMeta::default()));
            }
            sink.reset()?;
            let result = read(&file, version, sink);
            let now = file
                .metadata()
                .map_err(|e| read_error(Path::new(location.key()), &e))?;
            if Version::of(&now) == version {
                return result.map(|size| GetOutcome::Fetched(version.meta(size)));
            }
            tracing::debug!(
                tag,
                %location,
                "the file changed while it was read; reading it again"
            );
        }
        Err(FetchError::Network(format!(
            "{} changed each time it was read",
            self.url(tag, location)
        )))
    }
}

fn component(part: &str) -> Result<&str, FetchError> {
    match part {
        "" | "." | ".." => Err(FetchError::Rejected(format!("{part:?} is not a file name"))),
        _ if part.contains('\0') => Err(FetchError::Rejected("a name with a NUL byte".into())),
        _ => Ok(part),
    }
}

/// A missing file is `NotFound`; a disk or NFS failure is like a server
/// that cannot be reached, so that what is cached keeps being served.
fn read_error(path: &Path, error: &std::io::Error) -> FetchError {
    match error.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => FetchError::NotFound,
        ErrorKind::PermissionDenied => {
            FetchError::Rejected(format!("cannot read {}: {error}", path.display()))
        }
        _ => FetchError::Network(format!("cannot read {}: {error}", path.display())),
    }
}

/// Copies `[offset, offset + length)` of `file` to `sink`; fails if the
/// file ends first.
fn copy_range(
    file: &File,
    offset: u64,
    length: u64,
    sink: &mut dyn BodySink,
) -> Result<(), FetchError> {
    let mut buffer = vec![0u8; CHUNK.min(length as usize)];
    let mut done = 0;
    while done < length {
        let want = buffer.len().min((length - done) as usize);
        let n = match file.read_at(&mut buffer[..want], offset + done) {
            Ok(0) => {
                return Err(FetchError::Network(format!(
                    "the file ended after {done} of {length} bytes"
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(FetchError::Network(format!("cannot read: {e}"))),
        };
        sink.write(&buffer[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// The requests a directory answers, however patient: it has no API.
impl Server for LocalRemote {
    fn get(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.read_one_version(tag, file, validators, sink, |file, version, sink| {
            // Grown or cut since the open: the version check after this says so.
            sink.announced(version.size)?;
            copy_range(file, 0, version.size, sink)?;
            Ok(version.size)
        })
    }

    fn get_range(
        &self,
        tag: &str,
        file: &Location,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.read_one_version(tag, file, validators, sink, |file, version, sink| {
            let end = slice.offset.checked_add(slice.length);
            if slice.length == 0 || end.is_none_or(|end| end > version.size) {
                return Err(FetchError::Status(416));
            }
            sink.announced(slice.length)?;
            copy_range(file, slice.offset, slice.length, sink)?;
            Ok(slice.length)
        })
    }

    fn head(&self, tag: &str, file: &Location) -> Result<RemoteMeta, FetchError> {
        let (_, version) = self.open(tag, file)?;
        Ok(version.meta(version.size))
    }
}

impl Remote for LocalRemote {
    fn send(&self, request: Request<'_>, sink: &mut dyn BodySink) -> Result<Answer, FetchError> {
        super::serve(self, request, sink)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        super::url_under(&self.base, tag, file)
    }

    fn origin(&self) -> String {
        super::origin_of(&self.base)
    }
}

#[cfg(test)]
mod tests;
