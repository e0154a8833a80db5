//! Sizes from the Hugging Face API's tree listing instead of one HEAD per
//! file: the first size asked for in a material lists that material (one
//! call for all its channels); once a few materials of a tier were listed
//! in a session (`ls -l`, `du` or `find -size` walking it), the whole tier
//! is listed at once, 1000 files a call.
//!
//! What a listing may prove. It is asked for by the commit the tag resolved
//! to in this session when the server named one: a listing of a commit
//! cannot be stale, whoever caches it. From the Hub itself and of that
//! commit, an LFS file's sha256 names its bytes (the CDN serves the object
//! by that very address), so bytes cached under another path or tag serve
//! it with no request. Any other listing (a mirror in the Hub's layout,
//! whose API and files may disagree, or a listing asked for by the tag's
//! name) gives sizes, and its sha256 only as a hint: where the hinted bytes
//! are cached, one HEAD asks the path's own digest before they are served.
//! Only files of the current view's catalogs are kept, and none whose sha256
//! or size contradicts the catalog's hash for it: the catalog's word stands.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use super::identity::{announced_record, contradicts_catalog};
use super::verify::MIN_TEXTURE_SIZE;
use crate::dataset::missing;
use crate::dataset::tag_context::TagContext;
use crate::dataset::tree::{Lookup, Node};
use crate::flight::SingleFlight;
use crate::format::hub::TreeFile;
use crate::format::is_texture_path;
use crate::store::{Blob, FileRecord, FileRecords};

/// Material listings in a tier before the whole tier is listed.
const MATERIALS_BEFORE_TIER: u32 = 2;

/// Hints kept before they are dropped all at once (a few tiers' worth).
const HINTS_KEPT: usize = 200_000;

#[derive(Default)]
pub struct TreeSizes {
    /// What listings that prove nothing said of each file's bytes, by
    /// path: the generation it was said of, and the bytes.
    hints: Mutex<HashMap<String, (u64, Blob)>>,
    /// `(generation, directory)` already listed (or tried) this session.
    listed: Mutex<HashSet<(u64, String)>>,
    /// Material listings per `(generation, source/tier)`.
    materials: Mutex<HashMap<(u64, String), u32>>,
    flights: SingleFlight<(u64, String), ()>,
}

impl TreeSizes {
    /// The bytes a listing that proves nothing named for `path` in this
    /// generation, if any.
    pub fn hint(&self, path: &str, generation: u64) -> Option<Blob> {
        let hints = self.hints.lock();
        let &(listed_in, blob) = hints.get(path)?;
        (listed_in == generation).then_some(blob)
    }

    /// Records the sizes of `path`'s directory from the tree listing, when
    /// the API is there and has not listed it yet this session.
    pub fn list_for(&self, t: &TagContext, records: &FileRecords, path: &str, generation: u64) {
        let Some(hub) = t.ctx.remote.hub() else {
            return;
        };
        let mut parts = path.splitn(4, '/');
        let (Some(source), Some(tier), Some(material), Some(_file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let tier_dir = format!("{source}/{tier}");
        let material_dir = format!("{tier_dir}/{material}");
        let sizes = self;
        let dir = {
            let listed = sizes.listed.lock();
            if listed.contains(&(generation, tier_dir.clone()))
                || listed.contains(&(generation, material_dir.clone()))
            {
                return;
            }
            let mut materials = sizes.materials.lock();
            let count = materials.entry((generation, tier_dir.clone())).or_insert(0);
            if *count >= MATERIALS_BEFORE_TIER {
                tier_dir
            } else {
                *count += 1;
                material_dir
            }
        };
        let key = (generation, dir);
        sizes.flights.run(&key, || {
            if sizes.listed.lock().contains(&key) {
                return;
            }
            let commit = match t.immutable {
                true => Some(t.name.to_string()),
                false => t.commit.lock().clone(),
            };
            let revision = commit.as_deref().unwrap_or(&t.name);
            match hub.tree(revision, &key.1) {
                Ok(listing) => {
                    if listing.cut_short.is_none() {
                        missing::not_listed(t, &key.1, &listing.files, generation);
                    }
                    let prefix = format!("{}/", key.1);
                    let files = listing
                        .files
                        .into_iter()
                        .filter(|f| f.path.starts_with(&prefix) && is_texture_path(&f.path));
                    let proves = match (commit, listing.from_hub) {
                        (Some(_), true) => Proves::Content,
                        _ => Proves::SizesOnly,
                    };
                    let hints = record_listed(t, records, files, generation, proves);
                    let mut kept = sizes.hints.lock();
                    if kept.len() + hints.len() > HINTS_KEPT {
                        kept.clear();
                    }
                    kept.extend(
                        hints
                            .into_iter()
                            .map(|(path, blob)| (path, (generation, blob))),
                    );
                }
                // Counted and logged by the hub's guard.
                Err(e) => tracing::debug!(tag = %t.name, dir = key.1, "no tree listing: {e}"),
            }
            sizes.listed.lock().insert(key.clone());
        });
    }
}

/// What a listing's entries are taken as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proves {
    /// Of the commit being served, by the Hub itself: sizes, validators
    /// and sha256.
    Content,
    /// Sizes; sha256 as hints.
    SizesOnly,
}

/// Records what the listing says of the files of this version's catalogs.
/// Sizes too small for a texture are not recorded (a HEAD asks again), nor
/// anything about a file whose bytes were already proven, nor what
/// contradicts the catalog (logged: the server disagrees with itself).
/// Returns the hints: the bytes named by a listing that proves sizes only.
fn record_listed(
    t: &TagContext,
    records: &FileRecords,
    files: impl Iterator<Item = TreeFile>,
    generation: u64,
    proves: Proves,
) -> Vec<(String, Blob)> {
    let view = t.version.view();
    if view.generation != generation {
        return Vec::new();
    }
    let mut hints = Vec::new();
    let mut contradicted: Vec<String> = Vec::new();
    let mut listed: Vec<FileRecord> = Vec::new();
    for f in files.filter(|f| f.size >= MIN_TEXTURE_SIZE) {
        let Lookup::Found(Node::Texture(texture)) = view.resolve(&f.path) else {
            continue;
        };
        if contradicts_catalog(texture.hash, f.sha256, f.size) {
            if let Some(hash) = texture.hash {
                contradicted.push(format!(
                    "{}: the listing says {} bytes{}, the catalog sha256 {} ({} bytes)",
                    f.path,
                    f.size,
                    f.sha256
                        .map(|s| format!(" with sha256 {s}"))
                        .unwrap_or_default(),
                    hash.sha256,
                    hash.size
                ));
            }
            continue;
        }
        let current = records.get(&f.path).filter(|r| r.generation == generation);
        if current.is_some_and(|r| r.sha256.is_some()) {
            continue;
        }
        listed.push(match proves {
            Proves::Content => {
                announced_record(records, &f.path, generation, f.size, Some(f.etag), f.sha256)
            }
            Proves::SizesOnly => {
                if let Some(digest) = f.sha256 {
                    hints.push((
                        f.path.clone(),
                        Blob {
                            digest,
                            size: f.size,
                        },
                    ));
                }
                announced_record(records, &f.path, generation, f.size, None, None)
            }
        });
    }
    if let Some(first) = contradicted.first() {
        tracing::warn!(
            tag = %t.name,
            files = contradicted.len(),
            "the Hub's tree listing and the catalog disagree; the catalog's hash is kept: {first}"
        );
    }
    tracing::debug!(tag = %t.name, files = listed.len(), ?proves, "sizes from the tree listing");
    records.put_all(listed);
    hints
}
