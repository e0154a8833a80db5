//! The filesystem core: inode numbers, open handles bound to one version of
//! a file, and the operations the kernel asks for, as plain functions
//! returning plain values. The FUSE adapter (`crate::fuse`) only translates.

mod attr;
mod changes;
mod core;
mod error;
mod handles;
mod inodes;
mod kernel;
mod kernel_files;
mod listing;
mod readdir;

pub use self::core::{FsCore, ReadReply};
pub use attr::{Attr, Entry};
pub use error::FsError;
pub use kernel::{Invalidation, Kernel};
pub use kernel_files::{Open, ReadMode};
pub use listing::Listing;

#[cfg(test)]
mod tests;
