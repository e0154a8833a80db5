//! matvisfs: the mat-vis PBR texture dataset as a read-only filesystem.
//!
//! Layers, from the network up: [`remote`] (HTTP behind a trait), [`store`]
//! (the disk cache), [`format`] (manifest and catalogs), [`dataset`] (tags,
//! revalidation, file content), [`fs`] (inodes, handles, operations) and
//! [`fuse`] (the thin adapter to the kernel). [`mount`] and [`daemon`] run
//! it. The sample releases of the demo and the tests come from the
//! `matvisfs-sample` crate; the test server and other test tooling live in
//! `matvisfs-testkit`, a dev-dependency only.

pub mod cache_commands;
pub mod cli;
pub mod daemon;
pub mod dataset;
pub mod demo;
pub mod digest;
pub mod error;
pub mod flight;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod io_modes;
pub mod logging;
pub mod mount;
pub mod names;
pub mod prefetch;
pub mod remote;
pub mod size;
pub mod stats;
pub mod store;
pub mod workers;
