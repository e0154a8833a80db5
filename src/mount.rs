//! Mounting and unmounting: checks on the mountpoint, the FUSE session with
//! its worker threads, kernel cache invalidation, and clean shutdown on
//! SIGINT/SIGTERM.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use fuser::{Config, INodeNo, MountOption, Notifier, Session, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::cli::{MountArgs, RemoteArgs, RunArgs};
use crate::control;
use crate::daemon::{self, Readiness};
use crate::dataset::{Context, Dataset};
use crate::fs::{FsCore, Invalidation, Kernel};
use crate::fuse::{Backing, FuseAdapter};
use crate::logging;
use crate::metrics::Exporter;
use crate::notify;
use crate::own_mount::{self, OwnMount};
use crate::remote::Remote;
use crate::remote::http::HttpRemote;
use crate::remote::local::{self, LocalRemote};
use crate::store::CacheDir;

/// `matvisfs mount`.
pub fn run(args: MountArgs) -> Result<(), String> {
    if !args.run.foreground {
        daemon::close_inherited_descriptors();
    }
    let cache_dir = args.cache.dir()?;
    let mountpoint = prepare_mountpoint(&args.mountpoint, args.run.nonempty)?;
    let cache = CacheDir::open(&cache_dir)?;
    let (log_file, in_cache) = match &args.run.log_file {
        Some(path) => (path.clone(), false),
        None => (cache_dir.join("matvisfs.log"), true),
    };
    let mut readiness = start(&args.run, &log_file, in_cache, || {})?;
    let result = (|| {
        let remote = make_remote(&args.remote)?;
        let ctx = Context::new(remote, cache, args.cache.cache_max_size)
            .with_max_file_size(args.remote.max_file_size)
            .raw(args.run.raw)
            .revalidate_every(args.revalidate_every)
            .commits_only(args.commits_only);
        load_and_serve(
            ctx,
            args.pinned_tags()?,
            &mountpoint,
            &args.run,
            &mut readiness,
        )
    })();
    finish(result, &mut readiness)
}

/// Logs a failure and passes it on to a waiting parent. In the
/// foreground the log is the terminal, where the caller prints it.
pub(crate) fn finish(result: Result<(), String>, readiness: &mut Readiness) -> Result<(), String> {
    if let Err(msg) = &result {
        if !readiness.is_foreground() {
            tracing::error!("{msg}");
        }
        readiness.report(Err(msg));
    }
    result
}

/// Goes to the background unless `--foreground`, and starts logging.
/// `on_ready` runs in the foreground process once a background mount is up.
pub(crate) fn start(
    run: &RunArgs,
    log_file: &Path,
    log_in_cache: bool,
    on_ready: impl FnOnce(),
) -> Result<Readiness, String> {
    if run.foreground {
        crate::descriptors::prepare();
        logging::to_stderr(logging::MOUNT_LEVEL + run.verbose);
        return Ok(Readiness::foreground());
    }
    let readiness = daemon::detach(on_ready)?;
    // In the child, whose table the fork sized to what was open.
    crate::descriptors::prepare();
    logging::to_file(logging::MOUNT_LEVEL + run.verbose, log_file, log_in_cache)?;
    Ok(readiness)
}

/// The remote for the base URL: a local directory for `file://`, else HTTP.
pub(crate) fn make_remote(args: &RemoteArgs) -> Result<Arc<dyn Remote>, String> {
    let base = args.base_url()?;
    if args.offline {
        return Ok(Arc::new(crate::remote::Offline::new(&base)));
    }
    if local::is_file_url(&base) {
        return Ok(Arc::new(LocalRemote::new(&base)?));
    }
    Ok(Arc::new(HttpRemote::new(&args.http_settings()?)?))
}

/// Loads the pinned `tags` and serves them at `mountpoint` until unmounted.
pub(crate) fn load_and_serve(
    ctx: Context,
    tags: Vec<String>,
    mountpoint: &Mountpoint,
    run: &RunArgs,
    readiness: &mut Readiness,
) -> Result<(), String> {
    // Bound first: an address in use fails the mount before any work.
    let metrics = match &run.metrics {
        Some(address) => Some(Exporter::bind(address, &ctx.stats)?),
        None => None,
    };
    let dataset = Arc::new(Dataset::new(Arc::new(ctx), tags));
    let say = |line: &str| readiness.note(line);
    dataset.load_pinned(&say).map_err(|e| match e.unreachable {
        true => format!("{}\n{}", e.message, ways_out(&dataset)),
        false => e.message,
    })?;
    serve(FsCore::new(dataset), mountpoint, run, metrics, readiness)
}

/// What a user can do when the server cannot be reached at mount.
fn ways_out(dataset: &Dataset) -> String {
    let cached = dataset.context().origin.cached_tags();
    let cached = match cached.is_empty() {
        true => "nothing is cached for this server yet".to_string(),
        false => format!("cached for this server: {}", cached.join(", ")),
    };
    [
        "ways out:".to_string(),
        format!("  --offline            mount what is cached, with no network ({cached})"),
        format!(
            "  {} demo   a generated sample to look at, with no network",
            crate::cli::program()
        ),
        "  --base-url URL       another server or mirror of the dataset (or MAT_VIS_HF_BASE)"
            .to_string(),
        "  --timeout SECONDS    wait longer for the server".to_string(),
    ]
    .join("\n")
}

/// Mounts `core` at `mountpoint` and serves it until unmounted.
fn serve(
    core: Arc<FsCore<Backing>>,
    mountpoint: &Mountpoint,
    run: &RunArgs,
    metrics: Option<Exporter>,
    readiness: &mut Readiness,
) -> Result<(), String> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("matvisfs".into()),
        MountOption::Subtype("matvisfs".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    if rustix::process::geteuid().is_root() {
        // Mounted by the kernel directly, where fuser passes no subtype:
        // the type is `fuse.matvisfs` as with fusermount3, which is how
        // `matvisfs refresh` and mount(8) tell a matvisfs mount.
        config
            .mount_options
            .push(MountOption::CUSTOM("subtype=matvisfs".into()));
    }
    config.acl = if run.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(run.threads.max(1));
    // Caught from before the mount appears: a signal the moment it does
    // unmounts it, instead of killing the process and leaving it dead.
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // What the kernel will show as the mount point, which names the
    // control socket (taken before mounting: not through the mount).
    let canonical = fs::canonicalize(&mountpoint.path)
        .map_err(|e| format!("mountpoint {}: {e}", mountpoint.display()))?;
    // Listening before the mount appears, under a name of its own until
    // the mount is made: whoever sees the mount can ask it, and a command
    // that ends up not mounting takes no other mount's name.
    let mut control = match control::Listener::start(&canonical, core.dataset().clone()) {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(
                "no control channel ({e}): `matvisfs refresh` cannot reach this mount; SIGHUP still revalidates"
            );
            None
        }
    };
    let mut adapter = FuseAdapter::new(core.clone(), run.threads.max(1), !run.no_passthrough);
    // Where no revision can become another, the kernel may read files
    // without opens: each inode is bound to one version instead (a file
    // found changed gets a new inode, see `FsCore::read_inode`).
    if core.dataset().context().revisions_fixed() {
        adapter = adapter.without_opens();
    }
    let rings = match run.io_uring {
        true => {
            let (with_rings, rings) = adapter.with_io_uring(run.threads.max(1));
            adapter = with_rings;
            Some(rings)
        }
        false => None,
    };
    let device = adapter.session_device();
    let waits_in_place = adapter.waits_in_place();
    // Once the kernel has ended a session it mounted, fuser unmounts the
    // path by name, whatever is mounted there by then: a restart's mount,
    // made the moment this one went. This process's own mount, still there
    // answering nothing, is detached instead (see `OwnMount`), the session
    // counts as ended, and fuser's thread waits for the process's exit.
    // (A session dropped before it served, its handshake failed, ends as
    // fuser ends it.)
    let serving = Arc::new(AtomicBool::new(false));
    let ending: Arc<parking_lot::Mutex<Option<OwnMount>>> = Arc::default();
    let adapter = adapter.on_destroy({
        let (serving, ending) = (serving.clone(), ending.clone());
        let waits_in_place = waits_in_place.clone();
        move || {
            if !serving.load(Ordering::SeqCst) {
                return;
            }
            if let Some(own_mount) = ending.lock().take() {
                own_mount.detach_if_still_there();
            }
            waits_in_place.session_ended(Ok(()));
            loop {
                std::thread::park();
            }
        }
    });
    if readiness.waiter_gone() {
        return Err("the command waiting for the mount was interrupted: not mounting".into());
    }
    let (session, own_mount) = mount_session(adapter, mountpoint, &canonical, &config, run)?;
    *ending.lock() = Some(own_mount.clone());
    if let Some(control) = &mut control {
        if let Err(e) = control.publish() {
            tracing::warn!(
                "no control channel ({e}): `matvisfs refresh` cannot reach this mount; SIGHUP still revalidates"
            );
        }
    }
    let set_up = (|| {
        let fuse = device
            .set(session.as_fd())
            .map_err(|e| format!("cannot keep /dev/fuse for passthrough: {e}"))?;
        if let Some(rings) = rings {
            rings
                .start(session.as_fd())
                .map_err(|e| format!("--io-uring: cannot share /dev/fuse with the rings: {e}"))?;
        }
        core.set_kernel(KernelNotifier::start(&session));
        watch_signals(
            signals,
            own_mount.clone(),
            core.dataset().clone(),
            control.as_ref().map(|c| c.socket().clone()),
        )?;
        if let Some(exporter) = metrics {
            let core = core.clone();
            exporter.serve(Box::new(move || core.stats_json()))?;
        }
        Ok::<_, String>(fuse)
    })();
    let fuse = match set_up {
        Ok(fuse) => fuse,
        Err(e) => {
            // The mount, made already, goes with the session that will
            // not serve it.
            own_mount.unmount_if_still_there();
            return Err(e);
        }
    };
    crate::allocator::give_back_free_memory();
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    if !readiness.report(Ok(())) {
        tracing::info!("the command waiting for the mount was interrupted: unmounting");
        own_mount.unmount_if_still_there();
    }
    notify::ready();
    serving.store(true, Ordering::SeqCst);
    let ended = crate::fuse::run(session, fuse, waits_in_place);
    notify::stopping();
    // The kernel ended the connection while threads still waited on the
    // server: fuser's end has not run.
    if let Some(own_mount) = ending.lock().take() {
        own_mount.detach_if_still_there();
    }
    drop(control);
    // An end fuser reports as an error never reaches its `destroy` (which
    // counts the session ended without one): a thread of it panicked.
    ended.map_err(|e| format!("the FUSE session ended with an error: {e}"))?;
    // The last downloads are made durable so the next mount has them, and
    // the cache's lock for this process goes (threads still hold the store).
    core.dataset().context().content.finish();
    tracing::info!(mountpoint = %mountpoint.display(), "unmounted");
    Ok(())
}

/// How long an operation that found a change waits for the kernel to take
/// the invalidations in: a notification that needs a lock the kernel holds
/// while it waits on this very daemon would otherwise never return.
const NOTIFY_WAIT: Duration = Duration::from_secs(2);

/// The kernel's caches, reached by FUSE notifications sent from a thread of
/// their own; the caller waits for them, within [`NOTIFY_WAIT`]. Those
/// nobody waits for go through a second thread, so that one the kernel
/// holds back (a name, while a lookup holds its directory) delays no other.
/// Attributes alone are sent from the caller's thread: the kernel takes
/// them at once, and they must not wait behind a batch it holds back (an
/// open that drops its file's size would wait with it).
struct KernelNotifier {
    direct: Notifier,
    queue: parking_lot::Mutex<mpsc::Sender<(Vec<Invalidation>, mpsc::SyncSender<()>)>>,
    later: parking_lot::Mutex<mpsc::Sender<(Vec<Invalidation>, mpsc::SyncSender<()>)>>,
}

fn send(notifier: &Notifier, invalidation: &Invalidation) {
    let result = match invalidation {
        // A negative offset: attributes only.
        Invalidation::Attributes(ino) => notifier.inval_inode(INodeNo(*ino), -1, 0),
        Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
        Invalidation::Entry { parent, name } => {
            notifier.inval_entry(INodeNo(*parent), OsStr::new(name))
        }
    };
    // ENOENT: the kernel had nothing cached for it.
    if let Err(e) = result {
        tracing::trace!(?invalidation, "the kernel refused an invalidation: {e}");
    }
}

/// A thread that sends each batch of invalidations to the kernel, then
/// says it is done.
fn invalidator(
    name: &str,
    notifier: Notifier,
) -> mpsc::Sender<(Vec<Invalidation>, mpsc::SyncSender<()>)> {
    let (tx, rx) = mpsc::channel::<(Vec<Invalidation>, mpsc::SyncSender<()>)>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for (invalidations, done) in rx {
                for invalidation in &invalidations {
                    send(&notifier, invalidation);
                }
                let _ = done.try_send(());
            }
        })
        .expect("spawning a thread");
    tx
}

impl KernelNotifier {
    fn start(session: &Session<FuseAdapter>) -> Arc<KernelNotifier> {
        Arc::new(KernelNotifier {
            direct: session.notifier(),
            queue: parking_lot::Mutex::new(invalidator("invalidator", session.notifier())),
            later: parking_lot::Mutex::new(invalidator("invalidator-later", session.notifier())),
        })
    }
}

impl Kernel for KernelNotifier {
    fn invalidate(&self, invalidations: Vec<Invalidation>) {
        if invalidations
            .iter()
            .all(|i| matches!(i, Invalidation::Attributes(_)))
        {
            for invalidation in &invalidations {
                send(&self.direct, invalidation);
            }
            return;
        }
        let (done, finished) = mpsc::sync_channel(1);
        let count = invalidations.len();
        if self.queue.lock().send((invalidations, done)).is_err() {
            return;
        }
        if finished.recv_timeout(NOTIFY_WAIT).is_err() {
            tracing::debug!(
                count,
                "the kernel has not taken the invalidations yet; going on"
            );
        }
    }

    fn invalidate_later(&self, invalidations: Vec<Invalidation>) {
        let (done, _) = mpsc::sync_channel(1);
        let _ = self.later.lock().send((invalidations, done));
    }
}

/// Mounts at `mountpoint` (`canonical`: as the kernel shows it) and
/// starts the session: as root, a mount of the process's own making,
/// known by its ID from the start (see `own_mount`); otherwise through
/// fuser, which runs `fusermount3`.
fn mount_session(
    adapter: FuseAdapter,
    mountpoint: &Mountpoint,
    canonical: &Path,
    config: &Config,
    run: &RunArgs,
) -> Result<(Session<FuseAdapter>, OwnMount), String> {
    if let Some((fuse, detached)) = own_mount::make(canonical, run.allow_other)? {
        let own_mount = detached.attach(canonical, mountpoint.on)?;
        return match Session::from_fd(adapter, fuse, config.acl, config.clone()) {
            Ok(session) => Ok((session, own_mount)),
            Err(e) => {
                own_mount.detach_if_still_there();
                Err(format!("cannot start the FUSE session: {e}"))
            }
        };
    }
    own_mount::refuse_if_covered(canonical, mountpoint.on)?;
    let session = Session::new(adapter, &mountpoint.path, config).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (is /dev/fuse accessible, and fusermount3 installed?)"
        } else {
            ""
        };
        format!("cannot mount at {}: {e}{hint}", mountpoint.display())
    })?;
    Ok((session, OwnMount::at(canonical)))
}

/// After a signal, the session has this long to end by itself once
/// unmounted; then the process exits, which makes the kernel fail whatever
/// is still pending with ENOTCONN instead of leaving it hanging.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// SIGINT and SIGTERM unmount the process's own mount; SIGHUP revalidates
/// every loaded tag, as `matvisfs refresh` does. `socket`: the control
/// socket, removed before the process exits if it is still its own.
fn watch_signals(
    mut signals: signal_hook::iterator::Signals,
    own_mount: OwnMount,
    dataset: Arc<Dataset>,
    socket: Option<control::BoundSocket>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            let ending = loop {
                match signals.next() {
                    Some(SIGHUP) => {
                        tracing::info!("SIGHUP: revalidating every tag");
                        control::refresh_on_signal(dataset.clone());
                    }
                    other => break other,
                }
            };
            if let Some(signal) = ending {
                tracing::info!(signal, "unmounting on signal");
                notify::stopping();
                own_mount.unmount_if_still_there();
                std::thread::sleep(SHUTDOWN_GRACE);
                tracing::warn!("files are still open after {SHUTDOWN_GRACE:?}; exiting anyway");
                if let Some(socket) = &socket {
                    socket.remove_if_still_there();
                }
                std::process::exit(0);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// A mountpoint as checked: its path, and the mount it was on then, which
/// no mount made there since may cover when this one is attached.
pub(crate) struct Mountpoint {
    pub(crate) path: PathBuf,
    on: Option<u64>,
}

impl std::ops::Deref for Mountpoint {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

/// Checks the mountpoint, recovering one left dead by a killed mount. A
/// directory with entries is refused unless `nonempty`: the mount would
/// hide them.
pub(crate) fn prepare_mountpoint(path: &Path, nonempty: bool) -> Result<Mountpoint, String> {
    let path = absolute(path)?;
    let meta = match fs::metadata(&path) {
        Err(e) if crate::fuse::is_dead_mount(&e) => {
            eprintln!(
                "matvisfs: {} is a dead FUSE mount (\"Transport endpoint is not connected\": its \
                 process was killed); unmounting it lazily",
                path.display()
            );
            if let Err(e) = unmount(&path, true) {
                // Detached meanwhile (by its own process as it ended, or by
                // another command recovering it): the path answers now.
                if fs::metadata(&path).is_err() {
                    return Err(e);
                }
            }
            fs::metadata(&path).map_err(|e| format!("mountpoint {}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "mountpoint {} does not exist; create it with `mkdir -p {}`",
                path.display(),
                path.display()
            ));
        }
        Err(e) => return Err(format!("mountpoint {}: {e}", path.display())),
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return Err(format!("mountpoint {} is not a directory", path.display()));
    }
    if is_mount_point(&path, &meta) {
        return Err(format!(
            "{} is already a mount point; unmount it first (`{} unmount {}`)",
            path.display(),
            crate::cli::program(),
            path.display()
        ));
    }
    if !nonempty {
        let entries = fs::read_dir(&path)
            .map_err(|e| format!("mountpoint {}: {e}", path.display()))?
            .count();
        if entries > 0 {
            return Err(format!(
                "mountpoint {} is not empty ({}): the mount would hide them; \
                 use an empty directory, or --nonempty to mount over them anyway",
                path.display(),
                match entries {
                    1 => "1 entry".to_string(),
                    n => format!("{n} entries"),
                }
            ));
        }
    }
    let on = own_mount::mount_under(&path);
    Ok(Mountpoint { path, on })
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn is_mount_point(path: &Path, meta: &fs::Metadata) -> bool {
    match path.parent().map(fs::metadata) {
        Some(Ok(parent)) => parent.dev() != meta.dev(),
        _ => false,
    }
}

pub use crate::own_mount::unmount;
