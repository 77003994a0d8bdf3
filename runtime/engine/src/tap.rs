//! Taps: sampled copies of the tuples a component emits, for `squall tap`.
//!
//! Contract: a running plan has one [`Taps`] per process, with one [`TapPoint`] per
//! component. Every output of a component's tasks holds its point and, per emit, loads one
//! atomic (relaxed) and compares it with the stream's bit: a component nobody taps pays that
//! and nothing else. [`Taps::open`] starts a session on a component (one stream, or all of
//! them) and arms the point; while armed, an emit on a wanted stream takes one unit of the
//! point's budget, if any is left, and copies its values into the point. A pump (one tokio
//! task per process, alive while a session is) drains the armed points every [`TICK`],
//! hands each sample to the sessions that want its stream (a session whose reader lags loses
//! samples, never blocks anything), and refills each budget to [`SAMPLES_PER_TICK`]: a
//! tapped component gives at most that many tuples per tick, spread over its tasks. Dropping
//! a [`TapSession`] ends it; the point is disarmed once no session wants it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use squall_api::{TaskId, Values};
use tokio::sync::mpsc;

use crate::plan::Plan;

/// How often the pump drains the armed points.
pub const TICK: Duration = Duration::from_millis(100);
/// The most tuples one component gives its sessions per tick.
pub const SAMPLES_PER_TICK: i64 = 50;
/// Samples a session holds for its reader before it loses the newer ones.
pub const SESSION_BACKLOG: usize = 1024;

/// The bit of a component's stream (by its index among the component's streams); streams
/// past the 63rd share the last bit.
#[inline]
pub fn stream_bit(stream: usize) -> u64 {
    1 << stream.min(63)
}

/// One sampled tuple, as it left its task.
#[derive(Debug, Clone)]
struct Sample {
    task: TaskId,
    /// The stream's index among its component's streams.
    stream: usize,
    values: Values,
    timestamp: u64,
}

/// Where one component's outputs leave their samples.
#[derive(Debug, Default)]
pub struct TapPoint {
    /// The bits of the streams some session wants; 0 while nobody taps.
    want: AtomicU64,
    /// Samples the tasks may still take before the next tick.
    budget: AtomicI64,
    samples: Mutex<Vec<Sample>>,
}

impl TapPoint {
    /// Whether an emit on the stream with bit `bit` is tapped: one relaxed load.
    #[inline]
    pub fn wants(&self, bit: u64) -> bool {
        self.want.load(Relaxed) & bit != 0
    }

    /// Offers an emitted tuple (called only when [`TapPoint::wants`] its stream): copied if
    /// the budget has room.
    #[cold]
    pub fn offer(&self, task: TaskId, stream: usize, values: &Values) {
        if self.budget.load(Relaxed) <= 0 || self.budget.fetch_sub(1, Relaxed) <= 0 {
            return;
        }
        let sample = Sample { task, stream, values: values.clone(), timestamp: now_ms() };
        lock(&self.samples).push(sample);
    }
}

/// A tuple seen by a tap, as `squall tap` prints it (see [`TapLine`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapTuple {
    pub component: String,
    pub task: TaskId,
    pub stream: String,
    /// When it was emitted, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The stream's field names, in order.
    pub fields: Vec<String>,
    pub values: Values,
}

/// A [`TapTuple`] as one JSON object: component, task, stream, timestamp, and `tuple`, the
/// values by field name in the stream's order.
pub struct TapLine<'a>(pub &'a TapTuple);

impl Serialize for TapLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct ByField<'a>(&'a TapTuple);
        impl Serialize for ByField<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.values.len()))?;
                for (i, value) in self.0.values.iter().enumerate() {
                    match self.0.fields.get(i) {
                        Some(name) => map.serialize_entry(name, value)?,
                        None => map.serialize_entry(&i.to_string(), value)?,
                    }
                }
                map.end()
            }
        }
        let t = self.0;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("component", &t.component)?;
        map.serialize_entry("task", &t.task)?;
        map.serialize_entry("stream", &t.stream)?;
        map.serialize_entry("timestamp", &t.timestamp)?;
        map.serialize_entry("tuple", &ByField(t))?;
        map.end()
    }
}

/// Why a tap cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("the topology has no component `{0}`")]
    NoComponent(String),
    #[error("component `{component}` emits no stream `{stream}` (it emits: {emits})")]
    NoStream { component: String, stream: String, emits: String },
    #[error("component `{0}` emits no tuples: there is nothing to tap")]
    EmitsNothing(String),
}

/// The stream names and fields of one component, for naming samples.
#[derive(Debug)]
struct ComponentStreams {
    id: String,
    streams: Vec<(String, Vec<String>)>,
}

struct Session {
    component: usize,
    want: u64,
    tx: mpsc::Sender<TapEvent>,
}

#[derive(Default)]
struct Hub {
    sessions: Vec<Session>,
    pumping: bool,
}

/// The taps of one process's plan: a point per component and the open sessions.
pub struct Taps {
    points: Vec<Arc<TapPoint>>,
    components: Vec<ComponentStreams>,
    hub: Mutex<Hub>,
}

impl std::fmt::Debug for Taps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taps").field("components", &self.components.len()).finish_non_exhaustive()
    }
}

/// What a tap's reader gets: a tuple, or why the tap was refused after it was opened (by a
/// worker that found no such stream), which ends it.
pub type TapEvent = Result<TapTuple, String>;

/// An open tap: its tuples arrive on [`TapSession::recv`]; dropping it ends the tap.
#[derive(Debug)]
pub struct TapSession {
    rx: mpsc::Receiver<TapEvent>,
}

impl TapSession {
    /// A session fed by whoever holds the sender: what a process that relays another's taps
    /// (nimbus, for a worker's) hands its reader.
    pub fn channel() -> (mpsc::Sender<TapEvent>, TapSession) {
        let (tx, rx) = mpsc::channel(SESSION_BACKLOG);
        (tx, TapSession { rx })
    }

    /// The next tapped tuple; `None` once the run is gone.
    pub async fn recv(&mut self) -> Option<TapEvent> {
        self.rx.recv().await
    }

    /// Polls for the next tapped tuple (for a stream over the session).
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<TapEvent>> {
        self.rx.poll_recv(cx)
    }

    /// Every tuple waiting now (at most [`SESSION_BACKLOG`]).
    pub fn drain(&mut self) -> Vec<TapTuple> {
        let mut out = Vec::new();
        while let Ok(Ok(t)) = self.rx.try_recv() {
            out.push(t);
        }
        out
    }
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Taps {
    /// A point per component of `plan`, none armed.
    pub fn new(plan: &Plan) -> Arc<Taps> {
        let components = plan
            .components
            .iter()
            .map(|c| ComponentStreams {
                id: c.id.clone(),
                streams: c
                    .streams
                    .iter()
                    .map(|&sid| {
                        let decl = &plan.streams[sid as usize].decl;
                        (decl.name.clone(), decl.fields.iter().map(str::to_owned).collect())
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        Arc::new(Taps {
            points: components.iter().map(|_| Arc::default()).collect(),
            components,
            hub: Mutex::default(),
        })
    }

    /// The point of component `component` (an index into the plan); a fresh, never armed one
    /// past the end.
    pub fn point(&self, component: usize) -> Arc<TapPoint> {
        self.points.get(component).cloned().unwrap_or_default()
    }

    /// The index of component `id`, and the bits of its stream `stream` (all of them if
    /// `None`).
    pub fn resolve(&self, id: &str, stream: Option<&str>) -> Result<(usize, u64), TapError> {
        let c = self
            .components
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| TapError::NoComponent(id.to_owned()))?;
        let streams = &self.components[c].streams;
        if streams.is_empty() {
            return Err(TapError::EmitsNothing(id.to_owned()));
        }
        let want = match stream {
            None => streams.iter().enumerate().fold(0, |bits, (i, _)| bits | stream_bit(i)),
            Some(name) => match streams.iter().position(|(n, _)| n == name) {
                Some(i) => stream_bit(i),
                None => {
                    let emits = streams.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>();
                    return Err(TapError::NoStream {
                        component: id.to_owned(),
                        stream: name.to_owned(),
                        emits: emits.join(", "),
                    });
                }
            },
        };
        Ok((c, want))
    }

    /// Opens a tap on component `id`'s stream `stream` (every stream if `None`). Must be
    /// called within a tokio runtime (the pump is spawned on it).
    pub fn open(self: &Arc<Self>, id: &str, stream: Option<&str>) -> Result<TapSession, TapError> {
        let (component, want) = self.resolve(id, stream)?;
        let (tx, session) = TapSession::channel();
        let mut hub = lock(&self.hub);
        hub.sessions.push(Session { component, want, tx });
        let point = &self.points[component];
        point.budget.store(SAMPLES_PER_TICK, Relaxed);
        point.want.fetch_or(want, Relaxed);
        if !hub.pumping {
            hub.pumping = true;
            tokio::spawn(Arc::clone(self).pump());
        }
        Ok(session)
    }

    /// Drains, hands out and refills every tick while a session is open.
    async fn pump(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.pump_once() {
                return;
            }
        }
    }

    /// One tick of the pump; false once no session is left (the pump then ends).
    fn pump_once(&self) -> bool {
        let mut hub = lock(&self.hub);
        hub.sessions.retain(|s| !s.tx.is_closed());
        let mut wants = vec![0u64; self.points.len()];
        for s in &hub.sessions {
            wants[s.component] |= s.want;
        }
        for (c, point) in self.points.iter().enumerate() {
            point.want.store(wants[c], Relaxed);
            if wants[c] == 0 {
                point.budget.store(0, Relaxed);
            }
            let samples = std::mem::take(&mut *lock(&point.samples));
            if wants[c] != 0 {
                point.budget.store(SAMPLES_PER_TICK, Relaxed);
            }
            for sample in samples {
                let bit = stream_bit(sample.stream);
                let mut tuple = None;
                for s in hub.sessions.iter().filter(|s| s.component == c && s.want & bit != 0) {
                    let t = tuple.get_or_insert_with(|| self.name(c, &sample));
                    // A reader that lags loses samples; the tap never waits.
                    let _ = s.tx.try_send(Ok(t.clone()));
                }
            }
        }
        if hub.sessions.is_empty() {
            hub.pumping = false;
            return false;
        }
        true
    }

    fn name(&self, component: usize, sample: &Sample) -> TapTuple {
        let c = &self.components[component];
        let (stream, fields) = c
            .streams
            .get(sample.stream)
            .map_or_else(|| (String::new(), Vec::new()), |(n, f)| (n.clone(), f.clone()));
        TapTuple {
            component: c.id.clone(),
            task: sample.task,
            stream,
            timestamp: sample.timestamp,
            fields,
            values: sample.values.clone(),
        }
    }
}
