//! The mount this process made, and the only one it may remove: told apart
//! from any other at its path (stacked on it, or made there after it was
//! detached) by the kernel's unique mount ID.
//!
//! As root the process makes the mount itself with the kernel's mount API:
//! the mount is created detached, its ID read from its own descriptor,
//! and it is attached at the path only if nothing has been mounted there
//! since the path was checked. Through `fusermount3` (another user) the ID
//! is read at the path right after mounting, which a mount stacked there in
//! that instant would mislead.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8+): a mount's ID, never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The mount this process made at `path`, with its unique ID when the
/// kernel gives one (Linux 6.8+). At the end of a session it is detached if
/// it is still there answering nothing (a connection aborted while files
/// were open leaves it: `Transport endpoint is not connected`), and nothing
/// else is.
#[derive(Clone, Debug)]
pub(crate) struct OwnMount {
    path: PathBuf,
    id: Option<u64>,
}

impl OwnMount {
    /// The mount at `path` now, taken as this process's own: just after
    /// a mount made through fuser.
    pub(crate) fn at(path: &Path) -> OwnMount {
        OwnMount {
            path: path.to_path_buf(),
            id: unique_mount_id(CWD, path, AtFlags::empty()),
        }
    }

    /// Whether the mount at the path is this one: not a mount stacked on
    /// it, nor one made there after it was detached.
    pub(crate) fn is_at_its_path(&self) -> bool {
        self.id.is_some() && unique_mount_id(CWD, &self.path, AtFlags::empty()) == self.id
    }

    /// Unmounts it on request (a signal), lazily if busy (files open,
    /// reads in flight: they finish first). A mount stacked on it, or made
    /// at the path since it was detached by hand, is left alone: the
    /// process's exit then ends the session. Where the kernel gives no
    /// unique ID, the path is unmounted by name.
    pub(crate) fn unmount_if_still_there(&self) {
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

    /// Detaches it if it is still at its path: at the end of a session,
    /// when it can only be a mount whose connection ended.
    pub(crate) fn detach_if_still_there(&self) {
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

/// `STATX_MNT_ID` (Linux 5.8+): a mount's ID as `/proc/self/mountinfo`
/// shows it, reused once the mount is gone.
const STATX_MNT_ID: u32 = 0x1000;

/// The ID of the mount `id` is mounted on, from `/proc/self/mountinfo`.
fn parent_of(id: u64) -> Option<u64> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let this: u64 = fields.next()?.parse().ok()?;
        let parent: u64 = fields.next()?.parse().ok()?;
        (this == id).then_some(parent)
    })
}

/// The ID (`which`: [`STATX_MNT_ID_UNIQUE`] or [`STATX_MNT_ID`]) of the
/// mount `path` (relative to `dir`) is on, from the attributes the kernel
/// holds: `AT_STATX_DONT_SYNC`, so that no request reaches a daemon (a
/// mount whose connection ended answers none, and this process's own may
/// not be serving yet).
fn mount_id(dir: impl AsFd, path: &Path, flags: AtFlags, which: u32) -> Option<u64> {
    let stat = rustix::fs::statx(
        dir,
        path,
        flags | AtFlags::STATX_DONT_SYNC,
        StatxFlags::from_bits_retain(which),
    )
    .ok()?;
    (stat.stx_mask & which != 0).then_some(stat.stx_mnt_id)
}

fn unique_mount_id(dir: impl AsFd, path: &Path, flags: AtFlags) -> Option<u64> {
    mount_id(dir, path, flags, STATX_MNT_ID_UNIQUE)
}

/// The ID `/proc/self/mountinfo` lists the mount under.
fn listed_mount_id(dir: impl AsFd, path: &Path, flags: AtFlags) -> Option<u64> {
    mount_id(dir, path, flags, STATX_MNT_ID)
}

/// The mount `path` is on now, as `/proc/self/mountinfo` lists it: taken
/// when the mountpoint is checked, so that a mount made there since (by a
/// command started at the same time) is seen before and after this one is
/// attached (see [`refuse_if_covered`]).
pub(crate) fn mount_under(path: &Path) -> Option<u64> {
    listed_mount_id(CWD, path, AtFlags::empty())
}

/// Fails when a mount was made at `path` since it was checked, when it
/// was on the mount `checked_on`: two commands must not both mount there.
pub(crate) fn refuse_if_covered(path: &Path, checked_on: Option<u64>) -> Result<(), String> {
    if checked_on.is_some() && mount_under(path) != checked_on {
        return Err(covered(path));
    }
    Ok(())
}

fn covered(path: &Path) -> String {
    format!(
        "{} is already a mount point: another mount was made there meanwhile",
        path.display()
    )
}

/// A FUSE mount made but not attached yet, with its unique ID and the ID
/// `/proc/self/mountinfo` will list it under.
pub(crate) struct Detached {
    mount: OwnedFd,
    id: Option<u64>,
    listed_id: Option<u64>,
}

/// Makes a read-only FUSE mount of type `fuse.matvisfs` for a mountpoint
/// with `path`'s mode, detached, and the `/dev/fuse` connection that
/// serves it: `None` where this process may not (not root, or a kernel
/// without the mount API), and fuser mounts instead.
pub(crate) fn make(path: &Path, allow_other: bool) -> Result<Option<(OwnedFd, Detached)>, String> {
    let context = match rustix::mount::fsopen("fuse", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(context) => context,
        Err(e) if e == rustix::io::Errno::PERM || e == rustix::io::Errno::NOSYS => {
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot make a FUSE mount: {e}")),
    };
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("mountpoint {}: {e}", path.display()))?
        .permissions()
        .mode();
    let set = |key: &str, value: &str| {
        rustix::mount::fsconfig_set_string(&context, key, value)
            .map_err(|e| format!("cannot make a FUSE mount ({key}={value}): {e}"))
    };
    set("source", "matvisfs")?;
    set("subtype", "matvisfs")?;
    set("fd", &fuse.as_raw_fd().to_string())?;
    set("rootmode", &format!("{mode:o}"))?;
    set("user_id", &rustix::process::getuid().as_raw().to_string())?;
    set("group_id", &rustix::process::getgid().as_raw().to_string())?;
    let flag = |key: &str| {
        rustix::mount::fsconfig_set_flag(&context, key)
            .map_err(|e| format!("cannot make a FUSE mount ({key}): {e}"))
    };
    flag("ro")?;
    flag("default_permissions")?;
    if allow_other {
        flag("allow_other")?;
    }
    rustix::mount::fsconfig_create(&context)
        .map_err(|e| format!("cannot make a FUSE mount: {e}"))?;
    let mount = rustix::mount::fsmount(
        &context,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOATIME,
    )
    .map_err(|e| format!("cannot make a FUSE mount: {e}"))?;
    let id = unique_mount_id(&mount, Path::new(""), AtFlags::EMPTY_PATH);
    let listed_id = listed_mount_id(&mount, Path::new(""), AtFlags::EMPTY_PATH);
    Ok(Some((
        fuse.into(),
        Detached {
            mount,
            id,
            listed_id,
        },
    )))
}

impl Detached {
    /// Attaches the mount at `path`, unless a mount was made there since
    /// it was checked, when it was on `checked_on` (by a command started
    /// at the same time): then it fails as the check would have. Two commands that both pass the
    /// check both attach; the one whose mount is not on the path's own
    /// mount detaches it again and fails, so that one serves.
    pub(crate) fn attach(self, path: &Path, checked_on: Option<u64>) -> Result<OwnMount, String> {
        refuse_if_covered(path, checked_on)?;
        rustix::mount::move_mount(
            &self.mount,
            "",
            CWD,
            path,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| format!("cannot mount at {}: {e}", path.display()))?;
        let own = OwnMount {
            path: path.to_path_buf(),
            id: self.id,
        };
        if let (Some(listed_id), Some(checked_on)) = (self.listed_id, checked_on) {
            if parent_of(listed_id).is_some_and(|parent| parent != checked_on) {
                own.detach_if_still_there();
                return Err(covered(path));
            }
        }
        Ok(own)
    }
}

/// `matvisfs unmount`.
pub fn unmount(path: &Path, lazy: bool) -> Result<(), String> {
    let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
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
