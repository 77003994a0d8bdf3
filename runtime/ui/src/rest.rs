//! The REST API's JSON, in the shape of Storm UI's `/api/v1/…`, built from views.
//!
//! Contract: field names are Storm UI's wherever the concept is the same (`topologies`,
//! `name`, `status`, `uptimeSeconds`, `workersTotal`, `tasksTotal`, `spouts` with `spoutId`,
//! `bolts` with `boltId`, `emitted`, `transferred`, `acked`, `failed`, `completeLatency`,
//! `capacity`, `executeLatency`, `processLatency`, `lastError`, …), so scripts written
//! against Storm UI read them; Squall's own additions (`kind`, `queueDepth`, `edges`,
//! `workers`, …) sit beside them. Figures are over the view's window (`window`,
//! `windowPretty`: Storm's `600`, `10800` or `:all-time`, see [`crate::history`]); latencies are in milliseconds, as Storm's, but JSON numbers rather
//! than strings. `processLatency` is the execute latency: Squall does not time from arrival
//! to ack separately. An executor is a task (Squall runs one task per executor). Every
//! function here is pure.

use serde::{Deserialize, Serialize};
use squall_api::Role;
use squall_engine::metrics::{ComponentStats, ErrorNote, FailedBy, Snapshot, TaskFigures};

use crate::history::Window;
use crate::view::{ClusterView, ComponentView, SupervisorView, TopologyView};

/// `GET /api/v1/cluster/summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    pub supervisors: usize,
    pub topologies: usize,
    pub slots_total: usize,
    pub slots_used: usize,
    pub slots_free: usize,
    pub executors_total: usize,
    pub tasks_total: usize,
    pub worker_restarts: u64,
}

/// `GET /api/v1/supervisor/summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorSummary {
    pub supervisors: Vec<SupervisorEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorEntry {
    pub id: String,
    pub host: String,
    pub slots_total: usize,
    pub slots_used: usize,
    pub alive: bool,
    pub last_heartbeat_seconds: f64,
}

/// `GET /api/v1/topology/summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologySummary {
    pub topologies: Vec<TopologyEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyEntry {
    pub id: String,
    pub name: String,
    pub status: String,
    /// `1d 2h 3m 4s`.
    pub uptime: String,
    pub uptime_seconds: u64,
    pub workers_total: usize,
    pub executors_total: usize,
    pub tasks_total: usize,
}

/// `GET /api/v1/topology/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyPage {
    #[serde(flatten)]
    pub entry: TopologyEntry,
    /// The window the figures cover: `600`, `10800` or `:all-time`.
    #[serde(default)]
    pub window: String,
    #[serde(default)]
    pub window_pretty: String,
    /// The message timeout, seconds.
    pub msg_timeout: u64,
    pub topology_stats: Vec<WindowStats>,
    pub spouts: Vec<SpoutEntry>,
    pub bolts: Vec<BoltEntry>,
    pub workers: Vec<WorkerEntry>,
    pub edges: Vec<EdgeEntry>,
    /// When these figures were read (ms since the Unix epoch, the server's clock): rates are
    /// differences of two pages over the difference of their `sampledAtMs`.
    pub sampled_at_ms: u64,
}

/// The topology's totals over one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowStats {
    pub window: String,
    pub window_pretty: String,
    pub emitted: u64,
    pub transferred: u64,
    pub acked: u64,
    pub failed: u64,
    pub complete_latency: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpoutEntry {
    pub spout_id: String,
    pub kind: String,
    pub executors: usize,
    pub tasks: usize,
    pub emitted: u64,
    pub transferred: u64,
    pub acked: u64,
    pub failed: u64,
    /// Milliseconds, the median.
    pub complete_latency: f64,
    pub complete_latency_p99: f64,
    pub errors: u64,
    pub last_error: String,
    pub last_error_time: Option<u64>,
    /// The spout tasks' time: producing, with nothing to emit, held back by
    /// `max_spout_pending` (0 to 1 each).
    #[serde(default)]
    pub busy: f64,
    #[serde(default)]
    pub idle: f64,
    #[serde(default)]
    pub backpressured: f64,
    /// Failed trees by cause (STORM-521): `{"component", "cause": "failed"|"timeout",
    /// "count"}`, the bolt that failed them or each component that held part of a tree when
    /// it timed out (empty when no one is known).
    #[serde(default)]
    pub failed_by: Vec<FailedBy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoltEntry {
    pub bolt_id: String,
    pub kind: String,
    pub executors: usize,
    pub tasks: usize,
    pub emitted: u64,
    pub transferred: u64,
    pub executed: u64,
    pub acked: u64,
    pub failed: u64,
    pub capacity: f64,
    /// Milliseconds, the mean.
    pub execute_latency: f64,
    pub process_latency: f64,
    pub queue_depth: i64,
    pub errors: u64,
    pub last_error: String,
    pub last_error_time: Option<u64>,
    /// Flink's split of the tasks' time (0 to 1 each): executing, waiting for input, waiting
    /// for room downstream.
    #[serde(default)]
    pub busy: f64,
    #[serde(default)]
    pub idle: f64,
    #[serde(default)]
    pub backpressured: f64,
    /// Stateful bolts: checkpoints committed, the last one's duration (ms), state entries.
    #[serde(default)]
    pub checkpoints: u64,
    #[serde(default)]
    pub last_checkpoint_ms: u64,
    #[serde(default)]
    pub state_entries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerEntry {
    pub worker: usize,
    pub supervisor_id: String,
    pub host: String,
    pub port: u16,
    pub reporting: bool,
    /// Times the worker was seen starting again (its figures carry on from before).
    #[serde(default)]
    pub restarts: u64,
    pub tasks: Vec<u32>,
    /// The components it hosts tasks of, in topology order.
    pub components: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeEntry {
    pub from: String,
    pub to: String,
    pub stream: String,
    pub grouping: String,
}

/// `GET /api/v1/topology/NAME/component/ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentPage {
    pub id: String,
    pub name: String,
    pub topology_id: String,
    /// `spout` or `bolt`.
    pub component_type: String,
    pub kind: String,
    pub executors: usize,
    pub tasks: usize,
    /// The component's totals (a [`SpoutEntry`] or a [`BoltEntry`]).
    pub stats: serde_json::Value,
    pub executor_stats: Vec<ExecutorEntry>,
    pub inputs: Vec<EdgeEntry>,
    pub outputs: Vec<EdgeEntry>,
    pub last_error: String,
    pub component_errors: Vec<ErrorEntry>,
    /// The window the figures cover: `600`, `10800` or `:all-time`.
    #[serde(default)]
    pub window: String,
    #[serde(default)]
    pub window_pretty: String,
}

/// One task of a component, and where it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorEntry {
    /// Storm's executor id: `[first-last]` task.
    pub id: String,
    pub task: u32,
    pub worker: Option<usize>,
    pub host: String,
    pub port: u16,
    pub supervisor_id: String,
    pub reported: bool,
    pub emitted: u64,
    pub transferred: u64,
    pub executed: u64,
    pub acked: u64,
    pub failed: u64,
    pub capacity: f64,
    pub execute_latency: f64,
    pub complete_latency: f64,
    pub queue_depth: i64,
    pub errors: u64,
}

/// One error of a component, as Storm's `componentErrors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEntry {
    pub error: String,
    /// Seconds since the Unix epoch.
    pub error_time: u64,
    pub task: u32,
    pub worker: Option<usize>,
    pub host: String,
    pub port: u16,
}

/// `GET /api/v1/topology/NAME/errors` (and `squall errors NAME`): per component, in the
/// topology's order, its error count and each task's latest error, the newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyErrors {
    pub topology: String,
    pub components: Vec<ComponentErrors>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentErrors {
    pub id: String,
    /// Every error its tasks reported (logged or not).
    pub errors: u64,
    pub component_errors: Vec<ErrorEntry>,
}

/// What an action answers (Storm's shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionReply {
    pub topology_operation: String,
    pub topology_id: String,
    pub status: String,
}

pub fn cluster_summary(cluster: &ClusterView) -> ClusterSummary {
    let alive = || cluster.supervisors.iter().filter(|s| s.alive);
    let slots_total: usize = alive().map(|s| s.slots_total).sum();
    let slots_used: usize = alive().map(|s| s.slots_used.min(s.slots_total)).sum();
    let tasks_total: usize = cluster.topologies.iter().map(task_count).sum();
    ClusterSummary {
        supervisors: alive().count(),
        topologies: cluster.topologies.len(),
        slots_total,
        slots_used,
        slots_free: slots_total - slots_used,
        executors_total: tasks_total,
        tasks_total,
        worker_restarts: cluster.worker_restarts,
    }
}

pub fn supervisor_summary(cluster: &ClusterView) -> SupervisorSummary {
    SupervisorSummary { supervisors: cluster.supervisors.iter().map(supervisor_entry).collect() }
}

fn supervisor_entry(s: &SupervisorView) -> SupervisorEntry {
    SupervisorEntry {
        id: s.id.clone(),
        host: s.host.clone(),
        slots_total: s.slots_total,
        slots_used: s.slots_used,
        alive: s.alive,
        last_heartbeat_seconds: s.last_heartbeat_secs,
    }
}

pub fn topology_summary(cluster: &ClusterView) -> TopologySummary {
    TopologySummary { topologies: cluster.topologies.iter().map(topology_entry).collect() }
}

fn task_count(t: &TopologyView) -> usize {
    t.components.iter().map(|c| c.tasks.len()).sum::<usize>() + t.ackers
}

pub fn topology_entry(t: &TopologyView) -> TopologyEntry {
    TopologyEntry {
        id: t.id.clone(),
        name: t.name.clone(),
        status: t.status.clone(),
        uptime: pretty_duration(t.uptime_secs),
        uptime_seconds: t.uptime_secs,
        workers_total: t.workers.len(),
        executors_total: task_count(t),
        tasks_total: task_count(t),
    }
}

/// Every component's figures summed over its tasks that reported.
pub fn snapshot(t: &TopologyView) -> Snapshot {
    let components = t
        .components
        .iter()
        .map(|c| (c.id.as_str(), c.kind.as_str(), role(c), c.tasks.len(), t.figures_of(&c.tasks)));
    Snapshot::sum(&t.name, components, t.elapsed_secs)
}

fn role(c: &ComponentView) -> Role {
    if c.spout {
        Role::Spout
    } else {
        Role::Bolt
    }
}

/// The totals of `t` (its figures over `window`) as one entry of `topologyStats`.
pub fn window_stats(t: &TopologyView, window: Window) -> WindowStats {
    let snapshot = snapshot(t);
    let spouts = || t.components.iter().filter(|c| c.spout).filter_map(|c| snapshot.components.get(&c.id));
    WindowStats {
        window: window.name(),
        window_pretty: window.pretty(),
        emitted: snapshot.components.values().map(|s| s.emitted).sum(),
        transferred: snapshot.components.values().map(|s| s.transferred).sum(),
        acked: spouts().map(|s| s.acked).sum(),
        failed: spouts().map(|s| s.failed).sum(),
        complete_latency: spouts().map(|s| ms(s.complete_latency_p50_us)).fold(0.0, f64::max),
    }
}

/// The topology page of `t`, whose figures cover `window`; `topology_stats` has one entry
/// per window (see [`window_stats`]).
pub fn topology_page(t: &TopologyView, window: Window, topology_stats: Vec<WindowStats>) -> TopologyPage {
    let snapshot = snapshot(t);
    let stats = |c: &ComponentView| snapshot.components.get(&c.id).cloned();
    let spouts: Vec<SpoutEntry> =
        t.components.iter().filter(|c| c.spout).filter_map(|c| Some(spout_entry(c, &stats(c)?))).collect();
    let bolts =
        t.components.iter().filter(|c| !c.spout).filter_map(|c| Some(bolt_entry(c, &stats(c)?))).collect();
    let workers = t
        .workers
        .iter()
        .map(|w| WorkerEntry {
            worker: w.index,
            supervisor_id: w.supervisor.clone(),
            host: w.host.clone(),
            port: w.port,
            reporting: w.reporting,
            restarts: w.restarts,
            tasks: w.tasks.clone(),
            components: t
                .components
                .iter()
                .filter(|c| c.tasks.iter().any(|task| w.tasks.contains(task)))
                .map(|c| c.id.clone())
                .collect(),
        })
        .collect();
    TopologyPage {
        entry: topology_entry(t),
        window: window.name(),
        window_pretty: window.pretty(),
        msg_timeout: t.message_timeout_secs,
        topology_stats,
        spouts,
        bolts,
        workers,
        edges: t.edges.iter().map(edge_entry).collect(),
        sampled_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

fn edge_entry(e: &crate::view::EdgeView) -> EdgeEntry {
    EdgeEntry {
        from: e.from.clone(),
        to: e.to.clone(),
        stream: e.stream.clone(),
        grouping: e.grouping.clone(),
    }
}

fn error_text(e: &Option<ErrorNote>) -> (String, Option<u64>) {
    match e {
        Some(e) => (e.message.clone(), Some(e.time_ms / 1000)),
        None => (String::new(), None),
    }
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

fn spout_entry(c: &ComponentView, s: &ComponentStats) -> SpoutEntry {
    let (last_error, last_error_time) = error_text(&s.last_error);
    SpoutEntry {
        spout_id: c.id.clone(),
        kind: c.kind.clone(),
        executors: c.tasks.len(),
        tasks: c.tasks.len(),
        emitted: s.emitted,
        transferred: s.transferred,
        acked: s.acked,
        failed: s.failed,
        complete_latency: ms(s.complete_latency_p50_us),
        complete_latency_p99: ms(s.complete_latency_p99_us),
        errors: s.errors,
        last_error,
        last_error_time,
        busy: s.busy,
        idle: s.idle,
        backpressured: s.backpressured,
        failed_by: s.failed_by.clone(),
    }
}

fn bolt_entry(c: &ComponentView, s: &ComponentStats) -> BoltEntry {
    let (last_error, last_error_time) = error_text(&s.last_error);
    BoltEntry {
        bolt_id: c.id.clone(),
        kind: c.kind.clone(),
        executors: c.tasks.len(),
        tasks: c.tasks.len(),
        emitted: s.emitted,
        transferred: s.transferred,
        executed: s.executed,
        acked: s.acked,
        failed: s.failed,
        capacity: s.capacity,
        execute_latency: ms(s.execute_latency_us),
        process_latency: ms(s.execute_latency_us),
        queue_depth: s.queue_depth,
        errors: s.errors,
        last_error,
        last_error_time,
        busy: s.busy,
        idle: s.idle,
        backpressured: s.backpressured,
        checkpoints: s.checkpoints,
        last_checkpoint_ms: s.last_checkpoint_ms,
        state_entries: s.state_entries,
    }
}

/// The component page of `id`, if the topology has that component.
pub fn component_page(t: &TopologyView, id: &str, window: Window) -> Option<ComponentPage> {
    let c = t.component(id)?;
    let stats = snapshot(t).components.remove(id)?;
    let figures = t.figures_of(&c.tasks);
    let executor_stats = c.tasks.iter().map(|&task| executor_entry(t, c, task, &figures)).collect();
    let component_errors = errors_of(t, &figures);
    let (last_error, _) = error_text(&stats.last_error);
    let stats_json = match c.spout {
        true => serde_json::to_value(spout_entry(c, &stats)),
        false => serde_json::to_value(bolt_entry(c, &stats)),
    }
    .unwrap_or_default();
    let edges = |keep: &dyn Fn(&crate::view::EdgeView) -> bool| {
        t.edges.iter().filter(|e| keep(e)).map(edge_entry).collect::<Vec<_>>()
    };
    Some(ComponentPage {
        id: c.id.clone(),
        name: t.name.clone(),
        topology_id: t.id.clone(),
        component_type: if c.spout { "spout" } else { "bolt" }.into(),
        kind: c.kind.clone(),
        executors: c.tasks.len(),
        tasks: c.tasks.len(),
        stats: stats_json,
        executor_stats,
        inputs: edges(&|e| e.to == c.id),
        outputs: edges(&|e| e.from == c.id),
        last_error,
        component_errors,
        window: window.name(),
        window_pretty: window.pretty(),
    })
}

/// Each task's latest error, the newest first, with where the task runs.
fn errors_of(t: &TopologyView, figures: &[TaskFigures]) -> Vec<ErrorEntry> {
    let mut errors: Vec<ErrorEntry> = figures
        .iter()
        .filter_map(|f| {
            let e = f.last_error.as_ref()?;
            let worker = t.worker_of(f.task);
            Some(ErrorEntry {
                error: e.message.clone(),
                error_time: e.time_ms / 1000,
                task: f.task,
                worker: worker.map(|w| w.index),
                host: worker.map(|w| w.host.clone()).unwrap_or_default(),
                port: worker.map_or(0, |w| w.port),
            })
        })
        .collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.error_time));
    errors
}

pub fn topology_errors(t: &TopologyView) -> TopologyErrors {
    let components = t
        .components
        .iter()
        .map(|c| {
            let figures = t.figures_of(&c.tasks);
            ComponentErrors {
                id: c.id.clone(),
                errors: figures.iter().map(|f| f.errors).sum(),
                component_errors: errors_of(t, &figures),
            }
        })
        .collect();
    TopologyErrors { topology: t.name.clone(), components }
}

fn executor_entry(t: &TopologyView, c: &ComponentView, task: u32, figures: &[TaskFigures]) -> ExecutorEntry {
    let worker = t.worker_of(task);
    let reported = figures.iter().find(|f| f.task == task);
    let one = reported.cloned().into_iter().collect::<Vec<_>>();
    let s = Snapshot::sum(&t.name, [(c.id.as_str(), c.kind.as_str(), role(c), 1, one)], t.elapsed_secs)
        .components
        .remove(&c.id)
        .unwrap_or_else(|| unreachable!("Snapshot::sum lists every component it is given"));
    ExecutorEntry {
        id: format!("[{task}-{task}]"),
        task,
        worker: worker.map(|w| w.index),
        host: worker.map(|w| w.host.clone()).unwrap_or_default(),
        port: worker.map_or(0, |w| w.port),
        supervisor_id: worker.map(|w| w.supervisor.clone()).unwrap_or_default(),
        reported: reported.is_some(),
        emitted: s.emitted,
        transferred: s.transferred,
        executed: s.executed,
        acked: s.acked,
        failed: s.failed,
        capacity: s.capacity,
        execute_latency: ms(s.execute_latency_us),
        complete_latency: ms(s.complete_latency_p50_us),
        queue_depth: s.queue_depth,
        errors: s.errors,
    }
}

/// The figures of a topology page as `squall status --json` shows them (what a page does not
/// carry, as the p99.9 latency or window counts, is 0).
pub fn page_snapshot(page: &TopologyPage) -> Snapshot {
    let error = |text: &str, time: Option<u64>| {
        (!text.is_empty()).then(|| ErrorNote { time_ms: time.unwrap_or(0) * 1000, message: text.to_string() })
    };
    let mut components = std::collections::BTreeMap::new();
    for s in &page.spouts {
        let c = ComponentStats {
            emitted: s.emitted,
            transferred: s.transferred,
            acked: s.acked,
            failed: s.failed,
            errors: s.errors,
            complete_latency_p50_us: s.complete_latency * 1000.0,
            complete_latency_p99_us: s.complete_latency_p99 * 1000.0,
            busy: s.busy,
            idle: s.idle,
            backpressured: s.backpressured,
            last_error: error(&s.last_error, s.last_error_time),
            failed_by: s.failed_by.clone(),
            ..ComponentStats::blank(&s.kind, "spout", s.tasks)
        };
        components.insert(s.spout_id.clone(), c);
    }
    for b in &page.bolts {
        let c = ComponentStats {
            emitted: b.emitted,
            transferred: b.transferred,
            executed: b.executed,
            acked: b.acked,
            failed: b.failed,
            errors: b.errors,
            execute_latency_us: b.execute_latency * 1000.0,
            queue_depth: b.queue_depth,
            capacity: b.capacity,
            busy: b.busy,
            idle: b.idle,
            backpressured: b.backpressured,
            checkpoints: b.checkpoints,
            last_checkpoint_ms: b.last_checkpoint_ms,
            state_entries: b.state_entries,
            last_error: error(&b.last_error, b.last_error_time),
            ..ComponentStats::blank(&b.kind, "bolt", b.tasks)
        };
        components.insert(b.bolt_id.clone(), c);
    }
    Snapshot { topology: page.entry.name.clone(), components }
}

/// `1d 2h 3m 4s`, as Storm UI shows uptimes (leading zero units left out).
pub fn pretty_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 || !parts.is_empty() {
            parts.push(format!("{n}{unit}"));
        }
    }
    parts.push(format!("{s}s"));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{EdgeView, WorkerView};

    fn view() -> TopologyView {
        TopologyView {
            name: "wc".into(),
            id: "wc-1".into(),
            status: "ACTIVE".into(),
            uptime_secs: 3725,
            message_timeout_secs: 30,
            ackers: 1,
            workers: vec![WorkerView {
                index: 0,
                supervisor: "sup-0".into(),
                host: "127.0.0.1".into(),
                port: 6700,
                tasks: vec![0, 1, 2, 3],
                reporting: true,
                restarts: 0,
            }],
            components: vec![
                ComponentView {
                    id: "src".into(),
                    kind: "random-sentence".into(),
                    spout: true,
                    tasks: vec![0],
                },
                ComponentView {
                    id: "split".into(),
                    kind: "split-sentence".into(),
                    spout: false,
                    tasks: vec![1, 2],
                },
            ],
            edges: vec![EdgeView {
                from: "src".into(),
                to: "split".into(),
                stream: "default".into(),
                grouping: "shuffle".into(),
            }],
            figures: vec![
                TaskFigures {
                    task: 0,
                    emitted: 10,
                    transferred: 10,
                    acked: 7,
                    failed: 1,
                    ..Default::default()
                },
                TaskFigures {
                    task: 1,
                    executed: 6,
                    emitted: 12,
                    last_error: Some(ErrorNote { time_ms: 5_000, message: "bad tuple".into() }),
                    errors: 1,
                    ..Default::default()
                },
                TaskFigures { task: 2, executed: 4, emitted: 8, ..Default::default() },
            ],
            elapsed_secs: 10.0,
        }
    }

    #[test]
    fn topology_page_sums_tasks_per_component_under_storm_names() {
        let t = view();
        let stats = Window::ALL.iter().map(|&w| window_stats(&t, w)).collect();
        let page = serde_json::to_value(topology_page(&t, Window::AllTime, stats)).unwrap();
        assert_eq!(page["name"], "wc");
        assert_eq!(page["status"], "ACTIVE");
        assert_eq!(page["uptimeSeconds"], 3725);
        assert_eq!(page["uptime"], "1h 2m 5s");
        assert_eq!(page["tasksTotal"], 4);
        assert_eq!(page["workersTotal"], 1);
        assert_eq!(page["spouts"][0]["spoutId"], "src");
        assert_eq!(page["spouts"][0]["acked"], 7);
        assert_eq!(page["spouts"][0]["failed"], 1);
        assert_eq!(page["bolts"][0]["boltId"], "split");
        assert_eq!(page["bolts"][0]["executed"], 10);
        assert_eq!(page["bolts"][0]["emitted"], 20);
        assert_eq!(page["bolts"][0]["lastError"], "bad tuple");
        assert_eq!(page["window"], ":all-time");
        assert_eq!(page["topologyStats"][2]["window"], ":all-time");
        assert_eq!(page["topologyStats"][2]["acked"], 7);
        assert_eq!(page["topologyStats"][0]["windowPretty"], "10m 0s");
        let back = page_snapshot(&topology_page(&t, Window::AllTime, vec![]));
        let direct = snapshot(&t);
        for id in ["src", "split"] {
            let (a, b) = (&back.components[id], &direct.components[id]);
            assert_eq!(
                (a.emitted, a.acked, a.failed, a.executed, &a.role),
                (b.emitted, b.acked, b.failed, b.executed, &b.role)
            );
        }
        assert_eq!(page["workers"][0]["components"], serde_json::json!(["src", "split"]));
        assert_eq!(page["edges"][0]["grouping"], "shuffle");
    }

    #[test]
    fn component_page_lists_each_task_where_it_runs_and_its_errors() {
        let page = component_page(&view(), "split", Window::AllTime).unwrap();
        assert_eq!(page.component_type, "bolt");
        assert_eq!(page.executor_stats.len(), 2);
        assert_eq!(page.executor_stats[0].id, "[1-1]");
        assert_eq!(page.executor_stats[0].port, 6700);
        assert_eq!(page.executor_stats[1].executed, 4);
        assert_eq!(page.component_errors.len(), 1);
        assert_eq!(page.component_errors[0].task, 1);
        assert_eq!(page.component_errors[0].error_time, 5);
        assert_eq!(page.inputs.len(), 1);
        assert!(component_page(&view(), "nope", Window::AllTime).is_none());
        let errors = topology_errors(&view());
        assert_eq!(errors.components.len(), 2);
        assert_eq!((errors.components[1].id.as_str(), errors.components[1].errors), ("split", 1));
        assert_eq!(errors.components[1].component_errors[0].error, "bad tuple");
        assert!(errors.components[0].component_errors.is_empty());
    }

    #[test]
    fn cluster_summary_counts_slots_of_live_supervisors() {
        let cluster = ClusterView {
            supervisors: vec![
                SupervisorView {
                    id: "a".into(),
                    slots_total: 4,
                    slots_used: 1,
                    alive: true,
                    ..Default::default()
                },
                SupervisorView {
                    id: "b".into(),
                    slots_total: 4,
                    slots_used: 0,
                    alive: false,
                    ..Default::default()
                },
            ],
            topologies: vec![view()],
            worker_restarts: 2,
        };
        let s = cluster_summary(&cluster);
        assert_eq!((s.supervisors, s.slots_total, s.slots_used, s.slots_free), (1, 4, 1, 3));
        assert_eq!((s.tasks_total, s.topologies, s.worker_restarts), (4, 1, 2));
    }
}
