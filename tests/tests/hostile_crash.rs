//! Crashes of the shipped log pipeline: `squall local config/log-pipeline.toml`, killed with
//! kill -9 several times mid-stream and started again, loses no record and redoes at most
//! what the README promises: `max_uncommitted` (5000 in that file) records per partition per
//! crash, 3 partitions.

use std::time::Duration;

use squall_tests::pipeline::{self, acked_thousands};
use squall_tests::{repo_file, TempDir};

const DEADLINE: Duration = Duration::from_secs(240);
const RECORDS: u64 = 200_000;
/// The README's bound per crash: `max_uncommitted` of config/log-pipeline.toml × 3 partitions.
const REDONE_PER_CRASH: u64 = 3 * 5000;

#[test]
fn kill_9_of_the_log_pipeline_redoes_at_most_the_uncommitted_records_per_crash() {
    let dir = TempDir::new("hostile-crash");
    let data = dir.join("data").display().to_string();
    let topic = |args: &[&str]| {
        dir.squall(["topic"].iter().chain(args).chain(&["--data-dir", &data]))
            .timeout(DEADLINE)
            .run()
            .assert_success();
    };
    topic(&["create", "in", "--partitions", "3"]);
    topic(&["create", "out", "--partitions", "3"]);
    topic(&["produce", "in", "--count", &RECORDS.to_string()]);
    let file = repo_file("config/log-pipeline.toml").display().to_string();

    let mut crashes = 0;
    for _ in 0..3 {
        let mut run = dir.squall(["local", &file, "--data-dir", &data]).timeout(DEADLINE).spawn();
        // Killed once its progress shows records acked: mid-stream, unless it is nearly done.
        if run.wait_for_stderr_line(DEADLINE, acked_thousands).is_none() {
            let out = run.wait();
            out.assert_success();
            break;
        }
        let killed = run.kill_hard();
        if killed.status.success() {
            break; // it ended by itself first
        }
        crashes += 1;
    }
    assert!(crashes >= 1, "no run was killed mid-stream");
    dir.squall(["local", &file, "--data-dir", &data]).timeout(DEADLINE).run().assert_success();

    let records: Vec<_> = pipeline::read_all(&dir.join("data"), "out").into_iter().flatten().collect();
    let (missing, duplicates) =
        pipeline::missing_and_duplicates(records.iter().map(|r| r.key.as_deref()), RECORDS);
    assert_eq!(missing, 0, "every record of `in` reached `out`");
    eprintln!("{crashes} crashes, {duplicates} duplicates");
    assert!(
        duplicates <= crashes * REDONE_PER_CRASH,
        "{duplicates} duplicates after {crashes} crashes: more than {REDONE_PER_CRASH} per crash"
    );
}
