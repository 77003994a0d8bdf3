//! What a hostile or broken peer sends to a worker's real port: tuples on streams or from
//! tasks the plan lacks, acker messages for roots no spout can make, frames that would decode
//! into far more memory than they take, hellos fishing for the topology, and strangers that do
//! not know the cluster secret. Each closes that connection (counted, logged); the worker's own
//! connection and its tasks never notice.

use super::*;
use crate::transport::codec as wire;

/// A batch frame's body by hand: `{"B": [task, false, [envelope]]}` with one envelope on
/// `stream` from `source` whose values are `values` nils.
fn bolts_body(task: u8, stream: u32, source: u32, values: u32) -> Vec<u8> {
    let mut body = vec![0x81, 0xa1, b'B', 0x93, task, 0xc2, 0x91, 0x94];
    for n in [stream, source] {
        body.push(0xce);
        body.extend_from_slice(&n.to_be_bytes());
    }
    body.push(0xdd);
    body.extend_from_slice(&values.to_be_bytes());
    body.resize(body.len() + values as usize, 0xc0);
    body.push(0x90);
    body
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut buf = (body.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(body);
    buf
}

/// Sends `bytes` after a good hello and waits for the worker to close the connection.
async fn send_and_expect_closed(addr: SocketAddr, bytes: &[u8]) {
    let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
    let _ = wr.write_all(bytes).await;
    expect_closed(&mut rd).await;
}

/// Checks the worker pair still carries tuples from worker 0 to bolt task 3 of worker 1,
/// and that nothing else reached that task.
async fn still_serves(w0: &Worker, w1: &mut Worker, first: i64) {
    for i in first..first + 10 {
        w0.bolt(3).send(batch(i, 1)).await.unwrap();
    }
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), first, 1, 10).await;
    assert_eq!(w0.transport.stats().connects, 1, "the workers' own connection never broke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tuples_on_streams_or_from_tasks_the_plan_lacks_close_only_that_connection() {
    let plan = plan();
    let (w0, mut w1, _peers) = pair(&plan).await;
    still_serves(&w0, &mut w1, 0).await;
    let addr = w1.transport.local_addr();

    for (stream, source) in [(100_000, 0), (plan.streams.len() as u32, 0), (0, 100_000), (0, u32::MAX)] {
        send_and_expect_closed(addr, &framed(&bolts_body(3, stream, source, 1))).await;
    }
    wait_until("four refusals", || w1.transport.stats().refused == 4).await;
    still_serves(&w0, &mut w1, 100).await;
    assert!(w1.rx.bolts[3].as_mut().unwrap().try_recv().is_err(), "no bad tuple reached the bolt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acker_messages_for_roots_no_spout_task_makes_close_that_connection() {
    let plan = plan();
    let (w0, mut w1, _peers) = pair(&plan).await;
    let addr = w1.transport.local_addr();
    // Spout tasks are 0 and 1; the slot of 2^32 - 1 would have the acker ask for 64 GiB.
    let bad_roots = [make_root(0, 0, u32::MAX), make_root(4, 0, 0), make_root(1, 0, 1 << 24)];
    for root in bad_roots {
        let mut buf = Vec::new();
        let frame =
            Frame::Ackers { task: 7, more: false, batch: Cow::Owned(vec![AckerMsg::Init { root, val: 1 }]) };
        put_frame(&mut buf, &frame, MAX_FRAME).unwrap();
        send_and_expect_closed(addr, &buf).await;
    }
    wait_until("three refusals", || w1.transport.stats().refused == 3).await;
    assert!(w1.rx.ackers[7].as_mut().unwrap().try_recv().is_err(), "no bad message reached the acker");
    // A root a spout task can make goes through.
    let root = make_root(1, 0, 5);
    w0.links.ackers[7].clone().unwrap().send(vec![AckerMsg::Fail { root, by: 3 }]).await.unwrap();
    let got = within("the acker message", w1.rx.ackers[7].as_mut().unwrap().recv()).await;
    assert_eq!(got, Some(vec![AckerMsg::Fail { root, by: 3 }]));
    still_serves(&w0, &mut w1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frame_of_eight_million_nils_is_refused_before_it_is_decoded() {
    let plan = plan();
    let (w0, mut w1, _peers) = pair(&plan).await;
    let body = bolts_body(3, 0, 0, 8 << 20);
    // 8 MiB of nils would decode into 8M values (256 MiB): over the limit, refused up front.
    let err = wire::decode_body(&body).expect_err("over the decode limit").to_string();
    assert!(err.contains("more memory than the limit"), "{err}");
    send_and_expect_closed(w1.transport.local_addr(), &framed(&body)).await;
    wait_until("the refusal", || w1.transport.stats().refused == 1).await;
    still_serves(&w0, &mut w1, 0).await;
    // The same shape within the limit decodes.
    let small = bolts_body(3, 0, 0, 1000);
    assert!(wire::decode_body(&small).is_ok());
}

#[test]
fn a_batch_that_would_decode_past_the_limit_is_written_in_parts_that_each_decode() {
    // Each tuple holds a list of 100,000 nils: 100 KB written, 3.2 MB decoded; 40 of them are
    // over the 32 MiB limit together, not alone.
    let nils = Value::List(vec![Value::Null; 100_000]);
    let items: Vec<Envelope> =
        (0..40).map(|_| Envelope { values: smallvec![nils.clone()], ..batch(0, 1).remove(0) }).collect();
    fn frame(batch: &[Envelope], more: bool) -> Frame<'_> {
        Frame::Bolts { task: 3, more, batch: Cow::Borrowed(batch) }
    }
    assert!(wire::overhead(&frame(&items, false)) > wire::MAX_OVERHEAD);
    let mut buf = Vec::new();
    assert_eq!(put_parts(&mut buf, &items, false, MAX_FRAME, &frame), 0, "nothing dropped");
    let (mut rest, mut parts, mut tuples) = (&buf[..], 0, 0);
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let Frame::Bolts { batch, .. } = decode(&rest[4..4 + len]).expect("each part decodes") else {
            panic!("not a batch")
        };
        tuples += batch.len();
        parts += 1;
        rest = &rest[4 + len..];
    }
    assert!(parts >= 2, "{parts} parts");
    assert_eq!(tuples, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_hello_does_not_name_this_workers_topology_or_version() {
    let plan = plan();
    let (_peers, peers_rx) = watch::channel(vec![None, None]);
    let w1 = Worker::attach(&plan, 1, Worker::bind(1, peers_rx).await);
    let addr = w1.transport.local_addr();
    let stream = authenticated(addr).await;
    let (rd, mut wr) = stream.into_split();
    let hello = Hello { protocol: PROTOCOL, topology: "guess".into(), version: 1, worker: 0, credits: 0 };
    write_frame(&mut wr, &Frame::Hello(hello)).await.unwrap();
    let mut rd = BufReader::new(rd);
    let mut body = Vec::new();
    assert!(within("an answer", read_frame(&mut rd, &mut body)).await.unwrap());
    match decode(&body).unwrap() {
        Frame::Refused(why) => {
            assert_eq!(why, "topology guess version 1 is not what this worker runs");
            assert!(!why.contains(&format!("{VERSION}")), "{why}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    expect_closed(&mut rd).await;
}

/// A well-formed hello and batch for bolt task 3, as a peer would send them after the handshake.
async fn hello_and_batch() -> Vec<u8> {
    let mut bytes = Vec::new();
    let hello = Hello { protocol: PROTOCOL, topology: "t".into(), version: VERSION, worker: 0, credits: 0 };
    put_frame(&mut bytes, &Frame::Hello(hello), MAX_FRAME).unwrap();
    let frame = Frame::Bolts { task: 3, more: false, batch: Cow::Owned(batch(1000, 5)) };
    put_frame(&mut bytes, &frame, MAX_FRAME).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_without_the_secret_is_closed_before_its_hello_and_batch_are_read() {
    let plan = plan();
    let (w0, mut w1, _peers) = pair(&plan).await;
    still_serves(&w0, &mut w1, 0).await;
    let addr = w1.transport.local_addr();

    // Skipping the handshake: the hello and batch are taken as a (wrong) answer to it.
    let mut stranger = TcpStream::connect(addr).await.unwrap();
    let _ = stranger.write_all(&hello_and_batch().await).await;
    expect_closed(&mut stranger).await;
    // Answering the challenge with another secret: refused, told so, closed unread.
    let mut wrong = TcpStream::connect(addr).await.unwrap();
    let refused =
        squall_engine::auth::connect(&mut wrong, &Secret::new("a guess"), squall_engine::auth::WORKER).await;
    assert!(matches!(refused, Err(squall_engine::auth::AuthError::Refused)), "{refused:?}");
    let _ = wrong.write_all(&hello_and_batch().await).await;
    expect_closed(&mut wrong).await;

    wait_until("two refusals", || w1.transport.stats().refused == 2).await;
    assert!(w1.rx.bolts[3].as_mut().unwrap().try_recv().is_err(), "nothing of theirs reached the bolt");
    still_serves(&w0, &mut w1, 100).await;
    assert!(w1.rx.bolts[3].as_mut().unwrap().try_recv().is_err(), "nothing of theirs reached the bolt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_sends_nothing_to_a_listener_that_cannot_prove_the_secret() {
    let plan = plan();
    let (peers, peers_rx) = watch::channel(vec![None, None]);
    let t0 = Worker::bind(0, peers_rx.clone()).await;
    // An impostor on worker 1's address: a transport that knows another secret.
    let t1 = Transport::bind(any_port(), &Secret::new("impostor"), "t", VERSION, 1, peers_rx).await.unwrap();
    peers.send_replace(vec![Some(t0.local_addr()), Some(t1.local_addr())]);
    let (w0, mut w1) = (Worker::attach(&plan, 0, t0), Worker::attach(&plan, 1, t1));
    w0.bolt(3).send(batch(0, 1)).await.unwrap();
    wait_until("the impostor refused twice", || w1.transport.stats().refused >= 2).await;
    assert_eq!(w0.transport.stats().connects, 0, "no connection to the impostor was established");
    assert_eq!(w0.transport.stats().bytes_sent, 0, "no frame was sent to it");
    assert!(w1.rx.bolts[3].as_mut().unwrap().try_recv().is_err());
}
