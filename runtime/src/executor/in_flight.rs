//! A spout task's in-flight reliable tuples, by root id.
//!
//! Contract: [`InFlight::next_root`] names the root id the next reliable tuple will get and
//! [`InFlight::insert`] records it once emitted; [`InFlight::remove`] hands back its message id
//! and emit time exactly once, and `None` for any root not in flight. A root's low 32 bits
//! index a slot and its high 32 bits are random (never all zero), so roots are unique among
//! the tuples in flight and unpredictable, while a lookup is an index, not a hash probe, and
//! freed slots are reused first, while they are still in cache.

use std::time::Instant;

use squall_api::MessageId;

use crate::acker::IdGen;

#[derive(Default)]
pub struct InFlight {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
}

struct Slot {
    /// 0 when the slot is free.
    root: u64,
    msg_id: MessageId,
    emitted: Instant,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root id the next [`insert`](Self::insert) takes.
    #[inline]
    pub fn next_root(&self, ids: &mut IdGen) -> u64 {
        let index = self.free.last().copied().unwrap_or(self.slots.len() as u32);
        ((ids.next_id() >> 32) | 1) << 32 | index as u64
    }

    /// Records a tuple emitted under `root`, which must come from [`next_root`](Self::next_root)
    /// with no insert since.
    #[inline]
    pub fn insert(&mut self, root: u64, msg_id: MessageId, emitted: Instant) {
        let index = root as u32;
        let slot = Slot { root, msg_id, emitted };
        if self.free.last() == Some(&index) {
            self.free.pop();
            self.slots[index as usize] = slot;
        } else {
            debug_assert_eq!(index as usize, self.slots.len(), "root not from next_root");
            self.slots.push(slot);
        }
        self.len += 1;
    }

    /// Takes a tuple out of flight: its message id and when it was emitted.
    #[inline]
    pub fn remove(&mut self, root: u64) -> Option<(MessageId, Instant)> {
        let index = root as u32;
        let slot = self.slots.get_mut(index as usize).filter(|s| s.root == root)?;
        slot.root = 0;
        self.free.push(index);
        self.len -= 1;
        Some((std::mem::take(&mut slot.msg_id), slot.emitted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_root_is_removed_once_and_slots_are_reused() {
        let mut ids = IdGen::new();
        let mut f = InFlight::default();
        let now = Instant::now();
        let a = f.next_root(&mut ids);
        f.insert(a, MessageId::from(1), now);
        let b = f.next_root(&mut ids);
        f.insert(b, MessageId::from(2), now);
        assert_ne!(a, b);
        assert_eq!(f.len(), 2);
        assert_eq!(f.remove(a).map(|(m, _)| m), Some(MessageId::from(1)));
        assert_eq!(f.remove(a), None, "a root is handed back once");
        let c = f.next_root(&mut ids);
        assert_eq!(c as u32, a as u32, "the freed slot is reused");
        assert_ne!(c, a, "with a new root");
        f.insert(c, MessageId::from(3), now);
        assert_eq!(f.remove(a), None, "the old root does not match the reused slot");
        assert_eq!(f.remove(c).map(|(m, _)| m), Some(MessageId::from(3)));
        assert_eq!(f.remove(b).map(|(m, _)| m), Some(MessageId::from(2)));
        assert!(f.is_empty());
        assert_eq!(f.remove(12345), None);
    }

    #[test]
    fn a_root_not_inserted_leaves_nothing_behind() {
        let mut ids = IdGen::new();
        let mut f = InFlight::default();
        let root = f.next_root(&mut ids); // e.g. the emit failed
        assert_eq!(f.remove(root), None);
        let again = f.next_root(&mut ids);
        f.insert(again, MessageId::from(7), Instant::now());
        assert_eq!(f.len(), 1);
        assert!(root != 0 && again != 0);
    }
}
