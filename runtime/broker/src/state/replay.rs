//! The records of the `log` state backend and the pure core that replays them: no I/O.
//!
//! Contract: [`Replay`] takes the records of the delta topic in log order
//! ([`Replay::record`]), optionally after the records of a snapshot ([`Replay::snapshot`]),
//! and holds the committed state of one component (or of all of them, for a new snapshot),
//! the changes prepared and not yet committed, and the last commit. A commit applies the
//! changes its named tasks prepared under its id, in the order they were prepared; a later
//! commit wins, a `nil` value deletes; on a commit, what was prepared under older ids is
//! dropped (rolled back, as `MemoryBackend` does). A record that does not decode is an error
//! saying why, never data.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use squall_api::{Change, Committed};

pub(super) const COMMIT_KEY: &[u8] = b"commit";
pub(super) const PREPARE_PREFIX: &[u8] = b"prepare/";
pub(super) const ENTRIES_PREFIX: &[u8] = b"entries/";
pub(super) const PENDING_PREFIX: &[u8] = b"pending/";
pub(super) const DONE_KEY: &[u8] = b"done";

/// Changes as a record holds them: key, and value or None for a deletion.
pub(super) type Changes = Vec<(Bytes, Option<Bytes>)>;

/// Bytes that serialize as MessagePack `bin`, not as an array of numbers.
pub(super) struct Bin<'a>(pub &'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A prepare record of the delta topic (key `prepare/<component>`), and a pending prepare
/// of a snapshot (key `pending/<component>`, with the snapshot's `snap`).
#[derive(Serialize)]
pub(super) struct PrepareOut<'a> {
    pub snap: u64,
    pub id: u64,
    pub task: u32,
    pub changes: Vec<(Bin<'a>, Option<Bin<'a>>)>,
}

#[derive(Deserialize)]
struct PrepareIn {
    #[serde(default)]
    snap: u64,
    id: u64,
    task: u32,
    changes: Changes,
}

/// A commit record of the delta topic (key `commit`).
#[derive(Serialize)]
pub(super) struct CommitOut<'a> {
    pub id: u64,
    pub participants: Vec<(&'a str, u32)>,
    pub meta: Bin<'a>,
}

#[derive(Deserialize)]
struct CommitIn {
    id: u64,
    participants: Vec<(String, u32)>,
    meta: Bytes,
}

/// Committed entries of a component in a snapshot (key `entries/<component>`).
#[derive(Serialize)]
pub(super) struct EntriesOut<'a> {
    pub snap: u64,
    pub entries: Vec<(Bin<'a>, Bin<'a>)>,
}

#[derive(Deserialize)]
struct EntriesIn {
    snap: u64,
    entries: Vec<(Bytes, Bytes)>,
}

/// The last record of a snapshot (key `done`): it stands for the delta topic's offsets below
/// `covers`, which held `delta_bytes` bytes then; the snapshot itself took `bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Done {
    pub snap: u64,
    pub covers: u64,
    pub delta_bytes: u64,
    pub bytes: u64,
    pub last: Option<(u64, Bytes)>,
}

/// About the bytes a change takes in a record.
pub(super) fn change_size(c: &Change) -> usize {
    c.key.len() + c.value.as_ref().map_or(0, Vec::len) + 16
}

/// Splits items into runs whose sizes add up to at most `limit` each (an item alone may pass
/// it); at least one run, empty when there are no items.
pub(super) fn chunks<T>(items: &[T], limit: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && bytes + n > limit {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() || out.is_empty() {
        out.push(&items[start..]);
    }
    out
}

/// One component's part of a replay.
#[derive(Default)]
pub(super) struct Part {
    /// By checkpoint id: (task, its changes), in the order they were prepared.
    pub pending: HashMap<u64, Vec<(u32, Changes)>>,
    pub state: HashMap<Bytes, Bytes>,
}

/// Which components' state a replay keeps.
enum Keep {
    One(String),
    All,
    /// None: only the last commit is of interest.
    Nothing,
}

/// The committed state built by reading the records in order. See the module docs.
pub struct Replay {
    keep: Keep,
    pub(super) parts: HashMap<String, Part>,
    pub(super) last: Option<Committed>,
}

fn bad(what: &str) -> impl Fn(rmp_serde::decode::Error) -> String + '_ {
    move |e| format!("bad {what} record: {e}")
}

impl Replay {
    /// A replay that keeps `component`'s state.
    pub fn of(component: &str) -> Self {
        Replay { keep: Keep::One(component.to_string()), parts: HashMap::new(), last: None }
    }

    /// A replay that keeps every component's state (to write a snapshot).
    pub fn all() -> Self {
        Replay { keep: Keep::All, parts: HashMap::new(), last: None }
    }

    /// A replay that keeps no state, only the last commit.
    pub fn last_only() -> Self {
        Replay { keep: Keep::Nothing, parts: HashMap::new(), last: None }
    }

    /// The part of `component`, if this replay keeps it.
    fn part(&mut self, component: &[u8]) -> Option<&mut Part> {
        let component = std::str::from_utf8(component).ok()?;
        match &self.keep {
            Keep::One(one) if one == component => {}
            Keep::All => {}
            _ => return None,
        }
        Some(self.parts.entry(component.to_string()).or_default())
    }

    /// Takes one record of the delta topic (its key and value).
    pub fn record(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), String> {
        let Some(key) = key else { return Err("not a state record (no key)".into()) };
        if key == COMMIT_KEY {
            let commit: CommitIn = rmp_serde::from_slice(value).map_err(bad("commit"))?;
            for (component, part) in &mut self.parts {
                let mine: HashSet<u32> =
                    commit.participants.iter().filter(|(c, _)| c == component).map(|&(_, t)| t).collect();
                for (task, changes) in part.pending.remove(&commit.id).unwrap_or_default() {
                    if mine.contains(&task) {
                        apply(&mut part.state, changes);
                    }
                }
                part.pending.retain(|&other, _| other > commit.id);
            }
            self.last = Some(Committed { id: commit.id, meta: commit.meta.to_vec() });
            Ok(())
        } else if let Some(component) = key.strip_prefix(PREPARE_PREFIX) {
            if let Some(part) = self.part(component) {
                let p: PrepareIn = rmp_serde::from_slice(value).map_err(bad("prepare"))?;
                part.pending.entry(p.id).or_default().push((p.task, p.changes));
            }
            Ok(())
        } else {
            Err(format!("not a state record (key {:?})", String::from_utf8_lossy(key)))
        }
    }

    /// Takes one record of the snapshot topic that belongs to the snapshot `snap`; returns
    /// its [`Done`] record once it comes (records of other snapshots are skipped).
    pub(super) fn snapshot(
        &mut self,
        snap: u64,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Option<Done>, String> {
        let Some(key) = key else { return Err("not a snapshot record (no key)".into()) };
        if key == DONE_KEY {
            let done: Done = rmp_serde::from_slice(value).map_err(bad("snapshot done"))?;
            if done.snap != snap {
                return Ok(None);
            }
            self.last = done.last.as_ref().map(|(id, meta)| Committed { id: *id, meta: meta.to_vec() });
            Ok(Some(done))
        } else if let Some(component) = key.strip_prefix(ENTRIES_PREFIX) {
            if let Some(part) = self.part(component) {
                let e: EntriesIn = rmp_serde::from_slice(value).map_err(bad("snapshot entries"))?;
                if e.snap == snap {
                    part.state.extend(e.entries);
                }
            }
            Ok(None)
        } else if let Some(component) = key.strip_prefix(PENDING_PREFIX) {
            if let Some(part) = self.part(component) {
                let p: PrepareIn = rmp_serde::from_slice(value).map_err(bad("snapshot pending"))?;
                if p.snap == snap {
                    part.pending.entry(p.id).or_default().push((p.task, p.changes));
                }
            }
            Ok(None)
        } else {
            Err(format!("not a snapshot record (key {:?})", String::from_utf8_lossy(key)))
        }
    }

    /// The last commit seen.
    pub fn last(&self) -> Option<&Committed> {
        self.last.as_ref()
    }

    /// The committed state of the component (of [`Replay::of`]): every key with its value.
    pub fn finish(mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let part = match &self.keep {
            Keep::One(component) => self.parts.remove(component).unwrap_or_default(),
            _ => Part::default(),
        };
        part.state.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }
}

fn apply(state: &mut HashMap<Bytes, Bytes>, changes: Changes) {
    for (k, v) in changes {
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(&k),
        };
    }
}

/// The snapshot id of the first record of a snapshot topic's run (any record of a snapshot
/// carries it), if it has one.
pub(super) fn snap_of(key: Option<&[u8]>, value: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Snap {
        snap: u64,
    }
    let key = key?;
    let ours = key == DONE_KEY || key.starts_with(ENTRIES_PREFIX) || key.starts_with(PENDING_PREFIX);
    ours.then(|| rmp_serde::from_slice::<Snap>(value).ok().map(|s| s.snap)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, value: Option<&str>) -> Change {
        Change { key: key.as_bytes().to_vec(), value: value.map(|v| v.as_bytes().to_vec()) }
    }

    pub(crate) fn prepare(id: u64, task: u32, changes: &[Change]) -> Vec<u8> {
        let record = PrepareOut {
            snap: 0,
            id,
            task,
            changes: changes.iter().map(|c| (Bin(&c.key), c.value.as_deref().map(Bin))).collect(),
        };
        rmp_serde::to_vec_named(&record).unwrap()
    }

    fn commit(id: u64, participants: &[(&str, u32)]) -> Vec<u8> {
        rmp_serde::to_vec_named(&CommitOut { id, participants: participants.to_vec(), meta: Bin(b"m") })
            .unwrap()
    }

    fn sorted(mut entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
        entries.sort();
        entries
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn replay_applies_committed_changes_in_commit_order_and_nothing_else() {
        let mut r = Replay::of("count");
        let p = b"prepare/count".as_slice();
        r.record(Some(p), &prepare(1, 0, &[change("a", Some("1")), change("b", Some("1"))])).unwrap();
        r.record(Some(b"prepare/other"), &prepare(1, 0, &[change("x", Some("9"))])).unwrap();
        r.record(Some(p), &prepare(1, 7, &[change("c", Some("1"))])).unwrap();
        r.record(Some(b"commit"), &commit(1, &[("count", 0), ("other", 0)])).unwrap();
        // Never committed.
        r.record(Some(p), &prepare(2, 0, &[change("a", Some("99"))])).unwrap();
        r.record(Some(p), &prepare(3, 0, &[change("a", Some("2")), change("b", None)])).unwrap();
        r.record(Some(b"commit"), &commit(3, &[("count", 0)])).unwrap();
        assert_eq!(r.last().map(|c| c.id), Some(3));
        assert_eq!(
            sorted(r.finish()),
            [("a".into(), "2".into())],
            "task 7 was not named, id 2 never committed"
        );
    }

    #[test]
    fn a_record_that_is_not_state_is_an_error_not_data() {
        let mut r = Replay::of("count");
        assert!(r.record(None, b"x").is_err());
        assert!(r.record(Some(b"commit"), b"\xc1").unwrap_err().starts_with("bad commit"));
        assert!(r.record(Some(b"prepare/count"), b"").unwrap_err().starts_with("bad prepare"));
        assert!(r.record(Some(b"what"), b"").unwrap_err().starts_with("not a state record"));
        assert_eq!(r.record(Some(b"prepare/other"), b"garbage"), Ok(()), "others' records are not read");
        assert!(r.snapshot(1, Some(b"done"), b"\xc1").is_err());
    }

    #[test]
    fn a_snapshot_is_the_base_and_its_pending_prepares_commit_later() {
        let mut r = Replay::of("count");
        let entries = EntriesOut { snap: 9, entries: vec![(Bin(b"a"), Bin(b"1")), (Bin(b"b"), Bin(b"1"))] };
        let other = EntriesOut { snap: 8, entries: vec![(Bin(b"z"), Bin(b"1"))] };
        let pending = PrepareOut { snap: 9, id: 5, task: 0, changes: vec![(Bin(b"a"), Some(Bin(b"5")))] };
        let done = Done {
            snap: 9,
            covers: 10,
            delta_bytes: 100,
            bytes: 50,
            last: Some((4, Bytes::from_static(b"m4"))),
        };
        let enc = |v: &dyn erased::Encode| v.encode();
        assert_eq!(r.snapshot(9, Some(b"entries/count"), &enc(&entries)), Ok(None));
        assert_eq!(r.snapshot(9, Some(b"entries/count"), &enc(&other)), Ok(None), "another snapshot's");
        assert_eq!(r.snapshot(9, Some(b"pending/count"), &enc(&pending)), Ok(None));
        assert_eq!(snap_of(Some(b"pending/count"), &enc(&pending)), Some(9));
        assert_eq!(r.snapshot(9, Some(b"done"), &rmp_serde::to_vec_named(&done).unwrap()), Ok(Some(done)));
        assert_eq!(r.last().map(|c| c.id), Some(4));
        r.record(Some(b"commit"), &commit(5, &[("count", 0)])).unwrap();
        assert_eq!(sorted(r.finish()), [("a".into(), "5".into()), ("b".into(), "1".into())]);
    }

    mod erased {
        pub trait Encode {
            fn encode(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Encode for T {
            fn encode(&self) -> Vec<u8> {
                rmp_serde::to_vec_named(self).unwrap()
            }
        }
    }

    #[test]
    fn items_are_split_into_chunks_below_the_limit() {
        let changes: Vec<Change> = (0..10).map(|i| change(&format!("k{i}"), Some("vvvv"))).collect();
        let size = change_size(&changes[0]);
        let parts = chunks(&changes, size * 3, change_size);
        assert_eq!(parts.iter().map(|c| c.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(chunks::<Change>(&[], 10, change_size).len(), 1, "an empty prepare still names its task");
        assert_eq!(
            chunks(&changes[..1], 1, change_size).len(),
            1,
            "an item bigger than the limit goes alone"
        );
    }
}
