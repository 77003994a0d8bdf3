//! The command line itself: a malformed command line gets one line that says what is wrong,
//! and exit status 2; help still prints in full.

use squall_tests::Squall;

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
