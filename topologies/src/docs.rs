//! The documentation of every shipped kind, as `squall kinds KIND` prints it.
//!
//! Contract: [`registry`](crate::registry) attaches one [`KindDoc`] to each kind it
//! registers. The tests below keep them honest: every kind is documented; its documented keys
//! are exactly the keys its config accepts, and a config of every key (each at its default
//! or example) builds; built from its required keys alone, it declares exactly the fields
//! documented under `emits`.
//!
//! `log-spout` and `log-sink` are built in `squall-broker`, `kafka-spout` and `kafka-sink` in
//! `squall-kafka`; their module docs there say more (restarts, guarantees, batching).

use squall_api::{ConfigKey, Emits, KindDoc};

const RATE: ConfigKey =
    ConfigKey::value("rate", "0", "tuples per second for the whole component; 0 = flat out");
const LIMIT: ConfigKey = ConfigKey::value("limit", "0", "tuples in all; 0 = endless");
const SEED: ConfigKey = ConfigKey::unset(
    "seed",
    "random",
    "42",
    "the random seed: tuple i's value depends on (seed, i) alone, so a replay re-emits it",
);

pub const RANDOM_SENTENCE: KindDoc = KindDoc {
    summary: "Emits Storm's five classic sentences in random order, each reliably (replayed on failure).",
    config: &[RATE, LIMIT, SEED],
    emits: Emits::Fields(&["sentence"]),
};

pub const RANDOM_WORD: KindDoc = KindDoc {
    summary: "Emits words picked at random from a list, each reliably (replayed on failure).",
    config: &[
        ConfigKey::value(
            "words",
            r#"["nathan", "mike", "jackson", "golda", "bertels"]"#,
            "the words to pick from",
        ),
        RATE,
        LIMIT,
        SEED,
    ],
    emits: Emits::Fields(&["word"]),
};

pub const SEQUENCE: KindDoc = KindDoc {
    summary:
        "Emits the numbers 0 … count−1 once each (again when a tree fails); finished once all are acked.",
    config: &[
        ConfigKey::required("count", "10", "how many numbers, shared among the component's tasks"),
        RATE,
    ],
    emits: Emits::Fields(&["n"]),
};

pub const FILE_SPOUT: KindDoc = KindDoc {
    summary: "Reads a file line by line (text or JSON objects), each line a reliable tuple with its \
              line number as message id; finished at the end unless following.",
    config: &[
        ConfigKey::required(
            "path",
            r#""events.jsonl""#,
            "the file; a relative path resolves against the current directory",
        ),
        ConfigKey::value(
            "format",
            r#""lines""#,
            "\"lines\" (each line as text) or \"jsonl\" (each line a JSON object; malformed ones are \
             reported and skipped)",
        ),
        ConfigKey::unset(
            "fields",
            "lines: [\"line\"]; jsonl: required",
            r#"["word"]"#,
            "jsonl: the keys to emit, in order (integers stay integers); lines: the one field name",
        ),
        ConfigKey::value("rate", "0", "lines per second for the whole component; 0 = flat out"),
        ConfigKey::value(
            "follow",
            "false",
            "keep reading as the file grows, like `tail -f` (never finished); false: stop at its end",
        ),
    ],
    emits: Emits::Fields(&["line"]),
};

pub const SPLIT_SENTENCE: KindDoc = KindDoc {
    summary:
        "Splits a string field of its input (the first, else `field`) on whitespace and emits each word.",
    config: &[ConfigKey::unset(
        "field",
        "none",
        r#""value""#,
        "the input field to split; without it, the first — e.g. `value` after a log-spout",
    )],
    emits: Emits::Fields(&["word"]),
};

pub const WORD_COUNT: KindDoc = KindDoc {
    summary: "Counts words (the `word` field, else the first) in memory; emits each with its new count.",
    config: &[],
    emits: Emits::Fields(&["word", "count"]),
};

pub const STATE_COUNT: KindDoc = KindDoc {
    summary: "Counts inputs per key in a checkpointed state (restored after a restart); emits each key \
              with its running count.",
    config: &[ConfigKey::required(
        "key",
        r#""word""#,
        "the input field to count by (its value as text); group the input by this field",
    )],
    emits: Emits::Fields(&["key", "count"]),
};

pub const EXCLAMATION: KindDoc = KindDoc {
    summary: "Appends a suffix to a string field of each input.",
    config: &[
        ConfigKey::value("suffix", r#""!!!""#, "the text appended"),
        ConfigKey::unset(
            "field",
            "none",
            r#""value""#,
            "the input field to suffix; then it emits the input's own fields (with that one \
             suffixed) instead of `word` — e.g. `value` after a log-spout",
        ),
    ],
    emits: Emits::Fields(&["word"]),
};

pub const FLAKY: KindDoc = KindDoc {
    summary: "Fails a fraction of its inputs and passes the rest through, to exercise replay.",
    config: &[
        ConfigKey::value("fail_fraction", "0.1", "the probability an input fails, 0.0 to 1.0"),
        ConfigKey::unset("seed", "random", "7", "the random seed of the fail draws"),
        ConfigKey::value(
            "first_attempt_only",
            "false",
            "an input (by its values' hash) may fail only the first time this task sees it",
        ),
    ],
    emits: Emits::Passthrough,
};

pub const FILE_SINK: KindDoc = KindDoc {
    summary: "Appends each input to a file as one JSON object per line (field name to value).",
    config: &[ConfigKey::required(
        "path",
        r#""out.jsonl""#,
        "the file; its parent directories are created, an existing file is appended to",
    )],
    emits: Emits::Nothing,
};

pub const WINDOW_COUNT: KindDoc = KindDoc {
    summary: "Windowed: counts each window's tuples per key (needs a `window` table); emits one \
              row per key when the window fires.",
    config: &[ConfigKey::unset(
        "key",
        "one count per window, key null",
        r#""word""#,
        "the input field to count by",
    )],
    emits: Emits::Fields(&["key", "count", "window_start", "window_end"]),
};

pub const LOG: KindDoc = KindDoc {
    summary: "Prints each input to stderr, one line per tuple: `split[2]: word=\"cow\" count=4`.",
    config: &[],
    emits: Emits::Nothing,
};

const BROKER: ConfigKey = ConfigKey::value(
    "broker",
    r#""embedded""#,
    "\"embedded\" (the log in --data-dir) or a `squall broker` server's host:port",
);
const MAX_UNCOMMITTED: ConfigKey =
    ConfigKey::value("max_uncommitted", "50000", "records per partition past the committed offset, at most");
const RETRY_LIMIT: ConfigKey =
    ConfigKey::unset("retry_limit", "retry forever", "10", "failures before a record is given up");
const RETRY_BACKOFF_MS: ConfigKey =
    ConfigKey::value("retry_backoff_ms", "100", "wait before a failed record is re-emitted, doubling");
const RETRY_BACKOFF_MAX_MS: ConfigKey =
    ConfigKey::value("retry_backoff_max_ms", "10000", "the longest wait before a re-emit");
const COMMIT_INTERVAL_MS: ConfigKey =
    ConfigKey::value("commit_interval_ms", "1000", "how often the group's offsets are committed, at least");
const STOP_AT_END: ConfigKey = ConfigKey::value(
    "stop_at_end",
    "false",
    "finish once every record in the topic at open is acked and committed (else follow it forever)",
);
const GROUP: ConfigKey = ConfigKey::unset(
    "group",
    "<topology>.<component>",
    r#""my-group""#,
    "the consumer group whose committed offsets the spout resumes from",
);
const KEY_FIELD: ConfigKey =
    ConfigKey::value("key_field", r#""key""#, "the input field of the record's key (none if absent or null)");
const VALUE_FIELD: ConfigKey = ConfigKey::value(
    "value_field",
    r#""value""#,
    "the input field of the record's value: strings as UTF-8, bytes as they are, else JSON",
);
const RECORD_FIELDS: Emits = Emits::Fields(&["key", "value", "partition", "offset"]);

pub const LOG_SPOUT: KindDoc = KindDoc {
    summary: "Reads a topic of the embedded log with a consumer group; each record is a reliable tuple.",
    config: &[
        ConfigKey::required("topic", r#""in""#, "the topic to read"),
        GROUP,
        BROKER,
        ConfigKey::value(
            "first_poll",
            r#""earliest""#,
            "where a group with no committed offset starts: \"earliest\" or \"latest\"",
        ),
        MAX_UNCOMMITTED,
        RETRY_LIMIT,
        RETRY_BACKOFF_MS,
        RETRY_BACKOFF_MAX_MS,
        COMMIT_INTERVAL_MS,
        ConfigKey::value("fetch_max_bytes", "1048576", "bytes per fetch, at most (at least 1024)"),
        STOP_AT_END,
    ],
    emits: RECORD_FIELDS,
};

pub const LOG_SINK: KindDoc = KindDoc {
    summary: "Appends each input to a topic of the embedded log; acks it once its record is durable.",
    config: &[
        ConfigKey::required("topic", r#""out""#, "the topic to write"),
        BROKER,
        KEY_FIELD,
        VALUE_FIELD,
        ConfigKey::value("batch", "256", "records per append (a batch is also appended at 1 MiB)"),
        ConfigKey::value("linger_ms", "5", "how often partial batches are appended and durable ones acked"),
    ],
    emits: Emits::Nothing,
};

const BOOTSTRAP: ConfigKey =
    ConfigKey::value("bootstrap", r#""127.0.0.1:9092""#, "the Kafka servers, host:port[,host:port…]");

pub const KAFKA_SPOUT: KindDoc = KindDoc {
    summary: "Reads a Kafka topic with a consumer group's committed offsets; each record is a tuple.",
    config: &[
        BOOTSTRAP,
        ConfigKey::required("topic", r#""in""#, "the topic to read"),
        GROUP,
        ConfigKey::value(
            "first_poll",
            r#""committed_else_earliest""#,
            "where a partition starts on a first start: \"committed_else_earliest\", \"earliest\" or \"latest\"",
        ),
        ConfigKey::value(
            "guarantee",
            r#""at_least_once""#,
            "\"at_least_once\" (commit up to the lowest unacked offset), \"at_most_once\" or \"none\"",
        ),
        MAX_UNCOMMITTED,
        RETRY_LIMIT,
        RETRY_BACKOFF_MS,
        RETRY_BACKOFF_MAX_MS,
        COMMIT_INTERVAL_MS,
        ConfigKey::value(
            "poll_interval_ms",
            "100",
            "the longest the broker holds a fetch for new records (librdkafka's fetch.wait.max.ms)",
        ),
        STOP_AT_END,
        ConfigKey::value(
            "properties",
            "{}",
            r#"more librdkafka settings, e.g. { "client.id" = "me" }; not the ones the spout sets"#,
        ),
    ],
    emits: RECORD_FIELDS,
};

pub const KAFKA_SINK: KindDoc = KindDoc {
    summary: "Produces each input to a Kafka topic with acks=all; acks it once the broker has the record.",
    config: &[
        BOOTSTRAP,
        ConfigKey::required("topic", r#""out""#, "the topic to write"),
        KEY_FIELD,
        VALUE_FIELD,
        ConfigKey::value(
            "linger_ms",
            "5",
            "how long records wait to be batched (librdkafka's linger.ms), and how often delivered ones are acked",
        ),
        ConfigKey::value(
            "properties",
            "{}",
            r#"more librdkafka settings, e.g. { "compression.type" = "lz4" }; not acks or linger.ms"#,
        ),
    ],
    emits: Emits::Nothing,
};

const SHELL_KEYS: [ConfigKey; 8] = [
    ConfigKey::required(
        "command",
        r#"["python3", "split.py"]"#,
        "the child process to run per task: a program on PATH or a path relative to the topology's resources/ folder, and its arguments",
    ),
    ConfigKey::required(
        "fields",
        r#"["word"]"#,
        "the fields of the default stream it emits on (may be left out if `streams` names every stream)",
    ),
    ConfigKey::unset(
        "streams",
        "only the default stream",
        r#"{ picked = { fields = ["word"], direct = true } }"#,
        "more output streams: name = [fields], or name = { fields = [...], direct = true } for a direct stream",
    ),
    ConfigKey::unset(
        "dir",
        "the resources/ folder",
        r#""py""#,
        "the child's working directory, relative to the resources/ folder beside the topology file",
    ),
    ConfigKey::value("env", "{}", "environment variables added to the child's"),
    ConfigKey::value("conf", "{}", "keys added to the conf the child gets in the handshake"),
    ConfigKey::value(
        "max_pending",
        "100",
        "bolts: inputs handed to the child and not yet acked or failed before the bolt waits for it",
    ),
    ConfigKey::value(
        "timeout_secs",
        "30",
        "a child silent this long (no answer to a heartbeat or command) is stopped, its tuples failed, and started again",
    ),
];

pub const SHELL_BOLT: KindDoc = KindDoc {
    summary: "Runs a bolt written for Storm in another language (pystorm, storm.py, …) as a child process per task, over Storm's multi-lang protocol.",
    config: &SHELL_KEYS,
    emits: Emits::Configured,
};

pub const SHELL_SPOUT: KindDoc = KindDoc {
    summary: "Runs a spout written for Storm in another language (pystorm, storm.py, …) as a child process per task, over Storm's multi-lang protocol.",
    config: &SHELL_KEYS,
    emits: Emits::Configured,
};

#[cfg(test)]
mod tests {
    use crate::registry;
    use crate::testkit::{build, build_error};
    use squall_api::{Emits, KeyDefault, DEFAULT_STREAM};

    /// The keys a kind's config accepts, from serde's refusal of an unknown one ("unknown
    /// field `bogus`, expected one of `a`, `b`" / "there are no fields").
    fn accepted_keys(kind: &str, required: &str) -> Vec<String> {
        let e = build_error(kind, &format!("{required}\nbogus = 1"));
        let (_, expected) = e.split_once("unknown field `bogus`").unwrap_or_else(|| panic!("{kind}: {e}"));
        expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
    }

    /// A config of the kind's required keys, at their examples.
    fn required_config(kind: &str) -> String {
        let doc = registry().doc(kind).copied().unwrap();
        doc.config
            .iter()
            .filter(|k| matches!(k.default, KeyDefault::Required { .. }))
            .map(|k| format!("{} = {}\n", k.name, k.default.example()))
            .collect()
    }

    #[test]
    fn every_kind_is_documented() {
        let registry = registry();
        for (kind, _) in registry.kinds() {
            let doc = registry.doc(kind).unwrap_or_else(|| panic!("{kind} has no KindDoc"));
            assert!(!doc.summary.is_empty() && !doc.summary.contains('\n'), "{kind}");
        }
    }

    #[test]
    fn documented_keys_are_exactly_the_accepted_keys() {
        let registry = registry();
        for (kind, _) in registry.kinds() {
            let doc = registry.doc(kind).unwrap();
            let mut documented: Vec<&str> = doc.config.iter().map(|k| k.name).collect();
            let mut accepted = accepted_keys(kind, &required_config(kind));
            documented.sort_unstable();
            accepted.sort_unstable();
            assert_eq!(documented, accepted, "{kind}");
        }
    }

    #[test]
    fn a_config_of_every_documented_key_builds() {
        let registry = registry();
        for (kind, _) in registry.kinds() {
            let doc = registry.doc(kind).unwrap();
            let config: String =
                doc.config.iter().map(|k| format!("{} = {}\n", k.name, k.default.example())).collect();
            if let Err(e) = build(kind, &config) {
                panic!("{kind}: {e}\n{config}");
            }
        }
    }

    #[test]
    fn documented_defaults_build_like_an_empty_config() {
        // Each default, written out, is a value the key takes.
        let registry = registry();
        for (kind, _) in registry.kinds() {
            let doc = registry.doc(kind).unwrap();
            for key in doc.config.iter().filter(|k| matches!(k.default, KeyDefault::Value(_))) {
                let config = format!("{}{} = {}\n", required_config(kind), key.name, key.default.example());
                if let Err(e) = build(kind, &config) {
                    panic!("{kind}: {e}\n{config}");
                }
            }
        }
    }

    #[test]
    fn documented_emits_are_what_the_built_component_declares() {
        let registry = registry();
        for (kind, _) in registry.kinds() {
            let doc = registry.doc(kind).unwrap();
            let declared = build(kind, &required_config(kind)).unwrap().declare_outputs();
            let streams = declared.streams();
            match doc.emits {
                Emits::Nothing => assert!(streams.is_empty(), "{kind}: {streams:?}"),
                Emits::Fields(fields) => {
                    assert_eq!(streams.len(), 1, "{kind}: {streams:?}");
                    assert_eq!(streams[0].name, DEFAULT_STREAM, "{kind}");
                    assert!(!streams[0].passthrough, "{kind}");
                    let names: Vec<&str> = streams[0].fields.iter().collect();
                    assert_eq!(names, fields, "{kind}");
                }
                Emits::Configured => {
                    // Built from its required keys at their examples: the example fields.
                    let fields = doc.config.iter().find(|k| k.name == "fields").map(|k| k.default.example());
                    assert_eq!(streams.len(), 1, "{kind}: {streams:?}");
                    let names: Vec<&str> = streams[0].fields.iter().collect();
                    assert_eq!(
                        fields.map(|f| f.replace(' ', "")),
                        Some(format!("{names:?}").replace(' ', "")),
                        "{kind}"
                    );
                }
                Emits::Passthrough => {
                    assert_eq!(streams.len(), 1, "{kind}: {streams:?}");
                    assert!(streams[0].passthrough && streams[0].name == DEFAULT_STREAM, "{kind}");
                }
            }
        }
    }
}
