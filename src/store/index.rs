//! The index of cached content, in the cache database: digest, size and
//! order of last use of every object, and their total. Evicting under the
//! cap and installing the new object happen inside one write transaction,
//! so that processes sharing the cache never hold more than the cap
//! together, even for a moment.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::db::{self, Database};
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
}

pub struct ContentIndex {
    db: Arc<Database>,
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
    /// adopted (or removed when their bytes are wrong), within `cap`.
    pub fn open(
        db: Arc<Database>,
        objects: &ObjectStore,
        cap: u64,
        rebuilt: bool,
    ) -> (ContentIndex, Recovery) {
        let index = ContentIndex {
            db,
            totals: Mutex::new((0, 0)),
            used: Mutex::new(LruCache::new(USES_REMEMBERED.try_into().expect("not zero"))),
        };
        let mut recovery = Recovery {
            rebuilt,
            ..Recovery::default()
        };
        if let Err(e) = index.reconcile(objects, cap, &mut recovery) {
            tracing::warn!("cannot reconcile the cache index with the files: {e}");
        }
        if let Err(e) = index.check_unsynced(objects, &mut recovery) {
            tracing::warn!("cannot check the files written last: {e}");
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

    /// Records new objects, evicts the least recently used ones so that
    /// the total stays within `cap` (0: no cap), and moves the new files
    /// into place, all in one transaction. A new object that does not fit
    /// alone is not kept. The new objects are marked unsynced: their bytes
    /// may not be on disk yet (see [`ContentIndex::settle`]). Returns the
    /// number of objects evicted and the new objects not kept.
    pub fn insert_all(
        &self,
        downloads: Vec<Ingested>,
        cap: u64,
        objects: &ObjectStore,
    ) -> std::io::Result<(usize, Vec<Sha256Digest>)> {
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
            .and_then(|_| {
                tx.prepare_cached("INSERT OR IGNORE INTO unsynced (sha256) VALUES (?1)")?
                    .execute([db::blob(&blob.digest)])
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
        for download in downloads {
            let digest = download.digest();
            if not_kept.contains(&digest) {
                continue;
            }
            if let Err(e) = download.install(objects) {
                tracing::warn!(sha256 = %digest, "cannot keep a download: {e}");
                tx.execute("DELETE FROM objects WHERE sha256 = ?1", [db::blob(&digest)])
                    .map_err(fail)?;
                not_kept.push(digest);
            }
        }
        for digest in &not_kept {
            tx.execute("DELETE FROM unsynced WHERE sha256 = ?1", [db::blob(digest)])
                .map_err(fail)?;
        }
        *self.totals.lock() = totals(&tx).map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok((evicted, not_kept))
    }

    /// Makes the objects installed so far durable: one sync of the whole
    /// filesystem, then they are no longer unsynced. Rows added meanwhile
    /// (by any process) stay until the next time.
    pub fn settle(&self, objects: &ObjectStore) -> std::io::Result<()> {
        let fail = |e: rusqlite::Error| std::io::Error::other(format!("cache database: {e}"));
        let waiting: Vec<Vec<u8>> = {
            let conn = self.db.lock();
            conn.prepare_cached("SELECT sha256 FROM unsynced")
                .and_then(|mut select| {
                    select
                        .query_map([], |row| row.get::<_, Vec<u8>>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(fail)?
        };
        if waiting.is_empty() {
            return Ok(());
        }
        objects.sync_filesystem()?;
        let mut conn = self.db.lock();
        let tx = transaction(&mut conn).map_err(fail)?;
        for digest in &waiting {
            tx.prepare_cached("DELETE FROM unsynced WHERE sha256 = ?1")
                .and_then(|mut delete| delete.execute([digest]))
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    /// After a crash, objects moved into place before their bytes reached
    /// the disk may be torn: each is checked (digest and format), a bad one
    /// removed, and the rest made durable.
    fn check_unsynced(
        &self,
        objects: &ObjectStore,
        recovery: &mut Recovery,
    ) -> rusqlite::Result<()> {
        let waiting: Vec<Sha256Digest> = {
            let conn = self.db.lock();
            let mut select = conn.prepare("SELECT sha256 FROM unsynced")?;
            select
                .query_map([], |row| row.get::<_, Vec<u8>>(0))?
                .filter_map(|bytes| db::digest(bytes.ok()))
                .collect()
        };
        if waiting.is_empty() {
            return Ok(());
        }
        let mut bad = Vec::new();
        for digest in &waiting {
            match objects.check(digest) {
                Ok(Some(_)) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                _ => {
                    tracing::error!(path = %objects.path(digest).display(), "a cached file written just before a crash is not whole; removed");
                    bad.push(*digest);
                }
            }
        }
        recovery.corrupt += bad.len();
        if !bad.is_empty() {
            self.remove(objects, &bad);
        }
        if let Err(e) = self.settle(objects) {
            tracing::warn!("cannot sync the cache: {e}");
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
