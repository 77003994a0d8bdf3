//! `kafka-sink`: produces every input tuple to a Kafka topic as one record, and acks the tuple
//! only once the broker has acknowledged the record.
//!
//! Config: `bootstrap` (servers, `host:port[,host:port…]`, default `127.0.0.1:9092`); `topic`
//! (required); `key_field` (default `"key"`) and `value_field` (default `"value"`): the input
//! fields the record's key and value come from; `linger_ms` (how long records wait to be
//! batched, librdkafka's `linger.ms`, and how often delivered records are acked; default 5);
//! `properties` (more librdkafka settings, e.g. `{ "compression.type" = "lz4" }`; not `acks`
//! or `linger.ms`, which the sink sets).
//!
//! A record's key is its input's `key_field` (no key if the input has no such field, or it is
//! null) and its value the `value_field`: strings as their UTF-8 bytes, bytes as they are, any
//! other value as its JSON text — as `log-sink` writes them. Partitions are librdkafka's choice
//! (its default partitioner: a keyed record by a hash of its key, so equal keys share a
//! partition; set `properties.partitioner` to `murmur2_random` to place keys as the Java
//! client does).
//!
//! Contract: every record is produced with `acks=all`; an input is acked once the broker
//! acknowledged its record, and failed (so its spout replays it) when the delivery fails —
//! the broker refused it, or it could not be delivered within librdkafka's
//! `message.timeout.ms`. While the broker is unreachable, records wait in librdkafka's queue
//! and, once that is full, `execute` waits for room (backpressure). An input without the value
//! field fails with an error that names the field; one whose record is too large fails alone.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use serde::Deserialize;
use squall_api::{async_trait, Bolt, BoltCollector, BoxError, TopologyContext, Tuple};

use crate::client::{
    self, de_bootstrap, de_properties, de_topic, default_bootstrap, keyed, off_runtime, Properties, Throttle,
    SETUP_TIMEOUT,
};
use crate::error::Error;
use squall_engine::partitioned::config::{check_range, ConfigError};
use squall_engine::partitioned::sink::{defaults, record_of, settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_bootstrap", deserialize_with = "de_bootstrap")]
    pub bootstrap: String,
    #[serde(deserialize_with = "de_topic")]
    pub topic: String,
    #[serde(default = "defaults::key_field", deserialize_with = "de_key_field")]
    pub key_field: String,
    #[serde(default = "defaults::value_field", deserialize_with = "de_value_field")]
    pub value_field: String,
    #[serde(default = "defaults::linger_ms", deserialize_with = "de_linger_ms")]
    pub linger_ms: u64,
    #[serde(default, deserialize_with = "de_properties")]
    pub properties: Properties,
}

keyed! {
    de_key_field: String = "key_field";
    de_value_field: String = "value_field";
    de_linger_ms: u64 = "linger_ms";
}

/// The pause while librdkafka's queue is full, before trying again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);
/// How long cleanup waits for records still on their way.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings the sink makes itself; `properties` may not name them.
fn fixed_settings(config: &Config) -> Vec<(&'static str, String)> {
    vec![("acks", "all".into()), ("linger.ms", config.linger_ms.to_string())]
}

/// The `kafka-sink` factory.
pub fn build(config: Config) -> Result<KafkaSink, BoxError> {
    config.validate()?;
    Ok(KafkaSink { config, open: None })
}

impl Config {
    /// Refuses a value out of bounds, naming its key; checks `bootstrap` and `properties`
    /// with librdkafka.
    pub fn validate(&self) -> Result<(), Error> {
        if self.topic.is_empty() {
            return Err(ConfigError::empty("topic").into());
        }
        check_range("linger_ms", self.linger_ms, 1, 900_000)?;
        client::client_config("kafka-sink", &self.bootstrap, &fixed_settings(self), &self.properties)?;
        Ok(())
    }
}

pub struct KafkaSink {
    config: Config,
    open: Option<Open>,
}

/// The producer's context: librdkafka's log into ours, delivery reports to the sink.
struct SinkContext {
    who: String,
    delivered: mpsc::Sender<(Tuple, Result<(), String>)>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client::log(&self.who, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("{}: {error}: {reason}", self.who);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Tuple>;

    fn delivery(&self, result: &DeliveryResult<'_>, input: Box<Tuple>) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = self.delivered.send((*input, outcome));
    }
}

type KafkaProducer = BaseProducer<SinkContext>;

struct Open {
    /// Taken out only by cleanup (and drop), to be closed off the async runtime.
    producer: Option<KafkaProducer>,
    delivered: mpsc::Receiver<(Tuple, Result<(), String>)>,
    reports: Throttle,
}

#[async_trait]
impl Bolt for KafkaSink {
    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.config.linger_ms))
    }

    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        let c = &self.config;
        let config = client::client_config("kafka-sink", &c.bootstrap, &fixed_settings(c), &c.properties)?;
        let who = format!("kafka-sink {}[{}]", ctx.component_id(), ctx.task_index());
        let (tx, delivered) = mpsc::channel();
        let producer: KafkaProducer = config
            .create_with_context(SinkContext { who, delivered: tx })
            .map_err(|source| Error::kafka("kafka-sink: cannot create the producer", source))?;
        // The topic must exist: a typo is better found now than as failed deliveries.
        let (topic, bootstrap) = (c.topic.clone(), c.bootstrap.clone());
        let what = format!("kafka-sink: reading the metadata of topic `{topic}` at {bootstrap}");
        let producer = off_runtime(&what, SETUP_TIMEOUT + Duration::from_secs(10), move || {
            let metadata =
                producer.client().fetch_metadata(Some(&topic), SETUP_TIMEOUT).map_err(|source| {
                    let what = format!("cannot read the metadata of topic `{topic}` at {bootstrap}");
                    Error::kafka(what, source)
                })?;
            client::partition_count(&metadata, &topic, &bootstrap)?;
            drop(metadata);
            Ok::<_, Error>(producer)
        })
        .await??;
        self.open = Some(Open { producer: Some(producer), delivered, reports: Throttle::default() });
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        let Some(open) = self.open.as_mut() else { return Err("kafka-sink is not prepared".into()) };
        if input.is_tick() {
            open.settle(out);
            return Ok(());
        }
        let (key, value) = record_of(&input, &self.config.key_field, &self.config.value_field)?;
        let mut input = Box::new(input);
        loop {
            let mut record = BaseRecord::with_opaque_to(&self.config.topic, input).payload(value.as_ref());
            if let Some(key) = &key {
                record = record.key(key.as_ref());
            }
            let Some(producer) = open.producer.as_ref() else { return Err("kafka-sink is closed".into()) };
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    // Backpressure: wait for deliveries to make room, acking them meanwhile.
                    input = record.delivery_opaque;
                    open.settle(out);
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, record)) => {
                    // This record can never be produced (too large, …): fail it alone.
                    out.report_error(&format!("cannot produce to `{}`: {e}", self.config.topic));
                    out.fail(*record.delivery_opaque);
                    break;
                }
            }
        }
        open.settle(out);
        Ok(())
    }

    async fn cleanup(&mut self) {
        let Some(producer) = self.open.as_mut().and_then(|o| o.producer.take()) else { return };
        let flushed =
            off_runtime("kafka-sink: flushing", FLUSH_TIMEOUT + Duration::from_secs(5), move || {
                let result = producer.flush(FLUSH_TIMEOUT);
                drop(producer);
                result
            })
            .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("kafka-sink: records still unacknowledged at cleanup: {e}"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

impl Open {
    /// Serves delivery reports: acks the inputs whose records the broker acknowledged, fails
    /// those whose delivery failed.
    fn settle(&mut self, out: &mut dyn BoltCollector) {
        let Some(producer) = self.producer.as_ref() else { return };
        // Each poll serves one batch of reports; go on while there are more.
        for _ in 0..64 {
            producer.poll(Duration::ZERO);
            let mut any = false;
            while let Ok((input, outcome)) = self.delivered.try_recv() {
                any = true;
                settle(out, [input], outcome, |out, e| {
                    self.reports.report(out, Instant::now(), format!("delivery failed: {e}"));
                });
            }
            if !any {
                break;
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            let _ =
                std::thread::Builder::new().name("squall-kafka-close".into()).spawn(move || drop(producer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_error(toml: &str) -> String {
        let config: Result<Config, _> = toml::from_str(toml);
        match config {
            Err(e) => e.to_string(),
            Ok(config) => match build(config) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{toml} was accepted"),
            },
        }
    }

    #[test]
    fn defaults_and_bad_config_naming_the_key() {
        let config: Config = toml::from_str(r#"topic = "out""#).unwrap();
        assert_eq!((config.key_field.as_str(), config.value_field.as_str()), ("key", "value"));
        assert_eq!(config.bootstrap, "127.0.0.1:9092");
        assert!(build(config).is_ok());
        for (toml, key) in [
            (r#"topic = """#, "`topic`"),
            ("topic = \"out\"\nlinger_ms = 0", "`linger_ms`"),
            ("topic = \"out\"\nlinger_ms = \"soon\"", "`linger_ms`: "),
            (
                "topic = \"out\"\nproperties = { acks = \"1\" }",
                "`properties.acks`: kafka-sink sets it itself",
            ),
            (
                "topic = \"out\"\nproperties = { \"compression.type\" = \"zip\" }",
                "`properties.compression.type`",
            ),
            ("topic = \"out\"\nbootstrap = \"\"", "`bootstrap`"),
        ] {
            let e = build_error(toml);
            assert!(e.contains(key), "{toml}: {e}");
        }
    }
}
