//! Cluster mode end to end: one `squall nimbus`, two `squall supervisor`s and their worker
//! processes on 127.0.0.1, driven with the CLI as a user would. The topology is
//! sequence → flaky (fails 10% of first attempts) → file-sink, so every number must reach the
//! sink file at least once whatever is killed on the way.
//!
//! The tests take a lock and run one at a time: each starts a handful of processes, and a
//! loaded 2-core machine serves them better one cluster at a time.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use squall_tests::cluster::{
    alive, hello_and_batches, http_get, http_get_raw, keys_missing, kill9, log_flaky_pipeline, numbers_in,
    signed_get_header, worker_ports, Cluster, SECRET,
};
use squall_tests::{BrokerServer, TempDir};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const LONG: Duration = Duration::from_secs(180);
/// For recovery that rides on replays after a worker's kill -9: it took 60 to 130 s alone on a
/// quiet 2-core machine (the release binaries before and after the crate split alike), and
/// over 180 s once under load.
const RECOVERY: Duration = Duration::from_secs(480);

/// sequence(count, rate) → flaky → file-sink(out), over `workers` workers.
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
id = "flaky"
kind = "flaky"
parallelism = 2
inputs = [{{ from = "numbers", grouping = "shuffle" }}]
config = {{ fail_fraction = 0.1, seed = 7, first_attempt_only = true }}

[[bolts]]
id = "sink"
kind = "file-sink"
parallelism = 2
inputs = [{{ from = "flaky", grouping = "shuffle" }}]
config = {{ path = "{}" }}
"#,
            out.display()
        ),
    )
}

fn all_numbers(count: u64) -> BTreeSet<u64> {
    (0..count).collect()
}

#[track_caller]
fn submit(cluster: &Cluster, file: &Path) {
    let out = cluster.squall(["submit"]).arg(file).run();
    out.assert_success();
    assert!(out.stdout.contains("submitted topology"), "{out}");
}

#[track_caller]
fn wait_for_every_number(cluster: &Cluster, out: &Path, count: u64) {
    cluster.wait_until(LONG, &format!("every number below {count} is in the sink"), |_| {
        numbers_in(out).len() as u64 == count
    });
    assert_eq!(numbers_in(out), all_numbers(count));
}

#[track_caller]
fn kill_topology(cluster: &Cluster, name: &str) {
    let out = cluster.squall(["kill", name, "--wait", "1"]).run();
    out.assert_success();
    assert!(out.stdout.contains(&format!("killed topology {name}")), "{out}");
}

#[test]
fn numbers_reach_the_sink_across_workers_and_kill_removes_everything() {
    let _serial = serial();
    let dir = TempDir::new("cluster-basic");
    let cluster = Cluster::start(&dir, 2, 2);
    let out = dir.join("out.jsonl");
    submit(&cluster, &numbers_topology(&dir, "numbers", 3000, 1000, 3, &out));

    let listed = cluster.listed("numbers").expect("the topology is listed");
    assert_eq!(listed["status"], "active", "{listed}");
    assert_eq!(listed["workers"], 3, "three workers over two supervisors: {listed}");
    cluster.wait_until(LONG, "three worker processes run, spread over both supervisors", |c| {
        c.worker_pids().len() == 3 && !c.workers_of(0).is_empty() && !c.workers_of(1).is_empty()
    });
    wait_for_every_number(&cluster, &out, 3000);

    // Figures are summed over the workers.
    cluster.wait_until(LONG, "status shows the spout's acks summed over workers", |c| {
        c.status("numbers").is_some_and(|s| s["components"]["numbers"]["acked"].as_u64() >= Some(3000))
    });
    let status = cluster.status("numbers").expect("status");
    assert_eq!(status["components"]["flaky"]["tasks"], 2, "{status}");
    assert!(status["components"]["flaky"]["failed"].as_u64() > Some(0), "flaky failed some: {status}");
    // The spout's failed trees are put down to flaky, across workers.
    let failed_by = status["components"]["numbers"]["failed_by"].as_array().cloned().unwrap_or_default();
    let by_flaky = failed_by.iter().find(|f| f["component"] == "flaky" && f["cause"] == "failed");
    assert!(by_flaky.is_some_and(|f| f["count"].as_u64() > Some(0)), "{status}");

    // A name that is running is refused.
    let again = cluster.squall(["submit"]).arg(dir.join("numbers.toml")).run();
    again.assert_failure();
    assert!(again.stderr.contains("numbers") && again.stderr.lines().count() == 1, "{again}");

    let workers = cluster.worker_pids();
    let stores = ["nimbus/artifacts", "sup-0/artifacts", "sup-1/artifacts"].map(|d| dir.join(d));
    for store in &stores {
        assert_eq!(artifacts_in(store).len(), 1, "the topology's executable is in {}", store.display());
    }
    kill_topology(&cluster, "numbers");
    assert!(cluster.listed("numbers").is_none(), "killed topologies are not listed");
    cluster.wait_until(LONG, "every worker process of the killed topology has ended", |_| {
        workers.iter().all(|&w| !alive(w))
    });
    assert!(cluster.worker_pids().is_empty());
    // No topology refers to its artifact any more: nimbus and both supervisors delete it.
    cluster.wait_until(LONG, "the killed topology's artifact is deleted everywhere", |_| {
        stores.iter().all(|store| artifacts_in(store).is_empty())
    });
}

/// The artifacts (files named by a sha256) in `store`.
fn artifacts_in(store: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(store) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

#[test]
fn a_worker_killed_with_kill_9_is_restarted_and_nothing_is_lost() {
    let _serial = serial();
    let dir = TempDir::new("cluster-worker");
    let cluster = Cluster::start(&dir, 2, 2);
    let out = dir.join("out.jsonl");
    submit(&cluster, &numbers_topology(&dir, "numbers", 6000, 600, 2, &out));
    cluster.wait_until(LONG, "some numbers reach the sink", |_| numbers_in(&out).len() > 500);

    let before = cluster.worker_pids();
    assert_eq!(before.len(), 2, "two workers");
    let victim = before[0];
    kill9(victim);
    cluster.wait_until(LONG, "the supervisor starts a new worker in place of the killed one", |c| {
        let now = c.worker_pids();
        now.len() == 2 && !now.contains(&victim)
    });
    wait_for_every_number(&cluster, &out, 6000);
    kill_topology(&cluster, "numbers");
}

#[test]
fn a_lost_supervisor_has_its_work_moved_and_nothing_is_lost() {
    let _serial = serial();
    let dir = TempDir::new("cluster-supervisor");
    let mut cluster = Cluster::start(&dir, 2, 2);
    let out = dir.join("out.jsonl");
    submit(&cluster, &numbers_topology(&dir, "numbers", 6000, 600, 2, &out));
    cluster.wait_until(LONG, "a worker runs on each supervisor", |c| {
        c.workers_of(0).len() == 1 && c.workers_of(1).len() == 1
    });
    cluster.wait_until(LONG, "some numbers reach the sink", |_| numbers_in(&out).len() > 500);
    let version = cluster.listed("numbers").expect("listed")["version"].as_u64();

    assert_eq!(cluster.kill_supervisor_and_workers(1), 1, "supervisor 1 ran one worker");
    cluster.wait_until(LONG, "nimbus moves the lost supervisor's work to the other one", |c| {
        c.listed("numbers").is_some_and(|t| t["version"].as_u64() > version) && c.workers_of(0).len() == 2
    });
    wait_for_every_number(&cluster, &out, 6000);
    kill_topology(&cluster, "numbers");
}

#[test]
fn rebalance_to_more_workers_and_parallelism_loses_nothing() {
    let _serial = serial();
    let dir = TempDir::new("cluster-rebalance");
    let cluster = Cluster::start(&dir, 2, 3);
    let out = dir.join("out.jsonl");
    submit(&cluster, &numbers_topology(&dir, "numbers", 8000, 800, 1, &out));
    cluster.wait_until(LONG, "some numbers reach the sink", |_| numbers_in(&out).len() > 500);
    assert_eq!(cluster.worker_pids().len(), 1);

    let out_rebalance = cluster
        .squall(["rebalance", "numbers", "--workers", "3", "--parallelism", "flaky=4", "--wait", "1"])
        .run();
    out_rebalance.assert_success();
    assert!(out_rebalance.stdout.contains("rebalanced topology numbers: 3 workers"), "{out_rebalance}");
    assert!(
        out_rebalance.stderr.contains("waiting up to 1s for in-flight tuples to drain"),
        "{out_rebalance}"
    );
    cluster.wait_until(LONG, "three workers run after the rebalance", |c| c.worker_pids().len() == 3);
    // More workers than slots: it says it got fewer than asked, and why.
    let out_rebalance = cluster.squall(["rebalance", "numbers", "--workers", "9", "--wait", "1"]).run();
    out_rebalance.assert_success();
    assert!(
        out_rebalance
            .stdout
            .contains("rebalanced topology numbers: 6 workers (asked for 9; only 6 slots free"),
        "{out_rebalance}"
    );
    cluster.wait_until(LONG, "six workers run after the second rebalance", |c| c.worker_pids().len() == 6);
    cluster.wait_until(LONG, "status shows flaky with 4 tasks", |c| {
        c.status("numbers").is_some_and(|s| s["components"]["flaky"]["tasks"] == 4)
    });
    wait_for_every_number(&cluster, &out, 8000);

    // Bad rebalances are refused with one line, and change nothing.
    for (args, says) in [
        (vec!["--parallelism", "nosuch=2"], "nosuch"),
        (vec!["--parallelism", "flaky=0"], "flaky=0"),
        (vec!["--workers", "0"], "at least 1 worker"),
    ] {
        let bad = cluster.squall(["rebalance", "numbers"]).arg(args[0]).arg(args[1]).run();
        bad.assert_failure();
        assert!(bad.stderr.contains(says) && bad.stderr.trim().lines().count() == 1, "{bad}");
    }
    kill_topology(&cluster, "numbers");
}

#[test]
fn a_nimbus_restart_keeps_the_topology_listed_and_running() {
    let _serial = serial();
    let dir = TempDir::new("cluster-nimbus");
    let mut cluster = Cluster::start(&dir, 2, 2);
    let out = dir.join("out.jsonl");
    submit(&cluster, &numbers_topology(&dir, "numbers", 6000, 500, 2, &out));
    cluster.wait_until(LONG, "some numbers reach the sink", |_| numbers_in(&out).len() > 300);
    let workers = cluster.worker_pids();

    cluster.kill_nimbus();
    let seen = numbers_in(&out).len();
    cluster.wait_until(LONG, "the topology keeps running without nimbus", |_| {
        numbers_in(&out).len() > seen + 300
    });

    cluster.start_nimbus();
    let listed = cluster.listed("numbers").expect("a restarted nimbus lists the topology");
    assert_eq!(listed["status"], "active", "{listed}");
    wait_for_every_number(&cluster, &out, 6000);
    assert_eq!(cluster.worker_pids(), workers, "the same workers ran throughout");

    let rebalanced = cluster.squall(["rebalance", "numbers", "--workers", "3", "--wait", "0"]).run();
    rebalanced.assert_success();
    kill_topology(&cluster, "numbers");
    cluster.wait_until(LONG, "no worker runs after the kill", |c| c.worker_pids().is_empty());
}

#[test]
fn requests_not_signed_with_the_secret_or_replayed_are_refused() {
    let _serial = serial();
    let dir = TempDir::new("cluster-secret");
    let cluster = Cluster::start(&dir, 1, 1);
    let (status, body) = http_get(cluster.nimbus_addr(), "/v1/topologies", None).expect("nimbus answers");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("secret"), "{body}");
    let (status, _) = http_get(cluster.nimbus_addr(), "/v1/topologies", Some("wrong")).expect("answers");
    assert_eq!(status, 401);
    let (status, _) = http_get(cluster.nimbus_addr(), "/v1/topologies", Some(SECRET)).expect("answers");
    assert_eq!(status, 200);
    // The secret in clear, as clients before signatures sent it, is refused.
    let clear = format!("x-squall-secret: {SECRET}\r\n");
    let (status, body) = http_get_raw(cluster.nimbus_addr(), "/v1/topologies", &clear).expect("answers");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no longer accepted"), "{body}");
    // A signed request sent twice: the second is a replay.
    let signed = signed_get_header(SECRET, "/v1/topologies");
    let (status, _) = http_get_raw(cluster.nimbus_addr(), "/v1/topologies", &signed).expect("answers");
    assert_eq!(status, 200);
    let (status, body) = http_get_raw(cluster.nimbus_addr(), "/v1/topologies", &signed).expect("answers");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("replayed"), "{body}");
    // Signed for another path.
    let (status, body) =
        http_get_raw(cluster.nimbus_addr(), "/v1/supervisors", &signed_get_header(SECRET, "/v1/topologies"))
            .expect("answers");
    assert_eq!(status, 401, "{body}");

    let wrong = dir.write(
        "wrong.toml",
        &format!("[cluster]\nsecret = \"not-it\"\nnimbus = \"{}\"\n", cluster.nimbus_addr()),
    );
    let out = squall_tests::Squall::new(["list", "--config"]).arg(&wrong).run();
    out.assert_failure();
    assert!(out.stderr.contains("secret") && out.stderr.trim().lines().count() == 1, "{out}");
    let topology = numbers_topology(&dir, "numbers", 10, 0, 1, &dir.join("out.jsonl"));
    let out = squall_tests::Squall::new(["submit"]).arg(&topology).arg("--config").arg(&wrong).run();
    out.assert_failure();
    assert!(cluster.list().is_empty(), "nothing was submitted");
}

#[test]
fn log_pipeline_across_workers_loses_nothing_when_a_worker_is_killed() {
    let _serial = serial();
    let dir = TempDir::new("cluster-log");
    // The broker, its workers' clients and the CLI share the cluster's secret.
    let data = dir.join("broker-data").display().to_string();
    let broker = BrokerServer::spawn(
        dir.squall(["broker", "--listen", "127.0.0.1:0", "--data-dir", &data]).env("SQUALL_SECRET", SECRET),
    );
    let addr = broker.addr().to_string();
    let records = 20_000u64;
    for topic in ["in", "out"] {
        dir.squall(["topic", "create", topic, "--partitions", "3", "--broker", &addr])
            .env("SQUALL_SECRET", SECRET)
            .run()
            .assert_success();
    }
    dir.squall([
        "topic",
        "produce",
        "in",
        "--count",
        &records.to_string(),
        "--size",
        "20",
        "--broker",
        &addr,
    ])
    .env("SQUALL_SECRET", SECRET)
    .run()
    .assert_success();
    let cluster = Cluster::start(&dir, 2, 2);
    let file = dir.topology("pipeline.toml", &log_flaky_pipeline(&addr, 3, 200));
    submit(&cluster, &file);
    let describe = |topic: &str| -> serde_json::Value {
        let out = dir
            .squall(["topic", "describe", topic, "--json", "--broker", &addr])
            .env("SQUALL_SECRET", SECRET)
            .run();
        out.assert_success();
        serde_json::from_str(out.stdout.trim()).expect("describe --json prints JSON")
    };
    let records_out = || -> u64 {
        let d = describe("out");
        d["partitions"]
            .as_array()
            .map_or(0, |ps| ps.iter().filter_map(|p| p["high_watermark"].as_u64()).sum())
    };
    cluster.wait_until(LONG, "the pipeline is under way", |_| records_out() > 1000);
    let victim = cluster.worker_pids()[0];
    kill9(victim);
    // The group commits an offset only once every record below it was acked, and the sink
    // acks a record only once it is durable in `out`: lag 0 means every input is there.
    cluster.wait_until(RECOVERY, "the group has committed every input record", |_| {
        describe("in")["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["group"] == "pipeline.in"))
            .is_some_and(|g| {
                g["total_lag"] == 0 && g["lag"].as_array().is_some_and(|l| l.iter().all(|x| x == 0))
            })
    });
    kill_topology(&cluster, "pipeline");
    drop(cluster);
    broker.stop().assert_success();

    let missing = keys_missing(&dir.join("broker-data"), "out", records);
    assert_eq!(missing, 0, "every input key is in the output topic");
}

/// Sends `bytes` to `addr` after answering the challenge with `secret` (none: sends them as
/// the answer), and returns everything the worker sent back until it closed the connection.
fn knock(addr: &str, secret: Option<&str>, bytes: &[u8]) -> Vec<u8> {
    use squall_engine::auth;
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the worker's port accepts");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut seen = Vec::new();
    if let Some(secret) = secret {
        let mut challenge = [0u8; 40];
        stream.read_exact(&mut challenge).expect("a challenge");
        seen.extend_from_slice(&challenge);
        let c = [9u8; auth::NONCE_LEN];
        let proof = auth::connector_proof(&auth::Secret::new(secret), auth::WORKER, &challenge[8..], &c);
        stream.write_all(&c).unwrap();
        stream.write_all(&proof).unwrap();
    }
    let _ = stream.write_all(bytes);
    let _ = stream.read_to_end(&mut seen);
    seen
}

#[test]
fn a_stranger_on_a_workers_port_gets_nothing_delivered_and_the_worker_stays_up() {
    let _serial = serial();
    let dir = TempDir::new("cluster-stranger");
    let cluster = Cluster::start(&dir, 1, 2);
    let out = dir.join("out.jsonl");
    submit(&cluster, &numbers_topology(&dir, "numbers", 200, 200, 2, &out));
    wait_for_every_number(&cluster, &out, 200);
    let version = cluster.listed("numbers").expect("listed")["version"].as_u64().expect("a version");
    let workers = cluster.worker_pids();
    let ports = worker_ports(&dir, 0);
    assert_eq!(ports.len(), 2, "two workers said where they listen: {ports:?}");

    let intruding = hello_and_batches("numbers", version, 999_999);
    for addr in &ports {
        // No handshake: the hello and batches are taken as a (wrong) answer to the challenge.
        let seen = knock(addr, None, &intruding);
        assert!(seen.len() <= 41 && seen.starts_with(b"SQAUTH1\n"), "{addr} sent {seen:?}");
        // A wrong secret: refused before any frame is read.
        let seen = knock(addr, Some("not-the-secret"), &intruding);
        assert!(seen.len() <= 41, "{addr} sent more than a refusal: {seen:?}");
    }
    // Nothing of theirs reached the sink, and the workers are the same processes, up.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(numbers_in(&out), all_numbers(200), "the strangers' tuple (999999) was never delivered");
    assert_eq!(cluster.worker_pids(), workers);
    assert!(workers.iter().all(|&w| alive(w)));
    let logs = cluster.logs();
    assert!(logs.contains("closed the connection from") && logs.contains("unread"), "{logs}");
    kill_topology(&cluster, "numbers");
}

#[test]
fn the_default_secret_is_refused_off_loopback_and_warned_about_on_it() {
    let dir = TempDir::new("cluster-default-secret");
    let refusals = [
        ("nimbus.toml", "[cluster]\nnimbus = \"0.0.0.0:0\"\n[ui]\nlisten = \"127.0.0.1:0\"\n", "nimbus"),
        ("ui.toml", "[cluster]\nnimbus = \"127.0.0.1:0\"\n[ui]\nlisten = \"0.0.0.0:0\"\n", "nimbus"),
        (
            "supervisor.toml",
            "[cluster]\nnimbus = \"127.0.0.1:9\"\n[supervisor]\nhost = \"0.0.0.0\"\n",
            "supervisor",
        ),
    ];
    for (file, text, verb) in refusals {
        let config = dir.write(file, text);
        let out = dir.squall([verb, "--config"]).arg(&config).env_remove("SQUALL_SECRET").run();
        out.assert_failure();
        let err = out.stderr.trim();
        assert!(
            err.lines().count() == 1 && err.contains("[cluster] secret") && err.contains("SQUALL_SECRET"),
            "{out}"
        );
    }
    let out = dir
        .squall(["broker", "--listen", "0.0.0.0:0", "--data-dir", "data"])
        .env_remove("SQUALL_SECRET")
        .run();
    out.assert_failure();
    assert!(out.stderr.trim().lines().count() == 1 && out.stderr.contains("[cluster] secret"), "{out}");

    // On loopback, it starts with a warning.
    let config = dir.write(
        "loopback.toml",
        &format!("[cluster]\nnimbus = \"127.0.0.1:0\"\n[nimbus]\nstate_dir = \"{}\"\n[ui]\nlisten = \"127.0.0.1:0\"\n", dir.join("state").display()),
    );
    let mut nimbus = dir.squall(["nimbus", "--config"]).arg(&config).env_remove("SQUALL_SECRET").spawn();
    let listening =
        nimbus.wait_for_stderr_line(Duration::from_secs(60), |l| l.contains("nimbus listening on "));
    assert!(listening.is_some(), "{:?}", nimbus.stderr_seen());
    assert!(
        nimbus.stderr_seen().iter().any(|l| l.contains("warning") && l.contains("change-me")),
        "{:?}",
        nimbus.stderr_seen()
    );
}
