//! Counters of one mount session, shown in `<mnt>/.matvisfs/stats.json`
//! (and, with `--metrics`, to Prometheus), and the latency histograms only
//! `--metrics` shows.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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
    /// Opens answered once their file was downloaded for them (a large
    /// file not cached, then passed through).
    pub opens_fetched: AtomicU64,
    /// Kernel requests answered over FUSE's io_uring rings (`--io-uring`).
    pub ring_requests: AtomicU64,
    /// Entries registered on those rings, over all queues: they grow past
    /// their first number while requests wait on the server.
    pub ring_entries: AtomicU64,
    /// Kept only where they are shown (`--metrics`): otherwise nothing is
    /// timed.
    latency: OnceLock<Latency>,
}

/// One label, e.g. `kind="texture"`.
pub type Label = [(&'static str, &'static str); 1];

/// Latency histograms, in seconds: HTTP requests by kind (the kinds of
/// `requests`), FUSE operations by opcode.
#[derive(Clone)]
pub struct Latency {
    pub http: Family<Label, Histogram>,
    pub fuse: Family<Label, Histogram>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // 1 ms to about a minute: a HEAD to a whole texture on a slow link.
            http: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 9))
            }),
            // 20 µs (answered from memory) to about 20 s (a download).
            fuse: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.00002, 4.0, 11))
            }),
        }
    }
}

impl Stats {
    pub fn request(&self, kind: &'static str, status: &'static str) {
        *self.requests.lock().entry((kind, status)).or_default() += 1;
    }

    /// Starts keeping latency histograms (once; later calls return the same).
    pub fn keep_latency(&self) -> &Latency {
        self.latency.get_or_init(Latency::default)
    }

    pub fn latency(&self) -> Option<&Latency> {
        self.latency.get()
    }

    /// An HTTP request of `kind` took `elapsed` (counted by [`Self::request`]).
    pub fn request_took(&self, kind: &'static str, elapsed: Duration) {
        if let Some(latency) = self.latency.get() {
            latency
                .http
                .get_or_create(&[("kind", kind)])
                .observe(elapsed.as_secs_f64());
        }
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
        cache["opens_fetched"] = json!(get(&self.opens_fetched));
        json!({
            "session": {
                "started_unix": since,
                "uptime_seconds": started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            },
            "requests": requests,
            "bytes": {"downloaded": get(&self.bytes_downloaded), "served": get(&self.bytes_served)},
            "cache": cache,
            "fuse": {
                "ring_requests": get(&self.ring_requests),
                "ring_entries": get(&self.ring_entries),
            },
            "tags": tags,
        })
    }
}
