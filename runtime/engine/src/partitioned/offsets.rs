//! Offset tracking for spouts that read partitioned, replayable logs (the embedded log's
//! `log-spout`, Kafka's `kafka-spout`): which records of a partition are out, which failed and
//! when to retry them, and how far the group's offset may be committed.
//!
//! Contract, per partition:
//! - Records are [`PartitionOffsets::take`]n in increasing offset order (gaps allowed) from the
//!   start offset on. Each is out until it is acked, or failed past the retry limit.
//! - The committable offset ([`PartitionOffsets::frontier`]) is the lowest offset still out or
//!   waiting for a retry, else the offset after the last one taken: committing it never skips
//!   a record that was not acked (or given up on).
//! - A failed record is retried after a backoff that doubles per attempt up to a maximum; with
//!   a retry limit, a record failed that many times is given up (counted, then treated as done).
//! - The uncommitted bound caps how far taking may run ahead of the committed offset; retries
//!   of records already taken are never held back by it, so a partition can never get stuck
//!   behind one retrying record.
//! - Acks and fails of offsets not out (duplicates, or from before a restart) are ignored.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use squall_api::{MessageId, Value};

/// The defaults of the offset-tracking keys both log spouts take (`max_uncommitted`,
/// `retry_backoff_ms`, `retry_backoff_max_ms`, `commit_interval_ms`), for serde.
pub mod defaults {
    pub fn max_uncommitted() -> u64 {
        50_000
    }
    pub fn retry_backoff_ms() -> u64 {
        100
    }
    pub fn retry_backoff_max_ms() -> u64 {
        10_000
    }
    pub fn commit_interval_ms() -> u64 {
        1000
    }
}

/// How failed records are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry; it doubles with every further failure.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Give a record up after this many failures (None: retry forever).
    pub limit: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { backoff: Duration::from_millis(100), backoff_max: Duration::from_secs(10), limit: None }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure of a record (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.backoff.saturating_mul(1 << doublings).min(self.backoff_max)
    }
}

/// What became of a failed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// It will be handed out again by [`PartitionOffsets::due_retry`] from this time on.
    RetryAt(Instant),
    /// It failed `failures` times, the retry limit: it is given up and counts as done.
    GaveUp { failures: u32 },
    /// Not a record that is out (a duplicate outcome, or one from before a restart).
    Unknown,
}

#[derive(Debug)]
enum State {
    Out,
    WaitingRetry,
    Done,
}

#[derive(Debug)]
struct Entry<R> {
    offset: u64,
    failures: u32,
    state: State,
    /// Kept to re-emit on failure; dropped once done.
    record: Option<R>,
}

/// The offsets of one partition; `R` is whatever is needed to re-emit a record.
#[derive(Debug)]
pub struct PartitionOffsets<R> {
    /// The offset last stored as the group's (the next one a restart reads).
    committed: u64,
    /// The offset after the last one taken.
    next: u64,
    /// Taken and not yet done, in offset order; done entries are popped from the front.
    entries: VecDeque<Entry<R>>,
    /// Failed records by the time their retry is due: (due, offset).
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    gave_up: u64,
}

impl<R: Clone> PartitionOffsets<R> {
    /// Tracking that starts at `start`, the committed offset (or where reading begins).
    pub fn new(start: u64) -> Self {
        PartitionOffsets {
            committed: start,
            next: start,
            entries: VecDeque::new(),
            retries: BinaryHeap::new(),
            gave_up: 0,
        }
    }

    /// How many offsets lie between the committed offset and the next one to take.
    pub fn uncommitted(&self) -> u64 {
        self.next - self.committed
    }

    /// Whether one more record may be taken under the bound on uncommitted records.
    pub fn has_room(&self, max_uncommitted: u64) -> bool {
        self.uncommitted() < max_uncommitted
    }

    /// The offset after the last record taken.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Records a record as out. Offsets must increase; a record below the next offset (one
    /// taken already) is refused with `false`.
    pub fn take(&mut self, offset: u64, record: R) -> bool {
        if offset < self.next {
            return false;
        }
        self.entries.push_back(Entry { offset, failures: 0, state: State::Out, record: Some(record) });
        self.next = offset + 1;
        true
    }

    fn find(&mut self, offset: u64) -> Option<&mut Entry<R>> {
        let first = self.entries.front()?.offset;
        // Dense offsets: the entry is at its distance from the first; else search.
        let guess = offset.checked_sub(first)? as usize;
        let index = match self.entries.get(guess) {
            Some(e) if e.offset == offset => guess,
            _ => self.entries.binary_search_by_key(&offset, |e| e.offset).ok()?,
        };
        self.entries.get_mut(index)
    }

    /// Records below `offset` that were not taken will never be (retention removed them): the
    /// next record taken is at `offset` or later, and the frontier may pass them.
    pub fn skip_to(&mut self, offset: u64) {
        self.next = self.next.max(offset);
    }

    /// The record at `offset` was processed. Returns false if it was not out.
    pub fn ack(&mut self, offset: u64) -> bool {
        let Some(entry) = self.find(offset) else { return false };
        if !matches!(entry.state, State::Out) {
            return false;
        }
        entry.state = State::Done;
        entry.record = None;
        self.pop_done();
        true
    }

    /// The record at `offset` failed at `now`: schedule its retry or give it up.
    /// [`fail`](Self::fail), and the line to report if the record of `partition` was given up.
    pub fn fail_or_give_up(
        &mut self,
        partition: impl std::fmt::Display,
        offset: u64,
        now: Instant,
        policy: &RetryPolicy,
    ) -> Option<String> {
        match self.fail(offset, now, policy) {
            Failed::GaveUp { failures } => Some(format!(
                "gave up on partition {partition} offset {offset} after {failures} failures (retry_limit)"
            )),
            _ => None,
        }
    }

    pub fn fail(&mut self, offset: u64, now: Instant, policy: &RetryPolicy) -> Failed {
        let Some(entry) = self.find(offset) else { return Failed::Unknown };
        if !matches!(entry.state, State::Out) {
            return Failed::Unknown;
        }
        entry.failures += 1;
        let failures = entry.failures;
        if policy.limit.is_some_and(|limit| failures >= limit) {
            entry.state = State::Done;
            entry.record = None;
            self.gave_up += 1;
            self.pop_done();
            return Failed::GaveUp { failures };
        }
        entry.state = State::WaitingRetry;
        let due = now + policy.delay(failures);
        self.retries.push(Reverse((due, offset)));
        Failed::RetryAt(due)
    }

    /// A failed record whose retry is due at `now`, marked out again: (offset, record).
    pub fn due_retry(&mut self, now: Instant) -> Option<(u64, R)> {
        while let Some(&Reverse((due, offset))) = self.retries.peek() {
            if due > now {
                return None;
            }
            self.retries.pop();
            if let Some(entry) = self.find(offset) {
                if matches!(entry.state, State::WaitingRetry) {
                    entry.state = State::Out;
                    if let Some(record) = entry.record.clone() {
                        return Some((offset, record));
                    }
                }
            }
        }
        None
    }

    fn pop_done(&mut self) {
        while self.entries.front().is_some_and(|e| matches!(e.state, State::Done)) {
            self.entries.pop_front();
        }
    }

    /// The offset that may be committed now: every record below it is done.
    pub fn frontier(&self) -> u64 {
        self.entries.front().map_or(self.next, |e| e.offset)
    }

    /// The offset to store, if it moved past the stored one.
    pub fn to_commit(&self) -> Option<u64> {
        let frontier = self.frontier();
        (frontier > self.committed).then_some(frontier)
    }

    /// `offset` was stored as the group's offset.
    pub fn committed(&mut self, offset: u64) {
        self.committed = self.committed.max(offset);
    }

    pub fn committed_offset(&self) -> u64 {
        self.committed
    }

    /// True when nothing taken is still out or waiting.
    pub fn is_settled(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many records were given up after the retry limit.
    pub fn gave_up(&self) -> u64 {
        self.gave_up
    }
}

/// The message id of a record: its partition and offset packed in one integer (partition in
/// the top 16 bits), so an emit allocates nothing for it.
pub fn message_id(partition: u32, offset: u64) -> MessageId {
    debug_assert!(partition < 1 << 15 && offset < 1 << 48);
    Value::Int(((partition as i64) << 48) | offset as i64)
}

/// The (partition, offset) of a [`message_id`].
pub fn parse_message_id(id: &MessageId) -> Option<(u32, u64)> {
    match id {
        Value::Int(n) if *n >= 0 => Some(((*n >> 48) as u32, (*n as u64) & ((1 << 48) - 1))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: Option<u32>) -> RetryPolicy {
        RetryPolicy { backoff: Duration::from_millis(100), backoff_max: Duration::from_millis(350), limit }
    }

    fn taken(start: u64, n: u64) -> PartitionOffsets<u64> {
        let mut p = PartitionOffsets::new(start);
        for o in start..start + n {
            assert!(p.take(o, o * 10));
        }
        p
    }

    #[test]
    fn frontier_stops_at_the_lowest_record_not_acked() {
        let mut p = taken(5, 5);
        assert_eq!(p.frontier(), 5);
        assert!(p.ack(6));
        assert!(p.ack(8));
        assert_eq!(p.frontier(), 5, "5 is still out");
        assert!(p.ack(5));
        assert_eq!(p.frontier(), 7);
        assert_eq!(p.to_commit(), Some(7));
        p.committed(7);
        assert_eq!(p.to_commit(), None);
        assert!(p.ack(7) && p.ack(9));
        assert_eq!(p.frontier(), 10);
        assert!(p.is_settled());
    }

    #[test]
    fn duplicate_and_unknown_outcomes_are_ignored() {
        let mut p = taken(0, 3);
        assert!(p.ack(1));
        assert!(!p.ack(1), "second ack of 1");
        assert!(!p.ack(42), "never taken");
        assert_eq!(p.fail(1, Instant::now(), &policy(None)), Failed::Unknown);
        assert_eq!(p.frontier(), 0);
        assert!(!p.take(2, 0), "offsets only go up");
    }

    #[test]
    fn failed_record_is_retried_after_a_doubling_backoff() {
        let mut p = taken(0, 3);
        let t0 = Instant::now();
        let policy = policy(None);
        assert_eq!(p.fail(1, t0, &policy), Failed::RetryAt(t0 + Duration::from_millis(100)));
        assert_eq!(p.due_retry(t0), None, "not due yet");
        assert_eq!(p.due_retry(t0 + Duration::from_millis(100)), Some((1, 10)));
        assert_eq!(p.fail(1, t0, &policy), Failed::RetryAt(t0 + Duration::from_millis(200)));
        assert_eq!(p.due_retry(t0 + Duration::from_millis(200)), Some((1, 10)));
        assert_eq!(p.fail(1, t0, &policy), Failed::RetryAt(t0 + Duration::from_millis(350)), "capped");
        assert!(p.ack(0) && p.ack(2));
        assert_eq!(p.frontier(), 1, "a waiting retry holds the commit back");
        assert_eq!(p.due_retry(t0 + Duration::from_secs(1)), Some((1, 10)));
        assert!(p.ack(1));
        assert_eq!(p.frontier(), 3);
    }

    #[test]
    fn record_is_given_up_at_the_retry_limit() {
        let mut p = taken(0, 2);
        let now = Instant::now();
        let policy = policy(Some(2));
        assert!(matches!(p.fail(0, now, &policy), Failed::RetryAt(_)));
        assert_eq!(p.due_retry(now + Duration::from_secs(1)), Some((0, 0)));
        assert_eq!(p.fail(0, now, &policy), Failed::GaveUp { failures: 2 });
        assert_eq!(p.gave_up(), 1);
        assert_eq!(p.frontier(), 1, "given up counts as done");
    }

    #[test]
    fn retrying_record_is_never_held_back_by_the_uncommitted_bound() {
        let mut p = taken(0, 4);
        assert!(!p.has_room(4), "the bound is reached");
        let now = Instant::now();
        p.fail(0, now, &policy(None));
        for o in 1..4 {
            p.ack(o);
        }
        assert!(!p.has_room(4), "0 holds the commit at 0");
        assert_eq!(p.due_retry(now + Duration::from_secs(1)), Some((0, 0)), "yet 0 is retried");
        p.ack(0);
        p.committed(p.frontier());
        assert!(p.has_room(4));
    }

    #[test]
    fn gaps_in_offsets_are_tracked() {
        let mut p = PartitionOffsets::new(0);
        for o in [0, 3, 4, 9] {
            p.take(o, o);
        }
        p.ack(0);
        assert_eq!(p.frontier(), 3);
        p.ack(4);
        p.ack(3);
        assert_eq!(p.frontier(), 9);
        p.ack(9);
        assert_eq!(p.frontier(), 10);
    }

    #[test]
    fn skipped_offsets_let_the_frontier_pass() {
        let mut p = taken(0, 2);
        p.skip_to(10);
        assert_eq!(p.frontier(), 0, "0 and 1 are still out");
        p.ack(0);
        p.ack(1);
        assert_eq!(p.frontier(), 10);
        assert!(p.take(10, 100));
        p.skip_to(5);
        assert_eq!(p.next_offset(), 11, "a skip never goes back");
    }

    #[test]
    fn message_id_round_trips() {
        for (p, o) in [(0, 0), (2, 12345), (1023, (1 << 48) - 1)] {
            assert_eq!(parse_message_id(&message_id(p, o)), Some((p, o)));
        }
        assert_eq!(parse_message_id(&Value::from("x")), None);
    }
}
