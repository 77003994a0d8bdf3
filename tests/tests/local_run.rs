//! `squall local`, run as a user runs it: the real binary on topology files.
//!
//! Pins: a bounded topology ends by itself with exit 0 and a JSON summary whose figures add
//! up; word counts are exact (each word's counts 1..=k, once each) with acking on and off;
//! a failing bolt's tuples are replayed until every message arrives; `--for` and SIGINT stop
//! an endless topology, drain it and still print the summary; progress lines report rates
//! on stderr; a bad component config or a task that cannot start ends the run with a
//! non-zero status and a one-line `error: …`, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::Duration;

use squall_tests::{read_json_lines, repo_file, Outcome, TempDir};

/// Deadline for anything the tests wait on: far beyond what a healthy run needs, even on a
/// loaded two-core machine with a debug build.
const DEADLINE: Duration = Duration::from_secs(60);

/// `squall local FILE ARGS…` in `dir`, with the shipped files' knobs unset so their defaults
/// (or what the test sets) apply.
fn local(dir: &TempDir, file: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut command = dir
        .squall(["local", file].iter().chain(args))
        .env_remove("RATE")
        .env_remove("SENTENCES")
        .env_remove("WORDS")
        .timeout(DEADLINE);
    for (key, value) in env {
        command = command.env(key, value);
    }
    command.run()
}

/// Whether `line` is a progress line: `[   1s]  words: 201/s emitted, acked 201, …`.
fn is_progress_line(line: &str) -> bool {
    line.starts_with('[') && line.contains("s]") && line.contains("/s")
}

/// Checks stderr shows no sign of a panic or a backtrace.
#[track_caller]
fn assert_no_panic(outcome: &Outcome) {
    for sign in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!outcome.stderr.contains(sign), "{sign:?} on stderr\n{outcome}");
    }
}

#[test]
fn wordcount_file_ends_by_itself_and_shows_counts() {
    let dir = TempDir::new("wordcount");
    let file = repo_file("config/wordcount.toml").display().to_string();
    let out = local(&dir, &file, &["--json"], &[("SENTENCES", "20000")]);
    out.assert_success();

    let summary = out.summary();
    assert_eq!(summary.topology(), "wordcount");
    assert_eq!(summary.component_ids(), ["count", "sentences", "split"]);
    let (sentences, split, count) =
        (summary.component("sentences"), summary.component("split"), summary.component("count"));
    assert_eq!(sentences.text("kind"), "random-sentence");
    assert_eq!(sentences.emitted(), 20_000, "{out}");
    assert_eq!(sentences.acked(), 20_000, "{out}");
    for c in [&sentences, &split, &count] {
        assert_eq!(c.failed(), 0, "{out}");
    }
    assert_eq!(split.executed(), 20_000, "{out}");
    assert!(split.emitted() > 20_000, "sentences have several words\n{out}");
    assert_eq!(count.executed(), split.emitted(), "{out}");
    assert_eq!((split.count("tasks"), count.count("tasks")), (2, 2));

    // Each count task prints `word-count task T: W words, N total: the=12 …` at cleanup; the
    // totals cover every word counted.
    let totals: Vec<u64> = out
        .stderr_lines()
        .iter()
        .filter(|line| line.starts_with("word-count task "))
        .map(|line| {
            let (_, after) = line.split_once(" words, ").expect("`W words, ` in the line");
            let (total, _) = after.split_once(" total:").expect("`N total:` in the line");
            total.parse::<u64>().expect("a number of words")
        })
        .collect();
    assert_eq!(totals.len(), 2, "one line per count task\n{out}");
    assert_eq!(totals.iter().sum::<u64>(), count.executed(), "{out}");
}

/// random-word (3000 words of 3) -> word-count (fields grouping, 2 tasks) -> file-sink.
fn counted_words_topology(acking: bool) -> String {
    format!(
        r#"name = "exact-count"

[settings]
acking = {acking}

[[spouts]]
id = "words"
kind = "random-word"
config = {{ words = ["apple", "banana", "cherry"], limit = 3000, seed = 20240601 }}

[[bolts]]
id = "count"
kind = "word-count"
parallelism = 2
inputs = [{{ from = "words", grouping = {{ fields = ["word"] }} }}]

[[bolts]]
id = "sink"
kind = "file-sink"
config = {{ path = "counts.jsonl" }}
inputs = [{{ from = "count" }}]
"#
    )
}

/// Runs [`counted_words_topology`] and checks every word's counts are exactly 1..=k.
fn word_count_is_exact(acking: bool) {
    let dir = TempDir::new(if acking { "exact-on" } else { "exact-off" });
    dir.topology("exact.toml", &counted_words_topology(acking));
    let out = local(&dir, "exact.toml", &["--json"], &[]);
    out.assert_success();

    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in read_json_lines(&dir.join("counts.jsonl")) {
        let word = row["word"].as_str().expect("`word` is a string");
        let count = row["count"].as_u64().expect("`count` is a count");
        counts.entry(word.to_string()).or_default().push(count);
    }
    let words: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(words, ["apple", "banana", "cherry"], "{out}");
    let mut total = 0;
    for (word, seen) in &mut counts {
        seen.sort_unstable();
        let k = seen.len() as u64;
        assert!(seen.iter().copied().eq(1..=k), "{word}: expected each of 1..={k} once, got {seen:?}");
        total += k;
    }
    assert_eq!(total, 3000, "{out}");

    let summary = out.summary();
    assert_eq!(summary.component("words").emitted(), 3000, "{out}");
    assert_eq!(summary.component("count").executed(), 3000, "{out}");
    assert_eq!(summary.component("sink").executed(), 3000, "{out}");
    if acking {
        assert_eq!(summary.component("words").acked(), 3000, "{out}");
    }
    for id in ["words", "count", "sink"] {
        assert_eq!(summary.component(id).failed(), 0, "{id}\n{out}");
    }
}

#[test]
fn word_count_is_exact_with_acking_on() {
    word_count_is_exact(true);
}

#[test]
fn word_count_is_exact_with_acking_off() {
    word_count_is_exact(false);
}

#[test]
fn flaky_bolt_failures_are_replayed_until_every_number_arrives() {
    let dir = TempDir::new("flaky");
    dir.topology(
        "flaky.toml",
        r#"name = "replays"

[[spouts]]
id = "numbers"
kind = "sequence"
config = { count = 2000 }

[[bolts]]
id = "flaky"
kind = "flaky"
config = { fail_fraction = 0.1, seed = 7 }
inputs = [{ from = "numbers" }]

[[bolts]]
id = "sink"
kind = "file-sink"
config = { path = "numbers.jsonl" }
inputs = [{ from = "flaky" }]
"#,
    );
    let out = local(&dir, "flaky.toml", &["--json"], &[]);
    out.assert_success();

    let seen: BTreeSet<u64> = read_json_lines(&dir.join("numbers.jsonl"))
        .iter()
        .map(|row| row["n"].as_u64().expect("`n` is a number"))
        .collect();
    let missing: Vec<u64> = (0..2000).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}\n{out}");
    assert!(seen.iter().all(|&n| n < 2000), "{seen:?}");

    let numbers = out.summary().component("numbers");
    assert_eq!(numbers.acked(), 2000, "{out}");
    assert!(numbers.failed() > 0, "a tenth of the tuples fail\n{out}");
    // Every failure is put down to the bolt that failed the tree.
    let by = [(("flaky".to_string(), "failed".to_string()), numbers.failed())];
    assert_eq!(numbers.failed_by(), by.into_iter().collect(), "{out}");
}

/// A spout emitting words without end (`rate` per second, 0 = flat out) into one bolt.
fn endless_topology(rate: u32) -> String {
    format!(
        r#"name = "endless"

[[spouts]]
id = "words"
kind = "random-word"
config = {{ rate = {rate}, limit = 0 }}

[[bolts]]
id = "shout"
kind = "exclamation"
inputs = [{{ from = "words" }}]
"#
    )
}

#[test]
fn for_duration_stops_an_endless_topology() {
    let dir = TempDir::new("for");
    dir.topology("endless.toml", &endless_topology(0));
    let out = local(&dir, "endless.toml", &["--for", "2s"], &[]);
    out.assert_success();
    assert!(out.elapsed >= Duration::from_secs(2), "ended before --for\n{out}");

    // The table: a header, one row per component, then `topology endless ran 2.0s (stopped)`.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("component"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("words ")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("shout ")), "{out}");
    let last = lines.last().expect("a summary");
    assert!(last.starts_with("topology endless ran ") && last.ends_with(" (stopped)"), "{out}");
}

/// Whether `line` says a Ctrl-C was heard and the run is draining.
fn is_interrupted_line(line: &str) -> bool {
    line.starts_with("interrupted: deactivating spouts and draining")
}

#[cfg(unix)]
#[test]
fn sigint_drains_and_prints_summary() {
    let dir = TempDir::new("sigint");
    dir.topology("endless.toml", &endless_topology(500));
    let mut running = dir.squall(["local", "endless.toml", "--json"]).timeout(DEADLINE * 3).spawn();
    // A progress line means the run is under way, and its Ctrl-C handler is installed.
    let progress = running.wait_for_stderr_line(DEADLINE, is_progress_line);
    assert!(progress.is_some(), "no progress line within {DEADLINE:?}; stderr: {:?}", running.stderr_seen());
    running.interrupt();
    let heard = running.wait_for_stderr_line(DEADLINE, is_interrupted_line);
    assert!(heard.is_some(), "SIGINT not heard: {:?}", running.stderr_seen());
    let out = running.wait_for_exit(DEADLINE);
    out.assert_success();
    assert!(!out.stderr.contains("second interrupt"), "{out}");

    // Drained: every tuple the spout emitted was processed and acked.
    let summary = out.summary();
    let (words, shout) = (summary.component("words"), summary.component("shout"));
    assert!(words.emitted() > 0, "{out}");
    assert_eq!(words.acked(), words.emitted(), "{out}");
    assert_eq!(words.failed(), 0, "{out}");
    assert_eq!(shout.executed(), words.emitted(), "{out}");
}

/// A Ctrl-C is never lost, whatever the run loop is doing when it arrives (it once was, when
/// it landed while the loop printed a progress line). Twenty tries, two at a time.
#[cfg(unix)]
#[test]
fn sigint_right_after_a_progress_line_is_not_lost() {
    const RUNNERS: usize = 2;
    const ATTEMPTS: usize = 10;
    let dir = TempDir::new("sigint-race");
    dir.topology("endless.toml", &endless_topology(500));
    let lost: usize = thread::scope(|scope| {
        let runners: Vec<_> = (0..RUNNERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut lost = 0;
                    for _ in 0..ATTEMPTS {
                        let mut running =
                            dir.squall(["local", "endless.toml", "--json"]).timeout(DEADLINE * 2).spawn();
                        let progress = running.wait_for_stderr_line(DEADLINE, is_progress_line);
                        assert!(progress.is_some(), "{:?}", running.stderr_seen());
                        running.interrupt();
                        let patience = Duration::from_secs(20);
                        if running.wait_for_stderr_line(patience, is_interrupted_line).is_some() {
                            running.wait_for_exit(DEADLINE).assert_success();
                        } else {
                            lost += 1; // dropping `running` kills it
                        }
                    }
                    lost
                })
            })
            .collect();
        runners.into_iter().map(|r| r.join().expect("runner")).sum()
    });
    assert_eq!(
        lost,
        0,
        "{lost} of {} SIGINTs sent right after a progress line were lost",
        RUNNERS * ATTEMPTS
    );
}

#[test]
fn progress_lines_report_rates() {
    let dir = TempDir::new("progress");
    dir.topology("endless.toml", &endless_topology(200));
    let out = local(&dir, "endless.toml", &["--for", "3s"], &[]);
    out.assert_success();
    let progress: Vec<&str> = out.stderr_lines().into_iter().filter(|l| is_progress_line(l)).collect();
    assert!(!progress.is_empty(), "no progress line\n{out}");
    for line in &progress {
        assert!(line.contains("words: ") && line.contains("shout: "), "every component in {line:?}");
        assert!(line.contains("/s emitted") && line.contains("/s executed"), "{line:?}");
    }
    assert!(!out.stdout.contains("/s "), "progress goes to stderr only\n{out}");
}

#[test]
fn bad_component_config_fails_with_one_line_error() {
    let dir = TempDir::new("bad-config");
    dir.topology(
        "bad.toml",
        r#"name = "bad"

[[spouts]]
id = "numbers"
kind = "sequence"
config = { count = 10 }

[[bolts]]
id = "flaky"
kind = "flaky"
config = { fail_fraction = 1.5 }
inputs = [{ from = "numbers" }]
"#,
    );
    let out = local(&dir, "bad.toml", &["--json"], &[]);
    out.assert_failure();
    assert_no_panic(&out);
    assert_eq!(out.stdout, "", "no summary for a run that never started");
    let lines = out.stderr_lines();
    assert_eq!(
        lines,
        [
            "bad.toml:11:10: invalid config for kind \"flaky\": fail_fraction must be between \
             0.0 and 1.0, got 1.5",
            "error: bad.toml has 1 mistake",
        ],
        "{out}"
    );
}

#[test]
fn task_that_cannot_start_fails_the_run_with_one_line_error() {
    let dir = TempDir::new("cannot-start");
    std::fs::create_dir(dir.join("taken")).expect("create a directory");
    dir.topology(
        "sink.toml",
        r#"name = "sink-into-a-directory"

[[spouts]]
id = "numbers"
kind = "sequence"
config = { count = 10 }

[[bolts]]
id = "sink"
kind = "file-sink"
config = { path = "taken" }
inputs = [{ from = "numbers" }]
"#,
    );
    let out = local(&dir, "sink.toml", &["--json"], &[]);
    out.assert_failure();
    assert_no_panic(&out);
    let errors: Vec<&str> = out.stderr_lines().into_iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert!(errors[0].contains("sink") && errors[0].contains("cannot open taken for appending"), "{out}");
}

#[test]
fn exclamation_file_runs() {
    let dir = TempDir::new("exclamation");
    let file = repo_file("config/exclamation.toml").display().to_string();
    let out = local(&dir, &file, &["--json"], &[("WORDS", "5000")]);
    out.assert_success();
    let summary = out.summary();
    assert_eq!(summary.topology(), "exclamation");
    assert_eq!(summary.component("word").acked(), 5000, "{out}");
    assert_eq!(summary.component("exclaim1").executed(), 5000, "{out}");
    assert_eq!(summary.component("exclaim2").executed(), 5000, "{out}");
    assert_eq!(summary.component("exclaim2").count("tasks"), 2, "{out}");
}

#[test]
fn the_text_summary_shows_each_components_errors_and_each_bolts_capacity() {
    let dir = TempDir::new("local-text-summary");
    let events = dir.write("events.jsonl", "{\"word\": \"a\"}\nnot json\n{\"word\": \"b\"}\n");
    let file = dir.topology(
        "errors.toml",
        &format!(
            r#"
name = "errors"

[[spouts]]
id = "lines"
kind = "file-spout"
config = {{ path = "{}", format = "jsonl", fields = ["word"] }}

[[bolts]]
id = "shout"
kind = "exclamation"
inputs = [{{ from = "lines" }}]
"#,
            events.display()
        ),
    );
    let out = local(&dir, &file.display().to_string(), &[], &[]);
    out.assert_success();
    let header = out.stdout.lines().next().unwrap_or_default();
    let columns: Vec<&str> = header.split_whitespace().collect();
    let column =
        |name: &str| columns.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name}: {out}"));
    let row = |id: &str| -> Vec<&str> {
        let line = out.stdout.lines().find(|l| l.split_whitespace().next() == Some(id));
        line.unwrap_or_else(|| panic!("no row for {id}: {out}")).split_whitespace().collect()
    };
    assert_eq!(row("lines")[column("errors")], "1", "the malformed line is an error of the spout: {out}");
    assert_eq!(row("lines")[column("capacity")], "-", "spouts have no capacity: {out}");
    assert_eq!(row("shout")[column("errors")], "0", "{out}");
    let capacity: f64 = row("shout")[column("capacity")].parse().expect("a bolt's capacity is a number");
    assert!((0.0..=1.0).contains(&capacity), "{out}");
}
