//! `file-spout` (spout): reads a file line by line and emits each line as one reliable tuple.
//!
//! Config: `path` (required; a relative path resolves against the current directory),
//! `format` (`"lines"`, the default: the line as it is, on the one field `line`; or `"jsonl"`:
//! each line a JSON object), `fields` (jsonl: the keys to emit, in order, required; lines:
//! optionally the one name the line goes on instead of `line`), `rate` (lines per second for
//! the whole component, 0 = flat out; default 0), `follow` (default false: the file is read
//! once and the spout finishes; true: it keeps reading as the file grows, like `tail -f`).
//!
//! Contract:
//! - The message id of a line is its line number, **1-based** (`Value::Int`), as in editors
//!   and in the errors below. The component's tasks share the lines: task `t` of `n` emits
//!   lines `t + 1, t + 1 + n, …`, so across them each line is emitted once.
//! - Reliable: a line stays in memory from its emit until its tree is acked (so at most
//!   `max_spout_pending` lines per task); a failed line is re-emitted with the same values,
//!   failed ones first, before any new line.
//! - Bounded (`follow = false`): the spout is finished once it has read to the end of the file
//!   and every line it emitted was acked. A last line without a newline is a line. Following,
//!   it never finishes and only emits lines ended by a newline (a writer's half-written line
//!   waits for the rest); a file truncated or replaced while followed is not noticed.
//! - jsonl: JSON values become squall values as they are (integers stay `Int`, so event times
//!   in integer milliseconds stay integers; floats, strings, bools, null, lists, objects). A
//!   malformed line — not UTF-8, not JSON, not an object, or without one of `fields` — is
//!   reported once (`report_error`, naming the file and line number), counted, and skipped;
//!   a blank line is skipped silently. A lines-format line that is not UTF-8 is skipped the
//!   same way. Nothing on a line makes the spout panic.
//! - The file is opened in `open` (building the component, as `squall validate` does, opens
//!   nothing); a file that cannot be opened fails `open` with one line naming the path.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use squall_api::{
    async_trait, values, BoxError, Fields, MessageId, OutputDeclarer, Spout, SpoutCollector, TopologyContext,
    Value, Values,
};
use tokio::time::Instant;

use crate::replay::{check_rate, Pacer};

/// The longest line read; a longer one is reported, counted and skipped.
const MAX_LINE: usize = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub path: PathBuf,
    #[serde(default = "default_format")]
    pub format: String,
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub follow: bool,
}

fn default_format() -> String {
    "lines".to_string()
}

/// How a line becomes a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The line's text, on one field.
    Lines,
    /// A JSON object; `fields` picks its keys.
    Jsonl,
}

/// The `file-spout` factory. The file is opened in `open`, not here: building a component to
/// validate a topology must not need the file.
pub fn build(config: Config) -> Result<FileSpout, BoxError> {
    if config.path.as_os_str().is_empty() {
        return Err("path must not be empty".into());
    }
    let format = match config.format.as_str() {
        "lines" => Format::Lines,
        "jsonl" => Format::Jsonl,
        other => return Err(format!("format must be \"lines\" or \"jsonl\", found \"{other}\"").into()),
    };
    let fields = match (format, config.fields) {
        (Format::Lines, None) => vec!["line".to_string()],
        (Format::Lines, Some(fields)) if fields.len() != 1 => {
            return Err(format!(
                "fields with format = \"lines\" names the one field the line goes on, e.g. \
                 fields = [\"text\"]; found {} names",
                fields.len()
            )
            .into())
        }
        (Format::Jsonl, None) => {
            return Err("fields is required with format = \"jsonl\": the keys to emit, in order, \
                        e.g. fields = [\"word\", \"ts\"]"
                .into())
        }
        (Format::Jsonl, Some(fields)) if fields.is_empty() => {
            return Err("fields must name at least one key to emit, e.g. fields = [\"word\", \"ts\"]".into())
        }
        (_, Some(fields)) => fields,
    };
    if let Some(bad) = fields.iter().find(|f| f.is_empty()) {
        return Err(format!("fields must not hold an empty name, found {bad:?}").into());
    }
    if let Some(dup) = fields.iter().enumerate().find_map(|(i, f)| fields[..i].contains(f).then_some(f)) {
        return Err(format!("fields names \"{dup}\" twice").into());
    }
    let rate = check_rate(config.rate)?;
    Ok(FileSpout {
        path: config.path,
        format,
        fields,
        rate,
        follow: config.follow,
        reader: None,
        buf: Vec::new(),
        skipping: false,
        line_no: 0,
        task: 0,
        tasks: 1,
        at_end: false,
        pending: None,
        in_flight: HashMap::new(),
        replays: VecDeque::new(),
        malformed: 0,
        pacer: Pacer::new(rate),
    })
}

pub struct FileSpout {
    path: PathBuf,
    format: Format,
    /// The emitted fields: the jsonl keys, or the one field of a line.
    fields: Vec<String>,
    /// Lines per second for the whole component.
    rate: f64,
    follow: bool,
    /// Open from `open` on.
    reader: Option<BufReader<File>>,
    /// The bytes of the line being read: a partial line while following.
    buf: Vec<u8>,
    /// Dropping the rest of a line longer than [`MAX_LINE`].
    skipping: bool,
    /// The number of the last complete line read, 1-based (0: none yet).
    line_no: u64,
    /// This task's index and its component's task count: it emits lines `task + 1 + k·tasks`.
    task: u64,
    tasks: u64,
    /// The last read reached the end of the file.
    at_end: bool,
    /// A line read but not emitted yet (pacing held it back, or the emit was refused).
    pending: Option<(u64, Values)>,
    /// Lines emitted and not acked yet, by line number: replayed from here on failure.
    in_flight: HashMap<u64, Values>,
    /// Failed line numbers waiting to be re-emitted, oldest first (all in `in_flight`).
    replays: VecDeque<u64>,
    /// Malformed lines skipped so far.
    malformed: u64,
    pacer: Option<Pacer>,
}

/// What one complete line turned out to be.
enum Line {
    Tuple(Values),
    /// A blank jsonl line: skipped silently.
    Blank,
}

impl FileSpout {
    /// Malformed lines this task skipped so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The path as given and, if relative, as it resolved.
    fn shown_path(&self) -> String {
        shown_path(&self.path)
    }

    /// Reads lines until one of this task's parses (`Some`) or the file has no complete line
    /// left for now (`None`). Malformed lines on the way are reported and skipped.
    fn read_next(&mut self, out: &mut dyn SpoutCollector) -> Result<Option<(u64, Values)>, BoxError> {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return Err("file-spout: next_tuple called before open".into());
            };
            if self.skipping {
                // The rest of an overlong line, up to its newline, is dropped a chunk at a time.
                let n = reader
                    .by_ref()
                    .take(64 << 10)
                    .read_until(b'\n', &mut self.buf)
                    .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
                let done = self.buf.ends_with(b"\n");
                self.buf.clear();
                if done {
                    self.skipping = false;
                } else if n == 0 {
                    self.at_end = true;
                    return Ok(None);
                }
                continue;
            }
            // At most one byte past the longest line, so a line with no end cannot grow the
            // buffer without bound.
            let room = (MAX_LINE + 1).saturating_sub(self.buf.len()) as u64;
            reader
                .by_ref()
                .take(room)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
            if self.buf.len() > MAX_LINE && !self.buf.ends_with(b"\n") {
                self.line_no += 1;
                self.buf.clear();
                self.skipping = true;
                if (self.line_no - 1) % self.tasks == self.task {
                    self.malformed += 1;
                    out.report_error(&format!(
                        "{}:{}: skipped a malformed line ({} so far): longer than {} MiB",
                        self.path.display(),
                        self.line_no,
                        self.malformed,
                        MAX_LINE >> 20
                    ));
                }
                continue;
            }
            // `read_until` stops at a newline or at the end of the file: a line without its
            // newline is the last one, complete unless the file may still grow.
            let complete = self.buf.ends_with(b"\n") || (!self.follow && !self.buf.is_empty());
            if !complete {
                self.at_end = true;
                return Ok(None);
            }
            self.at_end = false;
            self.line_no += 1;
            let line_no = self.line_no;
            if (line_no - 1) % self.tasks != self.task {
                self.buf.clear();
                continue;
            }
            let parsed = parse(self.format, &self.fields, trim_newline(&self.buf));
            self.buf.clear();
            match parsed {
                Ok(Line::Tuple(values)) => return Ok(Some((line_no, values))),
                Ok(Line::Blank) => {}
                Err(why) => {
                    self.malformed += 1;
                    out.report_error(&format!(
                        "{}:{line_no}: skipped a malformed line ({} so far): {why}",
                        self.path.display(),
                        self.malformed
                    ));
                }
            }
        }
    }
}

fn shown_path(path: &Path) -> String {
    match std::env::current_dir() {
        Ok(dir) if path.is_relative() => {
            format!("{} (from {})", path.display(), dir.display())
        }
        _ => path.display().to_string(),
    }
}

/// The line without its `\n` or `\r\n`.
fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A line's tuple, or why it is malformed.
fn parse(format: Format, fields: &[String], line: &[u8]) -> Result<Line, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    if format == Format::Lines {
        return Ok(Line::Tuple(values![text]));
    }
    if text.trim().is_empty() {
        return Ok(Line::Blank);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Map(mut object) = value else {
        return Err(format!("not a JSON object: found {}", value.type_name()));
    };
    let mut values = Values::with_capacity(fields.len());
    for field in fields {
        let value = object.remove(field).ok_or_else(|| format!("no key \"{field}\""))?;
        values.push(value);
    }
    Ok(Line::Tuple(values))
}

/// The line number a message id stands for.
fn line_of(id: &MessageId) -> Option<u64> {
    id.as_i64().and_then(|n| u64::try_from(n).ok())
}

#[async_trait]
impl Spout for FileSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(Fields::new(&self.fields));
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        let tasks = ctx.task_count().max(1);
        self.task = ctx.task_index() as u64;
        self.tasks = tasks as u64;
        self.pacer = Pacer::new(self.rate / tasks as f64);
        let file = File::open(&self.path).map_err(|e| format!("cannot open {}: {e}", self.shown_path()))?;
        self.reader = Some(BufReader::new(file));
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        // Failed lines first, then the one held back, then a new one.
        let mut replay = None;
        while let Some(id) = self.replays.pop_front() {
            if let Some(values) = self.in_flight.get(&id) {
                replay = Some((id, values.clone()));
                break;
            }
        }
        let is_replay = replay.is_some();
        let next = match replay.or_else(|| self.pending.take()) {
            Some(next) => Some(next),
            None => self.read_next(out)?,
        };
        let Some((id, values)) = next else {
            return Ok(());
        };
        let ready = self.pacer.as_mut().is_none_or(|p| p.ready(Instant::now()));
        let emitted = if ready {
            let result = out.emit_with_id(values.clone(), Value::Int(id as i64));
            result.map(|()| true)
        } else {
            Ok(false)
        };
        match emitted {
            Ok(true) => {
                if !is_replay {
                    self.in_flight.insert(id, values);
                }
                Ok(())
            }
            not_emitted => {
                // Keep it first in line for the next call.
                if is_replay {
                    self.replays.push_front(id);
                } else {
                    self.pending = Some((id, values));
                }
                not_emitted.map(drop).map_err(Into::into)
            }
        }
    }

    async fn ack(&mut self, msg_id: MessageId) {
        if let Some(line) = line_of(&msg_id) {
            self.in_flight.remove(&line);
        }
    }

    async fn fail(&mut self, msg_id: MessageId) {
        if let Some(line) = line_of(&msg_id).filter(|line| self.in_flight.contains_key(line)) {
            self.replays.push_back(line);
        }
    }

    fn is_exhausted(&self) -> bool {
        !self.follow
            && self.at_end
            && self.buf.is_empty()
            && self.pending.is_none()
            && self.replays.is_empty()
    }

    fn is_finished(&self) -> bool {
        !self.follow
            && self.at_end
            && self.buf.is_empty()
            && self.pending.is_none()
            && self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{build_error, drain_acking, FakeSpoutCollector};
    use std::io::Write;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A fresh file under the system temp dir holding `text`.
    fn scratch_file(text: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "squall-file-spout-{}-{}.txt",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A file-spout on `path` with more `config`, built through the registry and opened.
    async fn opened(path: &Path, config: &str) -> Box<dyn Spout> {
        let mut s = crate::testkit::spout(
            "file-spout",
            &format!("path = {:?}\n{config}", path.display().to_string()),
        );
        s.open(&TopologyContext::for_test("file")).await.unwrap();
        s
    }

    async fn calls(s: &mut dyn Spout, out: &mut FakeSpoutCollector, n: usize) {
        for _ in 0..n {
            s.next_tuple(out).await.unwrap();
        }
    }

    fn row(out: &FakeSpoutCollector, i: usize) -> Vec<Value> {
        out.emits[i].values.to_vec()
    }

    #[tokio::test]
    async fn reads_lines_with_their_1_based_line_numbers_then_finishes() {
        let path = scratch_file("the cow\n\njumped\r\nover the moon");
        let mut s = opened(&path, "").await;
        let mut out = FakeSpoutCollector::default();
        assert!(!s.is_finished());
        drain_acking(s.as_mut(), &mut out, 10).await;
        assert_eq!(out.strings(), ["the cow", "", "jumped", "over the moon"]);
        assert_eq!(out.ids(), [1, 2, 3, 4], "message id = line number, from 1");
        assert!(s.is_finished());
        let declared =
            crate::testkit::build("file-spout", &format!("path = {path:?}")).unwrap().declare_outputs();
        assert_eq!(declared.streams()[0].fields.iter().collect::<Vec<_>>(), ["line"]);
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn reads_jsonl_keys_in_order_keeping_integers_integers() {
        let path = scratch_file(
            "{\"ts\": 1700000000123, \"word\": \"cow\", \"extra\": [1]}\n\
             {\"word\": \"moon\", \"ts\": -5, \"n\": 2.5}\n\n",
        );
        let mut s = opened(&path, "format = \"jsonl\"\nfields = [\"word\", \"ts\"]").await;
        let mut out = FakeSpoutCollector::default();
        drain_acking(s.as_mut(), &mut out, 10).await;
        assert_eq!(row(&out, 0), [Value::from("cow"), Value::Int(1_700_000_000_123)]);
        assert_eq!(row(&out, 1), [Value::from("moon"), Value::Int(-5)]);
        assert_eq!(out.emits.len(), 2, "a blank line is no tuple");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert!(s.is_finished());
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn skips_and_reports_each_malformed_jsonl_line_once() {
        let path = scratch_file(
            "{\"word\": \"a\", \"ts\": 1}\nnot json\n[1, 2]\n{\"word\": \"b\"}\n{\"word\": \"c\", \"ts\": 3}\n",
        );
        // Built directly, to read its count of malformed lines.
        let mut spout = opened_direct(&path, "jsonl", Some(vec!["word".into(), "ts".into()])).await;
        let mut out = FakeSpoutCollector::default();
        drain_acking(&mut spout, &mut out, 10).await;
        assert_eq!(out.ids(), [1, 5]);
        assert_eq!(out.strings(), ["a", "c"]);
        assert_eq!(spout.malformed(), 3);
        let at = |line: u32| format!("{}:{line}: skipped a malformed line", path.display());
        assert_eq!(out.errors.len(), 3, "{:?}", out.errors);
        assert!(out.errors[0].starts_with(&at(2)) && out.errors[0].contains("not JSON"), "{:?}", out.errors);
        assert!(out.errors[1].starts_with(&at(3)) && out.errors[1].contains("not a JSON object"));
        assert!(out.errors[2].starts_with(&at(4)) && out.errors[2].contains("no key \"ts\""));
        assert!(out.errors[2].contains("(3 so far)"), "{}", out.errors[2]);
        assert!(spout.is_finished());
        std::fs::remove_file(path).unwrap();
    }

    /// A bounded spout over `path`, built directly (to read its count of malformed lines) and
    /// opened.
    async fn opened_direct(path: &Path, format: &str, fields: Option<Vec<String>>) -> FileSpout {
        let config =
            Config { path: path.to_path_buf(), format: format.into(), fields, rate: 0.0, follow: false };
        let mut spout = build(config).unwrap();
        spout.open(&TopologyContext::for_test("file")).await.unwrap();
        spout
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_skipped_without_holding_it() {
        let long = "x".repeat(MAX_LINE + 1000);
        let path = scratch_file(&format!("first\n{long}\nlast\n"));
        let mut spout = opened_direct(&path, "lines", None).await;
        let mut out = FakeSpoutCollector::default();
        drain_acking(&mut spout, &mut out, 10).await;
        assert_eq!(out.ids(), [1, 3]);
        assert_eq!(out.strings(), ["first", "last"]);
        assert_eq!(spout.malformed(), 1);
        assert!(
            out.errors[0].contains(":2: skipped a malformed line")
                && out.errors[0].contains("longer than 16 MiB")
        );
        assert!(spout.is_finished());
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn re_emits_a_failed_line_before_new_ones_with_the_same_values() {
        let path = scratch_file("a\nb\nc\n");
        let mut s = opened(&path, "").await;
        let mut out = FakeSpoutCollector::default();
        calls(s.as_mut(), &mut out, 2).await;
        s.fail(Value::Int(1)).await;
        calls(s.as_mut(), &mut out, 2).await;
        assert_eq!(out.ids(), [1, 2, 1, 3]);
        assert_eq!(out.strings(), ["a", "b", "a", "c"]);
        s.fail(Value::Int(42)).await; // never emitted: nothing to replay
        calls(s.as_mut(), &mut out, 2).await;
        assert_eq!(out.emits.len(), 4);
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn finishes_only_once_at_the_end_and_every_line_is_acked() {
        let path = scratch_file("a\nb\n");
        let mut s = opened(&path, "").await;
        let mut out = FakeSpoutCollector::default();
        calls(s.as_mut(), &mut out, 3).await;
        assert_eq!(out.ids(), [1, 2]);
        assert!(!s.is_finished(), "two in flight");
        s.ack(Value::Int(2)).await;
        s.fail(Value::Int(1)).await;
        assert!(!s.is_finished(), "one to replay");
        calls(s.as_mut(), &mut out, 1).await;
        assert!(!s.is_finished(), "the replay is in flight");
        s.ack(Value::Int(1)).await;
        assert!(s.is_finished());
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn an_emit_refused_keeps_the_line_for_the_next_call() {
        let path = scratch_file("a\n");
        let mut s = opened(&path, "").await;
        let mut out = FakeSpoutCollector { refuse: true, ..Default::default() };
        assert!(s.next_tuple(&mut out).await.is_err());
        assert!(!s.is_finished());
        out.refuse = false;
        drain_acking(s.as_mut(), &mut out, 2).await;
        assert_eq!(out.ids(), [1]);
        assert!(s.is_finished());
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn rate_paces_the_lines() {
        let text: String = (0..100).map(|i| format!("{i}\n")).collect();
        let path = scratch_file(&text);
        let mut s = opened(&path, "rate = 10").await;
        let mut out = FakeSpoutCollector::default();
        drain_acking(s.as_mut(), &mut out, 50).await;
        assert_eq!(out.emits.len(), 1, "10/s: one now, the next in 100 ms");
        tokio::time::advance(Duration::from_millis(100)).await;
        drain_acking(s.as_mut(), &mut out, 50).await;
        assert_eq!(out.ids(), [1, 2], "no line lost while held back");
        assert!(!s.is_finished());
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn follow_picks_up_appended_lines_and_never_finishes() {
        let path = scratch_file("a\n");
        let mut s = opened(&path, "follow = true").await;
        let mut out = FakeSpoutCollector::default();
        drain_acking(s.as_mut(), &mut out, 3).await;
        assert_eq!(out.strings(), ["a"]);
        assert!(!s.is_finished(), "following never finishes");
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"b\nhalf").unwrap();
        drain_acking(s.as_mut(), &mut out, 3).await;
        assert_eq!(out.strings(), ["a", "b"], "a half-written line waits for its newline");
        file.write_all(b" line\n").unwrap();
        drain_acking(s.as_mut(), &mut out, 3).await;
        assert_eq!(out.strings(), ["a", "b", "half line"]);
        assert_eq!(out.ids(), [1, 2, 3]);
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn tasks_share_the_lines() {
        let path = scratch_file("1\n2\n3\n4\n5\n");
        let ids = std::sync::Arc::new(std::collections::BTreeMap::from([("file".to_string(), vec![0, 1])]));
        let mut all = Vec::new();
        for task in [0, 1] {
            let ctx =
                TopologyContext::new("t", "file", task, ids.clone(), Default::default(), Default::default());
            let mut s =
                crate::testkit::spout("file-spout", &format!("path = {:?}", path.display().to_string()));
            s.open(&ctx).await.unwrap();
            let mut out = FakeSpoutCollector::default();
            drain_acking(s.as_mut(), &mut out, 10).await;
            assert!(s.is_finished());
            all.extend(out.ids());
        }
        all.sort();
        assert_eq!(all, [1, 2, 3, 4, 5]);
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn a_missing_file_fails_open_with_one_line_naming_it() {
        let mut s = crate::testkit::spout("file-spout", r#"path = "no/such/events.jsonl""#);
        let e = s.open(&TopologyContext::for_test("file")).await.unwrap_err().to_string();
        assert!(e.starts_with("cannot open no/such/events.jsonl (from "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn lines_may_rename_their_one_field() {
        let declared = crate::testkit::build("file-spout", "path = \"x\"\nfields = [\"text\"]")
            .unwrap()
            .declare_outputs();
        assert_eq!(declared.streams()[0].fields.iter().collect::<Vec<_>>(), ["text"]);
    }

    #[test]
    fn bad_config_is_one_line_naming_the_key() {
        for (config, expected) in [
            ("", "missing field `path`"),
            ("path = \"\"", "path must not be empty"),
            ("path = \"x\"\nformat = \"csv\"", "format must be \"lines\" or \"jsonl\", found \"csv\""),
            ("path = \"x\"\nformat = \"jsonl\"", "fields is required with format = \"jsonl\""),
            ("path = \"x\"\nformat = \"jsonl\"\nfields = []", "fields must name at least one key"),
            ("path = \"x\"\nformat = \"jsonl\"\nfields = [\"a\", \"a\"]", "fields names \"a\" twice"),
            ("path = \"x\"\nfields = [\"a\", \"b\"]", "fields with format = \"lines\" names the one field"),
            ("path = \"x\"\nrate = -1", "rate must be >= 0"),
        ] {
            let e = build_error("file-spout", config);
            assert!(e.contains(expected) && !e.contains('\n'), "{config:?}: {e}");
        }
    }
}
