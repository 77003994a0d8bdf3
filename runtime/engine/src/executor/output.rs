//! A task's output: routing, tree ids and batching.
//!
//! Contract: [`Output`] turns one emit into one [`Envelope`] per receiving task (the routers
//! of every subscription of the stream decide which), gives each delivery a fresh edge id in
//! every tree its anchors belong to, and appends it to that task's batch. Acker messages are
//! batched the same way per acker task. Emitting never waits: the executor calls
//! [`Output::flush_full`] after each call into user code, which sends every batch that reached
//! the batch size and waits while the receiver's queue is full (backpressure), and
//! [`Output::flush_all`] before it goes idle, so batching never delays a tuple past the moment
//! its task runs out of work. An emit on an undeclared stream, with the wrong number of
//! values, or a direct emit to a task that does not subscribe, is an [`EmitError`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use squall_api::{BoxError, EmitError, Registry, TaskId, TreeIds, Tuple, Value, Values};
use tokio::sync::mpsc;

use super::rewire::{Rewire, Wiring};
use super::TaskError;
use crate::acker::{acker_of, AckerMsg, IdGen, Outcome};
use crate::grouping::Router;
use crate::metrics::{Counters, TaskMetrics};
use crate::plan::Plan;
use crate::tap::{stream_bit, TapPoint, Taps};

/// Tuples per batch between two tasks.
pub const BATCH: usize = 256;
/// Batches a task's inbox holds before its senders wait.
pub const INBOX_BATCHES: usize = 16;
/// Room allocated per batch: a batch is sent once it holds `BATCH` tuples, checked after each
/// call into user code, so the slack absorbs what one call emits past that without regrowing.
const BATCH_ROOM: usize = BATCH + BATCH / 2;

/// The (root, edge) pairs of a tuple: which trees it belongs to and its edge in each.
pub type Anchors = SmallVec<[(u64, u64); 1]>;

/// One tuple on its way to one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Global stream id (see [`Plan`]).
    pub stream: u32,
    pub source_task: TaskId,
    pub values: Values,
    pub anchors: Anchors,
}

/// Senders to the inboxes of a plan's tasks, by task id: those of this process, and, in a
/// worker, the transport's forwarders to the tasks of other workers.
#[derive(Default, Clone)]
pub struct Links {
    pub bolts: Vec<Option<mpsc::Sender<Vec<Envelope>>>>,
    pub ackers: Vec<Option<mpsc::Sender<Vec<AckerMsg>>>>,
    /// Spout tasks hear their trees' outcomes on unbounded queues: an acker never waits.
    pub spouts: Vec<Option<mpsc::UnboundedSender<Vec<Outcome>>>>,
    /// The process's taps (none: no task of it can be tapped).
    pub taps: Option<Arc<Taps>>,
    /// Where the process publishes a new wiring for its running tasks (none: it never does).
    pub rewire: Option<Arc<Rewire>>,
}

struct OutStream {
    name: String,
    sid: u32,
    arity: usize,
    fields: String,
    direct: bool,
    routers: Vec<Router>,
}

struct Dest {
    tx: mpsc::Sender<Vec<Envelope>>,
    metrics: Arc<TaskMetrics>,
    buf: Vec<Envelope>,
}

struct AckerDest {
    tx: mpsc::Sender<Vec<AckerMsg>>,
    buf: Vec<AckerMsg>,
}

pub struct Output {
    component: String,
    /// The component's index in the plan, named in the fails it sends.
    component_index: u16,
    /// The component's lane bit, sent with its acks (see [`crate::acker::holders`]).
    lane: u8,
    pub task: TaskId,
    streams: Vec<OutStream>,
    default_stream: Option<usize>,
    /// Task id -> index into `dests`.
    slot_of: Vec<u32>,
    dests: Vec<Dest>,
    ackers: Vec<AckerDest>,
    full: bool,
    pub acking: bool,
    pub ids: IdGen,
    targets: Vec<TaskId>,
    pub counters: Counters,
    error_log: ErrorLog,
    /// This task's own metrics (its latest error is kept there).
    own: Arc<TaskMetrics>,
    /// Where `squall tap` samples this component's emits.
    tap: Arc<TapPoint>,
    /// Where a new wiring is published, and the version of the one routed by now.
    rewire: Option<Arc<Rewire>>,
    seen: u64,
}

/// What an output routes by: its streams, their receivers and the ackers.
struct Routes {
    streams: Vec<OutStream>,
    default_stream: Option<usize>,
    slot_of: Vec<u32>,
    dests: Vec<Dest>,
    ackers: Vec<AckerDest>,
    acking: bool,
}

impl Routes {
    /// The routes of task `task` of component `component` of `plan`.
    fn of(
        plan: &Plan,
        component: usize,
        task: TaskId,
        links: &Links,
        metrics: &[Arc<TaskMetrics>],
        registry: &Registry,
    ) -> Result<Routes, BoxError> {
        let c = &plan.components[component];
        let worker = plan.task_worker[task as usize];
        let mut slot_of = vec![NO_SLOT; plan.task_count()];
        let mut dests = Vec::new();
        let mut streams = Vec::new();
        for &sid in &c.streams {
            let sp = &plan.streams[sid as usize];
            let mut routers = Vec::new();
            for sub in &sp.subscribers {
                routers.push(Router::new(sub, worker, &plan.task_worker, registry)?);
                for &t in &sub.tasks {
                    if slot_of[t as usize] != NO_SLOT {
                        continue;
                    }
                    let tx =
                        links.bolts[t as usize].clone().ok_or_else(|| format!("no inbox for task {t}"))?;
                    slot_of[t as usize] = dests.len() as u32;
                    dests.push(Dest {
                        tx,
                        metrics: metrics[t as usize].clone(),
                        buf: Vec::with_capacity(BATCH_ROOM),
                    });
                }
            }
            streams.push(OutStream {
                name: sp.decl.name.clone(),
                sid,
                arity: sp.decl.fields.len(),
                fields: sp.decl.fields.to_string(),
                direct: sp.decl.direct,
                routers,
            });
        }
        let acking = plan.settings.acking && !plan.acker_tasks.is_empty();
        let ackers = if acking {
            plan.acker_tasks
                .iter()
                .map(|&t| {
                    let tx = links.ackers[t as usize]
                        .clone()
                        .ok_or_else(|| format!("no inbox for acker task {t}"))?;
                    Ok(AckerDest { tx, buf: Vec::with_capacity(BATCH_ROOM) })
                })
                .collect::<Result<Vec<_>, BoxError>>()?
        } else {
            Vec::new()
        };
        let default_stream = streams.iter().position(|s| s.name == squall_api::DEFAULT_STREAM);
        Ok(Routes { streams, default_stream, slot_of, dests, ackers, acking })
    }
}

const NO_SLOT: u32 = u32::MAX;

/// Errors a task logs per window; the rest are counted and summed up at the window's end.
pub const ERRORS_LOGGED: u32 = 5;
pub const ERROR_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct ErrorLog {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Output {
    /// The output of task `task` of component `component` (an index into the plan).
    pub fn new(
        plan: &Plan,
        component: usize,
        task: TaskId,
        links: &Links,
        metrics: &[Arc<TaskMetrics>],
        registry: &Registry,
    ) -> Result<Output, BoxError> {
        let c = &plan.components[component];
        let Routes { streams, default_stream, slot_of, dests, ackers, acking } =
            Routes::of(plan, component, task, links, metrics, registry)?;
        let seen = links.rewire.as_ref().map_or(0, |r| r.version());
        Ok(Output {
            component: c.id.clone(),
            component_index: component as u16,
            lane: crate::acker::holders::lane_bit(plan, component),
            task,
            streams,
            default_stream,
            slot_of,
            dests,
            ackers,
            full: false,
            acking,
            ids: IdGen::new(),
            targets: Vec::new(),
            counters: Counters::default(),
            error_log: ErrorLog { window_start: Instant::now(), logged: 0, suppressed: 0 },
            own: metrics[task as usize].clone(),
            tap: links.taps.as_ref().map_or_else(Arc::default, |t| t.point(component)),
            rewire: links.rewire.clone(),
            seen,
        })
    }

    /// Whether the process published a new wiring this output does not route by yet: one
    /// relaxed load (see [`super::rewire`]).
    #[inline]
    pub fn rewired(&self) -> bool {
        self.rewire.as_ref().is_some_and(|r| r.changed(self.seen))
    }

    /// Switches to the latest wiring, if there is a newer one (one relaxed load when there is
    /// not): sends what is batched to the old receivers, then routes by the new plan. Returns
    /// the wiring switched to; an error names this task.
    pub async fn follow(&mut self) -> Result<Option<Arc<Wiring>>, TaskError> {
        if !self.rewired() {
            return Ok(None);
        }
        self.switch().await.map_err(|e| TaskError {
            component: self.component.clone(),
            task: self.task,
            message: format!("cannot follow the rebalanced plan: {e}"),
        })
    }

    async fn switch(&mut self) -> Result<Option<Arc<Wiring>>, BoxError> {
        let Some((version, wiring)) = self.rewire.as_ref().and_then(|r| r.latest()) else { return Ok(None) };
        if version == self.seen {
            return Ok(None);
        }
        self.flush_all().await;
        let plan = &wiring.plan;
        let component = plan
            .component_index(&self.component)
            .ok_or_else(|| format!("the new plan has no component {}", self.component))?;
        if plan.task_component.get(self.task as usize) != Some(&Some(component)) {
            // This task is not in the new plan: it routes as it did until its retire marker
            // comes (behind what was sent to it before).
            self.seen = version;
            return Ok(None);
        }
        let routes =
            Routes::of(plan, component, self.task, &wiring.links, &wiring.metrics, &wiring.registry)?;
        self.streams = routes.streams;
        self.default_stream = routes.default_stream;
        self.slot_of = routes.slot_of;
        self.dests = routes.dests;
        self.ackers = routes.ackers;
        self.acking = routes.acking;
        self.seen = version;
        Ok(Some(wiring))
    }

    #[inline]
    fn stream_index(&self, name: &str) -> Result<usize, EmitError> {
        if name == squall_api::DEFAULT_STREAM {
            if let Some(i) = self.default_stream {
                return Ok(i);
            }
        }
        self.streams.iter().position(|s| s.name == name).ok_or_else(|| EmitError::UnknownStream {
            component: self.component.clone(),
            stream: name.to_string(),
        })
    }

    /// The tasks the last successful emit went to.
    pub fn last_targets(&self) -> &[TaskId] {
        &self.targets
    }

    /// Checks an emit and fills `self.targets` with its receiving tasks.
    #[inline]
    fn route(&mut self, stream: &str, values: &[Value], direct: Option<TaskId>) -> Result<usize, EmitError> {
        let s = self.stream_index(stream)?;
        let out = &mut self.streams[s];
        if values.len() != out.arity {
            return Err(EmitError::Arity {
                component: self.component.clone(),
                stream: out.name.clone(),
                fields: out.fields.clone(),
                expected: out.arity,
                got: values.len(),
            });
        }
        match (out.direct, direct) {
            (true, None) => return Err(EmitError::DirectRequired { stream: out.name.clone() }),
            (false, Some(_)) => return Err(EmitError::NotDirect { stream: out.name.clone() }),
            _ => {}
        }
        self.targets.clear();
        for r in &mut out.routers {
            r.route(values, direct, &mut self.targets);
        }
        if let Some(task) = direct {
            if self.targets.is_empty() && !out.routers.is_empty() {
                return Err(EmitError::NotSubscribed { stream: out.name.clone(), task });
            }
        }
        Ok(s)
    }

    /// Offers an emit on stream `s` to the tap: one relaxed load unless someone taps it.
    #[inline]
    fn tap(&self, s: usize, values: &Values) {
        if self.tap.wants(stream_bit(s)) {
            self.tap.offer(self.task, s, values);
        }
    }

    /// Emits a spout tuple; with `root`, every delivery becomes an edge of that tree. Returns
    /// the XOR of the edge ids created (0 if the tuple went nowhere).
    #[inline]
    pub fn emit_spout(
        &mut self,
        stream: &str,
        values: Values,
        root: Option<u64>,
        direct: Option<TaskId>,
    ) -> Result<u64, EmitError> {
        let s = self.route(stream, &values, direct)?;
        self.tap(s, &values);
        let sid = self.streams[s].sid;
        let n = self.targets.len();
        self.counters.emitted += 1;
        self.counters.transferred += n as u64;
        let mut xor = 0;
        let mut anchors = |ids: &mut IdGen| {
            let mut a = Anchors::new();
            if let Some(root) = root {
                let edge = ids.next_id();
                xor ^= edge;
                a.push((root, edge));
            }
            a
        };
        let Some(last) = n.checked_sub(1) else { return Ok(0) };
        for i in 0..last {
            let anchors = anchors(&mut self.ids);
            let env = Envelope { stream: sid, source_task: self.task, values: values.clone(), anchors };
            self.push(self.targets[i], env);
        }
        let anchors = anchors(&mut self.ids);
        self.push(self.targets[last], Envelope { stream: sid, source_task: self.task, values, anchors });
        Ok(xor)
    }

    /// Emits a bolt tuple anchored to `anchors` (their trees gain one edge per delivery).
    #[inline]
    pub fn emit_bolt(
        &mut self,
        stream: &str,
        anchors: &[&Tuple],
        values: Values,
        direct: Option<TaskId>,
    ) -> Result<(), EmitError> {
        self.emit_anchored(stream, anchors.iter().map(|a| a.tree()), values, direct)
    }

    /// Emits a bolt tuple anchored to the inputs whose tree ids are `anchors`: what a task
    /// that keeps its inputs' trees but not their values (a window) emits through.
    #[inline]
    pub fn emit_anchored<'t>(
        &mut self,
        stream: &str,
        anchors: impl Iterator<Item = &'t TreeIds> + Clone,
        values: Values,
        direct: Option<TaskId>,
    ) -> Result<(), EmitError> {
        let s = self.route(stream, &values, direct)?;
        self.tap(s, &values);
        let sid = self.streams[s].sid;
        let n = self.targets.len();
        let tracked = self.acking && anchors.clone().any(|a| !a.anchors.is_empty());
        self.counters.emitted += 1;
        self.counters.transferred += n as u64;
        let Some(last) = n.checked_sub(1) else { return Ok(()) };
        for i in 0..last {
            let anchors = if tracked { self.new_edges(anchors.clone()) } else { Anchors::new() };
            let env = Envelope { stream: sid, source_task: self.task, values: values.clone(), anchors };
            self.push(self.targets[i], env);
        }
        let anchors = if tracked { self.new_edges(anchors) } else { Anchors::new() };
        self.push(self.targets[last], Envelope { stream: sid, source_task: self.task, values, anchors });
        Ok(())
    }

    /// One new edge per anchor, in every tree of that anchor: the anchors of one delivery.
    #[inline]
    fn new_edges<'t>(&mut self, anchors: impl Iterator<Item = &'t TreeIds> + Clone) -> Anchors {
        let mut out = Anchors::new();
        // The common case: one input, in one tree.
        let mut rest = anchors.clone();
        if let (Some(tree), None) = (rest.next(), rest.next()) {
            if let [(root, _)] = tree.anchors[..] {
                let edge = self.ids.next_id();
                tree.xor_ack_val(edge);
                out.push((root, edge));
                return out;
            }
        }
        for tree in anchors {
            if tree.anchors.is_empty() {
                continue;
            }
            let edge = self.ids.next_id();
            tree.xor_ack_val(edge);
            out.extend(tree.anchors.iter().map(|&(root, _)| (root, edge)));
        }
        merge_same_trees(&mut out);
        out
    }

    #[inline]
    fn push(&mut self, task: TaskId, env: Envelope) {
        let slot = self.slot_of[task as usize];
        debug_assert_ne!(slot, NO_SLOT, "routers only pick subscribed tasks");
        let d = &mut self.dests[slot as usize];
        d.buf.push(env);
        if d.buf.len() >= BATCH {
            self.full = true;
        }
    }

    /// Queues a message for the acker that tracks its root. Consecutive acks of one tree
    /// (a bolt acking several words of one sentence) are XORed into one message: the acker
    /// sees the same XOR with fewer messages.
    #[inline]
    pub fn to_acker(&mut self, msg: AckerMsg) {
        let root = msg.root();
        if self.ackers.is_empty() {
            return;
        }
        let i = acker_of(root, self.ackers.len());
        let a = &mut self.ackers[i];
        if let (AckerMsg::Ack { val, .. }, Some(AckerMsg::Ack { root: last, val: acc, .. })) =
            (msg, a.buf.last_mut())
        {
            if *last == root {
                *acc ^= val;
                return;
            }
        }
        a.buf.push(msg);
        if a.buf.len() >= BATCH {
            self.full = true;
        }
    }

    /// Acks an input: for each of its trees, its edge XOR the edges anchored to it.
    #[inline]
    pub fn ack(&mut self, input: &Tuple) {
        self.ack_tree(input.tree())
    }

    /// Acks the input whose tree ids are `tree`.
    #[inline]
    pub fn ack_tree(&mut self, tree: &TreeIds) {
        if self.acking {
            let ack_val = tree.ack_val();
            for &(root, edge) in &tree.anchors {
                self.to_acker(AckerMsg::Ack { root, val: edge ^ ack_val, lane: self.lane });
            }
        }
        self.counters.acked += 1;
    }

    /// Fails every tree of an input.
    pub fn fail_roots(&mut self, roots: impl IntoIterator<Item = u64>) {
        if self.acking {
            for root in roots {
                self.to_acker(AckerMsg::Fail { root, by: self.component_index });
            }
        }
        self.counters.failed += 1;
    }

    /// Restarts the timeout of the input's trees. Sent at once rather than batched: a bolt
    /// calls it while it holds a tuple for long, and the reset must reach the acker before
    /// that bolt's task next goes idle.
    pub fn reset_timeout(&mut self, input: &Tuple) {
        if !self.acking {
            return;
        }
        for &(root, _) in &input.tree().anchors {
            let msg = AckerMsg::Reset { root };
            let i = acker_of(root, self.ackers.len());
            if self.ackers[i].tx.try_send(vec![msg]).is_err() {
                // The acker's inbox is full (it will drain soon) or gone: queue it.
                self.to_acker(msg);
            }
        }
    }

    /// Counts an error and logs it, at most [`ERRORS_LOGGED`] per [`ERROR_WINDOW`] per task
    /// (Storm's error throttling): a component failing on every tuple must not flood the log.
    pub fn report_error(&mut self, error: &str) {
        self.counters.errors += 1;
        if let Ok(mut last) = self.own.last_error.lock() {
            *last = Some(crate::metrics::ErrorNote::now(error));
        }
        let now = Instant::now();
        let log = &mut self.error_log;
        if now.duration_since(log.window_start) >= ERROR_WINDOW {
            if log.suppressed > 0 {
                tracing::warn!(
                    component = %self.component,
                    task = self.task,
                    "{} more errors in the last {}s were not logged",
                    log.suppressed,
                    ERROR_WINDOW.as_secs()
                );
            }
            *log = ErrorLog { window_start: now, logged: 0, suppressed: 0 };
        }
        if log.logged < ERRORS_LOGGED {
            log.logged += 1;
            tracing::warn!(component = %self.component, task = self.task, "{error}");
        } else {
            log.suppressed += 1;
        }
    }

    /// True if some batch is full and should be sent.
    #[inline]
    pub fn has_full(&self) -> bool {
        self.full
    }

    /// Sends every full batch, waiting while a receiver's queue is full.
    pub async fn flush_full(&mut self) {
        self.flush(BATCH).await
    }

    /// Sends every non-empty batch, waiting while a receiver's queue is full.
    pub async fn flush_all(&mut self) {
        self.flush(1).await
    }

    async fn flush(&mut self, at_least: usize) {
        self.full = false;
        for d in &mut self.dests {
            if d.buf.len() >= at_least {
                let batch = std::mem::replace(&mut d.buf, Vec::with_capacity(BATCH_ROOM));
                d.metrics.queued.fetch_add(batch.len() as i64, Relaxed);
                self.counters.backpressured_ns += send(&d.tx, batch).await;
            }
        }
        for a in &mut self.ackers {
            if a.buf.len() >= at_least {
                let batch = std::mem::replace(&mut a.buf, Vec::with_capacity(BATCH_ROOM));
                self.counters.backpressured_ns += send(&a.tx, batch).await;
            }
        }
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// Queues one end-of-stream marker for every task subscribed to any stream of this task
    /// (see [`super::end_of_stream`]); the caller flushes. Counted nowhere.
    pub fn end_of_stream(&mut self) {
        self.broadcast(&super::end_of_stream::marker(self.task));
    }

    /// Queues a marker (end of stream, a barrier) for every task this output sends to, behind
    /// everything emitted before it.
    pub fn broadcast(&mut self, marker: &Envelope) {
        for d in &mut self.dests {
            d.buf.push(marker.clone());
            if d.buf.len() >= BATCH {
                self.full = true;
            }
        }
    }
}

/// Sends `batch`, waiting while the receiver's queue is full; returns how long it waited (ns;
/// the clock is read only when it must wait). A closed queue means its task has ended
/// (shutdown or failure): the batch is dropped.
async fn send<T>(tx: &mpsc::Sender<T>, batch: T) -> u64 {
    match tx.try_send(batch) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => 0,
        Err(mpsc::error::TrySendError::Full(batch)) => {
            let started = Instant::now();
            let _ = tx.send(batch).await;
            started.elapsed().as_nanos() as u64
        }
    }
}

/// A tree reached through several anchors gets the XOR of their edges, once: the anchors of a
/// delivery name each tree once (sorted by root), or the acker would see its edge twice.
fn merge_same_trees(anchors: &mut Anchors) {
    if anchors.len() > 1 {
        anchors.sort_unstable_by_key(|&(root, _)| root);
        anchors.dedup_by(|(root, edge), (kept_root, kept_edge)| {
            let same = root == kept_root;
            if same {
                *kept_edge ^= *edge;
            }
            same
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_in_the_same_tree_become_one_edge_with_the_xor_of_theirs() {
        let mut anchors: Anchors = [(7, 0b001), (3, 0b100), (7, 0b010), (7, 0b1000)].into_iter().collect();
        merge_same_trees(&mut anchors);
        assert_eq!(anchors.as_slice(), &[(3, 0b100), (7, 0b1011)]);
        let mut one: Anchors = [(9, 5)].into_iter().collect();
        merge_same_trees(&mut one);
        assert_eq!(one.as_slice(), &[(9, 5)]);
        let mut distinct: Anchors = (0..100u64).rev().map(|r| (r, r + 1000)).collect();
        merge_same_trees(&mut distinct);
        assert_eq!(distinct.len(), 100, "distinct trees stay, one edge each");
        assert!(distinct.iter().all(|&(r, e)| e == r + 1000));
    }
}
