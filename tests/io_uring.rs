//! `--io-uring`: FUSE over io_uring where the kernel offers it (the fuse
//! module's `enable_uring`, set here for the test and put back as found),
//! and `/dev/fuse` as before where it does not.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use common::uring::UringSetting;
use common::{Mount, Served, TAG, open_direct, read, walk};
use matvisfs_sample::{Release, ReleaseSpec};

/// Kernel requests the mount answered over its rings.
fn ring_requests(mount: &Mount) -> u64 {
    mount.stats()["fuse"]["ring_requests"]
        .as_u64()
        .expect("stats.json counts ring requests")
}

#[test]
fn over_io_uring_the_tree_sizes_and_bytes_are_the_servers() {
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!(
            "skipped: this kernel has no FUSE over io_uring (no fuse enable_uring parameter), \
             or it cannot be set here"
        );
        return;
    };
    let served = Served::small();
    let mount = Mount::builder(&served.base_url())
        .arg("--raw")
        .arg("--io-uring")
        .start();
    let expected: Vec<String> = served.release.expected_tree().into_iter().collect();
    assert_eq!(walk(&mount.path.join(TAG)), expected);
    let listed = ring_requests(&mount);
    assert!(listed > 0, "the walk went over the ring");

    let textures: Vec<_> = served.release.textures().collect();
    for (path, bytes) in &textures {
        let meta = fs::metadata(mount.tag_path(path)).unwrap();
        assert_eq!(meta.len(), bytes.len() as u64, "{path}");
    }
    // Four readers at once: first reads download, off the ring threads.
    std::thread::scope(|scope| {
        for part in textures.chunks(textures.len().div_ceil(4)) {
            let mount = &mount;
            scope.spawn(move || {
                for (path, bytes) in part {
                    assert_eq!(&read(&mount.tag_path(path)).unwrap(), *bytes, "{path}");
                }
            });
        }
    });
    // Read again, from the cache (and the page cache).
    for (path, bytes) in &textures {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), *bytes, "{path}");
    }
    let answered = ring_requests(&mount) - listed;
    assert!(
        answered >= 2 * textures.len() as u64,
        "every open of every read went over the ring: {answered} requests for {} opens",
        2 * textures.len()
    );
    let missing = fs::metadata(mount.tag_path("no-such-source")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(served.texture_gets(), textures.len(), "one download a file");
    assert_ring_threads_pinned(mount.pid().expect("a foreground daemon"));
}

/// Each queue's thread runs only on the CPU whose requests the kernel
/// puts in that queue (where the daemon may run there at all).
fn assert_ring_threads_pinned(pid: u32) {
    let allowed = |status: &str| -> Vec<usize> {
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list in /proc status")
            .trim()
            .to_owned();
        list.split(',')
            .flat_map(|part| match part.split_once('-') {
                Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
                None => vec![part.parse().unwrap()],
            })
            .collect()
    };
    let process = allowed(&fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    let mut pinned = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm")).unwrap_or_default();
        let Some(queue) = name.trim().strip_prefix("fuse-ring-") else {
            continue;
        };
        let queue: usize = queue.parse().unwrap();
        if !process.contains(&queue) {
            continue;
        }
        let cpus = allowed(&fs::read_to_string(task.join("status")).unwrap());
        assert_eq!(
            cpus,
            vec![queue],
            "the thread of ring {queue} runs on its CPU only"
        );
        pinned += 1;
    }
    assert!(pinned > 0, "a ring thread on a CPU the daemon may use");
    // The threads they hand requests to (started by a pinned ring thread)
    // run wherever the daemon may: downloads are not all put on one CPU.
    let mut workers = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !(name.starts_with("content-") || name.starts_with("metadata-")) {
            continue;
        }
        let cpus = allowed(&fs::read_to_string(task.join("status")).unwrap());
        assert_eq!(
            cpus,
            process,
            "{} runs on every CPU of the daemon",
            name.trim()
        );
        workers += 1;
    }
    assert!(workers > 0, "the downloads ran on worker threads");
}

#[test]
fn an_offline_mount_over_io_uring_serves_the_cached_bytes_without_opens() {
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!("skipped: this kernel has no FUSE over io_uring, or it cannot be set here");
        return;
    };
    let served = Served::small();
    let (cache, textures) = served.warmed_cache(usize::MAX);
    let downloads = served.texture_gets();
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--offline")
        .arg("--io-uring")
        .start();
    // Twice: the first open is refused (FUSE's no-open mode), after which
    // reads name the inode.
    for _ in 0..2 {
        for (path, bytes) in &textures {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), *bytes, "{path}");
        }
    }
    assert!(ring_requests(&mount) > textures.len() as u64);
    assert_eq!(
        served.texture_gets(),
        downloads,
        "nothing downloaded offline"
    );
}

#[test]
fn over_io_uring_cached_files_are_passed_through_to_the_kernel() {
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!("skipped: no FUSE over io_uring here");
        return;
    };
    let served = Served::small();
    let (cache, files) = served.warmed_cache(6);
    // A new mount: the kernel holds no page of these files, so every byte
    // read comes from matvisfs or from the backing file.
    let mount = Mount::builder(&served.base_url())
        .cache(cache.path())
        .arg("--io-uring")
        .start();
    let before = ring_requests(&mount);
    for _ in 0..3 {
        for (path, bytes) in &files {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), *bytes, "{path}");
        }
    }
    let stats = mount.stats();
    assert!(
        ring_requests(&mount) - before >= 2 * 3 * files.len() as u64,
        "the opens and releases went over the ring: {stats}"
    );
    assert_eq!(stats["cache"]["hits"], 3 * files.len(), "{stats}");
    assert_eq!(
        stats["bytes"]["served"], 0,
        "cached reads reached matvisfs: {stats}"
    );
}

/// Over the rings too, opens that wait for a release are kept aside,
/// holding no ring thread, and answered once the old version is closed.
#[test]
fn over_io_uring_many_opens_wait_for_a_release_at_once_holding_no_thread() {
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!("skipped: no FUSE over io_uring here");
        return;
    };
    common::reopened_while_held(&["--io-uring"]);
}

/// Over the rings too, an open that waits through a second change reads
/// the newest version at its first read.
#[test]
fn over_io_uring_an_open_waiting_through_a_second_change_reads_the_newest_version() {
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!("skipped: no FUSE over io_uring here");
        return;
    };
    common::waited_through_a_second_change(&["--io-uring"]);
}

/// Over the rings too, a waiting open is answered once its wait ends,
/// though hung downloads hold every download worker.
#[test]
fn over_io_uring_an_open_that_waited_for_a_release_waits_for_no_hung_download() {
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!("skipped: no FUSE over io_uring here");
        return;
    };
    common::parked_opens_wait_for_no_hung_download(&["--io-uring"]);
}

#[test]
fn where_the_kernel_offers_no_io_uring_requests_go_through_dev_fuse() {
    // Without the parameter the kernel has no such transport at all: the
    // same case.
    let _setting = UringSetting::set(false);
    let served = Served::small();
    let mount = Mount::builder(&served.base_url())
        .arg("--raw")
        .arg("--io-uring")
        .start();
    let expected: Vec<String> = served.release.expected_tree().into_iter().collect();
    assert_eq!(walk(&mount.path.join(TAG)), expected);
    for (path, bytes) in served.release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    assert_eq!(ring_requests(&mount), 0);
}

#[test]
fn a_file_larger_than_a_ring_buffer_is_served_whole_over_the_ring() {
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!("skipped: this kernel has no FUSE over io_uring, or it cannot be set here");
        return;
    };
    let mut release = Release::generate(&ReleaseSpec::small(TAG));
    let path = "ambientcg/1k/Metal032/ao.png";
    // Over 1 MiB, a ring entry's payload, and no multiple of a page.
    let mut big: Vec<u8> = (0..3 * 1024 * 1024 + 4321u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    big[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    release.replace_texture(path, big.clone());
    let served = Served::new(release);
    let mount = Mount::builder(&served.base_url()).arg("--io-uring").start();
    let file = mount.tag_path(path);
    assert_eq!(fs::metadata(&file).unwrap().len(), big.len() as u64);
    assert_eq!(read(&file).unwrap(), big, "read whole");
    // One read call for all of it, through the page cache and past it.
    for flags in [0, libc::O_DIRECT] {
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&file)
            .unwrap();
        let mut got = vec![0u8; big.len() + 100];
        let mut filled = 0;
        while filled < got.len() {
            match opened.read_at(&mut got[filled..], filled as u64).unwrap() {
                0 => break,
                n => filled += n,
            }
        }
        got.truncate(filled);
        assert!(
            got == big,
            "flags {flags:#o}: {filled} bytes, not the server's"
        );
        // A piece across the first payload's end.
        let mut piece = vec![0u8; 8192];
        let at = 1024 * 1024 - 4000;
        opened.read_exact_at(&mut piece, at as u64).unwrap();
        assert!(
            piece == big[at..at + 8192],
            "flags {flags:#o}: the piece at {at}"
        );
    }
    assert!(ring_requests(&mount) > 0);
    assert_eq!(served.texture_gets(), 1, "one download");
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect()
}

/// Keeps the calling thread on `cpu`, whose ring queue the kernel then
/// puts its requests in.
fn pin_here(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// The ring on, the calling thread pinned to one CPU to watch, the CPU
/// for readers, and a mount with one thread (9 entries a queue to begin
/// with, four download workers) and `timeout` seconds for the server;
/// `None` where this machine cannot have them (said why).
fn watched_from_another_cpu(timeout: u64) -> Option<(UringSetting, usize, Served, Mount)> {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs, one for the readers and one to watch them");
        return None;
    }
    let Some(setting) = UringSetting::set(true) else {
        eprintln!("skipped: this kernel has no FUSE over io_uring, or it cannot be set here");
        return None;
    };
    pin_here(cpus[1]);
    let served = Served::small();
    let mount = Mount::builder(&served.base_url())
        .few_workers()
        .arg("--raw")
        .arg("--io-uring")
        .timeout(timeout)
        .start();
    Some((setting, cpus[0], served, mount))
}

#[test]
fn over_io_uring_requests_waiting_on_a_hung_server_never_stall_others_on_their_cpu() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // More hung reads on one CPU than its queue first had entries.
    let Some((_setting, readers_cpu, served, mount)) = watched_from_another_cpu(4) else {
        return;
    };
    let textures: Vec<_> = served.release.textures().collect();
    let hung_readers = 12;
    assert!(textures.len() > hung_readers + 2, "enough textures");
    let (cached, cached_bytes) = textures[0];
    read(&mount.tag_path(cached)).unwrap();
    served.hang_downloads();
    let finished = AtomicUsize::new(0);
    let readers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (path, _) in &textures[1..=hung_readers] {
            let (finished, mount, readers) = (&finished, &mount, &readers);
            scope.spawn(move || {
                pin_here(readers_cpu);
                readers.lock().unwrap().push(rustix::thread::gettid());
                let result = read(&mount.tag_path(path));
                finished.fetch_add(1, Ordering::SeqCst);
                assert!(result.is_err(), "{path} read despite a hung server");
            });
        }
        // Every reader has asked the mount: each waits in its `open` or
        // `read` (before the entries grew, one waited in the kernel for an
        // entry).
        let waiting = |tid: rustix::thread::Pid| {
            let call =
                fs::read_to_string(format!("/proc/self/task/{}/syscall", tid.as_raw_nonzero()))
                    .unwrap_or_default();
            let number = call
                .split(' ')
                .next()
                .and_then(|n| n.parse::<libc::c_long>().ok());
            number.is_some_and(|n| n == libc::SYS_read || n == libc::SYS_openat)
        };
        common::wait_for(
            "every reader waiting on the mount",
            std::time::Duration::from_secs(20),
            || {
                let readers = readers.lock().unwrap();
                readers.len() == hung_readers && readers.iter().all(|&tid| waiting(tid))
            },
        );
        let checked = scope.spawn(|| {
            pin_here(readers_cpu);
            let tree = walk(&mount.path.join(TAG));
            assert_eq!(tree.len(), served.release.expected_tree().len());
            for (path, bytes) in &textures[hung_readers + 1..] {
                assert_eq!(
                    fs::metadata(mount.tag_path(path)).unwrap().len(),
                    bytes.len() as u64
                );
            }
            assert_eq!(&read(&mount.tag_path(cached)).unwrap(), cached_bytes);
            finished.load(Ordering::SeqCst)
        });
        assert_eq!(
            checked.join().unwrap(),
            0,
            "listing, stats and a cached read on the CPU of the hung reads waited for them"
        );
    });
}

#[test]
fn over_io_uring_entries_give_back_the_pages_of_their_answers_once_idle() {
    use matvisfs_testkit::devserver::{Fault, FaultRule};
    let Some(_setting) = UringSetting::set(true) else {
        eprintln!("skipped: this kernel has no FUSE over io_uring, or it cannot be set here");
        return;
    };
    const MIB: usize = 1024 * 1024;
    let (served, paths) =
        common::served_with_pngs_of(Release::generate(&ReleaseSpec::small(TAG)), 24, MIB);
    let mount = Mount::builder(&served.base_url())
        .arg("--raw")
        .arg("--io-uring")
        .start();
    let pid = mount.pid().expect("a foreground daemon");
    common::assert_sizes(&mount, &paths, MIB);
    // The first reads wait on the server together, each in an entry of
    // its own (as many at least as the download pool's 16 threads take at
    // once), and each answer is 1 MiB (but for the few bytes of the
    // buffer's last page), read past the page cache.
    served.server.inject(FaultRule::new(
        "cdn/",
        Fault::Delay(std::time::Duration::from_secs(1)),
    ));
    let read_all = || {
        std::thread::scope(|scope| {
            for path in &paths {
                let mount = &mount;
                let served = &served;
                scope.spawn(move || {
                    let file = open_direct(&mount.tag_path(path));
                    let mut got = vec![0u8; MIB];
                    file.read_exact_at(&mut got, 0).unwrap();
                    assert!(
                        got == served.release.files[path.as_str()],
                        "{path}: not the server's bytes"
                    );
                });
            }
        })
    };
    read_all();
    let after_burst = common::anonymous_rss(pid);
    // 16 MiB of answers at least were written; half of it at least comes
    // back (the rest of what the burst took is the allocator's to keep).
    common::wait_for(
        "the answers' pages given back",
        std::time::Duration::from_secs(30),
        || common::anonymous_rss(pid) + 8 * MIB as u64 <= after_burst,
    );
    // Entries whose pages were given back still answer whole and right,
    // from the cache now.
    served.server.clear_faults();
    read_all();
    assert_eq!(served.texture_gets(), paths.len(), "one download a file");
}

#[test]
fn over_io_uring_a_queue_grows_to_1024_entries_at_most_and_every_hung_reader_ends() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Long enough a timeout that every lookup asks before the first one
    // waiting gives up.
    let Some((_setting, readers_cpu, served, mount)) = watched_from_another_cpu(20) else {
        return;
    };
    let entries = || mount.stats()["fuse"]["ring_entries"].as_u64().unwrap();
    // A queue for each possible CPU, 9 entries each to begin with.
    let possible = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let queues = 1 + possible
        .trim()
        .split(',')
        .filter_map(|range| range.rsplit('-').next()?.parse::<u64>().ok())
        .max()
        .unwrap();
    common::wait_for(
        "every queue's first entries registered",
        std::time::Duration::from_secs(20),
        || entries() == 9 * queues,
    );
    // Each reader looks up a name of its own in a tier whose catalog, which
    // says what the tier holds, the server does not answer for: each lookup
    // waits, holding its entry (reads would go to the kernel's background
    // queue, which holds them back beyond its own limit of 64: lookups it
    // does not). The tier itself is known from the manifest.
    let tier = mount.tag_path("ambientcg/1k");
    assert!(tier.is_dir());
    served
        .server
        .inject(matvisfs_testkit::devserver::FaultRule::new(
            "ambientcg.json",
            matvisfs_testkit::devserver::Fault::Hang,
        ));
    // More lookups on one CPU than its queue may have entries, a few at a
    // time: each batch finds entries free (the queue keeps 9 beside those
    // waiting), so each lookup takes one of its own until the queue holds
    // 1024. (A burst faster than the queue registers new entries leaves
    // the requests that found none queued in the kernel, which hands them
    // only to entries answering a request: docs/benchmarks.md, goal 5.)
    let full = 1024 + 9 * (queues - 1);
    let hung_readers: u64 = 1100;
    let batch = 8;
    let (asked, ended) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for first in (0..hung_readers).step_by(batch) {
            let last = (first + batch as u64).min(hung_readers);
            for i in first..last {
                let name = tier.join(format!("NoSuchMaterial{i:04}"));
                let (asked, ended) = (&asked, &ended);
                std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn_scoped(scope, move || {
                        pin_here(readers_cpu);
                        asked.fetch_add(1, Ordering::SeqCst);
                        // No such material, once the catalog says so; or EIO.
                        let looked_up = fs::metadata(&name).unwrap_err();
                        assert!(
                            [Some(libc::ENOENT), Some(libc::EIO)]
                                .contains(&looked_up.raw_os_error()),
                            "{}: {looked_up}",
                            name.display()
                        );
                        ended.fetch_add(1, Ordering::SeqCst);
                    })
                    .expect("a reader thread");
            }
            // Past the cap the entries are there at once: the batch's
            // threads must also have started.
            common::wait_for(
                "each waiting lookup in an entry of its own, up to 1024",
                std::time::Duration::from_secs(10),
                || {
                    asked.load(Ordering::SeqCst) as u64 == last
                        && entries() >= (9 * queues + last).min(full)
                },
            );
        }
        assert_eq!(
            ended.load(Ordering::SeqCst),
            0,
            "a lookup ended while the catalog hung"
        );
        assert_eq!(asked.load(Ordering::SeqCst) as u64, hung_readers);
        // The lookups past the cap wait in the kernel; no entry is added.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let grown = entries();
        assert!(
            (full..full + 16).contains(&grown),
            "{grown} entries, for {full} once the readers' queue is full"
        );
        // Let go: every reader ends, with the server's bytes or EIO.
        served.server.clear_faults();
        common::wait_for(
            "every hung reader to end",
            std::time::Duration::from_secs(120),
            || ended.load(Ordering::SeqCst) as u64 == hung_readers,
        );
    });
    // The catalog, asked for again, tells what the tier holds.
    let (path, bytes) = served
        .release
        .textures()
        .find(|(path, _)| path.starts_with("ambientcg/1k/"))
        .unwrap();
    assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes);
}
