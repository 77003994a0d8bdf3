//! Stateful bolts in process: checkpoints commit what every task saved, a run resumes from
//! the last commit, exactly once survives a failed tree by restarting from the last commit
//! (every record counted once), at least once replays it (never below the true counts), and
//! checkpoints keep completing while a bolt is far slower than its spout.
//!
//! Deadlines are generous and nothing measures time: these run on a loaded 2-core machine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use squall_api::{
    async_trait, values, BasicCollector, Bolt, BoltCollector, BoxError, Guarantee, KeyValueState,
    MemoryBackend, MessageId, OutputDeclarer, Registry, Spout, SpoutCollector, StateBackend, StatefulBolt,
    TopologyContext, Tuple, Value,
};
use squall_engine::local::{self, LocalOptions, RunResult};
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, StateSettings, TopologyDef};

const DEADLINE: Duration = Duration::from_secs(120);
const WORDS: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

/// Emits records `n` of `0..count` with `n % tasks == index`, word `WORDS[n % 10]`, id `n`;
/// can rewind to a position (the next record, or the lowest not acked).
struct Numbers {
    count: u64,
    index: u64,
    tasks: u64,
    next: u64,
    pending: BTreeSet<u64>,
    replay: Vec<u64>,
    /// Emits one record per call and sleeps this long between calls (0: a batch per call).
    pace: Duration,
}

impl Numbers {
    fn new(count: u64, pace: Duration) -> Self {
        Numbers { count, index: 0, tasks: 1, next: 0, pending: BTreeSet::new(), replay: Vec::new(), pace }
    }

    fn emit(&mut self, n: u64, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        self.pending.insert(n);
        out.emit_with_id(values![WORDS[(n % 10) as usize], n as i64], Value::from(n as i64))?;
        Ok(())
    }
}

#[async_trait]
impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "n"]);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.index = ctx.task_index() as u64;
        self.tasks = ctx.task_count() as u64;
        self.next = self.index;
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        if let Some(n) = self.replay.pop() {
            return self.emit(n, out);
        }
        let batch = if self.pace.is_zero() { 64 } else { 1 };
        for _ in 0..batch {
            if self.next >= self.count {
                break;
            }
            let n = self.next;
            self.next += self.tasks;
            self.emit(n, out)?;
        }
        if !self.pace.is_zero() {
            tokio::time::sleep(self.pace).await;
        }
        Ok(())
    }

    async fn ack(&mut self, id: MessageId) {
        self.pending.remove(&(id.as_i64().unwrap() as u64));
    }

    async fn fail(&mut self, id: MessageId) {
        self.replay.push(id.as_i64().unwrap() as u64);
    }

    fn is_finished(&self) -> bool {
        self.next >= self.count && self.pending.is_empty() && self.replay.is_empty()
    }

    fn position(&self, guarantee: Guarantee) -> Option<Value> {
        let at = match guarantee {
            Guarantee::ExactlyOnce => self.next,
            Guarantee::AtLeastOnce => self.pending.first().copied().unwrap_or(self.next).min(self.next),
        };
        Some(Value::from(at as i64))
    }

    async fn rewind(&mut self, position: &Value) -> Result<(), BoxError> {
        self.next = position.as_i64().ok_or("a position is a number")? as u64;
        self.pending.clear();
        self.replay.clear();
        Ok(())
    }
}

/// Counts words into its state and emits (word, count).
#[derive(Default)]
struct Count {
    slow: Duration,
}

#[async_trait]
impl StatefulBolt for Count {
    type Key = String;
    type Value = u64;

    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "count"]);
    }

    async fn execute(
        &mut self,
        input: &Tuple,
        state: &mut KeyValueState<String, u64>,
        out: &mut BasicCollector<'_>,
    ) -> Result<(), BoxError> {
        if !self.slow.is_zero() {
            tokio::time::sleep(self.slow).await;
        }
        let word = input.get_str("word")?.to_string();
        let count = state.get_mut_or_insert_with(word.clone(), || 0);
        *count += 1;
        let count = *count;
        out.emit(values![word, count as i64])?;
        Ok(())
    }
}

/// Fails the `nth` tuple it gets, once; acks the rest, passing them on (anchored).
struct FailOnce {
    nth: u64,
    seen: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    /// Drop it instead (neither ack nor fail): its tree times out.
    drop: bool,
}

#[async_trait]
impl Bolt for FailOnce {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "n"]);
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        let seen = self.seen.fetch_add(1, SeqCst) + 1;
        if seen >= self.nth && !self.done.swap(true, SeqCst) {
            if !self.drop {
                out.fail(input);
            }
        } else {
            out.emit_to("default", &[&input], input.values().iter().cloned().collect(), None)?;
            out.ack(input);
        }
        Ok(())
    }
}

struct Setup {
    backend: MemoryBackend,
    failures: Arc<AtomicBool>,
}

fn registry(setup: &Setup, count: u64, fail_at: u64, pace: Duration, slow: Duration) -> Registry {
    let mut registry = Registry::new();
    let backend = setup.backend.clone();
    let (seen, done) = (Arc::new(AtomicU64::new(0)), setup.failures.clone());
    let (seen2, done2) = (seen.clone(), done.clone());
    registry
        .rewindable_spout("numbers", move |_: squall_api::NoConfig| Ok(Numbers::new(count, pace)))
        .stateful_bolt("count", move |_: squall_api::NoConfig| Ok(Count { slow }))
        .bolt("fail-once", move |_: squall_api::NoConfig| {
            Ok(FailOnce { nth: fail_at, seen: seen.clone(), done: done.clone(), drop: false })
        })
        .bolt("drop-once", move |_: squall_api::NoConfig| {
            Ok(FailOnce { nth: fail_at, seen: seen2.clone(), done: done2.clone(), drop: true })
        })
        .state_backend("shared", move |_| Ok(Arc::new(backend.clone()) as Arc<dyn StateBackend>));
    registry
}

fn topology(guarantee: Guarantee, interval_ms: u64) -> TopologyDef {
    TopologyDef {
        name: "stateful".into(),
        workers: 1,
        settings: Settings {
            guarantee,
            message_timeout_secs: 30,
            state: StateSettings {
                backend: "shared".into(),
                checkpoint_interval: Duration::from_millis(interval_ms),
                table: toml::Table::new(),
            },
            ..Settings::default()
        },
        spouts: vec![ComponentDef::new("numbers", "numbers").parallelism(2).emits(["word", "n"])],
        bolts: vec![
            ComponentDef::new("count", "count")
                .parallelism(2)
                .stateful()
                .input("numbers", GroupingDef::Fields(vec!["word".into()]))
                .emits(["word", "count"]),
            ComponentDef::new("sink", "fail-once")
                .parallelism(1)
                .input("count", GroupingDef::Shuffle)
                .emits(["word", "n"]),
        ],
    }
}

/// numbers → fail-once → count: the failure comes before the state.
fn failing_first(guarantee: Guarantee, interval_ms: u64) -> TopologyDef {
    let mut def = topology(guarantee, interval_ms);
    def.bolts = vec![
        ComponentDef::new("gate", "fail-once")
            .parallelism(2)
            .input("numbers", GroupingDef::Shuffle)
            .emits(["word", "n"]),
        ComponentDef::new("count", "count")
            .parallelism(2)
            .stateful()
            .input("gate", GroupingDef::Fields(vec!["word".into()]))
            .emits(["word", "count"]),
    ];
    def
}

async fn run(def: &TopologyDef, registry: &Registry, duration: Option<Duration>) -> RunResult {
    let opts = LocalOptions { duration, ..LocalOptions::default() };
    tokio::time::timeout(DEADLINE, local::run(def, registry, &opts))
        .await
        .expect("the run ends well within the deadline")
        .expect("the run succeeds")
}

async fn committed_counts(backend: &MemoryBackend) -> BTreeMap<String, u64> {
    let entries = backend.load("count").await.unwrap();
    entries
        .into_iter()
        .map(|(k, v)| (squall_api::state::decode(&k).unwrap(), squall_api::state::decode(&v).unwrap()))
        .collect()
}

fn true_counts(count: u64) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for n in 0..count {
        *counts.entry(WORDS[(n % 10) as usize].to_string()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_run_commits_its_final_state() {
    let setup = Setup { backend: MemoryBackend::new(), failures: Arc::new(AtomicBool::new(true)) };
    let registry = registry(&setup, 20_000, u64::MAX, Duration::ZERO, Duration::ZERO);
    // The tasks' checkpoint figure is not checked here: a run shorter than the interval
    // commits only its final checkpoint, whose notice may reach the tasks after they ended.
    run(&topology(Guarantee::AtLeastOnce, 100), &registry, None).await;
    assert_eq!(committed_counts(&setup.backend).await, true_counts(20_000));
    let last = setup.backend.last_committed().await.unwrap().expect("a checkpoint was committed");
    let meta = squall_engine::checkpoint::Meta::decode(&last.meta).unwrap();
    assert_eq!(
        meta.positions["numbers"],
        vec![Value::from(20_000i64), Value::from(20_001i64)],
        "each spout task's position is past its last record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_counts_every_record_once_though_a_tree_failed() {
    let setup = Setup { backend: MemoryBackend::new(), failures: Arc::new(AtomicBool::new(false)) };
    // Paced so that checkpoints commit before the failure, and the restart resumes from one.
    let registry = registry(&setup, 6_000, 3_000, Duration::from_micros(200), Duration::ZERO);
    run(&topology(Guarantee::ExactlyOnce, 50), &registry, None).await;
    assert!(setup.failures.load(SeqCst), "the sink failed a tree");
    assert_eq!(committed_counts(&setup.backend).await, true_counts(6_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_counts_every_record_once_though_a_tree_failed_before_the_state() {
    let setup = Setup { backend: MemoryBackend::new(), failures: Arc::new(AtomicBool::new(false)) };
    // The failed record never reached the state: no commit may cover it, or it is lost.
    let registry = registry(&setup, 6_000, 3_000, Duration::from_micros(200), Duration::ZERO);
    run(&failing_first(Guarantee::ExactlyOnce, 20), &registry, None).await;
    assert!(setup.failures.load(SeqCst), "the gate failed a tree");
    assert_eq!(committed_counts(&setup.backend).await, true_counts(6_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_never_commits_past_a_record_whose_tree_is_still_open() {
    let setup = Setup { backend: MemoryBackend::new(), failures: Arc::new(AtomicBool::new(false)) };
    // The gate drops one record: its tree stays open until the 2 s timeout, while many
    // checkpoints are due. None may commit a position past it.
    let registry = registry(&setup, 6_000, 2_000, Duration::from_micros(300), Duration::ZERO);
    let mut def = failing_first(Guarantee::ExactlyOnce, 20);
    def.bolts[0].kind = "drop-once".into();
    def.settings.message_timeout_secs = 2;
    run(&def, &registry, None).await;
    assert!(setup.failures.load(SeqCst), "the gate dropped a record");
    assert_eq!(committed_counts(&setup.backend).await, true_counts(6_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_replays_a_failed_tree_and_never_counts_below_the_truth() {
    let setup = Setup { backend: MemoryBackend::new(), failures: Arc::new(AtomicBool::new(false)) };
    let registry = registry(&setup, 6_000, 3_000, Duration::ZERO, Duration::ZERO);
    run(&topology(Guarantee::AtLeastOnce, 50), &registry, None).await;
    assert!(setup.failures.load(SeqCst), "the sink failed a tree");
    let counts = committed_counts(&setup.backend).await;
    let truth = true_counts(6_000);
    for (word, n) in &truth {
        assert!(counts[word] >= *n, "{word}: {} < {n}", counts[word]);
    }
    assert!(counts.values().sum::<u64>() > truth.values().sum::<u64>(), "the failed record counted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_from_its_last_checkpoint() {
    let setup = Setup { backend: MemoryBackend::new(), failures: Arc::new(AtomicBool::new(true)) };
    for guarantee in [Guarantee::ExactlyOnce] {
        let registry = registry(&setup, 8_000, u64::MAX, Duration::from_micros(500), Duration::ZERO);
        let first = run(&topology(guarantee, 50), &registry, Some(Duration::from_millis(700))).await;
        assert!(first.stopped);
        let partial: u64 = committed_counts(&setup.backend).await.values().sum();
        assert!(partial < 8_000, "the first run was stopped before the end ({partial})");
        run(&topology(guarantee, 50), &registry, None).await;
        assert_eq!(committed_counts(&setup.backend).await, true_counts(8_000), "{guarantee}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_complete_while_a_bolt_is_a_hundred_times_slower_than_its_spout() {
    let setup = Setup { backend: MemoryBackend::new(), failures: Arc::new(AtomicBool::new(true)) };
    // The spout could emit a batch of 64 every call; the bolt takes 1 ms per tuple.
    let registry = registry(&setup, u64::MAX, u64::MAX, Duration::ZERO, Duration::from_millis(1));
    let mut def = topology(Guarantee::ExactlyOnce, 200);
    def.settings.max_spout_pending = 200;
    let result = run(&def, &registry, Some(Duration::from_secs(4))).await;
    let count = &result.snapshot.components["count"];
    assert!(count.checkpoints >= 3, "checkpoints kept completing under backpressure: {count:?}");
    assert!(count.last_checkpoint_ms < 10_000, "{count:?}");
}
