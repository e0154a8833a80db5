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
