//! Counts requests by kind and outcome, and bytes received, for the
//! session statistics.

use std::sync::Arc;
use std::time::Instant;

use super::{BodySink, FetchError, GetOutcome, Hub, Remote, RemoteMeta, Validators};
use crate::format::hub::TreeListing;
use crate::format::{Location, MANIFEST_FILE, Slice};
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

fn outcome(result: &Result<GetOutcome, FetchError>) -> &'static str {
    match result {
        Ok(GetOutcome::NotModified(_)) => "304",
        Ok(GetOutcome::Fetched(_)) => "200",
        Err(e) => status(e),
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

impl Metered {
    /// Runs a download through a byte-counting sink and records its outcome.
    fn counted(
        &self,
        kind: &'static str,
        sink: &mut dyn BodySink,
        download: impl FnOnce(&mut dyn BodySink) -> Result<GetOutcome, FetchError>,
    ) -> Result<GetOutcome, FetchError> {
        let mut counting = Counting {
            inner: sink,
            bytes: 0,
        };
        let started = Instant::now();
        let result = download(&mut counting);
        self.stats.request_took(kind, started.elapsed());
        Stats::add(&self.stats.bytes_downloaded, counting.bytes);
        self.stats.request(kind, outcome(&result));
        result
    }
}

impl Remote for Metered {
    fn get(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.counted(kind(file), sink, |counting| {
            self.inner.get(tag, file, validators, counting)
        })
    }

    fn check(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.counted(kind(file), sink, |counting| {
            self.inner.check(tag, file, validators, counting)
        })
    }

    fn get_first(
        &self,
        tag: &str,
        file: &Location,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.counted(kind(file), sink, |counting| {
            self.inner.get_first(tag, file, counting)
        })
    }

    fn get_range(
        &self,
        tag: &str,
        file: &Location,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.counted("texture", sink, |counting| {
            self.inner.get_range(tag, file, slice, validators, counting)
        })
    }

    fn head(&self, tag: &str, file: &Location) -> Result<RemoteMeta, FetchError> {
        let started = Instant::now();
        let result = self.inner.head(tag, file);
        let kind = if file.key().ends_with("/.tier_complete") {
            "tier_check"
        } else {
            "size"
        };
        self.stats.request_took(kind, started.elapsed());
        self.stats
            .request(kind, result.as_ref().map_or_else(status, |_| "200"));
        result
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        self.inner.url(tag, file)
    }

    fn origin(&self) -> String {
        self.inner.origin()
    }

    fn hub(&self) -> Option<&dyn Hub> {
        self.inner.hub().map(|_| self as &dyn Hub)
    }

    fn is_offline(&self) -> bool {
        self.inner.is_offline()
    }

    fn forget_redirects(&self) {
        self.inner.forget_redirects();
    }
}

/// API calls, counted as `api`; a call that found no API is no request.
impl Hub for Metered {
    fn release_refs(&self) -> Result<Vec<String>, FetchError> {
        let started = Instant::now();
        let result = self.inner.hub().ok_or(FetchError::NoApi)?.release_refs();
        if !matches!(result, Err(FetchError::NoApi)) {
            self.stats.request_took("api", started.elapsed());
            self.stats
                .request("api", result.as_ref().map_or_else(status, |_| "200"));
        }
        result
    }

    fn tree(&self, revision: &str, dir: &str) -> Result<TreeListing, FetchError> {
        let started = Instant::now();
        let result = self
            .inner
            .hub()
            .ok_or(FetchError::NoApi)?
            .tree(revision, dir);
        if !matches!(result, Err(FetchError::NoApi)) {
            // All its pages, as one observation.
            self.stats.request_took("api", started.elapsed());
        }
        match &result {
            Ok(listing) => (0..listing.pages).for_each(|_| self.stats.request("api", "200")),
            Err(FetchError::NoApi) => {}
            Err(e) => self.stats.request("api", status(e)),
        }
        result
    }
}
