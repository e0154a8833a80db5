//! `release-manifest.json`, schema 3 ("per-file" layout).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{FormatError, Parsed, SCALAR_TIER};
use crate::names::check_component;

pub const MANIFEST_FILE: &str = "release-manifest.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub release_tag: Option<String>,
    /// Sorted by name; names are unique and safe as path components.
    pub sources: Vec<SourceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub name: String,
    /// File name of the catalog at the top of the revision.
    pub catalog: String,
    /// Optional `{"<material id>": "<MaterialX XML>"}` document.
    pub mtlx: Option<String>,
    /// Texture tiers, sorted; `scalar` is left out because it has no files.
    pub tiers: Vec<String>,
}

impl SourceSpec {
    /// A source gets a directory only when it has at least one texture tier.
    pub fn has_directory(&self) -> bool {
        !self.tiers.is_empty()
    }
}

impl Manifest {
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.sources[i])
    }

    /// The source whose catalog or MaterialX document is called `file`.
    pub fn document_owner(&self, file: &str) -> Option<&SourceSpec> {
        self.sources
            .iter()
            .find(|s| s.catalog == file || s.mtlx.as_deref() == Some(file))
    }
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Parsed<Manifest>, FormatError> {
    let root: Value = serde_json::from_slice(bytes)?;
    let Value::Object(root) = root else {
        return Err(FormatError::WrongShape(
            "the manifest is not a JSON object".into(),
        ));
    };
    check_schema(root.get("schema_version").or_else(|| root.get("version")))?;
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
    let release_tag = root
        .get("release_tag")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Parsed {
        value: Manifest {
            release_tag,
            sources: out,
        },
        skipped,
    })
}

fn check_schema(version: Option<&Value>) -> Result<(), FormatError> {
    match version.and_then(Value::as_u64) {
        Some(3) => Ok(()),
        Some(2) => Err(FormatError::UnsupportedSchema(
            "schema_version 2 (tar containers) is not supported by this version of matvisfs".into(),
        )),
        Some(1) => Err(FormatError::UnsupportedSchema(
            "schema_version 1 (Parquet on GitHub Releases) is not supported by this version of matvisfs"
                .into(),
        )),
        Some(n) => Err(FormatError::UnsupportedSchema(format!(
            "schema_version {n} is unknown (expected 3)"
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
    match fields.get("tiers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for tier in map.keys() {
                if tier == SCALAR_TIER {
                    continue;
                }
                match check_component(tier) {
                    Ok(()) => tiers.push(tier.clone()),
                    Err(e) => skipped.push(format!("source {name:?}: tier {tier:?} {e}")),
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
        catalog,
        mtlx,
        tiers,
    })
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
            (r#"{"schema_version": 2, "sources": {}}"#, "tar"),
            (r#"{"version": 1, "tiers": {}}"#, "Parquet"),
            (r#"{"schema_version": 3}"#, "no \"sources\""),
            (r#"{"schema_version": 3, "sources": []}"#, "no \"sources\""),
        ] {
            let err = parse_manifest(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(what), "{doc}: {err}");
        }
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
        assert_eq!(ok.catalog, "ok.json");
        assert_eq!(ok.tiers, ["1k"]);
        assert_eq!(parsed.value.source("mt").unwrap().mtlx, None);
        // ../evil, "", notobj, badcat, zdup, two tiers of ok, mtlx of mt
        assert_eq!(parsed.skipped.len(), 8, "{:#?}", parsed.skipped);
    }
}
