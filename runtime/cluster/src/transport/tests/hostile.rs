//! What a hostile or broken peer sends to a worker's real port: tuples on streams or from
//! tasks the plan lacks, acker messages for roots no spout can make, frames that would decode
//! into far more memory than they take, and hellos fishing for the topology. Each closes that
//! connection (counted, logged); the worker's own connection and its tasks never notice.

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
    w0.links.ackers[7].clone().unwrap().send(vec![AckerMsg::Fail { root }]).await.unwrap();
    let got = within("the acker message", w1.rx.ackers[7].as_mut().unwrap().recv()).await;
    assert_eq!(got, Some(vec![AckerMsg::Fail { root }]));
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
    let stream = TcpStream::connect(addr).await.unwrap();
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
