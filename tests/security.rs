//! What the mount lets out of its box: credentials only where they belong,
//! certificates checked, read-only mount options, no symlink followed.

mod common;

use std::fs;

use common::{Mount, Served, read, warm};
use matvisfs_testkit::devserver::{DevServer, ServerOptions};
use matvisfs_testkit::tls::test_ca;

const TOKEN: &str = "hf_TestTokenThatMustNotLeak";

/// A release served over HTTPS on 127.0.0.1, whose textures redirect to a
/// plain-HTTP CDN on another host name (localhost).
struct SecureSetup {
    served: Served,
    origin: DevServer,
    cdn: DevServer,
    ca_file: tempfile::NamedTempFile,
}

fn secure_setup() -> SecureSetup {
    let served = Served::small();
    let cdn = DevServer::start(served.dir.path()).unwrap();
    let ca = test_ca(&["127.0.0.1", "localhost"]);
    let options = ServerOptions {
        cdn_base: Some(format!("http://localhost:{}", cdn.addr().port())),
        ..ServerOptions::default()
    };
    let origin = DevServer::start_tls(
        served.dir.path(),
        options,
        ca.cert_pem.as_bytes(),
        ca.key_pem.as_bytes(),
    )
    .unwrap();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(ca_file.path(), ca.ca_pem).unwrap();
    SecureSetup {
        served,
        origin,
        cdn,
        ca_file,
    }
}

#[test]
fn the_token_goes_to_the_https_origin_only_and_never_into_the_log() {
    let setup = secure_setup();
    let token_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(token_file.path(), format!("{TOKEN}\n")).unwrap();
    let mount = Mount::builder(&setup.origin.base_url())
        .arg("--ca-file")
        .arg(setup.ca_file.path().to_str().unwrap())
        .arg("--token-file")
        .arg(token_file.path().to_str().unwrap())
        .arg("-vv")
        .start();
    for (path, bytes) in setup.served.release.textures().take(5) {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    }
    let origin = setup.origin.requests();
    assert!(!origin.is_empty());
    let expected = format!("Bearer {TOKEN}");
    assert!(
        origin
            .iter()
            .all(|r| r.authorization.as_deref() == Some(expected.as_str())),
        "{origin:#?}"
    );
    let cdn = setup.cdn.requests();
    assert!(!cdn.is_empty(), "the textures came from the other host");
    assert!(cdn.iter().all(|r| r.authorization.is_none()), "{cdn:#?}");
    assert!(!mount.log().contains(TOKEN), "the token reached the log");
}

#[test]
fn certificates_are_verified() {
    let setup = secure_setup();
    let err = Mount::builder(&setup.origin.base_url())
        .try_start()
        .err()
        .expect("an unknown CA must be refused");
    assert!(
        err.contains("cannot load tag") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(setup.origin.requests().is_empty(), "no request got through");
}

#[test]
fn the_token_is_not_sent_over_plain_http() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url())
        .env("HF_TOKEN", TOKEN)
        .start();
    assert!(read(&mount.tag_path("ambientcg/1k/Rock064/color.png")).is_ok());
    assert!(
        served
            .server
            .requests()
            .iter()
            .all(|r| r.authorization.is_none())
    );
    assert!(mount.log().contains("not HTTPS"), "{}", mount.log());
    assert!(!mount.log().contains(TOKEN));
}

fn mount_options(path: &std::path::Path) -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(path.to_str().unwrap()))
        .and_then(|l| l.split(' ').nth(3))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn mounted_read_only_with_default_permissions_and_allow_other_only_on_request() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let options = mount_options(&mount.path);
    for expected in ["ro", "nosuid", "nodev", "default_permissions"] {
        assert!(
            options.split(',').any(|o| o == expected),
            "{expected} missing: {options}"
        );
    }
    assert!(!options.contains("allow_other"), "{options}");
    let shared = Mount::builder(&served.base_url())
        .arg("--allow-other")
        .start();
    assert!(mount_options(&shared.path).contains("allow_other"));
}

#[test]
fn a_symlink_planted_in_the_cache_is_not_followed() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let path = "ambientcg/1k/Wood051/color.png";
    warm(&served.base_url(), cache.path(), &[path]);
    // Replace the cached object by a link to a file that is not ours to serve.
    let secret = cache.path().join("secret");
    fs::write(&secret, b"not for the mount").unwrap();
    for entry in walk_files(&cache.path().join("objects")) {
        fs::remove_file(&entry).unwrap();
        std::os::unix::fs::symlink(&secret, &entry).unwrap();
    }
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert_eq!(
        read(&mount.tag_path(path)).unwrap(),
        served.release.files[path]
    );
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let file_type = entry.file_type().unwrap();
        if file_type.is_dir() {
            out.extend(walk_files(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}
