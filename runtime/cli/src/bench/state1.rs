//! STATE-1 (docs/benchmarks.md): counting a topic's records into checkpointed state.
//!
//! Contract: in a fresh temporary data directory, fills a topic of 3 partitions with M
//! records whose value is a word of a 10,000-word vocabulary (record i: `w` + (i · 7919 mod
//! 10,000)), then runs log-spout (with `stop_at_end`) → a stateful count (parallelism P = 2,
//! fields grouping on the value) with the state in the `log` backend of that directory,
//! checkpoints every second, with the guarantee asked for, exactly as `squall local` would,
//! and times it until every record is acked and the last checkpoint committed. It then reads
//! the committed counts back from the backend, as `squall state dump` does: `exact` says they
//! equal the true counts; `ok` says exactly_once gave exact counts, or at_least_once none
//! below the truth. The directory is removed.

use std::collections::HashMap;

use bytes::Bytes;
use squall_api::{
    async_trait, values, BackendConfig, BasicCollector, BoxError, Guarantee, KeyValueState, NoConfig,
    OutputDeclarer, Registry, StatefulBolt, Tuple,
};

use super::TempDir;
use squall_broker::{self as broker, Broker, NewRecord, TopicConfig};
use squall_engine::local::{self, LocalOptions};
use squall_engine::topology::{ComponentDef, GroupingDef, Settings, StateSettings, TopologyDef};

/// STATE-1's parameters.
#[derive(Debug, Clone)]
pub struct State1 {
    pub m: u64,
    pub guarantee: Guarantee,
    pub workers: usize,
}

const PARTITIONS: u32 = 3;
const VOCABULARY: u64 = 10_000;
const INPUT: &str = "state1-in";
const NAME: &str = "state1";

/// Record `i`'s word.
fn word(i: u64) -> String {
    format!("w{}", i.wrapping_mul(7919) % VOCABULARY)
}

/// Runs STATE-1 and returns its line.
pub async fn state1(b: &State1) -> Result<String, BoxError> {
    super::single_process(b.workers)?;
    let dir = TempDir::new("state1")?;
    broker::set_data_dir(dir.0.clone());
    if broker::data_dir() != dir.0 {
        return Err("the data directory was already set in this process".into());
    }
    let broker = Broker::connect("embedded").await?;
    broker.create_topic(INPUT, TopicConfig::new(PARTITIONS)).await?;
    fill(&broker, b.m).await?;

    let mut registry = Registry::new();
    registry
        .rewindable_spout("log-spout", broker::spout::build)
        .stateful_bolt("state1-count", |_: NoConfig| Ok(Count))
        .state_backend("log", broker::state::factory);
    let def = topology(b.guarantee);
    let result = local::run(&def, &registry, &LocalOptions::default()).await?;
    let secs = result.elapsed.as_secs_f64();

    let config = BackendConfig { topology: NAME, table: &def.settings.state.table };
    let backend = registry.build_state_backend("log", &config)?;
    let mut counted: HashMap<String, u64> = HashMap::new();
    for (k, v) in backend.load("count").await? {
        counted.insert(squall_api::state::decode(&k)?, squall_api::state::decode(&v)?);
    }
    let mut truth: HashMap<String, u64> = HashMap::new();
    for i in 0..b.m {
        *truth.entry(word(i)).or_default() += 1;
    }
    let exact = counted == truth;
    let none_lower = truth.iter().all(|(w, n)| counted.get(w).is_some_and(|c| c >= n));
    let ok = match b.guarantee {
        Guarantee::ExactlyOnce => exact,
        Guarantee::AtLeastOnce => none_lower,
    };
    Ok(format!(
        "squall state1 M={} guarantee={} workers={} seconds={:.3} records_per_s={:.0} exact={exact} ok={ok}",
        b.m,
        b.guarantee,
        b.workers,
        secs,
        b.m as f64 / secs,
    ))
}

/// log-spout → count, the state in the log backend of this process's data directory.
fn topology(guarantee: Guarantee) -> TopologyDef {
    let mut table = toml::Table::new();
    table.insert("backend".into(), "log".into());
    table.insert("checkpoint_interval_ms".into(), 1000.into());
    TopologyDef {
        name: NAME.into(),
        workers: 1,
        settings: Settings {
            max_spout_pending: 0,
            guarantee,
            state: StateSettings { backend: "log".into(), table, ..StateSettings::default() },
            ..Settings::default()
        },
        spouts: vec![ComponentDef::new("records", "log-spout")
            .set("topic", INPUT)
            .set("group", NAME)
            .set("stop_at_end", true)
            .emits(["key", "value", "partition", "offset"])],
        bolts: vec![ComponentDef::new("count", "state1-count")
            .parallelism(2)
            .stateful()
            .input("records", GroupingDef::Fields(vec!["value".into()]))
            .emits(["word", "count"])],
    }
}

/// Appends M records, spread over the partitions by their number.
async fn fill(broker: &Broker, m: u64) -> Result<(), BoxError> {
    let mut batches: Vec<Vec<NewRecord>> = vec![Vec::new(); PARTITIONS as usize];
    let mut pending = Vec::new();
    for i in 0..m {
        let p = (i % PARTITIONS as u64) as usize;
        batches[p].push(NewRecord { key: None, value: Bytes::from(word(i)), timestamp: None });
        if batches[p].len() == 1000 || i + 1 == m {
            for (p, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() {
                    pending.push(broker.produce(INPUT, p as u32, std::mem::take(batch)).await?);
                }
            }
        }
    }
    for p in pending {
        p.wait().await?;
    }
    Ok(())
}

/// Counts each word into the state; emits (word, count).
struct Count;

#[async_trait]
impl StatefulBolt for Count {
    type Key = String;
    type Value = u64;

    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "count"]);
    }

    async fn execute(
        &mut self,
        input: &Tuple,
        state: &mut KeyValueState<String, u64>,
        out: &mut BasicCollector<'_>,
    ) -> Result<(), BoxError> {
        let word = input.get_str("value")?;
        let count = match state.get_mut(word) {
            Some(count) => count,
            None => state.get_mut_or_insert_with(word.to_string(), || 0),
        };
        *count += 1;
        let count = *count as i64;
        out.emit(values![word, count])?;
        Ok(())
    }
}
