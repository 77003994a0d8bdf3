//! Windows end to end: the README's `squall local config/windows.toml` over the shipped
//! events file, run as a user would.

use std::collections::BTreeMap;

use squall_tests::{read_json_lines, repo_file, TempDir};

#[test]
fn the_readme_windows_run_ends_by_itself_with_every_event_counted_or_late() {
    let dir = TempDir::new("windows");
    // From the repository's root, as the README runs it; outputs into the test's directory.
    let out = dir
        .squall(["local"])
        .arg(repo_file("config/windows.toml"))
        .arg("--json")
        .current_dir(repo_file(""))
        .env("OUT_DIR", dir.path())
        .run();
    out.assert_success();
    let summary = out.summary();
    assert_eq!(summary.component("events").acked(), 300, "{out}");
    assert_eq!(summary.component("events").failed(), 0, "{out}");
    let counts = read_json_lines(&dir.join("window-counts.jsonl"));
    let late = read_json_lines(&dir.join("late.jsonl"));
    let counted: u64 = counts.iter().map(|r| r["count"].as_u64().expect("an integer count")).sum();
    assert_eq!(counted + late.len() as u64, 300, "every event is in a window or late");
    assert_eq!(summary.component("count").count("late"), late.len() as u64);
    // One result per word and window, each window 10 s wide and aligned to the epoch.
    let mut seen = BTreeMap::new();
    for r in &counts {
        let (start, end) = (r["window_start"].as_i64().unwrap(), r["window_end"].as_i64().unwrap());
        assert_eq!((end - start, start % 10_000), (10_000, 0), "{r:?}");
        let key = (r["key"].as_str().unwrap().to_string(), start);
        assert!(seen.insert(key, ()).is_none(), "one result per word and window: {r:?}");
    }
}
