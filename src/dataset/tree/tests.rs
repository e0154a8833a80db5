//! The namespace resolved against hand-made views.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::dataset::Entries;
use crate::dataset::view::LoadedDoc;
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
                catalog: Some(Arc::new(catalog)),
                rowmap: None,
                mtlx: None,
                container: None,
            },
        );
    }
    TagView {
        generation: 1,
        mtime: SystemTime::UNIX_EPOCH,
        manifest: Arc::new(manifest),
        manifest_blob: blob,
        documents,
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
