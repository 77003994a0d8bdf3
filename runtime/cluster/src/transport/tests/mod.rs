//! The transport between two workers in one process: delivery, credits, refusals,
//! reconnection, the hold, batches in parts and closing; the codec, hostile peers, live
//! rebalance (rewire) and a whole topology in their own files.

mod codec;
mod hostile;
mod rewire;
mod topology;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;

use smallvec::smallvec;
use squall_api::{
    async_trait, BasicBolt, BasicCollector, BoxError, MessageId, OutputDeclarer, Registry, Spout,
    SpoutCollector, Tuple, Value, Values,
};
use tokio::io::AsyncWriteExt;

use super::credits::{kind, Kind};
use super::frames::{decode, put_frame, put_parts, read_frame, write_frame, Frame, Hello};
use super::*;
use serde::Deserialize;
use squall_engine::acker::{make_root, AckerMsg, Outcome};
use squall_engine::executor::output::Anchors;
use squall_engine::executor::Envelope;
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long any condition may take before a test gives up: generous, never a measurement.
const DEADLINE: Duration = Duration::from_secs(30);
const VERSION: u64 = 7;

/// The secret of the workers of these tests.
fn secret() -> Secret {
    Secret::new("transport-test-secret")
}

/// A connection to `addr` that has passed the handshake with the workers' secret.
async fn authenticated(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    within(
        "the handshake",
        squall_engine::auth::connect(&mut stream, &secret(), squall_engine::auth::WORKER),
    )
    .await
    .unwrap();
    stream
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Spout `s` (2 tasks) → bolt `a` (2) → bolt `b` (`b` tasks), 2 ackers.
fn def(b: usize) -> TopologyDef {
    TopologyDef {
        name: "t".into(),
        workers: 2,
        settings: Settings { ackers: 2, ..Settings::default() },
        spouts: vec![ComponentDef::new("s", "spout").parallelism(2).emits(["f"])],
        bolts: vec![
            ComponentDef::new("a", "bolt").parallelism(2).input("s", GroupingDef::Shuffle).emits(["f"]),
            ComponentDef::new("b", "bolt").parallelism(b).input("a", GroupingDef::Shuffle).emits(["f"]),
        ],
    }
}

/// Spout `s` (tasks 0, 1) → bolt `a` (2, 3) → bolt `b` (4, 5), ackers 6 and 7; worker 0
/// hosts the even tasks, worker 1 the odd ones.
fn plan() -> Plan {
    let mut plan = Plan::new(&def(2)).unwrap();
    plan.task_worker = (0..plan.task_count()).map(|t| t % 2).collect();
    assert_eq!(plan.acker_tasks, vec![6, 7]);
    plan
}

/// The receiving ends of a worker's inboxes, by task id.
struct Inboxes {
    bolts: Vec<Option<mpsc::Receiver<Vec<Envelope>>>>,
    ackers: Vec<Option<mpsc::Receiver<Vec<AckerMsg>>>>,
    spouts: Vec<Option<mpsc::UnboundedReceiver<Vec<Outcome>>>>,
}

/// Inboxes for the tasks of `worker`, made as the local runner makes them.
fn inboxes(plan: &Plan, worker: usize) -> (Links, Inboxes) {
    let n = plan.task_count();
    let mut links = Links {
        bolts: vec![None; n],
        ackers: vec![None; n],
        spouts: vec![None; n],
        taps: None,
        rewire: None,
    };
    let mut rx = Inboxes {
        bolts: (0..n).map(|_| None).collect(),
        ackers: (0..n).map(|_| None).collect(),
        spouts: (0..n).map(|_| None).collect(),
    };
    for t in (0..n).filter(|&t| plan.task_worker[t] == worker) {
        add_inbox(plan, t, &mut links, &mut rx);
    }
    (links, rx)
}

/// A new inbox for task `t` of `plan` (nothing for a hole), its sender in `links`.
fn add_inbox(plan: &Plan, t: usize, links: &mut Links, rx: &mut Inboxes) {
    match kind(plan, t) {
        Some(Kind::Acker) => {
            let (tx, r) = mpsc::channel(INBOX_BATCHES);
            (links.ackers[t], rx.ackers[t]) = (Some(tx), Some(r));
        }
        Some(Kind::Spout) => {
            let (tx, r) = mpsc::unbounded_channel();
            (links.spouts[t], rx.spouts[t]) = (Some(tx), Some(r));
        }
        Some(Kind::Bolt) => {
            let (tx, r) = mpsc::channel(INBOX_BATCHES);
            (links.bolts[t], rx.bolts[t]) = (Some(tx), Some(r));
        }
        None => {}
    }
}

struct Worker {
    transport: Transport,
    links: Links,
    rx: Inboxes,
}

impl Worker {
    async fn bind(me: usize, peers: Peers) -> Transport {
        Transport::bind(any_port(), &secret(), "t", VERSION, me, peers).await.unwrap()
    }

    fn attach(plan: &Plan, me: usize, mut transport: Transport) -> Worker {
        let (mut links, rx) = inboxes(plan, me);
        transport.attach(plan, &mut links);
        Worker { transport, links, rx }
    }

    fn bolt(&self, task: usize) -> mpsc::Sender<Vec<Envelope>> {
        self.links.bolts[task].clone().unwrap()
    }
}

type PeersTx = watch::Sender<Vec<Option<SocketAddr>>>;

/// Two attached workers that know where the other listens.
async fn pair(plan: &Plan) -> (Worker, Worker, PeersTx) {
    let (peers, peers_rx) = watch::channel(vec![None, None]);
    let t0 = Worker::bind(0, peers_rx.clone()).await;
    let t1 = Worker::bind(1, peers_rx).await;
    peers.send_replace(vec![Some(t0.local_addr()), Some(t1.local_addr())]);
    (Worker::attach(plan, 0, t0), Worker::attach(plan, 1, t1), peers)
}

fn batch(first: i64, len: i64) -> Vec<Envelope> {
    (first..first + len)
        .map(|n| Envelope {
            stream: 0,
            source_task: 0,
            values: smallvec![Value::Int(n)],
            anchors: Anchors::new(),
        })
        .collect()
}

fn numbers(batch: &[Envelope]) -> Vec<i64> {
    batch.iter().map(|e| e.values[0].as_i64().unwrap()).collect()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Receives `count` batches of `len` tuples numbered on from `first`, in order.
async fn expect_bolt_batches(rx: &mut mpsc::Receiver<Vec<Envelope>>, first: i64, len: i64, count: i64) {
    for i in 0..count {
        let got = within("a bolt batch", rx.recv()).await.expect("inbox open");
        let from = first + i * len;
        assert_eq!(numbers(&got), (from..from + len).collect::<Vec<_>>(), "batch {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_reach_remote_bolts_ackers_and_spouts_in_order() {
    let plan = plan();
    let (mut w0, mut w1, _peers) = pair(&plan).await;
    let (to_bolt, to_acker) = (w0.bolt(3), w0.links.ackers[7].clone().unwrap());
    let to_spout = w0.links.spouts[1].clone().unwrap();
    let back = w1.bolt(2);
    let sender = tokio::spawn(async move {
        for i in 0..200 {
            to_bolt.send(batch(i * 3, 3)).await.unwrap();
            to_acker.send(vec![AckerMsg::Ack { root: i as u64, val: 1, lane: 4 }]).await.unwrap();
            to_spout
                .send(vec![if i % 2 == 0 { Outcome::acked(i as u64) } else { Outcome::failed(i as u64, 2) }])
                .unwrap();
            back.send(batch(-i, 1)).await.unwrap();
        }
    });
    // Every inbox is read as it fills: one left unread would hold the sender back.
    for i in 0..200u64 {
        let got = within("a bolt batch", w1.rx.bolts[3].as_mut().unwrap().recv()).await.unwrap();
        assert_eq!(numbers(&got), (3 * i as i64..3 * i as i64 + 3).collect::<Vec<_>>());
        let acks = within("an acker batch", w1.rx.ackers[7].as_mut().unwrap().recv()).await.unwrap();
        assert_eq!(acks, vec![AckerMsg::Ack { root: i, val: 1, lane: 4 }]);
        let outcomes = within("outcomes", w1.rx.spouts[1].as_mut().unwrap().recv()).await.unwrap();
        assert_eq!(outcomes, vec![if i % 2 == 0 { Outcome::acked(i) } else { Outcome::failed(i, 2) }]);
        let back = within("a batch back", w0.rx.bolts[2].as_mut().unwrap().recv()).await.unwrap();
        assert_eq!(numbers(&back), vec![-(i as i64)]);
    }
    sender.await.unwrap();
    // Nothing went to a task it was not meant for.
    assert!(w1.rx.bolts[5].as_mut().unwrap().try_recv().is_err());
    assert!(w1.rx.ackers[7].as_mut().unwrap().try_recv().is_err());
    let (s0, s1) = (w0.transport.stats(), w1.transport.stats());
    assert_eq!((s0.batches_sent, s1.batches_received), (600, 600), "{s0:?} {s1:?}");
    assert_eq!((s1.batches_sent, s0.batches_received), (200, 200), "{s0:?} {s1:?}");
    assert_eq!((s0.connects, s1.connects, s0.batches_dropped, s1.refused), (1, 1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_end_of_stream_marker_crosses_workers_unchanged_after_the_tuples_before_it() {
    use squall_engine::executor::end_of_stream::{marker, END_OF_STREAM};
    let plan = plan();
    let (w0, mut w1, _peers) = pair(&plan).await;
    // Spout task 0 (worker 0) to bolt task 3 (worker 1): tuples, then its marker, in one batch
    // and alone.
    let mut first = batch(0, 3);
    first.push(marker(0));
    w0.bolt(3).send(first).await.unwrap();
    w0.bolt(3).send(vec![marker(2)]).await.unwrap();
    let inbox = w1.rx.bolts[3].as_mut().unwrap();
    let got = within("the batch with the marker", inbox.recv()).await.unwrap();
    assert_eq!(numbers(&got[..3]), vec![0, 1, 2]);
    let m = &got[3];
    assert_eq!((m.stream, m.source_task, m.values.len(), m.anchors.len()), (END_OF_STREAM, 0, 0, 0));
    let got = within("the marker alone", inbox.recv()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].stream, got[0].source_task, got[0].values.len()), (END_OF_STREAM, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_task_does_not_block_others_on_the_connection() {
    let plan = plan();
    let (w0, mut w1, _peers) = pair(&plan).await;
    // Nobody reads task 3's inbox on worker 1.
    let to_slow = w0.bolt(3);
    let sent = Arc::new(AtomicUsize::new(0));
    let (tx, counter) = (to_slow.clone(), sent.clone());
    let sender = tokio::spawn(async move {
        for i in 0..1000 {
            tx.send(batch(i, 1)).await.unwrap();
            counter.fetch_add(1, Relaxed);
        }
    });
    // The slow task's inbox fills, then the credits run out, then the forwarder's queue.
    let slow_inbox = w1.rx.bolts[3].take().unwrap();
    wait_until("the sender to be held back", || slow_inbox.len() == INBOX_BATCHES && to_slow.capacity() == 0)
        .await;
    // Meanwhile another task of the same worker, and an acker, get all their batches.
    let (to_fast, to_acker) = (w0.bolt(5), w0.links.ackers[7].clone().unwrap());
    let fast = tokio::spawn(async move {
        for i in 0..100 {
            to_fast.send(batch(i * 2, 2)).await.unwrap();
            to_acker.send(vec![AckerMsg::Fail { root: i as u64, by: 3 }]).await.unwrap();
        }
    });
    for i in 0..100 {
        expect_bolt_batches(w1.rx.bolts[5].as_mut().unwrap(), 2 * i as i64, 2, 1).await;
        let got = within("acker batch", w1.rx.ackers[7].as_mut().unwrap().recv()).await.unwrap();
        assert_eq!(got, vec![AckerMsg::Fail { root: i, by: 3 }]);
    }
    within("the fast sender", fast).await.unwrap();
    // The slow path holds at most: its inbox, its credits, the forwarder's queue, and the
    // one batch each of the forwarder and the sender have in hand.
    let held = sent.load(Relaxed);
    let bound = 3 * INBOX_BATCHES + 2;
    assert!(held <= bound, "{held} batches left the sender; at most {bound} should");
    assert!(!sender.is_finished());
    // Once the slow task reads, everything arrives, in order.
    let mut slow_inbox = slow_inbox;
    expect_bolt_batches(&mut slow_inbox, 0, 1, 1000).await;
    within("the slow sender", sender).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_peer_gets_batches_again_after_reconnecting() {
    let plan = plan();
    let (w0, mut w1, peers) = pair(&plan).await;
    let to_bolt = w0.bolt(3);
    to_bolt.send(batch(0, 1)).await.unwrap();
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 0, 1, 1).await;
    let old = w1.transport.local_addr();
    drop(w1);
    // The peer comes back on another port (the old one is still taken by a placeholder).
    let placeholder = TcpListener::bind(any_port()).await.unwrap();
    let t1 = Worker::bind(1, peers.subscribe()).await;
    assert_ne!(t1.local_addr(), old);
    peers.send_replace(vec![Some(w0.transport.local_addr()), Some(t1.local_addr())]);
    let mut w1 = Worker::attach(&plan, 1, t1);
    // Batches written to the dead connection may be lost; keep sending until some arrive.
    let sender = tokio::spawn(async move {
        for i in 1.. {
            if to_bolt.send(batch(i, 1)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let got = within("a batch after the restart", w1.rx.bolts[3].as_mut().unwrap().recv()).await.unwrap();
    assert!(numbers(&got)[0] >= 1);
    // And in order from then on.
    let next = within("the next batch", w1.rx.bolts[3].as_mut().unwrap().recv()).await.unwrap();
    assert_eq!(numbers(&next)[0], numbers(&got)[0] + 1);
    sender.abort();
    assert!(w0.transport.stats().connects >= 2, "{:?}", w0.transport.stats());
    drop(placeholder);
}

/// A raw connection that says hello as `worker` of `version`; returns what the transport
/// answered (its hello or its refusal).
async fn raw_hello(
    addr: SocketAddr,
    version: u64,
    worker: u32,
) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf, Frame<'static>) {
    let stream = authenticated(addr).await;
    let (rd, mut wr) = stream.into_split();
    let hello = Hello { protocol: PROTOCOL, topology: "t".into(), version, worker, credits: 0 };
    write_frame(&mut wr, &Frame::Hello(hello)).await.unwrap();
    let mut rd = BufReader::new(rd);
    let mut body = Vec::new();
    assert!(within("an answer", read_frame(&mut rd, &mut body)).await.unwrap());
    (rd, wr, decode(&body).unwrap())
}

/// Waits for the transport to close the connection (an end of stream or a reset).
async fn expect_closed(rd: &mut (impl AsyncRead + Unpin)) {
    let mut sink = Vec::new();
    let _ = within("the connection to close", rd.read_to_end(&mut sink)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hello_for_another_version_is_refused() {
    let plan = plan();
    let (peers, peers_rx) = watch::channel(vec![None, None]);
    let w1 = Worker::attach(&plan, 1, Worker::bind(1, peers_rx).await);
    let addr = w1.transport.local_addr();

    let (_, _, answer) = raw_hello(addr, VERSION, 0).await;
    match answer {
        Frame::Hello(h) => {
            assert_eq!((h.worker, h.version, h.credits), (1, VERSION, INBOX_BATCHES as u32))
        }
        other => panic!("expected a hello, got {other:?}"),
    }
    let (mut rd, _wr, answer) = raw_hello(addr, VERSION + 1, 0).await;
    match answer {
        Frame::Refused(why) => assert!(why.contains("version 8"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    expect_closed(&mut rd).await;
    wait_until("the refusal to count", || w1.transport.stats().refused == 1).await;

    // A worker of the old assignment never gets a connection to it.
    peers.send_replace(vec![None, Some(addr)]);
    let (old_peers, old_peers_rx) = watch::channel(vec![None, Some(addr)]);
    let old = Transport::bind(any_port(), &secret(), "t", VERSION + 1, 0, old_peers_rx).await.unwrap();
    let old = Worker::attach(&plan, 0, old);
    old.bolt(3).send(batch(0, 1)).await.unwrap();
    wait_until("refused reconnects", || w1.transport.stats().refused >= 3).await;
    assert_eq!(old.transport.stats().connects, 0);
    assert_eq!(w1.transport.stats().batches_received, 0);
    drop(old_peers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_bytes_do_not_panic_or_disturb_other_connections() {
    let plan = plan();
    let (w0, mut w1, _peers) = pair(&plan).await;
    let to_bolt = w0.bolt(3);
    to_bolt.send(batch(0, 1)).await.unwrap();
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 0, 1, 1).await;
    let addr = w1.transport.local_addr();

    // Not our protocol at all: the length prefix reads as ~1.2 GB, over the limit.
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    expect_closed(&mut http).await;
    // A frame whose body is not MessagePack.
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await.unwrap();
    expect_closed(&mut junk).await;
    // A good hello, then a frame that is not a batch, then one for a task not hosted here.
    let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
    write_frame(&mut wr, &Frame::Credits(Cow::Owned(vec![(3, 1)]))).await.unwrap();
    expect_closed(&mut rd).await;
    // A batch frame whose body ends inside its first tuple.
    let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
    wr.write_all(&[0, 0, 0, 8, 0x81, 0xa1, b'B', 0x93, 0x03, 0xc2, 0x91, 0x94]).await.unwrap();
    expect_closed(&mut rd).await;
    let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
    let frame = Frame::Bolts { task: 2, more: false, batch: Cow::Owned(batch(0, 1)) };
    write_frame(&mut wr, &frame).await.unwrap();
    expect_closed(&mut rd).await;
    // A peer that sends past its credits to a task that does not read.
    let stuck = w1.rx.bolts[5].take().unwrap();
    let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
    let mut buf = Vec::new();
    for i in 0..3 * INBOX_BATCHES as i64 {
        let frame = Frame::Bolts { task: 5, more: false, batch: Cow::Owned(batch(i, 1)) };
        put_frame(&mut buf, &frame, MAX_FRAME).unwrap();
    }
    let _ = wr.write_all(&buf).await;
    let mut credits = 0;
    let mut body = Vec::new();
    while let Ok(true) = within("credits or a close", read_frame(&mut rd, &mut body)).await {
        if let Ok(Frame::Credits(list)) = decode(&body) {
            credits += list.iter().map(|&(_, n)| n as usize).sum::<usize>();
        }
    }
    assert!(credits <= INBOX_BATCHES, "{credits} credits for a task whose inbox holds {INBOX_BATCHES}");
    wait_until("six refusals", || w1.transport.stats().refused == 6).await;
    drop(stuck);

    // The worker's own connection went on all along.
    for i in 1..=20 {
        to_bolt.send(batch(i, 1)).await.unwrap();
    }
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 1, 1, 20).await;
    assert_eq!(w0.transport.stats().connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_for_a_peer_down_longer_than_the_hold_are_dropped_not_waited_for() {
    let plan = plan();
    // Worker 1 never comes up: its address is not known, then it is one nobody listens on.
    let (peers, peers_rx) = watch::channel(vec![None, None]);
    let opts = TransportOptions { hold: Duration::from_millis(100), ..TransportOptions::default() };
    let t0 = Transport::bind_with(any_port(), &secret(), "t", VERSION, 0, peers_rx, opts).await.unwrap();
    let w0 = Worker::attach(&plan, 0, t0);
    let gone = TcpListener::bind(any_port()).await.unwrap().local_addr().unwrap();
    peers.send_replace(vec![Some(w0.transport.local_addr()), Some(gone)]);
    let (to_bolt, to_acker, to_spout) =
        (w0.bolt(3), w0.links.ackers[7].clone().unwrap(), w0.links.spouts[1].clone().unwrap());
    within("sends to a dead peer", async {
        for i in 0..100 {
            to_bolt.send(batch(i, 1)).await.unwrap();
            to_acker.send(vec![AckerMsg::Fail { root: i as u64, by: 3 }]).await.unwrap();
            to_spout.send(vec![Outcome::acked(i as u64)]).unwrap();
        }
    })
    .await;
    wait_until("every batch to be dropped", || w0.transport.stats().batches_dropped == 300).await;
    assert_eq!(w0.transport.stats().connects, 0);
}

#[test]
fn an_oversized_batch_travels_in_parts_and_arrives_whole() {
    let items = batch(0, 100);
    fn frame(batch: &[Envelope], more: bool) -> Frame<'_> {
        Frame::Bolts { task: 9, more, batch: Cow::Borrowed(batch) }
    }
    let one = {
        let mut buf = Vec::new();
        put_frame(&mut buf, &frame(&items, false), MAX_FRAME).unwrap();
        buf.len()
    };
    let max = one / 5;
    let mut buf = Vec::new();
    assert_eq!(put_parts(&mut buf, &items, false, max, &frame), 0);
    let mut parts = Vec::new();
    let mut rest = &buf[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(len <= max);
        parts.push(decode(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    assert!(parts.len() >= 5, "{} parts", parts.len());
    let mut whole = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let Frame::Bolts { task: 9, more, batch } = part else { panic!("not a batch part") };
        assert_eq!(more, whole.len() + batch.len() < items.len(), "part {i}");
        whole.extend(batch.into_owned());
    }
    assert_eq!(numbers(&whole), numbers(&items));

    // A single tuple over the limit is dropped, and the batch still ends.
    let mut buf = Vec::new();
    let big = vec![Envelope { values: smallvec![Value::from("x".repeat(4096))], ..batch(0, 1).remove(0) }];
    assert_eq!(put_parts(&mut buf, &big, false, 1024, &frame), 1);
    match decode(&buf[4..]).unwrap() {
        Frame::Bolts { more: false, batch, .. } => assert!(batch.is_empty()),
        other => panic!("expected an empty last part, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_inbound_lets_local_tasks_end() {
    let plan = plan();
    let (w0, w1, _peers) = pair(&plan).await;
    let Worker { transport, links, mut rx } = w1;
    drop(links);
    transport.close_inbound();
    within("bolt 3's inbox to close", async {
        while rx.bolts[3].as_mut().unwrap().recv().await.is_some() {}
    })
    .await;
    within("acker 7's inbox to close", async {
        while rx.ackers[7].as_mut().unwrap().recv().await.is_some() {}
    })
    .await;
    within("spout 1's inbox to close", async {
        while rx.spouts[1].as_mut().unwrap().recv().await.is_some() {}
    })
    .await;
    // What the peer still sends is discarded and credited: it never waits for this worker.
    let to_bolt = w0.bolt(3);
    within("sends to a closed worker", async {
        for i in 0..10 * INBOX_BATCHES as i64 {
            to_bolt.send(batch(i, 1)).await.unwrap();
        }
    })
    .await;
    drop(transport);
}
