//! `matvisfs demo` as a new user runs it: no network (as root, it runs in a
//! network namespace of its own, where not even loopback is up), the
//! generated sample mounted with its tree and bytes, a stop command that
//! works from its printed path, a log that outlives the demo, and nothing
//! left in the temporary directory.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, TAG, is_mounted, read, walk};
use matvisfs_sample::{Release, ReleaseSpec, SAMPLE_UNPUBLISHED};

/// Unmounts whatever the demo left mounted when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new(BIN)
                .arg("unmount")
                .arg("--lazy")
                .arg(&self.0)
                .status();
        }
    }
}

fn demo_command(mountpoint: &Path, tmp: &Path) -> Command {
    // SAFETY: a plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = match root {
        true => {
            let mut unshare = Command::new("unshare");
            unshare.args(["--net", BIN]);
            unshare
        }
        false => Command::new(BIN),
    };
    command
        .arg("demo")
        .arg(mountpoint)
        .args(["--materials", "2"])
        .env("TMPDIR", tmp)
        .env_remove("MATVISFS_LOG_FILE")
        .env_remove("MATVISFS_LOG")
        .stdin(Stdio::null());
    command
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn the_demo_mounts_the_sample_without_network_and_stops_with_the_printed_command() {
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("demo");
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let _guard = Unmount(mountpoint.clone());
    let output = demo_command(&mountpoint, &tmp).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(is_mounted(&mountpoint), "{stdout}{stderr}");

    let release = Release::generate(&ReleaseSpec::sample(TAG, 2));
    let expected: Vec<String> = release.expected_tree().into_iter().collect();
    // The catalog names a file the sample never published, as real
    // releases do: not there, and then not listed.
    let unpublished = mountpoint.join(TAG).join(SAMPLE_UNPUBLISHED);
    assert_eq!(
        fs::metadata(&unpublished).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    // The server's files, and beside them the documents the mount makes.
    let tree = walk(&mountpoint.join(TAG));
    let (generated, served) = common::split_generated(tree);
    assert_eq!(served, expected);
    assert!(
        generated.iter().any(|p| p.ends_with(".usda")),
        "{generated:?}"
    );
    for (path, bytes) in release.textures() {
        assert_eq!(
            &read(&mountpoint.join(TAG).join(path)).unwrap(),
            bytes,
            "{path}"
        );
    }

    // The stop command names the binary by its full path, and works.
    let stop = stdout
        .lines()
        .find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "unmount")?;
            Some(
                words[at - 1..]
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap_or_else(|| panic!("no unmount command in {stdout}"));
    assert!(Path::new(&stop[0]).is_absolute(), "{stop:?}");
    assert_eq!(stop[2..], [mountpoint.display().to_string()]);
    let status = Command::new(&stop[0]).args(&stop[1..]).status().unwrap();
    assert!(status.success());
    assert!(!is_mounted(&mountpoint));

    // The sample and its cache go; the log stays, where the demo said.
    let log = dir.path().join("demo.log");
    assert!(stdout.contains(&log.display().to_string()), "{stdout}");
    let emptied = wait_until(Duration::from_secs(10), || {
        fs::read_dir(&tmp).unwrap().next().is_none()
    });
    assert!(
        emptied,
        "{:?}",
        fs::read_dir(&tmp).unwrap().collect::<Vec<_>>()
    );
    assert!(fs::metadata(&log).unwrap().len() > 0);
}

/// Processes whose command line is a `demo` at exactly `mountpoint`.
fn demo_processes(mountpoint: &Path) -> Vec<i32> {
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.contains(&b"demo".as_slice()) && args.contains(&wanted)
        })
        .collect()
}

#[test]
fn a_demo_whose_process_was_killed_is_mounted_again_by_the_next_demo() {
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("demo");
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let _guard = Unmount(mountpoint.clone());
    let output = demo_command(&mountpoint, &tmp).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let daemons = demo_processes(&mountpoint);
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    // SAFETY: a plain syscall on the demo's own process.
    unsafe { libc::kill(daemons[0], libc::SIGKILL) };
    // Every thread gone, the files (the FUSE connection) with them: its
    // command line goes earlier, and a zombie leader is not enough.
    let pid = daemons[0];
    assert!(wait_until(Duration::from_secs(10), || {
        let threads = fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |t| t.count());
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        threads == 0 || (threads == 1 && state.contains(") Z "))
    }));
    let dead = fs::metadata(&mountpoint).unwrap_err().raw_os_error();
    assert_eq!(dead, Some(libc::ENOTCONN), "a dead mount is left");

    let output = demo_command(&mountpoint, &tmp).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The killed demo's files are gone; the new one's are there.
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1, "{stderr}");
    let release = Release::generate(&ReleaseSpec::sample(TAG, 2));
    let (path, bytes) = release.textures().next().unwrap();
    assert_eq!(&read(&mountpoint.join(TAG).join(path)).unwrap(), bytes);
    let status = Command::new(BIN)
        .arg("unmount")
        .arg(&mountpoint)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_until(Duration::from_secs(10), || {
        demo_processes(&mountpoint).is_empty()
    }));
}
