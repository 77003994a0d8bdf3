//! A worker's side of `squall tap`: feeding the taps nimbus asks for.
//!
//! Contract: [`TapFeed::follow`] takes the taps a heartbeat reply names and keeps one
//! session (`squall_engine::tap`) open for each that is on a component this worker hosts a
//! task of, closing those no longer named (the component's tasks then stop sampling). A
//! tap on a stream the component does not emit is refused once. [`TapFeed::take`] gives what
//! the sessions sampled since the last call, and the refusals, for the next heartbeat; it is
//! empty while nobody taps, so a heartbeat then carries nothing more.

use std::collections::HashMap;
use std::sync::Arc;

use squall_api::TaskId;
use squall_engine::plan::Plan;
use squall_engine::tap::{TapSession, Taps};

use super::{TapBatch, TapWant};

/// The taps a worker feeds.
#[derive(Debug)]
pub struct TapFeed {
    taps: Arc<Taps>,
    /// The ids of the components this worker hosts a task of.
    hosted: Vec<String>,
    open: HashMap<u64, TapSession>,
    /// Taps refused and not yet reported; each is reported once.
    refused: Vec<(u64, String)>,
    /// Every tap ever refused, so that it is not opened again while nimbus still names it.
    done: Vec<u64>,
}

impl TapFeed {
    /// The feed of a worker hosting `hosted` of `plan`, sampling through `taps`.
    pub fn new(plan: &Plan, hosted: &[TaskId], taps: Arc<Taps>) -> TapFeed {
        let mut ids: Vec<String> = hosted
            .iter()
            .filter_map(|&t| plan.task_component.get(t as usize).copied().flatten())
            .map(|c| plan.components[c].id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        TapFeed { taps, hosted: ids, open: HashMap::new(), refused: Vec::new(), done: Vec::new() }
    }

    /// Opens the taps in `wants` this worker can feed and closes the others.
    pub fn follow(&mut self, wants: &[TapWant]) {
        self.open.retain(|id, _| wants.iter().any(|w| w.id == *id));
        self.done.retain(|id| wants.iter().any(|w| w.id == *id));
        for want in wants {
            if self.open.contains_key(&want.id) || self.done.contains(&want.id) {
                continue;
            }
            if !self.hosted.contains(&want.component) {
                continue;
            }
            match self.taps.open(&want.component, want.stream.as_deref()) {
                Ok(session) => {
                    self.open.insert(want.id, session);
                }
                Err(e) => {
                    self.refused.push((want.id, e.to_string()));
                    self.done.push(want.id);
                }
            }
        }
    }

    /// What the open taps sampled since the last call, and the refusals not yet reported.
    pub fn take(&mut self) -> Vec<TapBatch> {
        let mut batches: Vec<TapBatch> = self
            .refused
            .drain(..)
            .map(|(id, reason)| TapBatch { id, tuples: Vec::new(), refused: Some(reason) })
            .collect();
        for (&id, session) in &mut self.open {
            let tuples = session.drain();
            if !tuples.is_empty() {
                batches.push(TapBatch { id, tuples, refused: None });
            }
        }
        batches
    }
}
