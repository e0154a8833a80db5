//! A volume's attributes (the PersistentVolume's `volumeAttributes`, or an
//! inline volume's) and its secret: checked, each refusal naming the
//! attribute, and turned into the arguments of `matvisfs mount`.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cli::DEFAULT_TAG;

/// Release tags to mount, comma-separated [default: the mount's default].
pub const TAGS: &str = "tags";
/// The dataset's base URL: http, https or file.
pub const BASE_URL: &str = "baseUrl";
/// A Hugging Face dataset repository, OWNER/NAME (not with baseUrl).
pub const REPO: &str = "repo";
/// How often a mount asks whether a tag changed: 30s, 10m, 1h, 1d.
pub const REVALIDATE_EVERY: &str = "revalidateEvery";
/// "true": never use the network, serve what the node's cache holds.
pub const OFFLINE: &str = "offline";
/// The cap of the shared cache this volume's mount keeps (e.g. 50GB).
pub const CACHE_MAX_SIZE: &str = "cacheMaxSize";
/// "true": every tag is a commit id, and only commits are served (warm
/// reads near local-disk speed, see `matvisfs mount --commits-only`).
pub const COMMITS_ONLY: &str = "commitsOnly";

/// Every attribute a volume may have.
pub const ATTRIBUTES: [&str; 7] = [
    TAGS,
    BASE_URL,
    REPO,
    REVALIDATE_EVERY,
    OFFLINE,
    CACHE_MAX_SIZE,
    COMMITS_ONLY,
];

/// The key of the access token in the volume's secret.
pub const TOKEN_SECRET: &str = "token";

/// Keys the kubelet adds itself (pod information, `ephemeral`): accepted,
/// and not part of the volume's identity.
pub const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";

/// The mount flag `revalidateEvery` becomes, where the binary has it.
const REVALIDATE_FLAG: &str = "revalidate-every";

/// What a volume mounts, from its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub tags: Vec<String>,
    pub base_url: Option<String>,
    pub repo: Option<String>,
    /// As written, once checked.
    pub revalidate_every: Option<String>,
    pub offline: bool,
    pub cache_max_size: Option<u64>,
    /// Left out of the identity when false, so that volumes published
    /// before the attribute existed keep theirs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub commits_only: bool,
}

impl Volume {
    /// Checks the attributes; the error names the first that is wrong.
    pub fn parse(context: &HashMap<String, String>) -> Result<Volume, String> {
        let mut keys: Vec<&String> = context.keys().collect();
        keys.sort();
        for key in keys {
            if !ATTRIBUTES.contains(&key.as_str()) && !key.starts_with(KUBELET_PREFIX) {
                return Err(format!(
                    "unknown volume attribute {key:?}; known: {}",
                    ATTRIBUTES.join(", ")
                ));
            }
        }
        let get = |key: &str| context.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let tags = match get(TAGS) {
            None => vec![DEFAULT_TAG.to_string()],
            Some(list) => list
                .split(',')
                .map(str::trim)
                .map(|tag| {
                    crate::names::check_tag(tag)
                        .map(|()| tag.to_string())
                        .map_err(|e| format!("attribute {TAGS}: tag {tag:?}: the name {e}"))
                })
                .collect::<Result<_, _>>()?,
        };
        let base_url = get(BASE_URL)
            .map(|text| {
                let url = url::Url::parse(text)
                    .map_err(|e| format!("attribute {BASE_URL}: {text:?} is not a URL: {e}"))?;
                match url.scheme() {
                    "http" | "https" | "file" => Ok(text.to_string()),
                    other => Err(format!(
                        "attribute {BASE_URL}: {text:?}: the scheme {other:?} is not http, https or file"
                    )),
                }
            })
            .transpose()?;
        let repo = get(REPO)
            .map(|repo| {
                if base_url.is_some() {
                    return Err(format!(
                        "attributes {REPO} and {BASE_URL} both name the dataset: give one"
                    ));
                }
                let valid = |part: &str| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                };
                match repo.split_once('/') {
                    Some((owner, name)) if valid(owner) && valid(name) => Ok(repo.to_string()),
                    _ => Err(format!("attribute {REPO}: {repo:?} is not OWNER/NAME")),
                }
            })
            .transpose()?;
        let revalidate_every = get(REVALIDATE_EVERY)
            .map(|text| {
                crate::duration::parse_duration(text)
                    .map(|_| text.to_string())
                    .map_err(|e| format!("attribute {REVALIDATE_EVERY}: {e}"))
            })
            .transpose()?;
        let flag = |key: &str| match get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(format!("attribute {key}: {other:?} is not true or false")),
        };
        let offline = flag(OFFLINE)?;
        let commits_only = flag(COMMITS_ONLY)?;
        if let Some(tag) = tags
            .iter()
            .find(|t| commits_only && !crate::names::is_commit(t))
        {
            return Err(format!(
                "attribute {COMMITS_ONLY}: tag {tag:?} is not a commit id (40 hex digits); \
                 name each revision by its commit in {TAGS}"
            ));
        }
        let cache_max_size = get(CACHE_MAX_SIZE)
            .map(|text| {
                crate::size::parse_size(text)
                    .map_err(|e| format!("attribute {CACHE_MAX_SIZE}: {e}"))
            })
            .transpose()?;
        Ok(Volume {
            tags,
            base_url,
            repo,
            revalidate_every,
            offline,
            cache_max_size,
            commits_only,
        })
    }

    /// What makes two publications of a volume the same: its id and what
    /// it mounts (pod information and the secret aside).
    pub fn fingerprint(&self, volume_id: &str) -> String {
        let text = serde_json::to_string(&(volume_id, self)).expect("serializable");
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The arguments of `matvisfs mount` after the mountpoint.
    pub fn mount_args(
        &self,
        cache: &Path,
        default_cap: u64,
        log: &Path,
        token: Option<&Path>,
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            // Pods run as any user.
            "--allow-other".into(),
            "--cache-dir".into(),
            cache.display().to_string(),
            "--cache-max-size".into(),
            self.cache_max_size.unwrap_or(default_cap).to_string(),
            "--log-file".into(),
            log.display().to_string(),
        ];
        for tag in &self.tags {
            args.extend(["--tag".into(), tag.clone()]);
        }
        if let Some(base) = &self.base_url {
            args.extend(["--base-url".into(), base.clone()]);
        }
        if let Some(repo) = &self.repo {
            args.extend(["--repo".into(), repo.clone()]);
        }
        if self.offline {
            args.push("--offline".into());
        }
        if self.commits_only {
            args.push("--commits-only".into());
        }
        if let Some(token) = token {
            args.extend(["--token-file".into(), token.display().to_string()]);
        }
        if let Some(every) = &self.revalidate_every {
            if mount_has_flag(REVALIDATE_FLAG) {
                args.extend([format!("--{REVALIDATE_FLAG}"), every.clone()]);
            } else {
                tracing::warn!(
                    "this matvisfs has no --{REVALIDATE_FLAG}: {REVALIDATE_EVERY} is not applied"
                );
            }
        }
        args
    }
}

/// Whether `matvisfs mount` of this very binary has `--NAME`.
fn mount_has_flag(name: &str) -> bool {
    let command = <crate::cli::Cli as clap::CommandFactory>::command();
    command
        .find_subcommand("mount")
        .is_some_and(|mount| mount.get_arguments().any(|a| a.get_long() == Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn attributes_become_mount_arguments() {
        let volume = Volume::parse(&context(&[
            (TAGS, "v2026.04.2, v2026.05.0"),
            (BASE_URL, "http://127.0.0.1:8080/x"),
            (OFFLINE, "true"),
            (CACHE_MAX_SIZE, "1GB"),
            ("csi.storage.k8s.io/pod.name", "render-0"),
            ("csi.storage.k8s.io/ephemeral", "true"),
        ]))
        .unwrap();
        assert_eq!(volume.tags, ["v2026.04.2", "v2026.05.0"]);
        assert!(volume.offline);
        assert_eq!(volume.cache_max_size, Some(1_000_000_000));
        let args = volume.mount_args(Path::new("/c"), 5, Path::new("/l"), Some(Path::new("/t")));
        let joined = args.join(" ");
        assert!(
            joined.contains("--tag v2026.04.2 --tag v2026.05.0"),
            "{joined}"
        );
        assert!(joined.contains("--cache-max-size 1000000000"), "{joined}");
        assert!(joined.contains("--token-file /t"), "{joined}");
        assert!(joined.contains("--offline"), "{joined}");
        assert!(!joined.contains("--commits-only"), "{joined}");
        assert_eq!(Volume::parse(&context(&[])).unwrap().tags, [DEFAULT_TAG]);

        let commit = "0123456789abcdef0123456789abcdef01234567";
        let pinned = Volume::parse(&context(&[(TAGS, commit), (COMMITS_ONLY, "true")])).unwrap();
        let joined = pinned
            .mount_args(Path::new("/c"), 5, Path::new("/l"), None)
            .join(" ");
        assert!(
            joined.contains(&format!("--tag {commit}")) && joined.contains("--commits-only"),
            "{joined}"
        );
    }

    /// A volume published before `commitsOnly` existed keeps its identity.
    #[test]
    fn an_attribute_left_out_leaves_the_identity_as_it_was() {
        let volume = Volume::parse(&context(&[(TAGS, "v1")])).unwrap();
        let text = serde_json::to_string(&volume).unwrap();
        assert!(!text.contains("commits_only"), "{text}");
    }

    #[test]
    fn each_refusal_names_its_attribute() {
        for (pairs, named) in [
            (vec![("color", "red")], "color"),
            (vec![(TAGS, "v1,../x")], TAGS),
            (vec![(TAGS, "v1,,v2")], TAGS),
            (vec![(BASE_URL, "ftp://mirror/x")], BASE_URL),
            (vec![(BASE_URL, "not a url")], BASE_URL),
            (vec![(REPO, "a/b/c")], REPO),
            (vec![(REPO, "a/b"), (BASE_URL, "http://m/x")], REPO),
            (vec![(REVALIDATE_EVERY, "10")], REVALIDATE_EVERY),
            (vec![(REVALIDATE_EVERY, "0s")], REVALIDATE_EVERY),
            (vec![(REVALIDATE_EVERY, "1w")], REVALIDATE_EVERY),
            (vec![(OFFLINE, "yes")], OFFLINE),
            (vec![(COMMITS_ONLY, "1")], COMMITS_ONLY),
            (vec![(COMMITS_ONLY, "true")], COMMITS_ONLY),
            (vec![(TAGS, "v1"), (COMMITS_ONLY, "true")], COMMITS_ONLY),
            (vec![(CACHE_MAX_SIZE, "lots")], CACHE_MAX_SIZE),
        ] {
            let error = Volume::parse(&context(&pairs)).unwrap_err();
            assert!(error.contains(named), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn pod_information_is_not_part_of_the_identity() {
        let a = Volume::parse(&context(&[
            (TAGS, "v1"),
            ("csi.storage.k8s.io/pod.uid", "1"),
        ]));
        let b = Volume::parse(&context(&[
            (TAGS, "v1"),
            ("csi.storage.k8s.io/pod.uid", "2"),
        ]));
        assert_eq!(a.unwrap().fingerprint("vol"), b.unwrap().fingerprint("vol"));
        let c = Volume::parse(&context(&[(TAGS, "v2")])).unwrap();
        assert_ne!(
            c.fingerprint("vol"),
            Volume::parse(&context(&[(TAGS, "v1")]))
                .unwrap()
                .fingerprint("vol")
        );
    }
}
