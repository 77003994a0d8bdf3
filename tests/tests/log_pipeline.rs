//! Broker to broker, at least once: `log-spout` → bolts → `log-sink` through the embedded log,
//! run with the real binary as a user would (`squall topic create|produce`, `squall local`).
//!
//! Pins: with a bolt failing 10% of tuples every input key reaches the output topic and the
//! group's offsets end committed at the end of every partition; a `squall local` killed with
//! kill -9 mid-run and started again resumes from the committed offsets, loses nothing and
//! duplicates no more than the uncommitted bound; the README's three commands work; a log
//! whose writer was killed with kill -9 mid-append reopens with only whole records.

use std::path::Path;
use std::time::{Duration, Instant};

use squall_broker::log::Log;
use squall_broker::Record;
use squall_tests::pipeline::{self, assert_duplicates_bounded, run_despite_failing_tuples, taken};
use squall_tests::{repo_file, BrokerServer, Outcome, TempDir};

const DEADLINE: Duration = Duration::from_secs(120);

/// `squall topic ARGS… --data-dir DIR`, which must succeed.
fn topic(dir: &TempDir, args: &[&str]) -> Outcome {
    let data = dir.join("data").display().to_string();
    let out = dir.squall(["topic"].iter().chain(args).chain(&["--data-dir", &data])).timeout(DEADLINE).run();
    out.assert_success();
    out
}

/// Creates topics `in` and `out` of 3 partitions and fills `in` with `count` records keyed
/// 0..count.
fn setup(dir: &TempDir, count: u64) {
    topic(dir, &["create", "in", "--partitions", "3"]);
    topic(dir, &["create", "out", "--partitions", "3"]);
    topic(dir, &["produce", "in", "--count", &count.to_string()]);
}

/// (input keys 0..count missing from the output, output records beyond one per key).
fn missing_and_duplicates(data: &Path, count: u64) -> (u64, u64) {
    let records: Vec<Record> = pipeline::read_all(data, "out").into_iter().flatten().collect();
    pipeline::missing_and_duplicates(records.iter().map(|r| r.key.as_deref()), count)
}

/// The group's committed offsets of `in`, and the partitions' high watermarks.
fn committed_and_ends(data: &Path, group: &str) -> (Vec<Option<u64>>, Vec<u64>) {
    let log = Log::open(data).unwrap();
    let ends = log.describe("in").unwrap().partitions.iter().map(|p| p.high_watermark).collect();
    (log.committed(group, "in").unwrap(), ends)
}

/// log-spout (2 tasks) → flaky → log-sink (2 tasks), ending once `in` is done.
fn flaky_pipeline(dir: &TempDir, max_uncommitted: u64) -> String {
    flaky_pipeline_on(dir, max_uncommitted, "embedded")
}

/// [`flaky_pipeline`] through `broker` ("embedded" or a server's address).
fn flaky_pipeline_on(dir: &TempDir, max_uncommitted: u64, broker: &str) -> String {
    let connection = format!(r#"broker = "{broker}""#);
    let log = pipeline::Broker::new("flaky-pipeline", "flaky-pipeline", "log", &connection, "");
    pipeline::flaky_pipeline(dir, &log, max_uncommitted, true)
}

#[test]
fn every_record_reaches_the_output_despite_failing_tuples() {
    let dir = TempDir::new("log-flaky");
    let count = 20_000;
    setup(&dir, count);
    let file = flaky_pipeline(&dir, 1000);
    let data = dir.join("data").display().to_string();
    let (_, summary) = run_despite_failing_tuples(&dir, &file, &["--data-dir", &data], count, DEADLINE);
    let sink = summary.component("sink");
    assert_eq!(
        sink.executed(),
        sink.acked(),
        "the sink acked every input it executed (ticks are not counted)"
    );
    let (missing, _) = missing_and_duplicates(&dir.join("data"), count);
    assert_eq!(missing, 0, "every input key is in the output");
    let (committed, ends) = committed_and_ends(&dir.join("data"), "g");
    assert_eq!(committed, ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(), "committed to the end");
}

#[test]
fn killed_run_resumes_from_committed_offsets_without_loss() {
    let dir = TempDir::new("log-kill");
    let count = 100_000;
    let max_uncommitted = 250;
    setup(&dir, count);
    let file = flaky_pipeline(&dir, max_uncommitted);
    let data = dir.join("data").display().to_string();

    let mut first = dir.squall(["local", &file, "--data-dir", &data]).timeout(DEADLINE).spawn();
    // Progress lines come once a second: by 1000 acked, some offsets were committed.
    pipeline::wait_for_thousand_acked(&mut first, DEADLINE);
    let killed = first.kill_hard();
    assert!(!killed.status.success(), "the first run was killed mid-run, not finished\n{killed}");

    let (committed, _) = committed_and_ends(&dir.join("data"), "g");
    let resumed_from: u64 = committed.iter().map(|c| c.unwrap_or(0)).sum();
    assert!(resumed_from > 0, "offsets were committed before the kill: {committed:?}");

    let second = dir.squall(["local", &file, "--json", "--data-dir", &data]).timeout(DEADLINE).run();
    second.assert_success();
    assert_eq!(
        taken(&second),
        count - resumed_from,
        "the second run took exactly the records past the committed offsets"
    );

    let (missing, duplicates) = missing_and_duplicates(&dir.join("data"), count);
    assert_eq!(missing, 0, "every input key is in the output");
    assert_duplicates_bounded(duplicates, max_uncommitted);
}

#[test]
fn pipeline_through_a_broker_server_survives_kill_9() {
    let dir = TempDir::new("log-remote");
    let data = dir.join("data");
    let server = BrokerServer::start(&dir, &data);
    let addr = server.addr().to_string();
    let remote = |args: &[&str]| {
        let out =
            dir.squall(["topic"].iter().chain(args).chain(&["--broker", &addr])).timeout(DEADLINE).run();
        out.assert_success();
    };
    let count = 100_000;
    let max_uncommitted = 250;
    remote(&["create", "in", "--partitions", "3"]);
    remote(&["create", "out", "--partitions", "3"]);
    remote(&["produce", "in", "--count", &count.to_string()]);
    let file = flaky_pipeline_on(&dir, max_uncommitted, &addr);

    let mut first = dir.squall(["local", &file]).timeout(DEADLINE).spawn();
    first.wait_for_stderr_line(DEADLINE, |l| l.contains("records: ")).expect("the first run is under way");
    let killed = first.kill_hard();
    assert!(!killed.status.success(), "killed mid-run\n{killed}");
    dir.squall(["local", &file]).timeout(DEADLINE).run().assert_success();

    server.stop().assert_success();
    let (missing, duplicates) = missing_and_duplicates(&data, count);
    assert_eq!(missing, 0, "every input key is in the output");
    assert_duplicates_bounded(duplicates, max_uncommitted);
    let (committed, ends) = committed_and_ends(&data, "g");
    assert_eq!(committed, ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(), "committed to the end");
}

#[test]
fn readme_log_pipeline_commands_work() {
    let dir = TempDir::new("log-readme");
    let data = dir.join("data");
    let run = |args: &[&str]| {
        let out = dir.squall(args).env("SQUALL_DATA_DIR", &data).timeout(DEADLINE).run();
        out.assert_success();
        out
    };
    run(&["topic", "create", "in", "--partitions", "3"]);
    run(&["topic", "create", "out", "--partitions", "3"]);
    run(&["topic", "produce", "in", "--count", "1000"]);
    let file = repo_file("config/log-pipeline.toml").display().to_string();
    run(&["local", &file]);

    let records: Vec<Record> = pipeline::read_all(&data, "out").into_iter().flatten().collect();
    assert_eq!(records.len(), 1000);
    assert!(records.iter().all(|r| r.value.ends_with(b"!")), "each value was exclaimed");
    let (missing, duplicates) = missing_and_duplicates(&data, 1000);
    assert_eq!((missing, duplicates), (0, 0));
}

#[test]
fn log_killed_mid_append_reopens_with_only_whole_records() {
    let dir = TempDir::new("log-torn");
    topic(&dir, &["create", "big", "--partitions", "2", "--fsync", "never"]);
    let data = dir.join("data");
    let producer = dir
        .squall(["topic", "produce", "big", "--count", "50000000", "--data-dir", &data.display().to_string()])
        .timeout(DEADLINE)
        .spawn();
    // Wait until appends are well under way, then kill the producer mid-stream.
    let segment_dir = data.join("topics/big/0");
    let deadline = Instant::now() + DEADLINE;
    while dir_bytes(&segment_dir) < 4 << 20 {
        assert!(Instant::now() < deadline, "the producer never wrote 4 MiB");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = producer.kill_hard();
    assert!(!killed.status.success(), "the producer was killed mid-run\n{killed}");

    let describe = topic(&dir, &["describe", "big", "--json"]);
    assert!(describe.stdout.contains("high_watermark"), "{describe}");
    for (p, records) in pipeline::read_all(&data, "big").iter().enumerate() {
        assert!(!records.is_empty(), "partition {p} kept its records");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "partition {p}: offsets are dense");
            let key: u64 = std::str::from_utf8(r.key.as_deref().unwrap()).unwrap().parse().unwrap();
            assert!(key < 50_000_000);
            assert_eq!(r.value.len(), 100, "partition {p} offset {i}: a whole value");
        }
    }
}

/// Bytes of the files directly in `dir` (0 if it does not exist yet).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}
