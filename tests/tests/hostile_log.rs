//! The embedded log against what wears a process down or damages its files, through the real
//! binary: thousands of small segments read under a low limit of open files (the log keeps a
//! bounded cache of open sealed segments), and a damaged active segment after which no offset
//! is handed out twice.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use squall_broker::log::Log;
use squall_broker::{FsyncPolicy, NewRecord, TopicConfig};
use squall_tests::{BrokerServer, TempDir};

/// Segments of one record each: this many sealed segments, far more than the open-file limit.
const SEGMENTS: u64 = 1500;
/// The limit the `squall` processes run under: room for the log's cache of 256 open sealed
/// segments and the process's own files, not for one file per segment.
const OPEN_FILES: u64 = 400;

fn record(value: String) -> NewRecord {
    NewRecord { key: None, value: Bytes::from(value), timestamp: None }
}

/// Topic `tiny` in `data`: [`SEGMENTS`] records, each in its own segment.
fn tiny_segments(data: &Path) {
    let log = Log::open(data).unwrap();
    log.create_topic(
        "tiny",
        TopicConfig { segment_bytes: 1, fsync: FsyncPolicy::Never, ..TopicConfig::new(1) },
    )
    .unwrap();
    for i in 0..SEGMENTS {
        log.append("tiny", 0, &[record(format!("r{i}"))]).unwrap();
    }
    assert_eq!(log.describe("tiny").unwrap().partitions[0].segments as u64, SEGMENTS);
}

/// The offsets and values `squall topic tail --json` printed.
fn tailed(stdout: &str) -> Vec<(u64, String)> {
    stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            (v["offset"].as_u64().unwrap(), v["value"].as_str().unwrap().to_string())
        })
        .collect()
}

fn expected(range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range.map(|i| (i, format!("r{i}"))).collect()
}

#[test]
fn thousands_of_small_segments_are_read_and_written_under_a_low_open_file_limit() {
    let dir = TempDir::new("hostile-log-fds");
    let data = dir.join("data");
    tiny_segments(&data);
    let data = data.display().to_string();
    let topic = |args: &[&str]| {
        dir.squall(["topic"].iter().chain(args).chain(&["--data-dir", &data]))
            .max_open_files(OPEN_FILES)
            .timeout(Duration::from_secs(300))
    };
    let count = SEGMENTS.to_string();
    let out = topic(&["tail", "tiny", "--from-beginning", "--json", "--count", &count]).run();
    out.assert_success();
    assert_eq!(tailed(&out.stdout), expected(0..SEGMENTS));
    // Produce and create still work in such a process.
    topic(&["produce", "tiny"]).stdin("more\n").run().assert_success();
    topic(&["create", "other"]).run().assert_success();
    topic(&["produce", "other"]).stdin("hello\n").run().assert_success();
    let out = topic(&["tail", "other", "--from-beginning", "--json", "--count", "1"]).run();
    out.assert_success();
    assert_eq!(tailed(&out.stdout), [(0, "hello".to_string())]);
}

#[test]
fn a_broker_server_under_a_low_open_file_limit_serves_thousands_of_small_segments() {
    let dir = TempDir::new("hostile-log-server-fds");
    let data = dir.join("data");
    tiny_segments(&data);
    let data = data.display().to_string();
    let args = ["broker", "--listen", "127.0.0.1:0", "--data-dir", &data];
    let server =
        BrokerServer::spawn(dir.squall(args).env_remove("SQUALL_DATA_DIR").max_open_files(OPEN_FILES));
    let addr = server.addr().to_string();
    let topic = |args: &[&str]| {
        dir.squall(["topic"].iter().chain(args).chain(&["--broker", addr.as_str()]))
            .timeout(Duration::from_secs(300))
    };
    let count = SEGMENTS.to_string();
    // Twice over: the second pass reopens files the first one's cache evicted.
    for _ in 0..2 {
        let out = topic(&["tail", "tiny", "--from-beginning", "--json", "--count", &count]).run();
        out.assert_success();
        assert_eq!(tailed(&out.stdout), expected(0..SEGMENTS));
    }
    topic(&["produce", "tiny"]).stdin("more\n").run().assert_success();
    topic(&["create", "other", "--partitions", "8"]).run().assert_success();
    topic(&["produce", "other"]).stdin("a\nb\nc\n").run().assert_success();
    let out = topic(&["tail", "tiny", "--offset", &count, "--json", "--count", "1"]).run();
    out.assert_success();
    assert_eq!(tailed(&out.stdout), [(SEGMENTS, "more".to_string())]);
    let out = server.stop();
    assert!(!out.stderr.contains("Too many open files"), "{out}");
}

#[test]
fn after_a_damaged_active_segment_is_cut_new_records_get_offsets_never_handed_out_before() {
    let dir = TempDir::new("hostile-log-cut");
    let data = dir.join("data");
    let data_arg = data.display().to_string();
    let topic = |args: &[&str]| dir.squall(["topic"].iter().chain(args).chain(&["--data-dir", &data_arg]));
    topic(&["create", "t"]).run().assert_success();
    let lines: String = (0..10).map(|i| format!("r{i}\n")).collect();
    topic(&["produce", "t"]).stdin(lines).run().assert_success();
    // A consumer read all ten (offsets 0-9) and committed past them.
    topic(&["tail", "t", "--from-beginning", "--count", "10"]).run().assert_success();
    {
        let log = Log::open(&data).unwrap();
        log.commit("reader", "t", 0, 10).unwrap();
    }
    // The disk damages record 7 of the active segment.
    let segment = data.join("topics/t/0").join(format!("{:020}.log", 0));
    let frame = std::fs::metadata(&segment).unwrap().len() / 10;
    let bytes = std::fs::read(&segment).unwrap();
    let mut damaged = bytes.clone();
    damaged[(7 * frame + frame - 1) as usize] ^= 0x40;
    std::fs::write(&segment, damaged).unwrap();

    topic(&["produce", "t"]).stdin("new-a\nnew-b\n").run().assert_success();
    let out = topic(&["tail", "t", "--from-beginning", "--json", "--count", "9"]).run();
    out.assert_success();
    let got = tailed(&out.stdout);
    let good: Vec<(u64, String)> = expected(0..7);
    assert_eq!(got[..7], good[..], "the good records first: {out}");
    let (a, b) = (&got[7], &got[8]);
    assert!(a.0 >= 10, "new records start above every offset handed out before (0-9): {out}");
    assert_eq!((a.1.as_str(), b.0, b.1.as_str()), ("new-a", a.0 + 1, "new-b"));
    // The consumer resumes from its commit and gets exactly the new ones.
    let out = topic(&["tail", "t", "--offset", "10", "--json", "--count", "2"]).run();
    out.assert_success();
    assert_eq!(tailed(&out.stdout), got[7..]);
}
