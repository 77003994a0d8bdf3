//! `split-sentence` (basic bolt): splits a string field of its input on whitespace and emits
//! each word on field `word`, anchored to the input.
//!
//! Config: `field` (optional): the field to split, e.g. `"value"` after a log-spout; without
//! it, the input's first field.
//!
//! Contract: one emit per word, in order; an input whose field is missing or not a string
//! fails. Tick tuples are ignored. Words of up to 24 bytes are emitted without allocating.

use serde::Deserialize;
use squall_api::{async_trait, values, BasicBolt, BasicCollector, BoxError, OutputDeclarer, Tuple};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub field: Option<String>,
}

/// The `split-sentence` factory.
pub fn build(config: Config) -> Result<SplitSentence, BoxError> {
    Ok(SplitSentence { field: config.field })
}

#[derive(Default)]
pub struct SplitSentence {
    field: Option<String>,
}

#[async_trait]
impl BasicBolt for SplitSentence {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        if input.is_tick() {
            return Ok(());
        }
        let text = match &self.field {
            Some(field) => input.get_str(field.as_str())?,
            None => input.get_str(0)?,
        };
        for word in text.split_whitespace() {
            out.emit(values![word])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{basic_bolt, build_error, run_basic, FakeBoltCollector};
    use squall_api::Value;

    #[tokio::test]
    async fn split_emits_each_word_anchored() {
        let mut bolt = basic_bolt("split-sentence", "");
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["sentence"], values!["  the cow\tjumped \n"]);
        run_basic(bolt.as_mut(), &mut out, input).await.unwrap();
        let words: Vec<Vec<Value>> = ["the", "cow", "jumped"].map(|w| vec![Value::from(w)]).into();
        assert_eq!(out.emitted(), words);
        for emit in &out.emits {
            assert_eq!(emit.stream, "default");
            assert_eq!(emit.anchors, [vec![Value::from("  the cow\tjumped \n")]]);
        }
        assert_eq!(out.acked.len(), 1);
    }

    #[tokio::test]
    async fn split_reads_the_first_field_whatever_its_name() {
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["line", "n"], values!["a b", 1]);
        run_basic(&mut SplitSentence::default(), &mut out, input).await.unwrap();
        assert_eq!(out.emits.len(), 2);
    }

    #[tokio::test]
    async fn split_fails_a_non_string_input() {
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["sentence"], values![42]);
        let e = run_basic(&mut SplitSentence::default(), &mut out, input).await.unwrap_err();
        assert!(e.to_string().contains("not string"), "{e}");
        assert_eq!((out.emits.len(), out.failed.len()), (0, 1));
    }

    #[tokio::test]
    async fn split_reads_the_field_it_is_given() {
        let mut bolt = basic_bolt("split-sentence", r#"field = "value""#);
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["key", "value"], values![squall_api::Value::Null, "a b c"]);
        run_basic(bolt.as_mut(), &mut out, input).await.unwrap();
        assert_eq!(out.emits.len(), 3);
    }

    #[test]
    fn split_takes_only_a_field() {
        let e = build_error("split-sentence", "separator = \",\"");
        assert!(e.contains("unknown field `separator`"), "{e}");
    }
}
