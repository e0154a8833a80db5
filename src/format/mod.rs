//! The mat-vis documents: release manifest and per-source catalogs. Parsing
//! is lenient about what it does not know (unknown keys are ignored) and
//! strict about what reaches a path: every bad entry is skipped with a reason.

pub mod catalog;
mod conventions;
pub mod hub;
mod lenient;
mod location;
pub mod manifest;
pub mod mtlx_map;
pub mod pbr;
pub mod rowmap;

use thiserror::Error;

pub use catalog::{Catalog, Details, Material, TextureHash, parse_catalog};
pub use lenient::ValidName;
pub use location::Location;
pub use manifest::{
    ContainerPart, DocumentRole, MANIFEST_FILE, Manifest, SourceSpec, parse_manifest,
};
pub use mtlx_map::{MaterialXMap, UpstreamDocument, parse_materialx_map, upstream_document};
pub use pbr::Pbr;
pub use rowmap::{Rowmap, RowmapMaterial, Slice, parse_rowmap};

/// Why a whole document was refused.
#[derive(Debug, Error)]
pub enum FormatError {
    #[error("not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("unexpected shape: {0}")]
    WrongShape(String),
    #[error("unsupported schema: {0}")]
    UnsupportedSchema(String),
}

/// A parsed document together with the entries that were left out of it.
#[derive(Debug)]
pub struct Parsed<T> {
    pub value: T,
    pub skipped: Vec<String>,
}

/// The JSON type of a value, for reasons: the value itself may be huge.
fn json_type(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a MaterialX map (`{"<material id>": "<MaterialX XML>"}`). It is
/// served as it is, so only its shape matters: a JSON object.
pub fn check_materialx_map(bytes: &[u8]) -> Result<(), FormatError> {
    // Values are skipped, not built: any depth is fine.
    serde_json::from_slice::<std::collections::HashMap<String, serde::de::IgnoredAny>>(bytes)
        .map(drop)
        .map_err(|e| lenient::refusal(bytes, e, "the MaterialX map is not a JSON object"))
}

/// Texture file extension for a tier: KTX2 tiers are named `ktx2-<size>`.
pub fn texture_extension(tier: &str) -> &'static str {
    if tier.starts_with("ktx2-") {
        "ktx2"
    } else {
        "png"
    }
}

/// Whether a path in a revision names a texture file.
pub fn is_texture_path(path: &str) -> bool {
    path.ends_with(".png") || path.ends_with(".ktx2")
}

/// The tier whose files the catalogs' `texture_hashes` describe; other
/// tiers are derived from it and have no hashes.
pub const BAKED_TIER: &str = "1k";

/// The tier that holds catalog values only and never has files.
pub const SCALAR_TIER: &str = "scalar";
