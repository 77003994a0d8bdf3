//! The partitions a spout task reads, and the outcomes of the records it emitted from them:
//! what `log-spout` and `kafka-spout` do alike on `ack` and `fail`.
//!
//! Contract: an [`Assignment`] holds a task's partitions in the order they were pushed, found
//! by partition number in constant time. [`Assignment::ack`] and [`Assignment::fail`] take a
//! record's [`message_id`](super::offsets::message_id) and apply the outcome to its
//! partition's [`PartitionOffsets`] under the assignment's [`RetryPolicy`]; an id of a
//! partition not assigned here, or not a message id at all, is ignored. A record given up at
//! the retry limit yields the line to report. Neither allocates, except the give-up line.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use squall_api::MessageId;

use super::offsets::{parse_message_id, PartitionOffsets, RetryPolicy};

/// A partition a spout task reads: whatever the spout keeps of it, with its offset tracking.
pub trait AssignedPartition {
    /// What is kept of a record to emit it again.
    type Record: Clone;
    fn offsets(&mut self) -> &mut PartitionOffsets<Self::Record>;
}

/// A spout task's partitions (a slice, in the order pushed) and its retry policy.
#[derive(Debug)]
pub struct Assignment<P> {
    partitions: Vec<P>,
    /// Indexed by partition number: the position in `partitions`, if assigned.
    index: Vec<Option<usize>>,
    retry: RetryPolicy,
}

impl<P: AssignedPartition> Assignment<P> {
    /// No partitions yet; failed records are retried under `retry`.
    pub fn new(retry: RetryPolicy) -> Self {
        Assignment { partitions: Vec::new(), index: Vec::new(), retry }
    }

    /// Adds partition `number` (each number at most once).
    pub fn push(&mut self, number: u32, partition: P) {
        let number = number as usize;
        if self.index.len() <= number {
            self.index.resize(number + 1, None);
        }
        self.index[number] = Some(self.partitions.len());
        self.partitions.push(partition);
    }

    /// The partition numbered `number`, if assigned here.
    pub fn get_mut(&mut self, number: u32) -> Option<&mut P> {
        let i = (*self.index.get(number as usize)?)?;
        self.partitions.get_mut(i)
    }

    /// The record `msg_id` names was processed.
    pub fn ack(&mut self, msg_id: &MessageId) {
        if let Some((partition, offset)) = parse_message_id(msg_id) {
            if let Some(p) = self.get_mut(partition) {
                p.offsets().ack(offset);
            }
        }
    }

    /// The record `msg_id` names failed at `now`: it is retried after its backoff, or given up
    /// at the retry limit — then the line to report.
    pub fn fail(&mut self, msg_id: &MessageId, now: Instant) -> Option<String> {
        let (partition, offset) = parse_message_id(msg_id)?;
        let retry = self.retry;
        let p = self.get_mut(partition)?;
        p.offsets().fail_or_give_up(partition, offset, now, &retry)
    }

    /// Whether a partition at its uncommitted bound has a useful stretch done (a sixteenth of
    /// the bound): then it commits at once, not only every commit interval, nor per ack.
    pub fn commit_at_bound(&mut self, max_uncommitted: u64) -> bool {
        self.commit_due(max_uncommitted, u64::MAX)
    }

    /// [`Self::commit_at_bound`], or a partition with `every` records or more done past its
    /// committed offset: committing then keeps what a crash redoes small, at one commit per
    /// `every` records however fast they come.
    pub fn commit_due(&mut self, max_uncommitted: u64, every: u64) -> bool {
        let stretch = (max_uncommitted / 16).max(1);
        self.partitions.iter_mut().any(|p| {
            let offsets = p.offsets();
            let done = offsets.frontier() - offsets.committed_offset();
            done >= every || (!offsets.has_room(max_uncommitted) && done >= stretch)
        })
    }
}

impl<P> Deref for Assignment<P> {
    type Target = [P];

    fn deref(&self) -> &[P] {
        &self.partitions
    }
}

impl<P> DerefMut for Assignment<P> {
    fn deref_mut(&mut self) -> &mut [P] {
        &mut self.partitions
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::partitioned::offsets::message_id;

    struct Partition {
        number: u32,
        offsets: PartitionOffsets<u64>,
    }

    impl AssignedPartition for Partition {
        type Record = u64;
        fn offsets(&mut self) -> &mut PartitionOffsets<u64> {
            &mut self.offsets
        }
    }

    /// Partitions 1 and 4, each with offsets 0..4 out.
    fn assignment(limit: Option<u32>) -> Assignment<Partition> {
        let retry = RetryPolicy { backoff: Duration::ZERO, backoff_max: Duration::ZERO, limit };
        let mut a = Assignment::new(retry);
        for number in [4, 1] {
            let mut offsets = PartitionOffsets::new(0);
            for o in 0..4 {
                offsets.take(o, o);
            }
            a.push(number, Partition { number, offsets });
        }
        a
    }

    #[test]
    fn outcomes_reach_the_partition_the_id_names() {
        let mut a = assignment(None);
        a.ack(&message_id(1, 0));
        a.ack(&message_id(1, 1));
        assert_eq!(a.get_mut(1).unwrap().offsets.frontier(), 2);
        assert_eq!(a.get_mut(4).unwrap().offsets.frontier(), 0, "partition 4 untouched");
        let now = Instant::now();
        assert_eq!(a.fail(&message_id(4, 0), now), None, "retried, nothing to report");
        assert_eq!(a.get_mut(4).unwrap().offsets.due_retry(now), Some((0, 0)));
    }

    #[test]
    fn ids_of_other_partitions_are_ignored() {
        let mut a = assignment(Some(1));
        a.ack(&message_id(2, 0));
        a.ack(&message_id(9, 0));
        a.ack(&squall_api::Value::from("not an id"));
        assert_eq!(a.fail(&message_id(3, 0), Instant::now()), None);
        assert!(a.iter().all(|p| p.offsets.frontier() == 0));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].number, 4, "in the order pushed");
    }

    #[test]
    fn record_failed_at_the_retry_limit_yields_the_give_up_line() {
        let mut a = assignment(Some(1));
        let line = a.fail(&message_id(4, 2), Instant::now());
        assert_eq!(line.as_deref(), Some("gave up on partition 4 offset 2 after 1 failures (retry_limit)"));
    }

    #[test]
    fn a_commit_is_due_once_enough_records_are_done_even_below_the_bound() {
        let mut a = assignment(None);
        assert!(!a.commit_due(1000, 1), "nothing done");
        a.ack(&message_id(1, 0));
        assert!(a.commit_due(1000, 1), "one done, one is enough");
        assert!(!a.commit_due(1000, 2), "one done, two needed, far from the bound");
    }

    #[test]
    fn commit_at_bound_waits_for_a_sixteenth_of_the_bound() {
        let mut a = assignment(None);
        assert!(!a.commit_at_bound(4), "at the bound, nothing done");
        a.ack(&message_id(1, 0));
        assert!(a.commit_at_bound(4), "one done of a bound of 4");
        assert!(!a.commit_at_bound(5), "under the bound");
    }
}
