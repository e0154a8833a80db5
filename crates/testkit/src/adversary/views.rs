//! What each manifest and catalog version says, as the oracle reads it:
//! the tiers of each source, and each material's tiers and channels, with
//! the baked tier's hashes.

use std::collections::{BTreeMap, BTreeSet};

use super::blob::Format;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub tiers: BTreeSet<String>,
    pub channels: Vec<String>,
}

/// What a manifest version says: each texture source's tiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestView {
    pub sources: BTreeMap<String, BTreeSet<String>>,
}

/// What a catalog version says: its materials, and the hashes of the
/// baked tier's files by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogView {
    pub materials: BTreeMap<String, Material>,
    pub hashes: BTreeMap<String, (String, u64)>,
}

impl CatalogView {
    /// The material ids a tier directory lists.
    pub fn in_tier(&self, tier: &str) -> BTreeSet<String> {
        self.materials
            .iter()
            .filter(|(_, m)| m.tiers.contains(tier))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The files of a material's directory in `tier`, when it has one.
    pub fn files(&self, tier: &str, id: &str) -> Option<BTreeSet<String>> {
        let material = self.materials.get(id).filter(|m| m.tiers.contains(tier))?;
        let ext = tier_format(tier).extension();
        Some(
            material
                .channels
                .iter()
                .map(|c| format!("{c}.{ext}"))
                .collect(),
        )
    }
}

pub fn tier_format(tier: &str) -> Format {
    if tier.starts_with("ktx2-") {
        Format::Ktx2
    } else {
        Format::Png
    }
}
