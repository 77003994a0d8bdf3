//! Per-destination credit accounting: how many batches a sender may have in flight to each
//! bolt or acker task of a peer.
//!
//! Contract: every bolt and acker task has a credit slot on a connection to its worker (its
//! index among that worker's bolt and acker tasks; spouts have none: outcomes need no
//! credits, and holes, the ids no task has, have neither slot nor worker), the same on every
//! worker of an assignment version ([`Placement`]). The connecting side
//! holds one semaphore of the peer's announced credits per slot and takes a permit per batch;
//! the accepting side counts the batches outstanding per slot and returns a credit once a
//! batch is in its task's inbox. A sender past its credits, or credits for a task the peer
//! does not host or beyond what it granted, are protocol errors that close the connection.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use squall_api::{Role, TaskId};
use squall_engine::plan::Plan;
use tokio::sync::Semaphore;

use super::frames::ConnError;

/// Where each task lives: the same on every worker of an assignment version.
pub(super) struct Placement {
    /// By task id: the worker hosting it; `None` for a hole.
    pub(super) host: Vec<Option<usize>>,
    /// By task id: the task's index among the bolt and acker tasks of its worker (its credit
    /// slot on a connection to that worker); `u32::MAX` for spouts and holes.
    pub(super) slot: Vec<u32>,
}

impl Placement {
    /// The placement of `plan`, and the credit slots of each worker (by worker index, up to
    /// the highest worker hosting a task; a hole's `task_worker` is not looked at).
    pub(super) fn new(plan: &Plan) -> (Placement, Vec<usize>) {
        let n = plan.task_count();
        let host: Vec<Option<usize>> =
            (0..n).map(|t| kind(plan, t).and_then(|_| plan.task_worker.get(t).copied())).collect();
        let workers = host.iter().flatten().max().map_or(1, |w| w + 1);
        let mut slots_of_worker = vec![0usize; workers];
        let slot = (0..n)
            .map(|t| match (kind(plan, t), host[t]) {
                (Some(Kind::Bolt | Kind::Acker), Some(w)) => {
                    slots_of_worker[w] += 1;
                    (slots_of_worker[w] - 1) as u32
                }
                _ => u32::MAX,
            })
            .collect();
        (Placement { host, slot }, slots_of_worker)
    }

    /// The credit slot of `task` on a connection to `worker`, if it is a bolt or acker there.
    pub(super) fn slot_at(&self, task: TaskId, worker: usize) -> Option<usize> {
        let t = task as usize;
        (self.host.get(t) == Some(&Some(worker)) && self.slot[t] != u32::MAX).then(|| self.slot[t] as usize)
    }
}

/// What a task id is to the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Hears outcomes, on an unbounded inbox, without credits.
    Spout,
    /// Takes envelopes on a bounded inbox, with credits: a bolt or the checkpoint coordinator.
    Bolt,
    /// Takes acker messages on a bounded inbox, with credits.
    Acker,
}

/// What task `task` of `plan` is; `None` for a hole (no task has that id) or an id past the
/// plan's.
pub(super) fn kind(plan: &Plan, task: usize) -> Option<Kind> {
    if task >= plan.task_count() || plan.is_hole(task as TaskId) {
        return None;
    }
    if plan.is_acker(task as TaskId) {
        return Some(Kind::Acker);
    }
    Some(match plan.task_component[task] {
        Some(c) if plan.components[c].role == Role::Spout => Kind::Spout,
        // A bolt, or the coordinator (it takes envelopes, as a bolt).
        _ => Kind::Bolt,
    })
}

/// On the accepting side, counts a batch for `task` against the credits its sender had
/// (`outstanding` of them are not yet returned); a sender past its credits breaks the protocol.
pub(super) fn take_credit(outstanding: &AtomicU32, credits: u32, task: TaskId) -> Result<(), ConnError> {
    if outstanding.fetch_add(1, Relaxed) >= credits {
        return Err(ConnError::Protocol(format!("more than {credits} batches in flight to task {task}")));
    }
    Ok(())
}

/// On the accepting side, the credits to return for the `delivered` tasks (one per batch),
/// grouped by task, in task order: `credits` is cleared and refilled, `delivered` emptied.
pub(super) fn tally(delivered: &mut Vec<TaskId>, credits: &mut Vec<(TaskId, u32)>) {
    delivered.sort_unstable();
    credits.clear();
    for &t in delivered.iter() {
        match credits.last_mut() {
            Some((last, n)) if *last == t => *n += 1,
            _ => credits.push((t, 1)),
        }
    }
    delivered.clear();
}

/// On the connecting side, gives back `n` credits for `task` of worker `peer`, which granted
/// `credits` per task: credits for a task the peer does not host, or more than it granted,
/// break the protocol.
pub(super) fn grant(
    permits: &[Semaphore],
    placement: &Placement,
    peer: usize,
    credits: u32,
    task: TaskId,
    n: u32,
) -> Result<(), ConnError> {
    let Some(slot) = placement.slot_at(task, peer) else {
        return Err(ConnError::Protocol(format!("credits for task {task}, which the peer does not host")));
    };
    let permits = &permits[slot];
    if permits.available_permits() as u64 + n as u64 > credits as u64 {
        return Err(ConnError::Protocol(format!("more than {credits} credits for task {task}")));
    }
    permits.add_permits(n as usize);
    Ok(())
}
