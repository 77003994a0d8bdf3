//! The acking protocol: how tuple trees are named and which messages follow them, shared by
//! spouts (which make roots), bolts (which make edge ids and send acks and fails), the acker
//! (which keeps the XOR) and the transport (which carries the messages between workers).
//!
//! Contract: a root is 64 bits, `spout task << 48 | generation << 32 | slot` ([`make_root`]);
//! every edge id is a random non-zero 64-bit value ([`IdGen`]); every message about one root
//! goes to the acker [`acker_of`] names, whatever the root's generation; an acker answers a
//! spout task with one [`Outcome`] per root.

use serde::{Deserialize, Serialize};
use squall_api::TaskId;

/// A message to an acker task. The root names its spout task (see [`root_task`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckerMsg {
    /// A spout task emitted a tuple tree: `val` is the XOR of the edges it created.
    Init { root: u64, val: u64 },
    /// A bolt acked a tuple of the tree: its edge id XOR the edges anchored to it. `lane` is
    /// the acking bolt's [`lane`](super::holders) bit, so that a tree that times out can name
    /// who still held part of it.
    Ack { root: u64, val: u64, lane: u8 },
    /// A bolt failed a tuple of the tree: `by` is its component (index in the plan).
    Fail { root: u64, by: u16 },
    /// Restart the tree's timeout.
    Reset { root: u64 },
}

impl AckerMsg {
    /// The root of the tree the message is about.
    #[inline]
    pub fn root(&self) -> u64 {
        match *self {
            AckerMsg::Init { root, .. }
            | AckerMsg::Ack { root, .. }
            | AckerMsg::Fail { root, .. }
            | AckerMsg::Reset { root } => root,
        }
    }
}

/// What the acker tells a spout task about one of its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub root: u64,
    pub acked: bool,
    /// A failed tree: the component (index in the plan) of the bolt that failed it, or
    /// [`TIMED_OUT`] if it timed out.
    pub failed_by: u16,
    /// A tree that timed out: the [lanes](super::holders) of the components that still held
    /// part of it (0: unknown).
    pub held_by: u8,
}

/// [`Outcome::failed_by`] of a tree that timed out.
pub const TIMED_OUT: u16 = u16::MAX;

impl Outcome {
    /// `root`'s tree was acked.
    pub const fn acked(root: u64) -> Outcome {
        Outcome { root, acked: true, failed_by: TIMED_OUT, held_by: 0 }
    }

    /// A bolt of component `by` failed `root`'s tree.
    pub const fn failed(root: u64, by: u16) -> Outcome {
        Outcome { root, acked: false, failed_by: by, held_by: 0 }
    }

    /// `root`'s tree timed out while the components of lanes `held_by` held part of it.
    pub const fn timed_out(root: u64, held_by: u8) -> Outcome {
        Outcome { root, acked: false, failed_by: TIMED_OUT, held_by }
    }
}

// The forensics ride in padding: neither message grew.
const _: () = assert!(std::mem::size_of::<AckerMsg>() == 24 && std::mem::size_of::<Outcome>() == 16);

/// Spout task ids must be below this: a root keeps 16 bits for its spout task.
pub const MAX_SPOUT_TASKS: usize = 1 << 16;

/// The root of the tree in `slot` of `spout_task`'s in-flight slab, at generation `gen`.
#[inline]
pub fn make_root(spout_task: TaskId, gen: u16, slot: u32) -> u64 {
    debug_assert!((spout_task as usize) < MAX_SPOUT_TASKS, "spout task id {spout_task} exceeds 16 bits");
    (spout_task as u64) << 48 | (gen as u64) << 32 | slot as u64
}

/// The spout task whose tree `root` is.
#[inline]
pub fn root_task(root: u64) -> TaskId {
    (root >> 48) as TaskId
}

/// The generation of `root`'s slot.
#[inline]
pub fn root_gen(root: u64) -> u16 {
    (root >> 32) as u16
}

/// `root`'s slot in its spout task's in-flight slab.
#[inline]
pub fn root_slot(root: u64) -> u32 {
    root as u32
}

/// The root that next uses `root`'s slot.
#[inline]
pub fn next_generation(root: u64) -> u64 {
    make_root(root_task(root), root_gen(root).wrapping_add(1), root_slot(root))
}

/// Which of `ackers` acker tasks follows `root`: `(slot + spout task) % ackers`. It ignores the
/// generation, so a slot's successive trees meet the same acker, which can then tell stale
/// messages from current ones; a spout task's slots in use are dense from 0, so they spread
/// evenly.
#[inline]
pub fn acker_of(root: u64, ackers: usize) -> usize {
    if ackers <= 1 {
        return 0;
    }
    ((root_slot(root) as u64 + root_task(root) as u64) % ackers as u64) as usize
}

/// The most slots an acker keeps per spout task (2^24, 16 bytes each), whatever a message
/// names: a spout task's slots in use are dense from 0, so a slot this high is not a tree.
pub const MAX_SLOTS: u32 = 1 << 24;

/// The roots that can name a tree of a plan: of one of its spout tasks (the plan's first task
/// ids) and in a slot a spout task can reach. An acker ignores, and a worker's transport
/// refuses, any other, so that no message makes an acker grow past what the plan allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootBounds {
    pub spout_tasks: u32,
    pub slots: u32,
}

impl RootBounds {
    /// Any root a spout can make.
    pub const ANY: RootBounds = RootBounds { spout_tasks: MAX_SPOUT_TASKS as u32, slots: MAX_SLOTS };

    /// For `spout_tasks` spout tasks of at most `max_spout_pending` messages in flight each
    /// (0: no limit). A `next_tuple` call may emit several tuples past the limit, so the slots
    /// allowed are twice the limit plus 2^20, up to [`MAX_SLOTS`] (a peer can make an acker
    /// keep at most 16 bytes per slot allowed).
    pub fn new(spout_tasks: usize, max_spout_pending: usize) -> Self {
        let slots = match max_spout_pending {
            0 => MAX_SLOTS as usize,
            n => n.saturating_mul(2).saturating_add(1 << 20).min(MAX_SLOTS as usize),
        };
        RootBounds { spout_tasks: spout_tasks.min(MAX_SPOUT_TASKS) as u32, slots: slots as u32 }
    }

    /// Whether `root` names a spout task and a slot within the bounds.
    #[inline]
    pub fn admits(&self, root: u64) -> bool {
        root_task(root) < self.spout_tasks && root_slot(root) < self.slots
    }
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
