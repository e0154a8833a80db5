//! Inode numbers: handed out from 2 upward, one per path for the whole
//! session (never reused for another path), each with the kernel's lookup
//! count. Numbers are dense, so the table is a vector; it holds one entry
//! per path of the tree, whatever the kernel forgets and looks up again,
//! plus one for each number a path was given before (see
//! [`InodeTable::retire`]).

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use std::sync::Arc;

use parking_lot::Mutex;

pub const ROOT_INO: u64 = 1;

/// The hidden directory at the root with the session's statistics.
pub const CONTROL_DIR: &str = ".matvisfs";
pub const STATS_FILE: &str = "stats.json";

/// A node by name: `tag == None` is the mount's root (`path == ""`) or the
/// control directory below it; otherwise `path == ""` is a tag's directory
/// and any other `path` is relative to the tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeKey {
    pub tag: Option<Arc<str>>,
    /// Shared by the table's two maps (one allocation per node).
    pub path: Arc<str>,
}

impl NodeKey {
    pub fn root() -> Self {
        NodeKey {
            tag: None,
            path: "".into(),
        }
    }

    pub fn child(&self, name: &str) -> NodeKey {
        match &self.tag {
            None if !self.path.is_empty() || name == CONTROL_DIR => NodeKey {
                tag: None,
                path: if self.path.is_empty() {
                    name.into()
                } else {
                    format!("{}/{name}", self.path).into()
                },
            },
            None => NodeKey {
                tag: Some(name.into()),
                path: "".into(),
            },
            Some(tag) if self.path.is_empty() => NodeKey {
                tag: Some(tag.clone()),
                path: name.into(),
            },
            Some(tag) => NodeKey {
                tag: Some(tag.clone()),
                path: format!("{}/{name}", self.path).into(),
            },
        }
    }

    /// The parent's key and this node's name in it.
    pub fn parent(&self) -> Option<(NodeKey, &str)> {
        let Some(tag) = self.tag.as_ref() else {
            if self.path.is_empty() {
                return None;
            }
            return Some(match self.path.rsplit_once('/') {
                Some((dir, name)) => (
                    NodeKey {
                        tag: None,
                        path: dir.into(),
                    },
                    name,
                ),
                None => (NodeKey::root(), &*self.path),
            });
        };
        if self.path.is_empty() {
            return Some((NodeKey::root(), tag));
        }
        Some(match self.path.rsplit_once('/') {
            Some((dir, name)) => (
                NodeKey {
                    tag: Some(tag.clone()),
                    path: dir.into(),
                },
                name,
            ),
            None => (
                NodeKey {
                    tag: Some(tag.clone()),
                    path: "".into(),
                },
                &*self.path,
            ),
        })
    }
}

struct Inode {
    key: NodeKey,
    lookups: u64,
    /// Its path has a newer number (see [`InodeTable::retire`]).
    retired: bool,
}

struct Table {
    /// Inode `n` is at index `n - ROOT_INO`.
    inodes: Vec<Inode>,
    /// Indices into `inodes` by key: four bytes a node, not a second copy
    /// of every key.
    by_key: HashTable<u32>,
    hasher: RandomState,
    /// Inodes retired so far (see [`InodeTable::lookup_unless_retired_since`]).
    retirements: u64,
}

pub struct InodeTable {
    table: Mutex<Table>,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut table = Table {
            inodes: Vec::new(),
            by_key: HashTable::new(),
            hasher: RandomState::new(),
            retirements: 0,
        };
        table.ino_for(&NodeKey::root());
        table.inodes[0].lookups = 1;
        InodeTable {
            table: Mutex::new(table),
        }
    }
}

impl Table {
    fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes.get_mut(ino.checked_sub(ROOT_INO)? as usize)
    }

    fn find(&self, key: &NodeKey) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        let index = self
            .by_key
            .find(hash, |&i| self.inodes[i as usize].key == *key)?;
        Some(ROOT_INO + *index as u64)
    }

    fn ino_for(&mut self, key: &NodeKey) -> u64 {
        if let Some(ino) = self.find(key) {
            return ino;
        }
        let index = self.inodes.len();
        self.inodes.push(Inode {
            key: key.clone(),
            lookups: 0,
            retired: false,
        });
        let Table {
            inodes,
            by_key,
            hasher,
            ..
        } = self;
        by_key.insert_unique(hasher.hash_one(key), index as u32, |&i| {
            hasher.hash_one(&inodes[i as usize].key)
        });
        ROOT_INO + index as u64
    }

    fn counted(&mut self, key: &NodeKey) -> u64 {
        let ino = self.ino_for(key);
        self.get_mut(ino).expect("just inserted").lookups += 1;
        ino
    }
}

impl InodeTable {
    pub fn key(&self, ino: u64) -> Option<NodeKey> {
        self.table.lock().get_mut(ino).map(|i| i.key.clone())
    }

    pub fn ino_of(&self, key: &NodeKey) -> Option<u64> {
        self.table.lock().find(key)
    }

    /// The inode for `key`, counted as one more kernel reference.
    pub fn lookup(&self, key: &NodeKey) -> u64 {
        self.table.lock().counted(key)
    }

    /// How many inodes were retired so far.
    pub fn retirements(&self) -> u64 {
        self.table.lock().retirements
    }

    /// As [`InodeTable::lookup`], unless an inode was retired since the
    /// table counted `retirements`: then what was found of the path in
    /// between may be of its version before (`None`).
    pub fn lookup_unless_retired_since(&self, key: &NodeKey, retirements: u64) -> Option<u64> {
        let mut table = self.table.lock();
        (table.retirements == retirements).then(|| table.counted(key))
    }

    /// The inode for `key`, numbered if new, not counted as a kernel
    /// reference.
    pub fn number(&self, key: &NodeKey) -> u64 {
        self.table.lock().ino_for(key)
    }

    /// The inode for `key`, counted as one more kernel reference, and
    /// whether the kernel held it before: with none, it has no inode of
    /// that number (it forgets one only when it evicts it), nor any file
    /// of it open.
    pub fn lookup_held(&self, key: &NodeKey) -> (u64, bool) {
        let mut table = self.table.lock();
        let ino = table.ino_for(key);
        let inode = table.get_mut(ino).expect("just inserted");
        inode.lookups += 1;
        (ino, inode.lookups > 1)
    }

    /// The kernel dropped `count` references; returns how many it still
    /// holds (0: it has no inode for it any more, nor its pages).
    pub fn forget(&self, ino: u64, count: u64) -> u64 {
        match self.table.lock().get_mut(ino) {
            Some(inode) => {
                inode.lookups = inode.lookups.saturating_sub(count);
                inode.lookups
            }
            None => 0,
        }
    }

    /// Gives `ino`'s path a new number at its next lookup, for good: the
    /// kernel's inode `ino` keeps its path (for [`InodeTable::key`]) and
    /// its count, and no longer stands for the path's current file. False
    /// when `ino` was not its path's current number.
    pub fn retire(&self, ino: u64) -> bool {
        let mut table = self.table.lock();
        let Table {
            inodes,
            by_key,
            hasher,
            retirements,
        } = &mut *table;
        let Some(index) = ino.checked_sub(ROOT_INO).map(|i| i as usize) else {
            return false;
        };
        let Some(inode) = inodes.get_mut(index) else {
            return false;
        };
        // Its path's entry names it only while it is the current number.
        match by_key.find_entry(hasher.hash_one(&inode.key), |&i| i as usize == index) {
            Ok(entry) => entry.remove(),
            Err(_) => return false,
        };
        inode.retired = true;
        *retirements += 1;
        true
    }

    /// Whether `ino` was retired: its path has (or will have) another.
    pub fn is_retired(&self, ino: u64) -> bool {
        self.table.lock().get_mut(ino).is_some_and(|i| i.retired)
    }

    /// The kernel's references to `ino`.
    #[cfg(test)]
    pub fn lookups(&self, ino: u64) -> u64 {
        self.table.lock().get_mut(ino).map_or(0, |i| i.lookups)
    }

    /// Every inode under `tag`, with its key.
    pub fn under_tag(&self, tag: &str) -> Vec<(u64, NodeKey)> {
        self.table
            .lock()
            .inodes
            .iter()
            .enumerate()
            .filter(|(_, i)| i.key.tag.as_deref() == Some(tag) && i.lookups > 0 && !i.retired)
            .map(|(index, i)| (ROOT_INO + index as u64, i.key.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_know_their_parents() {
        let root = NodeKey::root();
        let tag = root.child("v1");
        let file = tag
            .child("ambientcg")
            .child("1k")
            .child("Rock")
            .child("color.png");
        assert_eq!(&*file.path, "ambientcg/1k/Rock/color.png");
        let (dir, name) = file.parent().unwrap();
        assert_eq!((&*dir.path, name), ("ambientcg/1k/Rock", "color.png"));
        let doc = tag.child("x.json");
        let (parent, name) = doc.parent().unwrap();
        assert_eq!((parent, name), (tag.clone(), "x.json"));
        assert_eq!(tag.parent().unwrap(), (root.clone(), "v1"));
        assert!(root.parent().is_none());
        let stats = root.child(CONTROL_DIR).child(STATS_FILE);
        assert_eq!(
            (stats.tag.clone(), &*stats.path),
            (None, ".matvisfs/stats.json")
        );
        assert_eq!(
            stats.parent().unwrap(),
            (root.child(CONTROL_DIR), STATS_FILE)
        );
        assert_eq!(
            root.child(CONTROL_DIR).parent().unwrap(),
            (root.clone(), CONTROL_DIR)
        );
    }

    #[test]
    fn numbers_are_stable_for_the_session() {
        let table = InodeTable::default();
        let key = NodeKey::root().child("v1");
        let a = table.lookup(&key);
        assert_eq!(a, 2);
        assert_eq!(table.lookup(&key), a);
        assert_eq!(table.lookups(a), 2);
        table.forget(a, 1);
        assert_eq!(table.key(a), Some(key.clone()));
        table.forget(a, 5); // more than it had: tolerated
        assert_eq!(table.lookups(a), 0);
        assert_eq!(table.lookup(&key), a, "the same path keeps its number");
        let b = table.lookup(&NodeKey::root().child("v2"));
        assert_eq!(b, a + 1);
        table.forget(ROOT_INO, 10);
        assert_eq!(table.key(ROOT_INO), Some(NodeKey::root()));
        table.forget(999, 1);
        assert_eq!(table.key(999), None);
        assert_eq!(table.key(0), None);
    }

    #[test]
    fn a_retired_number_keeps_its_path_and_the_path_gets_a_new_one() {
        let table = InodeTable::default();
        let key = NodeKey::root().child("v1").child("a.png");
        let other = table.lookup(&NodeKey::root().child("v1").child("b.png"));
        let old = table.lookup(&key);
        assert!(table.retire(old));
        assert!(!table.retire(old), "retired once");
        assert!(table.is_retired(old) && !table.is_retired(other));
        assert_eq!(table.key(old), Some(key.clone()));
        assert_eq!(table.ino_of(&key), None);
        let new = table.lookup(&key);
        assert!(new > old);
        assert_eq!(table.ino_of(&key), Some(new));
        assert_eq!(table.lookup(&key), new);
        assert_eq!(table.lookups(old), 1);
        assert_eq!(table.forget(old, 1), 0);
        // Only the path's current numbers are its tag's.
        let under: Vec<u64> = table.under_tag("v1").into_iter().map(|(i, _)| i).collect();
        assert_eq!(under, [other, new]);
        // The other paths are unaffected, and an unknown number is refused.
        assert_eq!(
            table.ino_of(&NodeKey::root().child("v1").child("b.png")),
            Some(other)
        );
        assert!(!table.retire(999));
    }
}
