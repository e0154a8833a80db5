//! A real mount of a dataset in the Hugging Face Hub's layout, with the
//! test server's Hub API: releases listed at the root from the refs, sizes
//! from paginated tree listings instead of a HEAD per file, `--repo` and
//! `HF_ENDPOINT`, and the pacing under the Hub's rate limits.

mod common;

use std::fs;
use std::path::Path;

use common::{Mount, Served, TAG, read};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::{Fault, FaultRule, ServerOptions};

const REPO: &str = "gerchowl/mat-vis";
const NEXT: &str = "v2026.05.0-rc1";

/// A release with `materials` materials per `ambientcg` tier, beside a
/// second release, with tree pages of `page` entries.
fn hub_served(materials: usize, page: usize) -> Served {
    let mut spec = ReleaseSpec::small(TAG);
    spec.sources[0].materials = (0..materials).map(|i| format!("Mat{i:03}")).collect();
    let served = Served::new(Release::generate(&spec));
    Release::generate(&ReleaseSpec::small(NEXT))
        .write_to(served.dir.path())
        .unwrap();
    served.server.set_options(ServerOptions {
        tree_page_size: page,
        ..ServerOptions::default()
    });
    served
}

fn requests(served: &Served, prefix: &str) -> Vec<String> {
    served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(prefix))
        .map(|r| format!("{} {} {}", r.method, r.status, r.path))
        .collect()
}

fn heads(served: &Served) -> usize {
    served
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD")
        .count()
}

/// `stat` of every texture of `ambientcg/512` (a tier whose sizes the
/// catalog does not give), checked against the fixture.
fn stat_tier(served: &Served, mount: &Mount) -> usize {
    let mut n = 0;
    for (path, bytes) in served.release.textures() {
        if path.starts_with("ambientcg/512/") {
            let size = fs::metadata(mount.tag_path(path)).unwrap().len();
            assert_eq!(size, bytes.len() as u64, "{path}");
            n += 1;
        }
    }
    n
}

#[test]
fn a_hub_dataset_lists_its_releases_and_sizes_a_tier_in_a_few_api_calls() {
    let served = hub_served(30, 25);
    let base = served.server.hub_base_url(REPO);
    let mount = Mount::builder(&base).start();

    let mut root: Vec<String> = fs::read_dir(&mount.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .collect();
    root.sort();
    assert_eq!(root, ["latest", TAG, NEXT], "the releases from the refs");
    // The newest final release, not the newer release candidate.
    assert_eq!(
        fs::read_link(mount.path.join("latest")).unwrap(),
        Path::new(TAG)
    );
    assert_eq!(requests(&served, "api/refs").len(), 1);

    let textures = stat_tier(&served, &mount);
    assert_eq!(textures, 120);
    assert_eq!(heads(&served), 0, "no HEAD per file");
    let api = requests(&served, "api/tree/");
    // Two materials (one page each), then the tier: 30 directories, 120
    // textures and the tier's marker, 25 a page.
    assert_eq!(api.len(), 2 + 7, "{api:#?}");
    assert!(
        api.iter().any(|r| r.contains("?cursor=")),
        "the listing followed its pages: {api:#?}"
    );

    // Reads verify against the sha256 the listing gave.
    for (path, bytes) in served.release.textures().take(6) {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    let another = mount
        .path
        .join(NEXT)
        .join("ambientcg/512/Rock064/color.png");
    assert!(fs::metadata(another).unwrap().len() > 0);

    let stats: serde_json::Value =
        serde_json::from_slice(&read(&mount.path.join(".matvisfs/stats.json")).unwrap()).unwrap();
    // The refs, the tier, and the material of the other release.
    assert_eq!(stats["requests"]["api"]["200"], 1 + 9 + 1, "{stats}");
}

#[test]
fn repo_and_hf_endpoint_name_the_dataset_on_the_hub() {
    let served = hub_served(3, 1000);
    let hub = format!("http://{}", served.server.addr());
    let mount = Mount::builder("unused")
        .no_base_url()
        .arg("--repo")
        .arg(REPO)
        .env("HF_ENDPOINT", &hub)
        .start();
    let (path, bytes) = served.release.textures().next().unwrap();
    assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    assert!(
        served
            .server
            .requests()
            .iter()
            .any(|r| r.path == format!("{TAG}/release-manifest.json")),
        "files came from the repository's resolve endpoint"
    );
}

#[test]
fn api_calls_stay_within_the_budget_and_a_429_is_waited_out() {
    let served = hub_served(30, 25);
    let base = served.server.hub_base_url(REPO);
    // A first page answered 429 with Retry-After: 1, then normally.
    served.server.inject(
        FaultRule::new(
            "api/tree/",
            Fault::Status {
                code: 429,
                retry_after: Some(1),
            },
        )
        .times(1),
    );
    // 8 API calls per 5 minutes: 2 at once, then one every 50 s. The test
    // server is the Hub here (HF_ENDPOINT): only the Hub's host is paced.
    let mount = Mount::builder(&base)
        .env("HF_ENDPOINT", &format!("http://{}", served.server.addr()))
        .arg("--hf-limits")
        .arg("3000,8")
        .arg("--retry-max-wait")
        .arg("3")
        .start();
    stat_tier(&served, &mount);
    let api = requests(&served, "api/");
    // The refs (the API's probe), then the first page, answered 429.
    // The listing names the commit the tag's manifest resolved to.
    assert_eq!(api[0], "GET 200 api/refs", "{api:#?}");
    assert!(
        api[1].starts_with("GET 429 api/tree/") && api[1].ends_with("/ambientcg/512/Mat000"),
        "{api:#?}"
    );
    assert!(api.len() <= 3, "the budget held: {api:#?}");
    assert!(
        heads(&served) > 0,
        "sizes the budget refused came from HEADs"
    );
}

#[test]
fn no_hf_api_keeps_to_the_resolve_endpoint() {
    let served = hub_served(3, 1000);
    let mount = Mount::builder(&served.server.hub_base_url(REPO))
        .arg("--no-hf-api")
        .start();
    let root = fs::read_dir(&mount.path).unwrap().count();
    let textures = stat_tier(&served, &mount);
    assert!(requests(&served, "api/").is_empty());
    assert_eq!(heads(&served), textures, "one HEAD per size");
    assert_eq!(
        root, 3,
        "the pinned tag, `latest` and the control directory only"
    );
}

#[test]
fn a_hub_layout_without_the_api_is_asked_once_and_then_left_alone() {
    let served = hub_served(3, 1000);
    served.server.set_options(ServerOptions {
        hub_api: false,
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&served.server.hub_base_url(REPO)).start();
    fs::read_dir(&mount.path).unwrap().count();
    let textures = stat_tier(&served, &mount);
    let api = requests(&served, "api/");
    assert_eq!(api, ["GET 404 api/refs"], "one call found no API");
    assert_eq!(heads(&served), textures, "sizes from HEADs");
}

/// A release in the Hub's layout whose catalog has no hash for one `1k`
/// channel of a material, so that its size comes from the tree listing of
/// that material; returns the material's color (hashed) and the unhashed
/// file.
fn hub_served_one_hash_missing() -> (Served, String, String) {
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let mut catalog = release.json("ambientcg.json");
    let entry = &mut catalog.as_array_mut().unwrap()[0];
    let id = entry["id"].as_str().unwrap().to_string();
    entry["texture_hashes"]
        .as_object_mut()
        .unwrap()
        .remove("ao");
    release.set_json("ambientcg.json", &catalog);
    (
        Served::new(release),
        format!("ambientcg/1k/{id}/color.png"),
        format!("ambientcg/1k/{id}/ao.png"),
    )
}

#[test]
fn a_tree_listing_that_contradicts_the_catalog_serves_the_catalogs_bytes() {
    let (served, color, unhashed) = hub_served_one_hash_missing();
    let base = served.server.hub_base_url(REPO);
    let mount = Mount::builder(&base).start();
    // Another file of the same tier cached first.
    let (other, other_bytes) = served
        .release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/1k/") && !p.contains(&color[..20]))
        .map(|(p, b)| (p.clone(), b.clone()))
        .unwrap();
    assert_eq!(read(&mount.tag_path(&other)).unwrap(), other_bytes);
    // The listing gives the material's color the other file's hash and size.
    let mut options = ServerOptions::default();
    options.tree_lies.insert(
        color.clone(),
        (
            matvisfs_sample::sha256_hex(&other_bytes),
            other_bytes.len() as u64,
        ),
    );
    served.server.set_options(options);
    let unhashed_size = fs::metadata(mount.tag_path(&unhashed)).unwrap().len();
    assert_eq!(unhashed_size, served.release.files[&unhashed].len() as u64);
    assert_eq!(
        requests(&served, "api/tree/").len(),
        1,
        "the material was listed"
    );
    let truth = &served.release.files[&color];
    assert_eq!(
        fs::metadata(mount.tag_path(&color)).unwrap().len(),
        truth.len() as u64,
        "the catalog's size"
    );
    assert_eq!(&read(&mount.tag_path(&color)).unwrap(), truth);
}

#[test]
fn endless_tree_pages_cost_a_stat_one_timeout_and_little_memory() {
    use matvisfs_testkit::devserver::TreePages;
    let served = hub_served(3, 1000);
    served.server.set_options(ServerOptions {
        tree_pages: TreePages::Endless { padding: 2 << 20 },
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&served.server.hub_base_url(REPO))
        .timeout(3)
        .arg("--retries")
        .arg("1")
        .start();
    let rss_before = common::peak_rss(mount.pid().unwrap()).unwrap();
    let (path, bytes) = served
        .release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/512/"))
        .unwrap();
    let began = std::time::Instant::now();
    let size = fs::metadata(mount.tag_path(path)).unwrap().len();
    let took = began.elapsed();
    assert_eq!(size, bytes.len() as u64);
    // One attempt's time for the whole listing (3 s), then its files: far
    // below the bound of a request with its retry (2 x 3 s plus backoff).
    assert!(took.as_secs() < 6, "the stat took {took:?}");
    let pages = requests(&served, "api/tree/").len();
    assert!(pages >= 2, "the listing followed its pages: {pages}");
    let rss_after = common::peak_rss(mount.pid().unwrap()).unwrap();
    assert!(
        rss_after < rss_before + (64 << 20),
        "peak memory grew from {rss_before} to {rss_after} bytes over {pages} pages"
    );
    // The listing's own files were kept: the material's other channels
    // cost no request. The page the listing gave up on at its deadline is
    // logged once the server has built it (2 MiB), so the log is cleared
    // only once it has.
    served.server.settle();
    served.server.clear_requests();
    let material = Path::new(path).parent().unwrap();
    for (other, bytes) in served.release.textures() {
        if Path::new(other).parent() == Some(material) {
            assert_eq!(
                fs::metadata(mount.tag_path(other)).unwrap().len(),
                bytes.len() as u64
            );
        }
    }
    assert_eq!(
        served.server.requests().len(),
        0,
        "{:#?}",
        served.server.requests()
    );
}

#[test]
fn a_next_link_to_the_page_itself_ends_the_listing() {
    use matvisfs_testkit::devserver::TreePages;
    let served = hub_served(3, 1000);
    served.server.set_options(ServerOptions {
        tree_pages: TreePages::LoopToSelf,
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&served.server.hub_base_url(REPO)).start();
    let (path, bytes) = served
        .release
        .textures()
        .find(|(p, _)| p.starts_with("ambientcg/512/"))
        .unwrap();
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        bytes.len() as u64
    );
    assert_eq!(
        requests(&served, "api/tree/").len(),
        1,
        "the page was read once"
    );
    assert_eq!(heads(&served), 0, "its files came from the one page");
}
