//! The entries of one directory listing, packed: all names in one string,
//! so that a tier of a million materials costs some 13 bytes an entry
//! beyond its names, not a string allocation each.

use super::view::Kind;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Entries {
    names: String,
    /// Where each name ends in `names`.
    ends: Vec<u32>,
    kinds: Vec<Kind>,
}

impl Entries {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn push(&mut self, name: &str, kind: Kind) {
        self.names.push_str(name);
        // A listing's names are far below 4 GiB: a catalog is at most
        // `DOCUMENT_LIMIT` bytes, and every name in it is a part of it.
        self.ends
            .push(u32::try_from(self.names.len()).expect("listing under 4 GiB"));
        self.kinds.push(kind);
    }

    pub fn get(&self, index: usize) -> Option<(&str, Kind)> {
        let end = *self.ends.get(index)? as usize;
        let start = match index {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        Some((&self.names[start..end], self.kinds[index]))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Kind)> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Sorted by name, each name once (the first of its kind kept).
    pub fn sorted(self) -> Entries {
        let ordered = self.iter().zip(self.iter().skip(1)).all(|(a, b)| a.0 < b.0);
        if ordered {
            return self;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|a, b| self.get(*a).unwrap().0.cmp(self.get(*b).unwrap().0));
        let mut out = Entries::default();
        for (name, kind) in order.into_iter().filter_map(|i| self.get(i)) {
            let last = out.len().checked_sub(1).and_then(|i| out.get(i));
            if last.is_none_or(|(last, _)| last != name) {
                out.push(name, kind);
            }
        }
        out
    }
}

impl<S: AsRef<str>> FromIterator<(S, Kind)> for Entries {
    fn from_iter<I: IntoIterator<Item = (S, Kind)>>(items: I) -> Self {
        let mut out = Entries::default();
        out.extend(items);
        out
    }
}

impl<S: AsRef<str>> Extend<(S, Kind)> for Entries {
    fn extend<I: IntoIterator<Item = (S, Kind)>>(&mut self, items: I) {
        for (name, kind) in items {
            self.push(name.as_ref(), kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_names_and_kinds_and_sort_once_each() {
        let entries: Entries = [
            ("b", Kind::Dir),
            ("a.png", Kind::File),
            ("b", Kind::File),
            ("", Kind::Symlink),
        ]
        .into_iter()
        .collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries.get(1), Some(("a.png", Kind::File)));
        assert_eq!(entries.get(3), Some(("", Kind::Symlink)));
        assert_eq!(entries.get(4), None);
        let sorted = entries.sorted();
        assert_eq!(
            sorted.iter().collect::<Vec<_>>(),
            [("", Kind::Symlink), ("a.png", Kind::File), ("b", Kind::Dir)]
        );
        let already: Entries = [("x", Kind::Dir), ("y", Kind::Dir)].into_iter().collect();
        assert_eq!(already.clone().sorted(), already);
    }
}
