//! The background flusher: one std thread per [`Log`], which fsyncs partitions and group files
//! of `Interval` topics once their interval after the first unsynced write is up, and applies
//! retention every [`RETENTION_EVERY`].
//!
//! Contract: an item scheduled with delay `d` is fsynced no later than about `d` after it was
//! scheduled (later only if fsyncs themselves are slow); the thread holds only a
//! [`Weak`] reference to its log (so it never keeps the log alive) and stops promptly once
//! [`Flusher::shutdown`] is called, which the log's `Drop` does. Errors are logged: a failed
//! fsync also fails the partition for good (see `partition.rs`).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::groups::Group;
use super::partition::Partition;
use super::util::{lock, now_ms};
use super::Log;
use crate::Result;

/// How often retention runs in the background.
pub(crate) const RETENTION_EVERY: Duration = Duration::from_secs(3);

pub(crate) enum FlushItem {
    Partition(Arc<Partition>),
    Group(Arc<Group>),
}

impl FlushItem {
    fn flush(&self) -> Result<()> {
        match self {
            FlushItem::Partition(p) => p.flush_dirty(),
            FlushItem::Group(g) => g.flush_dirty(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Flusher {
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    items: Vec<(Instant, FlushItem)>,
    shutdown: bool,
}

impl Flusher {
    /// Has `item` fsynced `after` from now.
    pub(crate) fn schedule(&self, item: FlushItem, after: Duration) {
        let due = Instant::now() + after;
        let mut queue = lock(&self.queue);
        let earliest = queue.items.iter().map(|(t, _)| *t).min();
        queue.items.push((due, item));
        drop(queue);
        if earliest.is_none_or(|t| due < t) {
            self.wake.notify_one();
        }
    }

    /// Stops the thread (soon, without flushing what is queued: the log's Drop does that).
    pub(crate) fn shutdown(&self) {
        lock(&self.queue).shutdown = true;
        self.wake.notify_all();
    }

    /// Starts the thread for `log`.
    pub(crate) fn spawn(self: &Arc<Self>, log: Weak<Log>) -> std::io::Result<JoinHandle<()>> {
        let flusher = self.clone();
        std::thread::Builder::new().name("squall-log-flusher".into()).spawn(move || flusher.run(log))
    }

    fn run(&self, log: Weak<Log>) {
        let mut next_retention = Instant::now() + RETENTION_EVERY;
        loop {
            let mut due = Vec::new();
            {
                let mut queue = lock(&self.queue);
                loop {
                    if queue.shutdown {
                        return;
                    }
                    let now = Instant::now();
                    let mut i = 0;
                    while i < queue.items.len() {
                        if queue.items[i].0 <= now {
                            due.push(queue.items.swap_remove(i).1);
                        } else {
                            i += 1;
                        }
                    }
                    if !due.is_empty() || now >= next_retention {
                        break;
                    }
                    let until = queue.items.iter().map(|(t, _)| *t).min().unwrap_or(next_retention);
                    let until = until.min(next_retention);
                    queue = self
                        .wake
                        .wait_timeout(queue, until.saturating_duration_since(now))
                        .map_or_else(|e| e.into_inner().0, |(q, _)| q);
                }
            }
            for item in &due {
                if let Err(e) = item.flush() {
                    tracing::error!("background fsync failed: {e}");
                }
            }
            drop(due);
            if Instant::now() >= next_retention {
                next_retention = Instant::now() + RETENTION_EVERY;
                let Some(log) = log.upgrade() else { return };
                log.apply_retention(now_ms());
            }
        }
    }
}
