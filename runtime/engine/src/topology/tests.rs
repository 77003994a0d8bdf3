//! Tests of [`load_str`](super::load_str) as a whole, against a small registry of dummy
//! components: what a valid file gives, and where and how every kind of mistake is reported.

use serde::Deserialize;
use std::time::Duration;

use squall_api::{
    async_trait, BasicBolt, BasicCollector, BoxError, CustomGrouping, NoConfig, OutputDeclarer, Registry,
    Spout, SpoutCollector, TaskId, Tuple, TupleWindow, Value, Values, WindowAggregate, WindowCollector,
    WindowedBolt,
};

use super::{load_str, GroupingDef, Settings, TopologyDef};
use crate::window::{Size, WindowSpec};

// ---- A test registry. ----

/// A spout declaring whatever `declare` declares.
struct TestSpout(fn(&mut OutputDeclarer));

#[async_trait]
impl Spout for TestSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        (self.0)(out)
    }
    async fn next_tuple(&mut self, _out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A bolt declaring whatever `declare` declares.
struct TestBolt(fn(&mut OutputDeclarer));

#[async_trait]
impl BasicBolt for TestBolt {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        (self.0)(out)
    }
    async fn execute(&mut self, _: &Tuple, _: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A windowed bolt declaring whatever `declare` declares.
struct TestWindowed(fn(&mut OutputDeclarer));

#[async_trait]
impl WindowedBolt for TestWindowed {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        (self.0)(out)
    }
    async fn execute(&mut self, _: &TupleWindow<'_>, _: &mut WindowCollector<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Counts each window's tuples.
struct TestCount;

impl WindowAggregate for TestCount {
    type Acc = i64;
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["count"]);
    }
    fn key(&self, _: &Tuple) -> Result<Value, BoxError> {
        Ok(Value::Null)
    }
    fn create(&self) -> i64 {
        0
    }
    fn add(&self, acc: &mut i64, _: &Tuple) -> Result<(), BoxError> {
        *acc += 1;
        Ok(())
    }
    fn merge(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn result(&self, _: &Value, acc: &i64, _: i64, _: i64) -> Values {
        squall_api::values![*acc]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SentenceConfig {
    #[serde(default)]
    #[allow(dead_code)]
    rate: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountConfig {
    #[serde(default)]
    #[allow(dead_code)]
    emit_every: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuloConfig {
    #[serde(default)]
    #[allow(dead_code)]
    n: u32,
}

struct Modulo;

impl CustomGrouping for Modulo {
    fn prepare(&mut self, _: &[TaskId]) {}
    fn choose_tasks(&mut self, _: &[Value], _: &mut Vec<TaskId>) {}
}

pub(super) fn registry() -> Registry {
    let mut r = Registry::new();
    r.spout("random-sentence", |_: SentenceConfig| {
        Ok(TestSpout(|o| {
            o.declare(["sentence"]);
        }))
    })
    .spout("numbers", |_: NoConfig| {
        Ok(TestSpout(|o| {
            o.declare(["n"]);
        }))
    })
    .spout("events", |_: NoConfig| {
        Ok(TestSpout(|o| {
            o.declare(["word", "ts"]);
        }))
    })
    .spout("panicky", |_: NoConfig| -> Result<TestSpout, BoxError> { panic!("boom") })
    .basic_bolt("split-sentence", |_: NoConfig| {
        Ok(TestBolt(|o| {
            o.declare(["word"]);
        }))
    })
    .basic_bolt("word-count", |_: CountConfig| {
        Ok(TestBolt(|o| {
            o.declare(["word", "count"]);
        }))
    })
    .basic_bolt("filter", |_: NoConfig| {
        Ok(TestBolt(|o| {
            o.declare_passthrough("default");
        }))
    })
    .basic_bolt("router", |_: NoConfig| {
        Ok(TestBolt(|o| {
            o.declare(["word"]).declare_direct_stream("direct", ["word"]);
        }))
    })
    .basic_bolt("sink", |_: NoConfig| Ok(TestBolt(|_| {})))
    .aggregate_bolt("window-count", |_: NoConfig| Ok(TestCount))
    .windowed_bolt("window-join", |_: NoConfig| {
        Ok(TestWindowed(|o| {
            o.declare(["word", "n"]);
        }))
    })
    .windowed_bolt("window-late", |_: NoConfig| {
        Ok(TestWindowed(|o| {
            o.declare(["count"]).declare_stream("late", ["word"]);
        }))
    })
    .grouping("modulo", |_: ModuloConfig| Ok(Modulo));
    r
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(source: &str) -> Result<TopologyDef, Vec<String>> {
    load_with_env(source, &no_env)
}

fn load_with_env(source: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<TopologyDef, Vec<String>> {
    load_str("wc.toml", source, env, &registry()).map_err(|d| {
        d.0.iter()
            .map(|d| {
                assert_eq!(d.file, "wc.toml");
                assert!(!d.message.contains('\n'), "multi-line message: {d}");
                format!("{}:{}: {}", d.line, d.col, d.message)
            })
            .collect()
    })
}

/// The diagnostics of a file that must not load.
fn errors(source: &str) -> Vec<String> {
    match load(source) {
        Ok(def) => panic!("loaded a bad file: {def:?}"),
        Err(errors) => errors,
    }
}

/// The "line:col" of every diagnostic.
fn positions(errors: &[String]) -> Vec<&str> {
    errors.iter().map(|e| e.split(": ").next().unwrap_or("")).collect()
}

pub(super) const WORDCOUNT: &str = r#"name = "wordcount"
workers = 2
[settings]
acking = true
ackers = 1
message_timeout_secs = 30
max_spout_pending = 1000
[[spouts]]
id = "sentences"
kind = "random-sentence"
parallelism = 1
config = { rate = 0 }
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

/// A minimal valid file to which tests append.
const HEAD: &str = r#"name = "t"
[[spouts]]
id = "s"
kind = "random-sentence"
"#;

// ---- Valid files. ----

#[test]
fn accepts_wordcount_file() {
    let def = load(WORDCOUNT).expect("valid");
    assert_eq!(def.name, "wordcount");
    assert_eq!(def.workers, 2);
    assert!(def.settings.acking);
    assert_eq!(def.settings.ackers, 1);
    assert_eq!(def.settings.message_timeout_secs, 30);
    assert_eq!(def.settings.max_spout_pending, 1000);
    assert_eq!(def.settings.raw.len(), 4);
    assert_eq!(def.spouts.len(), 1);
    assert_eq!(def.bolts.len(), 2);

    let spout = &def.spouts[0];
    assert_eq!((spout.id.as_str(), spout.kind.as_str()), ("sentences", "random-sentence"));
    assert_eq!(spout.config.get("rate").and_then(toml::Value::as_integer), Some(0));
    assert!(spout.inputs.is_empty());
    assert_eq!(spout.streams[0].name, "default");
    assert_eq!(spout.streams[0].fields, ["sentence"].into());

    let split = def.component("split").expect("split");
    assert_eq!(split.parallelism, 2);
    assert_eq!(split.inputs[0].from, "sentences");
    assert_eq!(split.inputs[0].stream, "default");
    assert_eq!(split.inputs[0].grouping, GroupingDef::Shuffle);

    let count = def.component("count").expect("count");
    assert_eq!(count.inputs[0].grouping, GroupingDef::Fields(vec!["word".to_string()]));
    assert_eq!(count.streams[0].fields, ["word", "count"].into());
}

#[test]
fn applies_defaults() {
    let def = load(&format!(
        "{HEAD}[[bolts]]\nid = \"b\"\nkind = \"split-sentence\"\ninputs = [{{ from = \"s\" }}]\n"
    ))
    .expect("valid");
    assert_eq!(def.workers, 1);
    assert_eq!(def.settings, Settings::default());
    let b = &def.bolts[0];
    assert_eq!(b.parallelism, 1);
    assert!(b.config.is_empty());
    assert_eq!(b.tick_secs, None);
    assert_eq!(b.inputs[0].stream, "default");
    assert_eq!(b.inputs[0].grouping, GroupingDef::Shuffle);
}

#[test]
fn zero_ackers_turn_acking_off() {
    let def = load(&format!("{HEAD}[settings]\nackers = 0\n")).expect("valid");
    assert!(!def.settings.acking);
    assert_eq!(def.settings.ackers, 0);
}

#[test]
fn accepts_every_grouping() {
    let def = load(&format!(
        r#"{HEAD}
[[bolts]]
id = "r"
kind = "router"
tick_secs = 5
inputs = [
  {{ from = "s", grouping = "all" }},
  {{ from = "s", grouping = "global" }},
  {{ from = "s", grouping = "local_or_shuffle" }},
  {{ from = "s", grouping = "none" }},
  {{ from = "s", grouping = {{ partial_key = ["sentence"] }} }},
  {{ from = "s", grouping = {{ custom = "modulo", config = {{ n = 3 }} }} }},
]
[[bolts]]
id = "d"
kind = "sink"
inputs = [{{ from = "r", stream = "direct", grouping = "direct" }}]
"#
    ))
    .expect("valid");
    let r = def.component("r").expect("r");
    assert_eq!(r.tick_secs, Some(5));
    let groupings: Vec<&GroupingDef> = r.inputs.iter().map(|i| &i.grouping).collect();
    assert_eq!(
        groupings[..4],
        [&GroupingDef::All, &GroupingDef::Global, &GroupingDef::LocalOrShuffle, &GroupingDef::None]
    );
    assert_eq!(groupings[4], &GroupingDef::PartialKey(vec!["sentence".to_string()]));
    let mut config = toml::Table::new();
    config.insert("n".to_string(), toml::Value::Integer(3));
    assert_eq!(groupings[5], &GroupingDef::Custom { kind: "modulo".to_string(), config });
    assert_eq!(def.component("d").expect("d").inputs[0].grouping, GroupingDef::Direct);
    assert!(def.component("d").expect("d").streams.is_empty());
}

#[test]
fn resolves_passthrough_fields() {
    // count <- filter2 <- filter1 <- split: both filters carry ["word"].
    let def = load(&format!(
        r#"{HEAD}
[[bolts]]
id = "count"
kind = "word-count"
inputs = [{{ from = "filter2", grouping = {{ fields = ["word"] }} }}]
[[bolts]]
id = "filter2"
kind = "filter"
inputs = [{{ from = "filter1" }}]
[[bolts]]
id = "filter1"
kind = "filter"
inputs = [{{ from = "split" }}, {{ from = "split2" }}]
[[bolts]]
id = "split"
kind = "split-sentence"
inputs = [{{ from = "s" }}]
[[bolts]]
id = "split2"
kind = "split-sentence"
inputs = [{{ from = "s" }}]
"#
    ))
    .expect("valid");
    for id in ["filter1", "filter2"] {
        let streams = &def.component(id).expect(id).streams;
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].fields, ["word"].into(), "{id}");
        assert!(!streams[0].passthrough, "{id}");
    }
}

#[test]
fn substitutes_env_with_default() {
    let env = |name: &str| (name == "SPLITTERS").then(|| "3".to_string());
    let source = WORDCOUNT
        .replace("workers = 2", "workers = ${WORKERS:-4}")
        .replace(
            "parallelism = 2\ninputs = [{ from = \"sentences\"",
            "parallelism = ${SPLITTERS}\ninputs = [{ from = \"sentences\"",
        )
        .replace("\"word-count\"", "\"${COUNT_KIND:-word-count}\"");
    let def = load_with_env(&source, &env).expect("valid");
    assert_eq!(def.workers, 4);
    assert_eq!(def.component("split").expect("split").parallelism, 3);
    assert_eq!(def.component("count").expect("count").kind, "word-count");
}

// ---- Mistakes. ----

#[test]
fn reports_unknown_kind_with_valid_kinds() {
    let errors = errors(&WORDCOUNT.replace("\"split-sentence\"", "\"split-sentance\""));
    assert_eq!(
        errors,
        ["15:8: unknown bolt kind \"split-sentance\"; valid bolt kinds: filter, router, sink, \
          split-sentence, window-count, window-join, window-late, word-count"]
    );
}

#[test]
fn reports_kind_of_the_other_role() {
    let errors = errors(&WORDCOUNT.replace("\"random-sentence\"", "\"split-sentence\""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "10:8: \"split-sentence\" is a bolt kind, not a spout kind: move this entry \
             under [[bolts]]; valid spout kinds: events, numbers, panicky, random-sentence"
        ),
        "{errors:?}"
    );
}

#[test]
fn reports_unknown_key_with_position() {
    let source = r#"colour = "blue"
name = "t"
[settings]
ackers = 1
acks = 2
[[spouts]]
id = "s"
kind = "random-sentence"
paralelism = 2
[[bolts]]
id = "b"
kind = "sink"
inputs = [{ from = "s", grouping = { fields = ["sentence"], sort = true }, strem = "x" }]
"#;
    let errors = errors(source);
    assert_eq!(
        errors,
        [
            "1:1: unknown key `colour` at the top level; valid keys: name, workers, settings, \
             spouts, bolts",
            "5:1: unknown key `acks` in [settings] (did you mean `ackers`?); valid keys: acking, \
             ackers, message_timeout_secs, max_spout_pending, guarantee, state",
            "9:1: unknown key `paralelism` in [[spouts]] (did you mean `parallelism`?); valid \
             keys: id, kind, parallelism, config, tick_secs",
            "13:61: unknown key `sort` in a grouping; valid keys: fields, partial_key, custom, \
             config",
            "13:76: unknown key `strem` in an input (did you mean `stream`?); valid keys: from, \
             stream, grouping",
        ]
    );
}

#[test]
fn reports_wrong_types() {
    let errors = errors(
        r#"name = 5
workers = "two"
[settings]
acking = "yes"
[[spouts]]
id = "s"
kind = "random-sentence"
parallelism = "2"
config = 3
[[bolts]]
id = "b"
kind = "sink"
inputs = { from = "s" }
"#,
    );
    assert_eq!(
        errors,
        [
            "1:8: `name` must be a string, found integer",
            "2:11: `workers` must be an integer, found string",
            "4:10: `acking` must be a boolean (true or false), found string",
            "8:15: `parallelism` must be an integer, found string",
            "9:10: `config` must be a table, found integer",
            "13:10: `inputs` must be an array of tables, found table",
        ]
    );
}

#[test]
fn reports_missing_input_component() {
    let errors = errors(&WORDCOUNT.replace("from = \"split\"", "from = \"splitter\""));
    assert_eq!(errors, ["22:20: no component named \"splitter\"; components: sentences, split, count"]);
}

#[test]
fn reports_undeclared_stream() {
    let errors = errors(&WORDCOUNT.replace("stream = \"default\"", "stream = \"words\""));
    assert_eq!(
        errors,
        ["22:38: component \"split\" does not declare stream \"words\"; its streams: default"]
    );
}

#[test]
fn reports_fields_grouping_on_undeclared_field() {
    let errors = errors(&WORDCOUNT.replace("fields = [\"word\"]", "fields = [\"word\", \"wrd\"]"));
    assert_eq!(errors, ["22:80: stream \"default\" of \"split\" has no field \"wrd\"; its fields: [word]"]);
}

#[test]
fn reports_duplicate_id() {
    let errors = errors(&WORDCOUNT.replace("id = \"count\"", "id = \"split\""));
    assert_eq!(
        errors,
        ["19:6: duplicate id \"split\": the bolt at line 14, col 6 already has it; ids must \
             be unique"]
    );
}

#[test]
fn reports_parallelism_zero() {
    let errors = errors(&WORDCOUNT.replace("parallelism = 1", "parallelism = 0"));
    assert_eq!(errors, ["11:15: parallelism must be at least 1, found 0"]);
}

#[test]
fn numbers_past_their_documented_maximum_are_reported_where_written() {
    let cases = [
        (
            "parallelism = 1",
            "parallelism = 4294967295",
            "11:15: parallelism must be at most 100000, found 4294967295",
        ),
        ("workers = 2", "workers = 10001", "2:11: workers must be at most 10000, found 10001"),
        ("ackers = 1", "ackers = 100001", "5:10: ackers must be at most 100000, found 100001"),
        (
            "message_timeout_secs = 30",
            "message_timeout_secs = 18446744073709551615",
            "6:24: message_timeout_secs must be at most 31536000, found 18446744073709551615",
        ),
        (
            "max_spout_pending = 1000",
            "max_spout_pending = 16777217",
            "7:21: max_spout_pending must be at most 16777216, found 16777217",
        ),
        (
            "max_spout_pending = 1000",
            "max_spout_pending = 0x7fffffffffffffff",
            "7:21: max_spout_pending must be at most 16777216, found 7fffffffffffffff",
        ),
    ];
    for (from, to, expected) in cases {
        assert_eq!(errors(&WORDCOUNT.replace(from, to)), [expected], "{to}");
    }
    let ticks = WORDCOUNT.replace(
        "parallelism = 2\ninputs = [{ from = \"sentences\"",
        "tick_secs = 18446744073709551615\ninputs = [{ from = \"sentences\"",
    );
    assert_eq!(errors(&ticks), ["16:13: tick_secs must be at most 31536000, found 18446744073709551615"]);
    // The largest values allowed load.
    let most = WORDCOUNT
        .replace("message_timeout_secs = 30", "message_timeout_secs = 31536000")
        .replace("max_spout_pending = 1000", "max_spout_pending = 16777216");
    let def = load(&most).expect("the documented maxima are valid");
    assert_eq!(def.settings.message_timeout_secs, 31_536_000);
}

#[test]
fn a_topology_of_more_than_a_million_tasks_is_reported_at_the_component_that_passes_it() {
    let mut file = WORDCOUNT.replace("parallelism = 2", "parallelism = 100000");
    for i in 0..9 {
        file.push_str(&format!(
            "[[bolts]]\nid = \"more{i}\"\nkind = \"split-sentence\"\nparallelism = 100000\n\
             inputs = [{{ from = \"sentences\" }}]\n"
        ));
    }
    let errors = errors(&file);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("58:1: with this component the topology has more than 1000000 tasks"),
        "{errors:?}"
    );
}

#[test]
fn window_durations_past_a_year_are_reported() {
    let file = format!(
        r#"{HEAD}
[settings]
acking = false
[[bolts]]
id = "w"
kind = "window-count"
window = {{ length = "400000days" }}
inputs = [{{ from = "s" }}]
"#
    );
    let errors = errors(&file);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("`length` must be at most 365 days"), "{errors:?}");
}

#[test]
fn reports_cycle() {
    let errors = errors(&format!(
        r#"{HEAD}
[[bolts]]
id = "a"
kind = "filter"
inputs = [{{ from = "s" }}, {{ from = "b" }}]
[[bolts]]
id = "b"
kind = "filter"
inputs = [{{ from = "a" }}]
[[bolts]]
id = "c"
kind = "filter"
inputs = [{{ from = "c" }}]
[[bolts]]
id = "downstream"
kind = "sink"
inputs = [{{ from = "b" }}]
"#
    ));
    assert_eq!(
        errors,
        [
            "9:36: cycle: a -> b -> a; Squall runs acyclic topologies only",
            "17:20: cycle: c -> c; Squall runs acyclic topologies only",
        ]
    );
}

#[test]
fn reports_bad_toml_with_position() {
    let errors = errors("name = \"t\"\n[[spouts]]\nid = \"s\nkind = random\n");
    assert_eq!(positions(&errors), ["3:8", "4:8"], "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("invalid TOML: ")), "{errors:?}");
}

#[test]
fn reports_unset_env_var() {
    let errors = errors(&WORDCOUNT.replace("workers = 2", "workers = ${WORKERS}"));
    assert_eq!(
        errors,
        ["2:11: environment variable WORKERS is not set; give a default with ${WORKERS:-value}"]
    );
}

#[test]
fn reports_every_mistake_not_just_first() {
    let errors = errors(
        r#"name = "bad name"
workers = 0
[[spouts]]
id = "s"
kind = "random-sentense"
[[bolts]]
id = "split"
kind = "split-sentence"
parallelism = 0
inputs = [{ from = "sentences" }]
[[bolts]]
id = "split"
kind = "word-count"
inputs = [{ from = "split", grouping = "fields" }]
extra = 1
"#,
    );
    assert_eq!(
        positions(&errors),
        ["1:8", "2:11", "5:8", "9:15", "10:20", "12:6", "14:40", "15:1"],
        "{errors:?}"
    );
    assert!(errors[6].contains("unknown grouping \"fields\""), "{errors:?}");
}

#[test]
fn positions_refer_to_original_file_after_substitution() {
    let env = |name: &str| match name {
        "LONG_VARIABLE_NAME" => Some("a much longer value than the reference".to_string()),
        "BAD_KIND" => Some("nope".to_string()),
        "ZERO" => Some("0".to_string()),
        _ => None,
    };
    let source = r#"name = "t"   # ${LONG_VARIABLE_NAME}
[[spouts]]
id = "${LONG_VARIABLE_NAME:-x}${LONG_VARIABLE_NAME}"
kind = "${BAD_KIND}"
parallelism = ${P:-0}
[[bolts]]
id = "b"
kind = "sink"
tick_secs = ${LONG_VARIABLE_NAME:-1} + ${ZERO}
inputs = [{ from = "${LONG_VARIABLE_NAME}s", stream = "${S:-nope}" }]
"#;
    let errors = load_with_env(source, &env).unwrap_err();
    assert_eq!(
        positions(&errors),
        // A TOML syntax error stops everything else.
        ["9:13"],
        "{errors:?}"
    );

    let source = source.replace("${LONG_VARIABLE_NAME:-1} + ${ZERO}", "${ZERO}");
    let errors = load_with_env(&source, &env).unwrap_err();
    assert_eq!(
        positions(&errors),
        [
            // Values in strings are reported at the string, as written.
            "3:6", "4:8",  // A default, as written.
            "5:20", // A value from the environment, at its `${`.
            "9:13", "10:20",
        ],
        "{errors:?}"
    );
}

#[test]
fn reports_config_rejected_by_factory() {
    let errors = errors(&WORDCOUNT.replace("config = { rate = 0 }", "config = { rate = 0, burst = 5 }"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("12:22: invalid config for kind \"random-sentence\": unknown field `burst`"),
        "{errors:?}"
    );

    let errors = errors_of(&WORDCOUNT.replace("rate = 0", "rate = \"fast\""));
    assert_eq!(positions(&errors), ["12:10"], "{errors:?}");

    let errors = errors_of(&format!(
        "{HEAD}[[bolts]]\nid = \"b\"\nkind = \"sink\"\nconfig = {{ x = 1 }}\ninputs = [{{ from = \"s\" }}]\n"
    ));
    assert_eq!(positions(&errors), ["8:12"], "{errors:?}");
}

fn errors_of(source: &str) -> Vec<String> {
    errors(source)
}

#[test]
fn reports_factory_panic() {
    let errors = errors("name = \"t\"\n[[spouts]]\nid = \"p\"\nkind = \"panicky\"\n");
    assert_eq!(errors, ["4:8: invalid config for kind \"panicky\": the factory panicked (boom)"]);
}

#[test]
fn reports_direct_grouping_mismatch() {
    let errors = errors(&format!(
        r#"{HEAD}
[[bolts]]
id = "r"
kind = "router"
inputs = [{{ from = "s", grouping = "direct" }}]
[[bolts]]
id = "d"
kind = "sink"
inputs = [{{ from = "r", stream = "direct" }}]
"#
    ));
    assert_eq!(positions(&errors), ["9:36", "13:20"], "{errors:?}");
    assert!(errors[0].contains("needs a direct stream"), "{errors:?}");
    assert!(errors[1].contains("is direct: subscribe to it with grouping = \"direct\""), "{errors:?}");
}

#[test]
fn reports_bad_custom_grouping() {
    let errors = errors(&format!(
        r#"{HEAD}
[[bolts]]
id = "a"
kind = "sink"
inputs = [
  {{ from = "s", grouping = {{ custom = "modulus" }} }},
  {{ from = "s", grouping = {{ custom = "modulo", config = {{ m = 1 }} }} }},
  {{ from = "s", grouping = {{ fields = ["sentence"], config = {{}} }} }},
  {{ from = "s", grouping = {{ fields = [], custom = "modulo" }} }},
]
"#
    ));
    assert_eq!(
        errors,
        [
            "10:39: unknown custom grouping kind \"modulus\"; valid custom grouping kinds: modulo",
            "11:60: invalid config for custom grouping \"modulo\": unknown field `m`, expected `n`",
            "12:53: `config` applies only to a custom grouping ({ custom = \"kind\", config = {...} })",
            "13:43: a grouping table takes only one of `fields`, `partial_key` or `custom`; remove `custom`",
        ]
    );
}

#[test]
fn reports_passthrough_inputs_that_disagree() {
    let errors = errors(&format!(
        r#"{HEAD}[[spouts]]
id = "n"
kind = "numbers"
[[bolts]]
id = "f"
kind = "filter"
inputs = [{{ from = "s" }}, {{ from = "n" }}]
[[bolts]]
id = "c"
kind = "word-count"
inputs = [{{ from = "f", grouping = {{ fields = ["word"] }} }}]
"#
    ));
    assert_eq!(
        errors,
        ["11:36: bolt \"f\" passes its input through on stream \"default\", so all its \
             inputs must carry the same fields, but \"s\" carries [sentence] and \"n\" carries [n]"]
    );
}

#[test]
fn reports_structure_mistakes() {
    let errors = errors(
        r#"[[spouts]]
kind = "random-sentence"
inputs = []
[[bolts]]
id = "__b"
kind = "sink"
[[bolts]]
id = "c d"
kind = "sink"
inputs = []
"#,
    );
    assert_eq!(positions(&errors), ["1:1", "1:1", "3:1", "4:1", "5:6", "8:6", "10:10"], "{errors:?}");
    assert!(errors[0].contains("missing `name`"), "{errors:?}");
    assert!(errors[1].contains("missing `id` in [[spouts]]"), "{errors:?}");
    assert!(errors[2].contains("a spout takes no `inputs`"), "{errors:?}");
    assert!(errors[3].contains("missing `inputs` in [[bolts]]"), "{errors:?}");
    assert!(errors[4].contains("reserved"), "{errors:?}");
    assert!(errors[5].contains("only letters, digits"), "{errors:?}");
    assert!(errors[6].contains("`inputs` must not be empty"), "{errors:?}");
}

#[test]
fn reports_no_spouts() {
    let errors = errors("name = \"t\"\n");
    assert_eq!(
        errors,
        ["1:1: the topology has no spouts: add at least one [[spouts]] entry, a source of tuples"]
    );
}

#[test]
fn reports_malformed_spouts_once() {
    assert_eq!(
        errors("name = \"t\"\nspouts = []\n"),
        ["2:10: the topology has no spouts: add at least one [[spouts]] entry, a source of tuples"]
    );
    assert_eq!(
        errors("name = \"t\"\nspouts = \"s\"\n"),
        ["2:10: `spouts` must be an array of tables ([[spouts]]), found string"]
    );
    assert_eq!(
        errors("name = \"t\"\n[spouts]\nid = \"s\"\n"),
        ["2:1: `spouts` must be an array of tables ([[spouts]]), found table"]
    );
}

#[test]
fn diagnostics_are_sorted_and_displayed_with_file() {
    let d = load_str("wc.toml", "workers = 0\nname = 1\n", &no_env, &registry()).unwrap_err();
    let lines: Vec<(usize, usize)> = d.0.iter().map(|d| (d.line, d.col)).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert!(d.to_string().starts_with("wc.toml:1:1: "), "{d}");
}

#[test]
fn never_panics_on_garbage() {
    let registry = registry();
    let env = |name: &str| name.contains('X').then(|| "x\"}]\n".to_string());
    let mut inputs: Vec<String> = Vec::new();
    // Every prefix of a valid file.
    for (i, _) in WORDCOUNT.char_indices() {
        inputs.push(WORDCOUNT[..i].to_string());
    }
    // Random edits of it, with characters that matter to TOML and to substitution.
    let alphabet: Vec<char> = "[]{}=\"'#$,.\n -_0123456789abcdefé:\\".chars().collect();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let mut chars: Vec<char> = WORDCOUNT.chars().collect();
        for _ in 0..rng.usize(1..6) {
            let at = rng.usize(0..chars.len());
            match rng.u8(0..3) {
                0 => {
                    chars.remove(at);
                }
                1 => chars.insert(at, alphabet[rng.usize(0..alphabet.len())]),
                _ => chars[at] = alphabet[rng.usize(0..alphabet.len())],
            }
        }
        inputs.push(chars.into_iter().collect());
    }
    // Random text.
    for _ in 0..500 {
        let len = rng.usize(0..200);
        inputs.push((0..len).map(|_| alphabet[rng.usize(0..alphabet.len())]).collect());
    }
    inputs.push("${".to_string());
    inputs.push("a = \"\"\"${X:-1}\"\"\"\"\"".to_string());
    inputs.push(format!("{HEAD}parallelism = 99999999999999999999999999999999999999999"));
    inputs.push(format!("{HEAD}parallelism = -9223372036854775808"));

    for input in &inputs {
        if let Err(d) = load_str("g.toml", input, &env, &registry) {
            assert!(!d.0.is_empty());
            let lines = input.split('\n').count();
            for diag in &d.0 {
                assert!(diag.line >= 1 && diag.line <= lines, "{diag} in {input:?}");
                assert!(diag.col >= 1, "{diag}");
            }
        }
    }
}

// ---- Windows. ----

/// A windowed bolt "w" of `kind` on the spout "e" (fields word, ts); the `window` is line 8.
fn windowed(kind: &str, window: &str) -> String {
    format!(
        "name = \"t\"\n[[spouts]]\nid = \"e\"\nkind = \"events\"\n[[bolts]]\nid = \"w\"\n\
         kind = \"{kind}\"\nwindow = {window}\ninputs = [{{ from = \"e\" }}]\n"
    )
}

/// The window "w" of `windowed("window-join", window)` gets.
fn spec_of(window: &str) -> WindowSpec {
    let def = load(&windowed("window-join", window)).expect("valid");
    def.component("w").and_then(|w| w.window.clone()).expect("a window")
}

const SECS: fn(u64) -> Size = |s| Size::Time(Duration::from_secs(s));

#[test]
fn parses_all_four_mixes_of_length_and_slide() {
    assert_eq!(spec_of(r#"{ length = "10s", slide = "5s" }"#), WindowSpec::sliding(SECS(10), SECS(5)));
    assert_eq!(
        spec_of("{ length = 100, slide = 10 }"),
        WindowSpec::sliding(Size::Count(100), Size::Count(10))
    );
    assert_eq!(spec_of(r#"{ length = "10s", slide = 10 }"#), WindowSpec::sliding(SECS(10), Size::Count(10)));
    assert_eq!(spec_of(r#"{ length = 100, slide = "5s" }"#), WindowSpec::sliding(Size::Count(100), SECS(5)));
    assert_eq!(
        spec_of(r#"{ length = 5, slide = "1m" }"#).slide,
        SECS(60),
        "a time slide may exceed a count length: the units differ"
    );
}

#[test]
fn a_window_without_slide_tumbles_with_defaults() {
    let spec = spec_of(r#"{ length = "500ms" }"#);
    assert_eq!(spec, WindowSpec::tumbling(Size::Time(Duration::from_millis(500))));
    assert_eq!(spec.lag, Duration::ZERO);
    assert_eq!(spec.watermark_interval, crate::window::DEFAULT_WATERMARK_INTERVAL);
    assert_eq!((spec.idle_timeout, spec.late_stream, spec.timestamp_field), (None, None, None));
    let def = load(&windowed("window-join", "{ length = 100 }")).expect("valid");
    assert_eq!(def.component("e").expect("e").window, None, "only windowed bolts have one");
}

#[test]
fn parses_every_window_key() {
    let spec = spec_of(
        r#"{ length = "10s", slide = "5s", timestamp_field = "ts", lag = "2s", watermark_interval = "250ms", idle_timeout = "30s", late_stream = "late" }"#,
    );
    assert_eq!(
        spec,
        WindowSpec {
            length: SECS(10),
            slide: SECS(5),
            timestamp_field: Some("ts".into()),
            lag: Duration::from_secs(2),
            watermark_interval: Duration::from_millis(250),
            idle_timeout: Some(Duration::from_secs(30)),
            late_stream: Some("late".into()),
        }
    );
}

#[test]
fn the_late_stream_is_declared_with_the_inputs_fields_and_can_be_subscribed_to() {
    let source = windowed("window-count", r#"{ length = "10s", late_stream = "too-late" }"#)
        + "[[bolts]]\nid = \"l\"\nkind = \"sink\"\n\
           inputs = [{ from = \"w\", stream = \"too-late\", grouping = { fields = [\"word\"] } }]\n";
    let def = load(&source).expect("valid");
    let w = def.component("w").expect("w");
    let names: Vec<&str> = w.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["default", "too-late"]);
    assert_eq!(w.streams[1].fields, ["word", "ts"].into());
    assert!(!w.streams[1].passthrough);
    let plan = crate::plan::Plan::new(&def).expect("plans");
    let late = plan.stream_id("w", "too-late").expect("planned");
    assert_eq!(plan.streams[late as usize].subscribers.len(), 1);

    let errors = errors(&source.replace("fields = [\"word\"]", "fields = [\"sentence\"]"));
    assert_eq!(
        errors,
        ["13:69: stream \"too-late\" of \"w\" has no field \"sentence\"; its fields: [word, ts]"]
    );
}

#[test]
fn reports_a_window_on_a_kind_that_is_not_windowed() {
    let errors = errors(&windowed("sink", r#"{ length = "10s" }"#));
    assert_eq!(
        errors,
        ["8:1: \"sink\" is not a windowed bolt kind, so it takes no `window`; remove it, or use a \
          windowed kind (windowed bolt kinds: window-count, window-join, window-late)"]
    );
}

#[test]
fn reports_a_windowed_kind_without_a_window() {
    let source = windowed("window-join", "{}").replace("window = {}\n", "");
    assert_eq!(
        errors(&source),
        ["7:8: \"window-join\" is a windowed bolt kind: give it a `window`, e.g. \
          window = { length = \"10s\" } or window = { length = 100 }"]
    );
}

#[test]
fn reports_a_window_on_a_spout() {
    let source = windowed("window-join", "{ length = 10 }")
        .replace("kind = \"events\"\n", "kind = \"events\"\nwindow = { length = 10 }\n");
    assert_eq!(
        errors(&source),
        ["5:1: a spout takes no `window`: only windowed bolts have windows; remove `window` and \
          subscribe a windowed bolt to this spout instead"]
    );
}

#[test]
fn reports_unknown_window_keys_with_the_valid_ones() {
    assert_eq!(
        errors(&windowed("window-count", r#"{ length = "10s", slid = "5s", colour = 1 }"#)),
        [
            "8:28: unknown key `slid` in `window` (did you mean `slide`?); valid keys: length, slide, \
             timestamp_field, lag, watermark_interval, idle_timeout, late_stream",
            "8:41: unknown key `colour` in `window`; valid keys: length, slide, timestamp_field, lag, \
             watermark_interval, idle_timeout, late_stream",
        ]
    );
}

#[test]
fn reports_a_missing_length_and_a_window_that_is_not_a_table() {
    assert_eq!(
        errors(&windowed("window-count", r#"{ slide = "5s" }"#)),
        ["8:10: missing `length` in `window`: give it a duration like \"10s\", \"500ms\" or \"1m\" \
          (a time window) or a number of tuples like 100 (a count window), e.g. length = \"10s\""]
    );
    assert_eq!(
        errors(&windowed("window-count", r#""10s""#)),
        ["8:10: `window` must be a table, found string"]
    );
}

#[test]
fn reports_bad_durations_with_the_accepted_forms() {
    let forms = "a duration like \"10s\", \"500ms\", \"1m\" or \"1h 30m\"";
    assert_eq!(
        errors(&windowed(
            "window-count",
            r#"{ length = "10 parsecs", lag = 2, watermark_interval = "1500us", idle_timeout = "0s" }"#
        )),
        [
            format!(
                "8:21: `length` must be {forms} (a number and a unit: ms, s, m, h, d), found \"10 parsecs\""
            ),
            format!("8:41: `lag` must be {forms} (a string), found integer"),
            "8:65: `watermark_interval` must be whole milliseconds, found \"1500us\"".to_string(),
            "8:90: `idle_timeout` must be longer than 0, found \"0s\"".to_string(),
        ]
    );
    assert_eq!(
        errors(&windowed("window-count", r#"{ length = "0ms" }"#)),
        ["8:21: `length` must be longer than 0, found \"0ms\""]
    );
}

#[test]
fn reports_bad_counts() {
    for (length, message) in [
        ("0", "`length` must be at least 1 tuple, found 0; or a duration like \"10s\""),
        ("-5", "`length` must be at least 1 tuple, found -5; or a duration like \"10s\""),
        (
            "20000000",
            "`length` must be at most 10000000 tuples (a count window keeps its tuples in memory), \
             found 20000000; for more, use a time window like \"10m\"",
        ),
        (
            "10.5",
            "`length` must be a duration like \"10s\", \"500ms\" or \"1m\" (a time window) or a \
             number of tuples like 100 (a count window), found float",
        ),
    ] {
        let window = format!("{{ length = {length} }}");
        assert_eq!(errors(&windowed("window-count", &window)), [format!("8:21: {message}")], "{length}");
    }
    assert_eq!(
        errors(&windowed("window-count", "{ length = 10, slide = 0 }")),
        ["8:33: `slide` must be at least 1 tuple, found 0; or a duration like \"10s\""]
    );
}

#[test]
fn reports_a_slide_longer_than_its_length() {
    assert_eq!(
        errors(&windowed("window-count", r#"{ length = "10s", slide = "1m" }"#)),
        ["8:36: `slide` 1m is longer than `length` 10s: a window slides by at most its length; give \
          a slide of at most 10s (or none: a tumbling window)"]
    );
    assert_eq!(
        errors(&windowed("window-count", "{ length = 10, slide = 20 }")),
        ["8:33: `slide` 20 tuples is longer than `length` 10 tuples: a window slides by at most its \
          length; give a slide of at most 10 tuples (or none: a tumbling window)"]
    );
}

#[test]
fn reports_a_count_window_on_an_aggregate_kind() {
    for window in ["{ length = 100 }", r#"{ length = "10s", slide = 10 }"#] {
        assert_eq!(
            errors(&windowed("window-count", window)),
            ["8:1: \"window-count\" aggregates each key as tuples come, per time window: give \
              `length` (and `slide`) as durations, e.g. window = { length = \"10s\" }"],
            "{window}"
        );
    }
    load(&windowed("window-count", r#"{ length = "10s", slide = "5s" }"#)).expect("time windows");
}

#[test]
fn reports_a_count_window_the_spouts_can_never_fill() {
    let source = windowed("window-join", "{ length = 2500 }");
    assert_eq!(
        errors(&source),
        ["8:1: a count window of `length` 2500 fires once it holds 2500 tuples, and holds them \
          unacked, but the spouts may have only 1000 in flight (max_spout_pending = 1000 in \
          [settings], times 1 spout task(s)): it would never fill; set max_spout_pending to at \
          least 2500 (0: no bound)"]
    );
    load(&format!("{source}[settings]\nmax_spout_pending = 2500\n")).expect("room for the window");
    load(&format!("{source}[settings]\nmax_spout_pending = 0\n")).expect("no bound");
    load(&format!("{source}[settings]\nacking = false\n")).expect("nothing held unacked");
    let three_spouts = source.replace("kind = \"events\"\n", "kind = \"events\"\nparallelism = 3\n");
    load(&three_spouts).expect("three spout tasks may have 3000 in flight");
}

#[test]
fn reports_a_time_window_longer_than_the_message_timeout() {
    let source = windowed("window-count", r#"{ length = "25s", lag = "10s" }"#);
    assert_eq!(
        errors(&source),
        ["8:21: a window of `length` 25s plus `lag` 10s holds its tuples 35s before it fires, longer \
          than message_timeout_secs = 30 in [settings]: they would time out first; shorten the \
          window or set message_timeout_secs to at least 35"]
    );
    load(&format!("{source}[settings]\nmessage_timeout_secs = 35\n")).expect("fits the timeout");
    load(&format!("{source}[settings]\nacking = false\n")).expect("nothing times out without acking");
    assert_eq!(
        errors(&windowed("window-count", r#"{ length = "1m" }"#)),
        ["8:21: a window of `length` 1m holds its tuples 1m before it fires, longer than \
          message_timeout_secs = 30 in [settings]: they would time out first; shorten the window \
          or set message_timeout_secs to at least 60"]
    );
    let long_count = windowed("window-join", "{ length = 1000000 }");
    load(&format!("{long_count}[settings]\nmax_spout_pending = 0\n"))
        .expect("a count window has no duration");
}

#[test]
fn reports_a_timestamp_field_an_input_lacks() {
    let source = windowed("window-count", r#"{ length = "10s", timestamp_field = "ts" }"#)
        .replace("inputs = [{ from = \"e\" }]", "inputs = [{ from = \"e\" }, { from = \"s\" }]")
        + "[[spouts]]\nid = \"s\"\nkind = \"random-sentence\"\n";
    assert_eq!(
        errors(&source),
        ["8:46: timestamp_field \"ts\" is not a field of stream \"default\" of \"s\" (its fields: \
          [sentence]); every input of a window on event time must carry it"]
    );
}

#[test]
fn reports_a_late_stream_named_like_a_declared_stream() {
    assert_eq!(
        errors(&windowed("window-late", r#"{ length = "10s", late_stream = "late" }"#)),
        ["8:42: late_stream \"late\" clashes with stream \"late\" that kind \"window-late\" declares \
          (its streams: default, late); give late tuples a stream of their own, e.g. \
          late_stream = \"late-2\""]
    );
    assert_eq!(
        errors(&windowed("window-count", r#"{ length = "10s", late_stream = "default" }"#)),
        ["8:42: late_stream \"default\" clashes with stream \"default\" that kind \"window-count\" \
          declares (its streams: default); give late tuples a stream of their own, e.g. \
          late_stream = \"late\""]
    );
}

#[test]
fn reports_late_tuples_from_inputs_of_different_fields() {
    let source = windowed("window-join", r#"{ length = "10s", late_stream = "late" }"#)
        .replace("inputs = [{ from = \"e\" }]", "inputs = [{ from = \"e\" }, { from = \"s\" }]")
        + "[[spouts]]\nid = \"s\"\nkind = \"random-sentence\"\n";
    assert_eq!(
        errors(&source),
        ["9:36: bolt \"w\" sends late tuples out with their own fields on stream \"late\", so all \
          its inputs must carry the same fields, but \"e\" carries [word, ts] and \"s\" carries \
          [sentence]"]
    );
    load(&source.replace(", late_stream = \"late\"", "")).expect("without late tuples, inputs may differ");
}
