//! LOG-1 (../shared/WORKLOADS.md) through Kafka: `squall bench log1 --broker kafka`.
//!
//! Contract: uses the Kafka cluster at `--bootstrap` (else `$KAFKA_BOOTSTRAP`), or else starts
//! a Tansu broker (see [`squall_testkit::tansu`]) in a fresh temporary directory, removed
//! afterwards. Creates two topics of 3 partitions with names of its own, fills the first with
//! M records (key = the record's number as decimal text, value = 100 bytes), then runs
//! kafka-spout (`stop_at_end`, a fresh group) → a transform (appends "!" to the value, keeps
//! the key) → kafka-sink, exactly as `squall local` would, and times it until every record is
//! acked and committed. It then reads the output topic back: `missing` counts input keys
//! absent from it, `duplicates` the records beyond one per key. The topics are left in place
//! (on Tansu they go with its directory).

use std::time::{Duration, SystemTime};

use squall_api::{BoxError, NoConfig, Registry};

use super::log1::{pipeline, value_of, Log1, Transform, PARTITIONS};
use super::TempDir;
use squall_engine::local::{self, LocalOptions};
use squall_engine::topology::{ComponentDef, TopologyDef};
use squall_kafka::client::off_runtime;
use squall_testkit::kafka as tools;
use squall_testkit::tansu::Tansu;

/// How long filling or reading back the topics may take.
const IO_TIMEOUT: Duration = Duration::from_secs(1800);

/// Runs LOG-1 through Kafka and returns its line.
pub async fn log1(b: &Log1) -> Result<String, BoxError> {
    let given =
        b.bootstrap.clone().or_else(|| std::env::var("KAFKA_BOOTSTRAP").ok()).filter(|s| !s.is_empty());
    // Declared before the broker, so it is removed after the broker is gone.
    let dir = TempDir::new("log1-kafka")?;
    let (_tansu, bootstrap) = match given {
        Some(bootstrap) => (None, bootstrap),
        None => {
            let path = dir.0.clone();
            let tansu = off_runtime("starting tansu", Duration::from_secs(120), move || {
                Tansu::start(squall_testkit::tansu::find()?, &path)
            })
            .await??;
            let bootstrap = tansu.bootstrap();
            (Some(tansu), bootstrap)
        }
    };
    let run = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let (input, output, group) = (format!("log1-in-{run}"), format!("log1-out-{run}"), format!("log1-{run}"));
    for topic in [&input, &output] {
        tools::create_topic(&bootstrap, topic, PARTITIONS as i32, Duration::from_secs(60)).await?;
    }
    let m = b.m;
    let (bs, topic) = (bootstrap.clone(), input.clone());
    off_runtime("filling the input topic", IO_TIMEOUT, move || {
        let records = (0..m).map(|i| {
            let key = i.to_string();
            let value = value_of(&key);
            (Some(key.into_bytes()), value)
        });
        tools::produce(&bs, &topic, records, IO_TIMEOUT)
    })
    .await??;

    let def = topology(&bootstrap, &input, &output, &group);
    let result = local::run(&def, &registry(), &LocalOptions::default()).await?;
    let secs = result.elapsed.as_secs_f64();
    let (bs, topic) = (bootstrap.clone(), output.clone());
    let records =
        off_runtime("reading the output topic", IO_TIMEOUT, move || tools::read_all(&bs, &topic, IO_TIMEOUT))
            .await??;
    let (missing, duplicates) = check(&records, m, &output)?;
    Ok(format!(
        "squall log1 M={} workers={} seconds={:.3} records_per_s={:.0} missing={} duplicates={}",
        b.m,
        b.workers,
        secs,
        b.m as f64 / secs,
        missing,
        duplicates
    ))
}

/// (input keys missing from the output, records beyond one per key).
fn check(records: &[tools::ReadRecord], m: u64, topic: &str) -> Result<(u64, u64), BoxError> {
    let mut seen = vec![false; m as usize];
    let mut distinct = 0u64;
    for r in records {
        let key = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok());
        match key.and_then(|k| k.parse::<usize>().ok()) {
            Some(i) if i < seen.len() => {
                if !std::mem::replace(&mut seen[i], true) {
                    distinct += 1;
                }
            }
            _ => return Err(format!("unexpected key {key:?} in {topic}/{}", r.partition).into()),
        }
        if !r.value.ends_with(b"!") {
            return Err(format!("record {key:?} in {topic}/{} was not transformed", r.partition).into());
        }
    }
    Ok((m - distinct, records.len() as u64 - distinct))
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .spout("kafka-spout", squall_kafka::spout::build)
        .basic_bolt("log1-transform", |_: NoConfig| Ok(Transform))
        .bolt("kafka-sink", squall_kafka::sink::build);
    registry
}

fn topology(bootstrap: &str, input: &str, output: &str, group: &str) -> TopologyDef {
    pipeline(
        ComponentDef::new("records", "kafka-spout")
            .set("bootstrap", bootstrap)
            .set("topic", input)
            .set("group", group),
        ComponentDef::new("sink", "kafka-sink").set("bootstrap", bootstrap).set("topic", output),
    )
}
