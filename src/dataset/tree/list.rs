//! Directory listings of a tag's tree, against one view.

use super::{Lookup, MaterialRef, Node, TierRef, in_tier, tier_channels};
use crate::dataset::entries::Entries;
use crate::dataset::view::{Kind, TagView};
use crate::format::{MANIFEST_FILE, SCALAR_TIER, texture_extension};

impl TagView {
    /// Names and kinds in a directory, sorted by name, each once;
    /// `Found(None)` for a file or a link.
    pub fn list(&self, path: &str) -> Lookup<Option<Entries>> {
        let node = found!(self.resolve(path));
        let mut out = Entries::default();
        match node {
            Node::Manifest
            | Node::Document(_)
            | Node::Texture(_)
            | Node::Generated(_)
            | Node::Link(_) => return Lookup::Found(None),
            Node::TagRoot => {
                out.push(MANIFEST_FILE, Kind::File);
                for source in &self.manifest.sources {
                    for document in source.catalog.iter().chain(&source.mtlx) {
                        if self.lists_document(source, document) {
                            out.push(document, Kind::File);
                        }
                    }
                    if self.dir_source(&source.name).is_some() {
                        out.push(&source.name, Kind::Dir);
                    }
                }
            }
            Node::Source => {
                let source = self.dir_source(path).expect("resolved as a source");
                out.extend(source.tiers.iter().map(|t| (t, Kind::Dir)));
                for extra in [SCALAR_TIER, "auto", "best"] {
                    if !source.tiers.iter().any(|t| t == extra)
                        && self.tier_of(source, extra).is_some()
                    {
                        out.push(extra, Kind::Dir);
                    }
                }
            }
            Node::Tier => {
                let (source, tier) = path.split_once('/').expect("resolved as a tier");
                let source = self.dir_source(source).expect("resolved as a tier");
                match self.rowmaps_of(source, tier).map(Lookup::into_found) {
                    Some(Ok(rowmaps)) => {
                        for (_, rowmap, _) in rowmaps {
                            out.extend(rowmap.materials.iter().map(|m| (&m.id, Kind::Dir)));
                        }
                    }
                    Some(Err(pending)) => return pending,
                    None => {
                        let (_, catalog) = found!(self.catalog_for(source));
                        out.extend(
                            catalog
                                .materials
                                .iter()
                                .filter(|m| in_tier(m, tier))
                                .map(|m| (&m.id, Kind::Dir)),
                        );
                    }
                }
            }
            Node::Ladder => {
                let (source, name) = path.split_once('/').expect("resolved as a ladder");
                let source = self.dir_source(source).expect("resolved as a ladder");
                let Some(TierRef::Ladder(ladder)) = self.tier_of(source, name) else {
                    return Lookup::Missing;
                };
                let (_, catalog) = found!(self.catalog_for(source));
                out.extend(
                    catalog
                        .materials
                        .iter()
                        .filter(|m| {
                            ladder.iter().any(|tier| {
                                source.tiers.iter().any(|t| t == tier) && m.in_tier(tier)
                            })
                        })
                        .map(|m| (&m.id, Kind::Symlink)),
                );
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
                match found!(self.material(source, tier, id)) {
                    MaterialRef::Catalog(m, _) => {
                        if tier != SCALAR_TIER {
                            out.extend(
                                tier_channels(m, tier)
                                    .map(|c| format!("{c}.{ext}"))
                                    .filter(|f| {
                                        self.absent.is_empty()
                                            || !self.is_absent(&format!("{path}/{f}"))
                                    })
                                    .map(|f| (f, Kind::File)),
                            );
                        }
                        let generated = found!(self.generated(source, tier, m));
                        out.extend(generated.into_iter().map(|(name, _)| (name, Kind::File)));
                    }
                    MaterialRef::Rowmap(m, _, _) => out.extend(
                        m.slices
                            .iter()
                            .map(|(c, _)| (format!("{c}.{ext}"), Kind::File)),
                    ),
                }
            }
        }
        Lookup::Found(Some(out.sorted()))
    }
}

impl TagView {
    /// The texture files this view names below `dir` (a tier,
    /// `<source>/<tier>`, or a material, `<source>/<tier>/<id>`), by path,
    /// leaving out those known absent; `None` when that is not known
    /// without loading a document, or the tier is in containers.
    pub fn textures_below(&self, dir: &str) -> Option<Vec<String>> {
        let mut parts = dir.split('/');
        let (source, tier, id) = (parts.next()?, parts.next()?, parts.next());
        if parts.next().is_some() || tier == SCALAR_TIER {
            return None;
        }
        let source = self.dir_source(source)?;
        if !source.tiers.iter().any(|t| t == tier) || source.container_parts(tier).is_some() {
            return None;
        }
        let Lookup::Found((_, catalog)) = self.catalog_for(source) else {
            return None;
        };
        let ext = texture_extension(tier);
        let materials: Vec<_> = match id {
            Some(id) => catalog.material(id).into_iter().collect(),
            None => catalog.materials.iter().collect(),
        };
        Some(
            materials
                .into_iter()
                .filter(|m| m.in_tier(tier))
                .flat_map(|m| {
                    tier_channels(m, tier)
                        .map(move |c| format!("{}/{tier}/{}/{c}.{ext}", source.name, m.id))
                })
                .filter(|path| !self.is_absent(path))
                .collect(),
        )
    }
}
