//! The `config` table of `shell-bolt` and `shell-spout`, and what a task derives from it.
//!
//! Contract: `command` (a non-empty list) is required, and so are the output streams: either
//! `fields` (the default stream's) or `streams` (each stream's fields, or `{ fields = [...],
//! direct = true }` for a direct stream), not both. `dir` is the child's working directory and
//! `env` adds to its environment. Relative paths resolve against the topology's `resources/`
//! folder (else the current directory): the working directory always, and the program when it
//! names a path (`./split.py`, `bin/split`) rather than a command looked up on `PATH`
//! (`python3`). The handshake's `conf` holds Storm's names for the topology's settings
//! (`topology.name`, `topology.message.timeout.secs`, …), every `[settings]` key as written,
//! and the component's own `conf` table; its `context` names this task, its component, and
//! every component's tasks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use squall_api::{BoxError, OutputDeclarer, TopologyContext, DEFAULT_STREAM};

use crate::child::Spec;

/// Storm's default for `supervisor.worker.timeout.secs`, how long a silent child is trusted.
const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Storm's `topology.shellbolt.max.pending`.
const DEFAULT_MAX_PENDING: usize = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellConfig {
    pub command: Vec<String>,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub streams: Option<BTreeMap<String, StreamFields>>,
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Added to the handshake's `conf`.
    #[serde(default)]
    pub conf: serde_json::Map<String, serde_json::Value>,
    /// Bolts: inputs handed to the child and not yet acked or failed before `execute` waits.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// How long a child may stay silent (no answer to heartbeats or commands).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_max_pending() -> usize {
    DEFAULT_MAX_PENDING
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// One stream's fields: a list, or a table that can make the stream direct.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StreamFields {
    Fields(Vec<String>),
    Table {
        fields: Vec<String>,
        #[serde(default)]
        direct: bool,
    },
}

impl ShellConfig {
    /// Checks what serde cannot: a command, one way to name the streams, bounds.
    pub fn check(self) -> Result<ShellConfig, BoxError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("`command` must name a program, e.g. [\"python3\", \"split.py\"]".into());
        }
        match (&self.fields, &self.streams) {
            (Some(_), Some(streams)) if streams.contains_key(DEFAULT_STREAM) => {
                return Err("the default stream's fields are given twice, in `fields` and in `streams`".into())
            }
            (None, None) => {
                return Err("`fields` (the default stream's) or `streams` (each stream's) is required".into())
            }
            _ => {}
        }
        if self.max_pending == 0 || self.max_pending > 1_000_000 {
            return Err(format!("`max_pending` must be 1 to 1000000, not {}", self.max_pending).into());
        }
        if self.timeout_secs == 0 || self.timeout_secs > 86_400 {
            return Err(format!("`timeout_secs` must be 1 to 86400, not {}", self.timeout_secs).into());
        }
        Ok(self)
    }

    pub fn declare(&self, out: &mut OutputDeclarer) {
        if let Some(fields) = &self.fields {
            out.declare(fields.clone());
        }
        for (name, stream) in self.streams.iter().flatten() {
            match stream {
                StreamFields::Fields(fields) | StreamFields::Table { fields, direct: false } => {
                    out.declare_stream(name, fields.clone());
                }
                StreamFields::Table { fields, direct: true } => {
                    out.declare_direct_stream(name, fields.clone());
                }
            }
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// What to run for this task (see the module docs for how paths resolve).
    pub fn spec(&self, ctx: &TopologyContext) -> Spec {
        let base = ctx.resources_dir().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let dir = match &self.dir {
            Some(d) => base.join(d),
            None => base,
        };
        let program = Path::new(&self.command[0]);
        let program = if program.is_relative() && program.components().count() > 1 {
            dir.join(program)
        } else {
            program.into()
        };
        Spec {
            program,
            args: self.command[1..].to_vec(),
            dir,
            env: self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            component: Arc::from(ctx.component_id()),
            task: ctx.task_id(),
        }
    }

    /// The handshake's `conf` (see the module docs).
    pub fn handshake_conf(&self, ctx: &TopologyContext) -> serde_json::Value {
        let mut conf = serde_json::Map::new();
        conf.insert("topology.name".into(), ctx.topology_name().into());
        conf.insert("storm.id".into(), ctx.topology_id().into());
        let settings = ctx.settings();
        for (storm, ours) in [
            ("topology.message.timeout.secs", "message_timeout_secs"),
            ("topology.max.spout.pending", "max_spout_pending"),
            ("topology.acker.executors", "ackers"),
        ] {
            if let Some(v) = settings.get(ours).and_then(|v| serde_json::to_value(v).ok()) {
                conf.insert(storm.into(), v);
            }
        }
        if let Some(tick) = ctx.tick_secs() {
            conf.insert("topology.tick.tuple.freq.secs".into(), tick.as_secs().into());
        }
        for (k, v) in settings {
            if let Ok(v) = serde_json::to_value(v) {
                conf.insert(k.clone(), v);
            }
        }
        conf.extend(self.conf.clone());
        serde_json::Value::Object(conf)
    }
}

/// The handshake's `context`: this task, its component, every component's tasks, and the
/// fields of this component's streams.
pub fn handshake_context(ctx: &TopologyContext, outputs: &OutputDeclarer) -> serde_json::Value {
    let mut task_component = serde_json::Map::new();
    for (component, tasks) in ctx.components() {
        for task in tasks {
            task_component.insert(task.to_string(), component.into());
        }
    }
    let streams: Vec<&str> = outputs.streams().iter().map(|s| s.name.as_str()).collect();
    let fields: serde_json::Map<String, serde_json::Value> = outputs
        .streams()
        .iter()
        .map(|s| (s.name.clone(), s.fields.iter().collect::<Vec<_>>().into()))
        .collect();
    serde_json::json!({
        "task->component": task_component,
        "taskid": ctx.task_id(),
        "componentid": ctx.component_id(),
        "streams": streams,
        "stream->outputfields": fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<ShellConfig, BoxError> {
        let table: toml::Table = toml::from_str(text)?;
        let config: ShellConfig = toml::Value::Table(table).try_into()?;
        config.check()
    }

    #[test]
    fn a_command_and_the_streams_are_required_once() {
        assert!(config(
            r#"command = ["python3", "split.py"]
                          fields = ["word"]"#
        )
        .is_ok());
        let no_streams = config(r#"command = ["python3"]"#).unwrap_err().to_string();
        assert!(no_streams.contains("`fields`"), "{no_streams}");
        let twice = config(
            r#"command = ["x"]
                             fields = ["a"]
                             streams = { default = ["b"] }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(twice.contains("given twice"), "{twice}");
        assert!(config(
            r#"command = []
                         fields = ["a"]"#
        )
        .is_err());
        assert!(config(
            r#"command = ["x"]
                         fields = ["a"]
                         max_pending = 0"#
        )
        .is_err());
    }

    #[test]
    fn streams_may_be_direct() {
        let c = config(
            r#"command = ["x"]
                          streams = { default = ["word"], picked = { fields = ["word"], direct = true } }"#,
        )
        .unwrap();
        let mut out = OutputDeclarer::new();
        c.declare(&mut out);
        assert!(!out.stream("default").unwrap().direct);
        assert!(out.stream("picked").unwrap().direct);
    }

    #[test]
    fn relative_paths_resolve_against_the_resources_folder_and_commands_on_path_stay() {
        let ctx =
            TopologyContext::for_test("split").with_resources_dir(Some(Path::new("/topo/resources").into()));
        let c = config(
            r#"command = ["python3", "split.py"]
                          fields = ["word"]"#,
        )
        .unwrap();
        let spec = c.spec(&ctx);
        assert_eq!(spec.program, PathBuf::from("python3"));
        assert_eq!(spec.dir, PathBuf::from("/topo/resources"));
        let c = config(
            r#"command = ["./bin/split", "-v"]
                          fields = ["word"]
                          dir = "py""#,
        )
        .unwrap();
        let spec = c.spec(&ctx);
        assert_eq!(spec.program, PathBuf::from("/topo/resources/py/./bin/split"));
        assert_eq!(spec.dir, PathBuf::from("/topo/resources/py"));
        assert_eq!(spec.args, ["-v"]);
    }

    #[test]
    fn the_handshake_names_the_task_and_every_components_tasks() {
        let ctx = TopologyContext::for_test("split");
        let c = config(
            r#"command = ["x"]
                          fields = ["word"]
                          conf = { "pystorm.log.level" = "debug" }"#,
        )
        .unwrap();
        let mut out = OutputDeclarer::new();
        c.declare(&mut out);
        let context = handshake_context(&ctx, &out);
        assert_eq!(context["taskid"], 0);
        assert_eq!(context["componentid"], "split");
        assert_eq!(context["task->component"]["0"], "split");
        assert_eq!(context["stream->outputfields"]["default"][0], "word");
        let conf = c.handshake_conf(&ctx);
        assert_eq!(conf["topology.name"], "test");
        assert_eq!(conf["pystorm.log.level"], "debug");
    }
}
