use std::collections::HashMap;
use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::SharedLog;
use crate::digest::Sha256Digest;

/// What is known about one file of a tag.
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

/// Per-file records of one tag: kept in memory, persisted as a shared log
/// of JSON lines (the last line for a path wins). The log is compacted when
/// it holds mostly superseded lines.
pub struct FileRecords {
    map: Mutex<HashMap<String, FileRecord>>,
    log: SharedLog,
}

impl FileRecords {
    pub fn open(path: PathBuf) -> Self {
        let log = SharedLog::new(path);
        let mut map = HashMap::new();
        let mut lines = 0usize;
        let read = log.read_new(|line| {
            lines += 1;
            if let Ok(record) = serde_json::from_str::<FileRecord>(line) {
                map.insert(record.path.clone(), record);
            }
        });
        if let Err(e) = read {
            tracing::warn!(path = %log.path().display(), "cannot read the file records: {e}");
        }
        let records = FileRecords {
            map: Mutex::new(map),
            log,
        };
        if lines > 2 * records.len() + 64 {
            let compacted = records
                .map
                .lock()
                .values()
                .filter_map(|r| serde_json::to_string(r).ok())
                .collect::<Vec<_>>();
            if let Err(e) = records.log.rewrite(compacted) {
                tracing::warn!(path = %records.log.path().display(), "cannot compact the file records: {e}");
            }
        }
        records
    }

    /// The highest generation any record carries.
    pub fn max_generation(&self) -> u64 {
        self.map
            .lock()
            .values()
            .map(|r| r.generation)
            .max()
            .unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, path: &str) -> Option<FileRecord> {
        self.map.lock().get(path).cloned()
    }

    /// Every record, for reports.
    pub fn all(&self) -> Vec<FileRecord> {
        self.map.lock().values().cloned().collect()
    }

    /// Records `record` in memory and appends it to the log. A log that
    /// cannot be written only costs requests in a later session.
    pub fn put(&self, record: FileRecord) {
        let Ok(line) = serde_json::to_string(&record) else {
            return;
        };
        self.map.lock().insert(record.path.clone(), record);
        if let Err(e) = self.log.append(&line) {
            tracing::warn!(path = %self.log.path().display(), "cannot append to the file records: {e}");
        }
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

    #[test]
    fn the_last_record_wins_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files.log");
        let records = FileRecords::open(path.clone());
        records.put(record("a/1k/m/color.png", 1, 10));
        records.put(record("a/1k/m/color.png", 2, 11));
        records.put(record("a/1k/m/normal.png", 1, 12));
        drop(records);
        let again = FileRecords::open(path.clone());
        assert_eq!(again.len(), 2);
        assert_eq!(
            again.get("a/1k/m/color.png"),
            Some(record("a/1k/m/color.png", 2, 11))
        );
    }

    #[test]
    fn a_torn_line_is_ignored_and_a_long_log_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files.log");
        let records = FileRecords::open(path.clone());
        for generation in 0..200 {
            records.put(record("x/1k/m/ao.png", generation, generation));
        }
        drop(records);
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"path\": \"x/1k/m/ao.png\", \"genera")
            .unwrap();
        let again = FileRecords::open(path.clone());
        assert_eq!(again.get("x/1k/m/ao.png").unwrap().generation, 199);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1, "compacted to one line per path");
    }
}
