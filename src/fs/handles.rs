//! Open files, by handle number.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::kernel_files::Slot;
use crate::dataset::Tag;

pub struct OpenFile {
    pub tag: Arc<Tag>,
    pub path: Arc<str>,
    /// The version this open is bound to, shared with the inode's other opens.
    pub slot: Arc<Slot>,
    /// Opened with `O_DIRECT`: its reads are the program's own, not the
    /// page cache's (which never reads past the size the kernel holds).
    pub direct: bool,
}

pub enum Handle {
    File(OpenFile),
    /// Generated content (the statistics), fixed at open.
    Snapshot(Vec<u8>),
}

pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Handle>>>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            next: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl Handles {
    pub fn insert(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(fh, Arc::new(handle));
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        self.open.lock().get(&fh).cloned()
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        self.open.lock().remove(&fh)
    }
}
