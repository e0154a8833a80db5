//! What is kept on disk about one tag: its manifest and documents with their
//! validators, its generation, and the tiers seen complete. One owner, one
//! lock; every change is written at once, and a new version (a replaced
//! manifest or document together with its new generation) in one write.
//! A new version begins only within the tag's transition (the parent
//! module), which puts it in view under the same lock.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::format::MANIFEST_FILE;
use crate::remote::Validators;
use crate::store::{DocRecord, TagState, TagStore};

pub struct PersistedState {
    tag: String,
    store: TagStore,
    state: Mutex<TagState>,
}

/// A version of the tag: its generation and when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub generation: u64,
    pub changed_at: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PersistedState {
    pub fn new(tag: &str, store: TagStore, state: TagState) -> Self {
        PersistedState {
            tag: tag.to_string(),
            store,
            state: Mutex::new(state),
        }
    }

    fn save(&self, state: &TagState) {
        if let Err(e) = self.store.save(state) {
            // Said once for the whole cache by the store.
            tracing::debug!(tag = %self.tag, "cannot save the tag's state: {e}");
        }
    }

    pub fn version(&self) -> Version {
        let state = self.state.lock();
        Version {
            generation: state.generation,
            changed_at: state.changed_at,
        }
    }

    /// The record of the manifest (`MANIFEST_FILE`) or of a document.
    pub fn record(&self, name: &str) -> Option<DocRecord> {
        let state = self.state.lock();
        match name {
            MANIFEST_FILE => state.manifest.clone(),
            _ => state.documents.get(name).cloned(),
        }
    }

    pub fn manifest_etag(&self) -> Option<String> {
        self.state
            .lock()
            .manifest
            .as_ref()
            .and_then(|m| m.validators.etag.clone())
    }

    /// Records a document read for the first time.
    pub fn set_document(&self, name: &str, record: DocRecord) {
        let mut state = self.state.lock();
        state.documents.insert(name.to_string(), record);
        self.save(&state);
    }

    /// Same bytes under new validators: the next session can get a 304.
    pub fn set_validators(&self, name: &str, validators: Validators) {
        let mut state = self.state.lock();
        let record = match name {
            MANIFEST_FILE => state.manifest.as_mut(),
            _ => state.documents.get_mut(name),
        };
        if let Some(record) = record {
            if record.validators != validators {
                record.validators = validators;
                self.save(&state);
            }
        }
    }

    /// Replaces the manifest or a document and begins a new version of the
    /// tag, in one write: every file record and tier answer of an older
    /// generation must be confirmed again. `commit`: the commit the answer
    /// named, if any.
    pub(super) fn replace(&self, name: &str, record: DocRecord, commit: Option<&str>) -> Version {
        let mut state = self.state.lock();
        match name {
            MANIFEST_FILE => state.manifest = Some(record),
            _ => {
                state.documents.insert(name.to_string(), record);
            }
        }
        if let Some(commit) = commit {
            state.commit = Some(commit.to_string());
        }
        Self::begin_version(&mut state, 0);
        self.save(&state);
        Version {
            generation: state.generation,
            changed_at: state.changed_at,
        }
    }

    /// Begins a version past the current one and past `floor` (the highest
    /// generation a surviving file record carries), so that no record is
    /// taken for the new version's.
    pub(super) fn begin_past(&self, floor: u64) -> Version {
        let mut state = self.state.lock();
        Self::begin_version(&mut state, floor);
        self.save(&state);
        Version {
            generation: state.generation,
            changed_at: state.changed_at,
        }
    }

    fn begin_version(state: &mut TagState, floor: u64) {
        state.generation = state.generation.max(floor) + 1;
        state.changed_at = unix_now();
        state.complete_tiers.clear();
    }

    /// The commit the current version began at, when the server named one.
    pub fn commit(&self) -> Option<String> {
        self.state.lock().commit.clone()
    }

    /// The server says the revision resolves to `commit` now. A commit other
    /// than the current version's begins a new version (returned), in one
    /// write: a texture replaced without touching the manifest or the
    /// catalogs moves the commit and nothing else. A version that had no
    /// commit (its files came from a server that names none) is of no
    /// known commit: the first one named begins a new version too, in
    /// which those files are proven again.
    pub(super) fn resolved_to(&self, commit: &str) -> Option<Version> {
        let mut state = self.state.lock();
        if state.commit.as_deref() == Some(commit) {
            return None;
        }
        state.commit = Some(commit.to_string());
        Self::begin_version(&mut state, 0);
        self.save(&state);
        Some(Version {
            generation: state.generation,
            changed_at: state.changed_at,
        })
    }

    pub fn is_complete(&self, tier: &str) -> bool {
        self.state.lock().complete_tiers.contains(tier)
    }

    /// Records that `tier` was seen complete under `generation` (an answer
    /// for an older version is not kept).
    pub fn set_complete(&self, tier: &str, generation: u64) {
        let mut state = self.state.lock();
        if state.generation == generation && state.complete_tiers.insert(tier.to_string()) {
            self.save(&state);
        }
    }
}
