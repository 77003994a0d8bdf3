//! The storage engine: a durable, partitioned, append-only log in one directory.
//!
//! ```text
//! DIR/LOCK                                  held exclusively while a Log has DIR open
//! DIR/topics/NAME/meta.json                 the TopicConfig (replaced atomically)
//! DIR/topics/NAME/P/<base, 20 digits>.log   a segment: record frames from offset `base` on
//! DIR/topics/NAME/P/<base, 20 digits>.index its sparse offset index
//! DIR/topics/NAME/groups/GROUP.offsets      a consumer group's commits
//! ```
//!
//! Contract:
//! - One [`Log`] per directory: a second [`Log::open`] (from this or another process) fails
//!   with [`BrokerError::Locked`]; [`Log::shared`] hands every caller in the process the same
//!   log, opening it on first use.
//! - Topic and group names are 1–200 of `A-Za-z0-9._-`, not `.` or `..`; a topic has
//!   1..=1024 partitions. Unknown topics, partitions out of range and existing topics are
//!   reported as such; every I/O error names its file.
//! - Offsets of a partition grow from 0, are never handed out twice and stay below
//!   [`MAX_OFFSET`]; they are dense but for the gaps recovery leaves after cutting a damaged
//!   segment (see `partition.rs`), which reads skip. A read returns only whole, checksummed records
//!   below the high watermark (see `partition.rs` and `segment.rs`), at least one if there is one
//!   at the offset; nothing bad on disk ever panics or comes back as data.
//! - Durability follows the topic's [`FsyncPolicy`] for appends and group commits alike;
//!   [`Log::durable`] is the end of what is durable, [`Log::wait_durable`] waits for it without
//!   spinning from any tokio runtime. Once an fsync of a partition failed, its durable end never
//!   moves again while the log is open: `durable`, `wait_durable` and appends to it return that
//!   failure (reopening the log recovers the partition from what is on disk). A background thread (`flusher.rs`) does the `Interval`
//!   fsyncs and periodic retention; it stops when the log is dropped, and dropping the log
//!   flushes everything (best effort).
//! - Opening recovers every partition after a crash: nothing written completely is lost, a
//!   torn or corrupt tail of an active segment is cut off, and the next offset is above
//!   every offset the cut records may have had and every group's committed offset (see
//!   `partition.rs`, `groups.rs`).
//! - Sealed segments are read through a process-wide cache of at most 256 open files
//!   ([`open_files::set_capacity`] changes it), so many small segments never run the process
//!   out of file descriptors.
//! - A topic whose files cannot be opened (a corrupt `meta.json`, a segment file with an
//!   impossible name, a directory where a file should be…) is left out, logged: every request
//!   naming it fails with [`BrokerError::Damaged`] saying why, and creating it again is
//!   refused; every other topic of the directory works as ever.

mod flusher;
mod groups;
mod lock;
pub mod open_files;
mod partition;
mod segment;
mod util;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use self::flusher::Flusher;
use self::groups::Groups;
use self::lock::DirLock;
use self::partition::Partition;
use self::util::{fsync_dir, io_err, lock, write_atomic};
use super::{BrokerError, Fetched, FsyncPolicy, NewRecord, Result, TopicConfig, TopicInfo};

pub use super::record::MAX_FRAME_LEN;

/// Offsets stay below this: message ids pack a record's offset in 48 bits
/// (`squall_engine::partitioned::offsets::message_id`). An append that would give a record this offset or a higher one
/// is refused, and a segment file whose base offset is this or higher is corrupt.
pub const MAX_OFFSET: u64 = 1 << 48;
/// The most one append may carry (its frames, in bytes).
pub const MAX_APPEND_BYTES: usize = 1 << 30;
/// The most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// The largest `segment_bytes` (index positions are 32-bit).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// The longest fsync interval.
pub const MAX_FSYNC_INTERVAL_MS: u64 = 86_400_000;
const MAX_NAME_LEN: usize = 200;

/// The storage engine of one data directory.
pub struct Log {
    dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Topics whose files could not be opened, and why: requests for them fail with that.
    damaged: BTreeMap<String, String>,
    /// Serializes topic creation (lookups go on meanwhile).
    creating: Mutex<()>,
    flusher: Arc<Flusher>,
    flusher_thread: Mutex<Option<JoinHandle<()>>>,
    /// Declared last: released after every file is closed.
    _lock: DirLock,
}

struct Topic {
    config: Arc<TopicConfig>,
    partitions: Vec<Arc<Partition>>,
    groups: Groups,
}

/// Checks a topic or group name: 1–200 of `A-Za-z0-9._-`, not `.` or `..`.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidName { what, name: name.to_string() })
    }
}

fn validate_config(config: &TopicConfig) -> Result<()> {
    if !(1..=MAX_PARTITIONS).contains(&config.partitions) {
        return Err(BrokerError::InvalidRequest(format!(
            "a topic has 1 to {MAX_PARTITIONS} partitions, not {}",
            config.partitions
        )));
    }
    if !(1..=MAX_SEGMENT_BYTES).contains(&config.segment_bytes) {
        return Err(BrokerError::InvalidRequest(format!(
            "segment_bytes must be 1 to {MAX_SEGMENT_BYTES}, not {}",
            config.segment_bytes
        )));
    }
    if let FsyncPolicy::Interval { ms } = config.fsync {
        if ms > MAX_FSYNC_INTERVAL_MS {
            return Err(BrokerError::InvalidRequest(format!(
                "the fsync interval must be at most {MAX_FSYNC_INTERVAL_MS} ms, not {ms}"
            )));
        }
    }
    Ok(())
}

impl Topic {
    fn partition(&self, name: &str, partition: u32) -> Result<Arc<Partition>> {
        self.partitions.get(partition as usize).cloned().ok_or_else(|| BrokerError::NoSuchPartition {
            topic: name.to_string(),
            partition,
            partitions: self.config.partitions,
        })
    }

    /// Opens the topic in `dir` (whose meta.json exists), recovering its partitions.
    fn open(name: &str, dir: &Path) -> Result<Topic> {
        let meta = dir.join("meta.json");
        let bytes = std::fs::read(&meta).map_err(io_err("reading", &meta))?;
        let config: TopicConfig = serde_json::from_slice(&bytes).map_err(|e| BrokerError::Corrupt {
            file: meta.clone(),
            position: 0,
            why: format!("not a topic config: {e}"),
        })?;
        validate_config(&config).map_err(|e| BrokerError::Corrupt {
            file: meta.clone(),
            position: 0,
            why: e.to_string(),
        })?;
        let config = Arc::new(config);
        let topic: Arc<str> = name.into();
        let groups = Groups::open(dir.join("groups"), config.partitions, config.fsync)?;
        // Group and partition fsyncs are independent: a crash can keep a commit beyond the
        // records; no offset below it is handed out again.
        let floors = groups.floors();
        let partitions = (0..config.partitions)
            .map(|p| {
                let floor = floors.get(p as usize).copied().unwrap_or(0);
                Partition::open(topic.clone(), p, dir.join(p.to_string()), config.clone(), floor)
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        let ends: Vec<u64> = partitions.iter().map(|p| p.next_offset()).collect();
        groups.clamp_to(name, &ends)?;
        Ok(Topic { config, partitions, groups })
    }
}

static SHARED: OnceLock<Mutex<HashMap<PathBuf, Arc<Log>>>> = OnceLock::new();

impl Log {
    /// Opens (creating it if needed) the log in `dir`, exclusive to this process, recovering
    /// every partition.
    pub fn open(dir: &Path) -> Result<Arc<Log>> {
        std::fs::create_dir_all(dir).map_err(io_err("creating data directory", dir))?;
        let dir_lock = DirLock::acquire(dir)?;
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir).map_err(io_err("creating", &topics_dir))?;
        let mut topics = BTreeMap::new();
        let mut damaged = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir).map_err(io_err("listing", &topics_dir))? {
            let entry = entry.map_err(io_err("listing", &topics_dir))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if validate_name("topic", &name).is_err() {
                continue;
            }
            if !path.join("meta.json").exists() {
                tracing::warn!(dir = %path.display(), "skipping a topic directory without meta.json");
                continue;
            }
            // Damage stays with its topic: the others open and work.
            match Topic::open(&name, &path) {
                Ok(topic) => {
                    topics.insert(name.clone(), Arc::new(topic));
                }
                Err(e) => {
                    tracing::error!(topic = %name, "cannot open the topic, leaving it out: {e}");
                    damaged.insert(name, e.to_string());
                }
            }
        }
        let flusher = Arc::new(Flusher::default());
        let log = Arc::new(Log {
            dir: dir.to_path_buf(),
            topics: RwLock::new(topics),
            damaged,
            creating: Mutex::new(()),
            flusher: flusher.clone(),
            flusher_thread: Mutex::new(None),
            _lock: dir_lock,
        });
        let handle =
            flusher.spawn(Arc::downgrade(&log)).map_err(|e| BrokerError::io("starting the flusher", e))?;
        *lock(&log.flusher_thread) = Some(handle);
        Ok(log)
    }

    /// The process-wide log of `dir`: opened on first use, then shared by every caller. It stays
    /// open until the process exits (so its `Drop` flush does not run; `Interval` data still
    /// reaches the disk through the flusher).
    pub fn shared(dir: &Path) -> Result<Arc<Log>> {
        std::fs::create_dir_all(dir).map_err(io_err("creating data directory", dir))?;
        let key = dir.canonicalize().map_err(io_err("resolving", dir))?;
        let mut map = lock(SHARED.get_or_init(Default::default));
        if let Some(log) = map.get(&key) {
            return Ok(log.clone());
        }
        let log = Log::open(dir)?;
        map.insert(key, log.clone());
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(name).cloned().ok_or_else(|| match self.damaged.get(name) {
            Some(why) => BrokerError::Damaged { topic: name.to_string(), why: why.clone() },
            None => BrokerError::UnknownTopic(name.to_string()),
        })
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(topic, partition)
    }

    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        validate_name("topic", name)?;
        validate_config(&config)?;
        let _creating = lock(&self.creating);
        match self.topic(name) {
            Ok(_) => return Err(BrokerError::TopicExists(name.to_string())),
            Err(e @ BrokerError::Damaged { .. }) => return Err(e),
            Err(_) => {}
        }
        let topics_dir = self.dir.join("topics");
        let dir = topics_dir.join(name);
        for sub in (0..config.partitions).map(|p| p.to_string()).chain(["groups".to_string()]) {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| BrokerError::InvalidRequest(format!("topic config: {e}")))?;
        // meta.json last: a topic directory without it is ignored on open.
        write_atomic(&dir.join("meta.json"), &json)?;
        fsync_dir(&topics_dir)?;
        let topic = Topic::open(name, &dir)?;
        self.topics.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), Arc::new(topic));
        Ok(())
    }

    /// The topics that could not be opened, with why, sorted by name.
    pub fn damaged(&self) -> Vec<(String, String)> {
        self.damaged.iter().map(|(t, why)| (t.clone(), why.clone())).collect()
    }

    /// Topic names, sorted (the damaged ones left out).
    pub fn topics(&self) -> Vec<String> {
        self.topics.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    pub fn describe(&self, topic: &str) -> Result<TopicInfo> {
        let t = self.topic(topic)?;
        Ok(TopicInfo {
            name: topic.to_string(),
            config: (*t.config).clone(),
            partitions: t.partitions.iter().map(|p| p.info()).collect(),
            groups: t.groups.list(),
        })
    }

    pub fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.config.partitions)
    }

    /// Appends `records` in order; returns the offset of the first. Under `Always`, they are
    /// fsynced before this returns.
    pub fn append(&self, topic: &str, partition: u32, records: &[NewRecord]) -> Result<u64> {
        self.partition(topic, partition)?.append(records, &self.flusher)
    }

    /// The topic's fsync policy.
    pub fn fsync_policy(&self, topic: &str) -> Result<FsyncPolicy> {
        Ok(self.topic(topic)?.config.fsync)
    }

    /// Every offset below the returned one is durable under the topic's fsync policy. Once an
    /// fsync of the partition failed, that failure instead (for as long as the log is open).
    pub fn durable(&self, topic: &str, partition: u32) -> Result<u64> {
        self.partition(topic, partition)?.durable()
    }

    /// The offset the next append to the partition gets.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.partition(topic, partition)?.high_watermark())
    }

    /// Waits until every offset below `end` is durable (`end` beyond the high watermark is
    /// [`BrokerError::OffsetBeyondEnd`]; a failed fsync of the partition is that failure).
    pub async fn wait_durable(&self, topic: &str, partition: u32, end: u64) -> Result<()> {
        self.partition(topic, partition)?.wait_durable(end).await
    }

    /// Whole, checksummed records from `offset` on: about `max_bytes` of them, and at least
    /// one if there is one.
    pub fn read(&self, topic: &str, partition: u32, offset: u64, max_bytes: usize) -> Result<Fetched> {
        self.partition(topic, partition)?.read(offset, max_bytes)
    }

    /// `read`, but at the end of the partition first waits up to `wait` for an append (the
    /// tokio runtime must have its timer enabled).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Fetched> {
        self.partition(topic, partition)?.fetch(offset, max_bytes, wait).await
    }

    /// Stores `group`'s offset of a partition (the next offset it will read), durably under the
    /// topic's fsync policy.
    pub fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        validate_name("group", group)?;
        let t = self.topic(topic)?;
        let p = t.partition(topic, partition)?;
        if offset > p.next_offset() {
            return Err(p.beyond_end(offset, p.high_watermark()));
        }
        t.groups.commit(group, partition, offset, &self.flusher)
    }

    /// `group`'s committed offsets, one per partition.
    pub fn committed(&self, group: &str, topic: &str) -> Result<Vec<Option<u64>>> {
        validate_name("group", group)?;
        Ok(self.topic(topic)?.groups.committed(group))
    }

    /// Fsyncs everything written so far.
    pub fn flush(&self) -> Result<()> {
        let topics: Vec<Arc<Topic>> =
            self.topics.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut first_err = None;
        for t in &topics {
            for p in &t.partitions {
                if let Err(e) = p.sync() {
                    first_err.get_or_insert(e);
                }
            }
            if let Err(e) = t.groups.sync() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Applies retention to every partition now (the flusher also does it every few seconds).
    pub fn apply_retention(&self, now_ms: i64) {
        let topics: Vec<Arc<Topic>> =
            self.topics.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for t in topics {
            if t.config.retention_bytes.is_none() && t.config.retention_secs.is_none() {
                continue;
            }
            for p in &t.partitions {
                p.apply_retention(now_ms);
            }
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.flusher.shutdown();
        if let Some(handle) = lock(&self.flusher_thread).take() {
            // The flusher itself may be dropping the last reference.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        if let Err(e) = self.flush() {
            tracing::warn!(dir = %self.dir.display(), "flushing the log on close failed: {e}");
        }
    }
}
