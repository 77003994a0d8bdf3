//! Create, fill and read back Kafka topics: what `squall bench log1 --broker kafka` and the
//! end-to-end tests need around a topology, with the same client the components use.
//!
//! Contract: every function blocks (call it off the async runtime, e.g. with
//! `squall_kafka::client::off_runtime`) and gives up with an error after its timeout; none leaves a
//! client behind. [`produce`] returns only once every record was acknowledged by the broker
//! (acks=all), or fails. [`read_all`] returns every record below the high watermarks each
//! partition had when it was called. [`committed`] lists a group's committed offsets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use squall_kafka::client::{self, Properties};

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Logs librdkafka's errors as warnings, the rest at debug level; counts failed deliveries.
#[derive(Default)]
struct ToolContext {
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for ToolContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client::log("kafka tools", level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("kafka tools: {error}: {reason}");
    }
}

impl ProducerContext for ToolContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_failure.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ToolContext {}

fn config(bootstrap: &str, fixed: &[(&str, String)]) -> Result<ClientConfig, String> {
    client::client_config("kafka tools", bootstrap, fixed, &Properties::new()).map_err(|e| e.to_string())
}

/// Creates `topic` with `partitions` partitions (replication factor 1).
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        config(bootstrap, &[])?.create().map_err(|e| format!("cannot create an admin client: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results =
        tokio::time::timeout(timeout + Duration::from_secs(5), admin.create_topics([&new], &options))
            .await
            .map_err(|_| format!("creating topic `{topic}` at {bootstrap}: no answer within {timeout:?}"))?
            .map_err(|e| format!("creating topic `{topic}` at {bootstrap}: {e}"))?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(format!("creating topic `{name}` at {bootstrap}: {code}"));
        }
    }
    Ok(())
}

/// Produces `records` (key, value) to `topic` with acks=all and waits until the broker has
/// acknowledged every one.
pub fn produce<I>(bootstrap: &str, topic: &str, records: I, timeout: Duration) -> Result<u64, String>
where
    I: IntoIterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
{
    let fixed = [("acks", "all".to_string()), ("linger.ms", "5".to_string())];
    let producer: BaseProducer<ToolContext> = config(bootstrap, &fixed)?
        .create_with_context(ToolContext::default())
        .map_err(|e| format!("cannot create a producer: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut sent = 0u64;
    for (key, value) in records {
        loop {
            let mut record = BaseRecord::to(topic).payload(&value);
            if let Some(key) = &key {
                record = record.key(key);
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() >= deadline {
                        return Err(format!("producing to `{topic}`: no room within {timeout:?}"));
                    }
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(format!("producing to `{topic}`: {e}")),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    producer.flush(left).map_err(|e| format!("producing to `{topic}`: not all acknowledged: {e}"))?;
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = context.first_failure.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        return Err(format!("producing to `{topic}`: {failed} of {sent} records failed ({first})"));
    }
    Ok(sent)
}

/// A consumer for reading partitions from given offsets. It never commits; librdkafka wants a
/// group to assign partitions all the same.
fn reader(bootstrap: &str) -> Result<BaseConsumer<ToolContext>, String> {
    let fixed = [
        ("group.id", "squall-tools-reader".to_string()),
        ("enable.auto.commit", "false".to_string()),
        ("enable.partition.eof", "false".to_string()),
        ("fetch.wait.max.ms", "50".to_string()),
    ];
    config(bootstrap, &fixed)?
        .create_with_context(ToolContext::default())
        .map_err(|e| format!("cannot create a consumer: {e}"))
}

/// The partitions of `topic` and each one's (low, high) watermarks.
pub fn watermarks(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<(i64, i64)>, String> {
    let consumer = reader(bootstrap)?;
    watermarks_with(&consumer, bootstrap, topic, Instant::now() + timeout)
}

fn watermarks_with(
    consumer: &BaseConsumer<ToolContext>,
    bootstrap: &str,
    topic: &str,
    deadline: Instant,
) -> Result<Vec<(i64, i64)>, String> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let metadata =
        consumer.fetch_metadata(Some(topic), left()).map_err(|e| format!("metadata of `{topic}`: {e}"))?;
    let count = client::partition_count(&metadata, topic, bootstrap).map_err(|e| e.to_string())?;
    drop(metadata);
    (0..count as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, left())
                .map_err(|e| format!("watermarks of `{topic}` partition {p}: {e}"))
        })
        .collect()
}

/// Every record of `topic` below the high watermarks its partitions have now, partition by
/// partition in offset order.
pub fn read_all(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<ReadRecord>, String> {
    let deadline = Instant::now() + timeout;
    let consumer = reader(bootstrap)?;
    let marks = watermarks_with(&consumer, bootstrap, topic, deadline)?;
    let mut assignment = TopicPartitionList::new();
    let mut left = 0usize;
    let mut next: Vec<i64> = Vec::with_capacity(marks.len());
    for (p, &(low, high)) in marks.iter().enumerate() {
        if high > low {
            assignment
                .add_partition_offset(topic, p as i32, Offset::Offset(low))
                .map_err(|e| format!("assigning `{topic}` partition {p}: {e}"))?;
            left += 1;
        }
        next.push(low);
    }
    let assigned = consumer.assign(&assignment);
    drop(assignment);
    assigned.map_err(|e| format!("assigning `{topic}`: {e}"))?;
    let mut records = Vec::new();
    while left > 0 {
        if Instant::now() >= deadline {
            return Err(format!("reading `{topic}`: not every record arrived within {timeout:?}"));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message.map_err(|e| format!("reading `{topic}`: {e}"))?;
        let p = message.partition() as usize;
        let (offset, high) = (message.offset(), marks[p].1);
        if offset < next[p] || offset >= high {
            continue;
        }
        next[p] = offset + 1;
        records.push(ReadRecord {
            partition: message.partition(),
            offset,
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
        if next[p] >= high {
            left -= 1;
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// The committed offsets of `group` for each partition of `topic` (None: nothing committed).
pub fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<Option<i64>>, String> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer<ToolContext> = config(bootstrap, &[("group.id", group.to_string())])?
        .create_with_context(ToolContext::default())
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let count = watermarks_with(&consumer, bootstrap, topic, deadline)?.len();
    let mut request = TopicPartitionList::new();
    request.add_partition_range(topic, 0, count as i32 - 1);
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let list = consumer
        .committed_offsets(request, left)
        .map_err(|e| format!("committed offsets of `{group}` on `{topic}`: {e}"))?;
    let mut offsets = vec![None; count];
    for e in list.elements_for_topic(topic) {
        if let (Offset::Offset(o), Some(slot)) = (e.offset(), offsets.get_mut(e.partition() as usize)) {
            *slot = Some(o);
        }
    }
    drop(list); // before the consumer: a live list keeps it from closing
    Ok(offsets)
}
