//! Counts requests by kind and outcome, and bytes received, for the
//! session statistics.

use std::sync::Arc;

use super::{BodySink, FetchError, GetOutcome, Remote, RemoteMeta, Validators};
use crate::format::MANIFEST_FILE;
use crate::stats::Stats;

pub struct Metered {
    inner: Arc<dyn Remote>,
    stats: Arc<Stats>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Remote>, stats: Arc<Stats>) -> Self {
        Metered { inner, stats }
    }
}

fn kind(path: &str) -> &'static str {
    if path == MANIFEST_FILE {
        "manifest"
    } else if path.ends_with("/.tier_complete") {
        "tier_check"
    } else if path.ends_with(".json") {
        "document"
    } else {
        "texture"
    }
}

fn status(error: &FetchError) -> &'static str {
    match error {
        FetchError::NotFound => "404",
        FetchError::Status(500..=599) => "5xx",
        FetchError::Status(_) => "4xx",
        FetchError::Network(_)
        | FetchError::Offline
        | FetchError::Rejected(_)
        | FetchError::Local(_)
        | FetchError::TooManyRedirects => "error",
    }
}

struct Counting<'a> {
    inner: &'a mut dyn BodySink,
    bytes: u64,
}

impl BodySink for Counting<'_> {
    fn reset(&mut self) -> Result<(), FetchError> {
        self.inner.reset()
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.bytes += chunk.len() as u64;
        self.inner.write(chunk)
    }

    fn announced(&mut self, size: u64) -> Result<(), FetchError> {
        self.inner.announced(size)
    }
}

impl Remote for Metered {
    fn get(
        &self,
        tag: &str,
        path: &str,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let mut counting = Counting {
            inner: sink,
            bytes: 0,
        };
        let result = self.inner.get(tag, path, validators, &mut counting);
        Stats::add(&self.stats.bytes_downloaded, counting.bytes);
        let outcome = match &result {
            Ok(GetOutcome::NotModified) => "304",
            Ok(GetOutcome::Fetched(_)) => "200",
            Err(e) => status(e),
        };
        self.stats.request(kind(path), outcome);
        result
    }

    fn head(&self, tag: &str, path: &str) -> Result<RemoteMeta, FetchError> {
        let result = self.inner.head(tag, path);
        let kind = if path.ends_with("/.tier_complete") {
            "tier_check"
        } else {
            "size"
        };
        self.stats
            .request(kind, result.as_ref().map_or_else(status, |_| "200"));
        result
    }

    fn url(&self, tag: &str, path: &str) -> String {
        self.inner.url(tag, path)
    }
}
