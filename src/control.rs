//! The control channel of a running mount, and `matvisfs refresh`.
//!
//! Each mount listens on a unix socket that only root and the mount's owner
//! can use: mode 0600 in a directory of mode 0700 owned by the daemon's
//! user, and every connection's peer credentials checked again. The socket
//! is found from the mountpoint alone, so that root can reach any user's
//! mount: its name is a hash of the canonical mountpoint, in the runtime
//! directory of the mount's owner (the `user_id` the kernel shows for the
//! mount): `/run/matvisfs` for root, `/run/user/<uid>/matvisfs` where that
//! directory exists (systemd-logind's, `$XDG_RUNTIME_DIR`), else
//! `/tmp/matvisfs-<uid>`; `MATVISFS_RUNTIME_DIR` overrides all three, for
//! the daemon and the command alike.
//!
//! One request per connection, one JSON line each way: the tags to
//! revalidate (none: every loaded tag), then one answer per tag.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cli::RefreshArgs;
use crate::dataset::{Dataset, Refreshed};

/// Overrides where control sockets live.
pub const RUNTIME_DIR_VAR: &str = "MATVISFS_RUNTIME_DIR";
/// How long `matvisfs refresh` waits for the daemon's answer: each tag's
/// checks are bounded (10 s, or `--timeout`, per request), this is far
/// beyond them.
const ANSWER_WAIT: Duration = Duration::from_secs(120);
/// How long the daemon waits for a request once connected.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// A request is one short line.
const REQUEST_LIMIT: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct Request {
    /// `None`: every loaded tag.
    tags: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
struct TagAnswer {
    tag: String,
    /// `unchanged`, `changed` or `failed`.
    outcome: String,
    /// What changed, or why it failed.
    details: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    #[serde(default)]
    tags: Vec<TagAnswer>,
    #[serde(default)]
    error: Option<String>,
}

fn answer_for(tag: String, refreshed: Refreshed) -> TagAnswer {
    let (outcome, details) = match refreshed {
        Refreshed::Unchanged => ("unchanged", Vec::new()),
        Refreshed::Changed(what) => ("changed", what),
        Refreshed::Failed(why) => ("failed", vec![why]),
    };
    TagAnswer {
        tag,
        outcome: outcome.to_string(),
        details,
    }
}

/// The directory holding the control sockets of `uid`'s mounts.
pub fn runtime_dir(uid: u32) -> PathBuf {
    if let Some(dir) = std::env::var_os(RUNTIME_DIR_VAR).map(PathBuf::from) {
        if dir.is_absolute() {
            return dir;
        }
    }
    if uid == 0 {
        return PathBuf::from("/run/matvisfs");
    }
    let user_run = PathBuf::from(format!("/run/user/{uid}"));
    if user_run.is_dir() {
        return user_run.join("matvisfs");
    }
    PathBuf::from(format!("/tmp/matvisfs-{uid}"))
}

/// The socket of the mount at `mountpoint` (canonical) owned by `uid`.
pub fn socket_path(uid: u32, mountpoint: &Path) -> PathBuf {
    let digest = Sha256::digest(mountpoint.as_os_str().as_encoded_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    runtime_dir(uid).join(format!("{name}.sock"))
}

/// A directory only `uid` may enter: created so, or refused when it is
/// anything else (another's, a link, open to others).
fn private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Its parent (/run/user/<uid>, /run) is missing: made as needed.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a directory of uid {uid} that only it may use",
            dir.display()
        ));
    }
    Ok(())
}

/// The socket directory, held locked (`flock`) while a socket in it is
/// bound, renamed into place or removed, and the directory with the last
/// one: a process that ends removes no socket another put in place between
/// its check and its removal, and no directory another is binding in.
struct LockedDir {
    _lock: OwnedFd,
}

impl LockedDir {
    /// Locks `dir`, created as [`private_dir`] when `create`; `None` when
    /// it is not there (and not to be created).
    fn lock(dir: &Path, uid: u32, create: bool) -> Result<Option<LockedDir>, String> {
        let mut last = String::new();
        for _ in 0..LOCK_ATTEMPTS {
            if create {
                if let Err(e) = private_dir(dir, uid) {
                    // Removed by another mount's end between its steps.
                    last = e;
                    continue;
                }
            }
            let fd = match rustix::fs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
                Err(e) => {
                    last = format!("cannot open {}: {e}", dir.display());
                    continue;
                }
            };
            rustix::fs::flock(&fd, FlockOperation::LockExclusive)
                .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
            // Still the directory at its path: not removed while this
            // waited for the lock.
            let held = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", dir.display()))?;
            match fs::symlink_metadata(dir) {
                Ok(now) if now.ino() == held.st_ino && held.st_nlink > 0 => {
                    return Ok(Some(LockedDir { _lock: fd }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
                _ => last = format!("{} was removed meanwhile", dir.display()),
            }
        }
        Err(last)
    }
}

/// Tries at locking the socket directory, which other mounts' ends may
/// remove between the steps.
const LOCK_ATTEMPTS: usize = 8;

/// The listening end, in the daemon: removed when dropped.
pub struct Listener {
    socket: BoundSocket,
    /// Where the socket goes once the mount is made (see
    /// [`Listener::publish`]).
    published: PathBuf,
}

/// The socket file this process bound, told from one bound at the same
/// path since (by a new mount there, after this one was detached) by its
/// inode: only its own is removed as the process ends.
#[derive(Clone, Debug)]
pub struct BoundSocket {
    path: PathBuf,
    uid: u32,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// Removes the socket, and its directory once no other mount uses it,
    /// if the file at its path is still the one this process bound.
    pub fn remove_if_still_there(&self) {
        let dir = self.path.parent().expect("a socket has a directory");
        let Ok(Some(_locked)) = LockedDir::lock(dir, self.uid, false) else {
            return;
        };
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                let _ = fs::remove_file(&self.path);
                let _ = fs::remove_dir(dir);
            }
            _ => tracing::debug!(
                socket = %self.path.display(),
                "the control socket is another mount's now; left there"
            ),
        }
    }
}

impl Listener {
    /// Listens for the mount at `mountpoint` (canonical), answering with
    /// `dataset`, under a name of this process's own until
    /// [`Listener::publish`]. Errors say why there is no channel; the
    /// mount serves without one.
    pub fn start(mountpoint: &Path, dataset: Arc<Dataset>) -> Result<Listener, String> {
        let uid = rustix::process::geteuid().as_raw();
        let published = socket_path(uid, mountpoint);
        let dir = published.parent().expect("a socket has a directory");
        let path = published.with_extension(format!("{}.pending", std::process::id()));
        let listener;
        {
            let _locked = LockedDir::lock(dir, uid, true)?.expect("created");
            remove_left_pending(&published);
            listener = UnixListener::bind(&path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let bound = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let socket = BoundSocket {
            path,
            uid,
            dev: bound.dev(),
            ino: bound.ino(),
        };
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let dataset = dataset.clone();
                    let _ = std::thread::Builder::new()
                        .name("refresh".into())
                        .spawn(move || serve_one(stream, &dataset, uid));
                }
            })
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        tracing::debug!(socket = %socket.path.display(), "control channel ready");
        Ok(Listener { socket, published })
    }

    /// Gives the socket the name the mount's clients look for, once the
    /// mount is made: in place of one a killed daemon left there, or one
    /// whose mount was detached from the path while its process still
    /// serves open files.
    pub fn publish(&mut self) -> Result<(), String> {
        let dir = self.published.parent().expect("a socket has a directory");
        let _locked = LockedDir::lock(dir, self.socket.uid, false)?
            .ok_or_else(|| format!("{} was removed", dir.display()))?;
        fs::rename(&self.socket.path, &self.published)
            .map_err(|e| format!("cannot listen on {}: {e}", self.published.display()))?;
        self.socket.path = self.published.clone();
        tracing::debug!(socket = %self.published.display(), "control channel published");
        Ok(())
    }

    pub fn socket(&self) -> &BoundSocket {
        &self.socket
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.socket.remove_if_still_there();
    }
}

/// Removes the sockets processes killed before their mount was made left
/// under their own names for the mount whose socket is `published` (this
/// process's own ID among them, had one of them had it). Under the
/// directory's lock.
fn remove_left_pending(published: &Path) {
    let (Some(dir), Some(stem)) = (published.parent(), published.file_stem()) else {
        return;
    };
    let prefix = format!("{}.", stem.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".pending"))
        else {
            continue;
        };
        let own = pid == std::process::id().to_string();
        if own || !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Removes a socket, and its directory once no other mount uses it,
/// whoever bound it (one a killed daemon left).
pub fn remove_socket(path: &Path) {
    let dir = path.parent().expect("a socket has a directory");
    let uid = rustix::process::geteuid().as_raw();
    if let Ok(Some(_locked)) = LockedDir::lock(dir, uid, false) {
        let _ = fs::remove_file(path);
        let _ = fs::remove_dir(dir);
    }
}

fn serve_one(stream: UnixStream, dataset: &Dataset, owner: u32) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let answer = match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(peer) if peer.uid.is_root() || peer.uid.as_raw() == owner => {
            let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
            let mut line = String::new();
            let read =
                BufReader::new(std::io::Read::take(&stream, REQUEST_LIMIT)).read_line(&mut line);
            match read
                .map_err(|e| e.to_string())
                .and_then(|_| serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()))
            {
                Ok(request) => {
                    let answers = refresh_logged(dataset, request.tags.as_deref());
                    Answer {
                        tags: answers,
                        error: None,
                    }
                }
                Err(why) => Answer {
                    tags: Vec::new(),
                    error: Some(format!("a request that is not one: {why}")),
                },
            }
        }
        Ok(peer) => Answer {
            tags: Vec::new(),
            error: Some(format!(
                "uid {} may not use this mount's control channel: only root and uid {owner}",
                peer.uid.as_raw()
            )),
        },
        Err(e) => Answer {
            tags: Vec::new(),
            error: Some(format!("cannot tell who is asking: {e}")),
        },
    };
    let mut bytes = serde_json::to_vec(&answer).expect("serializable");
    bytes.push(b'\n');
    let _ = writer.write_all(&bytes);
}

/// Revalidates `tags` (all loaded ones: `None`) and logs each outcome.
fn refresh_logged(dataset: &Dataset, tags: Option<&[String]>) -> Vec<TagAnswer> {
    tracing::info!(?tags, "revalidating on request");
    dataset
        .refresh(tags)
        .into_iter()
        .map(|(tag, refreshed)| {
            match &refreshed {
                Refreshed::Unchanged => tracing::info!(tag, "refresh: unchanged"),
                Refreshed::Changed(what) => {
                    tracing::info!(tag, "refresh: changed: {}", what.join("; "))
                }
                Refreshed::Failed(why) => tracing::warn!(tag, "refresh: failed: {why}"),
            }
            answer_for(tag, refreshed)
        })
        .collect()
}

/// SIGHUP: every loaded tag, as `matvisfs refresh` without `--tag`, on a
/// thread of its own; the outcome goes to the log.
pub fn refresh_on_signal(dataset: Arc<Dataset>) {
    let _ = std::thread::Builder::new()
        .name("refresh".into())
        .spawn(move || {
            refresh_logged(&dataset, None);
        });
}

/// `matvisfs refresh`: exit 0 when every tag was revalidated, 1 when one
/// could not be (its cached copy keeps serving), 2 when the mount cannot be
/// asked (not a matvisfs mount, its daemon gone, a user who may not).
pub fn refresh(args: RefreshArgs) -> ExitCode {
    match ask(&args) {
        Ok(answers) => {
            let mut failed = false;
            for answer in answers {
                let details = answer.details.join("; ");
                match answer.outcome.as_str() {
                    "unchanged" => println!("{}: unchanged", answer.tag),
                    "failed" => {
                        failed = true;
                        println!("{}: failed: {details}", answer.tag)
                    }
                    outcome => println!("{}: {outcome}: {details}", answer.tag),
                }
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(msg) => {
            eprintln!("matvisfs: {msg}");
            ExitCode::from(2)
        }
    }
}

/// One mount as `/proc/self/mountinfo` shows it.
struct MountEntry {
    fstype: String,
    /// `user_id=` of a FUSE mount: its owner.
    owner: Option<u32>,
}

/// `\040` and the like, as mountinfo escapes space, tab, newline and `\`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount whose mount point is exactly `path` and that a lookup of it
/// reaches (the top one when several are stacked there: the one no other
/// there is mounted on, wherever `mountinfo` lists it), from `mountinfo`'s
/// text.
fn mount_at(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let wanted = path.to_string_lossy();
    let there: Vec<(&str, &str, MountEntry)> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 5 || unescape(fields[4]) != wanted {
                return None;
            }
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?.to_string();
            let options = fields.get(dash + 3).copied().unwrap_or("");
            let owner = options
                .split(',')
                .find_map(|o| o.strip_prefix("user_id="))
                .and_then(|uid| uid.parse().ok());
            Some((fields[0], fields[1], MountEntry { fstype, owner }))
        })
        .collect();
    let top = there
        .iter()
        .rposition(|(id, _, _)| !there.iter().any(|(_, parent, _)| parent == id))?;
    there.into_iter().nth(top).map(|(_, _, entry)| entry)
}

/// Finds the mount's socket and asks it.
fn ask(args: &RefreshArgs) -> Result<Vec<TagAnswer>, String> {
    let given = std::path::absolute(&args.mountpoint)
        .map_err(|e| format!("{}: {e}", args.mountpoint.display()))?;
    // A path this user cannot resolve (a dead mount, another user's
    // directory) is looked up as given.
    let (path, unreachable) = match fs::canonicalize(&given) {
        Ok(path) => (path, None),
        Err(e) => (given.clone(), Some(e)),
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let Some(mount) = mount_at(&mountinfo, &path) else {
        return Err(match unreachable {
            Some(e) => format!("{}: {e}", path.display()),
            None => format!(
                "{} is not a matvisfs mount: nothing is mounted there",
                path.display()
            ),
        });
    };
    if mount.fstype != "fuse.matvisfs" {
        return Err(format!(
            "{} is not a matvisfs mount: it is a {} mount",
            path.display(),
            mount.fstype
        ));
    }
    if unreachable.as_ref().is_some_and(crate::fuse::is_dead_mount) {
        return Err(format!(
            "the daemon serving {} is gone (the mount is dead: \"Transport endpoint is not \
             connected\"); unmount it with `matvisfs unmount {}` and mount again",
            path.display(),
            path.display()
        ));
    }
    let owner = mount
        .owner
        .ok_or_else(|| format!("{} names no owner in /proc/self/mountinfo", path.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if me != 0 && me != owner {
        return Err(format!(
            "only root and the user who mounted {} (uid {owner}) may refresh it; you are uid {me}",
            path.display()
        ));
    }
    let socket = socket_path(owner, &path);
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
            return Err(format!(
                "the daemon serving {} is gone, or has no control channel (no one listens on {}); \
                 SIGHUP to its process revalidates every tag",
                path.display(),
                socket.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "you may not use the control channel of {} ({}: {e}): only root and uid {owner}",
                path.display(),
                socket.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot reach the daemon at {}: {e}",
                socket.display()
            ));
        }
    };
    let request = Request {
        tags: (!args.tags.is_empty()).then(|| args.tags.clone()),
    };
    let mut line = serde_json::to_vec(&request).expect("serializable");
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("cannot ask the daemon at {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(ANSWER_WAIT))
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "the daemon serving {} did not answer within {} s",
                path.display(),
                ANSWER_WAIT.as_secs()
            ),
            _ => format!("no answer from the daemon at {}: {e}", socket.display()),
        })?;
    if reply.is_empty() {
        return Err(format!(
            "the daemon serving {} ended before it answered (unmounted meanwhile?)",
            path.display()
        ));
    }
    let answer: Answer = serde_json::from_str(&reply).map_err(|e| {
        format!(
            "the daemon serving {} answered something else ({e}); is it another version?",
            path.display()
        )
    })?;
    match answer.error {
        Some(error) => Err(error),
        None => Ok(answer.tags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_is_found_with_its_type_and_owner() {
        let mountinfo = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /mnt/mat\\040vis rw,nosuid,nodev,noatime - fuse.matvisfs matvisfs ro,user_id=1000,group_id=1000,default_permissions
91 22 0:51 / /srv/other rw - fuse.sshfs host: rw,user_id=0,group_id=0
";
        let mount = mount_at(mountinfo, Path::new("/mnt/mat vis")).unwrap();
        assert_eq!(mount.fstype, "fuse.matvisfs");
        assert_eq!(mount.owner, Some(1000));
        assert_eq!(
            mount_at(mountinfo, Path::new("/srv/other")).unwrap().fstype,
            "fuse.sshfs"
        );
        assert!(mount_at(mountinfo, Path::new("/mnt")).is_none());
        // Stacked: the one on top is reached, listed first or last.
        let stacked = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
48 49 0:52 / /m rw - fuse.matvisfs matvisfs ro,user_id=7,group_id=7
49 22 0:51 / /m rw - fuse.matvisfs matvisfs ro,user_id=5,group_id=5
";
        assert_eq!(mount_at(stacked, Path::new("/m")).unwrap().owner, Some(7));
        let reversed: String = stacked.lines().rev().map(|l| format!("{l}\n")).collect();
        assert_eq!(mount_at(&reversed, Path::new("/m")).unwrap().owner, Some(7));
    }

    #[test]
    fn sockets_left_pending_by_killed_processes_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let published = dir.path().join("0123abcd.sock");
        let pending = |pid: &str| dir.path().join(format!("0123abcd.{pid}.pending"));
        // No process has an ID past the kernel's largest (4194304).
        let killed = pending("999999999");
        let own = pending(&std::process::id().to_string());
        let alive = pending("1");
        let other_mount = dir.path().join("ffff0000.999999999.pending");
        for path in [&killed, &own, &alive, &other_mount, &published] {
            fs::write(path, b"").unwrap();
        }
        remove_left_pending(&published);
        assert!(!killed.exists());
        assert!(!own.exists());
        assert!(alive.exists(), "a live process's socket was removed");
        assert!(other_mount.exists(), "another mount's socket was removed");
        assert!(published.exists());
    }

    #[test]
    fn sockets_are_named_by_the_mountpoint() {
        let a = socket_path(0, Path::new("/mnt/a"));
        let b = socket_path(0, Path::new("/mnt/b"));
        assert_ne!(a, b);
        assert_eq!(a, socket_path(0, Path::new("/mnt/a")));
        assert!(a.as_os_str().len() < 108, "fits a unix socket address");
    }
}
