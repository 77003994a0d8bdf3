//! Metrics: per-task counters and latencies, summed per component.
//!
//! Contract: each executor counts in plain fields of its own ([`Counters`]) and publishes them
//! to its shared [`TaskMetrics`] with relaxed stores after each batch, so the per-tuple cost is
//! an increment. Execute latency is sampled (one tuple in [`SAMPLE_EVERY`]); complete latency
//! (spout emit to ack) is recorded for every acked tuple in a histogram merged into the shared
//! one about once a second. Capacity is derived: executed × mean execute latency over the time
//! since the tasks started. [`Snapshot`]s sum tasks per component; their JSON form is what
//! `squall local --json` and `squall status --json` print (`{"topology": …, "components":
//! {id: {"kind", "tasks", "emitted", "transferred", "executed", "acked", "failed", …}}}`):
//! keys may be added, never renamed or removed, since scripts read them. Windowed bolts add
//! `windows_fired` and `late` (summed over tasks) and `watermark_lag_ms` (processing time
//! minus the watermark at its last advance, the max over tasks); they are 0 elsewhere.
//! Spouts add `failed_by`: their failed trees by cause ([`FailedBy`]: `component`, `cause`
//! `failed` or `timeout`, `count`), empty elsewhere.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use squall_api::{Role, TaskId};

use crate::plan::Plan;

/// Execute latency is measured on one tuple in this many.
pub const SAMPLE_EVERY: u64 = 64;

/// Upper bounds (ns) of the execute-latency histogram's buckets; one more bucket holds the
/// rest. Fixed, so recording a sample is a short scan and an increment.
pub const EXECUTE_BUCKETS_NS: [u64; 14] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];
/// Buckets of the execute-latency histogram: one per bound and one above them all.
pub const EXECUTE_BUCKETS: usize = EXECUTE_BUCKETS_NS.len() + 1;

/// A task's figures, written by its executor, read by reporters.
#[derive(Debug)]
pub struct TaskMetrics {
    pub emitted: AtomicU64,
    pub transferred: AtomicU64,
    pub executed: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub errors: AtomicU64,
    pub execute_ns: AtomicU64,
    pub execute_samples: AtomicU64,
    /// Tuples waiting in the task's inbox (added by senders, taken by the task).
    pub queued: AtomicI64,
    /// Complete latency in microseconds (spouts).
    pub complete_us: Mutex<Histogram<u64>>,
    /// Windows fired (windowed bolts).
    pub windows_fired: AtomicU64,
    /// Tuples behind the watermark (windowed bolts).
    pub late: AtomicU64,
    /// Processing time minus the watermark at its last advance, in ms (windowed bolts).
    pub watermark_lag_ms: AtomicU64,
    /// The latest error the task reported (written only when one is reported).
    pub last_error: Mutex<Option<ErrorNote>>,
    /// Sampled execute latencies per bucket of [`EXECUTE_BUCKETS_NS`] (bolts).
    pub execute_buckets: [AtomicU64; EXECUTE_BUCKETS],
    /// Checkpoints of this task committed (stateful bolts).
    pub checkpoints: AtomicU64,
    /// The last committed checkpoint's duration, from when it was due to its commit, in ms.
    pub checkpoint_ms: AtomicU64,
    /// Entries in the task's state (stateful bolts).
    pub state_entries: AtomicU64,
    /// Time waiting for input with nothing to do (bolts), ns.
    pub idle_ns: AtomicU64,
    /// Time blocked on a full downstream queue, ns.
    pub backpressured_ns: AtomicU64,
    /// Failed trees by cause (spouts; written only when a tree fails).
    pub failed_by: Mutex<Vec<FailedBy>>,
}

/// Why trees failed: a bolt failed them, or they timed out while a component held part of
/// them (Storm's STORM-521). `component` is empty when no one is known (a spout gave up on a
/// tree whose acker was lost).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FailedBy {
    pub component: String,
    /// [`FAILED`] or [`TIMEOUT`].
    pub cause: String,
    pub count: u64,
}

/// [`FailedBy::cause`]: a bolt failed the tree.
pub const FAILED: &str = "failed";
/// [`FailedBy::cause`]: the tree timed out.
pub const TIMEOUT: &str = "timeout";

/// Adds `count` trees failed by `cause` at `component` to `list` (kept sorted).
pub fn add_failed_by(list: &mut Vec<FailedBy>, component: &str, cause: &str, count: u64) {
    match list.binary_search_by(|f| (f.component.as_str(), f.cause.as_str()).cmp(&(component, cause))) {
        Ok(i) => list[i].count += count,
        Err(i) => {
            list.insert(i, FailedBy { component: component.to_string(), cause: cause.to_string(), count })
        }
    }
}

/// An error a component reported (`report_error`), and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNote {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub message: String,
}

/// The longest error text kept (longer ones are cut at a character boundary).
pub const MAX_ERROR_NOTE: usize = 1024;

impl ErrorNote {
    /// `message` (cut to [`MAX_ERROR_NOTE`] bytes) at the current time.
    pub fn now(message: &str) -> ErrorNote {
        let mut end = message.len().min(MAX_ERROR_NOTE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ErrorNote { time_ms, message: message[..end].to_string() }
    }
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            emitted: AtomicU64::new(0),
            transferred: AtomicU64::new(0),
            executed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            execute_ns: AtomicU64::new(0),
            execute_samples: AtomicU64::new(0),
            queued: AtomicI64::new(0),
            complete_us: Mutex::new(new_histogram()),
            windows_fired: AtomicU64::new(0),
            late: AtomicU64::new(0),
            watermark_lag_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            execute_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            checkpoints: AtomicU64::new(0),
            checkpoint_ms: AtomicU64::new(0),
            state_entries: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            failed_by: Mutex::new(Vec::new()),
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is a valid histogram precision")
}

/// An executor's own counters, published to its [`TaskMetrics`].
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub emitted: u64,
    pub transferred: u64,
    pub executed: u64,
    pub acked: u64,
    pub failed: u64,
    pub errors: u64,
    pub execute_ns: u64,
    pub execute_samples: u64,
    pub windows_fired: u64,
    pub late: u64,
    pub watermark_lag_ms: u64,
    /// Sampled execute latencies per bucket of [`EXECUTE_BUCKETS_NS`].
    pub execute_buckets: [u64; EXECUTE_BUCKETS],
    /// Time spent waiting for input with nothing to do (bolts), in ns.
    pub idle_ns: u64,
    /// Time spent waiting for room in a full downstream queue, in ns.
    pub backpressured_ns: u64,
}

impl Counters {
    /// Records one sampled execute latency: its sum, its count and its bucket.
    #[inline]
    pub fn sample_execute(&mut self, ns: u64) {
        self.execute_ns += ns;
        self.execute_samples += 1;
        let bucket = EXECUTE_BUCKETS_NS.iter().position(|&le| ns <= le).unwrap_or(EXECUTE_BUCKETS_NS.len());
        self.execute_buckets[bucket] += 1;
    }

    pub fn publish(&self, m: &TaskMetrics) {
        // The buckets change only with a new sample: stored only then.
        if m.execute_samples.load(Relaxed) != self.execute_samples {
            for (shared, &own) in m.execute_buckets.iter().zip(&self.execute_buckets) {
                shared.store(own, Relaxed);
            }
        }
        m.emitted.store(self.emitted, Relaxed);
        m.transferred.store(self.transferred, Relaxed);
        m.executed.store(self.executed, Relaxed);
        m.acked.store(self.acked, Relaxed);
        m.failed.store(self.failed, Relaxed);
        m.errors.store(self.errors, Relaxed);
        m.execute_ns.store(self.execute_ns, Relaxed);
        m.execute_samples.store(self.execute_samples, Relaxed);
        m.windows_fired.store(self.windows_fired, Relaxed);
        m.idle_ns.store(self.idle_ns, Relaxed);
        m.backpressured_ns.store(self.backpressured_ns, Relaxed);
        m.late.store(self.late, Relaxed);
        m.watermark_lag_ms.store(self.watermark_lag_ms, Relaxed);
    }
}

/// Per-component sums at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComponentStats {
    pub kind: String,
    pub role: String,
    pub tasks: usize,
    pub emitted: u64,
    pub transferred: u64,
    pub executed: u64,
    pub acked: u64,
    pub failed: u64,
    pub errors: u64,
    pub execute_latency_us: f64,
    pub complete_latency_p50_us: f64,
    pub complete_latency_p99_us: f64,
    pub complete_latency_p999_us: f64,
    pub queue_depth: i64,
    /// Storm's capacity: the share of the time a task of the component spent executing
    /// (executed × mean execute latency ÷ time since start), averaged over its tasks.
    /// Near 1: the component is the bottleneck, give it more parallelism.
    pub capacity: f64,
    /// Windows fired (windowed bolts; 0 elsewhere).
    #[serde(default)]
    pub windows_fired: u64,
    /// Flink's split of a task's time, averaged over the component's tasks since they started
    /// (each 0 to 1, summing to 1): busy (executing, or a spout producing), idle (waiting for
    /// input) and backpressured (waiting for room in a full downstream queue).
    #[serde(default)]
    pub busy: f64,
    #[serde(default)]
    pub idle: f64,
    #[serde(default)]
    pub backpressured: f64,
    /// Checkpoints committed (stateful bolts: the most any task heard of; 0 elsewhere).
    #[serde(default)]
    pub checkpoints: u64,
    /// The last committed checkpoint's duration in ms, from when it was due to its commit
    /// (stateful bolts: the longest over the tasks).
    #[serde(default)]
    pub last_checkpoint_ms: u64,
    /// Entries in the state (stateful bolts: summed over the tasks, each holding the whole
    /// committed state it restored plus its own changes).
    #[serde(default)]
    pub state_entries: u64,
    /// Late tuples: behind the watermark when they came (windowed bolts; 0 elsewhere).
    #[serde(default)]
    pub late: u64,
    /// Event-time lag: processing time minus the watermark, the max over the tasks.
    #[serde(default)]
    pub watermark_lag_ms: u64,
    /// The latest error of any of its tasks (absent if none reported one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorNote>,
    /// A spout's failed trees by cause and component (see [`FailedBy`]), summed over its tasks.
    #[serde(default)]
    pub failed_by: Vec<FailedBy>,
}

impl ComponentStats {
    /// A component of kind `kind` and role `role` (`spout` or `bolt`) with `tasks` tasks,
    /// nothing counted yet.
    pub fn blank(kind: &str, role: &str, tasks: usize) -> ComponentStats {
        ComponentStats { kind: kind.to_string(), role: role.to_string(), tasks, ..ComponentStats::default() }
    }
}

/// A topology's figures at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub topology: String,
    pub components: BTreeMap<String, ComponentStats>,
}

/// The metrics of every task of a plan.
#[derive(Debug, Clone)]
pub struct TopologyMetrics {
    pub tasks: Vec<Arc<TaskMetrics>>,
    pub started: Instant,
}

impl TopologyMetrics {
    pub fn new(task_count: usize) -> Self {
        TopologyMetrics {
            tasks: (0..task_count).map(|_| Arc::new(TaskMetrics::default())).collect(),
            started: Instant::now(),
        }
    }

    /// Sums every component's tasks (ackers are not listed).
    pub fn snapshot(&self, plan: &Plan) -> Snapshot {
        let elapsed = self.started.elapsed().as_secs_f64();
        let components = plan.components.iter().map(|c| {
            let figures: Vec<TaskFigures> =
                c.tasks.iter().map(|&t| self.tasks[t as usize].figures(t)).collect();
            (c.id.as_str(), c.kind.as_str(), c.role, c.tasks.len(), figures)
        });
        Snapshot::sum(&plan.name, components, elapsed)
    }

    /// The figures of the tasks `tasks`.
    pub fn figures(&self, tasks: &[TaskId]) -> Vec<TaskFigures> {
        tasks.iter().map(|&t| self.tasks[t as usize].figures(t)).collect()
    }
}

/// One task's figures at one moment, as a worker reports them to nimbus.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskFigures {
    pub task: TaskId,
    pub emitted: u64,
    pub transferred: u64,
    pub executed: u64,
    pub acked: u64,
    pub failed: u64,
    pub errors: u64,
    pub execute_ns: u64,
    pub execute_samples: u64,
    pub queued: i64,
    /// Complete latency (spouts): (value in µs, count) for every recorded value.
    pub complete_us: Vec<(u64, u64)>,
    #[serde(default)]
    pub windows_fired: u64,
    #[serde(default)]
    pub late: u64,
    #[serde(default)]
    pub watermark_lag_ms: u64,
    /// The latest error the task reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorNote>,
    /// Sampled execute latencies per bucket of [`EXECUTE_BUCKETS_NS`] (empty: none sampled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execute_buckets: Vec<u64>,
    #[serde(default)]
    pub checkpoints: u64,
    #[serde(default)]
    pub checkpoint_ms: u64,
    #[serde(default)]
    pub state_entries: u64,
    #[serde(default)]
    pub idle_ns: u64,
    #[serde(default)]
    pub backpressured_ns: u64,
    /// Failed trees by cause (spouts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_by: Vec<FailedBy>,
}

impl TaskFigures {
    /// Whether these figures come from a task started again since `before` (a restarted
    /// worker): a counter went back.
    pub fn restarted_since(&self, before: &TaskFigures) -> bool {
        self.emitted < before.emitted
            || self.transferred < before.transferred
            || self.executed < before.executed
            || self.acked < before.acked
            || self.failed < before.failed
            || self.errors < before.errors
            || self.execute_samples < before.execute_samples
    }

    /// These figures with `earlier` (what the task's previous runs counted) added: counters
    /// and histograms summed; gauges (queue depth, lag, state entries, the last checkpoint)
    /// are this run's; the last error is this run's, else the earlier one.
    pub fn plus(&self, earlier: &TaskFigures) -> TaskFigures {
        let mut out = self.clone();
        out.emitted += earlier.emitted;
        out.transferred += earlier.transferred;
        out.executed += earlier.executed;
        out.acked += earlier.acked;
        out.failed += earlier.failed;
        out.errors += earlier.errors;
        out.execute_ns += earlier.execute_ns;
        out.execute_samples += earlier.execute_samples;
        out.complete_us.extend(earlier.complete_us.iter().copied());
        out.windows_fired += earlier.windows_fired;
        out.late += earlier.late;
        out.checkpoints += earlier.checkpoints;
        out.idle_ns += earlier.idle_ns;
        out.backpressured_ns += earlier.backpressured_ns;
        if out.last_error.is_none() {
            out.last_error = earlier.last_error.clone();
        }
        for f in &earlier.failed_by {
            add_failed_by(&mut out.failed_by, &f.component, &f.cause, f.count);
        }
        if out.execute_buckets.is_empty() {
            out.execute_buckets = earlier.execute_buckets.clone();
        } else {
            for (b, e) in out.execute_buckets.iter_mut().zip(&earlier.execute_buckets) {
                *b += e;
            }
        }
        out
    }
}

impl TaskFigures {
    /// What the task counted since `earlier` (its figures at a window's start): counters,
    /// histograms and failure causes less theirs then; gauges and the last error are now's.
    /// Figures from a task that started again since `earlier` are all since then.
    pub fn minus(&self, earlier: &TaskFigures) -> TaskFigures {
        if self.restarted_since(earlier) {
            return self.clone();
        }
        let mut out = self.clone();
        out.emitted -= earlier.emitted;
        out.transferred -= earlier.transferred;
        out.executed -= earlier.executed;
        out.acked -= earlier.acked;
        out.failed -= earlier.failed;
        out.errors -= earlier.errors;
        out.execute_ns = out.execute_ns.saturating_sub(earlier.execute_ns);
        out.execute_samples -= earlier.execute_samples;
        out.windows_fired = out.windows_fired.saturating_sub(earlier.windows_fired);
        out.late = out.late.saturating_sub(earlier.late);
        out.checkpoints = out.checkpoints.saturating_sub(earlier.checkpoints);
        out.idle_ns = out.idle_ns.saturating_sub(earlier.idle_ns);
        out.backpressured_ns = out.backpressured_ns.saturating_sub(earlier.backpressured_ns);
        for (b, e) in out.execute_buckets.iter_mut().zip(&earlier.execute_buckets) {
            *b = b.saturating_sub(*e);
        }
        // Both lists are sorted by value (a histogram's recorded values, in order).
        let before: BTreeMap<u64, u64> = earlier.complete_us.iter().copied().collect();
        out.complete_us = self
            .complete_us
            .iter()
            .map(|&(value, count)| (value, count.saturating_sub(before.get(&value).copied().unwrap_or(0))))
            .filter(|&(_, count)| count > 0)
            .collect();
        for f in &mut out.failed_by {
            if let Some(e) =
                earlier.failed_by.iter().find(|e| e.component == f.component && e.cause == f.cause)
            {
                f.count = f.count.saturating_sub(e.count);
            }
        }
        out.failed_by.retain(|f| f.count > 0);
        out
    }
}

impl TaskMetrics {
    pub fn figures(&self, task: TaskId) -> TaskFigures {
        let complete_us = match self.complete_us.lock() {
            Ok(h) if !h.is_empty() => {
                h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
            }
            _ => Vec::new(),
        };
        TaskFigures {
            task,
            emitted: self.emitted.load(Relaxed),
            transferred: self.transferred.load(Relaxed),
            executed: self.executed.load(Relaxed),
            acked: self.acked.load(Relaxed),
            failed: self.failed.load(Relaxed),
            errors: self.errors.load(Relaxed),
            execute_ns: self.execute_ns.load(Relaxed),
            execute_samples: self.execute_samples.load(Relaxed),
            queued: self.queued.load(Relaxed),
            complete_us,
            windows_fired: self.windows_fired.load(Relaxed),
            late: self.late.load(Relaxed),
            watermark_lag_ms: self.watermark_lag_ms.load(Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            execute_buckets: match self.execute_samples.load(Relaxed) {
                0 => Vec::new(),
                _ => self.execute_buckets.iter().map(|b| b.load(Relaxed)).collect(),
            },
            checkpoints: self.checkpoints.load(Relaxed),
            checkpoint_ms: self.checkpoint_ms.load(Relaxed),
            state_entries: self.state_entries.load(Relaxed),
            idle_ns: self.idle_ns.load(Relaxed),
            backpressured_ns: self.backpressured_ns.load(Relaxed),
            failed_by: self.failed_by.lock().map(|f| f.clone()).unwrap_or_default(),
        }
    }
}

impl Snapshot {
    /// Sums task figures per component: `components` yields (id, kind, role, task count, the
    /// figures of those of its tasks that reported); `elapsed_secs` is how long the tasks
    /// have run (for capacity).
    pub fn sum<'a>(
        topology: &str,
        components: impl IntoIterator<Item = (&'a str, &'a str, Role, usize, Vec<TaskFigures>)>,
        elapsed_secs: f64,
    ) -> Snapshot {
        let mut out = BTreeMap::new();
        for (id, kind, role, tasks, figures) in components {
            let role = match role {
                Role::Spout => "spout",
                Role::Bolt => "bolt",
            };
            let mut s = ComponentStats::blank(kind, role, tasks);
            let (mut ns, mut samples) = (0u64, 0u64);
            let (mut idle_ns, mut backpressured_ns) = (0u64, 0u64);
            let mut complete = new_histogram();
            for f in &figures {
                s.emitted += f.emitted;
                s.transferred += f.transferred;
                s.executed += f.executed;
                s.acked += f.acked;
                s.failed += f.failed;
                s.errors += f.errors;
                s.queue_depth += f.queued.max(0);
                s.windows_fired += f.windows_fired;
                s.checkpoints = s.checkpoints.max(f.checkpoints);
                s.last_checkpoint_ms = s.last_checkpoint_ms.max(f.checkpoint_ms);
                s.state_entries += f.state_entries;
                s.late += f.late;
                s.watermark_lag_ms = s.watermark_lag_ms.max(f.watermark_lag_ms);
                if let Some(e) = &f.last_error {
                    if s.last_error.as_ref().is_none_or(|l| l.time_ms <= e.time_ms) {
                        s.last_error = Some(e.clone());
                    }
                }
                for by in &f.failed_by {
                    add_failed_by(&mut s.failed_by, &by.component, &by.cause, by.count);
                }
                ns += f.execute_ns;
                samples += f.execute_samples;
                idle_ns += f.idle_ns;
                backpressured_ns += f.backpressured_ns;
                for &(value, count) in &f.complete_us {
                    let _ = complete.record_n(value, count);
                }
            }
            if samples > 0 {
                s.execute_latency_us = ns as f64 / samples as f64 / 1000.0;
                let busy_ns = ns as f64 / samples as f64 * s.executed as f64;
                let elapsed_ns = elapsed_secs * 1e9 * s.tasks as f64;
                s.capacity = (busy_ns / elapsed_ns.max(1.0)).min(1.0);
            }
            let task_ns = (elapsed_secs * 1e9 * s.tasks as f64).max(1.0);
            s.idle = (idle_ns as f64 / task_ns).min(1.0);
            s.backpressured = (backpressured_ns as f64 / task_ns).min(1.0 - s.idle);
            s.busy = (1.0 - s.idle - s.backpressured).max(0.0);
            if !complete.is_empty() {
                s.complete_latency_p50_us = complete.value_at_quantile(0.5) as f64;
                s.complete_latency_p99_us = complete.value_at_quantile(0.99) as f64;
                s.complete_latency_p999_us = complete.value_at_quantile(0.999) as f64;
            }
            out.insert(id.to_string(), s);
        }
        Snapshot { topology: topology.to_string(), components: out }
    }

    /// The end-of-run table for people.
    pub fn render_table(&self, plan: &Plan) -> String {
        self.render_rows(plan.components.iter().map(|c| (c.id.as_str(), c.role)))
    }

    /// The table, one row per component in the order given.
    pub fn render_rows<'a>(&self, order: impl IntoIterator<Item = (&'a str, Role)>) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:>5} {:>12} {:>12} {:>12} {:>12} {:>9} {:>7} {:>8} {:>15} {:>12}",
            "component",
            "kind",
            "tasks",
            "emitted",
            "transferred",
            "executed",
            "acked",
            "failed",
            "errors",
            "capacity",
            "busy/idle/bp",
            "latency"
        );
        let order: Vec<(&str, Role)> = order.into_iter().collect();
        for &(id, role) in &order {
            let Some(s) = self.components.get(id) else { continue };
            let latency = match role {
                Role::Spout if s.acked > 0 => format!(
                    "p50 {} p99 {}",
                    fmt_us(s.complete_latency_p50_us),
                    fmt_us(s.complete_latency_p99_us)
                ),
                Role::Spout => "-".to_string(),
                Role::Bolt => format!("exec {}", fmt_us(s.execute_latency_us)),
            };
            // Storm's capacity: the share of the time the bolt's tasks spent executing.
            let capacity = match role {
                Role::Spout => "-".to_string(),
                Role::Bolt => format!("{:.3}", s.capacity),
            };
            // Flink's split: where the component's time goes.
            let split =
                format!("{:.0}/{:.0}/{:.0}%", s.busy * 100.0, s.idle * 100.0, s.backpressured * 100.0);
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:>5} {:>12} {:>12} {:>12} {:>12} {:>9} {:>7} {:>8} {:>15} {:>12}",
                id,
                s.kind,
                s.tasks,
                s.emitted,
                s.transferred,
                s.executed,
                s.acked,
                s.failed,
                s.errors,
                capacity,
                split,
                latency
            );
        }
        // Windowed bolts, once they have anything to show: a second, narrower table.
        let windowed: Vec<(&str, &ComponentStats)> = order
            .iter()
            .filter_map(|&(id, _)| Some((id, self.components.get(id)?)))
            .filter(|(_, s)| s.windows_fired > 0 || s.late > 0 || s.watermark_lag_ms > 0)
            .collect();
        let stateful: Vec<(&str, &ComponentStats)> = order
            .iter()
            .filter_map(|&(id, _)| Some((id, self.components.get(id)?)))
            .filter(|(_, s)| s.checkpoints > 0)
            .collect();
        if !stateful.is_empty() {
            let _ = writeln!(
                out,
                "{:<16} {:>12} {:>16} {:>14}",
                "stateful", "checkpoints", "last checkpoint", "state entries"
            );
            for (id, s) in stateful {
                let last = fmt_us(s.last_checkpoint_ms as f64 * 1000.0);
                let _ =
                    writeln!(out, "{:<16} {:>12} {:>16} {:>14}", id, s.checkpoints, last, s.state_entries);
            }
        }
        if !windowed.is_empty() {
            let _ = writeln!(
                out,
                "{:<16} {:>14} {:>12} {:>16}",
                "windowed", "windows fired", "late", "event-time lag"
            );
            for (id, s) in windowed {
                let lag = fmt_us(s.watermark_lag_ms as f64 * 1000.0);
                let _ = writeln!(out, "{:<16} {:>14} {:>12} {:>16}", id, s.windows_fired, s.late, lag);
            }
        }
        // Failed trees by cause, once any failed: who failed them, who held them at timeout.
        let failing: Vec<(&str, &FailedBy)> = order
            .iter()
            .filter_map(|&(id, _)| Some((id, self.components.get(id)?)))
            .flat_map(|(id, s)| s.failed_by.iter().map(move |f| (id, f)))
            .collect();
        if !failing.is_empty() {
            let _ = writeln!(out, "{:<16} {:<16} {:<8} {:>12}", "failed trees", "by", "cause", "count");
            for (id, f) in failing {
                let by = if f.component.is_empty() { "?" } else { f.component.as_str() };
                let _ = writeln!(out, "{:<16} {:<16} {:<8} {:>12}", id, by, f.cause, f.count);
            }
        }
        out
    }
}

/// `850µs`, `12.3ms`, `2.10s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1}µs")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// 950, 12.3k, 4.56M.
pub fn human(x: f64) -> String {
    if x < 1e3 {
        format!("{x:.0}")
    } else if x < 1e6 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{:.2}M", x / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_execute_latencies_land_in_their_buckets_and_reach_the_figures() {
        let mut counters = Counters::default();
        for ns in [500, 1_000, 30_000, 5_000_000_000] {
            counters.sample_execute(ns);
        }
        assert_eq!(counters.execute_samples, 4);
        assert_eq!(counters.execute_buckets[0], 2, "≤ 1 µs");
        assert_eq!(counters.execute_buckets[5], 1, "≤ 50 µs");
        assert_eq!(counters.execute_buckets[EXECUTE_BUCKETS - 1], 1, "above every bound");
        let shared = TaskMetrics::default();
        assert!(shared.figures(3).execute_buckets.is_empty(), "nothing sampled yet");
        counters.publish(&shared);
        let figures = shared.figures(3);
        assert_eq!(figures.execute_buckets, counters.execute_buckets.to_vec());
        assert_eq!(figures.execute_samples, 4);
    }

    #[test]
    fn a_component_keeps_the_latest_error_of_its_tasks() {
        let old = ErrorNote { time_ms: 1, message: "old".into() };
        let new = ErrorNote { time_ms: 2, message: "new".into() };
        let figures = vec![
            TaskFigures { task: 0, last_error: Some(new.clone()), ..Default::default() },
            TaskFigures { task: 1, last_error: Some(old), ..Default::default() },
        ];
        let s = Snapshot::sum("t", [("b", "k", Role::Bolt, 2, figures)], 1.0);
        assert_eq!(s.components["b"].last_error, Some(new));
        let long = "é".repeat(MAX_ERROR_NOTE);
        assert!(ErrorNote::now(&long).message.len() <= MAX_ERROR_NOTE);
    }

    #[test]
    fn a_components_time_splits_into_busy_idle_and_backpressured_shares_of_its_tasks_time() {
        // Two tasks over 10 s: 20 s of task time, 5 s idle and 3 s backpressured in all.
        let figures = vec![
            TaskFigures {
                task: 0,
                idle_ns: 4_000_000_000,
                backpressured_ns: 1_000_000_000,
                ..Default::default()
            },
            TaskFigures {
                task: 1,
                idle_ns: 1_000_000_000,
                backpressured_ns: 2_000_000_000,
                ..Default::default()
            },
        ];
        let s = &Snapshot::sum("t", [("b", "k", Role::Bolt, 2, figures)], 10.0).components["b"];
        assert!((s.idle - 0.25).abs() < 1e-9 && (s.backpressured - 0.15).abs() < 1e-9, "{s:?}");
        assert!((s.busy - 0.60).abs() < 1e-9, "{s:?}");
        let table = Snapshot::sum(
            "t",
            [("b", "k", Role::Bolt, 2, vec![TaskFigures { idle_ns: 4_000_000_000, ..Default::default() }])],
            10.0,
        )
        .render_rows([("b", Role::Bolt)]);
        assert!(table.contains("80/20/0%"), "{table}");
    }

    #[test]
    fn a_window_of_a_tasks_figures_holds_only_what_it_counted_since_the_windows_start() {
        let start = TaskFigures {
            task: 1,
            emitted: 100,
            acked: 90,
            complete_us: vec![(10, 5), (900_000, 1)],
            failed_by: vec![FailedBy { component: "b".into(), cause: TIMEOUT.into(), count: 2 }],
            ..Default::default()
        };
        let mut now = start.plus(&TaskFigures {
            emitted: 50,
            acked: 50,
            complete_us: vec![(10, 50)],
            ..Default::default()
        });
        now.complete_us = vec![(10, 55), (900_000, 1)];
        let window = now.minus(&start);
        assert_eq!((window.emitted, window.acked), (50, 50));
        assert_eq!(window.complete_us, vec![(10, 50)], "the start-up spike is outside the window");
        assert!(window.failed_by.is_empty(), "no tree failed within the window");
        let restarted = TaskFigures { task: 1, emitted: 3, ..Default::default() };
        assert_eq!(restarted.minus(&start).emitted, 3, "a restarted task's figures are all new");
    }

    #[test]
    fn a_restarted_tasks_figures_carry_what_its_earlier_runs_counted() {
        let before = TaskFigures {
            task: 2,
            emitted: 100,
            acked: 90,
            complete_us: vec![(10, 5)],
            last_error: Some(ErrorNote { time_ms: 1, message: "old".into() }),
            ..Default::default()
        };
        let now = TaskFigures { task: 2, emitted: 7, acked: 6, queued: 3, ..Default::default() };
        assert!(now.restarted_since(&before));
        assert!(!now.plus(&before).restarted_since(&before), "the sum never goes back");
        let total = now.plus(&before);
        assert_eq!((total.emitted, total.acked, total.queued), (107, 96, 3));
        assert_eq!(total.complete_us, vec![(10, 5)]);
        assert_eq!(total.last_error.map(|e| e.message), Some("old".into()));
    }
}
