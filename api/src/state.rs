//! State: a bolt's key-value state that the runtime checkpoints and restores (Storm's
//! `IStatefulBolt` with a `KeyValueState`), and the backends that keep it.
//!
//! Contract:
//! - A [`StatefulBolt`] gets a typed [`KeyValueState`] (serde keys and values). Before its
//!   first tuple, the runtime restores the last committed state of its component and calls
//!   [`StatefulBolt::init_state`]. Inputs are processed as a [`crate::BasicBolt`]'s are (emits
//!   anchored to the input, acked on `Ok`, failed on `Err`).
//! - Checkpoints: when a checkpoint reaches a task, the runtime calls
//!   [`StatefulBolt::pre_checkpoint`], takes what changed in the state since the previous
//!   checkpoint ([`KeyValueState`] tracks it), and prepares it in the backend. Once every task
//!   of the topology has prepared, the checkpoint is committed; otherwise it is rolled back:
//!   the state is replaced by the last committed one and [`StatefulBolt::post_rollback`] is
//!   called.
//! - A [`StateBackend`] stores bytes: keys and values encoded as MessagePack with field names
//!   ([`encode`]), so a tool that knows nothing of the types can print them as JSON.
//!   [`StateBackend::prepare`] saves one task's changes under a checkpoint id, invisible until
//!   [`StateBackend::commit`] makes every change prepared under that id part of the committed
//!   state, together with the checkpoint's metadata (the spouts' positions), atomically: after
//!   a crash, a commit is wholly there or not at all. Changes prepared under an id that is
//!   never committed are never seen. Committed checkpoints apply in the order they were
//!   committed; ids only name them (a fresh run uses ids no earlier run used, see
//!   [`checkpoint_id`]).
//! - [`MemoryBackend`] keeps everything in this process: state survives a rollback, not the
//!   process. Other backends are registered by name with [`crate::Registry::state_backend`].

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bolt::BasicCollector;
use crate::context::TopologyContext;
use crate::stream::OutputDeclarer;
use crate::tuple::Tuple;
use crate::BoxError;

/// What a topology promises about state and replays (`[settings] guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Every record changes the state at least once (replays may count twice).
    #[default]
    AtLeastOnce,
    /// Every record changes the state exactly once: on failure, state rolls back to the last
    /// committed checkpoint and spouts rewind to its positions.
    ExactlyOnce,
}

impl Guarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of a task's state since its previous checkpoint: a key (encoded) and its new
/// value, or `None` when the key was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A committed checkpoint: its id and the metadata committed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub id: u64,
    pub meta: Vec<u8>,
}

/// One task that prepared changes for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Participant {
    pub component: String,
    pub task: u32,
}

/// Where checkpoints are kept. See the module docs for the contract.
#[async_trait]
pub trait StateBackend: Send + Sync + 'static {
    /// Saves `changes` of one task of `component` under checkpoint `id`; not part of the
    /// committed state until [`Self::commit`] of `id`. Durable when it returns.
    async fn prepare(&self, component: &str, task: u32, id: u64, changes: &[Change]) -> Result<(), BoxError>;

    /// Commits checkpoint `id`: the changes every participant prepared under it, and `meta`,
    /// become the committed state, all or nothing.
    async fn commit(&self, id: u64, participants: &[Participant], meta: &[u8]) -> Result<(), BoxError>;

    /// The last committed checkpoint, `None` before the first.
    async fn last_committed(&self) -> Result<Option<Committed>, BoxError>;

    /// The committed state of `component`: every key with its value (encoded), in no order.
    async fn load(&self, component: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BoxError>;

    /// What keeps the state, for messages ("the embedded log in squall-data", "redis://…").
    fn describe(&self) -> String;

    /// False when the state is gone with the process ([`MemoryBackend`]).
    fn durable(&self) -> bool {
        true
    }
}

/// What a backend factory gets: the topology's name and its `[settings] state` table.
#[derive(Debug, Clone)]
pub struct BackendConfig<'a> {
    pub topology: &'a str,
    pub table: &'a toml::Table,
}

/// The id of a run's `sequence`-th checkpoint: `run` (a random number per run of a
/// coordinator) in the high bits, so that a restarted run's ids never meet changes that the
/// run before prepared and never committed.
pub fn checkpoint_id(sequence: u32, run: u32) -> u64 {
    ((run as u64) << 32) | sequence as u64
}

/// Encodes a key or value as the backends store it: MessagePack with field names.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes what [`encode`] wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BoxError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// A task's typed key-value state, which remembers what changed since the last checkpoint.
pub struct KeyValueState<K, V> {
    map: HashMap<K, Slot<V>>,
    /// Keys whose slot is dirty, each once.
    dirty: Vec<K>,
    live: usize,
}

struct Slot<V> {
    /// `None`: deleted since the last checkpoint (kept until then to say so).
    value: Option<V>,
    dirty: bool,
}

impl<K, V> Default for KeyValueState<K, V> {
    fn default() -> Self {
        KeyValueState { map: HashMap::new(), dirty: Vec::new(), live: 0 }
    }
}

impl<K: Eq + Hash + Clone, V> KeyValueState<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).and_then(|s| s.value.as_ref())
    }

    /// The value of `key` to change in place (marks `key` changed); `None` if it has none.
    /// Looks a key up by reference (a `&str` for a `String` key), so an existing key costs
    /// no allocation.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (k, slot) = self.map.get_key_value(key)?;
        slot.value.as_ref()?;
        if !slot.dirty {
            self.dirty.push(k.clone());
        }
        let slot = self.map.get_mut(key)?;
        slot.dirty = true;
        slot.value.as_mut()
    }

    /// Sets `key` to `value`, returning the old value.
    pub fn put(&mut self, key: K, value: V) -> Option<V> {
        match self.map.entry(key) {
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push(e.key().clone());
                }
                let old = e.get_mut().value.replace(value);
                if old.is_none() {
                    self.live += 1;
                }
                old
            }
            Entry::Vacant(e) => {
                self.dirty.push(e.key().clone());
                e.insert(Slot { value: Some(value), dirty: true });
                self.live += 1;
                None
            }
        }
    }

    /// The value of `key`, inserting `default()` first if it has none; marks `key` changed.
    pub fn get_mut_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        let slot = match self.map.entry(key) {
            Entry::Occupied(e) => {
                if !e.get().dirty {
                    self.dirty.push(e.key().clone());
                }
                let slot = e.into_mut();
                slot.dirty = true;
                slot
            }
            Entry::Vacant(e) => {
                self.dirty.push(e.key().clone());
                e.insert(Slot { value: None, dirty: true })
            }
        };
        if slot.value.is_none() {
            self.live += 1;
        }
        slot.value.get_or_insert_with(default)
    }

    /// Deletes `key`, returning its value.
    pub fn delete<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.map.get_mut(key)?;
        let old = slot.value.take()?;
        self.live -= 1;
        if !slot.dirty {
            slot.dirty = true;
            let key = self.map.get_key_value(key).map(|(k, _)| k.clone())?;
            self.dirty.push(key);
        }
        Some(old)
    }

    /// Live entries (deleted ones not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every live entry, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().filter_map(|(k, s)| s.value.as_ref().map(|v| (k, v)))
    }

    /// Keys changed since the last [`Self::take_changes`].
    pub fn changed(&self) -> usize {
        self.dirty.len()
    }
}

impl<K, V> KeyValueState<K, V>
where
    K: Eq + Hash + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// What changed since the last call, encoded; the state then counts as unchanged.
    pub fn take_changes(&mut self) -> Result<Vec<Change>, BoxError> {
        let mut changes = Vec::with_capacity(self.dirty.len());
        for key in std::mem::take(&mut self.dirty) {
            let Entry::Occupied(mut e) = self.map.entry(key) else { continue };
            let slot = e.get_mut();
            slot.dirty = false;
            let value = match &slot.value {
                Some(v) => Some(encode(v)?),
                None => None,
            };
            changes.push(Change { key: encode(e.key())?, value });
            if e.get().value.is_none() {
                e.remove();
            }
        }
        Ok(changes)
    }

    /// Replaces the whole state with `entries` (encoded, as [`StateBackend::load`] returns
    /// them); nothing counts as changed.
    pub fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), BoxError> {
        self.map.clear();
        self.dirty.clear();
        self.map.reserve(entries.len());
        for (k, v) in entries {
            self.map.insert(decode(&k)?, Slot { value: Some(decode(&v)?), dirty: false });
        }
        self.live = self.map.len();
        Ok(())
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for KeyValueState<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.map.iter().filter_map(|(k, s)| s.value.as_ref().map(|v| (k, v)))).finish()
    }
}

/// A bolt with a key-value state the runtime checkpoints and restores. See the module docs.
#[async_trait]
pub trait StatefulBolt: Send + 'static {
    type Key: Serialize + DeserializeOwned + Eq + Hash + Clone + Send + Sync + 'static;
    type Value: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Declares the streams this bolt emits (none by default).
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    /// Called once on the bolt's task, before its state is restored.
    async fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// The state was restored (the last committed one, empty before the first checkpoint);
    /// called before the first tuple (Storm's `initState`).
    fn init_state(&mut self, _state: &KeyValueState<Self::Key, Self::Value>) {}

    /// Processes one input: emits are anchored to it; it is acked on `Ok`, failed on `Err`.
    async fn execute(
        &mut self,
        input: &Tuple,
        state: &mut KeyValueState<Self::Key, Self::Value>,
        out: &mut BasicCollector<'_>,
    ) -> Result<(), BoxError>;

    /// A checkpoint is about to be taken of `state` (Storm's `preCommit`).
    fn pre_checkpoint(&mut self, _state: &mut KeyValueState<Self::Key, Self::Value>, _checkpoint: u64) {}

    /// The state was rolled back to the last committed checkpoint (Storm's `postRollback`
    /// hook; Storm calls its own before).
    fn post_rollback(&mut self, _state: &KeyValueState<Self::Key, Self::Value>) {}

    /// Called once when the bolt's task ends.
    async fn cleanup(&mut self) {}
}

/// A [`StatefulBolt`] with its state, behind one object-safe trait the runtime drives.
#[async_trait]
pub trait DynStateful: Send + 'static {
    fn declare_outputs(&self, out: &mut OutputDeclarer);
    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), BoxError>;
    /// Replaces the state with `entries` and calls `init_state` (first restore) or
    /// `post_rollback` (`rollback` true).
    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>, rollback: bool) -> Result<(), BoxError>;
    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError>;
    /// Calls `pre_checkpoint`, then hands over what changed since the last checkpoint.
    fn checkpoint(&mut self, id: u64) -> Result<Vec<Change>, BoxError>;
    /// Live entries of the state.
    fn entries(&self) -> usize;
    async fn cleanup(&mut self);
}

/// The [`DynStateful`] of a [`StatefulBolt`].
pub struct WithState<B: StatefulBolt> {
    bolt: B,
    state: KeyValueState<B::Key, B::Value>,
}

impl<B: StatefulBolt> WithState<B> {
    pub fn new(bolt: B) -> Self {
        WithState { bolt, state: KeyValueState::new() }
    }
}

#[async_trait]
impl<B: StatefulBolt> DynStateful for WithState<B> {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.bolt.declare_outputs(out)
    }

    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.bolt.prepare(ctx).await
    }

    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>, rollback: bool) -> Result<(), BoxError> {
        self.state.restore(entries)?;
        if rollback {
            self.bolt.post_rollback(&self.state);
        } else {
            self.bolt.init_state(&self.state);
        }
        Ok(())
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        self.bolt.execute(input, &mut self.state, out).await
    }

    fn checkpoint(&mut self, id: u64) -> Result<Vec<Change>, BoxError> {
        self.bolt.pre_checkpoint(&mut self.state, id);
        self.state.take_changes()
    }

    fn entries(&self) -> usize {
        self.state.len()
    }

    async fn cleanup(&mut self) {
        self.bolt.cleanup().await
    }
}

/// Keeps checkpoints in this process: they survive a rollback, not the process.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Debug, Default)]
struct Memory {
    /// By component: the committed state.
    committed: HashMap<String, HashMap<Vec<u8>, Vec<u8>>>,
    /// By checkpoint id: the changes prepared under it, per participant.
    prepared: HashMap<u64, Vec<(Participant, Vec<Change>)>>,
    last: Option<Committed>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateBackend for MemoryBackend {
    async fn prepare(&self, component: &str, task: u32, id: u64, changes: &[Change]) -> Result<(), BoxError> {
        let mut m = self.inner.lock().expect("memory backend poisoned");
        let participant = Participant { component: component.to_string(), task };
        m.prepared.entry(id).or_default().push((participant, changes.to_vec()));
        Ok(())
    }

    async fn commit(&self, id: u64, participants: &[Participant], meta: &[u8]) -> Result<(), BoxError> {
        let mut m = self.inner.lock().expect("memory backend poisoned");
        let prepared = m.prepared.remove(&id).unwrap_or_default();
        for (who, changes) in prepared {
            if !participants.contains(&who) {
                continue;
            }
            let state = m.committed.entry(who.component).or_default();
            for c in changes {
                match c.value {
                    Some(v) => state.insert(c.key, v),
                    None => state.remove(&c.key),
                };
            }
        }
        // Changes prepared under older ids were rolled back: never committed, never seen.
        m.prepared.retain(|&other, _| other > id);
        m.last = Some(Committed { id, meta: meta.to_vec() });
        Ok(())
    }

    async fn last_committed(&self) -> Result<Option<Committed>, BoxError> {
        Ok(self.inner.lock().expect("memory backend poisoned").last.clone())
    }

    async fn load(&self, component: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BoxError> {
        let m = self.inner.lock().expect("memory backend poisoned");
        Ok(m.committed
            .get(component)
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn describe(&self) -> String {
        "the memory of this process".to_string()
    }

    fn durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(state: &mut KeyValueState<String, u64>) -> Vec<(String, Option<u64>)> {
        let mut out: Vec<(String, Option<u64>)> = state
            .take_changes()
            .unwrap()
            .into_iter()
            .map(|c| (decode(&c.key).unwrap(), c.value.map(|v| decode(&v).unwrap())))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_state_hands_over_each_changed_key_once_with_its_latest_value() {
        let mut state = KeyValueState::new();
        state.put("a".to_string(), 1);
        state.put("a".to_string(), 2);
        *state.get_mut_or_insert_with("b".to_string(), || 0) += 5;
        assert_eq!(changes(&mut state), [("a".into(), Some(2)), ("b".into(), Some(5))]);
        assert!(changes(&mut state).is_empty(), "nothing changed since");
        *state.get_mut("a").unwrap() += 1;
        assert_eq!(state.get("a"), Some(&3));
        assert_eq!(state.delete("b"), Some(5));
        assert_eq!(state.get_mut("b"), None, "a deleted key has no value to change");
        assert_eq!(state.len(), 1);
        assert_eq!(changes(&mut state), [("a".into(), Some(3)), ("b".into(), None)]);
        assert_eq!(state.iter().count(), 1, "the deletion was handed over and forgotten");
    }

    #[test]
    fn a_restored_state_holds_the_entries_and_counts_nothing_as_changed() {
        let mut state: KeyValueState<String, u64> = KeyValueState::new();
        state.put("gone".into(), 1);
        state.restore(vec![(encode("x").unwrap(), encode(&7u64).unwrap())]).unwrap();
        assert_eq!(state.get("x"), Some(&7));
        assert_eq!(state.get("gone"), None);
        assert!(changes(&mut state).is_empty());
    }

    #[tokio::test]
    async fn the_memory_backend_shows_only_committed_changes() {
        let backend = MemoryBackend::new();
        let put = |k: &str, v: u64| Change { key: encode(k).unwrap(), value: Some(encode(&v).unwrap()) };
        let who = |task| Participant { component: "count".into(), task };
        backend.prepare("count", 1, 5, &[put("a", 1)]).await.unwrap();
        backend.prepare("count", 2, 5, &[put("b", 1)]).await.unwrap();
        assert!(backend.load("count").await.unwrap().is_empty(), "prepared is not committed");
        backend.commit(5, &[who(1), who(2)], b"meta").await.unwrap();
        assert_eq!(backend.load("count").await.unwrap().len(), 2);
        backend.prepare("count", 1, 6, &[put("a", 9)]).await.unwrap();
        backend.prepare("count", 1, 7, &[Change { key: encode("a").unwrap(), value: None }]).await.unwrap();
        backend.commit(7, &[who(1)], b"m7").await.unwrap();
        let entries = backend.load("count").await.unwrap();
        assert_eq!(
            entries,
            vec![(encode("b").unwrap(), encode(&1u64).unwrap())],
            "7 deleted a; 6 never committed"
        );
        assert_eq!(backend.last_committed().await.unwrap(), Some(Committed { id: 7, meta: b"m7".to_vec() }));
        assert!(!backend.durable());
    }
}
