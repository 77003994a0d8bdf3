//! The UI's [`Source`] for a local run (`squall local FILE --ui ADDR`): one topology, one
//! pseudo-supervisor `local` with one worker that hosts every task.
//!
//! Contract: figures are read live from the run's shared task metrics. Actions: activate and
//! deactivate switch the spouts (as a cluster's workers are told), kill stops the run as
//! Ctrl-C does (spouts deactivated, in-flight trees drained); rebalance is refused (409): a
//! local run has one process.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use squall_api::{Role, TaskId};
use squall_engine::executor::Control;
use squall_engine::metrics::TopologyMetrics;
use squall_engine::plan::Plan;
use squall_engine::tap::{TapSession, Taps};
use tokio::sync::watch;

use crate::view::{
    grouping_name, Action, ActionError, ClusterView, ComponentView, EdgeView, Source, SupervisorView,
    TopologyView, WorkerView,
};

/// A local run as the UI sees it.
pub struct LocalSource {
    plan: Plan,
    metrics: TopologyMetrics,
    control: watch::Sender<Control>,
    taps: Arc<Taps>,
    status: Mutex<&'static str>,
    started: Instant,
}

impl LocalSource {
    pub fn new(
        plan: Plan,
        metrics: TopologyMetrics,
        control: watch::Sender<Control>,
        taps: Arc<Taps>,
    ) -> LocalSource {
        LocalSource { plan, metrics, control, taps, status: Mutex::new("ACTIVE"), started: Instant::now() }
    }

    fn status(&self) -> &'static str {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn view(&self) -> TopologyView {
        let plan = &self.plan;
        let components = plan
            .components
            .iter()
            .map(|c| ComponentView {
                id: c.id.clone(),
                kind: c.kind.clone(),
                spout: c.role == Role::Spout,
                tasks: c.tasks.clone(),
            })
            .collect();
        let edges = plan
            .streams
            .iter()
            .flat_map(|s| {
                s.subscribers.iter().map(move |sub| EdgeView {
                    from: plan.components[s.component].id.clone(),
                    to: plan.components[sub.component].id.clone(),
                    stream: s.decl.name.clone(),
                    grouping: grouping_name(&sub.grouping),
                })
            })
            .collect();
        let all: Vec<TaskId> = (0..plan.task_count() as TaskId).collect();
        TopologyView {
            name: plan.name.clone(),
            id: plan.id.clone(),
            status: self.status().into(),
            uptime_secs: self.started.elapsed().as_secs(),
            message_timeout_secs: plan.settings.message_timeout_secs,
            ackers: plan.acker_tasks.len(),
            workers: vec![WorkerView {
                index: 0,
                supervisor: "local".into(),
                host: "localhost".into(),
                port: 0,
                tasks: all.clone(),
                reporting: true,
                restarts: 0,
            }],
            components,
            edges,
            figures: self.metrics.figures(&all),
            elapsed_secs: self.metrics.started.elapsed().as_secs_f64(),
        }
    }
}

impl Source for LocalSource {
    fn cluster(&self) -> ClusterView {
        ClusterView {
            supervisors: vec![SupervisorView {
                id: "local".into(),
                host: "localhost".into(),
                slots_total: 1,
                slots_used: 1,
                alive: true,
                last_heartbeat_secs: 0.0,
            }],
            topologies: vec![self.view()],
            worker_restarts: 0,
        }
    }

    fn topology(&self, name: &str) -> Option<TopologyView> {
        (name == self.plan.name || name == self.plan.id).then(|| self.view())
    }

    fn act(&self, name: &str, action: Action) -> Result<(), ActionError> {
        if name != self.plan.name && name != self.plan.id {
            return Err(ActionError { status: 404, message: format!("no topology named `{name}`") });
        }
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if *status == "KILLED" {
            return Err(ActionError { status: 409, message: format!("topology `{name}` is being killed") });
        }
        let (control, to) = match action {
            Action::Activate => (Control::Active, "ACTIVE"),
            Action::Deactivate => (Control::Inactive, "INACTIVE"),
            Action::Kill { .. } => (Control::Stop, "KILLED"),
            Action::Rebalance { .. } => {
                return Err(ActionError {
                    status: 409,
                    message: "a local run cannot be rebalanced: it runs in one process".into(),
                })
            }
        };
        *status = to;
        let _ = self.control.send(control);
        Ok(())
    }

    fn tap(&self, name: &str, component: &str, stream: Option<&str>) -> Result<TapSession, ActionError> {
        if name != self.plan.name && name != self.plan.id {
            return Err(ActionError { status: 404, message: format!("no topology named `{name}`") });
        }
        self.taps.open(component, stream).map_err(|e| ActionError { status: 404, message: e.to_string() })
    }
}

/// What `squall local --ui` hands [`squall_engine::local::run_observed`]: once the run has
/// started, serves its UI on `listener` (bound beforehand, so a bad address fails before the
/// run) until the process ends.
pub fn serve_when_started(
    listener: tokio::net::TcpListener,
    options: crate::UiOptions,
) -> impl FnOnce(squall_engine::local::Started) {
    move |started| {
        let source = std::sync::Arc::new(LocalSource::new(
            started.plan,
            started.metrics,
            started.control,
            started.taps,
        ));
        let router = crate::router(source, options);
        tokio::spawn(async move {
            if let Err(e) = crate::serve(listener, router, std::future::pending()).await {
                tracing::error!("the ui stopped serving: {e}");
            }
        });
    }
}
