//! The core against the in-memory server: every operation, its errors, and
//! the requests it makes.

use std::sync::Arc;

use parking_lot::Mutex;

use fuser::Errno;

use super::inodes::{NodeKey, ROOT_INO};
use super::{FsCore, FsError, Invalidation};
use crate::dataset::{Change, Context, Dataset, Error, Kind};
use crate::remote::mock::MockRemote;
use crate::remote::{FetchError, Offline, Remote};
use crate::store::CacheDir;
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::containers::{Layout, PackRelease, Packed};

const TAG: &str = "v2026.04.2";

/// What the kernel would answer the program.
fn errno(error: FsError) -> Errno {
    crate::fuse::errno(&error)
}

fn eio<T: std::fmt::Debug>(result: Result<T, FsError>) -> bool {
    matches!(result, Err(e) if crate::fuse::errno(&e) == Errno::EIO)
}

impl<B: Send + Sync + 'static> FsCore<B> {
    /// An open as a front end makes it that hands the kernel no file to
    /// read by itself.
    fn open(&self, ino: u64, flags: i32) -> Result<super::Open<B>, FsError> {
        self.open_as_front_end(ino, flags, |_| Err(std::io::ErrorKind::Unsupported.into()))
    }

    /// An open as a front end makes it, a new kernel request: parked, it
    /// waits here for its resume, then is asked again.
    fn open_as_front_end(
        &self,
        ino: u64,
        flags: i32,
        register: impl Fn(&std::fs::File) -> std::io::Result<B>,
    ) -> Result<super::Open<B>, FsError> {
        static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let request = REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        loop {
            match self.open_with_backing(ino, flags, request, &register) {
                Err(FsError::WaitsForRelease { request }) => {
                    let (resume, resumed) = std::sync::mpsc::channel();
                    self.resume_when_released(
                        request,
                        Box::new(move || {
                            let _ = resume.send(());
                        }),
                    );
                    resumed
                        .recv_timeout(std::time::Duration::from_secs(60))
                        .expect("a parked open resumed");
                }
                result => return result,
            }
        }
    }
}

/// A mount session; `B`: how its front end names a file the kernel reads
/// by itself (FUSE passthrough).
struct Session<B = super::kernel_files::NoBacking> {
    core: Arc<FsCore<B>>,
    changes: Arc<Mutex<Vec<Change>>>,
    kernel: Arc<MockKernel>,
}

/// The kernel's side of attribute invalidations: attributes dropped are
/// asked for again before the next read (`FUSE_AUTO_INVAL_DATA`).
#[derive(Default)]
struct MockKernel {
    dropped: Mutex<std::collections::HashSet<u64>>,
    /// Every invalidation sent, in order.
    sent: Mutex<Vec<Invalidation>>,
    /// Those sent without waiting for the kernel.
    later: Mutex<Vec<Invalidation>>,
}

impl super::Kernel for MockKernel {
    fn invalidate(&self, invalidations: Vec<Invalidation>) {
        for invalidation in invalidations {
            if let Invalidation::Attributes(ino) | Invalidation::Inode(ino) = invalidation {
                self.dropped.lock().insert(ino);
            }
            self.sent.lock().push(invalidation);
        }
    }

    fn invalidate_later(&self, invalidations: Vec<Invalidation>) {
        self.later.lock().extend(invalidations.iter().cloned());
        self.invalidate(invalidations);
    }
}

struct Harness {
    remote: Arc<MockRemote>,
    cache: tempfile::TempDir,
    /// Sessions show the server's tree only (`--raw`).
    raw: bool,
    /// The newest session: a new one starts as after its unmount, with
    /// everything it learned written (a session still in use may not yet
    /// have written what it learned).
    newest: Mutex<Option<Arc<Dataset>>>,
}

impl Harness {
    fn new(release: &Release) -> Self {
        let harness = Harness {
            remote: Arc::new(MockRemote::default()),
            cache: tempfile::tempdir().unwrap(),
            raw: true,
            newest: Mutex::default(),
        };
        harness.publish(release);
        harness
    }

    fn publish(&self, release: &Release) {
        for (path, bytes) in &release.files {
            self.remote.put(&release.tag, path, bytes.clone());
        }
    }

    /// A session that reads `paths` (relative to the tag) into the cache.
    fn warm(&self, paths: &[&str]) {
        let s = self.session();
        for path in paths {
            s.read(&format!("{TAG}/{path}")).unwrap();
        }
    }

    /// A new mount session over the same cache.
    fn session(&self) -> Session {
        self.session_with(false, &[TAG])
    }

    fn session_with(&self, offline: bool, pinned: &[&str]) -> Session {
        self.session_of(offline, pinned)
    }

    /// A new session whose front end names backing files with `B`.
    fn session_of<B: Send + Sync + 'static>(&self, offline: bool, pinned: &[&str]) -> Session<B> {
        let remote: Arc<dyn Remote> = match offline {
            true => Arc::new(Offline::new("mock://")),
            false => self.remote.clone(),
        };
        if let Some(newest) = self.newest.lock().take() {
            newest.context().content.flush();
        }
        let cache = CacheDir::open(self.cache.path()).unwrap();
        let ctx = Arc::new(Context::new(remote, cache, 0).raw(self.raw));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        ctx.on_change(move |change| seen.lock().push(change));
        let dataset = Arc::new(Dataset::new(
            ctx,
            pinned.iter().map(|s| s.to_string()).collect(),
        ));
        dataset.load_pinned(&|_| {}).unwrap();
        let core = FsCore::new(dataset);
        let kernel = Arc::new(MockKernel::default());
        core.set_kernel(kernel.clone());
        *self.newest.lock() = Some(core.dataset().clone());
        Session {
            core,
            changes,
            kernel,
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // What the last session still writes lands before its directory
        // goes: a removal racing with the store's writes leaves it behind.
        if let Some(newest) = self.newest.lock().take() {
            newest.context().content.flush();
        }
    }
}

impl<B: Send + Sync + 'static> Session<B> {
    fn ino(&self, path: &str) -> Result<u64, FsError> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.core.lookup(ino, part)?.attr.ino;
        }
        Ok(ino)
    }

    fn list(&self, path: &str) -> Result<Vec<(String, Kind)>, FsError> {
        let listing = self.core.listing(self.ino(path)?, 0)?;
        let mut out = Vec::new();
        self.core.fill(&listing, 2, false, |e, _| {
            out.push((e.name.to_string(), e.kind));
            false
        });
        Ok(out)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, FsError> {
        self.read_ino(self.ino(path)?)
    }

    /// Reads `ino` whole, as the kernel would: attributes it was told to
    /// drop are asked for again before a read.
    fn read_ino(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        // Read until an empty answer, as a direct reader does (the page
        // cache asks for no page past the size it holds).
        let opened = self.core.open(ino, libc::O_RDONLY | libc::O_DIRECT)?;
        let mut out = Vec::new();
        let read = loop {
            if self.kernel.dropped.lock().remove(&ino) {
                self.core.getattr(ino)?;
            }
            match self.core.read(opened.fh, out.len() as u64, 7000, 0) {
                Ok(chunk) if chunk.bytes.is_empty() => break Ok(out),
                Ok(chunk) => out.extend_from_slice(&chunk.bytes),
                Err(e) => break Err(e),
            }
        };
        self.core.release(opened.fh);
        read
    }

    fn size(&self, path: &str) -> Result<u64, FsError> {
        Ok(self
            .core
            .lookup(self.ino(parent(path))?, name(path))?
            .attr
            .size)
    }

    /// Every path under the tag, directories with a trailing `/`.
    fn walk(&self, dir: &str, out: &mut Vec<String>) {
        for (name, kind) in self.list(dir).unwrap() {
            let path = format!("{dir}/{name}");
            let relative = path.strip_prefix(&format!("{TAG}/")).unwrap().to_string();
            match kind {
                Kind::Dir => {
                    out.push(format!("{relative}/"));
                    self.walk(&path, out);
                }
                Kind::File | Kind::Symlink => out.push(relative),
            }
        }
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn name(path: &str) -> &str {
    path.rsplit_once('/').map(|(_, n)| n).unwrap_or(path)
}

fn small() -> Release {
    Release::generate(&ReleaseSpec::small(TAG))
}

/// A material of `other`'s source renamed on the server and published,
/// then found by a refresh and a read of `other` (a texture of that source
/// cached before the session): a new version of the tag, in which the
/// files of that source are proven again (those of the other sources stay
/// proven).
fn publish_a_catalog_change<B: Send + Sync + 'static>(
    h: &Harness,
    s: &Session<B>,
    release: &mut Release,
    other: &str,
) {
    let catalog_file = format!("{}.json", other.split('/').next().unwrap());
    let mut catalog = release.json(&catalog_file);
    catalog[0]["mat_vis"]["name"] = serde_json::json!("renamed");
    release.set_json(&catalog_file, &catalog);
    h.publish(release);
    s.core.dataset.refresh(None);
    s.read(&format!("{TAG}/{other}")).unwrap();
    assert!(!s.changes.lock().is_empty(), "the catalog was revalidated");
}

fn texture_gets(remote: &MockRemote) -> usize {
    remote
        .log()
        .iter()
        .filter(|l| l.method == "GET" && (l.path.ends_with(".png") || l.path.ends_with(".ktx2")))
        .count()
}

#[test]
fn the_tree_is_the_catalogs_and_listing_downloads_no_texture() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    assert_eq!(
        s.list("").unwrap(),
        [
            (".matvisfs".to_string(), Kind::Dir),
            (TAG.to_string(), Kind::Dir)
        ]
    );
    let mut walked = Vec::new();
    s.walk(TAG, &mut walked);
    let expected: Vec<String> = release.expected_tree().into_iter().collect();
    walked.sort();
    assert_eq!(walked, expected);
    assert_eq!(texture_gets(&h.remote), 0, "{:#?}", h.remote.log());
    assert_eq!(
        h.remote.count("HEAD", "ambientcg/1k/Rock064/color.png"),
        0,
        "readdir needs no sizes"
    );
}

#[test]
fn with_the_cache_disk_full_the_tree_sizes_and_bytes_are_served_from_memory() {
    let release = small();
    let h = Harness::new(&release);
    let disk = crate::store::FullDisk::over(h.cache.path());
    let s = h.session();
    let mut walked = Vec::new();
    s.walk(TAG, &mut walked);
    walked.sort();
    let expected: Vec<String> = release.expected_tree().into_iter().collect();
    assert_eq!(walked, expected);
    for (path, bytes) in release.textures() {
        let path = format!("{TAG}/{path}");
        assert_eq!(s.size(&path).unwrap(), bytes.len() as u64, "{path}");
    }
    // Every file of the tree: textures, manifest, catalogs.
    for (path, bytes) in release.files.iter().filter(|(p, _)| expected.contains(p)) {
        assert_eq!(&s.read(&format!("{TAG}/{path}")).unwrap(), bytes, "{path}");
    }
    let cache = |s: &Session| {
        let started = std::time::SystemTime::now();
        s.core.dataset().stats_json(started)["cache"].clone()
    };
    let textures = release.textures().count();
    assert_eq!(cache(&s)["uncached_reads"], textures);
    assert_eq!(cache(&s)["uncached_bytes"], 0, "none is open");
    assert_eq!(cache(&s)["files"], 0);

    // Room again: what is read is kept, and read from the cache after.
    disk.empty();
    let (path, bytes) = release.textures().next().unwrap();
    let path = format!("{TAG}/{path}");
    assert_eq!(&s.read(&path).unwrap(), bytes);
    s.core.dataset().context().content.flush();
    assert_eq!(cache(&s)["files"], 1);
    assert_eq!(cache(&s)["uncached_reads"], textures);
    let gets = texture_gets(&h.remote);
    assert_eq!(&s.read(&path).unwrap(), bytes);
    assert_eq!(texture_gets(&h.remote), gets);
}

#[test]
fn file_records_of_a_version_whose_state_was_never_written_are_not_trusted() {
    let release = small();
    let h = Harness::new(&release);
    let (path, bytes) = release.textures().next().unwrap();
    let path = format!("{TAG}/{path}");
    let generation = |s: &Session| {
        let started = std::time::SystemTime::now();
        s.core.dataset().stats_json(started)["tags"][TAG]["generation"]
            .as_u64()
            .unwrap()
    };
    let s = h.session();
    assert_eq!(&s.read(&path).unwrap(), bytes);
    let recorded = generation(&s);
    drop(s);
    // The state as it was before that version: its write was refused
    // (a full disk), the file records' were not.
    let origin = std::fs::read_dir(h.cache.path().join("tags"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let state_file = origin.join(TAG).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    state["generation"] = (recorded - 1).into();
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let s = h.session();
    assert!(
        generation(&s) > recorded,
        "{} <= {recorded}",
        generation(&s)
    );
    assert_eq!(&s.read(&path).unwrap(), bytes);
}

#[test]
fn sizes_are_exact_before_reading_and_bytes_match() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    for (path, bytes) in release.textures() {
        assert_eq!(
            s.size(&format!("{TAG}/{path}")).unwrap(),
            bytes.len() as u64,
            "{path}"
        );
    }
    assert_eq!(texture_gets(&h.remote), 0);
    for (path, bytes) in release.textures() {
        assert_eq!(&s.read(&format!("{TAG}/{path}")).unwrap(), bytes, "{path}");
    }
    let textures = release.textures().count();
    assert_eq!(texture_gets(&h.remote), textures);
    for doc in [
        "release-manifest.json",
        "ambientcg.json",
        "gpuopen-mtlx.json",
        "physicallybased.json",
    ] {
        assert_eq!(
            s.read(&format!("{TAG}/{doc}")).unwrap(),
            release.files[doc],
            "{doc}"
        );
    }
    // A second read costs nothing.
    h.remote.clear_log();
    let first = release.textures().next().unwrap();
    assert_eq!(&s.read(&format!("{TAG}/{}", first.0)).unwrap(), first.1);
    assert!(h.remote.log().is_empty(), "{:#?}", h.remote.log());
}

#[test]
fn a_later_session_reads_from_the_cache_after_one_conditional_request() {
    let release = small();
    let h = Harness::new(&release);
    {
        let s = h.session();
        for (path, _) in release.textures() {
            s.read(&format!("{TAG}/{path}")).unwrap();
        }
    }
    h.remote.clear_log();
    let s = h.session();
    for (path, bytes) in release.textures() {
        assert_eq!(&s.read(&format!("{TAG}/{path}")).unwrap(), bytes);
    }
    let log = h.remote.log();
    let manifest: Vec<_> = log
        .iter()
        .filter(|l| l.path == "release-manifest.json")
        .collect();
    assert_eq!(manifest.len(), 1);
    assert!(
        manifest[0].conditional && manifest[0].outcome == "304",
        "{manifest:?}"
    );
    assert_eq!(texture_gets(&h.remote), 0);
    assert!(
        log.iter().all(|l| l.conditional && l.outcome == "304"),
        "only revalidations: {log:#?}"
    );
    assert!(s.changes.lock().is_empty());
}

#[test]
fn many_threads_opening_at_once_make_one_manifest_request() {
    let release = small();
    let h = Harness::new(&release);
    drop(h.session());
    h.remote.clear_log();
    let s = h.session();
    let paths: Vec<String> = release
        .textures()
        .map(|(p, _)| format!("{TAG}/{p}"))
        .collect();
    let inos: Vec<u64> = paths.iter().map(|p| s.ino(p).unwrap()).collect();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (s, inos) = (&s, &inos);
            scope.spawn(move || {
                for ino in inos.iter().skip(t).step_by(2) {
                    let opened = s.core.open(*ino, libc::O_RDONLY).unwrap();
                    s.core.release(opened.fh);
                }
            });
        }
    });
    assert_eq!(h.remote.count("GET", "release-manifest.json"), 1);
    assert_eq!(h.remote.count("GET", "ambientcg.json"), 1);
    assert_eq!(h.remote.count("GET", "gpuopen.json"), 1);
}

#[test]
fn concurrent_readers_of_one_file_cause_one_download() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let path = format!("{TAG}/ambientcg/512/Rock064/normal.png");
    let expected = &release.files["ambientcg/512/Rock064/normal.png"];
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| assert_eq!(&s.read(&path).unwrap(), expected));
        }
    });
    assert_eq!(h.remote.count("GET", "ambientcg/512/Rock064/normal.png"), 1);
}

#[test]
fn a_changed_tag_is_seen_and_stale_bytes_are_not_served() {
    let mut release = small();
    let h = Harness::new(&release);
    let baked = "ambientcg/1k/Rock064/color.png";
    let derived = "ambientcg/512/Rock064/color.png";
    let untouched = "ambientcg/1k/Metal032/normal.png";
    h.warm(&[baked, derived, untouched]);
    // The tag is republished: two textures change, the catalog hash of the
    // baked one with it, and the manifest gains a tier.
    let new_baked = matvisfs_sample::images::png("changed", "color", 16);
    let new_derived = matvisfs_sample::images::png("changed", "color", 8);
    release.replace_texture(baked, new_baked.clone());
    release.replace_texture(derived, new_derived.clone());
    let mut manifest = release.json("release-manifest.json");
    manifest["sources"]["ambientcg"]["tiers"]["256"] = serde_json::json!({"complete": true});
    release.set_json("release-manifest.json", &manifest);
    h.publish(&release);
    h.remote.clear_log();

    let s = h.session();
    assert_eq!(s.read(&format!("{TAG}/{baked}")).unwrap(), new_baked);
    assert_eq!(s.read(&format!("{TAG}/{derived}")).unwrap(), new_derived);
    // The catalog still vouches for this one's bytes: no request for it.
    assert_eq!(
        s.read(&format!("{TAG}/{untouched}")).unwrap(),
        release.files[untouched]
    );
    assert_eq!(h.remote.count("GET", untouched), 0, "{:#?}", h.remote.log());
    assert!(
        s.list(&format!("{TAG}/ambientcg"))
            .unwrap()
            .iter()
            .any(|(n, _)| n == "256")
    );
    assert!(
        s.changes.lock().iter().all(|c| *c == Change::tag(TAG)) && !s.changes.lock().is_empty()
    );
}

#[test]
fn a_changed_derived_file_is_reverified_by_its_etag() {
    let mut release = small();
    let h = Harness::new(&release);
    let derived = "ambientcg/512/Wood051/roughness.png";
    let same = "ambientcg/512/Rock064/roughness.png";
    let later = "ambientcg/512/Metal032/ao.png";
    h.warm(&[derived, same, later]);
    // Only the catalog and one derived file change (the manifest stays).
    let replacement = matvisfs_sample::images::png("new", "roughness", 8);
    release.replace_texture(derived, replacement.clone());
    let mut catalog = release.json("ambientcg.json");
    catalog[0]["mat_vis"]["name"] = serde_json::json!("renamed");
    release.set_json("ambientcg.json", &catalog);
    h.publish(&release);
    h.remote.clear_log();

    // Looked up before the first open (as `ls` then a viewer would): the
    // sizes come from the records, the change is seen at open.
    let s = h.session();
    let derived_ino = s.ino(&format!("{TAG}/{derived}")).unwrap();
    let same_ino = s.ino(&format!("{TAG}/{same}")).unwrap();
    let read = |ino: u64| s.read_ino(ino).unwrap();
    assert_eq!(read(derived_ino), replacement);
    assert_eq!(read(same_ino), release.files[same]);
    let same_requests: Vec<_> = h
        .remote
        .log()
        .into_iter()
        .filter(|l| l.path == same)
        .collect();
    assert_eq!(same_requests.len(), 1, "{same_requests:#?}");
    // The kernel asks for its attributes again (the tag changed): a HEAD
    // that finds the same ETag proves the cached bytes, or a conditional
    // GET does; never the body again.
    let proof = &same_requests[0];
    assert!(
        proof.method == "HEAD" || (proof.conditional && proof.outcome == "304"),
        "{same_requests:#?}"
    );
    // Looked up after the change: a HEAD that finds the same ETag proves it.
    assert_eq!(
        s.read(&format!("{TAG}/{later}")).unwrap(),
        release.files[later]
    );
    let later_requests: Vec<_> = h
        .remote
        .log()
        .into_iter()
        .filter(|l| l.path == later)
        .collect();
    assert_eq!(later_requests.len(), 1, "{later_requests:#?}");
    assert_eq!(later_requests[0].method, "HEAD");
}

#[test]
fn a_removed_material_is_invalidated_in_the_kernel() {
    let mut release = small();
    let h = Harness::new(&release);
    {
        let s = h.session();
        s.read(&format!("{TAG}/ambientcg/1k/Rock064/color.png"))
            .unwrap();
    }
    let mut catalog = release.json("ambientcg.json");
    catalog
        .as_array_mut()
        .unwrap()
        .retain(|m| m["id"] != "Metal032");
    release.set_json("ambientcg.json", &catalog);
    h.publish(&release);

    let s = h.session();
    let metal = s.ino(&format!("{TAG}/ambientcg/1k/Metal032")).unwrap();
    let tier = s.ino(&format!("{TAG}/ambientcg/1k")).unwrap();
    s.read(&format!("{TAG}/ambientcg/1k/Rock064/color.png"))
        .unwrap();
    assert_eq!(*s.changes.lock(), [Change::tag(TAG)]);
    let invalidations = s.core.invalidations(&Change::tag(TAG));
    // The name without waiting (a lookup in the tier, waiting for this
    // very revalidation, may hold the directory the kernel locks for it);
    // its attributes and the tier's listing at once.
    assert_eq!(
        invalidations.later,
        [Invalidation::Entry {
            parent: tier,
            name: "Metal032".into()
        }]
    );
    assert!(
        invalidations
            .now
            .iter()
            .all(|i| !matches!(i, Invalidation::Entry { .. }))
    );
    assert!(invalidations.now.contains(&Invalidation::Attributes(metal)));
    assert!(invalidations.now.contains(&Invalidation::Inode(tier)));
    assert!(!invalidations.now.contains(&Invalidation::Inode(metal)));
    assert_eq!(
        errno(s.core.lookup(tier, "Metal032").unwrap_err()),
        Errno::ENOENT
    );
}

#[test]
fn a_file_changed_on_the_server_within_a_session_is_never_served_at_its_old_size() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let resized = "ambientcg/512/Wood051/ao.png";
    let rewritten = "ambientcg/512/Wood051/normal.png";
    let old_size = s.size(&format!("{TAG}/{resized}")).unwrap();
    assert_eq!(
        s.size(&format!("{TAG}/{rewritten}")).unwrap(),
        release.files[rewritten].len() as u64
    );
    // The server's copies change after the kernel was given their sizes.
    let bigger = matvisfs_sample::images::png("republished", "ao", 32);
    assert_ne!(bigger.len() as u64, old_size);
    h.remote.put(TAG, resized, bigger.clone());
    let mut same_size = release.files[rewritten].clone();
    let middle = same_size.len() / 2;
    same_size[middle] ^= 0x55;
    h.remote.put(TAG, rewritten, same_size.clone());

    assert_eq!(
        errno(s.read(&format!("{TAG}/{resized}")).unwrap_err()),
        Errno::ESTALE
    );
    let ino = s.ino(&format!("{TAG}/{resized}")).unwrap();
    let change = Change {
        tag: TAG.into(),
        file: Some(resized.into()),
    };
    assert_eq!(s.changes.lock().as_slice(), std::slice::from_ref(&change));
    let invalidations = s.core.invalidations(&change);
    assert_eq!(invalidations.now, [Invalidation::Attributes(ino)]);
    assert!(invalidations.later.is_empty());
    // The new bytes were kept: the next open reads them whole, from the cache.
    assert_eq!(s.read(&format!("{TAG}/{resized}")).unwrap(), bigger);
    assert_eq!(h.remote.count("GET", resized), 1);
    // Same size, other bytes than the server declared (X-Linked-Etag) when
    // it gave the size: that open was bound to the declared bytes, and
    // fails; the change is announced, and the next open reads the new ones.
    assert_eq!(
        errno(s.read(&format!("{TAG}/{rewritten}")).unwrap_err()),
        Errno::ESTALE
    );
    assert_eq!(s.changes.lock().len(), 2);
    assert_eq!(s.read(&format!("{TAG}/{rewritten}")).unwrap(), same_size);
    assert_eq!(h.remote.count("GET", rewritten), 1);
}

#[test]
fn with_the_server_down_cached_files_read_and_others_fail() {
    let release = small();
    let h = Harness::new(&release);
    let cached = "ambientcg/1k/Rock064/color.png";
    let sized = "ambientcg/1k/Rock064/normal.png";
    {
        let s = h.session();
        s.read(&format!("{TAG}/{cached}")).unwrap();
        s.size(&format!("{TAG}/{sized}")).unwrap();
    }
    h.remote.set_down(true);
    let s = h.session();
    assert_eq!(
        s.read(&format!("{TAG}/{cached}")).unwrap(),
        release.files[cached]
    );
    assert!(eio(s.read(&format!("{TAG}/{sized}"))));
    assert!(eio(s.size(&format!("{TAG}/ambientcg/512/Rock064/ao.png"))));

    // --offline: the same answers without a single request.
    h.remote.set_down(false);
    h.remote.clear_log();
    let s = h.session_with(true, &[TAG]);
    assert_eq!(
        s.read(&format!("{TAG}/{cached}")).unwrap(),
        release.files[cached]
    );
    assert!(eio(s.read(&format!("{TAG}/{sized}"))));
    assert!(h.remote.log().is_empty(), "{:#?}", h.remote.log());
}

#[test]
fn a_corrupt_manifest_or_catalog_never_replaces_a_good_one() {
    let mut release = small();
    let h = Harness::new(&release);
    {
        let s = h.session();
        s.list(&format!("{TAG}/ambientcg/1k")).unwrap();
    }
    release.files.insert(
        "release-manifest.json".into(),
        b"<html>oops</html>".to_vec(),
    );
    release
        .files
        .insert("ambientcg.json".into(), b"[{\"id\": ".to_vec());
    h.publish(&release);
    let s = h.session();
    let path = format!("{TAG}/ambientcg/1k/Rock064/color.png");
    assert_eq!(
        s.read(&path).unwrap(),
        release.files["ambientcg/1k/Rock064/color.png"]
    );
    assert_eq!(s.list(&format!("{TAG}/ambientcg/1k")).unwrap().len(), 3);
    assert!(s.changes.lock().is_empty());
    let served = s.read(&format!("{TAG}/release-manifest.json")).unwrap();
    assert!(served.starts_with(b"{"));
}

#[test]
fn an_incomplete_tier_is_not_served_and_checked_once() {
    let mut spec = ReleaseSpec::small(TAG);
    spec.incomplete_tiers = vec!["ambientcg/512".into()];
    let release = Release::generate(&spec);
    let h = Harness::new(&release);
    let s = h.session();
    for material in ["Rock064", "Metal032"] {
        let path = format!("{TAG}/ambientcg/512/{material}/color.png");
        assert!(matches!(
            s.read(&path),
            Err(FsError::Dataset(Error::TierIncomplete { tier, .. })) if tier == "ambientcg/512"
        ));
    }
    assert_eq!(h.remote.count("HEAD", "ambientcg/512/.tier_complete"), 1);
    assert_eq!(texture_gets(&h.remote), 0);
    assert!(
        s.read(&format!("{TAG}/ambientcg/1k/Rock064/color.png"))
            .is_ok()
    );
}

#[test]
fn wrong_bytes_are_refused_and_not_cached() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let html = "ambientcg/1k/Rock064/ao.png";
    h.remote.serve_corrupt(html, b"<html>rate limited</html>");
    assert!(matches!(
        s.read(&format!("{TAG}/{html}")),
        Err(FsError::Dataset(Error::Refused { .. }))
    ));
    // Right magic and size, one byte off: the catalog's sha256 gives it away.
    let forged = "ambientcg/1k/Rock064/normal.png";
    let mut bytes = release.files[forged].clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    h.remote.serve_corrupt(forged, &bytes);
    assert!(matches!(
        s.read(&format!("{TAG}/{forged}")),
        Err(FsError::Dataset(Error::Refused { .. }))
    ));
    // Nothing was kept: the next read asks again.
    h.remote.serve_corrupt(forged, &release.files[forged]);
    assert_eq!(
        s.read(&format!("{TAG}/{forged}")).unwrap(),
        release.files[forged]
    );
    assert_eq!(h.remote.count("GET", forged), 2);
}

#[test]
fn transient_failures_do_not_stick() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let path = "ambientcg/1k/Wood051/ao.png";
    h.remote.fail_next(path, FetchError::Status(503));
    assert!(s.read(&format!("{TAG}/{path}")).is_err());
    assert_eq!(
        s.read(&format!("{TAG}/{path}")).unwrap(),
        release.files[path]
    );
}

#[test]
fn readdirplus_gives_known_attributes_and_placeholders_for_unknown_sizes() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let known = "ambientcg/512/Rock064/color.png";
    s.size(&format!("{TAG}/{known}")).unwrap();
    h.remote.clear_log();
    let dir = s.ino(&format!("{TAG}/ambientcg/512/Rock064")).unwrap();
    let listing = s.core.listing(dir, 0).unwrap();
    let mut seen = Vec::new();
    s.core.fill(&listing, 0, true, |e, next| {
        seen.push((e.name.to_string(), e.entry.unwrap(), next));
        false
    });
    assert!(
        h.remote.log().is_empty(),
        "readdirplus asks nothing: {:#?}",
        h.remote.log()
    );
    let by_name: std::collections::HashMap<_, _> =
        seen.iter().map(|(n, e, _)| (n.as_str(), *e)).collect();
    let color = by_name["color.png"];
    assert_eq!(color.attr.size, release.files[known].len() as u64);
    assert!(color.ttl > std::time::Duration::ZERO);
    let normal = by_name["normal.png"];
    assert_eq!(
        normal.ttl,
        std::time::Duration::ZERO,
        "unknown size: the kernel must look it up"
    );
    // The kernel holds no inode of it: it takes the placeholder's size.
    assert_eq!(normal.attr.size, 0);
    // Each entry counted as a lookup: the same inode comes back, and a
    // forget per entry drops it.
    assert_eq!(
        s.core.lookup(dir, "color.png").unwrap().attr.ino,
        color.attr.ino
    );
    // An entry the kernel's buffer had no room for is not counted: the
    // inode of a file nobody looked up goes away again.
    let fresh = Harness::new(&release);
    let s = fresh.session();
    let dir = s.ino(&format!("{TAG}/ambientcg/512/Wood051")).unwrap();
    let listing = s.core.listing(dir, 0).unwrap();
    s.core.fill(&listing, 2, true, |_, _| true);
    let refused = NodeKey::root()
        .child(TAG)
        .child("ambientcg")
        .child("512")
        .child("Wood051")
        .child("ao.png");
    let ino = s
        .core
        .inodes
        .ino_of(&refused)
        .expect("numbered when first seen");
    assert_eq!(s.core.inodes.lookups(ino), 0);
}

#[test]
fn writes_are_refused() {
    let h = Harness::new(&small());
    let s = h.session();
    let ino = s
        .ino(&format!("{TAG}/ambientcg/1k/Rock064/color.png"))
        .unwrap();
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(errno(s.core.open(ino, flags).unwrap_err()), Errno::EROFS);
    }
    let dir = s.ino(&format!("{TAG}/ambientcg")).unwrap();
    assert_eq!(
        errno(s.core.open(dir, libc::O_RDONLY).unwrap_err()),
        Errno::EISDIR
    );
}

/// The kernel keeps the root's listing until told (it has no open, and
/// the root's time never changes): a tag first found by name, which the
/// listing it keeps lacks, makes the mount drop that listing in the kernel
/// and build it again; one already listed sends nothing.
#[test]
fn a_tag_first_looked_up_by_name_drops_the_root_listing_the_kernel_keeps() {
    const OTHER: &str = "v2026.05.0-rc1";
    let h = Harness::new(&small());
    h.publish(&Release::generate(&ReleaseSpec::small(OTHER)));
    let s = h.session();
    let names = || -> Vec<String> { s.list("").unwrap().into_iter().map(|(n, _)| n).collect() };
    assert_eq!(names(), [".matvisfs", TAG]);
    let dropped = || {
        s.kernel
            .sent
            .lock()
            .iter()
            .filter(|i| **i == Invalidation::Inode(ROOT_INO))
            .count()
    };
    s.core.lookup(ROOT_INO, TAG).unwrap();
    assert_eq!(dropped(), 0);
    s.core.lookup(ROOT_INO, OTHER).unwrap();
    assert_eq!(dropped(), 1);
    // Built again at once, not reused for the moment a root listing is.
    assert_eq!(names(), [".matvisfs", TAG, OTHER]);
    s.core.lookup(ROOT_INO, OTHER).unwrap();
    assert_eq!(dropped(), 1);

    // A root never listed: nothing for the kernel to drop.
    let s = h.session();
    s.core.lookup(ROOT_INO, OTHER).unwrap();
    assert!(s.kernel.sent.lock().is_empty());
}

#[test]
fn other_tags_are_looked_up_lazily_and_misses_remembered() {
    let release = small();
    let h = Harness::new(&release);
    let other = Release::generate(&ReleaseSpec::small("v2026.05.0-rc1"));
    h.publish(&other);
    let s = h.session();
    h.remote.clear_log();
    assert_eq!(
        errno(s.core.lookup(ROOT_INO, ".Trash").unwrap_err()),
        Errno::ENOENT
    );
    assert_eq!(
        errno(s.core.lookup(ROOT_INO, "autorun.inf").unwrap_err()),
        Errno::ENOENT
    );
    assert!(h.remote.log().is_empty());
    assert_eq!(
        errno(s.core.lookup(ROOT_INO, "v2099.01.1").unwrap_err()),
        Errno::ENOENT
    );
    assert_eq!(
        errno(s.core.lookup(ROOT_INO, "v2099.01.1").unwrap_err()),
        Errno::ENOENT
    );
    assert_eq!(
        h.remote.log().len(),
        1,
        "a 404 is remembered: {:#?}",
        h.remote.log()
    );
    let rc = "v2026.05.0-rc1/ambientcg/1k/Rock064/color.png";
    assert_eq!(
        s.read(rc).unwrap(),
        other.files["ambientcg/1k/Rock064/color.png"]
    );
    let names: Vec<String> = s.list("").unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [".matvisfs", TAG, "v2026.05.0-rc1"]);
    // A cached tag is listed by the next session without being pinned.
    let next = h.session();
    let names: Vec<String> = next.list("").unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [".matvisfs", TAG, "v2026.05.0-rc1"]);
}

#[test]
fn a_pinned_tag_that_cannot_load_is_an_error_naming_it() {
    let h = Harness::new(&small());
    let cache = CacheDir::open(h.cache.path()).unwrap();
    let ctx = Arc::new(Context::new(h.remote.clone(), cache, 0));
    let err = Dataset::new(ctx, vec!["v2030.01.1".into()])
        .load_pinned(&|_| {})
        .unwrap_err()
        .message;
    assert!(
        err.contains("v2030.01.1") && err.contains("mock://v2030.01.1/release-manifest.json"),
        "{err}"
    );

    let cache = CacheDir::open(h.cache.path()).unwrap();
    let ctx = Arc::new(Context::new(Arc::new(Offline::new("mock://")), cache, 0));
    let err = Dataset::new(ctx, vec![TAG.into()])
        .load_pinned(&|_| {})
        .unwrap_err()
        .message;
    assert!(err.contains("offline"), "{err}");
}

#[test]
fn hostile_catalog_entries_are_skipped() {
    let mut release = small();
    let mut catalog = release.json("ambientcg.json");
    let entries = catalog.as_array_mut().unwrap();
    for id in ["../../etc", "a/b", "..", "", "x\u{0}y"] {
        entries.push(serde_json::json!({"id": id, "maps": ["color"], "available_tiers": ["1k"]}));
    }
    entries.push(serde_json::json!({"id": "EvilMaps", "maps": ["../../passwd", "ok"], "available_tiers": ["1k", "../.."]}));
    entries.push(serde_json::json!("not an object"));
    release.set_json("ambientcg.json", &catalog);
    let h = Harness::new(&release);
    let s = h.session();
    let names: Vec<String> = s
        .list(&format!("{TAG}/ambientcg/1k"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["EvilMaps", "Metal032", "Rock064", "Wood051"]);
    let files: Vec<String> = s
        .list(&format!("{TAG}/ambientcg/1k/EvilMaps"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(files, ["ok.png"]);
    assert_eq!(
        errno(
            s.core
                .lookup(s.ino(&format!("{TAG}/ambientcg/1k")).unwrap(), "..")
                .unwrap_err()
        ),
        Errno::ENOENT
    );
}

mod model {
    //! A random catalog, walked through the core, gives exactly the tree a
    //! model derives from it.

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const TIERS: [&str; 3] = ["1k", "512", "ktx2-512"];
    const CHANNELS: [&str; 3] = ["ao", "color", "normal"];

    /// source → (manifest tiers, id → (tiers, channels))
    type Model = BTreeMap<String, (Vec<String>, BTreeMap<String, (Vec<String>, Vec<String>)>)>;

    fn subset(of: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
        prop::sample::subsequence(of, 0..=of.len())
            .prop_map(|v| v.into_iter().map(String::from).collect())
    }

    fn model() -> impl Strategy<Value = Model> {
        let material = (subset(&TIERS), subset(&CHANNELS));
        let source = (
            subset(&TIERS),
            prop::collection::btree_map("[A-Za-z0-9_]{1,8}", material, 0..6),
        );
        prop::collection::btree_map(
            prop::sample::select(vec!["alpha".to_string(), "beta".to_string()]),
            source,
            1..=2,
        )
    }

    fn expected(model: &Model) -> BTreeSet<String> {
        let mut out = BTreeSet::from(["release-manifest.json".to_string()]);
        for (source, (tiers, materials)) in model {
            out.insert(format!("{source}.json"));
            if tiers.is_empty() {
                continue;
            }
            out.insert(format!("{source}/"));
            for tier in tiers {
                out.insert(format!("{source}/{tier}/"));
                let ext = crate::format::texture_extension(tier);
                for (id, (material_tiers, channels)) in materials {
                    if material_tiers.contains(tier) {
                        out.insert(format!("{source}/{tier}/{id}/"));
                        for channel in channels {
                            out.insert(format!("{source}/{tier}/{id}/{channel}.{ext}"));
                        }
                    }
                }
            }
        }
        out
    }

    fn publish(model: &Model) -> Release {
        let mut files = BTreeMap::new();
        let mut sources = serde_json::Map::new();
        for (source, (tiers, materials)) in model {
            let tiers: serde_json::Map<_, _> = tiers
                .iter()
                .map(|t| (t.clone(), json!({"complete": true})))
                .collect();
            sources.insert(
                source.clone(),
                json!({"catalog": format!("{source}.json"), "tiers": tiers}),
            );
            let catalog: Vec<_> = materials
                .iter()
                .map(|(id, (tiers, channels))| json!({"id": id, "maps": channels, "available_tiers": tiers}))
                .collect();
            files.insert(
                format!("{source}.json"),
                serde_json::to_vec(&catalog).unwrap(),
            );
        }
        let manifest = json!({"schema_version": 3, "sources": sources});
        files.insert(
            "release-manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap(),
        );
        Release {
            tag: TAG.into(),
            files,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn a_walk_of_the_mount_equals_the_model(model in model()) {
            let h = Harness::new(&publish(&model));
            let s = h.session();
            let mut walked = Vec::new();
            s.walk(TAG, &mut walked);
            let walked: BTreeSet<String> = walked.into_iter().collect();
            prop_assert_eq!(walked, expected(&model));
        }
    }
}

/// Packs like a tar: a 512-byte header before each item, each padded to
/// 512 bytes (the real tar writer is in the mount tests).
fn tar_like(items: &[(String, Vec<u8>)]) -> Packed {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for (name, item) in items {
        let mut header = name.as_bytes().to_vec();
        header.resize(512, 0);
        bytes.extend_from_slice(&header);
        offsets.push(bytes.len() as u64);
        bytes.extend_from_slice(item);
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    }
    Packed { bytes, offsets }
}

#[test]
fn a_tar_release_is_listed_from_its_rowmaps_and_read_by_ranges() {
    let original = small();
    let packed = original.packed(&Layout::Tar, &tar_like).release;
    let h = Harness::new(&packed);
    let s = h.session();
    let mut tree = Vec::new();
    s.walk(TAG, &mut tree);
    tree.sort();
    let expected: Vec<String> = original
        .expected_tree()
        .into_iter()
        .filter(|p| !p.contains(".tier_complete"))
        .collect();
    assert_eq!(tree, expected);
    for (path, bytes) in original.textures() {
        assert_eq!(
            s.size(&format!("{TAG}/{path}")).unwrap(),
            bytes.len() as u64
        );
    }
    let log = h.remote.log();
    assert!(
        log.iter()
            .all(|l| l.method == "GET" && l.path.ends_with(".json")),
        "listing with sizes asks for documents only: {log:#?}"
    );
    for (path, bytes) in original.textures() {
        assert_eq!(&s.read(&format!("{TAG}/{path}")).unwrap(), bytes, "{path}");
    }
    let ranges = h
        .remote
        .log()
        .iter()
        .filter(|l| l.method == "RANGE")
        .count();
    assert_eq!(ranges, original.textures().count());
    assert_eq!(h.remote.count("HEAD", "ambientcg/1k/.tier_complete"), 0);
    // A later session reads from the cache.
    drop(s);
    h.remote.clear_log();
    let s = h.session();
    for (path, bytes) in original.textures().take(5) {
        assert_eq!(&s.read(&format!("{TAG}/{path}")).unwrap(), bytes);
    }
    assert!(h.remote.log().iter().all(|l| l.method != "RANGE"));
}

#[test]
fn a_changed_container_is_read_again_and_an_unchanged_one_is_not() {
    let original = small();
    let packed = original.packed(&Layout::Tar, &tar_like).release;
    let h = Harness::new(&packed);
    let path = "ambientcg/1k/Rock064/color.png";
    h.warm(&[path, "ambientcg/1k/Rock064/ao.png"]);
    // The tag is republished with a changed manifest; the containers
    // stay the same except one texture's bytes.
    let mut next = packed.clone();
    let mut manifest: serde_json::Value = next.json("release-manifest.json");
    manifest["republished"] = serde_json::json!(true);
    next.set_json("release-manifest.json", &manifest);
    let tar = "ambientcg-1k.tar";
    let rowmap: serde_json::Value = next.json("ambientcg-1k-rowmap.json");
    let slice = &rowmap["materials"]["Rock064"]["color"];
    let offset = slice["offset"].as_u64().unwrap() as usize;
    let changed = next.files.get_mut(tar).unwrap();
    changed[offset + 40] ^= 0xff;
    let expected = changed[offset..offset + slice["length"].as_u64().unwrap() as usize].to_vec();
    h.publish(&next);
    h.remote.clear_log();
    let s = h.session();
    assert_eq!(s.read(&format!("{TAG}/{path}")).unwrap(), expected);
    let conditional: Vec<_> = h
        .remote
        .log()
        .into_iter()
        .filter(|l| l.method == "RANGE")
        .map(|l| (l.conditional, l.outcome))
        .collect();
    assert_eq!(conditional, [(true, "206".to_string())]);
    // The other tier's container did not change: a 304 proves its file.
    let ktx = "ambientcg/ktx2-512/Rock064/ao.ktx2";
    drop(s);
    h.warm(&[ktx]);
    let mut again = next.clone();
    let mut manifest: serde_json::Value = again.json("release-manifest.json");
    manifest["republished"] = serde_json::json!(2);
    again.set_json("release-manifest.json", &manifest);
    h.publish(&again);
    h.remote.clear_log();
    let s = h.session();
    assert_eq!(
        &s.read(&format!("{TAG}/{ktx}")).unwrap(),
        &original.files[ktx]
    );
    let outcomes: Vec<_> = h
        .remote
        .log()
        .into_iter()
        .filter(|l| l.method == "RANGE")
        .map(|l| l.outcome)
        .collect();
    assert_eq!(outcomes, ["304"]);
}

mod hub;
mod materials;
mod missing;
mod opens;
mod quick;

#[test]
fn while_a_file_is_open_the_kernel_is_given_the_size_of_its_version() {
    let mut release = small();
    let h = Harness::new(&release);
    let path = "ambientcg/512/Wood051/ao.png";
    let other = "ambientcg/1k/Metal032/color.png";
    h.warm(&[path, other]);
    let s = h.session();
    let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
    let opened = s.core.open(ino, libc::O_RDONLY).unwrap();
    let old = release.files[path].clone();
    // The server's copy changes size, and its source's catalog changes
    // (another material): a new version of the tag, whose files of that
    // source have their sizes asked again.
    let bigger = matvisfs_sample::images::png("republished", "ao", 32);
    release.replace_texture(path, bigger.clone());
    publish_a_catalog_change(&h, &s, &mut release, other);
    // The open file still reads its version whole, and the kernel, which
    // keeps one size per inode, is given that version's size.
    assert_eq!(s.core.getattr(ino).unwrap().attr.size, old.len() as u64);
    let bytes = s
        .core
        .read(opened.fh, 0, old.len() as u32, 0)
        .unwrap()
        .bytes;
    assert_eq!(bytes, old);
    s.core.release(opened.fh);
    // Closed: the server's current size.
    assert_eq!(s.core.getattr(ino).unwrap().attr.size, bigger.len() as u64);
    assert_eq!(s.read(&format!("{TAG}/{path}")).unwrap(), bigger);
}

#[test]
fn a_page_cache_read_past_the_versions_last_page_fails_rather_than_pad() {
    let release = small();
    let h = Harness::new(&release);
    let path = "ambientcg/512/Rock064/color.png";
    let size = release.files[path].len() as u64;
    let s = h.session();
    let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
    let page = rustix::param::page_size() as u64;
    let last_page_end = size.div_ceil(page) * page;
    let opened = s.core.open(ino, libc::O_RDONLY).unwrap();
    // Within the last page: the bytes.
    let read = s.core.read(opened.fh, 0, last_page_end as u32, 0).unwrap();
    assert_eq!(read.bytes, release.files[path]);
    // Past it: the kernel holds a larger size than this version's (a reply
    // it dropped), and would pad the file with zeros.
    let past = s.core.read(opened.fh, last_page_end, page as u32, 0);
    assert_eq!(errno(past.unwrap_err()), Errno::ESTALE);
    assert!(s.kernel.dropped.lock().contains(&ino), "the kernel is told");
    // Every later read of that open fails too; a new open reads it whole.
    assert_eq!(
        errno(s.core.read(opened.fh, 0, 4096, 0).unwrap_err()),
        Errno::ESTALE
    );
    s.core.release(opened.fh);
    assert_eq!(
        s.read(&format!("{TAG}/{path}")).unwrap(),
        release.files[path]
    );
    // A direct reader asks for what it wants, past the end too.
    let direct = s.core.open(ino, libc::O_RDONLY | libc::O_DIRECT).unwrap();
    assert!(
        s.core
            .read(direct.fh, last_page_end, page as u32, 0)
            .unwrap()
            .bytes
            .is_empty()
    );
    s.core.release(direct.fh);
    // So does a reader that set `O_DIRECT` on a page-cache open since
    // (`fcntl`), the kernel holding this version's size: its reads are
    // sized past the last page by the kernel, not by a larger size.
    let cached = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert!(matches!(cached.mode, crate::fs::ReadMode::PageCache { .. }));
    let read = s
        .core
        .read(cached.fh, 0, (last_page_end + page) as u32, libc::O_DIRECT)
        .unwrap();
    assert_eq!(read.bytes, release.files[path]);
    assert_eq!(
        s.read(&format!("{TAG}/{path}")).unwrap(),
        release.files[path]
    );
    s.core.release(cached.fh);
}

#[test]
fn a_pass_over_a_directory_outlives_a_burst_of_other_listings() {
    // Hundreds of material directories.
    let mut spec = ReleaseSpec::small(TAG);
    spec.sources[0].materials = (0..200).map(|i| format!("Mat{i:03}")).collect();
    let release = Release::generate(&spec);
    let h = Harness::new(&release);
    let s = h.session();
    let dirs: Vec<String> = ["1k", "512", "ktx2-512"]
        .iter()
        .flat_map(|tier| {
            let tier_dir = format!("{TAG}/ambientcg/{tier}");
            s.list(&tier_dir)
                .unwrap()
                .into_iter()
                .filter(|(_, kind)| *kind == Kind::Dir)
                .map(move |(name, _)| format!("{tier_dir}/{name}"))
        })
        .collect();
    assert!(dirs.len() > 500, "{}", dirs.len());
    let dir = s.ino(&dirs[0]).unwrap();
    let first = s.core.listing(dir, 0).unwrap();
    let mut resume = 0;
    s.core.fill(&first, 0, false, |_, next| {
        resume = next;
        true
    });
    // Every other directory listed (a walk after a new version) before the
    // pass goes on: the pass still reads the listing it began with.
    for path in &dirs[1..] {
        let ino = s.ino(path).unwrap();
        s.core.listing(ino, 0).unwrap();
    }
    let rest = s.core.listing(dir, resume).unwrap();
    assert!(
        Arc::ptr_eq(&rest, &first),
        "the listing the pass began with"
    );
}

/// The kernel keeps a directory's entries in its own cache, with the
/// offsets they were handed out with, for as long as it likes: a pass
/// reading from that cache asks the mount to go on at an offset whose
/// listing may be long dropped, after the tag moved on elsewhere (a file
/// found absent, a new version). Where the directory itself did not
/// change, the pass goes on.
#[test]
fn a_pass_goes_on_after_its_listing_was_dropped_when_the_directory_is_unchanged() {
    let mut release = small();
    let h = Harness::new(&release);
    let (other, _) = release
        .textures()
        .find(|(p, _)| p.starts_with("gpuopen/"))
        .map(|(p, b)| (p.clone(), b.clone()))
        .unwrap();
    h.warm(&["ambientcg/1k/Metal032/color.png", &other]);
    let s = h.session();
    let dir = s.ino(&format!("{TAG}/ambientcg/512")).unwrap();
    let first = s.core.listing(dir, 0).unwrap();
    let mut before = Vec::new();
    s.core.fill(&first, 0, false, |e, next| {
        before.push((e.name.to_string(), next));
        false
    });
    let (_, resume) = before[2].clone();
    // Another source changes: a new version of the tag, this directory
    // the same.
    publish_a_catalog_change(&h, &s, &mut release, &other);
    // The listing the pass began with is dropped.
    s.core.listings.forget_all();
    let rest = s.core.listing(dir, resume).unwrap();
    let mut after = Vec::new();
    s.core.fill(&rest, resume, false, |e, next| {
        after.push((e.name.to_string(), next));
        false
    });
    assert_eq!(after, before[3..].to_vec());
}

#[test]
fn one_pass_over_a_directory_never_mixes_two_versions_of_it() {
    let mut release = small();
    let h = Harness::new(&release);
    h.warm(&["ambientcg/1k/Metal032/color.png"]);
    // The catalog gains a material in this tier.
    let mut catalog = release.json("ambientcg.json");
    let mut added = catalog[0].clone();
    added["id"] = serde_json::json!("Aaa001");
    catalog.as_array_mut().unwrap().insert(0, added);
    release.set_json("ambientcg.json", &catalog);
    h.publish(&release);
    let s = h.session();
    let dir = s.ino(&format!("{TAG}/ambientcg/512")).unwrap();
    let names = |listing: &super::Listing, from: u64| {
        let mut out = Vec::new();
        s.core.fill(listing, from, false, |e, next| {
            out.push((e.name.to_string(), next));
            false
        });
        out
    };
    let first = s.core.listing(dir, 0).unwrap();
    let before = names(&first, 0);
    // The kernel's first read stops after "." , ".." and one material.
    let (_, resume) = before[2].clone();
    assert!(!before.iter().any(|(n, _)| n == "Aaa001"));
    // The change is found by an open.
    s.read(&format!("{TAG}/ambientcg/1k/Rock064/color.png"))
        .unwrap();
    // The pass goes on in the listing it began with.
    let rest = s.core.listing(dir, resume).unwrap();
    assert!(Arc::ptr_eq(&rest, &first));
    assert_eq!(names(&rest, resume), before[3..].to_vec());
    // A new pass sees the new material.
    let now = s.core.listing(dir, 0).unwrap();
    assert!(names(&now, 0).iter().any(|(n, _)| n == "Aaa001"));
    // An offset of a listing no longer kept, the directory changed since:
    // the pass fails rather than going on in another version.
    let (stamp, index) = super::listing::split_offset(resume);
    let gone = super::listing::offset(stamp + 7, index);
    assert!(matches!(
        s.core.listing(dir, gone),
        Err(FsError::ListingChanged)
    ));
}

/// The readdirplus entry of `name` in the directory `dir`.
fn listed_entry(s: &Session, dir: u64, name: &str) -> crate::fs::attr::Entry {
    let listing = s.core.listing(dir, 0).unwrap();
    let mut found = None;
    s.core.fill(&listing, 0, true, |e, _| {
        if e.name == name {
            found = e.entry;
        }
        false
    });
    found.expect("listed")
}

/// A file listed with a placeholder size is one whose size the kernel may
/// hold wrong: its opens read past the page cache, even once its size is
/// known and given, as the reply giving it may be dropped.
#[test]
fn a_file_listed_with_a_placeholder_size_is_read_past_the_page_cache() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    let path = "ambientcg/512/Rock064/normal.png";
    let dir = s.ino(&format!("{TAG}/ambientcg/512/Rock064")).unwrap();
    assert_eq!(listed_entry(&s, dir, "normal.png").attr.size, 0);
    let ino = s.ino(&format!("{TAG}/{path}")).unwrap();
    let looked_up = s.core.getattr(ino).unwrap();
    assert_eq!(looked_up.attr.size, release.files[path].len() as u64);
    let open = s.core.open(ino, libc::O_RDONLY).unwrap();
    assert!(matches!(open.mode, crate::fs::ReadMode::Direct));
    s.core.release(open.fh);
}

/// Where the kernel may hold the inode (files of it open), or reads every
/// file through its page cache (no-open mode), a file of unknown size is
/// listed with a size the kernel refuses: it keeps the size it holds.
#[test]
fn a_file_the_kernel_holds_or_reads_without_opens_gets_a_refused_placeholder() {
    let release = small();
    let h = Harness::new(&release);
    let listed_size = |s: &Session, no_open: bool, held: bool| {
        if no_open {
            s.core.set_no_open();
        }
        let dir = s.ino(&format!("{TAG}/ambientcg/512/Rock064")).unwrap();
        let key = NodeKey::root()
            .child(TAG)
            .child("ambientcg")
            .child("512")
            .child("Rock064")
            .child("normal.png");
        if held {
            s.core.inodes.lookup(&key);
        }
        listed_entry(s, dir, "normal.png").attr.size
    };
    assert_eq!(listed_size(&h.session(), false, false), 0);
    assert_eq!(
        listed_size(&h.session(), false, true),
        super::readdir::REFUSED_SIZE
    );
    assert_eq!(
        listed_size(&h.session(), true, false),
        super::readdir::REFUSED_SIZE
    );
    assert!(super::readdir::REFUSED_SIZE > i64::MAX as u64);
}
