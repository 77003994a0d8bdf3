//! Live rebalance: running workers switch to a new plan (`Transport::rewire`) whose task ids
//! are stable, with ids added after the highest in use and holes where a bolt shrank.

use squall_engine::plan::Numbering;

use super::*;

/// `def(b)` laid out with `numbering`, its tasks placed by `place` (called for holes too:
/// whatever it says for them must not matter).
fn numbered(b: usize, numbering: &Numbering, place: impl Fn(usize) -> usize) -> Plan {
    let mut plan = Plan::numbered(&def(b), numbering).unwrap();
    plan.task_worker = (0..plan.task_count()).map(place).collect();
    plan
}

/// `s` 0, 1; `a` 2, 3; `b` 4, 5, 6; ackers 7, 8: worker 1 hosts 1, 3, 5, 6 and 8.
fn three_bs() -> Plan {
    let plan = numbered(3, &Numbering::dense(&[2, 2, 3], 2, false), |t| [0, 1, 0, 1, 0, 1, 1, 0, 1][t]);
    assert_eq!((plan.components[2].tasks.clone(), plan.acker_tasks.clone()), (vec![4, 5, 6], vec![7, 8]));
    plan
}

/// `plan` with bolt `b` at `parallelism` tasks, placed by `place`.
fn resized(plan: &Plan, parallelism: usize, place: impl Fn(usize) -> usize) -> Plan {
    let numbering = plan.numbering().resized(1, 2, parallelism).unwrap();
    numbered(parallelism, &numbering, place)
}

/// Wires a worker that was never attached: `transport.rewire` before attach works as attach.
fn rewired_fresh(plan: &Plan, me: usize, version: u64, mut transport: Transport) -> Worker {
    let (mut links, rx) = inboxes(plan, me);
    transport.rewire(plan, version, &mut links);
    Worker { transport, links, rx }
}

impl Worker {
    /// Moves this worker from `old` to `plan` as a worker process does: the inboxes of the
    /// tasks it keeps stay, tasks it gains get new ones, and it lets go of everything else
    /// (its senders of removed tasks and of the previous generation's forwarders).
    fn rewire(&mut self, old: &Plan, plan: &Plan, me: usize, version: u64) {
        let n = plan.task_count();
        let mut links = Links {
            bolts: vec![None; n],
            ackers: vec![None; n],
            spouts: vec![None; n],
            taps: None,
            rewire: None,
        };
        let len = n.max(self.rx.bolts.len());
        self.rx.bolts.resize_with(len, || None);
        self.rx.ackers.resize_with(len, || None);
        self.rx.spouts.resize_with(len, || None);
        for t in (0..n).filter(|&t| kind(plan, t).is_some() && plan.task_worker[t] == me) {
            let kept = kind(old, t) == kind(plan, t) && old.task_worker[t] == me;
            if kept {
                links.bolts[t] = self.links.bolts[t].clone();
                links.ackers[t] = self.links.ackers[t].clone();
                links.spouts[t] = self.links.spouts[t].clone();
            } else {
                add_inbox(plan, t, &mut links, &mut self.rx);
            }
        }
        self.transport.rewire(plan, version, &mut links);
        self.links = links;
    }
}

/// Sends `count` batches of one tuple numbered from `first` to `task` through `from`.
async fn send_to(from: &Worker, task: usize, first: i64, count: i64) {
    let tx = from.bolt(task);
    within("sends", async {
        for i in first..first + count {
            tx.send(batch(i, 1)).await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_rewire_a_task_added_after_the_highest_id_and_the_kept_ones_get_their_tuples() {
    let p0 = plan();
    let (mut w0, mut w1, _peers) = pair(&p0).await;
    send_to(&w0, 3, 0, 5).await;
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 0, 1, 5).await;

    // `b` grows by one task: id 8, after the ackers, on worker 1.
    let p1 = resized(&p0, 3, |t| if t == 8 { 1 } else { t % 2 });
    assert_eq!(p1.components[2].tasks, vec![4, 5, 8]);
    w0.rewire(&p0, &p1, 0, VERSION + 1);
    w1.rewire(&p0, &p1, 1, VERSION + 1);
    assert!(w1.rx.bolts[8].is_some(), "worker 1 made an inbox for the new task");
    for task in [8, 3, 5] {
        send_to(&w0, task, 100, 20).await;
        expect_bolt_batches(w1.rx.bolts[task].as_mut().unwrap(), 100, 1, 20).await;
    }
    send_to(&w1, 4, 200, 20).await;
    expect_bolt_batches(w0.rx.bolts[4].as_mut().unwrap(), 200, 1, 20).await;

    // Again: id 9 on worker 0. Attach once, rewire as often as the topology is rebalanced.
    let p2 = resized(&p1, 4, |t| match t {
        8 => 1,
        9 => 0,
        t => t % 2,
    });
    assert_eq!(p2.components[2].tasks, vec![4, 5, 8, 9]);
    w0.rewire(&p1, &p2, 0, VERSION + 2);
    w1.rewire(&p1, &p2, 1, VERSION + 2);
    send_to(&w1, 9, 300, 20).await;
    expect_bolt_batches(w0.rx.bolts[9].as_mut().unwrap(), 300, 1, 20).await;
    send_to(&w0, 8, 400, 20).await;
    expect_bolt_batches(w1.rx.bolts[8].as_mut().unwrap(), 400, 1, 20).await;
    let (s0, s1) = (w0.transport.stats(), w1.transport.stats());
    assert!(s0.connects >= 3 && s1.connects >= 3, "a connection per generation: {s0:?} {s1:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_bolt_shrank_a_frame_for_or_from_its_hole_closes_that_connection_and_traffic_goes_on() {
    let p0 = three_bs();
    let (mut w0, mut w1, _peers) = pair(&p0).await;
    send_to(&w0, 6, 0, 3).await;
    expect_bolt_batches(w1.rx.bolts[6].as_mut().unwrap(), 0, 1, 3).await;

    // `b` shrinks to 4, 5: 6 is a hole, which the plan still "places" on worker 1.
    let p1 = resized(&p0, 2, |t| [0, 1, 0, 1, 0, 1, 1, 0, 1][t]);
    assert!(p1.is_hole(6) && p1.task_count() == 9);
    w0.rewire(&p0, &p1, 0, VERSION + 1);
    w1.rewire(&p0, &p1, 1, VERSION + 1);
    assert!(w0.links.bolts[6].is_none(), "no forwarder for a hole");
    send_to(&w0, 5, 100, 10).await;
    expect_bolt_batches(w1.rx.bolts[5].as_mut().unwrap(), 100, 1, 10).await;

    let addr = w1.transport.local_addr();
    let (connects, refused) = (w0.transport.stats().connects, w1.transport.stats().refused);
    // To the hole.
    let (mut rd, mut wr, answer) = raw_hello(addr, VERSION + 1, 0).await;
    assert!(matches!(answer, Frame::Hello(_)), "{answer:?}");
    let frame = Frame::Bolts { task: 6, more: false, batch: Cow::Owned(batch(0, 1)) };
    write_frame(&mut wr, &frame).await.unwrap();
    expect_closed(&mut rd).await;
    // From the hole, to a task that is there.
    let (mut rd, mut wr, _) = raw_hello(addr, VERSION + 1, 0).await;
    let from_hole = vec![Envelope { source_task: 6, ..batch(0, 1).remove(0) }];
    write_frame(&mut wr, &Frame::Bolts { task: 5, more: false, batch: Cow::Owned(from_hole) }).await.unwrap();
    expect_closed(&mut rd).await;
    // And the version before is no longer spoken here.
    let (_, _, answer) = raw_hello(addr, VERSION, 0).await;
    assert!(matches!(answer, Frame::Refused(_)), "{answer:?}");
    wait_until("three refusals", || w1.transport.stats().refused == refused + 3).await;

    send_to(&w0, 5, 200, 10).await;
    expect_bolt_batches(w1.rx.bolts[5].as_mut().unwrap(), 200, 1, 10).await;
    assert_eq!(w0.transport.stats().connects, connects, "the workers' own connection never broke");
    assert!(w1.rx.bolts[5].as_mut().unwrap().try_recv().is_err(), "nothing from the hole reached task 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_rewire_the_transport_holds_no_sender_of_a_removed_tasks_inbox() {
    let p0 = three_bs();
    let (mut w0, mut w1, _peers) = pair(&p0).await;
    // Nobody reads task 6 on worker 1: its inbox fills, and its drainer waits for room with a
    // batch in hand, the hardest case to let go of.
    let sent = INBOX_BATCHES as i64 + 4;
    send_to(&w0, 6, 0, sent).await;
    wait_until("task 6's inbox to fill with more waiting", || {
        w1.rx.bolts[6].as_ref().unwrap().len() == INBOX_BATCHES
            && w1.transport.stats().batches_received > INBOX_BATCHES as u64
    })
    .await;

    // 6 becomes a hole, whose placement is nonsense (it must not matter).
    let p1 = resized(&p0, 2, |t| if t == 6 { usize::MAX } else { [0, 1, 0, 1, 0, 1, 1, 0, 1][t] });
    assert!(p1.is_hole(6));
    w0.rewire(&p0, &p1, 0, VERSION + 1);
    w1.rewire(&p0, &p1, 1, VERSION + 1);
    assert!(w1.links.bolts[6].is_none(), "the test let go of its own sender");
    // Unread: a drainer waiting for room must let go by itself.
    let mut removed = w1.rx.bolts[6].take().unwrap();
    wait_until("every sender of task 6's inbox to be dropped", || removed.is_closed()).await;
    let mut read = 0;
    while removed.recv().await.is_some() {
        read += 1;
    }
    assert_eq!(read, INBOX_BATCHES, "what was in it is still there to read");
    // The kept tasks go on.
    send_to(&w0, 5, 100, 10).await;
    expect_bolt_batches(w1.rx.bolts[5].as_mut().unwrap(), 100, 1, 10).await;
    send_to(&w1, 4, 200, 10).await;
    expect_bolt_batches(w0.rx.bolts[4].as_mut().unwrap(), 200, 1, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_still_on_the_old_version_is_refused_until_it_rewires_and_held_batches_then_arrive() {
    let p0 = plan();
    let (peers, peers_rx) = watch::channel(vec![None, None]);
    // A hold far longer than the test may take: nothing is dropped while worker 1 lags.
    let opts = TransportOptions { hold: Duration::from_secs(120), ..TransportOptions::default() };
    let secret = secret();
    let bind =
        |me| Transport::bind_with(any_port(), &secret, "t", VERSION, me, peers_rx.clone(), opts.clone());
    let (t0, t1) = (bind(0).await.unwrap(), bind(1).await.unwrap());
    peers.send_replace(vec![Some(t0.local_addr()), Some(t1.local_addr())]);
    let (mut w0, mut w1) = (Worker::attach(&p0, 0, t0), Worker::attach(&p0, 1, t1));
    send_to(&w0, 3, 0, 5).await;
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 0, 1, 5).await;

    let p1 = resized(&p0, 3, |t| if t == 8 { 1 } else { t % 2 });
    w0.rewire(&p0, &p1, 0, VERSION + 1);
    send_to(&w0, 3, 100, 10).await;
    send_to(&w0, 8, 200, 10).await;
    // Each refuses the other's hello: worker 1 still runs version 7, worker 0 runs 8 now.
    wait_until("worker 1 to refuse version 8", || w1.transport.stats().refused >= 1).await;
    wait_until("worker 0 to refuse version 7", || w0.transport.stats().refused >= 1).await;
    assert!(w1.rx.bolts[3].as_mut().unwrap().try_recv().is_err(), "nothing crossed versions");

    w1.rewire(&p0, &p1, 1, VERSION + 1);
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 100, 1, 10).await;
    expect_bolt_batches(w1.rx.bolts[8].as_mut().unwrap(), 200, 1, 10).await;
    send_to(&w1, 2, 300, 10).await;
    expect_bolt_batches(w0.rx.bolts[2].as_mut().unwrap(), 300, 1, 10).await;
    let (s0, s1) = (w0.transport.stats(), w1.transport.stats());
    assert_eq!((s0.batches_dropped, s1.batches_dropped), (0, 0), "{s0:?} {s1:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_with_a_worker_whose_address_is_not_known_holds_its_batches_until_it_is() {
    let p0 = plan();
    let (mut w0, mut w1, peers) = pair(&p0).await;
    // Task 8 goes to a third worker the peers watch does not list yet.
    let p1 = resized(&p0, 3, |t| if t == 8 { 2 } else { t % 2 });
    w0.rewire(&p0, &p1, 0, VERSION + 1);
    w1.rewire(&p0, &p1, 1, VERSION + 1);
    send_to(&w0, 8, 0, 10).await;
    send_to(&w0, 3, 100, 10).await;
    expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 100, 1, 10).await;

    // Worker 2 starts on the new plan at once (rewire before attach wires as attach).
    let t2 = Worker::bind(2, peers.subscribe()).await;
    let mut w2 = rewired_fresh(&p1, 2, VERSION + 1, t2);
    peers.send_replace(vec![
        Some(w0.transport.local_addr()),
        Some(w1.transport.local_addr()),
        Some(w2.transport.local_addr()),
    ]);
    expect_bolt_batches(w2.rx.bolts[8].as_mut().unwrap(), 0, 1, 10).await;
    send_to(&w2, 5, 200, 10).await;
    expect_bolt_batches(w1.rx.bolts[5].as_mut().unwrap(), 200, 1, 10).await;
}
