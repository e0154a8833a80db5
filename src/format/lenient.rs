//! Serde building blocks for untrusted documents: names that are safe as a
//! path component, paths made of such names, and values that may have the
//! wrong shape (kept as the reason, so that the entry is skipped rather
//! than the whole document refused).

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::names::check_component;

/// A name that passed [`check_component`]: one safe path component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidName(String);

impl ValidName {
    pub fn new(name: &str) -> Result<Self, String> {
        check_component(name)
            .map(|()| ValidName(name.to_string()))
            .map_err(|e| format!("{name:?} {e}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ValidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ValidName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ValidName::new(&name).map_err(D::Error::custom)
    }
}

/// A path inside a revision: valid names separated by `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionPath(String);

impl RevisionPath {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for RevisionPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        match path.split('/').try_for_each(check_component) {
            Ok(()) => Ok(RevisionPath(path)),
            Err(e) => Err(D::Error::custom(format!("the path {path:?} {e}"))),
        }
    }
}

/// How deep serde_json reads a value into a tree: its recursion limit,
/// which keeps the stack bounded.
pub const MAX_DEPTH: usize = 128;

/// One entry of a document as a [`Value`], or why it cannot be one. The
/// document is first passed over as raw text, which takes no stack however
/// deep it nests; an entry nested deeper than [`MAX_DEPTH`] (valid JSON,
/// which other readers may take) is then refused here on its own, never
/// its whole document.
pub fn entry_value(raw: &RawValue) -> Result<Value, String> {
    serde_json::from_str(raw.get()).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            format!("it nests deeper than {MAX_DEPTH} levels")
        } else {
            e.to_string()
        }
    })
}

/// The reason a document that does not parse as `shape` is refused: not
/// JSON at all, or JSON of another shape. The check skips values without
/// building them, so it holds for any depth.
pub fn refusal(bytes: &[u8], error: serde_json::Error, shape: &str) -> super::FormatError {
    match serde_json::from_slice::<IgnoredAny>(bytes) {
        Ok(_) => super::FormatError::WrongShape(shape.into()),
        Err(_) => super::FormatError::NotJson(error),
    }
}

/// A `T`, or why the value was not one. Never fails itself.
#[derive(Debug)]
pub struct Lenient<T>(pub Result<T, String>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Lenient(T::deserialize(value).map_err(|e| e.to_string())))
    }
}

/// One string or a list of them; anything else (and any non-string in a
/// list) counts as nothing.
#[derive(Debug, Default)]
pub struct Strings(pub Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            One(String),
            Many(Vec<Lenient<String>>),
            Other(IgnoredAny),
        }
        Ok(Strings(match Shape::deserialize(deserializer)? {
            Shape::One(one) => vec![one],
            Shape::Many(items) => items.into_iter().filter_map(|s| s.0.ok()).collect(),
            Shape::Other(_) => Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked_while_deserializing() {
        let name = |json: &str| serde_json::from_str::<ValidName>(json).map(|n| n.0);
        assert_eq!(name(r#""a.json""#).unwrap(), "a.json");
        for bad in [r#""..""#, r#""a/b""#, r#""""#, "3", r#""a\u0007""#] {
            assert!(name(bad).is_err(), "{bad}");
        }
        let path = |json: &str| serde_json::from_str::<RevisionPath>(json).map(|p| p.0);
        assert_eq!(path(r#""a/b.tar""#).unwrap(), "a/b.tar");
        assert!(path(r#""../b.tar""#).is_err());
        assert!(path(r#""a//b""#).is_err());
    }

    #[test]
    fn lenient_values_keep_the_reason() {
        let lenient: Vec<Lenient<u64>> = serde_json::from_str(r#"[1, "x", null]"#).unwrap();
        assert_eq!(lenient[0].0, Ok(1));
        assert!(lenient[1].0.is_err() && lenient[2].0.is_err());
        let strings = |json: &str| serde_json::from_str::<Strings>(json).unwrap().0;
        assert_eq!(strings(r#""a""#), ["a"]);
        assert_eq!(strings(r#"["a", 1, "b"]"#), ["a", "b"]);
        assert!(strings("{}").is_empty());
    }
}
