//! The MaterialX map of a source (`gpuopen-mtlx.json`,
//! `{"<material id>": "<MaterialX XML>"}`), indexed without keeping the
//! documents: each id maps to where its JSON string lies in the map file,
//! and a document is unescaped from those bytes when it is read.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::{FormatError, Parsed};
use crate::names::check_component;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaterialXMap {
    /// Sorted by id, ids unique.
    entries: Vec<(Box<str>, UpstreamDocument)>,
}

/// Where one upstream document is in the map file, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamDocument {
    /// Bytes of the map file holding the JSON string, quotes included:
    /// give them to [`upstream_document`].
    pub token: Range<u64>,
    /// Length of the document itself (the unescaped UTF-8 text).
    pub len: u64,
}

impl MaterialXMap {
    pub fn document(&self, id: &str) -> Option<&UpstreamDocument> {
        self.entries
            .binary_search_by(|(key, _)| key.as_ref().cmp(id))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(id, _)| id.as_ref())
    }
}

/// Indexes a MaterialX map. An entry whose value is not a string, or whose
/// id could not be a material, is left out with a reason. An id given
/// twice keeps its last value, as the reference client (Python's `json`)
/// does.
pub fn parse_materialx_map(bytes: &[u8]) -> Result<Parsed<MaterialXMap>, FormatError> {
    let raw: BTreeMap<String, &RawValue> = match serde_json::from_slice(bytes) {
        Ok(raw) => raw,
        Err(e) => {
            return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => FormatError::WrongShape("the MaterialX map is not a JSON object".into()),
                Err(_) => FormatError::NotJson(e),
            });
        }
    };
    let base = bytes.as_ptr() as usize;
    let mut skipped = Vec::new();
    let mut entries = Vec::with_capacity(raw.len());
    for (id, value) in raw {
        if let Err(e) = check_component(&id) {
            skipped.push(format!("MaterialX map: id {id:?} {e}"));
            continue;
        }
        let text = value.get();
        if !text.starts_with('"') {
            skipped.push(format!("MaterialX map: {id:?} is not a string"));
            continue;
        }
        let len = match serde_json::from_str::<String>(text) {
            Ok(document) => document.len() as u64,
            Err(e) => {
                skipped.push(format!("MaterialX map: {id:?} cannot be decoded: {e}"));
                continue;
            }
        };
        // A borrowed raw value is a slice of `bytes`: its address gives
        // its offset.
        let start = (text.as_ptr() as usize - base) as u64;
        let token = start..start + text.len() as u64;
        entries.push((id.into_boxed_str(), UpstreamDocument { token, len }));
    }
    Ok(Parsed {
        value: MaterialXMap { entries },
        skipped,
    })
}

/// The upstream document from the bytes of its JSON string (the
/// `token` range of the map file).
pub fn upstream_document(token: &[u8]) -> Result<String, FormatError> {
    serde_json::from_slice::<String>(token).map_err(FormatError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn served(bytes: &[u8], map: &MaterialXMap, id: &str) -> String {
        let doc = map.document(id).unwrap();
        let token = &bytes[doc.token.start as usize..doc.token.end as usize];
        let text = upstream_document(token).unwrap();
        assert_eq!(text.len() as u64, doc.len, "{id}");
        text
    }

    #[test]
    fn indexes_documents_and_unescapes_them_exactly() {
        let bytes = br#"{"a": "<materialx version=\"1.38\">\n\t<x/>\u00e9</materialx>",
            "b-uuid": "", "c": "caf\u00e9 \ud83e\uddf1 \\ / \/ \b\f\r"}"#;
        let parsed = parse_materialx_map(bytes).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let map = parsed.value;
        assert_eq!(map.ids().collect::<Vec<_>>(), ["a", "b-uuid", "c"]);
        assert_eq!(
            served(bytes, &map, "a"),
            "<materialx version=\"1.38\">\n\t<x/>\u{e9}</materialx>"
        );
        assert_eq!(served(bytes, &map, "b-uuid"), "");
        assert_eq!(
            served(bytes, &map, "c"),
            "caf\u{e9} \u{1f9f1} \\ / / \u{8}\u{c}\r"
        );
        assert!(map.document("d").is_none());
    }

    #[test]
    fn leaves_out_what_is_not_a_document() {
        let bytes = br#"{"num": 5, "obj": {"x": "y"}, "null": null, "": "empty id",
            "a/b": "slash", "ok": "<m/>", "..": "dots", "lone": "\ud800 x"}"#;
        let parsed = parse_materialx_map(bytes).unwrap();
        assert_eq!(parsed.value.ids().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(parsed.skipped.len(), 7, "{:#?}", parsed.skipped);
    }

    #[test]
    fn an_entry_nested_too_deep_is_left_out_and_the_others_kept() {
        let deep = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
        let bytes = format!(r#"{{"a": "<m/>", "deep": {deep}, "z": "<z/>"}}"#);
        let parsed = parse_materialx_map(bytes.as_bytes()).unwrap();
        assert_eq!(parsed.value.ids().collect::<Vec<_>>(), ["a", "z"]);
        assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
        assert!(crate::format::check_materialx_map(bytes.as_bytes()).is_ok());
    }

    #[test]
    fn a_repeated_id_keeps_its_last_value() {
        let bytes = br#"{"a": "first", "a": "second"}"#;
        let map = parse_materialx_map(bytes).unwrap().value;
        assert_eq!(map.len(), 1);
        assert_eq!(served(bytes, &map, "a"), "second");
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        assert!(matches!(
            parse_materialx_map(b"[\"a\"]"),
            Err(FormatError::WrongShape(_))
        ));
        assert!(matches!(
            parse_materialx_map(b"{\"a\": "),
            Err(FormatError::NotJson(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Any map serde_json writes is indexed so that every document
        /// comes back byte for byte with the announced length.
        #[test]
        fn round_trips_any_documents(
            docs in prop::collection::btree_map("[a-zA-Z0-9 _.-]{1,12}", any::<String>(), 0..8),
            pretty in any::<bool>(),
        ) {
            let docs: BTreeMap<String, String> =
                docs.into_iter().filter(|(k, _)| check_component(k).is_ok()).collect();
            let bytes = if pretty {
                serde_json::to_vec_pretty(&docs).unwrap()
            } else {
                serde_json::to_vec(&docs).unwrap()
            };
            let parsed = parse_materialx_map(&bytes).unwrap();
            prop_assert!(parsed.skipped.is_empty());
            prop_assert_eq!(parsed.value.len(), docs.len());
            for (id, doc) in &docs {
                prop_assert_eq!(&served(&bytes, &parsed.value, id), doc);
            }
        }
    }
}
