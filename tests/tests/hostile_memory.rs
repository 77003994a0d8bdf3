//! Memory of real processes under hostile input: the `squall broker` server given clients that
//! send thousands of fetches and never read the answers, long-poll fetches left waiting, and
//! idle connections stays within a stated bound of resident memory (read from
//! /proc/PID/status) and keeps serving a well-behaved client meanwhile.
//!
//! The hostile bytes go out after a correct connection setup made in one place
//! ([`connect_hostile`]), where an authentication step belongs once the port asks for one.

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
/// every connection (4 × 64 MiB), and as much again for reading records, socket buffers and
/// the allocator. Without that budget the load below asks for tens of GiB.
const BROKER_GROWTH_MIB: u64 = 512;

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
    let stream = TcpStream::connect(addr).expect("connects");
    stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    stream
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
            let offset = client.produce("ok", 0, vec![record(value.clone())]).await.unwrap().await.unwrap().unwrap();
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
