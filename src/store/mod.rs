//! The disk cache. Layout under the cache directory:
//!
//! ```text
//! objects/<2 hex>/<62 hex>   texture bodies, named by their sha256
//! index.log                  size and last use of every object (shared log)
//! documents/<2 hex>/<62 hex> manifests and catalogs, never evicted
//! tags/<tag>/state.json      manifest and catalog records, generation
//! tags/<tag>/files.log       per-file records (size, ETag, content digest)
//! tmp/                       downloads in progress (renamed into place)
//! ```
//!
//! Every file that is read back is written whole to a temporary file and
//! renamed into place, so a crash never leaves a partial file to be served.

mod atomic;
mod content;
mod dir;
mod index;
mod log;
mod objects;
mod records;
mod tag_state;

pub use atomic::write_atomically;
pub use content::{ContentStore, OpenBlob, VerifyReport, verify_objects};
pub use dir::CacheDir;
pub use index::Recovery;
pub use log::SharedLog;
pub use objects::{Blob, Ingest, Ingested, ObjectStore};
pub use records::{FileRecord, FileRecords};
pub use tag_state::{DocRecord, TagState, TagStore};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Options that refuse to follow a symlink planted in place of a cache file.
pub(crate) fn no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    options
}

pub(crate) fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut no_follow().read(true).open(path)?, &mut bytes)?;
    Ok(bytes)
}

pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    no_follow().read(true).open(path)
}
