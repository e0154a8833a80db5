//! Log output: stderr in the foreground, a file in the background.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// The filter for `-v` counts; `MATVISFS_LOG` replaces it when set.
fn filter(verbose: u8) -> EnvFilter {
    if let Ok(spec) = std::env::var("MATVISFS_LOG") {
        if let Ok(filter) = EnvFilter::try_new(spec) {
            return filter;
        }
    }
    EnvFilter::new(match verbose {
        0 => "matvisfs=info,fuser=warn,warn",
        1 => "matvisfs=debug,fuser=info,info",
        _ => "matvisfs=trace,fuser=debug,debug",
    })
}

pub fn to_stderr(verbose: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn to_file(verbose: u8, path: &Path) -> Result<(), String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose))
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init();
    Ok(())
}
