//! matvisfs: the mat-vis PBR texture dataset as a read-only filesystem.
//!
//! Layers, from the network up: [`remote`] (HTTP behind a trait), [`store`]
//! (the disk cache), [`format`] (manifest and catalogs), [`dataset`] (tags,
//! revalidation, file content), [`fs`] (inodes, handles, operations) and
//! [`fuse`] (the thin adapter to the kernel). [`mount`] and [`daemon`] run
//! it; [`fixture`] and [`devserver`] generate and serve sample releases for
//! the demo and the tests. [`materials`] writes the MaterialX and USD
//! documents the tree serves beside a material's textures.

pub mod cache_commands;
pub mod cli;
pub mod daemon;
pub mod dataset;
pub mod demo;
pub mod devserver;
pub mod digest;
pub mod error;
pub mod fixture;
pub mod flight;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod io_modes;
pub mod logging;
pub mod materials;
pub mod mount;
pub mod names;
pub mod prefetch;
pub mod remote;
pub mod size;
pub mod stats;
pub mod store;
pub mod workers;
