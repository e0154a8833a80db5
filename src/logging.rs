//! Log output: stderr in the foreground, a file in the background.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// How much a mount logs by default: revalidation outcomes and changes.
pub const MOUNT_LEVEL: u8 = 1;

/// The filter for a level (0 warnings, 1 info, 2 debug, 3 trace);
/// `MATVISFS_LOG` replaces it when set.
fn filter(level: u8) -> EnvFilter {
    if let Ok(spec) = std::env::var("MATVISFS_LOG") {
        if let Ok(filter) = EnvFilter::try_new(spec) {
            return filter;
        }
    }
    EnvFilter::new(match level {
        0 => "warn",
        1 => "matvisfs=info,fuser=warn,warn",
        2 => "matvisfs=debug,fuser=info,info",
        _ => "matvisfs=trace,fuser=debug,debug",
    })
}

pub fn to_stderr(level: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn to_file(level: u8, path: &Path) -> Result<(), String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init();
    Ok(())
}
