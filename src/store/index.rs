//! The index of cached content: digest, size and last use of every object,
//! in least-recently-used order, shared by every process using the cache
//! through a log (`index.log`) that each of them appends to and reads back.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{ObjectStore, SharedLog};
use crate::digest::Sha256Digest;

/// A use is written to the log at most this often per object: enough for
/// eviction order across restarts, without a write per read.
const USE_LOG_INTERVAL: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Put {
        sha256: Sha256Digest,
        size: u64,
        at: u64,
    },
    Use {
        sha256: Sha256Digest,
        at: u64,
    },
    Del {
        sha256: Sha256Digest,
    },
}

impl Line {
    fn json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    /// Last use, in Unix seconds, as last written to the log.
    used_at: u64,
}

struct State {
    lru: LruCache<Sha256Digest, Entry>,
    total: u64,
    /// Lines in the log, to decide when to compact it.
    lines: usize,
}

impl State {
    fn new() -> Self {
        State {
            lru: LruCache::unbounded(),
            total: 0,
            lines: 0,
        }
    }

    fn apply(&mut self, line: &Line) {
        self.lines += 1;
        match *line {
            Line::Put { sha256, size, at } => {
                if let Some((_, old)) = self.lru.push(sha256, Entry { size, used_at: at }) {
                    self.total -= old.size;
                }
                self.total += size;
            }
            Line::Use { sha256, at } => {
                if let Some(entry) = self.lru.get_mut(&sha256) {
                    entry.used_at = entry.used_at.max(at);
                }
            }
            Line::Del { sha256 } => {
                if let Some(old) = self.lru.pop(&sha256) {
                    self.total -= old.size;
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<String> {
        // Oldest first, so that replaying restores the order.
        self.lru
            .iter()
            .rev()
            .map(|(sha256, e)| {
                Line::Put {
                    sha256: *sha256,
                    size: e.size,
                    at: e.used_at,
                }
                .json()
            })
            .collect()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
    log: SharedLog,
    state: Mutex<State>,
}

impl ContentIndex {
    /// Loads the index, reconciled with the files in `objects`.
    pub fn open(log: SharedLog, objects: &ObjectStore) -> (ContentIndex, Recovery) {
        let existed = log.exists();
        let mut lines = Vec::new();
        let mut damaged = 0usize;
        let read = log.read_new(|text| match serde_json::from_str::<Line>(text) {
            Ok(line) => lines.push(line),
            Err(_) => damaged += 1,
        });
        let index = ContentIndex {
            log,
            state: Mutex::new(State::new()),
        };
        let files = objects.list();
        let rebuild = read.is_err() || damaged > 0 || (!existed && !files.is_empty());
        let recovery = if rebuild {
            tracing::warn!(
                index = %index.log.path().display(),
                damaged_lines = damaged,
                "the cache index is missing or damaged: rebuilding it from the files, checking each"
            );
            index.rebuild(files)
        } else {
            {
                let mut state = index.state.lock();
                for line in &lines {
                    state.apply(line);
                }
            }
            index.reconcile(objects, files)
        };
        if recovery.corrupt > 0 {
            tracing::error!(
                count = recovery.corrupt,
                "removed cached files whose bytes did not match their digest"
            );
        }
        (index, recovery)
    }

    fn rebuild(&self, files: Vec<(Option<Sha256Digest>, std::path::PathBuf)>) -> Recovery {
        let mut recovery = Recovery {
            rebuilt: true,
            ..Recovery::default()
        };
        let mut found = Vec::new();
        for (digest, path) in files {
            let used_at = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            match (digest, ObjectStore::hash_file(&path)) {
                (Some(digest), Ok((actual, size))) if actual == digest => {
                    found.push((used_at, digest, size))
                }
                _ => {
                    recovery.corrupt += 1;
                    tracing::error!(path = %path.display(), "a cached file does not match its digest; removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort();
        let mut state = State::new();
        for (at, sha256, size) in found {
            state.apply(&Line::Put { sha256, size, at });
        }
        let lines = state.snapshot();
        state.lines = lines.len();
        *self.state.lock() = state;
        if let Err(e) = self.log.rewrite(lines) {
            tracing::warn!("cannot write the rebuilt cache index: {e}");
        }
        recovery
    }

    /// Adopts files the index does not know and forgets entries whose file
    /// is gone; checks only the adopted files.
    fn reconcile(
        &self,
        objects: &ObjectStore,
        files: Vec<(Option<Sha256Digest>, std::path::PathBuf)>,
    ) -> Recovery {
        let mut recovery = Recovery::default();
        let mut on_disk = HashSet::new();
        let mut adopted = Vec::new();
        for (digest, path) in files {
            let Some(digest) = digest else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            on_disk.insert(digest);
            if self.state.lock().lru.contains(&digest) {
                continue;
            }
            match ObjectStore::hash_file(&path) {
                Ok((actual, size)) if actual == digest => {
                    adopted.push(Line::Put {
                        sha256: digest,
                        size,
                        at: unix_now(),
                    });
                }
                _ => {
                    recovery.corrupt += 1;
                    tracing::error!(path = %path.display(), "a cached file does not match its digest; removed");
                    let _ = objects.remove(&digest);
                }
            }
        }
        let mut state = self.state.lock();
        let gone: Vec<Sha256Digest> = state
            .lru
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| !on_disk.contains(d))
            .collect();
        for digest in &gone {
            state.apply(&Line::Del { sha256: *digest });
        }
        for line in &adopted {
            state.apply(line);
        }
        recovery.adopted = adopted.len();
        recovery.dropped = gone.len();
        let changed = recovery.adopted + recovery.dropped > 0;
        if changed || state.lines > 2 * state.lru.len() + 1000 {
            let lines = state.snapshot();
            state.lines = lines.len();
            if let Err(e) = self.log.rewrite(lines) {
                tracing::warn!("cannot rewrite the cache index: {e}");
            }
        }
        recovery
    }

    /// Applies what other processes wrote since last time.
    pub fn catch_up(&self) {
        let mut fresh = Vec::new();
        let restarted = self.log.read_new(|text| {
            if let Ok(line) = serde_json::from_str::<Line>(text) {
                fresh.push(line);
            }
        });
        let mut state = self.state.lock();
        if matches!(restarted, Ok(true)) {
            *state = State::new();
        }
        for line in &fresh {
            state.apply(line);
        }
    }

    fn write(&self, lines: Vec<String>) {
        if let Err(e) = self.log.append_all(lines) {
            tracing::warn!("cannot write to the cache index: {e}");
        }
    }

    /// Records a new object and returns the objects to evict so that the
    /// total stays within `cap` (0: no cap), least recently used first. The
    /// new object goes too when it alone exceeds the cap.
    pub fn insert<R>(
        &self,
        sha256: Sha256Digest,
        size: u64,
        cap: u64,
        evict_and_install: impl FnOnce(&[(Sha256Digest, u64)]) -> R,
    ) -> R {
        // One thread or process at a time reads the others' lines, decides,
        // writes, removes the victims' files and installs the new one, so
        // that together they stay under the cap at every moment.
        let _serial = self
            .log
            .serial_lock()
            .inspect_err(|e| tracing::warn!("cannot lock the cache index: {e}"))
            .ok();
        evict_and_install(&self.insert_now(sha256, size, cap))
    }

    fn insert_now(&self, sha256: Sha256Digest, size: u64, cap: u64) -> Vec<(Sha256Digest, u64)> {
        self.catch_up();
        let put = Line::Put {
            sha256,
            size,
            at: unix_now(),
        };
        let mut victims = Vec::new();
        let mut lines = vec![put.json()];
        {
            let mut state = self.state.lock();
            state.apply(&put);
            while cap > 0 && state.total > cap {
                let Some((digest, entry)) = state.lru.pop_lru() else {
                    break;
                };
                state.total -= entry.size;
                state.lines += 1;
                victims.push((digest, entry.size));
                lines.push(Line::Del { sha256: digest }.json());
            }
        }
        self.write(lines);
        victims
    }

    /// Marks an object as just used.
    pub fn touch(&self, sha256: &Sha256Digest) {
        let now = unix_now();
        let mut state = self.state.lock();
        let Some(entry) = state.lru.get_mut(sha256) else {
            return;
        };
        if now.saturating_sub(entry.used_at) < USE_LOG_INTERVAL {
            return;
        }
        entry.used_at = now;
        state.lines += 1;
        drop(state);
        self.write(vec![
            Line::Use {
                sha256: *sha256,
                at: now,
            }
            .json(),
        ]);
    }

    pub fn remove(&self, digests: &[Sha256Digest]) {
        let mut lines = Vec::new();
        {
            let mut state = self.state.lock();
            for digest in digests {
                let del = Line::Del { sha256: *digest };
                state.apply(&del);
                lines.push(del.json());
            }
        }
        self.write(lines);
    }

    pub fn size_of(&self, sha256: &Sha256Digest) -> Option<u64> {
        self.state.lock().lru.peek(sha256).map(|e| e.size)
    }

    /// (files, bytes)
    pub fn totals(&self) -> (usize, u64) {
        let state = self.state.lock();
        (state.lru.len(), state.total)
    }

    /// Every entry, least recently used first.
    pub fn entries(&self) -> Vec<(Sha256Digest, u64)> {
        self.state
            .lock()
            .lru
            .iter()
            .rev()
            .map(|(d, e)| (*d, e.size))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_replay_to_the_same_order_and_total() {
        let mut state = State::new();
        let d = |b: &[u8]| Sha256Digest::of(b);
        state.apply(&Line::Put {
            sha256: d(b"a"),
            size: 10,
            at: 1,
        });
        state.apply(&Line::Put {
            sha256: d(b"b"),
            size: 20,
            at: 2,
        });
        state.apply(&Line::Put {
            sha256: d(b"c"),
            size: 30,
            at: 3,
        });
        state.apply(&Line::Use {
            sha256: d(b"a"),
            at: 4,
        });
        state.apply(&Line::Put {
            sha256: d(b"b"),
            size: 20,
            at: 5,
        });
        state.apply(&Line::Del { sha256: d(b"c") });
        assert_eq!(state.total, 30);
        let mut replayed = State::new();
        for line in state.snapshot() {
            replayed.apply(&serde_json::from_str(&line).unwrap());
        }
        let order = |s: &State| s.lru.iter().rev().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(order(&replayed), order(&state));
        assert_eq!(replayed.total, 30);
    }
}
