//! `matvisfs cache status|verify|clear`: what the cache holds, whether its
//! bytes are right, and emptying it. Safe while mounts use the cache: the
//! index is shared through its log, and a mount that finds a file gone
//! downloads it again.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::cli::{CacheArgs, CacheCommand, ClearArgs};
use crate::digest::Sha256Digest;
use crate::logging;
use crate::size::format_size;
use crate::store::{CacheDir, ContentStore, FileRecords, TagStore, verify_objects};

pub fn run(command: CacheCommand) -> Result<(), String> {
    logging::to_stderr(0);
    match command {
        CacheCommand::Status(args) => status(&args),
        CacheCommand::Verify(args) => verify(&args),
        CacheCommand::Clear(args) => clear(&args),
    }
}

fn open(args: &CacheArgs) -> Result<(CacheDir, ContentStore), String> {
    let dir = CacheDir::open(&args.dir()?)?;
    let (store, recovery) = ContentStore::load(&dir, args.cache_max_size);
    if recovery.rebuilt || recovery.corrupt > 0 {
        eprintln!(
            "the index was {}; {} corrupt files removed",
            if recovery.rebuilt {
                "rebuilt"
            } else {
                "repaired"
            },
            recovery.corrupt
        );
    }
    Ok((dir, store))
}

/// Which stored objects each cached tag's files use, by path.
fn references(dir: &CacheDir) -> BTreeMap<String, Vec<(String, Sha256Digest)>> {
    dir.cached_tags()
        .into_iter()
        .map(|tag| {
            let records = FileRecords::open(TagStore::new(dir.tag_dir(&tag)).records_path());
            let used = records
                .all()
                .into_iter()
                .filter_map(|r| Some((r.path, r.sha256?)))
                .collect();
            (tag, used)
        })
        .collect()
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn status(args: &CacheArgs) -> Result<(), String> {
    let (dir, store) = open(args)?;
    let stored: HashMap<Sha256Digest, u64> = store.entries().into_iter().collect();
    let (files, bytes) = (stored.len(), stored.values().sum::<u64>());
    println!("cache directory: {}", dir.root().display());
    let cap = store.cap();
    if cap == 0 {
        println!(
            "content: {} in {} (no limit)",
            format_size(bytes),
            plural(files, "file")
        );
    } else {
        println!(
            "content: {} in {}, limit {} ({:.0}% used)",
            format_size(bytes),
            plural(files, "file"),
            format_size(cap),
            bytes as f64 * 100.0 / cap as f64
        );
    }
    let documents = dir.documents().list();
    let document_bytes: u64 = documents
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "documents (manifests, catalogs): {} in {}",
        format_size(document_bytes),
        plural(documents.len(), "file")
    );

    let mut referenced_bytes = 0u64;
    let mut referenced = HashSet::new();
    for (tag, used) in references(&dir) {
        let mut per_tier: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for (path, digest) in &used {
            let Some(size) = stored.get(digest) else {
                continue;
            };
            let tier: String = path.split('/').take(2).collect::<Vec<_>>().join("/");
            let entry = per_tier.entry(tier).or_default();
            entry.0 += 1;
            entry.1 += size;
            referenced_bytes += size;
            referenced.insert(*digest);
        }
        let (count, total) = per_tier
            .values()
            .fold((0, 0), |(c, b), (n, s)| (c + n, b + s));
        println!(
            "tag {tag}: {} in {}",
            format_size(total),
            plural(count, "file")
        );
        for (tier, (count, total)) in per_tier {
            println!(
                "  {tier:<28} {:>10} in {}",
                format_size(total),
                plural(count, "file")
            );
        }
    }
    let unique: u64 = referenced.iter().filter_map(|d| stored.get(d)).sum();
    println!(
        "deduplication saves {} ({} of file references, {} stored)",
        format_size(referenced_bytes.saturating_sub(unique)),
        format_size(referenced_bytes),
        format_size(unique)
    );
    let orphans: Vec<u64> = stored
        .iter()
        .filter(|(d, _)| !referenced.contains(*d))
        .map(|(_, s)| *s)
        .collect();
    if !orphans.is_empty() {
        println!(
            "not used by any tag's current records: {} in {} (evicted first when space is needed)",
            format_size(orphans.iter().sum()),
            plural(orphans.len(), "file")
        );
    }
    Ok(())
}

fn verify(args: &CacheArgs) -> Result<(), String> {
    let (dir, store) = open(args)?;
    let content = store.verify(|_| {});
    let documents = verify_objects(&dir.documents(), &mut |_| {}, |_| {});
    let corrupt = content.corrupt + documents.corrupt;
    println!(
        "checked {} ({}): {} corrupt{}",
        plural(content.checked + documents.checked, "file"),
        format_size(content.bytes + documents.bytes),
        corrupt,
        if corrupt > 0 {
            ", removed (they are downloaded again when needed)"
        } else {
            ""
        }
    );
    if corrupt > 0 {
        Err(format!("{corrupt} corrupt files were found and removed"))
    } else {
        Ok(())
    }
}

fn clear(args: &ClearArgs) -> Result<(), String> {
    let (dir, store) = open(&args.cache)?;
    let refs = references(&dir);
    let victims: Vec<Sha256Digest> = match &args.tag {
        None => store.entries().into_iter().map(|(d, _)| d).collect(),
        Some(tag) => {
            let Some(mine) = refs.get(tag) else {
                return Err(format!(
                    "tag {tag} is not in the cache (it has: {})",
                    dir.cached_tags().join(", ")
                ));
            };
            let others: HashSet<Sha256Digest> = refs
                .iter()
                .filter(|(name, _)| *name != tag)
                .flat_map(|(_, used)| used.iter().map(|(_, d)| *d))
                .collect();
            let mine: HashSet<Sha256Digest> = mine.iter().map(|(_, d)| *d).collect();
            mine.into_iter().filter(|d| !others.contains(d)).collect()
        }
    };
    let freed = store.remove(&victims);
    println!(
        "removed {} ({})",
        plural(victims.len(), "file"),
        format_size(freed)
    );
    Ok(())
}
