use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::beneath::{Dir, Kind, TempFile};
use super::room::{DiskRoom, MemoryBudget, MemoryFile, memory_file};
use crate::digest::{Hasher, Sha256Digest, StreamHasher};
use crate::remote::{BodySink, FetchError, too_large};

/// Bytes held in the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub digest: Sha256Digest,
    pub size: u64,
}

pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
pub const KTX2_MAGIC: &[u8] = b"\xabKTX 20\xbb\r\n\x1a\n";

/// What a store holds, and so which bytes may be in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// PNG or KTX2 files, nothing else (an empty file is not one).
    Textures,
    /// Manifests, catalogs and MaterialX maps.
    Documents,
}

impl Holds {
    /// Whether bytes starting with `head` may be in such a store.
    pub fn admits(self, head: &[u8]) -> bool {
        match self {
            Holds::Textures => head.starts_with(PNG_MAGIC) || head.starts_with(KTX2_MAGIC),
            Holds::Documents => true,
        }
    }
}

/// A file found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its digest, when its name is one.
    pub digest: Option<Sha256Digest>,
    pub size: u64,
    /// Last change, Unix seconds.
    pub modified: u64,
    prefix: String,
    name: String,
}

/// File bodies named by their sha256, so identical bytes are stored once.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    dir: Arc<Dir>,
    tmp: Arc<Dir>,
    holds: Holds,
    /// The prefix directories opened so far, so that an install costs no
    /// mkdir and no open.
    prefixes: Arc<Mutex<HashMap<String, Arc<Dir>>>>,
    /// Whether the disk takes writes (shared by the cache's stores).
    room: Arc<DiskRoom>,
    /// What [`ObjectStore::put_bytes`] could not write, in memory for the
    /// session.
    held: Arc<Mutex<HashMap<Sha256Digest, Arc<File>>>>,
}

/// An object opened, and whether it is held in memory (not on disk).
#[derive(Debug)]
pub struct Located {
    pub file: File,
    pub in_memory: bool,
}

/// An object's name in the store, `ab/cdef…`: its digest in hex, the
/// first two digits naming its directory. Built on the stack, since every
/// open of a texture not held in memory looks the store up by it.
struct ObjectPath([u8; 65]);

impl ObjectPath {
    fn of(digest: &Sha256Digest) -> Self {
        let hex = digest.hex();
        let mut path = [b'/'; 65];
        path[..2].copy_from_slice(&hex[..2]);
        path[3..].copy_from_slice(&hex[2..]);
        ObjectPath(path)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }

    fn prefix(&self) -> &str {
        &self.as_str()[..2]
    }

    fn name(&self) -> &str {
        &self.as_str()[3..]
    }
}

/// What a name listed in a prefix directory is, looked at again.
#[derive(Debug, PartialEq, Eq)]
enum ListedEntry {
    File(u64, std::time::SystemTime),
    /// Evicted or cleared by another process since the listing: left
    /// alone (a removal now could take the same object stored again).
    Vanished,
    /// A link or a directory: never the store's.
    Foreign,
}

/// `listed`: what the directory listing said; `now`: what a look at the
/// name finds, if it is still there.
fn listed_entry(listed: Kind, now: Option<(Kind, u64, std::time::SystemTime)>) -> ListedEntry {
    match (listed, now) {
        (Kind::File, Some((Kind::File, size, modified))) => ListedEntry::File(size, modified),
        (Kind::File, None) => ListedEntry::Vanished,
        _ => ListedEntry::Foreign,
    }
}

impl ObjectStore {
    pub fn new(dir: Arc<Dir>, tmp: Arc<Dir>, holds: Holds, room: Arc<DiskRoom>) -> Self {
        ObjectStore {
            dir,
            tmp,
            holds,
            prefixes: Arc::default(),
            room,
            held: Arc::default(),
        }
    }

    /// Whether the disk takes writes, as the last ones found.
    pub fn room(&self) -> &Arc<DiskRoom> {
        &self.room
    }

    /// Makes everything written to the store's filesystem durable at once.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        self.dir.sync_filesystem()
    }

    pub fn holds(&self) -> Holds {
        self.holds
    }

    /// Where an object is, for messages and tests.
    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        self.dir.path().join(ObjectPath::of(digest).as_str())
    }

    /// Opens an object for reading; a symlink on the way is refused. One
    /// held in memory shares its offset: read it with `pread`.
    pub fn open(&self, digest: &Sha256Digest) -> io::Result<File> {
        self.locate(digest).map(|located| located.file)
    }

    /// Opens an object, saying whether it is held in memory.
    pub fn locate(&self, digest: &Sha256Digest) -> io::Result<Located> {
        if let Some(held) = self.held.lock().get(digest) {
            return Ok(Located {
                file: held.try_clone()?,
                in_memory: true,
            });
        }
        Ok(Located {
            file: self.open_stored(digest)?,
            in_memory: false,
        })
    }

    /// Opens an object on disk.
    fn open_stored(&self, digest: &Sha256Digest) -> io::Result<File> {
        self.dir.open_file(ObjectPath::of(digest).as_str())
    }

    /// Removes an object; one already gone is fine.
    pub fn remove(&self, digest: &Sha256Digest) -> io::Result<()> {
        let path = ObjectPath::of(digest);
        self.remove_name(path.prefix(), path.name())
    }

    fn remove_name(&self, prefix: &str, name: &str) -> io::Result<()> {
        match self.dir.open_dir(prefix) {
            Ok(dir) => dir.remove(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes a listed file.
    pub fn remove_listed(&self, listed: &Listed) -> io::Result<()> {
        self.remove_name(&listed.prefix, &listed.name)
    }

    /// Every file in the store. Links are never the store's: they are
    /// removed (the link, not what it points to), as are files in place of
    /// a prefix directory.
    pub fn list(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        let Ok(prefixes) = self.dir.entries() else {
            return out;
        };
        for (prefix, kind) in prefixes {
            if kind != Kind::Dir {
                tracing::warn!(
                    path = %self.dir.path().join(&prefix).display(),
                    "not a directory of the cache (a symbolic link or a file): removed, not followed"
                );
                let _ = self.dir.remove(&prefix);
                continue;
            }
            let Ok(dir) = self.dir.open_dir(&prefix) else {
                continue;
            };
            for (name, kind) in dir.entries().unwrap_or_default() {
                let (size, modified) = match listed_entry(kind, dir.kind_of(&name)) {
                    ListedEntry::File(size, modified) => (size, modified),
                    ListedEntry::Vanished => continue,
                    ListedEntry::Foreign => {
                        tracing::warn!(
                            path = %dir.path().join(&name).display(),
                            "not a file of the cache (a symbolic link or a directory): removed, not followed"
                        );
                        let _ = dir.remove(&name);
                        continue;
                    }
                };
                out.push(Listed {
                    digest: Sha256Digest::from_hex(&format!("{prefix}{name}")),
                    size,
                    modified: modified
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    prefix: prefix.clone(),
                    name,
                });
            }
        }
        out
    }

    /// Whether a stored object's bytes are what its name says and what the
    /// store may hold; returns its size when so.
    pub fn check(&self, digest: &Sha256Digest) -> io::Result<Option<u64>> {
        let mut file = self.open_stored(digest)?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut head = Vec::new();
        let mut size = 0u64;
        loop {
            let n = io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            if head.len() < HEAD_BYTES {
                head.extend_from_slice(&buf[..n.min(HEAD_BYTES)]);
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let good = hasher.finish() == *digest && self.holds.admits(&head);
        Ok(good.then_some(size))
    }

    /// Whether an object of that digest is on the disk.
    pub fn contains_digest(&self, digest: &Sha256Digest) -> bool {
        self.open_stored(digest).is_ok()
    }

    pub fn contains(&self, blob: &Blob) -> bool {
        self.locate(&blob.digest)
            .map(|located| located.file)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.len() == blob.size)
    }

    pub fn read(&self, blob: &Blob) -> io::Result<Vec<u8>> {
        let file = self.open(&blob.digest)?;
        let mut bytes = Vec::with_capacity(blob.size as usize);
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            match file.read_at(&mut chunk, bytes.len() as u64) {
                Ok(0) => return Ok(bytes),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores `bytes`; when the disk refuses them, they are held in memory
    /// for the session instead (documents: the tree needs them, and a
    /// later session fetches them again).
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<Blob> {
        let stored = self.ingest().and_then(|mut ingest| {
            ingest.append(bytes)?;
            ingest.finish()?.commit(self)
        });
        match stored {
            Ok(blob) => {
                self.held.lock().remove(&blob.digest);
                Ok(blob)
            }
            Err(e) => {
                self.room.refused("a document", &e);
                let mut file = memory_file(c"matvisfs-document")?;
                file.write_all(bytes)?;
                let blob = Blob {
                    digest: Sha256Digest::of(bytes),
                    size: bytes.len() as u64,
                };
                self.held.lock().insert(blob.digest, Arc::new(file));
                Ok(blob)
            }
        }
    }

    /// A temporary file that a download streams into.
    pub fn ingest(&self) -> io::Result<Ingest> {
        Ok(Ingest::new(
            Body::Disk(self.tmp.create_temp("dl-")?),
            self.room.clone(),
        ))
    }

    /// A download held in memory, within `budget`, until it is kept
    /// ([`Ingested::install`] writes it): nothing is created on the disk
    /// while it is read. One larger than [`STAGED_FILE_LIMIT`], or past the
    /// budget, goes on in a temporary file.
    pub fn stage(&self, budget: Arc<MemoryBudget>) -> io::Result<Ingest> {
        let mut ingest = Ingest::new(Body::Staged(MemoryFile::new(budget)?), self.room.clone());
        ingest.spill = Some(self.clone());
        Ok(ingest)
    }

    /// The prefix directory of an object, made if missing.
    fn prefix_dir(&self, prefix: &str) -> io::Result<Arc<Dir>> {
        if let Some(dir) = self.prefixes.lock().get(prefix) {
            return Ok(dir.clone());
        }
        let dir = Arc::new(self.dir.dir(prefix)?);
        self.prefixes.lock().insert(prefix.to_string(), dir.clone());
        Ok(dir)
    }

    /// Places an object: `place` gets its prefix directory and its name,
    /// once more if it fails because the directory went (removed by hand).
    fn place(
        &self,
        digest: &Sha256Digest,
        mut place: impl FnMut(&Dir, &str) -> io::Result<()>,
    ) -> io::Result<()> {
        let path = ObjectPath::of(digest);
        let (prefix, name) = (path.prefix(), path.name());
        let placed = place(&*self.prefix_dir(prefix)?, name).or_else(|_| {
            self.prefixes.lock().remove(prefix);
            place(&*self.prefix_dir(prefix)?, name)
        });
        match &placed {
            Ok(()) => self.room.accepted(),
            Err(e) => self.room.refused("a file", e),
        }
        placed
    }

    fn install(&self, file: TempFile, digest: &Sha256Digest) -> io::Result<()> {
        let mut file = Some(file);
        self.place(digest, |target, name| match file.take() {
            Some(temp) => temp.persist_or_return(target, name).map_err(|(temp, e)| {
                file = Some(temp);
                e
            }),
            None => Err(io::Error::other("the file is gone")),
        })
    }

    /// Writes the `size` bytes of `bytes` as an object: into a file with no
    /// name in its prefix directory, named once whole (where the filesystem
    /// has no such files: through a temporary file in `tmp/`).
    fn install_bytes(&self, bytes: &File, size: u64, digest: &Sha256Digest) -> io::Result<()> {
        self.place(digest, |target, name| match target.create_anonymous() {
            Ok(mut file) => {
                copy_at(bytes, size, &mut file)?;
                target.link_anonymous(&file, name)
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                let mut temp = self.tmp.create_temp("dl-")?;
                copy_at(bytes, size, temp.file_mut())?;
                temp.persist(target, name)
            }
            Err(e) => Err(e),
        })
    }
}

/// Copies the first `size` bytes of `from` (read with `pread`: its offset
/// may be shared) to `to`.
fn copy_at(from: &File, size: u64, to: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; size.min(256 * 1024) as usize];
    let mut at = 0u64;
    while at < size {
        let want = buf.len().min((size - at) as usize);
        from.read_exact_at(&mut buf[..want], at)?;
        to.write_all(&buf[..want])?;
        at += want as u64;
    }
    Ok(())
}

/// How many leading bytes are kept aside for format checks.
const HEAD_BYTES: usize = 16;

/// The largest download held in memory until kept: textures up to this
/// size (most of them) cost no file on the disk while they are read.
pub const STAGED_FILE_LIMIT: u64 = 4 << 20;

/// Where a download's bytes go.
#[derive(Debug)]
enum Body {
    /// A temporary file in the cache's `tmp/`, moved into place once kept.
    Disk(TempFile),
    /// Memory, when the disk refuses them: served, never kept.
    Memory(MemoryFile),
    /// Memory until the store keeps them (written out then, off the
    /// reader's path).
    Staged(MemoryFile),
}

pub struct Ingest {
    body: Body,
    hasher: StreamHasher,
    size: u64,
    head: Vec<u8>,
    limit: u64,
    /// Where the bytes go when the disk refuses them; without it, the
    /// download fails.
    fallback: Option<Arc<MemoryBudget>>,
    room: Arc<DiskRoom>,
    /// Moved from the disk to memory midway: checked whole at the end.
    moved: bool,
    /// Where a staged download goes on when it outgrows memory.
    spill: Option<ObjectStore>,
    /// The file's blocks, given ahead of the bytes (see [`RESERVE_AHEAD`]).
    reserve: Reserve,
}

/// How far ahead of the bytes written a download's file is given its blocks
/// at once, within the size its server announced: ext4 writes into blocks
/// already given for about a third less CPU than into ones it must reserve
/// page by page (a large download's writes are half its receiving thread),
/// and a server that announces more than it sends holds at most this much
/// of the disk beyond what it sent.
const RESERVE_AHEAD: u64 = 32 << 20;

/// Bodies smaller than this are written without blocks given ahead: the
/// call costs about what it saves.
const RESERVE_FROM: u64 = 1 << 20;

/// The blocks given to a download's file ahead of its bytes.
#[derive(Debug, Default)]
struct Reserve {
    /// The size the server announced for the body.
    announced: Option<u64>,
    /// Blocks were asked for up to here (to the size announced where the
    /// filesystem refused them: not asked again).
    to: u64,
}

impl Reserve {
    /// Gives `file`, of which `written` bytes are written, its blocks for
    /// `more` bytes and up to [`RESERVE_AHEAD`] past them. `KEEP_SIZE`: the
    /// file's length stays that of the bytes written. Only a hint: where
    /// the filesystem cannot (or the disk is full) the writes go on as
    /// before, and say so if they fail.
    fn ahead(&mut self, file: &File, written: u64, more: u64) {
        let Some(announced) = self.announced else {
            return;
        };
        let end = (written + more).min(announced);
        if end <= self.to || announced < RESERVE_FROM {
            return;
        }
        let to = announced.min(written + more + RESERVE_AHEAD);
        let given = rustix::fs::fallocate(
            file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            self.to,
            to - self.to,
        );
        // Asked once: a filesystem that cannot is not asked again.
        self.to = if given.is_ok() { to } else { announced };
    }

    /// Gives back the blocks given past `size`, the file's end, where the
    /// body ended before the size announced: a file kept holds its bytes'
    /// blocks alone, which is what the cache's cap counts.
    fn give_back_past(&self, file: &File, size: u64) {
        // A truncation to the same length frees the blocks past it (a
        // hole punched past the end is not made, on ext4).
        if self.to > size {
            if let Err(e) = file.set_len(size) {
                tracing::debug!("cannot give back the blocks past a download's end: {e}");
            }
        }
    }
}

impl Ingest {
    fn new(body: Body, room: Arc<DiskRoom>) -> Self {
        Ingest {
            body,
            hasher: StreamHasher::default(),
            size: 0,
            head: Vec::new(),
            limit: u64::MAX,
            fallback: None,
            room,
            moved: false,
            spill: None,
            reserve: Reserve::default(),
        }
    }

    /// A download held in memory from the start (the disk refused even
    /// its temporary file).
    pub fn in_memory(budget: Arc<MemoryBudget>, room: Arc<DiskRoom>) -> io::Result<Self> {
        let mut ingest = Ingest::new(Body::Memory(MemoryFile::new(budget.clone())?), room);
        ingest.fallback = Some(budget);
        Ok(ingest)
    }

    /// Goes on in memory, within `budget`, if the disk refuses the bytes.
    pub fn or_memory(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.fallback = Some(budget);
        self
    }

    /// Refuses bodies larger than `limit` (`--max-file-size`).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Whether the bytes are in memory (the disk refused them).
    pub fn is_in_memory(&self) -> bool {
        matches!(self.body, Body::Memory(_))
    }

    /// Adds bytes to the download (what a response body does, chunk by chunk).
    pub fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.written(chunk)?;
        self.hasher.update(chunk);
        Ok(())
    }

    /// [`Ingest::append`] of a chunk the hashing thread may hold: a large
    /// body reaches it without a copy.
    pub fn append_shared(&mut self, chunk: Bytes) -> io::Result<()> {
        self.written(&chunk)?;
        self.hasher.update_shared(chunk);
        Ok(())
    }

    /// Refuses a body that `more` bytes would take past `--max-file-size`.
    fn within_limit(&self, more: usize) -> Result<(), FetchError> {
        let size = self.size + more as u64;
        match size > self.limit {
            true => Err(too_large(size, self.limit, "--max-file-size")),
            false => Ok(()),
        }
    }

    /// Writes `chunk`, which is to be hashed next.
    fn written(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write_body(chunk)?;
        self.size += chunk.len() as u64;
        // A large body is hashed beside its download, not in turn with it.
        if self.size > STAGED_FILE_LIMIT {
            self.hasher.in_background();
        }
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    }

    /// A staged download that would outgrow [`STAGED_FILE_LIMIT`] or its
    /// budget with `more` bytes goes on in a temporary file, with what it
    /// has so far.
    fn spill_if_past(&mut self, more: u64) -> io::Result<()> {
        let Body::Staged(memory) = &self.body else {
            return Ok(());
        };
        let size = self.size + more;
        if size <= STAGED_FILE_LIMIT && memory.fits(size) {
            return Ok(());
        }
        self.spill()
    }

    fn spill(&mut self) -> io::Result<()> {
        let Body::Staged(memory) = &self.body else {
            return Ok(());
        };
        let store = self.spill.as_ref().expect("a staged download can spill");
        let mut temp = match store.tmp.create_temp("dl-") {
            Ok(temp) => temp,
            Err(refused) => return self.move_to_memory(refused),
        };
        if let Err(refused) = copy_at(&memory.reader()?, self.size, temp.file_mut()) {
            return self.move_to_memory(refused);
        }
        self.body = Body::Disk(temp);
        Ok(())
    }

    /// The disk refused the bytes: what was written so far, then the rest,
    /// go to memory within the fallback budget (the temporary file, and its
    /// room, go).
    fn move_to_memory(&mut self, refused: io::Error) -> io::Result<()> {
        let Some(budget) = self.fallback.clone() else {
            return Err(refused);
        };
        self.room.refused("a download", &refused);
        let mut memory = MemoryFile::new(budget)?;
        let written = match &self.body {
            Body::Disk(temp) => Some(temp.file().try_clone()?),
            Body::Staged(staged) => Some(staged.reader()?),
            Body::Memory(_) => None,
        };
        if let Some(written) = written {
            let mut buf = vec![0u8; 256 * 1024];
            let mut copied = 0u64;
            while copied < self.size {
                let want = buf.len().min((self.size - copied) as usize);
                written.read_exact_at(&mut buf[..want], copied)?;
                memory.write(&buf[..want])?;
                copied += want as u64;
            }
        }
        self.body = Body::Memory(memory);
        self.moved = true;
        Ok(())
    }

    fn write_body(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.spill_if_past(chunk.len() as u64)?;
        if let Body::Staged(memory) = &mut self.body {
            // Another download took the budget meanwhile: on to the disk.
            if memory.write(chunk).is_ok() {
                return Ok(());
            }
            self.spill()?;
        }
        let written = match &mut self.body {
            Body::Memory(memory) => return memory.write(chunk),
            Body::Staged(_) => unreachable!("spilled"),
            Body::Disk(temp) => {
                self.reserve
                    .ahead(temp.file(), self.size, chunk.len() as u64);
                temp.file_mut().write_all(chunk)
            }
        };
        let Err(refused) = written else {
            return Ok(());
        };
        self.move_to_memory(refused)?;
        match &mut self.body {
            Body::Memory(memory) => memory.write(chunk),
            _ => unreachable!("moved to memory"),
        }
    }

    /// Names the bytes; nothing is visible in the store until
    /// [`Ingested::commit`].
    pub fn finish(self) -> io::Result<Ingested> {
        let digest = self.hasher.finish();
        if let Body::Disk(temp) = &self.body {
            self.reserve.give_back_past(temp.file(), self.size);
        }
        if let (true, Body::Memory(memory)) = (self.moved, &self.body) {
            // Read back from the temporary file: what is served must be
            // what was hashed as it came.
            let reader = memory.reader()?;
            let mut hasher = Hasher::default();
            let mut buf = vec![0u8; 256 * 1024];
            let mut at = 0u64;
            while at < self.size {
                let want = buf.len().min((self.size - at) as usize);
                reader.read_exact_at(&mut buf[..want], at)?;
                hasher.update(&buf[..want]);
                at += want as u64;
            }
            if hasher.finish() != digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the bytes moved from the disk to memory differ from those downloaded",
                ));
            }
        }
        Ok(Ingested {
            body: self.body,
            blob: Blob {
                digest,
                size: self.size,
            },
            head: self.head,
        })
    }
}

impl BodySink for Ingest {
    fn reset(&mut self) -> Result<(), FetchError> {
        // The size announced is the attempt's own: a retry may announce
        // none (a chunked body) after one that announced a larger one.
        let reserved = std::mem::take(&mut self.reserve).to;
        // Every download starts with a reset; a fresh file needs no truncation.
        if self.size == 0 && reserved == 0 {
            return Ok(());
        }
        let local = |e: io::Error| FetchError::Local(e.to_string());
        match &mut self.body {
            Body::Disk(temp) => {
                // Frees the blocks given ahead too.
                temp.file().set_len(0).map_err(local)?;
                temp.file_mut().rewind().map_err(local)?;
            }
            Body::Memory(memory) | Body::Staged(memory) => memory.clear().map_err(local)?,
        }
        self.hasher = StreamHasher::default();
        self.size = 0;
        self.head.clear();
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.within_limit(chunk.len())?;
        self.append(chunk)
            .map_err(|e| FetchError::Local(e.to_string()))
    }

    fn write_shared(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        self.within_limit(chunk.len())?;
        self.append_shared(chunk)
            .map_err(|e| FetchError::Local(e.to_string()))
    }

    fn announced(&mut self, size: u64) -> Result<(), FetchError> {
        if size > self.limit {
            return Err(too_large(size, self.limit, "--max-file-size"));
        }
        self.reserve.announced = Some(size);
        if size > STAGED_FILE_LIMIT {
            self.hasher.in_background();
        }
        if matches!(self.body, Body::Staged(_)) && self.size == 0 {
            self.spill_if_past(size)
                .map_err(|e| FetchError::Local(e.to_string()))?;
        }
        match &self.body {
            // Refused before the body rather than after most of it.
            Body::Memory(memory) if !memory.fits(size) => Err(FetchError::Local(format!(
                "its disk refuses writes, and a file of {size} bytes does not fit in the {} MiB \
                 of downloads that may be held in memory meanwhile",
                memory.limit() >> 20
            ))),
            _ => Ok(()),
        }
    }
}

/// A complete download, not yet in the store. Dropping it deletes it.
pub struct Ingested {
    body: Body,
    pub blob: Blob,
    /// The first bytes, for magic-number checks.
    pub head: Vec<u8>,
}

impl Ingested {
    /// Syncs the bytes to disk, then moves them into place: a crash never
    /// leaves a partial object under a digest's name.
    pub fn commit(self, store: &ObjectStore) -> io::Result<Blob> {
        self.sync()?;
        self.install(store)
    }

    pub fn digest(&self) -> Sha256Digest {
        self.blob.digest
    }

    /// Whether the bytes are in memory: served, never kept.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.body, Body::Memory(_))
    }

    /// Whether the bytes are in memory until kept (the disk has no file of
    /// them yet).
    pub fn is_staged(&self) -> bool {
        matches!(self.body, Body::Staged(_))
    }

    pub fn sync(&self) -> io::Result<()> {
        match &self.body {
            Body::Disk(temp) => temp.file().sync_all(),
            Body::Memory(_) | Body::Staged(_) => Ok(()),
        }
    }

    /// Moves synced bytes into place; staged ones are written out (and
    /// synced with the filesystem later, like those moved).
    pub fn install(self, store: &ObjectStore) -> io::Result<Blob> {
        match self.body {
            Body::Disk(temp) => store.install(temp, &self.blob.digest)?,
            Body::Staged(memory) => {
                store.install_bytes(&memory.reader()?, self.blob.size, &self.blob.digest)?
            }
            Body::Memory(_) => {
                return Err(io::Error::other("the bytes are in memory, not on disk"));
            }
        }
        Ok(self.blob)
    }

    /// A read-only handle on the bytes, valid after the commit moves them
    /// (for staged bytes: the memory they are in).
    pub fn reopen(&self) -> io::Result<File> {
        match &self.body {
            Body::Disk(temp) => temp.reopen(),
            Body::Memory(memory) => memory.reader(),
            // Written whole: readers start at its beginning.
            Body::Staged(memory) => {
                let mut reader = memory.reader()?;
                reader.rewind()?;
                Ok(reader)
            }
        }
    }

    /// The bytes of a download held in memory, to be served: they count
    /// in the budget as long as the file lives. `None` (and the download
    /// gone) for one on disk.
    pub fn into_served(self) -> Option<Arc<File>> {
        match self.body {
            Body::Memory(memory) => Some(memory.into_served()),
            Body::Disk(_) | Body::Staged(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open_root(dir.path()).unwrap();
        let objects = Arc::new(root.dir("objects").unwrap());
        let tmp = Arc::new(root.dir("tmp").unwrap());
        let room = Arc::default();
        (dir, ObjectStore::new(objects, tmp, Holds::Documents, room))
    }

    /// A file evicted by another process between the listing and the look
    /// at it is left alone, not taken for a link and removed (`cache
    /// verify` beside a mount evicting said it removed a link, and could
    /// have removed the object stored again meanwhile).
    #[test]
    fn a_listed_file_gone_since_is_left_alone_and_links_are_not_the_stores() {
        let at = std::time::UNIX_EPOCH;
        assert_eq!(
            listed_entry(Kind::File, Some((Kind::File, 7, at))),
            ListedEntry::File(7, at)
        );
        assert_eq!(listed_entry(Kind::File, None), ListedEntry::Vanished);
        for (listed, now) in [
            (Kind::Other, Some((Kind::File, 7, at))),
            (Kind::File, Some((Kind::Dir, 0, at))),
            (Kind::Dir, None),
        ] {
            assert_eq!(listed_entry(listed, now), ListedEntry::Foreign);
        }
    }

    /// The length of a download's file and the bytes of disk it holds.
    fn disk_use(ingest: &Ingest) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let Body::Disk(temp) = &ingest.body else {
            panic!("a download on the disk");
        };
        let meta = temp.file().metadata().unwrap();
        (meta.len(), meta.blocks() * 512)
    }

    /// A server may announce more than it sends: the blocks a download's
    /// file is given ahead of its bytes stay within `RESERVE_AHEAD` of
    /// them, a retry gives them all back, and the file is only ever as long
    /// as the bytes written, never padded to the size announced.
    #[test]
    fn blocks_given_ahead_stay_near_the_bytes_and_never_lengthen_the_file() {
        let (_dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        // Far more than it sends, but not more than the disk holds.
        ingest.announced((2 << 20) + 4 * RESERVE_AHEAD).unwrap();
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        for _ in 0..8 {
            ingest.write_shared(chunk.clone()).unwrap();
        }
        let (len, held) = disk_use(&ingest);
        assert_eq!(len, 2 << 20);
        assert!(held <= (2 << 20) + RESERVE_AHEAD + (1 << 20), "{held}");
        ingest.reset().unwrap();
        assert_eq!(disk_use(&ingest), (0, 0));
        // Sent as announced this time.
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        ingest.announced(body.len() as u64).unwrap();
        for (n, piece) in body.chunks(100_000).enumerate() {
            match n % 3 {
                0 => ingest.write(piece).unwrap(),
                _ => ingest.write_shared(Bytes::copy_from_slice(piece)).unwrap(),
            }
        }
        assert_eq!(disk_use(&ingest).0, body.len() as u64);
        let blob = ingest.finish().unwrap().commit(&store).unwrap();
        assert_eq!(blob.digest, Sha256Digest::of(&body));
        assert_eq!(store.read(&blob).unwrap(), body);
    }

    /// An attempt that announced a size and sent nothing, then a retry
    /// that announces none (a chunked body): the blocks given ahead follow
    /// the retry's bytes alone, and the object kept holds no block past
    /// its end (it held 32 MiB more than its size, which no cap counts:
    /// found by a break-it run).
    #[test]
    fn a_retry_that_announces_no_size_keeps_no_blocks_past_its_bytes() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        ingest.reset().unwrap();
        ingest.announced(100 << 20).unwrap();
        // Closed before the body: the next attempt.
        ingest.reset().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        for piece in body.chunks(65_536) {
            ingest.write_shared(Bytes::copy_from_slice(piece)).unwrap();
        }
        let near = |held: u64| held < body.len() as u64 + (1 << 20);
        let (len, held) = disk_use(&ingest);
        assert_eq!(len, body.len() as u64);
        assert!(near(held), "{held}");
        let blob = ingest.finish().unwrap().commit(&store).unwrap();
        let kept = std::fs::metadata(store.path(&blob.digest)).unwrap();
        assert_eq!(kept.len(), body.len() as u64);
        assert!(near(kept.blocks() * 512), "{}", kept.blocks() * 512);
    }

    /// Whoever ends a body before the size announced (the HTTP client
    /// refuses it; another source may not): the file kept still holds no
    /// block past its end.
    #[test]
    fn a_body_shorter_than_announced_keeps_no_blocks_past_its_end() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        ingest.announced(10 << 20).unwrap();
        let body = vec![9u8; 3 << 20];
        ingest.write_shared(Bytes::copy_from_slice(&body)).unwrap();
        let blob = ingest.finish().unwrap().commit(&store).unwrap();
        let kept = std::fs::metadata(store.path(&blob.digest)).unwrap();
        assert_eq!(kept.len(), body.len() as u64);
        assert!(kept.blocks() * 512 < (4 << 20), "{}", kept.blocks() * 512);
    }

    #[test]
    fn stores_by_digest_and_reads_back() {
        let (_dir, store) = store();
        let blob = store.put_bytes(b"hello").unwrap();
        assert_eq!(blob.digest, Sha256Digest::of(b"hello"));
        assert!(store.contains(&blob));
        assert_eq!(store.read(&blob).unwrap(), b"hello");
        // Named by its digest, under a directory of its first two digits.
        let hex = blob.digest.to_hex();
        let (prefix, name) = hex.split_at(2);
        assert!(
            std::fs::metadata(store.path(&blob.digest))
                .unwrap()
                .is_file()
        );
        assert!(
            store
                .path(&blob.digest)
                .ends_with(format!("{prefix}/{name}"))
        );
        store.remove(&blob.digest).unwrap();
        assert!(!store.contains(&blob));
        let blob = store.put_bytes(b"hello").unwrap();
        assert!(!store.contains(&Blob {
            digest: Sha256Digest::of(b"other"),
            size: 5
        }));
        // Same bytes again: same object, no error.
        assert_eq!(store.put_bytes(b"hello").unwrap(), blob);
        assert_eq!(store.check(&blob.digest).unwrap(), Some(5));
    }

    #[test]
    fn a_reset_download_starts_over_and_an_uncommitted_one_leaves_nothing() {
        let (dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        BodySink::write(&mut ingest, b"partial garbage").unwrap();
        ingest.reset().unwrap();
        BodySink::write(&mut ingest, b"\x89PNG").unwrap();
        BodySink::write(&mut ingest, b" rest").unwrap();
        let done = ingest.finish().unwrap();
        assert_eq!(done.blob.digest, Sha256Digest::of(b"\x89PNG rest"));
        assert_eq!(done.head, b"\x89PNG rest");
        drop(done);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("objects"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn refuses_a_symlink_in_place_of_an_object_or_of_its_directory() {
        let (dir, store) = store();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"not yours").unwrap();
        let digest = Sha256Digest::of(b"not yours");
        let path = store.path(&digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        assert!(store.open(&digest).is_err());
        assert!(!store.contains(&Blob { digest, size: 9 }));

        // A prefix directory that leads elsewhere is neither entered nor emptied.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("notes.txt"), b"keep me").unwrap();
        let linked = Sha256Digest::of(b"linked");
        let prefix = store.path(&linked).parent().unwrap().to_path_buf();
        std::os::unix::fs::symlink(&elsewhere, &prefix).unwrap();
        assert!(store.open(&linked).is_err());
        assert!(store.list().is_empty(), "links are not the store's");
        let blob = store.put_bytes(b"linked").unwrap();
        assert!(store.contains(&blob));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
        assert_eq!(
            std::fs::read(elsewhere.join("notes.txt")).unwrap(),
            b"keep me"
        );
        assert!(
            std::fs::read_link(&secret).is_err(),
            "the target is untouched"
        );
    }

    #[test]
    fn a_texture_store_admits_only_png_and_ktx2() {
        assert!(Holds::Textures.admits(PNG_MAGIC));
        assert!(Holds::Textures.admits(KTX2_MAGIC));
        assert!(!Holds::Textures.admits(b""));
        assert!(!Holds::Textures.admits(b"<html>"));
        assert!(Holds::Documents.admits(b"{}"));
    }
}
