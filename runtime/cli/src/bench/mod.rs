//! Benchmarks: `squall bench wc1`, `lat1`, `log1`, `win1` and `state1`, each printing one
//! result line.
//!
//! Contract: each workload builds its topology in code from components private to this module
//! (a sentence spout cycling through WC-1's five sentences, a splitter, and a counter keeping
//! a `HashMap<String, u64>` per task), runs it with the local runner exactly as `squall local`
//! would, checks the result (total words = 32·N/5, count("the") = 4·N/5, and with acking
//! every sentence acked and none failed) and returns the workload's one-line result.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "cluster")]
mod cluster;
mod log1;
#[cfg(feature = "kafka")]
mod log1_kafka;
mod state1;
mod wc1_python;
mod win1;

pub use log1::{log1, Log1};
pub use state1::{state1, State1};
pub use win1::{win1, Win1};

use hdrhistogram::Histogram;
use serde::Deserialize;
use squall_api::{
    async_trait, BasicBolt, BasicCollector, BoxError, MessageId, OutputDeclarer, Registry, Spout,
    SpoutCollector, StableHasher, TopologyContext, Tuple, Value, Values,
};

use squall_engine::local::{self, LocalOptions};
use squall_engine::metrics::new_histogram;
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};

pub const SENTENCES: [&str; 5] = [
    "the cow jumped over the moon",
    "an apple a day keeps the doctor away",
    "four score and seven years ago",
    "snow white and the seven dwarfs",
    "i am at two with nature",
];

/// WC-1's parameters.
#[derive(Debug, Clone)]
pub struct Wc1 {
    pub n: u64,
    pub p: usize,
    pub acking: bool,
    pub workers: usize,
    /// The split bolt in Python (pystorm, through `shell-bolt`) instead of Rust.
    pub python_split: bool,
}

/// LAT-1's parameters.
#[derive(Debug, Clone)]
pub struct Lat1 {
    pub rate: u64,
    pub p: usize,
    pub workers: usize,
    pub seconds: u64,
    pub warmup: u64,
}

type WordMap = HashMap<String, u64, BuildHasherDefault<StableHasher>>;

/// What the components of a benchmark run report back.
#[derive(Default)]
struct Shared {
    counts: Mutex<WordMap>,
    latency: Mutex<Option<Histogram<u64>>>,
}

#[derive(Deserialize)]
struct SpoutConfig {
    n: u64,
    #[serde(default)]
    rate: u64,
    #[serde(default)]
    warmup_secs: u64,
    /// Emit with message ids (WC-1 with acking on).
    reliable: bool,
}

struct SentenceSpout {
    n: u64,
    reliable: bool,
    next: u64,
    acked: u64,
    replay: Vec<u64>,
    /// Sentences per second; 0 = flat out.
    rate: u64,
    started: Option<Instant>,
    warmup: Duration,
    /// Emit times of in-flight sentences, kept only when measuring latency.
    emitted_at: HashMap<u64, Instant, BuildHasherDefault<StableHasher>>,
    latency: Histogram<u64>,
    shared: Arc<Shared>,
}

#[async_trait]
impl Spout for SentenceSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["sentence"]);
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        // Flat out, a call emits a few sentences: fewer calls, the same tuples.
        let burst = if self.rate == 0 { 8 } else { 1 };
        for _ in 0..burst {
            let i = match self.replay.pop() {
                Some(i) => i,
                None if self.next < self.n => {
                    if self.rate > 0 {
                        let started = *self.started.get_or_insert_with(Instant::now);
                        let due = (started.elapsed().as_secs_f64() * self.rate as f64) as u64;
                        if self.next >= due {
                            return Ok(());
                        }
                    }
                    self.next += 1;
                    self.next - 1
                }
                None => return Ok(()),
            };
            if self.rate > 0 {
                self.emitted_at.insert(i, Instant::now());
            }
            let mut values = Values::new();
            values.push(Value::from_static(SENTENCES[(i % 5) as usize]));
            if self.reliable {
                out.emit_with_id(values, Value::Int(i as i64))?;
            } else {
                out.emit(values)?;
            }
        }
        Ok(())
    }

    async fn ack(&mut self, msg_id: MessageId) {
        self.acked += 1;
        if self.rate == 0 {
            return; // latency is measured only at a fixed rate
        }
        if let (Some(i), Some(started)) = (msg_id.as_i64(), self.started) {
            if let Some(at) = self.emitted_at.remove(&(i as u64)) {
                if at.duration_since(started) >= self.warmup {
                    let _ = self.latency.record((at.elapsed().as_micros() as u64).max(1));
                }
            }
        }
    }

    async fn fail(&mut self, msg_id: MessageId) {
        if let Some(i) = msg_id.as_i64() {
            if self.rate > 0 {
                self.emitted_at.remove(&(i as u64));
            }
            self.replay.push(i as u64);
        }
    }

    async fn close(&mut self) {
        if let Ok(mut l) = self.shared.latency.lock() {
            *l = Some(self.latency.clone());
        }
    }

    fn is_finished(&self) -> bool {
        self.next >= self.n && self.replay.is_empty()
    }
}

struct Split;

#[async_trait]
impl BasicBolt for Split {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        for word in input.get_str(0)?.split_ascii_whitespace() {
            let mut values = Values::new();
            values.push(Value::from(word));
            out.emit(values)?;
        }
        Ok(())
    }
}

struct Count {
    counts: WordMap,
    shared: Arc<Shared>,
    /// In cluster mode: where cleanup writes this task's counts (`count-<task>.json`).
    report_dir: Option<PathBuf>,
    task: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountConfig {
    #[serde(default)]
    report_dir: Option<PathBuf>,
}

#[async_trait]
impl BasicBolt for Count {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.task = ctx.task_id();
        Ok(())
    }

    async fn execute(&mut self, input: &Tuple, _out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        let word = input.get_str(0)?;
        match self.counts.get_mut(word) {
            Some(c) => *c += 1,
            None => {
                self.counts.insert(word.to_string(), 1);
            }
        }
        Ok(())
    }

    async fn cleanup(&mut self) {
        if let Some(dir) = &self.report_dir {
            write_report(&dir.join(format!("count-{}.json", self.task)), &self.counts);
            return;
        }
        if let Ok(mut all) = self.shared.counts.lock() {
            for (w, c) in self.counts.drain() {
                *all.entry(w).or_default() += c;
            }
        }
    }
}

/// Writes what a task gathered in a run across workers, for the benchmark's process to read
/// once the topology is killed: the file appears whole (written aside, then renamed) or not.
fn write_report(path: &std::path::Path, report: &impl serde::Serialize) {
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(report)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::error!("cannot write the results to {}: {e}", path.display());
    }
}

/// The benchmarks' component kinds, for worker processes of a benchmark run in cluster mode.
pub fn worker_registry() -> Registry {
    let mut r = registry(&Arc::new(Shared::default()));
    r.merge(&win1::worker_registry());
    r
}

fn registry(shared: &Arc<Shared>) -> Registry {
    let mut r = Registry::new();
    let s = shared.clone();
    r.spout("wc1-sentences", move |c: SpoutConfig| {
        Ok(SentenceSpout {
            n: c.n,
            reliable: c.reliable,
            next: 0,
            acked: 0,
            replay: Vec::new(),
            rate: c.rate,
            started: None,
            warmup: Duration::from_secs(c.warmup_secs),
            emitted_at: HashMap::default(),
            latency: new_histogram(),
            shared: s.clone(),
        })
    });
    r.basic_bolt("wc1-split", |_: squall_api::NoConfig| Ok(Split));
    let s = shared.clone();
    r.basic_bolt("wc1-count", move |c: CountConfig| {
        Ok(Count { counts: WordMap::default(), shared: s.clone(), report_dir: c.report_dir, task: 0 })
    });
    r
}

fn topology(
    name: &str,
    n: u64,
    rate: u64,
    warmup: u64,
    p: usize,
    acking: bool,
    max_pending: usize,
) -> TopologyDef {
    let sentences = ComponentDef::new("sentences", "wc1-sentences")
        .set("n", n as i64)
        .set("rate", rate as i64)
        .set("warmup_secs", warmup as i64)
        .set("reliable", acking)
        .emits(["sentence"]);
    TopologyDef {
        name: name.into(),
        workers: 1,
        settings: Settings { acking, max_spout_pending: max_pending, ..Settings::default() },
        spouts: vec![sentences],
        bolts: vec![
            ComponentDef::new("split", "wc1-split")
                .parallelism(p)
                .input("sentences", GroupingDef::Shuffle)
                .emits(["word"]),
            ComponentDef::new("count", "wc1-count")
                .parallelism(p)
                .input("split", GroupingDef::Fields(vec!["word".into()])),
        ],
    }
}

fn single_process(workers: usize) -> Result<(), BoxError> {
    if workers != 1 {
        return Err(format!(
            "--workers {workers}: only wc1 and win1 run across worker processes so far; use --workers 1"
        )
        .into());
    }
    Ok(())
}

/// WC-1 over `b.workers` worker processes of a private cluster.
#[cfg(feature = "cluster")]
async fn wc1_across_workers(b: &Wc1) -> Result<String, BoxError> {
    let (secs, words, the, acked, failed) = cluster::wc1(b).await?;
    let mut ok = words == 32 * b.n / 5 && the == 4 * b.n / 5;
    if b.acking {
        ok &= acked == b.n && failed == 0;
    }
    Ok(wc1_line(b, secs, words, ok))
}

#[cfg(not(feature = "cluster"))]
async fn wc1_across_workers(_: &Wc1) -> Result<String, BoxError> {
    Err("--workers above 1 needs the cluster, and this build has none (feature `cluster`)".into())
}

/// Runs WC-1 and returns its line.
pub async fn wc1(b: &Wc1) -> Result<String, BoxError> {
    if b.p == 0 || b.workers == 0 {
        return Err("--p and --workers must be at least 1".into());
    }
    if b.workers > 1 && b.python_split {
        return Err("--split python runs in one process; use --workers 1".into());
    }
    if b.workers > 1 {
        return wc1_across_workers(b).await;
    }
    let shared = Arc::new(Shared::default());
    let mut def = topology("wc1", b.n, 0, 0, b.p, b.acking, 8192);
    let mut registry = registry(&shared);
    let mut opts = LocalOptions::default();
    let _resources = match b.python_split {
        true => {
            let dir = wc1_python::use_python_split(&mut def, &mut registry)?;
            opts.resources = Some(dir.0.clone());
            Some(dir)
        }
        false => None,
    };
    let result = local::run(&def, &registry, &opts).await?;
    let counts = shared.counts.lock().map_err(|_| "count lock poisoned")?;
    let words: u64 = counts.values().sum();
    let the = counts.get("the").copied().unwrap_or(0);
    let spout = &result.snapshot.components["sentences"];
    let mut ok = words == 32 * b.n / 5 && the == 4 * b.n / 5;
    if b.acking {
        ok &= spout.acked == b.n && spout.failed == 0;
    }
    Ok(wc1_line(b, result.elapsed.as_secs_f64(), words, ok))
}

fn wc1_line(b: &Wc1, secs: f64, words: u64, ok: bool) -> String {
    format!(
        "squall wc1 N={} P={} workers={} acking={}{} seconds={:.3} words_per_s={:.0} ok={}",
        b.n,
        b.p,
        b.workers,
        if b.acking { "on" } else { "off" },
        if b.python_split { " split=python" } else { "" },
        secs,
        words as f64 / secs,
        ok
    )
}

/// Runs LAT-1 and returns its line.
pub async fn lat1(b: &Lat1) -> Result<String, BoxError> {
    single_process(b.workers)?;
    if b.p == 0 || b.rate == 0 {
        return Err("--p and --rate must be at least 1".into());
    }
    let shared = Arc::new(Shared::default());
    let n = b.rate * (b.warmup + b.seconds);
    let def = topology("lat1", n, b.rate, b.warmup, b.p, true, 0);
    let result = local::run(&def, &registry(&shared), &LocalOptions::default()).await?;
    let latency =
        shared.latency.lock().map_err(|_| "latency lock poisoned")?.clone().unwrap_or_else(new_histogram);
    let spout = &result.snapshot.components["sentences"];
    Ok(format!(
        "squall lat1 R={} P={} workers={} p50_us={} p99_us={} p999_us={} acked={} failed={}",
        b.rate,
        b.p,
        b.workers,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        spout.acked,
        spout.failed
    ))
}

/// A fresh directory under the system's temp dir, removed on drop.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> Result<Self, BoxError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("squall-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
