//! Appends and reads: order, sizes, segments, the sparse index, bad requests, concurrency.

use super::*;

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
