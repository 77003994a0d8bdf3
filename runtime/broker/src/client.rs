//! [`Broker`]: one handle over the embedded log of this process or a `squall broker` server,
//! so that spouts, sinks and the CLI are written once.
//!
//! Contract: `"embedded"` means the log in [`super::data_dir`], shared by every user in this
//! process; anything else is a server's `host:port`. Appends to one partition through one
//! handle are applied in call order; [`Pending`] resolves once they are durable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::log::Log;
use super::remote::RemoteClient;
use super::{BrokerError, Fetched, NewRecord, Result, TopicConfig, TopicInfo};

/// A handle to a broker; clones share it.
#[derive(Clone)]
pub enum Broker {
    Embedded(Arc<Log>),
    Remote(RemoteClient),
}

impl Broker {
    /// `"embedded"`: this process's log in [`super::data_dir`]; else a server's address.
    pub async fn connect(spec: &str) -> Result<Broker> {
        if spec == "embedded" {
            Ok(Broker::Embedded(Log::shared(&super::data_dir())?))
        } else {
            Ok(Broker::Remote(RemoteClient::connect(spec).await?))
        }
    }

    /// Where this handle goes, for messages.
    pub fn describe_target(&self) -> String {
        match self {
            Broker::Embedded(log) => format!("the embedded log in {}", log.dir().display()),
            Broker::Remote(client) => format!("the broker at {}", client.addr()),
        }
    }

    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        match self {
            Broker::Embedded(log) => log.create_topic(name, config),
            Broker::Remote(client) => client.create_topic(name, config).await,
        }
    }

    pub async fn topics(&self) -> Result<Vec<String>> {
        match self {
            Broker::Embedded(log) => Ok(log.topics()),
            Broker::Remote(client) => client.topics().await,
        }
    }

    pub async fn describe(&self, topic: &str) -> Result<TopicInfo> {
        match self {
            Broker::Embedded(log) => log.describe(topic),
            Broker::Remote(client) => client.describe(topic).await,
        }
    }

    /// Appends `records` to a partition; the returned [`Pending`] resolves to the first
    /// record's offset once they are durable.
    pub async fn produce(&self, topic: &str, partition: u32, records: Vec<NewRecord>) -> Result<Pending> {
        match self {
            Broker::Embedded(log) => {
                let n = records.len() as u64;
                let base = log.append(topic, partition, &records)?;
                Ok(Pending(PendingInner::Embedded {
                    log: log.clone(),
                    topic: topic.into(),
                    partition,
                    base,
                    end: base + n,
                }))
            }
            Broker::Remote(client) => {
                Ok(Pending(PendingInner::Remote(client.produce(topic, partition, records).await?)))
            }
        }
    }

    /// Whole records of a partition from `offset` on (about `max_bytes`); at its end, waits up
    /// to `wait` for new ones.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Fetched> {
        match self {
            Broker::Embedded(log) => log.fetch(topic, partition, offset, max_bytes, wait).await,
            Broker::Remote(client) => client.fetch(topic, partition, offset, max_bytes, wait).await,
        }
    }

    pub async fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        match self {
            Broker::Embedded(log) => log.commit(group, topic, partition, offset),
            Broker::Remote(client) => client.commit(group, topic, partition, offset).await,
        }
    }

    pub async fn committed(&self, group: &str, topic: &str) -> Result<Vec<Option<u64>>> {
        match self {
            Broker::Embedded(log) => log.committed(group, topic),
            Broker::Remote(client) => client.committed(group, topic).await,
        }
    }
}

/// An append on its way to durability.
pub struct Pending(PendingInner);

enum PendingInner {
    Embedded { log: Arc<Log>, topic: Arc<str>, partition: u32, base: u64, end: u64 },
    Remote(oneshot::Receiver<Result<u64>>),
}

impl Pending {
    /// The first record's offset if the append is durable by now, without waiting.
    pub fn try_done(&mut self) -> Option<Result<u64>> {
        match &mut self.0 {
            PendingInner::Embedded { log, topic, partition, base, end } => {
                match log.durable(topic, *partition) {
                    Ok(durable) if durable >= *end => Some(Ok(*base)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            }
            PendingInner::Remote(rx) => match rx.try_recv() {
                Ok(result) => Some(result),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(lost())),
            },
        }
    }

    /// Waits until the append is durable; returns the first record's offset.
    pub async fn wait(self) -> Result<u64> {
        match self.0 {
            PendingInner::Embedded { log, topic, partition, base, end } => {
                log.wait_durable(&topic, partition, end).await?;
                Ok(base)
            }
            PendingInner::Remote(rx) => rx.await.unwrap_or_else(|_| Err(lost())),
        }
    }
}

fn lost() -> BrokerError {
    BrokerError::Connection {
        addr: "server".into(),
        message: "connection lost before the append was confirmed".into(),
    }
}
