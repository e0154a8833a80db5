//! One tag (release revision): a thin front over the parts that own its
//! state. [`TagContext`] holds what they all read (the tag's version: the
//! current view and the persisted state); [`Documents`] loads and
//! revalidates the documents, [`Revalidation`] decides when the manifest is
//! revalidated, [`Files`] the texture files' sizes and content.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::Context;
use super::documents::{Documents, NotDownloaded, first_download, parse_manifest_for};
use super::entries::Entries;
use super::error::{Error, Result};
use super::files::Files;
use super::generated;
use super::revalidation::Revalidation;
use super::tag_context::{Opened, TagContext};
use super::tree::{GeneratedRef, Lookup, Node, TextureRef};
use super::version::{ManifestSource, TagVersion};
use super::view::{Kind, TagView};
use crate::digest::Sha256Digest;
use crate::format::{Location, MANIFEST_FILE};
use crate::remote::{FetchError, RemoteMeta};
use crate::store::{Blob, DocRecord, FileRecords, OpenBlob};

/// What revalidating a tag on request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    Unchanged,
    /// The changes found, described.
    Changed(Vec<String>),
    /// Why the tag could not be revalidated (the cached copy is served).
    Failed(String),
}

#[derive(Debug)]
pub enum LoadError {
    NotFound,
    /// The server could not be reached, or did not answer in time, or
    /// answered that it cannot serve now (5xx, 429).
    Unreachable(String),
    Unavailable(String),
}

/// Attributes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
}

/// A file of the tree, by what its bytes are read from.
enum FileNode<'v> {
    /// The manifest, or a document it names: the server's bytes as they are.
    Document(&'v str),
    Texture(TextureRef<'v>),
    Generated(GeneratedRef<'v>),
}

impl<'v> FileNode<'v> {
    /// The file `node` is; a directory, or a link (opened through what it
    /// points to), is none.
    fn of(node: Node<'v>) -> Result<FileNode<'v>> {
        match node {
            Node::Manifest => Ok(FileNode::Document(MANIFEST_FILE)),
            Node::Document(name) => Ok(FileNode::Document(name)),
            Node::Texture(texture) => Ok(FileNode::Texture(texture)),
            Node::Generated(generated) => Ok(FileNode::Generated(generated)),
            Node::Link(_) => Err(Error::NotFound),
            Node::TagRoot | Node::Source | Node::Tier | Node::Material | Node::Ladder => {
                Err(Error::IsDir)
            }
        }
    }

    /// The document revalidated before the file is opened: the one that
    /// describes it (the manifest is the tag's own revalidation).
    fn described_by(&self) -> Option<&'v str> {
        match *self {
            FileNode::Document(MANIFEST_FILE) => None,
            FileNode::Document(name) => Some(name),
            FileNode::Texture(texture) => Some(texture.document),
            FileNode::Generated(generated) => Some(generated.document),
        }
    }
}

pub struct Tag {
    context: TagContext,
    documents: Documents,
    revalidation: Revalidation,
    files: Files,
}

/// A name of 40 hex digits is served as a commit, which never changes and
/// is never revalidated. A server that resolves it to another commit has a
/// branch or tag of that name (git allows one), which can move: it is
/// refused rather than served as if it could not.
fn refuse_a_ref_named_like_a_commit(name: &str, resolved: Option<&str>) -> Result<(), LoadError> {
    match resolved {
        Some(commit) if crate::names::is_commit(name) && !commit.eq_ignore_ascii_case(name) => {
            Err(LoadError::Unavailable(format!(
                "the server resolves it to the commit {commit}: it is a branch or tag named \
                 like a commit, which can change, and is not served as one"
            )))
        }
        _ => Ok(()),
    }
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
                        refuse_a_ref_named_like_a_commit(name, state.commit.as_deref())?;
                        // A later version's state may never have been
                        // written (the disk refused it) while file records
                        // of it were: a version past them then begins, so
                        // that none is taken for this one's.
                        let version = TagVersion::first(
                            name,
                            store,
                            state.clone(),
                            records.max_generation(),
                            ManifestSource::Cached(record.blob()),
                            manifest,
                            ctx.raw,
                        );
                        return Ok(Tag::new(ctx, name, version, records, None));
                    }
                    Err(why) => tracing::warn!(
                        tag = name,
                        "the cached manifest is unusable ({why}); fetching it again"
                    ),
                }
            }
        }
        if ctx.remote.is_offline() {
            return Err(LoadError::Unavailable(
                "it is not cached and the mount is offline".into(),
            ));
        }
        let manifest_file = Location::revision(MANIFEST_FILE);
        let (bytes, meta) = match first_download(&*ctx.remote, name, &manifest_file) {
            Ok(fetched) => fetched,
            Err(NotDownloaded::NotModified) => {
                return Err(LoadError::Unavailable(
                    "the server answered 304 to an unconditional request".into(),
                ));
            }
            Err(NotDownloaded::Failed(FetchError::NotFound)) => return Err(LoadError::NotFound),
            Err(NotDownloaded::Failed(
                e @ (FetchError::Network(_) | FetchError::Status(429 | 500..)),
            )) => {
                return Err(LoadError::Unreachable(e.to_string()));
            }
            Err(NotDownloaded::Failed(e)) => return Err(LoadError::Unavailable(e.to_string())),
        };
        let manifest = parse_manifest_for(name, &bytes)
            .map_err(|e| LoadError::Unavailable(format!("the manifest is unusable: {e}")))?;
        refuse_a_ref_named_like_a_commit(name, meta.commit.as_deref())?;
        let blob = ctx
            .documents
            .put_bytes(&bytes)
            .map_err(|e| LoadError::Unavailable(format!("cannot write the cache: {e}")))?;
        // Past every generation any surviving file record may carry.
        let version = TagVersion::first(
            name,
            store,
            stored.unwrap_or_default(),
            records.max_generation(),
            ManifestSource::Fetched {
                record: DocRecord::new(blob, meta.validators()),
                commit: meta.commit.clone(),
            },
            manifest,
            ctx.raw,
        );
        tracing::info!(tag = name, "fetched the manifest");
        Ok(Tag::new(ctx, name, version, records, Some(meta)))
    }

    fn new(
        ctx: Arc<Context>,
        name: &str,
        version: TagVersion,
        records: FileRecords,
        // The answer of the manifest's download, when this load fetched it.
        fetched: Option<RemoteMeta>,
    ) -> Tag {
        let commit = fetched.as_ref().and_then(|meta| meta.commit.clone());
        let fetched = fetched.is_some();
        Tag {
            context: TagContext {
                name: name.into(),
                ctx,
                version,
                changes: Mutex::new(VecDeque::new()),
                changes_found: Default::default(),
                immutable: crate::names::is_commit(name),
                commit: Mutex::new(commit),
                records,
            },
            documents: Documents::default(),
            revalidation: Revalidation::new(fetched, crate::names::is_commit(name)),
            files: Files::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.context.name
    }

    pub fn view(&self) -> Arc<TagView> {
        self.context.version.view()
    }

    /// The current version of the tree, as listings are versioned by (see
    /// [`TagView::listing_version`]).
    pub fn listing_version(&self) -> u64 {
        self.context.version.view().listing_version()
    }

    /// Asks `question` of the current tree, loading the documents it needs
    /// first (a container tier may need several rowmaps).
    fn ask<T>(&self, path: &str, question: impl Fn(&Arc<TagView>) -> Lookup<T>) -> Result<T> {
        // Asking for one document twice in one version means loading it
        // did not help.
        let mut loaded = HashSet::new();
        loop {
            let view = self.view();
            match question(&view) {
                Lookup::Found(answer) => return Ok(answer),
                Lookup::Missing => return Err(Error::NotFound),
                Lookup::NeedsDocument(name) => {
                    if !loaded.insert((name.clone(), view.generation)) {
                        tracing::error!(
                            tag = self.name(),
                            path,
                            document = name,
                            "no answer after loading the document"
                        );
                        return Err(Error::NotFound);
                    }
                    match self.documents.get(&self.context, &name) {
                        Ok(_) => {}
                        // The server lacks it (the tree goes on without it),
                        // or the tag's version moved on meanwhile and no
                        // longer has it: ask the current tree again.
                        Err(Error::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// A view in which `path` resolves (its documents loaded) or is missing.
    fn view_for(&self, path: &str) -> Result<Arc<TagView>> {
        self.ask(path, |view| view.resolve(path).map(|_| view.clone()))
    }

    /// `answer` of the node at `path` in the current tree, its documents
    /// loaded first: resolved once where nothing needs loading.
    fn at<T>(
        &self,
        path: &str,
        answer: impl FnOnce(&Arc<TagView>, Node) -> Result<T>,
    ) -> Result<T> {
        let view = self.view();
        if let Lookup::Found(node) = view.resolve(path) {
            return answer(&view, node);
        }
        let view = self.view_for(path)?;
        let node = view.node(path)?;
        answer(&view, node)
    }

    /// What `path` is in the current tree, as far as is known without
    /// loading anything: `None` when its catalog is not loaded, `Some(None)`
    /// when it does not exist.
    pub fn kind_now(&self, path: &str) -> Option<Option<Kind>> {
        match self.view().resolve(path) {
            Lookup::Found(node) => Some(Some(node.kind())),
            Lookup::Missing => Some(None),
            Lookup::NeedsDocument(_) => None,
        }
    }

    /// Whether `path` is now a document the mount generates (whose bytes
    /// follow the files found absent, not only the catalog).
    pub fn is_generated_now(&self, path: &str) -> bool {
        matches!(self.view().resolve(path), Lookup::Found(Node::Generated(_)))
    }

    pub fn stat(&self, path: &str) -> Result<Stat> {
        self.at(path, |view, node| {
            let kind = node.kind();
            let size = match node {
                Node::Link(target) => target.len() as u64,
                _ if kind == Kind::Dir => 0,
                node => match FileNode::of(node)? {
                    FileNode::Document(name) => self.document_blob(view, name)?.size,
                    FileNode::Texture(texture) => self
                        .files
                        .request(&self.context, path, &texture, view.generation)
                        .size()?,
                    FileNode::Generated(generated) => generated::size(&generated),
                },
            };
            Ok(Stat {
                kind,
                size,
                mtime: view.mtime,
            })
        })
    }

    /// The entries of a directory, with the listing version of the view
    /// they come from.
    pub fn list(&self, path: &str) -> Result<(Entries, u64)> {
        self.ask(path, |view| {
            view.list(path)
                .map(|l| l.map(|l| (l, view.listing_version())))
        })?
        .ok_or(Error::NotDir)
    }

    /// The entries of a directory in the current tree, as far as is known
    /// without loading anything.
    pub fn entries_now(&self, path: &str) -> Option<Entries> {
        match self.view().list(path) {
            Lookup::Found(entries) => entries,
            Lookup::Missing | Lookup::NeedsDocument(_) => None,
        }
    }

    /// Opens a file: revalidates the tag (and the document that describes
    /// the file) once per session, or per period, then says which bytes the
    /// open is for.
    pub fn open(&self, path: &str, held: Option<Sha256Digest>) -> Result<Opened> {
        self.revalidate()?;
        self.at(path, |view, node| {
            let file = FileNode::of(node)?;
            if let Some(document) = file.described_by() {
                self.documents.revalidate(&self.context, document)?;
                // It may just have changed the tree: look again then.
                if !Arc::ptr_eq(view, &self.view()) {
                    return self.open_as_now(path, held);
                }
            }
            self.open_file(view, path, file, held)
        })
    }

    /// An open of `path` as the tag stands now, asking the server nothing
    /// (an open's second look, once its file was fetched for it). `held`:
    /// the version the kernel already reads for this file by itself, which
    /// needs nothing opened.
    pub fn open_as_now(&self, path: &str, held: Option<Sha256Digest>) -> Result<Opened> {
        self.at(path, |view, node| {
            self.open_file(view, path, FileNode::of(node)?, held)
        })
    }

    fn open_file(
        &self,
        view: &TagView,
        path: &str,
        file: FileNode,
        held: Option<Sha256Digest>,
    ) -> Result<Opened> {
        match file {
            FileNode::Document(name) => {
                let blob = self.document_blob(view, name)?;
                Ok(Opened::AtHand(Documents::open(&self.context, &blob)?))
            }
            FileNode::Texture(texture) => self
                .files
                .request(&self.context, path, &texture, view.generation)
                .opened(held),
            FileNode::Generated(generated) => {
                generated::open(&self.context, &generated).map(Opened::AtHand)
            }
        }
    }

    /// Where a link points, relative to its directory.
    pub fn link(&self, path: &str) -> Result<String> {
        match self.view_for(path)?.node(path)? {
            Node::Link(target) => Ok(target),
            _ => Err(Error::NotFound),
        }
    }

    /// The bytes of the manifest or of a document it names, in `view`.
    fn document_blob(&self, view: &TagView, name: &str) -> Result<Blob> {
        match name {
            MANIFEST_FILE => Ok(view.manifest_blob),
            _ => Ok(self.documents.get(&self.context, name)?.blob),
        }
    }

    /// The bytes of a file now; `expected` is the version an open is bound
    /// to, and other bytes are [`Error::Changed`].
    pub fn content(&self, path: &str, expected: Option<Sha256Digest>) -> Result<OpenBlob> {
        self.content_for(path, expected, None)
    }

    /// The bytes of `version`, which an open of `path` is bound to: from
    /// the cache when it holds them, whatever version the tag names now
    /// (the open reads its own version whole), else as [`Tag::content`]
    /// finds them.
    pub fn content_of(&self, path: &str, version: Option<Blob>) -> Result<OpenBlob> {
        self.content_for(path, version.map(|v| v.digest), version)
    }

    /// The cached bytes of `version` for `path`, an open's own, when the
    /// cache holds them, asking the server nothing.
    pub fn cached(&self, path: &str, version: Blob) -> Option<OpenBlob> {
        self.at(path, |view, node| match FileNode::of(node)? {
            FileNode::Texture(texture) => Ok(self
                .files
                .request(&self.context, path, &texture, view.generation)
                .cached(version)),
            _ => Ok(None),
        })
        .ok()
        .flatten()
    }

    fn content_for(
        &self,
        path: &str,
        expected: Option<Sha256Digest>,
        bound: Option<Blob>,
    ) -> Result<OpenBlob> {
        let open = self.at(path, |view, node| {
            Ok(match FileNode::of(node)? {
                FileNode::Document(name) => {
                    Documents::open(&self.context, &self.document_blob(view, name)?)?
                }
                FileNode::Texture(texture) => self
                    .files
                    .request(&self.context, path, &texture, view.generation)
                    .content_of(bound)?,
                FileNode::Generated(generated) => generated::open(&self.context, &generated)?,
            })
        })?;
        match expected {
            Some(digest) if digest != open.blob.digest => Err(Error::Changed {
                path: path.to_string(),
            }),
            _ => Ok(open),
        }
    }

    /// The bytes of a file, as [`Tag::content_of`] finds them, fetched on a
    /// thread of their own and waited for at most `wait`. `None`: they did
    /// not come in that time (the download goes on, and whoever asks for
    /// the bytes next joins it), or too many such downloads are under way
    /// to start another.
    pub fn content_within(
        self: &Arc<Self>,
        path: &str,
        expected: Option<Blob>,
        wait: Duration,
    ) -> Option<Result<OpenBlob>> {
        let ctx = &self.context.ctx;
        if !ctx.start_background_fetch() {
            return None;
        }
        /// Counts the download's end, however its thread ends.
        struct Ended(Arc<Tag>);
        impl Drop for Ended {
            fn drop(&mut self) {
                self.0.context.ctx.end_background_fetch();
            }
        }
        let ended = Ended(self.clone());
        let (answer, answered) = mpsc::sync_channel(1);
        let path = path.to_string();
        let spawned = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                let tag = &ended.0;
                // Nobody may be waiting any more.
                let _ = answer.send(tag.content_of(&path, expected));
            });
        // Without a thread, no download: the open's read makes it.
        spawned.ok()?;
        answered.recv_timeout(wait).ok()
    }

    /// Revalidates the manifest, unless it was this session (or period).
    pub fn revalidate(&self) -> Result<()> {
        self.revalidation
            .revalidate(&self.context, || self.rechecked())
    }

    /// The manifest was revalidated again: what the session remembers of
    /// the tag's documents and tiers is asked again at its next need, as at
    /// a session's start.
    fn rechecked(&self) {
        self.documents.rearm();
        self.files.forget_incomplete_tiers();
    }

    /// Revalidates the tag now, as if a new session began (`matvisfs
    /// refresh`): the manifest and the commit with one conditional request,
    /// then every document the session loaded, each with one; the others
    /// at their next need. Checks under way when it is asked do not count;
    /// concurrent callers share one. Changes found are announced (and the
    /// kernel told) before it returns.
    pub fn refresh(&self) -> Refreshed {
        let before = self.context.changes_found.load(Ordering::Relaxed);
        // A document checked by an open once the refresh began needs no
        // second request.
        let tickets = self.documents.tickets();
        let mut problems = Vec::new();
        match self
            .revalidation
            .revalidate_again(&self.context, || self.rechecked())
        {
            Err(why) => problems.push(why),
            Ok(()) => {
                let names = Documents::loaded(&self.context);
                // At once: each waits for the server at most its own bound.
                let failed: Vec<String> = std::thread::scope(|scope| {
                    let checks: Vec<_> = names
                        .iter()
                        .map(|name| {
                            let ticket = tickets.get(name).copied().unwrap_or(0);
                            scope.spawn(move || {
                                self.documents.revalidate_since(&self.context, name, ticket)
                            })
                        })
                        .collect();
                    checks
                        .into_iter()
                        .filter_map(|check| match check.join() {
                            Ok(result) => result.err(),
                            Err(_) => Some("the check failed".into()),
                        })
                        .collect()
                });
                problems.extend(failed);
            }
        }
        if !problems.is_empty() {
            return Refreshed::Failed(problems.join("; "));
        }
        let found = self.context.changes_found.load(Ordering::Relaxed) - before;
        if found == 0 {
            return Refreshed::Unchanged;
        }
        let changes = self.context.changes.lock();
        let shown = changes.len().min(found as usize);
        Refreshed::Changed(
            changes
                .iter()
                .skip(changes.len() - shown)
                .map(|c| format!("{}: {}", c.found_in, c.describe()))
                .collect(),
        )
    }

    /// Whether the tag's manifest was downloaded this session rather than
    /// read from the cache.
    pub fn was_fetched(&self) -> bool {
        self.revalidation.outcome() == super::revalidation::Outcome::Fetched
    }

    /// Revalidates a document, unless it was this session, and loads it.
    pub fn refresh_document(&self, name: &str) -> Result<()> {
        self.documents.revalidate(&self.context, name)?;
        self.documents.get(&self.context, name).map(drop)
    }

    /// How this session's revalidation went, the manifest's ETag, the
    /// tag's generation and the changes seen, for the statistics.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "revalidation": self.revalidation.outcome(),
            "manifest_etag": self.context.version.state().manifest_etag(),
            "generation": self.context.version.state().version().generation,
            // None: the server named no commit this session (not a Hub).
            "commit": *self.context.commit.lock(),
            "changes": serde_json::to_value(&*self.context.changes.lock()).unwrap_or_default(),
            "changes_found": self.context.changes_found.load(Ordering::Relaxed),
            "missing": missing_report(&self.view()),
        })
    }
}

/// The files of the current version found absent on the server this
/// session: how many, and the first few paths.
fn missing_report(view: &TagView) -> serde_json::Value {
    serde_json::json!({
        "count": view.absent.len(),
        "examples": view.absent.iter().take(super::missing::EXAMPLES).collect::<Vec<_>>(),
    })
}
