//! The cache's database (`cache.db`, SQLite in WAL mode), shared by every
//! process using the cache: the content index (size and order of use of
//! every object, and their total, under the cap) and the file records of
//! every (origin, tag). SQLite's own locking makes each transaction atomic
//! across processes and a crash mid-write leaves the last committed state.
//!
//! Writes that nobody waits for (file records, uses of objects) go to one
//! background writer per process, so that a thread answering the kernel
//! never waits for a lock or the disk: only memory is touched there.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags, params};

use super::FileRecord;
use crate::digest::Sha256Digest;

pub const FILE: &str = "cache.db";

/// A use of an object beyond this many queued is dropped: it only orders
/// evictions.
const QUEUED_USES: usize = 4096;
/// How long a process waits for another's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a waiting process looks again: SQLite's own handler sleeps up
/// to 100 ms between looks, far longer than a transaction here lasts.
const BUSY_POLL: Duration = Duration::from_micros(200);

fn wait_for_the_lock(attempt: i32) -> bool {
    std::thread::sleep(BUSY_POLL);
    (attempt as u128) * BUSY_POLL.as_micros() < BUSY_TIMEOUT.as_micros()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    sha256 BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    -- Order of last use: the smallest goes first.
    used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_use ON objects (used);
-- Objects moved into place before their bytes were known to be on disk:
-- checked again after a crash, forgotten once the filesystem was synced.
CREATE TABLE IF NOT EXISTS unsynced (sha256 BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (files INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO totals SELECT 0, 0 WHERE NOT EXISTS (SELECT 1 FROM totals);
CREATE TRIGGER IF NOT EXISTS objects_in AFTER INSERT ON objects BEGIN
    UPDATE totals SET files = files + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS objects_out AFTER DELETE ON objects BEGIN
    UPDATE totals SET files = files - 1, bytes = bytes - OLD.size;
END;
CREATE TABLE IF NOT EXISTS files (
    origin TEXT NOT NULL,
    tag TEXT NOT NULL,
    path TEXT NOT NULL,
    generation INTEGER NOT NULL,
    size INTEGER,
    etag TEXT,
    sha256 BLOB,
    remote_sha256 BLOB,
    PRIMARY KEY (origin, tag, path)
) WITHOUT ROWID;
";

/// A record to write, with the (origin key, tag) it belongs to.
pub struct RecordWrite {
    pub origin: Arc<str>,
    pub tag: Arc<str>,
    pub record: FileRecord,
}

#[derive(Default)]
struct Queue {
    records: Vec<RecordWrite>,
    uses: Vec<Sha256Digest>,
    /// The writer holds a batch it has not committed yet.
    writing: bool,
    closed: bool,
}

impl Queue {
    fn is_idle(&self) -> bool {
        self.records.is_empty() && self.uses.is_empty() && !self.writing
    }
}

struct Shared {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    changed: Condvar,
}

pub struct Database {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

pub fn blob(digest: &Sha256Digest) -> &[u8] {
    &digest.0
}

pub fn digest(bytes: Option<Vec<u8>>) -> Option<Sha256Digest> {
    let bytes: [u8; 32] = bytes?.try_into().ok()?;
    Some(Sha256Digest(bytes))
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    // NOFOLLOW: no component of the (canonical) path may be a link; SQLite
    // opens the database, its journal and shared memory with O_NOFOLLOW.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_handler(Some(wait_for_the_lock))?;
    // NORMAL: a commit is not synced; a power loss may lose the last ones,
    // which the start-up reconciliation with the files repairs.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))?;
    Ok(conn)
}

/// Opens (or creates) the database at `path`; a damaged one is replaced
/// by an empty one, which the second value tells.
fn connect_or_replace(path: &Path) -> Result<(Connection, bool), String> {
    let describe = |e: rusqlite::Error| format!("cache database {}: {e}", path.display());
    match connect(path) {
        Ok(conn) => Ok((conn, false)),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            tracing::warn!(path = %path.display(), "the cache database is damaged: starting a new one");
            for suffix in ["", "-wal", "-shm"] {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
            Ok((connect(path).map_err(describe)?, true))
        }
        Err(e) => Err(describe(e)),
    }
}

impl Database {
    /// Checks that the database at `path` opens (making or replacing it),
    /// and closes it: a process may fork after this, never after
    /// [`Database::open`]. Returns whether it was replaced.
    pub fn check(path: &Path) -> Result<bool, String> {
        connect_or_replace(path).map(|(_, replaced)| replaced)
    }

    /// Opens the database at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<(Database, bool), String> {
        let (conn, replaced) = connect_or_replace(path)?;
        Ok((Database::with(conn)?, replaced))
    }

    /// A database of this process alone, when the cache's cannot be opened.
    pub fn in_memory() -> Database {
        let conn = Connection::open_in_memory()
            .and_then(|conn| conn.execute_batch(SCHEMA).map(|()| conn))
            .expect("an in-memory database opens");
        Database::with(conn).expect("its writer starts")
    }

    fn with(conn: Connection) -> Result<Database, String> {
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("cache-db".into())
                .spawn(move || shared.write_queued())
                .map_err(|e| format!("cannot start the cache's writer: {e}"))?
        };
        Ok(Database {
            shared,
            writer: Some(writer),
        })
    }

    /// The connection, for a transaction of the caller's. Uses queued so
    /// far are in the database before it is handed out.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        let mut conn = self.shared.conn.lock();
        let uses = std::mem::take(&mut self.shared.queue.lock().uses);
        if !uses.is_empty() {
            if let Err(e) = write_batch(&mut conn, &[], &uses) {
                tracing::warn!("cannot write to the cache database: {e}");
            }
        }
        conn
    }

    /// Queues records for the writer; they are in memory already.
    pub fn queue_records(&self, records: impl IntoIterator<Item = RecordWrite>) {
        let mut queue = self.shared.queue.lock();
        queue.records.extend(records);
        self.shared.changed.notify_all();
    }

    /// Queues a use of an object, unless too many are queued already.
    pub fn queue_use(&self, digest: Sha256Digest) {
        let mut queue = self.shared.queue.lock();
        if queue.uses.len() < QUEUED_USES {
            queue.uses.push(digest);
            self.shared.changed.notify_all();
        }
    }

    /// Waits until everything queued so far is written.
    pub fn flush(&self) {
        let mut queue = self.shared.queue.lock();
        while !queue.is_idle() {
            self.shared.changed.wait(&mut queue);
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.flush();
        self.shared.queue.lock().closed = true;
        self.shared.changed.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    fn write_queued(&self) {
        loop {
            {
                let mut queue = self.queue.lock();
                while queue.is_idle() && !queue.closed {
                    self.changed.wait(&mut queue);
                }
                if queue.is_idle() {
                    return;
                }
            }
            // The connection first, then the batch: a transaction that
            // takes the queued uses sees every use queued before it.
            let mut conn = self.conn.lock();
            let (records, uses) = {
                let mut queue = self.queue.lock();
                queue.writing = true;
                (
                    std::mem::take(&mut queue.records),
                    std::mem::take(&mut queue.uses),
                )
            };
            if let Err(e) = write_batch(&mut conn, &records, &uses) {
                // Costs requests in a later session, or eviction order.
                tracing::warn!(
                    records = records.len(),
                    "cannot write to the cache database: {e}"
                );
            }
            drop(conn);
            self.queue.lock().writing = false;
            self.changed.notify_all();
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    records: &[RecordWrite],
    uses: &[Sha256Digest],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO files
             (origin, tag, path, generation, size, etag, sha256, remote_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for write in records {
            let r = &write.record;
            put.execute(params![
                &*write.origin,
                &*write.tag,
                r.path,
                r.generation as i64,
                r.size.map(|s| s as i64),
                r.etag,
                r.sha256.as_ref().map(blob),
                r.remote_sha256.as_ref().map(blob),
            ])?;
        }
        let mut used = tx.prepare_cached(
            "UPDATE objects SET used = (SELECT MAX(used) + 1 FROM objects) WHERE sha256 = ?1",
        )?;
        for digest in uses {
            used.execute([blob(digest)])?;
        }
    }
    tx.commit()
}
