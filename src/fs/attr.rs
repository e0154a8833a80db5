//! Attributes handed to the kernel, and how long it may keep them.

use std::time::{Duration, SystemTime};

use super::inodes::NodeKey;
use crate::dataset::{Kind, Stat};

/// Kernel cache time for a tag's entries and attributes: content is
/// immutable within a version, and a change is pushed to the kernel.
const CONTENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The root lists tags that may appear at any time.
const ROOT_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

impl Entry {
    pub fn new(ino: u64, key: &NodeKey, stat: Stat) -> Entry {
        let ttl = match (&key.tag, key.path.is_empty()) {
            // The root and the tag directories: tags come and go.
            (_, true) => ROOT_TTL,
            // The statistics change all the time.
            (None, false) => Duration::ZERO,
            (Some(_), false) => CONTENT_TTL,
        };
        Entry {
            attr: Attr {
                ino,
                kind: stat.kind,
                size: stat.size,
                mtime: stat.mtime,
            },
            ttl,
        }
    }

    /// Attributes the kernel must not trust: looked up again before any use.
    pub fn placeholder(ino: u64, kind: Kind, mtime: SystemTime) -> Entry {
        Entry {
            attr: Attr {
                ino,
                kind,
                size: 0,
                mtime,
            },
            ttl: Duration::ZERO,
        }
    }
}

/// The size the kernel is given for a node: files only.
pub fn file_size(stat: &Stat) -> Option<u64> {
    (stat.kind == Kind::File).then_some(stat.size)
}
