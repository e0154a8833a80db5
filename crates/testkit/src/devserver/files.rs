//! The served directory, `<root>/<revision>/<path>`: which file a request
//! names, what the Hub would say about it (LFS or not, its ETag).

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use matvisfs_sample::sha256_hex;
use percent_encoding::percent_decode_str;

use super::Shared;

/// Decodes `<rev>/<path>` into a file under the root; refuses traversal.
pub(super) fn file_path(shared: &Shared, encoded: &str) -> Option<PathBuf> {
    let mut path = shared.root.clone();
    for part in encoded.split('/') {
        let part = percent_decode_str(part).decode_utf8().ok()?;
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        path.push(part.as_ref());
    }
    Some(path)
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
