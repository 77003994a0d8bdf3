//! A spout task's in-flight reliable tuples, by root id.
//!
//! Contract: [`InFlight::next_root`] names the root id the next reliable tuple will get and
//! [`InFlight::insert`] records it once emitted; [`InFlight::remove`] hands back its message id
//! and emit time exactly once, and `None` for any root not in flight. A root (see
//! [`make_root`]) is this spout task's id, a generation of the slot and the slot index: roots
//! are unique among the tuples in flight of every spout task, a lookup is an index, not a hash
//! probe, and freed slots are reused first, while they are still in cache. A slot's
//! generation steps each time its tuple is removed (that is, once the acker reported its
//! outcome), as the acker steps its own, so both tell a late message for a reused slot from
//! one for its current tuple.
//!
//! The table is as large as the spout's pending bound (2^18 slots of 64 bytes for a windowed
//! topology that holds a few seconds of input): the free list keeps the roots to hand out, so
//! naming the next root touches no slot, and [`InFlight::prefetch`] lets a batch of outcomes
//! overlap its cache misses.

use std::time::Instant;

use squall_api::{MessageId, TaskId};

use crate::acker::{make_root, next_generation, root_slot};

pub struct InFlight {
    spout_task: TaskId,
    slots: Vec<Slot>,
    /// The roots that free slots take next (their next generation), reused last-freed first.
    free: Vec<u64>,
    len: usize,
}

struct Slot {
    /// The root of the slot's tuple while `busy`, else the root its next tuple gets.
    root: u64,
    busy: bool,
    msg_id: MessageId,
    emitted: Instant,
}

impl InFlight {
    /// The in-flight tuples of spout task `spout_task`, which must be below
    /// [`MAX_SPOUT_TASKS`](crate::acker::MAX_SPOUT_TASKS) (the plan checks it).
    pub fn new(spout_task: TaskId) -> Self {
        assert!(
            (spout_task as usize) < crate::acker::MAX_SPOUT_TASKS,
            "spout task id {spout_task} does not fit a root's 16 bits"
        );
        InFlight { spout_task, slots: Vec::new(), free: Vec::new(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root id the next [`insert`](Self::insert) takes.
    #[inline]
    pub fn next_root(&self) -> u64 {
        match self.free.last() {
            Some(&root) => root,
            None => make_root(self.spout_task, 0, self.slots.len() as u32),
        }
    }

    /// Records a tuple emitted under `root`, which must come from [`next_root`](Self::next_root)
    /// with no insert since.
    #[inline]
    pub fn insert(&mut self, root: u64, msg_id: MessageId, emitted: Instant) {
        let index = root_slot(root);
        let slot = Slot { root, busy: true, msg_id, emitted };
        if self.free.last() == Some(&root) {
            self.free.pop();
            debug_assert_eq!(self.slots[index as usize].root, root, "root not from next_root");
            self.slots[index as usize] = slot;
            // A slot a few inserts ahead, so that its miss overlaps the emits before it.
            let ahead = self.free.len().checked_sub(crate::prefetch::AHEAD).and_then(|i| self.free.get(i));
            if let Some(&next) = ahead {
                crate::prefetch::read(&self.slots[root_slot(next) as usize]);
            }
        } else {
            debug_assert_eq!(index as usize, self.slots.len(), "root not from next_root");
            assert!(index < u32::MAX, "more than 2^32 - 1 tuples in flight");
            self.slots.push(slot);
        }
        self.len += 1;
    }

    /// Takes a tuple out of flight: its message id and when it was emitted.
    #[inline]
    pub fn remove(&mut self, root: u64) -> Option<(MessageId, Instant)> {
        let index = root_slot(root);
        let slot = self.slots.get_mut(index as usize).filter(|s| s.busy && s.root == root)?;
        slot.busy = false;
        slot.root = next_generation(root);
        self.free.push(slot.root);
        self.len -= 1;
        Some((std::mem::take(&mut slot.msg_id), slot.emitted))
    }

    /// Starts loading the slot of `root` into cache, for a [`remove`](Self::remove) soon.
    #[inline]
    pub fn prefetch(&self, root: u64) {
        if let Some(slot) = self.slots.get(root_slot(root) as usize) {
            crate::prefetch::read(slot);
        }
    }
}

impl InFlight {
    /// Takes every tuple emitted before `cutoff` out of flight, handing its message id to
    /// `expired`: the spout's own timeout, for trees whose outcome was lost with a worker.
    pub fn expire(&mut self, cutoff: Instant, mut expired: impl FnMut(MessageId)) {
        for slot in self.slots.iter_mut() {
            if slot.busy && slot.emitted < cutoff {
                slot.busy = false;
                slot.root = next_generation(slot.root);
                self.free.push(slot.root);
                self.len -= 1;
                expired(std::mem::take(&mut slot.msg_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acker::{root_gen, root_task};

    #[test]
    fn each_root_is_removed_once_and_slots_are_reused() {
        let mut f = InFlight::new(3);
        let now = Instant::now();
        let a = f.next_root();
        f.insert(a, MessageId::from(1), now);
        let b = f.next_root();
        f.insert(b, MessageId::from(2), now);
        assert_ne!(a, b);
        assert_eq!(f.len(), 2);
        assert_eq!(f.remove(a).map(|(m, _)| m), Some(MessageId::from(1)));
        assert_eq!(f.remove(a), None, "a root is handed back once");
        let c = f.next_root();
        assert_eq!(root_slot(c), root_slot(a), "the freed slot is reused");
        assert_eq!(root_gen(c), root_gen(a) + 1, "under its next generation");
        f.insert(c, MessageId::from(3), now);
        assert_eq!(f.remove(a), None, "the old root does not match the reused slot");
        assert_eq!(f.remove(c).map(|(m, _)| m), Some(MessageId::from(3)));
        assert_eq!(f.remove(b).map(|(m, _)| m), Some(MessageId::from(2)));
        assert!(f.is_empty());
        assert_eq!(f.remove(12345), None);
    }

    #[test]
    fn a_root_not_inserted_leaves_nothing_behind() {
        let mut f = InFlight::new(0);
        let root = f.next_root(); // e.g. the emit failed
        assert_eq!(f.remove(root), None);
        let again = f.next_root();
        assert_eq!(again, root, "an unused root is offered again");
        f.insert(again, MessageId::from(7), Instant::now());
        assert_eq!(f.len(), 1);
        assert_eq!(f.remove(next_generation(again)), None, "a future generation is not in flight");
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn roots_name_their_spout_task_and_never_collide_across_tasks() {
        let now = Instant::now();
        let (mut x, mut y) = (InFlight::new(1), InFlight::new(65535));
        let (rx, ry) = (x.next_root(), y.next_root());
        x.insert(rx, MessageId::from(1), now);
        y.insert(ry, MessageId::from(2), now);
        assert_eq!((root_task(rx), root_task(ry)), (1, 65535));
        assert_eq!(root_slot(rx), root_slot(ry));
        assert_ne!(rx, ry);
        assert_eq!(x.remove(ry), None, "another task's root is not ours");
        assert_eq!(x.remove(rx).map(|(m, _)| m), Some(MessageId::from(1)));
        assert_eq!(y.remove(ry).map(|(m, _)| m), Some(MessageId::from(2)));
    }

    #[test]
    fn tuples_older_than_the_cutoff_expire_once() {
        let mut f = InFlight::new(0);
        let t0 = Instant::now();
        let old = f.next_root();
        f.insert(old, MessageId::from(1), t0);
        let young = f.next_root();
        f.insert(young, MessageId::from(2), t0 + std::time::Duration::from_secs(5));
        let mut expired = Vec::new();
        f.expire(t0 + std::time::Duration::from_secs(1), |m| expired.push(m));
        assert_eq!(expired, vec![MessageId::from(1)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f.remove(old), None, "an expired tuple's late outcome is ignored");
        let reused = f.next_root();
        assert_eq!(reused, next_generation(old), "its slot is reused under the next generation");
        f.expire(t0 + std::time::Duration::from_secs(1), |m| expired.push(m));
        assert_eq!(expired.len(), 1, "expired once");
        assert_eq!(f.remove(young).map(|(m, _)| m), Some(MessageId::from(2)));
    }

    #[test]
    fn a_slot_cycles_through_every_generation() {
        let mut f = InFlight::new(2);
        let first = f.next_root();
        let mut root = first;
        for _ in 0..(1 << 16) {
            f.insert(root, MessageId::from(0), Instant::now());
            assert!(f.remove(root).is_some());
            let next = f.next_root();
            assert_eq!(next, next_generation(root));
            root = next;
        }
        assert_eq!(root, first, "the generation wraps after 2^16 reuses");
        assert_eq!(f.slots.len(), 1);
    }
}
