//! The window executor: runs a windowed bolt (whole windows, or an aggregate per key) on one
//! task, over the pure core of [`crate::window`].
//!
//! Contract:
//! - Each input tuple gets a timestamp: its `timestamp_field` (an integer, ms since the epoch)
//!   in event time, or the task's clock (ms since the epoch, never going back) in processing
//!   time. A tuple without the field, or with a non-integer in it, is reported (rate-limited,
//!   as every error) and failed. In event time the tuple's timestamp is observed by the
//!   [`Watermarks`] of its upstream task.
//! - After every batch of input (event time) and every `watermark_interval`, the watermark is
//!   recomputed (processing time: the clock) and advanced, and every window ready fires, in
//!   order of their end. A [`WindowedBolt`] gets
//!   the window as a [`TupleWindow`] borrowing the core's storage (no tuple is copied), and
//!   everything it emits is anchored to every tuple of the window. An aggregate emits
//!   [`DynAggregate::result`] per key of the window on its default stream, each anchored to
//!   the window's tuples of that key (see "Anchoring" below). Then the tuples no window can fire
//!   again are acked, each once. If `execute` errs, the error is reported and the window's
//!   tuples are failed: each once, even if it is in several windows, and a failed tuple is
//!   never acked afterwards.
//! - A tuple behind the watermark is late: emitted on the window's `late_stream`, with its own
//!   values, anchored to itself, if there is one (else dropped), then acked and counted.
//! - End of stream: the end-of-stream marker of an upstream task finishes that task in the
//!   watermarks; once every upstream task has sent it, every window fires (the watermark goes
//!   to the end of time), every tuple is acked, and the marker is forwarded downstream. The
//!   task then ends, as a bolt's, once its inbox closes. (Tuples after that are late.)
//! - Metrics: inputs count as executed; `windows_fired`, `late` and `watermark_lag_ms`
//!   (processing time minus the watermark at its last advance) are the task's own.
//!
//! Anchoring: an output of a window is anchored to the inputs that made it, so a failure of
//! the output downstream replays them (at-least-once). A whole-window bolt's output may derive
//! from any tuple of the window, so it is anchored to all of them (one edge per input and
//! output, as in Storm). An aggregate's result for a key derives from that key's inputs only,
//! and is anchored to those: each input gains one edge per window holding it, however many
//! keys the window has. The aggregate form keeps its inputs as value-less tuples with their
//! keys in a [`Windower`] (same alignment, same firing as the accumulators), grouped by key
//! when their window fires; that gives each window's inputs for sliding windows as well as
//! tumbling ones. Without acking the aggregate form keeps no input at all (nothing to anchor
//! or ack): its memory is one accumulator per key and open window. In event time, inputs
//! replayed after their window
//! fired are behind the watermark: they are late, not counted again.

use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smallvec::SmallVec;
use squall_api::{
    Accumulator, DynAggregate, EmitError, StreamMeta, TopologyContext, TreeIds, Tuple, TupleSource,
    TupleWindow, Tuples, Value, Values, WindowCollector, WindowEmitter, WindowedBolt, DEFAULT_STREAM,
};
use tokio::sync::mpsc;

use super::end_of_stream::{upstream_tasks, Ends, END_OF_STREAM};
use super::rewire::RETIRE;
use super::{Envelope, Output, TaskError};
use crate::checkpoint::{self, align::Alignment};
use crate::metrics::{TaskMetrics, SAMPLE_EVERY};
use crate::plan::Plan;
use crate::window::{Aggregates, Insert, Items, Watermarks, WindowSpec, Windower, END_OF_TIME};

/// Batches are flushed at least this often while the task is busy.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// A windowed bolt of either form.
pub enum WindowForm {
    Whole(Box<dyn WindowedBolt>),
    Aggregate(Box<dyn DynAggregate>),
}

/// A tuple held by the windows, with whether it was failed (then it is never acked).
struct Held {
    tuple: Tuple,
    failed: AtomicBool,
}

impl Held {
    fn new(tuple: Tuple) -> Self {
        Held { tuple, failed: AtomicBool::new(false) }
    }
}

/// An aggregate's input as its windows hold it: its key, as the accumulators index it, and
/// its tree ids (its values are folded into the accumulators already): 40 bytes an input.
struct KeyedInput {
    key: u32,
    tree: TreeIds,
}

/// Groups a fired window's inputs by key, for anchoring each key's result to that key's inputs
/// only: a counting sort by the key's position among the window's results, linear in the
/// window's keys and inputs, with its buffers kept from window to window.
#[derive(Default)]
struct KeyGroups {
    /// By key index: 1 + the key's position among the results, 0 for none.
    position: Vec<u32>,
    /// Where each result's inputs start in the grouped order, and one past the last.
    starts: Vec<u32>,
}

impl KeyGroups {
    /// The trees of `inputs`, grouped so that result `i`'s inputs (the key `keys[i]`) are
    /// [`of(i)`](Self::of) of the returned vector; inputs of a key without a result are left out.
    fn group<'a>(&mut self, keys: &[u32], inputs: Items<'a, KeyedInput>) -> Vec<&'a TreeIds> {
        let most = keys.iter().map(|&k| k as usize + 1).max().unwrap_or(0);
        if self.position.len() < most {
            self.position.resize(most, 0);
        }
        for (i, &k) in keys.iter().enumerate() {
            self.position[k as usize] = i as u32 + 1;
        }
        let position = |input: &KeyedInput| match self.position.get(input.key as usize) {
            Some(&p) if p > 0 => Some(p as usize - 1),
            _ => None,
        };
        self.starts.clear();
        self.starts.resize(keys.len() + 1, 0);
        for p in inputs.iter().filter_map(position) {
            self.starts[p + 1] += 1;
        }
        for i in 1..self.starts.len() {
            self.starts[i] += self.starts[i - 1];
        }
        let mut grouped = match inputs.iter().next() {
            Some(first) => vec![&first.tree; self.starts[keys.len()] as usize],
            None => Vec::new(),
        };
        let mut next = self.starts.clone();
        for input in inputs.iter() {
            if let Some(p) = position(input) {
                grouped[next[p] as usize] = &input.tree;
                next[p] += 1;
            }
        }
        for &k in keys {
            self.position[k as usize] = 0;
        }
        grouped
    }

    /// The range of the grouped inputs of result `i` (after [`group`](Self::group)).
    fn of(&self, i: usize) -> std::ops::Range<usize> {
        self.starts[i] as usize..self.starts[i + 1] as usize
    }
}

/// Held tuples as a window lists them to a bolt.
struct HeldTuples<'a>(Items<'a, Held>);

impl TupleSource for HeldTuples<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Tuple> + '_> {
        Box::new(self.0.iter().map(|h| &h.tuple))
    }
}

/// An aggregate's key: a [`Value`] with hashing and equality (floats compare by bits).
#[derive(Debug, Clone)]
struct Key(Value);

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.0.stable_hash());
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        same(&self.0, &other.0)
    }
}

impl Eq for Key {}

/// Equality with floats by their bits, so that it is an equivalence (NaN is itself).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        _ => a == b,
    }
}

/// What the task holds, by form.
enum State {
    Whole {
        bolt: Box<dyn WindowedBolt>,
        windows: Windower<Held>,
    },
    Aggregate {
        agg: Box<dyn DynAggregate>,
        /// Created on a key's first add in a window.
        accs: Box<Aggregates<Key, Option<Accumulator>>>,
        /// The inputs, without their values but with their keys: each key's result is
        /// anchored to that key's inputs, and every input is acked once released. Without
        /// acking there is nothing to anchor or ack: none are kept, and memory is the
        /// accumulators' alone.
        handles: Option<Windower<KeyedInput>>,
        groups: KeyGroups,
    },
}

impl State {
    fn advance(&mut self, watermark: i64) {
        match self {
            State::Whole { windows, .. } => windows.advance(watermark),
            State::Aggregate { accs, handles, .. } => {
                accs.advance(watermark);
                if let Some(handles) = handles {
                    handles.advance(watermark);
                }
            }
        }
    }
}

/// What a windowed bolt emits through: anchored to the firing window's inputs.
struct Emitter<'a, 'b> {
    out: &'a mut Output,
    anchors: &'a [&'b Tuple],
}

impl WindowEmitter for Emitter<'_, '_> {
    fn emit_to(&mut self, stream: &str, values: Values) -> Result<(), EmitError> {
        self.out.emit_bolt(stream, self.anchors, values, None)
    }

    fn report_error(&mut self, error: &str) {
        self.out.report_error(error)
    }
}

pub struct WindowExecutor {
    state: State,
    ctx: TopologyContext,
    out: Output,
    inbox: mpsc::Receiver<Vec<Envelope>>,
    metrics: Arc<TaskMetrics>,
    /// Every stream's meta, by global stream id.
    metas: Vec<&'static StreamMeta>,
    spec: WindowSpec,
    /// Event time only.
    watermarks: Option<Watermarks>,
    ends: Ends,
    /// In a topology with checkpoints: the barriers it passes on.
    barriers: Option<Alignment<()>>,
    /// Every window fired for the end of the stream.
    finished: bool,
    /// The clock: ms since the epoch at `started`, never going back.
    epoch_ms: i64,
    started: Instant,
}

impl WindowExecutor {
    /// The executor of task `out.task`, a task of component `component` of `plan`, with the
    /// component's window `spec`. An aggregate over count windows is an error.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        form: WindowForm,
        spec: WindowSpec,
        ctx: TopologyContext,
        out: Output,
        inbox: mpsc::Receiver<Vec<Envelope>>,
        metrics: Arc<TaskMetrics>,
        plan: &Plan,
        component: usize,
    ) -> Result<Self, String> {
        let state = match form {
            WindowForm::Whole(bolt) => State::Whole { bolt, windows: Windower::from_spec(&spec) },
            WindowForm::Aggregate(agg) => {
                let accs = Aggregates::from_spec(&spec, || None)
                    .ok_or("an aggregate needs a window whose length and slide are durations")?;
                State::Aggregate {
                    agg,
                    accs: Box::new(accs),
                    handles: out.acking.then(|| Windower::from_spec(&spec)),
                    groups: KeyGroups::default(),
                }
            }
        };
        let upstream = upstream_tasks(plan, component);
        let started = Instant::now();
        let watermarks = spec
            .is_event_time()
            .then(|| Watermarks::new(upstream.iter().copied(), spec.lag, spec.idle_timeout, started));
        let epoch_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        Ok(WindowExecutor {
            state,
            ctx,
            out,
            inbox,
            metrics,
            metas: plan.stream_metas(),
            spec,
            watermarks,
            ends: Ends::new(&upstream),
            barriers: plan.coordinator.map(|_| Alignment::new(&upstream, false)),
            finished: false,
            epoch_ms,
            started,
        })
    }

    fn fail(&self, message: String) -> TaskError {
        TaskError { component: self.out.component().to_string(), task: self.out.task, message }
    }

    /// Routes by the process's latest wiring, if it published one since (see
    /// [`super::rewire`]): the new plan's upstream tasks feed the watermark and end of stream.
    #[inline]
    async fn follow(&mut self) -> Result<(), TaskError> {
        let Some(wiring) = self.out.follow().await? else { return Ok(()) };
        let upstream = wiring.upstream_of(self.out.component());
        self.metas = wiring.plan.stream_metas();
        if let Some(w) = &mut self.watermarks {
            w.rewire(upstream.iter().copied(), Instant::now());
        }
        if self.ends.rewire(&upstream) {
            self.end_of_stream().await;
        }
        Ok(())
    }

    /// Processing time now, in ms since the epoch.
    fn now_ms(&self, now: Instant) -> i64 {
        self.epoch_ms + now.saturating_duration_since(self.started).as_millis() as i64
    }

    pub async fn run(mut self) -> Result<(), TaskError> {
        if let State::Whole { bolt, .. } = &mut self.state {
            bolt.prepare(&self.ctx).await.map_err(|e| self.fail(format!("prepare failed: {e}")))?;
        }
        let every = self.spec.watermark_interval.max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if self.ends.all_ended() {
            self.end_of_stream().await;
        }
        let mut last_flush = Instant::now();
        // A retire marker came (see [`super::rewire`]): the task ends, firing what it holds.
        let mut retired = false;
        loop {
            let waiting = self.inbox.is_empty().then(Instant::now);
            tokio::select! {
                biased;
                _ = ticker.tick() => {
                    if let Some(waiting) = waiting {
                        self.out.counters.idle_ns += waiting.elapsed().as_nanos() as u64;
                    }
                    self.follow().await?;
                    self.advance().await
                }
                batch = self.inbox.recv() => {
                    let Some(batch) = batch else { break };
                    if let Some(waiting) = waiting {
                        self.out.counters.idle_ns += waiting.elapsed().as_nanos() as u64;
                    }
                    self.metrics.queued.fetch_sub(batch.len() as i64, Relaxed);
                    self.follow().await?;
                    let now = Instant::now();
                    for env in batch {
                        if env.stream == RETIRE {
                            retired = true;
                            break;
                        }
                        if env.stream == END_OF_STREAM {
                            if let Some(w) = &mut self.watermarks {
                                w.finish(env.source_task);
                            }
                            if let Some(id) = self.barriers.as_mut().and_then(|b| b.end(env.source_task).1) {
                                self.out.broadcast(&checkpoint::marker(checkpoint::BARRIER, self.out.task, id, []));
                            }
                            if self.ends.end(env.source_task) {
                                self.end_of_stream().await;
                            }
                            continue;
                        }
                        if checkpoint::is_system_stream(env.stream) {
                            // Windows are not checkpointed: barriers only pass through
                            // (at least once; exactly once refuses windowed bolts).
                            let barrier = (env.stream == checkpoint::BARRIER).then(|| checkpoint::marker_id(&env));
                            if let (Some(b), Some(Some(id))) = (&mut self.barriers, barrier) {
                                if let Some(id) = b.barrier(env.source_task, id) {
                                    self.out.broadcast(&checkpoint::marker(checkpoint::BARRIER, self.out.task, id, []));
                                }
                            }
                            continue;
                        }
                        let meta = self.metas[env.stream as usize];
                        let tree = TreeIds { anchors: env.anchors, ..TreeIds::default() };
                        let tuple = Tuple::with_tree(meta, env.source_task, env.values, tree);
                        self.out.counters.executed += 1;
                        self.insert(tuple, now);
                        if self.out.has_full() {
                            self.out.flush_full().await;
                        }
                    }
                    // In event time a batch may move the watermark past a window's end: fire
                    // it now rather than at the next tick (the tick still moves time along
                    // for processing time and idle upstream tasks).
                    if self.watermarks.is_some() {
                        self.advance().await;
                    }
                }
            }
            if retired {
                break;
            }
            let now = Instant::now();
            if self.inbox.is_empty() || now - last_flush >= MAX_LINGER {
                self.out.flush_all().await;
                self.out.counters.publish(&self.metrics);
                last_flush = now;
            }
        }
        // Every sender has gone without ending its stream (a run torn down): fire what is held.
        if !self.finished {
            self.end_of_stream().await;
        }
        self.out.flush_all().await;
        if let State::Whole { bolt, .. } = &mut self.state {
            bolt.cleanup().await;
        }
        self.out.flush_all().await;
        self.out.counters.publish(&self.metrics);
        Ok(())
    }

    /// Takes one input into the windows, or out as late.
    #[inline]
    fn insert(&mut self, tuple: Tuple, now: Instant) {
        let sample = self.out.counters.executed.is_multiple_of(SAMPLE_EVERY);
        let started = sample.then(Instant::now);
        let ts = match &self.spec.timestamp_field {
            Some(field) => match tuple.get_i64(field.as_str()) {
                Ok(ts) => ts,
                Err(e) => {
                    self.out.report_error(&format!("no event time: {e}"));
                    self.fail_input(&tuple);
                    return;
                }
            },
            None => self.now_ms(now),
        };
        if let Some(w) = &mut self.watermarks {
            w.observe(tuple.source_task(), ts, now);
        }
        let late = match &mut self.state {
            State::Whole { windows, .. } => match windows.insert(ts, Held::new(tuple)) {
                Insert::Accepted => None,
                Insert::Late(held) => Some(held.tuple),
            },
            State::Aggregate { accs, .. } if accs.is_late(ts) => Some(tuple),
            State::Aggregate { agg, accs, handles, .. } => {
                let key = match agg.key(&tuple) {
                    Ok(key) => accs.key_index(&Key(key)),
                    Err(e) => {
                        self.out.report_error(&format!("key failed: {e}"));
                        self.fail_input(&tuple);
                        return;
                    }
                };
                let mut failed = None;
                accs.insert_indexed(ts, key, (), |acc| {
                    let acc = acc.get_or_insert_with(|| agg.create());
                    if let Err(e) = agg.add(acc, &tuple) {
                        failed.get_or_insert(e);
                    }
                });
                if let Some(e) = failed {
                    self.out.report_error(&format!("add failed: {e}"));
                }
                // The values are folded in: the windows keep the tree only.
                let Some(handles) = handles else {
                    self.out.ack(&tuple);
                    return;
                };
                match handles.insert(ts, KeyedInput { key, tree: tuple.into_tree() }) {
                    Insert::Accepted => None,
                    // Not reached: both have the same watermark.
                    Insert::Late(input) => {
                        self.out.ack_tree(&input.tree);
                        None
                    }
                }
            }
        };
        if let Some(tuple) = late {
            self.late(tuple);
        }
        if let Some(started) = started {
            self.out.counters.sample_execute(started.elapsed().as_nanos() as u64);
        }
    }

    fn fail_input(&mut self, tuple: &Tuple) {
        self.out.fail_roots(tuple.tree().anchors.iter().map(|(r, _)| *r));
    }

    /// A tuple behind the watermark: out on the late stream if any, then acked.
    fn late(&mut self, tuple: Tuple) {
        self.out.counters.late += 1;
        if let Some(stream) = &self.spec.late_stream {
            let values = Values::from(tuple.values());
            if let Err(e) = self.out.emit_bolt(stream, &[&tuple], values, None) {
                self.out.report_error(&format!("late tuple: {e}"));
            }
        }
        self.out.ack(&tuple);
    }

    /// Recomputes the watermark, advances the windows to it and fires those ready.
    async fn advance(&mut self) {
        if self.finished {
            return;
        }
        let now = Instant::now();
        let now_ms = self.now_ms(now);
        let watermark = match &mut self.watermarks {
            Some(w) => w.current(now),
            None => Some(now_ms),
        };
        let Some(watermark) = watermark else { return };
        if watermark != END_OF_TIME {
            self.out.counters.watermark_lag_ms = now_ms.saturating_sub(watermark).max(0) as u64;
        }
        self.state.advance(watermark);
        self.fire().await;
    }

    /// Every upstream task has ended (or gone): fire everything, forward the marker.
    async fn end_of_stream(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.state.advance(END_OF_TIME);
        self.fire().await;
        self.out.end_of_stream();
        self.out.flush_all().await;
        self.out.counters.publish(&self.metrics);
    }

    /// Fires every window ready, then acks the inputs released.
    async fn fire(&mut self) {
        let out = &mut self.out;
        match &mut self.state {
            State::Whole { bolt, windows } => {
                while let Some(w) = windows.next_window() {
                    let (items, new, expired) =
                        (HeldTuples(w.items()), HeldTuples(w.new_items()), HeldTuples(w.expired()));
                    let window = TupleWindow::new(
                        Tuples::from_source(&items),
                        Tuples::from_source(&new),
                        Tuples::from_source(&expired),
                        w.start(),
                        w.end(),
                    );
                    let anchors: Vec<&Tuple> = w.items().iter().map(|h| &h.tuple).collect();
                    let mut emitter = Emitter { out, anchors: &anchors };
                    let result = bolt.execute(&window, &mut WindowCollector::new(&mut emitter)).await;
                    out.counters.windows_fired += 1;
                    if let Err(e) = result {
                        out.report_error(&format!("execute failed: {e}"));
                        for held in w.items() {
                            if !held.failed.swap(true, Relaxed) {
                                let roots: SmallVec<[u64; 2]> =
                                    held.tuple.tree().anchors.iter().map(|(r, _)| *r).collect();
                                out.fail_roots(roots);
                            }
                        }
                    }
                    if out.has_full() {
                        out.flush_full().await;
                    }
                }
                for held in windows.take_released() {
                    if !held.failed.load(Relaxed) {
                        out.ack(&held.tuple);
                    }
                }
            }
            State::Aggregate { agg, accs, handles, groups } => {
                loop {
                    // The results first: an accumulator may not be held across an await.
                    let Some((keys, results)) = accs.next_window().map(|w| {
                        let (start, end) = (w.start(), w.end());
                        w.indexed()
                            .filter_map(|(index, key, acc)| {
                                Some((index, agg.result(&key.0, acc.as_ref()?, start, end)))
                            })
                            .unzip::<_, _, Vec<u32>, Vec<Values>>()
                    }) else {
                        break;
                    };
                    let kept = handles.is_some();
                    let inputs = handles.as_mut().and_then(|h| h.next_window());
                    debug_assert!(!kept || inputs.is_some(), "the handles fire the accumulators' windows");
                    // Each key's result joins the trees of that key's inputs only: one edge per
                    // input, not one per input per key.
                    let grouped = match &inputs {
                        Some(inputs) => groups.group(&keys, inputs.items()),
                        None => Vec::new(),
                    };
                    for (i, values) in results.into_iter().enumerate() {
                        // No inputs kept (no acking): nothing to anchor to.
                        let anchors = if grouped.is_empty() { &[][..] } else { &grouped[groups.of(i)] };
                        if let Err(e) =
                            out.emit_anchored(DEFAULT_STREAM, anchors.iter().copied(), values, None)
                        {
                            out.report_error(&format!("result: {e}"));
                        }
                        if out.has_full() {
                            out.flush_full().await;
                        }
                    }
                    out.counters.windows_fired += 1;
                }
                for input in handles.iter_mut().flat_map(|h| h.take_released()) {
                    out.ack_tree(&input.tree);
                }
            }
        }
        out.counters.publish(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fired_windows_inputs_are_grouped_by_the_key_of_each_result() {
        let tree = |root: u64| TreeIds { anchors: [(root, 1)].into_iter().collect(), ..TreeIds::default() };
        let mut windows: Windower<KeyedInput> = Windower::new(
            crate::window::Size::Time(Duration::from_secs(1)),
            crate::window::Size::Time(Duration::from_secs(1)),
        );
        // Keys 0, 5 and 2 (as the accumulators index them); root = 10 × key + n.
        for (ts, key, root) in [(1, 5, 50), (2, 0, 0), (3, 5, 51), (4, 2, 20), (5, 5, 52), (6, 0, 1)] {
            assert!(!windows.insert(ts, KeyedInput { key, tree: tree(root) }).is_late());
        }
        windows.advance(1_000);
        let fired = windows.next_window().expect("the window fires");
        let mut groups = KeyGroups::default();
        // The results name keys 5 and 0 only: key 2's input has no result to anchor.
        let grouped = groups.group(&[5, 0], fired.items());
        let roots = |i: usize| -> Vec<u64> { grouped[groups.of(i)].iter().map(|t| t.anchors[0].0).collect() };
        assert_eq!(roots(0), vec![50, 51, 52], "key 5's inputs, in the window's order");
        assert_eq!(roots(1), vec![0, 1], "key 0's inputs");
        assert_eq!(grouped.len(), 5);
        // The buffers are reused: a later window with other keys starts clean.
        let again = groups.group(&[2], fired.items());
        assert_eq!(again.len(), 1);
        assert_eq!(again[groups.of(0)][0].anchors[0].0, 20);
    }

    #[test]
    fn keys_are_equal_by_value_with_floats_by_bits() {
        use std::collections::HashMap;
        let mut m = HashMap::new();
        m.insert(Key(Value::from("a")), 1);
        m.insert(Key(Value::Float(f64::NAN)), 2);
        m.insert(Key(Value::List(vec![Value::Int(1), Value::Float(0.5)])), 3);
        assert_eq!(m.get(&Key(Value::from("a"))), Some(&1));
        assert_eq!(m.get(&Key(Value::Float(f64::NAN))), Some(&2), "NaN is itself as a key");
        assert_eq!(m.get(&Key(Value::List(vec![Value::Int(1), Value::Float(0.5)]))), Some(&3));
        assert_eq!(m.get(&Key(Value::Bytes(b"a".to_vec()))), None, "bytes are not a string");
        assert_eq!(m.get(&Key(Value::Int(1))), None);
    }
}
