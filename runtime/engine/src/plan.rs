//! The plan: a validated topology laid out as tasks and streams.
//!
//! Contract: [`Plan::new`] refuses a topology with more than 65536 spout tasks (a tuple
//! tree's root id names its spout task in 16 bits), numbers every task of the topology
//! densely from 0 (spouts, then bolts, in file order, then the acker tasks), gives every
//! (component, stream) a global stream id, and lists for each stream who subscribes to it,
//! with which grouping and over which tasks. Everything that runs (executors, routing, the acker) reads this plan; nothing
//! after it looks at the topology file again. Placement of tasks on workers is not decided
//! here: `task_worker` is all zeros (one process) until a scheduler fills it in.
//!
//! [`Plan::numbered`] lays the topology out under a given [`Numbering`] instead: what a live
//! rebalance keeps, so that a task keeps its id while another component's parallelism
//! changes. A bolt that grows gets new ids after the highest in use; one that shrinks keeps
//! its first ids and leaves holes ([`Plan::is_hole`]: no task has that id). A spout whose
//! parallelism changes gets all new ids (its tasks start anew with the new task count).
//! Spout task ids stay below 65536, which root ids can name ([`Numbering::resized`] numbers
//! everything densely again rather than past it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use squall_api::{Role, StreamDecl, StreamMeta, TaskId};

use crate::acker::MAX_SPOUT_TASKS;
use crate::topology::{ComponentDef, GroupingDef, Settings, TopologyDef, MAX_TASKS};
use crate::window::WindowSpec;

/// The component id under which acker tasks appear.
pub const ACKER_COMPONENT: &str = "__acker";
/// The component id under which the checkpoint coordinator's task appears.
pub const COORDINATOR_COMPONENT: &str = "__checkpoint";

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// This deployment's id (Storm's topology id): a fresh one per plan, i.e. per local run;
    /// a worker sets its submission's, the same for every worker and restart of it.
    pub id: String,
    pub workers: usize,
    pub settings: Settings,
    /// Spouts first, then bolts, in file order.
    pub components: Vec<ComponentPlan>,
    pub streams: Vec<StreamPlan>,
    /// Per task: its component index, or `None` for a system task (an acker, the coordinator).
    pub task_component: Vec<Option<usize>>,
    /// Per task: the worker (process) that hosts it.
    pub task_worker: Vec<usize>,
    /// Per task id: an acker or the coordinator (`task_component` is `None` for those and for
    /// holes).
    system: Vec<bool>,
    pub acker_tasks: Vec<TaskId>,
    /// The checkpoint coordinator's task (after the ackers), in a topology with a stateful
    /// bolt (see [`crate::checkpoint`]).
    pub coordinator: Option<TaskId>,
    /// Task ids by component id, ackers included (as [`ACKER_COMPONENT`]).
    pub component_tasks: Arc<BTreeMap<String, Vec<TaskId>>>,
    /// The topology's `resources/` folder, handed to components in their context; `None`
    /// until the runner (local run, worker) sets it.
    pub resources: Option<Arc<Path>>,
}

#[derive(Debug, Clone)]
pub struct ComponentPlan {
    pub id: String,
    pub kind: String,
    pub role: Role,
    pub config: toml::Table,
    /// The `tick_secs` of the topology file, if set.
    pub tick: Option<Duration>,
    /// A windowed bolt's window.
    pub window: Option<WindowSpec>,
    /// A stateful bolt: its state is checkpointed.
    pub stateful: bool,
    pub tasks: Vec<TaskId>,
    /// Global stream ids of the streams this component declares, in declaration order.
    pub streams: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub component: usize,
    pub decl: StreamDecl,
    pub subscribers: Vec<Subscription>,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    /// The subscribing component's index.
    pub component: usize,
    pub grouping: GroupingDef,
    /// For fields and partial-key groupings: the positions of the grouping fields.
    pub key_fields: Vec<usize>,
    /// The subscriber's tasks.
    pub tasks: Vec<TaskId>,
}

/// A topology that cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "topology `{topology}` has {spout_tasks} spout tasks; at most {MAX_SPOUT_TASKS} are supported \
         (a tuple tree's root id keeps 16 bits for its spout task)"
    )]
    TooManySpoutTasks { topology: String, spout_tasks: usize },
    #[error("topology `{topology}` has {tasks} tasks; at most {MAX_TASKS} are supported")]
    TooManyTasks { topology: String, tasks: usize },
    /// A numbering given by a rebalance does not fit the topology.
    #[error("topology `{topology}`: the task numbering does not fit: {why}")]
    Numbering { topology: String, why: String },
}

/// Which task id each task of a topology has: per component (spouts, then bolts, in file
/// order), its tasks' ids in task-index order, then the ackers' and the coordinator's. Ids
/// are distinct and below [`MAX_TASKS`] + the topology's task count (holes included);
/// spout tasks' below [`MAX_SPOUT_TASKS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbering {
    pub components: Vec<Vec<TaskId>>,
    pub ackers: Vec<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<TaskId>,
}

impl Numbering {
    /// Every task numbered densely from 0, as [`Plan::new`] does: components' tasks in order,
    /// then `ackers` acker tasks, then the coordinator if there is one.
    pub fn dense(parallelism: &[usize], ackers: usize, coordinator: bool) -> Numbering {
        let mut next: TaskId = 0;
        let mut take = |n: usize| {
            let ids: Vec<TaskId> = (next..next + n as TaskId).collect();
            next += n as TaskId;
            ids
        };
        let components = parallelism.iter().map(|&p| take(p)).collect();
        let ackers = take(ackers);
        let coordinator = coordinator.then(|| take(1)[0]);
        Numbering { components, ackers, coordinator }
    }

    /// The size of the id space: the highest id in use + 1 (holes included).
    pub fn id_space(&self) -> usize {
        self.all().map(|t| t as usize + 1).max().unwrap_or(0)
    }

    /// Every id in use.
    pub fn all(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.components.iter().flatten().chain(&self.ackers).chain(&self.coordinator).copied()
    }

    /// This numbering with component `component` (of `spouts` spout components first) at
    /// `parallelism` tasks; every other component's tasks keep their ids. A bolt keeps its
    /// first ids and gets new ones after the highest id in use. A spout gets all new ids
    /// there: each of its tasks starts anew, so that they share out their source (partitions)
    /// by the new task count. Spout ids must stay below [`MAX_SPOUT_TASKS`] (root ids name
    /// them in 16 bits): if new ones would not, everything is numbered densely again. `None`
    /// if `component` does not exist.
    pub fn resized(&self, spouts: usize, component: usize, parallelism: usize) -> Option<Numbering> {
        let current = self.components.get(component)?;
        if current.len() == parallelism {
            return Some(self.clone());
        }
        let mut next = self.id_space();
        let mut out = self.clone();
        let tasks = &mut out.components[component];
        if component < spouts {
            if next + parallelism > MAX_SPOUT_TASKS {
                let mut sizes: Vec<usize> = self.components.iter().map(Vec::len).collect();
                sizes[component] = parallelism;
                return Some(Numbering::dense(&sizes, self.ackers.len(), self.coordinator.is_some()));
            }
            tasks.clear();
        }
        tasks.truncate(parallelism);
        while tasks.len() < parallelism {
            tasks.push(next as TaskId);
            next += 1;
        }
        Some(out)
    }

    /// Whether this numbering fits a topology whose components (the first `spouts` of them
    /// spouts) have `parallelism` tasks, with `ackers` ackers and a coordinator or not: the
    /// same sizes, each id used once, spouts dense from 0, ids below [`MAX_TASKS`] + the
    /// task count. The error says what does not fit.
    pub fn fits(
        &self,
        parallelism: &[usize],
        spouts: usize,
        ackers: usize,
        coordinator: bool,
    ) -> Result<(), String> {
        let sizes: Vec<usize> = self.components.iter().map(Vec::len).collect();
        if sizes != parallelism {
            return Err(format!(
                "it numbers {sizes:?} tasks per component, the topology has {parallelism:?}"
            ));
        }
        if self.ackers.len() != ackers || self.coordinator.is_some() != coordinator {
            return Err("its acker or coordinator tasks do not fit the topology".into());
        }
        let mut spout_ids = self.components[..spouts.min(self.components.len())].iter().flatten();
        if let Some(t) = spout_ids.find(|&&t| t as usize >= MAX_SPOUT_TASKS) {
            return Err(format!(
                "spout task id {t} is past {MAX_SPOUT_TASKS} (root ids name spout tasks in 16 bits)"
            ));
        }
        let space = self.id_space();
        if space > MAX_TASKS.saturating_add(self.all().count()) {
            return Err(format!("its ids reach {space}"));
        }
        let mut seen = vec![false; space];
        for t in self.all() {
            if std::mem::replace(&mut seen[t as usize], true) {
                return Err(format!("it gives task id {t} twice"));
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Lays out `def`; an error if it has more spout tasks than a root id can name (see
    /// [`MAX_SPOUT_TASKS`]).
    pub fn new(def: &TopologyDef) -> Result<Plan, PlanError> {
        Self::laid_out(def, None)
    }

    /// Lays out `def` with the task ids `numbering` gives (see the module docs); an error if
    /// `numbering` does not fit `def`.
    pub fn numbered(def: &TopologyDef, numbering: &Numbering) -> Result<Plan, PlanError> {
        Self::laid_out(def, Some(numbering))
    }

    fn laid_out(def: &TopologyDef, numbering: Option<&Numbering>) -> Result<Plan, PlanError> {
        let spout_tasks: usize = def.spouts.iter().map(|c| c.parallelism).sum();
        if spout_tasks > MAX_SPOUT_TASKS {
            return Err(PlanError::TooManySpoutTasks { topology: def.name.clone(), spout_tasks });
        }
        let ackers = if def.settings.acking { def.settings.ackers.max(1) } else { 0 };
        let tasks = def.components().fold(ackers, |n, c| n.saturating_add(c.parallelism));
        if tasks > MAX_TASKS {
            return Err(PlanError::TooManyTasks { topology: def.name.clone(), tasks });
        }
        let parallelism: Vec<usize> = def.components().map(|c| c.parallelism).collect();
        let dense;
        let numbering = match numbering {
            Some(n) => {
                n.fits(&parallelism, def.spouts.len(), ackers, def.checkpoints())
                    .map_err(|why| PlanError::Numbering { topology: def.name.clone(), why })?;
                n
            }
            None => {
                dense = Numbering::dense(&parallelism, ackers, def.checkpoints());
                &dense
            }
        };
        let mut components = Vec::new();
        let mut task_component = vec![None; numbering.id_space()];
        let mut component_tasks = BTreeMap::new();
        let mut streams: Vec<StreamPlan> = Vec::new();
        for (index, (c, role)) in def
            .spouts
            .iter()
            .map(|c| (c, Role::Spout))
            .chain(def.bolts.iter().map(|c| (c, Role::Bolt)))
            .enumerate()
        {
            let tasks = numbering.components[index].clone();
            for &t in &tasks {
                task_component[t as usize] = Some(index);
            }
            component_tasks.insert(c.id.clone(), tasks.clone());
            let mut stream_ids = Vec::new();
            for decl in c.streams.iter().chain(late_stream(def, c).as_ref()) {
                stream_ids.push(streams.len() as u32);
                streams.push(StreamPlan { component: index, decl: decl.clone(), subscribers: Vec::new() });
            }
            components.push(ComponentPlan {
                id: c.id.clone(),
                kind: c.kind.clone(),
                role,
                config: c.config.clone(),
                tick: c.tick_secs.map(Duration::from_secs),
                window: c.window.clone(),
                stateful: c.stateful,
                tasks,
                streams: stream_ids,
            });
        }
        let acker_tasks = numbering.ackers.clone();
        component_tasks.insert(ACKER_COMPONENT.to_string(), acker_tasks.clone());
        let coordinator = numbering.coordinator;
        if let Some(t) = coordinator {
            component_tasks.insert(COORDINATOR_COMPONENT.to_string(), vec![t]);
        }
        let mut system = vec![false; task_component.len()];
        for t in acker_tasks.iter().chain(&coordinator) {
            system[*t as usize] = true;
        }

        let mut plan = Plan {
            name: def.name.clone(),
            id: format!("{}-{:016x}", def.name, fastrand::u64(..)),
            workers: def.workers,
            settings: def.settings.clone(),
            task_worker: vec![0; task_component.len()],
            system,
            components,
            streams,
            task_component,
            acker_tasks,
            coordinator,
            component_tasks: Arc::new(component_tasks),
            resources: None,
        };
        for (bolt_index, bolt) in def.bolts.iter().enumerate() {
            let component = def.spouts.len() + bolt_index;
            for input in &bolt.inputs {
                let Some(sid) = plan.stream_id(&input.from, &input.stream) else {
                    continue;
                };
                let fields = plan.streams[sid as usize].decl.fields.clone();
                let key_fields = match &input.grouping {
                    GroupingDef::Fields(names) | GroupingDef::PartialKey(names) => {
                        names.iter().filter_map(|n| fields.index_of(n)).collect()
                    }
                    _ => Vec::new(),
                };
                let tasks = plan.components[component].tasks.clone();
                plan.streams[sid as usize].subscribers.push(Subscription {
                    component,
                    grouping: input.grouping.clone(),
                    key_fields,
                    tasks,
                });
            }
        }
        Ok(plan)
    }

    /// How many spout tasks the plan has.
    pub fn spout_task_count(&self) -> usize {
        self.components.iter().filter(|c| c.role == Role::Spout).map(|c| c.tasks.len()).sum()
    }

    /// Every spout task's id is below this (the first ids unless a live rebalance grew a
    /// spout): what a root id's spout task may be.
    pub fn spout_id_space(&self) -> usize {
        let spouts = self.components.iter().filter(|c| c.role == Role::Spout);
        spouts.flat_map(|c| &c.tasks).map(|&t| t as usize + 1).max().unwrap_or(0)
    }

    /// Whether task `t` is an acker task (not the coordinator, the other system task).
    pub fn is_acker(&self, t: TaskId) -> bool {
        self.system.get(t as usize) == Some(&true) && Some(t) != self.coordinator
    }

    /// Whether no task has id `t` (a hole a live rebalance left, see [`Numbering`]).
    pub fn is_hole(&self, t: TaskId) -> bool {
        self.task_component.get(t as usize).is_none_or(Option::is_none)
            && self.system.get(t as usize) != Some(&true)
    }

    /// The size of the task id space: every task id is below it (holes included).
    pub fn task_count(&self) -> usize {
        self.task_component.len()
    }

    /// Every task id in use, in order (no holes).
    pub fn task_ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        (0..self.task_count() as TaskId).filter(|&t| !self.is_hole(t))
    }

    /// The ids this plan gives its tasks.
    pub fn numbering(&self) -> Numbering {
        Numbering {
            components: self.components.iter().map(|c| c.tasks.clone()).collect(),
            ackers: self.acker_tasks.clone(),
            coordinator: self.coordinator,
        }
    }

    pub fn component_index(&self, id: &str) -> Option<usize> {
        self.components.iter().position(|c| c.id == id)
    }

    /// The global id of `component`'s stream `stream`.
    pub fn stream_id(&self, component: &str, stream: &str) -> Option<u32> {
        let c = self.component_index(component)?;
        self.components[c].streams.iter().copied().find(|&s| self.streams[s as usize].decl.name == stream)
    }

    /// The (interned) meta of a global stream.
    pub fn stream_meta(&self, sid: u32) -> &'static StreamMeta {
        let s = &self.streams[sid as usize];
        StreamMeta::intern(&self.components[s.component].id, &s.decl.name, &s.decl.fields)
    }

    /// Metas for every stream, indexed by global stream id.
    pub fn stream_metas(&self) -> Vec<&'static StreamMeta> {
        (0..self.streams.len() as u32).map(|s| self.stream_meta(s)).collect()
    }
}

/// The late stream of a windowed bolt built in code, which does not declare it: with the
/// fields of its first input (a validated file declares it already).
fn late_stream(def: &TopologyDef, c: &ComponentDef) -> Option<StreamDecl> {
    let name = c.window.as_ref()?.late_stream.as_ref()?;
    if c.streams.iter().any(|s| &s.name == name) {
        return None;
    }
    let fields = c
        .inputs
        .first()
        .and_then(|i| def.component(&i.from)?.streams.iter().find(|s| s.name == i.stream))
        .map(|s| s.fields.clone())
        .unwrap_or_else(squall_api::Fields::empty);
    Some(StreamDecl { name: name.clone(), fields, direct: false, passthrough: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ComponentDef, GroupingDef};

    fn def(spout_parallelism: &[usize]) -> TopologyDef {
        TopologyDef {
            name: "wide".into(),
            workers: 1,
            settings: Settings::default(),
            spouts: spout_parallelism
                .iter()
                .enumerate()
                .map(|(i, &p)| ComponentDef::new(&format!("s{i}"), "any").parallelism(p))
                .collect(),
            bolts: vec![ComponentDef::new("b", "any").parallelism(100_000)],
        }
    }

    #[test]
    fn a_window_built_in_code_gets_its_late_stream_with_its_inputs_fields() {
        use crate::window::{Size, WindowSpec};
        let spec = WindowSpec {
            late_stream: Some("late".into()),
            ..WindowSpec::tumbling(Size::Time(Duration::from_secs(10)))
        };
        let def = TopologyDef {
            name: "w".into(),
            workers: 1,
            settings: Settings::default(),
            spouts: vec![ComponentDef::new("s", "any").emits(["word", "ts"])],
            bolts: vec![
                ComponentDef::new("w", "any")
                    .input("s", GroupingDef::Shuffle)
                    .emits(["n"])
                    .window(spec.clone()),
                ComponentDef::new("late", "any").input("s", GroupingDef::Shuffle),
            ],
        };
        let plan = Plan::new(&def).unwrap();
        let late = plan.stream_id("w", "late").expect("the late stream is declared");
        assert_eq!(plan.streams[late as usize].decl.fields, squall_api::Fields::from(["word", "ts"]));
        assert_eq!(plan.components[1].window, Some(spec));
        assert!(plan.stream_id("w", "default").is_some());
    }

    #[test]
    fn a_resized_bolt_keeps_every_other_id_and_grows_after_the_highest() {
        let dense = Numbering::dense(&[2, 3, 2], 1, false);
        assert_eq!(dense.components, vec![vec![0, 1], vec![2, 3, 4], vec![5, 6]]);
        assert_eq!(dense.ackers, vec![7]);
        let grown = dense.resized(1, 1, 5).unwrap();
        assert_eq!(grown.components, vec![vec![0, 1], vec![2, 3, 4, 8, 9], vec![5, 6]]);
        assert_eq!(grown.ackers, vec![7]);
        let shrunk = grown.resized(1, 1, 2).unwrap();
        assert_eq!(shrunk.components[1], vec![2, 3]);
        assert_eq!(shrunk.id_space(), 8, "ids 4, 8 and 9 are gone; 4 is a hole");
        let spout = grown.resized(1, 0, 3).unwrap();
        assert_eq!(spout.components[0], vec![10, 11, 12], "a resized spout's tasks all start anew");
        assert_eq!(spout.components[1..], grown.components[1..], "the others keep their ids");
        let crowded = Numbering { ackers: vec![MAX_SPOUT_TASKS as TaskId], ..dense.clone() };
        assert_eq!(
            crowded.resized(1, 0, 3).unwrap(),
            Numbering::dense(&[3, 3, 2], 1, false),
            "a spout id past what a root can name renumbers densely"
        );
        assert!(dense.resized(1, 7, 1).is_none());
    }

    #[test]
    fn a_plan_numbered_with_holes_places_each_task_by_its_id() {
        let topology = TopologyDef {
            name: "n".into(),
            workers: 1,
            settings: Settings::default(),
            spouts: vec![ComponentDef::new("s", "any").emits(["n"])],
            bolts: vec![
                ComponentDef::new("a", "any").parallelism(3).input("s", GroupingDef::Shuffle).emits(["n"]),
                ComponentDef::new("b", "any").input("a", GroupingDef::Shuffle),
            ],
        };
        let numbering =
            Numbering::dense(&[1, 3, 1], 1, false).resized(1, 1, 2).unwrap().resized(1, 1, 4).unwrap();
        assert_eq!(numbering.components[1], vec![1, 2, 6, 7]);
        let mut def = topology.clone();
        def.bolts[0].parallelism = 4;
        let plan = Plan::numbered(&def, &numbering).unwrap();
        assert_eq!(plan.task_count(), 8);
        assert!(plan.is_hole(3) && !plan.is_acker(3), "a's third task went away");
        assert!(plan.is_acker(5) && !plan.is_hole(5));
        assert_eq!(plan.task_ids().collect::<Vec<_>>(), vec![0, 1, 2, 4, 5, 6, 7]);
        assert_eq!(plan.task_component[7], Some(1));
        let sid = plan.stream_id("s", "default").unwrap();
        assert_eq!(plan.streams[sid as usize].subscribers[0].tasks, vec![1, 2, 6, 7]);
        assert_eq!(plan.numbering(), numbering);
        let err = Plan::numbered(&topology, &numbering).expect_err("a has 3 tasks in the file").to_string();
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn spout_task_ids_must_fit_a_root() {
        let plan = Plan::new(&def(&[MAX_SPOUT_TASKS - 1, 1])).expect("65536 spout tasks fit");
        assert_eq!(plan.task_count(), MAX_SPOUT_TASKS + 100_000 + 1, "bolts and ackers are not limited");
        let err = Plan::new(&def(&[MAX_SPOUT_TASKS, 1])).expect_err("65537 spout tasks do not").to_string();
        assert!(err.contains("65537 spout tasks") && err.contains("at most 65536"), "{err}");
    }
}
