//! The topology file: what a user wrote, checked.
//!
//! Contract: [`load`] reads a topology file (TOML), replaces `${VAR}` / `${VAR:-default}` from
//! the environment, parses it, and validates it against a [`Registry`]: every kind exists and
//! has the right role, every component's `config` builds, every input names a component and a
//! stream it declares, fields groupings name declared fields, ids are unique, parallelism is at
//! least 1, the graph has no cycle, and exactly the windowed bolt kinds have a `window` that
//! their inputs and settings can run (see [`crate::window`]). It returns a [`TopologyDef`] only if there is no
//! mistake at all; otherwise every mistake it found, each with file:line:col and what would
//! be valid ([`Diagnostics`]). No input makes it panic.

#[cfg(test)]
mod fuzz;
mod parse;
mod report;
mod subst;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::path::Path;

use squall_api::{Registry, StreamDecl};

use crate::window::WindowSpec;

pub use parse::{
    MAX_DURATION, MAX_SECONDS, MAX_SPOUT_PENDING, MAX_TASKS, MAX_TASKS_PER_COMPONENT, MAX_WINDOW_COUNT,
    MAX_WORKERS,
};
pub use subst::{substitute, Substituted};

/// A validated topology.
#[derive(Debug, Clone)]
pub struct TopologyDef {
    pub name: String,
    /// Worker processes in cluster mode.
    pub workers: usize,
    pub settings: Settings,
    pub spouts: Vec<ComponentDef>,
    pub bolts: Vec<ComponentDef>,
}

/// The `[settings]` table (Storm's topology.* config).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// false: tuples are not tracked (at-most-once); default true.
    pub acking: bool,
    /// Acker tasks; default 1.
    pub ackers: usize,
    /// Default 30.
    pub message_timeout_secs: u64,
    /// In-flight reliable messages per spout task; 0 = unlimited; default 1000.
    pub max_spout_pending: usize,
    /// `guarantee`: what stateful bolts promise; default at least once.
    pub guarantee: squall_api::Guarantee,
    /// `state`: where stateful bolts' checkpoints go and how often they are taken.
    pub state: StateSettings,
    /// The whole `[settings]` table as written, handed to components in their context.
    pub raw: toml::Table,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            acking: true,
            ackers: 1,
            message_timeout_secs: 30,
            max_spout_pending: 1000,
            guarantee: squall_api::Guarantee::AtLeastOnce,
            state: StateSettings::default(),
            raw: toml::Table::new(),
        }
    }
}

/// The `[settings] state` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSettings {
    /// `backend`: the name of a registered state backend; default "memory".
    pub backend: String,
    /// `checkpoint_interval_ms`; default 1000.
    pub checkpoint_interval: std::time::Duration,
    /// The table as written (the backend's own keys: `broker`, `url`), for its factory.
    pub table: toml::Table,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            backend: "memory".to_string(),
            checkpoint_interval: std::time::Duration::from_millis(1000),
            table: toml::Table::new(),
        }
    }
}

/// One `[[spouts]]` or `[[bolts]]` entry.
#[derive(Debug, Clone)]
pub struct ComponentDef {
    pub id: String,
    pub kind: String,
    pub parallelism: usize,
    /// The `config` table handed to the kind's factory (empty if absent).
    pub config: toml::Table,
    /// Tick tuples every this many seconds (`tick_secs`), overriding the component's own ask.
    pub tick_secs: Option<u64>,
    /// The `window` table of a windowed bolt; None for every other component.
    pub window: Option<WindowSpec>,
    /// A stateful bolt (its kind is registered as one): its state is checkpointed.
    pub stateful: bool,
    /// Empty for spouts.
    pub inputs: Vec<InputDef>,
    /// The streams the component declares (learned by building it once from the registry),
    /// and its window's `late_stream` if it has one (with its inputs' fields).
    pub streams: Vec<StreamDecl>,
}

/// One entry of a bolt's `inputs`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDef {
    pub from: String,
    /// Default "default".
    pub stream: String,
    pub grouping: GroupingDef,
}

/// How a subscription spreads tuples over the subscriber's tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupingDef {
    Shuffle,
    Fields(Vec<String>),
    All,
    Global,
    Direct,
    LocalOrShuffle,
    None,
    PartialKey(Vec<String>),
    Custom { kind: String, config: toml::Table },
}

/// Building components in code (benchmarks, tests, a user's own `main`), as a file would
/// declare them. Nothing checks a component built this way against its kind: its declared
/// streams must be the ones the component emits.
impl ComponentDef {
    /// A component of `kind` with one task and no config, inputs or streams.
    pub fn new(id: &str, kind: &str) -> Self {
        ComponentDef {
            id: id.into(),
            kind: kind.into(),
            parallelism: 1,
            config: toml::Table::new(),
            tick_secs: None,
            window: None,
            stateful: false,
            inputs: Vec::new(),
            streams: Vec::new(),
        }
    }

    pub fn parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets a key of the component's `config` table.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Gives a windowed bolt its window. A `late_stream` is declared by the plan, with the
    /// fields of the bolt's first input.
    pub fn window(mut self, spec: WindowSpec) -> Self {
        self.window = Some(spec);
        self
    }

    /// Marks a bolt as stateful: a kind registered with `Registry::stateful_bolt`.
    pub fn stateful(mut self) -> Self {
        self.stateful = true;
        self
    }

    /// Subscribes to the default stream of `from`.
    pub fn input(mut self, from: &str, grouping: GroupingDef) -> Self {
        self.inputs.push(InputDef { from: from.into(), stream: squall_api::DEFAULT_STREAM.into(), grouping });
        self
    }

    /// Declares the default stream with these fields.
    pub fn emits(mut self, fields: impl Into<squall_api::Fields>) -> Self {
        self.streams.push(StreamDecl {
            name: squall_api::DEFAULT_STREAM.into(),
            fields: fields.into(),
            direct: false,
            passthrough: false,
        });
        self
    }
}

impl TopologyDef {
    /// Whether the topology takes checkpoints: it has a stateful bolt.
    pub fn checkpoints(&self) -> bool {
        self.bolts.iter().any(|b| b.stateful)
    }

    /// Spouts then bolts, in file order.
    pub fn components(&self) -> impl Iterator<Item = &ComponentDef> {
        self.spouts.iter().chain(self.bolts.iter())
    }

    pub fn component(&self, id: &str) -> Option<&ComponentDef> {
        self.components().find(|c| c.id == id)
    }
}

/// One mistake in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    pub message: String,
}

impl Diagnostic {
    /// Whether this mistake names a component or grouping kind the registry does not have
    /// (validate.rs words those "unknown … kind \"…\"").
    pub fn is_unknown_kind(&self) -> bool {
        self.message.starts_with("unknown ") && self.message.contains(" kind \"")
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

/// Every mistake found in a topology file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Reads, substitutes, parses and validates a topology file.
pub fn load(path: &Path, registry: &Registry) -> Result<TopologyDef, Diagnostics> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }])
    })?;
    load_str(&file, &source, &|name| std::env::var(name).ok(), registry)
}

/// [`load`] on text already read; `env` looks up `${VAR}`s.
pub fn load_str(
    file: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
) -> Result<TopologyDef, Diagnostics> {
    let substituted = substitute(file, source, env)?;
    let mut problems = report::Problems::new(&substituted);
    let Some(parsed) = parse::parse(substituted.text(), &mut problems) else {
        return Err(problems.into_diagnostics(file));
    };
    let def = validate::validate(parsed, registry, &mut problems);
    if problems.is_empty() {
        Ok(def)
    } else {
        Err(problems.into_diagnostics(file))
    }
}
