//! Nimbus high availability on etcd: three `squall nimbus` processes on one private etcd
//! (Debian's `etcd-server`, started by the test), two supervisors, and a log-spout → flaky →
//! log-sink topology on a `squall broker` server. The leader killed with kill -9 mid-run:
//! another nimbus leads within 10 s, the CLI works through the seeds, a supervisor lost during
//! the outage has its work moved, and every record reaches the sink. etcd killed and
//! restarted mid-run: the cluster recovers and loses nothing either.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use squall_testkit::etcd::Etcd;
use squall_tests::cluster::{child_workers, http_get, keys_missing, kill9, log_flaky_pipeline, SECRET};
use squall_tests::{BrokerServer, Running, TempDir};

/// One cluster at a time: each is a dozen processes on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const LONG: Duration = Duration::from_secs(180);
/// Replays after a lost supervisor ride on the message timeout; a loaded machine is slow.
const RECOVERY: Duration = Duration::from_secs(480);
const RECORDS: u64 = 20_000;
const NIMBUSES: usize = 3;
const SUPERVISORS: usize = 2;
const SUPERVISOR_TIMEOUT_SECS: u64 = 3;

/// Three nimbus processes on one etcd, and two supervisors, in `dir`.
struct HaCluster<'a> {
    dir: &'a TempDir,
    etcd: Etcd,
    seeds: Vec<String>,
    nimbuses: Vec<Option<Running>>,
    supervisors: Vec<Option<Running>>,
}

/// A port of 127.0.0.1 free a moment ago (the seeds must be known before nimbus starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl<'a> HaCluster<'a> {
    fn start(dir: &'a TempDir) -> HaCluster<'a> {
        let etcd = Etcd::start().unwrap_or_else(|e| panic!("{e}"));
        let seeds = (0..NIMBUSES).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut cluster = HaCluster { dir, etcd, seeds, nimbuses: Vec::new(), supervisors: Vec::new() };
        cluster.dir.write("cluster.toml", &cluster.config_text(None));
        for i in 0..NIMBUSES {
            cluster.nimbuses.push(None);
            cluster.start_nimbus(i);
        }
        cluster.wait_until(LONG, "a nimbus leads", |c| c.leader().is_some());
        for i in 0..SUPERVISORS {
            let config = cluster.dir.write(
                &format!("supervisor-{i}.toml"),
                &cluster.config_text(Some(&format!(
                    "[supervisor]\nid = \"sup-{i}\"\ndata_dir = \"{}\"\nslots = [0, 0]\nheartbeat_secs = 1\n",
                    dir.join(format!("sup-{i}")).display()
                ))),
            );
            let mut running = dir
                .squall(["supervisor", "--config"])
                .arg(&config)
                .timeout(Duration::from_secs(3600))
                .spawn();
            let started =
                running.wait_for_stderr_line(Duration::from_secs(60), |l| l.contains("supervisor sup-"));
            assert!(started.is_some(), "supervisor {i} did not start\n{}", running.stderr_seen().join("\n"));
            cluster.supervisors.push(Some(running));
        }
        cluster.wait_until(LONG, "every supervisor registers", |c| c.supervisors_alive() == SUPERVISORS);
        cluster
    }

    /// The cluster file: the three seeds, etcd, and `extra` (a nimbus's or a supervisor's table).
    fn config_text(&self, extra: Option<&str>) -> String {
        let seeds: Vec<String> = self.seeds.iter().map(|s| format!("\"{s}\"")).collect();
        format!(
            "[cluster]\nsecret = \"{SECRET}\"\nnimbus = [{}]\ncoordination = \"{}\"\n\n{}\n",
            seeds.join(", "),
            self.etcd.url(),
            extra.unwrap_or("")
        )
    }

    fn start_nimbus(&mut self, i: usize) {
        let table = format!(
            "[nimbus]\nlisten = \"{}\"\nstate_dir = \"{}\"\nsupervisor_timeout_secs = {SUPERVISOR_TIMEOUT_SECS}\n\n\
             [ui]\nlisten = \"127.0.0.1:0\"\n",
            self.seeds[i],
            self.dir.join(format!("nimbus-{i}")).display()
        );
        let config = self.dir.write(&format!("nimbus-{i}.toml"), &self.config_text(Some(&table)));
        let mut running =
            self.dir.squall(["nimbus", "--config"]).arg(&config).timeout(Duration::from_secs(3600)).spawn();
        let listening =
            running.wait_for_stderr_line(Duration::from_secs(60), |l| l.contains("nimbus listening on"));
        assert!(listening.is_some(), "nimbus {i} did not listen\n{}", running.stderr_seen().join("\n"));
        self.nimbuses[i] = Some(running);
    }

    /// The seed that answers the API (the others answer 503 naming it).
    fn leader(&self) -> Option<usize> {
        (0..NIMBUSES).find(|&i| {
            self.nimbuses[i].is_some()
                && http_get(&self.seeds[i], "/v1/topologies", Some(SECRET))
                    .is_ok_and(|(status, _)| status == 200)
        })
    }

    fn supervisors_alive(&self) -> usize {
        let Some(leader) = self.leader() else { return 0 };
        let Ok((_, body)) = http_get(&self.seeds[leader], "/v1/supervisors", Some(SECRET)) else { return 0 };
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Array(items)) => items.iter().filter(|s| s["alive"] == true).count(),
            _ => 0,
        }
    }

    /// The artifacts in nimbus `n`'s state directory.
    fn artifacts_of(&self, n: usize) -> BTreeSet<String> {
        let dir = self.dir.join(format!("nimbus-{n}/artifacts"));
        let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Whether nimbus `i`'s state directory holds every artifact the leader's does.
    fn holds_the_artifacts(&self, i: usize, of: usize) -> bool {
        let wanted = self.artifacts_of(of);
        !wanted.is_empty() && wanted.is_subset(&self.artifacts_of(i))
    }

    /// kill -9 of nimbus `i`.
    fn kill_nimbus(&mut self, i: usize) {
        if let Some(n) = self.nimbuses[i].take() {
            n.kill_hard();
        }
    }

    /// kill -9 of supervisor `i` and of its workers.
    fn kill_supervisor_and_workers(&mut self, i: usize) {
        let Some(s) = self.supervisors[i].take() else { return };
        let workers = child_workers(s.pid());
        kill9(s.pid());
        let _ = s.wait_for_exit(Duration::from_secs(60));
        workers.into_iter().for_each(kill9);
    }

    fn squall<I, S>(&self, args: I) -> squall_tests::Squall
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.dir.squall(args).arg("--config").arg(self.dir.join("cluster.toml"))
    }

    #[track_caller]
    fn wait_until(&self, deadline: Duration, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let end = Instant::now() + deadline;
        while !done(self) {
            if Instant::now() > end {
                panic!("waited {deadline:?} in vain until {what}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        let mut out = format!("--- etcd\n{}\n", self.etcd.log_tail());
        for (i, n) in self.nimbuses.iter().enumerate() {
            if let Some(n) = n {
                out.push_str(&format!(
                    "--- nimbus {i} (stderr read so far)\n{}\n",
                    n.stderr_seen().join("\n")
                ));
            }
        }
        out
    }
}

/// A broker server with topic `in` (3 partitions, RECORDS records) and an empty `out`; the
/// topology file: in (log-spout) → flaky → out (log-sink), 2 workers.
fn pipeline(dir: &TempDir) -> (BrokerServer, PathBuf) {
    let data = dir.join("broker-data").display().to_string();
    let broker = BrokerServer::spawn(
        dir.squall(["broker", "--listen", "127.0.0.1:0", "--data-dir", &data]).env("SQUALL_SECRET", SECRET),
    );
    let addr = broker.addr().to_string();
    for topic in ["in", "out"] {
        dir.squall(["topic", "create", topic, "--partitions", "3", "--broker", &addr])
            .env("SQUALL_SECRET", SECRET)
            .run()
            .assert_success();
    }
    let count = RECORDS.to_string();
    dir.squall(["topic", "produce", "in", "--count", &count, "--size", "20", "--broker", &addr])
        .env("SQUALL_SECRET", SECRET)
        .run()
        .assert_success();
    let file = dir.topology("pipeline.toml", &log_flaky_pipeline(&addr, 2, 100));
    (broker, file)
}

fn describe(dir: &TempDir, broker: &str, topic: &str) -> Value {
    let out = dir
        .squall(["topic", "describe", topic, "--json", "--broker", broker])
        .env("SQUALL_SECRET", SECRET)
        .run();
    out.assert_success();
    serde_json::from_str(out.stdout.trim()).expect("describe --json prints JSON")
}

fn records_out(dir: &TempDir, broker: &str) -> u64 {
    let d = describe(dir, broker, "out");
    d["partitions"].as_array().map_or(0, |ps| ps.iter().filter_map(|p| p["high_watermark"].as_u64()).sum())
}

/// The group commits an offset only once every record below it was acked, and the sink acks a
/// record only once it is durable in `out`: lag 0 means every input is there.
fn all_committed(dir: &TempDir, broker: &str) -> bool {
    describe(dir, broker, "in")["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == "pipeline.in"))
        .is_some_and(|g| g["total_lag"] == 0 && g["lag"].as_array().is_some_and(|l| l.iter().all(|x| x == 0)))
}

/// Submits the pipeline, waits until it is under way and every nimbus holds its code, lets
/// `disrupt` do its worst, then checks it recovers: the CLI lists and kills it through the
/// seeds, and every record reached the sink.
fn run_pipeline_through(
    name: &str,
    disrupt: impl FnOnce(&mut HaCluster),
    afterwards: impl FnOnce(&HaCluster, &TempDir),
) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(name);
    let (broker, file) = pipeline(&dir);
    let addr = broker.addr().to_string();
    let mut cluster = HaCluster::start(&dir);
    let out = cluster.squall(["submit"]).arg(&file).run();
    out.assert_success();
    assert!(out.stdout.contains("submitted topology"), "{out}");
    let leader = cluster.leader().expect("a leader");
    cluster.wait_until(LONG, "every follower holds the topology's code", |c| {
        (0..NIMBUSES).filter(|&i| i != leader).all(|i| c.holds_the_artifacts(i, leader))
    });
    cluster.wait_until(LONG, "the pipeline is under way", |_| records_out(&dir, &addr) > 1000);

    disrupt(&mut cluster);

    cluster.wait_until(LONG, "`squall list` works through the seeds", |c| {
        let out = c.squall(["list", "--json"]).run();
        out.status.success()
            && serde_json::from_str::<Value>(out.stdout.trim())
                .is_ok_and(|v| v.as_array().is_some_and(|ts| ts.iter().any(|t| t["name"] == "pipeline")))
    });
    let status = cluster.squall(["status", "pipeline", "--json"]).run();
    status.assert_success();
    let listed = cluster.squall(["list"]).run();
    listed.assert_success();
    let leader = cluster.leader().map(|i| cluster.seeds[i].clone()).expect("a leader");
    assert!(listed.stdout.contains(&format!("nimbus leader: {leader}")), "{listed}");
    afterwards(&cluster, &dir);
    cluster
        .wait_until(RECOVERY, "the group has committed every input record", |_| all_committed(&dir, &addr));
    let out = cluster.squall(["kill", "pipeline", "--wait", "1"]).run();
    out.assert_success();
    assert!(out.stdout.contains("killed topology pipeline"), "{out}");
    // Leader and followers alike delete the killed topology's artifacts.
    cluster.wait_until(RECOVERY, "every running nimbus deleted the killed topology's artifacts", |c| {
        (0..NIMBUSES).filter(|&i| c.nimbuses[i].is_some()).all(|i| c.artifacts_of(i).is_empty())
    });
    drop(cluster);
    broker.stop().assert_success();
    assert_eq!(
        keys_missing(&dir.join("broker-data"), "out", RECORDS),
        0,
        "every input key is in the output topic"
    );
}

#[test]
fn a_killed_leader_is_replaced_within_ten_seconds_and_the_topology_loses_nothing() {
    run_pipeline_through(
        "nimbus-ha-leader",
        |cluster| {
            let leader = cluster.leader().expect("a leader");
            let killed = Instant::now();
            // The leader and a supervisor with its workers lost at once: the new leader moves its
            // work once the supervisor's grace is over.
            cluster.kill_nimbus(leader);
            cluster.kill_supervisor_and_workers(1);
            let mut new_leader = None;
            while new_leader.is_none() && killed.elapsed() < LONG {
                new_leader = cluster.leader();
                std::thread::sleep(Duration::from_millis(100));
            }
            let took = killed.elapsed();
            let new_leader = new_leader.unwrap_or_else(|| panic!("no nimbus leads\n{}", cluster.logs()));
            eprintln!("a new leader answered {took:?} after the leader was killed");
            assert_ne!(new_leader, leader);
            assert!(
                took <= Duration::from_secs(10),
                "a new leader answered only after {took:?}\n{}",
                cluster.logs()
            );
            let said = cluster.nimbuses[new_leader]
                .as_mut()
                .and_then(|n| n.wait_for_stderr_line(Duration::from_secs(30), |l| l.contains(" leading (")));
            assert!(said.is_some(), "the new leader says it leads\n{}", cluster.logs());
        },
        |cluster, dir| {
            // Rebalance and submit through the seeds too, on the new leader.
            let out = cluster.squall(["rebalance", "pipeline", "--workers", "2", "--wait", "1"]).run();
            out.assert_success();
            let second = dir.topology(
                "second.toml",
                "name = \"second\"\nworkers = 1\n\n[[spouts]]\nid = \"numbers\"\nkind = \"sequence\"\n\
             config = { count = 10, rate = 0 }\n\n[[bolts]]\nid = \"flaky\"\nkind = \"flaky\"\n\
             inputs = [{ from = \"numbers\", grouping = \"shuffle\" }]\nconfig = { fail_fraction = 0.0 }\n",
            );
            let out = cluster.squall(["submit"]).arg(&second).run();
            out.assert_success();
            let out = cluster.squall(["kill", "second", "--wait", "0"]).run();
            out.assert_success();
        },
    );
}

#[test]
fn etcd_killed_and_restarted_mid_run_the_cluster_recovers_and_loses_nothing() {
    run_pipeline_through(
        "nimbus-ha-etcd",
        |cluster| {
            let leader = cluster.leader().expect("a leader");
            cluster.etcd.kill();
            // Longer than the leader's lease: the leader steps down and the election starts anew.
            let stepped_down = cluster.nimbuses[leader].as_mut().and_then(|n| {
                n.wait_for_stderr_line(Duration::from_secs(60), |l| l.contains(" no longer leads: "))
            });
            assert!(stepped_down.is_some(), "the leader steps down without etcd\n{}", cluster.logs());
            cluster.etcd.restart().unwrap_or_else(|e| panic!("{e}"));
            cluster.wait_until(LONG, "a nimbus leads again", |c| c.leader().is_some());
        },
        |_, _| {},
    );
}
