//! # squall-runtime
//!
//! The `squall` command line as a library, and the one runtime crate a project depends on
//! beside `squall-api`: a binary calls [`cli::main`] with its registry of components and is
//! then the whole product (local runs, the daemons, submit, the broker, benchmarks).
//!
//! Crates depend one way: this one → the cluster, Kafka and the embedded log → the engine →
//! the API. Their crates are re-exported here as [`engine`], [`broker`], [`kafka`] and
//! [`cluster`]. The features `cluster` (nimbus, supervisors, workers; an HTTP stack) and
//! `kafka` (librdkafka) are on by default; without them a build runs topologies locally and
//! serves the embedded log, and the cluster and Kafka verbs say which feature they need.

pub mod bench;
mod broken_pipe;
pub mod cli;
#[cfg(feature = "cluster")]
mod cluster_verbs;
#[cfg(feature = "cluster")]
mod errors;
mod kinds;
mod state;
#[cfg(feature = "cluster")]
mod tap;
#[cfg(feature = "cluster")]
mod top;
mod topic;

pub use squall_broker as broker;
#[cfg(feature = "cluster")]
pub use squall_cluster as cluster;
pub use squall_engine as engine;
#[cfg(feature = "kafka")]
pub use squall_kafka as kafka;
