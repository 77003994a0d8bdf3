//! `kafka-spout`'s start-up: finding the task's partitions, the group's committed offsets,
//! and where each partition starts — on a first start or a restart.
//!
//! Contract: [`Setup::run`] (every call in it blocks: run it off the async runtime) reads the
//! topic's partitions, takes partition p when p mod tasks is the task's index, reads the
//! group's committed offsets and each partition's watermarks, decides each start with
//! [`start_offset`] under `first_poll`, assigns the partitions to the consumer at those
//! offsets and gives each a queue of its own. A partition's open is a *restart* when the
//! committed offset carries this deployment's metadata, or when a spout of this process
//! opened the same (deployment, group, topic, partition) before: the deployment is the
//! context's `topology_id`, so restarts are told exactly per deployment. Errors name the
//! topic (and partition) and the call that failed; a start that is not what was asked for
//! (retention passed the committed offset, or it lies past the end) comes with a note.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::config::FirstPoll;
use super::{KafkaConsumer, SpoutContext, MAX_OFFSET, MAX_PARTITIONS};
use crate::client::{self, SETUP_TIMEOUT};
use crate::error::{Error, TopicError};

/// One partition as found at open.
pub(super) struct Found {
    pub partition: i32,
    pub queue: Option<PartitionQueue<SpoutContext>>,
    pub start: u64,
    pub high: u64,
    pub note: Option<String>,
}

/// What open learns from the broker, on a thread of its own (every call here blocks).
pub(super) struct Setup {
    /// The context's `topology_id`.
    pub deployment: String,
    pub group: String,
    pub topic: String,
    pub bootstrap: String,
    pub first_poll: FirstPoll,
    pub metadata: String,
    pub task: usize,
    pub tasks: usize,
}

/// The (deployment, group, topic, partition) the spouts of this process have opened: opening
/// one again is a restart within the deployment.
type OpenedKey = (String, String, String, i32);
static OPENED: Mutex<BTreeSet<OpenedKey>> = Mutex::new(BTreeSet::new());

impl Setup {
    /// Whether a spout of this process opened `partition` of the topic for the group in this
    /// deployment before; notes that one has now.
    fn opened_before(&self, partition: i32) -> bool {
        let key = (self.deployment.clone(), self.group.clone(), self.topic.clone(), partition);
        let mut opened = OPENED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        !opened.insert(key)
    }

    /// This task's partitions with their start offsets, assigned to the consumer.
    pub fn run(self, consumer: &Arc<KafkaConsumer>) -> Result<Vec<Found>, Error> {
        let (topic, bootstrap) = (&self.topic, &self.bootstrap);
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let metadata = consumer.fetch_metadata(Some(topic), left()).map_err(|source| {
            Error::kafka(format!("cannot read the metadata of topic `{topic}` at {bootstrap}"), source)
        })?;
        let count = client::partition_count(&metadata, topic, bootstrap)?;
        drop(metadata);
        if count > MAX_PARTITIONS {
            return Err(
                TopicError::TooManyPartitions { topic: topic.clone(), max: Some(MAX_PARTITIONS) }.into()
            );
        }
        let mine: Vec<i32> = (0..count as i32).filter(|p| *p as usize % self.tasks == self.task).collect();
        if mine.is_empty() {
            return Ok(Vec::new());
        }

        let committed = {
            let mut request = TopicPartitionList::with_capacity(mine.len());
            for &p in &mine {
                request.add_partition(topic, p);
            }
            let list = consumer.committed_offsets(request, left()).map_err(|source| {
                Error::kafka(format!("cannot read the committed offsets of topic `{topic}`"), source)
            })?;
            let committed: HashMap<i32, (Option<u64>, String)> = list
                .elements_for_topic(topic)
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) if o >= 0 && e.error().is_ok() => Some(o as u64),
                        _ => None,
                    };
                    (e.partition(), (offset, e.metadata().to_string()))
                })
                .collect();
            drop(list); // before the consumer can be: a live list keeps it from closing
            committed
        };

        let mut found = Vec::with_capacity(mine.len());
        let mut assignment = TopicPartitionList::with_capacity(mine.len());
        for &p in &mine {
            let (low, high) = consumer.fetch_watermarks(topic, p, left()).map_err(|source| {
                Error::kafka(format!("cannot read the offsets of `{topic}` partition {p}"), source)
            })?;
            let (low, high) = (low.max(0) as u64, high.max(0) as u64);
            if high >= MAX_OFFSET {
                return Err(Error::Other(format!(
                    "`{topic}` partition {p}: offsets past 2^48 are not supported"
                )));
            }
            let (offset, committed_metadata) = committed.get(&p).cloned().unwrap_or((None, String::new()));
            let restart = committed_metadata == self.metadata || self.opened_before(p);
            let (start, note) = start_offset(self.first_poll, offset, restart, low, high);
            let note = note.map(|n| format!("`{topic}` partition {p}: {n}"));
            let _ = assignment.add_partition_offset(topic, p, Offset::Offset(start as i64));
            found.push(Found { partition: p, queue: None, start, high, note });
        }
        let assigned = consumer.assign(&assignment);
        drop(assignment);
        assigned
            .map_err(|source| Error::kafka(format!("cannot assign the partitions of `{topic}`"), source))?;
        // Each partition's records in a queue of its own (after assign, which undoes splits):
        // a partition with no room is simply not polled, and its fetcher stops when its queue
        // is full, while the others go on.
        for f in &mut found {
            f.queue = consumer.split_partition_queue(topic, f.partition);
            if f.queue.is_none() {
                let what = format!("cannot give `{topic}` partition {} a queue of its own", f.partition);
                return Err(Error::Other(what));
            }
        }
        Ok(found)
    }
}

/// Where a partition starts reading: `committed` is the group's committed offset, `restart`
/// whether this deployment committed it, `low`..`high` the records the partition holds. Also
/// says why, when the start is not what was asked for.
pub(super) fn start_offset(
    first_poll: FirstPoll,
    committed: Option<u64>,
    restart: bool,
    low: u64,
    high: u64,
) -> (u64, Option<String>) {
    let resume = match first_poll {
        FirstPoll::CommittedElseEarliest => committed,
        FirstPoll::Earliest | FirstPoll::Latest => committed.filter(|_| restart),
    };
    match resume {
        Some(offset) if offset < low => {
            (low, Some(format!("committed offset {offset} was removed by retention; resuming at {low}")))
        }
        Some(offset) if offset > high => (
            high,
            Some(format!("committed offset {offset} is past the end of the partition; resuming at {high}")),
        ),
        Some(offset) => (offset, None),
        None if first_poll == FirstPoll::Latest => (high, None),
        None => (low, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_poll_on_first_start_and_restart() {
        use FirstPoll::*;
        // (first_poll, committed, restart) -> start, for a partition holding 10..20.
        let cases = [
            (CommittedElseEarliest, None, false, 10),
            (CommittedElseEarliest, Some(15), false, 15),
            (CommittedElseEarliest, Some(15), true, 15),
            (Earliest, None, false, 10),
            (Earliest, Some(15), false, 10),
            (Earliest, Some(15), true, 15),
            (Latest, None, false, 20),
            (Latest, Some(15), false, 20),
            (Latest, Some(15), true, 15),
        ];
        for (first_poll, committed, restart, start) in cases {
            let (got, note) = start_offset(first_poll, committed, restart, 10, 20);
            assert_eq!(got, start, "{first_poll:?} committed {committed:?} restart {restart}");
            assert_eq!(note, None);
        }
        let (start, note) = start_offset(CommittedElseEarliest, Some(3), false, 10, 20);
        assert_eq!(start, 10);
        assert!(note.unwrap().contains("retention"));
        let (start, note) = start_offset(Earliest, Some(30), true, 10, 20);
        assert_eq!(start, 20);
        assert!(note.unwrap().contains("past the end"));
    }
}
