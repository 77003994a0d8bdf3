//! The coordinator's bookkeeping: which participants saved which checkpoint.
//!
//! Contract: a [`Tracker`] knows the participants of every checkpoint (each spout task and
//! each stateful bolt task). [`Tracker::saved`] records that one saved checkpoint `id`, with
//! its position (spouts); a participant that saved its last checkpoint (a spout whose stream
//! ended) counts as having saved every later one, at that position. Once a checkpoint is
//! complete (every participant saved it) it is returned: the latest complete one, each once;
//! older incomplete ones are then forgotten (a participant that skipped an id makes that id
//! incomplete for ever; a later one covers it, since a stateful task prepares every change
//! not yet committed). At most [`MAX_PENDING`] incomplete checkpoints are kept; older ones
//! are dropped. No I/O.

use std::collections::BTreeMap;

use squall_api::{TaskId, Value};

/// Incomplete checkpoints kept at most.
pub const MAX_PENDING: usize = 64;

/// A checkpoint every participant saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Complete {
    pub id: u64,
    /// By spout task: the position it saved (`Null` for a spout that cannot rewind).
    pub positions: BTreeMap<TaskId, Value>,
}

#[derive(Debug, Default)]
struct Pending {
    saved: Vec<bool>,
    positions: BTreeMap<TaskId, Value>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Tracker {
    /// Sorted task ids.
    participants: Vec<TaskId>,
    /// By participant slot: the last checkpoint it will save, and its position then.
    finished: Vec<Option<(u64, Value)>>,
    pending: BTreeMap<u64, Pending>,
    /// The last checkpoint returned.
    last: u64,
}

impl Tracker {
    pub fn new(mut participants: Vec<TaskId>) -> Self {
        participants.sort_unstable();
        participants.dedup();
        let finished = vec![None; participants.len()];
        Tracker { participants, finished, pending: BTreeMap::new(), last: 0 }
    }

    /// `task` saved checkpoint `id` (at `position`, for a spout); `last`: it will save no
    /// other. See the module docs.
    pub fn saved(&mut self, task: TaskId, id: u64, position: Value, last: bool) -> Option<Complete> {
        let Ok(slot) = self.participants.binary_search(&task) else { return None };
        if last {
            self.finished[slot] = Some((id, position.clone()));
        }
        if id > self.last {
            let n = self.participants.len();
            let pending = self
                .pending
                .entry(id)
                .or_insert_with(|| Pending { saved: vec![false; n], ..Pending::default() });
            pending.saved[slot] = true;
            if !position.is_null() {
                pending.positions.insert(task, position);
            }
        }
        let complete = self.pending.keys().rev().copied().find(|&id| self.is_complete(id));
        let Some(id) = complete else {
            while self.pending.len() > MAX_PENDING {
                self.pending.pop_first();
            }
            return None;
        };
        let mut done = self.pending.remove(&id).expect("found above");
        for (slot, finished) in self.finished.iter().enumerate() {
            if let Some((at, position)) = finished {
                if *at <= id && !done.saved[slot] && !position.is_null() {
                    done.positions.insert(self.participants[slot], position.clone());
                }
            }
        }
        self.last = id;
        self.pending = self.pending.split_off(&(id + 1));
        Some(Complete { id, positions: done.positions })
    }

    fn is_complete(&self, id: u64) -> bool {
        let Some(p) = self.pending.get(&id) else { return false };
        p.saved
            .iter()
            .zip(&self.finished)
            .all(|(&saved, finished)| saved || finished.as_ref().is_some_and(|(at, _)| *at <= id))
    }

    /// The last checkpoint every participant saved (0: none).
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_completes_once_every_participant_saved_it() {
        let mut t = Tracker::new(vec![3, 0, 5]);
        assert_eq!(t.saved(0, 10, Value::from(7), false), None);
        assert_eq!(t.saved(5, 10, Value::Null, false), None);
        assert_eq!(t.saved(5, 10, Value::Null, false), None, "twice from one participant counts once");
        assert_eq!(t.saved(9, 10, Value::Null, false), None, "not a participant");
        let done = t.saved(3, 10, Value::Null, false).expect("all three saved 10");
        assert_eq!(done.id, 10);
        assert_eq!(done.positions, BTreeMap::from([(0, Value::from(7))]));
        assert_eq!(t.saved(0, 10, Value::Null, false), None, "returned once");
        assert_eq!(t.last(), 10);
    }

    #[test]
    fn a_later_checkpoint_completing_forgets_the_older_incomplete_ones() {
        let mut t = Tracker::new(vec![1, 2]);
        assert_eq!(t.saved(1, 5, Value::Null, false), None);
        // Task 2 skipped 5 (it started late).
        assert_eq!(t.saved(1, 6, Value::Null, false), None);
        assert_eq!(t.saved(2, 6, Value::Null, false).map(|c| c.id), Some(6));
        assert_eq!(t.saved(2, 5, Value::Null, false), None, "5 is older than the last complete one");
    }

    #[test]
    fn a_spout_that_ended_counts_as_saving_every_later_checkpoint_at_its_last_position() {
        let mut t = Tracker::new(vec![0, 1, 2]);
        // Spout 0 ended at 7, spout 1 at 8; bolt task 2 completed 7 then 8.
        assert_eq!(t.saved(0, 7, Value::from(70), true), None);
        assert_eq!(t.saved(2, 7, Value::Null, false), None, "spout 1 skipped 7");
        assert_eq!(t.saved(1, 8, Value::from(80), true), None);
        let done = t.saved(2, 8, Value::Null, false).expect("8 is complete: spout 0 ended before it");
        assert_eq!(done.id, 8);
        assert_eq!(done.positions, BTreeMap::from([(0, Value::from(70)), (1, Value::from(80))]));
    }

    #[test]
    fn incomplete_checkpoints_are_bounded() {
        let mut t = Tracker::new(vec![1, 2]);
        for id in 1..=(MAX_PENDING as u64 * 3) {
            t.saved(1, id, Value::Null, false);
        }
        assert!(t.pending.len() <= MAX_PENDING + 1);
    }
}
