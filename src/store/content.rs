//! Texture content: objects named by their sha256, an index in
//! least-recently-used order, and a size cap enforced on every insert.
//!
//! A download is served as soon as it is verified; keeping it (room made
//! under the cap, the file moved into place, the index) happens on a
//! background thread, in batches, so the reader never waits for the disk.
//! Nothing is synced per file: the filesystem is synced once every few
//! seconds (and at unmount), and what was moved into place before that is
//! marked in the index, checked again after a crash, so a torn file is
//! never served.
//!
//! When the disk refuses a download (full), it is written to memory
//! instead, within [`UNCACHED_MEMORY`], served from there and not kept.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::db::Database;
use super::index::{ContentIndex, Recovery};
use super::room::{MemoryBudget, UNCACHED_MEMORY};
use super::{Blob, CacheDir, Ingest, Ingested, ObjectStore};
use crate::digest::Sha256Digest;

/// The filesystem is synced at most this long after a file was kept.
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// Downloads held in memory until the committer writes them, at most:
/// a burst of small textures never waits for the disk (or for its inode
/// allocation, which on some filesystems costs more than the download).
const STAGED_MEMORY: u64 = 64 << 20;
/// Downloads kept in one transaction at most.
const BATCH: usize = 256;

/// Downloads waiting for the committer, at most: each holds two open
/// descriptors (its bytes, and the copy served), so the backlog takes half
/// of what the open-file limit leaves beside [`DESCRIPTORS_BESIDE_BACKLOG`].
/// Past it a download waits for the committer to catch up, rather than fail
/// for want of a descriptor.
fn backlog_bound(open_file_limit: u64) -> usize {
    (open_file_limit.saturating_sub(DESCRIPTORS_BESIDE_BACKLOG) / 4).max(16) as usize
}

/// Descriptors the daemon holds besides the backlog in a burst of 64
/// readers: the objects' prefix directories (256), three for each worker
/// thread that sent a request (its connection, epoll and eventfd), the log,
/// the database, FUSE, and the readers' open files. More readers at once
/// take more threads, up to about 650 descriptors for them alone, which a
/// limit of 1024 cannot hold whatever the backlog (docs/reliability.md).
const DESCRIPTORS_BESIDE_BACKLOG: u64 = 640;

pub struct ContentStore {
    shared: Arc<SharedWithCommitter>,
    committer: Option<JoinHandle<()>>,
}

/// The store's state, shared by its callers and the committer thread that
/// keeps their downloads.
struct SharedWithCommitter {
    objects: ObjectStore,
    index: ContentIndex,
    db: Arc<Database>,
    evictions: AtomicU64,
    /// Downloads the disk refused: held in memory while served.
    memory: Arc<MemoryBudget>,
    /// Downloads held in memory until kept.
    staged: Arc<MemoryBudget>,
    uncached: AtomicU64,
    /// Verified downloads not yet kept: served from their temporary file.
    pending: Mutex<HashMap<Sha256Digest, OpenBlob>>,
    settled: Condvar,
    /// Most entries of `pending` before a download waits.
    backlog: usize,
    /// Downloads that waited for the committer because of that bound.
    backlog_waits: AtomicU64,
    /// Downloads waiting for the committer, and whether files were kept
    /// since the last sync.
    queue: Mutex<Queue>,
    queued: Condvar,
    stopping: AtomicBool,
}

#[derive(Default)]
struct Queue {
    downloads: Vec<Ingested>,
    unsynced_since: Option<Instant>,
    /// A flush waits for a sync.
    sync_now: bool,
}

/// A file's bytes in the store, already open (so that it stays readable
/// even if it is evicted right after).
#[derive(Debug, Clone)]
pub struct OpenBlob {
    pub blob: Blob,
    pub file: Arc<File>,
    /// Held in memory, not a file on disk: read through the mount, never
    /// handed to the kernel as the file to read.
    pub in_memory: bool,
}

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    pub bytes: u64,
    pub corrupt: usize,
}

impl ContentStore {
    pub fn load(dir: &CacheDir, cap: u64) -> (ContentStore, Recovery) {
        ContentStore::load_with_memory(dir, cap, UNCACHED_MEMORY)
    }

    /// [`ContentStore::load`], holding at most `memory` bytes of downloads
    /// that the disk refuses.
    pub fn load_with_memory(dir: &CacheDir, cap: u64, memory: u64) -> (ContentStore, Recovery) {
        ContentStore::start(dir, Some(cap), memory)
    }

    /// A store to look into the cache, list, check and remove objects:
    /// it evicts nothing, whatever the mounts' limits, and keeps no
    /// limit of its own (see [`ContentStore::others_limits`]).
    pub fn inspect(dir: &CacheDir) -> (ContentStore, Recovery) {
        ContentStore::start(dir, None, UNCACHED_MEMORY)
    }

    fn start(dir: &CacheDir, limit: Option<u64>, memory: u64) -> (ContentStore, Recovery) {
        let objects = dir.objects();
        let db = dir.database();
        let (index, recovery) = ContentIndex::open(
            db.clone(),
            &objects,
            dir.writers(),
            limit,
            dir.database_is_new(),
        );
        let shared = Arc::new(SharedWithCommitter {
            objects,
            index,
            db,
            evictions: AtomicU64::new(0),
            memory: Arc::new(MemoryBudget::new(memory)),
            staged: Arc::new(MemoryBudget::new(STAGED_MEMORY)),
            uncached: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            settled: Condvar::new(),
            backlog: backlog_bound(crate::descriptors::open_file_limit()),
            backlog_waits: AtomicU64::new(0),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("commit".into())
                .spawn(move || shared.commit_until_stopped())
                .expect("spawning a thread")
        };
        let store = ContentStore {
            shared,
            committer: Some(committer),
        };
        (store, recovery)
    }

    pub fn cap(&self) -> u64 {
        self.shared.index.cap()
    }

    /// The limits that the other live processes using the cache keep it
    /// under (0: none), one for each of their stores.
    pub fn others_limits(&self) -> io::Result<Vec<u64>> {
        self.shared.index.others_limits()
    }

    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::Relaxed)
    }

    /// Downloads served but not yet durable (synced, room made, moved into
    /// place): 0 when the store is at rest.
    pub fn pending(&self) -> usize {
        self.shared.pending.lock().len()
    }

    /// Downloads that waited for the committer to catch up before they
    /// were served (the backlog was at its bound).
    pub fn backlog_waits(&self) -> u64 {
        self.shared.backlog_waits.load(Ordering::Relaxed)
    }

    /// (files, bytes) in the store, as of this process's last change;
    /// answered from memory.
    pub fn totals(&self) -> (usize, u64) {
        self.shared.index.totals()
    }

    /// Every object, least recently used first, as the database has them.
    pub fn entries(&self) -> Vec<(Sha256Digest, u64)> {
        self.shared.index.entries()
    }

    /// Downloads served from memory, not kept, because the disk refused
    /// them.
    pub fn uncached(&self) -> u64 {
        self.shared.uncached.load(Ordering::Relaxed)
    }

    /// Bytes of such downloads held in memory now.
    pub fn uncached_bytes(&self) -> u64 {
        self.shared.memory.in_use()
    }

    /// Where a download goes: memory until it is kept (a small one, while
    /// the disk takes writes), a temporary file, or memory when the disk
    /// refuses it (from the start, or midway).
    pub fn ingest(&self) -> io::Result<Ingest> {
        let objects = &self.shared.objects;
        let memory = self.shared.memory.clone();
        if !objects.room().is_refusing() {
            if let Ok(staged) = objects.stage(self.shared.staged.clone()) {
                return Ok(staged.or_memory(memory));
            }
        }
        match objects.ingest() {
            Ok(ingest) => Ok(ingest.or_memory(memory)),
            // Memory would need a descriptor too.
            Err(e) if super::room::is_out_of_descriptors(&e) => Err(e),
            Err(e) => {
                objects.room().refused("a download", &e);
                Ingest::in_memory(memory, objects.room().clone())
            }
        }
    }

    /// Opens cached bytes, if the store holds them, and counts it as a use.
    /// Touches no lock on a file and writes nothing: safe on the threads
    /// that answer the kernel.
    pub fn open(&self, blob: &Blob) -> Option<OpenBlob> {
        if let Some(pending) = self.shared.pending.lock().get(&blob.digest) {
            return (pending.blob.size == blob.size).then(|| pending.clone());
        }
        let file = self.shared.objects.open(&blob.digest).ok()?;
        if file.metadata().ok()?.len() != blob.size {
            return None;
        }
        self.shared.index.touch(&blob.digest);
        Some(OpenBlob {
            blob: *blob,
            file: Arc::new(file),
            in_memory: false,
        })
    }

    /// Whether the store keeps these bytes on its disk.
    pub fn is_kept(&self, blob: &Blob) -> bool {
        self.shared.objects.contains(blob)
    }

    /// Takes a verified download into the store and returns it open at
    /// once; it is synced, moved into place and the cap enforced (possibly
    /// evicting this very file, which stays readable through the returned
    /// handle) in the background. [`ContentStore::flush`] waits for that.
    pub fn insert(&self, download: Ingested) -> io::Result<OpenBlob> {
        if download.is_in_memory() {
            let blob = download.blob;
            let file = download.into_served().expect("in memory");
            self.shared.uncached.fetch_add(1, Ordering::Relaxed);
            return Ok(OpenBlob {
                blob,
                file,
                in_memory: true,
            });
        }
        self.wait_for_room_in_backlog(&download.blob.digest);
        // Staged bytes are served from memory until kept; a later open
        // finds them on the disk.
        let open = OpenBlob {
            blob: download.blob,
            file: Arc::new(download.reopen()?),
            in_memory: download.is_staged(),
        };
        {
            let mut pending = self.shared.pending.lock();
            if let Some(already) = pending.get(&open.blob.digest) {
                return Ok(already.clone());
            }
            pending.insert(open.blob.digest, open.clone());
        }
        self.shared.queue.lock().downloads.push(download);
        self.shared.queued.notify_all();
        Ok(open)
    }

    /// Waits while the committer's backlog is at its bound, unless these
    /// bytes are in it already. Threads that pass at once may take it a
    /// little past the bound: as many as download at a time.
    fn wait_for_room_in_backlog(&self, digest: &Sha256Digest) {
        let shared = &self.shared;
        let mut pending = shared.pending.lock();
        if pending.len() < shared.backlog || pending.contains_key(digest) {
            return;
        }
        crate::wait::must_not_be_quick(|| "a wait for the committer's backlog".into());
        shared.backlog_waits.fetch_add(1, Ordering::Relaxed);
        while pending.len() >= shared.backlog && !pending.contains_key(digest) {
            shared.settled.wait(&mut pending);
        }
    }

    /// Waits until every download taken so far is kept and on disk, and
    /// every record and use queued is in the database.
    pub fn flush(&self) {
        let mut pending = self.shared.pending.lock();
        while !pending.is_empty() {
            self.shared.settled.wait(&mut pending);
        }
        drop(pending);
        self.shared.sync_now();
        self.shared.db.flush();
    }

    /// The end of writing in a process that exits without dropping the
    /// store (its threads still hold it): what was taken is kept and on
    /// disk, and the lock file naming this store is removed, as a drop
    /// would (an unmounted mount left it behind, free but in `tmp/`).
    pub fn finish(&self) {
        self.flush();
        self.shared.index.release_writer();
    }

    /// Removes objects (for `cache clear`); returns the bytes freed.
    pub fn remove(&self, digests: &[Sha256Digest]) -> u64 {
        self.shared.index.remove(&self.shared.objects, digests)
    }

    /// Re-hashes every object; removes those that do not match, or that are
    /// not textures.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> VerifyReport {
        let shared = &self.shared;
        verify_objects(&shared.objects, &mut progress, |bad| {
            shared.index.remove(&shared.objects, bad);
        })
    }
}

/// An orderly end keeps what was downloaded.
impl Drop for ContentStore {
    fn drop(&mut self) {
        self.flush();
        // Set under the queue's lock, which the writer holds from its look
        // at `stopping` to its wait: otherwise the stop and its wake-up may
        // land between the two, and the writer would wait for ever.
        {
            let _queue = self.shared.queue.lock();
            self.shared.stopping.store(true, Ordering::SeqCst);
        }
        self.shared.queued.notify_all();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

impl SharedWithCommitter {
    /// The committer: keeps downloads in batches, and syncs the filesystem
    /// a little while after the first file kept since the last sync.
    fn commit_until_stopped(&self) {
        loop {
            let (batch, sync) = {
                let mut queue = self.queue.lock();
                loop {
                    let due = queue
                        .unsynced_since
                        .is_some_and(|since| since.elapsed() >= SYNC_EVERY);
                    if !queue.downloads.is_empty() || due || queue.sync_now {
                        break;
                    }
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    match queue.unsynced_since {
                        Some(since) => {
                            let left = SYNC_EVERY.saturating_sub(since.elapsed());
                            self.queued.wait_for(&mut queue, left);
                        }
                        None => self.queued.wait(&mut queue),
                    }
                }
                let take = queue.downloads.len().min(BATCH);
                let batch: Vec<Ingested> = queue.downloads.drain(..take).collect();
                if !batch.is_empty() && queue.unsynced_since.is_none() {
                    queue.unsynced_since = Some(Instant::now());
                }
                let due = queue
                    .unsynced_since
                    .is_some_and(|since| since.elapsed() >= SYNC_EVERY);
                let sync = (queue.sync_now && queue.downloads.is_empty()) || due;
                (batch, sync)
            };
            if !batch.is_empty() {
                self.keep(batch);
            }
            if sync {
                if let Err(e) = self.index.settle(&self.objects) {
                    tracing::warn!("cannot sync the cache: {e}");
                }
                let mut queue = self.queue.lock();
                queue.unsynced_since = None;
                queue.sync_now = false;
                drop(queue);
                self.queued.notify_all();
            }
        }
    }

    /// Room is made before the objects appear, so the store never holds
    /// more than the cap, even for a moment.
    fn keep(&self, batch: Vec<Ingested>) {
        let digests: Vec<Sha256Digest> = batch.iter().map(Ingested::digest).collect();
        let staged: Vec<Sha256Digest> = batch
            .iter()
            .filter(|d| d.is_staged())
            .map(Ingested::digest)
            .collect();
        let refused = match self
            .index
            .insert_all(batch, self.index.cap(), &self.objects)
        {
            Ok((evicted, _)) => {
                self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
                self.objects.room().is_refusing()
            }
            // The bytes were served; they are downloaded again next time.
            Err(e) => {
                self.objects.room().refused("downloads", &e);
                true
            }
        };
        if refused {
            // Served from memory, and the disk would not take them.
            let lost = staged
                .iter()
                .filter(|digest| !self.objects.contains_digest(digest))
                .count();
            self.uncached.fetch_add(lost as u64, Ordering::Relaxed);
        }
        let mut pending = self.pending.lock();
        for digest in &digests {
            pending.remove(digest);
        }
        drop(pending);
        self.settled.notify_all();
    }

    /// Syncs now what was kept, and waits for it.
    fn sync_now(&self) {
        let mut queue = self.queue.lock();
        if queue.unsynced_since.is_none() && queue.downloads.is_empty() {
            return;
        }
        queue.sync_now = true;
        self.queued.notify_all();
        while queue.sync_now && !self.stopping.load(Ordering::SeqCst) {
            self.queued.wait(&mut queue);
        }
    }
}

/// Re-hashes every file of `objects`, removing those whose bytes do not
/// match their name or that the store may not hold (an empty file, or one
/// that is not a texture, among textures); `forget` is told which were
/// removed.
pub fn verify_objects(
    objects: &ObjectStore,
    progress: &mut impl FnMut(u64),
    forget: impl FnOnce(&[Sha256Digest]),
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut bad = Vec::new();
    for listed in objects.list() {
        report.checked += 1;
        let good = match listed.digest.map(|digest| objects.check(&digest)) {
            // Evicted meanwhile.
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                report.checked -= 1;
                continue;
            }
            Some(checked) => checked.ok().flatten(),
            None => None,
        };
        match good {
            Some(size) => {
                report.bytes += size;
                progress(size);
            }
            None => {
                report.corrupt += 1;
                tracing::error!(
                    path = %listed.digest.map_or_else(Default::default, |d| objects.path(&d).display().to_string()),
                    "bytes do not match the digest, or are not a texture; removed"
                );
                let _ = objects.remove_listed(&listed);
                bad.extend(listed.digest);
            }
        }
    }
    forget(&bad);
    report
}

#[cfg(test)]
mod tests {
    use super::super::PNG_MAGIC;
    use super::super::room::full_disk::FullDisk;
    use super::*;
    use crate::remote::{BodySink, FetchError};
    use std::time::Duration;

    /// `bytes` made a texture: the store holds nothing else.
    fn texture(bytes: &[u8]) -> Vec<u8> {
        [PNG_MAGIC, bytes].concat()
    }

    fn put(store: &ContentStore, bytes: &[u8]) -> Blob {
        let mut ingest = store.ingest().unwrap();
        ingest.write(&texture(bytes)).unwrap();
        let blob = store.insert(ingest.finish().unwrap()).unwrap().blob;
        store.flush();
        blob
    }

    fn bytes_on_disk(cache: &CacheDir) -> u64 {
        cache.objects().list().iter().map(|l| l.size).sum()
    }

    fn cache() -> (tempfile::TempDir, CacheDir) {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(&dir.path().join("c")).unwrap();
        (dir, cache)
    }

    /// Another process's view of the same cache.
    fn reopen(dir: &tempfile::TempDir) -> CacheDir {
        CacheDir::open(&dir.path().join("c")).unwrap()
    }

    const M: u64 = PNG_MAGIC.len() as u64;

    #[test]
    fn a_store_dropped_as_its_writer_starts_ends_it() {
        let (_dir, cache) = cache();
        // The writer's first look for work races the drop's stop; a stop
        // that lands between that look and its wait would be missed, and
        // the drop would wait for the writer forever.
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..2000 {
                drop(ContentStore::load(&cache, 0));
            }
            let _ = done.send(());
        });
        assert!(
            ended.recv_timeout(Duration::from_secs(120)).is_ok(),
            "a drop waited for its writer for two minutes"
        );
    }

    #[test]
    fn the_backlog_takes_a_quarter_of_the_descriptors_the_rest_leaves() {
        assert_eq!(backlog_bound(1024), 96);
        assert_eq!(backlog_bound(20000), 4840);
        assert_eq!(backlog_bound(1 << 20), 261984);
        assert_eq!(backlog_bound(256), 16, "a few, however low the limit");
    }

    #[test]
    fn files_kept_but_not_yet_synced_are_checked_after_a_crash() {
        let (dir, cache) = cache();
        let objects = cache.objects();
        let (index, _) =
            ContentIndex::open(cache.database(), &objects, cache.writers(), Some(0), false);
        let ingested = |bytes: &[u8]| {
            let mut ingest = objects.ingest().unwrap();
            ingest.write(&texture(bytes)).unwrap();
            ingest.finish().unwrap()
        };
        let (whole, torn) = (ingested(b"written out"), ingested(b"cut off by a crash"));
        let (whole_blob, torn_blob) = (whole.blob, torn.blob);
        index.insert_all(vec![whole, torn], 0, &objects).unwrap();
        // The crash: one file's bytes never reached the disk (a file moved
        // into place but still full of zeros).
        let path = objects.path(&torn_blob.digest);
        std::fs::write(&path, vec![0u8; torn_blob.size as usize]).unwrap();
        drop(index);
        let (store, recovery) = ContentStore::load(&reopen(&dir), 0);
        assert_eq!(recovery.corrupt, 1);
        assert!(store.open(&whole_blob).is_some());
        assert!(store.open(&torn_blob).is_none());
        assert_eq!(store.totals(), (1, whole_blob.size));
        // Checked once: the next start finds nothing to check.
        drop(store);
        let (_, recovery) = ContentStore::load(&reopen(&dir), 0);
        assert_eq!(recovery, Recovery::default());
    }

    fn read_all(file: &File) -> Vec<u8> {
        let mut bytes = vec![0u8; file.metadata().unwrap().len() as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, 0).unwrap();
        bytes
    }

    fn temp_files(cache: &CacheDir) -> Vec<String> {
        std::fs::read_dir(cache.root().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("dl-"))
            .collect()
    }

    #[test]
    fn a_download_the_disk_refuses_is_served_from_memory_within_a_budget() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FullDisk::over(dir.path());
        let cache = CacheDir::open(&dir.path().join("c")).unwrap();
        let (store, _) = ContentStore::load_with_memory(&cache, 0, 40_000);
        let download = |bytes: &[u8]| {
            let mut ingest = store.ingest().unwrap();
            ingest.reset().unwrap();
            ingest.announced(bytes.len() as u64)?;
            ingest.write(bytes)?;
            Ok::<_, FetchError>(store.insert(ingest.finish().unwrap()).unwrap())
        };
        // Held in memory until kept, as every small download: the disk
        // refuses it then, which the next downloads know from the start.
        let staged = download(&texture(&[9; 992])).unwrap();
        assert!(staged.in_memory);
        store.flush();
        assert_eq!((store.uncached(), store.uncached_bytes()), (1, 0));
        assert_eq!(read_all(&staged.file), texture(&[9; 992]));
        assert!(cache.objects().list().is_empty());
        let first = download(&texture(&[1; 29_992])).unwrap();
        assert!(first.in_memory);
        assert_eq!(read_all(&first.file), texture(&[1; 29_992]));
        assert_eq!((store.uncached(), store.uncached_bytes()), (2, 30_000));
        // Past the budget while the first is held: refused before the body
        // when its size is announced, else once past it.
        let second = texture(&[2; 19_992]);
        assert!(matches!(download(&second), Err(FetchError::Local(_))));
        let mut ingest = store.ingest().unwrap();
        let refused = ingest
            .write(&texture(&[3; 8_992]))
            .and_then(|()| ingest.write(&[3; 2_000]));
        assert!(matches!(refused, Err(FetchError::Local(_))), "{refused:?}");
        drop(ingest);
        assert_eq!(store.uncached_bytes(), 30_000);
        drop(first);
        assert_eq!(store.uncached_bytes(), 0);
        let second = download(&second).unwrap();
        assert_eq!(read_all(&second.file), texture(&[2; 19_992]));
        drop(second);
        store.flush();
        assert!(cache.objects().list().is_empty(), "nothing kept");
        assert!(temp_files(&cache).is_empty(), "nothing left in tmp/");

        // Room for the start of a download only: moved to memory midway.
        disk.leave(8192);
        let mut ingest = store.ingest().unwrap();
        let bytes = texture(&[7; 29_992]);
        for chunk in bytes.chunks(1000) {
            ingest.write(chunk).unwrap();
            if chunk.as_ptr() == bytes.as_ptr() {
                assert!(!ingest.is_in_memory(), "starts on the disk");
            }
        }
        assert!(ingest.is_in_memory());
        let moved = store.insert(ingest.finish().unwrap()).unwrap();
        assert!(moved.in_memory);
        assert_eq!(read_all(&moved.file), bytes);
        assert_eq!(store.uncached(), 4);
        assert!(temp_files(&cache).is_empty());

        // Room again: kept as before.
        disk.empty();
        let kept = download(&texture(&[4; 100])).unwrap();
        assert!(!kept.in_memory);
        store.flush();
        assert_eq!(cache.objects().list().len(), 1);
        assert!(store.open(&kept.blob).is_some());
        assert_eq!(store.uncached(), 4);
    }

    #[test]
    fn documents_the_disk_refuses_are_held_in_memory_for_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FullDisk::over(dir.path());
        let cache = CacheDir::open(&dir.path().join("c")).unwrap();
        let documents = cache.documents();
        let blob = documents.put_bytes(b"{\"a catalog\": 1}").unwrap();
        let located = documents.locate(&blob.digest).unwrap();
        assert!(located.in_memory);
        assert_eq!(documents.read(&blob).unwrap(), b"{\"a catalog\": 1}");
        // Read twice: a shared offset would give nothing the second time.
        assert_eq!(documents.read(&blob).unwrap(), b"{\"a catalog\": 1}");
        assert!(documents.list().is_empty());
        disk.empty();
        assert_eq!(documents.put_bytes(b"{\"a catalog\": 1}").unwrap(), blob);
        assert!(!documents.locate(&blob.digest).unwrap().in_memory);
        assert_eq!(documents.list().len(), 1);
    }

    #[test]
    fn a_small_download_makes_no_file_until_the_committer_writes_it() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let bytes = texture(&[5; 10_000]);
        let mut ingest = store.ingest().unwrap();
        ingest.reset().unwrap();
        ingest.announced(bytes.len() as u64).unwrap();
        ingest.write(&bytes).unwrap();
        assert!(temp_files(&cache).is_empty(), "no file while it is read");
        let opened = store.insert(ingest.finish().unwrap()).unwrap();
        assert!(opened.in_memory, "served from memory until kept");
        assert_eq!(read_all(&opened.file), bytes);
        store.flush();
        assert!(temp_files(&cache).is_empty());
        assert_eq!(cache.objects().list().len(), 1);
        let kept = store.open(&opened.blob).unwrap();
        assert!(!kept.in_memory, "on the disk once kept");
        assert_eq!(read_all(&kept.file), bytes);
        assert_eq!(
            cache.objects().check(&opened.blob.digest).unwrap(),
            Some(bytes.len() as u64)
        );
        assert_eq!(store.uncached(), 0);
    }

    #[test]
    fn a_large_download_goes_to_a_temporary_file_announced_or_not() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let bytes = texture(&vec![6; super::super::STAGED_FILE_LIMIT as usize + 1]);
        // Announced: on the disk before the body.
        let mut ingest = store.ingest().unwrap();
        ingest.reset().unwrap();
        ingest.announced(bytes.len() as u64).unwrap();
        assert_eq!(temp_files(&cache).len(), 1);
        ingest.write(&bytes).unwrap();
        let announced = store.insert(ingest.finish().unwrap()).unwrap();
        assert!(!announced.in_memory);
        // Not announced: moved to the disk once past the limit, whole.
        let mut ingest = store.ingest().unwrap();
        ingest.reset().unwrap();
        for (n, chunk) in bytes.chunks(1 << 20).enumerate() {
            ingest.write(chunk).unwrap();
            let spilled = (n + 1) << 20 > super::super::STAGED_FILE_LIMIT as usize;
            assert_eq!(temp_files(&cache).len(), usize::from(spilled), "chunk {n}");
        }
        let moved = store.insert(ingest.finish().unwrap()).unwrap();
        assert_eq!(moved.blob, announced.blob);
        assert_eq!(read_all(&moved.file), bytes);
        store.flush();
        assert!(temp_files(&cache).is_empty());
        assert_eq!(
            cache.objects().check(&moved.blob.digest).unwrap(),
            Some(bytes.len() as u64)
        );
    }

    #[test]
    fn identical_bytes_are_stored_once() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let a = put(&store, b"same bytes");
        let b = put(&store, b"same bytes");
        assert_eq!(a, b);
        assert_eq!(store.totals(), (1, 10 + M));
        assert_eq!(cache.objects().list().len(), 1);
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_cap_holds() {
        let (_dir, cache) = cache();
        let cap = 300 + 3 * M;
        let (store, _) = ContentStore::load(&cache, cap);
        let blobs: Vec<Blob> = (0..3).map(|i| put(&store, &[i as u8; 100])).collect();
        // Using the oldest makes the second one the least recently used.
        store.open(&blobs[0]).unwrap();
        put(&store, &[9u8; 100]);
        assert!(store.open(&blobs[1]).is_none(), "evicted");
        assert!(store.open(&blobs[0]).is_some() && store.open(&blobs[2]).is_some());
        assert_eq!(store.evictions(), 1);
        for i in 10..200u8 {
            put(&store, &vec![i; 37 + i as usize]);
            assert!(store.totals().1 <= cap);
            let on_disk = bytes_on_disk(&cache);
            assert!(on_disk <= cap, "{on_disk}");
        }
    }

    #[test]
    fn a_file_larger_than_the_cap_is_served_but_not_kept() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 50);
        let mut ingest = store.ingest().unwrap();
        ingest.write(&texture(&[1u8; 80])).unwrap();
        let opened = store.insert(ingest.finish().unwrap()).unwrap();
        store.flush();
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut &*opened.file, &mut bytes).unwrap();
        assert_eq!(bytes, texture(&[1u8; 80]));
        assert_eq!(store.totals(), (0, 0));
        assert!(cache.objects().list().is_empty());
    }

    #[test]
    fn a_download_is_served_at_once_and_kept_once_durable() {
        let (dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let blobs: Vec<Blob> = (0..20u8)
            .map(|i| {
                let mut ingest = store.ingest().unwrap();
                ingest.write(&texture(&[i; 33])).unwrap();
                let opened = store.insert(ingest.finish().unwrap()).unwrap();
                // Found by the next open whether or not it is durable yet.
                assert!(store.open(&opened.blob).is_some());
                opened.blob
            })
            .collect();
        // Dropping the store waits for the commits.
        drop(store);
        let (store, recovery) = ContentStore::load(&reopen(&dir), 0);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(store.totals(), (20, 20 * (33 + M)));
        for blob in &blobs {
            assert!(cache.objects().contains(blob));
        }
    }

    #[test]
    fn the_index_survives_restarts_and_is_rebuilt_when_lost_or_damaged() {
        let (dir, cache) = cache();
        let (store, recovery) = ContentStore::load(&cache, 0);
        assert_eq!(recovery, Recovery::default(), "a new cache is no repair");
        let blobs: Vec<Blob> = (0..5).map(|i| put(&store, &[i as u8; 64])).collect();
        drop((store, cache));
        let (store, recovery) = ContentStore::load(&reopen(&dir), 0);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(store.totals(), (5, 5 * (64 + M)));
        drop(store);

        // Lost index, and one object rotted on disk meanwhile, one emptied.
        let db = dir.path().join("c").join(super::super::db::FILE);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let cache = reopen(&dir);
        std::fs::write(cache.objects().path(&blobs[2].digest), texture(&[0xff; 64])).unwrap();
        std::fs::write(cache.objects().path(&blobs[3].digest), b"").unwrap();
        let (store, recovery) = ContentStore::load(&cache, 0);
        assert!(recovery.rebuilt);
        assert_eq!(recovery.corrupt, 2);
        assert_eq!(store.totals(), (3, 3 * (64 + M)));
        assert!(store.open(&blobs[2]).is_none());
        drop((store, cache));

        // Damaged beyond reading: started afresh, the files checked again.
        std::fs::write(&db, b"not a database, not at all, no").unwrap();
        let _ = std::fs::remove_file(format!("{}-wal", db.display()));
        let _ = std::fs::remove_file(format!("{}-shm", db.display()));
        let (store, recovery) = ContentStore::load(&reopen(&dir), 0);
        assert!(recovery.rebuilt && recovery.corrupt == 0);
        assert_eq!(store.totals(), (3, 3 * (64 + M)));
    }

    #[test]
    fn files_the_index_missed_are_adopted_and_vanished_ones_forgotten() {
        let (dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let kept = put(&store, b"kept");
        let vanished = put(&store, b"vanished");
        drop(store);
        // A crash between rename and index write; and a file removed by hand.
        cache.objects().put_bytes(&texture(b"unrecorded")).unwrap();
        std::fs::remove_file(cache.objects().path(&vanished.digest)).unwrap();
        let (store, recovery) = ContentStore::load(&reopen(&dir), 0);
        assert_eq!(
            (recovery.adopted, recovery.dropped, recovery.rebuilt),
            (1, 1, false)
        );
        assert_eq!(store.totals(), (2, 4 + 10 + 2 * M));
        assert!(store.open(&kept).is_some());
    }

    /// `cache status` and `verify` adopt files the index missed without
    /// evicting: the limit is the mounts', not the command's.
    #[test]
    fn a_store_that_inspects_adopts_files_without_evicting_and_names_no_limit() {
        let (dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        for i in 0..4u8 {
            put(&store, &[i; 100]);
        }
        drop(store);
        let db = dir.path().join("c").join(super::super::db::FILE);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let (inspecting, recovery) = ContentStore::inspect(&reopen(&dir));
        assert_eq!(recovery.adopted, 4);
        assert_eq!(inspecting.totals(), (4, 4 * (100 + M)));
        assert_eq!(bytes_on_disk(&cache), 4 * (100 + M));
        // A mount beside it with a limit of two objects: its limit is seen,
        // not the inspecting store's.
        let (mount, _) = ContentStore::load(&reopen(&dir), 2 * (100 + M));
        assert_eq!(inspecting.others_limits().unwrap(), [2 * (100 + M)]);
        assert_eq!(mount.others_limits().unwrap(), Vec::<u64>::new());
        drop(mount);
        assert!(inspecting.others_limits().unwrap().is_empty());
    }

    #[test]
    fn verify_removes_what_does_not_match_and_what_is_not_a_texture() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let good = put(&store, b"good bytes");
        let bad = put(&store, b"bad bytes!");
        let empty = put(&store, b"to be emptied");
        std::fs::write(cache.objects().path(&bad.digest), texture(b"rotten!!!!")).unwrap();
        std::fs::write(cache.objects().path(&empty.digest), b"").unwrap();
        // Named by their digest, but no texture: an empty file, an HTML page.
        let blank = cache.objects().put_bytes(b"").unwrap();
        let html = cache.objects().put_bytes(b"<html>").unwrap();
        let report = store.verify(|_| {});
        assert_eq!(
            (report.checked, report.corrupt, report.bytes),
            (5, 4, 10 + M)
        );
        assert!(store.open(&good).is_some() && store.open(&bad).is_none());
        assert!(!cache.objects().contains(&blank) && !cache.objects().contains(&html));
        assert_eq!(store.entries().len(), 1);
        assert_eq!(store.verify(|_| {}).corrupt, 0);
    }

    /// The most bytes `objects/` held at any moment while `work` ran, from
    /// one inotify instance on all of its directories (events come in the
    /// order of the changes; a directory walk would count an evicted file
    /// and its replacement together).
    fn most_on_disk(cache: &CacheDir, work: impl FnOnce()) -> u64 {
        use inotify::{EventMask, Inotify, WatchMask};
        let root = cache.root().join("objects");
        let mut inotify = Inotify::init().unwrap();
        let mut prefixes = HashMap::new();
        for prefix in 0..=255u8 {
            let name = format!("{prefix:02x}");
            std::fs::create_dir_all(root.join(&name)).unwrap();
            // Moved into place, or linked (written by the committer).
            let mask = WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::DELETE;
            prefixes.insert(inotify.watches().add(root.join(&name), mask).unwrap(), name);
        }
        work();
        let mut buffer = vec![0u8; 1 << 20];
        let (mut sizes, mut now, mut most) = (HashMap::new(), 0u64, 0u64);
        loop {
            let events = match inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return most,
                Err(e) => panic!("{e}"),
            };
            for event in events {
                assert!(!event.mask.contains(EventMask::Q_OVERFLOW));
                let name = format!("{}{}", prefixes[&event.wd], event.name.unwrap().display());
                if event
                    .mask
                    .intersects(EventMask::MOVED_TO | EventMask::CREATE)
                {
                    // Every object of the test has this size.
                    let size = M + 100;
                    if sizes.insert(name, size).is_none() {
                        now += size;
                    }
                } else if let Some(size) = sizes.remove(&name) {
                    now -= size;
                }
                most = most.max(now);
            }
        }
    }

    #[test]
    fn racing_commits_never_hold_more_than_the_cap_even_for_a_moment() {
        let (dir, cache) = cache();
        let cap = 2000;
        // Four processes' stores, each with its committer threads.
        let caches: Vec<CacheDir> = (0..4).map(|_| reopen(&dir)).collect();
        let stores: Vec<ContentStore> = caches
            .iter()
            .map(|c| ContentStore::load(c, cap).0)
            .collect();
        let most = most_on_disk(&cache, || {
            std::thread::scope(|s| {
                for (n, store) in stores.iter().enumerate() {
                    s.spawn(move || {
                        // Not flushed one by one: the committers race.
                        for i in 0..150u32 {
                            let mut ingest = store.ingest().unwrap();
                            let bytes =
                                texture(format!("{n}-{i:03}-{}", "x".repeat(94)).as_bytes());
                            assert_eq!(bytes.len() as u64, M + 100);
                            ingest.write(&bytes).unwrap();
                            store.insert(ingest.finish().unwrap()).unwrap();
                        }
                        store.flush();
                    });
                }
            })
        });
        assert!(most > 0);
        assert!(
            most <= cap,
            "{most} bytes on disk at one moment, the cap is {cap}"
        );
        assert!(bytes_on_disk(&cache) <= cap);
    }

    #[test]
    fn opens_and_record_puts_never_wait_for_the_database() {
        let (dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let blob = put(&store, b"cached");
        let records = cache
            .origin("http://127.0.0.1:1/resolve")
            .tag("t")
            .records();
        // Another process holds the database's write lock meanwhile.
        let other =
            rusqlite::Connection::open(dir.path().join("c").join(super::super::db::FILE)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        for i in 0..100 {
            assert!(store.open(&blob).is_some());
            records.put(super::super::FileRecord {
                path: format!("a/1k/m{i}/color.png"),
                generation: 1,
                size: Some(100),
                etag: None,
                sha256: None,
                remote_sha256: None,
            });
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        other.execute_batch("COMMIT").unwrap();
        records.flush();
        drop(records);
        let again = reopen(&dir)
            .origin("http://127.0.0.1:1/resolve")
            .tag("t")
            .records();
        assert_eq!(again.len(), 100, "written once the lock was free");
    }

    #[test]
    fn two_processes_share_one_index_and_one_cap() {
        let (dir, cache) = cache();
        let (first, _) = ContentStore::load(&cache, 1000);
        let other = reopen(&dir);
        let (second, _) = ContentStore::load(&other, 1000);
        std::thread::scope(|s| {
            for (n, store) in [&first, &second].into_iter().enumerate() {
                s.spawn(move || {
                    for i in 0..60u32 {
                        put(store, format!("{n}-{i}-{}", "x".repeat(40)).as_bytes());
                    }
                });
            }
        });
        let on_disk = bytes_on_disk(&cache);
        assert!(on_disk <= 1000, "{on_disk}");
        let (third, recovery) = ContentStore::load(&reopen(&dir), 1000);
        assert_eq!(recovery.corrupt, 0);
        assert_eq!(third.totals().1, on_disk);
        assert!(third.verify(|_| {}).corrupt == 0);
    }
}
