//! Taps (`squall tap`) on a local run: a tap on one stream sees only that stream's tuples,
//! with the stream's field names; a tap on every stream sees each; an unknown stream or
//! component is refused naming it; a busy component gives a bounded sample; a closed tap
//! disarms its component.

use std::time::{Duration, Instant};

use squall_api::{
    async_trait, values, Bolt, BoltCollector, BoxError, Fields, NoConfig, OutputDeclarer, Registry, Spout,
    SpoutCollector, StreamDecl, Tuple,
};
use squall_engine::executor::Control;
use squall_engine::local::{self, LocalOptions, Started};
use squall_engine::tap::{stream_bit, TapError, TapSession, TapTuple, SAMPLES_PER_TICK, TICK};
use squall_engine::topology::{ComponentDef, GroupingDef, InputDef, Settings, TopologyDef};
use tokio::sync::oneshot;

/// Emits 0, 1, 2, … without end: even numbers on "evens", odd ones on "odds".
struct Parity {
    next: i64,
}

#[async_trait]
impl Spout for Parity {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare_stream("evens", ["even"]);
        out.declare_stream("odds", ["odd"]);
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        let n = self.next;
        self.next += 1;
        let stream = if n % 2 == 0 { "evens" } else { "odds" };
        out.emit_to(stream, values![n], None, None)?;
        Ok(())
    }
}

struct Sink;

#[async_trait]
impl Bolt for Sink {
    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        out.ack(input);
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.spout("parity", |_: NoConfig| Ok(Parity { next: 0 }));
    r.bolt("sink", |_: NoConfig| Ok(Sink));
    r
}

fn stream(name: &str, field: &str) -> StreamDecl {
    StreamDecl { name: name.into(), fields: Fields::new([field]), direct: false, passthrough: false }
}

fn topology() -> TopologyDef {
    let input = |stream: &str| InputDef {
        from: "numbers".into(),
        stream: stream.into(),
        grouping: GroupingDef::Shuffle,
    };
    TopologyDef {
        name: "tapped".into(),
        workers: 1,
        settings: Settings { acking: false, ..Settings::default() },
        spouts: vec![ComponentDef {
            id: "numbers".into(),
            kind: "parity".into(),
            parallelism: 2,
            config: toml::Table::new(),
            tick_secs: None,
            window: None,
            stateful: false,
            inputs: vec![],
            streams: vec![stream("evens", "even"), stream("odds", "odd")],
        }],
        bolts: vec![ComponentDef {
            id: "sink".into(),
            kind: "sink".into(),
            parallelism: 1,
            config: toml::Table::new(),
            tick_secs: None,
            window: None,
            stateful: false,
            inputs: vec![input("evens"), input("odds")],
            streams: vec![],
        }],
    }
}

/// Takes `n` tuples from `session`, within a generous deadline.
async fn take(session: &mut TapSession, n: usize) -> Vec<TapTuple> {
    let mut out = Vec::new();
    let deadline = Duration::from_secs(60);
    while out.len() < n {
        match tokio::time::timeout(deadline, session.recv()).await {
            Ok(Some(Ok(t))) => out.push(t),
            Ok(Some(Err(e))) => panic!("the tap was refused: {e}"),
            Ok(None) => panic!("the tap ended after {} tuples", out.len()),
            Err(_) => panic!("no tapped tuple in {deadline:?} ({} so far)", out.len()),
        }
    }
    out
}

/// Runs the topology and hands what started to `check`; stops the run once it returns.
async fn with_run<F, Fut>(check: F)
where
    F: FnOnce(Started) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (done_tx, done_rx) = oneshot::channel();
    let on_start = move |started: Started| {
        let control = started.control.clone();
        tokio::spawn(async move {
            let checked = tokio::spawn(check(started)).await;
            let _ = control.send(Control::Stop);
            let _ = done_tx.send(checked);
        });
    };
    let opts = LocalOptions { duration: Some(Duration::from_secs(300)), ..Default::default() };
    local::run_observed(&topology(), &registry(), &opts, on_start).await.unwrap();
    if let Err(panic) = done_rx.await.expect("the check ran") {
        std::panic::resume_unwind(panic.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_on_one_stream_sees_only_that_streams_tuples_with_its_field_names() {
    with_run(|started| async move {
        let mut odds = started.taps.open("numbers", Some("odds")).unwrap();
        let tuples = take(&mut odds, 200).await;
        for t in &tuples {
            assert_eq!((t.component.as_str(), t.stream.as_str()), ("numbers", "odds"), "{t:?}");
            assert_eq!(t.fields, vec!["odd".to_string()]);
            let n = t.values[0].as_i64().expect("an int");
            assert_eq!(n % 2, 1, "an even number on the odds tap: {t:?}");
        }
        let tasks: std::collections::BTreeSet<_> = tuples.iter().map(|t| t.task).collect();
        assert!(tasks.iter().all(|&t| t <= 1), "only the spout's tasks 0 and 1: {tasks:?}");

        let mut every = started.taps.open("numbers", None).unwrap();
        let tuples = take(&mut every, 400).await;
        let evens = tuples.iter().filter(|t| t.stream == "evens").count();
        assert!(
            evens > 0 && evens < tuples.len(),
            "a tap on every stream sees both: {evens} of {}",
            tuples.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_or_component_is_refused_naming_it() {
    with_run(|started| async move {
        let stream = started.taps.open("numbers", Some("nope")).unwrap_err();
        assert_eq!(
            stream,
            TapError::NoStream {
                component: "numbers".into(),
                stream: "nope".into(),
                emits: "evens, odds".into()
            }
        );
        assert_eq!(stream.to_string(), "component `numbers` emits no stream `nope` (it emits: evens, odds)");
        let component = started.taps.open("nobody", None).unwrap_err();
        assert_eq!(component.to_string(), "the topology has no component `nobody`");
        let sink = started.taps.open("sink", None).unwrap_err();
        assert_eq!(sink.to_string(), "component `sink` emits no tuples: there is nothing to tap");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_component_gives_a_bounded_sample_and_a_closed_tap_disarms_it() {
    with_run(|started| async move {
        let point = started.taps.point(0);
        assert!(!point.wants(stream_bit(0)) && !point.wants(stream_bit(1)), "nobody taps yet");
        let mut every = started.taps.open("numbers", None).unwrap();
        assert!(point.wants(stream_bit(0)) && point.wants(stream_bit(1)));
        // The spout emits as fast as it can; over a number of ticks the tap gives at most
        // SAMPLES_PER_TICK per tick (plus one tick of slack for the first and last).
        take(&mut every, 1).await;
        let started_at = Instant::now();
        tokio::time::sleep(TICK * 20).await;
        let got = every.drain().len() as u128;
        let ticks = started_at.elapsed().as_millis() / TICK.as_millis() + 2;
        assert!(got <= ticks * SAMPLES_PER_TICK as u128, "{got} tuples in {ticks} ticks");
        drop(every);
        let deadline = Instant::now() + Duration::from_secs(60);
        while point.wants(stream_bit(0)) {
            assert!(Instant::now() < deadline, "the closed tap still arms its component");
            tokio::time::sleep(TICK).await;
        }
        assert!(!point.wants(stream_bit(1)));
    })
    .await;
}

#[test]
fn a_tap_line_names_each_value_by_its_field_in_order() {
    let tuple = TapTuple {
        component: "count".into(),
        task: 3,
        stream: "default".into(),
        timestamp: 1_700_000_000_000,
        fields: vec!["word".into(), "count".into()],
        values: values!["the", 12],
    };
    let line = serde_json::to_string(&squall_engine::tap::TapLine(&tuple)).unwrap();
    assert_eq!(
        line,
        r#"{"component":"count","task":3,"stream":"default","timestamp":1700000000000,"tuple":{"word":"the","count":12}}"#
    );
}
