//! The reqwest implementation of [`Remote`]: one pooled client shared by all
//! threads, redirects followed by hand (so that the `X-Linked-*` headers of a
//! Hugging Face 302 are seen), bounded time per attempt, retries with backoff
//! for transient failures, and a short "server is down" memory so that a dead
//! server costs one quick failure per request instead of a full retry cycle.
//! A HEAD's redirect is remembered so the download after it skips a hop.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{
    CONTENT_LENGTH, ETAG, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION,
    RETRY_AFTER,
};
use url::Url;

use super::budget::{Class, RateBudget, RateLimits};
use super::redirects::{Hop, RecentRedirects};
use super::retry::{RetryPolicy, parse_ratelimit_reset, parse_retry_after};
use super::{BodySink, FetchError, GetOutcome, Remote, RemoteMeta, Validators};
use crate::digest::Sha256Digest;
use crate::format::Slice;
use crate::format::hub::TreeListing;

mod hub;
mod range;

pub use hub::hub_api_root;

const MAX_REDIRECTS: usize = 10;
/// After a request fails for want of a connection, later requests skip their
/// retries for this long.
const DOWN_MEMORY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub base: String,
    /// Bound on one attempt: connecting, waiting for headers and the body.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Sent as a bearer token, only to the base URL's host and only over HTTPS.
    pub token: Option<Secret>,
    /// Extra trusted certificate authorities (PEM), beside the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Use the Hugging Face API when the base URL is in the Hub's layout.
    pub hub_api: bool,
    /// Pacing of requests to a Hugging Face Hub.
    pub limits: RateLimits,
}

impl HttpSettings {
    pub fn new(base: &str, timeout: Duration, retry: RetryPolicy) -> Self {
        HttpSettings {
            base: base.into(),
            timeout,
            retry,
            token: None,
            ca_pem: None,
            hub_api: true,
            limits: RateLimits::default(),
        }
    }
}

/// A credential: never shown by `Debug`, so it cannot reach a log.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub struct HttpRemote {
    client: Client,
    base: Url,
    timeout: Duration,
    retry: RetryPolicy,
    token: Option<Secret>,
    down_until: Mutex<Option<Instant>>,
    redirects: RecentRedirects,
    /// The Hub API's root for this dataset, when the base URL has the
    /// Hub's layout; the Hub's limits then apply, API calls or not.
    hub: Option<Url>,
    /// Whether API calls may be made (`--no-hf-api` says no).
    use_api: bool,
    budget: RateBudget,
}

enum Failure {
    /// Worth another attempt after a wait (the server may say how long).
    Transient(FetchError, Option<Duration>),
    Final(FetchError),
}

impl HttpRemote {
    pub fn new(settings: &HttpSettings) -> Result<Self, String> {
        let mut base = Url::parse(settings.base.trim_end_matches('/'))
            .map_err(|e| format!("invalid base URL {:?}: {e}", settings.base))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(format!(
                "base URL {:?} must be an http:// or https:// URL",
                settings.base
            ));
        }
        base.set_query(None);
        base.set_fragment(None);
        let mut builder = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(32)
            .user_agent(concat!("matvisfs/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("cannot read the CA certificates: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        if settings.token.is_some() && base.scheme() != "https" {
            tracing::warn!("a token is set but the base URL is not HTTPS: it will not be sent");
        }
        Ok(HttpRemote {
            hub: hub_api_root(&base),
            use_api: settings.hub_api,
            client,
            base,
            timeout: settings.timeout,
            retry: settings.retry,
            token: settings.token.clone(),
            down_until: Mutex::new(None),
            redirects: RecentRedirects::default(),
            budget: RateBudget::new(settings.limits),
        })
    }

    /// The token goes only to the dataset's own host, over HTTPS: never to a
    /// CDN a redirect points to, never in clear text.
    fn token_for(&self, url: &Url) -> Option<&str> {
        let token = self.token.as_ref()?;
        let secure = url.scheme() == "https" && self.base.scheme() == "https";
        (secure && self.on_base_host(url)).then_some(token.0.as_str())
    }

    fn on_base_host(&self, url: &Url) -> bool {
        url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    fn authorize(&self, request: RequestBuilder, url: &Url) -> RequestBuilder {
        match self.token_for(url) {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn file_url(&self, tag: &str, path: &str) -> Url {
        if crate::format::is_url(path) {
            if let Ok(url) = Url::parse(path) {
                return url;
            }
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL can be a base")
            .pop_if_empty()
            .push(tag)
            .extend(path.split('/'));
        url
    }

    /// Whether `url` is on the dataset's host when that is a Hugging Face
    /// Hub, whose rate limits apply.
    fn is_hub(&self, url: &Url) -> bool {
        self.hub.is_some() && self.on_base_host(url)
    }

    /// Sends a request, first waiting for its turn under the Hub's limits.
    fn send(&self, request: RequestBuilder, url: &Url, class: Class) -> Result<Response, Failure> {
        if self.is_hub(url) {
            self.budget
                .acquire(class, self.retry.max_wait)
                .map_err(Failure::Final)?;
        }
        request
            .send()
            .map_err(|e| Failure::Transient(network_error(&e), None))
    }

    /// The failure for an unwanted status; a 429 from the Hub also holds
    /// back every other request to it.
    fn refused(&self, url: &Url, status: StatusCode, headers: &HeaderMap) -> Failure {
        let failure = classify_status(status, headers);
        if status == StatusCode::TOO_MANY_REQUESTS && self.is_hub(url) {
            let asked = match &failure {
                Failure::Transient(_, Some(wait)) => *wait,
                _ => self.retry.delay(0, None),
            };
            self.budget.pause(asked.min(self.retry.max_wait));
        }
        failure
    }

    /// Runs `attempt` until it succeeds, fails for good, or retries run out.
    fn with_retries<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, FetchError> {
        let recently_down = self.down_until.lock().is_some_and(|t| Instant::now() < t);
        let retries = if recently_down {
            0
        } else {
            self.retry.max_retries
        };
        let mut retry = 0;
        loop {
            match attempt() {
                Ok(value) => {
                    *self.down_until.lock() = None;
                    return Ok(value);
                }
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Transient(error, server_asked)) => {
                    if retry >= retries {
                        if matches!(error, FetchError::Network(_)) {
                            *self.down_until.lock() = Some(Instant::now() + DOWN_MEMORY);
                        }
                        return Err(error);
                    }
                    let wait = self.retry.delay(retry, server_asked);
                    tracing::debug!(%error, ?wait, retry, "transient failure, retrying");
                    std::thread::sleep(wait);
                    retry += 1;
                }
            }
        }
    }

    /// One GET of `start`, following redirects; `linked` is what a
    /// redirect to `start` already said.
    fn get_once(
        &self,
        start: &Url,
        mut linked: RemoteMeta,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, Failure> {
        sink.reset().map_err(Failure::Final)?;
        if let Some(size) = linked.size {
            sink.announced(size).map_err(Failure::Final)?;
        }
        let began = Instant::now();
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.authorize(self.client.get(url.clone()), &url);
            if let Some(etag) = &validators.etag {
                request = request.header(IF_NONE_MATCH, etag);
            } else if let Some(date) = &validators.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date);
            }
            let response = self.send(request, &url, Class::Resolve)?;
            let status = response.status();
            log_response("GET", &url, status, began);
            if is_followable_redirect(status) {
                read_linked(response.headers(), &mut linked);
                if let (Some(have), Some(now)) = (&validators.etag, &linked.etag) {
                    if same_etag(have, now) {
                        return Ok(GetOutcome::NotModified);
                    }
                }
                url = next_location(&url, response.headers()).map_err(Failure::Final)?;
                continue;
            }
            return match status {
                StatusCode::NOT_MODIFIED => Ok(GetOutcome::NotModified),
                StatusCode::OK => {
                    let meta = merge_meta(linked, response.headers());
                    stream_body(response, &meta, sink, began, self.timeout)?;
                    Ok(GetOutcome::Fetched(meta))
                }
                status => Err(self.refused(&url, status, response.headers())),
            };
        }
        Err(Failure::Final(FetchError::TooManyRedirects))
    }

    fn head_once(&self, start: &Url) -> Result<RemoteMeta, Failure> {
        let began = Instant::now();
        let mut url = start.clone();
        let mut linked = RemoteMeta::default();
        for _ in 0..=MAX_REDIRECTS {
            let request = self.authorize(self.client.head(url.clone()), &url);
            let response = self.send(request, &url, Class::Resolve)?;
            let status = response.status();
            log_response("HEAD", &url, status, began);
            if is_followable_redirect(status) {
                read_linked(response.headers(), &mut linked);
                let next = next_location(&url, response.headers()).map_err(Failure::Final)?;
                // A Hugging Face 302 already says everything; its target is a
                // signed CDN URL that need not be asked now, but that the
                // download likely to follow can go to directly.
                if linked.size.is_some() {
                    self.redirects.remember(
                        start.clone(),
                        Hop {
                            target: next,
                            linked: linked.clone(),
                        },
                    );
                    return Ok(linked);
                }
                url = next;
                continue;
            }
            return match status {
                StatusCode::OK => Ok(merge_meta(linked, response.headers())),
                status => Err(self.refused(&url, status, response.headers())),
            };
        }
        Err(Failure::Final(FetchError::TooManyRedirects))
    }
}

impl Remote for HttpRemote {
    fn get(
        &self,
        tag: &str,
        path: &str,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let url = self.file_url(tag, path);
        let mut hop = validators
            .is_empty()
            .then(|| self.redirects.take(&url))
            .flatten();
        self.with_retries(|| {
            // The first attempt may use a redirect a HEAD just saw; retries
            // ask the dataset.
            if let Some(hop) = hop.take() {
                match self.get_once(&hop.target, hop.linked, validators, sink) {
                    // Expired or gone: the dataset knows where it is now.
                    Err(Failure::Final(FetchError::NotFound | FetchError::Status(401 | 403))) => {
                        tracing::debug!("a remembered redirect is stale; asking the dataset");
                    }
                    outcome => return outcome,
                }
            }
            self.get_once(&url, RemoteMeta::default(), validators, sink)
        })
    }

    fn get_range(
        &self,
        tag: &str,
        path: &str,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let url = self.file_url(tag, path);
        self.with_retries(|| self.range_once(&url, slice, validators, sink))
    }

    fn head(&self, tag: &str, path: &str) -> Result<RemoteMeta, FetchError> {
        let url = self.file_url(tag, path);
        self.with_retries(|| self.head_once(&url))
    }

    fn release_refs(&self) -> Result<Vec<String>, FetchError> {
        self.hub_refs()
    }

    fn tree(&self, tag: &str, dir: &str) -> Result<TreeListing, FetchError> {
        self.hub_tree(tag, dir)
    }

    fn url(&self, tag: &str, path: &str) -> String {
        self.file_url(tag, path).to_string()
    }

    fn origin(&self) -> String {
        super::origin_of(self.base.as_str())
    }
}

fn is_followable_redirect(status: StatusCode) -> bool {
    status.is_redirection() && status != StatusCode::NOT_MODIFIED
}

fn log_response(method: &str, url: &Url, status: StatusCode, began: Instant) {
    tracing::debug!(
        method,
        url = %url,
        status = status.as_u16(),
        ms = began.elapsed().as_millis() as u64,
        "http"
    );
}

fn header(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// Remembers the first `X-Linked-Etag` / `X-Linked-Size` seen on a redirect.
fn read_linked(headers: &HeaderMap, linked: &mut RemoteMeta) {
    if linked.etag.is_none() {
        if let Some(etag) = header(headers, "x-linked-etag") {
            linked.sha256 = Sha256Digest::from_hex(&etag);
            linked.etag = Some(etag);
        }
    }
    if linked.size.is_none() {
        linked.size = header(headers, "x-linked-size").and_then(|s| s.parse().ok());
    }
}

/// Metadata of the final response, with what the redirects said taking
/// precedence (a CDN's own ETag is not the dataset's).
fn merge_meta(linked: RemoteMeta, headers: &HeaderMap) -> RemoteMeta {
    RemoteMeta {
        etag: linked.etag.or_else(|| header(headers, ETAG)),
        last_modified: header(headers, LAST_MODIFIED),
        size: linked
            .size
            .or_else(|| header(headers, CONTENT_LENGTH).and_then(|s| s.parse().ok())),
        sha256: linked.sha256,
    }
}

fn next_location(current: &Url, headers: &HeaderMap) -> Result<Url, FetchError> {
    let location = header(headers, LOCATION)
        .ok_or_else(|| FetchError::Rejected("a redirect without a Location header".into()))?;
    current.join(&location).map_err(|e| {
        FetchError::Rejected(format!("a redirect to an invalid URL {location:?}: {e}"))
    })
}

fn classify_status(status: StatusCode, headers: &HeaderMap) -> Failure {
    let code = status.as_u16();
    match code {
        404 | 410 => Failure::Final(FetchError::NotFound),
        429 | 502 | 503 | 504 => {
            let now = SystemTime::now();
            let asked = header(headers, RETRY_AFTER)
                .and_then(|v| parse_retry_after(&v, now))
                .or_else(|| header(headers, "ratelimit").and_then(|v| parse_ratelimit_reset(&v)));
            Failure::Transient(FetchError::Status(code), asked)
        }
        _ => Failure::Final(FetchError::Status(code)),
    }
}

fn stream_body(
    mut response: Response,
    meta: &RemoteMeta,
    sink: &mut dyn BodySink,
    began: Instant,
    timeout: Duration,
) -> Result<(), Failure> {
    if let Some(size) = meta.size {
        sink.announced(size).map_err(Failure::Final)?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut received: u64 = 0;
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure::Transient(
                    FetchError::Network(format!("the body broke off after {received} bytes: {e}")),
                    None,
                ));
            }
        };
        received += n as u64;
        if meta.size.is_some_and(|size| received > size) {
            return Err(Failure::Transient(
                FetchError::Network(format!(
                    "the body is longer than the announced {} bytes",
                    meta.size.unwrap_or(0)
                )),
                None,
            ));
        }
        sink.write(&buf[..n]).map_err(Failure::Final)?;
        if began.elapsed() > timeout {
            return Err(Failure::Transient(
                FetchError::Network(format!("the download took longer than {timeout:?}")),
                None,
            ));
        }
    }
    if let Some(size) = meta.size {
        if received != size {
            return Err(Failure::Transient(
                FetchError::Network(format!(
                    "the body has {received} bytes, {size} were announced"
                )),
                None,
            ));
        }
    }
    Ok(())
}

/// ETags compare equal regardless of quoting and weakness markers.
pub fn same_etag(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    norm(a) == norm(b)
}

/// The reason of a reqwest error, with the OS cause (e.g. "Connection refused").
fn network_error(error: &reqwest::Error) -> FetchError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        FetchError::Network(what.to_string())
    } else {
        FetchError::Network(format!("{what}: {cause}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_escape_each_component() {
        let remote = HttpRemote::new(&HttpSettings::new(
            "https://example.org/datasets/o/r/resolve/",
            Duration::from_secs(1),
            RetryPolicy::default(),
        ))
        .unwrap();
        assert_eq!(
            remote.url("v2026.04.2", "ambientcg/1k/Bois d'été #1/color.png"),
            "https://example.org/datasets/o/r/resolve/v2026.04.2/ambientcg/1k/Bois%20d'%C3%A9t%C3%A9%20%231/color.png"
        );
        assert!(
            HttpRemote::new(&HttpSettings::new(
                "ftp://example.org",
                Duration::from_secs(1),
                RetryPolicy::default()
            ))
            .is_err()
        );
    }

    #[test]
    fn the_token_goes_only_to_the_base_host_over_https() {
        let settings = |base: &str| HttpSettings {
            token: Some(Secret("hf_secret".into())),
            ..HttpSettings::new(base, Duration::from_secs(1), RetryPolicy::default())
        };
        let remote =
            HttpRemote::new(&settings("https://huggingface.co/datasets/o/r/resolve")).unwrap();
        let url = |u: &str| Url::parse(u).unwrap();
        assert_eq!(
            remote.token_for(&url(
                "https://huggingface.co/datasets/o/r/resolve/v1/a.json"
            )),
            Some("hf_secret")
        );
        assert_eq!(
            remote.token_for(&url("https://huggingface.co/api/whatever")),
            Some("hf_secret")
        );
        for elsewhere in [
            "https://cdn-lfs.huggingface.co/repos/x?sig=1",
            "http://huggingface.co/datasets/o/r/resolve/v1/a.json",
            "https://huggingface.co:8443/datasets/o/r/resolve/v1/a.json",
            "https://evil.example/huggingface.co",
        ] {
            assert_eq!(remote.token_for(&url(elsewhere)), None, "{elsewhere}");
        }
        let plain = HttpRemote::new(&settings("http://mirror.local/resolve")).unwrap();
        assert_eq!(
            plain.token_for(&url("http://mirror.local/resolve/v1/a.json")),
            None
        );
        assert!(!format!("{:?}", settings("https://x")).contains("hf_secret"));
    }

    #[test]
    fn etags_compare_without_quotes_or_weakness() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("W/\"abc\"", "\"abc\""));
        assert!(!same_etag("\"abc\"", "\"abd\""));
    }
}
