//! `log-spout`: reads a topic of the embedded log (in this process, or through a
//! `squall broker` server) and emits each record as a reliable tuple.
//!
//! Config: `topic` (required); `group` (default `<topology>.<component>`); `broker`
//! (`"embedded"`, the default, or a server's `host:port`); `first_poll` (`"earliest"`, the
//! default, or `"latest"`: where a group with no committed offset starts); `max_uncommitted`
//! (records per partition past the committed offset, default 50000); `retry_limit` (failures
//! before a record is given up; default: retry forever); `retry_backoff_ms` (100, doubling up
//! to `retry_backoff_max_ms`, 10000); `commit_interval_ms` (1000); `fetch_max_bytes` (1 MiB);
//! `stop_at_end` (false: follow the topic forever; true: finish once every record that was in
//! the topic at open is acked and committed — for bounded runs and benchmarks).
//!
//! Emits `key`, `value`, `partition`, `offset`; key and value as strings when they are UTF-8,
//! else as bytes (a missing key is null). The message id is (partition, offset).
//!
//! Contract: the topic's partitions are spread over the component's tasks (partition p goes to
//! task p mod tasks). Each task resumes every partition from the group's committed offset;
//! commits a partition only up to the lowest offset not yet acked (see [`squall_engine::partitioned::offsets`]), at
//! least every `commit_interval_ms`, as soon as [`COMMIT_EVERY`] records are acked past the
//! committed offset, whenever the uncommitted bound is reached, on deactivate and on close;
//! re-emits failed and timed-out records after their backoff. After any crash nothing is lost
//! and the duplicates are at most the records that were uncommitted: `max_uncommitted` per
//! partition at most, and in practice those in flight plus fewer than [`COMMIT_EVERY`] acked.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;
use squall_api::{
    async_trait, BoxError, Guarantee, MessageId, OutputDeclarer, Spout, SpoutCollector, TopologyContext,
    Value,
};
use tokio::sync::mpsc;

use super::error::ErrorKind;
use super::{Broker, BrokerError, Record};
use squall_engine::partitioned::assignment::{AssignedPartition, Assignment};
use squall_engine::partitioned::config::{check_offsets, group_or_default, ConfigError};
use squall_engine::partitioned::offsets::{message_id, PartitionOffsets, RetryPolicy};
use squall_engine::partitioned::values::{record_values, RECORD_FIELDS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub topic: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default = "embedded")]
    pub broker: String,
    #[serde(default)]
    pub first_poll: FirstPoll,
    #[serde(default = "squall_engine::partitioned::offsets::defaults::max_uncommitted")]
    pub max_uncommitted: u64,
    #[serde(default)]
    pub retry_limit: Option<u32>,
    #[serde(default = "squall_engine::partitioned::offsets::defaults::retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    #[serde(default = "squall_engine::partitioned::offsets::defaults::retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    #[serde(default = "squall_engine::partitioned::offsets::defaults::commit_interval_ms")]
    pub commit_interval_ms: u64,
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: usize,
    #[serde(default)]
    pub stop_at_end: bool,
}

/// Where a group with no committed offset starts reading.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstPoll {
    #[default]
    Earliest,
    Latest,
}

pub(crate) fn embedded() -> String {
    "embedded".to_string()
}
fn default_fetch_max_bytes() -> usize {
    1 << 20
}

/// Records emitted per `next_tuple` call at most.
const EMIT_BATCH: usize = 64;
/// A partition with this many records acked past its committed offset commits at once, not
/// only every `commit_interval_ms`: what a crash redoes stays small at any rate.
const COMMIT_EVERY: u64 = 1024;
/// Fetched batches buffered per partition ahead of the spout.
const PREFETCH: usize = 2;
/// How long a fetch at the end of a partition waits for new records.
const FETCH_WAIT: Duration = Duration::from_millis(100);
/// The pause after a failed fetch before the next try.
const FETCH_RETRY: Duration = Duration::from_millis(500);

/// The `log-spout` factory.
pub fn build(config: Config) -> Result<LogSpout, BoxError> {
    check_offsets(&config.topic, config.max_uncommitted, config.retry_limit)?;
    if config.fetch_max_bytes < 1024 {
        return Err(ConfigError::too_small("fetch_max_bytes", 1024).into());
    }
    Ok(LogSpout { config, state: None, errors: Vec::new() })
}

pub struct LogSpout {
    config: Config,
    state: Option<Open>,
    /// Errors seen outside `next_tuple` (no collector there), reported at its next call.
    errors: Vec<String>,
}

/// Everything a spout has once opened.
struct Open {
    broker: Broker,
    topic: String,
    group: String,
    partitions: Assignment<Partition>,
    next_commit: Instant,
    /// Round-robin start over partitions.
    turn: usize,
}

struct Partition {
    number: u32,
    offsets: PartitionOffsets<Record>,
    buffered: VecDeque<Record>,
    fetched: mpsc::Receiver<Fetch>,
    /// With stop_at_end: the high watermark at open.
    end: Option<u64>,
}

impl AssignedPartition for Partition {
    type Record = Record;
    fn offsets(&mut self) -> &mut PartitionOffsets<Record> {
        &mut self.offsets
    }
}

#[async_trait]
impl Spout for LogSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(RECORD_FIELDS);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        let c = &self.config;
        let broker = Broker::connect(&c.broker).await?;
        let info = broker.describe(&c.topic).await?;
        let group = group_or_default(c.group.as_deref(), ctx);
        let committed = broker.committed(&group, &c.topic).await?;
        if let Some(p) = info.partitions.iter().enumerate().find(|(i, p)| p.partition as usize != *i) {
            return Err(format!(
                "topic `{}`: the broker described partition {} out of order",
                c.topic, p.1.partition
            )
            .into());
        }
        if info.partitions.len() > 1 << 15 {
            return Err(format!("topic `{}` has more than {} partitions", c.topic, 1 << 15).into());
        }
        let tasks = ctx.task_count().max(1);
        let retry = RetryPolicy::from_config(c.retry_backoff_ms, c.retry_backoff_max_ms, c.retry_limit);
        let mut partitions = Assignment::new(retry);
        for p in info.partitions.iter().filter(|p| p.partition as usize % tasks == ctx.task_index()) {
            let start = match committed.get(p.partition as usize).copied().flatten() {
                Some(offset) if offset < p.log_start => {
                    self.errors.push(format!(
                        "partition {}: committed offset {offset} was removed by retention; resuming at {}",
                        p.partition, p.log_start
                    ));
                    p.log_start
                }
                Some(offset) => offset.min(p.high_watermark),
                None => match c.first_poll {
                    FirstPoll::Earliest => p.log_start,
                    FirstPoll::Latest => p.high_watermark,
                },
            };
            let end = c.stop_at_end.then_some(p.high_watermark);
            let (tx, rx) = mpsc::channel(PREFETCH);
            tokio::spawn(fetch_loop(
                broker.clone(),
                c.topic.clone(),
                p.partition,
                start,
                end,
                c.fetch_max_bytes,
                tx,
            ));
            partitions.push(
                p.partition,
                Partition {
                    number: p.partition,
                    offsets: PartitionOffsets::new(start),
                    buffered: VecDeque::new(),
                    fetched: rx,
                    end,
                },
            );
        }
        let next_commit = Instant::now() + Duration::from_millis(c.commit_interval_ms);
        self.state = Some(Open { broker, topic: c.topic.clone(), group, partitions, next_commit, turn: 0 });
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        for e in self.errors.drain(..) {
            out.report_error(&e);
        }
        let Some(state) = self.state.as_mut() else { return Ok(()) };
        let now = Instant::now();
        let max_uncommitted = self.config.max_uncommitted;
        let mut emitted = 0;
        let n = state.partitions.len();
        for i in 0..n {
            let p = &mut state.partitions[(state.turn + i) % n];
            while emitted < EMIT_BATCH {
                let Some((offset, record)) = p.offsets.due_retry(now) else { break };
                emit(out, p.number, offset, &record)?;
                emitted += 1;
            }
            while emitted < EMIT_BATCH && p.offsets.has_room(max_uncommitted) {
                if p.buffered.is_empty() && !p.refill(out) {
                    break;
                }
                let Some(record) = p.buffered.pop_front() else { break };
                let offset = record.offset;
                if p.offsets.take(offset, record.clone()) {
                    emit(out, p.number, offset, &record)?;
                    emitted += 1;
                }
            }
        }
        state.turn = state.turn.wrapping_add(1);
        let full = state.partitions.commit_due(max_uncommitted, COMMIT_EVERY);
        let finishing = self.config.stop_at_end && state.partitions.iter().all(Partition::drained);
        if now >= state.next_commit || full || finishing {
            if let Err(e) = state.commit().await {
                out.report_error(&format!("commit failed: {e}"));
            }
            state.next_commit = now + Duration::from_millis(self.config.commit_interval_ms);
        }
        Ok(())
    }

    async fn ack(&mut self, msg_id: MessageId) {
        if let Some(state) = self.state.as_mut() {
            state.partitions.ack(&msg_id);
        }
    }

    async fn fail(&mut self, msg_id: MessageId) {
        let Some(state) = self.state.as_mut() else { return };
        self.errors.extend(state.partitions.fail(&msg_id, Instant::now()));
    }

    async fn deactivate(&mut self) {
        self.commit_now().await;
    }

    async fn close(&mut self) {
        self.commit_now().await;
    }

    /// Per partition of this task, the offset to read from again: the next one to emit
    /// (exactly once), or the lowest not yet acked (at least once).
    fn position(&self, guarantee: Guarantee) -> Option<Value> {
        let state = self.state.as_ref()?;
        let offsets = state.partitions.iter().map(|p| {
            let offset = match guarantee {
                Guarantee::ExactlyOnce => p.offsets.next_offset(),
                Guarantee::AtLeastOnce => p.offsets.frontier(),
            };
            (p.number.to_string(), Value::from(offset as i64))
        });
        Some(Value::Map(offsets.collect()))
    }

    /// Reads every partition of this task that `position` names from its offset there again,
    /// forgetting what was fetched, in flight or waiting for a retry.
    async fn rewind(&mut self, position: &Value) -> Result<(), BoxError> {
        let Some(state) = self.state.as_mut() else { return Err("log-spout: rewind before open".into()) };
        let Value::Map(offsets) = position else {
            return Err(
                format!("log-spout: a position is a map of partition to offset, not {position:?}").into()
            );
        };
        for p in state.partitions.iter_mut() {
            let Some(offset) = offsets.get(&p.number.to_string()).and_then(Value::as_i64) else { continue };
            let offset =
                u64::try_from(offset).map_err(|_| format!("log-spout: offset {offset} is negative"))?;
            let (tx, rx) = mpsc::channel(PREFETCH);
            tokio::spawn(fetch_loop(
                state.broker.clone(),
                state.topic.clone(),
                p.number,
                offset,
                p.end,
                self.config.fetch_max_bytes,
                tx,
            ));
            // The old fetcher ends once it finds its channel closed.
            p.fetched = rx;
            p.buffered.clear();
            p.offsets = PartitionOffsets::new(offset);
        }
        Ok(())
    }

    fn is_finished(&self) -> bool {
        match &self.state {
            Some(state) => {
                self.config.stop_at_end
                    && state.partitions.iter().all(|p| p.drained() && p.offsets.to_commit().is_none())
            }
            None => false,
        }
    }
}

impl LogSpout {
    async fn commit_now(&mut self) {
        if let Some(state) = self.state.as_mut() {
            if let Err(e) = state.commit().await {
                tracing::warn!("log-spout: commit failed: {e}");
            }
        }
    }
}

impl Open {
    /// Stores every partition's frontier that moved.
    async fn commit(&mut self) -> Result<(), BrokerError> {
        for p in self.partitions.iter_mut() {
            if let Some(offset) = p.offsets.to_commit() {
                self.broker.commit(&self.group, &self.topic, p.number, offset).await?;
                p.offsets.committed(offset);
            }
        }
        Ok(())
    }
}

impl Partition {
    /// Moves the next fetched batch into the buffer; false if none is ready. Called only with
    /// the buffer empty, so a skip applies after every record fetched before it was taken.
    fn refill(&mut self, out: &mut dyn SpoutCollector) -> bool {
        loop {
            match self.fetched.try_recv() {
                Ok(Fetch::Records(records)) => {
                    if records.is_empty() {
                        continue;
                    }
                    self.buffered.extend(records);
                    return true;
                }
                Ok(Fetch::Skipped { from, to }) => {
                    out.report_error(&format!(
                        "partition {}: offsets {from}..{to} were removed by retention before they were read; skipped",
                        self.number
                    ));
                    self.offsets.skip_to(to);
                }
                Ok(Fetch::Failed(e)) => out.report_error(&format!("partition {}: {e}", self.number)),
                Err(_) => return false,
            }
        }
    }

    /// With stop_at_end: every record up to the end was taken and is done.
    fn drained(&self) -> bool {
        let end = self.end.unwrap_or(u64::MAX);
        self.buffered.is_empty() && self.offsets.next_offset() >= end && self.offsets.is_settled()
    }
}

/// What a partition's fetcher hands the spout, in offset order.
enum Fetch {
    Records(Vec<Record>),
    /// Retention removed the records before this offset before they were read.
    Skipped {
        from: u64,
        to: u64,
    },
    /// A fetch failed (it is retried); the message is for the topology's log.
    Failed(String),
}

/// Emits one record with (partition, offset) as its message id.
fn emit(out: &mut dyn SpoutCollector, partition: u32, offset: u64, record: &Record) -> Result<(), BoxError> {
    let values = record_values(record.key.as_deref(), &record.value, partition, offset);
    out.emit_with_id(values, message_id(partition, offset))?;
    Ok(())
}

/// Reads one partition ahead of the spout, from `offset` on (to `end`, if given), and hands
/// batches over a small bounded channel; ends when the spout is gone.
async fn fetch_loop(
    broker: Broker,
    topic: String,
    partition: u32,
    mut offset: u64,
    end: Option<u64>,
    max_bytes: usize,
    tx: mpsc::Sender<Fetch>,
) {
    while end.is_none_or(|end| offset < end) {
        let message = match broker.fetch(&topic, partition, offset, max_bytes, FETCH_WAIT).await {
            Ok(fetched) => {
                let mut records = fetched.records;
                if let Some(end) = end {
                    records.retain(|r| r.offset < end);
                }
                let Some(last) = records.last() else {
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                };
                offset = last.offset + 1;
                Fetch::Records(records)
            }
            // Retention removed records before they were read: nothing can bring them back, so
            // say so and go on from the oldest record left.
            Err(e) if e.kind() == ErrorKind::OffsetRemoved => {
                match log_start(&broker, &topic, partition).await {
                    Some(log_start) if log_start > offset => {
                        let from = std::mem::replace(&mut offset, log_start);
                        Fetch::Skipped { from, to: log_start }
                    }
                    _ => Fetch::Failed(e.to_string()),
                }
            }
            Err(e) => Fetch::Failed(e.to_string()),
        };
        let failed = matches!(message, Fetch::Failed(_));
        if tx.send(message).await.is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(FETCH_RETRY).await;
        }
    }
}

async fn log_start(broker: &Broker, topic: &str, partition: u32) -> Option<u64> {
    let info = broker.describe(topic).await.ok()?;
    info.partitions.get(partition as usize).map(|p| p.log_start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use crate::{NewRecord, TopicConfig};
    use bytes::Bytes;

    #[tokio::test]
    async fn fetcher_skips_records_retention_removed_and_says_so() {
        let dir = std::env::temp_dir().join(format!("squall-fetcher-skip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = Log::open(&dir).unwrap();
        let mut config = TopicConfig::new(1);
        config.segment_bytes = 1_000;
        config.retention_bytes = Some(2_000);
        log.create_topic("t", config).unwrap();
        for i in 0..100 {
            let record =
                NewRecord { key: None, value: Bytes::from(format!("record {i:>40}")), timestamp: None };
            log.append("t", 0, &[record]).unwrap();
        }
        log.apply_retention(0);
        let log_start = log.describe("t").unwrap().partitions[0].log_start;
        assert!(log_start > 0);

        let (tx, mut rx) = mpsc::channel(PREFETCH);
        let fetcher =
            tokio::spawn(fetch_loop(Broker::Embedded(log), "t".into(), 0, 0, Some(100), 1 << 20, tx));
        match rx.recv().await {
            Some(Fetch::Skipped { from: 0, to }) => assert_eq!(to, log_start),
            _ => panic!("the first thing the fetcher says is what it skipped"),
        }
        let mut next = log_start;
        while let Some(fetch) = rx.recv().await {
            let Fetch::Records(records) = fetch else { panic!("only records after the skip") };
            for r in records {
                assert_eq!(r.offset, next);
                next += 1;
            }
        }
        assert_eq!(next, 100, "then every record left, up to the end");
        fetcher.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
