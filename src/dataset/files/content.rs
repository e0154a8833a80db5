//! Texture content: served from the cache when [`identity`] proves the
//! cached bytes are the path's under this version (whichever path or tag
//! they were downloaded for), else downloaded once, checked, and kept.
//! Every texture served, cached or not, passes its format's magic check.

use super::FileRequest;
use super::downloaded::{keep_download, start_download};
use super::identity::{self, Identity, Proof};
use super::sizes;
use super::verify::check_file_magic;
use crate::dataset::error::{Error, Result};
use crate::dataset::missing;
use crate::dataset::tag_context::Opened;
use crate::dataset::tree::ContainerSlice;
use crate::digest::Sha256Digest;
use crate::flight::SingleFlight;
use crate::format::Location;
use crate::remote::{FetchError, GetOutcome, Validators};
use crate::stats::Stats;
use crate::store::{Blob, FileRecord, OpenBlob};
use crate::wait;

#[derive(Default)]
pub struct Content {
    /// One download a file at a time for each version of the tag: a
    /// request of a newer version never joins one of the version before.
    downloads: SingleFlight<(String, u64), Result<OpenBlob>>,
}

/// Cached bytes of an older version, which the server may confirm (`304`).
struct Unconfirmed {
    open: OpenBlob,
    etag: String,
}

impl FileRequest<'_> {
    /// What an open of the texture is bound to: the bytes proven to be its
    /// own under this version, open when they are cached. `held`: the
    /// version the kernel reads by itself for this file, already served
    /// (and checked) in this mount: an open of it needs nothing opened.
    pub fn opened(&self, held: Option<Sha256Digest>) -> Result<Opened> {
        let record = self.records().get(self.path);
        let Some(identity) = identity::proven(record.as_ref(), self.texture.hash, self.generation)
        else {
            return Ok(Opened::Unproven);
        };
        if held == Some(identity.digest()) && recorded(record.as_ref(), identity, self.generation) {
            Stats::add(&self.t.ctx.stats.cache_hits, 1);
            return Ok(Opened::Proven(identity.blob));
        }
        Ok(match serve_cached(self, record, identity)? {
            Some(open) => Opened::AtHand(open),
            None => Opened::Proven(identity.blob),
        })
    }

    /// The bytes of `version`, an open's own, when the cache holds them and
    /// they pass the magic check: proven when the open was, whatever the
    /// tag names now.
    pub fn cached(&self, version: Blob) -> Option<OpenBlob> {
        let open = self.t.ctx.content.open(&version)?;
        check_file_magic(self.texture.extension(), &open.file).ok()?;
        Some(open)
    }

    /// The bytes of an open bound to `bound`: those of the texture now
    /// ([`FileRequest::content`]) unless the tag moved on from that
    /// version, in which case its cached bytes, if the cache holds them.
    pub fn content_of(&self, bound: Option<Blob>) -> Result<OpenBlob> {
        let record = self.records().get(self.path);
        let now = identity::proven(record.as_ref(), self.texture.hash, self.generation);
        let moved_on = bound.filter(|b| now.is_none_or(|now| now.digest() != b.digest));
        match moved_on.and_then(|version| self.cached(version)) {
            Some(open) => Ok(open),
            None => self.content(),
        }
    }

    /// The bytes of the texture now: from the cache when proven, else
    /// downloaded (one download however many readers ask at once). Bytes a
    /// listing that proves nothing named for the file, when they are cached,
    /// are its own if the path's own digest (one HEAD) says so.
    pub fn content(&self) -> Result<OpenBlob> {
        let (t, path, texture, generation) = (self.t, self.path, self.texture, self.generation);
        let hint = self.files.sizes.hint(path, generation);
        if let Some(open) = self.proven_cached()? {
            return Ok(open);
        }
        wait::may_block()?;
        let key = (path.to_string(), generation);
        self.files.content.downloads.run(&key, || {
            if let Some(open) = self.proven_cached()? {
                return Ok(open);
            }
            let hinted_bytes_cached = hint.is_some_and(|blob| t.ctx.content.open(&blob).is_some());
            if hinted_bytes_cached && sizes::head(self).is_ok() {
                if let Some(open) = self.proven_cached()? {
                    return Ok(open);
                }
            }
            let record = self.records().get(path);
            let identity = identity::proven(record.as_ref(), texture.hash, generation);
            // Cached under an older version: ask whether it is still current
            // (for a slice of a container: the same slice of the same
            // container, by the container's ETag).
            let unconfirmed = record
                .as_ref()
                .filter(|_| identity.is_none())
                .and_then(|r| {
                    let open = t.ctx.content.open(&Blob {
                        digest: r.sha256?,
                        size: r.size?,
                    })?;
                    let same_slice = texture
                        .slice
                        .is_none_or(|s| s.slice.length == open.blob.size);
                    let etag = r.etag.clone().filter(|_| same_slice)?;
                    Some(Unconfirmed { open, etag })
                });
            download(self, record, identity, unconfirmed)
        })
    }

    fn proven_cached(&self) -> Result<Option<OpenBlob>> {
        let record = self.records().get(self.path);
        match identity::proven(record.as_ref(), self.texture.hash, self.generation) {
            Some(identity) => serve_cached(self, record, identity),
            None => Ok(None),
        }
    }
}

/// The proven bytes from the cache, if it holds them and they pass the
/// magic check. Bytes first served under this path are recorded for it
/// (which is a write: not in quick mode).
fn serve_cached(
    request: &FileRequest,
    record: Option<FileRecord>,
    identity: Identity,
) -> Result<Option<OpenBlob>> {
    let (t, path, texture, generation) =
        (request.t, request.path, request.texture, request.generation);
    let Some(open) = t.ctx.content.open(&identity.blob) else {
        return Ok(None);
    };
    if let Err(why) = check_file_magic(texture.extension(), &open.file) {
        tracing::error!(tag = %t.name, path, sha256 = %identity.digest(), "cached bytes are not served: {why}");
        return Ok(None);
    }
    let stats = &t.ctx.stats;
    if recorded(record.as_ref(), identity, generation) {
        Stats::add(&stats.cache_hits, 1);
        return Ok(Some(open));
    }
    wait::may_block()?;
    let downloaded_here = record
        .as_ref()
        .is_some_and(|r| r.sha256 == Some(identity.digest()));
    tracing::debug!(tag = %t.name, path, sha256 = %identity.digest(), proof = ?identity.proof, "served from the cache");
    request.record(FileRecord {
        path: path.to_string(),
        generation,
        size: Some(identity.blob.size),
        etag: record.as_ref().and_then(|r| r.etag.clone()),
        sha256: Some(identity.digest()),
        remote_sha256: record.as_ref().and_then(|r| r.remote_sha256),
    });
    Stats::add(
        if downloaded_here {
            &stats.cache_hits
        } else {
            &stats.dedupe_hits
        },
        1,
    );
    Ok(Some(open))
}

/// Whether serving `identity` under this path needs no record written:
/// the server confirmed it, or it is the path's record in this version.
fn recorded(record: Option<&FileRecord>, identity: Identity, generation: u64) -> bool {
    identity.proof == Proof::Confirmed
        || record.is_some_and(|r| r.generation == generation && r.sha256 == Some(identity.digest()))
}

fn download(
    request: &FileRequest,
    record: Option<FileRecord>,
    identity: Option<Identity>,
    unconfirmed: Option<Unconfirmed>,
) -> Result<OpenBlob> {
    let (t, path, texture, generation) =
        (request.t, request.path, request.texture, request.generation);
    let file = Location::revision(path);
    let url = match texture.slice {
        Some(ContainerSlice {
            container: Some(container),
            slice,
        }) => format!(
            "{} (bytes {}-{})",
            t.url(container),
            slice.offset,
            slice.offset + slice.length - 1
        ),
        _ => t.url(&file),
    };
    let why = match unconfirmed {
        Some(_) => "the tag changed since it was cached",
        None => "not cached",
    };
    let remote = t.remote(&url, why)?;
    // Container releases predate the sentinel: their manifest lists only
    // finished tiers.
    if texture.slice.is_none() {
        request
            .files
            .tiers
            .ensure_complete(t, texture.source, texture.tier, generation)?;
    }
    let validators = Validators {
        etag: unconfirmed.as_ref().map(|u| u.etag.clone()),
        last_modified: None,
    };
    let mut ingest = start_download(request)?;
    let fetched = match texture.slice {
        None => remote.get(&t.name, &file, &validators, &mut ingest),
        Some(slice) => match slice.container {
            None => Err(FetchError::Rejected("the rowmap names no container".into())),
            Some(container) => {
                remote.get_range(&t.name, container, slice.slice, &validators, &mut ingest)
            }
        },
    };
    let fetched = match fetched {
        // A container's 404 is not the texture's: only a file of its own.
        Err(FetchError::NotFound) if texture.slice.is_none() => {
            return Err(missing::answered_404(t, path, generation));
        }
        fetched => fetched.map_err(|e| Error::fetch(&url, e))?,
    };
    match fetched {
        GetOutcome::NotModified(meta) => {
            if request.is_current() {
                t.saw(&meta);
            }
            let Some(Unconfirmed { open, etag }) = unconfirmed else {
                return Err(Error::refused(
                    url,
                    "a 304 answer to an unconditional request",
                ));
            };
            check_file_magic(texture.extension(), &open.file)
                .map_err(|why| Error::refused(&url, why))?;
            tracing::debug!(tag = %t.name, path, "unchanged on the server (ETag)");
            request.record(FileRecord {
                path: path.to_string(),
                generation,
                size: Some(open.blob.size),
                etag: Some(etag),
                sha256: Some(open.blob.digest),
                remote_sha256: None,
            });
            Stats::add(&t.ctx.stats.cache_hits, 1);
            Ok(open)
        }
        GetOutcome::Fetched(meta) => keep_download(request, record, identity, &meta, ingest, &url),
    }
}
