//! Command-line interface. Names of commands, flags and environment
//! variables are part of the interface: scripts depend on them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::environment::Named;
use crate::remote::http::{HttpSettings, Secret};
use crate::remote::{RateLimits, RetryPolicy};

pub const DEFAULT_REPO: &str = "gerchowl/mat-vis";
pub const DEFAULT_HUB: &str = "https://huggingface.co";
/// The reference client's default release.
pub const DEFAULT_TAG: &str = "v2026.04.2";
/// Where `matvisfs csi` keeps what it knows of its volumes.
pub const DEFAULT_STATE_DIR: &str = "/run/matvisfs-csi";
/// `--timeout` when not given: the bound on one attempt of a download.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How hints name this program: `matvisfs` when that is what `PATH`
/// finds, else its full path (`~/.local/bin` is often not on `PATH`).
pub fn program() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "matvisfs".into();
    };
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("matvisfs"))
            .find(|candidate| candidate.is_file())
    });
    let same = |a: &std::path::Path, b: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    };
    match found {
        Some(first) if same(&first, &exe) => "matvisfs".into(),
        _ => exe.display().to_string(),
    }
}

const ABOUT: &str = "Mount the mat-vis PBR texture dataset as a read-only filesystem";

const LONG_ABOUT: &str = "\
Mount the mat-vis PBR texture dataset as a read-only filesystem.

<MOUNTPOINT>/<tag>/<source>/<tier>/<material>/<channel>.png (or .ktx2) are plain
files backed by the release manifest and the catalogs. Listing needs no texture
download and sizes are exact before the first read. The first open under a tag
in a mount session revalidates its manifest with one conditional request; file
content is downloaded on first read and kept in a disk cache.";

const ENVIRONMENT: &str = "\
Environment:
  MAT_VIS_DATASET         <owner>/<name>@<tag>: the repository (as --repo) and the tag
  MAT_VIS_HF_DATASET      the repository (as --repo), unless MAT_VIS_DATASET names one
  MAT_VIS_TAG             the tag (as --tag), unless MAT_VIS_DATASET names one
  MAT_VIS_HF_BASE         base URL (as --base-url), unless a repository is named above
  HF_ENDPOINT             as --hf-endpoint
  MATVISFS_HF_LIMITS      as --hf-limits
  MATVISFS_CACHE_DIR      cache directory (as --cache-dir)
  XDG_CACHE_HOME          default cache directory is $XDG_CACHE_HOME/matvisfs
  MATVISFS_CACHE_MAX_SIZE as --cache-max-size
  MATVISFS_TIMEOUT        as --timeout
  MATVISFS_MAX_FILE_SIZE  as --max-file-size
  HF_TOKEN                access token for a private dataset (see --token-file)
  MATVISFS_CA_FILE        as --ca-file
  HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY
                          proxies, read as curl does
  MAT_VIS_MAX_RETRIES     as --retries
  MAT_VIS_BACKOFF_BASE    as --backoff-base
  MAT_VIS_RETRY_MAX_WAIT  as --retry-max-wait
  MATVISFS_LOG_FILE       as --log-file
  MATVISFS_REVALIDATE_EVERY as --revalidate-every
  MATVISFS_RUNTIME_DIR    where mounts keep their control sockets (see refresh)
  MATVISFS_LOG            log filter, e.g. `matvisfs=debug` (overrides -v)";

#[derive(Debug, Parser)]
#[command(name = "matvisfs", version, about = ABOUT, long_about = LONG_ABOUT, after_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount dataset revisions at MOUNTPOINT.
    #[command(after_help = ENVIRONMENT)]
    Mount(MountArgs),
    /// Unmount a matvisfs mount (`fusermount3 -u` and `umount` work too).
    Unmount(UnmountArgs),
    /// Revalidate the tags of a running mount now, as if a new session
    /// began (SIGHUP to its process does the same for every tag).
    Refresh(RefreshArgs),
    /// Generate a small sample release in a temporary directory and mount
    /// it from there, as a local copy of the dataset. Needs no network and
    /// no server: a way to see matvisfs work in seconds.
    #[command(mut_arg("log_file", |arg| arg.help(
        "Log file of a background demo [default: <MOUNTPOINT>.log, beside the mountpoint]"
    )))]
    Demo(DemoArgs),
    /// Download a selection of textures into the cache, for offline use.
    #[command(after_help = ENVIRONMENT)]
    Prefetch(PrefetchArgs),
    /// Inspect, check or empty the cache (safe while mounts use it).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Serve a Kubernetes CSI node plugin: each published volume is a
    /// read-only mount of its own, every one on the node sharing one cache.
    Csi(CsiArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CsiArgs {
    /// The gRPC socket the kubelet and the registrar talk to, as
    /// unix:///PATH (or a plain path).
    #[arg(long, env = "CSI_ENDPOINT", value_name = "unix:///PATH")]
    pub endpoint: String,

    /// This node's name, as NodeGetInfo reports it (the Kubernetes node
    /// name, from the downward API).
    #[arg(long, env = "KUBE_NODE_NAME", value_name = "NODE")]
    pub node_id: String,

    /// Where the plugin keeps what it knows of each published volume, its
    /// mount's log and, briefly, its token (created with mode 0700). A
    /// restarted plugin finds its volumes here. Should not outlive a reboot
    /// (the mounts do not): a tmpfs such as /run.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,

    /// The node's cache, shared by every volume; --cache-max-size is the
    /// cap of a volume that names none (`cacheMaxSize`).
    #[command(flatten)]
    pub cache: CacheArgs,

    /// A command prefix (words split at white space) that starts each
    /// volume's mount outside the plugin's container, so that replacing
    /// the container does not end the mounts: the plugin runs `PREFIX
    /// <copy of itself> mount <target> ...`, the copy kept in the state
    /// directory, and `{volume}` in a word names the target (e.g. `nsenter
    /// --target 1 --mount --net --pid --cgroup -- systemd-run --scope
    /// --collect --quiet --unit=matvisfs-{volume} --`: a scope of the
    /// host's systemd). Unset: each mount is a child of the plugin, in its
    /// container.
    #[arg(long, env = "MATVISFS_MOUNT_LAUNCHER", value_name = "PREFIX")]
    pub mount_launcher: Option<String>,

    /// More log detail: -v debug, -vv trace (MATVISFS_LOG overrides).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Bytes and files per tag, source and tier; total against the cap;
    /// what deduplication saves.
    Status(CacheArgs),
    /// Re-hash every cached file and remove those whose bytes are wrong.
    Verify(CacheArgs),
    /// Remove cached content: all of it, or what only --tag uses.
    Clear(ClearArgs),
}

/// Where the cache is and how big it may grow.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Cache directory (created with mode 0700)
    /// [default: $XDG_CACHE_HOME/matvisfs, else ~/.cache/matvisfs]
    #[arg(long, env = "MATVISFS_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Most bytes of texture content to keep; the least recently used goes
    /// first (e.g. 5GB, 500MB, 1.5GiB; 0: no limit). Manifests, catalogs and
    /// remembered sizes are small and always kept.
    #[arg(
        long,
        env = "MATVISFS_CACHE_MAX_SIZE",
        default_value = "5GB",
        value_name = "SIZE",
        value_parser = crate::size::parse_size
    )]
    pub cache_max_size: u64,
}

impl CacheArgs {
    /// The cache directory: the flag, then MATVISFS_CACHE_DIR (both handled
    /// by clap), then the XDG default.
    pub fn dir(&self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.cache_dir {
            return Ok(dir.clone());
        }
        let xdg = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        let base = match xdg {
            Some(dir) => dir,
            None => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache"))
                .ok_or("neither --cache-dir, MATVISFS_CACHE_DIR, XDG_CACHE_HOME nor HOME is set")?,
        };
        Ok(base.join("matvisfs"))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ClearArgs {
    /// Only what this tag uses and no other tag does (the tag of every
    /// origin, unless --base-url names one).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// With --tag: only the tag of the server at this base URL.
    #[arg(long, value_name = "URL", requires = "tag")]
    pub base_url: Option<String>,

    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PrefetchArgs {
    /// Release tag; repeat for several [default: MAT_VIS_TAG, or the tag
    /// of MAT_VIS_DATASET, else v2026.04.2].
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Only these sources (repeatable) [default: all with textures].
    #[arg(long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,

    /// Only these tiers (repeatable) [default: all].
    #[arg(long = "tier", value_name = "TIER")]
    pub tiers: Vec<String>,

    /// Downloads at once.
    #[arg(long, short = 'j', default_value_t = 8, value_name = "N")]
    pub jobs: usize,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// More log detail: -v debug, -vv trace (MATVISFS_LOG overrides).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

/// Where the data comes from and how hard to try.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Dataset base URL: a file is <URL>/<tag>/<path>. Any static HTTP server
    /// with that layout is a valid mirror [default: MAT_VIS_HF_BASE unless
    /// the environment names a repository, else
    /// <hf-endpoint>/datasets/<repo>/resolve, that is
    /// https://huggingface.co/datasets/gerchowl/mat-vis/resolve].
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// The Hugging Face dataset repository to mount [default: the one
    /// MAT_VIS_DATASET or MAT_VIS_HF_DATASET names, else gerchowl/mat-vis].
    /// Not with --base-url, which names the dataset itself.
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,

    /// The Hugging Face Hub the repository is on (a mirror of the Hub works).
    #[arg(long, env = "HF_ENDPOINT", default_value = DEFAULT_HUB, value_name = "URL")]
    pub hf_endpoint: String,

    /// Do not use the Hugging Face API (release list, sizes of whole tiers)
    /// even where the base URL is on a Hub; every size then costs a HEAD.
    #[arg(long)]
    pub no_hf_api: bool,

    /// Pace requests to a Hugging Face Hub to at most RESOLVES file requests
    /// and API calls per 5 minutes (its anonymous limits); `off` for no
    /// pacing (a mirror without limits, or a token with higher ones).
    #[arg(
        long,
        env = "MATVISFS_HF_LIMITS",
        default_value = "3000,500",
        value_name = "RESOLVES,API"
    )]
    pub hf_limits: RateLimits,

    /// Never use the network: serve what is cached, fail the rest with EIO.
    #[arg(long)]
    pub offline: bool,

    /// Time limit of one HTTP attempt (connecting, headers and body)
    /// [default: 60]. A first contact (a tag, catalog or list of releases
    /// nothing is cached of) waits 30 s in all, retries included, or this
    /// long when it is given.
    #[arg(long, env = "MATVISFS_TIMEOUT", value_name = "SECONDS")]
    pub timeout: Option<u64>,

    /// Retries after a transient failure (HTTP 429, 502, 503, 504, or no
    /// connection), with exponential backoff or the server's Retry-After.
    #[arg(
        long,
        env = "MAT_VIS_MAX_RETRIES",
        default_value_t = 3,
        value_name = "N"
    )]
    pub retries: u32,

    /// First backoff wait; doubled on each retry.
    #[arg(
        long,
        env = "MAT_VIS_BACKOFF_BASE",
        default_value_t = 0.5,
        value_name = "SECONDS"
    )]
    pub backoff_base: f64,

    /// Upper bound on any single wait between retries, Retry-After included.
    #[arg(
        long,
        env = "MAT_VIS_RETRY_MAX_WAIT",
        default_value_t = 60.0,
        value_name = "SECONDS"
    )]
    pub retry_max_wait: f64,

    /// Files larger than this are refused, whatever the server announces or
    /// sends.
    #[arg(
        long,
        env = "MATVISFS_MAX_FILE_SIZE",
        default_value = "2GiB",
        value_name = "SIZE",
        value_parser = crate::size::parse_size
    )]
    pub max_file_size: u64,

    /// A file holding an access token for a private dataset (HF_TOKEN holds
    /// one too). It is sent only to the base URL's host, only over HTTPS,
    /// never to a host a redirect points to, and never logged.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Extra certificate authorities to trust (PEM), beside the system's.
    #[arg(long, env = "MATVISFS_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl RemoteArgs {
    /// The base URL: `--base-url`, else the repository of `--repo` on the
    /// Hub, else what the environment names (see `crate::environment`),
    /// else the default repository.
    pub fn base_url(&self) -> Result<String, String> {
        self.base_url_in(&Named::read()?)
    }

    fn base_url_in(&self, env: &Named) -> Result<String, String> {
        if let Some(base) = &self.base_url {
            return match &self.repo {
                Some(_) => Err("--repo and --base-url both name the dataset: give one".into()),
                None => Ok(base.clone()),
            };
        }
        let (repo, given_by) = match (&self.repo, &env.repo, &env.base) {
            (Some(repo), _, _) => (repo.as_str(), "--repo"),
            (None, Some((repo, variable)), _) => (repo.as_str(), *variable),
            (None, None, Some(base)) => return Ok(base.clone()),
            (None, None, None) => (DEFAULT_REPO, "--repo"),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => Ok(format!(
                "{}/datasets/{owner}/{name}/resolve",
                self.hf_endpoint.trim_end_matches('/')
            )),
            _ => Err(format!("{given_by} {repo:?} is not OWNER/NAME")),
        }
    }

    pub fn http_settings(&self) -> Result<HttpSettings, String> {
        let seconds = |s: f64| Duration::from_secs_f64(s.max(0.0));
        let given = self.timeout.map(|t| Duration::from_secs(t.max(1)));
        let retry = RetryPolicy {
            max_retries: self.retries,
            backoff_base: seconds(self.backoff_base),
            max_wait: seconds(self.retry_max_wait),
        };
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?,
            ),
            None => std::env::var("HF_TOKEN").ok(),
        };
        let ca_pem = match &self.ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(HttpSettings {
            token: token
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(Secret),
            ca_pem,
            hub_api: !self.no_hf_api,
            hub_endpoint: self.hf_endpoint.clone(),
            limits: self.hf_limits,
            first_contact: given.unwrap_or(crate::remote::FIRST_CONTACT_PATIENCE),
            ..HttpSettings::new(&self.base_url()?, given.unwrap_or(DEFAULT_TIMEOUT), retry)
        })
    }
}

/// How a mount runs.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Stay in the foreground (logs on stderr); unmount cleanly on SIGINT or
    /// SIGTERM. Without it, the command returns once the mount is ready and
    /// the mount is served in the background.
    #[arg(short, long)]
    pub foreground: bool,

    /// Let other users use the mount (as non-root this needs
    /// `user_allow_other` in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,

    /// Log file of a background mount [default: <cache dir>/matvisfs.log].
    #[arg(long, env = "MATVISFS_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Threads reading requests from the kernel. Three quarters of them may
    /// wait on a request that needs the network themselves; a quarter stay
    /// free for answers from memory. Past that, such requests go to two
    /// pools of four times as many threads each: one for downloads, one for
    /// HEADs and catalogs.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub threads: usize,

    /// Read cached files through matvisfs even where the kernel could read
    /// them directly (FUSE passthrough, Linux 6.9+, as root).
    #[arg(long)]
    pub no_passthrough: bool,

    /// Take kernel requests over FUSE's io_uring transport where the kernel
    /// offers it (Linux 6.14+ with the fuse module's `enable_uring` set;
    /// otherwise through /dev/fuse as without it): a queue and a thread per
    /// CPU, fewer wake-ups a request. Each queue starts with 9 x
    /// `--threads` entries and registers another for each request left
    /// waiting on the server, up to 1024; an entry idle for 5 s gives back
    /// the memory its answers wrote.
    #[arg(long)]
    pub io_uring: bool,

    /// Mount over a directory that is not empty, hiding its entries while
    /// mounted (refused otherwise).
    #[arg(long)]
    pub nonempty: bool,

    /// The server's tree and nothing else: no generated MaterialX and USD
    /// documents, no `scalar/`, `auto/` or `best/` directories, no `latest`.
    #[arg(long)]
    pub raw: bool,

    /// More log detail: -v debug (one line per HTTP request), -vv trace.
    /// MATVISFS_LOG, a tracing filter such as `matvisfs=debug`, overrides it.
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Serve Prometheus metrics at http://ADDR/metrics: a PORT alone is on
    /// loopback (127.0.0.1); another interface must be named, as in
    /// 0.0.0.0:9100. An address that cannot be bound fails the mount.
    #[arg(long, value_name = "ADDR", value_parser = crate::metrics::parse_address)]
    pub metrics: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// An existing empty directory (see --nonempty).
    pub mountpoint: PathBuf,

    /// A release tag to mount, loaded before the command returns (repeat for
    /// several). Other release tags appear when first looked up [default:
    /// MAT_VIS_TAG, or the tag of MAT_VIS_DATASET, else v2026.04.2].
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    #[command(flatten)]
    pub run: RunArgs,

    /// Revalidate a tag again at the first open once this has passed since
    /// its last revalidation (30s, 10m, 1h, 1d) [default: once per mount
    /// session]. An idle mount sends nothing.
    #[arg(
        long,
        env = "MATVISFS_REVALIDATE_EVERY",
        value_name = "DURATION",
        value_parser = crate::duration::parse_duration
    )]
    pub revalidate_every: Option<Duration>,

    /// Serve only revisions named by their commit (`--tag` with a 40-hex
    /// commit id, on a server that keeps commits, as the Hugging Face Hub
    /// does), which can never change: tag names are not served, and the
    /// kernel reads files without opening them in matvisfs (FUSE's no-open
    /// mode), keeping their pages: warm reads near local-disk speed.
    #[arg(long)]
    pub commits_only: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RefreshArgs {
    /// Where the mount is.
    pub mountpoint: PathBuf,

    /// Only this tag (repeat for several) [default: every tag the mount
    /// has loaded]; a tag it has not loaded is looked up.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

impl MountArgs {
    /// The tags to load: `--tag`, else the environment's, else the default.
    pub fn pinned_tags(&self) -> Result<Vec<String>, String> {
        let tags = Named::read()?.tags(&self.tags, DEFAULT_TAG);
        if self.commits_only {
            if let Some(tag) = tags.iter().find(|t| !crate::names::is_commit(t)) {
                return Err(format!(
                    "--commits-only serves only revisions named by commit, and {tag:?} is not \
                     one: give --tag with the 40-hex commit id (stats.json shows each tag's)"
                ));
            }
        }
        Ok(tags)
    }
}

impl PrefetchArgs {
    /// The tags to prefetch: `--tag`, else the environment's, else the
    /// default.
    pub fn selected_tags(&self) -> Result<Vec<String>, String> {
        Ok(Named::read()?.tags(&self.tags, DEFAULT_TAG))
    }
}

#[derive(Debug, Clone, Args)]
pub struct UnmountArgs {
    /// The directory the dataset is mounted at.
    pub mountpoint: PathBuf,

    /// Detach now and clean up when it is no longer busy (umount -l).
    #[arg(long)]
    pub lazy: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to mount the sample; created if missing [default: ./mat-vis-demo].
    pub mountpoint: Option<PathBuf>,

    /// Materials per texture source in the sample.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub materials: usize,

    #[command(flatten)]
    pub run: RunArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(args: &[&str]) -> RemoteArgs {
        let mut all = vec![
            "matvisfs",
            "mount",
            "/m",
            "--hf-endpoint",
            "https://hub.example/",
        ];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Mount(args) => args.remote,
            _ => panic!("not mount"),
        }
    }

    #[test]
    fn the_base_url_comes_from_the_flag_or_the_repository_on_the_hub() {
        assert_eq!(
            remote(&[]).base_url().unwrap(),
            "https://hub.example/datasets/gerchowl/mat-vis/resolve"
        );
        assert_eq!(
            remote(&["--repo", "me/textures-2"]).base_url().unwrap(),
            "https://hub.example/datasets/me/textures-2/resolve"
        );
        assert_eq!(
            remote(&["--base-url", "http://mirror/x"])
                .base_url()
                .unwrap(),
            "http://mirror/x"
        );
        assert!(
            remote(&["--base-url", "http://m/x", "--repo", "a/b"])
                .base_url()
                .is_err()
        );
        for bad in ["a", "a/b/c", "../b", "a/..", "a b/c"] {
            assert!(remote(&["--repo", bad]).base_url().is_err(), "{bad}");
        }
        let limits = remote(&["--hf-limits", "100,10"]).hf_limits;
        assert_eq!(
            limits,
            RateLimits {
                resolves: 100,
                api: 10
            }
        );
    }

    #[test]
    fn flags_name_the_dataset_before_the_environment() {
        let env = |vars: &[(&str, &str)]| {
            Named::from_lookup(|name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap()
        };
        let hub = |repo: &str| format!("https://hub.example/datasets/{repo}/resolve");
        let dataset = env(&[
            ("MAT_VIS_DATASET", "me/tst@v2026.04.99"),
            ("MAT_VIS_HF_BASE", "http://mirror/resolve"),
        ]);
        assert_eq!(remote(&[]).base_url_in(&dataset).unwrap(), hub("me/tst"));
        assert_eq!(
            remote(&["--repo", "a/b"]).base_url_in(&dataset).unwrap(),
            hub("a/b")
        );
        assert_eq!(
            remote(&["--base-url", "http://m/x"])
                .base_url_in(&dataset)
                .unwrap(),
            "http://m/x"
        );
        let base = env(&[("MAT_VIS_HF_BASE", "http://mirror/resolve")]);
        assert_eq!(
            remote(&[]).base_url_in(&base).unwrap(),
            "http://mirror/resolve"
        );
        assert_eq!(
            remote(&["--repo", "a/b"]).base_url_in(&base).unwrap(),
            hub("a/b")
        );
        let bad = env(&[("MAT_VIS_HF_DATASET", "not-a-repo")]);
        let err = remote(&[]).base_url_in(&bad).unwrap_err();
        assert!(err.contains("MAT_VIS_HF_DATASET"), "{err}");
    }

    #[test]
    fn the_interface_parses_as_documented() {
        let cli = Cli::try_parse_from([
            "matvisfs",
            "mount",
            "/mnt/x",
            "--tag",
            "v1",
            "--tag",
            "v2",
            "--offline",
            "-f",
            "-vv",
        ])
        .unwrap();
        let Command::Mount(args) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(args.tags, ["v1", "v2"]);
        assert!(args.remote.offline && args.run.foreground);
        assert_eq!(args.run.verbose, 2);

        let Command::Mount(args) = Cli::try_parse_from(["matvisfs", "mount", "/m"])
            .unwrap()
            .command
        else {
            panic!("not mount")
        };
        assert!(
            args.tags.is_empty(),
            "the default comes after the environment"
        );
        assert!(!args.run.foreground && !args.run.allow_other);

        let Command::Unmount(args) = Cli::try_parse_from(["matvisfs", "unmount", "/m", "--lazy"])
            .unwrap()
            .command
        else {
            panic!("not unmount")
        };
        assert!(args.lazy);
        let Command::Prefetch(args) = Cli::try_parse_from([
            "matvisfs",
            "prefetch",
            "--source",
            "ambientcg",
            "--tier",
            "1k",
            "--tier",
            "512",
            "-j",
            "4",
            "--cache-max-size",
            "500MB",
        ])
        .unwrap()
        .command
        else {
            panic!("not prefetch")
        };
        assert_eq!(
            (args.tags, args.sources, args.tiers, args.jobs),
            (
                vec![],
                vec!["ambientcg".to_string()],
                vec!["1k".to_string(), "512".to_string()],
                4
            )
        );
        assert_eq!(args.cache.cache_max_size, 500_000_000);
        assert!(
            Cli::try_parse_from(["matvisfs", "mount", "/m", "--cache-max-size", "lots"]).is_err()
        );
        let Command::Cache(CacheCommand::Clear(args)) =
            Cli::try_parse_from(["matvisfs", "cache", "clear", "--tag", "v1"])
                .unwrap()
                .command
        else {
            panic!("not cache clear")
        };
        assert_eq!(args.tag.as_deref(), Some("v1"));
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    fn help_of(path: &[&str]) -> String {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut sub = &mut command;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap();
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn the_help_says_each_default_once_and_the_one_that_applies() {
        let prefetch = help_of(&["prefetch"]);
        assert_eq!(prefetch.matches(DEFAULT_TAG).count(), 1, "{prefetch}");
        // The demo logs beside its mountpoint, not in a cache it does not keep.
        let demo = help_of(&["demo"]);
        assert!(demo.contains("<MOUNTPOINT>.log"), "{demo}");
        assert!(!demo.contains("<cache dir>/matvisfs.log"), "{demo}");
        // It reads a local copy: no server, on loopback or elsewhere.
        let command = <Cli as clap::CommandFactory>::command();
        let about = command.find_subcommand("demo").unwrap().get_about();
        let about = about.map(|a| a.to_string()).unwrap_or_default();
        assert!(
            about.contains("local copy") && !about.contains("loopback"),
            "{about}"
        );
        let unmount = command.find_subcommand("unmount").unwrap();
        let mountpoint = unmount
            .get_arguments()
            .find(|arg| arg.get_id() == "mountpoint")
            .unwrap();
        assert!(mountpoint.get_help().is_some(), "the argument is described");
    }

    #[test]
    fn the_first_contact_waits_30_s_unless_a_timeout_is_given() {
        let settings = |args: &[&str]| remote(args).http_settings().unwrap();
        let default = settings(&[]);
        assert_eq!(default.first_contact, crate::remote::FIRST_CONTACT_PATIENCE);
        assert_eq!(default.timeout, DEFAULT_TIMEOUT);
        for given in ["5", "120"] {
            let set = settings(&["--timeout", given]);
            let given = Duration::from_secs(given.parse().unwrap());
            assert_eq!((set.timeout, set.first_contact), (given, given));
        }
    }

    #[test]
    fn the_cache_dir_follows_the_flag_then_xdg() {
        let mut args = CacheArgs {
            cache_dir: Some("/c".into()),
            cache_max_size: 0,
        };
        assert_eq!(args.dir().unwrap(), PathBuf::from("/c"));
        args.cache_dir = None;
        assert!(args.dir().unwrap().ends_with("matvisfs"));
    }
}
