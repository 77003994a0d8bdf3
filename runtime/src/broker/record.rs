//! Records, and their encoding on disk and in fetch responses.
//!
//! Contract: TODO(storage) — frame layout, checksum, decoding that never returns a torn or
//! corrupt record as data.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A record to append: the log gives it its offset (and its timestamp, if none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    /// Milliseconds since the Unix epoch; None: the time of the append.
    pub timestamp: Option<i64>,
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
}
