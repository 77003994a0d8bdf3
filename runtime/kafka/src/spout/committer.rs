//! `kafka-spout`'s committer: the thread that commits the spout's offsets, one commit at a
//! time, and the commit requests and outcomes it exchanges with the spout.
//!
//! Contract: librdkafka tells the outcome of a manual commit only to its caller, so commits
//! are synchronous, on a thread of the spout's own: [`start`] takes requests — (partition,
//! offset) pairs to commit together, each with the spout's metadata (its deployment) — in
//! order, and answers each with a [`CommitOutcome`]. The thread ends when the spout drops its
//! side of the requests, and holds the consumer until then. [`commit_list`] is the list a
//! commit sends, also for the last commit at close.

use std::sync::{mpsc, Arc};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaConsumer;

/// Why a commit did not happen; the message is what the spout reports.
#[derive(Debug, thiserror::Error)]
pub(super) enum CommitError {
    /// The broker (or librdkafka) refused or lost it; it is retried.
    #[error("commit failed: {0}")]
    Refused(#[from] KafkaError),
    /// The committer thread ended: no commit can be made any more.
    #[error("commit failed: the commit thread is gone")]
    ThreadGone,
}

/// What the committer thread hands the spout after each commit.
pub(super) struct CommitOutcome {
    /// The (partition, offset) pairs committed, or why the commit failed.
    pub result: Result<Vec<(i32, u64)>, CommitError>,
}

/// Commit requests: (partition, offset) pairs to commit together.
pub(super) type CommitRequests = mpsc::Sender<Vec<(i32, u64)>>;

/// Starts the committer thread (see the module docs) for `topic`, committing with `metadata`.
pub(super) fn start(
    consumer: Arc<KafkaConsumer>,
    topic: String,
    metadata: String,
) -> std::io::Result<(CommitRequests, mpsc::Receiver<CommitOutcome>)> {
    let (requests, incoming) = mpsc::channel::<Vec<(i32, u64)>>();
    let (answer, outcomes) = mpsc::channel();
    std::thread::Builder::new().name("squall-kafka-commit".into()).spawn(move || {
        while let Ok(targets) = incoming.recv() {
            let tpl = commit_list(&topic, &metadata, &targets);
            let committed = consumer.commit(&tpl, CommitMode::Sync);
            drop(tpl); // before the consumer can be dropped
            let result = committed.map(|()| targets).map_err(CommitError::from);
            if answer.send(CommitOutcome { result }).is_err() {
                break;
            }
        }
    })?;
    Ok((requests, outcomes))
}

/// A commit request: each (partition, offset) with the spout's metadata.
pub(super) fn commit_list(topic: &str, metadata: &str, targets: &[(i32, u64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(targets.len());
    for &(partition, offset) in targets {
        let mut element = tpl.add_partition(topic, partition);
        // Offsets below 2^48 always fit.
        let _ = element.set_offset(Offset::Offset(offset as i64));
        element.set_metadata(metadata);
    }
    tpl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_list_carries_each_offset_with_the_metadata() {
        let tpl = commit_list("t", "squall:top:1", &[(0, 5), (2, 9)]);
        let elements = tpl.elements_for_topic("t");
        let got: Vec<_> =
            elements.iter().map(|e| (e.partition(), e.offset(), e.metadata().to_string())).collect();
        assert_eq!(
            got,
            [
                (0, Offset::Offset(5), "squall:top:1".to_string()),
                (2, Offset::Offset(9), "squall:top:1".to_string())
            ]
        );
    }

    #[test]
    fn commit_errors_read_as_before() {
        assert_eq!(CommitError::ThreadGone.to_string(), "commit failed: the commit thread is gone");
    }
}
