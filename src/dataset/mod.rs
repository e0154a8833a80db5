//! The dataset as the filesystem sees it: tags loaded from the cache or the
//! server, each with its tree, documents, revalidation and file content.
//! Nothing here knows about FUSE.

mod changes;
mod documents;
mod entries;
mod error;
mod files;
mod generated;
mod missing;
mod releases;
mod revalidation;
mod tag;
mod tag_context;
#[cfg(test)]
mod tests;
mod tree;
mod version;
pub mod view;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::flight::{Schedule, SingleFlight};
use crate::names::{check_tag, is_release_tag};
use crate::remote::{Remote, WAITING_NOTICE};
use crate::stats::Stats;
use crate::store::{CacheDir, ContentStore, ObjectStore, OriginDir, Recovery};
use releases::Releases;

pub use entries::Entries;
pub use error::Error;
pub use tag::{LoadError, Refreshed, Stat, Tag};
pub use tag_context::Opened;
pub use view::Kind;

/// What the server changed: a whole tag, or one file of it (by its path
/// under the tag): other bytes, found absent, or (a map the manifest does
/// not name) found present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tag: String,
    pub file: Option<String>,
}

impl Change {
    #[cfg(test)]
    pub fn tag(tag: &str) -> Self {
        Change {
            tag: tag.to_string(),
            file: None,
        }
    }
}

type ChangeHook = Box<dyn Fn(Change) + Send + Sync>;

/// A revalidation that could not reach the server is tried again after this
/// (or after `--revalidate-every`, when shorter).
pub const REVALIDATION_RETRY: Duration = Duration::from_secs(60);

/// Runs `fetch`, a first contact with `url`; when no answer has come after
/// [`WAITING_NOTICE`], `say` is given a line saying so.
pub fn first_contact<T>(url: &str, say: &(dyn Fn(&str) + Sync), fetch: impl FnOnce() -> T) -> T {
    let notice = || say(&crate::remote::waiting_line(url));
    crate::wait::noticed_after(WAITING_NOTICE, notice, fetch)
}

/// Says in the log what a first contact during the session waits for.
pub fn log_waiting(line: &str) {
    tracing::warn!("{line}");
}

/// Why a pinned tag could not be loaded.
#[derive(Debug)]
pub struct PinnedError {
    pub message: String,
    /// The server could not be reached, or did not answer in time: a
    /// front end may say what else there is to do.
    pub unreachable: bool,
}

fn manifest_location() -> crate::format::Location {
    crate::format::Location::revision(crate::format::MANIFEST_FILE)
}

/// Downloads on threads of their own (for opens, which stop waiting for
/// them after a while while they go on), at most this many at a time: past
/// them an open does not fetch, and its first read downloads, as it would
/// anyway.
const BACKGROUND_FETCHES: usize = 8;

/// What every tag shares.
pub struct Context {
    /// The server, with requests counted in `stats`; it knows whether the
    /// mount is offline and whether the Hugging Face API is in use.
    pub remote: Arc<dyn Remote>,
    pub cache: CacheDir,
    /// The part of the cache that belongs to this server (tags, releases).
    pub origin: OriginDir,
    /// Manifests, catalogs and MaterialX maps.
    pub documents: ObjectStore,
    /// Texture content, deduplicated and capped.
    pub content: ContentStore,
    pub stats: Arc<Stats>,
    /// Texture files larger than this are refused (`--max-file-size`).
    pub max_file_size: u64,
    /// `--raw`: the server's tree only, nothing generated.
    pub raw: bool,
    /// `--revalidate-every`: a tag is revalidated again at the first open
    /// once this has passed since its last revalidation.
    pub revalidate_every: Option<Duration>,
    /// `--commits-only`: only revisions named by commit are served, none
    /// by a tag name (which can move).
    pub commits_only: bool,
    change_hooks: RwLock<Vec<ChangeHook>>,
    /// Downloads under way on threads of their own (see
    /// [`Tag::content_within`]).
    background_fetches: AtomicUsize,
}

impl Context {
    /// `cap`: the most bytes of texture content the cache may hold (0: no
    /// limit).
    pub fn new(remote: Arc<dyn Remote>, cache: CacheDir, cap: u64) -> Self {
        let stats = Arc::new(Stats::default());
        let (content, recovery) = ContentStore::load(&cache, cap);
        if recovery != Recovery::default() {
            tracing::info!("{recovery}");
        }
        Context {
            origin: cache.origin(&remote.origin()),
            remote: crate::remote::for_session(remote, stats.clone()),
            documents: cache.documents(),
            cache,
            content,
            stats,
            max_file_size: u64::MAX,
            raw: false,
            revalidate_every: None,
            commits_only: false,
            change_hooks: RwLock::new(Vec::new()),
            background_fetches: AtomicUsize::new(0),
        }
    }

    pub fn with_max_file_size(mut self, limit: u64) -> Self {
        self.max_file_size = limit;
        self
    }

    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    pub fn revalidate_every(mut self, period: Option<Duration>) -> Self {
        self.revalidate_every = period;
        self
    }

    pub fn commits_only(mut self, commits_only: bool) -> Self {
        self.commits_only = commits_only;
        self
    }

    /// Whether a revision called `name` may be served: any, unless only
    /// commits are.
    pub fn serves(&self, name: &str) -> bool {
        !self.commits_only || crate::names::is_commit(name)
    }

    /// Whether no revision of the mount can become another in the
    /// session: offline (nothing is asked), or every revision a commit.
    /// A file may still be found absent on the server, which changes the
    /// documents generated beside it.
    pub fn revisions_fixed(&self) -> bool {
        self.commits_only || self.remote.is_offline()
    }

    /// When a tag's manifest is revalidated again: after the period, and
    /// after a check that could not reach the server once the retry pause
    /// (or the period, when shorter) has passed.
    pub(crate) fn schedule(&self) -> Schedule {
        let retry_after = match self.revalidate_every {
            Some(period) => period.min(REVALIDATION_RETRY),
            None => REVALIDATION_RETRY,
        };
        Schedule {
            retry_after,
            period: self.revalidate_every,
        }
    }

    /// A document is revalidated again when its tag is (it is re-armed
    /// then), or after a failed check, as the manifest is.
    pub(crate) fn document_schedule(&self) -> Schedule {
        Schedule::once(self.schedule().retry_after)
    }

    /// Counts a download on a thread of its own, unless
    /// [`BACKGROUND_FETCHES`] are under way already.
    fn start_background_fetch(&self) -> bool {
        self.background_fetches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < BACKGROUND_FETCHES).then_some(n + 1)
            })
            .is_ok()
    }

    fn end_background_fetch(&self) {
        self.background_fetches.fetch_sub(1, Ordering::AcqRel);
    }

    /// Called whenever a tag, or a file of it, is seen to change on the
    /// server (so that kernel caches can be invalidated).
    pub fn on_change(&self, hook: impl Fn(Change) + Send + Sync + 'static) {
        self.change_hooks.write().push(Box::new(hook));
    }

    /// Runs on the thread that found the change, before the operation that
    /// found it returns.
    fn changed(&self, change: Change) {
        for hook in self.change_hooks.read().iter() {
            hook(change.clone());
        }
    }
}

/// All tags of one mount.
pub struct Dataset {
    ctx: Arc<Context>,
    pinned: Vec<String>,
    tags: RwLock<HashMap<String, Arc<Tag>>>,
    /// Names the server answered 404 for, this session (or period), and
    /// when.
    missing: Mutex<HashMap<String, Instant>>,
    loads: SingleFlight<String, Result<Arc<Tag>, Error>>,
    releases: Releases,
}

impl Dataset {
    pub fn new(ctx: Arc<Context>, pinned: Vec<String>) -> Self {
        Dataset {
            releases: Releases::load(&ctx.origin),
            ctx,
            pinned,
            tags: RwLock::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            loads: SingleFlight::default(),
        }
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Loads every pinned tag; the error names the first that cannot be.
    /// A tag fetched from the server that has not answered after
    /// [`WAITING_NOTICE`] is announced through `say` (reading a cached
    /// one takes no time).
    pub fn load_pinned(&self, say: &(dyn Fn(&str) + Sync)) -> Result<(), PinnedError> {
        let failed = |message: String, unreachable: bool| PinnedError {
            message,
            unreachable,
        };
        for name in &self.pinned {
            if let Err(e) = check_tag(name) {
                return Err(failed(format!("--tag {name:?}: the name {e}"), false));
            }
            if self.tags.read().contains_key(name) {
                continue;
            }
            let url = self.ctx.remote.url(name, &manifest_location());
            let loaded = first_contact(&url, say, || Tag::load(self.ctx.clone(), name));
            let tag = loaded.map_err(|e| {
                let unreachable = matches!(e, LoadError::Unreachable(_));
                let message = match e {
                    LoadError::NotFound if crate::names::is_commit(name) => format!(
                        "commit {name} was not found: {url} answered 404; commits name revisions \
                         only on a server that keeps them (the Hugging Face Hub), not on a plain mirror"
                    ),
                    LoadError::NotFound => format!(
                        "tag {name} was not found: {url} answered 404; check --tag and --base-url (or MAT_VIS_TAG, MAT_VIS_DATASET and MAT_VIS_HF_BASE)"
                    ),
                    LoadError::Unreachable(why) | LoadError::Unavailable(why) => {
                        format!("cannot load tag {name} from {url}: {why}")
                    }
                };
                failed(message, unreachable)
            })?;
            self.tags.write().insert(name.clone(), Arc::new(tag));
        }
        Ok(())
    }

    /// A loaded tag, without loading anything.
    pub fn loaded(&self, name: &str) -> Option<Arc<Tag>> {
        self.tags.read().get(name).cloned()
    }

    /// The tag called `name`, loaded from the cache or the server if needed.
    /// Only pinned tags, cached tags and names shaped like a release are
    /// looked for; anything else is simply absent.
    pub fn tag(&self, name: &str) -> Result<Arc<Tag>, Error> {
        if let Some(tag) = self.loaded(name) {
            return Ok(tag);
        }
        if check_tag(name).is_err() || !self.ctx.serves(name) || self.is_missing(name) {
            return Err(Error::NotFound);
        }
        crate::wait::may_block()?;
        let known = self.pinned.iter().any(|p| p == name)
            || is_release_tag(name)
            || crate::names::is_commit(name)
            || self.ctx.origin.has_tag(name);
        if !known {
            return Err(Error::NotFound);
        }
        self.loads.run(&name.to_string(), || {
            if let Some(tag) = self.loaded(name) {
                return Ok(tag);
            }
            let url = self.ctx.remote.url(name, &manifest_location());
            match first_contact(&url, &log_waiting, || Tag::load(self.ctx.clone(), name)) {
                Ok(tag) => {
                    let tag = Arc::new(tag);
                    self.tags.write().insert(name.to_string(), tag.clone());
                    Ok(tag)
                }
                Err(LoadError::NotFound) => {
                    if crate::names::is_commit(name) {
                        tracing::info!(
                            tag = name,
                            "no such commit on the server: a commit names a revision only on a \
                             server that keeps commits (the Hugging Face Hub); a plain mirror has none"
                        );
                    } else {
                        tracing::info!(tag = name, "no such tag on the server");
                    }
                    self.missing
                        .lock()
                        .insert(name.to_string(), Instant::now());
                    Err(Error::NotFound)
                }
                Err(LoadError::Unreachable(why) | LoadError::Unavailable(why)) => Err(
                    Error::refused(url, format!("cannot load the tag: {why}")),
                ),
            }
        })
    }

    /// Whether the server answered 404 for `name` this session (or, with
    /// `--revalidate-every`, within the period).
    fn is_missing(&self, name: &str) -> bool {
        let period = self.ctx.revalidate_every;
        let mut missing = self.missing.lock();
        match missing.get(name) {
            Some(at) if period.is_some_and(|p| at.elapsed() >= p) => {
                missing.remove(name);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Revalidates tags now, as if a new session began for them
    /// (`matvisfs refresh`, SIGHUP): `None` for every loaded tag, when the
    /// names the server did not have and the list of releases are asked
    /// again too; a named tag that is not loaded is looked up first. The
    /// tags are revalidated at once, each answer with its tag's name.
    pub fn refresh(&self, names: Option<&[String]>) -> Vec<(String, Refreshed)> {
        let names: Vec<String> = match names {
            Some(names) => names.to_vec(),
            None => {
                self.missing.lock().clear();
                self.releases.rearm();
                let mut loaded: Vec<String> = self.tags.read().keys().cloned().collect();
                loaded.sort();
                loaded
            }
        };
        std::thread::scope(|scope| {
            let refreshes: Vec<_> = names
                .iter()
                .map(|name| scope.spawn(move || self.refresh_one(name)))
                .collect();
            names
                .iter()
                .zip(refreshes)
                .map(|(name, refresh)| {
                    let refreshed = refresh
                        .join()
                        .unwrap_or_else(|_| Refreshed::Failed("the check failed".into()));
                    (name.clone(), refreshed)
                })
                .collect()
        })
    }

    fn refresh_one(&self, name: &str) -> Refreshed {
        if let Some(tag) = self.loaded(name) {
            return tag.refresh();
        }
        if let Err(e) = check_tag(name) {
            return Refreshed::Failed(format!("the name {e}"));
        }
        if !self.ctx.serves(name) {
            return Refreshed::Failed(
                "not a commit: this mount serves only revisions named by commit (--commits-only)"
                    .to_string(),
            );
        }
        self.missing.lock().remove(name);
        match self.tag(name) {
            Ok(tag) if tag.was_fetched() => Refreshed::Changed(vec![
                "new in this mount: fetched from the server".to_string(),
            ]),
            // Loaded from the cache: revalidated as a new session would.
            Ok(tag) => tag.refresh(),
            Err(Error::NotFound) => Refreshed::Failed(format!(
                "not on the server: {} answered 404",
                self.ctx.remote.url(name, &manifest_location())
            )),
            Err(e) => Refreshed::Failed(e.to_string()),
        }
    }

    /// The session's statistics (`.matvisfs/stats.json`).
    pub fn stats_json(&self, started: std::time::SystemTime) -> serde_json::Value {
        let content = &self.ctx.content;
        let (files, bytes) = content.totals();
        let cache = serde_json::json!({
            "directory": self.ctx.cache.root(),
            "files": files,
            "bytes": bytes,
            "cap": content.cap(),
            "evictions": content.evictions(),
            "pending": content.pending(),
            "backlog_waits": content.backlog_waits(),
            "uncached_reads": content.uncached(),
            "uncached_bytes": content.uncached_bytes(),
        });
        let tags: serde_json::Map<String, serde_json::Value> = self
            .tags
            .read()
            .iter()
            .map(|(name, tag)| (name.clone(), tag.report()))
            .collect();
        self.ctx
            .stats
            .render(started, cache, serde_json::Value::Object(tags))
    }

    /// What the mount's root lists: pinned tags, tags loaded this session,
    /// tags with a cached manifest, and the dataset's releases (asked of the
    /// Hugging Face API once per session, where there is one).
    pub fn tag_names(&self) -> Result<Vec<String>, Error> {
        if !self.ctx.commits_only && self.releases.would_ask(&self.ctx) {
            crate::wait::may_block()?;
            self.releases.refresh(&self.ctx);
        }
        Ok(self.known_tag_names())
    }

    /// The newest release the mount knows (pinned, cached, loaded or listed
    /// by the Hub), for the root's `latest` link; `None` with `--raw`, or
    /// when a tag really is called `latest`.
    pub fn latest(&self) -> Result<Option<String>, Error> {
        if self.ctx.raw || self.ctx.commits_only || self.pinned.iter().any(|p| p == "latest") {
            return Ok(None);
        }
        let names = self.tag_names()?;
        Ok(crate::names::newest_release(names.iter().map(String::as_str)).map(str::to_string))
    }

    fn known_tag_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.pinned.iter().cloned().collect();
        names.extend(self.releases.known());
        names.extend(self.tags.read().keys().cloned());
        names.extend(self.ctx.origin.cached_tags());
        names.retain(|n| self.ctx.serves(n) && !self.is_missing(n));
        names.into_iter().collect()
    }
}
