use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::db::{self, Database, FileRecord, RecordWrite};
use crate::digest::Sha256Digest;

/// No texture is smaller (the PNG signature alone is 8 bytes): a smaller
/// remembered size (an older version kept 0 from a truncated upload) is
/// not loaded, the file is asked about again.
pub const SMALLEST_TEXTURE: u64 = 8;

/// A record as kept in memory (100,000 of them for a full tag), 24 bytes:
/// the path is the map's key; the content digest and the server's digest
/// are one value (downloads are checked against the server's, so they
/// agree), kept in a side table only when there is one; an ETag that is
/// that digest quoted (Hugging Face's `X-Linked-Etag`) is not stored.
struct Compact {
    /// `u64::MAX`: unknown.
    size: u64,
    generation: u32,
    /// Index into [`Extras::digests`], or [`ABSENT`].
    digest: u32,
    /// Index into [`Extras::etags`], or [`ABSENT`] / [`QUOTED_DIGEST`].
    etag: u32,
    /// `digest` is the content held in the object store.
    cached: bool,
    /// `digest` is what the server states.
    declared: bool,
}

const ABSENT: u32 = u32::MAX;
const QUOTED_DIGEST: u32 = u32::MAX - 1;

/// What only some records have, with free slots reused when a record is
/// replaced.
#[derive(Default)]
struct Extras {
    digests: Vec<Sha256Digest>,
    free_digests: Vec<u32>,
    etags: Vec<Box<str>>,
    free_etags: Vec<u32>,
}

impl Extras {
    fn add_digest(&mut self, digest: Sha256Digest) -> u32 {
        match self.free_digests.pop() {
            Some(slot) => {
                self.digests[slot as usize] = digest;
                slot
            }
            None => {
                self.digests.push(digest);
                (self.digests.len() - 1) as u32
            }
        }
    }

    fn add_etag(&mut self, etag: String) -> u32 {
        match self.free_etags.pop() {
            Some(slot) => {
                self.etags[slot as usize] = etag.into_boxed_str();
                slot
            }
            None => {
                self.etags.push(etag.into_boxed_str());
                (self.etags.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, old: &Compact) {
        if old.digest != ABSENT {
            self.free_digests.push(old.digest);
        }
        if old.etag < QUOTED_DIGEST {
            self.etags[old.etag as usize] = Box::default();
            self.free_etags.push(old.etag);
        }
    }

    fn digest(&self, compact: &Compact) -> Option<Sha256Digest> {
        (compact.digest != ABSENT).then(|| self.digests[compact.digest as usize])
    }
}

impl Compact {
    fn from(record: FileRecord, extras: &mut Extras) -> (Box<str>, Compact) {
        // A server digest that differs from the cached content's is a
        // dedupe hint at most: the content's wins.
        let digest = record.sha256.or(record.remote_sha256);
        let declared = record.remote_sha256.is_some() && record.remote_sha256 == digest;
        let etag = match record.etag {
            None => ABSENT,
            Some(etag) if digest.is_some_and(|d| etag == format!("\"{d}\"")) => QUOTED_DIGEST,
            Some(etag) => extras.add_etag(etag),
        };
        let compact = Compact {
            size: record.size.unwrap_or(u64::MAX),
            generation: record.generation.min(u32::MAX as u64) as u32,
            digest: digest.map_or(ABSENT, |d| extras.add_digest(d)),
            etag,
            cached: record.sha256.is_some(),
            declared,
        };
        (record.path.into_boxed_str(), compact)
    }

    fn size(&self) -> Option<u64> {
        (self.size != u64::MAX).then_some(self.size)
    }

    fn record(&self, path: &str, extras: &Extras) -> FileRecord {
        let digest = extras.digest(self);
        FileRecord {
            path: path.to_string(),
            generation: self.generation as u64,
            size: self.size(),
            etag: match self.etag {
                ABSENT => None,
                QUOTED_DIGEST => digest.map(|d| format!("\"{d}\"")),
                slot => Some(extras.etags[slot as usize].to_string()),
            },
            sha256: digest.filter(|_| self.cached),
            remote_sha256: digest.filter(|_| self.declared),
        }
    }
}

#[derive(Default)]
struct Table {
    map: HashMap<Box<str>, Compact>,
    extras: Extras,
}

impl Table {
    fn insert(&mut self, record: FileRecord) {
        if let Some(old) = self.map.get(record.path.as_str()) {
            self.extras.release(old);
        }
        let (path, compact) = Compact::from(record, &mut self.extras);
        self.map.insert(path, compact);
    }

    fn get(&self, path: &str) -> Option<FileRecord> {
        self.map.get(path).map(|c| c.record(path, &self.extras))
    }

    fn all(&self) -> impl Iterator<Item = FileRecord> + '_ {
        self.map
            .iter()
            .map(|(path, c)| c.record(path, &self.extras))
    }
}

/// Per-file records of one (origin, tag): kept in memory, loaded from the
/// cache database when the tag is opened and written back to it by its
/// background writer, so that neither a lookup nor a put touches a file.
pub struct FileRecords {
    table: Mutex<Table>,
    db: Arc<Database>,
    origin: Arc<str>,
    tag: Arc<str>,
}

fn load(
    db: &Database,
    origin: &str,
    tag: &str,
    mut each: impl FnMut(FileRecord),
) -> rusqlite::Result<()> {
    let conn = db.lock();
    let mut query = conn.prepare(
        "SELECT path, generation, size, etag, sha256, remote_sha256
         FROM files WHERE origin = ?1 AND tag = ?2",
    )?;
    let rows = query.query_map([origin, tag], |row| {
        Ok(FileRecord {
            path: row.get(0)?,
            generation: row.get::<_, i64>(1)? as u64,
            size: row.get::<_, Option<i64>>(2)?.map(|s| s as u64),
            etag: row.get(3)?,
            sha256: db::digest(row.get(4)?),
            remote_sha256: db::digest(row.get(5)?),
        })
    })?;
    for record in rows {
        each(record?);
    }
    Ok(())
}

impl FileRecords {
    /// The records of `tag` from `origin` (its key in the cache).
    pub fn open(db: Arc<Database>, origin: &str, tag: &str) -> Self {
        let mut table = Table::default();
        let loaded = load(&db, origin, tag, |record| {
            if record.size.is_some_and(|size| size < SMALLEST_TEXTURE) {
                return;
            }
            table.insert(record);
        });
        if let Err(e) = loaded {
            tracing::warn!(tag, "cannot read the file records: {e}");
        }
        FileRecords {
            table: Mutex::new(table),
            db,
            origin: origin.into(),
            tag: tag.into(),
        }
    }

    /// The highest generation any record carries.
    pub fn max_generation(&self) -> u64 {
        self.table
            .lock()
            .map
            .values()
            .map(|r| r.generation as u64)
            .max()
            .unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.table.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, path: &str) -> Option<FileRecord> {
        self.table.lock().get(path)
    }

    /// The size recorded for `path` under `generation`, without copying the
    /// record (the hot path of every listing).
    pub fn size_at(&self, path: &str, generation: u64) -> Option<u64> {
        self.table
            .lock()
            .map
            .get(path)
            .filter(|c| c.generation as u64 == generation)
            .and_then(Compact::size)
    }

    /// Every record, for reports.
    pub fn all(&self) -> Vec<FileRecord> {
        self.table.lock().all().collect()
    }

    /// Records `record` in memory and queues it for the database. A record
    /// that cannot be written only costs requests in a later session.
    pub fn put(&self, record: FileRecord) {
        self.put_all(vec![record]);
    }

    pub fn put_all(&self, records: Vec<FileRecord>) {
        {
            let mut table = self.table.lock();
            for record in &records {
                table.insert(record.clone());
            }
        }
        self.db
            .queue_records(records.into_iter().map(|record| RecordWrite {
                origin: self.origin.clone(),
                tag: self.tag.clone(),
                record,
            }));
    }

    /// Records of generation `from` whose path `untouched` accepts become
    /// records of generation `to`: what a new version of the tag provably
    /// did not change (a catalog of another source replaced) stays proven
    /// in it, in memory and in the database. A record of any other
    /// generation (one put since, for the new version) is left alone.
    pub fn carry_forward(&self, from: u64, to: u64, untouched: impl Fn(&str) -> bool) {
        let carried: Vec<FileRecord> = {
            let mut table = self.table.lock();
            let Table { map, extras } = &mut *table;
            map.iter_mut()
                .filter(|(path, c)| c.generation as u64 == from && untouched(path))
                .map(|(path, c)| {
                    c.generation = to.min(u32::MAX as u64) as u32;
                    c.record(path, extras)
                })
                .collect()
        };
        if carried.is_empty() {
            return;
        }
        self.db
            .queue_records(carried.into_iter().map(|record| RecordWrite {
                origin: self.origin.clone(),
                tag: self.tag.clone(),
                record,
            }));
    }

    /// Waits until every record put so far is in the database.
    pub fn flush(&self) {
        self.db.flush();
    }
}

/// Records outlive the tag that put them.
impl Drop for FileRecords {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, generation: u64, size: u64) -> FileRecord {
        FileRecord {
            path: path.into(),
            generation,
            size: Some(size),
            etag: Some("\"e\"".into()),
            sha256: Some(Sha256Digest::of(path.as_bytes())),
            remote_sha256: None,
        }
    }

    fn database(dir: &tempfile::TempDir) -> Arc<Database> {
        Arc::new(Database::open(&dir.path().join("cache.db")).unwrap().0)
    }

    #[test]
    fn records_carried_forward_are_of_the_new_generation_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir);
        let records = FileRecords::open(db.clone(), "o", "t");
        records.put(record("a/1k/m/ao.png", 3, 70));
        records.put(record("b/1k/m/ao.png", 3, 80));
        records.put(record("b/1k/m/color.png", 4, 90));
        records.put(record("b/1k/m/normal.png", 2, 95));
        records.carry_forward(3, 4, |path| !path.starts_with("a/"));
        let generations = |records: &FileRecords| {
            [
                "a/1k/m/ao.png",
                "b/1k/m/ao.png",
                "b/1k/m/color.png",
                "b/1k/m/normal.png",
            ]
            .map(|p| records.get(p).unwrap().generation)
        };
        assert_eq!(generations(&records), [3, 4, 4, 2]);
        assert_eq!(records.size_at("b/1k/m/ao.png", 4), Some(80));
        records.flush();
        assert_eq!(generations(&FileRecords::open(db, "o", "t")), [3, 4, 4, 2]);
    }

    #[test]
    fn records_in_their_usual_shapes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir);
        let records = FileRecords::open(db.clone(), "o", "t");
        let digest = Sha256Digest::of(b"x");
        // Downloaded from Hugging Face: content, declared digest and ETag agree.
        let linked = FileRecord {
            etag: Some(format!("\"{digest}\"")),
            sha256: Some(digest),
            remote_sha256: Some(digest),
            ..record("a/1k/m/ao.png", 3, 70)
        };
        // Sized by a HEAD only; a plain mirror's ETag.
        let headed = FileRecord {
            etag: Some("\"65f1-1a2b\"".into()),
            sha256: None,
            remote_sha256: None,
            ..record("a/1k/m/color.png", 3, 90)
        };
        for r in [&linked, &headed] {
            records.put(r.clone());
            assert_eq!(records.get(&r.path).as_ref(), Some(r));
        }
        assert_eq!(records.size_at("a/1k/m/ao.png", 3), Some(70));
        assert_eq!(records.size_at("a/1k/m/ao.png", 2), None);
        records.flush();
        let again = FileRecords::open(db.clone(), "o", "t");
        assert_eq!(again.get("a/1k/m/ao.png"), Some(linked));
        // Another origin's tag of the same name holds nothing of it.
        assert!(FileRecords::open(db, "elsewhere", "t").is_empty());
    }

    #[test]
    fn records_stay_small_and_replacing_one_reuses_its_slots() {
        assert_eq!(std::mem::size_of::<Compact>(), 24);
        let dir = tempfile::tempdir().unwrap();
        let records = FileRecords::open(database(&dir), "o", "t");
        for i in 0..100u64 {
            let r = record("a/1k/m/ao.png", i, i);
            records.put(FileRecord {
                etag: Some(format!("\"{i}\"")),
                ..r
            });
            assert_eq!(
                records.get("a/1k/m/ao.png").unwrap().etag.unwrap(),
                format!("\"{i}\"")
            );
        }
        let table = records.table.lock();
        assert_eq!(
            (table.extras.digests.len(), table.extras.etags.len()),
            (1, 1)
        );
    }

    #[test]
    fn the_last_record_wins_across_processes_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let records = FileRecords::open(database(&dir), "o", "t");
        let other = FileRecords::open(database(&dir), "o", "t");
        records.put(record("a/1k/m/color.png", 1, 10));
        records.flush();
        other.put(record("a/1k/m/color.png", 2, 11));
        other.put(record("a/1k/m/normal.png", 1, 12));
        drop((records, other));
        let again = FileRecords::open(database(&dir), "o", "t");
        assert_eq!(again.len(), 2);
        assert_eq!(
            again.get("a/1k/m/color.png"),
            Some(record("a/1k/m/color.png", 2, 11))
        );
    }

    #[test]
    fn a_size_below_the_smallest_texture_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let records = FileRecords::open(database(&dir), "o", "t");
        records.put(record("a/1k/m/empty.png", 1, 0));
        records.put(record("a/1k/m/tiny.png", 1, 7));
        records.put(record("a/1k/m/ok.png", 1, 8));
        drop(records);
        let again = FileRecords::open(database(&dir), "o", "t");
        assert_eq!(again.get("a/1k/m/empty.png"), None);
        assert_eq!(again.get("a/1k/m/tiny.png"), None);
        assert_eq!(again.size_at("a/1k/m/ok.png", 1), Some(8));
    }
}
