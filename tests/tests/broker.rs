//! `squall broker` and `squall topic …`, run as a user runs them: the real binary, against a
//! server (`--broker ADDR`) and against an embedded data directory (`--data-dir DIR`).
//!
//! Pins: create/produce/tail/describe work the same both ways; the generator's records are
//! keyed by their number and land in `partition_for_key`'s partition, stdin lines become
//! records (keyed with --key-separator); `tail --json` shows partition, offset, key, value and
//! timestamp, and follows new records; `describe` shows high watermarks, group offsets and
//! lag; every bad request is a one-line `error: …` with a non-zero status and the server goes
//! on serving; garbage, malformed and oversized frames close (at most) their own connection;
//! a RemoteClient outlives a server restart; `squall broker` takes its defaults from the
//! cluster file's [broker] table and stops cleanly on SIGINT.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use squall_broker::partitioner::partition_for_key;
use squall_broker::protocol::{Op, Reply, Request, Response, MAX_FRAME};
use squall_broker::remote::RemoteClient;
use squall_broker::{BrokerError, NewRecord};
use squall_engine::frame;
use squall_tests::{BrokerServer, Outcome, TempDir};

/// Deadline for anything the tests wait on: far beyond what a healthy run needs, even on a
/// loaded two-core machine with a debug build.
const DEADLINE: Duration = Duration::from_secs(60);

/// How a `topic` verb reaches the log: `--broker ADDR` or `--data-dir DIR`.
#[derive(Clone)]
struct Target(Vec<String>);

impl Target {
    fn server(server: &BrokerServer) -> Target {
        Target(vec!["--broker".into(), server.addr().into()])
    }

    fn embedded(dir: &Path) -> Target {
        Target(vec!["--data-dir".into(), dir.display().to_string()])
    }
}

/// `squall topic ARGS… TARGET` in `dir`, to its end.
fn topic(dir: &TempDir, target: &Target, args: &[&str]) -> Outcome {
    topic_with_stdin(dir, target, args, None)
}

fn topic_with_stdin(dir: &TempDir, target: &Target, args: &[&str], stdin: Option<&[u8]>) -> Outcome {
    let mut all: Vec<String> = vec!["topic".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(target.0.iter().cloned());
    let mut command = dir.squall(all).env_remove("SQUALL_DATA_DIR").timeout(DEADLINE);
    if let Some(input) = stdin {
        command = command.stdin(input);
    }
    command.run()
}

/// Checks stderr shows no sign of a panic or a backtrace.
#[track_caller]
fn assert_no_panic(outcome: &Outcome) {
    for sign in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!outcome.stderr.contains(sign), "{sign:?} on stderr\n{outcome}");
    }
}

/// Checks the command failed with exactly one line on stderr, `error: …` containing `what`.
#[track_caller]
fn assert_error(outcome: &Outcome, what: &str) {
    outcome.assert_failure();
    assert_no_panic(outcome);
    let lines = outcome.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr\n{outcome}");
    assert!(lines[0].starts_with("error: "), "an `error: ` line\n{outcome}");
    assert!(lines[0].contains(what), "{what:?} in the error\n{outcome}");
}

/// Stdout lines parsed as JSON objects.
#[track_caller]
fn json_lines(outcome: &Outcome) -> Vec<Value> {
    outcome
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}\n{outcome}"))
        })
        .collect()
}

#[track_caller]
fn describe_json(dir: &TempDir, target: &Target, name: &str) -> Value {
    let out = topic(dir, target, &["describe", name, "--json"]);
    out.assert_success();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("describe --json: {e}\n{out}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

/// The whole round: create, generate, read back, describe, stdin lines.
fn create_produce_tail_describe(dir: &TempDir, target: &Target) {
    let out = topic(dir, target, &["create", "orders", "--partitions", "3"]);
    out.assert_success();
    assert!(out.stdout.contains("created topic orders with 3 partitions"), "{out}");
    let out = topic(dir, target, &["list"]);
    out.assert_success();
    assert_eq!(out.stdout, "orders\n");

    // The generator: keys 0..999, 64-byte printable values, partitioned by key.
    let out = topic(dir, target, &["produce", "orders", "--count", "1000", "--size", "64"]);
    out.assert_success();
    assert!(out.stderr.contains("produced 1000 records to 3 partitions of orders"), "{out}");

    let info = describe_json(dir, target, "orders");
    assert_eq!(info["name"], "orders");
    assert_eq!(info["config"]["partitions"], 3);
    let partitions = info["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3);
    let mut total = 0;
    for p in partitions {
        let hw = p["high_watermark"].as_u64().expect("a high watermark");
        assert_eq!(p["durable"].as_u64(), Some(hw), "all durable once produce ends: {info}");
        assert_eq!(p["log_start"], 0);
        assert!(hw > 200, "keys spread over the partitions: {info}");
        total += hw;
    }
    assert_eq!(total, 1000, "{info}");

    let out = topic(dir, target, &["tail", "orders", "--from-beginning", "--count", "1000", "--json"]);
    out.assert_success();
    let records = json_lines(&out);
    assert_eq!(records.len(), 1000, "{out}");
    let mut keys = BTreeSet::new();
    let mut offsets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for r in &records {
        let key = r["key"].as_str().expect("a text key");
        let n: u64 = key.parse().expect("the record number");
        let partition = r["partition"].as_u64().expect("a partition");
        assert_eq!(partition, u64::from(partition_for_key(key.as_bytes(), 3)), "{r}");
        let value = r["value"].as_str().expect("a text value");
        assert_eq!(value.len(), 64, "{r}");
        assert!(value.starts_with(&format!("{n} ")), "{r}");
        assert!(value.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{r}");
        assert!(r["timestamp"].as_i64().expect("a timestamp") > 1_600_000_000_000, "{r}");
        offsets.entry(partition).or_default().push(r["offset"].as_u64().expect("an offset"));
        keys.insert(n);
    }
    assert_eq!(keys, (0..1000).collect::<BTreeSet<u64>>());
    for (p, mut offs) in offsets {
        offs.sort_unstable();
        let hw = partitions[p as usize]["high_watermark"].as_u64().unwrap();
        assert_eq!(offs, (0..hw).collect::<Vec<_>>(), "dense offsets in partition {p}");
    }

    // Stdin lines, one record each, no key; then keyed ones.
    let out = topic(dir, target, &["create", "lines", "--partitions", "1", "--fsync", "always"]);
    out.assert_success();
    let stdin = b"first line\nsecond, with \xff\xfe bytes\r\n\nlast without newline";
    let out = topic_with_stdin(dir, target, &["produce", "lines"], Some(stdin));
    out.assert_success();
    assert!(out.stderr.contains("produced 4 records"), "{out}");
    let out = topic_with_stdin(
        dir,
        target,
        &["produce", "lines", "--key-separator", "::"],
        Some(b"k1::v1\nk2::v::2\n"),
    );
    out.assert_success();
    let out = topic(dir, target, &["tail", "lines", "--from-beginning", "--count", "6", "--json"]);
    out.assert_success();
    let got: Vec<(Value, Value, Value)> = json_lines(&out)
        .into_iter()
        .map(|r| (r["offset"].clone(), r["key"].clone(), r["value"].clone()))
        .collect();
    let expected: Vec<(Value, Value, Value)> = vec![
        (0.into(), Value::Null, "first line".into()),
        (1.into(), Value::Null, "second, with \u{fffd}\u{fffd} bytes".into()),
        (2.into(), Value::Null, "".into()),
        (3.into(), Value::Null, "last without newline".into()),
        (4.into(), "k1".into(), "v1".into()),
        (5.into(), "k2".into(), "v::2".into()),
    ];
    assert_eq!(got, expected, "{out}");
    // Without --json: the values, one per line.
    let out = topic(dir, target, &["tail", "lines", "--from-beginning", "--count", "2"]);
    out.assert_success();
    assert_eq!(out.stdout, "first line\nsecond, with \u{fffd}\u{fffd} bytes\n");

    // Describe as text.
    let out = topic(dir, target, &["describe", "orders"]);
    out.assert_success();
    assert!(out.stdout.starts_with("topic orders: 3 partitions"), "{out}");
    assert!(out.stdout.contains("high watermark"), "{out}");
}

#[test]
fn topic_verbs_against_a_server() {
    let dir = TempDir::new("broker-server");
    let server = BrokerServer::start(&dir, &dir.join("data"));
    create_produce_tail_describe(&dir, &Target::server(&server));
    let out = server.stop();
    out.assert_success();
    assert!(out.stderr.contains("squall broker: stopped"), "{out}");
    assert_no_panic(&out);
    // What the server stored is the embedded log of its directory.
    let info = describe_json(&dir, &Target::embedded(&dir.join("data")), "orders");
    let total: u64 =
        info["partitions"].as_array().unwrap().iter().map(|p| p["high_watermark"].as_u64().unwrap()).sum();
    assert_eq!(total, 1000, "{info}");
}

#[test]
fn topic_verbs_against_an_embedded_data_dir() {
    let dir = TempDir::new("broker-embedded");
    create_produce_tail_describe(&dir, &Target::embedded(&dir.join("data")));
    // $SQUALL_DATA_DIR is the default directory.
    let out = dir.squall(["topic", "list"]).env("SQUALL_DATA_DIR", dir.join("data")).timeout(DEADLINE).run();
    out.assert_success();
    assert_eq!(out.stdout, "lines\norders\n");
}

#[test]
fn tail_follows_new_records() {
    let dir = TempDir::new("broker-follow");
    let server = BrokerServer::start(&dir, &dir.join("data"));
    let target = Target::server(&server);
    topic(&dir, &target, &["create", "events", "--partitions", "2"]).assert_success();
    topic_with_stdin(&dir, &target, &["produce", "events"], Some(b"old\n")).assert_success();

    // From the end: only records produced after the tail started.
    let mut args: Vec<String> =
        ["topic", "tail", "events", "--count", "3", "--json"].map(String::from).to_vec();
    args.extend(target.0.iter().cloned());
    let mut tail = dir.squall(args).timeout(DEADLINE).spawn();
    // The tail starts at the end it sees first; produce until it has had three records.
    let started = Instant::now();
    let mut produced = 0;
    let outcome = loop {
        assert!(started.elapsed() < DEADLINE, "tail did not get 3 records within {DEADLINE:?}");
        let line = format!("new {produced}\n");
        topic_with_stdin(&dir, &target, &["produce", "events"], Some(line.as_bytes())).assert_success();
        produced += 1;
        std::thread::sleep(Duration::from_millis(200));
        if tail.has_exited() {
            break tail.wait_for_exit(DEADLINE);
        }
    };
    outcome.assert_success();
    let records = json_lines(&outcome);
    assert_eq!(records.len(), 3, "{outcome}");
    for r in &records {
        let value = r["value"].as_str().unwrap();
        assert!(value.starts_with("new "), "only new records: {outcome}");
        assert_eq!(r["key"], Value::Null);
        for field in ["partition", "offset", "timestamp"] {
            assert!(r[field].is_u64(), "{field} in {r}");
        }
    }
}

#[test]
fn describe_shows_group_offsets_and_lag() {
    let dir = TempDir::new("broker-lag");
    let server = BrokerServer::start(&dir, &dir.join("data"));
    let target = Target::server(&server);
    topic(&dir, &target, &["create", "clicks", "--partitions", "2"]).assert_success();
    topic(&dir, &target, &["produce", "clicks", "--count", "500"]).assert_success();
    let info = describe_json(&dir, &target, "clicks");
    let hw: Vec<u64> = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .collect();
    assert_eq!(hw.iter().sum::<u64>(), 500);

    let rt = runtime();
    rt.block_on(async {
        let client = RemoteClient::connect(server.addr()).await.expect("connects");
        client.commit("billing", "clicks", 0, 10).await.expect("commit");
        client.commit("billing", "clicks", 1, hw[1]).await.expect("commit");
        client.commit("audit", "clicks", 1, 1).await.expect("commit");
        assert_eq!(client.committed("billing", "clicks").await.unwrap(), [Some(10), Some(hw[1])]);
    });

    let info = describe_json(&dir, &target, "clicks");
    let groups = info["groups"].as_array().expect("groups");
    let group =
        |name: &str| groups.iter().find(|g| g["group"] == name).unwrap_or_else(|| panic!("{name}: {info}"));
    let billing = group("billing");
    assert_eq!(billing["offsets"], serde_json::json!([10, hw[1]]));
    assert_eq!(billing["lag"], serde_json::json!([hw[0] - 10, 0]));
    assert_eq!(billing["total_lag"], hw[0] - 10);
    let audit = group("audit");
    assert_eq!(audit["offsets"], serde_json::json!([null, 1]));
    assert_eq!(audit["lag"], serde_json::json!([null, hw[1] - 1]));
    assert_eq!(audit["total_lag"], hw[1] - 1);

    let out = topic(&dir, &target, &["describe", "clicks"]);
    out.assert_success();
    assert!(out.stdout.contains(&format!("group billing: total lag {}", hw[0] - 10)), "{out}");
    assert!(out.stdout.contains(&format!("group audit: total lag {}", hw[1] - 1)), "{out}");
}

/// Every bad request: a one-line error, a non-zero status; then the log still works.
fn bad_requests(dir: &TempDir, target: &Target) {
    topic(dir, target, &["create", "real", "--partitions", "2"]).assert_success();
    topic(dir, target, &["produce", "real", "--count", "10"]).assert_success();

    assert_error(&topic(dir, target, &["describe", "ghost"]), "unknown topic `ghost`");
    assert_error(&topic(dir, target, &["tail", "ghost", "--count", "1"]), "unknown topic `ghost`");
    assert_error(
        &topic_with_stdin(dir, target, &["produce", "ghost"], Some(b"x\n")),
        "unknown topic `ghost`",
    );
    assert_error(&topic(dir, target, &["produce", "ghost", "--count", "5"]), "unknown topic `ghost`");
    assert_error(&topic(dir, target, &["create", "real"]), "topic `real` already exists");
    assert_error(&topic(dir, target, &["create", "no spaces"]), "invalid topic name `no spaces`");
    assert_error(&topic(dir, target, &["create", "a/b"]), "invalid topic name `a/b`");
    assert_error(
        &topic(dir, target, &["tail", "real", "--partition", "7", "--count", "1"]),
        "topic `real` has no partition 7 (it has 2)",
    );
    assert_error(
        &topic(dir, target, &["tail", "real", "--partition", "0", "--offset", "1000", "--count", "1"]),
        "offset 1000 of `real`/0 is beyond the end",
    );

    // Still serving.
    topic(dir, target, &["produce", "real", "--count", "10"]).assert_success();
    let out = topic(dir, target, &["tail", "real", "--from-beginning", "--count", "20"]);
    out.assert_success();
    assert_eq!(out.stdout.lines().count(), 20, "{out}");
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let dir = TempDir::new("broker-bad");
    let server = BrokerServer::start(&dir, &dir.join("data"));
    bad_requests(&dir, &Target::server(&server));

    // The server's directory is its own: the embedded log cannot open it meanwhile.
    let out = topic(&dir, &Target::embedded(&dir.join("data")), &["list"]);
    assert_error(&out, "is in use by another process");

    // Bad requests over the wire, from a client of the library.
    let rt = runtime();
    rt.block_on(async {
        let client = RemoteClient::connect(server.addr()).await.expect("connects");
        let err = client.fetch("real", 0, 1_000_000, 1024, Duration::ZERO).await.unwrap_err();
        assert!(err.to_string().contains("beyond the end"), "{err}");
        let err = client.fetch("real", 9, 0, 1024, Duration::ZERO).await.unwrap_err();
        assert!(err.to_string().contains("has no partition 9"), "{err}");
        let err = client.commit("bad group!", "real", 0, 0).await.unwrap_err();
        assert!(err.to_string().contains("invalid group name"), "{err}");
        let record = NewRecord { key: None, value: bytes::Bytes::from_static(b"x"), timestamp: None };
        let err = client.produce("real", 2, vec![record]).await.unwrap().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("has no partition 2"), "{err}");
        // The same client goes on.
        assert_eq!(client.topics().await.unwrap(), ["real"]);
    });

    let out = server.stop();
    out.assert_success();
    assert_no_panic(&out);
}

#[test]
fn bad_requests_get_clear_errors_in_an_embedded_data_dir() {
    let dir = TempDir::new("broker-bad-embedded");
    bad_requests(&dir, &Target::embedded(&dir.join("data")));
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let dir = TempDir::new("broker-unreachable");
    // A port nothing listens on: bind one, then let it go.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = topic(&dir, &Target(vec!["--broker".into(), addr.clone()]), &["list"]);
    assert_error(&out, &format!("broker {addr}: cannot connect"));
}

/// A raw connection to the server, reading with a deadline, past the handshake with the
/// secret the servers of these tests have: `$SQUALL_SECRET`, else the default.
fn raw(addr: &str) -> TcpStream {
    use squall_engine::auth;
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut challenge = [0u8; 40];
    stream.read_exact(&mut challenge).expect("a challenge");
    let c = [7u8; auth::NONCE_LEN];
    let secret = std::env::var("SQUALL_SECRET").ok().filter(|s| !s.is_empty());
    let secret = auth::Secret::new(secret.as_deref().unwrap_or(auth::DEFAULT_SECRET));
    stream.write_all(&c).unwrap();
    stream.write_all(&auth::connector_proof(&secret, auth::BROKER, &challenge[8..], &c)).unwrap();
    let mut answer = [0u8; 1 + auth::TAG_LEN];
    stream.read_exact(&mut answer).expect("the server's proof");
    assert!(answer[0] == 1 && auth::check_acceptor(&secret, auth::BROKER, &challenge[8..], &c, &answer[1..]));
    stream
}

/// Reads one response frame; None at the end of the stream.
fn read_response(stream: &mut TcpStream) -> Option<Response> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return None
        }
        Err(e) => panic!("reading a response: {e}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut body).expect("a whole response");
    Some(frame::decode(&body).expect("a response"))
}

/// Reads until the server closes the connection (or resets it).
fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected the server to close the connection: {e}"),
    }
}

fn request(id: u64, op: Op) -> Vec<u8> {
    frame::encode(&Request { id, op }, MAX_FRAME).unwrap()
}

#[test]
fn garbage_and_oversized_frames_do_not_hurt_the_server() {
    let dir = TempDir::new("broker-garbage");
    let server = BrokerServer::start(&dir, &dir.join("data"));
    let target = Target::server(&server);
    topic(&dir, &target, &["create", "t"]).assert_success();

    // A client that connects and says nothing, for the whole test: it holds up no one.
    let _silent = raw(server.addr());

    // A frame whose body is not a request: an error under id 0, and the connection goes on.
    let mut conn = raw(server.addr());
    conn.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).unwrap();
    let response = read_response(&mut conn).expect("an error response");
    assert_eq!(response.id, 0);
    let err = response.result.expect_err("an error");
    assert!(err.message.contains("malformed request"), "{err:?}");
    // A request with an id but an unknown operation: the error carries its id.
    let mut body = vec![0x92, 0x2a, 0xa8];
    body.extend_from_slice(b"NoSuchOp");
    let mut bad = (body.len() as u32).to_be_bytes().to_vec();
    bad.extend_from_slice(&body);
    conn.write_all(&bad).unwrap();
    let response = read_response(&mut conn).expect("an error response");
    assert_eq!(response.id, 42);
    assert!(response.result.is_err());
    // Same connection, a good request.
    conn.write_all(&request(7, Op::Topics)).unwrap();
    let response = read_response(&mut conn).expect("a response");
    assert_eq!(response.id, 7);
    assert_eq!(response.result, Ok(Reply::Topics(vec!["t".into()])));

    // Not our protocol at all: its first bytes read as a huge length.
    let mut http = raw(server.addr());
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let response = read_response(&mut http).expect("an error before the close");
    assert!(response.result.unwrap_err().message.contains("over the limit"));
    assert_closed(&mut http);

    // An explicit oversized length.
    let mut big = raw(server.addr());
    big.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes()).unwrap();
    let response = read_response(&mut big).expect("an error before the close");
    let message = response.result.unwrap_err().message;
    assert!(message.contains("over the limit") && message.contains("closing the connection"), "{message}");
    assert_closed(&mut big);

    // A frame cut short by the client closing its side.
    let mut cut = raw(server.addr());
    cut.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    if let Some(response) = read_response(&mut cut) {
        assert!(response.result.unwrap_err().message.contains("middle of a frame"));
    }
    assert_closed(&mut cut);

    // Random bytes, in pieces.
    let mut noise = raw(server.addr());
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    for chunk in bytes.chunks(512) {
        if noise.write_all(chunk).is_err() {
            break; // closed on us: fine
        }
    }
    drop(noise);

    // Everyone else is still served: the first connection and a new client.
    conn.write_all(&request(8, Op::Describe { topic: "t".into() })).unwrap();
    let response = read_response(&mut conn).expect("a response");
    assert!(matches!(response.result, Ok(Reply::Topic(_))), "{response:?}");
    topic_with_stdin(&dir, &target, &["produce", "t"], Some(b"still here\n")).assert_success();
    let out = topic(&dir, &target, &["tail", "t", "--from-beginning", "--count", "1"]);
    out.assert_success();
    assert_eq!(out.stdout, "still here\n");

    let out = server.stop();
    out.assert_success();
    assert_no_panic(&out);
}

#[test]
fn a_remote_client_survives_a_server_restart() {
    let dir = TempDir::new("broker-restart");
    let data = dir.join("data");
    let server = BrokerServer::start(&dir, &data);
    let addr = server.addr().to_string();
    let rt = runtime();
    let client = rt.block_on(RemoteClient::connect(&addr)).expect("connects");
    let record = |v: &str| NewRecord { key: None, value: bytes::Bytes::from(v.to_string()), timestamp: None };
    rt.block_on(async {
        client.create_topic("t", squall_broker::TopicConfig::new(1)).await.unwrap();
        let rx = client.produce("t", 0, vec![record("a"), record("b")]).await.unwrap();
        assert_eq!(rx.await.unwrap().unwrap(), 0);
    });

    // A fetch waiting at the end of the partition when the server goes away.
    let waiting = rt.spawn({
        let client = client.clone();
        async move { client.fetch("t", 0, 2, 1024, Duration::from_secs(30)).await }
    });
    // Let it reach the server (not timing-critical: a fetch sent after the stop fails too).
    std::thread::sleep(Duration::from_millis(300));
    let out = server.stop();
    out.assert_success();
    let err = rt
        .block_on(async { tokio::time::timeout(DEADLINE, waiting).await })
        .expect("the pending fetch ends once the server is gone")
        .expect("no panic")
        .expect_err("the pending fetch fails");
    assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");

    // The same address and data, again: the same client reconnects on its next calls.
    let server = BrokerServer::start_on(&dir, &data, &addr);
    let started = Instant::now();
    let info = loop {
        match rt.block_on(client.describe("t")) {
            Ok(info) => break info,
            Err(BrokerError::Connection { .. }) if started.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("the client did not reconnect: {e}"),
        }
    };
    assert_eq!(info.partitions[0].high_watermark, 2, "the records survived the restart");
    rt.block_on(async {
        let rx = client.produce("t", 0, vec![record("c")]).await.unwrap();
        assert_eq!(rx.await.unwrap().unwrap(), 2);
        let fetched = client.fetch("t", 0, 0, 1 << 20, Duration::ZERO).await.unwrap();
        let values: Vec<&[u8]> = fetched.records.iter().map(|r| &r.value[..]).collect();
        assert_eq!(values, [&b"a"[..], b"b", b"c"]);
    });
    drop(server);
}

#[test]
fn the_broker_takes_its_defaults_from_the_cluster_file() {
    let dir = TempDir::new("broker-config");
    let cluster = "\
[cluster]
secret = \"${SQUALL_SECRET:-change-me}\"
nimbus = \"127.0.0.1:6627\"

[supervisor]
slots = [6700, 6701]

[broker]
data_dir = \"${BROKER_TEST_DATA:-from-file}\"
listen = \"127.0.0.1:0\"
";
    dir.write("cluster.toml", cluster);
    let start = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["broker"];
        all.extend_from_slice(args);
        let mut command = dir.squall(all).env_remove("SQUALL_DATA_DIR").env_remove("BROKER_TEST_DATA");
        for (k, v) in env {
            command = command.env(k, v);
        }
        BrokerServer::spawn(command)
    };
    let listening = |server: &mut BrokerServer| {
        let line = server.running().stderr_seen().iter().find(|l| l.contains("listening on")).cloned();
        line.expect("a listening line")
    };

    let mut server = start(&["--config", "cluster.toml"], &[]);
    assert!(listening(&mut server).ends_with(", data in from-file"), "{:?}", listening(&mut server));
    assert!(!server.addr().ends_with(":0"), "the bound port: {}", server.addr());
    server.stop().assert_success();
    assert!(dir.join("from-file").is_dir());

    // Substitution from the environment, and flags over the file.
    let mut server = start(&["--config", "cluster.toml"], &[("BROKER_TEST_DATA", "from-env")]);
    assert!(listening(&mut server).ends_with(", data in from-env"));
    server.stop().assert_success();
    let mut server = start(&["--config", "cluster.toml", "--data-dir", "from-flag"], &[]);
    assert!(listening(&mut server).ends_with(", data in from-flag"));
    server.stop().assert_success();

    // config/cluster.toml is the default file.
    std::fs::create_dir_all(dir.join("config")).unwrap();
    dir.write("config/cluster.toml", "[broker]\ndata_dir = \"default-file\"\nlisten = \"127.0.0.1:0\"\n");
    let mut server = start(&[], &[]);
    assert!(listening(&mut server).ends_with(", data in default-file"));
    server.stop().assert_success();

    // A mistake inside [broker] is one line with its place.
    dir.write("bad.toml", "[nimbus]\nanything = 1\n\n[broker]\nlisten = \"127.0.0.1:0\"\ndatadir = \"x\"\n");
    let out = dir.squall(["broker", "--config", "bad.toml"]).timeout(DEADLINE).run();
    assert_error(&out, "bad.toml:6:1: unknown field `datadir`");
    let out = dir.squall(["broker", "--config", "missing.toml"]).timeout(DEADLINE).run();
    assert_error(&out, "cannot read missing.toml");
    // An address it cannot listen on.
    let out = dir
        .squall(["broker", "--listen", "256.0.0.1:1", "--data-dir", "d"])
        .env("SQUALL_SECRET", "not-the-default")
        .timeout(DEADLINE)
        .run();
    assert_error(&out, "cannot listen on 256.0.0.1:1");
}

#[test]
fn a_client_without_the_secret_stores_nothing_in_and_reads_nothing_from_a_broker_server() {
    const SECRET: &str = "broker-e2e-secret";
    let dir = TempDir::new("broker-auth");
    let data = dir.join("data").display().to_string();
    let server = BrokerServer::spawn(
        dir.squall(["broker", "--listen", "127.0.0.1:0", "--data-dir", &data])
            .env_remove("SQUALL_DATA_DIR")
            .env("SQUALL_SECRET", SECRET),
    );
    let addr = server.addr().to_string();
    let cli = |args: &[&str], secret: &str| {
        let mut all = vec!["topic"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--broker", &addr]);
        dir.squall(all).env("SQUALL_SECRET", secret).timeout(DEADLINE)
    };
    cli(&["create", "t", "--partitions", "1"], SECRET).run().assert_success();
    cli(&["produce", "t"], SECRET).stdin("private-1\nprivate-2\nprivate-3\n").run().assert_success();

    // A stranger speaking the protocol without the handshake: a produce and a fetch.
    let record = NewRecord { key: None, value: bytes::Bytes::from_static(b"intruder"), timestamp: None };
    let produce = Op::Produce { topic: "t".into(), partition: 0, records: vec![record] };
    let fetch = Op::Fetch { topic: "t".into(), partition: 0, offset: 0, max_bytes: 1 << 20, wait_ms: 0 };
    let mut requests = frame::encode(&Request { id: 1, op: produce }, MAX_FRAME).unwrap();
    requests.extend(frame::encode(&Request { id: 2, op: fetch }, MAX_FRAME).unwrap());
    let mut stranger = TcpStream::connect(&addr).unwrap();
    stranger.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = stranger.write_all(&requests);
    let mut seen = Vec::new();
    let _ = stranger.read_to_end(&mut seen);
    assert!(
        seen.starts_with(b"SQAUTH1\n") && seen.len() <= 41,
        "the server sent more than its challenge: {seen:?}"
    );
    assert!(!seen.windows(7).any(|w| w == b"private"), "{seen:?}");

    // The CLI with another secret: one line naming the cause, nothing stored or read.
    for args in [&["produce", "t"][..], &["describe", "t"], &["tail", "t", "--count", "1"]] {
        let out = cli(args, "a-guess").stdin("intruder\n").run();
        out.assert_failure();
        let err = out.stderr.trim();
        assert!(
            err.lines().count() == 1 && err.contains("cannot authenticate") && err.contains("SQUALL_SECRET"),
            "{out}"
        );
    }
    let out = cli(&["describe", "t", "--json"], SECRET).run();
    out.assert_success();
    let info: Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(info["partitions"][0]["high_watermark"], 3, "only the three records with the secret: {info}");
    server.stop().assert_success();
}
