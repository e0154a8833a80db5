use std::process::ExitCode;

use clap::Parser;
use matvisfs::cli::{Cli, Command};

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `matvisfs SOURCE MOUNTPOINT -o OPTIONS`, as mount(8) calls helpers.
    let argv = match matvisfs::mount_helper::translate(&argv) {
        None => argv,
        Some(Ok(mount)) => mount,
        Some(Err(msg)) => {
            eprintln!("matvisfs: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    if matches!(
        cli.command,
        Command::Cache(_) | Command::Unmount(_) | Command::Refresh(_)
    ) {
        // Reports piped into `head` end quietly, like other tools' output;
        // commands that use the network keep SIGPIPE ignored.
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Refresh(args) => return matvisfs::control::refresh(args),
        Command::Mount(args) => matvisfs::mount::run(args),
        Command::Unmount(args) => matvisfs::mount::unmount(&args.mountpoint, args.lazy),
        Command::Demo(args) => matvisfs::demo::run(args),
        Command::Prefetch(args) => matvisfs::prefetch::run(args),
        Command::Cache(command) => matvisfs::cache_commands::run(command),
        Command::Csi(args) => matvisfs::csi::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("matvisfs: {msg}");
            ExitCode::FAILURE
        }
    }
}
