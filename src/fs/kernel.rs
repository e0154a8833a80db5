//! What the kernel must be told when the server changed something it
//! caches: attributes, directory listings, names. The core decides what to
//! drop; the mount sends it (FUSE notifications), before the operation that
//! found the change returns.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Attributes only (size, mtime). Never waits on the kernel's locks, so
    /// it is safe from within any request, a read of the same file included.
    Attributes(u64),
    /// Attributes and cached data: a directory's listing.
    Inode(u64),
    /// A name that no longer exists.
    Entry { parent: u64, name: String },
}

/// What the kernel must drop: `now`, before the operation that found the
/// change returns; `later`, names, sent without waiting: the kernel takes
/// a name's directory lock to drop it, which a lookup in that directory
/// holds until it is answered, and the answer may wait for the very
/// operation that sends them (a lookup joins the revalidation under way).
/// A name waiting there is harmless: its inode's attributes, dropped now,
/// are asked for again, and the mount answers that it is gone.
#[derive(Debug, Default)]
pub struct Invalidations {
    pub now: Vec<Invalidation>,
    pub later: Vec<Invalidation>,
}

/// The kernel's caches, as the mount reaches them.
pub trait Kernel: Send + Sync {
    /// Sends the invalidations, and waits (a bounded time) until the kernel
    /// has taken them.
    fn invalidate(&self, invalidations: Vec<Invalidation>);

    /// Sends the invalidations without waiting for the kernel: for names,
    /// whose invalidation waits on a lock the caller's own request may hold.
    fn invalidate_later(&self, invalidations: Vec<Invalidation>) {
        self.invalidate(invalidations);
    }
}
