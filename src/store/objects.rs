use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::beneath::{Dir, Kind, TempFile};
use super::room::{DiskRoom, MemoryBudget, MemoryFile, memory_file};
use crate::digest::{Hasher, Sha256Digest};
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

fn split(digest: &Sha256Digest) -> (String, String) {
    let hex = digest.to_hex();
    (hex[..2].to_string(), hex[2..].to_string())
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
        let (prefix, name) = split(digest);
        self.dir.path().join(prefix).join(name)
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
        let (prefix, name) = split(digest);
        self.dir.open_file(&format!("{prefix}/{name}"))
    }

    /// Removes an object; one already gone is fine.
    pub fn remove(&self, digest: &Sha256Digest) -> io::Result<()> {
        let (prefix, name) = split(digest);
        self.remove_name(&prefix, &name)
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
                let Some((Kind::File, size, modified)) =
                    dir.kind_of(&name).filter(|_| kind == Kind::File)
                else {
                    tracing::warn!(
                        path = %dir.path().join(&name).display(),
                        "not a file of the cache (a symbolic link or a directory): removed, not followed"
                    );
                    let _ = dir.remove(&name);
                    continue;
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

    fn install(&self, file: TempFile, digest: &Sha256Digest) -> io::Result<()> {
        let (prefix, name) = split(digest);
        let known = self.prefixes.lock().get(&prefix).cloned();
        let target = match known {
            Some(dir) => dir,
            None => {
                let dir = Arc::new(self.dir.dir(&prefix)?);
                self.prefixes.lock().insert(prefix.clone(), dir.clone());
                dir
            }
        };
        let moved = match file.persist_or_return(&target, &name) {
            Ok(()) => Ok(()),
            // The prefix directory went (removed by hand): made again.
            Err((file, _)) => {
                self.prefixes.lock().remove(&prefix);
                self.dir
                    .dir(&prefix)
                    .and_then(|dir| file.persist(&dir, &name))
            }
        };
        match &moved {
            Ok(()) => self.room.accepted(),
            Err(e) => self.room.refused("a file", e),
        }
        moved
    }
}

/// How many leading bytes are kept aside for format checks.
const HEAD_BYTES: usize = 16;

/// Where a download's bytes go.
#[derive(Debug)]
enum Body {
    /// A temporary file in the cache's `tmp/`, moved into place once kept.
    Disk(TempFile),
    /// Memory, when the disk refuses them: served, never kept.
    Memory(MemoryFile),
}

pub struct Ingest {
    body: Body,
    hasher: Hasher,
    size: u64,
    head: Vec<u8>,
    limit: u64,
    /// Where the bytes go when the disk refuses them; without it, the
    /// download fails.
    fallback: Option<Arc<MemoryBudget>>,
    room: Arc<DiskRoom>,
    /// Moved from the disk to memory midway: checked whole at the end.
    moved: bool,
}

impl Ingest {
    fn new(body: Body, room: Arc<DiskRoom>) -> Self {
        Ingest {
            body,
            hasher: Hasher::default(),
            size: 0,
            head: Vec::new(),
            limit: u64::MAX,
            fallback: None,
            room,
            moved: false,
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
        self.write_body(chunk)?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    }

    fn write_body(&mut self, chunk: &[u8]) -> io::Result<()> {
        let written = match &mut self.body {
            Body::Memory(memory) => return memory.write(chunk),
            Body::Disk(temp) => temp.file_mut().write_all(chunk),
        };
        let Err(refused) = written else {
            return Ok(());
        };
        let Some(budget) = self.fallback.clone() else {
            return Err(refused);
        };
        self.room.refused("a download", &refused);
        // What was written so far, then the rest, in memory; the
        // temporary file goes (and its room with it).
        let mut memory = MemoryFile::new(budget)?;
        if let Body::Disk(temp) = &self.body {
            let mut buf = vec![0u8; 256 * 1024];
            let mut copied = 0u64;
            while copied < self.size {
                let want = buf.len().min((self.size - copied) as usize);
                temp.file().read_exact_at(&mut buf[..want], copied)?;
                memory.write(&buf[..want])?;
                copied += want as u64;
            }
        }
        memory.write(chunk)?;
        self.body = Body::Memory(memory);
        self.moved = true;
        Ok(())
    }

    /// Names the bytes; nothing is visible in the store until
    /// [`Ingested::commit`].
    pub fn finish(self) -> io::Result<Ingested> {
        let digest = self.hasher.finish();
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
        // Every download starts with a reset; a fresh file needs no truncation.
        if self.size == 0 {
            return Ok(());
        }
        let local = |e: io::Error| FetchError::Local(e.to_string());
        match &mut self.body {
            Body::Disk(temp) => {
                temp.file().set_len(0).map_err(local)?;
                temp.file_mut().rewind().map_err(local)?;
            }
            Body::Memory(memory) => memory.clear().map_err(local)?,
        }
        self.hasher = Hasher::default();
        self.size = 0;
        self.head.clear();
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        let size = self.size + chunk.len() as u64;
        if size > self.limit {
            return Err(too_large(size, self.limit, "--max-file-size"));
        }
        self.append(chunk)
            .map_err(|e| FetchError::Local(e.to_string()))
    }

    fn announced(&mut self, size: u64) -> Result<(), FetchError> {
        if size > self.limit {
            return Err(too_large(size, self.limit, "--max-file-size"));
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

    pub fn sync(&self) -> io::Result<()> {
        match &self.body {
            Body::Disk(temp) => temp.file().sync_all(),
            Body::Memory(_) => Ok(()),
        }
    }

    /// Moves synced bytes into place.
    pub fn install(self, store: &ObjectStore) -> io::Result<Blob> {
        match self.body {
            Body::Disk(temp) => store.install(temp, &self.blob.digest)?,
            Body::Memory(_) => {
                return Err(io::Error::other("the bytes are in memory, not on disk"));
            }
        }
        Ok(self.blob)
    }

    /// A read-only handle on the bytes, valid after the commit moves them.
    pub fn reopen(&self) -> io::Result<File> {
        match &self.body {
            Body::Disk(temp) => temp.reopen(),
            Body::Memory(memory) => memory.reader(),
        }
    }

    /// The bytes of a download held in memory, to be served: they count
    /// in the budget as long as the file lives. `None` (and the download
    /// gone) for one on disk.
    pub fn into_served(self) -> Option<Arc<File>> {
        match self.body {
            Body::Memory(memory) => Some(memory.into_served()),
            Body::Disk(_) => None,
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

    #[test]
    fn stores_by_digest_and_reads_back() {
        let (_dir, store) = store();
        let blob = store.put_bytes(b"hello").unwrap();
        assert_eq!(blob.digest, Sha256Digest::of(b"hello"));
        assert!(store.contains(&blob));
        assert_eq!(store.read(&blob).unwrap(), b"hello");
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
