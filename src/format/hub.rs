//! Responses of the Hugging Face Hub API: the refs of a dataset (which
//! revisions are releases) and pages of a revision's file tree (sizes and
//! sha256 without a request per file). Untrusted like every document.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::FormatError;
use super::lenient::refusal;
use crate::digest::Sha256Digest;
use crate::names::{check_component, check_tag, is_release_tag};

/// A file of a revision as the tree API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Path inside the revision, every component checked.
    pub path: String,
    pub size: u64,
    /// The ETag the resolve endpoint gives: the LFS sha256, else the git
    /// blob id, quoted.
    pub etag: String,
    /// The content's sha256, for files stored in LFS.
    pub sha256: Option<Sha256Digest>,
}

/// A directory's files, from the pages of its listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeListing {
    pub files: Vec<TreeFile>,
    /// API requests it took.
    pub pages: u32,
    /// Why the listing stopped before its last page (a bound, a loop), if
    /// it did: the files are still what the server said.
    pub cut_short: Option<String>,
    /// It came from the Hugging Face Hub itself (the host of
    /// `--hf-endpoint`), not from a mirror in its layout.
    pub from_hub: bool,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<String>,
    oid: Option<String>,
    size: Option<u64>,
    lfs: Option<RawLfs>,
}

#[derive(Deserialize)]
struct RawLfs {
    oid: Option<String>,
    size: Option<u64>,
}

/// One page of `GET /api/datasets/<repo>/tree/<rev>/<path>`: its files
/// (directories and bad entries left out).
pub fn parse_tree_page(bytes: &[u8]) -> Result<Vec<TreeFile>, FormatError> {
    parse_tree_page_below(bytes, "")
}

/// One page, keeping only the files below `dir` (every file when empty):
/// entries elsewhere are dropped as they are read, so a page padded with
/// them costs no memory beyond its own bytes.
pub fn parse_tree_page_below(bytes: &[u8], dir: &str) -> Result<Vec<TreeFile>, FormatError> {
    let prefix = match dir.trim_matches('/') {
        "" => String::new(),
        dir => format!("{dir}/"),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let files =
        serde::Deserializer::deserialize_any(&mut deserializer, PageVisitor { prefix: &prefix })
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => FormatError::WrongShape(e.to_string()),
                _ => FormatError::from(e),
            })?;
    deserializer.end()?;
    Ok(files)
}

struct PageVisitor<'p> {
    prefix: &'p str,
}

impl<'de> serde::de::Visitor<'de> for PageVisitor<'_> {
    type Value = Vec<TreeFile>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tree page (a JSON array)")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut files = Vec::new();
        // Entry by entry, as raw text first: one nested too deep to read
        // is one bad entry.
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let entry = serde_json::from_str::<RawEntry>(raw.get()).ok();
            if let Some(file) = entry.and_then(tree_file) {
                if file.path.starts_with(self.prefix) {
                    files.push(file);
                }
            }
        }
        Ok(files)
    }
}

fn tree_file(entry: RawEntry) -> Option<TreeFile> {
    if entry.kind.as_deref() != Some("file") {
        return None;
    }
    let path = entry.path?;
    path.split('/').try_for_each(check_component).ok()?;
    let sha256 = entry
        .lfs
        .as_ref()
        .and_then(|lfs| lfs.oid.as_deref())
        .and_then(Sha256Digest::from_hex);
    let size = entry.lfs.as_ref().and_then(|lfs| lfs.size).or(entry.size)?;
    let etag = match sha256 {
        Some(sha256) => sha256.to_hex(),
        None => {
            let oid = entry.oid?;
            if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            oid
        }
    };
    Some(TreeFile {
        path,
        size,
        etag: format!("\"{etag}\""),
        sha256,
    })
}

/// `GET /api/datasets/<repo>/refs`: the branch and tag names that look like
/// releases, sorted, without duplicates.
pub fn parse_release_refs(bytes: &[u8]) -> Result<Vec<String>, FormatError> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    // Ref by ref: one nested too deep to read is one bad entry.
    let refs: std::collections::HashMap<String, &RawValue> = serde_json::from_slice(bytes)
        .map_err(|e| refusal(bytes, e, "the refs are not a JSON object"))?;
    let mut names: Vec<String> = ["branches", "tags"]
        .iter()
        .filter_map(|kind| serde_json::from_str::<Vec<&RawValue>>(refs.get(*kind)?.get()).ok())
        .flatten()
        .filter_map(|r| serde_json::from_str::<Named>(r.get()).ok())
        .map(|r| r.name)
        .filter(|name| check_tag(name).is_ok() && is_release_tag(name))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The target of `rel="next"` in a `Link` header.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(key, value)| {
                key.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            })
            .then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn tree_pages_give_files_with_lfs_sizes_and_hashes() {
        let page = format!(
            r#"[
            {{"type":"directory","oid":"abc","size":0,"path":"ambientcg/1k/Rock064"}},
            {{"type":"file","oid":"1234abcd","size":133,"path":"ambientcg/1k/Rock064/color.png",
              "lfs":{{"oid":"{SHA}","size":40213,"pointerSize":133}}}},
            {{"type":"file","oid":"beef","size":0,"path":"ambientcg/1k/.tier_complete"}},
            {{"type":"file","oid":"beef","size":5,"path":"ambientcg/../etc/passwd"}},
            {{"type":"file","size":5,"path":"no/oid.png"}},
            {{"type":"file","oid":"x y","size":5,"path":"bad/oid.png"}},
            "not an object",
            {{"type":"file","oid":"cafe","size":7,"path":"ambientcg/1k/Rock064/normal.png","xet":{{}}}}
        ]"#
        );
        let files = parse_tree_page(page.as_bytes()).unwrap();
        assert_eq!(
            files,
            vec![
                TreeFile {
                    path: "ambientcg/1k/Rock064/color.png".into(),
                    size: 40213,
                    etag: format!("\"{SHA}\""),
                    sha256: Sha256Digest::from_hex(SHA),
                },
                TreeFile {
                    path: "ambientcg/1k/.tier_complete".into(),
                    size: 0,
                    etag: "\"beef\"".into(),
                    sha256: None,
                },
                TreeFile {
                    path: "ambientcg/1k/Rock064/normal.png".into(),
                    size: 7,
                    etag: "\"cafe\"".into(),
                    sha256: None,
                },
            ]
        );
        assert!(parse_tree_page(b"{}").is_err());
        assert!(parse_tree_page(b"nope").is_err());
    }

    #[test]
    fn refs_keep_release_shaped_names_only() {
        let refs = br#"{"branches":[{"name":"main","ref":"refs/heads/main"},
            {"name":"v2026.05.0-rc1"}],
            "converts":[{"name":"parquet"}],
            "tags":[{"name":"v2026.04.2","targetCommit":"abc"},{"name":"v2026.04.2"},
                    {"name":"../v2026.01.1"},{"name":"latest"},{"other":1}]}"#;
        assert_eq!(
            parse_release_refs(refs).unwrap(),
            vec!["v2026.04.2".to_string(), "v2026.05.0-rc1".to_string()]
        );
        assert!(parse_release_refs(b"[]").is_err());
    }

    #[test]
    fn an_entry_nested_too_deep_is_one_bad_entry() {
        let deep = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
        let page = format!(
            r#"[{{"type":"file","oid":"beef","size":5,"path":"a/x.png","lfs":{deep}}},
                {{"type":"file","oid":"cafe","size":7,"path":"a/y.png","extra":{deep}}}]"#
        );
        let files = parse_tree_page(page.as_bytes()).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/y.png"]);
        let refs = format!(
            r#"{{"branches":[{{"name":"v2026.05.0","x":{deep}}}, {deep}],
                "tags":[{{"name":{deep}}}, {{"name":"v2026.04.2"}}], "other":{deep}}}"#
        );
        assert_eq!(
            parse_release_refs(refs.as_bytes()).unwrap(),
            ["v2026.04.2", "v2026.05.0"]
        );
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let header = r#"<https://hf.co/api/x?cursor=a>; rel="prev", <https://hf.co/api/datasets/o/n/tree/v1/a?recursive=true&cursor=Yj0x>; rel="next""#;
        assert_eq!(
            next_link(header),
            Some("https://hf.co/api/datasets/o/n/tree/v1/a?recursive=true&cursor=Yj0x")
        );
        assert_eq!(next_link("<https://x/y>; rel=next"), Some("https://x/y"));
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
