//! Rewiring running tasks: a process's tasks switch to a new plan without stopping (a live
//! rebalance).
//!
//! Contract: a process that hosts tasks may [`Rewire::publish`] a new [`Wiring`] (the new
//! plan, with the same ids for the tasks that stay, see [`crate::plan::Numbering`]; the
//! senders to every task of it; their metrics) at any time. Every running task notices at
//! its next batch, tick or call into its component (one relaxed load, [`Rewire::changed`]):
//! it sends what it has batched to the old receivers, then routes every later emit, ack and
//! marker by the new plan (its routers, receivers and acker links are rebuilt; its tree ids,
//! counters and pending batches stay). Bolts also take the new plan's upstream tasks for
//! their end of stream. A task the new plan no longer gives this process is ended by a
//! [`retire`] marker in its inbox: a bolt runs its cleanup and ends as at the end of its
//! stream, without sending an end-of-stream marker downstream (its upstream has not ended);
//! a spout ([`retire_spout`]) stops emitting, drains its in-flight trees and closes; an
//! acker moved elsewhere ends when it sees the wiring (the trees it followed time out at
//! their spouts, which replay them).
//! What was in flight to a task that went away is lost with it and replayed by its spout
//! (at-least-once): a rebalance deactivates the topology and waits first, so usually nothing
//! is. A process that never publishes pays one relaxed load per batch.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use squall_api::{Registry, TaskId, Values};

use super::output::{Anchors, Envelope, Links};
use crate::acker::Outcome;
use crate::metrics::TaskMetrics;
use crate::plan::Plan;

/// The reserved stream id of the marker that retires a task (no plan has that many streams;
/// the checkpoint markers take the ids just above).
pub const RETIRE: u32 = u32::MAX - 4;

/// The marker that ends the task it is sent to (see the module docs).
pub fn retire(from: TaskId) -> Envelope {
    Envelope { stream: RETIRE, source_task: from, values: Values::new(), anchors: Anchors::new() }
}

/// The root of the outcome that retires the spout task it is sent to (no spout's slab has
/// that slot: see [`crate::acker::make_root`]).
pub const RETIRE_ROOT: u64 = u64::MAX;

/// The outcome that retires a spout task: it stops emitting, drains what is in flight (up
/// to its stop's drain time) and ends, without an end-of-stream marker.
pub fn retire_spout() -> Outcome {
    Outcome { root: RETIRE_ROOT, acked: false, failed_by: 0, held_by: 0 }
}

/// What tasks route by after a rewire.
pub struct Wiring {
    pub plan: Arc<Plan>,
    /// Senders to every task of `plan` (by task id): this process's inboxes and the carriers
    /// to other processes' tasks.
    pub links: Links,
    /// Every task's metrics, by task id of `plan`.
    pub metrics: Vec<Arc<TaskMetrics>>,
    /// The tasks this process hosts under `plan` (an acker not among them ends).
    pub hosted: Vec<TaskId>,
    pub registry: Registry,
}

impl Wiring {
    /// The tasks that send to component `component` under the new plan (its end of stream
    /// and watermarks wait for them).
    pub fn upstream_of(&self, component: &str) -> Vec<TaskId> {
        let index = self.plan.component_index(component).unwrap_or(0);
        super::end_of_stream::upstream_tasks(&self.plan, index)
    }
}

/// Where a process publishes its new wiring and its tasks look for it.
#[derive(Default)]
pub struct Rewire {
    version: AtomicU64,
    latest: Mutex<Option<Arc<Wiring>>>,
}

impl Rewire {
    /// Publishes `wiring`: every task switches to it at its next batch.
    pub fn publish(&self, wiring: Wiring) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(Arc::new(wiring));
            self.version.fetch_add(1, Relaxed);
        }
    }

    /// The number of wirings published so far.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Relaxed)
    }

    /// Whether a wiring newer than the `seen`th was published.
    #[inline]
    pub fn changed(&self, seen: u64) -> bool {
        self.version.load(Relaxed) != seen
    }

    /// Drops the latest wiring (its senders keep tasks' inboxes open); tasks that have not
    /// switched to it yet never will. For a process that is stopping.
    pub fn forget(&self) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = None;
        }
    }

    /// The latest wiring and its version (the version is read under the lock, so the two
    /// match).
    pub fn latest(&self) -> Option<(u64, Arc<Wiring>)> {
        let latest = self.latest.lock().ok()?;
        let wiring = latest.clone()?;
        Some((self.version.load(Relaxed), wiring))
    }
}
