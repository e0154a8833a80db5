//! Generates the CSI messages and services (proto/csi.proto) with a protoc
//! shipped as a crate, so that building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // SAFETY: the build script is single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_build::configure()
        // Connecting is the client's business (the tests bring a channel).
        .build_transport(false)
        // Secrets must never reach a log: its Debug is written by hand.
        .skip_debug("csi.v1.NodePublishVolumeRequest")
        .compile_protos(
            &["proto/csi.proto"],
            &[std::path::Path::new("proto"), &include],
        )?;
    println!("cargo:rerun-if-changed=proto/csi.proto");
    Ok(())
}
