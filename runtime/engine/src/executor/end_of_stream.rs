//! End of stream: how a bounded run tells every task downstream that its inputs are over.
//!
//! Contract: a spout task that stops emitting for good (its spout is finished, or the run is
//! stopping) sends one marker, an [`Envelope`] on the reserved stream [`END_OF_STREAM`] with
//! its own task id as `source_task` and no values or anchors, to every task of every
//! component subscribed to any of its streams, whatever the grouping, once. A bolt task keeps
//! an [`Ends`] over its upstream tasks (the tasks of every component it subscribes to, from
//! the plan); once each of them has sent its marker, it sends one marker to all of its own
//! downstream tasks. Markers travel in the batches with the tuples, so a marker arrives after
//! everything its sender emitted before it, across workers too (the transport carries the
//! stream id as any other). A marker is never counted as executed, emitted or transferred and
//! never reaches a component: executors test the stream id before looking its meta up.
//!
//! Windowed bolts need it: they hold their inputs un-acked until their windows fire, so the
//! spouts' trees cannot complete until the windows know that no more input will come. Plain
//! bolts only forward it. A spout that emits again after its marker (a replay after it said it
//! was finished) sends tuples past its end of stream: windows downstream treat them as late.
//! A topology with a cycle never ends the streams of the cycle.

use squall_api::{TaskId, Values};

use super::output::Anchors;
use super::Envelope;
use crate::plan::Plan;

/// The reserved stream id of end-of-stream markers (no plan has that many streams).
pub const END_OF_STREAM: u32 = u32::MAX;

/// The marker task `from` sends.
pub fn marker(from: TaskId) -> Envelope {
    Envelope { stream: END_OF_STREAM, source_task: from, values: Values::new(), anchors: Anchors::new() }
}

/// The tasks that send to the tasks of `component`: those of every component with a stream
/// `component` subscribes to, each once, in task order.
pub fn upstream_tasks(plan: &Plan, component: usize) -> Vec<TaskId> {
    let mut tasks: Vec<TaskId> = plan
        .streams
        .iter()
        .filter(|s| s.subscribers.iter().any(|sub| sub.component == component))
        .flat_map(|s| plan.components[s.component].tasks.iter().copied())
        .collect();
    tasks.sort_unstable();
    tasks.dedup();
    tasks
}

/// Which upstream tasks of one task have ended their stream.
#[derive(Debug, Clone)]
pub struct Ends {
    /// By task id: still to send its marker.
    waiting: Vec<bool>,
    remaining: usize,
    /// The upstream tasks, sorted.
    upstream: Vec<TaskId>,
}

impl Ends {
    pub fn new(upstream: &[TaskId]) -> Self {
        let len = upstream.iter().map(|&t| t as usize + 1).max().unwrap_or(0);
        let mut waiting = vec![false; len];
        let mut remaining = 0;
        for &t in upstream {
            if !std::mem::replace(&mut waiting[t as usize], true) {
                remaining += 1;
            }
        }
        let mut upstream = upstream.to_vec();
        upstream.sort_unstable();
        upstream.dedup();
        Ends { waiting, remaining, upstream }
    }

    /// Upstream task `from` ended its stream. True if it was the last to: the stream this
    /// task receives is over. A second marker from one task, or one from a task that is not
    /// upstream, changes nothing.
    pub fn end(&mut self, from: TaskId) -> bool {
        match self.waiting.get_mut(from as usize) {
            Some(w) if *w => {
                *w = false;
                self.remaining -= 1;
                self.remaining == 0
            }
            _ => false,
        }
    }

    /// Every upstream task has ended (true at once for a task with none).
    pub fn all_ended(&self) -> bool {
        self.remaining == 0
    }

    /// The upstream tasks became `upstream` (a live rebalance): a task upstream before and
    /// after keeps whether it has ended; a new one has not; one that went away no longer
    /// counts. True if that ends the stream (it was not over before).
    pub fn rewire(&mut self, upstream: &[TaskId]) -> bool {
        let was_over = self.all_ended();
        let ended: Vec<TaskId> = upstream
            .iter()
            .copied()
            .filter(|t| self.upstream.binary_search(t).is_ok() && !self.waiting[*t as usize])
            .collect();
        *self = Ends::new(upstream);
        for t in ended {
            self.end(t);
        }
        !was_over && self.all_ended()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};

    #[test]
    fn the_stream_ends_once_every_upstream_task_sent_its_marker_once() {
        let mut ends = Ends::new(&[4, 2, 4, 7]);
        assert!(!ends.all_ended());
        assert!(!ends.end(2));
        assert!(!ends.end(2), "a second marker from a task counts once");
        assert!(!ends.end(3), "a task that is not upstream is ignored");
        assert!(!ends.end(99));
        assert!(!ends.end(7));
        assert!(ends.end(4), "the last upstream task ends the stream");
        assert!(ends.all_ended());
        assert!(!ends.end(4), "it ends once");
    }

    #[test]
    fn a_rewire_keeps_the_ends_of_tasks_that_stay_and_waits_for_new_ones() {
        let mut ends = Ends::new(&[1, 2, 3]);
        assert!(!ends.end(1));
        assert!(!ends.rewire(&[1, 2, 9]), "task 9 is new: not over");
        assert!(!ends.end(3), "task 3 went away");
        assert!(!ends.end(2));
        assert!(ends.end(9), "1 ended before the rewire, 2 and 9 after");
        let mut ends = Ends::new(&[1, 2]);
        assert!(!ends.end(1));
        assert!(ends.rewire(&[1]), "the only task still upstream had ended");
    }

    #[test]
    fn a_task_with_no_upstream_task_has_ended_from_the_start() {
        assert!(Ends::new(&[]).all_ended());
    }

    #[test]
    fn upstream_tasks_are_those_of_every_component_subscribed_to() {
        let def = TopologyDef {
            name: "t".into(),
            workers: 1,
            settings: Settings::default(),
            spouts: vec![
                ComponentDef::new("s", "x").parallelism(2).emits(["n"]),
                ComponentDef::new("r", "x").parallelism(1).emits(["n"]),
            ],
            bolts: vec![
                ComponentDef::new("a", "x").parallelism(3).input("s", GroupingDef::Shuffle).emits(["n"]),
                ComponentDef::new("b", "x")
                    .input("a", GroupingDef::Global)
                    .input("r", GroupingDef::Fields(vec!["n".into()])),
            ],
        };
        let plan = Plan::new(&def).unwrap();
        let a = plan.component_index("a").unwrap();
        let b = plan.component_index("b").unwrap();
        assert_eq!(upstream_tasks(&plan, a), vec![0, 1]);
        assert_eq!(upstream_tasks(&plan, b), vec![2, 3, 4, 5]);
        assert_eq!(upstream_tasks(&plan, 0), Vec::<TaskId>::new());
    }
}
