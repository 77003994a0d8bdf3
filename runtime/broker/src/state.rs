//! The `log` state backend: stateful bolts' checkpoints kept in a topic of the embedded log
//! (this process's data directory, or a `squall broker` server), so state survives a worker
//! moving to another machine with no other server.
//!
//! Layout: one topic per topology, `squall-state.<topology>`, with one partition (so the log's
//! order is the order of commits), created on the first prepare. Its records:
//!
//! ```text
//! key "prepare/<component>"  value {id, task, changes: [[key, value or nil], ...]}
//! key "commit"               value {id, participants: [[component, task], ...], meta}
//! ```
//!
//! (MessagePack with field names; keys and values of changes are the encoded bytes the
//! runtime hands over.) A task's changes for one checkpoint are split over several prepare
//! records when they would pass [`CHUNK_BYTES`]: each record is a self-contained list of
//! changes, applied in log order. Only changes are written, never the whole state.
//!
//! Contract:
//! - [`LogBackend::prepare`] and [`LogBackend::commit`] return once their records are durable
//!   under the topic's fsync policy (appends to the one partition keep their order).
//! - A commit is one record, so after a crash it is wholly there or not at all; it makes
//!   visible the changes that its participants prepared under its id earlier in the log.
//! - [`LogBackend::load`] reads the topic from the start: the changes of every committed
//!   checkpoint of the component, applied in commit order (a later commit wins, a `nil` value
//!   deletes); changes prepared under an id never committed, or by a task the commit does not
//!   name, are never applied. Reading costs time in proportion to the topic's size.
//! - [`LogBackend::last_committed`] is the last commit record; the backend remembers how far
//!   it has read, so each call reads only what was appended since.
//! - A topology that never checkpointed has no topic: `load` is empty, `last_committed` None,
//!   and reading creates nothing.
//! - Every record comes back checked: a record that does not decode is an error naming the
//!   topic and offset, never a panic and never data.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use squall_api::{async_trait, BackendConfig, BoxError, Change, Committed, Participant, StateBackend};
use tokio::sync::OnceCell;

use super::record::{frame_len, MAX_FRAME_LEN};
use super::{Broker, BrokerError, NewRecord, TopicConfig};

/// The most bytes of changes one prepare record carries (far below the log's record limit
/// and a server's frame limit).
pub const CHUNK_BYTES: usize = 4 << 20;
/// What one fetch asks for while reading the topic.
const FETCH_BYTES: usize = 4 << 20;
const COMMIT_KEY: &[u8] = b"commit";
const PREPARE_PREFIX: &[u8] = b"prepare/";
/// The topic of a topology's state: this prefix, then its name.
pub const TOPIC_PREFIX: &str = "squall-state.";

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

/// The topic that keeps `topology`'s state.
pub fn topic_of(topology: &str) -> Result<String, BrokerError> {
    let topic = format!("{TOPIC_PREFIX}{topology}");
    super::log::validate_name("topic", &topic)?;
    Ok(topic)
}

/// Checkpoints of one topology in a topic of the log. See the module docs.
pub struct LogBackend {
    /// `"embedded"` or a server's address: connected on first use (factories are not async).
    spec: String,
    broker: OnceCell<Broker>,
    topic: String,
    /// Whether the topic is known to exist (set once created or seen).
    created: OnceCell<()>,
    /// How far `last_committed` has read, and what it found.
    scanned: tokio::sync::Mutex<Scan>,
    /// `describe`'s text once connected.
    target: Mutex<Option<String>>,
}

#[derive(Default)]
struct Scan {
    next: u64,
    last: Option<Committed>,
}

#[derive(Serialize)]
struct PrepareOut<'a> {
    id: u64,
    task: u32,
    changes: Vec<(Bin<'a>, Option<Bin<'a>>)>,
}

/// Changes as a prepare record holds them: key, and value or None for a deletion.
type Changes = Vec<(Bytes, Option<Bytes>)>;

#[derive(Deserialize)]
struct PrepareIn {
    id: u64,
    task: u32,
    changes: Changes,
}

#[derive(Serialize)]
struct CommitOut<'a> {
    id: u64,
    participants: Vec<(&'a str, u32)>,
    meta: Bin<'a>,
}

#[derive(Deserialize)]
struct CommitIn {
    id: u64,
    participants: Vec<(String, u32)>,
    meta: Bytes,
}

/// Bytes that serialize as MessagePack `bin`, not as an array of numbers.
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Splits `changes` into runs whose keys and values add up to at most `limit` bytes each
/// (a change alone may pass it; [`LogBackend::prepare`] refuses one too big for a record).
fn chunks(changes: &[Change], limit: usize) -> Vec<&[Change]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, c) in changes.iter().enumerate() {
        let size = change_size(c);
        if i > start && bytes + size > limit {
            out.push(&changes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < changes.len() || out.is_empty() {
        out.push(&changes[start..]);
    }
    out
}

/// About the bytes a change takes in a prepare record.
fn change_size(c: &Change) -> usize {
    c.key.len() + c.value.as_ref().map_or(0, Vec::len) + 16
}

/// The committed state of one component, built by reading the log in order: a pure core.
#[derive(Default)]
pub struct Replay {
    component: String,
    /// By checkpoint id: (task, its changes) prepared by this component's tasks.
    pending: HashMap<u64, Vec<(u32, Changes)>>,
    state: HashMap<Bytes, Bytes>,
}

impl Replay {
    pub fn new(component: &str) -> Self {
        Replay { component: component.to_string(), ..Default::default() }
    }

    /// Takes one record of the topic (its key and value); `Err` says why it is not one.
    pub fn record(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), String> {
        match key {
            Some(k) if k == COMMIT_KEY => {
                let commit: CommitIn =
                    rmp_serde::from_slice(value).map_err(|e| format!("bad commit: {e}"))?;
                let mine: HashSet<u32> = commit
                    .participants
                    .iter()
                    .filter(|(c, _)| *c == self.component)
                    .map(|&(_, t)| t)
                    .collect();
                for (task, changes) in self.pending.remove(&commit.id).unwrap_or_default() {
                    if !mine.contains(&task) {
                        continue;
                    }
                    for (k, v) in changes {
                        match v {
                            Some(v) => self.state.insert(k, v),
                            None => self.state.remove(&k),
                        };
                    }
                }
                // As MemoryBackend: what older ids prepared was rolled back.
                self.pending.retain(|&other, _| other > commit.id);
                Ok(())
            }
            Some(k) if k.strip_prefix(PREPARE_PREFIX) == Some(self.component.as_bytes()) => {
                let p: PrepareIn = rmp_serde::from_slice(value).map_err(|e| format!("bad prepare: {e}"))?;
                self.pending.entry(p.id).or_default().push((p.task, p.changes));
                Ok(())
            }
            Some(k) if k.starts_with(PREPARE_PREFIX) => Ok(()),
            _ => Err("not a state record (unknown key)".to_string()),
        }
    }

    /// The committed state: every key with its value.
    pub fn finish(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.state.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }
}

/// The last commit of the records given: a pure core.
fn commit_of(key: Option<&[u8]>, value: &[u8]) -> Result<Option<Committed>, String> {
    if key != Some(COMMIT_KEY) {
        return Ok(None);
    }
    let commit: CommitIn = rmp_serde::from_slice(value).map_err(|e| format!("bad commit: {e}"))?;
    Ok(Some(Committed { id: commit.id, meta: commit.meta.to_vec() }))
}

impl LogBackend {
    /// The backend of `topology` on the broker `spec` names (`"embedded"`: this process's log
    /// in [`super::data_dir`]); connects on first use.
    pub fn open(spec: &str, topology: &str) -> Result<LogBackend, BoxError> {
        Ok(LogBackend {
            spec: spec.to_string(),
            broker: OnceCell::new(),
            topic: topic_of(topology)?,
            created: OnceCell::new(),
            scanned: Default::default(),
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

    /// The topic this backend writes.
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

    /// The broker, with the topic created if it is not there yet.
    async fn writable(&self) -> Result<&Broker, BrokerError> {
        let broker = self.broker().await?;
        self.created
            .get_or_try_init(|| async {
                match broker.create_topic(&self.topic, TopicConfig::new(1)).await {
                    Err(e) if e.kind() != super::error::ErrorKind::TopicExists => Err(e),
                    _ => Ok(()),
                }
            })
            .await?;
        Ok(broker)
    }

    /// Appends records and waits until they are durable.
    async fn append(&self, records: Vec<NewRecord>) -> Result<(), BrokerError> {
        let broker = self.writable().await?;
        broker.produce(&self.topic, 0, records).await?.wait().await?;
        Ok(())
    }

    /// Calls `each` with every record of the topic from `from` up to its end when the read
    /// began; returns that end. A topic that does not exist has no records (end 0).
    async fn read(
        &self,
        from: u64,
        mut each: impl FnMut(u64, Option<&[u8]>, &[u8]) -> Result<(), String>,
    ) -> Result<u64, BoxError> {
        let broker = self.broker().await?;
        let end = match broker.describe(&self.topic).await {
            Ok(info) => info.partitions.first().map_or(0, |p| p.high_watermark),
            Err(e) if e.kind() == super::error::ErrorKind::UnknownTopic => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut offset = from;
        while offset < end {
            let fetched = broker.fetch(&self.topic, 0, offset, FETCH_BYTES, Duration::ZERO).await?;
            if fetched.records.is_empty() {
                return Err(format!(
                    "{}: topic `{}` ends at offset {offset}, before {end} as it said",
                    self.describe(),
                    self.topic
                )
                .into());
            }
            for r in &fetched.records {
                if r.offset >= end {
                    break;
                }
                each(r.offset, r.key.as_deref(), &r.value).map_err(|why| {
                    format!("{}: topic `{}` offset {}: {why}", self.describe(), self.topic, r.offset)
                })?;
                offset = r.offset + 1;
            }
        }
        Ok(end)
    }
}

#[async_trait]
impl StateBackend for LogBackend {
    async fn prepare(&self, component: &str, task: u32, id: u64, changes: &[Change]) -> Result<(), BoxError> {
        let mut key = PREPARE_PREFIX.to_vec();
        key.extend_from_slice(component.as_bytes());
        let key = Bytes::from(key);
        for chunk in chunks(changes, CHUNK_BYTES) {
            let record = PrepareOut {
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
            // One record per append: each stays far below a server's frame limit.
            self.append(vec![NewRecord { key: Some(key.clone()), value: value.into(), timestamp: None }])
                .await?;
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
        self.append(vec![NewRecord {
            key: Some(Bytes::from_static(COMMIT_KEY)),
            value: value.into(),
            timestamp: None,
        }])
        .await?;
        Ok(())
    }

    async fn last_committed(&self) -> Result<Option<Committed>, BoxError> {
        let mut scan = self.scanned.lock().await;
        let mut last = scan.last.clone();
        let end = self
            .read(scan.next, |_, key, value| {
                if let Some(c) = commit_of(key, value)? {
                    last = Some(c);
                }
                Ok(())
            })
            .await?;
        scan.next = end.max(scan.next);
        scan.last = last.clone();
        Ok(last)
    }

    async fn load(&self, component: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BoxError> {
        let mut replay = Replay::new(component);
        self.read(0, |_, key, value| replay.record(key, value)).await?;
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

    fn change(key: &str, value: Option<&str>) -> Change {
        Change { key: key.as_bytes().to_vec(), value: value.map(|v| v.as_bytes().to_vec()) }
    }

    fn prepare(id: u64, task: u32, changes: &[Change]) -> Vec<u8> {
        let record = PrepareOut {
            id,
            task,
            changes: changes.iter().map(|c| (Bin(&c.key), c.value.as_deref().map(Bin))).collect(),
        };
        rmp_serde::to_vec_named(&record).unwrap()
    }

    fn commit(id: u64, participants: &[(&str, u32)]) -> Vec<u8> {
        rmp_serde::to_vec_named(&CommitOut { id, participants: participants.to_vec(), meta: Bin(b"m") })
            .unwrap()
    }

    fn sorted(mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
        entries.sort();
        entries
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn replay_applies_committed_changes_in_commit_order_and_nothing_else() {
        let mut r = Replay::new("count");
        let p = b"prepare/count".as_slice();
        r.record(Some(p), &prepare(1, 0, &[change("a", Some("1")), change("b", Some("1"))])).unwrap();
        r.record(Some(b"prepare/other"), &prepare(1, 0, &[change("x", Some("9"))])).unwrap();
        r.record(Some(p), &prepare(1, 7, &[change("c", Some("1"))])).unwrap();
        r.record(Some(b"commit"), &commit(1, &[("count", 0), ("other", 0)])).unwrap();
        // Never committed.
        r.record(Some(p), &prepare(2, 0, &[change("a", Some("99"))])).unwrap();
        r.record(Some(p), &prepare(3, 0, &[change("a", Some("2")), change("b", None)])).unwrap();
        r.record(Some(b"commit"), &commit(3, &[("count", 0)])).unwrap();
        assert_eq!(
            sorted(r.finish()),
            [("a".into(), "2".into())],
            "task 7 was not named, id 2 never committed"
        );
    }

    #[test]
    fn a_record_that_is_not_state_is_an_error_not_data() {
        let mut r = Replay::new("count");
        assert!(r.record(None, b"x").is_err());
        assert!(r.record(Some(b"commit"), b"\xc1").unwrap_err().starts_with("bad commit"));
        assert!(r.record(Some(b"prepare/count"), b"").unwrap_err().starts_with("bad prepare"));
        assert_eq!(r.record(Some(b"prepare/other"), b"garbage"), Ok(()), "others' records are not read");
    }

    #[test]
    fn changes_are_split_into_chunks_below_the_limit() {
        let changes: Vec<Change> = (0..10).map(|i| change(&format!("k{i}"), Some("vvvv"))).collect();
        let size = change_size(&changes[0]);
        let parts = chunks(&changes, size * 3);
        assert_eq!(parts.iter().map(|c| c.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(chunks(&[], 10).len(), 1, "an empty prepare still names its task");
        assert_eq!(chunks(&changes[..1], 1).len(), 1, "a change bigger than the limit goes alone");
    }

    #[test]
    fn config_takes_broker_and_refuses_url() {
        let table: toml::Table = toml::from_str("backend = \"log\"").unwrap();
        assert_eq!(LogStateConfig::from_table(&table).unwrap().broker, "embedded");
        let table: toml::Table = toml::from_str("broker = \"127.0.0.1:6650\"").unwrap();
        assert_eq!(LogStateConfig::from_table(&table).unwrap().broker, "127.0.0.1:6650");
        let table: toml::Table = toml::from_str("url = \"redis://x\"").unwrap();
        assert!(LogStateConfig::from_table(&table).unwrap_err().to_string().contains("not `url`"));
        assert!(topic_of(&"x".repeat(300)).is_err());
    }
}
