//! `sequence` (spout): emits the numbers `0, 1, …, count − 1` on field `n`, each with
//! message id `n`.
//!
//! Config: `count` (required, ≥ 0), `rate` (tuples per second for the whole component, 0 =
//! flat out; default 0).
//!
//! Contract: every number is emitted once, and again each time its tree fails; the component's
//! tasks share the numbers, so across them each is emitted once. The spout is finished once
//! all its numbers were emitted and acked (at once if `count` is 0). See [`crate::replay`].

use serde::Deserialize;
use squall_api::{
    async_trait, values, BoxError, MessageId, OutputDeclarer, Spout, SpoutCollector, TopologyContext,
};

use crate::replay::{check_rate, Sequencer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub count: u64,
    #[serde(default)]
    pub rate: f64,
}

/// The `sequence` factory.
pub fn build(config: Config) -> Result<Sequence, BoxError> {
    Ok(Sequence { seq: Sequencer::new(Some(config.count), check_rate(config.rate)?) })
}

pub struct Sequence {
    seq: Sequencer,
}

#[async_trait]
impl Spout for Sequence {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.seq.open(ctx);
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        self.seq.emit_next(out, |n| values![n])?;
        Ok(())
    }

    async fn ack(&mut self, msg_id: MessageId) {
        self.seq.ack(&msg_id);
    }

    async fn fail(&mut self, msg_id: MessageId) {
        self.seq.fail(&msg_id);
    }

    fn is_finished(&self) -> bool {
        self.seq.is_finished()
    }

    fn is_exhausted(&self) -> bool {
        self.seq.is_exhausted()
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::{build_error, drain_acking, spout, FakeSpoutCollector};
    use squall_api::{TopologyContext, Value};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[tokio::test]
    async fn sequence_emits_every_number_once_then_finishes() {
        let mut s = spout("sequence", "count = 5");
        s.open(&TopologyContext::for_test("numbers")).await.unwrap();
        let mut out = FakeSpoutCollector::default();
        drain_acking(s.as_mut(), &mut out, 20).await;
        let ns: Vec<_> = out.emits.iter().map(|e| e.values[0].clone()).collect();
        assert_eq!(ns, (0..5).map(Value::Int).collect::<Vec<_>>());
        assert_eq!(out.ids(), [0, 1, 2, 3, 4], "message id = n");
        assert!(s.is_finished());
    }

    #[tokio::test]
    async fn sequence_replays_failed_numbers_before_finishing() {
        let mut s = spout("sequence", "count = 3");
        let mut out = FakeSpoutCollector::default();
        for _ in 0..3 {
            s.next_tuple(&mut out).await.unwrap();
        }
        s.ack(Value::Int(0)).await;
        s.ack(Value::Int(2)).await;
        s.fail(Value::Int(1)).await;
        assert!(!s.is_finished());
        s.next_tuple(&mut out).await.unwrap();
        s.next_tuple(&mut out).await.unwrap();
        assert_eq!(out.ids(), [0, 1, 2, 1]);
        s.ack(Value::Int(1)).await;
        assert!(s.is_finished());
    }

    #[tokio::test]
    async fn sequence_of_zero_is_finished_at_once() {
        let mut s = spout("sequence", "count = 0");
        assert!(s.is_finished());
        let mut out = FakeSpoutCollector::default();
        s.next_tuple(&mut out).await.unwrap();
        assert!(out.emits.is_empty());
    }

    #[tokio::test]
    async fn sequence_tasks_together_emit_each_number_once() {
        let tasks = Arc::new(BTreeMap::from([("numbers".to_string(), vec![4, 5, 6])]));
        let mut all = Vec::new();
        for task in [4, 5, 6] {
            let ctx = TopologyContext::new(
                "t",
                "numbers",
                task,
                tasks.clone(),
                Default::default(),
                Default::default(),
            );
            let mut s = spout("sequence", "count = 10");
            s.open(&ctx).await.unwrap();
            let mut out = FakeSpoutCollector::default();
            drain_acking(s.as_mut(), &mut out, 10).await;
            assert!(s.is_finished());
            all.extend(out.ids());
        }
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn sequence_requires_count() {
        let e = build_error("sequence", "rate = 10");
        assert!(e.contains("missing field `count`"), "{e}");
    }

    #[test]
    fn sequence_rejects_negative_count() {
        let e = build_error("sequence", "count = -1");
        assert!(e.contains("-1"), "{e}");
    }
}
