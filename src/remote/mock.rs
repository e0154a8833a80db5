//! An in-memory dataset server for unit tests: files by (tag, path), ETags
//! from content, LFS-like metadata for textures, a request log and faults.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use super::{
    Answer, BodySink, FetchError, GetOutcome, Remote, RemoteMeta, Request, Server, Validators,
};
use crate::digest::Sha256Digest;
use crate::format::hub::{TreeFile, TreeListing};
use crate::format::{Location, Slice, is_texture_path};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: &'static str,
    pub path: String,
    pub conditional: bool,
    /// "200", "304", "404" or the error.
    pub outcome: String,
}

#[derive(Default)]
pub struct MockRemote {
    files: Mutex<HashMap<(String, String), Vec<u8>>>,
    log: Mutex<Vec<Logged>>,
    down: Mutex<bool>,
    /// Errors returned by the next requests whose path contains the key.
    faults: Mutex<VecDeque<(String, FetchError)>>,
    /// Bytes served instead of the stored ones.
    corrupt: Mutex<HashMap<String, Vec<u8>>>,
    /// The Hugging Face API, when switched on: the refs it lists. Its
    /// answers then name each tag's commit, as the Hub does.
    hub_refs: Mutex<Option<Vec<String>>>,
    /// The revisions tree listings were asked for, in order.
    tree_revisions: Mutex<Vec<String>>,
    /// Entries a lying tree listing gives instead of the files' own
    /// (path → sha256 and size).
    tree_lies: Mutex<HashMap<String, (Option<Sha256Digest>, u64)>>,
    /// Its API is a mirror's in the Hub's layout, not the Hub's own.
    hub_mirror: Mutex<bool>,
    /// Tree listings say they were cut short (by a bound).
    tree_cut_short: Mutex<bool>,
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", Sha256Digest::of(bytes).to_hex())
}

impl MockRemote {
    pub fn put(&self, tag: &str, path: &str, bytes: impl Into<Vec<u8>>) {
        self.files
            .lock()
            .insert((tag.into(), path.into()), bytes.into());
    }

    pub fn remove(&self, tag: &str, path: &str) {
        self.files.lock().remove(&(tag.into(), path.into()));
    }

    pub fn set_down(&self, down: bool) {
        *self.down.lock() = down;
    }

    pub fn fail_next(&self, path_contains: &str, error: FetchError) {
        self.faults.lock().push_back((path_contains.into(), error));
    }

    pub fn serve_corrupt(&self, path: &str, bytes: &[u8]) {
        self.corrupt.lock().insert(path.into(), bytes.into());
    }

    /// Serves the Hugging Face API, with these refs.
    pub fn enable_hub(&self, refs: &[&str]) {
        *self.hub_refs.lock() = Some(refs.iter().map(|r| r.to_string()).collect());
    }

    /// The revisions tree listings were asked for.
    pub fn tree_revisions(&self) -> Vec<String> {
        self.tree_revisions.lock().clone()
    }

    /// Serves the API as a mirror in the Hub's layout would.
    pub fn as_hub_mirror(&self) {
        *self.hub_mirror.lock() = true;
    }

    /// Makes tree listings say they were cut short, their files all there.
    pub fn cut_tree_listings(&self) {
        *self.tree_cut_short.lock() = true;
    }

    /// Makes tree listings give `path` this sha256 and size.
    pub fn lie_in_tree(&self, path: &str, sha256: Option<Sha256Digest>, size: u64) {
        self.tree_lies.lock().insert(path.into(), (sha256, size));
    }

    /// The commit `tag` resolves to, with the Hub on: a digest of its files,
    /// so that any change of them moves it.
    pub fn commit_of(&self, tag: &str) -> Option<String> {
        self.hub_refs.lock().as_ref()?;
        let files = self.files.lock();
        let mut of_tag: Vec<(&String, &Vec<u8>)> = files
            .iter()
            .filter(|((t, _), _)| t == tag)
            .map(|((_, path), bytes)| (path, bytes))
            .collect();
        if of_tag.is_empty() {
            return None;
        }
        of_tag.sort();
        let mut text = String::new();
        for (path, bytes) in of_tag {
            text.push_str(&format!("{path} {}\n", Sha256Digest::of(bytes)));
        }
        Some(Sha256Digest::of(text.as_bytes()).to_hex()[..40].to_string())
    }

    /// The tag a revision names: itself, or the tag whose commit it is.
    fn tag_of_revision(&self, revision: &str) -> Option<String> {
        let tags: Vec<String> = {
            let files = self.files.lock();
            let mut tags: Vec<String> = files.keys().map(|(t, _)| t.clone()).collect();
            tags.sort();
            tags.dedup();
            tags
        };
        if tags.iter().any(|t| t == revision) {
            return Some(revision.to_string());
        }
        tags.into_iter()
            .find(|t| self.commit_of(t).as_deref() == Some(revision))
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().clear();
    }

    /// Requests of `method` for exactly `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|l| l.method == method && l.path == path)
            .count()
    }

    fn record(&self, method: &'static str, path: &str, conditional: bool, outcome: &str) {
        self.log.lock().push(Logged {
            method,
            path: path.into(),
            conditional,
            outcome: outcome.into(),
        });
    }

    /// Every request asks for its fault first, so the quick-mode rule is
    /// held here too, as a real server's transport holds it.
    fn take_fault(&self, path: &str) -> Option<FetchError> {
        crate::wait::must_not_be_quick(|| format!("a request for {path}"));
        if *self.down.lock() {
            return Some(FetchError::Network("connection refused".into()));
        }
        let mut faults = self.faults.lock();
        let index = faults
            .iter()
            .position(|(key, _)| path.contains(key.as_str()))?;
        faults.remove(index).map(|(_, e)| e)
    }

    fn meta(&self, tag: &str, path: &str, bytes: &[u8]) -> RemoteMeta {
        RemoteMeta {
            etag: Some(etag_of(bytes)),
            last_modified: None,
            size: Some(bytes.len() as u64),
            sha256: is_texture_path(path).then(|| Sha256Digest::of(bytes)),
            commit: self.commit_of(tag),
        }
    }

    fn not_modified(&self, tag: &str) -> GetOutcome {
        GetOutcome::NotModified(RemoteMeta {
            commit: self.commit_of(tag),
            ..RemoteMeta::default()
        })
    }
}

impl MockRemote {
    /// What a GET of either kind finds first: an injected fault, a 404, or a
    /// 304 (`None`); otherwise the bytes to serve.
    fn conditional_body(
        &self,
        method: &'static str,
        tag: &str,
        path: &str,
        validators: &Validators,
    ) -> Result<Option<Vec<u8>>, FetchError> {
        let conditional = validators.etag.is_some();
        if let Some(error) = self.take_fault(path) {
            self.record(method, path, conditional, &error.to_string());
            return Err(error);
        }
        let Some(bytes) = self.files.lock().get(&(tag.into(), path.into())).cloned() else {
            self.record(method, path, conditional, "404");
            return Err(FetchError::NotFound);
        };
        // A corrupting server is consistent: its headers describe what it sends.
        let served = self.corrupt.lock().get(path).cloned().unwrap_or(bytes);
        if conditional && validators.etag == Some(etag_of(&served)) {
            self.record(method, path, conditional, "304");
            return Ok(None);
        }
        Ok(Some(served))
    }
}

/// The requests, each as a server answers it.
impl Server for MockRemote {
    fn get(
        &self,
        tag: &str,
        file: &Location,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let path = file.key();
        let Some(served) = self.conditional_body("GET", tag, path, validators)? else {
            return Ok(self.not_modified(tag));
        };
        let meta = self.meta(tag, path, &served);
        self.record("GET", path, validators.etag.is_some(), "200");
        sink.reset()?;
        sink.write(&served)?;
        Ok(GetOutcome::Fetched(meta))
    }

    fn get_range(
        &self,
        tag: &str,
        file: &Location,
        slice: Slice,
        validators: &Validators,
        sink: &mut dyn BodySink,
    ) -> Result<GetOutcome, FetchError> {
        let path = file.key();
        let conditional = validators.etag.is_some();
        let Some(bytes) = self.conditional_body("RANGE", tag, path, validators)? else {
            return Ok(self.not_modified(tag));
        };
        let etag = Some(etag_of(&bytes));
        let start = slice.offset as usize;
        let Some(part) = bytes.get(start..start + slice.length as usize) else {
            self.record("RANGE", path, conditional, "416");
            return Err(FetchError::Status(416));
        };
        self.record("RANGE", path, conditional, "206");
        sink.reset()?;
        sink.write(part)?;
        Ok(GetOutcome::Fetched(RemoteMeta {
            etag,
            last_modified: None,
            size: Some(slice.length),
            sha256: None,
            commit: self.commit_of(tag),
        }))
    }

    fn head(&self, tag: &str, file: &Location) -> Result<RemoteMeta, FetchError> {
        let path = file.key();
        if let Some(error) = self.take_fault(path) {
            self.record("HEAD", path, false, &error.to_string());
            return Err(error);
        }
        let bytes = self.files.lock().get(&(tag.into(), path.into())).cloned();
        match bytes {
            Some(bytes) => {
                self.record("HEAD", path, false, "200");
                Ok(self.meta(tag, path, &bytes))
            }
            None => {
                self.record("HEAD", path, false, "404");
                Err(FetchError::NotFound)
            }
        }
    }

    fn release_refs(&self) -> Result<Vec<String>, FetchError> {
        let refs = self.hub_refs.lock().clone().ok_or(FetchError::NoApi)?;
        if let Some(error) = self.take_fault("api/refs") {
            self.record("API", "refs", false, &error.to_string());
            return Err(error);
        }
        self.record("API", "refs", false, "200");
        Ok(refs)
    }

    /// One page, however many files.
    fn tree(&self, revision: &str, dir: &str) -> Result<TreeListing, FetchError> {
        if self.hub_refs.lock().is_none() {
            return Err(FetchError::NoApi);
        }
        let logged = format!("tree/{dir}");
        self.tree_revisions.lock().push(revision.to_string());
        if let Some(error) = self.take_fault(&format!("api/{logged}")) {
            self.record("API", &logged, false, &error.to_string());
            return Err(error);
        }
        let Some(tag) = self.tag_of_revision(revision) else {
            self.record("API", &logged, false, "404");
            return Err(FetchError::NotFound);
        };
        let prefix = format!("{dir}/");
        let lies = self.tree_lies.lock().clone();
        let files: Vec<TreeFile> = self
            .files
            .lock()
            .iter()
            .filter(|((t, path), _)| *t == tag && path.starts_with(&prefix))
            .map(|((_, path), bytes)| {
                let etag = etag_of(bytes);
                let (sha256, size) = match lies.get(path) {
                    Some(&(sha256, size)) => (sha256, size),
                    None => (
                        is_texture_path(path).then(|| Sha256Digest::of(bytes)),
                        bytes.len() as u64,
                    ),
                };
                TreeFile {
                    path: path.clone(),
                    size,
                    etag: sha256
                        .map(|s| format!("\"{}\"", s.to_hex()))
                        .unwrap_or(etag),
                    sha256,
                }
            })
            .collect();
        let outcome = if files.is_empty() { "404" } else { "200" };
        self.record("API", &logged, false, outcome);
        match files.is_empty() {
            true => Err(FetchError::NotFound),
            false => Ok(TreeListing {
                files,
                pages: 1,
                cut_short: self
                    .tree_cut_short
                    .lock()
                    .then(|| "a bound, in a test".to_string()),
                from_hub: !*self.hub_mirror.lock(),
            }),
        }
    }
}

impl Remote for MockRemote {
    fn send(&self, request: Request<'_>, sink: &mut dyn BodySink) -> Result<Answer, FetchError> {
        super::serve(self, request, sink)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        format!("mock://{tag}/{}", file.key())
    }

    fn origin(&self) -> String {
        "mock:".into()
    }

    fn has_hub(&self) -> bool {
        self.hub_refs.lock().is_some()
    }
}
