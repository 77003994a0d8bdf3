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

/// The windows topology with the given outputs, over `workers` workers.
fn windows_topology(dir: &TempDir, name: &str, workers: usize, out: &std::path::Path) -> std::path::PathBuf {
    let events = repo_file("config/events.jsonl");
    dir.topology(
        &format!("{name}.toml"),
        &format!(
            r#"
name = "{name}"
workers = {workers}

[settings]
message_timeout_secs = 30
max_spout_pending = 1000

[[spouts]]
id = "events"
kind = "file-spout"
config = {{ path = "{events}", format = "jsonl", fields = ["word", "ts"], rate = 300 }}

[[bolts]]
id = "count"
kind = "window-count"
parallelism = 2
config = {{ key = "word" }}
window = {{ length = "10s", timestamp_field = "ts", lag = "2s", watermark_interval = "100ms", late_stream = "late" }}
inputs = [{{ from = "events", grouping = {{ fields = ["word"] }} }}]

[[bolts]]
id = "counts"
kind = "file-sink"
config = {{ path = "{out}/window-counts.jsonl" }}
inputs = [{{ from = "count" }}]

[[bolts]]
id = "late"
kind = "file-sink"
config = {{ path = "{out}/late.jsonl" }}
inputs = [{{ from = "count", stream = "late" }}]
"#,
            events = events.display(),
            out = out.display(),
        ),
    )
}

/// (key, window start, count) of every result, sorted.
type Counts = Vec<(String, i64, u64)>;
/// The late events' (word, ts), sorted.
type Late = Vec<(String, i64)>;

fn results(out: &std::path::Path) -> (Counts, Late) {
    let read = |name: &str| {
        let path = out.join(name);
        if path.exists() {
            read_json_lines(&path)
        } else {
            Vec::new()
        }
    };
    let mut counts: Counts = read("window-counts.jsonl")
        .iter()
        .map(|r| {
            let key = r["key"].as_str().expect("a key").to_string();
            (key, r["window_start"].as_i64().expect("a start"), r["count"].as_u64().expect("a count"))
        })
        .collect();
    counts.sort();
    let mut late: Late = read("late.jsonl")
        .iter()
        .map(|r| (r["word"].as_str().expect("a word").to_string(), r["ts"].as_i64().expect("a ts")))
        .collect();
    late.sort();
    (counts, late)
}

#[test]
fn windows_across_workers_give_the_results_of_a_local_run() {
    let dir = TempDir::new("windows-cluster");
    let (local_out, cluster_out) = (dir.join("local"), dir.join("cluster"));
    std::fs::create_dir_all(&local_out).expect("mkdir");
    std::fs::create_dir_all(&cluster_out).expect("mkdir");
    let local = dir.squall(["local"]).arg(windows_topology(&dir, "windows-local", 1, &local_out)).run();
    local.assert_success();
    let expected = results(&local_out);
    let counted: u64 = expected.0.iter().map(|(_, _, n)| n).sum();
    assert_eq!(counted + expected.1.len() as u64, 300, "{local}");

    // The spout and the two window tasks on three workers over two supervisors: the window
    // tasks' watermarks follow a spout in another process, and the end of its file reaches
    // them across the transport.
    let cluster = squall_tests::cluster::Cluster::start(&dir, 2, 2);
    let submitted = cluster.squall(["submit"]).arg(windows_topology(&dir, "windows", 3, &cluster_out)).run();
    submitted.assert_success();
    cluster.wait_until(std::time::Duration::from_secs(180), "every event is counted or late", |_| {
        let (counts, late) = results(&cluster_out);
        counts.iter().map(|(_, _, n)| n).sum::<u64>() + late.len() as u64 >= 300
    });
    assert_eq!(results(&cluster_out), expected, "the cluster's windows are the local run's");
    cluster.wait_until(std::time::Duration::from_secs(60), "status shows the windows fired", |c| {
        c.status("windows").is_some_and(|s| s["components"]["count"]["windows_fired"].as_u64() > Some(0))
    });
    let status = cluster.squall(["status", "windows"]).run();
    status.assert_success();
    assert!(status.stdout.contains("windows fired"), "the text status shows windows: {status}");
}

#[test]
fn the_text_summary_shows_windows_fired_late_and_lag() {
    let dir = TempDir::new("windows-text");
    let out = dir
        .squall(["local"])
        .arg(repo_file("config/windows.toml"))
        .current_dir(repo_file(""))
        .env("OUT_DIR", dir.path())
        .env("RATE", "0")
        .run();
    out.assert_success();
    let late = read_json_lines(&dir.join("late.jsonl")).len();
    let row = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("windowed"))
        .find(|l| l.starts_with("count "))
        .unwrap_or_else(|| panic!("a windows row for `count`: {out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells[1].parse::<u64>().is_ok_and(|fired| fired > 0), "windows fired: {row}");
    assert_eq!(cells[2].parse::<usize>().ok(), Some(late), "late: {row}");
}

/// `squall local` of a count per 1 s event-time window over `count` numbers, each number its
/// own timestamp in ms (1,000 events a window); returns its JSON summary's window figures and
/// its peak resident memory in KiB, as sampled from /proc while it ran.
fn count_windows_over_numbers(dir: &TempDir, count: u64, acking: bool) -> (squall_tests::Outcome, u64) {
    let file = dir.topology(
        &format!("numbers-{count}-{acking}.toml"),
        &format!(
            r#"
name = "numbers-{count}"

[settings]
acking = {acking}
max_spout_pending = 5000

[[spouts]]
id = "numbers"
kind = "sequence"
config = {{ count = {count} }}

[[bolts]]
id = "count"
kind = "window-count"
window = {{ length = "1s", timestamp_field = "n", lag = "10ms" }}
inputs = [{{ from = "numbers" }}]
"#
        ),
    );
    let mut running = dir.squall(["local"]).arg(file).arg("--json").spawn();
    let status = format!("/proc/{}/status", running.pid());
    let mut peak_kb = 0;
    while !running.has_exited() {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:")?.trim().trim_end_matches("kB").trim().parse().ok())
        });
        peak_kb = peak_kb.max(hwm.unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (running.wait(), peak_kb)
}

#[test]
fn the_aggregate_form_keeps_memory_flat_over_millions_of_events() {
    let dir = TempDir::new("windows-memory");
    let (small, small_kb) = count_windows_over_numbers(&dir, 200_000, true);
    let (large, large_kb) = count_windows_over_numbers(&dir, 2_000_000, true);
    for (out, windows) in [(&small, 200), (&large, 2_000)] {
        out.assert_success();
        let summary = out.summary();
        assert_eq!(summary.component("count").count("windows_fired"), windows, "{out}");
        assert_eq!(summary.component("count").count("late"), 0, "{out}");
    }
    assert_eq!(large.summary().component("numbers").acked(), 2_000_000, "{large}");
    // Ten times the events, held a window at a time: the peak barely moves (holding every
    // event, even at 40 bytes each, would add 70 MiB).
    assert!(small_kb > 0 && large_kb > 0, "peak memory was read");
    assert!(
        large_kb < small_kb + 32 * 1024,
        "peak RSS {large_kb} KiB over 2,000,000 events against {small_kb} KiB over 200,000"
    );
}

#[test]
fn without_acking_the_aggregate_form_fires_every_window_from_accumulators_alone() {
    let dir = TempDir::new("windows-unacked");
    let (out, _) = count_windows_over_numbers(&dir, 100_000, false);
    out.assert_success();
    let summary = out.summary();
    assert_eq!(summary.component("count").count("windows_fired"), 100, "{out}");
    assert_eq!(summary.component("count").count("executed"), 100_000, "{out}");
    assert_eq!(summary.component("count").count("emitted"), 100, "one result a window: {out}");
}
