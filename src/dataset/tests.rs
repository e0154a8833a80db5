//! A tag's core against the in-memory server, where the order of two
//! threads matters.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Context, Tag};
use crate::digest::Sha256Digest;
use crate::format::Location;
use crate::remote::mock::MockRemote;
use crate::remote::{Answer, BodySink, FetchError, Remote, Request};
use crate::store::CacheDir;
use matvisfs_sample::{Release, ReleaseSpec};

const TAG: &str = "v2026.04.2";
const CATALOG: &str = "ambientcg.json";
/// The longest a test waits for a thread to get where it is expected.
const DEADLINE: Duration = Duration::from_secs(30);

/// The mock server, with the first new version of the tag held just
/// before it is put in place (where the redirects of the version before
/// are forgotten) until another has landed, or for at most `patience`.
struct Holding {
    inner: Arc<MockRemote>,
    hold: Mutex<Option<Hold>>,
}

struct Hold {
    entered: Sender<()>,
    landed: Receiver<()>,
    patience: Duration,
}

impl Remote for Holding {
    fn send(&self, request: Request<'_>, sink: &mut dyn BodySink) -> Result<Answer, FetchError> {
        self.inner.send(request, sink)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        self.inner.url(tag, file)
    }

    fn origin(&self) -> String {
        self.inner.origin()
    }

    fn has_hub(&self) -> bool {
        self.inner.has_hub()
    }

    fn forget_redirects(&self) {
        let Some(hold) = self.hold.lock().take() else {
            return;
        };
        hold.entered.send(()).unwrap();
        // Held until the other version landed; a version that cannot land
        // meanwhile is let go after the patience.
        let _ = hold.landed.recv_timeout(hold.patience);
    }
}

fn context(remote: Arc<dyn Remote>, cache: &std::path::Path) -> Arc<Context> {
    Arc::new(Context::new(remote, CacheDir::open(cache).unwrap(), 0))
}

#[test]
fn a_generation_never_goes_backwards_when_two_changes_land_at_once() {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let mock = Arc::new(MockRemote::default());
    let publish = |release: &Release| {
        for (path, bytes) in &release.files {
            mock.put(&release.tag, path, bytes.clone());
        }
    };
    publish(&release);
    let cache = tempfile::tempdir().unwrap();
    {
        // A first session caches the manifest and the catalog.
        let ctx = context(mock.clone(), cache.path());
        let tag = Tag::load(ctx.clone(), TAG).unwrap();
        tag.refresh_document(CATALOG).unwrap();
        ctx.content.flush();
    }
    // Both the manifest and the catalog change on the server.
    let mut manifest = release.json("release-manifest.json");
    manifest["sources"]["ambientcg"]["tiers"]["256"] = serde_json::json!({"complete": true});
    release.set_json("release-manifest.json", &manifest);
    let mut catalog = release.json(CATALOG);
    catalog[0]["mat_vis"]["name"] = serde_json::json!("renamed");
    release.set_json(CATALOG, &catalog);
    publish(&release);

    let (entered, entered_rx) = channel();
    let (landed, landed_rx) = channel();
    let remote = Arc::new(Holding {
        inner: mock.clone(),
        hold: Mutex::new(Some(Hold {
            entered,
            landed: landed_rx,
            patience: Duration::from_secs(1),
        })),
    });
    let ctx = context(remote, cache.path());
    let tag = Tag::load(ctx.clone(), TAG).unwrap();
    let first = tag.view().generation;
    std::thread::scope(|scope| {
        // The manifest's revalidation finds the new manifest and is held
        // just before its version is put in place...
        let manifest_check = scope.spawn(|| tag.revalidate().unwrap());
        entered_rx.recv_timeout(DEADLINE).unwrap();
        // ... while the catalog's finds the new catalog.
        let catalog_check = scope.spawn(|| {
            tag.refresh_document(CATALOG).unwrap();
            let _ = landed.send(());
            tag.view().generation
        });
        let after_catalog = catalog_check.join().unwrap();
        manifest_check.join().unwrap();
        assert!(after_catalog > first);
    });
    let view = tag.view();
    // Two new versions, the current one the newer, in memory as on disk.
    assert_eq!(view.generation, first + 2);
    assert_eq!(tag.report()["generation"], view.generation);
    // Both changes are in it.
    assert!(
        view.manifest
            .sources
            .iter()
            .any(|s| s.tiers.iter().any(|t| t == "256"))
    );
    assert_eq!(
        view.documents[CATALOG].blob.digest,
        Sha256Digest::of(&release.files[CATALOG])
    );
    // What the session still writes lands before its directory goes.
    ctx.content.flush();
}

/// The mock server, with the first GET of a MaterialX map held until
/// released.
struct HoldingMap {
    inner: Arc<MockRemote>,
    hold: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

impl Remote for HoldingMap {
    fn send(&self, request: Request<'_>, sink: &mut dyn BodySink) -> Result<Answer, FetchError> {
        if let Request::Get { file, .. } = &request {
            if matches!(file, Location::Revision(path) if path.ends_with("-mtlx.json")) {
                let hold = self.hold.lock().take();
                if let Some((entered, release)) = hold {
                    entered.send(()).unwrap();
                    let _ = release.recv_timeout(DEADLINE);
                }
            }
        }
        self.inner.send(request, sink)
    }

    fn url(&self, tag: &str, file: &Location) -> String {
        self.inner.url(tag, file)
    }

    fn origin(&self) -> String {
        self.inner.origin()
    }
}

#[test]
fn a_listing_under_a_new_version_never_waits_for_a_load_begun_under_the_old() {
    const MAP: &str = "ambientcg-mtlx.json";
    const DIR: &str = "ambientcg/1k/Wood051";
    // The manifest names a map the server does not have.
    let mut spec = ReleaseSpec::small(TAG);
    spec.sources[0].mtlx = true;
    let mut release = Release::generate(&spec);
    let mock = Arc::new(MockRemote::default());
    for (path, bytes) in &release.files {
        if path != MAP {
            mock.put(&release.tag, path, bytes.clone());
        }
    }
    let cache = tempfile::tempdir().unwrap();
    let (entered, entered_rx) = channel();
    let (release_hold, released) = channel();
    let remote = Arc::new(HoldingMap {
        inner: mock.clone(),
        hold: Mutex::new(Some((entered, released))),
    });
    let ctx = context(remote, cache.path());
    let tag = Tag::load(ctx.clone(), TAG).unwrap();
    tag.refresh_document(CATALOG).unwrap();
    let first = tag.view().generation;
    std::thread::scope(|scope| {
        // A listing loads the map the server lacks, and is held there...
        let before = scope.spawn(|| tag.list(DIR).map(|(entries, _)| entries));
        entered_rx.recv_timeout(DEADLINE).unwrap();
        // ... while a new version of the catalog begins.
        let mut catalog = release.json(CATALOG);
        catalog[0]["note"] = serde_json::json!("again");
        release.set_json(CATALOG, &catalog);
        mock.put(TAG, CATALOG, release.files[CATALOG].clone());
        tag.refresh();
        assert!(tag.view().generation > first);
        // A listing under the new version asks the server itself.
        let after = scope.spawn(|| tag.list(DIR).map(|(entries, _)| entries));
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while !after.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = release_hold.send(());
        let after = after.join().unwrap();
        let before = before.join().unwrap();
        assert!(after.is_ok(), "{:?}", after.err());
        assert!(before.is_ok(), "{:?}", before.err());
    });
    ctx.content.flush();
}
