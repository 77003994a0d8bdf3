//! # squall-runtime
//!
//! Runs topologies written against `squall-api`. Data flows one way:
//! topology file → [`topology`] (parse, validate) → [`plan`] (tasks, streams, subscriptions)
//! → [`local`] / workers (start [`executor`]s with their [`grouping`] routers and the
//! [`acker`]) → [`metrics`]. [`cli`] is the `squall` command line as a library.

pub mod acker;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod executor;
pub mod grouping;
pub mod kafka;
pub mod local;
pub mod metrics;
pub mod offsets;
pub mod plan;
pub mod topology;
