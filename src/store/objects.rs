use std::fs::{self, DirBuilder, File};
use std::io::{self, Seek, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use tempfile::NamedTempFile;

use crate::digest::{Hasher, Sha256Digest};
use crate::remote::{BodySink, FetchError, too_large};

/// Bytes held in the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub digest: Sha256Digest,
    pub size: u64,
}

/// File bodies named by their sha256, so identical bytes are stored once.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl ObjectStore {
    pub fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        ObjectStore { dir, tmp }
    }

    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    /// Opens an object for reading; a symlink planted in its place is refused.
    pub fn open(&self, digest: &Sha256Digest) -> io::Result<File> {
        super::open_no_follow(&self.path(digest))
    }

    /// Removes an object; one already gone is fine.
    pub fn remove(&self, digest: &Sha256Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every file in the store: its digest when the name is one, and its path.
    pub fn list(&self) -> Vec<(Option<Sha256Digest>, PathBuf)> {
        let mut out = Vec::new();
        let Ok(prefixes) = fs::read_dir(&self.dir) else {
            return out;
        };
        for prefix in prefixes.filter_map(Result::ok) {
            let prefix_name = prefix.file_name().to_string_lossy().into_owned();
            let Ok(files) = fs::read_dir(prefix.path()) else {
                // A stray file where a prefix directory belongs.
                out.push((None, prefix.path()));
                continue;
            };
            for file in files.filter_map(Result::ok) {
                let name = format!("{prefix_name}{}", file.file_name().to_string_lossy());
                out.push((Sha256Digest::from_hex(&name), file.path()));
            }
        }
        out
    }

    /// Hashes a file without following a symlink planted in its place.
    pub fn hash_file(path: &std::path::Path) -> io::Result<(Sha256Digest, u64)> {
        let mut file = super::open_no_follow(path)?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((hasher.finish(), size))
    }

    pub fn contains(&self, blob: &Blob) -> bool {
        fs::symlink_metadata(self.path(&blob.digest))
            .is_ok_and(|m| m.is_file() && m.len() == blob.size)
    }

    pub fn read(&self, blob: &Blob) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(blob.size as usize);
        io::Read::read_to_end(&mut self.open(&blob.digest)?, &mut bytes)?;
        Ok(bytes)
    }

    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<Blob> {
        let mut ingest = self.ingest()?;
        ingest.append(bytes)?;
        ingest.finish()?.commit(self)
    }

    /// A temporary file that a download streams into.
    pub fn ingest(&self) -> io::Result<Ingest> {
        Ok(Ingest {
            file: tempfile::Builder::new()
                .prefix("dl-")
                .tempfile_in(&self.tmp)?,
            hasher: Hasher::default(),
            size: 0,
            head: Vec::new(),
            limit: u64::MAX,
        })
    }

    fn install(&self, file: NamedTempFile, digest: &Sha256Digest) -> io::Result<()> {
        let target = self.path(digest);
        if let Some(parent) = target.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        file.persist(&target).map_err(|e| e.error)?;
        Ok(())
    }
}

/// How many leading bytes are kept aside for format checks.
const HEAD_BYTES: usize = 16;

pub struct Ingest {
    file: NamedTempFile,
    hasher: Hasher,
    size: u64,
    head: Vec<u8>,
    limit: u64,
}

impl Ingest {
    /// Refuses bodies larger than `limit` (`--max-file-size`).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn append(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    }

    /// Names the bytes; nothing is visible in the store until
    /// [`Ingested::commit`].
    pub fn finish(self) -> io::Result<Ingested> {
        Ok(Ingested {
            file: self.file,
            blob: Blob {
                digest: self.hasher.finish(),
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
        self.file.as_file().set_len(0).map_err(local)?;
        self.file.as_file_mut().rewind().map_err(local)?;
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
        match size > self.limit {
            true => Err(too_large(size, self.limit, "--max-file-size")),
            false => Ok(()),
        }
    }
}

/// A complete download, not yet in the store. Dropping it deletes it.
pub struct Ingested {
    file: NamedTempFile,
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

    pub fn sync(&self) -> io::Result<()> {
        self.file.as_file().sync_all()
    }

    /// Moves synced bytes into place.
    pub fn install(self, store: &ObjectStore) -> io::Result<Blob> {
        store.install(self.file, &self.blob.digest)?;
        Ok(self.blob)
    }

    /// A read-only handle on the bytes, valid after the commit moves them.
    pub fn reopen(&self) -> io::Result<File> {
        super::open_no_follow(self.file.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("objects")).unwrap();
        fs::create_dir(dir.path().join("tmp")).unwrap();
        let store = ObjectStore::new(dir.path().join("objects"), dir.path().join("tmp"));
        (dir, store)
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
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("objects")).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_symlink_in_place_of_an_object() {
        let (dir, store) = store();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"not yours").unwrap();
        let digest = Sha256Digest::of(b"not yours");
        let path = store.path(&digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        assert!(store.open(&digest).is_err());
        assert!(!store.contains(&Blob { digest, size: 9 }));
    }
}
