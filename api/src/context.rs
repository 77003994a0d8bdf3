//! What a task knows about where it runs.
//!
//! Contract: every spout and bolt gets a [`TopologyContext`] in `open` / `prepare`: the
//! topology's name, its own component id, task id, index among its component's tasks and
//! their count, the task ids of every component (for direct grouping), its component's
//! `config` table from the topology file, and the topology-wide settings.

use std::collections::BTreeMap;
use std::sync::Arc;

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
}
