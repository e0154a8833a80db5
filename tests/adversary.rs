//! The adversary through real mounts: while a seeded mutation model
//! republishes the tag at random moments (same-size and resized files,
//! materials and tiers added and removed, catalogs with and without their
//! hashes, derived files with their baked twin's size, empty uploads,
//! manifests changed or not), 16 threads list, stat, read whole and in
//! pieces, hold files open and reread them, across several mount sessions
//! over one cache, with `cache clear` while mounted, `matvisfs refresh` at
//! random moments from a thread of its own, short `--revalidate-every`
//! periods, small caps, `--no-passthrough` and `--io-uring` (where the
//! kernel offers it) mixed in, and some sessions mounting one commit alone
//! (`--commits-only`, FUSE's no-open mode) while the tag goes on changing.
//! The oracle (`matvisfs_testkit::adversary`) then checks every result
//! against the server's history, or for a commit against its snapshot.
//!
//! `MATVISFS_ADVERSARY_SECONDS` (default 60) and `MATVISFS_ADVERSARY_SEED`
//! (default a fixed number) set the run, `MATVISFS_ADVERSARY_LOGS` a
//! directory to keep each session's daemon log in; `scripts/adversary.sh`
//! runs it long. Every violation fails the test. The bugs it found have
//! their reproductions in `tests/found_by_adversary.rs`. The seed drives
//! every choice; only the timing varies.

mod common;
#[path = "adversary/load.rs"]
mod load;
#[path = "adversary/plan.rs"]
mod plan;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::uring::UringSetting;
use common::{BIN, Mount};
use load::{Load, Running, Universe};
use matvisfs_testkit::adversary::history::{Clock, History, at};
use matvisfs_testkit::adversary::model::Release;
use matvisfs_testkit::adversary::mutate::{self, Mutation};
use matvisfs_testkit::adversary::oracle::{
    Judge, Observed, Op, RefreshRun, Session, Violation, requests_of_commit,
};
use matvisfs_testkit::adversary::report::{Tally, timeline, worth_showing};
use matvisfs_testkit::adversary::server::{ServerOptions, VersionedServer};
use parking_lot::Mutex;
use plan::{Layout, Plan, plans};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DEFAULT_SECONDS: u64 = 60;
const DEFAULT_SEED: u64 = 20_260_420;
const THREADS: usize = 16;
/// No operation may take longer (the mount runs with `--timeout 2
/// --retries 1`).
const BOUND: Duration = Duration::from_secs(30);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// An independent stream of choices for one purpose.
fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

const PLANS: u64 = 1;
const MUTATIONS: u64 = 2;

fn load_stream(session: usize, thread: usize) -> u64 {
    1000 + session as u64 * 100 + thread as u64
}

/// `matvisfs refresh` of the mount at `mountpoint` at each of `offsets`
/// after `mounted` (sorted), until `deadline`, on a thread of its own.
fn refresher(
    mountpoint: &Path,
    clock: Clock,
    mounted: Duration,
    mut offsets: Vec<Duration>,
    deadline: Duration,
) -> JoinHandle<Vec<RefreshRun>> {
    let mountpoint = mountpoint.to_path_buf();
    offsets.sort();
    std::thread::Builder::new()
        .name("refresher".into())
        .spawn(move || {
            let mut runs = Vec::new();
            for offset in offsets {
                let when = mounted + offset;
                if when >= deadline {
                    break;
                }
                while clock.now() < when {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let t0 = clock.now();
                let exit = Command::new(BIN)
                    .arg("refresh")
                    .arg(&mountpoint)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .ok()
                    .and_then(|s| s.code());
                runs.push(RefreshRun {
                    t0,
                    t1: clock.now(),
                    exit,
                });
            }
            runs
        })
        .expect("the refresher")
}

fn cache_clear(cache: &Path) -> bool {
    Command::new(BIN)
        .args(["cache", "clear", "--cache-dir"])
        .arg(cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Joins `handle` unless it is still running at `until`.
fn join_by(handle: JoinHandle<()>, clock: Clock, until: Duration) -> Option<JoinHandle<()>> {
    while !handle.is_finished() && clock.now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if handle.is_finished() {
        let _ = handle.join();
        None
    } else {
        Some(handle)
    }
}

struct Run {
    seed: u64,
    server: Arc<VersionedServer>,
    /// The mutator replaces textures alone (only the commit moves) while set.
    textures_only: Arc<AtomicBool>,
    cache: tempfile::TempDir,
    universe: Arc<Universe>,
}

/// One session as run: what the oracle judges, the history it judges it
/// by where that is a commit's (else the server's), and the mount's stats.
struct Ran {
    session: Session,
    commit_history: Option<History>,
    stats: String,
}

impl Run {
    fn session(&self, index: usize, plan: &Plan) -> Ran {
        // Held until the mount is gone, even on a panic (it drops after
        // the mount); a kernel without the transport runs the session
        // without the flag, and says so.
        let uring_setting = plan.io_uring.then(|| UringSetting::set(true)).flatten();
        let mut plan = plan.clone();
        plan.io_uring = uring_setting.is_some();
        let plan = &plan;
        let clock = self.server.clock();
        self.server.set_options(plan.options());
        // For this session and until the next: the next one's first open
        // then finds its manifest and catalogs unchanged and its commit moved.
        self.textures_only
            .store(plan.textures_only, Ordering::SeqCst);
        if plan.clear_before {
            assert!(cache_clear(self.cache.path()), "cache clear failed");
        }
        let first_request = self.server.requests_len();
        let base_url = match plan.layout {
            Layout::Hub => self.server.hub_base_url(),
            _ => self.server.resolve_base_url(),
        };
        // Kept by the server for good: the commit's files never change.
        let commit = plan.commit_back.map(|back| self.server.keep_commit(back));
        let mounted = clock.now();
        let mut builder = Mount::builder(&base_url)
            .cache(self.cache.path())
            .timeout(2)
            .arg("--retries")
            .arg("1")
            .arg("--hf-limits")
            .arg("off");
        if !plan.passthrough {
            builder = builder.arg("--no-passthrough");
        }
        if plan.offline {
            builder = builder.arg("--offline");
        }
        if let Some((commit, _)) = &commit {
            builder = builder.arg("--commits-only").arg("--tag").arg(commit);
        }
        if plan.io_uring {
            builder = builder.arg("--io-uring");
        }
        if let Some(cap) = plan.cap {
            builder = builder.arg("--cache-max-size").arg(cap);
        }
        if let Some(every) = plan.revalidate_every {
            builder = builder.arg("--revalidate-every").arg(every);
        }
        if std::env::var_os("MATVISFS_ADVERSARY_LOGS").is_some() {
            // Every kernel request too, for the logs kept.
            builder = builder.env("MATVISFS_LOG", "matvisfs=debug,fuser=debug");
        }
        let mount = builder.start();
        let load = Arc::new(Load {
            server: self.server.clone(),
            clock,
            tag_dir: mount
                .path
                .join(commit.as_ref().map_or(common::TAG, |(c, _)| c.as_str())),
            universe: self.universe.clone(),
            deadline: clock.now() + plan.duration,
            walk_until: clock.now() + plan.walk_first,
        });
        let ops: Arc<Vec<Mutex<Vec<Op>>>> =
            Arc::new((0..THREADS).map(|_| Mutex::new(Vec::new())).collect());
        let current: Arc<Vec<Mutex<Option<Running>>>> =
            Arc::new((0..THREADS).map(|_| Mutex::new(None)).collect());
        let threads: Vec<JoinHandle<()>> = (0..THREADS)
            .map(|thread| {
                let (load, ops, current) = (load.clone(), ops.clone(), current.clone());
                let rng = stream(self.seed, load_stream(index, thread));
                std::thread::Builder::new()
                    .name(format!("load-{thread}"))
                    .spawn(move || load.run(thread, rng, &ops[thread], &current[thread]))
                    .expect("a load thread")
            })
            .collect();
        let refreshes = refresher(
            &mount.path,
            clock,
            mounted,
            plan.refreshes.clone(),
            load.deadline,
        );
        let mut clears = Vec::new();
        let mut offsets = plan.clears.clone();
        offsets.sort();
        for offset in offsets {
            let when = mounted + offset;
            while clock.now() < when {
                std::thread::sleep(Duration::from_millis(10));
            }
            let start = clock.now();
            assert!(cache_clear(self.cache.path()), "cache clear failed");
            clears.push((start, clock.now()));
        }
        let until = load.deadline + BOUND;
        let stuck: Vec<JoinHandle<()>> = threads
            .into_iter()
            .filter_map(|t| join_by(t, clock, until))
            .collect();
        // Each refresh is bounded by the command's own wait.
        let refreshes = refreshes.join().expect("the refresher");
        let mut records: Vec<Op> = Vec::new();
        for (thread, slot) in current.iter().enumerate() {
            if let Some(running) = slot.lock().clone() {
                records.push(Op {
                    thread,
                    kind: running.kind,
                    path: running.path,
                    t0: running.since,
                    t1: clock.now(),
                    observed: Observed::Unfinished,
                });
            }
        }
        let stats = fs::read(mount.path.join(".matvisfs/stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|s| {
                format!(
                    "cache hits {} misses {} dedupe {} opens fetched {} evictions {}, ring requests {}",
                    s["cache"]["hits"],
                    s["cache"]["misses"],
                    s["cache"]["dedupe_hits"],
                    s["cache"]["opens_fetched"],
                    s["cache"]["evictions"],
                    s["fuse"]["ring_requests"]
                )
            })
            .unwrap_or_else(|| "no stats.json".into());
        if let Ok(dir) = std::env::var("MATVISFS_ADVERSARY_LOGS") {
            let _ = fs::create_dir_all(&dir);
            let _ = fs::write(
                Path::new(&dir).join(format!("session-{index}.log")),
                mount.log(),
            );
        }
        // Unmounting ends what is still stuck (it fails with ENOTCONN).
        drop(mount);
        drop(uring_setting);
        for handle in stuck {
            let _ = join_by(handle, clock, clock.now() + Duration::from_secs(10));
        }
        for slot in ops.iter() {
            records.extend(slot.lock().drain(..));
        }
        records.sort_by_key(|op| (op.t0, op.thread));
        let mut requests = self.server.requests_from(first_request);
        if let Some((commit, _)) = &commit {
            requests = requests_of_commit(&requests, commit);
        }
        let session = Session {
            index,
            setup: plan.describe(),
            commits: plan.layout != Layout::PlainMirror,
            offline: plan.offline,
            commit: commit.as_ref().map(|(c, _)| c.clone()),
            mounted,
            requests,
            ops: records,
            clears,
            refreshes,
        };
        Ran {
            session,
            commit_history: commit.map(|(_, files)| History::of_commit(&files)),
            stats,
        }
    }
}

/// Publishes the mutation model's changes at random intervals until told
/// to stop.
fn mutator(
    server: Arc<VersionedServer>,
    mut release: Release,
    mut rng: ChaCha8Rng,
    stop: Arc<AtomicBool>,
    textures_only: Arc<AtomicBool>,
) -> JoinHandle<Vec<Vec<Mutation>>> {
    std::thread::Builder::new()
        .name("mutator".into())
        .spawn(move || {
            let mut kinds = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let pause = Duration::from_millis(rng.random_range(40..700));
                std::thread::sleep(pause);
                let changes = match textures_only.load(Ordering::SeqCst) {
                    true => mutate::texture_only(&mut release, &mut rng),
                    false => mutate::publication(&mut release, &mut rng),
                };
                server.publish(release.render(), changes.described);
                kinds.push(changes.kinds);
            }
            kinds
        })
        .expect("the mutator")
}

/// The violations of one session, each with the events that show it.
fn report(history: &History, session: &Session, violations: &[Violation]) -> String {
    let judge = Judge::new(history, session, BOUND);
    let mut out = String::new();
    for violation in worth_showing(violations) {
        out.push_str(&format!(
            "\n{:?} in session {} ({}): {}\n  {}\n",
            violation.kind,
            violation.session,
            session.setup,
            violation.op.describe(),
            violation.why
        ));
        for line in timeline(
            history,
            session,
            &judge.anchors_for(&violation.op),
            violation,
        ) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

#[test]
fn no_wrong_byte_under_mutations_and_load() {
    let seconds = env_u64("MATVISFS_ADVERSARY_SECONDS", DEFAULT_SECONDS);
    let seed = env_u64("MATVISFS_ADVERSARY_SEED", DEFAULT_SEED);
    let mut model_rng = stream(seed, MUTATIONS);
    let release = Release::initial(&mut model_rng);
    let universe = Arc::new(Universe::of(&release));
    let server = Arc::new(
        VersionedServer::start(release.render(), ServerOptions::default())
            .expect("the server starts"),
    );
    let textures_only = Arc::new(AtomicBool::new(false));
    let run = Run {
        seed,
        server: server.clone(),
        textures_only: textures_only.clone(),
        cache: tempfile::tempdir().unwrap(),
        universe,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mutations = mutator(
        server.clone(),
        release,
        model_rng,
        stop.clone(),
        textures_only,
    );
    let mut tally = Tally::default();
    let mut violations = 0;
    let mut reports = String::new();
    for (index, plan) in plans(&mut stream(seed, PLANS), seconds).iter().enumerate() {
        let Ran {
            session,
            commit_history,
            stats,
        } = run.session(index, plan);
        let server_history;
        let history = match &commit_history {
            Some(history) => history,
            None => {
                server_history = server.history();
                &*server_history
            }
        };
        let found = Judge::new(history, &session, BOUND).violations();
        let blobs_read = session
            .ops
            .iter()
            .filter(|op| matches!(op.observed, Observed::Blob(_)))
            .count();
        println!(
            "session {index} ({}): {} operations ({blobs_read} reads of a whole texture), {} requests, {} violations; {stats}",
            session.setup,
            session.ops.len(),
            session.requests.len(),
            found.len()
        );
        tally.add_session(&session, &found);
        if !found.is_empty() {
            let text = format!(
                "violations in session {index}:\n{}",
                report(history, &session, &found)
            );
            println!("{text}");
            reports.push_str(&text);
        }
        violations += found.len();
    }
    stop.store(true, Ordering::SeqCst);
    for kinds in mutations.join().expect("the mutator") {
        tally.add_publication(&kinds);
    }
    println!(
        "seed {seed}, {seconds} s, ended {}\n{}",
        at(server.clock().now()),
        tally.summary(&server.history())
    );
    println!("violations: {violations}");
    assert!(
        violations == 0,
        "{violations} violations of the first promise; seed {seed} (again: \
         scripts/adversary.sh {seconds} {seed})\n{reports}"
    );
}
