//! The bolt executor. See the module docs of `executor` for its contract.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use squall_api::{
    BasicBolt, BasicCollector, Bolt, BoltCollector, DynStateful, EmitError, Fields, StreamMeta, TaskId,
    TopologyContext, TreeIds, Tuple, Value, Values, SYSTEM_COMPONENT, TICK_STREAM,
};
use tokio::sync::mpsc;

use super::end_of_stream::{upstream_tasks, Ends, END_OF_STREAM};
use super::rewire::RETIRE;
use super::{Envelope, Output, TaskError};
use crate::checkpoint::align::{Alignment, Item};
use crate::checkpoint::pending::Uncommitted;
use crate::checkpoint::{marker, marker_id, Checkpointing, BARRIER, COMMITTED, SAVED};
use crate::metrics::{TaskMetrics, SAMPLE_EVERY};

/// Batches are flushed at least this often while a bolt is busy.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// A bolt of any flavour but windowed.
pub enum AnyBolt {
    Plain(Box<dyn Bolt>),
    Basic(Box<dyn BasicBolt>),
    Stateful(Box<dyn DynStateful>),
}

/// A bolt task's part in checkpoints (see [`crate::checkpoint`]).
pub struct BoltCheckpoint {
    pub align: Alignment<Envelope>,
    pub checkpointing: Checkpointing,
    /// A stateful task's way to report to the coordinator.
    pub coordinator: Option<mpsc::Sender<Vec<Envelope>>>,
    pub uncommitted: Uncommitted,
}

impl BoltCheckpoint {
    /// For task `task` of `plan`; `stateful` tasks report to the coordinator through `links`.
    pub fn new(
        plan: &crate::plan::Plan,
        task: TaskId,
        checkpointing: Checkpointing,
        links: &super::Links,
        stateful: bool,
    ) -> Self {
        let component = plan.task_component[task as usize].unwrap_or(0);
        let aligned = checkpointing.guarantee == squall_api::Guarantee::ExactlyOnce;
        let coordinator = match (stateful, plan.coordinator) {
            (true, Some(c)) => links.bolts.get(c as usize).cloned().flatten(),
            _ => None,
        };
        BoltCheckpoint {
            align: Alignment::new(&upstream_tasks(plan, component), aligned),
            checkpointing,
            coordinator,
            uncommitted: Uncommitted::default(),
        }
    }
}

pub struct BoltExecutor {
    pub bolt: AnyBolt,
    pub ctx: TopologyContext,
    pub out: Output,
    pub inbox: mpsc::Receiver<Vec<Envelope>>,
    pub metrics: Arc<TaskMetrics>,
    /// Every stream's meta, by global stream id.
    pub metas: Vec<&'static StreamMeta>,
    pub tick: Option<Duration>,
    /// The end-of-stream markers of the upstream tasks, forwarded once all came.
    pub ends: Ends,
    /// In a topology with checkpoints.
    pub checkpoint: Option<BoltCheckpoint>,
    /// A [`RETIRE`] marker came: the task ends (a live rebalance moved it away).
    retired: bool,
}

/// The collector handed to `execute`.
struct Collector<'a> {
    out: &'a mut Output,
}

impl BoltCollector for Collector<'_> {
    #[inline]
    fn emit_to(
        &mut self,
        stream: &str,
        anchors: &[&Tuple],
        values: Values,
        direct_task: Option<TaskId>,
    ) -> Result<(), EmitError> {
        self.out.emit_bolt(stream, anchors, values, direct_task)
    }

    #[inline]
    fn ack(&mut self, input: Tuple) {
        self.out.ack(&input)
    }

    fn fail(&mut self, input: Tuple) {
        let roots: SmallVec<[u64; 2]> = input.tree().anchors.iter().map(|(r, _)| *r).collect();
        self.out.fail_roots(roots)
    }

    fn reset_timeout(&mut self, input: &Tuple) {
        self.out.reset_timeout(input)
    }

    fn report_error(&mut self, error: &str) {
        self.out.report_error(error)
    }

    fn last_targets(&self) -> &[TaskId] {
        self.out.last_targets()
    }
}

impl BoltExecutor {
    pub fn new(
        bolt: AnyBolt,
        ctx: TopologyContext,
        out: Output,
        inbox: mpsc::Receiver<Vec<Envelope>>,
        metrics: Arc<TaskMetrics>,
        plan: &crate::plan::Plan,
        tick: Option<Duration>,
    ) -> Self {
        let ends = Ends::new(&upstream_tasks(plan, plan.task_component[out.task as usize].unwrap_or(0)));
        BoltExecutor {
            bolt,
            ctx,
            out,
            inbox,
            metrics,
            metas: plan.stream_metas(),
            tick,
            ends,
            checkpoint: None,
            retired: false,
        }
    }

    /// Takes part in checkpoints (a topology with stateful bolts).
    pub fn checkpointed(mut self, checkpoint: Option<BoltCheckpoint>) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    fn fail(&self, message: String) -> TaskError {
        TaskError { component: self.out.component().to_string(), task: self.out.task, message }
    }

    pub async fn run(mut self) -> Result<(), TaskError> {
        let prepared = match &mut self.bolt {
            AnyBolt::Plain(b) => b.prepare(&self.ctx).await,
            AnyBolt::Basic(b) => b.prepare(&self.ctx).await,
            AnyBolt::Stateful(b) => b.prepare(&self.ctx).await,
        };
        prepared.map_err(|e| self.fail(format!("prepare failed: {e}")))?;
        self.restore().await?;
        let tick_meta = StreamMeta::intern(SYSTEM_COMPONENT, TICK_STREAM, &Fields::empty());
        let mut ticker = self.tick.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut last_flush = Instant::now();
        if self.ends.all_ended() {
            // No upstream task: nothing will ever come.
            self.out.end_of_stream();
        }
        loop {
            // Idle time: from here to the next batch or tick, when the inbox is empty.
            let waiting = self.inbox.is_empty().then(Instant::now);
            // Ticks first: they are rare, and a busy inbox must not starve them.
            tokio::select! {
                biased;
                _ = tick(&mut ticker) => {
                    if let Some(waiting) = waiting {
                        self.out.counters.idle_ns += waiting.elapsed().as_nanos() as u64;
                    }
                    self.follow().await?;
                    let tuple = Tuple::new(tick_meta, TaskId::MAX, Values::new());
                    self.execute(tuple).await;
                }
                batch = self.inbox.recv() => {
                    let Some(batch) = batch else { break };
                    if let Some(waiting) = waiting {
                        self.out.counters.idle_ns += waiting.elapsed().as_nanos() as u64;
                    }
                    self.metrics.queued.fetch_sub(batch.len() as i64, Relaxed);
                    self.follow().await?;
                    for env in batch {
                        if env.stream == RETIRE {
                            self.retired = true;
                            break;
                        }
                        self.receive(env).await?;
                        while let Some((from, item)) = self.checkpoint.as_mut().and_then(|c| c.align.next_ready()) {
                            let env = match item {
                                Item::Tuple(env) => env,
                                Item::Barrier(id) => marker(BARRIER, from, id, []),
                                Item::End => super::end_of_stream::marker(from),
                            };
                            self.receive(env).await?;
                        }
                    }
                }
            }
            if self.retired {
                break;
            }
            let now = Instant::now();
            if self.inbox.is_empty() || now - last_flush >= MAX_LINGER {
                self.out.flush_all().await;
                self.out.counters.publish(&self.metrics);
                last_flush = now;
            }
        }
        self.out.flush_all().await;
        match &mut self.bolt {
            AnyBolt::Plain(b) => b.cleanup().await,
            AnyBolt::Basic(b) => b.cleanup().await,
            AnyBolt::Stateful(b) => b.cleanup().await,
        }
        self.out.flush_all().await;
        self.out.counters.publish(&self.metrics);
        Ok(())
    }

    /// Routes by the process's latest wiring, if it published one since (see
    /// [`super::rewire`]): one relaxed load when it did not.
    #[inline]
    async fn follow(&mut self) -> Result<(), TaskError> {
        let Some(wiring) = self.out.follow().await? else { return Ok(()) };
        self.metas = wiring.plan.stream_metas();
        if self.ends.rewire(&wiring.upstream_of(self.out.component())) {
            self.out.end_of_stream();
        }
        Ok(())
    }

    /// One envelope from the inbox: a tuple to execute, or a marker (end of stream,
    /// checkpoints) to follow.
    #[inline]
    async fn receive(&mut self, env: Envelope) -> Result<(), TaskError> {
        match env.stream {
            END_OF_STREAM => {
                if let Some(c) = &mut self.checkpoint {
                    let (passed, completed) = c.align.end(env.source_task);
                    if let Some(id) = completed {
                        self.complete(id).await?;
                    }
                    if !passed {
                        return Ok(());
                    }
                }
                if self.ends.end(env.source_task) {
                    self.out.end_of_stream();
                }
            }
            BARRIER => {
                let (Some(c), Some(id)) = (&mut self.checkpoint, marker_id(&env)) else { return Ok(()) };
                if let Some(id) = c.align.barrier(env.source_task, id) {
                    self.complete(id).await?;
                }
            }
            COMMITTED => {
                let (Some(c), Some(id)) = (&mut self.checkpoint, marker_id(&env)) else { return Ok(()) };
                c.uncommitted.committed(id);
                self.metrics.checkpoints.fetch_add(1, Relaxed);
                let took = c.checkpointing.due_at(id).elapsed().unwrap_or_default();
                self.metrics.checkpoint_ms.store(took.as_millis() as u64, Relaxed);
            }
            SAVED => {}
            _ => {
                let env = match &mut self.checkpoint {
                    Some(c) => match c.align.tuple(env.source_task, env) {
                        Some(env) => env,
                        None => return Ok(()),
                    },
                    None => env,
                };
                let meta = self.metas[env.stream as usize];
                let tree = TreeIds { anchors: env.anchors, ..TreeIds::default() };
                let tuple = Tuple::with_tree(meta, env.source_task, env.values, tree);
                // Counted here: tick tuples are the system's, not the topology's.
                self.out.counters.executed += 1;
                self.execute(tuple).await;
                if self.out.has_full() {
                    self.out.flush_full().await;
                }
            }
        }
        Ok(())
    }

    /// Before the first tuple: a stateful task's committed state.
    async fn restore(&mut self) -> Result<(), TaskError> {
        let (AnyBolt::Stateful(bolt), Some(c)) = (&mut self.bolt, &self.checkpoint) else { return Ok(()) };
        let backend = &c.checkpointing.backend;
        let entries = backend.load(self.out.component()).await.map_err(|e| TaskError {
            component: self.out.component().to_string(),
            task: self.out.task,
            message: format!("cannot load its state from {}: {e}", backend.describe()),
        })?;
        bolt.restore(entries, false).map_err(|e| TaskError {
            component: self.out.component().to_string(),
            task: self.out.task,
            message: format!("cannot restore its state from {}: {e}", backend.describe()),
        })?;
        self.metrics.state_entries.store(bolt.entries() as u64, Relaxed);
        Ok(())
    }

    /// Checkpoint `id` completed at this task: a stateful task prepares its changes and
    /// reports; every task passes the barrier on.
    async fn complete(&mut self, id: u64) -> Result<(), TaskError> {
        let Some(c) = &mut self.checkpoint else { return Ok(()) };
        if let (AnyBolt::Stateful(bolt), Some(coordinator)) = (&mut self.bolt, &c.coordinator) {
            let (component, task) = (self.out.component().to_string(), self.out.task);
            let task_error = |message: String| TaskError { component: component.clone(), task, message };
            let changes = bolt.checkpoint(id).map_err(|e| task_error(format!("checkpoint {id}: {e}")))?;
            c.uncommitted.add(id, changes);
            let backend = &c.checkpointing.backend;
            backend.prepare(&component, task, id, &c.uncommitted.all()).await.map_err(|e| {
                task_error(format!("checkpoint {id} could not be saved in {}: {e}", backend.describe()))
            })?;
            self.metrics.state_entries.store(bolt.entries() as u64, Relaxed);
            let saved = marker(SAVED, self.out.task, id, [Value::Null, Value::Bool(false)]);
            // A coordinator that ended (the run is ending) needs no report.
            let _ = coordinator.send(vec![saved]).await;
        }
        self.out.broadcast(&marker(BARRIER, self.out.task, id, []));
        if self.out.has_full() {
            self.out.flush_full().await;
        }
        Ok(())
    }

    #[inline]
    async fn execute(&mut self, tuple: Tuple) {
        let sample = self.out.counters.executed.is_multiple_of(SAMPLE_EVERY);
        let started = sample.then(Instant::now);
        match &mut self.bolt {
            AnyBolt::Stateful(_) | AnyBolt::Basic(_) => {
                // Both take the input by reference, anchor every emit to it, and have it
                // acked on Ok and failed on Err.
                let mut collector = Collector { out: &mut self.out };
                let mut basic = BasicCollector::new(&mut collector, &tuple);
                let result = match &mut self.bolt {
                    AnyBolt::Stateful(b) => b.execute(&tuple, &mut basic).await,
                    AnyBolt::Basic(b) => b.execute(&tuple, &mut basic).await,
                    AnyBolt::Plain(_) => unreachable!("matched above"),
                };
                match result {
                    Ok(()) => self.out.ack(&tuple),
                    Err(e) => {
                        self.out.report_error(&format!("execute failed: {e}"));
                        self.out.fail_roots(tuple.tree().anchors.iter().map(|(r, _)| *r));
                    }
                }
            }
            AnyBolt::Plain(b) => {
                // Kept to fail the input's trees if execute errs after taking the tuple.
                let roots: SmallVec<[u64; 2]> = if self.out.acking {
                    tuple.tree().anchors.iter().map(|(r, _)| *r).collect()
                } else {
                    SmallVec::new()
                };
                let result = b.execute(tuple, &mut Collector { out: &mut self.out }).await;
                if let Err(e) = result {
                    self.out.report_error(&format!("execute failed: {e}"));
                    self.out.fail_roots(roots);
                }
            }
        }
        if let Some(started) = started {
            self.out.counters.sample_execute(started.elapsed().as_nanos() as u64);
        }
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
