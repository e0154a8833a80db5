//! One connection of the dev server: requests in, responses (or injected
//! faults) out, keep-alive until the client closes.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use percent_encoding::percent_decode_str;

use super::files::{blob_etag, content_type, is_lfs, quoted_sha256, read_file};
use super::message::{Request, Response, Wire, parse_range, read_request, reason};
use super::{Fault, LoggedRequest, Shared, Validators};

/// Serves requests until the client closes; `socket` is the TCP socket
/// under `stream`, for the faults that act on it directly.
pub(super) fn serve_connection(stream: &mut dyn Wire, socket: &TcpStream, shared: &Shared) {
    let _ = socket.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(stream, &mut buffer) else {
            return;
        };
        shared.answering.fetch_add(1, Ordering::SeqCst);
        let keep_alive = !request
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (logged_path, response) = answer(shared, &request);
        let fault = shared.take_fault(&logged_path);
        let status = match &fault {
            Some(Fault::Status { code, .. }) => *code,
            Some(Fault::Replace(_)) => 200,
            Some(Fault::RedirectLoop) => 302,
            _ => response.status,
        };
        shared.log.lock().push(LoggedRequest {
            method: request.method.clone(),
            path: logged_path,
            status,
            conditional: request.headers.contains_key("if-none-match")
                || request.headers.contains_key("if-modified-since"),
            range: request.headers.contains_key("range"),
            authorization: request.headers.get("authorization").cloned(),
        });
        shared.logged.fetch_add(1, Ordering::SeqCst);
        shared.answering.fetch_sub(1, Ordering::SeqCst);
        let head_only = request.method == "HEAD";
        let proceed = match fault {
            None => send(stream, &response, head_only, keep_alive),
            Some(fault) => apply_fault(
                stream, socket, shared, &request, fault, response, head_only, keep_alive,
            ),
        };
        if !proceed || !keep_alive {
            return;
        }
    }
}

fn send(stream: &mut dyn Wire, response: &Response, head_only: bool, keep_alive: bool) -> bool {
    let mut bytes = response.head_bytes(keep_alive);
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    stream
        .write_all(&bytes)
        .and_then(|()| stream.flush())
        .is_ok()
}

/// Sends what the fault calls for; false when the connection is done.
#[allow(clippy::too_many_arguments)]
fn apply_fault(
    stream: &mut dyn Wire,
    socket: &TcpStream,
    shared: &Shared,
    request: &Request,
    fault: Fault,
    response: Response,
    head_only: bool,
    keep_alive: bool,
) -> bool {
    let half = response.body.len() / 2;
    let partial = |stream: &mut dyn Wire, keep_alive: bool| {
        let _ = stream.write_all(&response.head_bytes(keep_alive));
        let _ = stream.write_all(&response.body[..half]);
        let _ = stream.flush();
    };
    match fault {
        Fault::Status { code, retry_after } => {
            let mut failure = Response::new(code, format!("injected {code}\n"));
            if let Some(seconds) = retry_after {
                failure = failure.header("Retry-After", seconds.to_string());
            }
            send(stream, &failure, head_only, keep_alive)
        }
        Fault::Replace(body) => {
            let replaced = Response::new(200, body).header("Content-Type", "text/html");
            send(stream, &replaced, head_only, keep_alive)
        }
        Fault::Delay(wait) => {
            std::thread::sleep(wait);
            send(stream, &response, head_only, keep_alive)
        }
        Fault::Headers(extra) => {
            let response = extra.into_iter().fold(response, |response, (name, value)| {
                response.header(&name, value)
            });
            send(stream, &response, head_only, keep_alive)
        }
        Fault::RedirectLoop => {
            let again = Response::new(302, Vec::new()).header("Location", request.raw_path.clone());
            send(stream, &again, head_only, keep_alive)
        }
        Fault::Hang => {
            wait_for_stop(shared);
            false
        }
        Fault::StallBody => {
            partial(stream, keep_alive);
            wait_for_stop(shared);
            false
        }
        Fault::ShortBody => {
            partial(stream, false);
            false
        }
        Fault::LongBody => {
            // More bytes than Content-Length says, on a kept-alive connection.
            let mut bytes = response.head_bytes(true);
            if !head_only {
                bytes.extend_from_slice(&response.body);
                bytes.extend_from_slice(b"TRAILING GARBAGE PAST THE LENGTH");
            }
            stream.write_all(&bytes).is_ok()
        }
        Fault::Chunked => {
            // No length at all: the body ends with the last chunk.
            let mut head = format!(
                "HTTP/1.1 {} {}\r\n",
                response.status,
                reason(response.status)
            );
            for (name, value) in &response.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
            let mut bytes = head.into_bytes();
            if !head_only {
                for chunk in response.body.chunks(1024) {
                    bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    bytes.extend_from_slice(chunk);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
            }
            let _ = stream.write_all(&bytes);
            false
        }
        Fault::Trickle(every) => {
            let _ = stream.write_all(&response.head_bytes(false));
            for byte in &response.body {
                if shared.stopping()
                    || stream
                        .write_all(std::slice::from_ref(byte))
                        .and_then(|()| stream.flush())
                        .is_err()
                {
                    break;
                }
                std::thread::sleep(every);
            }
            false
        }
        Fault::ResetBody => {
            partial(stream, keep_alive);
            // A zero linger turns the close into a reset.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and a correctly sized option value.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            false
        }
    }
}

fn wait_for_stop(shared: &Shared) {
    while !shared.stopping() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The logged path and the normal response to a request.
fn answer(shared: &Shared, request: &Request) -> (String, Response) {
    if request.method != "GET" && request.method != "HEAD" {
        return (
            request.raw_path.clone(),
            Response::new(400, "only GET and HEAD\n"),
        );
    }
    let decoded = |p: &str| percent_decode_str(p).decode_utf8_lossy().into_owned();
    if let Some(answered) = super::hub::answer(shared, request) {
        return answered;
    }
    if let Some(rest) = resolve_path(&request.raw_path) {
        (decoded(rest), resolve(shared, request, rest))
    } else if let Some(rest) = request.raw_path.strip_prefix("/cdn/") {
        (format!("cdn/{}", decoded(rest)), cdn(shared, request, rest))
    } else {
        (
            decoded(&request.raw_path),
            Response::new(404, "Entry not found\n"),
        )
    }
}

/// `<rev>/<path>` of `/resolve/...`, or of the Hub's
/// `/datasets/<owner>/<name>/resolve/...`.
fn resolve_path(raw_path: &str) -> Option<&str> {
    if let Some(rest) = raw_path.strip_prefix("/resolve/") {
        return Some(rest);
    }
    let rest = raw_path.strip_prefix("/datasets/")?;
    let mut parts = rest.splitn(4, '/');
    let (_owner, _name, resolve, rest) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (resolve == "resolve").then_some(rest)
}

fn resolve(shared: &Shared, request: &Request, encoded: &str) -> Response {
    let Some((bytes, modified)) = read_file(shared, encoded) else {
        return Response::new(404, "Entry not found\n").header("X-Error-Code", "EntryNotFound");
    };
    let options = shared.options.lock().clone();
    let large_json = encoded.ends_with(".json")
        && options
            .lfs_json_from
            .is_some_and(|from| bytes.len() as u64 >= from);
    if (options.lfs_redirects && is_lfs(encoded)) || large_json {
        let revision = encoded.split('/').next().unwrap_or("");
        let cdn = options.cdn_base.as_deref().unwrap_or("");
        let mut location = format!("{cdn}/cdn/{encoded}?Expires=4102444800&Signature=fixture");
        if options.cdn_keeps_objects {
            let sha256 = quoted_sha256(&bytes);
            location.push_str(&format!("&sha256={}", sha256.trim_matches('"')));
            shared.objects.lock().insert(sha256, bytes.clone());
        }
        let body = format!("Found. Redirecting to {location}");
        let response = Response::new(302, body)
            .header("Location", location)
            .header("X-Linked-Etag", quoted_sha256(&bytes))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("Content-Type", "text/plain; charset=utf-8");
        return with_commit(response, shared, revision);
    }
    let etag = blob_etag(&bytes);
    let response = with_validators(
        request,
        bytes,
        encoded,
        etag,
        modified,
        options.validators,
        options.ignore_range,
    );
    with_commit(response, shared, encoded.split('/').next().unwrap_or(""))
}

/// Names the revision's commit, as the Hub does on every resolve answer.
fn with_commit(response: Response, shared: &Shared, revision: &str) -> Response {
    let decoded = percent_decode_str(revision).decode_utf8_lossy();
    match super::files::commit_of(shared, &decoded) {
        Some(commit) => response.header("X-Repo-Commit", commit),
        None => response,
    }
}

fn cdn(shared: &Shared, request: &Request, encoded: &str) -> Response {
    // The object a redirect named, whatever the file is now.
    let named = request
        .query
        .split('&')
        .find_map(|p| p.strip_prefix("sha256="))
        .and_then(|sha| shared.objects.lock().get(&format!("\"{sha}\"")).cloned());
    let Some((bytes, modified)) = named
        .map(|bytes| (bytes, SystemTime::UNIX_EPOCH))
        .or_else(|| read_file(shared, encoded))
    else {
        return Response::new(404, "NoSuchKey\n");
    };
    let etag = quoted_sha256(&bytes);
    let ignore_range = shared.options.lock().ignore_range;
    with_validators(
        request,
        bytes,
        encoded,
        etag,
        modified,
        Validators::ETagAndDate,
        ignore_range,
    )
    .header("Cache-Control", "public, max-age=604800, immutable")
}

/// A 200, 206 or 304 for the bytes, honouring conditionals and `Range`
/// (unless told to ignore it).
fn with_validators(
    request: &Request,
    bytes: Vec<u8>,
    path: &str,
    etag: String,
    modified: SystemTime,
    validators: Validators,
    ignore_range: bool,
) -> Response {
    let use_etag = validators == Validators::ETagAndDate;
    let use_date = validators != Validators::None;
    let last_modified = httpdate::fmt_http_date(modified);
    let not_modified = if use_etag && request.headers.contains_key("if-none-match") {
        request.headers["if-none-match"]
            .split(',')
            .any(|t| t.trim() == etag || t.trim() == "*")
    } else if use_date {
        request
            .headers
            .get("if-modified-since")
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| {
                httpdate::fmt_http_date(since) == last_modified || modified <= since
            })
    } else {
        false
    };
    let mut response = if not_modified {
        Response::new(304, Vec::new())
    } else {
        match request
            .headers
            .get("range")
            .filter(|_| !ignore_range)
            .map(|r| parse_range(r, bytes.len() as u64))
        {
            None => Response::new(200, bytes).header("Content-Type", content_type(path)),
            Some(Some((start, end))) => {
                let total = bytes.len();
                Response::new(206, bytes[start as usize..=end as usize].to_vec())
                    .header("Content-Range", format!("bytes {start}-{end}/{total}"))
                    .header("Content-Type", content_type(path))
            }
            Some(None) => Response::new(416, Vec::new())
                .header("Content-Range", format!("bytes */{}", bytes.len())),
        }
    };
    // As every origin server with a clock: it tells whether a
    // Last-Modified is old enough to be a strong validator.
    response = response
        .header("Accept-Ranges", "bytes")
        .header("Date", httpdate::fmt_http_date(SystemTime::now()));
    if use_etag {
        response = response.header("ETag", etag);
    }
    if use_date {
        response = response.header("Last-Modified", last_modified);
    }
    response
}
