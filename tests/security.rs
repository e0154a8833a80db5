//! What the mount lets out of its box: credentials only where they belong,
//! certificates checked, read-only mount options, no symlink followed.

mod common;

use std::fs;

use common::{BIN, Mount, Served, TAG, read, walk, warm};
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
    assert!(!mount.log().contains(TOKEN), "the token reached the log");
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

/// Every file below `dir` with its bytes.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .map(|rel| {
            let bytes = fs::read(dir.join(&rel)).unwrap_or_default();
            (rel, bytes)
        })
        .collect()
}

/// A directory of the user's outside the cache: a note, one named like a
/// digest's tail, and a subdirectory.
fn notes() -> tempfile::TempDir {
    let notes = tempfile::tempdir().unwrap();
    fs::write(notes.path().join("notes.txt"), b"my notes").unwrap();
    fs::write(notes.path().join("a".repeat(62)), b"named like an object").unwrap();
    fs::create_dir(notes.path().join("sub")).unwrap();
    fs::write(notes.path().join("sub/more.txt"), b"more").unwrap();
    notes
}

fn run_cache_command(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("MATVISFS_CACHE_MAX_SIZE")
        .output()
        .unwrap()
}

#[test]
fn links_planted_below_objects_lead_no_command_outside_the_cache() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    warm(
        &served.base_url(),
        cache.path(),
        &["ambientcg/1k/Wood051/color.png"],
    );
    let notes = notes();
    let before = snapshot(notes.path());
    // Every prefix directory that a texture of the release is stored under
    // leads to the notes.
    let plant = || {
        for (_, bytes) in served.release.textures() {
            let hex = matvisfs_sample::sha256_hex(bytes);
            let prefix = cache.path().join("objects").join(&hex[..2]);
            if fs::symlink_metadata(&prefix).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&prefix).unwrap();
            }
            if fs::symlink_metadata(&prefix).is_err() {
                std::os::unix::fs::symlink(notes.path(), &prefix).unwrap();
            }
        }
    };
    for command in [
        &["cache", "status"][..],
        &["cache", "verify"],
        &["cache", "clear"],
    ] {
        plant();
        let output = run_cache_command(command, cache.path());
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(snapshot(notes.path()), before, "after {command:?}");
    }
    plant();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    drop(mount);
    assert_eq!(snapshot(notes.path()), before, "after the mount");
    // What was downloaded is in the cache, where it belongs.
    for (path, bytes) in served.release.textures() {
        let hex = matvisfs_sample::sha256_hex(bytes);
        let prefix = cache.path().join("objects").join(&hex[..2]);
        assert!(fs::symlink_metadata(&prefix).unwrap().is_dir(), "{path}");
        assert!(
            fs::symlink_metadata(prefix.join(&hex[2..]))
                .unwrap()
                .is_file(),
            "{path}"
        );
    }
}

#[test]
fn a_link_planted_in_place_of_a_tags_directory_is_not_written_through() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // A first mount makes the origin's directory; its tag is then replaced
    // by a link, and so is where a tag's state went before tags had origins.
    drop(
        Mount::builder(&served.base_url())
            .cache(cache.path())
            .start(),
    );
    let origins: Vec<_> = fs::read_dir(cache.path().join("tags"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(origins.len(), 1, "{origins:?}");
    fs::remove_dir_all(origins[0].join(TAG)).unwrap();
    for place in [cache.path().join("tags").join(TAG), origins[0].join(TAG)] {
        std::os::unix::fs::symlink(elsewhere.path(), place).unwrap();
    }
    let path = "ambientcg/1k/Wood051/color.png";
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        assert_eq!(
            read(&mount.tag_path(path)).unwrap(),
            served.release.files[path]
        );
    }
    assert!(
        snapshot(elsewhere.path()).is_empty(),
        "{:?}",
        walk(elsewhere.path())
    );
    // The tag was kept in the cache instead: an offline mount serves it.
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--offline")
        .start();
    assert_eq!(
        read(&mount.tag_path(path)).unwrap(),
        served.release.files[path]
    );
    assert!(snapshot(elsewhere.path()).is_empty());
}

#[test]
fn a_link_planted_in_place_of_the_log_is_not_written_through() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mountpoint = dir.path().join("mnt");
    fs::create_dir_all(&cache).unwrap();
    fs::create_dir(&mountpoint).unwrap();
    let _unmounts = common::Unmounts::new(&mountpoint);
    let victim = notes();
    let outside = victim.path().join("notes.txt");
    let before = fs::read(&outside).unwrap();
    let log = cache.join("matvisfs.log");
    std::os::unix::fs::symlink(&outside, &log).unwrap();
    let mounted = common::background_mount(&mountpoint, &served.base_url(), &cache)
        .output()
        .unwrap();
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    let path = "ambientcg/1k/Wood051/color.png";
    let bytes = read(&mountpoint.join(TAG).join(path));
    let unmounted = std::process::Command::new(BIN)
        .arg("unmount")
        .arg(&mountpoint)
        .status()
        .unwrap();
    assert_eq!(bytes.unwrap(), served.release.files[path]);
    assert!(unmounted.success());
    assert!(
        fs::read(&outside).unwrap() == before,
        "the file outside the cache was written through the link"
    );
    // The link was replaced by the log itself.
    let meta = fs::symlink_metadata(&log).unwrap();
    assert!(meta.file_type().is_file() && meta.len() > 0);
}
