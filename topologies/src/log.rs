//! `log` (basic bolt, no config): prints each input to stderr, one line per tuple, and
//! declares no outputs.
//!
//! Contract: the line names where the tuple came from and lists its fields,
//! `split[2]: word="cow" count=4` (with `/stream` after the task when the stream is not
//! `default`); strings are quoted, other values printed plainly. Each line reaches stderr in
//! one write, so lines from several tasks do not interleave. Stdout is never used: it is
//! reserved for machine-readable output. Tick tuples are printed like any other.

use std::fmt::Write as _;
use std::io::Write as _;

use squall_api::{async_trait, BasicBolt, BasicCollector, BoxError, Tuple, Value, DEFAULT_STREAM};

#[derive(Default)]
pub struct Log {
    /// The line being printed, reused from one input to the next.
    line: String,
}

/// Writes `input` as one line (with its newline) into `line`.
fn format_line(input: &Tuple, line: &mut String) {
    let _ = write!(line, "{}[{}]", input.source_component(), input.source_task());
    if input.stream() != DEFAULT_STREAM {
        let _ = write!(line, "/{}", input.stream());
    }
    line.push(':');
    for (name, value) in input.fields().iter().zip(input.values()) {
        let _ = match value {
            Value::Str(s) => write!(line, " {name}={:?}", s.as_str()),
            other => write!(line, " {name}={other}"),
        };
    }
    line.push('\n');
}

#[async_trait]
impl BasicBolt for Log {
    async fn execute(&mut self, input: &Tuple, _out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        self.line.clear();
        format_line(input, &mut self.line);
        // Logging is best effort: a closed stderr must not fail the tuple.
        let _ = std::io::stderr().lock().write_all(self.line.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{basic_bolt, build_error, run_basic, FakeBoltCollector};
    use squall_api::{values, Fields, StreamMeta};

    #[test]
    fn log_line_names_source_and_fields() {
        let mut line = String::new();
        let tuple = Tuple::for_test(["word", "count", "ok"], values!["the cow", 4, true]);
        format_line(&tuple, &mut line);
        assert_eq!(line, "test[0]: word=\"the cow\" count=4 ok=true\n");
    }

    #[test]
    fn log_line_shows_a_named_stream() {
        let meta = StreamMeta::intern("split", "errors", &Fields::from(["reason"]));
        let mut line = String::new();
        format_line(&Tuple::new(meta, 2, values![1.5]), &mut line);
        assert_eq!(line, "split[2]/errors: reason=1.5\n");
    }

    #[tokio::test]
    async fn log_acks_and_emits_nothing() {
        let mut bolt = basic_bolt("log", "");
        let mut out = FakeBoltCollector::default();
        let tuple = Tuple::for_test(["word"], values!["moon"]);
        run_basic(bolt.as_mut(), &mut out, tuple).await.unwrap();
        assert!(out.emits.is_empty());
        assert_eq!(out.acked.len(), 1);
    }

    #[test]
    fn log_takes_no_config() {
        let e = build_error("log", "level = \"info\"");
        assert!(e.contains("unknown field `level`"), "{e}");
    }
}
