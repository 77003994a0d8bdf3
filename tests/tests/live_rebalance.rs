//! Live rebalance end to end: one `squall nimbus`, three `squall supervisor`s and their worker
//! processes on 127.0.0.1. A rebalance or the loss of a supervisor restarts only the workers
//! whose tasks move: the others keep their process (same pid) and their tuples, and every
//! number still reaches the sink. A change of one component's parallelism starts and stops
//! only that component's tasks: every worker keeps its process. The topology is sequence → pass (a
//! flaky bolt that fails nothing) → file-sink over four workers.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use squall_tests::cluster::{alive, numbers_in, Cluster};
use squall_tests::ui::get_json;
use squall_tests::TempDir;

const LONG: Duration = Duration::from_secs(240);

fn numbers_topology(
    dir: &TempDir,
    name: &str,
    count: u64,
    rate: u64,
    workers: usize,
    out: &Path,
) -> std::path::PathBuf {
    dir.topology(
        &format!("{name}.toml"),
        &format!(
            r#"
name = "{name}"
workers = {workers}

[settings]
message_timeout_secs = 5
max_spout_pending = 500

[[spouts]]
id = "numbers"
kind = "sequence"
config = {{ count = {count}, rate = {rate} }}

[[bolts]]
id = "pass"
kind = "flaky"
parallelism = 2
inputs = [{{ from = "numbers", grouping = "shuffle" }}]
config = {{ fail_fraction = 0.0, seed = 7 }}

[[bolts]]
id = "sink"
kind = "file-sink"
parallelism = 2
inputs = [{{ from = "pass", grouping = {{ fields = ["n"] }} }}]
config = {{ path = "{}" }}
"#,
            out.display()
        ),
    )
}

fn version(cluster: &Cluster, name: &str) -> u64 {
    cluster.listed(name).and_then(|t| t["version"].as_u64()).unwrap_or(0)
}

fn pids(cluster: &Cluster, supervisor: usize) -> BTreeSet<u32> {
    cluster.workers_of(supervisor).into_iter().collect()
}

#[test]
fn a_rebalance_or_a_lost_supervisor_restarts_only_the_workers_whose_tasks_move() {
    let dir = TempDir::new("live-rebalance");
    let mut cluster = Cluster::start(&dir, 3, 2);
    let out = dir.join("out.jsonl");
    let count = 8000;
    let file = numbers_topology(&dir, "numbers", count, 500, 4, &out);
    let submitted = cluster.squall(["submit"]).arg(&file).run();
    submitted.assert_success();
    // Slots are taken spread over supervisors: sup-0, sup-1, sup-2, then sup-0 again.
    cluster.wait_until(LONG, "four workers run: two on sup-0, one on each other", |c| {
        c.workers_of(0).len() == 2 && c.workers_of(1).len() == 1 && c.workers_of(2).len() == 1
    });
    cluster.wait_until(LONG, "some numbers reach the sink", |_| numbers_in(&out).len() > 300);

    // A rebalance that moves no task: a new version, and every worker runs on.
    let before: Vec<BTreeSet<u32>> = (0..3).map(|i| pids(&cluster, i)).collect();
    let v1 = version(&cluster, "numbers");
    let rebalanced = cluster.squall(["rebalance", "numbers", "--workers", "4", "--wait", "1"]).run();
    rebalanced.assert_success();
    cluster.wait_until(LONG, "the rebalance makes a new version", |c| version(c, "numbers") > v1);
    let seen = numbers_in(&out).len();
    cluster
        .wait_until(LONG, "numbers flow again after the rebalance", |_| numbers_in(&out).len() > seen + 300);
    let after: Vec<BTreeSet<u32>> = (0..3).map(|i| pids(&cluster, i)).collect();
    assert_eq!(after, before, "no worker was restarted by a rebalance that moves no task");

    // sup-1 is lost with its worker: that worker's tasks move to the free slot of sup-2; the
    // workers of sup-0 and sup-2 keep running.
    let v2 = version(&cluster, "numbers");
    assert_eq!(cluster.kill_supervisor_and_workers(1), 1, "sup-1 ran one worker");
    cluster.wait_until(LONG, "nimbus moves the lost worker to sup-2", |c| {
        version(c, "numbers") > v2 && c.workers_of(2).len() == 2
    });
    assert_eq!(pids(&cluster, 0), before[0], "sup-0's workers keep running");
    assert!(pids(&cluster, 2).is_superset(&before[2]), "sup-2's worker keeps running");

    cluster.wait_until(LONG, &format!("every number below {count} is in the sink"), |_| {
        numbers_in(&out).len() as u64 == count
    });
    assert_eq!(numbers_in(&out), (0..count).collect::<BTreeSet<u64>>());
    for &pid in before[0].iter().chain(&before[2]) {
        assert!(alive(pid), "worker {pid} still runs at the end");
    }
    assert_eq!(pids(&cluster, 0), before[0], "sup-0's workers ran throughout");
    let status = cluster.status("numbers").expect("status");
    assert_eq!(status["components"]["pass"]["failed"].as_u64(), Some(0), "{status}");
    let killed = cluster.squall(["kill", "numbers", "--wait", "1"]).run();
    killed.assert_success();
}

/// The tasks of `component` whose `figure` (`executed`, `emitted`) is above 0, by the REST
/// API's executor figures.
fn tasks_with(cluster: &Cluster, name: &str, component: &str, figure: &str) -> BTreeSet<u64> {
    let page = get_json(cluster.ui_addr(), &format!("/api/v1/topology/{name}/component/{component}"));
    page["executorStats"]
        .as_array()
        .map(|executors| {
            executors
                .iter()
                .filter(|e| e[figure].as_u64() > Some(0))
                .filter_map(|e| e["task"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

fn task_count(cluster: &Cluster, name: &str, component: &str) -> usize {
    let page = get_json(cluster.ui_addr(), &format!("/api/v1/topology/{name}/component/{component}"));
    page["executorStats"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_parallelism_change_starts_and_stops_only_that_components_tasks() {
    let dir = TempDir::new("live-parallelism");
    let cluster = Cluster::start(&dir, 2, 2);
    let out = dir.join("out.jsonl");
    let count = 8000;
    let file = numbers_topology(&dir, "grow", count, 400, 4, &out);
    cluster.squall(["submit"]).arg(&file).run().assert_success();
    cluster.wait_until(LONG, "four workers run, two on each supervisor", |c| {
        c.workers_of(0).len() == 2 && c.workers_of(1).len() == 2
    });
    cluster.wait_until(LONG, "some numbers reach the sink", |_| numbers_in(&out).len() > 300);
    let workers: BTreeSet<u32> = cluster.worker_pids().into_iter().collect();
    assert_eq!(workers.len(), 4);

    // pass grows from 2 to 3 tasks: its new task starts in a running worker.
    let v1 = version(&cluster, "grow");
    let grown = cluster.squall(["rebalance", "grow", "--parallelism", "pass=3", "--wait", "2"]).run();
    grown.assert_success();
    cluster.wait_until(LONG, "the rebalance makes a new version", |c| version(c, "grow") > v1);
    cluster.wait_until(LONG, "each of pass's three tasks executes tuples", |c| {
        task_count(c, "grow", "pass") == 3 && tasks_with(c, "grow", "pass", "executed").len() == 3
    });
    let seen = numbers_in(&out).len();
    cluster.wait_until(LONG, "numbers flow after the growth", |_| numbers_in(&out).len() > seen + 300);
    assert_eq!(
        cluster.worker_pids().into_iter().collect::<BTreeSet<u32>>(),
        workers,
        "every worker kept its process while pass grew\n{}",
        cluster.logs()
    );

    // pass shrinks to one task: the other two end in their running workers.
    let v2 = version(&cluster, "grow");
    let shrunk = cluster.squall(["rebalance", "grow", "--parallelism", "pass=1", "--wait", "2"]).run();
    shrunk.assert_success();
    cluster.wait_until(LONG, "the second rebalance makes a new version", |c| version(c, "grow") > v2);
    cluster.wait_until(LONG, "pass has one task", |c| task_count(c, "grow", "pass") == 1);

    // The spout goes from one task to two: both start anew (the sequence restarts, split
    // between them), in running workers.
    let v3 = version(&cluster, "grow");
    let spouts = cluster.squall(["rebalance", "grow", "--parallelism", "numbers=2", "--wait", "2"]).run();
    spouts.assert_success();
    cluster.wait_until(LONG, "the third rebalance makes a new version", |c| version(c, "grow") > v3);
    cluster.wait_until(LONG, "both spout tasks emit", |c| {
        task_count(c, "grow", "numbers") == 2 && tasks_with(c, "grow", "numbers", "emitted").len() == 2
    });
    cluster.wait_until(LONG, &format!("every number below {count} is in the sink"), |_| {
        numbers_in(&out).len() as u64 == count
    });
    assert_eq!(numbers_in(&out), (0..count).collect::<BTreeSet<u64>>());
    assert_eq!(
        cluster.worker_pids().into_iter().collect::<BTreeSet<u32>>(),
        workers,
        "every worker kept its process while pass shrank and numbers grew\n{}",
        cluster.logs()
    );
    let status = cluster.status("grow").expect("status");
    for component in ["numbers", "pass", "sink"] {
        assert_eq!(status["components"][component]["failed"].as_u64(), Some(0), "{component}: {status}");
    }
    cluster.squall(["kill", "grow", "--wait", "1"]).run().assert_success();
}
