//! Catalog `<source>.json`: a JSON array of materials.

use std::collections::BTreeSet;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::pbr::{Pbr, parse_pbr};
use super::{FormatError, Parsed, json_type};
use crate::digest::Sha256Digest;
use crate::names::{MAX_NAME_BYTES, check_component};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Sorted by id, ids unique.
    pub materials: Vec<Material>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub id: Box<str>,
    /// Channel names (file stems), sorted and unique.
    pub channels: Box<[Box<str>]>,
    /// Tiers this material has files in, sorted and unique.
    pub tiers: Box<[Box<str>]>,
    /// Hashes of the baked tier, by channel, sorted by channel.
    pub hashes: Box<[(Box<str>, TextureHash)]>,
    /// What the `mat_vis` block says beyond files; boxed and only there
    /// when it says something, so that a catalog of bare entries stays small.
    pub details: Option<Box<Details>>,
}

/// The display name and PBR values of a material (`mat_vis.name`,
/// `mat_vis.pbr`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    pub name: Option<Box<str>>,
    pub pbr: Pbr,
}

/// What the catalog says about one channel of the baked tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextureHash {
    pub sha256: Sha256Digest,
    pub size: u64,
}

impl Catalog {
    pub fn material(&self, id: &str) -> Option<&Material> {
        self.materials
            .binary_search_by(|m| m.id.as_ref().cmp(id))
            .ok()
            .map(|i| &self.materials[i])
    }
}

impl Material {
    /// `mat_vis.name`, when the catalog gives a usable one.
    pub fn name(&self) -> Option<&str> {
        self.details.as_ref()?.name.as_deref()
    }

    /// The usable values of `mat_vis.pbr`, when there are any.
    pub fn pbr(&self) -> Option<&Pbr> {
        self.details.as_ref().map(|d| &d.pbr)
    }

    pub fn in_tier(&self, tier: &str) -> bool {
        self.tiers.iter().any(|t| t.as_ref() == tier)
    }

    pub fn has_channel(&self, channel: &str) -> bool {
        self.channel(channel).is_some()
    }

    /// The channel called `name`, borrowed from the material.
    pub fn channel(&self, name: &str) -> Option<&str> {
        let index = self
            .channels
            .binary_search_by(|c| c.as_ref().cmp(name))
            .ok()?;
        Some(&self.channels[index])
    }

    pub fn hash(&self, channel: &str) -> Option<TextureHash> {
        self.hashes
            .binary_search_by(|(c, _)| c.as_ref().cmp(channel))
            .ok()
            .map(|i| self.hashes[i].1)
    }
}

pub fn parse_catalog(bytes: &[u8]) -> Result<Parsed<Catalog>, FormatError> {
    // Entries are parsed one at a time from the raw text: a full catalog
    // as one JSON tree would take ten times its size in memory.
    let entries: Vec<&RawValue> = match serde_json::from_slice(bytes) {
        Ok(entries) => entries,
        Err(e) => {
            return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => FormatError::WrongShape("the catalog is not a JSON array".into()),
                Err(_) => FormatError::NotJson(e),
            });
        }
    };
    let mut skipped = Vec::new();
    let mut materials: Vec<Material> = Vec::with_capacity(entries.len());
    for (index, raw) in entries.iter().enumerate() {
        let parsed = serde_json::from_str::<Value>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(|entry| parse_material(&entry, &mut skipped));
        match parsed {
            Ok(m) => materials.push(m),
            Err(reason) => skipped.push(format!("entry {index}: {reason}")),
        }
    }
    materials.sort_by(|a, b| a.id.cmp(&b.id));
    let before = materials.len();
    let mut seen_dups = BTreeSet::new();
    materials.dedup_by(|later, earlier| {
        let dup = later.id == earlier.id;
        if dup {
            seen_dups.insert(later.id.to_string());
        }
        dup
    });
    if materials.len() != before {
        for id in seen_dups {
            skipped.push(format!(
                "material {id:?}: listed more than once; the first entry is used"
            ));
        }
    }
    Ok(Parsed {
        value: Catalog { materials },
        skipped,
    })
}

fn parse_material(entry: &Value, skipped: &mut Vec<String>) -> Result<Material, String> {
    let Value::Object(fields) = entry else {
        return Err("not a JSON object".into());
    };
    let id = match fields.get("id") {
        Some(Value::String(id)) => id,
        Some(other) => return Err(format!("\"id\" is not a string: {other}")),
        None => return Err("no \"id\"".into()),
    };
    check_component(id).map_err(|e| format!("id {id:?} {e}"))?;

    let hashes = parse_hashes(id, fields, skipped);
    let listed = string_list(fields.get("maps"));
    let channel_names: Vec<String> = match listed {
        Some(list) if !list.is_empty() => list,
        _ => hashes.iter().map(|(c, _)| c.to_string()).collect(),
    };
    let mut channels = BTreeSet::new();
    for channel in channel_names {
        // The longest file name a channel gets is "<channel>.ktx2".
        match check_component(&channel).and_then(|()| check_component(&format!("{channel}.ktx2"))) {
            Ok(()) => {
                channels.insert(channel.into_boxed_str());
            }
            Err(e) => skipped.push(format!("material {id:?}: channel {channel:?} {e}")),
        }
    }
    let mut tiers = BTreeSet::new();
    for tier in string_list(fields.get("available_tiers")).unwrap_or_default() {
        match check_component(&tier) {
            Ok(()) => {
                tiers.insert(tier.into_boxed_str());
            }
            Err(e) => skipped.push(format!("material {id:?}: tier {tier:?} {e}")),
        }
    }
    Ok(Material {
        id: id.as_str().into(),
        channels: channels.into_iter().collect(),
        tiers: tiers.into_iter().collect(),
        hashes: hashes.into_boxed_slice(),
        details: parse_details(id, fields.get("mat_vis"), skipped),
    })
}

/// `mat_vis.name` and `mat_vis.pbr`. A value that is missing, null or
/// unusable is left out; the entry itself is always kept.
fn parse_details(
    id: &str,
    mat_vis: Option<&Value>,
    skipped: &mut Vec<String>,
) -> Option<Box<Details>> {
    let Some(Value::Object(mat_vis)) = mat_vis else {
        return None;
    };
    let name = match mat_vis.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if name.len() <= MAX_NAME_BYTES => Some(name.as_str().into()),
        Some(Value::String(_)) => {
            skipped.push(format!(
                "material {id:?}: mat_vis.name is longer than {MAX_NAME_BYTES} bytes"
            ));
            None
        }
        Some(other) => {
            skipped.push(format!(
                "material {id:?}: mat_vis.name is {}, not a string",
                json_type(other)
            ));
            None
        }
    };
    let pbr = match mat_vis.get("pbr") {
        None | Some(Value::Null) => Pbr::default(),
        Some(Value::Object(pbr)) => parse_pbr(id, pbr, skipped),
        Some(other) => {
            skipped.push(format!(
                "material {id:?}: mat_vis.pbr is {}, not an object",
                json_type(other)
            ));
            Pbr::default()
        }
    };
    let details = Details { name, pbr };
    (details != Details::default()).then(|| Box::new(details))
}

/// `texture_hashes`: `{"color": {"sha256": "<hex>", "size": N}, ...}`.
fn parse_hashes(
    id: &str,
    fields: &Map<String, Value>,
    skipped: &mut Vec<String>,
) -> Vec<(Box<str>, TextureHash)> {
    let Some(Value::Object(map)) = fields.get("texture_hashes") else {
        return Vec::new();
    };
    let mut out: Vec<(Box<str>, TextureHash)> = Vec::new();
    for (channel, value) in map {
        let sha256 = value
            .get("sha256")
            .and_then(Value::as_str)
            .and_then(Sha256Digest::from_hex);
        let size = value.get("size").and_then(Value::as_u64);
        match (sha256, size) {
            (Some(sha256), Some(size)) => {
                out.push((channel.as_str().into(), TextureHash { sha256, size }))
            }
            _ => skipped.push(format!(
                "material {id:?}: texture_hashes.{channel} is not {{sha256, size}}"
            )),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// An array of strings; non-string items are dropped.
fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn parses_entries_and_ignores_unknown_keys() {
        let doc = format!(
            r#"[
            {{"id": "Rock064", "source": "ambientcg", "mat_vis": {{"name": "Rock 064"}},
              "maps": ["roughness", "color", "normal", "color"],
              "available_tiers": ["1k", "512", "ktx2-1k"],
              "texture_hashes": {{"color": {{"sha256": "{}", "size": 10}}}},
              "upstream": {{"whatever": true}}, "brand_new_field": 1}},
            {{"id": "Brass", "available_tiers": ["scalar"]}},
            {{"id": "OnlyHashes", "available_tiers": ["1k"],
              "texture_hashes": {{"ao": {{"sha256": "{}", "size": 3}}}}}}
        ]"#,
            hex('a'),
            hex('b')
        );
        let parsed = parse_catalog(doc.as_bytes()).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let ids: Vec<_> = parsed
            .value
            .materials
            .iter()
            .map(|m| m.id.as_ref())
            .collect();
        assert_eq!(ids, ["Brass", "OnlyHashes", "Rock064"]);
        let rock = parsed.value.material("Rock064").unwrap();
        assert_eq!(
            rock.channels.iter().map(|c| c.as_ref()).collect::<Vec<_>>(),
            ["color", "normal", "roughness"]
        );
        assert!(rock.in_tier("ktx2-1k") && !rock.in_tier("256"));
        assert_eq!(rock.hash("color").unwrap().size, 10);
        assert!(rock.hash("normal").is_none());
        // maps missing: the channels come from texture_hashes.
        let only = parsed.value.material("OnlyHashes").unwrap();
        assert_eq!(only.channels.as_ref(), [Box::<str>::from("ao")]);
        assert!(parsed.value.material("Brass").unwrap().channels.is_empty());
    }

    #[test]
    fn skips_hostile_or_broken_entries() {
        let long = "x".repeat(256);
        let doc = format!(
            r#"[
            {{"id": "good", "maps": ["color", "", "a/b", "..", "n\u0000ul", "{long}"], "available_tiers": ["1k", "../x"]}},
            {{"id": "../../etc"}},
            {{"id": ".."}},
            {{"id": ""}},
            {{"id": "with/slash"}},
            {{"id": "nul\u0000"}},
            {{"id": "{long}"}},
            {{"id": 5}},
            {{"maps": ["color"]}},
            "a string",
            {{"id": "good", "maps": ["normal"]}},
            {{"id": "badhash", "texture_hashes": {{"color": {{"sha256": "zz", "size": 1}}}}}}
        ]"#
        );
        let parsed = parse_catalog(doc.as_bytes()).unwrap();
        let ids: Vec<_> = parsed
            .value
            .materials
            .iter()
            .map(|m| m.id.as_ref())
            .collect();
        assert_eq!(ids, ["badhash", "good"]);
        let good = parsed.value.material("good").unwrap();
        assert_eq!(good.channels.as_ref(), [Box::<str>::from("color")]);
        assert_eq!(good.tiers.as_ref(), [Box::<str>::from("1k")]);
        assert!(parsed.value.material("badhash").unwrap().hashes.is_empty());
        // 5 bad channels + 1 bad tier + 9 bad entries + 1 duplicate + 1 bad hash
        assert_eq!(parsed.skipped.len(), 17, "{:#?}", parsed.skipped);
    }

    #[test]
    fn reads_names_and_pbr_values_and_keeps_entries_with_bad_ones() {
        let long = "n".repeat(256);
        let doc = format!(
            r#"[
            {{"id": "Brass", "available_tiers": ["scalar"],
              "mat_vis": {{"name": "Brass (polished)", "category": "metal",
                          "pbr": {{"color_rgb": [0.9, 0.7, 0.3], "metalness": 1, "roughness": null}}}}}},
            {{"id": "bad", "mat_vis": {{"name": 5, "pbr": {{"roughness": "0.5", "ior": -1, "metalness": 0.5}}}}}},
            {{"id": "notobject", "mat_vis": "a string"}},
            {{"id": "pbrlist", "mat_vis": {{"pbr": [1, 2]}}}},
            {{"id": "empty", "mat_vis": {{"pbr": {{}}, "name": null}}}},
            {{"id": "longname", "mat_vis": {{"name": "{long}"}}}},
            {{"id": "none"}}
        ]"#
        );
        let parsed = parse_catalog(doc.as_bytes()).unwrap();
        assert_eq!(parsed.value.materials.len(), 7);
        let brass = parsed.value.material("Brass").unwrap();
        assert_eq!(brass.name(), Some("Brass (polished)"));
        let pbr = brass.pbr().unwrap();
        assert_eq!(pbr.color_rgb, Some([0.9, 0.7, 0.3]));
        assert_eq!(pbr.metalness, Some(1.0));
        assert_eq!(pbr.roughness, None);
        let bad = parsed.value.material("bad").unwrap();
        assert_eq!(bad.name(), None);
        assert_eq!(bad.pbr().unwrap().metalness, Some(0.5));
        assert_eq!(bad.pbr().unwrap().ior, None);
        for id in ["notobject", "pbrlist", "empty", "longname", "none"] {
            assert_eq!(parsed.value.material(id).unwrap().details, None, "{id}");
        }
        // name, roughness, ior of "bad"; pbr of "pbrlist"; the long name.
        assert_eq!(parsed.skipped.len(), 5, "{:#?}", parsed.skipped);
    }

    #[test]
    fn a_bare_entry_costs_no_more_than_one_pointer_for_its_details() {
        // What a catalog of a million materials pays for every entry.
        assert!(
            std::mem::size_of::<Material>() <= 72,
            "{}",
            std::mem::size_of::<Material>()
        );
    }

    #[test]
    fn refuses_non_arrays() {
        assert!(
            parse_catalog(b"{\"id\": 1}")
                .unwrap_err()
                .to_string()
                .contains("not a JSON array")
        );
        assert!(
            parse_catalog(b"[{]")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}
