//! The filesystem core: inode numbers, open handles and the operations the
//! kernel asks for, as plain functions returning plain values. The FUSE
//! adapter (`crate::fuse`) only translates.

mod core;
mod handles;
mod inodes;
mod listing;

pub use self::core::{Attr, Entry, FsCore, Invalidation, OpenReply};
pub use listing::Listing;

#[cfg(test)]
mod tests;
