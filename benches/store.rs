//! The store's shared database under load: four processes at once insert
//! texture objects under a cap (evicting as they go), open them, and put
//! and look up file records; then one process loads a tag of 100,000
//! records. Prints one line per figure. Run by `scripts/bench_store.sh`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use matvisfs::store::{Blob, CacheDir, ContentStore, FileRecord, FileRecords};

const PROCESSES: usize = 4;
const OBJECTS: usize = 400;
const OBJECT_SIZE: usize = 4096;
/// Room for a quarter of what the processes insert: most inserts evict.
const CAP: u64 = (PROCESSES * OBJECTS * OBJECT_SIZE / 4) as u64;
const OPENS: usize = 20_000;
const RECORDS: usize = 10_000;
const LOOKUPS: usize = 200_000;
const BIG_TAG: usize = 100_000;

/// The one place where the store's API differs between the versions
/// measured.
fn records(cache: &CacheDir, tag: &str) -> FileRecords {
    cache
        .origin("http://127.0.0.1:1/resolve")
        .tag(tag)
        .records()
}

fn record(i: usize, tag_generation: u64) -> FileRecord {
    FileRecord {
        path: format!("ambientcg/1k/Material{:05}/color.png", i),
        generation: tag_generation,
        size: Some(1000 + i as u64),
        etag: Some(format!("\"etag-{i}\"")),
        sha256: None,
        remote_sha256: None,
    }
}

fn per_second(count: usize, since: Instant) -> String {
    let seconds = since.elapsed().as_secs_f64();
    format!(
        "{:.0}/s ({count} in {:.2} s)",
        count as f64 / seconds,
        seconds
    )
}

/// One figure of a worker, for the parent to gather: name, then rate.
fn figure(name: &str, count: usize, since: Instant) {
    println!("{name}\t{}", count as f64 / since.elapsed().as_secs_f64());
}

fn worker(root: &Path, n: usize) {
    // Every figure is printed to the parent; nothing else goes to stdout.
    let cache = CacheDir::open(root).unwrap();
    let (store, recovery) = ContentStore::load(&cache, CAP);
    // The other workers are alive (or ended in order): nothing of theirs
    // is checked, nothing removed.
    assert_eq!((recovery.checked, recovery.corrupt), (0, 0), "{recovery:?}");
    let started = Instant::now();
    let mut blobs: Vec<(Blob, Vec<u8>)> = Vec::new();
    for i in 0..OBJECTS {
        let mut bytes = vec![n as u8; OBJECT_SIZE];
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut ingest = store.ingest().unwrap();
        ingest.append(&bytes).unwrap();
        blobs.push((store.insert(ingest.finish().unwrap()).unwrap().blob, bytes));
    }
    store.flush();
    figure("object inserts, durable, under the cap", OBJECTS, started);

    let started = Instant::now();
    for i in 0..OPENS {
        let _ = store.open(&blobs[i % OBJECTS].0);
    }
    figure("object opens (hits and misses)", OPENS, started);
    // How many hit depends on the others (under the cap, they may have
    // evicted every object of this one); what a hit serves does not.
    for (blob, bytes) in &blobs {
        if let Some(open) = store.open(blob) {
            let mut read = Vec::new();
            std::io::Read::read_to_end(&mut &*open.file, &mut read).unwrap();
            assert_eq!(&read, bytes);
        }
    }

    let tag = format!("v2026.0{n}.0");
    let records = records(&cache, &tag);
    let started = Instant::now();
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(100) {
        records.put_all(chunk.iter().map(|&i| record(i, 1)).collect());
    }
    records.flush();
    figure("record puts, 100 a batch", RECORDS, started);
    let started = Instant::now();
    for i in 0..RECORDS / 10 {
        records.put(record(i, 2));
    }
    records.flush();
    figure("record puts, one at a time", RECORDS / 10, started);
    let started = Instant::now();
    let mut found = 0;
    for i in 0..LOOKUPS {
        found += records.get(&record(i % RECORDS, 0).path).is_some() as usize;
    }
    assert_eq!(found, LOOKUPS);
    figure("record lookups", LOOKUPS, started);
    drop(records);
    drop(store);
}

fn main() {
    // Warnings of the store (a write that failed) go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    if let Some(role) = args.next().filter(|a| a == "--worker") {
        let _ = role;
        let root = args.next().unwrap();
        let n: usize = args.next().unwrap().parse().unwrap();
        worker(Path::new(&root), n);
        return;
    }
    let dir =
        tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into())).unwrap();
    let root = dir.path().join("cache");
    CacheDir::open(&root).unwrap();
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|n| {
            Command::new(std::env::current_exe().unwrap())
                .arg("--worker")
                .arg(&root)
                .arg(n.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut figures: Vec<(String, Vec<f64>)> = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let (name, rate) = line.split_once('\t').unwrap();
            let rate: f64 = rate.parse().unwrap();
            match figures.iter_mut().find(|(n, _)| n == name) {
                Some((_, rates)) => rates.push(rate),
                None => figures.push((name.to_string(), vec![rate])),
            }
        }
    }
    for (name, rates) in figures {
        let slowest = rates.iter().cloned().fold(f64::INFINITY, f64::min);
        let fastest = rates.iter().cloned().fold(0.0, f64::max);
        println!("{name}, per process: {slowest:.0}/s to {fastest:.0}/s");
    }
    println!(
        "{PROCESSES} processes, all of the above: {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let cache = CacheDir::open(&root).unwrap();
    let (store, _) = ContentStore::load(&cache, CAP);
    let (files, bytes) = store.totals();
    let over = match bytes > CAP {
        true => format!(", OVER THE CAP by {} bytes", bytes - CAP),
        false => String::new(),
    };
    println!("store after the run: {files} objects, {bytes} bytes, cap {CAP}{over}");
    drop(store);

    let tag = "v2026.09.0";
    let big = records(&cache, tag);
    let started = Instant::now();
    for chunk in (0..BIG_TAG).collect::<Vec<_>>().chunks(1000) {
        big.put_all(chunk.iter().map(|&i| record(i, 1)).collect());
    }
    drop(big);
    println!(
        "a tag of {BIG_TAG} records, 1000 a batch: {}",
        per_second(BIG_TAG, started)
    );
    let started = Instant::now();
    let loaded = records(&cache, tag);
    assert_eq!(loaded.len(), BIG_TAG);
    println!(
        "loading a tag of {BIG_TAG} records: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
