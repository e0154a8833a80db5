//! Operations asked as the kernel-reading threads ask them: in quick mode
//! first, again in the normal mode only when they must wait. The mock
//! server panics at any request reached in quick mode (debug builds), so
//! each walk here fails when a path lacks its `may_block()` check.

use std::cell::Cell;

use super::*;
use crate::wait;

/// A session whose operations run as the adapter runs them.
struct Quick<'a> {
    s: &'a Session,
    /// Quick attempts that stopped to be run again on a worker.
    deferred: Cell<usize>,
}

impl Quick<'_> {
    fn ask<T>(&self, op: impl Fn() -> Result<T, FsError>) -> Result<T, FsError> {
        match wait::quick(&op) {
            Err(e) if e.is_would_block() => {
                self.deferred.set(self.deferred.get() + 1);
                op()
            }
            answered => answered,
        }
    }

    fn ino(&self, path: &str) -> u64 {
        let mut ino = ROOT_INO;
        for part in path.split('/') {
            ino = self.ask(|| self.s.core.lookup(ino, part)).unwrap().attr.ino;
            self.ask(|| self.s.core.getattr(ino)).unwrap();
        }
        ino
    }

    /// Every entry below `dir`, by readdirplus, files read whole.
    fn walk(&self, dir: &str, out: &mut Vec<(String, Vec<u8>)>) {
        let ino = self.ino(dir);
        let listing = self.ask(|| self.s.core.listing(ino, 0)).unwrap();
        let mut entries = Vec::new();
        self.s.core.fill(&listing, 2, true, |e, _| {
            entries.push((e.name.to_string(), e.kind));
            false
        });
        for (name, kind) in entries {
            let path = format!("{dir}/{name}");
            match kind {
                Kind::Dir => self.walk(&path, out),
                _ => {
                    let bytes = self.read(&path);
                    out.push((path, bytes));
                }
            }
        }
    }

    /// Reads `path` whole as a direct reader does, attributes dropped by an
    /// invalidation asked for again first.
    fn read(&self, path: &str) -> Vec<u8> {
        let ino = self.ino(path);
        let core = &self.s.core;
        let flags = libc::O_RDONLY | libc::O_DIRECT;
        let opened = self.ask(|| core.open(ino, flags)).unwrap();
        let mut out = Vec::new();
        loop {
            if self.s.kernel.dropped.lock().remove(&ino) {
                self.ask(|| core.getattr(ino)).unwrap();
            }
            let offset = out.len() as u64;
            let chunk = self.ask(|| core.read(opened.fh, offset, 7000, 0)).unwrap();
            if chunk.bytes.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk.bytes);
        }
        core.release(opened.fh);
        out
    }
}

fn quick(s: &Session) -> Quick<'_> {
    Quick {
        s,
        deferred: Cell::new(0),
    }
}

/// Walks the tag and checks every texture's bytes against `release`.
fn walk_and_check(s: &Session, release: &Release) -> usize {
    let q = quick(s);
    let mut seen = Vec::new();
    q.walk(TAG, &mut seen);
    let prefix = format!("{TAG}/");
    for (path, bytes) in release.textures() {
        let served = seen
            .iter()
            .find(|(p, _)| p.strip_prefix(&prefix) == Some(path.as_str()))
            .unwrap_or_else(|| panic!("{path} not listed"));
        assert_eq!(&served.1, bytes, "{path}");
    }
    q.deferred.get()
}

#[test]
fn an_uncached_tag_is_walked_without_a_request_in_quick_mode() {
    let release = small();
    let h = Harness::new(&release);
    let s = h.session();
    assert!(walk_and_check(&s, &release) > 0, "downloads wait");
    assert!(texture_gets(&h.remote) > 0);
}

#[test]
fn a_revalidating_tag_is_walked_without_a_request_in_quick_mode() {
    let mut release = small();
    let h = Harness::new(&release);
    let paths: Vec<String> = release.textures().map(|(p, _)| p.clone()).collect();
    h.warm(&paths.iter().map(String::as_str).collect::<Vec<_>>());
    let changed = "ambientcg/1k/Rock064/color.png";
    release.replace_texture(changed, matvisfs_sample::images::png("new", "color", 16));
    h.publish(&release);
    h.remote.clear_log();
    let s = h.session();
    assert!(walk_and_check(&s, &release) > 0, "revalidations wait");
    assert!(h.remote.log().iter().any(|l| l.conditional), "revalidated");
    // Cached and checked: a second walk is answered from memory.
    h.remote.clear_log();
    assert_eq!(walk_and_check(&s, &release), 0);
    assert!(h.remote.log().is_empty(), "{:#?}", h.remote.log());
}

#[test]
fn with_the_hub_api_sizes_come_without_a_request_in_quick_mode() {
    let release = small();
    let h = Harness::new(&release);
    h.remote.enable_hub(&[TAG]);
    let s = h.session();
    assert!(walk_and_check(&s, &release) > 0);
    assert!(h.remote.log().iter().any(|l| l.method == "API"));
}

#[test]
fn offline_cached_files_are_served_without_a_request_in_quick_mode() {
    let release = small();
    let h = Harness::new(&release);
    let paths: Vec<String> = release.textures().map(|(p, _)| p.clone()).collect();
    h.warm(&paths.iter().map(String::as_str).collect::<Vec<_>>());
    let s = h.session_with(true, &[TAG]);
    let q = quick(&s);
    for (path, bytes) in release.textures() {
        assert_eq!(&q.read(&format!("{TAG}/{path}")), bytes, "{path}");
    }
}
