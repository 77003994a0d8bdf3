//! `file-sink` (basic bolt): appends each input to a file as one JSON object per line,
//! mapping field name to value. Declares no outputs.
//!
//! Config: `path` (required).
//!
//! Contract: `prepare` creates the file's parent directories and opens it for appending (an
//! existing file is kept). Each line is handed to the OS in a single write before `execute`
//! returns, so an input is acked only once its line is written, and tasks appending to the
//! same file do not interleave within a line. A write error fails the input. Tick tuples are
//! ignored.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use serde::ser::{Serialize, Serializer};
use serde::Deserialize;
use squall_api::{async_trait, BasicBolt, BasicCollector, BoxError, TopologyContext, Tuple};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub path: PathBuf,
}

/// The `file-sink` factory. The file is opened in `prepare`, not here: building a component
/// to validate a topology must not create files.
pub fn build(config: Config) -> Result<FileSink, BoxError> {
    if config.path.as_os_str().is_empty() {
        return Err("path must not be empty".into());
    }
    Ok(FileSink { path: config.path, file: None, line: Vec::new() })
}

pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
    /// The line being written, reused from one input to the next.
    line: Vec<u8>,
}

/// A tuple as a JSON object: field name → value.
struct JsonRow<'a>(&'a Tuple);

impl Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.fields().iter().zip(self.0.values()))
    }
}

#[async_trait]
impl BasicBolt for FileSink {
    async fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), BoxError> {
        let path = &self.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {} for appending: {e}", path.display()))?;
        self.file = Some(file);
        Ok(())
    }

    async fn execute(&mut self, input: &Tuple, _out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        if input.is_tick() {
            return Ok(());
        }
        let file = self.file.as_mut().ok_or("file-sink used before prepare")?;
        self.line.clear();
        serde_json::to_writer(&mut self.line, &JsonRow(input))?;
        self.line.push(b'\n');
        // A plain `File` has no buffer: `write_all` hands the line to the OS, in one write
        // unless the OS takes it short.
        file.write_all(&self.line).map_err(|e| format!("cannot write to {}: {e}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{basic_bolt, build_error, run_basic, FakeBoltCollector};
    use squall_api::{values, Component, Value};
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory path under the system temp dir (not created).
    fn scratch_dir() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        std::env::temp_dir().join(format!(
            "squall-file-sink-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    async fn sink(path: &Path) -> Box<dyn BasicBolt> {
        let mut table = toml::Table::new();
        table.insert("path".into(), path.display().to_string().into());
        let Component::BasicBolt(mut sink) = crate::registry().build("file-sink", &table).unwrap() else {
            panic!("file-sink is a basic bolt");
        };
        sink.prepare(&TopologyContext::for_test("sink")).await.unwrap();
        sink
    }

    #[tokio::test]
    async fn file_sink_appends_one_json_line_per_tuple() {
        let dir = scratch_dir();
        let path = dir.join("nested/deeper/out.jsonl");
        let mut out = FakeBoltCollector::default();
        let mut first = sink(&path).await;
        let tuple = Tuple::for_test(["word", "count"], values!["the \"cow\"", 3]);
        run_basic(first.as_mut(), &mut out, tuple).await.unwrap();
        let tuple = Tuple::for_test(["word", "count"], values!["moon", 1]);
        run_basic(first.as_mut(), &mut out, tuple).await.unwrap();
        // A second sink (another task, a rerun) appends rather than truncates.
        let mut second = sink(&path).await;
        let tuple = Tuple::for_test(["n", "x"], values![7, Value::Null]);
        run_basic(second.as_mut(), &mut out, tuple).await.unwrap();

        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"word\":\"the \\\"cow\\\"\",\"count\":3}\n{\"word\":\"moon\",\"count\":1}\n{\"n\":7,\"x\":null}\n"
        );
        assert!(out.emits.is_empty());
        assert_eq!(out.acked.len(), 3);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn file_sink_fails_inputs_it_cannot_write() {
        let mut out = FakeBoltCollector::default();
        // Writes to /dev/full fail with "no space left on device".
        let mut full = sink(Path::new("/dev/full")).await;
        let tuple = Tuple::for_test(["n"], values![1]);
        let e = run_basic(full.as_mut(), &mut out, tuple).await.unwrap_err();
        assert!(e.to_string().starts_with("cannot write to /dev/full"), "{e}");
        assert_eq!(out.failed.len(), 1);
    }

    #[tokio::test]
    async fn file_sink_prepare_reports_a_path_it_cannot_open() {
        let dir = scratch_dir();
        fs::create_dir_all(&dir).unwrap();
        let mut table = toml::Table::new();
        table.insert("path".into(), dir.display().to_string().into());
        let Component::BasicBolt(mut sink) = crate::registry().build("file-sink", &table).unwrap() else {
            panic!("file-sink is a basic bolt");
        };
        let e = sink.prepare(&TopologyContext::for_test("sink")).await.unwrap_err();
        assert!(e.to_string().starts_with("cannot open"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn file_sink_requires_a_path() {
        let e = build_error("file-sink", "");
        assert!(e.contains("missing field `path`"), "{e}");
        let e = build_error("file-sink", r#"path = """#);
        assert_eq!(e, "path must not be empty");
    }

    #[test]
    fn file_sink_creates_nothing_when_built() {
        let dir = scratch_dir();
        let _ = basic_bolt("file-sink", &format!("path = {:?}", dir.join("out.jsonl")));
        assert!(!dir.exists());
    }
}
