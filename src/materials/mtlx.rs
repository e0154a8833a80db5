//! `<id>.mtlx`: the material as a MaterialX 1.39 document.
//!
//! The shading model is `standard_surface`: every MaterialX 1.39 renderer
//! and exporter implements it (MaterialXView, Hydra Storm, Karma, Arnold,
//! three.js's MaterialXLoader), where `open_pbr_surface` is only in the
//! newest ones, and the dataset's channels map onto its inputs one to one.
//! The document's colour space is `lin_rec709`: colour textures say
//! `srgb_texture`, data textures are read as they are, and constant
//! colours are written already linearised.

use std::fmt::{self, Display, Write};

use super::escape::xml_attribute;
use super::{ByteCount, Channel, DISPLACEMENT_SCALE, Spec, linear_rgb, safe_name};

/// The document for `spec`.
pub fn materialx(spec: &Spec) -> String {
    let mut out = String::with_capacity(4096);
    write_materialx(spec, &mut out).expect("writing to a String cannot fail");
    out
}

/// `materialx(spec).len()`, without building the document.
pub fn materialx_len(spec: &Spec) -> u64 {
    let mut count = ByteCount(0);
    write_materialx(spec, &mut count).expect("counting cannot fail");
    count.0
}

pub fn write_materialx(spec: &Spec, out: &mut impl Write) -> fmt::Result {
    let name = safe_name(spec.id);
    let graph = format!("NG_{name}");
    out.write_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
    out.write_str("<materialx version=\"1.39\" colorspace=\"lin_rec709\">\n")?;
    if !spec.textures.is_empty() {
        write_nodegraph(spec, &graph, out)?;
    }
    write_shader(spec, &name, &graph, out)?;
    let displaced = spec.textures.contains(Channel::Displacement);
    if displaced {
        writeln!(
            out,
            "  <displacement name=\"DS_{name}\" type=\"displacementshader\">"
        )?;
        graph_input(out, "displacement", "float", &graph, Channel::Displacement)?;
        value_input(out, "scale", "float", DISPLACEMENT_SCALE)?;
        out.write_str("  </displacement>\n")?;
    }
    write!(
        out,
        "  <surfacematerial name=\"M_{name}\" type=\"material\" matvis_id=\""
    )?;
    xml_attribute(out, spec.id)?;
    out.write_char('"')?;
    if let Some(display) = spec.name {
        out.write_str(" matvis_name=\"")?;
        xml_attribute(out, display)?;
        out.write_char('"')?;
    }
    out.write_str(" doc=\"mat-vis material ")?;
    xml_attribute(out, spec.id)?;
    out.write_str("\">\n")?;
    writeln!(
        out,
        "    <input name=\"surfaceshader\" type=\"surfaceshader\" nodename=\"SR_{name}\" />"
    )?;
    if displaced {
        writeln!(
            out,
            "    <input name=\"displacementshader\" type=\"displacementshader\" nodename=\"DS_{name}\" />"
        )?;
    }
    out.write_str("  </surfacematerial>\n</materialx>\n")
}

/// The image nodes, one per texture, and one output per channel (named
/// `<channel>_output`) carrying what the shader needs from it.
fn write_nodegraph(spec: &Spec, graph: &str, out: &mut impl Write) -> fmt::Result {
    writeln!(out, "  <nodegraph name=\"{graph}\">")?;
    for channel in spec.textures.iter() {
        let channel_name = channel.name();
        let image_type = match channel {
            Channel::Color | Channel::Emission => "color3",
            Channel::Normal => "vector3",
            _ => "float",
        };
        writeln!(
            out,
            "    <image name=\"{channel_name}_image\" type=\"{image_type}\">"
        )?;
        write!(
            out,
            "      <input name=\"file\" type=\"filename\" value=\"{}\"",
            channel.file_name()
        )?;
        if channel.is_srgb() {
            out.write_str(" colorspace=\"srgb_texture\"")?;
        }
        out.write_str(" />\n    </image>\n")?;
        match channel {
            Channel::Normal => {
                out.write_str("    <normalmap name=\"normal_map\" type=\"vector3\">\n")?;
                out.write_str(
                    "      <input name=\"in\" type=\"vector3\" nodename=\"normal_image\" />\n",
                )?;
                out.write_str("    </normalmap>\n")?;
            }
            Channel::Displacement => {
                out.write_str("    <subtract name=\"displacement_centered\" type=\"float\">\n")?;
                out.write_str(
                    "      <input name=\"in1\" type=\"float\" nodename=\"displacement_image\" />\n",
                )?;
                out.write_str("      <input name=\"in2\" type=\"float\" value=\"0.5\" />\n")?;
                out.write_str("    </subtract>\n")?;
            }
            // standard_surface's opacity is a colour.
            Channel::Opacity => {
                out.write_str("    <convert name=\"opacity_color\" type=\"color3\">\n")?;
                out.write_str(
                    "      <input name=\"in\" type=\"float\" nodename=\"opacity_image\" />\n",
                )?;
                out.write_str("    </convert>\n")?;
            }
            _ => {}
        }
    }
    for channel in spec.textures.iter() {
        let (output_type, node) = match channel {
            Channel::Color => ("color3", "color_image"),
            Channel::Emission => ("color3", "emission_image"),
            Channel::Normal => ("vector3", "normal_map"),
            Channel::Displacement => ("float", "displacement_centered"),
            Channel::Opacity => ("color3", "opacity_color"),
            Channel::Roughness => ("float", "roughness_image"),
            Channel::Metalness => ("float", "metalness_image"),
            // standard_surface has no occlusion input: the output is there
            // for whoever wires the document further.
            Channel::Ao => ("float", "ao_image"),
        };
        writeln!(
            out,
            "    <output name=\"{}_output\" type=\"{output_type}\" nodename=\"{node}\" />",
            channel.name()
        )?;
    }
    out.write_str("  </nodegraph>\n")
}

fn write_shader(spec: &Spec, name: &str, graph: &str, out: &mut impl Write) -> fmt::Result {
    let pbr = &spec.pbr;
    let textured = |channel| spec.textures.contains(channel);
    writeln!(
        out,
        "  <standard_surface name=\"SR_{name}\" type=\"surfaceshader\">"
    )?;
    // The default base weight is 0.8: 1 makes base_color the albedo.
    value_input(out, "base", "float", 1)?;
    if textured(Channel::Color) {
        graph_input(out, "base_color", "color3", graph, Channel::Color)?;
    } else if let Some(srgb) = pbr.color_rgb {
        value_input(out, "base_color", "color3", Rgb(linear_rgb(srgb)))?;
    }
    if textured(Channel::Metalness) {
        graph_input(out, "metalness", "float", graph, Channel::Metalness)?;
    } else if let Some(metalness) = pbr.metalness {
        value_input(out, "metalness", "float", metalness)?;
    }
    if let Some(specular) = pbr.specular_intensity {
        value_input(out, "specular", "float", specular)?;
    }
    if textured(Channel::Roughness) {
        graph_input(
            out,
            "specular_roughness",
            "float",
            graph,
            Channel::Roughness,
        )?;
    } else if let Some(roughness) = pbr.roughness {
        value_input(out, "specular_roughness", "float", roughness)?;
    }
    if let Some(ior) = pbr.ior {
        value_input(out, "specular_IOR", "float", ior)?;
    }
    if let Some(transmission) = pbr.transmission {
        value_input(out, "transmission", "float", transmission)?;
    }
    if let Some(coat) = pbr.clearcoat {
        value_input(out, "coat", "float", coat)?;
    }
    if let Some(coat_roughness) = pbr.clearcoat_roughness {
        value_input(out, "coat_roughness", "float", coat_roughness)?;
    }
    if textured(Channel::Emission) {
        value_input(out, "emission", "float", 1)?;
        graph_input(out, "emission_color", "color3", graph, Channel::Emission)?;
    } else if let Some(emissive) = pbr.emissive {
        value_input(out, "emission", "float", 1)?;
        value_input(out, "emission_color", "color3", Rgb(emissive))?;
    }
    if textured(Channel::Opacity) {
        graph_input(out, "opacity", "color3", graph, Channel::Opacity)?;
    }
    if textured(Channel::Normal) {
        graph_input(out, "normal", "vector3", graph, Channel::Normal)?;
    }
    out.write_str("  </standard_surface>\n")
}

/// A MaterialX colour value: `r, g, b`.
struct Rgb([f32; 3]);

impl Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [r, g, b] = self.0;
        write!(f, "{r}, {g}, {b}")
    }
}

fn value_input(out: &mut impl Write, name: &str, ty: &str, value: impl Display) -> fmt::Result {
    writeln!(
        out,
        "    <input name=\"{name}\" type=\"{ty}\" value=\"{value}\" />"
    )
}

fn graph_input(
    out: &mut impl Write,
    name: &str,
    ty: &str,
    graph: &str,
    channel: Channel,
) -> fmt::Result {
    writeln!(
        out,
        "    <input name=\"{name}\" type=\"{ty}\" nodegraph=\"{graph}\" output=\"{}_output\" />",
        channel.name()
    )
}
