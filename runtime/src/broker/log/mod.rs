//! STUB: the storage engine's API; the implementation replaces this file (module may become a
//! directory `log/`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Fetched, NewRecord, Result, TopicConfig, TopicInfo};

pub struct Log {}

#[allow(unused_variables)]
impl Log {
    /// Opens (creating it if needed) the log in `dir`, exclusive to this process, recovering
    /// every partition.
    pub fn open(dir: &Path) -> Result<Arc<Log>> {
        unimplemented!()
    }
    /// The process-wide log of `dir`: opened on first use, then shared by every caller.
    pub fn shared(dir: &Path) -> Result<Arc<Log>> {
        unimplemented!()
    }
    pub fn dir(&self) -> &Path {
        unimplemented!()
    }
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        unimplemented!()
    }
    /// Topic names, sorted.
    pub fn topics(&self) -> Vec<String> {
        unimplemented!()
    }
    pub fn describe(&self, topic: &str) -> Result<TopicInfo> {
        unimplemented!()
    }
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        unimplemented!()
    }
    /// Appends `records` in order; returns the offset of the first. Under `Always`, they are
    /// fsynced before this returns.
    pub fn append(&self, topic: &str, partition: u32, records: &[NewRecord]) -> Result<u64> {
        unimplemented!()
    }
    /// Every offset below the returned one is durable under the topic's fsync policy.
    pub fn durable(&self, topic: &str, partition: u32) -> Result<u64> {
        unimplemented!()
    }
    /// Waits until every offset below `end` is durable.
    pub async fn wait_durable(&self, topic: &str, partition: u32, end: u64) -> Result<()> {
        unimplemented!()
    }
    /// Whole, checksummed records from `offset` on: about `max_bytes` of them, and at least
    /// one if there is one.
    pub fn read(&self, topic: &str, partition: u32, offset: u64, max_bytes: usize) -> Result<Fetched> {
        unimplemented!()
    }
    /// `read`, but at the end of the partition first waits up to `wait` for an append.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Fetched> {
        unimplemented!()
    }
    /// Stores `group`'s offset of a partition (the next offset it will read), durably under the
    /// topic's fsync policy.
    pub fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        unimplemented!()
    }
    /// `group`'s committed offsets, one per partition.
    pub fn committed(&self, group: &str, topic: &str) -> Result<Vec<Option<u64>>> {
        unimplemented!()
    }
    /// Fsyncs everything written so far.
    pub fn flush(&self) -> Result<()> {
        unimplemented!()
    }
}
