//! Inode numbers: handed out from 2 upward, never reused in a session, each
//! with the kernel's lookup count. An inode forgotten by the kernel is
//! dropped; the same path looked up later gets a new number.

use std::collections::HashMap;
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
    pub path: Box<str>,
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
    /// The size last given to the kernel, to tell when its copy is stale.
    reported_size: Option<u64>,
}

struct Table {
    next: u64,
    by_ino: HashMap<u64, Inode>,
    by_key: HashMap<NodeKey, u64>,
}

pub struct InodeTable {
    table: Mutex<Table>,
}

impl Default for InodeTable {
    fn default() -> Self {
        let root = Inode {
            key: NodeKey::root(),
            lookups: 1,
            reported_size: None,
        };
        InodeTable {
            table: Mutex::new(Table {
                next: ROOT_INO + 1,
                by_ino: HashMap::from([(ROOT_INO, root)]),
                by_key: HashMap::from([(NodeKey::root(), ROOT_INO)]),
            }),
        }
    }
}

impl Table {
    fn ino_for(&mut self, key: &NodeKey) -> u64 {
        if let Some(&ino) = self.by_key.get(key) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(
            ino,
            Inode {
                key: key.clone(),
                lookups: 0,
                reported_size: None,
            },
        );
        self.by_key.insert(key.clone(), ino);
        ino
    }
}

impl InodeTable {
    pub fn key(&self, ino: u64) -> Option<NodeKey> {
        self.table.lock().by_ino.get(&ino).map(|i| i.key.clone())
    }

    pub fn ino_of(&self, key: &NodeKey) -> Option<u64> {
        self.table.lock().by_key.get(key).copied()
    }

    /// The inode for `key`, counted as one more kernel reference, with the
    /// size about to be reported.
    pub fn lookup(&self, key: &NodeKey, size: Option<u64>) -> u64 {
        let mut table = self.table.lock();
        let ino = table.ino_for(key);
        let inode = table.by_ino.get_mut(&ino).expect("just inserted");
        inode.lookups += 1;
        inode.reported_size = size;
        ino
    }

    /// The inode for `key` without a kernel reference (directory listings).
    pub fn peek(&self, key: &NodeKey) -> u64 {
        self.table.lock().ino_for(key)
    }

    pub fn set_reported_size(&self, ino: u64, size: Option<u64>) {
        if let Some(inode) = self.table.lock().by_ino.get_mut(&ino) {
            inode.reported_size = size;
        }
    }

    pub fn reported_size(&self, ino: u64) -> Option<u64> {
        self.table
            .lock()
            .by_ino
            .get(&ino)
            .and_then(|i| i.reported_size)
    }

    /// The kernel dropped `count` references; tolerates counts it never had.
    pub fn forget(&self, ino: u64, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut table = self.table.lock();
        let Some(inode) = table.by_ino.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(count);
        if inode.lookups == 0 {
            let key = table.by_ino.remove(&ino).expect("present").key;
            table.by_key.remove(&key);
        }
    }

    /// Every inode under `tag`, with its key.
    pub fn under_tag(&self, tag: &str) -> Vec<(u64, NodeKey)> {
        self.table
            .lock()
            .by_ino
            .iter()
            .filter(|(_, i)| i.key.tag.as_deref() == Some(tag))
            .map(|(&ino, i)| (ino, i.key.clone()))
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
    fn numbers_are_stable_while_referenced_and_never_reused() {
        let table = InodeTable::default();
        let key = NodeKey::root().child("v1");
        let a = table.lookup(&key, None);
        assert_eq!(a, 2);
        assert_eq!(table.lookup(&key, None), a);
        assert_eq!(table.peek(&key), a);
        table.forget(a, 1);
        assert_eq!(table.key(a), Some(key.clone()));
        table.forget(a, 5); // more than it had: tolerated
        assert_eq!(table.key(a), None);
        let b = table.lookup(&key, None);
        assert!(b > a, "a forgotten number is not reused");
        table.forget(ROOT_INO, 10);
        assert_eq!(table.key(ROOT_INO), Some(NodeKey::root()));
        table.forget(999, 1);
    }
}
