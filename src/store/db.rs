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
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// What is known about one file of a tag: a row of the `files` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// `<source>/<tier>/<material>/<channel>.<ext>`
    pub path: String,
    /// The tag generation under which this record was last confirmed.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The server's validator for the content (`X-Linked-Etag` or `ETag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Digest of the content held in the object store, once downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    /// The content's digest as the server states it (`X-Linked-Etag`), so
    /// that bytes cached under another path can serve this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_sha256: Option<Sha256Digest>,
}

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
-- checked again once their writer is gone (see `writers`), forgotten once
-- the filesystem was synced. `writer` names the lock file of the store
-- that moved the object (NULL: a version before writers had names, or a
-- writer without one); `marked` tells one move of the object from a later
-- one, so that a sync forgets only the moves it covered.
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

/// The connection and the queue of writes, shared by the database's callers
/// and the background writer thread.
struct SharedWithWriter {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    changed: Condvar,
    /// The last background write failed: a full disk fails every one until
    /// it has room, which is said once, not once a batch.
    failing: AtomicBool,
}

pub struct Database {
    shared: Arc<SharedWithWriter>,
    writer: Option<JoinHandle<()>>,
    /// This process's alone (the cache's could not be opened).
    in_memory: bool,
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
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA}"))?;
    let migrated = add_writer_columns(&conn);
    match migrated {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

/// Caches made before writers had names hold `unsynced (sha256)` only:
/// the columns are added (their marks have no writer, and are checked by
/// the next process that opens the cache).
fn add_writer_columns(conn: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('unsynced')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (column, kind) in [("writer", "TEXT"), ("marked", "INTEGER")] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE unsynced ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

/// Why the database did not open.
struct OpenError {
    message: String,
    /// The disk has no room for it (or cannot be written at all): the
    /// cache can still be read, with an index in memory.
    no_room: bool,
}

impl OpenError {
    fn new(path: &Path, e: rusqlite::Error) -> Self {
        OpenError {
            no_room: matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
            ),
            message: format!("cache database {}: {e}", path.display()),
        }
    }
}

/// Opens (or creates) the database at `path`; a damaged one is replaced
/// by an empty one, which the second value tells.
fn connect_or_replace(path: &Path) -> Result<(Connection, bool), OpenError> {
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
            Ok((connect(path).map_err(|e| OpenError::new(path, e))?, true))
        }
        Err(e) => Err(OpenError::new(path, e)),
    }
}

impl Database {
    /// Checks that the database at `path` opens (making or replacing it),
    /// and closes it: a process may fork after this, never after
    /// [`Database::open`]. Returns whether it was replaced. A disk without
    /// room for it is no reason to refuse the cache: the session keeps its
    /// index in memory (see [`super::CacheDir::database`]).
    pub fn check(path: &Path) -> Result<bool, String> {
        match connect_or_replace(path) {
            Ok((_, replaced)) => Ok(replaced),
            Err(e) if e.no_room => {
                tracing::warn!(
                    "{}; the cache is read, and written where it has room",
                    e.message
                );
                Ok(false)
            }
            Err(e) => Err(e.message),
        }
    }

    /// Opens the database at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<(Database, bool), String> {
        let (conn, replaced) = connect_or_replace(path).map_err(|e| e.message)?;
        Ok((Database::with(conn)?, replaced))
    }

    /// A database of this process alone, when the cache's cannot be opened.
    pub fn in_memory() -> Database {
        let conn = Connection::open_in_memory()
            .and_then(|conn| conn.execute_batch(SCHEMA).map(|()| conn))
            .and_then(|conn| add_writer_columns(&conn).map(|()| conn))
            .expect("an in-memory database opens");
        let mut db = Database::with(conn).expect("its writer starts");
        db.in_memory = true;
        db
    }

    fn with(conn: Connection) -> Result<Database, String> {
        let shared = Arc::new(SharedWithWriter {
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            failing: AtomicBool::new(false),
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
            in_memory: false,
        })
    }

    /// Whether the database is this process's alone, unseen by others and
    /// lost at its end.
    pub fn is_in_memory(&self) -> bool {
        self.in_memory
    }

    /// The connection, for a transaction of the caller's. Uses queued so
    /// far are in the database before it is handed out.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        let mut conn = self.shared.conn.lock();
        let uses = std::mem::take(&mut self.shared.queue.lock().uses);
        if !uses.is_empty() {
            let written = write_batch(&mut conn, &[], &uses);
            self.shared.report(written, 0);
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

impl SharedWithWriter {
    /// Logs the first failure of a run of failed writes, and its end. A
    /// lost record costs requests in a later session, a lost use eviction
    /// order: this session answers from memory either way.
    fn report(&self, written: rusqlite::Result<()>, records: usize) {
        match written {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the cache database can be written again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        records,
                        "cannot write to the cache database: {e}; this session keeps its file \
                         records in memory until it can (said once)"
                    );
                } else {
                    tracing::debug!(records, "cannot write to the cache database: {e}");
                }
            }
        }
    }

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
            let written = write_batch(&mut conn, &records, &uses);
            self.report(written, records.len());
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
