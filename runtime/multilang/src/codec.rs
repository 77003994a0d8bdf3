//! Storm's multi-lang protocol as messages: what Squall writes to a child and what it reads.
//!
//! Contract: pure, no I/O. Every message is one JSON value followed by a line `end`. Squall
//! writes the handshake (`conf`, `pidDir`, `context`), bolt tuples
//! (`{"id","comp","stream","task","tuple"}`, heartbeats on stream `__heartbeat` with task -1,
//! ticks from `__system` on `__tick`), spout commands (`next`, `ack`, `fail`, `activate`,
//! `deactivate`) and the task-id replies to emits (a JSON list). [`Framer`] joins the lines a
//! child writes into messages (at most [`MAX_MESSAGE`] bytes each) and [`decode`] turns one into
//! a [`ChildMsg`]: `{"pid"}` once, then `emit`, `ack`, `fail`, `log`, `error`, `metrics`,
//! `sync`. Anything else is a [`ProtocolError`] quoting what was read. Tuple ids Squall gives a
//! child are decimal strings of a `u64` (Storm's are strings too); a child may echo them as
//! strings or numbers.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;
use squall_api::{TaskId, Value, Values};

/// The line that ends every message, in both directions.
pub const END: &[u8] = b"end";

/// The longest message a child may write, in bytes; a longer one is a protocol error.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The stream of heartbeat tuples (task -1); a bolt answers them with `sync`.
pub const HEARTBEAT_STREAM: &str = "__heartbeat";

/// What a child said.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildMsg {
    /// The handshake's answer: the child's process id.
    Pid(u32),
    Emit(Emit),
    /// A bolt is done with the tuple of this id.
    Ack(u64),
    /// A bolt failed the tuple of this id.
    Fail(u64),
    /// A line for the log; `level` as Storm's (0 trace … 4 error; absent: info).
    Log {
        msg: String,
        level: Option<i64>,
    },
    /// An error to report (Storm's `reportError`); the component keeps running.
    Error(String),
    /// A metric sample (Storm's `metrics` command).
    Metrics {
        name: String,
        params: Value,
    },
    /// A spout finished a command, or a bolt answered a heartbeat.
    Sync,
}

/// An `emit` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// A bolt's anchors: the ids of the inputs the tuple joins the trees of.
    pub anchors: SmallVec<[u64; 2]>,
    /// A spout's message id (the tuple is reliable if present).
    pub id: Option<Value>,
    /// Absent: the default stream.
    pub stream: Option<String>,
    /// A direct emit's task.
    pub task: Option<TaskId>,
    pub tuple: Values,
    /// Whether the child waits for the list of tasks the tuple went to (Storm's default: yes).
    pub need_task_ids: bool,
}

/// A message that is not the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub reason: String,
    /// What was read, cut to a readable length.
    pub text: String,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", self.reason, self.text)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol_error(reason: impl Into<String>, text: &[u8]) -> ProtocolError {
    const SHOWN: usize = 200;
    let mut shown = String::from_utf8_lossy(&text[..text.len().min(SHOWN)]).into_owned();
    if text.len() > SHOWN {
        shown.push('…');
    }
    ProtocolError { reason: reason.into(), text: shown }
}

/// Joins a child's lines into messages: every line up to a line `end`.
#[derive(Debug, Default)]
pub struct Framer {
    message: Vec<u8>,
}

impl Framer {
    /// Takes one line (with or without its newline). Returns a whole message when `line` is
    /// `end`; an error if the message grows past [`MAX_MESSAGE`] or is empty.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<&[u8]>, ProtocolError> {
        let line = trim_newline(line);
        if line == END {
            if self.message.iter().all(u8::is_ascii_whitespace) {
                return Err(protocol_error("an empty message", line));
            }
            return Ok(Some(&self.message));
        }
        if self.message.len() + line.len() + 1 > MAX_MESSAGE {
            return Err(protocol_error(format!("a message longer than {MAX_MESSAGE} bytes"), &self.message));
        }
        if !self.message.is_empty() {
            self.message.push(b'\n');
        }
        self.message.extend_from_slice(line);
        Ok(None)
    }

    /// Forgets the message returned last: call it once that message is decoded.
    pub fn clear(&mut self) {
        self.message.clear();
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Every key a child's message may have; which ones mean what depends on `command`.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    command: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    anchors: Option<SmallVec<[Id; 2]>>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    task: Option<TaskId>,
    #[serde(default)]
    tuple: Option<Values>,
    #[serde(default)]
    need_task_ids: Option<bool>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    level: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

/// A tuple id as a child echoes it: a decimal string or a number.
struct Id(u64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tuple id (a string of digits)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                u64::try_from(v)
                    .map(Id)
                    .map_err(|_| E::custom(format!("tuple id {v} is not one Squall gave")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse().map(Id).map_err(|_| E::custom(format!("tuple id {v:?} is not one Squall gave")))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

fn tuple_id(id: Option<&Value>, text: &[u8], command: &str) -> Result<u64, ProtocolError> {
    match id {
        Some(Value::Int(n)) if *n >= 0 => Ok(*n as u64),
        Some(Value::Str(s)) => {
            s.parse().map_err(|_| protocol_error(format!("{command} of an unknown tuple id"), text))
        }
        Some(_) => Err(protocol_error(format!("{command} of an unknown tuple id"), text)),
        None => Err(protocol_error(format!("{command} without an id"), text)),
    }
}

/// Decodes one message (what [`Framer::push_line`] returned).
pub fn decode(text: &[u8]) -> Result<ChildMsg, ProtocolError> {
    let raw: Raw =
        serde_json::from_slice(text).map_err(|e| protocol_error(format!("not a JSON object ({e})"), text))?;
    let Some(command) = raw.command.as_deref() else {
        return match raw.pid {
            Some(pid) => Ok(ChildMsg::Pid(pid)),
            None => Err(protocol_error("a message without a command", text)),
        };
    };
    Ok(match command {
        "emit" => {
            let Some(tuple) = raw.tuple else {
                return Err(protocol_error("an emit without a tuple", text));
            };
            ChildMsg::Emit(Emit {
                anchors: raw.anchors.map(|a| a.into_iter().map(|Id(id)| id).collect()).unwrap_or_default(),
                id: raw.id,
                stream: raw.stream,
                task: raw.task,
                tuple,
                need_task_ids: raw.need_task_ids.unwrap_or(true),
            })
        }
        "ack" => ChildMsg::Ack(tuple_id(raw.id.as_ref(), text, "ack")?),
        "fail" => ChildMsg::Fail(tuple_id(raw.id.as_ref(), text, "fail")?),
        "log" => ChildMsg::Log { msg: raw.msg.unwrap_or_default(), level: raw.level },
        "error" => ChildMsg::Error(raw.msg.unwrap_or_default()),
        "metrics" => {
            let Some(name) = raw.name else {
                return Err(protocol_error("metrics without a name", text));
            };
            ChildMsg::Metrics { name, params: raw.params.unwrap_or_default() }
        }
        "sync" => ChildMsg::Sync,
        other => return Err(protocol_error(format!("unknown command {other:?}"), text)),
    })
}

/// Appends `end` and a newline.
fn end(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"\nend\n");
}

fn json(buf: &mut Vec<u8>, value: &impl serde::Serialize) {
    // Writing into a Vec cannot fail, and Values, strings and tables always serialize.
    serde_json::to_writer(&mut *buf, value).expect("serializing to memory does not fail");
}

/// A tuple for a bolt: `{"id","comp","stream","task","tuple"}`.
pub fn encode_tuple(buf: &mut Vec<u8>, id: u64, comp: &str, stream: &str, task: i64, values: &[Value]) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail; `write!` formats the numbers without allocating.
    let _ = write!(buf, "{{\"id\":\"{id}\",\"comp\":");
    json(buf, &comp);
    buf.extend_from_slice(b",\"stream\":");
    json(buf, &stream);
    let _ = write!(buf, ",\"task\":{task},\"tuple\":");
    json(buf, &values);
    buf.push(b'}');
    end(buf);
}

/// A heartbeat tuple: a bolt answers it with `sync`.
pub fn encode_heartbeat(buf: &mut Vec<u8>) {
    encode_tuple(buf, 0, "__system", HEARTBEAT_STREAM, -1, &[]);
}

/// A spout command without an id: `next`, `activate`, `deactivate`.
pub fn encode_command(buf: &mut Vec<u8>, command: &str) {
    buf.extend_from_slice(b"{\"command\":");
    json(buf, &command);
    buf.push(b'}');
    end(buf);
}

/// A spout's `ack` or `fail` of a message id, the id as the child gave it.
pub fn encode_outcome(buf: &mut Vec<u8>, command: &str, id: &Value) {
    buf.extend_from_slice(b"{\"command\":");
    json(buf, &command);
    buf.extend_from_slice(b",\"id\":");
    json(buf, id);
    buf.push(b'}');
    end(buf);
}

/// The answer to an emit with `need_task_ids`: the tasks it went to.
pub fn encode_task_ids(buf: &mut Vec<u8>, tasks: &[TaskId]) {
    json(buf, &tasks);
    end(buf);
}

/// The handshake: `conf`, `pidDir` and `context` (already a JSON object).
pub fn encode_handshake(
    buf: &mut Vec<u8>,
    conf: &serde_json::Value,
    pid_dir: &str,
    context: &serde_json::Value,
) {
    let handshake = serde_json::json!({ "conf": conf, "pidDir": pid_dir, "context": context });
    json(buf, &handshake);
    end(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::values;

    fn frame(text: &str) -> Vec<Vec<u8>> {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        for line in text.split_inclusive('\n') {
            if let Some(message) = framer.push_line(line.as_bytes()).unwrap() {
                out.push(message.to_vec());
                framer.clear();
            }
        }
        out
    }

    #[test]
    fn lines_up_to_end_make_one_message_even_over_several_lines() {
        let got = frame("{\"command\":\n\"sync\"}\nend\n{\"pid\": 42}\r\nend\r\n");
        assert_eq!(got.len(), 2);
        assert_eq!(decode(&got[0]).unwrap(), ChildMsg::Sync);
        assert_eq!(decode(&got[1]).unwrap(), ChildMsg::Pid(42));
    }

    #[test]
    fn an_empty_or_oversized_message_is_an_error() {
        let mut framer = Framer::default();
        assert!(framer.push_line(b"end\n").is_err());
        let mut framer = Framer::default();
        let line = vec![b'x'; MAX_MESSAGE / 2];
        assert!(framer.push_line(&line).unwrap().is_none());
        let err = framer.push_line(&line).unwrap_err();
        assert!(err.reason.contains("longer than"), "{err}");
        assert!(err.text.len() < 300, "the offending text is cut to a readable length");
    }

    #[test]
    fn a_bolt_emit_has_anchors_stream_direct_task_and_need_task_ids() {
        let msg = br#"{"command":"emit","anchors":["7", 8],"stream":"words","task":3,"tuple":["a",1,2.5,null,[true]],"need_task_ids":false}"#;
        let ChildMsg::Emit(emit) = decode(msg).unwrap() else { panic!("an emit") };
        assert_eq!(emit.anchors.as_slice(), &[7, 8]);
        assert_eq!(emit.stream.as_deref(), Some("words"));
        assert_eq!(emit.task, Some(3));
        assert!(!emit.need_task_ids);
        assert_eq!(emit.tuple, values!["a", 1i64, 2.5, Value::Null, Value::List(vec![Value::Bool(true)])]);
    }

    #[test]
    fn a_spout_emit_keeps_its_message_id_and_wants_task_ids_by_default() {
        let ChildMsg::Emit(emit) = decode(br#"{"command":"emit","id":"m-1","tuple":["x"]}"#).unwrap() else {
            panic!("an emit")
        };
        assert_eq!(emit.id, Some(Value::from("m-1")));
        assert!(emit.anchors.is_empty() && emit.stream.is_none() && emit.task.is_none());
        assert!(emit.need_task_ids, "Storm's default");
    }

    #[test]
    fn acks_fails_logs_errors_metrics_and_sync_decode() {
        assert_eq!(decode(br#"{"command":"ack","id":"12"}"#).unwrap(), ChildMsg::Ack(12));
        assert_eq!(decode(br#"{"command":"fail","id":13}"#).unwrap(), ChildMsg::Fail(13));
        assert_eq!(
            decode(br#"{"command":"log","msg":"hi","level":3}"#).unwrap(),
            ChildMsg::Log { msg: "hi".into(), level: Some(3) }
        );
        assert_eq!(decode(br#"{"command":"error","msg":"boom"}"#).unwrap(), ChildMsg::Error("boom".into()));
        assert_eq!(
            decode(br#"{"command":"metrics","name":"n","params":5}"#).unwrap(),
            ChildMsg::Metrics { name: "n".into(), params: Value::Int(5) }
        );
        assert_eq!(decode(br#"{"command":"sync"}"#).unwrap(), ChildMsg::Sync);
    }

    #[test]
    fn what_is_not_the_protocol_is_an_error_quoting_it() {
        for (text, reason) in [
            (&b"hello from print()"[..], "not a JSON object"),
            (br#"{"command":"dance"}"#, "unknown command"),
            (br#"{"command":"ack"}"#, "without an id"),
            (br#"{"command":"ack","id":"x"}"#, "unknown tuple id"),
            (br#"{"command":"emit"}"#, "without a tuple"),
            (br#"{"x":1}"#, "without a command"),
            (br#"{"command":"emit","anchors":["-1"],"tuple":[]}"#, "not a JSON object"),
        ] {
            let err = decode(text).unwrap_err();
            assert!(err.reason.contains(reason), "{text:?}: {err}");
            assert_eq!(err.text.as_bytes(), text, "quotes the offending text");
        }
    }

    #[test]
    fn tuples_heartbeats_commands_and_task_ids_encode_as_storm_writes_them() {
        let mut buf = Vec::new();
        encode_tuple(&mut buf, 5, "sentences", "default", 2, &values!["a \"quoted\" word", 3i64]);
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            "{\"id\":\"5\",\"comp\":\"sentences\",\"stream\":\"default\",\"task\":2,\"tuple\":[\"a \\\"quoted\\\" word\",3]}\nend\n"
        );
        buf.clear();
        encode_heartbeat(&mut buf);
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains("\"stream\":\"__heartbeat\"") && text.contains("\"task\":-1"), "{text}");
        buf.clear();
        encode_command(&mut buf, "next");
        encode_outcome(&mut buf, "ack", &Value::Int(7));
        encode_task_ids(&mut buf, &[1, 4]);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"command\":\"next\"}\nend\n{\"command\":\"ack\",\"id\":7}\nend\n[1,4]\nend\n"
        );
    }

    #[test]
    fn the_handshake_carries_conf_pid_dir_and_context() {
        let mut buf = Vec::new();
        let context =
            serde_json::json!({"taskid": 3, "componentid": "split", "task->component": {"3": "split"}});
        encode_handshake(&mut buf, &serde_json::json!({"topology.name": "t"}), "/tmp/p", &context);
        let text = String::from_utf8(buf).unwrap();
        let (json_text, rest) = text.split_once('\n').unwrap();
        assert_eq!(rest, "end\n");
        let v: serde_json::Value = serde_json::from_str(json_text).unwrap();
        assert_eq!(v["pidDir"], "/tmp/p");
        assert_eq!(v["conf"]["topology.name"], "t");
        assert_eq!(v["context"]["taskid"], 3);
    }
}
