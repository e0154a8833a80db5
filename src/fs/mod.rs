//! The filesystem core: inode numbers, open handles and the operations the
//! kernel asks for, as plain functions returning plain values. The FUSE
//! adapter (`crate::fuse`) only translates.

mod core;
mod handles;
mod inodes;

pub use self::core::{Attr, DirEntry, Entry, FsCore, Invalidation, OpenReply};
pub use inodes::{CONTROL_DIR, NodeKey, ROOT_INO, STATS_FILE};

#[cfg(test)]
mod tests;
