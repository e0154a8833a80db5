//! Range requests for the container releases (schema 1 and 2): one texture
//! is bytes `[offset, offset + length)` of a tar or Parquet file. A server
//! that ignores `Range` answers with the whole file; then only a slice near
//! the start is read (up to the slice, and no further), anything deeper is
//! refused rather than downloading the container. And the first bytes of
//! a file in place of a HEAD: the whole file when it is that small.

use std::time::Instant;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_NONE_MATCH, RANGE};
use url::Url;

use super::client::Response;
use super::response::{
    Failure, body_error, header, is_followable_redirect, log_response, merge_meta, next_location,
    read_linked, stream_body,
};
use super::{Attempt, HttpRemote, MAX_REDIRECTS};
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

impl HttpRemote {
    /// One GET of the first `length` bytes of `start`, following redirects:
    /// the body goes to the sink only when it is the whole file (a 206 of
    /// all of it, or a 200 from a server that ignores `Range`, of at most
    /// `length` bytes); of a longer file only the size is taken and its
    /// bytes are not read.
    pub(super) fn first_bytes_once(
        &self,
        start: &Url,
        length: u64,
        sink: &mut dyn BodySink,
        attempt: Attempt,
    ) -> Result<(RemoteMeta, bool), Failure> {
        sink.reset().map_err(Failure::Final)?;
        let began = Instant::now();
        let mut url = start.clone();
        let mut linked = RemoteMeta::default();
        for _ in 0..=MAX_REDIRECTS {
            let request = self
                .authorize(self.client.get(url.clone()), &url)
                .header(RANGE, format!("bytes=0-{}", length - 1))
                .timeout(attempt.limit);
            let response = self.send_within(request, &url, Class::Resolve, attempt.wait_most)?;
            let status = response.status();
            log_response("GET", &url, status, began);
            if is_followable_redirect(status) {
                read_linked(response.headers(), &mut linked);
                // A Hugging Face 302 names the size: a longer file's target
                // need not be asked.
                if linked.size.is_some_and(|size| size > length) {
                    return Ok((linked, false));
                }
                url = next_location(&url, response.headers()).map_err(Failure::Final)?;
                continue;
            }
            // A 206's Content-Length is of the part: the size is the
            // redirect's, or the Content-Range's.
            let linked_size = linked.size;
            let mut meta = merge_meta(linked, response.headers());
            match status {
                StatusCode::PARTIAL_CONTENT => {
                    let (_, last, total) = content_range(response.headers())
                        .filter(|&(first, _, _)| first == 0)
                        .ok_or_else(|| {
                            Failure::Final(FetchError::Rejected(format!(
                                "asked for bytes 0-{}, the server sent Content-Range {:?}",
                                length - 1,
                                header(response.headers(), CONTENT_RANGE).unwrap_or_default()
                            )))
                        })?;
                    let total = total.ok_or_else(|| {
                        Failure::Final(FetchError::Rejected(format!(
                            "{url} gave no size in its Content-Range"
                        )))
                    })?;
                    if linked_size.is_some_and(|size| size != total) {
                        return Err(Failure::Final(FetchError::Rejected(format!(
                            "{url} is {total} bytes long, its redirect said {}",
                            linked_size.unwrap_or(0)
                        ))));
                    }
                    meta.size = Some(total);
                    if last + 1 != total {
                        return Ok((meta, false));
                    }
                }
                StatusCode::OK => match meta.size {
                    Some(size) if size <= length => {}
                    Some(_) => {
                        tracing::debug!(%url, "the server ignores Range: the body is not read");
                        return Ok((meta, false));
                    }
                    None => {
                        return Err(Failure::Final(FetchError::Rejected(format!(
                            "{url} gave no size"
                        ))));
                    }
                },
                status => {
                    return Err(self.refused(&url, Class::Resolve, status, response.headers()));
                }
            }
            stream_body(response, &meta, sink, began, attempt.limit)?;
            return Ok((meta, true));
        }
        Err(Failure::Final(FetchError::TooManyRedirects))
    }
}

/// `Content-Range: bytes first-last/total` (total `None` for `*`).
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = header(headers, CONTENT_RANGE)?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    (first <= last).then_some((first, last, total))
}

/// A 206 must be for exactly the bytes asked for.
fn check_content_range(headers: &HeaderMap, slice: Slice) -> Result<(), FetchError> {
    let last = slice.offset + slice.length - 1;
    let value = header(headers, CONTENT_RANGE).unwrap_or_default();
    match content_range(headers) {
        Some((first, end, _)) if first == slice.offset && end == last => Ok(()),
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

    #[test]
    fn a_content_range_gives_its_first_and_last_byte_and_the_total_when_known() {
        let mut headers = HeaderMap::new();
        for (value, parsed) in [
            ("bytes 0-1233/1234", Some((0, 1233, Some(1234)))),
            ("bytes 0-65535/300000", Some((0, 65535, Some(300000)))),
            ("bytes 0-99/*", Some((0, 99, None))),
            ("bytes 5-4/10", None),
            ("bytes 0-99/many", None),
            ("0-99/100", None),
        ] {
            headers.insert(CONTENT_RANGE, HeaderValue::from_static(value));
            assert_eq!(content_range(&headers), parsed, "{value}");
        }
    }
}
