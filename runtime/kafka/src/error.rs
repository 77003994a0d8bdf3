//! The errors of `kafka-spout`, `kafka-sink` and their client code, by kind.
//!
//! Contract: each error's message (its `Display`) is the one line a user reads in the
//! topology's log or at start-up, and names what it is about: the config key, the topic (and
//! partition), the bootstrap servers, or the blocking call that did not answer. Callers that
//! act on the kind match on the variants; everyone else shows the message.

use std::time::Duration;

use rdkafka::error::KafkaError;
use squall_engine::partitioned::config::ConfigError;

/// Anything `kafka-spout` or `kafka-sink` refuses or fails at: config, client, topic, set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value out of bounds.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `bootstrap` or a librdkafka property refused.
    #[error(transparent)]
    Property(#[from] PropertyError),
    /// The topic is missing or unusable.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A blocking call that did not answer.
    #[error(transparent)]
    OffRuntime(#[from] OffRuntimeError),
    /// A call to the broker failed: `what` was being done (the message's start).
    #[error("{what}: {source}")]
    Kafka { what: String, source: Box<KafkaError> },
    /// Something else, said in one line.
    #[error("{0}")]
    Other(String),
}

/// `bootstrap` or a `properties` key refused (see [`crate::client::client_config`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("`bootstrap` must not be empty (host:port[,host:port…])")]
    EmptyBootstrap,
    #[error("`properties.{0}`: set it with `bootstrap`")]
    BootstrapServers(String),
    /// The component sets the key itself; `kind` names the component.
    #[error("`properties.{key}`: {kind} sets it itself")]
    SetByComponent { key: String, kind: String },
    /// librdkafka refused the key or its value.
    #[error("`properties.{key}`: {description}")]
    Refused { key: String, description: String },
    #[error("`properties`: {0}")]
    Other(String),
}

impl PropertyError {
    /// The config key the error is about.
    pub fn key(&self) -> String {
        match self {
            PropertyError::EmptyBootstrap => "bootstrap".into(),
            PropertyError::BootstrapServers(key)
            | PropertyError::SetByComponent { key, .. }
            | PropertyError::Refused { key, .. } => format!("properties.{key}"),
            PropertyError::Other(_) => "properties".into(),
        }
    }
}

/// A topic a component cannot use (see [`crate::client::partition_count`]).
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic `{topic}` does not exist at {bootstrap}")]
    Missing { topic: String, bootstrap: String },
    #[error("topic `{topic}` at {bootstrap}: {source}")]
    Broker { topic: String, bootstrap: String, source: Box<KafkaError> },
    #[error("topic `{topic}` does not exist at {bootstrap} (no partitions)")]
    NoPartitions { topic: String, bootstrap: String },
    /// More partitions than the component can carry (`max`, or past `u32` when None).
    #[error("topic `{topic}` has {}", match max { Some(max) => format!("more than {max} partitions"), None => "too many partitions".into() })]
    TooManyPartitions { topic: String, max: Option<u32> },
}

impl Error {
    /// A failed call to the broker, said as `what: error`.
    pub fn kafka(what: impl Into<String>, source: KafkaError) -> Error {
        Error::Kafka { what: what.into(), source: Box::new(source) }
    }
}

/// For tools that only pass the message on.
/// A blocking call run off the async runtime (see [`crate::client::off_runtime`]) that gave
/// no answer; `what` names the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffRuntimeError {
    #[error("{what}: cannot start a thread: {error}")]
    Spawn { what: String, error: String },
    #[error("{what}: the call panicked")]
    Panicked { what: String },
    #[error("{what}: no answer within {timeout:?}")]
    NoAnswer { what: String, timeout: Duration },
}
