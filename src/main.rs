use std::process::ExitCode;

use clap::Parser;
use matvisfs::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => matvisfs::mount::run(args),
        Command::Unmount(args) => matvisfs::mount::unmount(&args.mountpoint, args.lazy),
        Command::Demo(args) => matvisfs::demo::run(args),
        Command::Prefetch(args) => matvisfs::prefetch::run(args),
        Command::Cache(command) => matvisfs::cache_commands::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("matvisfs: {msg}");
            ExitCode::FAILURE
        }
    }
}
