use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::ObjectStore;

/// Temporary files older than this belong to a process that died.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// The cache directory, checked to be private to the current user.
#[derive(Debug, Clone)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    /// Creates the directory (mode 0700) if needed and refuses one that
    /// another user owns or others may write to.
    pub fn open(root: &Path) -> Result<CacheDir, String> {
        let describe = |e: std::io::Error| format!("cache directory {}: {e}", root.display());
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(describe)?;
        let meta = fs::metadata(root).map_err(describe)?;
        if !meta.is_dir() {
            return Err(format!(
                "cache directory {} is not a directory",
                root.display()
            ));
        }
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "cache directory {} belongs to uid {}, not to you (uid {me}); pick another with --cache-dir",
                root.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "cache directory {} may be written by other users (mode {:o}); run `chmod 700 {}`",
                root.display(),
                meta.mode() & 0o777,
                root.display()
            ));
        }
        let dir = CacheDir {
            root: root.to_path_buf(),
        };
        for sub in [
            dir.objects_dir(),
            dir.documents_dir(),
            dir.tmp_dir(),
            dir.tags_dir(),
        ] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&sub)
                .map_err(describe)?;
            // Inside the cache, nothing may lead elsewhere.
            if fs::symlink_metadata(&sub)
                .map_err(describe)?
                .file_type()
                .is_symlink()
            {
                return Err(format!(
                    "{} is a symbolic link; the cache refuses to follow it",
                    sub.display()
                ));
            }
        }
        dir.remove_stale_tmp();
        // Tells backup tools (tar --exclude-caches, borg, restic) to skip it.
        let tag = dir.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = super::write_atomically(
                &tag,
                b"Signature: 8a477f597d28d172789f06886806bc55\n# This is the matvisfs cache; it can be re-downloaded.\n",
            );
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    pub fn documents_dir(&self) -> PathBuf {
        self.root.join("documents")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn tags_dir(&self) -> PathBuf {
        self.root.join("tags")
    }

    /// `tag` must already have passed [`crate::names::check_component`].
    pub fn tag_dir(&self, tag: &str) -> PathBuf {
        self.tags_dir().join(tag)
    }

    /// Texture bodies (see [`super::ContentStore`] for the cap and index).
    pub fn objects(&self) -> ObjectStore {
        ObjectStore::new(self.objects_dir(), self.tmp_dir())
    }

    /// Manifests, catalogs and MaterialX maps.
    pub fn documents(&self) -> ObjectStore {
        ObjectStore::new(self.documents_dir(), self.tmp_dir())
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tag_dir(tag).join("state.json").is_file()
    }

    /// Tags that have a cached manifest.
    pub fn cached_tags(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.tags_dir()) else {
            return Vec::new();
        };
        let mut tags: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| crate::names::check_component(name).is_ok())
            .filter(|name| self.has_tag(name))
            .collect();
        tags.sort();
        tags
    }

    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TMP_AGE);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_directory_and_refuses_a_shared_one() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("a/b/cache");
        let dir = CacheDir::open(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
        assert!(dir.objects_dir().is_dir() && dir.tmp_dir().is_dir() && dir.tags_dir().is_dir());

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
