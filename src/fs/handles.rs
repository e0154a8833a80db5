//! Open files and directories, by handle number.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Instant;

use parking_lot::Mutex;

use crate::dataset::Tag;
use crate::error::FsError;

pub struct OpenFile {
    pub tag: Arc<Tag>,
    pub path: std::sync::Arc<str>,
    /// The cached content, once known (at open, or at the first read).
    pub content: Mutex<Option<Arc<File>>>,
    /// The last failure to get the content, and when it happened.
    pub failure: Mutex<Option<(Instant, FsError)>>,
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

    pub fn remove(&self, fh: u64) {
        self.open.lock().remove(&fh);
    }
}
