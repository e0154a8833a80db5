//! The oracle: what a mount session may have returned, judged from the
//! server's history and request log alone.
//!
//! A session's anchor for a source is the later of the publication times
//! of the manifest version and of that source's catalog version that
//! answered the session's first request for each. A read (an open) is
//! anchored later when the mount revalidated again before it began (a
//! refresh, or a period): at the last request for the manifest and the
//! last for the catalog that the server logged before the read began (or
//! the first ones, when none was: the open's own revalidation made them).
//! That is sound because an open waits for a revalidation under way: a
//! request logged before the open began belongs to a check that had ended
//! by then, or that the open joins. Listings and sizes keep the session's
//! first anchor: the kernel may answer them from what it was told before a
//! later revalidation. Then:
//!
//! - a completed read of a path is one whole version of that path that was
//!   served at some moment between the anchor and the read's end (never a
//!   mix, never cut short, never another path's bytes, never a version
//!   replaced before the anchor), and never an empty file;
//! - a reread of a file held open equals what that open returned before;
//! - a listing, and a size, match a catalog (or manifest) version served
//!   between the anchor and the operation's end, where before the first
//!   completed open of the source in the session any earlier version will
//!   do (the cached catalog may be listed until then);
//! - failures are allowed with the errnos a user may see (`ENOENT`, `EIO`,
//!   `ESTALE` for reads; `ENOENT`, `EIO` for stat and listing, and `ESTALE`
//!   for a listing of a directory gone from the server by its end: the
//!   revalidation that found it gone ran during the listing); every
//!   operation ends within the bound;
//! - `matvisfs refresh` exits 0, or 1 (a server it could not reach in
//!   time), within the bound.
//!
//! One file of rules and their tests: every rule reads the same anchors
//! and history queries, which a split would only pass around.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::blob::{BlobSpec, Format};
use super::history::{Content, DocView, History, Version, at};
use super::model::{BAKED_TIER, MANIFEST, TAG, catalog_path};
use super::server::Logged;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    List,
    Stat,
    /// Open and read whole.
    Read,
    /// Open and read in pieces, with pauses.
    Pieces,
    /// Open, read whole, and keep it open.
    Hold,
    /// `pread` from 0 of a file kept open, after a while.
    Reread,
    /// Read a manifest or catalog.
    Document,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            OpKind::List => "list",
            OpKind::Stat => "stat",
            OpKind::Read => "read",
            OpKind::Pieces => "read in pieces",
            OpKind::Hold => "open, read and hold",
            OpKind::Reread => "reread of a held file",
            OpKind::Document => "read document",
        };
        f.write_str(name)
    }
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Names(BTreeSet<String>),
    Size(u64),
    /// Bytes that are exactly this blob.
    Blob(BlobSpec),
    /// A document's bytes, by sha256.
    Doc(String),
    /// Zero bytes.
    Empty,
    /// The first `len` bytes of a blob, then end-of-file.
    Cut {
        blob: BlobSpec,
        len: u64,
    },
    /// A whole blob, then more bytes, `len` in all.
    Padded {
        blob: BlobSpec,
        len: u64,
    },
    /// Bytes that are no blob: how they came about.
    Wrong(String),
    /// A reread: what the open returned first, and now.
    Reread {
        first: Box<Observed>,
        now: Box<Observed>,
    },
    Error(i32),
    /// Still running when the session ended.
    Unfinished,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Names(names) => {
                let shown: Vec<&str> = names.iter().map(String::as_str).collect();
                write!(f, "{} names {shown:?}", names.len())
            }
            Observed::Size(size) => write!(f, "size {size}"),
            Observed::Blob(spec) => write!(f, "{spec}"),
            Observed::Doc(sha) => write!(f, "document {}", &sha[..12.min(sha.len())]),
            Observed::Empty => f.write_str("zero bytes"),
            Observed::Cut { blob, len } => write!(f, "the first {len} bytes of {blob}"),
            Observed::Padded { blob, len } => {
                write!(f, "{blob} then {} more bytes", len - blob.size)
            }
            Observed::Wrong(how) => write!(f, "wrong bytes: {how}"),
            Observed::Reread { first, now } => write!(f, "first {first}, now {now}"),
            Observed::Error(errno) => f.write_str(&errno_name(*errno)),
            Observed::Unfinished => f.write_str("still running"),
        }
    }
}

pub fn errno_name(errno: i32) -> String {
    match errno {
        libc::ENOENT => "ENOENT".into(),
        libc::EIO => "EIO".into(),
        libc::ESTALE => "ESTALE".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ENOTDIR => "ENOTDIR".into(),
        libc::EISDIR => "EISDIR".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::EBADF => "EBADF".into(),
        libc::EINTR => "EINTR".into(),
        e => format!("errno {e}"),
    }
}

/// One operation of the load, on a path relative to the tag.
#[derive(Debug, Clone)]
pub struct Op {
    pub thread: usize,
    pub kind: OpKind,
    pub path: String,
    pub t0: Duration,
    pub t1: Duration,
    pub observed: Observed,
}

impl Op {
    pub fn describe(&self) -> String {
        format!(
            "thread {} {} {} [{}, {}] -> {}",
            self.thread,
            self.kind,
            if self.path.is_empty() {
                "<tag>"
            } else {
                &self.path
            },
            at(self.t0),
            at(self.t1),
            self.observed
        )
    }

    fn source(&self) -> Option<&str> {
        let first = self.path.split('/').next()?;
        Some(first.strip_suffix(".json").unwrap_or(first)).filter(|s| !s.is_empty())
    }

    fn succeeded_open(&self) -> bool {
        matches!(
            (self.kind, &self.observed),
            (
                OpKind::Read | OpKind::Pieces | OpKind::Hold | OpKind::Document,
                Observed::Blob(_) | Observed::Doc(_)
            )
        )
    }
}

/// One mount session as the load and the server saw it.
#[derive(Debug, Clone)]
pub struct Session {
    pub index: usize,
    /// Its flags and the server's mode, in words.
    pub setup: String,
    pub mounted: Duration,
    pub requests: Vec<Logged>,
    pub ops: Vec<Op>,
    /// `matvisfs cache clear` runs: start and end.
    pub clears: Vec<(Duration, Duration)>,
    /// `matvisfs refresh` runs.
    pub refreshes: Vec<RefreshRun>,
    /// Every answer named the commit of its publication (a moved commit is
    /// a new version of the tag).
    pub commits: bool,
    /// `--offline`: nothing is asked of the server, so there is no
    /// revalidation to anchor reads to; what was cached is served, and
    /// nothing can change within the session.
    pub offline: bool,
    /// `--commits-only`, mounting this commit alone: judged by
    /// [`History::of_commit`] and [`requests_of_commit`], nothing can
    /// change within the session and nothing need be asked (what an
    /// earlier session cached of the commit is the commit).
    pub commit: Option<String>,
}

/// The requests of a session that mounted `commit` alone, as the oracle
/// judges them against [`History::of_commit`]: those for the commit's
/// files as if for the tag's from its one publication, and those to the
/// CDN and the API; none for the tag (a session of a commit must not
/// ask for it, and has no load there).
pub fn requests_of_commit(requests: &[Logged], commit: &str) -> Vec<Logged> {
    let prefix = format!("{commit}/");
    requests
        .iter()
        .filter_map(|r| {
            if let Some(path) = r.path.strip_prefix(&prefix) {
                return Some(Logged {
                    path: format!("{TAG}/{path}"),
                    snapshot: 0,
                    ..r.clone()
                });
            }
            let elsewhere = r.path.starts_with("cdn/") || r.path.starts_with("api/");
            elsewhere.then(|| r.clone())
        })
        .collect()
}

/// One `matvisfs refresh` of the session's mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRun {
    pub t0: Duration,
    pub t1: Duration,
    /// Its exit code (`None`: killed by a signal).
    pub exit: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    WrongBytes,
    CutShort,
    Padded,
    EmptyServed,
    WrongFormat,
    AnotherPathsBytes,
    Stale,
    RereadDiffers,
    WrongSize,
    EmptySizeShown,
    WrongListing,
    WrongDocument,
    UnexpectedErrno,
    Hang,
    NoRevalidation,
    /// An offline session, or one of a commit alone, served two versions of
    /// one path.
    OfflineChanged,
    RefreshFailed,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: ViolationKind,
    pub session: usize,
    pub op: Op,
    /// What was served and what the oracle allowed.
    pub why: String,
}

/// The first request of a session for a document, and the version that
/// answered it.
#[derive(Debug, Clone)]
pub struct FirstRequest {
    pub at: Duration,
    pub status: u16,
    pub snapshot: u64,
    pub published: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Anchors {
    pub manifest: Option<FirstRequest>,
    pub catalogs: BTreeMap<String, FirstRequest>,
}

/// Every answered request for the manifest and each catalog, in order.
#[derive(Debug, Clone, Default)]
struct Revalidations {
    manifest: Vec<FirstRequest>,
    catalogs: BTreeMap<String, Vec<FirstRequest>>,
}

impl Revalidations {
    fn of(history: &History, requests: &[Logged]) -> Revalidations {
        let answered = |path: &str| -> Vec<FirstRequest> {
            let logged = format!("{TAG}/{path}");
            let mut out: Vec<FirstRequest> = requests
                .iter()
                .filter(|r| r.method == "GET" && r.path == logged && matches!(r.status, 200 | 304))
                .filter_map(|r| {
                    let version = history.version_in(path, r.snapshot)?;
                    Some(FirstRequest {
                        at: r.at,
                        status: r.status,
                        snapshot: r.snapshot,
                        published: version.published,
                    })
                })
                .collect();
            out.sort_by_key(|r| r.at);
            out
        };
        let mut catalogs = BTreeMap::new();
        for path in history
            .paths()
            .filter(|p| !p.contains('/') && p.ends_with(".json") && *p != MANIFEST)
        {
            let found = answered(path);
            if !found.is_empty() {
                catalogs.insert(path.trim_end_matches(".json").to_string(), found);
            }
        }
        Revalidations {
            manifest: answered(MANIFEST),
            catalogs,
        }
    }

    /// The last request logged before `t0`, else the first.
    fn before(requests: &[FirstRequest], t0: Duration) -> Option<FirstRequest> {
        let earlier = requests.partition_point(|r| r.at < t0);
        requests
            .get(earlier.saturating_sub(1))
            .or(requests.first())
            .cloned()
    }

    /// The anchors of an open that began at `t0`.
    fn at(&self, t0: Duration) -> Anchors {
        Anchors {
            manifest: Self::before(&self.manifest, t0),
            catalogs: self
                .catalogs
                .iter()
                .filter_map(|(source, requests)| {
                    Some((source.clone(), Self::before(requests, t0)?))
                })
                .collect(),
        }
    }
}

impl Anchors {
    pub fn of(history: &History, requests: &[Logged]) -> Anchors {
        let first = |path: &str| {
            let logged = format!("{TAG}/{path}");
            requests
                .iter()
                .find(|r| r.method == "GET" && r.path == logged && matches!(r.status, 200 | 304))
                .and_then(|r| {
                    let version = history.version_in(path, r.snapshot)?;
                    Some(FirstRequest {
                        at: r.at,
                        status: r.status,
                        snapshot: r.snapshot,
                        published: version.published,
                    })
                })
        };
        let mut catalogs = BTreeMap::new();
        for path in history
            .paths()
            .filter(|p| !p.contains('/') && p.ends_with(".json"))
        {
            if path == MANIFEST {
                continue;
            }
            if let Some(request) = first(path) {
                catalogs.insert(path.trim_end_matches(".json").to_string(), request);
            }
        }
        Anchors {
            manifest: first(MANIFEST),
            catalogs,
        }
    }

    /// The anchor of `source`: the later of its manifest's and catalog's
    /// publications. A catalog fetched before the manifest was first asked
    /// (for a listing, before any open) is the session's for its whole
    /// life, whatever the manifest's revalidation finds later: then the
    /// catalog's publication is the anchor.
    pub fn of_source(&self, source: &str) -> Option<Duration> {
        let manifest = self.manifest.as_ref();
        let catalog = self.catalogs.get(source);
        match (manifest, catalog) {
            (Some(m), Some(c)) if c.at < m.at => Some(c.published),
            _ => manifest
                .map(|r| r.published)
                .max(catalog.map(|r| r.published)),
        }
    }
}

/// What bytes, sizes and listings a session may show.
pub struct Judge<'a> {
    history: &'a History,
    session: &'a Session,
    /// The session's first requests: the anchors of listings and sizes.
    anchors: Anchors,
    /// Every revalidation: reads are anchored at the last before them.
    revalidations: Revalidations,
    /// When the first open of a file of each source (and of any file,
    /// under `None`) completed.
    first_open: BTreeMap<Option<String>, Duration>,
    bound: Duration,
}

fn allowed_errno(kind: OpKind, errno: i32) -> bool {
    match kind {
        OpKind::List | OpKind::Stat => matches!(errno, libc::ENOENT | libc::EIO),
        _ => matches!(errno, libc::ENOENT | libc::EIO | libc::ESTALE),
    }
}

/// Names the mount adds to a listing, not the server's files: documents
/// generated from a material's catalog entry, and beside a source's tiers
/// the `auto`, `best` and `scalar` directories (their tests are
/// `tests/materials*.rs`).
fn generated(depth: usize, name: &str) -> bool {
    match depth {
        1 => ["auto", "best", "scalar"].contains(&name),
        3 => name.ends_with(".mtlx") || name.ends_with(".usda"),
        _ => false,
    }
}

impl<'a> Judge<'a> {
    pub fn new(history: &'a History, session: &'a Session, bound: Duration) -> Self {
        let mut first_open: BTreeMap<Option<String>, Duration> = BTreeMap::new();
        for op in session.ops.iter().filter(|op| op.succeeded_open()) {
            for key in [None, op.source().map(str::to_string)] {
                let earliest = first_open.entry(key).or_insert(op.t1);
                *earliest = (*earliest).min(op.t1);
            }
        }
        Judge {
            history,
            session,
            anchors: Anchors::of(history, &session.requests),
            revalidations: Revalidations::of(history, &session.requests),
            first_open,
            bound,
        }
    }

    pub fn anchors(&self) -> &Anchors {
        &self.anchors
    }

    /// The anchors `op` is judged by: for an open, the last revalidation
    /// logged before it began; else the session's first.
    pub fn anchors_for(&self, op: &Op) -> Anchors {
        if Self::opens(op) {
            self.revalidations.at(op.t0)
        } else {
            self.anchors.clone()
        }
    }

    fn opens(op: &Op) -> bool {
        matches!(
            op.kind,
            OpKind::Read | OpKind::Pieces | OpKind::Hold | OpKind::Reread | OpKind::Document
        )
    }

    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for op in &self.session.ops {
            if let Some((kind, why)) = self.check(op) {
                out.push(Violation {
                    kind,
                    session: self.session.index,
                    op: op.clone(),
                    why,
                });
            }
        }
        if self.session.offline || self.session.commit.is_some() {
            out.extend(self.one_version_each());
        } else {
            out.extend(self.revalidated());
        }
        out.extend(self.refreshes());
        out
    }

    /// Offline, or of a commit alone, nothing can change: every read of a
    /// path in the session is of one version.
    fn one_version_each(&self) -> Vec<Violation> {
        let mut first: BTreeMap<&str, &BlobSpec> = BTreeMap::new();
        let mut out = Vec::new();
        for op in &self.session.ops {
            let Observed::Blob(spec) = &op.observed else {
                continue;
            };
            let seen = *first.entry(&op.path).or_insert(spec);
            if seen != spec {
                out.push(Violation {
                    kind: ViolationKind::OfflineChanged,
                    session: self.session.index,
                    op: op.clone(),
                    why: format!("{spec} read after {seen}, in a session where nothing can change"),
                });
            }
        }
        out
    }

    /// Every refresh of a mount that serves ends within the bound, and
    /// revalidates (exit 0) or says it could not reach the server (1).
    fn refreshes(&self) -> Vec<Violation> {
        self.session
            .refreshes
            .iter()
            .filter(|r| !matches!(r.exit, Some(0 | 1)) || r.t1.saturating_sub(r.t0) > self.bound)
            .map(|r| Violation {
                kind: ViolationKind::RefreshFailed,
                session: self.session.index,
                op: Op {
                    thread: usize::MAX,
                    kind: OpKind::Document,
                    path: MANIFEST.into(),
                    t0: r.t0,
                    t1: r.t1,
                    observed: Observed::Unfinished,
                },
                why: format!(
                    "matvisfs refresh exited with {:?} after {:.1} s",
                    r.exit,
                    (r.t1.saturating_sub(r.t0)).as_secs_f64()
                ),
            })
            .collect()
    }

    /// Files were opened, so the session must have asked for the manifest
    /// and for each such source's catalog.
    fn revalidated(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut reported = BTreeSet::new();
        for op in self.session.ops.iter().filter(|op| op.succeeded_open()) {
            let Some(source) = op.source() else { continue };
            let missing = if self.anchors.manifest.is_none() {
                MANIFEST.to_string()
            } else if !self.anchors.catalogs.contains_key(source) && op.path != MANIFEST {
                catalog_path(source)
            } else {
                continue;
            };
            if reported.insert(missing.clone()) {
                out.push(Violation {
                    kind: ViolationKind::NoRevalidation,
                    session: self.session.index,
                    op: op.clone(),
                    why: format!("a file was opened, but the session never asked for {missing}"),
                });
            }
        }
        out
    }

    /// The anchor that applies to `op`: for reads always (the open
    /// revalidates first); for listings and sizes once an open of the
    /// source completed before the operation began.
    fn anchor_for(&self, op: &Op) -> Option<Duration> {
        let source = op.source();
        let anchors = self.anchors_for(op);
        let manifest = anchors.manifest.as_ref().map(|r| r.published);
        let wanted = match op.kind {
            OpKind::Document if op.path == MANIFEST => return manifest,
            OpKind::Document => {
                return source.and_then(|s| anchors.catalogs.get(s).map(|r| r.published));
            }
            OpKind::Read | OpKind::Pieces | OpKind::Hold | OpKind::Reread => true,
            OpKind::List | OpKind::Stat => self
                .first_open
                .get(&source.map(str::to_string))
                .is_some_and(|first| *first < op.t0),
        };
        if !wanted {
            return None;
        }
        // The tag's and a source's directories list what the manifest says.
        let from_manifest = op.kind == OpKind::List && !op.path.contains('/');
        let anchor = match source {
            Some(source) if !from_manifest => anchors.of_source(source),
            _ => manifest,
        };
        anchor.max(self.commit_anchor(op, &anchors))
    }

    /// Where answers name commits, a read of a file no catalog hash proves
    /// (outside the baked tier) is of the commit the revalidation it is
    /// anchored at found (the session's first, or a later one that began
    /// before it), or later: a publication that replaced it alone before
    /// that moved the commit.
    fn commit_anchor(&self, op: &Op, anchors: &Anchors) -> Option<Duration> {
        let read = matches!(
            op.kind,
            OpKind::Read | OpKind::Pieces | OpKind::Hold | OpKind::Reread
        );
        let baked = op.path.split('/').nth(1) == Some(BAKED_TIER);
        if !self.session.commits || !read || baked {
            return None;
        }
        let revalidation = anchors.manifest.as_ref()?;
        Some(self.history.publication(revalidation.snapshot)?.at)
    }

    fn live<'v>(
        &self,
        versions: &'v [Version],
        from: Option<Duration>,
        to: Duration,
    ) -> impl Iterator<Item = &'v Version> {
        versions.iter().filter(move |v| v.live_within(from, to))
    }

    fn window(&self, from: Option<Duration>, to: Duration) -> String {
        match from {
            Some(from) => format!("[{}, {}]", at(from), at(to)),
            None => format!("[start, {}]", at(to)),
        }
    }

    fn list_versions(versions: &[Version]) -> String {
        let listed: Vec<String> = versions
            .iter()
            .map(|v| format!("{} {}", v.content.label(), v.lifetime()))
            .collect();
        if listed.is_empty() {
            "none".into()
        } else {
            listed.join("; ")
        }
    }

    fn check(&self, op: &Op) -> Option<(ViolationKind, String)> {
        if op.observed == Observed::Unfinished {
            return Some((
                ViolationKind::Hang,
                format!(
                    "still running when the session ended (bound {:?})",
                    self.bound
                ),
            ));
        }
        if op.t1.saturating_sub(op.t0) > self.bound {
            return Some((
                ViolationKind::Hang,
                format!(
                    "took {:.1} s, more than the bound of {:?}",
                    (op.t1 - op.t0).as_secs_f64(),
                    self.bound
                ),
            ));
        }
        let anchor = self.anchor_for(op);
        let versions = self.history.versions(&op.path);
        match (&op.observed, op.kind) {
            // A directory found gone while it was listed: its inode is
            // stale, as a file's is for a read.
            (Observed::Error(libc::ESTALE), OpKind::List)
                if self.directory_missing_within(
                    &op.path,
                    self.listing_from(op, anchor),
                    op.t1,
                ) =>
            {
                None
            }
            (Observed::Error(errno), kind) => (!allowed_errno(kind, *errno)).then(|| {
                (
                    ViolationKind::UnexpectedErrno,
                    format!(
                        "{} is not an error this operation may give",
                        errno_name(*errno)
                    ),
                )
            }),
            (Observed::Reread { first, now }, _) => match &**now {
                Observed::Error(errno) if allowed_errno(OpKind::Reread, *errno) => None,
                Observed::Error(errno) => Some((
                    ViolationKind::UnexpectedErrno,
                    format!("{} is not an error a reread may give", errno_name(*errno)),
                )),
                now if now == &**first => None,
                now => Some((
                    ViolationKind::RereadDiffers,
                    format!("the open file returned {first} first and {now} now"),
                )),
            },
            (Observed::Empty, _) => Some((
                ViolationKind::EmptyServed,
                "a texture read returned zero bytes (no texture is empty)".into(),
            )),
            (Observed::Wrong(how), _) => Some((
                ViolationKind::WrongBytes,
                format!(
                    "{how}; versions of the path: {}",
                    Self::list_versions(versions)
                ),
            )),
            (Observed::Padded { blob, len }, _) => Some((
                ViolationKind::Padded,
                format!(
                    "the read returned all {} bytes of {blob} and {} bytes more, of no version; versions of the path: {}",
                    blob.size,
                    len - blob.size,
                    Self::list_versions(versions)
                ),
            )),
            (Observed::Cut { blob, len }, _) => Some((
                ViolationKind::CutShort,
                format!(
                    "the read ended after {len} of the {} bytes of {blob}, with no error; versions of the path: {}",
                    blob.size,
                    Self::list_versions(versions)
                ),
            )),
            (Observed::Blob(spec), _) => self.check_blob(op, spec, anchor, versions),
            (Observed::Doc(sha256), _) => {
                let same = |v: &&Version| v.content.sha256() == sha256;
                if self.live(versions, anchor, op.t1).any(|v| same(&v)) {
                    return None;
                }
                let held: Vec<Version> = versions.iter().filter(same).cloned().collect();
                Some((
                    ViolationKind::WrongDocument,
                    format!(
                        "document {} is {}; allowed: versions live in {}: {}",
                        &sha256[..12],
                        if held.is_empty() {
                            "no version of this path".to_string()
                        } else {
                            format!("only {}", Self::list_versions(&held))
                        },
                        self.window(anchor, op.t1),
                        Self::list_versions(
                            &self
                                .live(versions, anchor, op.t1)
                                .cloned()
                                .collect::<Vec<_>>()
                        )
                    ),
                ))
            }
            (Observed::Size(size), _) => self.check_size(op, *size, anchor, versions),
            (Observed::Names(names), _) => self.check_listing(op, names, anchor),
            (Observed::Unfinished, _) => None,
        }
    }

    fn check_blob(
        &self,
        op: &Op,
        spec: &BlobSpec,
        anchor: Option<Duration>,
        versions: &[Version],
    ) -> Option<(ViolationKind, String)> {
        if Format::of_path(&op.path) != Some(spec.format) {
            return Some((
                ViolationKind::WrongFormat,
                format!(
                    "{spec} is not a {} file",
                    op.path.rsplit('.').next().unwrap_or("")
                ),
            ));
        }
        let same = |v: &&Version| matches!(&v.content, Content::Texture(t) if t.spec == *spec);
        if self.live(versions, anchor, op.t1).any(|v| same(&v)) {
            return None;
        }
        let allowed: Vec<Version> = self.live(versions, anchor, op.t1).cloned().collect();
        let held: Vec<Version> = versions.iter().filter(same).cloned().collect();
        if held.is_empty() {
            return Some((
                ViolationKind::AnotherPathsBytes,
                format!(
                    "{spec} was never this path's (it is the bytes of {:?}); allowed: {}",
                    self.history.paths_with(spec),
                    Self::list_versions(&allowed)
                ),
            ));
        }
        Some((
            ViolationKind::Stale,
            format!(
                "{spec} is this path's only as {}; the session's anchor is {} ({}), so allowed are versions live in {}: {}",
                Self::list_versions(&held),
                anchor.map_or("none".into(), at),
                self.describe_anchor(op),
                self.window(anchor, op.t1),
                Self::list_versions(&allowed)
            ),
        ))
    }

    fn describe_anchor(&self, op: &Op) -> String {
        let source = op.source();
        let anchors = self.anchors_for(op);
        let first = |name: &str, r: Option<&FirstRequest>| match r {
            Some(r) => format!(
                "{name} asked at {} ({}, snapshot {}, published {})",
                at(r.at),
                r.status,
                r.snapshot,
                at(r.published)
            ),
            None => format!("{name} never asked"),
        };
        let mut parts = vec![first(MANIFEST, anchors.manifest.as_ref())];
        if let Some(source) = source {
            parts.push(first(&catalog_path(source), anchors.catalogs.get(source)));
        }
        parts.join("; ")
    }

    /// Catalog versions of `source` live in the window.
    fn catalogs(
        &self,
        source: &str,
        from: Option<Duration>,
        to: Duration,
    ) -> Vec<(&'a Version, &'a super::views::CatalogView)> {
        self.history
            .versions(&catalog_path(source))
            .iter()
            .filter(|v| v.live_within(from, to))
            .filter_map(|v| match &v.content {
                Content::Document(d) => match &d.view {
                    DocView::Catalog(view) => Some((v, &**view)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn manifests(
        &self,
        from: Option<Duration>,
        to: Duration,
    ) -> Vec<(&'a Version, &'a super::views::ManifestView)> {
        self.history
            .versions(MANIFEST)
            .iter()
            .filter(|v| v.live_within(from, to))
            .filter_map(|v| match &v.content {
                Content::Document(d) => match &d.view {
                    DocView::Manifest(view) => Some((v, &**view)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Whether the server had no version of `path` at some moment of
    /// `[from, to]`.
    fn absent_at_some_moment(&self, path: &str, from: Duration, to: Duration) -> bool {
        let mut covered_until = from;
        for version in self.history.versions(path) {
            if version.published > covered_until {
                break;
            }
            match version.replaced {
                None => return false,
                Some(end) => covered_until = covered_until.max(end),
            }
            if covered_until > to {
                return false;
            }
        }
        true
    }

    /// Whether the server's versions at `at` have directory `path`.
    /// Where the versions a listing may have been answered from begin: its
    /// anchor, else the session's manifest's, else the operation's start.
    fn listing_from(&self, op: &Op, anchor: Option<Duration>) -> Duration {
        anchor
            .or_else(|| self.anchors.manifest.as_ref().map(|r| r.published))
            .unwrap_or(op.t0)
            .min(op.t0)
    }

    /// Whether some manifest or catalog version served between `from` and
    /// `to` lacks the directory: the session's version may be that one
    /// (it is revalidated once), however soon the server brought it back.
    fn directory_missing_within(&self, path: &str, from: Duration, to: Duration) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let manifest_lacks = |source: &str, tier: Option<&str>| {
            self.manifests(Some(from), to).iter().any(|(_, m)| {
                !m.sources
                    .get(source)
                    .is_some_and(|tiers| tier.is_none_or(|t| tiers.contains(t)))
            })
        };
        match parts[..] {
            [] => false,
            [source] => manifest_lacks(source, None),
            [source, tier] => manifest_lacks(source, Some(tier)),
            [source, tier, id] => {
                manifest_lacks(source, Some(tier))
                    || self
                        .catalogs(source, Some(from), to)
                        .iter()
                        .any(|(_, c)| c.files(tier, id).is_none())
            }
            _ => true,
        }
    }

    fn check_size(
        &self,
        op: &Op,
        size: u64,
        anchor: Option<Duration>,
        versions: &[Version],
    ) -> Option<(ViolationKind, String)> {
        if size == 0 {
            return Some((
                ViolationKind::EmptySizeShown,
                "a texture shown with size 0 (no texture is empty)".into(),
            ));
        }
        if self
            .live(versions, anchor, op.t1)
            .any(|v| v.content.len() == size)
        {
            return None;
        }
        let source = op.source().unwrap_or("");
        let catalogs = self.catalogs(source, anchor, op.t1);
        if catalogs
            .iter()
            .any(|(_, c)| c.hashes.get(&op.path).is_some_and(|(_, s)| *s == size))
        {
            return None;
        }
        let allowed: Vec<Version> = self.live(versions, anchor, op.t1).cloned().collect();
        Some((
            ViolationKind::WrongSize,
            format!(
                "size {size}; allowed: versions live in {} ({}): {}",
                self.window(anchor, op.t1),
                self.describe_anchor(op),
                Self::list_versions(&allowed)
            ),
        ))
    }

    fn check_listing(
        &self,
        op: &Op,
        names: &BTreeSet<String>,
        anchor: Option<Duration>,
    ) -> Option<(ViolationKind, String)> {
        let parts: Vec<&str> = if op.path.is_empty() {
            Vec::new()
        } else {
            op.path.split('/').collect()
        };
        let candidates: Vec<(Duration, BTreeSet<String>)> = match parts[..] {
            [] => self
                .manifests(anchor, op.t1)
                .into_iter()
                .map(|(v, m)| {
                    let mut expected: BTreeSet<String> = [MANIFEST.to_string()].into();
                    for (source, tiers) in &m.sources {
                        expected.insert(catalog_path(source));
                        if !tiers.is_empty() {
                            expected.insert(source.clone());
                        }
                    }
                    (v.published, expected)
                })
                .collect(),
            [source] => self
                .manifests(anchor, op.t1)
                .into_iter()
                .filter_map(|(v, m)| Some((v.published, m.sources.get(source)?.clone())))
                .collect(),
            [source, tier] => self
                .catalogs(source, anchor, op.t1)
                .into_iter()
                .map(|(v, c)| (v.published, c.in_tier(tier)))
                .collect(),
            [source, tier, id] => self
                .catalogs(source, anchor, op.t1)
                .into_iter()
                .filter_map(|(v, c)| Some((v.published, c.files(tier, id)?)))
                .collect(),
            _ => return None,
        };
        let shown: BTreeSet<String> = names
            .iter()
            .filter(|n| !generated(parts.len(), n))
            .cloned()
            .collect();
        // A material's file the server lacked at some moment of the session
        // may have been found absent, and left out for the rest of it.
        let left_out_allowed = |name: &String| {
            parts.len() == 3
                && self.absent_at_some_moment(
                    &format!("{}/{name}", op.path),
                    self.session.mounted,
                    op.t1,
                )
        };
        if candidates.iter().any(|(_, expected)| {
            shown.is_subset(expected) && expected.difference(&shown).all(left_out_allowed)
        }) {
            return None;
        }
        let listed: Vec<String> = candidates
            .iter()
            .map(|(published, names)| format!("published {}: {names:?}", at(*published)))
            .collect();
        Some((
            ViolationKind::WrongListing,
            format!(
                "listed {shown:?}; allowed: versions live in {} ({}): {}",
                self.window(anchor, op.t1),
                self.describe_anchor(op),
                if listed.is_empty() {
                    "none".into()
                } else {
                    listed.join("; ")
                }
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adversary::history::{Document, Texture};
    use std::sync::Arc;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn png(id: u64) -> Content {
        Content::Texture(Texture {
            spec: BlobSpec {
                id,
                format: Format::Png,
                size: 100,
            },
            sha256: format!("{id:064}").into(),
        })
    }

    fn doc(tag: &str) -> Content {
        Content::Document(Document {
            bytes: Arc::from(tag.as_bytes().to_vec()),
            sha256: format!("{tag:0>64}").into(),
            view: DocView::Plain,
        })
    }

    /// A path that changes at 10 s with its catalog, and a session whose
    /// first requests came after that.
    fn scene() -> History {
        let mut history = History::default();
        let path = "s/512/m/color.png";
        let one: BTreeMap<String, Content> = [
            (path.to_string(), png(1)),
            (MANIFEST.to_string(), doc("m1")),
            ("s.json".to_string(), doc("c1")),
        ]
        .into();
        history.record(0, secs(0.0), &one, &BTreeMap::new(), vec![]);
        let mut two = one.clone();
        two.insert(path.into(), png(2));
        two.insert("s.json".into(), doc("c2"));
        history.record(1, secs(10.0), &two, &one, vec![]);
        history
    }

    fn request(path: &str, at: f64, snapshot: u64) -> Logged {
        Logged {
            at: secs(at),
            method: "GET".into(),
            path: format!("{TAG}/{path}"),
            status: 200,
            snapshot,
            conditional: false,
            range: false,
            served: None,
            blob: None,
        }
    }

    fn read(id: u64, t0: f64, t1: f64) -> Op {
        Op {
            thread: 0,
            kind: OpKind::Read,
            path: "s/512/m/color.png".into(),
            t0: secs(t0),
            t1: secs(t1),
            observed: Observed::Blob(BlobSpec {
                id,
                format: Format::Png,
                size: 100,
            }),
        }
    }

    fn judge(history: &History, ops: Vec<Op>, requests: Vec<Logged>) -> Vec<ViolationKind> {
        judge_with(history, ops, requests, false)
    }

    fn judge_with(
        history: &History,
        ops: Vec<Op>,
        requests: Vec<Logged>,
        commits: bool,
    ) -> Vec<ViolationKind> {
        judge_session(history, ops, requests, commits, false)
    }

    fn judge_session(
        history: &History,
        ops: Vec<Op>,
        requests: Vec<Logged>,
        commits: bool,
        offline: bool,
    ) -> Vec<ViolationKind> {
        kinds(history, &session(ops, requests, commits, offline))
    }

    fn session(ops: Vec<Op>, requests: Vec<Logged>, commits: bool, offline: bool) -> Session {
        Session {
            index: 0,
            setup: String::new(),
            mounted: secs(0.0),
            requests,
            ops,
            clears: Vec::new(),
            refreshes: Vec::new(),
            commits,
            offline,
            commit: None,
        }
    }

    fn kinds(history: &History, session: &Session) -> Vec<ViolationKind> {
        Judge::new(history, session, Duration::from_secs(30))
            .violations()
            .into_iter()
            .map(|v| v.kind)
            .collect()
    }

    #[test]
    fn a_version_replaced_before_the_anchor_is_stale() {
        let history = scene();
        let after = vec![request(MANIFEST, 11.0, 1), request("s.json", 11.0, 1)];
        assert_eq!(
            judge(&history, vec![read(2, 12.0, 13.0)], after.clone()),
            []
        );
        assert_eq!(
            judge(&history, vec![read(1, 12.0, 13.0)], after),
            [ViolationKind::Stale]
        );
        // Revalidated before the change: the old version is allowed.
        let before = vec![request(MANIFEST, 5.0, 0), request("s.json", 5.0, 0)];
        assert_eq!(
            judge(&history, vec![read(1, 12.0, 13.0)], before.clone()),
            []
        );
        assert_eq!(
            judge(&history, vec![read(2, 12.0, 13.0)], before.clone()),
            []
        );
        // Bytes of a blob the path never had, or none at all.
        assert_eq!(
            judge(&history, vec![read(9, 12.0, 13.0)], before.clone()),
            [ViolationKind::AnotherPathsBytes]
        );
        let mut wrong = read(1, 12.0, 13.0);
        wrong.observed = Observed::Wrong("a mix".into());
        assert_eq!(
            judge(&history, vec![wrong], before.clone()),
            [ViolationKind::WrongBytes]
        );
        // An error is allowed, an odd one is not; a slow read is a hang.
        let mut failed = read(1, 12.0, 13.0);
        failed.observed = Observed::Error(libc::ESTALE);
        assert_eq!(judge(&history, vec![failed.clone()], before.clone()), []);
        failed.observed = Observed::Error(libc::EBADF);
        assert_eq!(
            judge(&history, vec![failed], before.clone()),
            [ViolationKind::UnexpectedErrno]
        );
        assert_eq!(
            judge(&history, vec![read(1, 12.0, 50.0)], before),
            [ViolationKind::Hang]
        );
        // Opened without asking for the manifest.
        assert_eq!(
            judge(&history, vec![read(2, 12.0, 13.0)], vec![]),
            [ViolationKind::NoRevalidation]
        );
    }

    #[test]
    fn where_commits_are_named_a_texture_replaced_alone_is_stale_after_it() {
        // The texture replaced at 10 s, the manifest and catalog untouched.
        let mut history = History::default();
        let path = "s/512/m/color.png";
        let one: BTreeMap<String, Content> = [
            (path.to_string(), png(1)),
            (MANIFEST.to_string(), doc("m1")),
            ("s.json".to_string(), doc("c1")),
        ]
        .into();
        history.record(0, secs(0.0), &one, &BTreeMap::new(), vec![]);
        let mut two = one.clone();
        two.insert(path.into(), png(2));
        history.record(1, secs(10.0), &two, &one, vec![]);
        let session = vec![request(MANIFEST, 11.0, 1), request("s.json", 11.0, 1)];
        // A plain mirror names no commit: the old bytes are within its rules.
        assert_eq!(
            judge_with(&history, vec![read(1, 12.0, 13.0)], session.clone(), false),
            []
        );
        // The commit moved at 10 s: only the new bytes are the path's now.
        assert_eq!(
            judge_with(&history, vec![read(1, 12.0, 13.0)], session.clone(), true),
            [ViolationKind::Stale]
        );
        assert_eq!(
            judge_with(&history, vec![read(2, 12.0, 13.0)], session, true),
            []
        );
    }

    #[test]
    fn an_offline_session_asks_nothing_and_serves_one_version_of_each_path() {
        let history = scene();
        // Whatever an earlier session cached: no revalidation to anchor to.
        assert_eq!(
            judge_session(&history, vec![read(1, 12.0, 13.0)], vec![], false, true),
            []
        );
        assert_eq!(
            judge_session(
                &history,
                vec![read(1, 12.0, 13.0), read(1, 14.0, 15.0)],
                vec![],
                false,
                true
            ),
            []
        );
        // Two versions in one session that can see no change.
        assert_eq!(
            judge_session(
                &history,
                vec![read(1, 12.0, 13.0), read(2, 14.0, 15.0)],
                vec![],
                false,
                true
            ),
            [ViolationKind::OfflineChanged]
        );
        // Online, the same reads without a revalidation are a violation.
        assert_eq!(
            judge(&history, vec![read(1, 12.0, 13.0)], vec![]),
            [ViolationKind::NoRevalidation]
        );
    }

    #[test]
    fn a_session_of_a_commit_is_judged_by_that_commit_alone() {
        let tag = scene();
        // The commit of the first publication: its file is blob 1 for
        // good, though the tag moved to blob 2 at 10 s.
        let files: BTreeMap<String, Content> = tag
            .paths()
            .filter_map(|p| Some((p.clone(), tag.version_in(p, 0)?.content.clone())))
            .collect();
        let history = History::of_commit(&files);
        let commit = "c".repeat(40);
        let logged = |path: &str, at: f64| Logged {
            path: format!("{commit}/{path}"),
            snapshot: 0,
            ..request(path, at, 0)
        };
        let requests = requests_of_commit(
            &[
                logged(MANIFEST, 11.0),
                logged("s.json", 11.1),
                // The tag's, for no operation of the session: dropped.
                request(MANIFEST, 11.2, 1),
            ],
            &commit,
        );
        assert_eq!(requests.len(), 2);
        assert!(requests.iter().all(|r| r.path.starts_with(TAG)));
        let judge = |ops: Vec<Op>, requests: Vec<Logged>| {
            let mut session = session(ops, requests, true, false);
            session.commit = Some(commit.clone());
            kinds(&history, &session)
        };
        assert_eq!(judge(vec![read(1, 12.0, 13.0)], requests.clone()), []);
        // Nothing asked (all cached by an earlier session): still the commit.
        assert_eq!(judge(vec![read(1, 12.0, 13.0)], vec![]), []);
        // The tag's later version is never the commit's.
        assert_eq!(
            judge(vec![read(2, 12.0, 13.0)], requests),
            [ViolationKind::AnotherPathsBytes]
        );
    }

    #[test]
    fn a_catalog_fetched_before_the_manifest_anchors_its_source() {
        let history = scene();
        let manifest_later = vec![request("s.json", 5.0, 0), request(MANIFEST, 11.0, 1)];
        let anchors = Anchors::of(&history, &manifest_later);
        assert_eq!(anchors.of_source("s"), Some(secs(0.0)));
        assert_eq!(
            judge(&history, vec![read(1, 12.0, 13.0)], manifest_later),
            []
        );
        let catalog_later = vec![request(MANIFEST, 5.0, 0), request("s.json", 11.0, 1)];
        assert_eq!(
            Anchors::of(&history, &catalog_later).of_source("s"),
            Some(secs(10.0))
        );
    }

    #[test]
    fn a_directory_gone_while_listed_may_be_stale() {
        let mut history = History::default();
        let manifest = |tiers: &[&str]| {
            Content::Document(Document {
                bytes: Arc::from(format!("{tiers:?}").into_bytes()),
                sha256: format!("{:0>64}", tiers.len()).into(),
                view: DocView::Manifest(Arc::new(crate::adversary::views::ManifestView {
                    sources: [(
                        "s".to_string(),
                        tiers.iter().map(|t| t.to_string()).collect(),
                    )]
                    .into(),
                })),
            })
        };
        let one: BTreeMap<String, Content> =
            [(MANIFEST.to_string(), manifest(&["1k", "512"]))].into();
        history.record(0, secs(0.0), &one, &BTreeMap::new(), vec![]);
        let two: BTreeMap<String, Content> = [(MANIFEST.to_string(), manifest(&["1k"]))].into();
        history.record(1, secs(10.0), &two, &one, vec![]);
        let list = |path: &str, t: f64| Op {
            thread: 0,
            kind: OpKind::List,
            path: path.into(),
            t0: secs(t),
            t1: secs(t + 0.1),
            observed: Observed::Error(libc::ESTALE),
        };
        assert_eq!(judge(&history, vec![list("s/512", 12.0)], vec![]), []);
        assert_eq!(
            judge(&history, vec![list("s/512", 5.0)], vec![]),
            [ViolationKind::UnexpectedErrno]
        );
        assert_eq!(
            judge(&history, vec![list("s/1k", 12.0)], vec![]),
            [ViolationKind::UnexpectedErrno]
        );
        // The tier comes back at 20 s: a session whose version lacks it
        // (its manifest asked at 11 s) may still find it gone at 25 s.
        let three: BTreeMap<String, Content> =
            [(MANIFEST.to_string(), manifest(&["1k", "512", "256"]))].into();
        history.record(2, secs(20.0), &three, &two, vec![]);
        let session = vec![request(MANIFEST, 11.0, 1)];
        assert_eq!(judge(&history, vec![list("s/512", 25.0)], session), []);
        let later = vec![request(MANIFEST, 21.0, 2)];
        assert_eq!(
            judge(&history, vec![list("s/512", 25.0)], later),
            [ViolationKind::UnexpectedErrno]
        );
    }

    #[test]
    fn a_file_the_server_lacked_in_the_session_may_be_left_out_of_a_listing() {
        use crate::adversary::views::{CatalogView, Material};
        let mut history = History::default();
        let catalog = Content::Document(Document {
            bytes: Arc::from(b"c".to_vec()),
            sha256: format!("{:0>64}", "c").into(),
            view: DocView::Catalog(Arc::new(CatalogView {
                materials: [(
                    "m".to_string(),
                    Material {
                        tiers: ["512".to_string()].into(),
                        channels: vec!["ao".into(), "color".into()],
                    },
                )]
                .into(),
                hashes: BTreeMap::new(),
            })),
        });
        let one: BTreeMap<String, Content> = [
            ("s.json".to_string(), catalog),
            ("s/512/m/ao.png".to_string(), png(1)),
            ("s/512/m/color.png".to_string(), png(2)),
        ]
        .into();
        history.record(0, secs(0.0), &one, &BTreeMap::new(), vec![]);
        // The ao file goes from the server at 10 s, the catalog stays.
        let mut two = one.clone();
        two.remove("s/512/m/ao.png");
        history.record(1, secs(10.0), &two, &one, vec![]);
        let list = |t: f64, names: &[&str]| Op {
            thread: 0,
            kind: OpKind::List,
            path: "s/512/m".into(),
            t0: secs(t),
            t1: secs(t + 0.1),
            observed: Observed::Names(names.iter().map(|n| n.to_string()).collect()),
        };
        assert_eq!(
            judge(&history, vec![list(12.0, &["color.png"])], vec![]),
            []
        );
        assert_eq!(
            judge(&history, vec![list(5.0, &["color.png"])], vec![]),
            [ViolationKind::WrongListing],
            "it was there all the time before"
        );
        assert_eq!(
            judge(&history, vec![list(12.0, &["ao.png"])], vec![]),
            [ViolationKind::WrongListing],
            "the other one never went"
        );
        assert_eq!(
            judge(&history, vec![list(12.0, &["ao.png", "color.png"])], vec![]),
            []
        );
    }

    #[test]
    fn sizes_before_the_first_open_may_be_older() {
        let history = scene();
        let after = vec![request(MANIFEST, 11.0, 1), request("s.json", 11.0, 1)];
        let stat = |size, t0| Op {
            thread: 1,
            kind: OpKind::Stat,
            path: "s/512/m/color.png".into(),
            t0: secs(t0),
            t1: secs(t0 + 0.1),
            observed: Observed::Size(size),
        };
        assert_eq!(judge(&history, vec![stat(100, 12.0)], after.clone()), []);
        assert_eq!(
            judge(&history, vec![stat(101, 12.0)], after.clone()),
            [ViolationKind::WrongSize]
        );
        assert_eq!(
            judge(&history, vec![stat(0, 12.0)], after),
            [ViolationKind::EmptySizeShown]
        );
        let reread = Op {
            kind: OpKind::Reread,
            observed: Observed::Reread {
                first: Box::new(Observed::Blob(BlobSpec {
                    id: 1,
                    format: Format::Png,
                    size: 100,
                })),
                now: Box::new(Observed::Blob(BlobSpec {
                    id: 2,
                    format: Format::Png,
                    size: 100,
                })),
            },
            ..read(1, 12.0, 13.0)
        };
        assert_eq!(
            judge(&history, vec![reread], vec![]),
            [ViolationKind::RereadDiffers]
        );
    }

    #[test]
    fn a_read_after_a_later_revalidation_is_anchored_there() {
        let history = scene();
        // Revalidated at the session's start, before the change, and again
        // (a refresh, a period) after it.
        let requests = vec![
            request(MANIFEST, 5.0, 0),
            request("s.json", 5.0, 0),
            request(MANIFEST, 11.0, 1),
            request("s.json", 11.0, 1),
        ];
        assert_eq!(
            judge(&history, vec![read(1, 12.0, 13.0)], requests.clone()),
            [ViolationKind::Stale]
        );
        assert_eq!(
            judge(&history, vec![read(2, 12.0, 13.0)], requests.clone()),
            []
        );
        // Begun before the later requests: the first ones anchor it.
        assert_eq!(
            judge(&history, vec![read(1, 8.0, 13.0)], requests.clone()),
            []
        );
        // A catalog last asked before the latest manifest: its own
        // publication anchors the source (its hashes prove files).
        let catalog_older = vec![
            request(MANIFEST, 5.0, 0),
            request("s.json", 5.0, 0),
            request(MANIFEST, 11.0, 1),
        ];
        assert_eq!(
            judge(&history, vec![read(1, 12.0, 13.0)], catalog_older),
            []
        );
        // Listings and sizes keep the session's first anchor.
        let session = Session {
            index: 0,
            setup: String::new(),
            mounted: secs(0.0),
            requests,
            ops: Vec::new(),
            clears: Vec::new(),
            refreshes: Vec::new(),
            commits: false,
            offline: false,
            commit: None,
        };
        let judge = Judge::new(&history, &session, Duration::from_secs(30));
        let stat = Op {
            kind: OpKind::Stat,
            ..read(1, 12.0, 13.0)
        };
        assert_eq!(judge.anchors_for(&stat).manifest.unwrap().at, secs(5.0));
        assert_eq!(
            judge.anchors_for(&read(1, 12.0, 13.0)).manifest.unwrap().at,
            secs(11.0)
        );
    }

    #[test]
    fn where_commits_are_named_a_later_revalidation_moves_the_commit_anchor() {
        let mut history = History::default();
        let path = "s/512/m/color.png";
        let one: BTreeMap<String, Content> = [
            (path.to_string(), png(1)),
            (MANIFEST.to_string(), doc("m1")),
            ("s.json".to_string(), doc("c1")),
        ]
        .into();
        history.record(0, secs(0.0), &one, &BTreeMap::new(), vec![]);
        let mut two = one.clone();
        two.insert(path.into(), png(2));
        history.record(1, secs(10.0), &two, &one, vec![]);
        let requests = vec![
            request(MANIFEST, 5.0, 0),
            request("s.json", 5.0, 0),
            request(MANIFEST, 11.0, 1),
        ];
        assert_eq!(
            judge_with(&history, vec![read(1, 12.0, 13.0)], requests.clone(), true),
            [ViolationKind::Stale]
        );
        assert_eq!(
            judge_with(&history, vec![read(1, 6.0, 13.0)], requests.clone(), true),
            []
        );
        assert_eq!(
            judge_with(&history, vec![read(2, 12.0, 13.0)], requests, true),
            []
        );
    }

    #[test]
    fn a_refresh_that_cannot_ask_the_mount_is_a_violation() {
        let history = scene();
        let run = |exit: Option<i32>, seconds: f64| {
            let session = Session {
                index: 0,
                setup: String::new(),
                mounted: secs(0.0),
                requests: vec![],
                ops: vec![],
                clears: vec![],
                refreshes: vec![RefreshRun {
                    t0: secs(1.0),
                    t1: secs(1.0 + seconds),
                    exit,
                }],
                commits: false,
                offline: false,
                commit: None,
            };
            Judge::new(&history, &session, Duration::from_secs(30))
                .violations()
                .into_iter()
                .map(|v| v.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(Some(0), 0.5), []);
        assert_eq!(run(Some(1), 0.5), []);
        assert_eq!(run(Some(2), 0.5), [ViolationKind::RefreshFailed]);
        assert_eq!(run(None, 0.5), [ViolationKind::RefreshFailed]);
        assert_eq!(run(Some(0), 31.0), [ViolationKind::RefreshFailed]);
    }
}
