//! Texture bytes made from a number. Every blob the adversary publishes
//! has bytes of its own that name it (its id follows the magic), so a read
//! is matched to the one blob it claims to be by regenerating that blob,
//! with no hashing, and anything else (a mix of two versions, bytes cut
//! short, another path's bytes) is described by comparing against the
//! candidates.

use std::fmt;

pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
pub const KTX2_MAGIC: &[u8] = b"\xabKTX 20\xbb\r\n\x1a\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Png,
    Ktx2,
}

impl Format {
    pub fn magic(self) -> &'static [u8] {
        match self {
            Format::Png => PNG_MAGIC,
            Format::Ktx2 => KTX2_MAGIC,
        }
    }

    /// The format a texture path holds, by its extension.
    pub fn of_path(path: &str) -> Option<Format> {
        if path.ends_with(".png") {
            Some(Format::Png)
        } else if path.ends_with(".ktx2") {
            Some(Format::Ktx2)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Ktx2 => "ktx2",
        }
    }
}

/// One texture's bytes, as a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobSpec {
    pub id: u64,
    pub format: Format,
    pub size: u64,
}

impl fmt::Display for BlobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blob {} ({} B {})",
            self.id,
            self.size,
            self.format.extension()
        )
    }
}

/// The bytes after the magic and the id: a xorshift stream from the id, so
/// that no two blobs share a run of bytes.
fn fill(id: u64, out: &mut Vec<u8>, len: usize) {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = x.to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word[..take]);
    }
}

impl BlobSpec {
    /// The smallest non-empty blob: magic, id and some bytes.
    pub const MIN_SIZE: u64 = 32;

    pub fn bytes(&self) -> Vec<u8> {
        let len = self.size as usize;
        let mut out = Vec::with_capacity(len);
        if len == 0 {
            return out;
        }
        out.extend_from_slice(self.format.magic());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.truncate(len);
        fill(self.id, &mut out, len);
        out
    }

    /// The id that bytes of `format` name, if they are long enough to.
    pub fn named_id(format: Format, bytes: &[u8]) -> Option<u64> {
        let magic = format.magic();
        let id = bytes.strip_prefix(magic)?.get(..8)?;
        Some(u64::from_le_bytes(id.try_into().ok()?))
    }
}

/// Where `bytes` come from, told by comparing them with `candidates`
/// (labelled blobs): runs of bytes equal to one candidate, in order, as
/// far as any candidate explains them.
pub fn describe_mix(bytes: &[u8], candidates: &[(String, BlobSpec)]) -> String {
    if bytes.is_empty() {
        return "no bytes at all".into();
    }
    let generated: Vec<(&str, Vec<u8>)> = candidates
        .iter()
        .map(|(label, spec)| (label.as_str(), spec.bytes()))
        .collect();
    let mut parts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // The candidate that explains the longest run from here.
        let best = generated
            .iter()
            .map(|(label, full)| {
                let run = full
                    .get(at..)
                    .unwrap_or(&[])
                    .iter()
                    .zip(&bytes[at..])
                    .take_while(|(a, b)| a == b)
                    .count();
                (run, *label, full.len())
            })
            .max_by_key(|(run, _, _)| *run);
        match best {
            Some((run, label, len)) if run >= 16 || (run > 0 && at + run == bytes.len()) => {
                let end = at + run;
                let cut = if end == bytes.len() && end < len {
                    format!(" (then the read ended, {} B short)", len - end)
                } else {
                    String::new()
                };
                parts.push(format!("bytes {at}..{end} of {label}{cut}"));
                at = end;
            }
            _ => {
                parts.push(format!("bytes {at}..{} match no candidate", bytes.len()));
                break;
            }
        }
    }
    format!("{} bytes: {}", bytes.len(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_name_themselves_and_differ() {
        let a = BlobSpec {
            id: 7,
            format: Format::Png,
            size: 100,
        };
        let b = BlobSpec { id: 8, ..a };
        let bytes = a.bytes();
        assert_eq!(bytes.len(), 100);
        assert!(bytes.starts_with(PNG_MAGIC));
        assert_eq!(BlobSpec::named_id(Format::Png, &bytes), Some(7));
        assert_eq!(BlobSpec::named_id(Format::Ktx2, &bytes), None);
        assert_ne!(bytes[16..], b.bytes()[16..]);
        assert!(BlobSpec { size: 0, ..a }.bytes().is_empty());
        let k = BlobSpec {
            format: Format::Ktx2,
            ..a
        };
        assert!(k.bytes().starts_with(KTX2_MAGIC));
        assert_eq!(BlobSpec::named_id(Format::Ktx2, &k.bytes()), Some(7));
    }

    #[test]
    fn a_mix_is_described_as_runs_of_its_sources() {
        let old = BlobSpec {
            id: 1,
            format: Format::Png,
            size: 4096,
        };
        let new = BlobSpec { id: 2, ..old };
        let mut mixed = old.bytes()[..1000].to_vec();
        mixed.extend_from_slice(&new.bytes()[1000..]);
        let candidates = [("old".to_string(), old), ("new".to_string(), new)];
        let described = describe_mix(&mixed, &candidates);
        assert!(
            described.contains("bytes 0..1000 of old")
                && described.contains("bytes 1000..4096 of new"),
            "{described}"
        );
        let cut = describe_mix(&old.bytes()[..500], &candidates);
        assert!(cut.contains("then the read ended"), "{cut}");
    }
}
