//! Sizes from the Hugging Face API's tree listing instead of one HEAD per
//! file: the first size asked for in a material lists that material (one
//! call for all its channels); once a few materials of a tier were listed
//! in a session (`ls -l`, `du` or `find -size` walking it), the whole tier
//! is listed at once, 1000 files a call.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use super::identity::announced_record;
use super::verify::MIN_TEXTURE_SIZE;
use crate::dataset::shared::Shared;
use crate::flight::SingleFlight;
use crate::format::hub::TreeFile;
use crate::format::is_texture_path;
use crate::store::{FileRecord, FileRecords};

/// Material listings in a tier before the whole tier is listed.
const MATERIALS_BEFORE_TIER: u32 = 2;

#[derive(Default)]
pub struct TreeSizes {
    /// `(generation, directory)` already listed (or tried) this session.
    listed: Mutex<HashSet<(u64, String)>>,
    /// Material listings per `(generation, source/tier)`.
    materials: Mutex<HashMap<(u64, String), u32>>,
    flights: SingleFlight<(u64, String), ()>,
}

impl TreeSizes {
    /// Records the sizes of `path`'s directory from the tree listing, when
    /// the API is there and has not listed it yet this session.
    pub fn list_for(&self, t: &Shared, records: &FileRecords, path: &str, generation: u64) {
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
            match hub.tree(&t.name, &key.1) {
                Ok(listing) => {
                    let prefix = format!("{}/", key.1);
                    let files = listing
                        .files
                        .into_iter()
                        .filter(|f| f.path.starts_with(&prefix) && is_texture_path(&f.path));
                    record_listed(t, records, files, generation);
                }
                // Counted and logged by the hub's guard.
                Err(e) => tracing::debug!(tag = %t.name, dir = key.1, "no tree listing: {e}"),
            }
            sizes.listed.lock().insert(key.clone());
        });
    }
}

/// Sizes too small for a texture are not recorded: a HEAD asks again.
fn record_listed(
    t: &Shared,
    records: &FileRecords,
    files: impl Iterator<Item = TreeFile>,
    generation: u64,
) {
    let listed: Vec<FileRecord> = files
        .filter(|f| f.size >= MIN_TEXTURE_SIZE)
        .map(|f| announced_record(records, &f.path, generation, f.size, Some(f.etag), f.sha256))
        .collect();
    tracing::debug!(tag = %t.name, files = listed.len(), "sizes from the tree listing");
    records.put_all(listed);
}
