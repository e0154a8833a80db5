//! The documents that shape a tag's tree: the manifest and those it names
//! (catalogs, MaterialX maps, rowmaps), each by its role. The named ones are
//! read from the cache or fetched when first needed, parsed, and put into
//! the tag's view; every one, the manifest included, is first downloaded
//! and revalidated here, a changed one beginning a new version of the tag.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::changes::ChangeReport;
use super::error::{Error, Result};
use super::missing;
use super::tag_context::TagContext;
use super::version::NewVersion;
use super::view::{DocContents, LoadedDoc, Step};
use crate::digest::Sha256Digest;
use crate::flight::{Gates, SingleFlight};
use crate::format::{
    Catalog, DocumentRole, Location, MANIFEST_FILE, Manifest, parse_catalog, parse_manifest,
    parse_materialx_map, parse_rowmap,
};
use crate::materials::generated_files;
use crate::remote::{FetchError, GetOutcome, MemorySink, Remote, RemoteMeta};
use crate::store::{Blob, DocRecord, OpenBlob};
use crate::wait;

/// Manifests and catalogs larger than this are refused. Real catalogs are a
/// few megabytes; a hostile one of the smallest entries that still make
/// files holds about twice its size in memory once listed, so this bounds
/// what a server can make the daemon hold.
pub const DOCUMENT_LIMIT: usize = 128 << 20;
/// How many skipped entries of one document are logged one by one.
const SKIPPED_LOGGED: usize = 10;

fn report_skipped(tag: &str, document: &str, skipped: &[String]) {
    for reason in skipped.iter().take(SKIPPED_LOGGED) {
        tracing::warn!(tag, document, "skipped an entry: {reason}");
    }
    if skipped.len() > SKIPPED_LOGGED {
        tracing::warn!(
            tag,
            document,
            "skipped {} more entries",
            skipped.len() - SKIPPED_LOGGED
        );
    }
}

/// Generated documents a material cannot have: a name of the server's wins,
/// and a name longer than a directory entry can be is left out.
fn report_left_out(tag: &str, document: &str, catalog: &Catalog) {
    let mut left_out = Vec::new();
    for material in &catalog.materials {
        let (_, names) = generated_files(&material.id, true, |file| {
            file.strip_suffix(".png")
                .or_else(|| file.strip_suffix(".ktx2"))
                .is_some_and(|stem| material.has_channel(stem))
        });
        left_out.extend(names);
    }
    let shown: Vec<_> = left_out.iter().take(SKIPPED_LOGGED).collect();
    if !shown.is_empty() {
        tracing::info!(
            tag,
            document,
            count = left_out.len(),
            "generated documents left out (a server file has the name, or it is too long): {shown:?}"
        );
    }
}

pub fn parse_manifest_for(tag: &str, bytes: &[u8]) -> Result<Manifest, String> {
    let parsed = parse_manifest(bytes).map_err(|e| e.to_string())?;
    report_skipped(tag, MANIFEST_FILE, &parsed.skipped);
    Ok(parsed.value)
}

/// Checks a document's bytes; catalogs and rowmaps are parsed for the tree,
/// and a rowmap's container is located through the manifest.
pub fn parse_document(
    tag: &str,
    name: &str,
    role: DocumentRole,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<DocContents, String> {
    match role {
        DocumentRole::Catalog => {
            let parsed = parse_catalog(bytes).map_err(|e| e.to_string())?;
            report_skipped(tag, name, &parsed.skipped);
            report_left_out(tag, name, &parsed.value);
            Ok(DocContents::Catalog(Arc::new(parsed.value)))
        }
        DocumentRole::MaterialX => {
            let parsed = parse_materialx_map(bytes).map_err(|e| e.to_string())?;
            report_skipped(tag, name, &parsed.skipped);
            Ok(DocContents::MaterialX(Arc::new(parsed.value)))
        }
        DocumentRole::Rowmap => {
            let parsed = parse_rowmap(bytes).map_err(|e| e.to_string())?;
            report_skipped(tag, name, &parsed.skipped);
            let rowmap = parsed.value;
            let container = manifest
                .container_part(name)
                .and_then(|part| part.container_location(rowmap.container.as_deref()));
            if container.is_none() {
                tracing::warn!(tag, document = name, "the rowmap names no container");
            }
            Ok(DocContents::Rowmap {
                rowmap: Arc::new(rowmap),
                container,
            })
        }
    }
}

/// What a document is to the tag: its manifest, or a document the
/// manifest names. Both are fetched, kept and revalidated the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manifest,
    Named(DocumentRole),
}

impl Role {
    /// What the server no longer having it means.
    fn gone(self) -> &'static str {
        match self {
            Role::Manifest => "the tag is no longer on the server (404)",
            Role::Named(_) => "no longer on the server (404)",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Role::Manifest => "manifest",
            Role::Named(_) => "document",
        }
    }
}

/// A document's bytes, checked and parsed for its role.
pub enum Contents {
    Manifest(Manifest),
    Named(DocContents),
}

/// Checks and parses a document for its role; `manifest` (the current one)
/// locates a rowmap's container.
pub fn parse(
    tag: &str,
    name: &str,
    role: Role,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<Contents, String> {
    match role {
        Role::Manifest => parse_manifest_for(tag, bytes).map(Contents::Manifest),
        Role::Named(role) => parse_document(tag, name, role, bytes, manifest).map(Contents::Named),
    }
}

/// Why a document's first download brought no bytes.
pub enum NotDownloaded {
    Failed(FetchError),
    /// A 304 answer to an unconditional request.
    NotModified,
}

/// The first download of a document nothing is cached of: its bytes and
/// what the answer said.
pub fn first_download(
    remote: &dyn Remote,
    tag: &str,
    file: &Location,
) -> Result<(Vec<u8>, RemoteMeta), NotDownloaded> {
    let mut sink = MemorySink::with_limit(DOCUMENT_LIMIT);
    match remote.get_first(tag, file, &mut sink) {
        Ok(GetOutcome::Fetched(meta)) => Ok((sink.bytes, meta)),
        Ok(GetOutcome::NotModified(_)) => Err(NotDownloaded::NotModified),
        Err(e) => Err(NotDownloaded::Failed(e)),
    }
}

/// What revalidating a document found.
pub enum Checked {
    /// The server has the same bytes: with what the answer said.
    Unchanged(RemoteMeta),
    /// Other bytes, put in place as a new version of the tag.
    Replaced,
    /// The cached copy stays in service (why): the server no longer has the
    /// document, or sent an unusable one.
    Kept(String),
    /// The mount is offline: the server was not asked.
    Offline,
    /// No usable answer: checked again later.
    Failed(FetchError),
}

/// Where the manifest or a document it names is; a name it does not know
/// is taken as a path in the revision.
fn location(manifest: &Manifest, name: &str) -> Location {
    manifest
        .location(name)
        .unwrap_or_else(|| Location::revision(name))
}

/// What a conditional GET of a document found.
enum Refresh {
    /// With what the answer said.
    Unchanged(RemoteMeta),
    Changed(Vec<u8>, RemoteMeta),
    Gone,
    Failed(FetchError),
}

#[derive(Default)]
pub struct Documents {
    /// One load at a time per document and version: a load that began
    /// under an older version (its answer, say a 404, kept for that
    /// version only) is not what a caller under a newer one waits for.
    loads: SingleFlight<(String, u64), Result<LoadedDoc>>,
    /// One revalidation per document and session (a first download
    /// counts); re-armed when the tag is revalidated again.
    fresh: Gates<String>,
    /// Why a document's last check did not revalidate it, when it did not.
    problems: Mutex<HashMap<String, String>>,
}

impl Documents {
    /// A catalog, MaterialX or rowmap document: from the view, the cache, or
    /// the server (reading it from disk counts as waiting).
    pub fn get(&self, t: &TagContext, name: &str) -> Result<LoadedDoc> {
        if let Some(doc) = t.version.view().documents.get(name) {
            return Ok(doc.clone());
        }
        let role = t
            .version
            .view()
            .manifest
            .document_role(name)
            .ok_or(Error::NotFound)?;
        wait::may_block()?;
        let generation = t.version.view().generation;
        self.loads.run(&(name.to_string(), generation), || {
            let view = t.version.view();
            if let Some(doc) = view.documents.get(name) {
                return Ok(doc.clone());
            }
            if let Some(record) = t.version.state().record(name) {
                let cached = t
                    .ctx
                    .documents
                    .read(&record.blob())
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| parse_document(&t.name, name, role, &bytes, &view.manifest));
                match cached {
                    Ok(parsed) => {
                        return Ok(Self::install(t, name, parsed.into_doc(record.blob())));
                    }
                    Err(why) => tracing::warn!(
                        tag = %t.name,
                        document = name,
                        "the cached copy is unusable ({why}); fetching it again"
                    ),
                }
            }
            self.fetch(t, name, role)
        })
    }

    /// The view's copy once installed: another thread may have been first.
    /// A map the manifest does not name is listed from now on: the kernel
    /// is told.
    fn install(t: &TagContext, name: &str, doc: LoadedDoc) -> LoadedDoc {
        let installed = t
            .version
            .update(Step::Loaded(name.to_string(), doc.clone()));
        let view = t.version.view();
        let implied = view
            .manifest
            .document_owner(name)
            .is_some_and(|s| s.mtlx.as_deref() == Some(name) && !s.mtlx_named);
        if installed.is_some() && implied {
            t.ctx.changed(super::Change {
                tag: t.name.to_string(),
                file: Some(name.to_string()),
            });
        }
        view.documents.get(name).cloned().unwrap_or(doc)
    }

    fn fetch(&self, t: &TagContext, name: &str, role: DocumentRole) -> Result<LoadedDoc> {
        let view = t.version.view();
        let file = location(&view.manifest, name);
        let url = t.url(&file);
        let remote = t.remote(&url, "not cached")?;
        let fetched = super::first_contact(&url, &super::log_waiting, || {
            first_download(remote, &t.name, &file)
        });
        let (bytes, meta) = match fetched {
            Ok(fetched) => fetched,
            Err(NotDownloaded::NotModified) => {
                return Err(Error::refused(
                    url,
                    "a 304 answer to an unconditional request",
                ));
            }
            // A map is an addition to the tree; a tag without its catalogs
            // is broken, and says so.
            Err(NotDownloaded::Failed(FetchError::NotFound)) if role == DocumentRole::MaterialX => {
                return Err(missing::answered_404(t, name, view.generation));
            }
            Err(NotDownloaded::Failed(e)) => return Err(Error::fetch(url, e)),
        };
        t.saw(&meta);
        let manifest = t.version.view().manifest.clone();
        let parsed = parse_document(&t.name, name, role, &bytes, &manifest)
            .map_err(|why| Error::refused(&url, format!("an unusable document: {why}")))?;
        let blob = t.put_document(&bytes)?;
        t.version
            .state()
            .set_document(name, DocRecord::new(blob, meta.validators()));
        tracing::info!(tag = %t.name, document = name, "fetched");
        self.fresh.get(&name.to_string()).mark_passed();
        Ok(Self::install(t, name, parsed.into_doc(blob)))
    }

    /// Revalidates a document once per session (and once after each time
    /// the tag is revalidated again): the first open that needs it (the
    /// document itself, or a texture it lists) asks the server.
    pub fn revalidate(&self, t: &TagContext, name: &str) -> Result<()> {
        let gate = self.fresh.get(&name.to_string());
        let schedule = t.ctx.document_schedule();
        // A revision named by its commit never changes.
        if t.immutable || gate.is_settled(schedule) {
            return Ok(());
        }
        wait::may_block()?;
        gate.pass(schedule, |_| self.revalidate_now(t, name));
        Ok(())
    }

    /// Every document is revalidated again at its next need, as at a
    /// session's start.
    pub fn rearm(&self) {
        self.fresh.rearm_all();
    }

    /// Where each document's checks stand: given back to
    /// [`Documents::revalidate_since`], only checks that began after count.
    pub fn tickets(&self) -> HashMap<String, u64> {
        self.fresh.tickets()
    }

    /// Revalidates a document unless a check that began since `ticket`
    /// was taken did (one under way then is waited for and does not
    /// count). The error says why it could not be.
    pub fn revalidate_since(&self, t: &TagContext, name: &str, ticket: u64) -> Result<(), String> {
        if t.immutable {
            return Ok(());
        }
        let gate = self.fresh.get(&name.to_string());
        gate.pass_since(ticket, t.ctx.document_schedule(), |_| {
            self.revalidate_now(t, name)
        });
        match self.problems.lock().get(name) {
            Some(why) => Err(format!("{name}: {why}")),
            None => Ok(()),
        }
    }

    /// The names of the documents in the current view.
    pub fn loaded(t: &TagContext) -> Vec<String> {
        t.version.view().documents.keys().cloned().collect()
    }

    fn problem(&self, name: &str, why: Option<String>) {
        let mut problems = self.problems.lock();
        match why {
            Some(why) => problems.insert(name.to_string(), why),
            None => problems.remove(name),
        };
    }

    /// Returns whether the check completed (false: try again later).
    fn revalidate_now(&self, t: &TagContext, name: &str) -> bool {
        let view = t.version.view();
        let Some(role) = view.manifest.document_role(name) else {
            return true;
        };
        let Some(record) = t.version.state().record(name) else {
            // Never fetched: the first fetch is fresh by definition.
            let fetched = self.get(t, name);
            self.problem(name, fetched.as_ref().err().map(|e| e.to_string()));
            return fetched.is_ok();
        };
        // The cached version in the view, to tell what changed.
        let _ = self.get(t, name);
        let (why, completed) = match Self::check(t, name, Role::Named(role), &record) {
            Checked::Unchanged(_) | Checked::Replaced => (None, true),
            Checked::Kept(why) => (Some(why), true),
            Checked::Offline => (Some("the mount is offline (--offline)".into()), true),
            Checked::Failed(e) => (Some(e.to_string()), false),
        };
        self.problem(name, why);
        completed
    }

    /// Revalidates the manifest or a document against `record`, what is
    /// stored of it: one conditional request, and a different answer put
    /// in place as a new version of the tag (announced). The cached copy
    /// stays in service when the answer is unusable.
    pub fn check(t: &TagContext, name: &str, role: Role, record: &DocRecord) -> Checked {
        if t.ctx.remote.is_offline() {
            tracing::info!(tag = %t.name, document = name, "offline: serving the cached copy");
            return Checked::Offline;
        }
        let noun = role.noun();
        match Self::refresh(t, name, record) {
            Refresh::Unchanged(meta) => {
                t.saw(&meta);
                tracing::info!(tag = %t.name, document = name, "revalidated: unchanged on the server");
                Checked::Unchanged(meta)
            }
            Refresh::Changed(bytes, meta) => {
                t.saw(&meta);
                let manifest = t.version.view().manifest.clone();
                match parse(&t.name, name, role, &bytes, &manifest) {
                    Ok(contents) => {
                        Self::replace(t, name, contents, &bytes, &meta);
                        Checked::Replaced
                    }
                    Err(why) => {
                        tracing::error!(
                            tag = %t.name,
                            document = name,
                            "the server sent an unusable {noun} ({why}); keeping the cached copy"
                        );
                        Checked::Kept(format!("the server sent an unusable {noun} ({why})"))
                    }
                }
            }
            Refresh::Gone => {
                tracing::warn!(tag = %t.name, document = name, "no longer on the server; serving the cached copy");
                Checked::Kept(role.gone().into())
            }
            Refresh::Failed(e) => {
                tracing::warn!(tag = %t.name, document = name, "cannot revalidate ({e}); serving the cached copy");
                Checked::Failed(e)
            }
        }
    }

    /// The manifest or a document changed on the server: a new version of
    /// the tag begins, and is announced.
    fn replace(t: &TagContext, name: &str, contents: Contents, bytes: &[u8], meta: &RemoteMeta) {
        let blob = match t.put_document(bytes) {
            Ok(blob) => blob,
            Err(e) => {
                tracing::error!(tag = %t.name, document = name, "cannot keep the new version: {e}");
                return;
            }
        };
        let record = DocRecord::new(blob, meta.validators());
        let report = match contents {
            Contents::Manifest(manifest) => {
                let Some(change) = t.begin_version(NewVersion::Manifest {
                    record,
                    manifest: Arc::new(manifest),
                    // The manifest's answer names the new version's commit.
                    commit: meta.commit.clone(),
                }) else {
                    return;
                };
                ChangeReport::manifests(
                    &change.old.manifest,
                    &change.new.manifest,
                    change.generation,
                )
            }
            Contents::Named(parsed) => {
                let doc = parsed.into_doc(blob);
                let Some(change) = t.begin_version(NewVersion::Document {
                    name: name.to_string(),
                    record,
                    doc: doc.clone(),
                    commit: meta.commit.clone(),
                }) else {
                    return;
                };
                let (old, new, generation) = (&change.old, &change.new, change.generation);
                match (old.documents.get(name), new.manifest.document_owner(name)) {
                    (Some(before), Some(source)) => match (before.catalog(), doc.catalog()) {
                        (Some(a), Some(b)) => ChangeReport::catalogs(
                            name,
                            &source.name,
                            &source.tiers,
                            a,
                            b,
                            generation,
                        ),
                        _ => ChangeReport::document(name, generation),
                    },
                    _ => ChangeReport::document(name, generation),
                }
            }
        };
        t.announce(report, None);
    }

    /// One conditional GET of the manifest or a document against what is
    /// stored (also a GET with no validator when none was stored).
    fn refresh(t: &TagContext, name: &str, record: &DocRecord) -> Refresh {
        let file = location(&t.version.view().manifest, name);
        let url = t.url(&file);
        let remote = match t.remote(&url, "cannot be revalidated") {
            Ok(remote) => remote,
            Err(_) => return Refresh::Failed(FetchError::Offline),
        };
        let mut sink = MemorySink::with_limit(DOCUMENT_LIMIT);
        match remote.check(&t.name, &file, &record.validators, &mut sink) {
            Ok(GetOutcome::NotModified(meta)) => Refresh::Unchanged(meta),
            Ok(GetOutcome::Fetched(meta)) => {
                if Sha256Digest::of(&sink.bytes) != record.sha256 {
                    return Refresh::Changed(sink.bytes, meta);
                }
                t.version.state().set_validators(name, meta.validators());
                Refresh::Unchanged(meta)
            }
            Err(FetchError::NotFound) => Refresh::Gone,
            Err(e) => Refresh::Failed(e),
        }
    }

    /// A cached document's bytes, open (held in memory when the disk
    /// refused them).
    pub fn open(t: &TagContext, blob: &Blob) -> Result<OpenBlob> {
        let located = t.ctx.documents.locate(&blob.digest).map_err(Error::cache)?;
        Ok(OpenBlob {
            blob: *blob,
            file: Arc::new(located.file),
            in_memory: located.in_memory,
        })
    }
}
