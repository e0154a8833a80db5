//! The index of cached content, in the cache database: digest, size and
//! order of last use of every object, and their total. Evicting under the
//! cap and installing the new object happen inside one write transaction,
//! so that processes sharing the cache never hold more than the cap
//! together, even for a moment.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::db::{self, Database};
use super::writers::{Liveness, Released, WriterLock, Writers};
use super::{Ingested, Listed, ObjectStore};
use crate::digest::Sha256Digest;

/// A use is written at most this often per object and process: enough for
/// eviction order, without a write per read.
const USE_INTERVAL: Duration = Duration::from_secs(600);
/// Objects whose last use this process remembers.
const USES_REMEMBERED: usize = 65_536;

/// What opening the index found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The index was missing or damaged and was rebuilt from the files.
    pub rebuilt: bool,
    /// Files whose bytes did not match their name, removed.
    pub corrupt: usize,
    /// Files not in the index (a process died before recording them), adopted.
    pub adopted: usize,
    /// Index entries whose file was gone, dropped.
    pub dropped: usize,
    /// Objects a writer that is gone moved into place and never synced
    /// (it was killed, or the machine crashed), hashed again. A live
    /// writer's are never touched: they are its own to sync.
    pub checked: usize,
}

/// An unsynced object as marked: which move of it, by which writer.
struct Mark {
    sha256: Vec<u8>,
    writer: Option<String>,
    marked: Option<i64>,
}

fn marks(conn: &Connection) -> rusqlite::Result<Vec<Mark>> {
    conn.prepare_cached("SELECT sha256, writer, marked FROM unsynced")?
        .query_map([], |row| {
            Ok(Mark {
                sha256: row.get(0)?,
                writer: row.get(1)?,
                marked: row.get(2)?,
            })
        })?
        .collect()
}

/// Forgets marks once their objects are known to be on disk: only the
/// moves seen, not a later move of the same object.
fn forget_marks(conn: &mut Connection, marks: &[Mark]) -> rusqlite::Result<()> {
    let tx = transaction(conn)?;
    for mark in marks {
        tx.prepare_cached(
            "DELETE FROM unsynced WHERE sha256 = ?1 AND writer IS ?2 AND marked IS ?3",
        )?
        .execute(params![mark.sha256, mark.writer, mark.marked])?;
    }
    tx.commit()
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::size::plural;
        let what = match self.rebuilt {
            true => "rebuilt from its files",
            false => "brought up to date with its files",
        };
        let mut done = Vec::new();
        if self.adopted > 0 {
            done.push(format!("{} kept", plural(self.adopted, "file")));
        }
        if self.corrupt > 0 {
            done.push(format!(
                "{} removed as corrupt",
                plural(self.corrupt, "file")
            ));
        }
        if self.dropped > 0 {
            done.push(format!(
                "{} forgotten as missing",
                plural(self.dropped, "file")
            ));
        }
        match done.is_empty() {
            true => write!(f, "the cache index was {what}"),
            false => write!(f, "the cache index was {what}: {}", done.join(", ")),
        }
    }
}

pub struct ContentIndex {
    db: Arc<Database>,
    writers: Writers,
    /// This store's identity, named by its marks; taken again before the
    /// next insert if it could not be.
    writer: Mutex<Option<WriterLock>>,
    /// The limit this store keeps the cache under (0: none), recorded in
    /// its lock; `None`: it only inspects the cache, and enforces none.
    limit: Option<u64>,
    /// (files, bytes) after this process's last transaction: read without
    /// the database (for the statistics, on the kernel's threads).
    totals: Mutex<(usize, u64)>,
    used: Mutex<LruCache<Sha256Digest, Instant>>,
}

fn transaction(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn totals(tx: &Connection) -> rusqlite::Result<(usize, u64)> {
    tx.prepare_cached("SELECT files, bytes FROM totals")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)? as usize, row.get::<_, i64>(1)? as u64))
        })
}

fn next_use(tx: &Connection) -> rusqlite::Result<i64> {
    tx.prepare_cached("SELECT IFNULL(MAX(used), 0) + 1 FROM objects")?
        .query_row([], |row| row.get(0))
}

/// Removes the least recently used rows until `cap` holds (0: no cap);
/// returns them. Their files are the caller's to remove.
fn evict_rows(tx: &Connection, cap: u64) -> rusqlite::Result<Vec<(Sha256Digest, u64)>> {
    let mut victims = Vec::new();
    while cap > 0 && totals(tx)?.1 > cap {
        let oldest = tx
            .prepare_cached("SELECT sha256, size FROM objects ORDER BY used LIMIT 1")?
            .query_row([], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?))
            })
            .optional()?;
        let Some((bytes, size)) = oldest else {
            break;
        };
        tx.prepare_cached("DELETE FROM objects WHERE sha256 = ?1")?
            .execute([&bytes])?;
        if let Some(digest) = db::digest(Some(bytes)) {
            victims.push((digest, size as u64));
        }
    }
    Ok(victims)
}

fn remove_files(objects: &ObjectStore, victims: &[(Sha256Digest, u64)]) {
    for (digest, size) in victims {
        match objects.remove(digest) {
            Ok(()) => tracing::debug!(sha256 = %digest, size, "evicted"),
            Err(e) => tracing::warn!(sha256 = %digest, "cannot evict: {e}"),
        }
    }
}

impl ContentIndex {
    /// Loads the index, reconciled with the files in `objects`: rows whose
    /// file is gone are dropped, files without a row are checked and
    /// adopted (or removed when their bytes are wrong), within `limit`
    /// (`None`: a store that only inspects the cache evicts nothing).
    pub fn open(
        db: Arc<Database>,
        objects: &ObjectStore,
        writers: Writers,
        limit: Option<u64>,
        rebuilt: bool,
    ) -> (ContentIndex, Recovery) {
        let writer = writers
            .take(limit)
            .inspect_err(|e| tracing::warn!("cannot make the cache's lock for this process: {e}"))
            .ok();
        let index = ContentIndex {
            db,
            writers,
            writer: Mutex::new(writer),
            limit,
            totals: Mutex::new((0, 0)),
            used: Mutex::new(LruCache::new(USES_REMEMBERED.try_into().expect("not zero"))),
        };
        let mut recovery = Recovery {
            rebuilt,
            ..Recovery::default()
        };
        if let Err(e) = index.reconcile(objects, index.cap(), &mut recovery) {
            tracing::warn!("cannot reconcile the cache index with the files: {e}");
        }
        if let Err(e) = index.check_unsynced(objects, &mut recovery) {
            tracing::warn!("cannot check the files written last: {e}");
        }
        // A new index with no files to rebuild it from is a new cache.
        if recovery.adopted == 0 && recovery.corrupt == 0 {
            recovery.rebuilt = false;
        }
        if recovery.corrupt > 0 {
            tracing::error!(
                count = recovery.corrupt,
                "removed cached files whose bytes did not match their digest"
            );
        }
        (index, recovery)
    }

    fn reconcile(
        &self,
        objects: &ObjectStore,
        cap: u64,
        recovery: &mut Recovery,
    ) -> rusqlite::Result<()> {
        // Listed within the transaction: no other process installs or
        // evicts meanwhile, so a row without its file is truly orphaned.
        let unknown: Vec<Listed> = {
            let mut conn = self.db.lock();
            let tx = transaction(&mut conn)?;
            let rows: HashSet<Sha256Digest> = tx
                .prepare("SELECT sha256 FROM objects")?
                .query_map([], |row| row.get::<_, Vec<u8>>(0))?
                .filter_map(|bytes| db::digest(bytes.ok()))
                .collect();
            let mut on_disk = HashSet::new();
            let mut unknown = Vec::new();
            for listed in objects.list() {
                match listed.digest {
                    None => {
                        tracing::warn!(
                            "a file not named by a digest in the cache's objects: removed"
                        );
                        let _ = objects.remove_listed(&listed);
                    }
                    Some(digest) if rows.contains(&digest) => {
                        on_disk.insert(digest);
                    }
                    Some(_) => unknown.push(listed),
                }
            }
            for gone in rows.difference(&on_disk) {
                tx.execute("DELETE FROM objects WHERE sha256 = ?1", [db::blob(gone)])?;
                recovery.dropped += 1;
            }
            *self.totals.lock() = totals(&tx)?;
            tx.commit()?;
            unknown
        };
        if unknown.is_empty() {
            return Ok(());
        }
        if !recovery.rebuilt {
            tracing::info!(
                files = unknown.len(),
                "cached files the index does not know: checking each"
            );
        }
        // Hashed without the lock; oldest first, so that they keep their order.
        let mut good: Vec<(u64, Sha256Digest, u64)> = Vec::new();
        for listed in unknown {
            let digest = listed.digest.expect("named by a digest");
            match objects.check(&digest) {
                Ok(Some(size)) => good.push((listed.modified, digest, size)),
                Ok(None) => {
                    recovery.corrupt += 1;
                    tracing::error!(path = %objects.path(&digest).display(), "a cached file does not match its digest, or is not a texture; removed");
                    let _ = objects.remove(&digest);
                }
                // Evicted by another process meanwhile.
                Err(_) => {}
            }
        }
        good.sort();
        let mut conn = self.db.lock();
        let tx = transaction(&mut conn)?;
        for (_, digest, size) in good {
            if !objects.contains(&super::Blob { digest, size }) {
                continue;
            }
            let used = next_use(&tx)?;
            recovery.adopted += tx.execute(
                "INSERT OR IGNORE INTO objects (sha256, size, used) VALUES (?1, ?2, ?3)",
                params![db::blob(&digest), size as i64, used],
            )?;
        }
        let victims = evict_rows(&tx, cap)?;
        remove_files(objects, &victims);
        *self.totals.lock() = totals(&tx)?;
        tx.commit()
    }

    /// The limit this store keeps the cache under (0: none, and for a
    /// store that only inspects it).
    pub fn cap(&self) -> u64 {
        self.limit.unwrap_or(0)
    }

    /// The limits that the cache's other live stores keep it under (0:
    /// none), each store's once.
    pub fn others_limits(&self) -> std::io::Result<Vec<u64>> {
        let own = self.writer.lock().as_ref().map(|w| w.name().to_string());
        self.writers.live_limits(own.as_deref())
    }

    /// Lets go of this store's lock, removing its file: its objects are
    /// synced (a later insert takes a new one).
    pub fn release_writer(&self) {
        self.writer.lock().take();
    }

    /// This store's name in its marks, its lock taken again if it was
    /// lost.
    fn writer(&self) -> std::io::Result<String> {
        let mut writer = self.writer.lock();
        if writer.is_none() {
            *writer = Some(self.writers.take(self.limit)?);
        }
        Ok(writer.as_ref().expect("taken").name().to_string())
    }

    /// Records new objects, evicts the least recently used ones so that
    /// the total stays within `cap` (0: no cap), and moves the new files
    /// into place, all in one transaction. A new object that does not fit
    /// alone is not kept. The new objects are marked unsynced, by this
    /// store: their bytes may not be on disk yet (see
    /// [`ContentIndex::settle`]). Returns the number of objects evicted
    /// and the new objects not kept.
    pub fn insert_all(
        &self,
        downloads: Vec<Ingested>,
        cap: u64,
        objects: &ObjectStore,
    ) -> std::io::Result<(usize, Vec<Sha256Digest>)> {
        // Without a name, a mark would be anyone's to check while this
        // store lives.
        let writer = self.writer()?;
        let mut conn = self.db.lock();
        let fail = |e: rusqlite::Error| std::io::Error::other(format!("cache database: {e}"));
        let tx = transaction(&mut conn).map_err(fail)?;
        let first = next_use(&tx).map_err(fail)?;
        for (used, download) in (first..).zip(downloads.iter()) {
            let blob = download.blob;
            tx.prepare_cached(
                "INSERT INTO objects (sha256, size, used) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sha256) DO UPDATE SET used = excluded.used",
            )
            .and_then(|mut insert| {
                insert.execute(params![db::blob(&blob.digest), blob.size as i64, used])
            })
            .map_err(fail)?;
        }
        let victims = evict_rows(&tx, cap).map_err(fail)?;
        let new: HashSet<Sha256Digest> = downloads.iter().map(Ingested::digest).collect();
        // Room first, then the new files: never above the cap on disk.
        remove_files(
            objects,
            &victims
                .iter()
                .copied()
                .filter(|(d, _)| !new.contains(d))
                .collect::<Vec<_>>(),
        );
        let mut not_kept: Vec<Sha256Digest> = victims
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| new.contains(d))
            .collect();
        let evicted = victims.len() - not_kept.len();
        // An index of this process alone leaves no mark for others to
        // check after a crash: each file is synced before its move.
        let sync_each = self.db.is_in_memory();
        for (marked, download) in (first..).zip(downloads) {
            let digest = download.digest();
            if not_kept.contains(&digest) {
                continue;
            }
            let installed = match sync_each {
                true => download.commit(objects),
                false => download.install(objects),
            };
            if let Err(e) = installed {
                // Said once for all of the cache by the store.
                tracing::debug!(sha256 = %digest, "cannot keep a download: {e}");
                tx.execute("DELETE FROM objects WHERE sha256 = ?1", [db::blob(&digest)])
                    .map_err(fail)?;
                not_kept.push(digest);
                continue;
            }
            if sync_each {
                continue;
            }
            // Moved by this store now: its mark, replacing another's.
            tx.prepare_cached(
                "INSERT INTO unsynced (sha256, writer, marked) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sha256) DO UPDATE SET writer = excluded.writer, marked = excluded.marked",
            )
            .and_then(|mut mark| mark.execute(params![db::blob(&digest), writer, marked]))
            .map_err(fail)?;
        }
        *self.totals.lock() = totals(&tx).map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok((evicted, not_kept))
    }

    /// Makes the objects installed so far durable: one sync of the whole
    /// filesystem, which covers every writer's, then they are no longer
    /// unsynced. Marks added meanwhile (by any process) stay until the
    /// next time.
    pub fn settle(&self, objects: &ObjectStore) -> std::io::Result<()> {
        let fail = |e: rusqlite::Error| std::io::Error::other(format!("cache database: {e}"));
        let waiting = marks(&self.db.lock()).map_err(fail)?;
        if waiting.is_empty() {
            return Ok(());
        }
        objects.sync_filesystem()?;
        forget_marks(&mut self.db.lock(), &waiting).map_err(fail)
    }

    /// Objects moved into place before their bytes reached the disk may be
    /// torn if the machine crashed; a writer killed leaves them unsynced.
    /// Those of writers that are gone are checked (digest and format), a
    /// bad one removed, and the rest made durable. Those of live writers
    /// are left alone: they are whole in memory and their writer syncs
    /// them.
    fn check_unsynced(
        &self,
        objects: &ObjectStore,
        recovery: &mut Recovery,
    ) -> rusqlite::Result<()> {
        let own = self.writer.lock().as_ref().map(|w| w.name().to_string());
        // Marks are read under the lock: a check that ran meanwhile may
        // have dealt with some.
        let guard = self.writers.recovery();
        let others: Vec<Mark> = marks(&self.db.lock())?
            .into_iter()
            .filter(|m| m.writer.is_none() || m.writer != own)
            .collect();
        let guard = match guard {
            Ok(guard) => Some(guard),
            Err(e) if !others.is_empty() => {
                tracing::warn!(
                    "cannot take the cache's recovery lock ({e}): every file marked unsynced is checked"
                );
                None
            }
            Err(_) => None,
        };
        let mut orphaned: Vec<Mark> = Vec::new();
        let mut released: Vec<Released> = Vec::new();
        let mut liveness: HashMap<String, bool> = HashMap::new();
        for mark in others {
            let alive = match (&mark.writer, &guard) {
                (Some(writer), Some(_)) => *liveness.entry(writer.clone()).or_insert_with(|| {
                    match self.writers.probe(writer) {
                        Ok(Liveness::Alive) => true,
                        Ok(Liveness::Dead(lock)) => {
                            released.extend(lock);
                            false
                        }
                        Err(e) => {
                            tracing::warn!(
                                writer,
                                "cannot tell whether a writer lives ({e}): its files are checked"
                            );
                            false
                        }
                    }
                }),
                _ => false,
            };
            if !alive {
                orphaned.push(mark);
            }
        }
        let mut bad = Vec::new();
        for mark in &orphaned {
            let Some(digest) = db::digest(Some(mark.sha256.clone())) else {
                continue;
            };
            recovery.checked += 1;
            match objects.check(&digest) {
                Ok(Some(_)) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                _ => {
                    tracing::error!(path = %objects.path(&digest).display(), "a cached file written just before its writer ended is not whole; removed");
                    bad.push(digest);
                }
            }
        }
        recovery.corrupt += bad.len();
        if !bad.is_empty() {
            self.remove(objects, &bad);
        }
        if !orphaned.is_empty() {
            match objects.sync_filesystem() {
                Ok(()) => forget_marks(&mut self.db.lock(), &orphaned)?,
                // Checked again by the next process.
                Err(e) => tracing::warn!("cannot sync the cache: {e}"),
            }
        }
        if guard.is_some() {
            released.extend(self.writers.dead(own.as_deref()));
        }
        for lock in released {
            lock.remove();
        }
        Ok(())
    }

    /// Marks an object as just used: remembered in memory, written by the
    /// background writer (or the next insert) at most every few minutes.
    pub fn touch(&self, sha256: &Sha256Digest) {
        let now = Instant::now();
        let mut used = self.used.lock();
        if used
            .get(sha256)
            .is_some_and(|&at| now.duration_since(at) < USE_INTERVAL)
        {
            return;
        }
        used.put(*sha256, now);
        drop(used);
        self.db.queue_use(*sha256);
    }

    /// Removes objects' rows and files; returns the bytes freed.
    pub fn remove(&self, objects: &ObjectStore, digests: &[Sha256Digest]) -> u64 {
        let result = (|| {
            let mut conn = self.db.lock();
            let tx = transaction(&mut conn)?;
            let mut freed = 0;
            for digest in digests {
                let size: Option<i64> = tx
                    .query_row(
                        "DELETE FROM objects WHERE sha256 = ?1 RETURNING size",
                        [db::blob(digest)],
                        |row| row.get(0),
                    )
                    .optional()?;
                freed += size.unwrap_or(0) as u64;
                if let Err(e) = objects.remove(digest) {
                    tracing::warn!(sha256 = %digest, "cannot remove: {e}");
                }
            }
            *self.totals.lock() = totals(&tx)?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(freed)
        })();
        result.unwrap_or_else(|e| {
            tracing::warn!("cannot update the cache index: {e}");
            0
        })
    }

    /// (files, bytes), as of this process's last change.
    pub fn totals(&self) -> (usize, u64) {
        *self.totals.lock()
    }

    /// Every entry, least recently used first, as the database has them now.
    pub fn entries(&self) -> Vec<(Sha256Digest, u64)> {
        let conn = self.db.lock();
        let read = || -> rusqlite::Result<Vec<(Sha256Digest, u64)>> {
            conn.prepare("SELECT sha256, size FROM objects ORDER BY used")?
                .query_map([], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?))
                })?
                .map(|row| row.map(|(d, s)| (db::digest(Some(d)), s as u64)))
                .filter_map(|row| match row {
                    Ok((Some(d), s)) => Some(Ok((d, s))),
                    Ok((None, _)) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect()
        };
        read().unwrap_or_else(|e| {
            tracing::warn!("cannot read the cache index: {e}");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    //! Writers in other processes: the tests start this test binary again
    //! as the other process, with its role in the environment.

    use std::io::{BufRead, BufReader, Read};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::super::{CacheDir, ContentStore, PNG_MAGIC};
    use super::*;

    const ROLE: &str = "MATVISFS_TEST_WRITER_ROLE";
    const CACHE: &str = "MATVISFS_TEST_WRITER_CACHE";
    const READY: &str = "the other process is ready";
    /// Objects the holding writer keeps unsynced.
    const HELD: usize = 12;
    /// Of which these are not textures: a check removes them.
    const NOT_TEXTURES: usize = 4;

    fn object(n: usize, i: usize) -> Vec<u8> {
        let body = format!("{n}-{i}-{}", "x".repeat(200));
        match i < NOT_TEXTURES {
            true => body.into_bytes(),
            false => [PNG_MAGIC, body.as_bytes()].concat(),
        }
    }

    fn ingested(objects: &ObjectStore, bytes: &[u8]) -> Ingested {
        let mut ingest = objects.ingest().unwrap();
        ingest.append(bytes).unwrap();
        ingest.finish().unwrap()
    }

    /// The other process: `hold` moves objects into place, says so, and
    /// never syncs them, until it is killed (or its stdin closes);
    /// `stream` keeps downloads through a store as a mount does.
    #[test]
    #[ignore = "the other process of the tests of writers, started by them"]
    fn other_process() {
        let (Ok(role), Ok(root)) = (std::env::var(ROLE), std::env::var(CACHE)) else {
            return;
        };
        let cache = CacheDir::open(Path::new(&root)).unwrap();
        match role.as_str() {
            "hold" => {
                let objects = cache.objects();
                let (index, _) =
                    ContentIndex::open(cache.database(), &objects, cache.writers(), Some(0), false);
                let downloads = (0..HELD)
                    .map(|i| ingested(&objects, &object(99, i)))
                    .collect();
                let (_, not_kept) = index.insert_all(downloads, 0, &objects).unwrap();
                assert!(not_kept.is_empty());
                println!("{READY}");
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
            }
            "stream" => {
                let (store, _) = ContentStore::load(&cache, 0);
                println!("{READY}");
                for i in 0..100_000usize {
                    let mut ingest = store.ingest().unwrap();
                    let bytes = [
                        PNG_MAGIC,
                        format!("stream-{i}-{}", "y".repeat(3000)).as_bytes(),
                    ]
                    .concat();
                    ingest.append(&bytes).unwrap();
                    store.insert(ingest.finish().unwrap()).unwrap();
                }
            }
            other => panic!("no role {other}"),
        }
    }

    /// The other process, killed when the test ends however it ends.
    struct Other(Child);

    impl Other {
        fn start(role: &str, cache: &Path) -> Other {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "--nocapture", "--test-threads=1"])
                .arg("store::index::tests::other_process")
                .env(ROLE, role)
                .env(CACHE, cache)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let mut other = Other(child);
            // The harness writes its own words before it on the line.
            for line in stdout.lines() {
                if line.unwrap().ends_with(READY) {
                    return other;
                }
            }
            let status = other.0.wait().unwrap();
            panic!("the other process ended before it was ready: {status}");
        }

        fn kill(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for Other {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn unsynced(cache: &CacheDir) -> Vec<(Sha256Digest, Option<String>)> {
        let conn = rusqlite::Connection::open(cache.root().join(db::FILE)).unwrap();
        let mut select = conn.prepare("SELECT sha256, writer FROM unsynced").unwrap();
        select
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(|row| {
                let (bytes, writer): (Vec<u8>, Option<String>) = row.unwrap();
                (db::digest(Some(bytes)).unwrap(), writer)
            })
            .collect()
    }

    fn writer_locks(cache: &CacheDir) -> usize {
        std::fs::read_dir(cache.root().join("tmp"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("writer-")
            })
            .count()
    }

    fn blob_of(bytes: &[u8]) -> Blob {
        Blob {
            digest: Sha256Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    use super::super::Blob;

    /// Opens the cache as a new process does, and checks that the other
    /// process's objects are all still there.
    fn open_and_find(root: &Path, held: &[Blob]) -> Recovery {
        let (store, recovery) = ContentStore::load(&CacheDir::open(root).unwrap(), 0);
        for blob in held {
            assert!(store.open(blob).is_some(), "{blob:?} is gone");
        }
        recovery
    }

    #[test]
    fn a_live_writers_unsynced_objects_are_neither_checked_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        let cache = CacheDir::open(&root).unwrap();
        let _other = Other::start("hold", &root);
        let held: Vec<Blob> = (0..HELD).map(|i| blob_of(&object(99, i))).collect();
        assert_eq!(unsynced(&cache).len(), HELD);
        for round in 0..3 {
            assert_eq!(open_and_find(&root, &held), Recovery::default(), "{round}");
        }
        assert_eq!(unsynced(&cache).len(), HELD, "still the other's to sync");
        // And while this process writes too (its syncs cover the other's
        // objects, which then need no check at all).
        let (writer, _) = ContentStore::load(&CacheDir::open(&root).unwrap(), 0);
        for round in 0..3 {
            for i in 0..20 {
                let mut ingest = writer.ingest().unwrap();
                ingest.append(&object(round, 100 + i)).unwrap();
                writer.insert(ingest.finish().unwrap()).unwrap();
            }
            assert_eq!(open_and_find(&root, &held), Recovery::default(), "{round}");
        }
    }

    #[test]
    fn a_killed_writers_unsynced_objects_are_checked_by_the_next_opener() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        let cache = CacheDir::open(&root).unwrap();
        let mut other = Other::start("hold", &root);
        let held: Vec<Blob> = (0..HELD).map(|i| blob_of(&object(99, i))).collect();
        other.kill();
        assert_eq!(writer_locks(&cache), 1, "left by the killed process");
        let (store, recovery) = ContentStore::load(&CacheDir::open(&root).unwrap(), 0);
        // Not textures: removed by the check.
        assert_eq!((recovery.checked, recovery.corrupt), (HELD, NOT_TEXTURES));
        for (i, blob) in held.iter().enumerate() {
            assert_eq!(store.open(blob).is_some(), i >= NOT_TEXTURES, "{i}");
        }
        assert!(unsynced(&cache).is_empty());
        assert_eq!(writer_locks(&cache), 1, "this store's only");
        drop(store);
        assert_eq!(writer_locks(&cache), 0);
        let (_, recovery) = ContentStore::load(&CacheDir::open(&root).unwrap(), 0);
        assert_eq!(recovery, Recovery::default());
    }

    #[test]
    fn a_writer_killed_mid_batch_is_recovered_by_the_next_opener() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        let cache = CacheDir::open(&root).unwrap();
        let mut other = Other::start("stream", &root);
        let deadline = Instant::now() + Duration::from_secs(60);
        while unsynced(&cache).len() < 20 {
            assert!(Instant::now() < deadline, "the other process keeps nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
        other.kill();
        let marked = unsynced(&cache);
        assert!(marked.iter().all(|(_, w)| w.is_some()), "{marked:?}");
        let (store, recovery) = ContentStore::load(&CacheDir::open(&root).unwrap(), 0);
        assert_eq!(recovery.checked, marked.len(), "{recovery:?}");
        assert_eq!(recovery.corrupt, 0, "killed, not crashed: whole");
        assert!(unsynced(&cache).is_empty());
        assert_eq!(writer_locks(&cache), 1, "this store's only");
        assert_eq!(store.verify(|_| {}).corrupt, 0);
        let on_disk: HashSet<Sha256Digest> = cache
            .objects()
            .list()
            .iter()
            .filter_map(|l| l.digest)
            .collect();
        for (digest, _) in &marked {
            assert!(on_disk.contains(digest), "{digest} was lost");
        }
    }
}
