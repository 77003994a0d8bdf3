//! `exclamation` (basic bolt): emits its input's first field, a string, with a suffix
//! appended, on field `word`.
//!
//! Config: `suffix` (default `"!!!"`).
//!
//! Contract: one emit per input, anchored to it; an input whose first field is not a string
//! fails. Tick tuples are ignored. Results of up to 24 bytes are built without allocating.

use compact_str::CompactString;
use serde::Deserialize;
use squall_api::{async_trait, values, BasicBolt, BasicCollector, BoxError, OutputDeclarer, Tuple};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_suffix")]
    pub suffix: String,
}

fn default_suffix() -> String {
    "!!!".to_string()
}

/// The `exclamation` factory.
pub fn build(config: Config) -> Result<Exclamation, BoxError> {
    Ok(Exclamation { suffix: config.suffix })
}

pub struct Exclamation {
    suffix: String,
}

#[async_trait]
impl BasicBolt for Exclamation {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        if input.is_tick() {
            return Ok(());
        }
        let word = input.get_str(0)?;
        let mut exclaimed = CompactString::with_capacity(word.len() + self.suffix.len());
        exclaimed.push_str(word);
        exclaimed.push_str(&self.suffix);
        out.emit(values![exclaimed])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{basic_bolt, build_error, run_basic, FakeBoltCollector};
    use squall_api::Value;

    #[tokio::test]
    async fn exclamation_appends_the_default_suffix() {
        let mut bolt = basic_bolt("exclamation", "");
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["word"], values!["nathan"]);
        run_basic(bolt.as_mut(), &mut out, input).await.unwrap();
        assert_eq!(out.emitted(), [[Value::from("nathan!!!")]]);
        assert_eq!(out.emits[0].anchors, [[Value::from("nathan")]]);
        assert_eq!(out.acked.len(), 1);
    }

    #[tokio::test]
    async fn exclamation_appends_the_configured_suffix() {
        let mut bolt = basic_bolt("exclamation", r#"suffix = "?!""#);
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["sentence"], values!["an apple a day keeps the doctor away"]);
        run_basic(bolt.as_mut(), &mut out, input).await.unwrap();
        assert_eq!(out.emitted(), [[Value::from("an apple a day keeps the doctor away?!")]]);
    }

    #[tokio::test]
    async fn exclamation_fails_a_non_string_input() {
        let mut bolt = basic_bolt("exclamation", "");
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["word"], values![true]);
        assert!(run_basic(bolt.as_mut(), &mut out, input).await.is_err());
        assert_eq!(out.failed.len(), 1);
    }

    #[test]
    fn exclamation_rejects_unknown_key() {
        let e = build_error("exclamation", r#"prefix = "!""#);
        assert!(e.contains("unknown field `prefix`"), "{e}");
    }
}
