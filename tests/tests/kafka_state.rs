//! Exactly-once state from Kafka: `kafka-spout` → `state-count` with `guarantee =
//! "exactly_once"`, against a real Kafka-protocol broker (Tansu), killed with kill -9 mid-run
//! and started again: every record is counted exactly once (the spout rewinds to the offsets
//! of the last committed checkpoint, not to the group's).

use std::collections::BTreeMap;
use std::time::Duration;

use squall_tests::pipeline;
use squall_tests::tansu::TansuBroker;
use squall_tests::TempDir;

const DEADLINE: Duration = Duration::from_secs(240);
const RECORDS: u64 = 20_000;

fn topology(dir: &TempDir, bootstrap: &str, stop_at_end: bool) -> String {
    let file = dir.topology(
        &format!("counts-{stop_at_end}.toml"),
        &format!(
            r#"
name = "counts"

[settings]
guarantee = "exactly_once"
max_spout_pending = 2000
state = {{ backend = "log", checkpoint_interval_ms = 200 }}

[[spouts]]
id = "records"
kind = "kafka-spout"
parallelism = 2
config = {{ bootstrap = "{bootstrap}", topic = "in", group = "g", stop_at_end = {stop_at_end}, commit_interval_ms = 100 }}

[[bolts]]
id = "count"
kind = "state-count"
parallelism = 2
config = {{ key = "key" }}
inputs = [{{ from = "records", grouping = {{ fields = ["key"] }} }}]
"#
        ),
    );
    file.display().to_string()
}

#[test]
fn exactly_once_state_from_kafka_counts_every_record_once_across_a_kill_9() {
    let dir = TempDir::new("kafka-state");
    let data = dir.join("data").display().to_string();
    let tansu = TansuBroker::start(&dir);
    tansu.create_topic("in", 3);
    tansu.produce_numbered("in", 0..RECORDS);

    // Follows the topic forever, so it is surely killed mid-run.
    let endless = topology(&dir, &tansu.bootstrap(), false);
    let mut first = dir.squall(["local", &endless, "--data-dir", &data]).timeout(DEADLINE).spawn();
    pipeline::wait_for_thousand_acked(&mut first, DEADLINE);
    let killed = first.kill_hard();
    assert!(!killed.status.success(), "the first run was killed\n{killed}");

    let bounded = topology(&dir, &tansu.bootstrap(), true);
    dir.squall(["local", &bounded, "--data-dir", &data]).timeout(DEADLINE).run().assert_success();

    let out = dir.squall(["state", "dump", &bounded, "count", "--json", "--data-dir", &data]).run();
    out.assert_success();
    let counts: BTreeMap<String, u64> = serde_json::from_str(out.stdout.trim()).expect("a JSON object");
    assert_eq!(counts.len() as u64, RECORDS, "every key counted");
    let wrong: Vec<_> = counts.iter().filter(|(_, &n)| n != 1).take(5).collect();
    assert!(wrong.is_empty(), "every record counted exactly once; not: {wrong:?}");
}
