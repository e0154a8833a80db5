//! `matvisfs cache status|verify|clear`: what the cache holds, whether its
//! bytes are right, and emptying it. Safe while mounts use the cache: the
//! index is shared through the cache database, and a mount that finds a
//! file gone downloads it again.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::cli::{CacheArgs, CacheCommand, ClearArgs};
use crate::digest::Sha256Digest;
use crate::logging;
use crate::remote::origin_of;
use crate::size::{format_size, plural};
use crate::store::{CacheDir, ContentStore, verify_objects};

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
    // Evicts nothing: the limit is the mounts' to keep.
    let (store, recovery) = ContentStore::inspect(&dir);
    // Files another process was storing when it died are routine.
    if recovery.rebuilt || recovery.corrupt > 0 {
        eprintln!("{recovery}");
    }
    Ok((dir, store))
}

/// A cached tag: its origin (in clear) and name.
type TagKey = (String, String);

/// Which stored objects each cached tag of each origin uses, by path.
fn references(dir: &CacheDir) -> BTreeMap<TagKey, Vec<(String, Sha256Digest)>> {
    let mut out = BTreeMap::new();
    for origin in dir.origins() {
        for tag in origin.cached_tags() {
            let used = origin
                .tag(&tag)
                .records()
                .all()
                .into_iter()
                .filter_map(|r| Some((r.path, r.sha256?)))
                .collect();
            out.insert((origin.origin().to_string(), tag), used);
        }
    }
    out
}

/// The limits the cache is kept under: those of the live mounts and
/// prefetches using it (0: none), or, with none, `flag`
/// (`--cache-max-size`, a mount's default). Each process brings the cache
/// down to its own limit when it stores a file, so with several limits
/// the cache may stand anywhere up to the largest.
fn limit_line(users: &[u64], flag: u64, bytes: u64) -> String {
    let limit = |cap: u64| match cap {
        0 => "no limit".to_string(),
        cap => format_size(cap),
    };
    let used = |cap: u64| match cap {
        0 => limit(cap),
        cap => format!(
            "limit {} ({:.0}% used)",
            limit(cap),
            bytes as f64 * 100.0 / cap as f64
        ),
    };
    let processes = |n: usize| match n {
        1 => "the process".to_string(),
        n => format!("the {n} processes"),
    };
    let mut limits = users.to_vec();
    limits.sort_unstable();
    limits.dedup();
    match (users.len(), limits.as_slice()) {
        (0, _) => format!(
            "{} when mounted with it; no process uses the cache now",
            used(flag)
        ),
        (n, [only]) => format!("{}, kept by {} using it", used(*only), processes(n)),
        (n, several) => format!(
            "limits {} of {} using it: each brings the cache down to its own when it stores a file",
            several
                .iter()
                .map(|&c| limit(c))
                .collect::<Vec<_>>()
                .join(", "),
            processes(n)
        ),
    }
}

fn status(args: &CacheArgs) -> Result<(), String> {
    let (dir, store) = open(args)?;
    let stored: HashMap<Sha256Digest, u64> = store.entries().into_iter().collect();
    let (files, bytes) = (stored.len(), stored.values().sum::<u64>());
    println!("cache directory: {}", dir.root().display());
    let content = format!(
        "content: {} in {}",
        format_size(bytes),
        plural(files, "file")
    );
    let users = store.others_limits().unwrap_or_else(|e| {
        eprintln!("cannot tell which processes use the cache: {e}");
        Vec::new()
    });
    println!(
        "{content}, {}",
        limit_line(&users, args.cache_max_size, bytes)
    );
    let documents = dir.documents().list();
    let document_bytes: u64 = documents.iter().map(|l| l.size).sum();
    println!(
        "documents (manifests, catalogs): {} in {}",
        format_size(document_bytes),
        plural(documents.len(), "file")
    );

    let mut referenced_bytes = 0u64;
    let mut referenced = HashSet::new();
    let mut shown_origin = None;
    for ((origin, tag), used) in references(&dir) {
        if shown_origin.as_ref() != Some(&origin) {
            println!("origin {origin}:");
            shown_origin = Some(origin);
        }
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
            "  tag {tag}: {} in {}",
            format_size(total),
            plural(count, "file")
        );
        for (tier, (count, total)) in per_tier {
            println!(
                "    {tier:<26} {:>10} in {}",
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

/// `--tag T` clears what tag T of every origin uses (or of the origin
/// named by `--base-url`) and no other cached tag does.
fn clear(args: &ClearArgs) -> Result<(), String> {
    let (dir, store) = open(&args.cache)?;
    let refs = references(&dir);
    let origin = args.base_url.as_deref().map(origin_of);
    let victims: Vec<Sha256Digest> = match &args.tag {
        None => store.entries().into_iter().map(|(d, _)| d).collect(),
        Some(tag) => {
            let chosen = |(o, t): &TagKey| t == tag && origin.as_ref().is_none_or(|x| x == o);
            let mine: HashSet<Sha256Digest> = refs
                .iter()
                .filter(|(key, _)| chosen(key))
                .flat_map(|(_, used)| used.iter().map(|(_, d)| *d))
                .collect();
            if !refs.keys().any(chosen) {
                let cached: Vec<String> =
                    refs.keys().map(|(o, t)| format!("{t} from {o}")).collect();
                return Err(format!(
                    "tag {tag} is not in the cache{} (it has: {})",
                    origin.map(|o| format!(" for {o}")).unwrap_or_default(),
                    cached.join(", ")
                ));
            }
            let others: HashSet<Sha256Digest> = refs
                .iter()
                .filter(|(key, _)| !chosen(key))
                .flat_map(|(_, used)| used.iter().map(|(_, d)| *d))
                .collect();
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

#[cfg(test)]
mod tests {
    use super::limit_line;

    #[test]
    fn the_limit_shown_is_the_live_processes_and_every_one_when_they_differ() {
        let gb = 1_000_000_000;
        assert_eq!(
            limit_line(&[], 5 * gb, gb),
            "limit 5.0 GB (20% used) when mounted with it; no process uses the cache now"
        );
        assert_eq!(
            limit_line(&[2 * gb, 2 * gb], 5 * gb, gb),
            "limit 2.0 GB (50% used), kept by the 2 processes using it"
        );
        assert_eq!(
            limit_line(&[0], 5 * gb, gb),
            "no limit, kept by the process using it"
        );
        // A smaller limit does not hold while a larger one stores files;
        // "no limit" is one of them.
        let several = limit_line(&[gb, 0, 20 * gb], 5 * gb, gb);
        assert!(
            several.starts_with("limits no limit, 1.0 GB, 20.0 GB of the 3 processes"),
            "{several}"
        );
    }
}
