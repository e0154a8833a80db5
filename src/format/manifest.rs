//! `release-manifest.json`: schema 3 ("per-file" layout), and the frozen
//! container layouts of older releases, schema 2 (a tar and a rowmap per
//! source and tier) and schema 1 (Parquet files and rowmaps on GitHub
//! Releases).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{FormatError, Parsed, SCALAR_TIER};
use crate::names::check_component;

pub const MANIFEST_FILE: &str = "release-manifest.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// 1, 2 or 3.
    pub schema: u64,
    pub release_tag: Option<String>,
    /// Sorted by name; names are unique and safe as path components.
    pub sources: Vec<SourceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub name: String,
    /// File name of the catalog at the top of the revision (schema 1 has
    /// none: its tree comes from the rowmaps).
    pub catalog: Option<String>,
    /// Optional `{"<material id>": "<MaterialX XML>"}` document.
    pub mtlx: Option<String>,
    /// Texture tiers, sorted; `scalar` is left out because it has no files.
    pub tiers: Vec<String>,
    /// The manifest lists a `scalar` tier: catalog values only.
    pub scalar: bool,
    /// The tiers whose textures sit in containers (schema 1 and 2).
    pub containers: BTreeMap<String, Vec<ContainerPart>>,
}

/// One rowmap of a container tier, and how to find its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPart {
    /// Where the rowmap is: a path in the revision, or a URL (schema 1).
    pub rowmap: String,
    /// The container, when the manifest names it (schema 2's `tar`).
    pub container: Option<String>,
    /// What a container named by the rowmap is relative to: `""` (the
    /// revision) or a URL ending in `/`.
    pub base: String,
}

impl ContainerPart {
    /// Where the container is, given the name the rowmap gives it (what
    /// its offsets were computed against, so it wins).
    pub fn container_location(&self, named: Option<&str>) -> Option<String> {
        named
            .map(|name| format!("{}{name}", self.base))
            .or_else(|| self.container.clone())
    }
}

/// Whether a document or container location is a URL of its own rather
/// than a path in the revision.
pub fn is_url(location: &str) -> bool {
    location.starts_with("https://") || location.starts_with("http://")
}

impl SourceSpec {
    /// A source gets a directory only when it has at least one texture tier.
    pub fn has_directory(&self) -> bool {
        !self.tiers.is_empty()
    }

    /// The rowmaps of a container tier; `None` for a per-file tier.
    pub fn container_parts(&self, tier: &str) -> Option<&[ContainerPart]> {
        self.containers.get(tier).map(Vec::as_slice)
    }
}

/// What a document of the revision is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentRole {
    Catalog,
    MaterialX,
    Rowmap,
}

impl Manifest {
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.sources[i])
    }

    /// The source whose catalog or MaterialX document is called `file`
    /// (the documents shown in the tag's directory).
    pub fn document_owner(&self, file: &str) -> Option<&SourceSpec> {
        self.sources
            .iter()
            .find(|s| s.catalog.as_deref() == Some(file) || s.mtlx.as_deref() == Some(file))
    }

    /// The container part whose rowmap is at `location`.
    pub fn container_part(&self, location: &str) -> Option<&ContainerPart> {
        self.sources
            .iter()
            .flat_map(|s| s.containers.values().flatten())
            .find(|part| part.rowmap == location)
    }

    /// What the document at `location` is, if the manifest names it.
    pub fn document_role(&self, location: &str) -> Option<DocumentRole> {
        for source in &self.sources {
            if source.catalog.as_deref() == Some(location) {
                return Some(DocumentRole::Catalog);
            }
            if source.mtlx.as_deref() == Some(location) {
                return Some(DocumentRole::MaterialX);
            }
            let rowmaps = source.containers.values().flatten();
            if rowmaps.into_iter().any(|part| part.rowmap == location) {
                return Some(DocumentRole::Rowmap);
            }
        }
        None
    }
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Parsed<Manifest>, FormatError> {
    let root: Value = serde_json::from_slice(bytes)?;
    let Value::Object(root) = root else {
        return Err(FormatError::WrongShape(
            "the manifest is not a JSON object".into(),
        ));
    };
    let schema = check_schema(root.get("schema_version").or_else(|| root.get("version")))?;
    let release_tag = root
        .get("release_tag")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if schema == 1 {
        let (sources, skipped) = parse_schema1(&root)?;
        return Ok(Parsed {
            value: Manifest {
                schema,
                release_tag,
                sources,
            },
            skipped,
        });
    }
    let Some(Value::Object(sources)) = root.get("sources") else {
        return Err(FormatError::WrongShape(
            "the manifest has no \"sources\" object".into(),
        ));
    };

    let mut skipped = Vec::new();
    // Names already used in the tag directory: a later entry may not reuse one.
    let mut taken: BTreeSet<String> = BTreeSet::from([MANIFEST_FILE.to_string()]);
    let mut out = Vec::new();
    let mut names: Vec<&String> = sources.keys().collect();
    names.sort();
    for name in names {
        match parse_source(name, &sources[name], &mut taken, &mut skipped) {
            Ok(spec) => out.push(spec),
            Err(reason) => skipped.push(format!("source {name:?}: {reason}")),
        }
    }
    Ok(Parsed {
        value: Manifest {
            schema,
            release_tag,
            sources: out,
        },
        skipped,
    })
}

fn check_schema(version: Option<&Value>) -> Result<u64, FormatError> {
    match version.and_then(Value::as_u64) {
        Some(n @ 1..=3) => Ok(n),
        Some(n) => Err(FormatError::UnsupportedSchema(format!(
            "schema_version {n} is unknown (expected 1, 2 or 3)"
        ))),
        None => Err(FormatError::UnsupportedSchema(match version {
            None => "the manifest has no schema_version".into(),
            Some(v) => format!("schema_version {v} is not a number"),
        })),
    }
}

fn parse_source(
    name: &str,
    value: &Value,
    taken: &mut BTreeSet<String>,
    skipped: &mut Vec<String>,
) -> Result<SourceSpec, String> {
    check_component(name).map_err(|e| format!("the name {e}"))?;
    let Value::Object(fields) = value else {
        return Err("not a JSON object".into());
    };
    let catalog = match fields.get("catalog") {
        None | Some(Value::Null) => format!("{name}.json"),
        Some(Value::String(file)) => file.clone(),
        Some(other) => return Err(format!("\"catalog\" is not a string: {other}")),
    };
    check_component(&catalog).map_err(|e| format!("the catalog name {catalog:?} {e}"))?;

    let mut tiers = Vec::new();
    let mut scalar = false;
    let mut containers = BTreeMap::new();
    match fields.get("tiers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (tier, spec) in map {
                if tier == SCALAR_TIER {
                    scalar = true;
                    continue;
                }
                if let Err(e) = check_component(tier) {
                    skipped.push(format!("source {name:?}: tier {tier:?} {e}"));
                    continue;
                }
                match container_tier(spec) {
                    Ok(part) => {
                        tiers.push(tier.clone());
                        if let Some(part) = part {
                            containers.insert(tier.clone(), vec![part]);
                        }
                    }
                    Err(reason) => {
                        skipped.push(format!("source {name:?}: tier {tier:?}: {reason}"))
                    }
                }
            }
        }
        Some(_) => return Err("\"tiers\" is not a JSON object".into()),
    }
    tiers.sort();

    let spec_dir = !tiers.is_empty();
    if taken.contains(&catalog)
        || (spec_dir && taken.contains(name))
        || (spec_dir && catalog == name)
    {
        return Err(format!(
            "its catalog {catalog:?} or directory clashes with another entry"
        ));
    }
    taken.insert(catalog.clone());
    if spec_dir {
        taken.insert(name.to_string());
    }

    let mtlx = match fields.get("mtlx") {
        None | Some(Value::Null) => None,
        Some(Value::String(file)) => match check_component(file) {
            Ok(()) if !taken.contains(file) => {
                taken.insert(file.clone());
                Some(file.clone())
            }
            Ok(()) => {
                skipped.push(format!(
                    "source {name:?}: MaterialX file {file:?} clashes with another entry"
                ));
                None
            }
            Err(e) => {
                skipped.push(format!("source {name:?}: MaterialX file {file:?} {e}"));
                None
            }
        },
        Some(other) => {
            skipped.push(format!(
                "source {name:?}: \"mtlx\" is not a string: {other}"
            ));
            None
        }
    };
    Ok(SourceSpec {
        name: name.to_string(),
        catalog: Some(catalog),
        mtlx,
        tiers,
        scalar,
        containers,
    })
}

/// A schema-2 tier (`{"tar": ..., "rowmap": ...}`) as a container part;
/// `None` for a per-file tier.
fn container_tier(spec: &Value) -> Result<Option<ContainerPart>, String> {
    let Some(rowmap) = spec.get("rowmap") else {
        return Ok(None);
    };
    let path = |value: &Value, what: &str| match value {
        Value::String(path) => check_revision_path(path)
            .map(|()| path.clone())
            .map_err(|e| format!("the {what} {path:?} {e}")),
        other => Err(format!("the {what} is not a string: {other}")),
    };
    Ok(Some(ContainerPart {
        rowmap: path(rowmap, "rowmap")?,
        container: spec.get("tar").map(|tar| path(tar, "tar")).transpose()?,
        base: String::new(),
    }))
}

/// A path inside the revision: safe components separated by `/`.
fn check_revision_path(path: &str) -> Result<(), String> {
    path.split('/')
        .try_for_each(check_component)
        .map_err(|e| e.to_string())
}

/// Schema 1: `{"tiers": {"<tier>": {"base_url": ..., "sources": {"<source>":
/// {"parquet_files": [...], "rowmap_files": [...]}}}}}`, turned around into
/// sources with container tiers.
fn parse_schema1(root: &Map<String, Value>) -> Result<(Vec<SourceSpec>, Vec<String>), FormatError> {
    let Some(Value::Object(tiers)) = root.get("tiers") else {
        return Err(FormatError::WrongShape(
            "the manifest has no \"tiers\" object".into(),
        ));
    };
    let mut skipped = Vec::new();
    let mut sources: BTreeMap<String, SourceSpec> = BTreeMap::new();
    for (tier, spec) in tiers {
        if tier == SCALAR_TIER {
            continue;
        }
        if let Err(e) = check_component(tier) {
            skipped.push(format!("tier {tier:?} {e}"));
            continue;
        }
        let base = match spec.get("base_url").and_then(Value::as_str) {
            Some(url) if is_url(url) && url::Url::parse(url).is_ok() => {
                format!("{}/", url.trim_end_matches('/'))
            }
            _ => {
                skipped.push(format!("tier {tier:?}: no http(s) \"base_url\""));
                continue;
            }
        };
        let Some(Value::Object(per_source)) = spec.get("sources") else {
            skipped.push(format!("tier {tier:?}: no \"sources\" object"));
            continue;
        };
        for (name, files) in per_source {
            if let Err(e) = check_component(name)
                .map_err(|e| e.to_string())
                .and_then(|()| match name.as_str() == MANIFEST_FILE {
                    true => Err("clashes with the manifest".into()),
                    false => Ok(()),
                })
            {
                skipped.push(format!("source {name:?} {e}"));
                continue;
            }
            let names = |key: &str| -> Vec<String> {
                match files.get(key) {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                    Some(Value::String(one)) => vec![one.clone()],
                    _ => Vec::new(),
                }
            };
            let mut rowmaps = names("rowmap_files");
            if rowmaps.is_empty() {
                rowmaps = names("rowmap_file");
            }
            if rowmaps.is_empty() {
                rowmaps.push(format!("{name}-{tier}-rowmap.json"));
            }
            // A lone Parquet file is the container of a rowmap that names none.
            let parquet = names("parquet_files");
            let lone = match parquet.as_slice() {
                [one] if check_component(one).is_ok() => Some(format!("{base}{one}")),
                _ => None,
            };
            let parts: Vec<ContainerPart> = rowmaps
                .into_iter()
                .filter_map(|rowmap| match check_component(&rowmap) {
                    Ok(()) => Some(ContainerPart {
                        rowmap: format!("{base}{rowmap}"),
                        container: lone.clone(),
                        base: base.clone(),
                    }),
                    Err(e) => {
                        skipped.push(format!(
                            "source {name:?}, tier {tier:?}: rowmap {rowmap:?} {e}"
                        ));
                        None
                    }
                })
                .collect();
            if parts.is_empty() {
                continue;
            }
            let source = sources.entry(name.clone()).or_insert_with(|| SourceSpec {
                name: name.clone(),
                catalog: None,
                mtlx: None,
                tiers: Vec::new(),
                scalar: false,
                containers: BTreeMap::new(),
            });
            source.tiers.push(tier.clone());
            source.containers.insert(tier.clone(), parts);
        }
    }
    let mut sources: Vec<SourceSpec> = sources.into_values().collect();
    for source in &mut sources {
        source.tiers.sort();
    }
    Ok((sources, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "schema_version": 3,
      "release_tag": "v2026.04.2",
      "future_field": {"anything": [1, 2]},
      "sources": {
        "ambientcg": {"catalog": "ambientcg.json",
                      "tiers": {"1k": {"complete": true}, "512": {"complete": true},
                                "ktx2-512": {"complete": true}}},
        "gpuopen":   {"catalog": "gpuopen.json", "mtlx": "gpuopen-mtlx.json",
                      "tiers": {"1k": {"complete": true}}},
        "physicallybased": {"catalog": "physicallybased.json",
                            "tiers": {"scalar": {"complete": true}}}
      }
    }"#;

    #[test]
    fn parses_the_documented_example() {
        let parsed = parse_manifest(GOOD.as_bytes()).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let m = parsed.value;
        assert_eq!(m.release_tag.as_deref(), Some("v2026.04.2"));
        let names: Vec<_> = m.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ambientcg", "gpuopen", "physicallybased"]);
        assert_eq!(
            m.source("ambientcg").unwrap().tiers,
            ["1k", "512", "ktx2-512"]
        );
        assert_eq!(
            m.source("gpuopen").unwrap().mtlx.as_deref(),
            Some("gpuopen-mtlx.json")
        );
        let pb = m.source("physicallybased").unwrap();
        assert!(pb.tiers.is_empty() && !pb.has_directory());
        assert_eq!(
            m.document_owner("gpuopen-mtlx.json").unwrap().name,
            "gpuopen"
        );
        assert!(m.document_owner("nope.json").is_none());
    }

    #[test]
    fn refuses_documents_it_cannot_read() {
        for (doc, what) in [
            ("not json", "not valid JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"sources": {}}"#, "no schema_version"),
            (r#"{"schema_version": "3", "sources": {}}"#, "not a number"),
            (r#"{"schema_version": 4, "sources": {}}"#, "unknown"),
            (r#"{"version": 1}"#, "no \"tiers\""),
            (r#"{"schema_version": 2}"#, "no \"sources\""),
            (r#"{"schema_version": 3}"#, "no \"sources\""),
            (r#"{"schema_version": 3, "sources": []}"#, "no \"sources\""),
        ] {
            let err = parse_manifest(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(what), "{doc}: {err}");
        }
    }

    #[test]
    fn parses_the_container_layouts_of_older_releases() {
        let schema2 = r#"{"schema_version": 2, "release_tag": "v2026.03.1", "sources": {
            "ambientcg": {"catalog": "ambientcg.json", "tiers": {
                "1k": {"tar": "ambientcg-1k.tar", "rowmap": "ambientcg-1k-rowmap.json"},
                "512": {"tar": "../x.tar", "rowmap": "ambientcg-512-rowmap.json"},
                "scalar": {}}}}}"#;
        let parsed = parse_manifest(schema2.as_bytes()).unwrap();
        assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
        let m = parsed.value;
        assert_eq!(m.schema, 2);
        let source = m.source("ambientcg").unwrap();
        assert_eq!(source.tiers, ["1k"]);
        let part = &source.container_parts("1k").unwrap()[0];
        assert_eq!(part.rowmap, "ambientcg-1k-rowmap.json");
        assert_eq!(
            part.container_location(None).as_deref(),
            Some("ambientcg-1k.tar")
        );
        assert_eq!(
            m.document_role("ambientcg-1k-rowmap.json"),
            Some(DocumentRole::Rowmap)
        );
        assert_eq!(
            m.document_role("ambientcg.json"),
            Some(DocumentRole::Catalog)
        );

        let schema1 = r#"{"version": 1, "release_tag": "v2025.12.0", "tiers": {
            "1k": {"base_url": "https://github.com/o/r/releases/download/v2025.12.0",
                   "sources": {
                     "ambientcg": {"parquet_files": ["mat-vis-ambientcg-1k-stone.parquet", "mat-vis-ambientcg-1k-wood.parquet"],
                                   "rowmap_files": ["ambientcg-1k-stone-rowmap.json", "ambientcg-1k-wood-rowmap.json"]},
                     "polyhaven": {"parquet_files": ["mat-vis-polyhaven-1k.parquet"], "rowmap_file": "polyhaven-1k-rowmap.json"},
                     "../evil": {"rowmap_files": ["x.json"]}}},
            "2k": {"base_url": "ftp://nope/", "sources": {}}}}"#;
        let parsed = parse_manifest(schema1.as_bytes()).unwrap();
        assert_eq!(parsed.skipped.len(), 2, "{:?}", parsed.skipped);
        let m = parsed.value;
        assert_eq!(m.schema, 1);
        let names: Vec<_> = m.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ambientcg", "polyhaven"]);
        let ambientcg = m.source("ambientcg").unwrap();
        assert_eq!(ambientcg.catalog, None);
        assert_eq!(ambientcg.tiers, ["1k"]);
        let parts = ambientcg.container_parts("1k").unwrap();
        let base = "https://github.com/o/r/releases/download/v2025.12.0/";
        assert_eq!(
            parts[1].rowmap,
            format!("{base}ambientcg-1k-wood-rowmap.json")
        );
        assert_eq!(
            parts[1].container_location(Some("mat-vis-ambientcg-1k-wood.parquet")),
            Some(format!("{base}mat-vis-ambientcg-1k-wood.parquet"))
        );
        // A lone Parquet file serves a rowmap that names none.
        let polyhaven = &m
            .source("polyhaven")
            .unwrap()
            .container_parts("1k")
            .unwrap()[0];
        assert_eq!(
            polyhaven.container_location(None),
            Some(format!("{base}mat-vis-polyhaven-1k.parquet"))
        );
        assert!(is_url(&polyhaven.rowmap));
    }

    #[test]
    fn skips_bad_sources_and_tiers() {
        let doc = r#"{"schema_version": 3, "sources": {
            "../evil": {"tiers": {"1k": {}}},
            "": {"tiers": {"1k": {}}},
            "ok": {"tiers": {"1k": {}, "a/b": {}, "..": {}}},
            "notobj": 7,
            "badcat": {"catalog": "../../etc/passwd", "tiers": {"1k": {}}},
            "zdup": {"catalog": "ok.json", "tiers": {"1k": {}}},
            "release-manifest.json": {"catalog": "x.json"},
            "mt": {"mtlx": "a\u0000b", "tiers": {"1k": {}}}
        }}"#;
        let parsed = parse_manifest(doc.as_bytes()).unwrap();
        let names: Vec<_> = parsed
            .value
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        // "release-manifest.json" has no texture tiers, so only its catalog needs a
        // name, and "x.json" is free.
        assert_eq!(names, ["mt", "ok", "release-manifest.json"]);
        let ok = parsed.value.source("ok").unwrap();
        assert_eq!(ok.catalog.as_deref(), Some("ok.json"));
        assert_eq!(ok.tiers, ["1k"]);
        assert_eq!(parsed.value.source("mt").unwrap().mtlx, None);
        // ../evil, "", notobj, badcat, zdup, two tiers of ok, mtlx of mt
        assert_eq!(parsed.skipped.len(), 8, "{:#?}", parsed.skipped);
    }
}
