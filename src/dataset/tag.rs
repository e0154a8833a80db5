//! One tag (release revision): its cached state, the documents that shape
//! its tree, and their revalidation, once per mount session.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use super::Context;
use super::tree_sizes::TreeSizes;
use super::view::{Kind, LoadedDoc, Lookup, Node, TagView};
use crate::digest::Sha256Digest;
use crate::error::FsError;
use crate::flight::{Gate, Gates, SingleFlight};
use crate::format::{
    Catalog, DocumentRole, MANIFEST_FILE, Manifest, Rowmap, check_materialx_map, parse_catalog,
    parse_manifest, parse_rowmap,
};
use crate::remote::{FetchError, GetOutcome, MemorySink, RemoteMeta, Validators};
use crate::store::{Blob, DocRecord, FileRecords, OpenBlob, TagState, TagStore};

/// Manifests and catalogs larger than this are refused.
const DOCUMENT_LIMIT: usize = 256 << 20;
/// A revalidation that could not reach the server is tried again after this.
const REVALIDATION_RETRY: Duration = Duration::from_secs(60);
/// How many skipped entries of one document are logged one by one.
const SKIPPED_LOGGED: usize = 10;

#[derive(Debug)]
pub enum LoadError {
    NotFound,
    Unavailable(String),
}

/// Attributes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
}

/// The result of opening a file.
#[derive(Debug)]
pub enum Opened {
    /// Content is in the cache and confirmed for the tag's current version.
    Ready(OpenBlob),
    /// Content is fetched on first read; its size and digest when known.
    Lazy {
        size: Option<u64>,
        digest: Option<Sha256Digest>,
    },
}

pub struct Tag {
    pub(super) name: Arc<str>,
    pub(super) ctx: Arc<Context>,
    store: TagStore,
    /// What is persisted. Lock order: `state` before `view`.
    pub(super) state: Mutex<TagState>,
    view: RwLock<Arc<TagView>>,
    manifest_gate: Gate,
    document_gates: Gates<String>,
    document_loads: SingleFlight<String, Result<LoadedDoc, FsError>>,
    /// Tiers found incomplete this session.
    pub(super) incomplete_tiers: Mutex<HashSet<String>>,
    pub(super) tier_checks: SingleFlight<String, Result<(), FsError>>,
    pub(super) records: FileRecords,
    pub(super) sizes: SingleFlight<String, Result<u64, FsError>>,
    pub(super) tree_sizes: TreeSizes,
    pub(super) downloads: SingleFlight<String, Result<OpenBlob, FsError>>,
    /// How this session's revalidation of the manifest went.
    revalidation: Mutex<&'static str>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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

fn parse_manifest_for(tag: &str, bytes: &[u8]) -> Result<Manifest, String> {
    let parsed = parse_manifest(bytes).map_err(|e| e.to_string())?;
    report_skipped(tag, MANIFEST_FILE, &parsed.skipped);
    Ok(parsed.value)
}

/// What a document holds for the tree.
type DocContent = (Option<Arc<Catalog>>, Option<Arc<Rowmap>>);

/// Checks a document's bytes; catalogs and rowmaps are parsed for the tree,
/// and a rowmap's container is located through the manifest.
fn parse_document(
    tag: &str,
    name: &str,
    role: DocumentRole,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<DocContent, String> {
    match role {
        DocumentRole::Catalog => {
            let parsed = parse_catalog(bytes).map_err(|e| e.to_string())?;
            report_skipped(tag, name, &parsed.skipped);
            Ok((Some(Arc::new(parsed.value)), None))
        }
        DocumentRole::MaterialX => check_materialx_map(bytes)
            .map(|()| (None, None))
            .map_err(|e| e.to_string()),
        DocumentRole::Rowmap => {
            let parsed = parse_rowmap(bytes).map_err(|e| e.to_string())?;
            report_skipped(tag, name, &parsed.skipped);
            let mut rowmap = parsed.value;
            rowmap.container = manifest
                .container_part(name)
                .and_then(|part| part.container_location(rowmap.container.as_deref()));
            if rowmap.container.is_none() {
                tracing::warn!(tag, document = name, "the rowmap names no container");
            }
            Ok((None, Some(Arc::new(rowmap))))
        }
    }
}

/// What a conditional GET of a document found.
enum Refresh {
    Unchanged,
    Changed(Vec<u8>, RemoteMeta),
    Gone,
    Failed(FetchError),
}

impl Tag {
    /// Opens a tag from the cache or, when it has no usable cached manifest,
    /// from the server (which then counts as this session's revalidation).
    pub fn load(ctx: Arc<Context>, name: &str) -> Result<Tag, LoadError> {
        let store = ctx.origin.tag(name);
        let stored = store.load().unwrap_or_else(|e| {
            tracing::warn!(
                tag = name,
                "the cached state is unreadable ({e}); starting afresh"
            );
            None
        });
        let records = store.records();
        if let Some(state) = &stored {
            if let Some(record) = &state.manifest {
                let cached = ctx
                    .documents
                    .read(&record.blob())
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| parse_manifest_for(name, &bytes));
                match cached {
                    Ok(manifest) => {
                        let blob = record.blob();
                        return Ok(Tag::new(
                            ctx,
                            name,
                            store,
                            state.clone(),
                            manifest,
                            blob,
                            records,
                        ));
                    }
                    Err(why) => tracing::warn!(
                        tag = name,
                        "the cached manifest is unusable ({why}); fetching it again"
                    ),
                }
            }
        }
        if ctx.offline {
            return Err(LoadError::Unavailable(
                "it is not cached and the mount is offline".into(),
            ));
        }
        let mut sink = MemorySink::with_limit(DOCUMENT_LIMIT);
        let meta = match ctx
            .remote
            .get(name, MANIFEST_FILE, &Validators::default(), &mut sink)
        {
            Ok(GetOutcome::Fetched(meta)) => meta,
            Ok(GetOutcome::NotModified) => {
                return Err(LoadError::Unavailable(
                    "the server answered 304 to an unconditional request".into(),
                ));
            }
            Err(FetchError::NotFound) => return Err(LoadError::NotFound),
            Err(e) => return Err(LoadError::Unavailable(e.to_string())),
        };
        let manifest = parse_manifest_for(name, &sink.bytes)
            .map_err(|e| LoadError::Unavailable(format!("the manifest is unusable: {e}")))?;
        let blob = ctx
            .documents
            .put_bytes(&sink.bytes)
            .map_err(|e| LoadError::Unavailable(format!("cannot write the cache: {e}")))?;
        let mut state = stored.unwrap_or_default();
        // Past every generation any surviving file record may carry.
        state.generation = state.generation.max(records.max_generation()) + 1;
        state.changed_at = unix_now();
        state.manifest = Some(DocRecord::new(blob, meta.validators()));
        state.complete_tiers.clear();
        if let Err(e) = store.save(&state) {
            tracing::warn!(tag = name, "cannot save the tag's state: {e}");
        }
        tracing::info!(tag = name, "fetched the manifest");
        let tag = Tag::new(ctx, name, store, state, manifest, blob, records);
        tag.manifest_gate.mark_passed();
        tag.outcome("fetched");
        Ok(tag)
    }

    fn new(
        ctx: Arc<Context>,
        name: &str,
        store: TagStore,
        state: TagState,
        manifest: Manifest,
        manifest_blob: Blob,
        records: FileRecords,
    ) -> Tag {
        let view = TagView {
            generation: state.generation,
            mtime: UNIX_EPOCH + Duration::from_secs(state.changed_at),
            manifest: Arc::new(manifest),
            manifest_blob,
            documents: HashMap::new(),
        };
        Tag {
            name: name.into(),
            ctx,
            store,
            state: Mutex::new(state),
            view: RwLock::new(Arc::new(view)),
            manifest_gate: Gate::default(),
            document_gates: Gates::default(),
            document_loads: SingleFlight::default(),
            incomplete_tiers: Mutex::new(HashSet::new()),
            tier_checks: SingleFlight::default(),
            records,
            sizes: SingleFlight::default(),
            tree_sizes: TreeSizes::default(),
            downloads: SingleFlight::default(),
            revalidation: Mutex::new("pending"),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn view(&self) -> Arc<TagView> {
        self.view.read().clone()
    }

    pub(super) fn save_state(&self, state: &TagState) {
        if let Err(e) = self.store.save(state) {
            tracing::warn!(tag = %self.name, "cannot save the tag's state: {e}");
        }
    }

    /// Asks `question` of the current tree, loading the catalog it needs
    /// first when it needs one.
    fn ask<T>(
        &self,
        path: &str,
        question: impl Fn(&Arc<TagView>) -> Lookup<T>,
    ) -> Result<T, FsError> {
        // Each round loads one more document (a container tier may have
        // several rowmaps); asking for one twice means it did not help.
        let mut loaded = HashSet::new();
        loop {
            match question(&self.view()) {
                Lookup::Found(answer) => return Ok(answer),
                Lookup::Missing => return Err(FsError::NotFound),
                Lookup::NeedsDocument(name) => {
                    if !loaded.insert(name.clone()) {
                        return Err(FsError::Io(format!(
                            "tag {}: no answer for {path}",
                            self.name
                        )));
                    }
                    self.document(&name)?;
                }
            }
        }
    }

    /// A tree in which `path` resolves (its catalog loaded) or is missing.
    fn view_for(&self, path: &str) -> Result<Arc<TagView>, FsError> {
        self.ask(path, |view| view.resolve(path).map(|_| view.clone()))
    }

    /// Whether `path` exists in the current tree, as far as is known without
    /// loading anything (`None`: its catalog is not loaded).
    pub fn exists_now(&self, path: &str) -> Option<bool> {
        match self.view().resolve(path) {
            Lookup::Found(_) => Some(true),
            Lookup::Missing => Some(false),
            Lookup::NeedsDocument(_) => None,
        }
    }

    /// Attributes known without loading anything or asking the server;
    /// `None` when a catalog must be loaded or a size asked for.
    pub fn peek_stat(&self, path: &str) -> Option<Result<Stat, FsError>> {
        let view = self.view();
        let node = match view.resolve(path) {
            Lookup::Found(node) => node,
            Lookup::Missing => return Some(Err(FsError::NotFound)),
            Lookup::NeedsDocument(_) => return None,
        };
        let size = match &node {
            Node::TagRoot | Node::Source | Node::Tier | Node::Material => 0,
            Node::Manifest => view.manifest_blob.size,
            Node::Document(name) => view.documents.get(*name)?.blob.size,
            Node::Texture(texture) => self.known_size(path, texture, view.generation)?,
        };
        Some(Ok(Stat {
            kind: node.kind(),
            size,
            mtime: view.mtime,
        }))
    }

    /// A listing that needs no catalog to be loaded, if so.
    pub fn peek_list(&self, path: &str) -> Option<Result<Vec<(String, Kind)>, FsError>> {
        match self.view().list(path) {
            Lookup::Found(Some(entries)) => Some(Ok(entries)),
            Lookup::Found(None) => Some(Err(FsError::NotDir)),
            Lookup::Missing => Some(Err(FsError::NotFound)),
            Lookup::NeedsDocument(_) => None,
        }
    }

    /// Whether opening `path` may wait on the server: the first open of the
    /// session revalidates the manifest and the file's catalog.
    pub fn open_may_block(&self, path: &str) -> bool {
        if !self.manifest_gate.is_settled(REVALIDATION_RETRY) {
            return true;
        }
        let view = self.view();
        let document = match view.resolve(path) {
            Lookup::Found(Node::Texture(texture)) => texture.document,
            Lookup::Found(Node::Document(name)) => name,
            Lookup::Found(_) | Lookup::Missing => return false,
            Lookup::NeedsDocument(_) => return true,
        };
        !self
            .document_gates
            .get(&document.to_string())
            .is_settled(REVALIDATION_RETRY)
    }

    pub fn stat(&self, path: &str) -> Result<Stat, FsError> {
        if let Some(known) = self.peek_stat(path) {
            return known;
        }
        let view = self.view_for(path)?;
        let node = view.node(path)?;
        let size = match &node {
            Node::TagRoot | Node::Source | Node::Tier | Node::Material => 0,
            Node::Manifest => view.manifest_blob.size,
            Node::Document(name) => self.document(name)?.blob.size,
            Node::Texture(texture) => self.texture_size(path, texture, view.generation)?,
        };
        Ok(Stat {
            kind: node.kind(),
            size,
            mtime: view.mtime,
        })
    }

    pub fn list(&self, path: &str) -> Result<Vec<(String, Kind)>, FsError> {
        self.ask(path, |view| view.list(path))?
            .ok_or(FsError::NotDir)
    }

    /// Opens a file: revalidates the tag (and the catalog that describes the
    /// file) once per session, then says whether the content is ready.
    pub fn open(&self, path: &str) -> Result<Opened, FsError> {
        self.revalidate();
        let view = self.view_for(path)?;
        match view.node(path)? {
            Node::Manifest => Ok(Opened::Ready(self.open_document(&view.manifest_blob)?)),
            Node::Document(name) => {
                self.revalidate_document(name);
                Ok(Opened::Ready(
                    self.open_document(&self.document(name)?.blob)?,
                ))
            }
            Node::Texture(texture) => {
                self.revalidate_document(texture.document);
                // The catalog may just have changed: look again.
                let view = self.view_for(path)?;
                let Node::Texture(texture) = view.node(path)? else {
                    return Err(FsError::NotFound);
                };
                Ok(self.opened_texture(path, &texture, view.generation))
            }
            Node::TagRoot | Node::Source | Node::Tier | Node::Material => Err(FsError::IsDir),
        }
    }

    /// Content of a file opened as [`Opened::Lazy`].
    pub fn content(&self, path: &str) -> Result<OpenBlob, FsError> {
        let view = self.view_for(path)?;
        match view.node(path)? {
            Node::Manifest => self.open_document(&view.manifest_blob),
            Node::Document(name) => self.open_document(&self.document(name)?.blob),
            Node::Texture(texture) => self.texture_content(path, &texture, view.generation),
            Node::TagRoot | Node::Source | Node::Tier | Node::Material => Err(FsError::IsDir),
        }
    }

    /// A source's parsed catalog, loaded if needed.
    pub fn catalog(&self, name: &str) -> Result<Arc<Catalog>, FsError> {
        self.document(name)?.catalog.ok_or(FsError::NotFound)
    }

    fn open_document(&self, blob: &Blob) -> Result<OpenBlob, FsError> {
        match self.ctx.documents.open(&blob.digest) {
            Ok(file) => Ok(OpenBlob {
                blob: *blob,
                file: Arc::new(file),
            }),
            Err(e) => {
                tracing::error!(tag = %self.name, "cannot open a cached document: {e}");
                Err(FsError::Io(format!("cannot open a cached document: {e}")))
            }
        }
    }

    /// How this session's revalidation went, the manifest's ETag and the
    /// tag's generation, for the statistics.
    pub fn report(&self) -> serde_json::Value {
        let state = self.state.lock();
        serde_json::json!({
            "revalidation": *self.revalidation.lock(),
            "manifest_etag": state.manifest.as_ref().and_then(|m| m.validators.etag.clone()),
            "generation": state.generation,
        })
    }

    fn outcome(&self, outcome: &'static str) {
        *self.revalidation.lock() = outcome;
    }

    /// Revalidates the manifest, once per session.
    pub fn revalidate(&self) {
        self.manifest_gate
            .pass(REVALIDATION_RETRY, || self.revalidate_manifest());
    }

    pub fn revalidate_document(&self, name: &str) {
        self.document_gates
            .get(&name.to_string())
            .pass(REVALIDATION_RETRY, || self.revalidate_document_now(name));
    }

    fn document_role(&self, name: &str) -> Option<DocumentRole> {
        self.view().manifest.document_role(name)
    }

    /// A catalog, MaterialX or rowmap document: from memory, the cache, or
    /// the server.
    pub fn document(&self, name: &str) -> Result<LoadedDoc, FsError> {
        if let Some(doc) = self.view().documents.get(name) {
            return Ok(doc.clone());
        }
        let role = self.document_role(name).ok_or(FsError::NotFound)?;
        self.document_loads.run(&name.to_string(), || {
            if let Some(doc) = self.view().documents.get(name) {
                return Ok(doc.clone());
            }
            let record = self.state.lock().documents.get(name).cloned();
            if let Some(record) = record {
                let cached = self
                    .ctx
                    .documents
                    .read(&record.blob())
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        parse_document(&self.name, name, role, &bytes, &self.view().manifest)
                    });
                match cached {
                    Ok((catalog, rowmap)) => {
                        let doc = LoadedDoc { blob: record.blob(), catalog, rowmap };
                        self.install_document(name, doc.clone());
                        return Ok(doc);
                    }
                    Err(why) => tracing::warn!(tag = %self.name, document = name, "the cached copy is unusable ({why}); fetching it again"),
                }
            }
            self.fetch_document(name, role)
        })
    }

    fn fetch_document(&self, name: &str, role: DocumentRole) -> Result<LoadedDoc, FsError> {
        let url = self.ctx.remote.url(&self.name, name);
        if self.ctx.offline {
            tracing::warn!(tag = %self.name, document = name, "not cached, and the mount is offline");
            return Err(FsError::Io(format!(
                "{url} is not cached and the mount is offline"
            )));
        }
        let mut sink = MemorySink::with_limit(DOCUMENT_LIMIT);
        let meta = match self
            .ctx
            .remote
            .get(&self.name, name, &Validators::default(), &mut sink)
        {
            Ok(GetOutcome::Fetched(meta)) => meta,
            Ok(GetOutcome::NotModified) => {
                return Err(FsError::Io(format!("{url}: unexpected 304")));
            }
            Err(e) => {
                tracing::warn!(tag = %self.name, document = name, "cannot fetch {url}: {e}");
                return Err(FsError::Io(format!("cannot fetch {url}: {e}")));
            }
        };
        let manifest = self.view().manifest.clone();
        let content = parse_document(&self.name, name, role, &sink.bytes, &manifest)
            .map_err(|why| {
                tracing::error!(tag = %self.name, document = name, "the server sent an unusable document: {why}");
                FsError::Io(format!("{url} is unusable: {why}"))
            })?;
        let doc = self.keep_document(name, content, &sink.bytes, &meta, |state, doc| {
            self.save_state(state);
            doc
        })?;
        self.document_gates.get(&name.to_string()).mark_passed();
        tracing::info!(tag = %self.name, document = name, "fetched");
        self.install_document(name, doc.clone());
        Ok(doc)
    }

    fn put_document_bytes(&self, bytes: &[u8]) -> Result<Blob, FsError> {
        self.ctx.documents.put_bytes(bytes).map_err(|e| {
            tracing::error!(tag = %self.name, "cannot write to the cache: {e}");
            FsError::Io(format!("cannot write to the cache: {e}"))
        })
    }

    /// Stores a document's bytes and records them, with the validators to
    /// revalidate them by, under `name`; `then` runs with the tag's state
    /// still locked, so that nothing sees the record before it took effect.
    fn keep_document<R>(
        &self,
        name: &str,
        (catalog, rowmap): DocContent,
        bytes: &[u8],
        meta: &RemoteMeta,
        then: impl FnOnce(&mut TagState, LoadedDoc) -> R,
    ) -> Result<R, FsError> {
        let blob = self.put_document_bytes(bytes)?;
        let mut state = self.state.lock();
        state
            .documents
            .insert(name.to_string(), DocRecord::new(blob, meta.validators()));
        let doc = LoadedDoc {
            blob,
            catalog,
            rowmap,
        };
        Ok(then(&mut state, doc))
    }

    fn install_document(&self, name: &str, doc: LoadedDoc) {
        let mut view = self.view.write();
        if view.documents.contains_key(name) {
            return;
        }
        let mut documents = view.documents.clone();
        documents.insert(name.to_string(), doc);
        *view = Arc::new(TagView {
            generation: view.generation,
            mtime: view.mtime,
            manifest: view.manifest.clone(),
            manifest_blob: view.manifest_blob,
            documents,
        });
    }

    /// One conditional GET of a document against what is stored.
    fn refresh(&self, path: &str, record: &DocRecord) -> Refresh {
        let mut sink = MemorySink::with_limit(DOCUMENT_LIMIT);
        match self
            .ctx
            .remote
            .get(&self.name, path, &record.validators, &mut sink)
        {
            Ok(GetOutcome::NotModified) => Refresh::Unchanged,
            Ok(GetOutcome::Fetched(meta)) => {
                if Sha256Digest::of(&sink.bytes) != record.sha256 {
                    return Refresh::Changed(sink.bytes, meta);
                }
                // Same bytes under new validators (or none): remember them so
                // that the next session can get a 304.
                let validators = meta.validators();
                if validators != record.validators {
                    let mut state = self.state.lock();
                    let stored = if path == MANIFEST_FILE {
                        state.manifest.as_mut()
                    } else {
                        state.documents.get_mut(path)
                    };
                    if let Some(stored) = stored {
                        stored.validators = validators;
                    }
                    self.save_state(&state);
                }
                Refresh::Unchanged
            }
            Err(FetchError::NotFound) => Refresh::Gone,
            Err(e) => Refresh::Failed(e),
        }
    }

    /// Returns whether the check completed (false: try again later).
    fn revalidate_manifest(&self) -> bool {
        let record = self.state.lock().manifest.clone();
        let Some(record) = record else {
            return true;
        };
        if self.ctx.offline {
            tracing::info!(tag = %self.name, "offline: serving the cached manifest");
            self.outcome("offline");
            return true;
        }
        match self.refresh(MANIFEST_FILE, &record) {
            Refresh::Unchanged => {
                tracing::info!(tag = %self.name, "revalidated: unchanged on the server");
                self.outcome("unchanged");
                true
            }
            Refresh::Changed(bytes, meta) => {
                match parse_manifest_for(&self.name, &bytes) {
                    Ok(manifest) => {
                        self.replace_manifest(manifest, &bytes, meta);
                        self.outcome("changed");
                    }
                    Err(why) => {
                        tracing::error!(
                            tag = %self.name,
                            "the server sent an unusable manifest ({why}); keeping the cached copy"
                        );
                        self.outcome("failed");
                    }
                }
                true
            }
            Refresh::Gone => {
                tracing::warn!(tag = %self.name, "the tag is no longer on the server; serving the cached copy");
                self.outcome("failed");
                true
            }
            Refresh::Failed(e) => {
                tracing::warn!(tag = %self.name, "cannot revalidate ({e}); serving the cached copy");
                self.outcome(if e.is_unreachable() {
                    "offline"
                } else {
                    "failed"
                });
                false
            }
        }
    }

    fn replace_manifest(&self, manifest: Manifest, bytes: &[u8], meta: RemoteMeta) {
        let Ok(blob) = self.put_document_bytes(bytes) else {
            return;
        };
        let manifest = Arc::new(manifest);
        {
            let mut state = self.state.lock();
            state.manifest = Some(DocRecord::new(blob, meta.validators()));
            self.start_generation(&mut state);
            let mut view = self.view.write();
            let documents = view
                .documents
                .iter()
                .filter(|(name, _)| manifest.document_owner(name).is_some())
                .map(|(name, doc)| (name.clone(), doc.clone()))
                .collect();
            *view = Arc::new(TagView {
                generation: state.generation,
                mtime: UNIX_EPOCH + Duration::from_secs(state.changed_at),
                manifest,
                manifest_blob: blob,
                documents,
            });
        }
        tracing::warn!(
            tag = %self.name,
            "the tag changed on the server: its manifest differs from the cached copy; \
             files cached from the old version are checked again before they are served"
        );
        self.ctx.changed(&self.name, None);
    }

    /// Begins a new version of the tag: every file record and tier answer
    /// from before must be confirmed again.
    fn start_generation(&self, state: &mut TagState) {
        state.generation += 1;
        state.changed_at = unix_now();
        state.complete_tiers.clear();
        self.incomplete_tiers.lock().clear();
        self.save_state(state);
    }

    fn revalidate_document_now(&self, name: &str) -> bool {
        let Some(role) = self.document_role(name) else {
            return true;
        };
        let record = self.state.lock().documents.get(name).cloned();
        let Some(record) = record else {
            // Never fetched: the first fetch is fresh by definition.
            return self.document(name).is_ok();
        };
        if self.ctx.offline {
            return true;
        }
        match self.refresh(name, &record) {
            Refresh::Unchanged => {
                tracing::info!(tag = %self.name, document = name, "revalidated: unchanged on the server");
                true
            }
            Refresh::Changed(bytes, meta) => {
                match parse_document(&self.name, name, role, &bytes, &self.view().manifest) {
                    Ok(content) => self.replace_document(name, content, &bytes, meta),
                    Err(why) => tracing::error!(
                        tag = %self.name,
                        document = name,
                        "the server sent an unusable document ({why}); keeping the cached copy"
                    ),
                }
                true
            }
            Refresh::Gone => {
                tracing::warn!(tag = %self.name, document = name, "no longer on the server; serving the cached copy");
                true
            }
            Refresh::Failed(e) => {
                tracing::warn!(tag = %self.name, document = name, "cannot revalidate ({e}); serving the cached copy");
                false
            }
        }
    }

    fn replace_document(&self, name: &str, content: DocContent, bytes: &[u8], meta: RemoteMeta) {
        let kept = self.keep_document(name, content, bytes, &meta, |state, doc| {
            self.start_generation(state);
            let mut view = self.view.write();
            let mut documents = view.documents.clone();
            documents.insert(name.to_string(), doc);
            *view = Arc::new(TagView {
                generation: state.generation,
                mtime: UNIX_EPOCH + Duration::from_secs(state.changed_at),
                manifest: view.manifest.clone(),
                manifest_blob: view.manifest_blob,
                documents,
            });
        });
        if kept.is_err() {
            return;
        }
        tracing::warn!(
            tag = %self.name,
            document = name,
            "the tag changed on the server: this document differs from the cached copy; \
             files cached from the old version are checked again before they are served"
        );
        self.ctx.changed(&self.name, None);
    }
}
