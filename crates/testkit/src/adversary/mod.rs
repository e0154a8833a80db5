//! The adversary: a randomized, seeded, differential attack on the mount's
//! first promise (every byte served is the server's own bytes for that
//! path, from one whole version of the file).
//!
//! - [`model`] and [`mutate`]: the release and what each publication does
//!   to it, chosen by a seed;
//! - [`views`]: what each manifest and catalog version says;
//! - [`history`]: every version of every path with its lifetime;
//! - [`server`]: the Hugging Face layout over an atomically swapped
//!   snapshot, with a request log;
//! - [`blob`]: texture bytes that name their version;
//! - [`oracle`]: what a session may have returned; [`report`]: figures,
//!   and the events that show a violation.
//!
//! The load that runs through real mounts is `tests/adversary.rs`.

pub mod blob;
pub mod history;
pub mod model;
pub mod mutate;
pub mod oracle;
pub mod report;
pub mod server;
pub mod views;
