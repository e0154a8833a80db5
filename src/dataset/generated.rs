//! The documents the mount generates beside a material's textures: exact
//! sizes from the catalog with no request, and bytes made at open, held in
//! memory. They follow the catalog: a new catalog gives new documents.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::error::{Error, Result};
use super::tag_context::TagContext;
use super::tree::GeneratedRef;
use crate::digest::Sha256Digest;
use crate::format::upstream_document;
use crate::materials::{Generated, materialx, materialx_len, usda, usda_len};
use crate::store::{Blob, OpenBlob};

pub fn size(generated: &GeneratedRef) -> u64 {
    match generated.kind {
        Generated::MaterialX => materialx_len(&generated.spec),
        Generated::Usd => usda_len(&generated.spec),
        Generated::Upstream => generated.upstream.map_or(0, |(_, doc)| doc.len),
    }
}

fn bytes(t: &TagContext, generated: &GeneratedRef) -> Result<Vec<u8>> {
    match generated.kind {
        Generated::MaterialX => Ok(materialx(&generated.spec).into_bytes()),
        Generated::Usd => Ok(usda(&generated.spec).into_bytes()),
        Generated::Upstream => {
            let Some((map, doc)) = generated.upstream else {
                return Err(Error::NotFound);
            };
            let record = t.version.state().record(map).ok_or(Error::NotFound)?;
            let file = t
                .ctx
                .documents
                .open(&record.blob().digest)
                .map_err(Error::cache)?;
            let mut token = vec![0u8; (doc.token.end - doc.token.start) as usize];
            file.read_exact_at(&mut token, doc.token.start)
                .map_err(Error::cache)?;
            let text = upstream_document(&token).map_err(|e| {
                Error::refused(
                    t.url(&crate::format::Location::revision(map)),
                    format!("an unusable MaterialX map: {e}"),
                )
            })?;
            Ok(text.into_bytes())
        }
    }
}

/// An anonymous in-memory file holding `bytes`.
fn memory_file(bytes: &[u8]) -> Result<File> {
    let mut file = crate::store::memory_file(c"matvisfs-document").map_err(Error::cache)?;
    file.write_all(bytes).map_err(Error::cache)?;
    Ok(file)
}

/// A generated document, made now, bound to its bytes' digest.
pub fn open(t: &TagContext, generated: &GeneratedRef) -> Result<OpenBlob> {
    let bytes = bytes(t, generated)?;
    let blob = Blob {
        digest: Sha256Digest::of(&bytes),
        size: bytes.len() as u64,
    };
    let file = memory_file(&bytes)?;
    Ok(OpenBlob {
        blob,
        file: Arc::new(file),
        in_memory: true,
    })
}
