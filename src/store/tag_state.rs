use std::collections::{BTreeMap, BTreeSet};
use std::io;

use serde::{Deserialize, Serialize};

use super::{Blob, FileRecords, OriginDir};
use crate::digest::Sha256Digest;
use crate::remote::Validators;

/// A cached document (manifest, catalog, MaterialX map): where its bytes
/// are and how to ask whether it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    pub sha256: Sha256Digest,
    pub size: u64,
    #[serde(flatten)]
    pub validators: Validators,
}

impl DocRecord {
    pub fn new(blob: Blob, validators: Validators) -> Self {
        DocRecord {
            sha256: blob.digest,
            size: blob.size,
            validators,
        }
    }

    pub fn blob(&self) -> Blob {
        Blob {
            digest: self.sha256,
            size: self.size,
        }
    }
}

/// Everything known about one tag, written as one file so that a manifest
/// and the generation it starts are replaced together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagState {
    /// Bumped whenever the tag is seen to change on the server; file records
    /// of an older generation must be proven unchanged before use.
    pub generation: u64,
    /// Unix time of the last change, shown as the mtime of the tag's files.
    pub changed_at: u64,
    pub manifest: Option<DocRecord>,
    /// Catalogs and MaterialX maps, by file name.
    #[serde(default)]
    pub documents: BTreeMap<String, DocRecord>,
    /// `<source>/<tier>` pairs whose `.tier_complete` was seen under the
    /// current manifest.
    #[serde(default)]
    pub complete_tiers: BTreeSet<String>,
    /// The commit the revision resolved to when this version began, where
    /// the server names one (`X-Repo-Commit`): a new commit is a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

const STATE_FILE: &str = "state.json";

/// Where one tag of one origin lives in the cache:
/// `tags/<origin key>/<tag>/state.json`, and its file records.
#[derive(Debug, Clone)]
pub struct TagStore {
    origin: OriginDir,
    tag: String,
}

impl OriginDir {
    /// Where `tag` of this origin lives; `tag` must already have passed
    /// [`crate::names::check_component`].
    pub fn tag(&self, tag: &str) -> TagStore {
        TagStore::new(self.clone(), tag)
    }
}

impl TagStore {
    /// `tag` must already have passed [`crate::names::check_component`].
    pub fn new(origin: OriginDir, tag: &str) -> Self {
        TagStore {
            origin,
            tag: tag.to_string(),
        }
    }

    /// The tag's file records, from the cache database.
    pub fn records(&self) -> FileRecords {
        FileRecords::open(self.origin.database(), self.origin.key(), &self.tag)
    }

    /// The stored state; `Ok(None)` when there is none. A corrupt file is
    /// reported as an error so the caller can say so and start afresh.
    pub fn load(&self) -> io::Result<Option<TagState>> {
        let read = self
            .origin
            .open()
            .and_then(|dir| dir.read(&format!("{}/{STATE_FILE}", self.tag)));
        match read {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the state; a failure is said once in the log for all of the
    /// cache (see [`OriginDir::refused`]).
    pub fn save(&self, state: &TagState) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        self.origin
            .create()
            .and_then(|origin| origin.dir(&self.tag))
            .and_then(|dir| self.origin.write_atomically(&dir, STATE_FILE, &bytes))
            .inspect_err(|e| self.origin.refused("a tag's state", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let cache = super::super::CacheDir::open(&dir.path().join("c")).unwrap();
        let origin = cache.origin("http://127.0.0.1:1/resolve");
        let store = TagStore::new(origin.clone(), "v2026.04.2");
        assert_eq!(store.load().unwrap(), None);
        let blob = Blob {
            digest: Sha256Digest::of(b"m"),
            size: 1,
        };
        let mut state = TagState {
            generation: 3,
            changed_at: 1_700_000_000,
            manifest: Some(DocRecord::new(
                blob,
                Validators {
                    etag: Some("\"abc\"".into()),
                    last_modified: None,
                },
            )),
            ..TagState::default()
        };
        state.documents.insert(
            "ambientcg.json".into(),
            DocRecord::new(blob, Validators::default()),
        );
        state.complete_tiers.insert("ambientcg/1k".into());
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state.clone()));

        let tag_dir = origin.path().join("v2026.04.2");
        let state_path = tag_dir.join(STATE_FILE);
        std::fs::write(&state_path, b"{ truncated").unwrap();
        assert!(store.load().is_err());
        // Another origin's tag of the same name is another tag.
        let other = TagStore::new(cache.origin("http://127.0.0.1:2/resolve"), "v2026.04.2");
        assert_eq!(other.load().unwrap(), None);

        // A symlink planted in place of the state is not followed.
        let planted = dir.path().join("planted.json");
        std::fs::write(&planted, serde_json::to_vec(&TagState::default()).unwrap()).unwrap();
        std::fs::remove_file(&state_path).unwrap();
        std::os::unix::fs::symlink(&planted, &state_path).unwrap();
        assert_eq!(store.load().unwrap_err().raw_os_error(), Some(libc::ELOOP));

        // Nor one in place of the tag's directory: saving replaces the link.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::remove_dir_all(&tag_dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &tag_dir).unwrap();
        assert_eq!(store.load().unwrap_err().raw_os_error(), Some(libc::ELOOP));
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
