//! Tests of the storage engine: behaviour through the public [`Log`] API, plus direct damage to
//! its files to pin crash recovery and corruption handling.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::util::now_ms;
use super::Log;
use crate::record::{frame_len, FRAME_HEADER_LEN};
use crate::{BrokerError, FsyncPolicy, NewRecord, Record, TopicConfig};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("squall-log-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rec(key: Option<&str>, value: &str, timestamp: Option<i64>) -> NewRecord {
    NewRecord {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
        timestamp,
    }
}

fn value(i: u64) -> String {
    format!("value-{i:06}")
}

fn config(partitions: u32, fsync: FsyncPolicy) -> TopicConfig {
    TopicConfig { fsync, ..TopicConfig::new(partitions) }
}

fn small_segments(segment_bytes: u64) -> TopicConfig {
    TopicConfig { segment_bytes, ..config(1, FsyncPolicy::Never) }
}

/// Every record of a partition from `from` on, reading in chunks of `max_bytes`.
fn read_all(log: &Log, topic: &str, partition: u32, from: u64, max_bytes: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let fetched = log.read(topic, partition, offset, max_bytes).unwrap();
        let Some(last) = fetched.records.last() else { break };
        offset = last.offset + 1;
        out.extend(fetched.records);
    }
    out
}

fn append_values(log: &Log, topic: &str, partition: u32, range: std::ops::Range<u64>) {
    for i in range {
        log.append(topic, partition, &[rec(Some("k"), &value(i), Some(1000 + i as i64))]).unwrap();
    }
}

fn segment_path(dir: &Path, topic: &str, partition: u32, base: u64, ext: &str) -> PathBuf {
    dir.join("topics").join(topic).join(partition.to_string()).join(format!("{base:020}.{ext}"))
}

fn segment_files(dir: &Path, topic: &str, partition: u32) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir.join("topics").join(topic).join(partition.to_string()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
    names.sort();
    names
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn flip_byte(path: &Path, position: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, position).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], position).unwrap();
}

#[test]
fn appends_and_reads_back_in_order() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("events", config(3, FsyncPolicy::Never)).unwrap();
    let before = now_ms();
    let first = log
        .append(
            "events",
            0,
            &[rec(Some("a"), "one", Some(5)), rec(None, "two", None), rec(Some(""), "", Some(-7))],
        )
        .unwrap();
    assert_eq!(first, 0);
    assert_eq!(log.append("events", 0, &[rec(None, "four", Some(9))]).unwrap(), 3);
    assert_eq!(log.append("events", 2, &[rec(Some("z"), "other", Some(1))]).unwrap(), 0);
    assert_eq!(log.append("events", 1, &[]).unwrap(), 0, "an empty append changes nothing");

    let fetched = log.read("events", 0, 0, 1 << 20).unwrap();
    assert_eq!(fetched.high_watermark, 4);
    assert_eq!(fetched.log_start, 0);
    let r = &fetched.records;
    assert_eq!(r.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(r[0].key.as_deref(), Some(&b"a"[..]));
    assert_eq!(&r[0].value[..], b"one");
    assert_eq!(r[0].timestamp, 5);
    assert_eq!(r[1].key, None);
    assert!(r[1].timestamp >= before && r[1].timestamp <= now_ms(), "no timestamp: the append's time");
    assert_eq!(r[2].key.as_deref(), Some(&b""[..]));
    assert!(r[2].value.is_empty());
    assert_eq!(r[2].timestamp, -7);

    let mid = log.read("events", 0, 2, 1 << 20).unwrap();
    assert_eq!(mid.records.iter().map(|r| r.offset).collect::<Vec<_>>(), [2, 3]);
    let other = log.read("events", 2, 0, 1 << 20).unwrap();
    assert_eq!(other.records.len(), 1);
    assert_eq!(&other.records[0].value[..], b"other");
    assert!(log.read("events", 1, 0, 1 << 20).unwrap().records.is_empty());
    assert_eq!(log.topics(), ["events"]);
    assert_eq!(log.partitions("events").unwrap(), 3);
}

#[test]
fn read_returns_about_max_bytes_but_always_one_whole_record() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Never)).unwrap();
    let big = "x".repeat(10_000);
    let records: Vec<NewRecord> = (0..100).map(|i| rec(None, &value(i), Some(0))).collect();
    log.append("t", 0, &records).unwrap();
    log.append("t", 0, &[rec(None, &big, Some(0))]).unwrap();
    let frame = frame_len(None, value(0).as_bytes());

    let fetched = log.read("t", 0, 10, 3 * frame).unwrap();
    assert_eq!(fetched.records.iter().map(|r| r.offset).collect::<Vec<_>>(), [10, 11, 12]);
    let one = log.read("t", 0, 10, 1).unwrap();
    assert_eq!(one.records.len(), 1, "at least one record even if max_bytes is smaller");
    let huge = log.read("t", 0, 100, 16).unwrap();
    assert_eq!(huge.records.len(), 1);
    assert_eq!(huge.records[0].value.len(), 10_000);
    assert_eq!(read_all(&log, "t", 0, 0, 100).len(), 101);
}

#[test]
fn reads_at_and_beyond_the_end() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Never)).unwrap();
    assert!(log.read("t", 0, 0, 100).unwrap().records.is_empty(), "an empty partition reads as empty");
    append_values(&log, "t", 0, 0..3);
    let at_end = log.read("t", 0, 3, 100).unwrap();
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.high_watermark, 3);
    match log.read("t", 0, 4, 100) {
        Err(BrokerError::OffsetBeyondEnd { offset: 4, high_watermark: 3, .. }) => {}
        other => panic!("expected OffsetBeyondEnd, got {other:?}"),
    }
}

#[test]
fn rolls_segments_and_reads_across_them() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    log.create_topic("t", small_segments(frame * 5)).unwrap();
    append_values(&log, "t", 0, 0..23);
    // Batches never straddle segments: one of 4 after 3 single records rolls.
    let batch: Vec<NewRecord> = (23..27).map(|i| rec(Some("k"), &value(i), Some(0))).collect();
    log.append("t", 0, &batch).unwrap();

    let info = log.describe("t").unwrap();
    let p = &info.partitions[0];
    assert_eq!(p.high_watermark, 27);
    assert_eq!(p.segments, 6, "5 + 5 + 5 + 5 + 3 + 4 records");
    assert_eq!(p.size_bytes, 27 * frame);
    assert_eq!(
        segment_files(dir.path(), "t", 0),
        [
            "00000000000000000000.log",
            "00000000000000000005.log",
            "00000000000000000010.log",
            "00000000000000000015.log",
            "00000000000000000020.log",
            "00000000000000000023.log"
        ]
    );
    for max_bytes in [1, 100, 1 << 20] {
        let all = read_all(&log, "t", 0, 0, max_bytes);
        assert_eq!(all.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..27).collect::<Vec<_>>());
        assert!(all.iter().all(|r| r.value == value(r.offset).as_bytes()));
    }
    for offset in 0..27 {
        let r = log.read("t", 0, offset, 1).unwrap();
        assert_eq!(r.records[0].offset, offset);
    }
}

#[test]
fn the_sparse_index_finds_offsets_in_big_segments_and_survives_reopen() {
    let dir = TempDir::new();
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", small_segments(200_000)).unwrap();
        for chunk in (0..6000u64).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<NewRecord> = chunk.iter().map(|&i| rec(None, &value(i), Some(0))).collect();
            log.append("t", 0, &batch).unwrap();
        }
        assert!(log.describe("t").unwrap().partitions[0].segments > 1);
        let index = segment_path(dir.path(), "t", 0, 0, "index");
        assert!(std::fs::metadata(index).unwrap().len() >= 8 * 40, "about one entry per 4 KiB");
    }
    // Damage the first (sealed) index: it is rebuilt.
    std::fs::write(segment_path(dir.path(), "t", 0, 0, "index"), b"garbage").unwrap();
    let log = Log::open(dir.path()).unwrap();
    for offset in [0, 1, 77, 2500, 2999, 3000, 4444, 5999] {
        let r = log.read("t", 0, offset, 64).unwrap();
        assert_eq!(r.records[0].offset, offset);
        assert_eq!(r.records[0].value, value(offset).as_bytes());
    }
    assert_eq!(read_all(&log, "t", 0, 0, 50_000).len(), 6000);
}

#[test]
fn reopen_keeps_everything() {
    let dir = TempDir::new();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    let before = {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("a", TopicConfig { segment_bytes: frame * 4, ..config(2, FsyncPolicy::Always) })
            .unwrap();
        log.create_topic("b", config(1, FsyncPolicy::Interval { ms: 10 })).unwrap();
        append_values(&log, "a", 0, 0..10);
        append_values(&log, "a", 1, 0..3);
        append_values(&log, "b", 0, 0..5);
        log.commit("g1", "a", 0, 7).unwrap();
        log.commit("g1", "a", 1, 3).unwrap();
        log.commit("g2", "a", 0, 2).unwrap();
        log.commit("g1", "b", 0, 5).unwrap();
        (log.describe("a").unwrap(), read_all(&log, "a", 0, 0, 1 << 20), read_all(&log, "b", 0, 0, 1 << 20))
    };
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.topics(), ["a", "b"]);
    let info = log.describe("a").unwrap();
    assert_eq!(info, before.0);
    assert_eq!(info.partitions[0].high_watermark, 10);
    assert_eq!(info.partitions[0].durable, 10);
    assert_eq!(info.groups.len(), 2);
    assert_eq!(info.groups[0].group, "g1");
    assert_eq!(info.groups[0].offsets, [Some(7), Some(3)]);
    assert_eq!(info.groups[1].offsets, [Some(2), None]);
    assert_eq!(read_all(&log, "a", 0, 0, 1 << 20), before.1);
    assert_eq!(read_all(&log, "b", 0, 0, 1 << 20), before.2);
    assert_eq!(log.committed("g1", "b").unwrap(), [Some(5)]);
    assert_eq!(log.committed("nobody", "b").unwrap(), [None]);
    assert_eq!(log.append("a", 0, &[rec(None, "next", None)]).unwrap(), 10);
    assert_eq!(log.append("b", 0, &[rec(None, "next", None)]).unwrap(), 5);
}

#[test]
fn torn_tail_is_cut_off_on_reopen() {
    let dir = TempDir::new();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", config(1, FsyncPolicy::Always)).unwrap();
        append_values(&log, "t", 0, 0..5);
    }
    let path = segment_path(dir.path(), "t", 0, 0, "log");
    // Half of the next frame, as a crash in the middle of a write leaves it.
    let mut next = Vec::new();
    crate::record::encode_into(&mut next, 5, 1005, Some(b"k"), value(5).as_bytes());
    append_bytes(&path, &next[..next.len() / 2]);
    {
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 5 * frame, "cut at the torn frame");
        assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 5);
        let all = read_all(&log, "t", 0, 0, 1 << 20);
        assert_eq!(all.len(), 5);
        assert_eq!(log.append("t", 0, &[rec(Some("k"), &value(5), Some(1005))]).unwrap(), 5);
    }
    // Garbage after whole frames, and a header that claims more bytes than there are.
    append_bytes(&path, &[0xAB; 7]);
    {
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 6);
        assert_eq!(read_all(&log, "t", 0, 0, 1 << 20).len(), 6);
    }
    append_bytes(&path, &(1000u32).to_le_bytes());
    append_bytes(&path, &[0; FRAME_HEADER_LEN]);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 6);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 6 * frame);
    assert_eq!(log.append("t", 0, &[rec(None, "after", None)]).unwrap(), 6);
    let all = read_all(&log, "t", 0, 0, 1 << 20);
    assert_eq!(all.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(&all[6].value[..], b"after");
}

#[test]
fn corrupt_record_is_never_returned() {
    let dir = TempDir::new();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", small_segments(frame * 4)).unwrap();
        append_values(&log, "t", 0, 0..10); // segments 0..4, 4..8, 8..10 (active)
    }
    // A flipped byte in the value of offset 2, in a sealed segment.
    let sealed = segment_path(dir.path(), "t", 0, 0, "log");
    flip_byte(&sealed, 2 * frame + frame - 3);
    // And in offset 9, in the active one.
    let active = segment_path(dir.path(), "t", 0, 8, "log");
    flip_byte(&active, frame + frame - 1);

    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 9, "active segment cut at offset 9");
    assert_eq!(std::fs::metadata(&active).unwrap().len(), frame);
    for offset in [0, 1, 2] {
        match log.read("t", 0, offset, 1 << 20) {
            Err(BrokerError::Corrupt { file, position, .. }) => {
                assert_eq!(file, sealed);
                assert_eq!(position, 2 * frame);
            }
            Ok(f) if offset < 2 => {
                assert!(f.records.iter().all(|r| r.offset < 2), "never the corrupt record");
            }
            other => panic!("expected Corrupt reading {offset}, got {other:?}"),
        }
    }
    // Offset 3 lies behind the corrupt frame (its length cannot be trusted to find 3).
    assert!(matches!(log.read("t", 0, 3, 1 << 20), Err(BrokerError::Corrupt { .. })));
    let after = read_all(&log, "t", 0, 4, 1 << 20);
    assert_eq!(after.iter().map(|r| r.offset).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
    assert_eq!(log.append("t", 0, &[rec(None, "new", None)]).unwrap(), 9);
}

#[test]
fn group_offsets_survive_reopen_and_compaction() {
    let dir = TempDir::new();
    let path = dir.path().join("topics/t/groups/workers.offsets");
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", config(4, FsyncPolicy::Never)).unwrap();
        for p in 0..4 {
            append_values(&log, "t", p, 0..100);
        }
        assert_eq!(log.committed("workers", "t").unwrap(), [None; 4]);
        // Enough commits to pass the compaction threshold (16 bytes each) more than once.
        for i in 0..150_000u64 {
            log.commit("workers", "t", (i % 3) as u32, i % 101).unwrap();
        }
        log.commit("other", "t", 3, 100).unwrap();
        assert_eq!(log.committed("workers", "t").unwrap(), [Some(12), Some(13), Some(14), None]);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= super::groups::COMPACT_BYTES + 16 && len.is_multiple_of(16), "compacted: {len} bytes");
    }
    // A torn commit at the end is skipped.
    append_bytes(&path, &[1, 2, 3, 4, 5]);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.committed("workers", "t").unwrap(), [Some(12), Some(13), Some(14), None]);
    assert_eq!(log.committed("other", "t").unwrap(), [None, None, None, Some(100)]);
    let groups = log.describe("t").unwrap().groups;
    assert_eq!(groups.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(), ["other", "workers"]);
    log.commit("workers", "t", 3, 50).unwrap();
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.committed("workers", "t").unwrap(), [Some(12), Some(13), Some(14), Some(50)]);
    match log.commit("workers", "t", 0, 101) {
        Err(BrokerError::OffsetBeyondEnd { offset: 101, high_watermark: 100, .. }) => {}
        other => panic!("expected OffsetBeyondEnd, got {other:?}"),
    }
    assert!(matches!(log.commit("workers", "t", 4, 0), Err(BrokerError::NoSuchPartition { .. })));
    assert!(matches!(log.commit("workers", "nope", 0, 0), Err(BrokerError::UnknownTopic(_))));
    assert!(matches!(log.commit("bad/name", "t", 0, 0), Err(BrokerError::InvalidName { what: "group", .. })));
}

#[test]
fn retention_by_size_and_age_deletes_old_segments() {
    let dir = TempDir::new();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    let log = Log::open(dir.path()).unwrap();
    // By size: 2-record segments, at most 5 records' worth kept (the active segment counts).
    log.create_topic("size", TopicConfig { retention_bytes: Some(5 * frame), ..small_segments(2 * frame) })
        .unwrap();
    append_values(&log, "size", 0, 0..11);
    let p = &log.describe("size").unwrap().partitions[0];
    assert_eq!((p.log_start, p.high_watermark), (6, 11), "segments 0, 2, 4 deleted");
    assert!(p.size_bytes <= 5 * frame);
    assert_eq!(segment_files(dir.path(), "size", 0).len(), 3);
    match log.read("size", 0, 5, 100) {
        Err(BrokerError::OffsetRemoved { offset: 5, log_start: 6, .. }) => {}
        other => panic!("expected OffsetRemoved, got {other:?}"),
    }
    assert_eq!(read_all(&log, "size", 0, 6, 100).len(), 5);

    // By age: the newest record's timestamp decides; the active segment always stays.
    let now = now_ms();
    let hour = 3_600_000;
    log.create_topic("age", TopicConfig { retention_secs: Some(3 * 3600), ..small_segments(2 * frame) })
        .unwrap();
    let old = |i: u64, ts: i64| rec(Some("k"), &value(i), Some(ts));
    for i in 0..4 {
        log.append("age", 0, &[old(i, now - 5 * hour)]).unwrap(); // segments 0, 2: too old at once
    }
    for i in 4..8 {
        log.append("age", 0, &[old(i, now - 2 * hour)]).unwrap(); // segments 4, 6: 2 hours old
    }
    log.append("age", 0, &[old(8, now - 10 * hour)]).unwrap(); // active, never deleted
    let p = &log.describe("age").unwrap().partitions[0];
    assert_eq!(p.log_start, 4, "the 5-hour-old segments went when the log rolled");
    assert_eq!(p.segments, 3);
    log.apply_retention(now);
    assert_eq!(log.describe("age").unwrap().partitions[0].log_start, 4);
    drop(log);

    // After a reopen, a sealed segment's age comes from its file (stamped when it was sealed).
    let log = Log::open(dir.path()).unwrap();
    log.apply_retention(now + hour + hour / 2);
    let p = &log.describe("age").unwrap().partitions[0];
    assert_eq!((p.log_start, p.segments), (8, 1));
    assert!(matches!(log.read("age", 0, 7, 100), Err(BrokerError::OffsetRemoved { .. })));
    assert_eq!(log.read("age", 0, 8, 100).unwrap().records.len(), 1);
    assert_eq!(segment_files(dir.path(), "age", 0), ["00000000000000000008.log"]);
}

#[test]
fn durable_under_never_is_the_high_watermark() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Never)).unwrap();
    append_values(&log, "t", 0, 0..3);
    assert_eq!(log.durable("t", 0).unwrap(), 3);
    assert_eq!(log.describe("t").unwrap().partitions[0].durable, 3);
}

#[test]
fn durable_under_always_is_the_high_watermark_after_each_append() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(2, FsyncPolicy::Always)).unwrap();
    assert_eq!(log.durable("t", 0).unwrap(), 0);
    for i in 0..3 {
        log.append("t", 1, &[rec(None, &value(i), None)]).unwrap();
        assert_eq!(log.durable("t", 1).unwrap(), i + 1);
    }
    log.commit("g", "t", 1, 3).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_under_interval_catches_up_and_wait_durable_returns() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Interval { ms: 20 })).unwrap();
    let first = log.append("t", 0, &[rec(None, "a", None), rec(None, "b", None)]).unwrap();
    assert_eq!(first, 0);
    tokio::time::timeout(Duration::from_secs(30), log.wait_durable("t", 0, 2)).await.unwrap().unwrap();
    assert!(log.durable("t", 0).unwrap() >= 2);
    // Later appends too, and wait_durable on what is already durable returns at once.
    for i in 0..50 {
        log.append("t", 0, &[rec(None, &value(i), None)]).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), log.wait_durable("t", 0, 52)).await.unwrap().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.durable("t", 0).unwrap() < 52 {
        assert!(std::time::Instant::now() < deadline, "durable never reached the high watermark");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.wait_durable("t", 0, 1).await.unwrap();
    assert!(matches!(log.wait_durable("t", 0, 53).await, Err(BrokerError::OffsetBeyondEnd { .. })));
    log.commit("g", "t", 0, 52).unwrap();
    log.flush().unwrap();
}

#[test]
fn wait_durable_works_from_a_current_thread_runtime() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Interval { ms: 5 })).unwrap();
    log.append("t", 0, &[rec(None, "a", None)]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(log.wait_durable("t", 0, 1)).unwrap();
    assert_eq!(log.durable("t", 0).unwrap(), 1);
}

#[test]
fn second_open_of_a_dir_is_refused() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    match Log::open(dir.path()) {
        Err(BrokerError::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    drop(log);
    let again = Log::open(dir.path()).unwrap();
    drop(again);

    let shared = Log::shared(dir.path()).unwrap();
    let same = Log::shared(&dir.path().join("topics/..")).unwrap();
    assert!(Arc::ptr_eq(&shared, &same), "one log per directory in the process");
    assert!(matches!(Log::open(dir.path()), Err(BrokerError::Locked { .. })));
}

#[test]
fn second_open_from_another_process_is_refused() {
    const CHILD: &str = "SQUALL_LOG_TEST_LOCKED_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        // The child: the parent holds the directory.
        match Log::open(Path::new(&dir)) {
            Err(BrokerError::Locked { .. }) => std::process::exit(0),
            other => {
                eprintln!("child expected Locked, got {:?}", other.map(|_| ()));
                std::process::exit(1)
            }
        }
    }
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["log::tests::second_open_from_another_process_is_refused", "--exact", "--nocapture"])
        .env(CHILD, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the other process could open a locked directory");
    drop(log);
}

#[test]
fn kill_9_loses_nothing_that_was_acknowledged() {
    use std::io::BufRead;
    const CHILD: &str = "SQUALL_LOG_TEST_APPEND_DIR";
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    if let Some(dir) = std::env::var_os(CHILD) {
        // The child: appends (small segments, so it also rolls) and reports each append's
        // offset once it returned, until it is killed.
        let log = Log::open(Path::new(&dir)).unwrap();
        log.create_topic("t", TopicConfig { segment_bytes: 50 * frame, ..config(1, FsyncPolicy::Never) })
            .unwrap();
        let mut out = std::io::stdout().lock();
        for i in 0.. {
            let batch: Vec<NewRecord> = (0..3).map(|j| rec(Some("k"), &value(i * 3 + j), Some(0))).collect();
            let first = log.append("t", 0, &batch).unwrap();
            use std::io::Write;
            writeln!(out, "acked {}", first + 3).unwrap();
            out.flush().unwrap();
        }
    }
    let dir = TempDir::new();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["log::tests::kill_9_loses_nothing_that_was_acknowledged", "--exact", "--nocapture"])
        .env(CHILD, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = 0;
    // Kept open until the child is dead, so that it dies by the kill, not by a broken pipe.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in &mut lines {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked = n.parse().unwrap();
            if acked >= 3000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(lines);
    assert!(acked >= 3000, "the child stopped early");
    let log = Log::open(dir.path()).unwrap();
    let hw = log.high_watermark("t", 0).unwrap();
    assert!(hw >= acked, "acknowledged up to {acked}, recovered {hw}");
    let all = read_all(&log, "t", 0, 0, 1 << 16);
    assert_eq!(all.len() as u64, hw);
    assert!(all.iter().all(|r| r.value == value(r.offset).as_bytes()));
    assert_eq!(log.append("t", 0, &[rec(None, "after", None)]).unwrap(), hw);
}

#[test]
fn bad_requests_are_refused_with_their_own_errors() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(2, FsyncPolicy::Never)).unwrap();
    assert!(matches!(log.create_topic("t", config(1, FsyncPolicy::Never)), Err(BrokerError::TopicExists(_))));
    assert!(matches!(log.append("nope", 0, &[rec(None, "x", None)]), Err(BrokerError::UnknownTopic(_))));
    assert!(matches!(log.read("nope", 0, 0, 10), Err(BrokerError::UnknownTopic(_))));
    assert!(matches!(log.describe("nope"), Err(BrokerError::UnknownTopic(_))));
    assert!(matches!(log.committed("g", "nope"), Err(BrokerError::UnknownTopic(_))));
    match log.append("t", 2, &[rec(None, "x", None)]) {
        Err(BrokerError::NoSuchPartition { partition: 2, partitions: 2, .. }) => {}
        other => panic!("expected NoSuchPartition, got {other:?}"),
    }
    assert!(matches!(log.read("t", 7, 0, 10), Err(BrokerError::NoSuchPartition { .. })));
    assert!(matches!(log.durable("t", 2), Err(BrokerError::NoSuchPartition { .. })));
    assert!(matches!(log.read("t", 0, 1, 10), Err(BrokerError::OffsetBeyondEnd { .. })));
    for name in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(201)] {
        match log.create_topic(name, config(1, FsyncPolicy::Never)) {
            Err(BrokerError::InvalidName { what: "topic", .. }) => {}
            other => panic!("expected InvalidName for {name:?}, got {other:?}"),
        }
        assert!(matches!(log.committed(name, "t"), Err(BrokerError::InvalidName { what: "group", .. })));
    }
    log.create_topic(&"x".repeat(200), config(1, FsyncPolicy::Never)).unwrap();
    log.create_topic("A-z_0.9", config(1, FsyncPolicy::Never)).unwrap();
    for partitions in [0, 1025] {
        let bad = config(partitions, FsyncPolicy::Never);
        assert!(matches!(log.create_topic("p", bad), Err(BrokerError::InvalidRequest(_))));
    }
    log.create_topic("p", config(1024, FsyncPolicy::Never)).unwrap();
    assert!(matches!(log.create_topic("s", small_segments(0)), Err(BrokerError::InvalidRequest(_))));
    assert_eq!(log.topics(), ["A-z_0.9", "p", "t", &"x".repeat(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_waits_for_an_append() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Never)).unwrap();
    // Nothing arrives: an empty result once the wait is over.
    let empty = log.fetch("t", 0, 0, 1 << 20, Duration::from_millis(20)).await.unwrap();
    assert!(empty.records.is_empty());

    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            log.append("t", 0, &[rec(None, "late", None)]).unwrap();
        })
    };
    let fetched = log.fetch("t", 0, 0, 1 << 20, Duration::from_secs(60)).await.unwrap();
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(&fetched.records[0].value[..], b"late");
    writer.await.unwrap();
    // Records already there come back without waiting.
    let now = log.fetch("t", 0, 0, 1 << 20, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(now.records.len(), 1);
    assert!(matches!(
        log.fetch("t", 0, 5, 10, Duration::from_secs(3600)).await,
        Err(BrokerError::OffsetBeyondEnd { .. })
    ));
}

#[test]
fn concurrent_readers_see_whole_records_in_order() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig { segment_bytes: 64 << 10, ..config(1, FsyncPolicy::Never) }).unwrap();
    const N: u64 = 20_000;
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in (0..N).collect::<Vec<_>>().chunks(37) {
                let batch: Vec<NewRecord> = chunk.iter().map(|&i| rec(None, &value(i), Some(0))).collect();
                log.append("t", 0, &batch).unwrap();
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                let mut offset = 0;
                while offset < N {
                    let fetched = log.read("t", 0, offset, 3000).unwrap();
                    assert!(fetched.records.len() as u64 <= fetched.high_watermark - offset);
                    for r in fetched.records {
                        assert_eq!(r.offset, offset);
                        assert_eq!(r.value, value(offset).as_bytes());
                        offset += 1;
                    }
                }
            });
        }
    });
}

#[test]
fn dropping_the_log_flushes_and_releases_the_directory() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Interval { ms: 3_600_000 })).unwrap();
    log.append("t", 0, &[rec(None, "a", None)]).unwrap();
    assert_eq!(log.durable("t", 0).unwrap(), 0, "not an hour yet");
    log.flush().unwrap();
    assert_eq!(log.durable("t", 0).unwrap(), 1);
    log.append("t", 0, &[rec(None, "b", None)]).unwrap();
    let started = std::time::Instant::now();
    drop(log);
    assert!(started.elapsed() < Duration::from_secs(30), "the flusher stops promptly");
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.durable("t", 0).unwrap(), 2);
}

/// Not a test: a rough throughput figure (`cargo test --release -- --ignored --nocapture
/// throughput_figure`).
#[test]
#[ignore]
fn throughput_figure() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Interval { ms: 50 })).unwrap();
    const N: u64 = 2_000_000;
    const BATCH: u64 = 100;
    let value = Bytes::from(vec![b'v'; 100]);
    let batch: Vec<NewRecord> =
        (0..BATCH).map(|_| NewRecord { key: None, value: value.clone(), timestamp: None }).collect();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..N / BATCH {
                log.append("t", 0, &batch).unwrap();
            }
        });
        s.spawn(|| {
            let mut offset = 0;
            let mut bytes = 0;
            while offset < N {
                let fetched = log.read("t", 0, offset, 1 << 20).unwrap();
                for r in &fetched.records {
                    bytes += r.value.len();
                }
                offset += fetched.records.len() as u64;
            }
            assert_eq!(bytes, N as usize * 100);
        });
    });
    let secs = started.elapsed().as_secs_f64();
    println!("append+read of {N} records of 100 bytes: {:.0} records/s", N as f64 / secs);
    let started = std::time::Instant::now();
    let mut offset = 0;
    while offset < N {
        offset += log.read("t", 0, offset, 1 << 20).unwrap().records.len() as u64;
    }
    println!("read alone: {:.0} records/s", N as f64 / started.elapsed().as_secs_f64());
}

/// The partition behind `log`'s `topic`/`partition`, to inject faults into.
fn partition(log: &Log, topic: &str, partition: u32) -> Arc<super::partition::Partition> {
    log.partition(topic, partition).unwrap()
}

/// Asserts `result` is the sticky I/O error of a failed fsync of a file in `dir`.
fn assert_fsync_failure<T: std::fmt::Debug>(result: crate::Result<T>, dir: &Path) {
    match result {
        Err(BrokerError::Io { context, source }) => {
            assert!(context.contains(&dir.display().to_string()), "names the file: {context}");
            assert!(source.to_string().contains("injected fsync failure"), "{source}");
        }
        other => panic!("expected the fsync failure, got {other:?}"),
    }
}

#[test]
fn a_failed_fsync_under_always_is_never_papered_over_by_a_later_one() {
    let dir = TempDir::new();
    let part_dir = dir.path().join("topics/t/0");
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(2, FsyncPolicy::Always)).unwrap();
    append_values(&log, "t", 0, 0..2);
    assert_eq!(log.durable("t", 0).unwrap(), 2);
    partition(&log, "t", 0).fail_next_fsync(false);
    // Append A's fsync fails; append B (whose fsync would succeed) must not cover A.
    assert_fsync_failure(log.append("t", 0, &[rec(None, "a", None)]), &part_dir);
    assert_fsync_failure(log.append("t", 0, &[rec(None, "b", None)]), &part_dir);
    assert_eq!(log.high_watermark("t", 0).unwrap(), 3, "B was refused before it was written");
    assert_fsync_failure(log.durable("t", 0), &part_dir);
    assert_eq!(log.describe("t").unwrap().partitions[0].durable, 2, "the durable end stays put");
    assert_fsync_failure(log.flush(), &part_dir);
    assert_fsync_failure(log.durable("t", 0), &part_dir);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_fsync_failure(rt.block_on(log.wait_durable("t", 0, 1)), &part_dir);
    // Other partitions are not affected.
    assert_eq!(log.append("t", 1, &[rec(None, "x", None)]).unwrap(), 0);
    assert_eq!(log.durable("t", 1).unwrap(), 1);
    drop(log);

    // A restart recovers the partition from what is on disk.
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.durable("t", 0).unwrap(), 3);
    assert_eq!(log.append("t", 0, &[rec(None, "c", None)]).unwrap(), 3);
    assert_eq!(log.durable("t", 0).unwrap(), 4);
}

#[test]
fn a_failed_background_fsync_stops_the_durable_end_and_fails_waiters_and_appends() {
    let dir = TempDir::new();
    let part_dir = dir.path().join("topics/t/0");
    let log = Log::open(dir.path()).unwrap();
    // An hour: the flusher stays out of the way, the test fsyncs with `flush`.
    log.create_topic("t", config(1, FsyncPolicy::Interval { ms: 3_600_000 })).unwrap();
    log.append("t", 0, &[rec(None, "a", None)]).unwrap();
    log.flush().unwrap();
    assert_eq!(log.durable("t", 0).unwrap(), 1);
    log.append("t", 0, &[rec(None, "b", None)]).unwrap();
    partition(&log, "t", 0).fail_next_fsync(false);
    assert_fsync_failure(log.flush(), &part_dir);
    // The next fsync would succeed: it must not move the durable end over "b".
    assert_fsync_failure(log.flush(), &part_dir);
    assert_fsync_failure(log.durable("t", 0), &part_dir);
    assert_eq!(log.describe("t").unwrap().partitions[0].durable, 1);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_fsync_failure(rt.block_on(log.wait_durable("t", 0, 2)), &part_dir);
    assert_fsync_failure(rt.block_on(log.wait_durable("t", 0, 1)), &part_dir);
    assert_fsync_failure(log.append("t", 0, &[rec(None, "c", None)]), &part_dir);
    assert_eq!(log.high_watermark("t", 0).unwrap(), 2);
}

#[test]
fn a_waiter_is_woken_by_a_failed_fsync() {
    let dir = TempDir::new();
    let part_dir = dir.path().join("topics/t/0");
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", config(1, FsyncPolicy::Interval { ms: 3_600_000 })).unwrap();
    log.append("t", 0, &[rec(None, "a", None)]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
    let waiter = {
        let log = log.clone();
        rt.spawn(async move { log.wait_durable("t", 0, 1).await })
    };
    partition(&log, "t", 0).fail_next_fsync(false);
    assert_fsync_failure(log.flush(), &part_dir);
    assert_fsync_failure(rt.block_on(waiter).unwrap(), &part_dir);
}

#[test]
fn a_failed_directory_fsync_in_a_roll_leaves_state_and_disk_in_step() {
    let dir = TempDir::new();
    let part_dir = dir.path().join("topics/t/0");
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig { segment_bytes: 2 * frame, ..config(1, FsyncPolicy::Always) })
        .unwrap();
    append_values(&log, "t", 0, 0..2);
    partition(&log, "t", 0).fail_next_fsync(true);
    // This append rolls: the new segment's file is created, then the directory fsync fails.
    assert_fsync_failure(log.append("t", 0, &[rec(Some("k"), &value(2), Some(1002))]), &part_dir);
    let files = segment_files(dir.path(), "t", 0);
    assert_eq!(files, ["00000000000000000000.log", "00000000000000000002.log"]);
    let p = &log.describe("t").unwrap().partitions[0];
    assert_eq!((p.segments, p.high_watermark, p.durable), (2, 2, 2), "the new segment is in the state");
    assert_eq!(read_all(&log, "t", 0, 0, 1 << 20).len(), 2);
    // The segment's name may not be durable: nothing more counts as durable.
    assert_fsync_failure(log.durable("t", 0), &part_dir);
    assert_fsync_failure(log.append("t", 0, &[rec(Some("k"), &value(2), Some(1002))]), &part_dir);
    drop(log);

    // After a restart the partition goes on, and rolls again.
    let log = Log::open(dir.path()).unwrap();
    append_values(&log, "t", 0, 2..7);
    assert_eq!(log.durable("t", 0).unwrap(), 7);
    let all = read_all(&log, "t", 0, 0, 1 << 20);
    assert_eq!(all.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
    assert_eq!(segment_files(dir.path(), "t", 0).len(), 4);
}

#[test]
fn appends_are_refused_before_an_offset_reaches_2_pow_48() {
    use super::MAX_OFFSET;
    let dir = TempDir::new();
    Log::open(dir.path()).unwrap().create_topic("t", config(1, FsyncPolicy::Always)).unwrap();
    // A partition that starts just below the limit.
    let near = MAX_OFFSET - 2;
    let active = segment_path(dir.path(), "t", 0, near, "log");
    std::fs::write(&active, b"").unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.high_watermark("t", 0).unwrap(), near);
    let batch = |n: u64| (0..n).map(|i| rec(None, &value(i), Some(0))).collect::<Vec<_>>();
    assert!(matches!(log.append("t", 0, &batch(3)), Err(BrokerError::InvalidRequest(_))));
    assert_eq!(log.high_watermark("t", 0).unwrap(), near, "nothing of a refused append is written");
    assert_eq!(log.append("t", 0, &batch(2)).unwrap(), near);
    assert_eq!(log.high_watermark("t", 0).unwrap(), MAX_OFFSET);
    assert!(matches!(log.append("t", 0, &batch(1)), Err(BrokerError::InvalidRequest(_))));
    let all = read_all(&log, "t", 0, near, 1 << 20);
    assert_eq!(all.iter().map(|r| r.offset).collect::<Vec<_>>(), [near, MAX_OFFSET - 1]);
    drop(log);

    // A frame at offset 2^48 on disk is cut off like a corrupt one.
    let len = std::fs::metadata(&active).unwrap().len();
    let mut frame = Vec::new();
    crate::record::encode_into(&mut frame, MAX_OFFSET, 0, None, b"too far");
    append_bytes(&active, &frame);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.high_watermark("t", 0).unwrap(), MAX_OFFSET);
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len);
}

#[test]
fn a_segment_named_at_or_beyond_2_pow_48_is_corrupt() {
    for stem in [format!("{:020}", super::MAX_OFFSET), format!("{}", i64::MAX), "9".repeat(20)] {
        let dir = TempDir::new();
        Log::open(dir.path()).unwrap().create_topic("t", config(1, FsyncPolicy::Never)).unwrap();
        let path = dir.path().join(format!("topics/t/0/{stem:0>20}.log"));
        std::fs::write(&path, b"").unwrap();
        match Log::open(dir.path()) {
            Err(BrokerError::Corrupt { file, .. }) => assert_eq!(file, path),
            other => panic!("expected Corrupt for {stem}, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn a_commit_beyond_the_recovered_end_is_lowered_to_it_and_stays_lowered() {
    let dir = TempDir::new();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", config(2, FsyncPolicy::Interval { ms: 10 })).unwrap();
        append_values(&log, "t", 0, 0..10);
        append_values(&log, "t", 1, 0..4);
        log.commit("g", "t", 0, 10).unwrap();
        log.commit("g", "t", 1, 3).unwrap();
        log.commit("h", "t", 0, 4).unwrap();
    }
    // A power loss kept the commits but only the first 6 records of partition 0.
    let active = segment_path(dir.path(), "t", 0, 0, "log");
    std::fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(6 * frame).unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.high_watermark("t", 0).unwrap(), 6);
        assert_eq!(log.committed("g", "t").unwrap(), [Some(6), Some(3)], "lowered to the end");
        assert_eq!(log.committed("h", "t").unwrap(), [Some(4), None], "within the end: kept");
        // The partition grows past the old commit again; the lowered one must stick.
        append_values(&log, "t", 0, 6..20);
    }
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.high_watermark("t", 0).unwrap(), 20);
    assert_eq!(log.committed("g", "t").unwrap(), [Some(6), Some(3)]);
    assert_eq!(log.committed("h", "t").unwrap(), [Some(4), None]);
}
