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
use super::{Listed, ObjectStore};
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

    /// Records a new object, evicts the least recently used objects so that
    /// the total stays within `cap` (0: no cap), and runs `install` (which
    /// moves the file into place), all in one transaction. The new object
    /// is not kept when it alone exceeds the cap: `install` is not called.
    /// Returns the number of objects evicted.
    pub fn insert(
        &self,
        sha256: Sha256Digest,
        size: u64,
        cap: u64,
        objects: &ObjectStore,
        install: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<usize> {
        let mut conn = self.db.lock();
        let fail = |e: rusqlite::Error| std::io::Error::other(format!("cache database: {e}"));
        let tx = transaction(&mut conn).map_err(fail)?;
        let used = next_use(&tx).map_err(fail)?;
        tx.prepare_cached(
            "INSERT INTO objects (sha256, size, used) VALUES (?1, ?2, ?3)
             ON CONFLICT (sha256) DO UPDATE SET used = excluded.used",
        )
        .and_then(|mut insert| insert.execute(params![db::blob(&sha256), size as i64, used]))
        .map_err(fail)?;
        let victims = evict_rows(&tx, cap).map_err(fail)?;
        // Room first, then the new file: never above the cap on disk.
        let keep = victims.iter().all(|(digest, _)| *digest != sha256);
        remove_files(
            objects,
            &victims
                .iter()
                .copied()
                .filter(|(d, _)| *d != sha256)
                .collect::<Vec<_>>(),
        );
        let evicted = victims.len() - usize::from(!keep);
        if keep {
            if let Err(e) = install() {
                // The victims are gone either way; the new row goes too.
                tx.execute("DELETE FROM objects WHERE sha256 = ?1", [db::blob(&sha256)])
                    .map_err(fail)?;
                *self.totals.lock() = totals(&tx).map_err(fail)?;
                tx.commit().map_err(fail)?;
                return Err(e);
            }
        }
        *self.totals.lock() = totals(&tx).map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(evicted)
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
