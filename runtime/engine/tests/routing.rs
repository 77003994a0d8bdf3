//! Routing and tree tracking across the local runtime: tick tuples arrive at the requested
//! frequency, emit_direct reaches the named task, an all-grouped tuple counts as one edge per
//! receiving task, and a tuple anchored to two inputs completes both inputs' trees.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squall_api::{
    async_trait, values, Bolt, BoltCollector, BoxError, Fields, MessageId, NoConfig, OutputDeclarer,
    Registry, Spout, SpoutCollector, StreamDecl, TaskId, TopologyContext, Tuple,
};
use squall_engine::local::{self, LocalOptions};
use squall_engine::topology::{ComponentDef, GroupingDef, InputDef, Settings, TopologyDef};

#[derive(Default)]
struct Seen {
    acked: AtomicU64,
    failed: AtomicU64,
    ticks: AtomicU64,
    /// (receiving task, value) of every tuple a sink saw.
    received: Mutex<Vec<(TaskId, i64)>>,
}

/// Emits 0..count reliably (a negative count: nothing, and never finishes); on the direct stream "to-last" when `direct` is set, addressed to
/// the last task of component "sink".
struct Counter {
    count: i64,
    next: i64,
    direct_to: Option<TaskId>,
    direct: bool,
    seen: Arc<Seen>,
}

#[async_trait]
impl Spout for Counter {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
        out.declare_direct_stream("to-last", ["n"]);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.direct_to = ctx.component_tasks("sink").last().copied();
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        if self.next >= self.count {
            return Ok(());
        }
        let n = self.next;
        self.next += 1;
        match (self.direct, self.direct_to) {
            (true, Some(task)) => out.emit_direct(task, "to-last", values![n], Some(MessageId::from(n)))?,
            _ => out.emit_with_id(values![n], MessageId::from(n))?,
        }
        Ok(())
    }

    async fn ack(&mut self, _id: MessageId) {
        self.seen.acked.fetch_add(1, SeqCst);
    }

    async fn fail(&mut self, _id: MessageId) {
        self.seen.failed.fetch_add(1, SeqCst);
    }

    fn is_finished(&self) -> bool {
        self.count >= 0 && self.next >= self.count
    }
}

/// Records (its task, n) and acks; counts tick tuples.
struct Sink {
    task: TaskId,
    seen: Arc<Seen>,
}

#[async_trait]
impl Bolt for Sink {
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.task = ctx.task_id();
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        if input.is_tick() {
            self.seen.ticks.fetch_add(1, SeqCst);
        } else {
            self.seen.received.lock().unwrap().push((self.task, input.get_i64("n")?));
        }
        out.ack(input);
        Ok(())
    }
}

/// Holds inputs in pairs and emits their sum anchored to both, then acks both.
struct Pairs {
    held: Option<Tuple>,
}

#[async_trait]
impl Bolt for Pairs {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        match self.held.take() {
            None => self.held = Some(input),
            Some(first) => {
                let sum = first.get_i64("n")? + input.get_i64("n")?;
                out.emit_anchored(&[&first, &input], values![sum])?;
                out.ack(first);
                out.ack(input);
            }
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct CounterConfig {
    count: i64,
    #[serde(default)]
    direct: bool,
}

fn registry(seen: &Arc<Seen>) -> Registry {
    let mut r = Registry::new();
    let s = seen.clone();
    r.spout("counter", move |c: CounterConfig| {
        Ok(Counter { count: c.count, next: 0, direct_to: None, direct: c.direct, seen: s.clone() })
    });
    let s = seen.clone();
    r.bolt("sink", move |_: NoConfig| Ok(Sink { task: 0, seen: s.clone() }));
    r.bolt("pairs", |_: NoConfig| Ok(Pairs { held: None }));
    r
}

fn stream(name: &str, direct: bool) -> StreamDecl {
    StreamDecl { name: name.into(), fields: Fields::new(["n"]), direct, passthrough: false }
}

fn counter(count: i64, direct: bool) -> ComponentDef {
    let mut config = toml::Table::new();
    config.insert("count".into(), toml::Value::Integer(count));
    config.insert("direct".into(), toml::Value::Boolean(direct));
    ComponentDef {
        id: "counter".into(),
        kind: "counter".into(),
        parallelism: 1,
        config,
        tick_secs: None,
        window: None,
        stateful: false,
        inputs: vec![],
        streams: vec![stream("default", false), stream("to-last", true)],
    }
}

fn bolt(
    id: &str,
    kind: &str,
    parallelism: usize,
    from: &str,
    stream_name: &str,
    grouping: GroupingDef,
) -> ComponentDef {
    ComponentDef {
        id: id.into(),
        kind: kind.into(),
        parallelism,
        config: toml::Table::new(),
        tick_secs: None,
        window: None,
        stateful: false,
        inputs: vec![InputDef { from: from.into(), stream: stream_name.into(), grouping }],
        streams: vec![stream("default", false)],
    }
}

fn topology(spout: ComponentDef, bolts: Vec<ComponentDef>) -> TopologyDef {
    TopologyDef {
        name: "routing".into(),
        workers: 1,
        settings: Settings::default(),
        spouts: vec![spout],
        bolts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_tuples_arrive_at_the_requested_frequency() {
    // Once with an idle bolt, once with one kept busy by a spout that never runs dry.
    for count in [-1, 100_000_000] {
        let seen = Arc::new(Seen::default());
        let mut sink = bolt("sink", "sink", 1, "counter", "default", GroupingDef::Shuffle);
        sink.tick_secs = Some(1);
        let def = topology(counter(count, false), vec![sink]);
        let opts = LocalOptions {
            duration: Some(Duration::from_millis(3500)),
            progress: false,
            ..Default::default()
        };
        local::run(&def, &registry(&seen), &opts).await.unwrap();
        let ticks = seen.ticks.load(SeqCst);
        // Ticks at about 1 s, 2 s, 3 s; a loaded machine may delay one, never add any.
        assert!((1..=4).contains(&ticks), "{ticks} ticks in 3.5 s at one per second (count {count})");
        if count > 0 {
            assert!(!seen.received.lock().unwrap().is_empty(), "the busy run processed tuples");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_direct_reaches_only_the_named_task() {
    let seen = Arc::new(Seen::default());
    let def = topology(
        counter(200, true),
        vec![bolt("sink", "sink", 3, "counter", "to-last", GroupingDef::Direct)],
    );
    local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    let received = seen.received.lock().unwrap();
    assert_eq!(received.len(), 200);
    let last = received.iter().map(|(t, _)| *t).max().unwrap();
    assert!(received.iter().all(|(t, _)| *t == last), "every tuple went to the named (last) task");
    assert_eq!(seen.acked.load(SeqCst), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_grouping_delivers_to_every_task_and_each_delivery_is_an_edge() {
    let seen = Arc::new(Seen::default());
    let def =
        topology(counter(100, false), vec![bolt("sink", "sink", 3, "counter", "default", GroupingDef::All)]);
    local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    let received = seen.received.lock().unwrap();
    assert_eq!(received.len(), 300, "each of 3 tasks got all 100");
    // Every tree completed only once all three copies were acked, and none failed.
    assert_eq!(seen.acked.load(SeqCst), 100);
    assert_eq!(seen.failed.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuple_anchored_to_two_inputs_completes_both_trees() {
    let seen = Arc::new(Seen::default());
    let def = topology(
        counter(100, false),
        vec![
            bolt("pairs", "pairs", 1, "counter", "default", GroupingDef::Global),
            bolt("sink", "sink", 2, "pairs", "default", GroupingDef::Shuffle),
        ],
    );
    local::run(&def, &registry(&seen), &LocalOptions::default()).await.unwrap();
    let received = seen.received.lock().unwrap();
    assert_eq!(received.len(), 50);
    let total: i64 = received.iter().map(|(_, n)| n).sum();
    assert_eq!(total, (0..100).sum::<i64>());
    assert_eq!(seen.acked.load(SeqCst), 100);
    assert_eq!(seen.failed.load(SeqCst), 0);
}
