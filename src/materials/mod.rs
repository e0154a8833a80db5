//! Materials as files: the documents generated beside a material's
//! textures, so that tools reading plain files (MaterialX viewers, USD
//! tools, Blender, Houdini) get the channels wired together:
//!
//! - `<id>.mtlx`: MaterialX 1.39, a `standard_surface` fed by `image`
//!   nodes reading the sibling channel files ([`materialx`]);
//! - `<id>.usda`: USD, a `UsdPreviewSurface` material fed by `UsdUVTexture`
//!   shaders ([`usda`]);
//! - `<id>.upstream.mtlx`: a source's own MaterialX document, served from
//!   its map (see [`crate::format::mtlx_map`]).
//!
//! Pure: no I/O. The same [`Spec`] gives the same bytes, so sizes can be
//! reported before anything is read.

mod escape;
mod files;
mod ident;
mod mtlx;
mod usda;

pub use files::{Generated, generated_files};
pub use ident::safe_name;
pub use mtlx::{materialx, materialx_len, write_materialx};
pub use usda::{usda, usda_len, write_usda};

use crate::format::{Material, Pbr, SCALAR_TIER, texture_extension};

/// Height in scene units between the black and the white of a
/// displacement map, centred on mid-grey. The dataset does not give the
/// physical size of its maps; this keeps relief visible without tearing
/// a unit-sized object apart.
pub const DISPLACEMENT_SCALE: f32 = 0.02;

/// A texture channel the documents know how to wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Color,
    Normal,
    Roughness,
    Metalness,
    Ao,
    Displacement,
    Emission,
    Opacity,
}

impl Channel {
    /// In the order the documents list them.
    pub const ALL: [Channel; 8] = [
        Channel::Color,
        Channel::Normal,
        Channel::Roughness,
        Channel::Metalness,
        Channel::Ao,
        Channel::Displacement,
        Channel::Emission,
        Channel::Opacity,
    ];

    /// The channel's name in the catalog (and the stem of its file).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Color => "color",
            Channel::Normal => "normal",
            Channel::Roughness => "roughness",
            Channel::Metalness => "metalness",
            Channel::Ao => "ao",
            Channel::Displacement => "displacement",
            Channel::Emission => "emission",
            Channel::Opacity => "opacity",
        }
    }

    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The sibling file the documents read: `<channel>.png`.
    pub fn file_name(self) -> &'static str {
        match self {
            Channel::Color => "color.png",
            Channel::Normal => "normal.png",
            Channel::Roughness => "roughness.png",
            Channel::Metalness => "metalness.png",
            Channel::Ao => "ao.png",
            Channel::Displacement => "displacement.png",
            Channel::Emission => "emission.png",
            Channel::Opacity => "opacity.png",
        }
    }

    /// Colour channels hold sRGB-encoded colours; the others hold data.
    pub fn is_srgb(self) -> bool {
        matches!(self, Channel::Color | Channel::Emission)
    }
}

/// A set of channels, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ChannelSet(u8);

impl ChannelSet {
    /// The known channels among `names`; others (`thumb`, ...) are ignored.
    pub fn from_names<'n>(names: impl IntoIterator<Item = &'n str>) -> ChannelSet {
        names
            .into_iter()
            .filter_map(Channel::from_name)
            .fold(ChannelSet::default(), ChannelSet::with)
    }

    pub fn with(self, channel: Channel) -> ChannelSet {
        ChannelSet(self.0 | 1 << channel as u8)
    }

    pub fn without(self, channel: Channel) -> ChannelSet {
        ChannelSet(self.0 & !(1 << channel as u8))
    }

    pub fn contains(self, channel: Channel) -> bool {
        self.0 & 1 << channel as u8 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// In [`Channel::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Channel> {
        Channel::ALL.into_iter().filter(move |&c| self.contains(c))
    }
}

/// Everything a generated document is made from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spec<'a> {
    /// The material id, as the catalog gives it (untrusted text).
    pub id: &'a str,
    /// The display name (`mat_vis.name`), untrusted text too.
    pub name: Option<&'a str>,
    /// The channels whose files are in the material's directory.
    pub textures: ChannelSet,
    /// Values for the inputs that have no texture.
    pub pbr: Pbr,
}

impl<'a> Spec<'a> {
    /// The documents of `material` in `tier`: its PNG channels there (none
    /// in the scalar tier) and its catalog values. `None` for tiers whose
    /// textures the documents cannot name (KTX2: neither `UsdUVTexture`
    /// nor MaterialX's `image` is required to read them).
    pub fn for_tier(material: &'a Material, tier: &str) -> Option<Spec<'a>> {
        let textures = if tier == SCALAR_TIER {
            ChannelSet::default()
        } else if texture_extension(tier) == "png" {
            ChannelSet::from_names(material.channels())
        } else {
            return None;
        };
        Some(Spec {
            id: &material.id,
            name: material.name(),
            textures,
            pbr: material.pbr().copied().unwrap_or_default(),
        })
    }
}

/// sRGB transfer function to linear (IEC 61966-2-1), for constant colours:
/// both documents state constants in linear space.
pub fn srgb_to_linear(c: f32) -> f32 {
    let c = f64::from(c);
    let linear = if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    };
    linear as f32
}

fn linear_rgb(srgb: [f32; 3]) -> [f32; 3] {
    srgb.map(srgb_to_linear)
}

/// Counts what is written: the length of a document without keeping it.
struct ByteCount(u64);

impl std::fmt::Write for ByteCount {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
