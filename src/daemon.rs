//! Running in the background: the command forks, the child mounts and
//! serves, and the parent exits only once the child says the mount is
//! ready (status 0) or failed (its message, status 1).

use std::fs::File;
use std::io::{Read, Write};

/// The child's line back to the waiting parent.
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// Nobody waits: the process stays in the foreground.
    pub fn foreground() -> Self {
        Readiness { pipe: None }
    }

    /// Tells the parent how mounting went; only the first report counts.
    pub fn report(&mut self, outcome: Result<(), &str>) {
        if let Some(mut pipe) = self.pipe.take() {
            let line = match outcome {
                Ok(()) => "ok\n".to_string(),
                Err(msg) => format!("error {}\n", msg.replace('\n', " ")),
            };
            let _ = pipe.write_all(line.as_bytes());
        }
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
            })
        }
        _child => {
            drop(write_end);
            let mut report = String::new();
            let _ = File::from(read_end).read_to_string(&mut report);
            match report.lines().next() {
                Some("ok") => {
                    on_ready();
                    std::process::exit(0)
                }
                Some(line) => {
                    let msg = line.strip_prefix("error ").unwrap_or(line);
                    eprintln!("matvisfs: {msg}");
                    std::process::exit(1)
                }
                None => {
                    eprintln!("matvisfs: the background process exited before the mount was ready");
                    std::process::exit(1)
                }
            }
        }
    }
}
