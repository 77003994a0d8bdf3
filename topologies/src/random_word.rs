//! `random-word` (spout): emits words picked at random from a list, on field `word`.
//!
//! Config: `words` (list of strings, default `["nathan", "mike", "jackson", "golda",
//! "bertels"]`), `rate` (tuples per second for the whole component, 0 = flat out; default 0),
//! `limit` (tuples in all, 0 = endless; default 0), `seed` (default: random).
//!
//! Contract: tuple `i` is emitted with message id `i` and its word is a function of
//! `(seed, i)` alone, so a failed id is re-emitted with the same word without having been
//! stored; see [`crate::replay`] for pacing, replays and when the spout is finished. The
//! [`RandomChoice`] spout defined here also serves `random-sentence`.

use serde::Deserialize;
use squall_api::{
    async_trait, values, BoxError, MessageId, OutputDeclarer, Spout, SpoutCollector, TopologyContext, Value,
};

use crate::replay::{check_rate, pick, Sequencer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_words")]
    pub words: Vec<String>,
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub limit: u64,
    pub seed: Option<u64>,
}

fn default_words() -> Vec<String> {
    ["nathan", "mike", "jackson", "golda", "bertels"].map(String::from).to_vec()
}

/// The `random-word` factory.
pub fn build(config: Config) -> Result<RandomChoice, BoxError> {
    if config.words.is_empty() {
        return Err("words must list at least one word".into());
    }
    let words = config.words.into_iter().map(Value::from).collect();
    RandomChoice::new("word", words, config.rate, config.limit, config.seed)
}

/// A spout emitting, on one field, values picked from a fixed list by `(seed, i)`.
pub struct RandomChoice {
    field: &'static str,
    choices: Choices,
    seq: Sequencer,
}

/// The list to pick from and the seed that picks.
struct Choices {
    values: Vec<Value>,
    seed: u64,
}

impl Choices {
    /// The value of tuple `i`.
    fn get(&self, i: u64) -> &Value {
        &self.values[pick(self.seed, i, self.values.len())]
    }
}

impl RandomChoice {
    /// Picks from `choices` (not empty) at `rate` per second, `limit` in all (0: endless),
    /// seeded with `seed` (`None`: a random seed).
    pub fn new(
        field: &'static str,
        choices: Vec<Value>,
        rate: f64,
        limit: u64,
        seed: Option<u64>,
    ) -> Result<Self, BoxError> {
        assert!(!choices.is_empty(), "RandomChoice needs something to choose");
        Ok(RandomChoice {
            field,
            choices: Choices { values: choices, seed: seed.unwrap_or_else(|| fastrand::u64(..)) },
            seq: Sequencer::new((limit > 0).then_some(limit), check_rate(rate)?),
        })
    }

    /// The value emitted as tuple `i`.
    pub fn choice(&self, i: u64) -> &Value {
        self.choices.get(i)
    }
}

#[async_trait]
impl Spout for RandomChoice {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare([self.field]);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.seq.open(ctx);
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        let choices = &self.choices;
        self.seq.emit_next(out, |i| values![choices.get(i).clone()])?;
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
    use super::*;
    use crate::testkit::{build_error, drain_acking, spout, FakeSpoutCollector};

    #[tokio::test]
    async fn random_word_emits_only_configured_words() {
        let mut s = spout("random-word", r#"words = ["a", "b"]"#);
        let mut out = FakeSpoutCollector::default();
        drain_acking(s.as_mut(), &mut out, 100).await;
        assert_eq!(out.emits.len(), 100);
        let strings = out.strings();
        assert!(strings.contains(&"a") && strings.contains(&"b"));
        assert!(strings.iter().all(|w| *w == "a" || *w == "b"));
    }

    #[tokio::test]
    async fn random_word_defaults_to_storms_names() {
        let mut s = spout("random-word", "seed = 7");
        let mut out = FakeSpoutCollector::default();
        drain_acking(s.as_mut(), &mut out, 200).await;
        let mut seen = out.strings();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["bertels", "golda", "jackson", "mike", "nathan"]);
    }

    #[tokio::test]
    async fn random_word_replays_same_word_for_failed_id() {
        let mut s = spout("random-word", "seed = 3");
        let mut out = FakeSpoutCollector::default();
        for _ in 0..20 {
            s.next_tuple(&mut out).await.unwrap();
        }
        s.fail(Value::Int(13)).await;
        s.next_tuple(&mut out).await.unwrap();
        let replay = &out.emits[20];
        assert_eq!(replay.msg_id, Some(Value::Int(13)));
        assert_eq!(replay.values, out.emits[13].values);
    }

    #[tokio::test]
    async fn random_word_with_limit_finishes_once_all_are_acked() {
        let mut s = spout("random-word", "limit = 5");
        let mut out = FakeSpoutCollector::default();
        assert!(!s.is_finished());
        drain_acking(s.as_mut(), &mut out, 10).await;
        assert_eq!(out.ids(), [0, 1, 2, 3, 4]);
        assert!(s.is_finished());
    }

    #[test]
    fn random_word_rejects_empty_word_list() {
        let e = build_error("random-word", "words = []");
        assert_eq!(e, "words must list at least one word");
    }

    #[test]
    fn random_word_rejects_negative_rate() {
        let e = build_error("random-word", "rate = -5");
        assert!(e.starts_with("rate must be"), "{e}");
    }

    #[test]
    fn same_seed_picks_the_same_words() {
        let config = || Config { words: default_words(), rate: 0.0, limit: 0, seed: Some(99) };
        let (a, b) = (build(config()).unwrap(), build(config()).unwrap());
        assert!((0..100).all(|i| a.choice(i) == b.choice(i)));
    }
}
