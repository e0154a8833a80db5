//! The one rule that decides which bytes belong to a path, under the tag's
//! current version (generation), for one origin:
//!
//! - bytes downloaded from that path, or proven unchanged by the server (a
//!   `304` to a conditional request, a HEAD with the same strong ETag and
//!   size), under this generation;
//! - the server's own digest for that path under this generation
//!   (`X-Linked-Etag` on its HEAD, the Hub tree listing's sha256 for it);
//! - the catalog's hash for that very file (its `texture_hashes` describe
//!   the baked tier's files only).
//!
//! Nothing else proves anything: not another path's record, not another
//! tier's hash, not a size.

use crate::digest::Sha256Digest;
use crate::format::TextureHash;
use crate::remote::strong_etag_match;
use crate::store::{Blob, FileRecord, FileRecords};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Downloaded from the path, or proven unchanged, under this generation.
    Confirmed,
    /// The server's own digest for the path, under this generation.
    Declared,
    /// The catalog's hash for the file.
    Catalog,
}

/// Bytes proven to be a path's, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub blob: Blob,
    pub proof: Proof,
}

impl Identity {
    pub fn digest(&self) -> Sha256Digest {
        self.blob.digest
    }
}

/// The bytes proven to be the file's under `generation`, if any: `record`
/// is what is known of this path, `catalog` the catalog's hash for this
/// very file. Where the catalog gives a hash it decides: another statement
/// of the server that disagrees with it (a tree listing, a HEAD) never
/// names the bytes served; downloading lets the bytes decide.
pub fn proven(
    record: Option<&FileRecord>,
    catalog: Option<TextureHash>,
    generation: u64,
) -> Option<Identity> {
    let current = record.filter(|r| r.generation == generation);
    let from_record = |digest: Option<Sha256Digest>, proof| {
        let record = current?;
        Some(Identity {
            blob: Blob {
                digest: digest?,
                size: record.size?,
            },
            proof,
        })
    };
    let recorded = from_record(current.and_then(|r| r.sha256), Proof::Confirmed)
        .or_else(|| from_record(current.and_then(|r| r.remote_sha256), Proof::Declared));
    let Some(hash) = catalog else {
        return recorded;
    };
    let listed = Identity {
        blob: Blob {
            digest: hash.sha256,
            size: hash.size,
        },
        proof: Proof::Catalog,
    };
    match recorded {
        Some(recorded) if recorded.blob == listed.blob => Some(recorded),
        _ => Some(listed),
    }
}

/// Whether what the server stated about a file (its sha256, when it gave
/// one, and its size) contradicts the catalog's hash for it.
pub fn contradicts_catalog(
    catalog: Option<TextureHash>,
    sha256: Option<Sha256Digest>,
    size: u64,
) -> bool {
    catalog
        .is_some_and(|hash| hash.size != size || sha256.is_some_and(|stated| stated != hash.sha256))
}

/// The record of a file whose size and validator the server just gave: the
/// content cached before stays proven when the strong ETag and the size are
/// unchanged.
pub fn announced_record(
    records: &FileRecords,
    path: &str,
    generation: u64,
    size: u64,
    etag: Option<String>,
    stated_sha256: Option<Sha256Digest>,
) -> FileRecord {
    let old = records.get(path);
    let unchanged = old.as_ref().is_some_and(|old| {
        old.size == Some(size)
            && matches!((&old.etag, &etag), (Some(a), Some(b)) if strong_etag_match(a, b))
    });
    FileRecord {
        path: path.to_string(),
        generation,
        size: Some(size),
        etag,
        sha256: old.and_then(|o| o.sha256).filter(|_| unchanged),
        remote_sha256: stated_sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(s: &str) -> Sha256Digest {
        Sha256Digest::of(s.as_bytes())
    }

    fn record(generation: u64) -> FileRecord {
        FileRecord {
            path: "a/512/m/color.png".into(),
            generation,
            size: Some(100),
            etag: None,
            sha256: None,
            remote_sha256: None,
        }
    }

    #[test]
    fn only_proofs_for_this_path_and_version_count() {
        let hash = TextureHash {
            sha256: digest("catalog"),
            size: 90,
        };
        // Nothing known, no hash: nothing proven.
        assert_eq!(proven(None, None, 3), None);
        // A size alone proves nothing.
        assert_eq!(proven(Some(&record(3)), None, 3), None);
        let downloaded = FileRecord {
            sha256: Some(digest("bytes")),
            ..record(3)
        };
        assert_eq!(
            proven(Some(&downloaded), None, 3).map(|i| (i.digest(), i.proof)),
            Some((digest("bytes"), Proof::Confirmed))
        );
        // Where the catalog gives a hash for the file, it decides.
        assert_eq!(
            proven(Some(&downloaded), Some(hash), 3).map(|i| (i.digest(), i.proof)),
            Some((hash.sha256, Proof::Catalog))
        );
        // Of an older version: only the catalog's hash for the file holds.
        assert_eq!(
            proven(Some(&downloaded), Some(hash), 4).map(|i| (i.blob, i.proof)),
            Some((
                Blob {
                    digest: hash.sha256,
                    size: 90
                },
                Proof::Catalog
            ))
        );
        assert_eq!(proven(Some(&downloaded), None, 4), None);
        let declared = FileRecord {
            remote_sha256: Some(digest("stated")),
            ..record(4)
        };
        assert_eq!(
            proven(Some(&declared), None, 4).map(|i| i.proof),
            Some(Proof::Declared)
        );
        assert_eq!(proven(Some(&declared), None, 5), None);
    }

    #[test]
    fn the_catalog_beats_any_other_statement_that_disagrees_with_it() {
        let hash = TextureHash {
            sha256: digest("catalog"),
            size: 100,
        };
        // A listing gave this very file another file's sha256 and size.
        let lied = FileRecord {
            remote_sha256: Some(digest("another file")),
            size: Some(120),
            ..record(4)
        };
        let identity = proven(Some(&lied), Some(hash), 4).unwrap();
        assert_eq!(
            (identity.digest(), identity.proof),
            (hash.sha256, Proof::Catalog)
        );
        assert_eq!(identity.blob.size, 100);
        // Agreeing statements keep their own proof.
        let agreed = FileRecord {
            sha256: Some(hash.sha256),
            ..record(4)
        };
        assert_eq!(
            proven(Some(&agreed), Some(hash), 4).map(|i| i.proof),
            Some(Proof::Confirmed)
        );
        assert!(contradicts_catalog(Some(hash), Some(digest("x")), 100));
        assert!(contradicts_catalog(Some(hash), None, 99));
        assert!(!contradicts_catalog(Some(hash), Some(hash.sha256), 100));
        assert!(!contradicts_catalog(Some(hash), None, 100));
        assert!(!contradicts_catalog(None, Some(digest("x")), 1));
    }
}
