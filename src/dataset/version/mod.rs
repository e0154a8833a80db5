//! The owner of a tag's generation: its persisted state and its current
//! view, moved to a new version together, in one transition under one lock.
//! So a generation never goes backwards: a manifest's revalidation, a
//! document's and a moved commit racing each other each take the next
//! generation in the order they are put in place, on disk as in memory.

mod state;

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::view::{LoadedDoc, Step, TagView};
use crate::format::Manifest;
use crate::store::{Blob, DocRecord, TagState, TagStore};

pub use state::{PersistedState, unix_now};

/// What begins a new version of the tag.
pub enum NewVersion {
    /// A document other than the manifest replaced by a different one;
    /// `commit`: the commit its answer named, if any.
    Document {
        name: String,
        record: DocRecord,
        doc: LoadedDoc,
        commit: Option<String>,
    },
    /// A new manifest; `commit`: the commit its answer named, if any.
    Manifest {
        record: DocRecord,
        manifest: Arc<Manifest>,
        commit: Option<String>,
    },
    /// The revision resolves to `commit` now: a commit other than the
    /// current version's begins a new version (the first one known of a
    /// version is recorded as its own).
    Commit(String),
}

/// Where the manifest a session begins with comes from.
pub enum ManifestSource {
    /// The cache's copy, recorded in the stored state.
    Cached(Blob),
    /// Downloaded to load the tag, with the commit its answer named.
    Fetched {
        record: DocRecord,
        commit: Option<String>,
    },
}

/// A new version put in place: the views before and after it.
pub struct Transition {
    pub old: Arc<TagView>,
    pub new: Arc<TagView>,
    pub generation: u64,
    /// The commit the version before began at, when one was known.
    pub commit_before: Option<String>,
}

pub struct TagVersion {
    state: PersistedState,
    /// Read without locks, replaced whole.
    current: ArcSwap<TagView>,
    /// Held for every replacement of the view, so that none is built on a
    /// stale one, and across a new version's persisted write and its
    /// view's, so that both see the versions in one order.
    writer: Mutex<()>,
}

impl TagVersion {
    /// The tag's version this session begins with: the stored one, or past
    /// it when the manifest was just downloaded or when file records of a
    /// later version survive (`floor`: the highest generation they carry)
    /// without its state.
    pub fn first(
        tag: &str,
        store: TagStore,
        mut state: TagState,
        floor: u64,
        source: ManifestSource,
        manifest: Manifest,
        raw: bool,
    ) -> TagVersion {
        let (blob, begins) = match source {
            ManifestSource::Cached(blob) => (blob, floor > state.generation),
            ManifestSource::Fetched { record, commit } => {
                let blob = record.blob();
                state.manifest = Some(record);
                state.commit = commit;
                (blob, true)
            }
        };
        let state = PersistedState::new(tag, store, state);
        let version = match begins {
            true => state.begin_past(floor),
            false => state.version(),
        };
        let view = TagView::first(manifest, blob, version.generation, version.changed_at, raw);
        TagVersion {
            current: ArcSwap::from_pointee(view),
            state,
            writer: Mutex::new(()),
        }
    }

    pub fn view(&self) -> Arc<TagView> {
        self.current.load_full()
    }

    /// What is kept on disk about the tag; a new version begins only here.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// Puts the view after `step` in place (the version stays); returns the
    /// old and the new view when something changed.
    pub fn update(&self, step: Step) -> Option<(Arc<TagView>, Arc<TagView>)> {
        let _writer = self.writer.lock();
        let old = self.current.load_full();
        let new = Arc::new(old.next(step)?);
        self.current.store(new.clone());
        Some((old, new))
    }

    /// Begins a new version of the tag: persisted and put in view in one
    /// transition, after the next generation of all. `putting_in_place`
    /// runs just before the new view is seen, with the generations of the
    /// version before and of the new one (a redirect seen before it may
    /// lead to the bytes of the version before). `None`: nothing changed.
    pub fn begin(
        &self,
        change: NewVersion,
        putting_in_place: impl FnOnce(u64, u64),
    ) -> Option<Transition> {
        let _writer = self.writer.lock();
        let commit_before = self.state.commit();
        let (version, step) = match change {
            NewVersion::Document {
                name, record, doc, ..
            } => {
                let version = self.state.replace(&name, record, None);
                (
                    version,
                    Step::Replaced {
                        name,
                        doc,
                        generation: version.generation,
                        changed_at: version.changed_at,
                    },
                )
            }
            NewVersion::Manifest {
                record,
                manifest,
                commit,
            } => {
                let blob = record.blob();
                let version =
                    self.state
                        .replace(crate::format::MANIFEST_FILE, record, commit.as_deref());
                (
                    version,
                    Step::NewManifest {
                        manifest,
                        blob,
                        generation: version.generation,
                        changed_at: version.changed_at,
                    },
                )
            }
            NewVersion::Commit(commit) => {
                let version = self.state.resolved_to(&commit)?;
                (
                    version,
                    Step::NewVersion {
                        generation: version.generation,
                        changed_at: version.changed_at,
                    },
                )
            }
        };
        let old = self.current.load_full();
        putting_in_place(old.generation, version.generation);
        debug_assert!(version.generation > old.generation);
        let new = Arc::new(old.next(step)?);
        self.current.store(new.clone());
        Some(Transition {
            old,
            new,
            generation: version.generation,
            commit_before,
        })
    }
}
