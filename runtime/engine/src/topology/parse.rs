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

use serde::Deserialize;
use squall_api::Role;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::report::{Problems, Span};
use super::{GroupingDef, Settings};

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
    /// The inputs that name a `from`.
    pub inputs: Vec<RawInput>,
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
const SETTINGS_KEYS: &[&str] = &["acking", "ackers", "message_timeout_secs", "max_spout_pending"];
const SPOUT_KEYS: &[&str] = &["id", "kind", "parallelism", "config", "tick_secs"];
const BOLT_KEYS: &[&str] = &["id", "kind", "parallelism", "config", "tick_secs", "inputs"];
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
    let workers = root.get("workers").and_then(|v| count("workers", v, 1, p)).unwrap_or(1);
    let settings = root.get("settings").map(|v| settings(v, p)).unwrap_or_default();

    let mut components = Vec::new();
    for (key, role) in [("spouts", Role::Spout), ("bolts", Role::Bolt)] {
        let Some(value) = root.get(key) else { continue };
        match value.get_ref() {
            DeValue::Array(entries) if entries.is_empty() && role == Role::Spout => {
                p.error(&value.span(), NO_SPOUTS)
            }
            DeValue::Array(entries) => {
                components.extend(entries.iter().filter_map(|e| component(role, e, p)))
            }
            _ => type_error(key, &format!("an array of tables ([[{key}]])"), value, p),
        }
    }
    if root.get("spouts").is_none() {
        p.error(&(0..0), NO_SPOUTS);
    }

    Some(FileDef { name, workers, settings, components })
}

fn settings(value: &Value, p: &mut Problems) -> Settings {
    let defaults = Settings::default();
    let Some(table) = table("settings", value, p) else {
        return defaults;
    };
    check_keys(table, SETTINGS_KEYS, "in [settings]", p);
    let mut acking = table.get("acking").and_then(|v| boolean("acking", v, p)).unwrap_or(defaults.acking);
    let ackers = table.get("ackers").and_then(|v| count("ackers", v, 0, p)).unwrap_or(defaults.ackers);
    if ackers == 0 {
        // Storm: no ackers means nothing tracks tuple trees.
        acking = false;
    }
    let message_timeout_secs = table
        .get("message_timeout_secs")
        .and_then(|v| count("message_timeout_secs", v, 1, p))
        .map_or(defaults.message_timeout_secs, |n| n as u64);
    let max_spout_pending = table
        .get("max_spout_pending")
        .and_then(|v| count("max_spout_pending", v, 0, p))
        .unwrap_or(defaults.max_spout_pending);
    Settings {
        acking,
        ackers,
        message_timeout_secs,
        max_spout_pending,
        // Every key is known and checked above, so a value that does not convert was
        // reported already.
        raw: to_toml_table(value).unwrap_or_default(),
    }
}

fn component(role: Role, value: &Value, p: &mut Problems) -> Option<RawComponent> {
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
    let parallelism = table.get("parallelism").and_then(|v| count("parallelism", v, 1, p)).unwrap_or(1);
    let config = match table.get("config") {
        Some(v) => config("config", v, p),
        None => Some(Config::absent()),
    };
    let tick_secs = table.get("tick_secs").and_then(|v| count("tick_secs", v, 1, p)).map(|n| n as u64);

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

    Some(RawComponent { role, span, id, kind, parallelism, config, tick_secs, inputs })
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

/// A whole number at least `min`.
fn count(key: &str, value: &Value, min: usize, p: &mut Problems) -> Option<usize> {
    let DeValue::Integer(n) = value.get_ref() else {
        type_error(key, "an integer", value, p);
        return None;
    };
    let Some(parsed) = i128::from_str_radix(n.as_str(), n.radix()).ok() else {
        p.error(&value.span(), format!("{key} is too large: {n}"));
        return None;
    };
    if parsed < min as i128 {
        p.error(&value.span(), format!("{key} must be at least {min}, found {parsed}"));
        return None;
    }
    match usize::try_from(parsed) {
        Ok(n) => Some(n),
        Err(_) => {
            p.error(&value.span(), format!("{key} is too large: {n}"));
            None
        }
    }
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
