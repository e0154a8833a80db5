//! Files the catalog or the manifest names that the server does not have:
//! a channel the bake failed to resize or convert keeps its tier in the
//! material's `available_tiers`, gpuopen's `maps` name channels that were
//! never uploaded, and a map the manifest does not name may not exist.
//!
//! A file is absent when the server says so for that very path: a 404 to
//! its HEAD or GET, or a complete tree listing of its directory that does
//! not name it (a listing cut short by a bound proves nothing, and a
//! network failure never does). An absent file is left out of the tree of
//! the tag's current version: `ENOENT`, gone from listings and from the
//! documents generated beside it, the kernel told. It is remembered for
//! the session only, not on disk: a file the server gains later without a
//! new manifest or catalog (a fixed upload) is seen by the next mount, and
//! a 404 answered while a mirror was half synced is not kept for good.

use std::collections::HashSet;

use super::Change;
use super::error::Error;
use super::tag_context::TagContext;
use super::view::Step;
use crate::format::hub::TreeFile;

/// Examples of absent files named in the log and the statistics.
pub const EXAMPLES: usize = 8;

/// How the server said a file is not there.
#[derive(Debug, Clone, Copy)]
enum Proof {
    Answered404,
    NotListed,
}

/// Leaves `paths` out of the tree, when `generation` is still the tag's:
/// the view changes, and the kernel is told, before this returns.
fn record(t: &TagContext, paths: Vec<String>, generation: u64, proof: Proof) {
    let Some((old, new)) = t.version.update(Step::Absent { paths, generation }) else {
        return;
    };
    let found: Vec<&String> = new.absent.difference(&old.absent).collect();
    let shown: Vec<&&String> = found.iter().take(EXAMPLES).collect();
    let how = match proof {
        Proof::Answered404 => "the server answered 404",
        Proof::NotListed => "not in the server's complete tree listing of their directory",
    };
    tracing::info!(
        tag = %t.name,
        generation,
        count = found.len(),
        "files the catalog names are not on the server ({how}); left out: {shown:?}"
    );
    for path in found {
        t.ctx.changed(Change {
            tag: t.name.to_string(),
            file: Some(path.clone()),
        });
    }
}

/// The server answered 404 for `path` under `generation`: it is left out,
/// and the operation fails as for any name that does not exist.
pub fn answered_404(t: &TagContext, path: &str, generation: u64) -> Error {
    record(t, vec![path.to_string()], generation, Proof::Answered404);
    Error::NotFound
}

/// A complete tree listing of `dir` (a tier or a material directory) named
/// `listed`: the texture files the tree has there and the listing does not
/// name are absent.
pub fn not_listed(t: &TagContext, dir: &str, listed: &[TreeFile], generation: u64) {
    let view = t.version.view();
    if view.generation != generation {
        return;
    }
    let Some(expected) = view.textures_below(dir) else {
        return;
    };
    let listed: HashSet<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    let absent: Vec<String> = expected
        .into_iter()
        .filter(|path| !listed.contains(path.as_str()))
        .collect();
    if !absent.is_empty() {
        record(t, absent, generation, Proof::NotListed);
    }
}
