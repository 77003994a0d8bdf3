//! `flaky` (bolt): fails a fraction of its inputs and passes the rest through, to exercise
//! replay.
//!
//! Config: `fail_fraction` (0.0 to 1.0, default 0.1), `seed` (default: random),
//! `first_attempt_only` (default false).
//!
//! Contract: each input is either failed (nothing emitted) or passed: its values are emitted
//! on the default stream, which carries the input's fields (`declare_passthrough`), anchored
//! to it, and then it is acked. Each input fails with probability `fail_fraction`. With
//! `first_attempt_only`, an input — identified by the stable hash of its values — can fail
//! only the first time this task sees it: the fail draw is a function of (seed, hash), and the
//! hashes of failed inputs are remembered, so a replay always passes. "First time" is per task:
//! with several tasks, route replays back to the same task (fields grouping) and set `seed`.
//! Tick tuples are acked and otherwise ignored.

use serde::Deserialize;
use squall_api::{
    async_trait, Bolt, BoltCollector, BoxError, OutputDeclarer, StableHasher, Tuple, Value, Values,
};

use crate::fast_hash::FastSet;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_fail_fraction")]
    pub fail_fraction: f64,
    pub seed: Option<u64>,
    #[serde(default)]
    pub first_attempt_only: bool,
}

fn default_fail_fraction() -> f64 {
    0.1
}

/// The `flaky` factory.
pub fn build(config: Config) -> Result<Flaky, BoxError> {
    let fraction = config.fail_fraction;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(format!("fail_fraction must be between 0.0 and 1.0, got {fraction}").into());
    }
    let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
    Ok(Flaky {
        fail_fraction: fraction,
        first_attempt_only: config.first_attempt_only,
        seed,
        rng: fastrand::Rng::with_seed(seed),
        failed: FastSet::default(),
    })
}

pub struct Flaky {
    fail_fraction: f64,
    first_attempt_only: bool,
    seed: u64,
    rng: fastrand::Rng,
    /// With `first_attempt_only`: the hashes of the inputs failed so far.
    failed: FastSet<u64>,
}

impl Flaky {
    fn should_fail(&mut self, input: &Tuple) -> bool {
        if !self.first_attempt_only {
            return self.rng.f64() < self.fail_fraction;
        }
        let hash = values_hash(input.values());
        if self.failed.contains(&hash) {
            return false;
        }
        let fail = fastrand::Rng::with_seed(self.seed ^ hash).f64() < self.fail_fraction;
        if fail {
            self.failed.insert(hash);
        }
        fail
    }
}

/// A hash of a tuple's values, the same in every process.
fn values_hash(values: &[Value]) -> u64 {
    let mut hasher = StableHasher::new();
    for value in values {
        value.hash_into(&mut hasher);
    }
    hasher.finish()
}

#[async_trait]
impl Bolt for Flaky {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare_passthrough("default");
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        if input.is_tick() {
            out.ack(input);
        } else if self.should_fail(&input) {
            out.fail(input);
        } else {
            out.emit(&input, Values::from(input.values()))?;
            out.ack(input);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{bolt, build_error, FakeBoltCollector};
    use squall_api::{values, Component};

    fn numbered(i: i64) -> Tuple {
        Tuple::for_test(["n", "word"], values![i, "x"])
    }

    #[tokio::test]
    async fn flaky_fails_about_the_configured_fraction() {
        let mut flaky = bolt("flaky", "fail_fraction = 0.3\nseed = 1");
        let mut out = FakeBoltCollector::default();
        for i in 0..10_000 {
            flaky.execute(numbered(i), &mut out).await.unwrap();
        }
        let failed = out.failed.len();
        assert!((2_700..3_300).contains(&failed), "{failed} of 10000 failed");
        assert_eq!(out.acked.len() + failed, 10_000);
        assert_eq!(out.emits.len(), out.acked.len());
    }

    #[tokio::test]
    async fn flaky_passes_values_anchored_then_acks() {
        let mut flaky = bolt("flaky", "fail_fraction = 0.0");
        let mut out = FakeBoltCollector::default();
        flaky.execute(numbered(7), &mut out).await.unwrap();
        let expected = vec![Value::from(7), Value::from("x")];
        assert_eq!(out.emitted(), std::slice::from_ref(&expected));
        assert_eq!(out.emits[0].stream, "default");
        assert_eq!(out.emits[0].anchors, [expected]);
        assert_eq!((out.acked.len(), out.failed.len()), (1, 0));
    }

    #[tokio::test]
    async fn flaky_fails_everything_at_fraction_one() {
        let mut flaky = bolt("flaky", "fail_fraction = 1.0");
        let mut out = FakeBoltCollector::default();
        for i in 0..100 {
            flaky.execute(numbered(i), &mut out).await.unwrap();
        }
        assert_eq!((out.emits.len(), out.failed.len()), (0, 100));
    }

    #[tokio::test]
    async fn flaky_first_attempt_only_passes_replays() {
        let mut flaky = bolt("flaky", "fail_fraction = 0.5\nfirst_attempt_only = true");
        let mut out = FakeBoltCollector::default();
        for i in 0..1_000 {
            flaky.execute(numbered(i), &mut out).await.unwrap();
        }
        let failed: Vec<i64> = out.failed.iter().map(|t| t.get_i64("n").unwrap()).collect();
        assert!((350..650).contains(&failed.len()), "{} failed", failed.len());
        // Every input seen again passes, whether it failed or passed the first time.
        let mut replays = FakeBoltCollector::default();
        for i in 0..1_000 {
            flaky.execute(numbered(i), &mut replays).await.unwrap();
        }
        assert!(replays.failed.is_empty());
        assert_eq!(replays.acked.len(), 1_000);
    }

    #[tokio::test]
    async fn flaky_without_first_attempt_only_may_fail_replays() {
        let mut flaky = bolt("flaky", "fail_fraction = 0.5\nseed = 9");
        let mut out = FakeBoltCollector::default();
        for _ in 0..100 {
            flaky.execute(numbered(1), &mut out).await.unwrap();
        }
        assert!(out.failed.len() > 10 && out.acked.len() > 10);
    }

    #[test]
    fn flaky_rejects_fraction_out_of_range() {
        let e = build_error("flaky", "fail_fraction = 1.5");
        assert_eq!(e, "fail_fraction must be between 0.0 and 1.0, got 1.5");
        let e = build_error("flaky", "fail_fraction = -0.1");
        assert_eq!(e, "fail_fraction must be between 0.0 and 1.0, got -0.1");
        let e = build_error("flaky", "fail_fraction = nan");
        assert!(e.contains("got NaN"), "{e}");
    }

    #[test]
    fn flaky_declares_passthrough_default_stream() {
        let c = crate::testkit::build("flaky", "").unwrap();
        assert!(matches!(c, Component::Bolt(_)));
        let decl = c.declare_outputs();
        let stream = decl.stream("default").unwrap();
        assert!(stream.passthrough);
    }
}
