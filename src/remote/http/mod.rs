//! The reqwest implementation of [`Remote`]: a pooled client on each thread
//! that asks, driven on that thread ([`client`]), redirects followed by hand (so that the `X-Linked-*` headers of a
//! Hugging Face 302 are seen), bounded time per attempt, retries with backoff
//! for transient failures, and a short "server is down" memory so that a dead
//! server costs one quick failure per request instead of a full retry cycle.
//! A HEAD's redirect is remembered so the download after it skips a hop.
//! Requests to the Hugging Face Hub (the host of `--hf-endpoint`) are paced
//! under its limits; on every host, what the server asks (a 429's
//! `Retry-After`, an exhausted `RateLimit`) is honoured.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::RequestBuilder;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use url::Url;

use super::budget::{Class, RateBudget, RateLimits};
use super::pauses::{HostKey, Pauses};
use super::redirects::{Hop, RecentRedirects};
use super::retry::RetryPolicy;
use super::{
    Answer, BodySink, FetchError, GetOutcome, Remote, RemoteMeta, Request, Server, Validators,
    strong_etag_match,
};
use crate::format::hub::TreeListing;
use crate::format::{Location, Slice};
use client::{Client, ClientSettings, Response};
use response::{
    Failure, classify_status, is_followable_redirect, log_response, merge_meta, network_error,
    next_location, read_linked, stream_body,
};

mod client;
mod hub;
mod range;
mod response;

pub use hub::hub_api_root;

const MAX_REDIRECTS: usize = 10;
/// The Hub whose rate limits apply unless `--hf-endpoint` names another.
pub const HUGGING_FACE: &str = "https://huggingface.co";
/// After a request fails for want of a connection, later requests skip their
/// retries for this long.
const DOWN_MEMORY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub base: String,
    /// Bound on one attempt: connecting, waiting for headers and the body.
    pub timeout: Duration,
    /// Bound on a first contact, attempts and waits included (see
    /// [`crate::remote::FIRST_CONTACT_PATIENCE`]).
    pub first_contact: Duration,
    pub retry: RetryPolicy,
    /// Sent as a bearer token, only to the base URL's host and only over HTTPS.
    pub token: Option<Secret>,
    /// Extra trusted certificate authorities (PEM), beside the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Use the Hugging Face API when the base URL is in the Hub's layout.
    pub hub_api: bool,
    /// The Hugging Face Hub (`--hf-endpoint`): requests to its host and
    /// port are paced under `limits`, whatever the base URL.
    pub hub_endpoint: String,
    /// Pacing of requests to the Hub.
    pub limits: RateLimits,
}

impl HttpSettings {
    pub fn new(base: &str, timeout: Duration, retry: RetryPolicy) -> Self {
        HttpSettings {
            base: base.into(),
            timeout,
            first_contact: crate::remote::FIRST_CONTACT_PATIENCE,
            retry,
            token: None,
            ca_pem: None,
            hub_api: true,
            hub_endpoint: HUGGING_FACE.into(),
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

/// When requests must be done by: `span` from when it was set.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    span: Duration,
}

impl Deadline {
    fn after(span: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + span,
            span,
        }
    }
}

/// What one attempt may spend: its time limit, and the longest it may
/// wait for a pause a server asked for before it is sent.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    limit: Duration,
    wait_most: Duration,
}

pub struct HttpRemote {
    client: Client,
    base: Url,
    timeout: Duration,
    first_contact: Duration,
    retry: RetryPolicy,
    token: Option<Secret>,
    down_until: Mutex<Option<Instant>>,
    redirects: RecentRedirects,
    /// The Hub API's root for this dataset, when the base URL has the
    /// Hub's layout.
    hub: Option<Url>,
    /// Whether API calls may be made (`--no-hf-api` says no).
    use_api: bool,
    /// The Hub's host, whose requests `budget` paces.
    paced: Option<HostKey>,
    budget: RateBudget,
    /// What servers asked for (429, `RateLimit`), per host.
    pauses: Pauses,
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
        let client = Client::new(ClientSettings {
            timeout: settings.timeout,
            connect_timeout: settings.timeout.min(Duration::from_secs(10)),
            ca_pem: settings.ca_pem.clone(),
        })?;
        if settings.token.is_some() && base.scheme() != "https" {
            tracing::warn!("a token is set but the base URL is not HTTPS: it will not be sent");
        }
        let hub_endpoint = Url::parse(&settings.hub_endpoint)
            .map_err(|e| format!("invalid Hub URL {:?}: {e}", settings.hub_endpoint))?;
        Ok(HttpRemote {
            hub: hub_api_root(&base),
            use_api: settings.hub_api,
            paced: HostKey::of(&hub_endpoint),
            pauses: Pauses::default(),
            client,
            base,
            timeout: settings.timeout,
            first_contact: settings.first_contact,
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

    fn file_url(&self, tag: &str, file: &Location) -> Url {
        let path = match file {
            Location::Absolute(url) => return url.clone(),
            Location::Revision(path) => path,
        };
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL can be a base")
            .pop_if_empty()
            .push(tag)
            .extend(path.split('/'));
        url
    }

    /// Whether `url` is on the Hugging Face Hub, whose limits we pace.
    fn is_paced(&self, url: &Url) -> bool {
        self.paced.is_some() && HostKey::of(url) == self.paced
    }

    /// Sends a request once the server's host may be asked: after a pause
    /// it asked for, and in its turn under the Hub's limits when it is the
    /// Hub. What the answer says of its quota is remembered.
    fn send(&self, request: RequestBuilder, url: &Url, class: Class) -> Result<Response, Failure> {
        self.send_within(request, url, class, self.retry.max_wait)
    }

    /// [`HttpRemote::send`], waiting at most `wait_most` for a pause.
    fn send_within(
        &self,
        request: RequestBuilder,
        url: &Url,
        class: Class,
        wait_most: Duration,
    ) -> Result<Response, Failure> {
        crate::wait::must_not_be_quick(|| format!("a request for {url}"));
        self.pauses
            .wait(url, class, wait_most)
            .map_err(Failure::Final)?;
        if self.is_paced(url) {
            self.budget
                .acquire(class, self.retry.max_wait)
                .map_err(Failure::Final)?;
        }
        let response = client::send(request).map_err(|e| {
            let why = match e {
                client::SendError::Http(e) => network_error(&e),
                client::SendError::NoRuntime(e) => {
                    FetchError::Network(format!("cannot start this thread's HTTP client: {e}"))
                }
            };
            Failure::Transient(why, None)
        })?;
        self.pauses
            .observe(url, class, response.headers(), self.retry.max_wait);
        Ok(response)
    }

    /// The failure for an unwanted status; a 429 also holds back the other
    /// requests of its class to that host, for as long as it asked.
    fn refused(&self, url: &Url, class: Class, status: StatusCode, headers: &HeaderMap) -> Failure {
        let failure = classify_status(status, headers);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let asked = match &failure {
                Failure::Transient(_, Some(wait)) => *wait,
                _ => self.retry.backoff_base,
            };
            self.pauses.pause(url, class, asked, self.retry.max_wait);
        }
        failure
    }

    /// Runs `attempt` until it succeeds, fails for good, or retries run out.
    fn with_retries<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, FetchError> {
        self.attempts(false, self.timeout, None, |_| attempt())
    }

    /// Runs `attempt` like [`HttpRemote::with_retries`], with no retry
    /// that would begin after `deadline`.
    fn with_retries_until<T>(
        &self,
        deadline: Deadline,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, FetchError> {
        self.attempts(false, self.timeout, Some(deadline), |_| attempt())
    }

    /// Runs `attempt` like [`HttpRemote::with_retries`], all attempts and
    /// waits within the first contact's bound.
    fn first_contact<T>(
        &self,
        attempt: impl FnMut(Attempt) -> Result<T, Failure>,
    ) -> Result<T, FetchError> {
        let deadline = Deadline::after(self.first_contact);
        self.attempts(false, self.timeout, Some(deadline), attempt)
    }

    /// Runs `attempt` like [`HttpRemote::with_retries`], each attempt
    /// within `limit`, and all of them before `deadline` when there is one;
    /// a `check` is not tried while the server was just found unreachable,
    /// and not retried after a network failure.
    fn attempts<T>(
        &self,
        check: bool,
        limit: Duration,
        deadline: Option<Deadline>,
        mut attempt: impl FnMut(Attempt) -> Result<T, Failure>,
    ) -> Result<T, FetchError> {
        let recently_down = self.down_until.lock().is_some_and(|t| Instant::now() < t);
        // Asked for an attempt's time ago (it waited for a worker behind
        // others) while the server has just not answered: another attempt
        // would make its caller wait twice its bound, and each one queued
        // behind it longer still.
        let waited_its_bound =
            crate::wait::waited_since_asked().is_some_and(|waited| waited >= self.timeout);
        if (check || waited_its_bound) && recently_down {
            return Err(FetchError::Network(
                "the server did not answer a moment ago".into(),
            ));
        }
        let retries = if recently_down {
            0
        } else {
            self.retry.max_retries
        };
        let mut schedule = RetryPolicy {
            max_retries: retries,
            ..self.retry
        }
        .schedule();
        let mut last_error = None;
        loop {
            let mut this = Attempt {
                limit,
                wait_most: self.retry.max_wait,
            };
            if let Some(deadline) = deadline {
                let left = deadline.at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(gave_up(last_error, deadline.span));
                }
                this.limit = this.limit.min(left);
                this.wait_most = this.wait_most.min(left);
            }
            match attempt(this) {
                Ok(value) => {
                    *self.down_until.lock() = None;
                    return Ok(value);
                }
                Err(Failure::Final(error)) => return Err(error),
                // Asked to wait longer than we may: the pause it set fails
                // the next requests to that host fast too.
                Err(Failure::Transient(error, Some(asked))) if asked > self.retry.max_wait => {
                    return Err(error);
                }
                Err(Failure::Transient(error @ FetchError::Network(_), _)) if check => {
                    *self.down_until.lock() = Some(Instant::now() + DOWN_MEMORY);
                    return Err(error);
                }
                Err(Failure::Transient(error, server_asked)) => {
                    let out_of_time = |wait: Duration| {
                        deadline.is_some_and(|deadline| Instant::now() + wait >= deadline.at)
                    };
                    let Some(wait) = schedule.next(server_asked).filter(|w| !out_of_time(*w))
                    else {
                        if matches!(error, FetchError::Network(_)) {
                            *self.down_until.lock() = Some(Instant::now() + DOWN_MEMORY);
                        }
                        return Err(match deadline {
                            Some(deadline) if out_of_time(Duration::ZERO) => {
                                gave_up(Some(error), deadline.span)
                            }
                            _ => error,
                        });
                    };
                    tracing::debug!(%error, ?wait, "transient failure, retrying");
                    last_error = Some(error);
                    std::thread::sleep(wait);
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
        attempt: Attempt,
    ) -> Result<GetOutcome, Failure> {
        let limit = attempt.limit;
        sink.reset().map_err(Failure::Final)?;
        if let Some(size) = linked.size {
            sink.announced(size).map_err(Failure::Final)?;
        }
        let began = Instant::now();
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .authorize(self.client.get(url.clone()), &url)
                .timeout(limit);
            if let Some(etag) = &validators.etag {
                request = request.header(IF_NONE_MATCH, etag);
            } else if let Some(date) = &validators.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date);
            }
            let response = self.send_within(request, &url, Class::Resolve, attempt.wait_most)?;
            let status = response.status();
            log_response("GET", &url, status, began);
            if is_followable_redirect(status) {
                read_linked(response.headers(), &mut linked);
                if let (Some(have), Some(now)) = (&validators.etag, &linked.etag) {
                    if strong_etag_match(have, now) {
                        return Ok(GetOutcome::NotModified(linked));
                    }
                }
                url = next_location(&url, response.headers()).map_err(Failure::Final)?;
                continue;
            }
            return match status {
                StatusCode::NOT_MODIFIED => Ok(GetOutcome::NotModified(merge_meta(
                    linked,
                    response.headers(),
                ))),
                StatusCode::OK => {
                    let meta = merge_meta(linked, response.headers());
                    stream_body(response, &meta, sink, began, limit)?;
                    Ok(GetOutcome::Fetched(meta))
                }
                status => Err(self.refused(&url, Class::Resolve, status, response.headers())),
            };
        }
        Err(Failure::Final(FetchError::TooManyRedirects))
    }

    fn head_once(&self, start: &Url) -> Result<RemoteMeta, Failure> {
        let began = Instant::now();
        let epoch = self.redirects.epoch();
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
                        epoch,
                    );
                    return Ok(linked);
                }
                url = next;
                continue;
            }
            return match status {
                StatusCode::OK => Ok(merge_meta(linked, response.headers())),
                status => Err(self.refused(&url, Class::Resolve, status, response.headers())),
            };
        }
        Err(Failure::Final(FetchError::TooManyRedirects))
    }
}

/// The requests, each with its own patience and retries.
impl Server for HttpRemote {
    fn get(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let url = self.file_url(tag, file);
        let mut hop = validators
            .is_empty()
            .then(|| self.redirects.take(&url))
            .flatten();
        self.attempts(false, self.timeout, None, |attempt| {
            // The first attempt may use a redirect a HEAD just saw; retries
            // ask the dataset.
            if let Some(hop) = hop.take() {
                match self.get_once(&hop.target, hop.linked, validators, sink, attempt) {
                    // Expired or gone: the dataset knows where it is now.
                    Err(Failure::Final(FetchError::NotFound | FetchError::Status(401 | 403))) => {
                        tracing::debug!("a remembered redirect is stale; asking the dataset");
                    }
                    outcome => return outcome,
                }
            }
            self.get_once(&url, RemoteMeta::default(), validators, sink, attempt)
        })
    }

    fn get_first(
        &self,
        tag: &str,
        file: &Location,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let url = self.file_url(tag, file);
        let none = Validators::default();
        self.first_contact(|attempt| {
            self.get_once(&url, RemoteMeta::default(), &none, sink, attempt)
        })
    }

    fn check(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let url = self.file_url(tag, file);
        let limit = self.timeout.min(crate::remote::CHECK_PATIENCE);
        self.attempts(true, limit, None, |attempt| {
            self.get_once(&url, RemoteMeta::default(), validators, sink, attempt)
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
        let url = self.file_url(tag, file);
        self.with_retries(|| self.range_once(&url, slice, validators, sink))
    }

    fn head(&self, tag: &str, file: &Location) -> Result<RemoteMeta, FetchError> {
        let url = self.file_url(tag, file);
        self.with_retries(|| self.head_once(&url))
    }

    fn first_bytes(
        &self,
        tag: &str,
        file: &Location,
        length: u64,
        sink: &mut dyn BodySink,
    ) -> Result<(RemoteMeta, bool), FetchError> {
        let url = self.file_url(tag, file);
        self.attempts(false, self.timeout, None, |attempt| {
            self.first_bytes_once(&url, length, sink, attempt)
        })
    }

    fn release_refs(&self) -> Result<Vec<String>, FetchError> {
        self.api_release_refs()
    }

    fn tree(&self, revision: &str, dir: &str) -> Result<TreeListing, FetchError> {
        self.api_tree(revision, dir)
    }
}

impl Remote for HttpRemote {
    fn send(&self, request: Request<'_>, sink: &mut dyn BodySink) -> Result<Answer, FetchError> {
        super::serve(self, request, sink)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        self.file_url(tag, file).to_string()
    }

    fn origin(&self) -> String {
        super::origin_of(self.base.as_str())
    }

    fn has_hub(&self) -> bool {
        self.api_root().is_ok()
    }

    fn forget_redirects(&self) {
        self.redirects.forget_all();
    }
}

/// The error of a first contact that ran out of time, with what its last
/// attempt found when that was more than silence.
fn gave_up(last: Option<FetchError>, bound: Duration) -> FetchError {
    let waited = format!("no answer within {} s", bound.as_secs_f64().ceil());
    FetchError::Network(match last {
        Some(FetchError::Network(why)) if why.starts_with("timed out") => waited,
        Some(FetchError::Network(why)) => format!("{waited}; the last attempt: {why}"),
        Some(error) => format!("{waited}; the last attempt: {error}"),
        None => waited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback that accepts connections and never answers;
    /// its connections are held until the listener thread ends.
    fn silent_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(16).collect();
            drop(held);
        });
        format!("http://{addr}/resolve")
    }

    #[test]
    fn a_first_contact_gives_up_within_its_bound_however_long_an_attempt_may_take() {
        let settings = HttpSettings {
            first_contact: Duration::from_secs(1),
            ..HttpSettings::new(
                &silent_server(),
                Duration::from_secs(60),
                RetryPolicy::default(),
            )
        };
        let remote = HttpRemote::new(&settings).unwrap();
        let began = Instant::now();
        let mut sink = crate::remote::MemorySink::with_limit(1 << 20);
        let error = remote
            .get_first(
                "v1",
                &Location::revision("release-manifest.json"),
                &mut sink,
            )
            .unwrap_err();
        let took = began.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(matches!(error, FetchError::Network(_)), "{error}");
    }

    #[test]
    fn file_urls_escape_each_component() {
        let remote = HttpRemote::new(&HttpSettings::new(
            "https://example.org/datasets/o/r/resolve/",
            Duration::from_secs(1),
            RetryPolicy::default(),
        ))
        .unwrap();
        assert_eq!(
            remote.url(
                "v2026.04.2",
                &Location::revision("ambientcg/1k/Bois d'été #1/color.png")
            ),
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
    fn only_the_hubs_own_host_is_paced() {
        let remote = |base: &str, hub: &str| {
            HttpRemote::new(&HttpSettings {
                hub_endpoint: hub.into(),
                ..HttpSettings::new(base, Duration::from_secs(1), RetryPolicy::default())
            })
            .unwrap()
        };
        let url = |u: &str| Url::parse(u).unwrap();
        let hub = remote("https://huggingface.co/datasets/o/r/resolve", HUGGING_FACE);
        assert!(hub.is_paced(&url("https://huggingface.co/datasets/o/r/resolve/v1/a.png")));
        assert!(hub.is_paced(&url("https://huggingface.co/api/datasets/o/r/refs")));
        assert!(!hub.is_paced(&url("https://cdn-lfs.hf.co/repos/x?sig=1")));
        // A mirror in the Hub's layout has the API, not the Hub's limits.
        let mirror = remote("http://mirror:8080/datasets/o/r/resolve", HUGGING_FACE);
        assert!(mirror.has_hub());
        assert!(!mirror.is_paced(&url("http://mirror:8080/datasets/o/r/resolve/v1/a.png")));
        assert!(!mirror.is_paced(&url("http://mirror:8080/api/datasets/o/r/refs")));
        // HF_ENDPOINT names the Hub, whatever the base URL's layout.
        let local = remote("http://127.0.0.1:9000/resolve", "http://127.0.0.1:9000");
        assert!(local.is_paced(&url("http://127.0.0.1:9000/resolve/v1/a.png")));
        assert!(!local.is_paced(&url("http://127.0.0.1:9001/resolve/v1/a.png")));
        assert!(!local.has_hub(), "no API without the Hub's layout");
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
}
