//! Kafka to Kafka, at least once: `kafka-spout` → bolts → `kafka-sink` against a real
//! Kafka-protocol broker (Tansu, one per test, see `squall_tests::tansu`), run with the real
//! binary as a user would (`squall local`).
//!
//! Pins: with a bolt failing 10% of tuples every input key reaches the output topic and the
//! group's offsets end committed at the end of every partition; a `squall local` killed with
//! kill -9 mid-run and started again resumes from the committed offsets (it takes only the
//! records past them) and loses nothing; a broker killed and restarted mid-run is reconnected
//! to, records produced after the restart are read, and nothing is lost; the README's command
//! runs `config/kafka-pipeline.toml`; `first_poll = "earliest"` reads a topic from its start
//! on every new run but resumes from the committed offsets on a restart within a deployment
//! (the spout opened again in the same process), and `"latest"` starts a new group at the end.
//!
//! The topologies run with max_spout_pending 0: the spout's max_uncommitted bounds what is in
//! flight. No timing is asserted: conditions are polled with generous deadlines.

use std::time::{Duration, Instant};

use squall_api::{EmitError, MessageId, Spout, SpoutCollector, TaskId, TopologyContext, Values};
use squall_kafka::spout::{self, KafkaSpout};
use squall_tests::pipeline::{self, assert_duplicates_bounded, run_despite_failing_tuples, taken};
use squall_tests::tansu::{missing_and_duplicates, TansuBroker};
use squall_tests::{repo_file, Outcome, Running, TempDir};

const DEADLINE: Duration = Duration::from_secs(240);

/// Creates topics `in` and `out` of 3 partitions and fills `in` with records keyed 0..count.
fn setup(tansu: &TansuBroker, count: u64) {
    tansu.create_topic("in", 3);
    tansu.create_topic("out", 3);
    tansu.produce_numbered("in", 0..count);
}

/// kafka-spout (2 tasks) → flaky → kafka-sink (2 tasks), group `g`; ends once `in` is done
/// when `stop_at_end`, else follows it until stopped.
fn flaky_pipeline(dir: &TempDir, bootstrap: &str, max_uncommitted: u64, stop_at_end: bool) -> String {
    let connection = format!(r#"bootstrap = "{bootstrap}""#);
    let extra = ", commit_interval_ms = 200";
    let kafka = pipeline::Broker::new("kafka-flaky", "kafka-pipeline", "kafka", &connection, extra);
    pipeline::flaky_pipeline(dir, &kafka, max_uncommitted, stop_at_end)
}

/// Waits for a progress line of the spout `records` showing at least 1000 records acked
/// ("acked 1.2k").
fn wait_for_thousand_acked(run: &mut Running) {
    pipeline::wait_for_thousand_acked(run, DEADLINE);
}

/// The committed offsets of group `g` on `in`, each as an offset (0 for none).
fn committed(tansu: &TansuBroker) -> Vec<i64> {
    tansu.committed("g", "in").into_iter().map(|c| c.unwrap_or(0).max(0)).collect()
}

/// Polls the output topic until every key 0..count is in it; returns (missing, duplicates) as
/// last seen.
fn wait_for_all_keys(tansu: &TansuBroker, count: u64) -> (u64, u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (missing, duplicates) = missing_and_duplicates(&tansu.read_all("out"), count);
        if missing == 0 || Instant::now() >= deadline {
            return (missing, duplicates);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_record_reaches_the_output_despite_failing_tuples() {
    let dir = TempDir::new("kafka-flaky");
    let tansu = TansuBroker::start(&dir);
    let count = 4000;
    setup(&tansu, count);
    let file = flaky_pipeline(&dir, &tansu.bootstrap(), 500, true);
    let (out, summary) = run_despite_failing_tuples(&dir, &file, &[], count, DEADLINE);
    let sink = summary.component("sink");
    assert_eq!(sink.failed(), 0, "every delivery succeeded\n{out}");
    let records = tansu.read_all("out");
    assert!(records.iter().all(|r| r.value.starts_with(b"value ")), "the values came through");
    let (missing, duplicates) = missing_and_duplicates(&records, count);
    assert_eq!(missing, 0, "every input key is in the output");
    assert_eq!(duplicates, 0, "no crash, no duplicates");
    assert_eq!(committed(&tansu), tansu.ends("in"), "committed to the end of every partition");
}

#[test]
fn killed_run_resumes_from_committed_offsets_without_loss() {
    let dir = TempDir::new("kafka-kill");
    let tansu = TansuBroker::start(&dir);
    let count = 20_000;
    let max_uncommitted = 250;
    setup(&tansu, count);

    // The first run follows the topic forever, so it is surely killed mid-run: once it has
    // acked more than the 3 × 250 records that can be uncommitted, some offsets were committed.
    let endless = flaky_pipeline(&dir, &tansu.bootstrap(), max_uncommitted, false);
    let mut first = dir.squall(["local", &endless]).timeout(DEADLINE).spawn();
    wait_for_thousand_acked(&mut first);
    let killed: Outcome = first.kill_hard();
    assert!(!killed.status.success(), "the first run was killed\n{killed}");

    let resumed_from: i64 = committed(&tansu).iter().sum();
    assert!(resumed_from > 0, "offsets were committed before the kill");

    let bounded = flaky_pipeline(&dir, &tansu.bootstrap(), max_uncommitted, true);
    let second = dir.squall(["local", &bounded, "--json"]).timeout(DEADLINE).run();
    second.assert_success();
    let taken = taken(&second);
    assert!(
        taken <= count - resumed_from as u64,
        "the second run took {taken} records: only those past the {resumed_from} committed\n{second}"
    );
    assert_eq!(committed(&tansu), tansu.ends("in"), "committed to the end of every partition");
    let (missing, duplicates) = missing_and_duplicates(&tansu.read_all("out"), count);
    assert_eq!(missing, 0, "every input key is in the output");
    assert_duplicates_bounded(duplicates, max_uncommitted);
}

#[test]
fn broker_restart_mid_run_is_survived_without_loss() {
    let dir = TempDir::new("kafka-restart");
    let mut tansu = TansuBroker::start(&dir);
    // Most records before the restart, so that some are surely in flight when it comes.
    let (before, count) = (15_000, 20_000);
    setup(&tansu, before);
    let file = flaky_pipeline(&dir, &tansu.bootstrap(), 500, false);
    let mut run = dir.squall(["local", &file]).timeout(DEADLINE * 2).spawn();
    wait_for_thousand_acked(&mut run);

    // A crash of the broker mid-run: same port, same data, back after a moment.
    tansu.restart();
    // Records produced after the restart reach the output only if the spout reconnected.
    tansu.produce_numbered("in", before..count);
    let (missing, _) = wait_for_all_keys(&tansu, count);
    assert!(!run.has_exited(), "the run kept going through the restart");
    run.interrupt();
    let stopped = run.wait_for_exit(DEADLINE);
    stopped.assert_success();
    assert_eq!(missing, 0, "every input key is in the output\n{stopped}");
}

#[test]
fn readme_kafka_pipeline_command_works() {
    let dir = TempDir::new("kafka-readme");
    let tansu = TansuBroker::start(&dir);
    setup(&tansu, 1000);
    let file = repo_file("config/kafka-pipeline.toml").display().to_string();
    dir.squall(["local", &file])
        .env("KAFKA_BOOTSTRAP", tansu.bootstrap())
        .env("STOP_AT_END", "true")
        .timeout(DEADLINE)
        .run()
        .assert_success();

    let records = tansu.read_all("out");
    assert!(records.iter().all(|r| r.value.ends_with(b"!")), "each value was exclaimed");
    assert_eq!(missing_and_duplicates(&records, 1000), (0, 0));
    assert_eq!(
        tansu.committed("kafka-pipeline", "in").into_iter().map(|c| c.unwrap_or(0)).collect::<Vec<_>>(),
        tansu.ends("in"),
        "committed to the end"
    );
}

/// A pipeline that reads `in` from the start (`first_poll = "earliest"`) to its end.
fn earliest_pipeline(dir: &TempDir, bootstrap: &str, first_poll: &str) -> String {
    dir.topology(
        "earliest.toml",
        &format!(
            r#"
name = "kafka-first-poll"

[settings]
max_spout_pending = 0

[[spouts]]
id = "records"
kind = "kafka-spout"
config = {{ bootstrap = "{bootstrap}", topic = "in", group = "g", first_poll = "{first_poll}", stop_at_end = true }}

[[bolts]]
id = "sink"
kind = "kafka-sink"
inputs = [{{ from = "records", grouping = "shuffle" }}]
config = {{ bootstrap = "{bootstrap}", topic = "out" }}
"#
        ),
    )
    .display()
    .to_string()
}

#[test]
fn first_poll_earliest_rereads_on_each_run_and_latest_starts_at_the_end() {
    let dir = TempDir::new("kafka-first-poll");
    let tansu = TansuBroker::start(&dir);
    setup(&tansu, 300);
    let earliest = earliest_pipeline(&dir, &tansu.bootstrap(), "earliest");
    for run in 1..=2 {
        let out = dir.squall(["local", &earliest, "--json"]).timeout(DEADLINE).run();
        out.assert_success();
        let emitted = out.summary().component("records").emitted();
        assert_eq!(emitted, 300, "run {run}: a new run reads from the start, commits or not\n{out}");
    }
    assert_eq!(committed(&tansu), tansu.ends("in"), "each run committed to the end");

    tansu.produce_numbered("in", 300..400);
    let resume = earliest_pipeline(&dir, &tansu.bootstrap(), "committed_else_earliest");
    let out = dir.squall(["local", &resume, "--json"]).timeout(DEADLINE).run();
    out.assert_success();
    assert_eq!(out.summary().component("records").emitted(), 100, "only what was not committed\n{out}");

    let latest =
        earliest_pipeline(&dir, &tansu.bootstrap(), "latest").replace("group = \"g\"", "group = \"new\"");
    let file = dir.write("latest.toml", &std::fs::read_to_string(latest).unwrap());
    let out = dir.squall(["local", &file.display().to_string(), "--json"]).timeout(DEADLINE).run();
    out.assert_success();
    assert_eq!(out.summary().component("records").emitted(), 0, "a new group at the end\n{out}");
    assert_eq!(missing_and_duplicates(&tansu.read_all("out"), 400), (0, 300), "400 once, 300 again");
}

/// Records what a spout emits; every emit is accepted.
#[derive(Default)]
struct Collected {
    ids: Vec<MessageId>,
    errors: Vec<String>,
}

impl SpoutCollector for Collected {
    fn emit_to(
        &mut self,
        _stream: &str,
        _values: Values,
        msg_id: Option<MessageId>,
        _direct_task: Option<TaskId>,
    ) -> Result<(), EmitError> {
        self.ids.extend(msg_id);
        Ok(())
    }

    fn report_error(&mut self, error: &str) {
        self.errors.push(error.to_string());
    }
}

/// Opens a kafka-spout on `in`, acks everything it emits until it is finished, closes it, and
/// returns how many records it emitted.
async fn drain_in_process(bootstrap: &str) -> usize {
    let config = format!(
        r#"bootstrap = "{bootstrap}"
topic = "in"
group = "in-process"
first_poll = "earliest"
stop_at_end = true"#
    );
    let config: spout::Config = toml::from_str(&config).unwrap();
    let mut spout: KafkaSpout = spout::build(config).unwrap();
    spout.open(&TopologyContext::for_test("records")).await.unwrap();
    let mut out = Collected::default();
    let deadline = Instant::now() + DEADLINE;
    let mut acked = 0;
    while !spout.is_finished() {
        assert!(Instant::now() < deadline, "the spout never finished: {:?}", out.errors);
        spout.next_tuple(&mut out).await.unwrap();
        for id in out.ids[acked..].iter().cloned() {
            spout.ack(id).await;
        }
        acked = out.ids.len();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    spout.close().await;
    out.ids.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_poll_earliest_resumes_on_a_restart_in_the_same_deployment() {
    let dir = TempDir::new("kafka-restart-earliest");
    let tansu = TansuBroker::start(&dir);
    setup(&tansu, 200);
    assert_eq!(drain_in_process(&tansu.bootstrap()).await, 200, "the first start reads from the start");
    tansu.produce_numbered("in", 200..250);
    // The same process is the same deployment: the spout finds its own commits and resumes.
    assert_eq!(drain_in_process(&tansu.bootstrap()).await, 50, "a restart resumes from the commits");
}
