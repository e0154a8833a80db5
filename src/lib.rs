//! matvisfs: the mat-vis PBR texture dataset as a read-only filesystem.
//!
//! Layers, from the network up: [`remote`] (HTTP behind a trait), [`store`]
//! (the disk cache), [`format`] (manifest and catalogs), [`dataset`] (tags,
//! revalidation, file content), [`fs`] (inodes, handles, operations) and
//! [`fuse`] (the thin adapter to the kernel). [`mount`] and [`daemon`] run
//! it. The sample releases of the demo and the tests come from the
//! `matvisfs-sample` crate; the test server and other test tooling live in
//! `matvisfs-testkit`, a dev-dependency only. [`materials`] writes the
//! MaterialX and USD documents the tree serves beside a material's textures.

// What the binary runs.
pub mod cache_commands;
pub mod cli;
pub mod control;
pub mod csi;
pub mod demo;
pub mod mount;
pub mod mount_helper;
pub mod prefetch;

// What the integration tests check directly (parsers, names, cache layout).
pub mod duration;
pub mod format;
pub mod materials;
pub mod names;
pub mod size;
pub mod store;

pub(crate) mod allocator;
pub(crate) mod daemon;
pub(crate) mod dataset;
pub(crate) mod descriptors;
pub(crate) mod digest;
pub(crate) mod environment;
pub(crate) mod flight;
pub(crate) mod fs;
pub(crate) mod fuse;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod own_mount;
pub(crate) mod remote;
pub(crate) mod stats;
pub(crate) mod wait;
pub(crate) mod workers;
