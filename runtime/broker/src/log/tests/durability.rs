//! The fsync policy: what counts as durable, and failed fsyncs never papered over.

use super::*;

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

/// The partition behind `log`'s `topic`/`partition`, to inject faults into.
fn partition(log: &Log, topic: &str, partition: u32) -> Arc<super::super::partition::Partition> {
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
