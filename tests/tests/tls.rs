//! `[cluster] tls` end to end: a nimbus, supervisors, their workers and a `squall broker` with
//! certificates made at test time (a CA, a certificate for 127.0.0.1 it signs; a stranger's
//! CA and certificate), driven with the CLI as a user would.
//!
//! - A TLS cluster counts words exactly as a local run of the same topology does, across
//!   worker processes (worker links over TLS); `squall list`, `status` and `top` work over
//!   TLS; the UI port answers the REST API over HTTPS to a client with a certificate.
//! - Plain TCP, or TLS with a certificate of another CA, to a worker port, nimbus's API or
//!   the UI is refused during the handshake: nothing is delivered, the refusal is logged.
//! - `squall broker` with TLS: `squall topic create/produce/tail --broker` with the cluster
//!   file's tls work; a stranger's produce is refused and stores nothing.
//!
//! The cluster tests take a lock and run one at a time, as the other cluster tests do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use squall_engine::tls::TlsFiles;
use squall_tests::cluster::{hello_and_batches, http_get, worker_ports, Cluster, SECRET};
use squall_tests::tls::{https_get, load, tls_knock, toml_line, Certs};
use squall_tests::{read_json_lines, BrokerServer, TempDir};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const LONG: Duration = Duration::from_secs(240);
const SENTENCES: u64 = 1500;

/// config/wordcount.toml's topology (sentences → split → count), `SENTENCES` sentences with
/// its seed, over three workers, with the counts written to `out` by a file-sink.
fn wordcount(dir: &TempDir, name: &str, out: &Path) -> PathBuf {
    dir.topology(
        &format!("{name}.toml"),
        &format!(
            r#"
name = "{name}"
workers = 3

[settings]
acking = true
ackers = 1
message_timeout_secs = 60
max_spout_pending = 200

[[spouts]]
id = "sentences"
kind = "random-sentence"
config = {{ rate = 0, limit = {SENTENCES}, seed = 42 }}

[[bolts]]
id = "split"
kind = "split-sentence"
parallelism = 2
inputs = [{{ from = "sentences", grouping = "shuffle" }}]

[[bolts]]
id = "count"
kind = "word-count"
parallelism = 2
inputs = [{{ from = "split", stream = "default", grouping = {{ fields = ["word"] }} }}]

[[bolts]]
id = "sink"
kind = "file-sink"
inputs = [{{ from = "count", grouping = "shuffle" }}]
config = {{ path = "{}" }}
"#,
            out.display()
        ),
    )
}

/// Every word's final count in a file-sink's output (its highest count); empty if no file.
fn counts(out: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    if !out.exists() {
        return counts;
    }
    for row in read_json_lines(out) {
        let (Some(word), Some(count)) = (row["word"].as_str(), row["count"].as_u64()) else { continue };
        let best = counts.entry(word.to_string()).or_insert(0);
        *best = (*best).max(count);
    }
    counts
}

/// The counts a local run of the same topology makes.
fn local_counts(dir: &TempDir) -> BTreeMap<String, u64> {
    let out = dir.join("local.jsonl");
    let file = wordcount(dir, "wordcount-local", &out);
    dir.squall(["local"]).arg(&file).timeout(LONG).run().assert_success();
    let counts = counts(&out);
    assert!(counts.values().sum::<u64>() > SENTENCES, "the local run counted words: {counts:?}");
    counts
}

#[test]
fn a_tls_cluster_counts_words_like_a_local_run_and_its_cli_and_https_ui_work() {
    let _serial = serial();
    let dir = TempDir::new("tls-wordcount");
    let certs = Certs::make(dir.path());
    let expected = local_counts(&dir);
    let cluster = Cluster::start_with_tls(&dir, 2, 2, Some(certs.cluster.clone()));
    let out = dir.join("out.jsonl");
    let submitted = cluster.squall(["submit"]).arg(wordcount(&dir, "wordcount", &out)).run();
    submitted.assert_success();
    cluster.wait_until(LONG, "three worker processes run, spread over both supervisors", |c| {
        c.worker_pids().len() == 3 && !c.workers_of(0).is_empty() && !c.workers_of(1).is_empty()
    });
    cluster
        .wait_until(LONG, "every word is counted as the local run counted it", |_| counts(&out) == expected);

    // The CLI over TLS.
    let listed = cluster.listed("wordcount").expect("the topology is listed");
    assert_eq!(listed["status"], "active", "{listed}");
    cluster.wait_until(LONG, "status shows every sentence acked", |c| {
        c.status("wordcount")
            .is_some_and(|s| s["components"]["sentences"]["acked"].as_u64() >= Some(SENTENCES))
    });
    let top = cluster.squall(["top", "wordcount", "--once", "--ui", cluster.ui_addr()]).run();
    top.assert_success();
    assert!(top.stdout.contains("count"), "{top}");

    // The UI port: HTTPS with a certificate of the cluster's CA.
    let (status, body) =
        https_get(cluster.ui_addr(), "/api/v1/cluster/summary", &load(&certs.cluster), "").expect("HTTPS");
    assert_eq!(status, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(summary["supervisors"], 2, "{summary}");
    assert_eq!(summary["topologies"], 1, "{summary}");

    let killed = cluster.squall(["kill", "wordcount", "--wait", "1"]).run();
    killed.assert_success();
}

/// A cluster file like the cluster's own, with `tls` instead.
fn client_config(dir: &TempDir, cluster: &Cluster, name: &str, tls: &TlsFiles) -> PathBuf {
    let text = format!(
        "[cluster]\nsecret = \"{SECRET}\"\nnimbus = \"{}\"\n{}",
        cluster.nimbus_addr(),
        toml_line(tls)
    );
    dir.write(name, &text)
}

#[test]
fn plain_tcp_and_certificates_of_another_ca_are_refused_everywhere_and_nothing_is_delivered() {
    let _serial = serial();
    let dir = TempDir::new("tls-strangers");
    let certs = Certs::make(dir.path());
    let cluster = Cluster::start_with_tls(&dir, 1, 3, Some(certs.cluster.clone()));
    let out = dir.join("out.jsonl");
    cluster.squall(["submit"]).arg(wordcount(&dir, "wordcount", &out)).run().assert_success();
    cluster.wait_until(LONG, "every sentence is acked", |c| {
        c.status("wordcount")
            .is_some_and(|s| s["components"]["sentences"]["acked"].as_u64() >= Some(SENTENCES))
    });
    let before = std::fs::read_to_string(&out).expect("the sink's file");
    let workers = cluster.worker_pids();
    let ports = worker_ports(&dir, 0);
    assert_eq!(ports.len(), 3, "three workers said where they listen: {ports:?}");
    let version = cluster.listed("wordcount").expect("listed")["version"].as_u64().expect("a version");
    let intruding = hello_and_batches("wordcount", version, 999_999);

    let (impostor, stranger) = (load(&certs.impostor), load(&certs.stranger));
    for addr in &ports {
        // Plain TCP: the worker waits for a TLS hello and never sends its challenge.
        let seen = knock_plain(addr, &intruding);
        assert!(
            !seen.windows(7).any(|w| w == b"SQAUTH1"),
            "{addr} sent its challenge over plain TCP: {seen:?}"
        );
        // A certificate of another CA: the worker refuses it in the handshake.
        if let Ok(seen) = tls_knock(addr, &impostor, &intruding) {
            assert!(seen.is_empty(), "{addr} answered a stranger: {seen:?}");
        }
        // A client that does not trust the cluster's CA refuses the worker itself.
        let refused = tls_knock(addr, &stranger, &intruding)
            .expect_err("the worker's certificate is not the stranger's CA's");
        assert!(refused.starts_with("TLS handshake with 127.0.0.1:"), "{refused}");
    }
    let logs = cluster.logs();
    assert!(logs.contains("refused a connection: TLS handshake with 127.0.0.1:"), "{logs}");

    // Nimbus's API and the UI: plain HTTP gets no HTTP answer; another CA's certificate
    // neither.
    for addr in [cluster.nimbus_addr(), cluster.ui_addr()] {
        let plain = http_get(addr, "/api/v1/cluster/summary", Some(SECRET));
        assert!(!matches!(plain, Ok((s, _)) if s != 0), "{addr} answered plain HTTP: {plain:?}");
        let foreign = https_get(addr, "/api/v1/cluster/summary", &impostor, "");
        assert!(foreign.is_err(), "{addr} answered a stranger's certificate: {foreign:?}");
    }
    // The CLI with another CA's certificate: one line, non-zero exit.
    let config = client_config(&dir, &cluster, "stranger.toml", &certs.impostor);
    let listed = dir.squall(["list", "--config"]).arg(&config).run();
    listed.assert_failure();
    assert_eq!(listed.stderr.trim().lines().count(), 1, "{listed}");
    assert!(listed.stderr.contains("cannot reach nimbus"), "{listed}");

    // Nothing reached the sink, and the workers are the same processes.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(&out).expect("the sink's file"), before);
    assert_eq!(cluster.worker_pids(), workers);
    cluster.squall(["kill", "wordcount", "--wait", "1"]).run().assert_success();
}

/// Sends `bytes` to `addr` over plain TCP and returns what came back until it closed.
fn knock_plain(addr: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the port accepts");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = stream.write_all(bytes);
    let mut seen = Vec::new();
    let _ = stream.read_to_end(&mut seen);
    seen
}

/// A directory whose config/cluster.toml has the secret and `tls`, as the topic verbs read it.
fn broker_dir(label: &str, certs: impl FnOnce(&Path) -> TlsFiles) -> TempDir {
    let dir = TempDir::new(label);
    let tls = certs(dir.path());
    std::fs::create_dir_all(dir.join("config")).unwrap();
    dir.write("config/cluster.toml", &format!("[cluster]\nsecret = \"{SECRET}\"\n{}", toml_line(&tls)));
    dir
}

#[test]
fn a_tls_broker_serves_the_topic_verbs_and_refuses_strangers() {
    let mut made = None;
    let dir = broker_dir("tls-broker", |d| {
        let certs = Certs::make(d);
        let files = certs.cluster.clone();
        made = Some(certs);
        files
    });
    let certs = made.expect("certificates");
    let data = dir.join("data");
    let server = BrokerServer::spawn(
        dir.squall(["broker", "--config", "config/cluster.toml", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env_remove("SQUALL_SECRET"),
    );
    let addr = server.addr().to_string();
    let topic = |verb: &[&str], d: &TempDir| {
        let args =
            ["topic"].iter().chain(verb).chain(&["--broker", addr.as_str()]).copied().collect::<Vec<_>>();
        d.squall(args).env_remove("SQUALL_SECRET")
    };

    topic(&["create", "t"], &dir).run().assert_success();
    topic(&["produce", "t"], &dir).stdin("one\ntwo\nthree\n").run().assert_success();

    // A stranger: another CA's certificate (trusting the cluster's CA), the same secret.
    let stranger = broker_dir("tls-broker-stranger", |d| {
        std::fs::copy(&certs.impostor.cert, d.join("cert.pem")).unwrap();
        std::fs::copy(&certs.impostor.key, d.join("key.pem")).unwrap();
        std::fs::copy(&certs.impostor.ca, d.join("ca.pem")).unwrap();
        TlsFiles { cert: d.join("cert.pem"), key: d.join("key.pem"), ca: d.join("ca.pem") }
    });
    let refused = topic(&["produce", "t"], &stranger).stdin("intruder\n").run();
    refused.assert_failure();
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused}");
    // Plain TCP: never challenged, nothing read.
    let seen = knock_plain(&addr, b"SQAUTH1\nplain bytes");
    assert!(
        !seen.windows(7).any(|w| w == b"SQAUTH1"),
        "the broker sent its challenge over plain TCP: {seen:?}"
    );

    let tail = topic(&["tail", "t", "--from-beginning", "--count", "3"], &dir).run();
    tail.assert_success();
    assert_eq!(tail.stdout.lines().collect::<Vec<_>>(), ["one", "two", "three"], "{tail}");
    let described = topic(&["describe", "t", "--json"], &dir).run();
    described.assert_success();
    assert!(!described.stdout.contains("intruder"));
    let json: serde_json::Value = serde_json::from_str(described.stdout.trim()).expect("JSON");
    assert_eq!(json["partitions"][0]["high_watermark"], 3, "three records, none of the stranger's: {json}");

    let mut server = server;
    let stderr = server.running().stderr_seen().join("\n");
    let stopped = server.stop();
    let all = format!("{stderr}\n{}", stopped.stderr);
    assert!(all.contains("TLS handshake with 127.0.0.1:"), "the broker logged the refusals: {all}");
}

#[test]
fn a_missing_certificate_file_stops_every_daemon_at_startup_with_one_line() {
    let dir = TempDir::new("tls-missing");
    let certs = Certs::make(dir.path());
    let missing = TlsFiles { key: dir.join("nowhere.key"), ..certs.cluster.clone() };
    let text = format!(
        "[cluster]\nsecret = \"{SECRET}\"\nnimbus = \"127.0.0.1:0\"\n{}\n[ui]\nlisten = \"127.0.0.1:0\"\n\n\
         [nimbus]\nstate_dir = \"{}\"\n\n[supervisor]\ndata_dir = \"{}\"\nslots = [0]\n",
        toml_line(&missing),
        dir.join("nimbus").display(),
        dir.join("sup").display()
    );
    let config = dir.write("cluster.toml", &text);
    for verb in [&["nimbus"][..], &["supervisor"], &["broker", "--listen", "127.0.0.1:0"]] {
        let out = dir.squall(verb).arg("--config").arg(&config).run();
        out.assert_failure();
        let line = out.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{out}");
        assert!(line.contains("[cluster] tls key = ") && line.contains("nowhere.key"), "{out}");
    }
}
