//! What a run tells its reader: counts of everything checked, and for each
//! violation the short sequence of events that shows it (the publications
//! of the path and of its catalog and manifest, the session's first
//! requests, cache clears, the server's answers for the path, and the
//! operations on it) in time order.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::history::{History, at};
use super::model::{MANIFEST, TAG, catalog_path};
use super::mutate::Mutation;
use super::oracle::{Anchors, Observed, Op, OpKind, Session, Violation, ViolationKind, errno_name};

/// Events shown per kind, at most (the latest).
const SHOWN: usize = 12;

fn latest<T>(mut items: Vec<T>, n: usize) -> Vec<T> {
    let skip = items.len().saturating_sub(n);
    items.drain(..skip);
    items
}

/// The events that show `violation`, one line each, in time order.
pub fn timeline(
    history: &History,
    session: &Session,
    anchors: &Anchors,
    violation: &Violation,
) -> Vec<String> {
    let op = &violation.op;
    let source = op
        .path
        .split('/')
        .next()
        .map(|s| s.trim_end_matches(".json").to_string())
        .unwrap_or_default();
    let catalog = catalog_path(&source);
    let mut events: Vec<(Duration, String)> = Vec::new();
    // Publications of the path, of its catalog and of the manifest, up to
    // the operation (with the one each session version came from).
    let touching: Vec<_> = history
        .publications()
        .iter()
        .filter(|p| p.at <= op.t1)
        .filter(|p| {
            p.paths
                .iter()
                .any(|q| *q == op.path || *q == catalog || q == MANIFEST)
        })
        .collect();
    for publication in latest(touching, SHOWN) {
        let mine: Vec<String> = publication
            .changes
            .iter()
            .filter(|c| c.contains(&op.path) || c.contains(&source) || c.contains(MANIFEST))
            .cloned()
            .collect();
        let served: Vec<String> = [op.path.as_str(), catalog.as_str(), MANIFEST]
            .iter()
            .filter(|p| publication.paths.iter().any(|q| q == *p))
            .map(|p| match history.version_in(p, publication.seq) {
                Some(v) => format!("{p} = {}", v.content.label()),
                None => format!("{p} gone"),
            })
            .collect();
        events.push((
            publication.at,
            format!(
                "publication #{}: {} [{}]",
                publication.seq,
                if mine.is_empty() {
                    publication.changes.join("; ")
                } else {
                    mine.join("; ")
                },
                served.join(", ")
            ),
        ));
    }
    events.push((
        session.mounted,
        format!("session {} mounted: {}", session.index, session.setup),
    ));
    let first = |name: &str, request: Option<&super::oracle::FirstRequest>| {
        request.map(|r| {
            (
                r.at,
                format!(
                    "the request for {name} the operation is judged by: {} from snapshot {} (a version published {})",
                    r.status,
                    r.snapshot,
                    at(r.published)
                ),
            )
        })
    };
    events.extend(first(MANIFEST, anchors.manifest.as_ref()));
    events.extend(first(&catalog, anchors.catalogs.get(&source)));
    for (start, end) in session.clears.iter().filter(|(s, _)| *s <= op.t1) {
        events.push((*start, format!("cache clear (done {})", at(*end))));
    }
    for refresh in session.refreshes.iter().filter(|r| r.t0 <= op.t1) {
        events.push((
            refresh.t0,
            format!(
                "matvisfs refresh (done {}, exit {:?})",
                at(refresh.t1),
                refresh.exit
            ),
        ));
    }
    let served_blob = match &op.observed {
        Observed::Blob(spec) => history.blob(spec.id).map(|t| t.sha256.to_string()),
        _ => None,
    };
    let resolve = format!("{TAG}/{}", op.path);
    let requests: Vec<_> = session
        .requests
        .iter()
        .filter(|r| r.at <= op.t1 + Duration::from_millis(100))
        .filter(|r| {
            r.path == resolve
                || served_blob
                    .as_ref()
                    .is_some_and(|sha| r.path == format!("cdn/{sha}"))
                || r.path.starts_with(&format!("api/tree/{TAG}/{source}"))
        })
        .collect();
    for r in latest(requests, SHOWN) {
        events.push((
            r.at,
            format!(
                "server: {} {} -> {} (snapshot {}{}{})",
                r.method,
                r.path,
                r.status,
                r.snapshot,
                if r.conditional { ", conditional" } else { "" },
                r.served
                    .as_ref()
                    .map(|s| format!(", {s}"))
                    .unwrap_or_default()
            ),
        ));
    }
    // Operations on the path before it, and those that overlapped it.
    let earlier: Vec<&Op> = session
        .ops
        .iter()
        .filter(|o| o.path == op.path && o.t0 < op.t0)
        .collect();
    let overlapping = session
        .ops
        .iter()
        .filter(|o| o.path == op.path && o.t0 > op.t0 && o.t0 <= op.t1);
    for o in latest(earlier, SHOWN)
        .into_iter()
        .chain(overlapping.take(SHOWN))
    {
        events.push((o.t0, o.describe()));
    }
    events.push((op.t0, format!("FAILING: {}", op.describe())));
    events.sort_by_key(|(t, _)| *t);
    events
        .into_iter()
        .map(|(t, what)| format!("{:>9} {what}", at(t)))
        .collect()
}

/// The figures of a run.
#[derive(Debug, Default)]
pub struct Tally {
    pub sessions: u64,
    pub ops: BTreeMap<OpKind, u64>,
    /// Reads whose bytes were checked (whole files: reads, pieces, holds,
    /// rereads and documents).
    pub reads_checked: u64,
    pub bytes_checked: u64,
    pub sizes_checked: u64,
    pub listings_checked: u64,
    pub errors: BTreeMap<String, u64>,
    pub publications: u64,
    pub mutations: BTreeMap<Mutation, u64>,
    pub clears: u64,
    pub refreshes: u64,
    pub requests: u64,
    pub violations: BTreeMap<ViolationKind, u64>,
}

impl Tally {
    pub fn add_session(&mut self, session: &Session, violations: &[Violation]) {
        self.sessions += 1;
        self.clears += session.clears.len() as u64;
        self.refreshes += session.refreshes.len() as u64;
        self.requests += session.requests.len() as u64;
        for op in &session.ops {
            *self.ops.entry(op.kind).or_default() += 1;
            let observed = match &op.observed {
                Observed::Reread { now, .. } => &**now,
                other => other,
            };
            match observed {
                Observed::Blob(spec) => {
                    self.reads_checked += 1;
                    self.bytes_checked += spec.size;
                }
                Observed::Doc(_)
                | Observed::Wrong(_)
                | Observed::Empty
                | Observed::Cut { .. }
                | Observed::Padded { .. } => self.reads_checked += 1,
                Observed::Size(_) => self.sizes_checked += 1,
                Observed::Names(_) => self.listings_checked += 1,
                Observed::Error(errno) => {
                    *self
                        .errors
                        .entry(format!("{} {}", op.kind, errno_name(*errno)))
                        .or_default() += 1;
                }
                _ => {}
            }
        }
        for violation in violations {
            *self.violations.entry(violation.kind).or_default() += 1;
        }
    }

    pub fn add_publication(&mut self, kinds: &[Mutation]) {
        self.publications += 1;
        for kind in kinds {
            *self.mutations.entry(*kind).or_default() += 1;
        }
    }

    /// The summary a run prints.
    pub fn summary(&self, history: &History) -> String {
        let mut out = String::new();
        let total: u64 = self.ops.values().sum();
        let _ = writeln!(out, "sessions: {}", self.sessions);
        let _ = writeln!(out, "operations: {total}");
        for (kind, n) in &self.ops {
            let _ = writeln!(out, "  {kind}: {n}");
        }
        let _ = writeln!(
            out,
            "reads checked: {} ({} bytes); sizes checked: {}; listings checked: {}",
            self.reads_checked, self.bytes_checked, self.sizes_checked, self.listings_checked
        );
        let errors: u64 = self.errors.values().sum();
        let _ = writeln!(
            out,
            "errors (allowed unless listed as violations): {errors}"
        );
        for (kind, n) in &self.errors {
            let _ = writeln!(out, "  {kind}: {n}");
        }
        let _ = writeln!(
            out,
            "publications: {} ({} file versions in all)",
            self.publications,
            history
                .paths()
                .map(|p| history.versions(p).len())
                .sum::<usize>()
        );
        for (kind, n) in &self.mutations {
            let _ = writeln!(out, "  {kind:?}: {n}");
        }
        let _ = writeln!(out, "cache clears while mounted: {}", self.clears);
        let _ = writeln!(out, "refreshes while mounted: {}", self.refreshes);
        let _ = writeln!(out, "requests to the server: {}", self.requests);
        let wrong: u64 = self.violations.values().sum();
        let _ = writeln!(out, "violations: {wrong}");
        for (kind, n) in &self.violations {
            let _ = writeln!(out, "  {kind:?}: {n}");
        }
        out
    }
}

/// The first violation of each kind (and of each path within a kind),
/// the shortest to read.
pub fn worth_showing(violations: &[Violation]) -> Vec<&Violation> {
    let mut shown: BTreeMap<(ViolationKind, String), &Violation> = BTreeMap::new();
    for v in violations {
        shown.entry((v.kind, v.op.path.clone())).or_insert(v);
    }
    let mut out: Vec<&Violation> = shown.into_values().collect();
    out.sort_by_key(|v| (v.kind, v.op.t1));
    out
}
