//! What a careless or hostile user writes, given to the real binary: numbers at the edge of
//! their type and files of absurd size are refused with one line per mistake at
//! `FILE:LINE:COL`, a non-zero exit, no panic, and in time linear in the file.

use std::time::{Duration, Instant};

use squall_tests::TempDir;

const BASE: &str = r#"name = "edge"

[settings]
message_timeout_secs = 30

[[spouts]]
id = "numbers"
kind = "sequence"
config = { count = 100 }

[[bolts]]
id = "sink"
kind = "log"
parallelism = 1
inputs = [{ from = "numbers" }]
"#;

/// Runs `squall ARGS…` in a fresh directory holding `source` as `edge.toml`.
fn run_on(source: &str, args: &[&str]) -> squall_tests::Outcome {
    let dir = TempDir::new("hostile-input");
    dir.topology("edge.toml", source);
    dir.squall(args.iter().copied()).run()
}

#[test]
fn parallelism_of_u32_max_is_refused_by_validate_and_local_instead_of_running_zero_tasks() {
    let source = BASE.replace("parallelism = 1", "parallelism = 4294967295");
    for verb in ["validate", "local"] {
        let out = run_on(&source, &[verb, "edge.toml"]);
        out.assert_failure();
        assert!(
            out.stderr.contains("edge.toml:14:15: parallelism must be at most 100000, found 4294967295"),
            "{verb}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
}

#[test]
fn durations_of_u64_max_are_refused_where_written_not_overflowed() {
    let cases = [
        (
            "message_timeout_secs = 30",
            "message_timeout_secs = 18446744073709551615",
            "edge.toml:4:24: message_timeout_secs must be at most 31536000",
        ),
        (
            "parallelism = 1",
            "parallelism = 1\ntick_secs = 18446744073709551615",
            "edge.toml:15:13: tick_secs must be at most 31536000",
        ),
    ];
    for (from, to, expected) in cases {
        let out = run_on(&BASE.replace(from, to), &["local", "edge.toml"]);
        out.assert_failure();
        assert!(out.stderr.contains(expected), "{to}: {out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
}

#[test]
fn local_for_a_duration_past_the_clocks_range_runs_to_its_natural_end() {
    let out = run_on(BASE, &["local", "edge.toml", "--for", "500000000years"]);
    out.assert_success();
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn validate_reports_100000_unknown_keys_in_linear_time() {
    let mut source = String::from("name = \"wide\"\n");
    for i in 0..100_000 {
        source.push_str(&format!("unknown_{i} = {i}\n"));
    }
    source.push_str("[[spouts]]\nid = \"s\"\nkind = \"sequence\"\nconfig = { count = 1 }\n");
    let started = Instant::now();
    let out = run_on(&source, &["validate", "edge.toml"]);
    let took = started.elapsed();
    out.assert_failure();
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 100_001, "one line per key and the total");
    assert!(lines[0].starts_with("edge.toml:2:1: unknown key `unknown_0` at the top level"), "{}", lines[0]);
    assert!(
        lines[99_999].starts_with("edge.toml:100001:1: unknown key `unknown_99999`"),
        "{}",
        lines[99_999]
    );
    assert_eq!(lines[100_000], "error: edge.toml has 100000 mistakes");
    // Quadratic placement took 35 s in release; linear takes about 1 s in debug. The bound is
    // generous for a loaded machine and still far below quadratic.
    assert!(took < Duration::from_secs(60), "validate took {took:?}");
}
