//! The mutation model: what one publication does to the release, chosen by
//! a seeded generator, so that a seed gives the same sequence of
//! publications whatever the timing. Every catalog keeps its hashes
//! truthful (computed from the files of the same publication), and no
//! manifest or catalog ever returns to earlier bytes.

use rand::Rng;
use rand::seq::IndexedRandom;

use super::model::{BAKED_TIER, Release, split_texture_path, texture_path, texture_size};

/// The kinds of change, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    SameSize,
    NewSize,
    MaterialAdded,
    MaterialRemoved,
    CatalogRewritten,
    TwinSize,
    Emptied,
    Fixed,
    TierAdded,
    TierRemoved,
    ManifestRewritten,
    ManifestUnchanged,
    CopiedBytes,
    /// A texture the catalogs do not prove replaced alone (a re-upload
    /// through the Hub): only the commit moves.
    TextureOnly,
}

/// One publication's changes: in words, and by kind.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub described: Vec<String>,
    pub kinds: Vec<Mutation>,
}

impl Changes {
    fn add(&mut self, kind: Mutation, what: String) {
        self.kinds.push(kind);
        self.described.push(what);
    }
}

/// Changes `release` for one publication: one change, or now and then
/// several at once.
pub fn publication(release: &mut Release, rng: &mut impl Rng) -> Changes {
    let manifest_before = release.manifest_view();
    let catalogs_before: Vec<_> = release
        .sources
        .keys()
        .map(|s| (s.clone(), release.catalog_view(s)))
        .collect();
    let mut changes = Changes::default();
    let steps = if rng.random_ratio(1, 6) {
        rng.random_range(2..=4)
    } else {
        1
    };
    for _ in 0..steps {
        one_change(release, rng, &mut changes);
    }
    // New bytes for every changed document, never earlier ones.
    if release.manifest_view() != manifest_before {
        release.manifest_revision += 1;
    }
    for (source, before) in catalogs_before {
        if release.catalog_view(&source) != before {
            release
                .sources
                .get_mut(&source)
                .expect("a known source")
                .catalog_revision += 1;
        }
    }
    changes
}

/// A publication that replaces one texture no catalog hash covers, and
/// nothing else: the manifest and catalogs keep their bytes, and only the
/// commit moves.
pub fn texture_only(release: &mut Release, rng: &mut impl Rng) -> Changes {
    let mut changes = Changes::default();
    let candidates: Vec<String> = referenced(release)
        .into_iter()
        .filter(|path| describe_file(release, path) == " (manifest and catalog untouched)")
        .collect();
    let Some(path) = candidates.choose(rng).cloned() else {
        return changes;
    };
    let tier = split_texture_path(&path).map_or("", |p| p.1).to_string();
    let size = match rng.random_bool(0.5) {
        true if release.textures[&path].spec.size > 0 => release.textures[&path].spec.size,
        _ => texture_size(rng, &tier),
    };
    let new = release.set_new_blob(&path, size);
    changes.add(
        Mutation::TextureOnly,
        format!(
            "{path}: replaced alone, {} (only the commit moves)",
            new.spec
        ),
    );
    changes
}

/// Texture paths the catalogs reference now.
fn referenced(release: &Release) -> Vec<String> {
    let mut out = Vec::new();
    for (name, source) in &release.sources {
        for (id, material) in &source.materials {
            for tier in &material.tiers {
                for channel in &material.channels {
                    let path = texture_path(name, tier, id, channel);
                    if release.textures.contains_key(&path) {
                        out.push(path);
                    }
                }
            }
        }
    }
    out
}

/// Whether changing `path` alone would leave its catalog's hash untrue:
/// then the catalog changes with it (the model renders hashes from the
/// files), which is what the publication does.
fn describe_file(release: &Release, path: &str) -> &'static str {
    let hashed = split_texture_path(path)
        .is_some_and(|(source, tier, _, _)| tier == BAKED_TIER && release.sources[source].hashes);
    if hashed {
        " (its catalog hash follows)"
    } else {
        " (manifest and catalog untouched)"
    }
}

fn one_change(release: &mut Release, rng: &mut impl Rng, changes: &mut Changes) {
    let referenced = referenced(release);
    let hot: Vec<String> = Release::hot_paths()
        .into_iter()
        .filter(|p| referenced.contains(p))
        .collect();
    let pool = if rng.random_ratio(1, 3) && !hot.is_empty() {
        &hot
    } else {
        &referenced
    };
    let Some(path) = pool.choose(rng).cloned() else {
        return;
    };
    let source_names: Vec<String> = release.sources.keys().cloned().collect();
    let source_name = source_names.choose(rng).expect("sources").clone();
    match rng.random_range(0..100) {
        0..=21 => {
            let tier = split_texture_path(&path).map_or("", |p| p.1).to_string();
            let size = match release.textures[&path].spec.size {
                // An emptied file gets a real size again.
                0 => texture_size(rng, &tier),
                size => size,
            };
            let new = release.set_new_blob(&path, size);
            let note = describe_file(release, &path);
            changes.add(
                Mutation::SameSize,
                format!("{path}: same size, new bytes {}{note}", new.spec),
            );
        }
        22..=35 => {
            let tier = split_texture_path(&path).map_or("", |p| p.1).to_string();
            let size = texture_size(rng, &tier);
            let new = release.set_new_blob(&path, size);
            let note = describe_file(release, &path);
            changes.add(
                Mutation::NewSize,
                format!("{path}: new size, {}{note}", new.spec),
            );
        }
        36..=43 => {
            let source = &release.sources[&source_name];
            let absent: Vec<String> = source
                .possible_materials
                .iter()
                .filter(|id| !source.materials.contains_key(*id))
                .cloned()
                .collect();
            let Some(id) = absent.choose(rng).cloned() else {
                return;
            };
            let mut tiers: Vec<String> = source.tiers.iter().cloned().collect();
            if tiers.len() > 1 && rng.random_bool(0.3) {
                tiers.pop();
            }
            let channels = source.channels.clone();
            let tier_refs: Vec<&str> = tiers.iter().map(String::as_str).collect();
            // Files left on the server by an earlier removal come back
            // as they were, now and then.
            let keep_old = rng.random_bool(0.3);
            let kept: Vec<_> = tier_refs
                .iter()
                .flat_map(|t| channels.iter().map(move |c| (t, c)))
                .filter_map(|(t, c)| {
                    let p = texture_path(&source_name, t, &id, c);
                    release.textures.get(&p).map(|tex| (p, tex.clone()))
                })
                .collect();
            release.add_material(rng, &source_name, &id, &tier_refs);
            if keep_old {
                for (p, texture) in kept {
                    release.textures.insert(p, texture);
                }
            }
            changes.add(
                Mutation::MaterialAdded,
                format!("{source_name}: material {id} added in {tiers:?}"),
            );
        }
        44..=49 => {
            let source = &release.sources[&source_name];
            if source.materials.len() <= 2 {
                return;
            }
            let ids: Vec<String> = source.materials.keys().cloned().collect();
            let id = ids.choose(rng).expect("materials").clone();
            let remove_files = rng.random_bool(0.5);
            let source = release.sources.get_mut(&source_name).expect("source");
            source.materials.remove(&id);
            if remove_files {
                let prefix_of = |p: &String| {
                    split_texture_path(p).is_some_and(|(s, _, m, _)| s == source_name && m == id)
                };
                release.textures.retain(|p, _| !prefix_of(p));
            }
            changes.add(
                Mutation::MaterialRemoved,
                format!(
                    "{source_name}: material {id} removed from the catalog{}",
                    if remove_files {
                        ", its files too"
                    } else {
                        ", its files left on the server"
                    }
                ),
            );
        }
        50..=57 => {
            let source = release.sources.get_mut(&source_name).expect("source");
            if rng.random_bool(0.5) {
                source.hashes = !source.hashes;
            }
            // A rewrite with the same content still gets new bytes.
            source.catalog_revision += 1;
            let with = if source.hashes { "with" } else { "without" };
            changes.add(
                Mutation::CatalogRewritten,
                format!("{source_name}.json rewritten {with} texture_hashes"),
            );
        }
        58..=65 => {
            // A derived tier's file with exactly its baked twin's size.
            let Some((source, tier, id, file)) = split_texture_path(&path) else {
                return;
            };
            let channel = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
            let twin = texture_path(source, BAKED_TIER, id, channel);
            let derived: Vec<String> = release.sources[source]
                .possible_tiers
                .iter()
                .filter(|t| *t != BAKED_TIER)
                .map(|t| texture_path(source, t, id, channel))
                .filter(|p| release.textures.contains_key(p))
                .collect();
            let target = if tier == BAKED_TIER {
                derived.choose(rng).cloned()
            } else {
                Some(path.clone())
            };
            let (Some(target), Some(size)) = (
                target,
                release
                    .textures
                    .get(&twin)
                    .map(|t| t.spec.size)
                    .filter(|s| *s > 0),
            ) else {
                return;
            };
            let new = release.set_new_blob(&target, size);
            changes.add(
                Mutation::TwinSize,
                format!("{target}: {} with exactly the size of {twin}", new.spec),
            );
        }
        66..=69 => {
            let before = release.textures[&path].clone();
            release.set_new_blob(&path, 0);
            release.emptied.insert(path.clone(), before);
            changes.add(
                Mutation::Emptied,
                format!(
                    "{path}: a zero-byte upload{}",
                    describe_file(release, &path)
                ),
            );
        }
        70..=74 => {
            let emptied: Vec<String> = release.emptied.keys().cloned().collect();
            let Some(path) = emptied.choose(rng).cloned() else {
                return;
            };
            let before = release.emptied.remove(&path).expect("listed");
            if release.textures.get(&path).is_none_or(|t| t.spec.size != 0) {
                // Changed or gone since: nothing to fix.
                return;
            }
            // Fixed with the bytes it had before, or with new ones.
            let before = Some(before).filter(|t| t.spec.size > 0 && rng.random_bool(0.5));
            let what = match before {
                Some(texture) => {
                    let label = texture.spec.to_string();
                    release.textures.insert(path.clone(), texture);
                    format!("{path}: fixed, the bytes it had before ({label})")
                }
                None => {
                    let tier = split_texture_path(&path).map_or("", |p| p.1).to_string();
                    let size = texture_size(rng, &tier);
                    let new = release.set_new_blob(&path, size);
                    format!("{path}: fixed with new bytes {}", new.spec)
                }
            };
            changes.add(Mutation::Fixed, what);
        }
        75..=80 => {
            let source = &release.sources[&source_name];
            let absent: Vec<String> = source
                .possible_tiers
                .iter()
                .filter(|t| !source.tiers.contains(*t))
                .cloned()
                .collect();
            let present: Vec<String> = source
                .tiers
                .iter()
                .filter(|t| *t != BAKED_TIER)
                .cloned()
                .collect();
            if let (Some(tier), true) = (absent.choose(rng).cloned(), rng.random_bool(0.5)) {
                add_tier(release, rng, &source_name, &tier, changes);
            } else if let Some(tier) = present.choose(rng).cloned() {
                remove_tier(release, rng, &source_name, &tier, changes);
            }
        }
        81..=84 => {
            release.manifest_revision += 1;
            changes.add(
                Mutation::ManifestRewritten,
                "release-manifest.json rewritten, same sources and tiers".into(),
            );
        }
        85..=87 => {
            changes.add(
                Mutation::ManifestUnchanged,
                "release-manifest.json published again, unchanged".into(),
            );
        }
        _ => {
            // Another path's bytes, exactly: the same blob at two paths.
            let Some(from) = referenced
                .iter()
                .filter(|p| **p != path && p.rsplit('.').next() == path.rsplit('.').next())
                .collect::<Vec<_>>()
                .choose(rng)
                .map(|p| (*p).clone())
            else {
                return;
            };
            let texture = release.textures[&from].clone();
            let label = texture.spec.to_string();
            release.textures.insert(path.clone(), texture);
            changes.add(
                Mutation::CopiedBytes,
                format!(
                    "{path}: the bytes of {from} ({label}){}",
                    describe_file(release, &path)
                ),
            );
        }
    }
}

fn add_tier(
    release: &mut Release,
    rng: &mut impl Rng,
    source_name: &str,
    tier: &str,
    changes: &mut Changes,
) {
    let ids: Vec<String> = release.sources[source_name]
        .materials
        .keys()
        .cloned()
        .collect();
    let channels = release.sources[source_name].channels.clone();
    // Files left from an earlier removal are reused now and then.
    let reuse = rng.random_bool(0.5);
    for id in &ids {
        for channel in &channels {
            let path = texture_path(source_name, tier, id, channel);
            if !(reuse && release.textures.contains_key(&path)) {
                let size = texture_size(rng, tier);
                release.set_new_blob(&path, size);
            }
        }
    }
    let in_catalog = rng.random_bool(0.8);
    let source = release.sources.get_mut(source_name).expect("source");
    source.tiers.insert(tier.to_string());
    if in_catalog {
        for material in source.materials.values_mut() {
            material.tiers.insert(tier.to_string());
        }
    }
    release.sentinels.insert(format!("{source_name}/{tier}"));
    changes.add(
        Mutation::TierAdded,
        format!(
            "{source_name}/{tier} added to the manifest{}",
            if in_catalog {
                " and to every material's available_tiers"
            } else {
                " (no material has it: an empty directory)"
            }
        ),
    );
}

fn remove_tier(
    release: &mut Release,
    rng: &mut impl Rng,
    source_name: &str,
    tier: &str,
    changes: &mut Changes,
) {
    let from_catalog = rng.random_bool(0.5);
    let remove_files = rng.random_bool(0.5);
    let source = release.sources.get_mut(source_name).expect("source");
    source.tiers.remove(tier);
    if from_catalog {
        for material in source.materials.values_mut() {
            material.tiers.remove(tier);
        }
    }
    if remove_files {
        release.textures.retain(|p, _| {
            !split_texture_path(p).is_some_and(|(s, t, _, _)| s == source_name && t == tier)
        });
        release.sentinels.remove(&format!("{source_name}/{tier}"));
    }
    changes.add(
        Mutation::TierRemoved,
        format!(
            "{source_name}/{tier} removed from the manifest{}{}",
            if from_catalog {
                " and from available_tiers"
            } else {
                ""
            },
            if remove_files {
                ", its files too"
            } else {
                ", its files left on the server"
            }
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adversary::history::Content;
    use crate::adversary::model::{MANIFEST, catalog_path};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeSet;

    #[test]
    fn publications_are_deterministic_truthful_and_never_repeat_a_document() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut release = Release::initial(&mut rng);
            let mut seen: BTreeSet<String> = BTreeSet::new();
            let mut last = release.render();
            let mut kinds = BTreeSet::new();
            let mut log = Vec::new();
            for _ in 0..400 {
                let changes = publication(&mut release, &mut rng);
                kinds.extend(changes.kinds.iter().copied());
                log.extend(changes.described);
                let files = release.render();
                for name in release.sources.keys() {
                    let catalog = catalog_path(name);
                    let (Content::Document(old), Content::Document(new)) =
                        (&last[&catalog], &files[&catalog])
                    else {
                        panic!("catalogs are documents");
                    };
                    if old.sha256 != new.sha256 {
                        assert!(seen.insert(new.sha256.to_string()), "{catalog} repeated");
                    }
                }
                let (Content::Document(old), Content::Document(new)) =
                    (&last[MANIFEST], &files[MANIFEST])
                else {
                    panic!("the manifest is a document");
                };
                if old.sha256 != new.sha256 {
                    assert!(seen.insert(new.sha256.to_string()), "manifest repeated");
                }
                // Hashes are true for the files of the same publication.
                for name in release.sources.keys() {
                    for (path, (sha256, size)) in release.catalog_view(name).hashes {
                        let Content::Texture(t) = &files[&path] else {
                            panic!("{path} is a texture");
                        };
                        assert_eq!((&*t.sha256, t.spec.size), (sha256.as_str(), size));
                    }
                }
                last = files;
            }
            (kinds, log)
        };
        let (kinds, log) = run(5);
        assert_eq!(kinds.len(), 13, "every kind of change happens: {kinds:?}");
        assert_eq!(run(5).1, log, "a seed gives one sequence");
        assert_ne!(run(6).1, log);
    }
}
