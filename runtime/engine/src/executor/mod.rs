//! Executors: each task runs its component on its own async task.
//!
//! Contract: a spout executor calls `next_tuple` while the topology is active and fewer than
//! `max_spout_pending` of its reliable tuples are in flight, hands the acker's outcomes to
//! `ack` / `fail` exactly once per message id, and ends when its spout is finished and nothing
//! is in flight, or on stop once in-flight trees drained (bounded by the message timeout). A
//! bolt executor runs `execute` for every tuple of its inbox in order, plus tick tuples, and
//! ends when every task that could send to it has ended and its inbox is drained; its own
//! outputs close with it, so shutdown flows down the graph. Queues between tasks are bounded.
//! A spout task that stops emitting for good sends an end-of-stream marker downstream, which
//! each bolt task forwards once all of its upstream tasks have sent theirs
//! ([`end_of_stream`]); a windowed bolt ([`window`]) fires every window it holds then.

pub mod bolt;
pub mod end_of_stream;
mod in_flight;
pub mod output;
pub mod rewire;
pub mod spout;
pub mod window;

use std::sync::Arc;

use squall_api::TopologyContext;

use crate::plan::Plan;

pub use output::{Envelope, Links, Output};

/// What the topology is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Active,
    Inactive,
    /// Stop emitting, drain in-flight trees, end.
    Stop,
}

/// A task's failure to start or run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{component} task {task}: {message}")]
pub struct TaskError {
    pub component: String,
    pub task: u32,
    pub message: String,
}

/// The context of one task of a plan.
pub fn context(plan: &Plan, component: usize, task: u32) -> TopologyContext {
    let c = &plan.components[component];
    TopologyContext::new(
        &plan.name,
        &c.id,
        task,
        plan.component_tasks.clone(),
        c.config.clone(),
        Arc::new(plan.settings.raw.clone()),
    )
    .with_topology_id(&plan.id)
    .with_resources_dir(plan.resources.clone())
    .with_tick_secs(c.tick)
}
