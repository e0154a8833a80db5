//! `--offline`: every request fails at once without touching the network,
//! and the rest of the program asks [`Remote::is_offline`] rather than
//! keeping a flag of its own.

use super::{BodySink, FetchError, GetOutcome, Remote, RemoteMeta, Validators};
use crate::format::{Location, Slice};

pub struct Offline {
    /// The base URL, for messages.
    base: String,
}

impl Offline {
    pub fn new(base: &str) -> Self {
        Offline {
            base: base.trim_end_matches('/').to_string(),
        }
    }
}

/// Sends nothing, but is where a request would have left: what reached it
/// in quick mode would have waited online.
fn refused<T>(file: &Location) -> Result<T, FetchError> {
    crate::wait::must_not_be_quick(|| format!("a request for {file}"));
    Err(FetchError::Offline)
}

impl Remote for Offline {
    fn get(
        &self,
        _: &str,
        file: &Location,
        _: &Validators,
        _: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        refused(file)
    }

    fn get_range(
        &self,
        _: &str,
        file: &Location,
        _: Slice,
        _: &Validators,
        _: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        refused(file)
    }

    fn head(&self, _: &str, file: &Location) -> Result<RemoteMeta, FetchError> {
        refused(file)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        match file {
            Location::Revision(path) => format!("{}/{tag}/{path}", self.base),
            Location::Absolute(url) => url.to_string(),
        }
    }

    fn origin(&self) -> String {
        super::origin_of(&self.base)
    }

    fn is_offline(&self) -> bool {
        true
    }
}
