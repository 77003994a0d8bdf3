//! log-spout and log-sink against the embedded log, in process: a retrying record never
//! stalls its partition, a record failing past the retry limit is given up and the rest go
//! on, a group resumes from its committed offsets, and the sink acks an input only once its
//! record is durable.
//!
//! Every test uses its own topics in one data directory (the embedded log is per process).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use squall_api::{
    async_trait, values, Bolt, BoltCollector, BoxError, EmitError, Fields, OutputDeclarer, Registry, TaskId,
    Tuple, Value, Values,
};
use squall_broker::{self as broker, Broker, FsyncPolicy, NewRecord, TopicConfig};
use squall_engine::local::{self, LocalOptions, RunResult};
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};

/// The embedded log of this test process, in a fresh directory.
async fn broker() -> Broker {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("squall-log-spout-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        broker::set_data_dir(dir.clone());
        dir
    });
    assert_eq!(&broker::data_dir(), dir);
    Broker::connect("embedded").await.unwrap()
}

/// Creates `input` (filled with `count` records keyed 0..count) and an empty `output`.
async fn topics(input: &str, output: &str, partitions: u32, count: u64) -> Broker {
    let broker = broker().await;
    broker.create_topic(input, TopicConfig::new(partitions)).await.unwrap();
    broker.create_topic(output, TopicConfig::new(partitions)).await.unwrap();
    produce(&broker, input, 0..count).await;
    broker
}

async fn produce(broker: &Broker, topic: &str, keys: std::ops::Range<u64>) {
    let partitions = broker.describe(topic).await.unwrap().partitions.len() as u32;
    let mut batches = vec![Vec::new(); partitions as usize];
    for key in keys {
        let key = key.to_string();
        let p = broker::partitioner::partition_for_key(key.as_bytes(), partitions);
        let value = Bytes::from(format!("value of {key}"));
        batches[p as usize].push(NewRecord { key: Some(Bytes::from(key)), value, timestamp: None });
    }
    for (p, batch) in batches.into_iter().enumerate() {
        broker.produce(topic, p as u32, batch).await.unwrap().wait().await.unwrap();
    }
}

/// How many records each key has in `topic`.
async fn keys_in(broker: &Broker, topic: &str) -> HashMap<u64, u32> {
    let mut keys = HashMap::new();
    for p in broker.describe(topic).await.unwrap().partitions {
        let mut offset = p.log_start;
        while offset < p.high_watermark {
            let fetched = broker.fetch(topic, p.partition, offset, 1 << 20, Duration::ZERO).await.unwrap();
            for r in &fetched.records {
                let key = std::str::from_utf8(r.key.as_deref().unwrap()).unwrap().parse().unwrap();
                *keys.entry(key).or_default() += 1;
                offset = r.offset + 1;
            }
        }
    }
    keys
}

/// Fails the inputs whose key it was told to, as many times as it was told; passes the rest.
struct Picky {
    failures_left: Arc<Mutex<HashMap<String, u32>>>,
}

#[async_trait]
impl Bolt for Picky {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "value"]);
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        let key = input.get_str("key")?.to_string();
        let fail = match self.failures_left.lock().unwrap().get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if fail {
            out.fail(input);
        } else {
            out.emit(&input, values![key, input.get_str("value")?.to_string()])?;
            out.ack(input);
        }
        Ok(())
    }
}

/// log-spout (`spout` config) → picky (failing keys as told) → log-sink into `output`.
async fn run(spout_config: toml::Table, output: &str, failures: &[(&str, u32)]) -> RunResult {
    let failures_left: HashMap<String, u32> = failures.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    let failures_left = Arc::new(Mutex::new(failures_left));
    let mut registry = Registry::new();
    registry
        .spout("log-spout", broker::spout::build)
        .bolt("picky", move |_: squall_api::NoConfig| Ok(Picky { failures_left: failures_left.clone() }))
        .bolt("log-sink", broker::sink::build);
    let mut spout = ComponentDef::new("records", "log-spout").emits(["key", "value", "partition", "offset"]);
    spout.config = spout_config;
    let def = TopologyDef {
        name: "log-spout-test".into(),
        workers: 1,
        settings: Settings { max_spout_pending: 0, ..Settings::default() },
        spouts: vec![spout],
        bolts: vec![
            ComponentDef::new("picky", "picky")
                .input("records", GroupingDef::Shuffle)
                .emits(["key", "value"]),
            ComponentDef::new("sink", "log-sink").set("topic", output).input("picky", GroupingDef::Shuffle),
        ],
    };
    let opts =
        LocalOptions { duration: Some(Duration::from_secs(120)), progress: false, ..Default::default() };
    let result = local::run(&def, &registry, &opts).await.unwrap();
    assert!(!result.stopped, "the run ended by itself, not after 120 s");
    result
}

fn spout_config(topic: &str, extra: &[(&str, toml::Value)]) -> toml::Table {
    let mut config = toml::Table::new();
    config.insert("topic".into(), topic.into());
    config.insert("group".into(), "g".into());
    config.insert("stop_at_end".into(), true.into());
    for (k, v) in extra {
        config.insert(k.to_string(), v.clone());
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_record_does_not_stall_its_partition() {
    let broker = topics("stall-in", "stall-out", 1, 300).await;
    let spout = spout_config(
        "stall-in",
        &[("max_uncommitted", 10.into()), ("retry_backoff_ms", 1.into()), ("retry_backoff_max_ms", 5.into())],
    );
    let result = run(spout, "stall-out", &[("5", 20)]).await;
    let records = &result.snapshot.components["records"];
    assert_eq!(records.failed, 20, "record 5 failed 20 times");
    assert_eq!(records.acked, 300);
    let keys = keys_in(&broker, "stall-out").await;
    assert_eq!(keys.len(), 300, "every record got through, 5 too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_failing_past_the_retry_limit_is_given_up() {
    let broker = topics("limit-in", "limit-out", 2, 100).await;
    let spout = spout_config("limit-in", &[("retry_limit", 3.into()), ("retry_backoff_ms", 1.into())]);
    let result = run(spout, "limit-out", &[("7", u32::MAX)]).await;
    let records = &result.snapshot.components["records"];
    assert_eq!(records.failed, 3, "tried 3 times, then given up");
    assert!(records.errors >= 1, "giving up is reported");
    let keys = keys_in(&broker, "limit-out").await;
    assert_eq!(keys.len(), 99);
    assert!(!keys.contains_key(&7));
    let committed = broker.committed("g", "limit-in").await.unwrap();
    let ends: Vec<_> = broker
        .describe("limit-in")
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| Some(p.high_watermark))
        .collect();
    assert_eq!(committed, ends, "the group moved past the given-up record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_resumes_from_its_committed_offsets() {
    let broker = topics("resume-in", "resume-out", 3, 100).await;
    let first = run(spout_config("resume-in", &[]), "resume-out", &[]).await;
    assert_eq!(first.snapshot.components["records"].emitted, 100);
    produce(&broker, "resume-in", 100..150).await;
    let second = run(spout_config("resume-in", &[]), "resume-out", &[]).await;
    assert_eq!(second.snapshot.components["records"].emitted, 50, "only the new records");
    let keys = keys_in(&broker, "resume-out").await;
    assert_eq!(keys.len(), 150);
    assert!(keys.values().all(|n| *n == 1), "no record twice");
}

/// Records what a bolt acks and fails.
#[derive(Default)]
struct Collected {
    acked: Vec<Tuple>,
    failed: Vec<Tuple>,
    errors: Vec<String>,
}

impl BoltCollector for Collected {
    fn emit_to(&mut self, _: &str, _: &[&Tuple], _: Values, _: Option<TaskId>) -> Result<(), EmitError> {
        Ok(())
    }
    fn ack(&mut self, input: Tuple) {
        self.acked.push(input);
    }
    fn fail(&mut self, input: Tuple) {
        self.failed.push(input);
    }
    fn reset_timeout(&mut self, _: &Tuple) {}
    fn report_error(&mut self, error: &str) {
        self.errors.push(error.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_acks_an_input_only_once_its_record_is_durable() {
    let broker = broker().await;
    let mut config = TopicConfig::new(1);
    config.fsync = FsyncPolicy::Interval { ms: 3_600_000 };
    broker.create_topic("durable-out", config).await.unwrap();
    let mut sink = broker::sink::build(toml::from_str(r#"topic = "durable-out""#).unwrap()).unwrap();
    sink.prepare(&squall_api::TopologyContext::for_test("sink")).await.unwrap();
    let mut out = Collected::default();
    let input = Tuple::for_test(["key", "value"], values!["k", "v"]);
    sink.execute(input, &mut out).await.unwrap();
    let Broker::Embedded(log) = &broker else { unreachable!() };
    // Ticks append the partial batch: the record is written, but not fsynced for an hour.
    for _ in 0..3 {
        sink.execute(tick_input(), &mut out).await.unwrap();
    }
    assert_eq!(log.describe("durable-out").unwrap().partitions[0].high_watermark, 1, "appended");
    assert!(out.acked.is_empty(), "not acked before it is durable");
    log.flush().unwrap();
    sink.execute(tick_input(), &mut out).await.unwrap();
    assert_eq!(out.acked.len(), 1, "acked once durable");
    assert!(out.failed.is_empty() && out.errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_fails_a_record_over_the_limit_alone() {
    let broker = broker().await;
    let mut config = TopicConfig::new(1);
    config.fsync = FsyncPolicy::Never;
    broker.create_topic("big-out", config).await.unwrap();
    let mut sink = broker::sink::build(toml::from_str(r#"topic = "big-out""#).unwrap()).unwrap();
    sink.prepare(&squall_api::TopologyContext::for_test("sink")).await.unwrap();
    let mut out = Collected::default();
    let huge = Value::Bytes(vec![b'x'; 65 << 20]);
    sink.execute(Tuple::for_test(["key", "value"], values!["small-1", "v"]), &mut out).await.unwrap();
    sink.execute(Tuple::for_test(["key", "value"], values!["huge", huge]), &mut out).await.unwrap();
    sink.execute(Tuple::for_test(["key", "value"], values!["small-2", "v"]), &mut out).await.unwrap();
    sink.execute(tick_input(), &mut out).await.unwrap();
    assert_eq!(out.failed.len(), 1, "only the huge record failed");
    assert_eq!(out.failed[0].get_str("key").unwrap(), "huge");
    assert!(out.errors[0].contains("over the"), "{:?}", out.errors);
    assert_eq!(out.acked.len(), 2, "the others were appended and acked");
}

/// A tick tuple, as the runtime makes them.
fn tick_input() -> Tuple {
    let meta = squall_api::StreamMeta::intern(
        squall_api::SYSTEM_COMPONENT,
        squall_api::TICK_STREAM,
        &Fields::empty(),
    );
    Tuple::new(meta, TaskId::MAX, Values::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_behind_retention_resumes_at_the_log_start_and_says_so() {
    let broker = broker().await;
    let mut config = TopicConfig::new(1);
    config.segment_bytes = 2_000;
    config.retention_bytes = Some(4_000);
    broker.create_topic("retained-in", config).await.unwrap();
    broker.create_topic("retained-out", TopicConfig::new(1)).await.unwrap();
    broker.commit("behind", "retained-in", 0, 0).await.unwrap();
    produce(&broker, "retained-in", 0..50).await;
    produce(&broker, "retained-in", 50..100).await;
    let Broker::Embedded(log) = &broker else { unreachable!("the test broker is embedded") };
    log.apply_retention(0);
    let log_start = broker.describe("retained-in").await.unwrap().partitions[0].log_start;
    assert!(log_start > 0, "retention removed the oldest segments");

    let mut spout = spout_config("retained-in", &[]);
    spout.insert("group".into(), "behind".into());
    let result = run(spout, "retained-out", &[]).await;
    let records = &result.snapshot.components["records"];
    assert_eq!(records.emitted, 100 - log_start, "from the log start on");
    assert!(records.errors >= 1, "the skipped records are reported");
    assert_eq!(broker.committed("behind", "retained-in").await.unwrap(), vec![Some(100)]);
}
