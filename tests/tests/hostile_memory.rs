//! Memory of real processes under hostile input, read from /proc/PID/status (VmRSS before,
//! VmHWM after):
//! - the `squall broker` server, given clients that send thousands of fetches and never read
//!   the answers, long-poll fetches left waiting, and idle connections, stays within
//!   [`BROKER_GROWTH_MIB`] and serves a well-behaved client meanwhile;
//! - a worker process of a real cluster, sent tuples on streams and from tasks the plan lacks,
//!   8 MiB frames of nils and "more follows" parts never finished, stays up (never restarted),
//!   within [`WORKER_GROWTH_MIB`], and its topology keeps counting.
//!
//! The hostile bytes go out after a correct connection setup made in one place per port
//! ([`connect_hostile`], [`connect_worker`]), which prove the cluster secret first: the
//! hostile part comes from a peer that did authenticate.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use squall_broker::protocol::{Op, Request, MAX_FRAME};
use squall_broker::remote::RemoteClient;
use squall_broker::{NewRecord, TopicConfig};
use squall_engine::frame;
use squall_tests::{BrokerServer, TempDir};

/// What the broker may grow by under the hostile load: its budget of queued responses over
/// every connection (4 × 64 MiB), plus what reading records, socket buffers and the allocator
/// take (one run: 246 MiB). Without that budget the load below asks for tens of GiB.
const BROKER_GROWTH_MIB: u64 = 400;

/// A field of /proc/PID/status in KiB (VmRSS: resident now; VmHWM: the peak).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process is alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A connection to the broker server, set up as a client's would be (the server asks for no
/// handshake today); what a test writes next is the hostile part.
fn connect_hostile(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    authenticate(&mut stream, &squall_broker::secret(), squall_engine::auth::BROKER);
    stream
}

/// Proves the cluster secret on a fresh connection as every Squall client does (the
/// engine's challenge and HMAC, over a blocking socket), so that what the test sends next is
/// read by the server: the hostile part comes from a peer that did authenticate.
fn authenticate(stream: &mut TcpStream, secret: &squall_engine::auth::Secret, service: &[u8]) {
    use squall_engine::auth;
    use std::io::Read;
    let mut opening = [0u8; auth::MAGIC.len() + auth::NONCE_LEN];
    stream.read_exact(&mut opening).expect("the server opens with its challenge");
    let c = [7u8; auth::NONCE_LEN];
    let proof = auth::connector_proof(secret, service, &opening[auth::MAGIC.len()..], &c);
    stream.write_all(&c).unwrap();
    stream.write_all(&proof).unwrap();
    let mut reply = [0u8; 1 + auth::TAG_LEN];
    stream.read_exact(&mut reply).expect("the server answers the proof");
    assert_eq!(reply[0], 1, "the server accepted the proof of the secret");
}

fn fetch_request(id: u64, topic: &str, offset: u64, max_bytes: u64, wait_ms: u64) -> Vec<u8> {
    let op = Op::Fetch { topic: topic.to_string(), partition: 0, offset, max_bytes, wait_ms };
    frame::encode(&Request { id, op }, MAX_FRAME).unwrap()
}

fn record(value: Bytes) -> NewRecord {
    NewRecord { key: None, value, timestamp: None }
}

#[test]
fn the_broker_stays_within_its_memory_bound_under_unread_fetches_long_polls_and_idle_connections() {
    let dir = TempDir::new("hostile-memory-broker");
    let mut server = BrokerServer::start(&dir, &dir.join("data"));
    let addr = server.addr().to_string();
    let pid = server.running().pid();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = rt.block_on(RemoteClient::connect(&addr)).unwrap();
    rt.block_on(async {
        for topic in ["big", "quiet", "ok"] {
            client.create_topic(topic, TopicConfig::new(1)).await.unwrap();
        }
        // 16 MiB of records: every fetch from offset 0 answers with all of it.
        let value = Bytes::from(vec![b'x'; 512 << 10]);
        let records: Vec<NewRecord> = (0..32).map(|_| record(value.clone())).collect();
        client.produce("big", 0, records).await.unwrap().await.unwrap().unwrap();
    });
    let baseline = status_kib(pid, "VmRSS");

    // 3 clients each ask for 16 MiB a thousand times and never read: 48 GiB if queued. (Three,
    // not more: four such clients take the server's whole budget of queued responses, and
    // then a well-behaved client's answers wait until the write timeout (60 s) closes them.)
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_hostile(&addr);
        let mut requests = Vec::new();
        for id in 0..1000 {
            requests.extend(fetch_request(id, "big", 0, 16 << 20, 0));
        }
        stream.write_all(&requests).unwrap();
        hostile.push(stream);
    }
    // 20 clients leave a thousand long polls each waiting at the end of a partition.
    for _ in 0..20 {
        let mut stream = connect_hostile(&addr);
        let mut requests = Vec::new();
        for id in 0..1000 {
            requests.extend(fetch_request(id, "quiet", 0, 1 << 20, 30_000));
        }
        stream.write_all(&requests).unwrap();
        hostile.push(stream);
    }
    // And 900 say nothing at all.
    for _ in 0..900 {
        hostile.push(connect_hostile(&addr));
    }

    // A well-behaved client is served meanwhile, again and again.
    for i in 0..20u64 {
        rt.block_on(async {
            let value = Bytes::from(format!("ok-{i}"));
            let offset =
                client.produce("ok", 0, vec![record(value.clone())]).await.unwrap().await.unwrap().unwrap();
            assert_eq!(offset, i);
            let fetched = client.fetch("ok", 0, i, 1024, Duration::ZERO).await.unwrap();
            assert_eq!(fetched.records[0].value, value);
        });
        std::thread::sleep(Duration::from_millis(250));
    }
    let peak = status_kib(pid, "VmHWM");
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("broker: resident {} MiB before, peak {} MiB under load", baseline / 1024, peak / 1024);
    assert!(
        grown_mib <= BROKER_GROWTH_MIB,
        "the broker grew by {grown_mib} MiB under the hostile load (bound {BROKER_GROWTH_MIB} MiB)"
    );
    assert!(!server.running().has_exited(), "the broker is still up");

    // Once they are gone, what they held is given back to the budget and others are served.
    drop(hostile);
    rt.block_on(async {
        let fetched = client.fetch("big", 0, 0, 1 << 20, Duration::ZERO).await.unwrap();
        assert!(!fetched.records.is_empty());
        client.produce("quiet", 0, vec![record(Bytes::from("late"))]).await.unwrap().await.unwrap().unwrap();
    });
    let out = server.stop();
    assert!(!out.stderr.contains("panicked"), "{out}");
}

/// The worker a hostile peer targets: worker 1 of topology [`TOPOLOGY`].
const TOPOLOGY: &str = "hostile";
/// What a worker may grow by while a peer sends it the hostile frames below: one frame's
/// decode budget (32 MiB) and one held batch of "more follows" parts (~256 MiB), plus room for
/// the allocator and the topology's own work (one run: 104 MiB). Before the bounds, one 8 MiB
/// frame of nils alone grew a worker by 544 MiB.
const WORKER_GROWTH_MIB: u64 = 384;

/// sequence → sink (file-sink, 2 tasks) over 2 workers, counting on and on.
fn counting_topology(dir: &TempDir, out: &std::path::Path) -> std::path::PathBuf {
    dir.topology(
        "hostile.toml",
        &format!(
            r#"name = "{TOPOLOGY}"
workers = 2

[[spouts]]
id = "numbers"
kind = "sequence"
config = {{ count = 100000000, rate = 200 }}

[[bolts]]
id = "sink"
kind = "file-sink"
parallelism = 2
inputs = [{{ from = "numbers", grouping = "shuffle" }}]
config = {{ path = "{}" }}
"#,
            out.display()
        ),
    )
}

/// (version, address) of worker `index` of [`TOPOLOGY`], from its `listening on` log line.
fn worker_address(dir: &TempDir, index: usize) -> Option<(u64, String)> {
    let prefix = format!("worker {index} of {TOPOLOGY} v");
    let entries = std::fs::read_dir(dir.join("sup-0/logs")).ok()?;
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.split_once(&prefix).map(|(_, rest)| rest) else { continue };
            let Some((version, rest)) = rest.split_once(": listening on ") else { continue };
            let addr = rest.split(',').next()?.trim().to_string();
            return Some((version.parse().ok()?, addr));
        }
    }
    None
}

/// The pid of the worker process started with `--worker INDEX` among `pids`.
fn worker_pid(pids: &[u32], index: usize) -> Option<u32> {
    pids.iter().copied().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.windows(2).any(|w| w[0] == b"--worker" && w[1] == index.to_string().as_bytes())
    })
}

/// A MessagePack string.
fn msgpack_str(buf: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 32);
    buf.push(0xa0 | s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut buf = (body.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(body);
    buf
}

/// A connection to a worker's port that passed the transport's hello as worker 0 of the
/// topology's `version` would, after proving the cluster secret (and got the worker's hello
/// back); what a test writes next is the hostile part.
fn connect_worker(addr: &str, version: u64) -> TcpStream {
    use std::io::Read;
    let mut stream = TcpStream::connect(addr).expect("connects to the worker");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let secret = squall_engine::auth::Secret::new(squall_tests::cluster::SECRET);
    authenticate(&mut stream, &secret, squall_engine::auth::WORKER);
    // {"H": [protocol 1, topology, version, worker 0, credits 0]}
    let mut hello = vec![0x81, 0xa1, b'H', 0x95, 0x01];
    msgpack_str(&mut hello, TOPOLOGY);
    hello.push(0xcf);
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[0x00, 0x00]);
    stream.write_all(&framed(&hello)).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).expect("the worker answers the hello");
    let mut answer = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[..3], &[0x81, 0xa1, b'H'], "the worker answered with a hello, not a refusal");
    stream
}

/// A batch frame's body by hand: `{"B": [task, more, [envelope]]}`, one envelope on `stream`
/// from `source` whose values are `values` nils.
fn bolts_body(task: u8, more: bool, stream: u32, source: u32, values: u32) -> Vec<u8> {
    assert!(task < 128);
    let mut body = vec![0x81, 0xa1, b'B', 0x93, task, if more { 0xc3 } else { 0xc2 }, 0x91, 0x94];
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

/// Writes `bytes` (ignoring a close midway) and waits, up to a minute, for the worker to
/// close the connection.
fn send_until_closed(mut stream: TcpStream, bytes: &[u8]) {
    use std::io::Read;
    let _ = stream.write_all(bytes);
    let mut sink = [0u8; 4096];
    while let Ok(1..) = stream.read(&mut sink) {}
}

#[test]
fn a_worker_stays_up_within_its_memory_bound_under_hostile_frames_and_keeps_counting() {
    use squall_tests::cluster::{numbers_in, Cluster};
    let dir = TempDir::new("hostile-memory-worker");
    let cluster = Cluster::start(&dir, 1, 2);
    let out = dir.join("numbers.jsonl");
    let submitted = cluster.squall(["submit"]).arg(counting_topology(&dir, &out)).run();
    submitted.assert_success();
    let deadline = Duration::from_secs(180);
    cluster.wait_until(deadline, "worker 1 listens", |_| worker_address(&dir, 1).is_some());
    let (version, addr) = worker_address(&dir, 1).unwrap();
    cluster.wait_until(deadline, "worker 1's process runs", |c| worker_pid(&c.worker_pids(), 1).is_some());
    let pid = worker_pid(&cluster.worker_pids(), 1).unwrap();
    cluster.wait_until(deadline, "numbers reach the sink", |_| numbers_in(&out).len() >= 200);
    let baseline = status_kib(pid, "VmRSS");

    // A tuple on a stream the plan lacks, and from a task it lacks.
    for (stream, source) in [(100_000, 0), (0, 100_000), (u32::MAX, u32::MAX)] {
        for task in 0..4 {
            send_until_closed(
                connect_worker(&addr, version),
                &framed(&bolts_body(task, false, stream, source, 1)),
            );
        }
    }
    // An 8 MiB frame of nils (256 MiB once decoded), to every task.
    for task in 0..4 {
        send_until_closed(connect_worker(&addr, version), &framed(&bolts_body(task, false, 0, 0, 8 << 20)));
    }
    // "More follows" parts, each within the decode budget, never followed by the last one:
    // 64 parts of 500,000 nils (16 MiB decoded each, 1 GiB together), to every task.
    for task in 0..4 {
        let part = framed(&bolts_body(task, true, 0, 0, 500_000));
        let stream = connect_worker(&addr, version);
        let mut bytes = Vec::with_capacity(part.len() * 64);
        for _ in 0..64 {
            bytes.extend_from_slice(&part);
        }
        send_until_closed(stream, &bytes);
    }

    let peak = status_kib(pid, "VmHWM");
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "worker: resident {} MiB before, peak {} MiB under hostile frames",
        baseline / 1024,
        peak / 1024
    );
    assert!(squall_tests::cluster::alive(pid), "worker 1 is still up\n{}", cluster.logs());
    assert_eq!(worker_pid(&cluster.worker_pids(), 1), Some(pid), "and was never restarted");
    assert!(
        grown_mib <= WORKER_GROWTH_MIB,
        "worker 1 grew by {grown_mib} MiB under hostile frames (bound {WORKER_GROWTH_MIB} MiB)"
    );
    // The topology keeps counting.
    let counted = numbers_in(&out).len();
    cluster.wait_until(deadline, "the topology counts on", |_| numbers_in(&out).len() >= counted + 200);
}
