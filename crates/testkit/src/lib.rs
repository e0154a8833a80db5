//! Test tooling for matvisfs, kept out of the shipped binary: a dev-dependency
//! of the product only.
//!
//! - [`devserver`]: an HTTP/1.1 (and HTTPS) server that behaves like the
//!   Hugging Face resolve endpoint and Hub API over a directory, with a
//!   request log and injectable faults;
//! - [`containers`] and [`packers`]: a generated release repacked into the
//!   tar (schema 2) and Parquet (schema 1) layouts of older releases;
//! - [`tls`]: a throwaway certificate authority;
//! - [`adversary`]: a versioned in-memory server, the mutation model and
//!   the oracle of the randomized test of the mount's first promise.
//!
//! The releases themselves come from `matvisfs-sample`. Nothing here depends
//! on matvisfs, so its own unit tests can use the kit too.

pub mod adversary;
pub mod containers;
pub mod devserver;
pub mod packers;
pub mod tls;
