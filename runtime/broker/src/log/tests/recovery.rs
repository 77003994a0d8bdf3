//! Reopening and crashes: what survives, what is cut, what is refused, the directory lock.

use super::*;

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
fn torn_tail_is_cut_off_on_reopen_and_no_offset_it_may_have_held_is_reused() {
    let dir = TempDir::new();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", config(1, FsyncPolicy::Always)).unwrap();
        append_values(&log, "t", 0, 0..5);
    }
    let path = segment_path(dir.path(), "t", 0, 0, "log");
    // Half of the next frame, as a crash in the middle of a write leaves it: it may have been
    // offset 5 (the smallest frame is FRAME_HEADER_LEN bytes, so 20 bytes held one at most).
    let mut next = Vec::new();
    crate::record::encode_into(&mut next, 5, 1005, Some(b"k"), value(5).as_bytes());
    let half = &next[..next.len() / 2];
    assert!(half.len() <= FRAME_HEADER_LEN);
    append_bytes(&path, half);
    {
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 5 * frame, "cut at the torn frame");
        assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 5);
        assert_eq!(read_all(&log, "t", 0, 0, 1 << 20).len(), 5);
        assert_eq!(log.read("t", 0, 6, 1024).unwrap().records, [], "up to the next offset is the end");
        assert_eq!(log.append("t", 0, &[rec(Some("k"), &value(5), Some(1005))]).unwrap(), 6);
    }
    // Garbage after whole frames of the new active segment (7 bytes: at most one offset).
    append_bytes(&segment_path(dir.path(), "t", 0, 6, "log"), &[0xAB; 7]);
    {
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 7);
        assert_eq!(log.append("t", 0, &[rec(None, "eight", None)]).unwrap(), 8);
    }
    // A header that claims more bytes than there are (32 bytes cut: at most two offsets).
    let active = segment_path(dir.path(), "t", 0, 8, "log");
    append_bytes(&active, &(1000u32).to_le_bytes());
    append_bytes(&active, &[0; FRAME_HEADER_LEN]);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 9);
    assert_eq!(std::fs::metadata(&active).unwrap().len(), frame_len(None, b"eight") as u64);
    assert_eq!(log.append("t", 0, &[rec(None, "after", None)]).unwrap(), 11);
    let all = read_all(&log, "t", 0, 0, 1 << 20);
    assert_eq!(all.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 6, 8, 11]);
    assert_eq!(&all[7].value[..], b"after");
    // Reads from inside a gap get the records after it.
    let from_gap: Vec<u64> = log.read("t", 0, 9, 1 << 20).unwrap().records.iter().map(|r| r.offset).collect();
    assert_eq!(from_gap, [11]);
    drop(log);
    // A clean reopen adds no gap.
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.append("t", 0, &[rec(None, "twelve", None)]).unwrap(), 12);
}

#[test]
fn an_append_after_a_cut_never_reuses_an_offset_and_commits_past_the_cut_stay_valid() {
    let dir = TempDir::new();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", config(1, FsyncPolicy::Interval { ms: 10 })).unwrap();
        append_values(&log, "t", 0, 0..10);
        // A consumer read all ten and committed past them.
        log.commit("g", "t", 0, 10).unwrap();
        log.flush().unwrap();
    }
    // The disk damaged the tail of the active segment: offset 7 on is unreadable.
    let path = segment_path(dir.path(), "t", 0, 0, "log");
    flip_byte(&path, 7 * frame + frame - 2);
    {
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.high_watermark("t", 0).unwrap(), 7, "cut at the damage");
        assert_eq!(log.committed("g", "t").unwrap(), [Some(10)], "the commit stays where it was");
        let first = log.append("t", 0, &[rec(None, "new-a", None), rec(None, "new-b", None)]).unwrap();
        assert!(first >= 10, "the new records' offsets ({first}…) are above every one handed out");
        let all = read_all(&log, "t", 0, 0, 1 << 20);
        let offsets: Vec<u64> = all.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4, 5, 6, first, first + 1], "good records, then the new ones");
        assert_eq!(&all[7].value[..], b"new-a");
        // The consumer resumes from its commit and gets exactly the new records.
        let resumed: Vec<u64> = read_all(&log, "t", 0, 10, 1 << 20).iter().map(|r| r.offset).collect();
        assert_eq!(resumed, [first, first + 1]);
        log.commit("g", "t", 0, first + 2).unwrap();
    }
    // And all of it holds after another reopen.
    let log = Log::open(dir.path()).unwrap();
    let offsets: Vec<u64> = read_all(&log, "t", 0, 0, 1 << 20).iter().map(|r| r.offset).collect();
    let first = offsets[7];
    assert_eq!(offsets.len(), 9);
    assert_eq!(log.append("t", 0, &[rec(None, "later", None)]).unwrap(), first + 2);
    assert_eq!(log.committed("g", "t").unwrap(), [Some(first + 2)]);
}

#[test]
fn many_small_segments_are_read_through_a_bounded_number_of_open_files() {
    let dir = TempDir::new();
    let log = Log::open(dir.path()).unwrap();
    let frame = frame_len(Some(b"k"), value(0).as_bytes()) as u64;
    log.create_topic("t", small_segments(frame)).unwrap();
    let n = 3 * crate::log::open_files::capacity() as u64;
    append_values(&log, "t", 0, 0..n);
    assert_eq!(log.describe("t").unwrap().partitions[0].segments as u64, n);
    for _ in 0..2 {
        let all = read_all(&log, "t", 0, 0, 1 << 20);
        assert_eq!(all.len() as u64, n);
        assert!(crate::log::open_files::open_count() <= crate::log::open_files::capacity());
    }
    // Reopened: sealed segments are loaded without keeping their files open.
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(read_all(&log, "t", 0, n - 5, 1 << 20).len(), 5);
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
                // The good records before the damage are delivered, then a read from the
                // damage says where it is.
                let offsets: Vec<u64> = f.records.iter().map(|r| r.offset).collect();
                assert_eq!(
                    offsets,
                    (offset..2).collect::<Vec<_>>(),
                    "up to the damage, never the corrupt record"
                );
            }
            other => panic!("expected Corrupt reading {offset}, got {other:?}"),
        }
    }
    // Offset 3 lies behind the corrupt frame (its length cannot be trusted to find 3).
    assert!(matches!(log.read("t", 0, 3, 1 << 20), Err(BrokerError::Corrupt { .. })));
    let after = read_all(&log, "t", 0, 4, 1 << 20);
    assert_eq!(after.iter().map(|r| r.offset).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
    // The cut frame (offset 9, 41 bytes: room for two of the smallest frames) may have been
    // handed out: the next append is above what it could have held.
    assert_eq!(log.append("t", 0, &[rec(None, "new", None)]).unwrap(), 11);
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
        .args(["log::tests::recovery::second_open_from_another_process_is_refused", "--exact", "--nocapture"])
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
        .args(["log::tests::recovery::kill_9_loses_nothing_that_was_acknowledged", "--exact", "--nocapture"])
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
fn appends_are_refused_before_an_offset_reaches_2_pow_48() {
    use super::super::MAX_OFFSET;
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
    for stem in [format!("{:020}", super::super::MAX_OFFSET), format!("{}", i64::MAX), "9".repeat(20)] {
        let dir = TempDir::new();
        Log::open(dir.path()).unwrap().create_topic("t", config(1, FsyncPolicy::Never)).unwrap();
        let path = dir.path().join(format!("topics/t/0/{stem:0>20}.log"));
        std::fs::write(&path, b"").unwrap();
        let log = Log::open(dir.path()).expect("the damage stays with its topic");
        match log.describe("t") {
            Err(BrokerError::Damaged { topic, why }) => {
                assert_eq!(topic, "t");
                assert!(why.contains(&path.display().to_string()), "{why}");
            }
            other => panic!("expected Damaged for {stem}, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn damage_to_one_topic_stays_with_it_and_the_others_work() {
    let dir = TempDir::new();
    {
        let log = Log::open(dir.path()).unwrap();
        for t in ["good", "bad-meta", "bad-segment", "dir-segment"] {
            log.create_topic(t, config(1, FsyncPolicy::Never)).unwrap();
            log.append(t, 0, &[rec(None, "v", None)]).unwrap();
        }
    }
    let topics = dir.path().join("topics");
    std::fs::write(topics.join("bad-meta/meta.json"), b"{ not json").unwrap();
    // An impossible name: a base offset past 2^48.
    std::fs::write(topics.join(format!("bad-segment/0/{}.log", "9".repeat(20))), b"").unwrap();
    std::fs::create_dir(topics.join(format!("dir-segment/0/{:020}.log", 7))).unwrap();

    let log = Log::open(dir.path()).expect("a damaged topic does not stop the directory opening");
    assert_eq!(log.topics(), ["good"]);
    let damaged: Vec<String> = log.damaged().into_iter().map(|(t, _)| t).collect();
    assert_eq!(damaged, ["bad-meta", "bad-segment", "dir-segment"]);
    for t in ["bad-meta", "bad-segment", "dir-segment"] {
        let err = log.read(t, 0, 0, 1024).map(|_| ()).unwrap_err();
        assert!(matches!(err, BrokerError::Damaged { .. }), "{t}: {err}");
        assert!(err.to_string().starts_with(&format!("topic `{t}` is damaged")), "{err}");
        let again = log.create_topic(t, config(1, FsyncPolicy::Never)).unwrap_err();
        assert!(matches!(again, BrokerError::Damaged { .. }), "creating {t} over its damage: {again}");
    }
    assert_eq!(log.read("good", 0, 0, 1024).unwrap().records.len(), 1);
    log.append("good", 0, &[rec(None, "w", None)]).unwrap();
    log.create_topic("new", config(1, FsyncPolicy::Never)).unwrap();
}

#[test]
fn a_commit_beyond_the_recovered_end_keeps_its_offsets_from_being_handed_out_again() {
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
        assert_eq!(log.committed("g", "t").unwrap(), [Some(10), Some(3)], "kept: offsets below it stay used");
        assert_eq!(log.committed("h", "t").unwrap(), [Some(4), None]);
        assert_eq!(log.read("t", 0, 10, 1024).unwrap().records, [], "g resumes at the end");
        // The partition grows from the commit on.
        append_values(&log, "t", 0, 10..20);
        let offsets: Vec<u64> = read_all(&log, "t", 0, 0, 1 << 20).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..6).chain(10..20).collect::<Vec<_>>());
    }
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.high_watermark("t", 0).unwrap(), 20);
    assert_eq!(log.committed("g", "t").unwrap(), [Some(10), Some(3)]);
    assert_eq!(log.committed("h", "t").unwrap(), [Some(4), None]);
    assert_eq!(read_all(&log, "t", 0, 10, 1 << 20).len(), 10);
}
