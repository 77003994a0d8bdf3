//! A stateful task's changes not yet committed.
//!
//! Contract: [`Uncommitted::add`] takes the changes a task's state handed over at checkpoint
//! `id` (later changes of a key replace earlier ones); [`Uncommitted::all`] is what the task
//! prepares under `id`: every change not yet committed, so that a checkpoint that never
//! completes loses nothing (the next one carries its changes). [`Uncommitted::committed`]
//! forgets the changes a commit of `id` covered: those handed over at `id` or before.

use std::collections::HashMap;

use squall_api::Change;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Uncommitted {
    /// By encoded key: the latest value (None: deleted) and the checkpoint that handed it over.
    changes: HashMap<Vec<u8>, (Option<Vec<u8>>, u64)>,
}

impl Uncommitted {
    pub fn add(&mut self, id: u64, changes: Vec<Change>) {
        for c in changes {
            self.changes.insert(c.key, (c.value, id));
        }
    }

    /// Every change not yet committed.
    pub fn all(&self) -> Vec<Change> {
        self.changes.iter().map(|(k, (v, _))| Change { key: k.clone(), value: v.clone() }).collect()
    }

    /// A commit of `id` made every change handed over at `id` or before durable.
    pub fn committed(&mut self, id: u64) {
        self.changes.retain(|_, (_, at)| *at > id);
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Change {
        Change { key: k.as_bytes().to_vec(), value: Some(v.as_bytes().to_vec()) }
    }

    #[test]
    fn changes_stay_until_a_commit_covers_them() {
        let mut u = Uncommitted::default();
        u.add(5, vec![put("a", "1"), put("b", "1")]);
        u.add(6, vec![put("a", "2")]);
        let mut all = u.all();
        all.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(all, vec![put("a", "2"), put("b", "1")], "6 carries 5's changes too");
        u.committed(5);
        assert_eq!(u.all(), vec![put("a", "2")], "a's latest change came at 6: not covered by 5");
        u.committed(6);
        assert!(u.is_empty());
    }
}
