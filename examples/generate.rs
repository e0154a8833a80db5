//! Writes a generated mat-vis release to a directory, for benchmarks and
//! for trying mirrors by hand:
//!
//!     cargo run --release --example generate -- <DIR> <TAG> sample [MATERIALS] [BASE_PX]
//!     cargo run --release --example generate -- <DIR> <TAG> large [MATERIALS]
//!     cargo run --release --example generate -- <DIR> <TAG> big [MEGABYTES]
//!     cargo run --release --example generate -- <DIR> <TAG> hostile [MATERIALS]
//!
//! `hostile` writes a manifest and one catalog of `MATERIALS` minimal
//! entries (one tier, two channels), the smallest JSON per material that
//! still makes a directory with files, and no textures: the catalog a
//! hostile or careless mirror could serve to make a mount hold memory.
//!
//! The revision lands in `<DIR>/<TAG>/`; serve `<DIR>` as `<base>/`.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use matvisfs_sample::{MANIFEST_FILE, Release, ReleaseSpec, to_json};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: generate <DIR> <TAG> sample|large|big|hostile [N] [BASE_PX]");
        std::process::exit(2);
    }
    let (dir, tag, preset) = (&args[0], &args[1], args[2].as_str());
    let number =
        |i: usize, default: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(default);
    let spec = match preset {
        "sample" => {
            let mut spec = ReleaseSpec::sample(tag, number(3, 6));
            spec.base_px = number(4, spec.base_px as usize) as u32;
            spec
        }
        "large" => ReleaseSpec::large(tag, number(3, 3000)),
        "big" => ReleaseSpec::big(tag, number(3, 64) as u32),
        "hostile" => {
            write_hostile(Path::new(dir), tag, number(3, 100_000)).expect("writing the catalog");
            return;
        }
        other => {
            eprintln!("unknown preset {other:?}");
            std::process::exit(2);
        }
    };
    let release = Release::generate(&spec);
    release
        .write_to(Path::new(dir))
        .expect("writing the release");
    let bytes: usize = release.textures().map(|(_, b)| b.len()).sum();
    println!(
        "{} textures, {bytes} bytes, in {dir}/{tag}",
        release.textures().count()
    );
}

/// The source, tier and channels of the hostile catalog.
const HOSTILE_SOURCE: &str = "hostile";
const HOSTILE_TIER: &str = "1k";

fn write_hostile(dir: &Path, tag: &str, materials: usize) -> io::Result<()> {
    let revision = dir.join(tag);
    fs::create_dir_all(revision.join(HOSTILE_SOURCE).join(HOSTILE_TIER))?;
    let catalog_file = format!("{HOSTILE_SOURCE}.json");
    let manifest = json!({
        "schema_version": 3,
        "release_tag": tag,
        "sources": {HOSTILE_SOURCE: {
            "catalog": catalog_file,
            "tiers": {HOSTILE_TIER: {"complete": true}},
        }},
    });
    fs::write(revision.join(MANIFEST_FILE), to_json(&manifest))?;
    fs::write(
        revision
            .join(HOSTILE_SOURCE)
            .join(HOSTILE_TIER)
            .join(".tier_complete"),
        format!("{tag}\n"),
    )?;
    // Compact, one entry a line, sorted by id as catalogs are.
    let path = revision.join(&catalog_file);
    let mut out = io::BufWriter::new(fs::File::create(&path)?);
    out.write_all(b"[\n")?;
    for i in 0..materials {
        let separator = if i + 1 < materials { "," } else { "" };
        writeln!(
            out,
            r#"{{"id":"m{i:07}","source":"{HOSTILE_SOURCE}","maps":["color","normal"],"available_tiers":["{HOSTILE_TIER}"]}}{separator}"#
        )?;
    }
    out.write_all(b"]\n")?;
    out.flush()?;
    println!(
        "{materials} materials, a catalog of {} bytes, in {}",
        fs::metadata(&path)?.len(),
        revision.display()
    );
    Ok(())
}
