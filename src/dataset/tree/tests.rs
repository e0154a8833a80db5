//! The namespace resolved against hand-made views.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::dataset::Entries;
use crate::dataset::view::{DocContents, LoadedDoc};
use crate::digest::Sha256Digest;
use crate::format::{parse_catalog, parse_manifest};
use crate::store::Blob;

fn view(with_catalog: bool) -> TagView {
    let manifest = parse_manifest(
        br#"{"schema_version": 3, "sources": {
            "ambientcg": {"catalog": "ambientcg.json", "tiers": {"1k": {}, "ktx2-1k": {}, "512": {}}},
            "gpuopen": {"catalog": "gpuopen.json", "mtlx": "gpuopen-mtlx.json", "tiers": {"1k": {}}},
            "physicallybased": {"catalog": "physicallybased.json", "tiers": {"scalar": {}}}}}"#,
    )
    .unwrap()
    .value;
    let blob = Blob {
        digest: Sha256Digest::of(b""),
        size: 0,
    };
    let mut documents = HashMap::new();
    if with_catalog {
        let catalog = parse_catalog(
            br#"[{"id": "Rock064", "maps": ["color", "normal"], "available_tiers": ["1k", "ktx2-1k"]},
                 {"id": "Wood01", "maps": ["color"], "available_tiers": ["512"]}]"#,
        )
        .unwrap()
        .value;
        documents.insert(
            "ambientcg.json".to_string(),
            LoadedDoc {
                blob,
                contents: DocContents::Catalog(Arc::new(catalog)),
            },
        );
    }
    TagView {
        generation: 1,
        mtime: SystemTime::UNIX_EPOCH,
        manifest: Arc::new(manifest),
        manifest_blob: blob,
        documents,
        absent: Arc::default(),
        raw: true,
    }
}

fn names(listing: Lookup<Option<Entries>>) -> Vec<String> {
    match listing {
        Lookup::Found(Some(entries)) => entries.iter().map(|(n, _)| n.to_string()).collect(),
        other => panic!("not a listing: {other:?}"),
    }
}

#[test]
fn lists_the_tag_root_and_sources_without_catalogs() {
    let v = view(false);
    assert_eq!(
        names(v.list("")),
        [
            "ambientcg",
            "ambientcg.json",
            "gpuopen",
            "gpuopen-mtlx.json",
            "gpuopen.json",
            "physicallybased.json",
            "release-manifest.json"
        ]
    );
    assert_eq!(names(v.list("ambientcg")), ["1k", "512", "ktx2-1k"]);
    assert_eq!(
        v.list("ambientcg/1k"),
        Lookup::NeedsDocument("ambientcg.json".into())
    );
    assert_eq!(v.resolve("physicallybased"), Lookup::Missing);
    assert_eq!(v.resolve("ambientcg/2k"), Lookup::Missing);
    assert_eq!(
        v.resolve("gpuopen-mtlx.json"),
        Lookup::Found(Node::Document("gpuopen-mtlx.json"))
    );
}

#[test]
fn resolves_materials_and_channels_per_tier() {
    let v = view(true);
    assert_eq!(names(v.list("ambientcg/1k")), ["Rock064"]);
    assert_eq!(names(v.list("ambientcg/512")), ["Wood01"]);
    assert_eq!(
        names(v.list("ambientcg/1k/Rock064")),
        ["color.png", "normal.png"]
    );
    assert_eq!(
        names(v.list("ambientcg/ktx2-1k/Rock064")),
        ["color.ktx2", "normal.ktx2"]
    );
    assert_eq!(v.resolve("ambientcg/512/Rock064"), Lookup::Missing);
    assert_eq!(
        v.resolve("ambientcg/1k/Rock064/color.ktx2"),
        Lookup::Missing
    );
    assert_eq!(
        v.resolve("ambientcg/1k/Rock064/roughness.png"),
        Lookup::Missing
    );
    assert_eq!(
        v.resolve("ambientcg/1k/Rock064/color.png/x"),
        Lookup::Missing
    );
    assert_eq!(
        v.list("ambientcg/1k/Rock064/color.png"),
        Lookup::Found(None)
    );
    match v.resolve("ambientcg/ktx2-1k/Rock064/normal.ktx2") {
        Lookup::Found(Node::Texture(t)) => {
            assert_eq!(
                (t.source, t.tier, t.material),
                ("ambientcg", "ktx2-1k", "Rock064")
            );
            assert_eq!((t.channel, t.extension()), ("normal", "ktx2"));
        }
        other => panic!("{other:?}"),
    }
    // Another source's catalog is still needed.
    assert_eq!(
        v.resolve("gpuopen/1k/x"),
        Lookup::NeedsDocument("gpuopen.json".into())
    );
}

/// A view of `manifest` with `catalogs` loaded.
fn view_with(manifest: &str, catalogs: &[(&str, &str)], raw: bool) -> TagView {
    let manifest = parse_manifest(manifest.as_bytes()).unwrap().value;
    let blob = Blob {
        digest: Sha256Digest::of(b""),
        size: 0,
    };
    let documents = catalogs
        .iter()
        .map(|(name, json)| {
            let catalog = parse_catalog(json.as_bytes()).unwrap().value;
            let doc = LoadedDoc {
                blob,
                contents: DocContents::Catalog(Arc::new(catalog)),
            };
            (name.to_string(), doc)
        })
        .collect();
    TagView {
        generation: 1,
        mtime: SystemTime::UNIX_EPOCH,
        manifest: Arc::new(manifest),
        manifest_blob: blob,
        documents,
        absent: Arc::default(),
        raw,
    }
}

#[test]
fn the_thumb_tier_holds_the_preview_only_and_no_other_tier_has_one() {
    let mut v = view_with(
        r#"{"schema_version": 3, "sources": {
            "a": {"catalog": "a.json", "tiers": {"1k": {}, "thumb": {}}}}}"#,
        &[(
            "a.json",
            r#"[{"id": "M", "maps": ["color", "normal", "thumb"], "available_tiers": ["1k", "thumb"]}]"#,
        )],
        false,
    );
    // The map the manifest implies is not on the server.
    v.absent = Arc::new(["a-mtlx.json".to_string()].into());
    assert_eq!(names(v.list("a/thumb/M")), ["thumb.png"]);
    assert_eq!(
        names(v.list("a/1k/M")),
        ["M.mtlx", "M.usda", "color.png", "normal.png"]
    );
    assert_eq!(v.resolve("a/1k/M/thumb.png"), Lookup::Missing);
    assert_eq!(v.resolve("a/thumb/M/color.png"), Lookup::Missing);
    assert!(matches!(
        v.resolve("a/thumb/M/thumb.png"),
        Lookup::Found(Node::Texture(t)) if t.channel == "thumb" && t.hash.is_none()
    ));
    assert_eq!(
        v.textures_below("a/thumb"),
        Some(vec!["a/thumb/M/thumb.png".to_string()])
    );
}

#[test]
fn absent_files_are_left_out_of_lookups_listings_and_documents() {
    let mut v = view_with(
        r#"{"schema_version": 3, "sources": {
            "a": {"catalog": "a.json", "tiers": {"1k": {}, "512": {}}},
            "b": {"catalog": "b.json", "tiers": {"1k": {}}}}}"#,
        &[(
            "a.json",
            r#"[{"id": "M", "maps": ["color", "normal", "opacity"], "available_tiers": ["1k", "512"]}]"#,
        )],
        false,
    );
    // No source names a map: each is assumed, and listed once present only.
    assert_eq!(
        names(v.list("")),
        ["a", "a.json", "b", "b.json", "release-manifest.json"]
    );
    assert_eq!(
        v.list("a/1k/M"),
        Lookup::NeedsDocument("a-mtlx.json".into())
    );
    let before = v.listing_version();
    v.absent = Arc::new(
        ["a-mtlx.json", "a/1k/M/opacity.png", "a/512/M/normal.png"]
            .map(String::from)
            .into(),
    );
    assert_ne!(v.listing_version(), before);
    assert_eq!(v.resolve("a-mtlx.json"), Lookup::Missing);
    assert_eq!(v.resolve("a/1k/M/opacity.png"), Lookup::Missing);
    assert!(matches!(
        v.resolve("a/512/M/opacity.png"),
        Lookup::Found(Node::Texture(_))
    ));
    assert_eq!(
        names(v.list("a/1k/M")),
        ["M.mtlx", "M.usda", "color.png", "normal.png"]
    );
    assert_eq!(
        names(v.list("a/512/M")),
        ["M.mtlx", "M.usda", "color.png", "opacity.png"]
    );
    // The documents name only what is there.
    let Lookup::Found(Node::Generated(mtlx)) = v.resolve("a/512/M/M.mtlx") else {
        panic!("no document");
    };
    let text = crate::materials::materialx(&mtlx.spec);
    assert!(
        text.contains("opacity.png") && !text.contains("normal.png"),
        "{text}"
    );
    assert_eq!(
        v.textures_below("a/512"),
        Some(vec![
            "a/512/M/color.png".to_string(),
            "a/512/M/opacity.png".to_string()
        ])
    );
    assert_eq!(v.textures_below("b/1k"), None, "its catalog is not loaded");
}
