//! The event-time watermark of one task, tracked per upstream task.
//!
//! Contract: [`Watermarks`] is built with the upstream tasks that feed this task, the lag and
//! the idle timeout. [`observe`](Watermarks::observe) records a timestamp (integer ms since the
//! epoch) from an upstream task: that task's latest timestamp is the max of all it sent.
//! [`finish`](Watermarks::finish) says a task will send nothing more: it stops holding the
//! watermark back. [`current`](Watermarks::current) is the minimum, over the upstream tasks
//! that are neither finished nor idle, of their latest timestamp, minus the lag:
//!
//! - `None` while some such task has sent nothing yet (and no watermark was reached before);
//! - [`END_OF_TIME`] once every upstream task finished (so every window fires);
//! - a task silent for longer than the idle timeout (if any; measured from its last timestamp,
//!   or from construction if it never sent one) is idle and released: it does not hold the
//!   watermark back. As soon as it speaks again it holds it again (its new timestamps count);
//! - if every unfinished task is idle, the watermark is the max of their latest timestamps,
//!   minus the lag;
//! - the watermark never decreases: each answer is at least the previous one.
//!
//! Tracking per upstream task, rather than across every input as Storm does, means a slow
//! upstream task's on-time events are never late because a fast sibling raced ahead: the
//! watermark waits for the slowest task that is still speaking.
//!
//! [`observe`](Watermarks::observe) is an array index and a max (it runs per tuple);
//! [`current`](Watermarks::current) is linear in the number of upstream tasks (it runs once
//! per watermark interval). No I/O: the caller passes the clock.

use std::time::{Duration, Instant};

use squall_api::TaskId;

/// The watermark once every upstream task finished: every window ends before it.
pub const END_OF_TIME: i64 = i64::MAX;

#[derive(Debug, Clone, Copy)]
struct Upstream {
    /// The max timestamp this task sent, if any.
    latest: Option<i64>,
    /// When it last sent a timestamp (or when tracking began).
    heard: Instant,
    finished: bool,
}

/// The watermark of one task (see the module docs).
#[derive(Debug, Clone)]
pub struct Watermarks {
    /// By upstream task id: its index in `upstream`, or `NONE`.
    index: Vec<u32>,
    upstream: Vec<Upstream>,
    lag_ms: i64,
    idle_timeout: Option<Duration>,
    /// The last watermark answered: answers never go below it.
    last: Option<i64>,
}

const NONE: u32 = u32::MAX;

impl Watermarks {
    /// The watermark of a task fed by `upstream` tasks; `now` starts the idle clock of tasks
    /// that have not sent anything yet.
    pub fn new(
        upstream: impl IntoIterator<Item = TaskId>,
        lag: Duration,
        idle_timeout: Option<Duration>,
        now: Instant,
    ) -> Self {
        let mut index = Vec::new();
        let mut tasks = Vec::new();
        for task in upstream {
            let t = task as usize;
            if t >= index.len() {
                index.resize(t + 1, NONE);
            }
            if index[t] == NONE {
                index[t] = tasks.len() as u32;
                tasks.push(Upstream { latest: None, heard: now, finished: false });
            }
        }
        Watermarks {
            index,
            upstream: tasks,
            lag_ms: lag.as_millis().min(i64::MAX as u128) as i64,
            idle_timeout,
            last: None,
        }
    }

    /// The upstream tasks became `upstream` (a live rebalance): a task upstream before and
    /// after keeps what it sent; a new one starts as at the start (nothing sent yet, idle
    /// clock from `now`); one that went away no longer holds the watermark back.
    pub fn rewire(&mut self, upstream: impl IntoIterator<Item = TaskId>, now: Instant) {
        let mut next =
            Watermarks::new(upstream, Duration::from_millis(self.lag_ms as u64), self.idle_timeout, now);
        next.lag_ms = self.lag_ms;
        next.last = self.last;
        for (t, &i) in next.index.iter().enumerate() {
            if i == NONE {
                continue;
            }
            if let Some(&old) = self.index.get(t).filter(|&&o| o != NONE) {
                next.upstream[i as usize] = self.upstream[old as usize];
            }
        }
        *self = next;
    }

    /// The number of upstream tasks tracked.
    pub fn upstream_tasks(&self) -> usize {
        self.upstream.len()
    }

    #[inline]
    fn task(&mut self, task: TaskId) -> Option<&mut Upstream> {
        let i = *self.index.get(task as usize)?;
        debug_assert!(i != NONE, "task {task} is not upstream");
        self.upstream.get_mut(i as usize)
    }

    /// Upstream `task` sent an event at `ts_ms`. Tasks not given to [`new`](Self::new) are
    /// ignored (and a debug build panics: the plan names every upstream task).
    #[inline]
    pub fn observe(&mut self, task: TaskId, ts_ms: i64, now: Instant) {
        debug_assert!(
            self.index.get(task as usize).is_some_and(|&i| i != NONE),
            "task {task} is not upstream"
        );
        if let Some(up) = self.task(task) {
            up.latest = Some(up.latest.map_or(ts_ms, |l| l.max(ts_ms)));
            up.heard = now;
        }
    }

    /// Upstream `task` will send nothing more.
    pub fn finish(&mut self, task: TaskId) {
        if let Some(up) = self.task(task) {
            up.finished = true;
        }
    }

    /// The watermark now (see the module docs): events with a timestamp below it are late.
    pub fn current(&mut self, now: Instant) -> Option<i64> {
        let mut all_finished = true;
        // Over the tasks that are speaking: the min of their latest timestamps; `blocked` if
        // one of them has none yet.
        let mut min_active: Option<i64> = None;
        let mut blocked = false;
        let mut any_active = false;
        // Over the idle, unfinished ones: the max.
        let mut max_idle: Option<i64> = None;
        for up in &self.upstream {
            if up.finished {
                continue;
            }
            all_finished = false;
            let idle = self.idle_timeout.is_some_and(|t| now.saturating_duration_since(up.heard) > t);
            if idle {
                max_idle = max_idle.max(up.latest);
                continue;
            }
            any_active = true;
            match up.latest {
                None => blocked = true,
                Some(ts) => min_active = Some(min_active.map_or(ts, |m| m.min(ts))),
            }
        }
        let candidate = if all_finished {
            Some(END_OF_TIME)
        } else if blocked {
            None
        } else if any_active {
            min_active.map(|ts| ts.saturating_sub(self.lag_ms))
        } else {
            max_idle.map(|ts| ts.saturating_sub(self.lag_ms))
        };
        self.last = self.last.max(candidate);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewire_keeps_what_staying_tasks_sent_and_forgets_tasks_that_went_away() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([1, 2], Duration::ZERO, None, t0);
        w.observe(1, 100, t0);
        w.observe(2, 50, t0);
        assert_eq!(w.current(t0), Some(50));
        w.rewire([1, 7], t0);
        assert_eq!(w.upstream_tasks(), 2);
        w.observe(7, 300, t0);
        assert_eq!(w.current(t0), Some(100), "task 2 (at 50) went away; 1 kept its 100");
    }

    const LAG: Duration = Duration::from_millis(100);

    #[test]
    fn none_until_every_upstream_task_has_spoken() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([1, 2], LAG, None, t0);
        assert_eq!(w.current(t0), None);
        w.observe(1, 5_000, t0);
        assert_eq!(w.current(t0), None, "task 2 has sent nothing: it holds the watermark");
        w.observe(2, 7_000, t0);
        assert_eq!(w.current(t0), Some(4_900), "min of the latest timestamps, minus the lag");
    }

    #[test]
    fn a_slow_upstream_tasks_on_time_events_are_not_late() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([3, 4], LAG, None, t0);
        // Task 3 races ahead to 60 s while task 4 is still at 10 s.
        for ts in (0..=60_000).step_by(1_000) {
            w.observe(3, ts, t0);
        }
        w.observe(4, 10_000, t0);
        let wm = w.current(t0).unwrap();
        assert_eq!(wm, 9_900);
        // Task 4's next events, on time for it (within the lag of its own latest), are not late.
        for ts in [9_950, 10_000, 10_500] {
            assert!(ts >= wm, "{ts} would be late behind {wm}");
            w.observe(4, ts, t0);
        }
        assert_eq!(w.current(t0), Some(10_400));
    }

    #[test]
    fn the_latest_timestamp_of_a_task_is_its_max() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([0], Duration::ZERO, None, t0);
        w.observe(0, 900, t0);
        w.observe(0, 500, t0);
        assert_eq!(w.current(t0), Some(900), "an out-of-order event does not pull the task back");
    }

    #[test]
    fn an_idle_task_stops_holding_after_the_timeout_and_holds_again_when_it_speaks() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(5);
        let mut w = Watermarks::new([1, 2], LAG, Some(idle), t0);
        w.observe(1, 1_000, t0);
        w.observe(2, 1_000, t0);
        assert_eq!(w.current(t0), Some(900));
        // Task 1 keeps going; task 2 goes quiet.
        let t1 = t0 + Duration::from_secs(3);
        w.observe(1, 4_000, t1);
        assert_eq!(w.current(t1), Some(900), "task 2 is not idle yet: it holds");
        let t2 = t0 + Duration::from_secs(6);
        w.observe(1, 7_000, t2);
        assert_eq!(w.current(t2), Some(6_900), "task 2 silent > 5 s: released");
        // Task 2 speaks again: it holds again, from its new timestamps.
        w.observe(2, 7_500, t2);
        w.observe(1, 9_000, t2);
        assert_eq!(w.current(t2), Some(7_400));
    }

    #[test]
    fn a_task_that_never_speaks_is_released_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([1, 2], LAG, Some(Duration::from_secs(1)), t0);
        w.observe(1, 2_000, t0);
        assert_eq!(w.current(t0), None);
        assert_eq!(w.current(t0 + Duration::from_millis(900)), None, "task 2 holds until its timeout");
        assert_eq!(w.current(t0 + Duration::from_secs(2)), Some(1_900), "both idle: the max");
        w.observe(1, 3_000, t0 + Duration::from_secs(2));
        assert_eq!(w.current(t0 + Duration::from_secs(2)), Some(2_900));
    }

    #[test]
    fn when_every_unfinished_task_is_idle_the_watermark_is_their_max() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([1, 2], LAG, Some(Duration::from_secs(1)), t0);
        w.observe(1, 3_000, t0);
        w.observe(2, 8_000, t0);
        assert_eq!(w.current(t0), Some(2_900));
        assert_eq!(w.current(t0 + Duration::from_secs(2)), Some(7_900));
    }

    #[test]
    fn the_watermark_never_decreases() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([1, 2], LAG, Some(Duration::from_secs(1)), t0);
        w.observe(1, 10_000, t0);
        w.observe(2, 2_000, t0);
        assert_eq!(w.current(t0), Some(1_900));
        let t1 = t0 + Duration::from_secs(2);
        w.observe(1, 12_000, t1);
        // Task 2 is idle: released, the watermark jumps to task 1's.
        assert_eq!(w.current(t1), Some(11_900));
        // Task 2 speaks again far behind: it holds, but the watermark does not go back.
        w.observe(2, 3_000, t1);
        assert_eq!(w.current(t1), Some(11_900));
        w.observe(2, 20_000, t1);
        w.observe(1, 15_000, t1);
        assert_eq!(w.current(t1), Some(14_900));
        let mut prev = None;
        for step in 0..50 {
            let now = t1 + Duration::from_millis(step * 100);
            if step % 7 == 0 {
                w.observe((step % 2 + 1) as TaskId, 14_000 + (step as i64 * 37) % 3_000, now);
            }
            let cur = w.current(now);
            assert!(cur >= prev, "{cur:?} went below {prev:?}");
            prev = cur;
        }
    }

    #[test]
    fn finished_tasks_stop_holding_and_all_finished_is_the_end_of_time() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([1, 2], LAG, None, t0);
        w.observe(1, 5_000, t0);
        assert_eq!(w.current(t0), None);
        w.finish(2);
        assert_eq!(w.current(t0), Some(4_900), "a finished task that sent nothing does not hold");
        w.finish(1);
        assert_eq!(w.current(t0), Some(END_OF_TIME));
    }

    #[test]
    fn no_upstream_task_is_the_end_of_time() {
        let t0 = Instant::now();
        let mut w = Watermarks::new([], LAG, None, t0);
        assert_eq!(w.current(t0), Some(END_OF_TIME));
    }
}
