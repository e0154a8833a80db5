//! End to end against a real nginx serving a generated release, the way a
//! plain static mirror of the dataset would.

mod common;

use std::fs;
use std::path::Path;

use common::nginx::Nginx;
use common::{Mount, TAG, read, walk};
use matvisfs_sample::{Release, ReleaseSpec};

fn static_mirror(root: &Path, dir: &Path) -> Nginx {
    let conf = format!(
        "    server {{
        listen 127.0.0.1:{{port}};
        location /resolve/ {{ alias {}/; }}
    }}",
        root.display()
    );
    Nginx::start(dir, &conf)
}

#[test]
fn a_release_served_by_nginx_mounts_reads_and_revalidates() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let release = Release::generate(&ReleaseSpec::small(TAG));
    release.write_to(&data).unwrap();
    let nginx = static_mirror(&data, work.path());
    let base_url = format!("{}/resolve", nginx.url());
    let cache = work.path().join("cache");
    {
        let mount = Mount::builder(&base_url).cache(&cache).arg("--raw").start();
        let expected: Vec<String> = release.expected_tree().into_iter().collect();
        assert_eq!(walk(&mount.path.join(TAG)), expected);
        for (path, bytes) in release.textures() {
            assert_eq!(
                fs::metadata(mount.tag_path(path)).unwrap().len(),
                bytes.len() as u64,
                "{path}"
            );
        }
        for (path, bytes) in &release.files {
            if !path.ends_with(".tier_complete") {
                assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
            }
        }
    }
    let before = nginx.requests().len();
    let mount = Mount::builder(&base_url).cache(&cache).start();
    for (path, bytes) in release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    let second = nginx.requests().split_off(before);
    let manifest: Vec<_> = second
        .iter()
        .filter(|r| r.target.ends_with("release-manifest.json"))
        .collect();
    assert_eq!(manifest.len(), 1, "{second:?}");
    assert_eq!(
        manifest[0].status, 304,
        "nginx's ETag answers the conditional request"
    );
    assert!(
        second.iter().all(|r| r.status == 304),
        "cached files cost nothing: {second:?}"
    );
}
