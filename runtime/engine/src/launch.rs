//! Starting a plan's tasks: the one place spouts, bolts and ackers are spawned, for a local
//! run and for a worker alike.
//!
//! Contract: [`start`] gives every hosted task a bounded inbox (spout outcomes: unbounded, so
//! an acker never waits), wires each output to the tasks it sends to (hosted ones directly,
//! the rest through a [`Remote`]), builds each component from the registry and spawns it on
//! the tokio runtime. It returns the running tasks, the control channel that deactivates or
//! stops the spouts, and the tasks' metrics. A component that cannot be built, or whose kind
//! builds another role than the topology gives it, is an error before anything runs.
//! [`Running::rewire`] later switches the running tasks to a new plan of the same topology
//! (a live rebalance, see [`crate::executor::rewire`]); [`Running`] holds senders to every
//! task until [`Running::release_links`], which a process calls before waiting for its
//! bolts to end.

use std::sync::Arc;
use std::time::Duration;

use squall_api::{Component, Registry, Role, TaskId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::acker::{self, AckerMsg, Outcome};
use crate::checkpoint::coordinator::Coordinator;
use crate::checkpoint::Checkpointing;
use crate::executor::bolt::{AnyBolt, BoltCheckpoint, BoltExecutor};
use crate::executor::output::INBOX_BATCHES;
use crate::executor::rewire::{retire, retire_spout, Rewire, Wiring};
use crate::executor::spout::{SpoutCheckpoint, SpoutExecutor};
use crate::executor::window::{WindowExecutor, WindowForm};
use crate::executor::{context, Control, Envelope, Links, Output, TaskError};
use crate::metrics::TopologyMetrics;
use crate::plan::Plan;
use crate::tap::Taps;

/// The tasks of a plan, started.
pub struct Running {
    pub tasks: JoinSet<Result<(), TaskError>>,
    pub control: watch::Sender<Control>,
    pub metrics: TopologyMetrics,
    /// Where `squall tap` samples the hosted tasks' emits.
    pub taps: Arc<Taps>,
    /// Senders to every task of the plan: the hosted tasks' inboxes and the remote's
    /// carriers to the others.
    pub links: Links,
    /// Where [`Running::rewire`] publishes a new plan to the running tasks.
    pub rewire: Arc<Rewire>,
    /// The hosted tasks.
    pub hosted: Vec<TaskId>,
    holders: Arc<acker::Holders>,
    across_workers: bool,
}

/// A task's receiving end.
enum Inbox {
    Bolt(mpsc::Receiver<Vec<Envelope>>),
    Spout(mpsc::UnboundedReceiver<Vec<Outcome>>),
    Acker(mpsc::Receiver<Vec<AckerMsg>>),
}

/// How the tasks a process hosts reach the ones it does not: in a worker, its transport.
pub trait Remote {
    /// Takes the senders of the hosted tasks' inboxes (tuples arriving from other workers go
    /// there) and fills in, for every task hosted elsewhere, a sender that carries to it.
    fn attach(&mut self, plan: &Plan, links: &mut Links);

    /// [`Remote::attach`] again for a new plan of the same topology (a live rebalance):
    /// `links` holds the senders of the inboxes of the tasks hosted under `plan`, and gets
    /// new carriers for every task hosted elsewhere; `version` is the new plan's routing
    /// version. Nothing the old plan wired may hold an inbox of a task no longer hosted here.
    fn rewire(&mut self, plan: &Plan, version: u64, links: &mut Links);
}

/// Starts the tasks `hosted` of `plan` (all of them in local mode). In a worker, `remote`
/// is handed the inboxes of the hosted tasks and wires every other task to its worker. A
/// plan with checkpoints needs `checkpointing` (the backend this process uses).
pub fn start(
    plan: &Plan,
    registry: &Registry,
    hosted: &[TaskId],
    remote: Option<&mut dyn Remote>,
    checkpointing: Option<&Checkpointing>,
) -> Result<Running, TaskError> {
    let checkpointing = match (plan.coordinator, checkpointing) {
        (Some(_), None) => {
            return Err(TaskError {
                component: crate::plan::COORDINATOR_COMPONENT.into(),
                task: 0,
                message: "the topology has stateful bolts but no state backend was opened".into(),
            })
        }
        (Some(_), Some(c)) => Some(c),
        (None, _) => None,
    };
    let n = plan.task_count();
    let metrics = TopologyMetrics::new(n);
    // Every inbox first, so that each output can be wired to the tasks it sends to.
    let taps = Taps::new(plan);
    let rewire = Arc::new(Rewire::default());
    let mut links = Links {
        bolts: vec![None; n],
        ackers: vec![None; n],
        spouts: vec![None; n],
        taps: Some(taps.clone()),
        rewire: Some(rewire.clone()),
    };
    let mut inboxes = open_inboxes(plan, hosted, &mut links);
    // Across processes an acker's outcomes can die with its worker; in one they cannot.
    let across_workers = remote.is_some();
    if let Some(remote) = remote {
        remote.attach(plan, &mut links);
    }
    let (control, _) = watch::channel(Control::Active);
    let holders = Arc::new(acker::Holders::new(plan));
    let mut running = Running {
        tasks: JoinSet::new(),
        control,
        metrics,
        taps,
        links,
        rewire,
        hosted: hosted.to_vec(),
        holders,
        across_workers,
    };
    for &t in hosted {
        let inbox = inboxes[t as usize].take().expect("every hosted task got an inbox above");
        running.spawn(plan, registry, t, inbox, checkpointing)?;
    }
    Ok(running)
}

/// A bounded inbox (an unbounded one for a spout's outcomes) for each task of `tasks`, its
/// sender put in `links`; by task id.
fn open_inboxes(plan: &Plan, tasks: &[TaskId], links: &mut Links) -> Vec<Option<Inbox>> {
    let mut inboxes: Vec<Option<Inbox>> = (0..plan.task_count()).map(|_| None).collect();
    for &t in tasks {
        let i = t as usize;
        let role = match plan.task_component[i] {
            Some(c) => Some(plan.components[c].role),
            // The coordinator takes envelopes, as a bolt.
            None if plan.coordinator == Some(t) => Some(Role::Bolt),
            None => None,
        };
        inboxes[i] = Some(match role {
            Some(Role::Bolt) => {
                let (tx, rx) = mpsc::channel(INBOX_BATCHES);
                links.bolts[i] = Some(tx);
                Inbox::Bolt(rx)
            }
            Some(Role::Spout) => {
                let (tx, rx) = mpsc::unbounded_channel();
                links.spouts[i] = Some(tx);
                Inbox::Spout(rx)
            }
            None => {
                let (tx, rx) = mpsc::channel(INBOX_BATCHES);
                links.ackers[i] = Some(tx);
                Inbox::Acker(rx)
            }
        });
    }
    inboxes
}

impl Running {
    /// Switches the running tasks to `plan` (a live rebalance of the same topology, its task
    /// ids kept, see [`crate::plan::Numbering`]), hosting `hosted` from now on: tasks hosted
    /// before and after go on running and route by `plan` from their next batch on (see
    /// [`crate::executor::rewire`]); tasks no longer hosted get a retire marker and end;
    /// new ones start (spouts among them, under the current control). A plan with
    /// checkpoints cannot change this way: that is an error, and nothing changed.
    pub fn rewire(
        &mut self,
        plan: Arc<Plan>,
        registry: &Registry,
        hosted: &[TaskId],
        version: u64,
        remote: &mut dyn Remote,
    ) -> Result<(), TaskError> {
        let refuse = |message: String| TaskError { component: plan.name.clone(), task: 0, message };
        if plan.coordinator.is_some() {
            return Err(refuse("a topology with checkpoints cannot be rewired live".into()));
        }
        let was: std::collections::BTreeSet<TaskId> = self.hosted.iter().copied().collect();
        let now: std::collections::BTreeSet<TaskId> = hosted.iter().copied().collect();
        let added: Vec<TaskId> = now.difference(&was).copied().collect();
        let removed: Vec<TaskId> = was.difference(&now).copied().collect();
        if let Some(&t) = hosted.iter().find(|&&t| t as usize >= plan.task_count() || plan.is_hole(t)) {
            return Err(refuse(format!("the new plan has no task {t}")));
        }
        let n = plan.task_count();
        // The kept tasks' inboxes, then the new ones'.
        let mut links = Links {
            bolts: vec![None; n],
            ackers: vec![None; n],
            spouts: vec![None; n],
            taps: self.links.taps.clone(),
            rewire: Some(self.rewire.clone()),
        };
        for &t in was.intersection(&now) {
            let i = t as usize;
            links.bolts[i] = self.links.bolts.get(i).cloned().flatten();
            links.ackers[i] = self.links.ackers.get(i).cloned().flatten();
            links.spouts[i] = self.links.spouts.get(i).cloned().flatten();
        }
        let mut inboxes = open_inboxes(&plan, &added, &mut links);
        remote.rewire(&plan, version, &mut links);
        // Metrics: the same for the tasks that stay, fresh for the others.
        let tasks = (0..n)
            .map(|i| match self.metrics.tasks.get(i) {
                Some(m) if was.contains(&(i as TaskId)) && now.contains(&(i as TaskId)) => m.clone(),
                _ => Arc::default(),
            })
            .collect();
        self.metrics.tasks = tasks;
        let old = std::mem::replace(&mut self.links, links.clone());
        self.rewire.publish(Wiring {
            plan: plan.clone(),
            links,
            metrics: self.metrics.tasks.clone(),
            hosted: hosted.to_vec(),
            registry: registry.clone(),
        });
        for &t in &removed {
            if let Some(Some(tx)) = old.bolts.get(t as usize) {
                let tx = tx.clone();
                tokio::spawn(async move { tx.send(vec![retire(t)]).await });
            }
            if let Some(Some(tx)) = old.spouts.get(t as usize) {
                let _ = tx.send(vec![retire_spout()]);
            }
        }
        drop(old);
        self.hosted = hosted.to_vec();
        for &t in &added {
            let inbox = inboxes[t as usize].take().expect("every added task got an inbox above");
            self.spawn(&plan, registry, t, inbox, None)?;
        }
        Ok(())
    }

    /// Drops every sender this holds (its links, the latest wiring), so that hosted bolts
    /// end once their upstream tasks and the remote let go of their inboxes: call it before
    /// waiting for the tasks to end.
    pub fn release_links(&mut self) {
        self.links = Links::default();
        self.rewire.forget();
    }

    /// Builds task `t`'s component and spawns it.
    fn spawn(
        &mut self,
        plan: &Plan,
        registry: &Registry,
        t: TaskId,
        inbox: Inbox,
        checkpointing: Option<&Checkpointing>,
    ) -> Result<(), TaskError> {
        let i = t as usize;
        let links = &self.links;
        let metrics = &self.metrics;
        let timeout = Duration::from_secs(plan.settings.message_timeout_secs);
        let (component, inbox) = match (plan.task_component[i], inbox) {
            (None, Inbox::Bolt(inbox)) => {
                let Some(checkpointing) = checkpointing else { unreachable!("only the coordinator") };
                let coordinator = Coordinator::new(
                    plan,
                    t,
                    inbox,
                    checkpointing.clone(),
                    &links.bolts,
                    metrics.tasks[i].clone(),
                );
                self.tasks.spawn(coordinator.run());
                return Ok(());
            }
            (None, Inbox::Acker(inbox)) => {
                let spouts = links.spouts.clone();
                let ackers = plan.acker_tasks.len();
                let me =
                    plan.acker_tasks.iter().position(|&a| a == t).expect("an acker task is in acker_tasks");
                let bounds = acker::RootBounds::new(plan.spout_id_space(), plan.settings.max_spout_pending);
                let holders = (*self.holders).clone();
                let rewire = Some(self.rewire.clone());
                self.tasks.spawn(async move {
                    acker::run(inbox, spouts, timeout, me, ackers, bounds, holders, rewire).await;
                    Ok(())
                });
                return Ok(());
            }
            (Some(component), inbox) => (component, inbox),
            (None, _) => unreachable!("acker tasks get acker inboxes"),
        };
        let c = &plan.components[component];
        let task_error = |message: String| TaskError { component: c.id.clone(), task: t, message };
        let instance = registry.build(&c.kind, &c.config).map_err(|e| task_error(e.to_string()))?;
        let out = Output::new(plan, component, t, links, &metrics.tasks, registry)
            .map_err(|e| task_error(e.to_string()))?;
        let ctx = context(plan, component, t);
        let task_metrics = metrics.tasks[i].clone();
        let tick = c.tick.or_else(|| instance.tick_interval());
        match (instance, inbox) {
            (Component::Spout(spout), Inbox::Spout(inbox)) => {
                let exec = SpoutExecutor {
                    spout,
                    ctx,
                    out,
                    inbox,
                    control: self.control.subscribe(),
                    metrics: task_metrics,
                    max_pending: plan.settings.max_spout_pending,
                    drain: timeout + Duration::from_secs(2),
                    // Later than the acker's own timeout, which normally reports first.
                    expire_after: self.across_workers.then(|| timeout + Duration::from_secs(2)),
                    checkpoint: checkpointing.map(|c| SpoutCheckpoint::new(plan, t, c.clone(), links)),
                    holders: self.holders.clone(),
                    retiring: false,
                };
                self.tasks.spawn(exec.run());
            }
            (
                instance @ (Component::Bolt(_) | Component::BasicBolt(_) | Component::Stateful(_)),
                Inbox::Bolt(inbox),
            ) => {
                let (bolt, stateful) = match instance {
                    Component::Bolt(b) => (AnyBolt::Plain(b), false),
                    Component::BasicBolt(b) => (AnyBolt::Basic(b), false),
                    Component::Stateful(b) => (AnyBolt::Stateful(b), true),
                    _ => unreachable!("matched above"),
                };
                let checkpoint =
                    checkpointing.map(|c| BoltCheckpoint::new(plan, t, c.clone(), links, stateful));
                let exec = BoltExecutor::new(bolt, ctx, out, inbox, task_metrics, plan, tick)
                    .checkpointed(checkpoint);
                self.tasks.spawn(exec.run());
            }
            (instance @ (Component::Windowed(_) | Component::Aggregate(_)), Inbox::Bolt(inbox)) => {
                let Some(spec) = c.window.clone() else {
                    return Err(task_error(format!("kind {} is a windowed bolt but has no window", c.kind)));
                };
                let form = match instance {
                    Component::Windowed(b) => WindowForm::Whole(b),
                    Component::Aggregate(a) => WindowForm::Aggregate(a),
                    _ => unreachable!("matched above"),
                };
                let exec = WindowExecutor::new(form, spec, ctx, out, inbox, task_metrics, plan, component)
                    .map_err(task_error)?;
                self.tasks.spawn(exec.run());
            }
            (instance, _) => {
                let built = instance.role();
                return Err(task_error(format!(
                    "kind {} builds a {built}, but the topology uses it as a {}",
                    c.kind, c.role
                )));
            }
        }
        Ok(())
    }
}
