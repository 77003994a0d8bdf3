//! What a [`Source`] tells the UI: plain views of the cluster and its topologies, with every
//! task's latest figures, and the actions it can take.
//!
//! Contract: a view is a copy taken at one moment (the source's locks are not held while the
//! UI renders it). Task ids are the plan's: a component's `tasks` index into the topology's
//! `figures` by [`TaskFigures::task`]; a task that has not reported is absent from `figures`.

use std::collections::BTreeMap;

use squall_api::TaskId;
use squall_engine::metrics::TaskFigures;
use squall_engine::tap::TapSession;

/// The whole cluster (for a local run: one pseudo-supervisor and its one topology).
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub supervisors: Vec<SupervisorView>,
    pub topologies: Vec<TopologyView>,
    /// Worker processes that died and were started again, since the source started.
    pub worker_restarts: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SupervisorView {
    pub id: String,
    pub host: String,
    pub slots_total: usize,
    pub slots_used: usize,
    pub alive: bool,
    pub last_heartbeat_secs: f64,
}

#[derive(Debug, Clone, Default)]
pub struct TopologyView {
    pub name: String,
    /// Storm's topology id: the name and the submission time (unique per deployment).
    pub id: String,
    /// `ACTIVE`, `INACTIVE`, `KILLED`, `REBALANCING`.
    pub status: String,
    pub uptime_secs: u64,
    pub message_timeout_secs: u64,
    pub ackers: usize,
    pub workers: Vec<WorkerView>,
    /// Spouts first, then bolts, in the topology file's order.
    pub components: Vec<ComponentView>,
    pub edges: Vec<EdgeView>,
    /// The latest figures of every task that reported.
    pub figures: Vec<TaskFigures>,
    /// How long the tasks have run (for capacity).
    pub elapsed_secs: f64,
}

#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    /// The worker's index in the assignment.
    pub index: usize,
    pub supervisor: String,
    pub host: String,
    /// The worker's transport port (0 until it reported).
    pub port: u16,
    pub tasks: Vec<TaskId>,
    /// Heard from recently.
    pub reporting: bool,
    /// Times nimbus saw the worker start again (its counters went back).
    pub restarts: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ComponentView {
    pub id: String,
    pub kind: String,
    pub spout: bool,
    pub tasks: Vec<TaskId>,
}

/// A subscription: `to` reads stream `stream` of `from`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    pub stream: String,
    pub grouping: String,
}

impl TopologyView {
    /// The component `id`, if it has one.
    pub fn component(&self, id: &str) -> Option<&ComponentView> {
        self.components.iter().find(|c| c.id == id)
    }

    /// The figures of `tasks` that reported.
    pub fn figures_of(&self, tasks: &[TaskId]) -> Vec<TaskFigures> {
        let by_task: BTreeMap<TaskId, &TaskFigures> = self.figures.iter().map(|f| (f.task, f)).collect();
        tasks.iter().filter_map(|t| by_task.get(t).map(|&f| f.clone())).collect()
    }

    /// The worker hosting task `task`.
    pub fn worker_of(&self, task: TaskId) -> Option<&WorkerView> {
        self.workers.iter().find(|w| w.tasks.contains(&task))
    }
}

/// What an action asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Activate,
    Deactivate,
    /// Deactivate, let in-flight trees drain for `wait_secs` (default: the message timeout),
    /// remove.
    Kill {
        wait_secs: Option<u64>,
    },
    /// New worker count and/or per-component parallelism, after `wait_secs`.
    Rebalance {
        workers: Option<usize>,
        parallelism: BTreeMap<String, usize>,
        wait_secs: Option<u64>,
    },
}

impl Action {
    /// Storm's name of the operation (`topologyOperation` in the reply).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Activate => "activate",
            Action::Deactivate => "deactivate",
            Action::Kill { .. } => "kill",
            Action::Rebalance { .. } => "rebalance",
        }
    }
}

/// A refused action: an HTTP status and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub status: u16,
    pub message: String,
}

/// Whoever runs topologies, as the UI sees them.
pub trait Source: Send + Sync + 'static {
    /// The cluster now, every topology's figures included.
    fn cluster(&self) -> ClusterView;

    /// The topology `name` now, if there is one.
    fn topology(&self, name: &str) -> Option<TopologyView>;

    /// Carries out `action` on the topology `name`.
    fn act(&self, name: &str, action: Action) -> Result<(), ActionError>;

    /// Opens a tap on component `component` of topology `name`: samples of what it emits on
    /// `stream` (every stream if `None`) until the session is dropped.
    fn tap(&self, name: &str, component: &str, stream: Option<&str>) -> Result<TapSession, ActionError>;
}

/// A grouping as users write it: `shuffle`, `fields(word)`, …
pub fn grouping_name(g: &squall_engine::topology::GroupingDef) -> String {
    use squall_engine::topology::GroupingDef::*;
    match g {
        Shuffle => "shuffle".into(),
        Fields(f) => format!("fields({})", f.join(", ")),
        All => "all".into(),
        Global => "global".into(),
        Direct => "direct".into(),
        LocalOrShuffle => "local_or_shuffle".into(),
        None => "none".into(),
        PartialKey(f) => format!("partial_key({})", f.join(", ")),
        Custom { kind, .. } => format!("custom({kind})"),
    }
}

/// The subscriptions of a topology file's text, read loosely (the text was validated when it
/// was submitted; nimbus has no registry to load it fully): every `[[bolts]]` entry's
/// `inputs`, `stream` defaulting to `default`, a grouping table shown by its key.
pub fn edges_of_toml(text: &str) -> Vec<EdgeView> {
    let Ok(table) = text.parse::<toml::Table>() else { return Vec::new() };
    let mut out = Vec::new();
    let bolts = table.get("bolts").and_then(|b| b.as_array()).map(Vec::as_slice).unwrap_or_default();
    for bolt in bolts {
        let Some(to) = bolt.get("id").and_then(|v| v.as_str()) else { continue };
        let inputs = bolt.get("inputs").and_then(|i| i.as_array()).map(Vec::as_slice).unwrap_or_default();
        for input in inputs {
            let Some(from) = input.get("from").and_then(|v| v.as_str()) else { continue };
            let stream = input.get("stream").and_then(|v| v.as_str()).unwrap_or("default");
            let grouping = match input.get("grouping") {
                Some(toml::Value::String(s)) => s.clone(),
                Some(toml::Value::Table(t)) => match t.iter().next() {
                    Some((k, toml::Value::Array(fields))) => format!(
                        "{k}({})",
                        fields.iter().filter_map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    Some((k, _)) => k.clone(),
                    None => String::new(),
                },
                _ => "shuffle".into(),
            };
            out.push(EdgeView { from: from.into(), to: to.into(), stream: stream.into(), grouping });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_read_from_a_topology_files_inputs() {
        let text = r#"
name = "wc"
[[spouts]]
id = "s"
kind = "k"
[[bolts]]
id = "split"
kind = "k"
inputs = [{ from = "s", grouping = "shuffle" }]
[[bolts]]
id = "count"
kind = "k"
inputs = [{ from = "split", stream = "words", grouping = { fields = ["word"] } }]
"#;
        let edges = edges_of_toml(text);
        assert_eq!(edges.len(), 2);
        assert_eq!(
            edges[0],
            EdgeView {
                from: "s".into(),
                to: "split".into(),
                stream: "default".into(),
                grouping: "shuffle".into()
            }
        );
        assert_eq!(edges[1].stream, "words");
        assert_eq!(edges[1].grouping, "fields(word)");
        assert!(edges_of_toml("not [ toml").is_empty());
    }
}
