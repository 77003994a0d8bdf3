//! Windowed bolts run in process: bounded runs end by themselves with every window fired and
//! every spout message acked; the four length/slide mixes fire the windows the core pins;
//! out-of-order events within the lag count exactly; late events reach the late stream only;
//! a slow upstream task is not late; an idle one stops holding the watermark; a failed window
//! output replays its inputs; processing-time windows count everything.
//!
//! Deadlines are generous and nothing measures time: these run on a loaded 2-core machine.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_api::{
    async_trait, values, Bolt, BoltCollector, BoxError, MessageId, NoConfig, OutputDeclarer, Registry, Spout,
    SpoutCollector, TopologyContext, Tuple, TupleWindow, Value, Values, WindowAggregate, WindowCollector,
    WindowedBolt,
};
use squall_engine::local::{self, LocalOptions, RunResult};
use squall_engine::topology::{ComponentDef, GroupingDef, InputDef, Settings, TopologyDef};
use squall_engine::window::{Insert, Size, WindowSpec, Windower};

/// How long a run may take before a test gives up: generous, never a measurement.
const DEADLINE: Duration = Duration::from_secs(60);

/// One event a spout task emits: `pause` first, then (id, ts, key).
#[derive(Debug, Clone)]
struct Event {
    id: i64,
    ts: i64,
    key: &'static str,
    pause: Duration,
}

fn ev(id: i64, ts: i64) -> Event {
    Event { id, ts, key: if id % 2 == 0 { "even" } else { "odd" }, pause: Duration::ZERO }
}

/// `n` events, ids and timestamps `i` and `i * step`.
fn events(n: i64, step: i64) -> Vec<Event> {
    (0..n).map(|i| ev(i, i * step)).collect()
}

fn paced(mut events: Vec<Event>, pause: Duration) -> Vec<Event> {
    for e in &mut events {
        e.pause = pause;
    }
    events
}

/// When a spout says it is finished.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Finish {
    /// Once it emitted everything (its trees may be in flight).
    Emitted,
    /// Once every message was acked (it replays failures until then).
    Acked,
    /// Never: the stream is unbounded.
    Never,
}

#[derive(Default)]
struct Seen {
    acked: AtomicU64,
    failed: AtomicU64,
    /// Set when the spouts are told to stop.
    stopping: AtomicBool,
    /// (stream, values, arrived after stopping) of every tuple a sink kept.
    received: Mutex<Vec<(String, Vec<Value>, bool)>>,
    /// Window outputs the flaky sink failed once, by content.
    failed_once: Mutex<HashSet<String>>,
    /// Outputs the flaky sink got.
    flaky_seen: AtomicU64,
}

struct Script {
    /// By spout task index.
    tasks: Vec<Vec<Event>>,
    finish: Finish,
}

struct Events {
    script: Arc<Script>,
    mine: Vec<Event>,
    next: usize,
    next_at: Option<Instant>,
    replay: Vec<i64>,
    acked: usize,
    seen: Arc<Seen>,
}

#[async_trait]
impl Spout for Events {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["id", "ts", "key"]);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.mine = self.script.tasks.get(ctx.task_index()).cloned().unwrap_or_default();
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        if let Some(id) = self.replay.pop() {
            let e = self.mine.iter().find(|e| e.id == id).expect("replays are of my events").clone();
            out.emit_with_id(values![e.id, e.ts, e.key], MessageId::from(e.id))?;
            return Ok(());
        }
        let Some(e) = self.mine.get(self.next) else { return Ok(()) };
        let now = Instant::now();
        let at = *self.next_at.get_or_insert(now + e.pause);
        if now < at {
            return Ok(());
        }
        self.next += 1;
        self.next_at = None;
        out.emit_with_id(values![e.id, e.ts, e.key], MessageId::from(e.id))?;
        Ok(())
    }

    async fn ack(&mut self, _id: MessageId) {
        self.acked += 1;
        self.seen.acked.fetch_add(1, SeqCst);
    }

    async fn fail(&mut self, id: MessageId) {
        self.seen.failed.fetch_add(1, SeqCst);
        if self.script.finish == Finish::Acked {
            self.replay.push(id_of(&id));
        }
    }

    async fn deactivate(&mut self) {
        self.seen.stopping.store(true, SeqCst);
    }

    fn is_finished(&self) -> bool {
        let emitted = self.next >= self.mine.len() && self.replay.is_empty();
        match self.script.finish {
            Finish::Emitted => emitted,
            Finish::Acked => emitted && self.acked >= self.mine.len(),
            Finish::Never => false,
        }
    }
}

fn id_of(id: &MessageId) -> i64 {
    id.as_i64().expect("message ids are event ids")
}

/// Emits, per window, (start, end, count, [ids]).
struct CountWindow;

#[async_trait]
impl WindowedBolt for CountWindow {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["start", "end", "count", "ids"]);
    }

    async fn execute(
        &mut self,
        window: &TupleWindow<'_>,
        out: &mut WindowCollector<'_>,
    ) -> Result<(), BoxError> {
        let mut ids = Vec::new();
        for t in window.tuples() {
            ids.push(t.get_i64("id")?);
        }
        ids.sort_unstable();
        let ids: Vec<Value> = ids.into_iter().map(Value::Int).collect();
        out.emit(values![window.start(), window.end(), window.tuples().len() as i64, Value::List(ids)])?;
        Ok(())
    }
}

/// Counts per key: (key, count, start, end).
struct CountKeys;

impl WindowAggregate for CountKeys {
    type Acc = i64;
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["key", "count", "start", "end"]);
    }
    fn key(&self, input: &Tuple) -> Result<Value, BoxError> {
        Ok(input.get("key")?.clone())
    }
    fn create(&self) -> i64 {
        0
    }
    fn add(&self, acc: &mut i64, _: &Tuple) -> Result<(), BoxError> {
        *acc += 1;
        Ok(())
    }
    fn merge(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn result(&self, key: &Value, acc: &i64, start_ms: i64, end_ms: i64) -> Values {
        values![key.clone(), *acc, start_ms, end_ms]
    }
}

/// Keeps every tuple it gets, with its source component's stream, and acks it.
struct Sink {
    seen: Arc<Seen>,
}

#[async_trait]
impl Bolt for Sink {
    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        let stream = format!("{}/{}", input.source_component(), input.stream());
        let stopping = self.seen.stopping.load(SeqCst);
        self.seen.received.lock().unwrap().push((stream, input.values().to_vec(), stopping));
        out.ack(input);
        Ok(())
    }
}

/// Fails one window output in ten the first time it sees it; keeps and acks the rest.
struct Flaky {
    seen: Arc<Seen>,
}

#[async_trait]
impl Bolt for Flaky {
    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        let n = self.seen.flaky_seen.fetch_add(1, SeqCst);
        let content = format!("{:?}", input.values());
        if n.is_multiple_of(10) && self.seen.failed_once.lock().unwrap().insert(content) {
            out.fail(input);
            return Ok(());
        }
        let stream = format!("{}/{}", input.source_component(), input.stream());
        self.seen.received.lock().unwrap().push((stream, input.values().to_vec(), false));
        out.ack(input);
        Ok(())
    }
}

fn registry(seen: &Arc<Seen>, script: Script) -> Registry {
    let script = Arc::new(script);
    let mut r = Registry::new();
    let s = seen.clone();
    r.spout("events", move |_: NoConfig| {
        Ok(Events {
            script: script.clone(),
            mine: Vec::new(),
            next: 0,
            next_at: None,
            replay: Vec::new(),
            acked: 0,
            seen: s.clone(),
        })
    });
    r.windowed_bolt("count-window", |_: NoConfig| Ok(CountWindow));
    r.aggregate_bolt("count-keys", |_: NoConfig| Ok(CountKeys));
    let s = seen.clone();
    r.bolt("sink", move |_: NoConfig| Ok(Sink { seen: s.clone() }));
    let s = seen.clone();
    r.bolt("flaky", move |_: NoConfig| Ok(Flaky { seen: s.clone() }));
    r
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Event time from `ts`, no lag, watermark every 10 ms.
fn event_time(length: Size, slide: Size) -> WindowSpec {
    WindowSpec {
        timestamp_field: Some("ts".into()),
        watermark_interval: ms(10),
        ..WindowSpec::sliding(length, slide)
    }
}

fn input(from: &str, stream: &str) -> InputDef {
    InputDef { from: from.into(), stream: stream.into(), grouping: GroupingDef::Shuffle }
}

/// Spout "s" (`spouts` tasks) → windowed bolts `windows` (id, kind, spec) → "sink"; the sink
/// also hears each window's late stream, if any.
fn topology(spouts: usize, windows: Vec<(&str, &str, WindowSpec)>, sink: &str) -> TopologyDef {
    let mut bolts = Vec::new();
    let mut sink = ComponentDef::new("sink", sink);
    for (id, kind, spec) in windows {
        let fields: &[&str] = if kind == "count-keys" {
            &["key", "count", "start", "end"]
        } else {
            &["start", "end", "count", "ids"]
        };
        sink.inputs.push(input(id, "default"));
        if let Some(late) = &spec.late_stream {
            sink.inputs.push(input(id, late));
        }
        bolts.push(
            ComponentDef::new(id, kind)
                .input("s", GroupingDef::Shuffle)
                .emits(squall_api::Fields::new(fields.iter().copied()))
                .window(spec),
        );
    }
    bolts.push(sink);
    TopologyDef {
        name: "windows".into(),
        workers: 1,
        settings: Settings::default(),
        spouts: vec![ComponentDef::new("s", "events").parallelism(spouts).emits(["id", "ts", "key"])],
        bolts,
    }
}

async fn run(def: &TopologyDef, seen: &Arc<Seen>, script: Script, duration: Option<Duration>) -> RunResult {
    let opts = LocalOptions { duration, progress: false, ..Default::default() };
    tokio::time::timeout(DEADLINE, local::run(def, &registry(seen, script), &opts))
        .await
        .expect("the run ends")
        .expect("the run succeeds")
}

/// (start, end) → (count, ids) of a CountWindow's outputs.
type Fired = BTreeMap<(i64, i64), (i64, Vec<i64>)>;

fn windows_of(seen: &Seen, component: &str) -> Fired {
    let mut out = Fired::new();
    for (stream, v, _) in seen.received.lock().unwrap().iter() {
        if stream != &format!("{component}/default") {
            continue;
        }
        let ids = v[3].as_list().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let prev =
            out.insert((v[0].as_i64().unwrap(), v[1].as_i64().unwrap()), (v[2].as_i64().unwrap(), ids));
        assert!(prev.is_none(), "window {:?} fired twice", (&v[0], &v[1]));
    }
    out
}

/// (start, end) → count, summed over keys, of a CountKeys's outputs.
fn aggregates_of(seen: &Seen, component: &str) -> BTreeMap<(i64, i64), i64> {
    let mut out = BTreeMap::new();
    for (stream, v, _) in seen.received.lock().unwrap().iter() {
        if stream == &format!("{component}/default") {
            *out.entry((v[2].as_i64().unwrap(), v[3].as_i64().unwrap())).or_default() +=
                v[1].as_i64().unwrap();
        }
    }
    out
}

fn counts(fired: &Fired) -> BTreeMap<(i64, i64), i64> {
    fired.iter().map(|(&k, (c, _))| (k, *c)).collect()
}

/// What the core fires for these events (inserted in this order, then finished).
fn core_windows(spec: &WindowSpec, events: &[Event]) -> BTreeMap<(i64, i64), i64> {
    let mut w = Windower::from_spec(spec);
    for e in events {
        assert_eq!(w.insert(e.ts, e.id), Insert::Accepted);
    }
    w.finish();
    let mut out = BTreeMap::new();
    while let Some(win) = w.next_window() {
        out.insert((win.start(), win.end()), win.items().len() as i64);
    }
    out
}

fn expect(pairs: &[((i64, i64), i64)]) -> BTreeMap<(i64, i64), i64> {
    pairs.iter().copied().collect()
}

fn bounded(tasks: Vec<Vec<Event>>) -> Script {
    Script { tasks, finish: Finish::Emitted }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_event_time_run_ends_by_itself_with_exact_counts_and_every_message_acked() {
    let seen = Arc::new(Seen::default());
    let spec = event_time(Size::Time(ms(1_000)), Size::Time(ms(1_000)));
    let def = topology(1, vec![("w", "count-window", spec.clone()), ("agg", "count-keys", spec)], "sink");
    let result = run(&def, &seen, bounded(vec![events(100, 100)]), None).await;
    assert!(!result.stopped, "the run ended by itself");
    let expected: BTreeMap<_, _> = (0..10).map(|k| ((k * 1_000, k * 1_000 + 1_000), 10)).collect();
    let fired = windows_of(&seen, "w");
    assert_eq!(counts(&fired), expected);
    for (&(start, end), (_, ids)) in &fired {
        assert_eq!(ids, &(start / 100..end / 100).collect::<Vec<_>>(), "window {start}..{end}");
    }
    assert_eq!(aggregates_of(&seen, "agg"), expected);
    assert_eq!((seen.acked.load(SeqCst), seen.failed.load(SeqCst)), (100, 0));
    let w = &result.snapshot.components["w"];
    assert_eq!((w.windows_fired, w.late, w.executed), (10, 0, 100));
    assert_eq!(result.snapshot.components["agg"].windows_fired, 10);
    assert_eq!(result.snapshot.components["s"].windows_fired, 0);
    let json = serde_json::to_value(&result.snapshot).unwrap();
    assert_eq!(json["components"]["w"]["windows_fired"], 10);
    assert!(json["components"]["w"]["watermark_lag_ms"].is_u64());
    assert_eq!(json["components"]["w"]["late"], 0);
}

/// Runs `spec` over `events` through a CountWindow (and a CountKeys for time windows) and
/// checks both against the core.
async fn a_mix_fires_what_the_core_fires(
    spec: WindowSpec,
    events: Vec<Event>,
    expected: &[((i64, i64), i64)],
) {
    let seen = Arc::new(Seen::default());
    let time = spec.length.is_time() && spec.slide.is_time();
    let mut windows = vec![("w", "count-window", spec.clone())];
    if time {
        windows.push(("agg", "count-keys", spec.clone()));
    }
    let n = events.len() as u64;
    let result = run(&topology_sink(1, windows), &seen, bounded(vec![events.clone()]), None).await;
    assert!(!result.stopped);
    let core = core_windows(&spec, &events);
    assert_eq!(core, expect(expected), "the core pins these windows");
    assert_eq!(counts(&windows_of(&seen, "w")), core);
    if time {
        assert_eq!(aggregates_of(&seen, "agg"), core);
    }
    assert_eq!((seen.acked.load(SeqCst), seen.failed.load(SeqCst)), (n, 0));
}

// `topology` with the sink everyone uses.
fn topology_sink(spouts: usize, windows: Vec<(&str, &str, WindowSpec)>) -> TopologyDef {
    topology(spouts, windows, "sink")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_length_time_slide_fires_every_sliding_window() {
    let spec = event_time(Size::Time(ms(1_000)), Size::Time(ms(500)));
    let expected =
        [((-500, 500), 5), ((0, 1_000), 10), ((500, 1_500), 10), ((1_000, 2_000), 10), ((1_500, 2_500), 5)];
    a_mix_fires_what_the_core_fires(spec, events(20, 100), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_length_count_slide_fires_every_slide_with_the_last_items() {
    let spec = event_time(Size::Count(4), Size::Count(2));
    let expected = [((0, 101), 2), ((0, 301), 4), ((200, 501), 4), ((400, 701), 4), ((600, 901), 4)];
    a_mix_fires_what_the_core_fires(spec, events(10, 100), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_length_count_slide_fires_every_slide_and_once_more_at_the_end() {
    let spec = event_time(Size::Time(ms(1_000)), Size::Count(3));
    let expected = [((-799, 201), 3), ((-499, 501), 6), ((-199, 801), 9), ((-99, 901), 10)];
    a_mix_fires_what_the_core_fires(spec, events(10, 100), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_length_time_slide_fires_the_last_items_at_each_multiple_of_the_slide() {
    let spec = event_time(Size::Count(3), Size::Time(ms(500)));
    let expected = [((200, 500), 3), ((700, 1_000), 3)];
    a_mix_fires_what_the_core_fires(spec, events(10, 100), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_events_within_the_lag_count_exactly() {
    let seen = Arc::new(Seen::default());
    let spec = WindowSpec { lag: ms(500), ..event_time(Size::Time(ms(1_000)), Size::Time(ms(1_000))) };
    // Blocks of five in reverse: each event up to 160 ms behind the latest, within the lag.
    let mut script = Vec::new();
    for block in events(50, 40).chunks(5) {
        script.extend(block.iter().rev().map(|e| Event { pause: ms(2), ..e.clone() }));
    }
    let def = topology_sink(1, vec![("w", "count-window", spec.clone()), ("agg", "count-keys", spec)]);
    let result = run(&def, &seen, bounded(vec![script]), None).await;
    let expected = expect(&[((0, 1_000), 25), ((1_000, 2_000), 25)]);
    assert_eq!(counts(&windows_of(&seen, "w")), expected);
    assert_eq!(aggregates_of(&seen, "agg"), expected);
    assert_eq!(result.snapshot.components["w"].late, 0);
    assert_eq!(seen.acked.load(SeqCst), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_behind_the_watermark_reach_the_late_stream_only_and_are_acked() {
    let seen = Arc::new(Seen::default());
    let spec = WindowSpec {
        late_stream: Some("late".into()),
        ..event_time(Size::Time(ms(1_000)), Size::Time(ms(1_000)))
    };
    // 0..1900 in order, then, long after the watermark reached 1900, three from the first window.
    let mut script = events(20, 100);
    script.push(Event { pause: ms(1_000), ..ev(100, 50) });
    script.extend([ev(101, 150), ev(102, 250)]);
    let def = topology_sink(1, vec![("w", "count-window", spec.clone()), ("agg", "count-keys", spec)]);
    let result = run(&def, &seen, bounded(vec![script]), None).await;
    let fired = windows_of(&seen, "w");
    assert_eq!(counts(&fired), expect(&[((0, 1_000), 10), ((1_000, 2_000), 10)]));
    assert!(fired.values().all(|(_, ids)| ids.iter().all(|&id| id < 100)), "late events are in no window");
    assert_eq!(aggregates_of(&seen, "agg"), expect(&[((0, 1_000), 10), ((1_000, 2_000), 10)]));
    for component in ["w", "agg"] {
        let late: BTreeSet<i64> = seen
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| s == &format!("{component}/late"))
            .map(|(_, v, _)| v[0].as_i64().unwrap())
            .collect();
        assert_eq!(late, BTreeSet::from([100, 101, 102]), "{component}'s late stream");
        assert_eq!(result.snapshot.components[component].late, 3);
    }
    assert_eq!((seen.acked.load(SeqCst), seen.failed.load(SeqCst)), (23, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_tasks_on_time_events_are_not_late() {
    let seen = Arc::new(Seen::default());
    let spec = event_time(Size::Time(ms(1_000)), Size::Time(ms(1_000)));
    // Task 0 races through 0..1900; task 1 sends the same times slowly.
    let script = bounded(vec![events(20, 100), paced(events(20, 100), ms(20))]);
    let def = topology_sink(2, vec![("w", "count-window", spec.clone()), ("agg", "count-keys", spec)]);
    let result = run(&def, &seen, script, None).await;
    let expected = expect(&[((0, 1_000), 20), ((1_000, 2_000), 20)]);
    assert_eq!(counts(&windows_of(&seen, "w")), expected);
    assert_eq!(aggregates_of(&seen, "agg"), expected);
    assert_eq!(result.snapshot.components["w"].late, 0);
    assert_eq!(seen.acked.load(SeqCst), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upstream_task_stops_holding_the_watermark_after_the_idle_timeout() {
    let seen = Arc::new(Seen::default());
    let spec = WindowSpec {
        idle_timeout: Some(ms(300)),
        ..event_time(Size::Time(ms(1_000)), Size::Time(ms(1_000)))
    };
    // Task 0 sends 0..2900 then nothing; task 1 never sends: neither ends.
    let script = Script { tasks: vec![events(30, 100), vec![]], finish: Finish::Never };
    let def = topology_sink(2, vec![("w", "count-window", spec)]);
    let result = run(&def, &seen, script, Some(Duration::from_secs(4))).await;
    assert!(result.stopped);
    let received = seen.received.lock().unwrap().clone();
    let before_stop: BTreeSet<i64> = received
        .iter()
        .filter(|(_, _, stopping)| !stopping)
        .map(|(_, v, _)| v[0].as_i64().unwrap())
        .collect();
    assert_eq!(
        before_stop,
        BTreeSet::from([0, 1_000]),
        "the windows the idle task held fired before the stop"
    );
    let fired = windows_of(&seen, "w");
    assert_eq!(counts(&fired), expect(&[((0, 1_000), 10), ((1_000, 2_000), 10), ((2_000, 3_000), 10)]));
    assert_eq!(seen.acked.load(SeqCst), 30, "the stop fired the last window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_window_output_replays_its_inputs_until_every_input_is_in_a_delivered_result() {
    // Processing time: an input replayed after its window fired lands in a later window (in
    // event time it would be behind the watermark: late).
    let seen = Arc::new(Seen::default());
    let spec = WindowSpec { watermark_interval: ms(20), ..WindowSpec::tumbling(Size::Time(ms(50))) };
    let script = Script { tasks: vec![paced(events(300, 1), ms(2))], finish: Finish::Acked };
    let def = topology(1, vec![("w", "count-window", spec)], "flaky");
    let result = run(&def, &seen, script, None).await;
    assert!(!result.stopped);
    assert!(seen.failed.load(SeqCst) > 0, "some window output was failed");
    assert_eq!(seen.acked.load(SeqCst), 300, "every message acked in the end, once");
    let mut delivered = BTreeSet::new();
    for (_, v, _) in seen.received.lock().unwrap().iter() {
        delivered.extend(v[3].as_list().unwrap().iter().map(|v| v.as_i64().unwrap()));
    }
    assert_eq!(delivered, (0..300).collect(), "every input is in a result delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_time_window_over_a_bounded_spout_counts_every_tuple() {
    let seen = Arc::new(Seen::default());
    let spec = WindowSpec { watermark_interval: ms(20), ..WindowSpec::tumbling(Size::Time(ms(100))) };
    let def = topology_sink(1, vec![("w", "count-window", spec.clone()), ("agg", "count-keys", spec)]);
    let result = run(&def, &seen, bounded(vec![paced(events(100, 1), ms(1))]), None).await;
    assert!(!result.stopped);
    let fired = windows_of(&seen, "w");
    assert_eq!(fired.values().map(|(c, _)| c).sum::<i64>(), 100);
    let ids: BTreeSet<i64> = fired.values().flat_map(|(_, ids)| ids.iter().copied()).collect();
    assert_eq!(ids, (0..100).collect());
    assert_eq!(aggregates_of(&seen, "agg").values().sum::<i64>(), 100);
    assert_eq!(seen.acked.load(SeqCst), 100);
    assert_eq!(result.snapshot.components["w"].windows_fired, fired.len() as u64);
}
