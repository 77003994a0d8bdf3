//! The config checks every partitioned-log component makes, with errors that name their key.
//!
//! Contract: each [`ConfigError`] names the key it is about, in backquotes, and says in one
//! line what the key must be; [`check_offsets`] is what `log-spout` and `kafka-spout` both
//! check of the offset-tracking keys, [`RetryPolicy::from_config`] what they both make of the
//! retry keys, [`group_or_default`] their consumer group.

use std::time::Duration;

use squall_api::TopologyContext;

use super::offsets::RetryPolicy;

/// A config value a component refuses; `key` is the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `hint`: empty, or a clause starting with a space (say what leaving the key out does).
    #[error("`{key}` must not be empty{hint}")]
    Empty { key: &'static str, hint: &'static str },
    #[error("`{key}` must be at least {min}{hint}")]
    TooSmall { key: &'static str, min: u64, hint: &'static str },
    #[error("`{key}` must be between {min} and {max}")]
    OutOfRange { key: &'static str, min: u64, max: u64 },
}

impl ConfigError {
    /// `key` must not be empty.
    pub fn empty(key: &'static str) -> Self {
        ConfigError::Empty { key, hint: "" }
    }

    /// `key` must be at least `min`.
    pub fn too_small(key: &'static str, min: u64) -> Self {
        ConfigError::TooSmall { key, min, hint: "" }
    }

    /// The config key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            ConfigError::Empty { key, .. }
            | ConfigError::TooSmall { key, .. }
            | ConfigError::OutOfRange { key, .. } => key,
        }
    }
}

/// `value` must be in `min..=max`.
pub fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { key, min, max })
    }
}

/// A spout's `topic`, `max_uncommitted` and `retry_limit`: a topic, at least 1 record past the
/// committed offset, at least 1 failure before giving up.
pub fn check_offsets(topic: &str, max_uncommitted: u64, retry_limit: Option<u32>) -> Result<(), ConfigError> {
    if topic.is_empty() {
        return Err(ConfigError::empty("topic"));
    }
    if max_uncommitted == 0 {
        return Err(ConfigError::too_small("max_uncommitted", 1));
    }
    if retry_limit == Some(0) {
        return Err(ConfigError::TooSmall {
            key: "retry_limit",
            min: 1,
            hint: " (leave it out to retry forever)",
        });
    }
    Ok(())
}

/// A spout's consumer group: `group`, else `<topology>.<component>`.
pub fn group_or_default(group: Option<&str>, ctx: &TopologyContext) -> String {
    match group {
        Some(group) => group.to_string(),
        None => format!("{}.{}", ctx.topology_name(), ctx.component_id()),
    }
}

impl RetryPolicy {
    /// The policy of a spout's `retry_backoff_ms`, `retry_backoff_max_ms` (never below the
    /// backoff) and `retry_limit`.
    pub fn from_config(backoff_ms: u64, backoff_max_ms: u64, limit: Option<u32>) -> Self {
        RetryPolicy {
            backoff: Duration::from_millis(backoff_ms),
            backoff_max: Duration::from_millis(backoff_max_ms.max(backoff_ms)),
            limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_key_in_one_line() {
        assert_eq!(check_offsets("", 1, None).unwrap_err().to_string(), "`topic` must not be empty");
        assert_eq!(
            check_offsets("t", 0, None).unwrap_err().to_string(),
            "`max_uncommitted` must be at least 1"
        );
        let e = check_offsets("t", 1, Some(0)).unwrap_err();
        assert_eq!(e.to_string(), "`retry_limit` must be at least 1 (leave it out to retry forever)");
        assert_eq!(e.key(), "retry_limit");
        assert_eq!(check_offsets("t", 1, Some(1)), Ok(()));
        let e = check_range("poll_interval_ms", 0, 1, 300_000).unwrap_err();
        assert_eq!(e.to_string(), "`poll_interval_ms` must be between 1 and 300000");
    }

    #[test]
    fn retry_backoff_max_is_never_below_the_backoff() {
        let policy = RetryPolicy::from_config(500, 100, Some(3));
        assert_eq!(policy.backoff_max, Duration::from_millis(500));
        assert_eq!(policy.limit, Some(3));
    }
}
