//! Texture files of a tag: exact sizes without downloads, content fetched
//! once and kept (once for all tags and paths with the same bytes), and the
//! rules that stop stale bytes from being served after the tag changed.

use super::verify::{Announced, check_texture};
use super::view::{ContainerSlice, TextureRef};
use super::{Opened, Tag};
use crate::digest::Sha256Digest;
use crate::error::FsError;
use crate::remote::http::same_etag;
use crate::remote::{FetchError, GetOutcome, Validators};
use crate::stats::Stats;
use crate::store::{Blob, FileRecord, OpenBlob};

impl Tag {
    /// The record of `path` if it holds for the tag's current version: it
    /// was confirmed under it, or its content has the sha256 and size that
    /// the (current) catalog gives.
    fn confirmed_record(
        &self,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Option<FileRecord> {
        let record = self.records.get(path)?;
        if record.generation == generation {
            return Some(record);
        }
        let hash = texture.hash?;
        if record.sha256 == Some(hash.sha256) && record.size == Some(hash.size) {
            let confirmed = FileRecord {
                generation,
                ..record
            };
            self.records.put(confirmed.clone());
            return Some(confirmed);
        }
        None
    }

    /// The record's content, if the store still holds it.
    fn cached(&self, record: &FileRecord) -> Option<OpenBlob> {
        let blob = Blob {
            digest: record.sha256?,
            size: record.size?,
        };
        self.ctx.content.open(&blob)
    }

    pub(super) fn opened_texture(
        &self,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Opened {
        match self.confirmed_record(path, texture, generation) {
            Some(record) => match self.cached(&record) {
                Some(open) => Opened::Ready(open),
                None => Opened::Lazy {
                    size: record.size,
                    digest: record.sha256,
                },
            },
            None => Opened::Lazy {
                size: None,
                digest: None,
            },
        }
    }

    /// The size of a texture when the records (or its rowmap) know it for
    /// this version.
    pub(super) fn known_size(
        &self,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Option<u64> {
        if let Some(slice) = texture.slice {
            return Some(slice.slice.length);
        }
        self.records.size_at(path, generation).or_else(|| {
            self.confirmed_record(path, texture, generation)
                .and_then(|r| r.size)
        })
    }

    /// The exact size of a texture, from the records or a HEAD request.
    pub(super) fn texture_size(
        &self,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Result<u64, FsError> {
        if let Some(size) = self.known_size(path, texture, generation) {
            return Ok(size);
        }
        self.sizes.run(&path.to_string(), || {
            self.size_from_tree(path, generation);
            match self.known_size(path, texture, generation) {
                Some(size) => Ok(size),
                None => self.head_texture(path, generation),
            }
        })
    }

    fn head_texture(&self, path: &str, generation: u64) -> Result<u64, FsError> {
        let url = self.ctx.remote.url(&self.name, path);
        if self.ctx.offline {
            return Err(FsError::Io(format!(
                "the size of {url} is unknown: not cached, and the mount is offline"
            )));
        }
        let meta = self.ctx.remote.head(&self.name, path).map_err(|e| {
            tracing::warn!(tag = %self.name, path, "cannot get the size of {url}: {e}");
            FsError::Io(format!("cannot get the size of {url}: {e}"))
        })?;
        let Some(size) = meta.size else {
            tracing::warn!(tag = %self.name, path, "the server gave no size for {url}");
            return Err(FsError::Io(format!("the server gave no size for {url}")));
        };
        let record = self.remote_record(path, generation, size, meta.etag, meta.sha256);
        self.records.put(record);
        Ok(size)
    }

    /// The record of a file whose size and validator the server just gave:
    /// the content cached before is kept when both are unchanged.
    pub(super) fn remote_record(
        &self,
        path: &str,
        generation: u64,
        size: u64,
        etag: Option<String>,
        remote_sha256: Option<Sha256Digest>,
    ) -> FileRecord {
        let old = self.records.get(path);
        let unchanged = old.as_ref().is_some_and(|old| {
            old.size == Some(size)
                && matches!((&old.etag, &etag), (Some(a), Some(b)) if same_etag(a, b))
        });
        FileRecord {
            path: path.to_string(),
            generation,
            size: Some(size),
            etag,
            sha256: if unchanged {
                old.and_then(|o| o.sha256)
            } else {
                None
            },
            remote_sha256,
        }
    }

    /// The content of a texture: from the cache when it is confirmed for the
    /// tag's current version, else from bytes already cached under another
    /// path when the digest is known, else from the server (one download
    /// however many readers ask at once).
    pub(super) fn texture_content(
        &self,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Result<OpenBlob, FsError> {
        self.downloads.run(&path.to_string(), || {
            let stats = &self.ctx.stats;
            if let Some(record) = self.confirmed_record(path, texture, generation) {
                if let Some(open) = self.cached(&record) {
                    Stats::add(&stats.cache_hits, 1);
                    return Ok(open);
                }
                if let Some(open) = self.deduplicated(path, texture, &record) {
                    Stats::add(&stats.dedupe_hits, 1);
                    return Ok(open);
                }
            }
            // Cached from an older version: ask whether it is still current
            // (for a slice of a container: the same slice of the same
            // container, by its ETag).
            let unconfirmed = self.records.get(path).and_then(|r| {
                let open = self.cached(&r)?;
                let same_slice = texture
                    .slice
                    .is_none_or(|s| s.slice.length == open.blob.size);
                Some((open, r.etag?)).filter(|_| same_slice)
            });
            self.download(path, texture, generation, unconfirmed)
        })
    }

    /// Bytes the store holds under another path whose digest the server
    /// (`X-Linked-Etag`) or the catalog gives for this one.
    fn deduplicated(
        &self,
        path: &str,
        texture: &TextureRef,
        record: &FileRecord,
    ) -> Option<OpenBlob> {
        let size = record.size?;
        let from_catalog = texture.hash.filter(|h| h.size == size).map(|h| h.sha256);
        [record.remote_sha256, from_catalog].into_iter().flatten().find_map(|digest: Sha256Digest| {
            let open = self.ctx.content.open(&Blob { digest, size })?;
            tracing::debug!(tag = %self.name, path, sha256 = %digest, "already cached under another path");
            self.records.put(FileRecord { sha256: Some(digest), ..record.clone() });
            Some(open)
        })
    }

    fn download(
        &self,
        path: &str,
        texture: &TextureRef,
        generation: u64,
        unconfirmed: Option<(OpenBlob, String)>,
    ) -> Result<OpenBlob, FsError> {
        let url = match texture.slice {
            Some(ContainerSlice {
                container: Some(container),
                slice,
            }) => format!(
                "{} (bytes {}-{})",
                self.ctx.remote.url(&self.name, container),
                slice.offset,
                slice.offset + slice.length - 1
            ),
            _ => self.ctx.remote.url(&self.name, path),
        };
        if self.ctx.offline {
            let why = if unconfirmed.is_some() {
                "the tag changed since it was cached, and the mount is offline"
            } else {
                "not cached, and the mount is offline"
            };
            tracing::warn!(tag = %self.name, path, "cannot read: {why}");
            return Err(FsError::Io(format!("{url}: {why}")));
        }
        // Container releases predate the sentinel: their manifest lists
        // only finished tiers.
        if texture.slice.is_none() {
            self.ensure_tier_complete(texture.source, texture.tier)?;
        }
        let validators = Validators {
            etag: unconfirmed.as_ref().map(|(_, etag)| etag.clone()),
            last_modified: None,
        };
        let failed = |e: FetchError| {
            tracing::warn!(tag = %self.name, path, "cannot download {url}: {e}");
            FsError::Io(format!("cannot download {url}: {e}"))
        };
        let local = |e: std::io::Error| {
            tracing::error!(tag = %self.name, path, "cannot write to the cache: {e}");
            FsError::Io(format!("cannot write to the cache: {e}"))
        };
        // The size (and the server's digest) that a HEAD or a tree listing
        // gave in this version: the kernel was told that size.
        let announced = self
            .records
            .get(path)
            .filter(|r| r.generation == generation)
            .map_or_else(Announced::default, |r| Announced {
                size: r.size,
                sha256: r.remote_sha256,
            });
        let mut ingest = self
            .ctx
            .content
            .ingest()
            .map_err(local)?
            .with_limit(self.ctx.max_file_size);
        let fetched = match texture.slice {
            None => self
                .ctx
                .remote
                .get(&self.name, path, &validators, &mut ingest),
            Some(slice) => {
                let container = slice
                    .container
                    .ok_or_else(|| FetchError::Rejected("the rowmap names no container".into()));
                container.and_then(|container| {
                    self.ctx.remote.get_range(
                        &self.name,
                        container,
                        slice.slice,
                        &validators,
                        &mut ingest,
                    )
                })
            }
        };
        match fetched.map_err(failed)? {
            GetOutcome::NotModified => {
                let Some((open, etag)) = unconfirmed else {
                    return Err(failed(FetchError::Rejected(
                        "304 to an unconditional request".into(),
                    )));
                };
                tracing::debug!(tag = %self.name, path, "unchanged on the server (ETag)");
                self.records.put(FileRecord {
                    path: path.to_string(),
                    generation,
                    size: Some(open.blob.size),
                    etag: Some(etag),
                    sha256: Some(open.blob.digest),
                    remote_sha256: None,
                });
                Stats::add(&self.ctx.stats.cache_hits, 1);
                Ok(open)
            }
            GetOutcome::Fetched(meta) => {
                let done = ingest.finish().map_err(local)?;
                if let Err(why) = check_texture(texture.extension(), &done, &meta, texture.hash) {
                    tracing::error!(tag = %self.name, path, "refusing the bytes of {url}: {why}");
                    return Err(FsError::Io(format!("{url}: {why}")));
                }
                let open = self.ctx.content.insert(done).map_err(local)?;
                self.records.put(FileRecord {
                    path: path.to_string(),
                    generation,
                    size: Some(open.blob.size),
                    etag: meta.etag,
                    sha256: Some(open.blob.digest),
                    remote_sha256: meta.sha256,
                });
                Stats::add(&self.ctx.stats.cache_misses, 1);
                if let Some(difference) = announced.difference(open.blob) {
                    tracing::warn!(
                        tag = %self.name,
                        path,
                        "the tag changed on the server: {url} is not the file announced \
                         earlier in this session ({difference}); the new content is kept"
                    );
                    self.ctx.changed(&self.name, Some(path));
                    if announced.size_differs(open.blob) {
                        // The kernel holds the old size and would cut the
                        // new bytes short: the next open reads them whole.
                        return Err(FsError::Stale);
                    }
                }
                Ok(open)
            }
        }
    }

    /// A tier is served only once its `.tier_complete` sentinel exists. A
    /// positive answer is kept with the manifest; a negative one for the
    /// session.
    fn ensure_tier_complete(&self, source: &str, tier: &str) -> Result<(), FsError> {
        let key = format!("{source}/{tier}");
        let refused = || {
            FsError::Io(format!(
                "tier {key} of tag {} is not marked complete on the server",
                self.name
            ))
        };
        if self.state.lock().complete_tiers.contains(&key) {
            return Ok(());
        }
        self.tier_checks.run(&key, || {
            if self.state.lock().complete_tiers.contains(&key) {
                return Ok(());
            }
            if self.incomplete_tiers.lock().contains(&key) {
                return Err(refused());
            }
            let sentinel = format!("{key}/.tier_complete");
            match self.ctx.remote.head(&self.name, &sentinel) {
                Ok(_) => {
                    let mut state = self.state.lock();
                    state.complete_tiers.insert(key.clone());
                    self.save_state(&state);
                    Ok(())
                }
                Err(FetchError::NotFound) => {
                    tracing::error!(
                        tag = %self.name,
                        tier = %key,
                        "the tier is not marked complete ({} is missing); its files are not served",
                        self.ctx.remote.url(&self.name, &sentinel)
                    );
                    self.incomplete_tiers.lock().insert(key.clone());
                    Err(refused())
                }
                Err(e) => {
                    tracing::warn!(tag = %self.name, tier = %key, "cannot check that the tier is complete: {e}");
                    Err(FsError::Io(format!("cannot check that tier {key} is complete: {e}")))
                }
            }
        })
    }
}
