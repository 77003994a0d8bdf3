//! Tests of the storage engine: behaviour through the public [`Log`] API, plus direct damage to
//! its files to pin crash recovery and corruption handling.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::util::now_ms;
use super::Log;
use crate::record::{frame_len, FRAME_HEADER_LEN};
use crate::{BrokerError, FsyncPolicy, NewRecord, Record, TopicConfig};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("squall-log-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rec(key: Option<&str>, value: &str, timestamp: Option<i64>) -> NewRecord {
    NewRecord {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
        timestamp,
    }
}

fn value(i: u64) -> String {
    format!("value-{i:06}")
}

fn config(partitions: u32, fsync: FsyncPolicy) -> TopicConfig {
    TopicConfig { fsync, ..TopicConfig::new(partitions) }
}

fn small_segments(segment_bytes: u64) -> TopicConfig {
    TopicConfig { segment_bytes, ..config(1, FsyncPolicy::Never) }
}

/// Every record of a partition from `from` on, reading in chunks of `max_bytes`.
fn read_all(log: &Log, topic: &str, partition: u32, from: u64, max_bytes: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let fetched = log.read(topic, partition, offset, max_bytes).unwrap();
        let Some(last) = fetched.records.last() else { break };
        offset = last.offset + 1;
        out.extend(fetched.records);
    }
    out
}

fn append_values(log: &Log, topic: &str, partition: u32, range: std::ops::Range<u64>) {
    for i in range {
        log.append(topic, partition, &[rec(Some("k"), &value(i), Some(1000 + i as i64))]).unwrap();
    }
}

fn segment_path(dir: &Path, topic: &str, partition: u32, base: u64, ext: &str) -> PathBuf {
    dir.join("topics").join(topic).join(partition.to_string()).join(format!("{base:020}.{ext}"))
}

fn segment_files(dir: &Path, topic: &str, partition: u32) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir.join("topics").join(topic).join(partition.to_string()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
    names.sort();
    names
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn flip_byte(path: &Path, position: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, position).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], position).unwrap();
}

mod durability;
mod groups_and_retention;
mod reads;
mod recovery;
