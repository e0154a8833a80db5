//! The Hugging Face Hub API as far as matvisfs and its peers use it, over
//! the served directory: `GET /api/datasets/<owner>/<name>` (the dataset's
//! info at its `main` branch, as other clients ask it first),
//! `GET /api/datasets/<owner>/<name>/xet-read-token/<rev>` (a read token for
//! the Xet storage, which other clients take at start; no file here is in
//! Xet, so the token is never used),
//! `GET /api/datasets/<owner>/<name>/refs` (each revision directory that
//! looks like a release is a tag, plus a `main` branch) and
//! `GET /api/datasets/<owner>/<name>/tree/<rev>/<path>[?recursive=true]`,
//! paginated like the Hub (`Link: <...>; rel="next"` with a cursor).

use std::fs;
use std::path::Path;

use matvisfs_sample::sha256_hex;
use serde_json::{Value, json};

use super::files::{blob_etag, file_path, is_lfs};
use super::message::{Request, Response};
use super::{Shared, TreePages};

/// The commit the `main` branch names: releases are tags, `main` never moves.
const MAIN_COMMIT: &str = "0000000000000000000000000000000000000000";

/// Answers `/api/datasets/<owner>/<name>/<rest>`; `None` for other paths.
/// The first value is what the request log records.
pub(super) fn answer(shared: &Shared, request: &Request) -> Option<(String, Response)> {
    let rest = request.raw_path.strip_prefix("/api/datasets/")?;
    let mut parts = rest.splitn(4, '/');
    let (owner, name) = (parts.next()?, parts.next()?);
    let call = parts.next().unwrap_or("");
    let prefix = format!("/api/datasets/{owner}/{name}");
    if !shared.options.lock().hub_api {
        return Some((format!("api/{call}"), Response::new(404, "Not Found\n")));
    }
    match (call, parts.next()) {
        ("", None) => Some(("api/info".into(), info(shared, owner, name))),
        ("refs", None) => Some(("api/refs".into(), refs(shared))),
        ("xet-read-token", Some(revision)) => {
            let host = request.headers.get("host").cloned().unwrap_or_default();
            Some((
                format!("api/xet-read-token/{revision}"),
                xet_read_token(shared, revision, &host),
            ))
        }
        ("tree", Some(target)) => {
            let cursor = query_value(&request.query, "cursor").and_then(|c| c.parse().ok());
            let logged = match cursor {
                Some(c) => format!("api/tree/{target}?cursor={c}"),
                None => format!("api/tree/{target}"),
            };
            let recursive = query_value(&request.query, "recursive") == Some("true");
            let host = request.headers.get("host").cloned().unwrap_or_default();
            let page = Page {
                link_base: format!("http://{host}{prefix}/tree/{target}"),
                recursive,
                cursor: cursor.unwrap_or(0),
                query: request.query.clone(),
            };
            Some((logged, tree(shared, target, &page)))
        }
        _ => Some((format!("api/{call}"), Response::new(404, "Not Found\n"))),
    }
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

fn json_response(value: &Value) -> Response {
    Response::new(200, value.to_string()).header("Content-Type", "application/json")
}

fn refs(shared: &Shared) -> Response {
    let mut tags: Vec<String> = fs::read_dir(&shared.root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with('v'))
        .collect();
    tags.sort();
    let tags: Vec<Value> = tags
        .iter()
        .map(|t| {
            let commit = super::files::commit_of(shared, t).unwrap_or_else(|| "0".repeat(40));
            json!({"name": t, "ref": format!("refs/tags/{t}"), "targetCommit": commit})
        })
        .collect();
    json_response(&json!({
        "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": MAIN_COMMIT}],
        "tags": tags,
        "converts": [],
    }))
}

/// The dataset's info at `main`, as the Hub gives it (the fields clients
/// read: `id`, `sha`, `lastModified`; the Hub adds card data, downloads,
/// likes and the like). `main` is the commit `refs` names, its files those
/// of a `main` directory if one is served, and it was last modified when
/// the served directory was.
fn info(shared: &Shared, owner: &str, name: &str) -> Response {
    let modified = fs::metadata(&shared.root)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH);
    let last_modified = chrono::DateTime::<chrono::Utc>::from(modified)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut files = Vec::new();
    collect(&shared.root.join("main"), "", true, &mut files);
    let siblings: Vec<Value> = files
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| json!({"rfilename": e["path"]}))
        .collect();
    json_response(&json!({
        "_id": &sha256_hex(format!("{owner}/{name}").as_bytes())[..24],
        "id": format!("{owner}/{name}"),
        "author": owner,
        "sha": MAIN_COMMIT,
        "lastModified": last_modified,
        "private": false,
        "gated": false,
        "disabled": false,
        "tags": [],
        "siblings": siblings,
    }))
}

/// A read token for the revision's Xet storage, as the Hub gives it:
/// where the storage is, the token and when it expires (an hour on). The
/// storage named is this server's `/cas`, which has nothing: the served
/// files are in LFS, and clients read them through `resolve`.
fn xet_read_token(shared: &Shared, revision: &str, host: &str) -> Response {
    if file_path(shared, revision).is_none_or(|p| !p.is_dir()) && revision != "main" {
        return Response::new(404, r#"{"error":"Revision not found"}"#)
            .header("X-Error-Code", "RevisionNotFound");
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    json_response(&json!({
        "casUrl": format!("http://{host}/cas"),
        "exp": exp,
        "accessToken": format!("xet_read_{}", &sha256_hex(revision.as_bytes())[..32]),
    }))
}

struct Page {
    /// The tree URL without query, for the next page's link.
    link_base: String,
    recursive: bool,
    cursor: usize,
    /// The query it was asked with.
    query: String,
}

fn tree(shared: &Shared, target: &str, page: &Page) -> Response {
    let Some(dir) = file_path(shared, target).filter(|p| p.is_dir()) else {
        return Response::new(404, r#"{"error":"Entry not found"}"#)
            .header("X-Error-Code", "EntryNotFound");
    };
    let revision = target.split('/').next().unwrap_or("");
    let in_repo = target
        .strip_prefix(revision)
        .unwrap_or("")
        .trim_start_matches('/');
    let mut entries = Vec::new();
    collect(&dir, in_repo, page.recursive, &mut entries);
    let (lies, pages, size) = {
        let options = shared.options.lock();
        (
            options.tree_lies.clone(),
            options.tree_pages,
            options.tree_page_size.max(1),
        )
    };
    for entry in &mut entries {
        let Some((sha, size)) = entry["path"].as_str().and_then(|p| lies.get(p)) else {
            continue;
        };
        entry["lfs"] = json!({"oid": sha, "size": size, "pointerSize": 134});
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    let end = (page.cursor + size).min(entries.len());
    let mut chunk: Vec<Value> = entries.get(page.cursor..end).unwrap_or(&[]).to_vec();
    let recursive = if page.recursive {
        "recursive=true&"
    } else {
        ""
    };
    let next = format!(
        "<{}?{recursive}cursor={}>; rel=\"next\"",
        page.link_base,
        page.cursor + size
    );
    let link = match pages {
        TreePages::Honest => (end < entries.len()).then_some(next),
        TreePages::Endless { padding } => {
            let mut filled = 0;
            let mut i = 0;
            while filled < padding {
                let path = format!("elsewhere/p{}/{i:08}/color.png", page.cursor);
                filled += path.len() + 160;
                chunk.push(json!({
                    "type": "file", "oid": "0".repeat(40), "size": 134, "path": path,
                    "lfs": {"oid": "0".repeat(64), "size": 4096, "pointerSize": 134},
                }));
                i += 1;
            }
            Some(next)
        }
        TreePages::LoopToSelf => Some(format!("<{}?{}>; rel=\"next\"", page.link_base, page.query)),
    };
    let response = json_response(&Value::Array(chunk));
    match link {
        Some(link) => response.header("Link", link),
        None => response,
    }
}

/// Entries below `dir` (whose path in the repository is `in_repo`) as the
/// Hub lists them: LFS files with their pointer's size and the real size
/// and sha256 under `lfs`.
fn collect(dir: &Path, in_repo: &str, recursive: bool, out: &mut Vec<Value>) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    for entry in read.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = match in_repo {
            "" => name.clone(),
            dir => format!("{dir}/{name}"),
        };
        if entry.path().is_dir() {
            out.push(json!({"type": "directory", "oid": "0".repeat(40), "size": 0, "path": path}));
            if recursive {
                collect(&entry.path(), &path, true, out);
            }
            continue;
        }
        let Ok(bytes) = fs::read(entry.path()) else {
            continue;
        };
        let git_oid = blob_etag(&bytes).trim_matches('"').to_string();
        if is_lfs(&name) {
            out.push(json!({
                "type": "file", "oid": git_oid, "size": 134, "path": path,
                "lfs": {"oid": sha256_hex(&bytes), "size": bytes.len(), "pointerSize": 134},
            }));
        } else {
            out.push(json!({"type": "file", "oid": git_oid, "size": bytes.len(), "path": path}));
        }
    }
}
