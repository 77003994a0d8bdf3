//! Running a topology in this process (`squall local`).
//!
//! Contract: [`run`] lays the topology out as a [`Plan`], starts every task (spouts, bolts,
//! ackers) on the tokio runtime with bounded inboxes, and returns when the run ends: by itself
//! once every spout is finished and every tree completed and every queue drained; after
//! `duration`; or on Ctrl-C (a second Ctrl-C ends it at once). On the last two, spouts are
//! deactivated and in-flight trees drain for up to the message timeout before the bolts are
//! drained and closed. About once a second it can print per-component rates to stderr. A task
//! that fails to start, or panics, ends the run with its error.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use squall_api::{Registry, Role, TaskId};

use crate::checkpoint::Checkpointing;
use crate::executor::{Control, TaskError};
use crate::launch::{self, Running};
use crate::metrics::{human, Snapshot};
use crate::plan::{Plan, PlanError};
use crate::topology::TopologyDef;

/// Why a local run ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A task failed to start or run.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A task panicked (its component and task are in the panic's own message, if anywhere).
    #[error("a task panicked: {0}")]
    Panicked(String),
    #[error("cannot listen for Ctrl-C: {0}")]
    Interrupts(std::io::Error),
    /// The state backend the topology names cannot be opened.
    #[error("cannot open the state backend \"{backend}\": {message}")]
    State { backend: String, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Print per-component rates to stderr about once a second.
    pub progress: bool,
    /// The topology's `resources/` folder (see [`squall_api::TopologyContext::resources_dir`]).
    pub resources: Option<std::path::PathBuf>,
}

#[derive(Debug)]
pub struct RunResult {
    pub plan: Plan,
    pub snapshot: Snapshot,
    /// From the moment every task was started to the end of the run.
    pub elapsed: Duration,
    /// Ended by `duration` or Ctrl-C rather than by itself.
    pub stopped: bool,
}

/// Runs a topology in this process until it ends (see the module docs).
pub async fn run(def: &TopologyDef, registry: &Registry, opts: &LocalOptions) -> Result<RunResult, RunError> {
    run_observed(def, registry, opts, |_| {}).await
}

/// What a watcher of a local run gets once every task has started (`squall local --ui`).
#[derive(Debug, Clone)]
pub struct Started {
    pub plan: Plan,
    pub metrics: crate::metrics::TopologyMetrics,
    /// Spouts' state: `Active`, `Inactive`, or `Stop` to end the run as Ctrl-C does.
    pub control: tokio::sync::watch::Sender<Control>,
    /// Where `squall tap` samples the run's emits.
    pub taps: std::sync::Arc<crate::tap::Taps>,
}

/// As [`run`], calling `on_start` once every task has started.
pub async fn run_observed(
    def: &TopologyDef,
    registry: &Registry,
    opts: &LocalOptions,
    on_start: impl FnOnce(Started),
) -> Result<RunResult, RunError> {
    // Listen before anything starts, and with one listener for the whole run: a Ctrl-C that
    // arrives while the loop below is busy is then kept, not lost.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(RunError::Interrupts)?;
    let mut plan = Plan::new(def)?;
    plan.resources = opts.resources.as_deref().map(Into::into);
    let checkpointing = Checkpointing::open(def, registry)
        .map_err(|(backend, message)| RunError::State { backend, message })?;
    let hosted: Vec<TaskId> = (0..plan.task_count() as TaskId).collect();
    let mut on_start = Some(on_start);
    let started = Instant::now();
    // A duration past what the clock can hold (centuries) is no deadline at all.
    let deadline = opts.duration.and_then(|d| tokio::time::Instant::now().checked_add(d));
    let mut stopped = false;
    let mut interrupts = 0;
    let mut reporter = ProgressReporter::new(&plan);
    // Exactly once, a failed tree restarts every task from the last committed checkpoint.
    'incarnation: loop {
        let Running { mut tasks, control, metrics, taps, .. } =
            launch::start(&plan, registry, &hosted, None, checkpointing.as_ref())?;
        if let Some(on_start) = on_start.take() {
            on_start(Started {
                plan: plan.clone(),
                metrics: metrics.clone(),
                control: control.clone(),
                taps,
            });
        }
        if stopped {
            let _ = control.send(Control::Stop);
        }
        let mut progress = tokio::time::interval(Duration::from_secs(1));
        progress.tick().await;
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        tasks.abort_all();
                        return Err(e.into());
                    }
                    Some(Err(e)) if e.is_panic() => {
                        tasks.abort_all();
                        let message = panic_message(e.into_panic());
                        return Err(RunError::Panicked(message));
                    }
                    Some(Err(_)) => {}
                },
                _ = restart_asked(checkpointing.as_ref()), if !stopped => {
                    eprintln!(
                        "a tuple tree failed with guarantee = \"exactly_once\": restarting every task \
                         from the last committed checkpoint"
                    );
                    tasks.shutdown().await;
                    continue 'incarnation;
                }
                _ = progress.tick(), if opts.progress => {
                    reporter.print(&plan, &metrics.snapshot(&plan), started.elapsed());
                }
                _ = sleep_until(deadline), if !stopped => {
                    stopped = true;
                    let _ = control.send(Control::Stop);
                }
                _ = interrupt.recv() => {
                    interrupts += 1;
                    stopped = true;
                    if interrupts > 1 {
                        eprintln!("second interrupt: stopping now, in-flight tuples are not drained");
                        tasks.abort_all();
                        break;
                    }
                    eprintln!("interrupted: deactivating spouts and draining in-flight tuples (Ctrl-C again to stop now)");
                    let _ = control.send(Control::Stop);
                }
            }
        }
        let elapsed = started.elapsed();
        let snapshot = metrics.snapshot(&plan);
        return Ok(RunResult { plan, snapshot, elapsed, stopped });
    }
}

async fn restart_asked(checkpointing: Option<&Checkpointing>) {
    match checkpointing {
        Some(c) if c.guarantee == squall_api::Guarantee::ExactlyOnce => c.restart.notified().await,
        _ => std::future::pending().await,
    }
}
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Prints one line of per-component rates per call.
struct ProgressReporter {
    last: BTreeMap<String, u64>,
    last_at: Duration,
}

impl ProgressReporter {
    fn new(plan: &Plan) -> Self {
        ProgressReporter {
            last: plan.components.iter().map(|c| (c.id.clone(), 0)).collect(),
            last_at: Duration::ZERO,
        }
    }

    fn print(&mut self, plan: &Plan, snap: &Snapshot, at: Duration) {
        let window = (at - self.last_at).as_secs_f64().max(1e-3);
        self.last_at = at;
        let mut line = format!("[{:>4}s]", at.as_secs());
        for c in &plan.components {
            let s = &snap.components[&c.id];
            let counted = if c.role == Role::Spout { s.emitted } else { s.executed };
            let prev = self.last.insert(c.id.clone(), counted).unwrap_or(0);
            let rate = (counted - prev) as f64 / window;
            let verb = if c.role == Role::Spout { "emitted" } else { "executed" };
            line.push_str(&format!(
                "  {}: {}/s {verb}, acked {}, failed {}",
                c.id,
                human(rate),
                human(s.acked as f64),
                s.failed
            ));
        }
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
