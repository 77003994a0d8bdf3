//! At-least-once behaviour of the local runtime, observed from inside components: every
//! message id is acked exactly once in the end, failures are replayed, timeouts fail a tree
//! once, max_spout_pending caps what is in flight, and a slow bolt bounds memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_api::{
    async_trait, values, Bolt, BoltCollector, BoxError, Fields, MessageId, NoConfig, OutputDeclarer,
    Registry, Spout, SpoutCollector, StreamDecl, Tuple,
};
use squall_engine::executor::output::{BATCH, INBOX_BATCHES};
use squall_engine::local::{self, LocalOptions};
use squall_engine::metrics::FailedBy;
use squall_engine::topology::{ComponentDef, GroupingDef, InputDef, Settings, TopologyDef};

/// What the test components saw.
#[derive(Default)]
struct Seen {
    acks: Mutex<HashMap<i64, u32>>,
    fails: Mutex<HashMap<i64, u32>>,
    sunk: Mutex<Vec<i64>>,
    emitted: AtomicU64,
    executed: AtomicU64,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    slow: AtomicBool,
}

/// Emits 0..count with message id n, replays failed ids, records acks and fails.
struct Numbers {
    count: i64,
    next: i64,
    replay: VecDeque<i64>,
    reliable: bool,
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
            None if self.count == 0 || self.next < self.count => {
                self.next += 1;
                self.next - 1
            }
            None => return Ok(()),
        };
        let in_flight = self.seen.in_flight.fetch_add(1, SeqCst) + 1;
        self.seen.max_in_flight.fetch_max(in_flight, SeqCst);
        self.seen.emitted.fetch_add(1, SeqCst);
        if self.reliable {
            out.emit_with_id(values![n], MessageId::from(n))?;
        } else {
            out.emit(values![n])?;
            self.seen.in_flight.fetch_sub(1, SeqCst);
        }
        Ok(())
    }

    async fn ack(&mut self, id: MessageId) {
        self.seen.in_flight.fetch_sub(1, SeqCst);
        *self.seen.acks.lock().unwrap().entry(id.as_i64().unwrap()).or_default() += 1;
    }

    async fn fail(&mut self, id: MessageId) {
        self.seen.in_flight.fetch_sub(1, SeqCst);
        let n = id.as_i64().unwrap();
        *self.seen.fails.lock().unwrap().entry(n).or_default() += 1;
        self.replay.push_back(n);
    }

    fn is_finished(&self) -> bool {
        self.count > 0 && self.next >= self.count && self.replay.is_empty()
    }
}

/// Fails one input in `1/every` (by a counter, so the test is deterministic), passes the rest.
struct Flaky {
    every: u64,
    seen_inputs: u64,
}

#[async_trait]
impl Bolt for Flaky {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        self.seen_inputs += 1;
        if self.seen_inputs.is_multiple_of(self.every) {
            out.fail(input);
        } else {
            out.emit(&input, values![input.get_i64("n")?])?;
            out.ack(input);
        }
        Ok(())
    }
}

/// Records every number and acks it; sleeps 1 ms per tuple while `slow` is set.
struct Sink {
    seen: Arc<Seen>,
}

#[async_trait]
impl Bolt for Sink {
    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        if self.seen.slow.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.seen.executed.fetch_add(1, SeqCst);
        self.seen.sunk.lock().unwrap().push(input.get_i64("n")?);
        out.ack(input);
        Ok(())
    }
}

/// Reports an error for every input, naming it, and acks it.
struct Complainer;

#[async_trait]
impl Bolt for Complainer {
    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        out.report_error(&format!("bad tuple {}", input.get_i64("n")?));
        out.ack(input);
        Ok(())
    }
}

/// Never acks anything.
struct BlackHole;

/// Holds each input for 2.5 s (longer than the test's 2 s timeout), resetting its timeout
/// every 250 ms, then acks it.
struct Patient;

#[async_trait]
impl Bolt for Patient {
    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            out.reset_timeout(&input);
        }
        out.ack(input);
        Ok(())
    }
}

#[async_trait]
impl Bolt for BlackHole {
    async fn execute(&mut self, _input: Tuple, _out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct NumbersConfig {
    count: i64,
    #[serde(default = "yes")]
    reliable: bool,
}

fn yes() -> bool {
    true
}

fn registry(seen: &Arc<Seen>) -> Registry {
    let mut r = Registry::new();
    let s = seen.clone();
    r.spout("numbers", move |c: NumbersConfig| {
        Ok(Numbers {
            count: c.count,
            next: 0,
            replay: VecDeque::new(),
            reliable: c.reliable,
            seen: s.clone(),
        })
    });
    r.bolt("flaky", |_: NoConfig| Ok(Flaky { every: 10, seen_inputs: 0 }));
    let s = seen.clone();
    r.bolt("sink", move |_: NoConfig| Ok(Sink { seen: s.clone() }));
    r.bolt("black-hole", |_: NoConfig| Ok(BlackHole));
    r.bolt("complainer", |_: NoConfig| Ok(Complainer));
    r.bolt("patient", |_: NoConfig| Ok(Patient));
    r
}

fn n_stream() -> Vec<StreamDecl> {
    vec![StreamDecl { name: "default".into(), fields: Fields::new(["n"]), direct: false, passthrough: false }]
}

fn component(id: &str, kind: &str, parallelism: usize, from: Option<&str>) -> ComponentDef {
    ComponentDef {
        id: id.into(),
        kind: kind.into(),
        parallelism,
        config: toml::Table::new(),
        tick_secs: None,
        window: None,
        stateful: false,
        inputs: from
            .map(|f| {
                vec![InputDef { from: f.into(), stream: "default".into(), grouping: GroupingDef::Shuffle }]
            })
            .unwrap_or_default(),
        streams: n_stream(),
    }
}

fn numbers(count: i64, reliable: bool) -> ComponentDef {
    let mut c = component("numbers", "numbers", 1, None);
    c.config.insert("count".into(), toml::Value::Integer(count));
    c.config.insert("reliable".into(), toml::Value::Boolean(reliable));
    c
}

fn topology(spout: ComponentDef, bolts: Vec<ComponentDef>, settings: Settings) -> TopologyDef {
    TopologyDef { name: "test".into(), workers: 1, settings, spouts: vec![spout], bolts }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_failed_tuples_until_every_id_is_acked_exactly_once() {
    let seen = Arc::new(Seen::default());
    let def = topology(
        numbers(2000, true),
        vec![component("flaky", "flaky", 2, Some("numbers")), component("sink", "sink", 2, Some("flaky"))],
        Settings::default(),
    );
    let result = local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    assert!(!result.stopped, "the run should end by itself");
    let acks = seen.acks.lock().unwrap();
    let fails = seen.fails.lock().unwrap();
    assert_eq!(acks.len(), 2000, "every id acked");
    assert!(acks.values().all(|&c| c == 1), "an id was acked more than once");
    assert!(!fails.is_empty(), "a 10% flaky bolt should have failed some tuples");
    for id in fails.keys() {
        assert_eq!(acks.get(id), Some(&1), "failed id {id} was not replayed to success");
    }
    let mut sunk = seen.sunk.lock().unwrap().clone();
    sunk.sort_unstable();
    sunk.dedup();
    assert_eq!(sunk, (0..2000).collect::<Vec<_>>(), "the sink saw every number");
    let spout = &result.snapshot.components["numbers"];
    assert_eq!(spout.acked, 2000);
    assert_eq!(spout.failed as usize, fails.values().map(|&c| c as usize).sum::<usize>());
    // Every failed tree is put down to the bolt that failed it.
    let by = FailedBy { component: "flaky".into(), cause: "failed".into(), count: spout.failed };
    assert_eq!(spout.failed_by, vec![by]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_tuple_times_out_and_is_failed_once() {
    let seen = Arc::new(Seen::default());
    let settings = Settings { message_timeout_secs: 1, ..Settings::default() };
    let def = topology(numbers(1, true), vec![component("hole", "black-hole", 1, Some("numbers"))], settings);
    // The spout replays the failed id, which times out again: stop after the first failure.
    let registry = registry(&seen);
    let run = tokio::spawn(async move {
        local::run(
            &def,
            &registry,
            &LocalOptions { duration: Some(Duration::from_secs(4)), progress: false, ..Default::default() },
        )
        .await
    });
    let result = run.await.unwrap().unwrap();
    let fails = seen.fails.lock().unwrap();
    assert!(seen.acks.lock().unwrap().is_empty(), "nothing acked the tuple");
    assert!(fails.get(&0).copied().unwrap_or(0) >= 1, "the tuple timed out and failed");
    // Each emit of id 0 is failed exactly once: fails never exceed emits.
    assert!(fails[&0] as u64 <= seen.emitted.load(SeqCst));
    let spout = &result.snapshot.components["numbers"];
    assert_eq!(spout.failed, fails[&0] as u64);
    // Each timeout is put down to the bolt that held the tree.
    let by = FailedBy { component: "hole".into(), cause: "timeout".into(), count: spout.failed };
    assert_eq!(spout.failed_by, vec![by]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_past_the_log_rate_limit_are_still_counted_and_the_latest_kept() {
    let seen = Arc::new(Seen::default());
    let def = topology(
        numbers(50, true),
        vec![component("complainer", "complainer", 1, Some("numbers"))],
        Settings::default(),
    );
    let result = local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    let bolt = &result.snapshot.components["complainer"];
    // Only the first few of a window reach the log; every one is counted, the newest kept.
    const { assert!(50 > squall_engine::executor::output::ERRORS_LOGGED) };
    assert_eq!(bolt.errors, 50);
    assert_eq!(bolt.last_error.as_ref().map(|e| e.message.as_str()), Some("bad tuple 49"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_spout_pending_caps_in_flight_messages() {
    let seen = Arc::new(Seen::default());
    seen.slow.store(true, SeqCst);
    let settings = Settings { max_spout_pending: 20, ..Settings::default() };
    let def = topology(numbers(300, true), vec![component("sink", "sink", 2, Some("numbers"))], settings);
    local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    assert_eq!(seen.acks.lock().unwrap().len(), 300);
    let max = seen.max_in_flight.load(SeqCst);
    assert!(max <= 20, "{max} messages were in flight, more than max_spout_pending = 20");
    assert!(max >= 10, "only {max} in flight: the cap should be reached with a slow sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bolt_bounds_memory() {
    let seen = Arc::new(Seen::default());
    seen.slow.store(true, SeqCst);
    // Unreliable: nothing but the queues holds the spout back.
    let settings = Settings { acking: false, ..Settings::default() };
    let def = topology(numbers(0, false), vec![component("sink", "sink", 1, Some("numbers"))], settings);
    let registry = registry(&seen);
    let run = tokio::spawn(async move {
        local::run(
            &def,
            &registry,
            &LocalOptions { duration: Some(Duration::from_secs(3)), progress: false, ..Default::default() },
        )
        .await
    });
    // Queued between the spout and the sink: one inbox, the spout's batch, the sink's batch.
    let bound = ((INBOX_BATCHES + 2) * BATCH) as u64;
    let mut worst = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let backlog = seen.emitted.load(SeqCst) - seen.executed.load(SeqCst);
        worst = worst.max(backlog);
    }
    seen.slow.store(false, SeqCst);
    run.await.unwrap().unwrap();
    assert!(worst <= bound, "{worst} tuples queued behind a slow bolt, bound {bound}");
    assert!(seen.executed.load(SeqCst) > 0);
    // Nothing emitted was lost on the way out: the queue drained at stop.
    assert_eq!(seen.emitted.load(SeqCst), seen.executed.load(SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_off_acks_at_emit() {
    let seen = Arc::new(Seen::default());
    let settings = Settings { acking: false, ..Settings::default() };
    let def = topology(
        numbers(500, true),
        vec![component("flaky", "flaky", 1, Some("numbers")), component("sink", "sink", 1, Some("flaky"))],
        settings,
    );
    let result = local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    let acks = seen.acks.lock().unwrap();
    assert_eq!(acks.len(), 500);
    assert!(seen.fails.lock().unwrap().is_empty(), "with acking off nothing is failed back to the spout");
    // The flaky bolt dropped 1 in 10 and nobody replayed them: at-most-once.
    assert_eq!(seen.sunk.lock().unwrap().len(), 450);
    assert_eq!(result.snapshot.components["numbers"].acked, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_timeout_keeps_a_slow_tree_alive() {
    let seen = Arc::new(Seen::default());
    let settings = Settings { message_timeout_secs: 2, ..Settings::default() };
    let def = topology(numbers(1, true), vec![component("patient", "patient", 1, Some("numbers"))], settings);
    local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    assert!(seen.fails.lock().unwrap().is_empty(), "the tree timed out despite reset_timeout");
    assert_eq!(seen.acks.lock().unwrap().get(&0), Some(&1));
}
