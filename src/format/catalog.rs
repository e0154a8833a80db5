//! Catalog `<source>.json`: a JSON array of materials.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserializer;
use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::lenient::{entry_value, refusal};
use super::pbr::{Pbr, parse_pbr};
use super::{FormatError, Parsed, json_type};
use crate::digest::Sha256Digest;
use crate::names::{MAX_NAME_BYTES, check_component};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Sorted by id, ids unique.
    pub materials: Vec<Material>,
}

/// The most distinct channel (or tier) names one catalog can use: each
/// material keeps its set as a bit mask, so that a catalog of a million
/// materials does not hold a million copies of "color".
pub const MAX_NAMES: usize = 64;

/// The channel and tier names used in one catalog, each table sorted, so
/// that bit order is name order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    channels: Vec<Box<str>>,
    tiers: Vec<Box<str>>,
}

#[derive(Debug, Clone)]
pub struct Material {
    pub id: Box<str>,
    names: Arc<Names>,
    /// Bit i: the material has channel `names.channels[i]`.
    channels: u64,
    /// Bit i: the material has files in tier `names.tiers[i]`.
    tiers: u64,
    /// Hashes of the baked tier, by channel index, sorted.
    hashes: Box<[(u8, TextureHash)]>,
    /// What the `mat_vis` block says beyond files; boxed and only there
    /// when it says something, so that a catalog of bare entries stays small.
    pub details: Option<Box<Details>>,
}

impl PartialEq for Material {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.channels().eq(other.channels())
            && self.tiers().eq(other.tiers())
            && self.hashes().eq(other.hashes())
            && self.details == other.details
    }
}

impl Eq for Material {}

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

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..MAX_NAMES).filter(move |i| mask & (1 << i) != 0)
}

fn index_of(table: &[Box<str>], name: &str) -> Option<usize> {
    table.binary_search_by(|n| n.as_ref().cmp(name)).ok()
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

    /// Channel names (file stems), sorted.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        bits(self.channels).map(|i| self.names.channels[i].as_ref())
    }

    /// Tiers this material has files in, sorted.
    pub fn tiers(&self) -> impl Iterator<Item = &str> {
        bits(self.tiers).map(|i| self.names.tiers[i].as_ref())
    }

    pub fn has_tiers(&self) -> bool {
        self.tiers != 0
    }

    pub fn in_tier(&self, tier: &str) -> bool {
        index_of(&self.names.tiers, tier).is_some_and(|i| self.tiers & (1 << i) != 0)
    }

    pub fn has_channel(&self, channel: &str) -> bool {
        self.channel(channel).is_some()
    }

    /// The channel called `name`, borrowed from the material.
    pub fn channel(&self, name: &str) -> Option<&str> {
        let i = index_of(&self.names.channels, name)?;
        (self.channels & (1 << i) != 0).then(|| self.names.channels[i].as_ref())
    }

    /// Hashes of the baked tier by channel, sorted by channel.
    pub fn hashes(&self) -> impl Iterator<Item = (&str, TextureHash)> {
        self.hashes
            .iter()
            .map(|(i, hash)| (self.names.channels[usize::from(*i)].as_ref(), *hash))
    }

    pub fn hash(&self, channel: &str) -> Option<TextureHash> {
        let i = u8::try_from(index_of(&self.names.channels, channel)?).ok()?;
        self.hashes
            .binary_search_by(|(c, _)| c.cmp(&i))
            .ok()
            .map(|at| self.hashes[at].1)
    }
}

/// Hands each entry of a JSON array to a function as it is read, as raw
/// text: passing over an entry takes no stack, however deep it nests.
struct EachEntry<F>(F);

impl<'de, F: FnMut(&'de RawValue)> Visitor<'de> for EachEntry<F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut entries: A) -> Result<(), A::Error> {
        while let Some(entry) = entries.next_element::<&'de RawValue>()? {
            (self.0)(entry);
        }
        Ok(())
    }
}

/// The `id` of an entry that could not be read whole, for the reason it
/// is skipped: only its first level is read.
fn id_of(entry: &RawValue) -> Option<String> {
    let fields: HashMap<String, &RawValue> = serde_json::from_str(entry.get()).ok()?;
    serde_json::from_str(fields.get("id")?.get()).ok()
}

/// Builds the name tables of a catalog while its entries are parsed:
/// names get bits in the order they are first seen, put in name order
/// once all are known. Names past [`MAX_NAMES`] are skipped with a reason.
#[derive(Default)]
struct Interner {
    channels: NameTable,
    tiers: NameTable,
}

#[derive(Default)]
struct NameTable {
    names: Vec<Box<str>>,
    bits: HashMap<Box<str>, u8>,
}

impl NameTable {
    fn bit(&mut self, name: &str) -> Option<u8> {
        if let Some(bit) = self.bits.get(name) {
            return Some(*bit);
        }
        let bit = u8::try_from(self.names.len())
            .ok()
            .filter(|b| usize::from(*b) < MAX_NAMES)?;
        self.names.push(name.into());
        self.bits.insert(name.into(), bit);
        Some(bit)
    }

    /// The sorted table, and each first-seen bit's place in it.
    fn sorted(self) -> (Vec<Box<str>>, Vec<u8>) {
        let mut seen: Vec<(Box<str>, usize)> = self.names.into_iter().zip(0..).collect();
        seen.sort_unstable();
        let mut place = vec![0u8; seen.len()];
        for (sorted, (_, first)) in seen.iter().enumerate() {
            place[*first] = sorted as u8;
        }
        (seen.into_iter().map(|(name, _)| name).collect(), place)
    }
}

fn remap(mask: u64, place: &[u8]) -> u64 {
    bits(mask).fold(0, |m, bit| m | (1 << place[bit]))
}

impl Interner {
    fn finish(self, mut materials: Vec<Material>) -> Vec<Material> {
        let (channels, channel_place) = self.channels.sorted();
        let (tiers, tier_place) = self.tiers.sorted();
        let names = Arc::new(Names { channels, tiers });
        for m in &mut materials {
            m.channels = remap(m.channels, &channel_place);
            m.tiers = remap(m.tiers, &tier_place);
            for (bit, _) in m.hashes.iter_mut() {
                *bit = channel_place[usize::from(*bit)];
            }
            m.hashes.sort_by_key(|(bit, _)| *bit);
            m.names = Arc::clone(&names);
        }
        materials
    }
}

pub fn parse_catalog(bytes: &[u8]) -> Result<Parsed<Catalog>, FormatError> {
    let mut skipped = Vec::new();
    let mut interner = Interner::default();
    let unnamed = Arc::new(Names::default());
    let mut materials: Vec<Material> = Vec::new();
    let mut index = 0;
    // Entries are parsed one at a time as the text is read: a full catalog
    // as one JSON tree would take ten times its size in memory.
    let each = EachEntry(|raw: &RawValue| {
        let parsed = entry_value(raw)
            .and_then(|entry| parse_material(&entry, &mut interner, &unnamed, &mut skipped));
        match parsed {
            Ok(m) => materials.push(m),
            Err(reason) => match id_of(raw) {
                Some(id) => skipped.push(format!("entry {index} (id {id:?}): {reason}")),
                None => skipped.push(format!("entry {index}: {reason}")),
            },
        }
        index += 1;
    });
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    if let Err(e) = reader.deserialize_seq(each).and_then(|()| reader.end()) {
        return Err(refusal(bytes, e, "the catalog is not a JSON array"));
    }
    materials.shrink_to_fit();
    // Catalogs come sorted; sorting one again would cost half its size.
    // Stable: of entries sharing an id, the first stays first.
    if !materials.is_sorted_by(|a, b| a.id <= b.id) {
        materials.sort_by(|a, b| a.id.cmp(&b.id));
    }
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
        value: Catalog {
            materials: interner.finish(materials),
        },
        skipped,
    })
}

fn parse_material(
    entry: &Value,
    interner: &mut Interner,
    unnamed: &Arc<Names>,
    skipped: &mut Vec<String>,
) -> Result<Material, String> {
    let Value::Object(fields) = entry else {
        return Err("not a JSON object".into());
    };
    let id = match fields.get("id") {
        Some(Value::String(id)) => id,
        Some(other) => return Err(format!("\"id\" is not a string: {other}")),
        None => return Err("no \"id\"".into()),
    };
    check_component(id).map_err(|e| format!("id {id:?} {e}"))?;
    // The bake's own tools leave such entries out: their files were never
    // all made.
    if fields.get("status").and_then(Value::as_str) == Some("failed") {
        return Err(format!("material {id:?} is marked \"status\": \"failed\""));
    }

    let too_many = |what: &str, name: &str| {
        format!(
            "material {id:?}: {what} {name:?} is past the {MAX_NAMES} distinct {what} names a catalog may use"
        )
    };
    let listed_hashes = parse_hashes(id, fields, skipped);
    let listed = string_list(fields.get("maps"));
    let channel_names: Vec<&str> = match &listed {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => listed_hashes.iter().map(|(c, _)| c.as_str()).collect(),
    };
    let mut channels = 0u64;
    for channel in channel_names {
        // The longest file name a channel gets is "<channel>.ktx2".
        match check_component(channel).and_then(|()| check_component(&format!("{channel}.ktx2"))) {
            Ok(()) => match interner.channels.bit(channel) {
                Some(bit) => channels |= 1 << bit,
                None => skipped.push(too_many("channel", channel)),
            },
            Err(e) => skipped.push(format!("material {id:?}: channel {channel:?} {e}")),
        }
    }
    let mut tiers = 0u64;
    for tier in string_list(fields.get("available_tiers")).unwrap_or_default() {
        match check_component(&tier) {
            Ok(()) => match interner.tiers.bit(&tier) {
                Some(bit) => tiers |= 1 << bit,
                None => skipped.push(too_many("tier", &tier)),
            },
            Err(e) => skipped.push(format!("material {id:?}: tier {tier:?} {e}")),
        }
    }
    // Hashes count only for the material's channels.
    let hashes = listed_hashes
        .iter()
        .filter_map(|(channel, hash)| {
            let bit = *interner.channels.bits.get(channel.as_str())?;
            (channels & (1 << bit) != 0).then_some((bit, *hash))
        })
        .collect();
    Ok(Material {
        id: id.as_str().into(),
        names: Arc::clone(unnamed),
        channels,
        tiers,
        hashes,
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
) -> Vec<(String, TextureHash)> {
    let Some(Value::Object(map)) = fields.get("texture_hashes") else {
        return Vec::new();
    };
    let mut out: Vec<(String, TextureHash)> = Vec::new();
    for (channel, value) in map {
        let sha256 = value
            .get("sha256")
            .and_then(Value::as_str)
            .and_then(Sha256Digest::from_hex);
        let size = value.get("size").and_then(Value::as_u64);
        match (sha256, size) {
            (Some(sha256), Some(size)) => out.push((channel.clone(), TextureHash { sha256, size })),
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
            {{"id": "Brass", "available_tiers": ["scalar"], "status": "ok"}},
            {{"id": "Failed", "available_tiers": ["1k"], "maps": ["color"], "status": "failed"}},
            {{"id": "OnlyHashes", "available_tiers": ["1k"],
              "texture_hashes": {{"ao": {{"sha256": "{}", "size": 3}}}}}}
        ]"#,
            hex('a'),
            hex('b')
        );
        let parsed = parse_catalog(doc.as_bytes()).unwrap();
        // An entry the bake marked failed is left out like a bad one.
        assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
        assert!(parsed.skipped[0].contains("failed"));
        let ids: Vec<_> = parsed
            .value
            .materials
            .iter()
            .map(|m| m.id.as_ref())
            .collect();
        assert_eq!(ids, ["Brass", "OnlyHashes", "Rock064"]);
        let rock = parsed.value.material("Rock064").unwrap();
        assert_eq!(
            rock.channels().collect::<Vec<_>>(),
            ["color", "normal", "roughness"]
        );
        assert!(rock.in_tier("ktx2-1k") && !rock.in_tier("256"));
        assert_eq!(rock.hash("color").unwrap().size, 10);
        assert!(rock.hash("normal").is_none());
        // maps missing: the channels come from texture_hashes.
        let only = parsed.value.material("OnlyHashes").unwrap();
        assert_eq!(only.channels().collect::<Vec<_>>(), ["ao"]);
        assert_eq!(
            parsed.value.material("Brass").unwrap().channels().count(),
            0
        );
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
        assert_eq!(good.channels().collect::<Vec<_>>(), ["color"]);
        assert_eq!(good.tiers().collect::<Vec<_>>(), ["1k"]);
        assert_eq!(
            parsed.value.material("badhash").unwrap().hashes().count(),
            0
        );
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
            std::mem::size_of::<Material>() <= 64,
            "{}",
            std::mem::size_of::<Material>()
        );
    }

    #[test]
    fn materials_share_one_table_of_names_and_names_past_the_limit_are_skipped() {
        let mut doc = String::from("[");
        for i in 0..=MAX_NAMES {
            doc += &format!(
                r#"{{"id": "m{i:02}", "maps": ["color", "c{i:02}"], "available_tiers": ["1k"]}},"#
            );
        }
        doc += r#"{"id": "last", "maps": ["color", "c00"], "available_tiers": ["1k", "2k"]}]"#;
        let parsed = parse_catalog(doc.as_bytes()).unwrap();
        let catalog = parsed.value;
        let first = catalog.material("m00").unwrap();
        assert!(
            catalog
                .materials
                .iter()
                .all(|m| Arc::ptr_eq(&m.names, &first.names))
        );
        // "color" and c00..c62 fill the table; c63 and c64 do not fit.
        assert_eq!(
            catalog
                .material("m62")
                .unwrap()
                .channels()
                .collect::<Vec<_>>(),
            ["c62", "color"]
        );
        assert_eq!(
            catalog
                .material("m63")
                .unwrap()
                .channels()
                .collect::<Vec<_>>(),
            ["color"]
        );
        assert_eq!(
            catalog
                .material("m64")
                .unwrap()
                .channels()
                .collect::<Vec<_>>(),
            ["color"]
        );
        let last = catalog.material("last").unwrap();
        assert!(last.has_channel("c00") && !last.has_channel("c63"));
        assert_eq!(last.tiers().collect::<Vec<_>>(), ["1k", "2k"]);
        assert!(last.in_tier("2k") && !first.in_tier("2k") && first.has_tiers());
        assert_eq!(parsed.skipped.len(), 2, "{:#?}", parsed.skipped);
    }

    /// An array nested `depth` deep: valid JSON.
    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn an_entry_nested_too_deep_is_skipped_and_the_others_kept() {
        for depth in [130, 1_000_000] {
            let doc = format!(
                r#"[{{"id": "Before", "maps": ["color"], "available_tiers": ["1k"]}},
                    {{"id": "Deep", "maps": ["color"], "available_tiers": ["1k"], "extra": {deep}}},
                    {deep},
                    {{"id": "After", "maps": ["color"], "available_tiers": ["1k"]}}]"#,
                deep = nested(depth)
            );
            let parsed = parse_catalog(doc.as_bytes()).unwrap();
            let ids: Vec<_> = parsed.value.materials.iter().map(|m| &*m.id).collect();
            assert_eq!(ids, ["After", "Before"], "{depth}");
            assert_eq!(parsed.skipped.len(), 2, "{:#?}", parsed.skipped);
            assert!(
                parsed.skipped[0].contains("\"Deep\""),
                "{:?}",
                parsed.skipped
            );
            assert!(parsed.skipped.iter().all(|r| r.contains("deeper than")));
        }
        // A number no float holds is one bad entry too.
        let parsed = parse_catalog(br#"[{"id": "a", "x": 1e400}, {"id": "b"}]"#).unwrap();
        assert_eq!(parsed.value.materials.len(), 1);
        assert_eq!(parsed.skipped.len(), 1);
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
