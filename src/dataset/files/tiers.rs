//! A tier is served only once its `.tier_complete` sentinel exists (the
//! last commit of a tier's upload). A positive answer is kept with the
//! manifest, until the tag changes; a negative one for the session, or
//! until the tag is revalidated again.

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::dataset::error::{Error, Result};
use crate::dataset::tag_context::TagContext;
use crate::flight::SingleFlight;
use crate::format::Location;
use crate::remote::FetchError;

#[derive(Default)]
pub struct Tiers {
    /// `(generation, source/tier)` found incomplete this session.
    incomplete: Mutex<HashSet<(u64, String)>>,
    checks: SingleFlight<String, Result<()>>,
}

impl Tiers {
    pub fn forget_incomplete(&self) {
        self.incomplete.lock().clear();
    }

    pub fn ensure_complete(
        &self,
        t: &TagContext,
        source: &str,
        tier: &str,
        generation: u64,
    ) -> Result<()> {
        let key = format!("{source}/{tier}");
        if t.version.state().is_complete(&key) {
            return Ok(());
        }
        let sentinel = Location::revision(format!("{key}/.tier_complete"));
        let refused = || Error::TierIncomplete {
            tag: t.name.to_string(),
            tier: key.clone(),
            sentinel: t.url(&sentinel),
        };
        if self.incomplete.lock().contains(&(generation, key.clone())) {
            return Err(refused());
        }
        let url = t.url(&sentinel);
        let remote = t.remote(&url, "the tier's completeness is unknown")?;
        self.checks.run(&key, || {
            if t.version.state().is_complete(&key) {
                return Ok(());
            }
            match remote.head(&t.name, &sentinel) {
                Ok(_) => {
                    t.version.state().set_complete(&key, generation);
                    Ok(())
                }
                Err(FetchError::NotFound) => {
                    self.incomplete.lock().insert((generation, key.clone()));
                    Err(refused())
                }
                Err(e) => Err(Error::fetch(url.clone(), e)),
            }
        })
    }
}
