//! Element names for the documents. Material ids are untrusted text
//! (UUIDs, spaces, any Unicode); MaterialX names and USD prim names must
//! be identifiers. The real id is kept in each document's metadata.

use crate::digest::Sha256Digest;

/// An identifier (`[A-Za-z_][A-Za-z0-9_]*`) for material `id`: the id
/// itself when it is one; otherwise every other character becomes `_`, a
/// leading digit gets a `_` before it, and 8 hex digits of the id's
/// SHA-256 follow, so that ids differing only in replaced characters
/// (`a b`, `a-b`) still get different names.
pub fn safe_name(id: &str) -> String {
    let mut name = String::with_capacity(id.len() + 10);
    if !id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.push('_');
    }
    name.extend(id.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    if name != id {
        let digest = Sha256Digest::of(id.as_bytes()).0;
        name.push('_');
        for byte in &digest[..4] {
            name.push_str(&format!("{byte:02x}"));
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_identifier(name: &str) -> bool {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    #[test]
    fn identifiers_stay_as_they_are() {
        assert_eq!(safe_name("Rock064"), "Rock064");
        assert_eq!(safe_name("brick_wall_02"), "brick_wall_02");
        assert_eq!(safe_name("_x"), "_x");
    }

    #[test]
    fn other_ids_are_replaced_and_told_apart() {
        let uuid = safe_name("3f2a9c1e-0b7d-4e5a-9c3f-2a1b0c9d8e7f");
        assert!(
            uuid.starts_with("_3f2a9c1e_0b7d_4e5a_9c3f_2a1b0c9d8e7f_"),
            "{uuid}"
        );
        assert_eq!(uuid.len(), 1 + 36 + 1 + 8);
        assert_eq!(
            safe_name("Plastic (Acrylic)").len(),
            "Plastic__Acrylic__".len() + 8
        );
        assert_ne!(safe_name("a b"), safe_name("a-b"));
        assert_ne!(safe_name("a b"), safe_name("a_b"));
        assert_eq!(safe_name("a_b"), "a_b");
        assert!(safe_name("Mármol").starts_with("M_rmol_"));
        assert!(safe_name("").starts_with("__"));
    }

    proptest! {
        #[test]
        fn any_id_gives_a_stable_identifier(id in any::<String>()) {
            let name = safe_name(&id);
            prop_assert!(is_identifier(&name), "{:?} -> {:?}", id, name);
            prop_assert_eq!(&name, &safe_name(&id));
            prop_assert_eq!(name == id, is_identifier(&id));
        }
    }
}
