//! LOG-1 (docs/benchmarks.md): broker to broker with acking on, through the embedded log
//! (or through Kafka: [`super::log1_kafka`]).
//!
//! Contract: in a fresh temporary data directory, fills a topic of 3 partitions with M records
//! (key = the record's number as decimal text, value = 100 bytes), then runs log-spout (with
//! `stop_at_end`) → a transform (appends "!" to the value, keeps the key) → log-sink into a
//! second topic of 3 partitions, exactly as `squall local` would, and times it until every
//! record is acked and committed. It then reads the output topic back: `missing` counts input
//! keys absent from it, `duplicates` the records beyond one per key. The directory is removed.
//!
//! What both brokers run alike — the pipeline, its timing, the check and the result line —
//! is [`run`], over a [`Log1Broker`] that creates, fills and reads back the topics.

use std::time::Duration;

use bytes::Bytes;
use squall_api::{
    async_trait, values, BasicBolt, BasicCollector, BoxError, NoConfig, OutputDeclarer, Registry, Tuple,
    Value,
};

use super::TempDir;
use squall_broker::{self as broker, Broker, NewRecord, TopicConfig};
use squall_engine::local::{self, LocalOptions};
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};

/// LOG-1's parameters.
#[derive(Debug, Clone)]
pub struct Log1 {
    pub m: u64,
    pub workers: usize,
    /// Where the records go through: "embedded" or "kafka".
    pub broker: String,
    /// With "kafka": the Kafka cluster to use (else `$KAFKA_BOOTSTRAP`, else a Tansu broker
    /// started for the run).
    pub bootstrap: Option<String>,
}

pub(super) const PARTITIONS: u32 = 3;
pub(super) const VALUE_BYTES: usize = 100;
const INPUT: &str = "log1-in";
const OUTPUT: &str = "log1-out";

/// Runs LOG-1 and returns its line.
pub async fn log1(b: &Log1) -> Result<String, BoxError> {
    super::single_process(b.workers)?;
    match b.broker.as_str() {
        "embedded" => {}
        #[cfg(feature = "kafka")]
        "kafka" => return super::log1_kafka::log1(b).await,
        #[cfg(not(feature = "kafka"))]
        "kafka" => return Err("--broker kafka: this build has no Kafka client (feature `kafka`)".into()),
        other => return Err(format!("--broker {other}: expected embedded or kafka").into()),
    }
    let dir = TempDir::new("log1")?;
    broker::set_data_dir(dir.0.clone());
    if broker::data_dir() != dir.0 {
        return Err("the data directory was already set in this process".into());
    }
    let broker = Broker::connect("embedded").await?;
    run(b, &Embedded(broker)).await
}

/// What LOG-1 needs of a broker: the rest of the run is [`run`]'s.
#[async_trait]
pub(super) trait Log1Broker: Sync {
    /// Creates the input and output topics ([`PARTITIONS`] each) and fills the input with `m`
    /// records keyed 0..m, valued [`value_of`] the key.
    async fn create_and_fill(&self, m: u64) -> Result<(), BoxError>;
    /// Registers the broker's spout and sink kinds.
    fn register(&self, registry: &mut Registry);
    /// The broker's spout (as `records`) and sink (as `sink`), configured.
    fn components(&self) -> (ComponentDef, ComponentDef);
    /// Reads the output topic back into `tally`, every record.
    async fn read_back(&self, tally: &mut Tally) -> Result<(), BoxError>;
}

/// Runs LOG-1 over `broker`: fills the input, runs the pipeline, checks the output and says
/// the result line.
pub(super) async fn run(b: &Log1, broker: &dyn Log1Broker) -> Result<String, BoxError> {
    broker.create_and_fill(b.m).await?;
    let mut registry = Registry::new();
    registry.basic_bolt("log1-transform", |_: NoConfig| Ok(Transform));
    broker.register(&mut registry);
    let (spout, sink) = broker.components();
    let result = local::run(&pipeline(spout, sink), &registry, &LocalOptions::default()).await?;
    let secs = result.elapsed.as_secs_f64();
    let mut tally = Tally::new(b.m);
    broker.read_back(&mut tally).await?;
    let (missing, duplicates) = tally.missing_and_duplicates();
    Ok(format!(
        "squall log1 M={} workers={} seconds={:.3} records_per_s={:.0} missing={} duplicates={}",
        b.m,
        b.workers,
        secs,
        b.m as f64 / secs,
        missing,
        duplicates
    ))
}

/// The output records read back: which keys 0..m were seen, and how many records in all.
pub(super) struct Tally {
    seen: Vec<bool>,
    distinct: u64,
    total: u64,
}

impl Tally {
    fn new(m: u64) -> Tally {
        Tally { seen: vec![false; m as usize], distinct: 0, total: 0 }
    }

    /// Counts one record of `topic`/`partition`; refuses a key outside 0..m, or a value the
    /// transform did not end with "!".
    pub(super) fn count(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        topic: &str,
        partition: i64,
    ) -> Result<(), BoxError> {
        self.total += 1;
        let key = key.and_then(|k| std::str::from_utf8(k).ok());
        match key.and_then(|k| k.parse::<usize>().ok()) {
            Some(i) if i < self.seen.len() => {
                if !std::mem::replace(&mut self.seen[i], true) {
                    self.distinct += 1;
                }
            }
            _ => return Err(format!("unexpected key {key:?} in {topic}/{partition}").into()),
        }
        if !value.ends_with(b"!") {
            return Err(format!("record {key:?} in {topic}/{partition} was not transformed").into());
        }
        Ok(())
    }

    /// (input keys missing from the output, records beyond one per key).
    fn missing_and_duplicates(&self) -> (u64, u64) {
        (self.seen.len() as u64 - self.distinct, self.total - self.distinct)
    }
}

/// The embedded log, in this process.
struct Embedded(Broker);

#[async_trait]
impl Log1Broker for Embedded {
    async fn create_and_fill(&self, m: u64) -> Result<(), BoxError> {
        self.0.create_topic(INPUT, TopicConfig::new(PARTITIONS)).await?;
        self.0.create_topic(OUTPUT, TopicConfig::new(PARTITIONS)).await?;
        fill(&self.0, m).await
    }

    fn register(&self, registry: &mut Registry) {
        registry.spout("log-spout", broker::spout::build).bolt("log-sink", broker::sink::build);
    }

    fn components(&self) -> (ComponentDef, ComponentDef) {
        (
            ComponentDef::new("records", "log-spout").set("topic", INPUT).set("group", "log1"),
            ComponentDef::new("sink", "log-sink").set("topic", OUTPUT),
        )
    }

    async fn read_back(&self, tally: &mut Tally) -> Result<(), BoxError> {
        for p in 0..PARTITIONS {
            let mut offset = 0;
            loop {
                let fetched = self.0.fetch(OUTPUT, p, offset, 4 << 20, Duration::ZERO).await?;
                let Some(last) = fetched.records.last() else { break };
                offset = last.offset + 1;
                for r in &fetched.records {
                    tally.count(r.key.as_deref(), &r.value, OUTPUT, p as i64)?;
                }
            }
        }
        Ok(())
    }
}

/// Appends M records, keyed 0..M, to the input topic.
async fn fill(broker: &Broker, m: u64) -> Result<(), BoxError> {
    let mut batches: Vec<Vec<NewRecord>> = vec![Vec::new(); PARTITIONS as usize];
    let mut pending = Vec::new();
    for i in 0..m {
        let key = i.to_string();
        let p = broker::partitioner::partition_for_key(key.as_bytes(), PARTITIONS);
        let value = value_of(&key);
        batches[p as usize].push(NewRecord {
            key: Some(Bytes::from(key)),
            value: Bytes::from(value),
            timestamp: None,
        });
        if batches[p as usize].len() == 1000 || i + 1 == m {
            for (p, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() {
                    pending.push(broker.produce(INPUT, p as u32, std::mem::take(batch)).await?);
                }
            }
        }
    }
    for p in pending {
        p.wait().await?;
    }
    Ok(())
}

/// Record `key`'s value: VALUE_BYTES bytes.
pub(super) fn value_of(key: &str) -> Vec<u8> {
    let mut value = format!("record {key} ").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    value
}

/// Appends "!" to the record's value; keeps its key.
struct Transform;

#[async_trait]
impl BasicBolt for Transform {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "value"]);
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        let mut value = compact_str::CompactString::from(input.get_str(1)?);
        value.push('!');
        out.emit(values![input.values()[0].clone(), Value::Str(value)])?;
        Ok(())
    }
}

/// LOG-1's topology around a broker's spout and sink (as configured; inputs, outputs and
/// the transform are added here): spout → transform → sink, acking on.
fn pipeline(spout: ComponentDef, sink: ComponentDef) -> TopologyDef {
    TopologyDef {
        name: "log1".into(),
        workers: 1,
        settings: Settings { max_spout_pending: 0, ..Settings::default() },
        spouts: vec![spout.set("stop_at_end", true).emits(["key", "value", "partition", "offset"])],
        bolts: vec![
            ComponentDef::new("transform", "log1-transform")
                .input("records", GroupingDef::Shuffle)
                .emits(["key", "value"]),
            sink.input("transform", GroupingDef::Shuffle),
        ],
    }
}
