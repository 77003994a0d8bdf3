//! Live rewiring in one process: running tasks switch to a plan where a bolt has more or
//! fewer tasks, without stopping, and nothing is lost (every message id acked once, every
//! number reaches the sink); a new task gets tuples, a removed one ends.
//!
//! Deadlines are generous and nothing measures time: these run on a loaded 2-core machine.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_api::{
    async_trait, values, Bolt, BoltCollector, BoxError, MessageId, NoConfig, OutputDeclarer, Registry, Spout,
    SpoutCollector, TaskId, Tuple,
};
use squall_engine::executor::Links;
use squall_engine::launch::{self, Remote};
use squall_engine::plan::Plan;
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};

const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Seen {
    /// Numbers the spout tasks may emit (below this).
    limit: AtomicI64,
    /// The next number a spout task emits (the tasks share the sequence).
    next: AtomicI64,
    acks: Mutex<HashMap<i64, u32>>,
    sunk: Mutex<BTreeSet<i64>>,
}

/// Emits the shared sequence 0..limit with message id n, replays what fails.
struct Numbers {
    replay: VecDeque<i64>,
    seen: Arc<Seen>,
}

#[async_trait]
impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        let n = match self.replay.pop_front() {
            Some(n) => n,
            None => match self
                .seen
                .next
                .fetch_update(SeqCst, SeqCst, |n| (n < self.seen.limit.load(SeqCst)).then_some(n + 1))
            {
                Ok(n) => n,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    return Ok(());
                }
            },
        };
        out.emit_with_id(values![n], MessageId::from(n))?;
        Ok(())
    }

    async fn ack(&mut self, id: MessageId) {
        if let Some(n) = id.as_i64() {
            *self.seen.acks.lock().unwrap().entry(n).or_default() += 1;
        }
    }

    async fn fail(&mut self, id: MessageId) {
        if let Some(n) = id.as_i64() {
            self.replay.push_back(n);
        }
    }
}

/// Passes `n` on, anchored.
struct Pass;

#[async_trait]
impl Bolt for Pass {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        out.emit(&input, values![input.get_i64("n")?])?;
        out.ack(input);
        Ok(())
    }
}

/// Records every `n` and acks it.
struct Sink {
    seen: Arc<Seen>,
}

#[async_trait]
impl Bolt for Sink {
    fn declare_outputs(&self, _: &mut OutputDeclarer) {}

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        self.seen.sunk.lock().unwrap().insert(input.get_i64("n")?);
        out.ack(input);
        Ok(())
    }
}

fn registry(seen: &Arc<Seen>) -> Registry {
    let mut r = Registry::new();
    let s = seen.clone();
    r.spout("numbers", move |_: NoConfig| Ok(Numbers { replay: VecDeque::new(), seen: s.clone() }));
    r.bolt("pass", |_: NoConfig| Ok(Pass));
    let s = seen.clone();
    r.bolt("sink", move |_: NoConfig| Ok(Sink { seen: s.clone() }));
    r
}

/// numbers → pass (`pass` tasks, fields grouping on n) → sink.
fn topology(pass: usize) -> TopologyDef {
    with_spouts(1, pass)
}

/// `spouts` numbers tasks → pass (`pass` tasks, fields grouping on n) → sink.
fn with_spouts(spouts: usize, pass: usize) -> TopologyDef {
    TopologyDef {
        name: "rewire".into(),
        workers: 1,
        settings: Settings { message_timeout_secs: 5, ..Settings::default() },
        spouts: vec![ComponentDef::new("numbers", "numbers").parallelism(spouts).emits(["n"])],
        bolts: vec![
            ComponentDef::new("pass", "pass")
                .parallelism(pass)
                .input("numbers", GroupingDef::Fields(vec!["n".into()]))
                .emits(["n"]),
            ComponentDef::new("sink", "sink").input("pass", GroupingDef::Shuffle),
        ],
    }
}

/// One process: nothing to carry elsewhere.
struct InProcess;

impl Remote for InProcess {
    fn attach(&mut self, _: &Plan, _: &mut Links) {}
    fn rewire(&mut self, _: &Plan, _: u64, _: &mut Links) {}
}

/// Waits until every number below `n` was sunk and acked.
async fn all_done(seen: &Seen, n: i64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let sunk = seen.sunk.lock().unwrap().range(..n).count() as i64;
        let acked = seen.acks.lock().unwrap().keys().filter(|&&k| k < n).count() as i64;
        if sunk == n && acked == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {sunk} of {n} sunk and {acked} acked in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs 0..half on `before` pass tasks, rewires to `after`, runs half..2*half; returns the
/// new plan, its running tasks and what was seen.
async fn run_across_a_rewire(before: usize, after: usize, half: i64) -> (Plan, launch::Running, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let registry = registry(&seen);
    let plan = Plan::new(&topology(before)).unwrap();
    let hosted: Vec<TaskId> = plan.task_ids().collect();
    let mut running = launch::start(&plan, &registry, &hosted, None, None).expect("starts");
    seen.limit.store(half, SeqCst);
    all_done(&seen, half).await;

    let numbering = plan.numbering().resized(1, 1, after).unwrap();
    let next = Plan::numbered(&topology(after), &numbering).unwrap();
    let hosted: Vec<TaskId> = next.task_ids().collect();
    running.rewire(Arc::new(next.clone()), &registry, &hosted, 2, &mut InProcess).expect("rewires");
    seen.limit.store(2 * half, SeqCst);
    all_done(&seen, 2 * half).await;
    (next, running, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_that_grows_live_gets_a_new_task_that_takes_tuples_and_nothing_is_lost() {
    let (plan, running, seen) = run_across_a_rewire(2, 3, 20_000).await;
    let pass = &plan.components[1].tasks;
    assert_eq!(pass.len(), 3);
    let new = pass[2];
    assert!(new as usize >= 5, "the new task's id comes after every id in use: {pass:?}");
    let executed = running.metrics.figures(&[new])[0].executed;
    assert!(executed > 0, "the new pass task executed nothing");
    let acks = seen.acks.lock().unwrap();
    assert_eq!(acks.len(), 40_000);
    assert!(acks.values().all(|&n| n == 1), "an id acked twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bolt_that_shrinks_live_ends_its_removed_task_and_nothing_is_lost() {
    let (plan, mut running, seen) = run_across_a_rewire(3, 1, 20_000).await;
    assert_eq!(plan.components[1].tasks, vec![1]);
    assert!(plan.is_hole(2) && plan.is_hole(3), "pass's tasks 2 and 3 went away");
    // The two removed pass tasks ended by themselves (everything else still runs).
    tasks_end(&mut running, 2).await;
    assert_eq!(seen.acks.lock().unwrap().len(), 40_000);
    assert_eq!(seen.sunk.lock().unwrap().len(), 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_grown_and_then_removed_ends_although_its_id_is_past_the_new_plan() {
    let (grown, mut running, seen) = run_across_a_rewire(2, 3, 10_000).await;
    let registry = registry(&seen);
    let numbering = grown.numbering().resized(1, 1, 1).unwrap();
    let shrunk = Plan::numbered(&topology(1), &numbering).unwrap();
    assert!(
        shrunk.task_count() <= grown.components[1].tasks[2] as usize,
        "the grown task's id is past the plan"
    );
    let hosted: Vec<TaskId> = shrunk.task_ids().collect();
    running.rewire(Arc::new(shrunk), &registry, &hosted, 3, &mut InProcess).expect("rewires");
    seen.limit.store(30_000, SeqCst);
    all_done(&seen, 30_000).await;
    tasks_end(&mut running, 2).await;
    assert!(seen.acks.lock().unwrap().values().all(|&n| n == 1), "an id acked twice");
}

/// Waits for `n` tasks to end, each cleanly.
async fn tasks_end(running: &mut launch::Running, n: usize) {
    for _ in 0..n {
        let ended = tokio::time::timeout(DEADLINE, running.tasks.join_next())
            .await
            .expect("a retired task ends")
            .expect("tasks are running");
        assert!(ended.expect("no panic").is_ok(), "a retired task ends cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resized_spout_starts_all_its_tasks_anew_and_nothing_is_lost() {
    let seen = Arc::new(Seen::default());
    let registry = registry(&seen);
    let plan = Plan::new(&with_spouts(1, 2)).unwrap();
    let hosted: Vec<TaskId> = plan.task_ids().collect();
    let mut running = launch::start(&plan, &registry, &hosted, None, None).expect("starts");
    seen.limit.store(10_000, SeqCst);
    all_done(&seen, 10_000).await;

    // 1 → 2 spout tasks: both new (fresh ids), the old one retires.
    let numbering = plan.numbering().resized(1, 0, 2).unwrap();
    let grown = Plan::numbered(&with_spouts(2, 2), &numbering).unwrap();
    let spouts = grown.components[0].tasks.clone();
    assert!(spouts.iter().all(|&t| t as usize >= plan.task_count()), "fresh ids: {spouts:?}");
    let hosted: Vec<TaskId> = grown.task_ids().collect();
    running.rewire(Arc::new(grown.clone()), &registry, &hosted, 2, &mut InProcess).expect("rewires");
    tasks_end(&mut running, 1).await;
    seen.limit.store(30_000, SeqCst);
    all_done(&seen, 30_000).await;
    for f in running.metrics.figures(&spouts) {
        assert!(f.emitted > 0, "spout task {} emitted nothing", f.task);
    }

    // 2 → 1: both retire, one new task takes over.
    let shrunk = Plan::numbered(&with_spouts(1, 2), &grown.numbering().resized(1, 0, 1).unwrap()).unwrap();
    let hosted: Vec<TaskId> = shrunk.task_ids().collect();
    running.rewire(Arc::new(shrunk), &registry, &hosted, 3, &mut InProcess).expect("rewires");
    tasks_end(&mut running, 2).await;
    seen.limit.store(40_000, SeqCst);
    all_done(&seen, 40_000).await;
    let acks = seen.acks.lock().unwrap();
    assert_eq!(acks.len(), 40_000);
    assert!(acks.values().all(|&n| n == 1), "an id acked twice");
}
