//! Exact sizes without downloads: from the file records of this version,
//! the catalog's hash for a baked-tier file, a container's rowmap, the
//! Hugging Face tree listing, or one HEAD request. In a tier whose files
//! have come whole in [`FIRST_BYTES`] bytes, the request for a size is a GET
//! of that many first bytes instead: a file that small comes whole, is
//! checked and kept like any download, and its read needs no request; at
//! the first larger file the tier goes back to HEADs.

use std::collections::HashSet;

use parking_lot::Mutex;

use super::FileRequest;
use super::downloaded::{keep_download, start_download};
use super::identity::{self, announced_record};
use super::tree_sizes::TreeSizes;
use super::verify::{MIN_TEXTURE_SIZE, check_announced_size};
use crate::dataset::error::{Error, Result};
use crate::dataset::missing;
use crate::dataset::tree::TextureRef;
use crate::flight::SingleFlight;
use crate::format::Location;
use crate::remote::{FetchError, RemoteMeta};
use crate::store::{Blob, FileRecords};
use crate::wait;

/// How much of a file a request for its size asks for, in a tier whose
/// files come whole in that much.
pub const FIRST_BYTES: u64 = 64 * 1024;

#[derive(Default)]
pub struct Sizes {
    flight: SingleFlight<String, Result<u64>>,
    tree: TreeSizes,
    /// Tiers (`source/tier`) with a file of at most [`FIRST_BYTES`] seen
    /// whole from a plain answer (no redirect naming its size).
    small_tiers: Mutex<HashSet<String>>,
    /// Tiers with a file larger than that: their sizes come from HEADs.
    large_tiers: Mutex<HashSet<String>>,
}

impl Sizes {
    /// Whether a request for a size in `tier` should be a GET of the first
    /// bytes: a file of it came whole in that many bytes, none was larger,
    /// and the tier is known complete (bytes of an incomplete one are not
    /// kept).
    fn first_bytes_for(&self, request: &FileRequest, tier: &str) -> bool {
        self.small_tiers.lock().contains(tier)
            && !self.large_tiers.lock().contains(tier)
            && request.t.version.state().is_complete(tier)
    }

    /// What an answer says of its tier's files.
    fn saw(&self, tier: String, meta: &RemoteMeta) {
        match meta.size {
            Some(size) if size > FIRST_BYTES => {
                self.large_tiers.lock().insert(tier);
            }
            // A size a redirect names comes in one request already.
            Some(_) if meta.sha256.is_none() => {
                self.small_tiers.lock().insert(tier);
            }
            _ => {}
        }
    }
}

impl FileRequest<'_> {
    fn tier_key(&self) -> String {
        format!("{}/{}", self.texture.source, self.texture.tier)
    }
}

/// The size of a texture when it is known for this version without asking:
/// the catalog's, for a file it gives a hash for, whatever else was said.
pub fn known_size(
    records: &FileRecords,
    path: &str,
    texture: &TextureRef,
    generation: u64,
) -> Option<u64> {
    if let Some(slice) = texture.slice {
        return Some(slice.slice.length);
    }
    texture.hash.map(|hash| hash.size).or_else(|| {
        records
            .size_at(path, generation)
            .filter(|&size| size >= MIN_TEXTURE_SIZE)
    })
}

impl Sizes {
    /// The bytes a listing that proves nothing named for `path`.
    pub fn hint(&self, path: &str, generation: u64) -> Option<Blob> {
        self.tree.hint(path, generation)
    }
}

impl FileRequest<'_> {
    /// The exact size of the texture, from what is known or from the server.
    pub fn size(&self) -> Result<u64> {
        let (records, path, generation) = (self.records(), self.path, self.generation);
        if let Some(size) = known_size(records, path, self.texture, generation) {
            return Ok(size);
        }
        wait::may_block()?;
        let sizes = &self.files.sizes;
        sizes.flight.run(&path.to_string(), || {
            sizes.tree.list_for(self.t, records, path, generation);
            match known_size(records, path, self.texture, generation) {
                Some(size) => Ok(size),
                // The listing said the server lacks it.
                None if self.t.version.view().absent.contains(path) => Err(Error::NotFound),
                None if sizes.first_bytes_for(self, &self.tier_key()) => first_bytes(self),
                None => head(self),
            }
        })
    }
}

/// Asks the server for the file's size and validators (and its sha256,
/// where it states one), and records them under the request's generation.
pub fn head(request: &FileRequest) -> Result<u64> {
    let (t, path, generation) = (request.t, request.path, request.generation);
    let file = Location::revision(path);
    let url = t.url(&file);
    let remote = t.remote(&url, "the size is unknown")?;
    let meta = match remote.head(&t.name, &file) {
        Ok(meta) => meta,
        Err(FetchError::NotFound) => return Err(missing::answered_404(t, path, generation)),
        Err(e) => return Err(Error::fetch(&url, e)),
    };
    t.saw(&meta);
    request.files.sizes.saw(request.tier_key(), &meta);
    record_announced(request, &url, meta)
}

/// The size an answer announced, recorded with its validators.
fn record_announced(request: &FileRequest, url: &str, meta: RemoteMeta) -> Result<u64> {
    let (records, path, generation) = (request.records(), request.path, request.generation);
    let Some(size) = meta.size else {
        return Err(Error::refused(url, "the server gave no size"));
    };
    // Not remembered: the next stat asks again.
    check_announced_size(size).map_err(|why| Error::refused(url, why))?;
    records.put(announced_record(
        records,
        path,
        generation,
        size,
        meta.etag,
        meta.sha256,
    ));
    Ok(size)
}

/// The size by a GET of the file's first [`FIRST_BYTES`] bytes: a file that
/// came whole is checked and kept as any download; of a larger one only
/// the size is taken, and its tier goes back to HEADs. A server that does
/// not answer such a GET as expected is asked with a HEAD.
fn first_bytes(request: &FileRequest) -> Result<u64> {
    let (t, path, generation) = (request.t, request.path, request.generation);
    let file = Location::revision(path);
    let url = t.url(&file);
    let remote = t.remote(&url, "the size is unknown")?;
    let mut ingest = start_download(request)?;
    let tier = request.tier_key();
    let sizes = &request.files.sizes;
    let (meta, whole) = match remote.first_bytes(&t.name, &file, FIRST_BYTES, &mut ingest) {
        Ok(answer) => answer,
        Err(FetchError::NotFound) => return Err(missing::answered_404(t, path, generation)),
        Err(e @ (FetchError::Status(_) | FetchError::Rejected(_))) => {
            tracing::debug!(%url, "a GET of the first bytes failed ({e}): the tier's sizes come from HEADs");
            sizes.large_tiers.lock().insert(tier);
            return head(request);
        }
        Err(e) => return Err(Error::fetch(&url, e)),
    };
    if !whole {
        t.saw(&meta);
        sizes.saw(tier, &meta);
        return record_announced(request, &url, meta);
    }
    let record = request.records().get(path);
    let identity = identity::proven(record.as_ref(), request.texture.hash, generation);
    let open = keep_download(request, record, identity, &meta, ingest, &url)?;
    Ok(open.blob.size)
}
