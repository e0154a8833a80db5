//! Where the manifest is revalidated: once per tag and mount session, at the
//! first open of any file under it, with one conditional request however
//! many threads open at once; with `--revalidate-every`, again at the first
//! open once the period has passed; and at once when asked (`matvisfs
//! refresh`, SIGHUP). The request, and a changed manifest beginning a new
//! version of the tag, are the documents' (the manifest is one of them);
//! what the answer means for the session is decided here.

use parking_lot::Mutex;
use serde::Serialize;

use super::changes::ChangeReport;
use super::documents::{Checked, Documents, Role};
use super::error::Result;
use super::tag_context::TagContext;
use super::version::NewVersion;
use crate::flight::Gate;
use crate::format::MANIFEST_FILE;
use crate::remote::RemoteMeta;
use crate::wait;

/// How this session's revalidation of a tag went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// No file was opened yet.
    Pending,
    /// The manifest was downloaded this session (nothing was cached).
    Fetched,
    Unchanged,
    Changed,
    /// The server could not be reached (or the mount is offline).
    Offline,
    /// The server answered something unusable; the cached copy is served.
    Failed,
    /// A revision named by its commit: it never changes, nothing to ask.
    Pinned,
}

pub struct Revalidation {
    gate: Gate,
    outcome: Mutex<Outcome>,
    /// Why the last check did not revalidate the tag, when it did not.
    problem: Mutex<Option<String>>,
}

impl Revalidation {
    /// `fetched`: the manifest was downloaded to load the tag; `immutable`:
    /// the revision is a commit.
    pub fn new(fetched: bool, immutable: bool) -> Self {
        let outcome = match (immutable, fetched) {
            (true, _) => Outcome::Pinned,
            (false, true) => Outcome::Fetched,
            (false, false) => Outcome::Pending,
        };
        let revalidation = Revalidation {
            gate: Gate::default(),
            outcome: Mutex::new(outcome),
            problem: Mutex::new(None),
        };
        if fetched || immutable {
            revalidation.gate.mark_passed();
        }
        revalidation
    }

    pub fn outcome(&self) -> Outcome {
        *self.outcome.lock()
    }

    fn set(&self, outcome: Outcome) {
        *self.outcome.lock() = outcome;
    }

    /// Revalidates the manifest unless it was this session (or, with a
    /// period, within the period). `rechecked` runs when a check that is
    /// not the session's first got an answer, before any open goes on: the
    /// documents are then revalidated at their next need, as at a
    /// session's start.
    pub fn revalidate(&self, t: &TagContext, rechecked: impl FnOnce()) -> Result<()> {
        // A revision named by its commit never changes.
        if t.immutable {
            return Ok(());
        }
        let schedule = t.ctx.schedule();
        if self.gate.is_settled(schedule) {
            return Ok(());
        }
        wait::may_block()?;
        self.gate
            .pass(schedule, |again| self.check(t, again, rechecked));
        Ok(())
    }

    /// Revalidates the manifest now, as if the session had just begun; a
    /// check already under way is waited for and does not count. The
    /// error says why the tag could not be revalidated (the cached copy
    /// stays in service).
    pub fn revalidate_again(&self, t: &TagContext, rechecked: impl Fn()) -> Result<(), String> {
        if t.immutable {
            return Ok(());
        }
        self.gate
            .pass_again(t.ctx.schedule(), |again| self.check(t, again, &rechecked));
        match self.problem.lock().clone() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn check(&self, t: &TagContext, again: bool, rechecked: impl FnOnce()) -> bool {
        let completed = self.revalidate_now(t);
        let answered = matches!(self.outcome(), Outcome::Unchanged | Outcome::Changed);
        if answered {
            *self.problem.lock() = None;
            if again {
                rechecked();
            }
        }
        completed
    }

    fn failed(&self, outcome: Outcome, why: String) {
        self.set(outcome);
        *self.problem.lock() = Some(why);
    }

    /// Returns whether the check completed (false: try again later).
    fn revalidate_now(&self, t: &TagContext) -> bool {
        let Some(record) = t.version.state().record(MANIFEST_FILE) else {
            return true;
        };
        match Documents::check(t, MANIFEST_FILE, Role::Manifest, &record) {
            Checked::Unchanged(meta) => {
                let outcome = match self.commit_moved(t, &meta) {
                    true => Outcome::Changed,
                    false => Outcome::Unchanged,
                };
                self.set(outcome);
                true
            }
            Checked::Replaced => {
                self.set(Outcome::Changed);
                true
            }
            Checked::Kept(why) => {
                self.failed(Outcome::Failed, why);
                true
            }
            Checked::Offline => {
                self.failed(Outcome::Offline, "the mount is offline (--offline)".into());
                true
            }
            Checked::Failed(e) => {
                let outcome = match e.is_unreachable() {
                    true => Outcome::Offline,
                    false => Outcome::Failed,
                };
                self.failed(outcome, e.to_string());
                false
            }
        }
    }

    /// Whether the answer names another commit than the current version's:
    /// then a new version begins, in which every file the catalogs do not
    /// prove is proven again before it is served (the Hub's tree listing of
    /// the new commit, or a conditional request at its next open).
    fn commit_moved(&self, t: &TagContext, meta: &RemoteMeta) -> bool {
        let Some(commit) = meta.commit.as_deref() else {
            return false;
        };
        let Some(change) = t.begin_version(NewVersion::Commit(commit.to_string())) else {
            return false;
        };
        t.announce(
            ChangeReport::commit(change.commit_before.as_deref(), commit, change.generation),
            None,
        );
        true
    }
}
