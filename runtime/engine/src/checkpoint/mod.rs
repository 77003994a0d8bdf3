//! Checkpoints: barriers through the topology, stateful tasks saving, one coordinator
//! committing (Storm's prepare / commit / rollback; Flink's aligned barriers).
//!
//! Contract (a topology with a stateful bolt; others have none of this and pay nothing):
//! - Ids: checkpoint `n` is due at `n × checkpoint_interval` since the epoch, by the clock.
//!   Every spout task, once past that moment, sends a barrier `n` to every task downstream
//!   (a marker on the reserved stream [`BARRIER`], in the batches with its tuples, like the
//!   end of stream) and reports [`SAVED`] `n` with its position ([`squall_api::Spout::position`])
//!   to the coordinator. A spout task started late, or one held up, skips ids it never
//!   reached; checkpoints it skipped never complete, and the next one covers them.
//! - Every bolt task passes barriers on as [`align`] decides: once a checkpoint completes at
//!   it, a stateful task prepares, under that id, every change of its state not yet
//!   committed ([`pending::Uncommitted`]), in the backend, then reports [`SAVED`]; every bolt
//!   task then sends the barrier downstream. With `guarantee = "exactly_once"` barriers are
//!   aligned; with at least once they are not.
//! - The coordinator (one system task, [`crate::plan::Plan::coordinator`]) commits a
//!   checkpoint once every spout task and every stateful task saved it ([`tracker`]): the
//!   backend's commit makes the prepared changes and the spouts' positions ([`Meta`]) the
//!   committed state, all or nothing. It then tells each stateful task ([`COMMITTED`]), which
//!   forgets the changes that commit covered.
//! - Restore: before its first tuple a stateful task loads its component's committed state
//!   (every task the whole of it: a key's changes come from whichever task the grouping sends
//!   it to, so a new parallelism needs no reshuffle); before its first emit a spout task that
//!   can rewind rewinds to its position in the last committed checkpoint.
//! - Failure: with exactly once, a failed or timed-out tree means the state may hold part of
//!   it: the runner restarts the topology from the last committed checkpoint
//!   ([`Checkpointing::restart`]), spouts rewinding, so the tuples of the failed epoch are
//!   dropped with the tasks that held them. With at least once, trees are replayed one by one
//!   as always, and a restart (a crash) restores state and rewinds spouts to the positions of
//!   the first message not yet acked at the checkpoint.

pub mod align;
pub mod coordinator;
pub mod pending;
pub mod tracker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use squall_api::{BackendConfig, BoxError, Guarantee, Registry, StateBackend, TaskId, Value, Values};
use tokio::sync::Notify;

use super::executor::output::Anchors;
use super::executor::Envelope;
use super::topology::TopologyDef;

/// The reserved stream of barriers: values `[id]`.
pub const BARRIER: u32 = u32::MAX - 1;
/// The reserved stream of saved reports to the coordinator: values `[id, position]`.
pub const SAVED: u32 = u32::MAX - 2;
/// The reserved stream of commits, coordinator to stateful tasks: values `[id]`.
pub const COMMITTED: u32 = u32::MAX - 3;

/// Whether `stream` is one of the runtime's own (end of stream, checkpoints), which no plan
/// declares.
#[inline]
pub fn is_system_stream(stream: u32) -> bool {
    stream >= COMMITTED
}

/// What a process running a topology with checkpoints shares between its tasks.
#[derive(Clone)]
pub struct Checkpointing {
    pub backend: Arc<dyn StateBackend>,
    pub guarantee: Guarantee,
    pub interval: Duration,
    /// Notified (exactly once) when a tree fails: the runner restarts from the last commit.
    pub restart: Arc<Notify>,
}

impl Checkpointing {
    pub fn new(backend: Arc<dyn StateBackend>, guarantee: Guarantee, interval: Duration) -> Self {
        Checkpointing { backend, guarantee, interval, restart: Arc::new(Notify::new()) }
    }

    /// Opens the state backend of a topology with stateful bolts (None for one without); an
    /// error names the backend and says why.
    pub fn open(def: &TopologyDef, registry: &Registry) -> Result<Option<Checkpointing>, (String, String)> {
        if !def.checkpoints() {
            return Ok(None);
        }
        let state = &def.settings.state;
        let config = BackendConfig { topology: &def.name, table: &state.table };
        let backend = registry
            .build_state_backend(&state.backend, &config)
            .map_err(|e| (state.backend.clone(), e.to_string()))?;
        Ok(Some(Checkpointing::new(backend, def.settings.guarantee, state.checkpoint_interval)))
    }

    /// The id of the last checkpoint due at `now`.
    pub fn due(&self, now: SystemTime) -> u64 {
        let ms = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        ms / (self.interval.as_millis() as u64).max(1)
    }

    /// When checkpoint `id` was due.
    pub fn due_at(&self, id: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(id.saturating_mul(self.interval.as_millis() as u64))
    }
}

/// A checkpoint's metadata, committed with it: each spout component's positions by task index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub positions: BTreeMap<String, Vec<Value>>,
}

impl Meta {
    pub fn encode(&self) -> Result<Vec<u8>, BoxError> {
        squall_api::state::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Meta, BoxError> {
        squall_api::state::decode(bytes)
    }

    /// Where task `index` of a spout component of `tasks` tasks starts again: its own position
    /// if the component had as many tasks then, else (a rebalance) every task's positions
    /// merged, when they are maps (a broker spout's partition → offset), so that each task
    /// finds the partitions it reads now.
    pub fn position_of(&self, component: &str, index: usize, tasks: usize) -> Option<Value> {
        let saved = self.positions.get(component)?;
        if saved.len() == tasks {
            return saved.get(index).filter(|v| !v.is_null()).cloned();
        }
        let mut merged = BTreeMap::new();
        for p in saved {
            match p {
                Value::Map(entries) => merged.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone()))),
                Value::Null => {}
                _ => return None,
            }
        }
        Some(Value::Map(merged))
    }
}

/// A marker on `stream` from `from`: its id, then `extra`.
pub(crate) fn marker(stream: u32, from: TaskId, id: u64, extra: impl IntoIterator<Item = Value>) -> Envelope {
    let mut values = Values::new();
    values.push(Value::from(id as i64));
    values.extend(extra);
    Envelope { stream, source_task: from, values, anchors: Anchors::new() }
}

/// The id a marker carries.
pub(crate) fn marker_id(env: &Envelope) -> Option<u64> {
    env.values.first()?.as_i64().map(|id| id as u64)
}
