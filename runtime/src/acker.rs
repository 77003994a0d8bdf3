//! The acker: Storm's XOR scheme for following tuple trees.
//!
//! Contract: every reliable spout tuple starts a tree with a random 64-bit root id; every
//! delivery of a tuple in the tree (an edge) gets a random, non-zero 64-bit id. The acker task
//! chosen by `root % ackers` keeps one 64-bit value per root, the XOR of every edge id it has
//! heard of: the spout's `Init` carries the XOR of the edges it created, and each bolt's `Ack`
//! of an input carries the input's edge id XOR the ids of the edges it anchored to that input.
//! Every edge id thus enters the XOR exactly twice, so the value is zero exactly when every
//! tuple of the tree has been acked (up to a 2^-64 chance). Then the acker tells the spout
//! task `acked`; on a bolt's `Fail`, or when the tree is older than the message timeout
//! (`Reset` restarts that clock), it tells it `failed`. A root is forgotten as soon as its
//! outcome is sent, so the spout hears at most one outcome per root, and messages for a
//! forgotten root are ignored. Messages may arrive in any order: a bolt's ack can overtake the
//! spout's init.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use squall_api::TaskId;
use tokio::sync::mpsc;

/// A message to an acker task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckerMsg {
    /// A spout task emitted a tuple tree: `val` is the XOR of the edges it created.
    Init { root: u64, val: u64, spout_task: TaskId },
    /// A bolt acked a tuple of the tree: its edge id XOR the edges anchored to it.
    Ack { root: u64, val: u64 },
    /// A bolt failed a tuple of the tree.
    Fail { root: u64 },
    /// Restart the tree's timeout.
    Reset { root: u64 },
}

/// What the acker tells a spout task about one of its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub root: u64,
    pub acked: bool,
}

/// Random 64-bit ids (xorshift64*), never zero. Not cryptographic: ids only need to be
/// unlikely to collide within the trees in flight.
#[derive(Debug, Clone)]
pub struct IdGen(u64);

impl IdGen {
    pub fn new() -> Self {
        IdGen(fastrand::u64(1..))
    }

    #[inline]
    pub fn next_id(&mut self) -> u64 {
        loop {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let id = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            if id != 0 {
                return id;
            }
        }
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

/// Roots are already random: hashing them again is wasted work.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

const NO_SPOUT: TaskId = TaskId::MAX;

/// The acker's clock resolution: a tree times out between its timeout and one tick later.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Tree {
    val: u64,
    spout_task: TaskId,
    failed: bool,
    /// The clock tick (see [`TICK`]) of its birth or last reset.
    born: u32,
}

/// The acker's state, independent of how messages reach it.
#[derive(Debug)]
pub struct Acker {
    trees: IdMap<Tree>,
    timeout_ticks: u32,
    now: u32,
}

impl Acker {
    pub fn new(message_timeout: Duration) -> Self {
        Acker {
            trees: IdMap::default(),
            timeout_ticks: (message_timeout.as_millis() / TICK.as_millis()).clamp(1, u32::MAX as u128) as u32,
            now: 0,
        }
    }

    /// Trees being followed.
    pub fn pending(&self) -> usize {
        self.trees.len()
    }

    /// Applies one message; `emit(spout_task, outcome)` is called for a tree that completes.
    #[inline]
    pub fn handle(&mut self, msg: AckerMsg, emit: &mut impl FnMut(TaskId, Outcome)) {
        let (root, val, spout_task, failed) = match msg {
            AckerMsg::Init { root, val, spout_task } => (root, val, spout_task, false),
            AckerMsg::Ack { root, val } => (root, val, NO_SPOUT, false),
            AckerMsg::Fail { root } => (root, 0, NO_SPOUT, true),
            AckerMsg::Reset { root } => {
                if let Some(e) = self.trees.get_mut(&root) {
                    e.born = self.now;
                }
                return;
            }
        };
        // One lookup per message: update in place, remove through the same entry.
        let mut entry = match self.trees.entry(root) {
            Entry::Occupied(o) => o,
            Entry::Vacant(v) => {
                v.insert(Tree { val, spout_task, failed, born: self.now });
                return; // a tree's first message cannot complete it
            }
        };
        let tree = entry.get_mut();
        tree.val ^= val;
        tree.failed |= failed;
        if spout_task != NO_SPOUT {
            tree.spout_task = spout_task;
        }
        if tree.spout_task == NO_SPOUT || (tree.val != 0 && !tree.failed) {
            return;
        }
        let (task, acked) = (tree.spout_task, !tree.failed);
        entry.remove();
        emit(task, Outcome { root, acked });
    }

    /// Advances the clock to `now` ticks (of [`TICK`]) and fails every tree older than the
    /// timeout. Trees whose spout never announced them are dropped silently: they belong to
    /// trees that already completed or failed.
    pub fn expire(&mut self, now: u32, emit: &mut impl FnMut(TaskId, Outcome)) {
        if now == self.now {
            return;
        }
        self.now = now;
        let timeout = self.timeout_ticks;
        self.trees.retain(|&root, e| {
            if now.saturating_sub(e.born) < timeout {
                return true;
            }
            if e.spout_task != NO_SPOUT {
                emit(e.spout_task, Outcome { root, acked: false });
            }
            false
        });
    }
}

/// Runs one acker task until every sender of its inbox is gone.
pub async fn run(
    mut inbox: mpsc::Receiver<Vec<AckerMsg>>,
    spouts: Vec<Option<mpsc::UnboundedSender<Vec<Outcome>>>>,
    message_timeout: Duration,
) {
    let started = Instant::now();
    let mut acker = Acker::new(message_timeout);
    let mut out: Vec<Vec<Outcome>> = vec![Vec::new(); spouts.len()];
    let mut clock = tokio::time::interval(TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = inbox.recv() => {
                let Some(batch) = batch else { break };
                for msg in batch {
                    acker.handle(msg, &mut |task, o| out[task as usize].push(o));
                }
            }
            _ = clock.tick() => {
                let now = (started.elapsed().as_millis() / TICK.as_millis()) as u32;
                acker.expire(now, &mut |task, o| out[task as usize].push(o));
            }
        }
        for (task, outcomes) in out.iter_mut().enumerate() {
            if outcomes.is_empty() {
                continue;
            }
            let batch = std::mem::replace(outcomes, Vec::with_capacity(64));
            if let Some(Some(tx)) = spouts.get(task) {
                // A spout that has already ended no longer cares.
                let _ = tx.send(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(acker: &mut Acker, msgs: &[AckerMsg]) -> Vec<(TaskId, Outcome)> {
        let mut out = Vec::new();
        for m in msgs {
            acker.handle(*m, &mut |t, o| out.push((t, o)));
        }
        out
    }

    #[test]
    fn acks_a_tree_when_every_edge_is_acked() {
        let mut a = Acker::new(Duration::from_secs(30));
        let (e1, e2, e3) = (11, 22, 33);
        // spout -> e1 (sentence); split acks e1 and anchors e2, e3 (words); count acks both.
        let out = outcomes(
            &mut a,
            &[
                AckerMsg::Init { root: 7, val: e1, spout_task: 0 },
                AckerMsg::Ack { root: 7, val: e1 ^ e2 ^ e3 },
                AckerMsg::Ack { root: 7, val: e2 },
            ],
        );
        assert!(out.is_empty());
        let out = outcomes(&mut a, &[AckerMsg::Ack { root: 7, val: e3 }]);
        assert_eq!(out, vec![(0, Outcome { root: 7, acked: true })]);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn acks_arriving_before_init_still_complete_the_tree() {
        let mut a = Acker::new(Duration::from_secs(30));
        let out = outcomes(
            &mut a,
            &[AckerMsg::Ack { root: 9, val: 5 }, AckerMsg::Init { root: 9, val: 5, spout_task: 3 }],
        );
        assert_eq!(out, vec![(3, Outcome { root: 9, acked: true })]);
    }

    #[test]
    fn fail_is_reported_once_and_later_acks_ignored() {
        let mut a = Acker::new(Duration::from_secs(30));
        let out = outcomes(
            &mut a,
            &[
                AckerMsg::Init { root: 1, val: 4, spout_task: 2 },
                AckerMsg::Fail { root: 1 },
                AckerMsg::Ack { root: 1, val: 4 },
            ],
        );
        assert_eq!(out, vec![(2, Outcome { root: 1, acked: false })]);
        // The stray ack left an orphan entry; expiry drops it without telling anyone.
        let mut later = Vec::new();
        a.expire(1000, &mut |t, o| later.push((t, o)));
        assert!(later.is_empty());
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn times_out_trees_older_than_the_message_timeout() {
        // 5 s is 50 ticks of 100 ms.
        let mut a = Acker::new(Duration::from_secs(5));
        outcomes(&mut a, &[AckerMsg::Init { root: 1, val: 4, spout_task: 0 }]);
        let mut out = Vec::new();
        a.expire(49, &mut |t, o| out.push((t, o)));
        assert!(out.is_empty());
        // A reset at tick 49 restarts the clock.
        outcomes(&mut a, &[AckerMsg::Reset { root: 1 }]);
        a.expire(98, &mut |t, o| out.push((t, o)));
        assert!(out.is_empty());
        a.expire(99, &mut |t, o| out.push((t, o)));
        assert_eq!(out, vec![(0, Outcome { root: 1, acked: false })]);
    }

    #[test]
    fn ids_are_never_zero_and_rarely_repeat() {
        let mut g = IdGen::new();
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| g.next_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
    }
}
