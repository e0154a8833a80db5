//! Checks on downloaded texture bytes before they enter the cache.

use crate::digest::Sha256Digest;
use crate::format::TextureHash;
use crate::remote::RemoteMeta;
use crate::store::{Blob, Ingested};

pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
pub const KTX2_MAGIC: &[u8] = b"\xabKTX 20\xbb\r\n\x1a\n";

/// What the session learned about a file before downloading it, from a HEAD
/// or a tree listing. The kernel was given that size.
#[derive(Debug, Default, Clone, Copy)]
pub struct Announced {
    pub size: Option<u64>,
    pub sha256: Option<Sha256Digest>,
}

impl Announced {
    /// How `blob`, verified bytes the server sent since, differs from what
    /// it announced: the file changed on the server.
    pub fn difference(&self, blob: Blob) -> Option<String> {
        if let Some(size) = self.size.filter(|&size| size != blob.size) {
            return Some(format!("{} bytes now, {size} earlier", blob.size));
        }
        self.sha256
            .filter(|&digest| digest != blob.digest)
            .map(|digest| format!("sha256 {} now, {digest} earlier", blob.digest))
    }

    /// Whether the kernel was given another size than `blob`'s.
    pub fn size_differs(&self, blob: Blob) -> bool {
        self.size.is_some_and(|size| size != blob.size)
    }
}

/// Why downloaded bytes cannot be the texture they claim to be.
pub fn check_texture(
    extension: &str,
    download: &Ingested,
    meta: &RemoteMeta,
    catalog_hash: Option<TextureHash>,
) -> Result<(), String> {
    let (magic, format) = match extension {
        "ktx2" => (KTX2_MAGIC, "KTX2"),
        _ => (PNG_MAGIC, "PNG"),
    };
    if !download.head.starts_with(magic) {
        let shown = &download.head[..download.head.len().min(8)];
        return Err(format!(
            "the bytes are not a {format} file (they start with {shown:02x?})"
        ));
    }
    let blob = download.blob;
    if let Some(size) = meta.size {
        if size != blob.size {
            return Err(format!(
                "{} bytes arrived, the server announced {size}",
                blob.size
            ));
        }
    }
    if let Some(expected) = meta.sha256 {
        if expected != blob.digest {
            return Err(format!(
                "sha256 {} differs from the server's X-Linked-Etag {expected}",
                blob.digest
            ));
        }
    }
    // texture_hashes describe one tier only; its size tells when it applies.
    if let Some(hash) = catalog_hash {
        if hash.size == blob.size && hash.sha256 != blob.digest {
            return Err(format!(
                "sha256 {} differs from the catalog's {} for this channel",
                blob.digest, hash.sha256
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::BodySink;

    fn ingested(dir: &std::path::Path, bytes: &[u8]) -> Ingested {
        let store = crate::store::CacheDir::open(&dir.join("cache"))
            .unwrap()
            .objects();
        let mut ingest = store.ingest().unwrap();
        ingest.write(bytes).unwrap();
        ingest.finish().unwrap()
    }

    #[test]
    fn checks_magic_size_and_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let png = crate::fixture::images::png("x", "color", 4);
        let done = ingested(dir.path(), &png);
        let good = RemoteMeta {
            size: Some(png.len() as u64),
            sha256: Some(Sha256Digest::of(&png)),
            ..RemoteMeta::default()
        };
        let right = TextureHash {
            sha256: Sha256Digest::of(&png),
            size: png.len() as u64,
        };
        assert_eq!(check_texture("png", &done, &good, Some(right)), Ok(()));
        assert!(
            check_texture("ktx2", &done, &good, None)
                .unwrap_err()
                .contains("not a KTX2")
        );
        let short = RemoteMeta {
            size: Some(1),
            ..good.clone()
        };
        assert!(
            check_texture("png", &done, &short, None)
                .unwrap_err()
                .contains("announced")
        );
        let linked = RemoteMeta {
            sha256: Some(Sha256Digest::of(b"other")),
            ..good.clone()
        };
        assert!(
            check_texture("png", &done, &linked, None)
                .unwrap_err()
                .contains("X-Linked-Etag")
        );
        let wrong = TextureHash {
            sha256: Sha256Digest::of(b"other"),
            ..right
        };
        assert!(
            check_texture("png", &done, &good, Some(wrong))
                .unwrap_err()
                .contains("catalog")
        );
        // The catalog describes another tier when the size differs: no verdict.
        let other_tier = TextureHash {
            size: right.size + 1,
            ..wrong
        };
        assert_eq!(check_texture("png", &done, &good, Some(other_tier)), Ok(()));
        let ktx = ingested(dir.path(), &crate::fixture::images::ktx2("x", "color", 4));
        assert_eq!(
            check_texture("ktx2", &ktx, &RemoteMeta::default(), None),
            Ok(())
        );
    }

    #[test]
    fn announced_sizes_and_digests_tell_a_changed_file() {
        let blob = Blob {
            digest: Sha256Digest::of(b"now"),
            size: 3,
        };
        let unknown = Announced::default();
        assert_eq!(unknown.difference(blob), None);
        assert!(!unknown.size_differs(blob));
        let same = Announced {
            size: Some(3),
            sha256: Some(blob.digest),
        };
        assert_eq!(same.difference(blob), None);
        let resized = Announced {
            size: Some(4),
            sha256: None,
        };
        assert_eq!(
            resized.difference(blob).as_deref(),
            Some("3 bytes now, 4 earlier")
        );
        assert!(resized.size_differs(blob));
        let rewritten = Announced {
            size: Some(3),
            sha256: Some(Sha256Digest::of(b"old")),
        };
        assert!(rewritten.difference(blob).unwrap().starts_with("sha256 "));
        assert!(!rewritten.size_differs(blob));
    }
}
