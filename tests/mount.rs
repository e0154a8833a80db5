//! Real mounts against the dev server: the tree, the bytes, the sizes, the
//! read-only rules, and the mount's life cycle.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    BIN, Mount, Served, TAG, Unmounts, background_mount, is_mounted, open_direct, read,
    read_at_odd_address, refresh, serving_processes, wait_for, walk,
};
use matvisfs_sample::{Release, ReleaseSpec};
use matvisfs_testkit::devserver::{Fault, FaultRule};

#[test]
fn the_tree_equals_the_generated_catalogs() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).arg("--raw").start();
    let names: Vec<_> = fs::read_dir(&mount.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".matvisfs", TAG]);
    let expected: Vec<String> = served.release.expected_tree().into_iter().collect();
    assert_eq!(walk(&mount.path.join(TAG)), expected);
    assert_eq!(served.texture_gets(), 0, "listing downloads no texture");
}

#[test]
fn sizes_are_exact_before_the_first_read_and_bytes_match() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    for (path, bytes) in served.release.textures() {
        let meta = fs::metadata(mount.tag_path(path)).unwrap();
        assert_eq!(meta.len(), bytes.len() as u64, "{path}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    }
    assert_eq!(served.texture_gets(), 0, "stat downloads no texture");
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    // HEAD answered from the redirect: the CDN is asked only for content.
    let cdn_heads = served
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.starts_with("cdn/"))
        .count();
    assert_eq!(cdn_heads, 0);
    for doc in [
        "release-manifest.json",
        "ambientcg.json",
        "gpuopen-mtlx.json",
        "physicallybased.json",
    ] {
        assert_eq!(
            read(&mount.tag_path(doc)).unwrap(),
            served.release.files[doc],
            "{doc}"
        );
    }
    // Tools that trust the size (like Python's read_bytes) get every byte.
    let path = "ambientcg/ktx2-512/Rock064/normal.ktx2";
    let mut buf = vec![0u8; fs::metadata(mount.tag_path(path)).unwrap().len() as usize];
    use std::io::Read;
    fs::File::open(mount.tag_path(path))
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    assert_eq!(buf, served.release.files[path]);
}

#[test]
fn a_second_read_and_a_second_mount_cost_no_texture_request() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let path = "gpuopen/1k/0b1e2f9c-4d3a-4c55-9e1f-2a7b6c8d9e01/normal.png";
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        read(&mount.tag_path(path)).unwrap();
        read(&mount.tag_path(path)).unwrap();
        assert_eq!(served.texture_gets(), 1);
    }
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    assert_eq!(
        read(&mount.tag_path(path)).unwrap(),
        served.release.files[path]
    );
    assert_eq!(served.texture_gets(), 0);
    assert_eq!(
        served.count("HEAD", path),
        0,
        "the size is remembered on disk"
    );
}

#[test]
fn everything_that_would_write_fails_with_erofs() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let file = mount.tag_path("ambientcg/1k/Rock064/color.png");
    let dir = mount.tag_path("ambientcg/1k/Rock064");
    let erofs = |result: std::io::Result<()>, what: &str| {
        let err = result.expect_err(what);
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{what}: {err}");
    };
    erofs(
        fs::OpenOptions::new().write(true).open(&file).map(drop),
        "open for writing",
    );
    erofs(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .map(drop),
        "open read-write",
    );
    erofs(fs::write(dir.join("new.png"), b"x"), "create");
    erofs(
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(dir.join("n"))
            .map(drop),
        "create_new",
    );
    erofs(fs::create_dir(dir.join("sub")), "mkdir");
    erofs(fs::remove_file(&file), "unlink");
    erofs(fs::remove_dir(&dir), "rmdir");
    erofs(fs::rename(&file, dir.join("moved.png")), "rename");
    erofs(
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)),
        "chmod",
    );
    erofs(
        std::os::unix::fs::symlink(&file, dir.join("link")),
        "symlink",
    );
    erofs(fs::hard_link(&file, dir.join("hard")), "link");
    let c_file = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let truncated = unsafe { libc::truncate(c_file.as_ptr(), 0) };
    erofs(
        if truncated == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
        "truncate",
    );
    assert_eq!(
        fs::read(dir.join("missing.png")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        fs::read_dir(mount.path.join("not-a-tag"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn background_mode_returns_when_ready_and_unmount_ends_the_process() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let _unmounts = Unmounts::new(&mountpoint);
    // The write end of a pipe, given to the command alone as descriptor
    // 100 (as a shell's `exec 100>` or a lock `flock` holds would be): the
    // daemon that stays must not keep it.
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let given = write_end.as_raw_fd();
    assert_ne!(given, 100);
    let mut command = background_mount(&mountpoint, &served.base_url(), &dir.path().join("cache"));
    // SAFETY: dup2 only, between fork and exec (it leaves the copy open
    // across exec).
    unsafe {
        command.pre_exec(move || match libc::dup2(given, 100) {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Ready when the command returned: no waiting needed.
    let listed = fs::read_dir(mountpoint.join(TAG).join("ambientcg")).map(|d| d.count());
    let daemons = serving_processes(&mountpoint);
    // With no other holder, the pipe reads as ended at once.
    drop(write_end);
    let mut ready = [rustix::event::PollFd::new(
        &read_end,
        rustix::event::PollFlags::IN,
    )];
    let limit = rustix::event::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    let events = rustix::event::poll(&mut ready, Some(&limit)).unwrap();
    let ended = events == 1 && rustix::io::read(&read_end, &mut [0u8; 8]).unwrap() == 0;
    let unmounted = Command::new(BIN)
        .arg("unmount")
        .arg(&mountpoint)
        .status()
        .unwrap();
    // Its three tiers, and the auto/ and best/ links beside them.
    assert_eq!(listed.unwrap(), 5);
    assert_eq!(daemons.len(), 1, "one daemon serves the mount: {daemons:?}");
    assert!(ended, "the daemon holds a descriptor its command was given");
    assert!(unmounted.success());
    assert!(!is_mounted(&mountpoint));
    // The daemon notices and exits.
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        serving_processes(&mountpoint).is_empty()
    });
    assert!(
        fs::metadata(dir.path().join("cache/matvisfs.log"))
            .unwrap()
            .len()
            > 0,
        "a background mount logs to the cache directory"
    );
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    let served = Served::small();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut mount = Mount::builder(&served.base_url()).start();
        let file = fs::File::open(mount.tag_path("ambientcg.json")).unwrap();
        drop(file);
        mount.signal(signal);
        mount.expect_clean_exit();
    }
}

#[test]
fn mounting_refuses_a_missing_or_busy_mountpoint() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let output = Command::new(BIN)
        .arg("mount")
        .arg(&mount.path)
        .args(["--base-url", &served.base_url(), "--foreground"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already a mount point"));
    let output = Command::new(BIN)
        .args(["mount", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

#[test]
fn no_mount_is_left_behind_when_a_test_fails() {
    let served = Served::small();
    let mut path = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mount = Mount::builder(&served.base_url()).start();
        path = Some(mount.path.clone());
        panic!("a failing assertion while mounted");
    }));
    assert!(outcome.is_err());
    assert!(!is_mounted(&path.unwrap()));
}

#[test]
fn umount_and_fusermount3_end_the_daemon_too() {
    let served = Served::small();
    for command in [["umount", ""], ["fusermount3", "-u"]] {
        let mut mount = Mount::builder(&served.base_url()).start();
        let mut unmount = Command::new(command[0]);
        if !command[1].is_empty() {
            unmount.arg(command[1]);
        }
        assert!(
            unmount.arg(&mount.path).status().unwrap().success(),
            "{command:?}"
        );
        mount.expect_clean_exit();
    }
}

#[test]
fn concurrent_readers_of_an_uncached_file_cause_one_download() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    let path = "ambientcg/ktx2-512/Metal032/roughness.ktx2";
    fs::metadata(mount.tag_path(path)).unwrap();
    served
        .server
        .inject(matvisfs_testkit::devserver::FaultRule::new(
            &format!("cdn/{TAG}/{path}"),
            matvisfs_testkit::devserver::Fault::Delay(Duration::from_millis(300)),
        ));
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                assert_eq!(
                    read(&mount.tag_path(path)).unwrap(),
                    served.release.files[path]
                )
            });
        }
    });
    assert_eq!(served.server.count("GET", &format!("cdn/{TAG}/{path}")), 1);
}

#[test]
fn cached_files_are_passed_through_where_the_kernel_offers_it() {
    let served = Served::small();
    let (cache, files) = served.warmed_cache(6);
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let (release, offered) = common::kernel_passthrough();
    if !offered {
        eprintln!("kernel {release} offers no FUSE passthrough: checking the fallback only");
    }
    for no_passthrough in [false, true] {
        let mut builder = Mount::builder(&served.base_url()).cache(cache.path());
        if no_passthrough {
            builder = builder.arg("--no-passthrough");
        }
        // A new mount: the kernel has no page of these files yet, so every
        // byte read comes either from matvisfs or from the backing file.
        let mount = builder.start();
        for _ in 0..3 {
            for (path, bytes) in &files {
                assert_eq!(
                    &&read(&mount.tag_path(path)).unwrap(),
                    bytes,
                    "--no-passthrough {no_passthrough}: {path}"
                );
            }
        }
        let stats = mount.stats();
        assert_eq!(
            stats["requests"]["texture"],
            serde_json::Value::Null,
            "{stats}"
        );
        assert_eq!(stats["cache"]["hits"], 3 * files.len(), "{stats}");
        let through_matvisfs = stats["bytes"]["served"].as_u64().unwrap();
        if offered && !no_passthrough {
            assert_eq!(
                through_matvisfs, 0,
                "cached reads reached matvisfs: {stats}"
            );
        } else {
            assert!(
                through_matvisfs >= total,
                "{through_matvisfs} < {total}: {stats}"
            );
        }
    }
}

#[test]
fn an_open_that_filled_no_page_leaves_the_next_one_passed_through() {
    let (release, offered) = common::kernel_passthrough();
    if !offered {
        eprintln!("skipped: kernel {release} offers no FUSE passthrough");
        return;
    }
    let served = Served::small();
    let (cache, files) = served.warmed_cache(1);
    let (path, bytes) = files[0];
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    let through_matvisfs = || mount.stats()["bytes"]["served"].as_u64().unwrap();
    // Read past the page cache, by matvisfs: no page of it is filled.
    let direct = open_direct(&mount.tag_path(path));
    assert!(read_at_odd_address(&direct, 64 * 1024) == *bytes);
    drop(direct);
    assert_eq!(through_matvisfs(), bytes.len() as u64);
    // So the next open keeps no pages: it is passed through.
    assert!(read(&mount.tag_path(path)).unwrap() == *bytes);
    assert_eq!(through_matvisfs(), bytes.len() as u64);
}

/// Over the largest download held in memory (4 MiB), and no multiple of
/// a page.
const LARGER_THAN_MEMORY_HOLDS: usize = 5 * 1024 * 1024 + 4321;

/// The small release served with its first `count` PNG textures made
/// larger than a download held in memory, and their paths.
fn large_pngs(count: usize) -> (Served, Vec<String>) {
    common::served_with_pngs_of(
        Release::generate(&ReleaseSpec::small(TAG)),
        count,
        LARGER_THAN_MEMORY_HOLDS,
    )
}

#[test]
fn a_large_file_not_cached_is_fetched_at_its_open_and_passed_through() {
    let (release, offered) = common::kernel_passthrough();
    if !offered {
        eprintln!("kernel {release} offers no FUSE passthrough: checking the fallback only");
    }
    let (served, paths) = large_pngs(3);
    let bytes_of = |path: &str| served.release.files[path].clone();
    for no_passthrough in [false, true] {
        let cache = tempfile::tempdir().unwrap();
        let mut builder = Mount::builder(&served.base_url()).cache(cache.path());
        if no_passthrough {
            builder = builder.arg("--no-passthrough");
        }
        let mount = builder.start();
        common::assert_sizes(&mount, &paths, LARGER_THAN_MEMORY_HOLDS);
        let through_matvisfs = || mount.stats()["bytes"]["served"].as_u64().unwrap();
        let gets_before = served.texture_gets();
        // Opened before it was cached, read whole.
        assert!(read(&mount.tag_path(&paths[0])).unwrap() == bytes_of(&paths[0]));
        // Opened, then read from its middle first.
        let file = fs::File::open(mount.tag_path(&paths[1])).unwrap();
        let mut piece = vec![0u8; 10_000];
        let at = LARGER_THAN_MEMORY_HOLDS - 20_000;
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut piece, at as u64).unwrap();
        assert!(piece == bytes_of(&paths[1])[at..at + 10_000]);
        drop(file);
        let passed_through = offered && !no_passthrough;
        let opens_fetched = || mount.stats()["cache"]["opens_fetched"].as_u64().unwrap();
        if passed_through {
            assert_eq!(through_matvisfs(), 0, "--no-passthrough {no_passthrough}");
            assert_eq!(opens_fetched(), 2);
        } else {
            assert_eq!(opens_fetched(), 0);
            assert!(through_matvisfs() >= LARGER_THAN_MEMORY_HOLDS as u64 + 10_000);
        }
        // An `O_DIRECT` open is read through matvisfs: it is not fetched
        // at its open.
        let served_before = through_matvisfs();
        let direct = open_direct(&mount.tag_path(&paths[2]));
        assert!(read_at_odd_address(&direct, 64 * 1024) == bytes_of(&paths[2]));
        assert_eq!(
            through_matvisfs() - served_before,
            LARGER_THAN_MEMORY_HOLDS as u64
        );
        // One download a file, whenever it was made.
        assert_eq!(served.texture_gets() - gets_before, 3);
        assert_eq!(opens_fetched(), if passed_through { 2 } else { 0 });
    }
}

#[test]
fn an_open_whose_fetch_is_refused_fails_as_its_read_would_have() {
    let (served, paths) = large_pngs(2);
    let mount = Mount::builder(&served.base_url()).start();
    common::assert_sizes(&mount, &paths, LARGER_THAN_MEMORY_HOLDS);
    // An error at once, not retried (a slower one, past the 2 s the open
    // waits, would fail its read instead).
    served.server.inject(FaultRule::new(
        &paths[0],
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    ));
    let (release, offered) = common::kernel_passthrough();
    let failed = match fs::File::open(mount.tag_path(&paths[0])) {
        Err(e) => e,
        // Without passthrough the open is not fetched: its read fails.
        Ok(mut file) => {
            assert!(!offered, "kernel {release}: the open was fetched");
            std::io::Read::read_to_end(&mut file, &mut Vec::new()).unwrap_err()
        }
    };
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    // Nothing was cached: once the server gives the file's bytes, it is read.
    served.server.clear_faults();
    assert!(read(&mount.tag_path(&paths[0])).unwrap() == served.release.files[&paths[0]]);
}

#[test]
fn an_open_stops_waiting_for_its_fetch_and_its_read_waits_on() {
    let (served, paths) = large_pngs(1);
    // Longer than an open waits for a fetch (2 s).
    let mount = Mount::builder(&served.base_url())
        .timeout(6)
        .arg("--retries")
        .arg("0")
        .start();
    common::assert_sizes(&mount, &paths, LARGER_THAN_MEMORY_HOLDS);
    served.server.inject(FaultRule::new(&paths[0], Fault::Hang));
    // The download hangs: the open is answered all the same (the kernel
    // lets no signal end an open), and its read fails when the download
    // times out.
    let mut file = fs::File::open(mount.tag_path(&paths[0])).unwrap();
    let failed = std::io::Read::read_to_end(&mut file, &mut Vec::new()).unwrap_err();
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    assert_eq!(served.texture_gets(), 0);
    assert_eq!(
        served.count("GET", &paths[0]),
        1,
        "one download, joined by the read"
    );
    assert_eq!(mount.stats()["cache"]["opens_fetched"], 0);
}

#[test]
fn an_open_after_the_tag_moved_never_joins_the_download_of_the_version_before() {
    let (mut served, paths) = large_pngs(1);
    let path = &paths[0];
    let mount = Mount::builder(&served.base_url())
        .timeout(8)
        .arg("--retries")
        .arg("0")
        .start();
    common::assert_sizes(&mount, &paths, LARGER_THAN_MEMORY_HOLDS);
    // The first download, of the version before, hangs; its open stops
    // waiting for it, and is closed unread.
    served
        .server
        .inject(FaultRule::new(path, Fault::Hang).times(1));
    drop(fs::File::open(mount.tag_path(path)).unwrap());
    // A new version of the file and of the tag.
    let mut release = served.release.clone();
    let new = common::texture_like(common::PNG_MAGIC, LARGER_THAN_MEMORY_HOLDS, 77);
    release.replace_texture(path, new.clone());
    served.republish(release);
    refresh(&mount);
    // Read with the old download still hanging: the new version, whole, by
    // a download of its own.
    assert!(read(&mount.tag_path(path)).unwrap() == new);
    assert_eq!(mount.stats()["cache"]["opens_fetched"], 1);
}

#[test]
fn an_open_waits_on_the_server_for_one_revalidation_at_most() {
    let (served, paths) = large_pngs(6);
    let mount = Mount::builder(&served.base_url())
        .arg("--revalidate-every")
        .arg("1s")
        .start();
    common::assert_sizes(&mount, &paths, LARGER_THAN_MEMORY_HOLDS);
    let manifests = || served.count("GET", "release-manifest.json");
    let fetched = || mount.stats()["cache"]["opens_fetched"].as_u64().unwrap();
    // An open that revalidates the tag, then waits on the server past the
    // period (the revalidation of its catalog, which comes after the
    // tag's), then for its download, which it waits 2 s for: a busy
    // machine may make the download longer, so up to five files more are
    // tried.
    for path in &paths {
        std::thread::sleep(Duration::from_millis(1100));
        served.server.inject(
            FaultRule::new("ambientcg.json", Fault::Delay(Duration::from_millis(1100))).times(1),
        );
        let (before, fetched_before) = (manifests(), fetched());
        let file = fs::File::open(mount.tag_path(path)).unwrap();
        // The open's revalidation, and no second one once the file is
        // fetched.
        assert_eq!(manifests(), before + 1);
        drop(file);
        if fetched() > fetched_before {
            return;
        }
    }
    panic!("no open waited for its download to the end");
}

#[test]
fn an_open_beside_open_files_of_another_version_is_stale_without_a_download() {
    let (mut served, paths) = large_pngs(1);
    let path = &paths[0];
    // Cached before the mount, so that the held open is passed through
    // (where the kernel can) whatever the machine's load: a download that
    // outlasts the open's own wait leaves it read through the mount.
    let cache = tempfile::tempdir().unwrap();
    common::warm(&served.base_url(), cache.path(), &[path]);
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    let old = served.release.files[path].clone();
    let held = fs::File::open(mount.tag_path(path)).unwrap();
    let mut release = served.release.clone();
    release.replace_texture(
        path,
        common::texture_like(common::PNG_MAGIC, LARGER_THAN_MEMORY_HOLDS, 78),
    );
    served.republish(release);
    refresh(&mount);
    served.server.settle();
    let gets = served.texture_gets();
    // It waits a moment for the open file to close, which it does not.
    let stale = fs::File::open(mount.tag_path(path)).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ESTALE), "{stale}");
    assert_eq!(served.texture_gets(), gets, "nothing downloaded for it");
    let opens = &mount.stats()["opens"];
    assert_eq!(opens["waited_for_release"], 1, "{opens}");
    assert_eq!(opens["waiting_for_release"], 0, "{opens}");
    // The open file still reads its own version, whole, where the kernel
    // reads it by itself; read through the mount, it learns of the change.
    let mut bytes = Vec::new();
    let held_read = std::io::Read::read_to_end(&mut &held, &mut bytes);
    match common::kernel_passthrough().1 {
        true => assert!(held_read.is_ok() && bytes == old, "{held_read:?}"),
        false => assert_eq!(held_read.unwrap_err().raw_os_error(), Some(libc::ESTALE)),
    }
}

/// A program that closes the old version of a changed file and opens it
/// again at once (its release comes a moment after `close` returns), or
/// that opens it while another program is closing the old one, gets the
/// new version whole, not `ESTALE`: even after an open that found the old
/// one held too long failed.
#[test]
fn an_open_beside_another_version_closing_waits_for_it_and_reads_the_new_version() {
    let mut served = Served::small();
    let path = "ambientcg/512/Wood051/ao.png";
    let mount = Mount::builder(&served.base_url()).start();
    let held = [(); 2].map(|_| fs::File::open(mount.tag_path(path)).unwrap());
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &held[0], &mut bytes).unwrap();
    assert!(bytes == served.release.files[path]);
    let mut release = served.release.clone();
    let new = matvisfs_sample::images::png("republished", "ao", 40);
    release.replace_texture(path, new.clone());
    served.republish(release);
    refresh(&mount);
    let opens = || mount.stats()["opens"].clone();

    // Held by both for longer than the open waits.
    let stale = fs::File::open(mount.tag_path(path)).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ESTALE), "{stale}");
    assert_eq!(opens()["waited_for_release"], 1, "{}", opens());
    // One closes it, then the other, while an open waits.
    let [first, second] = held;
    drop(first);
    let opening = {
        let file = mount.tag_path(path);
        std::thread::spawn(move || read(&file))
    };
    wait_for("the open to wait", Duration::from_secs(30), || {
        opening.is_finished() || opens()["waiting_for_release"] == 1
    });
    drop(second);
    let reopened = opening.join().unwrap().expect("the new version");
    assert!(reopened == new, "{} bytes", reopened.len());
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        new.len() as u64
    );
    assert_eq!(opens()["waited_for_release"], 2, "{}", opens());
    assert_eq!(opens()["waiting_for_release"], 0, "{}", opens());
}

/// An open that waits for the old version's release while the file changes
/// once more reads the newest version whole at its first read.
#[test]
fn an_open_waiting_through_a_second_change_reads_the_newest_version() {
    common::waited_through_a_second_change(&[]);
}

/// Opens that wait for a release are parked, holding no thread: with one
/// thread reading kernel requests, eight wait at once while a download goes
/// on, and each reads the new version once the old ones are closed.
#[test]
fn many_opens_wait_for_a_release_at_once_holding_no_thread() {
    common::reopened_while_held(&[]);
}

/// A waiting open is answered from memory once its wait ends, though hung
/// downloads hold every download worker.
#[test]
fn an_open_that_waited_for_a_release_waits_for_no_hung_download() {
    common::parked_opens_wait_for_no_hung_download(&[]);
}

#[test]
fn a_file_fetched_at_its_open_and_evicted_at_once_is_downloaded_once() {
    let (served, paths) = large_pngs(6);
    // Smaller than any of them: each is evicted as soon as it is kept.
    let mount = Mount::builder(&served.base_url())
        .arg("--cache-max-size")
        .arg("1MB")
        .start();
    common::assert_sizes(&mount, &paths, LARGER_THAN_MEMORY_HOLDS);
    for path in &paths {
        assert!(read(&mount.tag_path(path)).unwrap() == served.release.files[path]);
    }
    assert_eq!(served.texture_gets(), paths.len());
    let stats = mount.stats();
    assert_eq!(stats["cache"]["opens_fetched"], paths.len(), "{stats}");
    if common::kernel_passthrough().1 {
        assert_eq!(stats["bytes"]["served"], 0, "{stats}");
    }
}

#[test]
fn a_download_that_outlives_its_version_of_the_tag_says_nothing_of_the_next() {
    // A file no catalog hash names, on a mirror that gives no digest: only
    // its record says which bytes are its own.
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let path = release
        .textures()
        .map(|(p, _)| p.clone())
        .find(|p| p.ends_with(".png") && !p.contains("/1k/"))
        .unwrap();
    let old = common::texture_like(common::PNG_MAGIC, LARGER_THAN_MEMORY_HOLDS, 80);
    release.replace_texture(&path, old);
    let mut served = Served::plain_mirror(release);
    // Longer than the old version's download takes.
    let mount = Mount::builder(&served.base_url()).timeout(15).start();
    common::assert_sizes(
        &mount,
        std::slice::from_ref(&path),
        LARGER_THAN_MEMORY_HOLDS,
    );
    // The old version's download answers late: its open stops waiting for
    // it, and is closed unread.
    // (The size came from a GET of the file's first bytes.)
    let gets = served.texture_gets();
    let late = Duration::from_secs(5);
    served
        .server
        .inject(FaultRule::new(&path, Fault::Delay(late)).times(1));
    let started = Instant::now();
    drop(fs::File::open(mount.tag_path(&path)).unwrap());
    let mut release = served.release.clone();
    let new = common::texture_like(common::PNG_MAGIC, LARGER_THAN_MEMORY_HOLDS, 81);
    release.replace_texture(&path, new.clone());
    served.republish(release);
    refresh(&mount);
    let commit = || mount.stats()["tags"][TAG]["commit"].clone();
    let new_commit = commit();
    assert!(read(&mount.tag_path(&path)).unwrap() == new);
    // The old download done (the server logs a request when it takes it):
    // the record of the new version, and the commit, are as they were.
    std::thread::sleep((late + Duration::from_secs(1)).saturating_sub(started.elapsed()));
    assert_eq!(commit(), new_commit);
    assert!(read(&mount.tag_path(&path)).unwrap() == new);
    assert_eq!(
        served.texture_gets(),
        gets + 2,
        "the new version read again from the cache"
    );
}

/// Drops the pages the kernel holds of `path` (as memory pressure would).
fn drop_pages(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).unwrap();
    // SAFETY: a plain syscall on an open descriptor.
    let done = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(done, 0);
}

#[test]
fn a_file_read_again_in_its_mount_reads_the_pages_kept_until_some_are_gone() {
    let served = Served::small();
    let (release, offered) = common::kernel_passthrough();
    if !offered {
        eprintln!("kernel {release} offers no FUSE passthrough: checking the fallback only");
    }
    let mount = Mount::builder(&served.base_url()).start();
    let (path, bytes) = served.release.textures().next().unwrap();
    let file = mount.tag_path(path);
    let through_matvisfs = || mount.stats()["bytes"]["served"].as_u64().unwrap();
    // Opened before its bytes were cached: read through the page cache.
    assert_eq!(&read(&file).unwrap(), bytes);
    wait_for("the file kept", Duration::from_secs(30), || {
        mount.stats()["cache"]["pending"] == 0
    });
    let first = through_matvisfs();
    assert!(first >= bytes.len() as u64);
    // Cached now, and the kernel holds its pages: they are read again.
    for _ in 0..3 {
        assert_eq!(&read(&file).unwrap(), bytes);
    }
    assert_eq!(through_matvisfs(), first, "the pages kept were read");
    // Pages gone: read through matvisfs once...
    drop_pages(&file);
    assert_eq!(&read(&file).unwrap(), bytes);
    let second = through_matvisfs();
    assert!(
        second >= first + bytes.len() as u64,
        "{second} after {first}"
    );
    // ...and from then on the cached file is passed through, where the
    // kernel can: gone pages no longer cost a read through matvisfs.
    drop_pages(&file);
    assert_eq!(&read(&file).unwrap(), bytes);
    if offered {
        assert_eq!(through_matvisfs(), second, "passed through");
    } else {
        assert!(through_matvisfs() >= second + bytes.len() as u64);
    }
    assert_eq!(served.texture_gets(), 1, "downloaded once");
}

#[test]
fn a_file_passed_through_and_closed_is_read_in_its_new_version_once_it_changed() {
    let (release, offered) = common::kernel_passthrough();
    if !offered {
        eprintln!("kernel {release} offers no FUSE passthrough: checking the fallback only");
    }
    // With the server's digests (the Hub's layout), and without (a plain
    // mirror: the new version is not known before it is downloaded).
    for plain in [false, true] {
        let release = Release::generate(&ReleaseSpec::small(TAG));
        let mut served = match plain {
            true => Served::plain_mirror(release),
            false => Served::new(release),
        };
        let (cache, files) = served.warmed_cache(2);
        let files: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .map(|(path, bytes)| (path.clone(), bytes.clone()))
            .collect();
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        // Passed through, closed, and opened again: the backing file
        // registered by the first open serves the next ones.
        for _ in 0..3 {
            for (path, bytes) in &files {
                assert!(read(&mount.tag_path(path)).unwrap() == *bytes, "{path}");
            }
        }
        if offered {
            assert_eq!(mount.stats()["bytes"]["served"], 0, "passed through");
        }
        // Both change on the server, one of them keeping its size.
        let mut release = served.release.clone();
        let same_size = common::texture_like(common::PNG_MAGIC, files[0].1.len(), 91);
        let resized = common::texture_like(common::PNG_MAGIC, files[1].1.len() + 1000, 92);
        release.replace_texture(&files[0].0, same_size.clone());
        release.replace_texture(&files[1].0, resized.clone());
        served.republish(release);
        refresh(&mount);
        for round in 0..3 {
            for (path, new) in [(&files[0].0, &same_size), (&files[1].0, &resized)] {
                let file = mount.tag_path(path);
                assert_eq!(
                    fs::metadata(&file).unwrap().len(),
                    new.len() as u64,
                    "plain {plain}, round {round}: {path}"
                );
                assert!(
                    read(&file).unwrap() == *new,
                    "plain {plain}, round {round}: {path} read the version before"
                );
            }
        }
    }
}

#[test]
fn an_o_direct_open_beside_bytes_the_kernel_holds_reads_its_version_after_a_clear_and_a_change() {
    // The kernel holds the file's bytes: a backing file still registered
    // (passed through, then closed), or the pages it kept.
    for no_passthrough in [false, true] {
        let mut served = Served::small();
        let (cache, files) = served.warmed_cache(1);
        let (path, old) = (files[0].0.clone(), files[0].1.clone());
        let mut builder = Mount::builder(&served.base_url()).cache(cache.path());
        if no_passthrough {
            builder = builder.arg("--no-passthrough");
        }
        let mount = builder.start();
        for _ in 0..2 {
            assert!(read(&mount.tag_path(&path)).unwrap() == old);
        }
        // Opened past the page cache, then the cached copy cleared and the
        // file changed on the server, before its first read.
        let direct = open_direct(&mount.tag_path(&path));
        common::clear_cache(&mount);
        let mut release = served.release.clone();
        let new = common::texture_like(common::PNG_MAGIC, old.len(), 93);
        release.replace_texture(&path, new.clone());
        served.republish(release);
        refresh(&mount);
        // At aligned addresses: the release of a read above may still be on
        // its way, in which case the kernel passes this open through too,
        // under the cache's filesystem's alignment rules.
        assert!(
            read_direct_aligned(&direct) == old,
            "--no-passthrough {no_passthrough}: the open read another version or none"
        );
        drop(direct);
        assert!(common::read_once_released(&mount.tag_path(&path)) == new);
    }
}

/// Reads an `O_DIRECT` open whole, 64 KiB at a time into a page-aligned
/// buffer.
fn read_direct_aligned(file: &fs::File) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 64 * 1024;
    let mut buffer = vec![0u8; CHUNK + 4096];
    let start = buffer.as_ptr().align_offset(4096);
    let aligned = &mut buffer[start..start + CHUNK];
    let mut got = Vec::new();
    loop {
        match file.read_at(aligned, got.len() as u64).unwrap() {
            0 => return got,
            n => got.extend_from_slice(&aligned[..n]),
        }
    }
}

#[test]
fn an_o_direct_open_of_a_cached_file_has_no_alignment_rule() {
    use std::os::unix::fs::FileExt;
    let served = Served::small();
    let (cache, files) = served.warmed_cache(3);
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    for (path, bytes) in &files {
        let file = open_direct(&mount.tag_path(path));
        // An odd address, an odd length and an odd offset, as any FUSE file
        // allows; passed through, the cache's own filesystem would refuse
        // them (EINVAL).
        assert_eq!(&&read_at_odd_address(&file, bytes.len()), bytes, "{path}");
        let mut piece = vec![0u8; bytes.len() - 8];
        file.read_exact_at(&mut piece, 7).unwrap();
        assert_eq!(piece, bytes[7..bytes.len() - 1], "{path}");
        // A plain open beside it is still passed through or read whole.
        assert_eq!(&&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
}

/// `O_DIRECT` set on an open file (`fcntl`) makes its reads skip the page
/// cache: the kernel sizes them up to a multiple of its largest request,
/// past the file's last page, which a read through the page cache never
/// asks.
#[test]
fn reads_after_o_direct_was_set_on_an_open_file_are_served_whole() {
    use std::os::fd::AsRawFd;
    let served = Served::small();
    let mount = Mount::builder(&served.base_url())
        .arg("--no-passthrough")
        .start();
    for (path, bytes) in served.release.textures().take(3) {
        let file = fs::File::open(mount.tag_path(path)).unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: a valid descriptor; flags only.
        let set = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT)
        };
        assert_eq!(set, 0);
        assert_eq!(&read_at_odd_address(&file, 1 << 20), bytes, "{path}");
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
}

#[test]
fn a_file_open_since_before_it_was_cached_can_be_opened_again_meanwhile() {
    use std::io::Read;
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    for (path, bytes) in served.release.textures().take(4) {
        // The first open reads through the page cache (nothing was cached);
        // while it stays open, later opens find the bytes cached. The kernel
        // allows no passthrough open of an inode beside such an open.
        let mut first = fs::File::open(mount.tag_path(path)).unwrap();
        let mut from_first = Vec::new();
        first.read_to_end(&mut from_first).unwrap();
        assert_eq!(&from_first, bytes, "{path}");
        for _ in 0..3 {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
        drop(first);
        // All closed: a new open may pass through again.
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
}

#[test]
fn hung_downloads_never_stall_listing_stats_or_cached_reads() {
    let served = Served::small();
    // One kernel thread, so four download workers: more hung downloads
    // than workers.
    let mount = Mount::builder(&served.base_url())
        .few_workers()
        .arg("--raw")
        .timeout(3)
        .start();
    hung_downloads_hold_up_nothing_cached(&served, &mount, 4);
}

#[test]
fn downloads_waiting_on_the_kernel_threads_leave_a_quarter_of_them_free() {
    let served = Served::small();
    // Four kernel threads: three may wait on a hung download of their own,
    // one stays free; the other hung downloads wait on workers.
    let mount = Mount::builder(&served.base_url())
        .arg("--threads")
        .arg("4")
        .arg("--retries")
        .arg("0")
        .arg("--raw")
        .timeout(3)
        .start();
    // Every reader at the server: the first three that had to wait took
    // the kernel threads that may.
    hung_downloads_hold_up_nothing_cached(&served, &mount, 10);
}

/// Ten readers of uncached textures hang on the server; once `at_server`
/// of their downloads have reached it, listing the tag, `stat` of the other
/// textures and a read of a cached one must all end before any reader does.
fn hung_downloads_hold_up_nothing_cached(served: &Served, mount: &Mount, at_server: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let textures: Vec<_> = served.release.textures().collect();
    let (cached, cached_bytes) = textures[0];
    read(&mount.tag_path(cached)).unwrap();
    served.hang_downloads();
    let finished = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for (path, _) in &textures[1..11] {
            let finished = &finished;
            scope.spawn(move || {
                let result = read(&mount.tag_path(path));
                finished.fetch_add(1, Ordering::SeqCst);
                assert!(result.is_err(), "{path} read despite a hung server");
            });
        }
        wait_for(
            &format!("{at_server} hung downloads"),
            Duration::from_secs(20),
            || {
                let requests = served.server.requests();
                requests
                    .iter()
                    .filter(|r| r.path.starts_with("cdn/"))
                    .count()
                    >= at_server
            },
        );
        let tree = walk(&mount.path.join(TAG));
        assert_eq!(tree.len(), served.release.expected_tree().len());
        for (path, bytes) in &textures[11..] {
            assert_eq!(
                fs::metadata(mount.tag_path(path)).unwrap().len(),
                bytes.len() as u64
            );
        }
        assert_eq!(&read(&mount.tag_path(cached)).unwrap(), cached_bytes);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "listing, stats and a cached read had to wait for hung downloads"
        );
    });
}

#[test]
fn cold_reads_one_at_a_time_wait_on_the_kernel_thread_that_read_them() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    for (path, bytes) in served.release.textures().take(6) {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert!(served.texture_gets() >= 6, "the reads downloaded");
    // No request was handed to another thread: none was started for one.
    let pid = mount.pid().expect("the daemon runs");
    let workers: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("content-") || name.starts_with("metadata-"))
        .collect();
    assert!(workers.is_empty(), "worker threads started: {workers:?}");
}

fn unmount_with(path: &Path, flags: i32) -> Result<(), i32> {
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    match unsafe { libc::umount2(target.as_ptr(), flags) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap()),
    }
}

/// Mounts a tmpfs at `path` holding a file `marker` (unmounted when the
/// guard drops), as a restart would mount matvisfs there again.
fn tmpfs_at(path: &Path) -> Unmounts {
    let c = |s: &[u8]| std::ffi::CString::new(s).unwrap();
    let (source, target) = (c(b"matvisfs-test"), c(path.as_os_str().as_encoded_bytes()));
    let (kind, options) = (c(b"tmpfs"), c(b"size=1m"));
    // SAFETY: valid NUL-terminated strings. The call itself, not mount(8):
    // as soon as the caller asks.
    let mounted = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    assert_eq!(mounted, 0, "cannot mount a tmpfs");
    let mounted = Unmounts::new(path);
    fs::write(path.join("marker"), b"mounted since").unwrap();
    mounted
}

/// What [`tmpfs_at`] mounted at `path` is still there, its file intact.
fn assert_left_alone(path: &Path) {
    assert_eq!(
        fs::read(path.join("marker")).ok().as_deref(),
        Some(&b"mounted since"[..]),
        "the process unmounted what was mounted at its path after it"
    );
}

#[test]
fn the_process_exits_soon_after_the_kernel_ends_the_connection_though_its_threads_wait_on_the_server()
 {
    let served = Served::small();
    // Four kernel threads: three wait on hung downloads of their own, the
    // two other readers' downloads on workers; each would last a minute.
    let mut mount = Mount::builder(&served.base_url())
        .arg("--threads")
        .arg("4")
        .arg("--retries")
        .arg("0")
        .arg("--raw")
        .timeout(60)
        .start();
    served.hang_downloads();
    let textures: Vec<_> = served.release.textures().take(5).collect();
    let since = std::thread::scope(|scope| {
        let readers: Vec<_> = textures
            .iter()
            .map(|(path, _)| {
                let path = mount.tag_path(path);
                scope.spawn(move || read(&path).map_err(|e| e.raw_os_error()))
            })
            .collect();
        wait_for("5 hung downloads", Duration::from_secs(20), || {
            let requests = served.server.requests();
            requests
                .iter()
                .filter(|r| r.path.starts_with("cdn/"))
                .count()
                >= 5
        });
        // `umount -f`: the kernel aborts the connection, then unmounts
        // what nothing holds any more.
        let _ = unmount_with(&mount.path, libc::MNT_FORCE);
        for reader in readers {
            assert_eq!(reader.join().unwrap(), Err(Some(libc::ENOTCONN)));
        }
        // A restart mounts at the same path at once, while the process
        // still ends: what is mounted there since is not its own to remove.
        let _ = unmount_with(&mount.path, libc::MNT_DETACH);
        assert!(!is_mounted(&mount.path));
        tmpfs_at(&mount.path)
    });
    assert_eq!(
        mount.wait_exit(Duration::from_secs(10)),
        Some(true),
        "the process lived on after the connection ended, until its downloads' bound"
    );
    assert_left_alone(&mount.path);
    drop(since);
}

#[test]
fn after_an_unmount_the_process_leaves_alone_what_is_mounted_at_its_path_at_once() {
    let served = Served::small();
    // With many threads to join, the process used to end well after the
    // kernel's unmount returned, and then unmount its path by name: a
    // mount made there at once went in most tries.
    for _ in 0..5 {
        let mut mount = Mount::builder(&served.base_url())
            .arg("--threads")
            .arg("64")
            .start();
        let (texture, bytes) = served.release.textures().next().unwrap();
        assert_eq!(&read(&mount.tag_path(texture)).unwrap(), bytes);
        // The file is closed, but a child another test forks at that moment
        // holds it until its exec: busy for that long.
        let mut unmounted = unmount_with(&mount.path, 0);
        wait_for("the mount not busy", Duration::from_secs(10), || {
            if unmounted == Err(libc::EBUSY) {
                unmounted = unmount_with(&mount.path, 0);
            }
            unmounted != Err(libc::EBUSY)
        });
        assert_eq!(unmounted, Ok(()));
        let since = tmpfs_at(&mount.path);
        assert_eq!(mount.wait_exit(Duration::from_secs(10)), Some(true));
        assert_left_alone(&mount.path);
        drop(since);
    }
}

#[test]
fn a_mount_aborted_while_a_file_is_open_is_detached_as_the_process_ends() {
    let served = Served::small();
    let mut mount = Mount::builder(&served.base_url()).start();
    let (texture, bytes) = served.release.textures().next().unwrap();
    assert_eq!(&read(&mount.tag_path(texture)).unwrap(), bytes);
    let open = fs::File::open(mount.tag_path(texture)).unwrap();
    // `umount -f` of a busy mount: the kernel ends the connection and
    // leaves the mount, which answers nothing any more.
    assert_eq!(unmount_with(&mount.path, libc::MNT_FORCE), Err(libc::EBUSY));
    assert_eq!(mount.wait_exit(Duration::from_secs(10)), Some(true));
    assert!(
        !is_mounted(&mount.path),
        "a mount whose connection ended was left at {}",
        mount.path.display()
    );
    drop(open);
}

#[test]
fn a_signal_after_a_lazy_unmount_leaves_alone_what_is_mounted_at_the_path_since() {
    let served = Served::small();
    let mut mount = Mount::builder(&served.base_url()).start();
    let (texture, bytes) = served.release.textures().next().unwrap();
    // An open file keeps the session after the lazy unmount, and the
    // process alive through the signal's grace.
    let open = fs::File::open(mount.tag_path(texture)).unwrap();
    assert_eq!(unmount_with(&mount.path, libc::MNT_DETACH), Ok(()));
    let since = tmpfs_at(&mount.path);
    mount.signal(libc::SIGTERM);
    assert_eq!(
        &read_open(&open),
        bytes,
        "an open file reads on after the signal"
    );
    assert_eq!(mount.wait_exit(Duration::from_secs(15)), Some(true));
    assert_left_alone(&mount.path);
    drop(since);
    drop(open);
}

#[test]
fn a_signal_leaves_alone_a_mount_stacked_on_the_process_own_and_still_ends_it() {
    let served = Served::small();
    let mut mount = Mount::builder(&served.base_url()).start();
    let (texture, bytes) = served.release.textures().next().unwrap();
    assert_eq!(&read(&mount.tag_path(texture)).unwrap(), bytes);
    let above = tmpfs_at(&mount.path);
    mount.signal(libc::SIGINT);
    assert_eq!(mount.wait_exit(Duration::from_secs(15)), Some(true));
    assert_left_alone(&mount.path);
    assert_eq!(unmount_with(&mount.path, 0), Ok(()));
    // The process's own mount, under the other, ended with the process
    // (and the guard detaches it).
    assert_eq!(
        fs::metadata(mount.tag_path(texture))
            .map_err(|e| e.raw_os_error())
            .err(),
        Some(Some(libc::ENOTCONN))
    );
    drop(above);
}

#[test]
fn a_process_ending_after_a_new_mount_at_its_path_leaves_the_new_one_its_control_socket() {
    let served = Served::small();
    let mut old = Mount::builder(&served.base_url()).start();
    let (texture, bytes) = served.release.textures().next().unwrap();
    let open = fs::File::open(old.tag_path(texture)).unwrap();
    assert_eq!(unmount_with(&old.path, libc::MNT_DETACH), Ok(()));
    // A restart at the same path while the old process still serves its
    // open file.
    let started = background_mount(
        &old.path,
        &served.base_url(),
        &old.dir.path().join("cache-new"),
    )
    .output()
    .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let new = Unmounts::new(&old.path);
    let path = old.path.clone();
    let refresh = || {
        Command::new(BIN)
            .arg("refresh")
            .arg(&path)
            .output()
            .unwrap()
    };
    let before = refresh();
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    assert_eq!(&read_open(&open), bytes);
    drop(open);
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(true));
    let after = refresh();
    assert!(
        after.status.success(),
        "the old process removed the new mount's control socket: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    drop(new);
}

/// Foreground mounts started by a test at a path of its choosing: killed
/// when dropped, and whatever is still mounted at the path detached.
struct Started {
    path: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

impl Started {
    fn new(path: &Path) -> Started {
        Started {
            path: path.to_path_buf(),
            children: Vec::new(),
        }
    }

    /// Starts `matvisfs mount --foreground` at the path, with a cache of
    /// its own.
    fn mount(&mut self, base_url: &str) -> usize {
        let cache = self
            .path
            .with_extension(format!("cache-{}", self.children.len()));
        let child = Command::new(BIN)
            .arg("mount")
            .arg(&self.path)
            .args(["--foreground", "--base-url", base_url, "--cache-dir"])
            .arg(cache)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits for the mount `index` to exit: whether it succeeded, and what
    /// it said.
    fn wait(&mut self, index: usize, limit: Duration) -> Option<(bool, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.children[index].try_wait().unwrap() {
                let mut said = String::new();
                if let Some(mut stderr) = self.children[index].stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
                }
                return Some((status.success(), said));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Unmounts the path, which must succeed, and waits for the mount
    /// `index` to exit 0.
    fn unmount_and_exit_cleanly(&mut self, index: usize) {
        assert_eq!(unmount_with(&self.path, 0), Ok(()));
        assert_eq!(
            self.wait(index, Duration::from_secs(10)).map(|exit| exit.0),
            Some(true)
        );
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for _ in 0..4 {
            if is_mounted(&self.path) {
                let _ = unmount_with(&self.path, libc::MNT_DETACH);
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        common::remove_control_socket(&self.path);
    }
}

#[test]
fn a_signal_the_moment_the_mount_appears_unmounts_it_and_the_process_exits_cleanly() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    fs::create_dir(&path).unwrap();
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGTERM] {
        let mut started = Started::new(&path);
        let index = started.mount(&served.base_url());
        let pid = started.children[index].id() as i32;
        // As soon as it shows: the process may not have set up anything
        // else yet.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&path) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        // SAFETY: sending a signal has no memory effects.
        unsafe { libc::kill(pid, signal) };
        let (exited_cleanly, said) = started
            .wait(index, Duration::from_secs(15))
            .expect("the process exits after the signal");
        assert!(exited_cleanly, "killed by the signal, or failed: {said}");
        assert!(!is_mounted(&path), "a mount was left behind");
        let socket = matvisfs::control::socket_path(0, &fs::canonicalize(&path).unwrap());
        assert!(!socket.exists(), "its control socket was left behind");
    }
}

#[test]
fn of_two_mounts_started_at_once_at_one_path_one_serves_and_the_other_fails() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    fs::create_dir(&path).unwrap();
    let mut started = Started::new(&path);
    let first = started.mount(&served.base_url());
    let second = started.mount(&served.base_url());
    // One of them fails: the other had mounted there since its check.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (failed, said) = loop {
        if let Some(exit) = started.wait(first, Duration::ZERO) {
            break (first, exit);
        }
        if let Some(exit) = started.wait(second, Duration::ZERO) {
            break (second, exit);
        }
        assert!(Instant::now() < deadline, "both mounts still run");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!said.0, "a mount stacked on another: {}", said.1);
    assert!(said.1.contains("already a mount point"), "{}", said.1);
    let serving = 1 - failed;
    assert_eq!(started.wait(serving, Duration::ZERO), None);
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some(path.to_str().unwrap()))
        .count();
    assert_eq!(mounts, 1);
    let (texture, bytes) = served.release.textures().next().unwrap();
    assert_eq!(&read(&path.join(TAG).join(texture)).unwrap(), bytes);
    // The one that failed took no name from the one that serves.
    let refreshed = Command::new(BIN)
        .arg("refresh")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        refreshed.status.success(),
        "{}",
        String::from_utf8_lossy(&refreshed.stderr)
    );
    started.unmount_and_exit_cleanly(serving);
}

#[test]
fn a_mount_stacked_the_moment_the_process_own_appears_is_never_taken_for_it() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    fs::create_dir(&path).unwrap();
    for _ in 0..3 {
        let mut started = Started::new(&path);
        let index = started.mount(&served.base_url());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&path) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        // Stacked at once, before the process may have looked at its path.
        let above = tmpfs_at(&path);
        // Past the process's setup: what is tested is which mount the
        // signal's unmount takes.
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: sending a signal has no memory effects.
        unsafe { libc::kill(started.children[index].id() as i32, libc::SIGTERM) };
        let (exited_cleanly, said) = started
            .wait(index, Duration::from_secs(15))
            .expect("the process exits after the signal");
        assert!(exited_cleanly, "{said}");
        assert_left_alone(&path);
        drop(above);
    }
}

#[test]
fn a_mountpoint_that_is_a_bind_mount_of_itself_is_mounted_on() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    fs::create_dir(&path).unwrap();
    // As systemd units and containers make them: the root of a mount,
    // on the same filesystem as its parent.
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated paths.
    let bound = unsafe {
        libc::mount(
            target.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(bound, 0, "cannot bind-mount the mountpoint on itself");
    let _bind = Unmounts::new(&path);
    let mut started = Started::new(&path);
    let index = started.mount(&served.base_url());
    let (texture, bytes) = served.release.textures().next().unwrap();
    let file = path.join(TAG).join(texture);
    wait_for("the mount", Duration::from_secs(30), || {
        fs::metadata(&file).is_ok() || started.children[index].try_wait().unwrap().is_some()
    });
    assert_eq!(read(&file).ok().as_ref(), Some(bytes), "not mounted");
    started.unmount_and_exit_cleanly(index);
}

#[test]
fn a_background_mount_whose_command_is_interrupted_while_it_loads_never_mounts() {
    let served = Served::small();
    served.server.inject(
        FaultRule::new(
            "release-manifest.json",
            Fault::Delay(Duration::from_millis(1500)),
        )
        .times(1),
    );
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let _unmounts = Unmounts::new(&mountpoint);
    let mut command = background_mount(&mountpoint, &served.base_url(), &dir.path().join("cache"));
    // SIGINT as a terminal delivers it: a test run in the background of a
    // shell inherits it ignored.
    // SAFETY: signal is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut command = command.stderr(std::process::Stdio::null()).spawn().unwrap();
    wait_for("the manifest's request", Duration::from_secs(20), || {
        served
            .server
            .requests()
            .iter()
            .any(|r| r.path.contains("release-manifest.json"))
    });
    // Ctrl-C: the command ends; its background process, in a session of
    // its own, does not get the signal.
    // SAFETY: sending a signal has no memory effects.
    unsafe { libc::kill(command.id() as i32, libc::SIGINT) };
    assert!(!command.wait().unwrap().success());
    wait_for(
        "the background process to end",
        Duration::from_secs(20),
        || serving_processes(&mountpoint).is_empty(),
    );
    assert!(
        !is_mounted(&mountpoint),
        "a mount nobody waits for any more was made"
    );
}

/// The whole of an open file, read from its start.
fn read_open(file: &fs::File) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0; file.metadata().unwrap().len() as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    bytes
}

#[test]
fn reads_queued_behind_downloads_hung_on_the_server_fail_within_their_bound() {
    let served = Served::small();
    // Four download workers, 2 s an attempt: 24 hung reads would end four
    // at a time, the last after 12 s, if each queued one were sent anyway.
    let timeout = 2;
    let mount = Mount::builder(&served.base_url())
        .few_workers()
        .arg("--raw")
        .timeout(timeout)
        .start();
    let textures: Vec<_> = served.release.textures().take(24).collect();
    assert_eq!(textures.len(), 24, "enough textures");
    served.hang_downloads();
    let started = Instant::now();
    let slowest = std::thread::scope(|scope| {
        let readers: Vec<_> = textures
            .iter()
            .map(|(path, _)| {
                let mount = &mount;
                scope.spawn(move || {
                    let result = read(&mount.tag_path(path));
                    assert_eq!(
                        result.err().and_then(|e| e.raw_os_error()),
                        Some(libc::EIO),
                        "{path}: a hung server's read fails"
                    );
                    started.elapsed()
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|reader| reader.join().unwrap())
            .max()
            .unwrap()
    });
    assert!(
        slowest < Duration::from_secs(3 * timeout),
        "the last read failed after {slowest:?}: it waited for a worker, then its own attempt"
    );
}

#[test]
fn a_read_after_a_stat_goes_straight_to_the_cdn() {
    let served = Served::small();
    let mount = Mount::builder(&served.base_url()).start();
    // "METHOD path status" of the requests for `path`, at the resolve
    // endpoint or the CDN.
    let asked_for = |path: &str| -> Vec<String> {
        let (resolve, cdn) = (format!("{TAG}/{path}"), format!("cdn/{TAG}/{path}"));
        served
            .server
            .requests()
            .into_iter()
            .filter(|r| r.path == resolve || r.path == cdn)
            .map(|r| format!("{} {} {}", r.method, r.path, r.status))
            .collect()
    };
    // Not the baked tier, whose sizes the catalog gives without a HEAD.
    let path = "ambientcg/512/Wood051/roughness.png";
    let size = fs::metadata(mount.tag_path(path)).unwrap().len();
    assert_eq!(
        read(&mount.tag_path(path)).unwrap(),
        served.release.files[path]
    );
    assert_eq!(size as usize, served.release.files[path].len());
    let (resolve, cdn) = (format!("{TAG}/{path}"), format!("cdn/{TAG}/{path}"));
    assert_eq!(
        asked_for(path),
        [format!("HEAD {resolve} 302"), format!("GET {cdn} 200")],
        "the HEAD's redirect is reused by the download"
    );

    // A remembered CDN URL that has expired: the dataset is asked again.
    let path = "ambientcg/512/Wood051/normal.png";
    let (resolve, cdn) = (format!("{TAG}/{path}"), format!("cdn/{TAG}/{path}"));
    fs::metadata(mount.tag_path(path)).unwrap();
    served.server.inject(
        matvisfs_testkit::devserver::FaultRule::new(
            &cdn,
            matvisfs_testkit::devserver::Fault::Status {
                code: 403,
                retry_after: None,
            },
        )
        .times(1),
    );
    assert_eq!(
        read(&mount.tag_path(path)).unwrap(),
        served.release.files[path]
    );
    assert_eq!(
        asked_for(path),
        [
            format!("HEAD {resolve} 302"),
            format!("GET {cdn} 403"),
            format!("GET {resolve} 302"),
            format!("GET {cdn} 200")
        ]
    );
}

#[test]
fn a_mountpoint_with_entries_is_refused_unless_asked_for() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    fs::write(mountpoint.join("notes.txt"), b"mine").unwrap();
    let cache = dir.path().join("cache");
    let refused = background_mount(&mountpoint, &served.base_url(), &cache)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(!is_mounted(&mountpoint));
    assert_eq!(fs::read(mountpoint.join("notes.txt")).unwrap(), b"mine");
    let allowed = background_mount(&mountpoint, &served.base_url(), &cache)
        .arg("--nonempty")
        .output()
        .unwrap();
    assert!(allowed.status.success(), "{allowed:?}");
    assert!(is_mounted(&mountpoint));
    assert!(mountpoint.join(TAG).is_dir());
    assert!(common::unmount(&mountpoint).success());
    assert_eq!(fs::read(mountpoint.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn a_session_of_ordinary_use_logs_no_warning() {
    let served = Served::small();
    let mut mount = Mount::builder(&served.base_url()).start();
    for (path, bytes) in served.release.textures().take(8) {
        let file = fs::File::open(mount.tag_path(path)).unwrap();
        // What `isatty` asks of every file a program opens: not a terminal.
        let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
        use std::os::fd::AsRawFd;
        // SAFETY: an open descriptor and room for the answer.
        // SAFETY: an open descriptor and room for the answer.
        let asked = unsafe { libc::ioctl(file.as_raw_fd(), libc::TCGETS, termios.as_mut_ptr()) };
        assert_eq!(asked, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTTY)
        );
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    }
    let status = Command::new(BIN)
        .arg("unmount")
        .arg(&mount.path)
        .status()
        .unwrap();
    assert!(status.success());
    mount.expect_clean_exit();
    let log = mount.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn a_cache_report_piped_into_head_ends_quietly() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    common::warm(
        &served.base_url(),
        cache.path(),
        &["ambientcg/1k/Rock064/color.png"],
    );
    let mut child = Command::new(BIN)
        .args(["cache", "status", "--cache-dir"])
        .arg(cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `head -0`: the reader goes away before the report is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        output.status
    );
}

/// `matvisfs mount` as a new user first runs it (default flags, an empty
/// cache) against `base_url`: its exit status, its stderr with the time
/// each line came, and how long it took.
fn first_mount(base_url: &str) -> (std::process::ExitStatus, Vec<(Duration, String)>, Duration) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let _unmounts = Unmounts::new(&mountpoint);
    let began = Instant::now();
    let mut child = Command::new(BIN)
        .arg("mount")
        .arg(&mountpoint)
        .args(["--base-url", base_url, "--cache-dir"])
        .arg(dir.path().join("cache"))
        .env_remove("MATVISFS_TIMEOUT")
        .env_remove("MAT_VIS_MAX_RETRIES")
        .env_remove("MAT_VIS_BACKOFF_BASE")
        .env_remove("MAT_VIS_RETRY_MAX_WAIT")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<(Duration, String)> = std::io::BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map(|line| (began.elapsed(), line.unwrap()))
        .collect();
    let status = child.wait().unwrap();
    let took = began.elapsed();
    // Nothing is left: no mount, no process, the mountpoint as it was.
    assert!(!is_mounted(&mountpoint));
    wait_for(
        "the background process to end",
        Duration::from_secs(10),
        || serving_processes(&mountpoint).is_empty(),
    );
    assert_eq!(fs::read_dir(&mountpoint).unwrap().count(), 0);
    (status, lines, took)
}

/// The ways out a failed first contact names.
fn names_the_ways_out(stderr: &str) {
    for flag in ["--offline", "demo", "--base-url", "--timeout"] {
        assert!(stderr.contains(flag), "{flag} not in {stderr}");
    }
}

#[test]
fn a_first_mount_against_a_silent_server_says_what_it_waits_for_and_gives_up_within_30_s() {
    let served = Served::small();
    served
        .server
        .inject(FaultRule::new("release-manifest.json", Fault::Hang));
    let url = format!("{}/{TAG}/release-manifest.json", served.base_url());
    let (status, lines, took) = first_mount(&served.base_url());
    let stderr: String = lines.iter().map(|(_, line)| format!("{line}\n")).collect();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(45), "took {took:?}: {stderr}");
    // Said while waiting, within a few seconds, and not only at the end.
    let (said_at, _) = lines
        .iter()
        .find(|(_, line)| line.contains(&url))
        .unwrap_or_else(|| panic!("{url} not in {stderr}"));
    assert!(
        *said_at < Duration::from_secs(10),
        "said at {said_at:?}: {stderr}"
    );
    assert!(*said_at + Duration::from_secs(10) < took, "{stderr}");
    names_the_ways_out(&stderr);
}

#[test]
fn a_first_mount_of_a_host_that_does_not_resolve_fails_fast_with_the_same_ways_out() {
    // RFC 6761: no name under .invalid resolves, and no query leaves the
    // machine for one.
    let base = "http://mat-vis.invalid/resolve";
    let (status, lines, took) = first_mount(base);
    let stderr: String = lines.iter().map(|(_, line)| format!("{line}\n")).collect();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {stderr}");
    assert!(
        stderr.contains(&format!("{base}/{TAG}/release-manifest.json")),
        "{stderr}"
    );
    names_the_ways_out(&stderr);
}

#[test]
fn a_failed_foreground_mount_says_why_once() {
    // A port nothing listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let _unmounts = Unmounts::new(&mountpoint);
    let output = Command::new(BIN)
        .arg("mount")
        .arg(&mountpoint)
        .arg("--foreground")
        .args(["--base-url", &format!("http://127.0.0.1:{port}/resolve")])
        .args(["--backoff-base", "0.01", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("cannot load tag").count(), 1, "{stderr}");
    assert!(!is_mounted(&mountpoint));
}

/// `scripts/run.sh ARGS` run in an empty directory as a new user runs it,
/// with the binary under test installed in its place (a `cargo` that builds
/// nothing comes first on `PATH`). Returns its output and the directory.
fn run_script(args: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let tools = tempfile::tempdir().unwrap();
    let prefix = tools.path().join("prefix");
    fs::create_dir_all(prefix.join("bin")).unwrap();
    std::os::unix::fs::symlink(BIN, prefix.join("bin/matvisfs")).unwrap();
    let fake = tools.path().join("fake");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join("cargo"), "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(fake.join("cargo"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cwd = tempfile::tempdir().unwrap();
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run.sh"))
        .args(args)
        .current_dir(cwd.path())
        .env("MATVISFS_PREFIX", &prefix)
        .env("PATH", path)
        .env("MATVISFS_CACHE_DIR", tools.path().join("cache"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (output, cwd)
}

#[test]
fn the_run_script_prints_help_and_mounts_nothing_for_help() {
    for help in ["--help", "-h"] {
        let (output, cwd) = run_script(&[help]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        assert!(stdout.contains("--base-url"), "mount's flags: {stdout}");
        assert_eq!(
            fs::read_dir(cwd.path()).unwrap().count(),
            0,
            "nothing created: {stdout}"
        );
        assert!(!is_mounted(&cwd.path().join("mat-vis")));
    }
}

#[test]
fn the_run_script_leaves_nothing_when_the_mount_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}/resolve");
    let (output, cwd) = run_script(&["--base-url", &base, "--backoff-base", "0.01"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert!(stderr.contains(&base), "{stderr}");
    assert_eq!(fs::read_dir(cwd.path()).unwrap().count(), 0, "{stderr}");
}

#[test]
fn a_brand_new_cache_is_created_without_a_word_of_repair() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["cache", "status", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "nothing to report"
    );
}

/// On a plain mirror (which proves no version), a file changed while it
/// was open, its size asked then (the kernel is given the open version's),
/// and closed: a new open reads the new version whole at its first read,
/// with no `fstat` before it, though the kernel held the old size: opened
/// by its path, or through a descriptor's link in /proc.
#[test]
fn an_open_after_the_old_version_closed_reads_the_new_version_the_kernel_had_another_size_for() {
    use std::os::fd::AsRawFd;
    let mut served = Served::plain_mirror(Release::generate(&ReleaseSpec::small(TAG)));
    let path = "ambientcg/512/Wood051/ao.png";
    let mount = Mount::builder(&served.base_url()).start();
    let o_path = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(mount.tag_path(path))
        .unwrap();
    let held = fs::File::open(mount.tag_path(path)).unwrap();
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut old).unwrap();
    assert!(old == served.release.files[path]);
    let mut release = served.release.clone();
    let new = matvisfs_sample::images::png("republished", "ao", 90);
    assert_ne!(old.len(), new.len());
    release.replace_texture(path, new.clone());
    served.republish(release);
    refresh(&mount);
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        old.len() as u64,
        "the open version's size while it is open"
    );
    drop(held);
    // Opened again through a descriptor's link in /proc, which the kernel
    // follows with no lookup, then by its path.
    let reopen = format!("/proc/self/fd/{}", o_path.as_raw_fd());
    for file in [
        Path::new(&reopen),
        &mount.tag_path(path),
        &mount.tag_path(path),
    ] {
        let opened = fs::File::open(file).unwrap();
        let bytes = common::first_read(&opened).expect("the first read");
        assert!(bytes == new, "{} bytes", bytes.len());
    }
    assert_eq!(
        fs::metadata(mount.tag_path(path)).unwrap().len(),
        new.len() as u64
    );
}

/// Reads of `file` through io_uring (`IORING_OP_READ`), `chunk` bytes at a
/// time from offset 0 until one returns nothing, as an io_uring program
/// reads a file whole.
fn read_through_io_uring(file: &fs::File, chunk: usize) -> Vec<u8> {
    use io_uring::{IoUring, opcode, types};
    use std::os::fd::AsRawFd;
    let mut ring = IoUring::new(4).unwrap();
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; chunk];
    for _ in 0..1000 {
        let read = opcode::Read::new(
            types::Fd(file.as_raw_fd()),
            buffer.as_mut_ptr(),
            chunk as u32,
        )
        .offset(bytes.len() as u64)
        .build();
        // SAFETY: the buffer outlives the operation, which is waited for.
        unsafe { ring.submission().push(&read).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let result = ring.completion().next().unwrap().result();
        assert!(result >= 0, "io_uring read: errno {}", -result);
        if result == 0 {
            return bytes;
        }
        bytes.extend_from_slice(&buffer[..result as usize]);
    }
    panic!("no end after 1000 reads");
}

/// Files matvisfs reads itself, past the page cache (on a plain mirror, any
/// file the catalog does not prove), read through io_uring: each read ends
/// at the file's end. The kernel retries a read of a regular file that came
/// back short at the position it kept, which such a read did not advance,
/// so one read of 1 MiB returned the file over and over.
#[test]
fn a_file_read_past_the_page_cache_reads_whole_through_io_uring() {
    let served = Served::plain_mirror(Release::generate(&ReleaseSpec::small(TAG)));
    let mount = Mount::builder(&served.base_url()).start();
    for path in [
        "ambientcg/512/Wood051/ao.png",
        "ambientcg/512/Rock064/color.png",
    ] {
        let expected = &served.release.files[path];
        for chunk in [1 << 20, 4096] {
            let file = fs::File::open(mount.tag_path(path)).unwrap();
            let bytes = read_through_io_uring(&file, chunk);
            assert!(
                bytes == *expected,
                "{path} in reads of {chunk}: {} bytes, the file has {}",
                bytes.len(),
                expected.len()
            );
        }
    }
    // The statistics, read past the page cache too.
    let stats = fs::File::open(mount.path.join(".matvisfs/stats.json")).unwrap();
    let bytes = read_through_io_uring(&stats, 1 << 20);
    serde_json::from_slice::<serde_json::Value>(&bytes).expect("one JSON document");
}
