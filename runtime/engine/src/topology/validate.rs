//! Validation: a parsed topology file checked against a [`Registry`] and as a graph.
//!
//! Contract: [`validate`] reports every mistake it can find in what [`parse`](super::parse)
//! understood: a kind that is not registered or has the other role, a `config` its factory
//! rejects, a duplicate id, an input naming no component or a stream its source does not
//! declare, a fields or partial_key grouping on a field the stream lacks, a direct grouping
//! on a non-direct stream or the reverse, a custom grouping that is not registered or whose
//! config is rejected, cycles, and windows: a `window` on a kind that is not windowed or a
//! windowed kind without one, a count window on an aggregate kind (its accumulators are per
//! time window), a count window longer than the spouts may have in flight with acking on (it
//! could never fill), a `timestamp_field` some input lacks, a `late_stream` named like a
//! stream the bolt declares, or inputs of different fields when late tuples go out (the late
//! stream is then declared, with the inputs' fields). It learns each component's streams by building it once,
//! and resolves `passthrough` streams to the fields of the component's inputs, upstream
//! first. A check that depends on something already reported as wrong is skipped, so one
//! mistake is not reported again in other words. The returned [`TopologyDef`] is complete
//! only if nothing was reported. Factories are user code: one that panics is reported as a
//! mistake, not propagated.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use squall_api::{BoxError, Fields, Registry, Role, StreamDecl};

use super::parse::{Config, FileDef, RawComponent, RawInput, RawWindow};
use super::report::{Problems, Span};
use super::{ComponentDef, GroupingDef, InputDef, Settings, TopologyDef};
use crate::window::Size;

/// Checks `file` against `registry` (see the module docs).
pub(crate) fn validate(file: FileDef, registry: &Registry, p: &mut Problems) -> TopologyDef {
    let components = &file.components;
    let ids = check_ids(components, p);
    let mut streams: Vec<Option<Vec<StreamDecl>>> =
        components.iter().map(|c| build(c, registry, p)).collect();
    let windowed = check_window_kinds(components, registry, &mut streams, p);
    check_count_windows(components, &windowed, &file.settings, registry, p);
    let graph = Graph::new(components, &ids, p);
    check_subscriptions(components, &graph, &streams, registry, p);
    let order = graph.check_cycles(components, p);
    resolve_passthrough(components, &graph, &order, &mut streams, p);
    check_grouping_fields(components, &graph, &streams, p);
    check_timestamp_fields(components, &graph, &streams, &windowed, p);
    check_guarantee(components, &file.settings, registry, p);

    let mut def = TopologyDef {
        name: file.name,
        workers: file.workers,
        settings: file.settings,
        spouts: Vec::new(),
        bolts: Vec::new(),
    };
    for (c, streams) in file.components.into_iter().zip(streams) {
        let stateful = c.kind.as_ref().is_some_and(|k| registry.is_stateful(&k.value));
        let component = ComponentDef {
            id: c.id.map(|id| id.value).unwrap_or_default(),
            kind: c.kind.map(|k| k.value).unwrap_or_default(),
            parallelism: c.parallelism,
            config: c.config.map(|c| c.table).unwrap_or_default(),
            tick_secs: c.tick_secs,
            window: c.window.and_then(|w| w.spec),
            stateful,
            inputs: c
                .inputs
                .into_iter()
                .map(|i| InputDef {
                    from: i.from.value,
                    stream: i.stream.value,
                    grouping: i.grouping.map_or(GroupingDef::Shuffle, |g| g.def),
                })
                .collect(),
            streams: streams.unwrap_or_default(),
        };
        match c.role {
            Role::Spout => def.spouts.push(component),
            Role::Bolt => def.bolts.push(component),
        }
    }
    def
}

/// Component indexes by id, the first of each; reports later duplicates.
struct Ids<'f> {
    by_id: HashMap<&'f str, usize>,
    /// False if some component has no usable id, so that an input naming no known id may
    /// be naming that one.
    complete: bool,
}

fn check_ids<'f>(components: &'f [RawComponent], p: &mut Problems) -> Ids<'f> {
    let mut ids = Ids { by_id: HashMap::new(), complete: true };
    for (i, c) in components.iter().enumerate() {
        let Some(id) = &c.id else {
            ids.complete = false;
            continue;
        };
        match ids.by_id.entry(&id.value) {
            Entry::Vacant(e) => {
                e.insert(i);
            }
            Entry::Occupied(e) => {
                let first = &components[*e.get()];
                let at = first.id.as_ref().map_or(first.span.clone(), |f| f.span.clone());
                let message = format!(
                    "duplicate id \"{}\": the {} at {} already has it; ids must be unique",
                    id.value,
                    first.role,
                    p.position(&at)
                );
                p.error(&id.span, message);
            }
        }
    }
    ids
}

/// Builds a component once to learn its streams; None if it cannot be built (reported).
fn build(c: &RawComponent, registry: &Registry, p: &mut Problems) -> Option<Vec<StreamDecl>> {
    let kind = c.kind.as_ref()?;
    match registry.role(&kind.value) {
        None => {
            p.error(
                &kind.span,
                format!("unknown {} kind \"{}\"; {}", c.role, kind.value, valid_kinds(registry, c.role)),
            );
            None
        }
        Some(role) if role != c.role => {
            p.error(
                &kind.span,
                format!(
                    "\"{}\" is a {role} kind, not a {} kind: move this entry under \
                     [[{role}s]]; {}",
                    kind.value,
                    c.role,
                    valid_kinds(registry, c.role)
                ),
            );
            None
        }
        Some(_) => {
            // A config that did not parse was reported already.
            let config = c.config.as_ref()?;
            let built = guarded(|| {
                let component = registry.build(&kind.value, &config.table)?;
                Ok(component.declare_outputs().into_streams())
            });
            match built {
                Ok(streams) => Some(streams),
                Err(e) => {
                    let message = format!("invalid config for kind \"{}\": {e}", kind.value);
                    p.error(&config_error_span(&e, config, &kind.span), message);
                    None
                }
            }
        }
    }
}

/// Checks that exactly the windowed kinds have a `window`, and declares the `late_stream` of
/// each valid window as a passthrough stream (resolved to its inputs' fields later); reports
/// one named like a stream the kind declares. Per component: its window, if it has a valid
/// one on a windowed kind.
fn check_window_kinds<'f>(
    components: &'f [RawComponent],
    registry: &Registry,
    streams: &mut [Option<Vec<StreamDecl>>],
    p: &mut Problems,
) -> Vec<Option<&'f RawWindow>> {
    let mut windowed = vec![None; components.len()];
    for (c, component) in components.iter().enumerate() {
        let Some(kind) = &component.kind else { continue };
        if component.role != Role::Bolt || registry.role(&kind.value) != Some(Role::Bolt) {
            continue; // reported by `build` or by parsing
        }
        let window = component.window.as_ref();
        match (registry.is_windowed(&kind.value), window) {
            (true, None) => {
                let count =
                    if registry.is_aggregate(&kind.value) { "" } else { " or window = { length = 100 }" };
                p.error(
                    &kind.span,
                    format!(
                        "\"{}\" is a windowed bolt kind: give it a `window`, e.g. \
                         window = {{ length = \"10s\" }}{count}",
                        kind.value
                    ),
                )
            }
            (false, Some(window)) => {
                let kinds: Vec<&str> = registry.windowed_kinds().collect();
                let valid = if kinds.is_empty() {
                    "no windowed bolt kinds are registered".to_string()
                } else {
                    format!("windowed bolt kinds: {}", kinds.join(", "))
                };
                p.error(
                    &window.key_span,
                    format!(
                        "\"{}\" is not a windowed bolt kind, so it takes no `window`; remove \
                         it, or use a windowed kind ({valid})",
                        kind.value
                    ),
                );
            }
            (true, Some(window)) => windowed[c] = Some(window),
            (false, None) => {}
        }
        let Some(window) = windowed[c] else { continue };
        let (Some(late), Some(at)) =
            (window.spec.as_ref().and_then(|s| s.late_stream.as_ref()), &window.late_stream)
        else {
            continue;
        };
        let Some(declared) = &mut streams[c] else { continue };
        if declared.iter().any(|s| &s.name == late) {
            let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
            p.error(
                at,
                format!(
                    "late_stream \"{late}\" clashes with stream \"{late}\" that kind \"{}\" \
                     declares (its streams: {}); give late tuples a stream of their own, e.g. \
                     late_stream = \"{}\"",
                    kind.value,
                    names.join(", "),
                    free_name(declared)
                ),
            );
        } else {
            declared.push(StreamDecl {
                name: late.clone(),
                fields: Fields::empty(),
                direct: false,
                passthrough: true,
            });
        }
    }
    windowed
}

/// A stream name none of `declared` has: "late", else "late-2", ...
fn free_name(declared: &[StreamDecl]) -> String {
    (1..)
        .map(|i| if i == 1 { "late".to_string() } else { format!("late-{i}") })
        .find(|name| declared.iter().all(|s| &s.name != name))
        .expect("some name is free")
}

/// Checks the count windows: an aggregate kind takes none (its accumulators are per time
/// window), and with acking none may be longer than the spout tasks may have in flight in all:
/// a window's tuples are acked only once it has fired, so it would never fill.
/// With `guarantee = "exactly_once"`, a topology with stateful bolts needs spouts that can
/// rewind to a checkpoint, acking (a lost tuple must be noticed to roll back), and no windowed
/// bolts (windows are not checkpointed). A stateful kind needs a backend that is registered.
fn check_guarantee(components: &[RawComponent], settings: &Settings, registry: &Registry, p: &mut Problems) {
    let stateful = components.iter().any(|c| c.kind.as_ref().is_some_and(|k| registry.is_stateful(&k.value)));
    if !stateful {
        return;
    }
    if let Some(first) = components.first() {
        let backends = registry.state_backends();
        if !backends.contains(&settings.state.backend.as_str()) {
            p.error(
                &first.span,
                format!(
                    "[settings] state: unknown backend \"{}\"; this binary knows {}",
                    settings.state.backend,
                    backends.join(", ")
                ),
            );
        }
    }
    if settings.guarantee != squall_api::Guarantee::ExactlyOnce {
        return;
    }
    for c in components {
        let Some(kind) = &c.kind else { continue };
        if c.role == Role::Spout
            && registry.role(&kind.value).is_some()
            && !registry.is_rewindable(&kind.value)
        {
            p.error(
                &kind.span,
                format!(
                    "spout kind \"{}\" cannot rewind to a checkpoint, which guarantee = \"exactly_once\" \
                     needs; use a spout that reads a replayable broker (log-spout, kafka-spout), or \
                     guarantee = \"at_least_once\"",
                    kind.value
                ),
            );
        }
        if c.role == Role::Bolt && registry.is_windowed(&kind.value) {
            p.error(
                &kind.span,
                format!(
                    "windowed bolt \"{}\" keeps its windows outside checkpoints, so it cannot take part \
                     in guarantee = \"exactly_once\"; use guarantee = \"at_least_once\"",
                    kind.value
                ),
            );
        }
    }
    if !settings.acking {
        if let Some(first) = components.first() {
            p.error(
                &first.span,
                "guarantee = \"exactly_once\" needs acking = true in [settings]: a lost tuple is how a \
                 failure is noticed and rolled back"
                    .to_string(),
            );
        }
    }
}

fn check_count_windows(
    components: &[RawComponent],
    windowed: &[Option<&RawWindow>],
    settings: &Settings,
    registry: &Registry,
    p: &mut Problems,
) {
    let spout_tasks: usize = components.iter().filter(|c| c.role == Role::Spout).map(|c| c.parallelism).sum();
    let in_flight = settings.max_spout_pending.saturating_mul(spout_tasks);
    for (component, window) in components.iter().zip(windowed) {
        let (Some(window), Some(kind)) = (window, &component.kind) else { continue };
        let Some(spec) = &window.spec else { continue };
        let counts = [spec.length, spec.slide].iter().any(|s| matches!(s, Size::Count(_)));
        if counts && registry.is_aggregate(&kind.value) {
            p.error(
                &window.key_span,
                format!(
                    "\"{}\" aggregates each key as tuples come, per time window: give `length` \
                     (and `slide`) as durations, e.g. window = {{ length = \"10s\" }}",
                    kind.value
                ),
            );
            continue;
        }
        let Size::Count(length) = spec.length else { continue };
        if settings.acking && settings.max_spout_pending > 0 && length as usize > in_flight {
            let per_task = (length as usize).div_ceil(spout_tasks.max(1));
            p.error(
                &window.key_span,
                format!(
                    "a count window of `length` {length} fires once it holds {length} tuples, and \
                     holds them unacked, but the spouts may have only {in_flight} in flight \
                     (max_spout_pending = {} in [settings], times {spout_tasks} spout task(s)): it \
                     would never fill; set max_spout_pending to at least {per_task} (0: no bound)",
                    settings.max_spout_pending
                ),
            );
        }
    }
}

/// Checks that every input of a windowed bolt with event time carries its
/// `timestamp_field`.
fn check_timestamp_fields(
    components: &[RawComponent],
    graph: &Graph,
    streams: &[Option<Vec<StreamDecl>>],
    windowed: &[Option<&RawWindow>],
    p: &mut Problems,
) {
    for (c, window) in windowed.iter().enumerate() {
        let Some(window) = window else { continue };
        let (Some(field), Some(at)) =
            (window.spec.as_ref().and_then(|s| s.timestamp_field.as_ref()), &window.timestamp_field)
        else {
            continue;
        };
        for (input, source) in graph.inputs(components, c) {
            let Some((source, decl)) =
                source.and_then(|s| Some((s, resolved_stream(streams, s, &input.stream.value)?)))
            else {
                continue;
            };
            if decl.fields.contains(field) {
                continue;
            }
            let fields = if decl.fields.is_empty() {
                "it has no fields".to_string()
            } else {
                format!("its fields: {}", decl.fields)
            };
            p.error(
                at,
                format!(
                    "timestamp_field \"{field}\" is not a field of stream \"{}\" of \"{}\" \
                     ({fields}); every input of a window on event time must carry it",
                    decl.name,
                    id_of(components, source)
                ),
            );
        }
    }
}

fn valid_kinds(registry: &Registry, role: Role) -> String {
    let kinds: Vec<&str> = registry.kinds().filter(|(_, r)| *r == role).map(|(k, _)| k).collect();
    if kinds.is_empty() {
        format!("no {role} kinds are registered")
    } else {
        format!("valid {role} kinds: {}", kinds.join(", "))
    }
}

/// Runs a factory, turning a panic into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, BoxError>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(format!("the factory panicked ({what})"))
        }
    }
}

/// Where a factory's complaint about `config` belongs: at the key it names as unknown, else
/// at the config table, else (no config written) at `fallback`.
fn config_error_span(error: &str, config: &Config, fallback: &Span) -> Span {
    let unknown = error
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field);
    unknown
        .and_then(|field| config.keys.iter().find(|k| k.value == field))
        .map(|k| k.span.clone())
        .or_else(|| config.span.clone())
        .unwrap_or_else(|| fallback.clone())
}

/// Who feeds whom: for every input of every component, the index of its source.
struct Graph {
    /// `sources[c][i]`: the component input `i` of component `c` names, if it exists.
    sources: Vec<Vec<Option<usize>>>,
    /// `subscribers[s]`: components with an input from `s` (once per input).
    subscribers: Vec<Vec<usize>>,
}

impl Graph {
    /// Resolves every input's `from`; reports those naming no component.
    fn new(components: &[RawComponent], ids: &Ids, p: &mut Problems) -> Self {
        let mut subscribers = vec![Vec::new(); components.len()];
        let mut sources = Vec::with_capacity(components.len());
        for (c, component) in components.iter().enumerate() {
            let resolved = component
                .inputs
                .iter()
                .map(|input| {
                    let source = ids.by_id.get(input.from.value.as_str()).copied();
                    match source {
                        Some(s) => subscribers[s].push(c),
                        None if ids.complete => p.error(
                            &input.from.span,
                            format!(
                                "no component named \"{}\"; components: {}",
                                input.from.value,
                                list_ids(components)
                            ),
                        ),
                        None => {}
                    }
                    source
                })
                .collect();
            sources.push(resolved);
        }
        Graph { sources, subscribers }
    }

    /// Inputs of component `c` with their sources, where they exist.
    fn inputs<'a>(
        &'a self,
        components: &'a [RawComponent],
        c: usize,
    ) -> impl Iterator<Item = (&'a RawInput, Option<usize>)> + 'a {
        let sources = self.sources.get(c).map(Vec::as_slice).unwrap_or_default();
        components.get(c).map(|c| c.inputs.as_slice()).unwrap_or_default().iter().zip(sources.iter().copied())
    }

    /// Components in topological order; reports every cycle, once per strongly connected
    /// group of components. Components on or downstream of a cycle are not in the order.
    fn check_cycles(&self, components: &[RawComponent], p: &mut Problems) -> Vec<usize> {
        let n = components.len();
        let mut waiting_for: Vec<usize> = self.sources.iter().map(|s| s.iter().flatten().count()).collect();
        let mut ready: VecDeque<usize> = (0..n).filter(|&c| waiting_for[c] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(c) = ready.pop_front() {
            order.push(c);
            for &s in &self.subscribers[c] {
                waiting_for[s] -= 1;
                if waiting_for[s] == 0 {
                    ready.push_back(s);
                }
            }
        }

        let stuck: HashSet<usize> = (0..n).filter(|&c| waiting_for[c] > 0).collect();
        let mut reported: HashSet<usize> = HashSet::new();
        for start in 0..n {
            if !stuck.contains(&start) || reported.contains(&start) {
                continue;
            }
            let Some(cycle) = self.shortest_cycle(start, &stuck) else {
                continue; // downstream of a cycle, not on one
            };
            reported.extend(self.group_of(start, &stuck));
            // Reported where `start` subscribes to the last component of the cycle.
            let last = cycle.last().copied();
            let closing = self
                .inputs(components, start)
                .find(|(_, source)| *source == last)
                .map_or_else(|| components[start].span.clone(), |(input, _)| input.from.span.clone());
            let names: Vec<&str> = cycle.iter().chain([&start]).map(|&c| id_of(components, c)).collect();
            p.error(&closing, format!("cycle: {}; Squall runs acyclic topologies only", names.join(" -> ")));
        }
        order
    }

    /// The shortest path `start -> ... -> last` with an edge `last -> start`, within `within`.
    fn shortest_cycle(&self, start: usize, within: &HashSet<usize>) -> Option<Vec<usize>> {
        let mut came_from: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(c) = queue.pop_front() {
            for &next in &self.subscribers[c] {
                if next == start {
                    let mut path = vec![c];
                    let mut at = c;
                    while let Some(&prev) = came_from.get(&at) {
                        path.push(prev);
                        at = prev;
                    }
                    path.reverse();
                    return Some(path);
                }
                if within.contains(&next) && !came_from.contains_key(&next) {
                    came_from.insert(next, c);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// Components within `within` that `start` reaches and that reach `start`.
    fn group_of(&self, start: usize, within: &HashSet<usize>) -> HashSet<usize> {
        let downstream = reach(start, within, |c| self.subscribers[c].clone());
        let upstream = reach(start, within, |c| self.sources[c].iter().flatten().copied().collect());
        downstream.intersection(&upstream).copied().collect()
    }
}

/// Everything reachable from `start` through `next`, staying within `within`.
fn reach(start: usize, within: &HashSet<usize>, next: impl Fn(usize) -> Vec<usize>) -> HashSet<usize> {
    let mut seen = HashSet::from([start]);
    let mut stack = vec![start];
    while let Some(c) = stack.pop() {
        for n in next(c) {
            if within.contains(&n) && seen.insert(n) {
                stack.push(n);
            }
        }
    }
    seen
}

/// The ids of all components, in file order, each once.
fn list_ids(components: &[RawComponent]) -> String {
    let mut seen = HashSet::new();
    let ids: Vec<&str> = components
        .iter()
        .filter_map(|c| c.id.as_ref().map(|id| id.value.as_str()))
        .filter(|id| seen.insert(*id))
        .collect();
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.join(", ")
    }
}

fn id_of(components: &[RawComponent], c: usize) -> &str {
    components[c].id.as_ref().map_or("?", |id| id.value.as_str())
}

/// Checks that every input's stream exists, that direct groupings go with direct streams,
/// and that custom groupings are registered and build.
fn check_subscriptions(
    components: &[RawComponent],
    graph: &Graph,
    streams: &[Option<Vec<StreamDecl>>],
    registry: &Registry,
    p: &mut Problems,
) {
    for c in 0..components.len() {
        for (input, source) in graph.inputs(components, c) {
            let Some(grouping) = &input.grouping else {
                continue;
            };
            if let (GroupingDef::Custom { kind, .. }, Some((kind_span, config))) =
                (&grouping.def, &grouping.custom)
            {
                check_custom_grouping(kind, kind_span, config, registry, p);
            }
            let Some(source) = source else { continue };
            let Some(declared) = &streams[source] else {
                continue;
            };
            let stream = &input.stream;
            let Some(decl) = declared.iter().find(|s| s.name == stream.value) else {
                let message = if declared.is_empty() {
                    format!(
                        "component \"{}\" declares no output streams, so nothing can \
                         subscribe to stream \"{}\" of it",
                        id_of(components, source),
                        stream.value
                    )
                } else {
                    let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
                    format!(
                        "component \"{}\" does not declare stream \"{}\"; its streams: {}",
                        id_of(components, source),
                        stream.value,
                        names.join(", ")
                    )
                };
                p.error(&stream.span, message);
                continue;
            };
            let direct_grouping = grouping.def == GroupingDef::Direct;
            if decl.direct && !direct_grouping {
                p.error(
                    &grouping.span,
                    format!(
                        "stream \"{}\" of \"{}\" is direct: subscribe to it with \
                         grouping = \"direct\"",
                        decl.name,
                        id_of(components, source)
                    ),
                );
            } else if !decl.direct && direct_grouping {
                p.error(
                    &grouping.span,
                    format!(
                        "grouping \"direct\" needs a direct stream, but stream \"{}\" of \"{}\" \
                         is not direct; use another grouping, e.g. \"shuffle\"",
                        decl.name,
                        id_of(components, source)
                    ),
                );
            }
        }
    }
}

/// Checks that a custom grouping kind is registered and builds from its config.
fn check_custom_grouping(
    kind: &str,
    kind_span: &Span,
    config: &Config,
    registry: &Registry,
    p: &mut Problems,
) {
    if !registry.has_grouping(kind) {
        let kinds: Vec<&str> = registry.grouping_kinds().collect();
        let valid = if kinds.is_empty() {
            "no custom grouping kinds are registered".to_string()
        } else {
            format!("valid custom grouping kinds: {}", kinds.join(", "))
        };
        p.error(kind_span, format!("unknown custom grouping kind \"{kind}\"; {valid}"));
        return;
    }
    if let Err(e) = guarded(|| registry.build_grouping(kind, &config.table).map(drop)) {
        let message = format!("invalid config for custom grouping \"{kind}\": {e}");
        p.error(&config_error_span(&e, config, kind_span), message);
    }
}

/// Replaces every passthrough stream's fields with those of the component's inputs,
/// upstream first; reports inputs that disagree.
fn resolve_passthrough(
    components: &[RawComponent],
    graph: &Graph,
    order: &[usize],
    streams: &mut [Option<Vec<StreamDecl>>],
    p: &mut Problems,
) {
    for &c in order {
        let Some(own) = &streams[c] else { continue };
        let Some(first_passthrough) = own.iter().find(|s| s.passthrough) else {
            continue;
        };
        let component = &components[c];
        if component.role == Role::Spout {
            if let Some(kind) = &component.kind {
                let message = format!(
                    "spout kind \"{}\" declares passthrough stream \"{}\", but a spout has no \
                     input to pass through",
                    kind.value, first_passthrough.name
                );
                p.error(&kind.span, message);
            }
            continue;
        }

        // What every input carries; nothing to resolve unless all are known.
        let carried: Option<Vec<(&RawInput, usize, &Fields)>> = graph
            .inputs(components, c)
            .map(|(input, source)| {
                let source = source?;
                let decl = resolved_stream(streams, source, &input.stream.value)?;
                Some((input, source, &decl.fields))
            })
            .collect();
        let Some(carried) = carried else { continue };
        let Some(&(_, first_source, first_fields)) = carried.first() else {
            continue;
        };
        let late = component.window.as_ref().and_then(|w| w.spec.as_ref()?.late_stream.as_deref());
        let why = if late == Some(first_passthrough.name.as_str()) {
            "sends late tuples out with their own fields on stream"
        } else {
            "passes its input through on stream"
        };
        let mut agree = true;
        for &(input, source, fields) in &carried[1..] {
            if fields != first_fields {
                agree = false;
                p.error(
                    &input.from.span,
                    format!(
                        "bolt \"{}\" {why} \"{}\", so all its inputs must carry the same \
                         fields, but \"{}\" carries {first_fields} and \"{}\" carries {fields}",
                        id_of(components, c),
                        first_passthrough.name,
                        id_of(components, first_source),
                        id_of(components, source),
                    ),
                );
            }
        }
        if agree {
            let fields = first_fields.clone();
            for s in streams[c].iter_mut().flatten().filter(|s| s.passthrough) {
                s.fields = fields.clone();
                s.passthrough = false;
            }
        }
    }
}

/// Stream `name` of component `source`, if it is declared and its fields are known (not a
/// passthrough left unresolved behind a mistake or a cycle).
fn resolved_stream<'s>(
    streams: &'s [Option<Vec<StreamDecl>>],
    source: usize,
    name: &str,
) -> Option<&'s StreamDecl> {
    streams.get(source)?.as_ref()?.iter().find(|d| d.name == name && !d.passthrough)
}

/// Checks that fields and partial_key groupings name fields of their stream.
fn check_grouping_fields(
    components: &[RawComponent],
    graph: &Graph,
    streams: &[Option<Vec<StreamDecl>>],
    p: &mut Problems,
) {
    for c in 0..components.len() {
        for (input, source) in graph.inputs(components, c) {
            let Some(grouping) = &input.grouping else {
                continue;
            };
            let names = match &grouping.def {
                GroupingDef::Fields(names) | GroupingDef::PartialKey(names) => names,
                _ => continue,
            };
            let Some((source, decl)) =
                source.and_then(|s| Some((s, resolved_stream(streams, s, &input.stream.value)?)))
            else {
                continue;
            };
            for (name, span) in names.iter().zip(&grouping.field_spans) {
                if !decl.fields.contains(name) {
                    let valid = if decl.fields.is_empty() {
                        "it has no fields".to_string()
                    } else {
                        format!("its fields: {}", decl.fields)
                    };
                    p.error(
                        span,
                        format!(
                            "stream \"{}\" of \"{}\" has no field \"{name}\"; {valid}",
                            decl.name,
                            id_of(components, source)
                        ),
                    );
                }
            }
        }
    }
}
