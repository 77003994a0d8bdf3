//! Stateful runs killed with kill -9 mid-stream and started again: `squall state dump` then
//! shows exactly the true counts with `guarantee = "exactly_once"` (in the log backend and in
//! a real Redis), and no count below the truth with at_least_once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use squall_testkit::redis::Redis;
use squall_tests::pipeline::acked_thousands;
use squall_tests::TempDir;

const DEADLINE: Duration = Duration::from_secs(300);
const RECORDS: u64 = 400_000;
const WORDS: u64 = 100;

fn word(i: u64) -> String {
    format!("w{}", (i * 7919) % WORDS)
}

fn truth() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(word(i)).or_default() += 1;
    }
    counts
}

/// A topic `in` of 3 partitions holding RECORDS words, in `dir`/data.
fn produce(dir: &TempDir) -> String {
    let data = dir.join("data").display().to_string();
    let topic = |args: &[&str], stdin: Option<String>| {
        let mut command =
            dir.squall(["topic"].iter().chain(args).chain(&["--data-dir", &data])).timeout(DEADLINE);
        if let Some(stdin) = stdin {
            command = command.stdin(stdin);
        }
        command.run().assert_success();
    };
    topic(&["create", "in", "--partitions", "3"], None);
    let lines: String = (0..RECORDS).map(|i| word(i) + "\n").collect();
    topic(&["produce", "in"], Some(lines));
    data
}

/// records (log-spout of `in`) → count (state-count, 2 tasks).
fn topology(dir: &TempDir, guarantee: &str, state: &str) -> PathBuf {
    dir.topology(
        "counts.toml",
        &format!(
            r#"
name = "counts"

[settings]
guarantee = "{guarantee}"
max_spout_pending = 2000
state = {{ checkpoint_interval_ms = 200, {state} }}

[[spouts]]
id = "records"
kind = "log-spout"
config = {{ topic = "in", group = "counts", stop_at_end = true }}

[[bolts]]
id = "count"
kind = "state-count"
parallelism = 2
config = {{ key = "value" }}
inputs = [{{ from = "records", grouping = {{ fields = ["value"] }} }}]
"#
        ),
    )
}

/// Runs `file` killed with kill -9 twice mid-stream, then to its end; returns the crashes.
fn crash_twice_then_finish(dir: &TempDir, data: &str, file: &Path) -> u32 {
    let file = file.display().to_string();
    let mut crashes = 0;
    for _ in 0..2 {
        let mut run = dir.squall(["local", &file, "--data-dir", data]).timeout(DEADLINE).spawn();
        // Killed once its progress shows records acked: mid-stream, unless it is nearly done.
        if run.wait_for_stderr_line(DEADLINE, acked_thousands).is_none() {
            run.wait().assert_success();
            break;
        }
        if run.kill_hard().status.success() {
            break; // it ended by itself first
        }
        crashes += 1;
    }
    dir.squall(["local", &file, "--data-dir", data]).timeout(DEADLINE).run().assert_success();
    crashes
}

fn dump(dir: &TempDir, data: &str, file: &Path) -> BTreeMap<String, u64> {
    let file = file.display().to_string();
    let out =
        dir.squall(["state", "dump", &file, "count", "--json", "--data-dir", data]).timeout(DEADLINE).run();
    out.assert_success();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn exactly_once_counts_in_the_log_backend_equal_the_truth_after_two_kill_9() {
    let dir = TempDir::new("state-crash-exact");
    let data = produce(&dir);
    let file = topology(&dir, "exactly_once", r#"backend = "log""#);
    let crashes = crash_twice_then_finish(&dir, &data, &file);
    assert!(crashes >= 1, "no run was killed mid-stream");
    eprintln!("{crashes} kill -9");
    assert_eq!(dump(&dir, &data, &file), truth(), "after {crashes} kill -9");
}

#[test]
fn at_least_once_counts_in_the_log_backend_are_nowhere_below_the_truth_after_two_kill_9() {
    let dir = TempDir::new("state-crash-alo");
    let data = produce(&dir);
    let file = topology(&dir, "at_least_once", r#"backend = "log""#);
    let crashes = crash_twice_then_finish(&dir, &data, &file);
    assert!(crashes >= 1, "no run was killed mid-stream");
    let counted = dump(&dir, &data, &file);
    for (word, n) in truth() {
        let got = counted.get(&word).copied().unwrap_or(0);
        assert!(got >= n, "{word}: {got} < {n} after {crashes} kill -9");
    }
}

#[test]
fn exactly_once_counts_in_redis_equal_the_truth_after_two_kill_9() {
    let redis = Redis::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new("state-crash-redis");
    let data = produce(&dir);
    let file = topology(&dir, "exactly_once", &format!(r#"backend = "redis", url = "{}""#, redis.url()));
    let crashes = crash_twice_then_finish(&dir, &data, &file);
    assert!(crashes >= 1, "no run was killed mid-stream");
    eprintln!("{crashes} kill -9");
    assert_eq!(dump(&dir, &data, &file), truth(), "after {crashes} kill -9");
}

#[test]
fn readme_stateful_word_count_commands_count_each_word_exactly_once_across_a_kill_9() {
    let dir = TempDir::new("state-readme");
    let data = dir.join("data").display().to_string();
    let file = squall_tests::repo_file("config/stateful-wordcount.toml").display().to_string();
    let squall =
        |args: &[&str]| dir.squall(args.iter().chain(&["--data-dir", data.as_str()])).timeout(DEADLINE);
    squall(&["topic", "create", "sentences", "--partitions", "3"]).run().assert_success();
    squall(&["topic", "produce", "sentences"])
        .stdin("the cow jumped over the moon\nthe moon\n")
        .run()
        .assert_success();
    // Killed mid-way (it follows the topic forever), then run as the README says, twice.
    let mut endless = squall(&["local", &file]).env("STOP_AT_END", "false").spawn();
    endless.wait_for_stderr_line(DEADLINE, |l| l.contains("sentences: ")).expect("the run is under way");
    assert!(!endless.kill_hard().status.success());
    squall(&["local", &file]).run().assert_success();
    squall(&["local", &file]).run().assert_success();
    let out = squall(&["state", "dump", &file, "count"]).run();
    out.assert_success();
    let counts: BTreeMap<String, u64> = serde_json::from_str(&out.stdout).expect("a JSON object");
    let expected: BTreeMap<String, u64> = [("cow", 1), ("jumped", 1), ("moon", 2), ("over", 1), ("the", 3)]
        .map(|(w, n)| (w.to_string(), n))
        .into();
    assert_eq!(counts, expected);
}
