//! The disk cache. Layout under the cache directory:
//!
//! ```text
//! objects/<2 hex>/<62 hex>   texture bodies, named by their sha256
//! documents/<2 hex>/<62 hex> manifests and catalogs, never evicted
//! cache.db                   SQLite (WAL): the objects' sizes, order of use
//!                            and total; every (origin, tag)'s file records
//! tags/<origin key>/         one origin (base URL), named in origin.json
//!   releases.json            its release list
//!   <tag>/state.json         manifest and catalog records, generation
//! tmp/                       files being written (renamed into place);
//!                            writer-*: a lock per store writing objects,
//!                            held for its life (see [`writers`])
//! ```
//!
//! Every file that is read back is written whole to a temporary file and
//! renamed into place, so a crash never leaves a partial file to be served.
//! No path under the cache is followed through a symbolic link
//! ([`beneath`]).

mod beneath;
mod content;
mod db;
mod dir;
mod index;
mod objects;
mod records;
mod room;
mod tag_state;
mod writers;

pub use content::{ContentStore, OpenBlob, VerifyReport, verify_objects};
pub use db::FileRecord;
pub use dir::{CacheDir, OriginDir};
pub use index::Recovery;
pub use objects::{
    Blob, Holds, Ingest, Ingested, KTX2_MAGIC, Listed, Located, ObjectStore, PNG_MAGIC,
    STAGED_FILE_LIMIT,
};
pub use records::{FileRecords, SMALLEST_TEXTURE};
#[cfg(test)]
pub use room::full_disk::FullDisk;
pub use room::{DiskRoom, UNCACHED_MEMORY, memory_file};
pub use tag_state::{DocRecord, TagState, TagStore};
