//! Who held a tree that timed out (Storm's STORM-521), at a cost of one byte per tree.
//!
//! Contract: every bolt component has a lane, its bolt ordinal modulo [`LANES`] (exact in a
//! topology of up to 8 bolts; beyond that, bolts sharing a lane are named together). A bolt's
//! `Ack` carries its lane's bit and the acker ORs it into the tree's `reported` byte, so the
//! common path (a tree that completes) costs an OR on a byte that shares the tree's cache line.
//! When a tree times out, its holders are found from the topology's graph ([`Holders::of`]):
//! the bolts fed by the spout or by a bolt that reported, which never reported themselves (a
//! bolt that never acks, or one with the tree's tuples still queued); if every such bolt
//! reported, the reporting bolts feeding no other reporting bolt (the deepest that had part of
//! the tree: a slow bolt that acked some of the tree's tuples but not all). It is an inference
//! from the static graph, not a count of edges: a bolt that a tree's tuples could reach but
//! did not (a filter dropped them) can be named with the one that held the tree.

use crate::plan::Plan;
use squall_api::{Role, TaskId};

/// Lanes: bits of the `reported` byte.
pub const LANES: usize = 8;

/// The graph the acker needs to name holders, and the names for the spout to count them by.
#[derive(Debug, Clone, Default)]
pub struct Holders {
    /// Per spout task: the lanes of the bolts its component feeds.
    spout_feeds: Vec<u8>,
    /// Per lane: the lanes its bolts feed.
    lane_feeds: [u8; LANES],
    /// Per lane: its bolts (component indices).
    lane_components: [Vec<usize>; LANES],
    /// Per component: its lane bit (0 for a spout).
    lane_bit: Vec<u8>,
    /// Per component: its id.
    names: Vec<String>,
}

/// The lane bit of `plan`'s component `component`: its bolt ordinal modulo [`LANES`] (0 for a
/// spout).
pub fn lane_bit(plan: &Plan, component: usize) -> u8 {
    match plan.components.get(component) {
        Some(c) if c.role == Role::Bolt => {
            let ordinal = plan.components[..component].iter().filter(|c| c.role == Role::Bolt).count();
            1 << (ordinal % LANES)
        }
        _ => 0,
    }
}

impl Holders {
    /// For `plan`'s components and streams.
    pub fn new(plan: &Plan) -> Holders {
        let lane_bit: Vec<u8> = (0..plan.components.len()).map(|c| lane_bit(plan, c)).collect();
        let names = plan.components.iter().map(|c| c.id.clone()).collect();
        let mut h = Holders { lane_bit, names, ..Holders::default() };
        for (i, &bit) in h.lane_bit.iter().enumerate() {
            if bit != 0 {
                h.lane_components[bit.trailing_zeros() as usize].push(i);
            }
        }
        let mut feeds = vec![0u8; plan.components.len()];
        for s in &plan.streams {
            for sub in &s.subscribers {
                feeds[s.component] |= h.lane_bit.get(sub.component).copied().unwrap_or(0);
            }
        }
        for (i, &bit) in h.lane_bit.iter().enumerate() {
            if bit != 0 {
                h.lane_feeds[bit.trailing_zeros() as usize] |= feeds[i];
            }
        }
        h.spout_feeds = vec![0; plan.spout_id_space()];
        for (c, component) in plan.components.iter().enumerate().filter(|(_, c)| c.role == Role::Spout) {
            for &t in &component.tasks {
                h.spout_feeds[t as usize] = feeds[c];
            }
        }
        h
    }

    /// The lane bit of component `component` (0 for a spout or an unknown index).
    pub fn lane_bit(&self, component: usize) -> u8 {
        self.lane_bit.get(component).copied().unwrap_or(0)
    }

    /// The lanes holding a tree of `spout_task` that timed out after the lanes `reported`
    /// acked part of it (see the module docs).
    pub fn of(&self, spout_task: TaskId, reported: u8) -> u8 {
        let mut reached = self.spout_feeds.get(spout_task as usize).copied().unwrap_or(0);
        for lane in lanes(reported) {
            reached |= self.lane_feeds[lane];
        }
        let waiting = reached & !reported;
        if waiting != 0 {
            return waiting;
        }
        let deepest = lanes(reported)
            .filter(|&lane| self.lane_feeds[lane] & reported & !(1 << lane) == 0)
            .fold(0u8, |acc, lane| acc | 1 << lane);
        if deepest != 0 {
            deepest
        } else {
            reported
        }
    }

    /// The id of component `component` (empty if unknown).
    pub fn name(&self, component: usize) -> &str {
        self.names.get(component).map_or("", String::as_str)
    }

    /// The components (indices in the plan) of the lanes `mask`.
    pub fn components(&self, mask: u8) -> impl Iterator<Item = usize> + '_ {
        lanes(mask).flat_map(move |lane| self.lane_components[lane].iter().copied())
    }
}

#[cfg(test)]
impl Holders {
    /// A graph with no names: `spout_feeds` per spout task, `lane_feeds` per lane.
    pub(crate) fn set_for_test(&mut self, spout_feeds: Vec<u8>, lane_feeds: [u8; LANES]) {
        self.spout_feeds = spout_feeds;
        self.lane_feeds = lane_feeds;
    }
}

fn lanes(mask: u8) -> impl Iterator<Item = usize> {
    (0..LANES).filter(move |lane| mask & 1 << lane != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spout(0) -> split(1) -> count(2); split -> audit(3) -> sink(4).
    fn graph() -> Holders {
        let mut h = Holders { lane_bit: vec![0, 1, 2, 4, 8], spout_feeds: vec![1, 1], ..Holders::default() };
        h.lane_feeds[0] = 2 | 4;
        h.lane_feeds[2] = 8;
        for (c, lane) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
            h.lane_components[lane].push(c);
        }
        h
    }

    #[test]
    fn a_bolt_that_never_reported_while_its_feeder_did_holds_the_tree() {
        let h = graph();
        assert_eq!(h.of(0, 0), 1, "nothing reported: the spout's own consumer holds it");
        assert_eq!(h.of(1, 1), 2 | 4, "split acked: both its consumers are waited for");
        assert_eq!(h.of(0, 1 | 4), 2 | 8, "audit acked too: count and sink");
        assert_eq!(h.components(2 | 8).collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn when_every_reachable_bolt_reported_the_deepest_ones_held_it() {
        let h = graph();
        assert_eq!(h.of(0, 1 | 2 | 4 | 8), 2 | 8, "count and sink acked only part of it");
        assert_eq!(h.of(0, 1 | 2), 4, "audit never acked");
        assert_eq!(h.of(9, 0), 0, "an unknown spout task names no one");
    }
}
