//! Releases in the older container layouts, mounted for real: schema 2
//! (a tar and a rowmap per source and tier, in the revision) and schema 1
//! (Parquet files and rowmaps at another URL, as on GitHub Releases). The
//! containers are written by the `tar` and `parquet` crates.

mod common;

use std::fs;

use common::nginx::Nginx;
use common::{Mount, Served, TAG, read, walk};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::containers::{Layout, PackRelease, PackedRelease};
use matvisfs_testkit::devserver::ServerOptions;
use matvisfs_testkit::packers::{parquet, tar, tar_after};

fn serve_packed(packed: PackedRelease, assets_dir: &str) -> Served {
    let served = Served::new(packed.release);
    for (name, bytes) in &packed.assets {
        let path = served.dir.path().join(assets_dir).join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    served
}

fn original() -> Release {
    Release::generate(&ReleaseSpec::small(TAG))
}

/// The tree of `original` as a container release shows it: no tier
/// sentinels, and for schema 1 no catalogs.
fn expected_tree(original: &Release, with_catalogs: bool) -> Vec<String> {
    original
        .expected_tree()
        .into_iter()
        .filter(|p| !p.ends_with(".tier_complete"))
        .filter(|p| with_catalogs || p.contains('/') || p == "release-manifest.json")
        .collect()
}

fn sorted_walk(mount: &Mount) -> Vec<String> {
    let mut tree = walk(&mount.path.join(TAG));
    tree.sort();
    tree
}

/// Range requests that reached a container, with the given status.
fn ranges(served: &Served, status: u16) -> usize {
    served
        .server
        .requests()
        .iter()
        .filter(|r| r.range && r.status == status)
        .count()
}

#[test]
fn a_tar_release_mounts_with_the_same_tree_and_bytes() {
    let original = original();
    let served = serve_packed(original.packed(&Layout::Tar, &tar), "unused");
    let mount = Mount::builder(&served.base_url()).arg("--raw").start();
    assert_eq!(sorted_walk(&mount), expected_tree(&original, true));
    for (path, bytes) in original.textures() {
        let size = fs::metadata(mount.tag_path(path)).unwrap().len();
        assert_eq!(size, bytes.len() as u64, "{path}");
    }
    let requests = served.server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.method == "GET" && r.path.ends_with(".json")),
        "sizes come from the rowmaps: {requests:#?}"
    );
    for (path, bytes) in original.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    // One Range request per texture, to the CDN behind the redirect.
    assert_eq!(ranges(&served, 206), original.textures().count());
}

/// A cache directory shared by two mounts of one test.
fn served_cache(served: &Served) -> std::path::PathBuf {
    served.dir.path().join("shared-cache")
}

#[test]
fn a_second_mount_reads_a_tar_release_from_the_cache() {
    let original = original();
    let served = serve_packed(original.packed(&Layout::Tar, &tar), "unused");
    let cache = served_cache(&served);
    {
        let mount = Mount::builder(&served.base_url()).cache(&cache).start();
        for (path, _) in original.textures() {
            read(&mount.tag_path(path)).unwrap();
        }
    }
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url()).cache(&cache).start();
    for (path, bytes) in original.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    }
    assert_eq!(ranges(&served, 206), 0, "{:#?}", served.server.requests());
}

#[test]
fn a_parquet_release_on_another_host_mounts_too() {
    let original = original();
    // "localhost" is another host than the base URL's 127.0.0.1.
    let served = Served::new(Release {
        tag: TAG.into(),
        files: Default::default(),
    });
    let base_url = format!(
        "http://localhost:{}/resolve/releases-download/{TAG}/",
        served.server.addr().port()
    );
    let packed = original.packed(&Layout::Parquet { base_url }, &parquet);
    packed.release.write_to(served.dir.path()).unwrap();
    for (name, bytes) in &packed.assets {
        let path = served
            .dir
            .path()
            .join("releases-download")
            .join(TAG)
            .join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    let mount = Mount::builder(&served.base_url()).arg("--raw").start();
    assert_eq!(sorted_walk(&mount), expected_tree(&original, false));
    for (path, bytes) in original.textures() {
        assert_eq!(
            fs::metadata(mount.tag_path(path)).unwrap().len(),
            bytes.len() as u64
        );
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert_eq!(ranges(&served, 206), original.textures().count());
    assert!(
        served
            .server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("releases-download/")),
        "the rowmaps and containers come from the release's base URL"
    );
}

#[test]
fn a_server_that_ignores_range_is_read_only_up_to_the_texture() {
    let original = original();
    let served = serve_packed(original.packed(&Layout::Tar, &tar), "unused");
    served.server.set_options(ServerOptions {
        ignore_range: true,
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&served.base_url()).start();
    for (path, bytes) in original.textures().take(4) {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert!(ranges(&served, 200) >= 4, "the server sent whole files");

    // Textures deep in a big container: refused, not downloaded.
    let deep = serve_packed(
        original.packed(&Layout::Tar, &|items| tar_after(items, 9 << 20)),
        "unused",
    );
    deep.server.set_options(ServerOptions {
        ignore_range: true,
        ..ServerOptions::default()
    });
    let mount = Mount::builder(&deep.base_url()).start();
    let (path, _) = original.textures().next().unwrap();
    let error = read(&mount.tag_path(path)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    // Not the 9 MiB before the texture, let alone the whole container.
    let stats = mount.stats();
    let downloaded = stats["bytes"]["downloaded"].as_u64().unwrap();
    assert!(
        downloaded <= 8 << 20,
        "{downloaded} bytes downloaded: {stats}"
    );
}

#[test]
fn a_tar_release_through_a_caching_proxy_costs_the_origin_one_fetch() {
    let original = original();
    let served = serve_packed(original.packed(&Layout::Tar, &tar), "unused");
    let work = tempfile::tempdir().unwrap();
    let proxy = Nginx::caching_proxy(work.path());
    for _machine in 0..2 {
        let mount = Mount::builder(&served.base_url())
            .env("HTTP_PROXY", &proxy.url())
            .env("NO_PROXY", "")
            .start();
        for (path, bytes) in original.textures() {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
    }
    let proxied = proxy.requests();
    let texture_ranges = proxied.iter().filter(|r| r.status == 206).count();
    assert_eq!(
        texture_ranges,
        2 * original.textures().count(),
        "each machine sent one Range request per texture: {proxied:#?}"
    );
    // The proxy fetched the (small) containers in 1 MiB slices, once each.
    let origin = served.server.requests();
    let mut paths: Vec<&str> = origin.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    let before = paths.len();
    paths.dedup();
    assert_eq!(
        before,
        paths.len(),
        "fetched twice from the origin: {origin:#?}"
    );
    assert!(ranges(&served, 206) > 0, "the origin served slices");
}
