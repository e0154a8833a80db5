//! The environment variables of the reference client that name the dataset
//! and the release, read in its order, so that one environment names the
//! same data to both programs:
//!
//! 1. `MAT_VIS_DATASET=<owner>/<name>@<tag>`: repository and tag at once
//!    (the last `@` separates them; an empty side names nothing);
//! 2. `MAT_VIS_HF_DATASET=<owner>/<name>` and `MAT_VIS_TAG=<tag>`, each
//!    where the first did not name its part;
//! 3. `MAT_VIS_HF_BASE=<url>`, the base URL, only where no repository is
//!    named above.
//!
//! Flags come before all of them (`--tag`; `--repo` or `--base-url`).

use crate::names::check_tag;

/// What the environment names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    /// A repository on the Hub, `<owner>/<name>`, and the variable it
    /// came from (for messages).
    pub repo: Option<(String, &'static str)>,
    pub tag: Option<String>,
    /// A base URL, when no repository is named.
    pub base: Option<String>,
}

impl Named {
    /// Reads the process's environment.
    pub fn read() -> Result<Named, String> {
        Named::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; an empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Named, String> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut named = Named::default();
        if let Some(both) = var("MAT_VIS_DATASET") {
            let Some((repo, tag)) = both.rsplit_once('@') else {
                return Err(format!(
                    "MAT_VIS_DATASET={both:?} is not <owner>/<name>@<tag>"
                ));
            };
            named.repo = (!repo.is_empty()).then(|| (repo.to_string(), "MAT_VIS_DATASET"));
            named.tag = (!tag.is_empty()).then(|| tag.to_string());
        }
        if named.repo.is_none() {
            named.repo = var("MAT_VIS_HF_DATASET").map(|repo| (repo, "MAT_VIS_HF_DATASET"));
        }
        if named.tag.is_none() {
            named.tag = var("MAT_VIS_TAG");
        }
        if named.repo.is_none() {
            named.base = var("MAT_VIS_HF_BASE");
        }
        if let Some(tag) = &named.tag {
            check_tag(tag).map_err(|e| {
                format!("the tag {tag:?} that MAT_VIS_DATASET or MAT_VIS_TAG names {e}")
            })?;
        }
        Ok(named)
    }

    /// The tags to load: those of the flags, else the environment's, else
    /// `default`.
    pub fn tags(&self, flags: &[String], default: &str) -> Vec<String> {
        if !flags.is_empty() {
            return flags.to_vec();
        }
        vec![self.tag.clone().unwrap_or_else(|| default.to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(vars: &[(&str, &str)]) -> Result<Named, String> {
        Named::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_combined_variable_comes_first_then_the_split_ones_then_the_base_url() {
        let all = [
            ("MAT_VIS_DATASET", "winner/repo@v2026.04.9"),
            ("MAT_VIS_HF_DATASET", "loser/repo"),
            ("MAT_VIS_TAG", "v2026.01.1"),
            ("MAT_VIS_HF_BASE", "http://mirror/resolve"),
        ];
        let n = named(&all).unwrap();
        assert_eq!(n.repo, Some(("winner/repo".to_string(), "MAT_VIS_DATASET")));
        assert_eq!(n.tag.as_deref(), Some("v2026.04.9"));
        assert_eq!(n.base, None, "a named repository wins over the base URL");
        // Each part on its own: the repository of one, the tag of the other.
        let n = named(&[("MAT_VIS_DATASET", "a/b@"), ("MAT_VIS_TAG", "v2")]).unwrap();
        assert_eq!(n.repo.unwrap().0, "a/b");
        assert_eq!(n.tag.as_deref(), Some("v2"));
        let n = named(&[("MAT_VIS_DATASET", "@v3"), ("MAT_VIS_HF_DATASET", "c/d")]).unwrap();
        assert_eq!(n.repo, Some(("c/d".to_string(), "MAT_VIS_HF_DATASET")));
        assert_eq!(n.tag.as_deref(), Some("v3"));
        // The last @ separates.
        let n = named(&[("MAT_VIS_DATASET", "org/repo@x@v1")]).unwrap();
        assert_eq!(
            (n.repo.unwrap().0.as_str(), n.tag.as_deref()),
            ("org/repo@x", Some("v1"))
        );
        // The base URL alone, and nothing at all.
        let n = named(&[("MAT_VIS_HF_BASE", "http://m/r"), ("MAT_VIS_TAG", "")]).unwrap();
        assert_eq!((n.base.as_deref(), n.tag), (Some("http://m/r"), None));
        assert_eq!(named(&[]).unwrap(), Named::default());
    }

    #[test]
    fn malformed_values_are_refused_with_the_variable_named() {
        let err = named(&[("MAT_VIS_DATASET", "gerchowl/mat-vis")]).unwrap_err();
        assert!(err.contains("MAT_VIS_DATASET"), "{err}");
        let err = named(&[("MAT_VIS_TAG", "../etc")]).unwrap_err();
        assert!(err.contains("MAT_VIS_TAG"), "{err}");
    }

    #[test]
    fn flags_come_before_the_environment() {
        let n = named(&[("MAT_VIS_TAG", "v9")]).unwrap();
        assert_eq!(n.tags(&[], "v1"), ["v9"]);
        assert_eq!(n.tags(&["v5".into(), "v6".into()], "v1"), ["v5", "v6"]);
        assert_eq!(Named::default().tags(&[], "v1"), ["v1"]);
    }
}
