//! The release the adversary publishes, as a model it can change: the
//! manifest's sources and tiers, each catalog's materials (with or without
//! `texture_hashes`), and the blob every texture path holds. Rendered, it
//! is the files of one revision in the mat-vis layout; the views say what
//! each manifest and catalog version means, for the oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use matvisfs_sample::sha256_hex;
use rand::Rng;
use serde_json::{Value, json};

use super::blob::{BlobSpec, Format};
use super::history::{Content, DocView, Document, Texture};
use super::views::{CatalogView, ManifestView, Material, tier_format};

pub const TAG: &str = "v2026.04.2";
pub const MANIFEST: &str = "release-manifest.json";
/// The tier the catalogs' `texture_hashes` describe.
pub const BAKED_TIER: &str = "1k";

#[derive(Debug, Clone)]
pub struct Source {
    /// Texture tiers the manifest lists.
    pub tiers: BTreeSet<String>,
    /// Every tier the source may ever have (the manifest's and spares).
    pub possible_tiers: Vec<String>,
    pub channels: Vec<String>,
    pub materials: BTreeMap<String, Material>,
    /// Every material id the source may ever have.
    pub possible_materials: Vec<String>,
    /// Whether the catalog carries `texture_hashes` (for the baked tier).
    pub hashes: bool,
    /// Bumped by every rewrite of the catalog, so that no catalog ever
    /// returns to earlier bytes (see docs/caching.md: a tag whose manifest and
    /// catalogs return to earlier bytes keeps the files of that version).
    pub catalog_revision: u64,
}

pub fn texture_path(source: &str, tier: &str, id: &str, channel: &str) -> String {
    let ext = tier_format(tier).extension();
    format!("{source}/{tier}/{id}/{channel}.{ext}")
}

pub fn catalog_path(source: &str) -> String {
    format!("{source}.json")
}

/// `(source, tier, material, file)` of a texture path.
pub fn split_texture_path(path: &str) -> Option<(&str, &str, &str, &str)> {
    match path.split('/').collect::<Vec<_>>()[..] {
        [source, tier, id, file] => Some((source, tier, id, file)),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct Release {
    pub manifest_revision: u64,
    pub sources: BTreeMap<String, Source>,
    /// Every texture the server holds, referenced by a catalog or not.
    pub textures: BTreeMap<String, Texture>,
    /// `<source>/<tier>` directories with a `.tier_complete`.
    pub sentinels: BTreeSet<String>,
    /// Files emptied by a zero-byte upload, with the bytes they had.
    pub emptied: BTreeMap<String, Texture>,
    next_blob: u64,
}

/// Sizes of big files: about half past 4 MiB, the largest download the
/// mount holds in memory.
const BIG_SIZES: std::ops::Range<u64> = 1_500_000..6_500_000;

/// Big files from the start, and their sizes: one past 4 MiB (fetched at
/// its opens), one under.
const BIG_FROM_THE_START: [(&str, std::ops::Range<u64>); 2] = [
    ("ambientcg/512/Wood051/normal.png", 4_300_000..6_500_000),
    ("polyhaven/1k/brick_wall_02/color.png", 1_500_000..4_100_000),
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A size for a new file of `tier`: small mostly, now and then more than
/// a MiB (several reads of one file, more than a small cache cap).
pub fn texture_size(rng: &mut impl Rng, tier: &str) -> u64 {
    if rng.random_ratio(1, 40) {
        return rng.random_range(BIG_SIZES);
    }
    let top: u64 = match tier.trim_start_matches("ktx2-") {
        "1k" => 48 << 10,
        "512" => 16 << 10,
        _ => 6 << 10,
    };
    rng.random_range(BlobSpec::MIN_SIZE..top)
}

impl Release {
    /// The release a run starts from: two texture sources, one with
    /// catalog hashes and a KTX2 tier, each with a spare tier and spare
    /// materials for the mutations to add.
    pub fn initial(rng: &mut impl Rng) -> Release {
        let mut release = Release {
            manifest_revision: 0,
            sources: BTreeMap::new(),
            textures: BTreeMap::new(),
            sentinels: BTreeSet::new(),
            emptied: BTreeMap::new(),
            next_blob: 1,
        };
        let sources = [
            (
                "ambientcg",
                &["1k", "512", "ktx2-512"][..],
                "256",
                &["ao", "color", "normal", "roughness"][..],
                &["Bricks076", "Metal032", "Rock064", "Tiles101", "Wood051"][..],
                &["Fabric045", "Ground033", "Marble012"][..],
                true,
            ),
            (
                "polyhaven",
                &["1k", "512"][..],
                "ktx2-1k",
                &["color", "normal", "roughness"][..],
                &["brick_wall_02", "forest_ground_04", "rusty_metal_02"][..],
                &["plaster_05", "wood_floor_deck"][..],
                false,
            ),
        ];
        for (name, tiers, spare, channels, materials, spare_materials, hashes) in sources {
            let mut possible_tiers = strings(tiers);
            possible_tiers.push(spare.to_string());
            let mut possible_materials = strings(materials);
            possible_materials.extend(strings(spare_materials));
            release.sources.insert(
                name.to_string(),
                Source {
                    tiers: tiers.iter().map(|t| t.to_string()).collect(),
                    possible_tiers,
                    channels: strings(channels),
                    materials: BTreeMap::new(),
                    possible_materials,
                    hashes,
                    catalog_revision: 0,
                },
            );
            for tier in tiers {
                release.sentinels.insert(format!("{name}/{tier}"));
            }
            for (index, id) in materials.iter().enumerate() {
                // Every third material lacks the last tier, so that tier
                // listings differ.
                let mut material_tiers: Vec<&str> = tiers.to_vec();
                if index % 3 == 2 {
                    material_tiers.pop();
                }
                release.add_material(rng, name, id, &material_tiers);
            }
        }
        // Files of a few MiB from the start: read in many pieces, and
        // larger than a small cache cap.
        for (path, sizes) in BIG_FROM_THE_START {
            let size = rng.random_range(sizes);
            release.set_new_blob(path, size);
        }
        release
    }

    /// Paths the load and the mutations pick more often than others: the
    /// big files, and one channel in every tier of a material (baked
    /// file and derived twins).
    pub fn hot_paths() -> Vec<String> {
        let mut out: Vec<String> = BIG_FROM_THE_START
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        for tier in ["1k", "512", "ktx2-512", "256"] {
            out.push(texture_path("ambientcg", tier, "Rock064", "color"));
        }
        out.push(texture_path("polyhaven", "512", "brick_wall_02", "color"));
        out
    }

    pub fn new_blob(&mut self, format: Format, size: u64) -> Texture {
        let spec = BlobSpec {
            id: self.next_blob,
            format,
            size,
        };
        self.next_blob += 1;
        Texture {
            spec,
            sha256: sha256_hex(&spec.bytes()).into(),
        }
    }

    /// Gives `path` new bytes of `size`.
    pub fn set_new_blob(&mut self, path: &str, size: u64) -> Texture {
        let format = Format::of_path(path).expect("a texture path");
        let texture = self.new_blob(format, size);
        self.textures.insert(path.to_string(), texture.clone());
        texture
    }

    /// Adds material `id` to `source` in `tiers`, with new files.
    pub fn add_material(&mut self, rng: &mut impl Rng, source: &str, id: &str, tiers: &[&str]) {
        let channels = self.sources[source].channels.clone();
        for tier in tiers {
            for channel in &channels {
                let path = texture_path(source, tier, id, channel);
                let size = texture_size(rng, tier);
                self.set_new_blob(&path, size);
            }
        }
        let source = self.sources.get_mut(source).expect("a known source");
        source.materials.insert(
            id.to_string(),
            Material {
                tiers: tiers.iter().map(|t| t.to_string()).collect(),
                channels,
            },
        );
        source.catalog_revision += 1;
    }

    /// Every texture path the release may ever have.
    pub fn possible_textures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, source) in &self.sources {
            for tier in &source.possible_tiers {
                for id in &source.possible_materials {
                    for channel in &source.channels {
                        out.push(texture_path(name, tier, id, channel));
                    }
                }
            }
        }
        out
    }

    /// Every directory under the tag the release may ever have, the tag
    /// itself as "".
    pub fn possible_directories(&self) -> Vec<String> {
        let mut out = vec![String::new()];
        for (name, source) in &self.sources {
            out.push(name.clone());
            for tier in &source.possible_tiers {
                out.push(format!("{name}/{tier}"));
                for id in &source.possible_materials {
                    out.push(format!("{name}/{tier}/{id}"));
                }
            }
        }
        out
    }

    pub fn manifest_view(&self) -> ManifestView {
        ManifestView {
            sources: self
                .sources
                .iter()
                .map(|(name, s)| (name.clone(), s.tiers.clone()))
                .collect(),
        }
    }

    pub fn catalog_view(&self, source: &str) -> CatalogView {
        let s = &self.sources[source];
        let mut hashes = BTreeMap::new();
        if s.hashes {
            for (id, material) in &s.materials {
                if !material.tiers.contains(BAKED_TIER) {
                    continue;
                }
                for channel in &material.channels {
                    let path = texture_path(source, BAKED_TIER, id, channel);
                    if let Some(texture) = self.textures.get(&path) {
                        hashes.insert(path, (texture.sha256.to_string(), texture.spec.size));
                    }
                }
            }
        }
        CatalogView {
            materials: s.materials.clone(),
            hashes,
        }
    }

    fn manifest_json(&self) -> Value {
        let mut sources = serde_json::Map::new();
        for (name, source) in &self.sources {
            let tiers: serde_json::Map<String, Value> = source
                .tiers
                .iter()
                .map(|t| (t.clone(), json!({"complete": true})))
                .collect();
            sources.insert(
                name.clone(),
                json!({"catalog": catalog_path(name), "tiers": tiers}),
            );
        }
        json!({
            "schema_version": 3,
            "release_tag": TAG,
            // Unknown to readers; makes every rewrite new bytes.
            "revision": self.manifest_revision,
            "sources": sources,
        })
    }

    fn catalog_json(&self, name: &str, view: &CatalogView) -> Value {
        let source = &self.sources[name];
        let entries: Vec<Value> = view
            .materials
            .iter()
            .map(|(id, material)| {
                let mut entry = json!({
                    "id": id,
                    "source": name,
                    "mat_vis": {"name": id.replace('_', " "), "category": "generated"},
                    "maps": material.channels,
                    "available_tiers": material.tiers,
                    "upstream": {"revision": source.catalog_revision},
                });
                if source.hashes {
                    let hashes: serde_json::Map<String, Value> = material
                        .channels
                        .iter()
                        .filter_map(|channel| {
                            let path = texture_path(name, BAKED_TIER, id, channel);
                            let (sha256, size) = view.hashes.get(&path)?;
                            Some((channel.clone(), json!({"sha256": sha256, "size": size})))
                        })
                        .collect();
                    entry["texture_hashes"] = Value::Object(hashes);
                }
                entry
            })
            .collect();
        Value::Array(entries)
    }

    /// Every file of the revision.
    pub fn render(&self) -> BTreeMap<String, Content> {
        let mut files = BTreeMap::new();
        let document = |bytes: Vec<u8>, view: DocView| {
            Content::Document(Document {
                sha256: sha256_hex(&bytes).into(),
                bytes: Arc::from(bytes),
                view,
            })
        };
        files.insert(
            MANIFEST.to_string(),
            document(
                to_json(&self.manifest_json()),
                DocView::Manifest(Arc::new(self.manifest_view())),
            ),
        );
        for name in self.sources.keys() {
            let view = self.catalog_view(name);
            let bytes = to_json(&self.catalog_json(name, &view));
            files.insert(
                catalog_path(name),
                document(bytes, DocView::Catalog(Arc::new(view))),
            );
        }
        for sentinel in &self.sentinels {
            files.insert(
                format!("{sentinel}/.tier_complete"),
                document(format!("{TAG}\n").into_bytes(), DocView::Plain),
            );
        }
        for (path, texture) in &self.textures {
            files.insert(path.clone(), Content::Texture(texture.clone()));
        }
        files
    }
}

fn to_json(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serializable");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_initial_release_is_complete_and_truthful() {
        let release = Release::initial(&mut ChaCha8Rng::seed_from_u64(1));
        let files = release.render();
        for (name, source) in &release.sources {
            let Some(Content::Document(doc)) = files.get(&catalog_path(name)) else {
                panic!("no catalog for {name}");
            };
            let catalog: Value = serde_json::from_slice(&doc.bytes).unwrap();
            for entry in catalog.as_array().unwrap() {
                let id = entry["id"].as_str().unwrap();
                for tier in entry["available_tiers"].as_array().unwrap() {
                    for channel in &source.channels {
                        let path = texture_path(name, tier.as_str().unwrap(), id, channel);
                        assert!(files.contains_key(&path), "{path}");
                    }
                }
                if source.hashes {
                    let hash = &entry["texture_hashes"]["color"];
                    let Some(Content::Texture(t)) =
                        files.get(&texture_path(name, BAKED_TIER, id, "color"))
                    else {
                        panic!("no baked color for {id}");
                    };
                    assert_eq!(hash["sha256"].as_str(), Some(&*t.sha256));
                    assert_eq!(hash["size"].as_u64(), Some(t.spec.size));
                } else {
                    assert!(entry.get("texture_hashes").is_none());
                }
            }
            for tier in &source.tiers {
                assert!(files.contains_key(&format!("{name}/{tier}/.tier_complete")));
            }
        }
        // Same seed, same release.
        let again = Release::initial(&mut ChaCha8Rng::seed_from_u64(1)).render();
        assert_eq!(
            files
                .values()
                .map(|c| c.sha256().to_string())
                .collect::<Vec<_>>(),
            again
                .values()
                .map(|c| c.sha256().to_string())
                .collect::<Vec<_>>()
        );
    }
}
