//! The node's published volumes. Each is a `matvisfs mount` of its own in
//! the background (its own session, not a thread of the plugin), so mounts
//! outlive the plugin, and, started through a launcher, its container too;
//! what a restarted plugin needs to know of them is written under the
//! state directory: one record per target path.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::attributes::Volume;
use super::launcher::Launcher;

/// Why a call is refused, as the CSI spec names the cases.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Invalid(String),
    AlreadyExists(String),
    NotFound(String),
    /// Another call on the same target is under way.
    Aborted(String),
    Internal(String),
}

/// How long unpublishing waits for a mount's process to exit once its
/// tree is unmounted (it makes its last downloads durable first).
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// Variables `matvisfs mount` reads that a volume's attributes decide.
const ENV_DECIDED_BY_THE_VOLUME: [&str; 6] = [
    "MAT_VIS_HF_BASE",
    "HF_TOKEN",
    "MATVISFS_CACHE_DIR",
    "MATVISFS_CACHE_MAX_SIZE",
    "MATVISFS_LOG_FILE",
    "MATVISFS_HF_LIMITS",
];

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    volume_id: String,
    target_path: PathBuf,
    fingerprint: String,
}

/// What NodeGetVolumeStats reports: the node's shared cache, which every
/// volume reads through (the tree itself has no size of its own).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
    /// 0: no cap.
    pub cap: u64,
    /// Why the volume is not healthy, if it is not.
    pub abnormal: Option<String>,
}

pub struct Volumes {
    state: PathBuf,
    cache: PathBuf,
    default_cap: u64,
    launcher: Launcher,
    busy: Mutex<HashSet<PathBuf>>,
}

/// A target claimed for one call; released when dropped.
struct Claim<'a>(&'a Volumes, PathBuf);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.busy.lock().remove(&self.1);
    }
}

fn private_dir(path: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

impl Volumes {
    /// `mount_launcher`: the command prefix that starts each mount outside
    /// the plugin's container; none: mounts are children of the plugin.
    pub fn open(
        state: &Path,
        cache: &Path,
        default_cap: u64,
        mount_launcher: Option<&str>,
    ) -> Result<Volumes, String> {
        for dir in ["volumes", "secrets", "logs"] {
            private_dir(&state.join(dir))?;
        }
        private_dir(cache)?;
        let launcher = match mount_launcher {
            Some(prefix) => Launcher::outside(prefix, state)?,
            None => Launcher::direct()?,
        };
        let volumes = Volumes {
            state: state.to_path_buf(),
            cache: cache.to_path_buf(),
            default_cap,
            launcher,
            busy: Mutex::new(HashSet::new()),
        };
        // On a thread of its own: a mount that does not answer must not
        // hold up serving the others.
        let state = state.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("found".into())
            .spawn(move || report_found(&state));
        Ok(volumes)
    }

    fn claim(&self, target: &Path) -> Result<Claim<'_>, Refusal> {
        if !self.busy.lock().insert(target.to_path_buf()) {
            return Err(Refusal::Aborted(format!(
                "another call on {} is under way",
                target.display()
            )));
        }
        Ok(Claim(self, target.to_path_buf()))
    }

    fn key(target: &Path) -> String {
        let digest = Sha256::digest(target.as_os_str().as_encoded_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn record_path(&self, target: &Path) -> PathBuf {
        self.state.join("volumes").join(Self::key(target) + ".json")
    }

    fn token_path(&self, target: &Path) -> PathBuf {
        self.state.join("secrets").join(Self::key(target))
    }

    fn log_path(&self, target: &Path) -> PathBuf {
        self.state.join("logs").join(Self::key(target) + ".log")
    }

    fn write_record(&self, record: &Record) -> Result<(), Refusal> {
        let path = self.record_path(&record.target_path);
        let partial = path.with_extension("json.partial");
        let text = serde_json::to_vec(record).expect("serializable");
        fs::write(&partial, text)
            .and_then(|()| fs::rename(&partial, &path))
            .map_err(|e| Refusal::Internal(format!("cannot write {}: {e}", path.display())))
    }

    /// Mounts `volume` at `target` (idempotent: the same volume with the
    /// same attributes there already is success).
    pub fn publish(
        &self,
        volume_id: &str,
        target: &Path,
        volume: &Volume,
        token: Option<&str>,
    ) -> Result<(), Refusal> {
        let _claim = self.claim(target)?;
        let fingerprint = volume.fingerprint(volume_id);
        if let Some(record) = read_record(&self.record_path(target)) {
            if record.volume_id != volume_id || record.fingerprint != fingerprint {
                return Err(Refusal::AlreadyExists(format!(
                    "volume {:?} is published at {} with other attributes; unpublish it first",
                    record.volume_id,
                    target.display()
                )));
            }
            if answers(target) {
                return Ok(());
            }
            tracing::info!(volume = volume_id, target = %target.display(), "its mount is gone: mounting again");
            if is_mounted(target) {
                // Its process ended (ENOTCONN): detach what is left.
                crate::mount::unmount(target, true).map_err(Refusal::Internal)?;
            }
        } else if is_mounted(target) {
            return Err(Refusal::AlreadyExists(format!(
                "something else is mounted at {}",
                target.display()
            )));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(target)
            .map_err(|e| Refusal::Internal(format!("cannot create {}: {e}", target.display())))?;
        // Recorded first: a plugin killed while mounting finds it again.
        self.write_record(&Record {
            volume_id: volume_id.to_string(),
            target_path: target.to_path_buf(),
            fingerprint,
        })?;
        let result = self.mount(target, volume, token);
        if result.is_err() {
            let _ = fs::remove_file(self.record_path(target));
        }
        result
    }

    fn mount(&self, target: &Path, volume: &Volume, token: Option<&str>) -> Result<(), Refusal> {
        let token_file = match token {
            Some(token) => Some(self.write_token(target, token)?),
            None => None,
        };
        let args = volume.mount_args(
            &self.cache,
            self.default_cap,
            &self.log_path(target),
            token_file.as_deref(),
        );
        let mut command = self.launcher.command(&Self::key(target));
        command.arg("mount").arg(target).args(&args);
        for name in ENV_DECIDED_BY_THE_VOLUME {
            command.env_remove(name);
        }
        let output = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        // The mount read it before reporting ready; nothing needs it now.
        if let Some(path) = &token_file {
            let _ = fs::remove_file(path);
        }
        let output =
            output.map_err(|e| Refusal::Internal(format!("cannot run matvisfs mount: {e}")))?;
        if output.status.success() && !is_mounted(target) {
            // Mounted where this plugin does not see it (the target's
            // directory not shared with the launcher's mount namespace):
            // the pod would get an empty directory. Asked to end, it
            // unmounts there first.
            let unseen = serving_processes(target);
            signal_all(&unseen, rustix::process::Signal::TERM);
            wait_for_exit(&unseen, target);
            return Err(Refusal::Internal(format!(
                "mounting at {} failed: the mount reported ready, but the plugin does not see it mounted \
                 (is the kubelet's directory shared with mount propagation Bidirectional?)",
                target.display()
            )));
        }
        if output.status.success() {
            tracing::info!(target = %target.display(), "mounted");
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("no message")
            .trim_start_matches("matvisfs: ");
        Err(Refusal::Internal(format!(
            "mounting at {} failed: {message}",
            target.display()
        )))
    }

    /// The token, in a file only root reads, for the mount to read once.
    fn write_token(&self, target: &Path, token: &str) -> Result<PathBuf, Refusal> {
        let path = self.token_path(target);
        let _ = fs::remove_file(&path);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Refusal::Internal(format!("cannot write the token file: {e}")))?;
        file.write_all(token.as_bytes())
            .map_err(|e| Refusal::Internal(format!("cannot write the token file: {e}")))?;
        Ok(path)
    }

    /// Unmounts `target`, waits for its mount's process to exit, and
    /// removes the target (idempotent: nothing there is success).
    pub fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), Refusal> {
        let _claim = self.claim(target)?;
        if let Some(record) = read_record(&self.record_path(target)) {
            if record.volume_id != volume_id {
                return Err(Refusal::NotFound(format!(
                    "{} holds volume {:?}, not {volume_id:?}",
                    target.display(),
                    record.volume_id
                )));
            }
        }
        let serving = serving_processes(target);
        if is_mounted(target) {
            if let Err(busy) = crate::mount::unmount(target, false) {
                tracing::info!("{busy}; detaching it lazily");
                crate::mount::unmount(target, true).map_err(Refusal::Internal)?;
            }
        }
        wait_for_exit(&serving, target);
        match fs::remove_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Refusal::Internal(format!(
                    "cannot remove {}: {e}",
                    target.display()
                )));
            }
        }
        for path in [
            self.record_path(target),
            self.token_path(target),
            self.log_path(target),
        ] {
            let _ = fs::remove_file(path);
        }
        self.launcher.tidy();
        tracing::info!(volume = volume_id, target = %target.display(), "unpublished");
        Ok(())
    }

    /// The shared cache as the volume's mount sees it, and whether the
    /// mount answers.
    pub fn usage(&self, volume_id: &str, path: &Path) -> Result<Usage, Refusal> {
        match read_record(&self.record_path(path)) {
            Some(record) if record.volume_id == volume_id => {}
            _ => {
                return Err(Refusal::NotFound(format!(
                    "volume {volume_id:?} is not published at {}",
                    path.display()
                )));
            }
        }
        if !is_mounted(path) {
            return Ok(Usage {
                abnormal: Some("not mounted: its mount's process has ended".into()),
                ..Usage::default()
            });
        }
        let stats = match fs::read(path.join(".matvisfs/stats.json")) {
            Ok(bytes) => bytes,
            Err(e) => {
                return Ok(Usage {
                    abnormal: Some(format!("the mount does not answer: {e}")),
                    ..Usage::default()
                });
            }
        };
        let stats: serde_json::Value = serde_json::from_slice(&stats)
            .map_err(|e| Refusal::Internal(format!("the mount's statistics do not parse: {e}")))?;
        let number = |pointer| stats.pointer(pointer).and_then(serde_json::Value::as_u64);
        Ok(Usage {
            bytes: number("/cache/bytes").unwrap_or(0),
            files: number("/cache/files").unwrap_or(0),
            cap: number("/cache/cap").unwrap_or(0),
            abnormal: None,
        })
    }
}

/// What a restarted plugin finds: each recorded volume, serving or not.
fn report_found(state: &Path) {
    let Ok(entries) = fs::read_dir(state.join("volumes")) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(record) = read_record(&entry.path()) else {
            continue;
        };
        let target = record.target_path.display();
        if answers(&record.target_path) {
            tracing::info!(volume = record.volume_id, %target, "found a published volume, serving");
        } else {
            tracing::warn!(
                volume = record.volume_id,
                %target,
                "found a published volume whose mount is gone; publishing it again mounts it"
            );
        }
    }
}

/// Whether a mount serves `target`: its process answers an open (the
/// kernel may answer a stat from what it cached, even of a dead mount).
fn answers(target: &Path) -> bool {
    is_mounted(target) && fs::File::open(target.join(".matvisfs/stats.json")).is_ok()
}

fn read_record(path: &Path) -> Option<Record> {
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(path = %path.display(), "an unreadable volume record: {e}");
            None
        }
    }
}

/// Whether `path` is a mount point in this mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = escape_mount_path(path);
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// A path as /proc/self/mountinfo writes it (space, tab, newline and
/// backslash in octal).
fn escape_mount_path(path: &Path) -> String {
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => escaped.push_str(&format!("\\{:03o}", c as u32)),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Whether process `pid` is a `matvisfs mount` of `target`.
fn serves(pid: u32, target: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.get(1) == Some(&b"mount".as_slice())
        && args.get(2) == Some(&target.as_os_str().as_encoded_bytes())
}

fn signal_all(pids: &[u32], signal: rustix::process::Signal) {
    for &pid in pids {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// Waits for the processes `pids` to stop serving `target` (a mount makes
/// its last downloads durable first); kills those left after `EXIT_WAIT`.
fn wait_for_exit(pids: &[u32], target: &Path) {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&pid| serves(pid, target))
            .collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(?alive, "the mount's process has not exited: killing it");
            signal_all(&alive, rustix::process::Signal::KILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes serving `target` (normally one).
fn serving_processes(target: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| serves(pid, target))
        .collect()
}

/// Volume ids of the records, for tests of the layout.
#[cfg(test)]
fn recorded(state: &Path) -> std::collections::HashMap<PathBuf, String> {
    fs::read_dir(state.join("volumes"))
        .unwrap()
        .flatten()
        .filter_map(|e| read_record(&e.path()))
        .map(|r| (r.target_path, r.volume_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_matched() {
        assert_eq!(escape_mount_path(Path::new("/a b\\c")), "/a\\040b\\134c");
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/proc/self")));
    }

    #[test]
    fn unpublishing_what_was_never_published_succeeds_and_a_busy_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(
            &dir.path().join("state"),
            &dir.path().join("cache"),
            0,
            None,
        )
        .unwrap();
        let target = dir.path().join("target");
        assert_eq!(volumes.unpublish("v", &target), Ok(()));
        fs::create_dir(&target).unwrap();
        assert_eq!(volumes.unpublish("v", &target), Ok(()));
        assert!(!target.exists());
        let _claim = volumes.claim(&target).unwrap();
        assert!(matches!(
            volumes.unpublish("v", &target),
            Err(Refusal::Aborted(_))
        ));
        assert!(recorded(&dir.path().join("state")).is_empty());
    }
}
