//! What real releases contain beside a regular tree, through real mounts
//! against the test server: files the catalog names that the server lacks,
//! catalog entries of every shape (scalar-only, failed, unsorted), tiers
//! that are empty, not marked complete or marked incomplete, the preview
//! tier, manifests without the `mtlx` key or with keys of schema 2, JSON
//! documents kept in LFS, and the reference client's environment.

mod common;

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::{Mount, Served, TAG, errno, names, read};
use matvisfs_sample::{Quirks, Release, ReleaseSpec, ScalarEntry, ScalarTiers, THUMB_TIER};
use matvisfs_testkit::devserver::{Fault, FaultRule, ServerOptions};
use serde_json::{Value, json};

const UUID: &str = "0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01";

fn spec_with(quirks: Quirks) -> ReleaseSpec {
    let mut spec = ReleaseSpec::small(TAG);
    spec.quirks = quirks;
    spec
}

/// The sibling files a generated document reads: `value="<file>"` of the
/// MaterialX `filename` inputs, `@./<file>@` of the USD assets.
fn referenced(text: &str) -> Vec<String> {
    let mut files = Vec::new();
    for (start, end) in [("type=\"filename\" value=\"", '"'), ("@./", '@')] {
        let mut rest = text;
        while let Some(at) = rest.find(start) {
            rest = &rest[at + start.len()..];
            let file = rest.split(end).next().unwrap();
            files.push(file.to_string());
        }
    }
    files.sort();
    files
}

/// Requests for exactly `<TAG>/<path>` (the resolve endpoint), or the CDN.
fn asked(served: &Served, path: &str) -> usize {
    let resolve = format!("{TAG}/{path}");
    let cdn = format!("cdn/{resolve}");
    served
        .server
        .requests()
        .iter()
        .filter(|r| r.path == resolve || r.path == cdn)
        .count()
}

fn count(stats: &Value, kind: &str, status: &str) -> u64 {
    stats["requests"][kind][status].as_u64().unwrap_or(0)
}

const MISSING: &str = "ambientcg/512/Rock064/normal.png";
const OPACITY: &str = "gpuopen/1k/0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01/opacity.png";

/// The small release with a 512 file the catalog names but that was never
/// published, and an `opacity` channel in every gpuopen material's `maps`
/// that was never uploaded.
fn with_missing_files() -> Release {
    Release::generate(&spec_with(Quirks {
        unpublished: vec![MISSING.into()],
        unuploaded_channels: vec![("gpuopen".into(), "opacity".into())],
        ..Quirks::default()
    }))
}

#[test]
fn a_file_the_server_lacks_is_enoent_then_unlisted_and_left_out_of_the_documents() {
    let mut served = Served::new(with_missing_files());
    let cache = tempfile::tempdir().unwrap();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    let dir = mount.tag_path("ambientcg/512/Rock064");
    assert!(
        names(&dir).contains(&"normal.png".to_string()),
        "listed from the catalog"
    );
    // A document read, and held open, before the server was asked.
    let mtlx_path = dir.join("Rock064.mtlx");
    let held = fs::File::open(&mtlx_path).unwrap();
    let mut before = String::new();
    (&held).read_to_string(&mut before).unwrap();
    assert!(referenced(&before).contains(&"normal.png".to_string()));

    // The size is asked of the server: 404. The name is gone at once.
    let missing = mount.tag_path(MISSING);
    assert_eq!(errno(fs::metadata(&missing)), Some(libc::ENOENT));
    assert_eq!(errno(fs::File::open(&missing)), Some(libc::ENOENT));
    assert_eq!(
        names(&dir),
        [
            "Rock064.mtlx",
            "Rock064.usda",
            "ao.png",
            "color.png",
            "roughness.png"
        ]
    );
    assert_eq!(asked(&served, MISSING), 1, "asked once");

    // The open document reads its version whole; a new open cannot share
    // the kernel's pages with it, and once it is closed the next open gets
    // the new version, which names only the files that are there.
    let mut again = vec![0; before.len()];
    held.read_exact_at(&mut again, 0).unwrap();
    assert_eq!(again, before.as_bytes());
    assert_eq!(errno(fs::File::open(&mtlx_path)), Some(libc::ESTALE));
    drop(held);
    // The kernel releases a closed file in the background.
    common::wait_for("the old version's release", Duration::from_secs(10), || {
        fs::File::open(&mtlx_path).is_ok()
    });
    let after = String::from_utf8(read(&mtlx_path).unwrap()).unwrap();
    assert_eq!(fs::metadata(&mtlx_path).unwrap().len(), after.len() as u64);
    let listed = names(&dir);
    for document in ["Rock064.mtlx", "Rock064.usda"] {
        let text = String::from_utf8(read(&dir.join(document)).unwrap()).unwrap();
        let files = referenced(&text);
        assert_eq!(
            files,
            ["ao.png", "color.png", "roughness.png"],
            "{document}"
        );
        assert!(files.iter().all(|f| listed.contains(f)));
    }

    // A channel never uploaded, found by `ls -l`: the same.
    let material = mount.tag_path(&format!("gpuopen/1k/{UUID}"));
    assert!(names(&material).contains(&"opacity.png".to_string()));
    assert_eq!(
        errno(fs::metadata(mount.tag_path(OPACITY))),
        Some(libc::ENOENT)
    );
    assert!(!names(&material).contains(&"opacity.png".to_string()));
    let text = String::from_utf8(read(&material.join(format!("{UUID}.usda"))).unwrap()).unwrap();
    assert_eq!(
        referenced(&text),
        ["color.png", "metalness.png", "normal.png"]
    );

    let stats = mount.stats();
    let tag = &stats["tags"][TAG];
    assert_eq!(tag["missing"]["count"], 2, "{stats:#}");
    assert_eq!(tag["missing"]["examples"], json!([MISSING, OPACITY]));
    assert_eq!(count(&stats, "size", "404"), 2, "{stats:#}");
    assert_eq!(tag["generation"], 1, "not a new version of the tag");

    // Not kept past the session: the server gains the file (manifest and
    // catalog untouched), and the next mount over the same cache serves it.
    drop(mount);
    let mut fixed = served.release.clone();
    let bytes = matvisfs_sample::images::png("fixed", "normal", 8);
    fixed.files.insert(MISSING.into(), bytes.clone());
    served.republish(fixed);
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert!(names(&mount.tag_path("ambientcg/512/Rock064")).contains(&"normal.png".into()));
    assert_eq!(read(&mount.tag_path(MISSING)).unwrap(), bytes);
    assert_eq!(mount.stats()["tags"][TAG]["missing"]["count"], 0);
}

#[test]
fn the_next_session_over_the_same_cache_asks_again() {
    let served = Served::new(with_missing_files());
    let cache = tempfile::tempdir().unwrap();
    for session in 0..2 {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        assert_eq!(
            errno(fs::metadata(mount.tag_path(MISSING))),
            Some(libc::ENOENT)
        );
        assert_eq!(asked(&served, MISSING), session + 1);
        assert_eq!(mount.stats()["tags"][TAG]["missing"]["count"], 1);
    }
}

#[test]
fn a_network_failure_stays_eio_and_the_file_stays_listed() {
    let mut served = Served::new(with_missing_files());
    let mount = Mount::builder(&served.base_url())
        .arg("--retries")
        .arg("0")
        .start();
    let present = "ambientcg/512/Rock064/color.png";
    let eio = |path: &str| errno(fs::metadata(mount.tag_path(path))) == Some(libc::EIO);
    // The server answers 503, then cannot be reached at all.
    for path in [MISSING, present] {
        let unavailable = Fault::Status {
            code: 503,
            retry_after: None,
        };
        served
            .server
            .inject(FaultRule::new(path, unavailable).times(1));
        assert!(eio(path), "{path}");
    }
    served.server.stop();
    for path in [MISSING, present] {
        assert!(eio(path), "{path}");
    }
    let dir = mount.tag_path("ambientcg/512/Rock064");
    assert!(names(&dir).contains(&"normal.png".to_string()));
    assert_eq!(mount.stats()["tags"][TAG]["missing"]["count"], 0);
    // Answered for real: one is there, the other is not.
    served.server.restart().unwrap();
    common::wait_for(
        "the server to answer again",
        Duration::from_secs(20),
        || fs::metadata(mount.tag_path(present)).is_ok(),
    );
    assert_eq!(
        read(&mount.tag_path(present)).unwrap(),
        served.release.files[present]
    );
    assert_eq!(
        errno(fs::metadata(mount.tag_path(MISSING))),
        Some(libc::ENOENT)
    );
    assert!(!names(&dir).contains(&"normal.png".to_string()));
}

const REPO: &str = "gerchowl/mat-vis";

#[test]
fn a_complete_tree_listing_proves_a_file_absent_without_asking_for_it() {
    use matvisfs_testkit::devserver::TreePages;
    for pages in [TreePages::Honest, TreePages::LoopToSelf] {
        let served = Served::new(with_missing_files());
        served.server.set_options(ServerOptions {
            tree_pages: pages,
            ..ServerOptions::default()
        });
        let mount = Mount::builder(&served.server.hub_base_url(REPO)).start();
        let dir = mount.tag_path("ambientcg/512/Rock064");
        // Its size lists the material's directory, which has no such file.
        assert_eq!(
            errno(fs::metadata(mount.tag_path(MISSING))),
            Some(libc::ENOENT)
        );
        assert!(!names(&dir).contains(&"normal.png".to_string()));
        assert!(fs::metadata(dir.join("color.png")).unwrap().len() > 0);
        let heads = served.server.count("HEAD", MISSING);
        match pages {
            TreePages::Honest => assert_eq!(heads, 0, "the listing said it"),
            // A listing cut short (its next page is itself) proves nothing.
            _ => assert_eq!(heads, 1),
        }
        assert_eq!(mount.stats()["tags"][TAG]["missing"]["count"], 1);
    }
}

#[test]
fn the_thumb_tier_holds_only_previews_and_no_other_tier_names_one() {
    let mut spec = ReleaseSpec::small(TAG);
    spec.sources[0].tiers.push(THUMB_TIER.into());
    let served = Served::new(Release::generate(&spec));
    let mount = Mount::builder(&served.base_url()).start();
    let source = mount.tag_path("ambientcg");
    assert!(names(&source).contains(&THUMB_TIER.to_string()));
    let thumb = mount.tag_path("ambientcg/thumb/Rock064/thumb.png");
    assert_eq!(
        names(&mount.tag_path("ambientcg/thumb/Rock064")),
        ["thumb.png"]
    );
    assert_eq!(
        read(&thumb).unwrap(),
        served.release.files["ambientcg/thumb/Rock064/thumb.png"]
    );
    let baked = mount.tag_path("ambientcg/1k/Rock064");
    assert!(!names(&baked).contains(&"thumb.png".to_string()));
    assert_eq!(
        errno(fs::metadata(baked.join("thumb.png"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno(fs::metadata(
            mount.tag_path("ambientcg/thumb/Rock064/color.png")
        )),
        Some(libc::ENOENT)
    );
    let text = String::from_utf8(read(&baked.join("Rock064.mtlx")).unwrap()).unwrap();
    assert!(!referenced(&text).contains(&"thumb.png".to_string()));
    // Known without a request: nothing was asked of other tiers' thumbs.
    let asked_thumbs = served
        .server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("thumb.png") && !r.path.contains("/thumb/"))
        .count();
    assert_eq!(asked_thumbs, 0);
    assert_eq!(mount.stats()["tags"][TAG]["missing"]["count"], 0);
}

#[test]
fn catalog_entries_of_every_shape_are_listed_where_they_belong() {
    let scalar = |source: &str, id: &str, tiers| ScalarEntry {
        source: source.into(),
        id: id.into(),
        tiers,
    };
    let served = Served::new(Release::generate(&spec_with(Quirks {
        scalar_entries: vec![
            scalar(
                "gpuopen",
                "5ca1a000-aaaa-4d2b-9c3f-5e7a8b9c0d1e",
                ScalarTiers::Scalar,
            ),
            scalar("physicallybased", "Iron", ScalarTiers::Empty),
            scalar("physicallybased", "Zinc", ScalarTiers::Omitted),
        ],
        failed_entries: vec![("ambientcg".into(), "Broken001".into())],
        unsorted_catalogs: true,
        ..Quirks::default()
    })));
    let mount = Mount::builder(&served.base_url()).start();
    // Not sorted on the server, sorted in the mount.
    assert_eq!(
        names(&mount.tag_path("ambientcg/1k")),
        ["Metal032", "Rock064", "Wood051"]
    );
    // A failed entry is left out, with no request for its files.
    let broken = mount.tag_path("ambientcg/1k/Broken001");
    assert_eq!(errno(fs::metadata(&broken)), Some(libc::ENOENT));
    assert!(!names(&mount.tag_path("ambientcg/auto")).contains(&"Broken001".to_string()));
    // Scalar-only entries: under `scalar/` where the source has it, in no
    // texture tier of a textured source.
    assert_eq!(
        names(&mount.tag_path("physicallybased/scalar")),
        ["Brass", "Gold", "Iron", "Zinc"]
    );
    for id in ["Iron", "Zinc"] {
        let text =
            read(&mount.tag_path(&format!("physicallybased/scalar/{id}/{id}.usda"))).unwrap();
        assert!(
            String::from_utf8(text)
                .unwrap()
                .contains("UsdPreviewSurface")
        );
    }
    assert_eq!(names(&mount.tag_path("gpuopen")), ["1k", "auto", "best"]);
    assert_eq!(names(&mount.tag_path("gpuopen/1k")).len(), 2);
    assert_eq!(names(&mount.tag_path("gpuopen/auto")).len(), 2);
    // Lookups in a catalog that came unsorted.
    for (path, bytes) in served
        .release
        .textures()
        .filter(|(p, _)| p.contains("/1k/"))
    {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert_eq!(
        served
            .server
            .requests()
            .iter()
            .filter(|r| r.path.contains("Broken001"))
            .count(),
        0
    );
    assert_eq!(mount.stats()["tags"][TAG]["missing"]["count"], 0);
}

#[test]
fn tiers_that_are_empty_incomplete_or_marked_incomplete() {
    let mut spec = spec_with(Quirks {
        empty_tiers: vec!["ambientcg/256".into()],
        marked_incomplete: vec!["ambientcg/ktx2-512".into()],
        ..Quirks::default()
    });
    spec.incomplete_tiers = vec!["ambientcg/512".into()];
    let served = Served::new(Release::generate(&spec));
    let mount = Mount::builder(&served.base_url()).start();
    // Marked incomplete by the manifest: not shown, never asked for (its old
    // sentinel notwithstanding); listed without its sentinel: shown, not
    // served; listed with no entries: empty.
    assert_eq!(
        names(&mount.tag_path("ambientcg")),
        ["1k", "256", "512", "auto", "best"]
    );
    assert!(names(&mount.tag_path("ambientcg/256")).is_empty());
    let ktx2 = mount.tag_path("ambientcg/ktx2-512/Rock064/color.ktx2");
    assert_eq!(errno(fs::metadata(&ktx2)), Some(libc::ENOENT));
    assert_eq!(asked(&served, "ambientcg/ktx2-512/.tier_complete"), 0);
    assert_eq!(asked(&served, "ambientcg/ktx2-512/Rock064/color.ktx2"), 0);
    assert_eq!(
        names(&mount.tag_path("ambientcg/512")),
        ["Metal032", "Rock064", "Wood051"]
    );
    let incomplete = mount.tag_path("ambientcg/512/Rock064/color.png");
    assert_eq!(errno(read(&incomplete)), Some(libc::EIO));
    let stats = mount.stats();
    assert_eq!(count(&stats, "tier_check", "404"), 1, "{stats:#}");
    assert_eq!(count(&stats, "texture", "200"), 0, "{stats:#}");
    // The ladders go by the tiers shown.
    assert_eq!(
        fs::read_link(mount.tag_path("ambientcg/auto/Rock064")).unwrap(),
        Path::new("../1k/Rock064")
    );
}

#[test]
fn a_manifest_without_mtlx_and_with_schema_2_keys_is_read_as_the_reference_client_does() {
    let served = Served::new(Release::generate(&spec_with(Quirks {
        no_mtlx_key: true,
        schema2_leftovers: true,
        ..Quirks::default()
    })));
    let mount = Mount::builder(&served.base_url()).start();
    let root = mount.tag_path("");
    let before = names(&root);
    assert!(
        !before.contains(&"gpuopen-mtlx.json".to_string()),
        "not known yet"
    );
    // The per-file textures, whatever `tar` and `rowmap` say.
    for path in [
        "ambientcg/1k/Rock064/color.png",
        "ambientcg/512/Metal032/ao.png",
    ] {
        assert_eq!(
            read(&mount.tag_path(path)).unwrap(),
            served.release.files[path]
        );
    }
    assert_eq!(asked(&served, "ambientcg-1k-rowmap.json"), 0);
    assert_eq!(asked(&served, "ambientcg-1k.tar"), 0);
    // gpuopen's map under the name the reference client falls back to.
    let material = mount.tag_path(&format!("gpuopen/1k/{UUID}"));
    let upstream = material.join(format!("{UUID}.upstream.mtlx"));
    assert!(names(&material).contains(&format!("{UUID}.upstream.mtlx")));
    let map = served.release.json("gpuopen-mtlx.json");
    assert_eq!(
        read(&upstream).unwrap(),
        map[UUID].as_str().unwrap().as_bytes()
    );
    // Found on the server, it is listed from now on; the others are not
    // there, and never listed.
    assert_eq!(
        read(&root.join("gpuopen-mtlx.json")).unwrap(),
        served.release.files["gpuopen-mtlx.json"]
    );
    assert!(names(&root).contains(&"gpuopen-mtlx.json".to_string()));
    let ambientcg = mount.tag_path("ambientcg/1k/Rock064");
    assert!(names(&ambientcg).iter().all(|n| !n.contains("upstream")));
    assert_eq!(
        errno(fs::metadata(root.join("ambientcg-mtlx.json"))),
        Some(libc::ENOENT)
    );
    assert!(!names(&root).contains(&"ambientcg-mtlx.json".to_string()));
    assert_eq!(asked(&served, "ambientcg-mtlx.json"), 1);
    let stats = mount.stats();
    assert_eq!(count(&stats, "document", "404"), 1, "{stats:#}");
    assert_eq!(
        stats["tags"][TAG]["missing"]["examples"],
        json!(["ambientcg-mtlx.json"])
    );
}

/// A release whose JSON documents larger than its manifest (the texture
/// catalogs) the server keeps in LFS.
fn with_catalogs_in_lfs() -> Served {
    let served = Served::small();
    let from = served.release.files[matvisfs_sample::MANIFEST_FILE].len() as u64 + 1;
    served.server.set_options(ServerOptions {
        lfs_json_from: Some(from),
        ..ServerOptions::default()
    });
    served
}

#[test]
fn a_catalog_in_lfs_revalidates_with_one_request_by_its_linked_etag() {
    let mut served = with_catalogs_in_lfs();
    let cache = tempfile::tempdir().unwrap();
    let texture = "ambientcg/1k/Rock064/color.png";
    let catalog = "ambientcg.json";
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        assert_eq!(
            read(&mount.tag_path(texture)).unwrap(),
            served.release.files[texture]
        );
        assert_eq!(
            read(&mount.tag_path(catalog)).unwrap(),
            served.release.files[catalog]
        );
        let cdn = served.server.count("GET", &format!("cdn/{TAG}/{catalog}"));
        assert_eq!(cdn, 1, "fetched through the redirect");
    }
    // Unchanged: the redirect's X-Linked-Etag is the stored one; one
    // request, nothing downloaded.
    served.server.clear_requests();
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        assert_eq!(
            read(&mount.tag_path(texture)).unwrap(),
            served.release.files[texture]
        );
        let requests: Vec<_> = served
            .server
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with(catalog))
            .collect();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        assert!(requests[0].conditional && requests[0].status == 302);
        let stats = mount.stats();
        assert_eq!(count(&stats, "document", "304"), 1, "{stats:#}");
        assert_eq!(stats["bytes"]["downloaded"], 0, "{stats:#}");
        assert_eq!(stats["tags"][TAG]["generation"], 1);
    }
    // Changed: another linked ETag, and the new catalog is downloaded.
    assert!(served.release.files[catalog].len() as u64 > 1000);
    let mut changed = served.release.clone();
    let mut entries = changed.json(catalog);
    entries
        .as_array_mut()
        .unwrap()
        .retain(|e| e["id"] != "Wood051");
    entries[0]["upstream"]["fetched_at"] = json!("2026-05-01T00:00:00Z");
    changed.set_json(catalog, &entries);
    served.republish(changed);
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert_eq!(
        read(&mount.tag_path(texture)).unwrap(),
        served.release.files[texture]
    );
    assert_eq!(
        served.server.count("GET", &format!("cdn/{TAG}/{catalog}")),
        1
    );
    assert_eq!(
        names(&mount.tag_path("ambientcg/1k")),
        ["Metal032", "Rock064"]
    );
    let stats = mount.stats();
    assert_eq!(count(&stats, "document", "200"), 1, "{stats:#}");
    // The manifest is unchanged, but the republication is a new commit: one
    // new version for the commit, one for the catalog.
    assert_eq!(stats["tags"][TAG]["revalidation"], "changed", "the commit");
    assert_eq!(stats["tags"][TAG]["generation"], 3, "{stats:#}");
}

#[test]
fn the_reference_clients_variables_name_the_dataset_and_the_tag() {
    const NEXT: &str = "v2026.05.0-rc1";
    let served = Served::small();
    Release::generate(&ReleaseSpec::small(NEXT))
        .write_to(served.dir.path())
        .unwrap();
    let hub = format!("http://{}", served.server.addr());
    let origin_of = |mount: &Mount| -> String {
        let tags = mount.cache.join("tags");
        let mut origins = Vec::new();
        for entry in fs::read_dir(tags).unwrap() {
            let origin = entry.unwrap().path().join("origin.json");
            origins.push(fs::read_to_string(origin).unwrap());
        }
        assert_eq!(origins.len(), 1, "{origins:?}");
        origins.remove(0)
    };
    let roots = |mount: &Mount| -> Vec<String> {
        names(&mount.path)
            .into_iter()
            .filter(|n| n.starts_with('v'))
            .collect()
    };

    // The combined variable wins over the split ones and the base URL.
    let mount = Mount::builder("unused")
        .no_base_url()
        .env("HF_ENDPOINT", &hub)
        .env("MAT_VIS_DATASET", &format!("me/tst@{NEXT}"))
        .env("MAT_VIS_HF_DATASET", "other/repo")
        .env("MAT_VIS_TAG", TAG)
        .env("MAT_VIS_HF_BASE", "http://127.0.0.1:9/resolve")
        .arg("--no-hf-api")
        .start();
    assert_eq!(
        roots(&mount),
        [NEXT],
        "the pinned tag, loaded before the mount"
    );
    assert!(origin_of(&mount).contains("/datasets/me/tst/resolve"));
    drop(mount);

    // The split ones; and `--tag` over the environment's tag.
    let mount = Mount::builder("unused")
        .no_base_url()
        .env("HF_ENDPOINT", &hub)
        .env("MAT_VIS_HF_DATASET", "me/split")
        .env("MAT_VIS_TAG", NEXT)
        .arg("--tag")
        .arg(TAG)
        .arg("--no-hf-api")
        .start();
    assert_eq!(roots(&mount), [TAG]);
    assert!(origin_of(&mount).contains("/datasets/me/split/resolve"));
    let (path, bytes) = served.release.textures().next().unwrap();
    assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    drop(mount);

    // `--base-url` over every variable.
    let mount = Mount::builder(&served.base_url())
        .env("MAT_VIS_DATASET", &format!("me/tst@{NEXT}"))
        .start();
    assert_eq!(roots(&mount), [NEXT]);
    assert!(origin_of(&mount).contains(&served.base_url()));
    drop(mount);

    // A value that names nothing is refused, naming the variable.
    let failed = Mount::builder("unused")
        .no_base_url()
        .env("HF_ENDPOINT", &hub)
        .env("MAT_VIS_DATASET", "gerchowl/mat-vis")
        .try_start();
    let log = failed.err().expect("refused");
    assert!(log.contains("MAT_VIS_DATASET"), "{log}");
}

#[test]
fn a_file_that_cannot_be_served_is_never_another_files_bytes() {
    // The missing file's twin in the baked tier has bytes cached; the
    // missing one is not served them under any name.
    let served = Served::new(with_missing_files());
    let mount = Mount::builder(&served.base_url()).start();
    let twin = "ambientcg/1k/Rock064/normal.png";
    assert_eq!(
        read(&mount.tag_path(twin)).unwrap(),
        served.release.files[twin]
    );
    let err = read(&mount.tag_path(MISSING)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        read(&mount.tag_path(twin)).unwrap(),
        served.release.files[twin]
    );
}
