//! Parsing: TOML text (already substituted) into a [`FileDef`] that remembers where each
//! value was written.
//!
//! Contract: [`parse`] reports every TOML syntax error and then stops, since the structure of
//! a broken document is a guess. On a well-formed document it checks the schema of the
//! topology file — known keys, value types, ranges, required keys, defaults — reports every
//! violation, and still returns what it could make sense of (a bad value is left out, or set
//! to its default), so that validation can look for more mistakes. A key that is not
//! understood is reported at the key, a bad value at the value, a missing key at the table
//! that lacks it (at the start of the file for top-level keys). Nothing here knows the
//! registry.
//!
//! A bolt's `window` table is parsed into a [`WindowSpec`] here, with the checks that need
//! only the file: its keys, each value's form (a duration string or a count of tuples), a
//! slide no longer than its length, and a time window that fits in the message timeout when
//! acking is on. Whether the kind is windowed, and what its inputs carry, is validation's.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use squall_api::Role;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::report::{Problems, Span};
use super::{GroupingDef, Settings, StateSettings};
use crate::window::{Size, WindowSpec, DEFAULT_WATERMARK_INTERVAL};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Located<T> {
    pub value: T,
    pub span: Span,
}

/// The topology file as written, with positions.
#[derive(Debug)]
pub(crate) struct FileDef {
    pub name: String,
    pub workers: usize,
    pub settings: Settings,
    /// Spouts then bolts, in file order.
    pub components: Vec<RawComponent>,
}

/// One `[[spouts]]` or `[[bolts]]` entry.
#[derive(Debug)]
pub(crate) struct RawComponent {
    /// Which array it is in.
    pub role: Role,
    /// The entry's table (its `[[bolts]]` header).
    pub span: Span,
    /// None if missing or not a string (already reported).
    pub id: Option<Located<String>>,
    pub kind: Option<Located<String>>,
    pub parallelism: usize,
    /// None if `config` is not a table (already reported).
    pub config: Option<Config>,
    pub tick_secs: Option<u64>,
    /// The `window` table, if the entry has one.
    pub window: Option<RawWindow>,
    /// The inputs that name a `from`.
    pub inputs: Vec<RawInput>,
}

/// A bolt's `window` table and where its parts are.
#[derive(Debug)]
pub(crate) struct RawWindow {
    /// The `window` key.
    pub key_span: Span,
    /// None if the table has a mistake (already reported).
    pub spec: Option<WindowSpec>,
    /// Where `timestamp_field` and `late_stream` are, when written.
    pub timestamp_field: Option<Span>,
    pub late_stream: Option<Span>,
}

/// A `config` table handed to a factory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub table: toml::Table,
    /// The table's value; None when `config` is absent (an empty table).
    pub span: Option<Span>,
    /// The table's own keys, where written.
    pub keys: Vec<Located<String>>,
}

impl Config {
    fn absent() -> Self {
        Config { table: toml::Table::new(), span: None, keys: Vec::new() }
    }
}

/// One entry of a bolt's `inputs`.
#[derive(Debug)]
pub(crate) struct RawInput {
    pub from: Located<String>,
    /// Where `from` is, when `stream` is not written.
    pub stream: Located<String>,
    /// None if the grouping is malformed (already reported).
    pub grouping: Option<RawGrouping>,
}

/// A grouping and where its parts are.
#[derive(Debug)]
pub(crate) struct RawGrouping {
    pub def: GroupingDef,
    /// The `grouping` value, or the input's `from` when `grouping` is not written.
    pub span: Span,
    /// For fields and partial_key groupings: where each field name is.
    pub field_spans: Vec<Span>,
    /// For custom groupings: where the kind is, and its config.
    pub custom: Option<(Span, Config)>,
}

const TOP_KEYS: &[&str] = &["name", "workers", "settings", "spouts", "bolts"];
const SETTINGS_KEYS: &[&str] =
    &["acking", "ackers", "message_timeout_secs", "max_spout_pending", "guarantee", "state"];
const STATE_KEYS: &[&str] = &["backend", "checkpoint_interval_ms", "broker", "url"];
/// The longest `checkpoint_interval_ms`: one day.
pub const MAX_CHECKPOINT_INTERVAL_MS: usize = 24 * 3600 * 1000;
const SPOUT_KEYS: &[&str] = &["id", "kind", "parallelism", "config", "tick_secs"];
const BOLT_KEYS: &[&str] = &["id", "kind", "parallelism", "config", "tick_secs", "inputs", "window"];
const WINDOW_KEYS: &[&str] =
    &["length", "slide", "timestamp_field", "lag", "watermark_interval", "idle_timeout", "late_stream"];

/// The most worker processes a topology may ask for.
pub const MAX_WORKERS: usize = 10_000;
/// The most tasks one component (its `parallelism`), or the ackers, may have.
pub const MAX_TASKS_PER_COMPONENT: usize = 100_000;
/// The most tasks a whole topology may have (spouts, bolts and ackers): task ids are 32-bit,
/// and every task is an async task with its own queue.
pub const MAX_TASKS: usize = 1_000_000;
/// The longest `message_timeout_secs` and `tick_secs`: one year, in seconds.
pub const MAX_SECONDS: usize = 365 * 24 * 3600;
/// The most in-flight messages `max_spout_pending` may allow per spout task (2^24).
pub const MAX_SPOUT_PENDING: usize = 1 << 24;
/// The longest duration a `window` key may give: one year.
pub const MAX_DURATION: Duration = Duration::from_secs(MAX_SECONDS as u64);

/// The most tuples a count window may hold or slide by: it keeps them in memory.
pub const MAX_WINDOW_COUNT: u64 = 10_000_000;
const DURATION_FORMS: &str = "a duration like \"10s\", \"500ms\", \"1m\" or \"1h 30m\"";
const SIZE_FORMS: &str = "a duration like \"10s\", \"500ms\" or \"1m\" (a time window) or a \
                          number of tuples like 100 (a count window)";
const INPUT_KEYS: &[&str] = &["from", "stream", "grouping"];
const GROUPING_KEYS: &[&str] = &["fields", "partial_key", "custom", "config"];
const GROUPING_NAMES: &[&str] = &["shuffle", "all", "global", "direct", "local_or_shuffle", "none"];

type Value<'i> = Spanned<DeValue<'i>>;

const NO_SPOUTS: &str = "the topology has no spouts: add at least one [[spouts]] entry, a source of tuples";

/// Parses `text` (see the module docs). None if it is not well-formed TOML.
pub(crate) fn parse(text: &str, p: &mut Problems) -> Option<FileDef> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            p.error(&span, format!("invalid TOML: {}", e.message()));
        }
        return None;
    }
    let root = root.into_inner();
    check_keys(&root, TOP_KEYS, "at the top level", p);

    let name = match root.get("name") {
        Some(v) => string("name", v, p).map_or_else(String::new, |name| {
            check_identifier("name", &name, p);
            name.value
        }),
        None => {
            p.error(&(0..0), "missing `name`: give the topology a name, e.g. name = \"wordcount\"");
            String::new()
        }
    };
    let workers = root.get("workers").and_then(|v| count("workers", v, 1..=MAX_WORKERS, p)).unwrap_or(1);
    let settings = root.get("settings").map(|v| settings(v, p)).unwrap_or_default();

    let mut components = Vec::new();
    for (key, role) in [("spouts", Role::Spout), ("bolts", Role::Bolt)] {
        let Some(value) = root.get(key) else { continue };
        match value.get_ref() {
            DeValue::Array(entries) if entries.is_empty() && role == Role::Spout => {
                p.error(&value.span(), NO_SPOUTS)
            }
            DeValue::Array(entries) => {
                components.extend(entries.iter().filter_map(|e| component(role, e, &settings, p)))
            }
            _ => type_error(key, &format!("an array of tables ([[{key}]])"), value, p),
        }
    }
    if root.get("spouts").is_none() {
        p.error(&(0..0), NO_SPOUTS);
    }
    check_task_total(&components, &settings, p);

    Some(FileDef { name, workers, settings, components })
}

/// Reports the component whose tasks take the topology's past [`MAX_TASKS`] (ackers count).
fn check_task_total(components: &[RawComponent], settings: &Settings, p: &mut Problems) {
    let ackers = if settings.acking { settings.ackers.max(1) } else { 0 };
    let mut total = ackers;
    for c in components {
        total += c.parallelism;
        if total > MAX_TASKS {
            p.error(
                &c.span,
                format!(
                    "with this component the topology has more than {MAX_TASKS} tasks (ackers \
                     included), the most supported; lower the parallelism of its components"
                ),
            );
            return;
        }
    }
}

fn settings(value: &Value, p: &mut Problems) -> Settings {
    let defaults = Settings::default();
    let Some(table) = table("settings", value, p) else {
        return defaults;
    };
    check_keys(table, SETTINGS_KEYS, "in [settings]", p);
    let mut acking = table.get("acking").and_then(|v| boolean("acking", v, p)).unwrap_or(defaults.acking);
    let ackers = table
        .get("ackers")
        .and_then(|v| count("ackers", v, 0..=MAX_TASKS_PER_COMPONENT, p))
        .unwrap_or(defaults.ackers);
    if ackers == 0 {
        // Storm: no ackers means nothing tracks tuple trees.
        acking = false;
    }
    let message_timeout_secs = table
        .get("message_timeout_secs")
        .and_then(|v| count("message_timeout_secs", v, 1..=MAX_SECONDS, p))
        .map_or(defaults.message_timeout_secs, |n| n as u64);
    let max_spout_pending = table
        .get("max_spout_pending")
        .and_then(|v| count("max_spout_pending", v, 0..=MAX_SPOUT_PENDING, p))
        .unwrap_or(defaults.max_spout_pending);
    let guarantee = table.get("guarantee").and_then(|v| guarantee(v, p)).unwrap_or(defaults.guarantee);
    let state = table.get("state").map_or(defaults.state, |v| state_settings(v, p));
    Settings {
        acking,
        ackers,
        message_timeout_secs,
        max_spout_pending,
        guarantee,
        state,
        // Every key is known and checked above, so a value that does not convert was
        // reported already.
        raw: to_toml_table(value).unwrap_or_default(),
    }
}

fn guarantee(value: &Value, p: &mut Problems) -> Option<squall_api::Guarantee> {
    use squall_api::Guarantee;
    let text = string("guarantee", value, p)?;
    match text.value.as_str() {
        "at_least_once" => Some(Guarantee::AtLeastOnce),
        "exactly_once" => Some(Guarantee::ExactlyOnce),
        other => {
            p.error(
                &text.span,
                format!("unknown guarantee \"{other}\"; expected \"at_least_once\" or \"exactly_once\""),
            );
            None
        }
    }
}

fn state_settings(value: &Value, p: &mut Problems) -> StateSettings {
    let defaults = StateSettings::default();
    let Some(table) = table("state", value, p) else {
        return defaults;
    };
    check_keys(table, STATE_KEYS, "in [settings] state", p);
    let backend =
        table.get("backend").and_then(|v| string("backend", v, p)).map_or(defaults.backend, |s| s.value);
    for key in ["broker", "url"] {
        if let Some(v) = table.get(key) {
            string(key, v, p);
        }
    }
    let checkpoint_interval = table
        .get("checkpoint_interval_ms")
        .and_then(|v| count("checkpoint_interval_ms", v, 1..=MAX_CHECKPOINT_INTERVAL_MS, p))
        .map_or(defaults.checkpoint_interval, |ms| Duration::from_millis(ms as u64));
    StateSettings { backend, checkpoint_interval, table: to_toml_table(value).unwrap_or_default() }
}

fn component(role: Role, value: &Value, settings: &Settings, p: &mut Problems) -> Option<RawComponent> {
    let (array, keys) = match role {
        Role::Spout => ("spouts", SPOUT_KEYS),
        Role::Bolt => ("bolts", BOLT_KEYS),
    };
    let DeValue::Table(table) = value.get_ref() else {
        let expected = format!("a table ([[{array}]])");
        p.error(
            &value.span(),
            format!("each entry of `{array}` must be {expected}, found {}", value.get_ref().type_str()),
        );
        return None;
    };
    let span = value.span();
    for (key, _) in table.iter() {
        if role == Role::Spout && key.get_ref() == "inputs" {
            p.error(
                &key.span(),
                "a spout takes no `inputs`: only bolts subscribe to streams; \
                 move this entry under [[bolts]] or remove `inputs`",
            );
        } else if role == Role::Spout && key.get_ref() == "window" {
            p.error(
                &key.span(),
                "a spout takes no `window`: only windowed bolts have windows; remove `window` \
                 and subscribe a windowed bolt to this spout instead",
            );
        } else if !keys.contains(&key.get_ref().as_ref()) {
            p.error(&key.span(), unknown_key(key.get_ref(), keys, &format!("in [[{array}]]")));
        }
    }

    let id = required(table, "id", &span, array, "a unique id, e.g. id = \"split\"", p)
        .and_then(|v| string("id", v, p));
    if let Some(id) = &id {
        if check_identifier("id", id, p) && id.value.starts_with("__") {
            p.error(
                &id.span,
                format!(
                    "id \"{}\" starts with `__`, which is reserved for Squall's own \
                     components; choose another id",
                    id.value
                ),
            );
        }
    }
    let kind = required(
        table,
        "kind",
        &span,
        array,
        "the registered kind to build, e.g. kind = \"split-sentence\"",
        p,
    )
    .and_then(|v| string("kind", v, p));
    let parallelism = table
        .get("parallelism")
        .and_then(|v| count("parallelism", v, 1..=MAX_TASKS_PER_COMPONENT, p))
        .unwrap_or(1);
    let config = match table.get("config") {
        Some(v) => config("config", v, p),
        None => Some(Config::absent()),
    };
    let tick_secs =
        table.get("tick_secs").and_then(|v| count("tick_secs", v, 1..=MAX_SECONDS, p)).map(|n| n as u64);

    let mut inputs = Vec::new();
    if role == Role::Bolt {
        match table.get("inputs") {
            None => p.error(
                &span,
                "missing `inputs` in [[bolts]]: subscribe the bolt to at least one stream, \
                 e.g. inputs = [{ from = \"sentences\" }]",
            ),
            Some(v) => match v.get_ref() {
                DeValue::Array(entries) if entries.is_empty() => p.error(
                    &v.span(),
                    "`inputs` must not be empty: subscribe the bolt to at least one stream, \
                     e.g. inputs = [{ from = \"sentences\" }]",
                ),
                DeValue::Array(entries) => {
                    inputs.extend(entries.iter().filter_map(|e| input(e, p)));
                }
                _ => type_error("inputs", "an array of tables", v, p),
            },
        }
    }

    let window = match (role, table.get_key_value("window")) {
        (Role::Bolt, Some((key, v))) => Some(window(key.span(), v, settings, p)),
        _ => None,
    };

    Some(RawComponent { role, span, id, kind, parallelism, config, tick_secs, window, inputs })
}

fn input(value: &Value, p: &mut Problems) -> Option<RawInput> {
    let DeValue::Table(table) = value.get_ref() else {
        p.error(
            &value.span(),
            format!(
                "each entry of `inputs` must be a table like {{ from = \"sentences\" }}, found {}",
                value.get_ref().type_str()
            ),
        );
        return None;
    };
    check_keys(table, INPUT_KEYS, "in an input", p);
    let from = match table.get("from") {
        Some(v) => string("from", v, p),
        None => {
            p.error(
                &value.span(),
                "input is missing `from`: the id of the component to subscribe to, \
                 e.g. { from = \"sentences\" }",
            );
            None
        }
    };
    let stream = table.get("stream").and_then(|v| string("stream", v, p));
    let grouping = table.get("grouping").map(|v| grouping(v, p));
    let from = from?;
    Some(RawInput {
        stream: stream.unwrap_or_else(|| Located {
            value: squall_api::DEFAULT_STREAM.to_string(),
            span: from.span.clone(),
        }),
        grouping: grouping.unwrap_or_else(|| {
            Some(RawGrouping {
                def: GroupingDef::Shuffle,
                span: from.span.clone(),
                field_spans: Vec::new(),
                custom: None,
            })
        }),
        from,
    })
}

fn grouping(value: &Value, p: &mut Problems) -> Option<RawGrouping> {
    let span = value.span();
    let table = match value.get_ref() {
        DeValue::String(name) => {
            let def = match name.as_ref() {
                "shuffle" => GroupingDef::Shuffle,
                "all" => GroupingDef::All,
                "global" => GroupingDef::Global,
                "direct" => GroupingDef::Direct,
                "local_or_shuffle" => GroupingDef::LocalOrShuffle,
                "none" => GroupingDef::None,
                other => {
                    p.error(
                        &span,
                        format!(
                            "unknown grouping \"{other}\"; valid groupings: {}, or a table: \
                             {{ fields = [...] }}, {{ partial_key = [...] }}, \
                             {{ custom = \"kind\" }}",
                            GROUPING_NAMES.join(", ")
                        ),
                    );
                    return None;
                }
            };
            return Some(RawGrouping { def, span, field_spans: Vec::new(), custom: None });
        }
        DeValue::Table(table) => table,
        other => {
            p.error(
                &span,
                format!(
                    "`grouping` must be a string (\"shuffle\", ...) or a table \
                     ({{ fields = [...] }}, ...), found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };

    check_keys(table, GROUPING_KEYS, "in a grouping", p);
    let mut chosen: Vec<_> = table
        .iter()
        .filter(|(k, _)| ["fields", "partial_key", "custom"].contains(&k.get_ref().as_ref()))
        .collect();
    chosen.sort_by_key(|(k, _)| k.span().start);
    let (key, value) = match chosen.as_slice() {
        [one] => *one,
        [] => {
            p.error(
                &span,
                "a grouping table needs one of `fields = [...]`, `partial_key = [...]` or \
                 `custom = \"kind\"`",
            );
            return None;
        }
        [_, extra @ ..] => {
            for (k, _) in extra {
                p.error(
                    &k.span(),
                    format!(
                        "a grouping table takes only one of `fields`, `partial_key` or \
                         `custom`; remove `{}`",
                        k.get_ref()
                    ),
                );
            }
            return None;
        }
    };
    let config_value = table.get("config");
    if key.get_ref() != "custom" {
        if let Some((config_key, _)) = table.get_key_value("config") {
            p.error(
                &config_key.span(),
                "`config` applies only to a custom grouping ({ custom = \"kind\", config = {...} })",
            );
        }
    }

    match key.get_ref().as_ref() {
        "custom" => {
            let kind = string("custom", value, p);
            let config = match config_value {
                Some(v) => config("config", v, p),
                None => Some(Config::absent()),
            };
            let (kind, config) = (kind?, config?);
            Some(RawGrouping {
                def: GroupingDef::Custom { kind: kind.value, config: config.table.clone() },
                span,
                field_spans: Vec::new(),
                custom: Some((kind.span, config)),
            })
        }
        name => {
            let fields = field_list(name, value, p)?;
            let (names, field_spans): (Vec<String>, Vec<Span>) =
                fields.into_iter().map(|f| (f.value, f.span)).unzip();
            let def =
                if name == "fields" { GroupingDef::Fields(names) } else { GroupingDef::PartialKey(names) };
            Some(RawGrouping { def, span, field_spans, custom: None })
        }
    }
}

/// A `window` table (see the module docs); its spec is None if it has any mistake.
fn window(key_span: Span, value: &Value, settings: &Settings, p: &mut Problems) -> RawWindow {
    let mut raw = RawWindow { key_span, spec: None, timestamp_field: None, late_stream: None };
    let before = p.len();
    let Some(table) = table("window", value, p) else {
        return raw;
    };
    check_keys(table, WINDOW_KEYS, "in `window`", p);
    let length = match table.get("length") {
        Some(v) => size("length", v, p).map(|size| (size, v.span())),
        None => {
            p.error(
                &value.span(),
                format!("missing `length` in `window`: give it {SIZE_FORMS}, e.g. length = \"10s\""),
            );
            None
        }
    };
    let slide = table.get("slide").and_then(|v| size("slide", v, p).map(|size| (size, v.span())));
    let timestamp_field = table.get("timestamp_field").and_then(|v| string("timestamp_field", v, p));
    let lag = table.get("lag").and_then(|v| duration("lag", v, false, p));
    let watermark_interval =
        table.get("watermark_interval").and_then(|v| duration("watermark_interval", v, true, p));
    let idle_timeout = table.get("idle_timeout").and_then(|v| duration("idle_timeout", v, true, p));
    let late_stream = table
        .get("late_stream")
        .and_then(|v| string("late_stream", v, p))
        .filter(|name| check_identifier("late_stream", name, p));
    if let Some(field) = timestamp_field.as_ref().filter(|f| f.value.is_empty()) {
        p.error(&field.span, "`timestamp_field` must name a field, found an empty string");
    }

    if let (Some((length, _)), Some((slide, slide_span))) = (&length, &slide) {
        let longer = match (*length, *slide) {
            (Size::Count(l), Size::Count(s)) => s > l,
            (Size::Time(l), Size::Time(s)) => s > l,
            _ => false,
        };
        if longer {
            p.error(
                slide_span,
                format!(
                    "`slide` {} is longer than `length` {}: a window slides by at most its length; \
                     give a slide of at most {} (or none: a tumbling window)",
                    show_size(slide),
                    show_size(length),
                    show_size(length)
                ),
            );
        }
    }
    if let (true, Some((Size::Time(length), length_span))) = (settings.acking, &length) {
        let lag = lag.unwrap_or_default();
        let held = length.saturating_add(lag);
        if held > Duration::from_secs(settings.message_timeout_secs) {
            let with_lag =
                if lag.is_zero() { String::new() } else { format!(" plus `lag` {}", show_duration(lag)) };
            let needed = held.as_secs() + u64::from(held.subsec_nanos() > 0);
            p.error(
                length_span,
                format!(
                    "a window of `length` {}{with_lag} holds its tuples {} before it fires, longer \
                     than message_timeout_secs = {} in [settings]: they would time out first; \
                     shorten the window or set message_timeout_secs to at least {needed}",
                    show_duration(*length),
                    show_duration(held),
                    settings.message_timeout_secs
                ),
            );
        }
    }

    raw.timestamp_field = timestamp_field.as_ref().map(|f| f.span.clone());
    raw.late_stream = late_stream.as_ref().map(|s| s.span.clone());
    if let (true, Some((length, _))) = (p.len() == before, length) {
        raw.spec = Some(WindowSpec {
            length,
            slide: slide.map_or(length, |(slide, _)| slide),
            timestamp_field: timestamp_field.map(|f| f.value),
            lag: lag.unwrap_or_default(),
            watermark_interval: watermark_interval.unwrap_or(DEFAULT_WATERMARK_INTERVAL),
            idle_timeout,
            late_stream: late_stream.map(|s| s.value),
        });
    }
    raw
}

/// A window's length or slide: a duration string or a count of tuples.
fn size(key: &str, value: &Value, p: &mut Problems) -> Option<Size> {
    match value.get_ref() {
        DeValue::String(text) => parse_duration(key, text, &value.span(), true, p).map(Size::Time),
        DeValue::Integer(n) => match i128::from_str_radix(n.as_str(), n.radix()) {
            Ok(count) if count < 1 => {
                p.error(
                    &value.span(),
                    format!("`{key}` must be at least 1 tuple, found {count}; or a duration like \"10s\""),
                );
                None
            }
            Ok(count) if count <= i128::from(MAX_WINDOW_COUNT) => Some(Size::Count(count as u64)),
            _ => {
                p.error(
                    &value.span(),
                    format!(
                        "`{key}` must be at most {MAX_WINDOW_COUNT} tuples (a count window keeps \
                         its tuples in memory), found {}; for more, use a time window like \"10m\"",
                        n.as_str()
                    ),
                );
                None
            }
        },
        _ => {
            type_error(key, SIZE_FORMS, value, p);
            None
        }
    }
}

/// A duration string; zero only if not `positive`.
fn duration(key: &str, value: &Value, positive: bool, p: &mut Problems) -> Option<Duration> {
    match value.get_ref() {
        DeValue::String(text) => parse_duration(key, text, &value.span(), positive, p),
        _ => {
            type_error(key, &format!("{DURATION_FORMS} (a string)"), value, p);
            None
        }
    }
}

fn parse_duration(key: &str, text: &str, span: &Span, positive: bool, p: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Err(_) => p.error(
            span,
            format!(
                "`{key}` must be {DURATION_FORMS} (a number and a unit: ms, s, m, h, d), \
                 found \"{text}\""
            ),
        ),
        Ok(d) if d.subsec_nanos() % 1_000_000 != 0 => {
            p.error(span, format!("`{key}` must be whole milliseconds, found \"{text}\""))
        }
        Ok(d) if positive && d.is_zero() => {
            p.error(span, format!("`{key}` must be longer than 0, found \"{text}\""))
        }
        Ok(d) if d > MAX_DURATION => {
            p.error(span, format!("`{key}` must be at most 365 days, found \"{text}\""))
        }
        Ok(d) => return Some(d),
    }
    None
}

fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn show_size(size: &Size) -> String {
    match size {
        Size::Count(n) => format!("{n} tuples"),
        Size::Time(d) => show_duration(*d),
    }
}

/// A non-empty array of field names.
fn field_list(key: &str, value: &Value, p: &mut Problems) -> Option<Vec<Located<String>>> {
    let DeValue::Array(items) = value.get_ref() else {
        type_error(key, "an array of field names", value, p);
        return None;
    };
    if items.is_empty() {
        p.error(&value.span(), format!("`{key}` must not be empty: name at least one field to group by"));
        return None;
    }
    let mut names = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(name) => names.push(Located { value: name.to_string(), span: item.span() }),
            other => p.error(
                &item.span(),
                format!("`{key}` must list field names (strings), found {}", other.type_str()),
            ),
        }
    }
    (names.len() == items.len()).then_some(names)
}

// ---- Helpers: keys and typed values. ----

/// Reports every key of `table` not in `valid`.
fn check_keys(table: &DeTable, valid: &[&str], place: &str, p: &mut Problems) {
    for (key, _) in table.iter() {
        if !valid.contains(&key.get_ref().as_ref()) {
            p.error(&key.span(), unknown_key(key.get_ref(), valid, place));
        }
    }
}

fn unknown_key(key: &str, valid: &[&str], place: &str) -> String {
    let hint = valid
        .iter()
        .map(|v| (edit_distance(key, v), v))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| format!(" (did you mean `{v}`?)"))
        .unwrap_or_default();
    format!("unknown key `{key}` {place}{hint}; valid keys: {}", valid.join(", "))
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The value of a required key; a missing key is reported at the table.
fn required<'t, 'i>(
    table: &'t DeTable<'i>,
    key: &str,
    table_span: &Span,
    array: &str,
    what: &str,
    p: &mut Problems,
) -> Option<&'t Value<'i>> {
    let value = table.get(key);
    if value.is_none() {
        p.error(table_span, format!("missing `{key}` in [[{array}]]: give it {what}"));
    }
    value
}

fn type_error(key: &str, expected: &str, value: &Value, p: &mut Problems) {
    p.error(&value.span(), format!("`{key}` must be {expected}, found {}", value.get_ref().type_str()));
}

fn string(key: &str, value: &Value, p: &mut Problems) -> Option<Located<String>> {
    match value.get_ref() {
        DeValue::String(s) => Some(Located { value: s.to_string(), span: value.span() }),
        _ => {
            type_error(key, "a string", value, p);
            None
        }
    }
}

fn boolean(key: &str, value: &Value, p: &mut Problems) -> Option<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            type_error(key, "a boolean (true or false)", value, p);
            None
        }
    }
}

/// A whole number in `range` (whose end is one of the documented maxima above).
fn count(key: &str, value: &Value, range: RangeInclusive<usize>, p: &mut Problems) -> Option<usize> {
    let DeValue::Integer(n) = value.get_ref() else {
        type_error(key, "an integer", value, p);
        return None;
    };
    let (min, max) = (*range.start(), *range.end());
    match i128::from_str_radix(n.as_str(), n.radix()) {
        Ok(parsed) if parsed < min as i128 => {
            p.error(&value.span(), format!("{key} must be at least {min}, found {parsed}"))
        }
        Ok(parsed) if parsed <= max as i128 => return Some(parsed as usize),
        _ => p.error(&value.span(), format!("{key} must be at most {max}, found {}", n.as_str())),
    }
    None
}

fn table<'t, 'i>(key: &str, value: &'t Value<'i>, p: &mut Problems) -> Option<&'t DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => {
            type_error(key, "a table", value, p);
            None
        }
    }
}

/// A `config` table, converted for a factory.
fn config(key: &str, value: &Value, p: &mut Problems) -> Option<Config> {
    let keys = table(key, value, p)?
        .iter()
        .map(|(k, _)| Located { value: k.get_ref().to_string(), span: k.span() })
        .collect();
    let table = match to_toml_table(value) {
        Ok(table) => table,
        Err(e) => {
            let span = e.span().unwrap_or_else(|| value.span());
            p.error(&span, format!("unsupported value: {}", e.message()));
            return None;
        }
    };
    Some(Config { table, span: Some(value.span()), keys })
}

fn to_toml_table(value: &Value) -> Result<toml::Table, toml::de::Error> {
    toml::Table::deserialize(ValueDeserializer::from(value.clone()))
}

/// Checks that a name or id is non-empty ASCII letters, digits, `-` and `_`; true if so.
fn check_identifier(key: &str, value: &Located<String>, p: &mut Problems) -> bool {
    let valid = !value.value.is_empty()
        && value.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        let found = if value.value.is_empty() {
            "an empty string".to_string()
        } else {
            format!("\"{}\"", value.value)
        };
        p.error(
            &value.span,
            format!("`{key}` must be non-empty and only letters, digits, `-` and `_`, found {found}"),
        );
    }
    valid
}
