//! `random-sentence` (spout): emits Storm's five classic sentences in random order, on field
//! `sentence`.
//!
//! Config: `rate` (tuples per second for the whole component, 0 = flat out; default 0),
//! `limit` (tuples in all, 0 = endless; default 0), `seed` (default: random).
//!
//! Contract: tuple `i` is emitted with message id `i` and its sentence is a function of
//! `(seed, i)` alone, so a failed id is re-emitted with the same sentence without having been
//! stored; see [`crate::replay`] for pacing, replays and when the spout is finished.

use compact_str::CompactString;
use serde::Deserialize;
use squall_api::{BoxError, Value};

use crate::random_word::RandomChoice;

/// The sentences of Storm's `RandomSentenceSpout`, the same five WC-1 cycles through.
pub use squall_runtime::bench::SENTENCES;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub limit: u64,
    pub seed: Option<u64>,
}

/// The `random-sentence` factory.
pub fn build(config: Config) -> Result<RandomChoice, BoxError> {
    // Static strings: emitting one copies a pointer, however long the sentence.
    let sentences = SENTENCES.map(|s| Value::Str(CompactString::const_new(s))).to_vec();
    RandomChoice::new("sentence", sentences, config.rate, config.limit, config.seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{build_error, drain_acking, spout, FakeSpoutCollector};
    use squall_api::Component;

    #[tokio::test]
    async fn random_sentence_emits_the_five_sentences() {
        let mut s = spout("random-sentence", "seed = 1");
        let mut out = FakeSpoutCollector::default();
        drain_acking(s.as_mut(), &mut out, 500).await;
        let mut seen = out.strings();
        seen.sort();
        seen.dedup();
        let mut all = SENTENCES.to_vec();
        all.sort();
        assert_eq!(seen, all);
        assert!(out.emits.iter().all(|e| e.stream == "default"));
    }

    #[tokio::test]
    async fn random_sentence_replays_same_sentence_for_failed_id() {
        let mut s = spout("random-sentence", "");
        let mut out = FakeSpoutCollector::default();
        for _ in 0..50 {
            s.next_tuple(&mut out).await.unwrap();
        }
        for id in [7, 31, 2] {
            s.fail(Value::Int(id)).await;
        }
        for _ in 0..3 {
            s.next_tuple(&mut out).await.unwrap();
        }
        for (replay, id) in out.emits[50..].iter().zip([7, 31, 2]) {
            assert_eq!(replay.msg_id, Some(Value::Int(id)));
            assert_eq!(replay.values, out.emits[id as usize].values);
        }
    }

    #[tokio::test]
    async fn random_sentence_is_reproducible_from_its_seed() {
        let mut a = FakeSpoutCollector::default();
        let mut b = FakeSpoutCollector::default();
        drain_acking(spout("random-sentence", "seed = 42").as_mut(), &mut a, 50).await;
        drain_acking(spout("random-sentence", "seed = 42").as_mut(), &mut b, 50).await;
        assert_eq!(a.strings(), b.strings());
    }

    #[tokio::test]
    async fn random_sentence_with_limit_finishes_once_all_are_acked() {
        let mut s = spout("random-sentence", "limit = 3");
        let mut out = FakeSpoutCollector::default();
        for _ in 0..5 {
            s.next_tuple(&mut out).await.unwrap();
        }
        assert_eq!(out.ids(), [0, 1, 2]);
        assert!(!s.is_finished());
        for id in 0..3 {
            s.ack(Value::Int(id)).await;
        }
        assert!(s.is_finished());
    }

    #[test]
    fn random_sentence_declares_sentence_field() {
        let c = crate::testkit::build("random-sentence", "").unwrap();
        assert!(matches!(c, Component::Spout(_)));
        let decl = c.declare_outputs();
        let fields: Vec<_> = decl.stream("default").unwrap().fields.iter().collect();
        assert_eq!(fields, ["sentence"]);
    }

    #[test]
    fn random_sentence_rejects_unknown_key() {
        let e = build_error("random-sentence", "words = [\"x\"]");
        assert!(e.contains("unknown field `words`"), "{e}");
    }
}
