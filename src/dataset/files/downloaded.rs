//! A whole body downloaded for a texture, by a download or by the GET of
//! a small file's first bytes: checked, kept in the cache, and recorded as
//! the path's bytes under this version.

use super::FileRequest;
use super::identity::Identity;
use super::verify::{Expected, check_download};
use crate::dataset::changes::ChangeReport;
use crate::dataset::error::{Error, Result};
use crate::remote::RemoteMeta;
use crate::stats::Stats;
use crate::store::{FileRecord, Ingest, OpenBlob};

/// Where a texture's body is downloaded to: the cache's, within the
/// largest file the mount takes.
pub(super) fn start_download(request: &FileRequest) -> Result<Ingest> {
    let t = request.t;
    Ok(t.ctx
        .content
        .ingest()
        .map_err(Error::cache)?
        .with_limit(t.ctx.max_file_size))
}

/// A whole body downloaded for the texture: checked, kept in the cache,
/// and recorded as the path's bytes under this version (a change
/// announced when it differs from what this version said before).
pub(super) fn keep_download(
    request: &FileRequest,
    record: Option<FileRecord>,
    identity: Option<Identity>,
    meta: &RemoteMeta,
    ingest: Ingest,
    url: &str,
) -> Result<OpenBlob> {
    let (t, path, texture, generation) =
        (request.t, request.path, request.texture, request.generation);
    // The version of the tag the download was made for was replaced
    // meanwhile: its bytes are kept, and nothing said of the file.
    let current = request.is_current();
    if current {
        t.saw(meta);
    }
    let done = ingest.finish().map_err(Error::cache)?;
    let expected = Expected {
        catalog: texture.hash,
    };
    check_download(texture.extension(), &done.head, done.blob, meta, expected)
        .map_err(|why| Error::refused(url, why))?;
    let open = t.ctx.content.insert(done).map_err(Error::cache)?;
    // What this version said of the file before: bytes proven, or
    // a size the kernel was given.
    let announced_size = record
        .as_ref()
        .filter(|r| r.generation == generation)
        .and_then(|r| r.size);
    let changed = identity.is_some_and(|i| i.digest() != open.blob.digest)
        || announced_size.is_some_and(|size| size != open.blob.size);
    request.record(FileRecord {
        path: path.to_string(),
        generation,
        size: Some(open.blob.size),
        etag: meta.etag.clone(),
        sha256: Some(open.blob.digest),
        remote_sha256: meta.sha256,
    });
    Stats::add(&t.ctx.stats.cache_misses, 1);
    if changed && current {
        t.announce(ChangeReport::file(path, generation), Some(path));
    }
    Ok(open)
}
