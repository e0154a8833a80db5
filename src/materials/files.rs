//! Names of the generated files in a material's directory, and which of
//! them a directory keeps.

use super::{Spec, materialx, materialx_len, usda, usda_len};
use crate::names::check_component;

/// A generated file of a material directory `<id>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Generated {
    /// `<id>.mtlx`
    MaterialX,
    /// `<id>.usda`
    Usd,
    /// `<id>.upstream.mtlx`: the source's own document, from its
    /// MaterialX map.
    Upstream,
}

impl Generated {
    pub const ALL: [Generated; 3] = [Generated::MaterialX, Generated::Usd, Generated::Upstream];

    pub fn suffix(self) -> &'static str {
        match self {
            Generated::MaterialX => ".mtlx",
            Generated::Usd => ".usda",
            Generated::Upstream => ".upstream.mtlx",
        }
    }

    /// `<id><suffix>`, or `None` when that cannot be a directory entry
    /// (longer than 255 bytes).
    pub fn file_name(self, id: &str) -> Option<String> {
        let name = format!("{id}{}", self.suffix());
        check_component(&name).is_ok().then_some(name)
    }

    /// Which generated file of material `id` is called `name`, if any.
    pub fn from_file_name(id: &str, name: &str) -> Option<Generated> {
        let suffix = name.strip_prefix(id)?;
        Generated::ALL.into_iter().find(|g| g.suffix() == suffix)
    }

    /// The document, for the two generated from the catalog; the upstream
    /// one comes from the map instead.
    pub fn render(self, spec: &Spec) -> Option<String> {
        match self {
            Generated::MaterialX => Some(materialx(spec)),
            Generated::Usd => Some(usda(spec)),
            Generated::Upstream => None,
        }
    }

    /// The length of [`Generated::render`]'s document.
    pub fn len(self, spec: &Spec) -> Option<u64> {
        match self {
            Generated::MaterialX => Some(materialx_len(spec)),
            Generated::Usd => Some(usda_len(spec)),
            Generated::Upstream => None,
        }
    }
}

/// The generated files of material `id`'s directory, in [`Generated::ALL`]
/// order: `.mtlx` and `.usda` always, `.upstream.mtlx` when
/// `has_upstream`. A name the directory already has (`is_taken`: a channel
/// file, a file the server lists there) stays the server's: that file is
/// left out, and so is one whose name would be too long. Left-out names
/// are returned second, for the log.
pub fn generated_files(
    id: &str,
    has_upstream: bool,
    is_taken: impl Fn(&str) -> bool,
) -> (Vec<(Generated, String)>, Vec<String>) {
    let mut kept = Vec::with_capacity(3);
    let mut left_out = Vec::new();
    for generated in Generated::ALL {
        if generated == Generated::Upstream && !has_upstream {
            continue;
        }
        match generated.file_name(id) {
            Some(name) if is_taken(&name) => left_out.push(name),
            Some(name) => kept.push((generated, name)),
            None => left_out.push(format!("{id}{}", generated.suffix())),
        }
    }
    (kept, left_out)
}
