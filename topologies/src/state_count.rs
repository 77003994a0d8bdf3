//! `state-count` (stateful bolt): counts inputs per key in a checkpointed state and emits
//! `(key, count)` with the running count for every input.
//!
//! Config: `key` (required): the input field to count by. The count of a key is its value as
//! text (a string as it is, bytes as UTF-8, a number as its digits) → a number.
//!
//! Contract: the counts live in the task's [`KeyValueState`], which the runtime restores
//! from the last committed checkpoint before the first tuple and checkpoints as the topology's
//! `[settings] state` says, so a count survives the task (and, with `guarantee =
//! "exactly_once"`, counts each record once). Use a fields grouping on the key so that each
//! key is counted by one task. An input without the field fails with an error naming it;
//! tick tuples are ignored.

use serde::Deserialize;
use squall_api::{
    async_trait, values, BasicCollector, BoxError, KeyValueState, OutputDeclarer, StatefulBolt, Tuple, Value,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub key: String,
}

/// The `state-count` factory.
pub fn build(config: Config) -> Result<StateCount, BoxError> {
    if config.key.is_empty() {
        return Err("`key` must name an input field, not be empty".into());
    }
    Ok(StateCount { key: config.key })
}

pub struct StateCount {
    key: String,
}

/// The text a key value is counted under.
fn key_text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.to_string(),
        other => other.to_string(),
    }
}

#[async_trait]
impl StatefulBolt for StateCount {
    type Key = String;
    type Value = u64;

    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "count"]);
    }

    async fn execute(
        &mut self,
        input: &Tuple,
        state: &mut KeyValueState<String, u64>,
        out: &mut BasicCollector<'_>,
    ) -> Result<(), BoxError> {
        if input.is_tick() {
            return Ok(());
        }
        let value = input.get(self.key.as_str()).map_err(|e| format!("state-count: {e}"))?;
        // A string key is looked up by reference (no allocation once the key is known) and
        // emitted as the input's own value (a cheap clone).
        let (count, emitted) = match value {
            Value::Str(text) => {
                let count = match state.get_mut(text.as_str()) {
                    Some(count) => count,
                    None => state.get_mut_or_insert_with(text.to_string(), || 0),
                };
                (count, value.clone())
            }
            _ => {
                let key = key_text(value);
                let emitted = Value::from(key.as_str());
                (state.get_mut_or_insert_with(key, || 0), emitted)
            }
        };
        *count += 1;
        let count = *count;
        out.emit(values![emitted, count])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testkit::{build, build_error, FakeBoltCollector};
    use squall_api::state::{decode, encode};
    use squall_api::{Component, DynStateful};

    fn stateful(config: &str) -> Box<dyn DynStateful> {
        match build("state-count", config).expect("builds") {
            Component::Stateful(b) => b,
            _ => panic!("state-count is not a stateful bolt"),
        }
    }

    async fn run(
        bolt: &mut dyn DynStateful,
        out: &mut FakeBoltCollector,
        word: Value,
    ) -> Result<(), BoxError> {
        let input = Tuple::for_test(["word", "n"], values![word, 1]);
        let result = bolt.execute(&input, &mut BasicCollector::new(out, &input)).await;
        match &result {
            Ok(()) => out.acked.push(input),
            Err(_) => out.failed.push(input),
        }
        result
    }

    fn changes(bolt: &mut dyn DynStateful, id: u64) -> BTreeMap<String, Option<u64>> {
        bolt.checkpoint(id)
            .unwrap()
            .into_iter()
            .map(|c| (decode(&c.key).unwrap(), c.value.map(|v| decode(&v).unwrap())))
            .collect()
    }

    #[tokio::test]
    async fn counts_from_the_restored_state_and_checkpoints_only_what_changed() {
        let mut bolt = stateful(r#"key = "word""#);
        let restored = vec![(encode("cow").unwrap(), encode(&41u64).unwrap())];
        bolt.restore(restored, false).unwrap();
        let mut out = FakeBoltCollector::default();
        for word in ["cow", "moon", "cow"] {
            run(bolt.as_mut(), &mut out, word.into()).await.unwrap();
        }
        run(bolt.as_mut(), &mut out, 7.into()).await.unwrap();
        let emitted: Vec<Vec<Value>> = out.emits.iter().map(|e| e.values.to_vec()).collect();
        assert_eq!(
            emitted,
            [values!["cow", 42], values!["moon", 1], values!["cow", 43], values!["7", 1]].map(|v| v.to_vec())
        );
        assert_eq!(out.acked.len(), 4);
        let first = changes(bolt.as_mut(), 1);
        let expected = [("7", 1), ("cow", 43), ("moon", 1)].map(|(k, v)| (k.to_string(), Some(v)));
        assert_eq!(first, BTreeMap::from(expected));
        run(bolt.as_mut(), &mut out, "moon".into()).await.unwrap();
        assert_eq!(changes(bolt.as_mut(), 2), BTreeMap::from([("moon".to_string(), Some(2))]), "deltas only");
        assert!(changes(bolt.as_mut(), 3).is_empty());
        assert_eq!(bolt.entries(), 3);
    }

    #[tokio::test]
    async fn a_rollback_restarts_from_the_committed_counts() {
        let mut bolt = stateful(r#"key = "word""#);
        bolt.restore(Vec::new(), false).unwrap();
        let mut out = FakeBoltCollector::default();
        run(bolt.as_mut(), &mut out, "cow".into()).await.unwrap();
        bolt.restore(vec![(encode("cow").unwrap(), encode(&5u64).unwrap())], true).unwrap();
        assert!(changes(bolt.as_mut(), 1).is_empty(), "a restored state has no changes");
        run(bolt.as_mut(), &mut out, "cow".into()).await.unwrap();
        assert_eq!(out.emits.last().unwrap().values.to_vec(), values!["cow", 6].to_vec());
    }

    #[tokio::test]
    async fn an_input_without_the_key_field_fails_naming_it() {
        let mut bolt = stateful(r#"key = "missing""#);
        bolt.restore(Vec::new(), false).unwrap();
        let mut out = FakeBoltCollector::default();
        let err = run(bolt.as_mut(), &mut out, "cow".into()).await.unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        assert_eq!(out.failed.len(), 1);
        assert!(build_error("state-count", "").contains("missing field `key`"));
        assert!(build_error("state-count", r#"key = """#).contains("must name an input field"));
    }
}
