use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::handles::{Handle, Handles, OpenFile};
use super::inodes::{CONTROL_DIR, InodeTable, NodeKey, STATS_FILE};
use crate::dataset::{Change, Dataset, Kind, Opened, Stat};
use crate::digest::Sha256Digest;
use crate::error::FsError;
use crate::stats::Stats;

fn stats_path() -> String {
    format!("{CONTROL_DIR}/{STATS_FILE}")
}

/// Kernel cache time for a tag's entries and attributes: content is
/// immutable within a version, and a change is pushed to the kernel.
const CONTENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The root lists tags that may appear at any time.
const ROOT_TTL: Duration = Duration::from_secs(1);
/// A failed read is answered with the same error this long on the same open
/// file: the kernel retries a failed page read at once, which would
/// otherwise ask the server twice.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct OpenReply {
    pub fh: u64,
    /// The kernel may keep its page cache from earlier opens.
    pub keep_cache: bool,
    /// The kernel's idea of the size may be stale: bypass its page cache.
    pub direct_io: bool,
    /// The cached content, when the kernel may read it directly
    /// (passthrough): it is complete and its size is what the kernel knows.
    pub content: Option<Arc<File>>,
    /// The digest of the bytes this open is for, when known.
    pub digest: Option<Sha256Digest>,
}

/// What the kernel must forget after a tag changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Inode(u64),
    Entry { parent: u64, name: String },
}

pub struct FsCore {
    pub(super) dataset: Arc<Dataset>,
    pub(super) inodes: InodeTable,
    handles: Handles,
    pub(super) mounted_at: SystemTime,
    pub(super) listings: super::listing::Listings,
}

impl FsCore {
    pub fn new(dataset: Arc<Dataset>) -> Self {
        FsCore {
            dataset,
            inodes: InodeTable::default(),
            handles: Handles::default(),
            mounted_at: SystemTime::now(),
            listings: Default::default(),
        }
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    pub(super) fn stat(&self, key: &NodeKey) -> Result<Stat, FsError> {
        let dir = Stat {
            kind: Kind::Dir,
            size: 0,
            mtime: self.mounted_at,
        };
        match &key.tag {
            Some(tag) => self.dataset.tag(tag)?.stat(&key.path),
            None if key.path.is_empty() || *key.path == *CONTROL_DIR => Ok(dir),
            None if *key.path == *stats_path() => Ok(Stat {
                kind: Kind::File,
                size: self.render_stats().len() as u64,
                mtime: SystemTime::now(),
            }),
            None => Err(FsError::NotFound),
        }
    }

    fn render_stats(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(&self.dataset.stats_json(self.mounted_at))
            .expect("serializable");
        bytes.push(b'\n');
        bytes
    }

    pub(super) fn entry(ino: u64, key: &NodeKey, stat: Stat) -> Entry {
        let ttl = match (&key.tag, key.path.is_empty()) {
            // The root and the tag directories: tags come and go.
            (_, true) => ROOT_TTL,
            // The statistics change all the time.
            (None, false) => Duration::ZERO,
            (Some(_), false) => CONTENT_TTL,
        };
        Entry {
            attr: Attr {
                ino,
                kind: stat.kind,
                size: stat.size,
                mtime: stat.mtime,
            },
            ttl,
        }
    }

    pub(super) fn file_size(stat: &Stat) -> Option<u64> {
        (stat.kind == Kind::File).then_some(stat.size)
    }

    /// Attributes from memory only; `None` when loading or a request is needed.
    pub(super) fn peek(&self, key: &NodeKey) -> Option<Result<Stat, FsError>> {
        match &key.tag {
            None => Some(self.stat(key)),
            Some(tag) => self.dataset.loaded(tag)?.peek_stat(&key.path),
        }
    }

    fn lookup_by(
        &self,
        parent: u64,
        name: &str,
        stat: impl FnOnce(&NodeKey) -> Option<Result<Stat, FsError>>,
    ) -> Option<Result<Entry, FsError>> {
        let Some(parent_key) = self.inodes.key(parent) else {
            return Some(Err(FsError::Stale));
        };
        let key = parent_key.child(name);
        Some(stat(&key)?.map(|stat| {
            let ino = self.inodes.lookup(&key, Self::file_size(&stat));
            Self::entry(ino, &key, stat)
        }))
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Entry, FsError> {
        self.lookup_by(parent, name, |key| Some(self.stat(key)))
            .expect("stat always answers")
    }

    /// [`FsCore::lookup`] if it can be answered without waiting.
    pub fn try_lookup(&self, parent: u64, name: &str) -> Option<Result<Entry, FsError>> {
        self.lookup_by(parent, name, |key| self.peek(key))
    }

    pub fn forget(&self, ino: u64, count: u64) {
        self.inodes.forget(ino, count);
    }

    fn getattr_by(
        &self,
        ino: u64,
        stat: impl FnOnce(&NodeKey) -> Option<Result<Stat, FsError>>,
    ) -> Option<Result<Entry, FsError>> {
        let Some(key) = self.inodes.key(ino) else {
            return Some(Err(FsError::Stale));
        };
        Some(
            stat(&key)?
                .map_err(|e| match e {
                    FsError::NotFound => FsError::Stale,
                    e => e,
                })
                .map(|stat| {
                    self.inodes.set_reported_size(ino, Self::file_size(&stat));
                    Self::entry(ino, &key, stat)
                }),
        )
    }

    pub fn getattr(&self, ino: u64) -> Result<Entry, FsError> {
        self.getattr_by(ino, |key| Some(self.stat(key)))
            .expect("stat always answers")
    }

    /// [`FsCore::getattr`] if it can be answered without waiting.
    pub fn try_getattr(&self, ino: u64) -> Option<Result<Entry, FsError>> {
        self.getattr_by(ino, |key| self.peek(key))
    }

    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
    }

    /// [`FsCore::open`] if it can be answered without waiting (the tag and
    /// the file's catalog were revalidated already this session).
    pub fn try_open(&self, ino: u64, flags: i32) -> Option<Result<OpenReply, FsError>> {
        if let Some(key) = self.inodes.key(ino) {
            if let Some(tag) = &key.tag {
                if self
                    .dataset
                    .loaded(tag)
                    .is_none_or(|t| t.open_may_block(&key.path))
                {
                    return None;
                }
            }
        }
        Some(self.open(ino, flags))
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<OpenReply, FsError> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        let key = self.inodes.key(ino).ok_or(FsError::Stale)?;
        let Some(tag_name) = &key.tag else {
            if *key.path != *stats_path() {
                return Err(FsError::IsDir);
            }
            // Its size changes as it is read: bypass the kernel's idea of it.
            let fh = self.handles.insert(Handle::Snapshot(self.render_stats()));
            return Ok(OpenReply {
                fh,
                keep_cache: false,
                direct_io: true,
                content: None,
                digest: None,
            });
        };
        let tag = self.dataset.tag(tag_name)?;
        let opened = tag.open(&key.path).map_err(|e| match e {
            // The path was valid when the kernel looked it up.
            FsError::NotFound => FsError::Stale,
            e => e,
        })?;
        let (content, size, digest) = match opened {
            Opened::Ready(open) => (
                Some(open.file),
                Some(open.blob.size),
                Some(open.blob.digest),
            ),
            Opened::Lazy { size, digest } => (None, size, digest),
        };
        let sizes_agree = size.is_some() && size == self.inodes.reported_size(ino);
        let keep_cache = content.is_some() && sizes_agree;
        let fh = self.handles.insert(Handle::File(OpenFile {
            tag,
            path: key.path.clone(),
            content: parking_lot::Mutex::new(content.clone()),
            failure: parking_lot::Mutex::new(None),
        }));
        Ok(OpenReply {
            fh,
            keep_cache,
            direct_io: !sizes_agree,
            content: content.filter(|_| sizes_agree),
            digest,
        })
    }

    fn content(&self, file: &OpenFile) -> Result<Arc<File>, FsError> {
        if let Some(content) = file.content.lock().clone() {
            return Ok(content);
        }
        if let Some((at, error)) = file.failure.lock().clone() {
            if at.elapsed() < FAILURE_MEMORY {
                return Err(error);
            }
        }
        let open = file.tag.content(&file.path).map_err(|e| {
            let e = match e {
                FsError::NotFound => FsError::Stale,
                e => e,
            };
            *file.failure.lock() = Some((Instant::now(), e.clone()));
            e
        })?;
        *file.content.lock() = Some(open.file.clone());
        Ok(open.file)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        self.read_by(fh, offset, size, |file| Some(self.content(file)))
            .expect("reading always answers")
    }

    /// [`FsCore::read`] if the content is at hand (no download needed).
    pub fn try_read(&self, fh: u64, offset: u64, size: u32) -> Option<Result<Vec<u8>, FsError>> {
        self.read_by(fh, offset, size, |file| file.content.lock().clone().map(Ok))
    }

    fn read_by(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        content: impl FnOnce(&OpenFile) -> Option<Result<Arc<File>, FsError>>,
    ) -> Option<Result<Vec<u8>, FsError>> {
        let Some(handle) = self.handles.get(fh) else {
            return Some(Err(FsError::Io("unknown file handle".into())));
        };
        let file = match &*handle {
            Handle::File(file) => file,
            Handle::Snapshot(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                return Some(Ok(bytes[start..end].to_vec()));
            }
        };
        Some(content(file)?.and_then(|content| self.read_from(&content, offset, size)))
    }

    fn read_from(&self, content: &File, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match content.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FsError::Io(format!("cannot read the cached copy: {e}"))),
            }
        }
        buf.truncate(filled);
        Stats::add(&self.dataset.context().stats.bytes_served, filled as u64);
        Ok(buf)
    }

    /// The kernel caches to drop after a change on the server: for one file,
    /// its inode; for a tag, removed entries and every other inode of the
    /// tag (its size or listing may differ).
    pub fn invalidations(&self, change: &Change) -> Vec<Invalidation> {
        let tag = change.tag.as_str();
        if let Some(file) = &change.file {
            let key = NodeKey {
                tag: Some(tag.into()),
                path: file.as_str().into(),
            };
            return self
                .inodes
                .ino_of(&key)
                .map(Invalidation::Inode)
                .into_iter()
                .collect();
        }
        let Some(loaded) = self.dataset.loaded(tag) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (ino, key) in self.inodes.under_tag(tag) {
            if !key.path.is_empty() && loaded.exists_now(&key.path) == Some(false) {
                if let Some((parent, name)) = key.parent() {
                    if let Some(parent) = self.inodes.ino_of(&parent) {
                        out.push(Invalidation::Entry {
                            parent,
                            name: name.to_string(),
                        });
                    }
                }
            } else {
                out.push(Invalidation::Inode(ino));
            }
        }
        out
    }
}
