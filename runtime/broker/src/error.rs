//! What can go wrong talking to a broker. Every variant displays as one line that says what
//! is wrong and where (topic, partition, offset, file), ready to print after `error: `.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("invalid {what} name `{name}`: use 1–200 of A-Z a-z 0-9 . _ -")]
    InvalidName { what: &'static str, name: String },
    #[error("topic `{topic}` has no partition {partition} (it has {partitions})")]
    NoSuchPartition { topic: String, partition: u32, partitions: u32 },
    #[error("offset {offset} of `{topic}`/{partition} is beyond the end (high watermark {high_watermark})")]
    OffsetBeyondEnd { topic: String, partition: u32, offset: u64, high_watermark: u64 },
    #[error(
        "offset {offset} of `{topic}`/{partition} was removed by retention (the log starts at {log_start})"
    )]
    OffsetRemoved { topic: String, partition: u32, offset: u64, log_start: u64 },
    #[error("corrupt record in {file} at byte {position}: {why}")]
    Corrupt { file: PathBuf, position: u64, why: String },
    /// A topic whose files could not be opened: every request for it says why; the other
    /// topics of the data directory work.
    #[error("topic `{topic}` is damaged and cannot be used until repaired: {why}")]
    Damaged { topic: String, why: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("data directory {dir} is in use by another process; reach it through its `squall broker --listen ADDR` with --broker ADDR")]
    Locked { dir: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("broker {addr}: {message}")]
    Connection { addr: String, message: String },
    /// An error the server reported: its kind, and its message as the server displayed it.
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
}

impl BrokerError {
    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BrokerError::Io { context: context.into(), source }
    }

    /// What kind of error this is, whether it happened here or on a server.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BrokerError::UnknownTopic(_) => ErrorKind::UnknownTopic,
            BrokerError::TopicExists(_) => ErrorKind::TopicExists,
            BrokerError::NoSuchPartition { .. } => ErrorKind::NoSuchPartition,
            BrokerError::OffsetBeyondEnd { .. } => ErrorKind::OffsetBeyondEnd,
            BrokerError::OffsetRemoved { .. } => ErrorKind::OffsetRemoved,
            BrokerError::InvalidName { .. } | BrokerError::InvalidRequest(_) => ErrorKind::InvalidRequest,
            BrokerError::Remote { kind, .. } => *kind,
            _ => ErrorKind::Other,
        }
    }

    /// The error as it travels in a response frame.
    pub fn to_wire(&self) -> WireError {
        WireError { kind: self.kind(), message: self.to_string() }
    }
}

/// An error in a response frame: its kind (so a client can react) and its one-line message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    UnknownTopic,
    TopicExists,
    NoSuchPartition,
    OffsetBeyondEnd,
    OffsetRemoved,
    InvalidRequest,
    Other,
}

impl From<WireError> for BrokerError {
    fn from(e: WireError) -> Self {
        BrokerError::Remote { kind: e.kind, message: e.message }
    }
}
