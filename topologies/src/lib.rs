//! Squall's shipped components and their [`registry`].
//!
//! Contract: [`registry`] names every shipped spout and bolt under the kind a topology file
//! uses (`random-sentence`, `split-sentence`, …), each with its [`docs`] — summary, config
//! keys with their defaults, emitted fields — which `squall kinds [KIND]` prints; each kind's
//! module says more about its guarantees. `state-count` is a stateful bolt; the registry also names the `log` and `redis` state
//! backends. `window-count` is a windowed bolt (an aggregate):
//! a topology file gives it a `window` table (docs/topology-file.md). Every config rejects unknown keys, and every
//! factory rejects bad values with a one-line message.

pub mod docs;
pub mod exclamation;
pub mod fast_hash;
pub mod file_sink;
pub mod file_spout;
pub mod flaky;
pub mod log;
pub mod random_sentence;
pub mod random_word;
pub mod replay;
pub mod sequence;
pub mod split_sentence;
pub mod state_count;
pub mod window_count;
pub mod word_count;

#[cfg(test)]
mod testkit;

use squall_api::{NoConfig, Registry};

/// Every shipped component kind.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .spout("random-sentence", random_sentence::build)
        .spout("random-word", random_word::build)
        .spout("sequence", sequence::build)
        .spout("file-spout", file_spout::build)
        .basic_bolt("split-sentence", split_sentence::build)
        .basic_bolt("word-count", |_: NoConfig| Ok(word_count::WordCount::default()))
        .basic_bolt("exclamation", exclamation::build)
        .bolt("flaky", flaky::build)
        .basic_bolt("file-sink", file_sink::build)
        .aggregate_bolt("window-count", window_count::build)
        .stateful_bolt("state-count", state_count::build)
        .state_backend("log", squall_broker::state::factory)
        .state_backend("redis", squall_redis::factory)
        .basic_bolt("log", |_: NoConfig| Ok(log::Log::default()))
        .rewindable_spout("log-spout", squall_broker::spout::build)
        .bolt("log-sink", squall_broker::sink::build)
        .spout("shell-spout", squall_multilang::build_spout)
        .bolt("shell-bolt", squall_multilang::build_bolt)
        .describe("random-sentence", docs::RANDOM_SENTENCE)
        .describe("random-word", docs::RANDOM_WORD)
        .describe("sequence", docs::SEQUENCE)
        .describe("split-sentence", docs::SPLIT_SENTENCE)
        .describe("word-count", docs::WORD_COUNT)
        .describe("exclamation", docs::EXCLAMATION)
        .describe("flaky", docs::FLAKY)
        .describe("file-sink", docs::FILE_SINK)
        .describe("file-spout", docs::FILE_SPOUT)
        .describe("window-count", docs::WINDOW_COUNT)
        .describe("state-count", docs::STATE_COUNT)
        .describe("log", docs::LOG)
        .describe("log-spout", docs::LOG_SPOUT)
        .describe("log-sink", docs::LOG_SINK)
        .describe("shell-spout", docs::SHELL_SPOUT)
        .describe("shell-bolt", docs::SHELL_BOLT);
    #[cfg(feature = "kafka")]
    registry
        .rewindable_spout("kafka-spout", squall_kafka::spout::build)
        .bolt("kafka-sink", squall_kafka::sink::build)
        .describe("kafka-spout", docs::KAFKA_SPOUT)
        .describe("kafka-sink", docs::KAFKA_SINK);
    registry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{build, build_error};
    use squall_api::Role;

    /// Each kind with the least config it builds from.
    const KINDS: [(&str, Role, &str); 18] = [
        ("exclamation", Role::Bolt, ""),
        ("file-sink", Role::Bolt, r#"path = "out.jsonl""#),
        ("file-spout", Role::Spout, r#"path = "events.jsonl""#),
        ("flaky", Role::Bolt, ""),
        ("kafka-sink", Role::Bolt, r#"topic = "out""#),
        ("kafka-spout", Role::Spout, r#"topic = "in""#),
        ("log", Role::Bolt, ""),
        ("log-sink", Role::Bolt, r#"topic = "out""#),
        ("log-spout", Role::Spout, r#"topic = "in""#),
        ("random-sentence", Role::Spout, ""),
        ("random-word", Role::Spout, ""),
        ("sequence", Role::Spout, "count = 1"),
        (
            "shell-bolt",
            Role::Bolt,
            r#"command = ["python3", "split.py"]
                                      fields = ["word"]"#,
        ),
        (
            "shell-spout",
            Role::Spout,
            r#"command = ["python3", "spout.py"]
                                        fields = ["word"]"#,
        ),
        ("split-sentence", Role::Bolt, ""),
        ("state-count", Role::Bolt, r#"key = "word""#),
        ("window-count", Role::Bolt, ""),
        ("word-count", Role::Bolt, ""),
    ];

    /// The kinds of [`KINDS`] this build registers (the Kafka ones need the `kafka` feature).
    fn shipped() -> impl Iterator<Item = (&'static str, Role, &'static str)> {
        KINDS.into_iter().filter(|(kind, ..)| cfg!(feature = "kafka") || !kind.starts_with("kafka-"))
    }

    #[test]
    fn registry_has_every_kind_with_its_role() {
        let registry = registry();
        let kinds: Vec<_> = registry.kinds().collect();
        let expected: Vec<_> = shipped().map(|(k, r, _)| (k, r)).collect();
        assert_eq!(kinds, expected);
    }

    #[test]
    fn every_kind_builds_from_its_minimal_config() {
        for (kind, role, config) in shipped() {
            let component = build(kind, config).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(component.role(), role, "{kind}");
        }
    }

    #[test]
    fn rejects_unknown_config_key() {
        for (kind, _, config) in shipped() {
            let e = build_error(kind, &format!("{config}\nbogus = 1"));
            assert!(e.contains("unknown field `bogus`"), "{kind}: {e}");
        }
    }

    #[test]
    fn only_sinks_declare_no_outputs() {
        for (kind, _, config) in shipped() {
            let streams = build(kind, config).unwrap().declare_outputs();
            let is_sink = matches!(kind, "file-sink" | "log" | "log-sink" | "kafka-sink");
            assert_eq!(streams.streams().is_empty(), is_sink, "{kind}");
        }
    }
}
