//! `<id>.usda`: the material for USD, a `UsdPreviewSurface` (the one
//! surface every USD importer reads: usdview, Blender, Houdini, Omniverse)
//! fed by `UsdUVTexture` shaders that read the sibling files.

use std::fmt::{self, Display, Write};

use super::escape::usd_string;
use super::{ByteCount, Channel, DISPLACEMENT_SCALE, Spec, linear_rgb, safe_name};

/// The document for `spec`.
pub fn usda(spec: &Spec) -> String {
    let mut out = String::with_capacity(4096);
    write_usda(spec, &mut out).expect("writing to a String cannot fail");
    out
}

/// `usda(spec).len()`, without building the document.
pub fn usda_len(spec: &Spec) -> u64 {
    let mut count = ByteCount(0);
    write_usda(spec, &mut count).expect("counting cannot fail");
    count.0
}

pub fn write_usda(spec: &Spec, out: &mut impl Write) -> fmt::Result {
    let prim = safe_name(spec.id);
    let displaced = spec.textures.contains(Channel::Displacement);
    writeln!(out, "#usda 1.0\n(\n    defaultPrim = \"{prim}\"\n)\n")?;
    writeln!(out, "def Material \"{prim}\" (")?;
    out.write_str("    doc = ")?;
    usd_string(out, &format!("mat-vis material {}", spec.id))?;
    out.write_str("\n    customData = {\n        string matvis_id = ")?;
    usd_string(out, spec.id)?;
    if let Some(name) = spec.name {
        out.write_str("\n        string matvis_name = ")?;
        usd_string(out, name)?;
    }
    out.write_str("\n    }\n)\n{\n")?;
    writeln!(
        out,
        "    token outputs:surface.connect = </{prim}/PreviewSurface.outputs:surface>"
    )?;
    if displaced {
        writeln!(
            out,
            "    token outputs:displacement.connect = </{prim}/PreviewSurface.outputs:displacement>"
        )?;
    }
    write_surface(spec, &prim, out)?;
    if !spec.textures.is_empty() {
        out.write_str(concat!(
            "\n    def Shader \"TexCoordReader\"\n    {\n",
            "        uniform token info:id = \"UsdPrimvarReader_float2\"\n",
            "        string inputs:varname = \"st\"\n",
            "        float2 outputs:result\n    }\n",
        ))?;
    }
    for channel in spec.textures.iter() {
        write_texture(channel, &prim, out)?;
    }
    out.write_str("}\n")
}

fn write_surface(spec: &Spec, prim: &str, out: &mut impl Write) -> fmt::Result {
    let pbr = &spec.pbr;
    let textured = |channel| spec.textures.contains(channel);
    out.write_str(concat!(
        "\n    def Shader \"PreviewSurface\"\n    {\n",
        "        uniform token info:id = \"UsdPreviewSurface\"\n",
    ))?;
    if textured(Channel::Color) {
        connected(out, "color3f", "diffuseColor", prim, Channel::Color)?;
    } else if let Some(srgb) = pbr.color_rgb {
        // UsdPreviewSurface takes linear values.
        constant(out, "color3f", "diffuseColor", Tuple(linear_rgb(srgb)))?;
    }
    if textured(Channel::Emission) {
        connected(out, "color3f", "emissiveColor", prim, Channel::Emission)?;
    } else if let Some(emissive) = pbr.emissive {
        constant(out, "color3f", "emissiveColor", Tuple(emissive))?;
    }
    if textured(Channel::Metalness) {
        connected(out, "float", "metallic", prim, Channel::Metalness)?;
    } else if let Some(metalness) = pbr.metalness {
        constant(out, "float", "metallic", metalness)?;
    }
    if textured(Channel::Roughness) {
        connected(out, "float", "roughness", prim, Channel::Roughness)?;
    } else if let Some(roughness) = pbr.roughness {
        constant(out, "float", "roughness", roughness)?;
    }
    if let Some(clearcoat) = pbr.clearcoat {
        constant(out, "float", "clearcoat", clearcoat)?;
    }
    if let Some(roughness) = pbr.clearcoat_roughness {
        constant(out, "float", "clearcoatRoughness", roughness)?;
    }
    if textured(Channel::Opacity) {
        connected(out, "float", "opacity", prim, Channel::Opacity)?;
    } else if let Some(transmission) = pbr.transmission {
        // The preview surface has no transmission: a translucent surface
        // is one with opacity below 1, refracting by its ior.
        constant(out, "float", "opacity", 1.0 - transmission)?;
    }
    if let Some(ior) = pbr.ior {
        constant(out, "float", "ior", ior)?;
    }
    if textured(Channel::Normal) {
        connected(out, "normal3f", "normal", prim, Channel::Normal)?;
    }
    if textured(Channel::Displacement) {
        connected(out, "float", "displacement", prim, Channel::Displacement)?;
    }
    if textured(Channel::Ao) {
        connected(out, "float", "occlusion", prim, Channel::Ao)?;
    }
    out.write_str("        token outputs:surface\n")?;
    if textured(Channel::Displacement) {
        out.write_str("        token outputs:displacement\n")?;
    }
    out.write_str("    }\n")
}

/// The texture reader of one channel: `<channel>_texture`.
fn write_texture(channel: Channel, prim: &str, out: &mut impl Write) -> fmt::Result {
    let name = channel.name();
    writeln!(out, "\n    def Shader \"{name}_texture\"\n    {{")?;
    out.write_str("        uniform token info:id = \"UsdUVTexture\"\n")?;
    writeln!(
        out,
        "        asset inputs:file = @./{}@",
        channel.file_name()
    )?;
    let colour_space = if channel.is_srgb() { "sRGB" } else { "raw" };
    writeln!(
        out,
        "        token inputs:sourceColorSpace = \"{colour_space}\""
    )?;
    match channel {
        // Stored as 0..1, used as -1..1.
        Channel::Normal => out.write_str(concat!(
            "        float4 inputs:scale = (2, 2, 2, 1)\n",
            "        float4 inputs:bias = (-1, -1, -1, 0)\n",
        ))?,
        // Centred on mid-grey, as the MaterialX document does.
        Channel::Displacement => {
            let s = DISPLACEMENT_SCALE;
            let b = -DISPLACEMENT_SCALE / 2.0;
            writeln!(out, "        float4 inputs:scale = ({s}, {s}, {s}, 1)")?;
            writeln!(out, "        float4 inputs:bias = ({b}, {b}, {b}, 0)")?;
        }
        _ => {}
    }
    writeln!(
        out,
        "        float2 inputs:st.connect = </{prim}/TexCoordReader.outputs:result>"
    )?;
    out.write_str(concat!(
        "        token inputs:wrapS = \"repeat\"\n",
        "        token inputs:wrapT = \"repeat\"\n",
    ))?;
    let output = match channel {
        Channel::Color | Channel::Emission | Channel::Normal => "float3 outputs:rgb",
        _ => "float outputs:r",
    };
    writeln!(out, "        {output}\n    }}")
}

/// A USD tuple: `(a, b, c)`.
struct Tuple([f32; 3]);

impl Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "({a}, {b}, {c})")
    }
}

fn constant(out: &mut impl Write, ty: &str, input: &str, value: impl Display) -> fmt::Result {
    writeln!(out, "        {ty} inputs:{input} = {value}")
}

fn connected(
    out: &mut impl Write,
    ty: &str,
    input: &str,
    prim: &str,
    channel: Channel,
) -> fmt::Result {
    let output = match channel {
        Channel::Color | Channel::Emission | Channel::Normal => "rgb",
        _ => "r",
    };
    writeln!(
        out,
        "        {ty} inputs:{input}.connect = </{prim}/{}_texture.outputs:{output}>",
        channel.name()
    )
}
