//! Counts requests by kind and outcome, and bytes received, for the
//! session statistics.

use std::sync::Arc;
use std::time::Instant;

use super::{Answer, BodySink, FetchError, GetOutcome, Layer, Remote, Request};
use crate::format::{Location, MANIFEST_FILE};
use crate::stats::Stats;

/// A [`super::Layer`] that counts what passes through it.
pub struct Metered {
    stats: Arc<Stats>,
}

impl Metered {
    pub fn new(stats: Arc<Stats>) -> Self {
        Metered { stats }
    }
}

fn kind(file: &Location) -> &'static str {
    let path = file.key();
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
        | FetchError::TooManyRedirects
        | FetchError::NoApi => "error",
    }
}

fn outcome(result: &Result<Answer, FetchError>) -> &'static str {
    match result {
        Ok(Answer::Body(GetOutcome::NotModified(_))) => "304",
        Ok(_) => "200",
        Err(e) => status(e),
    }
}

/// What the statistics count a request as.
fn kind_of(request: &Request<'_>) -> &'static str {
    match request {
        Request::Get { file, .. } => kind(file),
        Request::Range { .. } => "texture",
        Request::Head { file, .. } if file.key().ends_with("/.tier_complete") => "tier_check",
        Request::Head { .. } | Request::FirstBytes { .. } => "size",
        Request::Refs | Request::Tree { .. } => "api",
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

    fn write_shared(&mut self, chunk: bytes::Bytes) -> Result<(), FetchError> {
        self.bytes += chunk.len() as u64;
        self.inner.write_shared(chunk)
    }

    fn announced(&mut self, size: u64) -> Result<(), FetchError> {
        self.inner.announced(size)
    }
}

/// Every request is timed and counted by kind and outcome, the bytes of its
/// body counted as they arrive. An API call that found no API is no
/// request; a tree listing counts each of its pages.
impl Layer for Metered {
    fn send(
        &self,
        inner: &dyn Remote,
        request: Request<'_>,
        sink: &mut dyn BodySink,
    ) -> Result<Answer, FetchError> {
        let kind = kind_of(&request);
        let mut counting = Counting {
            inner: sink,
            bytes: 0,
        };
        let started = Instant::now();
        let result = inner.send(request, &mut counting);
        if kind == "api" && matches!(result, Err(FetchError::NoApi)) {
            return result;
        }
        self.stats.request_took(kind, started.elapsed());
        Stats::add(&self.stats.bytes_downloaded, counting.bytes);
        match &result {
            Ok(Answer::Tree(listing)) => {
                (0..listing.pages).for_each(|_| self.stats.request(kind, "200"));
            }
            result => self.stats.request(kind, outcome(result)),
        }
        result
    }
}
