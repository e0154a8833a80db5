//! Many machines behind one caching proxy: two mounts with separate caches,
//! both through a real nginx caching forward proxy (`HTTP_PROXY`) or mirror,
//! make the origin serve each file once; HTTPS goes through a tunnelling
//! proxy (`HTTPS_PROXY`).

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::nginx::Nginx;
use common::tunnel::ConnectProxy;
use common::{Mount, Served, TAG, read, walk};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::{DevServer, ServerOptions};
use matvisfs_testkit::tls::test_ca;

/// Reads the whole tag through a fresh mount with its own cache, and checks
/// every byte.
fn read_everything(served: &Served, env: &[(&str, &str)]) {
    let mut builder = Mount::builder(&served.base_url()).arg("--raw");
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    let mount = builder.start();
    let expected: Vec<String> = served.release.expected_tree().into_iter().collect();
    assert_eq!(walk(&mount.path.join(TAG)), expected);
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
}

/// How often the origin answered each path (resolve and CDN alike).
fn origin_counts(served: &Served) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in served.server.requests() {
        *counts.entry(request.path).or_insert(0) += 1;
    }
    counts
}

#[test]
fn two_machines_behind_a_caching_proxy_fetch_each_file_once_from_the_origin() {
    let served = Served::small();
    let work = tempfile::tempdir().unwrap();
    let proxy = Nginx::caching_proxy(work.path());
    let through_proxy = [("HTTP_PROXY", proxy.url()), ("NO_PROXY", String::new())];
    let env: Vec<(&str, &str)> = through_proxy
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();

    read_everything(&served, &env);
    let first = origin_counts(&served);
    let textures = served.release.textures().count();
    assert!(
        first.keys().filter(|p| p.starts_with("cdn/")).count() >= textures,
        "every texture came from the origin's CDN once: {first:?}"
    );
    let seen_by_proxy = proxy.requests().len();
    assert!(seen_by_proxy > textures, "the mount used the proxy");

    read_everything(&served, &env);
    let both = origin_counts(&served);
    assert_eq!(first, both, "the second machine cost the origin nothing");
    let twice: Vec<_> = both.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fetched twice from the origin: {twice:?}");
    let second = proxy.requests().split_off(seen_by_proxy);
    assert!(
        !second.is_empty(),
        "the second mount went through the proxy"
    );
    assert!(
        second.iter().all(|r| r.cache == "HIT"),
        "all answered from the proxy's cache: {second:?}"
    );

    // NO_PROXY sends a machine straight to the origin.
    read_everything(
        &served,
        &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", "127.0.0.1")],
    );
    let direct = origin_counts(&served);
    assert!(
        direct
            .iter()
            .any(|(path, n)| *n > both.get(path).copied().unwrap_or(0)),
        "NO_PROXY bypassed the proxy"
    );
    assert_eq!(
        proxy.requests().len(),
        seen_by_proxy + second.len(),
        "the proxy saw nothing of the direct mount"
    );
}

#[test]
fn https_goes_through_a_tunnelling_proxy_unless_no_proxy_says_otherwise() {
    let served = Served::small();
    let ca = test_ca(&["127.0.0.1"]);
    let origin = DevServer::start_tls(
        served.dir.path(),
        ServerOptions::default(),
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
    )
    .unwrap();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(ca_file.path(), &ca.ca_pem).unwrap();
    let origin_host = format!("127.0.0.1:{}", origin.addr().port());
    let proxy = ConnectProxy::start();
    for (no_proxy, through_proxy) in [("", true), ("127.0.0.1", false)] {
        let tunnels_before = proxy.tunnels().len();
        let requests_before = origin.requests().len();
        {
            let mount = Mount::builder(&origin.base_url())
                .arg("--ca-file")
                .arg(ca_file.path().to_str().unwrap())
                .env("HTTPS_PROXY", &proxy.url())
                .env("NO_PROXY", no_proxy)
                .start();
            for (path, bytes) in served.release.textures().take(5) {
                assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
            }
        }
        assert!(origin.requests().len() > requests_before);
        let tunnels = proxy.tunnels().split_off(tunnels_before);
        if through_proxy {
            assert!(
                !tunnels.is_empty() && tunnels.iter().all(|t| *t == origin_host),
                "every connection to the origin was tunnelled: {tunnels:?}"
            );
        } else {
            assert_eq!(tunnels, Vec::<String>::new(), "NO_PROXY bypassed the proxy");
        }
    }
}

#[test]
fn a_caching_mirror_in_front_of_the_dataset_serves_many_machines() {
    let served = Served::small();
    // A second release, which only the API's refs make appear at the root.
    const NEXT: &str = "v2026.05.0-rc1";
    Release::generate(&ReleaseSpec::small(NEXT))
        .write_to(served.dir.path())
        .unwrap();
    // The CDN is named by an absolute URL, as Hugging Face's redirects are.
    let cdn_host = served.server.addr().to_string();
    served.server.set_options(ServerOptions {
        cdn_base: Some(format!("http://{cdn_host}")),
        ..ServerOptions::default()
    });
    let work = tempfile::tempdir().unwrap();
    let mirror = Nginx::caching_mirror(work.path(), &format!("http://{cdn_host}"), &cdn_host);
    let base_url = format!("{}/datasets/gerchowl/mat-vis/resolve", mirror.url());

    for _machine in 0..2 {
        let mount = Mount::builder(&base_url).arg("--raw").start();
        let root: Vec<_> = fs::read_dir(&mount.path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            root.iter().any(|n| n == NEXT),
            "the releases, listed from the API"
        );
        assert_eq!(
            walk(&mount.path.join(TAG)),
            served
                .release
                .expected_tree()
                .into_iter()
                .collect::<Vec<_>>()
        );
        for (path, bytes) in served.release.textures() {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
    }
    let counts = origin_counts(&served);
    let cdn = counts.keys().filter(|p| p.starts_with("cdn/")).count();
    assert_eq!(
        cdn,
        served.release.textures().count(),
        "the mirror fetched every texture from the CDN: {counts:#?}"
    );
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fetched twice from the origin: {twice:?}");
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.target.starts_with(&format!("/cdn/{cdn_host}/"))),
        "the machines fetched content from the mirror, not the CDN"
    );
    let api = "/api/datasets/gerchowl/mat-vis/";
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.target.starts_with(&format!("{api}tree/"))),
        "sizes came from the Hub API through the mirror"
    );
    assert!(
        counts.keys().any(|p| p.starts_with("api/refs")),
        "the release list came through the mirror: {counts:#?}"
    );
}
