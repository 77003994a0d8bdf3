//! A Tansu broker (Kafka-API compatible) for the Kafka tests, one per test.
//!
//! [`TansuBroker::start`] runs `tansu broker` on 127.0.0.1 and a free port with the sqlite
//! storage engine in a fresh directory of the test's [`TempDir`], and returns once it answers;
//! [`TansuBroker::restart`] kills it (SIGKILL) and starts it again on the same port and data.
//! It is killed on drop. The binary is found, or installed once on first use, by
//! `squall_testkit::tools` (about 10 minutes of building); a test that cannot have it fails
//! saying why. Every helper panics, with the reason, on failure.

use std::time::Duration;

use squall_testkit::kafka::{self as tools, ReadRecord};
use squall_testkit::tansu::{self, Tansu};

use crate::TempDir;

/// How long producing, reading back or listing offsets may take.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

pub struct TansuBroker {
    tansu: Tansu,
}

impl TansuBroker {
    /// Starts a broker with its data in `dir`/tansu.
    #[track_caller]
    pub fn start(dir: &TempDir) -> TansuBroker {
        let data = dir.join("tansu");
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("cannot create {}: {e}", data.display()));
        let bin = tansu::require().unwrap_or_else(|e| panic!("the Kafka tests need Tansu: {e}"));
        match Tansu::start(bin, &data) {
            Ok(tansu) => TansuBroker { tansu },
            Err(e) => panic!("cannot start the Tansu broker the Kafka tests need: {e}"),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        self.tansu.bootstrap()
    }

    /// `tansu topic create NAME --broker tcp://127.0.0.1:PORT --partitions N`.
    #[track_caller]
    pub fn create_topic(&self, name: &str, partitions: u32) {
        if let Err(e) = self.tansu.create_topic(name, partitions) {
            panic!("{e}");
        }
    }

    /// Kills the broker and starts it again on the same port with the same data.
    #[track_caller]
    pub fn restart(&mut self) {
        if let Err(e) = self.tansu.restart() {
            panic!("cannot restart tansu: {e}");
        }
    }

    /// Produces records keyed `keys` (decimal text), each valued `value <key>`, and waits until
    /// the broker acknowledged them all.
    #[track_caller]
    pub fn produce_numbered(&self, topic: &str, keys: std::ops::Range<u64>) {
        let records = keys.map(|k| (Some(k.to_string().into_bytes()), format!("value {k}").into_bytes()));
        if let Err(e) = tools::produce(&self.bootstrap(), topic, records, IO_TIMEOUT) {
            panic!("{e}");
        }
    }

    /// Every record of `topic` (below the high watermarks of now).
    #[track_caller]
    pub fn read_all(&self, topic: &str) -> Vec<ReadRecord> {
        tools::read_all(&self.bootstrap(), topic, IO_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `group`'s committed offset of each partition of `topic`.
    #[track_caller]
    pub fn committed(&self, group: &str, topic: &str) -> Vec<Option<i64>> {
        tools::committed(&self.bootstrap(), group, topic, IO_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The high watermark of each partition of `topic`.
    #[track_caller]
    pub fn ends(&self, topic: &str) -> Vec<i64> {
        let marks = tools::watermarks(&self.bootstrap(), topic, IO_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        marks.into_iter().map(|(_, high)| high).collect()
    }
}

/// (keys 0..count missing from `records`, records beyond one per key); keys are decimal text.
#[track_caller]
pub fn missing_and_duplicates(records: &[ReadRecord], count: u64) -> (u64, u64) {
    crate::pipeline::missing_and_duplicates(records.iter().map(|r| r.key.as_deref()), count)
}
