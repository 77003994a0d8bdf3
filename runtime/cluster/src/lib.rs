//! Cluster mode: nimbus, supervisors and workers (`squall nimbus`, `supervisor`, `worker`,
//! and the CLI verbs that talk to nimbus).
//!
//! Contract: nimbus is the one place that decides. It keeps every submitted topology (its
//! substituted TOML text, its [`Layout`], its artifact's content hash, its status and its
//! [`Assignment`]) in a durable state directory, and serves the HTTP API below, every request
//! of which must carry the cluster's shared secret in [`SECRET_HEADER`]. Supervisors
//! heartbeat, and learn from the reply which workers they must run; a worker fetches its
//! topology's assignment, hosts the tasks assigned to its index, talks to the other workers
//! of that assignment over TCP ([`transport`]), and heartbeats its task figures, learning from
//! the reply whether the topology is active and where its peers listen. An assignment has a
//! version: every change (rebalance, a supervisor lost) makes a new version. A worker whose
//! slot and tasks a new version keeps goes on running: it carries the version it was started
//! under ([`Assignment::started`]), and workers' links speak the routing's version
//! ([`Assignment::routing`]), which stays the previous one while the routing (the layout and
//! which worker hosts which task) stays the same. A live rebalance goes further: when only
//! the worker count or components' parallelism changed (no checkpoint coordinator, no
//! exactly-once state), a worker on the same slot keeps running too, under a new routing
//! version it learns from its heartbeat reply ([`WorkerReply::routing`]), and starts or
//! retires tasks live; task ids stay stable across it ([`Layout::numbering`]). Other workers of an older version are
//! stopped by their supervisors (and stop themselves when nimbus says they are superseded).
//! Data flows one way: submit (CLI) → nimbus (state, [`scheduler`]) → supervisor → worker →
//! executors.
//!
//! The HTTP API (JSON bodies; errors are `{"error": "…"}` with a 4xx/5xx status):
//!
//! | method and path | body → reply |
//! |---|---|
//! | `PUT /v1/artifacts/{sha256}` | the executable's bytes → 204 (400 if the hash does not match) |
//! | `GET /v1/artifacts/{sha256}` (and `HEAD`) | → the bytes (404 if unknown) |
//! | `POST /v1/topologies` | [`SubmitRequest`] → [`TopologyInfo`] (409 if the name runs) |
//! | `GET /v1/topologies` | → `Vec<TopologyInfo>` |
//! | `GET /v1/topologies/{name}` | → [`TopologyStatus`] (404 if unknown) |
//! | `GET /v1/topologies/{name}/errors` | → `squall_ui::rest::TopologyErrors` (`squall errors`) |
//! | `POST /v1/topologies/{name}/activate` and `…/deactivate` | → [`TopologyInfo`] |
//! | `POST /v1/topologies/{name}/kill` | [`KillRequest`] → [`TopologyInfo`] |
//! | `POST /v1/topologies/{name}/rebalance` | [`RebalanceRequest`] → [`TopologyInfo`] |
//! | `GET /v1/assignments/{name}` | → [`Assignment`] (workers fetch theirs) |
//! | `POST /v1/supervisors/heartbeat` | [`SupervisorHeartbeat`] → [`SupervisorReply`] |
//! | `POST /v1/workers/heartbeat` | [`WorkerHeartbeat`] → [`WorkerReply`] |
//! | `GET /v1/supervisors` | → `Vec<SupervisorInfo>` |

pub mod artifacts;
pub mod client;
pub mod config;
pub mod etcd;
pub mod nimbus;
pub mod scheduler;
pub mod state;
pub mod supervisor;
pub mod tap_feed;
pub mod transport;
pub mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use squall_api::TaskId;

use squall_engine::metrics::TaskFigures;
use squall_engine::plan::Numbering;
use squall_engine::topology::TopologyDef;

/// The HTTP header that carries the cluster's shared secret.
pub const SECRET_HEADER: &str = "x-squall-secret";

/// What nimbus needs to know of a topology to place its tasks: its components in plan order
/// (spouts, then bolts, in file order) with their parallelism, its acker count, and its
/// tasks' ids ([`Self::numbering`]: dense, as [`squall_engine::plan::Plan::new`] numbers them,
/// until a rebalance changes a bolt's parallelism).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub workers: usize,
    pub components: Vec<ComponentLayout>,
    pub ackers: usize,
    pub message_timeout_secs: u64,
    /// Whether the topology has a checkpoint coordinator task (it has stateful bolts): the
    /// last task.
    #[serde(default)]
    pub coordinator: bool,
    /// Stateful bolts with `guarantee = "exactly_once"`: a worker that exits makes every
    /// worker start again from the last committed checkpoint.
    #[serde(default)]
    pub exactly_once: bool,
    /// The tasks' ids, when a rebalance left them other than dense (see
    /// [`squall_engine::plan::Numbering::resized`]); `None`: dense, as
    /// [`squall_engine::plan::Plan::new`] numbers them. Workers lay the topology out with
    /// [`squall_engine::plan::Plan::numbered`]`(def, &layout.numbering())`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbering: Option<Numbering>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentLayout {
    pub id: String,
    pub kind: String,
    pub spout: bool,
    pub parallelism: usize,
}

impl Layout {
    /// The layout of a validated topology.
    pub fn of(def: &TopologyDef) -> Layout {
        let component = |c: &squall_engine::topology::ComponentDef, spout| ComponentLayout {
            id: c.id.clone(),
            kind: c.kind.clone(),
            spout,
            parallelism: c.parallelism,
        };
        Layout {
            workers: def.workers.max(1),
            components: def
                .spouts
                .iter()
                .map(|c| component(c, true))
                .chain(def.bolts.iter().map(|c| component(c, false)))
                .collect(),
            ackers: if def.settings.acking { def.settings.ackers.max(1) } else { 0 },
            message_timeout_secs: def.settings.message_timeout_secs,
            coordinator: def.checkpoints(),
            exactly_once: def.checkpoints() && def.settings.guarantee == squall_api::Guarantee::ExactlyOnce,
            numbering: None,
        }
    }

    /// How many tasks it has: components' tasks, ackers and the coordinator (holes in the id
    /// space not counted, see [`Self::id_space`]).
    pub fn task_count(&self) -> usize {
        self.components.iter().map(|c| c.parallelism).sum::<usize>()
            + self.ackers
            + usize::from(self.coordinator)
    }

    /// The tasks' ids: the stored numbering if it fits the layout as
    /// [`squall_engine::plan::Plan::numbered`] requires (as many ids per component as its
    /// parallelism, as many acker ids as ackers, a coordinator id if it has one, spout ids
    /// below 65536, each id once, the id space at most
    /// [`squall_engine::topology::MAX_TASKS`] + the task count), else (none stored, or one
    /// that does not fit) dense. Nimbus and workers read the same one.
    pub fn numbering(&self) -> Numbering {
        match &self.numbering {
            Some(n) if self.fits(n) => n.clone(),
            _ => self.dense_numbering(),
        }
    }

    fn fits(&self, n: &Numbering) -> bool {
        let parallelism: Vec<usize> = self.components.iter().map(|c| c.parallelism).collect();
        let spouts = self.components.iter().filter(|c| c.spout).count();
        n.fits(&parallelism, spouts, self.ackers, self.coordinator).is_ok()
    }

    /// Every task numbered densely from 0, as [`squall_engine::plan::Plan::new`] does.
    pub fn dense_numbering(&self) -> Numbering {
        let parallelism: Vec<usize> = self.components.iter().map(|c| c.parallelism).collect();
        Numbering::dense(&parallelism, self.ackers, self.coordinator)
    }

    /// The size of the task id space: every task id is below it (holes included).
    pub fn id_space(&self) -> usize {
        self.numbering().id_space()
    }

    /// Makes `def` what this layout says (after a rebalance changed workers or parallelism).
    pub fn apply(&self, def: &mut TopologyDef) {
        def.workers = self.workers;
        for c in def.spouts.iter_mut().chain(def.bolts.iter_mut()) {
            if let Some(l) = self.components.iter().find(|l| l.id == c.id) {
                c.parallelism = l.parallelism;
            }
        }
    }
}

/// A submitted topology's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Inactive,
    /// Deactivated; removed at the kill's deadline.
    Killing,
    /// Deactivated; re-planned and re-assigned at the rebalance's deadline.
    Rebalancing,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Active => "ACTIVE",
            Status::Inactive => "INACTIVE",
            Status::Killing => "KILLED",
            Status::Rebalancing => "REBALANCING",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub name: String,
    /// The topology file with `${VAR}`s already substituted (by the submitting shell's
    /// environment), so every worker reads the same topology.
    pub text: String,
    pub layout: Layout,
    /// sha256 (lowercase hex) of the executable holding the components, uploaded first.
    pub artifact: String,
    /// sha256 of the topology's packed `resources/` folder, uploaded first as an artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillRequest {
    /// Seconds between deactivation and removal; default the topology's message timeout.
    pub wait_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RebalanceRequest {
    pub workers: Option<usize>,
    /// Component id → new parallelism.
    #[serde(default)]
    pub parallelism: BTreeMap<String, usize>,
    /// Seconds between deactivation and the new assignment; default the message timeout.
    pub wait_secs: Option<u64>,
}

/// One line of `squall list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyInfo {
    pub name: String,
    pub status: Status,
    /// Workers assigned in the current assignment.
    pub workers: usize,
    pub tasks: usize,
    pub uptime_secs: u64,
    /// The current assignment's version (0 while none could be made).
    pub version: u64,
    /// While killing or rebalancing: seconds left for in-flight tuples to drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_secs: Option<u64>,
}

/// `squall status NAME`: the topology and its per-component figures summed over workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyStatus {
    pub info: TopologyInfo,
    /// Workers of the current assignment that sent figures recently.
    pub workers_reporting: usize,
    /// Times a worker of the current assignment started again (its figures carry on: the
    /// totals include what it counted before).
    #[serde(default)]
    pub worker_restarts: u64,
    /// The components in the topology file's order (spouts, then bolts).
    #[serde(default)]
    pub order: Vec<String>,
    pub snapshot: squall_engine::metrics::Snapshot,
}

/// Where a topology's tasks run. `workers[i]` is worker `i`; every task is in exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub topology: String,
    pub version: u64,
    /// When the topology was submitted (ms since the epoch): with its name, it names the
    /// deployment, the same for every worker, rebalance and restart of it.
    #[serde(default)]
    pub submitted_ms: u64,
    pub artifact: String,
    /// sha256 of the topology's packed `resources/` folder, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
    pub text: String,
    pub layout: Layout,
    pub workers: Vec<WorkerSlot>,
    /// The version whose routing this one keeps (its layout and which worker index hosts
    /// which task are the same since then; only the slots of some workers moved): the
    /// version workers' links speak. 0 (an assignment stored before it was kept): `version`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub routing: u64,
    /// Per worker: the version it was started under, which its supervisor runs it with (a
    /// worker a new version keeps goes on running: the same slot and tasks, or in a live
    /// rebalance the same slot and spout tasks). Empty or 0: `version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<u64>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Assignment {
    /// The version worker links speak (see [`Self::routing`]).
    pub fn routing_version(&self) -> u64 {
        if self.routing == 0 {
            self.version
        } else {
            self.routing
        }
    }

    /// The version worker `worker` was started under (see [`Self::started`]).
    pub fn started_version(&self, worker: usize) -> u64 {
        match self.started.get(worker) {
            Some(&v) if v != 0 => v,
            _ => self.version,
        }
    }

    /// Per task id (sized by the layout's [`Layout::id_space`]; a hole says 0): the index of
    /// the worker hosting it.
    pub fn task_worker(&self) -> Vec<usize> {
        let mut out = vec![0; self.layout.id_space()];
        for (w, slot) in self.workers.iter().enumerate() {
            for &t in &slot.tasks {
                if let Some(o) = out.get_mut(t as usize) {
                    *o = w;
                }
            }
        }
        out
    }
}

/// One worker of an assignment: which supervisor's which slot runs it, and its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSlot {
    pub supervisor: String,
    /// Index into that supervisor's `slots`.
    pub slot: usize,
    /// The slot's configured port (0: the worker picks a free one).
    pub port: u16,
    pub tasks: Vec<TaskId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorHeartbeat {
    pub id: String,
    /// The host its workers listen on (peers connect there).
    pub host: String,
    /// One entry per slot: its port (0: any free port).
    pub slots: Vec<u16>,
    /// The workers it runs now.
    pub running: Vec<RunningWorker>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningWorker {
    pub topology: String,
    /// The version the worker was started under ([`Assignment::started_version`]).
    pub version: u64,
    pub worker: usize,
    pub slot: usize,
    pub pid: u32,
}

/// What a supervisor must run: exactly these workers (anything else it runs, it stops).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SupervisorReply {
    pub workers: Vec<WorkerOrder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerOrder {
    pub topology: String,
    /// The version the worker was started under ([`Assignment::started_version`]).
    pub version: u64,
    /// The worker's index in the assignment.
    pub worker: usize,
    pub slot: usize,
    pub port: u16,
    /// sha256 of the executable to run.
    pub artifact: String,
    /// sha256 of the packed `resources/` folder to unpack for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorInfo {
    pub id: String,
    pub host: String,
    pub slots: usize,
    pub used_slots: usize,
    /// Seconds since its last heartbeat.
    pub last_heartbeat_secs: f64,
    pub alive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    pub topology: String,
    /// The version the worker was started under ([`Assignment::started_version`]).
    pub version: u64,
    pub worker: usize,
    /// Where its transport listens.
    pub addr: SocketAddr,
    /// The figures of every task it hosts.
    pub tasks: Vec<TaskFigures>,
    /// A worker of an exactly-once topology started again after it exited: it runs no task,
    /// and nimbus restarts every worker of the topology from the last committed checkpoint.
    #[serde(default)]
    pub restarted: bool,
    /// When its tasks' figures were read: a moment on the wall clock (ms since the epoch, a
    /// multiple of the heartbeat period) that every worker reads at, so nimbus sums figures
    /// of one moment; 0 if none.
    #[serde(default)]
    pub taken_ms: u64,
    /// What its tasks gave each tap nimbus asked for since its last heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taps: Vec<TapBatch>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReply {
    /// What the worker's spouts must do.
    pub control: WorkerControl,
    /// Where each worker of the assignment listens (`None` until it has heartbeated).
    pub peers: Vec<Option<SocketAddr>>,
    /// The taps open on the topology (`squall tap`): a worker feeds those on the components
    /// it hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taps: Vec<TapWant>,
    /// The current assignment's routing version ([`Assignment::routing_version`]; 0 if there
    /// is none): a worker kept running whose links speak an older one switches to the current
    /// assignment live.
    #[serde(default)]
    pub routing: u64,
}

/// A tap a worker is asked to feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapWant {
    /// Nimbus's id of the tap.
    pub id: u64,
    pub component: String,
    /// The stream to sample; every stream of the component if `None`.
    #[serde(default)]
    pub stream: Option<String>,
}

/// What a worker's tasks gave one tap since its last heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapBatch {
    pub id: u64,
    #[serde(default)]
    pub tuples: Vec<squall_engine::tap::TapTuple>,
    /// Why the worker cannot feed it (no such stream): the tap ends with this.
    #[serde(default)]
    pub refused: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerControl {
    Active,
    Inactive,
    /// The worker's assignment is no longer current (or the topology is gone): stop.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let component = |id: &str, spout, parallelism| ComponentLayout {
            id: id.into(),
            kind: "any".into(),
            spout,
            parallelism,
        };
        Layout {
            workers: 2,
            components: vec![component("s", true, 2), component("b", false, 2)],
            ackers: 1,
            message_timeout_secs: 30,
            coordinator: false,
            exactly_once: false,
            numbering: None,
        }
    }

    #[test]
    fn a_layout_stored_without_numbering_loads_dense_and_a_dense_one_is_stored_without() {
        let json = r#"{"workers":2,"components":[{"id":"s","kind":"any","spout":true,"parallelism":2},
            {"id":"b","kind":"any","spout":false,"parallelism":2}],"ackers":1,"message_timeout_secs":30}"#;
        let l: Layout = serde_json::from_str(json).unwrap();
        assert_eq!(l, layout());
        assert_eq!(l.numbering(), Numbering::dense(&[2, 2], 1, false));
        assert_eq!((l.task_count(), l.id_space()), (5, 5));
        assert!(!serde_json::to_string(&l).unwrap().contains("numbering"));
    }

    #[test]
    fn a_numbering_with_holes_sizes_the_id_space_and_task_worker() {
        let mut l = layout();
        l.numbering =
            Some(Numbering { components: vec![vec![0, 1], vec![2, 5]], ackers: vec![4], coordinator: None });
        assert_eq!((l.task_count(), l.id_space()), (5, 6));
        let back: Layout = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        let worker = |tasks: Vec<TaskId>| WorkerSlot { supervisor: "a".into(), slot: 0, port: 0, tasks };
        let a = Assignment {
            topology: "t".into(),
            version: 1,
            submitted_ms: 0,
            artifact: String::new(),
            resources: None,
            text: String::new(),
            layout: l,
            workers: vec![worker(vec![0, 2, 4]), worker(vec![1, 5])],
            routing: 0,
            started: Vec::new(),
        };
        assert_eq!(a.task_worker(), [0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn a_numbering_that_does_not_fit_reads_as_dense() {
        let dense = Numbering::dense(&[2, 2], 1, false);
        for bad in [
            Numbering { components: vec![vec![0, 1], vec![2]], ackers: vec![4], coordinator: None },
            Numbering { components: vec![vec![0, 70_000], vec![2, 3]], ackers: vec![4], coordinator: None },
            Numbering { components: vec![vec![0, 1], vec![2, 2]], ackers: vec![4], coordinator: None },
            Numbering { components: vec![vec![0, 1], vec![2, 3]], ackers: vec![], coordinator: None },
            Numbering {
                components: vec![vec![0, 1], vec![2, TaskId::MAX]],
                ackers: vec![4],
                coordinator: None,
            },
        ] {
            let l = Layout { numbering: Some(bad.clone()), ..layout() };
            assert_eq!(l.numbering(), dense, "{bad:?}");
            assert_eq!(l.id_space(), 5);
        }
    }

    #[test]
    fn a_worker_reply_without_routing_reads_as_zero() {
        let reply: WorkerReply = serde_json::from_str(r#"{"control":"active","peers":[]}"#).unwrap();
        assert_eq!(reply.routing, 0);
    }
}
