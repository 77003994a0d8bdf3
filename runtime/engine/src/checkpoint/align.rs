//! Barrier alignment: which inputs a task may process while a checkpoint passes through it.
//!
//! Contract: an [`Alignment`] follows the upstream tasks of one task. Each upstream task sends
//! its items in order: tuples, barriers (a checkpoint id, increasing per sender, possibly
//! skipping ids) and at most one end of stream. [`Alignment::tuple`], [`Alignment::barrier`]
//! and [`Alignment::end`] take each item as it arrives:
//!
//! - A checkpoint completes at this task once every upstream task that has not ended has sent
//!   a barrier past the last completed checkpoint: its id is the lowest of those barriers
//!   (ids a sender skipped are skipped here too). Ended upstream tasks never hold a checkpoint.
//! - Aligned (exactly once): an upstream task that sent a barrier for a checkpoint not yet
//!   complete is blocked: what it sends next is held, in order, until the checkpoint
//!   completes; then it comes out of [`Alignment::next_ready`], to be fed through these
//!   methods again in that order before anything new (so a task's state at a checkpoint holds
//!   exactly what every upstream task sent before its barrier). Held items are bounded by
//!   the tuples in flight: with acking on, by `max_spout_pending` per spout task.
//! - Unaligned (at least once): nothing is ever held; a checkpoint completes when the last
//!   barrier arrives, and may include tuples sent after another input's barrier.
//! - Barriers from a task that is not upstream, and barriers not past the last completed
//!   checkpoint, change nothing.
//!
//! It does no I/O: the bolt executor drives it.

use std::collections::VecDeque;

use squall_api::TaskId;

/// One item an upstream task sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<T> {
    Tuple(T),
    Barrier(u64),
    End,
}

#[derive(Debug)]
struct Input<T> {
    /// The highest barrier this upstream task sent.
    last: u64,
    ended: bool,
    held: VecDeque<Item<T>>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Alignment<T> {
    aligned: bool,
    /// By task id: the index of its input, or `NONE`.
    index: Vec<u32>,
    inputs: Vec<Input<T>>,
    /// The last checkpoint completed here.
    done: u64,
    /// Held items released by the last completion, with their senders.
    ready: VecDeque<(TaskId, Item<T>)>,
}

const NONE: u32 = u32::MAX;

impl<T> Alignment<T> {
    /// For a task whose upstream tasks are `upstream`; `aligned` holds blocked inputs.
    pub fn new(upstream: &[TaskId], aligned: bool) -> Self {
        let len = upstream.iter().map(|&t| t as usize + 1).max().unwrap_or(0);
        let mut index = vec![NONE; len];
        let mut inputs = Vec::new();
        for &t in upstream {
            if index[t as usize] == NONE {
                index[t as usize] = inputs.len() as u32;
                inputs.push(Input { last: 0, ended: false, held: VecDeque::new() });
            }
        }
        Alignment { aligned, index, inputs, done: 0, ready: VecDeque::new() }
    }

    /// The last checkpoint completed here (0: none yet).
    pub fn done(&self) -> u64 {
        self.done
    }

    fn input(&mut self, from: TaskId) -> Option<&mut Input<T>> {
        let i = *self.index.get(from as usize)?;
        self.inputs.get_mut(i as usize)
    }

    /// A tuple from `from`: returned if it may be processed now, else held.
    #[inline]
    pub fn tuple(&mut self, from: TaskId, tuple: T) -> Option<T> {
        if !self.aligned {
            return Some(tuple);
        }
        let done = self.done;
        match self.input(from) {
            Some(input) if input.last > done => {
                input.held.push_back(Item::Tuple(tuple));
                None
            }
            _ => Some(tuple),
        }
    }

    /// A barrier from `from`: the id of the checkpoint it completes here, if it does.
    pub fn barrier(&mut self, from: TaskId, id: u64) -> Option<u64> {
        let (done, aligned) = (self.done, self.aligned);
        let input = self.input(from)?;
        if aligned && input.last > done {
            input.held.push_back(Item::Barrier(id));
            return None;
        }
        if id <= input.last || id <= done {
            return None;
        }
        input.last = id;
        self.try_complete()
    }

    /// `from` ended its stream. Returns whether it may be passed on now (false: held behind a
    /// barrier), and the checkpoint its end completes, if any.
    pub fn end(&mut self, from: TaskId) -> (bool, Option<u64>) {
        let (done, aligned) = (self.done, self.aligned);
        let Some(input) = self.input(from) else { return (true, None) };
        if aligned && input.last > done {
            input.held.push_back(Item::End);
            return (false, None);
        }
        input.ended = true;
        (true, self.try_complete())
    }

    /// The next held item to feed again, with its sender, after a completion.
    pub fn next_ready(&mut self) -> Option<(TaskId, Item<T>)> {
        self.ready.pop_front()
    }

    fn try_complete(&mut self) -> Option<u64> {
        let mut lowest = u64::MAX;
        let mut open = false;
        for input in &self.inputs {
            if input.ended {
                continue;
            }
            open = true;
            if input.last <= self.done {
                return None;
            }
            lowest = lowest.min(input.last);
        }
        if !open {
            return None;
        }
        self.done = lowest;
        if self.aligned {
            for (t, &i) in self.index.iter().enumerate() {
                if i == NONE {
                    continue;
                }
                let input = &mut self.inputs[i as usize];
                if input.last <= lowest {
                    self.ready.extend(input.held.drain(..).map(|item| (t as TaskId, item)));
                }
            }
        }
        Some(lowest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `items` as a bolt executor would: every item through the gate, then what a
    /// completion released, before the next item. Returns what was processed, in order, and
    /// the completions as `C(id)`.
    fn run(align: &mut Alignment<&'static str>, items: &[(TaskId, Item<&'static str>)]) -> Vec<String> {
        let mut seen = Vec::new();
        for (from, item) in items {
            feed(align, *from, item.clone(), &mut seen);
            while let Some((from, item)) = align.next_ready() {
                feed(align, from, item, &mut seen);
            }
        }
        seen
    }

    fn feed(
        align: &mut Alignment<&'static str>,
        from: TaskId,
        item: Item<&'static str>,
        seen: &mut Vec<String>,
    ) {
        match item {
            Item::Tuple(t) => {
                if let Some(t) = align.tuple(from, t) {
                    seen.push(t.to_string());
                }
            }
            Item::Barrier(id) => {
                if let Some(c) = align.barrier(from, id) {
                    seen.push(format!("C{c}"));
                }
            }
            Item::End => {
                let (passed, completed) = align.end(from);
                if passed {
                    seen.push(format!("end{from}"));
                }
                if let Some(c) = completed {
                    seen.push(format!("C{c}"));
                }
            }
        }
    }

    use Item::{Barrier, End, Tuple};

    #[test]
    fn aligned_inputs_hold_what_follows_a_barrier_until_every_input_sent_it() {
        let mut align = Alignment::new(&[1, 2], true);
        let seen = run(
            &mut align,
            &[
                (1, Tuple("a1")),
                (1, Barrier(5)),
                (1, Tuple("a2")),
                (2, Tuple("b1")),
                (1, Tuple("a3")),
                (2, Barrier(5)),
                (2, Tuple("b2")),
            ],
        );
        assert_eq!(seen, ["a1", "b1", "C5", "a2", "a3", "b2"]);
        assert_eq!(align.done(), 5);
    }

    #[test]
    fn unaligned_inputs_never_hold_and_complete_on_the_last_barrier() {
        let mut align = Alignment::new(&[1, 2], false);
        let seen = run(
            &mut align,
            &[(1, Barrier(5)), (1, Tuple("a2")), (2, Tuple("b1")), (2, Barrier(5)), (2, Tuple("b2"))],
        );
        assert_eq!(seen, ["a2", "b1", "C5", "b2"]);
    }

    #[test]
    fn a_sender_that_skipped_ids_completes_the_lowest_and_holds_the_rest() {
        // Task 2 started late: its first barrier is 7, while task 1 sent 5, 6, 7.
        let mut align = Alignment::new(&[1, 2], true);
        let seen = run(
            &mut align,
            &[
                (1, Barrier(5)),
                (1, Tuple("a5")),
                (1, Barrier(6)),
                (1, Tuple("a6")),
                (1, Barrier(7)),
                (1, Tuple("a7")),
                (2, Tuple("b")),
                (2, Barrier(7)),
                (2, Tuple("b7")),
            ],
        );
        assert_eq!(seen, ["b", "C5", "a5", "C6", "a6", "C7", "a7", "b7"]);
    }

    #[test]
    fn an_ended_input_never_holds_a_checkpoint_and_its_end_waits_behind_its_barrier() {
        let mut align = Alignment::new(&[1, 2], true);
        let seen =
            run(&mut align, &[(2, Barrier(3)), (2, End), (1, Tuple("a")), (1, Barrier(3)), (1, Barrier(4))]);
        assert_eq!(seen, ["a", "C3", "end2", "C4"]);
    }

    #[test]
    fn stale_and_foreign_barriers_change_nothing() {
        let mut align = Alignment::new(&[1], true);
        assert_eq!(align.barrier(1, 4), Some(4));
        assert_eq!(align.barrier(1, 4), None, "a repeated id");
        assert_eq!(align.barrier(1, 2), None, "an older id");
        assert_eq!(align.barrier(9, 8), None, "not an upstream task");
        assert_eq!(align.tuple(9, "x"), Some("x"));
        assert_eq!(align.barrier(1, 5), Some(5));
    }
}
