//! The calling convention of mount(8)'s helpers, so that matvisfs mounts
//! from `/etc/fstab` as sshfs does: mount(8) runs `mount.fuse3`, which runs
//! `matvisfs SOURCE MOUNTPOINT -o OPTIONS` (the program named by the type
//! `fuse.matvisfs`, found on mount(8)'s own `PATH`, or named in the source
//! as `/path/to/matvisfs#SOURCE` with the type `fuse`).
//!
//! SOURCE is the tag, or several separated by commas. Every long flag of
//! `matvisfs mount` is an option (`base-url=URL`, `cache-dir=DIR`,
//! `allow_other`; `-` and `_` alike), taken from clap's own definition of
//! the command; the generic mount options are ignored (the mount is always
//! read-only, nodev, nosuid and noatime: mount(8) adds `rw` for `defaults`,
//! and mount.fuse3 `dev` and `suid`); an option matvisfs does not know fails
//! the mount with its name. The call becomes `matvisfs mount MOUNTPOINT
//! --tag ... --flag value...`, which goes to the background and returns
//! once the mount serves, as mount(8) expects of a helper.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::{ArgAction, CommandFactory};

use crate::cli::Cli;

/// Generic mount options, handled by mount(8), mount.fuse3 or the kernel's
/// defaults matvisfs always uses.
const IGNORED: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "default_permissions",
];

/// Options given for mount(8) or systemd, never for the helper:
/// `x-systemd.automount`, `comment=...`.
fn ignored(option: &str) -> bool {
    IGNORED.contains(&option)
        || option.starts_with("x-")
        || option.starts_with("X-")
        || option.starts_with("comment=")
}

/// Whether `argv` is a helper's call: a first argument that is neither a
/// command nor a flag, and a second that exists (the mountpoint, possibly
/// a dead mount).
fn is_helper_call(argv: &[OsString]) -> bool {
    let (Some(first), Some(second)) = (argv.get(1), argv.get(2)) else {
        return false;
    };
    let first = first.to_string_lossy();
    if first.starts_with('-') || first == "help" {
        return false;
    }
    let command = Cli::command();
    if command
        .get_subcommands()
        .any(|c| c.get_name() == first || c.get_all_aliases().any(|a| a == first))
    {
        return false;
    }
    match std::fs::symlink_metadata(Path::new(second)) {
        Ok(_) => true,
        Err(e) => crate::fuse::is_dead_mount(&e),
    }
}

/// Splits `-o` options at commas outside double quotes, removing the quotes.
fn split_options(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// The arguments of `matvisfs mount` an option stands for.
fn flag_for(option: &str) -> Result<Vec<String>, String> {
    let (name, value) = match option.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    let long = name.replace('_', "-");
    let command = Cli::command();
    let mount = command
        .find_subcommand("mount")
        .expect("the mount command exists");
    let Some(arg) = mount
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .find(|a| a.get_long() == Some(long.as_str()))
    else {
        return Err(format!(
            "unknown mount option {option:?}: matvisfs takes the long flags of `matvisfs mount` \
             (see `matvisfs mount --help`) and the generic mount options"
        ));
    };
    let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    match (takes_value, value) {
        (true, Some(value)) => Ok(vec![format!("--{long}"), value.to_string()]),
        (true, None) => Err(format!("mount option {name:?} needs a value: {name}=...")),
        (false, None) => Ok(vec![format!("--{long}")]),
        (false, Some(_)) => Err(format!("mount option {name:?} takes no value")),
    }
}

/// `argv` as `matvisfs mount` arguments when it is a helper's call; `None`
/// for any other command line.
pub fn translate(argv: &[OsString]) -> Option<Result<Vec<OsString>, String>> {
    if !is_helper_call(argv) {
        return None;
    }
    Some(translate_call(argv))
}

fn translate_call(argv: &[OsString]) -> Result<Vec<OsString>, String> {
    let source = argv[1].to_string_lossy().into_owned();
    let mountpoint = &argv[2];
    if mountpoint.as_encoded_bytes().starts_with(b"/dev/fd/") {
        return Err(
            "mount option \"drop_privileges\" is not supported: matvisfs mounts by itself".into(),
        );
    }
    let mut out: Vec<OsString> = vec![argv[0].clone(), "mount".into(), mountpoint.clone()];
    for tag in source.split(',') {
        if tag.is_empty() {
            return Err(format!(
                "source {source:?} is not a tag or a list of tags separated by commas"
            ));
        }
        out.extend(["--tag".into(), tag.into()]);
    }
    let mut rest = argv[3..].iter();
    while let Some(arg) = rest.next() {
        let bytes = arg.as_encoded_bytes();
        let options = if arg == OsStr::new("-o") {
            match rest.next() {
                Some(options) => options.to_string_lossy().into_owned(),
                None => return Err("-o needs options".into()),
            }
        } else if let Some(joined) = bytes.strip_prefix(b"-o") {
            String::from_utf8_lossy(joined).into_owned()
        } else {
            return Err(format!(
                "unexpected argument {:?}: a mount helper is called as \
                 `matvisfs SOURCE MOUNTPOINT -o OPTIONS`",
                arg.to_string_lossy()
            ));
        };
        for option in split_options(&options) {
            if !ignored(&option) {
                out.extend(flag_for(&option)?.into_iter().map(OsString::from));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn call(args: &[&str]) -> Option<Result<Vec<String>, String>> {
        let dir = std::env::temp_dir();
        let argv: Vec<OsString> = std::iter::once("matvisfs")
            .chain(args.iter().copied())
            .map(|a| a.replace("MNT", dir.to_str().unwrap()).into())
            .collect();
        translate(&argv).map(|r| {
            r.map(|v| {
                v.into_iter()
                    .map(|a| a.to_string_lossy().replace(dir.to_str().unwrap(), "MNT"))
                    .collect()
            })
        })
    }

    #[test]
    fn a_helper_call_becomes_a_mount() {
        let args = call(&[
            "v2026.04.2,v2026.05.0-rc1",
            "MNT",
            "-o",
            "rw,allow_other,base-url=http://m/x,cache_dir=/var/cache/m,revalidate-every=1h,dev,suid",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            args,
            [
                "matvisfs",
                "mount",
                "MNT",
                "--tag",
                "v2026.04.2",
                "--tag",
                "v2026.05.0-rc1",
                "--allow-other",
                "--base-url",
                "http://m/x",
                "--cache-dir",
                "/var/cache/m",
                "--revalidate-every",
                "1h",
            ]
        );
        // What clap makes of it is a mount.
        let cli = Cli::try_parse_from(&args).unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Mount(_)));
        // Every generic option is ignored, and -o may be joined or repeated.
        let args = call(&[
            "v1",
            "MNT",
            "-oro,noatime,nodev,nosuid,_netdev,nofail,x-systemd.automount,defaults",
            "-o",
            "tag=v2,verbose,verbose",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            args[3..],
            ["--tag", "v1", "--tag", "v2", "--verbose", "--verbose"]
        );
        // A commit alone, as a pipeline pins it.
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let args = call(&[commit, "MNT", "-o", "ro,commits-only"])
            .unwrap()
            .unwrap();
        assert_eq!(args[3..], ["--tag", commit, "--commits-only"]);
        let cli = Cli::try_parse_from(&args).unwrap();
        let crate::cli::Command::Mount(mount) = cli.command else {
            panic!("not a mount");
        };
        assert!(mount.commits_only);
    }

    #[test]
    fn an_unknown_option_fails_with_its_name() {
        for (options, named) in [
            ("ro,colour=red", "colour"),
            ("uid=1000", "uid"),
            ("base-url", "base-url"),
            ("allow_other=yes", "allow_other"),
        ] {
            let error = call(&["v1", "MNT", "-o", options]).unwrap().unwrap_err();
            assert!(error.contains(named), "{options}: {error}");
        }
        assert!(call(&["v1", "MNT", "-x"]).unwrap().is_err());
        assert!(call(&["v1,,v2", "MNT"]).unwrap().is_err());
    }

    #[test]
    fn commands_and_typos_are_not_helper_calls() {
        assert!(call(&["mount", "MNT"]).is_none());
        assert!(call(&["refresh", "MNT"]).is_none());
        assert!(call(&["--help"]).is_none());
        assert!(call(&["v1"]).is_none());
        assert!(call(&["mout", "/no/such/dir"]).is_none());
    }
}
