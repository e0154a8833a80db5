//! Reads whole files the way `cat` does, from a number of threads at once,
//! with no process per file: the reader the benchmark points at a matvisfs
//! mount, an rclone mount and a local directory alike.
//!
//!     readall <THREADS> [--digests] < paths (one a line)
//!
//! Prints `<seconds> <files> <bytes>`; exits 1 if any file could not be read.
//! With `--digests`, keeps the bytes each file gave and, once the clock has
//! stopped, prints `<sha256> <path>` for each, so that a benchmark can
//! check that every byte read was the served file's own.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use matvisfs_sample::sha256_hex;
use parking_lot::Mutex;

/// As `cat`: large enough that a small texture is one read and its EOF one more.
const BUFFER: usize = 128 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = args
        .first()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            eprintln!("usage: readall <THREADS> [--digests] < paths");
            std::process::exit(2);
        });
    let digests = args.iter().any(|a| a == "--digests");
    let paths: Vec<String> = io::stdin()
        .lock()
        .lines()
        .map(|line| line.expect("reading the list of paths"))
        .filter(|line| !line.is_empty())
        .collect();
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let failed = AtomicUsize::new(0);
    // The bytes each file gave, by its index in `paths` (`--digests`).
    let kept: Vec<Mutex<Vec<u8>>> = if digests {
        paths.iter().map(|_| Mutex::new(Vec::new())).collect()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buffer = vec![0u8; BUFFER];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { return };
                    let mut keep = kept.get(i).map(|k| k.lock());
                    match read_whole(path, &mut buffer, keep.as_deref_mut()) {
                        Ok(n) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("{path}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    println!(
        "{:.6} {} {}",
        started.elapsed().as_secs_f64(),
        paths.len(),
        bytes.load(Ordering::Relaxed)
    );
    for (path, kept) in paths.iter().zip(&kept) {
        println!("{} {path}", sha256_hex(kept.lock().as_slice()));
    }
    if failed.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}

fn read_whole(path: &str, buffer: &mut [u8], mut keep: Option<&mut Vec<u8>>) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut total = 0;
    loop {
        match file.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                total += n as u64;
                if let Some(keep) = keep.as_deref_mut() {
                    keep.extend_from_slice(&buffer[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
