//! `release-manifest.json`: schema 3 ("per-file" layout), and the frozen
//! container layouts of older releases, schema 2 (a tar and a rowmap per
//! source and tier) and schema 1 (Parquet files and rowmaps on GitHub
//! Releases). Read through serde; an entry of the wrong shape or with an
//! unsafe name is skipped with a reason, the rest of the document is kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use super::lenient::{Lenient, RevisionPath, Strings, ValidName, entry_value, refusal};
use super::location::Location;
use super::{FormatError, Parsed, SCALAR_TIER};

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
    /// The manifest names `mtlx` itself; else it is the name the reference
    /// client assumes (see `conventions`), which the server may not have.
    pub mtlx_named: bool,
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
    pub rowmap: Location,
    /// The container, when the manifest names it (schema 2's `tar`, or
    /// schema 1's only Parquet file).
    pub container: Option<Location>,
    /// The directory a container named by the rowmap is in (schema 1's
    /// `base_url`); `None`: the revision.
    pub base: Option<Url>,
}

impl ContainerPart {
    /// Where the container is, given the name the rowmap gives it (what
    /// its offsets were computed against, so it wins).
    pub fn container_location(&self, named: Option<&str>) -> Option<Location> {
        named
            .and_then(|name| ValidName::new(name).ok())
            .map(|name| Location::in_dir(self.base.as_ref(), &name))
            .or_else(|| self.container.clone())
    }
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

    fn rowmaps(&self) -> impl Iterator<Item = &ContainerPart> {
        self.containers.values().flatten()
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

    /// The container part whose rowmap is known by `key` (its
    /// [`Location::key`]).
    pub fn container_part(&self, key: &str) -> Option<&ContainerPart> {
        self.sources
            .iter()
            .flat_map(SourceSpec::rowmaps)
            .find(|part| part.rowmap.key() == key)
    }

    /// What the document known by `key` is, if the manifest names it.
    pub fn document_role(&self, key: &str) -> Option<DocumentRole> {
        self.document(key).map(|(role, _)| role)
    }

    /// Where the manifest, or a document it names, is.
    pub fn location(&self, key: &str) -> Option<Location> {
        match key {
            MANIFEST_FILE => Some(Location::revision(key)),
            _ => self.document(key).map(|(_, location)| location),
        }
    }

    fn document(&self, key: &str) -> Option<(DocumentRole, Location)> {
        for source in &self.sources {
            if source.catalog.as_deref() == Some(key) {
                return Some((DocumentRole::Catalog, Location::revision(key)));
            }
            if source.mtlx.as_deref() == Some(key) {
                return Some((DocumentRole::MaterialX, Location::revision(key)));
            }
            if let Some(part) = source.rowmaps().find(|p| p.rowmap.key() == key) {
                return Some((DocumentRole::Rowmap, part.rowmap.clone()));
            }
        }
        None
    }
}

/// The manifest's top level as written: every field may be missing or
/// misshapen, and each is read on its own (see [`entry_value`]), so that
/// one value nested too deep is one bad entry.
type RawManifest<'a> = BTreeMap<String, &'a RawValue>;

/// A field of the top level, read; one that cannot be read counts as null.
fn field(raw: &RawManifest, key: &str) -> Option<Value> {
    raw.get(key)
        .map(|value| entry_value(value).unwrap_or(Value::Null))
}

/// The entries of an object field (`sources`, `tiers`), each read on its
/// own; `None` when the field is missing or not an object.
fn entries(raw: &RawManifest, key: &str) -> Option<Vec<(String, Result<Value, String>)>> {
    let object: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get(key)?.get()).ok()?;
    Some(
        object
            .into_iter()
            .map(|(name, value)| (name, entry_value(value)))
            .collect(),
    )
}

/// A source of schema 2 or 3.
#[derive(Deserialize)]
struct RawSource {
    #[serde(default)]
    catalog: Option<ValidName>,
    #[serde(default)]
    tiers: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    mtlx: Option<Lenient<ValidName>>,
}

/// A tier of schema 2 or 3: a container when it names a rowmap (and its
/// `tar`), else a tier of files.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTier {
    rowmap: Option<Lenient<RevisionPath>>,
    tar: Option<Lenient<RevisionPath>>,
    /// `false`: the bake says the tier is not complete.
    complete: Option<Value>,
}

#[derive(Deserialize)]
struct RawSchema1Tier {
    #[serde(default)]
    base_url: Option<Lenient<String>>,
    #[serde(default)]
    sources: Option<Lenient<BTreeMap<String, Value>>>,
}

/// A source's files in a schema-1 tier.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Schema1Files {
    parquet_files: Strings,
    rowmap_files: Strings,
    rowmap_file: Strings,
}

/// A JSON object as a `T` (serde would also take an array for a struct).
fn object<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    match value {
        Value::Object(_) => T::deserialize(value).map_err(|e| e.to_string()),
        _ => Err("not a JSON object".into()),
    }
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Parsed<Manifest>, FormatError> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| refusal(bytes, e, "the manifest is not a JSON object"))?;
    let schema = check_schema(
        field(&raw, "schema_version")
            .or_else(|| field(&raw, "version"))
            .as_ref(),
    )?;
    let release_tag = field(&raw, "release_tag").and_then(|tag| match tag {
        Value::String(tag) => Some(tag),
        _ => None,
    });
    let mut skipped = Vec::new();
    let sources = if schema == 1 {
        let Some(tiers) = entries(&raw, "tiers") else {
            return Err(FormatError::WrongShape(
                "the manifest has no \"tiers\" object".into(),
            ));
        };
        schema1_sources(tiers, &mut skipped)
    } else {
        let Some(sources) = entries(&raw, "sources") else {
            return Err(FormatError::WrongShape(
                "the manifest has no \"sources\" object".into(),
            ));
        };
        // Names already used in the tag directory: a later entry may not
        // reuse one. The map is sorted by name.
        let mut taken: BTreeSet<String> = BTreeSet::from([MANIFEST_FILE.to_string()]);
        let names_maps = sources
            .iter()
            .any(|(_, s)| s.as_ref().is_ok_and(|s| s.get("mtlx").is_some()));
        let mut out = Vec::new();
        for (name, source) in sources {
            match source
                .and_then(object)
                .and_then(|raw| build_source(&name, raw, schema, &mut taken, &mut skipped))
            {
                Ok(spec) => out.push(spec),
                Err(reason) => skipped.push(format!("source {name:?}: {reason}")),
            }
        }
        if !names_maps {
            for source in out.iter_mut().filter(|s| s.has_directory()) {
                source.mtlx = super::conventions::assumed_materialx_map(&source.name, &taken);
            }
        }
        out
    };
    Ok(Parsed {
        value: Manifest {
            schema,
            release_tag,
            sources,
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

fn build_source(
    name: &str,
    raw: RawSource,
    schema: u64,
    taken: &mut BTreeSet<String>,
    skipped: &mut Vec<String>,
) -> Result<SourceSpec, String> {
    let name = ValidName::new(name).map_err(|e| format!("the name {e}"))?;
    let name = name.as_str();
    let catalog = raw
        .catalog
        .map_or_else(|| format!("{name}.json"), ValidName::into_string);
    ValidName::new(&catalog).map_err(|e| format!("the catalog name {e}"))?;

    let mut tiers = Vec::new();
    let mut scalar = false;
    let mut containers = BTreeMap::new();
    for (tier, spec) in raw.tiers.unwrap_or_default() {
        if tier == SCALAR_TIER {
            scalar = true;
            continue;
        }
        if let Err(e) = ValidName::new(&tier) {
            skipped.push(format!("source {name:?}: tier {e}"));
            continue;
        }
        // A tier that is not an object is a tier of files.
        let spec: RawTier = object(spec).unwrap_or_default();
        if spec.complete == Some(Value::Bool(false)) {
            skipped.push(format!(
                "source {name:?}: tier {tier:?} is marked \"complete\": false; it is not shown until it is complete"
            ));
            continue;
        }
        // Schema 3 is one file per texture: `tar` and `rowmap` a re-bake
        // left from schema 2 name nothing it serves.
        let spec = match schema {
            3 => RawTier::default(),
            _ => spec,
        };
        match container_part(spec) {
            Ok(part) => {
                if let Some(part) = part {
                    containers.insert(tier.clone(), vec![part]);
                }
                tiers.push(tier);
            }
            Err(reason) => skipped.push(format!("source {name:?}: tier {tier:?}: {reason}")),
        }
    }

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

    let mtlx = match raw.mtlx.map(|m| m.0) {
        None => None,
        Some(Ok(file)) if !taken.contains(file.as_str()) => {
            taken.insert(file.to_string());
            Some(file.into_string())
        }
        Some(Ok(file)) => {
            skipped.push(format!(
                "source {name:?}: MaterialX file {file:?} clashes with another entry"
            ));
            None
        }
        Some(Err(reason)) => {
            skipped.push(format!("source {name:?}: MaterialX file: {reason}"));
            None
        }
    };
    Ok(SourceSpec {
        name: name.to_string(),
        catalog: Some(catalog),
        mtlx_named: mtlx.is_some(),
        mtlx,
        tiers,
        scalar,
        containers,
    })
}

/// A schema-2 tier as a container part; `None` for a per-file tier.
fn container_part(spec: RawTier) -> Result<Option<ContainerPart>, String> {
    let Some(rowmap) = spec.rowmap else {
        return Ok(None);
    };
    let rowmap = rowmap.0.map_err(|e| format!("the rowmap: {e}"))?;
    let tar = spec
        .tar
        .map(|tar| tar.0.map_err(|e| format!("the tar: {e}")))
        .transpose()?;
    Ok(Some(ContainerPart {
        rowmap: Location::Revision(rowmap.into_string()),
        container: tar.map(|tar| Location::Revision(tar.into_string())),
        base: None,
    }))
}

/// An http(s) URL that files can be named relative to.
fn directory_url(text: &str) -> Option<Url> {
    let mut url = Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(url)
}

/// Schema 1: `{"tiers": {"<tier>": {"base_url": ..., "sources": {"<source>":
/// {"parquet_files": [...], "rowmap_files": [...]}}}}}`, turned around into
/// sources with container tiers.
fn schema1_sources(
    tiers: Vec<(String, Result<Value, String>)>,
    skipped: &mut Vec<String>,
) -> Vec<SourceSpec> {
    let mut sources: BTreeMap<String, SourceSpec> = BTreeMap::new();
    for (tier, spec) in tiers {
        if tier == SCALAR_TIER {
            continue;
        }
        if let Err(e) = ValidName::new(&tier) {
            skipped.push(format!("tier {e}"));
            continue;
        }
        let spec = match spec {
            Ok(spec) => spec,
            Err(reason) => {
                skipped.push(format!("tier {tier:?}: {reason}"));
                continue;
            }
        };
        let spec = object::<RawSchema1Tier>(spec).ok();
        let base = spec
            .as_ref()
            .and_then(|s| s.base_url.as_ref())
            .and_then(|url| url.0.as_deref().ok())
            .and_then(directory_url);
        let Some(base) = base else {
            skipped.push(format!("tier {tier:?}: no http(s) \"base_url\""));
            continue;
        };
        let Some(Lenient(Ok(per_source))) = spec.and_then(|s| s.sources) else {
            skipped.push(format!("tier {tier:?}: no \"sources\" object"));
            continue;
        };
        for (name, files) in per_source {
            if let Err(e) = ValidName::new(&name) {
                skipped.push(format!("source {e}"));
                continue;
            }
            if name == MANIFEST_FILE {
                skipped.push(format!("source {name:?} clashes with the manifest"));
                continue;
            }
            // Not an object: no files named, the rowmap has its usual name.
            let files: Schema1Files = object(files).unwrap_or_default();
            let mut rowmaps = files.rowmap_files.0;
            if rowmaps.is_empty() {
                rowmaps = files.rowmap_file.0;
            }
            if rowmaps.is_empty() {
                rowmaps.push(format!("{name}-{tier}-rowmap.json"));
            }
            // A lone Parquet file is the container of a rowmap that names none.
            let lone = match files.parquet_files.0.as_slice() {
                [one] => ValidName::new(one)
                    .ok()
                    .map(|one| Location::in_dir(Some(&base), &one)),
                _ => None,
            };
            let parts: Vec<ContainerPart> = rowmaps
                .into_iter()
                .filter_map(|rowmap| match ValidName::new(&rowmap) {
                    Ok(rowmap) => Some(ContainerPart {
                        rowmap: Location::in_dir(Some(&base), &rowmap),
                        container: lone.clone(),
                        base: Some(base.clone()),
                    }),
                    Err(e) => {
                        skipped.push(format!("source {name:?}, tier {tier:?}: rowmap {e}"));
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
                mtlx_named: false,
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
    sources
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
    fn a_source_nested_too_deep_is_skipped_and_the_others_kept() {
        for depth in [130, 1_000_000] {
            let deep = "[".repeat(depth) + &"]".repeat(depth);
            let doc = format!(
                r#"{{"schema_version": 3, "unknown": {deep},
                    "sources": {{"ambientcg": {{"tiers": {{"1k": {{}}}}}},
                                 "deep": {{"tiers": {{"1k": {{}}}}, "extra": {deep}}},
                                 "polyhaven": {{"tiers": {{"1k": {{}}}}}}}}}}"#
            );
            let parsed = parse_manifest(doc.as_bytes()).unwrap();
            let names: Vec<_> = parsed.value.sources.iter().map(|s| &s.name).collect();
            assert_eq!(names, ["ambientcg", "polyhaven"], "{depth}");
            assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
            assert!(
                parsed.skipped[0].contains("deeper than"),
                "{:?}",
                parsed.skipped
            );
            let schema1 = format!(
                r#"{{"version": 1, "tiers": {{"1k": {deep},
                    "2k": {{"base_url": "https://example.org/d/", "sources": {{"a": {{}}}}}}}}}}"#
            );
            let parsed = parse_manifest(schema1.as_bytes()).unwrap();
            assert_eq!(parsed.value.sources.len(), 1);
            assert!(
                parsed.skipped[0].contains("deeper than"),
                "{:?}",
                parsed.skipped
            );
        }
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
        assert_eq!(part.rowmap, Location::revision("ambientcg-1k-rowmap.json"));
        assert_eq!(
            part.container_location(None),
            Some(Location::revision("ambientcg-1k.tar"))
        );
        assert_eq!(
            part.container_location(Some("other.tar")),
            Some(Location::revision("other.tar"))
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
        let at = |name: &str| Location::Absolute(Url::parse(&format!("{base}{name}")).unwrap());
        assert_eq!(parts[1].rowmap, at("ambientcg-1k-wood-rowmap.json"));
        assert_eq!(
            parts[1].container_location(Some("mat-vis-ambientcg-1k-wood.parquet")),
            Some(at("mat-vis-ambientcg-1k-wood.parquet"))
        );
        let key = parts[1].rowmap.key();
        assert_eq!(m.document_role(key), Some(DocumentRole::Rowmap));
        assert_eq!(m.location(key), Some(parts[1].rowmap.clone()));
        // A lone Parquet file serves a rowmap that names none.
        let polyhaven = &m
            .source("polyhaven")
            .unwrap()
            .container_parts("1k")
            .unwrap()[0];
        assert_eq!(
            polyhaven.container_location(None),
            Some(at("mat-vis-polyhaven-1k.parquet"))
        );
        assert!(matches!(polyhaven.rowmap, Location::Absolute(_)));
    }

    #[test]
    fn a_schema_3_manifest_is_per_file_whatever_schema_2_left_in_it() {
        let doc = r#"{"schema_version": 3, "sources": {
            "ambientcg": {"catalog": "ambientcg.json", "materials_count": 1960, "tiers": {
                "1k": {"complete": true, "tar": "ambientcg-1k.tar", "rowmap": "ambientcg-1k-rowmap.json"},
                "512": {"tar": "ambientcg-512.tar", "rowmap": "ambientcg-512-rowmap.json"}}}}}"#;
        let parsed = parse_manifest(doc.as_bytes()).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let source = parsed.value.source("ambientcg").unwrap();
        assert_eq!(source.tiers, ["1k", "512"]);
        assert!(source.containers.is_empty());
        assert_eq!(parsed.value.document_role("ambientcg-1k-rowmap.json"), None);
        // The same tiers in schema 2 are containers.
        let parsed = parse_manifest(
            doc.replace("\"schema_version\": 3", "\"schema_version\": 2")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            parsed.value.source("ambientcg").unwrap().containers.len(),
            2
        );
    }

    #[test]
    fn a_tier_marked_incomplete_is_left_out_until_it_is_complete() {
        let doc = r#"{"schema_version": 3, "sources": {
            "ambientcg": {"catalog": "ambientcg.json", "tiers": {
                "1k": {"complete": true}, "512": {"complete": false}, "256": {}, "128": {"complete": "no"}}}}}"#;
        let parsed = parse_manifest(doc.as_bytes()).unwrap();
        assert_eq!(
            parsed.value.source("ambientcg").unwrap().tiers,
            ["128", "1k", "256"]
        );
        assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
        assert!(parsed.skipped[0].contains("\"512\""));
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
