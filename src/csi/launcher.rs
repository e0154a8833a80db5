//! How the plugin starts a volume's mount: as a child of its own, or
//! through a launcher (`--mount-launcher`), a command prefix that runs the
//! mount outside the plugin's container, so that replacing the container
//! does not end it. Outside the container the container's files are not
//! there: the mount runs a copy of this program kept in the state
//! directory (a host path at the same place inside and outside), named by
//! its content, and removed once no process runs it any more.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// In the launcher's words, replaced by the name of the published target
/// (the digest naming its record and log), e.g. for a unit name.
pub const VOLUME_PLACEHOLDER: &str = "{volume}";

/// Where the copies of the program are, under the state directory.
const COPIES: &str = "bin";
const COPY_PREFIX: &str = "matvisfs-";

pub struct Launcher {
    /// The launcher's words; empty: the mount is a child of the plugin.
    prefix: Vec<String>,
    /// The program the mount runs.
    exe: PathBuf,
}

impl Launcher {
    /// Mounts run as children of the plugin, from its own executable.
    pub fn direct() -> Result<Launcher, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        Ok(Launcher {
            prefix: Vec::new(),
            exe,
        })
    }

    /// Mounts run through `prefix` (words split at white space), from a
    /// copy of this program under `state`; copies no process runs are
    /// removed.
    pub fn outside(prefix: &str, state: &Path) -> Result<Launcher, String> {
        let prefix: Vec<String> = prefix.split_whitespace().map(str::to_string).collect();
        if prefix.is_empty() {
            return Err("--mount-launcher is empty".into());
        }
        let exe = install_copy(&state.join(COPIES))?;
        remove_unused_copies(&state.join(COPIES), &exe);
        tracing::info!(launcher = prefix.join(" "), program = %exe.display(), "mounts start through the launcher");
        Ok(Launcher { prefix, exe })
    }

    /// The command that mounts the target named `volume`; its arguments
    /// follow.
    pub fn command(&self, volume: &str) -> Command {
        let Some((first, rest)) = self.prefix.split_first() else {
            return Command::new(&self.exe);
        };
        let mut command = Command::new(first.replace(VOLUME_PLACEHOLDER, volume));
        command
            .args(rest.iter().map(|w| w.replace(VOLUME_PLACEHOLDER, volume)))
            .arg(&self.exe);
        command
    }

    /// Removes the copies of earlier versions that no process runs any
    /// more (their last mount ended).
    pub fn tidy(&self) {
        if !self.prefix.is_empty() {
            if let Some(dir) = self.exe.parent() {
                remove_unused_copies(dir, &self.exe);
            }
        }
    }
}

/// Copies the running program into `dir` as `matvisfs-<sha256>` (written
/// whole, then renamed into place) unless that copy is there already;
/// returns its path.
fn install_copy(dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The running image itself, even if its file was replaced since.
    let source = Path::new("/proc/self/exe");
    let open = || fs::File::open(source).map_err(|e| format!("cannot read this program: {e}"));
    let mut hasher = Sha256::new();
    let mut reader = open()?;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| format!("cannot read this program: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let name: String = hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(format!("{COPY_PREFIX}{name}"));
    if path.is_file() {
        return Ok(path);
    }
    let partial = dir.join(format!(
        ".{COPY_PREFIX}{name}.partial-{}",
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&partial)?;
        std::io::copy(&mut open().map_err(std::io::Error::other)?, &mut file)?;
        file.flush()?;
        file.sync_all()?;
        fs::rename(&partial, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&partial);
        return Err(format!(
            "cannot copy this program to {}: {e}",
            path.display()
        ));
    }
    Ok(path)
}

/// Removes from `dir` every copy but `keep` that no process runs (a mount
/// runs its copy by full path: the copy is its command's first word), and
/// what an interrupted copy left.
fn remove_unused_copies(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let running = running_programs();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let partial_of_another =
            name.starts_with('.') && !name.ends_with(&format!(".partial-{}", std::process::id()));
        let unused = name.starts_with(COPY_PREFIX)
            && path != keep
            && !running.contains(path.as_os_str().as_encoded_bytes());
        if partial_of_another || unused {
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(program = %path.display(), "removed a copy no mount runs"),
                Err(e) => tracing::warn!(program = %path.display(), "cannot remove: {e}"),
            }
        }
    }
}

/// The first word of every process's command.
fn running_programs() -> std::collections::HashSet<Vec<u8>> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let first = cmdline.split(|&b| b == 0).next()?;
            Some(first.to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_comes_first_with_the_volume_named() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = Launcher::outside(
            "systemd-run --scope --unit=matvisfs-{volume} --",
            dir.path(),
        )
        .unwrap();
        let command = launcher.command("ab12");
        assert_eq!(command.get_program(), "systemd-run");
        let args: Vec<_> = command.get_args().collect();
        let exe = launcher.exe.as_os_str();
        assert_eq!(
            args,
            [
                "--scope".as_ref(),
                "--unit=matvisfs-ab12".as_ref(),
                "--".as_ref(),
                exe
            ]
        );
        assert!(Launcher::outside(" ", dir.path()).is_err());
        let direct = Launcher::direct().unwrap().command("ab12");
        assert_eq!(direct.get_args().count(), 0);
    }

    #[test]
    fn the_copy_is_this_program_named_by_its_content_and_unused_copies_go() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(COPIES);
        fs::create_dir_all(&bin).unwrap();
        // An earlier version's copy a process still runs, one none runs,
        // and what an interrupted copy left.
        let running = bin.join(format!("{COPY_PREFIX}0123"));
        fs::copy("/bin/sleep", &running).unwrap();
        let unused = bin.join(format!("{COPY_PREFIX}4567"));
        fs::write(&unused, b"old").unwrap();
        let partial = bin.join(format!(".{COPY_PREFIX}89ab.partial-1"));
        fs::write(&partial, b"half").unwrap();
        let mut sleeper = Command::new(&running).arg("60").spawn().unwrap();
        let sleeper_pid = sleeper.id();
        let guard = scopeguard(move || {
            // SAFETY: sending a signal has no memory effects.
            unsafe { libc::kill(sleeper_pid as i32, libc::SIGKILL) };
        });

        let launcher = Launcher::outside("launch", dir.path()).unwrap();
        let copy = fs::read(&launcher.exe).unwrap();
        assert_eq!(copy, fs::read("/proc/self/exe").unwrap());
        let digest = Sha256::digest(&copy);
        let name = launcher
            .exe
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        assert_eq!(name, format!("{COPY_PREFIX}{hex}"));
        assert!(running.exists(), "a copy a process runs is kept");
        assert!(!unused.exists() && !partial.exists());

        // Once its process ends, the next tidying removes it; the
        // plugin's own copy stays.
        drop(guard);
        sleeper.wait().unwrap();
        launcher.tidy();
        assert!(!running.exists());
        assert!(launcher.exe.exists());
        // Installing again reuses the copy.
        let again = Launcher::outside("launch", dir.path()).unwrap();
        assert_eq!(again.exe, launcher.exe);
    }

    /// Runs `f` when dropped (a sleeper killed even if the test fails).
    fn scopeguard(f: impl FnOnce()) -> impl Drop {
        struct Guard<F: FnOnce()>(Option<F>);
        impl<F: FnOnce()> Drop for Guard<F> {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f()
                }
            }
        }
        Guard(Some(f))
    }
}
