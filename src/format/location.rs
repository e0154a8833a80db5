//! Where a file of a release is: a path in the revision, asked of the
//! dataset's server, or a URL of its own (schema-1 releases keep their
//! containers and rowmaps on GitHub Releases).

use std::fmt;

use url::Url;

use super::ValidName;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A path in the revision: `<base>/<tag>/<path>`.
    Revision(String),
    /// A URL of its own, whatever the base URL.
    Absolute(Url),
}

impl Location {
    pub fn revision(path: impl Into<String>) -> Self {
        Location::Revision(path.into())
    }

    /// The name a tag's documents and state know the file by: the path, or
    /// the URL.
    pub fn key(&self) -> &str {
        match self {
            Location::Revision(path) => path,
            Location::Absolute(url) => url.as_str(),
        }
    }

    /// `name` in the directory `base` (a URL), or in the revision when
    /// there is no base. `name` is one safe path component (never `.` or
    /// `..`), pushed as a segment (percent-encoded), never parsed as a URL,
    /// so a hostile name cannot point elsewhere.
    pub fn in_dir(base: Option<&Url>, name: &ValidName) -> Location {
        match base {
            None => Location::revision(name.as_str()),
            Some(base) => {
                let mut url = base.clone();
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.pop_if_empty().push(name.as_str());
                }
                Location::Absolute(url)
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_a_directory_stay_in_it() {
        let base = Url::parse("https://github.com/o/r/releases/download/v1/").unwrap();
        let name = |name: &str| ValidName::new(name).unwrap();
        let at = |n: &str| Location::in_dir(Some(&base), &name(n)).key().to_string();
        assert_eq!(
            at("a-1k.parquet"),
            "https://github.com/o/r/releases/download/v1/a-1k.parquet"
        );
        for hostile in ["https:evil.example", "x?y#z", "%2e%2e", "...", "a\\b"] {
            assert!(
                at(hostile).starts_with("https://github.com/o/r/releases/download/v1/")
                    && at(hostile).len() > base.as_str().len(),
                "{hostile}: {}",
                at(hostile)
            );
        }
        assert_eq!(
            Location::in_dir(None, &name("a.tar")),
            Location::Revision("a.tar".into())
        );
    }
}
