//! Checks on texture bytes before they are served: downloaded, cached or
//! deduplicated, every texture must start with its format's magic bytes, and
//! a download must match what the server and the catalog say about it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::format::TextureHash;
use crate::remote::RemoteMeta;
use crate::store::Blob;

pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
pub const KTX2_MAGIC: &[u8] = b"\xabKTX 20\xbb\r\n\x1a\n";

/// The smallest size a texture file can have: its magic bytes.
pub const MIN_TEXTURE_SIZE: u64 = PNG_MAGIC.len() as u64;

fn magic_for(extension: &str) -> (&'static [u8], &'static str) {
    match extension {
        "ktx2" => (KTX2_MAGIC, "KTX2"),
        _ => (PNG_MAGIC, "PNG"),
    }
}

/// Why `head` (the first bytes of a file) is not a texture of `extension`.
pub fn check_magic(extension: &str, head: &[u8]) -> Result<(), String> {
    let (magic, format) = magic_for(extension);
    if head.starts_with(magic) {
        return Ok(());
    }
    let shown = &head[..head.len().min(8)];
    Err(format!(
        "the bytes are not a {format} file ({} bytes, starting with {shown:02x?})",
        head.len()
    ))
}

/// The magic check on bytes already in a file (cached or deduplicated).
pub fn check_file_magic(extension: &str, file: &File) -> Result<(), String> {
    let mut head = [0u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the cached bytes: {e}")),
        }
    }
    check_magic(extension, &head[..filled])
}

/// Why a size the server announces cannot be a texture's.
pub fn check_announced_size(size: u64) -> Result<(), String> {
    if size < MIN_TEXTURE_SIZE {
        return Err(format!(
            "the server announces {size} bytes, too few for a texture"
        ));
    }
    Ok(())
}

/// What the bytes of one path must match, besides their format.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expected {
    /// The catalog's hash, for a file of the baked tier.
    pub catalog: Option<TextureHash>,
}

/// Why downloaded bytes cannot be the texture they claim to be.
pub fn check_download(
    extension: &str,
    head: &[u8],
    blob: Blob,
    meta: &RemoteMeta,
    expected: Expected,
) -> Result<(), String> {
    check_magic(extension, head)?;
    if let Some(size) = meta.size {
        if size != blob.size {
            return Err(format!(
                "{} bytes arrived, the server announced {size}",
                blob.size
            ));
        }
    }
    if let Some(stated) = meta.sha256 {
        if stated != blob.digest {
            return Err(format!(
                "sha256 {} differs from the server's X-Linked-Etag {stated}",
                blob.digest
            ));
        }
    }
    if let Some(hash) = expected.catalog {
        if (hash.sha256, hash.size) != (blob.digest, blob.size) {
            return Err(format!(
                "sha256 {} ({} bytes) differs from the catalog's {} ({} bytes) for this file",
                blob.digest, blob.size, hash.sha256, hash.size
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;

    fn png() -> Vec<u8> {
        matvisfs_sample::images::png("x", "color", 4)
    }

    fn blob(bytes: &[u8]) -> Blob {
        Blob {
            digest: Sha256Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn checks_magic_size_and_both_hashes() {
        let png = png();
        let good = RemoteMeta {
            size: Some(png.len() as u64),
            sha256: Some(Sha256Digest::of(&png)),
            ..RemoteMeta::default()
        };
        let right = TextureHash {
            sha256: Sha256Digest::of(&png),
            size: png.len() as u64,
        };
        let ok = |meta: &RemoteMeta, catalog| {
            check_download("png", &png, blob(&png), meta, Expected { catalog })
        };
        assert_eq!(ok(&good, Some(right)), Ok(()));
        assert!(
            check_download("ktx2", &png, blob(&png), &good, Expected::default())
                .unwrap_err()
                .contains("not a KTX2")
        );
        let short = RemoteMeta {
            size: Some(1),
            ..good.clone()
        };
        assert!(ok(&short, None).unwrap_err().contains("announced"));
        let linked = RemoteMeta {
            sha256: Some(Sha256Digest::of(b"other")),
            ..good.clone()
        };
        assert!(ok(&linked, None).unwrap_err().contains("X-Linked-Etag"));
        // The catalog's hash applies to the file it was given for, whatever
        // its size: a hash of the same size but other bytes, or of another
        // size, is a refusal.
        let wrong = TextureHash {
            sha256: Sha256Digest::of(b"other"),
            ..right
        };
        assert!(ok(&good, Some(wrong)).unwrap_err().contains("catalog"));
        let resized = TextureHash {
            size: right.size + 1,
            ..right
        };
        assert!(ok(&good, Some(resized)).unwrap_err().contains("catalog"));
        let ktx = matvisfs_sample::images::ktx2("x", "color", 4);
        assert_eq!(
            check_download(
                "ktx2",
                &ktx,
                blob(&ktx),
                &RemoteMeta::default(),
                Expected::default()
            ),
            Ok(())
        );
    }

    #[test]
    fn empty_and_tiny_files_are_never_textures() {
        assert!(check_magic("png", b"").is_err());
        assert!(check_magic("ktx2", &PNG_MAGIC[..4]).is_err());
        assert!(check_magic("ktx2", PNG_MAGIC).is_err());
        assert!(check_announced_size(0).is_err());
        assert!(check_announced_size(7).is_err());
        assert!(check_announced_size(8).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        assert!(check_file_magic("png", &File::open(&path).unwrap()).is_err());
        std::fs::write(&path, png()).unwrap();
        assert!(check_file_magic("png", &File::open(&path).unwrap()).is_ok());
        assert!(check_file_magic("ktx2", &File::open(&path).unwrap()).is_err());
    }
}
