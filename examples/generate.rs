//! Writes a generated mat-vis release to a directory, for benchmarks and
//! for trying mirrors by hand:
//!
//!     cargo run --release --example generate -- <DIR> [TAG] [MATERIALS] [BASE_PX]
//!
//! The revision lands in `<DIR>/<TAG>/`; serve `<DIR>` as `<base>/`.

use matvisfs::fixture::{Release, ReleaseSpec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: generate <DIR> [TAG] [MATERIALS] [BASE_PX]");
        std::process::exit(2);
    };
    let tag = args
        .get(1)
        .map(String::as_str)
        .unwrap_or(matvisfs::cli::DEFAULT_TAG);
    let materials = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(6);
    let mut spec = ReleaseSpec::sample(tag, materials);
    if let Some(px) = args.get(3).and_then(|n| n.parse().ok()) {
        spec.base_px = px;
    }
    let release = Release::generate(&spec);
    release
        .write_to(std::path::Path::new(dir))
        .expect("writing the release");
    let bytes: usize = release.textures().map(|(_, b)| b.len()).sum();
    println!(
        "{} textures, {} bytes, in {dir}/{tag}",
        release.textures().count(),
        bytes
    );
}
