//! What `log-sink` and `kafka-sink` do alike around their clients: make a record of an input
//! tuple, and settle the inputs once their records are durable (or are not).
//!
//! Contract: [`record_of`] takes a record's key from the input's key field (no key when the
//! input has no such field, or it is null) and its value from the value field, both with
//! [`to_bytes`]; an input without the value field is refused with [`NoValue`], which names
//! the field. [`settle`] acks the inputs of a durable record or batch, and otherwise reports
//! why and fails them, so that their spouts replay them. Each sink keeps only its client
//! calls (appending batches, producing records) and when it settles.

use std::fmt::Display;

use bytes::Bytes;
use squall_api::{BoltCollector, FieldError, Tuple, Value};

use super::values::to_bytes;

/// The defaults of the keys both sinks take (`key_field`, `value_field`, `linger_ms`), for
/// serde.
pub mod defaults {
    pub fn key_field() -> String {
        "key".to_string()
    }
    pub fn value_field() -> String {
        "value".to_string()
    }
    pub fn linger_ms() -> u64 {
        5
    }
}

/// An input without the value field: no record can be made of it.
#[derive(Debug, thiserror::Error)]
#[error("no value for the record: {0}")]
pub struct NoValue(#[from] pub FieldError);

/// The record (key, value) of `input`: see the module docs.
pub fn record_of(
    input: &Tuple,
    key_field: &str,
    value_field: &str,
) -> Result<(Option<Bytes>, Bytes), NoValue> {
    let key = match input.get(key_field) {
        Ok(Value::Null) | Err(_) => None,
        Ok(v) => Some(to_bytes(v)),
    };
    let value = to_bytes(input.get(value_field)?);
    Ok((key, value))
}

/// Acks `inputs` if their records are durable (`outcome` is `Ok`); else hands the error to
/// `report`, then fails them.
pub fn settle<E: Display>(
    out: &mut dyn BoltCollector,
    inputs: impl IntoIterator<Item = Tuple>,
    outcome: Result<(), E>,
    report: impl FnOnce(&mut dyn BoltCollector, E),
) {
    match outcome {
        Ok(()) => inputs.into_iter().for_each(|t| out.ack(t)),
        Err(e) => {
            report(out, e);
            inputs.into_iter().for_each(|t| out.fail(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::values;

    #[derive(Default)]
    struct Collector {
        acked: usize,
        failed: usize,
        errors: Vec<String>,
    }

    impl BoltCollector for Collector {
        fn emit_to(
            &mut self,
            _stream: &str,
            _anchors: &[&Tuple],
            _values: squall_api::Values,
            _direct_task: Option<squall_api::TaskId>,
        ) -> Result<(), squall_api::EmitError> {
            Ok(())
        }
        fn ack(&mut self, _input: Tuple) {
            self.acked += 1;
        }
        fn fail(&mut self, _input: Tuple) {
            self.failed += 1;
        }
        fn reset_timeout(&mut self, _input: &Tuple) {}
        fn report_error(&mut self, error: &str) {
            self.errors.push(error.to_string());
        }
    }

    #[test]
    fn record_takes_key_and_value_fields_as_bytes() {
        let input = Tuple::for_test(["key", "value"], values![Value::Null, 7]);
        let (key, value) = record_of(&input, "key", "value").unwrap();
        assert_eq!((key, value), (None, Bytes::from("7")), "null key: none; a number: JSON text");
        let input = Tuple::for_test(["k", "v"], values!["a", "b"]);
        assert_eq!(record_of(&input, "k", "v").unwrap(), (Some(Bytes::from("a")), Bytes::from("b")));
        assert_eq!(record_of(&input, "none", "v").unwrap().0, None, "no key field: no key");
    }

    #[test]
    fn input_without_the_value_field_is_refused_naming_it() {
        let input = Tuple::for_test(["key"], values!["a"]);
        let e = record_of(&input, "key", "body").unwrap_err().to_string();
        assert!(e.starts_with("no value for the record: ") && e.contains("body"), "{e}");
    }

    #[test]
    fn settle_acks_durable_inputs_and_fails_the_others_saying_why() {
        let mut out = Collector::default();
        let inputs = || vec![Tuple::for_test(["v"], values!["x"]); 2];
        settle(&mut out, inputs(), Ok::<(), String>(()), |_, _| unreachable!());
        settle(&mut out, inputs(), Err("lost"), |out, e| out.report_error(&format!("append failed: {e}")));
        assert_eq!((out.acked, out.failed), (2, 2));
        assert_eq!(out.errors, ["append failed: lost"]);
    }
}
