//! Reading a response: statuses as retryable or final failures, the
//! `X-Linked-*` headers of a Hugging Face redirect, and a body streamed to a
//! sink within its announced length and the time bound.

use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, ETAG, HeaderMap, LAST_MODIFIED, LOCATION, RETRY_AFTER};
use url::Url;

use super::client::Response;
use crate::digest::Sha256Digest;
use crate::remote::pauses::exhausted_for;
use crate::remote::retry::parse_retry_after;
use crate::remote::{BodySink, FetchError, RemoteMeta};

pub(super) enum Failure {
    /// Worth another attempt after a wait (the server may say how long).
    Transient(FetchError, Option<Duration>),
    Final(FetchError),
}

pub(super) fn is_followable_redirect(status: StatusCode) -> bool {
    status.is_redirection() && status != StatusCode::NOT_MODIFIED
}

pub(super) fn log_response(method: &str, url: &Url, status: StatusCode, began: Instant) {
    tracing::debug!(
        method,
        url = %url,
        status = status.as_u16(),
        ms = began.elapsed().as_millis() as u64,
        "http"
    );
}

pub(super) fn header(
    headers: &HeaderMap,
    name: impl reqwest::header::AsHeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// Remembers the first `X-Linked-Etag` / `X-Linked-Size` seen on a redirect.
pub(super) fn read_linked(headers: &HeaderMap, linked: &mut RemoteMeta) {
    if linked.etag.is_none() {
        if let Some(etag) = header(headers, "x-linked-etag") {
            linked.sha256 = Sha256Digest::from_hex(&etag);
            linked.etag = Some(etag);
        }
    }
    if linked.size.is_none() {
        linked.size = header(headers, "x-linked-size").and_then(|s| s.parse().ok());
    }
    if linked.commit.is_none() {
        linked.commit = repo_commit(headers);
    }
}

/// The commit a Hugging Face answer names (`X-Repo-Commit`), if it is one.
pub(super) fn repo_commit(headers: &HeaderMap) -> Option<String> {
    header(headers, "x-repo-commit").filter(|c| crate::names::is_commit(c))
}

/// How long before the response's `Date` a `Last-Modified` must lie to be
/// a strong validator (RFC 9110, 8.8.2.2): a file written twice within that
/// time may keep its date, and `If-Modified-Since` would keep a stale copy.
const STRONG_DATE_AGE: Duration = Duration::from_secs(60);

/// The response's `Last-Modified`, when it can prove a cached copy
/// unchanged: never one without a `Date`, or too close to it.
pub(super) fn strong_last_modified(headers: &HeaderMap) -> Option<String> {
    let modified = header(headers, LAST_MODIFIED)?;
    let date = httpdate::parse_http_date(&header(headers, reqwest::header::DATE)?).ok()?;
    let at = httpdate::parse_http_date(&modified).ok()?;
    (at + STRONG_DATE_AGE <= date).then_some(modified)
}

/// Metadata of the final response, with what the redirects said taking
/// precedence (a CDN's own ETag is not the dataset's).
pub(super) fn merge_meta(linked: RemoteMeta, headers: &HeaderMap) -> RemoteMeta {
    RemoteMeta {
        etag: linked.etag.or_else(|| header(headers, ETAG)),
        last_modified: strong_last_modified(headers),
        size: linked
            .size
            .or_else(|| header(headers, CONTENT_LENGTH).and_then(|s| s.parse().ok())),
        sha256: linked.sha256,
        commit: linked.commit.or_else(|| repo_commit(headers)),
    }
}

pub(super) fn next_location(current: &Url, headers: &HeaderMap) -> Result<Url, FetchError> {
    let location = header(headers, LOCATION)
        .ok_or_else(|| FetchError::Rejected("a redirect without a Location header".into()))?;
    current.join(&location).map_err(|e| {
        FetchError::Rejected(format!("a redirect to an invalid URL {location:?}: {e}"))
    })
}

pub(super) fn classify_status(status: StatusCode, headers: &HeaderMap) -> Failure {
    let code = status.as_u16();
    match code {
        404 | 410 => Failure::Final(FetchError::NotFound),
        429 | 502 | 503 | 504 => {
            let now = SystemTime::now();
            let asked = header(headers, RETRY_AFTER)
                .and_then(|v| parse_retry_after(&v, now))
                .or_else(|| exhausted_for(headers));
            Failure::Transient(FetchError::Status(code), asked)
        }
        _ => Failure::Final(FetchError::Status(code)),
    }
}

pub(super) fn stream_body(
    mut response: Response,
    meta: &RemoteMeta,
    sink: &mut dyn BodySink,
    began: Instant,
    timeout: Duration,
) -> Result<(), Failure> {
    if let Some(size) = meta.size {
        sink.announced(size).map_err(Failure::Final)?;
    }
    let mut received: u64 = 0;
    loop {
        let chunk = match response.chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(Failure::Transient(body_error(received, &e), None));
            }
        };
        let n = chunk.len();
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
        sink.write_shared(chunk).map_err(Failure::Final)?;
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

/// The reason of a reqwest error, with the OS cause (e.g. "Connection refused").
pub(super) fn network_error(error: &reqwest::Error) -> FetchError {
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

/// A body that broke off after `received` bytes: a timeout says so.
pub(super) fn body_error(received: u64, error: &reqwest::Error) -> FetchError {
    let why = match network_error(error) {
        FetchError::Network(why) => why,
        other => other.to_string(),
    };
    FetchError::Network(format!("the body broke off after {received} bytes: {why}"))
}
