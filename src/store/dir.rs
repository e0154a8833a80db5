use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::beneath::{self, Dir, Kind};
use super::db::{self, Database};
use super::room::DiskRoom;
use super::writers::{Writers, is_lock_name};
use super::{Holds, ObjectStore};
use crate::digest::Sha256Digest;

/// Temporary files older than this belong to a process that died.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);
const ORIGIN_FILE: &str = "origin.json";
const RELEASES_FILE: &str = "releases.json";
const STATE_FILE: &str = "state.json";

/// The cache directory, checked to be private to the current user, with
/// its parts held open (see [`beneath`]) and its database.
#[derive(Debug, Clone)]
pub struct CacheDir {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    objects: ObjectStore,
    documents: ObjectStore,
    tmp: Arc<Dir>,
    tags: Dir,
    /// Opened at first use: the mount forks after opening the cache.
    db: OnceLock<Arc<Database>>,
    /// The database was missing or damaged: every object is checked again.
    db_new: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheDir")
            .field("root", &self.root)
            .finish()
    }
}

impl CacheDir {
    /// Creates the directory (mode 0700) if needed and refuses one that
    /// another user owns or others may write to.
    pub fn open(root: &Path) -> Result<CacheDir, String> {
        let describe = |e: io::Error| format!("cache directory {}: {e}", root.display());
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(describe)?;
        // Links on the way to the cache are the user's choice; none inside.
        let root = std::fs::canonicalize(root).map_err(describe)?;
        let describe = |e: io::Error| format!("cache directory {}: {e}", root.display());
        let top = Dir::open_root(&root).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) => format!("cache directory {} is not a directory", root.display()),
            _ => describe(e),
        })?;
        let meta = top.metadata().map_err(describe)?;
        let me = rustix::process::geteuid().as_raw();
        if meta.st_uid != me {
            return Err(format!(
                "cache directory {} belongs to uid {}, not to you (uid {me}); pick another with --cache-dir",
                root.display(),
                meta.st_uid
            ));
        }
        if meta.st_mode & 0o022 != 0 {
            return Err(format!(
                "cache directory {} may be written by other users (mode {:o}); run `chmod 700 {}`",
                root.display(),
                meta.st_mode & 0o777,
                root.display()
            ));
        }
        let part = |name: &str| -> Result<Dir, String> {
            match rustix::fs::mkdirat(&top, name, rustix::fs::Mode::RWXU) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(describe(e.into())),
            }
            top.open_dir(name).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => format!(
                    "{} is a symbolic link; the cache refuses to follow it",
                    root.join(name).display()
                ),
                _ => describe(e),
            })
        };
        let (objects, documents, tmp, tags) = (
            part("objects")?,
            part("documents")?,
            part("tmp")?,
            part("tags")?,
        );
        let tmp = Arc::new(tmp);
        remove_stale(&tmp);
        // One for all the cache's writes: the disk refuses them all or none.
        let room = Arc::new(DiskRoom::default());
        // Tells backup tools (tar --exclude-caches, borg, restic) to skip it.
        if top.kind_of("CACHEDIR.TAG").is_none() {
            let _ = beneath::write_atomically(
                &tmp,
                &top,
                "CACHEDIR.TAG",
                b"Signature: 8a477f597d28d172789f06886806bc55\n# This is the matvisfs cache; it can be re-downloaded.\n",
            );
        }
        let db_new = top.kind_of(db::FILE).is_none();
        let replaced = Database::check(&root.join(db::FILE))?;
        Ok(CacheDir {
            inner: Arc::new(Inner {
                root,
                objects: ObjectStore::new(
                    Arc::new(objects),
                    tmp.clone(),
                    Holds::Textures,
                    room.clone(),
                ),
                documents: ObjectStore::new(
                    Arc::new(documents),
                    tmp.clone(),
                    Holds::Documents,
                    room,
                ),
                tmp,
                tags,
                db: OnceLock::new(),
                db_new: db_new || replaced,
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn database(&self) -> Arc<Database> {
        let inner = &self.inner;
        inner
            .db
            .get_or_init(|| {
                let opened = Database::open(&inner.root.join(db::FILE));
                Arc::new(opened.map(|(db, _)| db).unwrap_or_else(|e| {
                    // Checked when the cache was opened: only a vanished or
                    // full disk gets here.
                    tracing::error!("{e}; this session keeps its index in memory");
                    Database::in_memory()
                }))
            })
            .clone()
    }

    /// Whether the database was created or replaced by this open.
    pub fn database_is_new(&self) -> bool {
        self.inner.db_new
    }

    /// The lock files of the stores writing objects (see [`super::writers`]).
    pub fn writers(&self) -> Writers {
        Writers::new(self.inner.tmp.clone())
    }

    /// Texture bodies (see [`super::ContentStore`] for the cap and index).
    pub fn objects(&self) -> ObjectStore {
        self.inner.objects.clone()
    }

    /// Manifests, catalogs and MaterialX maps.
    pub fn documents(&self) -> ObjectStore {
        self.inner.documents.clone()
    }

    /// Whether the disk takes the cache's writes, as the last ones found.
    pub fn room(&self) -> &Arc<DiskRoom> {
        self.inner.objects.room()
    }

    /// The part of the cache that belongs to one origin (see
    /// [`crate::remote::Remote::origin`]).
    pub fn origin(&self, origin: &str) -> OriginDir {
        let key = Sha256Digest::of(origin.as_bytes()).to_hex()[..16].to_string();
        OriginDir {
            cache: self.clone(),
            key: key.into(),
            origin: origin.into(),
        }
    }

    /// Every origin with a directory in the cache, by its name in clear.
    pub fn origins(&self) -> Vec<OriginDir> {
        let mut out: Vec<OriginDir> = self
            .inner
            .tags
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, kind)| *kind == Kind::Dir)
            .filter_map(|(key, _)| {
                let bytes = self.inner.tags.read(&format!("{key}/{ORIGIN_FILE}")).ok()?;
                let named: OriginName = serde_json::from_slice(&bytes).ok()?;
                let dir = self.origin(&named.origin);
                (*dir.key == key).then_some(dir)
            })
            .collect();
        out.sort_by(|a, b| a.origin.cmp(&b.origin));
        out
    }
}

/// Left-overs of processes that died; writers' locks live as long as
/// their writer, and are removed once it is gone (see [`super::writers`]).
fn remove_stale(tmp: &Dir) {
    let now = SystemTime::now();
    for (name, _) in tmp.entries().unwrap_or_default() {
        if is_lock_name(&name) {
            continue;
        }
        let old = tmp.kind_of(&name).is_some_and(|(_, _, modified)| {
            now.duration_since(modified).unwrap_or_default() > STALE_TMP_AGE
        });
        if old {
            let _ = tmp.remove(&name);
        }
    }
}

#[derive(Serialize, Deserialize)]
struct OriginName {
    origin: String,
}

/// `tags/<origin key>/`: the tags (state and file records) and the release
/// list of one origin, named in clear in its `origin.json`. Tags of one
/// name from two origins are two tags; content is shared by digest.
#[derive(Debug, Clone)]
pub struct OriginDir {
    cache: CacheDir,
    key: Arc<str>,
    origin: Arc<str>,
}

impl OriginDir {
    /// The origin in clear: a base URL.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Its name in the cache.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// For messages and tests.
    pub fn path(&self) -> PathBuf {
        self.cache.inner.tags.path().join(&*self.key)
    }

    pub fn database(&self) -> Arc<Database> {
        self.cache.database()
    }

    /// The origin's directory, if it has one.
    pub fn open(&self) -> io::Result<Dir> {
        self.cache.inner.tags.open_dir(&self.key)
    }

    /// The origin's directory, made (and named) if needed.
    pub fn create(&self) -> io::Result<Dir> {
        let dir = self.cache.inner.tags.dir(&self.key)?;
        if dir.kind_of(ORIGIN_FILE).is_none() {
            let named = OriginName {
                origin: self.origin.to_string(),
            };
            let bytes = serde_json::to_vec(&named).map_err(io::Error::other)?;
            self.write_atomically(&dir, ORIGIN_FILE, &bytes)?;
        }
        Ok(dir)
    }

    /// Writes `name` in `dir` (one of this cache's) through `tmp/`.
    pub fn write_atomically(&self, dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
        beneath::write_atomically(&self.cache.inner.tmp, dir, name, bytes)
    }

    /// A write of the cache failed: said once in the log for all of the
    /// cache (a full disk refuses every write until it has room).
    pub fn refused(&self, what: &str, error: &io::Error) {
        self.cache.room().refused(what, error);
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.open()
            .is_ok_and(|dir| dir.open_file(&format!("{tag}/{STATE_FILE}")).is_ok())
    }

    /// Tags of this origin that have a cached manifest.
    pub fn cached_tags(&self) -> Vec<String> {
        let Ok(dir) = self.open() else {
            return Vec::new();
        };
        let mut tags: Vec<String> = dir
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, kind)| *kind == Kind::Dir && name != ORIGIN_FILE)
            .map(|(name, _)| name)
            .filter(|name| crate::names::check_component(name).is_ok())
            .filter(|name| self.has_tag(name))
            .collect();
        tags.sort();
        tags
    }

    /// The saved list of the origin's releases.
    pub fn read_releases(&self) -> Option<Vec<u8>> {
        self.open().ok()?.read(RELEASES_FILE).ok()
    }

    pub fn save_releases(&self, bytes: &[u8]) -> io::Result<()> {
        self.create()
            .and_then(|dir| self.write_atomically(&dir, RELEASES_FILE, bytes))
            .inspect_err(|e| self.refused("the list of releases", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn creates_a_private_directory_and_refuses_a_shared_one() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("a/b/cache");
        let dir = CacheDir::open(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
        for part in ["objects", "documents", "tmp", "tags"] {
            assert!(dir.root().join(part).is_dir(), "{part}");
        }

        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let err = CacheDir::open(&root).unwrap_err();
        assert!(err.contains("chmod 700"), "{err}");

        let file = base.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(CacheDir::open(&file).is_err());
    }

    #[test]
    fn refuses_symbolic_links_inside() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("cache");
        let elsewhere = base.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("objects")).unwrap();
        let err = CacheDir::open(&root).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn each_origin_has_its_own_tags_named_in_clear() {
        let base = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(&base.path().join("cache")).unwrap();
        let a = cache.origin("http://127.0.0.1:1/resolve");
        let b = cache.origin("http://127.0.0.1:2/resolve");
        assert_ne!(a.key(), b.key());
        a.save_releases(b"[]").unwrap();
        assert_eq!(a.read_releases().as_deref(), Some(&b"[]"[..]));
        assert_eq!(b.read_releases(), None);
        let names: Vec<String> = cache
            .origins()
            .iter()
            .map(|o| o.origin().to_string())
            .collect();
        assert_eq!(names, ["http://127.0.0.1:1/resolve"]);
    }

    #[test]
    fn refuses_a_directory_owned_by_someone_else() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("theirs");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&root, Some(12345), Some(12345)).unwrap();
        let err = CacheDir::open(&root).unwrap_err();
        assert!(err.contains("belongs to uid 12345"), "{err}");
    }
}
