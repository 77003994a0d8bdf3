//! `kafka-spout`'s config: its keys, their defaults, and the checks `build` makes.
//!
//! Contract: a wrong value is refused with a one-line message naming its key — by serde for a
//! value of the wrong type (see [`keyed`]), by [`Config::validate`] for one out of bounds,
//! and by [`client::client_config`] for `bootstrap` and `properties` — before anything
//! connects. [`FirstPoll`] and [`Guarantee`] are described in the [spout's docs](super).

use serde::Deserialize;

use crate::client::{self, de_bootstrap, de_properties, de_topic, default_bootstrap, keyed, Properties};
use crate::error::Error;
use squall_engine::partitioned::config::{check_offsets, check_range, ConfigError};
use squall_engine::partitioned::offsets::RetryPolicy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_bootstrap", deserialize_with = "de_bootstrap")]
    pub bootstrap: String,
    #[serde(deserialize_with = "de_topic")]
    pub topic: String,
    #[serde(default, deserialize_with = "de_group")]
    pub group: Option<String>,
    #[serde(default, deserialize_with = "de_first_poll")]
    pub first_poll: FirstPoll,
    #[serde(default, deserialize_with = "de_guarantee")]
    pub guarantee: Guarantee,
    #[serde(
        default = "squall_engine::partitioned::offsets::defaults::max_uncommitted",
        deserialize_with = "de_max_uncommitted"
    )]
    pub max_uncommitted: u64,
    #[serde(default, deserialize_with = "de_retry_limit")]
    pub retry_limit: Option<u32>,
    #[serde(
        default = "squall_engine::partitioned::offsets::defaults::retry_backoff_ms",
        deserialize_with = "de_retry_backoff_ms"
    )]
    pub retry_backoff_ms: u64,
    #[serde(
        default = "squall_engine::partitioned::offsets::defaults::retry_backoff_max_ms",
        deserialize_with = "de_retry_backoff_max_ms"
    )]
    pub retry_backoff_max_ms: u64,
    #[serde(
        default = "squall_engine::partitioned::offsets::defaults::commit_interval_ms",
        deserialize_with = "de_commit_interval_ms"
    )]
    pub commit_interval_ms: u64,
    #[serde(default = "default_poll_interval_ms", deserialize_with = "de_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default, deserialize_with = "de_stop_at_end")]
    pub stop_at_end: bool,
    #[serde(default, deserialize_with = "de_properties")]
    pub properties: Properties,
}

keyed! {
    de_group: Option<String> = "group";
    de_first_poll: FirstPoll = "first_poll";
    de_guarantee: Guarantee = "guarantee";
    de_max_uncommitted: u64 = "max_uncommitted";
    de_retry_limit: Option<u32> = "retry_limit";
    de_retry_backoff_ms: u64 = "retry_backoff_ms";
    de_retry_backoff_max_ms: u64 = "retry_backoff_max_ms";
    de_commit_interval_ms: u64 = "commit_interval_ms";
    de_poll_interval_ms: u64 = "poll_interval_ms";
    de_stop_at_end: bool = "stop_at_end";
}

/// Where a partition starts: see the module docs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstPoll {
    Earliest,
    Latest,
    #[default]
    CommittedElseEarliest,
}

/// What the spout promises about each record: see the module docs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    #[default]
    AtLeastOnce,
    AtMostOnce,
    None,
}

pub(super) fn default_poll_interval_ms() -> u64 {
    100
}

/// The settings the spout makes itself; `properties` may not name them.
pub(super) fn fixed_settings(config: &Config, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("group.id", group.to_string()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        // Only for a position that became invalid while running; starts are set explicitly.
        ("auto.offset.reset", "earliest".into()),
        ("enable.partition.eof", config.stop_at_end.to_string()),
        ("fetch.wait.max.ms", config.poll_interval_ms.to_string()),
    ]
}

impl Config {
    /// Refuses a value out of bounds, naming its key; checks `bootstrap` and `properties`
    /// with librdkafka, with a stand-in group.
    pub fn validate(&self) -> Result<(), Error> {
        if self.topic.is_empty() {
            return Err(ConfigError::empty("topic").into());
        }
        if self.group.as_deref() == Some("") {
            return Err(ConfigError::Empty {
                key: "group",
                hint: " (leave it out for `<topology>.<component>`)",
            }
            .into());
        }
        check_offsets(&self.topic, self.max_uncommitted, self.retry_limit)?;
        if self.commit_interval_ms == 0 {
            return Err(ConfigError::too_small("commit_interval_ms", 1).into());
        }
        check_range("poll_interval_ms", self.poll_interval_ms, 1, 300_000)?;
        client::client_config("kafka-spout", &self.bootstrap, &fixed_settings(self, "g"), &self.properties)?;
        Ok(())
    }

    /// How failed records are retried.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy::from_config(self.retry_backoff_ms, self.retry_backoff_max_ms, self.retry_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::*;

    fn config(toml: &str) -> Config {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn config_defaults_and_bad_values_name_the_key() {
        let c = config(r#"topic = "in""#);
        assert_eq!((c.first_poll, c.guarantee), (FirstPoll::CommittedElseEarliest, Guarantee::AtLeastOnce));
        assert_eq!(c.bootstrap, "127.0.0.1:9092");
        let c = config(
            r#"topic = "in"
first_poll = "latest"
guarantee = "at_most_once""#,
        );
        assert_eq!((c.first_poll, c.guarantee), (FirstPoll::Latest, Guarantee::AtMostOnce));
        for (toml, key) in [
            (r#"topic = """#, "`topic`"),
            (
                r#"topic = "in"
max_uncommitted = 0"#,
                "`max_uncommitted`",
            ),
            (
                r#"topic = "in"
retry_limit = 0"#,
                "`retry_limit`",
            ),
            (
                r#"topic = "in"
poll_interval_ms = 0"#,
                "`poll_interval_ms`",
            ),
            (
                r#"topic = "in"
bootstrap = """#,
                "`bootstrap`",
            ),
            (
                r#"topic = "in"
properties = { "enable.auto.commit" = true }"#,
                "`properties.enable.auto.commit`",
            ),
        ] {
            let Err(e) = build(config(toml)) else { panic!("{toml} was accepted") };
            assert!(e.to_string().contains(key), "{toml}: {e}");
        }
        assert!(toml::from_str::<Config>(
            r#"topic = "in"
guarantee = "exactly_once""#
        )
        .is_err());
    }
}
