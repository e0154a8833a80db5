//! Property tests of everything that reads untrusted input: the manifest and
//! catalog parsers, the MaterialX map check, size strings and the name rules.
//! Whatever the input: no panic, and nothing that leaves a directory entry or
//! a cache path unsafe.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use matvisfs::format::hub::{next_link, parse_release_refs, parse_tree_page};
use matvisfs::format::{
    Location, check_materialx_map, parse_catalog, parse_manifest, parse_rowmap,
};
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

/// A place a manifest may point to: nasty paths and URLs.
fn location() -> impl Strategy<Value = Value> {
    prop_oneof![
        nasty_string().prop_map(Value::String),
        Just(json!("https://example.org/releases/download/v1/")),
        Just(json!("ftp://example.org/x")),
        Just(json!("https://")),
        json_value(),
    ]
}

/// Schema 3 and 2 manifests (tiers may name a tar and a rowmap), and
/// schema 1 ones (tiers with a base URL and per-source file lists).
fn manifest() -> impl Strategy<Value = Value> {
    let tier_spec = prop_oneof![
        json_value(),
        (location(), location()).prop_map(|(tar, rowmap)| json!({"tar": tar, "rowmap": rowmap})),
    ];
    let tiers = prop::collection::vec((nasty_string(), tier_spec), 0..4);
    let source = (prop_oneof![nasty_string().prop_map(Value::String), json_value()], tiers, json_value())
        .prop_map(|(catalog, tiers, mtlx)| {
            json!({"catalog": catalog, "tiers": tiers.into_iter().collect::<Map<_, _>>(), "mtlx": mtlx})
        });
    let with_sources = (
        prop_oneof![Just(json!(3)), Just(json!(2)), json_value()],
        prop::collection::vec((nasty_string(), source), 0..5),
    )
        .prop_map(|(version, sources)| {
            json!({"schema_version": version, "sources": sources.into_iter().collect::<Map<_, _>>()})
        });
    let files = (
        prop::collection::vec(location(), 0..3),
        prop::collection::vec(location(), 0..3),
    )
        .prop_map(|(parquet, rowmaps)| json!({"parquet_files": parquet, "rowmap_files": rowmaps}));
    let schema1_tier = (location(), prop::collection::vec((nasty_string(), files), 0..3))
        .prop_map(|(base, sources)| json!({"base_url": base, "sources": sources.into_iter().collect::<Map<_, _>>()}));
    let schema1 = prop::collection::vec((nasty_string(), schema1_tier), 0..4)
        .prop_map(|tiers| json!({"version": 1, "tiers": tiers.into_iter().collect::<Map<_, _>>()}));
    prop_oneof![with_sources, schema1]
}

/// A rowmap shaped roughly right, with nasty names and numbers.
fn rowmap() -> impl Strategy<Value = Value> {
    let slice = prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(o, l)| json!({"offset": o, "length": l})),
        (0u64..1000, 0u64..1000).prop_map(|(o, l)| json!({"offset": o, "length": l})),
        json_value(),
    ];
    let material = prop::collection::vec((nasty_string(), slice), 0..4)
        .prop_map(|channels| Value::Object(channels.into_iter().collect()));
    (location(), prop::collection::vec((nasty_string(), material), 0..6)).prop_map(|(container, materials)| {
        json!({"tar_file": container, "materials": materials.into_iter().collect::<Map<_, _>>()})
    })
}

/// A location from the manifest is an http(s) URL or a path of safe
/// components.
fn safe_location(location: &Location) -> bool {
    match location {
        Location::Absolute(url) => matches!(url.scheme(), "http" | "https"),
        Location::Revision(path) => path.split('/').all(safe),
    }
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
            let origin = cache.origin("http://127.0.0.1:1/resolve");
            origin.tag(&tag).save(&matvisfs::store::TagState::default()).unwrap();
            let (path, tags) = (origin.path(), cache.root().join("tags"));
            prop_assert_eq!(path.parent(), Some(tags.as_path()));
            prop_assert!(origin.path().join(&tag).join("state.json").is_file());
            prop_assert_eq!(origin.cached_tags(), vec![tag.clone()]);
        }
    }

    #[test]
    fn manifests_never_panic_and_keep_only_safe_names(doc in manifest()) {
        if let Ok(parsed) = parse_manifest(&serde_json::to_vec(&doc).unwrap()) {
            for source in &parsed.value.sources {
                prop_assert!(safe(&source.name) && source.catalog.as_deref().is_none_or(safe));
                prop_assert!(source.mtlx.as_deref().is_none_or(safe));
                prop_assert!(source.tiers.iter().all(|t| safe(t) && t != "scalar"));
                for (tier, parts) in &source.containers {
                    prop_assert!(source.tiers.contains(tier));
                    for part in parts {
                        prop_assert!(safe_location(&part.rowmap), "{:?}", part.rowmap);
                        prop_assert!(part.container.as_ref().is_none_or(safe_location));
                    }
                }
            }
        }
    }

    #[test]
    fn rowmaps_never_panic_and_keep_only_safe_names_and_ranges(doc in rowmap()) {
        if let Ok(parsed) = parse_rowmap(&serde_json::to_vec(&doc).unwrap()) {
            prop_assert!(parsed.value.container.as_deref().is_none_or(safe));
            for material in &parsed.value.materials {
                prop_assert!(safe(&material.id));
                for (channel, slice) in material.slices.iter() {
                    let file = format!("{channel}.ktx2");
                    prop_assert!(safe(channel) && safe(&file));
                    prop_assert!(slice.length > 0 && slice.offset.checked_add(slice.length).is_some());
                }
            }
        }
    }

    #[test]
    fn catalogs_never_panic_and_keep_only_safe_names(mut entries in prop::collection::vec(catalog_entry(), 0..12)) {
        // Every other entry listed twice: ids that must come out once.
        let again: Vec<Value> = entries.iter().step_by(2).cloned().collect();
        entries.extend(again);
        let parsed = parse_catalog(&serde_json::to_vec(&entries).unwrap()).unwrap();
        let mut ids = Vec::new();
        for material in &parsed.value.materials {
            prop_assert!(safe(&material.id));
            // A texture's file name is the longest name a material yields.
            let file_names_safe = material.channels().all(|c| safe(c) && safe(&format!("{c}.ktx2")));
            prop_assert!(file_names_safe);
            prop_assert!(material.tiers().all(safe));
            ids.push(material.id.to_string());
        }
        // Strictly increasing: sorted, and no id twice.
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not unique and sorted: {:?}", ids);
        // Nothing but the unsafe ids is dropped: every entry with a safe id
        // is there, once.
        let mut expected: Vec<String> = entries
            .iter()
            .filter_map(|e| e["id"].as_str())
            .filter(|id| safe(id))
            .map(str::to_string)
            .collect();
        expected.sort();
        expected.dedup();
        prop_assert_eq!(ids, expected);
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_parsed_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_manifest(&bytes);
        let _ = parse_catalog(&bytes);
        let _ = check_materialx_map(&bytes);
        let _ = parse_tree_page(&bytes);
        let _ = parse_release_refs(&bytes);
    }

    #[test]
    fn tree_pages_keep_only_safe_paths(entries in prop::collection::vec((nasty_string(), nasty_string(), json_value(), prop::option::of(json_value())), 0..12)) {
        let page: Vec<Value> = entries
            .into_iter()
            .map(|(a, b, size, lfs)| json!({"type": "file", "path": format!("{a}/{b}"), "oid": "ab12", "size": size, "lfs": lfs}))
            .collect();
        for file in parse_tree_page(&serde_json::to_vec(&page).unwrap()).unwrap() {
            prop_assert!(file.path.split('/').all(safe), "{:?}", file.path);
            prop_assert!(file.etag.starts_with('"') && file.etag.ends_with('"'));
        }
    }

    #[test]
    fn refs_keep_only_release_tags(names in prop::collection::vec(nasty_string(), 0..12)) {
        let refs = json!({"tags": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()});
        for name in parse_release_refs(&serde_json::to_vec(&refs).unwrap()).unwrap() {
            prop_assert!(check_tag(&name).is_ok() && safe(&name), "{:?}", name);
        }
    }

    #[test]
    fn link_headers_never_panic(text in any::<String>()) {
        let _ = next_link(&text);
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
    fn fractional_sizes_are_exact(whole in 0u64..1_000_000, hundredths in 0u64..100, unit in prop::sample::select(vec![("kB", 1000u128), ("KiB", 1024), ("MB", 1_000_000), ("GiB", 1 << 30), ("TB", 1_000_000_000_000)])) {
        let expected = ((whole as u128 * 100 + hundredths as u128) * unit.1 + 50) / 100;
        let parsed = parse_size(&format!("{whole}.{hundredths:02}{}", unit.0));
        prop_assert_eq!(parsed.ok().map(u128::from), Some(expected));
    }

    #[test]
    fn hostile_size_strings_are_refused_or_fit(text in "[0-9.]{0,40}[a-zA-Z ]{0,4}") {
        if let Ok(bytes) = parse_size(&text) {
            // Whatever parses, parses again to the same from its bytes.
            prop_assert_eq!(parse_size(&bytes.to_string()), Ok(bytes));
        }
    }

    #[test]
    fn sizes_round_trip(n in 0u64..1_000_000_000, unit in prop::sample::select(vec![("", 1u64), ("B", 1), ("kB", 1000), ("KiB", 1024), ("MB", 1_000_000), ("MiB", 1 << 20)])) {
        prop_assert_eq!(parse_size(&format!("{n}{}", unit.0)), Ok(n * unit.1));
    }
}
