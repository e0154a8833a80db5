//! Python tools for the tests, installed from PyPI into venvs kept under
//! target/, so that only the first run pays for the download.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `command` with a home of its own at `home`: Blender (`bpy`), even
/// when only imported, keeps settings and thumbnails in the user's home.
pub fn own_home<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
}

/// A venv's python that can import every module of `modules`, after
/// installing `packages` into it if needed; the reason when that fails.
pub fn venv_with(name: &str, packages: &[&str], modules: &[&str]) -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin/python");
    let import = format!("import {}", modules.join(", "));
    let home = tempfile::tempdir().map_err(|e| format!("no temporary home: {e}"))?;
    let importable = |python: &Path| {
        own_home(&mut Command::new(python), home.path())
            .args(["-c", &import])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable(&python) {
        return Ok(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("no python3: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv failed: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let installed = Command::new(venv.join("bin/pip"))
        // No download cache in the user's home: the venv is the cache.
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-cache-dir",
        ])
        .args(packages)
        .output()
        .map_err(|e| format!("pip did not run: {e}"))?;
    if !installed.status.success() || !importable(&python) {
        return Err(format!(
            "pip could not install {}: {}",
            packages.join(" "),
            String::from_utf8_lossy(&installed.stderr)
        ));
    }
    Ok(python)
}

/// MaterialX (1.39) and usd-core.
pub fn materialx_and_usd() -> Result<PathBuf, String> {
    venv_with(
        "materials-venv",
        &["materialx>=1.39,<1.40", "usd-core"],
        &["MaterialX", "pxr.Usd", "pxr.UsdShade"],
    )
}
