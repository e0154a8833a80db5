//! `matvisfs demo`: a generated sample release, written to a temporary
//! directory and mounted from there through a `file://` base URL, like a
//! local copy of the real dataset. No network and no server needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use matvisfs_sample::{Release, ReleaseSpec};
use url::Url;

use crate::cli::{DEFAULT_TAG, DemoArgs};
use crate::dataset::Context;
use crate::mount::{finish, load_and_serve, prepare_mountpoint, start};
use crate::remote::local::LocalRemote;
use crate::store::CacheDir;

pub fn run(args: DemoArgs) -> Result<(), String> {
    if !args.run.foreground {
        crate::daemon::close_inherited_descriptors();
    }
    let requested = args
        .mountpoint
        .clone()
        .unwrap_or_else(|| PathBuf::from("mat-vis-demo"));
    // Only a missing directory is created: one left dead by a killed
    // demo fails every check but this one, and is recovered below.
    let created = match fs::symlink_metadata(&requested) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(&requested)
                .map_err(|e| format!("cannot create {}: {e}", requested.display()))?;
            true
        }
        _ => false,
    };
    let result = demo(&args, &requested);
    if result.is_err() && created {
        // Nothing left behind by a demo that did not start.
        let _ = fs::remove_dir(&requested);
    }
    result
}

fn demo(args: &DemoArgs, requested: &Path) -> Result<(), String> {
    let mountpoint = prepare_mountpoint(requested, args.run.nonempty)?;
    remove_killed_demos();
    // Dataset and cache live in a temporary directory that goes with the
    // process; its name says which process, for when it is killed.
    let work = tempfile::Builder::new()
        .prefix(&format!("{WORK_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let data = work.path().join("data");
    let release = Release::generate(&ReleaseSpec::sample(DEFAULT_TAG, args.materials));
    release
        .write_to(&data)
        .map_err(|e| format!("cannot write the sample release: {e}"))?;
    let base = Url::from_directory_path(&data)
        .map_err(|()| format!("{} cannot be a file:// URL", data.display()))?;
    let cache = CacheDir::open(&work.path().join("cache"))?;
    // Not in the temporary directory: the log outlives the demo.
    let log_file = args
        .run
        .log_file
        .clone()
        .unwrap_or_else(|| log_beside(&mountpoint));
    let textures = release.textures().count();

    let hint = |mp: &Path| {
        println!(
            "Mounted a generated sample release ({textures} textures) at {}",
            mp.display()
        );
        println!("  try:  ls {}/{DEFAULT_TAG}/ambientcg/1k", mp.display());
        println!(
            "        cat {}/{DEFAULT_TAG}/release-manifest.json",
            mp.display()
        );
    };
    if args.run.foreground {
        hint(&mountpoint);
        println!("Press Ctrl-C to unmount.");
    }
    let mut readiness = start(&args.run, &log_file, false, || {
        hint(&mountpoint);
        // The binary may not be on PATH (~/.local/bin often is not).
        println!(
            "Stop it with:  {} unmount {}",
            crate::cli::program(),
            mountpoint.display()
        );
        println!("Its log:       {}", log_file.display());
    })?;
    let result = (|| {
        tracing::info!(%base, "mounting the sample release");
        let remote = LocalRemote::new(base.as_str())?;
        // The sample is small: no cap needed.
        let ctx = Context::new(Arc::new(remote), cache, 0).raw(args.run.raw);
        let tags = vec![DEFAULT_TAG.to_string()];
        load_and_serve(ctx, tags, &mountpoint, &args.run, &mut readiness)
    })();
    drop(work);
    finish(result, &mut readiness)
}

/// A demo's temporary directory: `<prefix><pid>-<random>`.
const WORK_PREFIX: &str = "matvisfs-demo-";

/// Removes the temporary directories of demos that were killed (their
/// process is gone), which nothing else would.
fn remove_killed_demos() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(WORK_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        let mine = entry
            .metadata()
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == me);
        if mine && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(dir = %entry.path().display(), "removing a killed demo's files");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `<mountpoint>.log`, next to the mountpoint.
fn log_beside(mountpoint: &Path) -> PathBuf {
    let name = mountpoint
        .file_name()
        .map_or("matvisfs-demo".into(), |n| n.to_string_lossy());
    mountpoint.with_file_name(format!("{name}.log"))
}
