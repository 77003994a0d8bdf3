//! The spout executor. See the module docs of `executor` for its contract.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use squall_api::{
    EmitError, Guarantee, MessageId, Spout, SpoutCollector, TaskId, TopologyContext, Value, Values,
};
use tokio::sync::{mpsc, watch};

use super::in_flight::InFlight;
use super::rewire::RETIRE_ROOT;
use super::{Control, Envelope, Output, TaskError};
use crate::acker::{AckerMsg, Holders, Outcome, TIMED_OUT};
use crate::checkpoint::{marker, Checkpointing, Meta, BARRIER, SAVED};
use crate::metrics::{add_failed_by, new_histogram, TaskMetrics, FAILED, TIMEOUT};

/// How long an idle spout waits before asking again.
const IDLE_WAIT: Duration = Duration::from_millis(1);
/// Batches are flushed at least this often while a spout keeps emitting.
const MAX_LINGER: Duration = Duration::from_millis(1);

pub struct SpoutExecutor {
    pub spout: Box<dyn Spout>,
    pub ctx: TopologyContext,
    pub out: Output,
    pub inbox: mpsc::UnboundedReceiver<Vec<Outcome>>,
    pub control: watch::Receiver<Control>,
    pub metrics: Arc<TaskMetrics>,
    pub max_pending: usize,
    /// How long a stop waits for in-flight trees.
    pub drain: Duration,
    /// In a worker: a tree with no outcome this long after its emit is failed by the spout
    /// itself (Storm's spout-side timeout), since its outcome may have died with another
    /// worker's acker. This clock ignores `reset_timeout`: a bolt
    /// holding a tuple past it gets the tuple replayed. None in one process, where the
    /// acker always reports.
    pub expire_after: Option<Duration>,
    /// In a topology with checkpoints.
    pub checkpoint: Option<SpoutCheckpoint>,
    /// Names who failed a tree or held it when it timed out.
    pub holders: Arc<Holders>,
    /// A retire outcome came (see [`super::rewire`]): the task stops emitting, drains what is
    /// in flight and ends, without an end-of-stream marker.
    pub retiring: bool,
}

/// A spout task's part in checkpoints (see [`crate::checkpoint`]).
pub struct SpoutCheckpoint {
    pub checkpointing: Checkpointing,
    pub coordinator: Option<mpsc::Sender<Vec<Envelope>>>,
    /// Its component, its index in it, and the component's task count.
    pub component: String,
    pub index: usize,
    pub tasks: usize,
    /// The next checkpoint id this task may send.
    pub next: u64,
    /// Exactly once: barriers sent whose report waits until every tree emitted before them
    /// completed (a commit must not cover a record whose tree may still fail), oldest first.
    waiting: VecDeque<Waiting>,
}

/// A barrier's report, held back (see [`SpoutCheckpoint`]).
struct Waiting {
    saved: Envelope,
    /// When the barrier went out: trees emitted at or before it count.
    at: Instant,
    /// Trees emitted before it still in flight.
    remaining: usize,
}

impl SpoutCheckpoint {
    pub fn new(
        plan: &crate::plan::Plan,
        task: TaskId,
        checkpointing: Checkpointing,
        links: &super::Links,
    ) -> Self {
        let c = &plan.components[plan.task_component[task as usize].unwrap_or(0)];
        SpoutCheckpoint {
            checkpointing,
            coordinator: plan.coordinator.and_then(|t| links.bolts.get(t as usize).cloned().flatten()),
            component: c.id.clone(),
            index: c.tasks.iter().position(|&t| t == task).unwrap_or(0),
            tasks: c.tasks.len(),
            next: 0,
            waiting: VecDeque::new(),
        }
    }
}

/// How often a spout looks for trees past `expire_after`.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// The collector handed to `next_tuple`.
struct Collector<'a> {
    out: &'a mut Output,
    pending: &'a mut InFlight,
    /// Message ids to ack at once (acking off, or a tuple that went nowhere).
    instant_acks: &'a mut Vec<MessageId>,
    /// The emit time of this call's reliable tuples: read once per call, not per tuple.
    now: Option<Instant>,
}

impl SpoutCollector for Collector<'_> {
    #[inline]
    fn emit_to(
        &mut self,
        stream: &str,
        values: Values,
        msg_id: Option<MessageId>,
        direct_task: Option<TaskId>,
    ) -> Result<(), EmitError> {
        match msg_id {
            Some(msg_id) if self.out.acking => {
                let root = self.pending.next_root();
                let xor = self.out.emit_spout(stream, values, Some(root), direct_task)?;
                if xor == 0 {
                    self.instant_acks.push(msg_id);
                } else {
                    let now = *self.now.get_or_insert_with(Instant::now);
                    self.pending.insert(root, msg_id, now);
                    self.out.to_acker(AckerMsg::Init { root, val: xor });
                }
            }
            Some(msg_id) => {
                self.out.emit_spout(stream, values, None, direct_task)?;
                self.instant_acks.push(msg_id);
            }
            None => {
                self.out.emit_spout(stream, values, None, direct_task)?;
            }
        }
        Ok(())
    }

    fn report_error(&mut self, error: &str) {
        self.out.report_error(error)
    }

    fn last_targets(&self) -> &[TaskId] {
        self.out.last_targets()
    }
}

impl SpoutExecutor {
    fn fail(&self, message: String) -> TaskError {
        TaskError { component: self.out.component().to_string(), task: self.out.task, message }
    }

    pub async fn run(mut self) -> Result<(), TaskError> {
        self.spout.open(&self.ctx).await.map_err(|e| self.fail(format!("open failed: {e}")))?;
        self.restore().await?;
        let mut pending = InFlight::new(self.out.task);
        let mut instant_acks: Vec<MessageId> = Vec::new();
        let mut histogram = new_histogram();
        let mut state = *self.control.borrow_and_update();
        if state == Control::Active {
            self.spout.activate().await;
        }
        let mut stop_deadline: Option<Instant> =
            (state == Control::Stop).then(|| Instant::now() + self.drain);
        let mut inbox_open = true;
        let mut control_open = true;
        let mut last_flush = Instant::now();
        let mut last_merge = Instant::now();
        let mut last_expire = Instant::now();
        let mut calls: u64 = 0;
        // Whether the end-of-stream marker went out.
        let mut ended = false;
        // Until when a retired task drains its in-flight trees.
        let mut retiring: Option<Instant> = None;
        loop {
            // Outcomes first: they free pending slots and may queue replays.
            while let Ok(batch) = self.inbox.try_recv() {
                self.apply(batch, &mut pending, &mut histogram).await;
            }
            // A live rebalance: emit by the new plan from here on (see [`super::rewire`]).
            self.out.follow().await?;
            if control_open && self.control.has_changed().unwrap_or(false) {
                self.follow_control(&mut state, &mut stop_deadline).await;
            }
            let room = self.max_pending == 0 || pending.len() < self.max_pending;
            let mut emitted = false;
            if retiring.is_none() && self.retiring {
                retiring = Some(Instant::now() + self.drain);
            }
            if state == Control::Active && room && retiring.is_none() {
                let before = self.out.counters.emitted;
                let mut collector = Collector {
                    out: &mut self.out,
                    pending: &mut pending,
                    instant_acks: &mut instant_acks,
                    now: None,
                };
                if let Err(e) = self.spout.next_tuple(&mut collector).await {
                    self.out.report_error(&format!("next_tuple failed: {e}"));
                }
                for id in instant_acks.drain(..) {
                    self.out.counters.acked += 1;
                    self.spout.ack(id).await;
                }
                emitted = self.out.counters.emitted != before;
                if self.out.has_full() {
                    self.out.flush_full().await;
                }
                calls += 1;
                if calls.is_multiple_of(64) {
                    let now = Instant::now();
                    if now - last_flush >= MAX_LINGER {
                        self.out.flush_all().await;
                        last_flush = now;
                        self.out.counters.publish(&self.metrics);
                    }
                    if now - last_expire >= EXPIRE_EVERY {
                        last_expire = now;
                        self.expire(&mut pending, now).await;
                    }
                    self.barrier(false, pending.len()).await;
                }
            }
            if emitted {
                continue;
            }
            // Idle: nothing to emit right now.
            self.out.flush_all().await;
            let now = Instant::now();
            last_flush = now;
            self.out.counters.publish(&self.metrics);
            if now - last_merge >= Duration::from_secs(1) {
                self.merge(&mut histogram);
                last_merge = now;
            }
            if now - last_expire >= EXPIRE_EVERY {
                last_expire = now;
                self.expire(&mut pending, now).await;
            }
            self.barrier(false, pending.len()).await;
            let stopping = state == Control::Stop || !control_open || retiring.is_some();
            if !ended && retiring.is_some() {
                // Retired by a rebalance: its stream goes on in the other tasks.
                ended = true;
            }
            if !ended && (stopping || self.spout.is_exhausted()) {
                // It emits no more: downstream windows may fire what they hold, and what
                // stateful bolts hold is checkpointed.
                ended = true;
                self.barrier(true, pending.len()).await;
                self.out.end_of_stream();
                self.out.flush_all().await;
            }
            if pending.is_empty() && (stopping || self.spout.is_finished()) {
                break;
            }
            if stop_deadline.is_some_and(|d| now >= d) || retiring.is_some_and(|d| now >= d) {
                break;
            }
            let wait = if state == Control::Active && room { IDLE_WAIT } else { Duration::from_millis(50) };
            let waiting = Instant::now();
            tokio::select! {
                batch = self.inbox.recv(), if inbox_open => match batch {
                    Some(batch) => self.apply(batch, &mut pending, &mut histogram).await,
                    None => inbox_open = false,
                },
                changed = self.control.changed(), if control_open => match changed {
                    Ok(()) => self.follow_control(&mut state, &mut stop_deadline).await,
                    Err(_) => control_open = false,
                },
                _ = tokio::time::sleep(wait) => {}
            }
            // Held back by max_spout_pending is backpressure (trees downstream are slow to
            // complete); nothing to emit is idle.
            let waited = waiting.elapsed().as_nanos() as u64;
            if room {
                self.out.counters.idle_ns += waited;
            } else {
                self.out.counters.backpressured_ns += waited;
            }
        }
        self.spout.close().await;
        if !ended {
            self.barrier(true, pending.len()).await;
            self.out.end_of_stream();
        }
        self.out.flush_all().await;
        self.out.counters.publish(&self.metrics);
        self.merge(&mut histogram);
        Ok(())
    }

    /// Applies the latest control value: (de)activates the spout, and on stop starts the drain.
    async fn follow_control(&mut self, state: &mut Control, stop_deadline: &mut Option<Instant>) {
        let next = *self.control.borrow_and_update();
        if next == *state {
            return;
        }
        match (*state, next) {
            (Control::Active, _) => self.spout.deactivate().await,
            (Control::Inactive, Control::Active) => self.spout.activate().await,
            _ => {}
        }
        if next == Control::Stop {
            *stop_deadline = Some(Instant::now() + self.drain);
        }
        *state = next;
    }

    async fn apply(
        &mut self,
        batch: Vec<Outcome>,
        pending: &mut InFlight,
        histogram: &mut hdrhistogram::Histogram<u64>,
    ) {
        if let [o] = batch[..] {
            if o.root == RETIRE_ROOT {
                self.retiring = true;
                return;
            }
        }
        let now = Instant::now();
        for o in batch.iter().take(crate::prefetch::AHEAD) {
            pending.prefetch(o.root);
        }
        for (i, o) in batch.iter().enumerate() {
            if let Some(ahead) = batch.get(i + crate::prefetch::AHEAD) {
                pending.prefetch(ahead.root);
            }
            // An outcome for a root no longer pending was already reported: ignore it.
            let Some((msg_id, emitted)) = pending.remove(o.root) else {
                continue;
            };
            // A failed tree never settles a barrier: exactly once, it restarts the topology.
            if o.acked && self.checkpoint.is_some() {
                self.settled(emitted).await;
            }
            if o.acked {
                let us = now.saturating_duration_since(emitted).as_micros() as u64;
                let _ = histogram.record(us.max(1));
                self.out.counters.acked += 1;
                self.spout.ack(msg_id).await;
            } else {
                self.out.counters.failed += 1;
                self.count_cause(o);
                self.failed(msg_id).await;
            }
        }
    }

    /// Counts a failed tree by its cause: the bolt that failed it, or each component that held
    /// part of it when it timed out (no one known: an empty component).
    fn count_cause(&self, o: &Outcome) {
        let Ok(mut by) = self.metrics.failed_by.lock() else { return };
        if o.failed_by != TIMED_OUT {
            add_failed_by(&mut by, self.holders.name(o.failed_by as usize), FAILED, 1);
            return;
        }
        let mut named = false;
        for c in self.holders.components(o.held_by) {
            add_failed_by(&mut by, self.holders.name(c), TIMEOUT, 1);
            named = true;
        }
        if !named {
            add_failed_by(&mut by, "", TIMEOUT, 1);
        }
    }

    /// Fails every tree emitted more than `expire_after` ago.
    async fn expire(&mut self, pending: &mut InFlight, now: Instant) {
        let Some(cutoff) = self.expire_after.and_then(|after| now.checked_sub(after)) else { return };
        let mut expired = Vec::new();
        pending.expire(cutoff, |id| expired.push(id));
        for id in expired {
            self.out.counters.failed += 1;
            self.count_cause(&Outcome::timed_out(0, 0));
            self.failed(id).await;
        }
    }

    /// A tree failed: the spout replays it, or, exactly once, the topology restarts from the
    /// last committed checkpoint (the state may hold part of the tree).
    async fn failed(&mut self, msg_id: MessageId) {
        match &self.checkpoint {
            Some(c) if c.checkpointing.guarantee == Guarantee::ExactlyOnce => {
                c.checkpointing.restart.notify_one()
            }
            _ => self.spout.fail(msg_id).await,
        }
    }

    /// Before the first emit: a spout that can rewind starts from its position in the last
    /// committed checkpoint.
    async fn restore(&mut self) -> Result<(), TaskError> {
        let Some(c) = &mut self.checkpoint else { return Ok(()) };
        let backend = c.checkpointing.backend.clone();
        let committed = backend.last_committed().await.map_err(|e| {
            self.fail(format!("cannot read the last checkpoint from {}: {e}", backend.describe()))
        })?;
        let Some(c) = &mut self.checkpoint else { return Ok(()) };
        c.next = c.checkpointing.due(SystemTime::now()) + 1;
        let Some(committed) = committed else { return Ok(()) };
        c.next = c.next.max(committed.id + 1);
        let meta = Meta::decode(&committed.meta).map_err(|e| {
            self.fail(format!("the last checkpoint in {} is unreadable: {e}", backend.describe()))
        })?;
        let Some(c) = &self.checkpoint else { return Ok(()) };
        let Some(position) = meta.position_of(&c.component, c.index, c.tasks) else { return Ok(()) };
        if self.spout.position(c.checkpointing.guarantee).is_none() {
            return Ok(());
        }
        self.spout
            .rewind(&position)
            .await
            .map_err(|e| self.fail(format!("cannot rewind to checkpoint {}: {e}", committed.id)))
    }

    /// A tree emitted at `emitted` completed: reports the barriers that waited only for it.
    async fn settled(&mut self, emitted: Instant) {
        let Some(c) = &mut self.checkpoint else { return };
        for w in c.waiting.iter_mut().filter(|w| emitted <= w.at) {
            w.remaining = w.remaining.saturating_sub(1);
        }
        while c.waiting.front().is_some_and(|w| w.remaining == 0) {
            let saved = c.waiting.pop_front().expect("checked above").saved;
            if let Some(coordinator) = &c.coordinator {
                let _ = coordinator.send(vec![saved]).await;
            }
        }
    }

    /// Sends a barrier downstream and reports its position if a checkpoint is due (`last`:
    /// this task's last one, due or not); `in_flight` trees were emitted before it.
    async fn barrier(&mut self, last: bool, in_flight: usize) {
        let Some(c) = &mut self.checkpoint else { return };
        let due = c.checkpointing.due(SystemTime::now());
        if due < c.next && !last {
            return;
        }
        let id = due.max(c.next);
        c.next = id + 1;
        let position = self.spout.position(c.checkpointing.guarantee).unwrap_or(Value::Null);
        self.out.broadcast(&marker(BARRIER, self.out.task, id, []));
        self.out.flush_all().await;
        let saved = marker(SAVED, self.out.task, id, [position, Value::Bool(last)]);
        let exactly_once = c.checkpointing.guarantee == Guarantee::ExactlyOnce;
        if exactly_once && (in_flight > 0 || !c.waiting.is_empty()) {
            c.waiting.push_back(Waiting { saved, at: Instant::now(), remaining: in_flight });
        } else if let Some(coordinator) = &c.coordinator {
            let _ = coordinator.send(vec![saved]).await;
        }
    }

    fn merge(&self, histogram: &mut hdrhistogram::Histogram<u64>) {
        if histogram.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.metrics.complete_us.lock() {
            let _ = shared.add(&*histogram);
        }
        histogram.reset();
    }
}
