//! Why a kernel request failed, as the core sees it.

use thiserror::Error;

use crate::dataset;

#[derive(Debug, Clone, Error)]
pub enum FsError {
    /// A write, create, truncate or other change of a read-only tree.
    #[error("read-only file system")]
    ReadOnly,
    /// An inode number this session never handed out, or one whose path no
    /// longer exists (the tag changed under it).
    #[error("stale inode")]
    StaleInode,
    #[error("unknown file handle")]
    UnknownHandle,
    /// The file changed on the server while another version is open: the
    /// kernel cannot hold two versions of one inode at once.
    #[error("the file changed on the server while an older version is open")]
    VersionOpen,
    /// The open is parked until open files of another version of its file
    /// are released: its front end keeps its reply aside and resumes it
    /// (see `KernelFiles::bind`). Never an answer.
    #[error("the open waits for open files of another version to close")]
    WaitsForRelease { request: u64 },
    /// The kernel holds a size for the file that is not its (that of a
    /// version open when it was given, closed since), and the open's
    /// version's size is not known yet: the open fails, its attributes
    /// dropped, and the kernel, which retries an open that fails with
    /// `ESTALE` once after looking the file up again (or, through a link in
    /// /proc, asking its attributes), learns its size before the open is
    /// made again.
    #[error("the kernel holds the size of a version closed since")]
    LookUpAgain,
    /// A directory read on from an offset of a listing that is gone, the
    /// directory having changed since: reading it again from the start
    /// gives the new one.
    #[error("the directory changed on the server while it was read")]
    ListingChanged,
    #[error(transparent)]
    Dataset(#[from] dataset::Error),
}

impl FsError {
    pub fn is_would_block(&self) -> bool {
        matches!(self, FsError::Dataset(e) if e.is_would_block())
    }

    /// For operations on an inode the kernel already holds: its path
    /// vanishing means the inode is stale, not that a name is unknown.
    pub fn on_inode(self) -> Self {
        match self {
            FsError::Dataset(dataset::Error::NotFound) => FsError::StaleInode,
            other => other,
        }
    }
}

impl From<crate::wait::WouldBlock> for FsError {
    fn from(e: crate::wait::WouldBlock) -> Self {
        FsError::Dataset(e.into())
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;
