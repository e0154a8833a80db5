//! The network behind a small trait: conditional GET into a sink, and HEAD,
//! of a [`Location`]. `http` talks to a real server, `local` reads a copy of
//! the dataset in a directory (`file://` base URLs), `offline` sends
//! nothing; `mock` (tests only) keeps files in memory. Where the dataset is
//! on a Hugging Face Hub, `dyn Remote::hub` gives its API, guarded by
//! [`hub::HubGuard`] so that a server without one is asked once. Every
//! request is one [`Request`] value given to [`Remote::send`]: a layer in
//! front of a server ([`Layer`]: metering, the Hub guard) handles each kind
//! in one method, and callers ask through typed functions.

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

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::digest::Sha256Digest;
use crate::format::hub::TreeListing;
use crate::format::{Location, Slice};
use crate::stats::Stats;

pub use budget::{Class, RateLimits};
pub use hub::HubGuard;
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
    /// [`BodySink::write`] of a chunk the sink may keep without a copy (a
    /// body as it came off the connection).
    fn write_shared(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        self.write(&chunk)
    }
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

/// What a remote is asked: one value per request, so that a layer in front
/// of the server (metering, the Hub guard) sees every kind in one place.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// A whole file into the sink, conditional on `validators` when they
    /// are not empty, waited for as `patience` says.
    Get {
        tag: &'a str,
        file: &'a Location,
        validators: &'a Validators,
        patience: Patience,
    },
    /// Bytes `[offset, offset + length)` of a file into the sink, by one
    /// Range request, conditional on the file's `validators` when they are
    /// not empty. The metadata answered describes the slice, with the whole
    /// file's ETag.
    Range {
        tag: &'a str,
        file: &'a Location,
        slice: Slice,
        validators: &'a Validators,
    },
    /// Metadata without the body.
    Head { tag: &'a str, file: &'a Location },
    /// Metadata and, when the whole file is at most `length` bytes, its
    /// body into the sink: one GET of its first `length` bytes in place of
    /// a HEAD, for a file likely that small. A longer file's bytes are not
    /// read (and none reach the sink); its size is the answer's.
    FirstBytes {
        tag: &'a str,
        file: &'a Location,
        length: u64,
    },
    /// The Hub API: the dataset's revisions that look like releases.
    Refs,
    /// The Hub API: every file below `dir` of `revision` (a tag, or the
    /// commit it resolved to), with size and hash, all pages within bounds.
    /// [`FetchError::NotFound`]: no such directory.
    Tree { revision: &'a str, dir: &'a str },
}

/// How long a [`Request::Get`] is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// A download: retried as the retry policy says.
    Download,
    /// A check of a cached copy (a revalidation): the copy is served if it
    /// fails, so a server that does not answer is given up sooner
    /// ([`CHECK_PATIENCE`]).
    Check,
    /// A document nothing is cached of (a first contact): given up after
    /// [`FIRST_CONTACT_PATIENCE`] in all, or the `--timeout` given.
    FirstContact,
}

/// What a [`Request`] is answered with, one kind per kind of request.
#[derive(Debug)]
pub enum Answer {
    /// Of a [`Request::Get`] or a [`Request::Range`].
    Body(GetOutcome),
    /// Of a [`Request::Head`].
    Meta(RemoteMeta),
    /// Of a [`Request::FirstBytes`]: whether the whole body went to the sink.
    FirstBytes { meta: RemoteMeta, whole: bool },
    /// Of [`Request::Refs`].
    Refs(Vec<String>),
    /// Of a [`Request::Tree`].
    Tree(TreeListing),
}

/// A dataset server laid out as `<base>/<revision>/<path>`, asked for
/// [`Location`]s: a path in revision `tag`, or a URL of its own. Callers ask
/// through the typed functions of `dyn Remote` ([`Remote::send`] under them).
pub trait Remote: Send + Sync {
    /// Sends `request`; a body goes to `sink` (requests without one leave
    /// it untouched).
    fn send(&self, request: Request<'_>, sink: &mut dyn BodySink) -> Result<Answer, FetchError>;

    /// The URL of a file, for messages.
    fn url(&self, tag: &str, file: &Location) -> String;

    /// What the cache keys this server's tags by: its base URL, normalised
    /// by [`origin_of`] (on the Hugging Face Hub the base URL names the
    /// endpoint and the repository both).
    fn origin(&self) -> String;

    /// Whether the Hugging Face API beside the dataset may be asked: not
    /// where there is none, it is switched off, or the mount is offline.
    fn has_hub(&self) -> bool {
        false
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

/// The typed requests, for callers.
impl dyn Remote + '_ {
    /// GET, conditional on `validators` when they are not empty.
    pub fn get(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.get_with(tag, file, validators, Patience::Download, sink)
    }

    /// A [`Patience::Check`] of a cached copy.
    pub fn check(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.get_with(tag, file, validators, Patience::Check, sink)
    }

    /// A [`Patience::FirstContact`] GET of a document nothing is cached of.
    pub fn get_first(
        &self,
        tag: &str,
        file: &Location,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let none = Validators::default();
        self.get_with(tag, file, &none, Patience::FirstContact, sink)
    }

    fn get_with(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        patience: Patience,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let request = Request::Get {
            tag,
            file,
            validators,
            patience,
        };
        match self.send(request, sink)? {
            Answer::Body(outcome) => Ok(outcome),
            other => Err(wrong_answer(&request, &other)),
        }
    }

    /// A [`Request::Range`].
    pub fn get_range(
        &self,
        tag: &str,
        file: &Location,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let request = Request::Range {
            tag,
            file,
            slice,
            validators,
        };
        match self.send(request, sink)? {
            Answer::Body(outcome) => Ok(outcome),
            other => Err(wrong_answer(&request, &other)),
        }
    }

    /// Metadata without the body.
    pub fn head(&self, tag: &str, file: &Location) -> Result<RemoteMeta, FetchError> {
        let request = Request::Head { tag, file };
        match self.send(request, &mut NoBody)? {
            Answer::Meta(meta) => Ok(meta),
            other => Err(wrong_answer(&request, &other)),
        }
    }

    /// A [`Request::FirstBytes`]: the metadata, and whether the whole body
    /// went to the sink.
    pub fn first_bytes(
        &self,
        tag: &str,
        file: &Location,
        length: u64,
        sink: &mut dyn BodySink,
    ) -> Result<(RemoteMeta, bool), FetchError> {
        let request = Request::FirstBytes { tag, file, length };
        match self.send(request, sink)? {
            Answer::FirstBytes { meta, whole } => Ok((meta, whole)),
            other => Err(wrong_answer(&request, &other)),
        }
    }

    /// The Hugging Face API beside the dataset: `None` where it may not be
    /// asked ([`Remote::has_hub`]).
    pub fn hub(&self) -> Option<Hub<'_>> {
        self.has_hub().then_some(Hub(self))
    }
}

/// The calls only a Hugging Face Hub answers, of a remote that has them.
#[derive(Clone, Copy)]
pub struct Hub<'a>(&'a dyn Remote);

impl Hub<'_> {
    /// A [`Request::Refs`].
    pub fn release_refs(&self) -> Result<Vec<String>, FetchError> {
        match self.0.send(Request::Refs, &mut NoBody)? {
            Answer::Refs(refs) => Ok(refs),
            other => Err(wrong_answer(&Request::Refs, &other)),
        }
    }

    /// A [`Request::Tree`].
    pub fn tree(&self, revision: &str, dir: &str) -> Result<TreeListing, FetchError> {
        let request = Request::Tree { revision, dir };
        match self.0.send(request, &mut NoBody)? {
            Answer::Tree(listing) => Ok(listing),
            other => Err(wrong_answer(&request, &other)),
        }
    }
}

/// An answer of another kind than the request's: a layer's mistake, never
/// the server's.
fn wrong_answer(request: &Request<'_>, answer: &Answer) -> FetchError {
    if cfg!(debug_assertions) {
        panic!("{request:?} was answered with {answer:?}");
    }
    FetchError::Rejected(format!(
        "{request:?} was answered with another kind of answer"
    ))
}

/// The sink of a request without a body.
struct NoBody;

impl BodySink for NoBody {
    fn reset(&mut self) -> Result<(), FetchError> {
        Ok(())
    }

    fn write(&mut self, _: &[u8]) -> Result<(), FetchError> {
        Err(FetchError::Rejected(
            "a body where none was asked for".into(),
        ))
    }
}

/// A layer in front of a remote ([`Layered`]): sees every request, and
/// leaves what it does not change (URLs, origin, offline, redirects) to the
/// remote behind it.
pub trait Layer: Send + Sync {
    fn send(
        &self,
        inner: &dyn Remote,
        request: Request<'_>,
        sink: &mut dyn BodySink,
    ) -> Result<Answer, FetchError>;

    /// [`Remote::has_hub`], with the remote behind it.
    fn has_hub(&self, inner: &dyn Remote) -> bool {
        inner.has_hub()
    }
}

/// A [`Layer`] over a remote, as a remote.
pub struct Layered<L> {
    pub layer: L,
    inner: Arc<dyn Remote>,
}

impl<L: Layer> Layered<L> {
    pub fn new(layer: L, inner: Arc<dyn Remote>) -> Self {
        Layered { layer, inner }
    }
}

impl<L: Layer> Remote for Layered<L> {
    fn send(&self, request: Request<'_>, sink: &mut dyn BodySink) -> Result<Answer, FetchError> {
        self.layer.send(&*self.inner, request, sink)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        self.inner.url(tag, file)
    }

    fn origin(&self) -> String {
        self.inner.origin()
    }

    fn has_hub(&self) -> bool {
        self.layer.has_hub(&*self.inner)
    }

    fn is_offline(&self) -> bool {
        self.inner.is_offline()
    }

    fn forget_redirects(&self) {
        self.inner.forget_redirects();
    }
}

/// A remote that answers from a server of its own (HTTP, a local copy, the
/// mock): one method per kind of request, made into [`Remote::send`] by
/// [`serve`].
trait Server {
    /// GET, conditional on `validators` when they are not empty.
    fn get(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError>;

    /// A [`Patience::Check`] GET.
    fn check(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.get(tag, file, validators, sink)
    }

    /// A [`Patience::FirstContact`] GET.
    fn get_first(
        &self,
        tag: &str,
        file: &Location,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        self.get(tag, file, &Validators::default(), sink)
    }

    /// A [`Request::Range`].
    fn get_range(
        &self,
        tag: &str,
        file: &Location,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError>;

    /// A [`Request::Head`].
    fn head(&self, tag: &str, file: &Location) -> Result<RemoteMeta, FetchError>;

    /// A [`Request::FirstBytes`]; a server that cannot ask for part of a
    /// file answers with a HEAD's metadata.
    fn first_bytes(
        &self,
        tag: &str,
        file: &Location,
        _length: u64,
        _sink: &mut dyn BodySink,
    ) -> Result<(RemoteMeta, bool), FetchError> {
        Ok((self.head(tag, file)?, false))
    }

    /// [`Request::Refs`]: only a Hub answers.
    fn release_refs(&self) -> Result<Vec<String>, FetchError> {
        Err(FetchError::NoApi)
    }

    /// A [`Request::Tree`]: only a Hub answers.
    fn tree(&self, _revision: &str, _dir: &str) -> Result<TreeListing, FetchError> {
        Err(FetchError::NoApi)
    }
}

/// [`Remote::send`] of a [`Server`].
fn serve(
    server: &impl Server,
    request: Request<'_>,
    sink: &mut dyn BodySink,
) -> Result<Answer, FetchError> {
    match request {
        Request::Get {
            tag,
            file,
            validators,
            patience,
        } => match patience {
            Patience::Download => server.get(tag, file, validators, sink),
            Patience::Check => server.check(tag, file, validators, sink),
            Patience::FirstContact => server.get_first(tag, file, sink),
        }
        .map(Answer::Body),
        Request::Range {
            tag,
            file,
            slice,
            validators,
        } => server
            .get_range(tag, file, slice, validators, sink)
            .map(Answer::Body),
        Request::Head { tag, file } => server.head(tag, file).map(Answer::Meta),
        Request::FirstBytes { tag, file, length } => server
            .first_bytes(tag, file, length, sink)
            .map(|(meta, whole)| Answer::FirstBytes { meta, whole }),
        Request::Refs => server.release_refs().map(Answer::Refs),
        Request::Tree { revision, dir } => server.tree(revision, dir).map(Answer::Tree),
    }
}

/// `<base>/<tag>/<path>`, or the location's own URL: the URL of a file
/// under a base that is not escaped (a local copy, an offline mount).
fn url_under(base: &str, tag: &str, file: &Location) -> String {
    match file {
        Location::Revision(path) => format!("{base}/{tag}/{path}"),
        Location::Absolute(url) => url.to_string(),
    }
}

/// The remote of one mount session: requests counted in `stats`, and the
/// Hub API probed once and switched off when it is absent or failing.
pub fn for_session(remote: Arc<dyn Remote>, stats: Arc<Stats>) -> Arc<dyn Remote> {
    let metered: Arc<dyn Remote> = Arc::new(Layered::new(Metered::new(stats), remote));
    Arc::new(Layered::new(HubGuard::default(), metered))
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
