use proptest::prelude::*;

use super::*;
use crate::format::parse_catalog;

fn rock() -> Spec<'static> {
    Spec {
        id: "Rock064",
        name: Some("Rock 064"),
        textures: ChannelSet::from_names(["color", "normal", "roughness"]),
        pbr: Pbr {
            metalness: Some(0.0),
            ior: Some(1.5),
            roughness: Some(0.9),
            ..Pbr::default()
        },
    }
}

fn every_channel(id: &str) -> Spec<'_> {
    Spec {
        id,
        name: None,
        textures: Channel::ALL
            .into_iter()
            .fold(ChannelSet::default(), ChannelSet::with),
        pbr: Pbr::default(),
    }
}

fn brass() -> Spec<'static> {
    Spec {
        id: "Brass",
        name: None,
        textures: ChannelSet::default(),
        pbr: Pbr {
            color_rgb: Some([1.0, 0.5, 0.0]),
            metalness: Some(1.0),
            roughness: Some(0.25),
            ..Pbr::default()
        },
    }
}

#[test]
fn channel_sets_keep_known_channels_in_order() {
    let set = ChannelSet::from_names(["roughness", "thumb", "color", "Color", "color"]);
    assert_eq!(
        set.iter().collect::<Vec<_>>(),
        [Channel::Color, Channel::Roughness]
    );
    assert!(ChannelSet::from_names([]).is_empty());
    for channel in Channel::ALL {
        assert_eq!(Channel::from_name(channel.name()), Some(channel));
        assert_eq!(channel.file_name(), format!("{}.png", channel.name()));
    }
}

#[test]
fn srgb_constants_are_linearised() {
    assert_eq!(srgb_to_linear(0.0), 0.0);
    assert_eq!(srgb_to_linear(1.0), 1.0);
    assert!((srgb_to_linear(0.5) - 0.21404114).abs() < 1e-6);
    assert!((srgb_to_linear(0.04) - 0.04 / 12.92).abs() < 1e-9);
}

#[test]
fn scalar_only_materialx_is_exactly_this() {
    assert_eq!(
        materialx(&brass()),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<materialx version="1.39" colorspace="lin_rec709">
  <standard_surface name="SR_Brass" type="surfaceshader">
    <input name="base" type="float" value="1" />
    <input name="base_color" type="color3" value="1, 0.21404114, 0" />
    <input name="metalness" type="float" value="1" />
    <input name="specular_roughness" type="float" value="0.25" />
  </standard_surface>
  <surfacematerial name="M_Brass" type="material" matvis_id="Brass" doc="mat-vis material Brass">
    <input name="surfaceshader" type="surfaceshader" nodename="SR_Brass" />
  </surfacematerial>
</materialx>
"#
    );
}

#[test]
fn scalar_only_usda_is_exactly_this() {
    assert_eq!(
        usda(&brass()),
        r#"#usda 1.0
(
    defaultPrim = "Brass"
)

def Material "Brass" (
    doc = "mat-vis material Brass"
    customData = {
        string matvis_id = "Brass"
    }
)
{
    token outputs:surface.connect = </Brass/PreviewSurface.outputs:surface>

    def Shader "PreviewSurface"
    {
        uniform token info:id = "UsdPreviewSurface"
        color3f inputs:diffuseColor = (1, 0.21404114, 0)
        float inputs:metallic = 1
        float inputs:roughness = 0.25
        token outputs:surface
    }
}
"#
    );
}

#[test]
fn materialx_wires_textures_with_their_colour_spaces() {
    let doc = materialx(&every_channel("Rock064"));
    for snippet in [
        r#"<image name="color_image" type="color3">
      <input name="file" type="filename" value="color.png" colorspace="srgb_texture" />"#,
        r#"<image name="roughness_image" type="float">
      <input name="file" type="filename" value="roughness.png" />"#,
        r#"<image name="normal_image" type="vector3">
      <input name="file" type="filename" value="normal.png" />"#,
        r#"<normalmap name="normal_map" type="vector3">
      <input name="in" type="vector3" nodename="normal_image" />"#,
        r#"<image name="emission_image" type="color3">
      <input name="file" type="filename" value="emission.png" colorspace="srgb_texture" />"#,
        r#"<output name="normal_output" type="vector3" nodename="normal_map" />"#,
        r#"<input name="base_color" type="color3" nodegraph="NG_Rock064" output="color_output" />"#,
        r#"<input name="specular_roughness" type="float" nodegraph="NG_Rock064" output="roughness_output" />"#,
        r#"<input name="normal" type="vector3" nodegraph="NG_Rock064" output="normal_output" />"#,
        r#"<input name="opacity" type="color3" nodegraph="NG_Rock064" output="opacity_output" />"#,
        r#"<displacement name="DS_Rock064" type="displacementshader">
    <input name="displacement" type="float" nodegraph="NG_Rock064" output="displacement_output" />
    <input name="scale" type="float" value="0.02" />"#,
        r#"<input name="displacementshader" type="displacementshader" nodename="DS_Rock064" />"#,
    ] {
        assert!(doc.contains(snippet), "missing {snippet}\nin\n{doc}");
    }
    // Data textures carry no colour space: read as they are.
    assert_eq!(doc.matches("colorspace=\"srgb_texture\"").count(), 2);
}

#[test]
fn a_texture_wins_over_the_scalar_of_its_input() {
    let mut spec = rock();
    spec.pbr.color_rgb = Some([0.5, 0.5, 0.5]);
    let mtlx = materialx(&spec);
    assert!(!mtlx.contains("value=\"0.9\""), "roughness is textured");
    assert!(mtlx.contains(r#"<input name="metalness" type="float" value="0" />"#));
    assert!(mtlx.contains(r#"<input name="specular_IOR" type="float" value="1.5" />"#));
    assert!(!mtlx.contains("0.21404"), "base colour is textured");
    let usd = usda(&spec);
    assert!(
        usd.contains("color3f inputs:diffuseColor.connect = </Rock064/color_texture.outputs:rgb>")
    );
    assert!(
        usd.contains("float inputs:roughness.connect = </Rock064/roughness_texture.outputs:r>")
    );
    assert!(usd.contains("float inputs:metallic = 0\n"));
    assert!(usd.contains("float inputs:ior = 1.5\n"));
    assert!(!usd.contains("inputs:roughness = "));
}

#[test]
fn usda_reads_textures_by_relative_path_with_the_right_colour_space() {
    let doc = usda(&every_channel("Rock064"));
    for snippet in [
        "def Shader \"TexCoordReader\"\n    {\n        uniform token info:id = \"UsdPrimvarReader_float2\"\n        string inputs:varname = \"st\"\n        float2 outputs:result\n    }",
        "def Shader \"color_texture\"\n    {\n        uniform token info:id = \"UsdUVTexture\"\n        asset inputs:file = @./color.png@\n        token inputs:sourceColorSpace = \"sRGB\"\n",
        "asset inputs:file = @./roughness.png@\n        token inputs:sourceColorSpace = \"raw\"\n",
        "asset inputs:file = @./normal.png@\n        token inputs:sourceColorSpace = \"raw\"\n        float4 inputs:scale = (2, 2, 2, 1)\n        float4 inputs:bias = (-1, -1, -1, 0)\n",
        "asset inputs:file = @./emission.png@\n        token inputs:sourceColorSpace = \"sRGB\"\n",
        "normal3f inputs:normal.connect = </Rock064/normal_texture.outputs:rgb>",
        "float inputs:occlusion.connect = </Rock064/ao_texture.outputs:r>",
        "float inputs:displacement.connect = </Rock064/displacement_texture.outputs:r>",
        "token outputs:displacement.connect = </Rock064/PreviewSurface.outputs:displacement>",
        "float inputs:opacity.connect = </Rock064/opacity_texture.outputs:r>",
    ] {
        assert!(doc.contains(snippet), "missing {snippet}\nin\n{doc}");
    }
    assert_eq!(
        doc.matches("float2 inputs:st.connect = </Rock064/TexCoordReader.outputs:result>")
            .count(),
        Channel::ALL.len()
    );
}

#[test]
fn transmission_becomes_opacity_in_usd() {
    let spec = Spec {
        id: "Glass",
        pbr: Pbr {
            transmission: Some(0.75),
            ior: Some(1.5),
            ..Pbr::default()
        },
        ..Spec::default()
    };
    assert!(usda(&spec).contains("float inputs:opacity = 0.25\n"));
    assert!(
        materialx(&spec).contains(r#"<input name="transmission" type="float" value="0.75" />"#)
    );
}

#[test]
fn a_material_with_nothing_still_gets_valid_minimal_documents() {
    let spec = Spec {
        id: "bare",
        ..Spec::default()
    };
    let mtlx = materialx(&spec);
    assert!(!mtlx.contains("nodegraph"));
    assert!(mtlx.contains(r#"<input name="base" type="float" value="1" />"#));
    let usd = usda(&spec);
    assert!(!usd.contains("TexCoordReader"));
    assert!(usd.contains("token outputs:surface\n"));
}

#[test]
fn hostile_ids_and_names_are_escaped_and_named_safely() {
    let id = "3f2a <b>&\"x\" \\ 'é' 🧱 @ $HOME";
    let spec = Spec {
        id,
        name: Some("Name\n\twith \"quotes\"\u{1b}[31m"),
        ..every_channel(id)
    };
    let prim = safe_name(id);
    let usd = usda(&spec);
    assert!(usd.contains(&format!("def Material \"{prim}\" (")));
    assert!(usd.contains(r#"string matvis_id = "3f2a <b>&\"x\" \\ 'é' 🧱 @ $HOME""#));
    assert!(usd.contains("string matvis_name = \"Name\\n\\twith \\\"quotes\\\"\u{FFFD}[31m\""));
    assert!(!usd.contains('\u{1b}'));

    let mtlx = materialx(&spec);
    let xml = roxmltree::Document::parse(&mtlx).expect("well-formed XML");
    let material = xml
        .descendants()
        .find(|n| n.has_tag_name("surfacematerial"))
        .unwrap();
    assert_eq!(material.attribute("matvis_id"), Some(id));
    assert_eq!(
        material.attribute("matvis_name"),
        Some("Name\n\twith \"quotes\"\u{FFFD}[31m")
    );
    assert_eq!(
        material.attribute("name"),
        Some(format!("M_{prim}").as_str())
    );
}

#[test]
fn same_spec_same_bytes_and_the_length_is_exact() {
    let specs = [
        rock(),
        brass(),
        every_channel("3f2a9c1e-0b7d"),
        Spec::default(),
    ];
    for spec in &specs {
        let (mtlx, usd) = (materialx(spec), usda(spec));
        assert_eq!(mtlx, materialx(spec));
        assert_eq!(usd, usda(spec));
        assert_eq!(materialx_len(spec), mtlx.len() as u64);
        assert_eq!(usda_len(spec), usd.len() as u64);
        assert_eq!(Generated::MaterialX.len(spec), Some(mtlx.len() as u64));
        assert_eq!(Generated::Usd.render(spec), Some(usd));
        assert_eq!(Generated::Upstream.render(spec), None);
    }
}

#[test]
fn specs_come_from_the_catalog_per_tier() {
    let catalog = parse_catalog(
        br#"[{"id": "Rock064", "maps": ["color", "normal", "thumb"],
              "available_tiers": ["1k", "ktx2-1k"],
              "mat_vis": {"name": "Rock 064", "pbr": {"roughness": 0.8, "color_rgb": [0.5, 0.4, 0.3]}}},
             {"id": "Brass", "available_tiers": ["scalar"],
              "mat_vis": {"pbr": {"metalness": 1}}}]"#,
    )
    .unwrap()
    .value;
    let rock = catalog.material("Rock064").unwrap();
    let spec = Spec::for_tier(rock, "1k").unwrap();
    assert_eq!(spec.id, "Rock064");
    assert_eq!(spec.name, Some("Rock 064"));
    assert_eq!(
        spec.textures.iter().collect::<Vec<_>>(),
        [Channel::Color, Channel::Normal]
    );
    assert_eq!(spec.pbr.roughness, Some(0.8));
    assert!(Spec::for_tier(rock, "ktx2-1k").is_none());
    let brass = Spec::for_tier(catalog.material("Brass").unwrap(), SCALAR_TIER).unwrap();
    assert!(brass.textures.is_empty());
    assert_eq!(brass.pbr.metalness, Some(1.0));
    assert_eq!(brass.name, None);
}

#[test]
fn generated_file_names_and_clashes() {
    assert_eq!(
        Generated::ALL.map(|g| g.file_name("Rock064").unwrap()),
        ["Rock064.mtlx", "Rock064.usda", "Rock064.upstream.mtlx"]
    );
    for g in Generated::ALL {
        assert_eq!(
            Generated::from_file_name("Rock064", &g.file_name("Rock064").unwrap()),
            Some(g)
        );
    }
    assert_eq!(Generated::from_file_name("Rock064", "color.png"), None);
    assert_eq!(Generated::from_file_name("Rock064", "Rock064.MTLX"), None);
    assert_eq!(Generated::from_file_name("Rock", "Rock064.mtlx"), None);
    // An id ending in ".upstream" is still told apart in its own directory.
    assert_eq!(
        Generated::from_file_name("a.upstream", "a.upstream.mtlx"),
        Some(Generated::MaterialX)
    );

    let (kept, left_out) = generated_files("Rock064", false, |_| false);
    assert_eq!(
        kept,
        [
            (Generated::MaterialX, "Rock064.mtlx".to_string()),
            (Generated::Usd, "Rock064.usda".to_string())
        ]
    );
    assert!(left_out.is_empty());

    let taken = ["color.png", "Rock064.usda"];
    let (kept, left_out) = generated_files("Rock064", true, |n| taken.contains(&n));
    assert_eq!(
        kept.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        [Generated::MaterialX, Generated::Upstream]
    );
    assert_eq!(left_out, ["Rock064.usda"]);

    // 250 bytes fit as an id but not with ".upstream.mtlx".
    let long = "x".repeat(250);
    let (kept, left_out) = generated_files(&long, true, |_| false);
    assert_eq!(
        kept.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        [Generated::MaterialX, Generated::Usd]
    );
    assert_eq!(left_out, [format!("{long}.upstream.mtlx")]);
}

fn any_pbr() -> impl Strategy<Value = Pbr> {
    let unit = || prop::option::of(0.0f32..=1.0);
    let colour = || prop::option::of(prop::array::uniform3(0.0f32..=1.0));
    (
        (colour(), unit(), unit(), prop::option::of(1.0f32..3.0)),
        (unit(), unit(), unit(), prop::option::of(0.0f32..2.0)),
        colour(),
    )
        .prop_map(
            |(
                (color_rgb, roughness, metalness, ior),
                (transmission, clearcoat, clearcoat_roughness, specular_intensity),
                emissive,
            )| Pbr {
                color_rgb,
                roughness,
                metalness,
                ior,
                transmission,
                clearcoat,
                clearcoat_roughness,
                specular_intensity,
                emissive,
                ..Pbr::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any id, name, channels and values: the MaterialX document is
    /// well-formed XML that names one valid identifier-based material and
    /// gives the id and name back exactly (after the characters XML cannot
    /// hold); the sizes are exact; the USD document holds no raw control
    /// character and no unescaped quote inside its strings.
    #[test]
    fn any_material_gives_well_formed_documents(
        id in any::<String>(),
        name in prop::option::of(any::<String>()),
        bits in any::<u8>(),
        pbr in any_pbr(),
    ) {
        let spec = Spec {
            id: &id,
            name: name.as_deref(),
            textures: Channel::ALL
                .into_iter()
                .filter(|c| bits & 1 << *c as u8 != 0)
                .fold(ChannelSet::default(), ChannelSet::with),
            pbr,
        };
        let mtlx = materialx(&spec);
        prop_assert_eq!(materialx_len(&spec), mtlx.len() as u64);
        let xml = roxmltree::Document::parse(&mtlx);
        prop_assert!(xml.is_ok(), "{:?}\n{}", xml.err(), mtlx);
        let xml = xml.unwrap();
        let material = xml.descendants().find(|n| n.has_tag_name("surfacematerial")).unwrap();
        let representable = |s: &str| s.chars().map(|c| {
            if (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}') {
                '\u{FFFD}'
            } else {
                c
            }
        }).collect::<String>();
        let shown_id = representable(&id);
        prop_assert_eq!(material.attribute("matvis_id"), Some(shown_id.as_str()));
        prop_assert_eq!(material.attribute("matvis_name").map(str::to_string), name.as_deref().map(representable));
        let images = xml.descendants().filter(|n| n.has_tag_name("image")).count();
        prop_assert_eq!(images, spec.textures.iter().count());

        let usd = usda(&spec);
        prop_assert_eq!(usda_len(&spec), usd.len() as u64);
        prop_assert!(!usd.chars().any(|c| c.is_control() && c != '\n'));
        let prim = safe_name(&id);
        let header = format!("defaultPrim = \"{prim}\"");
        prop_assert!(usd.contains(&header));
        // Every line that opens a string closes it: quotes inside are
        // escaped, so unescaped quotes come in pairs.
        for line in usd.lines() {
            let unescaped = line.replace("\\\\", "").replace("\\\"", "");
            prop_assert_eq!(unescaped.matches('"').count() % 2, 0, "{}", line);
        }
    }
}
