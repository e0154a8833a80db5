//! Writes a generated mat-vis release to a directory, for benchmarks and
//! for trying mirrors by hand:
//!
//!     cargo run --release --example generate -- <DIR> <TAG> sample [MATERIALS] [BASE_PX]
//!     cargo run --release --example generate -- <DIR> <TAG> large [MATERIALS]
//!     cargo run --release --example generate -- <DIR> <TAG> big [MEGABYTES]
//!
//! The revision lands in `<DIR>/<TAG>/`; serve `<DIR>` as `<base>/`.

use matvisfs_sample::{Release, ReleaseSpec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: generate <DIR> <TAG> sample|large|big [N] [BASE_PX]");
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
        other => {
            eprintln!("unknown preset {other:?}");
            std::process::exit(2);
        }
    };
    let release = Release::generate(&spec);
    release
        .write_to(std::path::Path::new(dir))
        .expect("writing the release");
    let bytes: usize = release.textures().map(|(_, b)| b.len()).sum();
    println!(
        "{} textures, {bytes} bytes, in {dir}/{tag}",
        release.textures().count()
    );
}
