//! Crashes of a Kafka pipeline: `kafka-spout` commits as soon as 1,024 records of a partition
//! are done past its committed offset, not only on its timer, so a `squall local` killed with
//! kill -9 mid-stream redoes a bounded number of records however long the commit interval and
//! however large `max_uncommitted`. Against a real Kafka-protocol broker (Tansu, see
//! `squall_tests::tansu`).

use std::time::{Duration, Instant};

use squall_kafka::spout::COMMIT_EVERY;
use squall_tests::pipeline::taken;
use squall_tests::tansu::{missing_and_duplicates, TansuBroker};
use squall_tests::TempDir;

const DEADLINE: Duration = Duration::from_secs(240);
const RECORDS: u64 = 30_000;
/// Tuples in flight per spout task (2 tasks).
const MAX_SPOUT_PENDING: u64 = 1000;
/// What one crash may redo: per partition (3), up to COMMIT_EVERY done records not yet
/// committed and as many in a commit still on its way; plus every tuple in flight.
const REDONE_PER_CRASH: u64 = 3 * 2 * COMMIT_EVERY + 2 * MAX_SPOUT_PENDING;

/// kafka-spout (2 tasks, commit timer of an hour, default max_uncommitted of 50,000) →
/// kafka-sink (2 tasks), group `g`.
fn pipeline(dir: &TempDir, bootstrap: &str, stop_at_end: bool) -> String {
    dir.topology(
        "kafka-crash.toml",
        &format!(
            r#"name = "kafka-crash"

[settings]
acking = true
message_timeout_secs = 60
max_spout_pending = {MAX_SPOUT_PENDING}

[[spouts]]
id = "records"
kind = "kafka-spout"
parallelism = 2
config = {{ bootstrap = "{bootstrap}", topic = "in", group = "g", stop_at_end = {stop_at_end}, commit_interval_ms = 3600000 }}

[[bolts]]
id = "sink"
kind = "kafka-sink"
parallelism = 2
inputs = [{{ from = "records", grouping = "shuffle" }}]
config = {{ bootstrap = "{bootstrap}", topic = "out" }}
"#
        ),
    )
    .display()
    .to_string()
}

fn committed(tansu: &TansuBroker) -> u64 {
    tansu.committed("g", "in").into_iter().map(|c| c.unwrap_or(0).max(0) as u64).sum()
}

#[test]
fn kill_9_of_a_kafka_pipeline_redoes_a_bounded_number_of_records_whatever_the_commit_timer() {
    let dir = TempDir::new("kafka-crash");
    let tansu = TansuBroker::start(&dir);
    tansu.create_topic("in", 3);
    tansu.create_topic("out", 3);
    tansu.produce_numbered("in", 0..RECORDS);

    // The first run follows the topic forever; its commit timer never fires within the test,
    // so every commit it makes is one the cadence made. Killed once a good part is committed.
    let endless = pipeline(&dir, &tansu.bootstrap(), false);
    let mut first = dir.squall(["local", &endless]).timeout(DEADLINE).spawn();
    let until = Instant::now() + DEADLINE;
    while committed(&tansu) < 3 * COMMIT_EVERY {
        assert!(
            Instant::now() < until,
            "nothing committed before the timer\n{}",
            first.stderr_seen().join("\n")
        );
        assert!(!first.has_exited(), "the first run ended by itself");
        std::thread::sleep(Duration::from_millis(200));
    }
    let killed = first.kill_hard();
    assert!(!killed.status.success(), "the first run was killed\n{killed}");
    let resumed_from = committed(&tansu);

    let bounded = pipeline(&dir, &tansu.bootstrap(), true);
    let second = dir.squall(["local", &bounded, "--json"]).timeout(DEADLINE).run();
    second.assert_success();
    assert!(taken(&second) <= RECORDS - resumed_from, "the second run resumed from the commits\n{second}");
    assert_eq!(tansu.committed("g", "in"), tansu.ends("in").into_iter().map(Some).collect::<Vec<_>>());
    let (missing, duplicates) = missing_and_duplicates(&tansu.read_all("out"), RECORDS);
    assert_eq!(missing, 0, "every input key is in the output");
    eprintln!("committed {resumed_from} before the kill; {duplicates} duplicates");
    assert!(
        duplicates <= REDONE_PER_CRASH,
        "{duplicates} duplicates after one crash: more than the {REDONE_PER_CRASH} it may redo"
    );
}
