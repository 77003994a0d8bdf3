//! `kafka-spout`: reads a Kafka topic with a consumer group's committed offsets and emits each
//! record as a tuple — reliable by default — in the manner of Storm's `KafkaSpout`
//! (storm-kafka-client).
//!
//! Config: `bootstrap` (servers, `host:port[,host:port…]`, default `127.0.0.1:9092`); `topic`
//! (required); `group` (the consumer group, default `<topology>.<component>`); `first_poll`
//! (below); `guarantee` (below); `max_uncommitted` (records per partition past the committed
//! offset, default 50000); `retry_limit` (failures before a record is given up; default: retry
//! forever); `retry_backoff_ms` (100, doubling up to `retry_backoff_max_ms`, 10000);
//! `commit_interval_ms` (1000); `poll_interval_ms` (the longest the broker holds a fetch for
//! new records, so how soon new records arrive on an idle topic: librdkafka's
//! `fetch.wait.max.ms`; default 100); `stop_at_end` (false: follow the topic forever; true:
//! finish once every record that was in the topic at open is done and committed — for bounded
//! runs, benchmarks and tests); `properties` (more librdkafka settings, e.g.
//! `{ "client.id" = "me" }`; not the ones the spout sets itself).
//!
//! `first_poll`: where a partition starts. A *first start* is the spout opening in a new
//! deployment (the context's `topology_id`: each `squall local` run is one; in a cluster, the
//! submitted topology); a *restart* is it opening again in the same deployment: in the same
//! process, or in another one of the same deployment — told apart by the metadata its commits
//! carry, on brokers that return commit metadata (Kafka does; Tansu 0.6 does not, so there
//! only restarts in the same process count).
//! - `committed_else_earliest` (default; Storm's UNCOMMITTED_EARLIEST): from the group's
//!   committed offset, whoever committed it, on first start and restart alike; from the
//!   earliest record if the group has none.
//! - `earliest` (Storm's EARLIEST): first start: from the earliest record, whatever was
//!   committed; restart: from the committed offset.
//! - `latest` (Storm's LATEST): first start: from the end (only records produced from now on);
//!   restart: from the committed offset.
//!
//! A committed offset that retention has passed resumes at the earliest record left (and says
//! so). A partition whose position becomes invalid while running (out of range: retention
//! passed it) goes on from its earliest record left.
//!
//! `guarantee`:
//! - `at_least_once` (default): each record is emitted with (partition, offset) as its message
//!   id; a partition's offset is committed (manually; librdkafka's auto-commit is off) only up
//!   to the lowest offset not yet acked (or given up), at least every `commit_interval_ms`,
//!   as soon as [`COMMIT_EVERY`] records are done past the committed offset, when the
//!   uncommitted bound is reached, on deactivate and on close; failed and timed-out
//!   records are re-emitted after their backoff until `retry_limit`. After any crash nothing
//!   is lost; duplicates are at most the records that were uncommitted. At most
//!   `max_uncommitted` records of a partition lie past its committed offset, except that
//!   records already taken are retried regardless, so a retrying record never stalls its
//!   partition for good (see [`squall_engine::partitioned::offsets`], shared with `log-spout`).
//! - `at_most_once`: a record's offset is committed before it is emitted, unreliably: after a
//!   crash, the records committed but not yet processed are lost, none is processed twice
//!   (close commits nothing more, so a clean stop loses only what was in flight).
//! - `none`: records are emitted unreliably and the offset after the last one emitted is
//!   committed every `commit_interval_ms` (auto-commit style): a crash may lose or repeat some.
//!
//! Emits `key`, `value`, `partition`, `offset`; key and value as strings when they are UTF-8,
//! else as bytes (a missing key is null, a missing value empty).
//!
//! Partitions: the topic's partitions at open are spread over the component's tasks, partition
//! p to task p mod tasks, and assigned to each task's consumer directly — the group's commits
//! hold the offsets, but no group membership or rebalance is involved. This is Storm's default
//! (its manual round-robin partitioner): a killed task's partitions never wait out a session
//! timeout, a restarted one gets exactly its partitions back, and no rebalance can take away
//! partitions with records in flight. Two running topologies must not share a group.
//! Partitions added while it runs are read from its next start.
//!
//! Broker outages: librdkafka reconnects by itself; fetches and commits resume once the broker
//! answers again (failed commits are retried), errors are reported at most once per 10 s each.
//!
//! Flow: each partition's records are fetched in the background into a librdkafka queue of the
//! partition's own, and taken from it only while the spout has room for them (under the
//! uncommitted bound, and a small buffer): a partition held back by its bound stops being
//! fetched once its queue is full (librdkafka's `queued.max.messages.kbytes` and
//! `queued.min.messages`, settable in `properties`), while the others go on.
//!
//! `next_tuple` never blocks: polls take what librdkafka has fetched in the background, commits
//! go to a thread of the spout's own that makes them one at a time (librdkafka tells the
//! outcome of a manual commit only to its caller, so each waits there for its answer), and the
//! other calls that block (metadata and offsets at open, the last commit at close) run on
//! threads of their own.
//!
//! Modules: [`config`] (the keys, their defaults and checks), `setup` (start-up: the task's
//! partitions and where each starts), `committer` (the commit thread); this one is the spout.

mod committer;
pub mod config;
mod setup;

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::ClientConfig;
use rdkafka::Offset;
use squall_api::{
    async_trait, BoxError, MessageId, OutputDeclarer, Spout, SpoutCollector, TopologyContext, Value,
};

use crate::client::{self, off_runtime, Throttle, SETUP_TIMEOUT};
use crate::error::Error;
use committer::{commit_list, CommitError, CommitOutcome, CommitRequests};
use config::fixed_settings;
pub use config::{Config, FirstPoll, Guarantee};
use setup::Setup;
use squall_engine::partitioned::assignment::{AssignedPartition, Assignment};
use squall_engine::partitioned::config::group_or_default;
use squall_engine::partitioned::offsets::{message_id, PartitionOffsets};
use squall_engine::partitioned::values::{record_values, RECORD_FIELDS};

/// Records emitted per `next_tuple` call at most.
const EMIT_BATCH: usize = 64;
/// Messages taken from the consumer per `next_tuple` call at most.
const POLL_BATCH: usize = 1024;
/// A partition's queue is polled only while fewer records than this wait to be emitted; the
/// rest wait in librdkafka's queue for the partition, whose fetcher stops once that is full.
const BUFFER_MAX: usize = 1024;
/// A partition with this many records done past its committed offset commits at once, not
/// only every `commit_interval_ms`: what a crash redoes stays small at any rate (as in
/// `log-spout`).
pub const COMMIT_EVERY: u64 = 1024;
/// A commit with no answer after this long is taken as lost, and another may go out.
const COMMIT_STALE: Duration = Duration::from_secs(30);
/// The pause after a failed commit before the next try.
const COMMIT_RETRY: Duration = Duration::from_millis(500);
/// How long close waits for the last commit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Offsets at or past this cannot be carried in a message id.
const MAX_OFFSET: u64 = 1 << 48;
/// Partitions at or past this cannot be carried in a message id.
const MAX_PARTITIONS: u32 = 1 << 15;

/// The `kafka-spout` factory.
pub fn build(config: Config) -> Result<KafkaSpout, BoxError> {
    config.validate()?;
    Ok(KafkaSpout { config, state: None, errors: Vec::new() })
}

pub struct KafkaSpout {
    config: Config,
    state: Option<Open>,
    /// Errors seen outside `next_tuple` (no collector there), reported at its next call.
    errors: Vec<String>,
}

/// A record polled from Kafka, kept until it is done (to re-emit it).
#[derive(Debug, Clone)]
struct Record {
    key: Option<Bytes>,
    value: Bytes,
}

/// The consumer's context: librdkafka's log into ours.
struct SpoutContext {
    who: String,
}

impl ClientContext for SpoutContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client::log(&self.who, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Consumer errors also come out of poll, where the spout reports them.
        tracing::debug!("{}: {error}: {reason}", self.who);
    }
}

// librdkafka reports the outcome of a manual asynchronous commit to no one (only auto-commits
// reach the commit callback), so commits are synchronous, on a thread of their own.
impl ConsumerContext for SpoutContext {}

type KafkaConsumer = BaseConsumer<SpoutContext>;

/// Everything a spout has once opened.
struct Open {
    /// Taken out only by close (and drop), to be closed off the async runtime (after the
    /// partition queues, which hold it too).
    consumer: Option<Arc<KafkaConsumer>>,
    /// Commit requests to the committer thread (None: no thread, in unit tests).
    commit_requests: Option<CommitRequests>,
    commits: mpsc::Receiver<CommitOutcome>,
    topic: String,
    /// Carried by every commit: the deployment, to tell a restart from a first start.
    metadata: String,
    partitions: Assignment<Partition>,
    next_commit: Instant,
    /// When the commit that has not been answered yet went out.
    commit_in_flight: Option<Instant>,
    /// No commit before this (after a failed one).
    commit_not_before: Instant,
    /// Round-robin start over partitions.
    turn: usize,
    reports: Throttle,
}

struct Partition {
    number: i32,
    /// at_least_once: the records out and the committable offset; at_most_once: the
    /// committed offset (records below it may be emitted); none: the emitted position.
    offsets: PartitionOffsets<Record>,
    /// The partition's own queue of fetched records (None in unit tests).
    queue: Option<PartitionQueue<SpoutContext>>,
    /// Polled, not yet emitted, in offset order.
    buffered: VecDeque<(u64, Record)>,
    /// The offset after the last record polled: anything below it polled again is dropped.
    received: u64,
    /// With stop_at_end: the high watermark at open.
    end: Option<u64>,
    /// With stop_at_end: the consumer reached the partition's end (every record below the
    /// high watermark was polled).
    at_end: bool,
}

impl AssignedPartition for Partition {
    type Record = Record;
    fn offsets(&mut self) -> &mut PartitionOffsets<Record> {
        &mut self.offsets
    }
}

#[async_trait]
impl Spout for KafkaSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(RECORD_FIELDS);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        let c = &self.config;
        let group = group_or_default(c.group.as_deref(), ctx);
        let who = format!("kafka-spout {}[{}]", ctx.component_id(), ctx.task_index());
        let config =
            client::client_config("kafka-spout", &c.bootstrap, &fixed_settings(c, &group), &c.properties)?;
        let metadata = format!("squall:{}:{}", ctx.topology_name(), ctx.topology_id());
        let consumer: KafkaConsumer = create(&config, SpoutContext { who })?;
        let consumer = Arc::new(consumer);

        let setup = Setup {
            deployment: ctx.topology_id().to_string(),
            group: group.clone(),
            topic: c.topic.clone(),
            bootstrap: c.bootstrap.clone(),
            first_poll: c.first_poll,
            metadata: metadata.clone(),
            task: ctx.task_index(),
            tasks: ctx.task_count().max(1),
        };
        let found = {
            let consumer = consumer.clone();
            let what = format!("kafka-spout: setting up topic `{}` at {}", c.topic, c.bootstrap);
            off_runtime(&what, SETUP_TIMEOUT + Duration::from_secs(30), move || setup.run(&consumer)).await
        };
        let found = match found.map_err(Error::from).and_then(|r| r) {
            Ok(found) => found,
            Err(e) => {
                close_in_background(consumer);
                return Err(e.into());
            }
        };

        let (commit_requests, commits) =
            match committer::start(consumer.clone(), c.topic.clone(), metadata.clone()) {
                Ok(channels) => channels,
                Err(e) => {
                    close_in_background(consumer);
                    return Err(format!("kafka-spout: cannot start the commit thread: {e}").into());
                }
            };
        let mut partitions = Assignment::new(c.retry());
        for f in found {
            if let Some(note) = f.note {
                self.errors.push(note);
            }
            partitions.push(
                f.partition as u32,
                Partition {
                    number: f.partition,
                    offsets: PartitionOffsets::new(f.start),
                    queue: f.queue,
                    buffered: VecDeque::new(),
                    received: f.start,
                    end: c.stop_at_end.then_some(f.high),
                    at_end: false,
                },
            );
        }
        let now = Instant::now();
        self.state = Some(Open {
            consumer: Some(consumer),
            commit_requests: Some(commit_requests),
            commits,
            topic: c.topic.clone(),
            metadata,
            partitions,
            next_commit: now + Duration::from_millis(c.commit_interval_ms),
            commit_in_flight: None,
            commit_not_before: now,
            turn: 0,
            reports: Throttle::default(),
        });
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        for e in self.errors.drain(..) {
            out.report_error(&e);
        }
        let Some(state) = self.state.as_mut() else { return Ok(()) };
        let c = &self.config;
        let now = Instant::now();
        state.poll(out, now);
        match c.guarantee {
            Guarantee::AtLeastOnce => state.emit_reliable(out, now, c.max_uncommitted)?,
            Guarantee::AtMostOnce => state.emit_committed(out)?,
            Guarantee::None => state.emit_unreliable(out)?,
        }
        state.turn = state.turn.wrapping_add(1);
        if state.commit_due(c, now) {
            if let Err(e) = state.commit(c.guarantee, now) {
                state.reports.report(out, now, e.to_string());
            }
            state.next_commit = now + Duration::from_millis(c.commit_interval_ms);
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
        if let Some(state) = self.state.as_mut() {
            if let Err(e) = state.commit(self.config.guarantee, Instant::now()) {
                tracing::warn!("kafka-spout: {e}");
            }
        }
    }

    async fn close(&mut self) {
        let Some(mut state) = self.state.take() else { return };
        state.commit_requests = None; // the committer thread ends after what it is doing
        let Some(consumer) = state.consumer.take() else { return };
        // at_most_once commits ahead of emitting: what is committed and not yet emitted now is
        // lost anyway, so close commits nothing more.
        let targets: Vec<(i32, u64)> = match self.config.guarantee {
            Guarantee::AtMostOnce => Vec::new(),
            guarantee => state
                .partitions
                .iter()
                .filter_map(|p| Some((p.number, p.commit_target(guarantee)?)))
                .collect(),
        };
        let (topic, metadata) = (state.topic.clone(), state.metadata.clone());
        // The partition queues hold the consumer too: they go first, off the runtime.
        let queues: Vec<_> = state.partitions.iter_mut().filter_map(|p| p.queue.take()).collect();
        let last_commit = move || {
            drop(queues);
            let result = if targets.is_empty() {
                Ok(())
            } else {
                let tpl = commit_list(&topic, &metadata, &targets);
                let result = consumer.commit(&tpl, CommitMode::Sync);
                drop(tpl); // before the consumer: a list librdkafka filled can hold it open
                result
            };
            drop(consumer);
            result
        };
        match off_runtime("kafka-spout: the last commit", CLOSE_TIMEOUT, last_commit).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("kafka-spout: the last commit failed: {e}"),
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// With `guarantee = "at_least_once"` (its own, the default): per partition of this task,
    /// the offset to read from again: the next one to emit (exactly once) or the lowest not
    /// yet acked (at least once). Its other guarantees cannot rewind.
    fn position(&self, guarantee: squall_api::Guarantee) -> Option<Value> {
        if self.config.guarantee != Guarantee::AtLeastOnce {
            return None;
        }
        let state = self.state.as_ref()?;
        let offsets = state.partitions.iter().map(|p| {
            let offset = match guarantee {
                squall_api::Guarantee::ExactlyOnce => p.offsets.next_offset(),
                squall_api::Guarantee::AtLeastOnce => p.offsets.frontier(),
            };
            (p.number.to_string(), Value::from(offset as i64))
        });
        Some(Value::Map(offsets.collect()))
    }

    /// Seeks every partition of this task that `position` names back to its offset there,
    /// forgetting what was polled, in flight or waiting for a retry. librdkafka drops what it
    /// fetched before the seek.
    async fn rewind(&mut self, position: &Value) -> Result<(), BoxError> {
        let Some(state) = self.state.as_mut() else { return Err("kafka-spout: rewind before open".into()) };
        let Value::Map(offsets) = position else {
            return Err(
                format!("kafka-spout: a position is a map of partition to offset, not {position:?}").into()
            );
        };
        let Some(consumer) = state.consumer.clone() else {
            return Err("kafka-spout: rewind after close".into());
        };
        let mut seeks = Vec::new();
        for p in state.partitions.iter_mut() {
            let Some(offset) = offsets.get(&p.number.to_string()).and_then(Value::as_i64) else { continue };
            let offset =
                u64::try_from(offset).map_err(|_| format!("kafka-spout: offset {offset} is negative"))?;
            seeks.push((p.number, offset));
            p.buffered.clear();
            p.received = offset;
            p.offsets = PartitionOffsets::new(offset);
            p.at_end = false;
        }
        let topic = state.topic.clone();
        let seek = move || -> Result<(), String> {
            for (partition, offset) in seeks {
                consumer
                    .seek(&topic, partition, Offset::Offset(offset as i64), Duration::from_secs(10))
                    .map_err(|e| format!("cannot seek `{topic}` partition {partition} to {offset}: {e}"))?;
            }
            Ok(())
        };
        match off_runtime("kafka-spout: rewinding", SETUP_TIMEOUT, seek).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("kafka-spout: {e}").into()),
            Err(e) => Err(e.to_string().into()),
        }
    }

    fn is_finished(&self) -> bool {
        match &self.state {
            Some(state) if self.config.stop_at_end => {
                state.commit_in_flight.is_none()
                    && state.partitions.iter().all(|p| {
                        p.drained(self.config.guarantee) && p.commit_target(self.config.guarantee).is_none()
                    })
            }
            _ => false,
        }
    }
}

fn create(config: &ClientConfig, context: SpoutContext) -> Result<KafkaConsumer, Error> {
    config
        .create_with_context(context)
        .map_err(|source| Error::kafka("kafka-spout: cannot create the consumer", source))
}

/// Closes a consumer on a thread of its own: librdkafka's close can wait on the network.
fn close_in_background(consumer: Arc<KafkaConsumer>) {
    let _ = std::thread::Builder::new().name("squall-kafka-close".into()).spawn(move || drop(consumer));
}

impl Drop for Open {
    fn drop(&mut self) {
        // The partition queues hold the consumer too: they go first, on the same thread.
        let queues: Vec<_> = self.partitions.iter_mut().filter_map(|p| p.queue.take()).collect();
        if let Some(consumer) = self.consumer.take() {
            let _ = std::thread::Builder::new().name("squall-kafka-close".into()).spawn(move || {
                drop(queues);
                drop(consumer);
            });
        }
    }
}

impl Open {
    /// Takes what the consumer has fetched into the partitions' buffers, from the queues of
    /// the partitions with room, and the consumer's errors and the results of commits.
    fn poll(&mut self, out: &mut dyn SpoutCollector, now: Instant) {
        let Some(consumer) = self.consumer.clone() else { return };
        // The consumer's own queue: errors, and records fetched before a partition was split.
        for _ in 0..POLL_BATCH {
            let Some(polled) = consumer.poll(Duration::ZERO) else { break };
            self.take_polled(polled, out, now);
        }
        for p in self.partitions.iter_mut() {
            let Some(queue) = p.queue.take() else { continue };
            while p.buffered.len() < BUFFER_MAX {
                let Some(polled) = queue.poll(Duration::ZERO) else { break };
                match polled {
                    Ok(message) => p.push(&message, out, &mut self.reports, now),
                    Err(KafkaError::PartitionEOF(_)) => p.at_end = true,
                    Err(e) => self.reports.report(out, now, format!("consuming `{}`: {e}", self.topic)),
                }
            }
            p.queue = Some(queue);
        }
        while let Ok(outcome) = self.commits.try_recv() {
            self.commit_in_flight = None;
            match outcome.result {
                Ok(committed) => {
                    for (partition, offset) in committed {
                        if let Some(p) = self.partition_mut(partition) {
                            p.offsets.committed(offset);
                        }
                    }
                }
                Err(e) => {
                    self.commit_not_before = now + COMMIT_RETRY;
                    self.reports.report(out, now, e.to_string());
                }
            }
        }
    }

    /// Routes one thing polled from the consumer's own queue.
    fn take_polled(
        &mut self,
        polled: KafkaResult<BorrowedMessage<'_>>,
        out: &mut dyn SpoutCollector,
        now: Instant,
    ) {
        match polled {
            Ok(message) => {
                let partition = u32::try_from(message.partition()).ok();
                if let Some(p) = partition.and_then(|p| self.partitions.get_mut(p)) {
                    p.push(&message, out, &mut self.reports, now);
                }
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                if let Some(p) = self.partition_mut(partition) {
                    p.at_end = true;
                }
            }
            Err(e) => self.reports.report(out, now, format!("consuming `{}`: {e}", self.topic)),
        }
    }

    fn partition_mut(&mut self, partition: i32) -> Option<&mut Partition> {
        self.partitions.get_mut(u32::try_from(partition).ok()?)
    }

    /// at_least_once: due retries, then new records while under the uncommitted bound, with
    /// (partition, offset) as message id.
    fn emit_reliable(
        &mut self,
        out: &mut dyn SpoutCollector,
        now: Instant,
        max_uncommitted: u64,
    ) -> Result<(), BoxError> {
        let mut emitted = 0;
        let n = self.partitions.len();
        for i in 0..n {
            let p = &mut self.partitions[(self.turn + i) % n];
            while emitted < EMIT_BATCH {
                let Some((offset, record)) = p.offsets.due_retry(now) else { break };
                emit(out, p.number, offset, &record, true)?;
                emitted += 1;
            }
            while emitted < EMIT_BATCH && p.offsets.has_room(max_uncommitted) {
                let Some((offset, record)) = p.buffered.pop_front() else { break };
                emit(out, p.number, offset, &record, true)?;
                p.offsets.take(offset, record);
                emitted += 1;
            }
        }
        Ok(())
    }

    /// at_most_once: the records whose offset is committed, unreliably.
    fn emit_committed(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        let mut emitted = 0;
        let n = self.partitions.len();
        for i in 0..n {
            let p = &mut self.partitions[(self.turn + i) % n];
            let committed = p.offsets.committed_offset();
            while emitted < EMIT_BATCH && p.buffered.front().is_some_and(|(o, _)| *o < committed) {
                let Some((offset, record)) = p.buffered.pop_front() else { break };
                emit(out, p.number, offset, &record, false)?;
                emitted += 1;
            }
        }
        Ok(())
    }

    /// none: every record, unreliably; the emitted position is what gets committed.
    fn emit_unreliable(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        let mut emitted = 0;
        let n = self.partitions.len();
        for i in 0..n {
            let p = &mut self.partitions[(self.turn + i) % n];
            while emitted < EMIT_BATCH {
                let Some((offset, record)) = p.buffered.pop_front() else { break };
                emit(out, p.number, offset, &record, false)?;
                p.offsets.skip_to(offset + 1);
                emitted += 1;
            }
        }
        Ok(())
    }

    /// Whether to commit now.
    fn commit_due(&mut self, c: &Config, now: Instant) -> bool {
        if self.commit_in_flight.is_some_and(|at| now < at + COMMIT_STALE) || now < self.commit_not_before {
            return false;
        }
        // At least once: also as soon as a partition has COMMIT_EVERY records done past its
        // committed offset (or a useful stretch at its bound), as log-spout does.
        let full = c.guarantee == Guarantee::AtLeastOnce
            && self.partitions.commit_due(c.max_uncommitted, COMMIT_EVERY);
        let wanted = || self.partitions.iter().any(|p| p.commit_target(c.guarantee).is_some());
        match c.guarantee {
            // Nothing is emitted before its commit: commit as soon as records wait for one.
            Guarantee::AtMostOnce => wanted(),
            Guarantee::AtLeastOnce | Guarantee::None => {
                let finishing = c.stop_at_end && self.partitions.iter().all(|p| p.drained(c.guarantee));
                (now >= self.next_commit || full || finishing) && wanted()
            }
        }
    }

    /// Hands every partition's commit target to the committer thread; its outcome comes
    /// back to `poll`.
    fn commit(&mut self, guarantee: Guarantee, now: Instant) -> Result<(), CommitError> {
        let targets: Vec<(i32, u64)> =
            self.partitions.iter().filter_map(|p| Some((p.number, p.commit_target(guarantee)?))).collect();
        if targets.is_empty() {
            return Ok(());
        }
        let sent = self.commit_requests.as_ref().is_some_and(|requests| requests.send(targets).is_ok());
        if !sent {
            self.commit_not_before = now + COMMIT_RETRY;
            return Err(CommitError::ThreadGone);
        }
        self.commit_in_flight = Some(now);
        Ok(())
    }
}

impl Partition {
    /// Buffers a polled record, unless it is one already here (polled again).
    fn push(
        &mut self,
        message: &BorrowedMessage<'_>,
        out: &mut dyn SpoutCollector,
        reports: &mut Throttle,
        now: Instant,
    ) {
        let offset = message.offset();
        if offset < 0 || (offset as u64) < self.received {
            return;
        }
        let offset = offset as u64;
        if offset >= MAX_OFFSET {
            reports.report(
                out,
                now,
                format!("partition {}: offsets past 2^48 are not supported", self.number),
            );
            return;
        }
        let record = Record {
            key: message.key().map(Bytes::copy_from_slice),
            value: message.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        };
        self.received = offset + 1;
        self.buffered.push_back((offset, record));
    }

    /// The offset to commit now, if it moved past the committed one.
    fn commit_target(&self, guarantee: Guarantee) -> Option<u64> {
        match guarantee {
            Guarantee::AtLeastOnce | Guarantee::None => self.offsets.to_commit(),
            Guarantee::AtMostOnce => {
                let (last, _) = self.buffered.back()?;
                (last + 1 > self.offsets.committed_offset()).then_some(last + 1)
            }
        }
    }

    /// With stop_at_end: every record up to the end was polled, emitted and is done.
    fn drained(&self, guarantee: Guarantee) -> bool {
        let Some(end) = self.end else { return false };
        let settled = guarantee != Guarantee::AtLeastOnce || self.offsets.is_settled();
        self.buffered.is_empty() && (self.received >= end || self.at_end) && settled
    }
}

/// Emits one record: reliably with (partition, offset) as its message id, or unreliably.
fn emit(
    out: &mut dyn SpoutCollector,
    partition: i32,
    offset: u64,
    record: &Record,
    reliable: bool,
) -> Result<(), BoxError> {
    let values = record_values(record.key.as_deref(), &record.value, partition as u32, offset);
    if reliable {
        out.emit_with_id(values, message_id(partition as u32, offset))?;
    } else {
        out.emit(values)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::{EmitError, TaskId, Value, Values};
    use squall_engine::partitioned::offsets::{parse_message_id, RetryPolicy};

    #[derive(Default)]
    struct Collector {
        emits: Vec<(Values, Option<MessageId>)>,
        errors: Vec<String>,
    }

    impl SpoutCollector for Collector {
        fn emit_to(
            &mut self,
            _stream: &str,
            values: Values,
            msg_id: Option<MessageId>,
            _direct_task: Option<TaskId>,
        ) -> Result<(), EmitError> {
            self.emits.push((values, msg_id));
            Ok(())
        }

        fn report_error(&mut self, error: &str) {
            self.errors.push(error.to_string());
        }
    }

    impl Collector {
        /// The offsets emitted, in order.
        fn offsets(&self) -> Vec<i64> {
            self.emits.iter().map(|(v, _)| v[3].as_i64().unwrap()).collect()
        }
    }

    /// An opened spout's state with no consumer: one partition starting at `start`, holding
    /// the polled records `offsets`.
    fn open_with(start: u64, offsets: std::ops::Range<u64>) -> Open {
        let (_tx, commits) = mpsc::channel();
        let mut p = Partition {
            number: 0,
            offsets: PartitionOffsets::new(start),
            buffered: VecDeque::new(),
            queue: None,
            received: start,
            end: Some(offsets.end),
            at_end: false,
        };
        for o in offsets {
            p.buffered
                .push_back((o, Record { key: Some(Bytes::from(o.to_string())), value: Bytes::from("v") }));
            p.received = o + 1;
        }
        let now = Instant::now();
        let mut partitions = Assignment::new(RetryPolicy::default());
        partitions.push(0, p);
        Open {
            consumer: None,
            commit_requests: None,
            commits,
            topic: "t".into(),
            metadata: "m".into(),
            partitions,
            next_commit: now,
            commit_in_flight: None,
            commit_not_before: now,
            turn: 0,
            reports: Throttle::default(),
        }
    }

    #[test]
    fn at_least_once_emits_with_ids_under_the_bound_and_retries_past_it() {
        let mut state = open_with(0, 0..10);
        let mut out = Collector::default();
        let now = Instant::now();
        state.emit_reliable(&mut out, now, 4).unwrap();
        assert_eq!(out.offsets(), [0, 1, 2, 3], "no more than max_uncommitted past the commit");
        assert_eq!(out.emits[2].1, Some(message_id(0, 2)));
        let p = &mut state.partitions[0];
        let retry = RetryPolicy { backoff: Duration::ZERO, ..RetryPolicy::default() };
        assert!(matches!(
            p.offsets.fail(0, now, &retry),
            squall_engine::partitioned::offsets::Failed::RetryAt(_)
        ));
        for o in 1..4 {
            p.offsets.ack(o);
        }
        assert_eq!(p.commit_target(Guarantee::AtLeastOnce), None, "0 holds the commit back");
        state.emit_reliable(&mut out, now, 4).unwrap();
        assert_eq!(out.offsets(), [0, 1, 2, 3, 0], "the failed record is retried at the bound");
        state.partitions[0].offsets.ack(0);
        assert_eq!(state.partitions[0].commit_target(Guarantee::AtLeastOnce), Some(4));
        state.partitions[0].offsets.committed(4);
        state.emit_reliable(&mut out, now, 4).unwrap();
        assert_eq!(out.offsets()[5..], [4, 5, 6, 7]);
        assert!(!state.partitions[0].drained(Guarantee::AtLeastOnce));
    }

    #[test]
    fn at_least_once_commits_as_soon_as_commit_every_records_are_acked_not_only_on_the_timer() {
        let total = 3 * COMMIT_EVERY;
        let mut state = open_with(0, 0..total);
        let now = Instant::now();
        state.next_commit = now + Duration::from_secs(3600);
        let c: Config = toml::from_str(r#"topic = "t""#).unwrap();
        let mut out = Collector::default();
        while state.partitions[0].offsets.next_offset() < total {
            state.emit_reliable(&mut out, now, c.max_uncommitted).unwrap();
        }
        for o in 0..COMMIT_EVERY - 1 {
            state.partitions[0].offsets.ack(o);
        }
        assert!(!state.commit_due(&c, now), "fewer than COMMIT_EVERY done, timer not due");
        state.partitions[0].offsets.ack(COMMIT_EVERY - 1);
        assert!(state.commit_due(&c, now), "COMMIT_EVERY done: commit at once");
        assert_eq!(state.partitions[0].commit_target(Guarantee::AtLeastOnce), Some(COMMIT_EVERY));
    }

    #[test]
    fn at_most_once_emits_only_what_is_committed() {
        let mut state = open_with(5, 5..9);
        let mut out = Collector::default();
        state.emit_committed(&mut out).unwrap();
        assert!(out.emits.is_empty(), "nothing before its commit");
        assert_eq!(state.partitions[0].commit_target(Guarantee::AtMostOnce), Some(9));
        state.partitions[0].offsets.committed(7);
        state.emit_committed(&mut out).unwrap();
        assert_eq!(out.offsets(), [5, 6]);
        assert!(out.emits.iter().all(|(_, id)| id.is_none()), "unreliably");
        state.partitions[0].offsets.committed(9);
        state.emit_committed(&mut out).unwrap();
        assert_eq!(out.offsets(), [5, 6, 7, 8]);
        assert_eq!(state.partitions[0].commit_target(Guarantee::AtMostOnce), None);
        assert!(state.partitions[0].drained(Guarantee::AtMostOnce));
    }

    #[test]
    fn none_emits_everything_and_commits_the_position() {
        let mut state = open_with(0, 0..3);
        let mut out = Collector::default();
        state.emit_unreliable(&mut out).unwrap();
        assert_eq!(out.offsets(), [0, 1, 2]);
        assert!(out.emits.iter().all(|(_, id)| id.is_none()));
        assert_eq!(state.partitions[0].commit_target(Guarantee::None), Some(3));
        assert!(state.partitions[0].drained(Guarantee::None));
    }

    #[test]
    fn emits_key_value_partition_offset() {
        let mut out = Collector::default();
        let record = Record { key: None, value: Bytes::from_static(&[0xff, 0]) };
        emit(&mut out, 2, 7, &record, true).unwrap();
        let (values, id) = &out.emits[0];
        assert_eq!(values[0], Value::Null);
        assert_eq!(values[1], Value::Bytes(vec![0xff, 0]), "not UTF-8: bytes");
        assert_eq!((values[2].as_i64(), values[3].as_i64()), (Some(2), Some(7)));
        assert_eq!(id.as_ref().and_then(parse_message_id), Some((2, 7)));
    }
}
