//! Where bytes are cached: the texture files of a tag. Exact sizes without
//! downloads ([`sizes`]), content fetched once and kept, once for all tags
//! and paths with the same bytes ([`content`]), tiers served only once
//! complete ([`tiers`]), and [`identity`], the rule for which bytes belong to
//! a path. The per-file records are the one piece of state they share.

mod content;
pub mod identity;
mod sizes;
mod tiers;
mod tree_sizes;
pub mod verify;

use super::error::Result;
use super::tag_context::{Opened, TagContext};
use super::tree::TextureRef;
use crate::store::{FileRecords, OpenBlob};

pub struct Files {
    records: FileRecords,
    sizes: sizes::Sizes,
    content: content::Content,
    tiers: tiers::Tiers,
}

impl Files {
    pub fn new(records: FileRecords) -> Self {
        Files {
            records,
            sizes: sizes::Sizes::default(),
            content: content::Content::default(),
            tiers: tiers::Tiers::default(),
        }
    }

    /// Tiers found incomplete are asked again at their next need.
    pub fn forget_incomplete_tiers(&self) {
        self.tiers.forget_incomplete();
    }

    /// The exact size of a texture, from what is known or from the server.
    pub fn size(
        &self,
        t: &TagContext,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Result<u64> {
        self.sizes.size(t, &self.records, path, texture, generation)
    }

    /// What an open of a texture is bound to: the bytes proven to be its
    /// own under this version, open when they are cached.
    pub fn opened(
        &self,
        t: &TagContext,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Result<Opened> {
        self.content
            .opened(t, &self.records, path, texture, generation)
    }

    /// The bytes of a texture now: from the cache when proven, else
    /// downloaded (one download however many readers ask at once).
    pub fn content(
        &self,
        t: &TagContext,
        path: &str,
        texture: &TextureRef,
        generation: u64,
    ) -> Result<OpenBlob> {
        let hint = self.sizes.hint(path, generation);
        self.content.get(
            t,
            &self.records,
            &self.tiers,
            path,
            texture,
            generation,
            hint,
        )
    }
}
