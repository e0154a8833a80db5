//! One immutable snapshot of a tag's tree, built from its manifest and the
//! catalogs loaded so far, and the cell that holds the current one. Resolving
//! a path is pure: when a catalog that is not loaded yet is needed, the
//! answer says which. A new snapshot is only ever made by [`TagView::next`]
//! and put in place by [`ViewCell::update`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::error::Error;
use crate::format::{
    BAKED_TIER, Catalog, Location, MANIFEST_FILE, Manifest, Rowmap, RowmapMaterial, Slice,
    SourceSpec, TextureHash, texture_extension,
};
use crate::store::Blob;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// A catalog, MaterialX or rowmap document in memory.
#[derive(Debug, Clone)]
pub struct LoadedDoc {
    pub blob: Blob,
    /// Parsed entries, for catalogs; MaterialX maps are only served.
    pub catalog: Option<Arc<Catalog>>,
    pub rowmap: Option<Arc<Rowmap>>,
    /// For rowmaps: where their container is, found through the manifest.
    pub container: Option<Location>,
}

#[derive(Debug)]
pub struct TagView {
    /// Bumped whenever the manifest or a document changes on the server.
    pub generation: u64,
    /// Of every node: distinct for every generation, so that the kernel sees
    /// a changed directory as changed and drops the listing it kept.
    pub mtime: SystemTime,
    pub manifest: Arc<Manifest>,
    pub manifest_blob: Blob,
    pub documents: HashMap<String, LoadedDoc>,
}

/// The mtime of a version of a tag: when it changed, plus its generation in
/// nanoseconds, so that two changes within a second still differ.
pub fn version_mtime(changed_at: u64, generation: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(changed_at) + Duration::from_nanos(generation % 1_000_000_000)
}

/// What makes the next view of a tag.
pub enum Step {
    /// A document read for the first time (from the cache or the server):
    /// the tag's version is unchanged.
    Loaded(String, LoadedDoc),
    /// A document replaced by a different one from the server.
    Replaced {
        name: String,
        doc: LoadedDoc,
        generation: u64,
        changed_at: u64,
    },
    /// A new manifest: documents it no longer names are dropped.
    NewManifest {
        manifest: Arc<Manifest>,
        blob: Blob,
        generation: u64,
        changed_at: u64,
    },
}

impl TagView {
    pub fn first(manifest: Manifest, blob: Blob, generation: u64, changed_at: u64) -> TagView {
        TagView {
            generation,
            mtime: version_mtime(changed_at, generation),
            manifest: Arc::new(manifest),
            manifest_blob: blob,
            documents: HashMap::new(),
        }
    }

    /// The view after `step`; `None` when it changes nothing (a document
    /// loaded twice).
    pub fn next(&self, step: Step) -> Option<TagView> {
        match step {
            Step::Loaded(name, _) if self.documents.contains_key(&name) => None,
            Step::Loaded(name, doc) => {
                let mut documents = self.documents.clone();
                documents.insert(name, doc);
                Some(TagView {
                    documents,
                    manifest: self.manifest.clone(),
                    ..*self
                })
            }
            Step::Replaced {
                name,
                doc,
                generation,
                changed_at,
            } => {
                let mut documents = self.documents.clone();
                documents.insert(name, doc);
                Some(TagView {
                    generation,
                    mtime: version_mtime(changed_at, generation),
                    manifest: self.manifest.clone(),
                    manifest_blob: self.manifest_blob,
                    documents,
                })
            }
            Step::NewManifest {
                manifest,
                blob,
                generation,
                changed_at,
            } => {
                // Rowmaps are located through the manifest: read again.
                let documents = self
                    .documents
                    .iter()
                    .filter(|(name, _)| manifest.document_owner(name).is_some())
                    .map(|(name, doc)| (name.clone(), doc.clone()))
                    .collect();
                Some(TagView {
                    generation,
                    mtime: version_mtime(changed_at, generation),
                    manifest,
                    manifest_blob: blob,
                    documents,
                })
            }
        }
    }
}

/// The current view of a tag: read without locks, replaced whole.
pub struct ViewCell {
    current: ArcSwap<TagView>,
    /// Serialises replacements, so that none is built on a stale view.
    writer: Mutex<()>,
}

impl ViewCell {
    pub fn new(view: TagView) -> Self {
        ViewCell {
            current: ArcSwap::from_pointee(view),
            writer: Mutex::new(()),
        }
    }

    pub fn load(&self) -> Arc<TagView> {
        self.current.load_full()
    }

    /// Puts the view after `step` in place; returns the old and the new view
    /// when something changed.
    pub fn update(&self, step: Step) -> Option<(Arc<TagView>, Arc<TagView>)> {
        let _writer = self.writer.lock();
        let old = self.current.load_full();
        let new = Arc::new(old.next(step)?);
        self.current.store(new.clone());
        Some((old, new))
    }
}

/// A texture file, with names borrowed from the tree it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextureRef<'v> {
    pub source: &'v str,
    pub tier: &'v str,
    pub material: &'v str,
    pub channel: &'v str,
    /// The document that lists this texture (its catalog, or its rowmap).
    pub document: &'v str,
    /// What the catalog says about these very bytes: only in the baked
    /// tier, whose files its hashes describe.
    pub hash: Option<TextureHash>,
    /// Where the bytes are in a container (schema 1 and 2 releases).
    pub slice: Option<ContainerSlice<'v>>,
}

/// A texture's bytes inside a container file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerSlice<'v> {
    /// The container's location (`None`: the rowmap did not say).
    pub container: Option<&'v Location>,
    pub slice: Slice,
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

    /// The answer, or what stands in its way as a lookup of another type.
    pub fn into_found<U>(self) -> Result<T, Lookup<U>> {
        match self {
            Lookup::Found(value) => Ok(value),
            Lookup::Missing => Err(Lookup::Missing),
            Lookup::NeedsDocument(name) => Err(Lookup::NeedsDocument(name)),
        }
    }
}

/// A rowmap of a tier: its name, its entries, where its container is.
type LoadedRowmap<'a> = (&'a str, &'a Rowmap, Option<&'a Location>);

/// A material as the tier it is in describes it.
enum MaterialRef<'v> {
    Catalog(&'v crate::format::Material, &'v str),
    Rowmap(&'v RowmapMaterial, &'v str, Option<&'v Location>),
}

impl TagView {
    fn dir_source(&self, name: &str) -> Option<&SourceSpec> {
        self.manifest.source(name).filter(|s| s.has_directory())
    }

    /// The source's catalog, when it is loaded.
    fn catalog_of<'a>(&'a self, catalog: &str) -> Option<&'a Catalog> {
        self.documents
            .get(catalog)
            .and_then(|d| d.catalog.as_deref())
    }

    /// The rowmaps of a container tier, once all are loaded.
    fn rowmaps_of<'a>(
        &'a self,
        source: &'a SourceSpec,
        tier: &str,
    ) -> Option<Lookup<Vec<LoadedRowmap<'a>>>> {
        let parts = source.container_parts(tier)?;
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            let key = part.rowmap.key();
            match self.documents.get(key) {
                Some(LoadedDoc {
                    rowmap: Some(rowmap),
                    container,
                    ..
                }) => out.push((key, &**rowmap, container.as_ref())),
                _ => return Some(Lookup::NeedsDocument(key.to_string())),
            }
        }
        Some(Lookup::Found(out))
    }

    /// A material of a tier, from the tier's rowmaps or the source's catalog.
    fn material<'a>(
        &'a self,
        source: &'a SourceSpec,
        tier: &str,
        id: &str,
    ) -> Lookup<MaterialRef<'a>> {
        if let Some(rowmaps) = self.rowmaps_of(source, tier) {
            let rowmaps = match rowmaps.into_found() {
                Ok(rowmaps) => rowmaps,
                Err(pending) => return pending,
            };
            return match rowmaps
                .iter()
                .find_map(|(key, r, container)| r.material(id).map(|m| (m, *key, *container)))
            {
                Some((m, key, container)) => Lookup::Found(MaterialRef::Rowmap(m, key, container)),
                None => Lookup::Missing,
            };
        }
        let Some(catalog_name) = source.catalog.as_deref() else {
            return Lookup::Missing;
        };
        let Some(catalog) = self.catalog_of(catalog_name) else {
            return Lookup::NeedsDocument(catalog_name.to_string());
        };
        match catalog.material(id).filter(|m| m.in_tier(tier)) {
            Some(m) => Lookup::Found(MaterialRef::Catalog(m, catalog_name)),
            None => Lookup::Missing,
        }
    }

    /// The node at `path`, once every document it needs is loaded.
    pub fn node(&self, path: &str) -> Result<Node<'_>, Error> {
        match self.resolve(path) {
            Lookup::Found(node) => Ok(node),
            Lookup::Missing | Lookup::NeedsDocument(_) => Err(Error::NotFound),
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
            if first == MANIFEST_FILE {
                return Lookup::Found(Node::Manifest);
            }
            return match self.manifest.document_owner(first) {
                Some(owner) => Lookup::Found(Node::Document(
                    [owner.catalog.as_deref(), owner.mtlx.as_deref()]
                        .into_iter()
                        .flatten()
                        .find(|d| *d == first)
                        .unwrap_or_default(),
                )),
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
        let material = match self.material(source, tier, third).into_found() {
            Ok(material) => material,
            Err(pending) => return pending,
        };
        let Some(file) = fourth else {
            return Lookup::Found(Node::Material);
        };
        let Some(stem) = file
            .strip_suffix(texture_extension(tier))
            .and_then(|stem| stem.strip_suffix('.'))
        else {
            return Lookup::Missing;
        };
        let texture = match material {
            MaterialRef::Catalog(m, catalog) => m.channel(stem).map(|channel| TextureRef {
                source: &source.name,
                tier,
                material: &m.id,
                channel,
                document: catalog,
                // The catalog's hashes describe the baked tier's files only.
                hash: m.hash(channel).filter(|_| tier == BAKED_TIER),
                slice: None,
            }),
            MaterialRef::Rowmap(m, rowmap, container) => {
                m.slice(stem).map(|(channel, slice)| TextureRef {
                    source: &source.name,
                    tier,
                    material: &m.id,
                    channel,
                    document: rowmap,
                    hash: None,
                    slice: Some(ContainerSlice { container, slice }),
                })
            }
        };
        match texture {
            Some(texture) => Lookup::Found(Node::Texture(texture)),
            None => Lookup::Missing,
        }
    }

    /// Names and kinds in a directory, sorted by name; `Found(None)` for a file.
    pub fn list(&self, path: &str) -> Lookup<Option<Vec<(String, Kind)>>> {
        let node = match self.resolve(path).into_found() {
            Ok(node) => node,
            Err(pending) => return pending,
        };
        let mut out: Vec<(String, Kind)> = Vec::new();
        match node {
            Node::Manifest | Node::Document(_) | Node::Texture(_) => return Lookup::Found(None),
            Node::TagRoot => {
                out.push((MANIFEST_FILE.to_string(), Kind::File));
                for source in &self.manifest.sources {
                    for document in source.catalog.iter().chain(&source.mtlx) {
                        out.push((document.clone(), Kind::File));
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
                match self.rowmaps_of(source, tier).map(Lookup::into_found) {
                    Some(Ok(rowmaps)) => {
                        for (_, rowmap, _) in rowmaps {
                            out.extend(
                                rowmap
                                    .materials
                                    .iter()
                                    .map(|m| (m.id.to_string(), Kind::Dir)),
                            );
                        }
                        out.sort_by(|a, b| a.0.cmp(&b.0));
                        out.dedup_by(|a, b| a.0 == b.0);
                    }
                    Some(Err(pending)) => return pending,
                    None => {
                        let Some(catalog_name) = source.catalog.as_deref() else {
                            return Lookup::Found(Some(out));
                        };
                        let Some(catalog) = self.catalog_of(catalog_name) else {
                            return Lookup::NeedsDocument(catalog_name.to_string());
                        };
                        out.extend(
                            catalog
                                .materials
                                .iter()
                                .filter(|m| m.in_tier(tier))
                                .map(|m| (m.id.to_string(), Kind::Dir)),
                        );
                    }
                }
            }
            Node::Material => {
                let mut parts = path.split('/');
                let (Some(source), Some(tier), Some(id)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Lookup::Missing;
                };
                let source = self.dir_source(source).expect("resolved as a material");
                let ext = texture_extension(tier);
                let channels: Vec<&str> = match self.material(source, tier, id).into_found() {
                    Ok(MaterialRef::Catalog(m, _)) => m.channels.iter().map(|c| &**c).collect(),
                    Ok(MaterialRef::Rowmap(m, _, _)) => {
                        m.slices.iter().map(|(c, _)| &**c).collect()
                    }
                    Err(pending) => return pending,
                };
                out.extend(
                    channels
                        .into_iter()
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
                    rowmap: None,
                    container: None,
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
