//! A tag's context, what its parts share: its name, the mount's context,
//! its version (the current view and the persisted state), and how a change
//! is announced.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::changes::ChangeReport;
use super::error::{Error, Result};
use super::version::{NewVersion, TagVersion, Transition};
use super::{Change, Context};
use crate::digest::Sha256Digest;
use crate::format::Location;
use crate::remote::{Remote, RemoteMeta};
use crate::store::{Blob, FileRecords, OpenBlob};
use crate::wait;

/// Change reports kept for the statistics.
const CHANGES_KEPT: usize = 8;

/// What opening a file found: the bytes it is bound to, as far as they are
/// known now.
#[derive(Debug, Clone)]
pub enum Opened {
    /// No bytes are proven to be the file's yet: the open's first read
    /// fetches them, and binds it to them.
    Unproven,
    /// These bytes are the file's, not at hand (not cached).
    Proven(Blob),
    /// These bytes are the file's, open.
    AtHand(OpenBlob),
}

impl Opened {
    /// The version the open is bound to, when known now.
    pub fn version(&self) -> Option<Sha256Digest> {
        self.blob().map(|b| b.digest)
    }

    /// The size of that version, when known now.
    pub fn size(&self) -> Option<u64> {
        self.blob().map(|b| b.size)
    }

    /// The version the open is bound to and its size, when known now.
    pub fn blob(&self) -> Option<Blob> {
        match self {
            Opened::Unproven => None,
            Opened::Proven(blob) => Some(*blob),
            Opened::AtHand(open) => Some(open.blob),
        }
    }

    /// The bytes, when they are at hand.
    pub fn content(&self) -> Option<&OpenBlob> {
        match self {
            Opened::AtHand(open) => Some(open),
            _ => None,
        }
    }

    /// The bytes were made by the mount and live in memory (not a cached
    /// file the kernel could read by itself).
    pub fn in_memory(&self) -> bool {
        self.content().is_some_and(|open| open.in_memory)
    }
}

/// What the parts of one tag share.
pub struct TagContext {
    pub name: Arc<str>,
    pub ctx: Arc<Context>,
    /// The persisted state and the current view, versioned together.
    pub version: TagVersion,
    /// The last [`CHANGES_KEPT`] changes found this session.
    pub changes: Mutex<VecDeque<ChangeReport>>,
    /// Every change found this session, counted.
    pub changes_found: AtomicU64,
    /// The revision is named by a commit id: it never changes.
    pub immutable: bool,
    /// The commit the revision resolved to in this session, as the server
    /// named it (`X-Repo-Commit`).
    pub commit: Mutex<Option<String>>,
    /// What is known of each texture file, stamped with the generation it
    /// holds for.
    pub records: FileRecords,
}

impl TagContext {
    /// Notes the commit an answer named; a new one in the middle of a
    /// session means the revision moved.
    pub fn saw(&self, meta: &RemoteMeta) {
        let Some(commit) = &meta.commit else {
            return;
        };
        let mut known = self.commit.lock();
        if known.as_ref().is_some_and(|k| k != commit) {
            tracing::debug!(tag = %self.name, commit, "the revision now resolves to another commit");
        }
        *known = Some(commit.clone());
    }

    pub fn url(&self, file: &Location) -> String {
        self.ctx.remote.url(&self.name, file)
    }

    /// The server, for a request about `url`: refused in quick mode (the
    /// caller must wait) and offline (`why` says what is missing).
    pub fn remote(&self, url: &str, why: &'static str) -> Result<&dyn Remote> {
        wait::may_block()?;
        if self.ctx.remote.is_offline() {
            return Err(Error::Offline {
                url: url.to_string(),
                why,
            });
        }
        Ok(&*self.ctx.remote)
    }

    /// Begins a new version of the tag (see [`TagVersion::begin`]); a
    /// redirect seen before it may lead to the bytes of the version before,
    /// so they are forgotten just before it is put in place. A catalog or
    /// MaterialX map of one source replaced at the same commit (or where
    /// the server names none) changes no file of another source: their
    /// records stay proven in the new version, so that they are neither
    /// asked about again nor lost to an offline mount.
    pub fn begin_version(&self, change: NewVersion) -> Option<Transition> {
        let untouched_outside = match &change {
            NewVersion::Document { name, commit, .. }
                if commit.is_none() || *commit == self.version.state().commit() =>
            {
                let view = self.version.view();
                view.manifest
                    .document_owner(name)
                    .map(|source| format!("{}/", source.name))
            }
            _ => None,
        };
        self.version.begin(change, |before, after| {
            self.ctx.remote.forget_redirects();
            if let Some(owned) = &untouched_outside {
                self.records
                    .carry_forward(before, after, |path| !path.starts_with(owned.as_str()));
            }
        })
    }

    pub fn put_document(&self, bytes: &[u8]) -> Result<Blob> {
        self.ctx.documents.put_bytes(bytes).map_err(Error::cache)
    }

    /// Announces a change found on the server: logged, kept for the
    /// statistics, and passed to the mount (which tells the kernel) before
    /// the operation that found it returns.
    pub fn announce(&self, report: ChangeReport, file: Option<&str>) {
        tracing::warn!(
            tag = %self.name,
            found_in = %report.found_in,
            generation = report.generation,
            "the tag changed on the server: {}",
            report.describe()
        );
        self.changes_found.fetch_add(1, Ordering::Relaxed);
        {
            let mut changes = self.changes.lock();
            if changes.len() == CHANGES_KEPT {
                changes.pop_front();
            }
            changes.push_back(report);
        }
        self.ctx.changed(Change {
            tag: self.name.to_string(),
            file: file.map(str::to_string),
        });
    }
}
