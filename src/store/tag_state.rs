use std::collections::{BTreeMap, BTreeSet};
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Blob, write_atomically};
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
}

/// Where one tag's state lives on disk.
#[derive(Debug, Clone)]
pub struct TagStore {
    dir: PathBuf,
}

impl TagStore {
    pub fn new(dir: PathBuf) -> Self {
        TagStore { dir }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn records_path(&self) -> PathBuf {
        self.dir.join("files.log")
    }

    pub fn ensure_dir(&self) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    /// The stored state; `Ok(None)` when there is none. A corrupt file is
    /// reported as an error so the caller can say so and start afresh.
    pub fn load(&self) -> io::Result<Option<TagState>> {
        match super::read_no_follow(&self.state_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, state: &TagState) -> io::Result<()> {
        self.ensure_dir()?;
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        write_atomically(&self.state_path(), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::new(dir.path().join("v2026.04.2"));
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
        assert_eq!(store.load().unwrap(), Some(state));

        std::fs::write(store.state_path(), b"{ truncated").unwrap();
        assert!(store.load().is_err());

        // A symlink planted in place of the state is not followed.
        let planted = dir.path().join("planted.json");
        std::fs::write(&planted, serde_json::to_vec(&TagState::default()).unwrap()).unwrap();
        std::fs::remove_file(store.state_path()).unwrap();
        std::os::unix::fs::symlink(&planted, store.state_path()).unwrap();
        assert_eq!(store.load().unwrap_err().raw_os_error(), Some(libc::ELOOP));
    }
}
