//! The network behind a small trait: conditional GET into a sink, and HEAD,
//! of a [`Location`]. `http` talks to a real server, `local` reads a copy of
//! the dataset in a directory (`file://` base URLs), `offline` sends
//! nothing; `mock` (tests only) keeps files in memory. Where the dataset is
//! on a Hugging Face Hub, [`Remote::hub`] gives its API, guarded by
//! [`hub::HubGuard`] so that a server without one is asked once.

mod budget;
pub mod http;
pub mod hub;
pub mod local;
mod metered;
#[cfg(test)]
pub mod mock;
mod offline;
mod pauses;
mod redirects;
mod retry;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::digest::Sha256Digest;
use crate::format::{Location, Slice};
use crate::stats::Stats;

pub use budget::{Class, RateLimits};
pub use hub::{Hub, HubGuard};
pub use metered::Metered;
pub use offline::Offline;
pub use retry::RetryPolicy;

/// Whether two ETags name the same bytes: both strong and equal (a weak
/// ETag promises only equivalent content). The one ETag comparison of the
/// program.
pub fn strong_etag_match(a: &str, b: &str) -> bool {
    let strong = |s: &str| {
        let s = s.trim();
        (!s.starts_with("W/")).then(|| s.trim_matches('"').to_string())
    };
    matches!((strong(a), strong(b)), (Some(a), Some(b)) if a == b)
}

/// The longest a revalidation of a cached document waits for a server that
/// does not answer (or `--timeout`, when shorter), with no retry after a
/// network failure: opens wait for it, and the cached copy will do.
pub const CHECK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest a first contact (a document nothing is cached of: the
/// manifest of a tag, a catalog, the Hub's refs) waits for the server in
/// all, retries included, unless `--timeout` says otherwise: whoever
/// waits for it has nothing to look at meanwhile.
pub const FIRST_CONTACT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// After this long without an answer, a first contact says what it is
/// waiting for.
pub const WAITING_NOTICE: std::time::Duration = std::time::Duration::from_secs(3);

/// The line that says so.
pub fn waiting_line(url: &str) -> String {
    format!("waiting for {url} ({} s so far)", WAITING_NOTICE.as_secs())
}

/// What was remembered from a response, to ask the server "has it changed?".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// Metadata of a remote file, from response headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteMeta {
    /// `X-Linked-Etag` when the file is stored in LFS, else `ETag`.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// `X-Linked-Size`, else the `Content-Length` of the final response.
    pub size: Option<u64>,
    /// The content's sha256 when the server states it (`X-Linked-Etag` on
    /// Hugging Face is the LFS object's sha256).
    pub sha256: Option<Sha256Digest>,
    /// The commit the revision resolved to (`X-Repo-Commit` on the Hub).
    pub commit: Option<String>,
}

impl RemoteMeta {
    pub fn validators(&self) -> Validators {
        Validators {
            etag: self.etag.clone(),
            last_modified: self.last_modified.clone(),
        }
    }
}

#[derive(Debug)]
pub enum GetOutcome {
    /// The stored validator still matches: nothing was written to the sink.
    /// What the answer said (the revision's commit, new validators).
    NotModified(RemoteMeta),
    /// The whole body went to the sink.
    Fetched(RemoteMeta),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FetchError {
    #[error("not found on the server")]
    NotFound,
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("network error: {0}")]
    Network(String),
    #[error("offline mode: the network is not used")]
    Offline,
    #[error("{0}")]
    Rejected(String),
    #[error("cannot write to the cache: {0}")]
    Local(String),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("the server has no Hugging Face API")]
    NoApi,
}

impl FetchError {
    /// True when the server could not be asked at all, as opposed to having
    /// answered something we did not like.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Network(_) | FetchError::Offline)
    }
}

/// Receives a response body. `reset` is called before a retry starts over.
pub trait BodySink {
    fn reset(&mut self) -> Result<(), FetchError>;
    fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError>;
    /// The size the server announces, before the body: a sink with a
    /// limit refuses it here rather than after the download.
    fn announced(&mut self, _size: u64) -> Result<(), FetchError> {
        Ok(())
    }
}

/// The error for a body above a sink's limit.
pub fn too_large(size: u64, limit: u64, what: &str) -> FetchError {
    FetchError::Rejected(format!(
        "{size} bytes or more, above the {limit}-byte limit ({what})"
    ))
}

/// A body kept in memory (manifests, catalogs), refused past `limit` bytes.
pub struct MemorySink {
    pub bytes: Vec<u8>,
    limit: usize,
}

impl MemorySink {
    pub fn with_limit(limit: usize) -> Self {
        MemorySink {
            bytes: Vec::new(),
            limit,
        }
    }
}

impl BodySink for MemorySink {
    fn reset(&mut self) -> Result<(), FetchError> {
        self.bytes.clear();
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        let size = self.bytes.len() + chunk.len();
        if size > self.limit {
            return Err(too_large(size as u64, self.limit as u64, "documents"));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    fn announced(&mut self, size: u64) -> Result<(), FetchError> {
        if size > self.limit as u64 {
            return Err(too_large(size, self.limit as u64, "documents"));
        }
        // Room for the whole body at once: growing by doubling would hold
        // up to twice a large catalog while it arrives.
        self.bytes
            .reserve_exact((size as usize).saturating_sub(self.bytes.len()));
        Ok(())
    }
}

/// A dataset server laid out as `<base>/<revision>/<path>`, asked for
/// [`Location`]s: a path in revision `tag`, or a URL of its own.
pub trait Remote: Send + Sync {
    /// GET, conditional on `validators` when they are not empty.
    fn get(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError>;

    /// A [`Remote::get`] that checks a cached copy (a revalidation): the
    /// copy is served if it fails, so a server that does not answer is given
    /// up sooner than for a download ([`CHECK_PATIENCE`]).
    fn check(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.get(tag, file, validators, sink)
    }

    /// A [`Remote::get`] of a document nothing is cached of (a first
    /// contact): given up after [`FIRST_CONTACT_PATIENCE`] in all, or the
    /// `--timeout` given.
    fn get_first(
        &self,
        tag: &str,
        file: &Location,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.get(tag, file, &Validators::default(), sink)
    }

    /// Bytes `[offset, offset + length)` of a file, by one Range request,
    /// conditional on the file's `validators` when they are not empty. The
    /// metadata returned describes the slice, with the whole file's ETag.
    fn get_range(
        &self,
        tag: &str,
        file: &Location,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError>;

    /// Metadata without the body.
    fn head(&self, tag: &str, file: &Location) -> Result<RemoteMeta, FetchError>;

    /// The URL of a file, for messages.
    fn url(&self, tag: &str, file: &Location) -> String;

    /// What the cache keys this server's tags by: its base URL, normalised
    /// by [`origin_of`] (on the Hugging Face Hub the base URL names the
    /// endpoint and the repository both).
    fn origin(&self) -> String;

    /// The Hugging Face API beside the dataset: `None` where there is none,
    /// it is switched off, or the mount is offline.
    fn hub(&self) -> Option<&dyn Hub> {
        None
    }

    /// `--offline`: no request is ever sent.
    fn is_offline(&self) -> bool {
        false
    }

    /// A version of a tag begins: where a file redirects to may have
    /// changed, so redirects that HEADs saw before are not followed by a
    /// download.
    fn forget_redirects(&self) {}
}

/// The remote of one mount session: requests counted in `stats`, and the
/// Hub API probed once and switched off when it is absent or failing.
pub fn for_session(remote: Arc<dyn Remote>, stats: Arc<Stats>) -> Arc<dyn Remote> {
    Arc::new(HubGuard::new(Arc::new(Metered::new(remote, stats))))
}

/// A base URL as an origin: scheme, host and port (the default one
/// written out), and path, without a trailing slash, query or fragment.
pub fn origin_of(base: &str) -> String {
    let trimmed = base.trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(url) if url.has_host() => format!(
            "{}://{}:{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0),
            url.path().trim_end_matches('/')
        ),
        _ => trimmed.to_string(),
    }
}

#[cfg(test)]
mod origin_tests {
    use super::origin_of;

    #[test]
    fn origins_name_a_server_the_same_way_however_written() {
        assert_eq!(
            origin_of("https://huggingface.co/datasets/gerchowl/mat-vis/resolve/"),
            "https://huggingface.co:443/datasets/gerchowl/mat-vis/resolve"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/resolve"),
            "http://127.0.0.1:8080/resolve"
        );
        assert_eq!(origin_of("file:///srv/mat-vis"), "file:///srv/mat-vis");
    }
}

#[cfg(test)]
mod sink_tests {
    use super::{BodySink, FetchError, MemorySink};

    #[test]
    fn a_document_past_its_limit_is_refused_announced_or_not() {
        let mut sink = MemorySink::with_limit(10);
        assert!(matches!(sink.announced(11), Err(FetchError::Rejected(_))));
        sink.announced(10).unwrap();
        assert!(sink.bytes.capacity() >= 10);
        sink.write(b"0123456789").unwrap();
        assert!(matches!(sink.write(b"x"), Err(FetchError::Rejected(_))));
        assert_eq!(sink.bytes, b"0123456789");
        // A server that announces less than it sends is cut off all the same.
        let mut sink = MemorySink::with_limit(10);
        sink.announced(4).unwrap();
        assert!(matches!(sink.write(&[0; 11]), Err(FetchError::Rejected(_))));
    }
}
