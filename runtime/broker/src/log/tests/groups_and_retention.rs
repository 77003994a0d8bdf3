//! Consumer-group offsets and retention.

use super::*;

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
        assert!(
            len <= super::super::groups::COMPACT_BYTES + 16 && len.is_multiple_of(16),
            "compacted: {len} bytes"
        );
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
