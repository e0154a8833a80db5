//! Rules for names that come from untrusted documents (catalogs, manifests,
//! the command line) before they become directory entries or cache paths.

use std::fmt;

/// Longest name a Linux directory entry may carry.
pub const MAX_NAME_BYTES: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    DotOrDotDot,
    Slash,
    Nul,
    ControlCharacter,
    TooLong,
    Hidden,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "is empty",
            NameError::DotOrDotDot => "is '.' or '..'",
            NameError::Slash => "contains '/'",
            NameError::Nul => "contains a NUL byte",
            NameError::ControlCharacter => "contains a control character",
            NameError::TooLong => "is longer than 255 bytes",
            NameError::Hidden => "starts with a dot",
        })
    }
}

/// Checks that `name` can be one path component, both in the mount and in
/// the cache directory. Control characters are refused too: they are legal
/// on Linux but let a hostile catalog write escape sequences into terminals.
pub fn check_component(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotOrDotDot);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    for c in name.chars() {
        match c {
            '/' => return Err(NameError::Slash),
            '\0' => return Err(NameError::Nul),
            c if c.is_control() => return Err(NameError::ControlCharacter),
            _ => {}
        }
    }
    Ok(())
}

/// A tag name: one path component that is not hidden (names starting with
/// a dot belong to matvisfs itself, such as `.matvisfs`).
pub fn check_tag(name: &str) -> Result<(), NameError> {
    check_component(name)?;
    if name.starts_with('.') {
        return Err(NameError::Hidden);
    }
    Ok(())
}

/// True for names shaped like a mat-vis release: `v2026.04.2`,
/// `v2026.05.0-rc1`. Only such names are looked up on the server when they
/// are neither pinned nor cached, so that probes such as `.Trash` or
/// `autorun.inf` never cause a request.
pub fn is_release_tag(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('v') else {
        return false;
    };
    let (version, suffix) = match rest.split_once('-') {
        Some((version, suffix)) => (version, Some(suffix)),
        None => (rest, None),
    };
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |s: &str| !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 3 || !parts.iter().all(|p| numeric(p)) || parts[0].len() != 4 {
        return false;
    }
    match suffix {
        None => true,
        Some(s) => {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
        }
    }
}

/// Whether `name` is a commit id (40 lower-case hex digits): a revision that
/// can never change.
pub fn is_commit(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where a release tag stands in CalVer order: year, month, number, then
/// finals after their release candidates. `None` for other names.
pub fn release_order(name: &str) -> Option<(bool, [u64; 3], String)> {
    if !is_release_tag(name) {
        return None;
    }
    let rest = &name[1..];
    let (version, suffix) = match rest.split_once('-') {
        Some((version, suffix)) => (version, Some(suffix)),
        None => (rest, None),
    };
    let mut numbers = [0u64; 3];
    for (slot, part) in numbers.iter_mut().zip(version.split('.')) {
        *slot = part.parse().ok()?;
    }
    // Pre-releases sort by their suffix, numbers by value (`rc10` > `rc9`).
    let suffix = suffix.map_or(String::new(), |s| {
        let digits = s.trim_start_matches(|c: char| !c.is_ascii_digit());
        format!("{:>20}{digits:0>20}", &s[..s.len() - digits.len()])
    });
    Some((suffix.is_empty(), numbers, suffix))
}

/// The newest release among `names`: the newest final one, or, when there
/// is none, the newest pre-release.
pub fn newest_release<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter_map(|n| {
            release_order(n).map(|(is_final, numbers, suffix)| ((is_final, numbers, suffix), n))
        })
        .max()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_release_is_the_newest_final_one() {
        let names = [
            "v2026.04.2",
            "v2026.05.0-rc1",
            "v2026.04.10",
            "main",
            "v2025.12.1",
        ];
        assert_eq!(newest_release(names), Some("v2026.04.10"));
        assert_eq!(
            newest_release(["v2026.05.0-rc2", "v2026.05.0-rc10", "v2026.04.0-rc3"]),
            Some("v2026.05.0-rc10")
        );
        assert_eq!(newest_release(["main", "dev"]), None);
        assert_eq!(
            newest_release(["v2026.05.0-rc1", "v2026.01.1"]),
            Some("v2026.01.1")
        );
    }

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "Rock064",
            "color.png",
            "5f3c0e1a-uuid",
            "Bois d'été",
            "a".repeat(255).as_str(),
        ] {
            assert_eq!(check_component(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_names_that_escape_or_break_paths() {
        let cases = [
            ("", NameError::Empty),
            (".", NameError::DotOrDotDot),
            ("..", NameError::DotOrDotDot),
            ("a/b", NameError::Slash),
            ("../etc", NameError::Slash),
            ("a\0b", NameError::Nul),
            ("a\nb", NameError::ControlCharacter),
            ("\u{1b}[31m", NameError::ControlCharacter),
        ];
        for (name, expected) in cases {
            assert_eq!(check_component(name), Err(expected), "{name:?}");
        }
        assert_eq!(check_component(&"x".repeat(256)), Err(NameError::TooLong));
        // 128 two-byte characters: 256 bytes although only 128 characters.
        assert_eq!(check_component(&"é".repeat(128)), Err(NameError::TooLong));
    }

    #[test]
    fn recognises_release_tags() {
        for tag in [
            "v2026.04.2",
            "v2026.05.0-rc1",
            "v2027.12.10",
            "v2026.05.1-beta.2",
        ] {
            assert!(is_release_tag(tag), "{tag}");
        }
        for name in [
            "main",
            ".Trash",
            "autorun.inf",
            "v2026.04",
            "2026.04.2",
            "v26.04.2",
            "v2026.04.2-",
            "v2026.04.2-rc/1",
            "v2026.x.2",
            "v2026.04.2.1",
        ] {
            assert!(!is_release_tag(name), "{name}");
        }
    }
}
