//! Texture content: objects named by their sha256, an index in
//! least-recently-used order, and a size cap enforced on every insert.
//!
//! A download is served as soon as it is verified; making it durable
//! (fsync, rename into place, index, evict) happens on background threads,
//! so the reader never waits for the disk.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use super::index::{ContentIndex, Recovery};
use super::{Blob, CacheDir, Ingest, Ingested, ObjectStore, SharedLog};
use crate::digest::Sha256Digest;
use crate::workers::Workers;

/// Threads making downloads durable: several, so that the filesystem can
/// group their syncs into one journal commit.
const COMMITTERS: usize = 4;

pub struct ContentStore {
    shared: Arc<Shared>,
    committers: Arc<Workers>,
}

struct Shared {
    objects: ObjectStore,
    index: ContentIndex,
    /// Bytes the store may hold; 0 means no limit.
    cap: u64,
    evictions: AtomicU64,
    /// Verified downloads not yet durable: served from their temporary file.
    pending: Mutex<HashMap<Sha256Digest, OpenBlob>>,
    settled: Condvar,
}

/// A file's bytes in the store, already open (so that it stays readable
/// even if it is evicted right after).
#[derive(Debug, Clone)]
pub struct OpenBlob {
    pub blob: Blob,
    pub file: Arc<File>,
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
        let objects = dir.objects();
        let (index, recovery) =
            ContentIndex::open(SharedLog::new(dir.root().join("index.log")), &objects);
        let store = ContentStore {
            shared: Arc::new(Shared {
                objects,
                index,
                cap,
                evictions: AtomicU64::new(0),
                pending: Mutex::new(HashMap::new()),
                settled: Condvar::new(),
            }),
            committers: Workers::new("commit", COMMITTERS),
        };
        (store, recovery)
    }

    pub fn cap(&self) -> u64 {
        self.shared.cap
    }

    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::Relaxed)
    }

    /// (files, bytes) in the store.
    pub fn totals(&self) -> (usize, u64) {
        self.shared.index.totals()
    }

    pub fn entries(&self) -> Vec<(Sha256Digest, u64)> {
        self.shared.index.catch_up();
        self.shared.index.entries()
    }

    pub fn ingest(&self) -> io::Result<Ingest> {
        self.shared.objects.ingest()
    }

    /// Opens cached bytes, if the store holds them, and counts it as a use.
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
        })
    }

    /// Takes a verified download into the store and returns it open at
    /// once; it is synced, moved into place and the cap enforced (possibly
    /// evicting this very file, which stays readable through the returned
    /// handle) in the background. [`ContentStore::flush`] waits for that.
    pub fn insert(&self, download: Ingested) -> io::Result<OpenBlob> {
        let open = OpenBlob {
            blob: download.blob,
            file: Arc::new(download.reopen()?),
        };
        {
            let mut pending = self.shared.pending.lock();
            if let Some(already) = pending.get(&open.blob.digest) {
                return Ok(already.clone());
            }
            pending.insert(open.blob.digest, open.clone());
        }
        let shared = self.shared.clone();
        self.committers.spawn(move || shared.commit(download));
        Ok(open)
    }

    /// Waits until every download taken so far is durable.
    pub fn flush(&self) {
        let mut pending = self.shared.pending.lock();
        while !pending.is_empty() {
            self.shared.settled.wait(&mut pending);
        }
    }

    /// Removes objects (for `cache clear`); returns the bytes freed.
    pub fn remove(&self, digests: &[Sha256Digest]) -> u64 {
        let shared = &self.shared;
        shared.index.catch_up();
        let mut freed = 0;
        for digest in digests {
            freed += shared.index.size_of(digest).unwrap_or(0);
            if let Err(e) = shared.objects.remove(digest) {
                tracing::warn!(sha256 = %digest, "cannot remove: {e}");
            }
        }
        shared.index.remove(digests);
        freed
    }

    /// Re-hashes every object; removes those that do not match.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> VerifyReport {
        let shared = &self.shared;
        verify_objects(&shared.objects, &mut progress, |bad| {
            shared.index.remove(bad)
        })
    }
}

/// An orderly end keeps what was downloaded.
impl Drop for ContentStore {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Shared {
    /// Room is made before the object appears, so the store never holds
    /// more than the cap, even for a moment.
    fn commit(&self, download: Ingested) {
        let blob = download.blob;
        if let Err(e) = self.make_room_and_install(download) {
            // The bytes were served; they are downloaded again next time.
            tracing::warn!(sha256 = %blob.digest, "cannot keep a download: {e}");
        }
        self.pending.lock().remove(&blob.digest);
        self.settled.notify_all();
    }

    fn make_room_and_install(&self, download: Ingested) -> io::Result<()> {
        download.sync()?;
        let blob = download.blob;
        self.index
            .insert(blob.digest, blob.size, self.cap, |victims| {
                let mut keep = true;
                for (digest, size) in victims {
                    if *digest == blob.digest {
                        // Larger than the cap: served, not kept.
                        keep = false;
                        continue;
                    }
                    match self.objects.remove(digest) {
                        Ok(()) => tracing::debug!(sha256 = %digest, size, "evicted"),
                        Err(e) => tracing::warn!(sha256 = %digest, "cannot evict: {e}"),
                    }
                }
                self.evictions
                    .fetch_add(victims.len() as u64, Ordering::Relaxed);
                if keep {
                    download.install(&self.objects)?;
                }
                Ok(())
            })
    }
}

/// Re-hashes every file of `objects`, removing those whose bytes do not
/// match their name; `forget` is told which were removed.
pub fn verify_objects(
    objects: &ObjectStore,
    progress: &mut impl FnMut(u64),
    forget: impl FnOnce(&[Sha256Digest]),
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut bad = Vec::new();
    for (digest, path) in objects.list() {
        report.checked += 1;
        match (digest, ObjectStore::hash_file(&path)) {
            (Some(digest), Ok((actual, size))) if actual == digest => {
                report.bytes += size;
                progress(size);
            }
            (digest, _) => {
                report.corrupt += 1;
                tracing::error!(path = %path.display(), "bytes do not match the digest; removed");
                let _ = std::fs::remove_file(&path);
                bad.extend(digest);
            }
        }
    }
    forget(&bad);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::BodySink;

    fn put(store: &ContentStore, bytes: &[u8]) -> Blob {
        let mut ingest = store.ingest().unwrap();
        ingest.write(bytes).unwrap();
        let blob = store.insert(ingest.finish().unwrap()).unwrap().blob;
        store.flush();
        blob
    }

    fn bytes_on_disk(cache: &CacheDir) -> u64 {
        cache
            .objects()
            .list()
            .iter()
            // Evicted between the listing and this look: no longer there.
            .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    }

    fn cache() -> (tempfile::TempDir, CacheDir) {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(&dir.path().join("c")).unwrap();
        (dir, cache)
    }

    #[test]
    fn identical_bytes_are_stored_once() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let a = put(&store, b"same bytes");
        let b = put(&store, b"same bytes");
        assert_eq!(a, b);
        assert_eq!(store.totals(), (1, 10));
        assert_eq!(cache.objects().list().len(), 1);
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_cap_holds() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 300);
        let blobs: Vec<Blob> = (0..3).map(|i| put(&store, &[i as u8; 100])).collect();
        // Using the oldest makes the second one the least recently used.
        store.open(&blobs[0]).unwrap();
        put(&store, &[9u8; 100]);
        assert!(store.open(&blobs[1]).is_none(), "evicted");
        assert!(store.open(&blobs[0]).is_some() && store.open(&blobs[2]).is_some());
        assert_eq!(store.evictions(), 1);
        for i in 10..200u8 {
            put(&store, &vec![i; 37 + i as usize]);
            assert!(store.totals().1 <= 300);
            let on_disk = bytes_on_disk(&cache);
            assert!(on_disk <= 300, "{on_disk}");
        }
    }

    #[test]
    fn a_file_larger_than_the_cap_is_served_but_not_kept() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 50);
        let mut ingest = store.ingest().unwrap();
        ingest.write(&[1u8; 80]).unwrap();
        let opened = store.insert(ingest.finish().unwrap()).unwrap();
        store.flush();
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut &*opened.file, &mut bytes).unwrap();
        assert_eq!(bytes, [1u8; 80]);
        assert_eq!(store.totals(), (0, 0));
        assert!(cache.objects().list().is_empty());
    }

    #[test]
    fn a_download_is_served_at_once_and_kept_once_durable() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let blobs: Vec<Blob> = (0..20u8)
            .map(|i| {
                let mut ingest = store.ingest().unwrap();
                ingest.write(&[i; 33]).unwrap();
                let opened = store.insert(ingest.finish().unwrap()).unwrap();
                // Found by the next open whether or not it is durable yet.
                assert!(store.open(&opened.blob).is_some());
                opened.blob
            })
            .collect();
        // Dropping the store waits for the commits.
        drop(store);
        let (store, recovery) = ContentStore::load(&cache, 0);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(store.totals(), (20, 20 * 33));
        for blob in &blobs {
            assert!(cache.objects().contains(blob));
        }
    }

    #[test]
    fn the_index_survives_restarts_and_is_rebuilt_when_lost_or_damaged() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let blobs: Vec<Blob> = (0..5).map(|i| put(&store, &[i as u8; 64])).collect();
        drop(store);
        let (store, recovery) = ContentStore::load(&cache, 0);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(store.totals(), (5, 320));
        drop(store);

        // Lost index, and one object rotted on disk meanwhile.
        std::fs::remove_file(cache.root().join("index.log")).unwrap();
        std::fs::write(cache.objects().path(&blobs[2].digest), [0xffu8; 64]).unwrap();
        let (store, recovery) = ContentStore::load(&cache, 0);
        assert!(recovery.rebuilt);
        assert_eq!(recovery.corrupt, 1);
        assert_eq!(store.totals(), (4, 256));
        assert!(store.open(&blobs[2]).is_none());
        drop(store);

        // A damaged line in the middle.
        let log = cache.root().join("index.log");
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.insert_str(0, "{\"op\": \"put\", garbage\n");
        std::fs::write(&log, text).unwrap();
        let (store, recovery) = ContentStore::load(&cache, 0);
        assert!(recovery.rebuilt && recovery.corrupt == 0);
        assert_eq!(store.totals(), (4, 256));
    }

    #[test]
    fn files_the_index_missed_are_adopted_and_vanished_ones_forgotten() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let kept = put(&store, b"kept");
        let vanished = put(&store, b"vanished");
        drop(store);
        // A crash between rename and index write; and a file removed by hand.
        cache.objects().put_bytes(b"unrecorded").unwrap();
        std::fs::remove_file(cache.objects().path(&vanished.digest)).unwrap();
        let (store, recovery) = ContentStore::load(&cache, 0);
        assert_eq!(
            (recovery.adopted, recovery.dropped, recovery.rebuilt),
            (1, 1, false)
        );
        assert_eq!(store.totals(), (2, 4 + 10));
        assert!(store.open(&kept).is_some());
    }

    #[test]
    fn verify_removes_what_does_not_match() {
        let (_dir, cache) = cache();
        let (store, _) = ContentStore::load(&cache, 0);
        let good = put(&store, b"good bytes");
        let bad = put(&store, b"bad bytes!");
        std::fs::write(cache.objects().path(&bad.digest), b"rotten!!!!").unwrap();
        let report = store.verify(|_| {});
        assert_eq!((report.checked, report.corrupt, report.bytes), (2, 1, 10));
        assert!(store.open(&good).is_some() && store.open(&bad).is_none());
        assert_eq!(store.totals(), (1, 10));
        assert_eq!(store.verify(|_| {}).corrupt, 0);
    }

    #[test]
    fn racing_commits_never_hold_more_than_the_cap_even_for_a_moment() {
        let (_dir, cache) = cache();
        let cap = 2000;
        // Four processes' stores, each with its committer threads.
        let stores: Vec<ContentStore> = (0..4).map(|_| ContentStore::load(&cache, cap).0).collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        let most = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut most = 0;
                while !done.load(Ordering::Relaxed) {
                    most = most.max(bytes_on_disk(&cache));
                }
                most
            });
            let writers: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(n, store)| {
                    s.spawn(move || {
                        // Not flushed one by one: the committers race.
                        for i in 0..300u32 {
                            let mut ingest = store.ingest().unwrap();
                            ingest
                                .write(format!("{n}-{i:03}-{}", "x".repeat(90)).as_bytes())
                                .unwrap();
                            store.insert(ingest.finish().unwrap()).unwrap();
                        }
                        store.flush();
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            watcher.join().unwrap()
        });
        assert!(most > 0);
        assert!(most <= cap, "{most} bytes on disk, the cap is {cap}");
    }

    #[test]
    fn two_processes_share_one_index_and_one_cap() {
        let (_dir, cache) = cache();
        let (first, _) = ContentStore::load(&cache, 1000);
        let (second, _) = ContentStore::load(&cache, 1000);
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
        let (third, recovery) = ContentStore::load(&cache, 1000);
        assert_eq!(recovery.corrupt, 0);
        assert_eq!(third.totals().1, on_disk);
        assert!(third.verify(|_| {}).corrupt == 0);
    }
}
