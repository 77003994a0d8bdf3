//! Figures of one moment: summing workers' reports read at the same wall-clock instant.
//!
//! Contract: workers read their tasks' figures at the same moments (multiples of the
//! heartbeat period on the wall clock) and say which in each heartbeat. A [`Moments`] keeps a
//! worker's last [`KEPT`] readings by moment. [`at_one_moment`] picks, for a topology's
//! workers, the latest moment every reporting worker has sent a reading of, and gives each
//! worker's reading at that moment (or its latest before it): summed, upstream counts are
//! then never behind downstream ones, whatever order the heartbeats arrived in. A worker
//! that names no moment (0), or that is not reporting, gives its latest reading and does
//! not hold the others back. Pure: no I/O, no clock.

use std::collections::VecDeque;

use squall_engine::metrics::TaskFigures;

/// Readings kept per worker: enough for workers whose heartbeats are a few periods apart.
pub(super) const KEPT: usize = 8;

/// A worker's recent readings, oldest first.
#[derive(Debug, Default, Clone)]
pub(super) struct Moments {
    readings: VecDeque<(u64, Vec<TaskFigures>)>,
}

impl Moments {
    /// Keeps `figures`, read at `moment` (0: the worker names none, nothing is kept).
    pub(super) fn push(&mut self, moment: u64, figures: &[TaskFigures]) {
        if moment == 0 {
            self.readings.clear();
            return;
        }
        // A moment at or before the latest is a repeat or a clock step back: start afresh.
        if self.readings.back().is_some_and(|(m, _)| *m >= moment) {
            self.readings.clear();
        }
        if self.readings.len() == KEPT {
            self.readings.pop_front();
        }
        self.readings.push_back((moment, figures.to_vec()));
    }

    /// The latest moment read, if any.
    fn latest(&self) -> Option<u64> {
        self.readings.back().map(|(m, _)| *m)
    }

    /// The reading at `moment`, or the latest before it, or the oldest kept.
    fn at(&self, moment: u64) -> Option<&[TaskFigures]> {
        self.readings
            .iter()
            .rev()
            .find(|(m, _)| *m <= moment)
            .or_else(|| self.readings.front())
            .map(|(_, f)| f.as_slice())
    }
}

/// One worker as [`at_one_moment`] sees it: its readings, its latest figures, and whether
/// it is reporting.
pub(super) struct Worker<'a> {
    pub(super) moments: &'a Moments,
    pub(super) latest: &'a [TaskFigures],
    pub(super) reporting: bool,
}

/// Each worker's figures at the latest moment every reporting worker has read (see the
/// module docs), in the order given.
pub(super) fn at_one_moment<'a>(workers: &[Worker<'a>]) -> Vec<&'a [TaskFigures]> {
    let common = workers
        .iter()
        .filter(|w| w.reporting)
        .map(|w| w.moments.latest())
        .try_fold(u64::MAX, |low, latest| latest.map(|m| low.min(m)));
    workers
        .iter()
        .map(|w| match common {
            Some(moment) if w.reporting && moment != u64::MAX => w.moments.at(moment).unwrap_or(w.latest),
            _ => w.latest,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(n: u64) -> Vec<TaskFigures> {
        vec![TaskFigures { task: 0, emitted: n, ..Default::default() }]
    }

    fn first(f: &[TaskFigures]) -> u64 {
        f[0].emitted
    }

    #[test]
    fn workers_ahead_are_read_at_the_moment_the_one_behind_reported() {
        let (mut up, mut down) = (Moments::default(), Moments::default());
        up.push(1000, &emitted(100));
        down.push(1000, &emitted(90));
        down.push(2000, &emitted(180));
        // The upstream worker's reading of 2000 has not arrived: both are read at 1000.
        let latest_up = emitted(100);
        let latest_down = emitted(180);
        let workers = [
            Worker { moments: &up, latest: &latest_up, reporting: true },
            Worker { moments: &down, latest: &latest_down, reporting: true },
        ];
        let cut = at_one_moment(&workers);
        assert_eq!((first(cut[0]), first(cut[1])), (100, 90), "downstream is never ahead of upstream");
        up.push(2000, &emitted(200));
        let workers = [
            Worker { moments: &up, latest: &latest_up, reporting: true },
            Worker { moments: &down, latest: &latest_down, reporting: true },
        ];
        let cut = at_one_moment(&workers);
        assert_eq!((first(cut[0]), first(cut[1])), (200, 180));
    }

    #[test]
    fn a_silent_worker_or_one_naming_no_moment_holds_nobody_back() {
        let (mut live, mut silent) = (Moments::default(), Moments::default());
        live.push(5000, &emitted(50));
        live.push(6000, &emitted(60));
        silent.push(1000, &emitted(7));
        let (l, s) = (emitted(60), emitted(7));
        let workers = [
            Worker { moments: &live, latest: &l, reporting: true },
            Worker { moments: &silent, latest: &s, reporting: false },
        ];
        let cut = at_one_moment(&workers);
        assert_eq!((first(cut[0]), first(cut[1])), (60, 7));
        let none = Moments::default();
        let workers = [
            Worker { moments: &live, latest: &l, reporting: true },
            Worker { moments: &none, latest: &s, reporting: true },
        ];
        let cut = at_one_moment(&workers);
        assert_eq!((first(cut[0]), first(cut[1])), (60, 7), "an old worker's latest, the others' latest");
    }

    #[test]
    fn readings_stay_bounded_and_a_clock_step_back_starts_afresh() {
        let mut m = Moments::default();
        for i in 1..=20u64 {
            m.push(i * 1000, &emitted(i));
        }
        assert_eq!(m.readings.len(), KEPT);
        assert_eq!(first(m.at(1000).unwrap()), 13, "older than kept: the oldest kept");
        assert_eq!(first(m.at(15_500).unwrap()), 15);
        m.push(3000, &emitted(3));
        assert_eq!(m.readings.len(), 1);
        m.push(0, &emitted(4));
        assert_eq!(m.latest(), None);
    }
}
