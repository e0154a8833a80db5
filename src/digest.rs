//! SHA-256 digests: the identity of cached bytes and of catalog hashes.

use std::fmt;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// Parses 64 hex digits, upper or lower case; quotes around the value
    /// (as in an ETag) are accepted.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches("W/").trim_matches('"');
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Sha256Digest(out))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The 64 lowercase hex digits, without an allocation: every open of a
    /// texture names a cached object by them.
    pub fn hex(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        hex::encode_to_slice(self.0, &mut out).expect("64 digits for 32 bytes");
        out
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Sha256Digest::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("not a sha256 hex digest"))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// Incremental hashing for bytes that arrive in pieces.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

/// The hash of a stream as it arrives: on the receiving thread, or, once
/// [`StreamHasher::in_background`] is asked for (a large download), on a
/// thread of its own beside it, so that receiving and writing a large
/// body do not wait for its hash (which is as slow as both together).
/// Chunks given shared ([`StreamHasher::update_shared`], a body as it came
/// off the connection) reach that thread without a copy.
#[derive(Default)]
pub struct StreamHasher {
    inline: Hasher,
    worker: Option<HashWorker>,
}

struct HashWorker {
    batch: Vec<Bytes>,
    /// Bytes in `batch`.
    batched: usize,
    #[cfg(test)]
    largest_sent: usize,
    sender: std::sync::mpsc::SyncSender<Vec<Bytes>>,
    done: std::thread::JoinHandle<Hasher>,
}

/// Bytes handed to the hashing thread at a time (a batch ends at the
/// first chunk that reaches it).
const HASH_BATCH: usize = 1 << 20;

impl StreamHasher {
    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.worker.is_none() {
            return self.inline.update(bytes);
        }
        // Copied a batch at a time, however large the slice (a whole
        // document): the bytes in flight stay within a few batches.
        while !bytes.is_empty() {
            let room = HASH_BATCH - self.worker.as_ref().map_or(0, |w| w.batched);
            let (piece, rest) = bytes.split_at(room.min(bytes.len()));
            self.update_shared(Bytes::copy_from_slice(piece));
            bytes = rest;
        }
    }

    /// Hashes `bytes`, which the hashing thread may hold until it has.
    pub fn update_shared(&mut self, bytes: Bytes) {
        let Some(worker) = &mut self.worker else {
            return self.inline.update(&bytes);
        };
        worker.batched += bytes.len();
        worker.batch.push(bytes);
        if worker.batched >= HASH_BATCH {
            let batch = std::mem::take(&mut worker.batch);
            #[cfg(test)]
            {
                worker.largest_sent = worker.largest_sent.max(worker.batched);
            }
            worker.batched = 0;
            // The thread only ends with the sender, or by a panic that
            // `finish` passes on.
            let _ = worker.sender.send(batch);
        }
    }

    /// Hashes the rest on a thread of its own (where one can be started).
    pub fn in_background(&mut self) {
        if self.worker.is_some() {
            return;
        }
        let (sender, batches) = std::sync::mpsc::sync_channel::<Vec<Bytes>>(4);
        let mut hasher = self.inline.clone();
        let started = std::thread::Builder::new()
            .name("hash".into())
            .spawn(move || {
                for batch in batches {
                    for bytes in batch {
                        hasher.update(&bytes);
                    }
                }
                hasher
            });
        if let Ok(done) = started {
            self.worker = Some(HashWorker {
                batch: Vec::new(),
                batched: 0,
                #[cfg(test)]
                largest_sent: 0,
                sender,
                done,
            });
        }
    }

    pub fn finish(self) -> Sha256Digest {
        let Some(worker) = self.worker else {
            return self.inline.finish();
        };
        let HashWorker {
            batch,
            sender,
            done,
            ..
        } = worker;
        let _ = sender.send(batch);
        drop(sender);
        match done.join() {
            Ok(hasher) => hasher.finish(),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_slice_is_hashed_in_the_background_a_batch_at_a_time() {
        let bytes: Vec<u8> = (0..10_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let mut hasher = StreamHasher::default();
        hasher.in_background();
        hasher.update(&bytes);
        let worker = hasher.worker.as_ref().expect("a hashing thread");
        assert_eq!(worker.largest_sent, HASH_BATCH);
        assert!(worker.batched < HASH_BATCH);
        assert_eq!(hasher.finish(), Sha256Digest::of(&bytes));
    }

    #[test]
    fn a_stream_hashed_in_the_background_has_the_same_digest() {
        let bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for switch_at in [0, 1, 777_777, 4_999_999] {
            let mut hasher = StreamHasher::default();
            for (n, chunk) in bytes.chunks(65_536).enumerate() {
                if n * 65_536 >= switch_at {
                    hasher.in_background();
                }
                hasher.update(chunk);
            }
            assert_eq!(hasher.finish(), Sha256Digest::of(&bytes), "{switch_at}");
        }
    }

    #[test]
    fn shared_chunks_mixed_with_copied_ones_have_the_same_digest() {
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 11 % 251) as u8).collect();
        for background in [false, true] {
            let mut hasher = StreamHasher::default();
            if background {
                hasher.in_background();
            }
            for (n, chunk) in bytes.chunks(300_001).enumerate() {
                match n % 2 {
                    0 => hasher.update_shared(Bytes::copy_from_slice(chunk)),
                    _ => hasher.update(chunk),
                }
            }
            assert_eq!(hasher.finish(), Sha256Digest::of(&bytes), "{background}");
        }
    }

    #[test]
    fn hex_round_trip_and_known_value() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(
            Sha256Digest::from_hex(&format!("\"{}\"", d.to_hex().to_uppercase())),
            Some(d)
        );
        assert_eq!(Sha256Digest::from_hex("abc"), None);
        assert_eq!(Sha256Digest::from_hex(&"g".repeat(64)), None);
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), d);
    }
}
