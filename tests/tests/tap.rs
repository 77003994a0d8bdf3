//! `squall tap NAME COMPONENT [--stream S] [--count N]`, end to end: against a local run's UI
//! (`squall local FILE --ui ADDR`) and against a real cluster (through nimbus, fed by the
//! workers' heartbeats): it prints the chosen component's tuples of the chosen stream as JSON
//! lines and exits after N; an unknown component or stream, or a tap without the secret, is a
//! one-line error and a non-zero exit.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use squall_tests::cluster::Cluster;
use squall_tests::ui::{local_ui, LOCAL_SECRET};
use squall_tests::{Outcome, TempDir};

/// One cluster or local run at a time: each is a handful of processes on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Word count over endless sentences (1,000 a second).
fn wordcount(dir: &TempDir) -> PathBuf {
    dir.topology(
        "tapped.toml",
        r#"
name = "tapped"
workers = 2

[[spouts]]
id = "sentences"
kind = "random-sentence"
config = { rate = 1000, limit = 0 }

[[bolts]]
id = "split"
kind = "split-sentence"
parallelism = 2
inputs = [{ from = "sentences", grouping = "shuffle" }]

[[bolts]]
id = "count"
kind = "word-count"
parallelism = 2
inputs = [{ from = "split", grouping = { fields = ["word"] } }]
"#,
    )
}

/// The JSON lines a successful tap printed: `count` of them, each of `component` on stream
/// `default`, its tuple holding `field`.
#[track_caller]
fn check_lines(out: &Outcome, count: usize, component: &str, field: &str) -> Vec<Value> {
    out.assert_success();
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{out}")))
        .collect();
    assert_eq!(lines.len(), count, "{out}");
    for line in &lines {
        assert_eq!(line["component"], component, "{line}");
        assert_eq!(line["stream"], "default", "{line}");
        assert!(line["tuple"][field].is_string() || line["tuple"][field].is_number(), "{line}");
        assert!(line["task"].is_u64() && line["timestamp"].as_u64() > Some(1_600_000_000_000), "{line}");
    }
    lines
}

#[track_caller]
fn check_refused(out: &Outcome, reason: &str) {
    out.assert_failure();
    assert!(out.stdout.is_empty(), "{out}");
    let stderr = out.stderr.trim();
    assert!(stderr.contains(reason), "expected `{reason}`:\n{out}");
    assert_eq!(stderr.lines().count(), 1, "one line:\n{out}");
}

#[test]
fn tap_prints_a_local_runs_tuples_of_the_chosen_stream_and_refuses_what_does_not_exist() {
    let _serial = serial();
    let dir = TempDir::new("tap-local");
    let (_run, addr) = local_ui(&dir, &wordcount(&dir));
    let tap = |args: &[&str]| {
        args.iter()
            .fold(dir.squall(["tap", "tapped"]), |s, a| s.arg(a))
            .arg("--ui")
            .arg(&addr)
            .env("SQUALL_SECRET", LOCAL_SECRET)
            .timeout(Duration::from_secs(120))
            .run()
    };
    let lines = check_lines(&tap(&["split", "--stream", "default", "--count", "20"]), 20, "split", "word");
    assert!(lines.iter().all(|l| l["tuple"].as_object().map(|t| t.len()) == Some(1)), "{lines:?}");
    check_lines(&tap(&["count", "--count", "5"]), 5, "count", "count");
    check_refused(
        &tap(&["split", "--stream", "nope"]),
        "component `split` emits no stream `nope` (it emits: default)",
    );
    check_refused(&tap(&["nobody"]), "no component `nobody`");
    let without = dir
        .squall(["tap", "tapped", "split", "--count", "1", "--ui"])
        .arg(&addr)
        .env_remove("SQUALL_SECRET")
        .timeout(Duration::from_secs(120))
        .run();
    check_refused(&without, "missing or wrong cluster secret");
}

#[test]
fn tap_prints_a_cluster_topologys_tuples_through_nimbus() {
    let _serial = serial();
    let dir = TempDir::new("tap-cluster");
    let cluster = Cluster::start(&dir, 1, 2);
    cluster.squall(["submit"]).arg(wordcount(&dir)).run().assert_success();
    let tap = |args: &[&str]| {
        let verb = ["tap", "tapped"].iter().chain(args).copied();
        cluster.squall(verb).timeout(Duration::from_secs(180)).run()
    };
    // Both split tasks run on two workers: the tap gathers from whichever hosts them.
    let lines = check_lines(&tap(&["split", "--stream", "default", "--count", "40"]), 40, "split", "word");
    let counts = check_lines(&tap(&["count", "--count", "5"]), 5, "count", "word");
    assert!(counts.iter().all(|l| l["tuple"]["count"].as_u64() >= Some(1)), "{counts:?}");
    let tasks: std::collections::BTreeSet<u64> = lines.iter().filter_map(|l| l["task"].as_u64()).collect();
    assert!(!tasks.is_empty(), "{lines:?}");
    check_refused(
        &tap(&["split", "--stream", "nope"]),
        "component `split` emits no stream `nope` (it emits: default)",
    );
    check_refused(&tap(&["nobody"]), "topology `tapped` has no component `nobody`");
    let unknown = cluster.squall(["tap", "nope", "split"]).timeout(Duration::from_secs(120)).run();
    check_refused(&unknown, "no topology named `nope`");
}
