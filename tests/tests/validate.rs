//! `squall validate`, run as a user runs it: the real binary on topology files.
//!
//! Pins: a valid file prints `FILE: ok: …` on stdout and exits 0 (the shipped config/*.toml
//! among them); a bad file exits 1 and prints every mistake on stderr as
//! `FILE:LINE:COL: message`, in file order, with what would be valid, then
//! `error: FILE has N mistake(s)`. One test per kind of mistake, with positions worked out by
//! hand from the file as written.

use squall_tests::{repo_file, workspace_root, Outcome, TempDir};

/// A valid word count, the base the mistakes are made in. Line numbers matter to the tests.
const BASE: &str = r#"name = "wc"

[[spouts]]
id = "sentences"
kind = "random-sentence"
config = { limit = 10, seed = 1 }

[[bolts]]
id = "split"
kind = "split-sentence"
parallelism = 2
inputs = [{ from = "sentences", grouping = "shuffle" }]

[[bolts]]
id = "count"
kind = "word-count"
parallelism = 2
inputs = [{ from = "split", stream = "default", grouping = { fields = ["word"] } }]
"#;

/// `BASE` with `from` replaced by `to`, which must occur exactly once.
fn base_with(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} is not unique in BASE");
    BASE.replace(from, to)
}

/// Writes `source` as `wc.toml` in a fresh directory and runs `squall validate wc.toml` there.
fn validate(source: &str) -> Outcome {
    let dir = TempDir::new("validate");
    dir.topology("wc.toml", source);
    dir.squall(["validate", "wc.toml"]).run()
}

/// The mistakes `validate` reported: its stderr lines, checking the last is
/// `error: wc.toml has N mistake(s)` with N the number of the others.
#[track_caller]
fn mistakes(out: &Outcome) -> Vec<String> {
    out.assert_failure();
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(out.stdout, "", "mistakes go to stderr\n{out}");
    let mut lines: Vec<String> = out.stderr_lines().iter().map(|l| l.to_string()).collect();
    let last = lines.pop().unwrap_or_default();
    let n = lines.len();
    let plural = if n == 1 { "" } else { "s" };
    assert_eq!(last, format!("error: wc.toml has {n} mistake{plural}"), "{out}");
    lines
}

/// Checks `source` has exactly one mistake, reported at `wc.toml:{at}: ` with a message
/// containing `part`; returns the message.
#[track_caller]
fn one_mistake(source: &str, at: &str, part: &str) -> String {
    let out = validate(source);
    let mistakes = mistakes(&out);
    assert_eq!(mistakes.len(), 1, "{out}");
    let prefix = format!("wc.toml:{at}: ");
    let message =
        mistakes[0].strip_prefix(&prefix).unwrap_or_else(|| panic!("expected the prefix {prefix:?}\n{out}"));
    assert!(message.contains(part), "expected {part:?} in {message:?}");
    message.to_string()
}

#[test]
fn valid_file_is_ok() {
    let out = validate(BASE);
    out.assert_success();
    assert_eq!(out.stdout, "wc.toml: ok: topology wc with 1 spouts, 2 bolts, 5 tasks\n");
    assert_eq!(out.stderr, "");
}

#[test]
fn unknown_kind_lists_valid_kinds() {
    let message = one_mistake(
        &base_with("\"split-sentence\"", "\"split-sentance\""),
        "10:8",
        "unknown bolt kind \"split-sentance\"",
    );
    assert_eq!(
        message,
        "unknown bolt kind \"split-sentance\"; valid bolt kinds: exclamation, file-sink, flaky, \
         kafka-sink, log, log-sink, shell-bolt, split-sentence, state-count, window-count, word-count"
    );
}

#[test]
fn kind_of_the_other_role_says_where_it_belongs() {
    one_mistake(
        &base_with("\"random-sentence\"", "\"split-sentence\""),
        "5:8",
        "\"split-sentence\" is a bolt kind, not a spout kind: move this entry under [[bolts]]; \
         valid spout kinds: file-spout, kafka-spout, log-spout, random-sentence, random-word, sequence",
    );
}

#[test]
fn unknown_key_lists_valid_keys() {
    one_mistake(
        &base_with(
            "parallelism = 2\ninputs = [{ from = \"sentences\"",
            "paralelism = 2\ninputs = [{ from = \"sentences\"",
        ),
        "11:1",
        "unknown key `paralelism` in [[bolts]] (did you mean `parallelism`?); valid keys: id, \
         kind, parallelism, config, tick_secs, inputs, window",
    );
}

#[test]
fn unknown_component_config_key_is_reported() {
    one_mistake(
        &base_with("seed = 1", "seed = 1, burst = 5"),
        "6:34",
        "invalid config for kind \"random-sentence\": unknown field `burst`",
    );
}

#[test]
fn missing_input_component_lists_components() {
    one_mistake(
        &base_with("from = \"split\"", "from = \"splitter\""),
        "18:20",
        "no component named \"splitter\"; components: sentences, split, count",
    );
}

#[test]
fn input_stream_not_declared_lists_streams() {
    one_mistake(
        &base_with("stream = \"default\"", "stream = \"words\""),
        "18:38",
        "component \"split\" does not declare stream \"words\"; its streams: default",
    );
}

#[test]
fn fields_grouping_on_undeclared_field_lists_fields() {
    one_mistake(
        &base_with("fields = [\"word\"]", "fields = [\"word\", \"wrd\"]"),
        "18:80",
        "stream \"default\" of \"split\" has no field \"wrd\"; its fields: [word]",
    );
}

#[test]
fn duplicate_id_points_at_the_first() {
    one_mistake(
        &base_with("id = \"count\"", "id = \"split\""),
        "15:6",
        "duplicate id \"split\": the bolt at line 9, col 6 already has it; ids must be unique",
    );
}

#[test]
fn parallelism_zero_is_rejected() {
    one_mistake(
        &base_with(
            "parallelism = 2\ninputs = [{ from = \"sentences\"",
            "parallelism = 0\ninputs = [{ from = \"sentences\"",
        ),
        "11:15",
        "parallelism must be at least 1, found 0",
    );
}

#[test]
fn cycle_is_rejected() {
    let source = format!(
        r#"{BASE}
[[bolts]]
id = "ping"
kind = "exclamation"
inputs = [{{ from = "split" }}, {{ from = "pong" }}]

[[bolts]]
id = "pong"
kind = "exclamation"
inputs = [{{ from = "ping" }}]
"#
    );
    one_mistake(&source, "23:40", "cycle: ping -> pong -> ping; Squall runs acyclic topologies only");
}

#[test]
fn bad_toml_syntax_is_placed() {
    one_mistake(&base_with("kind = \"split-sentence\"", "kind = split-sentence"), "10:8", "invalid TOML: ");
    one_mistake(&base_with("id = \"split\"", "id = \"split"), "9:12", "invalid TOML: ");
}

#[test]
fn missing_file_is_reported() {
    let dir = TempDir::new("missing");
    let out = dir.squall(["validate", "nowhere.toml"]).run();
    out.assert_failure();
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("nowhere.toml:1:1: cannot read file: "), "{out}");
    assert_eq!(lines[1], "error: nowhere.toml has 1 mistake", "{out}");
}

#[test]
fn unset_variable_is_reported_and_a_set_one_substitutes() {
    let source = base_with(
        "parallelism = 2\ninputs = [{ from = \"sentences\"",
        "parallelism = ${SQUALL_E2E_SPLITTERS}\ninputs = [{ from = \"sentences\"",
    )
    .replace("parallelism = 2\n", "parallelism = ${SQUALL_E2E_COUNTERS:-4}\n");
    let dir = TempDir::new("subst");
    dir.topology("wc.toml", &source);
    let squall = || dir.squall(["validate", "wc.toml"]).env_remove("SQUALL_E2E_COUNTERS");

    let unset = squall().env_remove("SQUALL_E2E_SPLITTERS").run();
    assert_eq!(
        mistakes(&unset),
        ["wc.toml:11:15: environment variable SQUALL_E2E_SPLITTERS is not set; give a \
             default with ${SQUALL_E2E_SPLITTERS:-value}"]
    );

    // 1 spout task + 3 split tasks (from the environment) + 4 count tasks (the default).
    let set = squall().env("SQUALL_E2E_SPLITTERS", "3").run();
    set.assert_success();
    assert_eq!(set.stdout, "wc.toml: ok: topology wc with 1 spouts, 2 bolts, 8 tasks\n");
}

#[test]
fn every_mistake_is_reported_not_just_the_first() {
    let out = validate(
        r#"name = "wc"
workers = 0

[[spouts]]
id = "sentences"
kind = "random-sentense"

[[bolts]]
id = "split"
kind = "split-sentence"
parallelism = 0
inputs = [{ from = "sentencs" }]

[[bolts]]
id = "count"
kind = "word-count"
inputs = [{ from = "split", grouping = { fields = ["wrd"] } }]
colour = "blue"
"#,
    );
    let mistakes = mistakes(&out);
    let expected = [
        ("2:11", "workers must be at least 1, found 0"),
        ("6:8", "unknown spout kind \"random-sentense\"; valid spout kinds: "),
        ("11:15", "parallelism must be at least 1, found 0"),
        ("12:20", "no component named \"sentencs\""),
        ("17:52", "stream \"default\" of \"split\" has no field \"wrd\""),
        ("18:1", "unknown key `colour` in [[bolts]]"),
    ];
    assert_eq!(mistakes.len(), expected.len(), "{out}");
    for (mistake, (at, part)) in mistakes.iter().zip(expected) {
        let prefix = format!("wc.toml:{at}: ");
        assert!(
            mistake.starts_with(&prefix) && mistake.contains(part),
            "expected {prefix}…{part}… in {mistake:?}\n{out}"
        );
    }
}

// Windows: first the mistakes about a `window` on a kind that takes none, then those of a
// windowed kind (`window-count`) and its inputs, worded as the engine's topology tests pin them.

/// `BASE` with `window` given to the bolt "split" (line 12).
fn split_with_window(window: &str) -> String {
    base_with(
        "parallelism = 2\ninputs = [{ from = \"sentences\"",
        &format!("parallelism = 2\nwindow = {window}\ninputs = [{{ from = \"sentences\""),
    )
}

#[test]
fn window_on_a_kind_that_is_not_windowed_is_rejected() {
    one_mistake(
        &split_with_window(r#"{ length = "10s" }"#),
        "12:1",
        "\"split-sentence\" is not a windowed bolt kind, so it takes no `window`; remove it, or \
         use a windowed kind (",
    );
}

#[test]
fn window_on_a_spout_is_rejected() {
    one_mistake(
        &base_with(
            "config = { limit = 10, seed = 1 }",
            "config = { limit = 10, seed = 1 }\nwindow = { length = \"10s\" }",
        ),
        "7:1",
        "a spout takes no `window`: only windowed bolts have windows; remove `window`",
    );
}

#[test]
fn window_table_mistakes_are_each_placed() {
    let out = validate(&split_with_window(r#"{ length = "1m", slid = "5s", lag = 2 }"#));
    let mistakes = mistakes(&out);
    let expected = [
        ("12:1", "\"split-sentence\" is not a windowed bolt kind"),
        (
            "12:21",
            "a window of `length` 1m holds its tuples 1m before it fires, longer than \
             message_timeout_secs = 30 in [settings]: they would time out first; shorten the \
             window or set message_timeout_secs to at least 60",
        ),
        (
            "12:27",
            "unknown key `slid` in `window` (did you mean `slide`?); valid keys: length, slide, \
             timestamp_field, lag, watermark_interval, idle_timeout, late_stream",
        ),
        ("12:46", "`lag` must be a duration like \"10s\", \"500ms\", \"1m\" or \"1h 30m\" (a string), found integer"),
    ];
    assert_eq!(mistakes.len(), expected.len(), "{out}");
    for (mistake, (at, part)) in mistakes.iter().zip(expected) {
        let prefix = format!("wc.toml:{at}: ");
        assert!(
            mistake.starts_with(&prefix) && mistake.contains(part),
            "expected {prefix}…{part}… in {mistake:?}\n{out}"
        );
    }
}

/// A valid windowed topology: events from a file counted per word on event time, and a spout
/// of other fields to subscribe as a second input. Line numbers matter to the tests.
const WINDOWED: &str = r#"name = "wc"

[[spouts]]
id = "events"
kind = "file-spout"
config = { path = "events.jsonl", format = "jsonl", fields = ["word", "ts"] }

[[spouts]]
id = "sentences"
kind = "random-sentence"

[[bolts]]
id = "count"
kind = "window-count"
window = { length = "10s", timestamp_field = "ts", lag = "2s" }
inputs = [{ from = "events" }]
"#;

/// `WINDOWED` with `from` replaced by `to`, which must occur exactly once.
fn windowed_with(from: &str, to: &str) -> String {
    assert_eq!(WINDOWED.matches(from).count(), 1, "{from:?} is not unique in WINDOWED");
    WINDOWED.replace(from, to)
}

const TWO_INPUTS: &str = r#"inputs = [{ from = "events" }, { from = "sentences" }]"#;

#[test]
fn windowed_topology_is_ok() {
    let out = validate(WINDOWED);
    out.assert_success();
    assert_eq!(out.stdout, "wc.toml: ok: topology wc with 2 spouts, 1 bolts, 3 tasks\n");
}

#[test]
fn windowed_kind_without_a_window_is_rejected() {
    let message = one_mistake(
        &windowed_with("window = { length = \"10s\", timestamp_field = \"ts\", lag = \"2s\" }\n", ""),
        "14:8",
        "\"window-count\" is a windowed bolt kind",
    );
    assert_eq!(
        message,
        "\"window-count\" is a windowed bolt kind: give it a `window`, e.g. window = { length = \"10s\" }"
    );
}

#[test]
fn timestamp_field_an_input_does_not_declare_is_rejected() {
    let message = one_mistake(
        &windowed_with(r#"inputs = [{ from = "events" }]"#, TWO_INPUTS),
        "15:46",
        "timestamp_field \"ts\"",
    );
    assert_eq!(
        message,
        "timestamp_field \"ts\" is not a field of stream \"default\" of \"sentences\" (its fields: \
         [sentence]); every input of a window on event time must carry it"
    );
}

#[test]
fn late_stream_named_like_a_declared_stream_is_rejected() {
    let message = one_mistake(
        &windowed_with(r#"lag = "2s" }"#, r#"lag = "2s", late_stream = "default" }"#),
        "15:78",
        "late_stream \"default\" clashes",
    );
    assert_eq!(
        message,
        "late_stream \"default\" clashes with stream \"default\" that kind \"window-count\" declares \
         (its streams: default); give late tuples a stream of their own, e.g. late_stream = \"late\""
    );
}

#[test]
fn late_stream_over_inputs_of_different_fields_is_rejected() {
    let source = windowed_with(
        r#"window = { length = "10s", timestamp_field = "ts", lag = "2s" }"#,
        r#"window = { length = "10s", late_stream = "late" }"#,
    );
    let source = source.replace(r#"inputs = [{ from = "events" }]"#, TWO_INPUTS);
    let message = one_mistake(&source, "16:41", "sends late tuples out with their own fields");
    assert_eq!(
        message,
        "bolt \"count\" sends late tuples out with their own fields on stream \"late\", so all its \
         inputs must carry the same fields, but \"events\" carries [word, ts] and \"sentences\" carries \
         [sentence]"
    );
    validate(&source.replace(r#", late_stream = "late""#, "")).assert_success();
}

#[test]
fn shipped_topology_files_are_valid() {
    let mut files: Vec<String> = std::fs::read_dir(repo_file("config"))
        .expect("config/ is readable")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        // Daemon settings, not topologies (the cluster file, docs/cluster-file.md): cluster.toml and
        // the files of further supervisors, which hold a [cluster] table.
        .filter(|name| {
            let text = std::fs::read_to_string(repo_file(&format!("config/{name}"))).unwrap_or_default();
            !text.lines().any(|line| line.trim() == "[cluster]")
        })
        .collect();
    files.sort();
    for expected in ["exclamation.toml", "windows.toml", "wordcount.toml"] {
        assert!(files.iter().any(|f| f == expected), "{expected} in {files:?}");
    }
    for name in files {
        let file = format!("config/{name}");
        let out = squall_tests::Squall::new(["validate", &file])
            .current_dir(workspace_root())
            .env_remove("RATE")
            .env_remove("SENTENCES")
            .env_remove("WORDS")
            .run();
        out.assert_success();
        assert!(out.stdout.starts_with(&format!("{file}: ok: topology ")), "{out}");
    }
}
