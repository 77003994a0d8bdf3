//! What `kafka-spout` and `kafka-sink` share: the `bootstrap` and `properties` config keys and
//! the librdkafka configuration built from them, librdkafka's log in the topology's log,
//! and librdkafka's blocking calls run off the async runtime.
//!
//! Contract: [`client_config`] refuses, with a one-line message naming the key (a
//! [`PropertyError`](crate::error::PropertyError)), an empty `bootstrap`, a property the
//! component sets itself, and a property librdkafka does not know or cannot take — before
//! anything connects. [`off_runtime`] runs a blocking call on a thread
//! of its own and gives up waiting (never blocking the caller's async runtime) after its
//! timeout. librdkafka's errors are logged as warnings, everything else it says at debug
//! level (`SQUALL_LOG=debug`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use serde::Deserialize;
use squall_api::{BoltCollector, SpoutCollector};

use crate::error::{OffRuntimeError, PropertyError, TopicError};

/// Where a component connects when the topology names no `bootstrap`.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// How long the calls that set a component up (metadata, offsets) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn default_bootstrap() -> String {
    DEFAULT_BOOTSTRAP.to_string()
}

/// Defines field deserializers whose errors name their key (serde's own do not say which key
/// a wrong value was under): `keyed! { de_topic: String = "topic"; }`, then
/// `#[serde(deserialize_with = "de_topic")]` on the field.
macro_rules! keyed {
    ($($vis:vis $name:ident: $ty:ty = $key:literal;)*) => {
        $(
            $vis fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                <$ty as serde::Deserialize>::deserialize(d)
                    .map_err(|e| <D::Error as serde::de::Error>::custom(format!("`{}`: {e}", $key)))
            }
        )*
    };
}
pub(crate) use keyed;

keyed! {
    pub(crate) de_bootstrap: String = "bootstrap";
    pub(crate) de_topic: String = "topic";
    pub(crate) de_properties: Properties = "properties";
}

/// Extra librdkafka properties from a component's `properties` table, e.g.
/// `properties = { "client.id" = "squall", "fetch.max.bytes" = 1048576 }`.
pub type Properties = BTreeMap<String, PropertyValue>;

/// A property's value: TOML strings, integers, floats and booleans, passed on as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Bool(b) => write!(f, "{b}"),
            PropertyValue::Int(n) => write!(f, "{n}"),
            PropertyValue::Float(x) => write!(f, "{x}"),
            PropertyValue::Str(s) => f.write_str(s),
        }
    }
}

/// A librdkafka configuration: `bootstrap.servers` from `bootstrap`, then `fixed` (the
/// component's own settings), then the user's `properties`, none of which may name a key of
/// `fixed` (or `bootstrap.servers`). `kind` names the component in messages.
pub fn client_config(
    kind: &str,
    bootstrap: &str,
    fixed: &[(&str, String)],
    properties: &Properties,
) -> Result<ClientConfig, PropertyError> {
    if bootstrap.trim().is_empty() {
        return Err(PropertyError::EmptyBootstrap);
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in fixed {
        config.set(*key, value);
    }
    for (key, value) in properties {
        if key == "bootstrap.servers" {
            return Err(PropertyError::BootstrapServers(key.clone()));
        }
        if fixed.iter().any(|(k, _)| k == key) {
            return Err(PropertyError::SetByComponent { key: key.clone(), kind: kind.to_string() });
        }
        config.set(key, value.to_string());
    }
    // librdkafka checks every property as it is set: do that now, not at connect time.
    config.create_native_config().map_err(|e| match e {
        KafkaError::ClientConfig(_, description, key, _) => PropertyError::Refused { key, description },
        other => PropertyError::Other(other.to_string()),
    })?;
    Ok(config)
}

/// Writes a line of librdkafka's log to the topology's log, for the component `who`.
pub fn log(who: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::warn!("{who}: librdkafka {facility}: {message}"),
        _ => tracing::debug!("{who}: librdkafka {facility}: {message}"),
    }
}

/// Runs the blocking `f` on a thread of its own and waits for it (asynchronously) up to
/// `timeout`; past that the thread is left to finish alone and `what` is reported as not
/// answering. Nothing waits for such a thread at exit.
pub async fn off_runtime<T, F>(what: &str, timeout: Duration, f: F) -> Result<T, OffRuntimeError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("squall-kafka".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| OffRuntimeError::Spawn { what: what.to_string(), error: e.to_string() })?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(OffRuntimeError::Panicked { what: what.to_string() }),
        Err(_) => Err(OffRuntimeError::NoAnswer { what: what.to_string(), timeout }),
    }
}

/// The number of partitions of `topic` in `metadata`, or why there are none.
pub fn partition_count(metadata: &Metadata, topic: &str, bootstrap: &str) -> Result<u32, TopicError> {
    let (topic, bootstrap) = (topic.to_string(), bootstrap.to_string());
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(TopicError::Missing { topic, bootstrap });
    };
    if let Some(e) = t.error() {
        return Err(TopicError::Broker {
            topic,
            bootstrap,
            source: Box::new(KafkaError::MetadataFetch(e.into())),
        });
    }
    match t.partitions().len() {
        0 => Err(TopicError::NoPartitions { topic, bootstrap }),
        n => u32::try_from(n).map_err(|_| TopicError::TooManyPartitions { topic, max: None }),
    }
}

/// How often the same error is reported at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Reports repeated errors to the topology's log at most once per [`REPORT_EVERY`] each, so a
/// broker outage is a few lines, not one per record or poll.
#[derive(Debug, Default)]
pub struct Throttle {
    last: HashMap<String, Instant>,
    /// Reports held back since the last one of each message.
    held: HashMap<String, u64>,
}

impl Throttle {
    /// Reports `message` through `out` unless it was reported less than [`REPORT_EVERY`] ago;
    /// a report says how many like it were held back.
    pub fn report<S: ErrorSink + ?Sized>(&mut self, out: &mut S, now: Instant, message: String) {
        if self.last.get(&message).is_some_and(|at| now < *at + REPORT_EVERY) {
            *self.held.entry(message).or_default() += 1;
            return;
        }
        if self.last.len() >= 64 {
            self.last.retain(|_, at| now < *at + REPORT_EVERY);
            self.held.retain(|m, _| self.last.contains_key(m));
        }
        match self.held.remove(&message) {
            Some(n) => out.report(&format!("{message} (and {n} more like it)")),
            None => out.report(&message),
        }
        self.last.insert(message, now);
    }
}

/// Where a [`Throttle`] reports: a spout's or a bolt's collector.
pub trait ErrorSink {
    fn report(&mut self, error: &str);
}

impl ErrorSink for dyn SpoutCollector + '_ {
    fn report(&mut self, error: &str) {
        self.report_error(error);
    }
}

impl ErrorSink for dyn BoltCollector + '_ {
    fn report(&mut self, error: &str) {
        self.report_error(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, PropertyValue)]) -> Properties {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn properties_pass_through_as_text() {
        let p = props(&[
            ("client.id", PropertyValue::Str("me".into())),
            ("fetch.max.bytes", PropertyValue::Int(1 << 20)),
            ("enable.partition.eof", PropertyValue::Bool(true)),
        ]);
        let config = client_config("kafka-spout", "h:1", &[], &p).unwrap();
        assert_eq!(config.get("bootstrap.servers"), Some("h:1"));
        assert_eq!(config.get("fetch.max.bytes"), Some("1048576"));
        assert_eq!(config.get("enable.partition.eof"), Some("true"));
    }

    #[test]
    fn bad_config_names_the_key() {
        let fixed = [("group.id", "g".to_string())];
        let e = client_config("kafka-spout", " ", &fixed, &Properties::new()).unwrap_err().to_string();
        assert!(e.contains("`bootstrap`"), "{e}");
        let p = props(&[("group.id", PropertyValue::Str("x".into()))]);
        let e = client_config("kafka-spout", "h:1", &fixed, &p).unwrap_err().to_string();
        assert_eq!(e, "`properties.group.id`: kafka-spout sets it itself");
        let p = props(&[("no.such.thing", PropertyValue::Int(1))]);
        let e = client_config("kafka-spout", "h:1", &fixed, &p).unwrap_err().to_string();
        assert!(e.starts_with("`properties.no.such.thing`: "), "{e}");
        let p = props(&[("fetch.max.bytes", PropertyValue::Str("lots".into()))]);
        let e = client_config("kafka-spout", "h:1", &fixed, &p).unwrap_err().to_string();
        assert!(e.starts_with("`properties.fetch.max.bytes`: "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[tokio::test]
    async fn off_runtime_gives_up_waiting() {
        let e = off_runtime("sleepy", Duration::from_millis(10), || {
            std::thread::sleep(Duration::from_millis(500));
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("sleepy") && e.contains("no answer"), "{e}");
        assert_eq!(off_runtime("quick", Duration::from_secs(5), || 7).await, Ok(7));
    }
}
