//! One immutable snapshot of a tag's tree, built from its manifest and the
//! catalogs loaded so far. Resolving a path is pure: when a catalog that is
//! not loaded yet is needed, the answer says which.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::FsError;
use crate::format::{Catalog, MANIFEST_FILE, Manifest, SourceSpec, TextureHash, texture_extension};
use crate::store::Blob;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// A catalog or MaterialX document in memory.
#[derive(Debug, Clone)]
pub struct LoadedDoc {
    pub blob: Blob,
    /// Parsed entries, for catalogs; MaterialX maps are only served.
    pub catalog: Option<Arc<Catalog>>,
}

#[derive(Debug)]
pub struct TagView {
    pub generation: u64,
    pub mtime: SystemTime,
    pub manifest: Arc<Manifest>,
    pub manifest_blob: Blob,
    pub documents: HashMap<String, LoadedDoc>,
}

/// A texture file, with names borrowed from the tree it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextureRef<'v> {
    pub source: &'v str,
    pub tier: &'v str,
    pub material: &'v str,
    pub channel: &'v str,
    /// The catalog that lists this texture.
    pub catalog: &'v str,
    /// What the catalog says about the baked tier's bytes of this channel.
    pub hash: Option<TextureHash>,
}

impl TextureRef<'_> {
    pub fn extension(&self) -> &'static str {
        texture_extension(self.tier)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node<'v> {
    TagRoot,
    Manifest,
    Document(&'v str),
    Source,
    Tier,
    Material,
    Texture(TextureRef<'v>),
}

impl Node<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Node::Manifest | Node::Document(_) | Node::Texture(_) => Kind::File,
            Node::TagRoot | Node::Source | Node::Tier | Node::Material => Kind::Dir,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    Missing,
    /// This document must be loaded before the question can be answered.
    NeedsDocument(String),
}

impl<T> Lookup<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(value) => Lookup::Found(f(value)),
            Lookup::Missing => Lookup::Missing,
            Lookup::NeedsDocument(name) => Lookup::NeedsDocument(name),
        }
    }
}

impl TagView {
    fn dir_source(&self, name: &str) -> Option<&SourceSpec> {
        self.manifest.source(name).filter(|s| s.has_directory())
    }

    /// The source's catalog, when it is loaded.
    fn catalog_of<'a>(&'a self, source: &SourceSpec) -> Option<&'a Catalog> {
        self.documents
            .get(&source.catalog)
            .and_then(|d| d.catalog.as_deref())
    }

    /// The node at `path`, once every document it needs is loaded.
    pub fn node(&self, path: &str) -> Result<Node<'_>, FsError> {
        match self.resolve(path) {
            Lookup::Found(node) => Ok(node),
            Lookup::Missing | Lookup::NeedsDocument(_) => Err(FsError::NotFound),
        }
    }

    pub fn resolve(&self, path: &str) -> Lookup<Node<'_>> {
        if path.is_empty() {
            return Lookup::Found(Node::TagRoot);
        }
        let mut parts = path.split('/');
        let first = parts.next().unwrap_or_default();
        let (second, third, fourth) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() {
            return Lookup::Missing;
        }
        let Some(second) = second else {
            return match self.manifest.document_owner(first) {
                _ if first == MANIFEST_FILE => Lookup::Found(Node::Manifest),
                Some(owner) if owner.catalog == first => {
                    Lookup::Found(Node::Document(&owner.catalog))
                }
                Some(owner) => {
                    Lookup::Found(Node::Document(owner.mtlx.as_deref().unwrap_or_default()))
                }
                None if self.dir_source(first).is_some() => Lookup::Found(Node::Source),
                None => Lookup::Missing,
            };
        };
        let Some(source) = self.dir_source(first) else {
            return Lookup::Missing;
        };
        let Some(tier) = source.tiers.iter().find(|t| *t == second) else {
            return Lookup::Missing;
        };
        let Some(third) = third else {
            return Lookup::Found(Node::Tier);
        };
        let Some(catalog) = self.catalog_of(source) else {
            return Lookup::NeedsDocument(source.catalog.clone());
        };
        let Some(material) = catalog.material(third).filter(|m| m.in_tier(tier)) else {
            return Lookup::Missing;
        };
        let Some(file) = fourth else {
            return Lookup::Found(Node::Material);
        };
        let channel = file
            .strip_suffix(texture_extension(tier))
            .and_then(|stem| stem.strip_suffix('.'))
            .and_then(|stem| material.channel(stem));
        match channel {
            Some(channel) => Lookup::Found(Node::Texture(TextureRef {
                source: &source.name,
                tier,
                material: &material.id,
                channel,
                catalog: &source.catalog,
                hash: material.hash(channel),
            })),
            None => Lookup::Missing,
        }
    }

    /// Names and kinds in a directory, sorted by name; `Found(None)` for a file.
    pub fn list(&self, path: &str) -> Lookup<Option<Vec<(String, Kind)>>> {
        let node = match self.resolve(path) {
            Lookup::Found(node) => node,
            other => return other.map(|_| None),
        };
        let mut out: Vec<(String, Kind)> = Vec::new();
        match node {
            Node::Manifest | Node::Document(_) | Node::Texture(_) => return Lookup::Found(None),
            Node::TagRoot => {
                out.push((MANIFEST_FILE.to_string(), Kind::File));
                for source in &self.manifest.sources {
                    out.push((source.catalog.clone(), Kind::File));
                    if let Some(mtlx) = &source.mtlx {
                        out.push((mtlx.clone(), Kind::File));
                    }
                    if source.has_directory() {
                        out.push((source.name.clone(), Kind::Dir));
                    }
                }
            }
            Node::Source => {
                let source = self.dir_source(path).expect("resolved as a source");
                out.extend(source.tiers.iter().map(|t| (t.clone(), Kind::Dir)));
            }
            Node::Tier => {
                let (source, tier) = path.split_once('/').expect("resolved as a tier");
                let source = self.dir_source(source).expect("resolved as a tier");
                let Some(catalog) = self.catalog_of(source) else {
                    return Lookup::NeedsDocument(source.catalog.clone());
                };
                out.extend(
                    catalog
                        .materials
                        .iter()
                        .filter(|m| m.in_tier(tier))
                        .map(|m| (m.id.to_string(), Kind::Dir)),
                );
            }
            Node::Material => {
                let mut parts = path.split('/');
                let (source, tier, id) = (parts.next(), parts.next(), parts.next());
                let (Some(source), Some(tier), Some(id)) = (source, tier, id) else {
                    return Lookup::Missing;
                };
                let source = self.dir_source(source).expect("resolved as a material");
                let catalog = self.catalog_of(source).expect("resolved a material in it");
                let Some(material) = catalog.material(id) else {
                    return Lookup::Missing;
                };
                let ext = texture_extension(tier);
                out.extend(
                    material
                        .channels
                        .iter()
                        .map(|c| (format!("{c}.{ext}"), Kind::File)),
                );
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Lookup::Found(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;
    use crate::format::{parse_catalog, parse_manifest};

    fn view(with_catalog: bool) -> TagView {
        let manifest = parse_manifest(
            br#"{"schema_version": 3, "sources": {
                "ambientcg": {"catalog": "ambientcg.json", "tiers": {"1k": {}, "ktx2-1k": {}, "512": {}}},
                "gpuopen": {"catalog": "gpuopen.json", "mtlx": "gpuopen-mtlx.json", "tiers": {"1k": {}}},
                "physicallybased": {"catalog": "physicallybased.json", "tiers": {"scalar": {}}}}}"#,
        )
        .unwrap()
        .value;
        let blob = Blob {
            digest: Sha256Digest::of(b""),
            size: 0,
        };
        let mut documents = HashMap::new();
        if with_catalog {
            let catalog = parse_catalog(
                br#"[{"id": "Rock064", "maps": ["color", "normal"], "available_tiers": ["1k", "ktx2-1k"]},
                     {"id": "Wood01", "maps": ["color"], "available_tiers": ["512"]}]"#,
            )
            .unwrap()
            .value;
            documents.insert(
                "ambientcg.json".to_string(),
                LoadedDoc {
                    blob,
                    catalog: Some(Arc::new(catalog)),
                },
            );
        }
        TagView {
            generation: 1,
            mtime: SystemTime::UNIX_EPOCH,
            manifest: Arc::new(manifest),
            manifest_blob: blob,
            documents,
        }
    }

    fn names(listing: Lookup<Option<Vec<(String, Kind)>>>) -> Vec<String> {
        match listing {
            Lookup::Found(Some(entries)) => entries.into_iter().map(|(n, _)| n).collect(),
            other => panic!("not a listing: {other:?}"),
        }
    }

    #[test]
    fn lists_the_tag_root_and_sources_without_catalogs() {
        let v = view(false);
        assert_eq!(
            names(v.list("")),
            [
                "ambientcg",
                "ambientcg.json",
                "gpuopen",
                "gpuopen-mtlx.json",
                "gpuopen.json",
                "physicallybased.json",
                "release-manifest.json"
            ]
        );
        assert_eq!(names(v.list("ambientcg")), ["1k", "512", "ktx2-1k"]);
        assert_eq!(
            v.list("ambientcg/1k"),
            Lookup::NeedsDocument("ambientcg.json".into())
        );
        assert_eq!(v.resolve("physicallybased"), Lookup::Missing);
        assert_eq!(v.resolve("ambientcg/2k"), Lookup::Missing);
        assert_eq!(
            v.resolve("gpuopen-mtlx.json"),
            Lookup::Found(Node::Document("gpuopen-mtlx.json"))
        );
    }

    #[test]
    fn resolves_materials_and_channels_per_tier() {
        let v = view(true);
        assert_eq!(names(v.list("ambientcg/1k")), ["Rock064"]);
        assert_eq!(names(v.list("ambientcg/512")), ["Wood01"]);
        assert_eq!(
            names(v.list("ambientcg/1k/Rock064")),
            ["color.png", "normal.png"]
        );
        assert_eq!(
            names(v.list("ambientcg/ktx2-1k/Rock064")),
            ["color.ktx2", "normal.ktx2"]
        );
        assert_eq!(v.resolve("ambientcg/512/Rock064"), Lookup::Missing);
        assert_eq!(
            v.resolve("ambientcg/1k/Rock064/color.ktx2"),
            Lookup::Missing
        );
        assert_eq!(
            v.resolve("ambientcg/1k/Rock064/roughness.png"),
            Lookup::Missing
        );
        assert_eq!(
            v.resolve("ambientcg/1k/Rock064/color.png/x"),
            Lookup::Missing
        );
        assert_eq!(
            v.list("ambientcg/1k/Rock064/color.png"),
            Lookup::Found(None)
        );
        match v.resolve("ambientcg/ktx2-1k/Rock064/normal.ktx2") {
            Lookup::Found(Node::Texture(t)) => {
                assert_eq!(
                    (t.source, t.tier, t.material),
                    ("ambientcg", "ktx2-1k", "Rock064")
                );
                assert_eq!((t.channel, t.extension()), ("normal", "ktx2"));
            }
            other => panic!("{other:?}"),
        }
        // Another source's catalog is still needed.
        assert_eq!(
            v.resolve("gpuopen/1k/x"),
            Lookup::NeedsDocument("gpuopen.json".into())
        );
    }
}
