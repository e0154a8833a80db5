//! The mount sessions of a run, drawn from the seed: their length, flags
//! (a short `--revalidate-every` now and then, `--io-uring` in one session
//! of four, a mount of one commit alone in one of six), server mode, and
//! when the cache is cleared and the mount refreshed.

use std::time::Duration;

use matvisfs_testkit::adversary::server::{ServerOptions, TreeLies};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The Hub's layout, with its API.
    Hub,
    /// `/resolve/...` with Hugging Face redirects.
    Redirects,
    /// `/resolve/...` as a plain mirror: no digest.
    PlainMirror,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub duration: Duration,
    /// Only listings and stats this long after the mount (walks before
    /// the first open, on the cached catalogs).
    pub walk_first: Duration,
    pub passthrough: bool,
    pub cap: Option<&'static str>,
    pub layout: Layout,
    pub tree_page_size: usize,
    /// How the Hub layout's tree listing lies.
    pub tree_lies: TreeLies,
    /// Publications during this session and until the next replace
    /// textures alone: only the commit moves.
    pub textures_only: bool,
    /// `cache clear` this long after the mount.
    pub clears: Vec<Duration>,
    /// `cache clear` before mounting.
    pub clear_before: bool,
    /// `--offline`: what earlier sessions cached, in FUSE's no-open mode.
    pub offline: bool,
    /// `--commits-only` with the commit of the publication this many
    /// before the current one (kept by the server from then on), in FUSE's
    /// no-open mode while the tag goes on changing.
    pub commit_back: Option<usize>,
    /// `--revalidate-every`, for some sessions.
    pub revalidate_every: Option<&'static str>,
    /// `matvisfs refresh` this long after the mount.
    pub refreshes: Vec<Duration>,
    /// `--io-uring`, with the fuse module's `enable_uring` set for the
    /// session (cleared where this kernel has no such transport).
    pub io_uring: bool,
}

impl Plan {
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{:?}", self.layout)];
        if self.layout == Layout::Hub {
            parts.push(format!("tree pages of {}", self.tree_page_size));
            if self.tree_lies != TreeLies::None {
                parts.push(format!("tree lies: {:?}", self.tree_lies));
            }
        }
        if !self.passthrough {
            parts.push("--no-passthrough".into());
        }
        if self.offline {
            parts.push("--offline".into());
        }
        if let Some(back) = self.commit_back {
            parts.push(format!(
                "--commits-only, the commit {back} publications back"
            ));
        }
        if self.io_uring {
            parts.push("--io-uring".into());
        }
        if self.textures_only {
            parts.push("textures replaced alone until the next session".into());
        }
        if let Some(cap) = self.cap {
            parts.push(format!("--cache-max-size {cap}"));
        }
        if self.clear_before {
            parts.push("cache cleared before".into());
        }
        if !self.clears.is_empty() {
            // What an offline session after this one can still serve.
            parts.push(format!("{} cache clears", self.clears.len()));
        }
        if let Some(every) = self.revalidate_every {
            parts.push(format!("--revalidate-every {every}"));
        }
        if !self.refreshes.is_empty() {
            parts.push(format!("{} refreshes", self.refreshes.len()));
        }
        if !self.walk_first.is_zero() {
            parts.push(format!(
                "walks for {} ms first",
                self.walk_first.as_millis()
            ));
        }
        parts.push(format!("{} s", self.duration.as_secs_f64()));
        parts.join(", ")
    }

    pub fn options(&self) -> ServerOptions {
        ServerOptions {
            redirects: self.layout != Layout::PlainMirror,
            hub_api: self.layout == Layout::Hub,
            tree_page_size: self.tree_page_size,
            tree_lies: self.tree_lies,
        }
    }
}

/// Sessions filling `seconds` of load.
pub fn plans(rng: &mut ChaCha8Rng, seconds: u64) -> Vec<Plan> {
    let total = Duration::from_secs(seconds);
    let mut used = Duration::ZERO;
    let mut out = Vec::new();
    while used < total {
        let mut duration = Duration::from_millis(rng.random_range(6_000..16_000));
        if total - used < duration + Duration::from_secs(4) {
            duration = total - used;
        }
        used += duration;
        let clears = (0..rng.random_range(0..=3))
            .map(|_| Duration::from_millis(rng.random_range(300..duration.as_millis() as u64)))
            .collect();
        out.push(Plan {
            duration,
            walk_first: if rng.random_bool(0.5) {
                Duration::from_millis(rng.random_range(200..1500))
            } else {
                Duration::ZERO
            },
            passthrough: rng.random_bool(0.7),
            cap: match rng.random_range(0..100) {
                0..25 => Some("300kB"),
                25..40 => Some("2MB"),
                _ => None,
            },
            layout: match rng.random_range(0..10) {
                0..3 => Layout::Hub,
                3..7 => Layout::Redirects,
                _ => Layout::PlainMirror,
            },
            tree_page_size: *[3, 40, 1000].choose(rng).expect("sizes"),
            tree_lies: match rng.random_range(0..10) {
                0..4 => TreeLies::None,
                4..6 => TreeLies::Catalog,
                6..8 => TreeLies::Cdn,
                8 => TreeLies::EndlessPages,
                _ => TreeLies::LoopingPages,
            },
            textures_only: rng.random_bool(0.3),
            clears,
            clear_before: rng.random_bool(0.2),
            // Not the first: an offline session serves what others cached.
            offline: !out.is_empty() && rng.random_bool(0.2),
            commit_back: rng
                .random_ratio(1, 6)
                .then(|| *[0, 1, 5, 40].choose(rng).expect("distances")),
            revalidate_every: match rng.random_range(0..10) {
                0..2 => Some("1s"),
                2 => Some("2s"),
                3 => Some("3s"),
                _ => None,
            },
            refreshes: match rng.random_bool(0.5) {
                true => (0..rng.random_range(1..=4))
                    .map(|_| {
                        Duration::from_millis(rng.random_range(200..duration.as_millis() as u64))
                    })
                    .collect(),
                false => Vec::new(),
            },
            io_uring: rng.random_bool(0.25),
        });
        // Offline, the same server (its origin keys the cached tag) as the
        // session before, and its cache kept: what it serves is the tag as
        // that session cached it, so that one mounts the tag, not a commit,
        // and clears nothing; the offline session clears only in its second
        // half. (A clear left every later offline session nothing to serve,
        // and so nothing to check.)
        if let [.., before, offline] = &mut out[..] {
            if offline.offline {
                offline.layout = before.layout;
                offline.clear_before = false;
                offline.commit_back = None;
                before.commit_back = None;
                before.clears.clear();
                let half = offline.duration / 2;
                offline.clears.retain(|at| *at > half);
            }
        }
    }
    out
}
