//! The embedded broker: a durable, partitioned, append-only log in the spirit of Kafka, and
//! the spout and sink that read and write it.
//!
//! Data flows: [`log`] (the storage engine: topics of partitions of segment files, consumer
//! group offsets, fsync policy, retention, crash recovery) ← [`server`] (the same operations
//! over TCP, length-prefixed MessagePack [`frame`]s of [`protocol`] messages) ← [`client`]
//! ([`Broker`]: one handle over either the in-process log or a server). [`state`] keeps
//! stateful bolts' checkpoints in a topic (the `log` state backend).
//!
//! Contract, for every way in: offsets of a partition are dense and start at 0; a record is
//! returned only whole and with a matching checksum; an append is durable once the topic's
//! [`FsyncPolicy`] says so, and nothing durable is lost after a crash; a group's committed
//! offset of a partition is the next offset it will read.

pub mod client;
pub mod error;
pub mod log;
pub mod partitioner;
pub mod protocol;
pub mod record;
pub mod remote;
pub mod server;
pub mod settings;
pub mod sink;
pub mod spout;
pub mod state;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::{Broker, Pending};
pub use error::BrokerError;
pub use record::{NewRecord, Record};
pub use state::LogBackend;

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// When appended records are forced to disk, and so when they count as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Every append is fsynced before it returns.
    Always,
    /// Appends are fsynced together at most this many milliseconds after they are written.
    Interval { ms: u64 },
    /// Never fsync: a record is durable once written (it survives a process crash, not a
    /// power loss).
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval { ms: DEFAULT_FSYNC_INTERVAL_MS }
    }
}

pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 10;
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// A topic's settings, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub partitions: u32,
    /// A partition's active segment is rolled once it holds this many bytes.
    pub segment_bytes: u64,
    /// Oldest segments are deleted while a partition holds more than this (None: no limit).
    pub retention_bytes: Option<u64>,
    /// Segments whose newest record is older than this are deleted (None: no limit).
    pub retention_secs: Option<u64>,
    pub fsync: FsyncPolicy,
}

impl TopicConfig {
    pub fn new(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retention_bytes: None,
            retention_secs: None,
            fsync: FsyncPolicy::default(),
        }
    }
}

/// One partition as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The oldest offset still held (retention moves it up).
    pub log_start: u64,
    /// The offset the next append gets.
    pub high_watermark: u64,
    /// Every offset below this is durable under the fsync policy.
    pub durable: u64,
    pub size_bytes: u64,
    pub segments: u32,
}

/// A consumer group's committed offsets of one topic (None: nothing committed for that
/// partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub group: String,
    pub offsets: Vec<Option<u64>>,
}

/// A topic as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionInfo>,
    pub groups: Vec<GroupInfo>,
}

/// Records read from one partition.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Consecutive records starting at the requested offset (empty at the end of the log).
    pub records: Vec<Record>,
    pub high_watermark: u64,
    pub log_start: u64,
}

static SECRET: OnceLock<squall_engine::auth::Secret> = OnceLock::new();

/// Sets the cluster secret this process proves to `squall broker` servers (and a server's
/// default). Only the first call counts, and only before the first connection.
pub fn set_secret(secret: &str) {
    let _ = SECRET.set(squall_engine::auth::Secret::new(secret));
}

/// The cluster secret of this process's broker connections: as set, else `$SQUALL_SECRET`
/// (what a supervisor gives its workers), else `[cluster] secret` of config/cluster.toml if
/// it exists, else the default `change-me`.
pub fn secret() -> squall_engine::auth::Secret {
    SECRET.get_or_init(|| squall_engine::auth::Secret::new(&settings::secret_from(None))).clone()
}

static TLS: OnceLock<Result<Option<squall_engine::tls::Tls>, String>> = OnceLock::new();

/// Sets the `[cluster] tls` of this process's connections to `squall broker` servers (`None`:
/// plain TCP). Only the first call counts, and only before the first connection.
pub fn set_tls(tls: Option<squall_engine::tls::Tls>) {
    let _ = TLS.set(Ok(tls));
}

/// The TLS of this process's broker connections: as set, else `SQUALL_TLS_*` (what a
/// supervisor gives its workers), else `[cluster] tls` of config/cluster.toml if it exists,
/// else none. A file that cannot be loaded is the one-line error of every connection.
pub fn tls() -> std::result::Result<Option<squall_engine::tls::Tls>, String> {
    TLS.get_or_init(|| settings::tls_from(None)).clone()
}

/// How long a fetch at the end of a partition waits for new records by default.
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(100);

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets the directory `broker = "embedded"` means in this process (`--data-dir`). Only the
/// first call counts.
pub fn set_data_dir(dir: PathBuf) {
    let _ = DATA_DIR.set(dir);
}

/// The embedded log's directory: `--data-dir`, else `$SQUALL_DATA_DIR`, else ./squall-data.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = DATA_DIR.get() {
        return dir.clone();
    }
    match std::env::var_os("SQUALL_DATA_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("squall-data"),
    }
}
