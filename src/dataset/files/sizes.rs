//! Exact sizes without downloads: from the file records of this version,
//! the catalog's hash for a baked-tier file, a container's rowmap, the
//! Hugging Face tree listing, or one HEAD request.

use super::FileRequest;
use super::identity::announced_record;
use super::tree_sizes::TreeSizes;
use super::verify::{MIN_TEXTURE_SIZE, check_announced_size};
use crate::dataset::error::{Error, Result};
use crate::dataset::missing;
use crate::dataset::tree::TextureRef;
use crate::flight::SingleFlight;
use crate::format::Location;
use crate::remote::FetchError;
use crate::store::{Blob, FileRecords};
use crate::wait;

#[derive(Default)]
pub struct Sizes {
    flight: SingleFlight<String, Result<u64>>,
    tree: TreeSizes,
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
                None => head(self),
            }
        })
    }
}

/// Asks the server for the file's size and validators (and its sha256,
/// where it states one), and records them under the request's generation.
pub fn head(request: &FileRequest) -> Result<u64> {
    let (t, records, path, generation) = (
        request.t,
        request.records(),
        request.path,
        request.generation,
    );
    let file = Location::revision(path);
    let url = t.url(&file);
    let remote = t.remote(&url, "the size is unknown")?;
    let meta = match remote.head(&t.name, &file) {
        Ok(meta) => meta,
        Err(FetchError::NotFound) => return Err(missing::answered_404(t, path, generation)),
        Err(e) => return Err(Error::fetch(&url, e)),
    };
    t.saw(&meta);
    let Some(size) = meta.size else {
        return Err(Error::refused(url, "the server gave no size"));
    };
    // Not remembered: the next stat asks again.
    check_announced_size(size).map_err(|why| Error::refused(&url, why))?;
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
