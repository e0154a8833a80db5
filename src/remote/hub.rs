//! The Hugging Face Hub API beside a dataset, as far as matvisfs uses it,
//! and the guard every session puts in front of it. Nothing depends on the
//! API: a server without it (a mirror in the Hub's layout) answers the
//! first call, the refs, with 404, and is not asked again; one whose calls
//! keep failing is left alone after a few. The first call is made by one
//! thread while the others wait for its answer, so however many ask at
//! once, a server without the API sees one request.

use parking_lot::Mutex;

use super::{Answer, BodySink, FetchError, Hub, Layer, Remote, Request};
use crate::flight::SingleFlight;
use crate::format::hub::TreeListing;

/// API failures in a session before it is no longer asked.
const FAILURES_TOLERATED: u32 = 3;

#[derive(Default)]
struct State {
    /// The refs answered: the API is there.
    present: bool,
    /// Absent, or failed too often: not asked again this session.
    off: bool,
    failures: u32,
    /// The probe's answer, for the first caller that wants the refs.
    refs: Option<Vec<String>>,
}

/// A [`Layer`] whose Hub API is probed once (single-flight) and switched
/// off when it is absent or keeps failing.
#[derive(Default)]
pub struct HubGuard {
    state: Mutex<State>,
    probe: SingleFlight<(), Result<(), FetchError>>,
}

impl HubGuard {
    fn inner_hub<'a>(&self, inner: &'a dyn Remote) -> Result<Hub<'a>, FetchError> {
        match self.state.lock().off {
            true => Err(FetchError::NoApi),
            false => inner.hub().ok_or(FetchError::NoApi),
        }
    }

    /// Asks for the refs first, once: their 404 says the API is absent,
    /// where a tree listing's 404 only says a directory is.
    fn probed<'a>(&self, inner: &'a dyn Remote) -> Result<Hub<'a>, FetchError> {
        let hub = self.inner_hub(inner)?;
        if self.state.lock().present {
            return Ok(hub);
        }
        self.probe.run(&(), || {
            let state = self.state.lock();
            if state.present {
                return Ok(());
            }
            if state.off {
                return Err(FetchError::NoApi);
            }
            drop(state);
            match hub.release_refs() {
                Ok(refs) => {
                    let mut state = self.state.lock();
                    state.present = true;
                    state.refs = Some(refs);
                    Ok(())
                }
                Err(e) => {
                    self.failed(&e, true);
                    Err(e)
                }
            }
        })?;
        Ok(hub)
    }

    /// An API call failed; `refs`: it was the refs, whose 404 means no API.
    fn failed(&self, error: &FetchError, refs: bool) {
        let mut state = self.state.lock();
        match error {
            FetchError::NoApi => state.off = true,
            FetchError::NotFound if refs => {
                if !std::mem::replace(&mut state.off, true) {
                    tracing::info!(
                        "the server has no Hugging Face API; sizes come from HEAD requests"
                    );
                }
            }
            // A directory the tree does not have.
            FetchError::NotFound => {}
            error => {
                state.failures += 1;
                tracing::warn!("a Hugging Face API call failed: {error}");
                if state.failures >= FAILURES_TOLERATED && !std::mem::replace(&mut state.off, true)
                {
                    tracing::warn!("the Hugging Face API is not used for the rest of the session");
                }
            }
        }
    }

    fn release_refs(&self, inner: &dyn Remote) -> Result<Vec<String>, FetchError> {
        let hub = self.probed(inner)?;
        if let Some(refs) = self.state.lock().refs.take() {
            return Ok(refs);
        }
        hub.release_refs().inspect_err(|e| self.failed(e, true))
    }

    fn tree(
        &self,
        inner: &dyn Remote,
        revision: &str,
        dir: &str,
    ) -> Result<TreeListing, FetchError> {
        let hub = self.probed(inner)?;
        hub.tree(revision, dir)
            .inspect_err(|e| self.failed(e, false))
    }
}

/// API calls go through the probe; the rest passes untouched.
impl Layer for HubGuard {
    fn send(
        &self,
        inner: &dyn Remote,
        request: Request<'_>,
        sink: &mut dyn BodySink,
    ) -> Result<Answer, FetchError> {
        match request {
            Request::Refs => self.release_refs(inner).map(Answer::Refs),
            Request::Tree { revision, dir } => self.tree(inner, revision, dir).map(Answer::Tree),
            _ => inner.send(request, sink),
        }
    }

    fn has_hub(&self, inner: &dyn Remote) -> bool {
        self.inner_hub(inner).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::remote::Layered;
    use crate::remote::mock::MockRemote;

    fn guard(mock: &Arc<MockRemote>) -> Arc<dyn Remote> {
        Arc::new(Layered::new(HubGuard::default(), mock.clone()))
    }

    fn api_calls(mock: &MockRemote) -> usize {
        mock.log().iter().filter(|l| l.method == "API").count()
    }

    #[test]
    fn without_the_api_concurrent_first_calls_cost_one_request() {
        let mock = Arc::new(MockRemote::default());
        mock.enable_hub(&["v1"]);
        mock.fail_next("api/refs", FetchError::NotFound);
        let guard = guard(&mock);
        std::thread::scope(|scope| {
            for i in 0..16 {
                let guard = &guard;
                scope.spawn(move || {
                    if let Some(hub) = guard.hub() {
                        let _ = hub.tree("v1", &format!("a/1k/M{i}"));
                    }
                });
            }
        });
        assert_eq!(api_calls(&mock), 1, "{:#?}", mock.log());
        assert!(guard.hub().is_none(), "switched off");
    }

    #[test]
    fn the_probe_answers_the_first_refs_and_a_missing_directory_is_no_failure() {
        let mock = Arc::new(MockRemote::default());
        mock.enable_hub(&["v1"]);
        mock.put("v1", "a/1k/M/color.png", b"x".to_vec());
        let guard = guard(&mock);
        let hub = guard.hub().unwrap();
        assert!(matches!(hub.tree("v1", "b/1k"), Err(FetchError::NotFound)));
        assert_eq!(hub.release_refs().unwrap(), ["v1"]);
        assert_eq!(api_calls(&mock), 2, "the refs once, the tree once");
        for _ in 0..5 {
            let _ = hub.tree("v1", "b/1k");
        }
        assert!(guard.hub().is_some(), "404s of directories keep the API");
        assert_eq!(hub.tree("v1", "a/1k").unwrap().files.len(), 1);
    }

    #[test]
    fn a_failing_api_is_switched_off_after_a_few_failures() {
        let mock = Arc::new(MockRemote::default());
        mock.enable_hub(&["v1"]);
        for _ in 0..FAILURES_TOLERATED {
            mock.fail_next("api/tree", FetchError::Status(500));
        }
        let layered = Layered::new(HubGuard::default(), mock.clone());
        let guard: &dyn Remote = &layered;
        for _ in 0..FAILURES_TOLERATED {
            assert!(guard.hub().unwrap().tree("v1", "a").is_err());
        }
        assert!(guard.hub().is_none());
        assert!(matches!(
            layered.layer.release_refs(&*mock),
            Err(FetchError::NoApi)
        ));
    }
}
