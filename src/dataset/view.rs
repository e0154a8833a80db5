//! One immutable snapshot of a tag's tree, built from its manifest and the
//! documents loaded so far (paths are resolved against it in `tree`). A new
//! snapshot is only ever made by [`TagView::next`] and put in place by the
//! tag's version (`version`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::format::{Catalog, Location, Manifest, MaterialXMap, Rowmap};
use crate::store::Blob;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// A catalog, MaterialX or rowmap document in memory: its bytes in the
/// cache and what the tree reads of it.
#[derive(Debug, Clone)]
pub struct LoadedDoc {
    pub blob: Blob,
    pub contents: DocContents,
}

/// What a document holds for the tree, by its role.
#[derive(Debug, Clone)]
pub enum DocContents {
    /// Parsed entries.
    Catalog(Arc<Catalog>),
    /// Where each material's document is in it (the map is only served).
    MaterialX(Arc<MaterialXMap>),
    /// With where its container is, found through the manifest (`None`:
    /// it names none the manifest knows).
    Rowmap {
        rowmap: Arc<Rowmap>,
        container: Option<Location>,
    },
}

impl DocContents {
    pub fn into_doc(self, blob: Blob) -> LoadedDoc {
        LoadedDoc {
            blob,
            contents: self,
        }
    }
}

impl LoadedDoc {
    pub fn catalog(&self) -> Option<&Arc<Catalog>> {
        match &self.contents {
            DocContents::Catalog(catalog) => Some(catalog),
            _ => None,
        }
    }

    pub fn materialx(&self) -> Option<&Arc<MaterialXMap>> {
        match &self.contents {
            DocContents::MaterialX(map) => Some(map),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct TagView {
    /// Bumped whenever the manifest or a document changes on the server.
    pub generation: u64,
    /// Of every node: distinct for every generation, so that the kernel sees
    /// a changed directory as changed and drops the listing it kept.
    pub mtime: SystemTime,
    pub manifest: Arc<Manifest>,
    pub manifest_blob: Blob,
    pub documents: HashMap<String, LoadedDoc>,
    /// Files of this version the server lacks, by path in the revision,
    /// found this session (see `missing`): the tree leaves them out.
    pub absent: Arc<BTreeSet<String>>,
    /// `--raw`: the server's tree and nothing else.
    pub raw: bool,
}

/// The mtime of a version of a tag: when it changed, plus its generation in
/// nanoseconds, so that two changes within a second still differ.
pub fn version_mtime(changed_at: u64, generation: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(changed_at) + Duration::from_nanos(generation % 1_000_000_000)
}

/// What makes the next view of a tag.
pub enum Step {
    /// A document read for the first time (from the cache or the server):
    /// the tag's version is unchanged.
    Loaded(String, LoadedDoc),
    /// A document replaced by a different one from the server.
    Replaced {
        name: String,
        doc: LoadedDoc,
        generation: u64,
        changed_at: u64,
    },
    /// The same documents in a new version of the tag (its commit moved):
    /// every file must be proven again.
    NewVersion { generation: u64, changed_at: u64 },
    /// Files the server was found to lack under `generation` (ignored
    /// when the tag's version moved on meanwhile).
    Absent { paths: Vec<String>, generation: u64 },
    /// A new manifest: documents it no longer names are dropped.
    NewManifest {
        manifest: Arc<Manifest>,
        blob: Blob,
        generation: u64,
        changed_at: u64,
    },
}

impl TagView {
    pub fn first(
        manifest: Manifest,
        blob: Blob,
        generation: u64,
        changed_at: u64,
        raw: bool,
    ) -> TagView {
        TagView {
            generation,
            mtime: version_mtime(changed_at, generation),
            manifest: Arc::new(manifest),
            manifest_blob: blob,
            documents: HashMap::new(),
            absent: Arc::default(),
            raw,
        }
    }

    /// What listings of this view are versioned by: they change with the
    /// generation, and within one as files are found absent and maps the
    /// manifest does not name are found present (both only grow).
    pub fn listing_version(&self) -> u64 {
        let found = self
            .manifest
            .sources
            .iter()
            .filter(|s| !s.mtlx_named)
            .filter_map(|s| s.mtlx.as_deref())
            .filter(|map| self.documents.contains_key(*map))
            .count();
        (self.generation << 24) + (self.absent.len() + found) as u64
    }

    /// The view after `step`; `None` when it changes nothing (a document
    /// loaded twice).
    pub fn next(&self, step: Step) -> Option<TagView> {
        match step {
            Step::Loaded(name, _) if self.documents.contains_key(&name) => None,
            Step::Loaded(name, doc) => {
                let mut documents = self.documents.clone();
                documents.insert(name, doc);
                Some(TagView {
                    documents,
                    manifest: self.manifest.clone(),
                    absent: self.absent.clone(),
                    ..*self
                })
            }
            Step::Absent { paths, generation } => {
                let new: Vec<String> = paths
                    .into_iter()
                    .filter(|p| !self.absent.contains(p))
                    .collect();
                if generation != self.generation || new.is_empty() {
                    return None;
                }
                let mut absent = (*self.absent).clone();
                absent.extend(new);
                Some(TagView {
                    documents: self.documents.clone(),
                    manifest: self.manifest.clone(),
                    absent: Arc::new(absent),
                    ..*self
                })
            }
            Step::Replaced {
                name,
                doc,
                generation,
                changed_at,
            } => {
                let mut documents = self.documents.clone();
                documents.insert(name, doc);
                Some(TagView {
                    generation,
                    mtime: version_mtime(changed_at, generation),
                    manifest: self.manifest.clone(),
                    manifest_blob: self.manifest_blob,
                    documents,
                    // A new version: what the server lacks is found again.
                    absent: Arc::default(),
                    raw: self.raw,
                })
            }
            Step::NewVersion {
                generation,
                changed_at,
            } => Some(TagView {
                generation,
                mtime: version_mtime(changed_at, generation),
                manifest: self.manifest.clone(),
                documents: self.documents.clone(),
                // A new version: what the server lacks is found again.
                absent: Arc::default(),
                ..*self
            }),
            Step::NewManifest {
                manifest,
                blob,
                generation,
                changed_at,
            } => {
                // Rowmaps are located through the manifest: read again.
                let documents = self
                    .documents
                    .iter()
                    .filter(|(name, _)| manifest.document_owner(name).is_some())
                    .map(|(name, doc)| (name.clone(), doc.clone()))
                    .collect();
                Some(TagView {
                    generation,
                    mtime: version_mtime(changed_at, generation),
                    manifest,
                    manifest_blob: blob,
                    documents,
                    absent: Arc::default(),
                    raw: self.raw,
                })
            }
        }
    }
}
