//! The acker: Storm's XOR scheme for following tuple trees. [`protocol`] is what travels
//! (root and edge ids, which acker follows a tree, the messages); this module is the acker
//! itself ([`Acker`], no I/O) and its task ([`run`]).
//!
//! Contract: every reliable spout tuple starts a tree with a 64-bit root id made by the spout
//! task's in-flight slab (see [`make_root`]): bits 48..64 are the spout task id, bits 32..48 a
//! generation of the slot and bits 0..32 the slot, so a root names its spout task and is
//! unique among the trees in flight. Every delivery of a tuple in the tree (an edge) gets a
//! random, non-zero 64-bit id. The acker task chosen by [`acker_of`] (from the root's spout
//! task and slot, so every message of a tree, whatever its generation, goes to one acker, and
//! the slots in use spread evenly over the ackers) keeps one 64-bit value per root, the XOR of
//! every edge id it has heard of: the spout's `Init` carries the XOR of the edges it created,
//! and each bolt's `Ack` of an input carries the input's edge id XOR the ids of the edges it
//! anchored to that input. Every edge id thus enters the XOR exactly twice, so the value is
//! zero exactly when every tuple of the tree has been acked (up to a 2^-64 chance). Then the
//! acker tells the spout task `acked`; on a bolt's `Fail`, or when the tree is older than the
//! message timeout (`Reset` restarts that clock), it tells it `failed`. A root is forgotten as
//! soon as its outcome is sent, so the spout hears at most one outcome per root, and messages
//! for a forgotten root are ignored. Messages may arrive in any order: a bolt's ack can
//! overtake the spout's init (a tree completes only once its init is in; a fail needs none).
//! A failed outcome says why (Storm's STORM-521): the component named by the bolt's `Fail`,
//! or, for a tree that timed out, the components that still held part of it ([`holders`],
//! from the lanes of the bolts whose acks the tree saw: one byte per tree).
//!
//! Trees are kept in a slab per spout task, indexed by the root's slot: every message is an
//! array access, not a hash probe. The spout reuses a slot only after it heard the outcome of
//! the slot's tree, and spout and acker then both step the slot's generation, so a message
//! whose generation is behind the slot's current one is for a forgotten root and is ignored
//! (deterministically; a message would have to be delayed past 32768 reuses of its slot to be
//! mistaken for the current tree). A generation ahead of the slot's means the spout moved on
//! without this acker's outcome (it timed the tree out itself, as it does when an acker's
//! worker died): the slot's old tree is dropped and the message's tree followed. A slot this
//! acker never saw takes any generation, so an acker restarted with its worker follows the
//! trees of spouts that kept running. Memory grows to the peak number of slots each spout
//! task had in flight. A message whose root names no spout task of the plan, or a slot past
//! what its spouts can reach ([`RootBounds`]), is ignored: whatever a peer sends, the slabs
//! stay within the plan's bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_api::TaskId;
use tokio::sync::mpsc;

use crate::executor::rewire::Rewire;

pub mod holders;
pub mod protocol;

pub use holders::Holders;
pub use protocol::*;

/// The acker's clock resolution: a tree times out between its timeout and one tick later.
pub const TICK: Duration = Duration::from_millis(100);

/// `Tree::state` bits; a slot without `LIVE` is free.
const LIVE: u8 = 1;
/// The spout's init is in.
const ANNOUNCED: u8 = 2;
const FAILED: u8 = 4;
/// This acker has seen the slot: until then any generation is the current one (a restarted
/// acker meets spouts whose slots are at any generation).
const USED: u8 = 8;

/// One slot of a spout task's slab: the slot's current generation and, while live, its tree.
#[derive(Debug, Clone, Copy, Default)]
struct Tree {
    val: u64,
    /// The clock tick (see [`TICK`]) of its birth or last reset.
    born: u32,
    gen: u16,
    state: u8,
    /// The lanes of the bolts that acked part of the tree (see [`holders`]).
    reported: u8,
}

impl Tree {
    /// A free slot at generation `gen`, seen by this acker.
    const fn free(gen: u16) -> Tree {
        Tree { val: 0, born: 0, gen, state: USED, reported: 0 }
    }
}

const _: () = assert!(std::mem::size_of::<Tree>() == 16, "a tree stays 16 bytes");

/// The acker's state, independent of how messages reach it.
#[derive(Debug)]
pub struct Acker {
    /// By spout task, then by slot / `ackers`: this acker's slots of that task.
    slabs: Vec<Vec<Tree>>,
    /// This acker's index among `ackers` (see [`acker_of`]).
    me: u32,
    ackers: u32,
    live: usize,
    timeout_ticks: u32,
    now: u32,
    /// Messages for roots outside are ignored.
    bounds: RootBounds,
    /// Names the holders of a tree that times out.
    holders: Holders,
}

impl Acker {
    /// The only acker.
    pub fn new(message_timeout: Duration) -> Self {
        Self::one_of(message_timeout, 0, 1)
    }

    /// Acker `me` of `ackers`: it gets the roots [`acker_of`] gives it.
    pub fn one_of(message_timeout: Duration, me: usize, ackers: usize) -> Self {
        assert!(me < ackers && ackers <= u32::MAX as usize, "acker {me} of {ackers}");
        Acker {
            slabs: Vec::new(),
            me: me as u32,
            ackers: ackers as u32,
            live: 0,
            timeout_ticks: (message_timeout.as_millis() / TICK.as_millis()).clamp(1, u32::MAX as u128) as u32,
            now: 0,
            bounds: RootBounds::ANY,
            holders: Holders::default(),
        }
    }

    /// Names the holders of trees that time out from `holders` (default: no one).
    pub fn with_holders(mut self, holders: Holders) -> Self {
        self.holders = holders;
        self
    }

    /// Follows only the roots `bounds` admits (default: any a spout can make).
    pub fn with_bounds(mut self, bounds: RootBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Trees being followed.
    pub fn pending(&self) -> usize {
        self.live
    }

    /// The slot of `root`, grown into existence (at generation 0, as the spout starts it).
    #[inline]
    fn slot(&mut self, root: u64) -> &mut Tree {
        debug_assert_eq!(
            acker_of(root, self.ackers as usize),
            self.me as usize,
            "root routed to the wrong acker"
        );
        let task = root_task(root) as usize;
        let slot = root_slot(root);
        let index = if self.ackers == 1 { slot } else { slot / self.ackers } as usize;
        if task >= self.slabs.len() {
            self.slabs.resize_with(task + 1, Vec::new);
        }
        let slab = &mut self.slabs[task];
        if index >= slab.len() {
            slab.resize(index + 1, Tree::default());
        }
        &mut slab[index]
    }

    /// Starts loading the slot of `root` into cache, for a [`handle`](Self::handle) soon.
    #[inline]
    pub fn prefetch(&self, root: u64) {
        let slot = root_slot(root);
        let index = if self.ackers == 1 { slot } else { slot / self.ackers } as usize;
        if let Some(tree) = self.slabs.get(root_task(root) as usize).and_then(|slab| slab.get(index)) {
            crate::prefetch::read(tree);
        }
    }

    /// Applies one message; `emit(spout_task, outcome)` is called for a tree that completes.
    #[inline]
    pub fn handle(&mut self, msg: AckerMsg, emit: &mut impl FnMut(TaskId, Outcome)) {
        if !self.bounds.admits(msg.root()) {
            return; // no spout of this plan made it: never grow a slab for it
        }
        let now = self.now;
        let (root, val, bits, lane, by) = match msg {
            AckerMsg::Init { root, val } => (root, val, ANNOUNCED, 0, TIMED_OUT),
            AckerMsg::Ack { root, val, lane } => (root, val, 0, lane, TIMED_OUT),
            AckerMsg::Fail { root, by } => (root, 0, FAILED, 0, by),
            AckerMsg::Reset { root } => {
                let tree = self.slot(root);
                if tree.gen == root_gen(root) && tree.state & LIVE != 0 {
                    tree.born = now;
                }
                return;
            }
        };
        let tree = self.slot(root);
        let gen = root_gen(root);
        let mut abandoned = false;
        if tree.gen != gen {
            // Half the generations ahead count as newer, the other half as older.
            if tree.state & USED != 0 && gen.wrapping_sub(tree.gen) >= 1 << 15 {
                return; // a forgotten root: the slot has moved on
            }
            // The spout has moved this slot on without hearing of its tree here (it timed the
            // tree out itself, say, while this acker's messages were lost with a worker), or
            // this acker is new: the slot's current tree is the message's.
            abandoned = tree.state & LIVE != 0;
            *tree = Tree::free(gen);
        }
        let first = tree.state & LIVE == 0;
        if first {
            *tree = Tree { val, born: now, gen, state: LIVE | USED | bits, reported: lane };
        } else {
            tree.val ^= val;
            tree.state |= bits;
            tree.reported |= lane;
        }
        let state = tree.state;
        if state & FAILED == 0 && (state & ANNOUNCED == 0 || tree.val != 0) {
            self.live = self.live + first as usize - abandoned as usize;
            return;
        }
        *tree = Tree::free(gen.wrapping_add(1));
        self.live -= !first as usize;
        self.live -= abandoned as usize;
        let outcome = if state & FAILED == 0 { Outcome::acked(root) } else { Outcome::failed(root, by) };
        emit(root_task(root), outcome);
    }

    /// Advances the clock to `now` ticks (of [`TICK`]) and fails every tree older than the
    /// timeout, announced or not (its spout task is known from the root).
    pub fn expire(&mut self, now: u32, emit: &mut impl FnMut(TaskId, Outcome)) {
        if now == self.now {
            return;
        }
        self.now = now;
        if self.live == 0 {
            return;
        }
        let (timeout, me, ackers) = (self.timeout_ticks, self.me as u64, self.ackers as u64);
        for (task, slab) in self.slabs.iter_mut().enumerate() {
            // Slot `index * ackers + first` is this acker's `index`th slot of `task`.
            let first = (me + ackers - task as u64 % ackers) % ackers;
            for (index, tree) in slab.iter_mut().enumerate() {
                if tree.state & LIVE == 0 || now.saturating_sub(tree.born) < timeout {
                    continue;
                }
                let slot = (index as u64 * ackers + first) as u32;
                let root = make_root(task as TaskId, tree.gen, slot);
                let held_by = self.holders.of(task as TaskId, tree.reported);
                *tree = Tree::free(tree.gen.wrapping_add(1));
                self.live -= 1;
                emit(task as TaskId, Outcome::timed_out(root, held_by));
            }
        }
    }
}

/// Runs acker `me` of `ackers` (see [`acker_of`]) until every sender of its inbox is gone.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut inbox: mpsc::Receiver<Vec<AckerMsg>>,
    mut spouts: Vec<Option<mpsc::UnboundedSender<Vec<Outcome>>>>,
    message_timeout: Duration,
    me: usize,
    ackers: usize,
    bounds: RootBounds,
    holders: Holders,
    rewire: Option<Arc<Rewire>>,
) {
    let mut seen = rewire.as_ref().map_or(0, |r| r.version());
    let started = Instant::now();
    let mut acker = Acker::one_of(message_timeout, me, ackers).with_bounds(bounds).with_holders(holders);
    let mut out: Vec<Vec<Outcome>> = vec![Vec::new(); spouts.len()];
    let mut clock = tokio::time::interval(TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A root names its spout task; one outside this topology has no one to tell.
    let emit = |out: &mut Vec<Vec<Outcome>>, task: TaskId, o: Outcome| {
        if let Some(outcomes) = out.get_mut(task as usize) {
            outcomes.push(o);
        }
    };
    loop {
        tokio::select! {
            batch = inbox.recv() => {
                let Some(batch) = batch else { break };
                if !follow(rewire.as_deref(), &mut seen, me, &mut acker, &mut spouts, &mut out) {
                    break;
                }
                for msg in batch.iter().take(crate::prefetch::AHEAD) {
                    acker.prefetch(msg.root());
                }
                for (i, &msg) in batch.iter().enumerate() {
                    if let Some(ahead) = batch.get(i + crate::prefetch::AHEAD) {
                        acker.prefetch(ahead.root());
                    }
                    acker.handle(msg, &mut |task, o| emit(&mut out, task, o));
                }
            }
            _ = clock.tick() => {
                if !follow(rewire.as_deref(), &mut seen, me, &mut acker, &mut spouts, &mut out) {
                    break;
                }
                let now = (started.elapsed().as_millis() / TICK.as_millis()) as u32;
                acker.expire(now, &mut |task, o| emit(&mut out, task, o));
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

/// Follows the process's latest wiring, if it published one since `seen` (a live rebalance,
/// see [`crate::executor::rewire`]): spout tasks may have come or gone, and their carriers
/// are new. False if acker `me` is no longer hosted here: it ends, and the spouts time out
/// the trees it followed.
fn follow(
    rewire: Option<&Rewire>,
    seen: &mut u64,
    me: usize,
    acker: &mut Acker,
    spouts: &mut Vec<Option<mpsc::UnboundedSender<Vec<Outcome>>>>,
    out: &mut Vec<Vec<Outcome>>,
) -> bool {
    let Some((version, wiring)) = rewire.filter(|r| r.changed(*seen)).and_then(|r| r.latest()) else {
        return true;
    };
    let plan = &wiring.plan;
    if !plan.acker_tasks.get(me).is_some_and(|t| wiring.hosted.contains(t)) {
        return false;
    }
    *spouts = wiring.links.spouts.clone();
    if out.len() < spouts.len() {
        out.resize_with(spouts.len(), Vec::new);
    }
    acker.bounds = RootBounds::new(plan.spout_id_space(), plan.settings.max_spout_pending);
    *seen = version;
    true
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

    fn expire(acker: &mut Acker, now: u32) -> Vec<(TaskId, Outcome)> {
        let mut out = Vec::new();
        acker.expire(now, &mut |t, o| out.push((t, o)));
        out
    }

    #[test]
    fn messages_for_roots_outside_the_plan_are_ignored_and_grow_nothing() {
        let bounds = RootBounds::new(2, 1000);
        assert_eq!(bounds.slots, 2000 + (1 << 20));
        let mut a = Acker::new(Duration::from_secs(30)).with_bounds(bounds);
        let far_slot = make_root(0, 0, u32::MAX);
        let not_a_spout = make_root(2, 0, 0);
        let msgs = [
            AckerMsg::Init { root: far_slot, val: 1 },
            AckerMsg::Fail { root: far_slot, by: 0 },
            AckerMsg::Reset { root: make_root(1, 0, bounds.slots) },
            AckerMsg::Init { root: not_a_spout, val: 1 },
            AckerMsg::Fail { root: not_a_spout, by: 0 },
        ];
        assert!(outcomes(&mut a, &msgs).is_empty());
        assert_eq!(a.pending(), 0);
        assert!(a.slabs.iter().all(Vec::is_empty), "no slot was grown for them");
        // The roots within the bounds are followed as ever.
        let root = make_root(1, 0, bounds.slots - 1);
        assert_eq!(outcomes(&mut a, &[AckerMsg::Fail { root, by: 0 }]), [(1, Outcome::failed(root, 0))]);
    }

    fn acked(task: TaskId, root: u64) -> (TaskId, Outcome) {
        (task, Outcome::acked(root))
    }

    fn failed(task: TaskId, root: u64) -> (TaskId, Outcome) {
        (task, Outcome::failed(root, 0))
    }

    fn timed_out(task: TaskId, root: u64) -> (TaskId, Outcome) {
        (task, Outcome::timed_out(root, 0))
    }

    #[test]
    fn roots_carry_task_generation_and_slot() {
        let root = make_root(65535, 0xBEEF, u32::MAX);
        assert_eq!((root_task(root), root_gen(root), root_slot(root)), (65535, 0xBEEF, u32::MAX));
        let next = next_generation(root);
        assert_eq!((root_task(next), root_gen(next), root_slot(next)), (65535, 0xBEF0, u32::MAX));
        let wrapped = next_generation(make_root(7, u16::MAX, 3));
        assert_eq!((root_task(wrapped), root_gen(wrapped), root_slot(wrapped)), (7, 0, 3));
    }

    #[test]
    fn a_new_acker_follows_trees_at_any_generation() {
        // The acker restarted with its worker; the spout's slot 4 is at generation 900.
        let mut a = Acker::new(Duration::from_secs(30));
        let root = make_root(1, 900, 4);
        let out =
            outcomes(&mut a, &[AckerMsg::Init { root, val: 6 }, AckerMsg::Ack { root, val: 6, lane: 0 }]);
        assert_eq!(out, vec![acked(1, root)]);
        let next = next_generation(root);
        let out = outcomes(
            &mut a,
            &[AckerMsg::Ack { root, val: 1, lane: 0 }, AckerMsg::Init { root: next, val: 2 }],
        );
        assert!(out.is_empty(), "the old generation is stale now, the next one is followed");
        assert_eq!(a.pending(), 1);
    }

    #[test]
    fn a_newer_generation_replaces_a_tree_its_spout_gave_up() {
        let mut a = Acker::new(Duration::from_secs(30));
        let old = make_root(0, 5, 2);
        assert!(outcomes(&mut a, &[AckerMsg::Init { root: old, val: 3 }]).is_empty());
        // The spout timed the tree out itself (its acks were lost with a worker) and reused
        // the slot.
        let new = next_generation(old);
        let out = outcomes(
            &mut a,
            &[AckerMsg::Init { root: new, val: 8 }, AckerMsg::Ack { root: old, val: 3, lane: 0 }],
        );
        assert!(out.is_empty(), "the abandoned tree is dropped, its late ack ignored");
        assert_eq!(a.pending(), 1);
        assert_eq!(outcomes(&mut a, &[AckerMsg::Ack { root: new, val: 8, lane: 0 }]), vec![acked(0, new)]);
        assert_eq!(a.pending(), 0);
        assert!(expire(&mut a, 1000).is_empty(), "nothing of the old tree is left to time out");
    }

    #[test]
    fn acks_a_tree_when_every_edge_is_acked() {
        let mut a = Acker::new(Duration::from_secs(30));
        let root = make_root(0, 0, 7);
        let (e1, e2, e3) = (11, 22, 33);
        // spout -> e1 (sentence); split acks e1 and anchors e2, e3 (words); count acks both.
        let out = outcomes(
            &mut a,
            &[
                AckerMsg::Init { root, val: e1 },
                AckerMsg::Ack { root, val: e1 ^ e2 ^ e3, lane: 0 },
                AckerMsg::Ack { root, val: e2, lane: 0 },
            ],
        );
        assert!(out.is_empty());
        assert_eq!(a.pending(), 1);
        let out = outcomes(&mut a, &[AckerMsg::Ack { root, val: e3, lane: 0 }]);
        assert_eq!(out, vec![acked(0, root)]);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn acks_arriving_before_init_still_complete_the_tree() {
        let mut a = Acker::new(Duration::from_secs(30));
        let root = make_root(3, 0, 9);
        let out = outcomes(&mut a, &[AckerMsg::Ack { root, val: 5, lane: 0 }]);
        assert!(out.is_empty(), "a tree completes only once its init is in");
        let out = outcomes(&mut a, &[AckerMsg::Init { root, val: 5 }]);
        assert_eq!(out, vec![acked(3, root)]);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn fail_is_reported_once_and_later_acks_ignored() {
        let mut a = Acker::new(Duration::from_secs(30));
        let root = make_root(2, 0, 1);
        let out = outcomes(
            &mut a,
            &[
                AckerMsg::Init { root, val: 4 },
                AckerMsg::Fail { root, by: 0 },
                AckerMsg::Ack { root, val: 4, lane: 0 },
            ],
        );
        assert_eq!(out, vec![failed(2, root)]);
        // The stray ack is for a forgotten root: it leaves nothing behind.
        assert_eq!(a.pending(), 0);
        assert!(expire(&mut a, 1000).is_empty());
    }

    #[test]
    fn a_fail_overtaking_the_init_is_reported_at_once() {
        let mut a = Acker::new(Duration::from_secs(30));
        let root = make_root(4, 0, 0);
        let out =
            outcomes(&mut a, &[AckerMsg::Ack { root, val: 6, lane: 0 }, AckerMsg::Fail { root, by: 0 }]);
        assert_eq!(out, vec![failed(4, root)]);
        let out = outcomes(&mut a, &[AckerMsg::Init { root, val: 6 }, AckerMsg::Fail { root, by: 0 }]);
        assert!(out.is_empty(), "the late init and a second fail are for a forgotten root");
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn times_out_trees_older_than_the_message_timeout() {
        // 5 s is 50 ticks of 100 ms.
        let mut a = Acker::new(Duration::from_secs(5));
        let root = make_root(0, 0, 1);
        outcomes(&mut a, &[AckerMsg::Init { root, val: 4 }]);
        assert!(expire(&mut a, 49).is_empty());
        // A reset at tick 49 restarts the clock.
        outcomes(&mut a, &[AckerMsg::Reset { root }]);
        assert!(expire(&mut a, 98).is_empty());
        assert_eq!(expire(&mut a, 99), vec![timed_out(0, root)]);
        assert_eq!(a.pending(), 0);
        // Reported once: later messages and ticks change nothing.
        assert!(outcomes(&mut a, &[AckerMsg::Ack { root, val: 4, lane: 0 }]).is_empty());
        assert!(expire(&mut a, 1000).is_empty());
    }

    #[test]
    fn a_fail_names_the_failing_bolt_and_a_timeout_the_bolts_that_held_the_tree() {
        // spout task 0 feeds lane 0 (split), which feeds lane 1 (count).
        let mut h = Holders::default();
        h.set_for_test(vec![1], [2, 0, 0, 0, 0, 0, 0, 0]);
        let mut a = Acker::new(Duration::from_secs(5)).with_holders(h);
        let (failed, held) = (make_root(0, 0, 1), make_root(0, 0, 2));
        let out = outcomes(
            &mut a,
            &[
                AckerMsg::Init { root: failed, val: 1 },
                AckerMsg::Init { root: held, val: 1 },
                AckerMsg::Fail { root: failed, by: 7 },
                // split acked its input and anchored one edge to count, which never acks.
                AckerMsg::Ack { root: held, val: 1 ^ 2, lane: 1 },
            ],
        );
        assert_eq!(out, vec![(0, Outcome::failed(failed, 7))]);
        assert_eq!(expire(&mut a, 50), vec![(0, Outcome::timed_out(held, 2))], "count held it");
    }

    #[test]
    fn times_out_a_tree_whose_init_never_came() {
        let mut a = Acker::new(Duration::from_secs(5));
        let root = make_root(6, 0, 2);
        outcomes(&mut a, &[AckerMsg::Ack { root, val: 9, lane: 0 }]);
        assert_eq!(expire(&mut a, 50), vec![timed_out(6, root)], "the root names its spout task");
        assert!(outcomes(&mut a, &[AckerMsg::Init { root, val: 9 }]).is_empty(), "a late init is ignored");
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn stale_ack_for_a_reused_slot_is_ignored() {
        let mut a = Acker::new(Duration::from_secs(30));
        let old = make_root(1, 0, 5);
        assert_eq!(
            outcomes(
                &mut a,
                &[AckerMsg::Init { root: old, val: 3 }, AckerMsg::Ack { root: old, val: 3, lane: 0 }]
            ),
            vec![acked(1, old)]
        );
        // The spout heard the outcome and reuses slot 5 under the next generation.
        let new = next_generation(old);
        assert_eq!(root_slot(new), root_slot(old));
        let out = outcomes(
            &mut a,
            &[
                AckerMsg::Init { root: new, val: 3 },
                // Stale messages for the old tree: none may touch the new one.
                AckerMsg::Ack { root: old, val: 3, lane: 0 },
                AckerMsg::Fail { root: old, by: 0 },
                AckerMsg::Reset { root: old },
                AckerMsg::Init { root: old, val: 8 },
            ],
        );
        assert!(out.is_empty());
        assert_eq!(a.pending(), 1);
        assert_eq!(outcomes(&mut a, &[AckerMsg::Ack { root: new, val: 3, lane: 0 }]), vec![acked(1, new)]);
        // A stale message arriving before the slot's next tree leaves no orphan either.
        assert!(outcomes(
            &mut a,
            &[AckerMsg::Ack { root: old, val: 1, lane: 0 }, AckerMsg::Ack { root: new, val: 1, lane: 0 }]
        )
        .is_empty());
        assert_eq!(a.pending(), 0);
        let newer = next_generation(new);
        assert_eq!(
            outcomes(
                &mut a,
                &[AckerMsg::Init { root: newer, val: 2 }, AckerMsg::Fail { root: newer, by: 0 }]
            ),
            vec![failed(1, newer)]
        );
    }

    #[test]
    fn roots_of_different_spout_tasks_never_collide() {
        let mut a = Acker::new(Duration::from_secs(30));
        // Same slot, same generation, three spout tasks: three trees.
        let roots = [make_root(0, 0, 2), make_root(1, 0, 2), make_root(65535, 0, 2)];
        for (i, &root) in roots.iter().enumerate() {
            assert!(outcomes(&mut a, &[AckerMsg::Init { root, val: 10 + i as u64 }]).is_empty());
        }
        assert_eq!(a.pending(), 3);
        assert_eq!(
            outcomes(&mut a, &[AckerMsg::Ack { root: roots[1], val: 11, lane: 0 }]),
            vec![acked(1, roots[1])]
        );
        assert_eq!(
            outcomes(&mut a, &[AckerMsg::Fail { root: roots[2], by: 0 }]),
            vec![failed(65535, roots[2])]
        );
        assert!(outcomes(&mut a, &[AckerMsg::Ack { root: roots[0], val: 11, lane: 0 }]).is_empty());
        assert_eq!(
            outcomes(&mut a, &[AckerMsg::Ack { root: roots[0], val: 11 ^ 10, lane: 0 }]),
            vec![acked(0, roots[0])]
        );
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn several_ackers_split_roots_evenly_and_each_follows_its_own() {
        let ackers = 3;
        let mut shards: Vec<Acker> =
            (0..ackers).map(|i| Acker::one_of(Duration::from_secs(5), i, ackers)).collect();
        let mut per_acker = vec![0usize; ackers];
        let mut live = Vec::new();
        for task in [0, 1, 2, 7, 65535] {
            for slot in 0..300 {
                let root = make_root(task, 0, slot);
                let i = acker_of(root, ackers);
                assert_eq!(i, acker_of(make_root(task, 9, slot), ackers), "every generation meets one acker");
                per_acker[i] += 1;
                assert!(outcomes(&mut shards[i], &[AckerMsg::Init { root, val: 1 }]).is_empty());
                live.push((i, root));
            }
        }
        assert_eq!(per_acker, vec![500; 3], "the spread is even");
        // Complete the even slots; the odd ones time out, each reported with its own root.
        let mut done = Vec::new();
        for &(i, root) in &live {
            if root_slot(root).is_multiple_of(2) {
                done.extend(outcomes(&mut shards[i], &[AckerMsg::Ack { root, val: 1, lane: 0 }]));
            }
        }
        for shard in &mut shards {
            done.extend(expire(shard, 50));
            assert_eq!(shard.pending(), 0);
        }
        let mut expected: Vec<_> = live
            .iter()
            .map(|&(_, root)| {
                let o = if root_slot(root).is_multiple_of(2) {
                    Outcome::acked(root)
                } else {
                    Outcome::timed_out(root, 0)
                };
                (root_task(root), o)
            })
            .collect();
        expected.sort_by_key(|(_, o)| o.root);
        done.sort_by_key(|(_, o)| o.root);
        assert_eq!(done, expected);
    }

    #[test]
    fn ids_are_never_zero_and_rarely_repeat() {
        let mut g = IdGen::new();
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| g.next_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
    }
}
