//! What spouts and sinks over partitioned logs share: the embedded log's `log-spout` and
//! `log-sink`, and Kafka's `kafka-spout` and `kafka-sink`, are one design over two clients.
//!
//! Contract: [`offsets`] tracks, per partition, the records a spout has out, the commit
//! frontier (the lowest offset not yet acked), retries and the uncommitted bound;
//! [`assignment`] holds a spout task's partitions and applies acks and fails to them;
//! [`sink`] makes a sink's records of its inputs and settles the inputs once the records are
//! durable; [`values`] converts between record bytes and tuple values the same way for every
//! broker; [`config`] checks the config keys they share, with errors naming the key.

pub mod assignment;
pub mod config;
pub mod offsets;
pub mod sink;
pub mod values;
