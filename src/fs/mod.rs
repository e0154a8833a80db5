//! The filesystem core: inode numbers, open handles and the operations the
//! kernel asks for, as plain functions returning plain values. The FUSE
//! adapter (`crate::fuse`) only translates.

mod core;
mod handles;
mod inodes;
mod listing;

pub use self::core::{Attr, Entry, FsCore, Invalidation, OpenReply};
pub use inodes::{CONTROL_DIR, NodeKey, ROOT_INO, STATS_FILE};
pub use listing::{DirEntry, Listing};

#[cfg(test)]
mod tests;
