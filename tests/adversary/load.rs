//! One load thread's operations through the mount, and how their results
//! are recorded: bytes matched to the one blob they claim to be (or
//! described as the mix, prefix or padding they are), listings, sizes and
//! errnos.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use matvisfs_sample::sha256_hex;
use matvisfs_testkit::adversary::blob::{BlobSpec, Format, describe_mix};
use matvisfs_testkit::adversary::history::{Clock, Content};
use matvisfs_testkit::adversary::model::{MANIFEST, Release, catalog_path};
use matvisfs_testkit::adversary::oracle::{Observed, Op, OpKind};
use matvisfs_testkit::adversary::server::VersionedServer;
use parking_lot::Mutex;
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

/// Files a thread keeps open at most.
const HELD: usize = 3;

/// The operation a thread is in, for a report when it never ends.
#[derive(Clone)]
pub struct Running {
    pub kind: OpKind,
    pub path: String,
    pub since: Duration,
}

/// Where the load aims: the initial release's paths mostly, the hot few
/// often, and every path and directory the release may ever have now and
/// then.
pub struct Universe {
    textures: Vec<String>,
    initial_textures: Vec<String>,
    hot: Vec<String>,
    directories: Vec<String>,
    initial_directories: Vec<String>,
    documents: Vec<String>,
}

impl Universe {
    pub fn of(release: &Release) -> Self {
        let mut documents = vec![MANIFEST.to_string()];
        documents.extend(release.sources.keys().map(|s| catalog_path(s)));
        let initial_directories: BTreeSet<String> = release
            .textures
            .keys()
            .flat_map(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                (0..parts.len()).map(move |n| parts[..n].join("/"))
            })
            .collect();
        Universe {
            textures: release.possible_textures(),
            initial_textures: release.textures.keys().cloned().collect(),
            hot: Release::hot_paths(),
            directories: release.possible_directories(),
            initial_directories: initial_directories.into_iter().collect(),
            documents,
        }
    }
}

/// What the load threads of one session share: the server (whose blobs
/// reads are matched against), the clock, the mount's tag directory, and
/// the session's phases.
pub struct Load {
    pub server: Arc<VersionedServer>,
    pub clock: Clock,
    pub tag_dir: PathBuf,
    pub universe: Arc<Universe>,
    pub deadline: Duration,
    pub walk_until: Duration,
}

/// The choices of one operation, all drawn before it runs so that the
/// seed decides the sequence whatever each outcome was.
struct Choice {
    roll: u32,
    texture: String,
    directory: String,
    document: String,
    pieces: [usize; 6],
    pauses: [u64; 6],
    held: usize,
    close: bool,
}

fn choose(rng: &mut ChaCha8Rng, universe: &Universe) -> Choice {
    let texture = match rng.random_range(0..5) {
        0 => universe.hot.choose(rng),
        1 => universe.textures.choose(rng),
        _ => universe.initial_textures.choose(rng),
    }
    .expect("paths")
    .clone();
    let directory = if rng.random_ratio(1, 5) {
        universe.directories.choose(rng)
    } else {
        universe.initial_directories.choose(rng)
    }
    .expect("dirs")
    .clone();
    Choice {
        roll: rng.random_range(0..100),
        texture,
        directory,
        document: universe.documents.choose(rng).expect("docs").clone(),
        pieces: std::array::from_fn(|_| rng.random_range(1..=(512 << 10))),
        pauses: std::array::from_fn(|_| {
            if rng.random_bool(0.5) {
                rng.random_range(0..60)
            } else {
                0
            }
        }),
        held: rng.random_range(0..HELD),
        close: rng.random_bool(0.5),
    }
}

/// A file kept open (or the failure of its open: every hold takes a
/// place, so that what a thread does next never depends on an outcome).
struct Held {
    file: Option<File>,
    path: String,
    first: Observed,
}

fn errno(e: &std::io::Error) -> Observed {
    Observed::Error(e.raw_os_error().unwrap_or(-1))
}

impl Load {
    fn full(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.tag_dir.clone()
        } else {
            self.tag_dir.join(path)
        }
    }

    /// What texture bytes are: one blob exactly, or how they are wrong.
    fn classify(&self, path: &str, bytes: &[u8]) -> Observed {
        if bytes.is_empty() {
            return Observed::Empty;
        }
        let history = self.server.history();
        for format in [Format::Png, Format::Ktx2] {
            let Some(texture) = BlobSpec::named_id(format, bytes).and_then(|id| history.blob(id))
            else {
                continue;
            };
            if *self.server.blob_bytes(&texture.spec) == *bytes {
                return Observed::Blob(texture.spec);
            }
        }
        // Cut short, or padded: the blob the bytes name, and less or more.
        for format in [Format::Png, Format::Ktx2] {
            let Some(texture) = BlobSpec::named_id(format, bytes).and_then(|id| history.blob(id))
            else {
                continue;
            };
            let (blob, len) = (texture.spec, bytes.len() as u64);
            let full = self.server.blob_bytes(&blob);
            if full.starts_with(bytes) {
                return Observed::Cut { blob, len };
            }
            if bytes.starts_with(&full) {
                return Observed::Padded { blob, len };
            }
        }
        // Wrong: described against this path's versions and the blob the
        // bytes name.
        let mut candidates: Vec<(String, BlobSpec)> = history
            .versions(path)
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match &v.content {
                Content::Texture(t) => Some((format!("version {i} ({})", t.spec), t.spec)),
                Content::Document(_) => None,
            })
            .collect();
        for format in [Format::Png, Format::Ktx2] {
            if let Some(t) = BlobSpec::named_id(format, bytes).and_then(|id| history.blob(id)) {
                let owners = history.paths_with(&t.spec);
                candidates.push((format!("{} of {owners:?}", t.spec), t.spec));
            }
        }
        Observed::Wrong(describe_mix(bytes, &candidates))
    }

    fn observe(&self, path: &str, bytes: &[u8]) -> Observed {
        if Format::of_path(path).is_some() {
            self.classify(path, bytes)
        } else {
            Observed::Doc(sha256_hex(bytes))
        }
    }

    fn read_whole(&self, path: &str) -> Observed {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut bytes = Vec::new();
            File::open(self.full(path))?.read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        match read() {
            Ok(bytes) => self.observe(path, &bytes),
            Err(e) => errno(&e),
        }
    }

    fn read_pieces(&self, path: &str, choice: &Choice) -> Observed {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = File::open(self.full(path))?;
            let mut bytes = Vec::new();
            for round in 0.. {
                let piece = choice.pieces[round % choice.pieces.len()];
                let start = bytes.len();
                bytes.resize(start + piece, 0);
                let got = file.read(&mut bytes[start..])?;
                bytes.truncate(start + got);
                if got == 0 {
                    break;
                }
                let pause = choice.pauses[round % choice.pauses.len()];
                std::thread::sleep(Duration::from_millis(pause));
            }
            Ok(bytes)
        };
        match read() {
            Ok(bytes) => self.observe(path, &bytes),
            Err(e) => errno(&e),
        }
    }

    fn hold(&self, path: &str) -> (Observed, Held) {
        let open = || -> std::io::Result<(File, Vec<u8>)> {
            let mut file = File::open(self.full(path))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok((file, bytes))
        };
        match open() {
            Ok((file, bytes)) => {
                let first = self.observe(path, &bytes);
                let held = Held {
                    file: Some(file),
                    path: path.to_string(),
                    first: first.clone(),
                };
                (first, held)
            }
            Err(e) => {
                let failed = errno(&e);
                let held = Held {
                    file: None,
                    path: path.to_string(),
                    first: failed.clone(),
                };
                (failed, held)
            }
        }
    }

    /// `None` for a hold whose open failed: nothing to read again.
    fn reread(&self, held: &Held) -> Option<Observed> {
        let file = held.file.as_ref()?;
        let mut bytes = Vec::new();
        let mut buffer = vec![0u8; 256 << 10];
        let now = loop {
            match file.read_at(&mut buffer, bytes.len() as u64) {
                Ok(0) => break self.observe(&held.path, &bytes),
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                Err(e) => break errno(&e),
            }
        };
        Some(Observed::Reread {
            first: Box::new(held.first.clone()),
            now: Box::new(now),
        })
    }

    fn list(&self, dir: &str) -> Observed {
        let names = || -> std::io::Result<BTreeSet<String>> {
            let mut names = BTreeSet::new();
            for entry in fs::read_dir(self.full(dir))? {
                names.insert(entry?.file_name().to_string_lossy().into_owned());
            }
            Ok(names)
        };
        match names() {
            Ok(names) => Observed::Names(names),
            Err(e) => errno(&e),
        }
    }

    fn stat(&self, path: &str) -> Observed {
        match fs::metadata(self.full(path)) {
            Ok(meta) => Observed::Size(meta.len()),
            Err(e) => errno(&e),
        }
    }

    /// One thread's operations until the deadline; each is recorded in
    /// `ops` as it ends, and announced in `current` while it runs.
    pub fn run(
        &self,
        thread: usize,
        mut rng: ChaCha8Rng,
        ops: &Mutex<Vec<Op>>,
        current: &Mutex<Option<Running>>,
    ) {
        let mut held: Vec<Held> = Vec::new();
        while self.clock.now() < self.deadline {
            let choice = choose(&mut rng, &self.universe);
            let walking = self.clock.now() < self.walk_until;
            let kind = match (walking, choice.roll) {
                (true, 0..50) | (false, 0..14) => OpKind::List,
                (true, _) | (false, 14..28) => OpKind::Stat,
                (false, 28..52) => OpKind::Read,
                (false, 52..66) => OpKind::Pieces,
                (false, 66..74) if held.len() < HELD => OpKind::Hold,
                (false, 66..84) if !held.is_empty() => OpKind::Reread,
                (false, 66..84) => OpKind::Read,
                (false, _) => OpKind::Document,
            };
            let path = match kind {
                OpKind::List => choice.directory.clone(),
                OpKind::Document => choice.document.clone(),
                OpKind::Reread => held[choice.held % held.len()].path.clone(),
                _ => choice.texture.clone(),
            };
            let t0 = self.clock.now();
            *current.lock() = Some(Running {
                kind,
                path: path.clone(),
                since: t0,
            });
            let observed = match kind {
                OpKind::List => Some(self.list(&path)),
                OpKind::Stat => Some(self.stat(&path)),
                OpKind::Read | OpKind::Document => Some(self.read_whole(&path)),
                OpKind::Pieces => Some(self.read_pieces(&path, &choice)),
                OpKind::Hold => {
                    let (observed, file) = self.hold(&path);
                    held.push(file);
                    Some(observed)
                }
                OpKind::Reread => {
                    let index = choice.held % held.len();
                    let observed = self.reread(&held[index]);
                    if choice.close {
                        held.remove(index);
                    }
                    observed
                }
            };
            let t1 = self.clock.now();
            *current.lock() = None;
            let Some(observed) = observed else { continue };
            ops.lock().push(Op {
                thread,
                kind,
                path,
                t0,
                t1,
                observed,
            });
        }
    }
}
