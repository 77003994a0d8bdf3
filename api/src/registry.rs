//! The registry: component kinds by name.
//!
//! Contract: a binary registers each spout, bolt and custom grouping it ships under a kind
//! name ("split-sentence") with a factory. A factory gets the component's `config` table from
//! the topology file, deserialized with serde into the component's own config type, and builds
//! one instance; it is called once per task (and once more when a topology is validated, to
//! learn the streams the component declares). A config that does not deserialize, or that the
//! factory rejects, is an error naming the kind.
//!
//! A bolt kind registered with [`Registry::windowed_bolt`] or [`Registry::aggregate_bolt`] is
//! a windowed bolt ([`Registry::is_windowed`]): a topology file must give it a `window` table,
//! and may give one to no other kind.
//!
//! A registered kind may carry its documentation, a [`KindDoc`] given with
//! [`Registry::describe`]: a one-line summary, every config key with its default and meaning,
//! and the fields it emits. `squall kinds` prints it, so what users read comes from the
//! binary they run. Registering a kind again drops the old kind's documentation with it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::bolt::{BasicBolt, Bolt};
use crate::grouping::CustomGrouping;
use crate::spout::Spout;
use crate::state::{BackendConfig, DynStateful, MemoryBackend, StateBackend, StatefulBolt, WithState};
use crate::stream::OutputDeclarer;
use crate::window::{DynAggregate, WindowAggregate, WindowedBolt};
use crate::BoxError;

/// One built component instance.
pub enum Component {
    Spout(Box<dyn Spout>),
    Bolt(Box<dyn Bolt>),
    BasicBolt(Box<dyn BasicBolt>),
    /// A bolt that processes a window at a time.
    Windowed(Box<dyn WindowedBolt>),
    /// A bolt that aggregates each window incrementally, per key.
    Aggregate(Box<dyn DynAggregate>),
    /// A bolt with a checkpointed key-value state.
    Stateful(Box<dyn DynStateful>),
}

impl Component {
    pub fn role(&self) -> Role {
        match self {
            Component::Spout(_) => Role::Spout,
            Component::Bolt(_) | Component::BasicBolt(_) => Role::Bolt,
            Component::Windowed(_) | Component::Aggregate(_) | Component::Stateful(_) => Role::Bolt,
        }
    }

    /// Whether this is a windowed bolt (it needs a `window` in the topology file).
    pub fn is_windowed(&self) -> bool {
        matches!(self, Component::Windowed(_) | Component::Aggregate(_))
    }

    /// The streams this instance declares.
    pub fn declare_outputs(&self) -> OutputDeclarer {
        let mut d = OutputDeclarer::new();
        match self {
            Component::Spout(s) => s.declare_outputs(&mut d),
            Component::Bolt(b) => b.declare_outputs(&mut d),
            Component::BasicBolt(b) => b.declare_outputs(&mut d),
            Component::Windowed(b) => b.declare_outputs(&mut d),
            Component::Aggregate(a) => a.declare_outputs(&mut d),
            Component::Stateful(b) => b.declare_outputs(&mut d),
        }
        d
    }

    pub fn tick_interval(&self) -> Option<std::time::Duration> {
        match self {
            Component::Spout(_)
            | Component::Windowed(_)
            | Component::Aggregate(_)
            | Component::Stateful(_) => None,
            Component::Bolt(b) => b.tick_interval(),
            Component::BasicBolt(b) => b.tick_interval(),
        }
    }
}

/// Whether a kind is a spout or a bolt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Spout,
    Bolt,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Spout => "spout",
            Role::Bolt => "bolt",
        })
    }
}

/// The config type of a component that takes no configuration: any key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

type ComponentFactory = Arc<dyn Fn(&toml::Table) -> Result<Component, BoxError> + Send + Sync>;
type GroupingFactory = Arc<dyn Fn(&toml::Table) -> Result<Box<dyn CustomGrouping>, BoxError> + Send + Sync>;
type BackendFactory =
    Arc<dyn Fn(&BackendConfig<'_>) -> Result<Arc<dyn StateBackend>, BoxError> + Send + Sync>;

#[derive(Clone)]
struct Entry {
    role: Role,
    /// Built as [`Component::Windowed`] or [`Component::Aggregate`].
    windowed: bool,
    /// Built as [`Component::Aggregate`]: its windows are time windows.
    aggregate: bool,
    /// Built as [`Component::Stateful`].
    stateful: bool,
    /// A spout that can rewind to a checkpointed position.
    rewindable: bool,
    factory: ComponentFactory,
    doc: Option<KindDoc>,
}

/// A kind's documentation: what `squall kinds KIND` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindDoc {
    /// One line: what the component does.
    pub summary: &'static str,
    /// Every key its `config` table takes, in the order to read them.
    pub config: &'static [ConfigKey],
    /// What it emits with its default config.
    pub emits: Emits,
}

/// One key of a kind's `config` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfigKey {
    pub name: &'static str,
    pub default: KeyDefault,
    /// What the key means, one line.
    pub meaning: &'static str,
}

/// What a config key is when the topology file leaves it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDefault {
    /// The key must be given; `example` is a valid value, in TOML.
    Required { example: &'static str },
    /// This value, in TOML (`0`, `"!!!"`, `false`).
    Value(&'static str),
    /// Something no value says (`random`, `<topology>.<component>`); `example` is a valid
    /// value, in TOML.
    Unset { means: &'static str, example: &'static str },
}

impl KeyDefault {
    /// A value the key takes, in TOML: its default or its example.
    pub fn example(&self) -> &'static str {
        match *self {
            KeyDefault::Required { example } | KeyDefault::Unset { example, .. } => example,
            KeyDefault::Value(value) => value,
        }
    }
}

impl fmt::Display for KeyDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDefault::Required { .. } => f.write_str("(required)"),
            KeyDefault::Value(value) => f.write_str(value),
            KeyDefault::Unset { means, .. } => write!(f, "({means})"),
        }
    }
}

impl ConfigKey {
    /// A key that must be given, e.g. `ConfigKey::required("topic", "\"in\"", "the topic")`.
    pub const fn required(name: &'static str, example: &'static str, meaning: &'static str) -> Self {
        ConfigKey { name, default: KeyDefault::Required { example }, meaning }
    }

    /// A key with a default value, in TOML.
    pub const fn value(name: &'static str, default: &'static str, meaning: &'static str) -> Self {
        ConfigKey { name, default: KeyDefault::Value(default), meaning }
    }

    /// A key whose absence means something no value says.
    pub const fn unset(
        name: &'static str,
        means: &'static str,
        example: &'static str,
        meaning: &'static str,
    ) -> Self {
        ConfigKey { name, default: KeyDefault::Unset { means, example }, meaning }
    }
}

/// What a kind emits on its default stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Emits {
    /// Nothing: a sink.
    Nothing,
    /// These fields.
    Fields(&'static [&'static str]),
    /// Its input's fields, whatever they are.
    Passthrough,
    /// The streams and fields its config declares (`fields` / `streams` keys).
    Configured,
}

impl fmt::Display for Emits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Emits::Nothing => f.write_str("nothing"),
            Emits::Fields(fields) => f.write_str(&fields.join(", ")),
            Emits::Passthrough => f.write_str("its input's fields"),
            Emits::Configured => f.write_str("the fields its config declares"),
        }
    }
}

/// Component and custom-grouping kinds by name.
#[derive(Default, Clone)]
pub struct Registry {
    components: BTreeMap<String, Arc<Entry>>,
    groupings: BTreeMap<String, GroupingFactory>,
    backends: BTreeMap<String, BackendFactory>,
}

fn config_of<C: DeserializeOwned>(table: &toml::Table) -> Result<C, BoxError> {
    toml::Value::Table(table.clone()).try_into::<C>().map_err(|e| e.message().to_string().into())
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a spout kind built from config type `C`.
    pub fn spout<C, S, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        S: Spout,
        F: Fn(C) -> Result<S, BoxError> + Send + Sync + 'static,
    {
        let factory: ComponentFactory =
            Arc::new(move |t| Ok(Component::Spout(Box::new(build(config_of(t)?)?))));
        self.insert(kind, Role::Spout, factory)
    }

    /// Registers a spout kind that can rewind ([`Spout::position`], [`Spout::rewind`]): the
    /// kinds a topology with `guarantee = "exactly_once"` may use.
    pub fn rewindable_spout<C, S, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        S: Spout,
        F: Fn(C) -> Result<S, BoxError> + Send + Sync + 'static,
    {
        self.spout(kind, build);
        Arc::make_mut(self.components.get_mut(kind).expect("just inserted")).rewindable = true;
        self
    }

    /// Registers a stateful bolt kind built from config type `C`.
    pub fn stateful_bolt<C, B, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        B: StatefulBolt,
        F: Fn(C) -> Result<B, BoxError> + Send + Sync + 'static,
    {
        let factory: ComponentFactory = Arc::new(move |t| {
            let bolt: Box<dyn DynStateful> = Box::new(WithState::new(build(config_of(t)?)?));
            Ok(Component::Stateful(bolt))
        });
        self.insert(kind, Role::Bolt, factory);
        Arc::make_mut(self.components.get_mut(kind).expect("just inserted")).stateful = true;
        self
    }

    /// Registers a state backend under `name` (`[settings] state = { backend = "name", … }`).
    /// `memory` is always there.
    pub fn state_backend<F>(&mut self, name: &str, build: F) -> &mut Self
    where
        F: Fn(&BackendConfig<'_>) -> Result<Arc<dyn StateBackend>, BoxError> + Send + Sync + 'static,
    {
        self.backends.insert(name.to_string(), Arc::new(build));
        self
    }

    /// Registered state backends' names, `memory` included, sorted.
    pub fn state_backends(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.backends.keys().map(String::as_str).collect();
        if !self.backends.contains_key("memory") {
            names.push("memory");
            names.sort_unstable();
        }
        names
    }

    /// Opens the state backend `name` for a topology.
    pub fn build_state_backend(
        &self,
        name: &str,
        config: &BackendConfig<'_>,
    ) -> Result<Arc<dyn StateBackend>, BoxError> {
        match self.backends.get(name) {
            Some(factory) => factory(config),
            None if name == "memory" => Ok(Arc::new(MemoryBackend::new())),
            None => {
                Err(format!("unknown state backend \"{name}\" (known: {})", self.state_backends().join(", "))
                    .into())
            }
        }
    }

    /// Registers a bolt kind built from config type `C`.
    pub fn bolt<C, B, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        B: Bolt,
        F: Fn(C) -> Result<B, BoxError> + Send + Sync + 'static,
    {
        let factory: ComponentFactory =
            Arc::new(move |t| Ok(Component::Bolt(Box::new(build(config_of(t)?)?))));
        self.insert(kind, Role::Bolt, factory)
    }

    /// Registers a basic bolt kind built from config type `C`.
    pub fn basic_bolt<C, B, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        B: BasicBolt,
        F: Fn(C) -> Result<B, BoxError> + Send + Sync + 'static,
    {
        let factory: ComponentFactory =
            Arc::new(move |t| Ok(Component::BasicBolt(Box::new(build(config_of(t)?)?))));
        self.insert(kind, Role::Bolt, factory)
    }

    /// Registers a windowed bolt kind built from config type `C`: a bolt that processes a
    /// window at a time, as the topology file's `window` table sets it.
    pub fn windowed_bolt<C, B, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        B: WindowedBolt,
        F: Fn(C) -> Result<B, BoxError> + Send + Sync + 'static,
    {
        let factory: ComponentFactory =
            Arc::new(move |t| Ok(Component::Windowed(Box::new(build(config_of(t)?)?))));
        self.insert_windowed(kind, false, factory)
    }

    /// Registers an aggregate bolt kind built from config type `C`: a windowed bolt that
    /// keeps an accumulator per key and window instead of the window's tuples.
    pub fn aggregate_bolt<C, A, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        A: WindowAggregate,
        F: Fn(C) -> Result<A, BoxError> + Send + Sync + 'static,
    {
        let factory: ComponentFactory = Arc::new(move |t| {
            let aggregate: Box<dyn DynAggregate> = Box::new(build(config_of(t)?)?);
            Ok(Component::Aggregate(aggregate))
        });
        self.insert_windowed(kind, true, factory)
    }

    /// Registers a custom grouping kind built from config type `C`.
    pub fn grouping<C, G, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        G: CustomGrouping,
        F: Fn(C) -> Result<G, BoxError> + Send + Sync + 'static,
    {
        let factory: GroupingFactory = Arc::new(move |t| Ok(Box::new(build(config_of(t)?)?)));
        self.groupings.insert(kind.to_string(), factory);
        self
    }

    fn insert(&mut self, kind: &str, role: Role, factory: ComponentFactory) -> &mut Self {
        let entry = Entry {
            role,
            windowed: false,
            aggregate: false,
            stateful: false,
            rewindable: false,
            factory,
            doc: None,
        };
        self.components.insert(kind.to_string(), Arc::new(entry));
        self
    }

    fn insert_windowed(&mut self, kind: &str, aggregate: bool, factory: ComponentFactory) -> &mut Self {
        let entry = Entry {
            role: Role::Bolt,
            windowed: true,
            aggregate,
            stateful: false,
            rewindable: false,
            factory,
            doc: None,
        };
        self.components.insert(kind.to_string(), Arc::new(entry));
        self
    }

    /// Attaches documentation to a registered kind (`squall kinds KIND` prints it).
    ///
    /// # Panics
    ///
    /// If `kind` is not registered (yet): register it first.
    pub fn describe(&mut self, kind: &str, doc: KindDoc) -> &mut Self {
        let Some(entry) = self.components.get_mut(kind) else {
            panic!("Registry::describe(\"{kind}\"): no such kind; register it before describing it");
        };
        Arc::make_mut(entry).doc = Some(doc);
        self
    }

    /// A kind's documentation, if it has any.
    pub fn doc(&self, kind: &str) -> Option<&KindDoc> {
        self.components.get(kind).and_then(|e| e.doc.as_ref())
    }

    /// Adds every kind of `other` (later registrations of a name win).
    pub fn merge(&mut self, other: &Registry) -> &mut Self {
        self.components.extend(other.components.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.groupings.extend(other.groupings.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.backends.extend(other.backends.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// The role of a kind, if registered.
    pub fn role(&self, kind: &str) -> Option<Role> {
        self.components.get(kind).map(|e| e.role)
    }

    /// Whether `kind` is registered as a windowed bolt (with [`Registry::windowed_bolt`] or
    /// [`Registry::aggregate_bolt`]); false if it is not registered.
    pub fn is_windowed(&self, kind: &str) -> bool {
        self.components.get(kind).is_some_and(|e| e.windowed)
    }

    /// Whether `kind` is registered as an aggregate bolt ([`Registry::aggregate_bolt`]): it
    /// keeps accumulators per key and time window, so it takes time windows only.
    pub fn is_aggregate(&self, kind: &str) -> bool {
        self.components.get(kind).is_some_and(|e| e.aggregate)
    }

    /// Whether `kind` is registered as a stateful bolt ([`Registry::stateful_bolt`]).
    pub fn is_stateful(&self, kind: &str) -> bool {
        self.components.get(kind).is_some_and(|e| e.stateful)
    }

    /// Whether `kind` is registered as a spout that can rewind ([`Registry::rewindable_spout`]).
    pub fn is_rewindable(&self, kind: &str) -> bool {
        self.components.get(kind).is_some_and(|e| e.rewindable)
    }

    /// Registered windowed bolt kinds, sorted.
    pub fn windowed_kinds(&self) -> impl Iterator<Item = &str> {
        self.components.iter().filter(|(_, e)| e.windowed).map(|(k, _)| k.as_str())
    }

    /// Registered component kinds with their roles, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, Role)> {
        self.components.iter().map(|(k, e)| (k.as_str(), e.role))
    }

    /// Registered custom grouping kinds, sorted.
    pub fn grouping_kinds(&self) -> impl Iterator<Item = &str> {
        self.groupings.keys().map(String::as_str)
    }

    pub fn has_grouping(&self, kind: &str) -> bool {
        self.groupings.contains_key(kind)
    }

    /// Builds one instance of `kind` from its config table.
    pub fn build(&self, kind: &str, config: &toml::Table) -> Result<Component, BoxError> {
        let entry = self.components.get(kind).ok_or_else(|| format!("unknown component kind \"{kind}\""))?;
        (entry.factory)(config)
    }

    /// Builds one custom grouping of `kind` from its config table.
    pub fn build_grouping(
        &self,
        kind: &str,
        config: &toml::Table,
    ) -> Result<Box<dyn CustomGrouping>, BoxError> {
        let factory = self.groupings.get(kind).ok_or_else(|| format!("unknown grouping kind \"{kind}\""))?;
        factory(config)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("components", &self.components.keys().collect::<Vec<_>>())
            .field("groupings", &self.groupings.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{async_trait, BasicCollector, Tuple};

    struct Nop;

    #[async_trait]
    impl BasicBolt for Nop {
        fn declare_outputs(&self, _: &mut OutputDeclarer) {}
        async fn execute(&mut self, _: &Tuple, _: &mut BasicCollector<'_>) -> Result<(), BoxError> {
            Ok(())
        }
    }

    const DOC: KindDoc = KindDoc {
        summary: "does nothing",
        config: &[ConfigKey::value("n", "1", "how much nothing")],
        emits: Emits::Nothing,
    };

    #[test]
    fn a_described_kind_keeps_its_doc_until_registered_again() {
        let mut registry = Registry::new();
        registry.basic_bolt("nop", |_: NoConfig| Ok(Nop)).describe("nop", DOC);
        assert_eq!(registry.doc("nop"), Some(&DOC));
        let mut merged = Registry::new();
        merged.merge(&registry);
        assert_eq!(merged.doc("nop"), Some(&DOC));
        registry.basic_bolt("nop", |_: NoConfig| Ok(Nop));
        assert_eq!(registry.doc("nop"), None);
        assert_eq!(merged.doc("nop"), Some(&DOC), "a merged copy is its own");
    }

    struct Window;

    #[async_trait]
    impl crate::WindowedBolt for Window {
        async fn execute(
            &mut self,
            _: &crate::TupleWindow<'_>,
            _: &mut crate::WindowCollector<'_>,
        ) -> Result<(), BoxError> {
            Ok(())
        }
    }

    struct Count;

    impl WindowAggregate for Count {
        type Acc = i64;
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["count"]);
        }
        fn key(&self, _: &Tuple) -> Result<crate::Value, BoxError> {
            Ok(crate::Value::Null)
        }
        fn create(&self) -> i64 {
            0
        }
        fn add(&self, acc: &mut i64, _: &Tuple) -> Result<(), BoxError> {
            *acc += 1;
            Ok(())
        }
        fn merge(&self, a: i64, b: i64) -> i64 {
            a + b
        }
        fn result(&self, _: &crate::Value, acc: &i64, _: i64, _: i64) -> crate::Values {
            crate::values![*acc]
        }
    }

    #[test]
    fn windowed_and_aggregate_kinds_are_windowed_bolts() {
        let mut registry = Registry::new();
        registry
            .basic_bolt("nop", |_: NoConfig| Ok(Nop))
            .windowed_bolt("window", |_: NoConfig| Ok(Window))
            .aggregate_bolt("count", |_: NoConfig| Ok(Count));
        assert!(registry.is_windowed("window") && registry.is_windowed("count"));
        assert!(!registry.is_windowed("nop") && !registry.is_windowed("missing"));
        assert_eq!(registry.windowed_kinds().collect::<Vec<_>>(), ["count", "window"]);
        assert_eq!(registry.role("window"), Some(Role::Bolt));
        let count = registry.build("count", &toml::Table::new()).unwrap();
        assert!(matches!(count, Component::Aggregate(_)) && count.is_windowed());
        assert_eq!(count.role(), Role::Bolt);
        assert_eq!(count.declare_outputs().stream("default").unwrap().fields.len(), 1);
        let window = registry.build("window", &toml::Table::new()).unwrap();
        assert!(matches!(window, Component::Windowed(_)) && window.tick_interval().is_none());
        registry.basic_bolt("window", |_: NoConfig| Ok(Nop));
        assert!(!registry.is_windowed("window"), "registering again replaces the kind");
    }

    #[test]
    #[should_panic(expected = "register it before describing it")]
    fn describing_an_unregistered_kind_panics() {
        Registry::new().describe("nop", DOC);
    }

    #[test]
    fn defaults_show_as_toml_or_in_parentheses() {
        assert_eq!(KeyDefault::Value("\"!\"").to_string(), "\"!\"");
        assert_eq!(KeyDefault::Required { example: "1" }.to_string(), "(required)");
        assert_eq!(KeyDefault::Unset { means: "random", example: "7" }.to_string(), "(random)");
        assert_eq!(Emits::Fields(&["key", "value"]).to_string(), "key, value");
    }
}
