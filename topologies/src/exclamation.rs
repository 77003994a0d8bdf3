//! `exclamation` (basic bolt): appends a suffix to a string field of its input.
//!
//! Config: `suffix` (default `"!!!"`); `field` (optional). Without `field`, it emits its
//! input's first field with the suffix appended, on field `word`. With `field`, it emits the
//! input's own fields (every input stream must carry the same ones), that one suffixed and the
//! others as they were — a transform for records, e.g. `field = "value"` after a log-spout.
//!
//! Contract: one emit per input, anchored to it; an input whose field is missing or not a
//! string fails. Tick tuples are ignored. Results of up to 24 bytes are built without
//! allocating.

use compact_str::CompactString;
use serde::Deserialize;
use squall_api::{
    async_trait, values, BasicBolt, BasicCollector, BoxError, OutputDeclarer, Tuple, Value, Values,
    DEFAULT_STREAM,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_suffix")]
    pub suffix: String,
    #[serde(default)]
    pub field: Option<String>,
}

fn default_suffix() -> String {
    "!!!".to_string()
}

/// The `exclamation` factory.
pub fn build(config: Config) -> Result<Exclamation, BoxError> {
    Ok(Exclamation { suffix: config.suffix, field: config.field })
}

pub struct Exclamation {
    suffix: String,
    field: Option<String>,
}

#[async_trait]
impl BasicBolt for Exclamation {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        match self.field {
            Some(_) => out.declare_passthrough(DEFAULT_STREAM),
            None => out.declare(["word"]),
        };
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        if input.is_tick() {
            return Ok(());
        }
        let Some(field) = &self.field else {
            out.emit(values![self.exclaim(input.get_str(0)?)])?;
            return Ok(());
        };
        let index =
            input.fields().index_of(field).ok_or_else(|| format!("the input has no field `{field}`"))?;
        let exclaimed = self.exclaim(input.get_str(index)?);
        let mut values = Values::from(input.values());
        values[index] = Value::Str(exclaimed);
        out.emit(values)?;
        Ok(())
    }
}

impl Exclamation {
    fn exclaim(&self, text: &str) -> CompactString {
        let mut exclaimed = CompactString::with_capacity(text.len() + self.suffix.len());
        exclaimed.push_str(text);
        exclaimed.push_str(&self.suffix);
        exclaimed
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

    #[tokio::test]
    async fn exclamation_with_a_field_passes_the_other_fields_through() {
        let mut bolt = basic_bolt("exclamation", r#"field = "value""#);
        let mut streams = OutputDeclarer::default();
        bolt.declare_outputs(&mut streams);
        assert!(streams.streams()[0].passthrough, "emits the input's fields");
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["key", "value", "partition"], values!["k1", "hello", 2]);
        run_basic(bolt.as_mut(), &mut out, input).await.unwrap();
        assert_eq!(out.emitted(), [[Value::from("k1"), Value::from("hello!!!"), Value::Int(2)]]);
        let input = Tuple::for_test(["key"], values!["k1"]);
        let e = run_basic(bolt.as_mut(), &mut out, input).await.unwrap_err();
        assert!(e.to_string().contains("no field `value`"), "{e}");
    }

    #[test]
    fn exclamation_rejects_unknown_key() {
        let e = build_error("exclamation", r#"prefix = "!""#);
        assert!(e.contains("unknown field `prefix`"), "{e}");
    }
}
