//! Where bytes are cached: the texture files of a tag. Exact sizes without
//! downloads ([`sizes`]), content fetched once and kept, once for all tags
//! and paths with the same bytes ([`content`]), tiers served only once
//! complete ([`tiers`]), and [`identity`], the rule for which bytes belong to
//! a path. The per-file records are the one piece of state they share; a
//! [`FileRequest`] is what each is asked.

mod content;
mod downloaded;
pub mod identity;
mod sizes;
mod tiers;
mod tree_sizes;
pub mod verify;

use super::tag_context::TagContext;
use super::tree::TextureRef;
use crate::store::{FileRecord, FileRecords};

/// What the texture files of a tag keep: what this session learned of
/// their sizes, downloads and tiers (their records are the tag's, see
/// [`TagContext::records`]).
#[derive(Default)]
pub struct Files {
    sizes: sizes::Sizes,
    content: content::Content,
    tiers: tiers::Tiers,
}

impl Files {
    /// Tiers found incomplete are asked again at their next need.
    pub fn forget_incomplete_tiers(&self) {
        self.tiers.forget_incomplete();
    }

    /// A question about the texture `texture` at `path`, in the version of
    /// the tag `generation` names.
    pub fn request<'a>(
        &'a self,
        t: &'a TagContext,
        path: &'a str,
        texture: &'a TextureRef<'a>,
        generation: u64,
    ) -> FileRequest<'a> {
        FileRequest {
            t,
            files: self,
            path,
            texture,
            generation,
        }
    }
}

/// One texture file of one version of a tag, with what its answers are
/// kept in: what every question about its size ([`FileRequest::size`]) and
/// bytes ([`FileRequest::opened`], [`FileRequest::content`]) is asked of.
pub struct FileRequest<'a> {
    t: &'a TagContext,
    files: &'a Files,
    path: &'a str,
    texture: &'a TextureRef<'a>,
    generation: u64,
}

impl FileRequest<'_> {
    fn records(&self) -> &FileRecords {
        &self.t.records
    }

    /// Whether the request's version of the tag is still the current one:
    /// an answer to a request of a version since replaced (a download that
    /// outlived a revalidation) says nothing of the current version, and
    /// must not be recorded as if it did.
    fn is_current(&self) -> bool {
        self.t.version.view().generation == self.generation
    }

    /// Records what is known of the file, unless the request's version of
    /// the tag was replaced meanwhile.
    fn record(&self, record: FileRecord) {
        if self.is_current() {
            self.records().put(record);
        }
    }
}
