//! What changed when a tag changed on the server: counts of materials, files
//! and tiers added, removed and changed, with the first few paths, so that a
//! harmless re-upload can be told from new data.

use std::cmp::Ordering;

use serde::Serialize;

use super::tree::tier_channels;
use super::version::unix_now;
use crate::format::{BAKED_TIER, Catalog, Manifest, Material, texture_extension};

/// Paths named in a report, at most.
const EXAMPLES: usize = 8;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
}

impl Counts {
    fn is_empty(&self) -> bool {
        self.added + self.removed + self.changed == 0
    }

    fn describe(&self, what: &str) -> Option<String> {
        (!self.is_empty()).then(|| {
            format!(
                "{what}: {} added, {} removed, {} changed",
                self.added, self.removed, self.changed
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeReport {
    pub at_unix: u64,
    /// What was found different: the manifest, a document, or one file.
    pub found_in: String,
    /// The tag's generation after the change.
    pub generation: u64,
    pub tiers: Counts,
    pub materials: Counts,
    pub files: Counts,
    /// The first paths concerned, `+` added, `-` removed, `~` changed.
    pub examples: Vec<String>,
    /// For a moved commit: the new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl ChangeReport {
    fn new(found_in: &str, generation: u64) -> Self {
        ChangeReport {
            at_unix: unix_now(),
            found_in: found_in.to_string(),
            generation,
            tiers: Counts::default(),
            materials: Counts::default(),
            files: Counts::default(),
            examples: Vec::new(),
            commit: None,
        }
    }

    fn example(&mut self, mark: char, path: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(format!("{mark}{path}"));
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            self.tiers.describe("tiers"),
            self.materials.describe("materials"),
            self.files.describe("files"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let summary = if let Some(commit) = &self.commit {
            format!(
                "the revision resolves to commit {commit} now; files the catalogs do not prove are \
                 checked again before they are served"
            )
        } else if parts.is_empty() {
            "no difference in the tree (the same entries, other bytes or order)".to_string()
        } else {
            parts.join("; ")
        };
        match self.examples.is_empty() {
            true => summary,
            false => format!("{summary} (e.g. {})", self.examples.join(", ")),
        }
    }

    /// A document whose entries are not compared (a MaterialX map, a
    /// rowmap, or one not read before).
    pub fn document(name: &str, generation: u64) -> Self {
        ChangeReport::new(name, generation)
    }

    /// The revision resolves to another commit, the manifest unchanged: any
    /// file the catalogs do not prove may have changed.
    pub fn commit(before: Option<&str>, after: &str, generation: u64) -> Self {
        let short = |c: &str| c.chars().take(12).collect::<String>();
        let mut report = ChangeReport::new(
            &format!(
                "commit {} -> {}",
                before.map(short).unwrap_or_else(|| "?".into()),
                short(after)
            ),
            generation,
        );
        report.commit = Some(after.to_string());
        report
    }

    /// A file found to hold other bytes than before.
    pub fn file(path: &str, generation: u64) -> Self {
        let mut report = ChangeReport::new(path, generation);
        report.files.changed = 1;
        report.example('~', path.to_string());
        report
    }

    /// Two manifests: tiers added and removed, by source.
    pub fn manifests(old: &Manifest, new: &Manifest, generation: u64) -> Self {
        let mut report = ChangeReport::new(crate::format::MANIFEST_FILE, generation);
        let tiers = |m: &Manifest| -> Vec<String> {
            m.sources
                .iter()
                .flat_map(|s| s.tiers.iter().map(move |t| format!("{}/{t}", s.name)))
                .collect()
        };
        let (old_tiers, new_tiers) = (tiers(old), tiers(new));
        for tier in new_tiers.iter().filter(|t| !old_tiers.contains(t)) {
            report.tiers.added += 1;
            report.example('+', format!("{tier}/"));
        }
        for tier in old_tiers.iter().filter(|t| !new_tiers.contains(t)) {
            report.tiers.removed += 1;
            report.example('-', format!("{tier}/"));
        }
        for source in &new.sources {
            if let Some(before) = old.source(&source.name) {
                if before != source && before.tiers == source.tiers {
                    report.tiers.changed += 1;
                    report.example('~', format!("{}/", source.name));
                }
            }
        }
        report
    }

    /// Two versions of a source's catalog, over the tiers the manifest
    /// gives that source.
    pub fn catalogs(
        document: &str,
        source: &str,
        tiers: &[String],
        old: &Catalog,
        new: &Catalog,
        generation: u64,
    ) -> Self {
        let mut report = ChangeReport::new(document, generation);
        let (mut a, mut b) = (
            old.materials.iter().peekable(),
            new.materials.iter().peekable(),
        );
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => x.id.cmp(&y.id),
            };
            match order {
                Ordering::Less => {
                    let gone = a.next().expect("peeked");
                    report.materials.removed += 1;
                    report.files(source, tiers, Some(gone), None);
                }
                Ordering::Greater => {
                    let added = b.next().expect("peeked");
                    report.materials.added += 1;
                    report.files(source, tiers, None, Some(added));
                }
                Ordering::Equal => {
                    let (before, after) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    if before != after {
                        report.materials.changed += 1;
                        report.files(source, tiers, Some(before), Some(after));
                    }
                }
            }
        }
        report
    }

    /// Counts the files of one material that differ between two versions.
    fn files(
        &mut self,
        source: &str,
        tiers: &[String],
        before: Option<&Material>,
        after: Option<&Material>,
    ) {
        let files = |m: Option<&Material>, tier: &str| -> Vec<String> {
            m.filter(|m| m.in_tier(tier))
                .map(|m| tier_channels(m, tier).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        for tier in tiers {
            let (old, new) = (files(before, tier), files(after, tier));
            let path = |channel: &str| {
                let id = after.or(before).map(|m| m.id.as_ref()).unwrap_or_default();
                format!("{source}/{tier}/{id}/{channel}.{}", texture_extension(tier))
            };
            for channel in new.iter().filter(|c| !old.contains(c)) {
                self.files.added += 1;
                self.example('+', path(channel));
            }
            for channel in old.iter().filter(|c| !new.contains(c)) {
                self.files.removed += 1;
                self.example('-', path(channel));
            }
            if tier == BAKED_TIER {
                for channel in new.iter().filter(|c| old.contains(c)) {
                    let hash = |m: Option<&Material>| m.and_then(|m| m.hash(channel));
                    if hash(before) != hash(after) {
                        self.files.changed += 1;
                        self.example('~', path(channel));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::parse_catalog;

    fn catalog(json: &str) -> Catalog {
        parse_catalog(json.as_bytes()).unwrap().value
    }

    #[test]
    fn counts_materials_and_files_added_removed_and_changed() {
        let h = |c: char| {
            format!(
                "{{\"sha256\": \"{}\", \"size\": 10}}",
                c.to_string().repeat(64)
            )
        };
        let old = catalog(&format!(
            r#"[{{"id": "A", "maps": ["color", "normal"], "available_tiers": ["1k", "512"],
                 "texture_hashes": {{"color": {}}}}},
                {{"id": "B", "maps": ["color"], "available_tiers": ["1k"]}}]"#,
            h('a')
        ));
        let new = catalog(&format!(
            r#"[{{"id": "A", "maps": ["color"], "available_tiers": ["1k", "512"],
                 "texture_hashes": {{"color": {}}}}},
                {{"id": "C", "maps": ["ao"], "available_tiers": ["512"]}}]"#,
            h('b')
        ));
        let tiers = vec!["1k".to_string(), "512".to_string()];
        let report = ChangeReport::catalogs("s.json", "s", &tiers, &old, &new, 7);
        assert_eq!(
            report.materials,
            Counts {
                added: 1,
                removed: 1,
                changed: 1
            }
        );
        // A lost normal in two tiers and its 1k colour changed; B's colour
        // went, C's ao came.
        assert_eq!(
            report.files,
            Counts {
                added: 1,
                removed: 3,
                changed: 1
            }
        );
        assert!(report.examples.contains(&"~s/1k/A/color.png".to_string()));
        assert!(report.examples.contains(&"+s/512/C/ao.png".to_string()));
        assert!(
            report
                .describe()
                .contains("materials: 1 added, 1 removed, 1 changed")
        );
        let same = ChangeReport::catalogs("s.json", "s", &tiers, &old, &old, 7);
        assert!(same.describe().starts_with("no difference"));
    }
}
