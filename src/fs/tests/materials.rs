//! Materials as files: the documents, directories and links the mount adds
//! to the server's tree, through the core.

use super::{Harness, TAG, small};
use crate::dataset::Kind;

fn full(h: &mut Harness) -> super::Session {
    h.raw = false;
    h.session()
}

fn names(s: &super::Session, path: &str) -> Vec<String> {
    s.list(path).unwrap().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn material_directories_hold_their_documents_sized_before_any_request() {
    let release = small();
    let mut h = Harness::new(&release);
    let s = full(&mut h);
    let dir = format!("{TAG}/ambientcg/1k/Rock064");
    assert_eq!(
        names(&s, &dir),
        [
            "Rock064.mtlx",
            "Rock064.usda",
            "ao.png",
            "color.png",
            "normal.png",
            "roughness.png"
        ]
    );
    // KTX2 tiers get none (the documents' readers need not read KTX2).
    assert!(
        names(&s, &format!("{TAG}/ambientcg/ktx2-512/Rock064"))
            .iter()
            .all(|n| n.ends_with(".ktx2"))
    );
    // The source with a MaterialX map gets its upstream document too.
    let uuid = "0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01";
    let gpuopen = names(&s, &format!("{TAG}/gpuopen/1k/{uuid}"));
    assert!(
        gpuopen.contains(&format!("{uuid}.upstream.mtlx")),
        "{gpuopen:?}"
    );
    h.remote.clear_log();
    for name in ["Rock064.mtlx", "Rock064.usda"] {
        let path = format!("{dir}/{name}");
        let size = s.size(&path).unwrap();
        let bytes = s.read(&path).unwrap();
        assert_eq!(size, bytes.len() as u64, "{name}");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("color.png"), "{name} reads its sibling files");
    }
    let upstream = s
        .read(&format!("{TAG}/gpuopen/1k/{uuid}/{uuid}.upstream.mtlx"))
        .unwrap();
    let map: serde_json::Value = release.json("gpuopen-mtlx.json");
    assert_eq!(upstream, map[uuid].as_str().unwrap().as_bytes());
    let textures = h
        .remote
        .log()
        .into_iter()
        .filter(|l| crate::format::is_texture_path(&l.path))
        .count();
    assert_eq!(textures, 0, "no texture is read to make the documents");
}

#[test]
fn scalar_materials_auto_best_and_latest() {
    let release = small();
    let mut h = Harness::new(&release);
    let s = full(&mut h);
    // A scalar-only source gets a directory of documents.
    assert!(names(&s, TAG).contains(&"physicallybased".to_string()));
    assert_eq!(names(&s, &format!("{TAG}/physicallybased")), ["scalar"]);
    assert_eq!(
        names(&s, &format!("{TAG}/physicallybased/scalar/Brass")),
        ["Brass.mtlx", "Brass.usda"]
    );
    let usda = s
        .read(&format!("{TAG}/physicallybased/scalar/Brass/Brass.usda"))
        .unwrap();
    assert!(
        String::from_utf8(usda)
            .unwrap()
            .contains("UsdPreviewSurface")
    );
    // Ladders: each material's first tier, as a relative link.
    let tiers = names(&s, &format!("{TAG}/ambientcg"));
    assert_eq!(tiers, ["1k", "512", "auto", "best", "ktx2-512"]);
    let link = |path: &str| {
        let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
        s.core.readlink(ino).unwrap()
    };
    assert_eq!(link("ambientcg/auto/Rock064"), "../1k/Rock064");
    assert_eq!(link("ambientcg/best/Wood051"), "../1k/Wood051");
    let kinds = s.list(&format!("{TAG}/ambientcg/auto")).unwrap();
    assert!(kinds.iter().all(|(_, k)| *k == Kind::Symlink) && kinds.len() == 3);
    // The newest release at the root.
    let root = s.list("").unwrap();
    assert!(
        root.contains(&("latest".to_string(), Kind::Symlink)),
        "{root:?}"
    );
    let latest = s.core.lookup(super::ROOT_INO, "latest").unwrap().attr.ino;
    assert_eq!(s.core.readlink(latest).unwrap(), TAG);
}

#[test]
fn raw_shows_the_servers_tree_only() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let mut tree = Vec::new();
    s.walk(TAG, &mut tree);
    tree.sort();
    let expected: Vec<String> = release.expected_tree().into_iter().collect();
    assert_eq!(tree, expected);
    assert!(!s.list("").unwrap().iter().any(|(n, _)| n == "latest"));
}

#[test]
fn documents_follow_the_catalog() {
    let mut release = small();
    let mut h = Harness::new(&release);
    let path = format!("{TAG}/ambientcg/1k/Rock064/Rock064.usda");
    let before = {
        let s = full(&mut h);
        String::from_utf8(s.read(&path).unwrap()).unwrap()
    };
    let mut catalog = release.json("ambientcg.json");
    for entry in catalog.as_array_mut().unwrap() {
        if entry["id"] == "Rock064" {
            entry["maps"] = serde_json::json!(["color", "normal"]);
            entry["mat_vis"]["pbr"]["roughness"] = serde_json::json!(0.123);
        }
    }
    release.set_json("ambientcg.json", &catalog);
    h.publish(&release);
    let s = full(&mut h);
    // The first open revalidates the catalog.
    let after = String::from_utf8(s.read(&path).unwrap()).unwrap();
    assert_ne!(before, after);
    assert!(
        !after.contains("roughness.png") && after.contains("0.123"),
        "{after}"
    );
    assert_eq!(s.size(&path).unwrap(), after.len() as u64);
}
