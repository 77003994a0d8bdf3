//! # squall-engine
//!
//! Runs topologies written against `squall-api`, in one process. Data flows one way:
//! topology file → [`topology`] (parse, validate) → [`plan`] (tasks, streams, subscriptions)
//! → [`launch`] (start [`executor`]s with their [`grouping`] routers, the [`acker`] and, for
//! stateful bolts, [`checkpoint`]s) →
//! [`metrics`]; [`local`] runs a whole plan in this process. What the subsystems above share
//! lives here too: [`partitioned`] (what spouts and sinks over partitioned logs share),
//! [`frame`] (length-prefixed MessagePack frames over TCP), [`auth`] (proving the cluster
//! secret on every link), [`config_file`] (reading a
//! settings file with `${VAR}` substitution) and [`resources`] (a topology's `resources/` folder).

pub mod acker;
pub mod auth;
pub mod checkpoint;
pub mod config_file;
pub mod executor;
pub mod frame;
pub mod grouping;
pub mod launch;
pub mod local;
pub mod metrics;
pub mod partitioned;
pub mod plan;
pub mod prefetch;
pub mod resources;
pub mod tap;
pub mod topology;
pub mod window;
