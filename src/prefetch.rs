//! `matvisfs prefetch`: download a selection of textures into the cache, in
//! parallel, so that a later `mount --offline` serves it without a request.
//! Files already cached cost nothing, so an interrupted run resumes.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;

use crate::cli::PrefetchArgs;
use crate::dataset::{Context, Dataset, Tag};
use crate::logging;
use crate::mount::make_remote;
use crate::size::format_size;
use crate::store::CacheDir;

/// Between progress lines when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Failures listed one by one in the summary.
const FAILURES_SHOWN: usize = 10;

pub fn run(args: PrefetchArgs) -> Result<(), String> {
    // Its parallel downloads wait for the cache's writer as a mount's do.
    crate::descriptors::prepare();
    logging::to_stderr(args.verbose);
    let cache = CacheDir::open(&args.cache.dir()?)?;
    let remote = make_remote(&args.remote)?;
    let ctx = Arc::new(
        Context::new(remote, cache, args.cache.cache_max_size)
            .with_max_file_size(args.remote.max_file_size)
            // The server's files: generated documents need no download.
            .raw(true),
    );
    let tags = args.selected_tags()?;
    let dataset = Dataset::new(ctx.clone(), tags.clone());
    dataset
        .load_pinned(&crate::dataset::log_waiting)
        .map_err(|e| match e.unreachable {
            true => format!(
                "{}\n  ways out: --base-url URL for another server or mirror of the dataset, \
                 --timeout SECONDS to wait longer",
                e.message
            ),
            false => e.message,
        })?;
    let mut work: Vec<(Arc<Tag>, String)> = Vec::new();
    for name in &tags {
        let tag = dataset.tag(name).map_err(|e| format!("tag {name}: {e}"))?;
        tag.revalidate().map_err(|e| format!("tag {name}: {e}"))?;
        for path in selection(&tag, &args.sources, &args.tiers)? {
            work.push((tag.clone(), path));
        }
    }
    let started = Instant::now();
    let (failures, missing) = download_all(&ctx, &work, args.jobs.max(1));
    summarize(&ctx, work.len(), &failures, missing, started.elapsed())
}

/// Paths of every texture of the selected sources and tiers, with each
/// source's catalog loaded fresh.
fn selection(tag: &Tag, sources: &[String], tiers: &[String]) -> Result<Vec<String>, String> {
    let manifest = tag.view().manifest.clone();
    let available: Vec<&str> = manifest
        .sources
        .iter()
        .filter(|s| s.has_directory())
        .map(|s| s.name.as_str())
        .collect();
    for wanted in sources {
        if !available.contains(&wanted.as_str()) {
            return Err(format!(
                "tag {} has no texture source {wanted:?} (it has: {})",
                tag.name(),
                available.join(", ")
            ));
        }
    }
    let all_tiers: Vec<&String> = manifest.sources.iter().flat_map(|s| &s.tiers).collect();
    for wanted in tiers {
        if !all_tiers.contains(&wanted) {
            return Err(format!("tag {} has no tier {wanted:?}", tag.name()));
        }
    }
    // Every document of the tag, so that an offline mount lists it all.
    for source in &manifest.sources {
        let rowmaps = source.containers.values().flatten().map(|p| p.rowmap.key());
        let named = source
            .catalog
            .iter()
            .chain(&source.mtlx)
            .map(String::as_str);
        for document in named.chain(rowmaps) {
            match tag.refresh_document(document) {
                // A map the server does not have (one the manifest implies).
                Err(crate::dataset::Error::NotFound) => {}
                result => result.map_err(|e| format!("tag {}: {document}: {e}", tag.name()))?,
            }
        }
    }
    let list = |dir: &str| {
        tag.list(dir)
            .map(|(entries, _)| entries)
            .map_err(|e| format!("tag {}: cannot list {dir}: {e}", tag.name()))
    };
    let mut paths = Vec::new();
    for source in manifest.sources.iter().filter(|s| s.has_directory()) {
        if !sources.is_empty() && !sources.contains(&source.name) {
            continue;
        }
        for tier in source
            .tiers
            .iter()
            .filter(|t| tiers.is_empty() || tiers.contains(t))
        {
            let tier_dir = format!("{}/{tier}", source.name);
            for (material, _) in list(&tier_dir)?.iter() {
                let material_dir = format!("{tier_dir}/{material}");
                for (file, _) in list(&material_dir)?.iter() {
                    paths.push(format!("{material_dir}/{file}"));
                }
            }
        }
    }
    Ok(paths)
}

/// Runs `jobs` workers over `work` with a progress display; returns the
/// failures, and how many files the server does not have (the catalog
/// names them; nothing to fetch, and no failure of the prefetch).
fn download_all(
    ctx: &Context,
    work: &[(Arc<Tag>, String)],
    jobs: usize,
) -> (Vec<(String, String)>, usize) {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let missing = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let downloaded = Mutex::new(Vec::new());
    let progress = Progress::new(work.len());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                progress.show(done.load(Ordering::Relaxed), ctx);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    while let Some((tag, path)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        match tag.content(path, None) {
                            Ok(open) => downloaded.lock().push((tag, path, open.blob)),
                            Err(crate::dataset::Error::NotFound) => {
                                missing.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures
                                .lock()
                                .push((format!("{}/{path}", tag.name()), e.to_string())),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.join();
        }
        ctx.content.flush();
        // Kept once on the disk (a download may be served from memory and
        // then refused by a full disk, or evicted again under the limit).
        let why = match ctx.content.uncached() {
            0 => "downloaded, then evicted again: the selection does not fit the cache's limit",
            _ => "downloaded, but not kept: the cache cannot be written (its disk is full?)",
        };
        for (tag, path, blob) in downloaded.lock().drain(..) {
            if !ctx.content.is_kept(&blob) {
                failures
                    .lock()
                    .push((format!("{}/{path}", tag.name()), why.to_string()));
            }
        }
        finished.store(true, Ordering::Relaxed);
    });
    progress.finish();
    (failures.into_inner(), missing.into_inner())
}

/// A progress bar on a terminal, a line every few seconds otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {wide_bar} {pos}/{len} files  {msg}  ETA {eta}",
                )
                .expect("a valid template"),
            );
            bar
        });
        Progress {
            bar,
            total,
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn show(&self, done: usize, ctx: &Context) {
        let bytes = ctx.stats.bytes_downloaded.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = format!("{}/s", format_size((bytes as f64 / elapsed) as u64));
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(format!("{} downloaded, {rate}", format_size(bytes)));
            }
            None => {
                let mut last = self.last_line.lock();
                if last.elapsed() < PLAIN_PROGRESS_EVERY {
                    return;
                }
                *last = Instant::now();
                let eta = if done == 0 {
                    "?".to_string()
                } else {
                    format!("{:.0}s", elapsed / done as f64 * (self.total - done) as f64)
                };
                eprintln!(
                    "prefetch: {done}/{} files, {} downloaded, {rate}, ETA {eta}",
                    self.total,
                    format_size(bytes)
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn summarize(
    ctx: &Context,
    total: usize,
    failures: &[(String, String)],
    missing: usize,
    took: Duration,
) -> Result<(), String> {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let stats = &ctx.stats;
    let (files, bytes) = ctx.content.totals();
    println!(
        "prefetched {total} files in {:.1} s: {} downloaded ({}), {} already cached, {} found under another path, {} failed",
        took.as_secs_f64(),
        get(&stats.cache_misses),
        format_size(get(&stats.bytes_downloaded)),
        get(&stats.cache_hits),
        get(&stats.dedupe_hits),
        failures.len()
    );
    let cap = ctx.content.cap();
    let cap_text = if cap == 0 {
        "no limit".to_string()
    } else {
        format!("limit {}", format_size(cap))
    };
    println!(
        "cache: {} in {files} files ({cap_text})",
        format_size(bytes)
    );
    if missing > 0 {
        println!("{missing} files the catalogs name are not on the server (nothing to fetch)");
    }
    if ctx.content.evictions() > 0 {
        eprintln!(
            "warning: the selection does not fit the cache limit: {} files were evicted again; raise --cache-max-size",
            ctx.content.evictions()
        );
    }
    for (path, error) in failures.iter().take(FAILURES_SHOWN) {
        eprintln!("failed: {path}: {error}");
    }
    if failures.len() > FAILURES_SHOWN {
        eprintln!("... and {} more", failures.len() - FAILURES_SHOWN);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {total} files could not be prefetched",
            failures.len()
        ))
    }
}
