//! STUB: the TCP client of a `squall broker` server; the implementation replaces this file.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{Fetched, NewRecord, Result, TopicConfig, TopicInfo};

#[derive(Clone)]
pub struct RemoteClient {}

#[allow(unused_variables)]
impl RemoteClient {
    pub async fn connect(addr: &str) -> Result<RemoteClient> {
        unimplemented!()
    }
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        unimplemented!()
    }
    pub async fn topics(&self) -> Result<Vec<String>> {
        unimplemented!()
    }
    pub async fn describe(&self, topic: &str) -> Result<TopicInfo> {
        unimplemented!()
    }
    /// Sends the append now (appends to one partition are applied in the order of these
    /// calls); the receiver gets the first record's offset once the server reports them durable.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<NewRecord>,
    ) -> Result<oneshot::Receiver<Result<u64>>> {
        unimplemented!()
    }
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Fetched> {
        unimplemented!()
    }
    pub async fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        unimplemented!()
    }
    pub async fn committed(&self, group: &str, topic: &str) -> Result<Vec<Option<u64>>> {
        unimplemented!()
    }
}
