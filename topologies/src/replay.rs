//! Reliable, paced emission shared by the shipped spouts (`sequence`, `random-sentence`,
//! `random-word`).
//!
//! Contract: a [`Sequencer`] hands out the sequence numbers a spout emits, at most one per
//! `next_tuple` call, and never blocks or sleeps. Number `i` is emitted with message id
//! `Value::Int(i)`, and the tuple's values must be a pure function of `i` (and the spout's
//! config), so a failed id is replayed by recomputing its values instead of storing them.
//! Failed ids are re-emitted, oldest first, before any new number.
//!
//! `limit` and `rate` are for the whole component: its tasks share the numbers `0..limit`
//! (task `t` of `n` takes `t, t + n, t + 2n, …`) and each paces itself at `rate / n` tuples per
//! second (0 = flat out). Without a limit the numbers never run out. With one, the spout is
//! finished once it has emitted its share and every id it emitted was acked: none in flight,
//! none waiting to be replayed. With acking off the runtime acks at emit, so that holds too.

use std::collections::VecDeque;
use std::time::Duration;

use squall_api::{BoxError, EmitError, MessageId, SpoutCollector, TopologyContext, Value, Values};
use tokio::time::Instant;

/// How far behind schedule pacing may fall before it forgets the backlog: after a stall (the
/// runtime backing off, a deactivation) at most this much time's worth of tuples is caught up.
const MAX_LAG: Duration = Duration::from_millis(100);

/// Checks a `rate` config value: tuples per second, 0 meaning flat out.
pub fn check_rate(rate: f64) -> Result<f64, BoxError> {
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(format!("rate must be >= 0 tuples per second (0 = flat out), got {rate}").into())
    }
}

/// Picks one of `n` choices for sequence number `i` of a spout seeded with `seed`: the same
/// (seed, i) always gives the same pick, so a replay re-emits what the original emitted.
pub fn pick(seed: u64, i: u64, n: usize) -> usize {
    fastrand::Rng::with_seed(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).usize(..n)
}

/// Sequence numbers to emit, replays of failed ones, the count in flight, and pacing.
#[derive(Debug)]
pub struct Sequencer {
    /// The next new number this task emits.
    next: u64,
    /// The distance between this task's numbers: the component's task count.
    step: u64,
    /// Numbers stop before this; `None` is endless.
    limit: Option<u64>,
    /// Failed ids waiting to be re-emitted, oldest first.
    replays: VecDeque<u64>,
    /// Ids emitted and not yet acked or failed.
    in_flight: u64,
    /// The component's rate, tuples per second; 0 = flat out.
    rate: f64,
    pacer: Option<Pacer>,
}

impl Sequencer {
    /// A sequencer for a component emitting `0..limit` (`None`: endless) at `rate` tuples per
    /// second in all (0: flat out). Until [`Sequencer::open`] it acts as the only task.
    pub fn new(limit: Option<u64>, rate: f64) -> Self {
        Sequencer {
            next: 0,
            step: 1,
            limit,
            replays: VecDeque::new(),
            in_flight: 0,
            rate,
            pacer: Pacer::new(rate),
        }
    }

    /// Takes this task's share of the numbers and of the rate. Call from `Spout::open`.
    pub fn open(&mut self, ctx: &TopologyContext) {
        let tasks = ctx.task_count().max(1);
        self.next = ctx.task_index() as u64;
        self.step = tasks as u64;
        self.pacer = Pacer::new(self.rate / tasks as f64);
    }

    /// Emits the next tuple if there is one and pacing allows: a replay if any is waiting,
    /// else the next new number. `values_of(i)` builds the values of number `i`.
    pub fn emit_next(
        &mut self,
        out: &mut dyn SpoutCollector,
        values_of: impl FnOnce(u64) -> Values,
    ) -> Result<(), EmitError> {
        let has_new = self.limit.is_none_or(|limit| self.next < limit);
        if self.replays.is_empty() && !has_new {
            return Ok(());
        }
        if let Some(pacer) = &mut self.pacer {
            if !pacer.ready(Instant::now()) {
                return Ok(());
            }
        }
        let id = match self.replays.pop_front() {
            Some(id) => id,
            None => {
                let id = self.next;
                self.next += self.step;
                id
            }
        };
        match out.emit_with_id(values_of(id), message_id(id)) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(e) => {
                // Not emitted: keep it first in line.
                self.replays.push_front(id);
                Err(e)
            }
        }
    }

    /// The tree of `id` completed.
    pub fn ack(&mut self, _id: &MessageId) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The tree of `id` failed: queue it for replay.
    pub fn fail(&mut self, id: &MessageId) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match id.as_i64().and_then(|i| u64::try_from(i).ok()) {
            Some(id) => self.replays.push_back(id),
            None => debug_assert!(false, "message id {id:?} was not emitted by a Sequencer"),
        }
    }

    /// True once a bounded sequence was emitted in full and nothing waits to be replayed
    /// (some ids may still be in flight).
    pub fn is_exhausted(&self) -> bool {
        self.limit.is_some_and(|limit| self.next >= limit) && self.replays.is_empty()
    }

    /// True once a bounded sequence was emitted in full and every id acked.
    pub fn is_finished(&self) -> bool {
        self.limit.is_some_and(|limit| self.next >= limit) && self.replays.is_empty() && self.in_flight == 0
    }
}

/// The message id of sequence number `i`.
pub fn message_id(i: u64) -> MessageId {
    Value::Int(i as i64)
}

/// Spaces emits `interval` apart, catching up at most [`MAX_LAG`] of backlog. [`Sequencer`]
/// paces with one; a spout that does not emit sequence numbers (`file-spout`) uses its own.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next_due: Option<Instant>,
}

impl Pacer {
    /// A pacer for `rate` tuples per second; `None` if the rate is 0 (flat out).
    pub fn new(rate: f64) -> Option<Pacer> {
        (rate > 0.0).then(|| Pacer { interval: Duration::from_secs_f64(1.0 / rate), next_due: None })
    }

    /// True if an emit is due at `now` (and books it).
    pub fn ready(&mut self, now: Instant) -> bool {
        let due = self.next_due.unwrap_or(now);
        if now < due {
            return false;
        }
        let due = now.checked_sub(MAX_LAG).map_or(due, |floor| due.max(floor));
        self.next_due = Some(due + self.interval);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::FakeSpoutCollector;
    use squall_api::values;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn emit(seq: &mut Sequencer, out: &mut FakeSpoutCollector) {
        seq.emit_next(out, |i| values![i]).unwrap();
    }

    fn context(task: u32, tasks: u32) -> TopologyContext {
        let ids = BTreeMap::from([("spout".to_string(), (0..tasks).collect())]);
        TopologyContext::new("t", "spout", task, Arc::new(ids), Default::default(), Default::default())
    }

    #[tokio::test]
    async fn failed_ids_are_reemitted_before_new_ones() {
        let mut seq = Sequencer::new(None, 0.0);
        let mut out = FakeSpoutCollector::default();
        for _ in 0..3 {
            emit(&mut seq, &mut out);
        }
        seq.fail(&message_id(2));
        seq.fail(&message_id(0));
        for _ in 0..3 {
            emit(&mut seq, &mut out);
        }
        assert_eq!(out.ids(), [0, 1, 2, 2, 0, 3]);
        // A replay carries the values of its number.
        assert_eq!(out.emits[3].values[..], [Value::Int(2)]);
    }

    #[tokio::test]
    async fn emits_at_most_one_tuple_per_call() {
        let mut seq = Sequencer::new(Some(10), 0.0);
        let mut out = FakeSpoutCollector::default();
        emit(&mut seq, &mut out);
        assert_eq!(out.emits.len(), 1);
    }

    #[tokio::test]
    async fn finishes_only_when_every_id_is_acked() {
        let mut seq = Sequencer::new(Some(2), 0.0);
        let mut out = FakeSpoutCollector::default();
        emit(&mut seq, &mut out);
        emit(&mut seq, &mut out);
        emit(&mut seq, &mut out);
        assert_eq!(out.ids(), [0, 1], "nothing past the limit");
        assert!(!seq.is_finished(), "two in flight");
        seq.ack(&message_id(0));
        seq.fail(&message_id(1));
        assert!(!seq.is_finished(), "one waiting to be replayed");
        emit(&mut seq, &mut out);
        assert!(!seq.is_finished(), "the replay is in flight");
        seq.ack(&message_id(1));
        assert!(seq.is_finished());
    }

    #[tokio::test]
    async fn endless_sequencer_never_finishes() {
        let mut seq = Sequencer::new(None, 0.0);
        assert!(!seq.is_finished());
        let mut out = FakeSpoutCollector::default();
        emit(&mut seq, &mut out);
        seq.ack(&message_id(0));
        assert!(!seq.is_finished());
    }

    #[tokio::test]
    async fn tasks_share_the_numbers_of_their_component() {
        let mut seq = Sequencer::new(Some(8), 0.0);
        seq.open(&context(1, 3));
        let mut out = FakeSpoutCollector::default();
        for _ in 0..5 {
            emit(&mut seq, &mut out);
        }
        assert_eq!(out.ids(), [1, 4, 7]);
    }

    #[tokio::test]
    async fn emit_error_keeps_the_id_for_the_next_call() {
        let mut seq = Sequencer::new(Some(1), 0.0);
        let mut out = FakeSpoutCollector { refuse: true, ..Default::default() };
        assert!(seq.emit_next(&mut out, |i| values![i]).is_err());
        assert!(!seq.is_finished());
        out.refuse = false;
        emit(&mut seq, &mut out);
        assert_eq!(out.ids(), [0]);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_holds_emits_back() {
        let mut seq = Sequencer::new(None, 10.0);
        let mut out = FakeSpoutCollector::default();
        for _ in 0..100 {
            emit(&mut seq, &mut out);
        }
        assert_eq!(out.emits.len(), 1, "10/s: one now, the next in 100ms");
        tokio::time::advance(Duration::from_millis(99)).await;
        emit(&mut seq, &mut out);
        assert_eq!(out.emits.len(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        emit(&mut seq, &mut out);
        emit(&mut seq, &mut out);
        assert_eq!(out.emits.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_is_split_among_tasks() {
        let mut seq = Sequencer::new(None, 20.0);
        seq.open(&context(0, 2));
        let mut out = FakeSpoutCollector::default();
        emit(&mut seq, &mut out);
        tokio::time::advance(Duration::from_millis(60)).await;
        emit(&mut seq, &mut out);
        assert_eq!(out.emits.len(), 1, "10/s per task");
        tokio::time::advance(Duration::from_millis(40)).await;
        emit(&mut seq, &mut out);
        assert_eq!(out.emits.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_catches_up_a_short_backlog_but_not_a_long_stall() {
        let mut seq = Sequencer::new(None, 1000.0);
        let mut out = FakeSpoutCollector::default();
        emit(&mut seq, &mut out);
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..1000 {
            emit(&mut seq, &mut out);
        }
        // 1 ms apart: the 100 ms window's worth plus the one due now.
        assert_eq!(out.emits.len(), 1 + 101);
    }

    #[test]
    fn rejects_negative_or_infinite_rate() {
        assert!(check_rate(0.0).is_ok());
        assert!(check_rate(2.5).is_ok());
        let e = check_rate(-1.0).unwrap_err().to_string();
        assert!(e.contains("got -1"), "{e}");
        assert!(check_rate(f64::INFINITY).is_err());
        assert!(check_rate(f64::NAN).is_err());
    }
}
