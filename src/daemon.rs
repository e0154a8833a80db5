//! Running in the background: the command forks, the child mounts and
//! serves, and the parent exits only once the child says the mount is
//! ready (status 0) or failed (its message, status 1).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};

/// The child's lines back to the waiting parent: `note <text>` while it
/// gets ready, then `ok`, or `error <text>` for each line of the reason.
pub struct Readiness {
    pipe: Option<File>,
    foreground: bool,
}

impl Readiness {
    /// Nobody waits: the process stays in the foreground.
    pub fn foreground() -> Self {
        Readiness {
            pipe: None,
            foreground: true,
        }
    }

    /// Whether the process logs to the terminal (no parent waits).
    pub fn is_foreground(&self) -> bool {
        self.foreground
    }

    /// Says something to whoever waits for the mount, while it gets ready:
    /// in the log, and on the terminal of the waiting command.
    pub fn note(&self, line: &str) {
        tracing::warn!("{line}");
        if let Some(mut pipe) = self.pipe.as_ref() {
            let _ = pipe.write_all(format!("note {}\n", line.replace('\n', " ")).as_bytes());
        }
    }

    /// Tells the parent how mounting went; only the first report counts.
    /// False when a parent waited and is gone (its command interrupted)
    /// before it heard.
    pub fn report(&mut self, outcome: Result<(), &str>) -> bool {
        let Some(mut pipe) = self.pipe.take() else {
            return true;
        };
        let text = match outcome {
            Ok(()) => "ok\n".to_string(),
            Err(msg) => msg.lines().map(|line| format!("error {line}\n")).collect(),
        };
        pipe.write_all(text.as_bytes()).is_ok()
    }

    /// Whether the parent that waited for the mount is gone: its command
    /// was interrupted (Ctrl-C) while the mount got ready, and nobody
    /// expects the mount any more.
    pub fn waiter_gone(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let Some(pipe) = &self.pipe else {
            return false;
        };
        let mut fds = [PollFd::new(pipe, PollFlags::OUT)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(1))
            && fds[0].revents().contains(PollFlags::ERR)
    }
}

/// Closes the descriptors the process was started with beyond stdin,
/// stdout and stderr (a shell's `exec 9>`, the lock `flock` holds while it
/// runs a command): a daemon that outlives its command must not keep a
/// lock or a pipe's end of its caller's for as long as the mount lives.
/// Call before the process opens anything of its own.
pub fn close_inherited_descriptors() {
    // SAFETY: nothing of this process's own is open yet above stderr.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed == 0 {
        return;
    }
    // Kernels before 5.9 have no close_range: one at a time.
    let Ok(listing) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let inherited: Vec<libc::c_int> = listing
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in inherited {
        // SAFETY: as above; the listing's own descriptor is closed already.
        unsafe { libc::close(fd) };
    }
}

/// Forks. Returns in the child (detached from the terminal, stdio on
/// /dev/null); the parent waits for the child's report, runs `on_ready` if
/// it is good, and exits. Must be called before any thread is started.
pub fn detach(on_ready: impl FnOnce()) -> Result<Readiness, String> {
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the process is still single-threaded.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: plain syscalls on our own process and descriptors.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                    if null > 2 {
                        libc::close(null);
                    }
                }
            }
            Ok(Readiness {
                pipe: Some(File::from(write_end)),
                foreground: false,
            })
        }
        _child => {
            drop(write_end);
            let mut error = Vec::new();
            for line in BufReader::new(File::from(read_end)).lines() {
                let Ok(line) = line else { break };
                if line == "ok" {
                    on_ready();
                    std::process::exit(0)
                }
                if let Some(note) = line.strip_prefix("note ") {
                    eprintln!("matvisfs: {note}");
                } else {
                    error.push(line.strip_prefix("error ").unwrap_or(&line).to_string());
                }
            }
            match error.split_first() {
                Some((first, rest)) => {
                    eprintln!("matvisfs: {first}");
                    for line in rest {
                        eprintln!("{line}");
                    }
                }
                None => {
                    eprintln!("matvisfs: the background process exited before the mount was ready")
                }
            }
            std::process::exit(1)
        }
    }
}
