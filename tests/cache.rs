//! The content cache through real mounts and commands: deduplication, the
//! size cap, prefetch for offline use, crash safety, the cache commands and
//! the statistics file.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    BIN, Mount, Served, TAG, Tmpfs, open_direct, read, read_at_odd_address, split_generated,
    stored_objects, walk, warm,
};
use matvisfs_sample::Release;
use matvisfs_testkit::devserver::{Fault, FaultRule};

const OTHER: &str = "v2026.05.0-rc1";

fn matvisfs(args: &[&str], cache: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("MATVISFS_CACHE_MAX_SIZE")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn prefetch(served: &Served, cache: &Path, extra: &[&str]) -> Output {
    let base = served.base_url();
    let mut args = vec!["prefetch", "--base-url", &base, "--backoff-base", "0.01"];
    args.extend_from_slice(extra);
    matvisfs(&args, cache)
}

/// Bytes of texture content on disk.
fn stored_bytes(cache: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            // Eviction may remove a file between the listing
                            // and this look: it no longer takes room.
                            e.metadata().map_or(0, |m| m.len())
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&cache.join("objects"))
}

/// Bytes in `objects/` at every moment, from one inotify instance on all of
/// its directories: its events come in the order the changes happened, so
/// the running sum is a state that existed (a directory walk may count an
/// evicted file and its replacement together). The 256 prefix directories
/// are made before the store starts, so that no install escapes a watch.
struct CapWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl CapWatch {
    /// `sizes`: the size of every object that may appear, by its name.
    fn start(cache: &Path, sizes: HashMap<String, u64>) -> CapWatch {
        use inotify::{Inotify, WatchMask};
        let objects = cache.join("objects");
        let mut inotify = Inotify::init().unwrap();
        let mut dirs = HashMap::new();
        for prefix in 0..=255u8 {
            let name = format!("{prefix:02x}");
            fs::create_dir_all(objects.join(&name)).unwrap();
            let mask =
                WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::DELETE | WatchMask::MOVED_FROM;
            let wd = inotify.watches().add(objects.join(&name), mask).unwrap();
            dirs.insert(wd, name);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            use inotify::EventMask;
            let mut buffer = vec![0u8; 1 << 16];
            let mut present = std::collections::HashSet::new();
            let (mut now, mut most) = (0u64, 0u64);
            loop {
                let last_round = stopped.load(Ordering::SeqCst);
                match inotify.read_events(&mut buffer) {
                    Ok(events) => {
                        for event in events {
                            assert!(!event.mask.contains(EventMask::Q_OVERFLOW), "events lost");
                            let name = format!(
                                "{}{}",
                                dirs[&event.wd],
                                event.name.unwrap().to_string_lossy()
                            );
                            let Some(&size) = sizes.get(&name) else {
                                continue;
                            };
                            if event
                                .mask
                                .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                            {
                                if present.insert(name) {
                                    now += size;
                                }
                            } else if present.remove(&name) {
                                now -= size;
                            }
                            most = most.max(now);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if last_round {
                            return most;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("inotify: {e}"),
                }
            }
        });
        CapWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// The most bytes `objects/` held at any moment since the start.
    fn most(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for CapWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Object names (sha256 in hex) and sizes of a release's textures.
fn object_sizes(release: &Release) -> HashMap<String, u64> {
    release
        .textures()
        .map(|(_, bytes)| (matvisfs_sample::sha256_hex(bytes), bytes.len() as u64))
        .collect()
}

fn stats(mount: &Mount) -> serde_json::Value {
    serde_json::from_slice(&read(&mount.path.join(".matvisfs/stats.json")).unwrap()).unwrap()
}

/// Waits until the mount has made every download durable (room made under
/// the cap, moved into place): the store is at rest.
fn wait_until_settled(mount: &Mount) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stats(mount)["cache"]["pending"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "downloads still pending after 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The small release, and the same files published under a second tag.
fn serve_with_twin() -> (Served, Release) {
    let served = Served::small();
    let twin = Release {
        tag: OTHER.into(),
        files: served.release.files.clone(),
    };
    twin.write_to(served.dir.path()).unwrap();
    (served, twin)
}

#[test]
fn a_second_tag_with_the_same_bytes_downloads_nothing() {
    let (served, twin) = serve_with_twin();
    let mount = Mount::builder(&served.base_url())
        .arg("--tag")
        .arg(TAG)
        .arg("--tag")
        .arg(OTHER)
        .start();
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    }
    served.server.clear_requests();
    for (path, bytes) in twin.textures() {
        assert_eq!(
            &read(&mount.path.join(OTHER).join(path)).unwrap(),
            bytes,
            "{path}"
        );
    }
    let gets: Vec<_> = served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && (r.path.ends_with(".png") || r.path.ends_with(".ktx2")))
        .collect();
    assert!(gets.is_empty(), "{gets:#?}");
    let stats = stats(&mount);
    assert_eq!(stats["cache"]["dedupe_hits"], twin.textures().count());
    assert_eq!(stats["cache"]["files"], served.release.textures().count());
}

#[test]
fn the_cap_holds_while_reading_more_than_it_through_the_mount() {
    let served = Served::small();
    let total: usize = served.release.textures().map(|(_, b)| b.len()).sum();
    let cap = total / 4;
    let cache = tempfile::tempdir().unwrap();
    let watch = CapWatch::start(cache.path(), object_sizes(&served.release));
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--cache-max-size")
        .arg(&cap.to_string())
        .start();
    for round in 0..2 {
        for (path, bytes) in served.release.textures() {
            assert_eq!(
                &read(&mount.tag_path(path)).unwrap(),
                bytes,
                "round {round}: {path}"
            );
        }
    }
    wait_until_settled(&mount);
    let most = watch.most();
    assert!(most <= cap as u64, "{most} > {cap} at some moment");
    let at_rest = stored_bytes(&mount.cache);
    assert!(at_rest <= cap as u64, "{at_rest} > {cap} at rest");
    assert_eq!(stats(&mount)["cache"]["bytes"], at_rest);
    // A file that stays open keeps reading correctly while it is evicted.
    let (path, bytes) = served.release.textures().next().unwrap();
    let mut open = fs::File::open(mount.tag_path(path)).unwrap();
    for (other, _) in served.release.textures().skip(1) {
        read(&mount.tag_path(other)).unwrap();
    }
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut open, &mut again).unwrap();
    assert_eq!(&again, bytes);
    assert!(stats(&mount)["cache"]["evictions"].as_u64().unwrap() > 0);
}

#[test]
fn prefetch_then_an_offline_mount_reads_everything_without_a_request() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let output = prefetch(&served, cache.path(), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let textures = served.release.textures().count();
    assert!(
        stdout(&output).contains(&format!("prefetched {textures} files")),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains(&format!("{textures} downloaded")),
        "{}",
        stdout(&output)
    );

    // Resumable: a second run finds everything cached.
    served.server.clear_requests();
    let again = prefetch(&served, cache.path(), &[]);
    assert!(
        stdout(&again).contains("0 downloaded")
            && stdout(&again).contains(&format!("{textures} already cached"))
    );
    assert_eq!(served.texture_gets(), 0);

    let mut server = served;
    server.server.stop();
    let mount = Mount::builder(&server.base_url())
        .cache(cache.path())
        .arg("--offline")
        .start();
    for (path, bytes) in &server.release.files {
        if !path.ends_with(".tier_complete") {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
    }
    let stats = stats(&mount);
    assert_eq!(stats["requests"], serde_json::json!({}), "{stats:#}");
    assert_eq!(stats["tags"][TAG]["revalidation"], "offline");
}

/// Offline, no file can change: the kernel reads files without opening
/// them in the daemon (FUSE's no-open mode), keeps their pages, and each
/// file read stays one version even when its cached copy goes.
#[test]
fn an_offline_mount_is_read_without_opens_and_each_file_one_version() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let textures: Vec<(String, Vec<u8>)> = served
        .release
        .textures()
        .take(6)
        .map(|(path, bytes)| (path.to_string(), bytes.to_vec()))
        .collect();
    {
        let online = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        for (path, bytes) in &textures {
            assert_eq!(&read(&online.tag_path(path)).unwrap(), bytes, "{path}");
        }
    }
    let address = common::metrics_address();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--offline")
        .arg("--metrics")
        .arg(&address)
        .start();
    for _ in 0..3 {
        for (path, bytes) in &textures {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
            // The statistics change between reads, and each read of them
            // is one whole document.
            let stats: serde_json::Value =
                serde_json::from_slice(&fs::read(mount.path.join(".matvisfs/stats.json")).unwrap())
                    .unwrap();
            assert_eq!(stats["tags"][TAG]["revalidation"], "offline");
        }
    }
    assert_eq!(
        common::operations(&address, "open"),
        1,
        "only the first open reached the daemon, refused"
    );
    assert_eq!(common::operations(&address, "release"), 0);
    assert!(common::operations(&address, "read") > 0);

    // The cached copies go, and the kernel drops the pages it had: the
    // files read are still served whole, their one version.
    let clear = matvisfs(&["cache", "clear"], cache.path());
    assert!(clear.status.success());
    for (path, bytes) in &textures {
        let file = fs::File::open(mount.tag_path(path)).unwrap();
        // SAFETY: a valid descriptor; advice only.
        let dropped = unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(dropped, 0);
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert_eq!(mount.stats()["requests"], serde_json::json!({}));
}

/// In no-open mode the kernel cannot be told that an `O_DIRECT` open reads
/// past the page cache: it sends such reads as they come, sized up to a
/// multiple of its largest request, past the last page of the file.
#[test]
fn an_offline_mount_serves_o_direct_reads_and_plain_ones_after_them() {
    use std::os::unix::fs::FileExt;
    let served = Served::small();
    let (cache, files) = served.warmed_cache(3);
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--offline")
        .start();
    for (path, bytes) in &files {
        let file = open_direct(&mount.tag_path(path));
        for chunk in [1 << 20, 65536, 3001] {
            let got = read_at_odd_address(&file, chunk);
            assert_eq!(&&got, bytes, "{path}, {chunk} bytes a read");
        }
        // Reads through the page cache of the same inode, whole and in part.
        assert_eq!(&&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        let mut piece = vec![0u8; bytes.len() - 8];
        fs::File::open(mount.tag_path(path))
            .unwrap()
            .read_exact_at(&mut piece, 7)
            .unwrap();
        assert_eq!(piece, bytes[7..bytes.len() - 1], "{path}");
    }
    assert_eq!(mount.stats()["requests"], serde_json::json!({}));
}

#[test]
fn prefetch_takes_a_selection_and_refuses_unknown_names() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let output = prefetch(
        &served,
        cache.path(),
        &["--source", "ambientcg", "--tier", "1k", "--jobs", "2"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let selected = served
        .release
        .textures()
        .filter(|(p, _)| p.starts_with("ambientcg/1k/"))
        .count();
    assert!(
        stdout(&output).contains(&format!("prefetched {selected} files")),
        "{}",
        stdout(&output)
    );
    assert_eq!(served.texture_gets(), selected);
    let bad = prefetch(&served, cache.path(), &["--tier", "16k"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no tier \"16k\""));
    let bad = prefetch(&served, cache.path(), &["--source", "nope"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ambientcg, gpuopen"));
}

/// From now on the first `completed` downloads are answered, and every
/// later one stops halfway through its body and hangs there.
fn stall_downloads_after(served: &Served, completed: usize) {
    // A request a killed process had sent must not take one of the answers.
    served.server.settle();
    served.server.clear_faults();
    served.server.clear_requests();
    served
        .server
        .inject(FaultRule::new("cdn/", Fault::Delay(Duration::ZERO)).times(completed as u32));
    served
        .server
        .inject(FaultRule::new("cdn/", Fault::StallBody));
}

/// Digests (hex) that a file record in the cache's database names as the
/// cached bytes of its path.
fn recorded_digests(cache: &Path) -> std::collections::HashSet<String> {
    // Never made here: the process that makes it marks it new.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE;
    let Ok(db) = rusqlite::Connection::open_with_flags(cache.join("cache.db"), flags) else {
        return Default::default();
    };
    let Ok(mut query) = db.prepare("SELECT sha256 FROM files WHERE sha256 IS NOT NULL") else {
        return Default::default();
    };
    query
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .map(|digest| digest.iter().map(|b| format!("{b:02x}")).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `stored` objects are in the cache, each with the record of
/// its path (written beside the object, a moment apart: a kill between the
/// two leaves an object no path names, downloaded again), and a download
/// beyond the answered ones has started: the moment to kill, mid-work.
fn wait_until_mid_work(served: &Served, cache: &Path, stored: usize, answered: usize) {
    let downloads_started = || {
        served
            .server
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("cdn/"))
            .count()
    };
    common::wait_for(
        &format!("{stored} objects stored and recorded, and a download cut off mid-body"),
        Duration::from_secs(30),
        || {
            let objects = common::stored_objects(cache);
            objects.len() == stored
                && downloads_started() > answered
                && recorded_digests(cache).is_superset(&objects.into_iter().collect())
        },
    );
}

fn assert_verify_clean(cache: &Path) {
    let verify = matvisfs(&["cache", "verify"], cache);
    assert!(
        verify.status.success() && stdout(&verify).contains(": 0 corrupt"),
        "{}{}",
        stdout(&verify),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn a_killed_prefetch_or_mount_leaves_a_clean_cache_that_serves_correct_bytes() {
    let served = Served::small();
    let textures = served.release.textures().count();
    assert_eq!(
        object_sizes(&served.release).len(),
        textures,
        "every texture is its own object"
    );
    let cache = tempfile::tempdir().unwrap();
    // Killed with 4 files downloaded and others half-way through.
    stall_downloads_after(&served, 4);
    let mut child = Command::new(BIN)
        .args(["prefetch", "--base-url", &served.base_url(), "--jobs", "4"])
        .arg("--cache-dir")
        .arg(cache.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_mid_work(&served, cache.path(), 4, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_verify_clean(cache.path());

    // A mount killed the same way, 4 more files in.
    stall_downloads_after(&served, 4);
    {
        let mut mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .start();
        std::thread::scope(|scope| {
            for (path, _) in served.release.textures() {
                let file = mount.tag_path(path);
                scope.spawn(move || {
                    let _ = read(&file);
                });
            }
            wait_until_mid_work(&served, cache.path(), 8, 4);
            mount.signal(libc::SIGKILL);
        });
        mount.wait_exit(Duration::from_secs(10));
    }
    assert_verify_clean(cache.path());

    // What was stored before each kill is kept: a prefetch resumes with
    // the rest, and a mount then serves every file without a download.
    served.server.settle();
    served.server.clear_faults();
    served.server.clear_requests();
    let resumed = prefetch(&served, cache.path(), &[]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(served.texture_gets(), textures - 8, "downloaded again");
    served.server.clear_requests();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert_eq!(served.texture_gets(), 0);
}

/// `cache status` shows the limit the cache is kept under: that of the
/// mount using it, not a default; and looking into the cache never evicts
/// (an index rebuilt from the files found is within no command's limit).
#[test]
fn cache_status_shows_the_mounts_limit_and_evicts_nothing() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let paths: Vec<&str> = served
        .release
        .textures()
        .map(|(p, _)| p.as_str())
        .take(6)
        .collect();
    warm(&served.base_url(), cache.path(), &paths);
    let stored = stored_objects(cache.path());
    assert_eq!(stored.len(), 6);
    let status_text = |extra: &[&str]| {
        let mut args = vec!["cache", "status"];
        args.extend_from_slice(extra);
        let status = matvisfs(&args, cache.path());
        assert!(status.status.success(), "{status:?}");
        stdout(&status)
    };
    {
        let mount = Mount::builder(&served.base_url())
            .cache(cache.path())
            .arg("--cache-max-size")
            .arg("123MB")
            .start();
        read(&mount.tag_path(paths[0])).unwrap();
        let text = status_text(&[]);
        assert!(
            text.contains("limit 123.0 MB") && text.contains("kept by the process using it"),
            "{text}"
        );
    }
    let text = status_text(&[]);
    assert!(
        text.contains("limit 5.0 GB") && text.contains("no process uses the cache now"),
        "{text}"
    );

    // The index lost: the files are adopted again, none evicted, whatever
    // the limit the command is given.
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(cache.path().join(format!("cache.db{suffix}")));
    }
    status_text(&["--cache-max-size", "1kB"]);
    assert_eq!(stored_objects(cache.path()), stored);
    let verify = matvisfs(
        &["cache", "verify", "--cache-max-size", "1kB"],
        cache.path(),
    );
    assert!(
        stdout(&verify).contains(": 0 corrupt"),
        "{}",
        stdout(&verify)
    );
    assert_eq!(stored_objects(cache.path()), stored);
}

/// A background mount, unmounted, takes its lock file in the cache's
/// `tmp/` with it: its process ends while its threads still hold the
/// store, whose drop would remove it (it was left behind, free).
#[test]
fn an_unmounted_background_mount_leaves_no_lock_file() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let (mountpoint, cache) = (dir.path().join("mnt"), dir.path().join("cache"));
    fs::create_dir(&mountpoint).unwrap();
    let _unmounts = common::Unmounts::new(&mountpoint);
    let mounted = common::background_mount(&mountpoint, &served.base_url(), &cache)
        .status()
        .unwrap();
    assert!(mounted.success());
    let (path, bytes) = served.release.textures().next().unwrap();
    assert_eq!(&read(&mountpoint.join(TAG).join(path)).unwrap(), bytes);
    let locks = || -> Vec<String> {
        fs::read_dir(cache.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("writer-"))
            .collect()
    };
    assert_eq!(locks().len(), 1, "the mount's own");
    assert!(common::unmount(&mountpoint).success());
    common::wait_for(
        "the mount's process to end",
        Duration::from_secs(30),
        || common::serving_processes(&mountpoint).is_empty(),
    );
    assert!(locks().is_empty(), "{:?}", locks());
}

#[test]
fn cache_commands_report_verify_and_clear_while_mounted() {
    let (served, twin) = serve_with_twin();
    let mut only_in_twin = twin.clone();
    // Not the baked tier: its catalog hash would vouch for the original.
    let extra = "ambientcg/512/Rock064/color.png";
    only_in_twin.files.insert(
        extra.into(),
        matvisfs_sample::images::png("twin only", "color", 16),
    );
    only_in_twin.write_to(served.dir.path()).unwrap();
    let mount = Mount::builder(&served.base_url())
        .arg("--tag")
        .arg(TAG)
        .arg("--tag")
        .arg(OTHER)
        .start();
    for (path, _) in served.release.textures() {
        read(&mount.tag_path(path)).unwrap();
        read(&mount.path.join(OTHER).join(path)).unwrap_or_default();
    }
    let status = matvisfs(&["cache", "status"], &mount.cache);
    let text = stdout(&status);
    assert!(status.status.success());
    for expected in [
        format!("tag {TAG}"),
        format!("tag {OTHER}"),
        "ambientcg/1k".into(),
        "deduplication saves".into(),
        "limit 5.0 GB".into(),
    ] {
        assert!(text.contains(&expected), "{expected:?} missing in:\n{text}");
    }
    let verify = matvisfs(&["cache", "verify"], &mount.cache);
    assert!(
        stdout(&verify).contains(": 0 corrupt"),
        "{}",
        stdout(&verify)
    );

    // Clearing the twin removes only what it alone uses.
    let clear = matvisfs(&["cache", "clear", "--tag", OTHER], &mount.cache);
    assert!(
        stdout(&clear).contains("removed 1 file"),
        "{}",
        stdout(&clear)
    );
    served.server.clear_requests();
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    }
    assert_eq!(served.texture_gets(), 0, "the shared content stayed");
    // Everything: the mount downloads again and still serves the right bytes.
    // Downloads still being made durable land after a clear: wait for them.
    wait_until_settled(&mount);
    let clear = matvisfs(&["cache", "clear"], &mount.cache);
    assert!(clear.status.success());
    assert_eq!(stored_bytes(&mount.cache), 0);
    let (path, bytes) = served.release.textures().last().unwrap();
    let again = Mount::builder(&served.base_url())
        .cache(&mount.cache)
        .start();
    assert_eq!(&read(&again.tag_path(path)).unwrap(), bytes);
}

#[test]
fn an_offline_or_unreachable_mount_of_another_server_is_not_served_the_first_ones_tag() {
    let first = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let path = "ambientcg/1k/Rock064/color.png";
    {
        let mount = Mount::builder(&first.base_url())
            .cache(cache.path())
            .start();
        assert_eq!(
            read(&mount.tag_path(path)).unwrap(),
            first.release.files[path]
        );
    }
    // Another server with a tag of the same name: not cached for it.
    let mut other = Served::small();
    for offline in [true, false] {
        if !offline {
            other.server.stop();
        }
        let mut builder = Mount::builder(&other.base_url()).cache(cache.path());
        if offline {
            builder = builder.arg("--offline");
        }
        let refused = builder.try_start().err();
        let refused =
            refused.unwrap_or_else(|| panic!("offline {offline}: mounted the other server's tag"));
        assert!(
            refused.contains(&format!("cannot load tag {TAG}")),
            "{refused}"
        );
    }
    assert_eq!(other.texture_gets(), 0);
    // The first server's tag is still there for it.
    let mount = Mount::builder(&first.base_url())
        .cache(cache.path())
        .arg("--offline")
        .start();
    assert_eq!(
        read(&mount.tag_path(path)).unwrap(),
        first.release.files[path]
    );
    // Clearing the tag for the other server finds nothing of it; for the
    // first server, its content.
    let other_url = other.base_url();
    let clear = matvisfs(
        &["cache", "clear", "--tag", TAG, "--base-url", &other_url],
        cache.path(),
    );
    assert!(!clear.status.success(), "{}", stdout(&clear));
    let first_url = first.base_url();
    let clear = matvisfs(
        &["cache", "clear", "--tag", TAG, "--base-url", &first_url],
        cache.path(),
    );
    assert!(
        stdout(&clear).contains("removed 1 file"),
        "{}",
        stdout(&clear)
    );
    let status = matvisfs(&["cache", "status"], cache.path());
    // The test server's base URL is already in its normal form.
    let base = first.base_url();
    assert!(
        stdout(&status).contains(&format!("origin {base}:")),
        "{}",
        stdout(&status)
    );
}

#[test]
fn the_statistics_file_counts_the_session() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    drop(
        Mount::builder(&served.base_url())
            .cache(cache.path())
            .start(),
    );
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .start();
    let path = "ambientcg/512/Wood051/normal.png";
    let size = read(&mount.tag_path(path)).unwrap().len() as u64;
    read(&mount.tag_path(path)).unwrap();
    let stats = stats(&mount);
    assert_eq!(stats["requests"]["manifest"]["304"], 1, "{stats:#}");
    assert_eq!(stats["requests"]["texture"]["200"], 1);
    assert_eq!(stats["requests"]["size"]["200"], 1);
    assert_eq!(stats["cache"]["misses"], 1);
    assert!(stats["bytes"]["downloaded"].as_u64().unwrap() >= size);
    assert!(stats["bytes"]["served"].as_u64().unwrap() >= size);
    assert_eq!(stats["tags"][TAG]["revalidation"], "unchanged");
    assert!(
        stats["tags"][TAG]["manifest_etag"]
            .as_str()
            .unwrap()
            .starts_with('"')
    );
    // Hidden from a plain listing by its dot, there for whoever asks.
    let listed = Command::new("ls").arg(&mount.path).output().unwrap();
    assert_eq!(stdout(&listed).trim(), format!("latest\n{TAG}"));
    assert!(
        fs::metadata(mount.path.join(".matvisfs/stats.json"))
            .unwrap()
            .len()
            > 0
    );
}

/// With the cache's disk full (`fill_first`: before the mount starts,
/// else once it serves the tag's root), the tree, sizes and bytes are all
/// served, uncached and counted; once there is room, files are kept again.
fn serves_the_tree_and_bytes_uncached_on_a_full_disk(fill_first: bool) {
    let served = Served::small();
    let disk = Tmpfs::new("2m");
    let cache = disk.path().join("cache");
    if fill_first {
        disk.fill();
    }
    let mount = Mount::builder(&served.base_url()).cache(&cache).start();
    if !fill_first {
        fs::read_dir(mount.path.join(TAG)).unwrap().for_each(drop);
        disk.fill();
    }
    let release = &served.release;
    let expected: Vec<String> = release.expected_tree().into_iter().collect();
    let (_, tree) = split_generated(walk(&mount.path.join(TAG)));
    assert_eq!(tree, expected);
    for (path, bytes) in release.textures() {
        let size = fs::metadata(mount.tag_path(path)).unwrap().len();
        assert_eq!(size, bytes.len() as u64, "{path}");
    }
    // Every file but one texture, kept for when there is room again (the
    // kernel may keep the pages of those read).
    let (last, last_bytes) = release.textures().last().unwrap();
    for (path, bytes) in release.files.iter().filter(|(p, _)| expected.contains(p)) {
        if path != last {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
    }
    let uncached = release.textures().count() - 1;
    // A file's release reaches the mount a moment after its `close`.
    common::wait_for("the last release", Duration::from_secs(30), || {
        stats(&mount)["cache"]["uncached_bytes"] == 0
    });
    let counted = stats(&mount);
    assert_eq!(counted["cache"]["uncached_reads"], uncached, "{counted:#}");
    assert_eq!(counted["cache"]["uncached_bytes"], 0, "none is open");
    assert_eq!(counted["cache"]["files"], 0);
    assert!(common::stored_objects(&cache).is_empty());

    // Room again: a file read now is kept.
    disk.empty();
    let (path, bytes) = (last, last_bytes);
    assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
    wait_until_settled(&mount);
    assert_eq!(
        common::stored_objects(&cache),
        [matvisfs_sample::sha256_hex(bytes)]
    );
    let counted = stats(&mount);
    assert_eq!(counted["cache"]["uncached_reads"], uncached, "{counted:#}");
    assert_eq!(counted["cache"]["files"], 1);
}

#[test]
fn with_its_disk_full_the_cache_serves_the_tree_and_bytes_uncached_then_keeps_again() {
    serves_the_tree_and_bytes_uncached_on_a_full_disk(true);
}

#[test]
fn when_its_disk_fills_while_mounted_the_tree_and_bytes_are_still_served() {
    serves_the_tree_and_bytes_uncached_on_a_full_disk(false);
}

/// A log that cannot be written (its disk full) costs only the log: the
/// mount keeps serving every file, whole, to readers at once.
#[test]
fn a_mount_whose_log_cannot_be_written_keeps_serving() {
    let served = Served::small();
    let disk = Tmpfs::new("1m");
    let mount = Mount::builder(&served.base_url())
        .log_file(&disk.path().join("stderr.log"))
        .arg("-vv")
        .start();
    disk.fill();
    let files: Vec<(&String, &Vec<u8>)> = served.release.textures().collect();
    std::thread::scope(|scope| {
        for chunk in files.chunks(files.len().div_ceil(8)) {
            let mount = &mount;
            scope.spawn(move || {
                for (path, bytes) in chunk {
                    assert_eq!(&read(&mount.tag_path(path)).unwrap(), *bytes, "{path}");
                }
            });
        }
    });
    assert_eq!(stats(&mount)["cache"]["misses"], files.len());
    assert!(common::is_mounted(&mount.path));
}

#[test]
fn a_prefetch_onto_a_full_disk_fails_and_keeps_nothing_until_there_is_room() {
    let served = Served::small();
    let disk = Tmpfs::new("2m");
    let cache = disk.path().join("cache");
    disk.fill();
    let output = prefetch(&served, &cache, &["--tag", TAG, "--tier", "1k"]);
    // Downloaded and verified, but not kept: not a prefetch.
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(common::stored_objects(&cache).is_empty());
    disk.empty();
    let output = prefetch(&served, &cache, &["--tag", TAG, "--tier", "1k"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!common::stored_objects(&cache).is_empty());
}

/// A selection larger than the cache's limit: the files evicted again are
/// failures of the prefetch, said to be the limit's, not the disk's.
#[test]
fn a_prefetch_larger_than_the_limit_names_the_limit_not_the_disk() {
    let served = Served::small();
    let cache = tempfile::tempdir().unwrap();
    let output = prefetch(
        &served,
        cache.path(),
        &["--tag", TAG, "--tier", "1k", "--cache-max-size", "5kB"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("evicted again"), "{stderr}");
    assert!(stderr.contains("--cache-max-size"), "{stderr}");
    assert!(!stderr.contains("disk is full"), "{stderr}");
    // What the limit holds is kept.
    assert!(!common::stored_objects(cache.path()).is_empty());
}

#[test]
fn a_prefetch_started_with_a_low_soft_limit_on_open_files_raises_it_to_the_hard_one() {
    let served = Served::new(Release::generate(&matvisfs_sample::ReleaseSpec::large(
        TAG, 20,
    )));
    let cache = tempfile::tempdir().unwrap();
    let base = served.base_url();
    let mut command = Command::new(BIN);
    command
        .args([
            "prefetch",
            "--base-url",
            &base,
            "--jobs",
            "64",
            "--cache-dir",
        ])
        .arg(cache.path());
    common::limit_open_files(&mut command, 256, 8192);
    let output = command.output().unwrap();
    // 64 downloads at once, each thread with its connection and event
    // loop, and the objects' prefix directories: more than 256.
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let textures = served.release.textures().count();
    let report = stdout(&output);
    assert!(
        report.contains(&format!("prefetched {textures} files")) && report.contains(" 0 failed"),
        "{report}"
    );
}
