//! Kafka: `kafka-spout` and `kafka-sink`, the Kafka-protocol counterparts of the embedded log's
//! `log-spout` and `log-sink`, over the rdkafka crate (its bundled librdkafka).
//!
//! Modules: [`client`] (what both components share: the `bootstrap` and `properties` config
//! keys, the librdkafka configuration built from them, logging, running librdkafka's blocking
//! calls off the async runtime), [`error`] (their errors, by kind), [`spout`] (`kafka-spout`), [`sink`] (`kafka-sink`), [`tools`]
//! (create, fill and read back topics: for benchmarks and tests), [`tansu`] (start a local
//! Tansu broker: for benchmarks and tests).
//!
//! Contract: the same as the embedded log's components. The spout emits each record with
//! (partition, offset) as its message id ([`squall_engine::partitioned::offsets::message_id`]), commits a
//! partition's offset only up to the lowest offset not yet acked ([`squall_engine::partitioned::offsets`], shared
//! with `log-spout`), re-emits failed and timed-out records, and after any crash resumes from
//! the committed offsets; the sink acks a tuple only once the broker has acknowledged its
//! record (acks=all).

pub mod client;
pub mod error;
pub mod sink;
pub mod spout;
