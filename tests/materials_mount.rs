//! Materials as files through a real mount, checked by the tools users open
//! them with: MaterialX and usd-core read every generated document of a
//! generated release and find every texture in the mount; the `auto/`,
//! `best/` and `latest` links resolve; `--raw` shows none of it; the
//! textures are the same with and without the additions.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{Mount, Served, TAG, read, split_generated, walk};
use serde_json::{Value, json};

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/materials/check_documents.py"
);

/// The checker's description of every material directory of the mount
/// that holds documents: what the catalog says of it and which channel
/// files are there. The checker works out what the documents must say.
fn manifest_of(mount: &Mount, served: &Served) -> Vec<Value> {
    let mut manifest = Vec::new();
    for (path, _) in served.release.files.iter() {
        let Some(source) = path.strip_suffix(".json") else {
            continue;
        };
        if path.contains('/') || source.ends_with("-mtlx") || path == "release-manifest.json" {
            continue;
        }
        let catalog: Value = served.release.json(path);
        let source_dir = mount.tag_path(source);
        let Ok(tiers) = fs::read_dir(&source_dir) else {
            continue;
        };
        for tier in tiers.map(|t| t.unwrap().path()) {
            if tier.symlink_metadata().unwrap().file_type().is_symlink()
                || matches!(tier.file_name().unwrap().to_str(), Some("auto" | "best"))
            {
                continue;
            }
            for material in fs::read_dir(&tier).unwrap().map(|m| m.unwrap()) {
                let id = material.file_name().into_string().unwrap();
                let dir = material.path();
                if !dir.join(format!("{id}.usda")).exists() {
                    continue;
                }
                let entry = catalog
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["id"] == id.as_str())
                    .unwrap();
                let channels: Vec<String> = fs::read_dir(&dir)
                    .unwrap()
                    .map(|f| f.unwrap().file_name().into_string().unwrap())
                    .filter_map(|f| f.strip_suffix(".png").map(str::to_string))
                    .collect();
                let pbr = &entry["mat_vis"]["pbr"];
                manifest.push(json!({
                    "dir": dir,
                    "id": id,
                    "name": entry["mat_vis"]["name"],
                    "mtlx": format!("{id}.mtlx"),
                    "usda": format!("{id}.usda"),
                    "channels": channels,
                    "pbr": {
                        "color_rgb": pbr["color_rgb"],
                        "roughness": pbr["roughness"],
                        "metalness": pbr["metalness"],
                        "ior": pbr["ior"],
                    },
                }));
            }
        }
    }
    manifest
}

#[test]
fn materialx_and_usd_accept_every_document_of_a_mounted_release() {
    let python = match common::python::materialx_and_usd() {
        Ok(python) => python,
        Err(reason) => {
            eprintln!("SKIPPED: MaterialX and USD checks: {reason}");
            return;
        }
    };
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let manifest = manifest_of(&mount, &served);
    // ambientcg's 1k and 512 tiers, gpuopen's 1k, physicallybased's scalars.
    assert_eq!(manifest.len(), 3 + 3 + 2 + 2, "{manifest:#?}");
    let list = mount.dir.path().join("materials.json");
    fs::write(&list, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let checked = Command::new(&python)
        .arg(CHECKER)
        .arg(&list)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "the tools refused documents of the mount:\n{stdout}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        stdout.contains(&format!("checked {} materials", manifest.len())),
        "{stdout}"
    );
    // The upstream MaterialX documents, byte for byte.
    let map: Value = served.release.json("gpuopen-mtlx.json");
    for (id, document) in map.as_object().unwrap() {
        let path = mount.tag_path(&format!("gpuopen/1k/{id}/{id}.upstream.mtlx"));
        assert_eq!(read(&path).unwrap(), document.as_str().unwrap().as_bytes());
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            document.as_str().unwrap().len() as u64
        );
    }
}

#[test]
fn links_resolve_raw_shows_nothing_added_and_the_textures_are_the_same() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let link = |path: &str| fs::read_link(mount.tag_path(path)).unwrap();
    assert_eq!(link("ambientcg/auto/Rock064"), Path::new("../1k/Rock064"));
    assert_eq!(link("ambientcg/best/Metal032"), Path::new("../1k/Metal032"));
    assert_eq!(
        fs::read_link(mount.path.join("latest")).unwrap(),
        Path::new(TAG)
    );
    // Followed like any link.
    let through = mount.path.join("latest/ambientcg/auto/Rock064/color.png");
    assert_eq!(
        read(&through).unwrap(),
        served.release.files["ambientcg/1k/Rock064/color.png"]
    );
    // The additions are all the mount's own; the server's files are the
    // same files with the same sizes and bytes as with --raw.
    let (generated, files) = split_generated(walk(&mount.path.join(TAG)));
    assert!(!generated.is_empty());
    let raw = Mount::builder(&served.base_url()).arg("--raw").start();
    assert!(!raw.path.join("latest").exists());
    assert_eq!(walk(&raw.path.join(TAG)), files);
    let expected: Vec<String> = served.release.expected_tree().into_iter().collect();
    assert_eq!(files, expected);
    let contents = |mount: &Mount| -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .filter(|p| !p.ends_with('/'))
            .map(|p| (p.clone(), read(&mount.tag_path(p)).unwrap()))
            .collect()
    };
    assert_eq!(contents(&mount), contents(&raw));
}
