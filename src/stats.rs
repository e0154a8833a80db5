//! Counters of one mount session, shown in `<mnt>/.matvisfs/stats.json`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Stats {
    /// (kind, status) → count; kinds: manifest, document, size, tier_check,
    /// texture; statuses: 200, 206, 304, 404, 4xx, 5xx, error.
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub bytes_downloaded: AtomicU64,
    pub bytes_served: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub dedupe_hits: AtomicU64,
}

impl Stats {
    pub fn request(&self, kind: &'static str, status: &'static str) {
        *self.requests.lock().entry((kind, status)).or_default() += 1;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn requests(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.requests.lock().clone()
    }

    /// The JSON document; `cache` and `tags` come from their owners.
    pub fn render(&self, started: SystemTime, cache: Value, tags: Value) -> Value {
        let mut requests: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for ((kind, status), n) in self.requests() {
            requests.entry(kind).or_default().insert(status, n);
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let since = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut cache = cache;
        cache["hits"] = json!(get(&self.cache_hits));
        cache["misses"] = json!(get(&self.cache_misses));
        cache["dedupe_hits"] = json!(get(&self.dedupe_hits));
        json!({
            "session": {
                "started_unix": since,
                "uptime_seconds": started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            },
            "requests": requests,
            "bytes": {"downloaded": get(&self.bytes_downloaded), "served": get(&self.bytes_served)},
            "cache": cache,
            "tags": tags,
        })
    }
}
