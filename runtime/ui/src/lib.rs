//! Seeing a running topology: the web UI, the Storm-style REST API and the Prometheus metrics
//! that nimbus serves on `[ui] listen` and `squall local FILE --ui ADDR` serves for a local run.
//!
//! Contract: whoever runs topologies implements [`Source`] (nimbus over its coordinator, or
//! [`local::LocalSource`] over a local run's metrics), answering with plain views
//! ([`view`]): what runs where, and every task's latest figures. Everything users see is
//! derived from those views by pure functions: the REST API's JSON ([`rest`], field names as
//! Storm UI's wherever the concept is the same) and the Prometheus exposition ([`prom`]).
//! [`server`] serves both, and the page of [`assets`], on one axum router: reading is open
//! when `public_read` is set, and every action needs the cluster secret; [`bounded`] serves
//! it with a header timeout and a bound on connections.
//!
//! Crates depend one way: this one on the engine and the API alone, so both the cluster and
//! the CLI's local runner can serve it.

pub mod assets;
pub mod bounded;
pub mod history;
pub mod local;
pub mod prom;
pub mod rest;
pub mod server;
pub mod view;

pub use server::{router, serve, UiOptions};
pub use view::{Action, ActionError, Source};
