//! Why an operation on a tag failed. Each error keeps its cause and says at
//! which level it deserves to be logged; the FUSE adapter maps it to an errno
//! and logs it, once per failed operation.

use std::sync::Arc;

use thiserror::Error;
use tracing::Level;

use crate::remote::FetchError;
use crate::wait::WouldBlock;

#[derive(Debug, Clone, Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    /// The bytes an open file was bound to are no longer the server's.
    #[error("{path} changed on the server while it was open")]
    Changed { path: String },
    #[error("{url}: {why}, and the mount is offline")]
    Offline { url: String, why: &'static str },
    #[error("cannot fetch {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    /// The server sent something that cannot be what it claims to be.
    #[error("refusing {url}: {why}")]
    Refused { url: String, why: String },
    #[error(
        "tier {tier} of tag {tag} is not marked complete on the server ({sentinel} is missing)"
    )]
    TierIncomplete {
        tag: String,
        tier: String,
        sentinel: String,
    },
    #[error("the cache cannot be used: {0}")]
    Cache(#[source] Arc<std::io::Error>),
    #[error(transparent)]
    WouldBlock(#[from] WouldBlock),
}

impl Error {
    pub fn fetch(url: impl Into<String>, source: FetchError) -> Self {
        Error::Fetch {
            url: url.into(),
            source,
        }
    }

    pub fn refused(url: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Refused {
            url: url.into(),
            why: why.into(),
        }
    }

    pub fn cache(error: std::io::Error) -> Self {
        Error::Cache(Arc::new(error))
    }

    /// How loudly a failure of this kind is logged: answers the user asked
    /// for are not logged at all, what the network or a mirror did wrong is
    /// a warning, what would be a bug or a damaged cache is an error.
    pub fn level(&self) -> Option<Level> {
        match self {
            Error::NotFound | Error::NotDir | Error::IsDir | Error::WouldBlock(_) => None,
            Error::Changed { .. } | Error::Offline { .. } => Some(Level::INFO),
            Error::Fetch { .. } => Some(Level::WARN),
            Error::Refused { .. } | Error::TierIncomplete { .. } | Error::Cache(_) => {
                Some(Level::ERROR)
            }
        }
    }

    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::WouldBlock(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
