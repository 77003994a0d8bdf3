//! The state backends' contract, against every backend as users run it: memory, the log
//! (embedded in a directory, and through a real `squall broker` server), and Redis (a real
//! `redis-server`, installed once if needed); `squall state dump` with the real binary; and
//! `squall local` runs of `state-count` whose counts the dump then shows.
//!
//! The contract (squall_api::state): prepared changes are invisible until their checkpoint is
//! committed; a commit applies what the tasks it names prepared, all or nothing; commits apply
//! in order (a later one wins, a deletion deletes); ids never committed are never seen; a
//! durable backend keeps the committed state and the last commit across a new instance over
//! the same storage, and across a kill -9 of the server that holds it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use squall_api::state::{checkpoint_id, decode, encode};
use squall_api::{Change, Committed, MemoryBackend, Participant, StateBackend};
use squall_broker::log::Log;
use squall_broker::{Broker, LogBackend};
use squall_redis::RedisBackend;
use squall_testkit::redis::Redis;
use squall_tests::cluster::kill9;
use squall_tests::{BrokerServer, TempDir};

type Entries = Vec<(String, u64)>;

fn set(key: &str, value: u64) -> Change {
    Change { key: encode(key).unwrap(), value: Some(encode(&value).unwrap()) }
}

fn delete(key: &str) -> Change {
    Change { key: encode(key).unwrap(), value: None }
}

fn task(component: &str, task: u32) -> Participant {
    Participant { component: component.to_string(), task }
}

async fn load(backend: &dyn StateBackend, component: &str) -> Entries {
    let mut entries: Entries = backend
        .load(component)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (decode(&k).unwrap(), decode(&v).unwrap()))
        .collect();
    entries.sort();
    entries
}

fn entries(pairs: &[(&str, u64)]) -> Entries {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

const RUN: u32 = 0xabcd;

/// What every backend must do, on a fresh topology's storage. `reopen` drops nothing itself:
/// the caller's backend is dropped before it is called, so a backend that locks its storage
/// can be opened again.
async fn contract(backend: Arc<dyn StateBackend>, reopen: impl FnOnce() -> Arc<dyn StateBackend>) {
    let id = |seq| checkpoint_id(seq, RUN);
    assert_eq!(backend.last_committed().await.unwrap(), None, "a fresh topology has no checkpoint");
    assert!(load(&*backend, "count").await.is_empty());

    // Prepared, not committed: invisible.
    backend.prepare("count", 0, id(1), &[set("a", 1), set("b", 1)]).await.unwrap();
    backend.prepare("count", 1, id(1), &[set("x", 1)]).await.unwrap();
    backend.prepare("other", 0, id(1), &[set("o", 1)]).await.unwrap();
    assert!(load(&*backend, "count").await.is_empty(), "prepared changes are invisible");
    assert_eq!(backend.last_committed().await.unwrap(), None);

    // Commit: every named task's changes, and the meta.
    let all = [task("count", 0), task("count", 1), task("other", 0)];
    backend.commit(id(1), &all, b"m1").await.unwrap();
    assert_eq!(load(&*backend, "count").await, entries(&[("a", 1), ("b", 1), ("x", 1)]));
    assert_eq!(load(&*backend, "other").await, entries(&[("o", 1)]));
    assert_eq!(backend.last_committed().await.unwrap(), Some(Committed { id: id(1), meta: b"m1".to_vec() }));

    // A later commit wins, a deletion deletes, a task the commit does not name is not applied.
    backend.prepare("count", 0, id(2), &[set("a", 2), delete("b")]).await.unwrap();
    backend.prepare("count", 1, id(2), &[set("x", 99)]).await.unwrap();
    backend.prepare("other", 0, id(2), &[set("o", 99)]).await.unwrap();
    backend.commit(id(2), &[task("count", 0)], b"m2").await.unwrap();
    assert_eq!(load(&*backend, "count").await, entries(&[("a", 2), ("x", 1)]));
    assert_eq!(load(&*backend, "other").await, entries(&[("o", 1)]), "other/0 was not named");

    // An id never committed is never seen, not even once a later one is.
    backend.prepare("count", 0, id(3), &[set("a", 300)]).await.unwrap();
    backend.prepare("count", 0, id(4), &[set("x", 4)]).await.unwrap();
    backend.commit(id(4), &[task("count", 0)], b"m4").await.unwrap();
    assert_eq!(load(&*backend, "count").await, entries(&[("a", 2), ("x", 4)]));

    // A prepare larger than one record of the log (split into several) commits whole.
    let big: Vec<Change> = (0..1200)
        .map(|i| Change {
            key: encode(&format!("big{i:04}")).unwrap(),
            value: Some(encode(&vec![i as u8; 8 << 10]).unwrap()),
        })
        .collect();
    backend.prepare("blobs", 0, id(5), &big).await.unwrap();
    backend.commit(id(5), &[task("blobs", 0)], b"m5").await.unwrap();
    let blobs = backend.load("blobs").await.unwrap();
    assert_eq!(blobs.len(), 1200);
    for (k, v) in blobs {
        let i: usize = decode::<String>(&k).unwrap()[3..].parse().unwrap();
        assert_eq!(decode::<Vec<u8>>(&v).unwrap(), vec![i as u8; 8 << 10]);
    }

    // What a restart sees.
    let expected_last = Some(Committed { id: id(5), meta: b"m5".to_vec() });
    assert_eq!(backend.last_committed().await.unwrap(), expected_last);
    let durable = backend.durable();
    drop(backend);
    let again = reopen();
    if durable {
        assert_eq!(again.last_committed().await.unwrap(), expected_last, "the last commit survives");
        assert_eq!(load(&*again, "count").await, entries(&[("a", 2), ("x", 4)]), "the state survives");
        assert_eq!(again.load("blobs").await.unwrap().len(), 1200);
    }
    // And it goes on from there.
    again.prepare("count", 0, checkpoint_id(1, RUN + 1), &[set("a", 7)]).await.unwrap();
    again.commit(checkpoint_id(1, RUN + 1), &[task("count", 0)], b"n1").await.unwrap();
    assert_eq!(load(&*again, "count").await, entries(&[("a", 7), ("x", 4)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_keeps_the_contract_within_its_process() {
    let backend = MemoryBackend::new();
    let same = backend.clone();
    contract(Arc::new(backend), move || Arc::new(same)).await;
}

fn embedded(data: &Path, topology: &str) -> Arc<dyn StateBackend> {
    let log = Log::open(data).unwrap();
    Arc::new(LogBackend::with_broker(Broker::Embedded(log), topology).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_backend_on_the_embedded_log_keeps_the_contract_and_its_state_across_reopening() {
    let dir = TempDir::new("state-log");
    let data = dir.join("data");
    contract(embedded(&data, "wc"), || embedded(&data, "wc")).await;
    // Another topology of the same log has its own state.
    let other = embedded(&data, "wc2");
    assert_eq!(other.last_committed().await.unwrap(), None);
    assert!(other.load("count").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_backend_that_snapshots_after_every_commit_keeps_the_contract() {
    let dir = TempDir::new("state-log-snapshots");
    let data = dir.join("data");
    let open = || -> Arc<dyn StateBackend> {
        let backend = LogBackend::with_broker(Broker::Embedded(Log::open(&data).unwrap()), "wc").unwrap();
        Arc::new(backend.snapshot_every(1))
    };
    contract(open(), open).await;
    let log = Log::open(&data).unwrap();
    let snapshots = log.describe("squall-state.wc.snapshots").unwrap();
    assert!(snapshots.partitions[0].high_watermark > 0, "snapshots were written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_backend_through_a_broker_server_survives_its_kill_9() {
    let dir = TempDir::new("state-log-server");
    let data = dir.join("data");
    let mut server = BrokerServer::start(&dir, &data);
    let addr = server.addr().to_string();
    let backend: Arc<dyn StateBackend> = Arc::new(LogBackend::open(&addr, "wc").unwrap());
    let reopen = || {
        // kill -9 the server, start it again where it was, and open a new backend.
        kill9(server.running().pid());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !server.running().has_exited() {
            assert!(std::time::Instant::now() < deadline, "the broker outlived kill -9");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(std::mem::replace(&mut server, BrokerServer::start_on(&dir, &data, &addr)));
        Arc::new(LogBackend::open(&addr, "wc").unwrap()) as Arc<dyn StateBackend>
    };
    contract(backend, reopen).await;
    assert!(!server.running().has_exited());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_keeps_the_contract_and_survives_a_kill_9_of_redis() {
    let mut redis = Redis::start().unwrap_or_else(|e| panic!("{e}"));
    let url = redis.url();
    let backend: Arc<dyn StateBackend> = Arc::new(RedisBackend::open(&url, "wc").unwrap());
    let reopen = || {
        redis.restart().unwrap_or_else(|e| panic!("{e}"));
        Arc::new(RedisBackend::open(&url, "wc").unwrap()) as Arc<dyn StateBackend>
    };
    contract(backend, reopen).await;
    // Other topologies' keys are their own, and nothing prepared is left behind.
    let other = RedisBackend::open(&url, "wc2").unwrap();
    assert_eq!(other.last_committed().await.unwrap(), None);
    let keys = redis_keys(redis.port());
    assert!(keys.iter().all(|k| k.starts_with("squall:{wc}:")), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.contains(":prepared:")),
        "committed and rolled-back prepares are dropped: {keys:?}"
    );
}

/// `KEYS *` over a plain connection (RESP), as redis-cli would.
fn redis_keys(port: u16) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"KEYS *\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let n: usize = line.trim_end().strip_prefix('*').unwrap().parse().unwrap();
    (0..n)
        .map(|_| {
            line.clear();
            reader.read_line(&mut line).unwrap(); // $len
            line.clear();
            reader.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        })
        .collect()
}

// --- `squall state dump`, with the real binary.

const TOPOLOGY: &str = r#"
name = "wc"

[settings]
guarantee = "at_least_once"
state = { backend = "BACKEND", checkpoint_interval_ms = 500 EXTRA }

[[spouts]]
id = "words"
kind = "random-word"

[[bolts]]
id = "count"
kind = "state-count"
config = { key = "word" }
inputs = [{ from = "words", grouping = { fields = ["word"] } }]
"#;

fn topology(dir: &TempDir, backend: &str, extra: &str) -> std::path::PathBuf {
    dir.topology("wc.toml", &TOPOLOGY.replace("BACKEND", backend).replace("EXTRA", extra))
}

/// Two committed checkpoints of `count` (the second deletes a key) and one never committed.
async fn populate(backend: &dyn StateBackend) {
    let id = |seq| checkpoint_id(seq, RUN);
    backend.prepare("count", 0, id(1), &[set("cow", 2), set("moon", 1), set("the", 5)]).await.unwrap();
    backend.commit(id(1), &[task("count", 0)], b"offsets").await.unwrap();
    backend.prepare("count", 1, id(2), &[set("jumped", 1), delete("moon")]).await.unwrap();
    backend.prepare("count", 0, id(2), &[set("cow", 3)]).await.unwrap();
    backend.commit(id(2), &[task("count", 0), task("count", 1)], b"offsets").await.unwrap();
    backend.prepare("count", 0, id(3), &[set("cow", 1000)]).await.unwrap();
}

const PRETTY: &str = "{\n  \"cow\": 3,\n  \"jumped\": 1,\n  \"the\": 5\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dump_prints_the_committed_state_of_the_log_backend() {
    let dir = TempDir::new("state-dump");
    let file = topology(&dir, "log", "");
    {
        let backend = embedded(&dir.join("data"), "wc");
        populate(&*backend).await;
    }
    let out = dir.squall(["state", "dump", "wc.toml", "count", "--data-dir", "data"]).run();
    out.assert_success();
    assert_eq!(out.stdout, PRETTY, "sorted, pretty, committed changes only\n{out}");
    let last = out.stderr_lines().last().copied().unwrap_or_default().to_string();
    let id = checkpoint_id(2, RUN);
    assert!(last.starts_with(&format!("count: 3 keys as of checkpoint {id} committed in ")), "{out}");
    assert!(last.contains("squall-state.wc"), "{out}");

    let out = dir.squall(["state", "dump", "wc.toml", "count", "--json", "--data-dir", "data"]).run();
    out.assert_success();
    assert_eq!(out.stdout, "{\"cow\":3,\"jumped\":1,\"the\":5}\n", "{out}");

    // SQUALL_DATA_DIR works as --data-dir does; an empty log has nothing committed yet.
    let out =
        dir.squall(["state", "dump", "wc.toml", "count", "--json"]).env("SQUALL_DATA_DIR", "data").run();
    out.assert_success();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    let out = dir.squall(["state", "dump", file.to_str().unwrap(), "count", "--data-dir", "empty"]).run();
    out.assert_success();
    assert_eq!(out.stdout, "{}\n");
    assert!(
        out.stderr
            .trim_end()
            .ends_with("no checkpoint committed yet in topic squall-state.wc of the embedded log in empty"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dump_reads_the_log_backend_through_a_broker_server() {
    let dir = TempDir::new("state-dump-server");
    let server = BrokerServer::start(&dir, &dir.join("data"));
    topology(&dir, "log", &format!(", broker = \"{}\"", server.addr()));
    populate(&LogBackend::open(server.addr(), "wc").unwrap()).await;
    let out = dir.squall(["state", "dump", "wc.toml", "count"]).run();
    out.assert_success();
    assert_eq!(out.stdout, PRETTY, "{out}");
    let expected = format!("committed in topic squall-state.wc of the broker at {}", server.addr());
    assert!(out.stderr.trim_end().ends_with(&expected), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dump_reads_the_redis_backend() {
    let redis = Redis::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new("state-dump-redis");
    topology(&dir, "redis", &format!(", url = \"{}\"", redis.url()));
    populate(&RedisBackend::open(&redis.url(), "wc").unwrap()).await;
    let out = dir.squall(["state", "dump", "wc.toml", "count"]).run();
    out.assert_success();
    assert_eq!(out.stdout, PRETTY, "{out}");
    assert!(out.stderr.contains(&format!("committed in redis at {}", redis.url())), "{out}");
}

#[test]
fn state_dump_refuses_plainly() {
    let dir = TempDir::new("state-dump-errors");
    let one_line_error = |args: &[&str], expected: &str| {
        let out = dir.squall(args).run();
        out.assert_failure();
        assert!(out.stdout.is_empty(), "{out}");
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "one line\n{out}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(expected), "{expected:?}\n{out}");
    };
    topology(&dir, "memory", "");
    one_line_error(&["state", "dump", "wc.toml", "count"], "memory backend, which keeps nothing after a run");
    topology(&dir, "log", "");
    one_line_error(
        &["state", "dump", "wc.toml", "counter", "--data-dir", "data"],
        "topology wc has no component \"counter\"; its stateful components: count",
    );
    one_line_error(
        &["state", "dump", "wc.toml", "words", "--data-dir", "data"],
        "\"words\" of topology wc is a random-word (not a stateful bolt)",
    );
    topology(&dir, "nosuch", "");
    one_line_error(&["state", "dump", "wc.toml", "count"], "unknown backend \"nosuch\"");
    topology(&dir, "redis", "");
    one_line_error(&["state", "dump", "wc.toml", "count"], "needs `url`");
    topology(&dir, "log", ", url = \"redis://127.0.0.1:1\"");
    one_line_error(&["state", "dump", "wc.toml", "count"], "takes `broker`");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    topology(&dir, "redis", &format!(", url = \"redis://127.0.0.1:{port}\""));
    one_line_error(&["state", "dump", "wc.toml", "count"], &format!("redis at redis://127.0.0.1:{port}"));
    // A record of the state topic that is not one: an error naming its place, never data.
    topology(&dir, "log", "");
    let log = Log::open(&dir.join("data")).unwrap();
    log.create_topic("squall-state.wc", squall_broker::TopicConfig::new(1)).unwrap();
    let garbage = squall_broker::NewRecord {
        key: Some(bytes::Bytes::from_static(b"commit")),
        value: bytes::Bytes::from_static(b"\xc1\xc1"),
        timestamp: None,
    };
    log.append("squall-state.wc", 0, &[garbage]).unwrap();
    log.flush().unwrap();
    drop(log);
    one_line_error(
        &["state", "dump", "wc.toml", "count", "--data-dir", "data"],
        "squall-state.wc` offset 0: bad commit record",
    );
    dir.write("bad.toml", "name = \"wc\"\n[[spouts]]\nid = \"w\"\nkind = \"nope\"\n");
    one_line_error(&["state", "dump", "bad.toml", "count"], "bad.toml:");
    one_line_error(&["state", "dump", "missing.toml", "count"], "missing.toml");
}

// --- `squall local` runs that keep their counts, then `squall state dump`.

const COUNTED: u64 = 3000;

/// Runs `state-count` over the numbers 0..COUNTED twice, with the state in `state`, and
/// checks that the dump shows every number counted twice.
fn two_runs_then_dump(dir: &TempDir, state: &str) {
    let file = format!(
        r#"
name = "runs"

[settings]
state = {{ {state}, checkpoint_interval_ms = 100 }}

[[spouts]]
id = "numbers"
kind = "sequence"
config = {{ count = {COUNTED} }}

[[bolts]]
id = "count"
kind = "state-count"
parallelism = 2
config = {{ key = "n" }}
inputs = [{{ from = "numbers", grouping = {{ fields = ["n"] }} }}]
"#
    );
    dir.topology("runs.toml", &file);
    for run in 1..=2u64 {
        dir.squall(["local", "runs.toml", "--data-dir", "data"]).run().assert_success();
        let out = dir.squall(["state", "dump", "runs.toml", "count", "--json", "--data-dir", "data"]).run();
        out.assert_success();
        let counts: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(counts.len() as u64, COUNTED, "{out}");
        for n in 0..COUNTED {
            assert_eq!(counts.get(&n.to_string()).and_then(|c| c.as_u64()), Some(run), "{n} after run {run}");
        }
    }
}

#[test]
fn local_runs_keep_their_counts_in_the_log_backend_and_state_dump_shows_them() {
    let dir = TempDir::new("state-runs-log");
    two_runs_then_dump(&dir, r#"backend = "log""#);
}

#[test]
fn local_runs_keep_their_counts_in_redis_and_state_dump_shows_them() {
    let redis = Redis::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new("state-runs-redis");
    two_runs_then_dump(&dir, &format!(r#"backend = "redis", url = "{}""#, redis.url()));
}
