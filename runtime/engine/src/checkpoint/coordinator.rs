//! The coordinator task: commits each checkpoint once every participant saved it.
//!
//! Contract: [`Coordinator::run`] reads [`super::SAVED`] reports from its inbox, feeds them to a
//! [`Tracker`], and for each complete checkpoint commits it in the backend with the spouts'
//! positions as its [`Meta`], then sends [`super::COMMITTED`] to every stateful task (through
//! weak senders: the coordinator never keeps a task's inbox open). A commit that fails is
//! logged and counted as an error; the next complete checkpoint carries its changes. It ends
//! when every spout and stateful task has ended (its inbox closes).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use squall_api::{Participant, TaskId, Value};
use tokio::sync::mpsc;

use super::tracker::{Complete, Tracker};
use super::{marker, marker_id, Checkpointing, Meta, COMMITTED, SAVED};
use crate::executor::{Envelope, TaskError};
use crate::metrics::{ErrorNote, TaskMetrics};
use crate::plan::Plan;

/// See the module docs.
pub struct Coordinator {
    pub task: TaskId,
    pub inbox: mpsc::Receiver<Vec<Envelope>>,
    pub checkpointing: Checkpointing,
    pub tracker: Tracker,
    /// Stateful tasks as the backend names them, with a way to tell them of commits.
    pub stateful: Vec<(Participant, Option<mpsc::WeakSender<Vec<Envelope>>>)>,
    /// By spout task: its component and index in it.
    pub spouts: HashMap<TaskId, (String, usize)>,
    /// Spout components and their task counts.
    pub spout_components: Vec<(String, usize)>,
    pub metrics: Arc<TaskMetrics>,
}

impl Coordinator {
    /// The coordinator of `plan`, telling stateful tasks through `bolts` (a plan's links).
    pub fn new(
        plan: &Plan,
        task: TaskId,
        inbox: mpsc::Receiver<Vec<Envelope>>,
        checkpointing: Checkpointing,
        bolts: &[Option<mpsc::Sender<Vec<Envelope>>>],
        metrics: Arc<TaskMetrics>,
    ) -> Self {
        let mut stateful = Vec::new();
        let mut spouts = HashMap::new();
        let mut spout_components = Vec::new();
        let mut participants = Vec::new();
        for c in &plan.components {
            if c.role == squall_api::Role::Spout {
                spout_components.push((c.id.clone(), c.tasks.len()));
                for (i, &t) in c.tasks.iter().enumerate() {
                    spouts.insert(t, (c.id.clone(), i));
                    participants.push(t);
                }
            } else if c.stateful {
                for &t in &c.tasks {
                    let tx = bolts.get(t as usize).and_then(|b| b.as_ref()).map(|b| b.downgrade());
                    stateful.push((Participant { component: c.id.clone(), task: t }, tx));
                    participants.push(t);
                }
            }
        }
        Coordinator {
            task,
            inbox,
            checkpointing,
            tracker: Tracker::new(participants),
            stateful,
            spouts,
            spout_components,
            metrics,
        }
    }

    pub async fn run(mut self) -> Result<(), TaskError> {
        while let Some(batch) = self.inbox.recv().await {
            for env in batch {
                if env.stream != SAVED {
                    continue;
                }
                let Some(id) = marker_id(&env) else { continue };
                let position = env.values.get(1).cloned().unwrap_or(Value::Null);
                let last = env.values.get(2).and_then(Value::as_bool).unwrap_or(false);
                if let Some(done) = self.tracker.saved(env.source_task, id, position, last) {
                    self.commit(done).await;
                }
            }
        }
        Ok(())
    }

    async fn commit(&mut self, done: Complete) {
        let mut meta = Meta::default();
        for (component, tasks) in &self.spout_components {
            meta.positions.insert(component.clone(), vec![Value::Null; *tasks]);
        }
        for (task, position) in done.positions {
            if let Some((component, index)) = self.spouts.get(&task) {
                if let Some(slots) = meta.positions.get_mut(component) {
                    slots[*index] = position;
                }
            }
        }
        let participants: Vec<Participant> = self.stateful.iter().map(|(p, _)| p.clone()).collect();
        let committed = match meta.encode() {
            Ok(bytes) => self.checkpointing.backend.commit(done.id, &participants, &bytes).await,
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            let message = format!(
                "checkpoint {} could not be committed in {}: {e}",
                done.id,
                self.checkpointing.backend.describe()
            );
            tracing::error!("{message}");
            self.metrics.errors.fetch_add(1, Relaxed);
            if let Ok(mut last) = self.metrics.last_error.lock() {
                *last = Some(ErrorNote::now(&message));
            }
            return;
        }
        tracing::debug!("checkpoint {} committed", done.id);
        for (_, tx) in &self.stateful {
            // A task that ended no longer needs to hear it.
            let Some(tx) = tx.as_ref().and_then(|w| w.upgrade()) else { continue };
            let commit = vec![marker(COMMITTED, self.task, done.id, [])];
            // Not awaited here: a task whose inbox is full may itself be waiting to report
            // to this coordinator.
            tokio::spawn(async move {
                let _ = tx.send(commit).await;
            });
        }
    }
}
