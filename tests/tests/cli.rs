//! The command line itself: a malformed command line gets one line that says what is wrong,
//! and exit status 2; help still prints in full; a verb whose reader goes away (`| head -1`)
//! exits quietly.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use squall_tests::{repo_file, squall_bin, Squall, TempDir, DEFAULT_TIMEOUT};

#[test]
fn malformed_command_lines_get_one_line_errors() {
    let cases: [(&[&str], &str); 4] = [
        (&["topic", "create", "t", "--partitions", "abc"], "invalid value 'abc' for '--partitions"),
        (&["local"], "required arguments were not provided: <FILE>; usage: squall local"),
        (&["bogus"], "unrecognized subcommand 'bogus'"),
        (&["bench", "wc1", "--acking", "maybe"], "invalid value 'maybe' for '--acking"),
    ];
    for (args, expected) in cases {
        let out = Squall::new(args).run();
        assert_eq!(out.status.code(), Some(2), "{out}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line\n{out}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(expected), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
}

#[test]
fn help_prints_in_full() {
    let out = Squall::new(["topic", "--help"]).run();
    out.assert_success();
    for verb in ["create", "produce", "tail", "describe"] {
        assert!(out.stdout.contains(verb), "{verb}\n{out}");
    }
}

/// Waits for `child` to end (killing it past [`DEFAULT_TIMEOUT`]) and returns its status and
/// everything it wrote to stderr.
fn finish(mut child: Child) -> (ExitStatus, String) {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + DEFAULT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {DEFAULT_TIMEOUT:?} with its stdout closed");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("stderr reader"))
}

fn assert_quiet_exit(what: &str, status: ExitStatus, stderr: &str) {
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{what}: {stderr}");
    assert!(!stderr.contains("error"), "{what}: {stderr}");
    assert_eq!(status.code(), Some(0), "{what}: {status}\n{stderr}");
}

/// `squall ARGS > pipe` where the pipe's reader is already gone: the first line written to
/// stdout meets a closed pipe.
fn run_with_stdout_closed(args: &[&str]) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = Command::new(squall_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("squall starts");
    finish(child)
}

#[test]
fn verbs_exit_quietly_when_stdout_is_closed() {
    let wordcount = repo_file("config/wordcount.toml");
    let cases: [&[&str]; 4] =
        [&["validate", wordcount.to_str().unwrap()], &["kinds"], &["kinds", "log-spout"], &["--help"]];
    for args in cases {
        let (status, stderr) = run_with_stdout_closed(args);
        assert_quiet_exit(&args.join(" "), status, &stderr);
    }
}

#[test]
fn tail_exits_quietly_when_its_reader_stops_after_one_line() {
    // `squall topic tail in --from-beginning | head -1` over far more than a pipe holds.
    let dir = TempDir::new("closed-pipe");
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    dir.squall(["topic", "create", "in", "--partitions", "2", "--data-dir", data]).run().assert_success();
    dir.squall(["topic", "produce", "in", "--count", "20000", "--data-dir", data]).run().assert_success();
    let mut child = Command::new(squall_bin())
        .args(["topic", "tail", "in", "--from-beginning", "--count", "20000", "--data-dir", data])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("squall starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped")).read_line(&mut first).expect("a line");
    assert!(!first.is_empty(), "tail printed nothing");
    // The reader is dropped here: the rest of the 20000 records meet a closed pipe.
    let (status, stderr) = finish(child);
    assert_quiet_exit("topic tail", status, &stderr);
}

#[test]
fn kinds_lists_every_shipped_kind_with_role_and_summary() {
    let out = Squall::new(["kinds"]).run();
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(
        kinds,
        [
            "exclamation",
            "file-sink",
            "file-spout",
            "flaky",
            "kafka-sink",
            "kafka-spout",
            "log",
            "log-sink",
            "log-spout",
            "random-sentence",
            "random-word",
            "sequence",
            "shell-bolt",
            "shell-spout",
            "split-sentence",
            "state-count",
            "window-count",
            "word-count"
        ],
        "{out}"
    );
    let spout = lines.iter().find(|l| l.starts_with("log-spout ")).unwrap();
    assert!(spout.contains(" spout ") && spout.contains("embedded log"), "{out}");
    assert!(!out.stdout.contains("no description"), "{out}");
}

#[test]
fn kinds_describes_one_kind_keys_defaults_and_fields() {
    let out = Squall::new(["kinds", "log-spout"]).run();
    out.assert_success();
    assert!(out.stdout.starts_with("log-spout (spout): "), "{out}");
    let key = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no key {name}\n{out}"))
            .to_string()
    };
    assert!(key("topic").contains("(required)"), "{out}");
    assert!(key("max_uncommitted").contains("50000"), "{out}");
    assert!(key("broker").contains("\"embedded\""), "{out}");
    assert!(key("group").contains("<topology>.<component>"), "{out}");
    assert!(out.stdout.contains("\nemits: key, value, partition, offset\n"), "{out}");
}

#[test]
fn kinds_of_an_unknown_kind_is_one_line_naming_the_known() {
    let out = Squall::new(["kinds", "nope"]).run();
    out.assert_failure();
    assert_eq!(
        out.stderr_lines(),
        ["error: unknown kind \"nope\"; known kinds: exclamation, file-sink, file-spout, flaky, kafka-sink, \
          kafka-spout, log, log-sink, log-spout, random-sentence, random-word, sequence, shell-bolt, shell-spout, \
          split-sentence, state-count, window-count, word-count"],
        "{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn submitting_unknown_kinds_suggests_an_artifact() {
    let dir = TempDir::new("submit-unknown-kind");
    let file = dir.topology(
        "mine.toml",
        r#"
name = "mine"

[[spouts]]
id = "words"
kind = "random-word"

[[bolts]]
id = "shout"
kind = "shout"
inputs = [{ from = "words", grouping = "shuffle" }]
"#,
    );
    // Checked before anything connects: no nimbus needed.
    let cluster = dir.write("cluster.toml", "[cluster]\nnimbus = \"127.0.0.1:9\"\nsecret = \"s\"\n");
    let out = dir.squall(["submit"]).arg(&file).arg("--config").arg(&cluster).run();
    out.assert_failure();
    assert!(out.stderr.contains("unknown bolt kind \"shout\""), "{out}");
    assert!(out.stderr.contains("submit with --artifact PATH"), "{out}");
}
