//! The namespace of a tag, resolved against one view: sources, tiers,
//! materials and their files, and what the mount adds for the tools that
//! read plain files (unless `--raw`): generated MaterialX and USD documents
//! in every material directory, a `scalar/` directory for catalog values,
//! and `auto/` / `best/` links to each material's best tier. Pure: when a
//! document that is not loaded yet is needed, the answer says which.

use super::view::{DocContents, Kind, LoadedDoc, TagView};
use crate::dataset::files::verify::MIN_TEXTURE_SIZE;
use crate::format::{
    BAKED_TIER, Catalog, Location, MANIFEST_FILE, Material, Rowmap, RowmapMaterial, SCALAR_TIER,
    Slice, SourceSpec, TextureHash, UpstreamDocument, texture_extension,
};
use crate::materials::{Generated, Spec, generated_files};

/// The tier of previews: it holds one `thumb.png` per material and nothing
/// else, and no other tier has one, though `maps` names `thumb` for every
/// tier (as the bake writes it).
pub const THUMB_TIER: &str = "thumb";
const THUMB_CHANNEL: &str = "thumb";

/// The channels of a catalog material whose files are in `tier`, sorted.
pub fn tier_channels<'m>(material: &'m Material, tier: &str) -> impl Iterator<Item = &'m str> {
    let thumbs = tier == THUMB_TIER;
    material
        .channels()
        .filter(move |c| !thumbs && *c != THUMB_CHANNEL)
        .chain(thumbs.then_some(THUMB_CHANNEL))
}

/// The channel called `name` of a catalog material in `tier`, if the tier
/// has its file.
fn tier_channel<'m>(material: &'m Material, tier: &str, name: &str) -> Option<&'m str> {
    match tier {
        THUMB_TIER => (name == THUMB_CHANNEL).then_some(THUMB_CHANNEL),
        _ => material.channel(name).filter(|c| *c != THUMB_CHANNEL),
    }
}

/// The tiers `auto/` tries, in order, as the reference client does.
pub const AUTO_LADDER: &[&str] = &["1k", "512", "256", "128"];
/// The tiers `best/` tries, in order.
pub const BEST_LADDER: &[&str] = &["8k", "4k", "2k", "1k", "512", "256", "128"];

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

/// A document generated from the catalog beside a material's textures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratedRef<'v> {
    pub kind: Generated,
    /// The catalog it follows.
    pub document: &'v str,
    pub spec: Spec<'v>,
    /// For the upstream MaterialX document: its map and where it is in it.
    pub upstream: Option<(&'v str, &'v UpstreamDocument)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node<'v> {
    TagRoot,
    Manifest,
    Document(&'v str),
    Source,
    Tier,
    Material,
    Texture(TextureRef<'v>),
    Generated(GeneratedRef<'v>),
    /// `auto/` or `best/`: a link per material.
    Ladder,
    /// A symbolic link to a path relative to its directory.
    Link(String),
}

impl Node<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Node::Manifest | Node::Document(_) | Node::Texture(_) | Node::Generated(_) => {
                Kind::File
            }
            Node::TagRoot | Node::Source | Node::Tier | Node::Material | Node::Ladder => Kind::Dir,
            Node::Link(_) => Kind::Symlink,
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

macro_rules! found {
    ($lookup:expr) => {
        match $lookup.into_found() {
            Ok(value) => value,
            Err(pending) => return pending,
        }
    };
}

/// A rowmap of a tier: its name, its entries, where its container is.
type LoadedRowmap<'a> = (&'a str, &'a Rowmap, Option<&'a Location>);

/// A material as the tier it is in describes it.
enum MaterialRef<'v> {
    Catalog(&'v Material, &'v str),
    Rowmap(&'v RowmapMaterial, &'v str, Option<&'v Location>),
}

/// What a source directory's entry `name` is.
enum TierRef<'v> {
    Files(&'v str),
    Scalar,
    Ladder(&'static [&'static str]),
}

/// Generated documents go beside PNG textures of a size tier, and in the
/// scalar tier; thumbnails and KTX2 files get none.
fn has_documents(tier: &str) -> bool {
    tier == SCALAR_TIER || (texture_extension(tier) == "png" && tier != THUMB_TIER)
}

impl TagView {
    /// A source with a directory: texture tiers, or catalog values to
    /// generate documents from.
    fn dir_source(&self, name: &str) -> Option<&SourceSpec> {
        self.manifest
            .source(name)
            .filter(|s| s.has_directory() || (!self.raw && s.scalar))
    }

    /// Whether the server was found to lack `path` in this version.
    fn is_absent(&self, path: &str) -> bool {
        !self.absent.is_empty() && self.absent.contains(path)
    }

    /// Whether a document the manifest names (or, for a map, implies) is
    /// listed in the tag's directory: not when the server lacks it, and a
    /// map it does not name only once the server gave it this session.
    fn lists_document(&self, source: &SourceSpec, name: &str) -> bool {
        let implied = source.mtlx.as_deref() == Some(name) && !source.mtlx_named;
        !self.is_absent(name) && (!implied || self.documents.contains_key(name))
    }

    fn tier_of<'a>(&self, source: &'a SourceSpec, name: &str) -> Option<TierRef<'a>> {
        if let Some(tier) = source.tiers.iter().find(|t| *t == name) {
            return Some(TierRef::Files(tier));
        }
        if self.raw {
            return None;
        }
        match name {
            SCALAR_TIER if source.scalar => Some(TierRef::Scalar),
            "auto" if source.has_directory() && source.catalog.is_some() => {
                Some(TierRef::Ladder(AUTO_LADDER))
            }
            "best" if source.has_directory() && source.catalog.is_some() => {
                Some(TierRef::Ladder(BEST_LADDER))
            }
            _ => None,
        }
    }

    /// The source's catalog, when it is loaded.
    fn catalog_of<'a>(&'a self, catalog: &str) -> Option<&'a Catalog> {
        self.documents
            .get(catalog)
            .and_then(|d| d.catalog())
            .map(|catalog| &**catalog)
    }

    fn catalog_for<'a>(&'a self, source: &'a SourceSpec) -> Lookup<(&'a str, &'a Catalog)> {
        let Some(name) = source.catalog.as_deref() else {
            return Lookup::Missing;
        };
        match self.catalog_of(name) {
            Some(catalog) => Lookup::Found((name, catalog)),
            None => Lookup::NeedsDocument(name.to_string()),
        }
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
                    contents: DocContents::Rowmap { rowmap, container },
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
            let rowmaps = found!(rowmaps);
            return match rowmaps
                .iter()
                .find_map(|(key, r, container)| r.material(id).map(|m| (m, *key, *container)))
            {
                Some((m, key, container)) => Lookup::Found(MaterialRef::Rowmap(m, key, container)),
                None => Lookup::Missing,
            };
        }
        let (name, catalog) = found!(self.catalog_for(source));
        match catalog.material(id).filter(|m| in_tier(m, tier)) {
            Some(m) => Lookup::Found(MaterialRef::Catalog(m, name)),
            None => Lookup::Missing,
        }
    }

    /// The upstream MaterialX document of a material, when its source has a
    /// map and the map has it.
    fn upstream<'a>(
        &'a self,
        source: &'a SourceSpec,
        id: &str,
    ) -> Lookup<Option<(&'a str, &'a UpstreamDocument)>> {
        let Some(map_name) = source.mtlx.as_deref().filter(|m| !self.is_absent(m)) else {
            return Lookup::Found(None);
        };
        match self.documents.get(map_name).map(|d| d.materialx()) {
            Some(Some(map)) => Lookup::Found(map.document(id).map(|doc| (map_name, doc))),
            // Loaded, but not a map the documents can be taken from.
            Some(None) => Lookup::Found(None),
            None => Lookup::NeedsDocument(map_name.to_string()),
        }
    }

    /// The generated files of a catalog material in `tier`, with their kinds.
    fn generated<'a>(
        &'a self,
        source: &'a SourceSpec,
        tier: &str,
        material: &'a Material,
    ) -> Lookup<Vec<(String, GeneratedRef<'a>)>> {
        if self.raw || !has_documents(tier) {
            return Lookup::Found(Vec::new());
        }
        let Some(mut spec) = Spec::for_tier(material, tier) else {
            return Lookup::Found(Vec::new());
        };
        // The documents name only the files the server has.
        if !self.absent.is_empty() {
            for channel in spec.textures.iter() {
                let file = format!(
                    "{}/{tier}/{}/{}",
                    source.name,
                    material.id,
                    channel.file_name()
                );
                if self.is_absent(&file) {
                    spec.textures = spec.textures.without(channel);
                }
            }
        }
        let upstream = found!(self.upstream(source, &material.id));
        let ext = texture_extension(tier);
        let (kept, _left_out) = generated_files(&material.id, upstream.is_some(), |name| {
            name.strip_suffix(ext)
                .and_then(|stem| stem.strip_suffix('.'))
                .is_some_and(|stem| material.has_channel(stem))
        });
        let document = source.catalog.as_deref().unwrap_or_default();
        Lookup::Found(
            kept.into_iter()
                .map(|(kind, name)| {
                    let generated = GeneratedRef {
                        kind,
                        document,
                        spec,
                        upstream: upstream.filter(|_| kind == Generated::Upstream),
                    };
                    (name, generated)
                })
                .collect(),
        )
    }

    /// The node at `path`, once every document it needs is loaded.
    pub fn node(&self, path: &str) -> Result<Node<'_>, super::error::Error> {
        match self.resolve(path) {
            Lookup::Found(node) => Ok(node),
            Lookup::Missing | Lookup::NeedsDocument(_) => Err(super::error::Error::NotFound),
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
                Some(_) if self.is_absent(first) => Lookup::Missing,
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
        let Some(tier) = self.tier_of(source, second) else {
            return Lookup::Missing;
        };
        let Some(third) = third else {
            return Lookup::Found(match tier {
                TierRef::Ladder(_) => Node::Ladder,
                TierRef::Files(_) | TierRef::Scalar => Node::Tier,
            });
        };
        let tier = match tier {
            TierRef::Files(tier) => tier,
            TierRef::Scalar => SCALAR_TIER,
            TierRef::Ladder(ladder) => {
                if fourth.is_some() {
                    return Lookup::Missing;
                }
                return found!(self.ladder_target(source, ladder, third))
                    .map_or(Lookup::Missing, |tier| {
                        Lookup::Found(Node::Link(format!("../{tier}/{third}")))
                    });
            }
        };
        let material = found!(self.material(source, tier, third));
        let Some(file) = fourth else {
            return Lookup::Found(Node::Material);
        };
        let texture = match material {
            MaterialRef::Catalog(m, catalog) => {
                let channel = file
                    .strip_suffix(texture_extension(tier))
                    .and_then(|stem| stem.strip_suffix('.'))
                    .and_then(|stem| tier_channel(m, tier, stem))
                    .filter(|_| tier != SCALAR_TIER);
                match channel {
                    Some(_) if self.is_absent(path) => return Lookup::Missing,
                    Some(channel) => Some(TextureRef {
                        source: &source.name,
                        tier,
                        material: &m.id,
                        channel,
                        document: catalog,
                        // A size no texture can have is no proof of anything.
                        hash: m
                            .hash(channel)
                            .filter(|h| tier == BAKED_TIER && h.size >= MIN_TEXTURE_SIZE),
                        slice: None,
                    }),
                    None => {
                        let generated = found!(self.generated(source, tier, m));
                        return generated
                            .into_iter()
                            .find(|(name, _)| name == file)
                            .map_or(Lookup::Missing, |(_, g)| Lookup::Found(Node::Generated(g)));
                    }
                }
            }
            MaterialRef::Rowmap(m, rowmap, container) => file
                .strip_suffix(texture_extension(tier))
                .and_then(|stem| stem.strip_suffix('.'))
                .and_then(|stem| m.slice(stem))
                .map(|(channel, slice)| TextureRef {
                    source: &source.name,
                    tier,
                    material: &m.id,
                    channel,
                    document: rowmap,
                    hash: None,
                    slice: Some(ContainerSlice { container, slice }),
                }),
        };
        match texture {
            Some(texture) => Lookup::Found(Node::Texture(texture)),
            None => Lookup::Missing,
        }
    }

    /// The first tier of `ladder` that the manifest lists for `source` and
    /// material `id` is in (`None`: none is).
    fn ladder_target<'a>(
        &'a self,
        source: &'a SourceSpec,
        ladder: &[&'static str],
        id: &str,
    ) -> Lookup<Option<&'static str>> {
        let (_, catalog) = found!(self.catalog_for(source));
        let Some(material) = catalog.material(id) else {
            return Lookup::Found(None);
        };
        Lookup::Found(
            ladder
                .iter()
                .copied()
                .find(|tier| source.tiers.iter().any(|t| t == tier) && material.in_tier(tier)),
        )
    }
}

/// Whether a catalog material is listed in `tier`; the scalar tier also
/// holds older entries that give no tiers at all.
fn in_tier(material: &Material, tier: &str) -> bool {
    material.in_tier(tier) || (tier == SCALAR_TIER && !material.has_tiers())
}

mod list;
#[cfg(test)]
mod tests;
