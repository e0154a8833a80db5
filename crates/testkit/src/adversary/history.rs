//! What the adversary's server held, and when: every version of every path
//! with its lifetime, every publication, and the snapshot being served.
//! Times are durations since the run's clock started, the same clock the
//! load uses, so a read's start and end compare with publications directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blob::BlobSpec;
use super::views::{CatalogView, ManifestView};

/// The run's one clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }
}

impl Clock {
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// A texture's bytes and their sha256 (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texture {
    pub spec: BlobSpec,
    pub sha256: Arc<str>,
}

/// What a document says, for the oracle.
#[derive(Debug, Clone)]
pub enum DocView {
    Plain,
    Manifest(Arc<ManifestView>),
    Catalog(Arc<CatalogView>),
}

#[derive(Debug, Clone)]
pub struct Document {
    pub bytes: Arc<[u8]>,
    pub sha256: Arc<str>,
    pub view: DocView,
}

#[derive(Debug, Clone)]
pub enum Content {
    Texture(Texture),
    Document(Document),
}

impl Content {
    pub fn sha256(&self) -> &str {
        match self {
            Content::Texture(t) => &t.sha256,
            Content::Document(d) => &d.sha256,
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Content::Texture(t) => t.spec.size,
            Content::Document(d) => d.bytes.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Same bytes (a texture by its recipe, a document by its digest).
    pub fn same(&self, other: &Content) -> bool {
        match (self, other) {
            (Content::Texture(a), Content::Texture(b)) => a.spec == b.spec,
            (Content::Document(a), Content::Document(b)) => a.sha256 == b.sha256,
            _ => false,
        }
    }

    /// A short name for reports.
    pub fn label(&self) -> String {
        match self {
            Content::Texture(t) => t.spec.to_string(),
            Content::Document(d) => format!("document {} ({} B)", &d.sha256[..12], d.bytes.len()),
        }
    }
}

/// One version of a path: its bytes from `published` until `replaced`.
#[derive(Debug, Clone)]
pub struct Version {
    pub content: Content,
    pub published: Duration,
    pub replaced: Option<Duration>,
    /// The publication that introduced it, and the one that replaced it.
    pub publication: u64,
    pub replaced_by: Option<u64>,
}

impl Version {
    /// Whether it was served at some moment of `[from, to]` (`from` may
    /// be `None`: since the beginning).
    pub fn live_within(&self, from: Option<Duration>, to: Duration) -> bool {
        let starts_in_time = self.published <= to;
        let lasts_long_enough = match (self.replaced, from) {
            (Some(replaced), Some(from)) => replaced > from,
            _ => true,
        };
        starts_in_time && lasts_long_enough
    }

    pub fn lifetime(&self) -> String {
        match self.replaced {
            Some(end) => format!("[{}, {})", at(self.published), at(end)),
            None => format!("[{}, now)", at(self.published)),
        }
    }
}

/// A time of the run, as reports show it.
pub fn at(time: Duration) -> String {
    format!("+{:.3}s", time.as_secs_f64())
}

/// One atomic swap of the served files.
#[derive(Debug, Clone)]
pub struct Publication {
    pub seq: u64,
    pub at: Duration,
    /// What the mutation model did, in words.
    pub changes: Vec<String>,
    /// Paths whose bytes changed, appeared or went.
    pub paths: Vec<String>,
}

/// The files answered from, all of one publication.
#[derive(Debug)]
pub struct Snapshot {
    pub seq: u64,
    pub files: BTreeMap<String, Content>,
}

#[derive(Debug, Default)]
pub struct History {
    versions: BTreeMap<String, Vec<Version>>,
    publications: Vec<Publication>,
    /// Every texture blob ever published, by id and by sha256.
    blobs: HashMap<u64, Texture>,
    by_sha256: HashMap<Arc<str>, BlobSpec>,
    /// The latest blobs published of each size (a lying listing names
    /// other bytes of a file's size).
    by_size: HashMap<u64, Vec<Arc<str>>>,
}

impl History {
    /// Records the files of publication `seq` made at `at`; returns the
    /// paths that changed.
    pub fn record(
        &mut self,
        seq: u64,
        at: Duration,
        files: &BTreeMap<String, Content>,
        previous: &BTreeMap<String, Content>,
        changes: Vec<String>,
    ) -> Vec<String> {
        let mut paths = Vec::new();
        for (path, content) in files {
            if previous.get(path).is_some_and(|old| old.same(content)) {
                continue;
            }
            if let Some(old) = self.versions.get_mut(path).and_then(|v| v.last_mut()) {
                if old.replaced.is_none() {
                    old.replaced = Some(at);
                    old.replaced_by = Some(seq);
                }
            }
            if let Content::Texture(texture) = content {
                self.blobs.insert(texture.spec.id, texture.clone());
                self.by_sha256.insert(texture.sha256.clone(), texture.spec);
                let same_size = self.by_size.entry(texture.spec.size).or_default();
                if !same_size.contains(&texture.sha256) {
                    if same_size.len() == 4 {
                        same_size.remove(0);
                    }
                    same_size.push(texture.sha256.clone());
                }
            }
            self.versions
                .entry(path.clone())
                .or_default()
                .push(Version {
                    content: content.clone(),
                    published: at,
                    replaced: None,
                    publication: seq,
                    replaced_by: None,
                });
            paths.push(path.clone());
        }
        for path in previous.keys().filter(|p| !files.contains_key(*p)) {
            if let Some(old) = self.versions.get_mut(path).and_then(|v| v.last_mut()) {
                old.replaced = Some(at);
                old.replaced_by = Some(seq);
            }
            paths.push(path.clone());
        }
        self.publications.push(Publication {
            seq,
            at,
            changes,
            paths: paths.clone(),
        });
        paths
    }

    /// The history a mount of one commit sees: its snapshot's `files`, as
    /// the one publication, made at the start and never replaced.
    pub fn of_commit(files: &BTreeMap<String, Content>) -> History {
        let mut history = History::default();
        history.record(
            0,
            Duration::ZERO,
            files,
            &BTreeMap::new(),
            vec!["the commit".into()],
        );
        history
    }

    /// Every version `path` ever had, oldest first.
    pub fn versions(&self, path: &str) -> &[Version] {
        self.versions.get(path).map_or(&[], Vec::as_slice)
    }

    pub fn publications(&self) -> &[Publication] {
        &self.publications
    }

    pub fn publication(&self, seq: u64) -> Option<&Publication> {
        self.publications.get(seq as usize)
    }

    /// The version of `path` served by snapshot `seq`.
    pub fn version_in(&self, path: &str, seq: u64) -> Option<&Version> {
        self.versions(path)
            .iter()
            .rev()
            .find(|v| v.publication <= seq)
            .filter(|v| v.replaced_by.is_none_or(|by| by > seq))
    }

    pub fn blob(&self, id: u64) -> Option<&Texture> {
        self.blobs.get(&id)
    }

    /// The sha256 of the latest other blob published of `size`, if any.
    pub fn other_blob_of_size(&self, size: u64, except: &str) -> Option<Arc<str>> {
        self.by_size
            .get(&size)?
            .iter()
            .rev()
            .find(|sha| &***sha != except)
            .cloned()
    }

    pub fn blob_by_sha256(&self, sha256: &str) -> Option<BlobSpec> {
        self.by_sha256.get(sha256).copied()
    }

    /// The paths whose versions include `spec`, for "another path's bytes".
    pub fn paths_with(&self, spec: &BlobSpec) -> Vec<String> {
        self.versions
            .iter()
            .filter(|(_, versions)| {
                versions
                    .iter()
                    .any(|v| matches!(&v.content, Content::Texture(t) if t.spec == *spec))
            })
            .map(|(path, _)| path.clone())
            .collect()
    }

    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.versions.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adversary::blob::Format;

    fn texture(id: u64) -> Content {
        Content::Texture(Texture {
            spec: BlobSpec {
                id,
                format: Format::Png,
                size: 64,
            },
            sha256: format!("{id:064}").into(),
        })
    }

    #[test]
    fn versions_have_lifetimes_and_snapshots_name_them() {
        let mut history = History::default();
        let secs = Duration::from_secs;
        let one: BTreeMap<String, Content> = [("a.png".to_string(), texture(1))].into();
        history.record(0, secs(1), &one, &BTreeMap::new(), vec![]);
        let two: BTreeMap<String, Content> = [("a.png".to_string(), texture(2))].into();
        history.record(1, secs(5), &two, &one, vec![]);
        history.record(2, secs(9), &BTreeMap::new(), &two, vec![]);
        let versions = history.versions("a.png");
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].replaced, Some(secs(5)));
        assert!(versions[0].live_within(Some(secs(4)), secs(6)));
        assert!(!versions[0].live_within(Some(secs(5)), secs(6)));
        assert!(versions[1].live_within(None, secs(5)));
        assert!(!versions[1].live_within(None, secs(4)));
        assert_eq!(versions[1].replaced, Some(secs(9)));
        let in_snapshot = |seq| history.version_in("a.png", seq).map(|v| v.content.label());
        assert_eq!(in_snapshot(0).as_deref(), Some("blob 1 (64 B png)"));
        assert_eq!(in_snapshot(1).as_deref(), Some("blob 2 (64 B png)"));
        assert_eq!(in_snapshot(2), None);
        assert_eq!(history.paths_with(&versions[0].content_spec()), ["a.png"]);
    }

    impl Version {
        fn content_spec(&self) -> BlobSpec {
            match &self.content {
                Content::Texture(t) => t.spec,
                Content::Document(_) => unreachable!(),
            }
        }
    }
}
