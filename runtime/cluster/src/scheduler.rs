//! Storm's even scheduler, as a pure function.
//!
//! Contract: [`schedule`] places a topology's tasks (those [`Layout::numbering`] gives ids:
//! the components' tasks in plan order, then the ackers', then the coordinator; dense
//! `0..layout.task_count()` unless a rebalance left holes, which are never placed) on
//! [`wanted_workers`]`(layout)` workers, or on every free slot if there are fewer.
//! Slots are taken spread over supervisors: supervisors sorted by id, then slot 0 of each,
//! slot 1 of each, … (a supervisor's slots in index order). Tasks are dealt round-robin over
//! the chosen workers in the numbering's order, so every worker gets ⌈n/w⌉ or ⌊n/w⌋ tasks
//! and each component's tasks land on different workers. Every task is in exactly one
//! worker; no worker is empty; each worker's task ids are sorted. With no free slot at all
//! it is an error. It decides nothing else: which slots are free, and when to (re)schedule,
//! is nimbus's business.
//!
//! [`reschedule`] is the sticky form, given where the topology ran before: a task is known by
//! its component and its index in it (an acker by its index), its id coming from each
//! layout's numbering, so a parallelism change of one component leaves every other task
//! where it was. A previous worker whose slot is still
//! free (its supervisor lives and offers it, with the same port) keeps its index, its slot
//! and the tasks it held that still exist; the other tasks (new ones, and those of workers
//! on a lost slot) go to replacement workers at the lost workers' indices, or to new slots
//! taken in the spread order above (lowest id first, each to the worker with the fewest),
//! and tasks move between workers only while one holds more than ⌈n/w⌉ + 1 or fewer than
//! ⌊n/w⌋ − 1 tasks (or none): every worker stays within one task of its fair share. A task
//! that moves is a largest worker's last in the numbering's order, so spout tasks (first)
//! move last. So the loss of a supervisor moves exactly its workers' tasks, each worker's
//! set whole, to the same worker indices elsewhere.

use std::collections::{BTreeMap, HashMap};

use squall_api::TaskId;

use squall_engine::plan::{ACKER_COMPONENT, COORDINATOR_COMPONENT};

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
    for (i, (task, _)) in tasks(layout).into_iter().enumerate() {
        chosen[i % count].tasks.push(task);
    }
    for w in &mut chosen {
        w.tasks.sort_unstable();
    }
    Ok(chosen)
}

/// Where a topology ran before: its previous layout and workers.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub layout: &'a Layout,
    pub workers: &'a [WorkerSlot],
}

/// A task as a rebalance sees it: its component (or system role) and its index there.
type TaskKey<'a> = (&'a str, usize);

/// Every task of `layout`, in its numbering's order (components' tasks, then the ackers',
/// then the coordinator), as its id and its key.
fn tasks(layout: &Layout) -> Vec<(TaskId, TaskKey<'_>)> {
    let numbering = layout.numbering();
    let mut out = Vec::with_capacity(layout.task_count());
    for (c, ids) in layout.components.iter().zip(&numbering.components) {
        out.extend(ids.iter().enumerate().map(|(i, &t)| (t, (c.id.as_str(), i))));
    }
    out.extend(numbering.ackers.iter().enumerate().map(|(i, &t)| (t, (ACKER_COMPONENT, i))));
    out.extend(numbering.coordinator.map(|t| (t, (COORDINATOR_COMPONENT, 0))));
    out
}

/// Places `layout`'s tasks on `free` slots, keeping what can stay where `previous` put it
/// (see the module docs). `free` includes the slots `previous` used that are still live.
pub fn reschedule(
    layout: &Layout,
    free: &[FreeSlot],
    previous: Option<Previous>,
) -> Result<Vec<WorkerSlot>, ScheduleError> {
    let Some(previous) = previous else { return schedule(layout, free) };
    if free.is_empty() {
        return Err(ScheduleError::NoFreeSlot);
    }
    let offered = |w: &WorkerSlot| {
        free.iter().any(|f| f.supervisor == w.supervisor && f.slot == w.slot && f.port == w.port)
    };
    // Distinct free slots, in the spread order, for replacements and new workers.
    let spread: Vec<FreeSlot> = {
        let mut all = free.to_vec();
        all.sort_by(|a, b| (&a.supervisor, a.slot).cmp(&(&b.supervisor, b.slot)));
        all.dedup_by(|a, b| a.supervisor == b.supervisor && a.slot == b.slot);
        let mut by_supervisor: BTreeMap<&str, Vec<&FreeSlot>> = BTreeMap::new();
        for s in &all {
            by_supervisor.entry(s.supervisor.as_str()).or_default().push(s);
        }
        let rounds = by_supervisor.values().map(Vec::len).max().unwrap_or(0);
        (0..rounds)
            .flat_map(|r| by_supervisor.values().filter_map(move |slots| slots.get(r).copied().cloned()))
            .collect()
    };
    let count = wanted_workers(layout).min(spread.len());
    // Previous workers that keep their slot, by previous index (the first `count` of them).
    let kept: Vec<usize> =
        (0..previous.workers.len()).filter(|&i| offered(&previous.workers[i])).take(count).collect();
    // New index → previous index, for kept workers: their own index when it exists.
    let mut from: Vec<Option<usize>> = vec![None; count];
    let mut moved = Vec::new();
    for &i in &kept {
        if i < count {
            from[i] = Some(i);
        } else {
            moved.push(i);
        }
    }
    for i in moved {
        if let Some(hole) = from.iter().position(Option::is_none) {
            from[hole] = Some(i);
        }
    }
    let mut fresh = spread.iter().filter(|f| {
        !kept
            .iter()
            .any(|&i| previous.workers[i].supervisor == f.supervisor && previous.workers[i].slot == f.slot)
    });
    let mut chosen = Vec::with_capacity(count);
    for f in &from {
        let slot = match f {
            Some(i) => {
                let w = &previous.workers[*i];
                WorkerSlot { supervisor: w.supervisor.clone(), slot: w.slot, port: w.port, tasks: Vec::new() }
            }
            None => {
                let s = fresh.next().expect("count is at most the free slots");
                WorkerSlot { supervisor: s.supervisor.clone(), slot: s.slot, port: s.port, tasks: Vec::new() }
            }
        };
        chosen.push(slot);
    }
    // The new worker that a previous worker's tasks go back to: its own if kept, else the
    // replacement at its index.
    let mut home: Vec<Option<usize>> = vec![None; previous.workers.len()];
    for (new, f) in from.iter().enumerate() {
        if let Some(old) = f {
            home[*old] = Some(new);
        }
    }
    for (old, h) in home.iter_mut().enumerate() {
        if h.is_none() && old < count && from[old].is_none() && !kept.contains(&old) {
            *h = Some(old);
        }
    }
    let old_keys: HashMap<TaskId, TaskKey> = tasks(previous.layout).into_iter().collect();
    let mut was_on: HashMap<TaskKey, usize> = HashMap::new();
    for (w, slot) in previous.workers.iter().enumerate() {
        for t in &slot.tasks {
            if let Some(&key) = old_keys.get(t) {
                was_on.insert(key, w);
            }
        }
    }
    let mut orphans = Vec::new();
    for (t, key) in tasks(layout) {
        match was_on.get(&key).and_then(|&w| home[w]) {
            Some(new) => chosen[new].tasks.push(t),
            None => orphans.push(t),
        }
    }
    even_out(&mut chosen, orphans, layout.task_count());
    for w in &mut chosen {
        w.tasks.sort_unstable();
    }
    Ok(chosen)
}

/// Places the `orphans` (lowest id first) on the workers with the fewest tasks, then moves
/// tasks (a largest worker's last, to a smallest worker) only while a worker holds more than
/// ⌈n/w⌉ + 1 or fewer than ⌊n/w⌋ − 1 of the `n` tasks, or none: each worker ends within one
/// task of its fair share, and tasks that could stay mostly do.
fn even_out(workers: &mut [WorkerSlot], mut orphans: Vec<TaskId>, n: usize) {
    let count = workers.len();
    let (low, high) = (n / count, n.div_ceil(count));
    let (floor, ceiling) = (low.saturating_sub(1).max(1), high + 1);
    orphans.sort_unstable();
    let smallest = |workers: &[WorkerSlot]| (0..count).min_by_key(|&i| (workers[i].tasks.len(), i));
    for t in orphans {
        let i = smallest(workers).expect("at least one worker");
        workers[i].tasks.push(t);
    }
    loop {
        let to = smallest(workers).expect("at least one worker");
        let from =
            (0..count).max_by_key(|&i| (workers[i].tasks.len(), count - i)).expect("at least one worker");
        let (small, large) = (workers[to].tasks.len(), workers[from].tasks.len());
        if large <= small + 1 || (large <= ceiling && small >= floor.min(n)) {
            break;
        }
        let t = workers[from].tasks.pop().expect("the largest worker has tasks");
        workers[to].tasks.push(t);
    }
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
            numbering: None,
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
        let mut all: Vec<TaskId> = layout.numbering().all().collect();
        all.sort_unstable();
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

    /// Where each task key sits: key → (supervisor, slot, worker index).
    fn placement(l: &Layout, workers: &[WorkerSlot]) -> BTreeMap<(String, usize), (String, usize, usize)> {
        let keys: HashMap<TaskId, TaskKey> = tasks(l).into_iter().collect();
        let mut out = BTreeMap::new();
        for (i, w) in workers.iter().enumerate() {
            for t in &w.tasks {
                let (c, n) = keys[t];
                out.insert((c.to_string(), n), (w.supervisor.clone(), w.slot, i));
            }
        }
        out
    }

    /// Every worker within one task of its fair share, none empty.
    fn assert_even(workers: &[WorkerSlot]) {
        let n: usize = workers.iter().map(|w| w.tasks.len()).sum();
        let (low, high) = (n / workers.len(), n.div_ceil(workers.len()));
        for w in workers {
            assert!(
                !w.tasks.is_empty() && w.tasks.len() + 1 >= low && w.tasks.len() <= high + 1,
                "{workers:?}"
            );
        }
    }

    #[test]
    fn nothing_moves_when_nothing_changed() {
        let l = layout(3, &[2, 4, 3], 1);
        let slots = free(&["a", "b"], 2);
        let before = schedule(&l, &slots).unwrap();
        let after = reschedule(&l, &slots, Some(Previous { layout: &l, workers: &before })).unwrap();
        assert_eq!(after, before);
    }

    #[test]
    fn a_lost_supervisor_moves_only_its_workers_tasks_to_the_same_indices() {
        let l = layout(4, &[2, 4, 3], 2);
        let before = schedule(&l, &free(&["a", "b"], 2)).unwrap();
        // sup-a is gone; sup-c offers two slots.
        let mut slots = free(&["b"], 2);
        slots.extend(free(&["c"], 2));
        let after = reschedule(&l, &slots, Some(Previous { layout: &l, workers: &before })).unwrap();
        assert_eq!(after.len(), before.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a.tasks, b.tasks, "every worker index keeps its tasks");
            if b.supervisor == "b" {
                assert_eq!(a, b, "the workers of the live supervisor stay put");
            } else {
                assert_eq!(a.supervisor, "c", "the lost supervisor's workers move: {after:?}");
            }
        }
        assert_each_task_once(&l, &after);
    }

    #[test]
    fn a_parallelism_change_moves_only_that_components_tasks() {
        let before_layout = layout(3, &[2, 4, 3], 1);
        let slots = free(&["a", "b"], 2);
        let before = schedule(&before_layout, &slots).unwrap();
        let was = placement(&before_layout, &before);
        for p in [1, 2, 6, 9] {
            let mut l = before_layout.clone();
            l.components[1].parallelism = p;
            let after =
                reschedule(&l, &slots, Some(Previous { layout: &before_layout, workers: &before })).unwrap();
            assert_each_task_once(&l, &after);
            assert_even(&after);
            let is = placement(&l, &after);
            let mut c1_moved = 0;
            for (key, at) in &is {
                match was.get(key) {
                    Some(w) if key.0 != "c1" => assert_eq!(at, w, "{key:?} moved with c1 at {p}"),
                    Some(w) => c1_moved += usize::from(at != w),
                    None => assert_eq!(key.0, "c1", "only c1 has new tasks"),
                }
            }
            assert_eq!(c1_moved, 0, "c1's remaining tasks stay where they were: {after:?}");
            let slots_before: Vec<_> = before.iter().map(|w| (&w.supervisor, w.slot)).collect();
            let slots_after: Vec<_> = after.iter().map(|w| (&w.supervisor, w.slot)).collect();
            assert_eq!(slots_after, slots_before, "every worker keeps its slot");
        }
    }

    /// `l` with component `c` at `p` tasks, renumbered as a rebalance does.
    fn resized(l: &Layout, c: usize, p: usize) -> Layout {
        let spouts = l.components.iter().filter(|c| c.spout).count();
        let mut out = l.clone();
        out.numbering = l.numbering().resized(spouts, c, p);
        out.components[c].parallelism = p;
        out
    }

    #[test]
    fn tasks_are_placed_by_their_numbered_ids_and_holes_never() {
        // s: [0, 1], c1: [2, 3, 4], acker [5]; c1 grows to 4 (id 6), then shrinks to 2.
        let l = layout(3, &[2, 3], 1);
        let slots = free(&["a", "b"], 2);
        let before = schedule(&l, &slots).unwrap();
        let grown = resized(&l, 1, 4);
        assert_eq!(grown.numbering().components[1], [2, 3, 4, 6]);
        let after = reschedule(&grown, &slots, Some(Previous { layout: &l, workers: &before })).unwrap();
        assert_each_task_once(&grown, &after);
        for (b, a) in before.iter().zip(&after) {
            assert!(b.tasks.iter().all(|t| a.tasks.contains(t)), "no task moved: {before:?} → {after:?}");
        }
        let shrunk = resized(&grown, 1, 2);
        assert_eq!(shrunk.id_space(), 6, "id 4 is a hole, 6 is gone");
        let last = reschedule(&shrunk, &slots, Some(Previous { layout: &grown, workers: &after })).unwrap();
        assert_each_task_once(&shrunk, &last);
        assert!(last.iter().all(|w| !w.tasks.contains(&4) && !w.tasks.contains(&6)), "holes: {last:?}");
        // Scheduled afresh, the holes stay holes too.
        let fresh = schedule(&shrunk, &slots).unwrap();
        assert_each_task_once(&shrunk, &fresh);
        assert_even(&fresh);
    }

    #[test]
    fn more_workers_take_new_slots_and_fewer_keep_the_first_ones() {
        let l3 = layout(3, &[3, 3], 0);
        let slots = free(&["a", "b"], 3);
        let before = schedule(&l3, &slots).unwrap();
        let l5 = layout(5, &[3, 3], 0);
        let grown = reschedule(&l5, &slots, Some(Previous { layout: &l3, workers: &before })).unwrap();
        assert_eq!(grown.len(), 5);
        assert_eq!(
            &grown[..3].iter().map(|w| (&w.supervisor, w.slot)).collect::<Vec<_>>(),
            &before.iter().map(|w| (&w.supervisor, w.slot)).collect::<Vec<_>>()
        );
        assert_even(&grown);
        assert_each_task_once(&l5, &grown);
        let l2 = layout(2, &[3, 3], 0);
        let shrunk = reschedule(&l2, &slots, Some(Previous { layout: &l3, workers: &before })).unwrap();
        assert_eq!(shrunk.len(), 2);
        assert_eq!((&shrunk[0].supervisor, shrunk[0].slot), (&before[0].supervisor, before[0].slot));
        assert!(before[0].tasks.iter().all(|t| shrunk[0].tasks.contains(t)), "{shrunk:?}");
        assert_each_task_once(&l2, &shrunk);
    }

    #[test]
    fn rescheduling_is_even_and_complete_for_many_shapes() {
        for workers in 1..6 {
            for p in [1, 3, 8] {
                let before_layout = layout(3, &[2, 5, 3], 1);
                let before = schedule(&before_layout, &free(&["a", "b", "c"], 2)).unwrap();
                let mut l = layout(workers, &[2, 5, 3], 1);
                l.components[1].parallelism = p;
                for slots in [free(&["a", "b", "c"], 2), free(&["b", "d"], 2), free(&["a"], 1)] {
                    let after =
                        reschedule(&l, &slots, Some(Previous { layout: &before_layout, workers: &before }))
                            .unwrap();
                    assert_eq!(after.len(), wanted_workers(&l).min(slots.len()));
                    assert_each_task_once(&l, &after);
                    assert_even(&after);
                }
            }
        }
    }
}
