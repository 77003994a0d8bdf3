//! LOG-1 (docs/benchmarks.md) through Kafka: `squall bench log1 --broker kafka`.
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

use squall_api::{async_trait, BoxError, Registry};

use super::log1::{run, value_of, Log1, Log1Broker, Tally, PARTITIONS};
use super::TempDir;
use squall_engine::topology::ComponentDef;
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
    let run_id = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let kafka = Kafka {
        bootstrap,
        input: format!("log1-in-{run_id}"),
        output: format!("log1-out-{run_id}"),
        group: format!("log1-{run_id}"),
    };
    run(b, &kafka).await
}

/// A Kafka cluster, with topics and a group of the run's own.
struct Kafka {
    bootstrap: String,
    input: String,
    output: String,
    group: String,
}

#[async_trait]
impl Log1Broker for Kafka {
    async fn create_and_fill(&self, m: u64) -> Result<(), BoxError> {
        for topic in [&self.input, &self.output] {
            tools::create_topic(&self.bootstrap, topic, PARTITIONS as i32, Duration::from_secs(60)).await?;
        }
        let (bs, topic) = (self.bootstrap.clone(), self.input.clone());
        off_runtime("filling the input topic", IO_TIMEOUT, move || {
            let records = (0..m).map(|i| {
                let key = i.to_string();
                let value = value_of(&key);
                (Some(key.into_bytes()), value)
            });
            tools::produce(&bs, &topic, records, IO_TIMEOUT)
        })
        .await??;
        Ok(())
    }

    fn register(&self, registry: &mut Registry) {
        registry
            .spout("kafka-spout", squall_kafka::spout::build)
            .bolt("kafka-sink", squall_kafka::sink::build);
    }

    fn components(&self) -> (ComponentDef, ComponentDef) {
        (
            ComponentDef::new("records", "kafka-spout")
                .set("bootstrap", self.bootstrap.as_str())
                .set("topic", self.input.as_str())
                .set("group", self.group.as_str()),
            ComponentDef::new("sink", "kafka-sink")
                .set("bootstrap", self.bootstrap.as_str())
                .set("topic", self.output.as_str()),
        )
    }

    async fn read_back(&self, tally: &mut Tally) -> Result<(), BoxError> {
        let (bs, topic) = (self.bootstrap.clone(), self.output.clone());
        let records = off_runtime("reading the output topic", IO_TIMEOUT, move || {
            tools::read_all(&bs, &topic, IO_TIMEOUT)
        })
        .await??;
        for r in &records {
            tally.count(r.key.as_deref(), &r.value, &self.output, r.partition as i64)?;
        }
        Ok(())
    }
}
