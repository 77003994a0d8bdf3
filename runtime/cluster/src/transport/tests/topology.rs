//! A whole topology over two workers.

use super::*;

#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    failed: AtomicU64,
    sunk: AtomicU64,
}

#[derive(Deserialize)]
struct CountConfig {
    count: u64,
}

struct Numbers {
    count: u64,
    next: u64,
    acked: u64,
    replay: Vec<u64>,
    tally: Arc<Tally>,
}

#[async_trait]
impl Spout for Numbers {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        let n = match self.replay.pop() {
            Some(n) => n,
            None if self.next < self.count => {
                self.next += 1;
                self.next - 1
            }
            None => return Ok(()),
        };
        out.emit_with_id(smallvec![Value::Int(n as i64)], Value::Int(n as i64))?;
        Ok(())
    }

    async fn ack(&mut self, _: MessageId) {
        self.acked += 1;
        self.tally.acked.fetch_add(1, Relaxed);
    }

    async fn fail(&mut self, id: MessageId) {
        self.tally.failed.fetch_add(1, Relaxed);
        self.replay.push(id.as_i64().unwrap() as u64);
    }

    fn is_finished(&self) -> bool {
        self.acked == self.count
    }
}

struct Double;

#[async_trait]
impl BasicBolt for Double {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["n"]);
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        let n = input.get_i64(0)?;
        out.emit(smallvec![Value::Int(2 * n)])?;
        out.emit(smallvec![Value::Int(2 * n + 1)])?;
        Ok(())
    }
}

struct Sink(Arc<Tally>);

#[async_trait]
impl BasicBolt for Sink {
    async fn execute(&mut self, _: &Tuple, _: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        self.0.sunk.fetch_add(1, Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topology_split_over_two_workers_acks_every_message() {
    const PER_SPOUT: u64 = 2000;
    let tally = Arc::new(Tally::default());
    let mut registry = Registry::new();
    let t = tally.clone();
    registry.spout("numbers", move |c: CountConfig| {
        Ok(Numbers { count: c.count, next: 0, acked: 0, replay: Vec::new(), tally: t.clone() })
    });
    registry.basic_bolt("double", |_: squall_api::NoConfig| Ok(Double));
    let t = tally.clone();
    registry.basic_bolt("sink", move |_: squall_api::NoConfig| Ok(Sink(t.clone())));
    let def = TopologyDef {
        name: "t".into(),
        workers: 2,
        settings: Settings { ackers: 2, max_spout_pending: 200, ..Settings::default() },
        spouts: vec![ComponentDef::new("numbers", "numbers")
            .parallelism(2)
            .set("count", PER_SPOUT as i64)
            .emits(["n"])],
        bolts: vec![
            ComponentDef::new("double", "double")
                .parallelism(3)
                .input("numbers", GroupingDef::Shuffle)
                .emits(["n"]),
            ComponentDef::new("sink", "sink")
                .parallelism(2)
                .input("double", GroupingDef::Fields(vec!["n".into()])),
        ],
    };
    let mut plan = Plan::new(&def).unwrap();
    plan.task_worker = (0..plan.task_count()).map(|t| t % 2).collect();
    let (peers, peers_rx) = watch::channel(vec![None, None]);
    let mut t0 = Worker::bind(0, peers_rx.clone()).await;
    let mut t1 = Worker::bind(1, peers_rx).await;
    peers.send_replace(vec![Some(t0.local_addr()), Some(t1.local_addr())]);
    let hosted = |w: usize| {
        (0..plan.task_count() as TaskId).filter(|&t| plan.task_worker[t as usize] == w).collect::<Vec<_>>()
    };
    let r0 = squall_engine::launch::start(&plan, &registry, &hosted(0), Some(&mut t0), None).unwrap();
    let r1 = squall_engine::launch::start(&plan, &registry, &hosted(1), Some(&mut t1), None).unwrap();

    let total = 2 * PER_SPOUT;
    wait_until("every message to be acked", || tally.acked.load(Relaxed) == total).await;
    // Shut down: the spouts have ended; stop delivering, and every task ends.
    t0.close_inbound();
    t1.close_inbound();
    for mut running in [r0, r1] {
        running.release_links();
        within("every task to end", async {
            while let Some(ended) = running.tasks.join_next().await {
                ended.expect("no task panics").expect("no task fails");
            }
        })
        .await;
    }
    assert_eq!(tally.failed.load(Relaxed), 0, "no tree failed or timed out");
    assert_eq!(tally.sunk.load(Relaxed), 2 * total, "every doubled number reached a sink once");
    let (s0, s1) = (t0.stats(), t1.stats());
    assert!(s0.batches_sent > 0 && s1.batches_sent > 0, "{s0:?} {s1:?}");
    assert_eq!(s0.batches_dropped + s1.batches_dropped, 0, "{s0:?} {s1:?}");
}
