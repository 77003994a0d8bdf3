//! The `log` state backend: stateful bolts' checkpoints kept in topics of the embedded log
//! (this process's data directory, or a `squall broker` server), so state survives a worker
//! moving to another machine with no other server.
//!
//! Layout: per topology, a delta topic `squall-state.<topology>` and a snapshot topic
//! `squall-state.<topology>.snapshots`, each of one partition (so the log's order is the
//! order of commits), created on first write. Records of the delta topic:
//!
//! ```text
//! key "prepare/<component>"  value {id, task, changes: [[key, value or nil], ...]}
//! key "commit"               value {id, participants: [[component, task], ...], meta}
//! ```
//!
//! A snapshot (see [`replay`]) stands for the delta topic's records below an offset: every
//! component's committed state (`entries/<component>` records), the changes prepared and not
//! yet committed there (`pending/<component>`), and a last `done` record {covers, last
//! commit}; every record of one snapshot carries its random `snap` id. The consumer group
//! `squall-snapshot` of the snapshot topic holds the offset of the latest complete snapshot.
//! (MessagePack with field names; keys and values of changes are the encoded bytes the
//! runtime hands over.) A task's changes, and a snapshot's entries, are split over several
//! records of at most [`CHUNK_BYTES`]. Only changes go to the delta topic, never the state.
//!
//! Contract:
//! - [`LogBackend::prepare`] and [`LogBackend::commit`] return once their records are durable
//!   under the topic's fsync policy (appends to the one partition keep their order).
//! - A commit is one record, so after a crash it is wholly there or not at all; it makes
//!   visible the changes that its participants prepared under its id earlier in the log.
//! - Reads stop at the durable end of a topic (what a crash cannot take back).
//! - [`LogBackend::load`] starts from the latest snapshot, if any, then reads the delta topic
//!   from where the snapshot ends: the changes of every committed checkpoint of the component
//!   in commit order (a later commit wins, a `nil` value deletes); changes prepared under an
//!   id never committed, or by a task the commit does not name, are never applied.
//! - After a commit, once the delta topic has grown since the latest snapshot by more than
//!   that snapshot's size and at least [`SNAPSHOT_BYTES`], the committing backend writes a new
//!   snapshot before `commit` returns, so a load reads the snapshot and at most the larger of
//!   its size and [`SNAPSHOT_BYTES`] of changes, not the whole history. A failed snapshot is
//!   logged and changes nothing (the commit stands). Old records stay on disk: the log has no
//!   compaction.
//! - [`LogBackend::last_committed`] is the last commit; the backend remembers how far it has
//!   read, so each call reads only what was appended since.
//! - A topology that never checkpointed has no topics: `load` is empty, `last_committed`
//!   None, and reading creates none.
//! - Every record comes back checked: one that does not decode is an error naming the topic
//!   and offset, never a panic and never data.

pub mod replay;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use squall_api::{async_trait, BackendConfig, BoxError, Change, Committed, Participant, StateBackend};
use tokio::sync::OnceCell;

use self::replay::{
    change_size, chunks, snap_of, Bin, CommitOut, Done, EntriesOut, PrepareOut, Replay, COMMIT_KEY, DONE_KEY,
    ENTRIES_PREFIX, PENDING_PREFIX, PREPARE_PREFIX,
};
use super::error::ErrorKind;
use super::record::{frame_len, MAX_FRAME_LEN};
use super::{Broker, BrokerError, NewRecord, Pending, TopicConfig};

/// The most bytes of changes one record carries (far below the log's record limit and a
/// server's frame limit).
pub const CHUNK_BYTES: usize = 4 << 20;
/// The least growth of the delta topic since the latest snapshot that makes a new one.
pub const SNAPSHOT_BYTES: u64 = 64 << 20;
/// What one fetch asks for while reading a topic.
const FETCH_BYTES: usize = 4 << 20;
/// The topic of a topology's state: this prefix, then its name.
pub const TOPIC_PREFIX: &str = "squall-state.";
/// The snapshot topic: the delta topic's name, then this.
pub const SNAPSHOT_SUFFIX: &str = ".snapshots";
/// The consumer group of the snapshot topic whose offset is the latest complete snapshot.
pub const SNAPSHOT_GROUP: &str = "squall-snapshot";

/// The `[settings] state` keys the log backend takes, besides `backend` and
/// `checkpoint_interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStateConfig {
    /// `broker`: `"embedded"` (default) or a `squall broker` server's `host:port`.
    pub broker: String,
}

impl LogStateConfig {
    /// Reads `broker` from the `[settings] state` table; refuses `url` (the redis backend's).
    pub fn from_table(table: &toml::Table) -> Result<LogStateConfig, BoxError> {
        if table.contains_key("url") {
            return Err("the log state backend takes `broker` (\"embedded\" or host:port), not `url`".into());
        }
        let broker = match table.get("broker") {
            None => "embedded".to_string(),
            Some(toml::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(other) => {
                return Err(format!(
                    "`broker` of the log state backend must be \"embedded\" or host:port, found {other}"
                )
                .into())
            }
        };
        Ok(LogStateConfig { broker })
    }
}

/// The `log` backend's factory, for [`squall_api::Registry::state_backend`].
pub fn factory(config: &BackendConfig<'_>) -> Result<Arc<dyn StateBackend>, BoxError> {
    let settings = LogStateConfig::from_table(config.table)?;
    Ok(Arc::new(LogBackend::open(&settings.broker, config.topology)?))
}

/// The delta topic that keeps `topology`'s state (its snapshot topic's name must be valid
/// too).
pub fn topic_of(topology: &str) -> Result<String, BrokerError> {
    let topic = format!("{TOPIC_PREFIX}{topology}");
    super::log::validate_name("topic", &format!("{topic}{SNAPSHOT_SUFFIX}"))?;
    Ok(topic)
}

/// Checkpoints of one topology in topics of the log. See the module docs.
pub struct LogBackend {
    /// `"embedded"` or a server's address: connected on first use (factories are not async).
    spec: String,
    broker: OnceCell<Broker>,
    topic: String,
    snapshots: String,
    /// Whether each topic is known to exist (set once created or seen).
    created: OnceCell<()>,
    snapshots_created: OnceCell<()>,
    /// How far `last_committed` has read, and what it found.
    scanned: tokio::sync::Mutex<Option<Scan>>,
    /// The latest snapshot's figures once known: one snapshot is written at a time.
    snapshot: tokio::sync::Mutex<Option<Figures>>,
    snapshot_bytes: u64,
    /// `describe`'s text once connected.
    target: Mutex<Option<String>>,
}

struct Scan {
    next: u64,
    last: Option<Committed>,
}

/// The latest snapshot: the delta topic's size it stands for, and its own.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    delta_bytes: u64,
    bytes: u64,
}

impl LogBackend {
    /// The backend of `topology` on the broker `spec` names (`"embedded"`: this process's log
    /// in [`super::data_dir`]); connects on first use.
    pub fn open(spec: &str, topology: &str) -> Result<LogBackend, BoxError> {
        let topic = topic_of(topology)?;
        Ok(LogBackend {
            spec: spec.to_string(),
            broker: OnceCell::new(),
            snapshots: format!("{topic}{SNAPSHOT_SUFFIX}"),
            topic,
            created: OnceCell::new(),
            snapshots_created: OnceCell::new(),
            scanned: Default::default(),
            snapshot: Default::default(),
            snapshot_bytes: SNAPSHOT_BYTES,
            target: Mutex::new(None),
        })
    }

    /// The backend of `topology` over a handle already open.
    pub fn with_broker(broker: Broker, topology: &str) -> Result<LogBackend, BoxError> {
        let backend = LogBackend::open("", topology)?;
        *backend.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker.describe_target());
        let _ = backend.broker.set(broker);
        Ok(backend)
    }

    /// Snapshots once the delta topic grew by `bytes` (and by the latest snapshot's size).
    pub fn snapshot_every(mut self, bytes: u64) -> Self {
        self.snapshot_bytes = bytes;
        self
    }

    /// The delta topic this backend writes.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    async fn broker(&self) -> Result<&Broker, BrokerError> {
        self.broker
            .get_or_try_init(|| async {
                let broker = Broker::connect(&self.spec).await?;
                *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker.describe_target());
                Ok(broker)
            })
            .await
    }

    /// The broker, with `topic` created if it is not there yet.
    async fn writable<'a>(&'a self, topic: &str, created: &OnceCell<()>) -> Result<&'a Broker, BrokerError> {
        let broker = self.broker().await?;
        created
            .get_or_try_init(|| async {
                match broker.create_topic(topic, TopicConfig::new(1)).await {
                    Err(e) if e.kind() != ErrorKind::TopicExists => Err(e),
                    _ => Ok(()),
                }
            })
            .await?;
        Ok(broker)
    }

    /// Appends one record to the delta topic and waits until it is durable.
    async fn append(&self, key: Bytes, value: Vec<u8>) -> Result<(), BrokerError> {
        let broker = self.writable(&self.topic, &self.created).await?;
        let record = NewRecord { key: Some(key), value: value.into(), timestamp: None };
        broker.produce(&self.topic, 0, vec![record]).await?.wait().await?;
        Ok(())
    }

    /// The durable end and size of `topic`'s partition (0, 0 if it does not exist). Reads stop
    /// at the durable end: what is past it may be lost in a crash, and a snapshot must never
    /// stand for offsets that a crash could give to other records.
    async fn extent(&self, topic: &str) -> Result<(u64, u64), BoxError> {
        match self.broker().await?.describe(topic).await {
            Ok(info) => {
                let end = |p: &super::PartitionInfo| p.durable.min(p.high_watermark);
                Ok(info.partitions.first().map_or((0, 0), |p| (end(p), p.size_bytes)))
            }
            Err(e) if e.kind() == ErrorKind::UnknownTopic => Ok((0, 0)),
            Err(e) => Err(e.into()),
        }
    }

    /// Calls `each` with every record of `topic` from `from` up to its durable end when the
    /// read began, until `each` says stop (true); returns that end.
    async fn read(
        &self,
        topic: &str,
        from: u64,
        mut each: impl FnMut(u64, Option<&[u8]>, &[u8]) -> Result<bool, String>,
    ) -> Result<u64, BoxError> {
        let broker = self.broker().await?;
        let (end, _) = self.extent(topic).await?;
        let mut offset = from;
        while offset < end {
            let fetched = broker.fetch(topic, 0, offset, FETCH_BYTES, Duration::ZERO).await?;
            if fetched.records.is_empty() {
                return Err(
                    format!("{}: `{topic}` ends at offset {offset}, before {end}", self.describe()).into()
                );
            }
            for r in &fetched.records {
                if r.offset >= end {
                    break;
                }
                let stop = each(r.offset, r.key.as_deref(), &r.value)
                    .map_err(|why| format!("{}: `{topic}` offset {}: {why}", self.describe(), r.offset))?;
                if stop {
                    return Ok(end);
                }
                offset = r.offset + 1;
            }
        }
        Ok(end)
    }

    /// Feeds the latest complete snapshot to `replay`; returns its `done` record, None when
    /// there is none.
    async fn latest_snapshot(&self, replay: &mut Replay) -> Result<Option<Done>, BoxError> {
        let start = match self.broker().await?.committed(SNAPSHOT_GROUP, &self.snapshots).await {
            Ok(offsets) => offsets.first().copied().flatten(),
            Err(e) if e.kind() == ErrorKind::UnknownTopic => None,
            Err(e) => return Err(e.into()),
        };
        let Some(start) = start else { return Ok(None) };
        let (mut snap, mut done) = (None, None);
        self.read(&self.snapshots, start, |_, key, value| {
            let snap = *snap.get_or_insert_with(|| snap_of(key, value));
            let Some(snap) = snap else { return Err("not the start of a snapshot".into()) };
            done = replay.snapshot(snap, key, value)?;
            Ok(done.is_some())
        })
        .await?;
        match done {
            Some(done) => Ok(Some(done)),
            None => Err(format!("{}: the snapshot at offset {start} has no end", self.describe()).into()),
        }
    }

    /// Writes a snapshot of the delta topic as it is now (it is written after commits by
    /// itself; this is for tools and tests).
    pub async fn write_snapshot(&self) -> Result<SnapshotWritten, BoxError> {
        let mut replay = Replay::all();
        let covers = self.latest_snapshot(&mut replay).await?.map_or(0, |d| d.covers);
        let covers =
            self.read(&self.topic, covers, |_, key, value| replay.record(key, value).map(|()| false)).await?;
        let (_, delta_bytes) = self.extent(&self.topic).await?;
        let snap = fastrand::u64(1..);
        let broker = self.writable(&self.snapshots, &self.snapshots_created).await?;
        let put = |key: Vec<u8>, value: Vec<u8>| NewRecord {
            key: Some(key.into()),
            value: value.into(),
            timestamp: None,
        };
        let mut records = Vec::new();
        for (component, part) in &replay.parts {
            let entries: Vec<(&Bytes, &Bytes)> = part.state.iter().collect();
            for chunk in chunks(&entries, CHUNK_BYTES, |(k, v)| k.len() + v.len() + 16) {
                if chunk.is_empty() {
                    continue;
                }
                let out = EntriesOut { snap, entries: chunk.iter().map(|(k, v)| (Bin(k), Bin(v))).collect() };
                records.push(put(key_of(ENTRIES_PREFIX, component), rmp_serde::to_vec_named(&out)?));
            }
            for (&id, prepared) in &part.pending {
                for (task, changes) in prepared {
                    let size =
                        |(k, v): &(Bytes, Option<Bytes>)| k.len() + v.as_ref().map_or(0, Bytes::len) + 16;
                    for chunk in chunks(changes, CHUNK_BYTES, size) {
                        let changes = chunk.iter().map(|(k, v)| (Bin(k), v.as_deref().map(Bin))).collect();
                        let out = PrepareOut { snap, id, task: *task, changes };
                        records.push(put(key_of(PENDING_PREFIX, component), rmp_serde::to_vec_named(&out)?));
                    }
                }
            }
        }
        let last = replay.last().map(|c| (c.id, Bytes::from(c.meta.clone())));
        let bytes = records.iter().map(|r| r.value.len() as u64).sum();
        let done = Done { snap, covers, delta_bytes, bytes, last };
        records.push(put(DONE_KEY.to_vec(), rmp_serde::to_vec_named(&done)?));
        // One record per append: each stays far below a server's frame limit.
        let mut pending: Vec<Pending> = Vec::new();
        for record in records {
            pending.push(broker.produce(&self.snapshots, 0, vec![record]).await?);
        }
        let mut start = None;
        for p in pending {
            let offset = p.wait().await?;
            start.get_or_insert(offset);
        }
        if let Some(start) = start {
            broker.commit(SNAPSHOT_GROUP, &self.snapshots, 0, start).await?;
        }
        Ok(SnapshotWritten { covers, delta_bytes, bytes: done.bytes })
    }

    /// Writes a snapshot if the delta topic grew enough since the latest (see the module
    /// docs); one at a time.
    async fn maybe_snapshot(&self) -> Result<(), BoxError> {
        let Ok(mut figures) = self.snapshot.try_lock() else { return Ok(()) };
        let latest = match *figures {
            Some(f) => f,
            None => {
                let mut replay = Replay::last_only();
                let done = self.latest_snapshot(&mut replay).await?;
                done.map_or_else(Figures::default, |d| Figures { delta_bytes: d.delta_bytes, bytes: d.bytes })
            }
        };
        *figures = Some(latest);
        let (_, size) = self.extent(&self.topic).await?;
        if size.saturating_sub(latest.delta_bytes) >= self.snapshot_bytes.max(latest.bytes) {
            let written = self.write_snapshot().await?;
            *figures = Some(Figures { delta_bytes: written.delta_bytes, bytes: written.bytes });
        }
        Ok(())
    }
}

/// What [`LogBackend::write_snapshot`] wrote: the delta topic's offsets it stands for (those
/// below `covers`), that topic's size then, and the snapshot's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotWritten {
    pub covers: u64,
    pub delta_bytes: u64,
    pub bytes: u64,
}

fn key_of(prefix: &[u8], component: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(component.as_bytes());
    key
}

#[async_trait]
impl StateBackend for LogBackend {
    async fn prepare(&self, component: &str, task: u32, id: u64, changes: &[Change]) -> Result<(), BoxError> {
        let key = Bytes::from(key_of(PREPARE_PREFIX, component));
        for chunk in chunks(changes, CHUNK_BYTES, change_size) {
            let record = PrepareOut {
                snap: 0,
                id,
                task,
                changes: chunk.iter().map(|c| (Bin(&c.key), c.value.as_deref().map(Bin))).collect(),
            };
            let value = rmp_serde::to_vec_named(&record)?;
            if frame_len(Some(&key), &value) > MAX_FRAME_LEN {
                return Err(format!(
                    "a change of component \"{component}\" task {task} takes {} bytes, more than a \
                     record of the log holds ({MAX_FRAME_LEN})",
                    value.len()
                )
                .into());
            }
            self.append(key.clone(), value).await?;
        }
        Ok(())
    }

    async fn commit(&self, id: u64, participants: &[Participant], meta: &[u8]) -> Result<(), BoxError> {
        let record = CommitOut {
            id,
            participants: participants.iter().map(|p| (p.component.as_str(), p.task)).collect(),
            meta: Bin(meta),
        };
        let value = rmp_serde::to_vec_named(&record)?;
        if frame_len(Some(COMMIT_KEY), &value) > MAX_FRAME_LEN {
            return Err(format!(
                "checkpoint {id}'s commit takes {} bytes, more than a record holds",
                value.len()
            )
            .into());
        }
        self.append(Bytes::from_static(COMMIT_KEY), value).await?;
        if let Err(e) = self.maybe_snapshot().await {
            tracing::warn!(topic = %self.topic, "state snapshot failed (the commit stands): {e}");
        }
        Ok(())
    }

    async fn last_committed(&self) -> Result<Option<Committed>, BoxError> {
        let mut scanned = self.scanned.lock().await;
        let scan = match scanned.take() {
            Some(scan) => scan,
            None => {
                let mut replay = Replay::last_only();
                let done = self.latest_snapshot(&mut replay).await?;
                Scan { next: done.map_or(0, |d| d.covers), last: replay.last().cloned() }
            }
        };
        let mut last = scan.last.clone();
        let end = self
            .read(&self.topic, scan.next, |_, key, value| {
                let mut replay = Replay::last_only();
                if key == Some(COMMIT_KEY) {
                    replay.record(key, value)?;
                    last = replay.last().cloned();
                }
                Ok(false)
            })
            .await;
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                *scanned = Some(scan);
                return Err(e);
            }
        };
        *scanned = Some(Scan { next: end.max(scan.next), last: last.clone() });
        Ok(last)
    }

    async fn load(&self, component: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BoxError> {
        let mut replay = Replay::of(component);
        let from = self.latest_snapshot(&mut replay).await?.map_or(0, |d| d.covers);
        self.read(&self.topic, from, |_, key, value| replay.record(key, value).map(|()| false)).await?;
        Ok(replay.finish())
    }

    fn describe(&self) -> String {
        let target = self.target.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let target = target.unwrap_or_else(|| match self.spec.as_str() {
            "embedded" => format!("the embedded log in {}", super::data_dir().display()),
            addr => format!("the broker at {addr}"),
        });
        format!("topic {} of {target}", self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use squall_api::state::{decode, encode};

    #[test]
    fn config_takes_broker_and_refuses_url() {
        let table: toml::Table = toml::from_str("backend = \"log\"").unwrap();
        assert_eq!(LogStateConfig::from_table(&table).unwrap().broker, "embedded");
        let table: toml::Table = toml::from_str("broker = \"127.0.0.1:6650\"").unwrap();
        assert_eq!(LogStateConfig::from_table(&table).unwrap().broker, "127.0.0.1:6650");
        let table: toml::Table = toml::from_str("url = \"redis://x\"").unwrap();
        assert!(LogStateConfig::from_table(&table).unwrap_err().to_string().contains("not `url`"));
        assert!(topic_of(&"x".repeat(190)).is_err(), "the snapshot topic's name is too long");
    }

    fn set(key: &str, value: u64) -> Change {
        Change { key: encode(key).unwrap(), value: Some(encode(&value).unwrap()) }
    }

    fn task(component: &str, task: u32) -> Participant {
        Participant { component: component.into(), task }
    }

    async fn counts(backend: &LogBackend, component: &str) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = backend
            .load(component)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, v)| (decode(&k).unwrap(), decode(&v).unwrap()))
            .collect();
        out.sort();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_bound_what_a_load_reads_and_keep_prepares_committed_after_them() {
        let dir = std::env::temp_dir().join(format!(
            "squall-state-snap-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let open = || {
            let backend = LogBackend::with_broker(Broker::Embedded(Log::open(&dir).unwrap()), "wc").unwrap();
            backend.snapshot_every(1)
        };
        let backend = open();
        let mut expected = std::collections::BTreeMap::new();
        for id in 1..=20u64 {
            // Pipelined: the next checkpoint's changes are prepared before this one commits,
            // so every snapshot holds a pending prepare that commits after it.
            let key = format!("k{}", id % 7);
            backend.prepare("count", 0, id + 1, &[set(&key, id)]).await.unwrap();
            backend.prepare("other", 0, id + 1, &[set("o", id)]).await.unwrap();
            backend.commit(id, &[task("count", 0), task("other", 0)], &id.to_le_bytes()).await.unwrap();
            if id > 1 {
                let key = format!("k{}", (id - 1) % 7);
                expected.insert(key, id - 1);
            }
            assert_eq!(counts(&backend, "count").await, expected.clone().into_iter().collect::<Vec<_>>());
        }
        let covers = {
            let mut replay = Replay::last_only();
            backend.latest_snapshot(&mut replay).await.unwrap().expect("snapshots were written").covers
        };
        let (end, _) = backend.extent(backend.topic()).await.unwrap();
        assert!(
            covers > 0 && end - covers <= 9,
            "the latest snapshot covers the log but its tail: {covers} of {end}"
        );
        let last = backend.last_committed().await.unwrap().unwrap();
        assert_eq!((last.id, last.meta), (20, 20u64.to_le_bytes().to_vec()));
        drop(backend);

        let again = open();
        let last = again.last_committed().await.unwrap().unwrap();
        assert_eq!(last.id, 20, "from the snapshot, then the tail");
        assert_eq!(counts(&again, "count").await, expected.clone().into_iter().collect::<Vec<_>>());
        assert_eq!(counts(&again, "other").await, [("o".to_string(), 19)]);
        again.commit(21, &[task("count", 0)], b"").await.unwrap();
        expected.insert("k6".into(), 20);
        assert_eq!(counts(&again, "count").await, expected.into_iter().collect::<Vec<_>>());
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
