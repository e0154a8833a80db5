//! The generated material documents, checked by the tools users open them
//! with: MaterialX's Python package validates every `.mtlx` and usd-core
//! opens every `.usda` (tests/materials/check_documents.py says what is
//! checked). The two packages are installed from PyPI into a venv kept
//! under target/, so only the first run pays for the download; where they
//! cannot be installed the test says why and passes without checking.

mod common;

use std::path::Path;
use std::process::Command;

use matvisfs::format::Pbr;
use matvisfs::materials::{Channel, ChannelSet, Generated, Spec};
use serde_json::json;

const CHECKER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/materials/check_documents.py"
);

/// A 4x4 PNG: RGB for colour channels, grey for data, so that tools
/// reading the file see the format its channel has in the dataset.
fn tiny_png(path: &Path, channel: Channel) {
    let rgb = matches!(
        channel,
        Channel::Color | Channel::Emission | Channel::Normal
    );
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, 4, 4);
    encoder.set_color(if rgb {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    let pixels: Vec<u8> = (0..16u8)
        .flat_map(|i| {
            let v = i * 16;
            if rgb { vec![v, 255 - v, 128] } else { vec![v] }
        })
        .collect();
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
}

fn channels(names: &[&str]) -> ChannelSet {
    ChannelSet::from_names(names.iter().copied())
}

/// Materials shaped like the dataset's, with hostile ids among them.
fn materials() -> Vec<Spec<'static>> {
    let all = channels(&[
        "color",
        "normal",
        "roughness",
        "metalness",
        "ao",
        "displacement",
        "emission",
        "opacity",
    ]);
    vec![
        Spec {
            id: "Rock064",
            name: Some("Rock 064"),
            textures: channels(&["ao", "color", "displacement", "normal", "roughness"]),
            pbr: Pbr {
                color_rgb: Some([1.0, 1.0, 1.0]),
                roughness: Some(1.0),
                metalness: Some(0.0),
                ior: Some(1.5),
                ..Pbr::default()
            },
        },
        Spec {
            id: "3f2a9c1e-0b7d-4e5a-9c3f-2a1b0c9d8e7f",
            name: Some("Perforated Metal"),
            textures: all,
            pbr: Pbr {
                clearcoat: Some(0.5),
                clearcoat_roughness: Some(0.1),
                specular_intensity: Some(0.8),
                transmission: Some(0.2),
                ..Pbr::default()
            },
        },
        Spec {
            id: "Plastic (Acrylic)",
            name: None,
            textures: ChannelSet::default(),
            pbr: Pbr {
                color_rgb: Some([0.9, 0.95, 1.0]),
                roughness: Some(0.4),
                ior: Some(1.4905),
                transmission: Some(1.0),
                ..Pbr::default()
            },
        },
        Spec {
            id: "Brass",
            name: Some("Brass"),
            textures: ChannelSet::default(),
            pbr: Pbr {
                color_rgb: Some([0.887, 0.789, 0.434]),
                metalness: Some(1.0),
                roughness: Some(0.25),
                specular_f0: Some(0.9),
                ..Pbr::default()
            },
        },
        Spec {
            id: "Lamp",
            name: None,
            textures: channels(&["color"]),
            pbr: Pbr {
                emissive: Some([2.0, 1.0, 0.5]),
                ..Pbr::default()
            },
        },
        Spec {
            id: "Mármol 🧱 \"quoted\" <b>&amp; back\\slash $HOME @at 'x'",
            name: Some("Line\nbreak\t\"name\" <&> \u{1b}[31m"),
            textures: channels(&["color", "metalness", "emission"]),
            pbr: Pbr {
                roughness: Some(0.125),
                emissive: Some([1.0, 1.0, 1.0]),
                ..Pbr::default()
            },
        },
        Spec {
            id: "9lives",
            ..Spec::default()
        },
        Spec {
            id: "a b",
            textures: channels(&["normal"]),
            ..Spec::default()
        },
        Spec {
            id: "a-b",
            textures: channels(&["roughness", "opacity"]),
            ..Spec::default()
        },
    ]
}

/// What the checker is told about a material: its inputs, not the
/// documents' contents, which it works out itself. A name with characters
/// neither format can hold is given as the documents show it.
fn manifest_entry(dir: &Path, spec: &Spec) -> serde_json::Value {
    let pbr = &spec.pbr;
    let shown_name = spec.name.map(|n| {
        n.chars()
            .map(|c| {
                if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .collect::<String>()
    });
    json!({
        "dir": dir,
        "id": spec.id,
        "name": shown_name,
        "mtlx": Generated::MaterialX.file_name(spec.id).unwrap(),
        "usda": Generated::Usd.file_name(spec.id).unwrap(),
        "channels": spec.textures.iter().map(Channel::name).collect::<Vec<_>>(),
        "pbr": {
            "color_rgb": pbr.color_rgb,
            "roughness": pbr.roughness,
            "metalness": pbr.metalness,
            "ior": pbr.ior,
            "transmission": pbr.transmission,
            "clearcoat": pbr.clearcoat,
            "clearcoat_roughness": pbr.clearcoat_roughness,
            "specular_intensity": pbr.specular_intensity,
            "emissive": pbr.emissive,
        },
    })
}

#[test]
fn materialx_and_usd_accept_every_generated_document() {
    let python = match common::python::materialx_and_usd() {
        Ok(python) => python,
        Err(reason) => {
            eprintln!("SKIPPED: MaterialX and USD checks: {reason}");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let mut manifest = Vec::new();
    for spec in materials() {
        // One directory per material, named by its id as in the mount.
        let dir = root.path().join(spec.id);
        std::fs::create_dir(&dir).unwrap();
        for channel in spec.textures.iter() {
            tiny_png(&dir.join(channel.file_name()), channel);
        }
        for generated in [Generated::MaterialX, Generated::Usd] {
            let document = generated.render(&spec).unwrap();
            assert_eq!(generated.len(&spec), Some(document.len() as u64));
            std::fs::write(dir.join(generated.file_name(spec.id).unwrap()), document).unwrap();
        }
        manifest.push(manifest_entry(&dir, &spec));
    }
    let manifest_path = root.path().join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let checked = Command::new(&python)
        .arg(CHECKER)
        .arg(&manifest_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&checked.stdout);
    print!("{stdout}");
    assert!(
        checked.status.success(),
        "the tools refused generated documents:\n{stdout}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        stdout.contains(&format!("checked {} materials", manifest.len())),
        "{stdout}"
    );
}
