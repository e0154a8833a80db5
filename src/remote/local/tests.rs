use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, SystemTime};

use super::*;
use crate::remote::MemorySink;

const TAG: &str = "v1";

/// A dataset copy with `v1/a.json` and `v1/big.bin`.
fn copy() -> (tempfile::TempDir, LocalRemote) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("v1/sub")).unwrap();
    fs::write(dir.path().join("v1/a.json"), b"{\"a\": 1}\n").unwrap();
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(dir.path().join("v1/big.bin"), big).unwrap();
    let remote = LocalRemote::new(&format!("file://{}", dir.path().display())).unwrap();
    (dir, remote)
}

fn at(path: &str) -> Location {
    Location::revision(path)
}

fn sink() -> MemorySink {
    MemorySink::with_limit(1 << 30)
}

fn fetched(outcome: Result<GetOutcome, FetchError>) -> RemoteMeta {
    match outcome {
        Ok(GetOutcome::Fetched(meta)) => meta,
        other => panic!("expected a body, got {other:?}"),
    }
}

fn etag_of(remote: &LocalRemote, path: &str) -> Validators {
    Validators {
        etag: remote.head(TAG, &at(path)).unwrap().etag,
        last_modified: None,
    }
}

#[test]
fn a_get_gives_the_bytes_and_the_same_size_and_validator_as_a_head() {
    let (dir, remote) = copy();
    for path in ["a.json", "big.bin"] {
        let mut body = sink();
        let meta = fetched(remote.get(TAG, &at(path), &Validators::default(), &mut body));
        assert_eq!(
            body.bytes,
            fs::read(dir.path().join(TAG).join(path)).unwrap()
        );
        assert_eq!(meta.size, Some(body.bytes.len() as u64));
        assert_eq!(meta, remote.head(TAG, &at(path)).unwrap());
        assert!(meta.etag.is_some());
    }
}

#[test]
fn an_unchanged_file_is_not_modified_and_its_body_is_not_sent() {
    let (_dir, remote) = copy();
    let mut body = sink();
    let outcome = remote.get(TAG, &at("a.json"), &etag_of(&remote, "a.json"), &mut body);
    assert!(matches!(outcome, Ok(GetOutcome::NotModified(_))));
    assert!(body.bytes.is_empty());
}

#[test]
fn a_replaced_file_has_another_validator_even_with_the_same_size_and_time() {
    let (dir, remote) = copy();
    let path = dir.path().join("v1/a.json");
    let before = etag_of(&remote, "a.json");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    // Written aside and renamed over, as rsync does: only the inode differs.
    let aside = dir.path().join("v1/.a.json.tmp");
    fs::write(&aside, b"{\"a\": 2}\n").unwrap();
    File::options()
        .write(true)
        .open(&aside)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&aside, &path).unwrap();
    let mut body = sink();
    let meta = fetched(remote.get(TAG, &at("a.json"), &before, &mut body));
    assert_eq!(body.bytes, b"{\"a\": 2}\n");
    assert_ne!(meta.etag, before.etag);
}

#[test]
fn a_file_rewritten_in_place_has_another_validator() {
    let (dir, remote) = copy();
    let path = dir.path().join("v1/a.json");
    let before = etag_of(&remote, "a.json");
    fs::write(&path, b"{\"b\": 1}\n").unwrap();
    let file = File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(1))
        .unwrap();
    let mut body = sink();
    let meta = fetched(remote.get(TAG, &at("a.json"), &before, &mut body));
    assert_eq!(body.bytes, b"{\"b\": 1}\n");
    assert_ne!(meta.etag, before.etag);
}

/// Appends to the file at its first write, as a writer racing the read would.
struct RacingSink {
    inner: MemorySink,
    path: PathBuf,
    raced: bool,
    resets: usize,
}

impl BodySink for RacingSink {
    fn reset(&mut self) -> Result<(), FetchError> {
        self.resets += 1;
        self.inner.reset()
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        if !self.raced {
            self.raced = true;
            let mut bytes = fs::read(&self.path).unwrap();
            bytes.extend_from_slice(b"appended");
            fs::write(&self.path, bytes).unwrap();
        }
        self.inner.write(chunk)
    }
}

#[test]
fn a_file_changed_while_it_is_read_is_read_again_whole() {
    let (dir, remote) = copy();
    let path = dir.path().join("v1/big.bin");
    let mut body = RacingSink {
        inner: sink(),
        path: path.clone(),
        raced: false,
        resets: 0,
    };
    let meta = fetched(remote.get(TAG, &at("big.bin"), &Validators::default(), &mut body));
    let now = fs::read(&path).unwrap();
    assert!(now.ends_with(b"appended"));
    assert_eq!(body.inner.bytes, now);
    assert_eq!(meta.size, Some(now.len() as u64));
    assert_eq!(body.resets, 2);
}

#[test]
fn ranges_are_exact_conditional_and_bounded() {
    let (dir, remote) = copy();
    let whole = fs::read(dir.path().join("v1/big.bin")).unwrap();
    let slice = Slice {
        offset: 300_000,
        length: 290_000,
    };
    let mut body = sink();
    let meta = fetched(remote.get_range(
        TAG,
        &at("big.bin"),
        slice,
        &Validators::default(),
        &mut body,
    ));
    assert_eq!(body.bytes, &whole[300_000..590_000]);
    assert_eq!(meta.size, Some(290_000));
    let validators = etag_of(&remote, "big.bin");
    assert_eq!(meta.etag, validators.etag, "the whole file's validator");
    let outcome = remote.get_range(TAG, &at("big.bin"), slice, &validators, &mut sink());
    assert!(matches!(outcome, Ok(GetOutcome::NotModified(_))));
    let past_the_end = Slice {
        offset: 599_999,
        length: 2,
    };
    let outcome = remote.get_range(
        TAG,
        &at("big.bin"),
        past_the_end,
        &Validators::default(),
        &mut sink(),
    );
    assert_eq!(outcome.unwrap_err(), FetchError::Status(416));
}

#[test]
fn missing_files_and_directories_are_not_found() {
    let (_dir, remote) = copy();
    for (tag, path) in [
        (TAG, "nope.json"),
        ("v2", "a.json"),
        (TAG, "a.json/x"),
        (TAG, "sub"),
    ] {
        assert_eq!(
            remote.head(tag, &at(path)),
            Err(FetchError::NotFound),
            "{tag}/{path}"
        );
        let outcome = remote.get(tag, &at(path), &Validators::default(), &mut sink());
        assert_eq!(outcome.unwrap_err(), FetchError::NotFound, "{tag}/{path}");
    }
}

#[test]
fn paths_that_could_leave_the_root_are_refused() {
    let (dir, remote) = copy();
    fs::write(dir.path().join("secret"), b"outside the revision").unwrap();
    for (tag, path) in [
        (TAG, "../secret"),
        (TAG, "sub/../../secret"),
        ("..", "secret"),
        (TAG, "./a.json"),
        (TAG, "sub//a.json"),
        (TAG, ""),
        (TAG, "a\0.json"),
    ] {
        assert!(
            matches!(remote.head(tag, &at(path)), Err(FetchError::Rejected(_))),
            "{tag}/{path}"
        );
    }
    let url = Location::Absolute("https://example.invalid/x.parquet".parse().unwrap());
    assert!(matches!(
        remote.head(TAG, &url),
        Err(FetchError::Rejected(_))
    ));
}

#[test]
fn symlinks_may_stay_inside_the_root_but_not_leave_it() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("passwd"), b"root:x:0:0").unwrap();
    let (dir, remote) = copy();
    let v1 = dir.path().join("v1");
    // Inside: a deduplicated copy links its files to one store.
    symlink("../v1/a.json", v1.join("linked.json")).unwrap();
    let mut body = sink();
    fetched(remote.get(TAG, &at("linked.json"), &Validators::default(), &mut body));
    assert_eq!(body.bytes, b"{\"a\": 1}\n");
    symlink(outside.path().join("passwd"), v1.join("file-out")).unwrap();
    symlink(outside.path(), v1.join("dir-out")).unwrap();
    for path in ["file-out", "dir-out/passwd"] {
        let mut body = sink();
        let outcome = remote.get(TAG, &at(path), &Validators::default(), &mut body);
        assert!(matches!(outcome, Err(FetchError::Rejected(_))), "{path}");
        assert!(body.bytes.is_empty());
        assert!(matches!(
            remote.head(TAG, &at(path)),
            Err(FetchError::Rejected(_))
        ));
    }
}

#[test]
fn only_file_urls_of_existing_directories_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    assert!(is_file_url("file:///srv/mat-vis"));
    assert!(!is_file_url("https://huggingface.co/datasets/x/y/resolve"));
    assert!(!is_file_url("/srv/mat-vis"));
    assert!(LocalRemote::new(&format!("file://{}/", dir.path().display())).is_ok());
    let missing = format!("file://{}/missing", dir.path().display());
    assert!(LocalRemote::new(&missing).is_err());
    fs::write(dir.path().join("f"), b"").unwrap();
    assert!(LocalRemote::new(&format!("file://{}/f", dir.path().display())).is_err());
    assert!(LocalRemote::new("file://otherhost/srv").is_err());
    assert!(LocalRemote::new("http://localhost/srv").is_err());
}

#[test]
fn urls_in_messages_name_the_file_under_the_base() {
    let (dir, remote) = copy();
    assert_eq!(
        remote.url(TAG, &at("sub/x.png")),
        format!("file://{}/v1/sub/x.png", dir.path().display())
    );
}
