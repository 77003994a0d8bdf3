//! What a task knows about where it runs.
//!
//! Contract: every spout and bolt gets a [`TopologyContext`] in `open` / `prepare`: the
//! topology's name, its own component id, task id, index among its component's tasks and
//! their count, the task ids of every component (for direct grouping), its component's
//! `config` table from the topology file, and the topology-wide settings; where its topology's
//! `resources/` folder is, if it has one, and the `tick_secs` the topology file set for it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::tuple::TaskId;

#[derive(Debug, Clone)]
pub struct TopologyContext {
    topology: Arc<str>,
    topology_id: Arc<str>,
    component: Arc<str>,
    task_id: TaskId,
    task_index: usize,
    component_tasks: Arc<BTreeMap<String, Vec<TaskId>>>,
    config: toml::Table,
    settings: Arc<toml::Table>,
    resources: Option<Arc<Path>>,
    tick: Option<Duration>,
}

impl TopologyContext {
    /// Built by the runtime; public so components can be tested on their own.
    pub fn new(
        topology: &str,
        component: &str,
        task_id: TaskId,
        component_tasks: Arc<BTreeMap<String, Vec<TaskId>>>,
        config: toml::Table,
        settings: Arc<toml::Table>,
    ) -> Self {
        let task_index =
            component_tasks.get(component).and_then(|ts| ts.iter().position(|t| *t == task_id)).unwrap_or(0);
        TopologyContext {
            topology: topology.into(),
            topology_id: topology.into(),
            component: component.into(),
            task_id,
            task_index,
            component_tasks,
            config,
            settings,
            resources: None,
            tick: None,
        }
    }

    /// A context for testing one component alone: one task, empty config.
    pub fn for_test(component: &str) -> Self {
        let tasks = BTreeMap::from([(component.to_string(), vec![0])]);
        Self::new("test", component, 0, Arc::new(tasks), toml::Table::new(), Arc::default())
    }

    pub fn topology_name(&self) -> &str {
        &self.topology
    }

    /// Names this deployment of the topology (Storm's topology id): the same for every task,
    /// worker, restart and rebalance of one submission, and different for each submission
    /// and each local run. Components keep it with what they persist to tell a restart of
    /// their deployment from a first start. Without [`Self::with_topology_id`], the name.
    pub fn topology_id(&self) -> &str {
        &self.topology_id
    }

    /// This context, naming its deployment `id` (see [`Self::topology_id`]).
    pub fn with_topology_id(mut self, id: &str) -> Self {
        self.topology_id = id.into();
        self
    }

    pub fn component_id(&self) -> &str {
        &self.component
    }

    /// This task's id, unique in the topology.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// This task's position among its component's tasks, from 0.
    pub fn task_index(&self) -> usize {
        self.task_index
    }

    /// How many tasks this component has.
    pub fn task_count(&self) -> usize {
        self.component_tasks(&self.component).len()
    }

    /// The task ids of any component (empty if there is no such component).
    pub fn component_tasks(&self, component: &str) -> &[TaskId] {
        self.component_tasks.get(component).map(Vec::as_slice).unwrap_or(&[])
    }

    /// This component's `config` table from the topology file.
    pub fn config(&self) -> &toml::Table {
        &self.config
    }

    /// The topology's `[settings]` table.
    pub fn settings(&self) -> &toml::Table {
        &self.settings
    }

    /// Every component's id with its task ids (ackers included), sorted by id.
    pub fn components(&self) -> impl Iterator<Item = (&str, &[TaskId])> {
        self.component_tasks.iter().map(|(c, ts)| (c.as_str(), ts.as_slice()))
    }

    /// The topology's `resources/` folder (beside its file in a local run, unpacked by the
    /// supervisor in a cluster), if it has one: what relative paths of components resolve
    /// against, as Storm resolves them against the jar's `resources/`.
    pub fn resources_dir(&self) -> Option<&Path> {
        self.resources.as_deref()
    }

    /// This context, with the topology's `resources/` folder at `dir`.
    pub fn with_resources_dir(mut self, dir: Option<Arc<Path>>) -> Self {
        self.resources = dir;
        self
    }

    /// The tick interval the topology file sets for this component (`tick_secs`), if any.
    pub fn tick_secs(&self) -> Option<Duration> {
        self.tick
    }

    /// This context, with the topology file's `tick_secs` for this component.
    pub fn with_tick_secs(mut self, tick: Option<Duration>) -> Self {
        self.tick = tick;
        self
    }
}
