//! Rowmaps of the container releases (schema 1 and 2): where each texture
//! sits inside a tar or Parquet file of a source and tier.
//!
//! ```json
//! {"version": 1, "source": "ambientcg", "tier": "1k", "tar_file": "ambientcg-1k.tar",
//!  "materials": {"Rock064": {"color": {"offset": 1536, "length": 183412}}}}
//! ```
//!
//! Schema 1 rowmaps name a `parquet_file` instead of a `tar_file`.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::lenient::{entry_value, refusal};
use super::{FormatError, Parsed};
use crate::names::check_component;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rowmap {
    /// The container the offsets point into, as the rowmap names it.
    pub container: Option<String>,
    /// Sorted by id, ids unique.
    pub materials: Vec<RowmapMaterial>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowmapMaterial {
    pub id: Box<str>,
    /// Sorted by channel, channels unique.
    pub slices: Box<[(Box<str>, Slice)]>,
}

/// Bytes `[offset, offset + length)` of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub offset: u64,
    pub length: u64,
}

impl Rowmap {
    pub fn material(&self, id: &str) -> Option<&RowmapMaterial> {
        self.materials
            .binary_search_by(|m| m.id.as_ref().cmp(id))
            .ok()
            .map(|i| &self.materials[i])
    }
}

impl RowmapMaterial {
    /// The channel called `name` and where its bytes are.
    pub fn slice(&self, name: &str) -> Option<(&str, Slice)> {
        let i = self
            .slices
            .binary_search_by(|(c, _)| c.as_ref().cmp(name))
            .ok()?;
        Some((&self.slices[i].0, self.slices[i].1))
    }
}

pub fn parse_rowmap(bytes: &[u8]) -> Result<Parsed<Rowmap>, FormatError> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow, default)]
        materials: Option<&'a RawValue>,
        #[serde(borrow, default)]
        tar_file: Option<&'a RawValue>,
        #[serde(borrow, default)]
        parquet_file: Option<&'a RawValue>,
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| refusal(bytes, e, "the rowmap is not a JSON object"))?;
    let mut skipped = Vec::new();
    let named = raw.tar_file.or(raw.parquet_file).map(entry_value);
    let container = match named.transpose() {
        Err(reason) => {
            skipped.push(format!("the container name: {reason}"));
            None
        }
        Ok(None | Some(Value::Null)) => None,
        Ok(Some(Value::String(name))) => match check_component(&name) {
            Ok(()) => Some(name),
            Err(e) => {
                skipped.push(format!("the container name {name:?} {e}"));
                None
            }
        },
        Ok(Some(other)) => {
            skipped.push(format!("the container name is not a string: {other}"));
            None
        }
    };
    let Some(materials) = raw.materials else {
        return Err(FormatError::WrongShape(
            "the rowmap has no \"materials\" object".into(),
        ));
    };
    // Material by material, like catalogs: a rowmap of a full tier is large.
    let entries: BTreeMap<String, &RawValue> = serde_json::from_str(materials.get())
        .map_err(|_| FormatError::WrongShape("\"materials\" is not a JSON object".into()))?;
    let mut out = Vec::with_capacity(entries.len());
    for (id, value) in entries {
        match parse_material(&id, value, &mut skipped) {
            Ok(material) => out.push(material),
            Err(reason) => skipped.push(format!("material {id:?}: {reason}")),
        }
    }
    // Keys of a JSON object are unique and the map sorted them.
    Ok(Parsed {
        value: Rowmap {
            container,
            materials: out,
        },
        skipped,
    })
}

fn parse_material(
    id: &str,
    raw: &RawValue,
    skipped: &mut Vec<String>,
) -> Result<RowmapMaterial, String> {
    check_component(id).map_err(|e| format!("the id {e}"))?;
    let Value::Object(channels) = entry_value(raw)? else {
        return Err("not a JSON object".into());
    };
    let mut slices = Vec::with_capacity(channels.len());
    for (channel, value) in channels {
        match parse_slice(&channel, &value) {
            Ok(slice) => slices.push((channel.into_boxed_str(), slice)),
            Err(reason) => skipped.push(format!("material {id:?}, channel {channel:?}: {reason}")),
        }
    }
    if slices.is_empty() {
        return Err("no usable channel".into());
    }
    slices.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(RowmapMaterial {
        id: id.into(),
        slices: slices.into_boxed_slice(),
    })
}

fn parse_slice(channel: &str, value: &Value) -> Result<Slice, String> {
    check_component(channel).map_err(|e| format!("the name {e}"))?;
    let field = |name: &str| value.get(name).and_then(Value::as_u64);
    let (Some(offset), Some(length)) = (field("offset"), field("length")) else {
        return Err("no whole-number \"offset\" and \"length\"".into());
    };
    if length == 0 || offset.checked_add(length).is_none() {
        return Err(format!("an impossible range: {length} bytes at {offset}"));
    }
    Ok(Slice { offset, length })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_tar_rowmap_and_a_parquet_rowmap() {
        let tar = br#"{"version": 1, "release_tag": "v2026.03.0", "source": "ambientcg",
            "tier": "1k", "tar_file": "ambientcg-1k.tar", "future": [1],
            "materials": {"Wood051": {"color": {"offset": 512, "length": 10}},
                          "Rock064": {"normal": {"offset": 2048, "length": 7},
                                      "color": {"offset": 1024, "length": 5}}}}"#;
        let parsed = parse_rowmap(tar).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let rowmap = parsed.value;
        assert_eq!(rowmap.container.as_deref(), Some("ambientcg-1k.tar"));
        let ids: Vec<_> = rowmap.materials.iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["Rock064", "Wood051"]);
        let rock = rowmap.material("Rock064").unwrap();
        assert_eq!(
            rock.slice("color"),
            Some((
                "color",
                Slice {
                    offset: 1024,
                    length: 5
                }
            ))
        );
        assert_eq!(rock.slice("ao"), None);
        let parquet = br#"{"parquet_file": "mat-vis-ambientcg-1k.parquet",
            "materials": {"M": {"ao": {"offset": 4, "length": 1}}}}"#;
        assert_eq!(
            parse_rowmap(parquet).unwrap().value.container.as_deref(),
            Some("mat-vis-ambientcg-1k.parquet")
        );
    }

    #[test]
    fn a_material_nested_too_deep_is_skipped_and_the_others_kept() {
        for depth in [130, 1_000_000] {
            let deep = "[".repeat(depth) + &"]".repeat(depth);
            let doc = format!(
                r#"{{"tar_file": {deep}, "unknown": {deep}, "materials": {{
                    "a": {{"color": {{"offset": 0, "length": 1}}}},
                    "deep": {{"color": {{"offset": 0, "length": 1}}, "x": {deep}}},
                    "z": {{"color": {{"offset": 1, "length": 1}}}}}}}}"#
            );
            let parsed = parse_rowmap(doc.as_bytes()).unwrap();
            let ids: Vec<_> = parsed.value.materials.iter().map(|m| &*m.id).collect();
            assert_eq!(ids, ["a", "z"], "{depth}");
            // The container's name and the material.
            assert_eq!(parsed.skipped.len(), 2, "{:?}", parsed.skipped);
            assert!(parsed.skipped.iter().all(|r| r.contains("deeper than")));
        }
    }

    #[test]
    fn skips_bad_entries_and_refuses_what_it_cannot_read() {
        let doc = br#"{"tar_file": "../x.tar", "materials": {
            "../evil": {"color": {"offset": 0, "length": 1}},
            "ok": {"color": {"offset": 0, "length": 1}, "a/b": {"offset": 0, "length": 1},
                   "zero": {"offset": 0, "length": 0}, "huge": {"offset": 18446744073709551615, "length": 2},
                   "neg": {"offset": -1, "length": 2}},
            "empty": {}, "notobj": 3}}"#;
        let parsed = parse_rowmap(doc).unwrap();
        assert_eq!(parsed.value.container, None);
        let ids: Vec<_> = parsed.value.materials.iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["ok"]);
        assert_eq!(parsed.value.materials[0].slices.len(), 1);
        // container, ../evil, 4 channels of ok, empty, notobj
        assert_eq!(parsed.skipped.len(), 8, "{:#?}", parsed.skipped);
        for (doc, what) in [
            (&b"nope"[..], "not valid JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "no \"materials\""),
            (br#"{"materials": [1]}"#, "not a JSON object"),
        ] {
            let err = parse_rowmap(doc).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
    }
}
