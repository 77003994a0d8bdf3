//! Fuzzing the topology file reader: random text, and a valid file with tokens inserted,
//! numbers replaced by ones at the edges of their types, and pieces cut. No input panics
//! [`load_str`]; every mistake it reports has a position inside the file. A bounded number of
//! cases, so CI stays fast.

use proptest::prelude::*;

use super::load_str;
use super::tests::{registry, WORDCOUNT};

const TOKENS: &[&str] = &[
    "18446744073709551615",
    "-9223372036854775808",
    "9223372036854775807",
    "0x7fffffffffffffff",
    "1e309",
    "-0",
    "inf",
    "nan",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    "\n",
    "[[bolts]]",
    "[settings]",
    "${",
    "${X:-",
    "${X}",
    "}}",
    "\u{0}",
    "é",
    "window = { length = \"400000000y\" }",
    "tick_secs = 4294967296",
    "parallelism = 4294967295",
    "\"10000000000000000000000s\"",
];

fn env(name: &str) -> Option<String> {
    (name == "X").then(|| "18446744073709551615".to_string())
}

/// Loads `source`; checks every diagnostic is placed inside it.
fn loads_without_panic(source: &str) {
    if let Err(diagnostics) = load_str("f.toml", source, &env, &registry()) {
        let lines = source.split('\n').count();
        for d in &diagnostics.0 {
            assert!(d.line >= 1 && d.line <= lines && d.col >= 1, "{d} is outside the file");
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, &'static str),
    Cut(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Cut(at, n)),
    ]
}

fn apply(text: &mut String, e: &Edit) {
    let boundary = |text: &str, at: usize| {
        let mut i = at % (text.len() + 1);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match e {
        Edit::Insert(at, token) => {
            let i = boundary(text, *at);
            text.insert_str(i, token);
        }
        Edit::Cut(at, n) => {
            let i = boundary(text, *at);
            let j = boundary(text, i + n).max(i);
            text.replace_range(i..j, "");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics_the_reader(text in "\\PC{0,300}") {
        loads_without_panic(&text);
    }

    #[test]
    fn an_edited_valid_file_never_panics_the_reader(edits in proptest::collection::vec(edit(), 1..8)) {
        let mut text = WORDCOUNT.to_string();
        for e in &edits {
            apply(&mut text, e);
        }
        loads_without_panic(&text);
    }
}
