//! The dataset's release revisions, from the Hugging Face API's refs: listed
//! at the mount's root beside the pinned and cached tags. Asked at most once
//! per session (at the first listing of the root; with `--revalidate-every`,
//! again at the first listing after the period; again after a refresh of
//! every tag), kept on disk so that a later or offline session lists them
//! too.

use std::time::Instant;

use parking_lot::{Mutex, RwLock};
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
    /// When the API was last asked.
    asked: Mutex<Option<Instant>>,
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
            asked: Mutex::new(None),
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
        ctx.remote.hub().is_some() && self.due(ctx)
    }

    fn due(&self, ctx: &Context) -> bool {
        match *self.asked.lock() {
            None => true,
            Some(at) => ctx.revalidate_every.is_some_and(|p| at.elapsed() >= p),
        }
    }

    /// The next listing of the root asks again.
    pub(super) fn rearm(&self) {
        *self.asked.lock() = None;
    }

    /// Asks the API for the refs, once per session; failures keep the
    /// saved list.
    pub(super) fn refresh(&self, ctx: &Context) {
        let Some(hub) = ctx.remote.hub() else {
            return;
        };
        if !self.due(ctx) {
            return;
        }
        self.flight.run(&(), || {
            if !self.due(ctx) {
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
            *self.asked.lock() = Some(Instant::now());
        });
    }
}
