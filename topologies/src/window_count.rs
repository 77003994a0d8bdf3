//! `window-count` (aggregate bolt): counts the tuples of each window, per key.
//!
//! Config: `key` (a field name; absent: one count per window, with key null).
//!
//! Emits `key, count, window_start, window_end` once per key with tuples in the window when it
//! fires: the key's value (null without `key`), how many tuples it had, and the window's
//! bounds in integer milliseconds since the epoch (start inclusive, end exclusive).
//!
//! Contract: a [`WindowAggregate`] — the runtime keeps a `u64` count per key and window (or
//! pane), not the tuples, so memory grows with the keys; merging two panes adds their counts.
//! The `window` table of the topology file says which windows (length, slide, event time,
//! lateness); the runtime anchors each result to the window's inputs and acks them. An input
//! without the `key` field is reported and left out of the count.

use serde::Deserialize;
use squall_api::{values, BoxError, OutputDeclarer, Tuple, Value, Values, WindowAggregate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub key: Option<String>,
}

/// The `window-count` factory.
pub fn build(config: Config) -> Result<WindowCount, BoxError> {
    if config.key.as_deref() == Some("") {
        return Err(
            "key must name a field, found an empty string (leave it out for one count per window)".into()
        );
    }
    Ok(WindowCount { key: config.key })
}

pub struct WindowCount {
    /// The field counted by; `None`: one count per window.
    key: Option<String>,
}

impl WindowAggregate for WindowCount {
    type Acc = u64;

    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "count", "window_start", "window_end"]);
    }

    fn key(&self, input: &Tuple) -> Result<Value, BoxError> {
        match &self.key {
            Some(field) => Ok(input.get(field.as_str())?.clone()),
            None => Ok(Value::Null),
        }
    }

    fn create(&self) -> u64 {
        0
    }

    fn add(&self, acc: &mut u64, _input: &Tuple) -> Result<(), BoxError> {
        *acc += 1;
        Ok(())
    }

    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }

    fn result(&self, key: &Value, acc: &u64, start_ms: i64, end_ms: i64) -> Values {
        values![key.clone(), *acc, start_ms, end_ms]
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::{aggregate, build_error};
    use squall_api::{values, Accumulator, DynAggregate, Tuple, Value};

    fn event(word: &str, ts: i64) -> Tuple {
        Tuple::for_test(["word", "ts"], values![word, ts])
    }

    /// Folds `words` into one accumulator per key, as the runtime does for one pane.
    fn pane(agg: &dyn DynAggregate, words: &[&str]) -> Vec<(Value, Accumulator)> {
        let mut pane: Vec<(Value, Accumulator)> = Vec::new();
        for word in words {
            let input = event(word, 1_000);
            let key = agg.key(&input).unwrap();
            let at = match pane.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    pane.push((key, agg.create()));
                    pane.len() - 1
                }
            };
            agg.add(&mut pane[at].1, &input).unwrap();
        }
        pane
    }

    #[test]
    fn counts_per_key_through_create_add_merge_result() {
        let agg = aggregate("window-count", r#"key = "word""#);
        // Two panes of one window, as the runtime keeps a sliding window's.
        let mut window = pane(agg.as_ref(), &["cow", "moon", "cow"]);
        for (key, acc) in pane(agg.as_ref(), &["cow", "jumped"]) {
            match window.iter().position(|(k, _)| *k == key) {
                Some(at) => {
                    let (key, mine) = window.remove(at);
                    window.insert(at, (key, agg.merge(mine, acc)));
                }
                None => window.push((key, acc)),
            }
        }
        let results: Vec<Vec<Value>> =
            window.iter().map(|(key, acc)| agg.result(key, acc, 10_000, 20_000).to_vec()).collect();
        let row =
            |w: &str, n: i64| vec![Value::from(w), Value::Int(n), Value::Int(10_000), Value::Int(20_000)];
        assert_eq!(results, [row("cow", 3), row("moon", 1), row("jumped", 1)]);
    }

    #[test]
    fn without_a_key_there_is_one_count_per_window_under_null() {
        let agg = aggregate("window-count", "");
        let mut acc = agg.create();
        for ts in 0..4 {
            assert_eq!(agg.key(&event("any", ts)).unwrap(), Value::Null);
            agg.add(&mut acc, &event("any", ts)).unwrap();
        }
        assert_eq!(
            agg.result(&Value::Null, &acc, 0, 10).to_vec(),
            [Value::Null, Value::Int(4), Value::Int(0), Value::Int(10)]
        );
    }

    #[test]
    fn an_input_without_the_key_field_is_an_error_not_a_panic() {
        let agg = aggregate("window-count", r#"key = "user""#);
        let e = agg.key(&event("cow", 1)).unwrap_err().to_string();
        assert!(e.contains("user"), "{e}");
    }

    #[test]
    fn declares_key_count_and_the_window_bounds() {
        let declared = crate::testkit::build("window-count", "").unwrap().declare_outputs();
        let fields: Vec<&str> = declared.streams()[0].fields.iter().collect();
        assert_eq!(fields, ["key", "count", "window_start", "window_end"]);
    }

    #[test]
    fn an_empty_key_is_refused() {
        let e = build_error("window-count", r#"key = """#);
        assert!(e.starts_with("key must name a field"), "{e}");
    }
}
