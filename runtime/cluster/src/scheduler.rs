//! Storm's even scheduler, as a pure function.
//!
//! Contract: [`schedule`] places a topology's tasks (numbered `0..layout.task_count()`: the
//! components' tasks in plan order, then the ackers', as [`squall_engine::plan::Plan::new`] numbers
//! them) on [`wanted_workers`]`(layout)` workers, or on every free slot if there are fewer.
//! Slots are taken spread over supervisors: supervisors sorted by id, then slot 0 of each,
//! slot 1 of each, … (a supervisor's slots in index order). Tasks are dealt round-robin over
//! the chosen workers, so every worker gets ⌈n/w⌉ or ⌊n/w⌋ tasks and each component's tasks
//! (consecutive ids) land on different workers. Every task is in exactly one worker; no
//! worker is empty. With no free slot at all it is an error. It decides nothing else: which
//! slots are free, and when to (re)schedule, is nimbus's business.

use std::collections::BTreeMap;

use squall_api::TaskId;

use super::{Layout, WorkerSlot};

/// A slot nobody uses, on a live supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSlot {
    pub supervisor: String,
    /// Index into that supervisor's slots.
    pub slot: usize,
    /// The slot's port (0: the worker picks a free one).
    pub port: u16,
}

/// How many workers the layout can use: its `workers`, but never more than it has tasks
/// (a worker without a task would only cost a process), and at least one.
pub fn wanted_workers(layout: &Layout) -> usize {
    layout.workers.max(1).min(layout.task_count().max(1))
}

/// Why a layout cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No live supervisor has a free slot: the topology waits for one.
    #[error("no free worker slot on any live supervisor")]
    NoFreeSlot,
}

/// Places `layout`'s tasks on `free` slots (see the module docs).
pub fn schedule(layout: &Layout, free: &[FreeSlot]) -> Result<Vec<WorkerSlot>, ScheduleError> {
    if free.is_empty() {
        return Err(ScheduleError::NoFreeSlot);
    }
    let mut by_supervisor: BTreeMap<&str, Vec<&FreeSlot>> = BTreeMap::new();
    for slot in free {
        by_supervisor.entry(slot.supervisor.as_str()).or_default().push(slot);
    }
    for slots in by_supervisor.values_mut() {
        slots.sort_by_key(|s| s.slot);
        slots.dedup_by_key(|s| s.slot);
    }
    let count = wanted_workers(layout).min(by_supervisor.values().map(Vec::len).sum());
    let mut chosen = Vec::with_capacity(count);
    let mut round = 0;
    while chosen.len() < count {
        for slots in by_supervisor.values() {
            if let Some(s) = slots.get(round) {
                if chosen.len() < count {
                    chosen.push(WorkerSlot {
                        supervisor: s.supervisor.clone(),
                        slot: s.slot,
                        port: s.port,
                        tasks: Vec::new(),
                    });
                }
            }
        }
        round += 1;
    }
    for task in 0..layout.task_count() {
        chosen[task % count].tasks.push(task as TaskId);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ComponentLayout;

    fn layout(workers: usize, parallelism: &[usize], ackers: usize) -> Layout {
        Layout {
            workers,
            components: parallelism
                .iter()
                .enumerate()
                .map(|(i, &p)| ComponentLayout {
                    id: format!("c{i}"),
                    kind: "any".into(),
                    spout: i == 0,
                    parallelism: p,
                })
                .collect(),
            ackers,
            message_timeout_secs: 30,
            coordinator: false,
            exactly_once: false,
        }
    }

    /// `slots` free slots on each of `supervisors` (listed in a scrambled order).
    fn free(supervisors: &[&str], slots: usize) -> Vec<FreeSlot> {
        let mut out = Vec::new();
        for slot in (0..slots).rev() {
            for s in supervisors {
                out.push(FreeSlot { supervisor: s.to_string(), slot, port: 6700 + slot as u16 });
            }
        }
        out
    }

    fn assert_each_task_once(layout: &Layout, workers: &[WorkerSlot]) {
        let mut seen: Vec<TaskId> = workers.iter().flat_map(|w| w.tasks.iter().copied()).collect();
        seen.sort_unstable();
        let all: Vec<TaskId> = (0..layout.task_count() as TaskId).collect();
        assert_eq!(seen, all, "every task exactly once: {workers:?}");
    }

    #[test]
    fn tasks_are_spread_evenly_over_the_workers() {
        let l = layout(3, &[2, 4, 3], 1); // 10 tasks
        let workers = schedule(&l, &free(&["a", "b"], 4)).unwrap();
        assert_eq!(workers.len(), 3);
        let mut sizes: Vec<usize> = workers.iter().map(|w| w.tasks.len()).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![3, 3, 4]);
        // Each component's tasks are spread: no worker holds two of a component with ≤ 3 tasks.
        let mut first = 0;
        for c in &l.components {
            let tasks: Vec<TaskId> = (first..first + c.parallelism as TaskId).collect();
            first += c.parallelism as TaskId;
            for w in &workers {
                let held = w.tasks.iter().filter(|t| tasks.contains(t)).count();
                assert!(held <= c.parallelism.div_ceil(3), "{} on {w:?}", c.id);
            }
        }
        assert_each_task_once(&l, &workers);
    }

    #[test]
    fn slots_are_spread_over_supervisors() {
        let l = layout(4, &[4, 4], 0);
        let workers = schedule(&l, &free(&["sup-b", "sup-a", "sup-c"], 3)).unwrap();
        let placed: Vec<(&str, usize)> = workers.iter().map(|w| (w.supervisor.as_str(), w.slot)).collect();
        assert_eq!(placed, vec![("sup-a", 0), ("sup-b", 0), ("sup-c", 0), ("sup-a", 1)]);
        assert_eq!(workers[3].port, 6701);
        assert_each_task_once(&l, &workers);
    }

    #[test]
    fn uneven_supervisors_are_interleaved_while_they_have_slots() {
        let l = layout(4, &[8], 0);
        let mut slots = free(&["a"], 1);
        slots.extend(free(&["b"], 3));
        let workers = schedule(&l, &slots).unwrap();
        let placed: Vec<(&str, usize)> = workers.iter().map(|w| (w.supervisor.as_str(), w.slot)).collect();
        assert_eq!(placed, vec![("a", 0), ("b", 0), ("b", 1), ("b", 2)]);
        assert!(workers.iter().all(|w| w.tasks.len() == 2));
    }

    #[test]
    fn fewer_free_slots_than_workers_uses_every_free_slot() {
        let l = layout(5, &[3, 3], 1);
        let workers = schedule(&l, &free(&["a", "b"], 1)).unwrap();
        assert_eq!(workers.len(), 2);
        assert_eq!(workers.iter().map(|w| w.tasks.len()).collect::<Vec<_>>(), vec![4, 3]);
        assert_each_task_once(&l, &workers);
    }

    #[test]
    fn no_free_slot_is_an_error() {
        let err = schedule(&layout(2, &[1, 1], 1), &[]).unwrap_err();
        assert_eq!(err, ScheduleError::NoFreeSlot);
        assert!(err.to_string().contains("no free worker slot"), "{err}");
    }

    #[test]
    fn never_more_workers_than_tasks() {
        let l = layout(8, &[1, 1], 1);
        assert_eq!(wanted_workers(&l), 3);
        let workers = schedule(&l, &free(&["a", "b"], 4)).unwrap();
        assert_eq!(workers.len(), 3);
        assert!(workers.iter().all(|w| w.tasks.len() == 1));
    }

    #[test]
    fn every_task_is_assigned_exactly_once_for_many_shapes() {
        for workers in 1..7 {
            for slots in 1..4 {
                for supervisors in [&["a"][..], &["a", "b"], &["x", "b", "m"]] {
                    let l = layout(workers, &[1, 5, 2, 7], 2);
                    let placed = schedule(&l, &free(supervisors, slots)).unwrap();
                    assert_eq!(placed.len(), workers.min(slots * supervisors.len()));
                    assert_each_task_once(&l, &placed);
                    let (min, max) = placed
                        .iter()
                        .fold((usize::MAX, 0), |(lo, hi), w| (lo.min(w.tasks.len()), hi.max(w.tasks.len())));
                    assert!(max - min <= 1, "{placed:?}");
                }
            }
        }
    }
}
