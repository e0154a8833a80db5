//! Blender imports a generated `.usda` from the mount and renders it: the
//! material's image nodes read the mount's files, and the image of a
//! sphere with that material is not flat. Blender's Python module (`bpy`)
//! comes from PyPI into a venv kept under target/; where it cannot be
//! installed, the test says why and checks nothing.

mod common;

use std::process::Command;

use common::{Mount, Served};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/materials/render_in_blender.py"
);

#[test]
fn blender_imports_a_generated_usd_material_and_renders_it() {
    let python = match common::python::venv_with("bpy-venv", &["bpy"], &["bpy"]) {
        Ok(python) => python,
        Err(reason) => {
            eprintln!("SKIPPED: the Blender import and render: {reason}");
            return;
        }
    };
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let document = mount.tag_path("ambientcg/1k/Rock064/Rock064.usda");
    let image = mount.dir.path().join("render.png");
    // Blender keeps its settings and thumbnails in the user's home: a home
    // of its own, gone with the test.
    let home = tempfile::tempdir().unwrap();
    let rendered = common::python::own_home(&mut Command::new(&python), home.path())
        .arg(SCRIPT)
        .arg(&document)
        .arg(&image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report in: {stdout}"));
    let images: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    let folder = mount.tag_path("ambientcg/1k/Rock064");
    assert!(
        images.iter().any(|i| i.ends_with("/color.png")),
        "{images:?}"
    );
    for image in &images {
        assert!(image.starts_with(folder.to_str().unwrap()), "{image}");
    }
    let variance = report["variance"].as_f64().unwrap();
    assert!(variance > 1e-4, "a flat render: {report}");
    assert!(image.is_file());
}
