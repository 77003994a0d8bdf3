//! What spouts and sinks over partitioned logs share: the embedded log's `log-spout` and
//! `log-sink`, and Kafka's `kafka-spout` and `kafka-sink`, are one design over two clients.
//!
//! Contract: [`offsets`] tracks, per partition, the records a spout has out, the commit
//! frontier (the lowest offset not yet acked), retries and the uncommitted bound; [`values`]
//! converts between record bytes and tuple values the same way for every broker.

pub mod offsets;
pub mod values;
