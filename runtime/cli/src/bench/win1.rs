//! WIN-1 (docs/benchmarks.md): event-time windows, `squall bench win1`.
//!
//! Contract: a spout emits N events, event i with key "w" + (i mod K) and timestamp
//! ts_i = max(0, ⌊i / 100⌋ − ((i · 7919) mod 201)) ms — 100,000 events per second of event
//! time, up to 200 ms out of order — each with its index as message id (acking on); an
//! aggregate counts them per key on a tumbling 1 s event-time window with a 200 ms lag
//! (parallelism P, fields grouping on the key); a sink gathers every window's count. The run
//! ends by itself once the spout is finished (the windows fire at the end of the stream). It
//! checks that the counts of all windows sum to N, that every (key, window) count equals the
//! one computed from the formula, and that no event was late; peak RSS is the process's
//! high-water mark. With `--workers W` (W > 1) the same topology runs in W worker processes of
//! a private cluster (see `cluster.rs`): each sink task writes what it gathered to a file when
//! the topology is killed, and peak RSS is the sum of the workers' high-water marks.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use squall_api::{
    async_trait, BasicBolt, BasicCollector, BoxError, MessageId, OutputDeclarer, Registry, Spout,
    SpoutCollector, StableHasher, Tuple, Value, Values, WindowAggregate,
};
use squall_engine::local::{self, LocalOptions};
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};
use squall_engine::window::{Size, WindowSpec};

/// WIN-1's parameters.
#[derive(Debug, Clone)]
pub struct Win1 {
    pub n: u64,
    pub p: usize,
    pub k: u64,
    pub workers: usize,
}

/// The timestamp of event `i`, in ms.
pub fn event_ts(i: u64) -> i64 {
    ((i / 100) as i64 - ((i.wrapping_mul(7919)) % 201) as i64).max(0)
}

/// In-flight events the spout may have: more than a window and its lag hold (about 120,000),
/// or the window could never fire.
const MAX_PENDING: usize = 1 << 18;

type Counts = HashMap<(u64, i64), u64, BuildHasherDefault<StableHasher>>;

/// What the sink gathered: (key index, window start) → count.
#[derive(Default)]
struct Gathered {
    counts: Mutex<Counts>,
}

#[derive(Deserialize)]
struct EventsConfig {
    n: u64,
    k: u64,
}

struct Events {
    n: u64,
    k: u64,
    next: u64,
    replay: Vec<u64>,
    keys: Vec<Value>,
}

#[async_trait]
impl Spout for Events {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "ts"]);
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        for _ in 0..8 {
            let i = match self.replay.pop() {
                Some(i) => i,
                None if self.next < self.n => {
                    self.next += 1;
                    self.next - 1
                }
                None => return Ok(()),
            };
            let mut values = Values::new();
            values.push(self.keys[(i % self.k) as usize].clone());
            values.push(Value::Int(event_ts(i)));
            out.emit_with_id(values, Value::Int(i as i64))?;
        }
        Ok(())
    }

    async fn fail(&mut self, msg_id: MessageId) {
        if let Some(i) = msg_id.as_i64() {
            self.replay.push(i as u64);
        }
    }

    fn is_finished(&self) -> bool {
        self.next >= self.n && self.replay.is_empty()
    }

    fn is_exhausted(&self) -> bool {
        self.is_finished()
    }
}

/// Counts per key and window.
struct WindowCount;

impl WindowAggregate for WindowCount {
    type Acc = u64;

    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "count", "window_start", "window_end"]);
    }

    fn key(&self, input: &Tuple) -> Result<Value, BoxError> {
        Ok(input.get(0)?.clone())
    }

    fn create(&self) -> u64 {
        0
    }

    fn add(&self, acc: &mut u64, _input: &Tuple) -> Result<(), BoxError> {
        *acc += 1;
        Ok(())
    }

    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }

    fn result(&self, key: &Value, acc: &u64, start_ms: i64, end_ms: i64) -> Values {
        let mut values = Values::new();
        values.push(key.clone());
        values.push(Value::Int(*acc as i64));
        values.push(Value::Int(start_ms));
        values.push(Value::Int(end_ms));
        values
    }
}

#[derive(Deserialize)]
struct SinkConfig {
    /// Where the task writes its counts at cleanup (in a worker process), instead of into the
    /// process's [`Gathered`].
    #[serde(default)]
    report_dir: Option<std::path::PathBuf>,
}

struct Sink {
    gathered: Arc<Gathered>,
    counts: Counts,
    report_dir: Option<std::path::PathBuf>,
    task: u32,
}

#[async_trait]
impl BasicBolt for Sink {
    async fn prepare(&mut self, ctx: &squall_api::TopologyContext) -> Result<(), BoxError> {
        self.task = ctx.task_id();
        Ok(())
    }

    async fn execute(&mut self, input: &Tuple, _out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        let key = input.get_str(0)?;
        let index: u64 = key.strip_prefix('w').and_then(|k| k.parse().ok()).ok_or("a key not of WIN-1")?;
        let count = input.get_i64(1)? as u64;
        let start = input.get_i64(2)?;
        *self.counts.entry((index, start)).or_default() += count;
        Ok(())
    }

    async fn cleanup(&mut self) {
        if let Some(dir) = &self.report_dir {
            let report: Vec<(u64, i64, u64)> = self.counts.iter().map(|(&(k, s), &c)| (k, s, c)).collect();
            super::write_report(&dir.join(format!("sink-{}.json", self.task)), &report);
            return;
        }
        if let Ok(mut all) = self.gathered.counts.lock() {
            for (window, count) in self.counts.drain() {
                *all.entry(window).or_default() += count;
            }
        }
    }
}

/// WIN-1's component kinds, for the worker processes of a run across workers.
pub fn worker_registry() -> Registry {
    registry(&Arc::new(Gathered::default()))
}

fn registry(gathered: &Arc<Gathered>) -> Registry {
    let mut r = Registry::new();
    r.spout("win1-events", |c: EventsConfig| {
        let keys = (0..c.k.max(1)).map(|k| Value::from(format!("w{k}").as_str())).collect();
        Ok(Events { n: c.n, k: c.k.max(1), next: 0, replay: Vec::new(), keys })
    });
    r.aggregate_bolt("win1-count", |_: squall_api::NoConfig| Ok(WindowCount));
    let g = gathered.clone();
    r.basic_bolt("win1-sink", move |c: SinkConfig| {
        Ok(Sink { gathered: g.clone(), counts: Counts::default(), report_dir: c.report_dir, task: 0 })
    });
    r
}

fn topology(b: &Win1) -> TopologyDef {
    let window = WindowSpec {
        timestamp_field: Some("ts".into()),
        lag: Duration::from_millis(200),
        ..WindowSpec::tumbling(Size::Time(Duration::from_secs(1)))
    };
    TopologyDef {
        name: "win1".into(),
        workers: 1,
        settings: Settings { max_spout_pending: MAX_PENDING, ..Settings::default() },
        spouts: vec![ComponentDef::new("events", "win1-events")
            .set("n", b.n as i64)
            .set("k", b.k as i64)
            .emits(["key", "ts"])],
        bolts: vec![
            ComponentDef::new("count", "win1-count")
                .parallelism(b.p)
                .window(window)
                .input("events", GroupingDef::Fields(vec!["key".into()]))
                .emits(["key", "count", "window_start", "window_end"]),
            ComponentDef::new("sink", "win1-sink").input("count", GroupingDef::Shuffle),
        ],
    }
}

/// The expected (key index, window start) → count, from the formula.
fn expected(n: u64, k: u64) -> Counts {
    let mut counts = Counts::default();
    for i in 0..n {
        let start = event_ts(i) / 1000 * 1000;
        *counts.entry((i % k, start)).or_default() += 1;
    }
    counts
}

/// The process's peak resident set, in MiB (Linux; 0 elsewhere).
fn peak_rss_mb() -> u64 {
    peak_rss_mb_of("/proc/self/status")
}

/// The peak resident set in a `/proc/PID/status` file, in MiB (0 if it cannot be read).
fn peak_rss_mb_of(status: &str) -> u64 {
    let status = std::fs::read_to_string(status).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Runs WIN-1 and returns its line.
pub async fn win1(b: &Win1) -> Result<String, BoxError> {
    if b.p == 0 || b.k == 0 || b.workers == 0 {
        return Err("--p, --k and --workers must be at least 1".into());
    }
    if b.workers > 1 {
        return across_workers(b).await;
    }
    let gathered = Arc::new(Gathered::default());
    let result = local::run(&topology(b), &registry(&gathered), &LocalOptions::default()).await?;
    let secs = result.elapsed.as_secs_f64();
    let rss = peak_rss_mb();
    let counts = std::mem::take(&mut *gathered.counts.lock().map_err(|_| "sink lock poisoned")?);
    let total: u64 = counts.values().sum();
    let late = result.snapshot.components["count"].late;
    let spout = &result.snapshot.components["events"];
    let ok = total == b.n && late == 0 && spout.acked == b.n && counts == expected(b.n, b.k);
    Ok(line(b, secs, rss, ok))
}

fn line(b: &Win1, secs: f64, rss_mb: u64, ok: bool) -> String {
    format!(
        "squall win1 N={} P={} K={} workers={} seconds={secs:.3} events_per_s={:.0} peak_rss_mb={rss_mb} ok={ok}",
        b.n,
        b.p,
        b.k,
        b.workers,
        b.n as f64 / secs
    )
}

#[cfg(not(feature = "cluster"))]
async fn across_workers(_: &Win1) -> Result<String, BoxError> {
    Err("--workers above 1 needs the cluster, and this build has none (feature `cluster`)".into())
}

/// WIN-1 over `b.workers` worker processes of a private cluster.
#[cfg(feature = "cluster")]
async fn across_workers(b: &Win1) -> Result<String, BoxError> {
    let cluster = super::cluster::PrivateCluster::start("win1", b.workers).await?;
    let result = run_across_workers(b, &cluster).await;
    cluster.stop().await;
    result
}

#[cfg(feature = "cluster")]
async fn run_across_workers(b: &Win1, cluster: &super::cluster::PrivateCluster) -> Result<String, BoxError> {
    let reports = cluster.dir.0.join("windows");
    std::fs::create_dir_all(&reports)?;
    cluster.submit("win1", topology_text(b, &reports)).await?;
    let acked = |s: &squall_engine::metrics::Snapshot| s.components.get("events").map_or(0, |c| c.acked);
    let elapsed = cluster.time_run("win1", "events", acked, |s| acked(s) >= b.n).await?;
    let status = cluster.client.status("win1").await?;
    let late = status.snapshot.components.get("count").map_or(0, |c| c.late);
    let rss: u64 =
        cluster.worker_pids().into_iter().map(|pid| peak_rss_mb_of(&format!("/proc/{pid}/status"))).sum();
    cluster.kill("win1").await?;
    let mut counts = Counts::default();
    for path in super::cluster::wait_for_reports(&reports, 1).await? {
        let part: Vec<(u64, i64, u64)> = serde_json::from_slice(&std::fs::read(&path)?)?;
        for (key, start, count) in part {
            *counts.entry((key, start)).or_default() += count;
        }
    }
    let total: u64 = counts.values().sum();
    let ok = total == b.n && late == 0 && counts == expected(b.n, b.k);
    Ok(line(b, elapsed.as_secs_f64(), rss, ok))
}

/// WIN-1 as a topology file over `b.workers` workers, the sink writing to `reports`.
#[cfg(feature = "cluster")]
fn topology_text(b: &Win1, reports: &std::path::Path) -> String {
    format!(
        r#"name = "win1"
workers = {workers}

[settings]
max_spout_pending = {MAX_PENDING}

[[spouts]]
id = "events"
kind = "win1-events"
config = {{ n = {n}, k = {k} }}

[[bolts]]
id = "count"
kind = "win1-count"
parallelism = {p}
window = {{ length = "1s", timestamp_field = "ts", lag = "200ms" }}
inputs = [{{ from = "events", grouping = {{ fields = ["key"] }} }}]

[[bolts]]
id = "sink"
kind = "win1-sink"
inputs = [{{ from = "count", grouping = "shuffle" }}]
config = {{ report_dir = "{reports}" }}
"#,
        workers = b.workers,
        n = b.n,
        k = b.k,
        p = b.p,
        reports = reports.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_the_workload_formula() {
        assert_eq!(event_ts(0), 0);
        assert_eq!(event_ts(1), 0); // 0 − 7919 mod 201 = 0 − 80, floored at 0
        assert_eq!(event_ts(100_000), 1000 - ((100_000u64 * 7919) % 201) as i64);
        // Never more than 200 ms behind ⌊i / 100⌋.
        assert!((0..100_000u64).all(|i| (i / 100) as i64 - event_ts(i) <= 200));
    }

    #[test]
    fn expected_counts_sum_to_n() {
        let counts = expected(100_000, 1000);
        assert_eq!(counts.values().sum::<u64>(), 100_000);
    }
}
