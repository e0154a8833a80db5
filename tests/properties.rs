//! Property tests of everything that reads untrusted input: the manifest and
//! catalog parsers, the MaterialX map check, size strings and the name rules.
//! Whatever the input: no panic, and nothing that leaves a directory entry or
//! a cache path unsafe.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use matvisfs::format::{check_materialx_map, parse_catalog, parse_manifest};
use matvisfs::names::{check_component, check_tag};
use matvisfs::size::parse_size;
use matvisfs::store::CacheDir;

/// Strings that break paths and names, mixed with ordinary ones.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("a/b".to_string()),
        Just("nul\0byte".to_string()),
        Just("\u{1b}[31mred".to_string()),
        Just("x".repeat(300)),
        Just("é".repeat(130)),
        "[a-zA-Z0-9_.-]{1,12}",
        any::<String>(),
    ]
}

/// Any JSON value, with nasty strings in it, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A catalog entry shaped roughly right, with nasty values where names go.
fn catalog_entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof![nasty_string().prop_map(Value::String), json_value()],
        prop::collection::vec(nasty_string(), 0..5),
        prop::collection::vec(nasty_string(), 0..4),
        prop::collection::vec((nasty_string(), json_value()), 0..3),
        json_value(),
    )
        .prop_map(|(id, maps, tiers, hashes, extra)| {
            json!({
                "id": id,
                "maps": maps,
                "available_tiers": tiers,
                "texture_hashes": hashes.into_iter().collect::<Map<_, _>>(),
                "upstream": extra,
            })
        })
}

fn manifest() -> impl Strategy<Value = Value> {
    let tiers = prop::collection::vec((nasty_string(), json_value()), 0..4);
    let source = (prop_oneof![nasty_string().prop_map(Value::String), json_value()], tiers, json_value())
        .prop_map(|(catalog, tiers, mtlx)| {
            json!({"catalog": catalog, "tiers": tiers.into_iter().collect::<Map<_, _>>(), "mtlx": mtlx})
        });
    (prop_oneof![Just(json!(3)), json_value()], prop::collection::vec((nasty_string(), source), 0..5)).prop_map(
        |(version, sources)| json!({"schema_version": version, "sources": sources.into_iter().collect::<Map<_, _>>()}),
    )
}

fn safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && !name.chars().any(char::is_control)
        && name.len() <= 255
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn names_that_pass_are_safe_components(name in nasty_string()) {
        if check_component(&name).is_ok() {
            prop_assert!(safe(&name), "{name:?}");
        }
        if check_tag(&name).is_ok() {
            prop_assert!(safe(&name) && !name.starts_with('.'));
        }
    }

    #[test]
    fn a_tag_that_passes_stays_inside_the_cache(tag in nasty_string()) {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(&dir.path().join("c")).unwrap();
        if check_tag(&tag).is_ok() {
            let path = cache.tag_dir(&tag);
            let tags_dir = cache.tags_dir();
            prop_assert_eq!(path.parent(), Some(tags_dir.as_path()));
            prop_assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(tag.as_str()));
        }
    }

    #[test]
    fn manifests_never_panic_and_keep_only_safe_names(doc in manifest()) {
        if let Ok(parsed) = parse_manifest(&serde_json::to_vec(&doc).unwrap()) {
            for source in &parsed.value.sources {
                prop_assert!(safe(&source.name) && safe(&source.catalog));
                prop_assert!(source.mtlx.as_deref().is_none_or(safe));
                prop_assert!(source.tiers.iter().all(|t| safe(t) && t != "scalar"));
            }
        }
    }

    #[test]
    fn catalogs_never_panic_and_keep_only_safe_names(entries in prop::collection::vec(catalog_entry(), 0..12)) {
        let parsed = parse_catalog(&serde_json::to_vec(&entries).unwrap()).unwrap();
        let mut ids = Vec::new();
        for material in &parsed.value.materials {
            prop_assert!(safe(&material.id));
            // A texture's file name is the longest name a material yields.
            let file_names_safe = material.channels.iter().all(|c| safe(c) && safe(&format!("{c}.ktx2")));
            prop_assert!(file_names_safe);
            prop_assert!(material.tiers.iter().all(|t| safe(t)));
            ids.push(material.id.to_string());
        }
        let mut unique = ids.clone();
        unique.dedup();
        prop_assert_eq!(ids, unique, "ids are unique and sorted");
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_parsed_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_manifest(&bytes);
        let _ = parse_catalog(&bytes);
        let _ = check_materialx_map(&bytes);
    }

    #[test]
    fn materialx_maps_are_objects_or_refused(doc in json_value()) {
        let accepted = check_materialx_map(&serde_json::to_vec(&doc).unwrap()).is_ok();
        prop_assert_eq!(accepted, doc.is_object());
    }

    #[test]
    fn size_strings_never_panic(text in any::<String>()) {
        let _ = parse_size(&text);
    }

    #[test]
    fn sizes_round_trip(n in 0u64..1_000_000_000, unit in prop::sample::select(vec![("", 1u64), ("B", 1), ("kB", 1000), ("KiB", 1024), ("MB", 1_000_000), ("MiB", 1 << 20)])) {
        prop_assert_eq!(parse_size(&format!("{n}{}", unit.0)), Ok(n * unit.1));
    }
}
