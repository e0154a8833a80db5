//! The dataset's release revisions, from the Hugging Face API's refs: listed
//! at the mount's root beside the pinned and cached tags. Asked at most once
//! per session (at the first listing of the root), kept on disk so that a
//! later or offline session lists them too.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::Context;
use crate::flight::SingleFlight;
use crate::names::{check_tag, is_release_tag};
use crate::store::OriginDir;

#[derive(Serialize, Deserialize, Default)]
struct Saved {
    names: Vec<String>,
}

pub(super) struct Releases {
    names: RwLock<Vec<String>>,
    asked: AtomicBool,
    flight: SingleFlight<(), ()>,
    origin: OriginDir,
}

impl Releases {
    pub(super) fn load(origin: &OriginDir) -> Self {
        let saved: Saved = origin
            .read_releases()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let names = saved
            .names
            .into_iter()
            .filter(|n| check_tag(n).is_ok() && is_release_tag(n))
            .collect();
        Releases {
            names: RwLock::new(names),
            asked: AtomicBool::new(false),
            flight: SingleFlight::default(),
            origin: origin.clone(),
        }
    }

    /// The names known now, without asking.
    pub(super) fn known(&self) -> Vec<String> {
        self.names.read().clone()
    }

    /// Whether [`Releases::refresh`] would ask the server.
    pub(super) fn would_ask(&self, ctx: &Context) -> bool {
        ctx.remote.hub().is_some() && !self.asked.load(Ordering::Acquire)
    }

    /// Asks the API for the refs, once per session; failures keep the
    /// saved list.
    pub(super) fn refresh(&self, ctx: &Context) {
        let Some(hub) = ctx.remote.hub() else {
            return;
        };
        if self.asked.load(Ordering::Acquire) {
            return;
        }
        self.flight.run(&(), || {
            if self.asked.load(Ordering::Acquire) {
                return;
            }
            match hub.release_refs() {
                Ok(names) => {
                    tracing::debug!(count = names.len(), "release revisions from the API");
                    let saved = Saved {
                        names: names.clone(),
                    };
                    if let Ok(bytes) = serde_json::to_vec(&saved) {
                        if let Err(e) = self.origin.save_releases(&bytes) {
                            // Said once for the whole cache by the store.
                            tracing::debug!("cannot save the list of releases: {e}");
                        }
                    }
                    *self.names.write() = names;
                }
                // The hub's guard counts and logs the failure.
                Err(e) => tracing::debug!("no release list from the API: {e}"),
            }
            self.asked.store(true, Ordering::Release);
        });
    }
}
