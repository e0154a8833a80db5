//! The served directory, `<root>/<revision>/<path>`: which file a request
//! names, what the Hub would say about it (LFS or not, its ETag).

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use matvisfs_sample::sha256_hex;
use percent_encoding::percent_decode_str;

use super::Shared;

/// Decodes `<rev>/<path>` into a file under the root; refuses traversal. A
/// revision may be named by its commit (see [`commit_of`]).
pub(super) fn file_path(shared: &Shared, encoded: &str) -> Option<PathBuf> {
    let mut path = shared.root.clone();
    for (i, part) in encoded.split('/').enumerate() {
        let part = percent_decode_str(part).decode_utf8().ok()?;
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        match (i, revision_named(shared, &part)) {
            (0, Some(revision)) => path.push(revision),
            _ => path.push(part.as_ref()),
        }
    }
    Some(path)
}

fn is_commit(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit a revision resolves to, as the Hub names it in
/// `X-Repo-Commit`: here the hash of the revision's manifest, so that a
/// republished manifest is a new commit, and of the commits made since
/// without it ([`super::DevServer::commit`]: a texture replaced alone).
/// `None` when commits are off (a plain mirror) or the revision has no
/// manifest.
pub fn commit_of(shared: &Shared, revision: &str) -> Option<String> {
    if !shared.options.lock().commits {
        return None;
    }
    let mut manifest = fs::read(
        shared
            .root
            .join(revision)
            .join(matvisfs_sample::MANIFEST_FILE),
    )
    .ok()?;
    let later = shared.commits.lock().get(revision).copied().unwrap_or(0);
    if later > 0 {
        manifest.extend_from_slice(format!("\ncommit {later}").as_bytes());
    }
    Some(sha256_hex(&manifest)[..40].to_string())
}

/// The served revision that `name`, a commit, resolves to.
fn revision_named(shared: &Shared, name: &str) -> Option<String> {
    if !is_commit(name) || shared.root.join(name).is_dir() {
        return None;
    }
    fs::read_dir(&shared.root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|revision| commit_of(shared, revision).as_deref() == Some(name))
}

/// Files Hugging Face keeps in LFS: textures and containers.
pub(crate) fn is_lfs(path: &str) -> bool {
    [".png", ".ktx2", ".tar", ".parquet"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

pub(crate) fn content_type(path: &str) -> &'static str {
    if path.ends_with(".json") {
        "application/json"
    } else if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".ktx2") {
        "image/ktx2"
    } else {
        "application/octet-stream"
    }
}

/// A small file's ETag: git-blob-like (40 hex digits), as the Hub gives.
pub(super) fn blob_etag(bytes: &[u8]) -> String {
    let mut blob = format!("blob {}\0", bytes.len()).into_bytes();
    blob.extend_from_slice(bytes);
    format!("\"{}\"", &sha256_hex(&blob)[..40])
}

pub(super) fn read_file(shared: &Shared, encoded: &str) -> Option<(Vec<u8>, SystemTime)> {
    let path = file_path(shared, encoded)?;
    let meta = fs::metadata(&path).ok().filter(|m| m.is_file())?;
    let bytes = fs::read(&path).ok()?;
    Some((bytes, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

pub(super) fn quoted_sha256(bytes: &[u8]) -> String {
    format!("\"{}\"", sha256_hex(bytes))
}
