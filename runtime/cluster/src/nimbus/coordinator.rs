//! Nimbus's coordinator: the pure core that decides where topologies run and when their
//! pending kills and rebalances happen.
//!
//! Contract: a [`Coordinator`] holds what nimbus knows (topologies, supervisors, worker
//! heartbeats) and does no I/O: every method is given the time (`now`, monotonic, for
//! supervisor liveness; `now_ms`, wall clock, for stored deadlines), and every change to a
//! stored topology goes through a [`Persist`] before the coordinator applies it (a change
//! that cannot be persisted is not applied). [`Coordinator::reconcile`] acts on due
//! deadlines (a killing topology is removed, a rebalancing one gets its new layout and a new
//! assignment, which keeps every task it can where it was and keeps running the workers that
//! [`kept_workers`] says may go on: those whose tasks do not move, and in a live rebalance
//! those whose slot and spout tasks stay), then reschedules (new version) every topology with a worker on a dead or
//! unknown supervisor or on a slot its supervisor no longer offers, schedules topologies
//! without an assignment when a slot is free, and grows topologies short of workers when a
//! slot is free and all their supervisors have been heard from. Each condition is false
//! right after its action, so nothing is rescheduled in a loop. The HTTP handlers in
//! `api.rs` call it under nimbus's one mutex.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use squall_api::TaskId;
use squall_engine::metrics::TaskFigures;
use squall_engine::plan::Numbering;

use crate::scheduler::{self, FreeSlot};
use crate::state::{StateError, TopologyRecord};
use crate::{Assignment, Layout, RebalanceRequest, Status};

/// A supervisor as nimbus knows it.
pub(super) struct Supervisor {
    pub(super) host: String,
    /// Its slots' ports; `None` until it heartbeats to this nimbus (known only from a stored
    /// assignment: in grace).
    pub(super) slots: Option<Vec<u16>>,
    pub(super) last_seen: Instant,
}

/// A worker's latest heartbeat.
pub(super) struct WorkerBeat {
    pub(super) addr: SocketAddr,
    /// Its tasks' figures since the assignment started: what the worker reported, plus what
    /// its earlier runs counted if it was restarted.
    pub(super) tasks: Vec<TaskFigures>,
    /// What the worker itself reported last.
    reported: Vec<TaskFigures>,
    /// By task: what earlier runs of the worker counted.
    carried: HashMap<squall_api::TaskId, TaskFigures>,
    pub(super) last_seen: Instant,
    /// How often the worker was seen starting again (its counters went back).
    pub(super) restarts: u64,
    /// Its recent `tasks`, by the moment the worker read them.
    pub(super) moments: super::moments::Moments,
}

/// A change to the stored topologies, made durable (by the caller's `persist`) before the
/// coordinator acts on it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change<'a> {
    /// Store this record (a new one, or a new state of one).
    Save(&'a TopologyRecord),
    /// Forget the topology of this name.
    Remove(&'a str),
}

/// Makes a [`Change`] durable; an error leaves the coordinator's state as it was.
pub(super) type Persist<'p> = dyn FnMut(Change<'_>) -> Result<(), StateError> + 'p;

/// The furthest a kill's or rebalance's deadline may lie ahead: the longest wait, which
/// defaults to the message timeout (at most a year).
pub(super) const MAX_DEADLINE_MS: u64 = squall_engine::topology::MAX_SECONDS as u64 * 1000;

/// What nimbus knows of topologies, supervisors and workers, and the decisions it takes on
/// them. No I/O: time comes in as `now` (monotonic) and `now_ms` (wall clock, for stored
/// deadlines), and stored changes go out through a [`Persist`].
pub(super) struct Coordinator {
    /// A supervisor is alive while heard from within this long.
    pub(super) supervisor_timeout: Duration,
    pub(super) topologies: BTreeMap<String, TopologyRecord>,
    pub(super) supervisors: BTreeMap<String, Supervisor>,
    /// (topology, version, worker) → its latest heartbeat; current versions only.
    pub(super) workers: HashMap<(String, u64, usize), WorkerBeat>,
}

impl Coordinator {
    /// The coordinator of the stored `records`: every supervisor they name is known, in grace
    /// (as if heard from at `now`, its slots unknown) until it heartbeats.
    pub(super) fn new(
        records: Vec<TopologyRecord>,
        supervisor_timeout: Duration,
        now: Instant,
    ) -> Coordinator {
        let mut supervisors = BTreeMap::new();
        for a in records.iter().filter_map(|r| r.assignment.as_ref()) {
            for w in &a.workers {
                supervisors.entry(w.supervisor.clone()).or_insert_with(|| Supervisor {
                    host: String::new(),
                    slots: None,
                    last_seen: now,
                });
            }
        }
        Coordinator {
            supervisor_timeout,
            topologies: records.into_iter().map(|r| (r.name.clone(), r)).collect(),
            supervisors,
            workers: HashMap::new(),
        }
    }

    pub(super) fn alive(&self, s: &Supervisor, now: Instant) -> bool {
        now.saturating_duration_since(s.last_seen) < self.supervisor_timeout
    }

    /// Persists `record` and makes it the current one. The heartbeats of workers the new
    /// assignment keeps running are carried over to it (their figures and addresses go on).
    pub(super) fn commit(&mut self, record: TopologyRecord, persist: &mut Persist) -> Result<(), StateError> {
        persist(Change::Save(&record))?;
        let before = self.topologies.get(&record.name).and_then(|r| r.assignment.as_ref());
        if let (Some(old), Some(new)) = (before, record.assignment.as_ref()) {
            if old.version != new.version {
                for worker in 0..new.workers.len().min(old.workers.len()) {
                    if new.started_version(worker) != old.started_version(worker) {
                        continue;
                    }
                    let key = (record.name.clone(), old.version, worker);
                    if let Some(beat) = self.workers.remove(&key) {
                        self.workers.insert((record.name.clone(), new.version, worker), beat);
                    }
                }
            }
        }
        self.topologies.insert(record.name.clone(), record);
        self.forget_stale_workers();
        Ok(())
    }

    /// Removes the topology `name` durably.
    pub(super) fn remove(&mut self, name: &str, persist: &mut Persist) -> Result<(), StateError> {
        persist(Change::Remove(name))?;
        self.topologies.remove(name);
        self.forget_stale_workers();
        Ok(())
    }

    /// Takes a worker's heartbeat: its figures replace the last ones, and a task whose
    /// counters went back (the worker was restarted) keeps what it counted before, so a
    /// component's totals never go back while its assignment lasts. `moment` is when the
    /// worker read them (see [`super::moments`]).
    pub(super) fn heartbeat(
        &mut self,
        key: (String, u64, usize),
        addr: SocketAddr,
        reported: Vec<TaskFigures>,
        moment: u64,
        now: Instant,
    ) {
        let beat = self.workers.entry(key).or_insert_with(|| WorkerBeat {
            addr,
            tasks: Vec::new(),
            reported: Vec::new(),
            carried: HashMap::new(),
            last_seen: now,
            restarts: 0,
            moments: Default::default(),
        });
        let mut restarted = false;
        for f in &reported {
            if let Some(before) = beat.reported.iter().find(|b| b.task == f.task) {
                if f.restarted_since(before) {
                    restarted = true;
                    let carried = beat.carried.entry(f.task).or_default();
                    *carried = before.plus(carried);
                }
            }
        }
        beat.restarts += u64::from(restarted);
        beat.tasks = reported
            .iter()
            .map(|f| match beat.carried.get(&f.task) {
                Some(carried) => f.plus(carried),
                None => f.clone(),
            })
            .collect();
        beat.moments.push(moment, &beat.tasks);
        beat.reported = reported;
        beat.addr = addr;
        beat.last_seen = now;
    }

    /// Drops worker heartbeats of topologies or versions that are gone.
    fn forget_stale_workers(&mut self) {
        let topologies = &self.topologies;
        self.workers.retain(|(t, v, _), _| topologies.get(t).is_some_and(|r| r.version() == *v));
    }

    /// Slots of live supervisors that no current assignment uses, except that those of
    /// `except`'s count as free.
    fn free_slots(&self, except: Option<&str>, now: Instant) -> Vec<FreeSlot> {
        let used: HashSet<(&str, usize)> = self
            .topologies
            .values()
            .filter(|r| Some(r.name.as_str()) != except)
            .filter_map(|r| r.assignment.as_ref())
            .flat_map(|a| a.workers.iter().map(|w| (w.supervisor.as_str(), w.slot)))
            .collect();
        let mut free = Vec::new();
        for (id, s) in &self.supervisors {
            let Some(slots) = s.slots.as_ref().filter(|_| self.alive(s, now)) else { continue };
            for (slot, &port) in slots.iter().enumerate() {
                if !used.contains(&(id.as_str(), slot)) {
                    free.push(FreeSlot { supervisor: id.clone(), slot, port });
                }
            }
        }
        free
    }

    /// Gives `record` a new assignment (a new version) over the free slots, or none if there
    /// is no free slot. Tasks stay where the current assignment has them when they can (see
    /// [`scheduler::reschedule`]), and workers whose slot and tasks stay (under an unchanged
    /// routing), or in a live rebalance whose slot and spout tasks stay (under a new routing),
    /// keep running (see [`kept_workers`]); with exactly-once state every worker starts again.
    pub(super) fn reassign(&self, record: &mut TopologyRecord, now: Instant, now_ms: u64) {
        let free = self.free_slots(Some(&record.name), now);
        let previous = record.assignment.as_ref();
        let before = previous.map(|a| scheduler::Previous { layout: &a.layout, workers: &a.workers });
        match scheduler::reschedule(&record.layout, &free, before) {
            Ok(workers) => {
                let mut next = Assignment {
                    topology: record.name.clone(),
                    version: record.next_version,
                    submitted_ms: record.submitted_ms,
                    artifact: record.artifact.clone(),
                    resources: record.resources.clone(),
                    text: record.text.clone(),
                    layout: record.layout.clone(),
                    workers,
                    routing: 0,
                    started: Vec::new(),
                };
                if let Some(previous) = previous.filter(|_| !record.layout.exactly_once) {
                    kept_workers(previous, &mut next);
                }
                record.assignment = Some(next);
                record.next_version += 1;
                record.assigned_ms = now_ms;
            }
            Err(_) => record.assignment = None,
        }
    }

    /// Why `record` must be (re)scheduled now, if it must.
    fn needs_scheduling(&self, record: &TopologyRecord, now: Instant) -> Option<String> {
        if record.status == Status::Killing {
            return None;
        }
        let Some(a) = &record.assignment else {
            let free = record.status != Status::Rebalancing && !self.free_slots(None, now).is_empty();
            return free.then(|| "a worker slot is free".to_string());
        };
        for w in &a.workers {
            match self.supervisors.get(&w.supervisor) {
                None => return Some(format!("supervisor {} is unknown", w.supervisor)),
                Some(s) if !self.alive(s, now) => {
                    return Some(format!("supervisor {} stopped heartbeating", w.supervisor))
                }
                Some(Supervisor { slots: Some(slots), .. }) if slots.get(w.slot) != Some(&w.port) => {
                    return Some(format!("supervisor {} no longer offers slot {}", w.supervisor, w.slot))
                }
                Some(_) => {}
            }
        }
        let short = a.workers.len() < scheduler::wanted_workers(&record.layout);
        let all_heard =
            a.workers.iter().all(|w| self.supervisors.get(&w.supervisor).is_some_and(|s| s.slots.is_some()));
        (record.status != Status::Rebalancing && short && all_heard && !self.free_slots(None, now).is_empty())
            .then(|| {
                format!("it has {} of {} workers and a slot is free", a.workers.len(), record.layout.workers)
            })
    }

    /// Applies `record`'s pending rebalance and gives it a new assignment.
    pub(super) fn finish_rebalance(&self, record: &mut TopologyRecord, now: Instant, now_ms: u64) {
        if let Some(request) = record.rebalance.take() {
            apply_rebalance(&mut record.layout, &request);
        }
        record.status = record.resume_status.take().unwrap_or(Status::Active);
        record.deadline_ms = None;
        self.reassign(record, now, now_ms);
    }

    /// Acts on due deadlines and (re)schedules what needs it (see the module docs). A
    /// deadline further away than [`MAX_DEADLINE_MS`] (a stored one from before waits were
    /// bounded) is due at once, so no topology stays Killing or Rebalancing for ever.
    pub(super) fn reconcile(&mut self, now: Instant, now_ms: u64, persist: &mut Persist) {
        let due: Vec<String> = self
            .topologies
            .values()
            .filter(|r| r.deadline_ms.is_some_and(|d| d <= now_ms || d - now_ms > MAX_DEADLINE_MS))
            .map(|r| r.name.clone())
            .collect();
        for name in due {
            let Some(mut record) = self.topologies.get(&name).cloned() else { continue };
            let done = if record.status == Status::Killing {
                self.remove(&name, persist).map(|()| tracing::info!("topology {name} killed and removed"))
            } else {
                if record.status == Status::Rebalancing {
                    self.finish_rebalance(&mut record, now, now_ms);
                    tracing::info!("topology {name} rebalanced: {}", describe(&record));
                } else {
                    record.deadline_ms = None;
                }
                self.commit(record, persist)
            };
            if let Err(e) = done {
                tracing::error!("topology {name}: {e}");
            }
        }
        let names: Vec<String> = self.topologies.keys().cloned().collect();
        for name in names {
            let Some(record) = self.topologies.get(&name) else { continue };
            let Some(reason) = self.needs_scheduling(record, now) else { continue };
            let mut next = record.clone();
            self.reassign(&mut next, now, now_ms);
            if next.assignment.is_none() && record.assignment.is_none() {
                continue;
            }
            tracing::info!("topology {name} rescheduled ({reason}): {}", describe(&next));
            if let Err(e) = self.commit(next, persist) {
                tracing::error!("topology {name}: {e}");
            }
        }
    }
}

/// `version 3: 2 workers on sup-a, sup-b` or `no assignment (no free worker slot)`.
pub(super) fn describe(record: &TopologyRecord) -> String {
    match &record.assignment {
        Some(a) => {
            let on: Vec<String> = a.workers.iter().map(|w| format!("{}#{}", w.supervisor, w.slot)).collect();
            let kept = (0..a.workers.len()).filter(|&i| a.started_version(i) != a.version).count();
            let kept = if kept > 0 { format!(" ({kept} kept running)") } else { String::new() };
            format!("version {}: {} workers on {}{kept}", a.version, a.workers.len(), on.join(", "))
        }
        None => "no assignment (no free worker slot)".to_string(),
    }
}

/// Marks the workers of `next` that go on running from `previous`.
///
/// When the routing is the same (the same layout but for its worker count, the same number
/// of workers, each index with the same tasks), `next` speaks `previous`'s routing version,
/// and a worker on the same slot (supervisor, slot, port) keeps the version it was started
/// under. Otherwise, in a live rebalance (the layout changed in nothing but its worker
/// count and its components' parallelism, every task kept its id, and it has no checkpoint
/// coordinator and no exactly-once state), `next` speaks a new routing (its own version),
/// and worker `i` keeps the version it was started under when `previous` had a worker `i`
/// on the same slot: its tasks may differ, the worker starts and retires tasks live. Every
/// other worker is started under `next`'s version; any other change starts every worker
/// again.
pub(super) fn kept_workers(previous: &Assignment, next: &mut Assignment) {
    let (before, after) = (&previous.layout, &next.layout);
    let same_layout = Layout { workers: 0, numbering: None, ..before.clone() }
        == Layout { workers: 0, numbering: None, ..after.clone() }
        && before.numbering() == after.numbering();
    let sorted = |w: &crate::WorkerSlot| {
        let mut tasks = w.tasks.clone();
        tasks.sort_unstable();
        tasks
    };
    let same_tasks = previous.workers.len() == next.workers.len()
        && previous.workers.iter().zip(&next.workers).all(|(a, b)| sorted(a) == sorted(b));
    let same_routing = same_layout && same_tasks;
    let live = !before.coordinator
        && !after.coordinator
        && !before.exactly_once
        && !after.exactly_once
        && but_parallelism(before) == but_parallelism(after)
        && ids_kept(&before.numbering(), &after.numbering());
    if !(same_routing || live) {
        return;
    }
    next.routing = if same_routing { previous.routing_version() } else { 0 };
    next.started = (0..next.workers.len())
        .map(|i| {
            let b = &next.workers[i];
            let kept = previous
                .workers
                .get(i)
                .is_some_and(|a| (&a.supervisor, a.slot, a.port) == (&b.supervisor, b.slot, b.port));
            if kept {
                previous.started_version(i)
            } else {
                next.version
            }
        })
        .collect();
}

/// `layout` without what a live rebalance may change: its worker count, its components'
/// parallelism and its numbering.
fn but_parallelism(layout: &Layout) -> Layout {
    let mut out = Layout { workers: 0, numbering: None, ..layout.clone() };
    for c in out.components.iter_mut() {
        c.parallelism = 0;
    }
    out
}

/// Whether every task id in use in both numberings names the same task (component or
/// system role, and index) in each: a resized component's new ids are fresh, not another
/// task's (not so when a spout's growth renumbered everything).
fn ids_kept(before: &Numbering, after: &Numbering) -> bool {
    let keys = |n: &Numbering| -> HashMap<TaskId, (usize, usize)> {
        let components = n.components.iter().enumerate();
        let mut keys: HashMap<TaskId, (usize, usize)> =
            components.flat_map(|(c, ids)| ids.iter().enumerate().map(move |(i, &t)| (t, (c, i)))).collect();
        let system = n.components.len();
        keys.extend(n.ackers.iter().enumerate().map(|(i, &t)| (t, (system, i))));
        keys.extend(n.coordinator.iter().map(|&t| (t, (system + 1, 0))));
        keys
    };
    let (before, after) = (keys(before), keys(after));
    before.iter().all(|(t, key)| after.get(t).is_none_or(|k| k == key))
}

/// Applies a rebalance request to a layout: a component's new parallelism renumbers its
/// tasks as [`squall_engine::plan::Numbering::resized`] says (its other tasks and every
/// other component's keep their ids, unless a spout's new ids would pass 65536). The
/// numbering is stored only while it is not dense.
pub(super) fn apply_rebalance(layout: &mut Layout, request: &RebalanceRequest) {
    if let Some(workers) = request.workers {
        layout.workers = workers;
    }
    let spouts = layout.components.iter().filter(|c| c.spout).count();
    for (id, &parallelism) in &request.parallelism {
        let Some(index) = layout.components.iter().position(|c| &c.id == id) else { continue };
        if layout.components[index].parallelism == parallelism {
            continue;
        }
        let numbering = layout.numbering().resized(spouts, index, parallelism);
        layout.components[index].parallelism = parallelism;
        layout.numbering = numbering;
        // A numbering that does not fit (ids past the bound) reads as dense: store what reads.
        let effective = layout.numbering();
        layout.numbering = (effective != layout.dense_numbering()).then_some(effective);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ComponentLayout;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn record(name: &str, workers: usize) -> TopologyRecord {
        record_of(name, workers, &[("s", true, 2)])
    }

    /// A topology of `components` (id, spout, parallelism), spouts first, with one acker.
    fn record_of(name: &str, workers: usize, components: &[(&str, bool, usize)]) -> TopologyRecord {
        let layout = Layout {
            workers,
            components: components
                .iter()
                .map(|&(id, spout, parallelism)| ComponentLayout {
                    id: id.into(),
                    kind: "any".into(),
                    spout,
                    parallelism,
                })
                .collect(),
            ackers: 1,
            message_timeout_secs: 30,
            coordinator: false,
            exactly_once: false,
            numbering: None,
        };
        TopologyRecord {
            name: name.into(),
            text: String::new(),
            layout,
            artifact: "a".repeat(64),
            resources: None,
            status: Status::Active,
            submitted_ms: 0,
            assignment: None,
            assigned_ms: 0,
            next_version: 1,
            deadline_ms: None,
            rebalance: None,
            resume_status: None,
        }
    }

    fn heard(core: &mut Coordinator, id: &str, slots: usize, now: Instant) {
        let slots = Some((0..slots).map(|s| 7000 + s as u16).collect());
        core.supervisors.insert(id.into(), Supervisor { host: "127.0.0.1".into(), slots, last_seen: now });
    }

    fn supervisors_of(core: &Coordinator, name: &str) -> Vec<String> {
        let a = core.topologies[name].assignment.as_ref().expect("assigned");
        a.workers.iter().map(|w| w.supervisor.clone()).collect()
    }

    /// A persist that stores nothing and records what it was given.
    fn log(saved: &mut Vec<String>) -> impl FnMut(Change<'_>) -> Result<(), StateError> + '_ {
        move |c| {
            saved.push(match c {
                Change::Save(r) => format!("save {} v{}", r.name, r.version()),
                Change::Remove(name) => format!("remove {name}"),
            });
            Ok(())
        }
    }

    #[test]
    fn a_topology_without_slots_is_scheduled_once_a_slot_appears() {
        let t0 = Instant::now();
        let mut core = Coordinator::new(vec![record("t", 1)], TIMEOUT, t0);
        let mut saved = Vec::new();
        core.reconcile(t0, 1_000, &mut log(&mut saved));
        assert!(saved.is_empty() && core.topologies["t"].assignment.is_none());

        heard(&mut core, "sup-a", 1, t0);
        core.reconcile(t0, 1_000, &mut log(&mut saved));
        assert_eq!(saved, ["save t v1"]);
        assert_eq!(supervisors_of(&core, "t"), ["sup-a"]);
        assert_eq!(core.topologies["t"].assigned_ms, 1_000);
        core.reconcile(t0, 2_000, &mut log(&mut saved));
        assert_eq!(saved.len(), 1, "nothing is rescheduled in a loop");
    }

    #[test]
    fn the_work_of_a_lost_supervisor_moves_to_a_live_one() {
        let t0 = Instant::now();
        let mut core = Coordinator::new(vec![record("t", 1)], TIMEOUT, t0);
        heard(&mut core, "sup-a", 1, t0);
        let mut saved = Vec::new();
        core.reconcile(t0, 0, &mut log(&mut saved));
        assert_eq!(supervisors_of(&core, "t"), ["sup-a"]);

        let later = t0 + TIMEOUT;
        heard(&mut core, "sup-b", 1, later);
        core.reconcile(later, 0, &mut log(&mut saved));
        assert_eq!(saved, ["save t v1", "save t v2"]);
        assert_eq!(supervisors_of(&core, "t"), ["sup-b"]);
    }

    #[test]
    fn due_kills_remove_and_due_rebalances_apply_their_layout() {
        let t0 = Instant::now();
        let mut killing = record("k", 1);
        (killing.status, killing.deadline_ms) = (Status::Killing, Some(5_000));
        let mut rebalancing = record("r", 1);
        rebalancing.status = Status::Rebalancing;
        rebalancing.deadline_ms = Some(5_000);
        rebalancing.resume_status = Some(Status::Inactive);
        rebalancing.rebalance = Some(RebalanceRequest { workers: Some(2), ..RebalanceRequest::default() });
        let mut core = Coordinator::new(vec![killing, rebalancing], TIMEOUT, t0);
        heard(&mut core, "sup-a", 2, t0);

        let mut saved = Vec::new();
        core.reconcile(t0, 4_999, &mut log(&mut saved));
        assert!(saved.is_empty(), "{saved:?}");
        core.reconcile(t0, 5_000, &mut log(&mut saved));
        assert_eq!(saved, ["remove k", "save r v1"]);
        let r = &core.topologies["r"];
        assert!(!core.topologies.contains_key("k"));
        assert_eq!((r.status, r.layout.workers, r.deadline_ms), (Status::Inactive, 2, None));
        assert_eq!(supervisors_of(&core, "r"), ["sup-a", "sup-a"]);
    }

    #[test]
    fn a_rebalance_deadline_past_the_longest_wait_is_due_at_once() {
        let t0 = Instant::now();
        let mut rebalancing = record("r", 1);
        rebalancing.status = Status::Rebalancing;
        rebalancing.deadline_ms = Some(u64::MAX);
        rebalancing.resume_status = Some(Status::Active);
        rebalancing.rebalance = Some(RebalanceRequest { workers: Some(2), ..RebalanceRequest::default() });
        let mut within = record("w", 1);
        within.status = Status::Rebalancing;
        within.deadline_ms = Some(1_000 + MAX_DEADLINE_MS);
        within.resume_status = Some(Status::Active);
        let mut core = Coordinator::new(vec![rebalancing, within], TIMEOUT, t0);
        heard(&mut core, "sup-a", 4, t0);
        let mut saved = Vec::new();
        core.reconcile(t0, 1_000, &mut log(&mut saved));
        let r = &core.topologies["r"];
        assert_eq!((r.status, r.layout.workers, r.deadline_ms), (Status::Active, 2, None));
        assert_eq!(core.topologies["w"].status, Status::Rebalancing, "a wait within the bound is kept");
    }

    fn disk_full() -> StateError {
        StateError::Write { path: "t.json".into(), source: std::io::Error::other("disk full") }
    }

    #[test]
    fn a_change_that_cannot_be_persisted_is_not_applied() {
        let t0 = Instant::now();
        let mut core = Coordinator::new(vec![record("t", 1)], TIMEOUT, t0);
        heard(&mut core, "sup-a", 1, t0);
        core.reconcile(t0, 0, &mut |_| Err(disk_full()));
        assert!(core.topologies["t"].assignment.is_none());
        let err = core.remove("t", &mut |_| Err(disk_full())).unwrap_err();
        assert_eq!(err.to_string(), disk_full().to_string());
        assert!(core.topologies.contains_key("t"));
    }

    #[test]
    fn a_restarted_workers_totals_carry_on_from_what_it_counted_before() {
        let t0 = Instant::now();
        let mut core = Coordinator::new(vec![record("t", 1)], TIMEOUT, t0);
        let key = ("t".to_string(), 1, 0);
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let figures = |emitted| vec![TaskFigures { task: 0, emitted, ..Default::default() }];
        core.heartbeat(key.clone(), addr, figures(500), 0, t0);
        core.heartbeat(key.clone(), addr, figures(800), 0, t0);
        // Restarted: its own counter starts again.
        core.heartbeat(key.clone(), addr, figures(30), 0, t0);
        core.heartbeat(key.clone(), addr, figures(90), 0, t0);
        let beat = &core.workers[&key];
        assert_eq!(beat.tasks[0].emitted, 890, "800 before the restart, 90 since");
        assert_eq!(beat.restarts, 1);
    }

    #[test]
    fn a_lost_supervisors_replacements_start_anew_and_the_other_workers_keep_running() {
        let t0 = Instant::now();
        let mut core = Coordinator::new(vec![record("t", 2)], TIMEOUT, t0);
        heard(&mut core, "sup-a", 1, t0);
        heard(&mut core, "sup-b", 1, t0);
        let mut saved = Vec::new();
        core.reconcile(t0, 0, &mut log(&mut saved));
        assert_eq!(supervisors_of(&core, "t"), ["sup-a", "sup-b"]);
        let addr: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let figures = vec![TaskFigures { task: 1, emitted: 42, ..Default::default() }];
        core.heartbeat(("t".into(), 1, 1), addr, figures, 0, t0);

        // sup-a goes silent; sup-c offers a slot.
        let later = t0 + TIMEOUT;
        heard(&mut core, "sup-b", 1, later);
        heard(&mut core, "sup-c", 1, later);
        core.reconcile(later, 0, &mut log(&mut saved));
        assert_eq!(supervisors_of(&core, "t"), ["sup-c", "sup-b"]);
        let a = core.topologies["t"].assignment.clone().unwrap();
        assert_eq!((a.version, a.routing_version()), (2, 1), "a new version over the same routing");
        assert_eq!((a.started_version(0), a.started_version(1)), (2, 1), "sup-b's worker runs on");
        let beat = &core.workers[&("t".to_string(), 2, 1)];
        assert_eq!((beat.addr, beat.tasks[0].emitted), (addr, 42), "its heartbeat carries over");
    }

    #[test]
    fn a_changed_spout_or_acker_layout_or_exactly_once_state_starts_every_worker_again() {
        let t0 = Instant::now();
        let mut core = Coordinator::new(vec![record("t", 2)], TIMEOUT, t0);
        heard(&mut core, "sup-a", 2, t0);
        let mut saved = Vec::new();
        core.reconcile(t0, 0, &mut log(&mut saved));
        let mut r = core.topologies["t"].clone();
        r.layout.components[0].parallelism = 3;
        core.reassign(&mut r, t0, 0);
        let a = r.assignment.as_ref().unwrap();
        assert_eq!(a.routing_version(), 2, "task ids moved: a new routing");
        assert!((0..a.workers.len()).all(|w| a.started_version(w) == 2));
        let mut r = core.topologies["t"].clone();
        r.layout.ackers = 2;
        core.reassign(&mut r, t0, 0);
        let a = r.assignment.as_ref().unwrap();
        assert_eq!(a.routing_version(), 2, "an acker more: a new routing");
        assert!((0..a.workers.len()).all(|w| a.started_version(w) == 2), "{a:?}");

        let mut r = core.topologies["t"].clone();
        core.reassign(&mut r, t0, 0);
        let a = r.assignment.as_ref().unwrap();
        assert_eq!((a.routing_version(), a.started_version(0), a.started_version(1)), (1, 1, 1));
        r.layout.exactly_once = true;
        core.reassign(&mut r, t0, 0);
        let a = r.assignment.as_ref().unwrap();
        assert_eq!((a.routing_version(), a.started_version(0)), (a.version, a.version));
    }

    /// `name` assigned on `slots` slots of sup-a, then rebalanced at once by `request`: the
    /// assignments before and after.
    fn rebalanced(
        record: TopologyRecord,
        slots: usize,
        request: RebalanceRequest,
    ) -> (Assignment, TopologyRecord) {
        let t0 = Instant::now();
        let name = record.name.clone();
        let mut core = Coordinator::new(vec![record], TIMEOUT, t0);
        heard(&mut core, "sup-a", slots, t0);
        core.reconcile(t0, 0, &mut |_| Ok(()));
        let before = core.topologies[&name].assignment.clone().expect("assigned");
        let mut r = core.topologies[&name].clone();
        r.rebalance = Some(request);
        core.finish_rebalance(&mut r, t0, 0);
        (before, r)
    }

    fn parallelism(id: &str, p: usize) -> RebalanceRequest {
        RebalanceRequest { parallelism: [(id.to_string(), p)].into(), ..RebalanceRequest::default() }
    }

    /// Every task id the assignment places, sorted.
    fn placed(a: &Assignment) -> Vec<TaskId> {
        let mut all: Vec<TaskId> = a.workers.iter().flat_map(|w| w.tasks.iter().copied()).collect();
        all.sort_unstable();
        all
    }

    fn slots(a: &Assignment) -> Vec<(String, usize, u16)> {
        a.workers.iter().map(|w| (w.supervisor.clone(), w.slot, w.port)).collect()
    }

    #[test]
    fn a_bolt_that_grows_keeps_every_id_and_every_worker_running_under_a_new_routing() {
        // s: [0, 1], b: [2, 3], acker [4], on 3 workers.
        let (before, r) =
            rebalanced(record_of("t", 3, &[("s", true, 2), ("b", false, 2)]), 3, parallelism("b", 3));
        let a = r.assignment.as_ref().unwrap();
        let (was, is) = (before.layout.numbering(), a.layout.numbering());
        assert_eq!(is.components[0], was.components[0], "the spout's ids stay");
        assert_eq!(is.components[1][..2], was.components[1][..], "the bolt's first ids stay");
        assert_eq!(is.ackers, was.ackers, "the acker's id stays");
        assert_eq!(is.components[1][2] as usize, was.id_space(), "the new task's id is after the highest");
        assert_eq!(placed(a), [0, 1, 2, 3, 4, 5]);
        assert_eq!(slots(a), slots(&before), "every worker stays on its slot");
        assert!((0..3).all(|w| a.started_version(w) == before.version), "every worker is kept: {a:?}");
        assert_eq!(a.routing_version(), a.version, "kept workers switch to a new routing");
        assert!(a.version > before.version);
        assert!(describe(&r).ends_with("(3 kept running)"), "{}", describe(&r));
    }

    #[test]
    fn a_bolt_that_shrinks_leaves_its_removed_id_nowhere() {
        // s: [0, 1], b: [2, 3, 4], acker [5], on 3 workers.
        let (before, r) =
            rebalanced(record_of("t", 3, &[("s", true, 2), ("b", false, 3)]), 3, parallelism("b", 2));
        let a = r.assignment.as_ref().unwrap();
        assert_eq!(a.layout.numbering().components[1], [2, 3]);
        assert_eq!(a.layout.numbering().ackers, [5]);
        assert_eq!(placed(a), [0, 1, 2, 3, 5], "id 4 is nowhere");
        assert_eq!(a.task_worker().len(), 6, "sized by the id space");
        assert!((0..a.workers.len()).all(|w| a.started_version(w) == before.version), "{a:?}");
        assert_eq!(a.routing_version(), a.version);
    }

    #[test]
    fn a_spout_that_grows_keeps_every_id_and_every_worker_running() {
        let mut record = record_of("t", 3, &[("s", true, 2), ("b", false, 2)]);
        // A bolt grown before: its ids are not dense.
        apply_rebalance(&mut record.layout, &parallelism("b", 3));
        let (before, r) = rebalanced(record, 3, parallelism("s", 3));
        let a = r.assignment.as_ref().unwrap();
        let numbering = a.layout.numbering();
        assert_eq!(
            numbering.components,
            [vec![6, 7, 8], vec![2, 3, 5]],
            "the spout's tasks start anew after 5"
        );
        assert_eq!(numbering.ackers, [4]);
        assert_eq!(placed(a), [2, 3, 4, 5, 6, 7, 8]);
        assert!((0..a.workers.len()).all(|w| a.started_version(w) == before.version), "{a:?}");
        assert_eq!(a.routing_version(), a.version, "a new routing");
        assert!(describe(&r).contains("(3 kept running)"), "{}", describe(&r));
    }

    #[test]
    fn more_workers_keep_the_old_ones_whose_spout_tasks_stay() {
        let request = RebalanceRequest { workers: Some(3), ..RebalanceRequest::default() };
        let (before, r) = rebalanced(record_of("t", 2, &[("s", true, 2), ("b", false, 2)]), 3, request);
        let a = r.assignment.as_ref().unwrap();
        assert_eq!((before.workers.len(), a.workers.len()), (2, 3));
        for w in 0..2 {
            let spouts = |a: &Assignment| a.workers[w].tasks.iter().filter(|&&t| t < 2).count();
            assert_eq!(spouts(a), spouts(&before), "worker {w}'s spout task stays: {a:?}");
            assert_eq!(a.workers[w].slot, before.workers[w].slot);
            assert_eq!(a.started_version(w), before.version, "worker {w} is kept");
        }
        assert_eq!(a.started_version(2), a.version, "the new worker starts");
        assert_eq!(a.routing_version(), a.version, "tasks moved: a new routing");
        assert_eq!(placed(a), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_worker_that_gains_a_moved_spout_task_runs_on() {
        // Three workers each with one spout task; down to two: the third's spout task moves to
        // a worker that keeps its slot, which starts it live.
        let request = RebalanceRequest { workers: Some(2), ..RebalanceRequest::default() };
        let (before, r) = rebalanced(record_of("t", 3, &[("s", true, 3), ("b", false, 3)]), 3, request);
        let a = r.assignment.as_ref().unwrap();
        assert_eq!(a.workers.len(), 2);
        let gained = |w: usize| a.workers[w].tasks.contains(&2);
        assert!(before.workers[2].tasks.contains(&2) && (gained(0) || gained(1)), "{before:?} → {a:?}");
        for w in 0..2 {
            assert_eq!(a.started_version(w), before.version, "worker {w}: {a:?}");
        }
        assert_eq!(a.routing_version(), a.version);
    }

    #[test]
    fn a_spout_renumbered_densely_starts_every_worker_anew() {
        // Spout ids must stay below 65536: a numbering near that bound renumbers densely.
        let mut record = record_of("t", 2, &[("s", true, 1), ("b", false, 1)]);
        let crowded =
            Numbering { components: vec![vec![0], vec![65_535]], ackers: vec![1], coordinator: None };
        record.layout.numbering = Some(crowded);
        assert_eq!(record.layout.numbering().components[1], [65_535]);
        let (before, r) = rebalanced(record, 2, parallelism("s", 2));
        let a = r.assignment.as_ref().unwrap();
        assert_eq!(a.layout.numbering(), a.layout.dense_numbering());
        assert!((0..a.workers.len()).all(|w| a.started_version(w) == a.version), "{before:?} → {a:?}");
    }

    #[test]
    fn with_checkpoints_or_exactly_once_a_rebalance_keeps_no_worker() {
        for exactly_once in [false, true] {
            let mut record = record_of("t", 2, &[("s", true, 2), ("b", false, 2)]);
            record.layout.coordinator = true;
            record.layout.exactly_once = exactly_once;
            let (_, r) = rebalanced(record, 2, parallelism("b", 3));
            let a = r.assignment.as_ref().unwrap();
            assert!((0..a.workers.len()).all(|w| a.started_version(w) == a.version), "{a:?}");
            assert_eq!(a.routing_version(), a.version);
        }
    }

    #[test]
    fn a_rebalance_to_the_same_parallelism_changes_nothing() {
        let record = record_of("t", 2, &[("s", true, 2), ("b", false, 2)]);
        let mut layout = record.layout.clone();
        apply_rebalance(&mut layout, &parallelism("b", 2));
        apply_rebalance(&mut layout, &parallelism("s", 2));
        assert_eq!(layout, record.layout);
        // Grown and shrunk back to dense ids: no numbering stored.
        apply_rebalance(&mut layout, &parallelism("b", 3));
        assert_eq!(layout.numbering().components[1], [2, 3, 5]);
        apply_rebalance(&mut layout, &parallelism("b", 2));
        assert_eq!(layout, record.layout);
        let (before, r) = rebalanced(record, 2, parallelism("b", 2));
        let a = r.assignment.as_ref().unwrap();
        assert_eq!((a.routing_version(), a.workers.clone()), (before.version, before.workers.clone()));
        assert!((0..2).all(|w| a.started_version(w) == before.version));
    }
}
