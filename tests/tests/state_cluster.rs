//! Stateful bolts in a cluster, with `guarantee = "exactly_once"` and the state in a `squall
//! broker` server: a worker killed with kill -9, a supervisor lost with its workers, and a
//! rebalance of the stateful component from 2 to 3 tasks mid-stream all end with `squall
//! state dump` equal to the true counts, and no committed count is ever above the truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use squall_tests::cluster::{kill9, Cluster, SECRET};
use squall_tests::{BrokerServer, TempDir};

const DEADLINE: Duration = Duration::from_secs(300);
const RECORDS: u64 = 60_000;
const WORDS: u64 = 50;

/// One cluster at a time: each is a handful of processes on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn word(i: u64) -> String {
    format!("w{}", (i * 7919) % WORDS)
}

fn truth() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(word(i)).or_default() += 1;
    }
    counts
}

/// A broker server holding topic `in` (3 partitions, RECORDS words), and the topology file:
/// records (log-spout) → count (state-count, 2 tasks), the state on that server, 3 workers.
fn setup(dir: &TempDir) -> (BrokerServer, PathBuf) {
    let data = dir.join("broker-data").display().to_string();
    let server = BrokerServer::spawn(
        dir.squall(["broker", "--listen", "127.0.0.1:0", "--data-dir", &data])
            .env("SQUALL_SECRET", SECRET)
            .env_remove("SQUALL_DATA_DIR"),
    );
    let addr = server.addr().to_string();
    let topic = |args: &[&str], stdin: Option<String>| {
        let mut command = dir
            .squall(["topic"].iter().chain(args).chain(&["--broker", &addr]))
            .env("SQUALL_SECRET", SECRET)
            .timeout(DEADLINE);
        if let Some(stdin) = stdin {
            command = command.stdin(stdin);
        }
        command.run().assert_success();
    };
    topic(&["create", "in", "--partitions", "3"], None);
    topic(&["produce", "in"], Some((0..RECORDS).map(|i| word(i) + "\n").collect()));
    let file = dir.topology(
        "counts.toml",
        &format!(
            r#"
name = "counts"
workers = 3

[settings]
guarantee = "exactly_once"
message_timeout_secs = 10
max_spout_pending = 500
state = {{ backend = "log", broker = "{addr}", checkpoint_interval_ms = 300 }}

[[spouts]]
id = "records"
kind = "log-spout"
parallelism = 1
config = {{ topic = "in", group = "counts", broker = "{addr}", stop_at_end = true }}

[[bolts]]
id = "count"
kind = "state-count"
parallelism = 2
config = {{ key = "value" }}
inputs = [{{ from = "records", grouping = {{ fields = ["value"] }} }}]
"#
        ),
    );
    (server, file)
}

/// The committed counts, as `squall state dump` prints them.
fn dump(dir: &TempDir, file: &Path) -> BTreeMap<String, u64> {
    let file = file.display().to_string();
    let out = dir.squall(["state", "dump", &file, "count", "--json"]).env("SQUALL_SECRET", SECRET).run();
    out.assert_success();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Waits until something is committed but not everything: mid-stream.
fn wait_mid_stream(dir: &TempDir, file: &Path) {
    let end = Instant::now() + DEADLINE;
    loop {
        let total: u64 = dump(dir, file).values().sum();
        if total > 0 {
            assert!(total < RECORDS, "the run was already over ({total} counted): no fault mid-stream");
            return;
        }
        assert!(Instant::now() < end, "nothing was committed within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the committed counts until they equal the truth; none may ever be above it.
fn wait_for_exact_counts(dir: &TempDir, file: &Path, cluster: &Cluster) {
    let truth = truth();
    let end = Instant::now() + DEADLINE;
    loop {
        let counted = dump(dir, file);
        for (word, n) in &counted {
            assert!(*n <= truth[word], "{word}: {n} committed, above the true {}", truth[word]);
        }
        if counted == truth {
            return;
        }
        if Instant::now() > end {
            panic!("counts never reached the truth: {counted:?}\n{}", cluster.logs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn submit(cluster: &Cluster, file: &Path) {
    cluster.squall(["submit"]).arg(file).run().assert_success();
}

#[test]
fn exactly_once_counts_survive_a_worker_killed_with_kill_9() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("state-cluster-worker");
    let (_server, file) = setup(&dir);
    let cluster = Cluster::start(&dir, 2, 2);
    submit(&cluster, &file);
    wait_mid_stream(&dir, &file);
    let workers = cluster.worker_pids();
    assert!(!workers.is_empty());
    kill9(workers[0]);
    wait_for_exact_counts(&dir, &file, &cluster);
}

#[test]
fn exactly_once_counts_survive_a_lost_supervisor() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("state-cluster-supervisor");
    let (_server, file) = setup(&dir);
    let mut cluster = Cluster::start(&dir, 2, 2);
    submit(&cluster, &file);
    wait_mid_stream(&dir, &file);
    assert!(cluster.kill_supervisor_and_workers(1) > 0, "supervisor 1 ran workers");
    wait_for_exact_counts(&dir, &file, &cluster);
}

#[test]
fn rebalancing_the_stateful_count_from_2_to_3_tasks_mid_stream_keeps_exact_counts() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("state-cluster-rebalance");
    let (_server, file) = setup(&dir);
    let cluster = Cluster::start(&dir, 2, 2);
    submit(&cluster, &file);
    wait_mid_stream(&dir, &file);
    cluster.squall(["rebalance", "counts", "--parallelism", "count=3", "--wait", "0"]).run().assert_success();
    wait_for_exact_counts(&dir, &file, &cluster);
    // The workers' figures come with their heartbeats: polled, not read once.
    cluster.wait_until(DEADLINE, "status shows 3 count tasks that committed checkpoints", |c| {
        c.status("counts").is_some_and(|s| {
            s["components"]["count"]["tasks"] == 3
                && s["components"]["count"]["checkpoints"].as_u64() > Some(0)
        })
    });
    let text = cluster.squall(["status", "counts"]).run();
    text.assert_success();
    assert!(text.stdout.contains("last checkpoint"), "the summary shows the checkpoints\n{}", text.stdout);
}
