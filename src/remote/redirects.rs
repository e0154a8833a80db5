//! Redirects seen by a HEAD, kept briefly so that the download that usually
//! follows (a `stat` then a read) goes straight to the CDN: one request to
//! the dataset per file instead of two, which halves the latency of a cold
//! read and the use of Hugging Face's resolve rate limit.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use url::Url;

use super::RemoteMeta;

/// Signed CDN URLs live about an hour; a read follows its stat within
/// seconds. Past this, asking the dataset again is cheap and safe.
const REUSE_FOR: Duration = Duration::from_secs(60);
const CAPACITY: usize = 4096;

/// Where a dataset URL redirected to, with what the redirect said.
#[derive(Debug, Clone)]
pub struct Hop {
    pub target: Url,
    pub linked: RemoteMeta,
}

/// Redirects with when they were seen and the epoch their HEAD began in.
pub struct RecentRedirects {
    entries: Mutex<LruCache<Url, (Hop, Instant, u64)>>,
    /// Bumped when a version of a tag begins: a redirect a HEAD saw before
    /// may point to the bytes of the version before, and is not used.
    epoch: AtomicU64,
}

impl Default for RecentRedirects {
    fn default() -> Self {
        RecentRedirects {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(CAPACITY).expect("non-zero"),
            )),
            epoch: AtomicU64::new(0),
        }
    }
}

impl RecentRedirects {
    /// Taken before a HEAD is sent, and given to [`RecentRedirects::remember`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Redirects seen by HEADs that began before now are not used.
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// `epoch`: when the HEAD that saw it began.
    pub fn remember(&self, from: Url, hop: Hop, epoch: u64) {
        self.entries.lock().put(from, (hop, Instant::now(), epoch));
    }

    /// The fresh redirect of `from`, used once: a second download of the
    /// same file asks the dataset again.
    pub fn take(&self, from: &Url) -> Option<Hop> {
        self.take_at(from, Instant::now())
    }

    fn take_at(&self, from: &Url, now: Instant) -> Option<Hop> {
        let (hop, seen, epoch) = self.entries.lock().pop(from)?;
        (now.saturating_duration_since(seen) < REUSE_FOR && epoch == self.epoch()).then_some(hop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_redirect_is_used_once_and_only_while_fresh() {
        let redirects = RecentRedirects::default();
        let from = url("https://hf.example/resolve/v1/a.png");
        let hop = Hop {
            target: url("https://cdn.example/a?sig=1"),
            linked: RemoteMeta {
                size: Some(5),
                ..RemoteMeta::default()
            },
        };
        redirects.remember(from.clone(), hop.clone(), redirects.epoch());
        assert_eq!(redirects.take(&from).unwrap().target, hop.target);
        assert!(redirects.take(&from).is_none(), "used once");
        redirects.remember(from.clone(), hop.clone(), redirects.epoch());
        let later = Instant::now() + REUSE_FOR + Duration::from_secs(1);
        assert!(redirects.take_at(&from, later).is_none(), "stale");
        // Seen by a HEAD that began before a new version: not used.
        let began = redirects.epoch();
        redirects.forget_all();
        redirects.remember(from.clone(), hop.clone(), began);
        assert!(redirects.take(&from).is_none(), "from the version before");
        redirects.remember(from.clone(), hop, redirects.epoch());
        assert!(redirects.take(&from).is_some());
    }
}
