//! `log-sink`: appends every input tuple to a topic of the embedded log (in this process, or
//! through a `squall broker` server) as one record.
//!
//! Config: `topic` (required); `broker` (`"embedded"`, the default, or a server's
//! `host:port`); `key_field` (default `"key"`) and `value_field` (default `"value"`): the input
//! fields the record's key and value come from; `batch` (records per append, default 256);
//! `linger_ms` (how often partial batches are appended and durable ones acked, default 5). A
//! batch is also appended once it holds 1 MiB.
//!
//! A record's key is its input's `key_field` (no key if the input has no such field, or it is
//! null) and its value the `value_field`: strings as their UTF-8 bytes, bytes as they are, any
//! other value as its JSON text. A keyed record goes to the partition its key hashes to (as
//! with `squall topic produce`); unkeyed records go round-robin.
//!
//! Contract: an input is acked only once its record is durable under the topic's fsync policy;
//! if the append fails, its inputs are failed (so their spouts replay them). An input without
//! the value field fails with an error that names the field; an input whose record would be
//! over the log's record limit (64 MiB) fails alone.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;
use squall_api::{async_trait, Bolt, BoltCollector, BoxError, TopologyContext, Tuple};
use squall_engine::partitioned::config::ConfigError;
use squall_engine::partitioned::sink::{defaults, record_of, settle};

use super::partitioner::Partitioner;
use super::record::{frame_len, MAX_FRAME_LEN};
use super::spout::embedded;
use super::{Broker, NewRecord, Pending};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub topic: String,
    #[serde(default = "embedded")]
    pub broker: String,
    #[serde(default = "defaults::key_field")]
    pub key_field: String,
    #[serde(default = "defaults::value_field")]
    pub value_field: String,
    #[serde(default = "default_batch")]
    pub batch: usize,
    #[serde(default = "defaults::linger_ms")]
    pub linger_ms: u64,
}

fn default_batch() -> usize {
    256
}

/// A batch is appended before it would grow past this many bytes (far below any request limit).
const BATCH_BYTES: usize = 1 << 20;

/// The `log-sink` factory.
pub fn build(config: Config) -> Result<LogSink, BoxError> {
    if config.topic.is_empty() {
        return Err(ConfigError::empty("topic").into());
    }
    if config.batch == 0 {
        return Err(ConfigError::too_small("batch", 1).into());
    }
    if config.linger_ms == 0 {
        return Err(ConfigError::too_small("linger_ms", 1).into());
    }
    Ok(LogSink { config, open: None })
}

pub struct LogSink {
    config: Config,
    open: Option<Open>,
}

struct Open {
    broker: Broker,
    partitions: u32,
    /// Per partition: records not yet appended, and their inputs.
    batches: Vec<Batch>,
    /// Appends on their way to durability, with the inputs to ack then.
    in_flight: VecDeque<(Pending, Vec<Tuple>)>,
    partitioner: Partitioner,
}

#[async_trait]
impl Bolt for LogSink {
    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.config.linger_ms))
    }

    async fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), BoxError> {
        let broker = Broker::connect(&self.config.broker).await?;
        let partitions = broker.describe(&self.config.topic).await?.partitions.len() as u32;
        if partitions == 0 {
            return Err(format!("topic `{}` has no partitions", self.config.topic).into());
        }
        let batches = (0..partitions).map(|_| Batch::default()).collect();
        let partitioner = Partitioner::new();
        self.open = Some(Open { broker, partitions, batches, in_flight: VecDeque::new(), partitioner });
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        let Some(open) = self.open.as_mut() else { return Err("log-sink is not prepared".into()) };
        if input.is_tick() {
            open.append_all(&self.config.topic, out).await;
            open.ack_durable(out);
            return Ok(());
        }
        let (key, value) = record_of(&input, &self.config.key_field, &self.config.value_field)?;
        let bytes = frame_len(key.as_deref(), &value);
        if bytes > MAX_FRAME_LEN {
            // It can never be appended: fail it alone (its spout decides when to give up).
            out.report_error(&format!("a record of {bytes} bytes is over the {MAX_FRAME_LEN}-byte limit"));
            out.fail(input);
            return Ok(());
        }
        let partition = open.partitioner.partition(key.as_deref(), open.partitions) as usize;
        if open.batches[partition].bytes + bytes > BATCH_BYTES {
            open.append(&self.config.topic, partition, out).await;
        }
        let batch = &mut open.batches[partition];
        batch.records.push(NewRecord { key, value, timestamp: None });
        batch.inputs.push(input);
        batch.bytes += bytes;
        if batch.records.len() >= self.config.batch {
            open.append(&self.config.topic, partition, out).await;
            open.ack_durable(out);
        }
        Ok(())
    }
}

/// One partition's records waiting to be appended.
#[derive(Default)]
struct Batch {
    records: Vec<NewRecord>,
    inputs: Vec<Tuple>,
    /// Their size as frames.
    bytes: usize,
}

impl Open {
    /// Appends one partition's batch; its inputs are acked once it is durable.
    async fn append(&mut self, topic: &str, partition: usize, out: &mut dyn BoltCollector) {
        let batch = &mut self.batches[partition];
        if batch.records.is_empty() {
            return;
        }
        let records = std::mem::take(&mut batch.records);
        let inputs = std::mem::take(&mut batch.inputs);
        batch.bytes = 0;
        match self.broker.produce(topic, partition as u32, records).await {
            Ok(pending) => self.in_flight.push_back((pending, inputs)),
            Err(e) => settle(out, inputs, Err(e), |out, e| {
                out.report_error(&format!("append to `{topic}`/{partition} failed: {e}"));
            }),
        }
    }

    async fn append_all(&mut self, topic: &str, out: &mut dyn BoltCollector) {
        for partition in 0..self.batches.len() {
            self.append(topic, partition, out).await;
        }
    }

    /// Acks the inputs of every append that is durable by now (fails those of failed ones).
    fn ack_durable(&mut self, out: &mut dyn BoltCollector) {
        let mut i = 0;
        while i < self.in_flight.len() {
            match self.in_flight[i].0.try_done() {
                None => i += 1,
                Some(result) => {
                    let Some((_, inputs)) = self.in_flight.remove(i) else { break };
                    settle(out, inputs, result.map(drop), |out, e| {
                        out.report_error(&format!("append failed: {e}"));
                    });
                }
            }
        }
    }
}
