//! `--offline`: every request fails at once without touching the network,
//! and the rest of the program asks [`Remote::is_offline`] rather than
//! keeping a flag of its own.

use super::{Answer, BodySink, FetchError, Remote, Request};
use crate::format::Location;

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

/// Every request fails at once. It sends nothing, but is where a request
/// would have left: what reached it in quick mode would have waited online.
impl Remote for Offline {
    fn send(&self, request: Request<'_>, _: &mut dyn BodySink) -> Result<Answer, FetchError> {
        crate::wait::must_not_be_quick(|| format!("{request:?}"));
        Err(FetchError::Offline)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        super::url_under(&self.base, tag, file)
    }

    fn origin(&self) -> String {
        super::origin_of(&self.base)
    }

    fn is_offline(&self) -> bool {
        true
    }
}
