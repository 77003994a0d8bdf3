//! # squall-multilang
//!
//! Components in other languages: [`ShellBolt`] (`shell-bolt`) and [`ShellSpout`]
//! (`shell-spout`) run a child process per task and speak Storm's multi-lang protocol to it
//! (JSON messages over its stdin and stdout, each followed by a line `end`), so spouts and
//! bolts written for Storm in Python (storm.py, pystorm, streamparse), Ruby or Node run
//! unchanged. [`codec`] is the protocol as messages (pure); [`child`] runs one child process;
//! [`liveness`] decides when a child is silent too long and when to start it again;
//! [`config`] is the components' config table. The components depend only on `squall-api`.

pub mod bolt;
pub mod child;
pub mod codec;
pub mod config;
pub mod liveness;
pub mod spout;

pub use bolt::ShellBolt;
pub use config::ShellConfig;
pub use spout::ShellSpout;

/// Builds a `shell-bolt` from its config table (a registry factory).
pub fn build_bolt(config: ShellConfig) -> Result<ShellBolt, squall_api::BoxError> {
    ShellBolt::new(config)
}

/// Builds a `shell-spout` from its config table (a registry factory).
pub fn build_spout(config: ShellConfig) -> Result<ShellSpout, squall_api::BoxError> {
    ShellSpout::new(config)
}

/// Logs a child's `log` command at its level (Storm's 0 trace … 4 error; else info).
fn log_child_line(spec: &child::Spec, level: Option<i64>, msg: &str) {
    let (component, task) = (&*spec.component, spec.task);
    match level {
        Some(0) => tracing::trace!(component, task, "{msg}"),
        Some(1) => tracing::debug!(component, task, "{msg}"),
        Some(3) => tracing::warn!(component, task, "{msg}"),
        Some(4) => tracing::error!(component, task, "{msg}"),
        _ => tracing::info!(component, task, "{msg}"),
    }
}
