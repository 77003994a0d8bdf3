//! `squall top` end to end: against `squall local FILE --ui ADDR`, `--once` prints one row per
//! component with its live rate, as a script reads it; an unknown topology is a one-line error.

use std::time::Duration;

use squall_tests::ui::{local_ui, wait_for, LOCAL_SECRET};
use squall_tests::TempDir;

#[test]
fn top_once_shows_every_component_of_a_local_run_with_its_rate() {
    let dir = TempDir::new("top-local");
    let file = dir.topology(
        "counted.toml",
        r#"
name = "counted"

[[spouts]]
id = "numbers"
kind = "sequence"
config = { count = 100000000, rate = 2000 }

[[bolts]]
id = "sink"
kind = "log"
parallelism = 2
inputs = [{ from = "numbers", grouping = "shuffle" }]
"#,
    );
    let (run, addr) = local_ui(&dir, &file);
    let mut shown = String::new();
    wait_for(Duration::from_secs(120), "top shows the sink executing", || {
        let out =
            dir.squall(["top", "counted", "--once", "--ui", &addr]).env("SQUALL_SECRET", LOCAL_SECRET).run();
        out.assert_success();
        shown = out.stdout.clone();
        let sink = shown.lines().find(|l| l.starts_with("sink ")).unwrap_or_default().to_string();
        // The fourth column is the rate: non-zero once the run is going.
        sink.split_whitespace().nth(3).is_some_and(|rate| rate != "0" && rate != "0.0")
    });
    assert!(shown.starts_with("topology counted: ACTIVE"), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("numbers ") && l.contains("sequence")), "{shown}");

    let out = dir.squall(["top", "nosuch", "--once", "--ui", &addr]).env("SQUALL_SECRET", LOCAL_SECRET).run();
    assert!(!out.status.success());
    assert!(out.stderr.contains("no topology named `nosuch`"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    run.kill_hard();
}
