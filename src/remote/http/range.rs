//! Range requests for the container releases (schema 1 and 2): one texture
//! is bytes `[offset, offset + length)` of a tar or Parquet file. A server
//! that ignores `Range` answers with the whole file; then only a slice near
//! the start is read (up to the slice, and no further), anything deeper is
//! refused rather than downloading the container.

use std::time::Instant;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_NONE_MATCH, RANGE};
use url::Url;

use super::client::Response;
use super::response::{
    Failure, body_error, header, is_followable_redirect, log_response, next_location, stream_body,
};
use super::{HttpRemote, MAX_REDIRECTS};
use crate::format::Slice;
use crate::remote::{
    BodySink, Class, FetchError, GetOutcome, RemoteMeta, Validators, strong_etag_match,
};

/// How far into a file a server that ignores `Range` may be read to reach a
/// slice.
pub const IGNORED_RANGE_LIMIT: u64 = 8 << 20;

impl HttpRemote {
    pub(super) fn range_once(
        &self,
        start: &Url,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, Failure> {
        sink.reset().map_err(Failure::Final)?;
        sink.announced(slice.length).map_err(Failure::Final)?;
        let began = Instant::now();
        let last = slice.offset + slice.length - 1;
        let mut url = start.clone();
        // A Hugging Face 302 names the file's sha256: its ETag.
        let mut linked_etag = None;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .authorize(self.client.get(url.clone()), &url)
                .header(RANGE, format!("bytes={}-{last}", slice.offset));
            if let Some(etag) = &validators.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            let response = self.send(request, &url, Class::Resolve)?;
            let status = response.status();
            log_response("GET", &url, status, began);
            if is_followable_redirect(status) {
                if linked_etag.is_none() {
                    linked_etag = header(response.headers(), "x-linked-etag");
                }
                if let (Some(have), Some(now)) = (&validators.etag, &linked_etag) {
                    if strong_etag_match(have, now) {
                        return Ok(GetOutcome::NotModified(RemoteMeta::default()));
                    }
                }
                url = next_location(&url, response.headers()).map_err(Failure::Final)?;
                continue;
            }
            let meta = RemoteMeta {
                etag: linked_etag.or_else(|| header(response.headers(), ETAG)),
                last_modified: super::response::strong_last_modified(response.headers()),
                size: Some(slice.length),
                sha256: None,
                commit: super::response::repo_commit(response.headers()),
            };
            return match status {
                StatusCode::NOT_MODIFIED => Ok(GetOutcome::NotModified(meta)),
                StatusCode::PARTIAL_CONTENT => {
                    check_content_range(response.headers(), slice).map_err(Failure::Final)?;
                    stream_body(response, &meta, sink, began, self.timeout)?;
                    Ok(GetOutcome::Fetched(meta))
                }
                StatusCode::OK => {
                    read_slice_of_whole(response, &url, slice, sink)?;
                    Ok(GetOutcome::Fetched(meta))
                }
                status => Err(self.refused(&url, Class::Resolve, status, response.headers())),
            };
        }
        Err(Failure::Final(FetchError::TooManyRedirects))
    }
}

/// A 206 must be for exactly the bytes asked for.
fn check_content_range(headers: &HeaderMap, slice: Slice) -> Result<(), FetchError> {
    let last = slice.offset + slice.length - 1;
    let value = header(headers, CONTENT_RANGE).unwrap_or_default();
    let range = value
        .strip_prefix("bytes ")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(range, _total)| range.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    match range {
        Some((first, end)) if first == slice.offset && end == last => Ok(()),
        _ => Err(FetchError::Rejected(format!(
            "asked for bytes {}-{last}, the server sent Content-Range {value:?}",
            slice.offset
        ))),
    }
}

/// The server ignored `Range` and sends the whole file: skip to the slice
/// and stop after it, if it is near the start.
fn read_slice_of_whole(
    mut response: Response,
    url: &Url,
    slice: Slice,
    sink: &mut dyn BodySink,
) -> Result<(), Failure> {
    let end = slice.offset + slice.length;
    if end > IGNORED_RANGE_LIMIT {
        return Err(Failure::Final(FetchError::Rejected(format!(
            "{url} ignores Range requests: the texture is {} bytes into it, and matvisfs \
             reads at most {IGNORED_RANGE_LIMIT} bytes of a container to reach one",
            slice.offset
        ))));
    }
    tracing::debug!(%url, "the server ignores Range: reading the start of the file");
    let mut at: u64 = 0;
    while at < end {
        let chunk = match response.chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                return Err(Failure::Final(FetchError::Rejected(format!(
                    "{url} ends at byte {at}, before the texture's end at {end}"
                ))));
            }
            Err(e) => return Err(Failure::Transient(body_error(at, &e), None)),
        };
        // Not past the slice's end.
        let chunk = &chunk.as_ref()[..(end - at).min(chunk.as_ref().len() as u64) as usize];
        let n = chunk.len();
        let skip = slice.offset.saturating_sub(at).min(n as u64) as usize;
        if skip < n {
            sink.write(&chunk[skip..]).map_err(Failure::Final)?;
        }
        at += n as u64;
    }
    // Dropping the response closes the connection: the rest is not read.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_partial_answer_must_be_the_slice_asked_for() {
        let slice = Slice {
            offset: 100,
            length: 50,
        };
        let mut headers = HeaderMap::new();
        for (value, ok) in [
            ("bytes 100-149/5000", true),
            ("bytes 100-149/*", true),
            ("bytes 0-149/5000", false),
            ("bytes 100-150/5000", false),
            ("100-149/5000", false),
        ] {
            headers.insert(CONTENT_RANGE, HeaderValue::from_static(value));
            assert_eq!(check_content_range(&headers, slice).is_ok(), ok, "{value}");
        }
        headers.clear();
        assert!(check_content_range(&headers, slice).is_err());
    }
}
