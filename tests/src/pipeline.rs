//! The scenarios the broker-to-broker pipeline tests share — `tests/log_pipeline.rs` through
//! the embedded log, `tests/kafka_pipeline.rs` through Kafka — parameterised by the broker.
//!
//! Contract: a test file says what is its broker's in a [`Broker`] (the spout's and sink's
//! kind and their connection keys) and reads its output topic itself; the rest is here:
//! [`flaky_pipeline`] writes the topology every scenario runs (spout, 2 tasks, on `in` with
//! group `g` → a bolt failing 10% of tuples → sink, 2 tasks, into `out`);
//! [`run_despite_failing_tuples`] runs it to the end and asserts each record was acked once
//! although tuples failed; [`wait_for_thousand_acked`] watches a run until it acked more
//! records than can be uncommitted; [`taken`] counts the records a run took;
//! [`assert_duplicates_bounded`] bounds the duplicates a crash may leave;
//! [`missing_and_duplicates`] counts the keys of the output; [`read_all`] reads a topic of
//! the embedded log. Every helper panics, with the reason, on failure.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use squall_broker::log::Log;
use squall_broker::Record;

use crate::{Outcome, Running, Summary, TempDir};

/// What a pipeline test's broker puts in the topology.
pub struct Broker<'a> {
    /// The topology's name, and its file's name (`<file>.toml`) in the test's directory.
    pub name: &'a str,
    pub file: &'a str,
    pub spout_kind: String,
    /// More of the spout's config, as inline-table entries (`broker = "embedded"`).
    pub spout_config: String,
    pub sink_kind: String,
    /// More of the sink's config, as inline-table entries.
    pub sink_config: String,
}

impl<'a> Broker<'a> {
    /// A topology `name` in `<file>.toml` over `<components>-spout` and `<components>-sink`,
    /// each configured with `connection` (inline-table entries) too, and the spout with
    /// `spout_extra` entries.
    pub fn new(name: &'a str, file: &'a str, components: &str, connection: &str, spout_extra: &str) -> Self {
        Broker {
            name,
            file,
            spout_kind: format!("{components}-spout"),
            spout_config: format!("{connection}{spout_extra}"),
            sink_kind: format!("{components}-sink"),
            sink_config: connection.to_string(),
        }
    }
}

/// Writes the flaky pipeline over `broker` (see the module docs) and returns its path: the
/// spout retries after 10 ms, keeps at most `max_uncommitted` records per partition past the
/// committed offset, and ends once `in` is done when `stop_at_end`, else follows it until
/// stopped.
pub fn flaky_pipeline(dir: &TempDir, broker: &Broker<'_>, max_uncommitted: u64, stop_at_end: bool) -> String {
    let Broker { name, file, spout_kind, spout_config, sink_kind, sink_config } = broker;
    dir.topology(
        &format!("{file}.toml"),
        &format!(
            r#"
name = "{name}"

[settings]
acking = true
message_timeout_secs = 60
max_spout_pending = 0

[[spouts]]
id = "records"
kind = "{spout_kind}"
parallelism = 2                  # 3 partitions over 2 tasks
config = {{ {spout_config}, topic = "in", group = "g", stop_at_end = {stop_at_end}, max_uncommitted = {max_uncommitted}, retry_backoff_ms = 10 }}

[[bolts]]
id = "flaky"
kind = "flaky"
inputs = [{{ from = "records", grouping = "shuffle" }}]
config = {{ fail_fraction = 0.1, seed = 7 }}

[[bolts]]
id = "sink"
kind = "{sink_kind}"
parallelism = 2
inputs = [{{ from = "flaky", grouping = "shuffle" }}]
config = {{ {sink_config}, topic = "out" }}
"#
        ),
    )
    .display()
    .to_string()
}

/// Runs `squall local FILE --json ARGS…` to its end and asserts that the flaky bolt failed
/// some tuples and yet each of the `count` records was acked once; returns the run and its
/// summary for the broker's own checks.
#[track_caller]
pub fn run_despite_failing_tuples(
    dir: &TempDir,
    file: &str,
    args: &[&str],
    count: u64,
    deadline: Duration,
) -> (Outcome, Summary) {
    let out = dir.squall(["local", file, "--json"].iter().chain(args)).timeout(deadline).run();
    out.assert_success();
    let summary = out.summary();
    let spout = summary.component("records");
    assert!(spout.failed() > 0, "the flaky bolt failed some tuples\n{out}");
    assert_eq!(spout.acked(), count, "each record acked once\n{out}");
    (out, summary)
}

/// Whether a progress line shows the spout `records` with at least 1000 records acked
/// ("acked 1.2k").
pub fn acked_thousands(line: &str) -> bool {
    line.split("records: ")
        .nth(1)
        .and_then(|rest| rest.split("acked ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .is_some_and(|n| n.ends_with('k') || n.ends_with('M'))
}

/// Waits up to `deadline` for a progress line showing at least 1000 records acked: more than
/// the 3 × 250 that can be out past the committed offsets, so some offsets were committed.
#[track_caller]
pub fn wait_for_thousand_acked(run: &mut Running, deadline: Duration) {
    if run.wait_for_stderr_line(deadline, acked_thousands).is_none() {
        panic!("the run never acked 1000 records\n{}", run.stderr_seen().join("\n"));
    }
}

/// The records a run took: each was emitted once, plus once per failure.
pub fn taken(run: &Outcome) -> u64 {
    let records = run.summary().component("records");
    records.emitted() - records.failed()
}

/// A crash leaves at most the uncommitted records of the 3 partitions duplicated.
#[track_caller]
pub fn assert_duplicates_bounded(duplicates: u64, max_uncommitted: u64) {
    assert!(
        duplicates <= 3 * max_uncommitted,
        "{duplicates} duplicates: more than the {} uncommitted records there can be",
        3 * max_uncommitted
    );
}

/// (keys 0..count missing from the records' `keys`, records beyond one per key); keys are
/// decimal text.
#[track_caller]
pub fn missing_and_duplicates<'a>(
    keys: impl IntoIterator<Item = Option<&'a [u8]>>,
    count: u64,
) -> (u64, u64) {
    let mut seen = HashMap::<u64, u64>::new();
    for key in keys {
        let key = key.expect("a keyed record");
        let key: u64 = std::str::from_utf8(key).ok().and_then(|k| k.parse().ok()).expect("a numeric key");
        *seen.entry(key).or_default() += 1;
    }
    let missing = (0..count).filter(|k| !seen.contains_key(k)).count() as u64;
    let duplicates = seen.values().map(|n| n - 1).sum();
    (missing, duplicates)
}

/// Every record of every partition of `topic` of the embedded log in `data`, read with the
/// log opened in this process (no `squall` may be running on the directory).
pub fn read_all(data: &Path, topic: &str) -> Vec<Vec<Record>> {
    let log = Log::open(data).unwrap_or_else(|e| panic!("cannot open {}: {e}", data.display()));
    let info = log.describe(topic).unwrap();
    info.partitions
        .iter()
        .map(|p| {
            let mut records = Vec::new();
            let mut offset = p.log_start;
            while offset < p.high_watermark {
                let fetched = log.read(topic, p.partition, offset, 1 << 20).unwrap();
                let last = fetched.records.last().expect("records below the high watermark").offset;
                records.extend(fetched.records);
                offset = last + 1;
            }
            records
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_thousands_reads_the_spouts_progress() {
        assert!(acked_thousands("progress: records: emitted 2k, acked 1.2k, failed 3"));
        assert!(acked_thousands("records: acked 2M, failed 0"));
        assert!(!acked_thousands("records: acked 999, failed 0"));
        assert!(!acked_thousands("sink: acked 5k, failed 0"));
    }

    #[test]
    fn keys_are_counted_missing_and_duplicated() {
        let keys: [&[u8]; 4] = [b"0", b"2", b"2", b"2"];
        assert_eq!(missing_and_duplicates(keys.map(Some), 3), (1, 2));
    }
}
