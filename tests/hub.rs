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
    // 8 API calls per 5 minutes: 2 at once, then one every 50 s.
    let mount = Mount::builder(&base)
        .arg("--hf-limits")
        .arg("3000,8")
        .arg("--retry-max-wait")
        .arg("3")
        .start();
    stat_tier(&served, &mount);
    let api = requests(&served, "api/");
    assert!(api[0].contains(" 429 "), "{api:#?}");
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
