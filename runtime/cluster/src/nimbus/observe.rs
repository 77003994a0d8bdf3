//! Nimbus as the UI's [`Source`]: views of its coordinator's state for the web UI, the REST
//! API and `/metrics` on `[ui] listen` (served by `squall_ui`), and the UI's actions carried
//! out as the CLI's are.
//!
//! Contract: a view is copied under the lock and rendered after it is released. A
//! topology's tasks are numbered as its layout numbers them; its figures are the latest
//! heartbeat of each worker of the current assignment; a worker is reporting when heard from
//! within `REPORTING_WITHIN`. Worker restarts are counted from supervisors' heartbeats: a
//! worker (topology, version, index) that a supervisor reports with another pid than before
//! was restarted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use squall_engine::metrics::TaskFigures;
use squall_engine::tap::TapSession;
use squall_ui::view::{edges_of_toml, ClusterView, ComponentView, SupervisorView, TopologyView, WorkerView};
use squall_ui::{Action, ActionError, Source};

use super::api::{kill_topology, rebalance_topology, reporting, running_secs, set_status};
use super::coordinator::WorkerBeat;
use super::*;

/// What nimbus watches for the UI alone.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// (supervisor, topology, version, worker) → the pid last reported.
    pids: Mutex<HashMap<(String, String, u64, usize), u32>>,
    restarts: AtomicU64,
}

impl Observed {
    /// Notes the workers a supervisor runs now, counting those started again with a new pid
    /// (a crashed worker is absent from a heartbeat or two while it waits to restart, so it
    /// is remembered until its assignment is no longer `current`).
    pub(super) fn running(
        &self,
        supervisor: &str,
        running: &[RunningWorker],
        current: impl Fn(&str, u64) -> bool,
    ) {
        let mut pids = self.pids.lock().unwrap_or_else(|p| p.into_inner());
        pids.retain(|k, _| current(&k.1, k.2));
        for r in running {
            let key = (supervisor.to_string(), r.topology.clone(), r.version, r.worker);
            if let Some(before) = pids.insert(key, r.pid) {
                if before != r.pid {
                    self.restarts.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// Nimbus, as the UI sees it.
pub(super) struct NimbusSource(pub(super) Arc<Nimbus>);

impl Source for NimbusSource {
    fn cluster(&self) -> ClusterView {
        let inner = self.0.lock();
        let supervisors = inner
            .supervisor_infos()
            .into_iter()
            .map(|s| SupervisorView {
                id: s.id,
                host: s.host,
                slots_total: s.slots,
                slots_used: s.used_slots,
                alive: s.alive,
                last_heartbeat_secs: s.last_heartbeat_secs,
            })
            .collect();
        let topologies = inner.topologies.values().map(|r| view(&inner, r)).collect();
        ClusterView { supervisors, topologies, worker_restarts: self.0.observed.restarts.load(Relaxed) }
    }

    fn topology(&self, name: &str) -> Option<TopologyView> {
        let inner = self.0.lock();
        inner.topologies.get(name).map(|r| view(&inner, r))
    }

    fn act(&self, name: &str, action: Action) -> Result<(), ActionError> {
        let nimbus = &self.0;
        let done = match action {
            Action::Activate => {
                set_status(State(nimbus.clone()), Path(name.to_string()), Status::Active).map(drop)
            }
            Action::Deactivate => {
                set_status(State(nimbus.clone()), Path(name.to_string()), Status::Inactive).map(drop)
            }
            Action::Kill { wait_secs } => kill_topology(nimbus, name, KillRequest { wait_secs }).map(drop),
            Action::Rebalance { workers, parallelism, wait_secs } => {
                rebalance_topology(nimbus, name, RebalanceRequest { workers, parallelism, wait_secs })
                    .map(drop)
            }
        };
        done.map_err(|e| e.into_action_error())
    }

    fn tap(&self, name: &str, component: &str, stream: Option<&str>) -> Result<TapSession, ActionError> {
        let inner = self.0.lock();
        let Some(record) = inner.topologies.get(name) else {
            return Err(ActionError { status: 404, message: format!("no topology named `{name}`") });
        };
        if !record.layout.components.iter().any(|c| c.id == component) {
            return Err(ActionError {
                status: 404,
                message: format!("topology `{name}` has no component `{component}`"),
            });
        }
        // Whether the stream exists only the workers know (they have the components): a
        // worker refuses an unknown one with its first heartbeat.
        Ok(self.0.taps.open(name, component, stream))
    }
}

/// The view of one topology.
pub(super) fn view(inner: &Inner, record: &TopologyRecord) -> TopologyView {
    let now = Instant::now();
    let numbering = record.layout.numbering();
    let components = record
        .layout
        .components
        .iter()
        .zip(numbering.components)
        .map(|(c, tasks)| ComponentView { id: c.id.clone(), kind: c.kind.clone(), spout: c.spout, tasks })
        .collect();
    let beats = inner.beats(record);
    // Every worker's figures as of one moment, so that sums never show a component ahead of
    // the ones feeding it.
    let present: Vec<&WorkerBeat> = beats.iter().copied().flatten().collect();
    let mut read = present.iter().zip(super::api::at_one_moment(&present, now));
    let mut figures: Vec<TaskFigures> = Vec::new();
    let workers = record
        .assignment
        .iter()
        .flat_map(|a| a.workers.iter().enumerate())
        .map(|(index, w)| {
            let beat = beats.get(index).copied().flatten();
            if let Some(b) = beat {
                // `present` holds the beats in this same order.
                if let Some((_, tasks)) = read.find(|(p, _)| std::ptr::eq(**p, b)) {
                    figures.extend(tasks.iter().cloned());
                }
            }
            WorkerView {
                index,
                supervisor: w.supervisor.clone(),
                host: beat
                    .map(|b| b.addr.ip().to_string())
                    .or_else(|| inner.supervisors.get(&w.supervisor).map(|s| s.host.clone()))
                    .unwrap_or_default(),
                port: beat.map_or(w.port, |b| b.addr.port()),
                tasks: w.tasks.clone(),
                reporting: beat.is_some_and(|b| reporting(b, now)),
                restarts: beat.map_or(0, |b| b.restarts),
            }
        })
        .collect();
    TopologyView {
        name: record.name.clone(),
        id: format!("{}-{}", record.name, record.submitted_ms / 1000),
        status: record.status.to_string(),
        uptime_secs: state::now_ms().saturating_sub(record.submitted_ms) / 1000,
        message_timeout_secs: record.layout.message_timeout_secs,
        ackers: record.layout.ackers,
        workers,
        components,
        edges: edges_of_toml(&record.text),
        figures,
        elapsed_secs: running_secs(record),
    }
}
