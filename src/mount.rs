//! Mounting and unmounting: checks on the mountpoint, the FUSE session with
//! its worker threads, kernel cache invalidation, and clean shutdown on
//! SIGINT/SIGTERM.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use fuser::{Config, INodeNo, MountOption, Notifier, Session, SessionACL};

use crate::cli::{MountArgs, RemoteArgs, RunArgs};
use crate::control;
use crate::daemon::{self, Readiness};
use crate::dataset::{Context, Dataset};
use crate::fs::{FsCore, Invalidation, Kernel};
use crate::fuse::{Backing, FuseAdapter};
use crate::logging;
use crate::metrics::Exporter;
use crate::notify;
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
    mountpoint: &Path,
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
    mountpoint: &Path,
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
    // What the kernel will show as the mount point, which names the
    // control socket (taken before mounting: not through the mount).
    let canonical = fs::canonicalize(mountpoint)
        .map_err(|e| format!("mountpoint {}: {e}", mountpoint.display()))?;
    // Listening before the mount appears: whoever sees the mount can ask it.
    let control = match control::Listener::start(&canonical, core.dataset().clone()) {
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
    // Once the kernel has ended the session, fuser unmounts its mount's
    // path by name, whatever is mounted there by then: a restart's mount,
    // made the moment this one went. This process's own mount, still there
    // answering nothing, is detached instead (see `OwnMount`), the session
    // counts as ended, and fuser's thread waits for the process's exit.
    let ending: Arc<parking_lot::Mutex<Option<OwnMount>>> = Arc::default();
    let adapter = adapter.on_destroy({
        let (ending, waits_in_place) = (ending.clone(), waits_in_place.clone());
        move || {
            if let Some(own_mount) = ending.lock().take() {
                own_mount.detach_if_still_there();
            }
            waits_in_place.session_ended(Ok(()));
            loop {
                std::thread::park();
            }
        }
    });
    let session = Session::new(adapter, mountpoint, &config).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (is /dev/fuse accessible, and fusermount3 installed?)"
        } else {
            ""
        };
        format!("cannot mount at {}: {e}{hint}", mountpoint.display())
    })?;
    let own_mount = OwnMount::of(&canonical);
    *ending.lock() = Some(own_mount.clone());
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
        own_mount,
        core.dataset().clone(),
        control.as_ref().map(|c| c.socket().clone()),
    )?;
    if let Some(exporter) = metrics {
        let core = core.clone();
        exporter.serve(Box::new(move || core.stats_json()))?;
    }
    crate::allocator::give_back_free_memory();
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    readiness.report(Ok(()));
    notify::ready();
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

/// After a signal, the session has this long to end by itself once
/// unmounted; then the process exits, which makes the kernel fail whatever
/// is still pending with ENOTCONN instead of leaving it hanging.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// SIGINT and SIGTERM unmount the process's own mount; SIGHUP revalidates
/// every loaded tag, as `matvisfs refresh` does. `socket`: the control
/// socket, removed before the process exits if it is still its own.
fn watch_signals(
    own_mount: OwnMount,
    dataset: Arc<Dataset>,
    socket: Option<control::BoundSocket>,
) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
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

/// Checks the mountpoint, recovering one left dead by a killed mount. A
/// directory with entries is refused unless `nonempty`: the mount would
/// hide them.
pub(crate) fn prepare_mountpoint(path: &Path, nonempty: bool) -> Result<PathBuf, String> {
    let path = absolute(path)?;
    let meta = match fs::metadata(&path) {
        Err(e) if crate::fuse::is_dead_mount(&e) => {
            eprintln!(
                "matvisfs: {} is a dead FUSE mount (\"Transport endpoint is not connected\": its \
                 process was killed); unmounting it lazily",
                path.display()
            );
            unmount(&path, true)?;
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
    Ok(path)
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

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8+): a mount's ID, never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The mount this process made, told apart from any mounted at its path
/// later by its unique ID. At the end of a session it is detached if it is
/// still there answering nothing (a connection aborted while files were
/// open leaves it: `Transport endpoint is not connected`), and nothing else
/// is: not a mount made there since `umount -f` or `-l`, such as a
/// restart's. Where the kernel gives no unique ID, nothing is detached.
#[derive(Clone)]
struct OwnMount {
    path: PathBuf,
    id: Option<u64>,
}

impl OwnMount {
    fn of(path: &Path) -> OwnMount {
        OwnMount {
            path: path.to_path_buf(),
            id: unique_mount_id(path),
        }
    }

    /// Whether the mount at the path is this one: not a mount stacked on
    /// it, nor one made there after it was detached.
    fn is_at_its_path(&self) -> bool {
        self.id.is_some() && unique_mount_id(&self.path) == self.id
    }

    /// Unmounts it on request (a signal), lazily if busy (files open,
    /// reads in flight: they finish first). A mount stacked on it, or made
    /// at the path since it was detached by hand, is left alone: the
    /// process's exit then ends the session. Where the kernel gives no
    /// unique ID, the path is unmounted by name.
    fn unmount_if_still_there(&self) {
        if self.id.is_some() && !self.is_at_its_path() {
            tracing::info!(
                mountpoint = %self.path.display(),
                "another mount is at the path now; leaving it"
            );
            return;
        }
        if let Err(busy) = unmount(&self.path, false) {
            tracing::info!("{busy}; detaching lazily");
            if let Err(e) = unmount(&self.path, true) {
                tracing::error!("cannot unmount: {e}");
            }
        }
    }

    fn detach_if_still_there(&self) {
        if !self.is_at_its_path() {
            return;
        }
        match unmount(&self.path, true) {
            Ok(()) => tracing::info!(
                mountpoint = %self.path.display(),
                "detached the mount, whose connection had ended"
            ),
            Err(e) => tracing::debug!("{e}"),
        }
    }
}

/// The unique ID of the mount at `path`, from the attributes the kernel
/// holds (a mount whose connection ended answers no request).
fn unique_mount_id(path: &Path) -> Option<u64> {
    use rustix::fs::{AtFlags, CWD, StatxFlags};
    let stat = rustix::fs::statx(
        CWD,
        path,
        AtFlags::STATX_DONT_SYNC,
        StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )
    .ok()?;
    (stat.stx_mask & STATX_MNT_ID_UNIQUE != 0).then_some(stat.stx_mnt_id)
}

/// `matvisfs unmount`.
pub fn unmount(path: &Path, lazy: bool) -> Result<(), String> {
    let path = absolute(path)?;
    let flags = match lazy {
        true => rustix::mount::UnmountFlags::DETACH,
        false => rustix::mount::UnmountFlags::empty(),
    };
    let Err(error) = rustix::mount::unmount(&path, flags) else {
        return Ok(());
    };
    let error = std::io::Error::from(error);
    match error.raw_os_error() {
        // Not root: the setuid helper may unmount our own mounts.
        Some(libc::EPERM) => {
            let mut command = std::process::Command::new("fusermount3");
            command.arg("-u");
            if lazy {
                command.arg("-z");
            }
            let status = command
                .arg(&path)
                .status()
                .map_err(|e| format!("cannot run fusermount3 (install the fuse3 package): {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("fusermount3 -u {} failed", path.display()))
            }
        }
        Some(libc::EBUSY) => Err(format!(
            "{} is busy: a process still uses files there (see `fuser -vm {}`); close them, or use --lazy",
            path.display(),
            path.display()
        )),
        Some(libc::EINVAL) => Err(format!("{} is not a mount point", path.display())),
        _ => Err(format!("cannot unmount {}: {error}", path.display())),
    }
}
